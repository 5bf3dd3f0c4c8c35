//! Initial vCPU state: general registers, segment/control registers, FPU, the identity
//! page tables and GDT/IDT in guest memory, and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_regs, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{self, kvm_segment_from_gdt};
use super::layout::{BOOT_STACK_POINTER, GDT_START, IDT_START, PDE_START, PDPTE_START, PML4_START};

/// Errors writing boot structures to guest memory.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// Guest memory does not cover a fixed low-memory structure.
    #[error(
        "Cannot write the {what} at {addr:#x} into guest memory: {source}; give the VM more memory"
    )]
    Write {
        /// Which structure.
        what: &'static str,
        /// Where.
        addr: u64,
        /// Why.
        source: vm_memory::GuestMemoryError,
    },
}

/// How the bootstrap processor enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// Linux 64-bit boot protocol: long mode, paging on (identity map of 1 GiB),
    /// `rsi` = zero page.
    Long64 {
        /// 64-bit entry point.
        entry: u64,
        /// Address of `struct boot_params`.
        zero_page: u64,
    },
    /// PVH: 32-bit protected mode, paging off, `ebx` = `hvm_start_info`.
    Pvh {
        /// The ELF note's entry point.
        entry: u64,
        /// Address of `hvm_start_info`.
        start_info: u64,
    },
}

const X86_CR0_PE: u64 = 0x1;
const X86_CR0_ET: u64 = 0x10;
const X86_CR0_PG: u64 = 0x8000_0000;
const X86_CR4_PAE: u64 = 0x20;
const EFER_LME: u64 = 0x100;
const EFER_LMA: u64 = 0x400;

/// Page-table entry bits: present, writable, page size (2 MiB).
const PTE_PRESENT_RW: u64 = 0x3;
const PDE_PS: u64 = 0x80;

/// FPU state Linux expects at entry: x87 control word and MXCSR at their reset values.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

/// General registers at entry.
pub fn boot_regs(mode: EntryMode) -> kvm_regs {
    match mode {
        EntryMode::Long64 { entry, zero_page } => kvm_regs {
            rflags: 0x2,
            rip: entry,
            rsp: BOOT_STACK_POINTER,
            rbp: BOOT_STACK_POINTER,
            rsi: zero_page,
            ..Default::default()
        },
        EntryMode::Pvh { entry, start_info } => kvm_regs {
            rflags: 0x2,
            rip: entry,
            rbx: start_info,
            ..Default::default()
        },
    }
}

