//! The guest's root disk: an ext4 image of an OCI image's merged layers.
//!
//! The layers are merged with the same overlayfs rules as the container backend and
//! the initramfs ([`super::merge`]: a 0:0 character device or `.wh.NAME` deletes NAME
//! below, an opaque directory hides what is below it) into a staging tree of hard links (copies when a
//! link is not possible), which `mkfs.ext4 -d` turns into an image without root and
//! without a loop device. No journal: the disk is only ever attached read-only.
//!
//! Images are cached as `<cache>/v2-<digest hex>.ext4` (isol uses
//! [`crate::Store::vm_cache`]), built under an exclusive `flock` on `<cache>/lock`, into
//! a temporary name renamed into place, so concurrent runs build an image once and
//! never see a partial one.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::merge::{self, MergeError};

/// Bumped whenever the image layout changes, so old cached images are not reused.
const FORMAT: &str = "v2";

/// Errors building a root disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The digest is not `sha256:<64 hex>`.
    #[error("Image digest {0:?} is not sha256:<hex>; re-import the image")]
    Digest(String),
    /// The layers could not be merged.
    #[error(transparent)]
    Merge(#[from] MergeError),
    /// A filesystem operation failed.
    #[error("Cannot build the root disk at {path}: {source}; check free space and permissions")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// mkfs.ext4 is missing.
    #[error("mkfs.ext4 was not found; install e2fsprogs (apt-get install e2fsprogs)")]
    NoMkfs,
    /// mkfs.ext4 failed.
    #[error("mkfs.ext4 failed building {path}: {msg}; check free space in the disk cache")]
    Mkfs {
        /// Image being built.
        path: PathBuf,
        /// Its last error line.
        msg: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The cached image path for `digest`.
pub(crate) fn disk_path(cache_dir: &Path, digest: &str) -> Result<PathBuf, DiskError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DiskError::Digest(digest.into()));
    }
    Ok(cache_dir.join(format!("{FORMAT}-{hex}.ext4")))
}

/// Held for its lock; dropping it closes the file and releases the lock.
struct Flock {
    _file: fs::File,
}

impl Flock {
    fn acquire(path: &Path) -> Result<Self, DiskError> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_err(path))?;
        use std::os::unix::io::AsRawFd;
        loop {
            // SAFETY: flock on an fd we own; no memory is involved.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self { _file: f });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(io_err(path)(e));
            }
        }
    }
}

/// The root disk for the image `digest` made of `layers` (lowest first): from the
/// cache, or built now.
pub(crate) fn ensure_disk(
    cache_dir: &Path,
    digest: &str,
    layers: &[PathBuf],
    report: &mut dyn FnMut(super::Progress),
) -> Result<PathBuf, DiskError> {
    let path = disk_path(cache_dir, digest)?;
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(cache_dir).map_err(io_err(cache_dir))?;
    let _lock = Flock::acquire(&cache_dir.join("lock"))?;
    if path.is_file() {
        return Ok(path);
    }
    let tmp_base = cache_dir.join(format!(".tmp-{}", std::process::id()));
    let staging = tmp_base.with_extension("d");
    let tmp_img = tmp_base.with_extension("ext4");
    let _ = fs::remove_dir_all(&staging);
    report(super::Progress::Merging);
    let started = Instant::now();
    let result = stage(layers, &staging).and_then(|stats| {
        let staged = started.elapsed();
        build_image(&staging, &tmp_img, stats, report)?;
        tracing::debug!(
            entries = stats.entries,
            bytes = stats.bytes,
            ?staged,
            mkfs = ?started.elapsed() - staged,
            "root disk built"
        );
        fs::rename(&tmp_img, &path).map_err(io_err(&path))
    });
    let _ = fs::remove_dir_all(&staging);
    if result.is_err() {
        let _ = fs::remove_file(&tmp_img);
    }
    result.map(|()| path)
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    bytes: u64,
    entries: u64,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// Gives `p` (not what it links to) the access and modification times of `meta`, which
/// mkfs.ext4 -d copies into the image.
fn set_times(p: &Path, meta: &fs::Metadata) -> Result<(), DiskError> {
    let c = cstr(p).map_err(io_err(p))?;
    let ts = [
        libc::timespec {
            tv_sec: meta.atime() as libc::time_t,
            tv_nsec: meta.atime_nsec() as _,
        },
        libc::timespec {
            tv_sec: meta.mtime() as libc::time_t,
            tv_nsec: meta.mtime_nsec() as _,
        },
    ];
    // SAFETY: valid NUL-terminated path and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io_err(p)(io::Error::last_os_error()));
    }
    Ok(())
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    if let Ok(c) = cstr(p) {
        // SAFETY: valid NUL-terminated path. Failure (not root) keeps our ownership.
        unsafe { libc::lchown(c.as_ptr(), uid, gid) };
    }
}

