//! The VMM's event loop (event-manager over epoll): vCPU stop notifications, the
//! guest's reset line, SIGINT/SIGTERM, and host stdin forwarded to the UART. It runs
//! until the VM ends one way or another, or the timeout passes.

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use isol_devices::legacy::SerialDevice;
use isol_devices::virtio::BackendLost;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::seccomp::{Filters, ThreadKind};
use crate::trace::ExitCounts;
use crate::vstate::pause::Pauser;
use crate::vstate::vcpu::{Vcpu, VcpuCommand, VcpuError, VcpuEvent, VcpuHandle};

/// Errors running the event loop.
#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    /// epoll or an eventfd could not be created.
    #[error("Cannot set up the event loop: {0}; raise the open-file limit")]
    Setup(String),
    /// SIGINT/SIGTERM handlers could not be installed.
    #[error("Cannot install the SIGINT/SIGTERM handlers: {0}; check the process's signal setup")]
    Signals(std::io::Error),
    /// epoll_wait failed.
    #[error("The event loop failed: {0}; this is a VMM bug, please report it")]
    Wait(String),
    /// A vCPU thread did not start.
    #[error("{0}")]
    Vcpu(#[from] VcpuError),
    /// The event loop's seccomp filter could not be installed.
    #[error(transparent)]
    Seccomp(crate::seccomp::SeccompError),
}

/// How the VM ended, as the event loop saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEnd {
    /// The guest pulsed the i8042 reset line (Linux `reboot=k`).
    Reset,
    /// A vCPU stopped on its own (triple fault, error…).
    VcpuStopped(VcpuEvent),
    /// SIGINT/SIGTERM arrived.
    Signal(i32),
    /// The timeout passed.
    Timeout(Duration),
    /// A device's backend went away (a virtiofsd that exited): the reason, one line.
    BackendLost(String),
}

// ---- SIGINT / SIGTERM -------------------------------------------------------------

/// Eventfds of the VMs currently running in this process; the handler writes to each.
const SIGNAL_SLOTS: usize = 64;
static SIGNAL_FDS: [AtomicI32; SIGNAL_SLOTS] = [const { AtomicI32::new(-1) }; SIGNAL_SLOTS];
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// Handlers installed, with the dispositions they replaced, while any VM runs.
static SIGNAL_STATE: Mutex<Option<(usize, [libc::sigaction; 2])>> = Mutex::new(None);
const TERMINATING: [libc::c_int; 2] = [libc::SIGINT, libc::SIGTERM];

extern "C" fn on_terminate(sig: libc::c_int) {
    LAST_SIGNAL.store(sig, Ordering::SeqCst);
    let one: u64 = 1;
    for slot in &SIGNAL_FDS {
        let fd = slot.load(Ordering::SeqCst);
        if fd >= 0 {
            // SAFETY: write(2) is async-signal-safe; `one` outlives the call and the fd
            // stays open while it is in a slot (removed before the eventfd is closed).
            unsafe { libc::write(fd, std::ptr::addr_of!(one).cast(), 8) };
        }
    }
}

/// Routes SIGINT/SIGTERM to an eventfd for as long as it lives; restores the previous
/// handlers when the last one is dropped.
#[derive(Debug)]
pub struct SignalGuard {
    slot: usize,
}

