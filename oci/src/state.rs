//! The state of each container under the runtime's root (`--root`, `/run/isol-runc` by
//! default): `<root>/<id>/state.json`, written once the container is created, and
//! `<root>/<id>/exec.fifo`, the start gate, which exists while the container is created and not
//! yet started. The status is never stored: it is read from the init process itself (alive, a
//! zombie, or gone; its start time guards against a recycled pid) and from the gate.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::OciError;

/// The default state root, as runc's `/run/runc`.
pub const DEFAULT_ROOT: &str = "/run/isol-runc";

/// What `create` records about a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    /// The container's init, on the host.
    pub pid: i32,
    /// The init's start time (field 22 of /proc/PID/stat), which a recycled pid does not share.
    pub pid_start: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// The container's cgroup, relative to each hierarchy's root.
    pub cgroup_path: PathBuf,
    /// RFC 3339.
    pub created: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The container shares a PID namespace (another container's, or the host's): its
    /// processes are its cgroup's, not its PID namespace's.
    #[serde(default)]
    pub shared_pid: bool,
    /// The config's poststart and poststop hooks, which `start` and `delete` run.
    #[serde(default)]
    pub poststart: Vec<isol_container::hooks::Hook>,
    #[serde(default)]
    pub poststop: Vec<isol_container::hooks::Hook>,
    /// What runs it (a VM: `pid` is its VMM, `cgroup_path` the VMM's jail's).
    #[serde(default)]
    pub backend: crate::vm::Backend,
    /// A VM's RAM in bytes, fixed when it booted (`update` keeps its memory limit above);
    /// 0 for a container.
    #[serde(default)]
    pub vm_memory: u64,
    /// A VM's vCPUs, fixed when it booted (`update` changes the VMM's cgroup, not them); 0
    /// for a container, or a VM of an isol-runc that did not record them.
    #[serde(default)]
    pub vm_vcpus: u8,
}

impl Saved {
    /// The state JSON hooks read, for `status` (`pid` 0 once stopped).
    pub fn hook_state(&self, status: Status) -> Vec<u8> {
        let pid = if status == Status::Stopped {
            0
        } else {
            self.pid
        };
        let template = hook_state_template(&self.id, &self.bundle, &self.annotations);
        isol_container::hooks::state_for(&template, status.as_str(), pid)
    }
}

/// The state JSON of a container's hooks, without its status and pid (as runc gives it).
pub fn hook_state_template(
    id: &str,
    bundle: &Path,
    annotations: &BTreeMap<String, String>,
) -> serde_json::Value {
    serde_json::json!({
        "ociVersion": OCI_VERSION,
        "id": id,
        "bundle": bundle,
        "annotations": annotations,
    })
}

/// The runtime-spec statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    /// Running, with its cgroup frozen (`pause`).
    Paused,
    Stopped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// The state JSON of the runtime spec (`ociVersion`, `id`, `status`, `pid`, `bundle`,
/// `annotations`), with runc's `rootfs` and `created`.
#[derive(Debug, Serialize)]
pub struct StateJson {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'static str,
    pub id: String,
    pub status: &'static str,
    pub pid: i32,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    pub annotations: BTreeMap<String, String>,
}

/// The runtime-spec version isol implements.
pub const OCI_VERSION: &str = "1.2.0";

/// A container's directory under the root.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub id: String,
    pub dir: PathBuf,
}

impl ContainerDir {
    pub fn new(root: &Path, id: &str) -> Result<Self, OciError> {
        validate_id(id)?;
        Ok(ContainerDir {
            id: id.to_string(),
            dir: root.join(id),
        })
    }

    pub fn fifo(&self) -> PathBuf {
        self.dir.join("exec.fifo")
    }

    /// Exists while a VM's vCPUs are parked by `pause` (its cgroup frozen too, if it has
    /// one): the status of a VM without a cgroup.
    pub fn vm_paused(&self) -> PathBuf {
        self.dir.join("vm-paused")
    }

