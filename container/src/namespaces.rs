//! The namespaces of a container, and how it gets them.
//!
//! Every run gets new namespaces of these kinds:
//!
//! - **mount** (`CLONE_NEWNS`): the rootfs is assembled and pivoted to in the container's own mount
//!   table, so nothing of it is visible on the host, and every mount dies with the container;
//! - **PID** (`CLONE_NEWPID`): the container's init is PID 1, the workload sees only its own
//!   processes, and killing the init kills everything in the container;
//! - **UTS** (`CLONE_NEWUTS`): the container's own hostname ([`set_hostname`]);
//! - **IPC** (`CLONE_NEWIPC`): System V IPC and POSIX message queues of its own;
//! - **network** (`CLONE_NEWNET`), unless `--network host`: only a loopback (`--network none`),
//!   or a veth pair to isol's bridge (`--network bridge`);
//! - **cgroup** (`CLONE_NEWCGROUP`), made by the child itself once it is in its cgroup
//!   ([`enter_cgroup_namespace`]), so that the container sees its cgroup as the root;
//! - **user** (`CLONE_NEWUSER`), in rootless mode: the caller's uid and gid become root
//!   inside ([`write_id_maps`]). Run as root, a container has no user namespace by default, as
//!   docker's: its root is the host's root, held in by capabilities, seccomp and no_new_privs;
//!   with one of its own ([`crate::config::UserNamespace`], `--userns private`), its ids map to
//!   an unprivileged range of the host's ([`write_maps`]) and the image's layers are mounted
//!   idmapped into it ([`idmapped_layers`]), so that their root is the container's root.
//!
//! The parent clones the child into the first ones with [`clone_child`] (into its cgroup as well,
//! on cgroup v2); the child then sets the hostname and later creates its cgroup namespace.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::{CloneFlags, unshare};
use nix::unistd::Pid;

use crate::config::{NetworkMode, UserNamespace};
use crate::error::{ContainerError, SetupError};

/// The namespaces the child is cloned into (the cgroup namespace comes later, see the module's
/// documentation).
pub(crate) fn clone_flags(network: NetworkMode, user_namespace: bool) -> u64 {
    let mut flags =
        libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWPID | libc::CLONE_NEWNS;
    if network != NetworkMode::Host {
        flags |= libc::CLONE_NEWNET;
    }
    if user_namespace {
        flags |= libc::CLONE_NEWUSER;
    }
    flags as u64
}

/// The error of a failed clone, with a hint where the host forbids new namespaces. `flags` are
/// the clone's: a user namespace has refusals of its own.
pub(crate) fn clone_error(e: Errno, rootless: bool, flags: u64) -> ContainerError {
    let hint = if e == Errno::EPERM || e == Errno::ENOSPC || e == Errno::EUSERS {
        if rootless {
            "; this host forbids unprivileged user namespaces (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone): run isol as root"
        } else if flags & libc::CLONE_NEWUSER as u64 != 0 {
            // clone(2): EPERM for CLONE_NEWUSER in a chroot, whatever the caller's privileges.
            "; the kernel refuses a new user namespace to a process in a chroot (as inside `isol lab`, whose root is one) or past sysctl user.max_user_namespaces: run isol outside a chroot, or use --userns host"
        } else {
            "; the host refuses new namespaces: check user.max_*_namespaces sysctls"
        }
    } else {
        ""
    };
    ContainerError::Setup(format!(
        "Cannot create the container's namespaces (clone): {e}{hint}"
    ))
}

