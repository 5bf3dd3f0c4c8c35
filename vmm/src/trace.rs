//! Exit accounting and the boot timeline.
//!
//! Each vCPU thread counts its own exits (no shared lock on the hot path) by kind and
//! port/address; the counts are merged when the threads are joined. The timeline marks
//! VMM start, first vCPU entry, the guest's first serial access and first output byte,
//! the phases init reports on the exit port, and the end of the VM.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use isol_devices::Bus;
use isol_devices::legacy::Phase;

/// Kinds of vCPU exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExitKind {
    /// `in` from a port.
    IoIn,
    /// `out` to a port.
    IoOut,
    /// MMIO read.
    MmioRead,
    /// MMIO write.
    MmioWrite,
    /// MMIO write KVM batched in the coalesced-MMIO ring, without an exit: not counted
    /// among the exits, listed beside them.
    MmioBatched,
    /// `hlt` reaching userspace.
    Hlt,
    /// Triple fault.
    Shutdown,
    /// KVM system event.
    SystemEvent,
    /// KVM internal error.
    InternalError,
    /// VM entry failed.
    FailEntry,
    /// KVM_RUN interrupted by a signal (kick or stray signal).
    Interrupted,
    /// Anything else.
    Other,
}

impl ExitKind {
    fn label(self) -> &'static str {
        match self {
            ExitKind::IoIn => "io-in",
            ExitKind::IoOut => "io-out",
            ExitKind::MmioRead => "mmio-read",
            ExitKind::MmioWrite => "mmio-write",
            ExitKind::MmioBatched => "mmio-batched",
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::SystemEvent => "system-event",
            ExitKind::InternalError => "internal-error",
            ExitKind::FailEntry => "fail-entry",
            ExitKind::Interrupted => "interrupted",
            ExitKind::Other => "other",
        }
    }

    fn is_pio(self) -> bool {
        matches!(self, ExitKind::IoIn | ExitKind::IoOut)
    }

    fn is_mmio(self) -> bool {
        matches!(
            self,
            ExitKind::MmioRead | ExitKind::MmioWrite | ExitKind::MmioBatched
        )
    }
}

/// Exit counts keyed by kind and port/address (0 for kinds without one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitCounts {
    counts: BTreeMap<(ExitKind, u64), u64>,
}

/// One line of the exit report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitCountRow {
    /// Exit kind.
    pub kind: ExitKind,
    /// Port or address (0 if not applicable).
    pub addr: u64,
    /// Device serving it, `None` if nothing is mapped there.
    pub device: Option<String>,
    /// How many.
    pub count: u64,
}

impl ExitCounts {
    /// Counts one exit.
    pub fn record(&mut self, kind: ExitKind, addr: u64) {
        *self.counts.entry((kind, addr)).or_insert(0) += 1;
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &ExitCounts) {
        for (k, v) in &other.counts {
            *self.counts.entry(*k).or_insert(0) += v;
        }
    }

    /// Total exits (batched MMIO writes are not exits).
    pub fn total(&self) -> u64 {
        self.counts
            .iter()
            .filter(|((k, _), _)| *k != ExitKind::MmioBatched)
            .map(|(_, v)| v)
            .sum()
    }

    /// Count for one kind at one port/address.
    pub fn get(&self, kind: ExitKind, addr: u64) -> u64 {
        self.counts.get(&(kind, addr)).copied().unwrap_or(0)
    }

    /// Count for one kind at any address.
    pub fn of_kind(&self, kind: ExitKind) -> u64 {
        self.counts
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|(_, v)| v)
            .sum()
    }

    /// Rows with device names resolved on the buses, most frequent first.
    pub fn rows(&self, pio: &Bus, mmio: &Bus) -> Vec<ExitCountRow> {
        let mut rows: Vec<_> = self
            .counts
            .iter()
            .map(|(&(kind, addr), &count)| {
                let device = if kind.is_pio() {
                    pio.lookup(addr).map(|h| h.name.to_string())
                } else if kind.is_mmio() {
                    mmio.lookup(addr).map(|h| h.name.to_string())
                } else {
                    None
                };
                ExitCountRow {
                    kind,
                    addr,
                    device,
                    count,
                }
            })
            .collect();
        rows.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.kind.cmp(&b.kind))
                .then(a.addr.cmp(&b.addr))
        });
        rows
    }

    /// Totals per device (unmapped accesses grouped as "unmapped"), most frequent first.
    pub fn by_device(&self, pio: &Bus, mmio: &Bus) -> Vec<(String, u64)> {
        let mut m: BTreeMap<String, u64> = BTreeMap::new();
        for r in self.rows(pio, mmio) {
            if r.kind == ExitKind::MmioBatched {
                continue;
            }
            let name = match (&r.device, r.kind.is_pio() || r.kind.is_mmio()) {
                (Some(d), _) => d.clone(),
                (None, true) => "unmapped".to_string(),
                (None, false) => r.kind.label().to_string(),
            };
            *m.entry(name).or_insert(0) += r.count;
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }
}

