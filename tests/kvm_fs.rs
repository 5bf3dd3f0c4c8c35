//! `-v HOSTDIR:DIR[:ro]` on the kvm backend: a virtio-fs device in isol's VMM served by a
//! virtiofsd isol starts per run (docs/devices.md, "virtio-fs").
//!
//! The boot tests run in the lab (`./test.sh`), like tests/kvm.rs, and need virtiofsd
//! (setup.sh installs it); the bad-input tests need neither.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The virtiofsd processes serving `dir` (by their command line).
fn virtiofsds_for(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_virtiofsd = args.first().is_some_and(|a| a.ends_with("virtiofsd"));
        if is_virtiofsd && args.iter().any(|a| Path::new(a) == dir) {
            found.push(format!(
                "{}: {}",
                e.file_name().to_string_lossy(),
                args.join(" ")
            ));
        }
    }
    found
}

/// The vhost-user socket directories isol makes (and removes at once).
fn socket_dirs() -> Vec<PathBuf> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("isol-virtiofs-")
        })
        .map(|e| e.path())
        .collect()
}

/// Nothing of the shares is left: no virtiofsd for `dir`, no socket directory, and nothing
/// else of isol's. A killed run's virtiofsd ends with its socket, asynchronously: it gets
/// the same grace as the kernel's namespace teardown in `assert_no_leftovers`.
fn assert_nothing_left(dir: &Path, context: &str) {
    assert_backends_gone(dir, context);
    assert_no_leftovers(context);
}

/// No virtiofsd for `dir`, no socket directory.
fn assert_backends_gone(dir: &Path, context: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    while !virtiofsds_for(dir).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(virtiofsds_for(dir), Vec::<String>::new(), "{context}");
    assert_eq!(socket_dirs(), Vec::<PathBuf>::new(), "{context}");
}

fn shared_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("kvm-fs-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    std::fs::write(d.path().join("in.txt"), "from the host\n").unwrap();
    d
}

/// A boot test's prologue: `None` (it skips) without KVM; else the host to itself until the
/// guard drops, a shared directory holding `in.txt`, and `-v`'s value sharing it at `target`.
fn share_test(
    target: &str,
) -> Option<(
    std::sync::MutexGuard<'static, ()>,
    tempfile::TempDir,
    String,
)> {
    if !kvm_ready() {
        return None;
    }
    let guard = root_test();
    let dir = shared_dir();
    let vol = format!("{}:{target}", dir.path().display());
    Some((guard, dir, vol))
}

/// `isol run --backend kvm -i --timeout 600 FLAGS… busybox -- sh -c SCRIPT` with stdin and
/// stdout piped, for a workload that talks with the test (the timeout only bounds a broken
/// run).
fn talking_vm(flags: &[&str], script: &str) -> Child {
    let mut args = vec!["run", "--backend", "kvm", "-i", "--timeout", "600"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "--", "sh", "-c", script]);
    isol(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `isol run --backend kvm FLAGS… busybox -- sh -c SCRIPT`.
fn kvm_sh(flags: &[&str], script: &str) -> std::process::Output {
    kvm_sh_env(flags, script, ("ISOL_TEST_UNUSED", ""))
}

/// [`kvm_sh`] with one more environment variable.
fn kvm_sh_env(flags: &[&str], script: &str, env: (&str, &str)) -> std::process::Output {
    let mut args = vec!["run", "--backend", "kvm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "--", "sh", "-c", script]);
    isol(&args).env(env.0, env.1).output().unwrap()
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

#[test]
fn a_shared_directory_is_read_and_written_both_ways_while_the_vm_runs() {
    let Some((_g, dir, vol)) = share_test("/data") else {
        return;
    };
    // The guest reads the host's file and writes its own, says so, waits for the host's
    // change, and waits until it sees it (the guest caches metadata for about a second).
    let script = "cat /data/in.txt; echo from the guest > /data/out.txt; mkdir /data/sub; \
                  echo ready; read line; \
                  while [ \"$(cat /data/later.txt 2>/dev/null)\" != changed ]; do sleep 0.1; done; \
                  while [ \"$(cat /data/in.txt)\" != rewritten ]; do sleep 0.1; done; \
                  echo saw $(cat /data/later.txt) $(cat /data/in.txt)";
    let mut child = talking_vm(&["-v", &vol], script);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert_eq!(read_line(&mut out), "from the host\n");
    assert_eq!(read_line(&mut out), "ready\n");
    // The guest's writes are on the host while the VM still runs.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "from the guest\n"
    );
    assert!(dir.path().join("sub").is_dir());
    // virtiofsd and its sandboxed child.
    assert!(!virtiofsds_for(dir.path()).is_empty());
    // The host changes the directory; the guest sees it.
    std::fs::write(dir.path().join("later.txt"), "changed").unwrap();
    std::fs::write(dir.path().join("in.txt"), "rewritten\n").unwrap();
    child.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert_eq!(read_line(&mut out), "saw changed rewritten\n");
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_nothing_left(dir.path(), "after a run");
}

#[test]
fn a_read_only_share_refuses_writes_in_the_guest() {
    let Some((_g, dir, vol)) = share_test("/ro:ro") else {
        return;
    };
    let o = kvm_sh(
        &["-v", &vol],
        "cat /ro/in.txt; echo x > /ro/new.txt; echo x >> /ro/in.txt; rm /ro/in.txt; \
         grep ' /ro ' /proc/mounts",
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "from the host");
    // Mounted virtiofs, read-only.
    assert!(
        lines[1].starts_with("isol-fs0 /ro virtiofs ro,"),
        "{}",
        stdout(&o)
    );
    let err = stderr(&o);
    assert_eq!(
        err.matches("Read-only file system").count(),
        3,
        "each write refused with EROFS: {err}"
    );
    assert!(!dir.path().join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("in.txt")).unwrap(),
        "from the host\n"
    );
    assert_nothing_left(dir.path(), "after a read-only run");
}

#[test]
fn two_shares_and_a_disk_in_one_vm() {
    if !kvm_ready() {
        return;
    }
    let _g = root_test();
    let (a, b) = (shared_dir(), shared_dir());
    std::fs::write(b.path().join("in.txt"), "b\n").unwrap();
    let disk = a.path().join("disk.img");
    std::fs::write(&disk, vec![7u8; 4096]).unwrap();
    let va = format!("{}:/a", a.path().display());
    let vb = format!("{}:/deep/b:ro", b.path().display());
    let vd = format!("{}:/dev/mydisk", disk.display());
    let o = kvm_sh(
        &["-v", &va, "-v", &vb, "-v", &vd],
        "cat /a/in.txt /deep/b/in.txt; cp /deep/b/in.txt /a/copied; head -c 3 /dev/mydisk | od -An -tu1",
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    let text = stdout(&o);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..2], ["from the host", "b"], "{text}");
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["7", "7", "7"],
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(a.path().join("copied")).unwrap(),
        "b\n"
    );
    assert_nothing_left(a.path(), "after a run with two shares");
    assert_nothing_left(b.path(), "after a run with two shares");
}

