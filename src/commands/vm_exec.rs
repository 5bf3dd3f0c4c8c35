//! `isol exec` into a microVM: a client of the VM's exec channel (docs/vmm.md, "The exec
//! channel"), the unix socket `<store>/runs/<id>.sock` the VMM serves (`exec_channel`). The
//! process's exit status is this command's.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use isol_vmm::control::wire::{self, StartRequest};

use super::exec_channel::{attach, term_size};
use super::runs::Record;
use crate::cli::ExecArgs;

/// Runs `args.command` in the microVM of `rec`, through `socket`.
pub fn exec(
    args: &ExecArgs,
    socket: &Path,
    rec: &Record,
    env: Vec<OsString>,
    cwd: PathBuf,
) -> anyhow::Result<i32> {
    let bytes = |s: &std::ffi::OsStr| s.as_bytes().to_vec();
    let req = StartRequest {
        spec: wire::Spec {
            args: args.command.iter().map(|a| bytes(a)).collect(),
            env: env.iter().map(|e| bytes(e)).collect(),
            workdir: bytes(cwd.as_os_str()),
            user: args.user.clone().unwrap_or_default().into_bytes(),
            ..Default::default()
        },
        tty: args.tty,
        detach: args.detach,
        size: if args.tty { term_size() } else { (0, 0) },
    };
    let sock = UnixStream::connect(socket).map_err(|e| {
        anyhow::anyhow!(
            "Cannot reach run {} ({}) to exec into it: {e}; its VM has ended or is stopping (`isol ps` lists the live runs)",
            rec.name,
            rec.id
        )
    })?;
    attach(sock, &req, args.interactive, None)
}
