//! A further process in a running container (runc's `exec`): it joins the namespaces of the
//! container's init and its cgroup, and drops to the same kind of privileges as the workload
//! (capabilities, user, no_new_privs, isol's seccomp filter) before it executes.
//!
//! isol forks a helper that enters the namespaces (the mount namespace needs a single-threaded
//! process, and a new PID namespace applies only to the children of the process that entered
//! it); the helper forks the process itself, reports its pid and exits. isol moves the process
//! into the container's cgroup, then lets it go; the process reports an error (`E message`, `X
//! code message`) or execs, which closes the report pipe. The process is isol's grandchild: the
//! caller must be a subreaper (or the client's subreaper inherits it) to wait for it.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid, fork, pipe2};

use crate::cgroups::{AnyCgroupManager, CgroupManager};
use crate::config::Rlimit;
use crate::error::ContainerError;
use crate::security;
use crate::sys::cstrings;

/// What to execute in the container whose init is `init_pid`.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The container's init, on the host.
    pub init_pid: i32,
    pub args: Vec<std::ffi::OsString>,
    /// `KEY=VALUE`, complete.
    pub env: Vec<std::ffi::OsString>,
    /// Absolute, inside the container.
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// A [`security::capabilities::mask`].
    pub capabilities: u64,
    pub rlimits: Vec<Rlimit>,
    /// Install isol's seccomp filter (as the workload has it unless `seccomp=unconfined`).
    pub seccomp: bool,
}

/// The namespaces a process in the container joins, in the order it joins them: the user
/// namespace does not apply (isol's containers have none unless rootless), the mount namespace
/// after those whose files it would hide, PID last (it applies to the next child).
const NAMESPACES: [(&str, CloneFlags); 6] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("pid", CloneFlags::CLONE_NEWPID),
];

/// Starts `spec`'s process in the container, in `cgroup`, and returns its host pid once it has
/// executed (or the error that kept it from it). Call it from a single-threaded process (as
/// `isol-runc exec` is): it forks, and the helper it forks joins a mount namespace.
pub fn exec(spec: &ExecSpec, cgroup: Option<&AnyCgroupManager>) -> Result<i32, ContainerError> {
    if spec.args.is_empty() {
        return Err(ContainerError::Unsupported("No command to execute".into()));
    }
    let mut ns_files = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = format!("/proc/{}/ns/{name}", spec.init_pid);
        let f = File::open(&path).map_err(|e| ContainerError::State {
            what: format!("open {path} (is the container running?)"),
            source: e,
        })?;
        ns_files.push((f, flag));
    }
    // The init's root, for after the mount namespace: setns gives the namespace's root mount,
    // which is not the root the init pivoted to where the host's own root is a chroot (the
    // lab's initramfs): the process would see the host's /proc there.
    let root_path = format!("/proc/{}/root", spec.init_pid);
    let init_root = File::open(&root_path).map_err(|e| ContainerError::State {
        what: format!("open {root_path} (is the container running?)"),
        source: e,
    })?;
    let argv = cstrings(&spec.args, "argument")?;
    let envp = cstrings(&spec.env, "environment variable")?;
    let cwd = crate::sys::cstring(spec.cwd.as_os_str(), "working directory")?;
    let filter = if spec.seccomp {
        security::seccomp::default_filter()?
    } else {
        Vec::new()
    };
    let (rep_r, rep_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ContainerError::sys("pipe2", e))?;
    let (go_r, go_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ContainerError::sys("pipe2", e))?;

    // SAFETY: this process has one thread (isol-runc forks before starting any), so the child
    // may run any code; it leaves only by _exit or exec.
    match unsafe { fork() }.map_err(|e| ContainerError::sys("fork", e))? {
        ForkResult::Child => {
            drop(rep_r);
            drop(go_w);
            let mut report = File::from(rep_w);
            let code = match helper(&ns_files, &init_root, go_r, &report, |report| {
                process(spec, &argv, &envp, &cwd, &filter, report)
            }) {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = writeln!(report, "E {}", msg.replace('\n', " "));
                    125
                }
            };
            // SAFETY: ends the helper without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child: helper_pid } => {
            drop(rep_w);
            drop(go_r);
            let mut reader = BufReader::new(File::from(rep_r));
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = nix::sys::wait::waitpid(helper_pid, None);
            let pid: i32 = match line.trim().strip_prefix("P ") {
                Some(p) => p.parse().unwrap_or(0),
                None => return Err(report_error(line.trim(), &mut reader)),
            };
            if let Some(cg) = cgroup
                && let Err(e) = cg.add_task(pid)
            {
                let _ =
                    nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                return Err(e.into());
            }
            let mut go = File::from(go_w);
            let _ = go.write_all(b"g");
            drop(go);
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            match rest.lines().next() {
                None => Ok(pid),
                Some(l) => {
                    // It has exited; reap it when it is ours (the caller is a subreaper).
                    let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
                    Err(report_error(l, &mut reader))
                }
            }
        }
    }
}

