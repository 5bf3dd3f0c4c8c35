//! Importing `docker save` tarballs and OCI image layouts.
//!
//! The input is first *staged*: a tar (optionally gzip) is read once, each
//! regular file copied into `<root>/tmp/.tmp-import-*/` while its sha256 is
//! computed (symlinks and hardlinks, which old `docker save` uses for
//! duplicate layers, are recorded and followed); a directory is staged lazily,
//! file by file. Then the format is recognised (`manifest.json` → docker
//! save, in either the old `<id>/layer.tar` form or the newer one whose paths
//! are `blobs/sha256/<hex>`; `oci-layout` + `index.json` → OCI layout), every
//! blob checked against its digest, every layer decompressed, checked to be a
//! tar with safe paths and hashed against the config's `rootfs.diff_ids`.
//! Only then are the staged files renamed into the blob store; the caller
//! writes `index.json` last.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType,
};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::fsutil::{self, Compression, CountingReader, HashingReader, sha256_hex};
use crate::unpack::error_chain;
use crate::{ImageError, ImportProgress, IndexRef, Store, normalize_name};

/// JSON documents (manifests, configs, index) larger than this are refused.
const MAX_JSON: u64 = 64 << 20;

/// Progress bookkeeping around the caller's callback.
struct Progress<'a> {
    done: u64,
    total: u64,
    cb: &'a mut dyn FnMut(ImportProgress),
}

impl Progress<'_> {
    fn report(&mut self) {
        (self.cb)(ImportProgress {
            done: self.done.min(self.total),
            total: self.total,
        });
    }
}

/// A file of the input, copied into the staging dir and hashed.
#[derive(Debug, Clone)]
struct Staged {
    path: PathBuf,
    digest: String,
    size: u64,
}

/// The input's files, by normalised relative path.
enum Source {
    Dir {
        root: PathBuf,
        staging: PathBuf,
        cache: HashMap<String, Staged>,
    },
    Tar {
        files: HashMap<String, Staged>,
        links: HashMap<String, String>,
    },
}

impl Source {
    fn get(
        &mut self,
        rel: &str,
        progress: &mut Progress<'_>,
    ) -> Result<Option<Staged>, ImageError> {
        let Some(rel) = norm(rel) else {
            return Ok(None);
        };
        match self {
            Source::Dir {
                root,
                staging,
                cache,
            } => {
                if let Some(s) = cache.get(&rel) {
                    return Ok(Some(s.clone()));
                }
                let src = root.join(&rel);
                let mut f = match File::open(&src) {
                    Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
                    Ok(_) => return Ok(None),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(ImageError::io("read", &src)(e)),
                };
                let dst = staging.join(format!("f{}", cache.len()));
                let staged =
                    copy_hashing(&mut f, &dst, &src.display().to_string(), None, &mut |n| {
                        progress.done += n;
                        progress.report();
                    })?;
                cache.insert(rel, staged.clone());
                Ok(Some(staged))
            }
            Source::Tar { files, links } => {
                let mut rel = rel;
                for _ in 0..40 {
                    if let Some(s) = files.get(&rel) {
                        return Ok(Some(s.clone()));
                    }
                    match links.get(&rel) {
                        Some(target) => rel = target.clone(),
                        None => return Ok(None),
                    }
                }
                Ok(None)
            }
        }
    }

    fn has(&self, rel: &str) -> bool {
        match self {
            Source::Dir { root, .. } => root.join(rel).is_file(),
            Source::Tar { files, links } => files.contains_key(rel) || links.contains_key(rel),
        }
    }

    /// Whether blob sizes are counted into the progress when fetched.
    fn counts_fetches(&self) -> bool {
        matches!(self, Source::Dir { .. })
    }
}

/// `a/./b//c` → `a/b/c`; `None` for `..`, empty or absolute-escaping paths.
fn norm(rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Copies `src` to a new file `dst` while hashing; checks the length when
/// `expected_len` is given. `tick` gets the byte count of each chunk.
fn copy_hashing(
    src: &mut dyn Read,
    dst: &Path,
    what: &str,
    expected_len: Option<u64>,
    tick: &mut dyn FnMut(u64),
) -> Result<Staged, ImageError> {
    let mut out = File::create_new(dst).map_err(ImageError::io("create", dst))?;
    let mut hasher = Sha256::new();
    // 64 KiB: under the allocators' mmap thresholds (glibc's 128 KiB, ASan's large blocks), so a
    // blob's copy does not map and unmap a fresh buffer (docs/fuzzing.md, "Where the time goes").
    let mut buf = vec![0u8; 64 << 10];
    let mut size = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(ImageError::MalformedTar {
                    what: what.to_string(),
                    reason: error_chain(&e),
                });
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(ImageError::io("write", dst))?;
        size += n as u64;
        tick(n as u64);
    }
    if let Some(len) = expected_len
        && len != size
    {
        return Err(ImageError::MalformedTar {
            what: what.to_string(),
            reason: format!("an entry ends after {size} of {len} bytes"),
        });
    }
    Ok(Staged {
        path: dst.to_path_buf(),
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        size,
    })
}

