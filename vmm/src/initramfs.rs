//! The guest's initramfs: a newc cpio archive written in Rust.
//!
//! Contents, in order: the merged root filesystem (image layers lowest first, with
//! overlayfs whiteouts applied: a 0:0 character device or a `.wh.NAME` file deletes
//! NAME from the layers below, a directory with `trusted.overlay.opaque=y` or a
//! `.wh..wh..opq` file hides everything below it), or a ready-made cpio; then isol's
//! own entries, which win over anything with the same name: `/dev`, `/dev/console`
//! (char 5:1, so the kernel can give init a console before devtmpfs), `/proc`, `/sys`,
//! `/isol/spec` (the run spec) and `/init` (the static guest init).
//!
//! Hard links are stored as independent copies; sockets are skipped. Uncompressed:
//! the kernel unpacks it at memory speed and a gzip pass would cost more than it saves
//! for images of this size.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use isol_guest_init::spec::Spec;

use crate::config::{Rootfs, RunSpec};

/// Errors building the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A file of the root filesystem could not be read.
    #[error(
        "Cannot read {path} for the initramfs: {source}; check the unpacked image's permissions"
    )]
    Read {
        /// Path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The guest init binary could not be read.
    #[error("Cannot read the guest init {path}: {source}; build isol-guest-init (static) first")]
    Init {
        /// Path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The run spec could not be encoded.
    #[error("Cannot encode the run spec: {0}")]
    Spec(isol_guest_init::spec::SpecError),
    /// An entry is too large for the newc format (4 GiB).
    #[error("{0} is 4 GiB or larger, too large for a cpio initramfs; remove it from the image")]
    TooLarge(PathBuf),
    /// Writing the archive failed.
    #[error("Cannot write the initramfs: {0}; check free memory")]
    Write(io::Error),
}

/// File type bits of `st_mode`.
pub const S_IFMT: u32 = 0o170000;
/// Directory.
pub const S_IFDIR: u32 = 0o040000;
/// Regular file.
pub const S_IFREG: u32 = 0o100000;
/// Symbolic link.
pub const S_IFLNK: u32 = 0o120000;
/// Character device.
pub const S_IFCHR: u32 = 0o020000;
/// Block device.
pub const S_IFBLK: u32 = 0o060000;
/// FIFO.
pub const S_IFIFO: u32 = 0o010000;

/// Metadata of one archive entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// Type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds since the epoch).
    pub mtime: u32,
    /// Device major (for device nodes).
    pub rdev_major: u32,
    /// Device minor.
    pub rdev_minor: u32,
}

/// Streams newc ("070701") entries to a writer.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    offset: u64,
}

const NEWC_MAGIC: &[u8; 6] = b"070701";
const TRAILER: &[u8] = b"TRAILER!!!";

