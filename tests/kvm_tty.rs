//! `-i -t` on the kvm backend: isol runs on a real pseudo-terminal, as under a user's terminal
//! emulator; the guest init gives the workload its own pty and relays it over the virtio
//! console, so the size, `tty`, ^C and the exit code must all go through.
//!
//! Needs a /dev/kvm that runs guests in hardware: run it in the lab (`isol lab -- <this test
//! binary> --test-threads=1`, with `ISOL_KERNEL` set); it skips elsewhere, unless
//! `ISOL_REQUIRE_KVM` is set.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

#[test]
fn interactive_shell_in_the_vm_gets_size_ctrl_c_and_exit_code() {
    if !kvm_ready() {
        return;
    }
    require_root();
    let _g = serial();
    let mut t = pty::spawn(
        &["run", "--backend", "kvm", "-i", "-t", "busybox", "sh"],
        40,
        100,
    );

    t.master
        .write_all(b"stty size; tty; echo mark-$((6*7))\n")
        .unwrap();
    t.read_until("mark-42");
    assert!(
        t.seen.contains("40 100"),
        "window size not passed on:\n{}",
        t.seen
    );
    assert!(
        t.seen.contains("/dev/pts/"),
        "stdin is not a terminal:\n{}",
        t.seen
    );

    // ^C travels as a byte (isol's terminal is raw); the guest pty's line discipline
    // turns it into SIGINT for the foreground job, and the shell survives.
    t.master
        .write_all(b"sleep 100; echo slept-$((3*3))\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    t.master.write_all(&[3]).unwrap();
    t.master.write_all(b"echo after-$((1+1))\n").unwrap();
    t.read_until("after-2");
    assert!(
        !t.seen.contains("slept-9"),
        "^C did not stop sleep:\n{}",
        t.seen
    );

    // A resize of isol's terminal reaches the guest's pty (SIGWINCH → the isol.tty port).
    t.resize(12, 34);
    std::thread::sleep(Duration::from_millis(300));
    t.master
        .write_all(b"stty size; echo resized-$((2+2))\n")
        .unwrap();
    t.read_until("resized-4");
    assert!(
        t.seen.contains("12 34"),
        "resize not passed on:\n{}",
        t.seen
    );

    t.master.write_all(b"exit 5\n").unwrap();
    let status = t.child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "output:\n{}", t.seen);
}
