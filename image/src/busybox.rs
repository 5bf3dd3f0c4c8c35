//! The built-in default image `busybox:latest`, built from the host's static
//! busybox (Debian's `busybox-static`).
//!
//! The image has one layer, made deterministic (sorted entries, mtime 0,
//! uid/gid 0, gzip header without name or time) so the same busybox binary
//! always gives the same digests. It holds `/bin/busybox`, a symlink to it for
//! every applet of `busybox --list-full`, the usual top-level directories and
//! a minimal `/etc`. The blobs go through the same store functions as imports.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, ImageConfigurationBuilder, ImageManifestBuilder, MediaType,
    Os, RootFsBuilder,
};

use crate::{ImageError, Store, fsutil};

/// Where Debian's busybox-static installs the binary.
pub(crate) const HOST_BUSYBOX: &str = "/bin/busybox";

/// The default `PATH` of the image.
pub(crate) const DEFAULT_PATH: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug)]
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
}

/// Checks `bytes` is a static ELF (no `PT_INTERP`) and returns its OCI architecture.
pub(crate) fn static_elf_arch(bytes: &[u8]) -> Result<Arch, String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF executable".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let arch = match u16_at(18) {
        62 => Arch::Amd64,
        183 => Arch::ARM64,
        m => return Err(format!("unsupported ELF machine {m}")),
    };
    let phoff = usize::try_from(u64_at(32)).map_err(|_| "bad program header offset")?;
    let phentsize = usize::from(u16_at(54));
    let phnum = usize::from(u16_at(56));
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        if off + 4 > bytes.len() {
            return Err("truncated program headers".into());
        }
        // PT_INTERP = 3: the binary needs a dynamic loader.
        if u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]]) == 3 {
            return Err("it is dynamically linked (has PT_INTERP)".into());
        }
    }
    Ok(arch)
}

/// The deterministic layer tar (uncompressed) for the busybox at `path`.
pub(crate) fn layer_tar(path: &Path) -> Result<(Vec<u8>, Arch), ImageError> {
    let bad = |reason: String| ImageError::Busybox {
        path: path.into(),
        reason,
    };
    let bin = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let arch = static_elf_arch(&bin).map_err(bad)?;
    let out = Command::new(path)
        .arg("--list-full")
        .output()
        .map_err(|e| bad(format!("cannot run it: {e}")))?;
    if !out.status.success() {
        return Err(bad(format!(
            "`busybox --list-full` failed with {}",
            out.status
        )));
    }
    let list = String::from_utf8_lossy(&out.stdout);

    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (dir, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("usr/local", 0o755),
        ("usr/local/bin", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("home", 0o755),
        ("etc", 0o755),
        ("var", 0o755),
        ("run", 0o755),
        ("mnt", 0o755),
    ] {
        nodes.insert(dir.into(), Node::Dir(mode));
    }
    let files: [(&str, &str); 4] = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
        (
            "etc/nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n",
        ),
    ];
    for (p, content) in files {
        nodes.insert(p.into(), Node::File(0o644, content.as_bytes().to_vec()));
    }
    nodes.insert("bin/busybox".into(), Node::File(0o755, bin));
    let mut applets = 0;
    for line in list.lines() {
        let applet = line.trim().trim_start_matches('/');
        if applet.is_empty()
            || applet == "bin/busybox"
            || applet
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            continue;
        }
        // Parent directories busybox wants that are not in the list above.
        let mut parent = Path::new(applet).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            nodes
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Node::Dir(0o755));
            parent = p.parent();
        }
        nodes
            .entry(applet.into())
            .or_insert(Node::Symlink("/bin/busybox".into()));
        applets += 1;
    }
    if applets < 10 {
        return Err(bad(format!(
            "`busybox --list-full` listed only {applets} applets"
        )));
    }

    let mut builder = tar::Builder::new(Vec::new());
    let io = |e: std::io::Error| bad(format!("cannot build the layer: {e}"));
    // BTreeMap order puts "a" before "a/b": parents precede children.
    for (p, node) in &nodes {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_username("root").map_err(io)?;
        h.set_groupname("root").map_err(io)?;
        match node {
            Node::Dir(mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                builder
                    .append_data(&mut h, format!("{p}/"), std::io::empty())
                    .map_err(io)?;
            }
            Node::File(mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                builder.append_data(&mut h, p, &data[..]).map_err(io)?;
            }
            Node::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                builder.append_link(&mut h, p, target).map_err(io)?;
            }
        }
    }
    let tar = builder.into_inner().map_err(io)?;
    Ok((tar, arch))
}

/// gzip with a fixed header (no name, mtime 0, fixed level).
pub(crate) fn gzip_deterministic(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::new(6));
    enc.write_all(data)?;
    enc.finish()
}