/// `clone3`'s argument (linux/sched.h, `CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// A fork-like clone into new namespaces. With `cgroup` (a cgroup v2 directory), the child is
/// born in that cgroup (`clone3` with `CLONE_INTO_CGROUP`, Linux ≥ 5.7); where `clone3` is not
/// available (an older kernel, or a seccomp filter around isol that answers ENOSYS), a plain
/// `clone` and the caller moves the child. Returns the child's pid (0 in the child, `-errno` on
/// failure) and whether it was born in the cgroup.
pub(crate) fn clone_child(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> (i64, bool) {
    if let Some(dir) = cgroup {
        // clone3 refuses an exit signal with CLONE_PARENT: the child then gets its caller's.
        let exit_signal = if flags & libc::CLONE_PARENT as u64 != 0 {
            0
        } else {
            libc::SIGCHLD as u64
        };
        let args = CloneArgs {
            flags: flags | CLONE_INTO_CGROUP,
            exit_signal,
            cgroup: dir.as_raw_fd() as u64,
            ..CloneArgs::default()
        };
        // SAFETY: a fork-like clone3 (no CLONE_VM, no stack): the child gets a copy of this
        // single-threaded process and continues from here; the caller's child branch only runs
        // `child::main`, which never returns. `args` is a valid clone_args of the size given.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid >= 0 {
            return (pid, true);
        }
        let e = Errno::last();
        if !matches!(e, Errno::ENOSYS | Errno::E2BIG | Errno::EPERM) {
            return (-(e as i64), false);
        }
    }
    // SAFETY: as above, with clone: no CLONE_VM, no new stack.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD as u64) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return (-(Errno::last() as i64), false);
    }
    (pid, false)
}

/// [`clone_child`] into a user namespace joined by `path` (an OCI config's `linux.namespaces`
/// type `user` with a `path`): the namespaces `flags` asks for must be born in, and belong to,
/// that user namespace, or the container's root (whose capabilities are the joined
/// namespace's) could not use them (mount its /proc, set its hostname). setns of a user
/// namespace is for good and needs a single-threaded caller, so a helper forked here joins it
/// and clones the child as a sibling (`CLONE_PARENT`: this process is the child's parent, as
/// with [`clone_child`]), reports its pid and exits. Returns as [`clone_child`] does; in the
/// child, 0.
pub(crate) fn clone_in_user_namespace(
    path: &std::path::Path,
    flags: u64,
    cgroup: Option<BorrowedFd<'_>>,
) -> (i64, bool) {
    use std::io::{Read, Write};
    let Ok(userns) = std::fs::File::open(path) else {
        return (-(Errno::last() as i64), false);
    };
    let Ok((r, w)) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) else {
        return (-(Errno::last() as i64), false);
    };
    // SAFETY: a plain fork of this single-threaded process; the helper only calls setns, clone
    // and write, then _exits (or, as the cloned child, returns 0 to the caller's child branch,
    // which never returns).
    let helper = unsafe { libc::fork() };
    if helper < 0 {
        return (-(Errno::last() as i64), false);
    }
    if helper == 0 {
        drop(r);
        let (pid, born) = match nix::sched::setns(&userns, CloneFlags::CLONE_NEWUSER) {
            Ok(()) => clone_child(flags | libc::CLONE_PARENT as u64, cgroup),
            Err(e) => (-(e as i64), false),
        };
        if pid == 0 {
            drop(w);
            return (0, born);
        }
        let mut msg = [0u8; 9];
        msg[..8].copy_from_slice(&pid.to_ne_bytes());
        msg[8] = born.into();
        let _ = std::fs::File::from(w).write_all(&msg);
        // SAFETY: _exit ends the helper without running the parent's destructors.
        unsafe { libc::_exit(0) }
    }
    drop(w);
    drop(userns);
    let mut msg = [0u8; 9];
    let read = std::fs::File::from(r).read_exact(&mut msg);
    let _ = nix::sys::wait::waitpid(Pid::from_raw(helper), None);
    if read.is_err() {
        return (-(Errno::EIO as i64), false);
    }
    let mut pid = [0u8; 8];
    pid.copy_from_slice(&msg[..8]);
    (i64::from_ne_bytes(pid), msg[8] != 0)
}

/// Maps the caller's uid and gid to root inside the child's user namespace (rootless mode).
pub(crate) fn write_id_maps(child: Pid) -> Result<(), ContainerError> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let base = PathBuf::from(format!("/proc/{child}"));
    let write = |file: &str, data: String| {
        std::fs::write(base.join(file), data).map_err(|e| {
            ContainerError::Setup(format!("Cannot write the user namespace's {file}: {e}"))
        })
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("0 {uid} 1\n"))?;
    write("gid_map", format!("0 {gid} 1\n"))
}

