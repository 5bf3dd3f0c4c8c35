//! Guest RAM: anonymous mappings laid out by [`crate::arch::x86_64::layout`], handed to
//! KVM as one memory slot per region.
//!
//! Each region is mapped `MAP_NORESERVE` (nothing is touched or reserved up front) at a
//! host address aligned to 2 MiB, like the guest-physical start of every region, so a
//! transparent huge page on the host can back a 2 MiB guest page and KVM can map it
//! with one nested page-table entry. A plain `mmap` is only 4 KiB-aligned (Linux < 6.7),
//! and then every 4 KiB the guest touches costs a nested page fault; QEMU aligns its RAM
//! the same way.
//!
//! With a vhost-user device (virtio-fs) another process must map the same RAM: then it is
//! one memfd, each region mapped `MAP_SHARED` from it at the region's offset, at the same
//! aligned addresses ([`create_guest_memory_shared`]); the regions carry the fd and offset
//! (`FileOffset`) that the device hands to the backend. Only then: shared memory is backed
//! by shmem, which gets no transparent huge pages under Debian's default
//! (`shmem_enabled=never`), so an anonymous mapping stays the default.

use std::ops::Deref;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Address, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

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
        source: std::io::Error,
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

/// Host alignment of each region (the x86 large-page size).
pub const HOST_ALIGN: usize = 2 << 20;

/// The inaccessible page kept right below each region (see [`AlignedMapping`]).
const GUARD: usize = 4096;

/// One anonymous mapping of `len` bytes at a [`HOST_ALIGN`]ed address, unmapped on drop.
///
/// One `PROT_NONE` page is kept right below it. Without it, the next anonymous mapping
/// the kernel places (top-down, right below the region) ends on a 2 MiB boundary; a
/// thread stack (glibc: 2 MiB + a guard page at the bottom, Rust's default size) then
/// gets exactly one 2 MiB-aligned range and, under the THP policy `always`, is backed by
/// a transparent huge page at its first touch: 2 MiB resident for a stack that uses
/// a few KiB (seen as 2 MiB of VMM overhead in the lab's start-up benchmark).
#[derive(Debug)]
struct AlignedMapping {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; the pointer is only used to unmap it.
unsafe impl Send for AlignedMapping {}
// SAFETY: as above; `&AlignedMapping` gives no access to the memory.
unsafe impl Sync for AlignedMapping {}

impl AlignedMapping {
    fn new(len: usize) -> std::io::Result<Self> {
        let reserve = len
            .checked_add(HOST_ALIGN + GUARD)
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: a fresh anonymous private mapping at an address the kernel picks;
        // it aliases nothing.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let start = base as usize;
        let aligned = (start + GUARD).next_multiple_of(HOST_ALIGN);
        let head = aligned - GUARD - start;
        let tail = reserve - head - GUARD - len;
        if head > 0 {
            // SAFETY: [start, aligned - GUARD) is the unused head of the mapping made
            // just above; nothing refers to it.
            unsafe { libc::munmap(base, head) };
        }
        if tail > 0 {
            // SAFETY: [aligned + len, start + reserve) is its unused tail, likewise.
            unsafe { libc::munmap((aligned + len) as *mut libc::c_void, tail) };
        }
        // SAFETY: [aligned - GUARD, aligned) is part of the mapping made above and not
        // handed out to anyone.
        if unsafe { libc::mprotect((aligned - GUARD) as *mut libc::c_void, GUARD, 0) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: the whole remaining mapping is ours and unused.
            unsafe { libc::munmap((aligned - GUARD) as *mut libc::c_void, GUARD + len) };
            return Err(e);
        }
        let addr = aligned as *mut u8;
        // No MADV_HUGEPAGE: with the common `defrag=madvise` policy it makes faults
        // compact memory synchronously (multi-second stalls seen in the lab). Where THP
        // is `always`, the alignment is enough.
        Ok(Self { addr, len })
    }
}

impl Drop for AlignedMapping {
    fn drop(&mut self) {
        let guard = (self.addr as usize - GUARD) as *mut libc::c_void;
        // SAFETY: we own [addr - GUARD, addr + len); `GuestRam` drops its
        // `GuestMemoryMmap` (the only view of it) before the mappings.
        unsafe { libc::munmap(guard, GUARD + self.len) };
    }
}

/// Guest RAM: vm-memory's view of it, and the mappings behind it.
///
/// Dereferences to the [`GuestMemoryMmap`] every loader and device uses. Its regions do
/// not own their mappings (vm-memory cannot map at an aligned address); `GuestRam` does,
/// and unmaps them when dropped, so clones of the `GuestMemoryMmap` (devices) must not
/// outlive it: the builder drops devices and vCPUs first.
#[derive(Debug)]
pub struct GuestRam {
    // Field order is drop order: the view goes before the mappings.
    mem: GuestMemoryMmap,
    _maps: Vec<AlignedMapping>,
}

impl Deref for GuestRam {
    type Target = GuestMemoryMmap;

