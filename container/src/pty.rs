//! `-t`: a pseudo-terminal for the workload. isol keeps the master, the container gets the slave as
//! its controlling terminal and stdio; isol relays bytes between its own terminal (put in raw mode,
//! so ^C travels as a byte and the container's line discipline turns it into SIGINT) and the master,
//! and passes window size changes on.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::{Winsize, openpty};
use nix::sys::signalfd::SignalFd;
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use crate::error::{ContainerError, SetupError};
use crate::signals::{drain_signals, poll_timeout};
use crate::sys;

nix::ioctl_read_bad!(get_winsize, libc::TIOCGWINSZ, Winsize);
nix::ioctl_write_ptr_bad!(set_winsize, libc::TIOCSWINSZ, Winsize);

/// A pseudo-terminal pair.
#[derive(Debug)]
pub struct Pty {
    master: OwnedFd,
    slave: RefCell<Option<OwnedFd>>,
    slave_path: PathBuf,
}

impl Pty {
    pub fn open() -> Result<Pty, ContainerError> {
        let size = host_winsize();
        let p = openpty(size.as_ref(), None::<&Termios>)
            .map_err(|e| ContainerError::sys("openpty", e))?;
        for fd in [p.master.as_raw_fd(), p.slave.as_raw_fd()] {
            sys::set_cloexec(fd);
        }
        let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", p.slave.as_raw_fd()))
            .map_err(|e| ContainerError::Setup(format!("Cannot name the pty: {e}")))?;
        Ok(Pty {
            master: p.master,
            slave: RefCell::new(Some(p.slave)),
            slave_path,
        })
    }

    /// The master, the slave closed: what a created container's client keeps (an OCI console
    /// socket's receiver).
    pub fn into_master(self) -> OwnedFd {
        self.master
    }

    pub fn slave_path(&self) -> PathBuf {
        self.slave_path.clone()
    }

    /// In the child, after setsid: the slave becomes the controlling terminal and stdio.
    pub(crate) fn make_controlling_and_stdio(&self) -> Result<(), SetupError> {
        let slave = self.slave.borrow();
        let slave = slave.as_ref().ok_or(SetupError::PtyClosed)?;
        // SAFETY: TIOCSCTTY takes an int argument; the fd is a valid terminal we own.
        if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
            return Err(SetupError::terminal(
                "Cannot make the pty the controlling terminal",
                io::Error::last_os_error(),
            ));
        }
        for target in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this (child) process.
            if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
                return Err(SetupError::terminal(
                    format!("Cannot attach the pty to fd {target}"),
                    io::Error::last_os_error(),
                ));
            }
        }
        Ok(())
    }

    /// In the parent, once the child has its copy: the master then sees EOF when the container
    /// closes its last slave fd.
    pub(crate) fn close_slave(&self) {
        self.slave.borrow_mut().take();
    }

    /// Relays between isol's stdin/stdout and the master until the child exits and the master has
    /// been drained. Restores the host terminal's mode however it ends.
    pub(crate) fn relay(
        &self,
        child: Pid,
        sfd: &SignalFd,
        deadline: Option<std::time::Instant>,
        stops: &std::cell::Cell<u32>,
    ) -> Result<WaitStatus, ContainerError> {
        let _raw = RawMode::enter();
        let stdin = io::stdin();
        let mut stdin_open = true;
        // Reading the reports may have taken the SIGCHLD of a child that is already gone.
        let (mut status, _) = drain_signals(child, sfd, stops)?;
        let mut buf = [0u8; 16 * 1024];
        loop {
            let mut fds = vec![
                PollFd::new(self.master.as_fd(), PollFlags::POLLIN),
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
            ];
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            let timeout = if status.is_some() {
                PollTimeout::from(100u16)
            } else {
                poll_timeout(child, deadline)
            };
            match poll(&mut fds, timeout) {
                Ok(0) if status.is_some() => break, // exited and drained
                Ok(0) => {}
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(ContainerError::sys("poll", e)),
            }
            let master_ev = fds[0].revents().unwrap_or(PollFlags::empty());
            let sig_ev = fds[1].revents().unwrap_or(PollFlags::empty());
            let stdin_ev = fds
                .get(2)
                .and_then(|f| f.revents())
                .unwrap_or(PollFlags::empty());
            if master_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                match nix::unistd::read(&self.master, &mut buf) {
                    Ok(0) | Err(Errno::EIO) => {
                        if status.is_some() {
                            break;
                        }
                    }
                    Ok(n) => {
                        let mut out = io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(e) => return Err(ContainerError::sys("read from the pty", e)),
                }
            }
            if stdin_ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
                match stdin.lock().read(&mut buf) {
                    Ok(0) | Err(_) => {
                        stdin_open = false;
                        // EOF on a non-terminal stdin: pass it on as ^D.
                        let _ = nix::unistd::write(&self.master, &[4u8]);
                    }
                    Ok(n) => {
                        let _ = write_all_fd(self.master.as_fd(), &buf[..n]);
                    }
                }
            }
            if sig_ev.contains(PollFlags::POLLIN) || status.is_none() {
                let (st, winch) = drain_signals(child, sfd, stops)?;
                if winch {
                    self.sync_winsize();
                }
                if st.is_some() {
                    status = st;
                }
            }
        }
        Ok(status.expect("loop ends only after the child exited"))
    }

    fn sync_winsize(&self) {
        if let Some(ws) = host_winsize() {
            // SAFETY: TIOCSWINSZ reads a Winsize from the valid pointer; the fd is our master.
            let _ = unsafe { set_winsize(self.master.as_raw_fd(), &ws) };
        }
    }
}

fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) -> nix::Result<()> {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The window size of isol's own terminal, if stdin is one.
fn host_winsize() -> Option<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a Winsize into the valid, exclusively borrowed struct.
    match unsafe { get_winsize(libc::STDIN_FILENO, &mut ws) } {
        Ok(_) if ws.ws_row > 0 => Some(ws),
        _ => None,
    }
}

/// Puts isol's terminal in raw mode for as long as it lives.
struct RawMode(Option<Termios>);

impl RawMode {
    fn enter() -> RawMode {
        let stdin = io::stdin();
        let Ok(orig) = termios::tcgetattr(stdin.as_fd()) else {
            return RawMode(None);
        };
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        RawMode(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, orig);
        }
    }
}
