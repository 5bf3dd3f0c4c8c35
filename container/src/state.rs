//! Per-run state on the host: `<state_root>/<id>/` holds an `owner` file naming the isol process
//! that owns the run, and the place of the overlay's writable upper and work dirs and of the
//! merged rootfs' mount point: in a tmpfs the container mounts over the run dir in its own mount
//! namespace (so on the host the run dir holds only `owner`), or, in rootless mode, as real
//! directories on the host's disk. The file naming the isol process that
//! owns the run. A run removes its directory when it ends; a run whose isol was SIGKILLed leaves
//! it behind, and [`sweep`] (called at the start of every run) removes such leftovers together
//! with their cgroups and network allocations.

use std::fs;
use std::io;
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
    /// Creates `<state_root>/<id>/` with the owner file, and `{upper,work,merged}` in it when
    /// `layer_dirs` (the writable layer on the host's disk; otherwise the container makes them
    /// in its tmpfs). The directory is
    /// built under a temporary name and renamed into place, so that no other isol's sweep can
    /// ever see a run dir without its owner and take it for a dead run's.
    pub fn create(state_root: &Path, id: &str, layer_dirs: bool) -> Result<RunDir, ContainerError> {
        let io_err = |what: &str, path: &Path, e: io::Error| ContainerError::State {
            what: format!("{what} {}", path.display()),
            source: e,
        };
        fs::create_dir_all(state_root).map_err(|e| io_err("create", state_root, e))?;
        let tmp = state_root.join(format!("{NEW_PREFIX}{id}"));
        fs::create_dir(&tmp).map_err(|e| io_err("create", &tmp, e))?;
        let dir = state_root.join(id);
        let filled = (|| {
            let owner = tmp.join("owner");
            let token = owner_token(std::process::id()).unwrap_or_default();
            fs::write(&owner, format!("{token}\n")).map_err(|e| io_err("write", &owner, e))?;
            for d in ["upper", "work", "merged"]
                .into_iter()
                .filter(|_| layer_dirs)
            {
                let p = tmp.join(d);
                fs::create_dir(&p).map_err(|e| io_err("create", &p, e))?;
            }
            fs::rename(&tmp, &dir).map_err(|e| io_err("create", &dir, e))
        })();
        if let Err(e) = filled {
            // Nothing half-made stays (a full filesystem: the owner file made, its bytes not).
            let _ = remove_tree(&tmp);
            return Err(e);
        }
        tracing::debug!(dir = %dir.display(), "run directory created");
        Ok(RunDir {
            upper: dir.join("upper"),
            work: dir.join("work"),
            merged: dir.join("merged"),
            dir,
        })
    }

    /// Removes the run's directory (the upper layer with everything the run wrote). It is first
    /// renamed out of the way, so no sweep ever sees a run dir whose owner file is half deleted.
    pub fn remove(&self) -> Result<(), ContainerError> {
        let Some(name) = self.dir.file_name() else {
            return Ok(());
        };
        let mut old_name = std::ffi::OsString::from(OLD_PREFIX);
        old_name.push(name);
        let old = self.dir.with_file_name(old_name);
        match fs::rename(&self.dir, &old) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ContainerError::State {
                    what: format!("remove {}", self.dir.display()),
                    source: e,
                });
            }
        }
        match remove_tree(&old) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContainerError::State {
                what: format!("remove {}", old.display()),
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

/// Prefix of a run dir still being created.
const NEW_PREFIX: &str = ".new-";
/// Prefix of a run dir being removed.
const OLD_PREFIX: &str = ".old-";

/// The file in a run's directory naming its container's init (`pid`) and, with a bridge network,
/// its address (a second line).
const RUN_INFO: &str = "init";

/// Records where a running container's init is (and its address), in its run directory.
pub(crate) fn write_run_info(
    dir: &Path,
    init_pid: i32,
    address: Option<&str>,
) -> Result<(), ContainerError> {
    let path = dir.join(RUN_INFO);
    let tmp = dir.join(".init.tmp");
    let text = format!("{init_pid}\n{}\n", address.unwrap_or(""));
    fs::write(&tmp, text)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(|e| ContainerError::State {
            what: format!("write {}", path.display()),
            source: e,
        })
}

/// A running container's init (its pid on the host) and address, while the isol process that
/// runs it is alive; `None` for a run that is not (or not yet, or no longer) running.
pub fn run_info(state_root: &Path, id: &str) -> Option<(i32, Option<String>)> {
    let dir = state_root.join(id);
    let text = fs::read_to_string(dir.join(RUN_INFO)).ok()?;
    if !owner_alive(&dir) {
        return None;
    }
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let address = lines.next().map(str::trim).filter(|a| !a.is_empty());
    Some((pid, address.map(str::to_owned)))
}

/// `pid:starttime` of a process: the pair survives pid reuse, the pid alone does not.
pub fn owner_token(pid: u32) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may hold spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // A zombie (exited, not yet reaped by a parent that does not reap, such as an init that
    // never waits) is dead for this purpose: it owns nothing any more.
    if rest.starts_with(['Z', 'X']) {
        return None;
    }
    // starttime is field 22 of the file, the 20th after the comm field.
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{pid}:{start}"))
}

