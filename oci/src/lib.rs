//! isol as an OCI runtime: runc's command line (`isol-runc`) over an OCI bundle, run by isol's
//! container runtime (`isol-container`), so that containerd, podman, docker and Kubernetes can
//! use isol. See docs/oci.md.
//!
//! * [`cli`]: the command line (liboci-cli's structs);
//! * `spec`: config.json → [`isol_container::ContainerConfig`], refusing what isol cannot honour;
//! * `state`: each container's state under `--root`;
//! * `commands`: create/start/state/kill/delete/run/list/spec/features, the create/start split
//!   resting on [`isol_container::create`] and its start gate;
//! * [`vm`]: the kvm backend's selection (`io.isol.backend`, the `isol-runc-vm` name), what a
//!   VM refuses, and the [`vm::VmRuntime`] the binary that holds the VMM implements.

pub mod cli;
mod commands;
mod error;
mod events;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod hostroot;
pub mod log;
mod spec;
mod state;
pub mod vm;

pub use error::OciError;
pub use state::DEFAULT_ROOT;

/// `isol-runc --version`, in runc's shape.
pub const VERSION_TEXT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nspec: 1.2.0\nruntime: isol (container backend)"
);

/// Exit status of a failed command, as runc's.
pub const EXIT_FAILURE: i32 = 1;

/// Runs one command line (argv[0] included) and returns the exit status, with the container
/// backend only.
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    main_with(args, None)
}

/// [`main`], with the kvm backend when `vm` is given; argv\[0\] named
/// [`vm::VM_RUNTIME_NAME`] makes it the default.
pub fn main_with(
    args: impl IntoIterator<Item = std::ffi::OsString>,
    vm: Option<&dyn vm::VmRuntime>,
) -> i32 {
    use clap::Parser;
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let runtime = commands::Runtime {
        default: vm::Backend::default_for(args.first().map(|a| a.as_os_str())),
        vm,
    };
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_FAILURE } else { 0 };
        }
    };
    let format = match log::Format::parse(cli.global.log_format.as_deref()) {
        Ok(f) => f,
        Err(msg) => {
            eprintln!("isol-runc: {msg}");
            return EXIT_FAILURE;
        }
    };
    let log = log::Log {
        file: cli.global.log.clone(),
        format,
        debug: cli.global.debug,
    };
    match commands::dispatch(&cli, &log, &runtime) {
        Ok(code) => code,
        Err(e) => {
            log.error(&one_line(&e));
            EXIT_FAILURE
        }
    }
}

/// The error with its causes, on one line.
fn one_line(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg.replace('\n', " ")
}
