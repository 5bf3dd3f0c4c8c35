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

/// A namespace the container joins instead of getting a new one (an OCI config's namespace
/// `path`; a Kubernetes pod's containers join its sandbox's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedNamespace {
    Net,
    Ipc,
    Uts,
    /// Joined by the parent before the clone (setns of a PID namespace applies to the children
    /// made after it): the container's init is then not PID 1 of its namespace.
    Pid,
    /// Joined before the clone, by a helper process the parent forks for it (setns of a user
    /// namespace needs a single-threaded caller and is for good): the container's other new
    /// namespaces are then born in, and belong to, the joined user namespace (an OCI config's
    /// `linux.namespaces` type `user` with a `path`).
    User,
    /// Joined by the child before it builds the rootfs, which it then assembles and
    /// `pivot_root`s to inside the joined namespace, as runc does (an OCI config's mount
    /// namespace with a `path`): the namespace's other processes see the container's mounts,
    /// and its root becomes theirs where it was the namespace's.
    Mount,
}

impl SharedNamespace {
    /// The `CLONE_NEW*` flag of the namespace's type.
    pub fn clone_flag(self) -> i32 {
        match self {
            SharedNamespace::Net => libc::CLONE_NEWNET,
            SharedNamespace::Ipc => libc::CLONE_NEWIPC,
            SharedNamespace::Uts => libc::CLONE_NEWUTS,
            SharedNamespace::Pid => libc::CLONE_NEWPID,
            SharedNamespace::User => libc::CLONE_NEWUSER,
            SharedNamespace::Mount => libc::CLONE_NEWNS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SharedNamespace::Net => "network",
            SharedNamespace::Ipc => "IPC",
            SharedNamespace::Uts => "UTS",
            SharedNamespace::Pid => "PID",
            SharedNamespace::User => "user",
            SharedNamespace::Mount => "mount",
        }
    }
}

/// Namespaces the container shares with the host instead of getting its own (docker's `--pid
/// host`, `--ipc host`, `--uts host`, `--cgroupns host`; the network's is [`NetworkMode::Host`]).
/// Each one shared is a wall less: see docs/cli.md, "Namespaces".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostNamespaces {
    /// The host's PID namespace: the container sees (and, holding CAP_KILL, may signal) every
    /// process of the host, and its init is not PID 1. Needs a cgroup (root): isol ends the
    /// container's processes through it, as killing the init no longer ends them.
    pub pid: bool,
    /// The host's System V IPC objects and POSIX message queues.
    pub ipc: bool,
    /// The host's hostname (the container's own is not set).
    pub uts: bool,
    /// The host's cgroup namespace: the container sees the whole cgroup tree, and its own cgroup
    /// by its full path (`/isol/<id>`) rather than as `/`.
    pub cgroup: bool,
    /// The runtime's own mount namespace (an OCI config without a mount namespace, as runc
    /// runs it): the rootfs is assembled there — its mounts land in the caller's namespace,
    /// stacked on a bind of the rootfs onto itself that is made private first — and entered
    /// with chroot(2), not `pivot_root` (which would change the root of every process there).
    /// Whoever created the container unmounts that bind once it is gone (`isol-runc delete`).
    pub mount: bool,
}

impl HostNamespaces {
    /// The `CLONE_NEW*` flags of the namespaces shared with the host (the cgroup namespace is
    /// made after the clone, see `namespaces`).
    pub fn clone_flags(self) -> u64 {
        let mut f = 0;
        if self.pid {
            f |= libc::CLONE_NEWPID;
        }
        if self.ipc {
            f |= libc::CLONE_NEWIPC;
        }
        if self.uts {
            f |= libc::CLONE_NEWUTS;
        }
        if self.mount {
            f |= libc::CLONE_NEWNS;
        }
        f as u64
    }
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

/// What becomes the container's `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// Unpacked image layers, lowest first; they become overlayfs lower dirs and are never
    /// written: the container writes to an upper layer of its own (`isol run`).
    Layers(Vec<PathBuf>),
    /// This directory itself, bound onto itself and written in place (an OCI bundle's `root`,
    /// often an overlay a client such as containerd mounted); read-only when `readonly`.
    Dir { path: PathBuf, readonly: bool },
}

