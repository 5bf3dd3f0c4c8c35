//! What a guest kernel must be built with for isol, checked before booting where its
//! configuration can be found.
//!
//! A kernel nobody configured for isol (a distribution's stock bzImage, Firecracker's
//! published microVM config) boots to the guest init and then fails there, far from the
//! cause ("cannot mount ext4 on /isol/lower: No such device"). So before booting, isol
//! looks for the kernel's configuration ([`find_config`]):
//!
//! 1. beside the kernel: `config` in the directory of a `vmlinux` or `bzImage` (what
//!    guest-images/build-kernel.sh caches), `config-VERSION` beside `vmlinuz-VERSION`
//!    (a distribution's /boot);
//! 2. embedded in it (`CONFIG_IKCONFIG`: gzip'd text between the markers `IKCFG_ST` and
//!    `IKCFG_ED`), in an ELF vmlinux directly, in a bzImage inside its payload when that is
//!    gzip-compressed (the default `CONFIG_KERNEL_GZIP`).
//!
//! and refuses a kernel that lacks one of [`REQUIRED`], naming every missing option
//! ([`missing`]). Without a configuration found, nothing is checked; the guest init then
//! names the option behind a mount that fails with ENODEV.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The options isol's guests need (`=y`: isol's guests load no modules), with what for.
pub const REQUIRED: &[(&str, &str)] = &[
    ("CONFIG_BLK_DEV_INITRD", "the initramfs with the guest init"),
    ("CONFIG_SERIAL_8250", "the serial console and exit stream"),
    ("CONFIG_SERIAL_8250_CONSOLE", "the kernel log on --console"),
    ("CONFIG_VIRTIO_MMIO", "isol's virtio devices"),
    (
        "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
        "the virtio devices named on the command line",
    ),
    ("CONFIG_VIRTIO_BLK", "the root disk"),
    (
        "CONFIG_VIRTIO_CONSOLE",
        "the workload's stdin, stdout, stderr",
    ),
    ("CONFIG_EXT4_FS", "the root disk's filesystem"),
    ("CONFIG_OVERLAY_FS", "the writable layer over the root disk"),
    ("CONFIG_TMPFS", "the writable layer and /dev/shm"),
    ("CONFIG_DEVTMPFS", "/dev"),
    ("CONFIG_PROC_FS", "/proc"),
    ("CONFIG_SYSFS", "/sys"),
    ("CONFIG_UNIX98_PTYS", "/dev/pts and -t"),
    ("CONFIG_INET", "the loopback interface"),
    ("CONFIG_SECCOMP_FILTER", "the workload's seccomp profile"),
];

/// Needed for more than one vCPU (isol describes the CPUs in an MP table).
pub const SMP_REQUIRED: &[(&str, &str)] = &[
    ("CONFIG_SMP", "more than one vCPU"),
    ("CONFIG_X86_MPPARSE", "the MP table that lists the vCPUs"),
];

/// Needed for a network card (`--network bridge`: virtio-net on a tap).
pub const NET_REQUIRED: &[(&str, &str)] = &[
    ("CONFIG_NETDEVICES", "network cards (--network bridge)"),
    (
        "CONFIG_VIRTIO_NET",
        "the virtio-net card of --network bridge",
    ),
];

/// What a guest kernel needs for shared directories (`-v DIR:DIR`, virtio-fs).
pub const FS_REQUIRED: &[(&str, &str)] = &[
    (
        "CONFIG_FUSE_FS",
        "FUSE, which virtio-fs is built on (-v DIR:DIR)",
    ),
    (
        "CONFIG_VIRTIO_FS",
        "virtio-fs, the shared directories of -v DIR:DIR",
    ),
];

/// Needed for `--pids-limit` (the guest init's cgroup v2 with the pids controller).
pub const PIDS_REQUIRED: &[(&str, &str)] = &[
    (
        "CONFIG_CGROUPS",
        "the workload's cgroup for --pids-limit and --memory",
    ),
    ("CONFIG_CGROUP_PIDS", "the pids controller of --pids-limit"),
];

