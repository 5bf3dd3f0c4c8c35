//! The parent's signal handling while a container runs: the signals isol receives are taken
//! through a signalfd and forwarded to the container's init; a stopped init is continued at
//! once, a second SIGINT or SIGTERM kills the container, and the run's deadline is kept.

use std::cell::Cell;
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::error::ContainerError;

/// Signals the parent forwards to the container's init.
const FORWARDED: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// Blocks the forwarded signals, SIGCHLD and SIGWINCH, and returns the mask (to unblock once
/// the run is over) with a signalfd that takes them. The child inherits the blocked mask.
pub(crate) fn take() -> Result<(SigSet, SignalFd), ContainerError> {
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(*s);
    }
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGWINCH);
    unignore(FORWARDED);
    unignore(&[Signal::SIGCHLD, Signal::SIGWINCH]);
    mask.thread_block()
        .map_err(|e| ContainerError::sys("sigprocmask", e))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| ContainerError::sys("signalfd", e))?;
    Ok((mask, sfd))
}

/// Signals isol takes through its signalfd must not be ignored: an ignored signal is discarded
/// before it is queued, so a shell that starts isol in the background (SIGINT and SIGQUIT
/// ignored) would leave isol deaf to them. Blocked, their default action never runs.
fn unignore(signals: &[Signal]) {
    use nix::sys::signal::{SigHandler, signal};
    for &sig in signals {
        // SAFETY: setting SIG_DFL installs no handler; the signal is blocked right after.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
}

/// How long poll may sleep before the deadline; kills the container once it has passed.
pub(crate) fn poll_timeout(
    child: Pid,
    deadline: Option<std::time::Instant>,
) -> nix::poll::PollTimeout {
    let Some(d) = deadline else {
        return nix::poll::PollTimeout::NONE;
    };
    let left = d.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        // Killing the PID namespace's init ends the whole container.
        let _ = kill(child, Signal::SIGKILL);
        return nix::poll::PollTimeout::from(100u16);
    }
    nix::poll::PollTimeout::try_from(left.as_millis().min(60_000) as u32 + 1)
        .unwrap_or(nix::poll::PollTimeout::MAX)
}

/// Waits for the child, forwarding the signals isol receives to the container's init.
pub(crate) fn wait_forwarding(
    child: Pid,
    sfd: &SignalFd,
    deadline: Option<std::time::Instant>,
    stops: &Cell<u32>,
) -> Result<WaitStatus, ContainerError> {
    // The child is checked before the first wait: reading the reports may have taken the
    // SIGCHLD of a child that is already gone.
    loop {
        if let (Some(st), _) = drain_signals(child, sfd, stops)? {
            return Ok(st);
        }
        let mut fds = [nix::poll::PollFd::new(
            sfd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, poll_timeout(child, deadline)) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(ContainerError::sys("poll", e)),
        }
    }
}

/// Handles pending signals: forwards what must be forwarded. Returns the child's status once it
/// has exited, and whether isol's terminal changed size (SIGWINCH).
pub(crate) fn drain_signals(
    child: Pid,
    sfd: &SignalFd,
    stops: &Cell<u32>,
) -> Result<(Option<WaitStatus>, bool), ContainerError> {
    let winch = forward_signals(child, sfd, stops);
    let status = match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
        Ok(st @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => Some(st),
        Ok(_) | Err(Errno::EINTR) => None,
        Err(e) => return Err(ContainerError::sys("waitpid", e)),
    };
    Ok((status, winch))
}

/// Forwards the signals isol received to the container's init; returns whether SIGWINCH was
/// among them.
///
/// isol must end whatever the container does. Its init is never left stopped: a workload that
/// ptrace-attaches it and exits leaves it in a group stop (SIGSTOP from inside the container
/// cannot reach it otherwise), so a stop is answered with SIGCONT at once, whatever isol is
/// waiting for. And the second SIGINT or SIGTERM that isol receives kills the container, whether
/// or not the workload honoured the first (`stops` counts them over the whole run).
pub(crate) fn forward_signals(child: Pid, sfd: &SignalFd, stops: &Cell<u32>) -> bool {
    let mut winch = false;
    while let Ok(Some(info)) = sfd.read_signal() {
        let signo = info.ssi_signo as i32;
        if signo == libc::SIGWINCH {
            winch = true;
        } else if signo != libc::SIGCHLD
            && let Ok(sig) = Signal::try_from(signo)
        {
            if matches!(sig, Signal::SIGINT | Signal::SIGTERM) {
                stops.set(stops.get() + 1);
            }
            // The second one is not asked again: killing the PID namespace's init ends it.
            let sig = if stops.get() >= 2 {
                Signal::SIGKILL
            } else {
                sig
            };
            let _ = kill(child, sig);
        }
    }
    // Only a stop is reported here (WSTOPPED without WEXITED): an exited child stays unreaped.
    let stopped = nix::sys::wait::waitid(
        nix::sys::wait::Id::Pid(child),
        WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG,
    );
    if matches!(stopped, Ok(WaitStatus::Stopped(..))) {
        let _ = kill(child, Signal::SIGCONT);
    }
    winch
}
