//! The boot working set: which guest RAM a boot touches before init starts, recorded
//! once and faulted in ahead of the guest on every later boot of the same machine.
//!
//! Every boot of one kernel on one machine configuration touches the same guest RAM
//! before init starts: traced in the lab (2026-11-23), six boots of the default `true`
//! VM took exactly 17 nested page faults on RAM each, on the same seventeen 2 MiB
//! ranges in the same order. Ten of them the VMM had already faulted in (the kernel,
//! the initramfs, the boot structures); each of the other seven — the memory the guest
//! kernel allocates for itself, 14 MiB — waited for the host to allocate and zero a
//! fresh page: 2–12 ms each, and in four of the six boots one of them 100–450 ms, all
//! on the vCPU's path.
//!
//! So at init start (the guest init's phase write on the exit port) the resident pages
//! of guest RAM are read with `mincore` and kept as a profile, keyed by everything that
//! shapes the boot ([`profile_path`]). A later boot with the same key faults those
//! pages in on a thread of its own ([`BootProfile::warm`]) while the VMM sets up and
//! the guest starts, so the guest finds them present. The resident set is the one the
//! boot would have made anyway: no memory is added, the zeroing moves off the vCPU.
//!
//! A profile is written once, when none exists: a boot that was warmed would record
//! its warmed pages too, so a profile never grows from its own use. A corrupt or
//! mismatched file is ignored (and rewritten). Profiles live in the directory the
//! config names ([`VmConfig::boot_profiles`]; isol's is `$ISOL_CACHE/boot-profile`, and
//! `ISOL_BOOT_PROFILE=off` makes it none); without one, both reading and writing are off.
//!
//! The cache keeps the `KEEP` (64) most recently used profiles: a boot that uses one marks
//! it used (its mtime), and storing a new one removes the least recently used beyond
//! that, with any temporary file a killed VMM left behind.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::config::VmConfig;
use crate::vstate::memory;

/// Bump when what a profile means or how it is written changes.
const FORMAT: &str = "isol boot profile 1";

/// Page size of the resident-page map.
const PAGE: u64 = 4096;

/// Resident runs closer than this are recorded as one (fewer lines, and faulting a few
/// pages more costs less than one more `madvise`).
const MERGE_GAP: u64 = 16 * PAGE;

/// A profile that lists more runs than this is not a boot's working set; not kept.
const MAX_RANGES: usize = 4096;

/// Profiles the cache keeps (each a few KiB at most); a new kernel, image or flag makes a
/// new key, so without a bound the directory would only grow.
const KEEP: usize = 64;

/// A temporary file older than this was left by a VMM killed while it wrote (a write
/// takes milliseconds).
const STALE_TMP: Duration = Duration::from_secs(600);

/// Guest-physical ranges of guest RAM, page-aligned, sorted, disjoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootProfile {
    ranges: Vec<Range<u64>>,
}

impl BootProfile {
    /// The ranges, in ascending order.
    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Bytes covered.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// The resident pages of `mem` now, as runs of guest-physical addresses.
    pub fn resident(mem: &GuestMemoryMmap) -> std::io::Result<Self> {
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for region in mem.iter() {
            let base = region.start_addr().raw_value();
            let len = region.len();
            let host = mem
                .get_host_address(region.start_addr())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut map = vec![0u8; usize::try_from(len.div_ceil(PAGE)).unwrap_or(usize::MAX)];
            // SAFETY: [host, host + len) is the region's own mapping (page-aligned, alive
            // for the borrow of `mem`); mincore only reads its page tables into `map`,
            // which has one byte per page of it.
            let r = unsafe {
                libc::mincore(
                    host.cast::<libc::c_void>(),
                    usize::try_from(len).unwrap_or(usize::MAX),
                    map.as_mut_ptr(),
                )
            };
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            for (i, b) in map.iter().enumerate() {
                if b & 1 == 0 {
                    continue;
                }
                let at = base + i as u64 * PAGE;
                match ranges.last_mut() {
                    Some(last) if at <= last.end + MERGE_GAP => last.end = at + PAGE,
                    _ => ranges.push(at..at + PAGE),
                }
            }
        }
        Ok(Self { ranges })
    }

