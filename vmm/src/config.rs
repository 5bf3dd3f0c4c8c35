//! What a VM is made of, and the checks done before anything touches /dev/kvm.

use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use isol_guest_init::spec::{
    BundleRoot, Limits, MountSpec, OciSetup, Rlimit, Security, SockFilter,
};

use crate::arch::x86_64::mptable;
pub use crate::device_manager::{DiskSpec, FsShare, GuestIp, GuestTty, NetConfig};

/// Smallest guest: the kernel at 16 MiB plus room for the initramfs and the kernel.
pub const MIN_MEMORY_MIB: u32 = 32;

/// Errors in a [`VmConfig`].
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Zero vCPUs.
    #[error("A VM needs at least one vCPU; pass --cpus 1 or more")]
    NoVcpus,
    /// More vCPUs than the MP table describes.
    #[error("Asked for {0} vCPUs, more than the {max} this VMM supports; pass fewer", max = mptable::MAX_CPUS)]
    TooManyVcpus(u8),
    /// Memory below the minimum.
    #[error("Guest memory of {0} MiB is too small; give the VM at least {MIN_MEMORY_MIB} MiB")]
    MemoryTooSmall(u32),
    /// Memory above host RAM.
    #[error(
        "Guest memory of {asked} MiB is more than the host's {host} MiB; give the VM less memory"
    )]
    MemoryTooLarge {
        /// Requested.
        asked: u32,
        /// Host total.
        host: u64,
    },
    /// The kernel is missing or unreadable.
    #[error(
        "Kernel {path} cannot be read: {source}; build it with guest-images/build-kernel.sh or pass --kernel"
    )]
    Kernel {
        /// Path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The guest init binary is missing.
    #[error(
        "Guest init {path} cannot be read: {source}; build it with `cargo build -p isol-guest-init --release --target x86_64-unknown-linux-gnu` (static)"
    )]
    Init {
        /// Path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A root filesystem is given but no init to run in it.
    #[error("A root filesystem was given without a guest init binary; set the init path")]
    NoInit,
    /// An empty command.
    #[error("No command to run in the VM; give a command after --")]
    NoCommand,
    /// The initramfs of [`Rootfs::Initrd`] is missing or unreadable.
    #[error("Initramfs {path} cannot be read: {source}; give a newc cpio archive with --initrd")]
    Initrd {
        /// Path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A zero timeout.
    #[error("A timeout of zero would stop the VM before it starts; give a positive timeout")]
    ZeroTimeout,
}

/// Which boot protocol to use for an ELF vmlinux (a bzImage always uses the 64-bit
/// protocol).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootProtocol {
    /// PVH when the ELF has the PVH note, else the 64-bit Linux boot protocol.
    #[default]
    Auto,
    /// Always the 64-bit Linux boot protocol.
    Linux64,
    /// Always PVH (error if the kernel lacks the note).
    Pvh,
}

/// Where the guest's root filesystem comes from. isol always adds `/init` (the guest
/// init), `/isol/spec` and `/dev/console` on top. The VMM reads no image: an image's
/// layers become a [`Rootfs::Disk`] or a [`Rootfs::Cpio`] before (`isol_image::vm`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Rootfs {
    /// A ready-made newc cpio archive (uncompressed or compressed by a method the guest
    /// kernel supports); isol's own archive is appended to it.
    Cpio(PathBuf),
    /// Only isol's own files: init and the spec (the workload must be in neither, so
    /// this is for kernels/tests that need no workload).
    #[default]
    Empty,
    /// No initramfs at all (bare test kernels).
    None,
    /// A complete initramfs, loaded as it is (`isol run --initrd`): its own `/init` is PID 1
    /// and isol adds nothing (no guest init, no run spec, no devices beyond the UARTs and the
    /// i8042's reset line). The run ends when the guest reboots (`reboot=k`: status 0, as
    /// Firecracker and QEMU `-no-reboot` end) or writes isol's exit port.
    Initrd(PathBuf),
    // -- virtio work (devices.md): root disk --
    /// An ext4 image of the root filesystem (see `isol_image::vm`), attached read-only
    /// as virtio-blk; the initramfs holds only init and the spec, and init mounts the
    /// disk as the lower layer of an overlay with a tmpfs upper.
    Disk(PathBuf),
}

// -- virtio work (devices.md): workload stdio --
/// How the workload's stdin/stdout/stderr reach the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestStdio {
    /// All three on the serial console (ttyS0), mixed with kernel messages.
    #[default]
    Serial,
    /// Three virtio-console ports: the VMM's stdin, stdout and stderr, kept separate;
    /// stdin EOF reaches the guest. The serial console carries only kernel logs.
    VirtioConsole,
}

