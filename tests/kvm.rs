//! The kvm backend through the CLI: `isol run --backend kvm` boots our guest kernel for real.
//!
//! The boot tests need a /dev/kvm that runs guests in hardware: they run inside the lab
//! (`./test.sh` does `isol lab -- <this test binary>`), and skip elsewhere — unless
//! `ISOL_REQUIRE_KVM` is set, as in the lab, where a skip would hide a broken setup.
//! The bad-input tests need no KVM and run everywhere.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn kvm(args: &[&str]) -> std::process::Output {
    let mut all = vec!["run", "--backend", "kvm"];
    all.extend_from_slice(args);
    run(&all)
}

fn kernel_release() -> String {
    let kernel = PathBuf::from(std::env::var_os("ISOL_KERNEL").unwrap());
    std::fs::read_to_string(kernel.with_file_name("release"))
        .expect("the kernel's release file beside it")
        .trim()
        .to_string()
}

#[test]
fn uname_shows_the_guest_kernel_and_the_exit_code_comes_back() {
    if !kvm_ready() {
        return;
    }
    let o = kvm(&["busybox", "--", "sh", "-c", "uname -r; exit 3"]);
    assert_eq!(code(&o), 3, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o).trim(), kernel_release());
    let host = nix::sys::utsname::uname().unwrap();
    assert_ne!(stdout(&o).trim(), host.release().to_str().unwrap());
}

#[test]
fn log_level_debug_reaches_isol_vmm() {
    if !kvm_ready() {
        return;
    }
    let o = kvm(&["--log-level", "debug", "busybox", "echo", "hi"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "hi\n");
    let err = stderr(&o);
    // isol's own steps, then isol-vmm's, which got the filter in the launch description.
    for step in [
        "image resolved",
        "kernel loaded",
        "devices attached",
        "vCPUs configured",
        "VM exited",
    ] {
        assert!(err.contains(step), "{step:?} not logged: {err}");
    }
    assert!(err.lines().all(|l| l.starts_with("isol: debug: ")), "{err}");
    // By default, nothing.
    let o = kvm(&["busybox", "true"]);
    assert_eq!((code(&o), stderr(&o).as_str()), (0, ""));
}

#[test]
fn exit_codes_0_and_127() {
    if !kvm_ready() {
        return;
    }
    assert_eq!(code(&kvm(&["busybox", "true"])), 0);
    let o = kvm(&["busybox", "--", "no-such-command"]);
    assert_eq!(code(&o), 127, "stderr: {}", stderr(&o));
}

#[test]
fn cpus_and_memory_reach_the_guest() {
    if !kvm_ready() {
        return;
    }
    let o = kvm(&[
        "--cpus",
        "2",
        "--memory",
        "256m",
        "busybox",
        "--",
        "sh",
        "-c",
        "grep -c ^processor /proc/cpuinfo; grep MemTotal /proc/meminfo",
    ]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("2"), "{out}");
    let kib: u64 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal in {out}"));
    // The kernel keeps some for itself; what is left is most of 256 MiB and not more.
    assert!(
        (200 * 1024..=256 * 1024).contains(&kib),
        "MemTotal {kib} kB"
    );
}

/// Without limits too, the workload is in a cgroup of its own in the guest, shown as a
/// container's is: one read-only cgroup2 at /sys/fs/cgroup, the namespace's root, every
/// limit `max` (tests/parity.rs compares the limits with a container's).
#[test]
fn the_workload_sees_its_own_cgroup_read_only() {
    if !kvm_ready() {
        return;
    }
    let o = kvm(&[
        "busybox",
        "--",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/memory.max /proc/self/cgroup; \
         grep cgroup /proc/self/mounts; mkdir /sys/fs/cgroup/x || echo read-only",
    ]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["max", "max", "0::/"], "{out}");
    assert!(
        lines[3].starts_with("cgroup2 /sys/fs/cgroup cgroup2 ro,nosuid,nodev,noexec"),
        "{out}"
    );
    assert_eq!(lines[4..], ["read-only"], "{out}");
}

/// The container suite's fork bomb (tests/container.rs, `pids_limit_contains_a_fork_bomb`) in
/// the VM: `--pids-limit` holds it in the guest's cgroup, where the workload sees the refused
/// forks counted in `pids.events`, and the run ends when the shell does. Without the limit the
/// bomb fills the guest until its memory runs out, and the shell never sees the count.
#[test]
fn pids_limit_contains_a_fork_bomb_in_the_guest() {
    if !kvm_ready() {
        return;
    }
    // Only builtins after the bomb: its processes hold every slot.
    let o = kvm(&[
        "--pids-limit",
        "64",
        "--timeout",
        "120",
        "busybox",
        "--",
        "sh",
        "-c",
        "bomb() { bomb | bomb & }; bomb 2>/dev/null; \
         until read e < /sys/fs/cgroup/pids.events && [ \"$e\" != 'max 0' ]; do :; done; \
         echo limit-hit",
    ]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "limit-hit\n");
}

#[test]
fn console_is_quiet_unless_asked() {
    if !kvm_ready() {
        return;
    }
    let quiet = kvm(&["busybox", "--", "echo", "only this"]);
    assert_eq!(stdout(&quiet), "only this\n");
    let loud = kvm(&["--console", "busybox", "--", "echo", "only this"]);
    // The kernel log has its own stream (stderr): stdout is the workload's alone.
    assert_eq!(stdout(&loud), "only this\n", "stderr: {}", stderr(&loud));
    assert!(stderr(&loud).contains("Linux version"), "{}", stderr(&loud));
}

/// The kernel log goes out through the serial port (to stderr); on a full stderr whose open file
/// description is non-blocking (shared with whoever reads it) the UART must wait, not
/// lose bytes: the log is read only after isol has filled a one-page pipe.
#[test]
fn the_console_log_survives_a_slow_non_blocking_stderr() {
    if !kvm_ready() {
        return;
    }
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array it is given.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fds[0] was just made by pipe2 and is owned here only.
    let rd = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as for fds[0].
    let wr = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    // SAFETY: fcntl on a pipe fd we own: one page of buffer.
    assert!(unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 4096) } >= 4096);
    // SAFETY: fcntl on a pipe fd we own: a non-blocking write end.
    let r = unsafe { libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) };
    assert_eq!(r, 0);
    let mut child = isol(&[
        "run",
        "--backend",
        "kvm",
        "--console",
        "busybox",
        "--",
        "echo",
        "the end",
    ])
    .stderr(wr)
    .stdout(std::process::Stdio::piped())
    .spawn()
    .expect("isol runs");
    // Read nothing until the pipe has stayed full for 3 s (the UART is waiting, or was
    // losing bytes all that time) or isol is done.
    let mut full_since = None;
    while child.try_wait().unwrap().is_none() {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD stores an int through the pointer it is given.
        let r = unsafe { libc::ioctl(fds[0], libc::FIONREAD, &mut queued) };
        assert_eq!(r, 0);
        let now = std::time::Instant::now();
        match full_since {
            _ if queued < 4096 => full_since = None,
            None => full_since = Some(now),
            Some(t) if now - t > std::time::Duration::from_secs(3) => break,
            Some(_) => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut out = Vec::new();
    std::fs::File::from(rd).read_to_end(&mut out).unwrap();
    let mut workload = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut workload)
        .unwrap();
    let status = child.wait().unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(status.success(), "{status}: {out}");
    let first = out.find("Linux version").expect("the log's first line");
    let init = out
        .find("Run /init as init process")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(first < init, "{out}");
    assert_eq!(workload, "the end\n", "{out}");
}

