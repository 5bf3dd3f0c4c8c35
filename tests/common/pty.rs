//! Running isol on a real pseudo-terminal, as a terminal emulator runs a shell.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::pty::{Winsize, openpty};

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, Winsize);

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// isol on a pty of `rows`×`cols` that is its controlling terminal.
pub struct OnPty {
    pub child: Child,
    pub master: std::fs::File,
    /// Kept open until the test ends, so the master never sees a hangup early.
    pub slave: OwnedFd,
    pub seen: String,
}

/// setsid and TIOCSCTTY on stdin: the pty becomes isol's controlling terminal.
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

/// Starts `isol ARGS…` (with the test store) on a new pty.
pub fn spawn(args: &[&str], rows: u16, cols: u16) -> OnPty {
    spawn_command(super::isol(args), rows, cols)
}

/// Starts `cmd` on a new pty of `rows`×`cols`, its controlling terminal.
pub fn spawn_command(mut cmd: std::process::Command, rows: u16, cols: u16) -> OnPty {
    let pty = openpty(Some(&winsize(rows, cols)), None).unwrap();
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    // SAFETY: the closure runs in the forked child before exec and only makes the two
    // async-signal-safe calls of become_terminal_session.
    unsafe { cmd.pre_exec(become_terminal_session) };
    OnPty {
        child: cmd.spawn().unwrap(),
        master: std::fs::File::from(pty.master),
        slave: pty.slave,
        seen: String::new(),
    }
}

/// Reads a pty's `master` into `seen` until `needle` has appeared there, or panics with what
/// came. The deadline only bounds a hang; nothing is timed.
pub fn read_until(master: &mut std::fs::File, seen: &mut String, needle: &str) {
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

/// Reads a pty's `master` into `seen` until its last slave is closed (EIO).
pub fn read_to_end(master: &mut std::fs::File, seen: &mut String) {
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = master.read(&mut buf) {
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Resizes the terminal whose master is `master`, as a user dragging the window does (the
/// kernel sends SIGWINCH to the slave's foreground process group).
pub fn resize(master: &impl AsRawFd, rows: u16, cols: u16) {
    // SAFETY: TIOCSWINSZ reads a Winsize from a valid pointer; the fd is a pty master.
    unsafe { tiocswinsz(master.as_raw_fd(), &winsize(rows, cols)) }.unwrap();
}

impl OnPty {
    /// Reads until `needle` has appeared, or panics with what came.
    pub fn read_until(&mut self, needle: &str) {
        read_until(&mut self.master, &mut self.seen, needle);
    }

    /// Waits for the child to end (the deadline only bounds a hang); its exit status and
    /// everything it wrote on the pty (which holds it until read: keep the output smaller
    /// than the pty's buffer).
    pub fn finish(self) -> (Option<i32>, String) {
        let OnPty {
            mut child,
            mut master,
            slave,
            seen,
        } = self;
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "it never ended; got:\n{seen}");
            std::thread::sleep(Duration::from_millis(20));
        };
        // With the last slave closed, the master reads to EIO.
        drop(slave);
        let mut out = seen;
        read_to_end(&mut master, &mut out);
        (status.code(), out)
    }

    /// Resizes the terminal, as a user dragging the window does (the kernel sends SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        resize(&self.master, rows, cols);
    }
}

/// The interactive scenario of `-i -t`, the same on each backend (`container`: tests/tty.rs;
/// `kvm`: tests/kvm_tty.rs, in the lab): `isol run --backend BACKEND -i -t busybox sh` on a
/// real 40×100 pty. The window size and a terminal on stdin reach the shell, ^C stops a
/// foreground `sleep` and the shell survives, a resize of isol's terminal reaches the
/// workload's (12 34), and `exit 5` comes back as isol's exit code.
pub fn interactive_shell_gets_size_ctrl_c_and_exit_code(backend: &str) {
    let _g = super::root_test();
    let mut t = spawn(
        &["run", "--backend", backend, "-i", "-t", "busybox", "sh"],
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
    // The guest init gives the VM's workload a pty of its own; the container's terminal is
    // bound at /dev/console (it comes from the host's devpts).
    let terminals: &[&str] = match backend {
        "kvm" => &["/dev/pts/"],
        _ => &["/dev/console", "/dev/pts/"],
    };
    assert!(
        terminals.iter().any(|name| t.seen.contains(name)),
        "stdin is not a terminal:\n{}",
        t.seen
    );

    // ^C travels as a byte (isol's terminal is raw); the workload's line discipline turns it
    // into SIGINT for the foreground job, and the shell survives.
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

    // A resize of isol's terminal reaches the workload's (for the VM: SIGWINCH → the
    // isol.tty port).
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
    if backend != "kvm" {
        super::assert_no_leftovers("tty");
    }
}
