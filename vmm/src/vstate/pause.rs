//! Pausing a running VM's vCPUs from outside (docs/vmm.md, "Pause and resume").
//!
//! Three sides share one [`Pauser`]: the exec channel's thread (`isol-control`), which asks
//! for a state on behalf of a client and waits until the vCPUs reach it; the event loop,
//! which owns the vCPU handles and, woken by [`Pauser::request_evt`], sends each vCPU
//! `Pause` or `Resume` (a kick gets a vCPU out of `KVM_RUN`); and each vCPU thread, which
//! says when it parked (outside `KVM_RUN`, blocked on its command channel) and when it runs
//! again. Nothing here blocks the event loop or a vCPU.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

/// Why a pause or resume did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PauseError {
    /// The VM ended (or is ending): there is nothing to pause.
    #[error("The VM is ending (its workload exited or it was stopped)")]
    Ended,
    /// The vCPUs did not all reach the state in time.
    #[error(
        "{parked} of {vcpus} vCPUs were parked after {timeout:?}, not the {wanted} asked for; the host may be overloaded: try again"
    )]
    Timeout {
        /// How long the request waited.
        timeout: Duration,
        /// vCPUs parked when it gave up.
        parked: usize,
        /// vCPUs the VM has.
        vcpus: usize,
        /// How many were wanted parked (all of them, or none).
        wanted: usize,
    },
}

#[derive(Debug, Default)]
struct State {
    /// Whether the vCPUs should be parked.
    wanted: bool,
    /// vCPUs running guest code (set once they start).
    vcpus: usize,
    /// vCPUs parked by a pause.
    parked: usize,
    /// The VM ended: no request is served any more.
    ended: bool,
}

/// The pause state of one VM, shared by the control thread, the event loop and the vCPUs.
#[derive(Debug)]
pub struct Pauser {
    request: EventFd,
    state: Mutex<State>,
    changed: Condvar,
}

impl Pauser {
    /// A pauser for a VM whose vCPUs have not started yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(Pauser {
            request: EventFd::new(EFD_NONBLOCK)?,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Written when the wanted state changes: the event loop watches it.
    pub fn request_evt(&self) -> &EventFd {
        &self.request
    }

    /// The event loop: whether the vCPUs should be parked now.
    pub fn wanted(&self) -> bool {
        self.lock().wanted
    }

    /// The event loop: the VM's `n` vCPUs run.
    pub fn started(&self, n: usize) {
        self.lock().vcpus = n;
        self.changed.notify_all();
    }

    /// The event loop: the VM ended; waiting requests fail, new ones too.
    pub fn end(&self) {
        self.lock().ended = true;
        self.changed.notify_all();
    }

    /// A vCPU thread: it parked for a pause (`true`) or runs again (`false`).
    pub fn parked(&self, parked: bool) {
        let mut s = self.lock();
        if parked {
            s.parked += 1;
        } else {
            s.parked = s.parked.saturating_sub(1);
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Whether the vCPUs are parked now.
    pub fn is_paused(&self) -> bool {
        let s = self.lock();
        s.vcpus > 0 && s.parked == s.vcpus
    }

    /// The control thread: asks for every vCPU parked (`pause`) or running, and waits up to
    /// `timeout` until they are. Asking for the state the VM is in already succeeds at once.
    pub fn set(&self, pause: bool, timeout: Duration) -> Result<(), PauseError> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        if s.ended || s.vcpus == 0 {
            return Err(PauseError::Ended);
        }
        if s.wanted != pause {
            s.wanted = pause;
            // The counter only overflows after 2^64 - 2 writes without a read.
            let _ = self.request.write(1);
        }
        let target = if pause { s.vcpus } else { 0 };
        loop {
            if s.ended {
                return Err(PauseError::Ended);
            }
            if s.parked == target {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(PauseError::Timeout {
                    timeout,
                    parked: s.parked,
                    vcpus: s.vcpus,
                    wanted: target,
                });
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// For tests: the event loop and `vcpus` vCPUs on a thread, parking and running them (one
/// after the other, a moment apart) as the next `requests` requests ask.
#[cfg(test)]
pub(crate) fn follow(
    p: std::sync::Arc<Pauser>,
    vcpus: usize,
    requests: usize,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut parked = false;
        for _ in 0..requests {
            while p.request_evt().read().is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
            let want = p.wanted();
            if want != parked {
                for _ in 0..vcpus {
                    p.parked(want);
                    std::thread::sleep(Duration::from_millis(10));
                }
                parked = want;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Two "vCPU" threads that park when the event loop's side says so, as the real ones do.
    #[test]
    fn a_request_waits_for_every_vcpu_and_fails_once_the_vm_ended() {
        let p = Arc::new(Pauser::new().unwrap());
        assert_eq!(
            p.set(true, Duration::from_millis(10)),
            Err(PauseError::Ended),
            "no vCPU runs yet"
        );
        p.started(2);
        let looper = follow(p.clone(), 2, 2);
        p.set(true, Duration::from_secs(10)).unwrap();
        assert!(p.is_paused());
        // Already paused: at once, no request.
        p.set(true, Duration::from_millis(1)).unwrap();
        p.set(false, Duration::from_secs(10)).unwrap();
        assert!(!p.is_paused());
        looper.join().unwrap();
        // Nobody parks them now: the request gives up, saying how far it got.
        let e = p.set(true, Duration::from_millis(30)).unwrap_err();
        assert!(
            matches!(
                e,
                PauseError::Timeout {
                    parked: 0,
                    vcpus: 2,
                    wanted: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!e.to_string().contains('\n'));
        p.end();
        assert_eq!(p.set(false, Duration::from_secs(1)), Err(PauseError::Ended));
    }
}