/// Writes the child's `uid_map` and `gid_map` (a runtime run as root: `setgroups` stays
/// allowed, so that the container's root may set a user's groups).
pub(crate) fn write_maps(child: Pid, ns: &UserNamespace) -> Result<(), ContainerError> {
    let base = PathBuf::from(format!("/proc/{child}"));
    for (file, map) in [("uid_map", &ns.uid_map), ("gid_map", &ns.gid_map)] {
        let data: String = map
            .iter()
            .map(|m| format!("{} {} {}\n", m.inside, m.outside, m.count))
            .collect();
        // One write: the kernel takes a map only whole, and only once.
        std::fs::write(base.join(file), &data).map_err(|e| {
            ContainerError::Setup(format!(
                "Cannot write the user namespace's {file} ({}): {e}; give ranges that do not overlap, at most 340 lines",
                data.trim_end().replace('\n', ", ")
            ))
        })?;
    }
    Ok(())
}

/// The maps of the child's user namespace, as the host sees them (one joined by path, whose
/// maps its maker wrote).
pub(crate) fn read_maps(child: Pid) -> Result<UserNamespace, ContainerError> {
    let read = |file: &str| -> Result<Vec<crate::config::IdMapping>, ContainerError> {
        let path = format!("/proc/{child}/{file}");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ContainerError::Setup(format!("Cannot read the user namespace's {path}: {e}"))
        })?;
        Ok(text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace().map(str::parse::<u32>);
                match (f.next(), f.next(), f.next()) {
                    (Some(Ok(inside)), Some(Ok(outside)), Some(Ok(count))) => {
                        Some(crate::config::IdMapping {
                            inside,
                            outside,
                            count,
                        })
                    }
                    _ => None,
                }
            })
            .collect())
    };
    Ok(UserNamespace {
        uid_map: read("uid_map")?,
        gid_map: read("gid_map")?,
    })
}

// The new mount API (linux/mount.h), for idmapped mounts.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// `struct mount_attr` (linux/mount.h, `MOUNT_ATTR_SIZE_VER0`).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// In the parent, after the maps are written: a detached copy of each image layer (a bind
/// mount not yet attached anywhere, `open_tree(OPEN_TREE_CLONE)`) idmapped into the child's user
/// namespace (`mount_setattr(MOUNT_ATTR_IDMAP)`), for the child to attach ([`attach`]) and use
/// as the overlay's lowers: a file the host's root owns in a layer is the container's root's
/// there, one of uid 1000 is uid 1000's, and overlayfs can copy them up. Only the host's root
/// may idmap a mount of the host's filesystem; the child cannot, so the parent does.
pub(crate) fn idmapped_layers(
    child: Pid,
    layers: &[PathBuf],
) -> Result<Vec<std::os::fd::OwnedFd>, ContainerError> {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    let userns = std::fs::File::open(format!("/proc/{child}/ns/user")).map_err(|e| {
        ContainerError::Setup(format!("Cannot open the container's user namespace: {e}"))
    })?;
    if layers.len() > crate::security::exe::MAX_FDS {
        return Err(ContainerError::Setup(format!(
            "--userns private: the image has {} layers, more than the {} isol can idmap; flatten it",
            layers.len(),
            crate::security::exe::MAX_FDS
        )));
    }
    let mut fds = Vec::with_capacity(layers.len());
    for layer in layers {
        let cannot = |what: &str, e: Errno| {
            let hint = match e {
                Errno::ENOSYS => {
                    "; this kernel has no idmapped mounts (Linux ≥ 5.12, and ≥ 5.19 for overlayfs over them): use --userns host"
                }
                Errno::EINVAL | Errno::EPERM | Errno::EOPNOTSUPP => {
                    "; the filesystem holding the image store does not support idmapped mounts (ext4, xfs, btrfs and tmpfs ≥ 6.3 do; overlayfs does not): put the store (ISOL_HOME) on one of those, or use --userns host"
                }
                _ => "",
            };
            ContainerError::Setup(format!(
                "--userns private: cannot {what} the image layer {}: {e}{hint}",
                layer.display()
            ))
        };
        let path = std::ffi::CString::new(layer.as_os_str().as_bytes())
            .map_err(|_| cannot("open", Errno::EINVAL))?;
        // SAFETY: open_tree reads the NUL-terminated path and returns a new descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_tree,
                libc::AT_FDCWD,
                path.as_ptr(),
                OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE,
            )
        };
        if fd < 0 {
            return Err(cannot("clone", Errno::last()));
        }
        // SAFETY: the kernel just returned this descriptor, which nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let attr = MountAttr {
            attr_set: MOUNT_ATTR_IDMAP,
            attr_clr: 0,
            propagation: 0,
            userns_fd: userns.as_raw_fd() as u64,
        };
        // SAFETY: mount_setattr reads `attr` (valid, of the size given) and changes only the
        // detached mount behind `fd`, with the empty path meaning `fd` itself.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r < 0 {
            return Err(cannot("idmap", Errno::last()));
        }
        fds.push(fd);
    }
    Ok(fds)
}

