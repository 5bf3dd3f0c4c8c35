//! Tiny synthetic kernels for tests: an ELF (optionally with a PVH note) or a bzImage
//! whose entry point runs a few given bytes of machine code. They exercise the loader,
//! the boot protocols and the vCPU loop without a Linux kernel, so they run even where
//! /dev/kvm only emulates (each runs a handful of instructions).

/// `mov dx, 0x4f0; mov al, CODE; out dx, al; mov al, 0xfe; out 0x64, al; hlt; jmp hlt`:
/// report exit status `code`, then reset through the i8042. Valid in 32- and 64-bit mode.
pub fn exit_code_program(code: u8) -> Vec<u8> {
    vec![
        0x66, 0xba, 0xf0, 0x04, 0xb0, code, 0xee, 0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd,
    ]
}

/// `mov al, 0xfe; out 0x64, al; hlt; jmp hlt`: reset without reporting a status.
pub fn reset_program() -> Vec<u8> {
    vec![0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd]
}

/// `ud2`: with the empty IDT the VMM installs, #UD escalates to a triple fault.
pub fn triple_fault_program() -> Vec<u8> {
    vec![0x0f, 0x0b]
}

/// `jmp $`: never ends.
pub fn spin_program() -> Vec<u8> {
    vec![0xeb, 0xfe]
}

/// A minimal x86_64 ELF executable: one PT_LOAD of `code` at `paddr`, entry at its
/// start, and optionally a PVH note pointing at `paddr`.
pub fn tiny_elf(code: &[u8], paddr: u64, pvh: bool) -> Vec<u8> {
    let ehdr_len = 64u64;
    let phdr_len = 56u64;
    let nphdr = if pvh { 2 } else { 1 };
    // Note: namesz 4 ("Xen\0"), descsz 4 (32-bit entry), type 18.
    let mut note = Vec::new();
    if pvh {
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&18u32.to_le_bytes());
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&(paddr as u32).to_le_bytes());
    }
    let note_off = ehdr_len + phdr_len * nphdr;
    let code_off = (note_off + note.len() as u64 + 15) & !15;
    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01\0");
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&paddr.to_le_bytes()); // e_entry
    f.extend_from_slice(&ehdr_len.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&(ehdr_len as u16).to_le_bytes());
    f.extend_from_slice(&(phdr_len as u16).to_le_bytes());
    f.extend_from_slice(&(nphdr as u16).to_le_bytes());
    f.extend_from_slice(&64u16.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&0u16.to_le_bytes());
    let phdr = |f: &mut Vec<u8>, ty: u32, off: u64, addr: u64, len: u64| {
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(&7u32.to_le_bytes());
        f.extend_from_slice(&off.to_le_bytes());
        f.extend_from_slice(&addr.to_le_bytes());
        f.extend_from_slice(&addr.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&16u64.to_le_bytes());
    };
    phdr(&mut f, 1, code_off, paddr, code.len() as u64);
    if pvh {
        phdr(&mut f, 4, note_off, 0, note.len() as u64);
    }
    f.extend_from_slice(&note);
    f.resize(code_off as usize, 0);
    f.extend_from_slice(code);
    f
}

/// A minimal bzImage: one setup sector, then `code` at +0x200 of the protected-mode
/// part (its 64-bit entry point).
pub fn tiny_bzimage(code: &[u8], xloadflags: u16) -> Vec<u8> {
    let mut f = vec![0u8; 1024];
    f[0x1f1] = 1; // setup_sects
    f[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    f[0x202..0x206].copy_from_slice(b"HdrS");
    f[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    f[0x211] = 1; // loadflags: LOADED_HIGH
    f[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    f[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
    f[0x260..0x264].copy_from_slice(&0x10_0000u32.to_le_bytes()); // init_size
    let mut pm = vec![0x90u8; 0x200];
    pm.extend_from_slice(code);
    f.extend_from_slice(&pm);
    f
}
