//! The command line, docker-like.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "isol",
    version,
    about = "Run the same workload in a KVM microVM or a namespaced container, side by side",
    after_help = "Exit codes: the workload's own; 125 isol failed; 126 cannot execute; 127 not found; 128+N killed by signal N.\n\nLearning containers and VMs? The teaching labs run isol step by step: docs/labs/README.md (English, 中文)."
)]
pub struct Cli {
    /// What isol logs on stderr [default: warn, or the filter in $ISOL_LOG, e.g.
    /// ISOL_LOG=debug or ISOL_LOG=isol_vmm=trace]
    #[arg(long, global = true, value_enum, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-level`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// As a filter directive.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command in a new container or microVM.
    Run(Box<RunArgs>),
    /// Manage the local image store.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Show what this host offers and lacks for each backend, and what to do about it.
    Doctor(DoctorArgs),
    /// Run a command inside the lab: a QEMU VM with a real /dev/kvm, for hosts without
    /// hardware virtualization.
    Lab(LabArgs),
    /// Measure isol's start-up against crun and runc on this machine, and write a report.
    Bench(BenchArgs),
    /// List the live runs (containers and microVMs, in the foreground or detached).
    Ps(PsArgs),
    /// Show live runs in detail, as a JSON array: state, pids, network (address, gateway,
    /// MAC, published ports), limits, and a microVM's vCPUs, memory and kernel.
    Inspect(InspectArgs),
    /// Stop runs: SIGTERM to the workload, then SIGKILL after a grace period.
    Stop(StopArgs),
    /// Run a further command in a running container (its namespaces, cgroup, root, user,
    /// capabilities and seccomp filter).
    Exec(ExecArgs),
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Print this instead of the JSON, once per run: text with `{{.FIELD}}` or
    /// `{{.FIELD.SUBFIELD}}` replaced by that field of the run's JSON object, e.g.
    /// '{{.network.address}}' (only field paths: no functions or ranges).
    #[arg(short = 'f', long, value_name = "TEMPLATE")]
    pub format: Option<String>,
    /// Runs to show, by name or id (or a unique id prefix).
    #[arg(required = true, value_name = "NAME|ID")]
    pub runs: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait after SIGTERM before SIGKILL.
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    pub time: u32,
    /// Runs to stop, by name or id (or a unique id prefix).
    #[arg(required = true, value_name = "NAME|ID")]
    pub runs: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open and connected.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal (microVMs; refused for containers).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Start the process and return at once (microVMs; refused for containers).
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// The user to run as, `uid[:gid]` or `name[:group]` (microVMs; default: the run's user;
    /// refused for containers).
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub user: Option<String>,
    /// Set an environment variable (KEY=VALUE), beyond the run's own.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory (default: the run's).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// The run, by name or id (or a unique id prefix).
    #[arg(value_name = "NAME|ID")]
    pub run: String,
    /// The command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "CMD"
    )]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A namespaced Linux container run by isol's own runtime.
    Container,
    /// A KVM microVM driven by isol's own VMM.
    Kvm,
}

/// `--network`: none, host, bridge, `container:NAME|ID`, or `ns:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Own network namespace with loopback only.
    None,
    /// The host's network namespace.
    Host,
    /// A veth pair on the isol0 bridge, with NAT to the outside.
    Bridge,
    /// The network namespace of another running container (by name or id).
    Container(String),
    /// An existing network namespace by path (podman's `ns:PATH`): a container joins it; a
    /// VM's NIC takes over its single interface (a tap there, tc-redirected: a CNI pod's).
    Ns(PathBuf),
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Network::None => f.write_str("none"),
            Network::Host => f.write_str("host"),
            Network::Bridge => f.write_str("bridge"),
            Network::Container(n) => write!(f, "container:{n}"),
            Network::Ns(p) => write!(f, "ns:{}", p.display()),
        }
    }
}

fn parse_network(s: &str) -> Result<Network, String> {
    match s {
        "none" => Ok(Network::None),
        "host" => Ok(Network::Host),
        "bridge" => Ok(Network::Bridge),
        _ => match s.strip_prefix("ns:") {
            Some("") => Err(
                "'ns:' names no network namespace: give its path, e.g. ns:/run/netns/NAME".into(),
            ),
            Some(path) => Ok(Network::Ns(PathBuf::from(path))),
            None => container_ref(s).map(Network::Container).ok_or_else(|| {
                format!(
                    "'{s}' is not a network mode: use none, host, bridge, container:NAME or ns:PATH"
                )
            }),
        },
    }
}

/// The NAME of `container:NAME`.
fn container_ref(s: &str) -> Option<String> {
    s.strip_prefix("container:")
        .filter(|run| !run.is_empty())
        .map(str::to_owned)
}

