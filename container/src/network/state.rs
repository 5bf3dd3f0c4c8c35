//! The bridge's shared state under `<state_root>/net/`, always used under an exclusive flock.
//!
//! ```text
//! net/lock            flock'd for every read-modify-write below (attach, release, sweep)
//! net/addr/<ipv4>     one allocation: JSON {id, veth, pid, start_time, ports} of the owning isol
//! net/subnet          present while isol0/nft/ip_forward are set up: the subnet they use
//! net/ip_forward      net.ipv4.ip_forward as it was before isol first enabled it
//! net/published       present while the nft table has DNAT rules (published ports)
//! ```
//!
//! The allocation file is written before anything is created on the host and removed only after
//! the host side is gone, and `subnet`/`ip_forward` are written before the shared setup and removed
//! after its teardown, so whatever isol dies in the middle of, the next isol (`sweep`) finds a
//! record of it. The owner is identified by pid *and* start time, so a reused pid is not mistaken
//! for a live owner.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::NetworkError;
use super::publish::PortMapping;

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Allocation {
    /// The container id.
    pub id: String,
    /// The host-side veth name.
    pub veth: String,
    /// The isol process that owns the allocation.
    pub pid: i32,
    /// That process's start time (clock ticks after boot, /proc/<pid>/stat field 22).
    pub start_time: u64,
    /// The run's published ports (`-p`), with their actual host ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
}

impl Allocation {
    /// An allocation owned by the calling process.
    pub(crate) fn owned_by_me(id: &str, veth: &str) -> Self {
        let pid = std::process::id() as i32;
        Allocation {
            id: id.to_owned(),
            veth: veth.to_owned(),
            pid,
            start_time: start_time(pid).unwrap_or(0),
            ports: Vec::new(),
        }
    }

    /// True while the owning isol process is still running (a zombie is not: it holds
    /// nothing any more, and a parent that does not reap may keep it for ever).
    pub(crate) fn owner_alive(&self) -> bool {
        alive(self.pid, self.start_time)
    }
}

/// True while process `pid`, started at `start`, runs (not a zombie, not a reused pid).
pub(crate) fn alive(pid: i32, start: u64) -> bool {
    start_time(pid) == Some(start) && !zombie(pid)
}

/// The start time of `pid`, or `None` when no such process exists.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    if pid <= 0 {
        return None;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields resume after the
    // last ')'. The first field after it is field 3 (state), so field 22 is at index 19.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when `pid` has exited and waits to be reaped.
fn zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat[stat.rfind(')')? + 1..].trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// One entry of `net/addr/`: `None` when the file is unreadable (a torn write by a dead isol).
#[derive(Debug)]
pub(crate) struct Entry {
    pub address: Ipv4Addr,
    pub allocation: Option<Allocation>,
}

/// The state directory, locked. Dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct Locked {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn state_error(path: &Path, error: std::io::Error) -> NetworkError {
    NetworkError::State {
        path: path.to_owned(),
        error,
    }
}

impl Locked {
    /// The state directory of `state_root`.
    pub(crate) fn dir_of(state_root: &Path) -> PathBuf {
        state_root.join("net")
    }

    /// Creates the state directory if needed and locks it, waiting for other isol processes.
    pub(crate) fn acquire(state_root: &Path) -> Result<Self, NetworkError> {
        let dir = Self::dir_of(state_root);
        let addresses = dir.join("addr");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&addresses)
            .map_err(|e| state_error(&addresses, e))?;
        let lock_path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| state_error(&lock_path, e))?;
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(lock) => break lock,
                Err((back, Errno::EINTR)) => file = back,
                Err((_, errno)) => return Err(state_error(&lock_path, errno.into())),
            }
        };
        Ok(Locked { dir, _lock: lock })
    }

    fn address_path(&self, address: Ipv4Addr) -> PathBuf {
        self.dir.join("addr").join(address.to_string())
    }

    /// All allocations, live or not.
    pub(crate) fn entries(&self) -> Result<Vec<Entry>, NetworkError> {
        let dir = self.dir.join("addr");
        let mut entries = Vec::new();
        for item in fs::read_dir(&dir).map_err(|e| state_error(&dir, e))? {
            let item = item.map_err(|e| state_error(&dir, e))?;
            let name = item.file_name();
            let Some(address) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                // A temporary file of a write that never got renamed: garbage from a dead isol.
                let _ = fs::remove_file(item.path());
                continue;
            };
            let allocation = fs::read(item.path())
                .ok()
                .and_then(|bytes| serde_json::from_slice(&bytes).ok());
            entries.push(Entry {
                address,
                allocation,
            });
        }
        entries.sort_by_key(|entry| entry.address);
        Ok(entries)
    }

    /// Records `address` as held by `allocation` (atomically: write, then rename).
    pub(crate) fn insert(
        &self,
        address: Ipv4Addr,
        allocation: &Allocation,
    ) -> Result<(), NetworkError> {
        let path = self.address_path(address);
        let temporary = self.dir.join("addr").join(format!(".{address}.tmp"));
        let json = serde_json::to_vec(allocation).expect("an allocation always serializes");
        let written = fs::write(&temporary, json)
            .map_err(|e| state_error(&temporary, e))
            .and_then(|()| fs::rename(&temporary, &path).map_err(|e| state_error(&path, e)));
        if written.is_err() {
            // Nothing half-written stays (a full filesystem: the file made, its bytes not).
            let _ = fs::remove_file(&temporary);
        }
        written
    }

    /// Forgets the allocation of `address` (no error if it is already gone).
    pub(crate) fn remove(&self, address: Ipv4Addr) -> Result<(), NetworkError> {
        let path = self.address_path(address);
        remove_if_present(&path)
    }

    fn read_optional(&self, name: &str) -> Result<Option<String>, NetworkError> {
        let path = self.dir.join(name);
        match fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned())),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
            Err(error) => Err(state_error(&path, error)),
        }
    }

    fn write(&self, name: &str, value: &str) -> Result<(), NetworkError> {
        let path = self.dir.join(name);
        fs::write(&path, format!("{value}\n")).map_err(|e| state_error(&path, e))
    }

    /// The subnet the shared setup (bridge, nft, forwarding) uses, if it is in place.
    pub(crate) fn active_subnet(&self) -> Result<Option<String>, NetworkError> {
        self.read_optional("subnet")
    }

    pub(crate) fn set_active_subnet(&self, subnet: &str) -> Result<(), NetworkError> {
        self.write("subnet", subnet)
    }

    pub(crate) fn clear_active_subnet(&self) -> Result<(), NetworkError> {
        remove_if_present(&self.dir.join("subnet"))
    }

    /// net.ipv4.ip_forward as it was before isol enabled it, if isol has enabled it.
    pub(crate) fn saved_forward(&self) -> Result<Option<String>, NetworkError> {
        self.read_optional("ip_forward")
    }

    pub(crate) fn save_forward(&self, value: &str) -> Result<(), NetworkError> {
        self.write("ip_forward", value)
    }

    pub(crate) fn clear_saved_forward(&self) -> Result<(), NetworkError> {
        remove_if_present(&self.dir.join("ip_forward"))
    }

    /// Whether the nft table installed last had DNAT rules (published ports).
    pub(crate) fn has_published(&self) -> Result<bool, NetworkError> {
        Ok(self.dir.join("published").exists())
    }

    pub(crate) fn set_has_published(&self, yes: bool) -> Result<(), NetworkError> {
        if yes {
            self.write("published", "1")
        } else {
            remove_if_present(&self.dir.join("published"))
        }
    }
}

