//! Fuzz harness for image import and layer unpacking, through the public [`Store`] API
//! into a temporary store.
//!
//! Compiled with the cargo feature `fuzzing` (for the cargo-fuzz target `import` in the
//! workspace's `fuzz/` directory) and for this crate's tests, which replay every file of
//! `fuzz/corpus/import/` through [`import`], so `cargo test` covers the corpus without
//! libFuzzer. Not part of the default API.

use std::io::Read;
use std::path::PathBuf;

use crate::Store;
use crate::testutil::{
    TestImage, docker_save_files, gzip, oci_layout_files, tar_of_files, write_files,
};

/// Most bytes a fuzzed gzip layer is expanded to when the harness computes its diff_id.
const MAX_LAYER: u64 = 4 << 20;

/// A directory removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(crate::fsutil::tmp_name("isol-fuzz"));
        std::fs::create_dir(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = crate::fsutil::remove_any(&self.0);
    }
}

/// `data` decompressed (at most [`MAX_LAYER`] bytes) if it starts like gzip, else itself.
fn gunzip_bounded(data: &[u8]) -> Vec<u8> {
    if !data.starts_with(&[0x1f, 0x8b]) {
        return data.to_vec();
    }
    let mut out = Vec::new();
    let _ = flate2::read::GzDecoder::new(data)
        .take(MAX_LAYER)
        .read_to_end(&mut out);
    out
}

/// Fuzz target `import`. The first byte picks what the rest of the input is:
///
/// * `% 5 == 0`: the whole import input, as is (a tar, a gzip, anything);
/// * 1: one layer (uncompressed tar) in a well-formed old-form `docker save` tarball
///   with correct digests, the layer gzipped if bit 3 of the first byte is set;
/// * 2: that layer in an OCI image layout directory;
/// * 3: that layer in an OCI layout tar (gzipped as a whole with bit 3);
/// * 4: a raw layer blob (gzip or not, as fuzzed) in a `docker save` tarball whose
///   config names its real diff_id, so fuzzed gzip streams reach the unpacker.
///
/// Bit 4 passes a tag. Every image the import adds is resolved and unpacked; then the
/// harness checks nothing was written outside the store.
pub fn import(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let tmp = TempDir::new();
    let store_dir = tmp.0.join("store");
    let input = tmp.0.join("input");
    let image = |layer: Vec<u8>| TestImage {
        repo_tags: vec!["fuzz/img:1".into()],
        layers: vec![layer],
    };
    let gz = mode & 8 != 0;
    match mode % 5 {
        0 => std::fs::write(&input, rest).expect("write the input"),
        1 => {
            let tar = tar_of_files(&docker_save_files(&[image(rest.to_vec())], gz));
            std::fs::write(&input, tar).expect("write the input");
        }
        2 => write_files(
            &input,
            &oci_layout_files(&[image(rest.to_vec())], false, false),
        ),
        3 => {
            let tar = tar_of_files(&oci_layout_files(&[image(rest.to_vec())], false, true));
            std::fs::write(&input, if gz { gzip(&tar) } else { tar }).expect("write the input");
        }
        _ => {
            let mut files = docker_save_files(&[image(gunzip_bounded(rest))], false);
            for (path, content) in &mut files {
                if path.ends_with("/layer.tar") {
                    *content = rest.to_vec();
                }
            }
            std::fs::write(&input, tar_of_files(&files)).expect("write the input");
        }
    }
    let store = Store::open(&store_dir).expect("open a temporary store");
    let tag = (mode & 16 != 0).then_some("fuzz:tagged");
    if let Ok(added) = store.import(&input, tag, &mut |_| {}) {
        for summary in added {
            assert!(summary.digest.starts_with("sha256:"));
            let img = store
                .resolve(&summary.digest)
                .expect("an imported image resolves");
            if let Ok(dirs) = store.unpack(&img) {
                for d in dirs {
                    assert!(
                        d.starts_with(store.root()),
                        "layer dir {d:?} outside the store"
                    );
                }
            }
        }
    }
    // Only the store and the input may exist in the temporary directory.
    for entry in std::fs::read_dir(&tmp.0).expect("read the temporary directory") {
        let name = entry.expect("directory entry").file_name();
        assert!(
            name == "store" || name == "input",
            "import wrote {name:?} outside the store"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// Every file of `fuzz/corpus/import/` (none if the directory is missing).
    fn corpus() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/import");
        let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
    }

    #[test]
    fn replay_import_corpus() {
        let files = corpus();
        for p in &files {
            super::import(&std::fs::read(p).unwrap());
        }
        eprintln!("import: replayed {} corpus files", files.len());
    }

    #[test]
    fn every_mode_with_a_small_layer() {
        let layer = crate::testutil::layer_tar(&[
            crate::testutil::E::Dir("a", 0o755),
            crate::testutil::E::File("a/f", b"x", 0o644),
        ]);
        for mode in 0u8..32 {
            let mut data = vec![mode];
            data.extend_from_slice(&layer);
            super::import(&data);
        }
        super::import(&[]);
    }
}