    /// Faults the profile's ranges in, top range first (the guest kernel allocates its
    /// early memory top-down), skipping `skip` (faulted in by someone else). Best effort.
    pub fn warm(&self, mem: &GuestMemoryMmap, skip: Option<&Range<u64>>) {
        for r in self.ranges.iter().rev() {
            match skip {
                Some(s) if r.start < s.end && s.start < r.end => {
                    if r.start < s.start {
                        memory::prefault(mem, r.start..s.start);
                    }
                    if s.end < r.end {
                        memory::prefault(mem, s.end..r.end);
                    }
                }
                _ => memory::prefault(mem, r.clone()),
            }
        }
    }

    fn to_text(&self) -> String {
        let mut s = format!("{FORMAT}\n");
        for r in &self.ranges {
            let _ = writeln!(s, "{:#x} {:#x}", r.start, r.end - r.start);
        }
        s
    }

    /// Parses a profile for the guest RAM `mem`; `None` if anything is off (a range
    /// outside guest RAM included).
    fn from_text(text: &str, mem: &GuestMemoryMmap) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != FORMAT {
            return None;
        }
        let hex = |s: &str| u64::from_str_radix(s.strip_prefix("0x")?, 16).ok();
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for line in lines {
            let (start, len) = line.split_once(' ')?;
            let (start, len) = (hex(start)?, hex(len)?);
            let end = start.checked_add(len)?;
            let ordered = ranges.last().is_none_or(|last| last.end <= start);
            let region = mem.find_region(GuestAddress(start))?;
            let inside = end <= region.start_addr().raw_value() + region.len();
            if len == 0 || start % PAGE != 0 || len % PAGE != 0 || !ordered || !inside {
                return None;
            }
            ranges.push(start..end);
        }
        (ranges.len() <= MAX_RANGES).then_some(Self { ranges })
    }

    /// The profile stored at `path`, if there is a valid one for the guest RAM `mem`;
    /// marks it used (its mtime), so pruning keeps it.
    pub fn load(path: &Path, mem: &GuestMemoryMmap) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        let profile = Self::from_text(&std::io::read_to_string(&file).ok()?, mem)?;
        // Best effort: a profile that cannot be marked is merely pruned sooner.
        let _ = file.set_modified(SystemTime::now());
        Some(profile)
    }

    /// Stores the profile at `path` (written under a unique name, then renamed, so
    /// concurrent boots never read a partial file) and says whether it did: an empty one,
    /// or one with too many ranges, is not stored. Then prunes the directory to the
    /// `KEEP` most recently used profiles.
    pub fn store(&self, path: &Path) -> std::io::Result<bool> {
        self.store_keeping(path, KEEP)
    }

    fn store_keeping(&self, path: &Path, keep: usize) -> std::io::Result<bool> {
        if self.ranges.is_empty() || self.ranges.len() > MAX_RANGES {
            return Ok(false);
        }
        store_text(&self.to_text(), path, keep)?;
        Ok(true)
    }

    /// Stores at `path` the profile a jailed VMM recorded in `recorded` (the jail's own
    /// directory: the jailed VMM cannot write the shared one), as [`BootProfile::store`]
    /// does; says whether there was one. Its ranges are checked where every profile is,
    /// when a boot loads it.
    pub fn adopt(recorded: &Path, path: &Path) -> std::io::Result<bool> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        // The jailed VMM wrote it, and is what a guest attacks: it could leave a symlink to a
        // file only root may read (stored where others read profiles) or a FIFO (the caller
        // would wait forever). A regular file, read to a bound, of the profile's shape only.
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(recorded)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(false),
            Err(e) => return Err(e),
        };
        if !file.metadata()?.is_file() {
            return Ok(false);
        }
        // A line per range, at most MAX_RANGES of them.
        let limit = MAX_RANGES * 40;
        let mut text = Vec::new();
        file.take(limit as u64 + 1).read_to_end(&mut text)?;
        if text.is_empty() || text.len() > limit {
            return Ok(false);
        }
        let Ok(text) = String::from_utf8(text) else {
            return Ok(false);
        };
        if !has_profile_shape(&text) {
            return Ok(false);
        }
        store_text(&text, path, KEEP)?;
        Ok(true)
    }
}

/// Whether `text` looks like a profile: the format line, then `0xSTART 0xLEN` lines. Its
/// ranges are checked against guest RAM when a boot loads it.
fn has_profile_shape(text: &str) -> bool {
    let mut lines = text.lines();
    let hex = |s: &str| {
        s.strip_prefix("0x")
            .is_some_and(|h| !h.is_empty() && u64::from_str_radix(h, 16).is_ok())
    };
    lines.next() == Some(FORMAT)
        && lines.all(|l| l.split_once(' ').is_some_and(|(a, b)| hex(a) && hex(b)))
}

