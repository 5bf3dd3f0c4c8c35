//! The run spec: what the guest init runs, byte-exact.
//!
//! Stored in the initramfs at [`SPEC_PATH`]. Wire format, all integers little-endian:
//!
//! ```text
//! magic    8 bytes  "ISOLSPEC"
//! version  u32      6
//! args     u32 count, then count × (u32 len, len bytes)
//! env      u32 count, then count × (u32 len, len bytes)   each "KEY=VALUE"
//! workdir  u32 len, len bytes                            absolute path, "" = "/"
//! hostname u32 len, len bytes
//! user     u32 len, len bytes                            uid[:gid] or name[:group], "" = root
//! caps     u8 (0: keep every capability, 1: the mask follows), u64 mask
//! nnp      u8 (0 or 1)                                   no_new_privs
//! seccomp  u32 count (≤ 4096), then count × (u16 code, u8 jt, u8 jf, u32 k)
//! etc      u32 count (≤ 16), then count × (name: u32 len, bytes; content: u32 len, bytes)
//! pids     u8 (0: no limit, 1: the limit follows), u64 limit   pids.max, ≥ 1
//! memory   u8 (0: no limit, 1: the limit follows), u64 bytes   memory.max, ≥ 1
//! root     u8 (0: the root disk or the initramfs, 1: a bundle root follows):
//!            tag u32 len, bytes; readonly u8;
//!            mounts u32 count (≤ 256), then count × (fstype, source, target: u32 len,
//!            bytes each; flags u64; data u32 len, bytes);
//!            oom_score_adj u8 (0: none, 1: the value follows), i32
//! rlimits  u32 count (≤ 64), then count × (u32 resource, u64 soft, u64 hard)
//! groups   u8 (0: /etc/group's, 1: the list follows), u32 count (≤ 1024), count × u32
//! sysctl   u32 count (≤ 256), then count × (key, value: u32 len, bytes each)
//! domain   u32 len, bytes                                domainname, "" = the kernel's
//! umask    u8 (0: the init's, 1: the mask follows), u32 mask (≤ 0o777)
//! masked   u32 count (≤ 256), then count × (u32 len, bytes)   absolute paths
//! readonly u32 count (≤ 256), then count × (u32 len, bytes)   absolute paths
//! capsets  u64 inheritable, u64 ambient                  (bit n = capability n)
//! ```
//!
//! Strings are raw bytes (no encoding, no terminator), so arguments with spaces,
//! quotes, newlines or any Unicode survive exactly. Trailing bytes are an error.
//!
//! Version 2 added the workload's identity and privileges ([`Security`]): the host
//! decides them (the same flags give the container backend the same ones), the guest
//! init applies them just before `execve`. An init that reads version 1 would run the
//! workload as root with every capability, so a version mismatch is refused.
//!
//! Version 3 added the files the init writes into the root's `/etc` before the workload
//! ([`Spec::etc_files`]: `hostname`, `hosts`, `resolv.conf`, as a container run with the same
//! flags gets them). A name is one path component of `/etc`: no `/`, not `.` or `..`.
//!
//! Version 4 added the workload's cgroup limits ([`Limits`]: `--pids-limit`, `--memory`),
//! which the init enforces with the guest kernel's own cgroup v2. An init that reads
//! version 3 would run the workload without them, so the mismatch is refused as before.
//!
//! Version 5 added an OCI bundle's root ([`BundleRoot`]: the guest's root is the `rootfs`
//! directory of a virtio-fs share, with the config's mounts, `isol-runc` on kvm), the
//! workload's resource limits ([`Rlimit`]) and its exact supplementary groups
//! (`additionalGids`).
//!
//! Version 6 added an OCI config's settings of the guest beyond the workload's process
//! ([`OciSetup`]: namespaced sysctls, the domain name, masked and read-only paths, the
//! umask), which the init applies as a container runtime applies them to a container. An
//! init that reads version 5 would leave the paths readable and writable, so the mismatch is
//! refused as before.
//!
//! Version 7 added the workload's inheritable and ambient capability sets
//! ([`Security::inheritable`], [`Security::ambient`]: an OCI config's own, `isol-runc` on
//! kvm) and a bundle's `oomScoreAdj` ([`BundleRoot::oom_score_adj`]). An init that reads
//! version 6 would run the workload with neither, so the mismatch is refused as before.

use std::fmt;

/// Where the spec lives inside the guest.
pub const SPEC_PATH: &str = "/isol/spec";
/// First bytes of a spec.
pub const MAGIC: &[u8; 8] = b"ISOLSPEC";
/// Format version this code reads and writes.
pub const VERSION: u32 = 7;
/// Largest spec accepted, to bound what a corrupt file can make init allocate.
pub const MAX_SPEC_LEN: usize = 16 << 20;
/// The kernel's limit on the instructions of one seccomp filter (`BPF_MAXINSNS`).
pub const MAX_FILTER_LEN: usize = 4096;
/// Most files [`Spec::etc_files`] may hold.
pub const MAX_ETC_FILES: usize = 16;

