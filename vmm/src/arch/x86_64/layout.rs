//! Guest physical memory map of an isol microVM.
//!
//! ```text
//! 0x0000_0000 ┬ real-mode IVT / BDA (unused)
//! 0x0000_0500 │ GDT (4 entries)                 GDT_START
//! 0x0000_0520 │ IDT (empty, limit 0)            IDT_START
//! 0x0000_6000 │ PVH hvm_start_info              PVH_INFO_START
//! 0x0000_6040 │ PVH module list (initramfs)     PVH_MODLIST_START
//! 0x0000_6100 │ PVH memory map                  PVH_MEMMAP_START
//! 0x0000_7000 │ zero page (boot_params)         ZERO_PAGE_START
//! 0x0000_8ff0 │ boot stack top                  BOOT_STACK_POINTER
//! 0x0000_9000 │ PML4, 0xa000 PDPT, 0xb000 PD    PML4_START…
//! 0x0002_0000 │ kernel command line             CMDLINE_START
//! 0x0009_fc00 ┼ EBDA: MP table                  EBDA_START / MPTABLE_START  (reserved)
//! 0x000a_0000 ┼ VGA / BIOS hole (not RAM in e820, backed anyway)
//! 0x0010_0000 ┼ high memory: bzImage at 1 MiB, vmlinux at its p_paddr (16 MiB)
//!             │ … initramfs at the top of low memory, page aligned
//! 0xc000_0000 ┼ 32-bit MMIO gap (1 GiB): IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000,
//!             │ virtio-mmio devices from MMIO_START
//! 0x1_0000_0000 ┴ RAM above 4 GiB when memory > 3 GiB
//! ```

use vm_memory::GuestAddress;

