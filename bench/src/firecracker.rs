//! Firecracker as a subject of the VM start-up benchmark (`benches/vm_start.rs`), booting the
//! guest every VMM can boot alike ([`crate::initrd_guest`]). isol ships no Firecracker: the
//! user builds one and passes its path (docs/benchmarks-vm.md, "Firecracker, QEMU and isol,
//! same guest"). It is driven as its docs describe for a VM without the API: `--no-api
//! --config-file`, a JSON file with the boot source and the machine, no drives, no network.

use std::path::Path;
use std::process::Command;

use crate::qemu_microvm::{QemuError, Staged};

/// The guest Firecracker boots.
#[derive(Debug, Clone)]
pub struct FirecrackerVm<'a> {
    /// vmlinux (ELF; Firecracker takes the PVH entry when it has one, as isol does).
    pub kernel: &'a Path,
    /// The whole initramfs.
    pub initrd: &'a Path,
    pub memory_mib: u32,
    pub vcpus: u8,
    /// The whole kernel command line (Firecracker adds nothing for a VM without devices).
    pub cmdline: &'a str,
}

/// Firecracker's configuration file for `vm`: `boot-source` (kernel, initrd, boot args) and
/// `machine-config` (vCPUs, memory, no SMT), with no drives and no network interfaces.
pub fn config(vm: &FirecrackerVm) -> serde_json::Value {
    serde_json::json!({
        "boot-source": {
            "kernel_image_path": vm.kernel.to_string_lossy(),
            "initrd_path": vm.initrd.to_string_lossy(),
            "boot_args": vm.cmdline,
        },
        "drives": [],
        "machine-config": {
            "vcpu_count": vm.vcpus,
            "mem_size_mib": vm.memory_mib,
            "smt": false,
        },
        "network-interfaces": [],
    })
}

/// A Firecracker binary copied, with its shared libraries, into a RAM directory.
#[derive(Debug, Clone)]
pub struct Firecracker {
    staged: Staged,
}

impl Firecracker {
    /// Copies `firecracker` (and, for a glibc build, its shared libraries) into `dir`.
    pub fn stage(firecracker: &Path, dir: &Path) -> Result<Firecracker, QemuError> {
        Ok(Firecracker {
            staged: Staged::stage(firecracker, dir)?,
        })
    }

    /// The command that boots the VM described by the configuration file `config_file`
    /// ([`config`]): no API socket, Firecracker's default log level, the serial console on
    /// stdout. It exits with 0 when the guest reboots (`reboot=k`).
    pub fn command(&self, config_file: &Path) -> Command {
        let mut c = self.staged.command();
        c.arg("--no-api").arg("--config-file").arg(config_file);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_boots_the_kernel_and_initrd_with_the_given_machine_and_nothing_else() {
        let c = config(&FirecrackerVm {
            kernel: Path::new("/t/vmlinux"),
            initrd: Path::new("/t/guest.cpio"),
            memory_mib: 128,
            vcpus: 1,
            cmdline: "console=ttyS0 reboot=k",
        });
        assert_eq!(c["boot-source"]["kernel_image_path"], "/t/vmlinux");
        assert_eq!(c["boot-source"]["initrd_path"], "/t/guest.cpio");
        assert_eq!(c["boot-source"]["boot_args"], "console=ttyS0 reboot=k");
        assert_eq!(c["machine-config"]["vcpu_count"], 1);
        assert_eq!(c["machine-config"]["mem_size_mib"], 128);
        assert_eq!(c["machine-config"]["smt"], false);
        assert_eq!(c["drives"], serde_json::json!([]));
        assert_eq!(c["network-interfaces"], serde_json::json!([]));
        let keys: Vec<&String> = c.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "boot-source",
                "drives",
                "machine-config",
                "network-interfaces"
            ]
        );
    }

    #[test]
    fn a_static_program_runs_directly_and_a_dynamic_one_through_its_copied_loader() {
        let dir = tempfile::tempdir().unwrap();
        // /bin/sh is dynamic on this host (Debian's dash); the test's own executable may be
        // either: each runs, by itself, as staged.
        let fc = Firecracker::stage(Path::new("/bin/sh"), &dir.path().join("sh")).unwrap();
        let c = fc.command(Path::new("/x.json"));
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            c.get_program().to_string_lossy().contains("ld-linux"),
            "{:?}",
            c.get_program()
        );
        assert_eq!(args[0], "--library-path");
        assert!(args[2].ends_with("/sh/sh"), "{args:?}");
        assert_eq!(&args[3..], ["--no-api", "--config-file", "/x.json"]);
        let out = Staged::stage(Path::new("/bin/sh"), &dir.path().join("sh2"))
            .unwrap()
            .command()
            .args(["-c", "echo staged"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "staged\n");
        let bb = Staged::stage(Path::new("/bin/busybox"), &dir.path().join("bb"));
        if let Ok(bb) = bb {
            // Debian's busybox-static: no loader, run directly.
            let c = bb.command();
            assert!(c.get_program().to_string_lossy().ends_with("/bb/busybox"));
        }
    }
}