fn remove_if_present(path: &Path) -> Result<(), NetworkError> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != ErrorKind::NotFound => Err(state_error(path, error)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    #[test]
    fn allocations_round_trip() {
        let root = tempfile::tempdir().unwrap();
        let state = Locked::acquire(root.path()).unwrap();
        assert!(state.entries().unwrap().is_empty());
        let mine = Allocation::owned_by_me("abc", "isolvabc");
        assert!(mine.owner_alive());
        state.insert(Ipv4Addr::new(10, 88, 0, 3), &mine).unwrap();
        fs::write(root.path().join("net/addr/10.88.0.2"), b"{torn").unwrap();
        fs::write(root.path().join("net/addr/.10.88.0.9.tmp"), b"{}").unwrap();
        let entries = state.entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].address, Ipv4Addr::new(10, 88, 0, 2));
        assert!(entries[0].allocation.is_none());
        assert_eq!(entries[1].allocation.as_ref(), Some(&mine));
        assert!(!root.path().join("net/addr/.10.88.0.9.tmp").exists());
        state.remove(Ipv4Addr::new(10, 88, 0, 3)).unwrap();
        state.remove(Ipv4Addr::new(10, 88, 0, 3)).unwrap();
        assert_eq!(state.entries().unwrap().len(), 1);
    }

    #[test]
    fn markers() {
        let root = tempfile::tempdir().unwrap();
        let state = Locked::acquire(root.path()).unwrap();
        assert_eq!(state.saved_forward().unwrap(), None);
        state.save_forward("0").unwrap();
        state.set_active_subnet("10.88.0.0/24").unwrap();
        assert_eq!(state.saved_forward().unwrap().as_deref(), Some("0"));
        assert_eq!(
            state.active_subnet().unwrap().as_deref(),
            Some("10.88.0.0/24")
        );
        state.clear_saved_forward().unwrap();
        state.clear_active_subnet().unwrap();
        state.clear_active_subnet().unwrap();
        assert_eq!(state.saved_forward().unwrap(), None);
        assert_eq!(state.active_subnet().unwrap(), None);
    }

    #[test]
    fn dead_and_reused_pids_are_not_owners() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        let dead = Allocation {
            pid,
            ..Allocation::owned_by_me("x", "isolvx")
        };
        assert!(!dead.owner_alive());
        let reused = Allocation {
            start_time: Allocation::owned_by_me("x", "isolvx").start_time + 1,
            ..Allocation::owned_by_me("x", "isolvx")
        };
        assert!(!reused.owner_alive());
        assert_eq!(start_time(0), None);
        // An exited owner nobody has reaped yet is dead too.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let zombie = Allocation {
            pid,
            start_time: start_time(pid).unwrap(),
            ..Allocation::owned_by_me("x", "isolvx")
        };
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while zombie.owner_alive() && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(!zombie.owner_alive());
        child.wait().unwrap();
    }

    #[test]
    fn the_lock_is_exclusive_between_threads() {
        // flock locks belong to the open file description, so two acquisitions in one process
        // exclude each other just as two processes do.
        let root = Arc::new(tempfile::tempdir().unwrap());
        let barrier = Arc::new(Barrier::new(4));
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (root, barrier, counter) = (root.clone(), barrier.clone(), counter.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..20 {
                        let _state = Locked::acquire(root.path()).unwrap();
                        let inside = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        assert_eq!(inside, 0, "two holders of the lock at once");
                        std::thread::yield_now();
                        counter.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