/// What to run inside the guest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunSpec {
    /// argv; looked up in the `PATH` from `env` when `args[0]` has no `/`.
    pub args: Vec<OsString>,
    /// Environment, each `KEY=VALUE`.
    pub env: Vec<OsString>,
    /// Working directory (empty = `/`).
    pub workdir: OsString,
    /// Hostname (empty = the kernel's default).
    pub hostname: OsString,
    /// The identity to run as, `uid[:gid]` or `name[:group]` (names from the guest root's
    /// /etc/passwd and /etc/group); empty: root.
    pub user: OsString,
    /// Capabilities, `no_new_privs` and seccomp filter, applied by the guest init; the
    /// default keeps every capability and installs no filter.
    pub security: Security,
    /// `/etc` files the guest init writes before the workload, `(name, content)`: the run's
    /// `hostname`, `hosts` and `resolv.conf`; empty: the image's own.
    pub etc_files: Vec<(String, String)>,
    /// `--pids-limit` and `--memory` for the workload's cgroup in the guest, which the guest
    /// init makes and shows at `/sys/fs/cgroup`; the default limits nothing.
    pub limits: Limits,
    /// An OCI bundle's root on a virtio-fs share (`isol-runc` on kvm), with the config's
    /// mounts; the VM then has no root disk ([`Rootfs::Empty`]).
    pub bundle: Option<BundleRoot>,
    /// Resource limits of the workload (an OCI config's `process.rlimits`).
    pub rlimits: Vec<Rlimit>,
    /// Exactly these supplementary groups (an OCI config's `additionalGids`); none: those
    /// the guest root's /etc/group gives.
    pub groups: Option<Vec<u32>>,
    /// An OCI config's sysctls, domain name, umask, masked and read-only paths, which the
    /// guest init applies (`isol-runc` on kvm); the default sets none.
    pub oci: OciSetup,
}

/// A buffer the serial console can write into (for tests and for callers that want the
/// guest output themselves).
#[derive(Clone, Default)]
pub struct SharedBuffer(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    /// Everything written so far.
    pub fn contents(&self) -> Vec<u8> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl fmt::Debug for SharedBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SharedBuffer({} bytes)", self.contents().len())
    }
}

impl io::Write for SharedBuffer {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the guest's serial console goes.
#[derive(Debug, Clone, Default)]
pub enum SerialOutput {
    /// The VMM's stdout (the workload's output shares the serial console).
    #[default]
    Stdout,
    /// The VMM's stderr: the kernel log kept apart from a workload whose stdout has its
    /// own stream ([`GuestStdio::VirtioConsole`]), as `isol run --console` does.
    Stderr,
    /// A shared in-memory buffer.
    Buffer(SharedBuffer),
    /// Discarded.
    Sink,
}

/// Everything needed to run one microVM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Kernel: ELF vmlinux (64-bit or PVH entry) or bzImage.
    pub kernel: PathBuf,
    /// Boot protocol for an ELF kernel.
    pub boot_protocol: BootProtocol,
    /// Root filesystem.
    pub rootfs: Rootfs,
    /// The static guest init binary, put at `/init`. Required unless `rootfs` is
    /// [`Rootfs::None`] or [`Rootfs::Initrd`] (unused there).
    pub init: Option<PathBuf>,
    /// vCPU count.
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// The workload.
    pub spec: RunSpec,
    /// Show the kernel log on the console (otherwise `quiet loglevel=0`).
    pub console: bool,
    /// Print exit counts and the boot timeline to stderr at the end.
    pub trace_exits: bool,
    /// Give up on a guest that has not powered off after this long.
    pub timeout: Option<Duration>,
    /// Extra kernel command-line parameters, appended.
    pub extra_cmdline: Vec<String>,
    /// Where the serial console goes.
    pub serial_output: SerialOutput,
    /// Forward the VMM's stdin to the guest's serial port.
    pub forward_stdin: bool,
    /// Where the workload's stdio goes (virtio work).
    pub stdio: GuestStdio,
    /// Extra virtio-blk disks, after the root disk (`/dev/vdb`…, or `/dev/vda`… without one).
    pub disks: Vec<DiskSpec>,
    /// A pseudo-terminal for the workload (needs [`GuestStdio::VirtioConsole`]).
    pub tty: Option<GuestTty>,
    /// The exec channel (`isol exec`; docs/vmm.md, "The exec channel"): a listening unix
    /// socket, borrowed (it must stay open while the VM is built; the VMM serves a duplicate),
    /// whose clients start processes in the guest through the `isol.control` port. Needs
    /// [`GuestStdio::VirtioConsole`]. `None`: no channel.
    pub control: Option<std::os::fd::RawFd>,
    /// A network card: virtio-net on an open tap, and what the guest init gives `eth0`
    /// (`--network bridge`); `None`: loopback only.
    pub net: Option<NetConfig>,
    /// Host directories shared through virtio-fs (`-v DIR:DIR`), each on a socket connected
    /// to its vhost-user backend; with any, guest RAM is a memfd the backends map.
    pub shares: Vec<FsShare>,
    /// Where boot profiles are kept (`vstate::boot_profile`: the guest RAM a boot touches
    /// before init, faulted in ahead of the next boot of the same machine); `None` turns
    /// them off. Callers pick it ([`default_boot_profiles`] is isol's convention); the VMM
    /// reads no environment.
    pub boot_profiles: Option<PathBuf>,
    /// Which of the VMM's threads get a seccomp filter (`seccomp.rs`; docs/vmm.md, "Seccomp").
    pub seccomp: crate::seccomp::Seccomp,
    /// Test only: a thread of this kind makes one forbidden syscall right after installing
    /// its filter, which ends the VMM (the lab tests of the trap). Not for users.
    #[doc(hidden)]
    pub seccomp_test_violation: Option<crate::seccomp::ThreadKind>,
    /// Called once the VM is built, before any vCPU runs guest code and before the device
    /// threads start: where a jailed VMM drops its privileges (`isol-vmm`'s jail). An error
    /// ends the run as [`crate::VmmError::Jail`].
    pub before_guest: Option<BeforeGuest>,
    /// Called once, on a vCPU thread, when the guest init says the workload's exec succeeded
    /// (the exit port's `WorkloadRunning` phase): where `isol-runc start` is told its
    /// workload runs (`launch::StartGate`).
    pub workload_running: Option<WorkloadRunning>,
}