/// GDT location.
pub const GDT_START: u64 = 0x500;
/// IDT location (we load an empty IDT; the kernel sets its own).
pub const IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`.
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (one entry: the initramfs).
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map.
pub const PVH_MEMMAP_START: u64 = 0x6100;
/// Room for PVH memory map entries (24 bytes each) before the zero page.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = ((ZERO_PAGE_START - PVH_MEMMAP_START) / 24) as usize;
/// Linux zero page (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the 64-bit entry.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Level-4 page table.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// Page directory (512 × 2 MiB = the first GiB, identity mapped).
pub const PDE_START: u64 = 0xb000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Longest command line, with its NUL (Linux x86's COMMAND_LINE_SIZE).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the Extended BIOS Data Area, where the MP table goes.
pub const EBDA_START: u64 = 0x9fc00;
/// MP floating pointer + configuration table.
pub const MPTABLE_START: u64 = EBDA_START;
/// End of conventional memory.
pub const EBDA_END: u64 = 0xa0000;
/// First byte above the BIOS hole.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO gap.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// Size of the 32-bit MMIO gap.
pub const MMIO_GAP_SIZE: u64 = 0x4000_0000;
/// End of the 32-bit MMIO gap (4 GiB).
pub const MMIO_GAP_END: u64 = MMIO_GAP_START + MMIO_GAP_SIZE;
/// First address handed to MMIO devices.
pub const MMIO_START: u64 = MMIO_GAP_START;
/// IOAPIC registers.
pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
/// Local APIC registers.
pub const APIC_ADDR: u64 = 0xfee0_0000;
/// Where KVM's TSS (3 pages) lives on Intel; inside the MMIO gap, below the IOAPIC.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Highest address the initramfs may end at when the kernel does not say
/// (boot protocol default for `initrd_addr_max`).
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// E820 entry types.
pub const E820_RAM: u32 = 1;
/// Reserved.
pub const E820_RESERVED: u32 = 2;

/// One entry of the memory map handed to the kernel (e820 or PVH memmap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryMapEntry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// Guest RAM regions (address, length) for `mem_size` bytes of RAM: one region below
/// the MMIO gap, a second above 4 GiB for whatever does not fit.
pub fn arch_memory_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    if mem_size <= MMIO_GAP_START {
        vec![(GuestAddress(0), mem_size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (
                GuestAddress(MMIO_GAP_END),
                (mem_size - MMIO_GAP_START) as usize,
            ),
        ]
    }
}

/// End (exclusive) of RAM below 4 GiB.
pub fn low_memory_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

/// The memory map the kernel sees: conventional memory up to the EBDA, the EBDA as
/// reserved (it holds the MP table), RAM from 1 MiB to the MMIO gap, RAM above 4 GiB.
pub fn memory_map(mem_size: u64) -> Vec<MemoryMapEntry> {
    let mut map = vec![
        MemoryMapEntry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemoryMapEntry {
            addr: EBDA_START,
            size: EBDA_END - EBDA_START,
            kind: E820_RESERVED,
        },
        MemoryMapEntry {
            addr: HIGH_MEMORY_START,
            size: low_memory_end(mem_size) - HIGH_MEMORY_START,
            kind: E820_RAM,
        },
    ];
    if mem_size > MMIO_GAP_START {
        map.push(MemoryMapEntry {
            addr: MMIO_GAP_END,
            size: mem_size - MMIO_GAP_START,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_memory_is_one_region() {
        let r = arch_memory_regions(256 * MIB);
        assert_eq!(r, vec![(GuestAddress(0), (256 * MIB) as usize)]);
        let r = arch_memory_regions(3 * GIB);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn large_memory_skips_the_mmio_gap() {
        let r = arch_memory_regions(5 * GIB);
        assert_eq!(
            r,
            vec![
                (GuestAddress(0), (3 * GIB) as usize),
                (GuestAddress(4 * GIB), (2 * GIB) as usize)
            ]
        );
        let total: usize = r.iter().map(|x| x.1).sum();
        assert_eq!(total as u64, 5 * GIB);
    }

    #[test]
    fn e820_for_256m() {
        let m = memory_map(256 * MIB);
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].addr, m[0].size, m[0].kind), (0, 0x9fc00, E820_RAM));
        assert_eq!(m[1].kind, E820_RESERVED);
        assert_eq!(m[1].addr + m[1].size, 0xa0000);
        assert_eq!(
            (m[2].addr, m[2].addr + m[2].size),
            (HIGH_MEMORY_START, 256 * MIB)
        );
    }

    #[test]
    fn e820_entries_are_sorted_disjoint_and_avoid_the_gap() {
        for mem in [32 * MIB, 3 * GIB, 3 * GIB + MIB, 8 * GIB] {
            let m = memory_map(mem);
            for w in m.windows(2) {
                assert!(w[0].addr + w[0].size <= w[1].addr, "{mem:#x}: {w:?}");
            }
            for e in m.iter().filter(|e| e.kind == E820_RAM) {
                let end = e.addr + e.size;
                assert!(end <= MMIO_GAP_START || e.addr >= MMIO_GAP_END, "{e:?}");
            }
            let ram: u64 = m
                .iter()
                .filter(|e| e.kind == E820_RAM)
                .map(|e| e.size)
                .sum();
            // Everything but the EBDA and the 640K-1M hole is RAM.
            assert_eq!(ram, mem - (HIGH_MEMORY_START - EBDA_START));
        }
    }

    #[test]
    fn fixed_structures_do_not_overlap() {
        let mut spans = [
            (GDT_START, 4 * 8),
            (IDT_START, 8),
            (PVH_INFO_START, 0x40),
            (PVH_MODLIST_START, 0x20),
            (PVH_MEMMAP_START, PVH_MEMMAP_MAX_ENTRIES as u64 * 24),
            (ZERO_PAGE_START, 0x1000),
            (PML4_START, 0x1000),
            (PDPTE_START, 0x1000),
            (PDE_START, 0x1000),
            (CMDLINE_START, CMDLINE_MAX_SIZE as u64),
            (MPTABLE_START, EBDA_END - EBDA_START),
        ];
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "{w:x?}");
        }
        const {
            assert!(
                BOOT_STACK_POINTER > ZERO_PAGE_START + 0x1000 && BOOT_STACK_POINTER < PML4_START
            )
        };
        assert!(spans.last().unwrap().0 + spans.last().unwrap().1 <= HIGH_MEMORY_START);
    }
}