/// Reads the whole input tar into `staging`.
fn stage_tar(
    input: &Path,
    staging: &Path,
    progress: &mut Progress<'_>,
) -> Result<Source, ImageError> {
    let what = format!("'{}'", input.display());
    let malformed = |e: &io::Error| ImageError::MalformedTar {
        what: what.clone(),
        reason: error_chain(e),
    };
    let mut file = File::open(input).map_err(ImageError::io("open", input))?;
    progress.total += file.metadata().map(|m| m.len()).unwrap_or(0);
    progress.report();
    let compression = fsutil::sniff(&mut file, input)?;
    let count = Rc::new(Cell::new(0u64));
    let counted = CountingReader {
        inner: file,
        count: count.clone(),
    };
    let raw = fsutil::decompress(counted, compression, &what)?;
    let tar_len = Rc::new(Cell::new(0u64));
    let mut archive = tar::Archive::new(CountingReader {
        inner: raw,
        count: tar_len.clone(),
    });

    let mut files = HashMap::new();
    let mut links = HashMap::new();
    let mut entries_end = 0u64;
    let mut seen = 0usize;
    for entry in archive.entries().map_err(|e| malformed(&e))? {
        let mut entry = entry.map_err(|e| {
            if seen == 0 {
                ImageError::NotAnImage {
                    path: input.into(),
                    reason: format!("not a tar archive ({})", error_chain(&e)),
                }
            } else {
                malformed(&e)
            }
        })?;
        seen += 1;
        let size = entry.header().entry_size().map_err(|e| malformed(&e))?;
        entries_end = entry.raw_file_position() + size.div_ceil(512) * 512;
        let path = entry.path().map_err(|e| malformed(&e))?;
        let Some(rel) = norm(&path.to_string_lossy()) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() || kind == tar::EntryType::Continuous {
            let dst = staging.join(format!("f{}", files.len()));
            let staged = copy_hashing(&mut entry, &dst, &what, Some(size), &mut |_| {
                progress.done = count.get();
                progress.report();
            })?;
            files.insert(rel, staged);
        } else if kind.is_symlink() || kind.is_hard_link() {
            let Some(target) = entry.link_name().map_err(|e| malformed(&e))? else {
                continue;
            };
            let target = target.to_string_lossy();
            let resolved = if kind.is_hard_link() || target.starts_with('/') {
                norm(&target)
            } else {
                let parent = rel.rsplit_once('/').map_or("", |(p, _)| p);
                norm(&format!("{parent}/{target}"))
            };
            if let Some(t) = resolved {
                links.insert(rel, t);
            }
        }
    }
    if seen == 0 {
        return Err(ImageError::NotAnImage {
            path: input.into(),
            reason: "it is empty or not a tar archive".into(),
        });
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| malformed(&e))?;
    if tar_len.get() < entries_end + 1024 {
        return Err(ImageError::MalformedTar {
            what,
            reason: "the archive stops before its end-of-archive marker".into(),
        });
    }
    progress.done = count.get();
    progress.report();
    Ok(Source::Tar { files, links })
}

/// An image found in the input, staged and checked, not yet committed.
struct Pending {
    names: Vec<String>,
    config: Staged,
    config_json: ImageConfiguration,
    layers: Vec<Staged>,
    /// The original manifest (OCI input), committed as is.
    manifest: Option<Staged>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

/// Context for error messages and fetching.
struct Ctx<'a, 'b> {
    input: &'a Path,
    src: Source,
    progress: Progress<'b>,
}

impl Ctx<'_, '_> {
    fn missing(&self, what: String) -> ImageError {
        ImageError::MissingBlob {
            what,
            source_path: self.input.into(),
        }
    }

    fn get(&mut self, rel: &str, what: &str) -> Result<Staged, ImageError> {
        match self.src.get(rel, &mut self.progress)? {
            Some(s) => Ok(s),
            None => Err(self.missing(format!("{what} '{rel}'"))),
        }
    }

    fn read_json(&mut self, staged: &Staged, what: &str) -> Result<Vec<u8>, ImageError> {
        if staged.size > MAX_JSON {
            return Err(ImageError::Malformed {
                what: what.into(),
                reason: format!("{} bytes is too large", staged.size),
            });
        }
        fs::read(&staged.path).map_err(ImageError::io("read", &staged.path))
    }

