//! The runc command line, from liboci-cli's clap structs: the global flags runc takes and its
//! subcommands. `kill` is isol's own, as runc's: its signal is optional (SIGTERM).

use clap::{Args, Parser, Subcommand};

/// `isol-runc`: isol's container runtime behind runc's command line, for containerd, podman,
/// docker and other OCI clients.
#[derive(Parser, Debug)]
#[command(name = "isol-runc", version = crate::VERSION_TEXT, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: liboci_cli::GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(liboci_cli::Create),
    /// Start the process of a created container.
    Start(liboci_cli::Start),
    /// Print a container's state as JSON.
    State(liboci_cli::State),
    /// Send a signal to a container's init (or, with --all, every process in it).
    Kill(Kill),
    /// Delete a stopped container (or, with --force, any): its cgroup, mounts and state.
    Delete(liboci_cli::Delete),
    /// Create, start and wait for a container; delete it after.
    Run(liboci_cli::Run),
    /// List the containers under the state root.
    List(liboci_cli::List),
    /// Write a default config.json in the bundle directory.
    Spec(liboci_cli::Spec),
    /// Print what this runtime supports, as JSON.
    Features(liboci_cli::Features),
    /// Run a further process in a running container.
    Exec(liboci_cli::Exec),
    /// List a container's processes.
    Ps(liboci_cli::Ps),
    /// Freeze every process of a running container (its cgroup's freezer).
    Pause(liboci_cli::Pause),
    /// Thaw a paused container.
    Resume(liboci_cli::Resume),
    /// Change a container's memory, CPU and pids limits.
    Update(liboci_cli::Update),
    /// Show a container's cgroup statistics (and OOM kills) as JSON, one object a line.
    Events(Events),
}

/// `events [--stats] [--interval D] ID`, as runc's: `--interval` is a duration (`5s`,
/// `100ms`; a bare number is seconds).
#[derive(Args, Debug)]
pub struct Events {
    /// How often to print the statistics.
    #[arg(long, default_value = "5s", value_parser = crate::events::parse_interval)]
    pub interval: std::time::Duration,
    /// Print the statistics once and exit.
    #[arg(long)]
    pub stats: bool,
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new(), required = true)]
    pub container_id: String,
}

/// `kill [--all] ID [SIGNAL]`.
#[derive(Args, Debug)]
pub struct Kill {
    #[arg(value_parser = clap::builder::NonEmptyStringValueParser::new(), required = true)]
    pub container_id: String,
    /// A name (TERM, SIGTERM) or a number.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
    /// Send the signal to every process of the container.
    #[arg(short, long)]
    pub all: bool,
}
