//! `-i -t`: isol runs on a real pseudo-terminal here, as under a user's terminal emulator; the
//! container gets its own pty, and ^C, window size and the exit code must go through.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nix::pty::{Winsize, openpty};

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

/// Reads from the master until `needle` has appeared, or panics with what came.
fn read_until(master: &mut std::fs::File, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        assert!(
            Instant::now() < deadline,
            "never saw {needle:?}; got:\n{seen}"
        );
        match master.read(&mut buf) {
            Ok(0) => panic!("EOF before {needle:?}; got:\n{seen}"),
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                panic!("pty closed before {needle:?}; got:\n{seen}")
            }
            Err(e) => panic!("read: {e}"),
        }
    }
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// setsid and TIOCSCTTY on stdin: the pty becomes isol's controlling terminal, as a terminal
/// emulator does for a shell.
fn become_terminal_session() -> std::io::Result<()> {
    // SAFETY: setsid takes no arguments and acts on this process only.
    if unsafe { libc::setsid() } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: TIOCSCTTY on our stdin (a terminal) with an int argument.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[test]
fn interactive_shell_gets_size_ctrl_c_and_exit_code() {
    require_root();
    let _g = serial();
    let pty = openpty(Some(&winsize(40, 100)), None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut cmd = isol(&["run", "-i", "-t", "busybox", "sh"]);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    // SAFETY: the closure runs in the forked child before exec and only makes the two
    // async-signal-safe calls below.
    unsafe { cmd.pre_exec(become_terminal_session) };
    let mut child = cmd.spawn().unwrap();
    let mut master = std::fs::File::from(pty.master);
    let mut seen = String::new();

    master
        .write_all(b"stty size; tty; echo mark-$((6*7))\n")
        .unwrap();
    read_until(&mut master, &mut seen, "mark-42");
    assert!(
        seen.contains("40 100"),
        "window size not passed on:\n{seen}"
    );
    // The container's terminal is bound at /dev/console (it comes from the host's devpts).
    assert!(
        seen.contains("/dev/console") || seen.contains("/dev/pts/"),
        "stdin is not a terminal:\n{seen}"
    );

    // ^C travels as a byte; the container's line discipline turns it into SIGINT for the
    // foreground job, and the shell survives.
    master.write_all(b"sleep 100\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    master.write_all(&[3]).unwrap();
    master.write_all(b"echo after-$((1+1))\n").unwrap();
    read_until(&mut master, &mut seen, "after-2");

    // A resize of isol's terminal reaches the container's.
    // SAFETY: TIOCSWINSZ reads a Winsize from a valid pointer; the fd is our pty master.
    unsafe { set_winsize(master.as_raw_fd(), &winsize(12, 34)) }.unwrap();
    std::thread::sleep(Duration::from_millis(300));
    master
        .write_all(b"stty size; echo resized-$((2+2))\n")
        .unwrap();
    read_until(&mut master, &mut seen, "resized-4");
    assert!(seen.contains("12 34"), "resize not passed on:\n{seen}");

    master.write_all(b"exit 5\n").unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "output:\n{seen}");
    drop(slave);
    assert_no_leftovers("tty");
}