/// In the child: attaches a detached mount ([`idmapped_layers`]) at `target`, a directory.
pub(crate) fn attach(mount: BorrowedFd<'_>, target: &std::path::Path) -> Result<(), Errno> {
    use std::os::unix::ffi::OsStrExt;
    let target =
        std::ffi::CString::new(target.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: move_mount reads the two NUL-terminated paths; the empty one means `mount`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    Errno::result(r).map(drop)
}

/// In the child: joins the namespace at `path` (`/proc/PID/ns/net`…) instead of a new one.
pub(crate) fn join(
    ns: crate::config::SharedNamespace,
    path: &std::path::Path,
) -> Result<(), SetupError> {
    let cannot = |e| {
        SetupError::process(
            format!(
                "Cannot join the {} namespace at {}",
                ns.name(),
                path.display()
            ),
            e,
        )
    };
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(cannot)?;
    nix::sched::setns(&fd, CloneFlags::from_bits_truncate(ns.clone_flag())).map_err(cannot)
}

/// In the child: the container's hostname, in its UTS namespace.
pub(crate) fn set_hostname(name: &CStr) -> Result<(), SetupError> {
    nix::unistd::sethostname(name.to_str().unwrap_or("isol")).map_err(|source| {
        SetupError::Namespace {
            what: "Cannot set the hostname",
            source,
        }
    })
}

/// `NS_GET_NSTYPE`: `_IO(0xb7, 0x3)`, the namespace type (a `CLONE_NEW*` flag) of an nsfs
/// descriptor.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The type (`CLONE_NEW*`) of the namespace open at `fd`; `None` when it is no namespace.
pub fn namespace_type(fd: &impl std::os::fd::AsFd) -> Option<i32> {
    use std::os::fd::AsRawFd;
    // SAFETY: NS_GET_NSTYPE takes no argument and returns an int; the descriptor is borrowed
    // for the call.
    let kind = unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), NS_GET_NSTYPE as _) };
    (kind >= 0).then_some(kind)
}