/// Needed for `--memory` inside the guest (the memory controller's `memory.max`).
pub const MEMORY_REQUIRED: &[(&str, &str)] = &[
    (
        "CONFIG_CGROUPS",
        "the workload's cgroup for --pids-limit and --memory",
    ),
    ("CONFIG_MEMCG", "the memory controller of --memory"),
];

/// What a run needs of its guest kernel beyond [`REQUIRED`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// vCPUs: more than one needs [`SMP_REQUIRED`].
    pub vcpus: u8,
    /// A network card: [`NET_REQUIRED`].
    pub nic: bool,
    /// `--pids-limit`: [`PIDS_REQUIRED`].
    pub pids_limit: bool,
    /// `--memory`: [`MEMORY_REQUIRED`].
    pub memory_limit: bool,
    /// `-v DIR:DIR` (virtio-fs): [`FS_REQUIRED`].
    pub fs: bool,
}

/// A kernel that lacks options isol needs.
#[derive(Debug, thiserror::Error)]
#[error(
    "The guest kernel {kernel} lacks options isol needs (per {source_name}): {list}; build one with guest-images/build-kernel.sh, or build yours with them =y",
    kernel = kernel.display(),
    list = missing.join(", ")
)]
pub struct MissingOptions {
    /// The kernel.
    pub kernel: PathBuf,
    /// Where its configuration was read ("its embedded config" or a path).
    pub source_name: String,
    /// Each missing option with what it is for: `CONFIG_X (what for)`.
    pub missing: Vec<String>,
}

/// The options of `required` that `config` (a kernel `.config`) does not set to `y`, as
/// `CONFIG_X (what for)`.
pub fn missing(config: &str, required: &[(&str, &str)]) -> Vec<String> {
    required
        .iter()
        .filter(|(opt, _)| {
            !config.lines().any(|l| {
                l.strip_prefix(opt)
                    .is_some_and(|rest| rest.trim_end() == "=y")
            })
        })
        .map(|(opt, why)| format!("{opt} ({why})"))
        .collect()
}

/// Whether `text` looks like a kernel configuration.
fn is_config(text: &str) -> bool {
    text.lines().any(|l| l.starts_with("CONFIG_"))
}

/// The configuration file beside `kernel`, if there is one.
fn beside(kernel: &Path) -> Option<(String, PathBuf)> {
    let name = kernel.file_name()?.to_str()?;
    let candidate = if name == "vmlinux" || name == "bzImage" {
        kernel.with_file_name("config")
    } else if let Some(version) = name.strip_prefix("vmlinuz-") {
        kernel.with_file_name(format!("config-{version}"))
    } else {
        return None;
    };
    let text = std::fs::read_to_string(&candidate).ok()?;
    is_config(&text).then_some((text, candidate))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The configuration embedded in `image` (an uncompressed kernel: `IKCFG_ST`, gzip).
pub fn embedded(image: &[u8]) -> Option<String> {
    const START: &[u8] = b"IKCFG_ST";
    let at = find(image, START)? + START.len();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&image[at..])
        .read_to_string(&mut text)
        .ok()?;
    is_config(&text).then_some(text)
}

/// The uncompressed kernel inside a bzImage whose payload is gzip: the first gzip
/// member after the setup code that inflates.
fn bzimage_payload(image: &[u8]) -> Option<Vec<u8>> {
    // The setup header's "HdrS" at 0x202; setup_sects at 0x1f1 (0 means 4).
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (sects + 1) * 512;
    let mut from = start;
    while let Some(off) = image.get(from..).and_then(|s| find(s, &[0x1f, 0x8b, 0x08])) {
        let at = from + off;
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&image[at..])
            .read_to_end(&mut out)
            .is_ok()
            && out.len() > (1 << 20)
        {
            return Some(out);
        }
        from = at + 1;
    }
    None
}

