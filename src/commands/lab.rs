//! `isol lab`: the lab crate (`isol-lab`) runs it.

use crate::cli::LabArgs;

/// Runs the command in the lab; returns its exit code (125 when the lab itself failed).
pub fn run(args: LabArgs) -> anyhow::Result<i32> {
    Ok(isol_lab::run(&args.into()))
}

impl From<LabArgs> for isol_lab::LabOptions {
    fn from(a: LabArgs) -> Self {
        isol_lab::LabOptions {
            memory: a.memory,
            cpus: a.cpus,
            cpu_model: a.cpu_model,
            console: a.console,
            timings: a.timings,
            net: a.net,
            kernel_args: a.kernel_args,
            qemu: a.qemu,
            command: a.command,
        }
    }
}
