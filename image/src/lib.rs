//! isol's image store: an OCI image layout on disk.
//!
//! # Layout
//!
//! The store root (see [`Store::default_root`]) is an [OCI image layout] that
//! other tools (skopeo, umoci, `oras`, …) can read:
//!
//! ```text
//! <root>/oci-layout                 {"imageLayoutVersion":"1.0.0"}
//! <root>/index.json                 one manifest descriptor per image name,
//!                                   annotation org.opencontainers.image.ref.name = "name:tag"
//! <root>/blobs/sha256/<hex>         manifests, configs and layers (content addressed)
//! ```
//!
//! Next to it isol keeps its own files:
//!
//! ```text
//! <root>/layers/sha256/<diffid-hex>/       a layer unpacked, usable as an overlayfs lower dir
//! <root>/layers/sha256/<diffid-hex>.done   marker: the unpacked layer is complete
//! <root>/lock                              flock(2) lock taken by every writer
//! <root>/in-use/<run id>                   the image a running container or VM uses (see `inuse.rs`)
//! <root>/vm-disks/v2-<digest hex>.ext4    an image's root disk for the kvm backend (see [`vm`])
//! <root>/tmp/                              staging area of imports (same filesystem)
//! ```
//!
//! # Crash safety and concurrency
//!
//! Every file is written to a temporary name and renamed into place; the
//! `index.json` is written last, so an image only becomes visible once all its
//! blobs are durable. Layers are unpacked into a `.tmp-*` directory next to
//! their final place and renamed, then the `.done` marker is written. All
//! writers (import, remove, unpack, building the default image) hold an
//! exclusive `flock` on `<root>/lock`; readers (list, resolve) need no lock
//! because every update is an atomic rename. [`Store::open`] sweeps leftover
//! temporaries when it can take the lock without waiting.
//!
//! # Whiteouts
//!
//! Layers are unpacked in overlayfs's on-disk format, like docker's overlay2
//! driver: `.wh.NAME` becomes a 0:0 character device `NAME`, and
//! `.wh..wh..opq` becomes the xattr `trusted.overlay.opaque=y` on its
//! directory (`user.overlay.opaque` when not running as root; mount the
//! overlay with `userxattr` then, see [`Store::opaque_xattr`]).
//!
//! [OCI image layout]: https://github.com/opencontainers/image-spec/blob/main/image-layout.md

mod busybox;
mod error;
mod fsutil;
mod import;
mod inuse;
mod unpack;
pub mod vm;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType,
};

pub use error::ImageError;
pub use inuse::{ImageUser, InUse};

use fsutil::{StoreLock, TMP_PREFIX, atomic_write, sha256_hex};

/// The annotation naming an image in `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// The name of the built-in default image.
pub const DEFAULT_IMAGE: &str = "busybox:latest";

/// One image as listed by `isol image ls`.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct ImageSummary {
    /// `name:tag`, or `<none>` for an untagged image.
    pub name: String,
    /// The manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// Sum of the (compressed) layer sizes and the config size, in bytes.
    pub size: u64,
    /// The config's `created` timestamp (RFC 3339), if any.
    pub created: Option<String>,
    /// Number of layers.
    pub layers: usize,
}

/// A resolved image: what the runtime needs to run it.
#[derive(Debug, Clone)]
pub struct Image {
    /// Name, digest, size.
    pub summary: ImageSummary,
    /// The process defaults from the image config.
    pub config: RuntimeConfig,
    /// The uncompressed layer digests (`rootfs.diff_ids`), lowest first.
    pub diff_ids: Vec<String>,
}

/// The process defaults of an image (the `config` object of its config).
#[derive(Debug, Clone, Default, serde::Serialize, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// The entrypoint (may be empty).
    pub entrypoint: Vec<String>,
    /// The default command / entrypoint arguments.
    pub cmd: Vec<String>,
    /// The working directory, if set.
    pub workdir: Option<String>,
    /// The user (`uid`, `uid:gid`, `name`…), if set.
    pub user: Option<String>,
}

/// Progress of an import, in bytes; `total` may grow once the layers are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportProgress {
    /// Bytes processed so far.
    pub done: u64,
    /// Bytes to process in all.
    pub total: u64,
}

/// One `index.json` entry.
#[derive(Debug, Clone)]
pub(crate) struct IndexRef {
    pub(crate) name: Option<String>,
    pub(crate) digest: String,
}

