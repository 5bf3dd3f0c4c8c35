//! Small filesystem helpers: crash-safe writes, hashing readers, the store
//! lock and compression sniffing.

use std::cell::Cell;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};

use crate::ImageError;

/// Prefix of every temporary file or directory the store creates; anything
/// with this prefix is swept by [`crate::Store::open`].
pub(crate) const TMP_PREFIX: &str = ".tmp-";

/// A unique temporary name (`.tmp-<what>-<pid>-<nanos>-<n>`).
pub(crate) fn tmp_name(what: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{TMP_PREFIX}{what}-{}-{nanos}-{n}", std::process::id())
}

/// Whether the process that made the temporary `name` (see [`tmp_name`]) still runs: then it
/// is work in progress, done without the store lock (unpacking, staging an import), which a
/// sweep must leave alone. A name without a pid, or a dead pid, is a leftover.
pub(crate) fn tmp_owner_alive(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
        return false;
    };
    let mut fields = rest.rsplitn(4, '-');
    let (_n, _nanos) = (fields.next(), fields.next());
    match fields.next().and_then(|p| p.parse::<i32>().ok()) {
        Some(pid) if pid > 0 => match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
        {
            Ok(()) | Err(nix::errno::Errno::EPERM) => true,
            Err(_) => false,
        },
        _ => false,
    }
}

/// A reader that fails once more than `limit` bytes came through: a decompression bomb
/// stops there instead of filling the disk. The error is recognised by [`is_too_large`].
pub(crate) struct LimitedReader<R> {
    pub(crate) inner: R,
    pub(crate) limit: u64,
    pub(crate) read: u64,
}

const TOO_LARGE: &str = "isol: the stream is larger than its limit";

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(TOO_LARGE));
        }
        Ok(n)
    }
}

/// Whether `e` (or an error it wraps) is a [`LimitedReader`]'s.
pub(crate) fn is_too_large(e: &io::Error) -> bool {
    // The tar reader wraps the error in its own, which only the chain's text shows.
    crate::unpack::error_chain(e).contains(TOO_LARGE)
}

/// The most a layer whose blob has `blob_size` bytes may expand to: a hundred times its size,
/// and at least 1 GiB. Ordinary layers expand 2–10 times; gzip's most is about 1000 times, which
/// is what a decompression bomb uses.
pub(crate) fn expansion_limit(blob_size: u64) -> u64 {
    blob_size.saturating_mul(100).max(LIMIT_FLOOR.get())
}

thread_local! {
    /// The least [`expansion_limit`] gives; lowered by tests so that a bomb can be small.
    pub(crate) static LIMIT_FLOOR: Cell<u64> = const { Cell::new(1 << 30) };
}

/// `sha256:<hex>` of a byte slice.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Checks that `digest` is `sha256:` followed by 64 lowercase hex digits and
/// returns the hex part.
pub(crate) fn sha256_hex(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

/// Fsyncs a directory so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ImageError::io("sync", dir))
}

/// Writes `bytes` to `path` crash-safely: a temporary file in the same
/// directory, fsync, rename, fsync of the directory.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(tmp_name("write"));
    let res = (|| {
        let mut f = File::create(&tmp).map_err(ImageError::io("create", &tmp))?;
        f.write_all(bytes).map_err(ImageError::io("write", &tmp))?;
        f.sync_all().map_err(ImageError::io("sync", &tmp))?;
        fs::rename(&tmp, path).map_err(ImageError::io("rename into place", path))?;
        sync_dir(dir)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// A reader that hashes (sha256) and counts everything read through it.
#[derive(Debug)]
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Reads the rest of the stream and returns (`sha256:<hex>`, total length).
    pub(crate) fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.len,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// A reader that counts bytes into a shared cell (for progress reports).
#[derive(Debug)]
pub(crate) struct CountingReader<R> {
    pub(crate) inner: R,
    pub(crate) count: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

/// What the first bytes of a stream say about its compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Looks at the first bytes of `file` (and rewinds it).
pub(crate) fn sniff(file: &mut File, path: &Path) -> Result<Compression, ImageError> {
    use std::io::Seek;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ImageError::io("read", path)(e)),
        }
    }
    file.rewind().map_err(ImageError::io("read", path))?;
    Ok(match &magic[..got] {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    })
}

/// Wraps `reader` in a decompressor for `compression`.
pub(crate) fn decompress<'a, R: Read + 'a>(
    reader: R,
    compression: Compression,
    what: &str,
) -> Result<Box<dyn Read + 'a>, ImageError> {
    match compression {
        Compression::None => Ok(Box::new(reader)),
        Compression::Gzip => Ok(Box::new(flate2::read::MultiGzDecoder::new(reader))),
        Compression::Zstd => Err(ImageError::Unsupported {
            what: format!("zstd compression of {what}"),
            hint: "re-export the image with gzip or uncompressed layers".into(),
        }),
    }
}

/// The store-wide writer lock (`flock` on `<root>/lock`), released on drop.
#[derive(Debug)]
pub(crate) struct StoreLock {
    _lock: Flock<File>,
}

impl StoreLock {
    fn open(path: &Path) -> Result<File, ImageError> {
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(ImageError::io("open the lock file", path))
    }

    /// Blocks until the lock is ours.
    pub(crate) fn acquire(path: &Path) -> Result<StoreLock, ImageError> {
        let file = Self::open(path)?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| ImageError::Io {
            action: "lock",
            path: path.into(),
            source: e.into(),
        })?;
        Ok(StoreLock { _lock: lock })
    }

    /// Takes the lock if nobody holds it.
    pub(crate) fn try_acquire(path: &Path) -> Result<Option<StoreLock>, ImageError> {
        let file = Self::open(path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(StoreLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(ImageError::Io {
                action: "lock",
                path: path.into(),
                source: e.into(),
            }),
        }
    }
}

/// Removes a file or a directory tree, ignoring "not found".
pub(crate) fn remove_any(path: &Path) -> Result<(), ImageError> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    res.map_err(ImageError::io("remove", path))
}

/// Whether the effective user is root (decides ownership, device nodes and
/// which overlay xattr namespace is used).
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `path` made absolute against the current directory (not canonicalised).
pub(crate) fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn hashing_reader_matches_digest() {
        let (d, n) = HashingReader::new(&b"hello"[..]).finish().unwrap();
        assert_eq!(d, sha256_digest(b"hello"));
        assert_eq!(n, 5);
        assert!(sha256_hex(&d).is_some());
        assert!(sha256_hex("sha256:ABC").is_none());
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let held = StoreLock::acquire(&p).unwrap();
        assert!(StoreLock::try_acquire(&p).unwrap().is_none());
        drop(held);
        assert!(StoreLock::try_acquire(&p).unwrap().is_some());
    }

    #[test]
    fn sniff_detects_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("g");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"x").unwrap();
        fs::write(&p, enc.finish().unwrap()).unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(sniff(&mut f, &p).unwrap(), Compression::Gzip);
        fs::write(&p, b"plain").unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(sniff(&mut f, &p).unwrap(), Compression::None);
    }
}
