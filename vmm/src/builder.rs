//! The recipe: everything needed to boot a microVM, in order, in one function.
//!
//! 1. KVM: open /dev/kvm, check capabilities and the vCPU limit.
//! 2. VM: create it, KVM's TSS area, in-kernel irqchip (PIC, IOAPIC, LAPICs), PIT.
//! 3. Guest memory: anonymous mappings around the 32-bit MMIO gap, registered with KVM.
//! 4. Devices: serial (irqfd GSI 4), i8042, CMOS, POST/IO-delay sinks, exit port.
//! 5. Kernel: ELF (64-bit or PVH entry) or bzImage, via linux-loader; on its own thread
//!    from the moment guest memory is mapped, beside steps 1-4.
//! 6. Initramfs: the root archive it was given (if any) + /init + /isol/spec, placed
//!    high in low memory.
//! 7. Command line.
//! 8. Boot structures: zero page with e820 (64-bit) or hvm_start_info with memmap
//!    (PVH); identity page tables; GDT and empty IDT; MP table.
//! 9. vCPUs: CPUID (filtered), MSRs, FPU, LAPIC LINT0/LINT1; registers on the BSP.
//! 10. Start the vCPU threads and run the event loop until the VM ends; stop and join
//!     every thread; turn the ending into an exit code or an error.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Instant;

use isol_devices::legacy::Phase;
use isol_devices::virtio::console::FdWriter;
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use vm_memory::GuestMemoryMmap;

use crate::arch::x86_64::regs::{self, EntryMode};
use crate::arch::x86_64::{boot_params, mptable};
use crate::config::{Rootfs, SerialOutput, VmConfig};
use crate::event_loop::{self, VmEnd};
use crate::seccomp::{self, Filters, Seccomp, ThreadKind};
use crate::trace::{self, BootTimings, ExitCounts, SetupStep, Timeline, TimestampingWriter};
use crate::vstate::boot_profile::{BootSet, BootSetReport};
use crate::vstate::kvm::{self as kvm_state, KvmError};
use crate::vstate::memory;
use crate::vstate::vcpu::{MmioOrder, Vcpu, VcpuStop};
use crate::vstate::vm::Vm;
use crate::{VmmError, device_manager, initramfs, loader};

/// What a VM run produced.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// The workload's exit status as init reported it (128 + N for signal N).
    pub exit_code: i32,
    /// Boot phases, from VMM start.
    pub timings: BootTimings,
    /// vCPU exits by kind and port/address.
    pub exit_counts: ExitCounts,
    /// What the boot did with its boot-set profile (`vstate::boot_profile`).
    pub boot_set: BootSetReport,
}

fn serial_writer(out: &SerialOutput) -> Box<dyn Write + Send> {
    match out {
        // Through its own descriptor of stdout, so that a full non-blocking stdout (its
        // open file description is shared with the shell or the reader) makes the UART
        // wait instead of losing bytes, like the console ports' writers.
        SerialOutput::Stdout => match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => Box::new(FdWriter::new(File::from(fd))),
            Err(_) => Box::new(std::io::stdout()),
        },
        SerialOutput::Stderr => match std::io::stderr().as_fd().try_clone_to_owned() {
            Ok(fd) => Box::new(FdWriter::new(File::from(fd))),
            Err(_) => Box::new(std::io::stderr()),
        },
        SerialOutput::Buffer(b) => Box::new(b.clone()),
        SerialOutput::Sink => Box::new(std::io::sink()),
    }
}

fn describe_stop(stop: VcpuStop) -> String {
    match stop {
        VcpuStop::Halted => "halted with interrupts off".into(),
        VcpuStop::Shutdown => "triple fault".into(),
        VcpuStop::SystemEvent(t) => format!("system event {t}"),
        VcpuStop::FailEntry(r) => format!("VM entry failed (hardware reason {r:#x})"),
        VcpuStop::InternalError(s) => format!("KVM internal error (suberror {s})"),
        VcpuStop::Unexpected(r) => format!("unexpected exit reason {r}"),
        VcpuStop::RunFailed(e) => {
            format!("KVM_RUN failed: {}", std::io::Error::from_raw_os_error(e))
        }
    }
}

