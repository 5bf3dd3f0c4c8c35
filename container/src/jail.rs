//! The runtime's isolation mechanisms, for a process other than a container's: the jail around
//! the VMM (`isol-vmm`, see docs/design.md, "The VMM's jail") is made with the same code that
//! runs containers. A small, additive surface: the clone into new namespaces (into a cgroup on
//! v2), mount privacy, pivot_root, and the capability steps; the cgroups ([`crate::cgroups`]),
//! the run dir and its sweep ([`crate::state`]) and no_new_privs ([`crate::security`]) are public
//! already.

use std::os::fd::BorrowedFd;
use std::path::Path;

use nix::errno::Errno;

/// A step of a jail's setup that failed; the message says what and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JailError(String);

impl From<crate::error::SetupError> for JailError {
    fn from(e: crate::error::SetupError) -> Self {
        JailError(e.to_string())
    }
}

impl From<crate::security::SecurityError> for JailError {
    fn from(e: crate::security::SecurityError) -> Self {
        JailError(e.to_string())
    }
}

/// New mount, PID, IPC, UTS and network namespaces: a container's, less the user namespace
/// (a jail is made by root) and the cgroup namespace (a jail has no use for one).
pub const NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWNET) as u64;

/// A fork-like clone of the calling (single-threaded) process into the namespaces `flags`,
/// born in the cgroup v2 directory `cgroup` when given and the kernel can (`clone3` with
/// `CLONE_INTO_CGROUP`). Returns the child's pid (0 in the child) and whether it was born in
/// the cgroup; the error names the host's limit where namespaces are refused.
pub fn clone_into(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> Result<(i32, bool), JailError> {
    let (pid, born) = crate::namespaces::clone_child(flags, cgroup);
    if pid < 0 {
        let e = Errno::from_raw(-pid as i32);
        return Err(JailError(
            crate::namespaces::clone_error(e, false, flags).to_string(),
        ));
    }
    Ok((pid as i32, born))
}

/// In a new mount namespace: stops mount events propagating to or from the host.
pub fn make_mounts_private() -> Result<(), JailError> {
    Ok(crate::rootfs::make_mounts_private()?)
}

/// Makes `new_root` (a mount point) `/`, with the old root detached: nothing of the host's
/// filesystem stays reachable.
pub fn pivot_root(new_root: &Path) -> Result<(), JailError> {
    Ok(crate::rootfs::pivot_root(new_root)?)
}

/// Empties the calling thread's bounding, inheritable and ambient capability sets, keeping its
/// permitted and effective sets: nothing it or a thread it starts later does can regain a
/// capability once a uid change clears those (see
/// [`crate::security::capabilities::drop_bounding`]).
pub fn drop_bounding_set() -> Result<(), JailError> {
    Ok(crate::security::capabilities::drop_bounding()?)
}

/// Empties every capability set of the calling thread.
pub fn drop_all_capabilities() -> Result<(), JailError> {
    Ok(crate::security::capabilities::drop_to(0)?)
}