/// One resource limit set with setrlimit(2) before the container's init starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// `RLIMIT_*` (libc's number).
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// A mount the container's configuration asks for, beyond isol's own (/proc, /sys, /dev…):
/// an OCI config's `mounts`, made in order after the volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `None`: a bind mount of `source`; else the filesystem type (`tmpfs`, `proc`…).
    pub fstype: Option<String>,
    /// The host path of a bind mount, or the filesystem's source name.
    pub source: PathBuf,
    /// Absolute path inside the container (created when missing).
    pub target: PathBuf,
    /// mount(2) flags (`MS_*`): `MS_RDONLY`, `MS_NOSUID`… (`MS_BIND`/`MS_REC` for binds).
    pub flags: u64,
    /// The filesystem's own options (`size=64m,mode=755`).
    pub data: String,
    /// Its propagation, set once it is mounted: `MS_SHARED`, `MS_SLAVE`, `MS_PRIVATE` or
    /// `MS_UNBINDABLE`, with `MS_REC` for the whole tree (an OCI mount's `rslave`…); 0: as
    /// the container's root ([`ContainerConfig::rootfs_propagation`]) gives it.
    pub propagation: u64,
}

/// A device node made in the container (an OCI config's `linux.devices`, docker's
/// `--device`), beyond the six every container gets. Whether the container may open it is the
/// device cgroup's rules' business ([`ContainerConfig::devices`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Absolute, below `/dev` in the container.
    pub path: PathBuf,
    pub kind: DeviceNodeKind,
    pub major: u64,
    pub minor: u64,
    /// Permission bits (0o7777 at most).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl DeviceNode {
    /// The device cgroup rule that lets isol make this node inside the container's cgroup,
    /// which restricts devices before any process joins it: mknod (`m`) of exactly this
    /// device, appended after the configured rules (read and write stay theirs). runc makes
    /// its nodes before its rules apply; the container's root can make only what it has anyway.
    pub fn mknod_rule(&self) -> Option<crate::cgroups::devices::DeviceRule> {
        use crate::cgroups::devices::{ACCESS_MKNOD, DeviceKind, DeviceRule};
        let kind = match self.kind {
            DeviceNodeKind::Char => DeviceKind::Char,
            DeviceNodeKind::Block => DeviceKind::Block,
            DeviceNodeKind::Fifo => return None,
        };
        // Never a wildcard: a number out of a rule's range gets no rule (mknod then fails).
        let (Ok(major), Ok(minor)) = (u32::try_from(self.major), u32::try_from(self.minor)) else {
            return None;
        };
        Some(DeviceRule {
            allow: true,
            kind,
            major: Some(major),
            minor: Some(minor),
            access: ACCESS_MKNOD,
        })
    }
}

/// What a [`DeviceNode`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceNodeKind {
    Char,
    Block,
    Fifo,
}

/// The workload's privileges: docker's defaults unless `--cap-add`, `--cap-drop` or
/// `--security-opt` change them (the CLI gives the kvm backend's guest init the same).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privileges {
    /// The capabilities kept (bit n = capability n): the bounding set, and the permitted and
    /// effective sets of a root workload; a non-root workload holds none.
    pub capabilities: u64,
    /// The inheritable set, empty unless an OCI config asks (isol's own runs keep it empty:
    /// [`crate::security::capabilities`]); within `capabilities`.
    pub inheritable: u64,
    /// The ambient set, empty unless an OCI config asks; within `capabilities` and
    /// `inheritable`.
    pub ambient: u64,
    /// Set `no_new_privs` (docker's `--security-opt no-new-privileges`; on by default here).
    pub no_new_privs: bool,
    /// The seccomp filter: isol's default profile ([`crate::security::seccomp`]), none, or a
    /// profile of the run's own.
    pub seccomp: crate::security::seccomp::Seccomp,
}

