//! `isol bench`: the bench crate (`isol-bench`) runs it.

use crate::cli::BenchArgs;

/// Runs the bench; returns isol's exit code (130 when cancelled).
pub fn run(args: BenchArgs) -> anyhow::Result<i32> {
    Ok(isol_bench::run(args.into())?)
}

impl From<BenchArgs> for isol_bench::BenchOptions {
    fn from(a: BenchArgs) -> Self {
        isol_bench::BenchOptions {
            backends: a.backends,
            peers: a.peers,
            runs: a.runs,
            quick: a.quick,
            out: a.out,
            benchmarks: a.benchmarks,
            lab_inner: a.lab_inner,
        }
    }
}
