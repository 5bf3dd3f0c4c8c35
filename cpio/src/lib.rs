//! The newc ("070701") cpio format, the one the Linux kernel unpacks as an initramfs: a
//! streaming writer.
//!
//! Two crates write it: the image crate (`isol_image::vm`), which flattens an image's
//! layers into an archive of the root filesystem, and the VMM, which appends its own
//! entries (init, the run spec) to whatever root archive it is given. Each entry's
//! header and name, and its data, start on a 4-byte boundary of the archive; an archive
//! ends with the `TRAILER!!!` entry. The kernel accepts archives concatenated one after
//! another.

use std::io::{self, Write};

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

/// The magic that starts every newc header.
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// The name of the entry that ends an archive.
pub const TRAILER: &[u8] = b"TRAILER!!!";

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

/// A directory entry with permission bits `mode`, owned by root.
pub fn dir(mode: u32) -> EntryMeta {
    EntryMeta {
        mode: S_IFDIR | mode,
        ..Default::default()
    }
}

/// Streams newc entries to a writer.
#[derive(Debug)]
pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    offset: u64,
}

impl<W: Write> CpioWriter<W> {
    /// A writer starting at offset 0 of `out`.
    pub fn new(out: W) -> Self {
        Self::at(out, 0)
    }

    /// A writer whose archive starts `offset` bytes into `out` (after another archive, a
    /// multiple of 4): padding is relative to the start of `out`.
    pub fn at(out: W, offset: u64) -> Self {
        Self {
            out,
            next_ino: 1,
            offset,
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

    /// Writes `/dev` and `/dev/console` (char 5:1), so that the kernel can give an
    /// initramfs's init its stdio before any devtmpfs is mounted.
    pub fn dev_console(&mut self) -> io::Result<()> {
        self.entry(b"dev", dir(0o755), &[])?;
        self.entry(
            b"dev/console",
            EntryMeta {
                mode: S_IFCHR | 0o600,
                rdev_major: 5,
                rdev_minor: 1,
                ..Default::default()
            },
            &[],
        )
    }

    /// Writes one entry. `name` is relative (no leading `/`).
    pub fn entry(&mut self, name: &[u8], meta: EntryMeta, data: &[u8]) -> io::Result<()> {
        let size = entry_size(data.len() as u64)?;
        self.header(name, meta, size)?;
        self.put(data)?;
        self.pad4()
    }

    /// Writes one entry of `len` bytes of data that `data` puts into the output itself
    /// (e.g. a reference to a file, copied later); `data` must add exactly `len` bytes.
    pub fn entry_with(
        &mut self,
        name: &[u8],
        meta: EntryMeta,
        len: u64,
        data: impl FnOnce(&mut W) -> io::Result<()>,
    ) -> io::Result<()> {
        let size = entry_size(len)?;
        self.header(name, meta, size)?;
        data(&mut self.out)?;
        self.offset += len;
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

/// An entry's data size as the header holds it (newc sizes are 32-bit).
fn entry_size(len: u64) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entry too large"))
}

/// A strict reader for tests.
#[cfg(any(test, feature = "testutil"))]
pub mod testutil {
    use super::{NEWC_MAGIC, TRAILER};

    /// One entry: (name, mode, rdev major, rdev minor, data).
    pub type Entry = (String, u32, u32, u32, Vec<u8>);

    /// Every entry of the archive `b`, trailer excluded, checked with the kernel's rules
    /// (4-byte alignment of the header+name and of the data, nothing after the trailer);
    /// panics on anything else.
    pub fn parse(mut b: &[u8]) -> Vec<Entry> {
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
            if name.as_bytes() == TRAILER {
                assert!(b.is_empty(), "bytes after trailer");
                return out;
            }
            out.push((name, mode, rmaj, rmin, data));
        }
    }

    /// The last entry named `name` (the one the kernel keeps).
    pub fn find<'a>(p: &'a [Entry], name: &str) -> Option<&'a Entry> {
        p.iter().rev().find(|e| e.0 == name)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::parse;
    use super::*;

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
    fn data_added_by_the_caller_is_padded_like_any_other() {
        let mut w = CpioWriter::new(Vec::new());
        let file = EntryMeta {
            mode: S_IFREG | 0o644,
            ..Default::default()
        };
        w.entry_with(b"f", file, 3, |out| {
            out.extend_from_slice(b"abc");
            Ok(())
        })
        .unwrap();
        w.entry(b"g", file, b"d").unwrap();
        let p = parse(&w.finish().unwrap());
        assert_eq!(
            (p[0].4.as_slice(), p[1].4.as_slice()),
            (&b"abc"[..], &b"d"[..])
        );
        // An archive after another: aligned to the start of the output.
        let mut w = CpioWriter::at(vec![0u8; 8], 8);
        w.entry(b"h", file, b"e").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(parse(&bytes[8..])[0].4, b"e");
    }
}