/// Builds the image's blobs into `store`; returns the manifest digest.
pub(crate) fn build(store: &Store, busybox: &Path) -> Result<String, ImageError> {
    let (tar, arch) = layer_tar(busybox)?;
    let internal = |e: &dyn std::fmt::Display| ImageError::Busybox {
        path: busybox.into(),
        reason: format!("cannot build the image metadata: {e}"),
    };
    let diff_id = fsutil::sha256_digest(&tar);
    let gz = gzip_deterministic(&tar).map_err(|e| internal(&e))?;
    let layer_digest = store.write_blob(&gz)?;

    let config = ImageConfigurationBuilder::default()
        .architecture(arch)
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .env(vec![DEFAULT_PATH.to_string()])
                .cmd(vec!["/bin/sh".to_string()])
                .build()
                .map_err(|e| internal(&e))?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id])
                .build()
                .map_err(|e| internal(&e))?,
        )
        .build()
        .map_err(|e| internal(&e))?;
    let config_json = config.to_string().map_err(|e| internal(&e))?;
    let config_digest = store.write_blob(config_json.as_bytes())?;

    let parse = |d: &str| {
        d.parse::<oci_spec::image::Digest>()
            .map_err(|e| internal(&e))
    };
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_json.len() as u64,
            parse(&config_digest)?,
        ))
        .layers(vec![Descriptor::new(
            MediaType::ImageLayerGzip,
            gz.len() as u64,
            parse(&layer_digest)?,
        )])
        .build()
        .map_err(|e| internal(&e))?;
    let manifest_json = manifest.to_string().map_err(|e| internal(&e))?;
    store.write_blob(manifest_json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn host_busybox_is_static() {
        let bin = std::fs::read(HOST_BUSYBOX).unwrap();
        assert_eq!(static_elf_arch(&bin).unwrap(), Arch::Amd64);
    }

    #[test]
    fn dynamic_binary_is_rejected_with_hint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let err = store.ensure_default_from(Path::new("/bin/ls")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("dynamically linked"), "{msg}");
        assert!(
            msg.ends_with("install Debian's busybox-static (`apt-get install busybox-static`)"),
            "{msg}"
        );
        let err = store
            .ensure_default_from(Path::new("/nonexistent/busybox"))
            .unwrap_err();
        assert!(matches!(err, ImageError::Busybox { .. }));
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn layer_contents() {
        let (tar, _) = layer_tar(Path::new(HOST_BUSYBOX)).unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let mut seen = BTreeMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let h = e.header().clone();
            assert_eq!(h.mtime().unwrap(), 0);
            assert_eq!(h.uid().unwrap(), 0);
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            let mut data = String::new();
            if h.entry_type().is_file() && path.starts_with("etc/") {
                e.read_to_string(&mut data).unwrap();
            }
            seen.insert(
                path,
                (
                    h.entry_type(),
                    h.mode().unwrap(),
                    e.link_name().unwrap().map(|l| l.into_owned()),
                    data,
                ),
            );
        }
        assert_eq!(seen["tmp"].1, 0o1777);
        assert_eq!(seen["root"].1, 0o700);
        assert!(seen["bin/busybox"].0.is_file());
        assert_eq!(seen["bin/ls"].2.as_deref(), Some(Path::new("/bin/busybox")));
        assert!(seen["bin/sh"].0.is_symlink());
        assert!(seen.contains_key("usr/bin/env"));
        assert!(
            seen["etc/passwd"]
                .3
                .starts_with("root:x:0:0:root:/root:/bin/sh\n")
        );
        assert!(seen["etc/hosts"].3.contains("::1\tlocalhost"));
        for d in [
            "proc",
            "sys",
            "dev",
            "home",
            "var",
            "run",
            "mnt",
            "usr/local/bin",
        ] {
            assert!(seen[d].0.is_dir(), "{d}");
        }
    }

    #[test]
    fn default_image_is_reproducible() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let da = Store::open(a.path()).unwrap().ensure_default().unwrap();
        let db = Store::open(b.path()).unwrap().ensure_default().unwrap();
        assert_eq!(da.digest, db.digest);
        assert_eq!(da.name, "busybox:latest");
        assert_eq!(da.created, None);
    }

    #[test]
    fn default_image_unpacks_and_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let img = store.resolve("busybox:latest").unwrap();
        let dirs = store.unpack(&img).unwrap();
        assert_eq!(dirs.len(), 1);
        let root = &dirs[0];
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        let out = Command::new(root.join("bin/busybox"))
            .arg("true")
            .status()
            .unwrap();
        assert!(out.success());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("tmp"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o1777);
        // Unpacking again is a no-op that returns the same dirs.
        assert_eq!(store.unpack(&img).unwrap(), dirs);
    }
}
