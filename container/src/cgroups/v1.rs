//! cgroup v1: one directory `<mount>/isol/<id>` per controller hierarchy isol uses (memory,
//! cpu, cpuacct, pids, and freezer to stop processes while they are killed). Co-mounted
//! controllers (`cpu,cpuacct`) share one directory.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Instant;

use nix::errno::Errno;

use super::devices::DeviceRule;
use super::{
    CPU_PERIOD_US, CgroupError, CgroupManager, Entry, ISOL_DIR, KILL_TIMEOUT, Limits, POLL, Stats,
    V1_CONTROLLERS, V1Hierarchy, cpu_quota_us, kill_all, kill_until_empty, mkdir_cgroup,
    procs_recursive, read_opt_keyed, read_opt_string, read_opt_u64, read_string, rmdir_if_empty,
    rmdir_parent, rmdir_tree, validate_id, validate_limits, write_file,
};

/// The cgroup of one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ControllerDir {
    /// The controllers isol uses that this hierarchy serves.
    controllers: Vec<&'static str>,
    /// `<mount>/isol`, shared by all runs.
    parent: PathBuf,
    /// `<mount>/isol/<id>`.
    dir: PathBuf,
    /// The hierarchy's mount point (its root cgroup).
    mount: PathBuf,
    /// The hierarchy as a container mounts it: the name of its mount point (`memory`,
    /// `cpu,cpuacct`) and its mount options (every controller it serves).
    view: V1View,
}

/// One v1 hierarchy as the container sees it at `/sys/fs/cgroup/<name>`, mounted in its
/// cgroup namespace (so its own cgroup is the root).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1View {
    pub name: String,
    pub options: String,
}

/// A run's cgroup on a v1 (legacy or hybrid) host.
#[derive(Debug)]
pub struct V1Manager {
    root: PathBuf,
    dirs: Vec<ControllerDir>,
}

/// For each controller isol uses, the first hierarchy that has it: `(controller, mount point)`.
fn used_controllers(hierarchies: &[V1Hierarchy]) -> Vec<(&'static str, &Path)> {
    V1_CONTROLLERS
        .iter()
        .filter_map(|&c| {
            hierarchies
                .iter()
                .find(|h| h.controllers.iter().any(|x| x == c))
                .map(|h| (c, h.mount_point.as_path()))
        })
        .collect()
}

/// The mount points of the hierarchies isol uses, each once.
pub(crate) fn used_mounts(hierarchies: &[V1Hierarchy]) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = Vec::new();
    for (_, mount) in used_controllers(hierarchies) {
        if !mounts.iter().any(|m| m == mount) {
            mounts.push(mount.to_owned());
        }
    }
    mounts
}

impl V1Manager {
    /// The manager of `isol/<id>` in `hierarchies` (found below `root`); creates nothing.
    pub fn new(root: &Path, hierarchies: &[V1Hierarchy], id: &str) -> Result<Self, CgroupError> {
        validate_id(id)?;
        Self::at(root, hierarchies, &Path::new(ISOL_DIR).join(id))
    }

