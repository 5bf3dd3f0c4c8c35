//! Assembling the container's root filesystem, inside the child's new mount namespace:
//! overlay of the image layers (or a directory) → /proc, /sys, /dev → volumes and further mounts → pivot_root → masked and read-only
//! paths. This module only orchestrates; each step lives in its own file.

mod devices;
mod etc;
mod mounts;
mod overlay;
mod pivot;

use std::path::Path;

pub(crate) use etc::EtcFiles;
pub use etc::vm_etc_files;
pub(crate) use mounts::make_mounts_private;
pub use mounts::{MASKED_PATHS, READONLY_PATHS};
pub(crate) use pivot::pivot_root;

use crate::config::{Mount, Volume};
use crate::error::SetupError;

/// What the rootfs assembly needs to know.
#[derive(Debug)]
pub struct RootfsSpec<'a> {
    pub layers: &'a [std::path::PathBuf],
    pub upper: &'a Path,
    pub work: &'a Path,
    pub merged: &'a Path,
    /// `Some(readonly)`: `merged` is the rootfs itself, a directory bound onto itself instead
    /// of an overlay of `layers`; made read-only at the end when `readonly`.
    pub bind_root: Option<bool>,
    pub volumes: &'a [Volume],
    pub mounts: &'a [Mount],
    /// Device nodes beyond isol's own ([`crate::ContainerConfig::device_nodes`]).
    pub device_nodes: &'a [crate::config::DeviceNode],
    /// [`crate::ContainerConfig::rootfs_propagation`].
    pub rootfs_propagation: u64,
    /// Rootless (the caller is root inside): the writable layer is on the host's disk, and the
    /// tty group (gid 5) is not mapped.
    pub rootless: bool,
    /// In a user namespace (rootless, or one of the container's own): device nodes are
    /// bind-mounted, overlay uses `userxattr`, /sys is the host's.
    pub user_namespace: bool,
    /// The image's layers, lowest first, as detached mounts idmapped into the container's user
    /// namespace (`namespaces::idmapped_layers`), used instead of `layers`' paths when given.
    pub idmapped: &'a [std::os::fd::OwnedFd],
    /// The container shares the host's network namespace, so sysfs cannot be mounted anew.
    pub host_network: bool,
    /// The pty slave to bind at /dev/console, when the run has a terminal.
    pub console: Option<&'a Path>,
    /// Paths masked and made read-only beyond isol's own lists (an OCI config's).
    pub masked: &'a [std::path::PathBuf],
    pub readonly: &'a [std::path::PathBuf],
    /// The runtime's own mount namespace ([`crate::HostNamespaces::mount`]): the mounts
    /// stack on a private bind of the rootfs directory onto itself, the propagation of the
    /// namespace's other mounts is left alone, and [`enter`] chroots.
    pub host_mount: bool,
}

/// Builds the rootfs, below its directory: the first half of its assembly, in the child, in
/// its own mount namespace; [`enter`] makes it `/` (createContainer hooks run in between).
pub fn mount_all(spec: &RootfsSpec<'_>) -> Result<(), SetupError> {
    if spec.host_mount {
        // (`process::launch` allows it only with a rootfs directory.) The caller's namespace: its mounts keep their propagation; the bind (the one mount
        // made there that a shared parent passes on, and takes back when it is unmounted) is
        // made private at once, so that the container's mounts below it stay in this namespace.
        mounts::bind_root(spec.merged)?;
        mounts::make_private(spec.merged)?;
    } else {
        mounts::set_root_propagation(spec.rootfs_propagation, spec.mounts, spec.merged)?;
        match spec.bind_root {
            Some(_) => mounts::bind_root(spec.merged)?,
            None => overlay::mount(spec)?,
        }
    }
    // runc's order, which OCI configs list them in and the runtime-spec wants kept: /proc,
    // /dev and below it, /sys (runtime-tools' validation checks it in mountinfo).
    mounts::mount_proc(spec.merged)?;
    devices::populate_dev(
        spec.merged,
        spec.user_namespace,
        spec.rootless,
        spec.console,
    )?;
    mounts::mount_sys(spec.merged, sysfs_is_host_bind(spec))?;
    for v in spec.volumes {
        mounts::bind_volume(spec.merged, v)?;
    }
    for m in spec.mounts {
        mounts::mount_extra(spec.merged, m)?;
    }
    devices::make_nodes(spec.merged, spec.device_nodes)?;
    Ok(())
}

/// The second half of the assembly, after [`mount_all`]: `pivot_root` into the rootfs, masked and read-only paths.
pub fn enter(spec: &RootfsSpec<'_>) -> Result<(), SetupError> {
    if spec.host_mount {
        pivot::chroot_into(spec.merged)?;
    } else {
        pivot::pivot_root(spec.merged)?;
    }
    mounts::mask_paths(spec.masked, spec.readonly)?;
    if spec.bind_root == Some(true) {
        mounts::remount_root_readonly()?;
    }
    if spec.host_mount {
        // (The caller refuses a rootfsPropagation here: it would be the runtime's `/`'s.)
        return Ok(());
    }
    mounts::propagate_root(spec.rootfs_propagation)
}

/// Where sysfs cannot be mounted anew (a user namespace, or the host's network namespace), the
/// container gets a read-only bind of the host's /sys instead.
fn sysfs_is_host_bind(spec: &RootfsSpec<'_>) -> bool {
    spec.user_namespace || spec.host_network
}

/// What the container sees at /sys/fs/cgroup: the hierarchies that hold its cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupView {
    /// No cgroup (a rootless run): an empty directory.
    None,
    /// The cgroup2 hierarchy.
    V2,
    /// A tmpfs with one directory per v1 hierarchy the container's cgroup is in.
    V1(Vec<crate::cgroups::v1::V1View>),
}

/// The last mounts, made after [`enter`] once the container's cgroup namespace exists: its
/// cgroup hierarchies, read-only, at /sys/fs/cgroup, where the container gets a sysfs of its own
/// (with a bind of the host's /sys, the host's cgroup mounts come with it). In the cgroup
/// namespace, the container's own cgroup is each hierarchy's root, so a workload reads its
/// limits where crun and docker put them (`/sys/fs/cgroup/memory.max`, or on a v1 host
/// `/sys/fs/cgroup/memory/memory.limit_in_bytes`).
pub fn mount_cgroup(spec: &RootfsSpec<'_>, view: &CgroupView) -> Result<(), SetupError> {
    if sysfs_is_host_bind(spec) {
        return Ok(());
    }
    match view {
        CgroupView::None => Ok(()),
        CgroupView::V2 => mounts::mount_cgroup2(),
        CgroupView::V1(hierarchies) => mounts::mount_cgroup_v1(hierarchies),
    }
}
