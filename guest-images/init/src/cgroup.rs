//! The workload's cgroup in the guest: `--pids-limit` and `--memory` enforced by the guest
//! kernel's own cgroup v2, as the container backend's cgroup enforces them on the host.
//!
//! Before the fork, init (PID 1, in the root cgroup) mounts cgroup2 at `/sys/fs/cgroup`,
//! enables the `pids` and `memory` controllers for its children, creates
//! `/sys/fs/cgroup/workload` with `pids.max` and `memory.max` from the run spec and keeps
//! that cgroup's `cgroup.procs` open. The forked child, before anything else, writes itself
//! into `cgroup.procs`, makes a cgroup namespace (its cgroup becomes `/`) and a mount
//! namespace, and there replaces init's read-write mount of the whole hierarchy with a
//! read-only cgroup2 mount of its own namespace, as crun does in a container. So the
//! workload, everything it forks and every page it faults in count against the limits, and
//! it sees what a container sees: `/proc/self/cgroup` reads `0::/`, one read-only cgroup2 at
//! `/sys/fs/cgroup` with its limits in `pids.max` and `memory.max`, which it cannot write
//! (EROFS), and nothing of the guest's root cgroup.
//!
//! Init stays outside, in the root cgroup: the limits count the workload's tasks and memory
//! only (a container's count its init too, see docs/vmm.md "Limits inside the guest").

use std::fs;
use std::io::{self, Write};

use crate::spec::Limits;

/// Where the guest's cgroup2 hierarchy is mounted, and what the workload sees there.
pub const ROOT: &str = "/sys/fs/cgroup";
/// The workload's cgroup, below [`ROOT`].
pub const WORKLOAD: &str = "workload";

/// The controllers init enables when the kernel has them (the workload's
/// `/sys/fs/cgroup` shows their files, set to `max` without a limit), with the kernel
/// option behind each and the flag that needs it.
const CONTROLLERS: [(&str, &str, &str); 2] = [
    ("pids", "CONFIG_CGROUP_PIDS", "--pids-limit"),
    ("memory", "CONFIG_MEMCG", "--memory"),
];

/// The line to write to the root's `cgroup.subtree_control` given its
/// `cgroup.controllers` (`available`): every controller of [`CONTROLLERS`] the kernel has.
/// A controller a limit needs that the kernel lacks is an error naming its option.
pub fn subtree_control(available: &str, limits: &Limits) -> Result<String, String> {
    let has = |c: &str| available.split_ascii_whitespace().any(|a| a == c);
    let mut line = Vec::new();
    for (c, option, flag) in CONTROLLERS {
        let wanted = match c {
            "pids" => limits.pids_max.is_some(),
            _ => limits.memory_max.is_some(),
        };
        if has(c) {
            line.push(format!("+{c}"));
        } else if wanted {
            return Err(format!(
                "the guest kernel has no {c} cgroup controller for {flag}; build it with {option}=y (guest-images/build-kernel.sh does)"
            ));
        }
    }
    Ok(line.join(" "))
}

/// The workload's cgroup, made by init before the fork; [`WorkloadCgroup::join`] puts the
/// forked child in it.
#[derive(Debug)]
pub struct WorkloadCgroup {
    procs: fs::File,
}

fn write(path: &str, value: &str) -> Result<(), String> {
    fs::write(path, value).map_err(|e| format!("cannot write {value:?} to {path}: {e}"))
}

