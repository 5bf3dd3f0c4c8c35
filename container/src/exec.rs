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
use std::os::unix::fs::MetadataExt;
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
    /// A new pseudo-terminal, of this size (rows, columns) when given, whose slave becomes the
    /// process's controlling terminal and stdio; [`Executed::console`] holds its master.
    pub terminal: Option<Option<(u16, u16)>>,
    /// The caller's descriptors 3 to 3+N-1 stay open in the process (runc's
    /// `--preserve-fds`); every other one above stderr closes at its exec.
    pub preserve_fds: u32,
    /// The container's seccomp filter: its own profile, isol's, or none.
    pub seccomp: security::seccomp::Seccomp,
    /// `process.user.umask`; `None`: the one inherited.
    pub umask: Option<u32>,
    /// `process.oomScoreAdj`; `None`: the one inherited.
    pub oom_score_adj: Option<i32>,
}

/// A process [`exec`] started.
#[derive(Debug)]
pub struct Executed {
    /// Its pid on the host.
    pub pid: i32,
    /// With [`ExecSpec::terminal`]: the terminal's master, for the caller's client.
    pub console: Option<OwnedFd>,
}

/// The namespaces a process in the container joins, in the order it joins them, after its user
/// namespace where it has one of its own ([`exec`]): the mount namespace
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
pub fn exec(
    spec: &ExecSpec,
    cgroup: Option<&AnyCgroupManager>,
) -> Result<Executed, ContainerError> {
    if spec.args.is_empty() {
        return Err(ContainerError::Unsupported("No command to execute".into()));
    }
    let mut ns_files = Vec::new();
    // A container with a user namespace of its own (`--userns private`, OCI uidMappings, or
    // rootless) is entered through it first: its other namespaces belong to it, and the
    // process's ids are then mapped as the container's are (uid 0 is the container's root,
    // never the host's).
    let user_path = format!("/proc/{}/ns/user", spec.init_pid);
    let own_user = std::fs::metadata("/proc/self/ns/user")
        .map(|m| m.ino())
        .ok();
    if let Ok(meta) = std::fs::metadata(&user_path)
        && Some(meta.ino()) != own_user
    {
        let f = File::open(&user_path).map_err(|e| ContainerError::State {
            what: format!("open {user_path} (is the container running?)"),
            source: e,
        })?;
        ns_files.push((f, CloneFlags::CLONE_NEWUSER));
    }
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
    let filter = spec.seccomp.filter()?;
    let pty = match spec.terminal {
        Some(size) => {
            let ws = size.map(|(rows, cols)| nix::pty::Winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            });
            let p = nix::pty::openpty(ws.as_ref(), None::<&nix::sys::termios::Termios>)
                .map_err(|e| ContainerError::sys("openpty", e))?;
            crate::sys::set_cloexec(p.master.as_raw_fd());
            crate::sys::set_cloexec(p.slave.as_raw_fd());
            Some(p)
        }
        None => None,
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
                process(
                    spec,
                    &argv,
                    &envp,
                    &cwd,
                    filter.as_ref(),
                    pty.as_ref().map(|p| &p.slave),
                    report,
                )
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
                None => Ok(Executed {
                    pid,
                    console: pty.map(|p| p.master),
                }),
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
    filter: Option<&security::seccomp::Filter>,
    slave: Option<&OwnedFd>,
    report: &File,
) -> Result<std::convert::Infallible, String> {
    use std::os::unix::ffi::OsStrExt;
    if let Some(slave) = slave {
        // A session of its own, whose controlling terminal is the pty, as its stdio.
        nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
        // SAFETY: TIOCSCTTY takes an int argument; the fd is a terminal this process holds.
        if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } != 0 {
            return Err(format!(
                "Cannot make the pty the controlling terminal: {}",
                std::io::Error::last_os_error()
            ));
        }
        for target in 0..=2 {
            // SAFETY: dup2 onto this process's standard descriptors.
            if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
                return Err(format!(
                    "Cannot attach the pty to fd {target}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    // Nothing of the caller's but stdio and the descriptors it asked to pass on.
    let first_closed = 3 + spec.preserve_fds;
    crate::sys::cloexec_from(first_closed)
        .map_err(|e| format!("Cannot list open descriptors: {e}"))?;
    for fd in 3..first_closed as i32 {
        crate::sys::clear_cloexec(fd)
            .map_err(|e| format!("Cannot pass descriptor {fd} on (--preserve-fds): {e}"))?;
    }
    for r in &spec.rlimits {
        crate::child::set_rlimit(r).map_err(|e| e.to_string())?;
    }
    if let Some(adj) = spec.oom_score_adj {
        crate::child::set_oom_score_adj(adj).map_err(|e| e.to_string())?;
    }
    if let Some(mask) = spec.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    nix::unistd::chdir(Path::new(std::ffi::OsStr::from_bytes(cwd.as_bytes())))
        .map_err(|e| format!("Cannot enter the working directory {cwd:?}: {e}"))?;
    let ids = crate::user::Ids {
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.clone(),
    };
    crate::user::switch_with_capabilities(spec.capabilities, 0, &ids).map_err(|e| e.to_string())?;
    security::set_no_new_privs().map_err(|e| e.to_string())?;
    // The signals isol-runc may have blocked are the process's own business.
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    let _ = report.as_raw_fd();
    if let Some(f) = filter {
        security::seccomp::install_with_flags(&f.program, f.flags).map_err(|e| e.to_string())?;
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
