//! vCPUs: configuration before the first entry, and the per-vCPU thread with its
//! Running / Paused / Exiting state machine.
//!
//! Every exit is handled in userspace, completely, before the next `KVM_RUN`: port I/O
//! and MMIO are dispatched on the buses (unmapped reads return all-ones, unmapped writes
//! are dropped, both counted); `hlt`, triple fault (`Shutdown`), system events, entry
//! failures and internal errors stop the vCPU and are reported to the event loop.
//!
//! The event loop talks to a vCPU with [`VcpuCommand`]s. A vCPU blocked in `KVM_RUN` is
//! kicked with a real-time signal whose handler sets `kvm_run.immediate_exit`, so a kick
//! that lands just before `KVM_RUN` is not lost: the next `KVM_RUN` returns `EINTR` at
//! once and the thread looks at its commands.

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use kvm_bindings::{CpuId, Msrs, kvm_cpuid_entry2, kvm_run};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{SIGRTMIN, register_signal_handler};

use crate::arch::x86_64::{cpuid, msr, regs};
use crate::seccomp::{Filters, ThreadKind};
use crate::trace::{ExitCounts, ExitKind, Timeline};
use crate::vstate::pause::Pauser;
use isol_devices::Bus;

/// Errors configuring or starting a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// KVM_CREATE_VCPU failed.
    #[error("KVM cannot create vCPU {index}: {source}; use fewer vCPUs")]
    Create {
        /// vCPU index.
        index: u8,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// A setup ioctl failed.
    #[error(
        "Cannot set up vCPU {index}: {what} failed: {source}; the host's KVM may not support this guest setup"
    )]
    Setup {
        /// vCPU index.
        index: u8,
        /// Which step.
        what: &'static str,
        /// Why.
        source: kvm_ioctls::Error,
    },
    /// KVM took fewer MSRs than given.
    #[error(
        "KVM accepted only {set} of {total} boot MSRs on vCPU {index} (first refused: {first:#x}); the host's KVM may be too old"
    )]
    Msrs {
        /// vCPU index.
        index: u8,
        /// How many were set.
        set: usize,
        /// How many were given.
        total: usize,
        /// First MSR not set.
        first: u32,
    },
    /// The kick signal handler could not be installed.
    #[error("Cannot install the vCPU kick signal handler: {0}; another library may own SIGRTMIN")]
    Signal(vmm_sys_util::errno::Error),
    /// The thread could not be spawned.
    #[error("Cannot start the thread of vCPU {index}: {source}; raise the process/thread limits")]
    Spawn {
        /// vCPU index.
        index: u8,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a vCPU stopped running guest code on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuStop {
    /// A `hlt` reached userspace (only without an in-kernel LAPIC, i.e. never in a
    /// fully built VM; kept for bare tests).
    Halted,
    /// KVM_EXIT_SHUTDOWN: triple fault, or a reset KVM turned into shutdown.
    Shutdown,
    /// KVM_EXIT_SYSTEM_EVENT with its type (KVM_SYSTEM_EVENT_*).
    SystemEvent(u32),
    /// VM entry failed with this hardware reason.
    FailEntry(u64),
    /// KVM_EXIT_INTERNAL_ERROR with this suberror (1 = emulation failure).
    InternalError(u32),
    /// An exit this VMM does not handle (raw KVM exit reason, or u32::MAX if unknown).
    Unexpected(u32),
    /// KVM_RUN itself failed with this errno.
    RunFailed(i32),
}

/// Sent to the event loop when a vCPU stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuEvent {
    /// vCPU index.
    pub index: u8,
    /// Why.
    pub stop: VcpuStop,
    /// The registers right after the stop, for the stops that end the VM in an error
    /// (shutdown, failed entry, internal error); `None` for the others or when KVM
    /// refused KVM_GET_REGS/KVM_GET_SREGS.
    pub regs: Option<CpuSnapshot>,
}