fn report_error(line: &str, _reader: &mut BufReader<File>) -> ContainerError {
    if let Some(msg) = line.strip_prefix("E ") {
        return ContainerError::Setup(msg.to_string());
    }
    if let Some(rest) = line.strip_prefix("X ") {
        let msg = rest.split_once(' ').map_or(rest, |(_, m)| m);
        return ContainerError::Setup(msg.to_string());
    }
    ContainerError::Setup("The process to execute in the container died before it started".into())
}

/// In the helper: enters the namespaces, forks the process, reports its pid.
fn helper(
    ns_files: &[(File, CloneFlags)],
    init_root: &File,
    go: OwnedFd,
    report: &File,
    process: impl FnOnce(&File) -> Result<std::convert::Infallible, String>,
) -> Result<(), String> {
    for (f, flag) in ns_files {
        nix::sched::setns(f, *flag)
            .map_err(|e| format!("Cannot join the container's {flag:?} namespace: {e}"))?;
    }
    // The init's own root, whatever root the mount namespace's gave.
    nix::unistd::fchdir(init_root)
        .map_err(|e| format!("Cannot enter the container's root: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("Cannot enter the container's root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir / in the container: {e}"))?;
    // SAFETY: the helper has one thread (forked from a single-threaded process).
    match unsafe { fork() }.map_err(|e| format!("fork in the container: {e}"))? {
        ForkResult::Child => {
            // Waits for the go: the parent has moved us into the container's cgroup.
            let mut byte = [0u8; 1];
            if File::from(go).read(&mut byte).ok() != Some(1) {
                // SAFETY: as in `exec`.
                unsafe { libc::_exit(125) }
            }
            let Err(msg) = process(report);
            let _ = writeln!(&*report, "E {}", msg.replace('\n', " "));
            // SAFETY: as in `exec`.
            unsafe { libc::_exit(125) }
        }
        ForkResult::Parent { child } => {
            let _ = writeln!(&*report, "P {child}");
            Ok(())
        }
    }
}

/// In the process, in the container's namespaces and cgroup: privileges down, then exec.
fn process(
    spec: &ExecSpec,
    argv: &[CString],
    envp: &[CString],
    cwd: &CString,
    filter: &[seccompiler::sock_filter],
    report: &File,
) -> Result<std::convert::Infallible, String> {
    use std::os::unix::ffi::OsStrExt;
    for r in &spec.rlimits {
        crate::child::set_rlimit(r).map_err(|e| e.to_string())?;
    }
    nix::unistd::chdir(Path::new(std::ffi::OsStr::from_bytes(cwd.as_bytes())))
        .map_err(|e| format!("Cannot enter the working directory {cwd:?}: {e}"))?;
    let ids = crate::user::Ids {
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.clone(),
    };
    crate::user::switch_with_capabilities(spec.capabilities, &ids).map_err(|e| e.to_string())?;
    security::set_no_new_privs().map_err(|e| e.to_string())?;
    // The signals isol-runc may have blocked are the process's own business.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    let _ = report.as_raw_fd();
    if !filter.is_empty() {
        security::seccomp::install(filter).map_err(|e| e.to_string())?;
    }
    let prog = std::ffi::OsStr::from_bytes(argv[0].as_bytes()).to_owned();
    let e = execvpe(argv, envp);
    let (code, msg) = crate::init::exec_failure(&prog, &e);
    let _ = writeln!(&*report, "X {code} {msg}");
    // SAFETY: as in `exec`.
    unsafe { libc::_exit(code) }
}

/// execvp with an environment, through the container's `$PATH` (from `envp`).
fn execvpe(argv: &[CString], envp: &[CString]) -> std::io::Error {
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (a, e) = (ptrs(argv), ptrs(envp));
    let name = argv[0].as_bytes();
    let candidates: Vec<CString> = if name.contains(&b'/') {
        vec![argv[0].clone()]
    } else {
        let path = envp
            .iter()
            .find_map(|v| v.as_bytes().strip_prefix(b"PATH="))
            .unwrap_or(b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        path.split(|&b| b == b':')
            .filter_map(|dir| CString::new([dir, b"/", name].concat()).ok())
            .collect()
    };
    let mut last = std::io::Error::from_raw_os_error(libc::ENOENT);
    for c in &candidates {
        // SAFETY: NUL-terminated strings and NULL-terminated arrays, alive for the call.
        unsafe { libc::execve(c.as_ptr(), a.as_ptr(), e.as_ptr()) };
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ENOENT) {
            last = err;
        }
    }
    last
}
