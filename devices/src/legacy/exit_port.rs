//! isol's exit port: how the guest init tells the VMM how far it got and how the
//! workload ended.
//!
//! Protocol (port I/O, 1-byte accesses; wider accesses use their first byte):
//!
//! | port  | direction | meaning                                                      |
//! |-------|-----------|--------------------------------------------------------------|
//! | 0x4f0 | write     | workload exit status, 0-255 (128+N for signal N); first wins |
//! | 0x4f1 | write     | boot phase reached, see [`Phase`]                            |
//! | 0x4f2 | write     | power off: status reported, disks synced; the VM ends now    |
//! | 0x4f0-0x4f3 | read | the signature `b"ISOL"`, so init can check it runs under isol |
//!
//! The same protocol also runs over a byte stream, for guest kernels without
//! `CONFIG_X86_IOPL_IOPERM` (no `ioperm`, so init cannot reach the ports): init writes
//! `(offset, value)` byte pairs to a second UART (ttyS1, 0x2f8) and
//! [`ExitChannelWriter`] replays them on the port as if they were `out`s.
//!
//! The power-off write ends the VM the way the i8042 reset line does (the same eventfd
//! and stop flag), without the guest kernel's reboot path, which costs hundreds of exits
//! (device shutdown, the I/O APIC's teardown). Init reboots right after it, so a VMM
//! that ignores the port still ends the VM.
//!
//! A guest that reboots without writing 0x4f0 crashed (kernel panic with `panic=-1`,
//! init died) and the VMM reports it as such.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// First port of the exit-port range.
pub const EXIT_PORT_BASE: u64 = 0x4f0;
/// Number of ports in the range.
pub const EXIT_PORT_LEN: u64 = 4;
/// Offset of the exit-status register.
pub const EXIT_STATUS_OFFSET: u64 = 0;
/// Offset of the phase register.
pub const PHASE_OFFSET: u64 = 1;
/// Offset of the power-off register.
pub const POWER_OFF_OFFSET: u64 = 2;
/// What reads of the range return, byte by byte.
pub const SIGNATURE: [u8; 4] = *b"ISOL";

/// Boot phases the guest init reports through [`PHASE_OFFSET`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// PID 1 started (first instruction of init's `main`).
    InitStart,
    /// Filesystems mounted, spec read, about to fork the workload.
    SpecLoaded,
    /// The workload's `execve` is about to run.
    WorkloadExec,
    /// The workload exited; init is about to report and reboot.
    WorkloadExit,
    /// The workload's `execve` succeeded: it runs (init learns it from a close-on-exec pipe
    /// whose end it reads). Never reported when the exec failed.
    WorkloadRunning,
    /// A value this VMM does not know.
    Unknown(u8),
}

impl Phase {
    /// The byte init writes.
    pub fn to_byte(self) -> u8 {
        match self {
            Phase::InitStart => 1,
            Phase::SpecLoaded => 2,
            Phase::WorkloadExec => 3,
            Phase::WorkloadExit => 4,
            Phase::WorkloadRunning => 5,
            Phase::Unknown(b) => b,
        }
    }

    /// Decodes the byte init wrote.
    pub fn from_byte(b: u8) -> Self {
        match b {
            1 => Phase::InitStart,
            2 => Phase::SpecLoaded,
            3 => Phase::WorkloadExec,
            4 => Phase::WorkloadExit,
            5 => Phase::WorkloadRunning,
            b => Phase::Unknown(b),
        }
    }
}

/// Called once, on the vCPU thread, when the guest reports its phase
/// ([`ExitPort::call_at`]).
pub struct PhaseHook(pub Phase, pub Box<dyn FnOnce() + Send>);

impl std::fmt::Debug for PhaseHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PhaseHook({:?}, ..)", self.0)
    }
}

/// State of the exit port.
#[derive(Debug, Default)]
pub struct ExitPort {
    exit_status: Option<u8>,
    extra_reports: u64,
    phases: Vec<(Phase, Instant)>,
    power_offs: u64,
    power_off: Option<(EventFd, Arc<AtomicBool>)>,
    phase_tx: Option<std::sync::mpsc::Sender<Phase>>,
    hooks: Vec<PhaseHook>,
}