/// Writes `text` at `path` under a unique name, then renames it into place, and prunes the
/// directory to `keep` profiles.
fn store_text(text: &str, path: &Path, keep: usize) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    prune(dir, keep);
    Ok(())
}

/// Whether `name` is a profile's file name (the key: 16 hex digits).
fn is_key(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Removes all but the `keep` most recently used profiles in `dir`, and temporary files
/// left by killed writers. Best effort: what cannot be read or removed stays.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    let mut profiles = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let Ok(mtime) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        if name.starts_with('.') && name.ends_with(".tmp") {
            if now.duration_since(mtime).is_ok_and(|age| age > STALE_TMP) {
                let _ = std::fs::remove_file(entry.path());
            }
        } else if is_key(name) {
            profiles.push((mtime, entry.path()));
        }
    }
    if profiles.len() > keep {
        profiles.sort();
        for (_, path) in &profiles[..profiles.len() - keep] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What one boot did with its profile (`--trace-exits` prints it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum BootSetReport {
    /// Profiles off (no [`VmConfig::boot_profiles`]), or no key for this boot.
    #[default]
    Off,
    /// A stored profile was faulted in ahead of the guest.
    Warmed {
        /// The profile.
        path: PathBuf,
        /// Bytes it covers.
        bytes: u64,
    },
    /// None was stored; this boot's was recorded at init start.
    Recorded {
        /// Where it went.
        path: PathBuf,
        /// Bytes it covers.
        bytes: u64,
    },
    /// None was stored, and none could be recorded (init never started, or the
    /// profile could not be read or written).
    NotRecorded {
        /// Where it would have gone.
        path: PathBuf,
    },
}

impl std::fmt::Display for BootSetReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: &u64| *b as f64 / f64::from(1u32 << 20);
        match self {
            Self::Off => write!(f, "boot set: profiles off"),
            Self::Warmed { path, bytes } => write!(
                f,
                "boot set: {:.1} MiB faulted in ahead of the guest ({})",
                mib(bytes),
                path.display()
            ),
            Self::Recorded { path, bytes } => write!(
                f,
                "boot set: {:.1} MiB recorded at init start for the next boot ({})",
                mib(bytes),
                path.display()
            ),
            Self::NotRecorded { path } => {
                write!(f, "boot set: none recorded ({})", path.display())
            }
        }
    }
}

/// The boot set of one boot: the stored profile to warm, or where to record one.
#[derive(Debug, Default)]
pub struct BootSet {
    path: Option<PathBuf>,
    profile: Option<BootProfile>,
}

impl BootSet {
    /// Looks up the profile for `cfg`'s boot (none when profiles are off).
    pub fn new(cfg: &VmConfig, mem: &GuestMemoryMmap) -> Self {
        let path = profile_path(cfg);
        let profile = path.as_deref().and_then(|p| BootProfile::load(p, mem));
        Self { path, profile }
    }

    /// Whether this boot records a profile, and so wants the guest's phases.
    pub fn records(&self) -> bool {
        self.path.is_some() && self.profile.is_none()
    }

