//! Per-run state on the host: `<state_root>/<id>/` holds the overlay's writable upper and work
//! dirs, the mount point of the merged rootfs, and an `owner` file naming the isol process that
//! owns the run. A run removes its directory when it ends; a run whose isol was SIGKILLed leaves
//! it behind, and [`sweep`] (called at the start of every run) removes such leftovers together
//! with their cgroups and network allocations.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::ContainerError;

/// Directory layout of one run.
#[derive(Debug)]
pub struct RunDir {
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

impl RunDir {
    /// Creates `<state_root>/<id>/{upper,work,merged}` and the owner file.
    pub fn create(state_root: &Path, id: &str) -> Result<RunDir, ContainerError> {
        let dir = state_root.join(id);
        let io_err = |what: &str, path: &Path, e: io::Error| ContainerError::State {
            what: format!("{what} {}", path.display()),
            source: e,
        };
        fs::create_dir_all(state_root).map_err(|e| io_err("create", state_root, e))?;
        fs::create_dir(&dir).map_err(|e| io_err("create", &dir, e))?;
        let run = RunDir {
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            dir,
        };
        for d in [&run.upper, &run.work, &run.merged] {
            fs::create_dir(d).map_err(|e| io_err("create", d, e))?;
        }
        let owner = run.dir.join("owner");
        let mut f = fs::File::create(&owner).map_err(|e| io_err("write", &owner, e))?;
        writeln!(f, "{}", owner_token(std::process::id()).unwrap_or_default())
            .map_err(|e| io_err("write", &owner, e))?;
        Ok(run)
    }

    /// Removes the run's directory (the upper layer with everything the run wrote).
    pub fn remove(&self) -> Result<(), ContainerError> {
        match remove_tree(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContainerError::State {
                what: format!("remove {}", self.dir.display()),
                source: e,
            }),
        }
    }
}

/// `rm -rf`, also for trees an unprivileged owner cannot list: overlayfs leaves its work dir
/// with mode 000, and a rootless workload may have made directories unreadable.
fn remove_tree(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_owner_accessible(dir);
            fs::remove_dir_all(dir)
        }
        other => other,
    }
}

fn make_owner_accessible(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode();
    if mode & 0o700 != 0o700 {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode | 0o700));
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            make_owner_accessible(&e.path());
        }
    }
}

/// `pid:starttime` of a process: the pair survives pid reuse, the pid alone does not.
fn owner_token(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // starttime is field 22 of the file, the 20th after the comm field.
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid}:{start}"))
}

/// Whether the owner recorded in `<dir>/owner` is still running.
fn owner_alive(dir: &Path) -> bool {
    let Ok(token) = fs::read_to_string(dir.join("owner")) else {
        // A run dir without an owner file is one whose creation was cut short.
        return false;
    };
    let token = token.trim();
    let Some(pid) = token.split(':').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    owner_token(pid).as_deref() == Some(token)
}

/// Ids of runs under `state_root` whose isol process is still alive.
pub fn live_ids(state_root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(state_root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .filter(|e| owner_alive(&e.path()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| is_run_id(name))
        .collect()
}

/// Run ids are 12 lowercase hex digits.
pub fn is_run_id(s: &str) -> bool {
    s.len() == 12
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A fresh random run id.
pub fn new_run_id() -> String {
    let mut buf = [0u8; 6];
    // getrandom(2) never fails for 6 bytes once the pool is initialised; fall back to the clock.
    if getrandom(&mut buf).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        buf.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn getrandom(buf: &mut [u8]) -> io::Result<()> {
    // SAFETY: getrandom writes at most `buf.len()` bytes into the valid, exclusively borrowed buffer.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n == buf.len() as isize {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes the leftovers of runs whose isol process died without cleaning up: their run dirs,
/// cgroups and network allocations. Errors are ignored: the next sweep tries again.
pub fn sweep(state_root: &Path, cgroup_root: &Path) {
    let Ok(entries) = fs::read_dir(state_root) else {
        return;
    };
    let mut dead = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_run_id(name) && e.path().is_dir() && !owner_alive(&e.path()) {
            dead.push((name.to_owned(), e.path()));
        }
    }
    let net_root = state_root.join("net");
    if dead.is_empty() {
        if net_root.exists() {
            crate::network::sweep(state_root);
        }
        return;
    }
    // Only runs known to be dead are swept: other isol processes (other state roots) may own
    // the other cgroups under `isol/`.
    crate::cgroups::sweep(cgroup_root, &|id: &str| !dead.iter().any(|(d, _)| d == id));
    crate::network::sweep(state_root);
    for (_, path) in dead {
        let _ = remove_tree(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_twelve_hex_digits_and_distinct() {
        let a = new_run_id();
        let b = new_run_id();
        assert!(is_run_id(&a), "{a}");
        assert_ne!(a, b);
        assert!(!is_run_id("net"));
        assert!(!is_run_id("0123456789AB"));
    }

    #[test]
    fn own_process_is_alive_and_a_dead_owner_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(tmp.path(), "0123456789ab").unwrap();
        assert!(owner_alive(&run.dir));
        assert_eq!(live_ids(tmp.path()), vec!["0123456789ab".to_string()]);
        // A token for our pid with a wrong start time is a recycled pid: dead.
        fs::write(run.dir.join("owner"), format!("{}:1\n", std::process::id())).unwrap();
        assert!(!owner_alive(&run.dir));
        run.remove().unwrap();
        assert!(!run.dir.exists());
    }
}