/// The local image store. Cheap to create; holds no open files.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The default store root: `$ISOL_HOME` if set; `/var/lib/isol` for root;
    /// otherwise `$XDG_DATA_HOME/isol` or `~/.local/share/isol`.
    pub fn default_root() -> PathBuf {
        if let Some(home) = std::env::var_os("ISOL_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(home);
        }
        if fsutil::is_root() {
            return PathBuf::from("/var/lib/isol");
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| Path::new(v).is_absolute())
        {
            return Path::new(&xdg).join("isol");
        }
        if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            return Path::new(&home).join(".local/share/isol");
        }
        PathBuf::from(format!("/tmp/isol-{}", nix::unistd::geteuid()))
    }

    /// Opens the store at `root`, creating the layout if missing, and sweeps
    /// leftovers of killed writers (when no other writer is active).
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, ImageError> {
        let store = Store {
            root: fsutil::absolute(&root.into()),
        };
        for dir in [store.blobs_dir(), store.layers_dir(), store.tmp_dir()] {
            fs::create_dir_all(&dir).map_err(ImageError::io("create", &dir))?;
        }
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            atomic_write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = store.index_path();
        if !index.exists() {
            let _lock = StoreLock::acquire(&store.lock_path())?;
            if !index.exists() {
                store.write_index(&[])?;
            }
        }
        if let Some(_lock) = StoreLock::try_acquire(&store.lock_path())? {
            store.sweep()?;
        }
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The xattr that marks an opaque directory in unpacked layers:
    /// `trusted.overlay.opaque` as root, `user.overlay.opaque` otherwise (then
    /// mount the overlay with the `userxattr` option).
    pub fn opaque_xattr() -> &'static str {
        unpack::opaque_xattr()
    }

    /// Where the kvm backend's root disks of this store's images are cached
    /// (`<root>/vm-disks`; [`vm::root`] builds them).
    pub fn vm_cache(&self) -> PathBuf {
        self.root.join("vm-disks")
    }

    /// All images (one entry per name; untagged images as `<none>`), sorted by name.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let mut out = Vec::new();
        for r in self.read_index()? {
            out.push(self.load(&r.digest, r.name.as_deref())?.summary);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.digest.cmp(&b.digest)));
        Ok(out)
    }

    /// Finds an image by `busybox`, `busybox:latest`, `name:tag`,
    /// `sha256:<hex>`, or a unique prefix (>= 4 hex chars, with or without
    /// `sha256:`) of a manifest digest. `busybox`/`busybox:latest` is built
    /// from the host's busybox when missing (see [`Store::ensure_default`]).
    pub fn resolve(&self, reference: &str) -> Result<Image, ImageError> {
        let image = self.resolve_inner(reference)?;
        tracing::debug!(
            reference,
            name = %image.summary.name,
            digest = %image.summary.digest,
            layers = image.diff_ids.len(),
            "image resolved"
        );
        Ok(image)
    }

    fn resolve_inner(&self, reference: &str) -> Result<Image, ImageError> {
        match self.find(reference) {
            Err(ImageError::NotFound { .. })
                if normalize_name(reference).ok().as_deref() == Some(DEFAULT_IMAGE) =>
            {
                self.ensure_default()?;
                let (name, digest) = self.find(reference)?;
                self.load(&digest, name.as_deref())
            }
            Err(e) => Err(e),
            Ok((name, digest)) => self.load(&digest, name.as_deref()),
        }
    }

    /// Removes an image: by name, drops that name; by digest, drops every
    /// name of that manifest. Then deletes blobs, unpacked layers and cached
    /// VM disks that no remaining image and no running instance uses.
    ///
    /// When the image's last name goes while a container or VM runs it, this
    /// fails with [`ImageError::InUse`] unless `force`; with `force` the names
    /// go now and the image's files stay until a later removal or import finds
    /// no instance using them. Returns what was removed and the instances that
    /// keep its files.
    pub fn remove(
        &self,
        reference: &str,
        force: bool,
    ) -> Result<(ImageSummary, Vec<ImageUser>), ImageError> {
        let _lock = StoreLock::acquire(&self.lock_path())?;
        let (name, digest) = self.find(reference)?;
        let summary = self.load(&digest, name.as_deref())?.summary;
        let by_name = name.is_some() && normalize_name(reference).ok() == name;
        let refs: Vec<IndexRef> = self
            .read_index()?
            .into_iter()
            .filter(|r| {
                if by_name {
                    r.name != name
                } else {
                    r.digest != digest
                }
            })
            .collect();
        let users: Vec<ImageUser> = if refs.iter().any(|r| r.digest == digest) {
            Vec::new()
        } else {
            self.users()?
                .into_iter()
                .filter(|(d, _)| *d == digest)
                .map(|(_, u)| u)
                .collect()
        };
        if !users.is_empty() && !force {
            return Err(ImageError::InUse {
                reference: reference.into(),
                users: users
                    .iter()
                    .map(|u| format!("{} {}", u.backend, u.id))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        self.write_index(&refs)?;
        self.gc(&refs)?;
        Ok((summary, users))
    }

    /// Deletes the kvm backend's cached root disks of image `digest`
    /// (`<root>/vm-disks/<format>-<hex>.ext4`, any format version), once its
    /// manifest is collected. Best effort: a
    /// disk that cannot be removed is only a cache entry, rebuilt or ignored later.
    fn remove_vm_disks(&self, digest: &str) {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let suffix = format!("-{hex}.ext4");
        let Ok(dir) = fs::read_dir(self.vm_cache()) else {
            return;
        };
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().ends_with(&suffix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// Imports a `docker save` tarball (old `<id>/layer.tar` form or the newer
    /// one with an OCI layout inside; gzip or not) or an OCI image layout (a
    /// directory, or a tar of one, optionally gzip). Every blob is verified
    /// against its digest and every layer against the config's
    /// `rootfs.diff_ids`. `tag` names the image when the input holds exactly
    /// one. An existing image of the same name is replaced. Returns one
    /// summary per name added.
    pub fn import(
        &self,
        path: &Path,
        tag: Option<&str>,
        progress: &mut dyn FnMut(ImportProgress),
    ) -> Result<Vec<ImageSummary>, ImageError> {
        let tag = match tag {
            Some(t) => Some(
                normalize_name(t).map_err(|reason| ImageError::InvalidReference {
                    reference: t.into(),
                    reason,
                })?,
            ),
            None => None,
        };
        // A pipe (`-` is standard input) cannot be sniffed and read twice: it is spooled to a
        // file of the store first, outside the lock.
        let spool = import::spool_if_stream(self, path)?;
        let input = spool.as_ref().map_or(path, |s| s.path());
        // The store lock is taken inside, only once the input is staged and verified, and held
        // until the index names the new images.
        let (refs, _lock) = import::import(self, input, tag.as_deref(), progress)?;
        let added = self.add_refs(&refs)?;
        added
            .iter()
            .map(|r| self.load(&r.digest, r.name.as_deref()).map(|i| i.summary))
            .collect()
    }

    /// The unpacked layer directories of `image`, lowest first, unpacking
    /// (and verifying) any layer not unpacked yet.
    pub fn unpack(&self, image: &Image) -> Result<Vec<PathBuf>, ImageError> {
        let dirs = image
            .diff_ids
            .iter()
            .map(|d| self.layer_dir(d))
            .collect::<Result<Vec<_>, _>>()?;
        if dirs.iter().all(|d| unpack::is_complete(d)) {
            tracing::debug!(layers = dirs.len(), "image layers already unpacked");
            return Ok(dirs);
        }
        // No store lock while unpacking: the work is proportional to the layers, and every
        // other isol on the store would wait for it. Each layer is unpacked into a temporary of
        // this process's; the lock is taken only to move it into place (unpack_layer_dir).
        let manifest = self.read_manifest(&image.summary.digest)?;
        if manifest.layers().len() != image.diff_ids.len() {
            return Err(self.corrupt(format!(
                "image {} has {} layers but {} diff_ids",
                image.summary.digest,
                manifest.layers().len(),
                image.diff_ids.len()
            )));
        }
        for ((layer, diff_id), dir) in manifest.layers().iter().zip(&image.diff_ids).zip(&dirs) {
            if unpack::is_complete(dir) {
                continue;
            }
            let blob = self.blob_path(layer.digest().as_ref())?;
            if !blob.exists() {
                return Err(self.corrupt(format!("layer blob {} is missing", layer.digest())));
            }
            let started = std::time::Instant::now();
            unpack::unpack_layer_dir(&blob, diff_id, dir, &self.lock_path())?;
            tracing::debug!(
                diff_id,
                dir = %dir.display(),
                took = ?started.elapsed(),
                "layer unpacked"
            );
        }
        Ok(dirs)
    }

    /// Builds the built-in default image `busybox:latest` from the host's
    /// `/bin/busybox` (Debian's busybox-static) unless present, and returns it.
    pub fn ensure_default(&self) -> Result<ImageSummary, ImageError> {
        self.ensure_default_from(Path::new(busybox::HOST_BUSYBOX))
    }

    /// Like [`Store::ensure_default`], with the busybox binary at `busybox`.
    pub fn ensure_default_from(&self, busybox: &Path) -> Result<ImageSummary, ImageError> {
        if let Ok((name, digest)) = self.find(DEFAULT_IMAGE) {
            return Ok(self.load(&digest, name.as_deref())?.summary);
        }
        let _lock = StoreLock::acquire(&self.lock_path())?;
        if let Ok((name, digest)) = self.find(DEFAULT_IMAGE) {
            return Ok(self.load(&digest, name.as_deref())?.summary);
        }
        let digest = busybox::build(self, busybox)?;
        let added = self.add_refs(&[IndexRef {
            name: Some(DEFAULT_IMAGE.into()),
            digest,
        }])?;
        Ok(self.load(&added[0].digest, Some(DEFAULT_IMAGE))?.summary)
    }

    // ---- paths ---------------------------------------------------------

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers/sha256")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn lock_path(&self) -> PathBuf {
        self.root.join("lock")
    }

    fn corrupt(&self, reason: String) -> ImageError {
        ImageError::CorruptStore {
            root: self.root.clone(),
            reason,
        }
    }

    /// `<root>/blobs/sha256/<hex>` of a digest.
    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = sha256_hex(digest)
            .ok_or_else(|| self.corrupt(format!("'{digest}' is not a sha256 digest")))?;
        Ok(self.blobs_dir().join(hex))
    }

    /// `<root>/layers/sha256/<hex>` of a diff_id.
    fn layer_dir(&self, diff_id: &str) -> Result<PathBuf, ImageError> {
        let hex = sha256_hex(diff_id)
            .ok_or_else(|| self.corrupt(format!("'{diff_id}' is not a sha256 diff_id")))?;
        Ok(self.layers_dir().join(hex))
    }

    // ---- blobs ---------------------------------------------------------

    /// Stores `bytes` as a blob (no-op if present); returns its digest.
    pub(crate) fn write_blob(&self, bytes: &[u8]) -> Result<String, ImageError> {
        let digest = fsutil::sha256_digest(bytes);
        let path = self.blob_path(&digest)?;
        if !path.exists() {
            let tmp = self.tmp_dir().join(fsutil::tmp_name("blob"));
            let res = (|| {
                fs::write(&tmp, bytes).map_err(ImageError::io("write", &tmp))?;
                self.commit_file(&tmp, &digest)
            })();
            if res.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            res?;
        }
        Ok(digest)
    }

    /// Moves an already verified file (in `<root>/tmp`) into the blob store
    /// as `digest`; if the blob exists the file is left alone.
    pub(crate) fn commit_file(&self, file: &Path, digest: &str) -> Result<(), ImageError> {
        let path = self.blob_path(digest)?;
        if path.exists() {
            return Ok(());
        }
        fs::File::open(file)
            .and_then(|f| f.sync_all())
            .map_err(ImageError::io("sync", file))?;
        fs::rename(file, &path).map_err(ImageError::io("move into the blob store", &path))?;
        fsutil::sync_dir(&self.blobs_dir())
    }

    fn read_blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                self.corrupt(format!("blob {digest} is missing"))
            } else {
                ImageError::io("read", &path)(e)
            }
        })
    }

    pub(crate) fn read_manifest(&self, digest: &str) -> Result<ImageManifest, ImageError> {
        let bytes = self.read_blob(digest)?;
        ImageManifest::from_reader(&bytes[..])
            .map_err(|e| self.corrupt(format!("manifest {digest} does not parse: {e}")))
    }

    fn read_config(&self, digest: &str) -> Result<ImageConfiguration, ImageError> {
        let bytes = self.read_blob(digest)?;
        ImageConfiguration::from_reader(&bytes[..])
            .map_err(|e| self.corrupt(format!("config {digest} does not parse: {e}")))
    }

    // ---- index ---------------------------------------------------------

    pub(crate) fn read_index(&self) -> Result<Vec<IndexRef>, ImageError> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(ImageError::io("read", &path))?;
        let index = ImageIndex::from_reader(&bytes[..])
            .map_err(|e| self.corrupt(format!("index.json does not parse: {e}")))?;
        Ok(index
            .manifests()
            .iter()
            .map(|d| IndexRef {
                name: d
                    .annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_NAME_ANNOTATION))
                    .cloned(),
                digest: d.digest().to_string(),
            })
            .collect())
    }

    fn write_index(&self, refs: &[IndexRef]) -> Result<(), ImageError> {
        let mut manifests = Vec::with_capacity(refs.len());
        for r in refs {
            let size = fs::metadata(self.blob_path(&r.digest)?)
                .map_err(|_| self.corrupt(format!("manifest blob {} is missing", r.digest)))?
                .len();
            let digest: oci_spec::image::Digest =
                r.digest.parse().map_err(|e| self.corrupt(format!("{e}")))?;
            let mut d = Descriptor::new(MediaType::ImageManifest, size, digest);
            if let Some(name) = &r.name {
                d.set_annotations(Some(HashMap::from([(
                    REF_NAME_ANNOTATION.into(),
                    name.clone(),
                )])));
            }
            manifests.push(d);
        }
        let index = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .map_err(|e| self.corrupt(format!("cannot build index.json: {e}")))?;
        let json = index
            .to_string_pretty()
            .map_err(|e| self.corrupt(format!("cannot serialise index.json: {e}")))?;
        atomic_write(&self.index_path(), json.as_bytes())
    }

    /// Adds names (replacing existing ones of the same name) and untagged
    /// images (unless already present), then collects garbage. Returns the
    /// refs actually added.
    fn add_refs(&self, new: &[IndexRef]) -> Result<Vec<IndexRef>, ImageError> {
        let mut refs = self.read_index()?;
        let mut added = Vec::new();
        for n in new {
            match &n.name {
                Some(name) => refs.retain(|r| r.name.as_ref() != Some(name)),
                None if refs.iter().any(|r| r.digest == n.digest) => {
                    // Already known (possibly under a name): keep it, report it.
                    let existing = refs.iter().find(|r| r.digest == n.digest).cloned();
                    added.extend(existing);
                    continue;
                }
                None => {}
            }
            refs.push(n.clone());
            added.push(n.clone());
        }
        self.write_index(&refs)?;
        self.gc(&refs)?;
        Ok(added)
    }

    // ---- lookup --------------------------------------------------------

    /// (name it was found under, manifest digest).
    fn find(&self, reference: &str) -> Result<(Option<String>, String), ImageError> {
        let refs = self.read_index()?;
        let invalid = |reason: &str| ImageError::InvalidReference {
            reference: reference.into(),
            reason: reason.into(),
        };
        let is_hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(hex) = reference.strip_prefix("sha256:") {
            if !is_hex(hex) || hex.len() < 4 || hex.len() > 64 {
                return Err(invalid(
                    "a digest is sha256: followed by 4 to 64 hex characters",
                ));
            }
            return self.find_prefix(&refs, reference, &hex.to_ascii_lowercase());
        }
        let name = normalize_name(reference).map_err(|r| invalid(&r))?;
        if let Some(r) = refs
            .iter()
            .find(|r| r.name.as_deref() == Some(name.as_str()))
        {
            return Ok((r.name.clone(), r.digest.clone()));
        }
        if is_hex(reference) && reference.len() >= 4 && reference.len() <= 64 {
            return self.find_prefix(&refs, reference, &reference.to_ascii_lowercase());
        }
        Err(ImageError::NotFound {
            reference: reference.into(),
            root: self.root.clone(),
        })
    }

    fn find_prefix(
        &self,
        refs: &[IndexRef],
        reference: &str,
        hex_prefix: &str,
    ) -> Result<(Option<String>, String), ImageError> {
        let full = format!("sha256:{hex_prefix}");
        let digests: BTreeSet<&str> = refs
            .iter()
            .map(|r| r.digest.as_str())
            .filter(|d| d.starts_with(&full))
            .collect();
        match digests.len() {
            0 => Err(ImageError::NotFound {
                reference: reference.into(),
                root: self.root.clone(),
            }),
            1 => {
                let digest = digests.into_iter().next().unwrap_or_default().to_string();
                let name = refs
                    .iter()
                    .filter(|r| r.digest == digest)
                    .find_map(|r| r.name.clone());
                Ok((name, digest))
            }
            _ => Err(ImageError::Ambiguous {
                reference: reference.into(),
                candidates: digests.into_iter().collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Loads an image by manifest digest, labelled `name`.
    fn load(&self, digest: &str, name: Option<&str>) -> Result<Image, ImageError> {
        let manifest = self.read_manifest(digest)?;
        let config_digest = manifest.config().digest().to_string();
        let config = self.read_config(&config_digest)?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers().len() {
            return Err(self.corrupt(format!(
                "image {digest} has {} layers but {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        let size =
            manifest.config().size() + manifest.layers().iter().map(|l| l.size()).sum::<u64>();
        let rc = config.config().clone().unwrap_or_default();
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        Ok(Image {
            summary: ImageSummary {
                name: name.unwrap_or("<none>").to_string(),
                digest: digest.to_string(),
                size,
                created: config.created().clone(),
                layers: manifest.layers().len(),
            },
            config: RuntimeConfig {
                env: rc.env().clone().unwrap_or_default(),
                entrypoint: rc.entrypoint().clone().unwrap_or_default(),
                cmd: rc.cmd().clone().unwrap_or_default(),
                workdir: non_empty(rc.working_dir()),
                user: non_empty(rc.user()),
            },
            diff_ids,
        })
    }

    // ---- housekeeping --------------------------------------------------

    /// Deletes blobs, unpacked layers and cached VM disks that no image in
    /// `refs` and no running instance uses. Caller holds the lock.
    fn gc(&self, refs: &[IndexRef]) -> Result<(), ImageError> {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        let in_use = self.users()?.into_iter().map(|(digest, _)| digest);
        let digests: BTreeSet<String> = refs
            .iter()
            .map(|r| r.digest.clone())
            .chain(in_use)
            .collect();
        for digest in digests {
            blobs.insert(digest.clone());
            let manifest = self.read_manifest(&digest)?;
            let config_digest = manifest.config().digest().to_string();
            for l in manifest.layers() {
                blobs.insert(l.digest().to_string());
            }
            layers.extend(
                self.read_config(&config_digest)?
                    .rootfs()
                    .diff_ids()
                    .iter()
                    .cloned(),
            );
            blobs.insert(config_digest);
        }
        for entry in read_dir(&self.blobs_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let digest = format!("sha256:{name}");
            if sha256_hex(&digest).is_some() && !blobs.contains(&digest) {
                fsutil::remove_any(&entry.path())?;
                self.remove_vm_disks(&digest);
            }
        }
        for entry in read_dir(&self.layers_dir())? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hex = name.strip_suffix(unpack::DONE_SUFFIX).unwrap_or(&name);
            let digest = format!("sha256:{hex}");
            if sha256_hex(&digest).is_some() && !layers.contains(&digest) {
                let dir = self.layers_dir().join(hex);
                // Marker first, so a half-deleted dir never looks complete.
                fsutil::remove_any(&unpack::done_marker(&dir))?;
                if dir.exists() {
                    let tmp = self.layers_dir().join(fsutil::tmp_name("gc"));
                    fs::rename(&dir, &tmp).map_err(ImageError::io("move away", &dir))?;
                    fsutil::remove_any(&tmp)?;
                }
            }
        }
        Ok(())
    }

    /// Removes temporaries left by killed writers, and killed runs' in-use
    /// marks. Caller holds the lock.
    fn sweep(&self) -> Result<(), ImageError> {
        self.users()?;
        // Temporaries of a live isol are work in progress outside the lock (unpacking a layer,
        // staging or spooling an import): only those of dead processes are leftovers.
        let leftover =
            |entry: &fs::DirEntry| !fsutil::tmp_owner_alive(&entry.file_name().to_string_lossy());
        for entry in read_dir(&self.tmp_dir())? {
            if leftover(&entry) {
                fsutil::remove_any(&entry.path())?;
            }
        }
        for dir in [self.root.clone(), self.blobs_dir(), self.layers_dir()] {
            for entry in read_dir(&dir)? {
                if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) && leftover(&entry) {
                    make_writable(&entry.path());
                    fsutil::remove_any(&entry.path())?;
                }
            }
        }
        Ok(())
    }
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>, ImageError> {
    fs::read_dir(dir)
        .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
        .map_err(ImageError::io("list", dir))
}

/// Gives the owner write permission on every directory below `path`, so a
/// tree unpacked with read-only directories can be deleted when not root.
fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = fs::symlink_metadata(path)
        && m.is_dir()
    {
        let _ = fs::set_permissions(
            path,
            fs::Permissions::from_mode(m.permissions().mode() | 0o700),
        );
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                make_writable(&e.path());
            }
        }
    }
}

/// Normalises an image name to `name:tag`: adds `:latest`, drops
/// `docker.io/library/` and `docker.io/`. Errors say what is wrong.
pub fn normalize_name(reference: &str) -> Result<String, String> {
    let r = reference.trim();
    if r.is_empty() {
        return Err("the name is empty".into());
    }
    if r.contains('@') {
        return Err("name@digest references are not supported".into());
    }
    if r.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("names cannot contain whitespace".into());
    }
    let last_slash = r.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match r[last_slash..].rfind(':') {
        Some(i) => (&r[..last_slash + i], &r[last_slash + i + 1..]),
        None => (r, "latest"),
    };
    let repo = [
        "docker.io/library/",
        "index.docker.io/library/",
        "docker.io/",
        "index.docker.io/",
    ]
    .iter()
    .find_map(|p| repo.strip_prefix(p))
    .unwrap_or(repo);
    if repo.is_empty() || repo.starts_with('/') || repo.ends_with('/') {
        return Err("the repository part is empty".into());
    }
    if tag.is_empty()
        || tag.len() > 128
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err("a tag is 1 to 128 letters, digits, '_', '.' or '-'".into());
    }
    Ok(format!("{repo}:{tag}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        (dir, store)
    }

    /// Imports the sample image `app:v1`.
    fn import_app(dir: &Path, s: &Store) {
        let tar = dir.join("save.tar");
        let image = testutil::sample_image("app:v1");
        fs::write(&tar, testutil::docker_save_tar(&[image], false)).unwrap();
        s.import(&tar, None, &mut |_| {}).unwrap();
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_name("busybox").unwrap(), "busybox:latest");
        assert_eq!(
            normalize_name("docker.io/library/busybox:1.36").unwrap(),
            "busybox:1.36"
        );
        assert_eq!(
            normalize_name("localhost:5000/a/b").unwrap(),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(
            normalize_name("localhost:5000/a/b:v1").unwrap(),
            "localhost:5000/a/b:v1"
        );
        assert!(normalize_name("").is_err());
        assert!(normalize_name("a b").is_err());
        assert!(normalize_name("a:").is_err());
        assert!(normalize_name("a@sha256:00").is_err());
    }

    #[test]
    fn layout_is_valid_oci() {
        let (_d, s) = store();
        let layout: serde_json::Value =
            serde_json::from_slice(&fs::read(s.root().join("oci-layout")).unwrap()).unwrap();
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");
        oci_spec::image::OciLayout::from_file(s.root().join("oci-layout")).unwrap();
        let index = ImageIndex::from_file(s.root().join("index.json")).unwrap();
        assert_eq!(index.schema_version(), 2);
        assert!(index.manifests().is_empty());
        assert!(s.list().unwrap().is_empty());
        // Reopening keeps everything.
        Store::open(s.root()).unwrap();
        assert!(s.root().join("blobs/sha256").is_dir());
    }

    #[test]
    fn remove_deletes_the_cached_vm_disk() {
        let (_d, s) = store();
        let img = s.resolve("busybox").unwrap();
        let hex = img
            .summary
            .digest
            .strip_prefix("sha256:")
            .unwrap()
            .to_owned();
        let disks = s.root().join("vm-disks");
        fs::create_dir_all(&disks).unwrap();
        let mine = disks.join(format!("v1-{hex}.ext4"));
        let other = disks.join(format!("v1-{}.ext4", "0".repeat(64)));
        fs::write(&mine, b"disk").unwrap();
        fs::write(&other, b"disk").unwrap();
        s.remove("busybox", false).unwrap();
        assert!(!mine.exists(), "the image's VM disk is left behind");
        assert!(other.exists(), "another image's VM disk was removed");
    }

    #[test]
    fn an_image_in_use_is_kept_until_its_instances_end() {
        let (d, s) = store();
        let img = s.resolve("busybox").unwrap();
        let dirs = s.unpack(&img).unwrap();
        let mark = s.mark_in_use(&img, "0123456789ab", "container").unwrap();
        let err = s.remove("busybox", false).unwrap_err();
        assert!(matches!(err, ImageError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("container 0123456789ab"), "{err}");
        assert_eq!(s.list().unwrap().len(), 1, "a refused removal removed");
        // Forced: the name goes, the files stay, also through another image's import.
        let (_, users) = s.remove("busybox", true).unwrap();
        assert_eq!(users[0].id, "0123456789ab");
        assert!(s.list().unwrap().is_empty());
        import_app(d.path(), &s);
        assert!(
            dirs.iter().all(|d| d.is_dir()),
            "layers in use were deleted"
        );
        assert!(s.blob_path(&img.summary.digest).unwrap().exists());
        // Once the instance is gone, the next collection takes them.
        drop(mark);
        s.remove("app:v1", false).unwrap();
        assert!(dirs.iter().all(|d| !d.exists()), "unused layers were kept");
        assert!(!s.blob_path(&img.summary.digest).unwrap().exists());
    }

    #[test]
    fn a_run_marks_its_image_while_a_writer_holds_the_store() {
        let (_d, s) = store();
        let img = s.resolve("busybox").unwrap();
        // An import, say, holds the store lock for minutes: a run must not wait for it.
        let writer = StoreLock::acquire(&s.lock_path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (s2, img2) = (s.clone(), img.clone());
        std::thread::spawn(move || {
            // The mark (and its lock) is dropped before the answer goes: the removal below
            // must find a finished run's mark, not race a live one.
            let marked = s2.mark_in_use(&img2, "0123456789ab", "container").is_ok();
            let _ = tx.send(marked);
        });
        let marked = rx.recv_timeout(std::time::Duration::from_secs(60));
        drop(writer);
        assert_eq!(marked, Ok(true), "the run waited for the store lock");
        // A mark being made (created, not yet locked and written) is neither a user nor dead.
        let making = s.root().join("in-use/0123456789ac");
        fs::write(&making, b"").unwrap();
        s.remove("busybox", false).unwrap();
        assert!(making.exists(), "a mark being made was deleted");
    }

    #[test]
    fn a_dead_runs_mark_does_not_hold_an_image() {
        let (_d, s) = store();
        let img = s.resolve("busybox").unwrap();
        // A mark whose isol was killed: the file stays, its lock went with the process.
        fs::create_dir_all(s.root().join("in-use")).unwrap();
        let stale = s.root().join("in-use/0123456789ab");
        fs::write(&stale, format!("{} kvm\n", img.summary.digest)).unwrap();
        s.remove("busybox", false).unwrap();
        assert!(!stale.exists(), "a dead run's mark was left");
        assert!(matches!(
            s.mark_in_use(&img, "0123456789ac", "kvm"),
            Err(ImageError::NotFound { .. })
        ));
    }

    /// Found by tests/soak.sh (2026-12-07): an isol SIGKILLed while making its mark left an
    /// empty `in-use/<id>`, taken for a mark being made for a minute. Marks are made under a
    /// temporary name of their process now: a dead one's goes at the next look.
    #[test]
    fn a_mark_a_dead_process_was_making_goes_at_once() {
        let (_d, s) = store();
        let img = s.resolve("busybox").unwrap();
        let dir = s.root().join("in-use");
        let mark = s.mark_in_use(&img, "0123456789ab", "container").unwrap();
        let names = || -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        // Under its run's name, with its content, only.
        assert_eq!(names(), ["0123456789ab"]);
        let text = fs::read_to_string(dir.join("0123456789ab")).unwrap();
        assert_eq!(text, format!("{} container\n", img.summary.digest));
        // A dead process's half-made mark, and a live one's (this process's).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dead_mark = dir.join(format!(".tmp-in-use-{dead}-1-0"));
        let live_mark = dir.join(format!(".tmp-in-use-{}-1-0", std::process::id()));
        fs::write(&dead_mark, b"").unwrap();
        fs::write(&live_mark, b"").unwrap();
        let users = s.users().unwrap();
        assert_eq!(users.len(), 1, "{users:?}");
        assert_eq!(users[0].1.id, "0123456789ab");
        assert!(!dead_mark.exists(), "a dead process's mark was left");
        assert!(live_mark.exists(), "a mark being made was deleted");
        fs::remove_file(&live_mark).unwrap();
        drop(mark);
        assert!(names().is_empty(), "{:?}", names());
    }

    #[test]
    fn default_root_honours_isol_home() {
        // Only this test touches ISOL_HOME in this crate's unit tests.
        // SAFETY: no other thread of this test binary reads or writes ISOL_HOME.
        unsafe { std::env::set_var("ISOL_HOME", "/tmp/isol-home-test") };
        assert_eq!(Store::default_root(), PathBuf::from("/tmp/isol-home-test"));
        // SAFETY: as above.
        unsafe { std::env::remove_var("ISOL_HOME") };
        if fsutil::is_root() {
            assert_eq!(Store::default_root(), PathBuf::from("/var/lib/isol"));
        }
    }

    #[test]
    fn default_image_resolve_by_name_prefix_digest() {
        let (_d, s) = store();
        // Resolving busybox builds it on demand.
        let img = s.resolve("busybox").unwrap();
        assert_eq!(img.summary.name, "busybox:latest");
        assert_eq!(img.summary.layers, 1);
        assert_eq!(img.config.cmd, vec!["/bin/sh".to_string()]);
        assert!(img.config.env[0].starts_with("PATH=/usr/local/sbin:"));
        let digest = img.summary.digest.clone();
        let hex = digest.strip_prefix("sha256:").unwrap();
        for r in [
            "busybox:latest",
            digest.as_str(),
            &hex[..4],
            &hex[..12],
            &format!("sha256:{}", &hex[..8]),
        ] {
            assert_eq!(s.resolve(r).unwrap().summary.digest, digest, "{r}");
        }
        let list = s.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0], img.summary);
        assert!(list[0].size > 500_000);
        // The index is readable by oci-spec and names the image.
        let index = ImageIndex::from_file(s.root().join("index.json")).unwrap();
        assert_eq!(
            index.manifests()[0].annotations().as_ref().unwrap()[REF_NAME_ANNOTATION],
            "busybox:latest"
        );
        assert!(matches!(
            s.resolve("nope"),
            Err(ImageError::NotFound { .. })
        ));
        assert!(matches!(
            s.resolve("sha256:zz"),
            Err(ImageError::InvalidReference { .. })
        ));
        // ensure_default is idempotent.
        assert_eq!(s.ensure_default().unwrap().digest, digest);
    }

    #[test]
    fn ambiguous_prefix_and_remove_gc() {
        let (d, s) = store();
        s.ensure_default().unwrap();
        import_app(d.path(), &s);
        let list = s.list().unwrap();
        assert_eq!(
            list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            ["app:v1", "busybox:latest"]
        );
        // A one-hex-char-shorter-than-allowed prefix is just a (missing) name.
        assert!(matches!(s.resolve("abc"), Err(ImageError::NotFound { .. })));
        // Find a shared prefix, if any, of length >= 4 is unlikely; fake ambiguity via "sha256:" + common chars.
        let a = &list[0].digest[7..];
        let b = &list[1].digest[7..];
        let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        if common >= 4 {
            assert!(matches!(
                s.resolve(&a[..common]),
                Err(ImageError::Ambiguous { .. })
            ));
        }
        // Unpack both, then remove one: its blobs and layers go, the other's stay.
        let app = s.resolve("app:v1").unwrap();
        let app_dirs = s.unpack(&app).unwrap();
        let bb = s.resolve("busybox").unwrap();
        let bb_dirs = s.unpack(&bb).unwrap();
        assert!(app_dirs.iter().all(|d| d.is_dir()));
        let (removed, _) = s.remove("app:v1", false).unwrap();
        assert_eq!(removed.name, "app:v1");
        assert!(app_dirs.iter().all(|d| !d.exists()));
        assert!(bb_dirs.iter().all(|d| d.is_dir()));
        assert!(!s.blob_path(&app.summary.digest).unwrap().exists());
        assert!(s.blob_path(&bb.summary.digest).unwrap().exists());
        let blobs = fs::read_dir(s.blobs_dir()).unwrap().count();
        assert_eq!(blobs, 3, "manifest, config and one layer of busybox remain");
        assert!(matches!(
            s.remove("app:v1", false),
            Err(ImageError::NotFound { .. })
        ));
        // Remove by digest prefix.
        s.remove(&bb.summary.digest[7..19], false).unwrap();
        assert!(s.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(s.blobs_dir()).unwrap().count(), 0);
    }

    #[test]
    fn ambiguity_is_reported() {
        let (_d, s) = store();
        let refs = vec![
            IndexRef {
                name: Some("a:1".into()),
                digest: format!("sha256:abcd{}", "0".repeat(60)),
            },
            IndexRef {
                name: Some("b:1".into()),
                digest: format!("sha256:abcd{}", "1".repeat(60)),
            },
        ];
        let err = s.find_prefix(&refs, "abcd", "abcd").unwrap_err();
        assert!(matches!(err, ImageError::Ambiguous { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with("Image reference 'abcd' is ambiguous")
        );
        assert_eq!(
            s.find_prefix(&refs, "abcd0", "abcd0").unwrap().0.as_deref(),
            Some("a:1")
        );
    }

    #[test]
    fn sweep_removes_leftovers() {
        let (_d, s) = store();
        // A killed writer's temporary: its pid is no longer running.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let junk = s.layers_dir().join(format!(".tmp-unpack-{dead}-2-3"));
        fs::create_dir_all(junk.join("sub")).unwrap();
        fs::write(s.tmp_dir().join("stage"), b"x").unwrap();
        fs::write(s.root().join(".tmp-write-1"), b"x").unwrap();
        Store::open(s.root()).unwrap();
        assert!(!junk.exists());
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
        assert!(!s.root().join(".tmp-write-1").exists());
    }
}