/// Whether the process a [`owner_token`] names is still running (and is the same process).
pub fn token_alive(token: &str) -> bool {
    let token = token.trim();
    let Some(pid) = token.split(':').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    owner_token(pid).as_deref() == Some(token)
}

/// Whether the owner recorded in `<dir>/owner` is still running.
fn owner_alive(dir: &Path) -> bool {
    let Ok(token) = fs::read_to_string(dir.join("owner")) else {
        // A run dir without an owner file is one whose creation was cut short.
        return false;
    };
    token_alive(&token)
}

/// Whether `path` was last modified more than `secs` seconds ago.
fn older_than(path: &Path, secs: u64) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age.as_secs() > secs)
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
        // A run dir whose removal a killed isol left unfinished: finish it.
        if name.starts_with(OLD_PREFIX) {
            let _ = remove_tree(&e.path());
            continue;
        }
        // A run dir, or one whose creation a killed isol left unfinished — but a dir being
        // created has no owner file for a moment: only an old one without owner is stale.
        let (id, creating) = match name.strip_prefix(NEW_PREFIX) {
            Some(id) => (id, true),
            None => (name, false),
        };
        if !is_run_id(id) || !e.path().is_dir() {
            continue;
        }
        // A dir being created right now is never stale, whatever its owner file says yet: it
        // may not exist, or be empty for a moment while it is written. (Taking such a run for
        // dead removed the cgroup it created next, so that its clone failed with ENOENT.)
        if creating && !older_than(&e.path(), 60) {
            continue;
        }
        if owner_alive(&e.path()) {
            continue;
        }
        dead.push((id.to_owned(), e.path()));
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
    fn a_run_dir_never_exists_without_its_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        // One thread creates and removes run dirs as fast as it can; another sweeps and must
        // never find one it takes for dead.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let creator = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("{:012x}", n);
                    let run = RunDir::create(&root, &id, true).unwrap();
                    assert!(run.merged.is_dir(), "{id} was swept while alive");
                    run.remove().unwrap();
                    n += 1;
                }
                n
            })
        };
        for _ in 0..2000 {
            for e in fs::read_dir(&root).unwrap().flatten() {
                let name = e.file_name().into_string().unwrap();
                let id = name.strip_prefix(NEW_PREFIX).unwrap_or(&name).to_string();
                if is_run_id(&id) && !name.starts_with('.') {
                    // A run dir, while it has its name, always has its owner.
                    let has_owner = e.path().join("owner").exists() || !e.path().exists();
                    assert!(has_owner, "{name} has no owner");
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(creator.join().unwrap() > 0);
    }

    #[test]
    fn a_run_dir_being_created_is_not_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("containers");
        let cgroups = tmp.path().join("no-cgroupfs");
        fs::create_dir_all(&state).unwrap();
        // Caught between the owner file's creation and its write, and before it exists at all.
        let half_written = state.join(format!("{NEW_PREFIX}0123456789ab"));
        fs::create_dir(&half_written).unwrap();
        fs::write(half_written.join("owner"), "").unwrap();
        let unowned = state.join(format!("{NEW_PREFIX}0123456789ac"));
        fs::create_dir(&unowned).unwrap();
        // A finished run's dir whose owner is gone is stale.
        let dead = state.join("0123456789ad");
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("owner"), "0:0\n").unwrap();
        sweep(&state, &cgroups);
        assert!(half_written.exists(), "a run being created was swept");
        assert!(unowned.exists(), "a run being created was swept");
        assert!(!dead.exists(), "a dead run was left");
    }

    #[test]
    fn own_process_is_alive_and_a_dead_owner_is_not() {
        let tmp = tempfile::tempdir().unwrap();
        let run = RunDir::create(tmp.path(), "0123456789ab", true).unwrap();
        assert!(owner_alive(&run.dir));
        assert_eq!(live_ids(tmp.path()), vec!["0123456789ab".to_string()]);
        // A token for our pid with a wrong start time is a recycled pid: dead.
        fs::write(run.dir.join("owner"), format!("{}:1\n", std::process::id())).unwrap();
        assert!(!owner_alive(&run.dir));
        run.remove().unwrap();
        assert!(!run.dir.exists());
    }
}
