//! Bounded waits on the processes the bench starts. Every wait has a deadline; a process that
//! is not done by then is stopped ([`stop`]: SIGTERM to its process group, then SIGKILL) and,
//! if even SIGKILL does not end it (a vCPU thread stuck inside the kernel's KVM, as in the lab's
//! known fault), it is left to a reaper thread and the bench goes on with the reason.

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// How long a process gets to end after SIGTERM, and to be reaped after SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
const KILL_GRACE: Duration = Duration::from_secs(10);
/// After the process exited, how long its pipes may stay open (held by a descendant).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// A pidfd of `child`: readable once it exited. `None` where pidfd_open is missing.
fn pidfd(child: &Child) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a new fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits up to `timeout` for `fds` to become readable; returns which ones are.
fn poll(fds: &[&OwnedFd], timeout: Duration) -> Vec<bool> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|f| libc::pollfd {
            fd: f.as_fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `p` is a valid array of `p.len()` pollfds for the duration of the call.
    let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if n <= 0 {
        return vec![false; fds.len()];
    }
    p.iter().map(|x| x.revents != 0).collect()
}

/// Waits for `child` until `deadline`; `None` if it is still running then.
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    let pidfd = pidfd(child);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match &pidfd {
            Some(fd) => {
                poll(&[fd], left);
            }
            None => std::thread::sleep(left.min(Duration::from_millis(10))),
        }
    }
}

/// Reads every pipe in `pipes` to its end and waits for `child`, until `deadline`. Returns
/// the exit status (`None`: still running at the deadline) and what each pipe gave. Pipes a
/// descendant keeps open after the child exited are read for [`DRAIN_GRACE`] more, no longer.
pub fn wait_reading<P: Read + AsFd>(
    child: &mut Child,
    pipes: Vec<P>,
    deadline: Instant,
) -> (Option<ExitStatus>, Vec<Vec<u8>>) {
    let mut out = vec![Vec::new(); pipes.len()];
    let mut open: Vec<(usize, P, OwnedFd)> = pipes
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let fd = p.as_fd().try_clone_to_owned().ok()?;
            Some((i, p, fd))
        })
        .collect();
    let pidfd = pidfd(child);
    let mut status = None;
    let mut end = deadline;
    loop {
        if status.is_none()
            && let Ok(Some(st)) = child.try_wait()
        {
            status = Some(st);
            end = end.min(Instant::now() + DRAIN_GRACE);
        }
        if status.is_some() && open.is_empty() {
            break;
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds: Vec<&OwnedFd> = open.iter().map(|(_, _, fd)| fd).collect();
        let pid_slot = match (&pidfd, status) {
            (Some(fd), None) => {
                fds.push(fd);
                true
            }
            _ => false,
        };
        // Without a pidfd, look at the child every 10 ms.
        let step = if pidfd.is_none() && status.is_none() {
            left.min(Duration::from_millis(10))
        } else {
            left
        };
        let ready = poll(&fds, step);
        let n_pipes = fds.len() - usize::from(pid_slot);
        let mut closed = Vec::new();
        for (k, r) in ready.iter().take(n_pipes).enumerate() {
            if !*r {
                continue;
            }
            let (i, pipe, _) = &mut open[k];
            let mut buf = [0u8; 8192];
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => closed.push(k),
                Ok(n) => out[*i].extend_from_slice(&buf[..n]),
            }
        }
        for k in closed.into_iter().rev() {
            open.remove(k);
        }
    }
    (status, out)
}

/// The state and kernel wait channel of `pid`'s threads, for an error message.
pub fn describe(pid: u32) -> String {
    let mut states = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // "tid (comm) S …": the state follows the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("?", |x| x.1);
        let state = tail.split_whitespace().next().unwrap_or("?");
        let wchan = std::fs::read_to_string(t.path().join("wchan")).unwrap_or_default();
        let wchan = if wchan.is_empty() || wchan == "0" {
            String::new()
        } else {
            format!(" in {wchan}")
        };
        states.push(format!("{comm} {state}{wchan}"));
    }
    if states.is_empty() {
        "gone".into()
    } else {
        states.join(", ")
    }
}

/// Stops `child`, the leader of its own process group, which outlived its deadline: SIGTERM
/// to the group (isol forwards it to the workload and cleans up), [`TERM_GRACE`] to end, then
/// SIGKILL to the group and [`KILL_GRACE`] to be reaped. Returns what happened, for the report.
/// A process that not even SIGKILL ends is handed to a reaper thread: the bench does not wait.
pub fn stop(child: Child) -> String {
    stop_with(child, true)
}

/// [`stop`] for a child that shares the bench's process group: the signals go to it alone.
pub fn stop_one(child: Child) -> String {
    stop_with(child, false)
}

fn stop_with(mut child: Child, group: bool) -> String {
    let pid = child.id();
    let target = Pid::from_raw(pid as i32);
    let send = |sig| {
        let _ = if group {
            killpg(target, sig)
        } else {
            kill(target, sig)
        };
    };
    send(Signal::SIGTERM);
    if wait_until(&mut child, Instant::now() + TERM_GRACE).is_some() {
        return "stopped with SIGTERM".into();
    }
    send(Signal::SIGKILL);
    if wait_until(&mut child, Instant::now() + KILL_GRACE).is_some() {
        return format!("killed (SIGKILL, {} s after SIGTERM)", TERM_GRACE.as_secs());
    }
    let state = describe(pid);
    let _ = std::thread::Builder::new()
        .name("bench-reaper".into())
        .spawn(move || {
            let _ = child.wait();
        });
    format!(
        "not even SIGKILL ended pid {pid} within {} s (threads: {state}); left behind, the bench goes on",
        KILL_GRACE.as_secs()
    )
}
