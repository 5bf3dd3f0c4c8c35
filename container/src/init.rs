//! The container's init: PID 1 of every container, as `docker run --init` (tini) does.
//!
//! It starts the workload as its only child, tells the parent whether the exec worked, forwards
//! the signals it receives to the workload, reaps every zombie (orphans are re-parented to PID 1),
//! and exits with the workload's status — its exit code, or 128+N when signal N killed it. When
//! it exits, the kernel kills whatever is left in the PID namespace.
//!
//! It runs from a sealed in-memory copy of isol (`security::exe`), never from the host's binary.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::sys::{monotonic_ns, set_cloexec};

/// Entry point of init mode. `args` are the process arguments after the init marker:
/// report fd, tty flag ("1"/"0"), start gate fd ("-" for none), startContainer hooks fd ("-"
/// for none: see [`crate::hooks`]), then the workload's argv.
///
/// With a start gate (a container created to be started later, as runc's `create`), init
/// checks that the workload can be executed, reports `G` (created), and waits until `start`
/// opens the gate; it holds the gate open until the workload has been exec'd, so that `start`
/// returns only then, as runc's does. It reports nothing more: the isol that created the
/// container is gone, and its client waits for init's exit status.
pub fn main(args: Vec<OsString>) -> ! {
    let code = match run(args) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(io::stderr(), "isol-init: {e}");
            125
        }
    };
    std::process::exit(code)
}