impl ExitPort {
    /// A port with nothing reported yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The exit status the guest reported, if it did.
    pub fn exit_status(&self) -> Option<u8> {
        self.exit_status
    }

    /// Reports after the first, which are ignored.
    pub fn extra_reports(&self) -> u64 {
        self.extra_reports
    }

    /// Phases in the order they were reported, with when.
    pub fn phases(&self) -> &[(Phase, Instant)] {
        &self.phases
    }

    /// On a power-off write, raises `stop_flag` (so no vCPU runs guest code any more)
    /// and signals `evt`, as the i8042's reset line does.
    pub fn with_power_off(mut self, evt: EventFd, stop_flag: Arc<AtomicBool>) -> Self {
        self.power_off = Some((evt, stop_flag));
        self
    }

    /// Sends every phase the guest reports, as it reports it, to `tx` (until
    /// [`ExitPort::stop_notifying`]), for whoever acts on a phase off the vCPU thread.
    pub fn notify_phases(&mut self, tx: std::sync::mpsc::Sender<Phase>) {
        self.phase_tx = Some(tx);
    }

    /// Calls `hook` once, on the vCPU thread that serves the write, the first time the guest
    /// reports `phase` (`isol-runc start` waits for [`Phase::WorkloadRunning`] this way).
    pub fn call_at(&mut self, phase: Phase, hook: Box<dyn FnOnce() + Send>) {
        self.hooks.push(PhaseHook(phase, hook));
    }

    /// Drops the sender given to [`ExitPort::notify_phases`]: its receiver sees the end.
    pub fn stop_notifying(&mut self) {
        self.phase_tx = None;
    }

    /// How many times the guest wrote the power-off register.
    pub fn power_offs(&self) -> u64 {
        self.power_offs
    }
}

impl BusDevice for ExitPort {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .saturating_add(i);
            *b = SIGNATURE.get(at).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            EXIT_STATUS_OFFSET => {
                if self.exit_status.is_none() {
                    self.exit_status = Some(v);
                } else {
                    self.extra_reports += 1;
                }
            }
            PHASE_OFFSET => {
                let phase = Phase::from_byte(v);
                self.phases.push((phase, Instant::now()));
                if let Some(tx) = &self.phase_tx {
                    // A receiver that is gone wants no more.
                    let _ = tx.send(phase);
                }
                let (now, later) = std::mem::take(&mut self.hooks)
                    .into_iter()
                    .partition(|h| h.0 == phase);
                self.hooks = later;
                for PhaseHook(_, hook) in now {
                    hook();
                }
            }
            POWER_OFF_OFFSET => {
                self.power_offs += 1;
                if let Some((evt, stop)) = &self.power_off {
                    stop.store(true, Ordering::SeqCst);
                    // Cannot fail short of the counter overflowing.
                    let _ = evt.write(1);
                }
            }
            _ => {}
        }
    }
}

/// Turns a byte stream of `(offset, value)` pairs into exit-port writes. Used as the
/// output of the UART that carries the protocol when init cannot do port I/O.
#[derive(Debug)]
pub struct ExitChannelWriter {
    port: std::sync::Arc<std::sync::Mutex<ExitPort>>,
    offset: Option<u8>,
}

impl ExitChannelWriter {
    /// A writer feeding `port`.
    pub fn new(port: std::sync::Arc<std::sync::Mutex<ExitPort>>) -> Self {
        Self { port, offset: None }
    }
}

