//! The error type of the image store.
//!
//! Every message is one line, starts with a capital letter and says both what
//! is wrong and what to do about it, so the CLI can print it as is.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference names no image in the store.
    #[error(
        "Image '{reference}' not found in {root}; list images with `isol image ls` or import one with `isol image import FILE`"
    )]
    NotFound {
        /// The reference as given.
        reference: String,
        /// The store root.
        root: PathBuf,
    },
    /// A digest prefix matches more than one image.
    #[error(
        "Image reference '{reference}' is ambiguous, it matches {candidates}; give more digest characters or the full name:tag"
    )]
    Ambiguous {
        /// The reference as given.
        reference: String,
        /// The matching digests, comma separated.
        candidates: String,
    },
    /// Removing the image would delete files a running container or VM uses.
    #[error(
        "Image '{reference}' is in use by running {users}; stop them first, or pass --force to remove its name now and its files once they have stopped"
    )]
    InUse {
        /// The reference as given.
        reference: String,
        /// The instances, e.g. "container 0123456789ab, kvm 0123456789ac".
        users: String,
    },
    /// The reference is not well formed.
    #[error(
        "Invalid image reference '{reference}': {reason}; use NAME, NAME:TAG, sha256:<hex> or a digest prefix of at least 4 hex characters"
    )]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The import input is neither a docker-save tarball nor an OCI layout.
    #[error(
        "'{path}' is not a docker-save tarball or an OCI image layout: {reason}; pass a file written by `docker save -o FILE IMAGE` or an OCI layout (directory or tar)"
    )]
    NotAnImage {
        /// The input path.
        path: PathBuf,
        /// Why it was not recognised.
        reason: String,
    },
    /// A tar archive (the input or a layer) is malformed or truncated.
    #[error(
        "The tar archive {what} is malformed or truncated ({reason}); re-create it, e.g. with `docker save -o FILE IMAGE`"
    )]
    MalformedTar {
        /// The archive ("'x.tar'" or "layer sha256:…").
        what: String,
        /// What the tar reader reported.
        reason: String,
    },
    /// Content does not hash to the digest that names it.
    #[error(
        "Digest mismatch for {what}: expected {expected}, got {actual}; the image is corrupt or was modified, export it again"
    )]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The digest the metadata promised.
        expected: String,
        /// The digest of the actual content.
        actual: String,
    },
    /// A file referenced by the image metadata is absent.
    #[error("Missing {what} in {source_path}; the export is incomplete, export the image again")]
    MissingBlob {
        /// What is missing (a path or digest).
        what: String,
        /// Where it was looked for.
        source_path: PathBuf,
    },
    /// A JSON document of an image is malformed.
    #[error("Malformed {what}: {reason}; export the image again with a current docker or OCI tool")]
    Malformed {
        /// The document.
        what: String,
        /// The parser's complaint.
        reason: String,
    },
    /// The image uses a feature this store does not support.
    #[error("Unsupported {what}; {hint}")]
    Unsupported {
        /// The feature.
        what: String,
        /// What to do instead.
        hint: String,
    },
    /// `tag` was given but the input holds several images.
    #[error("Cannot apply tag '{tag}': the input holds {count} images; import it without a tag")]
    TagNeedsOneImage {
        /// The requested tag.
        tag: String,
        /// How many images the input holds.
        count: usize,
    },
    /// A layer entry would be written outside its layer directory.
    #[error(
        "Layer {layer} has an unsafe entry '{entry}' that would escape the layer directory; refusing this image, use a trusted image instead"
    )]
    UnsafePath {
        /// The layer digest.
        layer: String,
        /// The entry name.
        entry: String,
    },
    /// The host's busybox cannot seed the built-in default image.
    #[error(
        "{path} cannot be used for the built-in busybox image ({reason}); install Debian's busybox-static (`apt-get install busybox-static`)"
    )]
    Busybox {
        /// The busybox path.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },
    /// The store's own files are damaged.
    #[error(
        "The image store at {root} is damaged ({reason}); remove the affected image with `isol image rm` or delete the store and import again"
    )]
    CorruptStore {
        /// The store root.
        root: PathBuf,
        /// What is damaged.
        reason: String,
    },
    /// A filesystem operation failed.
    /// A layer goes past what isol unpacks: too deep, or expanding too far.
    #[error(
        "Layer {layer} {reason}; refusing this image as a denial of service, use a trusted image instead"
    )]
    LayerLimit {
        /// The layer's diff_id.
        layer: String,
        /// What it exceeds.
        reason: String,
    },
    /// The file or directory to import cannot be read.
    #[error(
        "Cannot read '{path}' to import it: {source}; give the path of a `docker save` tarball or an OCI layout, or - for standard input"
    )]
    ImportInput {
        /// The input as given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The message says so when the filesystem is full (ENOSPC, EDQUOT): see [`io_message`].
    #[error("{}", io_message(action, path, source))]
    Io {
        /// What was being done ("create", "read", …).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Whether `e` says the filesystem (or the user's quota on it) is full.
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// [`ImageError::Io`]'s message: a full filesystem is named as such, with where it is.
fn io_message(action: &str, path: &std::path::Path, source: &io::Error) -> String {
    if is_disk_full(source) {
        format!(
            "The filesystem of the image store is full: cannot {action} {}: {source}; free space on the filesystem holding {}, or point ISOL_HOME at a larger one",
            path.display(),
            mount_point(path).display()
        )
    } else {
        format!(
            "Cannot {action} {}: {source}; check permissions and free space, or point ISOL_HOME at a writable directory",
            path.display()
        )
    }
}

/// The mount point `path` is on (the deepest existing ancestor that is a mount point), for
/// messages; `path`'s deepest existing ancestor when that cannot be told.
fn mount_point(path: &std::path::Path) -> std::path::PathBuf {
    use std::os::unix::fs::MetadataExt;
    let mut p = path;
    while std::fs::symlink_metadata(p).is_err() {
        match p.parent() {
            Some(q) => p = q,
            None => return path.to_path_buf(),
        }
    }
    let Ok(dev) = std::fs::metadata(p).map(|m| m.dev()) else {
        return p.to_path_buf();
    };
    while let Some(q) = p.parent() {
        match std::fs::metadata(q) {
            Ok(m) if m.dev() == dev => p = q,
            _ => break,
        }
    }
    p.to_path_buf()
}

impl ImageError {
    /// Wraps an I/O error with the action and path it happened on.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_capitalised_line() {
        let errs = [
            ImageError::NotFound {
                reference: "foo".into(),
                root: "/var/lib/isol".into(),
            },
            ImageError::Io {
                action: "read",
                path: "/x".into(),
                source: io::Error::other("boom"),
            },
            ImageError::TagNeedsOneImage {
                tag: "a:b".into(),
                count: 2,
            },
            ImageError::Io {
                action: "write",
                path: "/x".into(),
                source: io::Error::from_raw_os_error(libc::ENOSPC),
            },
        ];
        for e in errs {
            let m = e.to_string();
            assert!(!m.contains('\n'), "{m}");
            assert!(
                m.chars().next().unwrap().is_uppercase() || m.starts_with('\''),
                "{m}"
            );
        }
        let m = ImageError::NotFound {
            reference: "foo".into(),
            root: "/var/lib/isol".into(),
        }
        .to_string();
        assert_eq!(
            m,
            "Image 'foo' not found in /var/lib/isol; list images with `isol image ls` or import one with `isol image import FILE`"
        );
    }

    #[test]
    fn a_full_filesystem_is_named_with_its_mount_point() {
        let dir = std::env::temp_dir().join("isol-no-such-dir/blobs/sha256/x");
        let e = ImageError::Io {
            action: "write",
            path: dir.clone(),
            source: io::Error::from_raw_os_error(libc::EDQUOT),
        };
        let m = e.to_string();
        assert!(
            m.starts_with(&format!(
                "The filesystem of the image store is full: cannot write {}: ",
                dir.display()
            )),
            "{m}"
        );
        // The deepest existing ancestor's mount point ("/" or the temporary directory's own).
        let at = mount_point(&dir);
        assert!(dir.starts_with(&at) && at.exists(), "{}", at.display());
        assert!(m.contains(&format!("holding {},", at.display())), "{m}");
    }
}
