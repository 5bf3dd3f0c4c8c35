//! `-i -t` on the container backend: isol runs on a real pseudo-terminal here, as under a
//! user's terminal emulator; the container gets its own pty, and ^C, window size and the exit
//! code must go through. The scenario is shared with tests/kvm_tty.rs
//! ([`common::pty::interactive_shell_gets_size_ctrl_c_and_exit_code`]).

mod common;

#[test]
fn interactive_shell_gets_size_ctrl_c_and_exit_code() {
    common::pty::interactive_shell_gets_size_ctrl_c_and_exit_code("container");
}