impl Default for Privileges {
    /// docker's default capabilities, `no_new_privs`, the default seccomp profile.
    fn default() -> Self {
        Privileges {
            capabilities: crate::security::capabilities::DEFAULT_MASK,
            inheritable: 0,
            ambient: 0,
            no_new_privs: true,
            seccomp: crate::security::seccomp::Seccomp::Default,
        }
    }
}

/// One line of a user namespace's `uid_map` or `gid_map`: ids `inside..inside+count` in the
/// container are `outside..outside+count` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapping {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// A user namespace of the container's own, made by a runtime run as root
/// ([`ContainerConfig::user_namespace`]). The parent writes the maps after the clone; the
/// child waits for them before it builds the rootfs. An image's layers (they belong to the
/// host's root, which the maps leave unmapped) are mounted idmapped into the namespace, so
/// that their root is the container's root; a rootfs directory ([`Rootfs::Dir`]) is used as
/// it is and must belong to the mapped range, as runc requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNamespace {
    pub uid_map: Vec<IdMapping>,
    pub gid_map: Vec<IdMapping>,
}

impl UserNamespace {
    /// Container ids `0..count` mapped to host ids `start..start+count`, for uids and gids.
    pub fn range(start: u32, count: u32) -> Self {
        let map = vec![IdMapping {
            inside: 0,
            outside: start,
            count,
        }];
        UserNamespace {
            uid_map: map.clone(),
            gid_map: map,
        }
    }

    /// The host uid of the container's root, if root is mapped.
    pub fn host_root_uid(&self) -> Option<u32> {
        host_id(&self.uid_map, 0)
    }

    /// The host gid of the container's root group, if it is mapped.
    pub fn host_root_gid(&self) -> Option<u32> {
        host_id(&self.gid_map, 0)
    }
}

fn host_id(map: &[IdMapping], id: u32) -> Option<u32> {
    map.iter()
        .find(|m| id >= m.inside && id - m.inside < m.count)
        .map(|m| m.outside + (id - m.inside))
}

