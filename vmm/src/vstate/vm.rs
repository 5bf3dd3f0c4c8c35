//! The VM: KVM's TSS area, the in-kernel irqchip (PIC + IOAPIC + LAPICs) and PIT, and
//! irqfd registration.

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Kvm, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::KVM_TSS_ADDRESS;

/// Errors creating or configuring the VM.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// KVM_CREATE_VM failed.
    #[error("KVM cannot create a VM: {0}; check the host's KVM module and free memory")]
    Create(kvm_ioctls::Error),
    /// KVM_SET_TSS_ADDR failed.
    #[error("KVM cannot place its TSS at {KVM_TSS_ADDRESS:#x}: {0}; the host's KVM may be too old")]
    TssAddress(kvm_ioctls::Error),
    /// KVM_CREATE_IRQCHIP failed.
    #[error("KVM cannot create the in-kernel irqchip: {0}; the host's KVM lacks irqchip support")]
    IrqChip(kvm_ioctls::Error),
    /// KVM_CREATE_PIT2 failed.
    #[error("KVM cannot create the in-kernel PIT: {0}; the host's KVM lacks PIT support")]
    Pit(kvm_ioctls::Error),
    /// KVM_IRQFD failed.
    #[error(
        "KVM cannot route an eventfd to GSI {gsi}: {source}; the host's KVM lacks irqfd support"
    )]
    Irqfd {
        /// GSI.
        gsi: u32,
        /// Why.
        source: kvm_ioctls::Error,
    },
}

/// A VM with its interrupt controllers in place.
#[derive(Debug)]
pub struct Vm {
    fd: VmFd,
}

impl Vm {
    /// Creates the VM, KVM's TSS area, the irqchip and the PIT, in that order (the TSS
    /// must precede the irqchip on Intel; the irqchip must precede the vCPUs).
    pub fn new(kvm: &Kvm) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(VmError::Create)?;
        fd.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(VmError::TssAddress)?;
        fd.create_irq_chip().map_err(VmError::IrqChip)?;
        // The dummy speaker makes KVM answer port 0x61 too, so Linux's PIT calibration
        // and speaker probes never reach userspace.
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(VmError::Pit)?;
        Ok(Self { fd })
    }

    /// The KVM VM fd.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Makes writes to `evt` raise GSI `gsi`.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|source| VmError::Irqfd { gsi, source })
    }
}