/// The [`VmConfig::before_guest`] hook: everything that needed privileges (opening
/// `/dev/kvm`, the kernel and the disks, creating the VM) is done when it is called.
#[derive(Clone)]
pub struct BeforeGuest(pub std::sync::Arc<dyn Fn() -> Result<(), String> + Send + Sync>);

impl std::fmt::Debug for BeforeGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeGuest(..)")
    }
}

/// The [`VmConfig::workload_running`] hook.
#[derive(Clone)]
pub struct WorkloadRunning(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for WorkloadRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkloadRunning(..)")
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            kernel: PathBuf::new(),
            boot_protocol: BootProtocol::Auto,
            rootfs: Rootfs::Empty,
            init: None,
            vcpus: 1,
            memory_mib: 256,
            spec: RunSpec::default(),
            console: false,
            trace_exits: false,
            timeout: None,
            extra_cmdline: Vec::new(),
            serial_output: SerialOutput::Stdout,
            forward_stdin: true,
            stdio: GuestStdio::Serial,
            disks: Vec::new(),
            tty: None,
            control: None,
            net: None,
            shares: Vec::new(),
            boot_profiles: None,
            seccomp: crate::seccomp::Seccomp::default(),
            seccomp_test_violation: None,
            before_guest: None,
            workload_running: None,
        }
    }
}

// Conventions for the callers that build a VmConfig (isol run, the examples, the tests),
// read from the environment when they are called; nothing in the VMM's boot calls them.

/// isol's cache: `$ISOL_CACHE`, else `/var/cache/isol` (the guest kernel's build, boot
/// profiles).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("ISOL_CACHE").map_or_else(|| PathBuf::from("/var/cache/isol"), PathBuf::from)
}

/// Where isol keeps boot profiles ([`VmConfig::boot_profiles`]): `<cache>/boot-profile`
/// ([`cache_dir`]), or `None` when `ISOL_BOOT_PROFILE=off`.
pub fn default_boot_profiles() -> Option<PathBuf> {
    let off = std::env::var_os("ISOL_BOOT_PROFILE").is_some_and(|v| v == "off");
    (!off).then(|| cache_dir().join("boot-profile"))
}

/// The guest kernel that `guest-images/build-kernel.sh` built: `$ISOL_KERNEL_DIR`, else the
/// newest `<cache>/kernel/<key>/` holding a `vmlinux` ([`cache_dir`]). The directory also
/// holds `bzImage`, `config` and `release`.
pub fn cached_kernel_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("ISOL_KERNEL_DIR") {
        return Some(d.into());
    }
    fs::read_dir(cache_dir().join("kernel"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|d| d.join("vmlinux").is_file())
        .max_by_key(|d| {
            fs::metadata(d.join("vmlinux"))
                .and_then(|m| m.modified())
                .ok()
        })
}

/// Where the static guest init is, by convention: `$ISOL_GUEST_INIT`, else
/// `isol-guest-init` next to the running executable (how a release ships them), else
/// `None` (the caller must say).
pub fn default_guest_init() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ISOL_GUEST_INIT") {
        return Some(p.into());
    }
    let beside = std::env::current_exe()
        .ok()?
        .parent()?
        .join("isol-guest-init");
    beside.exists().then_some(beside)
}