/// Checks that `path` is a namespace of `kind`, as a join by path would find (setns with a
/// type refuses any other): for a join that is taken as given without a setns (a VM's IPC
/// namespace, a UTS namespace whose hostname the config replaces).
pub fn check_namespace_file(
    path: &std::path::Path,
    kind: crate::SharedNamespace,
) -> Result<(), ContainerError> {
    let file_name = match kind {
        crate::SharedNamespace::Net => "net",
        crate::SharedNamespace::Ipc => "ipc",
        crate::SharedNamespace::Uts => "uts",
        crate::SharedNamespace::Pid => "pid",
        crate::SharedNamespace::User => "user",
        crate::SharedNamespace::Mount => "mnt",
    };
    let bad = |e: String| {
        ContainerError::Setup(format!(
            "{} is not the {} namespace the config says it is ({e}): give the path of one \
             (/proc/PID/ns/{file_name}, or a bind mount of it)",
            path.display(),
            kind.name(),
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    match namespace_type(&file) {
        Some(t) if t == kind.clone_flag() => Ok(()),
        Some(_) => Err(bad("a namespace of another type".into())),
        None => Err(bad("not a namespace".into())),
    }
}

/// The hostname of the UTS namespace at `path` (`/proc/PID/ns/uts`, a bind of one): read by a
/// short-lived thread that joins it (a thread's UTS namespace is its own; the caller's is
/// untouched). A VM on a pod's UTS namespace takes its name (CRI's containers join the
/// sandbox's). Needs CAP_SYS_ADMIN.
pub fn hostname_in(path: &std::path::Path) -> Result<String, ContainerError> {
    let cannot = |e: String| {
        ContainerError::Setup(format!(
            "Cannot read the hostname of the UTS namespace at {}: {e}",
            path.display()
        ))
    };
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| cannot(e.to_string()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&fd, CloneFlags::CLONE_NEWUTS)
                .map_err(|e| format!("{e}; it must be a UTS namespace, and isol-runc root"))?;
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .map_err(|e| e.to_string())
        })
        .join()
        .unwrap_or_else(|_| Err("the thread reading it panicked".into()))
    })
    .map_err(cannot)
}

/// In the child: the container's NIS domain name, in its UTS namespace.
pub(crate) fn set_domainname(name: &CStr) -> Result<(), SetupError> {
    // SAFETY: setdomainname reads `len` bytes from a valid string.
    let r = unsafe { libc::setdomainname(name.as_ptr(), name.to_bytes().len()) };
    Errno::result(r)
        .map(drop)
        .map_err(|source| SetupError::Namespace {
            what: "Cannot set the domain name",
            source,
        })
}

/// The PID namespace the parent's next children are born in, changed for a clone into a joined
/// one ([`crate::config::SharedNamespace::Pid`]) and put back by [`PidForChildren::restore`]
/// (the parent's hooks and later children belong in its own).
pub(crate) struct PidForChildren {
    own: std::os::fd::OwnedFd,
}

impl PidForChildren {
    /// setns(CLONE_NEWPID) into the namespace at `path`, for the children made from now on.
    pub(crate) fn enter(path: &std::path::Path) -> Result<Self, ContainerError> {
        let open = |p: &std::path::Path| {
            nix::fcntl::open(
                p,
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| {
                ContainerError::Setup(format!(
                    "Cannot open the PID namespace {}: {e}",
                    p.display()
                ))
            })
        };
        let own = open(std::path::Path::new("/proc/self/ns/pid"))?;
        let target = open(path)?;
        nix::sched::setns(&target, CloneFlags::CLONE_NEWPID).map_err(|e| {
            ContainerError::Setup(format!(
                "Cannot join the PID namespace at {}: {e}; it must be the runtime's own or one below it",
                path.display()
            ))
        })?;
        Ok(PidForChildren { own })
    }

    /// Back to the runtime's own PID namespace for its next children.
    pub(crate) fn restore(self) -> Result<(), ContainerError> {
        nix::sched::setns(&self.own, CloneFlags::CLONE_NEWPID)
            .map_err(|e| ContainerError::sys("setns back to the runtime's PID namespace", e))
    }
}