/// Builds the VM described by `cfg`, runs it to the end and reports how it ended.
pub fn build_and_run(cfg: &VmConfig) -> Result<VmOutcome, VmmError> {
    let timeline = Timeline::start();
    cfg.validate()?;
    let filters = match cfg.seccomp {
        Seccomp::Off => None,
        Seccomp::Threads | Seccomp::Process => Some(Filters::build(cfg.seccomp_test_violation)?),
    };
    run_valid(cfg, timeline, filters.as_ref())
}

/// [`build_and_run`] of a config its caller has validated already: `isol run` validates before
/// it execs `isol-vmm` (so that a bad config is isol's error), and [`crate::launch::run`] builds
/// the same config from its description, with the seccomp `filters` it compiled for it (none:
/// off).
pub(crate) fn build_and_run_validated(
    cfg: &VmConfig,
    filters: Option<&Filters>,
) -> Result<VmOutcome, VmmError> {
    run_valid(cfg, Timeline::start(), filters)
}

fn run_valid(
    cfg: &VmConfig,
    timeline: Arc<Timeline>,
    filters: Option<&Filters>,
) -> Result<VmOutcome, VmmError> {
    // 3 (first). Guest memory, mapped but not yet registered: the kernel can go in
    // while KVM is set up.
    // A vhost-user backend (virtio-fs) maps guest RAM too: then it is a shared memfd.
    let mem = if cfg.shares.is_empty() {
        memory::create_guest_memory(cfg.memory_bytes())?
    } else {
        memory::create_guest_memory_shared(cfg.memory_bytes())?
    };

    // Fresh guest RAM must be zeroed by the host when it is first touched: most of the
    // setup's time where that is slow (nested or emulated hosts; docs/vmm.md, "Boot time
    // and exits"), and a wait on the vCPU's path for each page the guest kernel takes for
    // itself. One thread faults in, from the top, the range the kernel loads into while
    // the loader copies it from the bottom (memory::prefault), then the rest of the boot
    // set a profile of an earlier boot lists, ahead of the guest; or, with no profile yet,
    // records this boot's at init start (boot_profile). Best effort throughout.
    let boot_set = BootSet::new(cfg, &mem);
    let kernel_range = loader::elf_load_range(&cfg.kernel);
    let (phase_tx, phase_rx) = std::sync::mpsc::channel();
    let phase_tx = boot_set.records().then_some(phase_tx);
    let (setup_tx, setup_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let prefault = std::thread::Builder::new()
            .name("isol-prefault".into())
            .spawn_scoped(s, || {
                // It runs while the guest boots.
                seccomp::enter(filters, ThreadKind::BootSet);
                if let Some(range) = &kernel_range {
                    memory::prefault(&mem, range.clone());
                }
                let entered = || timeline.first_vcpu_entry.get().is_some();
                boot_set.run(
                    &mem,
                    kernel_range.as_ref(),
                    setup_rx,
                    entered,
                    phase_rx,
                    || {
                        timeline.mark(SetupStep::BootSet);
                    },
                )
            });
        // Everything the VM holds, the phase sender included, is gone when this returns,
        // so the thread above ends too.
        let outcome = run_in(cfg, &timeline, &mem, setup_tx, phase_tx, filters);
        let report = prefault
            .ok()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        if cfg.trace_exits && report != BootSetReport::Off {
            eprintln!("isol: {report}");
        }
        outcome.map(|o| VmOutcome {
            boot_set: report,
            ..o
        })
    })
}

