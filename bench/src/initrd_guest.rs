//! The guest every VMM boots alike, for comparing VMMs on the same work (`benches/vm_start.rs`,
//! docs/benchmarks-vm.md): isol's guest kernel with one busybox initramfs whose `/init` runs
//! `true` and reboots, on isol's kernel command line. No disk, no virtio device, no exit port:
//! only what Firecracker, QEMU microvm and isol (`isol run --initrd`) all have — a UART and a
//! way to reboot (`reboot=k`, the i8042's reset line; QEMU microvm has no i8042, so there
//! `reboot=t`, a triple fault, which `-no-reboot` makes QEMU's exit).

use std::io;
use std::path::Path;

use isol_cpio::{CpioWriter, EntryMeta, S_IFREG, dir};
use isol_vmm::loader::{self, LoaderError};

/// What the check archive's `/init` prints on the serial console once `true` exited 0.
pub const SAID: &str = "bench guest: true exited 0";

/// `/init`: busybox's shell runs `/bin/busybox true` (fork and exec), then reboots at once
/// (`reboot -f`: the reboot system call, no init scripts). `say`: print [`SAID`] (with the
/// status) first — the check run's archive; the timed runs' archive prints nothing.
pub fn init_script(say: bool) -> String {
    let say = if say {
        "echo \"bench guest: true exited $?\"\n"
    } else {
        ""
    };
    format!("#!/bin/busybox sh\n/bin/busybox true\n{say}exec /bin/busybox reboot -f\n")
}

/// The initramfs (newc cpio, uncompressed, as isol's own): `/dev/console` (5:1, so that init
/// has stdio before any devtmpfs), `/bin/busybox` (a static busybox, e.g. Debian's
/// `busybox-static`) and `/init` ([`init_script`]).
pub fn initramfs(busybox: &Path, say: bool) -> io::Result<Vec<u8>> {
    let bb = std::fs::read(busybox)?;
    let mut w = CpioWriter::new(Vec::new());
    w.dev_console()?;
    w.entry(b"bin", dir(0o755), &[])?;
    let exe = EntryMeta {
        mode: S_IFREG | 0o755,
        ..Default::default()
    };
    w.entry(b"bin/busybox", exe, &bb)?;
    w.entry(b"init", exe, init_script(say).as_bytes())?;
    w.finish()
}

/// The kernel command line: isol's for a guest with no devices (what `isol run --initrd`
/// boots with), with `reboot=t` instead of `reboot=k` when `triple_fault` (QEMU microvm).
pub fn cmdline(triple_fault: bool) -> Result<String, LoaderError> {
    let c = loader::build_cmdline(false, &[])?;
    let s = c.as_cstring().map_err(LoaderError::Cmdline)?;
    let s = s.to_string_lossy().into_owned();
    Ok(if triple_fault {
        s.replace("reboot=k", "reboot=t")
    } else {
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use isol_cpio::S_IFCHR;
    use isol_cpio::testutil::{find, parse};

    #[test]
    fn the_archive_holds_busybox_console_and_an_init_that_reboots() {
        let bb = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(bb.path(), b"\x7fELF busybox").unwrap();
        let img = initramfs(bb.path(), false).unwrap();
        let p = parse(&img);
        let console = find(&p, "dev/console").unwrap();
        assert_eq!((console.1, console.2, console.3), (S_IFCHR | 0o600, 5, 1));
        assert_eq!(find(&p, "bin/busybox").unwrap().4, b"\x7fELF busybox");
        let init = find(&p, "init").unwrap();
        assert_eq!(init.1, S_IFREG | 0o755);
        let script = String::from_utf8(init.4.clone()).unwrap();
        assert!(script.starts_with("#!/bin/busybox sh\n"), "{script}");
        assert!(
            script.ends_with("exec /bin/busybox reboot -f\n"),
            "{script}"
        );
        assert!(!script.contains("echo"), "{script}");
        // The check archive differs only in the line that says so.
        let said = String::from_utf8(
            find(&parse(&initramfs(bb.path(), true).unwrap()), "init")
                .unwrap()
                .4
                .clone(),
        )
        .unwrap();
        assert_eq!(
            said.replace("echo \"bench guest: true exited $?\"\n", ""),
            script
        );
        assert!(SAID.starts_with("bench guest: true exited"));
        assert!(initramfs(Path::new("/nonexistent/busybox"), false).is_err());
    }

    #[test]
    fn every_vmm_gets_isols_command_line_with_its_own_reboot() {
        let k = cmdline(false).unwrap();
        assert!(
            k.contains("console=ttyS0") && k.contains("reboot=k") && k.contains("quiet"),
            "{k}"
        );
        assert!(
            !k.contains("isol."),
            "no isol device or guest-init parameter: {k}"
        );
        let t = cmdline(true).unwrap();
        assert_eq!(t, k.replace("reboot=k", "reboot=t"));
    }
}
