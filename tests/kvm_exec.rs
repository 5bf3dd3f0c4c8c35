//! `isol exec` into a running microVM, for real (docs/vmm.md, "The exec channel"): a detached
//! kvm run, then processes started in its guest through the VMM's exec channel — output, exit
//! codes (126, 127, 128+N), stdin (more than the channel's window both ways), `-e -w -u`, the
//! workload's privileges, two at once, `-d`, a forwarded SIGINT, `-t` on a real pty (`tty`,
//! `stty size` following a resize) — and what is left after `stop`, after the workload ends
//! under a running exec, and after a SIGKILL of the run's isol: nothing (no socket, no VMM).
//!
//! Needs a /dev/kvm that runs guests in hardware: run it in the lab (`isol lab -- <this test
//! binary> --test-threads=1`, with `ISOL_KERNEL` set); it skips elsewhere, unless
//! `ISOL_REQUIRE_KVM` is set.

mod common;

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn start_vm(name: &str, workload: &[&str]) -> String {
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--backend",
        "kvm",
        "busybox",
        "--",
    ];
    args.extend_from_slice(workload);
    ok(&args).trim().to_owned()
}

fn socket(id: &str) -> std::path::PathBuf {
    test_home().join(format!("runs/{id}.sock"))
}

fn no_vmm_left(name: &str) {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let o = std::process::Command::new("pgrep")
            .args(["-f", &format!("isol-vmm.*--name {name}")])
            .output()
            .unwrap();
        if o.stdout.is_empty() {
            return;
        }
        assert!(Instant::now() < end, "a VMM is left: {}", stdout(&o));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `isol exec ARGS` with `input` on its stdin.
fn exec_with_stdin(args: &[&str], input: &[u8]) -> std::process::Output {
    output_with_stdin(&mut isol(args), input)
}

#[test]
fn exec_runs_processes_in_a_running_microvm() {
    if !kvm_ready() {
        return;
    }
    let _g = root_test();
    let _stop = StopAll;
    let id = start_vm("vmx", &["sleep", "300"]);
    assert!(socket(&id).exists(), "no exec socket for {id}");

    // Output on both streams and the exit code.
    let o = run(&[
        "exec",
        "vmx",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (3, "out\n"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o), "err\n");
    // In the VM, beside its workload.
    assert!(
        !ok(&["exec", "vmx", "--", "pidof", "sleep"])
            .trim()
            .is_empty()
    );
    // Not found, cannot execute, killed by a signal: docker's codes.
    let o = run(&["exec", "vmx", "--", "no-such-cmd"]);
    assert_eq!(code(&o), 127, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no-such-cmd: command not found"),
        "{}",
        stderr(&o)
    );
    let o = run(&["exec", "vmx", "--", "/etc/passwd"]);
    assert_eq!(code(&o), 126, "{}", stderr(&o));
    assert_eq!(
        code(&run(&["exec", "vmx", "--", "sh", "-c", "kill -TERM $$"])),
        143
    );
    // -e, -w, -u.
    let out = ok(&[
        "exec",
        "-e",
        "A=1",
        "-w",
        "/tmp",
        "-u",
        "1000:1001",
        "vmx",
        "--",
        "sh",
        "-c",
        "echo $A $(pwd) $(id -u):$(id -g)",
    ]);
    assert_eq!(out, "1 /tmp 1000:1001\n");
    // The workload's privileges: its bounding set (docker's defaults), not init's.
    let mine = ok(&["exec", "vmx", "--", "grep", "CapBnd", "/proc/self/status"]);
    let workload = ok(&[
        "exec",
        "vmx",
        "--",
        "sh",
        "-c",
        "grep CapBnd /proc/$(pidof sleep)/status",
    ]);
    assert_eq!(mine, workload);
    assert!(!mine.contains("000001ffffffffff"), "{mine}");
    assert_eq!(
        ok(&[
            "exec",
            "vmx",
            "--",
            "grep",
            "NoNewPrivs",
            "/proc/self/status"
        ])
        .trim(),
        "NoNewPrivs:\t1"
    );

    // Stdin, and more than the channel's window (256 KiB) each way.
    let o = exec_with_stdin(&["exec", "-i", "vmx", "--", "tr", "a-z", "A-Z"], b"hello\n");
    assert_eq!(
        (code(&o), stdout(&o).as_str()),
        (0, "HELLO\n"),
        "{}",
        stderr(&o)
    );
    let big = vec![b'x'; 3 << 20];
    let o = exec_with_stdin(&["exec", "-i", "vmx", "--", "wc", "-c"], &big);
    assert_eq!(stdout(&o).trim(), (3 << 20).to_string(), "{}", stderr(&o));
    let o = run(&["exec", "vmx", "--", "head", "-c", "3000000", "/dev/zero"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(o.stdout.len(), 3_000_000);
    assert!(o.stdout.iter().all(|b| *b == 0));
    // Without -i, stdin is at its end at once.
    let o = exec_with_stdin(&["exec", "vmx", "--", "cat"], b"not for the process");
    assert_eq!((code(&o), stdout(&o).as_str()), (0, ""));

    // Two at once: the first ends only once the second has run.
    let first = isol(&[
        "exec",
        "vmx",
        "--",
        "sh",
        "-c",
        "while [ ! -e /tmp/second ]; do sleep 0.1; done; echo first-done",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let out = ok(&[
        "exec",
        "vmx",
        "--",
        "sh",
        "-c",
        "touch /tmp/second; echo second-done",
    ]);
    assert_eq!(out, "second-done\n");
    let o = first.wait_with_output().unwrap();
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "first-done\n"));

    // -d: returns at once, the process goes on.
    let o = run(&[
        "exec",
        "-d",
        "vmx",
        "--",
        "sh",
        "-c",
        "sleep 1; touch /tmp/detached",
    ]);
    assert_eq!((code(&o), stdout(&o).as_str()), (0, ""), "{}", stderr(&o));
    let end = Instant::now() + Duration::from_secs(60);
    while code(&run(&["exec", "vmx", "--", "test", "-e", "/tmp/detached"])) != 0 {
        assert!(Instant::now() < end, "the detached process never ran");
        std::thread::sleep(Duration::from_millis(200));
    }

    // SIGINT to isol exec reaches the process.
    let mut c = isol(&[
        "exec",
        "vmx",
        "--",
        "sh",
        "-c",
        "trap 'echo got-int; exit 9' INT; echo ready; while :; do sleep 0.1; done",
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = c.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut b = [0u8; 64];
    while !String::from_utf8_lossy(&seen).contains("ready") {
        let n = out.read(&mut b).unwrap();
        assert!(n > 0, "EOF before ready");
        seen.extend_from_slice(&b[..n]);
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    out.read_to_end(&mut seen).unwrap();
    assert!(String::from_utf8_lossy(&seen).contains("got-int"));
    assert_eq!(c.wait().unwrap().code(), Some(9));

    // -t: a pty in the guest, sized as ours and following it.
    let mut t = pty::spawn(&["exec", "-i", "-t", "vmx", "--", "sh"], 40, 100);
    t.master
        .write_all(b"stty size; tty; echo mark-$((6*7))\n")
        .unwrap();
    t.read_until("mark-42");
    assert!(t.seen.contains("40 100"), "{}", t.seen);
    assert!(t.seen.contains("/dev/pts/"), "{}", t.seen);
    t.resize(12, 34);
    std::thread::sleep(Duration::from_millis(500));
    t.master
        .write_all(b"stty size; echo mark-$((2*4))\n")
        .unwrap();
    t.read_until("mark-8");
    assert!(t.seen.contains("12 34"), "{}", t.seen);
    t.master.write_all(b"exit 5\n").unwrap();
    assert_eq!(t.child.wait().unwrap().code(), Some(5));

    // Stopped: no socket, no VMM, and exec is refused saying why.
    assert_eq!(ok(&["stop", "-t", "5", "vmx"]).trim(), "vmx");
    assert!(!socket(&id).exists());
    no_vmm_left("vmx");
    let o = run(&["exec", "vmx", "--", "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("No such run"), "{}", stderr(&o));
    assert_no_leftovers("kvm exec");
}

/// A process exec'd into the VM dies with the workload (as in docker), its isol exec says so
/// (137); afterwards exec is refused.
#[test]
fn exec_ends_with_the_workload_and_is_refused_after() {
    if !kvm_ready() {
        return;
    }
    let _g = root_test();
    let _stop = StopAll;
    let id = start_vm(
        "vmy",
        // A second after the file appears: the exec that made it has reported its end.
        &[
            "sh",
            "-c",
            "while [ ! -e /tmp/end ]; do sleep 0.1; done; sleep 1",
        ],
    );
    let mut long = isol(&["exec", "vmy", "--", "sh", "-c", "echo started; sleep 300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut b = [0u8; 8];
    let mut out = long.stdout.take().unwrap();
    out.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"started\n");
    ok(&["exec", "vmy", "--", "touch", "/tmp/end"]);
    let o = long.wait_with_output().unwrap();
    assert_eq!(code(&o), 137, "{}", stderr(&o));
    assert!(stderr(&o).contains("the run ended"), "{}", stderr(&o));
    let end = Instant::now() + Duration::from_secs(30);
    while !ps_json().is_empty() {
        assert!(Instant::now() < end, "the run did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!socket(&id).exists());
    let o = run(&["exec", "vmy", "--", "true"]);
    assert_eq!(code(&o), 125);
    assert!(stderr(&o).contains("No such run"), "{}", stderr(&o));
    no_vmm_left("vmy");
    assert_no_leftovers("kvm exec after the workload");
}

/// A SIGKILLed isol (the run's relay) takes the VM with it: a running exec ends saying so, and
/// the next listing removes the record and the socket.
#[test]
fn sigkill_of_the_runs_isol_leaves_no_socket_and_no_vmm() {
    if !kvm_ready() {
        return;
    }
    let _g = root_test();
    let _stop = StopAll;
    let id = start_vm("vmk", &["sleep", "300"]);
    assert_eq!(ok(&["exec", "vmk", "--", "echo", "up"]), "up\n");
    let long = isol(&["exec", "vmk", "--", "sleep", "300"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Connected (the exec channel took it) before the kill: wait for its sleep.
    let end = Instant::now() + Duration::from_secs(60);
    while ok(&["exec", "vmk", "--", "sh", "-c", "pidof sleep | wc -w"]).trim() != "2" {
        assert!(Instant::now() < end, "the exec'd sleep never ran");
        std::thread::sleep(Duration::from_millis(100));
    }
    kill_supervisor(&id);
    let o = long.wait_with_output().unwrap();
    assert_ne!(code(&o), 0);
    assert!(stderr(&o).starts_with("isol: "), "{}", stderr(&o));
    no_vmm_left("vmk");
    assert!(ps_json().is_empty());
    assert!(!socket(&id).exists(), "the exec socket is left");
    // The jail's run dir and cgroup go with the next run's sweep (docs/design.md, "The VMM's
    // jail"), as after any SIGKILLed kvm run.
    ok(&["run", "--backend", "kvm", "busybox", "--", "true"]);
    assert_no_leftovers("SIGKILL of a kvm run with an exec, and the next run");
}

/// `isol exec`'s processes join the workload's cgroup in the guest, as a container's do on the
/// host: they see its limit and count against it.
#[test]
fn exec_joins_the_workloads_cgroup() {
    if !kvm_ready() {
        return;
    }
    let _g = root_test();
    let _stop = StopAll;
    ok(&[
        "run",
        "-d",
        "--name",
        "vmcg",
        "--backend",
        "kvm",
        "--pids-limit",
        "20",
        "busybox",
        "--",
        "sleep",
        "300",
    ]);
    let out = ok(&[
        "exec",
        "vmcg",
        "--",
        "sh",
        "-c",
        "cat /sys/fs/cgroup/pids.max /proc/self/cgroup /sys/fs/cgroup/pids.current",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["20", "0::/"], "{out}");
    // The workload's sleep and the exec's cat (sh execs its last command): outside the
    // cgroup the exec would count for nothing, and see no pids.max at all (the root's view).
    let current: u32 = lines[2].parse().unwrap();
    assert!(current >= 2, "{out}");
    ok(&["stop", "vmcg"]);
    no_vmm_left("vmcg");
    assert_no_leftovers("kvm exec in the workload's cgroup");
}
