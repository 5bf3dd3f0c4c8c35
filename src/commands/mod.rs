//! One module per `isol` subcommand.

pub mod bench;
pub mod detach;
pub mod doctor;
pub mod exec_channel;
pub mod guest_masks;
pub mod image;
pub mod inspect;
pub mod lab;
pub mod pod_net;
pub mod run;
pub mod run_initrd;
pub mod runs;
pub mod shares;
pub mod vm_exec;

use crate::cli::{Cli, Command};

/// Runs a parsed command line; returns isol's exit code. `log_filter`: the log filter in
/// force ([`crate::logging::init`]).
pub fn dispatch(cli: Cli, log_filter: String) -> anyhow::Result<i32> {
    match cli.command {
        Command::Run(args) => run::run(*args, &log_filter),
        Command::Bench(args) => bench::run(args),
        Command::Image(cmd) => image::run(cmd),
        Command::Doctor(args) => doctor::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Ps(args) => runs::ps(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::Stop(args) => runs::stop(args),
        Command::Exec(args) => runs::exec(args),
    }
}

/// The image store isol uses: `$ISOL_HOME`, else /var/lib/isol (root) or ~/.local/share/isol.
pub fn open_store() -> anyhow::Result<isol_image::Store> {
    let root = isol_image::Store::default_root();
    Ok(isol_image::Store::open(&root)?)
}
