//! x86_64: memory layout, boot structures (zero page, PVH start info, MP table, page
//! tables, GDT), vCPU register/CPUID/MSR setup.

pub mod boot_params;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
