//! `isol-vmm`: the VMM of `isol run --backend kvm`, as a small executable of its own.
//!
//! `isol run --backend kvm` does the CLI's part (flags, image, root disk, kernel and init
//! lookup, validation) and then execs this binary, same pid, handing it the launch
//! description on an inherited memfd (`isol_vmm::launch`). It holds only the VMM and its
//! devices, so the pages of isol's CLI, container runtime and image store are not part of
//! a running VM's memory. Without it beside isol, isol runs the same code in-process.

#[path = "../jail.rs"]
mod jail;
#[path = "../logging.rs"]
mod logging;

fn main() -> std::process::ExitCode {
    let code = isol_vmm::launch::main(
        std::env::args_os(),
        |filter| {
            logging::init(filter);
        },
        jail::enter,
    );
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}
