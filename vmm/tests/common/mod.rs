//! What the VMM's lab tests need from the machine: the built guest init, and a busybox
//! root filesystem.

use std::path::{Path, PathBuf};

use isol_cpio::{CpioWriter, EntryMeta, S_IFLNK, S_IFREG, dir};

/// `$ISOL_GUEST_INIT`, else the guest init cargo built in this workspace (release first).
pub fn find_init() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ISOL_GUEST_INIT") {
        return Some(p.into());
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()?
        .join("target");
    [
        "x86_64-unknown-linux-gnu/release",
        "x86_64-unknown-linux-gnu/debug",
        "release",
        "debug",
    ]
    .iter()
    .map(|d| root.join(d).join("isol-guest-init"))
    .find(|p| p.exists())
}

/// Writes to `archive` a root filesystem as the cpio archive the VMM boots as a
/// `Rootfs::Cpio` (the form `isol_image::vm` flattens an image's layers into): `/tmp`,
/// `/bin/busybox` (a copy of `busybox`) with each of `applets` a symlink to it in `/bin`,
/// and `files`, each a regular file (path, permission bits, content).
pub fn busybox_rootfs(
    archive: &Path,
    busybox: &Path,
    applets: &[&str],
    files: &[(&str, u32, &[u8])],
) -> Result<(), String> {
    let bb = std::fs::read(busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    let bytes = rootfs_cpio(&bb, applets, files).map_err(|e| e.to_string())?;
    std::fs::write(archive, bytes).map_err(|e| format!("{}: {e}", archive.display()))
}

fn rootfs_cpio(
    busybox: &[u8],
    applets: &[&str],
    files: &[(&str, u32, &[u8])],
) -> std::io::Result<Vec<u8>> {
    let file = |mode| EntryMeta {
        mode: S_IFREG | mode,
        ..Default::default()
    };
    let link = EntryMeta {
        mode: S_IFLNK | 0o777,
        ..Default::default()
    };
    let mut w = CpioWriter::new(Vec::new());
    w.entry(b"bin", dir(0o755), &[])?;
    w.entry(b"bin/busybox", file(0o755), busybox)?;
    for a in applets {
        w.entry(format!("bin/{a}").as_bytes(), link, b"busybox")?;
    }
    for (path, mode, content) in files {
        w.entry(path.as_bytes(), file(*mode), content)?;
    }
    w.entry(b"tmp", dir(0o755), &[])?;
    w.finish()
}