/// The registers that tell where a guest died, read with KVM_GET_REGS and KVM_GET_SREGS
/// on the vCPU thread right after the exit.
///
/// After a shutdown (triple fault) exit these are not always the guest's: kvm_amd
/// INIT-resets the vCPU before it reports the exit (the VMCB is undefined after a
/// SHUTDOWN intercept), so there they are the reset values — RIP 0xfff0, CS 0xf000 with
/// base 0xffff0000, CR0 0x10 (plus the CD/NW bits INIT keeps), EFER 0 — which [`CpuSnapshot::is_reset_state`]
/// recognises; kvm_intel leaves the registers of the faulting instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSnapshot {
    /// RIP.
    pub rip: u64,
    /// RSP.
    pub rsp: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2 (the last page fault's address).
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// CS selector.
    pub cs: u16,
    /// CS base.
    pub cs_base: u64,
    /// SS selector.
    pub ss: u16,
    /// GDTR base and limit.
    pub gdt: (u64, u16),
    /// IDTR base and limit.
    pub idt: (u64, u16),
}

impl CpuSnapshot {
    /// Reads the registers of `fd` (`None` if KVM refuses).
    pub fn read(fd: &VcpuFd) -> Option<Self> {
        let r = fd.get_regs().ok()?;
        let s = fd.get_sregs().ok()?;
        Some(Self {
            rip: r.rip,
            rsp: r.rsp,
            rflags: r.rflags,
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
            cs: s.cs.selector,
            cs_base: s.cs.base,
            ss: s.ss.selector,
            gdt: (s.gdt.base, s.gdt.limit),
            idt: (s.idt.base, s.idt.limit),
        })
    }

    /// Whether these are the values of a vCPU just reset (INIT or power-on): what
    /// kvm_amd leaves after a shutdown exit instead of the guest's registers.
    pub fn is_reset_state(&self) -> bool {
        self.rip == 0xfff0 && self.cs == 0xf000 && self.cs_base == 0xffff_0000 && self.cr0 & 1 == 0
    }
}

impl std::fmt::Display for CpuSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RIP {:#x} RSP {:#x} RFLAGS {:#x} CR0 {:#x} CR2 {:#x} CR3 {:#x} CR4 {:#x} \
             EFER {:#x} CS {:#x} (base {:#x}) SS {:#x} GDT {:#x}/{:#x} IDT {:#x}/{:#x}",
            self.rip,
            self.rsp,
            self.rflags,
            self.cr0,
            self.cr2,
            self.cr3,
            self.cr4,
            self.efer,
            self.cs,
            self.cs_base,
            self.ss,
            self.gdt.0,
            self.gdt.1,
            self.idt.0,
            self.idt.1
        )?;
        if self.is_reset_state() {
            f.write_str(" (reset values: this host's KVM reset the vCPU at the exit, as kvm_amd does at a shutdown; not where the guest died)")?;
        }
        Ok(())
    }
}

/// Commands from the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuCommand {
    /// Stop entering the guest until `Resume`.
    Pause,
    /// Enter the guest again.
    Resume,
    /// Leave the thread.
    Exit,
}

/// States of the vCPU thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuState {
    /// Entering the guest in a loop.
    Running,
    /// Waiting for a command.
    Paused,
    /// About to leave the thread.
    Exiting,
}

impl VcpuState {
    /// The state after `cmd`.
    pub fn next(self, cmd: VcpuCommand) -> VcpuState {
        match (self, cmd) {
            (VcpuState::Exiting, _) | (_, VcpuCommand::Exit) => VcpuState::Exiting,
            (_, VcpuCommand::Pause) => VcpuState::Paused,
            (_, VcpuCommand::Resume) => VcpuState::Running,
        }
    }
}

/// What to do after one exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Continue,
    Stop(VcpuStop),
}

/// Bytes returned for reads nobody answers (a floating bus).
const UNMAPPED_READ: u8 = 0xff;

thread_local! {
    /// This thread's `kvm_run`, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    KVM_RUN.with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: `run` is this thread's mmap'd kvm_run, set by the vCPU thread for the
            // lifetime of its loop and cleared before the VcpuFd is dropped, so the field
            // address is valid.
            let field = unsafe { std::ptr::addr_of_mut!((*run).immediate_exit) };
            // SAFETY: `field` points into the live kvm_run; a volatile byte store is
            // async-signal-safe.
            unsafe { field.write_volatile(1) };
        }
    });
}

/// The signal used to kick vCPUs out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

static KICK_HANDLER: Once = Once::new();

fn install_kick_handler() -> Result<(), VcpuError> {
    let mut result = Ok(());
    KICK_HANDLER.call_once(|| {
        result = register_signal_handler(kick_signal(), kick_handler).map_err(VcpuError::Signal);
    });
    result
}

