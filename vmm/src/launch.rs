//! Starting one VM for `isol run --backend kvm`: the launch description the CLI hands over,
//! and the one implementation of everything around [`crate::run`] (the `-t` terminal, the
//! error line, the `--json` report, the exit status).
//!
//! The CLI does what needs the CLI (flags, image store, root disk, kernel and init lookup,
//! validation), fills a [`Launch`] and then **execs** `isol-vmm` ([`vmm_binary`]) with it
//! on an inherited memfd ([`exec`]): the same process (pid, parent, signals, `wait4`'s
//! accounting) continues as a small executable holding only the VMM, so the VM's memory
//! overhead does not include the pages of isol's CLI, container runtime and image store.
//! `isol-vmm` reads the description back ([`main`]) and calls [`run`]. Without `isol-vmm`
//! the CLI calls [`run`] itself, in its own process.
//!
//! Wire format on the memfd: the line `isol-launch <FORMAT>\n`, then the [`Launch`] as JSON
//! (paths, arguments and environment as byte arrays, so any bytes survive).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{
    DiskSpec, FsShare, GuestIp, GuestTty, Limits, NetConfig, Security, SockFilter,
};
use crate::seccomp::{Filters, Seccomp, ThreadKind};
use crate::{BootProtocol, GuestStdio, Rootfs, RunSpec, SerialOutput, VmConfig, VmmError};

/// The VMM executable's file name, looked for beside the running executable.
pub const VMM_BINARY: &str = "isol-vmm";
/// Environment override: the VMM executable's path; set but empty, the VMM runs in-process.
pub const VMM_ENV: &str = "ISOL_VMM";
/// The argument before the number of the descriptor holding the description.
pub const LAUNCH_FD_ARG: &str = "--launch-fd";
/// Bump whenever [`Launch`] changes: an `isol-vmm` from another build refuses it clearly.
pub const FORMAT: u32 = 16;
const MAGIC: &str = "isol-launch";

/// Errors of the launch itself (the VM's own are [`VmmError`]).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The VM failed.
    #[error(transparent)]
    Vmm(#[from] VmmError),
    /// No pipe for the window sizes.
    #[error("Cannot create a pipe for the terminal: {0}; raise the open-file limit")]
    TtyPipe(io::Error),
    /// No resize thread.
    #[error("Cannot start the terminal resize thread: {0}; raise the process limit")]
    TtyThread(io::Error),
    /// The memfd could not be made or written.
    #[error("Cannot write the VM's description for isol-vmm: {0}; check the memory limits")]
    Handover(io::Error),
    /// exec of isol-vmm failed.
    #[error(
        "Cannot start the VMM {}: {source}; reinstall isol-vmm beside isol, or set {VMM_ENV}= (empty) to run the VMM inside isol",
        path.display()
    )]
    Exec {
        /// The executable.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// isol-vmm was started without a readable description.
    #[error(
        "Cannot read the VM's description from isol: {0}; isol-vmm is started by `isol run --backend kvm`"
    )]
    Read(io::Error),
    /// Not a description, or another format.
    #[error(
        "The VM's description from isol is not launch format {FORMAT}: {0}; install the isol-vmm built with this isol beside it"
    )]
    Decode(String),
    /// isol-vmm was run by hand.
    #[error(
        "this is the VMM that `isol run --backend kvm` starts; it is not meant to be run by hand"
    )]
    Usage,
}