/// Most mounts a [`BundleRoot`] may hold.
pub const MAX_MOUNTS: usize = 256;
/// Most resource limits a spec may hold.
pub const MAX_RLIMITS: usize = 64;
/// Most supplementary groups a spec may hold.
pub const MAX_GROUPS: usize = 1024;
/// Most sysctls a spec may hold.
pub const MAX_SYSCTLS: usize = 256;
/// Most masked paths, and most read-only paths, a spec may hold.
pub const MAX_PATHS: usize = 256;

/// An OCI config's settings of the guest beyond the workload's process (`isol-runc` on kvm,
/// version 6), applied by the init before the workload as a container runtime applies them
/// to a container: sysctls written once `/proc` is mounted, then the names, then the paths
/// masked and made read-only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OciSetup {
    /// `linux.sysctl`, `(key, value)`: each key dot-separated parts of letters, digits, `_`
    /// and `-` (written to `/proc/sys/<key with dots as slashes>`), each value one line.
    pub sysctl: Vec<(Vec<u8>, Vec<u8>)>,
    /// `domainname`; empty: the kernel's.
    pub domainname: Vec<u8>,
    /// `process.user.umask`; none: the init's (0022).
    pub umask: Option<u32>,
    /// Absolute paths hidden from the workload: a file under `/dev/null`, a directory under
    /// an empty read-only tmpfs; a missing one is skipped (as runc).
    pub masked_paths: Vec<Vec<u8>>,
    /// Absolute paths bound read-only onto themselves; a missing one is skipped.
    pub readonly_paths: Vec<Vec<u8>>,
}

impl OciSetup {
    /// Whether a sysctl key is dot-separated parts of letters, digits, `_` and `-`: a path
    /// below `/proc/sys` once its dots are slashes, never outside it.
    pub fn is_sysctl_key(key: &[u8]) -> bool {
        key.split(|&b| b == b'.').all(|part| {
            !part.is_empty()
                && part
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
    }

    /// Refuses what the init must never be given: a malformed sysctl key, a value of more
    /// than one line, a relative path or one with `..` or a NUL, a umask above 0o777, more
    /// than [`MAX_SYSCTLS`] sysctls or [`MAX_PATHS`] paths of a kind.
    fn check(&self) -> Result<(), SpecError> {
        if self.sysctl.len() > MAX_SYSCTLS {
            return Err(SpecError::TooMany("sysctls", self.sysctl.len()));
        }
        for (key, value) in &self.sysctl {
            if !Self::is_sysctl_key(key) || value.contains(&b'\n') || value.contains(&0) {
                return Err(SpecError::BadSysctl(key.clone()));
            }
        }
        for (what, paths) in [
            ("masked paths", &self.masked_paths),
            ("read-only paths", &self.readonly_paths),
        ] {
            if paths.len() > MAX_PATHS {
                return Err(SpecError::TooMany(what, paths.len()));
            }
            for p in paths {
                let bad = p.first() != Some(&b'/')
                    || p.contains(&0)
                    || p.split(|&b| b == b'/').any(|c| c == b"..");
                if bad {
                    return Err(SpecError::BadPath(p.clone()));
                }
            }
        }
        match self.umask {
            Some(m) if m > 0o777 => Err(SpecError::BadUmask(m)),
            _ => Ok(()),
        }
    }
}

/// An OCI bundle's root in the guest (`isol-runc` on kvm): the virtio-fs share `tag` holds
/// the bundle's root filesystem as its `rootfs` directory and each bind mount's source, and
/// the init makes that directory the root, with the mounts, read-only when `readonly`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleRoot {
    /// The virtio-fs device's tag.
    pub tag: Vec<u8>,
    /// `root.readonly`.
    pub readonly: bool,
    /// The config's mounts beyond the init's own (/proc, /sys, /dev…), in order.
    pub mounts: Vec<MountSpec>,
    /// `process.oomScoreAdj`: the workload's and every exec'd process's `oom_score_adj` in
    /// the guest (the VMM on the host has it too); `None`: the init's (0).
    pub oom_score_adj: Option<i32>,
}

/// One mount of a [`BundleRoot`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountSpec {
    /// The filesystem type (`tmpfs`, `mqueue`…); empty: a bind mount of `source`, a path
    /// inside the share.
    pub fstype: Vec<u8>,
    /// The share's path of a bind mount's source, or the filesystem's source name.
    pub source: Vec<u8>,
    /// Absolute path in the guest's root.
    pub target: Vec<u8>,
    /// mount(2) flags (`MS_RDONLY`, `MS_NOSUID`…).
    pub flags: u64,
    /// The filesystem's own options (`size=64m,mode=755`).
    pub data: Vec<u8>,
}