/// A vCPU before its thread starts.
#[derive(Debug)]
pub struct Vcpu {
    index: u8,
    fd: VcpuFd,
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    timeline: Arc<Timeline>,
    serial_ports: std::ops::Range<u64>,
    counts: ExitCounts,
    stop_flag: Arc<AtomicBool>,
    /// Whether KVM's coalesced-MMIO ring is mapped (writes to the ranges the device
    /// manager registered are batched there instead of exiting).
    batched_ring: bool,
    /// Shared by the VM's vCPUs: see [`MmioOrder`].
    order: Arc<MmioOrder>,
    /// Told when this vCPU parks for a pause and runs again (`vstate::pause`).
    pauser: Option<Arc<Pauser>>,
}

/// What the vCPUs of a VM share so that MMIO exits are served in the order the guest
/// made its accesses.
#[derive(Debug, Default)]
pub struct MmioOrder {
    /// Held while the coalesced-MMIO ring (one per VM) is drained and applied, so that a
    /// vCPU that finds it empty knows every write before its own exit has been applied.
    batch_lock: Mutex<()>,
    /// Set once the virtio devices' ioeventfds and batching zones are registered
    /// (`device_manager::LateIo`, made on another thread while the guest boots).
    late_io: AtomicBool,
    late_io_lock: Mutex<bool>,
    late_io_cv: Condvar,
}

impl MmioOrder {
    /// Records that the late registrations are done (whether or not they succeeded).
    pub fn late_io_done(&self) {
        *self.late_io_lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.late_io.store(true, Ordering::Release);
        self.late_io_cv.notify_all();
    }

