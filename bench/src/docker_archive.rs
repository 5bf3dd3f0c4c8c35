//! A docker-archive (`docker save`'s format: one tar per layer, the image config named by its
//! digest, `manifest.json`) made from unpacked layer directories: how the cri benchmark, and
//! the tests of isol-runc's clients (containerd, docker, podman), give a client the busybox
//! image isol runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

/// Makes `dir/image/` and the archive `dir/busybox.tar` of the image tagged `tag` whose layers
/// are the directories `layers` (lowest first) and whose config's `config` section (Cmd,
/// Entrypoint, Env…) is `config`; returns the archive's path.
pub fn docker_archive(
    dir: &Path,
    tag: &str,
    layers: &[PathBuf],
    config: serde_json::Value,
) -> Result<PathBuf, String> {
    let image = dir.join("image");
    fs::create_dir_all(&image).map_err(|e| format!("cannot create {}: {e}", image.display()))?;
    let mut names = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("layer{i}.tar");
        let archive = image.join(&name);
        tar(layer, &archive)?;
        let bytes =
            fs::read(&archive).map_err(|e| format!("cannot read {}: {e}", archive.display()))?;
        diff_ids.push(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))));
        names.push(name);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let config_name = format!("{}.json", hex::encode(Sha256::digest(config.as_bytes())));
    let manifest = serde_json::json!([
        {"Config": config_name, "RepoTags": [tag], "Layers": names}
    ])
    .to_string();
    for (name, text) in [(config_name.as_str(), config), ("manifest.json", manifest)] {
        fs::write(image.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))?;
    }
    let archive = dir.join("busybox.tar");
    tar(&image, &archive)?;
    Ok(archive)
}

/// `tar -cf ARCHIVE` of everything in `dir`, with numeric owners (a layer's files keep theirs).
fn tar(dir: &Path, archive: &Path) -> Result<(), String> {
    let out = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(archive)
        .arg(".")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot archive {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