    /// Once `setup_done` says the VMM's setup is over and `entered` that the first vCPU
    /// runs, faults the stored profile in (skipping `skip`) and calls `warmed`; or, with
    /// none stored, waits for init start on `phases` and records this boot's. Returns
    /// when done, or when its channel ends (setup failed, the VM is over).
    ///
    /// Not before the vCPU runs: faulting memory in holds the process's mmap lock, and
    /// where a fault is slow (the lab's emulated CPU zeroing a huge page: up to 0.5 s)
    /// whatever maps memory meanwhile waits for it — the setup's allocations, and the
    /// stacks of the vCPU threads (seen in the lab: the first entry 0.3–0.5 s later when
    /// the warming began as the setup ended). The guest needs the first of these pages
    /// only some 60 ms after it starts.
    pub fn run(
        &self,
        mem: &GuestMemoryMmap,
        skip: Option<&Range<u64>>,
        setup_done: std::sync::mpsc::Receiver<()>,
        entered: impl Fn() -> bool,
        phases: std::sync::mpsc::Receiver<isol_devices::legacy::Phase>,
        warmed: impl FnOnce(),
    ) -> BootSetReport {
        let Some(path) = &self.path else {
            return BootSetReport::Off;
        };
        if let Some(profile) = &self.profile {
            if setup_done.recv().is_err() {
                return BootSetReport::Off;
            }
            // The vCPU threads start right after; a vCPU that never enters (an error)
            // ends the VM, and warming then is merely late.
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !entered() && std::time::Instant::now() < give_up {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            profile.warm(mem, skip);
            warmed();
            return BootSetReport::Warmed {
                path: path.clone(),
                bytes: profile.bytes(),
            };
        }
        let not_recorded = BootSetReport::NotRecorded { path: path.clone() };
        while let Ok(phase) = phases.recv() {
            if phase != isol_devices::legacy::Phase::InitStart {
                continue;
            }
            let Ok(profile) = BootProfile::resident(mem) else {
                return not_recorded;
            };
            return match profile.store(path) {
                Ok(true) => BootSetReport::Recorded {
                    path: path.clone(),
                    bytes: profile.bytes(),
                },
                _ => not_recorded,
            };
        }
        not_recorded
    }
}

/// Where the profile for `cfg`'s boot lives: `<cfg.boot_profiles>/<key>`, the key a hash
/// of what shapes the boot before init: the kernel file's identity (path, device, inode, size, mtime), the boot
/// protocol, memory, vCPUs, the command line's inputs and the devices, and the root's
/// identity (its files, e.g. the initramfs's size, place the initramfs in guest RAM).
/// Not the workload: it runs after init starts. `None` when profiles are off, or if the
/// kernel cannot be stat'ed.
pub fn profile_path(cfg: &VmConfig) -> Option<PathBuf> {
    let dir = cfg.boot_profiles.as_ref()?;
    let mut h = std::hash::DefaultHasher::new();
    FORMAT.hash(&mut h);
    let identity = |p: &Path, h: &mut std::hash::DefaultHasher| -> Option<()> {
        let m = std::fs::metadata(p).ok()?;
        (p, m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()).hash(h);
        Some(())
    };
    identity(&cfg.kernel, &mut h)?;
    if let Some(init) = &cfg.init {
        let _ = identity(init, &mut h);
    }
    if let crate::config::Rootfs::Initrd(initrd) = &cfg.rootfs {
        // Its size places it in guest RAM.
        let _ = identity(initrd, &mut h);
    }
    format!("{:?}", cfg.boot_protocol).hash(&mut h);
    (cfg.memory_mib, cfg.vcpus, cfg.console, &cfg.extra_cmdline).hash(&mut h);
    format!("{:?} {:?}", cfg.stdio, cfg.rootfs).hash(&mut h);
    (cfg.disks.len(), cfg.tty.is_some(), cfg.net.is_some()).hash(&mut h);
    Some(dir.join(format!("{:016x}", h.finish())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    fn ram(mib: u64) -> memory::GuestRam {
        memory::create_guest_memory(mib << 20).unwrap()
    }

    /// What a jailed (so possibly compromised) VMM leaves is stored only if it is a regular
    /// file shaped like a profile: never through a symlink, never a FIFO's wait.
    #[test]
    fn adopt_stores_a_profile_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cache").join("0123456789abcdef");
        let rec = dir.path().join("rec");
        let good = format!("{FORMAT}\n0x100000 0x2000\n");
        std::fs::write(&rec, &good).unwrap();
        assert!(BootProfile::adopt(&rec, &out).unwrap());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), good);
        std::fs::remove_file(&out).unwrap();

        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{FORMAT}\n")).unwrap();
        std::fs::remove_file(&rec).unwrap();
        std::os::unix::fs::symlink(&secret, &rec).unwrap();
        assert!(
            !BootProfile::adopt(&rec, &out).unwrap(),
            "followed a symlink"
        );
        std::fs::remove_file(&rec).unwrap();
        let c = std::ffi::CString::new(rec.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(!BootProfile::adopt(&rec, &out).unwrap(), "read a FIFO");
        std::fs::remove_file(&rec).unwrap();
        for bad in [
            "root:x:0:0::/root:/bin/sh\n",
            "isol boot profile 1\nabc def\n",
            "",
        ] {
            std::fs::write(&rec, bad).unwrap();
            assert!(!BootProfile::adopt(&rec, &out).unwrap(), "{bad:?}");
        }
        assert!(!out.exists());
        assert!(!BootProfile::adopt(&dir.path().join("none"), &out).unwrap());
    }

    #[test]
    fn resident_finds_what_was_touched_and_nothing_else() {
        let mem = ram(64);
        assert_eq!(BootProfile::resident(&mem).unwrap().bytes(), 0);
        mem.write_obj(1u64, GuestAddress(0x30_0000)).unwrap();
        mem.write_obj(1u64, GuestAddress(0x30_0000 + 5 * PAGE))
            .unwrap(); // within the gap
        mem.write_obj(1u64, GuestAddress(0x200_0000)).unwrap();
        let p = BootProfile::resident(&mem).unwrap();
        // Under THP a touch makes its whole 2 MiB resident; either way each touched page
        // is covered and the two far-apart touches stay apart.
        assert!(p.ranges().len() >= 2, "{p:?}");
        for at in [0x30_0000, 0x30_0000 + 5 * PAGE, 0x200_0000] {
            assert!(p.ranges().iter().any(|r| r.contains(&at)), "{at:#x}: {p:?}");
        }
        assert!(!p.ranges().iter().any(|r| r.contains(&0x100_0000)), "{p:?}");
        assert!(p.bytes() <= 2 * (2 << 20), "{p:?}");
    }

    #[test]
    fn warm_makes_the_profile_resident_except_what_is_skipped() {
        let mem = ram(64);
        let p = BootProfile {
            ranges: vec![0x40_0000..0x60_0000, 0x200_0000..0x280_0000],
        };
        p.warm(&mem, Some(&(0x220_0000..0x240_0000)));
        let r = BootProfile::resident(&mem).unwrap();
        for at in [0x40_0000u64, 0x5f_f000, 0x200_0000, 0x27f_f000] {
            assert!(r.ranges().iter().any(|x| x.contains(&at)), "{at:#x}: {r:?}");
        }
        assert!(!r.ranges().iter().any(|x| x.contains(&0x230_0000)), "{r:?}");
    }

    #[test]
    fn text_round_trips_and_bad_profiles_are_refused() {
        let p = BootProfile {
            ranges: vec![0x20_0000..0x40_0000, 0x7c0_0000..0x800_0000],
        };
        let mem = ram(128);
        assert_eq!(BootProfile::from_text(&p.to_text(), &mem), Some(p.clone()));
        // Past the end of a smaller guest, wrong header, unordered, unaligned, garbage.
        assert_eq!(BootProfile::from_text(&p.to_text(), &ram(64)), None);
        let bad = [
            "isol boot profile 0\n0x0 0x1000\n",
            "isol boot profile 1\n0x2000 0x1000\n0x0 0x1000\n",
            "isol boot profile 1\n0x800 0x1000\n",
            "isol boot profile 1\n0x0 0x0\n",
            "isol boot profile 1\nzero one\n",
            "",
        ];
        for t in bad {
            assert_eq!(BootProfile::from_text(t, &mem), None, "{t:?}");
        }
    }

    #[test]
    fn store_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("profile");
        let p = BootProfile {
            ranges: vec![0x20_0000..0x40_0000, 0x60_0000..0x80_0000],
        };
        assert!(p.store(&path).unwrap());
        assert_eq!(BootProfile::load(&path, &ram(128)), Some(p));
        // Nothing else left in the directory (the temporary file was renamed).
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }

