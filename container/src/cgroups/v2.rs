//! cgroup v2: one directory `<root>/isol/<id>` in the unified hierarchy, with the memory, cpu
//! and pids controllers enabled from the root down.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::devices::{self, DeviceRule};
use super::{
    CPU_PERIOD_US, CgroupError, CgroupManager, Entry, ISOL_DIR, Limits, Stats, cpu_quota_us,
    kill_all, kill_until_empty, procs_recursive, read_opt_keyed, read_opt_string, read_opt_u64,
    rmdir_if_empty, rmdir_parent, rmdir_tree, validate_id, validate_limits, write_file,
};

/// Controllers isol enables for its cgroups, when the root offers them.
const V2_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

/// A run's cgroup on a pure cgroup v2 host.
#[derive(Debug)]
pub struct V2Manager {
    /// The unified hierarchy's mount point.
    root: PathBuf,
    /// `<root>/isol`, shared by all runs (or the parent of a cgroup at a path of its own).
    parent: PathBuf,
    /// `<root>/isol/<id>` (or `<root>/<path>`).
    dir: PathBuf,
    /// Highest `memory.current` seen by `stats()`, for kernels without `memory.peak` (< 5.19).
    peak_seen: AtomicU64,
}

impl V2Manager {
    /// The manager of `<root>/isol/<id>`; creates nothing.
    pub fn new(root: &Path, id: &str) -> Result<Self, CgroupError> {
        validate_id(id)?;
        Self::at(root, &Path::new(ISOL_DIR).join(id))
    }

    /// The manager of `<root>/<path>` (`path` relative, checked by [`super::check_path`]);
    /// creates nothing.
    pub fn at(root: &Path, path: &Path) -> Result<Self, CgroupError> {
        let dir = root.join(super::check_path(path)?);
        Ok(V2Manager {
            root: root.to_owned(),
            parent: dir.parent().unwrap_or(root).to_owned(),
            dir,
            peak_seen: AtomicU64::new(0),
        })
    }

    /// Enables the controllers in `<root>` and each cgroup down to the parent (`<root>/isol`
    /// for `isol run`), creating them, then creates the cgroup. Retries when a concurrent run
    /// removes the shared parent in between.
    pub(crate) fn create(&self) -> Result<(), CgroupError> {
        let ancestors: Vec<&Path> = {
            let mut a: Vec<&Path> = self
                .parent
                .ancestors()
                .take_while(|p| *p != self.root)
                .collect();
            a.reverse();
            a
        };
        let mut attempts = 0;
        'attempt: loop {
            attempts += 1;
            enable_controllers(&self.root)?;
            for dir in &ancestors {
                match fs::create_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 10 => {
                        continue 'attempt;
                    }
                    Err(error) => {
                        return Err(CgroupError::Create {
                            path: dir.to_path_buf(),
                            error,
                        });
                    }
                }
                match enable_controllers(dir) {
                    Ok(()) => {}
                    Err(CgroupError::EnableControllers { ref error, .. })
                        if error.kind() == io::ErrorKind::NotFound && attempts < 10 =>
                    {
                        continue 'attempt;
                    }
                    Err(e) => return Err(e),
                }
            }
            match fs::create_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 10 => continue,
                Err(error) => {
                    return Err(CgroupError::Create {
                        path: self.dir.clone(),
                        error,
                    });
                }
            }
        }
    }

    /// Fails when the interface file of `controller` is missing from the cgroup, i.e. the
    /// controller is not enabled for it.
    fn require(&self, file: &str, controller: &'static str) -> Result<PathBuf, CgroupError> {
        let path = self.dir.join(file);
        if path.exists() {
            Ok(path)
        } else {
            Err(CgroupError::ControllerMissing {
                controller,
                limit: controller,
                root: self.root.clone(),
            })
        }
    }
}