    /// Fetches a blob of an OCI layout by descriptor, checking digest and size.
    fn blob(&mut self, desc: &Descriptor, what: &str) -> Result<Staged, ImageError> {
        let digest = desc.digest().to_string();
        if sha256_hex(&digest).is_none() {
            return Err(ImageError::Unsupported {
                what: format!("digest '{digest}' of {what}"),
                hint: "only sha256 digests are supported, re-export the image".into(),
            });
        }
        if self.src.counts_fetches() {
            self.progress.total += desc.size();
        }
        let staged = self.get(&format!("blobs/sha256/{}", &digest[7..]), what)?;
        check_digest(&staged, &digest, what)?;
        if staged.size != desc.size() {
            return Err(ImageError::Malformed {
                what: what.into(),
                reason: format!(
                    "size is {} but its descriptor says {}",
                    staged.size,
                    desc.size()
                ),
            });
        }
        Ok(staged)
    }
}

fn check_digest(staged: &Staged, expected: &str, what: &str) -> Result<(), ImageError> {
    if staged.digest != expected {
        return Err(ImageError::DigestMismatch {
            what: what.into(),
            expected: expected.into(),
            actual: staged.digest.clone(),
        });
    }
    Ok(())
}

/// The digest named by a path like `blobs/sha256/<hex>` or `<hex>.json`.
fn digest_in_path(rel: &str) -> Option<String> {
    let name = rel.rsplit('/').next()?;
    let hex = name.strip_suffix(".json").unwrap_or(name);
    let d = format!("sha256:{hex}");
    let by_dir = rel.contains("sha256/") || name.ends_with(".json");
    (by_dir && sha256_hex(&d).is_some()).then_some(d)
}

fn parse_config(bytes: &[u8], what: &str) -> Result<ImageConfiguration, ImageError> {
    serde_json::from_slice(bytes).map_err(|e| ImageError::Malformed {
        what: what.into(),
        reason: e.to_string(),
    })
}

fn docker_images(cx: &mut Ctx<'_, '_>) -> Result<Vec<Pending>, ImageError> {
    let staged = cx.get("manifest.json", "manifest.json")?;
    let bytes = cx.read_json(&staged, "manifest.json")?;
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&bytes).map_err(|e| ImageError::NotAnImage {
            path: cx.input.into(),
            reason: format!("manifest.json is not docker-save's ({e})"),
        })?;
    let mut out = Vec::new();
    for e in entries {
        let config = cx.get(&e.config, "image config")?;
        if let Some(d) = digest_in_path(&e.config) {
            check_digest(&config, &d, &format!("image config '{}'", e.config))?;
        }
        let what = format!("image config '{}'", e.config);
        let config_json = parse_config(&cx.read_json(&config, &what)?, &what)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let staged = cx.get(l, "layer")?;
            if let Some(d) = digest_in_path(l) {
                check_digest(&staged, &d, &format!("layer '{l}'"))?;
            }
            layers.push(staged);
        }
        let names = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .filter_map(|t| normalize_name(t).ok())
            .collect();
        out.push(Pending {
            names,
            config,
            config_json,
            layers,
            manifest: None,
        });
    }
    Ok(out)
}

/// The name of an OCI index entry.
fn oci_name(desc: &Descriptor, input: &Path) -> Option<String> {
    let ann = desc.annotations().as_ref()?;
    if let Some(n) = ann.get("io.containerd.image.name") {
        return normalize_name(n).ok();
    }
    let r = ann.get(crate::REF_NAME_ANNOTATION)?;
    if r.contains(':') || r.contains('/') {
        return normalize_name(r).ok();
    }
    // Only a tag: name the image after the input file ("busybox.tar" → busybox:TAG).
    let stem = input.file_name()?.to_string_lossy();
    let stem = stem
        .split('.')
        .next()
        .filter(|s| !s.is_empty())?
        .to_ascii_lowercase();
    normalize_name(&format!("{stem}:{r}")).ok()
}

fn is_index(media_type: &MediaType) -> bool {
    matches!(media_type, MediaType::ImageIndex)
        || media_type.to_string() == "application/vnd.docker.distribution.manifest.list.v2+json"
}

fn oci_images(cx: &mut Ctx<'_, '_>) -> Result<Vec<Pending>, ImageError> {
    let index_staged = cx.get("index.json", "index.json")?;
    let bytes = cx.read_json(&index_staged, "index.json")?;
    let index = ImageIndex::from_reader(&bytes[..]).map_err(|e| ImageError::Malformed {
        what: "index.json".into(),
        reason: format!(
            "{e} ({})",
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .err()
                .map_or(String::new(), |e| e.to_string())
        ),
    })?;
    let mut out = Vec::new();
    for desc in index.manifests() {
        let names: Vec<String> = oci_name(desc, cx.input).into_iter().collect();
        let mut desc = desc.clone();
        // Follow nested indexes down to the manifest for this host's platform.
        for _ in 0..8 {
            if !is_index(desc.media_type()) {
                break;
            }
            let staged = cx.blob(&desc, "nested image index")?;
            let bytes = cx.read_json(&staged, "nested image index")?;
            let nested =
                ImageIndex::from_reader(&bytes[..]).map_err(|e| ImageError::Malformed {
                    what: "nested image index".into(),
                    reason: e.to_string(),
                })?;
            let host = oci_spec::image::Arch::default();
            let pick = nested
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        *p.os() == oci_spec::image::Os::Linux && *p.architecture() == host
                    })
                })
                .or_else(|| (nested.manifests().len() == 1).then(|| &nested.manifests()[0]));
            desc = pick
                .ok_or_else(|| ImageError::Unsupported {
                    what: format!("multi-platform index without a linux/{host} image"),
                    hint: format!("export the linux/{host} image only (e.g. `docker save --platform linux/{host}`)"),
                })?
                .clone();
        }
        let manifest_staged = cx.blob(&desc, "image manifest")?;
        let bytes = cx.read_json(&manifest_staged, "image manifest")?;
        let manifest =
            ImageManifest::from_reader(&bytes[..]).map_err(|e| ImageError::Malformed {
                what: format!("image manifest {}", desc.digest()),
                reason: e.to_string(),
            })?;
        let config = cx.blob(manifest.config(), "image config")?;
        let what = format!("image config {}", manifest.config().digest());
        let config_json = parse_config(&cx.read_json(&config, &what)?, &what)?;
        let mut layers = Vec::new();
        for l in manifest.layers() {
            layers.push(cx.blob(l, &format!("layer {}", l.digest()))?);
        }
        out.push(Pending {
            names,
            config,
            config_json,
            layers,
            manifest: Some(manifest_staged),
        });
    }
    Ok(out)
}