    /// Writes `text` to a file at `dir/name` last modified `age` ago.
    fn aged(dir: &Path, name: &str, text: &str, age: Duration) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
        path
    }

    #[test]
    fn storing_keeps_the_most_recently_used_profiles_and_drops_stale_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = BootProfile {
            ranges: vec![0x20_0000..0x40_0000, 0x60_0000..0x80_0000],
        };
        // Four old profiles, one minute apart (the oldest 15 minutes old); the oldest is
        // then used by a boot.
        let old: Vec<PathBuf> = (0..4u64)
            .map(|i| {
                let age = Duration::from_secs(if i == 0 { 900 } else { 600 - 60 * i });
                aged(d, &format!("{i:016x}"), &p.to_text(), age)
            })
            .collect();
        assert_eq!(BootProfile::load(&old[0], &ram(128)), Some(p.clone()));
        let stale = aged(d, ".4242.tmp", "", Duration::from_secs(3600));
        let fresh = aged(d, ".4243.tmp", "", Duration::from_secs(1));
        let other = aged(d, "notes.txt", "", Duration::from_secs(3600));

        let new = d.join(format!("{:016x}", 0xff));
        assert!(p.store_keeping(&new, 3).unwrap());

        // Kept: the new one, the one just used, and the newest of the others.
        let left = |p: &PathBuf| p.exists();
        assert!(left(&new) && left(&old[0]) && left(&old[3]));
        assert!(!left(&old[1]) && !left(&old[2]));
        assert!(!left(&stale), "a temporary file of a killed writer stays");
        assert!(left(&fresh), "a temporary file being written was removed");
        assert!(left(&other), "a file that is no profile was removed");
    }
}
