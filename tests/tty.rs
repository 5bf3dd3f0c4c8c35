//! `-i -t`: isol runs on a real pseudo-terminal here, as under a user's terminal emulator; the
//! container gets its own pty, and ^C, window size and the exit code must go through.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

#[test]
fn interactive_shell_gets_size_ctrl_c_and_exit_code() {
    require_root();
    let _g = serial();
    let mut t = pty::spawn(&["run", "-i", "-t", "busybox", "sh"], 40, 100);

    t.master
        .write_all(b"stty size; tty; echo mark-$((6*7))\n")
        .unwrap();
    t.read_until("mark-42");
    assert!(
        t.seen.contains("40 100"),
        "window size not passed on:\n{}",
        t.seen
    );
    // The container's terminal is bound at /dev/console (it comes from the host's devpts).
    assert!(
        t.seen.contains("/dev/console") || t.seen.contains("/dev/pts/"),
        "stdin is not a terminal:\n{}",
        t.seen
    );

    // ^C travels as a byte; the container's line discipline turns it into SIGINT for the
    // foreground job, and the shell survives.
    t.master.write_all(b"sleep 100\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    t.master.write_all(&[3]).unwrap();
    t.master.write_all(b"echo after-$((1+1))\n").unwrap();
    t.read_until("after-2");

    // A resize of isol's terminal reaches the container's.
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
    assert_no_leftovers("tty");
}