/// Builds the merged tree under `dst`. Every entry keeps its times, as the image has
/// them: directories get theirs once everything in them is written.
fn stage(layers: &[PathBuf], dst: &Path) -> Result<Stats, DiskError> {
    let tree = merge::merge_layers(layers)?;
    let mut dirs = Vec::new();
    fs::create_dir_all(dst).map_err(io_err(dst))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(0o755)).map_err(io_err(dst))?;
    lchown(dst, 0, 0);
    let mut st = Stats::default();
    for (rel, src) in tree {
        let to = dst.join(&rel);
        let meta = fs::symlink_metadata(&src).map_err(io_err(&src))?;
        let ft = meta.file_type();
        st.entries += 1;
        if ft.is_dir() {
            fs::create_dir(&to).map_err(io_err(&to))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io_err(&to))?;
            dirs.push((to.clone(), meta.clone()));
        } else if ft.is_file() {
            st.bytes += meta.len().next_multiple_of(4096);
            if fs::hard_link(&src, &to).is_err() {
                fs::copy(&src, &to).map_err(io_err(&to))?;
                fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                    .map_err(io_err(&to))?;
                set_times(&to, &meta)?;
            } else {
                // Linked: same inode, metadata already right.
                continue;
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(&src).map_err(io_err(&src))?;
            std::os::unix::fs::symlink(&target, &to).map_err(io_err(&to))?;
            set_times(&to, &meta)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
            let c = cstr(&to).map_err(io_err(&to))?;
            // SAFETY: valid path; mode and dev come from an existing node.
            let rc = unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev() as libc::dev_t) };
            if rc != 0 {
                // Device nodes need root; the guest has devtmpfs anyway.
                continue;
            }
            set_times(&to, &meta)?;
        } else {
            // Sockets: skipped, as in the initramfs.
            continue;
        }
        lchown(&to, meta.uid(), meta.gid());
    }
    // Deepest first (the tree is in path order): a directory's time is set after its
    // subdirectories', whose setting does not touch their parent's.
    for (dir, meta) in dirs.iter().rev() {
        set_times(dir, meta)?;
    }
    Ok(st)
}

fn find_mkfs() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join("mkfs.ext4"))
        .find(|p| p.is_file())
}

/// mke2fs always creates `/lost+found`; the image's root must list exactly what the
/// layers have (the container's `ls /` does not show it), and fsck never runs on a
/// read-only disk. debugfs comes with mkfs.ext4; without it the directory stays.
fn remove_lost_found(mkfs: &Path, img: &Path) {
    let debugfs = mkfs.with_file_name("debugfs");
    let _ = Command::new(debugfs)
        .args(["-w", "-R", "rmdir /lost+found"])
        .arg(img)
        .output();
}

