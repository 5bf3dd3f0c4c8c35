//! The guest's initramfs: a newc cpio archive ([`isol_cpio`]).
//!
//! Contents, in order: the root filesystem the VMM was given as a ready-made cpio (an
//! image's layers flattened by `isol_image::vm`, or any archive), if any; then isol's
//! own entries, which win over anything with the same name: `/dev`, `/dev/console`
//! (char 5:1, so the kernel can give init a console before devtmpfs), `/proc`, `/sys`,
//! `/isol/spec` (the run spec) and `/init` (the static guest init).
//!
//! Uncompressed: the kernel unpacks it at memory speed and a gzip pass would cost more
//! than it saves for archives of this size.

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use isol_cpio::{CpioWriter, EntryMeta, S_IFREG, dir};
use isol_guest_init::spec::Spec;

use crate::config::{Rootfs, RunSpec};

/// Errors building the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// The root filesystem's archive could not be read.
    #[error("Cannot read {path} for the initramfs: {source}; check its permissions")]
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

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> InitramfsError + '_ {
    move |source| InitramfsError::Read {
        path: path.to_owned(),
        source,
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
        user: b(&spec.user),
        security: spec.security.clone(),
        etc_files: spec
            .etc_files
            .iter()
            .map(|(n, c)| (n.as_bytes().to_vec(), c.as_bytes().to_vec()))
            .collect(),
        limits: spec.limits,
        root: spec.bundle.clone(),
        rlimits: spec.rlimits.clone(),
        groups: spec.groups.clone(),
        oci: spec.oci.clone(),
    }
}

/// Writes isol's own entries: /dev, /dev/console, /proc, /sys, /isol/spec, /init (the
/// guest init's file, copied only when the archive is written out).
fn write_isol_entries(
    w: &mut CpioWriter<Initramfs>,
    init: SourceFile,
    spec: &[u8],
) -> io::Result<()> {
    w.dev_console()?;
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
    entry_file(
        w,
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

/// Writes an entry whose data is `f`'s content, copied when the archive is written.
fn entry_file(
    w: &mut CpioWriter<Initramfs>,
    name: &[u8],
    meta: EntryMeta,
    f: SourceFile,
) -> io::Result<()> {
    w.entry_with(name, meta, f.len, |out| {
        out.push_file(f);
        Ok(())
    })
}

/// Plans the whole initramfs, or `None` for [`Rootfs::None`] ([`Rootfs::Initrd`]: that
/// file alone, byte for byte): opens the files it needs
/// and builds the rest in memory; [`crate::loader::load_initrd`] writes it into guest
/// memory.
pub fn plan_initramfs(
    rootfs: &Rootfs,
    init: Option<&Path>,
    spec: &RunSpec,
) -> Result<Option<Initramfs>, InitramfsError> {
    match rootfs {
        Rootfs::None => return Ok(None),
        // Booted as it is: nothing of isol's is added.
        Rootfs::Initrd(path) => {
            let mut out = Initramfs::default();
            out.push_file(SourceFile::open(path).map_err(read_err(path))?);
            return Ok(Some(out));
        }
        _ => {}
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
    // Padding stays relative to the start of the whole initramfs.
    let base = out.len();
    let mut w = CpioWriter::at(out, base);
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
mod tests {
    use super::*;
    use isol_cpio::testutil::{find, parse};
    use isol_cpio::{S_IFCHR, S_IFMT};

    #[test]
    fn isol_entries() {
        let spec = RunSpec {
            args: vec!["echo".into(), "a b\n\"c\"".into()],
            env: vec!["PATH=/bin".into()],
            workdir: "/".into(),
            hostname: "h".into(),
            ..Default::default()
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
        // A whole initramfs is loaded byte for byte: no init, no spec, no padding of isol's,
        // whatever init and spec the config holds.
        let whole = build_initramfs(
            &Rootfs::Initrd(t.path().to_owned()),
            Some(&std::env::current_exe().unwrap()),
            &RunSpec::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(whole, first);
        let e = build_initramfs(
            &Rootfs::Initrd("/nonexistent/initrd".into()),
            None,
            &RunSpec::default(),
        )
        .unwrap_err();
        assert!(matches!(e, InitramfsError::Read { .. }), "{e}");
    }
}
