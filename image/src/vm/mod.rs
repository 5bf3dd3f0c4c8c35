//! What a microVM boots an image from: its layers flattened into one root filesystem.
//!
//! The VMM reads no image store: it boots the files it is given. This module makes them,
//! behind one entry point, [`root`]: given an image's unpacked layers (lowest first, as
//! [`crate::Store::unpack`] returns them) and a cache directory, it returns the path of
//! the image's root filesystem in the form asked for, from the cache or built into it
//! now:
//!
//! - [`RootForm::Disk`]: a read-only ext4 disk image, which the VMM attaches as
//!   virtio-blk (`isol run --backend kvm`; [`disk`]);
//! - [`RootForm::Cpio`]: a newc cpio archive, which the VMM puts in the guest's
//!   initramfs, its own entries appended ([`cpio`]).
//!
//! Both merge the layers with overlayfs's whiteout rules ([`merge`]), as the container
//! backend's overlay mount does.

pub mod cpio;
pub mod disk;
pub mod merge;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use cpio::CpioError;
pub use disk::DiskError;
pub use merge::MergeError;

/// The form of an image's root filesystem a VM boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootForm {
    /// An ext4 image, attached read-only as the VM's root disk:
    /// `<cache>/v2-<digest hex>.ext4`.
    Disk,
    /// A newc cpio archive for the initramfs: `<cache>/<hash>.cpio`, named by the layer
    /// directories' identity ([`cpio`]).
    Cpio,
}

/// An image as [`root`] flattens it.
#[derive(Debug, Clone, Copy)]
pub struct VmImage<'a> {
    /// The image's manifest digest, `sha256:<hex>`: it names the cached disk.
    pub digest: &'a str,
    /// Its unpacked layer directories, lowest first.
    pub layers: &'a [PathBuf],
}

/// Errors making a VM's root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum VmRootError {
    /// A layer is not a readable directory.
    #[error(
        "Root filesystem layer {path} is not a readable directory: {source}; check the unpacked image"
    )]
    Layer {
        /// Path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The ext4 disk.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The cpio archive.
    #[error(transparent)]
    Cpio(#[from] CpioError),
}

/// Where [`root_reporting`] is in building a root disk, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Merging the layers into one tree (of hard links to the layers' files).
    Merging,
    /// Writing the disk: about `done` of `total` bytes.
    Writing {
        /// Bytes written so far.
        done: u64,
        /// Bytes it will hold, about.
        total: u64,
    },
}

/// The root filesystem of `image` in the form `form`, from `cache_dir` or built into it
/// now (under a unique name, renamed into place: concurrent callers never see a partial
/// file). Returns its path.
pub fn root(cache_dir: &Path, image: VmImage<'_>, form: RootForm) -> Result<PathBuf, VmRootError> {
    root_reporting(cache_dir, image, form, &mut |_| {})
}

/// The cached root disk of the image `digest`, if it was built.
pub fn cached_disk(cache_dir: &Path, digest: &str) -> Option<PathBuf> {
    disk::disk_path(cache_dir, digest)
        .ok()
        .filter(|p| p.is_file())
}

/// [`root`], telling `report` how the build of a root disk goes (a cpio archive: nothing).
pub fn root_reporting(
    cache_dir: &Path,
    image: VmImage<'_>,
    form: RootForm,
    report: &mut dyn FnMut(Progress),
) -> Result<PathBuf, VmRootError> {
    for l in image.layers {
        fs::read_dir(l).map_err(|source| VmRootError::Layer {
            path: l.clone(),
            source,
        })?;
    }
    Ok(match form {
        RootForm::Disk => disk::ensure_disk(cache_dir, image.digest, image.layers, report)?,
        RootForm::Cpio => cpio::ensure_cpio(cache_dir, image.layers)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_that_is_no_directory_is_refused_before_anything_is_built() {
        let t = tempfile::tempdir().unwrap();
        let digest = format!("sha256:{}", "0".repeat(64));
        let layers = [t.path().join("nonexistent-layer")];
        for form in [RootForm::Disk, RootForm::Cpio] {
            let image = VmImage {
                digest: &digest,
                layers: &layers,
            };
            let e = root(&t.path().join("cache"), image, form).unwrap_err();
            assert!(matches!(e, VmRootError::Layer { .. }), "{e}");
        }
        assert!(!t.path().join("cache").exists());
    }
}