/// Decompresses a layer, checks it is a tar with safe paths; returns its diff_id.
fn layer_diff_id(staged: &Staged) -> Result<(String, Compression), ImageError> {
    let mut f = File::open(&staged.path).map_err(ImageError::io("open", &staged.path))?;
    let compression = fsutil::sniff(&mut f, &staged.path)?;
    let what = format!("layer {}", staged.digest);
    // The limits unpacking enforces, checked at import already: such an image never enters.
    let limit = fsutil::expansion_limit(staged.size);
    let mut archive = tar::Archive::new(HashingReader::new(fsutil::LimitedReader {
        inner: fsutil::decompress(f, compression, &what)?,
        limit,
        read: 0,
    }));
    let malformed = |e: io::Error| {
        if fsutil::is_too_large(&e) {
            crate::unpack::too_large(&staged.digest, limit, staged.size)
        } else {
            ImageError::MalformedTar {
                what: what.clone(),
                reason: error_chain(&e),
            }
        }
    };
    for entry in archive.entries().map_err(malformed)? {
        let entry = entry.map_err(malformed)?;
        let path = entry.path().map_err(malformed)?;
        crate::unpack::entry_components(&staged.digest, &path)?;
    }
    let (diff, _) = archive.into_inner().finish().map_err(malformed)?;
    Ok((diff, compression))
}

/// Stages and checks the input, commits its blobs into `store`, and returns
/// the refs to add to the index (the caller holds the store lock).
/// A spooled copy of a streamed import input, removed when dropped.
pub(crate) struct Spool(PathBuf);

