//! KVM state: the /dev/kvm handle, the VM and its memory, the vCPUs.

pub mod boot_profile;
pub mod kvm;
pub mod memory;
pub mod pause;
pub mod vcpu;
pub mod vm;