#[test]
fn a_failed_run_and_a_killed_isol_leave_nothing() {
    let Some((_g, dir, vol)) = share_test("/data") else {
        return;
    };
    // The VMM dies mid-run (a vCPU's seccomp trap, ISOL_VMM_SECCOMP's test mode).
    let o = kvm_sh_env(
        &["-v", &vol],
        "true",
        ("ISOL_VMM_SECCOMP", "test-violation:vcpu"),
    );
    assert_eq!(code(&o), 125, "stderr: {}", stderr(&o));
    assert_nothing_left(dir.path(), "after a failed run");

    // isol SIGKILLed while the guest uses the share.
    let mut child = talking_vm(&["-v", &vol], "echo x > /data/x; echo ready; read line");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert_eq!(read_line(&mut out), "ready\n");
    // virtiofsd and its sandboxed child.
    assert!(!virtiofsds_for(dir.path()).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    // virtiofsd and its socket are gone at once; the jail's run dir and cgroup wait for the
    // next run's sweep (docs/design.md, "The VMM's jail"), the first one below.
    assert_backends_gone(dir.path(), "after isol was SIGKILLed");

    // With the jail (the guest sees what the killed run's guest wrote), without it, and
    // without isol-vmm: the same.
    for env in [
        ("ISOL_TEST_UNUSED", ""),
        ("ISOL_VMM_JAIL", "off"),
        ("ISOL_VMM", ""),
    ] {
        let o = kvm_sh_env(&["-v", &vol], "cat /data/x", env);
        assert_eq!(code(&o), 0, "{env:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), "x\n", "{env:?}");
        assert_nothing_left(dir.path(), &format!("after a run with {env:?}"));
    }
}

#[test]
fn virtiofsd_dying_mid_run_ends_the_run_with_a_clear_error() {
    let Some((_g, dir, vol)) = share_test("/data") else {
        return;
    };
    // The workload reads the share until it cannot; the timeout only bounds a run whose
    // backend's death went unseen (124, not the 125 wanted).
    let mut child = isol(&[
        "run",
        "--backend",
        "kvm",
        "--timeout",
        "180",
        "-v",
        &vol,
        "busybox",
        "--",
        "sh",
        "-c",
        "cat /data/in.txt; while true; do cat /data/in.txt > /dev/null; ls /data > /dev/null; done",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert_eq!(read_line(&mut out), "from the host\n");
    // virtiofsd and its sandboxed child, killed as an OOM kill or a crash would.
    let backends = virtiofsds_for(dir.path());
    assert!(!backends.is_empty());
    for b in &backends {
        let pid: i32 = b.split(':').next().unwrap().parse().unwrap();
        // SAFETY: kill(2) with integer arguments; the pid is a virtiofsd of this run.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let o = child.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 125, "stderr: {err}");
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("exited while the VM ran"))
        .collect();
    assert_eq!(said.len(), 1, "one line: {err}");
    assert!(
        said[0].contains("virtiofsd serving the shared directory /data (virtio-fs isol-fs0)"),
        "{err}"
    );
    assert_nothing_left(dir.path(), "after virtiofsd died mid-run");
}

// Bad input: one clear line and 125, before any VM. No KVM needed.

fn assert_bad(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let mut all = args.to_vec();
    all.extend_from_slice(&["busybox", "true"]);
    assert_kvm_refused(&all, env, needle);
}

#[test]
fn a_missing_virtiofsd_and_sources_a_vm_cannot_take_are_refused() {
    let dir = shared_dir();
    let vol = format!("{}:/data", dir.path().display());
    // Where distributions put it, it would be found whatever PATH says.
    let elsewhere = ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];
    if !elsewhere
        .iter()
        .chain(&["/usr/bin/virtiofsd", "/bin/virtiofsd"])
        .any(|p| Path::new(p).exists())
    {
        assert_bad(
            &["-v", &vol],
            &[("PATH", "/usr/bin:/bin")],
            "needs virtiofsd, which is not on PATH or in /usr/libexec; install it: cargo install virtiofsd",
        );
    }
    assert_bad(
        &["-v", &vol],
        &[("ISOL_VIRTIOFSD", "/nonexistent/virtiofsd")],
        "ISOL_VIRTIOFSD=/nonexistent/virtiofsd is not an executable file",
    );
    assert_bad(
        &["-v", "/dev/null:/null"],
        &[],
        "-v /dev/null: a socket, FIFO or character device cannot be given to a VM",
    );
}
