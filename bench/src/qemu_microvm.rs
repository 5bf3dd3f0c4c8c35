//! QEMU `-M microvm` set up to boot the same guest as isol's VMM, for the benchmarks that
//! compare the two (`bench/benches/vm_start.rs` and `isol bench --peers qemu`): the same
//! kernel, initramfs (built by the caller, as isol's VMM builds it),
//! read-only root disk on virtio-blk, 3-port virtio console named as isol names its ports,
//! UART and command line ([`cmdline`]). And how both VMMs' memory is measured
//! ([`wait_measured`]): peak RSS from `wait4`, guest RAM resident from `/proc/PID/smaps`.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use isol_vmm::device_manager::STDIO_PORTS;
use isol_vmm::loader::{self, LoaderError};

/// What can go wrong staging QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// A file could not be read, copied or listed.
    #[error("Cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// `ldd` named no dynamic loader.
    #[error("Cannot find the dynamic loader of {0} in ldd's output")]
    NoLoader(PathBuf),
    /// The command line.
    #[error(transparent)]
    Loader(#[from] LoaderError),
}

/// The I/O port isol's guest init writes the workload's exit status to; QEMU's
/// `isa-debug-exit` there makes QEMU exit with [`debug_exit_status`].
pub const EXIT_PORT: u16 = 0x4f0;

/// The I/O port isol's guest init writes to once it has reported and synced, where isol's
/// VMM ends the VM (`isol_devices::legacy::exit_port`); QEMU's `isa-debug-exit` there
/// ends QEMU at the same point, with [`POWER_OFF_EXIT`].
pub const POWER_OFF_PORT: u16 = isol_guest_init::port::POWER_OFF_PORT;

/// QEMU's exit status when the guest init reports `status` through `isa-debug-exit`.
pub const fn debug_exit_status(status: i32) -> i32 {
    ((status << 1) | 1) & 0xff
}

/// QEMU's exit status when it ended at init's power-off write.
pub const POWER_OFF_EXIT: i32 = debug_exit_status(isol_guest_init::port::POWER_OFF as i32);

/// Whether a VMM running `true` ended as it should: isol with the workload's status 0,
/// QEMU at init's power-off write ([`POWER_OFF_EXIT`]).
pub fn ended_cleanly(status: ExitStatus) -> bool {
    status.success() || status.code() == Some(POWER_OFF_EXIT)
}

/// Where a QEMU run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuEnd {
    /// At init's power-off write, after the report and `sync`, as isol's VMM ends its VMs
    /// (`isa-debug-exit` on [`POWER_OFF_PORT`]; QEMU exits with [`POWER_OFF_EXIT`]). Timed
    /// and memory runs.
    PowerOff,
    /// At init's exit-status report (`isa-debug-exit` on [`EXIT_PORT`]; QEMU exits with
    /// [`debug_exit_status`] of the workload's status). The check of what the guest did.
    Status,
    /// At the guest's reboot (`reboot=t`: a triple fault, which `-no-reboot` turns into
    /// QEMU's exit with status 0): a guest with an init of its own, which knows no exit port.
    Reset,
}

/// A QEMU binary with its shared libraries and microvm firmware copied into one directory,
/// so that starting it reads RAM (in the lab the host's files come over 9p), run through
/// the copied dynamic loader.
#[derive(Debug, Clone)]
pub struct Qemu {
    staged: Staged,
}

/// A program copied into one directory with the shared libraries `ldd` lists for it, so
/// that starting it reads RAM (in the lab the host's files come over 9p), run through the
/// copied dynamic loader (a static program: directly).
#[derive(Debug, Clone)]
pub struct Staged {
    /// The copied dynamic loader; `None` for a static program.
    loader: Option<PathBuf>,
    dir: PathBuf,
    binary: PathBuf,
}

