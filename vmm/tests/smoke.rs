//! End-to-end runs of `isol_vmm::run` with tiny synthetic kernels (a few instructions
//! each, see `isol_vmm::test_images`). They need /dev/kvm but no Linux kernel, and are
//! cheap enough even where KVM emulates every instruction. Skipped without /dev/kvm.

use std::io::Write;
use std::time::Duration;

use isol_vmm::arch::x86_64::layout::IDT_START;
use isol_vmm::test_images::{
    exit_code_program, reset_program, spin_program, tiny_bzimage, tiny_elf, triple_fault_program,
};
use isol_vmm::{BootProtocol, ExitKind, Rootfs, SerialOutput, VmConfig, VmmError};

fn kvm_or_skip() -> bool {
    if isol_vmm::kvm_available() {
        true
    } else {
        eprintln!("skipped: /dev/kvm is not usable here");
        false
    }
}

fn kernel_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

fn config(kernel: &tempfile::NamedTempFile) -> VmConfig {
    VmConfig {
        kernel: kernel.path().to_owned(),
        rootfs: Rootfs::None,
        vcpus: 1,
        memory_mib: 64,
        serial_output: SerialOutput::Sink,
        forward_stdin: false,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn elf_64bit_entry_reports_exit_code() {
    if !kvm_or_skip() {
        return;
    }
    let k = kernel_file(&tiny_elf(&exit_code_program(3), 0x100_0000, false));
    let out = isol_vmm::run(&config(&k)).unwrap();
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.exit_counts.get(ExitKind::IoOut, 0x4f0), 1);
    assert_eq!(out.exit_counts.get(ExitKind::IoOut, 0x64), 1);
    assert!(out.timings.first_vcpu_entry.is_some());
}

#[test]
fn pvh_entry_reports_exit_code() {
    if !kvm_or_skip() {
        return;
    }
    let k = kernel_file(&tiny_elf(&exit_code_program(5), 0x100_0000, true));
    let mut cfg = config(&k);
    cfg.boot_protocol = BootProtocol::Pvh;
    assert_eq!(isol_vmm::run(&cfg).unwrap().exit_code, 5);
}

#[test]
fn bzimage_entry_reports_exit_code() {
    if !kvm_or_skip() {
        return;
    }
    let k = kernel_file(&tiny_bzimage(&exit_code_program(7), 1));
    assert_eq!(isol_vmm::run(&config(&k)).unwrap().exit_code, 7);
}

#[test]
fn reset_without_exit_code_is_a_crash() {
    if !kvm_or_skip() {
        return;
    }
    let k = kernel_file(&tiny_elf(&reset_program(), 0x100_0000, false));
    let e = isol_vmm::run(&config(&k)).unwrap_err();
    assert!(matches!(e, VmmError::GuestRebooted), "{e}");
    assert!(
        e.to_string()
            .contains("panicked or rebooted without reporting an exit code")
    );
}

#[test]
fn triple_fault_is_reported() {
    if !kvm_or_skip() {
        return;
    }
    let k = kernel_file(&tiny_elf(&triple_fault_program(), 0x100_0000, false));
    let e = isol_vmm::run(&config(&k)).unwrap_err();
    let VmmError::TripleFault { index: 0, regs } = &e else {
        panic!("not a triple fault of vCPU 0: {e}");
    };
    assert!(!e.to_string().contains('\n'), "{e}");
    // The registers come with it, on a line of their own. Which values depends on the
    // host's KVM: kvm_amd (the lab) INIT-resets the vCPU before it reports the shutdown;
    // kvm_intel, and this host's emulated /dev/kvm, leave those of the `ud2` that faulted.
    let r = regs
        .as_deref()
        .expect("the registers were read after the shutdown exit");
    let line = e.registers().expect("a register line");
    eprintln!("{line}");
    assert!(
        line.starts_with("vCPU 0 registers after the exit: RIP 0x"),
        "{line}"
    );
    if r.is_reset_state() {
        // INIT keeps CR0's CD and NW, which the VMM's boot CR0 (0xe0000011) has set.
        assert_eq!((r.cr0, r.efer), (0x6000_0010, 0), "{r}");
        assert!(line.contains("reset values"), "{line}");
    } else {
        assert_eq!(r.rip, 0x100_0000, "RIP is not the ud2: {r}");
        assert_eq!(r.idt, (IDT_START, 0), "not the VMM's empty IDT: {r}");
        assert_eq!(r.efer & 0x500, 0x500, "not in long mode: {r}");
        assert!(!line.contains("reset values"), "{line}");
    }
}

#[test]
fn timeout_stops_a_spinning_guest_and_its_threads() {
    if !kvm_or_skip() {
        return;
    }
    let k = kernel_file(&tiny_elf(&spin_program(), 0x100_0000, false));
    let mut cfg = config(&k);
    cfg.vcpus = 2;
    cfg.timeout = Some(Duration::from_millis(1500));
    let before = threads();
    let start = std::time::Instant::now();
    let e = isol_vmm::run(&cfg).unwrap_err();
    assert!(matches!(e, VmmError::Timeout(_)), "{e}");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(e.exit_code(), 124);
    // Other tests run in parallel threads; ours are gone if the count did not grow.
    assert!(threads() <= before + 2, "vCPU threads left behind");
}

#[test]
fn smp_vm_with_waiting_aps_exits_cleanly() {
    if !kvm_or_skip() {
        return;
    }
    let k = kernel_file(&tiny_elf(&exit_code_program(0), 0x100_0000, false));
    let mut cfg = config(&k);
    cfg.vcpus = 4;
    cfg.trace_exits = true;
    assert_eq!(isol_vmm::run(&cfg).unwrap().exit_code, 0);
}

#[test]
fn missing_kernel_is_a_config_error() {
    let cfg = VmConfig {
        kernel: "/nonexistent/vmlinux".into(),
        rootfs: Rootfs::None,
        ..Default::default()
    };
    let e = isol_vmm::run(&cfg).unwrap_err();
    assert!(matches!(e, VmmError::Config(_)), "{e}");
}