#[test]
fn a_guest_that_never_ends_is_stopped_by_the_timeout() {
    if !kvm_ready() {
        return;
    }
    let o = kvm(&["--timeout", "3", "busybox", "--", "sleep", "1000"]);
    assert_eq!(code(&o), 124, "stderr: {}", stderr(&o));
    assert!(
        stderr(&o).to_lowercase().contains("timeout") || stderr(&o).contains("timed out"),
        "{}",
        stderr(&o)
    );
    let left = Command::new("pgrep")
        .args(["-f", "sleep 1000"])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty());
}

#[test]
fn trace_exits_prints_counts_and_the_timeline() {
    if !kvm_ready() {
        return;
    }
    let o = kvm(&["--trace-exits", "busybox", "true"]);
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let err = stderr(&o);
    for want in ["init start", "workload"] {
        assert!(err.contains(want), "no {want:?} in:\n{err}");
    }
}

/// `--initrd`: the kernel with a whole initramfs of the caller's, as Firecracker and QEMU boot
/// one (the VM start-up bench's common guest): its own /init runs (busybox's shell runs `true`
/// and says so on the serial console, the run's stdout), and its reboot ends the run with 0.
#[test]
fn an_initramfs_boots_as_it_is_and_its_reboot_ends_the_run() {
    if !kvm_ready() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cpio = dir.path().join("guest.cpio");
    let image = isol_bench::initrd_guest::initramfs(std::path::Path::new("/bin/busybox"), true);
    std::fs::write(&cpio, image.unwrap()).unwrap();
    let cpio = cpio.to_str().unwrap();
    let o = kvm(&["-m", "128m", "--trace-exits", "--json", "--initrd", cpio]);
    let err = stderr(&o);
    assert_eq!(code(&o), 0, "stderr: {err}");
    assert_eq!(stdout(&o).trim(), isol_bench::initrd_guest::SAID, "{err}");
    // Nothing of isol's ran in the guest: no init phases, no virtio device.
    let phase = |name: &str| {
        err.lines()
            .find(|l| l.trim_start().starts_with(name))
            .map(|l| l.trim_end().ends_with('-'))
    };
    assert_eq!(phase("init start"), Some(true), "{err}");
    assert_eq!(phase("VM exit"), Some(false), "{err}");
    assert!(!err.contains("virtio"), "{err}");
    // The report names the archive where a run names its image.
    let line = err.lines().rev().find(|l| l.starts_with('{')).unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["image"], cpio, "{v}");
    assert!(leftovers().is_empty(), "{:?}", leftovers());
}