impl<W: Write> CpioWriter<W> {
    /// A writer starting at offset 0 of `out`.
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_ino: 1,
            offset: 0,
        }
    }

    fn put(&mut self, b: &[u8]) -> io::Result<()> {
        self.out.write_all(b)?;
        self.offset += b.len() as u64;
        Ok(())
    }

    fn pad4(&mut self) -> io::Result<()> {
        let pad = (4 - (self.offset % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    /// Writes one entry. `name` is relative (no leading `/`).
    pub fn entry(&mut self, name: &[u8], meta: EntryMeta, data: &[u8]) -> io::Result<()> {
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry too large"))?;
        self.header(name, meta, size)?;
        self.put(data)?;
        self.pad4()
    }

    /// The header and name of an entry whose `size` bytes of data come next.
    fn header(&mut self, name: &[u8], meta: EntryMeta, size: u32) -> io::Result<()> {
        let nlink = if meta.mode & S_IFMT == S_IFDIR { 2 } else { 1 };
        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino,
            meta.mode,
            meta.uid,
            meta.gid,
            nlink,
            meta.mtime,
            size,
            0, // devmajor
            0, // devminor
            meta.rdev_major,
            meta.rdev_minor,
            name.len() as u32 + 1,
            0, // check
        ];
        let mut header = Vec::with_capacity(110);
        header.extend_from_slice(NEWC_MAGIC);
        for f in fields {
            header.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        self.put(&header)?;
        self.put(name)?;
        self.put(&[0])?;
        self.pad4()
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry(TRAILER, EntryMeta::default(), &[])?;
        Ok(self.out)
    }
}

/// How an entry of the merged tree is produced.
#[derive(Debug, Clone)]
enum Source {
    /// A file in one of the layers.
    Layer(PathBuf),
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> InitramfsError + '_ {
    move |source| InitramfsError::Read {
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

fn remove_subtree(map: &mut BTreeMap<PathBuf, Source>, root: &Path, keep_root: bool) {
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
) -> Result<(), InitramfsError> {
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

/// Merges `layers` (lowest first) with overlayfs whiteout rules. Keys are relative paths.
fn merge_layers(layers: &[PathBuf]) -> Result<BTreeMap<PathBuf, Source>, InitramfsError> {
    let mut map: BTreeMap<PathBuf, Source> = BTreeMap::new();
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
            map.insert(rel, Source::Layer(abs));
        }
    }
    Ok(map)
}

/// The merged tree of `layers` as `(path relative to the root, file in a layer)`,
/// parents before children (used by [`crate::rootfs_image`] to stage a disk image).
pub(crate) fn merged_tree(layers: &[PathBuf]) -> Result<Vec<(PathBuf, PathBuf)>, InitramfsError> {
    Ok(merge_layers(layers)?
        .into_iter()
        .map(|(rel, Source::Layer(abs))| (rel, abs))
        .collect())
}

fn major(rdev: u64) -> u32 {
    (((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0xfff)) as u32
}

fn minor(rdev: u64) -> u32 {
    (((rdev >> 12) & 0xffff_ff00) | (rdev & 0xff)) as u32
}

fn write_tree<W: Write>(
    w: &mut CpioWriter<W>,
    map: &BTreeMap<PathBuf, Source>,
) -> Result<(), InitramfsError> {
    for (rel, src) in map {
        let Source::Layer(abs) = src;
        let meta = fs::symlink_metadata(abs).map_err(read_err(abs))?;
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
                return Err(InitramfsError::TooLarge(abs.clone()));
            }
            fs::read(abs).map_err(read_err(abs))?
        } else if ft.is_symlink() {
            fs::read_link(abs)
                .map_err(read_err(abs))?
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
            .map_err(InitramfsError::Write)?;
    }
    Ok(())
}

fn dir(mode: u32) -> EntryMeta {
    EntryMeta {
        mode: S_IFDIR | mode,
        ..Default::default()
    }
}

/// Converts the public run spec to the wire spec.
pub fn wire_spec(spec: &RunSpec) -> Spec {
    let b = |s: &std::ffi::OsStr| s.as_bytes().to_vec();
    Spec {
        args: spec.args.iter().map(|a| b(a)).collect(),
        env: spec.env.iter().map(|a| b(a)).collect(),
        workdir: b(&spec.workdir),
        hostname: b(&spec.hostname),
    }
}

/// Writes isol's own entries: /dev, /dev/console, /proc, /sys, /isol/spec, /init (the
/// guest init's file, copied only when the archive is written out).
fn write_isol_entries(
    w: &mut CpioWriter<Initramfs>,
    init: SourceFile,
    spec: &[u8],
) -> io::Result<()> {
    w.entry(b"dev", dir(0o755), &[])?;
    w.entry(
        b"dev/console",
        EntryMeta {
            mode: S_IFCHR | 0o600,
            rdev_major: 5,
            rdev_minor: 1,
            ..Default::default()
        },
        &[],
    )?;
    w.entry(b"proc", dir(0o555), &[])?;
    w.entry(b"sys", dir(0o555), &[])?;
    w.entry(b"isol", dir(0o755), &[])?;
    w.entry(
        b"isol/spec",
        EntryMeta {
            mode: S_IFREG | 0o444,
            ..Default::default()
        },
        spec,
    )?;
    w.entry_file(
        b"init",
        EntryMeta {
            mode: S_IFREG | 0o755,
            ..Default::default()
        },
        init,
    )
}

/// A regular file of the initramfs (the guest init, a cached root archive), open since
/// the archive was planned, read only where the archive is written.
#[derive(Debug)]
pub struct SourceFile {
    /// For errors.
    pub path: PathBuf,
    /// The open file.
    pub file: fs::File,
    /// Its length when it was opened; a file that is shorter when read is an error.
    pub len: u64,
}

impl SourceFile {
    fn open(path: &Path) -> io::Result<SourceFile> {
        let file = fs::File::open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(SourceFile {
            path: path.to_owned(),
            file,
            len: meta.len(),
        })
    }
}

/// One part of an [`Initramfs`].
#[derive(Debug)]
pub enum Piece {
    /// Built in memory (headers, the spec, a merged layer tree).
    Bytes(Vec<u8>),
    /// A file's content.
    File(SourceFile),
}

/// An initramfs ready to be written where it goes. The large parts, the guest init
/// (1.3 MB) and a cached root archive, are files read straight into guest memory when it
/// is loaded, not into a heap buffer first: every fresh heap page is a page fault, and
/// a page fault costs ~0.3–0.5 ms on a nested or emulated host (docs/benchmarks-vm.md).
#[derive(Debug, Default)]
pub struct Initramfs {
    pieces: Vec<Piece>,
    len: u64,
}

impl Initramfs {
    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it has no bytes at all (never, once planned: the trailer is always there).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its parts, in order, for the loader to write.
    pub fn pieces_mut(&mut self) -> &mut [Piece] {
        &mut self.pieces
    }

    fn push_file(&mut self, f: SourceFile) {
        self.len += f.len;
        self.pieces.push(Piece::File(f));
    }

    /// The whole archive as bytes (reads the files).
    pub fn into_bytes(self) -> Result<Vec<u8>, InitramfsError> {
        let mut out = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        for p in self.pieces {
            match p {
                Piece::Bytes(b) => out.extend_from_slice(&b),
                Piece::File(SourceFile { path, file, len }) => {
                    let start = out.len();
                    io::Read::read_to_end(&mut io::Read::take(file, len), &mut out)
                        .map_err(read_err(&path))?;
                    if ((out.len() - start) as u64) < len {
                        return Err(InitramfsError::Read {
                            path,
                            source: io::ErrorKind::UnexpectedEof.into(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}

impl Write for Initramfs {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self.pieces.last_mut() {
            Some(Piece::Bytes(v)) => v.extend_from_slice(b),
            _ => self.pieces.push(Piece::Bytes(b.to_vec())),
        }
        self.len += b.len() as u64;
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl CpioWriter<Initramfs> {
    /// Writes an entry whose data is `f`'s content, copied when the archive is written.
    fn entry_file(&mut self, name: &[u8], meta: EntryMeta, f: SourceFile) -> io::Result<()> {
        let size = u32::try_from(f.len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry too large"))?;
        self.header(name, meta, size)?;
        self.offset += f.len;
        self.out.push_file(f);
        self.pad4()
    }
}

/// The merged `layers` alone as a complete newc archive, for callers that cache it per
/// image and pass it back as [`Rootfs::Cpio`] (isol's entries are appended after it).
pub fn layers_cpio(layers: &[PathBuf]) -> Result<Vec<u8>, InitramfsError> {
    let mut w = CpioWriter::new(Vec::new());
    write_tree(&mut w, &merge_layers(layers)?)?;
    w.finish().map_err(InitramfsError::Write)
}

/// Plans the whole initramfs, or `None` for [`Rootfs::None`]: opens the files it needs
/// and builds the rest in memory; [`crate::loader::load_initrd`] writes it into guest
/// memory.
pub fn plan_initramfs(
    rootfs: &Rootfs,
    init: Option<&Path>,
    spec: &RunSpec,
) -> Result<Option<Initramfs>, InitramfsError> {
    if *rootfs == Rootfs::None {
        return Ok(None);
    }
    let init_path = init.unwrap_or(Path::new("/init"));
    let init_file = SourceFile::open(init_path).map_err(|source| InitramfsError::Init {
        path: init_path.to_owned(),
        source,
    })?;
    if u32::try_from(init_file.len).is_err() {
        return Err(InitramfsError::TooLarge(init_path.to_owned()));
    }
    let spec_bytes = wire_spec(spec).encode().map_err(InitramfsError::Spec)?;

    let mut out = Initramfs::default();
    if let Rootfs::Cpio(path) = rootfs {
        out.push_file(SourceFile::open(path).map_err(read_err(path))?);
        // The kernel accepts concatenated archives; each starts on a 4-byte boundary.
        let pad = out.len().next_multiple_of(4) - out.len();
        out.write_all(&[0u8; 3][..pad as usize])
            .map_err(InitramfsError::Write)?;
    }
    let base = out.len();
    let mut w = CpioWriter::new(out);
    // Keep offsets relative to this archive's start for padding.
    w.offset = base;
    if let Rootfs::Layers(layers) = rootfs {
        let map = merge_layers(layers)?;
        write_tree(&mut w, &map)?;
    }
    write_isol_entries(&mut w, init_file, &spec_bytes).map_err(InitramfsError::Write)?;
    Ok(Some(w.finish().map_err(InitramfsError::Write)?))
}

/// Builds the whole initramfs as bytes, or `None` for [`Rootfs::None`] (for a VMM
/// other than isol's: the benchmarks give it to QEMU as a file).
pub fn build_initramfs(
    rootfs: &Rootfs,
    init: Option<&Path>,
    spec: &RunSpec,
) -> Result<Option<Vec<u8>>, InitramfsError> {
    plan_initramfs(rootfs, init, spec)?
        .map(Initramfs::into_bytes)
        .transpose()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// (name, mode, rdev major, rdev minor, data) of each entry, trailer excluded.
    pub(crate) type Parsed = Vec<(String, u32, u32, u32, Vec<u8>)>;

    /// A strict newc parser for the tests (the kernel's rules: 4-byte alignment of the
    /// header+name and of the data).
    pub(crate) fn parse(mut b: &[u8]) -> Parsed {
        let mut out = Vec::new();
        let start_len = b.len();
        loop {
            assert_eq!((start_len - b.len()) % 4, 0, "entry not 4-aligned");
            assert_eq!(&b[..6], NEWC_MAGIC);
            let field = |i: usize| {
                u32::from_str_radix(std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).unwrap(), 16)
                    .unwrap()
            };
            let (mode, size, rmaj, rmin, namesize) =
                (field(1), field(6), field(9), field(10), field(11));
            let name = String::from_utf8(b[110..110 + namesize as usize - 1].to_vec()).unwrap();
            assert_eq!(b[110 + namesize as usize - 1], 0, "name NUL");
            let data_start = (110 + namesize as usize).next_multiple_of(4);
            let data = b[data_start..data_start + size as usize].to_vec();
            let next = (data_start + size as usize).next_multiple_of(4);
            b = &b[next..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty(), "bytes after trailer");
                return out;
            }
            out.push((name, mode, rmaj, rmin, data));
        }
    }

    fn find<'a>(p: &'a Parsed, name: &str) -> Option<&'a (String, u32, u32, u32, Vec<u8>)> {
        p.iter().rev().find(|e| e.0 == name)
    }

    #[test]
    fn newc_format() {
        let mut w = CpioWriter::new(Vec::new());
        w.entry(b"a", dir(0o755), &[]).unwrap();
        w.entry(
            b"a/file",
            EntryMeta {
                mode: S_IFREG | 0o644,
                uid: 1000,
                gid: 1000,
                mtime: 1234,
                ..Default::default()
            },
            b"hello",
        )
        .unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(&bytes[..6], b"070701");
        // ino 1, mode 040755.
        assert_eq!(&bytes[6..22], b"00000001000041ED");
        let p = parse(&bytes);
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].0, "a/file");
        assert_eq!(p[1].4, b"hello");
        assert_eq!(p[1].1, S_IFREG | 0o644);
    }

    #[test]
    fn isol_entries() {
        let spec = RunSpec {
            args: vec!["echo".into(), "a b\n\"c\"".into()],
            env: vec!["PATH=/bin".into()],
            workdir: "/".into(),
            hostname: "h".into(),
        };
        let img = build_initramfs(
            &Rootfs::Empty,
            Some(&std::env::current_exe().unwrap()),
            &spec,
        )
        .unwrap()
        .unwrap();
        let p = parse(&img);
        let console = find(&p, "dev/console").unwrap();
        assert_eq!((console.1 & S_IFMT, console.2, console.3), (S_IFCHR, 5, 1));
        let init = find(&p, "init").unwrap();
        assert_eq!(init.1, S_IFREG | 0o755);
        assert_eq!(
            init.4.len() as u64,
            fs::metadata(std::env::current_exe().unwrap())
                .unwrap()
                .len()
        );
        let s = Spec::decode(&find(&p, "isol/spec").unwrap().4).unwrap();
        assert_eq!(s.args[1], b"a b\n\"c\"");
        assert!(
            build_initramfs(&Rootfs::None, None, &spec)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn layers_merge_with_whiteouts() {
        let t = tempfile::tempdir().unwrap();
        let (l1, l2) = (t.path().join("l1"), t.path().join("l2"));
        for d in ["bin", "etc/sub", "opaque/old", "gone/deep", "replaced"] {
            fs::create_dir_all(l1.join(d)).unwrap();
        }
        fs::write(l1.join("bin/tool"), b"v1").unwrap();
        fs::write(l1.join("etc/keep"), b"keep").unwrap();
        fs::write(l1.join("etc/sub/x"), b"x").unwrap();
        fs::write(l1.join("etc/deleted"), b"d").unwrap();
        fs::write(l1.join("opaque/old/f"), b"f").unwrap();
        fs::write(l1.join("gone/deep/f"), b"f").unwrap();
        fs::write(l1.join("replaced/f"), b"f").unwrap();
        symlink("tool", l1.join("bin/link")).unwrap();
        fs::set_permissions(l1.join("bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();

        for d in ["bin", "etc", "opaque"] {
            fs::create_dir_all(l2.join(d)).unwrap();
        }
        fs::write(l2.join("bin/tool"), b"v2").unwrap();
        fs::write(l2.join("etc/.wh.deleted"), b"").unwrap();
        fs::write(l2.join("opaque/.wh..wh..opq"), b"").unwrap();
        fs::write(l2.join("opaque/new"), b"n").unwrap();
        fs::write(l2.join(".wh.gone"), b"").unwrap();
        fs::write(l2.join("replaced"), b"now a file").unwrap();

        let img = build_initramfs(
            &Rootfs::Layers(vec![l1, l2]),
            Some(&std::env::current_exe().unwrap()),
            &RunSpec {
                args: vec!["x".into()],
                ..Default::default()
            },
        )
        .unwrap()
        .unwrap();
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

    #[test]
    fn prebuilt_cpio_gets_isol_entries_appended() {
        let mut w = CpioWriter::new(Vec::new());
        w.entry(
            b"hello",
            EntryMeta {
                mode: S_IFREG | 0o644,
                ..Default::default()
            },
            b"abc",
        )
        .unwrap();
        let mut first = w.finish().unwrap();
        first.extend_from_slice(&[0; 3]); // odd trailing padding, as some tools leave
        let t = tempfile::NamedTempFile::new().unwrap();
        fs::write(t.path(), &first).unwrap();
        let img = build_initramfs(
            &Rootfs::Cpio(t.path().to_owned()),
            Some(&std::env::current_exe().unwrap()),
            &RunSpec {
                args: vec!["x".into()],
                ..Default::default()
            },
        )
        .unwrap()
        .unwrap();
        let second = first.len().next_multiple_of(4);
        assert_eq!(&img[..first.len()], &first[..]);
        let p = parse(&img[second..]);
        assert!(find(&p, "init").is_some());
    }

    #[test]
    fn device_numbers() {
        let rdev = libc::makedev(259, 70000);
        assert_eq!((major(rdev), minor(rdev)), (259, 70000));
    }
}
