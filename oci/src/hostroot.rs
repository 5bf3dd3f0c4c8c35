//! A container without a mount namespace (runc's way: the runtime's own, see docs/oci.md)
//! leaves its mounts in the namespace `create` ran in: its rootfs bound onto itself, and
//! /proc, /dev, /sys and the config's mounts below that bind. Nothing else ends them (there is
//! no namespace of the container's to die with it), so `create` records, before anything is
//! mounted, which mount held the rootfs, and a failed `create` and `delete` detach the bind
//! (and with it everything below it) until that mount is back on top.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};

use crate::error::OciError;
use crate::state::ContainerDir;

/// The id of the mount `path` is on (the topmost one, where mounts are stacked on it).
fn mount_id(path: &Path) -> Result<u64, OciError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| OciError::Bundle {
        what: format!("bad rootfs path {}", path.display()),
        detail: "it holds a NUL byte".into(),
    })?;
    // SAFETY: statx is all zeroes before the call, which fills it; `c` is a valid C string
    // that outlives the call.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: as above; AT_FDCWD with an absolute or relative path, no flags that write.
    let r = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_NO_AUTOMOUNT,
            libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    if r != 0 {
        return Err(OciError::sys(
            format!("statx {}", path.display()),
            nix::Error::last(),
        ));
    }
    if stx.stx_mask & libc::STATX_MNT_ID == 0 {
        return Err(OciError::Unsupported(
            "linux.namespaces lacks a mount namespace, and this kernel gives no mount ids (statx STATX_MNT_ID, Linux 5.8), which isol needs to unmount the container's rootfs from the runtime's namespace: add a mount namespace".into(),
        ));
    }
    Ok(stx.stx_mnt_id)
}

/// Before `create` mounts anything in the runtime's namespace: records the mount under
/// `rootfs`.
pub(crate) fn record(dir: &ContainerDir, rootfs: &Path) -> Result<(), OciError> {
    let id = mount_id(rootfs)?;
    let mut text = format!("{id}\n").into_bytes();
    text.extend_from_slice(rootfs.as_os_str().as_bytes());
    crate::state::write_atomic(&dir.host_root_file(), &text)
}

/// Detaches what the container mounted in the runtime's namespace (nothing without a record,
/// or where it is gone already). Call it once the container's processes are gone.
pub(crate) fn unmount(dir: &ContainerDir) -> Result<(), OciError> {
    let text = match std::fs::read(dir.host_root_file()) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(OciError::state("read the container's host-root record", e)),
    };
    let bad = || OciError::State {
        what: format!("parse {}", dir.host_root_file().display()),
        source: std::io::Error::other("not a mount id and a path"),
    };
    let nl = text.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
    let before: u64 = std::str::from_utf8(&text[..nl])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let rootfs = PathBuf::from(std::ffi::OsStr::from_bytes(&text[nl + 1..]));
    // The bind is one mount (everything else is below it); a few more rounds only where
    // something else stacked on it meanwhile.
    for _ in 0..4 {
        match mount_id(&rootfs) {
            Ok(id) if id == before => return Ok(()),
            // The rootfs is gone: so is anything mounted on it.
            Err(OciError::Sys {
                source: nix::Error::ENOENT,
                ..
            }) => return Ok(()),
            Err(e) => return Err(e),
            Ok(_) => umount2(&rootfs, MntFlags::MNT_DETACH).map_err(|e| {
                OciError::sys(
                    format!("Cannot unmount the container's rootfs {}", rootfs.display()),
                    e,
                )
            })?,
        }
    }
    Ok(())
}