fn run(args: Vec<OsString>) -> Result<i32, String> {
    // Exec'd from a memfd, the process would be named after it; `ps` should say what it is.
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from the pointer.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"isol-init".as_ptr()) };
    // Not dumpable: the workload, though it runs as the same uid, cannot ptrace init (and stop
    // it, which would leave the container without anyone to reap it) nor read its memory,
    // without CAP_SYS_PTRACE. The workload's exec makes it dumpable again.
    // SAFETY: PR_SET_DUMPABLE takes an integer and changes only this process's flag.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0) };
    reset_signal_dispositions();
    let mut it = args.into_iter();
    let fd: i32 = it
        .next()
        .and_then(|s| s.to_str()?.parse().ok())
        .ok_or("missing report fd")?;
    let tty = it.next().is_some_and(|s| s == "1");
    let gate: Option<i32> = match it.next() {
        Some(g) if g == "-" => None,
        g => Some(
            g.and_then(|s| s.to_str()?.parse().ok())
                .ok_or("missing start gate fd")?,
        ),
    };
    let start_hooks = match it.next() {
        Some(h) if h == "-" => None,
        h => Some(
            h.and_then(|s| s.to_str()?.parse::<i32>().ok())
                .ok_or("missing startContainer hooks fd")?,
        ),
    };
    let argv: Vec<OsString> = it.collect();
    let Some((prog, rest)) = argv.split_first() else {
        return Err("missing command".into());
    };
    // SAFETY: the parent passed this fd number to us; nothing else in this process owns it.
    let report = unsafe { File::from_raw_fd(fd) };
    set_cloexec(fd);

    // Every signal that can be caught is taken through a signalfd and forwarded.
    let mut mask = SigSet::all();
    for s in [
        Signal::SIGKILL,
        Signal::SIGSTOP,
        Signal::SIGSEGV,
        Signal::SIGBUS,
        Signal::SIGILL,
        Signal::SIGFPE,
        Signal::SIGTRAP,
        Signal::SIGSYS,
    ] {
        mask.remove(s);
    }
    mask.thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let sfd = SignalFd::with_flags(&mask, nix::sys::signalfd::SfdFlags::SFD_CLOEXEC)
        .map_err(|e| format!("signalfd: {e}"))?;

    // The workload is exec'd by execve on the paths resolved here, never by execvp: on a file
    // that is not a program (ENOEXEC), the C library's execvp would run it with /bin/sh
    // instead of failing, as docker's runtimes fail (126, exec format error).
    let exec = Exec::new(prog, &argv)?;
    let mut report = Some(report);
    // Held open (close-on-exec) until the workload has been exec'd: `start` reads the gate to
    // its end, so that it returns, as runc's does, once the workload runs.
    let mut opened_gate = None;
    if let Some(gate) = gate {
        if let Err(e) = exec.probe() {
            let (code, msg) = exec_failure(prog, &e);
            say(&mut report, format_args!("X {code} {msg}"));
            return Ok(code);
        }
        say(&mut report, format_args!("G"));
        // Nobody reads the reports once the creator has returned.
        report = None;
        opened_gate = Some(wait_at_gate(gate)?);
    }
    if let Some(fd) = start_hooks {
        // Once started, just before the workload: a failure ends the container.
        let h = crate::hooks::read_for_init(fd)?;
        crate::hooks::run_all("startContainer", &h.hooks, &h.state)?;
    }
    let mut cmd = Command::new(prog);
    cmd.args(rest).arg0(prog);
    // SAFETY: the closure runs in the forked child before exec and makes only system calls
    // (sigprocmask, setpgid, tcsetpgrp, execve) on its own process, plus the allocation of
    // the pointer arrays, which is safe here: init is single-threaded, so no lock can be held
    // by another thread across the fork.
    unsafe {
        cmd.pre_exec(move || {
            prepare_workload(tty)?;
            Err(exec.execve())
        })
    };
    // spawn returns once the workload's exec has succeeded or failed: the workload's copy of
    // the gate closed at its exec, ours closes here, and `start` sees the gate's end.
    let spawned = cmd.spawn();
    drop(opened_gate);
    let child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let (code, msg) = exec_failure(prog, &e);
            say(&mut report, format_args!("X {code} {msg}"));
            return Ok(code);
        }
    };
    say(&mut report, format_args!("R {}", monotonic_ns()));

    let workload = Pid::from_raw(child.id() as i32);
    loop {
        let Ok(Some(info)) = sfd.read_signal() else {
            continue;
        };
        let signo = info.ssi_signo as i32;
        if signo != libc::SIGCHLD {
            if let Ok(sig) = Signal::try_from(signo) {
                let _ = kill(workload, sig);
            }
            continue;
        }
        // Reap everything that has exited; the workload's status ends the container.
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                // The last report says how the workload ended: 128+N as an exit code cannot
                // tell a workload killed by signal N from one that exited with 128+N.
                Ok(WaitStatus::Exited(pid, code)) if pid == workload => {
                    say(&mut report, format_args!("W exit {code}"));
                    return Ok(code);
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == workload => {
                    say(&mut report, format_args!("W signal {}", sig as i32));
                    return Ok(128 + sig as i32);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// Blocks until `start` opens the gate (a FIFO, held as an O_PATH descriptor), and tells it so
/// with one byte. Returns the gate open for writing (close-on-exec): `start` waits for its end,
/// which comes once the caller has exec'd the workload and closed it.
fn wait_at_gate(fd: i32) -> Result<File, String> {
    let path = format!("/proc/self/fd/{fd}");
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open the start gate: {e}"))?;
    fifo.write_all(b"0")
        .map_err(|e| format!("cannot write to the start gate: {e}"))?;
    // SAFETY: the gate's O_PATH descriptor was handed to us and nothing else uses it.
    unsafe { libc::close(fd) };
    Ok(fifo)
}

/// One line to the parent, while it listens.
fn say(report: &mut Option<File>, line: std::fmt::Arguments<'_>) {
    if let Some(r) = report {
        let _ = writeln!(r, "{line}");
    }
}

/// The workload's program, resolved as execvp resolves it, without its /bin/sh fallback.
struct Exec {
    /// The paths to try in order: the program itself when it has a '/', else each `$PATH`
    /// directory joined with it.
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

impl Exec {
    fn new(prog: &OsString, argv: &[OsString]) -> Result<Self, String> {
        let c = |s: &[u8]| CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"));
        let name = prog.as_bytes();
        let candidates = if name.contains(&b'/') {
            vec![c(name)?]
        } else {
            let path = std::env::var_os("PATH").unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            });
            path.as_bytes()
                .split(|&b| b == b':')
                .map(|dir| {
                    let dir = if dir.is_empty() { &b"."[..] } else { dir };
                    c(&[dir, b"/", name].concat())
                })
                .collect::<Result<_, _>>()?
        };
        let argv = argv
            .iter()
            .map(|a| c(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let envp = std::env::vars_os()
            .map(|(k, v)| c(&[k.as_bytes(), b"=", v.as_bytes()].concat()))
            .collect::<Result<_, _>>()?;
        Ok(Exec {
            candidates,
            argv,
            envp,
        })
    }

    /// Whether one of the candidates can be executed, without executing it: the error execve
    /// would give (EACCES when some candidate was not executable, else ENOENT).
    fn probe(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut denied = false;
        for path in &self.candidates {
            let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.as_bytes()));
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let ok = meta.is_file()
                && meta.permissions().mode() & 0o111 != 0
                && nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok();
            if ok {
                return Ok(());
            }
            denied = true;
        }
        Err(io::Error::from_raw_os_error(if denied {
            libc::EACCES
        } else {
            libc::ENOENT
        }))
    }

    /// Tries each candidate; returns only on failure, with execvp's choice of error: EACCES
    /// if some candidate was not executable, else the last "not there" error, else the first
    /// other error.
    fn execve(&self) -> io::Error {
        let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|s| s.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let (argv, envp) = (ptrs(&self.argv), ptrs(&self.envp));
        let mut denied = false;
        let mut last = io::Error::from_raw_os_error(libc::ENOENT);
        for path in &self.candidates {
            // SAFETY: path, argv and envp are NUL-terminated strings and NULL-terminated
            // arrays of them, alive for the call; execve returns only on failure.
            unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EACCES) => denied = true,
                Some(libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV) => {}
                _ => return e,
            }
            last = e;
        }
        if denied {
            io::Error::from_raw_os_error(libc::EACCES)
        } else {
            last
        }
    }
}

