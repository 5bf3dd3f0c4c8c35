//! Guest RAM: anonymous mappings laid out by [`crate::arch::x86_64::layout`], handed to
//! KVM as one memory slot per region.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::layout;

/// Errors creating or registering guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// mmap failed.
    #[error("Cannot allocate {mib} MiB of guest memory: {source}; give the VM less memory")]
    Allocate {
        /// Size asked for.
        mib: u64,
        /// Why.
        source: vm_memory::mmap::FromRangesError,
    },
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("KVM refused guest memory slot {slot} at {addr:#x}: {source}; give the VM less memory")]
    Register {
        /// Slot number.
        slot: u32,
        /// Guest physical address.
        addr: u64,
        /// Why.
        source: kvm_ioctls::Error,
    },
}

/// Allocates `mem_size` bytes of guest RAM around the MMIO gap.
pub fn create_guest_memory(mem_size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    GuestMemoryMmap::from_ranges(&layout::arch_memory_regions(mem_size)).map_err(|source| {
        MemoryError::Allocate {
            mib: mem_size >> 20,
            source,
        }
    })
}

/// Registers every region of `mem` with the VM.
pub fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), MemoryError> {
    for (slot, region) in mem.iter().enumerate() {
        let slot = slot as u32;
        let region_desc = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the host range [as_ptr, as_ptr + len) is a live mapping owned by `mem`,
        // which the caller keeps alive for as long as the VM exists (the builder drops the
        // VM and vCPUs before the memory).
        unsafe { vm.set_user_memory_region(region_desc) }.map_err(|source| {
            MemoryError::Register {
                slot,
                addr: region.start_addr().raw_value(),
                source,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_follows_the_layout() {
        let m = create_guest_memory(64 << 20).unwrap();
        assert_eq!(m.num_regions(), 1);
        assert_eq!(m.last_addr().raw_value(), (64 << 20) - 1);
    }
}