/// One VM as `isol run --backend kvm` starts it: what [`VmConfig`] needs, minus the parts
/// that only exist in a process (the `-t` pipe, block-device counters), plus the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Launch {
    /// Guest kernel.
    #[serde(with = "os_bytes")]
    pub kernel: PathBuf,
    /// The image's read-only ext4 root disk; empty with [`Launch::bundle`].
    #[serde(with = "os_bytes")]
    pub root_disk: PathBuf,
    /// `isol run --initrd`: a complete initramfs booted as it is, its own `/init` PID 1
    /// ([`Rootfs::Initrd`]); [`Launch::root_disk`] and [`Launch::init`] are then empty and
    /// nothing of the workload's fields is used.
    #[serde(default, with = "os_bytes_opt")]
    pub initrd: Option<PathBuf>,
    /// `isol-runc` on kvm: the guest's root is an OCI bundle's root filesystem on one of
    /// [`Launch::shares`], instead of a root disk.
    #[serde(default)]
    pub bundle: Option<LaunchBundle>,
    /// Resource limits of the workload, `(RLIMIT_*, soft, hard)`.
    #[serde(default)]
    pub rlimits: Vec<(u32, u64, u64)>,
    /// Exactly these supplementary groups; none: those the guest root's /etc/group gives.
    #[serde(default)]
    pub groups: Option<Vec<u32>>,
    /// The static guest init.
    #[serde(with = "os_bytes")]
    pub init: PathBuf,
    /// vCPUs.
    pub vcpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// argv of the workload.
    #[serde(with = "os_bytes_vec")]
    pub args: Vec<OsString>,
    /// Its environment, `KEY=VALUE`.
    #[serde(with = "os_bytes_vec")]
    pub env: Vec<OsString>,
    /// Its working directory.
    #[serde(with = "os_bytes")]
    pub workdir: OsString,
    /// The guest's hostname.
    #[serde(with = "os_bytes")]
    pub hostname: OsString,
    /// `-u`: the workload's `uid[:gid]` or `name[:group]`; empty: root.
    #[serde(with = "os_bytes")]
    pub user: OsString,
    /// The capabilities the workload may hold (bit n = capability n); none: every one.
    pub capabilities: Option<u64>,
    /// The workload's inheritable set (an OCI config's, `isol-runc`); else empty.
    #[serde(default)]
    pub inheritable: u64,
    /// The workload's ambient set (an OCI config's, `isol-runc`); else empty.
    #[serde(default)]
    pub ambient: u64,
    /// Set `no_new_privs` for the workload.
    pub no_new_privs: bool,
    /// The workload's seccomp filter, each instruction as [`SockFilter::to_u64`]; empty:
    /// none.
    pub workload_seccomp: Vec<u64>,
    /// Extra disks (`-v` of a file or block device).
    pub disks: Vec<LaunchDisk>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--console`: the kernel log on stderr (the workload's stdout stays its own).
    pub console: bool,
    /// `--trace-exits`.
    pub trace_exits: bool,
    /// `-i`: forward stdin.
    pub interactive: bool,
    /// `-t`: a pty for the workload.
    pub tty: bool,
    /// `--json`: print the report on stderr at the end.
    pub json: bool,
    /// The image's name, for the report.
    pub image: String,
    /// Where boot profiles are kept ([`VmConfig::boot_profiles`]; none: off).
    #[serde(with = "os_bytes_opt")]
    pub boot_profiles: Option<PathBuf>,
    /// The log filter isol ran with (`--log-level` or `$ISOL_LOG`), for isol-vmm's subscriber.
    #[serde(default)]
    pub log_filter: Option<String>,
    /// Seccomp filters on the VMM's threads (`ISOL_VMM_SECCOMP`, default on; `seccomp.rs`).
    pub seccomp: bool,
    /// Test only (`ISOL_VMM_SECCOMP=test-violation:KIND`): a thread of this kind makes one
    /// forbidden syscall after installing its filter. Not for users.
    pub seccomp_test_violation: Option<ThreadKind>,
    /// The jail isol-vmm runs the VM in (`src/jail.rs`); `None`: no jail
    /// (`ISOL_VMM_JAIL=off`, a caller that is not root, or the VMM in isol's own process).
    pub jail: Option<LaunchJail>,
    /// `--network bridge`: the guest's network card; `None`: loopback only.
    #[serde(default)]
    pub net: Option<LaunchNet>,
    /// `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf` for the guest, `(name, content)`, as a
    /// container run with the same flags gets them (`isol_container::vm_etc_files`).
    #[serde(default)]
    pub etc_files: Vec<(String, String)>,
    /// The exec channel (`isol exec`): a listening unix socket isol made; `None`: none.
    #[serde(default)]
    pub control: Option<LaunchControl>,
    /// `-v DIR:DIR`: host directories shared through virtio-fs, each served by a virtiofsd
    /// that isol started.
    #[serde(default)]
    pub shares: Vec<LaunchShare>,
    /// `--pids-limit`: the workload's `pids.max` in the guest's cgroup; none: no limit.
    #[serde(default)]
    pub pids_limit: Option<u64>,
    /// `--memory` in bytes: the workload's `memory.max` in the guest's cgroup (the guest's
    /// RAM is [`Launch::memory_mib`]); none: no limit.
    #[serde(default)]
    pub memory_limit: Option<u64>,
    /// Files of isol's the process isol exec'd removes once the VM has ended (the run's record
    /// for `isol ps`, its mark on its image): what isol would have removed itself had it not
    /// become the VMM. After a SIGKILL the next isol's sweep removes them.
    #[serde(default, with = "os_bytes_vec")]
    pub leftovers: Vec<OsString>,
    /// `isol-runc` on kvm: the config's sysctls, domain name, umask, masked and read-only
    /// paths, for the guest init (run spec version 6); the default sets none.
    #[serde(default)]
    pub oci: LaunchOci,
    /// `isol-runc` on kvm: the start gate (`exec.fifo`), open for writing (not close-on-exec)
    /// in the process that runs the VM; `isol-runc start` reads it to its end. The VMM
    /// writes `S` to it once the guest init says the workload's exec succeeded, or
    /// `E<status> <why>` once the VM ended without that, and closes it ([`StartGate`]).
    #[serde(default)]
    pub start_gate: Option<i32>,
}

/// What an OCI config sets up in the guest beyond the workload's process ([`Launch::oci`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchOci {
    /// `linux.sysctl`, `(key, value)`, checked by the caller (namespaced keys only).
    pub sysctl: Vec<(String, String)>,
    /// `domainname`; empty: the kernel's.
    pub domainname: String,
    /// `process.user.umask`; none: the guest init's (0022).
    pub umask: Option<u32>,
    /// Paths masked in the guest (runc's defaults and the config's).
    #[serde(with = "os_bytes_vec")]
    pub masked_paths: Vec<OsString>,
    /// Paths made read-only in the guest (runc's defaults and the config's).
    #[serde(with = "os_bytes_vec")]
    pub readonly_paths: Vec<OsString>,
}

impl LaunchOci {
    /// The settings as the run spec carries them.
    pub fn spec(&self) -> crate::config::OciSetup {
        use std::os::unix::ffi::OsStrExt;
        let paths = |l: &[OsString]| l.iter().map(|p| p.as_bytes().to_vec()).collect();
        crate::config::OciSetup {
            sysctl: self
                .sysctl
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            domainname: self.domainname.as_bytes().to_vec(),
            umask: self.umask,
            masked_paths: paths(&self.masked_paths),
            readonly_paths: paths(&self.readonly_paths),
        }
    }
}

/// An OCI bundle's root in the guest (`isol-runc` on kvm): the share of [`Launch::shares`]
/// tagged `tag` holds the root filesystem as `rootfs` and each bind mount's source; the guest
/// init builds the root from it (docs/oci.md, "The kvm backend").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchBundle {
    /// The share's virtio-fs tag.
    pub tag: String,
    /// `root.readonly`.
    pub readonly: bool,
    /// The config's mounts beyond the guest init's own, in order.
    pub mounts: Vec<LaunchMount>,
    /// `process.oomScoreAdj` of the workload and exec'd processes in the guest.
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
}

/// One mount of a [`LaunchBundle`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchMount {
    /// The filesystem type; empty: a bind mount of `source`, a path inside the share.
    pub fstype: String,
    /// The share's path of a bind's source, or the filesystem's source name.
    #[serde(with = "os_bytes")]
    pub source: OsString,
    /// Absolute path in the guest.
    #[serde(with = "os_bytes")]
    pub target: OsString,
    /// mount(2) flags.
    pub flags: u64,
    /// The filesystem's own options.
    pub data: String,
}

impl LaunchBundle {
    /// The bundle as the run spec carries it.
    pub fn spec(&self) -> crate::config::BundleRoot {
        use std::os::unix::ffi::OsStrExt;
        crate::config::BundleRoot {
            tag: self.tag.as_bytes().to_vec(),
            readonly: self.readonly,
            mounts: self
                .mounts
                .iter()
                .map(|m| crate::config::MountSpec {
                    fstype: m.fstype.as_bytes().to_vec(),
                    source: m.source.as_bytes().to_vec(),
                    target: m.target.as_bytes().to_vec(),
                    flags: m.flags,
                    data: m.data.as_bytes().to_vec(),
                })
                .collect(),
            oom_score_adj: self.oom_score_adj,
        }
    }
}

/// The exec channel's listening socket, inherited across the exec (docs/vmm.md, "The exec
/// channel"): the jailed VMM serves it, the process isol exec'd removes its path after the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchControl {
    /// The socket's descriptor, open (not close-on-exec) in the process that runs the VM.
    pub fd: i32,
    /// Where it is bound (`<store>/runs/<id>.sock`).
    #[serde(with = "os_bytes")]
    pub path: PathBuf,
}

/// A host directory shared with the guest (virtio-fs): the socket connected to its
/// virtiofsd, and where the guest mounts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchShare {
    /// The vhost-user socket, connected, open (not close-on-exec) in the process that runs
    /// the VM.
    pub socket_fd: i32,
    /// The device's tag.
    pub tag: String,
    /// Where the guest init mounts it; empty: nowhere of itself (a [`LaunchBundle`]'s).
    #[serde(with = "os_bytes")]
    pub guest_path: OsString,
    /// Mounted read-only (virtiofsd runs `--readonly` too).
    pub read_only: bool,
    /// virtiofsd's pid: a child of the process that execs isol-vmm, which waits for it
    /// when the run ends ([`end_backends`]).
    pub backend_pid: u32,
}

impl LaunchShare {
    /// The share as the VMM takes it.
    pub fn config(&self) -> FsShare {
        FsShare {
            socket: self.socket_fd,
            tag: self.tag.clone(),
            guest_path: (!self.guest_path.is_empty()).then(|| self.guest_path.clone()),
            read_only: self.read_only,
        }
    }
}

/// How long [`end_backends`] waits for a backend that lost its VMM to exit before it kills
/// it: virtiofsd exits as soon as its socket closes, this is for one that hangs.
const BACKEND_GRACE: Duration = Duration::from_secs(5);

/// The run is over in the process that started the backends (the relay, or the VMM
/// without a jail): closes this process's end of each share's socket — with the VMM's
/// gone, that disconnects the backend, which exits — and reaps each backend, killing one
/// that is still there after [`BACKEND_GRACE`]. Nothing is left running or unreaped.
pub fn end_backends(launch: &Launch) {
    for s in &launch.shares {
        // SAFETY: closing the launch's own descriptor, which nothing else in this process
        // uses once the VM is gone (EBADF if it was closed already is harmless).
        unsafe { libc::close(s.socket_fd) };
    }
    for s in &launch.shares {
        let Ok(pid) = i32::try_from(s.backend_pid) else {
            continue;
        };
        let start = std::time::Instant::now();
        loop {
            let mut st = 0;
            // SAFETY: waitpid on a child of ours writes only to `st`.
            let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
            if r != 0 {
                // Reaped, or not our child (ECHILD): done either way.
                break;
            }
            if start.elapsed() > BACKEND_GRACE {
                // SAFETY: `pid` is our unreaped child, so the pid is still its.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                // SAFETY: as above; blocks until the killed child is reaped.
                unsafe { libc::waitpid(pid, &mut st, 0) };
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The VM's network card on isol's bridge (`--network bridge`): the tap isol made and
/// attached, inherited across the exec, and the lease to give back after the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchNet {
    /// The tap's descriptor, open (not close-on-exec) in the process that runs the VM.
    pub tap_fd: i32,
    /// The tap's name on the host.
    pub tap: String,
    /// The guest's MAC address.
    pub mac: [u8; 6],
    /// The guest's address on the bridge.
    pub address: std::net::Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The bridge's address: the guest's default gateway.
    pub gateway: std::net::Ipv4Addr,
    /// The network state directory holding the lease (`isol_container::network`), which
    /// the process isol exec'd releases after the VM.
    #[serde(with = "os_bytes")]
    pub state_root: PathBuf,
    /// The published ports (`-p`), docker's way (`0.0.0.0:18080->8080/tcp`), for `--json`.
    #[serde(default)]
    pub ports: Vec<String>,
    /// `--network ns:PATH`: the tap is in a pod's network namespace, redirected to its
    /// interface (`isol_container::network::pod`); this is the run's record there, which the
    /// process isol exec'd releases after the VM instead of a lease on the bridge.
    #[serde(default, with = "os_bytes_opt")]
    pub pod: Option<PathBuf>,
    /// virtio feature bits the card does not offer (`ISOL_NET_WITHOUT`); 0 normally.
    #[serde(default)]
    pub masked_features: u64,
}

impl LaunchNet {
    /// The card as the VMM takes it.
    pub fn config(&self) -> NetConfig {
        NetConfig {
            tap: self.tap_fd,
            mac: self.mac,
            ip: Some(GuestIp {
                address: self.address,
                prefix: self.prefix,
                gateway: self.gateway,
            }),
            stats: Arc::default(),
            masked_features: self.masked_features,
        }
    }
}

/// Where and how `isol-vmm` jails itself (docs/design.md, "The VMM's jail").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchJail {
    /// The run's id: its run dir `<state_root>/<id>` and its cgroup `isol/<id>`.
    pub id: String,
    /// Where run dirs are kept (swept for those of killed runs).
    #[serde(with = "os_bytes")]
    pub state_root: PathBuf,
    /// The cgroup hierarchy's root.
    #[serde(with = "os_bytes")]
    pub cgroup_root: PathBuf,
    /// The unprivileged user and group the VMM becomes once the VM is built.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// The cgroup's memory limit in bytes (guest RAM and the VMM's own margin).
    pub memory_max: u64,
    /// The cgroup's task limit (the VMM's threads).
    pub pids_max: u64,
    /// The cgroup's CPU limits, which bound the vCPU threads (an OCI config's
    /// `linux.resources.cpu` on kvm); none by default.
    pub cpu: JailCpu,
}

/// CPU limits of the jailed VMM's cgroup, in the kernel's units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JailCpu {
    /// CFS quota per period, in microseconds.
    pub quota_us: Option<u64>,
    /// CFS period, in microseconds.
    pub period_us: Option<u64>,
    /// Weight in v1 `cpu.shares` units (v2: `cpu.weight`, mapped as runc does).
    pub shares: Option<u64>,
    /// `cpuset.cpus`, in the kernel's list format.
    pub cpus: Option<String>,
    /// `cpuset.mems`.
    pub mems: Option<String>,
}

/// The user and group the jailed VMM becomes once its VM is built: `nobody`/`nogroup`,
/// an id that owns no files on any distribution. Two VMMs under the same id cannot signal or
/// trace each other: each is PID 1 of its own PID namespace and sees no other process.
pub const JAIL_ID: u32 = 65534;
/// The jailed VMM's memory beyond guest RAM, for its cgroup's limit: the VMM's own pages
/// (~2 MiB), KVM's per-VM and per-vCPU kernel memory, and the page cache of the files it reads
/// (the kernel, the root disk), which the limit reclaims rather than counts against the
/// guest. Measured in the lab: docs/design.md, "The VMM's jail".
pub const JAIL_MEMORY_MARGIN: u64 = 64 << 20;
/// Tasks beyond one per vCPU: the VMM's own threads (kernel loading, prefault, late I/O, the
/// terminal, the virtio devices, the event loop), with room.
pub const JAIL_EXTRA_TASKS: u64 = 32;

impl LaunchJail {
    /// The jail of `launch`'s VM, run `id`: its run dir under `state_root`, its cgroup
    /// `isol/<id>` under `cgroup_root`, its user [`JAIL_ID`], its limits from the VM's size.
    pub fn new(id: &str, state_root: PathBuf, cgroup_root: PathBuf, launch: &Launch) -> Self {
        LaunchJail {
            id: id.to_owned(),
            state_root,
            cgroup_root,
            uid: JAIL_ID,
            gid: JAIL_ID,
            memory_max: (u64::from(launch.memory_mib) << 20) + JAIL_MEMORY_MARGIN,
            pids_max: u64::from(launch.vcpus) + JAIL_EXTRA_TASKS,
            cpu: JailCpu::default(),
        }
    }
}

/// What the jail's setup ([`main`]'s `enter_jail`) decided for this process.
#[derive(Debug)]
pub enum Jailed {
    /// Run the VM here, calling the hook (if any) before the guest runs
    /// ([`VmConfig::before_guest`]).
    Run(Option<crate::config::BeforeGuest>),
    /// This process is done (the relay outside the jail, once the jailed VMM ended): exit
    /// with this status.
    Exit(i32),
}

/// An extra virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchDisk {
    /// Host file or block device.
    #[serde(with = "os_bytes")]
    pub path: PathBuf,
    /// Offered read-only.
    pub read_only: bool,
    /// Where the guest init makes its device node.
    #[serde(with = "os_bytes")]
    pub guest_path: OsString,
}

impl Launch {
    /// The VM this describes; `tty` is the window-size pipe of `-t` ([`run`] makes it).
    pub fn vm_config(&self, tty: Option<GuestTty>) -> VmConfig {
        VmConfig {
            kernel: self.kernel.clone(),
            boot_protocol: BootProtocol::Auto,
            rootfs: match (&self.initrd, &self.bundle) {
                (Some(initrd), _) => Rootfs::Initrd(initrd.clone()),
                (None, Some(_)) => Rootfs::Empty,
                (None, None) => Rootfs::Disk(self.root_disk.clone()),
            },
            init: self.initrd.is_none().then(|| self.init.clone()),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            spec: RunSpec {
                args: self.args.clone(),
                env: self.env.clone(),
                workdir: self.workdir.clone(),
                hostname: self.hostname.clone(),
                user: self.user.clone(),
                security: Security {
                    capabilities: self.capabilities,
                    inheritable: self.inheritable,
                    ambient: self.ambient,
                    no_new_privs: self.no_new_privs,
                    seccomp: self
                        .workload_seccomp
                        .iter()
                        .map(|&i| SockFilter::from_u64(i))
                        .collect(),
                },
                etc_files: self.etc_files.clone(),
                limits: Limits {
                    pids_max: self.pids_limit,
                    memory_max: self.memory_limit,
                },
                bundle: self.bundle.as_ref().map(LaunchBundle::spec),
                rlimits: self
                    .rlimits
                    .iter()
                    .map(|&(resource, soft, hard)| crate::config::Rlimit {
                        resource,
                        soft,
                        hard,
                    })
                    .collect(),
                groups: self.groups.clone(),
                oci: self.oci.spec(),
            },
            console: self.console,
            trace_exits: self.trace_exits,
            timeout: self.timeout,
            extra_cmdline: Vec::new(),
            // The workload has its own ports; the kernel log must not mix with its stdout.
            // A whole initramfs's init has only the serial console, on stdout.
            serial_output: match self.initrd {
                Some(_) => SerialOutput::Stdout,
                None => SerialOutput::Stderr,
            },
            forward_stdin: self.interactive,
            stdio: match self.initrd {
                Some(_) => GuestStdio::Serial,
                None => GuestStdio::VirtioConsole,
            },
            disks: self
                .disks
                .iter()
                .map(|d| DiskSpec {
                    path: d.path.clone(),
                    read_only: d.read_only,
                    guest_path: Some(d.guest_path.clone()),
                    ..Default::default()
                })
                .collect(),
            tty,
            control: self.control.as_ref().map(|c| c.fd),
            net: self.net.as_ref().map(LaunchNet::config),
            shares: self.shares.iter().map(LaunchShare::config).collect(),
            boot_profiles: self.boot_profiles.clone(),
            // isol-vmm filters its main thread too (`run_in_vmm`).
            seccomp: if self.seccomp {
                Seccomp::Threads
            } else {
                Seccomp::Off
            },
            seccomp_test_violation: self.seccomp_test_violation,
            before_guest: None,
            workload_running: None,
        }
    }

    /// The wire form: header line, then JSON.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = format!("{MAGIC} {FORMAT}\n").into_bytes();
        serde_json::to_writer(&mut out, self).expect("a Launch always serializes");
        out
    }

    /// Reads the wire form back, refusing other formats.
    pub fn decode(bytes: &[u8]) -> Result<Launch, LaunchError> {
        let nl = bytes
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(bytes.len());
        let header = String::from_utf8_lossy(&bytes[..nl]);
        match header.strip_prefix(MAGIC).map(str::trim) {
            Some(f) if f == FORMAT.to_string() => {}
            Some(f) => return Err(LaunchError::Decode(format!("isol sent format {f}"))),
            None => return Err(LaunchError::Decode("no launch header".into())),
        }
        serde_json::from_slice(&bytes[nl + 1..]).map_err(|e| LaunchError::Decode(e.to_string()))
    }

    /// A close-on-exec memfd holding the wire form, positioned at its start.
    pub fn to_memfd(&self) -> Result<OwnedFd, LaunchError> {
        // SAFETY: a valid C string; the returned fd is checked and then owned.
        let fd = unsafe { libc::memfd_create(c"isol-launch".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(LaunchError::Handover(io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd, owned by this File from now on.
        let mut f = unsafe { File::from_raw_fd(fd) };
        f.write_all(&self.encode())
            .and_then(|()| f.rewind())
            .map_err(LaunchError::Handover)?;
        Ok(f.into())
    }

    /// Reads a description from `fd` (taking it over and closing it).
    pub fn from_fd(fd: OwnedFd) -> Result<Launch, LaunchError> {
        let mut bytes = Vec::new();
        File::from(fd)
            .read_to_end(&mut bytes)
            .map_err(LaunchError::Read)?;
        Launch::decode(&bytes)
    }
}

/// Serde for paths and OS strings as their bytes (serde's own refuses non-UTF-8 paths).
mod os_bytes {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes as bytes.
    pub struct Bytes<'a>(pub &'a [u8]);

    impl Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    pub fn serialize<S: Serializer, T: AsRef<OsStr>>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        Bytes(v.as_ref().as_bytes()).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: From<OsString>>(d: D) -> Result<T, D::Error> {
        Ok(OsString::from_vec(Vec::<u8>::deserialize(d)?).into())
    }
}

/// [`os_bytes`] for a list.
mod os_bytes_vec {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[OsString], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|o| super::os_bytes::Bytes(o.as_bytes())))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OsString>, D::Error> {
        Ok(Vec::<Vec<u8>>::deserialize(d)?
            .into_iter()
            .map(OsString::from_vec)
            .collect())
    }
}

/// [`os_bytes`] for an optional path.
mod os_bytes_opt {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        v.as_ref()
            .map(|p| super::os_bytes::Bytes(p.as_os_str().as_bytes()))
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Ok(Option::<Vec<u8>>::deserialize(d)?.map(|b| OsString::from_vec(b).into()))
    }
}

/// The VMM executable to exec: `$ISOL_VMM` when set (empty: none, run in-process), else
/// `isol-vmm` beside the running executable when it is there (how isol is built and
/// installed), else none.
pub fn vmm_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(VMM_ENV) {
        return (!p.is_empty()).then(|| p.into());
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(VMM_BINARY)))
        .filter(|p| p.is_file())
}

/// Replaces this process by the VMM executable `vmm`, handing it `launch` on an inherited
/// memfd. `shown` goes on its command line after `--`, for `ps` only (isol's own argv).
/// Returns only when that failed.
pub fn exec(vmm: &Path, launch: &Launch, shown: impl IntoIterator<Item = OsString>) -> LaunchError {
    use std::os::unix::process::CommandExt;
    let fd = match launch.to_memfd() {
        Ok(fd) => fd,
        Err(e) => return e,
    };
    // SAFETY: F_SETFD on an fd we own: it survives the exec (and nothing else).
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        return LaunchError::Handover(io::Error::last_os_error());
    }
    let _ = io::stdout().flush();
    let source = std::process::Command::new(vmm)
        .arg0(VMM_BINARY)
        .arg(LAUNCH_FD_ARG)
        .arg(fd.as_raw_fd().to_string())
        .arg("--")
        .args(shown)
        .exec();
    LaunchError::Exec {
        path: vmm.to_owned(),
        source,
    }
}

/// `isol-vmm`'s main: `isol-vmm --launch-fd N [-- …]`; returns the exit status.
/// `init_logging` gets the launch's log filter before the VM is built: the binary sets up
/// its subscriber there (the VMM library only emits events).
/// `enter_jail` then sets up the jail (`Launch::jail`) and says whether this process runs
/// the VM or only waits for the one that does.
pub fn main(
    args: impl IntoIterator<Item = OsString>,
    init_logging: impl FnOnce(Option<&str>),
    enter_jail: impl FnOnce(&Launch) -> Jailed,
) -> i32 {
    let launch = read_args(args).and_then(Launch::from_fd);
    match launch {
        Ok(l) => {
            if let Some(fd) = l.start_gate {
                // SAFETY: F_GETFD/F_SETFD on a descriptor number only: nothing the VMM starts
                // (a jail keeps it, as a fork) holds `start` up, and a number not open fails.
                if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
                    eprintln!(
                        "isol: the start gate {fd} isol-runc handed over is not open: {}",
                        io::Error::last_os_error()
                    );
                    return 125;
                }
            }
            init_logging(l.log_filter.as_deref());
            // Read while /proc is there: a jailed VMM has none.
            vmm_exe();
            match enter_jail(&l) {
                // This process ends with the VM: its main thread is filtered too.
                Jailed::Run(hook) => run_as(&l, Seccomp::Process, hook),
                Jailed::Exit(code) => code,
            }
        }
        Err(LaunchError::Usage) => {
            eprintln!("isol-vmm: {}", LaunchError::Usage);
            125
        }
        Err(e) => {
            eprintln!("isol: {}", one_line(&e));
            125
        }
    }
}

fn read_args(args: impl IntoIterator<Item = OsString>) -> Result<OwnedFd, LaunchError> {
    let mut args = args.into_iter().skip(1);
    if args.next().as_deref() != Some(OsStr::new(LAUNCH_FD_ARG)) {
        return Err(LaunchError::Usage);
    }
    let fd: i32 = args
        .next()
        .and_then(|n| n.to_str()?.parse().ok())
        .filter(|n| *n > 2)
        .ok_or(LaunchError::Usage)?;
    // SAFETY: F_GETFD only checks that the fd is open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(LaunchError::Read(io::Error::last_os_error()));
    }
    // SAFETY: an open fd isol left for us; nothing else in this process uses it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Nothing the VMM starts should inherit it, were it to close it late.
    // SAFETY: F_SETFD on an fd we own.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(fd)
}

/// Runs the VM: the `-t` terminal around it, then the error line (`isol: …`) or nothing,
/// the `--json` report; returns the exit status (the workload's, 124, 125 or 128 + N).
/// The caller has validated `launch.vm_config(None)` (as `isol run` does, once per run): it is
/// not validated again here. In the caller's process (isol without isol-vmm), which goes on
/// after it: the seccomp filters cover the VMM's threads, not the calling one.
pub fn run(launch: &Launch) -> i32 {
    run_as(launch, Seccomp::Threads, None)
}

/// [`run`] with `whom` filtered (when the launch has filters on), calling `before_guest`
/// once the VM is built ([`VmConfig::before_guest`]).
fn run_as(launch: &Launch, whom: Seccomp, before_guest: Option<crate::config::BeforeGuest>) -> i32 {
    let gate = launch.start_gate.map(|fd| Arc::new(StartGate::adopt(fd)));
    let code = run_gated(launch, whom, before_guest, gate.clone());
    if let Some(g) = gate {
        g.say(format!("E{code} {}", not_started(code, &launch.args)).as_bytes());
    }
    code
}

/// `isol-runc start`'s gate in the VMM ([`Launch::start_gate`]): `S` once the workload runs,
/// else, once the VM ended, `E<status> <why>`; closed after either (the gate's end is what
/// `start` waits for). A VMM killed before either closes it saying nothing.
#[derive(Debug)]
struct StartGate(std::sync::Mutex<Option<File>>);

impl StartGate {
    /// The gate from the descriptor the launch names, which nothing else in this process owns.
    fn adopt(fd: i32) -> Self {
        // SAFETY: the descriptor isol-runc left open for this process (checked open by
        // `main`), taken once: `run_as` runs once per process.
        Self(std::sync::Mutex::new(Some(unsafe {
            File::from_raw_fd(fd)
        })))
    }

    /// Writes `what` and closes the gate, unless that was done already. A `start` that is gone
    /// (EPIPE: Rust ignores SIGPIPE) misses nothing it could act on.
    fn say(&self, what: &[u8]) {
        let taken = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut f) = taken {
            let _ = f.write_all(what);
        }
    }
}

/// Why a workload did not start, from the VM's exit status (the guest init's, for an exec that
/// failed: 127 not found, 126 cannot execute, as docker's; `args[0]` is its command), in the
/// container backend's words.
fn not_started(code: i32, args: &[OsString]) -> String {
    let name = args
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    match code {
        127 if !name.contains('/') => {
            format!("exec: {name:?}: executable file not found in $PATH")
        }
        127 => format!("exec: {name:?}: no such file or directory"),
        126 => format!(
            "exec: {name:?}: the guest cannot execute it (permission denied or not a program)"
        ),
        _ => format!(
            "the VM ended (status {code}) before its workload started; the container's stderr says why"
        ),
    }
}

/// [`run_as`], with `start` told once the workload runs.
fn run_gated(
    launch: &Launch,
    whom: Seccomp,
    before_guest: Option<crate::config::BeforeGuest>,
    gate: Option<Arc<StartGate>>,
) -> i32 {
    let whom = if launch.seccomp { whom } else { Seccomp::Off };
    tracing::debug!(
        seccomp = ?whom,
        "seccomp filters on the VMM's threads (ISOL_VMM_SECCOMP=off turns them off)"
    );
    let filters = match whom {
        Seccomp::Off => None,
        _ => match Filters::build(launch.seccomp_test_violation) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("isol: {}", one_line(&e));
                return 125;
            }
        },
    };
    // For the report: read now (cached), the main thread's filter has no readlink and a
    // jailed VMM no /proc.
    let vmm_exe = vmm_exe();
    let tty = if launch.tty {
        match kvm_tty(launch.interactive, filters.as_ref()) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("isol: {}", one_line(&e));
                return 125;
            }
        }
    } else {
        None
    };
    let (guest_tty, guard) = tty.unzip();
    // isol validated this config before handing it over (src/commands/run.rs).
    let cfg = VmConfig {
        seccomp: whom,
        before_guest,
        workload_running: gate
            .map(|g| crate::config::WorkloadRunning(Arc::new(move || g.say(b"S")))),
        ..launch.vm_config(guest_tty)
    };
    let result = crate::builder::build_and_run_validated(&cfg, filters.as_ref());
    // The terminal is restored before anything is printed on it.
    drop(guard);
    let (exit_code, outcome) = match result {
        Ok(o) => (o.exit_code, Some(o)),
        Err(e) => {
            eprintln!("isol: {}", one_line(&e));
            if let Some(regs) = e.registers() {
                eprintln!("isol: {regs}");
            }
            let code = e.exit_code();
            if code == 125 {
                return code;
            }
            (code, None)
        }
    };
    if launch.json {
        eprintln!("{}", report(launch, exit_code, outcome.as_ref(), vmm_exe));
    }
    exit_code
}

/// The `--json` line.
fn report(
    launch: &Launch,
    exit_code: i32,
    outcome: Option<&crate::VmOutcome>,
    vmm_exe: Option<&Path>,
) -> String {
    use serde_json::json;
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
    let ms = |d: Option<Duration>| d.map(|d| round3(d.as_secs_f64() * 1e3));
    let t = outcome.map(|o| o.timings);
    json!({
        "backend": "kvm",
        "image": launch.image,
        "exit_code": exit_code,
        "vcpus": launch.vcpus,
        "memory_mib": launch.memory_mib,
        // Offsets from VMM start, in milliseconds.
        "timeline_ms": t.map(|t| json!({
            "first_vcpu_entry": ms(t.first_vcpu_entry),
            "first_console_output": ms(t.first_console_output),
            "init_start": ms(t.init_start),
            "workload_start": ms(t.workload_start),
            "workload_exit": ms(t.workload_exit),
            "vm_exit": ms(Some(t.vm_exit)),
        })),
        "total_ms": t.map(|t| round3(t.vm_exit.as_secs_f64() * 1e3)),
        // The executable the VM ran in: isol-vmm, or isol itself without it.
        "vmm_exe": vmm_exe,
        // The guest's address on isol's bridge (`--network bridge`), as for containers.
        "address": launch.net.as_ref().map(|n| n.address.to_string()),
        "ports": launch.net.as_ref().map_or(&[][..], |n| &n.ports[..]),
    })
    .to_string()
}

/// The executable the VM runs in, read once (a jailed VMM has no /proc to read it from).
fn vmm_exe() -> Option<&'static Path> {
    static EXE: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    EXE.get_or_init(|| std::fs::read_link("/proc/self/exe").ok())
        .as_deref()
}

/// An error and its causes on one line, each cause once.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !out.contains(&s) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&s);
        }
        cause = c.source();
    }
    // One line, and nothing a terminal would act on: a name or a tar entry from outside may
    // carry escape sequences.
    out.chars()
        .map(|c| match c {
            '\n' => " ".to_string(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// `-t`: while it lives, the terminal is in raw mode (with `-i`, so ^C travels to the
/// guest's pty as a byte) and SIGWINCH is blocked in every thread started after it, so
/// only the resize thread sees it.
struct TtyGuard {
    saved: Option<libc::termios>,
    old_mask: libc::sigset_t,
}

impl Drop for TtyGuard {
    fn drop(&mut self) {
        crate::seccomp::set_saved_terminal(None);
        if let Some(t) = &self.saved {
            // SAFETY: restores the attributes tcgetattr returned, on our stdin.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t) };
        }
        // SAFETY: restores this thread's mask saved in `kvm_tty`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.old_mask, std::ptr::null_mut()) };
    }
}

/// The window size of our terminal as the line the guest init expects ("0 0" when stdin
/// is not a terminal: the guest keeps its default).
fn winsize_line() -> String {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it from our stdin when it is a tty.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer to a live winsize.
    if unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) } != 0 {
        ws.ws_row = 0;
        ws.ws_col = 0;
    }
    format!("{} {}\n", ws.ws_row, ws.ws_col)
}

/// Sets up `-t`: a pipe carrying window sizes to the guest (the initial size first, then
/// one line per SIGWINCH, written by a thread), and raw mode with `-i`.
fn kvm_tty(
    interactive: bool,
    filters: Option<&Filters>,
) -> Result<(GuestTty, TtyGuard), LaunchError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(LaunchError::TtyPipe(io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd, owned by this File from now on.
    let r = unsafe { File::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let mut w = unsafe { File::from_raw_fd(fds[1]) };

    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a live sigset.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: as above.
    unsafe { libc::sigaddset(&mut set, libc::SIGWINCH) };
    // SAFETY: valid pointers to live sigsets; changes only this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old_mask) };
    let mut saved = None;
    let guard = |saved| TtyGuard { saved, old_mask };
    // The size once SIGWINCH is blocked: a resize from now on is pending for the thread
    // below, one before it is in this size (a client such as ctr sizes the terminal only
    // once the VM is started).
    if let Err(e) = w.write_all(winsize_line().as_bytes()) {
        drop(guard(None));
        return Err(LaunchError::TtyPipe(e));
    }
    let filters = filters.cloned();
    std::thread::Builder::new()
        .name("isol-winsize".into())
        .spawn(move || {
            crate::seccomp::enter(filters.as_ref(), ThreadKind::Winsize);
            loop {
                let mut sig = 0;
                // SAFETY: `set` holds SIGWINCH, blocked in this thread (inherited).
                if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
                    return;
                }
                // The VM is gone when the pipe's reader is: stop then.
                if w.write_all(winsize_line().as_bytes()).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| {
            drop(guard(None));
            LaunchError::TtyThread(e)
        })?;

    // SAFETY: isatty only queries the fd.
    if interactive && unsafe { libc::isatty(libc::STDIN_FILENO) } == 1 {
        // SAFETY: termios is plain data filled by tcgetattr.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } == 0 {
            saved = Some(t);
            // A trap that ends the VMM puts these back too.
            crate::seccomp::set_saved_terminal(saved);
            // SAFETY: `t` came from tcgetattr; cfmakeraw edits it in place.
            unsafe { libc::cfmakeraw(&mut t) };
            // SAFETY: valid fd and termios.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
        }
    }
    Ok((
        GuestTty {
            control: Some(Arc::new(r)),
        },
        guard(saved),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn sample() -> Launch {
        Launch {
            kernel: PathBuf::from(OsString::from_vec(b"/k/vm\xfflinux".to_vec())),
            root_disk: "/store/vm-disks/abc.ext4".into(),
            bundle: None,
            initrd: None,
            rlimits: Vec::new(),
            groups: None,
            init: "/usr/local/bin/isol-guest-init".into(),
            vcpus: 2,
            memory_mib: 128,
            args: vec![
                "sh".into(),
                "-c".into(),
                "echo 'a b'\n\"q\" ✓".into(),
                OsString::from_vec(vec![0xfe, b'x', 0]),
            ],
            env: vec!["PATH=/bin".into(), "EMPTY=".into()],
            workdir: "/w d".into(),
            hostname: "h1".into(),
            user: OsString::from_vec(b"1000:\xffgroup".to_vec()),
            capabilities: Some(0xa804_25fb),
            inheritable: 0,
            ambient: 0,
            no_new_privs: true,
            workload_seccomp: vec![0x0000_0004_0000_0020, u64::MAX, 0],
            disks: vec![LaunchDisk {
                path: "/tmp/d.img".into(),
                read_only: true,
                guest_path: "/data".into(),
            }],
            timeout: Some(Duration::from_millis(2500)),
            console: false,
            trace_exits: true,
            interactive: true,
            tty: false,
            json: true,
            image: "busybox".into(),
            boot_profiles: Some(PathBuf::from(OsString::from_vec(
                b"/cache/boot-\xfeprofile".to_vec(),
            ))),
            log_filter: Some("isol_vmm=debug,warn".into()),
            seccomp: true,
            seccomp_test_violation: Some(ThreadKind::Vcpu),
            jail: Some(LaunchJail {
                id: "0123456789ab".into(),
                state_root: "/var/lib/isol/vms".into(),
                cgroup_root: "/sys/fs/cgroup".into(),
                uid: 65534,
                gid: 65534,
                memory_max: 200 << 20,
                pids_max: 40,
                cpu: JailCpu {
                    quota_us: Some(50_000),
                    period_us: Some(100_000),
                    shares: Some(512),
                    cpus: Some("0-1".into()),
                    mems: Some("0".into()),
                },
            }),
            net: Some(LaunchNet {
                tap_fd: 7,
                tap: "isolt01234567".into(),
                mac: [2, 0x69, 10, 88, 0, 2],
                address: [10, 88, 0, 2].into(),
                prefix: 24,
                gateway: [10, 88, 0, 1].into(),
                state_root: "/var/lib/isol/containers".into(),
                ports: vec!["0.0.0.0:18080->8080/tcp".into()],
                pod: Some("/var/lib/isol/containers/net/pods/0123456789ab.json".into()),
                masked_features: 1 << 29,
            }),
            etc_files: vec![
                ("hostname".into(), "h1\n".into()),
                (
                    "hosts".into(),
                    "127.0.0.1\tlocalhost\n10.88.0.2\th1\n".into(),
                ),
            ],
            control: Some(LaunchControl {
                fd: 7,
                path: "/var/lib/isol/runs/abc.sock".into(),
            }),
            shares: vec![LaunchShare {
                socket_fd: 9,
                tag: "isol-fs0".into(),
                guest_path: OsString::from_vec(b"/sh\xffared".to_vec()),
                read_only: true,
                backend_pid: 4242,
            }],
            pids_limit: Some(10),
            memory_limit: Some(64 << 20),
            leftovers: Vec::new(),
            start_gate: None,
            oci: Default::default(),
        }
    }

    #[test]
    fn a_bundle_launch_has_no_root_disk_and_carries_its_mounts_to_the_spec() {
        let l = Launch {
            root_disk: PathBuf::new(),
            bundle: Some(LaunchBundle {
                tag: "isol-fs0".into(),
                readonly: true,
                mounts: vec![LaunchMount {
                    fstype: String::new(),
                    source: "mounts/0".into(),
                    target: "/etc/hosts".into(),
                    flags: 1,
                    data: String::new(),
                }],
                oom_score_adj: Some(100),
            }),
            rlimits: vec![(7, 1024, 4096)],
            groups: Some(vec![10]),
            oci: LaunchOci {
                sysctl: vec![("kernel.shmmax".into(), "65536".into())],
                domainname: "example.org".into(),
                umask: Some(0o077),
                masked_paths: vec!["/proc/kcore".into()],
                readonly_paths: vec![OsString::from_vec(b"/r\xffo".to_vec())],
            },
            ..sample()
        };
        let back = Launch::decode(&l.encode()).unwrap();
        assert_eq!(back, l);
        let cfg = back.vm_config(None);
        assert_eq!(cfg.rootfs, Rootfs::Empty);
        let root = cfg.spec.bundle.unwrap();
        assert_eq!(root.tag, b"isol-fs0");
        assert!(root.readonly);
        assert_eq!(root.mounts[0].target, b"/etc/hosts");
        assert_eq!(root.oom_score_adj, Some(100));
        assert_eq!(cfg.spec.rlimits[0].hard, 4096);
        assert_eq!(cfg.spec.groups, Some(vec![10]));
        assert_eq!(
            cfg.spec.oci.sysctl,
            [(b"kernel.shmmax".to_vec(), b"65536".to_vec())]
        );
        assert_eq!(cfg.spec.oci.domainname, b"example.org");
        assert_eq!(cfg.spec.oci.umask, Some(0o077));
        assert_eq!(cfg.spec.oci.masked_paths, [b"/proc/kcore".to_vec()]);
        assert_eq!(cfg.spec.oci.readonly_paths, [b"/r\xffo".to_vec()]);
    }

    #[test]
    fn an_initrd_launch_boots_that_archive_alone_on_the_serial_console() {
        let l = Launch {
            initrd: Some(PathBuf::from(OsString::from_vec(b"/i/ram\xfffs".to_vec()))),
            root_disk: PathBuf::new(),
            init: PathBuf::new(),
            args: Vec::new(),
            ..sample()
        };
        let back = Launch::decode(&l.encode()).unwrap();
        assert_eq!(back, l);
        let cfg = back.vm_config(None);
        assert_eq!(cfg.rootfs, Rootfs::Initrd(l.initrd.clone().unwrap()));
        assert_eq!(cfg.init, None);
        assert_eq!(cfg.stdio, GuestStdio::Serial);
        assert!(matches!(cfg.serial_output, SerialOutput::Stdout));
        // Without one, a root disk as before.
        let cfg = sample().vm_config(None);
        assert_eq!(cfg.stdio, GuestStdio::VirtioConsole);
        assert!(cfg.init.is_some());
    }

    #[test]
    fn a_launch_survives_the_memfd_round_trip_byte_for_byte() {
        let l = sample();
        let fd = l.to_memfd().unwrap();
        // The fd isol creates is close-on-exec until `exec` hands it over.
        // SAFETY: F_GETFD on an fd we own.
        let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        let back = Launch::from_fd(fd).unwrap();
        assert_eq!(back, l);
        // And it becomes the VM isol would have run in-process.
        let cfg = back.vm_config(None);
        assert_eq!(cfg.rootfs, Rootfs::Disk(l.root_disk.clone()));
        assert_eq!(cfg.spec.args, l.args);
        assert_eq!(cfg.spec.user, l.user);
        assert_eq!(cfg.spec.etc_files, l.etc_files);
        assert_eq!(
            cfg.spec.limits,
            Limits {
                pids_max: Some(10),
                memory_max: Some(64 << 20)
            }
        );
        assert_eq!(cfg.spec.security.capabilities, Some(0xa804_25fb));
        assert!(cfg.spec.security.no_new_privs);
        let filter: Vec<u64> = cfg
            .spec
            .security
            .seccomp
            .iter()
            .map(|i| i.to_u64())
            .collect();
        assert_eq!(filter, l.workload_seccomp);
        assert_eq!(
            cfg.disks[0].guest_path.as_deref(),
            Some(OsStr::new("/data"))
        );
        assert!(cfg.forward_stdin && cfg.tty.is_none());
        assert_eq!(cfg.boot_profiles, l.boot_profiles);
        let share = &cfg.shares[0];
        assert_eq!((share.socket, share.tag.as_str()), (9, "isol-fs0"));
        assert_eq!(share.guest_path, Some(l.shares[0].guest_path.clone()));
        assert!(share.read_only);
        // Profiles off travel too.
        let off = Launch {
            boot_profiles: None,
            ..l
        };
        assert_eq!(Launch::decode(&off.encode()).unwrap(), off);
    }

    #[test]
    fn one_line_escapes_control_characters() {
        let e = std::io::Error::other("image 'a\u{1b}[31mred' not found\nat all\r");
        assert_eq!(one_line(&e), "image 'a\\u{1b}[31mred' not found at all\\r");
    }

    #[test]
    fn other_formats_and_garbage_are_refused_in_one_line() {
        let mut other = sample().encode();
        other[MAGIC.len() + 1] = b'9';
        let bad = [
            other,
            b"hello".to_vec(),
            format!("{MAGIC} {FORMAT}\n{{\"kernel\":1}}").into_bytes(),
            Vec::new(),
        ];
        for b in bad {
            let e = Launch::decode(&b).unwrap_err();
            let m = one_line(&e);
            assert!(matches!(e, LaunchError::Decode(_)), "{m}");
            assert!(
                !m.contains('\n') && m.contains("install the isol-vmm"),
                "{m}"
            );
        }
        let mut extra = sample().encode();
        extra.truncate(extra.len() - 1);
        extra.extend_from_slice(b",\"new_field\":1}");
        assert!(Launch::decode(&extra).is_err());
    }

    #[test]
    fn isol_vmm_refuses_to_run_by_hand() {
        for args in [
            vec!["isol-vmm"],
            vec!["isol-vmm", "--launch-fd"],
            vec!["isol-vmm", "--launch-fd", "1"],
            vec!["isol-vmm", "run"],
        ] {
            let r = read_args(args.into_iter().map(OsString::from));
            assert!(matches!(r, Err(LaunchError::Usage)));
        }
        // A descriptor that is not open.
        let r = read_args(["isol-vmm", LAUNCH_FD_ARG, "999999"].map(OsString::from));
        assert!(matches!(r, Err(LaunchError::Read(_))));
    }
}