    /// Waits until [`MmioOrder::late_io_done`]: no MMIO exit is served before, so the
    /// guest's first access to a device (Linux probes them long after the registrations
    /// are usually done) finds its notifications and batching in place — every boot the
    /// same.
    fn wait_late_io(&self) {
        if self.late_io.load(Ordering::Acquire) {
            return;
        }
        let mut done = self.late_io_lock.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self
                .late_io_cv
                .wait(done)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// An MMIO access that exited, copied out of `kvm_run` so the batched writes before it
/// can be applied first.
enum MmioAccess {
    Read {
        addr: u64,
        len: usize,
    },
    Write {
        addr: u64,
        data: [u8; 8],
        len: usize,
    },
}

impl Vcpu {
    /// Creates vCPU `index` (its APIC id too). Once `stop_flag` is raised (the guest
    /// reset), the vCPU stops entering the guest and waits for `Exit`. `order` is
    /// shared by all vCPUs of the VM (see [`MmioOrder`]).
    pub fn new(
        vm: &VmFd,
        index: u8,
        pio: Arc<Bus>,
        mmio: Arc<Bus>,
        timeline: Arc<Timeline>,
        stop_flag: Arc<AtomicBool>,
        order: Arc<MmioOrder>,
    ) -> Result<Self, VcpuError> {
        let mut fd = vm
            .create_vcpu(u64::from(index))
            .map_err(|source| VcpuError::Create { index, source })?;
        // Without the ring (no KVM_CAP_COALESCED_MMIO) no zone can have been registered
        // either, and every write exits as usual.
        let batched_ring = fd.map_coalesced_mmio_ring().is_ok();
        Ok(Self {
            index,
            fd,
            pio,
            mmio,
            timeline,
            serial_ports: isol_devices::legacy::SERIAL_PORT_BASE
                ..isol_devices::legacy::SERIAL_PORT_BASE + isol_devices::legacy::SERIAL_PORT_LEN,
            counts: ExitCounts::default(),
            stop_flag,
            batched_ring,
            order,
            pauser: None,
        })
    }

    /// Reports this vCPU's pauses to `pauser` (`vstate::pause`).
    pub fn with_pauser(mut self, pauser: Option<Arc<Pauser>>) -> Self {
        self.pauser = pauser;
        self
    }

    /// A command arrived: the next state, and the pauser told when this vCPU parks for a
    /// pause (`Pause`) or leaves one (`Resume`). `counted`: whether it is parked for one.
    fn on_command(&self, state: VcpuState, cmd: VcpuCommand, counted: &mut bool) -> VcpuState {
        let next = state.next(cmd);
        if let Some(p) = &self.pauser {
            let parked = next == VcpuState::Paused && cmd == VcpuCommand::Pause;
            if parked != *counted && next != VcpuState::Exiting {
                *counted = parked;
                if parked {
                    // Tells a guest with kvmclock that it was stopped, so that its soft
                    // lockup watchdog does not take the pause for a hang; refused (EINVAL)
                    // where the guest has no kvmclock: nothing to tell.
                    let _ = self.fd.kvmclock_ctrl();
                }
                p.parked(parked);
            }
        }
        next
    }

    /// Applies, in order, the MMIO writes KVM batched in the coalesced-MMIO ring since
    /// the last exit (register writes whose effect the device only acts on at a later
    /// access: `isol_devices::virtio::mmio::BATCHABLE_WRITES`). Called before an MMIO
    /// exit is served, so that access sees every write the guest made before it.
    fn apply_batched_writes(&mut self) {
        if !self.batched_ring {
            return;
        }
        let _held = self
            .order
            .batch_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        while let Ok(Some(e)) = self.fd.coalesced_mmio_read() {
            let len = (e.len as usize).min(e.data.len());
            self.mmio.write(e.phys_addr, &e.data[..len]);
            self.counts.record(ExitKind::MmioBatched, e.phys_addr);
        }
    }

    /// Serves an MMIO exit after the batched writes before it.
    fn serve_mmio(&mut self, access: MmioAccess) {
        self.order.wait_late_io();
        self.apply_batched_writes();
        match access {
            MmioAccess::Write { addr, data, len } => {
                self.mmio.write(addr, &data[..len]);
            }
            MmioAccess::Read { addr, len } => {
                let mut data = [0u8; 8];
                let data = &mut data[..len];
                if self.mmio.read(addr, data).is_none() {
                    data.fill(UNMAPPED_READ);
                }
                let run = self.fd.get_kvm_run();
                // SAFETY: the last KVM_RUN ended with KVM_EXIT_MMIO (a read, of `len` <= 8
                // bytes), so `mmio` is the active member of the exit union; KVM reads
                // `mmio.data` when the vCPU next enters.
                unsafe { run.__bindgen_anon_1.mmio.data[..len].copy_from_slice(data) };
            }
        }
    }

    fn setup<T>(
        &self,
        what: &'static str,
        r: Result<T, kvm_ioctls::Error>,
    ) -> Result<T, VcpuError> {
        r.map_err(|source| VcpuError::Setup {
            index: self.index,
            what,
            source,
        })
    }

    /// CPUID, MSRs, FPU and LAPIC for every vCPU; registers for the boot vCPU (`entry`
    /// is `Some` only for vCPU 0; the others wait for INIT/SIPI in the in-kernel LAPIC).
    pub fn configure(
        &self,
        supported_cpuid: &CpuId,
        vcpu_count: u8,
        entry: Option<regs::EntryMode>,
    ) -> Result<(), VcpuError> {
        let mut entries: Vec<kvm_cpuid_entry2> = supported_cpuid.as_slice().to_vec();
        cpuid::filter_cpuid(&mut entries, self.index, vcpu_count);
        let cpuid = self.setup(
            "building CPUID",
            CpuId::from_entries(&entries).map_err(|_| vmm_sys_util::errno::Error::new(libc::E2BIG)),
        )?;
        self.setup("KVM_SET_CPUID2", self.fd.set_cpuid2(&cpuid))?;

        let msr_entries = msr::boot_msr_entries();
        let msrs = self.setup(
            "building MSRs",
            Msrs::from_entries(&msr_entries)
                .map_err(|_| vmm_sys_util::errno::Error::new(libc::E2BIG)),
        )?;
        let set = self.setup("KVM_SET_MSRS", self.fd.set_msrs(&msrs))?;
        if set != msr_entries.len() {
            return Err(VcpuError::Msrs {
                index: self.index,
                set,
                total: msr_entries.len(),
                first: msr_entries[set].index,
            });
        }

        self.setup("KVM_SET_FPU", self.fd.set_fpu(&regs::boot_fpu()))?;

        let mut lapic = self.setup("KVM_GET_LAPIC", self.fd.get_lapic())?;
        regs::set_lint(&mut lapic);
        self.setup("KVM_SET_LAPIC", self.fd.set_lapic(&lapic))?;

        if let Some(mode) = entry {
            self.setup("KVM_SET_REGS", self.fd.set_regs(&regs::boot_regs(mode)))?;
            let mut sregs = self.setup("KVM_GET_SREGS", self.fd.get_sregs())?;
            regs::set_boot_sregs(&mut sregs, mode);
            self.setup("KVM_SET_SREGS", self.fd.set_sregs(&sregs))?;
        }
        Ok(())
    }

    /// Raw access for bare tests that set registers themselves.
    pub fn fd(&self) -> &VcpuFd {
        &self.fd
    }

    fn note_serial(&self, port: u64) {
        if self.serial_ports.contains(&port) {
            self.timeline.first_serial_access.get_or_init(Instant::now);
        }
    }

    /// Runs the guest until one exit and handles it.
    fn run_once(&mut self) -> Action {
        let mut mmio = None;
        let exit = self.fd.run();
        let (kind, addr, action) = match exit {
            Ok(VcpuExit::IoIn(port, data)) => {
                let port = u64::from(port);
                if self.pio.read(port, data).is_none() {
                    data.fill(UNMAPPED_READ);
                }
                (ExitKind::IoIn, port, Action::Continue)
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                let port = u64::from(port);
                self.pio.write(port, data);
                (ExitKind::IoOut, port, Action::Continue)
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                mmio = Some(MmioAccess::Read {
                    addr,
                    len: data.len().min(8),
                });
                (ExitKind::MmioRead, addr, Action::Continue)
            }
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                let len = data.len().min(8);
                let mut copy = [0u8; 8];
                copy[..len].copy_from_slice(&data[..len]);
                mmio = Some(MmioAccess::Write {
                    addr,
                    data: copy,
                    len,
                });
                (ExitKind::MmioWrite, addr, Action::Continue)
            }
            Ok(VcpuExit::Hlt) => (ExitKind::Hlt, 0, Action::Stop(VcpuStop::Halted)),
            Ok(VcpuExit::Shutdown) => (ExitKind::Shutdown, 0, Action::Stop(VcpuStop::Shutdown)),
            Ok(VcpuExit::SystemEvent(kind, _)) => (
                ExitKind::SystemEvent,
                u64::from(kind),
                Action::Stop(VcpuStop::SystemEvent(kind)),
            ),
            Ok(VcpuExit::FailEntry(reason, _cpu)) => (
                ExitKind::FailEntry,
                0,
                Action::Stop(VcpuStop::FailEntry(reason)),
            ),
            Ok(VcpuExit::InternalError) => {
                // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // active member of the union.
                let sub = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                (
                    ExitKind::InternalError,
                    0,
                    Action::Stop(VcpuStop::InternalError(sub)),
                )
            }
            Ok(VcpuExit::Unsupported(reason)) => (
                ExitKind::Other,
                u64::from(reason),
                Action::Stop(VcpuStop::Unexpected(reason)),
            ),
            Ok(_) => {
                let reason = self.fd.get_kvm_run().exit_reason;
                (
                    ExitKind::Other,
                    u64::from(reason),
                    Action::Stop(VcpuStop::Unexpected(reason)),
                )
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                // A kick (immediate_exit) or a stray signal. Re-arm and look at commands.
                self.fd.set_kvm_immediate_exit(0);
                (ExitKind::Interrupted, 0, Action::Continue)
            }
            Err(e) => (
                ExitKind::Other,
                0,
                Action::Stop(VcpuStop::RunFailed(e.errno())),
            ),
        };
        if let Some(access) = mmio {
            self.serve_mmio(access);
        }
        if matches!(kind, ExitKind::IoIn | ExitKind::IoOut) {
            self.note_serial(addr);
        }
        self.counts.record(kind, addr);
        action
    }

    /// The thread body: the state machine. Returns the exit counts.
    fn run_loop(
        mut self,
        commands: Receiver<VcpuCommand>,
        events: Sender<VcpuEvent>,
        wake: EventFd,
        mut state: VcpuState,
    ) -> ExitCounts {
        let run_ptr: *mut kvm_run = self.fd.get_kvm_run();
        KVM_RUN.with(|p| p.set(run_ptr));
        if self.index == 0 {
            self.timeline.first_vcpu_entry.get_or_init(Instant::now);
        }
        let mut counted = false;
        while state != VcpuState::Exiting {
            match state {
                VcpuState::Running => {
                    match commands.try_recv() {
                        Ok(cmd) => {
                            state = self.on_command(state, cmd, &mut counted);
                            continue;
                        }
                        Err(TryRecvError::Disconnected) => {
                            state = VcpuState::Exiting;
                            continue;
                        }
                        Err(TryRecvError::Empty) => {}
                    }
                    if self.stop_flag.load(Ordering::SeqCst) {
                        // The guest reset the machine: run nothing more of it.
                        state = VcpuState::Paused;
                        continue;
                    }
                    if let Action::Stop(stop) = self.run_once() {
                        let regs = matches!(
                            stop,
                            VcpuStop::Shutdown
                                | VcpuStop::FailEntry(_)
                                | VcpuStop::InternalError(_)
                        )
                        .then(|| CpuSnapshot::read(&self.fd))
                        .flatten();
                        // The receiver only goes away when the VMM is tearing down.
                        let _ = events.send(VcpuEvent {
                            index: self.index,
                            stop,
                            regs,
                        });
                        let _ = wake.write(1);
                        state = VcpuState::Exiting;
                    }
                }
                VcpuState::Paused => {
                    state = match commands.recv() {
                        Ok(cmd) => self.on_command(state, cmd, &mut counted),
                        Err(_) => VcpuState::Exiting,
                    };
                }
                VcpuState::Exiting => {}
            }
        }
        KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
        std::mem::take(&mut self.counts)
    }

    /// Starts the vCPU thread. Stops are sent on `events` with a write to `wake`. With
    /// `filters`, the thread installs its seccomp filter and then waits, paused, for
    /// [`VcpuCommand::Resume`] before it first enters the guest (the caller filters its own
    /// thread in between: see `seccomp.rs`).
    pub fn start(
        self,
        events: Sender<VcpuEvent>,
        wake: EventFd,
        filters: Option<Filters>,
    ) -> Result<VcpuHandle, VcpuError> {
        install_kick_handler()?;
        let index = self.index;
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("isol-vcpu{index}"))
            .spawn(move || {
                let state = match &filters {
                    Some(f) => {
                        f.apply_or_exit(ThreadKind::Vcpu);
                        VcpuState::Paused
                    }
                    None => VcpuState::Running,
                };
                drop(filters);
                self.run_loop(rx, events, wake, state)
            })
            .map_err(|source| VcpuError::Spawn { index, source })?;
        Ok(VcpuHandle {
            index,
            commands: tx,
            thread: Some(thread),
        })
    }
}