/// `--ipc`, docker's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpcMode {
    /// Its own IPC namespace, which no other run may join (docker's default).
    Private,
    /// Its own IPC namespace, which other runs may join with `container:NAME`.
    Shareable,
    /// The host's IPC namespace.
    Host,
    /// The IPC namespace of another running container, started with `--ipc shareable`.
    Container(String),
}

fn parse_ipc(s: &str) -> Result<IpcMode, String> {
    match s {
        "private" => Ok(IpcMode::Private),
        "shareable" => Ok(IpcMode::Shareable),
        "host" => Ok(IpcMode::Host),
        _ => container_ref(s).map(IpcMode::Container).ok_or_else(|| {
            format!("'{s}' is not an IPC mode: use private, shareable, host or container:NAME")
        }),
    }
}

/// `--pid`, `--uts`: the host's namespace, or the run's own (the default).
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostOrOwn {
    /// The host's namespace.
    Host,
    /// A namespace of the run's own (the default; docker has no word for it).
    Private,
}

/// `--cgroupns`, `--userns`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NsMode {
    /// The host's namespace.
    Host,
    /// A namespace of the run's own.
    Private,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Where to run the workload.
    #[arg(long, value_enum, default_value_t = Backend::Container)]
    pub backend: Backend,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the host's value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory inside the container (absolute).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Hostname inside the container (default: the run's id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// Memory limit (container: cgroup limit; kvm: guest RAM), e.g. 64m, 1g.
    #[arg(short = 'm', long, value_name = "SIZE", allow_hyphen_values = true)]
    pub memory: Option<String>,
    /// CPUs (container: CPU quota, e.g. 0.5; kvm: number of vCPUs).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub cpus: Option<f64>,
    /// Maximum number of processes (at least 2: the container's init and the workload).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub pids_limit: Option<i64>,
    /// CPUs the container may run on, e.g. 0-1,3 (container: cgroup cpuset; not with kvm).
    #[arg(long, value_name = "LIST")]
    pub cpuset_cpus: Option<String>,
    /// Network mode: none, host, bridge, container:NAME (join another container's), or
    /// ns:PATH (an existing network namespace, e.g. a CNI pod's: a container joins it, a VM
    /// takes over its interface).
    #[arg(long, value_name = "MODE", default_value = "none", value_parser = parse_network)]
    pub network: Network,
    /// Publish a port of the run on the host ([IP:][HOSTPORT:]PORT[/tcp|/udp], docker's
    /// syntax; ranges 8000-8001:80-81; no HOSTPORT: a free one, shown by `isol ps`); with
    /// --network bridge. Repeatable.
    #[arg(short = 'p', long = "publish", value_name = "PORT")]
    pub publish: Vec<String>,
    /// Name the run (unique among live runs); `isol ps/stop/exec` take it as well as the id.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Run in the background: print the run's id and return; `isol stop` ends it.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// PID namespace: host (see and signal the host's processes), or the run's own.
    #[arg(long, value_enum, value_name = "MODE")]
    pub pid: Option<HostOrOwn>,
    /// IPC namespace: private (default), shareable, host, or container:NAME.
    #[arg(long, value_name = "MODE", value_parser = parse_ipc)]
    pub ipc: Option<IpcMode>,
    /// UTS namespace (hostname): host, or the run's own.
    #[arg(long, value_enum, value_name = "MODE")]
    pub uts: Option<HostOrOwn>,
    /// Cgroup namespace: private (default: the run sees its cgroup as /), or host.
    #[arg(long, value_enum, value_name = "MODE")]
    pub cgroupns: Option<NsMode>,
    /// User namespace: host (default as root: root in the container is the host's root, held
    /// in by capabilities and seccomp), or private (root in the container is the caller's uid
    /// on the host: the default and only mode when isol runs as a user; refused as root, for
    /// now).
    #[arg(long, value_enum, value_name = "MODE")]
    pub userns: Option<NsMode>,
    /// Bind a host path into the container: HOST:CONTAINER[:ro|rw].
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volumes: Vec<String>,
    /// Run as this user: uid[:gid] or name[:group] (default: the image's user, else root).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Add a capability to docker's default set: NAME or CAP_NAME (any case), or ALL.
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from docker's default set: NAME or CAP_NAME (any case), or ALL.
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Security options: no-new-privileges[=true|false] (default true), seccomp=unconfined.
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Keep stdin open.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Print one JSON object to stderr at the end: exit code, start phases, peak memory.
    #[arg(long)]
    pub json: bool,
    /// kvm: the guest kernel (ELF vmlinux or bzImage; default: $ISOL_KERNEL, else the one
    /// guest-images/build-kernel.sh built).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// kvm: show the guest kernel's log (on stderr, apart from the workload's stdout).
    #[arg(long)]
    pub console: bool,
    /// kvm: boot the kernel with this initramfs (newc cpio) as it is, instead of an image: its
    /// own /init runs, isol adds nothing, the serial console is stdout and the run ends with
    /// status 0 when the guest reboots. No IMAGE or command; -m, --cpus, --kernel, --console,
    /// -i, --timeout, --json and --trace-exits apply, the rest is refused.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// kvm: print every VM exit by kind and port/address, and the boot timeline, at the end.
    #[arg(long)]
    pub trace_exits: bool,
    /// Stop the workload after this many seconds (exit 124).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// The image (name[:tag], digest or digest prefix).
    #[arg(required_unless_present = "initrd")]
    pub image: Option<String>,
    /// The command and its arguments (default: the image's).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove images.
    #[command(alias = "remove")]
    Rm {
        /// Remove the name even while a running container or VM uses the image; its files
        /// are kept until a later `isol image rm` or import finds it unused.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Import a `docker save` tarball or an OCI image layout (directory or tar).
    Import {
        /// A `docker save` tarball or an OCI layout (directory or tar), gzip or not; `-` reads
        /// it from standard input (`docker save IMAGE | isol image import -`).
        file: PathBuf,
        /// Name the imported image NAME[:TAG] (when the input holds one image).
        #[arg(long)]
        tag: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Run a command inside the lab VM (a QEMU VM with a real /dev/kvm).
#[derive(clap::Args, Debug)]
pub struct LabArgs {
    /// Memory of the lab VM, in QEMU `-m` syntax (4G, 2048M, ...).
    #[arg(
        long,
        value_name = "SIZE",
        default_value = "4G",
        env = "ISOL_LAB_MEMORY"
    )]
    pub memory: String,

    /// Number of vCPUs of the lab VM (each is a host thread under QEMU TCG).
    #[arg(long, value_name = "N", default_value_t = 2, env = "ISOL_LAB_CPUS")]
    pub cpus: u32,

    /// QEMU CPU model of the lab VM. The default is QEMU's `max` (which has AMD SVM)
    /// without ERMS ("fast rep movsb/stosb"): under TCG every iteration of a `rep`
    /// string instruction is one step of the emulator, so with ERMS the lab kernel
    /// zeroes and copies pages one byte per step, and zeroing the guest RAM a nested
    /// VM touches took most of its start-up time (docs/lab.md, "CPU model").
    #[arg(
        long,
        value_name = "MODEL",
        default_value = "max,erms=off",
        env = "ISOL_LAB_CPU_MODEL"
    )]
    pub cpu_model: String,

    /// Show the lab kernel's log and the lab init's steps on stderr.
    #[arg(long)]
    pub console: bool,

    /// Print how long preparation, boot, the command and shutdown took (stderr).
    #[arg(long)]
    pub timings: bool,

    /// Give the lab a network interface (QEMU user-mode networking, NAT to the
    /// outside; eth0 10.0.2.15/24, DNS 10.0.2.3). Without it the lab has only
    /// a loopback interface.
    #[arg(long)]
    pub net: bool,

    /// Extra words for the lab kernel's command line, separated by spaces:
    /// kernel parameters, and MODULE.PARAM=VALUE for the modules the lab loads
    /// (kvm, kvm_amd, ...). `--kernel-args ""` gives none.
    #[arg(
        long,
        value_name = "ARGS",
        default_value = "",
        env = "ISOL_LAB_KERNEL_ARGS",
        allow_hyphen_values = true
    )]
    pub kernel_args: String,

    /// The QEMU binary to use.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "qemu-system-x86_64",
        env = "ISOL_LAB_QEMU"
    )]
    pub qemu: String,

    /// The command to run in the lab, and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        required = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// isol backends to measure, comma-separated: container, kvm [default: container, plus kvm
    /// where /dev/kvm is hardware]. On a host whose /dev/kvm is emulated, kvm runs the whole
    /// bench in the lab (`isol lab`).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = isol_bench::parse_backend)]
    pub backends: Option<Vec<isol_bench::BenchBackend>>,
    /// Runtimes to compare with, comma-separated: crun, runc (container side), qemu (VM side).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "crun,runc,qemu", value_parser = isol_bench::parse_peer)]
    pub peers: Vec<isol_bench::Peer>,
    /// Timed runs per subject [default: 30, or 10 with --quick].
    #[arg(long, value_name = "N", value_parser = isol_bench::parse_runs)]
    pub runs: Option<u32>,
    /// A quick look: 10 timed runs per subject unless --runs says otherwise.
    #[arg(long)]
    pub quick: bool,
    /// Directory for report.json, report.md and report.html [default: ./isol-bench-<UTC date-time>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Benchmarks to run, comma-separated: start, memory, density, cpu, syscall, io, net, shared,
    /// and (not by default: they need containerd) ctr-run and cri (a pod through the CRI).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "start,memory,density,cpu,syscall,io,net,shared", value_parser = isol_bench::parse_benchmark)]
    pub benchmarks: Vec<isol_bench::Benchmark>,
    /// Internal: this bench runs inside the lab for an outer `isol bench`, and prints its
    /// reports on stdout.
    #[arg(long, hide = true)]
    pub lab_inner: bool,
}
