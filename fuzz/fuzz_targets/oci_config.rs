//! Fuzz target `oci_config`: a thin wrapper around `isol_oci::fuzzing::config` (see
//! docs/fuzzing.md); `cargo test -p isol-oci` replays this target's corpus through the same
//! function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isol_oci::fuzzing::config(data));