impl SignalGuard {
    /// Starts routing the signals to `evt`.
    pub fn install(evt: &EventFd) -> Result<Self, EventLoopError> {
        let mut state = SIGNAL_STATE.lock().unwrap_or_else(|p| p.into_inner());
        let slot = SIGNAL_FDS
            .iter()
            .position(|s| {
                s.compare_exchange(-1, evt.as_raw_fd(), Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            })
            .ok_or_else(|| {
                EventLoopError::Signals(std::io::Error::other("too many VMs in one process"))
            })?;
        match state.as_mut() {
            Some((users, _)) => *users += 1,
            None => {
                // SAFETY: sigaction is plain data; zeroed is a valid "no flags" value.
                let mut old: [libc::sigaction; 2] = unsafe { std::mem::zeroed() };
                for (i, sig) in TERMINATING.iter().enumerate() {
                    // SAFETY: as above.
                    let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
                    act.sa_sigaction = on_terminate as *const () as usize;
                    act.sa_flags = libc::SA_RESTART;
                    // SAFETY: valid signal number and pointers to live sigaction structs.
                    if unsafe { libc::sigaction(*sig, &act, &mut old[i]) } != 0 {
                        SIGNAL_FDS[slot].store(-1, Ordering::SeqCst);
                        return Err(EventLoopError::Signals(std::io::Error::last_os_error()));
                    }
                }
                *state = Some((1, old));
            }
        }
        Ok(Self { slot })
    }

    /// The signal that arrived last.
    pub fn last_signal() -> i32 {
        LAST_SIGNAL.load(Ordering::SeqCst)
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        SIGNAL_FDS[self.slot].store(-1, Ordering::SeqCst);
        let mut state = SIGNAL_STATE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((users, old)) = state.as_mut() {
            *users -= 1;
            if *users == 0 {
                for (i, sig) in TERMINATING.iter().enumerate() {
                    // SAFETY: restoring the disposition saved at install time.
                    unsafe { libc::sigaction(*sig, &old[i], std::ptr::null_mut()) };
                }
                *state = None;
            }
        }
    }
}

// ---- Subscribers ------------------------------------------------------------------

/// Watches the reset line, vCPU stops and termination signals; records how the VM ended.
#[derive(Debug)]
pub struct Controller {
    reset_evt: EventFd,
    vcpu_evt: EventFd,
    signal_evt: EventFd,
    vcpu_events: Receiver<VcpuEvent>,
    lost: Option<BackendLost>,
    end: Option<VmEnd>,
    /// A pause or resume was asked for (`vstate::pause`): its eventfd, and whether it was
    /// written since the loop last looked.
    pause_evt: Option<EventFd>,
    pause_asked: bool,
}

impl Controller {
    fn new(
        reset_evt: EventFd,
        vcpu_evt: EventFd,
        signal_evt: EventFd,
        rx: Receiver<VcpuEvent>,
        lost: Option<BackendLost>,
    ) -> Self {
        Self {
            reset_evt,
            vcpu_evt,
            signal_evt,
            vcpu_events: rx,
            lost,
            end: None,
            pause_evt: None,
            pause_asked: false,
        }
    }

    /// Whether a pause or resume was asked for since the last call.
    fn take_pause_request(&mut self) -> bool {
        std::mem::take(&mut self.pause_asked)
    }

    /// How the VM ended, once it has.
    pub fn end(&self) -> Option<&VmEnd> {
        self.end.as_ref()
    }

    fn finish(&mut self, end: VmEnd) {
        self.end.get_or_insert(end);
    }

    /// Whether the reset line was pulsed but not yet seen by `process` (the event may be
    /// in the same epoll batch as a vCPU stop that it caused).
    pub fn take_pending_reset(&mut self) -> bool {
        self.reset_evt.read().is_ok()
    }
}

impl MutEventSubscriber for Controller {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.reset_evt.as_raw_fd() {
            if self.reset_evt.read().is_ok() {
                self.finish(VmEnd::Reset);
            }
        } else if fd == self.vcpu_evt.as_raw_fd() {
            let _ = self.vcpu_evt.read();
            if let Some(ev) = self.vcpu_events.try_iter().next() {
                self.finish(VmEnd::VcpuStopped(ev));
            }
        } else if fd == self.signal_evt.as_raw_fd() && self.signal_evt.read().is_ok() {
            self.finish(VmEnd::Signal(SignalGuard::last_signal()));
        } else if let Some(p) = &self.pause_evt
            && fd == p.as_raw_fd()
        {
            if p.read().is_ok() {
                self.pause_asked = true;
            }
        } else if let Some(lost) = &self.lost
            && fd == lost.eventfd().as_raw_fd()
            && lost.eventfd().read().is_ok()
        {
            let reason = lost.reason().unwrap_or_default();
            self.finish(VmEnd::BackendLost(reason));
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let lost = self.lost.as_ref().map(BackendLost::eventfd);
        for fd in [&self.reset_evt, &self.vcpu_evt, &self.signal_evt]
            .into_iter()
            .chain(lost)
            .chain(self.pause_evt.as_ref())
        {
            // Registering a fresh eventfd on a fresh epoll cannot fail short of ENOMEM;
            // the loop would then only end by timeout, which the caller always sets or
            // the guest ends by a vCPU stop, so carry on.
            let _ = ops.add(Events::new(fd, EventSet::IN));
        }
    }
}

/// Copies host stdin into the UART.
#[derive(Debug)]
pub struct StdinForwarder {
    fd: RawFd,
    serial: Arc<Mutex<SerialDevice>>,
}

impl MutEventSubscriber for StdinForwarder {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 1024];
        // SAFETY: reading into a live buffer of the given length.
        let n = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            let mut serial = self.serial.lock().unwrap_or_else(|p| p.into_inner());
            // Only fails if the interrupt eventfd overflows; the bytes stay queued.
            let _ = serial.queue_input(&buf[..n as usize]);
        } else if n == 0
            || events.event_set().contains(EventSet::HANG_UP)
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::EAGAIN)
        {
            // EOF or a dead stdin: stop watching it.
            let _ = ops.remove(Events::new_raw(self.fd, EventSet::IN));
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        // epoll refuses regular files and /dev/null (EPERM): then there is nothing to
        // forward, which is what those stdins mean anyway.
        let _ = ops.add(Events::new_raw(self.fd, EventSet::IN));
    }
}

