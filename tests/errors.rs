//! Bad input to `isol run`: a clear one-line error on stderr and exit code 125, and nothing left
//! behind.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::*;
use isol_image::testutil;
use sha2::{Digest, Sha256};

fn assert_bad(args: &[&str], needle: &str) {
    let o = run(args);
    let err = stderr(&o);
    assert_eq!(code(&o), 125, "isol {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "isol {args:?}: not one line: {err}");
    assert!(err.starts_with("isol: "), "{err}");
    assert!(
        err.contains(needle),
        "isol {args:?}: {needle:?} not in: {err}"
    );
}

#[test]
fn bad_flags_are_one_line_errors() {
    require_root();
    let _g = serial();
    assert_bad(&["run", "no-such-image", "true"], "not found");
    assert_bad(
        &["run", "--memory", "lots", "busybox", "true"],
        "Invalid size",
    );
    assert_bad(&["run", "--memory", "1k", "busybox", "true"], "too small");
    assert_bad(&["run", "--cpus", "0", "busybox", "true"], "--cpus");
    assert_bad(&["run", "--cpus", "99", "busybox", "true"], "--cpus");
    assert_bad(
        &["run", "--pids-limit", "0", "busybox", "true"],
        "--pids-limit",
    );
    assert_bad(
        &["run", "-v", "/no/such/dir:/data", "busybox", "true"],
        "does not exist",
    );
    assert_bad(
        &["run", "-v", "/tmp:relative", "busybox", "true"],
        "not absolute",
    );
    assert_bad(
        &["run", "-w", "relative", "busybox", "true"],
        "not absolute",
    );
    assert_bad(
        &["run", "--hostname", "bad host", "busybox", "true"],
        "Invalid hostname",
    );
    assert_bad(&["run", "--network", "wifi", "busybox", "true"], "wifi");
    assert_bad(&["run", "--timeout", "0", "busybox", "true"], "--timeout");
    assert_bad(&["run", "--bogus-flag", "busybox", "true"], "--bogus-flag");
    assert_bad(&["run"], "IMAGE");
    assert_no_leftovers("bad flags");
}

#[test]
fn bad_privilege_flags_are_one_line_errors_on_both_backends() {
    let _g = root_test();
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.json");
    std::fs::write(&notify, r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#).unwrap();
    for backend in ["container", "kvm"] {
        let bad = |flags: &[&str], needle: &str| {
            let mut args = vec!["run", "--backend", backend];
            args.extend_from_slice(flags);
            args.extend(["busybox", "true"]);
            assert_bad(&args, needle);
        };
        bad(
            &["--cap-add", "NET_ADMINN"],
            "Unknown capability \"NET_ADMINN\"",
        );
        bad(&["--cap-drop", "CAP_"], "Unknown capability");
        bad(
            &["--security-opt", "seccomp=/nonexistent/profile.json"],
            "Invalid --security-opt seccomp=/nonexistent/profile.json: cannot read the profile",
        );
        bad(
            &["--security-opt", &format!("seccomp={}", notify.display())],
            "Invalid seccomp profile: defaultAction SCMP_ACT_NOTIFY is not supported",
        );
        bad(
            &["--security-opt", "seccomp="],
            "give seccomp=unconfined or seccomp=PROFILE.json",
        );
        bad(
            &["--security-opt", "apparmor=unconfined"],
            "Unknown --security-opt",
        );
        bad(
            &["--security-opt", "no-new-privileges=maybe"],
            "Invalid --security-opt no-new-privileges=maybe",
        );
    }
    assert_no_leftovers("bad privilege flags");
}

/// Inputs that outside testing found answered badly (clap's "unexpected argument", a wrong
/// reason, a late failure, a raw escape sequence): each is a clear one-line 125 now.
#[test]
fn hostile_and_careless_input_is_refused_clearly() {
    let _g = root_test();
    assert_bad(&["run", "-m", "-1", "busybox", "true"], "positive");
    assert_bad(&["run", "--cpus", "-1", "busybox", "true"], "--cpus");
    assert_bad(
        &["run", "--pids-limit", "-1", "busybox", "true"],
        "positive",
    );
    assert_bad(
        &["run", "-m", "99999999999g", "busybox", "true"],
        "too large",
    );
    assert_bad(
        &["run", "--pids-limit", "1", "busybox", "true"],
        "at least 2",
    );
    assert_bad(
        &["run", "--cpuset-cpus", "3-1", "busybox", "true"],
        "Invalid --cpuset-cpus limit \"3-1\": a range must go upwards",
    );
    assert_bad(
        &["run", "--cpuset-cpus", "1000", "busybox", "true"],
        "Invalid --cpuset-cpus 1000: this host's online CPUs are",
    );
    assert_bad(
        &[
            "run",
            "--backend",
            "kvm",
            "--cpuset-cpus",
            "0",
            "busybox",
            "true",
        ],
        "--cpuset-cpus is not supported with --backend kvm",
    );
    assert_bad(
        &["run", "-v", "/tmp:/", "busybox", "true"],
        "whole filesystem",
    );
    assert_bad(
        &["run", "-v", "/tmp:/proc", "busybox", "true"],
        "inside /proc",
    );
    assert_bad(
        &["run", "-v", "/tmp://proc/self", "busybox", "true"],
        "inside /proc",
    );
    assert_bad(&["image", "import", "/nope.tar"], "Cannot read '/nope.tar'");
    // A name with an escape sequence is printed escaped, never raw.
    let o = run(&["run", "no\u{1b}[31mimage", "true"]);
    assert_eq!(code(&o), 125);
    assert!(!stderr(&o).contains('\u{1b}'), "{}", stderr(&o));
    assert!(stderr(&o).contains("\\u{1b}[31m"), "{}", stderr(&o));
    assert_no_leftovers("hostile input");
}

/// A docker-save tarball of an image whose config has no Entrypoint and no Cmd.
fn image_without_command(name: &str) -> Vec<u8> {
    let mut files = testutil::docker_save_files(&[testutil::sample_image(name)], false);
    let (cfg_idx, _) = files
        .iter()
        .enumerate()
        .find(|(_, (p, _))| p.ends_with(".json") && !p.contains('/') && p != "manifest.json")
        .expect("a config in the tarball");
    let mut cfg: serde_json::Value = serde_json::from_slice(&files[cfg_idx].1).unwrap();
    cfg["config"]["Entrypoint"] = serde_json::Value::Null;
    cfg["config"]["Cmd"] = serde_json::Value::Null;
    let bytes = serde_json::to_vec(&cfg).unwrap();
    let new_name = format!("{}.json", hex::encode(Sha256::digest(&bytes)));
    let old_name = std::mem::replace(&mut files[cfg_idx], (new_name.clone(), bytes)).0;
    let manifest = files
        .iter_mut()
        .find(|(p, _)| p == "manifest.json")
        .unwrap();
    let text = String::from_utf8(manifest.1.clone()).unwrap();
    manifest.1 = text.replace(&old_name, &new_name).into_bytes();
    testutil::tar_of_files(&files)
}

#[test]
fn an_image_without_a_default_command_needs_one() {
    require_root();
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("nocmd.tar");
    std::fs::write(&tarball, image_without_command("nocmd:v1")).unwrap();
    ok(&["image", "import", tarball.to_str().unwrap()]);
    assert_bad(&["run", "nocmd:v1"], "has no default command");
    ok(&["image", "rm", "nocmd:v1"]);
}

#[test]
fn not_root_without_user_namespaces_is_refused() {
    require_root();
    let _g = serial();
    // A user namespace of our own in which user namespaces are forbidden (its limit is 0), and in
    // it, isol as an unprivileged user: the real thing, without changing the host's setting.
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    let (go_r, go_w) = nix::unistd::pipe().unwrap();
    let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    // SAFETY: the child only makes system calls and execs (or exits) before touching anything the
    // test harness's other threads could hold.
    let child = match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            let err = forbid_userns_then_run_isol(go_r, go_w, ready_w, home.path(), out.path());
            eprintln!("child: {err}");
            // SAFETY: ends the forked child without running the harness's destructors.
            unsafe { libc::_exit(98) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(go_r);
    drop(ready_w);
    let mut b = [0u8; 1];
    assert_eq!(
        nix::unistd::read(&ready_r, &mut b),
        Ok(1),
        "the child could not unshare"
    );
    std::fs::write(format!("/proc/{child}/uid_map"), "0 0 65536").unwrap();
    std::fs::write(format!("/proc/{child}/gid_map"), "0 0 65536").unwrap();
    nix::unistd::write(&go_w, b"g").unwrap();
    let status = nix::sys::wait::waitpid(child, None).unwrap();
    let err = std::fs::read_to_string(out.path()).unwrap();
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Exited(child, 125),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("user namespaces"), "{err}");
    assert!(err.contains("run isol as root"), "{err}");
}

/// In a forked child: a new user namespace (mapped by the parent), its user-namespace limit set to
/// 0, then isol as uid 65534. Returns only on failure.
fn forbid_userns_then_run_isol(
    go_r: std::os::fd::OwnedFd,
    go_w: std::os::fd::OwnedFd,
    ready_w: std::os::fd::OwnedFd,
    home: &std::path::Path,
    out: &std::path::Path,
) -> String {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER) {
        return format!("unshare: {e}");
    }
    drop(go_w);
    if nix::unistd::write(&ready_w, b"u") != Ok(1) {
        return "cannot tell the parent".into();
    }
    let mut b = [0u8; 1];
    if nix::unistd::read(&go_r, &mut b) != Ok(1) {
        return "no go from the parent".into();
    }
    if let Err(e) = nix::unistd::setresuid(0.into(), 0.into(), 0.into()) {
        return format!("setresuid: {e}");
    }
    if let Err(e) = std::fs::write("/proc/sys/user/max_user_namespaces", "0") {
        return format!("max_user_namespaces: {e}");
    }
    let stderr = match std::fs::File::create(out) {
        Ok(f) => f,
        Err(e) => return format!("{e}"),
    };
    let err = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(isol_bin())
        .args(["run", "busybox", "true"])
        .env("ISOL_HOME", home)
        .current_dir("/")
        .stderr(stderr)
        .exec();
    format!("exec: {err}")
}

#[test]
fn rootless_maps_the_caller_to_root() {
    require_root();
    let _g = serial();
    let home = tempfile::tempdir().unwrap();
    Command::new("chown")
        .args(["65534:65534", home.path().to_str().unwrap()])
        .status()
        .unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(isol_bin())
        .args([
            "run",
            "busybox",
            "--",
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map; touch /new && echo wrote",
        ])
        .env("ISOL_HOME", home.path())
        .current_dir("/")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "65534", "1"]
    );
    assert_eq!(lines[2], "wrote");
    // Limits and the bridge need root, and say so.
    for args in [&["--memory", "64m"][..], &["--network", "bridge"][..]] {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(isol_bin())
            .arg("run")
            .args(args)
            .args(["busybox", "true"])
            .env("ISOL_HOME", home.path())
            .current_dir("/")
            .output()
            .unwrap();
        assert_eq!(code(&o), 125, "{}", stderr(&o));
        assert!(stderr(&o).contains("need"), "{}", stderr(&o));
    }
    // The run left nothing in the store's state dir.
    let containers = home.path().join("containers");
    let left: Vec<_> = std::fs::read_dir(&containers)
        .map(|d| d.flatten().filter(|e| e.file_name() != "net").collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_lab_kernel_argument_that_cannot_be_passed_is_refused_at_once() {
    // Checked before QEMU is looked for or the lab prepared: no lab boots here.
    let o = isol(&["lab", "--kernel-args", "kvm.x=\"a\"", "--", "true"])
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 125, "{err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(
        err.contains("--kernel-args") && err.contains("kvm.x"),
        "{err}"
    );
}

