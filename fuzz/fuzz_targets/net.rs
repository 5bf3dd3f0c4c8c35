//! Fuzz target `net`: a thin wrapper around `isol_devices::fuzzing::net` (see
//! docs/fuzzing.md); `cargo test -p isol-devices` replays this target's corpus through the same
//! function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isol_devices::fuzzing::net(data));
