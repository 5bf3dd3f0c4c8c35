//! The command line, docker-like.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "isol",
    version,
    about = "Run the same workload in a KVM microVM or a namespaced container, side by side",
    after_help = "Exit codes: the workload's own; 125 isol failed; 126 cannot execute; 127 not found; 128+N killed by signal N."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command in a new container or microVM.
    Run(RunArgs),
    /// Manage the local image store.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Show what this host offers and lacks for each backend, and what to do about it.
    Doctor(DoctorArgs),
    /// Run a command inside the lab: a QEMU VM with a real /dev/kvm, for hosts without
    /// hardware virtualization.
    Lab(crate::commands::lab::LabArgs),
    /// Measure isol's start-up against crun and runc on this machine, and write a report.
    Bench(crate::commands::bench::BenchArgs),
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A namespaced Linux container run by isol's own runtime.
    Container,
    /// A KVM microVM driven by isol's own VMM.
    Kvm,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Own network namespace with loopback only.
    None,
    /// The host's network namespace.
    Host,
    /// A veth pair on the isol0 bridge, with NAT to the outside.
    Bridge,
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
    #[arg(short = 'm', long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPUs (container: CPU quota, e.g. 0.5; kvm: number of vCPUs).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long, value_name = "N")]
    pub pids_limit: Option<i64>,
    /// Network mode.
    #[arg(long, value_enum, default_value_t = Network::None)]
    pub network: Network,
    /// Bind a host path into the container: HOST:CONTAINER[:ro|rw].
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volumes: Vec<String>,
    /// Run as this user: uid[:gid] or name[:group] (default: the image's user, else root).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
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
    /// kvm: show the guest kernel's log on the serial console.
    #[arg(long)]
    pub console: bool,
    /// kvm: print every VM exit by kind and port/address, and the boot timeline, at the end.
    #[arg(long)]
    pub trace_exits: bool,
    /// Stop the workload after this many seconds (exit 124).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
    /// The image (name[:tag], digest or digest prefix).
    pub image: String,
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
