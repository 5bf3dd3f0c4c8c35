//! CPUID for each vCPU: KVM's supported set, adjusted so the guest sees a single-socket
//! machine of N one-thread cores with per-vCPU APIC ids, knows it runs on a hypervisor
//! (and finds KVM's paravirtual leaves through that bit), and has no PMU.
//!
//! The filter is a pure function over `kvm_cpuid_entry2` so it is unit-tested without
//! /dev/kvm.

use kvm_bindings::kvm_cpuid_entry2;

/// CPU vendors whose topology leaves we adjust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vendor {
    /// GenuineIntel.
    Intel,
    /// AuthenticAMD (and HygonGenuine, which follows AMD's leaves).
    Amd,
    /// Anything else: only the vendor-neutral leaves are touched.
    Other,
}

/// Leaf 1 ECX: running on a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 ECX: TSC-deadline mode of the LAPIC timer. KVM emulates it with the in-kernel
/// LAPIC (`KVM_CAP_TSC_DEADLINE_TIMER`, checked at open) but leaves it out of the
/// supported CPUID; without it Linux calibrates the LAPIC timer against the tick for
/// 100 ms on every boot (`calibrate_APIC_clock`).
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Leaf 1 EDX: HTT, "more than one logical processor per package" is meaningful.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 0xb/0x1f level types.
const LEVEL_TYPE_SMT: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;
/// First KVM paravirtual leaf ("KVMKVMKVM").
pub const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;

/// The vendor named by leaf 0.
pub fn vendor(entries: &[kvm_cpuid_entry2]) -> Vendor {
    let Some(l0) = entries.iter().find(|e| e.function == 0) else {
        return Vendor::Other;
    };
    let mut id = [0u8; 12];
    id[0..4].copy_from_slice(&l0.ebx.to_le_bytes());
    id[4..8].copy_from_slice(&l0.edx.to_le_bytes());
    id[8..12].copy_from_slice(&l0.ecx.to_le_bytes());
    match &id {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" | b"HygonGenuine" => Vendor::Amd,
        _ => Vendor::Other,
    }
}

