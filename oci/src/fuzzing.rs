//! The fuzz harness of `config.json` (cargo-fuzz target `oci_config` in fuzz/, see
//! docs/fuzzing.md): whatever a client writes into a bundle's config.json, parsing it and
//! turning it into a [`isol_container::ContainerConfig`] either succeeds or fails with one
//! line; it never panics, hangs or allocates without bound. `cargo test -p isol-oci` replays
//! `fuzz/corpus/oci_config/` through the same function.

use std::path::{Path, PathBuf};

/// The bundle the harness reads configs from: `/`, whose every config's root is made `/` too
/// (it exists and is a directory, and `to_config` creates nothing), unless the config gives
/// an empty root path, which keeps the not-a-directory refusal reachable. Nothing is written.
const BUNDLE: &str = "/";

/// One input: config.json's bytes.
pub fn config(data: &[u8]) {
    let Ok(mut spec) = serde_json::from_slice::<oci_spec::runtime::Spec>(data) else {
        return;
    };
    if let Some(root) = spec.root_mut()
        && !root.path().as_os_str().is_empty()
    {
        root.set_path(PathBuf::from("/"));
    }
    match crate::spec::to_config("fuzz", Path::new(BUNDLE), &spec) {
        Ok(cfg) => {
            // What the runtime is handed is what was asked: the process's argv, non-empty.
            assert!(!cfg.args.is_empty(), "an accepted config without args");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                !msg.contains('\n'),
                "an error of more than one line: {msg:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every file of `fuzz/corpus/oci_config/`.
    #[test]
    fn replay_oci_config_corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/oci_config");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.sort();
        assert!(!files.is_empty(), "no corpus in {}", dir.display());
        for p in &files {
            super::config(&std::fs::read(p).unwrap());
        }
        eprintln!("oci_config: replayed {} corpus files", files.len());
    }

    /// The seed the corpus starts from: `isol-runc spec`'s config, accepted.
    #[test]
    fn the_default_spec_is_accepted() {
        let spec = crate::commands::default_spec();
        let json = serde_json::to_vec(&spec).unwrap();
        super::config(&json);
        let mut spec = spec;
        if let Some(root) = spec.root_mut() {
            root.set_path("/".into());
        }
        assert!(crate::spec::to_config("fuzz", Path::new(super::BUNDLE), &spec).is_ok());
    }
}
