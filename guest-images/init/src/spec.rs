//! The run spec: what the guest init runs, byte-exact.
//!
//! Stored in the initramfs at [`SPEC_PATH`]. Wire format, all integers little-endian:
//!
//! ```text
//! magic    8 bytes  "ISOLSPEC"
//! version  u32      1
//! args     u32 count, then count × (u32 len, len bytes)
//! env      u32 count, then count × (u32 len, len bytes)   each "KEY=VALUE"
//! workdir  u32 len, len bytes                            absolute path, "" = "/"
//! hostname u32 len, len bytes
//! ```
//!
//! Strings are raw bytes (no encoding, no terminator), so arguments with spaces,
//! quotes, newlines or any Unicode survive exactly. Trailing bytes are an error.

use std::fmt;

/// Where the spec lives inside the guest.
pub const SPEC_PATH: &str = "/isol/spec";
/// First bytes of a spec.
pub const MAGIC: &[u8; 8] = b"ISOLSPEC";
/// Format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Largest spec accepted, to bound what a corrupt file can make init allocate.
pub const MAX_SPEC_LEN: usize = 16 << 20;

/// What to run in the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spec {
    /// argv; `args[0]` is the program (looked up in the spec's `PATH` without a `/`).
    pub args: Vec<Vec<u8>>,
    /// Environment, `KEY=VALUE` each.
    pub env: Vec<Vec<u8>>,
    /// Working directory.
    pub workdir: Vec<u8>,
    /// Hostname.
    pub hostname: Vec<u8>,
}

/// Why a spec could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    /// Does not start with [`MAGIC`].
    BadMagic,
    /// Written by a newer or older format.
    BadVersion(u32),
    /// Ends in the middle of a field.
    Truncated,
    /// Bytes left after the last field.
    TrailingBytes(usize),
    /// Larger than [`MAX_SPEC_LEN`].
    TooLarge(usize),
    /// No program to run.
    NoArgs,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::BadMagic => write!(
                f,
                "Run spec has no ISOLSPEC magic; rebuild the initramfs with this isol"
            ),
            SpecError::BadVersion(v) => write!(
                f,
                "Run spec version {v} is not {VERSION}; use the guest init built with this isol"
            ),
            SpecError::Truncated => write!(
                f,
                "Run spec ends in the middle of a field; rebuild the initramfs"
            ),
            SpecError::TrailingBytes(n) => write!(
                f,
                "Run spec has {n} stray bytes at the end; rebuild the initramfs"
            ),
            SpecError::TooLarge(n) => write!(
                f,
                "Run spec is {n} bytes, over the {MAX_SPEC_LEN}-byte limit; pass fewer or shorter arguments"
            ),
            SpecError::NoArgs => write!(f, "Run spec has no command; give a command to run"),
        }
    }
}