/// The `vmm_exe` of a `--json` report on stderr.
fn vmm_exe(stderr: &str) -> PathBuf {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no --json report in {stderr}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    PathBuf::from(v["vmm_exe"].as_str().unwrap_or_else(|| panic!("{v}")))
}

/// `isol run --backend kvm -i --timeout 600 FLAGS… busybox -- sh -c SCRIPT` with stdin and
/// stdout piped, for a workload that waits for a line (the timeout only bounds a broken run).
fn waiting_vm(flags: &[&str], script: &str) -> Command {
    let mut args = vec!["run", "--backend", "kvm", "-i", "--timeout", "600"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "--", "sh", "-c", script]);
    let mut c = isol(&args);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    c
}

#[test]
fn the_vm_runs_in_isol_vmm_which_isol_becomes() {
    if !kvm_ready() {
        return;
    }
    use std::io::Write;
    use std::process::Stdio;
    let vmm = PathBuf::from(env!("CARGO_BIN_EXE_isol-vmm"));
    // The workload waits for a line on stdin, so the VM is certainly running while the
    // test looks at the process.
    let mut child = waiting_vm(&["--json"], "read line; echo got-$line")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    // The process isol started as is now isol-vmm: same pid, the VMM's executable, mapped
    // (exec names the new executable in /proc/PID/exe before it maps its segments).
    let mapped = |maps: &str, exe: &str| maps.lines().any(|l| l.ends_with(exe));
    // Its command line comes a moment after the mappings (the new stack is set up last).
    let (maps, cmdline) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("isol ended ({status}) and was never seen running isol-vmm");
        }
        if std::fs::read_link(proc_dir.join("exe")).ok().as_ref() == Some(&vmm) {
            let maps = std::fs::read_to_string(proc_dir.join("maps")).unwrap();
            let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap();
            if mapped(&maps, vmm.to_str().unwrap()) && !cmdline.is_empty() {
                break (maps, cmdline);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // None of isol's own executable is mapped while the VM runs.
    assert!(!mapped(&maps, isol_bin()), "{maps}");
    assert!(
        cmdline.starts_with(b"isol-vmm\0--launch-fd\0"),
        "{cmdline:?}"
    );

    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "got-hello\n");
    assert_eq!(vmm_exe(&stderr(&o)), vmm);
}

#[test]
fn without_isol_vmm_the_vm_runs_inside_isol() {
    if !kvm_ready() {
        return;
    }
    // An empty ISOL_VMM stands for "no isol-vmm": the same launch code runs in isol.
    let o = isol(&[
        "run",
        "--backend",
        "kvm",
        "--json",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo in; exit 7",
    ])
    .env("ISOL_VMM", "")
    .output()
    .unwrap();
    assert_eq!(code(&o), 7, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "in\n");
    assert_eq!(vmm_exe(&stderr(&o)), PathBuf::from(isol_bin()));
}

// Bad input: a clear one-line error and 125, before any guest runs. These need no KVM.

fn assert_bad(args: &[&str], needle: &str) {
    assert_bad_with(args, &[], needle);
}

/// [`assert_bad`] with more environment.
fn assert_bad_with(args: &[&str], env: &[(&str, &str)], needle: &str) {
    assert_kvm_refused(args, env, needle);
}

