//! Unpacking layer tars into overlayfs lower directories.
//!
//! Each layer goes into its own directory, honouring modes, mtimes, symlinks,
//! hardlinks (within the layer), ownership and device nodes (both only as
//! root; device nodes are skipped with a note otherwise). Entries with `..`
//! components or absolute paths are rejected, and nothing is written through
//! a symlink that leaves the directory (the tar crate's `unpack_in`
//! canonicalises parents; whiteouts and device nodes are placed by our own
//! code, which refuses symlinked parents).
//!
//! Whiteouts take overlayfs's on-disk format, as docker's overlay2 driver
//! writes them: `.wh.NAME` becomes a 0:0 character device `NAME`;
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` (as root) or
//! `user.overlay.opaque=y` (otherwise) on its directory.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use crate::fsutil::{self, HashingReader};
use crate::{ImageError, fsutil::atomic_write};

/// Suffix of the marker file written next to a complete unpacked layer.
pub(crate) const DONE_SUFFIX: &str = ".done";

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// The opaque-directory xattr for the current user (see module docs).
pub(crate) fn opaque_xattr() -> &'static str {
    if fsutil::is_root() {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    }
}

/// `<dir>.done`.
pub(crate) fn done_marker(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_owned();
    s.push(DONE_SUFFIX);
    PathBuf::from(s)
}

/// Whether `dir` is a completely unpacked layer.
pub(crate) fn is_complete(dir: &Path) -> bool {
    dir.is_dir() && done_marker(dir).is_file()
}

/// Unpacks the layer blob at `blob` into `dir` atomically: into a temporary
/// sibling, verified against `diff_id`, renamed, then marked done. A stale
/// incomplete `dir` is replaced. The unpacking runs without the store lock (at
/// `lock`), which is taken only to move the result into place; when another
/// isol finished the same layer first, this copy is dropped.
pub(crate) fn unpack_layer_dir(
    blob: &Path,
    diff_id: &str,
    dir: &Path,
    lock: &Path,
) -> Result<(), ImageError> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let tmp = parent.join(fsutil::tmp_name("unpack"));
    let res = (|| {
        fs::create_dir(&tmp).map_err(ImageError::io("create", &tmp))?;
        unpack_layer(blob, diff_id, &tmp)?;
        let d = File::open(&tmp).map_err(ImageError::io("open", &tmp))?;
        nix::unistd::syncfs(&d).map_err(|e| ImageError::io("sync", &tmp)(e.into()))?;
        let _lock = fsutil::StoreLock::acquire(lock)?;
        if is_complete(dir) {
            fsutil::remove_any(&tmp)?;
            return Ok(());
        }
        if dir.exists() {
            // A crash between rename and marker left a dir without marker.
            let stale = parent.join(fsutil::tmp_name("stale"));
            fs::rename(dir, &stale).map_err(ImageError::io("move away", dir))?;
            fsutil::remove_any(&stale)?;
        }
        fs::rename(&tmp, dir).map_err(ImageError::io("rename into place", dir))?;
        fsutil::sync_dir(parent)?;
        atomic_write(&done_marker(dir), diff_id.as_bytes())
    })();
    if res.is_err() && tmp.exists() {
        let _ = fsutil::remove_any(&tmp);
    }
    res
}

/// The deepest path a layer may hold, in components.
pub(crate) const MAX_DEPTH: usize = 256;
/// The longest path a layer may hold, in bytes (Linux's PATH_MAX).
pub(crate) const MAX_PATH: usize = 4096;

/// The components of the tar entry `path` of `layer`, checked: no `..` or absolute path, and
/// not deeper than [`MAX_DEPTH`] or longer than [`MAX_PATH`]. Each entry costs work in its
/// depth (every parent is checked), so a deep path is a denial of service on the store; no
/// real image comes near these.
pub(crate) fn entry_components(layer: &str, path: &Path) -> Result<Vec<OsString>, ImageError> {
    let comps = safe_components(path).map_err(|()| ImageError::UnsafePath {
        layer: layer.to_string(),
        entry: path.display().to_string(),
    })?;
    if comps.len() > MAX_DEPTH || path.as_os_str().len() > MAX_PATH {
        return Err(ImageError::LayerLimit {
            layer: layer.to_string(),
            reason: format!(
                "has an entry {} components and {} bytes deep (the most is {MAX_DEPTH} and {MAX_PATH})",
                comps.len(),
                path.as_os_str().len()
            ),
        });
    }
    Ok(comps)
}

/// The error for a layer that expanded past [`fsutil::expansion_limit`].
pub(crate) fn too_large(layer: &str, limit: u64, blob_size: u64) -> ImageError {
    ImageError::LayerLimit {
        layer: layer.to_string(),
        reason: format!(
            "expands past {} MiB from a {} KiB blob (a decompression bomb?)",
            limit >> 20,
            blob_size >> 10
        ),
    }
}

/// The normal components of a tar entry path; `Err` for `..` or absolute paths.
pub(crate) fn safe_components(path: &Path) -> Result<Vec<OsString>, ()> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(p) => out.push(p.to_os_string()),
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return Err(()),
        }
    }
    Ok(out)
}

/// Unpacks the layer tar at `blob` (gzip or not) into the existing empty
/// directory `dst`, checking its uncompressed digest is `diff_id`.
pub(crate) fn unpack_layer(blob: &Path, diff_id: &str, dst: &Path) -> Result<(), ImageError> {
    let root = fsutil::is_root();
    let mut file = File::open(blob).map_err(ImageError::io("open", blob))?;
    let compression = fsutil::sniff(&mut file, blob)?;
    let what = format!("layer {diff_id}");
    let blob_size = file.metadata().map_or(0, |m| m.len());
    let limit = fsutil::expansion_limit(blob_size);
    // Buffered: the tar reader asks for each 512-byte header and each file's data in 8 KiB
    // reads, a system call each on a bare file (an uncompressed docker-save layer).
    let file = io::BufReader::with_capacity(1 << 20, file);
    let reader = HashingReader::new(fsutil::LimitedReader {
        inner: fsutil::decompress(file, compression, &what)?,
        limit,
        read: 0,
    });
    let malformed = |e: io::Error| {
        if fsutil::is_too_large(&e) {
            too_large(diff_id, limit, blob_size)
        } else if let Some(source) = disk_error(&e) {
            ImageError::Io {
                action: "unpack a layer into",
                path: dst.to_path_buf(),
                source,
            }
        } else {
            ImageError::MalformedTar {
                what: what.clone(),
                reason: error_chain(&e),
            }
        }
    };
    let unsafe_path = |entry: &Path| ImageError::UnsafePath {
        layer: diff_id.to_string(),
        entry: entry.display().to_string(),
    };
    let dst_canon = dst.canonicalize().map_err(ImageError::io("resolve", dst))?;
    // A layer without a "./" entry has a root of 0755, whatever the umask, as docker's.
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755))
        .map_err(ImageError::io("chmod", dst))?;

    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(root);
    archive.set_unpack_xattrs(root);
    archive.set_overwrite(true);

    // Directories get their mode and mtime at the end: entries below them
    // change the mtime, and a read-only dir would block them when not root.
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let mut parents = Parents::default();
    let mut skipped_devices = 0usize;
    for entry in archive.entries().map_err(malformed)? {
        let mut entry = entry.map_err(malformed)?;
        let path = entry.path().map_err(malformed)?.into_owned();
        let comps = entry_components(diff_id, &path)?;
        let Some(name) = comps.last().cloned() else {
            // "./" itself: the image's root directory. Its mode (and owner) become the
            // container's `/`, so they are kept as the layer says, set at the end as for any
            // directory.
            let h = entry.header();
            if h.entry_type().is_dir() {
                if root && let (Ok(uid), Ok(gid)) = (h.uid(), h.gid()) {
                    std::os::unix::fs::chown(dst, Some(uid as u32), Some(gid as u32))
                        .map_err(ImageError::io("chown", dst))?;
                }
                dirs.push((
                    dst.to_path_buf(),
                    h.mode().unwrap_or(0o755),
                    h.mtime().unwrap_or(0),
                ));
            }
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        }
        let name_bytes = name.as_bytes();
        if name_bytes.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            let parent = parents
                .ensure(dst, &dst_canon, &comps)
                .map_err(|_| unsafe_path(&path))?;
            if name_bytes == OPAQUE.as_bytes() {
                set_xattr(&parent, opaque_xattr(), b"y")?;
            } else {
                let hidden = OsStr::from_bytes(&name_bytes[WHITEOUT_PREFIX.len()..]);
                if hidden.is_empty() || hidden == ".." || hidden == "." {
                    return Err(unsafe_path(&path));
                }
                let target = parent.join(hidden);
                parents.forget(&comps[..comps.len() - 1], hidden);
                fsutil::remove_any(&target)?;
                mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
                    .map_err(|e| ImageError::io("create the whiteout", &target)(e.into()))?;
            }
            continue;
        }
        match kind {
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                if !root && kind != tar::EntryType::Fifo {
                    skipped_devices += 1;
                    continue;
                }
                let parent = parents
                    .ensure(dst, &dst_canon, &comps)
                    .map_err(|_| unsafe_path(&path))?;
                let target = parent.join(&name);
                parents.forget(&comps[..comps.len() - 1], &name);
                fsutil::remove_any(&target)?;
                let h = entry.header();
                let dev = makedev(
                    u64::from(h.device_major().ok().flatten().unwrap_or(0)),
                    u64::from(h.device_minor().ok().flatten().unwrap_or(0)),
                );
                let sflag = match kind {
                    tar::EntryType::Char => SFlag::S_IFCHR,
                    tar::EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let mode = h.mode().unwrap_or(0o600);
                mknod(&target, sflag, Mode::from_bits_truncate(mode & 0o777), dev)
                    .map_err(|e| ImageError::io("create the device node", &target)(e.into()))?;
                if root {
                    let (uid, gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
                    std::os::unix::fs::lchown(
                        &target,
                        u32::try_from(uid).ok(),
                        u32::try_from(gid).ok(),
                    )
                    .map_err(ImageError::io("chown", &target))?;
                }
                fs::set_permissions(&target, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(ImageError::io("chmod", &target))?;
            }
            // A hard link: the tar crate checks that its target is inside the layer too.
            tar::EntryType::Link => {
                parents.forget(&comps[..comps.len() - 1], &name);
                let inside = entry.unpack_in(dst).map_err(|e| {
                    if format!("{e:?}").contains("outside of destination") {
                        unsafe_path(&path)
                    } else {
                        malformed(e)
                    }
                })?;
                if !inside {
                    return Err(unsafe_path(&path));
                }
            }
            _ => {
                let is_dir = kind.is_dir();
                let mode = entry.header().mode().unwrap_or(0o755);
                let mtime = entry.header().mtime().unwrap_or(0);
                // The parents checked here (as the tar crate's `unpack_in` would, which
                // resolves the layer's root and the entry's parent with realpath for every
                // entry: ~16 readlinks each), once per directory.
                let parent = parents
                    .ensure(dst, &dst_canon, &comps)
                    .map_err(|_| unsafe_path(&path))?;
                if !is_dir {
                    parents.forget(&comps[..comps.len() - 1], &name);
                }
                entry.unpack(parent.join(&name)).map_err(malformed)?;
                if is_dir {
                    let target = comps.iter().fold(dst.to_path_buf(), |p, c| p.join(c));
                    if !root {
                        let _ = fs::set_permissions(
                            &target,
                            fs::Permissions::from_mode(0o700 | (mode & 0o7777)),
                        );
                    }
                    dirs.push((target, mode, mtime));
                }
            }
        }
    }
    let reader = archive.into_inner();
    let (actual, _) = reader.finish().map_err(malformed)?;
    if actual != diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!("the uncompressed layer {}", blob.display()),
            expected: diff_id.to_string(),
            actual,
        });
    }
    for (dir, mode, mtime) in dirs.iter().rev() {
        fs::set_permissions(dir, fs::Permissions::from_mode(mode & 0o7777))
            .map_err(ImageError::io("chmod", dir))?;
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(*mtime);
        if let Ok(f) = File::open(dir) {
            let _ = f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t));
        }
    }
    if skipped_devices > 0 {
        tracing::warn!(
            "skipped {skipped_devices} device node(s) in layer {diff_id}: creating them needs root"
        );
    }
    Ok(())
}

/// An io::Error and its sources on one line.
/// The OS error behind `e`, looking through the tar reader's wrapping: an error of the disk
/// (ENOSPC, EDQUOT, EIO, EROFS) is not a malformed archive.
pub(crate) fn disk_error(e: &io::Error) -> Option<io::Error> {
    let disk = |n: i32| matches!(n, libc::ENOSPC | libc::EDQUOT | libc::EIO | libc::EROFS);
    if let Some(n) = e.raw_os_error().filter(|&n| disk(n)) {
        return Some(io::Error::from_raw_os_error(n));
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|r| r as _);
    while let Some(cause) = src {
        if let Some(n) = cause
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            .filter(|&n| disk(n))
        {
            return Some(io::Error::from_raw_os_error(n));
        }
        src = cause.source();
    }
    None
}

pub(crate) fn error_chain(e: &io::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    if src.is_none()
        && let Some(inner) = e.get_ref()
    {
        src = std::error::Error::source(inner);
    }
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    // Tar errors may quote header bytes: keep the message one short line.
    let mut s: String = s
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 160 {
        s = s.chars().take(160).collect::<String>() + "…";
    }
    s
}

/// The directories of a layer being unpacked that [`ensure_parent`] found to be real
/// directories inside it (relative paths), so that each is checked once rather than for
/// every entry below it. An entry that puts something else at such a path (a file, a link,
/// a whiteout or device node) removes it and everything below it first.
#[derive(Default)]
struct Parents {
    known: std::collections::HashSet<PathBuf>,
}

impl Parents {
    /// [`ensure_parent`], remembered.
    fn ensure(&mut self, dst: &Path, dst_canon: &Path, comps: &[OsString]) -> io::Result<PathBuf> {
        let dirs = &comps[..comps.len().saturating_sub(1)];
        let rel: PathBuf = dirs.iter().collect();
        if !self.known.contains(&rel) {
            let parent = ensure_parent(dst, dst_canon, comps)?;
            let mut r = PathBuf::new();
            self.known.insert(r.clone());
            for c in dirs {
                r.push(c);
                self.known.insert(r.clone());
            }
            return Ok(parent);
        }
        Ok(dst.join(rel))
    }

    /// `dirs/name` is about to be replaced by something that is not a directory.
    fn forget(&mut self, dirs: &[OsString], name: &OsStr) {
        let rel: PathBuf = dirs.iter().map(OsString::as_os_str).chain([name]).collect();
        if self.known.contains(&rel) {
            self.known.retain(|k| !k.starts_with(&rel));
        }
    }
}

/// Creates the parent directories of `comps` under `dst` (mode 0755) and
/// returns the parent path. Fails if a parent exists but is not a real
/// directory inside `dst` (e.g. a symlink).
fn ensure_parent(dst: &Path, dst_canon: &Path, comps: &[OsString]) -> io::Result<PathBuf> {
    let mut p = dst.to_path_buf();
    for c in &comps[..comps.len().saturating_sub(1)] {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(io::Error::other("parent is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&p)?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755))?;
            }
            Err(e) => return Err(e),
        }
    }
    if !p.canonicalize()?.starts_with(dst_canon) {
        return Err(io::Error::other("parent escapes the layer"));
    }
    Ok(p)
}

/// `lsetxattr(path, name, value)`.
fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), ImageError> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| ImageError::io("set an xattr on", path)(io::Error::other(e)))?;
    let c_name = CString::new(name)
        .map_err(|e| ImageError::io("set an xattr on", path)(io::Error::other(e)))?;
    // SAFETY: both strings are NUL-terminated and live across the call; the
    // value pointer/length pair describes a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(ImageError::io("set the overlay opaque xattr on", path)(
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `lgetxattr(path, name)`, `None` if absent.
#[cfg(any(test, feature = "testutil"))]
pub fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let c_name = CString::new(name).ok()?;
    let mut buf = vec![0u8; 256];
    // SAFETY: strings are NUL-terminated; buf is a writable buffer of buf.len() bytes.
    let rc = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc < 0 {
        return None;
    }
    buf.truncate(usize::try_from(rc).ok()?);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{self, E};
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::process::Command;

    fn unpack_bytes(tar: &[u8], dst: &Path) -> Result<(), ImageError> {
        let blob = dst
            .parent()
            .unwrap()
            .join(format!("blob-{}", fsutil::tmp_name("t")));
        fs::write(&blob, tar).unwrap();
        fs::create_dir_all(dst).unwrap();
        let diff = fsutil::sha256_digest(&testutil::gunzip_if_needed(tar));
        unpack_layer(&blob, &diff, dst)
    }

    #[test]
    fn modes_links_mtimes() {
        let dir = tempfile::tempdir().unwrap();
        let tar = testutil::layer_tar(&[
            E::Dir("ro", 0o555),
            E::File("ro/f", b"data", 0o4755),
            E::Symlink("ro/link", "f"),
            E::Symlink("abs", "/etc/passwd"),
            E::Hardlink("ro/hard", "ro/f"),
            E::Fifo("pipe"),
        ]);
        let dst = dir.path().join("l");
        unpack_bytes(&testutil::gzip(&tar), &dst).unwrap();
        let m = fs::metadata(dst.join("ro")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o555);
        assert_eq!(m.mtime(), testutil::MTIME as i64);
        let f = fs::metadata(dst.join("ro/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4755);
        assert_eq!(f.mtime(), testutil::MTIME as i64);
        assert_eq!(fs::read_link(dst.join("ro/link")).unwrap(), Path::new("f"));
        assert_eq!(
            fs::read_link(dst.join("abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        assert_eq!(fs::metadata(dst.join("ro/hard")).unwrap().ino(), f.ino());
        assert!(
            fs::symlink_metadata(dst.join("pipe"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        // Make it deletable by the tempdir cleanup.
        fs::set_permissions(dst.join("ro"), fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn device_nodes_as_root() {
        let dir = tempfile::tempdir().unwrap();
        let tar = testutil::layer_tar(&[E::Dir("dev", 0o755), E::CharDev("dev/null", 1, 3)]);
        let dst = dir.path().join("l");
        unpack_bytes(&tar, &dst).unwrap();
        if fsutil::is_root() {
            let m = fs::symlink_metadata(dst.join("dev/null")).unwrap();
            assert!(m.file_type().is_char_device());
            assert_eq!(m.rdev(), makedev(1, 3));
        } else {
            eprintln!("not root: checking the device node was skipped");
            assert!(!dst.join("dev/null").exists());
        }
    }

    #[test]
    fn ownership_as_root() {
        if !fsutil::is_root() {
            eprintln!("skipping ownership_as_root: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tar = testutil::layer_tar_owned(&[(E::File("f", b"x", 0o644), 1234, 5678)]);
        let dst = dir.path().join("l");
        unpack_bytes(&tar, &dst).unwrap();
        let m = fs::metadata(dst.join("f")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
    }

    #[test]
    fn deep_paths_are_refused_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let deep = vec!["d"; MAX_DEPTH + 1].join("/") + "/f";
        let tar = testutil::layer_tar(&[E::File(&deep, b"x", 0o644)]);
        let start = std::time::Instant::now();
        let err = unpack_bytes(&tar, &dir.path().join("deep")).unwrap_err();
        assert!(matches!(err, ImageError::LayerLimit { .. }), "{err}");
        assert!(err.to_string().contains("the most is 256"), "{err}");
        println!("refused in {:?}", start.elapsed());
        // At the limit it unpacks.
        let ok = vec!["d"; MAX_DEPTH - 1].join("/") + "/f";
        let tar = testutil::layer_tar(&[E::File(&ok, b"x", 0o644)]);
        unpack_bytes(&tar, &dir.path().join("ok")).unwrap();
    }

    #[test]
    fn decompression_bombs_stop_at_the_limit() {
        // A floor of 1 MiB: a 4 MiB file of zeros gzips to a few KiB, far past 100 times that.
        fsutil::LIMIT_FLOOR.set(1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let zeros = vec![0u8; 4 << 20];
        let tar = testutil::gzip(&testutil::layer_tar(&[E::File("zeros", &zeros, 0o644)]));
        let err = unpack_bytes(&tar, &dir.path().join("bomb")).unwrap_err();
        assert!(matches!(err, ImageError::LayerLimit { .. }), "{err}");
        assert!(err.to_string().contains("decompression bomb"), "{err}");
        // Under the limit, the same kind of layer unpacks.
        let tar = testutil::gzip(&testutil::layer_tar(&[E::File(
            "z",
            &zeros[..512 << 10],
            0o644,
        )]));
        unpack_bytes(&tar, &dir.path().join("fine")).unwrap();
        fsutil::LIMIT_FLOOR.set(1 << 30);
    }

    #[test]
    fn traversal_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        for (i, tar) in [
            testutil::tar_with_raw_name(b"../escape", b"x"),
            testutil::tar_with_raw_name(b"a/../../escape", b"x"),
            testutil::tar_with_raw_name(b"/abs", b"x"),
            testutil::tar_with_raw_name(b"../.wh.escape", b""),
        ]
        .into_iter()
        .enumerate()
        {
            let dst = dir.path().join(format!("l{i}"));
            let err = unpack_bytes(&tar, &dst).unwrap_err();
            assert!(matches!(err, ImageError::UnsafePath { .. }), "{i}: {err}");
        }
        // A symlink pointing out, then a file written through it.
        let tar =
            testutil::layer_tar(&[E::Symlink("out", "/tmp"), E::File("out/pwned", b"x", 0o644)]);
        let dst = dir.path().join("sym");
        let err = unpack_bytes(&tar, &dst).unwrap_err();
        assert!(matches!(err, ImageError::UnsafePath { .. }), "{err}");
        assert!(!Path::new("/tmp/pwned").exists());
        // Same through a whiteout.
        let tar =
            testutil::layer_tar(&[E::Symlink("out", "/tmp"), E::File("out/.wh.x", b"", 0o644)]);
        let err = unpack_bytes(&tar, &dir.path().join("sym2")).unwrap_err();
        assert!(matches!(err, ImageError::UnsafePath { .. }), "{err}");
        // A hardlink to a file outside.
        let tar = testutil::layer_tar(&[E::Hardlink("h", "../../../../etc/passwd")]);
        assert!(unpack_bytes(&tar, &dir.path().join("hl")).is_err());
        assert!(!dir.path().join("escape").exists());
    }

    #[test]
    fn digest_mismatch_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let tar = testutil::layer_tar(&[E::File("f", b"x", 0o644)]);
        let blob = dir.path().join("blob");
        fs::write(&blob, &tar).unwrap();
        let dst = dir.path().join("l");
        let lock = dir.path().join("lock");
        let digest = format!("sha256:{}", "0".repeat(64));
        let err = unpack_layer_dir(&blob, &digest, &dst, &lock).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!dst.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp dir cleaned up"
        );
    }

    #[test]
    fn whiteouts_become_overlay_format_and_mount() {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper) = testutil::whiteout_layers();
        let l = dir.path().join("lower");
        let u = dir.path().join("upper");
        unpack_bytes(&lower, &l).unwrap();
        unpack_bytes(&upper, &u).unwrap();
        let wh = fs::symlink_metadata(u.join("a/gone")).unwrap();
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!u.join("a/.wh.gone").exists());
        assert!(!u.join("opq/.wh..wh..opq").exists());
        assert_eq!(
            get_xattr(&u.join("opq"), opaque_xattr()).as_deref(),
            Some(&b"y"[..])
        );

        if !fsutil::is_root() {
            eprintln!("skipping the overlay mount part: needs root");
            return;
        }
        let merged = dir.path().join("merged");
        fs::create_dir(&merged).unwrap();
        let opts = format!("lowerdir={}:{}", u.display(), l.display());
        let st = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&merged)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t overlay failed");
        let check = || -> Vec<String> {
            let mut v: Vec<String> = walk(&merged);
            v.sort();
            v
        };
        let seen = check();
        let _ = Command::new("umount").arg(&merged).status();
        assert_eq!(seen, testutil::whiteout_merged_view(), "merged view");
    }

    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        fn rec(root: &Path, p: &Path, out: &mut Vec<String>) {
            for e in fs::read_dir(p).unwrap() {
                let e = e.unwrap();
                let rel = e
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push(rel);
                if e.file_type().unwrap().is_dir() {
                    rec(root, &e.path(), out);
                }
            }
        }
        rec(root, root, &mut out);
        out
    }
}
