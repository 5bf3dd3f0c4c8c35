//! What the kernel reads at entry: the Linux zero page (`struct boot_params`) for the
//! 64-bit boot protocol, or `hvm_start_info` with its memory map and module list for
//! PVH. Both carry the same memory map ([`layout::memory_map`]), command line and
//! initramfs.

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::start_info::hvm_start_info;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    self, CMDLINE_START, PVH_INFO_START, PVH_MEMMAP_MAX_ENTRIES, PVH_MEMMAP_START,
    PVH_MODLIST_START, ZERO_PAGE_START,
};

/// Errors writing boot parameters.
#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    /// The memory map does not fit the structure it goes in.
    #[error("The memory map has {0} entries, more than the boot structure holds; use less memory")]
    TooManyEntries(usize),
    /// Guest memory does not cover the structure.
    #[error("Cannot write the {what} at {addr:#x}: {source}; give the VM more memory")]
    Write {
        /// Which structure.
        what: &'static str,
        /// Where.
        addr: u64,
        /// Why.
        source: vm_memory::GuestMemoryError,
    },
}

/// `boot_flag` magic.
pub const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `header` magic, "HdrS".
pub const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader`: undefined/other boot loader.
pub const KERNEL_LOADER_OTHER: u8 = 0xff;
/// `kernel_alignment` for a vmlinux without a setup header.
pub const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
/// `hvm_start_info.magic`.
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// `loadflags`: the protected-mode kernel is loaded at 0x100000.
const LOADED_HIGH: u8 = 0x1;

/// An initramfs placed in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitrdPlacement {
    /// Guest physical address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Builds the zero page. `header` is the bzImage's setup header (None for a vmlinux);
/// `cmdline_len` excludes the NUL.
pub fn build_boot_params(
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<InitrdPlacement>,
    mem_size: u64,
) -> Result<boot_params, BootParamsError> {
    let mut params = boot_params::default();
    if let Some(h) = header {
        params.hdr = h;
    } else {
        params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
        params.hdr.header = KERNEL_HDR_MAGIC;
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.loadflags |= LOADED_HIGH;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(i) = initrd {
        params.hdr.ramdisk_image = i.addr as u32;
        params.hdr.ramdisk_size = i.size as u32;
    }
    let map = layout::memory_map(mem_size);
    if map.len() > params.e820_table.len() {
        return Err(BootParamsError::TooManyEntries(map.len()));
    }
    for (slot, e) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = map.len() as u8;
    Ok(params)
}

/// Writes the zero page at [`ZERO_PAGE_START`].
pub fn write_boot_params(
    mem: &GuestMemoryMmap,
    params: &boot_params,
) -> Result<(), BootParamsError> {
    mem.write_obj(*params, GuestAddress(ZERO_PAGE_START))
        .map_err(|source| BootParamsError::Write {
            what: "zero page",
            addr: ZERO_PAGE_START,
            source,
        })
}

fn put(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    b: &[u8],
) -> Result<(), BootParamsError> {
    mem.write_slice(b, GuestAddress(addr))
        .map_err(|source| BootParamsError::Write { what, addr, source })
}

/// Writes `hvm_start_info`, its memory map and (with an initramfs) its one-module list.
pub fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    initrd: Option<InitrdPlacement>,
    mem_size: u64,
) -> Result<hvm_start_info, BootParamsError> {
    let map = layout::memory_map(mem_size);
    if map.len() > PVH_MEMMAP_MAX_ENTRIES {
        return Err(BootParamsError::TooManyEntries(map.len()));
    }
    // hvm_memmap_table_entry: addr u64, size u64, type u32, reserved u32.
    let mut table = Vec::with_capacity(map.len() * 24);
    for e in &map {
        table.extend_from_slice(&e.addr.to_le_bytes());
        table.extend_from_slice(&e.size.to_le_bytes());
        table.extend_from_slice(&e.kind.to_le_bytes());
        table.extend_from_slice(&0u32.to_le_bytes());
    }
    put(mem, "PVH memory map", PVH_MEMMAP_START, &table)?;

    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC_VALUE,
        version: 1,
        cmdline_paddr: CMDLINE_START,
        memmap_paddr: PVH_MEMMAP_START,
        memmap_entries: map.len() as u32,
        ..Default::default()
    };
    if let Some(i) = initrd {
        // hvm_modlist_entry: paddr u64, size u64, cmdline_paddr u64, reserved u64.
        let mut m = Vec::with_capacity(32);
        m.extend_from_slice(&i.addr.to_le_bytes());
        m.extend_from_slice(&i.size.to_le_bytes());
        m.extend_from_slice(&[0; 16]);
        put(mem, "PVH module list", PVH_MODLIST_START, &m)?;
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST_START;
    }
    mem.write_obj(info, GuestAddress(PVH_INFO_START))
        .map_err(|source| BootParamsError::Write {
            what: "PVH start info",
            addr: PVH_INFO_START,
            source,
        })?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::layout::{E820_RAM, E820_RESERVED, HIGH_MEMORY_START};

    const MIB: u64 = 1 << 20;

    fn mem(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap()
    }

    #[test]
    fn zero_page_for_vmlinux() {
        let initrd = InitrdPlacement {
            addr: 0xf00_0000,
            size: 0x12345,
        };
        let p = build_boot_params(None, 42, Some(initrd), 256 * MIB).unwrap();
        let h = p.hdr;
        assert_eq!(
            (h.boot_flag, h.header, h.type_of_loader),
            (KERNEL_BOOT_FLAG_MAGIC, KERNEL_HDR_MAGIC, 0xff)
        );
        assert_eq!((h.cmd_line_ptr, h.cmdline_size), (CMDLINE_START as u32, 42));
        assert_eq!((h.ramdisk_image, h.ramdisk_size), (0xf00_0000, 0x12345));
        assert_eq!(p.e820_entries, 3);
        let e = p.e820_table;
        let (a, s, t) = (e[2].addr, e[2].size, e[2].r#type);
        assert_eq!((a, a + s, t), (HIGH_MEMORY_START, 256 * MIB, E820_RAM));
        let t1 = e[1].r#type;
        assert_eq!(t1, E820_RESERVED);
    }

    #[test]
    fn zero_page_keeps_the_bzimage_header() {
        let h = setup_header {
            version: 0x20f,
            setup_sects: 30,
            xloadflags: 0x3,
            boot_flag: KERNEL_BOOT_FLAG_MAGIC,
            header: KERNEL_HDR_MAGIC,
            ..Default::default()
        };
        let p = build_boot_params(Some(h), 10, None, 64 * MIB).unwrap();
        let h = p.hdr;
        assert_eq!((h.version, h.setup_sects, h.xloadflags), (0x20f, 30, 3));
        assert_eq!((h.ramdisk_image, h.ramdisk_size), (0, 0));
        assert_eq!(h.type_of_loader, KERNEL_LOADER_OTHER);
    }

    #[test]
    fn zero_page_lands_at_its_address() {
        let m = mem(64 * MIB);
        let p = build_boot_params(None, 1, None, 64 * MIB).unwrap();
        write_boot_params(&m, &p).unwrap();
        // boot_flag is at offset 0x1fe of the zero page.
        let flag: u16 = m.read_obj(GuestAddress(ZERO_PAGE_START + 0x1fe)).unwrap();
        assert_eq!(flag, KERNEL_BOOT_FLAG_MAGIC);
        let n: u8 = m.read_obj(GuestAddress(ZERO_PAGE_START + 0x1e8)).unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn pvh_start_info() {
        let m = mem(256 * MIB);
        let initrd = InitrdPlacement {
            addr: 0x800_0000,
            size: 4096,
        };
        write_pvh_start_info(&m, Some(initrd), 256 * MIB).unwrap();
        let info: hvm_start_info = m.read_obj(GuestAddress(PVH_INFO_START)).unwrap();
        assert_eq!((info.magic, info.version), (XEN_HVM_START_MAGIC_VALUE, 1));
        assert_eq!(
            (info.nr_modules, info.modlist_paddr),
            (1, PVH_MODLIST_START)
        );
        assert_eq!(
            (info.memmap_paddr, info.memmap_entries),
            (PVH_MEMMAP_START, 3)
        );
        assert_eq!(info.cmdline_paddr, CMDLINE_START);
        let mod_addr: u64 = m.read_obj(GuestAddress(PVH_MODLIST_START)).unwrap();
        let mod_size: u64 = m.read_obj(GuestAddress(PVH_MODLIST_START + 8)).unwrap();
        assert_eq!((mod_addr, mod_size), (0x800_0000, 4096));
        // Third memmap entry: high RAM.
        let base = PVH_MEMMAP_START + 2 * 24;
        let addr: u64 = m.read_obj(GuestAddress(base)).unwrap();
        let size: u64 = m.read_obj(GuestAddress(base + 8)).unwrap();
        let kind: u32 = m.read_obj(GuestAddress(base + 16)).unwrap();
        assert_eq!(
            (addr, addr + size, kind),
            (HIGH_MEMORY_START, 256 * MIB, E820_RAM)
        );
    }

    #[test]
    fn pvh_without_initrd_has_no_modules() {
        let m = mem(64 * MIB);
        let info = write_pvh_start_info(&m, None, 64 * MIB).unwrap();
        assert_eq!((info.nr_modules, info.modlist_paddr), (0, 0));
    }
}
