//! `isol-runc`: isol as an OCI runtime, runc's command line (`isol_oci`); see docs/oci.md.
//!
//! The container's init is a sealed copy of `isol-init` beside this binary, or of this binary
//! itself when there is none, so it serves the init mode too. The kvm backend (a bundle's
//! workload in an isol microVM: the `io.isol.backend=kvm` annotation, or this binary invoked
//! as `isol-runc-vm`) is `runc_vm`, which hands the VM to `isol-vmm`.

#[path = "../commands/exec_channel.rs"]
mod exec_channel;
#[path = "../commands/guest_masks.rs"]
mod guest_masks;
#[path = "../commands/pod_net.rs"]
mod pod_net;
#[path = "../runc_vm.rs"]
mod runc_vm;
#[path = "../commands/shares.rs"]
mod shares;

fn main() {
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(isol_container::INIT_MARKER)) {
        isol_container::init::main(args.collect());
    }
    std::process::exit(isol_oci::main_with(std::env::args_os(), Some(&runc_vm::Vm)));
}