/// The event loop's handle on a running vCPU thread.
#[derive(Debug)]
pub struct VcpuHandle {
    index: u8,
    commands: Sender<VcpuCommand>,
    thread: Option<JoinHandle<ExitCounts>>,
}

impl VcpuHandle {
    /// vCPU index.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// Sends `cmd` and kicks the thread out of KVM_RUN so it sees it.
    pub fn send(&self, cmd: VcpuCommand) {
        // A closed channel means the thread already left; nothing to tell it.
        let _ = self.commands.send(cmd);
        self.kick();
    }

    /// Lets a vCPU started paused ([`Vcpu::start`] with filters) enter the guest. No kick:
    /// it waits for a command outside KVM_RUN, and a kick would only cost it a first exit.
    pub fn release(&self) {
        let _ = self.commands.send(VcpuCommand::Resume);
    }

    fn kick(&self) {
        if let Some(t) = &self.thread
            && !t.is_finished()
        {
            // SAFETY: the pthread_t belongs to a thread we spawned and have not joined
            // (we hold its JoinHandle), so it is valid; the signal's handler only
            // stores a byte.
            unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
        }
    }

    /// Tells the thread to exit and waits for it; returns its exit counts.
    pub fn stop_and_join(mut self) -> ExitCounts {
        self.send(VcpuCommand::Exit);
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(c)) => c,
            _ => ExitCounts::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_transitions() {
        use VcpuCommand::*;
        use VcpuState::*;
        assert_eq!(Running.next(Pause), Paused);
        assert_eq!(Paused.next(Resume), Running);
        assert_eq!(Paused.next(Pause), Paused);
        assert_eq!(Running.next(Resume), Running);
        assert_eq!(Running.next(Exit), Exiting);
        assert_eq!(Paused.next(Exit), Exiting);
        assert_eq!(Exiting.next(Resume), Exiting);
    }
}
