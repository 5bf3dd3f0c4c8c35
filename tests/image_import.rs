//! Integration test of `isol image import|ls|rm` against a temporary store
//! (`ISOL_HOME` points at a tempdir).
//!
//! Needs the test helpers of isol-image; the root package's
//! `[dev-dependencies]` must have
//! `isol-image = { workspace = true, features = ["testutil"] }`.

mod common;

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{output_with_stdin, stderr, stdout};
use isol_image::{Store, testutil};

fn isol(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_isol"))
        .env("ISOL_HOME", home)
        .env_remove("RUST_LOG")
        .args(args)
        .output()
        .expect("run isol")
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

/// Entries of a store directory, for checking what a removal kept.
fn entries(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn an_image_a_running_container_uses_is_not_removed() {
    use std::io::{BufRead, BufReader, Write};
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs a container: run it as root (./test.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // The container prints its id (its default hostname), waits for a line on stdin, then
    // runs a program of its image.
    let mut run = Command::new(env!("CARGO_BIN_EXE_isol"))
        .env("ISOL_HOME", &home)
        .args(["run", "-i", "busybox", "sh", "-c"])
        .arg("echo $HOSTNAME; read x; /bin/busybox true && echo alive")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run isol");
    let mut out = BufReader::new(run.stdout.take().unwrap());
    let mut id = String::new();
    out.read_line(&mut id).unwrap();
    let id = id.trim().to_string();
    assert_eq!(id.len(), 12, "no id from the container: {id:?}");

    let refused = isol(&home, &["image", "rm", "busybox"]);
    let err = stderr(&refused);
    assert_eq!(refused.status.code(), Some(125), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err:?}");
    assert!(err.contains(&format!("container {id}")), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(stdout(&isol(&home, &["image", "ls"])).contains("busybox:latest"));

    // --force removes the name at once and keeps the layers the container runs on.
    let forced = isol(&home, &["image", "rm", "--force", "busybox"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert!(stderr(&forced).contains(&id), "{}", stderr(&forced));
    assert!(!stdout(&isol(&home, &["image", "ls"])).contains("busybox"));
    let layers = home.join("layers/sha256");
    assert!(
        entries(&layers) > 0,
        "the running container's layers were deleted"
    );

    run.stdin.take().unwrap().write_all(b"\n").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(run.wait().unwrap().success());
    assert_eq!(rest.trim(), "alive", "the container lost its image's files");

    // The container is gone: the next removal collects what it kept.
    let tarball = dir.path().join("app.tar");
    fs::write(
        &tarball,
        testutil::docker_save_tar(&[testutil::sample_image("itest:v1")], false),
    )
    .unwrap();
    let imported = isol(&home, &["image", "import", tarball.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let removed = isol(&home, &["image", "rm", "itest:v1"]);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert_eq!(entries(&layers), 0, "unused layers were kept");
    assert_eq!(
        entries(&home.join("blobs/sha256")),
        0,
        "unused blobs were kept"
    );
    assert_eq!(entries(&home.join("in-use")), 0, "a mark was left behind");
}

/// `isol image import -` (and /dev/stdin) reads the tarball from a pipe: `docker save IMG |
/// isol image import -`. The stream is spooled into the store, and nothing of it stays there.
#[test]
fn import_from_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let tar = testutil::docker_save_tar(&[testutil::sample_image("piped:v1")], true);
    for input in ["-", "/dev/stdin"] {
        let out = output_with_stdin(
            Command::new(env!("CARGO_BIN_EXE_isol"))
                .env("ISOL_HOME", &home)
                .args(["image", "import", input, "--tag", "piped:v1"]),
            &tar,
        );
        assert!(out.status.success(), "{input}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("Imported piped:v1"),
            "{}",
            stdout(&out)
        );
        assert_eq!(fs::read_dir(home.join("tmp")).unwrap().count(), 0);
    }
    let store = Store::open(&home).unwrap();
    assert_eq!(
        store
            .unpack(&store.resolve("piped:v1").unwrap())
            .unwrap()
            .len(),
        2
    );
}

/// A store on a full disk (a small tmpfs as ISOL_HOME): an import that does not fit, and a run
/// whose layer does not fit when unpacked, each end with a clear one-line error, and leave
/// nothing half-written: no temporary, no blob or layer marked complete, and the same
/// operation succeeds once there is room.
#[test]
fn a_full_disk_leaves_the_store_whole() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a tmpfs: run it as root (./test.sh)"
    );
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let _tmpfs = common::Tmpfs::mount(&home, "8m");
    // Incompressible content, so the blob is as large as the layer.
    let noise = |n: usize| -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let image = |name: &str, size: usize| testutil::TestImage {
        repo_tags: vec![name.into()],
        layers: vec![testutil::layer_tar(&[testutil::E::File(
            "data",
            &noise(size),
            0o644,
        )])],
    };
    let leftovers = |home: &Path| -> Vec<String> {
        let mut found = Vec::new();
        for sub in ["tmp", "layers/sha256", "blobs/sha256", "."] {
            if let Ok(rd) = fs::read_dir(home.join(sub)) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with(".tmp-") || sub == "tmp" {
                        found.push(format!("{sub}/{name}"));
                    }
                }
            }
        }
        found
    };

    // An import larger than the disk.
    let big = dir.path().join("big.tar");
    fs::write(
        &big,
        testutil::docker_save_tar(&[image("big:v1", 12 << 20)], false),
    )
    .unwrap();
    let out = isol(&home, &["image", "import", big.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    // Says that the store's filesystem is full, and which one.
    let full = format!(
        "The filesystem of the image store is full: cannot write {}",
        home.display()
    );
    let holding = format!("free space on the filesystem holding {},", home.display());
    assert!(err.contains(&full) && err.contains(&holding), "{err}");
    assert!(leftovers(&home).is_empty(), "{:?}", leftovers(&home));
    let out = isol(&home, &["image", "ls"]);
    assert!(!stdout(&out).contains("big:v1"), "{}", stdout(&out));

    // An image that fits, whose layer does not fit once unpacked on a disk that filled up.
    let small = dir.path().join("small.tar");
    fs::write(
        &small,
        testutil::docker_save_tar(&[image("small:v1", 2 << 20)], false),
    )
    .unwrap();
    let out = isol(&home, &["image", "import", small.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let free = nix::sys::statvfs::statvfs(&home).unwrap();
    let free = free.blocks_available() * free.fragment_size();
    let filler = home.join("filler");
    fs::write(&filler, vec![0u8; (free as usize).saturating_sub(1 << 20)]).unwrap();
    let out = isol(&home, &["run", "small:v1", "--", "/data"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(125), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains(&holding), "{err}");
    assert!(leftovers(&home).is_empty(), "{:?}", leftovers(&home));
    let store = Store::open(&home).unwrap();
    let img = store.resolve("small:v1").unwrap();
    // Room again: the same layer unpacks whole.
    fs::remove_file(&filler).unwrap();
    let dirs = store.unpack(&img).unwrap();
    assert_eq!(fs::metadata(dirs[0].join("data")).unwrap().len(), 2 << 20);
}
