//! Integration test of `isol image import|ls|rm` against a temporary store
//! (`ISOL_HOME` points at a tempdir).
//!
//! Needs the test helpers of isol-image; the root package's
//! `[dev-dependencies]` must have
//! `isol-image = { workspace = true, features = ["testutil"] }`.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Output};

use isol_image::{Store, testutil};

fn isol(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_isol"))
        .env("ISOL_HOME", home)
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("run isol")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn import_ls_rm_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let tarball = dir.path().join("app.tar");
    // Two layers; the upper one deletes a file (.wh.) and makes a dir opaque (.wh..wh..opq).
    fs::write(
        &tarball,
        testutil::docker_save_tar(&[testutil::sample_image("itest:v1")], false),
    )
    .unwrap();

    let out = isol(&home, &["image", "import", tarball.to_str().unwrap()]);
    assert!(out.status.success(), "import failed: {}", stderr(&out));

    let out = isol(&home, &["image", "ls"]);
    assert!(out.status.success(), "ls failed: {}", stderr(&out));
    assert!(
        stdout(&out).contains("itest:v1"),
        "ls output: {}",
        stdout(&out)
    );

    // The store the CLI wrote is usable by the library, whiteouts included.
    let store = Store::open(&home).unwrap();
    let image = store.resolve("itest:v1").unwrap();
    let dirs = store.unpack(&image).unwrap();
    assert_eq!(dirs.len(), 2);
    let whiteout = fs::symlink_metadata(dirs[1].join("a/gone")).unwrap();
    assert!(whiteout.file_type().is_char_device());
    assert_eq!(
        testutil::get_xattr(&dirs[1].join("opq"), Store::opaque_xattr()).as_deref(),
        Some(&b"y"[..])
    );

    let out = isol(&home, &["image", "rm", "itest:v1"]);
    assert!(out.status.success(), "rm failed: {}", stderr(&out));
    let out = isol(&home, &["image", "ls"]);
    assert!(out.status.success());
    assert!(
        !stdout(&out).contains("itest:v1"),
        "still listed: {}",
        stdout(&out)
    );
    assert!(
        dirs.iter().all(|d| !d.exists()),
        "unpacked layers were not collected"
    );
}

#[test]
fn bad_inputs_exit_125_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let good = testutil::docker_save_tar(&[testutil::sample_image("bad:v1")], false);

    let mut mismatch = testutil::docker_save_files(&[testutil::sample_image("bad:v1")], false);
    let layer = mismatch
        .iter_mut()
        .find(|(p, _)| p.ends_with("layer.tar"))
        .unwrap();
    layer.1 = testutil::layer_tar(&[testutil::E::File("other", b"x", 0o644)]);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "notatar.tar",
            b"this is not a tar archive".to_vec(),
            "is not a docker-save tarball or an OCI image layout",
        ),
        (
            "truncated.tar",
            good[..good.len() / 2 + 100].to_vec(),
            "malformed or truncated",
        ),
        (
            "mismatch.tar",
            testutil::tar_of_files(&mismatch),
            "Digest mismatch",
        ),
    ];
    for (name, bytes, expect) in cases {
        let path = dir.path().join(name);
        fs::write(&path, bytes).unwrap();
        let out = isol(&home, &["image", "import", path.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(125), "{name}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{name}: not one line: {err:?}"
        );
        assert!(err.contains(expect), "{name}: {err}");
    }

    let out = isol(
        &home,
        &[
            "image",
            "import",
            dir.path().join("nonexistent.tar").to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim_end().lines().count(),
        1,
        "{}",
        stderr(&out)
    );

    let out = isol(&home, &["image", "rm", "no-such-image"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));

    // Nothing half-imported shows up.
    let out = isol(&home, &["image", "ls"]);
    assert!(out.status.success());
    assert!(!stdout(&out).contains("bad:v1"), "{}", stdout(&out));
}
