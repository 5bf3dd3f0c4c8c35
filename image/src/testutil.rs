//! Test helpers: build layer tars, `docker save` tarballs and OCI layouts in
//! memory. Compiled for this crate's unit tests and, with the cargo feature
//! `testutil`, for other crates' tests:
//!
//! ```toml
//! [dev-dependencies]
//! isol-image = { workspace = true, features = ["testutil"] }
//! ```
//!
//! Panics on internal failures (these are test helpers).

use std::io::{Read, Write};
use std::path::Path;

use serde_json::json;

use crate::fsutil::sha256_digest;

/// Reads an xattr (`lgetxattr`) of `path`, `None` if absent (e.g. to check
/// the overlay opaque marker of an unpacked layer).
pub use crate::unpack::get_xattr;

/// The mtime of every generated entry.
pub const MTIME: u64 = 1_700_000_000;

/// One layer entry for [`layer_tar`].
#[derive(Debug, Clone, Copy)]
pub enum E<'a> {
    /// A directory with a mode.
    Dir(&'a str, u32),
    /// A regular file with content and mode.
    File(&'a str, &'a [u8], u32),
    /// A symlink (path, target).
    Symlink(&'a str, &'a str),
    /// A hardlink (path, target inside the layer).
    Hardlink(&'a str, &'a str),
    /// A FIFO.
    Fifo(&'a str),
    /// A character device (path, major, minor).
    CharDev(&'a str, u32, u32),
    /// A whiteout deleting the given path (written as `dir/.wh.name`).
    Whiteout(&'a str),
    /// Marks the given directory opaque (`dir/.wh..wh..opq`).
    Opaque(&'a str),
}

/// An uncompressed layer tar of `entries` (owned by 0:0).
pub fn layer_tar(entries: &[E<'_>]) -> Vec<u8> {
    let owned: Vec<_> = entries.iter().map(|e| (*e, 0, 0)).collect();
    layer_tar_owned(&owned)
}

/// An uncompressed layer tar of `(entry, uid, gid)`.
pub fn layer_tar_owned(entries: &[(E<'_>, u64, u64)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (e, uid, gid) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(*uid);
        h.set_gid(*gid);
        h.set_mtime(MTIME);
        h.set_size(0);
        let wh;
        let (path, data): (&str, &[u8]) = match *e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(mode);
                (p, &[])
            }
            E::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(mode);
                h.set_size(data.len() as u64);
                (p, data)
            }
            E::Symlink(p, target) | E::Hardlink(p, target) => {
                let kind = if matches!(e, E::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                h.set_entry_type(kind);
                h.set_mode(0o777);
                set_raw_link(&mut h, target.as_bytes());
                (p, &[])
            }
            E::Fifo(p) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o644);
                (p, &[])
            }
            E::CharDev(p, major, minor) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_device_major(major).unwrap();
                h.set_device_minor(minor).unwrap();
                (p, &[])
            }
            E::Whiteout(p) => {
                let (dir, name) = p.rsplit_once('/').map_or(("", p), |(d, n)| (d, n));
                wh = if dir.is_empty() {
                    format!(".wh.{name}")
                } else {
                    format!("{dir}/.wh.{name}")
                };
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                (wh.as_str(), &[])
            }
            E::Opaque(dir) => {
                wh = format!("{dir}/.wh..wh..opq");
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                (wh.as_str(), &[])
            }
        };
        b.append_data(&mut h, path, data).unwrap();
    }
    b.into_inner().unwrap()
}

/// Writes a link name without the tar crate's `..` checks (for tests of
/// malicious links).
fn set_raw_link(h: &mut tar::Header, target: &[u8]) {
    let old = h.as_old_mut();
    old.linkname = [0; 100];
    old.linkname[..target.len()].copy_from_slice(target);
}

/// A tar holding one regular file whose name is `name` verbatim (no checks:
/// for `..` and absolute-path tests).
pub fn tar_with_raw_name(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(MTIME);
    h.set_entry_type(tar::EntryType::Regular);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// `data` decompressed if it is gzip, else `data`.
pub fn gunzip_if_needed(data: &[u8]) -> Vec<u8> {
    if data.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        data.to_vec()
    }
}

/// Two layers exercising whiteouts: the upper deletes `a/gone`, makes `opq`
/// opaque (hiding `opq/old`) and adds `opq/new` and `a/added`.
pub fn whiteout_layers() -> (Vec<u8>, Vec<u8>) {
    let lower = layer_tar(&[
        E::Dir("a", 0o755),
        E::File("a/keep", b"keep", 0o644),
        E::File("a/gone", b"gone", 0o644),
        E::Dir("opq", 0o755),
        E::File("opq/old", b"old", 0o644),
        E::Dir("opq/olddir", 0o755),
        E::File("top", b"top", 0o644),
    ]);
    let upper = layer_tar(&[
        E::Dir("a", 0o755),
        E::Whiteout("a/gone"),
        E::File("a/added", b"added", 0o644),
        E::Dir("opq", 0o755),
        E::Opaque("opq"),
        E::File("opq/new", b"new", 0o644),
    ]);
    (lower, upper)
}

/// The sorted relative paths of the overlay of [`whiteout_layers`].
pub fn whiteout_merged_view() -> Vec<String> {
    let mut v: Vec<String> = ["a", "a/added", "a/keep", "opq", "opq/new", "top"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.sort();
    v
}

/// An image to put into a generated tarball or layout.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// Names (`name:tag`), possibly none.
    pub repo_tags: Vec<String>,
    /// Uncompressed layer tars, lowest first.
    pub layers: Vec<Vec<u8>>,
}

/// An image named `name` with the two [`whiteout_layers`].
pub fn sample_image(name: &str) -> TestImage {
    let (lower, upper) = whiteout_layers();
    TestImage {
        repo_tags: vec![name.to_string()],
        layers: vec![lower, upper],
    }
}

/// The docker-style config JSON of `img` (with fields oci-spec does not know).
pub fn config_json(img: &TestImage) -> Vec<u8> {
    let diff_ids: Vec<String> = img.layers.iter().map(|l| sha256_digest(l)).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {
            "Env": ["PATH=/usr/bin:/bin", "FOO=bar"],
            "Entrypoint": ["/bin/entry"],
            "Cmd": ["arg"],
            "WorkingDir": "/work",
            "User": "",
            "ExposedPorts": null,
            "Volumes": null,
        },
        "container_config": { "Hostname": "" },
        "docker_version": "24.0.0",
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap()
}

/// A tar of `files` (path, content), in order.
pub fn tar_of_files(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The files of an old-form `docker save` tarball (`manifest.json`,
/// `<id>.json`, `<layerid>/layer.tar`, …); layers gzipped if `gzip_layers`.
pub fn docker_save_files(images: &[TestImage], gzip_layers: bool) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut manifest = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let config = config_json(img);
        let config_name = format!("{}.json", &sha256_digest(&config)[7..]);
        let mut layer_paths = Vec::new();
        for (j, layer) in img.layers.iter().enumerate() {
            let id = &sha256_digest(format!("{i}-{j}-{}", sha256_digest(layer)).as_bytes())[7..];
            files.push((format!("{id}/VERSION"), b"1.0".to_vec()));
            files.push((
                format!("{id}/json"),
                format!("{{\"id\":\"{id}\"}}").into_bytes(),
            ));
            let data = if gzip_layers {
                gzip(layer)
            } else {
                layer.clone()
            };
            files.push((format!("{id}/layer.tar"), data));
            layer_paths.push(format!("{id}/layer.tar"));
        }
        files.push((config_name.clone(), config));
        manifest.push(
            json!({ "Config": config_name, "RepoTags": img.repo_tags, "Layers": layer_paths }),
        );
    }
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    files.push(("repositories".into(), b"{}".to_vec()));
    files
}

/// An old-form `docker save` tarball.
pub fn docker_save_tar(images: &[TestImage], gzip_layers: bool) -> Vec<u8> {
    tar_of_files(&docker_save_files(images, gzip_layers))
}

/// The files of an OCI image layout holding `images` (gzip layers if
/// `gzip_layers`). With `docker_manifest_json`, also writes a `manifest.json`
/// like docker >= 25's `docker save` does.
pub fn oci_layout_files(
    images: &[TestImage],
    gzip_layers: bool,
    docker_manifest_json: bool,
) -> Vec<(String, Vec<u8>)> {
    let mut files = vec![(
        "oci-layout".to_string(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let mut index = Vec::new();
    let mut docker = Vec::new();
    let blob = |files: &mut Vec<(String, Vec<u8>)>, data: Vec<u8>| {
        let d = sha256_digest(&data);
        let len = data.len();
        let path = format!("blobs/sha256/{}", &d[7..]);
        if !files.iter().any(|(p, _)| *p == path) {
            files.push((path.clone(), data));
        }
        (d, len, path)
    };
    for img in images {
        let (cd, clen, cpath) = blob(&mut files, config_json(img));
        let mut layers = Vec::new();
        let mut lpaths = Vec::new();
        for l in &img.layers {
            let data = if gzip_layers { gzip(l) } else { l.clone() };
            let (ld, llen, lpath) = blob(&mut files, data);
            let mt = if gzip_layers {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            layers.push(json!({ "mediaType": mt, "digest": ld, "size": llen }));
            lpaths.push(lpath);
        }
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": clen },
            "layers": layers,
        }))
        .unwrap();
        let (md, mlen, _) = blob(&mut files, manifest);
        let mut desc = json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md,
            "size": mlen,
        });
        if let Some(name) = img.repo_tags.first() {
            desc["annotations"] = json!({
                "io.containerd.image.name": format!("docker.io/library/{name}"),
                "org.opencontainers.image.ref.name": name.rsplit_once(':').map_or("latest", |(_, t)| t),
            });
        }
        index.push(desc);
        docker.push(json!({ "Config": cpath, "RepoTags": img.repo_tags, "Layers": lpaths }));
    }
    files.push((
        "index.json".into(),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": index,
        }))
        .unwrap(),
    ));
    if docker_manifest_json {
        files.push(("manifest.json".into(), serde_json::to_vec(&docker).unwrap()));
    }
    files
}

/// Writes `files` below `dir` (creating parents).
pub fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (p, data) in files {
        let path = dir.join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
}
