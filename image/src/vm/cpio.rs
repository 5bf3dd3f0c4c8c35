//! The merged layers as a newc cpio archive, the form a VM boots from its initramfs.
//!
//! Hard links are stored as independent copies; sockets are skipped. Uncompressed: the
//! guest kernel unpacks it at memory speed and a gzip pass would cost more than it saves
//! for images of this size. The VMM appends its own entries (init, the run spec) after
//! it, at each boot.
//!
//! Merging the layers costs a directory walk and a read of every file (~1 s in the lab for
//! busybox); the result only depends on the layers, so it is written once per image:
//! `<cache>/<hash>.cpio`, named by a hash of each layer directory's path and identity
//! (device, inode, ctime). Unpacked layers are content-addressed by diff_id and never
//! modified once complete, so that identity stands for their content; a re-unpacked layer
//! gets a new inode/ctime and therefore a new archive.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use isol_cpio::{CpioWriter, EntryMeta};

use super::merge::{self, MergeError, read_err};

/// Bump when the archive [`layers_cpio`] writes changes.
const FORMAT: u32 = 1;

/// Errors building the archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// The layers could not be read.
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// An entry is too large for the newc format (4 GiB).
    #[error("{0} is 4 GiB or larger, too large for a cpio initramfs; remove it from the image")]
    TooLarge(PathBuf),
    /// Writing the archive failed.
    #[error("Cannot write the initramfs: {0}; check free memory")]
    Write(io::Error),
    /// The archive could not be stored in the cache.
    #[error(
        "Cannot store the image's initramfs at {path}: {source}; check free space and permissions"
    )]
    Store {
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

fn major(rdev: u64) -> u32 {
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)) as u32
}

fn minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)) as u32
}

/// The merged `layers` (lowest first) alone as a complete newc archive.
pub(crate) fn layers_cpio(layers: &[PathBuf]) -> Result<Vec<u8>, CpioError> {
    let mut w = CpioWriter::new(Vec::new());
    for (rel, abs) in merge::merge_layers(layers)? {
        let meta = fs::symlink_metadata(&abs).map_err(read_err(&abs))?;
        let ft = meta.file_type();
        let mut m = EntryMeta {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime().clamp(0, i64::from(u32::MAX)) as u32,
            ..Default::default()
        };
        let data = if ft.is_file() {
            if meta.len() >= u64::from(u32::MAX) {
                return Err(CpioError::TooLarge(abs));
            }
            fs::read(&abs).map_err(read_err(&abs))?
        } else if ft.is_symlink() {
            fs::read_link(&abs)
                .map_err(read_err(&abs))?
                .as_os_str()
                .as_bytes()
                .to_vec()
        } else if ft.is_char_device() || ft.is_block_device() {
            m.rdev_major = major(meta.rdev());
            m.rdev_minor = minor(meta.rdev());
            Vec::new()
        } else if ft.is_socket() {
            continue;
        } else {
            Vec::new()
        };
        w.entry(rel.as_os_str().as_bytes(), m, &data)
            .map_err(CpioError::Write)?;
    }
    w.finish().map_err(CpioError::Write)
}

