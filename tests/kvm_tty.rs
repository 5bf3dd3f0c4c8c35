//! `-i -t` on the kvm backend: isol runs on a real pseudo-terminal, as under a user's terminal
//! emulator; the guest init gives the workload its own pty and relays it over the virtio
//! console, so the size, `tty`, ^C and the exit code must all go through.
//!
//! Needs a /dev/kvm that runs guests in hardware: run it in the lab (`isol lab -- <this test
//! binary> --test-threads=1`, with `ISOL_KERNEL` set); it skips elsewhere, unless
//! `ISOL_REQUIRE_KVM` is set.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use nix::pty::{Winsize, openpty};

nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

fn boot_env() -> Result<(), String> {
    let speed = isol_vmm::measure_guest_speed().map_err(|e| format!("no usable /dev/kvm: {e}"))?;
    if speed > isol_vmm::EMULATED_THRESHOLD {
        return Err(format!(
            "/dev/kvm emulates guests ({speed:?} for the probe loop); run in the lab"
        ));
    }
    if std::env::var_os("ISOL_KERNEL").is_none() {
        return Err("ISOL_KERNEL is not set (./test.sh sets it to the built guest kernel)".into());
    }
    Ok(())
}

/// Reads from the master until `needle` has appeared, or panics with what came. The
/// deadline only bounds a hang; nothing is timed.
fn read_until(master: &mut std::fs::File, seen: &mut String, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
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

#[test]
fn interactive_shell_in_the_vm_gets_size_ctrl_c_and_exit_code() {
    if let Err(why) = boot_env() {
        if std::env::var_os("ISOL_REQUIRE_KVM").is_some() {
            panic!("ISOL_REQUIRE_KVM is set but: {why}");
        }
        eprintln!("skipped: {why}");
        return;
    }
    require_root();
    let _g = serial();
    let pty = openpty(Some(&winsize(40, 100)), None).unwrap();
    let slave: OwnedFd = pty.slave;
    let mut cmd = isol(&["run", "--backend", "kvm", "-i", "-t", "busybox", "sh"]);
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave.try_clone().unwrap()));
    let make_controlling = || {
        // SAFETY: setsid has no memory effects.
        if unsafe { libc::setsid() } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: TIOCSCTTY takes an int argument; fd 0 is the pty slave.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and only makes the pty
    // isol's controlling terminal (setsid, TIOCSCTTY), as a terminal emulator does.
    unsafe { cmd.pre_exec(make_controlling) };
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
    assert!(
        seen.contains("/dev/pts/"),
        "stdin is not a terminal:\n{seen}"
    );

    // ^C travels as a byte (isol's terminal is raw); the guest pty's line discipline
    // turns it into SIGINT for the foreground job, and the shell survives.
    master
        .write_all(b"sleep 100; echo slept-$((3*3))\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    master.write_all(&[3]).unwrap();
    master.write_all(b"echo after-$((1+1))\n").unwrap();
    read_until(&mut master, &mut seen, "after-2");
    assert!(!seen.contains("slept-9"), "^C did not stop sleep:\n{seen}");

    // A resize of isol's terminal reaches the guest's pty (SIGWINCH → the isol.tty port).
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
}
