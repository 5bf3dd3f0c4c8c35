//! A minimal /dev: a fresh tmpfs with only the devices a workload needs (null, zero, full,
//! random, urandom, tty), a private devpts instance, /dev/shm, /dev/mqueue and the usual
//! symlinks — never the host's /dev.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use nix::mount::{MsFlags, mount};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use crate::error::SetupError;

/// (name, major, minor), each created with mode 0666.
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

const SYMLINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("core", "/proc/kcore"),
    ("ptmx", "pts/ptmx"),
];

pub(super) fn populate_dev(
    root: &Path,
    user_namespace: bool,
    rootless: bool,
    console: Option<&Path>,
) -> Result<(), SetupError> {
    let dev = root.join("dev");
    let _ = fs::create_dir(&dev);
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(|e| SetupError::rootfs("Cannot mount /dev in the container", e))?;

    for &(name, major, minor) in DEVICES {
        let path = dev.join(name);
        if user_namespace {
            // A user namespace may not create device nodes; bind the host's instead.
            fs::File::create(&path)
                .map_err(|e| SetupError::rootfs(format!("Cannot create /dev/{name}"), e))?;
            mount(
                Some(&Path::new("/dev").join(name)),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| {
                SetupError::rootfs(format!("Cannot bind /dev/{name} into the container"), e)
            })?;
        } else {
            mknod(
                &path,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(major, minor),
            )
            .map_err(|e| SetupError::rootfs(format!("Cannot create /dev/{name}"), e))?;
        }
    }
    for &(name, target) in SYMLINKS {
        symlink(target, dev.join(name))
            .map_err(|e| SetupError::rootfs(format!("Cannot create /dev/{name}"), e))?;
    }

    let pts = dev.join("pts");
    fs::create_dir(&pts).map_err(|e| SetupError::rootfs("Cannot create /dev/pts", e))?;
    // gid 5 is the conventional tty group; in a user namespace it may not be mapped (the
    // kernel then refuses the option), as in a rootless run or one joined by path.
    let pts_opts = if rootless || !gid_mapped(5) {
        "newinstance,ptmxmode=0666,mode=0620"
    } else {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(pts_opts),
    )
    .map_err(|e| SetupError::rootfs("Cannot mount /dev/pts in the container", e))?;

    let shm = dev.join("shm");
    fs::create_dir(&shm).map_err(|e| SetupError::rootfs("Cannot create /dev/shm", e))?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(|e| SetupError::rootfs("Cannot mount /dev/shm in the container", e))?;

    let mqueue = dev.join("mqueue");
    fs::create_dir(&mqueue).map_err(|e| SetupError::rootfs("Cannot create /dev/mqueue", e))?;
    // mqueue belongs to the IPC namespace; it is optional (the kernel may lack POSIX mqueues).
    let _ = mount(
        Some("mqueue"),
        &mqueue,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    );

    if let Some(slave) = console {
        let path = dev.join("console");
        fs::File::create(&path).map_err(|e| SetupError::rootfs("Cannot create /dev/console", e))?;
        mount(
            Some(slave),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| SetupError::rootfs("Cannot bind the terminal to /dev/console", e))?;
    }
    Ok(())
}

/// The device nodes of the config beyond isol's own (an OCI config's `linux.devices`), made
/// below the container's /dev (a tmpfs of isol's), with their mode and owner, as runc makes
/// them: the parents created as needed, a symlink on the way resolved inside the rootfs (so
/// never out of it), and a path that exists already refused.
pub(super) fn make_nodes(
    root: &Path,
    nodes: &[crate::config::DeviceNode],
) -> Result<(), SetupError> {
    use crate::config::DeviceNodeKind;
    for node in nodes {
        let name = node.path.display();
        let path = super::mounts::resolve_in_root(root, &node.path)
            .map_err(|e| SetupError::rootfs(format!("Cannot create the device {name}"), e))?;
        if !path.starts_with(root.join("dev")) {
            let outside = std::io::Error::other(format!(
                "it resolves to /{} in the container, outside /dev",
                path.strip_prefix(root).unwrap_or(&path).display()
            ));
            return Err(SetupError::rootfs(
                format!("Cannot create the device {name}"),
                outside,
            ));
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| SetupError::rootfs(format!("Cannot create the device {name}"), e))?;
        }
        let kind = match node.kind {
            DeviceNodeKind::Char => SFlag::S_IFCHR,
            DeviceNodeKind::Block => SFlag::S_IFBLK,
            DeviceNodeKind::Fifo => SFlag::S_IFIFO,
        };
        // The child's umask is 0 here: the mode is the node's.
        mknod(
            &path,
            kind,
            Mode::from_bits_truncate(node.mode & 0o7777),
            makedev(node.major, node.minor),
        )
        .map_err(|e| SetupError::rootfs(format!("Cannot create the device {name}"), e))?;
        nix::unistd::chown(
            &path,
            Some(nix::unistd::Uid::from_raw(node.uid)),
            Some(nix::unistd::Gid::from_raw(node.gid)),
        )
        .map_err(|e| SetupError::rootfs(format!("Cannot give the device {name} its owner"), e))?;
    }
    Ok(())
}

/// Whether `gid` has an id in this process's user namespace (its `gid_map`, read through
/// the host's /proc, still in view).
fn gid_mapped(gid: u32) -> bool {
    fs::read_to_string("/proc/self/gid_map").is_ok_and(|map| {
        map.lines().any(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect();
            f.len() == 3 && (f[0]..f[0] + f[2]).contains(&u64::from(gid))
        })
    })
}
