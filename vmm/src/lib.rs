//! isol's virtual machine monitor: boots a Linux guest on /dev/kvm with one vCPU thread
//! per vCPU, a handful of legacy devices, and a guest init that runs one workload and
//! reports its exit status through an I/O port.
//!
//! The entry point is [`run`]; [`builder::build_and_run`] is the recipe, step by step.
//! See `docs/vmm.md` for the design, memory map and protocols.

pub mod arch;
pub mod builder;
pub mod config;
pub mod device_manager;
pub mod event_loop;
pub mod initramfs;
pub mod launch;
pub mod loader;
pub mod qemu_microvm;
pub mod rootfs_image;
pub mod test_images;
pub mod trace;
pub mod vstate;

use std::time::Duration;

pub use builder::VmOutcome;
pub use config::{
    BootProtocol, GuestStdio, Rootfs, RunSpec, SerialOutput, SharedBuffer, VmConfig,
    default_guest_init,
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
    /// The guest reset without reporting an exit status.
    #[error(
        "The guest kernel panicked or rebooted without reporting an exit code; rerun with --console to see the kernel log"
    )]
    GuestRebooted,
    /// A triple fault before any exit status.
    #[error(
        "vCPU {0} hit a triple fault (KVM shutdown exit) before the workload reported an exit code; rerun with --console to see where the guest died"
    )]
    TripleFault(u8),
    /// A vCPU stopped for another reason.
    #[error(
        "vCPU {index} stopped: {reason}; rerun with --console and --trace-exits to see where the guest died"
    )]
    VcpuStopped {
        /// vCPU index.
        index: u8,
        /// What happened.
        reason: String,
    },
    /// The timeout passed.
    #[error("The guest did not power off within {}s; raise the timeout or check that the workload ends", .0.as_secs_f64())]
    Timeout(Duration),
    /// SIGINT/SIGTERM.
    #[error("Interrupted by signal {0}; the VM was shut down")]
    Interrupted(i32),
}

impl VmmError {
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
            VmmError::TripleFault(1),
            VmmError::VcpuStopped {
                index: 0,
                reason: "x".into(),
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
        assert_eq!(VmmError::Interrupted(2).exit_code(), 130);
        assert!(
            VmmError::GuestRebooted
                .to_string()
                .contains("panicked or rebooted without reporting an exit code")
        );
    }
}