#[test]
fn bad_kernels_and_sizes_are_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, b"this is not a kernel").unwrap();
    let junk = junk.to_str().unwrap();
    assert_bad(
        &["--kernel", "/no/such/vmlinux", "busybox", "true"],
        "/no/such/vmlinux",
    );
    assert_bad(
        &["--kernel", junk, "busybox", "true"],
        "neither an ELF vmlinux nor a bzImage",
    );
    assert_bad(&["--memory", "8m", "busybox", "true"], "emory");
    assert_bad(&["--memory", "100t", "busybox", "true"], "emory");
    assert_bad(&["--cpus", "0", "busybox", "true"], "cpus");
    assert_bad(&["--cpus", "1.5", "busybox", "true"], "vCPUs");
    assert_bad(
        &["--network", "host", "busybox", "true"],
        "own kernel and network stack",
    );
    // --initrd: a file, and nothing the archive's own init cannot honour.
    assert_bad(
        &["--initrd", "/no/such/initrd.cpio"],
        "Cannot read --initrd /no/such/initrd.cpio",
    );
    assert_bad(&["--initrd", "/tmp"], "is not a file");
    assert_bad(
        &["--initrd", junk, "busybox", "true"],
        "an image or a command cannot be used with --initrd",
    );
    assert_bad(
        &["--initrd", junk, "-e", "A=1"],
        "-e/--env cannot be used with --initrd",
    );
    assert_bad(
        &["--initrd", junk, "--kernel", junk],
        "neither an ELF vmlinux",
    );
    let o = run(&["run", "--initrd", junk]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("add --backend kvm"), "{}", stderr(&o));
}

#[test]
fn no_permission_on_dev_kvm_points_at_the_lab() {
    require_root();
    // As an unprivileged user /dev/kvm (0600 root, or 0660 kvm) cannot be opened.
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    let kernel = home.path().join("vmlinux");
    // Any readable file will do as kernel and init: /dev/kvm is opened before either is loaded.
    std::fs::write(&kernel, b"\x7fELF").unwrap();
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(isol_bin())
        .args(["run", "--backend", "kvm", "busybox", "true"])
        .env("ISOL_HOME", home.path())
        .env("ISOL_KERNEL", &kernel)
        .env("ISOL_GUEST_INIT", &kernel)
        .current_dir("/")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 125, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/dev/kvm") && err.contains("isol lab"),
        "{err}"
    );
}

#[test]
fn an_image_a_running_vm_uses_is_not_removed() {
    if !kvm_ready() {
        return;
    }
    use std::io::{BufRead, BufReader, Write};
    // The VM prints its id (its default hostname) and waits for a line: it runs in isol-vmm,
    // which isol became, holding the image's in-use mark across that exec.
    let mut child = waiting_vm(&[], "echo $HOSTNAME; read line; echo got-$line")
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut id = String::new();
    out.read_line(&mut id).unwrap();
    let id = id.trim().to_string();
    let vmm = PathBuf::from(env!("CARGO_BIN_EXE_isol-vmm"));
    let exe = std::fs::read_link(format!("/proc/{}/exe", child.id())).ok();
    let refused = run(&["image", "rm", "busybox"]);
    let err = stderr(&refused);
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(exe, Some(vmm), "the VM did not run in isol-vmm");
    assert_eq!(id.len(), 12, "no id from the VM: {id:?}");
    assert_eq!(code(&refused), 125, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(&format!("VM {id}")), "{err}");
    assert_eq!(rest, "got-hello\n");
    assert!(stdout(&run(&["image", "ls"])).contains("busybox:latest"));
}

// Seccomp (docs/vmm.md, "Seccomp").

/// The seccomp mode of each thread of `pid` while its VM runs, by thread name.
/// The process that runs the VM of isol `pid`: the jailed child of isol-vmm's relay
/// (design.md, "The VMM's jail"), or isol-vmm itself without a jail.
fn vmm_process(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()
        .and_then(|c| c.split_whitespace().next()?.parse().ok())
        .unwrap_or(pid)
}

fn seccomp_modes(pid: u32) -> Vec<(String, String)> {
    let mut modes = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue; // a thread that just ended
        };
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .unwrap_or("?")
            .trim()
            .to_string();
        modes.push((comm.trim().to_string(), mode));
    }
    modes.sort();
    modes
}

/// A [`waiting_vm`] whose `script` starts with `echo up`, with `ISOL_VMM_SECCOMP=seccomp`,
/// once its workload runs (it said "up"); and its stdout.
fn vm_up(
    flags: &[&str],
    script: &str,
    seccomp: &str,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let mut child = waiting_vm(flags, script)
        .env("ISOL_VMM_SECCOMP", seccomp)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "up\n");
    (child, out)
}

