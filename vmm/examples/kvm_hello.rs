//! Lab 12 (docs/labs/12-kvm.md): a virtual machine from scratch, on `/dev/kvm` alone.
//!
//! Creates a VM with 4 KiB of memory and one vCPU in real mode, puts twelve bytes of machine code
//! in that memory, and runs the vCPU. The code adds two registers, writes the sum's digit and a
//! newline to the serial port 0x3f8, and halts. Every time the vCPU stops and returns to this
//! program ("a VM exit"), the exit is printed: KVM runs the guest's instructions on the CPU; a
//! port write is IO, which KVM hands to userspace — here, to us.
//!
//! ```text
//! cargo run -p isol-vmm --example kvm_hello
//! ```
//!
//! Needs a readable and writable /dev/kvm (any: it runs seven instructions, so even an emulated
//! /dev/kvm is fast enough).

use std::process::ExitCode;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuExit};

/// Where the guest's memory (and its code) starts in guest-physical addresses.
const GUEST_ADDR: u64 = 0x1000;
const GUEST_SIZE: usize = 0x1000;

/// The guest: 16-bit real-mode code.
const CODE: &[u8] = &[
    0xba, 0xf8, 0x03, // mov dx, 0x3f8   the first serial port (COM1)
    0x00, 0xd8, //       add al, bl      al = 2 + 3
    0x04, b'0', //       add al, '0'     the digit's ASCII code
    0xee, //             out dx, al      IO: an exit to userspace
    0xb0, b'\n', //      mov al, '\n'
    0xee,  //             out dx, al      IO again
    0xf4,  //             hlt             the end: an exit too
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvm_hello: {e}");
            ExitCode::from(125)
        }
    }
}

fn run() -> Result<(), String> {
    let kvm = Kvm::new().map_err(|e| {
        format!("cannot open /dev/kvm ({e}): this lab needs KVM; on a host without it run it in the lab, docs/lab.md")
    })?;
    println!("KVM API version {}", kvm.get_api_version());
    let vm = kvm.create_vm().map_err(|e| format!("KVM_CREATE_VM: {e}"))?;

    // The guest's RAM is ordinary memory of this process, mapped anonymous and private.
    // SAFETY: a fresh anonymous mapping; no existing memory is affected; the result is checked.
    let host = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            GUEST_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if host == libc::MAP_FAILED {
        return Err(format!("mmap: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `host` is a mapping of GUEST_SIZE writable bytes, and CODE is shorter.
    unsafe { std::ptr::copy_nonoverlapping(CODE.as_ptr(), host.cast::<u8>(), CODE.len()) };
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: GUEST_ADDR,
        memory_size: GUEST_SIZE as u64,
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: the region is the mapping above, which lives until the process exits (it is never
    // unmapped), as long as the VM.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| format!("KVM_SET_USER_MEMORY_REGION: {e}"))?;
    println!(
        "guest memory: {GUEST_SIZE} bytes at guest-physical {GUEST_ADDR:#x}, code {} bytes",
        CODE.len()
    );

    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| format!("KVM_CREATE_VCPU: {e}"))?;
    // Real mode, as the CPU is at reset, with CS based at the code: CS:IP = GUEST_ADDR.
    let mut sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    let mut regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
    regs.rip = GUEST_ADDR;
    regs.rax = 2;
    regs.rbx = 3;
    regs.rflags = 0x2; // bit 1 is always set
    vcpu.set_regs(&regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    println!("vCPU 0: real mode, rip={GUEST_ADDR:#x}, rax=2, rbx=3");

    for n in 1.. {
        let exit = vcpu.run().map_err(|e| format!("KVM_RUN: {e}"))?;
        match exit {
            VcpuExit::IoOut(port, data) => {
                let bytes = data.iter().map(|b| format!("{b:#04x}")).collect::<Vec<_>>();
                let text = data.iter().map(|&b| describe(b)).collect::<Vec<_>>();
                println!(
                    "exit {n}: IoOut port={port:#x} data=[{}] {}",
                    bytes.join(", "),
                    text.join(" ")
                );
            }
            VcpuExit::Hlt => {
                let regs = vcpu.get_regs().map_err(|e| format!("KVM_GET_REGS: {e}"))?;
                println!("exit {n}: Hlt at rip={:#x}: the guest is done", regs.rip);
                return Ok(());
            }
            other => return Err(format!("exit {n}: unexpected {other:?}")),
        }
    }
    Ok(())
}

/// A byte the guest wrote, as a reader would name it (no escapes: `'5'`, `newline`).
fn describe(b: u8) -> String {
    match b {
        b'\n' => "newline".to_string(),
        b if b.is_ascii_graphic() || b == b' ' => format!("'{}'", b as char),
        _ => "(not printable)".to_string(),
    }
}
