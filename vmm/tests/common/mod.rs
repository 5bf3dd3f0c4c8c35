//! What the VMM's lab tests need from the machine: the built guest init.

use std::path::{Path, PathBuf};

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
