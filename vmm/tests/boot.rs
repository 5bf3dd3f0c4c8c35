//! Real Linux boots of the guest kernel with the guest init and a busybox rootfs.
//!
//! These need hardware-speed KVM: run them in the lab,
//!
//! ```text
//! cargo test -p isol-vmm --test boot --no-run        # on the host
//! isol lab -- target/x86_64-unknown-linux-gnu/debug/deps/boot-<hash> --test-threads=2
//! ```
//!
//! Each test skips (passing, with the reason on stderr) when /dev/kvm is missing or
//! only emulates (a fixed loop is timed first), when no guest kernel is built
//! (`guest-images/build-kernel.sh`, or `ISOL_KERNEL_DIR`), when the static guest init
//! is not built (`ISOL_GUEST_INIT`), or without /bin/busybox (`ISOL_BUSYBOX`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

mod common;

use common::{busybox_rootfs, find_init};
use isol_lab::watch::{in_the_lab, watch_here};
use isol_vmm::{
    BootProtocol, Rootfs, RunSpec, SerialOutput, SharedBuffer, VmConfig, VmOutcome, VmmError,
};

struct Env {
    kernel_dir: PathBuf,
    init: PathBuf,
    rootfs: PathBuf,
    _tmp: tempfile::TempDir,
}

/// The busybox root filesystem of these tests, as a cpio archive at `archive`.
fn make_rootfs(archive: &Path, busybox: &Path) -> Result<(), String> {
    let applets = [
        "sh", "echo", "cat", "grep", "printf", "hostname", "sleep", "true", "false", "pwd", "env",
        "ls", "wc", "sync",
    ];
    let not_executable: &[u8] = b"#!/bin/sh\necho no\n";
    busybox_rootfs(
        archive,
        busybox,
        &applets,
        &[("bin/not-executable", 0o644, not_executable)],
    )
}

/// The environment, or the reason to skip.
fn env() -> Result<&'static Env, String> {
    static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let speed = isol_vmm::measure_guest_speed().map_err(|e| format!("no usable /dev/kvm: {e}"))?;
        if speed > isol_vmm::EMULATED_THRESHOLD {
            return Err(format!(
                "/dev/kvm emulates guests ({speed:?} for a 100k loop); run these in the lab: isol lab -- <test binary>"
            ));
        }
        let kernel_dir = isol_vmm::config::cached_kernel_dir().ok_or("no guest kernel; run guest-images/build-kernel.sh")?;
        let init = find_init().ok_or("no guest init; cargo build -p isol-guest-init --release")?;
        let busybox: PathBuf = std::env::var_os("ISOL_BUSYBOX").map_or("/bin/busybox".into(), Into::into);
        if !busybox.exists() {
            return Err(format!("no busybox at {}", busybox.display()));
        }
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let rootfs = tmp.path().join("rootfs.cpio");
        make_rootfs(&rootfs, &busybox)?;
        Ok(Env { kernel_dir, init, rootfs, _tmp: tmp })
    })
    .as_ref()
    .map_err(Clone::clone)
}