    /// The container's cgroup path, written before anything is made, for a `delete` after a
    /// `create` that was killed before it wrote state.json.
    pub fn cgroup_file(&self) -> PathBuf {
        self.dir.join("cgroup")
    }

    /// A container in the runtime's mount namespace: the mount at its rootfs before `create`
    /// bound it onto itself, and the rootfs, written before anything is mounted
    /// ([`crate::hostroot`]).
    pub fn host_root_file(&self) -> PathBuf {
        self.dir.join("host-root")
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Makes the directory; fails when the container exists.
    pub fn create(&self) -> Result<(), OciError> {
        let root = self.dir.parent().unwrap_or(Path::new("/"));
        fs::create_dir_all(root)
            .map_err(|e| OciError::state(format!("create the state root {}", root.display()), e))?;
        match fs::create_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(OciError::Exists(self.id.clone()))
            }
            Err(e) => Err(OciError::state(format!("create {}", self.dir.display()), e)),
        }
    }

    pub fn save(&self, saved: &Saved) -> Result<(), OciError> {
        let json = serde_json::to_vec_pretty(saved).expect("plain data serializes");
        write_atomic(&self.state_file(), &json)
    }

    /// The recorded state; [`OciError::NotFound`] when there is none.
    pub fn load(&self) -> Result<Saved, OciError> {
        let path = self.state_file();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(OciError::NotFound(self.id.clone()));
            }
            Err(e) => return Err(OciError::state(format!("read {}", path.display()), e)),
        };
        serde_json::from_slice(&text).map_err(|e| {
            OciError::state(
                format!(
                    "read {} (delete the container with --force)",
                    path.display()
                ),
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        })
    }

    pub fn status(&self, saved: &Saved) -> Status {
        if !init_alive(saved.pid, saved.pid_start) {
            Status::Stopped
        } else if self.fifo().exists() {
            Status::Created
        } else if is_frozen(&saved.cgroup_path)
            || (saved.backend == crate::vm::Backend::Kvm && self.vm_paused().exists())
        {
            Status::Paused
        } else {
            Status::Running
        }
    }

    pub fn remove(&self) -> Result<(), OciError> {
        match fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(OciError::state(format!("remove {}", self.dir.display()), e)),
        }
    }
}

/// Whether the cgroup at `path` (below each hierarchy's root) is frozen.
fn is_frozen(path: &Path) -> bool {
    use isol_container::cgroups::{self, CgroupManager};
    !path.as_os_str().is_empty()
        && cgroups::open_at(Path::new(isol_container::process::CGROUP_ROOT), path)
            .and_then(|cg| cg.is_frozen())
            .unwrap_or(false)
}

/// Writes `path` through a temporary file and a rename, so that no reader sees half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).map_err(|e| OciError::state(format!("write {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| OciError::state(format!("write {}", path.display()), e))
}

/// Container ids: what a cgroup and a file name can hold.
pub fn validate_id(id: &str) -> Result<(), OciError> {
    if isol_container::cgroups::is_valid_id(id) {
        Ok(())
    } else {
        Err(OciError::InvalidId(id.to_string()))
    }
}

/// The ids of the containers under `root`.
pub fn list(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("state.json").is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    ids.sort();
    ids
}

/// The state letter and start time of a process, from /proc/PID/stat.
fn proc_stat(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may hold spaces and parentheses; fields resume after the last ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // starttime is field 22, the 20th after the state (field 3).
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// The start time of a live process, to record with its pid.
pub fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, start)| start)
}

/// Whether the init is still there and not a zombie waiting for its parent's wait.
pub fn init_alive(pid: i32, start: u64) -> bool {
    matches!(proc_stat(pid), Some((state, s)) if s == start && state != 'Z' && state != 'X')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_cannot_name_a_directory_are_refused() {
        for bad in ["", ".hidden", "a/b", "..", "x y", &"a".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        for good in ["c1", "my-container_2.0", &"a".repeat(64)] {
            assert!(validate_id(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id() as i32;
        let start = start_time(me).unwrap();
        assert!(init_alive(me, start));
        assert!(!init_alive(me, start + 1));
    }
}
