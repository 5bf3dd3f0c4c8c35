//! Fuzz harness `control` (the cargo-fuzz target of that name in `fuzz/`, docs/fuzzing.md):
//! the exec channel's framing on both sides. Compiled with the cargo feature `fuzzing` and
//! for this crate's tests, which replay `fuzz/corpus/control/` through it. Not part of the
//! default API.

/// The input's first byte picks the side: even, the guest init's reading of what the host
/// sends (`isol_guest_init::fuzzing::host_frames`); odd, the VMM's channel between a guest
/// and its clients, both played from the rest of the input.
pub fn control(data: &[u8]) {
    match data.split_first() {
        Some((m, rest)) if m % 2 == 0 => isol_guest_init::fuzzing::host_frames(rest),
        Some((_, rest)) => crate::control::fuzzing::channel(rest),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn replay_control_corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/control");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        assert!(!files.is_empty(), "no corpus in {}", dir.display());
        for p in &files {
            super::control(&std::fs::read(p).unwrap());
        }
        eprintln!("control: replayed {} corpus files", files.len());
    }
}