/// Writes `+<controller>` to `cgroup.subtree_control` of `cgroup` for each of
/// [`V2_CONTROLLERS`] that it offers and has not enabled yet.
fn enable_controllers(cgroup: &Path) -> Result<(), CgroupError> {
    let available = read_opt_string(&cgroup.join("cgroup.controllers"))?.unwrap_or_default();
    let subtree = cgroup.join("cgroup.subtree_control");
    let enabled = read_opt_string(&subtree)?.unwrap_or_default();
    let has = |list: &str, c: &str| list.split_whitespace().any(|x| x == c);
    let missing: Vec<&str> = V2_CONTROLLERS
        .into_iter()
        .filter(|c| has(&available, c) && !has(&enabled, c))
        .collect();
    // cpuset, where offered, on a best-effort basis: hosts where it cannot be enabled (a
    // parent with processes of its own, a delegation without it) still run everything but a
    // cpuset limit, which then fails in `apply` naming the controller.
    // The same for io and hugetlb (block IO and huge page limits).
    for c in ["cpuset", "io", "hugetlb"] {
        if has(&available, c) && !has(&enabled, c) {
            let _ = write_file(&subtree, &format!("+{c}"));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let value = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    match write_file(&subtree, &value) {
        Ok(()) => Ok(()),
        Err(CgroupError::Write { path, error, .. }) => Err(CgroupError::EnableControllers {
            controllers: missing.join(","),
            path,
            error,
        }),
        Err(e) => Err(e),
    }
}

impl CgroupManager for V2Manager {
    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        validate_limits(limits)?;
        // Check every controller before writing anything.
        let memory = limits
            .memory
            .map(|m| self.require("memory.max", "memory").map(|p| (m, p)))
            .transpose()?;
        let cpu = limits
            .cpus
            .map(|c| self.require("cpu.max", "cpu").map(|p| (c, p)))
            .transpose()?;
        let period_only = match (limits.cpus, limits.cpu_period) {
            (None, Some(period)) => Some((period, self.require("cpu.max", "cpu")?)),
            _ => None,
        };
        let pids = limits
            .pids
            .map(|n| self.require("pids.max", "pids").map(|p| (n, p)))
            .transpose()?;
        let weight = limits
            .cpu_shares
            .map(|s| self.require("cpu.weight", "cpu").map(|p| (s, p)))
            .transpose()?;
        let mut cpuset = Vec::new();
        for (list, file, what) in [
            (limits.cpuset_cpus, "cpuset.cpus", "CPUs"),
            (limits.cpuset_mems, "cpuset.mems", "memory nodes"),
        ] {
            if let Some(list) = list {
                self.require(file, "cpuset")?;
                cpuset.push((list, file, what));
            }
        }
        super::blkio::apply_v2(&limits.block_io, &limits.hugepages, &self.dir, &self.root)?;
        if let Some((bytes, path)) = memory {
            write_file(&path, &bytes.to_string())?;
            // Without this, swapping would let the workload go beyond the limit; a
            // memory+swap limit allows the difference.
            let swap = self.dir.join("memory.swap.max");
            if swap.exists() {
                let allowed = limits.memory_swap.map_or(0, |s| s.saturating_sub(bytes));
                write_file(&swap, &allowed.to_string())?;
            }
        }
        if let Some((cpus, path)) = cpu {
            let period = limits.cpu_period.unwrap_or(CPU_PERIOD_US);
            let quota = cpu_quota_us(cpus, limits.cpu_period)?;
            write_file(&path, &format!("{quota} {period}"))?;
        }
        if let Some((period, path)) = period_only {
            // The quota stays (`max`, or the one set before).
            let now = super::read_string(&path)?;
            let quota = now.split_whitespace().next().unwrap_or("max").to_string();
            write_file(&path, &format!("{quota} {period}"))?;
        }
        if let Some((n, path)) = pids {
            write_file(&path, &n.to_string())?;
        }
        if let Some((shares, path)) = weight {
            write_file(&path, &super::cpu_weight(shares).to_string())?;
        }
        for (list, file, what) in cpuset {
            super::check_cpuset_within(
                &list,
                &self.parent.join(format!("{file}.effective")),
                what,
            )?;
            write_file(&self.dir.join(file), &list.to_string())?;
        }
        Ok(())
    }

    fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid { pid });
        }
        write_file(&self.dir.join("cgroup.procs"), &pid.to_string())
    }

    fn entry(&self) -> Result<Entry, CgroupError> {
        let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY;
        super::open_entry(&self.dir, flags).map(Entry::CloneInto)
    }

    fn restrict_devices(&self, rules: &[DeviceRule]) -> Result<(), CgroupError> {
        let failed = |detail: String| CgroupError::Devices {
            path: self.dir.clone(),
            detail,
        };
        let prog = devices::load(&devices::program(rules)).map_err(|(error, log)| {
            failed(format!(
                "the kernel refused the device program (bpf BPF_PROG_LOAD: {error}{}{log}); it needs CONFIG_CGROUP_BPF and CAP_BPF or CAP_SYS_ADMIN",
                if log.is_empty() { "" } else { ", verifier: " }
            ))
        })?;
        let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY;
        let dir = super::open_entry(&self.dir, flags)?;
        devices::attach(&prog, &dir).map_err(|e| failed(format!("bpf BPF_PROG_ATTACH: {e}")))
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let dir = &self.dir;
        let current = read_opt_u64(&dir.join("memory.current"))?;
        let peak = match read_opt_u64(&dir.join("memory.peak"))? {
            Some(peak) => Some(peak),
            None => current.map(|c| self.peak_seen.fetch_max(c, Ordering::Relaxed).max(c)),
        };
        let cpu_stat = dir.join("cpu.stat");
        Ok(Stats {
            memory_peak: peak,
            memory_current: current,
            oom_kills: read_opt_keyed(&dir.join("memory.events"), "oom_kill")?,
            cpu_usage_usec: read_opt_keyed(&cpu_stat, "usage_usec")?,
            cpu_nr_periods: read_opt_keyed(&cpu_stat, "nr_periods")?,
            cpu_nr_throttled: read_opt_keyed(&cpu_stat, "nr_throttled")?,
            cpu_throttled_usec: read_opt_keyed(&cpu_stat, "throttled_usec")?,
            pids_current: read_opt_u64(&dir.join("pids.current"))?,
            pids_limit_hits: read_opt_keyed(&dir.join("pids.events"), "max")?,
        })
    }

    fn remove(&self) -> Result<(), CgroupError> {
        // The usual case, a run whose processes are all reaped: one rmdir. A busy cgroup goes
        // the long way.
        if rmdir_if_empty(&self.dir) {
            return rmdir_parent(&self.parent);
        }
        if self.dir.exists() {
            let kill_file = self.dir.join("cgroup.kill");
            if kill_file.exists() {
                // Kernel >= 5.14: SIGKILLs everything in the cgroup and below, forks included.
                // A failure here is caught by the loop below.
                let _ = write_file(&kill_file, "1");
            } else {
                let freeze = self.dir.join("cgroup.freeze");
                let frozen = freeze.exists() && write_file(&freeze, "1").is_ok();
                kill_all(&procs_recursive(&self.dir).unwrap_or_default());
                if frozen {
                    let _ = write_file(&freeze, "0");
                }
            }
            kill_until_empty(std::slice::from_ref(&self.dir))?;
        }
        rmdir_tree(&self.dir)?;
        rmdir_parent(&self.parent)
    }

    fn path(&self) -> &Path {
        &self.dir
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let freeze = self.dir.join("cgroup.freeze");
        if !freeze.exists() {
            return Err(CgroupError::NoFreezer {
                path: self.dir.clone(),
                detail: "cgroup.freeze is missing (Linux < 5.2, or the cgroup is gone)",
            });
        }
        write_file(&freeze, if frozen { "1" } else { "0" })?;
        // cgroup.events says `frozen 1` once every task is stopped (and `frozen 0` at once on
        // a thaw).
        let deadline = Instant::now() + super::FREEZE_TIMEOUT;
        while self.is_frozen()? != frozen {
            if Instant::now() >= deadline {
                let _ = write_file(&freeze, "0");
                return Err(CgroupError::Freeze {
                    path: self.dir.clone(),
                    detail: format!(
                        "cgroup.events did not say frozen {} within {:?}",
                        u8::from(frozen),
                        super::FREEZE_TIMEOUT
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(read_opt_keyed(&self.dir.join("cgroup.events"), "frozen")? == Some(1))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{ROOT, Run, real_host, unique_id};
    use super::super::{AnyCgroupManager, Layout, create};
    use super::*;

    /// A fake unified root offering `controllers`, with an existing `isol` parent offering
    /// `isol_controllers` (the kernel fills that in when the root enables them).
    fn fake_root(controllers: &str, isol_controllers: &str) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join("cgroup.controllers"), controllers).unwrap();
        fs::write(root.join("cgroup.subtree_control"), "").unwrap();
        fs::create_dir(root.join(ISOL_DIR)).unwrap();
        fs::write(root.join("isol/cgroup.controllers"), isol_controllers).unwrap();
        fs::write(root.join("isol/cgroup.subtree_control"), "memory\n").unwrap();
        tmp
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn cgroups_v2_paths() {
        let m = V2Manager::new(Path::new("/sys/fs/cgroup"), "abc").unwrap();
        assert_eq!(m.path(), Path::new("/sys/fs/cgroup/isol/abc"));
        assert!(V2Manager::new(Path::new("/sys/fs/cgroup"), "a/../../b").is_err());
        assert!(V2Manager::new(Path::new("/sys/fs/cgroup"), "").is_err());
    }

    #[test]
    fn cgroups_v2_fake_create_enables_controllers() {
        let tmp = fake_root(
            "cpuset cpu io memory hugetlb pids rdma misc\n",
            "cpu memory pids\n",
        );
        let root = tmp.path();
        let m = V2Manager::new(root, "run1").unwrap();
        m.create().unwrap();
        assert!(m.path().is_dir());
        assert_eq!(
            read(&root.join("cgroup.subtree_control")),
            "+memory +cpu +pids"
        );
        // memory was already enabled in isol.
        assert_eq!(
            read(&root.join("isol/cgroup.subtree_control")),
            "+cpu +pids"
        );
        // The id exists already: an error, not a shared cgroup.
        assert!(matches!(m.create(), Err(CgroupError::Create { .. })));
    }

    #[test]
    fn cgroups_v2_fake_create_enables_only_offered_controllers() {
        let tmp = fake_root("cpu io\n", "cpu\n");
        let root = tmp.path();
        V2Manager::new(root, "run2").unwrap().create().unwrap();
        assert_eq!(read(&root.join("cgroup.subtree_control")), "+cpu");
        assert_eq!(read(&root.join("isol/cgroup.subtree_control")), "+cpu");
    }

    #[test]
    fn cgroups_v2_fake_apply_formats() {
        let tmp = fake_root("cpu memory pids", "cpu memory pids");
        let m = V2Manager::new(tmp.path(), "run3").unwrap();
        m.create().unwrap();
        for f in [
            "memory.max",
            "memory.swap.max",
            "cpu.max",
            "pids.max",
            "cpu.weight",
        ] {
            fs::write(m.path().join(f), "max\n").unwrap();
        }
        m.apply(&Limits {
            memory: Some(64 << 20),
            cpus: Some(0.5),
            pids: Some(10),
            // A CRI pod sandbox's shares: the smallest weight.
            cpu_shares: Some(2),
            memory_swap: None,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(read(&m.path().join("cpu.weight")), "1");
        assert_eq!(read(&m.path().join("memory.max")), "67108864");
        assert_eq!(read(&m.path().join("memory.swap.max")), "0");
        assert_eq!(read(&m.path().join("cpu.max")), "50000 100000");
        assert_eq!(read(&m.path().join("pids.max")), "10");
        m.apply(&Limits {
            cpus: Some(2.0),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(read(&m.path().join("cpu.max")), "200000 100000");
        assert_eq!(
            read(&m.path().join("memory.max")),
            "67108864",
            "None leaves it"
        );
        assert!(matches!(
            m.apply(&Limits {
                pids: Some(0),
                ..Default::default()
            }),
            Err(CgroupError::InvalidLimit { .. })
        ));
    }

    #[test]
    fn cgroups_v2_fake_missing_controller_writes_nothing() {
        let tmp = fake_root("cpu", "cpu");
        let m = V2Manager::new(tmp.path(), "run4").unwrap();
        m.create().unwrap();
        fs::write(m.path().join("cpu.max"), "max 100000").unwrap();
        let err = m
            .apply(&Limits {
                memory: Some(64 << 20),
                cpus: Some(1.0),
                pids: None,
                cpu_shares: None,
                memory_swap: None,
                ..Default::default()
            })
            .unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::ControllerMissing {
                    controller: "memory",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(read(&m.path().join("cpu.max")), "max 100000");
        let msg = err.to_string();
        assert!(
            msg.starts_with("The memory limit needs the cgroup memory controller"),
            "{msg}"
        );
    }

    #[test]
    fn cgroups_v2_fake_stats() {
        let tmp = fake_root("cpu memory pids", "cpu memory pids");
        let m = V2Manager::new(tmp.path(), "run5").unwrap();
        m.create().unwrap();
        let dir = m.path();
        fs::write(dir.join("memory.current"), "4096\n").unwrap();
        fs::write(dir.join("memory.peak"), "8388608\n").unwrap();
        fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        fs::write(
            dir.join("cpu.stat"),
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 20\n\
             nr_throttled 5\nthrottled_usec 2500\nnr_bursts 0\nburst_usec 0\n",
        )
        .unwrap();
        fs::write(dir.join("pids.current"), "2\n").unwrap();
        fs::write(dir.join("pids.events"), "max 7\n").unwrap();
        assert_eq!(
            m.stats().unwrap(),
            Stats {
                memory_peak: Some(8_388_608),
                memory_current: Some(4096),
                oom_kills: Some(1),
                cpu_usage_usec: Some(1500),
                cpu_nr_periods: Some(20),
                cpu_nr_throttled: Some(5),
                cpu_throttled_usec: Some(2500),
                pids_current: Some(2),
                pids_limit_hits: Some(7),
            }
        );
        // Without memory.peak (kernel < 5.19) the highest usage seen so far stands in.
        fs::remove_file(dir.join("memory.peak")).unwrap();
        fs::write(dir.join("memory.current"), "100000").unwrap();
        assert_eq!(m.stats().unwrap().memory_peak, Some(100_000));
        fs::write(dir.join("memory.current"), "5000").unwrap();
        let stats = m.stats().unwrap();
        assert_eq!(stats.memory_peak, Some(100_000));
        assert_eq!(stats.memory_current, Some(5000));
        // Without the cpu controller, cpu.stat only has usage.
        fs::write(
            dir.join("cpu.stat"),
            "usage_usec 7\nuser_usec 5\nsystem_usec 2\n",
        )
        .unwrap();
        let stats = m.stats().unwrap();
        assert_eq!(
            (stats.cpu_usage_usec, stats.cpu_nr_periods),
            (Some(7), None)
        );
    }

    #[test]
    fn cgroups_v2_real() {
        let Some((_guard, layout)) = real_host() else {
            return;
        };
        let Layout::V2 { root } = layout else {
            println!("skipped: host has no pure cgroup v2");
            return;
        };
        let id = unique_id("v2");
        let limits = Limits {
            memory: Some(64 << 20),
            cpus: Some(1.5),
            pids: Some(100),
            cpu_shares: None,
            memory_swap: None,
            ..Default::default()
        };
        let mut run = Run::new(create(Path::new(ROOT), &id, &limits).unwrap());
        let AnyCgroupManager::V2(m) = &run.cgroup else {
            panic!("v2 layout gave {:?}", run.cgroup);
        };
        let dir = m.path().to_owned();
        assert_eq!(dir, root.join("isol").join(&id));
        let file = |f: &str| read(&dir.join(f)).trim().to_owned();
        assert_eq!(file("memory.max"), "67108864");
        if dir.join("memory.swap.max").exists() {
            assert_eq!(file("memory.swap.max"), "0");
        }
        assert_eq!(file("cpu.max"), "150000 100000");
        assert_eq!(file("pids.max"), "100");
        let enabled = read(&root.join("isol/cgroup.subtree_control"));
        for c in V2_CONTROLLERS {
            assert!(
                enabled.split_whitespace().any(|x| x == c),
                "{c} not in {enabled}"
            );
        }
        let pid = run.spawn("exec sleep 30");
        let membership = read(Path::new(&format!("/proc/{pid}/cgroup")));
        assert!(
            membership.lines().any(|l| l == format!("0::/isol/{id}")),
            "{membership}"
        );
        run.cgroup.remove().unwrap();
        let (status, _) = run.wait();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL)
        );
        assert!(!dir.exists());
    }
}
