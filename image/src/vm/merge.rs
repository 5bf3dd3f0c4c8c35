//! An image's layers merged into one tree, with overlayfs's whiteout rules: a 0:0
//! character device or a `.wh.NAME` file deletes NAME from the layers below, a directory
//! with `trusted.overlay.opaque=y` or a `.wh..wh..opq` file hides everything below it.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Errors merging layers.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A file of a layer could not be read.
    #[error(
        "Cannot read {path} of the image's layers: {source}; check the unpacked image's permissions"
    )]
    Read {
        /// Path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// For `map_err`: a read error of `path`.
pub(crate) fn read_err(path: &Path) -> impl FnOnce(io::Error) -> MergeError + '_ {
    move |source| MergeError::Read {
        path: path.to_owned(),
        source,
    }
}

fn is_opaque_dir(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    let mut v = [0u8; 2];
    // SAFETY: valid NUL-terminated path and attribute name; `v` is a live buffer of the
    // given length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    n == 1 && v[0] == b'y'
}

fn remove_subtree(map: &mut BTreeMap<PathBuf, PathBuf>, root: &Path, keep_root: bool) {
    let doomed: Vec<PathBuf> = map
        .range(root.to_path_buf()..)
        .take_while(|(p, _)| p.starts_with(root))
        .filter(|(p, _)| !(keep_root && p.as_path() == root))
        .map(|(p, _)| p.clone())
        .collect();
    for p in doomed {
        map.remove(&p);
    }
}

fn walk(
    dir: &Path,
    rel: &Path,
    out: &mut Vec<(PathBuf, PathBuf, fs::Metadata)>,
) -> Result<(), MergeError> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(read_err(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(read_err(dir))?;
    names.sort();
    for name in names {
        let abs = dir.join(&name);
        let r = rel.join(&name);
        let meta = fs::symlink_metadata(&abs).map_err(read_err(&abs))?;
        let is_dir = meta.is_dir();
        out.push((r.clone(), abs.clone(), meta));
        if is_dir {
            walk(&abs, &r, out)?;
        }
    }
    Ok(())
}

/// Merges `layers` (lowest first): each path of the merged tree, relative to its root,
/// with the file in a layer it comes from; in path order, so parents come before their
/// children.
pub(crate) fn merge_layers(layers: &[PathBuf]) -> Result<BTreeMap<PathBuf, PathBuf>, MergeError> {
    let mut map: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    for layer in layers {
        let mut entries = Vec::new();
        walk(layer, Path::new(""), &mut entries)?;
        // Deletions first: they apply to the layers below, never to this one.
        let mut added = Vec::new();
        for (rel, abs, meta) in entries {
            let name = rel
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            if name == b".wh..wh..opq" {
                if parent.as_os_str().is_empty() {
                    map.clear();
                } else {
                    remove_subtree(&mut map, &parent, true);
                }
            } else if let Some(hidden) = name.strip_prefix(b".wh.") {
                remove_subtree(
                    &mut map,
                    &parent.join(std::ffi::OsStr::from_bytes(hidden)),
                    false,
                );
            } else if meta.file_type().is_char_device() && meta.rdev() == 0 {
                remove_subtree(&mut map, &rel, false);
            } else {
                if meta.is_dir() && is_opaque_dir(&abs) {
                    remove_subtree(&mut map, &rel, true);
                }
                added.push((rel, abs, meta));
            }
        }
        for (rel, abs, meta) in added {
            // A non-directory replacing a lower directory hides its contents.
            if !meta.is_dir() {
                remove_subtree(&mut map, &rel, false);
            }
            map.insert(rel, abs);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_char_device_whiteout_and_opaque_xattr() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
        fs::create_dir_all(l1.join("d/sub")).unwrap();
        fs::write(l1.join("d/sub/f"), b"f").unwrap();
        fs::write(l1.join("victim"), b"v").unwrap();
        fs::create_dir_all(l2.join("d")).unwrap();
        let c = CString::new(l2.join("victim").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path; mknod of a 0:0 char device (an overlayfs whiteout).
        if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, 0) } != 0 {
            eprintln!("skipped: mknod needs CAP_MKNOD");
            return;
        }
        let d = CString::new(l2.join("d").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid path, name and value buffers.
        let rc = unsafe {
            libc::lsetxattr(
                d.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        let opaque_supported = rc == 0;
        let map = merge_layers(&[l1, l2]).unwrap();
        assert!(!map.contains_key(Path::new("victim")));
        assert!(map.contains_key(Path::new("d")));
        if opaque_supported {
            assert!(!map.contains_key(Path::new("d/sub/f")));
        } else {
            eprintln!("opaque xattr part skipped: trusted.* xattrs unsupported here");
        }
    }
}
