//! `isol run -d`: the run goes on in a supervisor process that outlives the command.
//!
//! isol forks twice; the grandchild calls `setsid` (no terminal, no process group of the shell's:
//! nothing the shell does to its jobs reaches it), puts its stdin on /dev/null and its stdout and
//! stderr in the run's log (`<store>/runs/<id>.log`), and runs the run as `isol run` does in the
//! foreground: it is the run's supervisor, which waits for the workload and cleans up after it.
//! The command waits until the container's init runs (its pid appears in the run's state), or the
//! supervisor reports an error ("E message") or is gone (EOF on the pipe: a microVM's supervisor
//! execs into isol-vmm, which closes it), then prints the id and returns.
//!
//! Nothing leaks when the supervisor is SIGKILLed: the container dies with it (its child has
//! PR_SET_PDEATHSIG), and the next run's sweep removes its cgroup and state, the next listing its
//! record and log.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nix::unistd::{ForkResult, fork, pipe2};

/// Runs `supervise` detached: in this process, returns only in the supervisor, with the result
/// of `supervise`; the command itself exits here once the run is started.
pub fn detach(
    store_root: &Path,
    id: &str,
    supervise: impl FnOnce() -> anyhow::Result<i32>,
) -> anyhow::Result<i32> {
    let runs = super::runs::dir(store_root);
    std::fs::create_dir_all(&runs).with_context(|| format!("Cannot create {}", runs.display()))?;
    let log_path = super::runs::log_path(&runs, id);
    let log = File::create(&log_path)
        .with_context(|| format!("Cannot create the run's log {}", log_path.display()))?;
    let null = File::open("/dev/null").context("Cannot open /dev/null")?;
    let (r, w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe2 failed")?;
    // SAFETY: isol has one thread here (nothing before `isol run` starts one); the child only
    // forks again, calls setsid and exits, or goes on as the single-threaded supervisor.
    match unsafe { fork() }.context("fork failed")? {
        ForkResult::Parent { child } => {
            drop(w);
            let _ = nix::sys::wait::waitpid(child, None);
            let code = wait_started(File::from(r), store_root, id);
            std::process::exit(code)
        }
        ForkResult::Child => {}
    }
    drop(r);
    let _ = nix::unistd::setsid();
    // SAFETY: as above: still one thread.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {}
        // SAFETY: ends the intermediate process without running destructors twice.
        Ok(ForkResult::Parent { .. }) => unsafe { libc::_exit(0) },
        Err(e) => {
            let _ = writeln!(
                File::from(w),
                "E Cannot start the run's supervisor: fork: {e}"
            );
            // SAFETY: as above.
            unsafe { libc::_exit(125) }
        }
    }
    let _ = nix::unistd::dup2_stdin(&null);
    let _ = nix::unistd::dup2_stdout(&log);
    let _ = nix::unistd::dup2_stderr(&log);
    drop((null, log));
    let mut report = File::from(w);
    match supervise() {
        Ok(code) => Ok(code),
        Err(e) => {
            let msg = isol_vmm::launch::one_line(e.as_ref()).replace('\n', " ");
            let _ = writeln!(report, "E {msg}");
            let _ = report.as_raw_fd();
            Err(e)
        }
    }
}

/// In the command: waits until the run is started (exit 0, its id printed) or has failed (125,
/// its error printed).
fn wait_started(mut pipe: File, store_root: &Path, id: &str) -> i32 {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let state_root = store_root.join("containers");
    let mut got = Vec::new();
    loop {
        if isol_container::state::run_info(&state_root, id).is_some() {
            break;
        }
        let ready = {
            let mut fds = [PollFd::new(pipe.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(10u16)).unwrap_or(0)
        };
        if ready > 0 {
            let mut buf = [0u8; 4096];
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let text = String::from_utf8_lossy(&got);
    if let Some(msg) = text.lines().find_map(|l| l.strip_prefix("E ")) {
        eprintln!("isol: {msg}");
        return crate::EXIT_ISOL as i32;
    }
    println!("{id}");
    0
}