/// What the loop hands back.
#[derive(Debug)]
pub struct LoopResult {
    /// How the VM ended.
    pub end: VmEnd,
    /// Whether the reset line was pulsed at any point (even if something else ended the
    /// loop first).
    pub reset_seen: bool,
    /// Exit counts merged over all vCPUs.
    pub counts: ExitCounts,
}

fn setup_err<E: std::fmt::Display>(e: E) -> EventLoopError {
    EventLoopError::Setup(e.to_string())
}

/// Starts the vCPUs and runs the loop until the VM ends; stops and joins every vCPU
/// thread before returning, whatever happened. With `filters`, each vCPU thread installs
/// its seccomp filter and waits; this thread installs its own too when `filter_main` (once
/// every thread is started: a thread inherits its creator's filter), and then lets the
/// vCPUs enter the guest. `lost`, raised by a device whose backend died, ends the VM.
/// `pauser` (the exec channel's, `vstate::pause`): a pause or resume asked for there is
/// passed on to every vCPU.
#[allow(clippy::too_many_arguments)]
pub fn run_vm(
    vcpus: Vec<Vcpu>,
    reset_evt: &EventFd,
    lost: Option<&BackendLost>,
    serial: Arc<Mutex<SerialDevice>>,
    forward_stdin: bool,
    timeout: Option<Duration>,
    filters: Option<&Filters>,
    filter_main: bool,
    pauser: Option<&Pauser>,
) -> Result<LoopResult, EventLoopError> {
    let vcpu_evt = EventFd::new(EFD_NONBLOCK).map_err(setup_err)?;
    let signal_evt = EventFd::new(EFD_NONBLOCK).map_err(setup_err)?;
    let _signals = SignalGuard::install(&signal_evt)?;
    let (tx, rx) = mpsc::channel();
    let mut controller = Controller::new(
        reset_evt.try_clone().map_err(setup_err)?,
        vcpu_evt.try_clone().map_err(setup_err)?,
        signal_evt.try_clone().map_err(setup_err)?,
        rx,
        lost.cloned(),
    );
    if let Some(p) = pauser {
        controller.pause_evt = Some(p.request_evt().try_clone().map_err(setup_err)?);
    }
    let controller = Arc::new(Mutex::new(controller));
    let mut em =
        EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().map_err(setup_err)?;
    em.add_subscriber(controller.clone());
    if forward_stdin {
        em.add_subscriber(Arc::new(Mutex::new(StdinForwarder {
            fd: libc::STDIN_FILENO,
            serial,
        })));
    }

    let mut handles: Vec<VcpuHandle> = Vec::with_capacity(vcpus.len());
    let mut start_error = None;
    for v in vcpus {
        let wake = match vcpu_evt.try_clone() {
            Ok(w) => w,
            Err(e) => {
                start_error = Some(setup_err(e));
                break;
            }
        };
        match v.start(tx.clone(), wake, filters.cloned()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                start_error = Some(e.into());
                break;
            }
        }
    }

    if start_error.is_none()
        && let Some(f) = filters
    {
        if filter_main && let Err(e) = f.apply(ThreadKind::Main) {
            start_error = Some(EventLoopError::Seccomp(e));
        } else {
            for h in &handles {
                h.release();
            }
        }
    }

    if start_error.is_none()
        && let Some(p) = pauser
    {
        p.started(handles.len());
    }
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut result = match start_error {
        Some(e) => Err(e),
        None => loop {
            if let Some(end) = controller
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .end()
                .cloned()
            {
                break Ok(end);
            }
            let wait_ms = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break Ok(VmEnd::Timeout(timeout.unwrap_or_default()));
                    }
                    left.as_millis().clamp(1, i32::MAX as u128) as i32
                }
                None => -1,
            };
            if let Err(e) = em.run_with_timeout(wait_ms) {
                break Err(EventLoopError::Wait(format!("{e:?}")));
            }
            let asked = controller
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take_pause_request();
            if let Some(p) = pauser.filter(|_| asked) {
                let cmd = if p.wanted() {
                    VcpuCommand::Pause
                } else {
                    VcpuCommand::Resume
                };
                for h in &handles {
                    h.send(cmd);
                }
            }
        },
    };
    if let Some(p) = pauser {
        // Before the vCPUs are told to exit: a request waiting for them fails now.
        p.end();
    }

    let mut counts = ExitCounts::default();
    for h in handles {
        counts.merge(&h.stop_and_join());
    }
    let reset_seen = {
        let mut c = controller.lock().unwrap_or_else(|p| p.into_inner());
        matches!(c.end(), Some(VmEnd::Reset)) || c.take_pending_reset()
    };
    if let Ok(VmEnd::VcpuStopped(_)) = &result {
        // A stop that a reset caused (the kernel tried the next reboot method) is a reset.
        if reset_seen {
            result = Ok(VmEnd::Reset);
        }
    }
    result.map(|end| LoopResult {
        end,
        reset_seen,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_records_the_first_end() {
        let (tx, rx) = mpsc::channel();
        let mk = || EventFd::new(EFD_NONBLOCK).unwrap();
        let (reset, vcpu, sig) = (mk(), mk(), mk());
        let mut c = Controller::new(
            reset.try_clone().unwrap(),
            vcpu.try_clone().unwrap(),
            sig.try_clone().unwrap(),
            rx,
            None,
        );
        let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
        c.end = None;
        let c = Arc::new(Mutex::new(c));
        em.add_subscriber(c.clone());
        assert_eq!(em.run_with_timeout(0).unwrap(), 0);
        reset.write(1).unwrap();
        em.run_with_timeout(100).unwrap();
        assert_eq!(c.lock().unwrap().end(), Some(&VmEnd::Reset));
        tx.send(VcpuEvent {
            index: 0,
            stop: crate::vstate::vcpu::VcpuStop::Shutdown,
            regs: None,
        })
        .unwrap();
        vcpu.write(1).unwrap();
        em.run_with_timeout(100).unwrap();
        assert_eq!(
            c.lock().unwrap().end(),
            Some(&VmEnd::Reset),
            "first end wins"
        );
    }

    #[test]
    fn signal_guard_routes_and_restores() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        {
            let _g = SignalGuard::install(&evt).unwrap();
            // SAFETY: raising a signal whose handler we just installed.
            unsafe { libc::raise(libc::SIGTERM) };
            assert_eq!(evt.read().unwrap(), 1);
            assert_eq!(SignalGuard::last_signal(), libc::SIGTERM);
        }
        // SAFETY: reading the current disposition only.
        let mut cur: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: valid pointers.
        unsafe { libc::sigaction(libc::SIGTERM, std::ptr::null(), &mut cur) };
        assert_eq!(cur.sa_sigaction, libc::SIG_DFL, "default restored");
    }
}
