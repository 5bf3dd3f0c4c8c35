//! Shared between isol's guest init (PID 1 in the microVM) and the VMM that builds its
//! initramfs: the run-spec wire format ([`spec`]), the exit-port protocol constants
//! ([`port`]) and the exec channel's frames ([`control`]); and the guest init's own parts
//! that are worth testing on the host: the workload's identity ([`user`]), privileges
//! ([`privileges`]) and cgroup ([`cgroup`]). Depends on nothing but `std` and `libc`, so the
//! static init stays tiny.

pub mod cgroup;
pub mod control;
pub mod etc;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod net;
pub mod port;
pub mod privileges;
pub mod spec;
pub mod user;