impl Staged {
    /// Copies `program` and its shared libraries into `dir` (created).
    pub fn stage(program: &Path, dir: &Path) -> Result<Staged, QemuError> {
        fs::create_dir_all(dir).map_err(|source| QemuError::Io {
            what: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        let binary = copy_into(program, dir)?;
        let ldd = Command::new("ldd")
            .arg(program)
            .output()
            .map_err(|source| QemuError::Io {
                what: "run ldd on",
                path: program.to_path_buf(),
                source,
            })?;
        let mut loader = None;
        let mut libraries = 0;
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let lib = Path::new(lib);
            let to = copy_into(lib, dir)?;
            libraries += 1;
            if lib
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ld-linux"))
            {
                loader = Some(to);
            }
        }
        if libraries > 0 && loader.is_none() {
            return Err(QemuError::NoLoader(program.to_path_buf()));
        }
        Ok(Staged {
            loader,
            dir: dir.to_path_buf(),
            binary,
        })
    }

    /// The command that runs the staged program.
    pub fn command(&self) -> Command {
        match &self.loader {
            Some(loader) => {
                let mut c = Command::new(loader);
                c.arg("--library-path").arg(&self.dir).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        }
    }

    /// The directory it was copied into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The guest QEMU boots.
#[derive(Debug, Clone)]
pub struct Microvm<'a> {
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Attached read-only as the first virtio-blk disk (`/dev/vda`), with isol's 3-port
    /// virtio console; `None`: neither (an initramfs with an init of its own).
    pub disk: Option<&'a Path>,
    pub memory_mib: u32,
    /// From [`cmdline`].
    pub cmdline: &'a str,
    /// Where the run ends (either way `-no-reboot` ends it, with status 0, should the
    /// guest reset first).
    pub end: QemuEnd,
    /// The console's ports on QEMU's own stdin, stdout and stderr, as isol gives a workload
    /// its stdio (the serial console then goes nowhere); otherwise the ports are `null`
    /// chardevs (the workload reads end-of-file) and the serial console is stdout.
    pub stdio: bool,
}

fn copy_into(from: &Path, dir: &Path) -> Result<PathBuf, QemuError> {
    let to = dir.join(from.file_name().unwrap_or(from.as_os_str()));
    fs::copy(from, &to).map_err(|source| QemuError::Io {
        what: "copy",
        path: from.to_path_buf(),
        source,
    })?;
    Ok(to)
}

impl Qemu {
    /// Copies `qemu`, the shared libraries `ldd` lists for it and microvm's firmware (qboot,
    /// or `bios-microvm.bin` in newer QEMUs, from /usr/share/qemu) into `dir`.
    pub fn stage(qemu: &Path, dir: &Path) -> Result<Qemu, QemuError> {
        let staged = Staged::stage(qemu, dir)?;
        for fw in ["qboot.rom", "bios-microvm.bin"] {
            let from = Path::new("/usr/share/qemu").join(fw);
            if from.is_file() {
                copy_into(&from, dir)?;
            }
        }
        Ok(Qemu { staged })
    }

    /// The command that boots `vm`: 1 vCPU, no defaults, the serial console on stdout,
    /// ending where `vm.end` says.
    pub fn command(&self, vm: &Microvm) -> Command {
        let mut c = self.staged.command();
        c.arg("-L").arg(self.staged.dir()).args([
            "-M",
            "microvm,x-option-roms=off,rtc=off,acpi=off,pic=off,pit=off,isa-serial=on",
            "-enable-kvm",
            "-cpu",
            "host",
            "-m",
            &vm.memory_mib.to_string(),
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            if vm.stdio { "null" } else { "stdio" },
            "-no-reboot",
        ]);
        if let Some(disk) = vm.disk {
            // The same devices as isol: the root disk and a 3-port console.
            let mut drive = OsString::from("file=");
            drive.push(disk);
            drive.push(",if=none,id=root,format=raw,readonly=on");
            c.arg("-drive").arg(&drive).args([
                "-device",
                "virtio-blk-device,drive=root",
                "-device",
                "virtio-serial-device,max_ports=4",
            ]);
            for (i, name) in STDIO_PORTS.iter().enumerate() {
                c.args(["-chardev", &port_chardev(i, vm.stdio)]).args([
                    "-device",
                    &format!("virtserialport,chardev=p{i},name={name}"),
                ]);
            }
        }
        let port = match vm.end {
            QemuEnd::PowerOff => Some(POWER_OFF_PORT),
            QemuEnd::Status => Some(EXIT_PORT),
            QemuEnd::Reset => None,
        };
        if let Some(port) = port {
            c.args([
                "-device",
                &format!("isa-debug-exit,iobase={port:#x},iosize=1"),
            ]);
        }
        c.arg("-kernel")
            .arg(vm.kernel)
            .arg("-initrd")
            .arg(vm.initrd)
            .arg("-append")
            .arg(vm.cmdline);
        c
    }
}

/// The chardev behind console port `i` (stdin, stdout, stderr). With `stdio`: port 0 is
/// QEMU's stdin (the `stdio` chardev: its end-of-file closes the port, and the guest's read
/// returns end-of-file, as with isol), ports 1 and 2 write to QEMU's stdout and stderr
/// (`/proc/self/fd/N`: a pipe reopened). Without: `null` (no host side; the guest reads
/// end-of-file at once).
fn port_chardev(i: usize, stdio: bool) -> String {
    match (stdio, i) {
        (false, _) => format!("null,id=p{i}"),
        (true, 0) => format!("stdio,id=p{i},signal=off"),
        (true, fd) => format!("file,id=p{i},path=/proc/self/fd/{fd}"),
    }
}

/// isol's kernel command line for a guest with a root disk and virtio stdio, as QEMU
/// microvm needs it: without isol's virtio-mmio windows (QEMU appends its own), and
/// `reboot=t` (triple fault) instead of `reboot=k` (microvm has no i8042). `verbose` turns
/// the kernel log on (`loglevel=7`), for [`check_guest`].
pub fn cmdline(verbose: bool) -> Result<String, QemuError> {
    let c = loader::build_cmdline(
        false,
        &["isol.root=/dev/vda".into(), "isol.stdio=virtio".into()],
    )?;
    let s = c.as_cstring().map_err(LoaderError::Cmdline)?;
    let s = s.to_string_lossy().replace("reboot=k", "reboot=t");
    Ok(if verbose {
        s.replace("quiet loglevel=0", "loglevel=7")
    } else {
        s
    })
}

/// QEMU cannot report the workload's exit status by itself. Checks one run made with
/// [`QemuEnd::Status`] and a [`cmdline`]`(true)`: its serial console (`console`) must show that the
/// guest mounted the root disk, and QEMU's `status` that init reported `expect` — proof
/// that QEMU's guest does the same work as isol's.
pub fn check_guest(status: ExitStatus, console: &str, expect: i32) -> Result<(), String> {
    if status.code() == Some(debug_exit_status(expect))
        && console.contains("EXT4-fs (vda): mounted")
    {
        return Ok(());
    }
    let tail: Vec<&str> = console.lines().rev().take(15).collect();
    Err(format!(
        "the QEMU guest did not run its workload from the root disk with exit status {expect} (QEMU: {status}); console tail:\n{}",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

/// RSS (KiB) of the largest anonymous or memfd mapping of at least `min_kib` in
/// `/proc/PID/smaps`: a VMM's guest RAM (a shared memfd when a vhost-user backend maps it).
pub fn guest_rss_kib(pid: u32, min_kib: u64) -> Option<u64> {
    rss_and_guest_kib(pid, min_kib).and_then(|(_, guest)| guest)
}

/// The whole RSS (KiB) of `pid` and its guest RAM's ([`guest_rss_kib`]), from one read of
/// `/proc/PID/smaps`: a guest that touches memory between two reads would otherwise count in
/// one and not the other.
pub fn rss_and_guest_kib(pid: u32, min_kib: u64) -> Option<(u64, Option<u64>)> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    let mut best: Option<(u64, u64)> = None; // (size, rss)
    let mut total = 0u64;
    let (mut anon, mut size) = (false, 0u64);
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            // Mapping header: addr perms offset dev inode [path]; anonymous = no path, or
            // a memfd's (`/memfd:NAME (deleted)`).
            anon = f.nth(4).is_none_or(|path| path.starts_with("/memfd:"));
            size = 0;
        } else if first == "Size:" {
            size = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if first == "Rss:" {
            let rss = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            total += rss;
            if anon && size >= min_kib && best.is_none_or(|(s, _)| size > s) {
                best = Some((size, rss));
            }
        }
    }
    Some((total, best.map(|(_, rss)| rss)))
}

/// The jailed VMM when `pid` is the relay of isol-vmm's jail (src/jail.rs, docs/design.md
/// "The VMM's jail"): its child that is PID 1 of a PID namespace of its own (beside it, with
/// shared directories, the virtiofsd processes, children too).
pub fn jailed_child(pid: u32) -> Option<u32> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    let comm = |p: u32| fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .find(|&c| {
            let nspid = fs::read_to_string(format!("/proc/{c}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("NSpid:"))
                        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                })
                .unwrap_or_default();
            nspid.len() == 2 && nspid[1] == "1" && comm(c).trim() != "virtiofsd"
        })
}

/// The memory (KiB) only `pid` holds: `Private_Clean` + `Private_Dirty` of
/// `/proc/PID/smaps_rollup`; for a relay, what it costs beyond the pages it shares with the
/// VMM it forked (the executable's).
pub fn private_kib(pid: u32) -> Option<u64> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |k: &str| {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some(field("Private_Clean:")? + field("Private_Dirty:")?)
}

/// How a VMM process ended, and what it cost.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub status: ExitStatus,
    /// Peak RSS (`ru_maxrss` from `wait4`), KiB.
    pub maxrss_kib: u64,
    /// With polling: the guest RAM mapping's RSS (KiB), last value seen.
    pub guest_kib: Option<u64>,
    /// With polling, for a jailed VMM: its relay's private memory (KiB, [`private_kib`]),
    /// last value seen. `wait4`'s peak RSS is the larger of the relay's and the VMM's (the
    /// VMM's), so this is added to the overhead.
    pub relay_kib: Option<u64>,
}

impl Measured {
    /// Peak RSS minus guest RAM resident, plus a jail's relay, in KiB: what the VMM itself
    /// costs.
    pub fn overhead_kib(&self) -> u64 {
        self.maxrss_kib.saturating_sub(self.guest_kib.unwrap_or(0)) + self.relay_kib.unwrap_or(0)
    }
}

/// How often [`wait_measured`] reads the guest RAM mapping's RSS. Each read walks the page
/// tables of the VMM whose guest RAM KVM is faulting in; in the lab (nested KVM on an
/// emulated CPU) one read of a QEMU's smaps takes milliseconds, so at the former 2 ms the
/// reads ran back to back for the whole boot. The guest's RAM only grows while it runs (THP:
/// in 2 MiB steps), so the last value seen misses at most what the guest touches in its last
/// interval before it powers off.
pub const SMAPS_EVERY: Duration = Duration::from_millis(50);

/// How often [`wait_measured`] checks (`wait4` with `WNOHANG`, which reads no page tables)
/// whether the child ended, when it polls.
const WAIT_EVERY: Duration = Duration::from_millis(2);

/// Waits for `child` with `wait4`; with `poll_kib` (the guest RAM size in KiB), reads the
/// RSS of its guest RAM mapping ([`guest_rss_kib`]) every [`SMAPS_EVERY`] meanwhile (which
/// perturbs the timing: measure memory in runs of its own). Leaves the child's pipes to the
/// caller. With a `deadline`, a child still running then is left as it is (not reaped) and
/// the error is [`io::ErrorKind::TimedOut`]: stopping it is the caller's business.
pub fn wait_measured(
    child: &mut Child,
    poll_kib: Option<u64>,
    deadline: Option<Instant>,
) -> io::Result<Measured> {
    let pid = child.id();
    let mut guest = None;
    let mut relay = None;
    let mut read_at: Option<Instant> = None;
    let (status, ru) = loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid out-parameter.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        let polling = poll_kib.is_some() || deadline.is_some();
        let flags = if polling { libc::WNOHANG } else { 0 };
        // SAFETY: `pid` is our child, not reaped yet; `status` and `ru` are valid for writes.
        let r = unsafe { libc::wait4(pid as i32, &mut status, flags, &mut ru) };
        if r == pid as i32 {
            break (status, ru);
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("pid {pid} still running at the deadline"),
            ));
        }
        let due = read_at.is_none_or(|t| t.elapsed() >= SMAPS_EVERY);
        if let Some(min) = poll_kib.filter(|_| due) {
            read_at = Some(Instant::now());
            // A jailed VMM is the relay's child (the guest RAM is there).
            // The relay's private pages are read while the VMM lives: once it has ended,
            // every page the two shared is the relay's alone.
            match jailed_child(pid) {
                Some(vmm) => {
                    let r = private_kib(pid);
                    if let Some(g) = guest_rss_kib(vmm, min) {
                        guest = Some(g);
                        relay = r.or(relay);
                    }
                }
                None => guest = guest_rss_kib(pid, min).or(guest),
            }
        }
        if polling {
            std::thread::sleep(WAIT_EVERY);
        }
    };
    Ok(Measured {
        status: ExitStatus::from_raw(status),
        maxrss_kib: u64::try_from(ru.ru_maxrss).unwrap_or(0),
        guest_kib: guest,
        relay_kib: relay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemus_command_line_is_isols_with_a_triple_fault_reset() {
        let c = cmdline(false).unwrap();
        assert!(c.contains("reboot=t") && !c.contains("reboot=k"), "{c}");
        assert!(c.contains("quiet loglevel=0 isol.root=/dev/vda isol.stdio=virtio"));
        let v = cmdline(true).unwrap();
        assert!(v.contains(" loglevel=7 ") && !v.contains("quiet"), "{v}");
        assert_eq!(debug_exit_status(0), 1);
        assert_eq!(debug_exit_status(42), 85);
        assert!(ended_cleanly(ExitStatus::from_raw(0)));
        assert!(ended_cleanly(ExitStatus::from_raw(POWER_OFF_EXIT << 8)));
        assert!(!ended_cleanly(ExitStatus::from_raw(1 << 8)));
        let mounted = "[    1.0] EXT4-fs (vda): mounted filesystem\n";
        assert!(check_guest(ExitStatus::from_raw(85 << 8), mounted, 42).is_ok());
        let e = check_guest(ExitStatus::from_raw(1 << 8), mounted, 42).unwrap_err();
        assert!(e.contains("exit status 42"), "{e}");
        assert!(check_guest(ExitStatus::from_raw(1 << 8), "no disk\n", 0).is_err());
    }

    #[test]
    fn stdio_ports_are_qemus_own_stdin_stdout_and_stderr() {
        assert_eq!(port_chardev(0, true), "stdio,id=p0,signal=off");
        assert_eq!(port_chardev(1, true), "file,id=p1,path=/proc/self/fd/1");
        assert_eq!(port_chardev(2, true), "file,id=p2,path=/proc/self/fd/2");
        for i in 0..3 {
            assert_eq!(port_chardev(i, false), format!("null,id=p{i}"));
        }
    }

    #[test]
    fn the_largest_anonymous_mapping_is_the_guest_ram() {
        // 160 MiB of anonymous memory (larger than malloc's 64 MiB arenas), 8 MiB of it
        // touched: like a VMM's guest RAM.
        let len = 160 << 20;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: `p` is a writable mapping of `len` bytes.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, 8 << 20) };
        let rss = guest_rss_kib(std::process::id(), 160 << 10);
        // SAFETY: unmaps exactly the mapping made above.
        unsafe { libc::munmap(p, len) };
        assert!(
            rss.is_some_and(|k| (8 << 10..160 << 10).contains(&k)),
            "{rss:?}"
        );
        assert!(guest_rss_kib(std::process::id(), u64::MAX).is_none());
    }

    #[test]
    fn a_shared_memfd_mapping_is_guest_ram_too() {
        // As isol-vmm maps guest RAM when a vhost-user backend (virtiofsd) shares it.
        let len: usize = 160 << 20;
        // SAFETY: a NUL-terminated name and flags; the fd is fresh and closed below.
        let fd = unsafe { libc::memfd_create(c"isol-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: `fd` is the memfd made above.
        assert_eq!(unsafe { libc::ftruncate(fd, len as libc::off_t) }, 0);
        // SAFETY: a fresh shared mapping of the memfd; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: `p` is a writable mapping of `len` bytes.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 1, 8 << 20) };
        let rss = guest_rss_kib(std::process::id(), 160 << 10);
        // SAFETY: unmaps exactly the mapping made above.
        unsafe { libc::munmap(p, len) };
        // SAFETY: closes the memfd made above, used nowhere else.
        unsafe { libc::close(fd) };
        assert!(
            rss.is_some_and(|k| (8 << 10..160 << 10).contains(&k)),
            "{rss:?}"
        );
    }

    #[test]
    fn a_measured_wait_gives_up_at_its_deadline_and_leaves_the_child_alone() {
        let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
        let e = wait_measured(&mut child, Some(1 << 20), Some(Instant::now())).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        // Not reaped: still the caller's to stop.
        assert!(child.try_wait().unwrap().is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_jailed_vmm_is_the_child_that_is_pid_1_of_its_namespace() {
        if !nix_root() {
            return;
        }
        // A shell as the relay: beside a plain child (as a virtiofsd is), one that is PID 1
        // of a new PID namespace.
        let mut relay = Command::new("/bin/sh")
            .args(["-c", "sleep 5 & exec unshare --pid --fork sleep 5"])
            .spawn()
            .unwrap();
        let mut plain = Command::new("/bin/sh")
            .args(["-c", "sleep 5; exit 3"])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let jailed = loop {
            if let Some(c) = jailed_child(relay.id()) {
                break Some(c);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // A shell's child in the shell's own PID namespace is no jailed VMM.
        let not = jailed_child(plain.id());
        for c in [&mut relay, &mut plain] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        assert!(jailed.is_some(), "the namespaced child was not found");
        assert_eq!(not, None);
        assert!(private_kib(std::process::id()).is_some_and(|k| k > 0));
    }

    fn nix_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn a_measured_wait_reaps_with_the_exit_status_and_peak_rss() {
        let mut child = Command::new("/bin/sh")
            .args(["-c", "sleep 0.05; exit 3"])
            .spawn()
            .unwrap();
        let m = wait_measured(&mut child, Some(1 << 20), None).unwrap();
        assert_eq!(m.status.code(), Some(3));
        assert!(m.maxrss_kib > 0);
        assert_eq!(m.guest_kib, None);
        assert_eq!(m.overhead_kib(), m.maxrss_kib);
    }
}