impl Spool {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Checks that `input` can be read, and copies it to a file of the store's when it is a stream
/// (`-` for standard input, a pipe, a character device such as /dev/stdin), which cannot be
/// sniffed and then read from the start. Regular files and directories are read in place.
pub(crate) fn spool_if_stream(store: &Store, input: &Path) -> Result<Option<Spool>, ImageError> {
    let from_stdin = input == Path::new("-");
    if !from_stdin {
        let meta = fs::metadata(input).map_err(|source| ImageError::ImportInput {
            path: input.into(),
            source,
        })?;
        if meta.is_dir() || meta.is_file() {
            return Ok(None);
        }
    }
    if from_stdin && io::IsTerminal::is_terminal(&io::stdin()) {
        return Err(ImageError::ImportInput {
            path: input.into(),
            source: io::Error::other(
                "standard input is a terminal, not an image (pipe one in: docker save IMAGE | isol image import -)",
            ),
        });
    }
    let tmp = store.tmp_dir();
    fs::create_dir_all(&tmp).map_err(ImageError::io("create", &tmp))?;
    let spool = Spool(tmp.join(fsutil::tmp_name("stdin")));
    let mut out = File::create(spool.path()).map_err(ImageError::io("create", spool.path()))?;
    let copied = if from_stdin {
        io::copy(&mut io::stdin().lock(), &mut out)
    } else {
        File::open(input)
            .map_err(|source| ImageError::ImportInput {
                path: input.into(),
                source,
            })
            .map(|mut f| io::copy(&mut f, &mut out))?
    };
    copied.map_err(ImageError::io("write", spool.path()))?;
    Ok(Some(spool))
}

pub(crate) fn import(
    store: &Store,
    input: &Path,
    tag: Option<&str>,
    progress: &mut dyn FnMut(ImportProgress),
) -> Result<(Vec<IndexRef>, fsutil::StoreLock), ImageError> {
    let staging = store.tmp_dir().join(fsutil::tmp_name("import"));
    fs::create_dir(&staging).map_err(ImageError::io("create", &staging))?;
    let res = import_staged(store, input, tag, &staging, progress);
    let _ = fsutil::remove_any(&staging);
    res
}

fn import_staged(
    store: &Store,
    input: &Path,
    tag: Option<&str>,
    staging: &Path,
    cb: &mut dyn FnMut(ImportProgress),
) -> Result<(Vec<IndexRef>, fsutil::StoreLock), ImageError> {
    let meta = fs::metadata(input).map_err(ImageError::io("read", input))?;
    let mut progress = Progress {
        done: 0,
        total: 0,
        cb,
    };
    let src = if meta.is_dir() {
        Source::Dir {
            root: input.to_path_buf(),
            staging: staging.to_path_buf(),
            cache: HashMap::new(),
        }
    } else {
        stage_tar(input, staging, &mut progress)?
    };
    let mut cx = Ctx {
        input,
        src,
        progress,
    };
    let mut images = if cx.src.has("manifest.json") {
        docker_images(&mut cx)?
    } else if cx.src.has("index.json") && cx.src.has("oci-layout") {
        let staged = cx.get("oci-layout", "oci-layout")?;
        let bytes = cx.read_json(&staged, "oci-layout")?;
        oci_spec::image::OciLayout::from_reader(&bytes[..]).map_err(|e| {
            ImageError::NotAnImage {
                path: input.into(),
                reason: format!("bad oci-layout file ({e})"),
            }
        })?;
        oci_images(&mut cx)?
    } else {
        return Err(ImageError::NotAnImage {
            path: input.into(),
            reason: "it has neither manifest.json (docker save) nor oci-layout and index.json (OCI layout)".into(),
        });
    };
    if images.is_empty() {
        return Err(ImageError::NotAnImage {
            path: input.into(),
            reason: "it holds no images".into(),
        });
    }
    if let Some(tag) = tag {
        if images.len() != 1 {
            return Err(ImageError::TagNeedsOneImage {
                tag: tag.into(),
                count: images.len(),
            });
        }
        images[0].names = vec![tag.to_string()];
    }

    // Verify layers against diff_ids.
    cx.progress.total += images
        .iter()
        .flat_map(|i| &i.layers)
        .map(|l| l.size)
        .sum::<u64>();
    let mut verified: HashMap<String, (String, Compression)> = HashMap::new();
    for img in &images {
        let diff_ids = img.config_json.rootfs().diff_ids();
        if diff_ids.len() != img.layers.len() {
            return Err(ImageError::Malformed {
                what: format!("image config {}", img.config.digest),
                reason: format!(
                    "it lists {} rootfs.diff_ids for {} layers",
                    diff_ids.len(),
                    img.layers.len()
                ),
            });
        }
        for (i, (layer, expected)) in img.layers.iter().zip(diff_ids).enumerate() {
            let (diff, _) = match verified.get(&layer.digest) {
                Some(v) => v.clone(),
                None => {
                    let v = layer_diff_id(layer)?;
                    cx.progress.done += layer.size;
                    cx.progress.report();
                    verified.insert(layer.digest.clone(), v.clone());
                    v
                }
            };
            if &diff != expected {
                return Err(ImageError::DigestMismatch {
                    what: format!(
                        "layer {} (uncompressed, rootfs.diff_ids[{i}])",
                        layer.digest
                    ),
                    expected: expected.clone(),
                    actual: diff,
                });
            }
        }
    }

    // Everything so far (staging, verifying) is proportional to the input and ran without the
    // store lock; committing the blobs (renames) and the caller's index update take it.
    let lock = fsutil::StoreLock::acquire(&store.lock_path())?;
    // Commit blobs; the manifest last.
    let mut refs = Vec::new();
    for img in &images {
        let mut layer_descs = Vec::new();
        for layer in &img.layers {
            store.commit_file(&layer.path, &layer.digest)?;
            let media = match verified.get(&layer.digest).map(|v| v.1) {
                Some(Compression::Gzip) => MediaType::ImageLayerGzip,
                _ => MediaType::ImageLayer,
            };
            layer_descs.push(descriptor(media, layer.size, &layer.digest)?);
        }
        store.commit_file(&img.config.path, &img.config.digest)?;
        let digest = match &img.manifest {
            Some(m) => {
                store.commit_file(&m.path, &m.digest)?;
                m.digest.clone()
            }
            None => {
                let manifest = ImageManifestBuilder::default()
                    .schema_version(2u32)
                    .media_type(MediaType::ImageManifest)
                    .config(descriptor(
                        MediaType::ImageConfig,
                        img.config.size,
                        &img.config.digest,
                    )?)
                    .layers(layer_descs)
                    .build()
                    .map_err(|e| ImageError::Malformed {
                        what: "generated manifest".into(),
                        reason: e.to_string(),
                    })?;
                let json = manifest.to_string().map_err(|e| ImageError::Malformed {
                    what: "generated manifest".into(),
                    reason: e.to_string(),
                })?;
                store.write_blob(json.as_bytes())?
            }
        };
        if img.names.is_empty() {
            refs.push(IndexRef {
                name: None,
                digest: digest.clone(),
            });
        }
        for n in &img.names {
            refs.push(IndexRef {
                name: Some(n.clone()),
                digest: digest.clone(),
            });
        }
    }
    cx.progress.done = cx.progress.total;
    cx.progress.report();
    Ok((refs, lock))
}

fn descriptor(media: MediaType, size: u64, digest: &str) -> Result<Descriptor, ImageError> {
    let d = digest
        .parse::<oci_spec::image::Digest>()
        .map_err(|e| ImageError::Malformed {
            what: format!("digest {digest}"),
            reason: e.to_string(),
        })?;
    Ok(Descriptor::new(media, size, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{self, E, TestImage};
    use std::os::unix::fs::FileTypeExt;

    fn setup() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn import_bytes(
        s: &Store,
        dir: &Path,
        name: &str,
        bytes: &[u8],
    ) -> Result<Vec<crate::ImageSummary>, ImageError> {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        s.import(&p, None, &mut |_| {})
    }

    fn check_sample(s: &Store, name: &str) {
        let img = s.resolve(name).unwrap();
        assert_eq!(img.summary.layers, 2);
        assert_eq!(img.summary.created.as_deref(), Some("2024-01-02T03:04:05Z"));
        assert_eq!(img.config.entrypoint, ["/bin/entry"]);
        assert_eq!(img.config.cmd, ["arg"]);
        assert_eq!(img.config.workdir.as_deref(), Some("/work"));
        assert_eq!(img.config.user, None);
        assert_eq!(img.config.env, ["PATH=/usr/bin:/bin", "FOO=bar"]);
        let dirs = s.unpack(&img).unwrap();
        assert_eq!(dirs.len(), 2);
        assert_eq!(fs::read(dirs[0].join("a/gone")).unwrap(), b"gone");
        assert!(
            fs::symlink_metadata(dirs[1].join("a/gone"))
                .unwrap()
                .file_type()
                .is_char_device()
        );
        assert!(crate::unpack::get_xattr(&dirs[1].join("opq"), Store::opaque_xattr()).is_some());
        // The store is still a valid OCI layout pointing at existing blobs.
        let index = ImageIndex::from_file(s.root().join("index.json")).unwrap();
        for m in index.manifests() {
            let manifest =
                ImageManifest::from_file(s.blob_path(m.digest().as_ref()).unwrap()).unwrap();
            for l in manifest.layers() {
                assert!(s.blob_path(l.digest().as_ref()).unwrap().is_file());
            }
        }
    }

    #[test]
    fn docker_save_old_form_plain_and_gzip() {
        let (d, s) = setup();
        let mut calls = Vec::new();
        let p = d.path().join("save.tar");
        fs::write(
            &p,
            testutil::docker_save_tar(&[testutil::sample_image("docker.io/library/app:v1")], false),
        )
        .unwrap();
        let added = s.import(&p, None, &mut |pr| calls.push(pr)).unwrap();
        assert_eq!(added.len(), 1);
        assert_eq!(added[0].name, "app:v1");
        assert!(!calls.is_empty());
        let last = calls.last().unwrap();
        assert_eq!(last.done, last.total);
        check_sample(&s, "app:v1");
        // Gzip layers inside, and the whole tarball gzipped, with a tag.
        let gz = testutil::gzip(&testutil::docker_save_tar(
            &[testutil::sample_image("x:y")],
            true,
        ));
        let p = d.path().join("save.tar.gz");
        fs::write(&p, gz).unwrap();
        let added = s.import(&p, Some("renamed"), &mut |_| {}).unwrap();
        assert_eq!(added[0].name, "renamed:latest");
        check_sample(&s, "renamed");
        assert!(matches!(s.resolve("x:y"), Err(ImageError::NotFound { .. })));
        assert_eq!(
            fs::read_dir(s.tmp_dir()).unwrap().count(),
            0,
            "staging cleaned"
        );
    }

    #[test]
    fn docker_save_dedup_symlinks_and_multi_image() {
        let (d, s) = setup();
        let layer = testutil::layer_tar(&[E::File("f", b"same", 0o644)]);
        let a = TestImage {
            repo_tags: vec!["a:1".into(), "a:2".into()],
            layers: vec![layer.clone()],
        };
        let b = TestImage {
            repo_tags: vec![],
            layers: vec![
                layer.clone(),
                testutil::layer_tar(&[E::File("g", b"g", 0o600)]),
            ],
        };
        let mut files = testutil::docker_save_files(&[a, b], false);
        // Make b's first layer.tar a symlink to a's, as docker does for duplicates.
        let a_layer = files
            .iter()
            .find(|(p, _)| p.ends_with("layer.tar"))
            .unwrap()
            .0
            .clone();
        let b_layer = files
            .iter()
            .filter(|(p, _)| p.ends_with("layer.tar"))
            .nth(1)
            .unwrap()
            .0
            .clone();
        files.retain(|(p, _)| *p != b_layer);
        let mut bld = tar::Builder::new(Vec::new());
        for (p, data) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            bld.append_data(&mut h, p, &data[..]).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        bld.append_link(&mut h, &b_layer, format!("../{a_layer}"))
            .unwrap();
        let tar = bld.into_inner().unwrap();
        let added = import_bytes(&s, d.path(), "multi.tar", &tar).unwrap();
        let mut names: Vec<_> = added.iter().map(|a| a.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["<none>", "a:1", "a:2"]);
        assert_eq!(s.list().unwrap().len(), 3);
        // --tag with several images is refused.
        let p = d.path().join("multi.tar");
        assert!(matches!(
            s.import(&p, Some("t"), &mut |_| {}),
            Err(ImageError::TagNeedsOneImage { count: 2, .. })
        ));
        // Reimport is idempotent.
        import_bytes(&s, d.path(), "multi.tar", &tar).unwrap();
        assert_eq!(s.list().unwrap().len(), 3);
    }

    #[test]
    fn docker_save_new_form() {
        let (d, s) = setup();
        let files = testutil::oci_layout_files(&[testutil::sample_image("new:form")], false, true);
        let added = import_bytes(&s, d.path(), "new.tar", &testutil::tar_of_files(&files)).unwrap();
        assert_eq!(added[0].name, "new:form");
        check_sample(&s, "new:form");
    }

    #[test]
    fn oci_layout_dir_and_tar() {
        let (d, s) = setup();
        let files = testutil::oci_layout_files(&[testutil::sample_image("oci:dir")], true, false);
        let layout = d.path().join("layout");
        testutil::write_files(&layout, &files);
        let mut calls = 0;
        let added = s.import(&layout, None, &mut |_| calls += 1).unwrap();
        assert!(calls > 0);
        assert_eq!(added[0].name, "oci:dir");
        check_sample(&s, "oci:dir");
        // The manifest is stored as is: same digest as in the layout.
        let index = ImageIndex::from_file(layout.join("index.json")).unwrap();
        assert_eq!(added[0].digest, index.manifests()[0].digest().to_string());

        // A gzipped tar of a layout whose ref.name is only a tag: named after the file.
        let mut files =
            testutil::oci_layout_files(&[testutil::sample_image("ignored:v2")], false, false);
        let idx = files.iter_mut().find(|(p, _)| p == "index.json").unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&idx.1).unwrap();
        v["manifests"][0]["annotations"] =
            serde_json::json!({ "org.opencontainers.image.ref.name": "v2" });
        idx.1 = serde_json::to_vec(&v).unwrap();
        let gz = testutil::gzip(&testutil::tar_of_files(&files));
        let added = import_bytes(&s, d.path(), "myimg.oci.tar.gz", &gz).unwrap();
        assert_eq!(added[0].name, "myimg:v2");
        check_sample(&s, "myimg:v2");
    }

    #[test]
    fn malformed_inputs() {
        let (d, s) = setup();
        // Not a tar.
        let err = import_bytes(&s, d.path(), "x.tar", b"hello, this is not a tar").unwrap_err();
        assert!(matches!(err, ImageError::NotAnImage { .. }), "{err}");
        assert!(err.to_string().starts_with("'"), "{err}");
        assert!(
            err.to_string()
                .contains("x.tar' is not a docker-save tarball or an OCI image layout: "),
            "{err}"
        );
        let err = import_bytes(&s, d.path(), "empty.tar", b"").unwrap_err();
        assert!(matches!(err, ImageError::NotAnImage { .. }), "{err}");
        // A tar without image metadata.
        let err = import_bytes(
            &s,
            d.path(),
            "t.tar",
            &testutil::tar_of_files(&[("a".into(), b"x".to_vec())]),
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::NotAnImage { .. }), "{err}");
        // Truncated in the middle of an entry, and at an entry boundary.
        let good = testutil::docker_save_tar(&[testutil::sample_image("t:1")], false);
        let err =
            import_bytes(&s, d.path(), "trunc.tar", &good[..good.len() / 2 + 100]).unwrap_err();
        assert!(matches!(err, ImageError::MalformedTar { .. }), "{err}");
        let err = import_bytes(&s, d.path(), "trunc2.tar", &good[..good.len() - 1024]).unwrap_err();
        assert!(matches!(err, ImageError::MalformedTar { .. }), "{err}");
        let gz = testutil::gzip(&good);
        let err = import_bytes(&s, d.path(), "trunc.tar.gz", &gz[..gz.len() - 200]).unwrap_err();
        assert!(matches!(err, ImageError::MalformedTar { .. }), "{err}");
        // A layer whose content does not match the config's diff_ids.
        let mut files = testutil::docker_save_files(&[testutil::sample_image("t:1")], false);
        let l = files
            .iter_mut()
            .find(|(p, _)| p.ends_with("layer.tar"))
            .unwrap();
        l.1 = testutil::layer_tar(&[E::File("evil", b"x", 0o644)]);
        let err =
            import_bytes(&s, d.path(), "mism.tar", &testutil::tar_of_files(&files)).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        // A config whose content does not match its file name.
        let mut files = testutil::docker_save_files(&[testutil::sample_image("t:1")], false);
        let c = files
            .iter_mut()
            .find(|(p, _)| p.ends_with(".json") && !p.contains('/') && p != "manifest.json")
            .unwrap();
        c.1.push(b' ');
        let err =
            import_bytes(&s, d.path(), "cfg.tar", &testutil::tar_of_files(&files)).unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        // A layer that is not a tar.
        let img = TestImage {
            repo_tags: vec!["bad:1".into()],
            layers: vec![b"garbage garbage".repeat(100)],
        };
        let err = import_bytes(
            &s,
            d.path(),
            "badlayer.tar",
            &testutil::docker_save_tar(&[img], false),
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::MalformedTar { .. }), "{err}");
        // A layer with a path traversal.
        let img = TestImage {
            repo_tags: vec!["evil:1".into()],
            layers: vec![testutil::tar_with_raw_name(b"../../etc/x", b"x")],
        };
        let err = import_bytes(
            &s,
            d.path(),
            "evil.tar",
            &testutil::docker_save_tar(&[img], false),
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::UnsafePath { .. }), "{err}");
        // OCI layout: a missing blob, and a modified blob.
        let files = testutil::oci_layout_files(&[testutil::sample_image("o:1")], true, false);
        let layer_path = {
            let m: serde_json::Value =
                serde_json::from_slice(&files.iter().find(|(p, _)| p == "index.json").unwrap().1)
                    .unwrap();
            let md = m["manifests"][0]["digest"].as_str().unwrap().to_string();
            let man: serde_json::Value = serde_json::from_slice(
                &files
                    .iter()
                    .find(|(p, _)| *p == format!("blobs/sha256/{}", &md[7..]))
                    .unwrap()
                    .1,
            )
            .unwrap();
            format!(
                "blobs/sha256/{}",
                &man["layers"][1]["digest"].as_str().unwrap()[7..]
            )
        };
        let missing: Vec<_> = files
            .iter()
            .filter(|(p, _)| *p != layer_path)
            .cloned()
            .collect();
        let dir = d.path().join("missing");
        testutil::write_files(&dir, &missing);
        let err = s.import(&dir, None, &mut |_| {}).unwrap_err();
        assert!(matches!(err, ImageError::MissingBlob { .. }), "{err}");
        let err = import_bytes(
            &s,
            d.path(),
            "missing.tar",
            &testutil::tar_of_files(&missing),
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::MissingBlob { .. }), "{err}");
        let mut modified = files.clone();
        let l = modified.iter_mut().find(|(p, _)| *p == layer_path).unwrap();
        l.1[20] ^= 0xff;
        let err = import_bytes(
            &s,
            d.path(),
            "modified.tar",
            &testutil::tar_of_files(&modified),
        )
        .unwrap_err();
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        // Nothing was added and no staging is left over.
        assert!(s.list().unwrap().is_empty());
        assert_eq!(fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
        assert_eq!(fs::read_dir(s.blobs_dir()).unwrap().count(), 0);
        assert!(!err.to_string().contains('\n'));
    }

    #[test]
    fn unpacking_does_not_hold_the_store_lock_and_sweeps_spare_it() {
        let (d, s) = setup();
        let p = d.path().join("save.tar");
        fs::write(
            &p,
            testutil::docker_save_tar(&[testutil::sample_image("nolock:1")], false),
        )
        .unwrap();
        s.import(&p, None, &mut |_| {}).unwrap();
        let img = s.resolve("nolock:1").unwrap();
        // Another writer holds the lock while this one unpacks: the unpacking itself goes on
        // (its temporary fills up), and a store opened meanwhile does not sweep it away.
        let held = fsutil::StoreLock::acquire(&s.lock_path()).unwrap();
        let root = s.root().to_path_buf();
        let unpacker = std::thread::spawn(move || Store::open(root).unwrap().unpack(&img));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let unpacked = fs::read_dir(s.layers_dir()).unwrap().flatten().any(|e| {
                e.file_name().to_string_lossy().starts_with(".tmp-unpack")
                    && fs::read_dir(e.path()).unwrap().count() > 0
            });
            if unpacked {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no unpacking while locked"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let other = Store::open(s.root()).unwrap();
        assert!(
            fs::read_dir(other.layers_dir())
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-unpack")),
            "a live process's temporary was swept"
        );
        drop(held);
        let dirs = unpacker.join().unwrap().unwrap();
        assert!(dirs.iter().all(|d| crate::unpack::is_complete(d)));
        // A temporary of a dead process is swept.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = s.layers_dir().join(format!(".tmp-unpack-{dead}-1-0"));
        fs::create_dir(&stale).unwrap();
        Store::open(s.root()).unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn concurrent_unpackers_do_not_collide() {
        let (d, s) = setup();
        let p = d.path().join("save.tar");
        fs::write(
            &p,
            testutil::docker_save_tar(&[testutil::sample_image("c:1")], false),
        )
        .unwrap();
        s.import(&p, None, &mut |_| {}).unwrap();
        let img = s.resolve("c:1").unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let root = s.root().to_path_buf();
                let img = img.clone();
                std::thread::spawn(move || Store::open(root).unwrap().unpack(&img).unwrap())
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]));
        let entries: Vec<_> = fs::read_dir(s.layers_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            entries.len(),
            4,
            "two dirs and two markers, no temp dirs: {entries:?}"
        );
    }
}