macro_rules! env_or_skip {
    () => {
        match env() {
            Ok(e) => e,
            Err(why) => {
                // In the lab (and so in CI) a skip would hide a broken setup.
                if std::env::var_os("ISOL_REQUIRE_KVM").is_some() {
                    panic!("ISOL_REQUIRE_KVM is set but: {why}");
                }
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

fn config(e: &Env, args: &[&str]) -> (VmConfig, SharedBuffer) {
    let out = SharedBuffer::default();
    let cfg = VmConfig {
        kernel: e.kernel_dir.join("vmlinux"),
        rootfs: Rootfs::Cpio(e.rootfs.clone()),
        init: Some(e.init.clone()),
        vcpus: 1,
        memory_mib: 256,
        spec: RunSpec {
            args: args.iter().map(Into::into).collect(),
            env: vec!["PATH=/bin".into()],
            workdir: "/".into(),
            hostname: "isol-test".into(),
            ..Default::default()
        },
        serial_output: SerialOutput::Buffer(out.clone()),
        forward_stdin: false,
        timeout: Some(Duration::from_secs(60)),
        boot_profiles: isol_vmm::config::default_boot_profiles(),
        ..Default::default()
    };
    (cfg, out)
}

fn text(b: &SharedBuffer) -> String {
    String::from_utf8_lossy(&b.contents()).into_owned()
}

fn run_ok(cfg: &VmConfig, out: &SharedBuffer) -> i32 {
    run_vm(cfg, out).exit_code
}

/// Runs per lab before the line test.sh looks for to try a fresh lab: the lab's faults come
/// in clusters (docs/lab.md, "Known fault").
const LAB_ATTEMPTS: usize = 3;

/// A run that has not ended this long after its vCPU started is looked at ([`watch_here`]):
/// these guests boot and end in a few seconds in the lab, well inside [`config`]'s timeout.
const STALL: Duration = Duration::from_secs(30);

/// Runs `cfg`, panicking with the console on an error. Inside the lab a run that the lab's
/// nested KVM wrecked (docs/lab.md, "Known fault": a triple fault, or the timeout after the
/// watch saw a vCPU spinning inside the lab's own KVM code) is run again, up to
/// [`LAB_ATTEMPTS`], saying so; nothing else is retried, and nothing outside the lab. A fault
/// of the VMM's own recurs in every attempt.
fn run_vm(cfg: &VmConfig, out: &SharedBuffer) -> VmOutcome {
    let mut attempt = 1;
    loop {
        out.0.lock().unwrap().clear();
        let (r, look) = watch_here(STALL, || isol_vmm::run(cfg));
        let why = match (r, look) {
            (Ok(o), _) => return o,
            (Err(e @ VmmError::TripleFault { .. }), _) if in_the_lab() => format!("{e}"),
            (Err(e @ VmmError::Timeout(_)), Some((true, what))) if in_the_lab() => {
                format!("{e}; vCPU spin: {what}")
            }
            (Err(e), look) => panic!(
                "{e}{}\n--- console ---\n{}",
                look.map(|(_, what)| format!("\nthe stalled run showed: {what}"))
                    .unwrap_or_default(),
                text(out)
            ),
        };
        if attempt == LAB_ATTEMPTS {
            // Straight to stderr, for test.sh (the harness holds eprintln! back).
            let _ = writeln!(
                std::io::stderr(),
                "boot: the lab's nested KVM failed every attempt ({LAB_ATTEMPTS}); run this in a fresh lab"
            );
            panic!("the lab's nested KVM failed the run {LAB_ATTEMPTS} times; the last: {why}");
        }
        attempt += 1;
        let _ = writeln!(
            std::io::stderr(),
            "boot: the lab's nested KVM wrecked the guest; attempt {attempt} of {LAB_ATTEMPTS}. It was: {why}"
        );
    }
}

#[test]
fn workload_output_and_exit_code_come_back() {
    let e = env_or_skip!();
    let (cfg, out) = config(e, &["sh", "-c", "echo hello from $(hostname); exit 3"]);
    assert_eq!(run_ok(&cfg, &out), 3);
    assert_eq!(
        text(&out),
        "hello from isol-test\n",
        "quiet console: only the workload"
    );
}

#[test]
fn exit_zero() {
    let e = env_or_skip!();
    let (cfg, out) = config(e, &["true"]);
    assert_eq!(run_ok(&cfg, &out), 0);
}

#[test]
fn command_not_found_is_127_and_not_executable_is_126() {
    let e = env_or_skip!();
    let (cfg, out) = config(e, &["no-such-command"]);
    assert_eq!(run_ok(&cfg, &out), 127);
    assert!(
        text(&out).contains("no-such-command: command not found"),
        "{}",
        text(&out)
    );
    let (cfg, out) = config(e, &["/bin/not-executable"]);
    assert_eq!(run_ok(&cfg, &out), 126);
}

#[test]
fn killed_by_signal_is_128_plus_signal() {
    let e = env_or_skip!();
    let (cfg, out) = config(e, &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(run_ok(&cfg, &out), 128 + 15);
}

#[test]
fn arguments_are_byte_exact() {
    let e = env_or_skip!();
    let args = [
        "printf",
        "[%s]",
        "a b",
        "it's \"q\"",
        "new\nline",
        "ünï ✓",
        "",
    ];
    let (cfg, out) = config(e, &args);
    assert_eq!(run_ok(&cfg, &out), 0);
    assert_eq!(text(&out), "[a b][it's \"q\"][new\nline][ünï ✓][]");
}

#[test]
fn env_and_workdir() {
    let e = env_or_skip!();
    let (mut cfg, out) = config(e, &["sh", "-c", "echo $FOO; pwd"]);
    cfg.spec.env.push("FOO=bar baz".into());
    cfg.spec.workdir = "/tmp".into();
    assert_eq!(run_ok(&cfg, &out), 0);
    assert_eq!(text(&out), "bar baz\n/tmp\n");
}

#[test]
fn two_vcpus_show_in_cpuinfo() {
    let e = env_or_skip!();
    let (mut cfg, out) = config(e, &["sh", "-c", "grep -c ^processor /proc/cpuinfo"]);
    cfg.vcpus = 2;
    assert_eq!(run_ok(&cfg, &out), 0);
    assert_eq!(text(&out).trim(), "2");
}

#[test]
fn memory_shows_in_meminfo() {
    let e = env_or_skip!();
    let (cfg, out) = config(e, &["grep", "MemTotal", "/proc/meminfo"]);
    assert_eq!(run_ok(&cfg, &out), 0);
    let kib: u64 = text(&out)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    // The kernel keeps its own image and reserved areas out of MemTotal.
    assert!(
        (200 * 1024..=256 * 1024).contains(&kib),
        "MemTotal {kib} kB"
    );
}

#[test]
fn console_shows_the_kernel_log_when_asked() {
    let e = env_or_skip!();
    let (mut cfg, out) = config(e, &["true"]);
    cfg.console = true;
    assert_eq!(run_ok(&cfg, &out), 0);
    assert!(text(&out).contains("Linux version"), "{}", text(&out));
}

#[test]
fn all_three_kernel_formats_boot() {
    let e = env_or_skip!();
    for (kernel, protocol) in [
        ("vmlinux", BootProtocol::Linux64),
        ("vmlinux", BootProtocol::Pvh),
        ("bzImage", BootProtocol::Auto),
    ] {
        let (mut cfg, out) = config(e, &["echo", "ok"]);
        cfg.kernel = e.kernel_dir.join(kernel);
        cfg.boot_protocol = protocol;
        assert_eq!(run_ok(&cfg, &out), 0, "{kernel} {protocol:?}");
        assert_eq!(text(&out), "ok\n", "{kernel} {protocol:?}");
    }
}

#[test]
fn kernel_panic_is_an_error() {
    let e = env_or_skip!();
    let (mut cfg, _out) = config(e, &["true"]);
    // No init to run → the kernel panics → panic=-1 reboots at once.
    cfg.extra_cmdline = vec!["rdinit=/no-such-init".into()];
    let err = isol_vmm::run(&cfg).unwrap_err();
    assert!(matches!(err, VmmError::GuestRebooted), "{err}");
}

#[test]
fn timeout_ends_a_guest_that_never_powers_off() {
    let e = env_or_skip!();
    let (mut cfg, _out) = config(e, &["sleep", "1000"]);
    cfg.vcpus = 2;
    cfg.timeout = Some(Duration::from_secs(5));
    let err = isol_vmm::run(&cfg).unwrap_err();
    assert!(matches!(err, VmmError::Timeout(_)), "{err}");
}

#[test]
fn boot_timeline_is_reported() {
    let e = env_or_skip!();
    let (mut cfg, out) = config(e, &["true"]);
    cfg.trace_exits = true;
    let o = run_vm(&cfg, &out);
    let t = o.timings;
    let order = [
        t.first_vcpu_entry,
        t.init_start,
        t.spec_loaded,
        t.workload_start,
        t.workload_exit,
    ];
    assert!(order.iter().all(Option::is_some), "{t:?}");
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "{t:?}");
    assert!(o.exit_counts.total() > 0);
    let setup = isol_vmm::trace::SetupStep::Vcpus;
    assert!(
        t.setup_step(setup)
            .is_some_and(|s| Some(s) <= t.first_vcpu_entry),
        "setup steps are stamped before the first entry: {t:?}"
    );
    eprintln!("{t}");
}

/// Exit counts, not time: a `true` boot with isol's guest kernel has no exit storms.
#[test]
fn a_boot_has_no_exit_storms() {
    use isol_vmm::ExitKind::{IoIn, IoOut};
    let e = env_or_skip!();
    let (cfg, out) = config(e, &["true"]);
    let o = run_vm(&cfg, &out);
    let c = &o.exit_counts;
    // No i8042 driver probing the status port (10 000 polls with VT/INPUT/SERIO on).
    assert_eq!(c.get(IoIn, 0x64), 0, "{c:?}");
    // The exit status went through ioperm'd port 0x4f0, not byte pairs on ttyS1.
    assert_eq!(c.get(IoOut, 0x4f0), 1, "{c:?}");
    // The VM ended at init's power-off write, not through the kernel's reboot path
    // (which would end on the i8042 reset line, port 0x64).
    assert_eq!(c.get(IoOut, 0x4f2), 1, "{c:?}");
    assert_eq!(c.get(IoOut, 0x64), 0, "{c:?}");
    assert_eq!(
        c.get(IoOut, 0x2f8),
        0,
        "no data bytes on the exit UART: {c:?}"
    );
    assert!(c.total() < 200, "{} exits: {c:?}", c.total());
}

/// The boot set (vstate::boot_profile): a boot with no profile records which guest RAM the
/// boot touched by init start; the next boot of the same machine faults exactly that in
/// ahead of the guest, and still runs the workload as before.
#[test]
fn the_next_boot_is_warmed_with_the_boot_set_the_first_recorded() {
    use isol_vmm::vstate::boot_profile::BootSetReport;
    let e = env_or_skip!();
    // A kernel file of its own: a profile key no other boot has.
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("vmlinux");
    std::fs::copy(e.kernel_dir.join("vmlinux"), &kernel).unwrap();
    let (mut cfg, out) = config(e, &["sh", "-c", "echo warm; exit 4"]);
    cfg.kernel = kernel;
    cfg.trace_exits = true;
    let first = run_vm(&cfg, &out);
    assert_eq!(first.exit_code, 4);
    assert_eq!(text(&out), "warm\n");
    let BootSetReport::Recorded { path, bytes } = first.boot_set.clone() else {
        panic!("the first boot recorded no boot set: {:?}", first.boot_set);
    };
    // Something, and far less than the guest's 256 MiB (the kernel alone is ~10 MiB).
    assert!(bytes > 4 << 20 && bytes < 128 << 20, "{bytes} bytes");
    let second = run_vm(&cfg, &out);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(second.exit_code, 4);
    assert_eq!(second.boot_set, BootSetReport::Warmed { path, bytes });
    // Only a warmed boot stamps the step (when the warming was done).
    let step = isol_vmm::trace::SetupStep::BootSet;
    assert!(
        first.timings.setup_step(step).is_none(),
        "{:?}",
        first.timings
    );
    // run_vm starts each run with an empty buffer.
    assert_eq!(text(&out), "warm\n");
}
