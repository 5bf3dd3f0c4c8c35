//! `isol doctor`: what this host offers and lacks for each backend, each line with what to do.

use crate::cli::DoctorArgs;

pub fn run(_args: DoctorArgs) -> anyhow::Result<i32> {
    anyhow::bail!("isol doctor is not implemented yet")
}
