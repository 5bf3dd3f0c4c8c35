//! The recipe: everything needed to boot a microVM, in order, in one function.
//!
//! 1. KVM: open /dev/kvm, check capabilities and the vCPU limit.
//! 2. VM: create it, KVM's TSS area, in-kernel irqchip (PIC, IOAPIC, LAPICs), PIT.
//! 3. Guest memory: anonymous mappings around the 32-bit MMIO gap, registered with KVM.
//! 4. Devices: serial (irqfd GSI 4), i8042, CMOS, POST/IO-delay sinks, exit port.
//! 5. Kernel: ELF (64-bit or PVH entry) or bzImage, via linux-loader.
//! 6. Initramfs: rootfs + /init + /isol/spec, placed high in low memory.
//! 7. Command line.
//! 8. Boot structures: zero page with e820 (64-bit) or hvm_start_info with memmap
//!    (PVH); identity page tables; GDT and empty IDT; MP table.
//! 9. vCPUs: CPUID (filtered), MSRs, FPU, LAPIC LINT0/LINT1; registers on the BSP.
//! 10. Start the vCPU threads and run the event loop until the VM ends; stop and join
//!     every thread; turn the ending into an exit code or an error.

use std::io::Write;
use std::time::Instant;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;

use crate::arch::x86_64::regs::{self, EntryMode};
use crate::arch::x86_64::{boot_params, mptable};
use crate::config::{SerialOutput, VmConfig};
use crate::event_loop::{self, VmEnd};
use crate::trace::{self, BootTimings, ExitCounts, Timeline, TimestampingWriter};
use crate::vstate::kvm::{self as kvm_state, KvmError};
use crate::vstate::memory;
use crate::vstate::vcpu::{Vcpu, VcpuStop};
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
}

fn serial_writer(out: &SerialOutput) -> Box<dyn Write + Send> {
    match out {
        SerialOutput::Stdout => Box::new(std::io::stdout()),
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
    let mem_size = cfg.memory_bytes();

    // 1. KVM.
    let kvm = kvm_state::open_kvm()?;
    kvm_state::check_vcpus(&kvm, cfg.vcpus)?;

    // 2. VM with in-kernel irqchip and PIT.
    let vm = Vm::new(&kvm)?;

    // 3. Guest memory.
    let mem = memory::create_guest_memory(mem_size)?;
    memory::register_memory(vm.fd(), &mem)?;

    // 4. Devices.
    let out = TimestampingWriter::new(serial_writer(&cfg.serial_output), timeline.clone());
    let devices = device_manager::create_devices(Some(&vm), Box::new(out))?;

    // 5. Kernel.
    let kernel = loader::load_kernel(&mem, &cfg.kernel, cfg.boot_protocol)?;

    // 6. Initramfs.
    let initrd = match initramfs::build_initramfs(&cfg.rootfs, cfg.init.as_deref(), &cfg.spec)? {
        Some(image) => Some(loader::load_initrd(&mem, &image, &kernel, mem_size)?),
        None => None,
    };

    // 7. Command line.
    let cmdline = loader::build_cmdline(cfg.console, &cfg.extra_cmdline)?;
    let cmdline_len = loader::load_cmdline(&mem, &cmdline)?;

    // 8. Boot structures.
    match kernel.entry {
        EntryMode::Long64 { .. } => {
            let params =
                boot_params::build_boot_params(kernel.setup_header, cmdline_len, initrd, mem_size)?;
            boot_params::write_boot_params(&mem, &params)?;
            regs::write_identity_page_tables(&mem)?;
        }
        EntryMode::Pvh { .. } => {
            boot_params::write_pvh_start_info(&mem, initrd, mem_size)?;
        }
    }
    regs::write_gdt_idt(&mem, kernel.entry)?;
    mptable::setup_mptable(&mem, cfg.vcpus)?;

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
        )?;
        v.configure(&supported, cfg.vcpus, (index == 0).then_some(kernel.entry))?;
        vcpus.push(v);
    }

    // 10. Run.
    let result = event_loop::run_vm(
        vcpus,
        &devices.reset_evt,
        devices.serial.clone(),
        cfg.forward_stdin,
        cfg.timeout,
    )?;
    let end_time = Instant::now();

    let (exit_status, timings) = {
        let port = devices.exit_port.lock().unwrap_or_else(|p| p.into_inner());
        (port.exit_status(), timeline.finish(port.phases(), end_time))
    };
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
    };
    match (result.end, exit_status) {
        (VmEnd::Signal(sig), _) => Err(VmmError::Interrupted(sig)),
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
        (VmEnd::Reset, None) => Err(VmmError::GuestRebooted),
        (VmEnd::VcpuStopped(ev), None) if ev.stop == VcpuStop::Shutdown => {
            Err(VmmError::TripleFault(ev.index))
        }
        (VmEnd::VcpuStopped(ev), _) => Err(VmmError::VcpuStopped {
            index: ev.index,
            reason: describe_stop(ev.stop),
        }),
    }
}