/// The rest of [`run_valid`], in guest memory `mem` (mapped, not registered). Says on
/// `setup_done` when the setup is over; the guest's boot phases go to `phases`, if given.
fn run_in(
    cfg: &VmConfig,
    timeline: &Arc<Timeline>,
    mem: &GuestMemoryMmap,
    setup_done: std::sync::mpsc::Sender<()>,
    phases: Option<std::sync::mpsc::Sender<Phase>>,
    filters: Option<&Filters>,
) -> Result<VmOutcome, VmmError> {
    let mem_size = cfg.memory_bytes();

    // 5, on its own thread. Copying the kernel faults in fresh guest RAM, which the host
    // must zero first: most of the setup's time where that is slow (nested or emulated
    // hosts; docs/vmm.md, "Boot time and exits"). It needs nothing from KVM, so it runs
    // beside steps 1, 2, 3 and 4.
    let (kvm, vm, devices, mut virtio, kernel) = std::thread::scope(|s| {
        let load = || {
            let k = loader::load_kernel(mem, &cfg.kernel, cfg.boot_protocol);
            timeline.mark(SetupStep::Kernel);
            if let Ok(k) = &k {
                tracing::debug!(kernel = %cfg.kernel.display(), entry = ?k.entry, "kernel loaded");
            }
            k
        };
        let loading = std::thread::Builder::new()
            .name("isol-kernel-load".into())
            .spawn_scoped(s, load);
        let prepared = (|| {
            // 1. KVM.
            let kvm = kvm_state::open_kvm()?;
            kvm_state::check_vcpus(&kvm, cfg.vcpus)?;

            // 2. VM with in-kernel irqchip and PIT.
            let vm = Vm::new(&kvm)?;
            timeline.mark(SetupStep::Vm);

            // 3. Guest memory, registered.
            memory::register_memory(vm.fd(), mem)?;
            timeline.mark(SetupStep::Memory);

            // 4. Devices.
            let out = TimestampingWriter::new(serial_writer(&cfg.serial_output), timeline.clone());
            let mut devices = device_manager::create_devices(Some(&vm), Box::new(out))?;
            // virtio (docs/devices.md): root disk and stdio console on the MMIO bus.
            let virtio =
                device_manager::attach_virtio_devices(&mut devices, Some(&vm), mem, cfg, filters)?;
            timeline.mark(SetupStep::Devices);
            tracing::debug!(
                stdio = ?cfg.stdio,
                disks = cfg.disks.len(),
                "devices attached (legacy and virtio-mmio)"
            );
            Ok::<_, VmmError>((kvm, vm, devices, virtio))
        })();
        // Without a thread (none could be started), the kernel loads here instead.
        let kernel = match loading {
            Ok(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            Err(_) => load(),
        };
        // Setup errors first: they come from the earlier steps of the recipe.
        let (kvm, vm, devices, virtio) = prepared?;
        Ok::<_, VmmError>((kvm, vm, devices, virtio, kernel?))
    })?;

    if let Some(tx) = phases {
        let mut port = devices.exit_port.lock().unwrap_or_else(|p| p.into_inner());
        port.notify_phases(tx);
    }
    if let Some(hook) = &cfg.workload_running {
        let hook = hook.0.clone();
        let mut port = devices.exit_port.lock().unwrap_or_else(|p| p.into_inner());
        port.call_at(Phase::WorkloadRunning, Box::new(move || hook()));
    }

    // The virtio devices' ioeventfds and batching zones, on a thread of their own while
    // the rest is set up and the guest boots (device_manager::LateIo).
    // No vCPU serves an MMIO exit before they are done (MmioOrder).
    let late_io = virtio.take_late_io();
    let mmio_order = Arc::new(MmioOrder::default());
    let register_late = || {
        for why in device_manager::register_late_io(vm.fd(), &late_io) {
            tracing::warn!("{why}; those accesses exit to the VMM instead");
        }
        timeline.mark(SetupStep::LateIo);
        mmio_order.late_io_done();
    };
    std::thread::scope(|s| {
        let late = std::thread::Builder::new()
            .name("isol-late-io".into())
            .spawn_scoped(s, move || {
                // It runs while the guest boots.
                seccomp::enter(filters, ThreadKind::LateIo);
                register_late()
            });
        // Without a thread (none could be started), they are made here.
        if late.is_err() {
            register_late();
        }

        // 6. Initramfs.
        let initrd = match initramfs::plan_initramfs(&cfg.rootfs, cfg.init.as_deref(), &cfg.spec)? {
            Some(mut image) => Some(loader::load_initrd(mem, &mut image, &kernel, mem_size)?),
            None => None,
        };
        timeline.mark(SetupStep::Initramfs);

        // 7. Command line.
        let cmdline = loader::build_cmdline(
            cfg.console,
            &[virtio.cmdline(), &cfg.extra_cmdline].concat(),
        )?;
        let cmdline_len = loader::load_cmdline(mem, &cmdline)?;

        // 8. Boot structures.
        match kernel.entry {
            EntryMode::Long64 { .. } => {
                let params = boot_params::build_boot_params(
                    kernel.setup_header,
                    cmdline_len,
                    initrd,
                    mem_size,
                )?;
                boot_params::write_boot_params(mem, &params)?;
                regs::write_identity_page_tables(mem)?;
            }
            EntryMode::Pvh { .. } => {
                boot_params::write_pvh_start_info(mem, initrd, mem_size)?;
            }
        }
        regs::write_gdt_idt(mem, kernel.entry)?;
        mptable::setup_mptable(mem, cfg.vcpus)?;

        // 9. vCPUs.
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(KvmError::Cpuid)?;
        let mut vcpus = Vec::with_capacity(usize::from(cfg.vcpus));
        for index in 0..cfg.vcpus {
            let v = Vcpu::new(
                vm.fd(),
                index,
                devices.pio.clone(),
                devices.mmio.clone(),
                timeline.clone(),
                devices.stop_flag.clone(),
                mmio_order.clone(),
            )?
            .with_pauser(virtio.pauser().cloned());
            v.configure(&supported, cfg.vcpus, (index == 0).then_some(kernel.entry))?;
            vcpus.push(v);
        }
        timeline.mark(SetupStep::Vcpus);
        tracing::debug!(
            vcpus = cfg.vcpus,
            memory_mib = cfg.memory_mib,
            "vCPUs configured; starting them"
        );
        // The boot set may come in now (boot_profile::BootSet::run).
        let _ = setup_done.send(());

        // 10. Run. A jailed VMM gives up its privileges first: every file is open and the
        // VM built (src/jail.rs).
        if let Some(hook) = &cfg.before_guest {
            (hook.0)().map_err(VmmError::Jail)?;
        }
        virtio.start(filters)?; // virtio: device thread
        let result = event_loop::run_vm(
            vcpus,
            &devices.reset_evt,
            Some(virtio.backend_lost()),
            devices.serial.clone(),
            cfg.forward_stdin && cfg.stdio == crate::config::GuestStdio::Serial, // virtio: console owns stdin
            cfg.timeout,
            filters,
            cfg.seccomp == Seccomp::Process,
            virtio.pauser().map(|p| &**p),
        )?;
        virtio.shutdown(); // virtio: drain console output, join the device threads
        // The boot-set recorder waits for init start no longer.
        (devices.exit_port.lock().unwrap_or_else(|p| p.into_inner())).stop_notifying();
        let end_time = Instant::now();

        let (exit_status, timings) = {
            let port = devices.exit_port.lock().unwrap_or_else(|p| p.into_inner());
            (port.exit_status(), timeline.finish(port.phases(), end_time))
        };
        tracing::debug!(end = ?result.end, guest_exit_status = ?exit_status, "VM exited");
        if cfg.trace_exits {
            eprint!(
                "{}",
                trace::report(&result.counts, &timings, &devices.pio, &devices.mmio)
            );
        }

        // The VM, its vCPU fds and the memory go away here, after every thread was joined.
        let outcome = |code: u8| VmOutcome {
            exit_code: i32::from(code),
            timings,
            exit_counts: result.counts.clone(),
            boot_set: BootSetReport::Off,
        };
        match (result.end, exit_status) {
            (VmEnd::Signal(sig), _) => Err(VmmError::Interrupted(sig)),
            // The workload had finished: the backend going is part of the VM's end.
            (VmEnd::BackendLost(_), Some(code)) => Ok(outcome(code)),
            (VmEnd::BackendLost(why), None) => Err(VmmError::BackendLost(why)),
            (VmEnd::Timeout(d), Some(_)) | (VmEnd::Timeout(d), None) => Err(VmmError::Timeout(d)),
            // The workload finished and the guest went down: whichever way it went down
            // (reset line, triple fault after it, a halt), the reported status stands.
            (VmEnd::Reset, Some(code)) => Ok(outcome(code)),
            (VmEnd::VcpuStopped(ev), Some(code))
                if matches!(
                    ev.stop,
                    VcpuStop::Shutdown | VcpuStop::Halted | VcpuStop::SystemEvent(_)
                ) =>
            {
                Ok(outcome(code))
            }
            // A whole initramfs's own init ends its VM by rebooting, as under Firecracker.
            (VmEnd::Reset, None) if matches!(cfg.rootfs, Rootfs::Initrd(_)) => Ok(outcome(0)),
            (VmEnd::Reset, None) => Err(VmmError::GuestRebooted),
            (VmEnd::VcpuStopped(ev), None) if ev.stop == VcpuStop::Shutdown => {
                Err(VmmError::TripleFault {
                    index: ev.index,
                    regs: ev.regs.map(Box::new),
                })
            }
            (VmEnd::VcpuStopped(ev), _) => Err(VmmError::VcpuStopped {
                index: ev.index,
                reason: describe_stop(ev.stop),
                regs: ev.regs.map(Box::new),
            }),
        }
    })
}