    /// The manager of the cgroup at `path` (relative, checked by [`super::check_path`]) in each
    /// of `hierarchies`; creates nothing.
    pub fn at(root: &Path, hierarchies: &[V1Hierarchy], path: &Path) -> Result<Self, CgroupError> {
        let path = super::check_path(path)?;
        let rel_parent = path.parent().unwrap_or(Path::new(""));
        let mut dirs: Vec<ControllerDir> = Vec::new();
        for (controller, mount) in used_controllers(hierarchies) {
            let parent = mount.join(rel_parent);
            match dirs.iter_mut().find(|d| d.parent == parent) {
                Some(d) => d.controllers.push(controller),
                None => dirs.push(ControllerDir {
                    controllers: vec![controller],
                    dir: mount.join(path),
                    mount: mount.to_owned(),
                    parent,
                    view: V1View {
                        name: mount
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| controller.to_owned()),
                        options: hierarchies
                            .iter()
                            .find(|h| h.mount_point == mount)
                            .map(|h| h.controllers.join(","))
                            .unwrap_or_else(|| controller.to_owned()),
                    },
                }),
            }
        }
        if dirs.is_empty() {
            return Err(CgroupError::NoHierarchy {
                path: root.to_owned(),
                detail: "none of the memory, cpu, cpuacct, pids or freezer controllers is mounted"
                    .into(),
            });
        }
        Ok(V1Manager {
            root: root.to_owned(),
            dirs,
        })
    }

    /// Keeps only the hierarchies where the cgroup exists: those a run created (an existing
    /// cgroup's manager, [`super::open_at`]) — or, with `or_parent`, where its parent does (a
    /// creation cut short between the two, for its removal). Keeps one when there is none, so
    /// removal still has a path to report.
    pub fn retain_existing(&mut self, or_parent: bool) {
        let kept: Vec<ControllerDir> = self
            .dirs
            .iter()
            .filter(|d| d.dir.is_dir() || (or_parent && d.parent.is_dir()))
            .cloned()
            .collect();
        if !kept.is_empty() {
            self.dirs = kept;
        }
    }

    /// Keeps only the hierarchies a run with `limits` needs: memory always (peak memory and
    /// OOM evidence), devices always (what the container may open), cpu/cpuacct for a CPU quota, pids for a pids limit. Every hierarchy joined
    /// costs the run a task migration, which on v1 waits for an RCU grace period, and a
    /// directory to create and remove.
    pub fn retain_for(&mut self, limits: &Limits) {
        let wanted = |c: &str| {
            c == "memory"
                || c == "devices"
                || ((limits.cpus.is_some()
                    || limits.cpu_shares.is_some()
                    || limits.cpu_period.is_some())
                    && (c == "cpu" || c == "cpuacct"))
                || (limits.pids.is_some() && c == "pids")
                || ((limits.cpuset_cpus.is_some() || limits.cpuset_mems.is_some()) && c == "cpuset")
                || (!limits.block_io.is_empty() && c == "blkio")
                || (!limits.hugepages.is_empty() && c == "hugetlb")
        };
        let kept: Vec<ControllerDir> = self
            .dirs
            .iter()
            .filter(|d| d.controllers.iter().any(|c| wanted(c)))
            .cloned()
            .collect();
        // A host without any of those still gets one hierarchy, so the run is tracked.
        if !kept.is_empty() {
            self.dirs = kept;
        } else {
            self.dirs.truncate(1);
        }
    }

    /// The hierarchies this cgroup is in, as the container mounts them.
    pub fn views(&self) -> Vec<V1View> {
        self.dirs.iter().map(|d| d.view.clone()).collect()
    }

    /// This run's directory in the hierarchy of `controller`, if the host mounts it.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|d| d.controllers.contains(&controller))
            .map(|d| d.dir.as_path())
    }

    /// This run's directories, one per hierarchy.
    pub fn dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs.iter().map(|d| d.dir.as_path())
    }

    /// Fails when a limit that is set needs a controller the host does not mount.
    pub(crate) fn check_controllers(&self, limits: &Limits) -> Result<(), CgroupError> {
        let needs = [
            (limits.memory.is_some(), "memory", "memory"),
            (limits.cpus.is_some(), "cpu", "cpu"),
            (limits.cpu_shares.is_some(), "cpu", "cpu shares"),
            (limits.cpu_period.is_some(), "cpu", "cpu period"),
            (limits.pids.is_some(), "pids", "pids"),
            (limits.cpuset_cpus.is_some(), "cpuset", "cpuset cpus"),
            (limits.cpuset_mems.is_some(), "cpuset", "cpuset mems"),
        ];
        for (set, controller, limit) in needs {
            if set && self.dir(controller).is_none() {
                return Err(CgroupError::ControllerMissing {
                    controller,
                    limit,
                    root: self.root.clone(),
                });
            }
        }
        Ok(())
    }

    /// Creates the directories; on failure removes those already made.
    pub(crate) fn create(&self) -> Result<(), CgroupError> {
        for d in &self.dirs {
            let made = mkdir_cgroup(&d.parent, &d.dir).and_then(|()| {
                if d.controllers.contains(&"cpuset") {
                    cpuset_inherit(&d.mount, &d.dir)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = made {
                let _ = self.remove();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Writes the cpuset limits, each checked against the parent's list first, so that a CPU
    /// the host (or the cgroup parent) lacks is named rather than the kernel's EINVAL.
    fn apply_cpuset(&self, limits: &Limits) -> Result<(), CgroupError> {
        let Some(d) = self.dirs.iter().find(|d| d.controllers.contains(&"cpuset")) else {
            return Ok(());
        };
        for (list, file, what) in [
            (limits.cpuset_cpus, "cpuset.cpus", "CPUs"),
            (limits.cpuset_mems, "cpuset.mems", "memory nodes"),
        ] {
            let Some(list) = list else { continue };
            super::check_cpuset_within(&list, &d.parent.join(file), what)?;
            write_file(&d.dir.join(file), &list.to_string())?;
        }
        Ok(())
    }

    /// Freezes the cgroup so nothing can fork while it is being killed. False when there is no
    /// freezer hierarchy (or the cgroup is gone).
    fn freeze(&self) -> bool {
        let Some(dir) = self.dir("freezer") else {
            return false;
        };
        let state = dir.join("freezer.state");
        if write_file(&state, "FROZEN").is_err() {
            return false;
        }
        // FREEZING until every task is stopped; a task stuck in the kernel may keep it there,
        // in which case the kill loop below still gets it.
        let deadline = Instant::now() + KILL_TIMEOUT / 3;
        while Instant::now() < deadline {
            match read_opt_string(&state) {
                Ok(Some(s)) if s.trim() == "FROZEN" => break,
                Ok(Some(_)) => thread::sleep(POLL),
                _ => break,
            }
        }
        true
    }

    /// The `freezer.state` file, or why there is none.
    fn freezer_state(&self) -> Result<PathBuf, CgroupError> {
        let no = |detail| CgroupError::NoFreezer {
            path: self.path().to_owned(),
            detail,
        };
        let dir = self.dir("freezer").ok_or_else(|| {
            no("the freezer controller is not mounted, or the cgroup is not in it")
        })?;
        let state = dir.join("freezer.state");
        if !state.exists() {
            return Err(no("the cgroup is not in the freezer hierarchy"));
        }
        Ok(state)
    }

    fn thaw(&self) {
        if let Some(dir) = self.dir("freezer") {
            let _ = write_file(&dir.join("freezer.state"), "THAWED");
        }
    }
}

/// v1's cpuset hierarchy gives a new cgroup empty `cpuset.cpus` and `cpuset.mems` (unless its
/// parent has `cgroup.clone_children`), and no task can join a cgroup without CPUs or memory
/// nodes (ENOSPC): each level from below the hierarchy's root down to `dir` whose lists are
/// empty gets its parent's, as runc does, before any task joins.
fn cpuset_inherit(mount: &Path, dir: &Path) -> Result<(), CgroupError> {
    let Ok(rel) = dir.strip_prefix(mount) else {
        return Ok(());
    };
    let mut parent = mount.to_owned();
    for part in rel.components() {
        let child = parent.join(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let Some(own) = read_opt_string(&child.join(file))? else {
                continue;
            };
            if own.trim().is_empty() {
                let inherited = read_string(&parent.join(file))?;
                write_file(&child.join(file), inherited.trim())?;
            }
        }
        parent = child;
    }
    Ok(())
}

impl CgroupManager for V1Manager {
    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        validate_limits(limits)?;
        self.check_controllers(limits)?;
        if let (Some(memory), Some(dir)) = (limits.memory, self.dir("memory")) {
            let value = memory.to_string();
            let swap_value = limits.memory_swap.unwrap_or(memory).to_string();
            let limit = dir.join("memory.limit_in_bytes");
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                // memory+swap gets the same limit unless a larger one is given, so swapping
                // does not dodge it. The kernel wants memsw >= limit at all times: raising the
                // limit above the current memsw fails with EINVAL, so then memsw goes first.
                match write_file(&limit, &value) {
                    Ok(()) => write_file(&memsw, &swap_value)?,
                    Err(CgroupError::Write { error, .. })
                        if error.raw_os_error() == Some(Errno::EINVAL as i32) =>
                    {
                        write_file(&memsw, &swap_value)?;
                        write_file(&limit, &value)?;
                    }
                    Err(e) => return Err(e),
                }
            } else {
                write_file(&limit, &value)?;
            }
        }
        if let (Some(cpus), Some(dir)) = (limits.cpus, self.dir("cpu")) {
            let quota = cpu_quota_us(cpus, limits.cpu_period)?;
            let period = limits.cpu_period.unwrap_or(CPU_PERIOD_US);
            write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
            write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        } else if let (Some(period), Some(dir)) = (limits.cpu_period, self.dir("cpu")) {
            write_file(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
        }
        if let (Some(shares), Some(dir)) = (limits.cpu_shares, self.dir("cpu")) {
            write_file(&dir.join("cpu.shares"), &shares.to_string())?;
        }
        super::blkio::apply_v1(
            &limits.block_io,
            &limits.hugepages,
            self.dir("blkio"),
            self.dir("hugetlb"),
            &self.root,
        )?;
        if let (Some(pids), Some(dir)) = (limits.pids, self.dir("pids")) {
            write_file(&dir.join("pids.max"), &pids.to_string())?;
        }
        self.apply_cpuset(limits)
    }

    fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid { pid });
        }
        // Every hierarchy, limited or not, so that stats and remove() see the process.
        for d in &self.dirs {
            write_file(&d.dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn entry(&self) -> Result<Entry, CgroupError> {
        // Every hierarchy, as add_task.
        self.dirs
            .iter()
            .map(|d| super::open_entry(&d.dir.join("tasks"), nix::fcntl::OFlag::O_WRONLY))
            .collect::<Result<_, _>>()
            .map(Entry::SelfJoin)
    }

    fn restrict_devices(&self, rules: &[DeviceRule]) -> Result<(), CgroupError> {
        let Some(dir) = self.dir("devices") else {
            return Err(CgroupError::Devices {
                path: self.root.clone(),
                detail: "the devices controller is not mounted".into(),
            });
        };
        // Deny everything, then open what the rules allow, in order.
        write_file(&dir.join("devices.deny"), "a")?;
        for rule in rules {
            let file = dir.join(if rule.allow {
                "devices.allow"
            } else {
                "devices.deny"
            });
            for entry in rule.v1_entries() {
                write_file(&file, &entry)?;
            }
        }
        Ok(())
    }

    fn stats(&self) -> Result<Stats, CgroupError> {
        let mut stats = Stats::default();
        if let Some(dir) = self.dir("memory") {
            stats.memory_peak = read_opt_u64(&dir.join("memory.max_usage_in_bytes"))?;
            stats.memory_current = read_opt_u64(&dir.join("memory.usage_in_bytes"))?;
            stats.oom_kills = read_opt_keyed(&dir.join("memory.oom_control"), "oom_kill")?;
        }
        if let Some(dir) = self.dir("cpuacct") {
            stats.cpu_usage_usec = read_opt_u64(&dir.join("cpuacct.usage"))?.map(|ns| ns / 1000);
        }
        if let Some(dir) = self.dir("cpu") {
            let stat = dir.join("cpu.stat");
            stats.cpu_nr_periods = read_opt_keyed(&stat, "nr_periods")?;
            stats.cpu_nr_throttled = read_opt_keyed(&stat, "nr_throttled")?;
            stats.cpu_throttled_usec = read_opt_keyed(&stat, "throttled_time")?.map(|ns| ns / 1000);
        }
        if let Some(dir) = self.dir("pids") {
            stats.pids_current = read_opt_u64(&dir.join("pids.current"))?;
            stats.pids_limit_hits = read_opt_keyed(&dir.join("pids.events"), "max")?;
        }
        Ok(stats)
    }

    fn remove(&self) -> Result<(), CgroupError> {
        // The usual case, a run whose processes are all reaped: one rmdir per hierarchy. What
        // is still busy goes the long way.
        let dirs: Vec<PathBuf> = self
            .dirs()
            .filter(|d| !rmdir_if_empty(d))
            .map(Path::to_owned)
            .collect();
        if dirs.iter().any(|d| d.exists()) {
            let frozen = self.freeze();
            let mut pids = Vec::new();
            for dir in &dirs {
                pids.extend(procs_recursive(dir).unwrap_or_default());
            }
            kill_all(&pids);
            if frozen {
                // Frozen tasks die of the SIGKILL once thawed.
                self.thaw();
            }
            kill_until_empty(&dirs)?;
        }
        let mut result = Ok(());
        for dir in &dirs {
            if let Err(e) = rmdir_tree(dir) {
                result = result.and(Err(e));
            }
        }
        for d in &self.dirs {
            if let Err(e) = rmdir_parent(&d.parent) {
                result = result.and(Err(e));
            }
        }
        result
    }

    fn path(&self) -> &Path {
        self.dir("memory").unwrap_or(&self.dirs[0].dir)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        let state = self.freezer_state()?;
        if !frozen {
            return write_file(&state, "THAWED");
        }
        // FREEZING until every task is stopped. As runc, the write is repeated while waiting:
        // a task that forked or was in the kernel when the freeze began is caught by the next.
        let deadline = Instant::now() + super::FREEZE_TIMEOUT;
        loop {
            write_file(&state, "FROZEN")?;
            if read_string(&state)?.trim() == "FROZEN" {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = write_file(&state, "THAWED");
                return Err(CgroupError::Freeze {
                    path: state,
                    detail: format!(
                        "some task did not stop within {:?} (freezer.state stayed FREEZING)",
                        super::FREEZE_TIMEOUT
                    ),
                });
            }
            thread::sleep(POLL);
        }
    }

    fn is_frozen(&self) -> Result<bool, CgroupError> {
        match self.dir("freezer") {
            Some(dir) => {
                Ok(read_opt_string(&dir.join("freezer.state"))?
                    .is_some_and(|s| s.trim() == "FROZEN"))
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::test_support::{ROOT, Run, real_host, unique_id};
    use super::super::{AnyCgroupManager, Layout, create};
    use super::*;

    fn hierarchy(mount: &Path, controllers: &[&str]) -> V1Hierarchy {
        V1Hierarchy {
            controllers: controllers.iter().map(|c| c.to_string()).collect(),
            mount_point: mount.to_owned(),
        }
    }

    /// A fake v1 tree with separate memory/cpu/cpuacct/pids hierarchies and a co-mounted
    /// `net_cls,net_prio` one isol ignores.
    fn fake_tree(root: &Path) -> Vec<V1Hierarchy> {
        ["memory", "cpu", "cpuacct", "pids", "net_cls,net_prio"]
            .iter()
            .map(|name| {
                let mount = root.join(name);
                fs::create_dir(&mount).unwrap();
                hierarchy(&mount, &name.split(',').collect::<Vec<_>>())
            })
            .collect()
    }

    #[test]
    fn cgroups_v1_paths_separate_and_comounted() {
        let root = Path::new("/sys/fs/cgroup");
        let separate = [
            hierarchy(&root.join("cpu"), &["cpu"]),
            hierarchy(&root.join("cpuacct"), &["cpuacct"]),
            hierarchy(&root.join("memory"), &["memory"]),
            hierarchy(&root.join("pids"), &["pids"]),
            hierarchy(&root.join("freezer"), &["freezer"]),
            hierarchy(&root.join("cpuset"), &["cpuset"]),
        ];
        let m = V1Manager::new(root, &separate, "abc").unwrap();
        assert_eq!(m.path(), Path::new("/sys/fs/cgroup/memory/isol/abc"));
        assert_eq!(m.dir("cpu"), Some(Path::new("/sys/fs/cgroup/cpu/isol/abc")));
        assert_eq!(
            m.dir("cpuacct"),
            Some(Path::new("/sys/fs/cgroup/cpuacct/isol/abc"))
        );
        assert_eq!(
            m.dir("cpuset"),
            Some(Path::new("/sys/fs/cgroup/cpuset/isol/abc"))
        );
        assert_eq!(m.dirs().count(), 6);

        let comounted = [
            hierarchy(&root.join("cpu,cpuacct"), &["cpu", "cpuacct"]),
            hierarchy(&root.join("memory"), &["memory"]),
        ];
        let m = V1Manager::new(root, &comounted, "abc").unwrap();
        assert_eq!(m.dir("cpu"), m.dir("cpuacct"));
        assert_eq!(
            m.dir("cpu"),
            Some(Path::new("/sys/fs/cgroup/cpu,cpuacct/isol/abc"))
        );
        assert_eq!(m.dirs().count(), 2);
        assert_eq!(
            used_mounts(&comounted),
            [root.join("memory"), root.join("cpu,cpuacct")]
        );
        assert!(V1Manager::new(root, &comounted, "../x").is_err());
        assert!(
            V1Manager::new(root, &[hierarchy(&root.join("net_cls"), &["net_cls"])], "a").is_err()
        );
    }

    #[test]
    fn cgroups_v1_missing_controller_is_an_error() {
        let root = Path::new("/sys/fs/cgroup");
        let m = V1Manager::new(root, &[hierarchy(&root.join("cpu"), &["cpu"])], "x").unwrap();
        let err = m
            .apply(&Limits {
                memory: Some(64 << 20),
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
        assert!(err.to_string().contains("memory controller"), "{err}");
        m.apply(&Limits {
            cpus: None,
            ..Default::default()
        })
        .unwrap();
    }

    #[test]
    fn cgroups_v1_fake_apply_and_stats() {
        let tmp = tempfile::tempdir().unwrap();
        let hierarchies = fake_tree(tmp.path());
        let m = V1Manager::new(tmp.path(), &hierarchies, "run1").unwrap();
        m.create().unwrap();
        let files = [
            ("memory", "memory.limit_in_bytes", "9223372036854771712\n"),
            (
                "memory",
                "memory.memsw.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("memory", "memory.max_usage_in_bytes", "5242880\n"),
            ("memory", "memory.usage_in_bytes", "4096\n"),
            (
                "memory",
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            ),
            ("cpu", "cpu.cfs_period_us", "100000\n"),
            ("cpu", "cpu.cfs_quota_us", "-1\n"),
            ("cpu", "cpu.shares", "1024\n"),
            (
                "cpu",
                "cpu.stat",
                "nr_periods 10\nnr_throttled 4\nthrottled_time 3000000\n",
            ),
            ("cpuacct", "cpuacct.usage", "123456789\n"),
            ("pids", "pids.max", "max\n"),
            ("pids", "pids.current", "3\n"),
            ("pids", "pids.events", "max 7\n"),
        ];
        for (controller, file, content) in files {
            fs::write(m.dir(controller).unwrap().join(file), content).unwrap();
        }
        m.apply(&Limits {
            memory: Some(64 << 20),
            cpus: Some(0.25),
            pids: Some(10),
            cpu_shares: Some(2),
            memory_swap: None,
            ..Default::default()
        })
        .unwrap();
        let read = |c: &str, f: &str| fs::read_to_string(m.dir(c).unwrap().join(f)).unwrap();
        assert_eq!(read("cpu", "cpu.shares"), "2");
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), "67108864");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "25000");
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("pids", "pids.max"), "10");
        let stats = m.stats().unwrap();
        assert_eq!(
            stats,
            Stats {
                memory_peak: Some(5_242_880),
                memory_current: Some(4096),
                oom_kills: Some(2),
                cpu_usage_usec: Some(123_456),
                cpu_nr_periods: Some(10),
                cpu_nr_throttled: Some(4),
                cpu_throttled_usec: Some(3000),
                pids_current: Some(3),
                pids_limit_hits: Some(7),
            }
        );
        // The fake directories hold regular files, so rmdir cannot work there: check that the
        // error names the directory.
        let err = m.remove().unwrap_err();
        assert!(matches!(err, CgroupError::Remove { .. }), "{err}");
        assert!(!tmp.path().join("net_cls,net_prio/isol").exists());
    }

    #[test]
    fn cgroups_v1_real_limit_files() {
        let Some((_guard, layout)) = real_host() else {
            return;
        };
        if !matches!(layout, Layout::V1 { .. }) {
            println!("skipped: host has no cgroup v1 controllers");
            return;
        }
        let id = unique_id("v1files");
        let limits = Limits {
            memory: Some(64 << 20),
            cpus: Some(1.5),
            pids: Some(100),
            cpu_shares: None,
            memory_swap: None,
            ..Default::default()
        };
        let run = Run::new(create(Path::new(ROOT), &id, &limits).unwrap());
        let AnyCgroupManager::V1(m) = &run.cgroup else {
            panic!("v1 layout gave {:?}", run.cgroup);
        };
        let read = |c: &str, f: &str| {
            fs::read_to_string(m.dir(c).unwrap().join(f))
                .unwrap()
                .trim()
                .to_owned()
        };
        assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
        if m.dir("memory")
            .unwrap()
            .join("memory.memsw.limit_in_bytes")
            .exists()
        {
            assert_eq!(read("memory", "memory.memsw.limit_in_bytes"), "67108864");
        }
        assert_eq!(read("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "150000");
        assert_eq!(read("pids", "pids.max"), "100");
        for dir in m.dirs() {
            assert!(dir.is_dir(), "{dir:?}");
            assert!(dir.starts_with(ROOT) && dir.ends_with(format!("isol/{id}")));
        }
        // Raising the memory limit above the current memsw limit needs memsw first.
        m.apply(&Limits {
            memory: Some(128 << 20),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(read("memory", "memory.limit_in_bytes"), "134217728");
        m.apply(&Limits {
            memory: Some(16 << 20),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(read("memory", "memory.limit_in_bytes"), "16777216");
        let dirs: Vec<PathBuf> = m.dirs().map(Path::to_owned).collect();
        run.cgroup.remove().unwrap();
        assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?}");
    }
}
