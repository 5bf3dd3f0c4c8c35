//! Intel MultiProcessor Specification 1.4 table, so Linux finds every vCPU, the IOAPIC
//! and the ISA interrupt routing without ACPI.
//!
//! Layout at [`MPTABLE_START`] (in the EBDA, where Linux scans): the 16-byte floating
//! pointer, then the configuration table: header, one processor entry per vCPU (APIC id
//! = vCPU index, vCPU 0 is the BSP), the ISA bus, the IOAPIC (id = vCPU count), 24
//! I/O interrupt entries (ISA IRQ n → IOAPIC pin n, matching KVM's default GSI
//! routing), and the LINT0 ExtINT / LINT1 NMI local interrupt entries.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{APIC_ADDR, EBDA_END, IOAPIC_ADDR, MPTABLE_START};

/// Errors building or writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// Too many vCPUs for the table to fit in the EBDA.
    #[error("{0} vCPUs do not fit in the MP table (at most {MAX_CPUS}); use fewer vCPUs")]
    TooManyCpus(u8),
    /// No vCPUs.
    #[error("The MP table needs at least one vCPU; configure one or more vCPUs")]
    NoCpus,
    /// Guest memory does not cover the EBDA.
    #[error("Cannot write the MP table at {MPTABLE_START:#x}: {0}; give the VM more memory")]
    Write(vm_memory::GuestMemoryError),
}

/// Largest vCPU count whose table fits in the 1 KiB EBDA.
pub const MAX_CPUS: u8 = 32;

const FLOATING_LEN: usize = 16;
const HEADER_LEN: usize = 44;
const CPU_ENTRY_LEN: usize = 20;
const SMALL_ENTRY_LEN: usize = 8;
const IOAPIC_PINS: u8 = 24;

const MP_PROCESSOR: u8 = 0;
const MP_BUS: u8 = 1;
const MP_IOAPIC: u8 = 2;
const MP_INTSRC: u8 = 3;
const MP_LINTSRC: u8 = 4;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const MP_IRQ_INT: u8 = 0;
const MP_IRQ_NMI: u8 = 1;
const MP_IRQ_EXTINT: u8 = 3;
/// Conforms to the bus's default polarity and trigger mode.
const MP_IRQ_DEFAULT: u16 = 0;
/// Family 6 stepping 0x600; FPU and APIC present.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = 0x201;

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Total size of the table for `num_cpus`.
pub fn table_len(num_cpus: u8) -> usize {
    FLOATING_LEN
        + HEADER_LEN
        + CPU_ENTRY_LEN * usize::from(num_cpus)
        + SMALL_ENTRY_LEN * (1 + 1 + usize::from(IOAPIC_PINS) + 2)
}

/// The MP floating pointer and configuration table, as placed at `base`.
pub fn mptable_bytes(num_cpus: u8, base: u64) -> Result<Vec<u8>, MptableError> {
    if num_cpus == 0 {
        return Err(MptableError::NoCpus);
    }
    if num_cpus > MAX_CPUS {
        return Err(MptableError::TooManyCpus(num_cpus));
    }
    let ioapic_id = num_cpus;

    let mut entries = Vec::new();
    for cpu in 0..num_cpus {
        entries.push(MP_PROCESSOR);
        entries.push(cpu);
        entries.push(APIC_VERSION);
        entries.push(CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 });
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
    }
    entries.extend_from_slice(&[MP_BUS, 0]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[MP_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    for irq in 0..IOAPIC_PINS {
        entries.extend_from_slice(&[MP_INTSRC, MP_IRQ_INT]);
        entries.extend_from_slice(&MP_IRQ_DEFAULT.to_le_bytes());
        entries.extend_from_slice(&[0, irq, ioapic_id, irq]);
    }
    for (kind, lint) in [(MP_IRQ_EXTINT, 0u8), (MP_IRQ_NMI, 1)] {
        entries.extend_from_slice(&[MP_LINTSRC, kind]);
        entries.extend_from_slice(&MP_IRQ_DEFAULT.to_le_bytes());
        // Source bus 0, IRQ 0, all local APICs, pin LINTn.
        entries.extend_from_slice(&[0, 0, 0xff, lint]);
    }
    let entry_count = u16::from(num_cpus) + 1 + 1 + u16::from(IOAPIC_PINS) + 2;

    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((HEADER_LEN + entries.len()) as u16).to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, below
    header.extend_from_slice(b"ISOL    ");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&entry_count.to_le_bytes());
    header.extend_from_slice(&(APIC_ADDR as u32).to_le_bytes());
    header.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    debug_assert_eq!(header.len(), HEADER_LEN);
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(FLOATING_LEN + table.len());
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&((base + FLOATING_LEN as u64) as u32).to_le_bytes());
    out.push(1); // length in 16-byte units
    out.push(4); // spec revision
    out.push(0); // checksum, below
    out.extend_from_slice(&[0; 5]); // feature bytes: a configuration table is present
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    debug_assert_eq!(out.len(), table_len(num_cpus));
    Ok(out)
}