/// Fills segment and control registers for `mode`, starting from what KVM reported
/// (so fields we don't own, like the APIC base, keep their values).
pub fn set_boot_sregs(sregs: &mut kvm_sregs, mode: EntryMode) {
    let gdt = match mode {
        EntryMode::Long64 { .. } => gdt::gdt_64bit(),
        EntryMode::Pvh { .. } => gdt::gdt_32bit(),
    };
    let code = kvm_segment_from_gdt(gdt[1], 1);
    let data = kvm_segment_from_gdt(gdt[2], 2);
    let tss = kvm_segment_from_gdt(gdt[3], 3);

    sregs.gdt.base = GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = IDT_START;
    sregs.idt.limit = 0;

    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match mode {
        EntryMode::Long64 { .. } => {
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG | X86_CR0_ET;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh { .. } => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
}

fn write<T: vm_memory::ByteValued>(
    mem: &GuestMemoryMmap,
    what: &'static str,
    addr: u64,
    val: T,
) -> Result<(), RegsError> {
    mem.write_obj(val, GuestAddress(addr))
        .map_err(|source| RegsError::Write { what, addr, source })
}

/// Writes the GDT for `mode` and an empty IDT.
pub fn write_gdt_idt(mem: &GuestMemoryMmap, mode: EntryMode) -> Result<(), RegsError> {
    let gdt = match mode {
        EntryMode::Long64 { .. } => gdt::gdt_64bit(),
        EntryMode::Pvh { .. } => gdt::gdt_32bit(),
    };
    for (i, e) in gdt.iter().enumerate() {
        write(mem, "GDT", GDT_START + 8 * i as u64, *e)?;
    }
    write(mem, "IDT", IDT_START, 0u64)
}

/// Writes page tables identity-mapping the first 1 GiB with 2 MiB pages.
pub fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    write(mem, "PML4", PML4_START, PDPTE_START | PTE_PRESENT_RW)?;
    write(mem, "PDPT", PDPTE_START, PDE_START | PTE_PRESENT_RW)?;
    for i in 0..512u64 {
        write(
            mem,
            "page directory",
            PDE_START + i * 8,
            (i << 21) | PDE_PS | PTE_PRESENT_RW,
        )?;
    }
    Ok(())
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn lapic_reg(l: &kvm_lapic_state, off: usize) -> u32 {
    let b = &l.regs[off..off + 4];
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

fn set_lapic_reg(l: &mut kvm_lapic_state, off: usize, v: u32) {
    for (i, b) in v.to_le_bytes().iter().enumerate() {
        l.regs[off + i] = *b as _;
    }
}

fn with_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Wires LINT0 as ExtINT (the 8259 PIC's output) and LINT1 as NMI, as the MP table
/// says and as a PC's BIOS would.
pub fn set_lint(l: &mut kvm_lapic_state) {
    let lvt0 = lapic_reg(l, APIC_LVT0);
    set_lapic_reg(l, APIC_LVT0, with_delivery_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = lapic_reg(l, APIC_LVT1);
    set_lapic_reg(l, APIC_LVT1, with_delivery_mode(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn read(m: &GuestMemoryMmap, a: u64) -> u64 {
        m.read_obj(GuestAddress(a)).unwrap()
    }

    #[test]
    fn page_tables_identity_map_one_gib() {
        let m = mem();
        write_identity_page_tables(&m).unwrap();
        assert_eq!(read(&m, PML4_START), PDPTE_START | 3);
        assert_eq!(read(&m, PDPTE_START), PDE_START | 3);
        assert_eq!(read(&m, PDE_START), 0x83);
        assert_eq!(read(&m, PDE_START + 8), 0x20_0000 | 0x83);
        assert_eq!(read(&m, PDE_START + 511 * 8), (511 << 21) | 0x83);
        // Walk a virtual address through the tables.
        let va: u64 = 0x3fe1_2345;
        let pml4e = read(&m, PML4_START + ((va >> 39) & 0x1ff) * 8);
        let pdpte = read(&m, (pml4e & !0xfff) + ((va >> 30) & 0x1ff) * 8);
        let pde = read(&m, (pdpte & !0xfff) + ((va >> 21) & 0x1ff) * 8);
        assert_eq!((pde & !0x1f_ffff & !0xfff) | (va & 0x1f_ffff), va);
    }

    #[test]
    fn gdt_and_idt_in_memory() {
        let m = mem();
        let mode = EntryMode::Long64 {
            entry: 0x100_0000,
            zero_page: 0x7000,
        };
        write_gdt_idt(&m, mode).unwrap();
        assert_eq!(read(&m, GDT_START), 0);
        assert_eq!(read(&m, GDT_START + 8), gdt::gdt_64bit()[1]);
        assert_eq!(read(&m, GDT_START + 24), gdt::gdt_64bit()[3]);
        assert_eq!(read(&m, IDT_START), 0);
    }

    #[test]
    fn long_mode_sregs() {
        let mut s = kvm_sregs::default();
        set_boot_sregs(
            &mut s,
            EntryMode::Long64 {
                entry: 0,
                zero_page: 0,
            },
        );
        assert_eq!(s.cr3, PML4_START);
        assert_eq!(s.cr0 & (X86_CR0_PE | X86_CR0_PG), X86_CR0_PE | X86_CR0_PG);
        assert_ne!(s.cr4 & X86_CR4_PAE, 0);
        assert_eq!(s.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_eq!((s.cs.l, s.cs.selector, s.ds.selector), (1, 8, 16));
        assert_eq!(s.gdt.base, GDT_START);
        assert_eq!(s.gdt.limit, 31);
    }

    #[test]
    fn pvh_sregs_are_flat_32bit_without_paging() {
        let mut s = kvm_sregs {
            cr0: X86_CR0_PG,
            cr4: X86_CR4_PAE,
            efer: EFER_LME,
            ..Default::default()
        };
        set_boot_sregs(
            &mut s,
            EntryMode::Pvh {
                entry: 0,
                start_info: 0x6000,
            },
        );
        assert_eq!(s.cr0, X86_CR0_PE | X86_CR0_ET);
        assert_eq!((s.cr4, s.efer), (0, 0));
        assert_eq!((s.cs.l, s.cs.db, s.cs.limit), (0, 1, 0xffff_ffff));
        assert_eq!(s.ss.db, 1);
    }

    #[test]
    fn entry_registers() {
        let r = boot_regs(EntryMode::Long64 {
            entry: 0x100_0200,
            zero_page: 0x7000,
        });
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rflags),
            (0x100_0200, 0x7000, BOOT_STACK_POINTER, 2)
        );
        let r = boot_regs(EntryMode::Pvh {
            entry: 0x100_0abc,
            start_info: 0x6000,
        });
        assert_eq!((r.rip, r.rbx, r.rsi), (0x100_0abc, 0x6000, 0));
        let f = boot_fpu();
        assert_eq!((f.fcw, f.mxcsr), (0x37f, 0x1f80));
    }

    #[test]
    fn lint_pins() {
        let mut l = kvm_lapic_state::default();
        set_lapic_reg(&mut l, APIC_LVT0, 0x0001_0700 | 0x300);
        set_lint(&mut l);
        assert_eq!(lapic_reg(&l, APIC_LVT0), 0x0001_0700);
        assert_eq!((lapic_reg(&l, APIC_LVT1) >> 8) & 7, APIC_MODE_NMI);
    }
}