/// On a host whose /dev/kvm runs guests on an instruction emulator (this kind of machine: nested
/// PVM), the kvm backend says so at once and points at the lab, instead of booting for seconds
/// into a KVM internal error.
/// A kernel whose config lacks what isol needs is refused before it boots, every missing
/// option named (here from the `config` beside a `vmlinux`, as build-kernel.sh and
/// distributions' /boot keep it). The refusal comes before the KVM checks: it runs anywhere.
#[test]
fn a_kernel_without_the_options_isol_needs_is_refused_naming_them() {
    let _g = root_test();
    let config = isol_vmm::kconfig::REQUIRED
        .iter()
        .chain(isol_vmm::kconfig::SMP_REQUIRED)
        .filter(|(o, _)| *o != "CONFIG_EXT4_FS" && *o != "CONFIG_X86_MPPARSE");
    let err = kvm_refusal(config, &["--cpus", "2"]);
    assert!(
        err.contains("CONFIG_EXT4_FS (the root disk's filesystem), CONFIG_X86_MPPARSE"),
        "{err}"
    );
    assert!(err.contains("guest-images/build-kernel.sh"), "{err}");
}

/// `--pids-limit` and `-m` on kvm need the guest kernel's cgroups (docs/vmm.md, "Limits inside
/// the guest"): a kernel built without them is refused before booting, each option named once.
#[test]
fn limits_on_a_kernel_without_cgroups_are_refused_naming_the_options() {
    let _g = root_test();
    let err = kvm_refusal(
        isol_vmm::kconfig::REQUIRED.iter(),
        &["--pids-limit", "10", "-m", "64m"],
    );
    assert!(
        err.contains(
            "CONFIG_CGROUPS (the workload's cgroup for --pids-limit and --memory), \
             CONFIG_CGROUP_PIDS (the pids controller of --pids-limit), \
             CONFIG_MEMCG (the memory controller of --memory)"
        ),
        "{err}"
    );
}