/// Bits needed to number `n` items (ceil(log2(n))).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Adjusts KVM's supported CPUID for vCPU `index` of `count`.
pub fn filter_cpuid(entries: &mut [kvm_cpuid_entry2], index: u8, count: u8) {
    let vendor = vendor(entries);
    let apic_id = u32::from(index);
    let count = u32::from(count.max(1));
    let core_bits = bits_for(count);
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                // EBX[31:24] initial APIC id, [23:16] logical processors per package;
                // keep the CLFLUSH line size and brand index in [15:0].
                e.ebx = (apic_id << 24) | ((count & 0xff) << 16) | (e.ebx & 0xffff);
                e.ecx |= LEAF1_ECX_HYPERVISOR | LEAF1_ECX_TSC_DEADLINE;
                if count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            0x4 if vendor == Vendor::Intel => {
                // Deterministic cache parameters: EAX[31:26] cores per package - 1,
                // [25:14] logical processors sharing this cache - 1.
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((count - 1) & 0x3f) << 26);
            }
            0xa => {
                // No PMU: the guest must not program counters KVM may not virtualize.
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            0xb | 0x1f => {
                // Extended topology: level 0 = SMT (1 thread/core), level 1 = core.
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_TYPE_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = core_bits;
                        e.ebx = count;
                        e.ecx = (LEVEL_TYPE_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0x8000_0008 if vendor == Vendor::Amd => {
                // ECX[15:12] APIC id bits for cores, [7:0] cores per package - 1.
                e.ecx = (e.ecx & !0xf0ff) | ((core_bits & 0xf) << 12) | ((count - 1) & 0xff);
            }
            0x8000_001e if vendor == Vendor::Amd => {
                // Extended APIC id; compute unit (core) id with one thread; node 0.
                e.eax = apic_id;
                e.ebx = apic_id & 0xff;
                e.ecx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ..Default::default()
        }
    }

    fn vendor_leaf(id: &[u8; 12]) -> kvm_cpuid_entry2 {
        let w = |i: usize| u32::from_le_bytes([id[i], id[i + 1], id[i + 2], id[i + 3]]);
        kvm_cpuid_entry2 {
            function: 0,
            eax: 0x1f,
            ebx: w(0),
            edx: w(4),
            ecx: w(8),
            ..Default::default()
        }
    }

    fn sample(id: &[u8; 12]) -> Vec<kvm_cpuid_entry2> {
        let mut l1 = leaf(1, 0);
        l1.ebx = 0xff08_0800; // garbage APIC id / count, CLFLUSH 8
        l1.edx = LEAF1_EDX_HTT;
        let mut l4_l3 = leaf(4, 3);
        l4_l3.eax = (3 << 5) | 0x3;
        let mut la = leaf(0xa, 0);
        la.eax = 0x0803_0402;
        vec![
            vendor_leaf(id),
            l1,
            l4_l3,
            la,
            leaf(0xb, 0),
            leaf(0xb, 1),
            leaf(0xb, 2),
            leaf(0x8000_0008, 0),
            leaf(0x8000_001e, 0),
            leaf(KVM_CPUID_SIGNATURE, 0),
        ]
    }

    fn get(e: &[kvm_cpuid_entry2], f: u32, i: u32) -> kvm_cpuid_entry2 {
        *e.iter().find(|x| x.function == f && x.index == i).unwrap()
    }

    #[test]
    fn vendor_detection() {
        assert_eq!(vendor(&sample(b"GenuineIntel")), Vendor::Intel);
        assert_eq!(vendor(&sample(b"AuthenticAMD")), Vendor::Amd);
        assert_eq!(vendor(&sample(b"HygonGenuine")), Vendor::Amd);
        assert_eq!(vendor(&sample(b"VIA VIA VIA ")), Vendor::Other);
        assert_eq!(vendor(&[]), Vendor::Other);
    }

    #[test]
    fn leaf1_apic_id_count_and_hypervisor_bit() {
        let mut e = sample(b"GenuineIntel");
        filter_cpuid(&mut e, 3, 4);
        let l1 = get(&e, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(l1.ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);

        let mut e = sample(b"GenuineIntel");
        filter_cpuid(&mut e, 0, 1);
        assert_eq!(get(&e, 1, 0).edx & LEAF1_EDX_HTT, 0, "no HTT with one vCPU");
    }

    #[test]
    fn extended_topology() {
        let mut e = sample(b"GenuineIntel");
        filter_cpuid(&mut e, 2, 3);
        let smt = get(&e, 0xb, 0);
        assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8, smt.edx), (0, 1, 1, 2));
        let core = get(&e, 0xb, 1);
        assert_eq!(
            (core.eax, core.ebx, core.ecx >> 8, core.ecx & 0xff, core.edx),
            (2, 3, 2, 1, 2)
        );
        let end = get(&e, 0xb, 2);
        assert_eq!((end.eax, end.ebx, end.ecx >> 8), (0, 0, 0));
    }

    #[test]
    fn intel_cache_sharing() {
        let mut e = sample(b"GenuineIntel");
        filter_cpuid(&mut e, 0, 2);
        let l3 = get(&e, 4, 3);
        assert_eq!(l3.eax >> 26, 1);
        assert_eq!((l3.eax >> 14) & 0xfff, 1);
        assert_eq!(l3.eax & 0x3fff, (3 << 5) | 3, "cache type and level kept");
    }

    #[test]
    fn pmu_is_hidden_and_kvm_leaves_kept() {
        let mut e = sample(b"AuthenticAMD");
        filter_cpuid(&mut e, 0, 1);
        let a = get(&e, 0xa, 0);
        assert_eq!((a.eax, a.ebx, a.ecx, a.edx), (0, 0, 0, 0));
        assert!(e.iter().any(|x| x.function == KVM_CPUID_SIGNATURE));
    }

    #[test]
    fn amd_core_count_and_apic_id() {
        let mut e = sample(b"AuthenticAMD");
        filter_cpuid(&mut e, 5, 8);
        assert_eq!(get(&e, 0x8000_0008, 0).ecx & 0xff, 7);
        assert_eq!((get(&e, 0x8000_0008, 0).ecx >> 12) & 0xf, 3);
        assert_eq!(get(&e, 0x8000_001e, 0).eax, 5);
        // Intel leaves untouched on AMD.
        assert_eq!(get(&e, 4, 3).eax, (3 << 5) | 3);
    }

    #[test]
    fn bit_counts() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(bits_for), [0, 1, 2, 2, 3, 3, 4]);
    }
}