/// Writes the MP table for `num_cpus` at [`MPTABLE_START`].
pub fn setup_mptable(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<(), MptableError> {
    let bytes = mptable_bytes(num_cpus, MPTABLE_START)?;
    debug_assert!(MPTABLE_START + bytes.len() as u64 <= EBDA_END);
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_are_valid() {
        for n in [1, 2, 7, MAX_CPUS] {
            let t = mptable_bytes(n, MPTABLE_START).unwrap();
            assert_eq!(sum(&t[..16]), 0, "floating pointer");
            let len = u16::from_le_bytes([t[20], t[21]]) as usize;
            assert_eq!(16 + len, t.len());
            assert_eq!(sum(&t[16..16 + len]), 0, "configuration table");
        }
    }

    #[test]
    fn pointer_and_header_fields() {
        let t = mptable_bytes(2, MPTABLE_START).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        let ptr = u32::from_le_bytes(t[4..8].try_into().unwrap()) as u64;
        assert_eq!(ptr, MPTABLE_START + 16);
        assert_eq!(&t[16..20], b"PCMP");
        let count = u16::from_le_bytes([t[16 + 34], t[16 + 35]]);
        assert_eq!(count, 2 + 1 + 1 + 24 + 2);
        let lapic = u32::from_le_bytes(t[16 + 36..16 + 40].try_into().unwrap()) as u64;
        assert_eq!(lapic, APIC_ADDR);
    }

    #[test]
    fn processors_and_ioapic() {
        let t = mptable_bytes(3, MPTABLE_START).unwrap();
        let e = &t[16 + HEADER_LEN..];
        for cpu in 0..3u8 {
            let p = &e[usize::from(cpu) * 20..];
            assert_eq!((p[0], p[1]), (MP_PROCESSOR, cpu));
            assert_eq!(p[3] & CPU_BOOTPROCESSOR != 0, cpu == 0);
            assert_ne!(p[3] & CPU_ENABLED, 0);
        }
        let rest = &e[60..];
        assert_eq!(&rest[0..8], b"\x01\x00ISA   ");
        assert_eq!(&rest[8..12], &[MP_IOAPIC, 3, IOAPIC_VERSION, 1]);
        // IRQ 4 (serial) routed to IOAPIC 3, pin 4.
        let irq4 = &rest[16 + 4 * 8..16 + 5 * 8];
        assert_eq!(irq4, &[MP_INTSRC, MP_IRQ_INT, 0, 0, 0, 4, 3, 4]);
    }

    #[test]
    fn limits() {
        assert!(matches!(mptable_bytes(0, 0), Err(MptableError::NoCpus)));
        assert!(matches!(
            mptable_bytes(MAX_CPUS + 1, 0),
            Err(MptableError::TooManyCpus(_))
        ));
        assert!(MPTABLE_START + table_len(MAX_CPUS) as u64 <= EBDA_END);
    }

    #[test]
    fn written_to_guest_memory() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        setup_mptable(&m, 2).unwrap();
        let mut sig = [0u8; 4];
        m.read_slice(&mut sig, GuestAddress(MPTABLE_START)).unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