/// Everything one container run needs.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// Short unique id of this run (hex), used for cgroup, veth and state names.
    pub id: String,
    /// The container's root filesystem.
    pub rootfs: Rootfs,
    /// Directory under which this run keeps its state (writable upper, work dir, pid file).
    pub state_root: PathBuf,
    /// The command and its arguments; `args[0]` is resolved through `PATH` inside the rootfs.
    pub args: Vec<OsString>,
    /// `KEY=VALUE` pairs, complete (image env merged with `-e`).
    pub env: Vec<OsString>,
    /// Working directory inside the container (absolute).
    pub workdir: PathBuf,
    pub hostname: String,
    /// The NIS domain name (an OCI config's `domainname`); empty: left as it is.
    pub domainname: String,
    /// `uid[:gid]` or `name[:group]`, resolved against the container's /etc/passwd and
    /// /etc/group; `None` runs as root (uid 0 inside the container).
    pub user: Option<String>,
    /// `Some`: exactly these supplementary groups (an OCI config's `additionalGids`), instead
    /// of those /etc/group gives the user.
    pub groups: Option<Vec<u32>>,
    /// Capabilities, `no_new_privs`, seccomp.
    pub privileges: Privileges,
    pub limits: Limits,
    /// Where the container's cgroup is, relative to each hierarchy's root (an OCI config's
    /// `cgroupsPath`), made in every v1 hierarchy isol uses (it lives on: `update`, `pause`);
    /// `None`: `isol/<id>`, where `isol run`'s are.
    pub cgroup_path: Option<PathBuf>,
    /// Resource limits of the container's processes (`isol run` sets none: the host's apply).
    pub rlimits: Vec<Rlimit>,
    /// The devices the container may create and open; everything else is denied
    /// ([`crate::cgroups::devices::DEFAULT_RULES`] for `isol run`). Applied through the cgroup,
    /// so not in rootless runs, where the user namespace forbids mknod and isol binds only the
    /// default set into /dev.
    pub devices: Vec<crate::cgroups::devices::DeviceRule>,
    /// Device nodes made in the container's /dev beyond isol's own (not in a user namespace,
    /// where mknod is refused).
    pub device_nodes: Vec<DeviceNode>,
    /// The propagation of the container's mounts (an OCI config's `rootfsPropagation`):
    /// `MS_SHARED`, `MS_SLAVE`, `MS_PRIVATE` or `MS_UNBINDABLE`, with `MS_REC` or not. Every
    /// mount the container's namespace copied from the host's gets it first (so `rslave`
    /// lets the host's new mounts reach the container's binds, `rshared` lets a shared bind's
    /// reach the host), and the container's `/` after `pivot_root`. 0: isol's default, every
    /// mount private (`rslave` when a mount asks for a propagation of its own, as runc).
    pub rootfs_propagation: u64,
    /// Set `hostname` and `domainname` (when not empty) in a UTS namespace joined by path, as
    /// runc does for an OCI config; false: a joined namespace's names are left alone (`isol
    /// run --uts container:NAME`).
    pub set_joined_hostname: bool,
    pub network: NetworkMode,
    /// Ports published on the host (`-p`), [`NetworkMode::Bridge`] only.
    pub publish: Vec<crate::network::PortMapping>,
    /// Give the run its own `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`, as `docker
    /// run` does (`isol run`); an OCI bundle's client mounts its own.
    pub etc_files: bool,
    /// Namespaces joined by path (`/proc/PID/ns/net`…) instead of new ones; with a joined
    /// network namespace, `network` must be [`NetworkMode::None`] (nothing is wired), and with
    /// a joined UTS namespace the hostname is left alone.
    pub join: Vec<(SharedNamespace, PathBuf)>,
    /// Namespaces shared with the host (none by default).
    pub host_namespaces: HostNamespaces,
    pub volumes: Vec<Volume>,
    /// Further mounts, in order, after the volumes (`isol run` has none).
    pub mounts: Vec<Mount>,
    /// Keep stdin open and connected (`-i`).
    pub interactive: bool,
    /// Allocate a pseudo-terminal (`-t`).
    pub tty: bool,
    /// The caller's descriptors 3 to 3+N-1 are passed on to the workload (runc's
    /// `--preserve-fds`); every other one above stderr is closed.
    pub preserve_fds: u32,
    /// Run without root on the host: a user namespace maps the caller to root inside.
    pub rootless: bool,
    /// Run as root on the host with a user namespace of the container's own, mapping its ids to
    /// an unprivileged range of the host's (`isol run --userns private`, an OCI config's
    /// `linux.uidMappings`); `None`: no user namespace (unless `rootless`).
    pub user_namespace: Option<UserNamespace>,
    /// Kill the container after this long; the run then ends with exit code 124.
    pub timeout: Option<std::time::Duration>,
    /// The umask of the container's processes (an OCI config's `process.user.umask`); `None`:
    /// 0022.
    pub umask: Option<u32>,
    /// The init's (and so the workload's) `oom_score_adj`; `None`: isol's own, inherited.
    /// Lowering it needs `CAP_SYS_RESOURCE`.
    pub oom_score_adj: Option<i32>,
    /// Namespaced sysctls (`net.ipv4.ip_forward`, `1`), written in the container's namespaces
    /// before its rootfs is made. The caller checks that each is one of the container's own
    /// namespaces (an OCI config's `linux.sysctl`, as runc allows them).
    pub sysctl: Vec<(String, String)>,
    /// Paths masked (an empty read-only tmpfs, or /dev/null) and paths made read-only, beyond
    /// isol's own [`crate::MASKED_PATHS`] and [`crate::READONLY_PATHS`] (an OCI config's
    /// `maskedPaths` and `readonlyPaths`); absolute, inside the container.
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    /// Hooks run while the container is created and started ([`crate::process::create`]
    /// only; `isol run` has none).
    pub hooks: crate::hooks::Hooks,
}