    fn deref(&self) -> &GuestMemoryMmap {
        &self.mem
    }
}

/// Allocates `mem_size` bytes of guest RAM around the MMIO gap.
pub fn create_guest_memory(mem_size: u64) -> Result<GuestRam, MemoryError> {
    create(mem_size, false)
}

/// As [`create_guest_memory`], but the RAM is one memfd that another process can map
/// (a vhost-user backend): each region carries the fd and its offset in it.
pub fn create_guest_memory_shared(mem_size: u64) -> Result<GuestRam, MemoryError> {
    create(mem_size, true)
}

/// A close-on-exec memfd of `len` bytes (sparse: nothing is allocated until touched).
fn memfd(len: u64) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: a NUL-terminated name and flags; the fd returned is fresh and ours.
    let fd = unsafe { libc::memfd_create(c"isol-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.set_len(len)?;
    Ok(f)
}

fn create(mem_size: u64, shared: bool) -> Result<GuestRam, MemoryError> {
    let alloc_err = |source| MemoryError::Allocate {
        mib: mem_size >> 20,
        source,
    };
    let file = if shared {
        Some(std::sync::Arc::new(memfd(mem_size).map_err(alloc_err)?))
    } else {
        None
    };
    let mut offset = 0u64;
    let mut maps = Vec::new();
    let mut regions = Vec::new();
    for (gpa, len) in layout::arch_memory_regions(mem_size) {
        let map = AlignedMapping::new(len).map_err(alloc_err)?;
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        let mut builder = MmapRegionBuilder::new(len);
        if let Some(f) = &file {
            use std::os::fd::AsRawFd;
            flags = libc::MAP_SHARED | libc::MAP_NORESERVE;
            // SAFETY: MAP_FIXED over [map.addr, map.addr + len), the anonymous mapping
            // made just above and owned by `map` (nothing else refers to it); the file
            // holds `mem_size` bytes, of which [offset, offset + len) belong to this region.
            let p = unsafe {
                libc::mmap(
                    map.addr.cast(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    flags | libc::MAP_FIXED,
                    f.as_raw_fd(),
                    offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(alloc_err(std::io::Error::last_os_error()));
            }
            builder = builder.with_file_offset(FileOffset::from_arc(f.clone(), offset));
            offset += len as u64;
        }
        // SAFETY: [map.addr, map.addr + len) is a live read/write mapping owned by
        // `maps`, which outlives the region (see `GuestRam`).
        let region = unsafe { builder.with_raw_mmap_pointer(map.addr) }
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags)
            .build()
            .map_err(|e| alloc_err(std::io::Error::other(e.to_string())))?;
        maps.push(map);
        let region = GuestRegionMmap::new(region, gpa)
            .ok_or_else(|| alloc_err(std::io::Error::other("region wraps around")))?;
        regions.push(region);
    }
    let mem = GuestMemoryMmap::from_regions(regions)
        .map_err(|e| alloc_err(std::io::Error::other(e.to_string())))?;
    Ok(GuestRam { mem, _maps: maps })
}

/// Faults in the guest RAM of `range` (guest-physical, clamped to the region it starts
/// in), 2 MiB at a time from the top down, with `MADV_POPULATE_WRITE`: the host's zeroing
/// of fresh (huge) pages, done on this thread while another one copies the kernel in
/// from the bottom up, which then finds them present. Only what the copy and the guest's
/// own first writes (bss) would fault in anyway, so the resident size is the same.
/// Best effort: stops at the first error (kernels before 5.14 lack the advice).
pub fn prefault(mem: &GuestMemoryMmap, range: std::ops::Range<u64>) {
    const CHUNK: u64 = 2 << 20;
    let Some(region) = mem.find_region(GuestAddress(range.start)) else {
        return;
    };
    let end = range
        .end
        .min(region.start_addr().raw_value() + region.len());
    let mut top = end;
    while top > range.start {
        let bottom = (top - 1) / CHUNK * CHUNK;
        let bottom = bottom.max(range.start);
        let Ok(host) = mem.get_host_address(GuestAddress(bottom)) else {
            return;
        };
        // madvise wants a page-aligned start.
        let page_off = host as usize % 4096;
        let start = (host as usize - page_off) as *mut libc::c_void;
        // SAFETY: [start, host + (top - bottom)) lies inside the guest RAM mapping of
        // `region` (both ends are in it, checked above); populating only faults its
        // pages in, changing no byte.
        let r = unsafe {
            libc::madvise(
                start,
                (top - bottom) as usize + page_off,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if r != 0 {
            return;
        }
        top = bottom;
    }
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
    use vm_memory::GuestAddress;

    #[test]
    fn memory_above_4g_is_a_second_aligned_region() {
        // 4 GiB of address space, nothing touched (MAP_NORESERVE).
        let m = create_guest_memory(4 << 30).unwrap();
        assert_eq!(m.num_regions(), 2);
        for r in m.iter() {
            assert_eq!(r.as_ptr() as usize % HOST_ALIGN, 0);
        }
    }

    /// Resident 4 KiB pages of `len` bytes at `addr` (mincore).
    fn resident_pages(addr: *mut u8, len: usize) -> usize {
        let mut vec = vec![0u8; len.div_ceil(4096)];
        // SAFETY: `addr` is page-aligned inside a live mapping of at least `len` bytes,
        // and `vec` has one byte per page.
        let r = unsafe { libc::mincore(addr.cast(), len, vec.as_mut_ptr()) };
        assert_eq!(r, 0);
        vec.iter().filter(|b| **b & 1 == 1).count()
    }

    #[test]
    fn prefault_makes_the_range_resident_and_nothing_else() {
        let ram = create_guest_memory(64 << 20).unwrap();
        let base = ram.get_host_address(GuestAddress(0)).unwrap();
        assert_eq!(resident_pages(base, 64 << 20), 0);
        // An unaligned range inside RAM: its pages (rounded out to pages) and, with THP on
        // the host, at most the 2 MiB pages around it.
        prefault(&ram, 0x100_0000 + 100..0x140_0000 - 100);
        let inside = resident_pages(
            // SAFETY: 16 MiB is inside the 64 MiB mapping.
            unsafe { base.add(0x100_0000) },
            0x40_0000,
        );
        assert_eq!(inside, 0x40_0000 / 4096);
        let all = resident_pages(base, 64 << 20);
        assert!(all <= inside + 2 * 512, "{all} pages resident");
        // Past the end of RAM it stops at the end, and nothing breaks.
        prefault(&ram, (63 << 20)..(80 << 20));
        assert_eq!(
            // SAFETY: the last MiB of the mapping.
            resident_pages(unsafe { base.add(63 << 20) }, 1 << 20),
            256
        );
    }

    #[test]
    fn memory_follows_the_layout() {
        let m = create_guest_memory(64 << 20).unwrap();
        assert_eq!(m.num_regions(), 1);
        assert_eq!(m.last_addr().raw_value(), (64 << 20) - 1);
        for r in m.iter() {
            assert_eq!(
                r.as_ptr() as usize % HOST_ALIGN,
                0,
                "host address 2 MiB-aligned"
            );
        }
        // Usable at both ends.
        use vm_memory::Bytes;
        m.write_obj(0xabu8, GuestAddress(0)).unwrap();
        // Right below: the inaccessible guard page, so no other mapping ends on the
        // region's 2 MiB boundary.
        let below = m.iter().next().unwrap().as_ptr() as usize;
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let guard = maps
            .lines()
            .find(|l| {
                l.split_once('-')
                    .and_then(|(_, rest)| rest.split_once(' '))
                    .is_some_and(|(end, _)| usize::from_str_radix(end, 16) == Ok(below))
            })
            .expect("a mapping ends where guest RAM starts");
        let (range, rest) = guard.split_once(' ').unwrap();
        assert!(rest.starts_with("---p"), "{guard}");
        let start = usize::from_str_radix(range.split_once('-').unwrap().0, 16).unwrap();
        assert_eq!(below - start, GUARD, "{guard}");
        m.write_obj(0xcdu8, GuestAddress((64 << 20) - 1)).unwrap();
        assert_eq!(
            m.read_obj::<u8>(GuestAddress((64 << 20) - 1)).unwrap(),
            0xcd
        );
    }

    /// What a vhost-user backend maps: the memfd at each region's offset shows exactly the
    /// guest's bytes (the two regions around the MMIO gap laid end to end in the file).
    #[test]
    fn shared_memory_is_one_memfd_seen_by_a_second_mapping() {
        use std::os::unix::fs::FileExt;
        use vm_memory::Bytes;
        let m = create_guest_memory_shared(4 << 30).unwrap();
        assert_eq!(m.num_regions(), 2);
        let mut expect_offset = 0;
        for (i, r) in m.iter().enumerate() {
            assert_eq!(r.as_ptr() as usize % HOST_ALIGN, 0);
            let fo = r.file_offset().expect("a file-backed region");
            assert_eq!(fo.start(), expect_offset);
            expect_offset += r.len();
            let gpa = r.start_addr().unchecked_add(r.len() - 8);
            m.write_obj(0x1122_3344_5566_7700u64 + i as u64, gpa)
                .unwrap();
            let mut b = [0u8; 8];
            fo.file()
                .read_exact_at(&mut b, fo.start() + r.len() - 8)
                .unwrap();
            assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7700 + i as u64);
            // And the other way: a write through the file is in guest memory.
            fo.file().write_all_at(&[0xab], fo.start()).unwrap();
            assert_eq!(m.read_obj::<u8>(r.start_addr()).unwrap(), 0xab);
        }
        assert_eq!(expect_offset, 4 << 30);
        // Anonymous memory has no file to share.
        let anon = create_guest_memory(64 << 20).unwrap();
        assert!(anon.iter().all(|r| r.file_offset().is_none()));
    }
}