impl std::error::Error for SpecError {}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    // Lengths above u32::MAX cannot occur: encode() callers are bounded by
    // MAX_SPEC_LEN, checked in `encode`.
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_list(out: &mut Vec<u8>, l: &[Vec<u8>]) {
    out.extend_from_slice(&(l.len() as u32).to_le_bytes());
    for b in l {
        put_bytes(out, b);
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SpecError> {
        if self.buf.len() < n {
            return Err(SpecError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn u32(&mut self) -> Result<u32, SpecError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, SpecError> {
        let n = self.u32()? as usize;
        Ok(self.take(n)?.to_vec())
    }

    fn list(&mut self) -> Result<Vec<Vec<u8>>, SpecError> {
        let n = self.u32()? as usize;
        // Each item needs at least its 4-byte length; reject counts the buffer can't hold
        // before allocating.
        if n > self.buf.len() / 4 {
            return Err(SpecError::Truncated);
        }
        (0..n).map(|_| self.bytes()).collect()
    }
}

impl Spec {
    /// Serializes the spec.
    pub fn encode(&self) -> Result<Vec<u8>, SpecError> {
        if self.args.is_empty() {
            return Err(SpecError::NoArgs);
        }
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        let total: usize = self
            .args
            .iter()
            .chain(&self.env)
            .map(|a| a.len() + 4)
            .sum::<usize>()
            + self.workdir.len()
            + self.hostname.len()
            + 28;
        if total > MAX_SPEC_LEN {
            return Err(SpecError::TooLarge(total));
        }
        put_list(&mut out, &self.args);
        put_list(&mut out, &self.env);
        put_bytes(&mut out, &self.workdir);
        put_bytes(&mut out, &self.hostname);
        Ok(out)
    }

    /// Parses a spec written by [`Spec::encode`].
    pub fn decode(buf: &[u8]) -> Result<Spec, SpecError> {
        if buf.len() > MAX_SPEC_LEN {
            return Err(SpecError::TooLarge(buf.len()));
        }
        let mut r = Reader { buf };
        if r.take(8).map_err(|_| SpecError::BadMagic)? != MAGIC {
            return Err(SpecError::BadMagic);
        }
        let version = r.u32()?;
        if version != VERSION {
            return Err(SpecError::BadVersion(version));
        }
        let spec = Spec {
            args: r.list()?,
            env: r.list()?,
            workdir: r.bytes()?,
            hostname: r.bytes()?,
        };
        if !r.buf.is_empty() {
            return Err(SpecError::TrailingBytes(r.buf.len()));
        }
        if spec.args.is_empty() {
            return Err(SpecError::NoArgs);
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Spec {
        Spec {
            args: vec![
                b"/bin/sh".to_vec(),
                b"-c".to_vec(),
                "echo 'a b' \"c\"\n\tdone ✓ 日本".as_bytes().to_vec(),
                Vec::new(),
                vec![0xff, 0x00, 0xfe],
            ],
            env: vec![b"PATH=/bin".to_vec(), b"EMPTY=".to_vec()],
            workdir: b"/tmp/with space".to_vec(),
            hostname: b"isol-vm".to_vec(),
        }
    }

    #[test]
    fn round_trip_is_byte_exact() {
        let s = sample();
        let enc = s.encode().unwrap();
        assert_eq!(&enc[..8], MAGIC);
        assert_eq!(Spec::decode(&enc).unwrap(), s);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let enc = sample().encode().unwrap();
        for n in 0..enc.len() {
            assert!(
                Spec::decode(&enc[..n]).is_err(),
                "prefix of {n} bytes accepted"
            );
        }
    }

    #[test]
    fn trailing_bytes_bad_magic_and_version_are_rejected() {
        let mut enc = sample().encode().unwrap();
        enc.push(0);
        assert_eq!(Spec::decode(&enc), Err(SpecError::TrailingBytes(1)));
        enc.pop();
        enc[8] = 9;
        assert_eq!(Spec::decode(&enc), Err(SpecError::BadVersion(9)));
        enc[0] = b'X';
        assert_eq!(Spec::decode(&enc), Err(SpecError::BadMagic));
    }

    #[test]
    fn huge_counts_do_not_allocate() {
        let mut enc = MAGIC.to_vec();
        enc.extend_from_slice(&VERSION.to_le_bytes());
        enc.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Spec::decode(&enc), Err(SpecError::Truncated));
    }

    #[test]
    fn empty_command_is_rejected() {
        assert_eq!(Spec::default().encode(), Err(SpecError::NoArgs));
    }

    #[test]
    fn messages_are_one_capitalized_line() {
        for e in [
            SpecError::BadMagic,
            SpecError::BadVersion(2),
            SpecError::Truncated,
            SpecError::TrailingBytes(1),
            SpecError::TooLarge(1),
            SpecError::NoArgs,
        ] {
            let m = e.to_string();
            assert!(
                m.starts_with(char::is_uppercase) && !m.contains('\n'),
                "{m}"
            );
        }
    }
}