/// The cache file for `layers` in `dir` (see the module's docs).
fn cache_path(dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, MergeError> {
    let mut h = std::hash::DefaultHasher::new();
    FORMAT.hash(&mut h);
    for l in layers {
        let m = fs::metadata(l).map_err(read_err(l))?;
        (l, m.dev(), m.ino(), m.ctime(), m.ctime_nsec()).hash(&mut h);
    }
    Ok(dir.join(format!("{:016x}.cpio", h.finish())))
}

/// The archive of `layers` in `cache_dir`: from the cache, or built now.
pub(crate) fn ensure_cpio(cache_dir: &Path, layers: &[PathBuf]) -> Result<PathBuf, CpioError> {
    let path = cache_path(cache_dir, layers)?;
    if path.is_file() {
        return Ok(path);
    }
    let archive = layers_cpio(layers)?;
    // Written under a unique name, then renamed: concurrent runs never see a partial
    // archive, and the last rename wins with identical content.
    let tmp = cache_dir.join(format!(".{}.{}", std::process::id(), FORMAT));
    let stored = fs::create_dir_all(cache_dir)
        .and_then(|()| fs::write(&tmp, &archive))
        .and_then(|()| fs::rename(&tmp, &path));
    if let Err(source) = stored {
        let _ = fs::remove_file(&tmp);
        return Err(CpioError::Store { path, source });
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use isol_cpio::testutil::{find, parse};
    use isol_cpio::{S_IFLNK, S_IFMT};
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn layers_merge_with_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
        for d in ["bin", "etc/sub", "opaque/old", "gone/deep", "replaced"] {
            fs::create_dir_all(l1.join(d)).unwrap();
        }
        let write = |layer: &Path, files: &[(&str, &[u8])]| {
            for (path, content) in files {
                fs::write(layer.join(path), content).unwrap();
            }
        };
        write(
            &l1,
            &[
                ("bin/tool", b"v1"),
                ("etc/keep", b"keep"),
                ("etc/sub/x", b"x"),
                ("etc/deleted", b"d"),
                ("opaque/old/f", b"f"),
                ("gone/deep/f", b"f"),
                ("replaced/f", b"f"),
            ],
        );
        symlink("tool", l1.join("bin/link")).unwrap();
        fs::set_permissions(l1.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();

        for d in ["bin", "etc", "opaque"] {
            fs::create_dir_all(l2.join(d)).unwrap();
        }
        write(
            &l2,
            &[
                ("bin/tool", b"v2"),
                ("etc/.wh.deleted", b""),
                ("opaque/.wh..wh..opq", b""),
                ("opaque/new", b"n"),
                (".wh.gone", b""),
                ("replaced", b"now a file"),
            ],
        );

        let img = layers_cpio(&[l1, l2]).unwrap();
        let p = parse(&img);
        let names: Vec<&str> = p.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(find(&p, "bin/tool").unwrap().4, b"v2");
        assert_eq!(find(&p, "bin/link").unwrap().4, b"tool");
        assert_eq!(find(&p, "bin/link").unwrap().1 & S_IFMT, S_IFLNK);
        assert!(names.contains(&"etc/keep") && names.contains(&"etc/sub/x"));
        assert!(!names.contains(&"etc/deleted"));
        assert!(!names.iter().any(|n| n.contains(".wh.")));
        assert!(!names.contains(&"opaque/old") && !names.contains(&"opaque/old/f"));
        assert!(names.contains(&"opaque/new"));
        assert!(!names.iter().any(|n| n.starts_with("gone")));
        assert_eq!(find(&p, "replaced").unwrap().4, b"now a file");
        assert!(!names.contains(&"replaced/f"));
        // Parents come before children.
        let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
        assert!(pos("etc") < pos("etc/sub") && pos("etc/sub") < pos("etc/sub/x"));
    }

    #[test]
    fn the_archive_is_built_once_per_layer_set() {
        let t = tempfile::tempdir().unwrap();
        let layer = t.path().join("l1");
        fs::create_dir_all(layer.join("etc")).unwrap();
        fs::write(layer.join("etc/f"), b"f").unwrap();
        let cache = t.path().join("cache");
        let layers = [layer];
        let a = ensure_cpio(&cache, &layers).unwrap();
        assert_eq!(fs::read(&a).unwrap(), layers_cpio(&layers).unwrap());
        let mtime = fs::metadata(&a).unwrap().modified().unwrap();
        assert_eq!(ensure_cpio(&cache, &layers).unwrap(), a);
        assert_eq!(fs::metadata(&a).unwrap().modified().unwrap(), mtime);
        // Only the archive: the temporary file was renamed.
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);
    }

    #[test]
    fn device_numbers() {
        let rdev = libc::makedev(259, 70000);
        assert_eq!((major(rdev), minor(rdev)), (259, 70000));
    }
}