/// In the child, after the parent's go: the cgroup namespace. It is created only now that the
/// child is in its cgroup, so that the container sees that cgroup as its root.
pub(crate) fn enter_cgroup_namespace() -> Result<(), SetupError> {
    unshare(CloneFlags::CLONE_NEWCGROUP).map_err(|source| SetupError::Namespace {
        what: "Cannot create the cgroup namespace",
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::test_support::{ROOT, Run, real_host, unique_id};
    use crate::cgroups::{self, CgroupManager, Entry};
    use crate::config::Limits;
    use nix::sys::wait::{WaitStatus, waitpid};
    use std::os::fd::AsFd;
    use std::path::Path;

    /// The child is in its cgroup before it does anything, without a migration by pid: born
    /// there (`clone3`, cgroup v2) or moved by itself (cgroup v1). Runs for real on this host's
    /// cgroups (v1 here, v2 in the lab).
    #[test]
    fn a_namespace_file_is_checked_for_its_type() {
        use crate::SharedNamespace;
        let p = std::path::Path::new("/proc/self/ns/ipc");
        assert!(check_namespace_file(p, SharedNamespace::Ipc).is_ok());
        let e = check_namespace_file(Path::new("/proc/self/ns/mnt"), SharedNamespace::Ipc)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("is not the IPC namespace") && e.contains("another type"),
            "{e}"
        );
        let e = check_namespace_file(Path::new("/etc/hostname"), SharedNamespace::Uts)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a namespace") && e.contains("/proc/PID/ns/uts"),
            "{e}"
        );
        let e = check_namespace_file(Path::new("/nope"), SharedNamespace::Uts).unwrap_err();
        assert!(e.to_string().contains("/nope"), "{e}");
    }

    #[test]
    fn hostname_in_reads_another_uts_namespace_and_keeps_ours() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (setns)");
            return;
        }
        let ours = nix::unistd::gethostname().unwrap();
        // A child in a UTS namespace of its own, named there; its namespace read by path.
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut child = std::process::Command::new("unshare")
            .args([
                "--uts",
                "sh",
                "-c",
                "hostname isol-uts-test && echo && exec sleep 30",
            ])
            .stdout(std::process::Stdio::from(w))
            .spawn()
            .expect("unshare (util-linux)");
        let mut line = [0u8; 1];
        let _ = nix::unistd::read(&r, &mut line);
        let name = hostname_in(std::path::Path::new(&format!(
            "/proc/{}/ns/uts",
            child.id()
        )));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(name.unwrap(), "isol-uts-test");
        assert_eq!(nix::unistd::gethostname().unwrap(), ours);
        let e = hostname_in(std::path::Path::new("/proc/self/ns/net"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be a UTS namespace"), "{e}");
        assert!(hostname_in(std::path::Path::new("/nonexistent")).is_err());
    }

    #[test]
    fn cgroups_entry_puts_the_child_in_its_cgroup() {
        let Some((_guard, _layout)) = real_host() else {
            return;
        };
        let id = unique_id("entry");
        let limits = Limits {
            memory: Some(64 << 20),
            ..Limits::default()
        };
        let run = Run::new(cgroups::create(Path::new(ROOT), &id, &limits).unwrap());
        let entry = run.cgroup.entry().unwrap();
        let into = match &entry {
            Entry::CloneInto(dir) => Some(dir.as_fd()),
            Entry::SelfJoin(_) => None,
        };
        // The child of a multi-threaded test process must not allocate: all prepared here.
        let want = format!("/isol/{id}\n");
        let (pid, born) = clone_child(0, into);
        assert!(pid >= 0, "clone: {}", Errno::from_raw(-pid as i32));
        if pid == 0 {
            // The child: enter (v1), then look for its cgroup in /proc/self/cgroup.
            let mut buf = [0u8; 4096];
            let code = match entry.join_self() {
                Err(_) => 2,
                Ok(()) => match std::fs::File::open("/proc/self/cgroup")
                    .and_then(|mut f| std::io::Read::read(&mut f, &mut buf))
                {
                    Ok(n) if buf[..n].windows(want.len()).any(|w| w == want.as_bytes()) => 0,
                    _ => 3,
                },
            };
            // SAFETY: ends the forked child without running the test harness's destructors.
            unsafe { libc::_exit(code) }
        }
        let status = waitpid(Pid::from_raw(pid as i32), None).unwrap();
        assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid as i32), 0));
        // On cgroup v2 the child must have been born in the cgroup, not moved.
        assert_eq!(born, matches!(entry, Entry::CloneInto(_)));
        println!("entry: {entry:?}, born in the cgroup: {born}");
    }
}