/// The exit code and message for a workload that could not be executed, as docker reports it:
/// 127 when it does not exist, 126 when it exists but cannot be executed.
pub fn exec_failure(prog: &OsString, e: &io::Error) -> (i32, String) {
    let name = prog.to_string_lossy();
    match e.raw_os_error() {
        Some(libc::ENOENT) if !name.contains('/') => (
            127,
            format!("exec: {name:?}: executable file not found in $PATH"),
        ),
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => {
            (127, format!("exec: {name:?}: no such file or directory"))
        }
        Some(libc::EACCES) | Some(libc::EPERM) => {
            (126, format!("exec: {name:?}: permission denied"))
        }
        Some(libc::ENOEXEC) => (126, format!("exec: {name:?}: exec format error")),
        _ => (126, format!("exec: {name:?}: {e}")),
    }
}

/// In the workload's process, before exec: the signal mask init uses is not the workload's, and
/// with a terminal the workload becomes its foreground job, so ^C reaches it.
fn prepare_workload(tty: bool) -> io::Result<()> {
    if tty {
        // SAFETY: setpgid(0, 0) acts on this process only.
        if unsafe { libc::setpgid(0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // Still with every signal blocked: a background group calling tcsetpgrp would otherwise
        // be stopped by SIGTTOU.
        let me = std::process::id() as libc::pid_t;
        // SAFETY: tcsetpgrp on our stdin, the pty slave, naming our own new process group.
        if unsafe { libc::tcsetpgrp(0, me) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    SigSet::empty().thread_set_mask().map_err(io::Error::from)
}

/// Every signal back to its default action, as runc does: dispositions survive exec, so a
/// signal ignored where isol was started (a shell's background job ignores SIGINT and SIGQUIT;
/// some daemons ignore SIGPIPE or SIGCHLD) would stay ignored in the workload.
fn reset_signal_dispositions() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, sigaction};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP)) {
        // SAFETY: installs the default action, no handler; nothing else in init relies on a
        // disposition (signals are read from a signalfd).
        let _ = unsafe { sigaction(sig, &default) };
    }
    // The real-time signals, which nix does not enumerate, through the system call itself: the
    // C library refuses the two it keeps for its own threads (32 and 33), which can be inherited
    // ignored as well.
    let default = [0u64; 4]; // struct kernel_sigaction: handler SIG_DFL, flags, restorer, mask
    for signo in 32..=libc::SIGRTMAX() {
        // SAFETY: rt_sigaction reads a kernel_sigaction of SIG_DFL with an empty mask (sigsetsize
        // 8) from a valid buffer and writes nothing (the old-action pointer is null).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signo,
                default.as_ptr(),
                std::ptr::null_mut::<u8>(),
                8usize,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_failures_map_to_docker_codes() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(exec_failure(&"nope".into(), &e(libc::ENOENT)).0, 127);
        assert_eq!(exec_failure(&"/bin/nope".into(), &e(libc::ENOENT)).0, 127);
        assert_eq!(exec_failure(&"/etc/passwd".into(), &e(libc::EACCES)).0, 126);
        assert_eq!(exec_failure(&"/x".into(), &e(libc::ENOEXEC)).0, 126);
        assert!(
            exec_failure(&"nope".into(), &e(libc::ENOENT))
                .1
                .contains("not found in $PATH")
        );
    }
}