impl std::io::Write for ExitChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for &b in buf {
            match self.offset.take() {
                None => self.offset = Some(b),
                Some(off) => {
                    let mut p = self.port.lock().unwrap_or_else(|e| e.into_inner());
                    p.write(EXIT_PORT_BASE, u64::from(off), &[b]);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_exit_status_wins() {
        let mut p = ExitPort::new();
        assert_eq!(p.exit_status(), None);
        p.write(EXIT_PORT_BASE, 0, &[3]);
        p.write(EXIT_PORT_BASE, 0, &[0]);
        assert_eq!(p.exit_status(), Some(3));
        assert_eq!(p.extra_reports(), 1);
    }

    #[test]
    fn phases_are_recorded_in_order() {
        let mut p = ExitPort::new();
        for ph in [Phase::InitStart, Phase::SpecLoaded, Phase::WorkloadExec] {
            p.write(EXIT_PORT_BASE, PHASE_OFFSET, &[ph.to_byte()]);
        }
        p.write(EXIT_PORT_BASE, PHASE_OFFSET, &[99]);
        let got: Vec<_> = p.phases().iter().map(|(ph, _)| *ph).collect();
        assert_eq!(
            got,
            [
                Phase::InitStart,
                Phase::SpecLoaded,
                Phase::WorkloadExec,
                Phase::Unknown(99)
            ]
        );
        assert!(p.phases().windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn phases_reach_a_listener_until_it_is_dropped() {
        let mut p = ExitPort::new();
        let (tx, rx) = std::sync::mpsc::channel();
        p.notify_phases(tx);
        p.write(EXIT_PORT_BASE, PHASE_OFFSET, &[Phase::InitStart.to_byte()]);
        p.write(EXIT_PORT_BASE, EXIT_STATUS_OFFSET, &[0]);
        p.write(EXIT_PORT_BASE, PHASE_OFFSET, &[Phase::SpecLoaded.to_byte()]);
        assert_eq!(rx.try_recv(), Ok(Phase::InitStart));
        assert_eq!(rx.try_recv(), Ok(Phase::SpecLoaded));
        p.stop_notifying();
        p.write(
            EXIT_PORT_BASE,
            PHASE_OFFSET,
            &[Phase::WorkloadExec.to_byte()],
        );
        assert_eq!(rx.recv(), Err(std::sync::mpsc::RecvError));
    }

    #[test]
    fn a_hook_runs_once_at_its_phase() {
        let mut p = ExitPort::new();
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c = calls.clone();
        p.call_at(
            Phase::WorkloadRunning,
            Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
            }),
        );
        for ph in [Phase::InitStart, Phase::SpecLoaded, Phase::WorkloadExec] {
            p.write(EXIT_PORT_BASE, PHASE_OFFSET, &[ph.to_byte()]);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        p.write(EXIT_PORT_BASE, PHASE_OFFSET, &[5]);
        p.write(EXIT_PORT_BASE, PHASE_OFFSET, &[5]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(p.phases()[3].0, Phase::WorkloadRunning);
    }

    #[test]
    fn power_off_ends_the_vm_like_the_reset_line() {
        let evt = EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let mut p = ExitPort::new().with_power_off(evt.try_clone().unwrap(), stop.clone());
        p.write(EXIT_PORT_BASE, EXIT_STATUS_OFFSET, &[0]);
        assert!(evt.read().is_err(), "the status alone does not end the VM");
        assert!(!stop.load(Ordering::SeqCst));
        p.write(EXIT_PORT_BASE, POWER_OFF_OFFSET, &[1]);
        assert_eq!(evt.read().unwrap(), 1);
        assert!(stop.load(Ordering::SeqCst));
        assert_eq!((p.power_offs(), p.exit_status()), (1, Some(0)));
        // Without the eventfd (a bare port) the write is only counted.
        let mut bare = ExitPort::new();
        bare.write(EXIT_PORT_BASE, POWER_OFF_OFFSET, &[1]);
        assert_eq!(bare.power_offs(), 1);
    }

    #[test]
    fn reads_return_the_signature() {
        let mut p = ExitPort::new();
        let mut b = [0u8; 4];
        p.read(EXIT_PORT_BASE, 0, &mut b);
        assert_eq!(&b, b"ISOL");
        let mut b = [0u8; 2];
        p.read(EXIT_PORT_BASE, 3, &mut b);
        assert_eq!(b, [b'L', 0xff]);
    }

    #[test]
    fn byte_stream_replays_port_writes() {
        use std::io::Write;
        let port = std::sync::Arc::new(std::sync::Mutex::new(ExitPort::new()));
        let mut w = ExitChannelWriter::new(port.clone());
        // Split mid-pair on purpose.
        w.write_all(&[PHASE_OFFSET as u8, 1, EXIT_STATUS_OFFSET as u8])
            .unwrap();
        w.write_all(&[42]).unwrap();
        let p = port.lock().unwrap();
        assert_eq!(p.exit_status(), Some(42));
        assert_eq!(p.phases()[0].0, Phase::InitStart);
    }

    #[test]
    fn phase_bytes_round_trip() {
        for b in 0..=255u8 {
            assert_eq!(Phase::from_byte(b).to_byte(), b);
        }
    }
}
