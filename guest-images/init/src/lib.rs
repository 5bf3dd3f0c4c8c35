//! Shared between isol's guest init (PID 1 in the microVM) and the VMM that builds its
//! initramfs: the run-spec wire format ([`spec`]) and the exit-port protocol constants
//! ([`port`]). Depends on nothing but `std`, so the static init stays tiny.

pub mod port;
pub mod spec;