/// The thread modes of a VM whose workload waits for a line, taken once it runs; the run
/// must then end normally.
fn running_vm_seccomp_modes(seccomp: &str) -> Vec<(String, String)> {
    use std::io::{BufRead, Write};
    let (mut child, mut out) = vm_up(&[], "echo up; read line; echo got-$line", seccomp);
    let mut line = String::new();
    let modes = seccomp_modes(vmm_process(child.id()));
    child.stdin.take().unwrap().write_all(b"x\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "got-x\n");
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    modes
}

#[test]
fn every_thread_of_a_running_vm_is_filtered_unless_turned_off() {
    if !kvm_ready() {
        return;
    }
    // Mode 2: a seccomp filter. The boot helpers may have ended by the time the workload runs.
    let modes = running_vm_seccomp_modes("on");
    // (Names as /proc keeps them: 15 bytes; the console writers are "isol-isol.stdout", …)
    for name in [
        "isol-vmm",
        "isol-vcpu0",
        "isol-virtio",
        "isol-isol.stdou",
        "isol-isol.stder",
    ] {
        assert!(modes.iter().any(|(n, _)| n == name), "no {name}: {modes:?}");
    }
    assert!(modes.iter().all(|(_, m)| m == "2"), "{modes:?}");
    let modes = running_vm_seccomp_modes("off");
    assert!(modes.iter().all(|(_, m)| m == "0"), "{modes:?}");
}

#[test]
fn a_forbidden_syscall_in_any_vmm_thread_ends_the_vm_with_one_clear_line() {
    if !kvm_ready() {
        return;
    }
    // ISOL_VMM_SECCOMP=test-violation:KIND: a thread of KIND makes one syscall no list allows
    // (getppid) right after installing its filter.
    let one = |kind: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["run", "--backend", "kvm"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["busybox", "--", "sh", "-c", "echo ran"]);
        let mut c = isol(&args);
        c.env("ISOL_VMM_SECCOMP", format!("test-violation:{kind}"));
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        let err = stderr(&o);
        assert_eq!(code(&o), 125, "{kind}: {err}");
        assert_eq!(err.lines().count(), 1, "{kind}: not one line: {err}");
        let want = format!(
            "isol: the VMM's {kind} thread made a system call its seccomp filter forbids: getppid (110, "
        );
        assert!(err.starts_with(&want), "{kind}: {err}");
        assert!(
            err.trim_end().ends_with(
                "this is a bug in isol's seccomp filter for the VMM; set ISOL_VMM_SECCOMP=off to run without it and report it"
            ),
            "{kind}: {err}"
        );
        // The thread stopped the VM before the workload could run (all but the boot
        // helpers, which may be slower than the guest; the VM ends at their trap anyway).
        if !matches!(kind, "boot-set" | "late-io") {
            assert_eq!(stdout(&o), "", "{kind}");
        }
    };
    for kind in [
        "main",
        "vcpu",
        "virtio",
        "console-output",
        "boot-set",
        "late-io",
    ] {
        one(kind, &[], &[]);
    }
    // -t's window-size thread.
    one("winsize", &["-t"], &[]);
    // Without isol-vmm, in isol's own process: the VMM's threads are filtered the same.
    one("vcpu", &[], &[("ISOL_VMM", "")]);
}

#[test]
fn a_bad_isol_vmm_seccomp_is_refused() {
    require_root();
    for bad in ["maybe", "test-violation:gpu"] {
        assert_bad_with(
            &["busybox", "true"],
            &[("ISOL_VMM_SECCOMP", bad)],
            &format!("ISOL_VMM_SECCOMP={bad:?} is neither on nor off"),
        );
    }
}

#[test]
fn sigterm_and_sigint_end_a_filtered_vm_as_before() {
    if !kvm_ready() {
        return;
    }
    // The handlers run on whichever thread takes the signal, under its filter.
    for (sig, status) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let (child, _out) = vm_up(&["--log-level", "debug"], "echo up; sleep 600", "on");
        // SAFETY: a signal to our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert_eq!(code(&o), status, "{err}");
        assert!(
            err.contains(&format!("Interrupted by signal {sig}")),
            "{err}"
        );
        // --log-level debug says whether the filters are on, and how to turn them off.
        assert!(
            err.lines()
                .any(|l| l.contains("ISOL_VMM_SECCOMP=off turns them off")
                    && l.contains("seccomp=Process")),
            "{err}"
        );
    }
}
