//! The kernel filesystems every container gets (/proc, /sys), volumes, and the paths of /proc and
//! /sys that are masked or made read-only, as runc does by default.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MsFlags, mount};

use crate::config::{Mount, Volume};
use crate::error::SetupError;

/// Paths hidden from the container: they leak host information or allow host-wide actions.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
];

/// Paths the container may read but never write.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Stops mount events from propagating back to the host (or to the host from here).
pub(crate) fn make_mounts_private() -> Result<(), SetupError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| SetupError::rootfs("Cannot make the container's mounts private", e))
}

/// The propagation bits a mount's `propagation` (and a config's `rootfsPropagation`) may hold.
const PROPAGATION: u64 = libc::MS_SHARED | libc::MS_SLAVE | libc::MS_PRIVATE | libc::MS_UNBINDABLE;

/// The first step of the rootfs's assembly: the propagation of every mount the container's
/// namespace copied from the host's. isol's default makes them all private; `rootfs`, a config's
/// `rootfsPropagation`, as given (an unbindable one private, as the rootfs is bound next;
/// `/` becomes unbindable after `pivot_root`, [`propagate_root`]); without one, slave when a
/// mount asks for a propagation of its own, as runc does (its default), so that such a mount
/// has the host's mounts to follow. Slave and private mounts send nothing to the host. With a
/// shared root, the mount holding the rootfs is made private, so that the rootfs's own mounts
/// stay the container's and `pivot_root` (which refuses a shared parent) works.
pub(crate) fn set_root_propagation(
    rootfs: u64,
    mounts: &[Mount],
    merged: &Path,
) -> Result<(), SetupError> {
    let flags = if rootfs & PROPAGATION != 0 {
        if rootfs & libc::MS_UNBINDABLE != 0 {
            (rootfs & !libc::MS_UNBINDABLE) | libc::MS_PRIVATE
        } else {
            rootfs
        }
    } else if mounts
        .iter()
        .any(|m| m.propagation & (libc::MS_SHARED | libc::MS_SLAVE) != 0)
    {
        libc::MS_SLAVE | libc::MS_REC
    } else {
        return make_mounts_private();
    };
    set_propagation(Path::new("/"), flags).map_err(|e| {
        SetupError::rootfs("Cannot set the propagation of the container's mounts", e)
    })?;
    if flags & libc::MS_SHARED != 0 {
        let holder = mount_point_of(merged)
            .map_err(|e| SetupError::rootfs("Cannot read /proc/self/mountinfo", e))?;
        set_propagation(&holder, libc::MS_PRIVATE).map_err(|e| {
            SetupError::rootfs(
                format!(
                    "Cannot make {} (the rootfs's mount) private",
                    holder.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// After `pivot_root`: the container's `/` (and with `MS_REC` every mount below it) gets the
/// config's `rootfsPropagation`, as runc does; nothing to do without one.
pub(super) fn propagate_root(rootfs: u64) -> Result<(), SetupError> {
    if rootfs & PROPAGATION == 0 {
        return Ok(());
    }
    set_propagation(Path::new("/"), rootfs)
        .map_err(|e| SetupError::rootfs("Cannot set the propagation of the container's /", e))
}

/// Changes the propagation of the mount at `target` (`MS_SHARED`… with `MS_REC` or not).
fn set_propagation(target: &Path, flags: u64) -> nix::Result<()> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::from_bits_truncate(flags as _),
        None::<&str>,
    )
}

/// The mount point that holds `path` (the longest one that is a prefix of it, after symlinks).
fn mount_point_of(path: &Path) -> io::Result<PathBuf> {
    let path = fs::canonicalize(path)?;
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    let mut best = PathBuf::from("/");
    for line in info.lines() {
        // id parent major:minor root mount-point …
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        let point = PathBuf::from(crate::cgroups::unescape_mountinfo(point));
        if path.starts_with(&point) && point.components().count() > best.components().count() {
            best = point;
        }
    }
    Ok(best)
}

/// Binds a rootfs directory onto itself, so that it is a mount point pivot_root can use.
pub(super) fn bind_root(root: &Path) -> Result<(), SetupError> {
    bind_onto_itself(root).map_err(|e| {
        SetupError::rootfs(
            format!("Cannot bind the rootfs {} onto itself", root.display()),
            e,
        )
    })
}

/// Makes the mount at `path` (and every mount below it) private: nothing mounted there later
/// reaches another namespace, nor comes from one.
pub(super) fn make_private(path: &Path) -> Result<(), SetupError> {
    set_propagation(path, libc::MS_PRIVATE | libc::MS_REC)
        .map_err(|e| SetupError::rootfs(format!("Cannot make {} private", path.display()), e))
}

/// A recursive bind of `path` onto itself: a mount point of its own.
fn bind_onto_itself(path: &Path) -> nix::Result<()> {
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
}

/// Makes the container's `/` read-only (after pivot_root; the mounts below it keep their own
/// flags).
pub(super) fn remount_root_readonly() -> Result<(), SetupError> {
    remount_readonly(Path::new("/"))
}

pub(super) fn mount_proc(root: &Path) -> Result<(), SetupError> {
    let target = root.join("proc");
    ensure_dir(&target)?;
    mount(
        Some("proc"),
        &target,
        Some("proc"),
        NOSUID_NODEV_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| SetupError::rootfs("Cannot mount /proc in the container", e))
}

/// A fresh read-only sysfs, or, where sysfs cannot be mounted anew (a user namespace, or the
/// host's network namespace), a read-only recursive bind of the host's /sys.
pub(super) fn mount_sys(root: &Path, bind_host: bool) -> Result<(), SetupError> {
    let target = root.join("sys");
    ensure_dir(&target)?;
    if bind_host {
        mount(
            Some("/sys"),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| SetupError::rootfs("Cannot bind /sys into the container", e))?;
        remount_readonly(&target)?;
        return Ok(());
    }
    mount(
        Some("sysfs"),
        &target,
        Some("sysfs"),
        NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| SetupError::rootfs("Cannot mount /sys in the container", e))
}

/// Mounts the cgroup2 hierarchy read-only at /sys/fs/cgroup of the (pivoted) root. Call it in
/// the container's cgroup namespace: the container then sees its own cgroup as the root.
pub(super) fn mount_cgroup2() -> Result<(), SetupError> {
    mount(
        Some("cgroup2"),
        "/sys/fs/cgroup",
        Some("cgroup2"),
        NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| SetupError::rootfs("Cannot mount the cgroup2 hierarchy in the container", e))
}

/// Mounts the container's v1 hierarchies read-only under a tmpfs at /sys/fs/cgroup of the
/// (pivoted) root, one directory each, named as on the host, with a symlink per co-mounted
/// controller (`cpu -> cpu,cpuacct`) as the host has them. Call it in the container's cgroup
/// namespace.
pub(super) fn mount_cgroup_v1(
    hierarchies: &[crate::cgroups::v1::V1View],
) -> Result<(), SetupError> {
    let base = Path::new("/sys/fs/cgroup");
    let err = |what: String| move |e| SetupError::rootfs(what, e);
    mount(
        Some("tmpfs"),
        base,
        Some("tmpfs"),
        NOSUID_NODEV_NOEXEC,
        Some("mode=755"),
    )
    .map_err(err(
        "Cannot mount a tmpfs at /sys/fs/cgroup in the container".into(),
    ))?;
    for h in hierarchies {
        let dir = base.join(&h.name);
        fs::create_dir(&dir)
            .map_err(|e| SetupError::rootfs(format!("Cannot create {}", dir.display()), e))?;
        mount(
            Some("cgroup"),
            &dir,
            Some("cgroup"),
            NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY,
            Some(h.options.as_str()),
        )
        .map_err(err(format!(
            "Cannot mount the cgroup hierarchy {} in the container",
            h.options
        )))?;
        for c in h.options.split(',').filter(|c| *c != h.name) {
            let link = base.join(c);
            if !link.exists() {
                std::os::unix::fs::symlink(&h.name, &link).map_err(|e| {
                    SetupError::rootfs(format!("Cannot create {}", link.display()), e)
                })?;
            }
        }
    }
    remount_readonly(base)
}

fn remount_readonly(target: &Path) -> Result<(), SetupError> {
    mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| SetupError::rootfs(format!("Cannot make {} read-only", target.display()), e))
}

/// Binds a host path into the container (`-v HOST:CTR[:ro]`).
pub(super) fn bind_volume(root: &Path, v: &Volume) -> Result<(), SetupError> {
    let target = resolve_in_root(root, &v.target)
        .map_err(|e| SetupError::rootfs(format!("Volume target {}", v.target.display()), e))?;
    let is_dir = v.source.is_dir();
    if is_dir {
        fs::create_dir_all(&target)
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| {
                SetupError::rootfs(
                    format!("Cannot create volume target {}", v.target.display()),
                    e,
                )
            })?;
        }
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&target)
            .map(|_| ())
    }
    .map_err(|e| {
        SetupError::rootfs(
            format!("Cannot create volume target {}", v.target.display()),
            e,
        )
    })?;
    mount(
        Some(&v.source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| {
        SetupError::rootfs(
            format!(
                "Cannot bind volume {} to {}",
                v.source.display(),
                v.target.display()
            ),
            e,
        )
    })?;
    if v.read_only {
        remount_readonly(&target)?;
    }
    Ok(())
}

/// A further mount of the configuration's: its target is created (a file for a bind of a
/// file), the filesystem mounted or the source bound, and a bind's flags (read-only, nosuid…)
/// applied by a remount, as mount(2) ignores them on the bind itself.
pub(super) fn mount_extra(root: &Path, m: &Mount) -> Result<(), SetupError> {
    let at = || format!("Mount at {}", m.target.display());
    let target = resolve_in_root(root, &m.target).map_err(|e| SetupError::rootfs(at(), e))?;
    let file_bind = m.fstype.is_none() && !m.source.is_dir();
    if file_bind {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| SetupError::rootfs(at(), e))?;
        }
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&target)
            .map_err(|e| SetupError::rootfs(at(), e))?;
    } else {
        fs::create_dir_all(&target).map_err(|e| SetupError::rootfs(at(), e))?;
    }
    let flags = MsFlags::from_bits_truncate(m.flags as _);
    let data = (!m.data.is_empty()).then_some(m.data.as_str());
    let cannot = |e| {
        SetupError::rootfs(
            format!(
                "Cannot mount {} at {}",
                m.source.display(),
                m.target.display()
            ),
            e,
        )
    };
    match &m.fstype {
        Some(fstype) => {
            mount(Some(&m.source), &target, Some(fstype.as_str()), flags, data).map_err(cannot)?
        }
        None => {
            let bind = MsFlags::MS_BIND | (flags & MsFlags::MS_REC);
            mount(Some(&m.source), &target, None::<&str>, bind, None::<&str>).map_err(cannot)?;
            let extra = flags - MsFlags::MS_BIND - MsFlags::MS_REC;
            if !extra.is_empty() {
                mount(
                    None::<&str>,
                    &target,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra,
                    None::<&str>,
                )
                .map_err(cannot)?;
            }
        }
    }
    // Its propagation (rslave, rshared…), once mounted, as runc sets it.
    if m.propagation & PROPAGATION != 0 {
        set_propagation(&target, m.propagation).map_err(|e| {
            SetupError::rootfs(
                format!(
                    "Cannot set the propagation of the mount at {}",
                    m.target.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
}

/// Resolves `path` (absolute, as seen inside the container) to a host path below `root`,
/// following symlinks as the container would see them, so that a symlink in the image can never
/// point a mount outside the rootfs.
pub(crate) fn resolve_in_root(root: &Path, path: &Path) -> io::Result<PathBuf> {
    let mut resolved = PathBuf::new(); // relative to root
    let mut pending: Vec<PathBuf> = vec![path.to_path_buf()];
    let mut links = 0;
    while let Some(p) = pending.pop() {
        let mut comps: Vec<Component> = p.components().collect();
        comps.reverse();
        while let Some(c) = comps.pop() {
            match c {
                Component::RootDir | Component::Prefix(_) => resolved.clear(),
                Component::CurDir => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate = resolved.join(name);
                    let host = root.join(&candidate);
                    match fs::symlink_metadata(&host) {
                        Ok(m) if m.file_type().is_symlink() => {
                            links += 1;
                            if links > 40 {
                                return Err(io::Error::other("too many levels of symbolic links"));
                            }
                            let target = fs::read_link(&host)?;
                            // Resolve the link, then the rest of this path, in that order.
                            let rest: PathBuf = comps.iter().rev().collect();
                            comps.clear();
                            pending.push(rest);
                            pending.push(target);
                        }
                        _ => resolved = candidate,
                    }
                }
            }
        }
    }
    Ok(root.join(resolved))
}

/// Masks and write-protects the sensitive paths of /proc and /sys, and `masked` and `readonly`
/// beyond them (missing ones are skipped, as runc does). Runs after pivot_root.
pub(super) fn mask_paths(masked: &[PathBuf], readonly: &[PathBuf]) -> Result<(), SetupError> {
    let own = MASKED_PATHS.iter().map(Path::new);
    for path in own.chain(masked.iter().map(PathBuf::as_path)) {
        let p = path.to_string_lossy();
        let Ok(meta) = fs::metadata(path) else {
            continue;
        };
        let res = if meta.is_dir() {
            mount(
                Some("tmpfs"),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                Some("size=0"),
            )
        } else {
            mount(
                Some("/dev/null"),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        };
        // sysfs may refuse mounts on some of its entries; those are then only readable.
        if let Err(e) = res
            && !p.starts_with("/sys")
        {
            return Err(SetupError::rootfs(format!("Cannot mask {p}"), e));
        }
    }
    let own = READONLY_PATHS.iter().map(Path::new);
    for path in own.chain(readonly.iter().map(PathBuf::as_path)) {
        let p = path.to_string_lossy();
        if !path.exists() {
            continue;
        }
        bind_onto_itself(path)
            .map_err(|e| SetupError::rootfs(format!("Cannot bind {p} read-only"), e))?;
        remount_readonly(path)?;
    }
    Ok(())
}

fn ensure_dir(path: &Path) -> Result<(), SetupError> {
    match fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(SetupError::rootfs(
            format!("Cannot create {}", path.display()),
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn symlinks_in_the_image_cannot_escape_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../../../etc", root.join("rel")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("/abs/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/rel/y")).unwrap(),
            root.join("etc/y")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("/../../z")).unwrap(),
            root.join("z")
        );
        assert!(resolve_in_root(root, Path::new("/loop1/a")).is_err());
    }
}
