//! The container backend against a hostile or careless workload, each from a hole that testing
//! isol from outside found: the host's devices, the root directory's mode, out-of-range ids, a
//! workload that stops its init, signals ignored where isol was started. Every test runs the
//! real `isol` binary as root and checks the host after.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A container may create and open the default devices only: not a loop device, loop-control,
/// /dev/kvm, fuse, tty0 or a disk of the host (runc's and docker's defaults), mknod included.
#[test]
fn devices_of_the_host_are_out_of_reach() {
    let _g = root_test();
    let probe = r#"
        for n in 'loop b 7 0' 'loopctl c 10 237' 'kvm c 10 232' 'fuse c 10 229' 'tty0 c 4 0' \
                 'sda b 8 0' 'vda b 253 0' 'null2 c 1 3'; do
            set -- $n
            mknod /tmp/$1 $2 $3 $4 2>/dev/null && echo "mknod $1"
            [ -e /tmp/$1 ] && (: < /tmp/$1) 2>/dev/null && echo "open $1"
        done
        echo x > /dev/null && head -c1 /dev/zero >/dev/null && head -c1 /dev/urandom >/dev/null && echo defaults
        [ -c /dev/ptmx ] && echo ptmx"#;
    let out = ok(&["run", "busybox", "--", "sh", "-c", probe]);
    assert_eq!(out, "mknod null2\nopen null2\ndefaults\nptmx\n");
    // The reproducer: a read of the host's first loop device.
    let o = run(&[
        "run",
        "busybox",
        "--",
        "sh",
        "-c",
        "mknod /dev/l b 7 0 && head -c 27 /dev/l",
    ]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    assert_no_leftovers("devices");
}

/// `/` carries the image's mode (0755, root's), so another uid cannot create or remove entries
/// at the top of the container's filesystem.
#[test]
fn the_root_directory_is_not_world_writable() {
    let _g = root_test();
    let out = ok(&["run", "busybox", "--", "stat", "-c", "%a %u", "/"]);
    assert_eq!(out, "755 0\n");
    let o = run(&[
        "run",
        "-u",
        "65534",
        "busybox",
        "--",
        "sh",
        "-c",
        "touch /pwned 2>/dev/null && echo created; mkdir /x 2>/dev/null && echo made; \
         mv /linuxrc /l 2>/dev/null && echo moved; echo end",
    ]);
    assert_eq!(stdout(&o), "end\n", "{}", stderr(&o));
    assert_no_leftovers("root mode");
}

/// uid 4294967295 is -1 to setresuid ("leave unchanged"): it would run the workload as root.
#[test]
fn ids_out_of_range_are_refused() {
    require_root();
    for user in [
        "4294967295",
        "4294967295:1000",
        "0:4294967295",
        "2147483648",
    ] {
        let o = run(&["run", "-u", user, "busybox", "--", "id", "-u"]);
        assert_eq!(code(&o), 125, "-u {user}: {}{}", stdout(&o), stderr(&o));
        assert!(
            stderr(&o).contains("uids and gids must be in range 0-2147483647"),
            "{}",
            stderr(&o)
        );
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    }
    let out = ok(&["run", "-u", "2147483647", "busybox", "--", "id", "-u"]);
    assert_eq!(out, "2147483647\n");
}

/// Without `-u` the workload is root with root's groups from the image's /etc/group (as
/// docker), never the supplementary groups isol itself was started with.
#[test]
fn the_workload_does_not_inherit_isols_groups() {
    let _g = root_test();
    let o = std::process::Command::new("setpriv")
        .args(["--groups", "10,20", "--"])
        .arg(isol_bin())
        .args(["run", "busybox", "--", "id", "-G"])
        .output()
        .expect("setpriv (util-linux) runs isol");
    assert_eq!(stdout(&o), "0\n", "{}", stderr(&o));
    assert_no_leftovers("groups");
}

/// A static program that `ptrace(PTRACE_ATTACH, 1)`s the container's init and exits, built for
/// the test with the host's C compiler.
fn ptrace_attacher() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ptrace-attacher");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("attach.c");
    std::fs::write(
        &src,
        r#"#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/ptrace.h>
int main(void) {
    long r = ptrace(PTRACE_ATTACH, 1, 0, 0);
    printf("attach: %s\n", r == 0 ? "attached" : strerror(errno));
    return 0;
}
"#,
    )
    .unwrap();
    let out = std::process::Command::new("cc")
        .args(["-static", "-O", "-o"])
        .arg(dir.join("attach"))
        .arg(&src)
        .output()
        .expect("a C compiler (cc) for the ptrace test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// Waits for `child` at most `limit`; kills it (and fails) past that.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: isol did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The container's init, the one child of the isol process `isol`.
fn init_of(isol: u32) -> Pid {
    let path = format!("/proc/{isol}/task/{isol}/children");
    let text = std::fs::read_to_string(&path).unwrap();
    let pids: Vec<i32> = text
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 1, "children of isol: {text}");
    Pid::from_raw(pids[0])
}

/// Starts `isol run busybox -- sh -c SCRIPT` and reads its stdout up to the line "ready".
fn start_until_ready(script: &str, setup: impl FnOnce(&mut std::process::Command)) -> Child {
    let mut cmd = isol(&["run", "busybox", "--", "sh", "-c", script]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    setup(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // Keep draining, so the workload never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    child
}

/// A workload cannot stop its init and so hang isol: ptrace is refused (init is not dumpable),
/// and an init stopped all the same (here by SIGSTOP from the host) is continued by isol at once.
#[test]
fn a_workload_cannot_hang_isol_by_stopping_its_init() {
    let _g = root_test();
    let dir = ptrace_attacher();
    let volume = format!("{}:/t:ro", dir.display());
    let o = run(&["run", "-v", &volume, "busybox", "--", "/t/attach"]);
    assert_eq!(
        stdout(&o),
        "attach: Operation not permitted\n",
        "{}",
        stderr(&o)
    );
    assert_eq!(code(&o), 0);

    let mut child = start_until_ready("echo ready; sleep 1; echo done", |_| {});
    let init = init_of(child.id());
    // By the way: init runs from a sealed in-memory copy, never the host's binary.
    let exe = std::fs::read_link(format!("/proc/{init}/exe")).unwrap();
    assert!(exe.to_string_lossy().starts_with("/memfd:"), "{exe:?}");
    kill(init, Signal::SIGSTOP).unwrap();
    assert_eq!(
        wait_bounded(&mut child, Duration::from_secs(20), "stopped init"),
        0
    );
    assert_no_leftovers("stopped init");
}

/// The init runs from a sealed memfd copy of `isol-init`, made by a thread of isol while the rest
/// of the run is prepared: complete, and sealed against any write, resize or change of its seals
/// whoever holds it. With CAP_SYS_PTRACE the workload reaches it through /proc/1/exe, and its
/// writes are refused.
#[test]
fn the_inits_copy_is_complete_and_sealed() {
    use std::os::fd::AsRawFd;
    let _g = root_test();
    let mut child = start_until_ready("echo ready; sleep 1; echo done", |_| {});
    let init = init_of(child.id());
    let exe = std::fs::File::open(format!("/proc/{init}/exe")).unwrap();
    // SAFETY: F_GET_SEALS takes no argument and only reads the descriptor's seals.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    let want = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    assert_eq!(seals & want, want, "seals {seals:#x}");
    let on_disk = std::fs::read(env!("CARGO_BIN_EXE_isol-init")).unwrap();
    let copy = std::fs::read(format!("/proc/{init}/exe")).unwrap();
    assert!(copy == on_disk, "the copy differs from isol-init");
    assert_eq!(
        wait_bounded(&mut child, Duration::from_secs(20), "sealed init"),
        0
    );
    let out = ok(&[
        "run",
        "--cap-add",
        "SYS_PTRACE",
        "busybox",
        "--",
        "sh",
        "-c",
        "readlink /proc/1/exe; (echo x >> /proc/1/exe) 2>/dev/null && echo WROTE || echo refused; head -c 4 /proc/1/exe",
    ]);
    assert_eq!(out, "/memfd:isol-init (deleted)\nrefused\n\x7fELF");
    assert_no_leftovers("sealed init");
}

/// The second SIGTERM or SIGINT ends the run even when the workload ignores the first.
#[test]
fn a_second_sigterm_ends_a_workload_that_ignores_the_first() {
    let _g = root_test();
    let mut child = start_until_ready("trap '' TERM INT; echo ready; sleep 60", |_| {});
    let isol = Pid::from_raw(child.id() as i32);
    kill(isol, Signal::SIGTERM).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the workload ignores SIGTERM"
    );
    kill(isol, Signal::SIGINT).unwrap();
    let code = wait_bounded(&mut child, Duration::from_secs(10), "second signal");
    assert_eq!(code, 137);
    assert_no_leftovers("second signal");
}

/// Signals ignored where isol was started (a shell's background job: SIGINT and SIGQUIT) are
/// neither ignored by isol nor by the workload: SIGINT to isol ends the run with 130.
#[test]
fn signals_ignored_by_isols_parent_are_reset() {
    let _g = root_test();
    let ignoring = |cmd: &mut std::process::Command| {
        let ignore = || {
            for sig in [libc::SIGINT, libc::SIGQUIT, libc::SIGCHLD] {
                // SAFETY: signal() installs SIG_IGN, no handler; async-signal-safe.
                unsafe { libc::signal(sig, libc::SIG_IGN) };
            }
            Ok(())
        };
        // SAFETY: the closure runs in the forked child before exec and only calls signal().
        unsafe { cmd.pre_exec(ignore) };
    };
    let mut o = isol(&[
        "run",
        "busybox",
        "--",
        "grep",
        "-E",
        "Sig(Ign|Blk)",
        "/proc/self/status",
    ]);
    ignoring(&mut o);
    let o = o.output().unwrap();
    assert_eq!(
        stdout(&o),
        "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
        "{}",
        stderr(&o)
    );

    let mut child = start_until_ready("echo ready; exec sleep 60", ignoring);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    assert_eq!(
        wait_bounded(&mut child, Duration::from_secs(10), "SIGINT"),
        130
    );
    assert_no_leftovers("ignored signals");
}

/// A file with the execute bit that is no program fails as docker's runtimes fail: 126, exec
/// format error — never run by /bin/sh instead (execvp's fallback).
#[test]
fn a_non_program_with_x_is_126_not_run_by_the_shell() {
    let _g = root_test();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notelf");
    std::fs::write(&file, "echo ran-by-sh\n").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let volume = format!("{}:/t:ro", dir.path().display());
    for prog in ["/t/notelf", "notelf"] {
        let o = isol(&[
            "run",
            "-v",
            &volume,
            "-e",
            "PATH=/t:/bin",
            "busybox",
            "--",
            prog,
        ])
        .output()
        .unwrap();
        assert_eq!(code(&o), 126, "{prog}: {}{}", stdout(&o), stderr(&o));
        assert!(!stdout(&o).contains("ran-by-sh"), "{}", stdout(&o));
        assert!(stderr(&o).contains("exec format error"), "{}", stderr(&o));
    }
    // Not found stays 127, permission denied 126.
    let o = run(&["run", "busybox", "--", "no-such-program"]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
    let o = run(&["run", "busybox", "--", "/etc/passwd"]);
    assert_eq!(code(&o), 126, "{}", stderr(&o));
    assert_no_leftovers("non-program");
}

/// `--json` names the signal that killed the workload, though isol's init exits with 128+N.
#[test]
fn json_reports_the_signal_that_killed_the_workload() {
    let _g = root_test();
    for (script, signal) in [("kill -9 $$", 9), ("kill -TERM $$", 15), ("exit 137", -1)] {
        let o = run(&["run", "--json", "busybox", "--", "sh", "-c", script]);
        let err = stderr(&o);
        let last = err.lines().last().unwrap_or("");
        let last = &last[last.find('{').unwrap_or(0)..];
        let report: serde_json::Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("{script}: bad JSON {last:?}: {e}"));
        let want = if signal < 0 {
            serde_json::Value::Null
        } else {
            signal.into()
        };
        assert_eq!(report["signal"], want, "{script}: {report}");
        let code_want = if signal < 0 { 137 } else { 128 + signal };
        assert_eq!(code(&o), code_want, "{script}");
    }
    assert_no_leftovers("json signal");
}

/// `--security-opt seccomp=PROFILE.json`: a profile in docker's format (its `includes` resolved
/// for the run's capabilities) replaces isol's default: an errno of its own, a condition on an
/// argument, a kill. The kvm backend runs the same profile in tests/parity.rs.
#[test]
fn a_seccomp_profile_from_a_file_replaces_the_default() {
    let _g = root_test();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("profile.json");
    std::fs::write(&profile, SECCOMP_PROFILE).unwrap();
    let o = run_under_profile(&profile, SECCOMP_PROBE);
    assert_eq!(code(&o), 159, "{}", stderr(&o));
    assert_eq!(stdout(&o), SECCOMP_OUT);
    assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    assert_no_leftovers("seccomp profile");
}

/// `isol run --security-opt seccomp=PROFILE busybox -- sh -c SCRIPT`.
fn run_under_profile(profile: &std::path::Path, script: &str) -> std::process::Output {
    let opt = format!("seccomp={}", profile.display());
    run(&[
        "run",
        "--security-opt",
        &opt,
        "busybox",
        "--",
        "sh",
        "-c",
        script,
    ])
}

/// Denies mkdir with EACCES and SIGUSR1 (10) with EPERM, kills on sync; chmod is denied only
/// with CAP_SYS_ADMIN, which the run does not hold (docker's `includes`), so it works.
const SECCOMP_PROFILE: &str = r#"{
    "defaultAction": "SCMP_ACT_ALLOW",
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
    "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
        {"names": ["sync"], "action": "SCMP_ACT_KILL_PROCESS"},
        {"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "includes": {"caps": ["CAP_SYS_ADMIN"]}}
    ]
}"#;
const SECCOMP_PROBE: &str = "mkdir /tmp/d; echo mkdir=$?; kill -USR1 $$ 2>/dev/null; \
     echo usr1=$?; kill -0 $$; echo zero=$?; chmod 600 /tmp; echo chmod=$?; exec sync";
const SECCOMP_OUT: &str = "mkdir=1\nusr1=1\nzero=0\nchmod=0\n";

/// docker's and podman's own default profiles (the unit tests' data) go onto the real kernel
/// and run a workload: what they allow works, what they deny (a new mount namespace) fails.
#[test]
fn dockers_and_podmans_default_profiles_run_a_workload() {
    let _g = root_test();
    for name in ["moby-default.json", "podman-default.json"] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("container/src/security/testdata")
            .join(name);
        let o = run_under_profile(
            &path,
            "grep ^Seccomp: /proc/self/status; mkdir /tmp/x && echo made; unshare -m true 2>/dev/null; echo unshare=$?",
        );
        assert_eq!(code(&o), 0, "{name}: {}", stderr(&o));
        assert_eq!(stdout(&o), "Seccomp:\t2\nmade\nunshare=1\n", "{name}");
    }
    assert_no_leftovers("default profiles");
}
