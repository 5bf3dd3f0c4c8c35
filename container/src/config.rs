//! The validated configuration of one container run. The CLI turns its flags into this type;
//! everything here has already been checked, so the runtime only acts on it.

use std::ffi::OsString;
use std::path::PathBuf;

/// Resource limits, applied through the cgroup manager ([`crate::cgroups`] owns the type).
pub use crate::cgroups::Limits;

/// How the container is networked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// A new network namespace with only loopback, brought up.
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// A new network namespace with a veth pair on the `isol0` bridge, NATed to the outside.
    Bridge,
}

/// A bind mount from the host into the container (`-v HOST:CTR[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Absolute host path; it exists (checked by the CLI).
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: PathBuf,
    pub read_only: bool,
}

/// The workload's privileges: docker's defaults unless `--cap-add`, `--cap-drop` or
/// `--security-opt` change them (the CLI gives the kvm backend's guest init the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    /// The capabilities kept (bit n = capability n): the bounding set, and the permitted and
    /// effective sets of a root workload; a non-root workload holds none.
    pub capabilities: u64,
    /// Set `no_new_privs` (docker's `--security-opt no-new-privileges`; on by default here).
    pub no_new_privs: bool,
    /// Install the default seccomp profile ([`crate::security::seccomp`]); off: unconfined.
    pub seccomp: bool,
}

impl Default for Privileges {
    /// docker's default capabilities, `no_new_privs`, the default seccomp profile.
    fn default() -> Self {
        Privileges {
            capabilities: crate::security::capabilities::DEFAULT_MASK,
            no_new_privs: true,
            seccomp: true,
        }
    }
}

/// Everything one container run needs.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// Short unique id of this run (hex), used for cgroup, veth and state names.
    pub id: String,
    /// Unpacked image layers, lowest first; they become overlayfs lower dirs and are never written.
    pub layers: Vec<PathBuf>,
    /// Directory under which this run keeps its state (writable upper, work dir, pid file).
    pub state_root: PathBuf,
    /// The command and its arguments; `args[0]` is resolved through `PATH` inside the rootfs.
    pub args: Vec<OsString>,
    /// `KEY=VALUE` pairs, complete (image env merged with `-e`).
    pub env: Vec<OsString>,
    /// Working directory inside the container (absolute).
    pub workdir: PathBuf,
    pub hostname: String,
    /// `uid[:gid]` or `name[:group]`, resolved against the container's /etc/passwd and
    /// /etc/group; `None` runs as root (uid 0 inside the container).
    pub user: Option<String>,
    /// Capabilities, `no_new_privs`, seccomp.
    pub privileges: Privileges,
    pub limits: Limits,
    /// The devices the container may create and open; everything else is denied
    /// ([`crate::cgroups::devices::DEFAULT_RULES`] for `isol run`). Applied through the cgroup,
    /// so not in rootless runs, where the user namespace forbids mknod and isol binds only the
    /// default set into /dev.
    pub devices: Vec<crate::cgroups::devices::DeviceRule>,
    pub network: NetworkMode,
    pub volumes: Vec<Volume>,
    /// Keep stdin open and connected (`-i`).
    pub interactive: bool,
    /// Allocate a pseudo-terminal (`-t`).
    pub tty: bool,
    /// Run without root on the host: a user namespace maps the caller to root inside.
    pub rootless: bool,
    /// Kill the container after this long; the run then ends with exit code 124.
    pub timeout: Option<std::time::Duration>,
}
