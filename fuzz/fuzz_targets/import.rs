//! Fuzz target `import`: a thin wrapper around `isol_image::fuzzing::import` (see
//! docs/fuzzing.md); `cargo test -p isol-image` replays this target's corpus through the
//! same function.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| isol_image::fuzzing::import(data));