/// One resource limit, set with setrlimit(2) before the workload's `execve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*`.
    pub resource: u32,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Files for the guest's `/etc`: `(name, content)`.
pub type EtcFiles = Vec<(Vec<u8>, Vec<u8>)>;

/// One classic-BPF instruction, the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct SockFilter {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

impl SockFilter {
    /// The instruction as the kernel lays it out, read as one little-endian `u64`
    /// (`code | jt << 16 | jf << 24 | k << 32`): how it travels in JSON.
    pub fn to_u64(self) -> u64 {
        u64::from(self.code)
            | u64::from(self.jt) << 16
            | u64::from(self.jf) << 24
            | u64::from(self.k) << 32
    }

    /// The inverse of [`SockFilter::to_u64`].
    pub fn from_u64(v: u64) -> Self {
        // The casts cut `v` into the struct's fields.
        SockFilter {
            code: v as u16,
            jt: (v >> 16) as u8,
            jf: (v >> 24) as u8,
            k: (v >> 32) as u32,
        }
    }
}

/// The workload's privileges, applied by the guest init right before `execve`, in
/// runc's order: bounding set, identity, capability sets, `no_new_privs`, seccomp.
///
/// The default is the guest init's behaviour before version 2: root with every
/// capability, no `no_new_privs`, no filter (what `--privileged` means).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    /// The capabilities the workload may hold (bit n = capability n): the bounding set,
    /// and the permitted and effective sets of a root workload; a non-root workload holds
    /// none (docker's rule), inheritable and ambient are empty. `None`: every capability,
    /// nothing dropped.
    pub capabilities: Option<u64>,
    /// Set `no_new_privs`: setuid bits and file capabilities grant nothing.
    pub no_new_privs: bool,
    /// A seccomp filter to install last; empty: none.
    pub seccomp: Vec<SockFilter>,
    /// The inheritable set (an OCI config's; isol's own runs keep it empty): within
    /// `capabilities`.
    pub inheritable: u64,
    /// The ambient set (an OCI config's; else empty), raised last: within `capabilities` and
    /// `inheritable`. A non-root workload holds exactly these after its `execve`.
    pub ambient: u64,
}