/// The builder's setup steps, in order; each is stamped when it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupStep {
    /// /dev/kvm opened, VM, irqchip and PIT created.
    Vm = 0,
    /// Guest memory mapped and registered.
    Memory,
    /// Devices on the buses.
    Devices,
    /// Kernel loaded into guest memory.
    Kernel,
    /// Initramfs built and loaded.
    Initramfs,
    /// Command line, boot structures, vCPUs configured.
    Vcpus,
    /// The virtio devices' ioeventfds and batching zones registered (on their own
    /// thread, usually while the guest boots: `device_manager::LateIo`).
    LateIo,
    /// A stored boot set faulted in (on its own thread, usually while the guest boots:
    /// `vstate::boot_profile`).
    BootSet,
}

const SETUP_STEPS: usize = 8;

/// Instants shared between the threads while the VM runs.
#[derive(Debug)]
pub struct Timeline {
    /// When `run` started.
    pub vmm_start: Instant,
    /// When each setup step was done (set by the builder thread).
    pub setup: [OnceLock<Instant>; SETUP_STEPS],
    /// vCPU 0's first KVM_RUN.
    pub first_vcpu_entry: OnceLock<Instant>,
    /// The guest's first access to the UART (the kernel's 8250 probe).
    pub first_serial_access: OnceLock<Instant>,
    /// The first byte the guest transmitted on the UART.
    pub first_console_output: OnceLock<Instant>,
}

impl Timeline {
    /// A timeline starting now.
    pub fn start() -> Arc<Self> {
        Arc::new(Self {
            vmm_start: Instant::now(),
            setup: Default::default(),
            first_vcpu_entry: OnceLock::new(),
            first_serial_access: OnceLock::new(),
            first_console_output: OnceLock::new(),
        })
    }

    /// Stamps the end of a setup step (the first stamp wins).
    pub fn mark(&self, step: SetupStep) {
        self.setup[step as usize].get_or_init(Instant::now);
    }

    fn since(&self, t: Option<&Instant>) -> Option<Duration> {
        t.map(|t| t.saturating_duration_since(self.vmm_start))
    }

    /// Freezes the timeline into offsets from VMM start.
    pub fn finish(&self, phases: &[(Phase, Instant)], end: Instant) -> BootTimings {
        let phase = |p: Phase| self.since(phases.iter().find(|(q, _)| *q == p).map(|(_, t)| t));
        BootTimings {
            setup: std::array::from_fn(|i| self.since(self.setup[i].get())),
            first_vcpu_entry: self.since(self.first_vcpu_entry.get()),
            first_serial_access: self.since(self.first_serial_access.get()),
            first_console_output: self.since(self.first_console_output.get()),
            init_start: phase(Phase::InitStart),
            spec_loaded: phase(Phase::SpecLoaded),
            workload_start: phase(Phase::WorkloadExec),
            workload_exit: phase(Phase::WorkloadExit),
            vm_exit: end.saturating_duration_since(self.vmm_start),
        }
    }
}

/// Boot phases as offsets from VMM start (`None`: not reached or not reported).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootTimings {
    /// End of each [`SetupStep`], indexed by `step as usize`.
    pub setup: [Option<Duration>; SETUP_STEPS],
    /// vCPU 0 entered the guest.
    pub first_vcpu_entry: Option<Duration>,
    /// The guest first touched the UART.
    pub first_serial_access: Option<Duration>,
    /// The guest first wrote a byte to the console.
    pub first_console_output: Option<Duration>,
    /// Init started.
    pub init_start: Option<Duration>,
    /// Init read the spec.
    pub spec_loaded: Option<Duration>,
    /// The workload was exec'd.
    pub workload_start: Option<Duration>,
    /// The workload exited.
    pub workload_exit: Option<Duration>,
    /// The VM ended.
    pub vm_exit: Duration,
}

impl BootTimings {
    /// When `step` was done.
    pub fn setup_step(&self, step: SetupStep) -> Option<Duration> {
        self.setup[step as usize]
    }
}

impl fmt::Display for BootTimings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = [
            ("  kvm + vm created", self.setup_step(SetupStep::Vm)),
            ("  guest memory", self.setup_step(SetupStep::Memory)),
            ("  devices", self.setup_step(SetupStep::Devices)),
            ("  kernel loaded", self.setup_step(SetupStep::Kernel)),
            ("  initramfs loaded", self.setup_step(SetupStep::Initramfs)),
            ("  vcpus configured", self.setup_step(SetupStep::Vcpus)),
            ("  ioeventfds (async)", self.setup_step(SetupStep::LateIo)),
            ("  boot set (async)", self.setup_step(SetupStep::BootSet)),
            ("first vCPU entry", self.first_vcpu_entry),
            ("first serial access", self.first_serial_access),
            ("first console output", self.first_console_output),
            ("init start", self.init_start),
            ("spec loaded", self.spec_loaded),
            ("workload start", self.workload_start),
            ("workload exit", self.workload_exit),
            ("VM exit", Some(self.vm_exit)),
        ];
        writeln!(f, "  {:<22} {:>12}", "vmm start", "0.000 ms")?;
        for (name, t) in rows {
            match t {
                Some(d) => writeln!(f, "  {:<22} {:>9.3} ms", name, d.as_secs_f64() * 1e3)?,
                None => writeln!(f, "  {:<22} {:>12}", name, "-")?,
            }
        }
        Ok(())
    }
}