/// Host RAM in MiB from /proc/meminfo, if readable.
pub fn host_memory_mib() -> Option<u64> {
    let s = fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

impl VmConfig {
    /// Guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mib) << 20
    }

    /// Checks everything that can be checked without KVM.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 {
            return Err(ConfigError::NoVcpus);
        }
        if self.vcpus > mptable::MAX_CPUS {
            return Err(ConfigError::TooManyVcpus(self.vcpus));
        }
        if self.memory_mib < MIN_MEMORY_MIB {
            return Err(ConfigError::MemoryTooSmall(self.memory_mib));
        }
        if let Some(host) = host_memory_mib()
            && u64::from(self.memory_mib) > host
        {
            return Err(ConfigError::MemoryTooLarge {
                asked: self.memory_mib,
                host,
            });
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroTimeout);
        }
        fs::File::open(&self.kernel).map_err(|source| ConfigError::Kernel {
            path: self.kernel.clone(),
            source,
        })?;
        if let Rootfs::Initrd(path) = &self.rootfs {
            // Its own /init runs: no guest init, no workload of isol's.
            fs::File::open(path).map_err(|source| ConfigError::Initrd {
                path: path.clone(),
                source,
            })?;
        } else if self.rootfs != Rootfs::None {
            let init = self.init.as_ref().ok_or(ConfigError::NoInit)?;
            fs::File::open(init).map_err(|source| ConfigError::Init {
                path: init.clone(),
                source,
            })?;
            if self.spec.args.is_empty() {
                return Err(ConfigError::NoCommand);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn valid() -> (VmConfig, tempfile::NamedTempFile) {
        let mut k = tempfile::NamedTempFile::new().unwrap();
        k.write_all(b"\x7fELF").unwrap();
        let cfg = VmConfig {
            kernel: k.path().to_owned(),
            init: Some(k.path().to_owned()),
            spec: RunSpec {
                args: vec!["true".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        (cfg, k)
    }

    #[test]
    fn valid_config_passes() {
        let (c, _k) = valid();
        c.validate().unwrap();
        assert_eq!(c.memory_bytes(), 256 << 20);
    }

    #[test]
    fn rejects_bad_cpu_and_memory() {
        let (mut c, _k) = valid();
        c.vcpus = 0;
        assert!(matches!(c.validate(), Err(ConfigError::NoVcpus)));
        c.vcpus = 200;
        assert!(matches!(c.validate(), Err(ConfigError::TooManyVcpus(200))));
        c.vcpus = 2;
        c.memory_mib = 16;
        assert!(matches!(c.validate(), Err(ConfigError::MemoryTooSmall(16))));
        c.memory_mib = u32::MAX;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::MemoryTooLarge { .. })
        ));
    }

    #[test]
    fn rejects_missing_files_and_command() {
        let (mut c, _k) = valid();
        c.kernel = "/nonexistent/vmlinux".into();
        let e = c.validate().unwrap_err();
        assert!(matches!(e, ConfigError::Kernel { .. }));
        assert!(e.to_string().contains("build-kernel.sh"));
        let (mut c, _k) = valid();
        c.init = None;
        assert!(matches!(c.validate(), Err(ConfigError::NoInit)));
        let (mut c, _k) = valid();
        c.spec.args.clear();
        assert!(matches!(c.validate(), Err(ConfigError::NoCommand)));
        c.rootfs = Rootfs::None;
        c.validate().unwrap();
        // A whole initramfs needs neither isol's init nor a command, only to be readable.
        let (mut c, k) = valid();
        c.init = None;
        c.spec.args.clear();
        c.rootfs = Rootfs::Initrd(k.path().to_owned());
        c.validate().unwrap();
        c.rootfs = Rootfs::Initrd("/nonexistent/initrd.cpio".into());
        let e = c.validate().unwrap_err();
        assert!(matches!(e, ConfigError::Initrd { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/initrd.cpio"), "{e}");
        let (mut c, _k) = valid();
        c.timeout = Some(Duration::ZERO);
        assert!(matches!(c.validate(), Err(ConfigError::ZeroTimeout)));
    }

    #[test]
    fn messages_are_one_capitalized_line() {
        let msgs = [
            ConfigError::NoVcpus.to_string(),
            ConfigError::TooManyVcpus(99).to_string(),
            ConfigError::MemoryTooSmall(1).to_string(),
            ConfigError::NoInit.to_string(),
        ];
        for m in msgs {
            assert!(
                m.starts_with(char::is_uppercase) && !m.contains('\n'),
                "{m}"
            );
        }
    }
}
