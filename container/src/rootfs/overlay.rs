//! The union filesystem: the image layers as read-only overlayfs lowers, a per-run writable upper.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use super::RootfsSpec;

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

pub(super) fn mount(spec: &RootfsSpec<'_>) -> Result<(), String> {
    if spec.layers.is_empty() {
        return Err("The image has no layers; re-import it".into());
    }
    let opts = overlay_options(spec.layers, spec.upper, spec.work, spec.rootless);
    if opts.len() >= 4096 {
        return Err(format!(
            "The image has too many layers ({}) for one overlay mount; flatten it",
            spec.layers.len()
        ));
    }
    nix::mount::mount(
        Some("overlay"),
        spec.merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| {
        format!(
            "Cannot mount the overlay rootfs at {}: {e}; check that the kernel has overlayfs (`modprobe overlay`)",
            spec.merged.display()
        )
    })
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
