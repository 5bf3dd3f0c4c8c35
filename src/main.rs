//! `isol`: run the same workload in a KVM microVM or a namespaced container, side by side.
//!
//! Exit codes follow docker's convention: the workload's own code; 125 when isol itself fails
//! (bad input included); 126 when the command cannot be executed; 127 when it is not found;
//! 128+N when the workload was killed by signal N.

mod cli;
mod commands;
mod logging;
mod size;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

/// isol's own failures.
pub const EXIT_ISOL: u8 = 125;

fn main() -> ExitCode {
    // The container's init is a sealed copy of this binary started in a special mode.
    let mut args = std::env::args_os();
    if args.nth(1).as_deref() == Some(std::ffi::OsStr::new(isol_container::INIT_MARKER)) {
        let rest: Vec<OsString> = args.collect();
        isol_container::init::main(rest);
    }

    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let directive = logging::init(cli.log_level.map(cli::LogLevel::directive));
    match commands::dispatch(cli, directive) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("isol: {}", one_line(&e));
            ExitCode::from(EXIT_ISOL)
        }
    }
}

/// The error and its causes on one line, each cause once (as the VMM prints its own).
fn one_line(e: &anyhow::Error) -> String {
    isol_vmm::launch::one_line(e.as_ref())
}

/// clap's errors, as one line and exit code 125 (help and version print normally, exit 0).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                return ExitCode::from(EXIT_ISOL);
            }
            ExitCode::SUCCESS
        }
        _ => {
            // clap's first paragraph, e.g. "the following required arguments were not
            // provided: <IMAGE>", on one line.
            let rendered = e.render().to_string();
            let first = rendered
                .split("\n\n")
                .next()
                .unwrap_or("invalid arguments")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let first = first.trim_start_matches("error: ");
            eprintln!("isol: {first}; see `isol --help`");
            ExitCode::from(EXIT_ISOL)
        }
    }
}
