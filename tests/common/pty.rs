//! Running isol on a real pseudo-terminal, as a terminal emulator runs a shell.

use std::io::Read;
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
    let pty = openpty(Some(&winsize(rows, cols)), None).unwrap();
    let mut cmd = super::isol(args);
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

impl OnPty {
    /// Reads until `needle` has appeared, or panics with what came. The deadline only bounds a
    /// hang; nothing is timed.
    pub fn read_until(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut buf = [0u8; 4096];
        while !self.seen.contains(needle) {
            assert!(
                Instant::now() < deadline,
                "never saw {needle:?}; got:\n{}",
                self.seen
            );
            match self.master.read(&mut buf) {
                Ok(0) => panic!("EOF before {needle:?}; got:\n{}", self.seen),
                Ok(n) => self.seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    panic!("pty closed before {needle:?}; got:\n{}", self.seen)
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Resizes the terminal, as a user dragging the window does (the kernel sends SIGWINCH).
    pub fn resize(&self, rows: u16, cols: u16) {
        // SAFETY: TIOCSWINSZ reads a Winsize from a valid pointer; the fd is our pty master.
        unsafe { tiocswinsz(self.master.as_raw_fd(), &winsize(rows, cols)) }.unwrap();
    }
}
