//! Global descriptor table entries and their `kvm_segment` equivalents.
//!
//! A descriptor packs base, limit and an access/flags word; KVM wants the same facts
//! unpacked in `kvm_segment`. Both are derived from one [`gdt_entry`] so they cannot
//! disagree.

use kvm_bindings::kvm_segment;

/// Flags (high nibble: G, D/B, L, AVL) and access byte of a descriptor, as the 16-bit
/// value `0xF0AA` where `F` = flags and `AA` = access.
/// 64-bit code: present, DPL 0, code, execute/read, accessed; L=1, G=1.
pub const CODE64_FLAGS: u16 = 0xa09b;
/// 32-bit code: present, code, execute/read, accessed; D=1, G=1.
pub const CODE32_FLAGS: u16 = 0xc09b;
/// Data: present, data, read/write, accessed; D/B=1, G=1.
pub const DATA_FLAGS: u16 = 0xc093;
/// 64-bit TSS (busy), byte granular.
pub const TSS_FLAGS: u16 = 0x808b;
/// 32-bit TSS (busy), byte granular (PVH).
pub const TSS32_FLAGS: u16 = 0x008b;

/// Selector of GDT entry 1 (code).
pub const CODE_SELECTOR: u16 = 1 << 3;
/// Selector of GDT entry 2 (data).
pub const DATA_SELECTOR: u16 = 2 << 3;
/// Selector of GDT entry 3 (TSS).
pub const TSS_SELECTOR: u16 = 3 << 3;

/// Encodes a descriptor from `flags` (see [`CODE64_FLAGS`]), `base` and `limit` (20 bits).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(entry: u64) -> u32 {
    let raw = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff)) as u32;
    if g(entry) == 1 {
        // Page granular: the limit counts 4 KiB pages.
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

fn bit(entry: u64, n: u32) -> u8 {
    ((entry >> n) & 1) as u8
}

fn g(entry: u64) -> u8 {
    bit(entry, 55)
}

/// The `kvm_segment` for GDT entry `index` holding `entry`.
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(entry, 47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(entry, 54),
        s: bit(entry, 44),
        l: bit(entry, 53),
        g: g(entry),
        avl: bit(entry, 52),
        padding: 0,
        unusable: u8::from(bit(entry, 47) == 0),
    }
}

/// The four-entry GDT used to enter the kernel in 64-bit mode: null, code, data, TSS.
pub fn gdt_64bit() -> [u64; 4] {
    [
        0,
        gdt_entry(CODE64_FLAGS, 0, 0xfffff),
        gdt_entry(DATA_FLAGS, 0, 0xfffff),
        gdt_entry(TSS_FLAGS, 0, 0xfffff),
    ]
}

/// The GDT for the PVH entry (32-bit protected mode, flat): null, code, data, TSS.
pub fn gdt_32bit() -> [u64; 4] {
    [
        0,
        gdt_entry(CODE32_FLAGS, 0, 0xfffff),
        gdt_entry(DATA_FLAGS, 0, 0xfffff),
        gdt_entry(TSS32_FLAGS, 0, 0xfffff),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_encodings() {
        // The classic flat 64-bit code and data descriptors.
        assert_eq!(gdt_entry(CODE64_FLAGS, 0, 0xfffff), 0x00af_9b00_0000_ffff);
        assert_eq!(gdt_entry(DATA_FLAGS, 0, 0xfffff), 0x00cf_9300_0000_ffff);
        assert_eq!(gdt_entry(CODE32_FLAGS, 0, 0xfffff), 0x00cf_9b00_0000_ffff);
    }

    #[test]
    fn code64_segment() {
        let s = kvm_segment_from_gdt(gdt_64bit()[1], 1);
        assert_eq!(s.selector, CODE_SELECTOR);
        assert_eq!((s.base, s.limit), (0, 0xffff_ffff));
        assert_eq!((s.type_, s.present, s.dpl, s.s), (0xb, 1, 0, 1));
        assert_eq!((s.l, s.db, s.g, s.unusable), (1, 0, 1, 0));
    }

    #[test]
    fn code32_and_data_segments() {
        let c = kvm_segment_from_gdt(gdt_32bit()[1], 1);
        assert_eq!((c.l, c.db, c.type_), (0, 1, 0xb));
        let d = kvm_segment_from_gdt(gdt_32bit()[2], 2);
        assert_eq!((d.selector, d.type_, d.db, d.s), (DATA_SELECTOR, 0x3, 1, 1));
        let t = kvm_segment_from_gdt(gdt_32bit()[3], 3);
        assert_eq!((t.selector, t.type_, t.s, t.g), (TSS_SELECTOR, 0xb, 0, 0));
    }

    #[test]
    fn base_and_limit_round_trip() {
        let e = gdt_entry(0x4093, 0x1234_5678, 0xabcde);
        let s = kvm_segment_from_gdt(e, 2);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde);
        assert_eq!(s.g, 0);
        assert_eq!(s.db, 1);
    }

    #[test]
    fn null_entry_is_unusable() {
        assert_eq!(kvm_segment_from_gdt(0, 0).unusable, 1);
    }
}
