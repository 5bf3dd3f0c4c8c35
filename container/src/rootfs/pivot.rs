//! Making the assembled rootfs the container's `/` with pivot_root(2) — not chroot, which a
//! process with CAP_SYS_CHROOT can escape.

use std::path::Path;

use nix::mount::{MntFlags, umount2};
use nix::unistd::{chdir, chroot, pivot_root as sys_pivot_root};

use crate::error::SetupError;

/// `pivot_root(new_root, new_root)` stacks the old root on top of the new one; detaching it then
/// leaves only the new root, with no directory for the old one needed inside the image (runc's
/// approach).
pub(crate) fn pivot_root(new_root: &Path) -> Result<(), SetupError> {
    chdir(new_root).map_err(|e| {
        SetupError::rootfs(format!("Cannot enter the rootfs {}", new_root.display()), e)
    })?;
    sys_pivot_root(".", ".")
        .map_err(|e| SetupError::rootfs("pivot_root into the rootfs failed", e))?;
    umount2(".", MntFlags::MNT_DETACH)
        .map_err(|e| SetupError::rootfs("Cannot detach the host's root after pivot_root", e))?;
    chdir("/").map_err(|e| SetupError::rootfs("chdir / after pivot_root failed", e))
}

/// For a container in the runtime's own mount namespace (an OCI config without a mount
/// namespace, as runc does it): `chroot` into the rootfs's bind, as `pivot_root` there would
/// change the root of every process of the namespace whose root is the namespace's. A weaker
/// wall than `pivot_root` (the host's mounts stay below the new root's reach only while the
/// container holds no `CAP_SYS_CHROOT`): docs/oci.md says so.
pub(crate) fn chroot_into(new_root: &Path) -> Result<(), SetupError> {
    chdir(new_root).map_err(|e| {
        SetupError::rootfs(format!("Cannot enter the rootfs {}", new_root.display()), e)
    })?;
    chroot(".").map_err(|e| SetupError::rootfs("chroot into the rootfs failed", e))?;
    chdir("/").map_err(|e| SetupError::rootfs("chdir / after chroot failed", e))
}
