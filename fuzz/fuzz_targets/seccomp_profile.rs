//! Fuzz target `seccomp_profile`: a thin wrapper around
//! `isol_container::fuzzing::seccomp_profile` (see docs/fuzzing.md); `cargo test -p
//! isol-container` replays this target's corpus through the same function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isol_container::fuzzing::seccomp_profile(data));