/// The workload's cgroup limits, enforced by the guest init in a cgroup v2 of the guest
/// kernel that holds only the workload (`pids.max`, `memory.max`), as the container
/// backend's cgroup does on the host. `None`: no limit (`max`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `--pids-limit`: most tasks (processes and threads) the workload may have.
    pub pids_max: Option<u64>,
    /// `--memory`: most bytes of memory the workload may use before the kernel's OOM
    /// killer ends one of its processes.
    pub memory_max: Option<u64>,
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self.pids_max.is_none() && self.memory_max.is_none()
    }
}

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
    /// The identity to run as: `uid[:gid]` or `name[:group]`, names looked up in the
    /// guest root's /etc/passwd and /etc/group; empty: root (0:0).
    pub user: Vec<u8>,
    /// Capabilities, `no_new_privs`, seccomp.
    pub security: Security,
    /// Files the init writes into `/etc` of the guest's root before the workload, `(name,
    /// content)` (`hostname`, `hosts`, `resolv.conf`); empty: the image's own stay.
    pub etc_files: EtcFiles,
    /// The cgroup limits the init puts the workload under.
    pub limits: Limits,
    /// An OCI bundle's root, instead of the root disk's overlay; none: as before.
    pub root: Option<BundleRoot>,
    /// Resource limits of the workload.
    pub rlimits: Vec<Rlimit>,
    /// Exactly these supplementary groups (with the gid); none: those /etc/group gives.
    pub groups: Option<Vec<u32>>,
    /// Sysctls, domain name, masked and read-only paths, umask.
    pub oci: OciSetup,
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
    /// A flag byte that is neither 0 nor 1.
    BadFlag(u8),
    /// A seccomp filter longer than the kernel accepts.
    FilterTooLong(usize),
    /// More than [`MAX_ETC_FILES`] files for `/etc`.
    TooManyEtcFiles(usize),
    /// A name for an `/etc` file that is not one path component.
    BadEtcName(Vec<u8>),
    /// A limit of 0 (`name` is the cgroup file: `pids.max`, `memory.max`).
    ZeroLimit(&'static str),
    /// More than `max` items of `what`.
    TooMany(&'static str, usize),
    /// A sysctl key that is not dot-separated words, or a value of more than one line.
    BadSysctl(Vec<u8>),
    /// A masked or read-only path that is not absolute or has `..`.
    BadPath(Vec<u8>),
    /// A umask above 0o777.
    BadUmask(u32),
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
            SpecError::BadFlag(b) => write!(
                f,
                "Run spec has flag byte {b}, not 0 or 1; use the guest init built with this isol"
            ),
            SpecError::FilterTooLong(n) => write!(
                f,
                "Run spec's seccomp filter has {n} instructions, over the kernel's {MAX_FILTER_LEN}; use a shorter seccomp profile"
            ),
            SpecError::TooManyEtcFiles(n) => write!(
                f,
                "Run spec has {n} files for /etc, over {MAX_ETC_FILES}; use the guest init built with this isol"
            ),
            SpecError::BadEtcName(name) => write!(
                f,
                "Run spec names /etc file {:?}, not one path component; use the guest init built with this isol",
                String::from_utf8_lossy(name)
            ),
            SpecError::ZeroLimit(name) => write!(
                f,
                "Run spec sets {name} to 0, which would let the workload never start; use the guest init built with this isol"
            ),
            SpecError::TooMany(what, n) => write!(
                f,
                "Run spec has {n} {what}, more than the guest init takes; give fewer"
            ),
            SpecError::BadSysctl(key) => write!(
                f,
                "Run spec has sysctl {:?}, not a sysctl name with a one-line value; use the guest init built with this isol",
                String::from_utf8_lossy(key)
            ),
            SpecError::BadPath(p) => write!(
                f,
                "Run spec masks or protects {:?}, not an absolute path without '..'; use the guest init built with this isol",
                String::from_utf8_lossy(p)
            ),
            SpecError::BadUmask(m) => write!(
                f,
                "Run spec has umask {m:#o}, above 0777; use the guest init built with this isol"
            ),
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

    fn u8(&mut self) -> Result<u8, SpecError> {
        Ok(self.take(1)?[0])
    }

    fn flag(&mut self) -> Result<bool, SpecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(SpecError::BadFlag(b)),
        }
    }

    fn u64(&mut self) -> Result<u64, SpecError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn filter(&mut self) -> Result<Vec<SockFilter>, SpecError> {
        let n = self.u32()? as usize;
        if n > MAX_FILTER_LEN {
            return Err(SpecError::FilterTooLong(n));
        }
        (0..n)
            .map(|_| self.u64().map(SockFilter::from_u64))
            .collect()
    }

    /// An optional limit: a presence flag, then the value (0 when absent).
    fn limit(&mut self, name: &'static str) -> Result<Option<u64>, SpecError> {
        let present = self.flag()?;
        let value = self.u64()?;
        match (present, value) {
            (true, 0) => Err(SpecError::ZeroLimit(name)),
            (true, v) => Ok(Some(v)),
            (false, _) => Ok(None),
        }
    }

    fn etc_files(&mut self) -> Result<EtcFiles, SpecError> {
        let n = self.u32()? as usize;
        if n > MAX_ETC_FILES {
            return Err(SpecError::TooManyEtcFiles(n));
        }
        let files = (0..n)
            .map(|_| Ok((self.bytes()?, self.bytes()?)))
            .collect::<Result<Vec<_>, SpecError>>()?;
        check_etc_files(&files)?;
        Ok(files)
    }

    fn root(&mut self) -> Result<Option<BundleRoot>, SpecError> {
        if !self.flag()? {
            return Ok(None);
        }
        let tag = self.bytes()?;
        let readonly = self.flag()?;
        let n = self.u32()? as usize;
        if n > MAX_MOUNTS {
            return Err(SpecError::TooMany("mounts", n));
        }
        let mounts = (0..n)
            .map(|_| {
                Ok(MountSpec {
                    fstype: self.bytes()?,
                    source: self.bytes()?,
                    target: self.bytes()?,
                    flags: self.u64()?,
                    data: self.bytes()?,
                })
            })
            .collect::<Result<Vec<_>, SpecError>>()?;
        let has_adj = self.flag()?;
        let adj = self.u32()? as i32;
        Ok(Some(BundleRoot {
            tag,
            readonly,
            mounts,
            oom_score_adj: has_adj.then_some(adj),
        }))
    }

    fn rlimits(&mut self) -> Result<Vec<Rlimit>, SpecError> {
        let n = self.u32()? as usize;
        if n > MAX_RLIMITS {
            return Err(SpecError::TooMany("resource limits", n));
        }
        (0..n)
            .map(|_| {
                Ok(Rlimit {
                    resource: self.u32()?,
                    soft: self.u64()?,
                    hard: self.u64()?,
                })
            })
            .collect()
    }

    fn groups(&mut self) -> Result<Option<Vec<u32>>, SpecError> {
        let present = self.flag()?;
        let n = self.u32()? as usize;
        if n > MAX_GROUPS {
            return Err(SpecError::TooMany("groups", n));
        }
        let groups = (0..n).map(|_| self.u32()).collect::<Result<Vec<_>, _>>()?;
        Ok(present.then_some(groups))
    }

    fn oci(&mut self) -> Result<OciSetup, SpecError> {
        let n = self.u32()? as usize;
        if n > MAX_SYSCTLS {
            return Err(SpecError::TooMany("sysctls", n));
        }
        let sysctl = (0..n)
            .map(|_| Ok((self.bytes()?, self.bytes()?)))
            .collect::<Result<Vec<_>, SpecError>>()?;
        let domainname = self.bytes()?;
        let present = self.flag()?;
        let umask = self.u32()?;
        let mut paths = |what| {
            let l = self.list()?;
            if l.len() > MAX_PATHS {
                return Err(SpecError::TooMany(what, l.len()));
            }
            Ok(l)
        };
        let masked_paths = paths("masked paths")?;
        let readonly_paths = paths("read-only paths")?;
        let o = OciSetup {
            sysctl,
            domainname,
            umask: present.then_some(umask),
            masked_paths,
            readonly_paths,
        };
        o.check()?;
        Ok(o)
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

/// At most [`MAX_ETC_FILES`], each named by one path component.
fn check_etc_files(files: &[(Vec<u8>, Vec<u8>)]) -> Result<(), SpecError> {
    if files.len() > MAX_ETC_FILES {
        return Err(SpecError::TooManyEtcFiles(files.len()));
    }
    for (name, _) in files {
        let bad = name.is_empty()
            || name.contains(&b'/')
            || name.contains(&0)
            || name == b"."
            || name == b"..";
        if bad {
            return Err(SpecError::BadEtcName(name.clone()));
        }
    }
    Ok(())
}

impl Spec {
    /// Serializes the spec.
    pub fn encode(&self) -> Result<Vec<u8>, SpecError> {
        if self.args.is_empty() {
            return Err(SpecError::NoArgs);
        }
        let sec = &self.security;
        if sec.seccomp.len() > MAX_FILTER_LEN {
            return Err(SpecError::FilterTooLong(sec.seccomp.len()));
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
            + self.user.len()
            + sec.seccomp.len() * 8
            + self
                .etc_files
                .iter()
                .map(|(n, c)| n.len() + c.len() + 8)
                .sum::<usize>()
            + 68;
        if total > MAX_SPEC_LEN {
            return Err(SpecError::TooLarge(total));
        }
        put_list(&mut out, &self.args);
        put_list(&mut out, &self.env);
        put_bytes(&mut out, &self.workdir);
        put_bytes(&mut out, &self.hostname);
        put_bytes(&mut out, &self.user);
        out.push(u8::from(sec.capabilities.is_some()));
        out.extend_from_slice(&sec.capabilities.unwrap_or(0).to_le_bytes());
        out.push(u8::from(sec.no_new_privs));
        out.extend_from_slice(&(sec.seccomp.len() as u32).to_le_bytes());
        for insn in &sec.seccomp {
            out.extend_from_slice(&insn.to_u64().to_le_bytes());
        }
        check_etc_files(&self.etc_files)?;
        out.extend_from_slice(&(self.etc_files.len() as u32).to_le_bytes());
        for (name, content) in &self.etc_files {
            put_bytes(&mut out, name);
            put_bytes(&mut out, content);
        }
        for (name, limit) in [
            ("pids.max", self.limits.pids_max),
            ("memory.max", self.limits.memory_max),
        ] {
            if limit == Some(0) {
                return Err(SpecError::ZeroLimit(name));
            }
            out.push(u8::from(limit.is_some()));
            out.extend_from_slice(&limit.unwrap_or(0).to_le_bytes());
        }
        self.encode_v5(&mut out)?;
        self.encode_v6(&mut out)?;
        if out.len() > MAX_SPEC_LEN {
            return Err(SpecError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// The fields version 5 added: the bundle root, rlimits, groups.
    fn encode_v5(&self, out: &mut Vec<u8>) -> Result<(), SpecError> {
        out.push(u8::from(self.root.is_some()));
        if let Some(root) = &self.root {
            if root.mounts.len() > MAX_MOUNTS {
                return Err(SpecError::TooMany("mounts", root.mounts.len()));
            }
            put_bytes(out, &root.tag);
            out.push(u8::from(root.readonly));
            out.extend_from_slice(&(root.mounts.len() as u32).to_le_bytes());
            for m in &root.mounts {
                put_bytes(out, &m.fstype);
                put_bytes(out, &m.source);
                put_bytes(out, &m.target);
                out.extend_from_slice(&m.flags.to_le_bytes());
                put_bytes(out, &m.data);
            }
            out.push(u8::from(root.oom_score_adj.is_some()));
            out.extend_from_slice(&root.oom_score_adj.unwrap_or(0).to_le_bytes());
        }
        if self.rlimits.len() > MAX_RLIMITS {
            return Err(SpecError::TooMany("resource limits", self.rlimits.len()));
        }
        out.extend_from_slice(&(self.rlimits.len() as u32).to_le_bytes());
        for r in &self.rlimits {
            out.extend_from_slice(&r.resource.to_le_bytes());
            out.extend_from_slice(&r.soft.to_le_bytes());
            out.extend_from_slice(&r.hard.to_le_bytes());
        }
        out.push(u8::from(self.groups.is_some()));
        let groups = self.groups.as_deref().unwrap_or_default();
        if groups.len() > MAX_GROUPS {
            return Err(SpecError::TooMany("groups", groups.len()));
        }
        out.extend_from_slice(&(groups.len() as u32).to_le_bytes());
        for g in groups {
            out.extend_from_slice(&g.to_le_bytes());
        }
        Ok(())
    }

    /// The fields version 6 added: sysctls, domain name, umask, masked and read-only paths.
    fn encode_v6(&self, out: &mut Vec<u8>) -> Result<(), SpecError> {
        let o = &self.oci;
        o.check()?;
        out.extend_from_slice(&(o.sysctl.len() as u32).to_le_bytes());
        for (key, value) in &o.sysctl {
            put_bytes(out, key);
            put_bytes(out, value);
        }
        put_bytes(out, &o.domainname);
        out.push(u8::from(o.umask.is_some()));
        out.extend_from_slice(&o.umask.unwrap_or(0).to_le_bytes());
        put_list(out, &o.masked_paths);
        put_list(out, &o.readonly_paths);
        // Version 7.
        out.extend_from_slice(&self.security.inheritable.to_le_bytes());
        out.extend_from_slice(&self.security.ambient.to_le_bytes());
        Ok(())
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
        let mut spec = Spec {
            args: r.list()?,
            env: r.list()?,
            workdir: r.bytes()?,
            hostname: r.bytes()?,
            user: r.bytes()?,
            security: Security {
                capabilities: {
                    let present = r.flag()?;
                    let mask = r.u64()?;
                    present.then_some(mask)
                },
                no_new_privs: r.flag()?,
                seccomp: r.filter()?,
                inheritable: 0,
                ambient: 0,
            },
            etc_files: r.etc_files()?,
            limits: Limits {
                pids_max: r.limit("pids.max")?,
                memory_max: r.limit("memory.max")?,
            },
            root: r.root()?,
            rlimits: r.rlimits()?,
            groups: r.groups()?,
            oci: r.oci()?,
        };
        spec.security.inheritable = r.u64()?;
        spec.security.ambient = r.u64()?;
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
            user: b"1000:users".to_vec(),
            security: Security {
                capabilities: Some(0xa804_25fb),
                no_new_privs: true,
                seccomp: vec![
                    SockFilter {
                        code: 0x20,
                        jt: 0,
                        jf: 0,
                        k: 4,
                    },
                    SockFilter {
                        code: 0x15,
                        jt: 1,
                        jf: 2,
                        k: 0xc000_003e,
                    },
                    SockFilter {
                        code: 0x06,
                        jt: 0,
                        jf: 0,
                        k: 0x7fff_0000,
                    },
                ],
                inheritable: 0x25fb,
                ambient: 0x0401,
            },
            etc_files: vec![
                (b"hostname".to_vec(), b"isol-vm\n".to_vec()),
                (b"hosts".to_vec(), b"127.0.0.1\tlocalhost\n".to_vec()),
                (b"resolv.conf".to_vec(), Vec::new()),
            ],
            limits: Limits {
                pids_max: Some(10),
                memory_max: Some(64 << 20),
            },
            root: Some(BundleRoot {
                tag: b"isol-root".to_vec(),
                readonly: true,
                mounts: vec![
                    MountSpec {
                        source: b"mounts/0".to_vec(),
                        target: b"/etc/hosts".to_vec(),
                        flags: 1,
                        ..MountSpec::default()
                    },
                    MountSpec {
                        fstype: b"tmpfs".to_vec(),
                        source: b"tmpfs".to_vec(),
                        target: b"/run".to_vec(),
                        flags: 6,
                        data: b"size=64m,mode=755".to_vec(),
                    },
                ],
                oom_score_adj: Some(-500),
            }),
            rlimits: vec![Rlimit {
                resource: 7,
                soft: 1024,
                hard: 4096,
            }],
            groups: Some(vec![10, 20]),
            oci: OciSetup {
                sysctl: vec![
                    (b"kernel.shmmax".to_vec(), b"65536".to_vec()),
                    (b"net.ipv4.ping_group_range".to_vec(), b"0 0".to_vec()),
                ],
                domainname: b"example.org".to_vec(),
                umask: Some(0o077),
                masked_paths: vec![b"/proc/kcore".to_vec(), b"/sys/firmware".to_vec()],
                readonly_paths: vec![b"/proc/sys".to_vec()],
            },
        }
    }

    #[test]
    fn version_7_capability_sets_and_oom_score_adj_round_trip() {
        let s = sample();
        let d = Spec::decode(&s.encode().unwrap()).unwrap();
        assert_eq!(d.root.as_ref().unwrap().oom_score_adj, Some(-500));
        assert_eq!(d.security.inheritable, 0x25fb);
        assert_eq!(d.security.ambient, 0x0401);
        // They are the last 16 bytes: a spec without them (version 6's layout) is truncated.
        let enc = s.encode().unwrap();
        assert_eq!(
            Spec::decode(&enc[..enc.len() - 16]),
            Err(SpecError::Truncated)
        );
    }

    #[test]
    fn version_6_fields_round_trip_and_are_checked() {
        let s = sample();
        assert_eq!(Spec::decode(&s.encode().unwrap()).unwrap().oci, s.oci);
        let mut s = sample();
        s.oci = OciSetup::default();
        assert_eq!(Spec::decode(&s.encode().unwrap()).unwrap(), s);
        for bad in [
            &b"../../etc/passwd"[..],
            b"kernel/shmmax",
            b"a..b",
            b"",
            b"net.",
            b"x y",
        ] {
            let mut s = sample();
            s.oci.sysctl = vec![(bad.to_vec(), b"1".to_vec())];
            assert_eq!(s.encode(), Err(SpecError::BadSysctl(bad.to_vec())));
        }
        let mut s = sample();
        s.oci.sysctl = vec![(b"kernel.shmmax".to_vec(), b"1\n2".to_vec())];
        assert!(matches!(s.encode(), Err(SpecError::BadSysctl(_))));
        for bad in [&b"proc/kcore"[..], b"/proc/../etc", b"", b"/a\0b"] {
            let mut s = sample();
            s.oci.readonly_paths = vec![bad.to_vec()];
            assert_eq!(s.encode(), Err(SpecError::BadPath(bad.to_vec())));
        }
        let mut s = sample();
        s.oci.umask = Some(0o1000);
        assert_eq!(s.encode(), Err(SpecError::BadUmask(0o1000)));
        let mut s = sample();
        s.oci.masked_paths = vec![b"/x".to_vec(); MAX_PATHS + 1];
        assert_eq!(
            s.encode(),
            Err(SpecError::TooMany("masked paths", MAX_PATHS + 1))
        );
        // The same checks on decode: a key written by hand with a slash is refused.
        let mut s = sample();
        s.oci.sysctl = vec![(b"kernel.shmmax".to_vec(), b"1".to_vec())];
        let mut enc = s.encode().unwrap();
        let at = enc.windows(13).position(|w| w == b"kernel.shmmax").unwrap();
        enc[at + 6] = b'/';
        assert_eq!(
            Spec::decode(&enc),
            Err(SpecError::BadSysctl(b"kernel/shmmax".to_vec()))
        );
    }

    #[test]
    fn version_5_fields_are_checked() {
        let mut s = sample();
        s.rlimits = vec![Rlimit::default(); MAX_RLIMITS + 1];
        assert_eq!(
            s.encode(),
            Err(SpecError::TooMany("resource limits", MAX_RLIMITS + 1))
        );
        let mut s = sample();
        s.root = None;
        s.groups = None;
        let enc = s.encode().unwrap();
        assert_eq!(Spec::decode(&enc).unwrap(), s);
        // A truncated bundle root is an error, not a shorter spec.
        let full = sample().encode().unwrap();
        assert_eq!(
            Spec::decode(&full[..full.len() - 20]),
            Err(SpecError::Truncated)
        );
    }

    #[test]
    fn round_trip_is_byte_exact() {
        let s = sample();
        let enc = s.encode().unwrap();
        assert_eq!(&enc[..8], MAGIC);
        assert_eq!(Spec::decode(&enc).unwrap(), s);
    }

    #[test]
    fn the_default_security_round_trips_as_none() {
        let s = Spec {
            args: vec![b"true".to_vec()],
            ..Spec::default()
        };
        let d = Spec::decode(&s.encode().unwrap()).unwrap();
        assert_eq!(d.security, Security::default());
        assert_eq!(d.security.capabilities, None);
        assert!(d.user.is_empty());
    }

    #[test]
    fn an_empty_capability_set_is_not_every_capability() {
        let mut s = sample();
        s.security.capabilities = Some(0);
        let d = Spec::decode(&s.encode().unwrap()).unwrap();
        assert_eq!(d.security.capabilities, Some(0));
    }

    #[test]
    fn filter_instructions_keep_the_kernel_layout() {
        let i = SockFilter {
            code: 0x0015,
            jt: 0x01,
            jf: 0x02,
            k: 0xc000_003e,
        };
        assert_eq!(i.to_u64(), 0xc000_003e_0201_0015);
        assert_eq!(SockFilter::from_u64(i.to_u64()), i);
        assert_eq!(std::mem::size_of::<SockFilter>(), 8);
    }

    /// How many bytes versions 5's and 6's fields take at the end of `s`'s encoding.
    fn v5_len(s: &Spec) -> usize {
        let mut v = Vec::new();
        s.encode_v5(&mut v).unwrap();
        s.encode_v6(&mut v).unwrap();
        v.len()
    }

    #[test]
    fn bad_flags_and_long_filters_are_rejected() {
        let mut s = sample();
        s.security.seccomp.clear();
        s.etc_files.clear();
        let mut enc = s.encode().unwrap();
        // Layout from the end: caps flag, 8 mask bytes, nnp flag, 4 filter count bytes, 4
        // etc count bytes, then the two limits of 9 bytes each, then version 5's fields.
        let n = enc.len() - v5_len(&s) - 4 - 18;
        enc[n - 5] = 2;
        assert_eq!(Spec::decode(&enc), Err(SpecError::BadFlag(2)));
        enc[n - 5] = 1;
        enc[n - 4..n].copy_from_slice(&(MAX_FILTER_LEN as u32 + 1).to_le_bytes());
        assert_eq!(
            Spec::decode(&enc),
            Err(SpecError::FilterTooLong(MAX_FILTER_LEN + 1))
        );
        s.security.seccomp = vec![SockFilter::default(); MAX_FILTER_LEN + 1];
        assert_eq!(
            s.encode(),
            Err(SpecError::FilterTooLong(MAX_FILTER_LEN + 1))
        );
    }

    #[test]
    fn etc_file_names_are_one_component_and_few() {
        for bad in [&b""[..], b"..", b".", b"../passwd", b"a/b", b"x\0"] {
            let mut s = sample();
            s.etc_files = vec![(bad.to_vec(), b"x".to_vec())];
            assert_eq!(s.encode(), Err(SpecError::BadEtcName(bad.to_vec())));
            // The same bytes written by hand are refused on decode too.
            s.etc_files = vec![(b"z".repeat(bad.len().max(1)), b"x".to_vec())];
            let mut enc = s.encode().unwrap();
            if !bad.is_empty() {
                let at = enc.len() - v5_len(&s) - 18 - 1 - 4 - bad.len();
                enc[at..at + bad.len()].copy_from_slice(bad);
                assert_eq!(Spec::decode(&enc), Err(SpecError::BadEtcName(bad.to_vec())));
            }
        }
        let mut s = sample();
        s.etc_files = vec![(b"f".to_vec(), Vec::new()); MAX_ETC_FILES + 1];
        assert_eq!(
            s.encode(),
            Err(SpecError::TooManyEtcFiles(MAX_ETC_FILES + 1))
        );
    }

    #[test]
    fn limits_round_trip_and_zero_is_refused() {
        let mut s = sample();
        s.limits = Limits {
            pids_max: None,
            memory_max: Some(u64::MAX),
        };
        assert_eq!(Spec::decode(&s.encode().unwrap()).unwrap().limits, s.limits);
        s.limits = Limits::default();
        let d = Spec::decode(&s.encode().unwrap()).unwrap();
        assert!(d.limits.is_empty());
        s.limits.pids_max = Some(0);
        assert_eq!(s.encode(), Err(SpecError::ZeroLimit("pids.max")));
        // A hand-made 0 with its flag set is refused on decode; a bad flag too.
        s.limits.pids_max = Some(1);
        let mut enc = s.encode().unwrap();
        let at = enc.len() - v5_len(&s) - 18;
        enc[at + 1..at + 9].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(Spec::decode(&enc), Err(SpecError::ZeroLimit("pids.max")));
        enc[at] = 2;
        assert_eq!(Spec::decode(&enc), Err(SpecError::BadFlag(2)));
    }

    #[test]
    fn older_versions_are_refused_with_what_to_do() {
        for old in 1..VERSION {
            let mut enc = sample().encode().unwrap();
            enc[8..12].copy_from_slice(&old.to_le_bytes());
            let e = Spec::decode(&enc).unwrap_err();
            assert_eq!(e, SpecError::BadVersion(old));
            let m = e.to_string();
            assert!(
                m.contains(&format!("is not {VERSION}"))
                    && m.contains("guest init built with this isol"),
                "{m}"
            );
        }
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
            SpecError::BadFlag(7),
            SpecError::FilterTooLong(5000),
            SpecError::TooManyEtcFiles(17),
            SpecError::BadEtcName(b"a/b".to_vec()),
            SpecError::ZeroLimit("pids.max"),
            SpecError::BadSysctl(b"a/b".to_vec()),
            SpecError::BadPath(b"a".to_vec()),
            SpecError::BadUmask(0o1000),
        ] {
            let m = e.to_string();
            assert!(
                m.starts_with(char::is_uppercase) && !m.contains('\n'),
                "{m}"
            );
        }
    }
}
