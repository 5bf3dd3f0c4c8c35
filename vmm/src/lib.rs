//! isol's virtual machine monitor: boots a Linux guest on /dev/kvm with one vCPU thread
//! per vCPU, a handful of legacy devices, and a guest init that runs one workload and
//! reports its exit status through an I/O port.
//!
//! The entry point is [`run`]; [`builder::build_and_run`] is the recipe, step by step.
//! See `docs/vmm.md` for the design, memory map and protocols.

pub mod arch;
pub mod builder;
pub mod config;
pub mod control;
pub mod device_manager;
pub mod event_loop;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod initramfs;
pub mod kconfig;
pub mod launch;
pub mod loader;
pub mod seccomp;
#[cfg(any(test, feature = "test-images"))]
pub mod test_images;
pub mod trace;
pub mod vstate;

use std::time::Duration;

pub use builder::VmOutcome;
pub use config::{
    BootProtocol, GuestStdio, Rootfs, RunSpec, Security, SerialOutput, SharedBuffer, SockFilter,
    VmConfig, default_guest_init,
};
pub use trace::{BootTimings, ExitCounts, ExitKind};
pub use vstate::kvm::{EMULATED_THRESHOLD, kvm_available, measure_guest_speed};

/// Everything that can go wrong running a VM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// /dev/kvm missing, inaccessible or lacking features.
    #[error(transparent)]
    Kvm(#[from] vstate::kvm::KvmError),
    /// VM creation.
    #[error(transparent)]
    Vm(#[from] vstate::vm::VmError),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] vstate::memory::MemoryError),
    /// Devices.
    #[error(transparent)]
    Devices(#[from] device_manager::DeviceError),
    /// Kernel, initramfs or command line loading.
    #[error(transparent)]
    Loader(#[from] loader::LoaderError),
    /// Initramfs construction.
    #[error(transparent)]
    Initramfs(#[from] initramfs::InitramfsError),
    /// Zero page / PVH start info.
    #[error(transparent)]
    BootParams(#[from] arch::x86_64::boot_params::BootParamsError),
    /// Page tables, GDT.
    #[error(transparent)]
    Regs(#[from] arch::x86_64::regs::RegsError),
    /// MP table.
    #[error(transparent)]
    Mptable(#[from] arch::x86_64::mptable::MptableError),
    /// vCPU setup.
    #[error(transparent)]
    Vcpu(#[from] vstate::vcpu::VcpuError),
    /// Event loop.
    #[error(transparent)]
    EventLoop(#[from] event_loop::EventLoopError),
    /// Seccomp filters.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// The guest reset without reporting an exit status.
    #[error(
        "The guest kernel panicked or rebooted without reporting an exit code; rerun with --console to see the kernel log"
    )]
    GuestRebooted,
    /// A triple fault before any exit status.
    #[error(
        "vCPU {index} hit a triple fault (KVM shutdown exit) before the workload reported an exit code; rerun with --console to see where the guest died"
    )]
    TripleFault {
        /// vCPU index.
        index: u8,
        /// Its registers right after the exit ([`VmmError::registers`]).
        regs: Option<Box<vstate::vcpu::CpuSnapshot>>,
    },
    /// A vCPU stopped for another reason.
    #[error(
        "vCPU {index} stopped: {reason}; rerun with --console and --trace-exits to see where the guest died"
    )]
    VcpuStopped {
        /// vCPU index.
        index: u8,
        /// What happened.
        reason: String,
        /// Its registers right after the exit, if they were read.
        regs: Option<Box<vstate::vcpu::CpuSnapshot>>,
    },
    /// The timeout passed.
    #[error("The guest did not power off within {}s; raise the timeout or check that the workload ends", .0.as_secs_f64())]
    Timeout(Duration),
    /// A device's backend went away mid-run (a virtiofsd that exited); the VM was stopped.
    #[error("{0}")]
    BackendLost(String),
    /// SIGINT/SIGTERM.
    #[error("Interrupted by signal {0}; the VM was shut down")]
    Interrupted(i32),
    /// The [`config::VmConfig::before_guest`] hook failed (the jail's privilege drop).
    #[error(
        "Cannot drop the VMM's privileges: {0}; run with ISOL_VMM_JAIL=off to debug without the jail"
    )]
    Jail(String),
}

impl VmmError {
    /// For a vCPU that died: one line with its registers right after the exit, to print
    /// after the error (which stays one line); `None` for other errors.
    pub fn registers(&self) -> Option<String> {
        match self {
            VmmError::TripleFault {
                index,
                regs: Some(r),
            }
            | VmmError::VcpuStopped {
                index,
                regs: Some(r),
                ..
            } => Some(format!("vCPU {index} registers after the exit: {r}")),
            _ => None,
        }
    }

    /// The exit status a CLI should use for this error: 128 + signal when interrupted,
    /// 124 on timeout (as `timeout(1)`), 125 otherwise (the runtime itself failed).
    pub fn exit_code(&self) -> i32 {
        match self {
            VmmError::Interrupted(sig) => 128 + sig,
            VmmError::Timeout(_) => 124,
            _ => 125,
        }
    }
}

/// Boots the VM described by `cfg`, runs its workload to completion and returns the
/// workload's exit status with the boot timeline and exit counts.
pub fn run(cfg: &VmConfig) -> Result<VmOutcome, VmmError> {
    builder::build_and_run(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_one_line_and_capitalized() {
        let errs = [
            VmmError::GuestRebooted,
            VmmError::TripleFault {
                index: 1,
                regs: None,
            },
            VmmError::VcpuStopped {
                index: 0,
                reason: "x".into(),
                regs: None,
            },
            VmmError::Timeout(Duration::from_millis(1500)),
            VmmError::Interrupted(2),
            VmmError::Kvm(vstate::kvm::KvmError::NoDevice),
        ];
        for e in errs {
            let m = e.to_string();
            assert!(!m.contains('\n'), "{m}");
            assert!(
                m.starts_with(char::is_uppercase) || m.starts_with("vCPU") || m.starts_with('/'),
                "{m}"
            );
        }
        assert_eq!(VmmError::Timeout(Duration::from_secs(2)).exit_code(), 124);
        assert_eq!(VmmError::GuestRebooted.registers(), None);
        assert_eq!(
            VmmError::TripleFault {
                index: 0,
                regs: None
            }
            .registers(),
            None
        );
    }

    #[test]
    fn a_dead_vcpu_s_registers_are_one_line_and_reset_values_are_named() {
        let guest = vstate::vcpu::CpuSnapshot {
            rip: 0xffff_ffff_8100_0000,
            rsp: 0xffff_c900_0000_3f00,
            rflags: 0x10046,
            cr0: 0x8005_0033,
            cr2: 0xdead_b000,
            cr3: 0x10_0000,
            cr4: 0x3706f0,
            efer: 0xd01,
            cs: 0x10,
            cs_base: 0,
            ss: 0x18,
            gdt: (0xffff_fe00_0000_1000, 0x7f),
            idt: (0xffff_fe00_0000_0000, 0xfff),
        };
        let e = VmmError::TripleFault {
            index: 1,
            regs: Some(Box::new(guest)),
        };
        let line = e.registers().unwrap();
        assert_eq!(
            line,
            "vCPU 1 registers after the exit: RIP 0xffffffff81000000 RSP 0xffffc90000003f00 \
             RFLAGS 0x10046 CR0 0x80050033 CR2 0xdeadb000 CR3 0x100000 CR4 0x3706f0 EFER 0xd01 \
             CS 0x10 (base 0x0) SS 0x18 GDT 0xfffffe0000001000/0x7f IDT 0xfffffe0000000000/0xfff"
        );
        assert!(
            !e.to_string().contains("RIP"),
            "the error itself stays short"
        );
        // What kvm_amd leaves after a shutdown exit: INIT's values, said to be so.
        let reset = vstate::vcpu::CpuSnapshot {
            rip: 0xfff0,
            cr0: 0x6000_0010,
            efer: 0,
            cs: 0xf000,
            cs_base: 0xffff_0000,
            ..guest
        };
        assert!(reset.is_reset_state() && !guest.is_reset_state());
        let e = VmmError::VcpuStopped {
            index: 0,
            reason: "x".into(),
            regs: Some(Box::new(reset)),
        };
        let line = e.registers().unwrap();
        assert!(
            !line.contains('\n') && line.contains("reset values"),
            "{line}"
        );
        assert_eq!(VmmError::Interrupted(2).exit_code(), 130);
        assert!(
            VmmError::GuestRebooted
                .to_string()
                .contains("panicked or rebooted without reporting an exit code")
        );
    }
}
