//! `-i -t` on the kvm backend: isol runs on a real pseudo-terminal, as under a user's terminal
//! emulator; the guest init gives the workload its own pty and relays it over the virtio
//! console, so the size, `tty`, ^C and the exit code must all go through. The scenario is
//! shared with tests/tty.rs ([`common::pty::interactive_shell_gets_size_ctrl_c_and_exit_code`]).
//!
//! Needs a /dev/kvm that runs guests in hardware: run it in the lab (`isol lab -- <this test
//! binary> --test-threads=1`, with `ISOL_KERNEL` set); it skips elsewhere, unless
//! `ISOL_REQUIRE_KVM` is set.

mod common;

#[test]
fn interactive_shell_in_the_vm_gets_size_ctrl_c_and_exit_code() {
    if !common::kvm_ready() {
        return;
    }
    common::pty::interactive_shell_gets_size_ctrl_c_and_exit_code("kvm");
}
