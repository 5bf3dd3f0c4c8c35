//! The benchmark's environment: a private mount namespace shared by every subject, and the
//! facts about the machine a report must carry.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, unshare};
use nix::sys::statfs::{CGROUP2_SUPER_MAGIC, TMPFS_MAGIC, statfs};
use serde::Serialize;

use super::error::{BenchError, Step};

/// Where the cgroup2 hierarchy of a hybrid layout is mounted.
const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupLayout {
    /// cgroup2 at /sys/fs/cgroup.
    V2,
    /// v1 controller hierarchies plus a controller-less cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// v1 controller hierarchies only.
    Legacy,
    /// Something else (no cgroupfs at /sys/fs/cgroup).
    Unknown,
}

impl CgroupLayout {
    pub fn detect() -> CgroupLayout {
        let magic = |p: &str| statfs(p).ok().map(|s| s.filesystem_type());
        match magic("/sys/fs/cgroup") {
            Some(m) if m == CGROUP2_SUPER_MAGIC => CgroupLayout::V2,
            Some(m) if m == TMPFS_MAGIC => {
                if magic(UNIFIED) == Some(CGROUP2_SUPER_MAGIC) {
                    CgroupLayout::Hybrid
                } else {
                    CgroupLayout::Legacy
                }
            }
            _ => CgroupLayout::Unknown,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            CgroupLayout::V2 => "cgroup v2",
            CgroupLayout::Hybrid => "cgroup v1, hybrid (cgroup2 at /sys/fs/cgroup/unified)",
            CgroupLayout::Legacy => "cgroup v1",
            CgroupLayout::Unknown => "no cgroupfs at /sys/fs/cgroup",
        }
    }
}

/// The bench needs root: the peers run rootful, and it mounts overlays and a namespace.
pub fn require_root() -> Result<(), BenchError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::Failed(
            "isol bench needs root (it runs crun and runc rootful and mounts each run's root); run it with sudo".into(),
        ));
    }
    Ok(())
}

/// Moves this process into a private mount namespace, where every subject runs, so that the
/// overlays the bench mounts vanish with it, whatever happens. On a hybrid cgroup layout the
/// cgroup2 mount at /sys/fs/cgroup/unified is replaced by an empty private tmpfs: crun 1.8
/// refuses hybrid layouts ("cgroups in hybrid mode not supported"), and the tmpfs keeps what a
/// runtime may write there off the host's /sys/fs/cgroup. Returns a note for the report.
///
/// Call it first, while the process has a single thread: the namespace is per thread.
pub fn enter_private_mounts(layout: CgroupLayout) -> Result<String, BenchError> {
    unshare(CloneFlags::CLONE_NEWNS)
        .step(|| "Cannot create the benchmark's mount namespace".into())?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .step(|| "Cannot make the benchmark's mounts private".into())?;
    if layout != CgroupLayout::Hybrid {
        return Ok("every subject runs in one private mount namespace (the host's mounts)".into());
    }
    umount2(UNIFIED, MntFlags::MNT_DETACH)
        .step(|| format!("Cannot unmount {UNIFIED} in the benchmark's namespace"))?;
    mount(
        Some("isol-bench"),
        UNIFIED,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755,size=1m"),
    )
    .step(|| format!("Cannot mount a tmpfs over {UNIFIED}"))?;
    Ok(format!(
        "every subject runs in one private mount namespace where {UNIFIED} (cgroup2, no controllers) is replaced by an empty tmpfs, so the layout is plain cgroup v1 for all (crun 1.8 refuses hybrid layouts)"
    ))
}

/// The machine, as a report records it.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub nproc: usize,
    pub memory_bytes: u64,
    pub cgroup_layout: CgroupLayout,
    pub cgroup_layout_description: &'static str,
    /// What the bench changed about the environment, for all subjects alike.
    pub environment: String,
    pub isol_version: &'static str,
    /// `git describe`-like commit of the tree isol was built from, when that tree is still there.
    pub isol_commit: Option<String>,
    /// `name → first line of --version` of every peer found.
    pub runtimes: BTreeMap<String, String>,
    /// 1, 5 and 15-minute load averages when the bench started and ended: other work on the
    /// machine inflates every subject's times.
    pub loadavg_start: Option<[f64; 3]>,
    pub loadavg_end: Option<[f64; 3]>,
    /// `hardware`, `emulated`, `absent`, or `lab (…)`.
    pub kvm: String,
    /// When this bench ran in the lab: the machine the lab ran on.
    pub outer_host: Option<String>,
}

impl Machine {
    /// "isol VERSION (COMMIT)" and each peer runtime's version, for the reports.
    pub fn versions(&self) -> Vec<String> {
        let commit = self
            .isol_commit
            .as_deref()
            .map(|c| format!(" ({c})"))
            .unwrap_or_default();
        let mut v = vec![format!("isol {}{commit}", self.isol_version)];
        v.extend(self.runtimes.values().cloned());
        v
    }

    pub fn probe(layout: CgroupLayout, environment: String) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_bytes = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024);
        Machine {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu_model,
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            cgroup_layout: layout,
            cgroup_layout_description: layout.describe(),
            environment,
            isol_version: env!("CARGO_PKG_VERSION"),
            isol_commit: git_commit(),
            runtimes: BTreeMap::new(),
            loadavg_start: loadavg(),
            loadavg_end: None,
            kvm: String::new(),
            outer_host: std::env::var("ISOL_BENCH_OUTER_HOST").ok(),
        }
    }

    /// True when other work kept the CPUs busy during the bench (1-minute load above half the
    /// CPUs at its start or end).
    /// One line describing this machine, for a report made elsewhere (the lab's host).
    pub fn one_line(&self) -> String {
        format!(
            "{}, {} CPUs, {:.1} GiB, Linux {}, {}, load {}",
            self.cpu_model,
            self.nproc,
            self.memory_bytes as f64 / (1u64 << 30) as f64,
            self.kernel,
            self.cgroup_layout_description,
            self.loadavg_start.map_or("?".into(), |l| format!(
                "{:.2} {:.2} {:.2}",
                l[0], l[1], l[2]
            ))
        )
    }

    pub fn busy(&self) -> bool {
        let limit = self.nproc as f64 / 2.0;
        [self.loadavg_start, self.loadavg_end]
            .iter()
            .flatten()
            .any(|l| l[0] > limit)
    }
}

/// The 1, 5 and 15-minute load averages.
pub fn loadavg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// The commit of the source tree isol was built from, if it is still a git checkout here
/// (suffixed `-dirty` when it has uncommitted changes).
fn git_commit() -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    if !dir.join(".git").exists() {
        return None;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}

/// Seconds since the epoch, now.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// RFC 3339, UTC: `2026-11-22T18:05:00Z`.
pub fn rfc3339(secs: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Compact UTC stamp for directory names: `20261122-180500`.
pub fn stamp(secs: u64) -> String {
    let digits: String = rfc3339(secs).chars().filter(char::is_ascii_digit).collect();
    format!("{}-{}", &digits[..8], &digits[8..14])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_370_705), "2026-11-22T18:05:05Z");
        assert_eq!(stamp(1_795_370_705), "20261122-180505");
    }
}