/// Runs `mkfs` to its end, telling `report` how much of `total` bytes the image `img` holds
/// (its allocated blocks: it starts sparse) every tenth of a second.
fn run_reporting(
    mkfs: &mut Command,
    img: &Path,
    total: u64,
    report: &mut dyn FnMut(super::Progress),
) -> io::Result<std::process::Output> {
    let mut child = mkfs
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // mkfs -q prints a line or two at most: the pipes never fill while it runs.
    while child.try_wait()?.is_none() {
        let done = fs::metadata(img).map_or(0, |m| m.blocks() * 512);
        report(super::Progress::Writing {
            done: done.min(total),
            total,
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    report(super::Progress::Writing { done: total, total });
    child.wait_with_output()
}

fn build_image(
    staging: &Path,
    img: &Path,
    st: Stats,
    report: &mut dyn FnMut(super::Progress),
) -> Result<(), DiskError> {
    let mkfs = find_mkfs().ok_or(DiskError::NoMkfs)?;
    let inodes = st.entries + 1024;
    // Data, one 4 KiB block per entry for directories and symlinks, inode tables
    // (256 B each), plus slack for ext4's own metadata.
    let mut size = (st.bytes + st.entries * 4096 + inodes * 256) * 5 / 4 + (16 << 20);
    let mut last = String::new();
    for _ in 0..4 {
        let _ = fs::remove_file(img);
        let f = fs::File::create(img).map_err(io_err(img))?;
        f.set_len(size.next_multiple_of(4096))
            .map_err(io_err(img))?;
        drop(f);
        let mut cmd = Command::new(&mkfs);
        cmd.args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-m",
            "0",
            "-O",
            // No journal: the disk is only ever read. No metadata checksums: mke2fs -d
            // checks every block of a directory for each entry it links into it, so
            // a directory of N entries costs N² checksums (a 570 MB tree with a
            // 17 877-entry directory: 23 s of CPU with them, 5.5 s without).
            "^has_journal,^metadata_csum",
        ])
        .args(["-N", &inodes.to_string(), "-L", "isol-root", "-d"])
        .arg(staging)
        .arg(img);
        // What the disk will hold: the files' data and the inode tables.
        let total = st.bytes + inodes * 256;
        let out = run_reporting(&mut cmd, img, total, report).map_err(io_err(&mkfs))?;
        if out.status.success() {
            remove_lost_found(&mkfs, img);
            return Ok(());
        }
        last = String::from_utf8_lossy(&out.stderr)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("unknown error")
            .trim()
            .to_owned();
        // Most likely too small: try again, bigger.
        size *= 2;
    }
    Err(DiskError::Mkfs {
        path: img.to_owned(),
        msg: last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_names_the_image() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let p = disk_path(Path::new("/c"), &d).unwrap();
        assert_eq!(
            p,
            Path::new("/c").join(format!("v2-{}.ext4", "ab".repeat(32)))
        );
        assert!(disk_path(Path::new("/c"), "sha256:../../etc").is_err());
    }

    #[test]
    fn layers_become_one_ext4_image_with_whiteouts_applied() {
        if find_mkfs().is_none() {
            eprintln!("skipped: mkfs.ext4 not installed");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
        fs::create_dir_all(l1.join("etc")).unwrap();
        fs::create_dir_all(l2.join("etc")).unwrap();
        fs::write(l1.join("etc/keep"), b"keep").unwrap();
        fs::write(l1.join("etc/gone"), b"gone").unwrap();
        fs::write(l2.join("etc/.wh.gone"), b"").unwrap();
        fs::write(l2.join("new"), b"new").unwrap();
        std::os::unix::fs::symlink("new", l2.join("link")).unwrap();
        let cache = t.path().join("cache");
        let digest = format!("sha256:{}", "0".repeat(64));
        let mut steps = Vec::new();
        let layers = [l1, l2];
        let img = ensure_disk(&cache, &digest, &layers, &mut |p| steps.push(p)).unwrap();
        assert!(img.is_file());
        // Merging, then writing, which ends with all of it written.
        assert_eq!(steps[0], crate::vm::Progress::Merging, "{steps:?}");
        let Some(&crate::vm::Progress::Writing { done, total }) = steps.last() else {
            panic!("{steps:?}");
        };
        assert!(done == total && total > 0, "{steps:?}");
        // Cached: the same path, not rebuilt, nothing reported.
        let mtime = fs::metadata(&img).unwrap().modified().unwrap();
        let mut again = Vec::new();
        assert_eq!(
            ensure_disk(&cache, &digest, &layers, &mut |p| again.push(p)).unwrap(),
            img
        );
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(fs::metadata(&img).unwrap().modified().unwrap(), mtime);
        // No staging left behind.
        let left: Vec<_> = fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // The content, read back with debugfs when available.
        let Ok(out) = Command::new("debugfs")
            .args(["-R", "ls -l /etc"])
            .arg(&img)
            .output()
        else {
            return;
        };
        let ls = String::from_utf8_lossy(&out.stdout);
        assert!(ls.contains("keep"), "{ls}");
        assert!(!ls.contains("gone"), "{ls}");
        let out = Command::new("debugfs")
            .args(["-R", "ls /"])
            .arg(&img)
            .output()
            .unwrap();
        let root = String::from_utf8_lossy(&out.stdout);
        assert!(!root.contains("lost+found"), "{root}");
    }

    /// The `mtime: 0x…` that `debugfs -R "stat PATH"` reads from `img`; none without debugfs.
    fn disk_mtime(img: &Path, path: &str) -> Option<i64> {
        let out = Command::new("debugfs")
            .args(["-R", &format!("stat {path}")])
            .arg(img)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text
            .split("mtime: 0x")
            .nth(1)
            .unwrap_or_else(|| panic!("no mtime for {path}: {text}"));
        let hex: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
        Some(i64::from_str_radix(&hex, 16).unwrap())
    }

    fn set_mtime(p: &Path, secs: i64) {
        let c = cstr(p).unwrap();
        let t = libc::timespec {
            tv_sec: secs as libc::time_t,
            tv_nsec: 0,
        };
        // SAFETY: valid path and a two-element timespec array.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                [t, t].as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
    }

    #[test]
    fn directories_files_and_symlinks_keep_their_times() {
        if find_mkfs().is_none() {
            eprintln!("skipped: mkfs.ext4 not installed");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
        fs::create_dir_all(l1.join("usr/bin")).unwrap();
        fs::create_dir_all(l2.join("etc/deep")).unwrap();
        fs::write(l1.join("usr/bin/tool"), b"x").unwrap();
        fs::write(l2.join("etc/deep/conf"), b"y").unwrap();
        std::os::unix::fs::symlink("usr/bin", l1.join("bin")).unwrap();
        // An entry the upper layer adds to a directory of the lower one: the merged
        // directory shows the upper layer's time, as overlayfs does.
        fs::create_dir_all(l2.join("usr")).unwrap();
        fs::write(l2.join("usr/added"), b"z").unwrap();
        let times = [
            (l1.join("usr/bin/tool"), 1_000_000_001),
            (l1.join("usr/bin"), 1_000_000_002),
            (l1.join("usr"), 1_000_000_003),
            (l1.join("bin"), 1_000_000_004),
            (l2.join("etc/deep/conf"), 1_000_000_005),
            (l2.join("etc/deep"), 1_000_000_006),
            (l2.join("etc"), 1_000_000_007),
            (l2.join("usr/added"), 1_000_000_008),
            (l2.join("usr"), 1_000_000_009),
        ];
        for (p, secs) in &times {
            set_mtime(p, *secs);
        }
        let digest = format!("sha256:{}", "1".repeat(64));
        let img = ensure_disk(&t.path().join("cache"), &digest, &[l1, l2], &mut |_| {}).unwrap();
        let want = [
            ("/usr/bin/tool", 1_000_000_001),
            ("/usr/bin", 1_000_000_002),
            ("/bin", 1_000_000_004),
            ("/etc/deep/conf", 1_000_000_005),
            ("/etc/deep", 1_000_000_006),
            ("/etc", 1_000_000_007),
            ("/usr/added", 1_000_000_008),
            ("/usr", 1_000_000_009),
        ];
        for (path, secs) in want {
            let Some(got) = disk_mtime(&img, path) else {
                eprintln!("skipped the read-back: debugfs not installed");
                return;
            };
            assert_eq!(got, secs, "mtime of {path} in the disk");
        }
    }
}
