//! Fuzz target `control`: a thin wrapper around `isol_vmm::fuzzing::control`, the exec
//! channel's framing on the VMM's side and the guest init's (see docs/fuzzing.md); `cargo
//! test -p isol-vmm` replays this target's corpus through the same function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isol_vmm::fuzzing::control(data));