fn mount(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> Result<(), io::Error> {
    let c = |s: &str| std::ffi::CString::new(s).expect("no NUL in cgroup paths");
    let (s, t) = (c(source), c(target));
    let f = fstype.map(c);
    // SAFETY: all pointers are to live NUL-terminated strings or null; no data argument.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            f.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl WorkloadCgroup {
    /// Mounts cgroup2 at [`ROOT`] and makes the workload's cgroup with `limits`. `None` when the kernel has no cgroups and no limit asks for them (a
    /// kernel of the user's own, `--kernel`): the workload then runs in the root cgroup and
    /// `/sys/fs/cgroup` does not exist, as before.
    pub fn setup(limits: &Limits) -> Result<Option<Self>, String> {
        let no_cgroups = || {
            "the guest kernel has no cgroup v2 for --pids-limit/--memory; build it with CONFIG_CGROUPS=y (guest-images/build-kernel.sh does)".to_string()
        };
        // sysfs makes /sys/fs/cgroup only in a kernel with CONFIG_CGROUPS.
        if !std::path::Path::new(ROOT).is_dir() {
            return if limits.is_empty() {
                Ok(None)
            } else {
                Err(no_cgroups())
            };
        }
        let nodev = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        mount("cgroup2", ROOT, Some("cgroup2"), nodev).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENODEV) {
                no_cgroups()
            } else {
                format!("cannot mount cgroup2 on {ROOT}: {e}")
            }
        })?;
        let available = fs::read_to_string(format!("{ROOT}/cgroup.controllers"))
            .map_err(|e| format!("cannot read {ROOT}/cgroup.controllers: {e}"))?;
        let enable = subtree_control(&available, limits)?;
        if !enable.is_empty() {
            write(&format!("{ROOT}/cgroup.subtree_control"), &enable)?;
        }
        let dir = format!("{ROOT}/{WORKLOAD}");
        fs::create_dir(&dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
        if let Some(n) = limits.pids_max {
            write(&format!("{dir}/pids.max"), &n.to_string())?;
        }
        if let Some(n) = limits.memory_max {
            write(&format!("{dir}/memory.max"), &n.to_string())?;
        }
        let procs = fs::OpenOptions::new()
            .write(true)
            .open(format!("{dir}/cgroup.procs"))
            .map_err(|e| format!("cannot open {dir}/cgroup.procs: {e}"))?;
        Ok(Some(WorkloadCgroup { procs }))
    }

    /// In the forked child, first: moves the calling process into the workload's cgroup,
    /// makes cgroup and mount namespaces, and mounts the cgroup namespace's hierarchy (the
    /// workload's cgroup) read-only at [`ROOT`] in place of init's.
    pub fn join(&self) -> Result<(), String> {
        (&self.procs)
            .write_all(b"0")
            .map_err(|e| format!("cannot enter the workload's cgroup: {e}"))?;
        // The cgroup namespace after the move: its root is the cgroup we are in.
        // SAFETY: unshare takes no pointers; the new namespaces apply to this process.
        if unsafe { libc::unshare(libc::CLONE_NEWCGROUP | libc::CLONE_NEWNS) } != 0 {
            return Err(format!(
                "cannot make the workload's cgroup and mount namespaces: {}",
                io::Error::last_os_error()
            ));
        }
        // Nothing done below may reach init's mounts.
        mount("none", "/", None, libc::MS_REC | libc::MS_PRIVATE)
            .map_err(|e| format!("cannot make the workload's mounts private: {e}"))?;
        let c = std::ffi::CString::new(ROOT).expect("no NUL");
        // SAFETY: valid NUL-terminated path.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(format!(
                "cannot unmount init's {ROOT}: {}",
                io::Error::last_os_error()
            ));
        }
        let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        mount("cgroup2", ROOT, Some("cgroup2"), flags)
            .map_err(|e| format!("cannot mount the workload's cgroup2 on {ROOT}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_controller_the_kernel_has_is_enabled() {
        let none = Limits::default();
        assert_eq!(
            subtree_control("cpuset cpu io memory pids\n", &none).unwrap(),
            "+pids +memory"
        );
        assert_eq!(subtree_control("memory\n", &none).unwrap(), "+memory");
        assert_eq!(subtree_control("\n", &none).unwrap(), "");
        // "pids" must be a whole word.
        assert_eq!(subtree_control("pidsx memory", &none).unwrap(), "+memory");
    }

    #[test]
    fn a_limit_without_its_controller_names_the_option() {
        let pids = Limits {
            pids_max: Some(10),
            memory_max: None,
        };
        let e = subtree_control("memory\n", &pids).unwrap_err();
        assert!(
            e.contains("CONFIG_CGROUP_PIDS=y") && e.contains("--pids-limit"),
            "{e}"
        );
        let memory = Limits {
            pids_max: None,
            memory_max: Some(64 << 20),
        };
        let e = subtree_control("pids\n", &memory).unwrap_err();
        assert!(
            e.contains("CONFIG_MEMCG=y") && e.contains("--memory"),
            "{e}"
        );
        assert_eq!(subtree_control("pids\n", &pids).unwrap(), "+pids");
    }
}