/// `isol run --backend kvm FLAGS… busybox true` with a kernel (any ELF passes for its format)
/// whose `config` beside it sets `options`: asserts a one-line refusal with 125, returns it.
fn kvm_refusal<'a>(
    options: impl Iterator<Item = &'a (&'a str, &'a str)>,
    flags: &[&str],
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::os::unix::fs::symlink(std::env::current_exe().unwrap(), &kernel).unwrap();
    let config: String = options.map(|(o, _)| format!("{o}=y\n")).collect();
    std::fs::write(dir.path().join("config"), config).unwrap();
    let mut args = vec!["run", "--backend", "kvm"];
    args.extend_from_slice(flags);
    args.extend(["busybox", "true"]);
    let o = isol(&args).env("ISOL_KERNEL", &kernel).output().unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 125, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn an_emulating_kvm_is_refused_at_once() {
    let _g = root_test();
    match isol_vmm::vstate::kvm::measure_guest_speed() {
        _ if isol_vmm::vstate::kvm::pvm_host() => {}
        Ok(t) if t > isol_vmm::vstate::kvm::EMULATED_THRESHOLD => {}
        other => {
            println!("skipped: this host's /dev/kvm runs guests in hardware ({other:?})");
            return;
        }
    }
    let cache = tempfile::tempdir().unwrap();
    for attempt in ["first", "second"] {
        // Any ELF file passes for the kernel: the refusal comes before it is loaded.
        let elf = std::env::current_exe().unwrap();
        let o = isol(&["run", "--backend", "kvm", "busybox", "true"])
            .env("ISOL_CACHE", cache.path())
            .env("ISOL_KERNEL", &elf)
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(code(&o), 125, "{attempt}: {err}");
        assert_eq!(err.lines().count(), 1, "{attempt}: {err}");
        assert!(
            err.contains("instruction emulator") || err.contains("kvm_pvm"),
            "{attempt}: {err}"
        );
        assert!(
            err.contains("isol lab -- isol run --backend kvm"),
            "{attempt}: {err}"
        );
    }
    // Only a hardware verdict is kept.
    assert!(!cache.path().join("kvm-speed").exists());
}