/// The configuration of `kernel` and where it came from, if it can be found.
pub fn find_config(kernel: &Path) -> Option<(String, String)> {
    if let Some((text, path)) = beside(kernel) {
        return Some((text, path.display().to_string()));
    }
    let image = std::fs::read(kernel).ok()?;
    let text = if image.starts_with(b"\x7fELF") {
        embedded(&image)?
    } else {
        embedded(&bzimage_payload(&image)?)?
    };
    Some((text, "its embedded config".into()))
}

/// Refuses `kernel` when its configuration is found and lacks an option isol needs for a
/// guest with `vcpus` vCPUs.
pub fn check(kernel: &Path, vcpus: u8) -> Result<(), MissingOptions> {
    check_for(kernel, vcpus, false)
}

/// [`check`], with the options of a network card ([`NET_REQUIRED`]) when `nic`.
pub fn check_for(kernel: &Path, vcpus: u8, nic: bool) -> Result<(), MissingOptions> {
    check_for_run(
        kernel,
        &Needs {
            vcpus,
            nic,
            ..Needs::default()
        },
    )
}

/// Refuses `kernel` when its configuration is found and lacks an option a run with
/// `needs` needs; each missing option is named once.
pub fn check_for_run(kernel: &Path, needs: &Needs) -> Result<(), MissingOptions> {
    let Some((config, source_name)) = find_config(kernel) else {
        return Ok(());
    };
    let mut gone = missing(&config, REQUIRED);
    let extra = [
        (needs.vcpus > 1, SMP_REQUIRED),
        (needs.nic, NET_REQUIRED),
        (needs.pids_limit, PIDS_REQUIRED),
        (needs.memory_limit, MEMORY_REQUIRED),
        (needs.fs, FS_REQUIRED),
    ];
    for (wanted, required) in extra {
        if wanted {
            for m in missing(&config, required) {
                if !gone.contains(&m) {
                    gone.push(m);
                }
            }
        }
    }
    if gone.is_empty() {
        return Ok(());
    }
    Err(MissingOptions {
        kernel: kernel.to_owned(),
        source_name,
        missing: gone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn full_config() -> String {
        REQUIRED
            .iter()
            .chain(SMP_REQUIRED)
            .map(|(o, _)| format!("{o}=y\n"))
            .collect::<String>()
            + "# CONFIG_MODULES is not set\n"
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_complete_config_misses_nothing() {
        assert!(missing(&full_config(), REQUIRED).is_empty());
        assert!(missing(&full_config(), SMP_REQUIRED).is_empty());
    }

    #[test]
    fn missing_modular_and_prefix_options_are_named() {
        let c = full_config()
            .replace("CONFIG_VIRTIO_MMIO=y\n", "CONFIG_VIRTIO_MMIO=m\n")
            .replace("CONFIG_EXT4_FS=y\n", "# CONFIG_EXT4_FS is not set\n")
            // CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y must not count for CONFIG_VIRTIO_MMIO.
            .replace("CONFIG_VIRTIO_BLK=y\n", "");
        assert_eq!(
            missing(&c, REQUIRED),
            [
                "CONFIG_VIRTIO_MMIO (isol's virtio devices)",
                "CONFIG_VIRTIO_BLK (the root disk)",
                "CONFIG_EXT4_FS (the root disk's filesystem)",
            ]
        );
    }

    #[test]
    fn the_embedded_config_is_read_from_an_elf_and_a_gzip_bzimage() {
        let config = full_config().replace("CONFIG_X86_MPPARSE=y\n", "");
        let mut vmlinux = b"\x7fELF....some code....".to_vec();
        vmlinux.extend_from_slice(b"IKCFG_ST");
        vmlinux.extend(gzip(config.as_bytes()));
        vmlinux.extend_from_slice(b"IKCFG_ED more code");
        assert_eq!(embedded(&vmlinux).as_deref(), Some(config.as_str()));
        // A bzImage: setup sectors with the header, then the gzip'd kernel (padded past
        // the 1 MiB a real one is at least).
        let mut big = vmlinux.clone();
        big.resize(3 << 20, 0x90);
        let mut bz = vec![0u8; 5 * 512];
        bz[0x1f1] = 4;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz.extend_from_slice(b"\x1f\x8b\x08 not gzip");
        bz.extend(gzip(&big));
        let t = tempfile::tempdir().unwrap();
        let (elf, bzimage) = (t.path().join("my-vmlinux"), t.path().join("my-bzimage"));
        std::fs::write(&elf, &vmlinux).unwrap();
        std::fs::write(&bzimage, &bz).unwrap();
        assert!(check(&elf, 1).is_ok());
        // No virtio-net in that config: refused only when a card is asked for.
        let e = check_for(&elf, 1, true).unwrap_err();
        assert_eq!(
            e.missing,
            [
                "CONFIG_NETDEVICES (network cards (--network bridge))",
                "CONFIG_VIRTIO_NET (the virtio-net card of --network bridge)"
            ]
        );
        let e = check_for_run(
            &elf,
            &Needs {
                fs: true,
                ..Needs::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            e.missing,
            [
                "CONFIG_FUSE_FS (FUSE, which virtio-fs is built on (-v DIR:DIR))",
                "CONFIG_VIRTIO_FS (virtio-fs, the shared directories of -v DIR:DIR)"
            ]
        );
        for k in [&elf, &bzimage] {
            let e = check(k, 2).unwrap_err();
            assert_eq!(
                e.missing,
                ["CONFIG_X86_MPPARSE (the MP table that lists the vCPUs)"]
            );
            assert!(e.to_string().contains("per its embedded config"), "{e}");
        }
    }

    #[test]
    fn a_config_beside_the_kernel_counts_and_none_checks_nothing() {
        let t = tempfile::tempdir().unwrap();
        let k = t.path().join("vmlinux");
        std::fs::write(&k, b"\x7fELF no config in here").unwrap();
        assert!(check(&k, 4).is_ok(), "nothing found: nothing to refuse");
        std::fs::write(t.path().join("config"), "CONFIG_SMP=y\n").unwrap();
        let e = check(&k, 1).unwrap_err().to_string();
        assert!(
            e.contains("CONFIG_VIRTIO_MMIO (isol's virtio devices)"),
            "{e}"
        );
        assert!(
            e.contains(&format!("per {}", t.path().join("config").display())),
            "{e}"
        );
        assert!(e.contains("guest-images/build-kernel.sh"), "{e}");
        let debian = t.path().join("vmlinuz-6.1.0-9-amd64");
        std::fs::write(&debian, b"MZ").unwrap();
        std::fs::write(t.path().join("config-6.1.0-9-amd64"), full_config()).unwrap();
        assert!(check(&debian, 2).is_ok());
    }

    #[test]
    fn isols_own_kernel_config_has_everything() {
        let own = include_str!("../../guest-images/kernel/isol-guest.config");
        assert!(
            missing(own, REQUIRED).is_empty(),
            "{:?}",
            missing(own, REQUIRED)
        );
        assert!(missing(own, SMP_REQUIRED).is_empty());
        assert!(missing(own, NET_REQUIRED).is_empty());
        assert!(missing(own, PIDS_REQUIRED).is_empty());
        assert!(missing(own, MEMORY_REQUIRED).is_empty());
    }

    #[test]
    fn limits_need_their_cgroup_options_each_named_once() {
        let t = tempfile::tempdir().unwrap();
        let elf = t.path().join("vmlinux");
        std::fs::write(&elf, b"\x7fELF").unwrap();
        std::fs::write(t.path().join("config"), full_config()).unwrap();
        let needs = Needs {
            vcpus: 1,
            pids_limit: true,
            memory_limit: true,
            ..Needs::default()
        };
        let e = check_for_run(&elf, &needs).unwrap_err();
        let names: Vec<&str> = e
            .missing
            .iter()
            .map(|m| m.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            names,
            ["CONFIG_CGROUPS", "CONFIG_CGROUP_PIDS", "CONFIG_MEMCG"],
            "{e}"
        );
        // Without limits the same kernel is fine.
        assert!(check_for_run(&elf, &Needs::default()).is_ok());
    }
}