/// The `--trace-exits` report.
pub fn report(counts: &ExitCounts, timings: &BootTimings, pio: &Bus, mmio: &Bus) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "isol: boot timeline");
    let _ = write!(s, "{timings}");
    let _ = writeln!(s, "isol: {} vCPU exits by device", counts.total());
    for (dev, n) in counts.by_device(pio, mmio) {
        let _ = writeln!(s, "  {dev:<22} {n:>10}");
    }
    let batched = counts.of_kind(ExitKind::MmioBatched);
    if batched > 0 {
        let _ = writeln!(
            s,
            "isol: {batched} MMIO writes batched by KVM without an exit (coalesced MMIO)"
        );
    }
    let _ = writeln!(s, "isol: vCPU exits by kind and port/address");
    for r in counts.rows(pio, mmio) {
        let addr = if r.kind.is_pio() || r.kind.is_mmio() {
            format!("{:#x}", r.addr)
        } else {
            String::new()
        };
        let dev = r
            .device
            .as_deref()
            .unwrap_or(if addr.is_empty() { "" } else { "unmapped" });
        let _ = writeln!(
            s,
            "  {:<14} {:>12} {:<12} {:>10}",
            r.kind.label(),
            addr,
            dev,
            r.count
        );
    }
    s
}

/// Serial output sink that timestamps the first byte.
#[allow(missing_debug_implementations)] // holds a `dyn Write`
pub struct TimestampingWriter {
    inner: Box<dyn Write + Send>,
    timeline: Arc<Timeline>,
}

impl TimestampingWriter {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn Write + Send>, timeline: Arc<Timeline>) -> Self {
        Self { inner, timeline }
    }
}

impl Write for TimestampingWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if !b.is_empty() {
            self.timeline.first_console_output.get_or_init(Instant::now);
        }
        self.inner.write(b)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isol_devices::legacy::Sink;
    use std::sync::Mutex;

    #[test]
    fn counts_merge_and_sum() {
        let mut a = ExitCounts::default();
        a.record(ExitKind::IoOut, 0x3f8);
        a.record(ExitKind::IoOut, 0x3f8);
        a.record(ExitKind::Hlt, 0);
        let mut b = ExitCounts::default();
        b.record(ExitKind::IoOut, 0x3f8);
        b.record(ExitKind::IoIn, 0x999);
        a.merge(&b);
        assert_eq!(a.get(ExitKind::IoOut, 0x3f8), 3);
        assert_eq!(a.of_kind(ExitKind::IoIn), 1);
        assert_eq!(a.total(), 5);
    }

    #[test]
    fn rows_resolve_devices() {
        let mut pio = Bus::new();
        pio.insert(Arc::new(Mutex::new(Sink::new(0))), 0x3f8, 8, "serial")
            .unwrap();
        let mut c = ExitCounts::default();
        for _ in 0..3 {
            c.record(ExitKind::IoOut, 0x3f9);
        }
        c.record(ExitKind::IoIn, 0x2f8);
        c.record(ExitKind::Shutdown, 0);
        let rows = c.rows(&pio, &Bus::new());
        assert_eq!(rows[0].device.as_deref(), Some("serial"));
        assert_eq!(rows[0].count, 3);
        let by = c.by_device(&pio, &Bus::new());
        assert_eq!(by[0], ("serial".to_string(), 3));
        assert!(by.contains(&("unmapped".to_string(), 1)));
        assert!(by.contains(&("shutdown".to_string(), 1)));
        let r = report(&c, &BootTimings::default(), &pio, &Bus::new());
        assert!(r.contains("serial") && r.contains("0x2f8") && r.contains("unmapped"));
    }

    #[test]
    fn timeline_offsets() {
        let t = Timeline::start();
        let later = t.vmm_start + Duration::from_millis(5);
        t.first_vcpu_entry.set(later).unwrap();
        let phases = [
            (Phase::InitStart, later + Duration::from_millis(1)),
            (Phase::WorkloadExec, later + Duration::from_millis(2)),
        ];
        let b = t.finish(&phases, later + Duration::from_millis(10));
        assert_eq!(b.first_vcpu_entry, Some(Duration::from_millis(5)));
        assert_eq!(b.init_start, Some(Duration::from_millis(6)));
        assert_eq!(b.workload_start, Some(Duration::from_millis(7)));
        assert_eq!(b.spec_loaded, None);
        assert_eq!(b.vm_exit, Duration::from_millis(15));
        let s = b.to_string();
        assert!(s.contains("init start") && s.contains("6.000 ms"));
    }

    #[test]
    fn writer_stamps_first_output() {
        let t = Timeline::start();
        let mut w = TimestampingWriter::new(Box::new(io::sink()), t.clone());
        w.write_all(b"").unwrap();
        assert!(t.first_console_output.get().is_none());
        w.write_all(b"x").unwrap();
        assert!(t.first_console_output.get().is_some());
    }
}
