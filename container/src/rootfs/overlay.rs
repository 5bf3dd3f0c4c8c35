//! The union filesystem: the image layers as read-only overlayfs lowers, a per-run writable upper.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::RootfsSpec;
use crate::error::SetupError;

/// The overlayfs mount options for `layers` (lowest first). overlayfs lists lowers top first.
pub fn overlay_options(layers: &[PathBuf], upper: &Path, work: &Path, userxattr: bool) -> String {
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| escape(&l.to_string_lossy()))
        .collect();
    let mut opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escape(&upper.to_string_lossy()),
        escape(&work.to_string_lossy())
    );
    if userxattr {
        opts.push_str(",userxattr");
    }
    opts
}

/// overlayfs splits its options on ',' and lowerdir on ':'; both are escaped with '\'.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// overlayfs's statfs magic: an overlay cannot use another overlay as its upper layer.
const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;

pub(super) fn mount(spec: &RootfsSpec<'_>) -> Result<(), SetupError> {
    let Some(top) = spec.layers.last() else {
        return Err(SetupError::NoLayers);
    };
    if !spec.rootless || upper_needs_tmpfs(spec.upper) {
        writable_layer_on_tmpfs(spec)?;
    }
    let idmapped = attach_idmapped(spec)?;
    let (layers, top) = match idmapped.last() {
        Some(top) => (&idmapped[..], top.as_path()),
        None => (spec.layers, top.as_path()),
    };
    root_like_the_image(spec, top)?;
    let opts = overlay_options(layers, spec.upper, spec.work, spec.user_namespace);
    if opts.len() >= 4096 {
        return Err(SetupError::TooManyLayers(spec.layers.len()));
    }
    // `volatile` (Linux ≥ 5.10): the writable layer lives as long as the run and is deleted after
    // it, so nothing need ever be synced. Without it, where the layer is on the host's disk
    // (rootless), the overlay's unmount when the container ends calls syncfs on the whole host
    // filesystem that holds the upper dir:
    // milliseconds of journal commit and cache flush per run, and far more on a host with dirty
    // data. Kernels without the option refuse it (EINVAL); then mount without.
    let volatile = format!("{opts},volatile");
    let mount_with = |o: &str| {
        nix::mount::mount(
            Some("overlay"),
            spec.merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(o),
        )
    };
    let mounted = match mount_with(&volatile) {
        Err(nix::errno::Errno::EINVAL) => mount_with(&opts),
        result => result,
    };
    if let Err(e) = mounted
        && !spec.idmapped.is_empty()
    {
        return Err(SetupError::rootfs(
            format!(
                "Cannot mount the overlay over idmapped image layers at {} (--userns private needs overlayfs over idmapped lowers, Linux ≥ 5.19); use --userns host",
                spec.merged.display()
            ),
            e,
        ));
    }
    mounted.map_err(|source| SetupError::Overlay {
        at: spec.merged.to_path_buf(),
        source,
    })
}

/// Attaches the idmapped layers (a user namespace of the container's own) in the run's tmpfs,
/// as `l0`, `l1`… (lowest first), and returns their paths; none without idmapped layers.
fn attach_idmapped(spec: &RootfsSpec<'_>) -> Result<Vec<PathBuf>, SetupError> {
    use std::os::fd::AsFd;
    let run_dir = spec.upper.parent().ok_or(SetupError::UpperWithoutParent)?;
    let mut paths = Vec::with_capacity(spec.idmapped.len());
    for (i, fd) in spec.idmapped.iter().enumerate() {
        let dir = run_dir.join(format!("l{i}"));
        std::fs::create_dir(&dir)
            .map_err(|e| SetupError::rootfs(format!("Cannot create {}", dir.display()), e))?;
        crate::namespaces::attach(fd.as_fd(), &dir).map_err(|e| {
            SetupError::rootfs(
                format!(
                    "Cannot attach the idmapped image layer at {}",
                    dir.display()
                ),
                e,
            )
        })?;
        paths.push(dir);
    }
    Ok(paths)
}

/// The overlay's root directory is the upper dir's, which isol made: give it the mode and owner
/// of the image's own root (the topmost layer's), so that `/` is 0755 root-owned as the image says,
/// never world-writable.
fn root_like_the_image(spec: &RootfsSpec<'_>, top: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(top).map_err(|e| {
        SetupError::rootfs(format!("Cannot read the image's root {}", top.display()), e)
    })?;
    let set = std::fs::set_permissions(
        spec.upper,
        std::fs::Permissions::from_mode(meta.mode() & 0o7777),
    );
    set.map_err(|e| SetupError::rootfs("Cannot set the mode of the container's root", e))?;
    match std::os::unix::fs::chown(spec.upper, Some(meta.uid()), Some(meta.gid())) {
        // In a user namespace the layer's owner may not be mapped; the caller (root inside)
        // owns the upper dir then, which is what the container sees as root anyway.
        Err(_) if spec.user_namespace => Ok(()),
        r => r.map_err(|e| SetupError::rootfs("Cannot set the owner of the container's root", e)),
    }
}

fn upper_needs_tmpfs(upper: &Path) -> bool {
    nix::sys::statfs::statfs(upper)
        .map(|s| s.filesystem_type().0 == OVERLAYFS_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The writable layer lives in memory, as the microVM's does (its guest init puts a tmpfs upper
/// over the read-only root disk): a tmpfs mounted over the run dir in the container's own mount
/// namespace, so it vanishes with the container, and its pages are charged to the container's
/// memory cgroup (what the workload writes counts against `--memory`, as guest RAM does). The
/// host's disk sees no directory created or removed per run, which on a journaled filesystem
/// costs a millisecond or more. The paths stay the same.
///
/// Rootless runs keep the layer on the host's disk (tmpfs has no `user.*` xattrs, which
/// overlayfs needs in a user namespace, before Linux 6.6), except where the state dir is itself
/// on overlayfs (isol inside a container, or in the lab), which cannot be an upper layer.
fn writable_layer_on_tmpfs(spec: &RootfsSpec<'_>) -> Result<(), SetupError> {
    let run_dir = spec.upper.parent().ok_or(SetupError::UpperWithoutParent)?;
    nix::mount::mount(
        Some("tmpfs"),
        run_dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(|e| {
        let hint = if e == nix::errno::Errno::EACCES && spec.user_namespace {
            " (the container's root, an unprivileged uid on the host, must be able to reach it: make every directory above it searchable by others, chmod o+x)"
        } else {
            ""
        };
        SetupError::rootfs(
            format!(
                "Cannot mount a tmpfs for the writable layer at {}{hint}",
                run_dir.display()
            ),
            e,
        )
    })?;
    for d in [spec.upper, spec.work, spec.merged] {
        std::fs::create_dir(d)
            .map_err(|e| SetupError::rootfs(format!("Cannot create {}", d.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowers_are_listed_top_first_and_special_characters_escaped() {
        let layers = vec![PathBuf::from("/l/base"), PathBuf::from("/l/a:b,c")];
        let o = overlay_options(&layers, Path::new("/r/up"), Path::new("/r/work"), false);
        assert_eq!(
            o,
            "lowerdir=/l/a\\:b\\,c:/l/base,upperdir=/r/up,workdir=/r/work"
        );
        let o = overlay_options(&layers[..1], Path::new("/u"), Path::new("/w"), true);
        assert!(o.ends_with(",userxattr"));
    }
}
