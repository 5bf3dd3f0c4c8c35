//! Hooks: programs a container's configuration asks to run at points of its life (OCI
//! runtime-spec `hooks`), each with the container's state JSON on its stdin.
//!
//! The container crate runs those of a container's creation, where only it can: `createRuntime`
//! (and the deprecated `prestart` before them) in the parent, in the runtime's namespaces, once
//! the container's exist and before its `pivot_root` ([`crate::process::create`] holds the
//! child's go until they are done); `createContainer` in the child, in the container's
//! namespaces, before `pivot_root` (their paths are the host's); `startContainer` in the init,
//! once `start` opened the gate, just before the workload is started (their paths are the
//! container's). The runtime runs `poststart` and `poststop` itself with [`run_all`].
//!
//! A hook's stdout and stderr go to a memfd, whose start ends up in the error when it fails;
//! it runs with the environment it is given (nothing else) and every signal unblocked.

use std::io::{Read, Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One hook: a program, its argv (`args[0]` is its argv[0]; empty: the path), its whole
/// environment, and how long it may run (none: as long as it takes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    pub path: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub timeout: Option<Duration>,
}

/// The hooks run while a container is created and started; see the module's documentation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hooks {
    /// `prestart` (deprecated), run in the runtime's namespaces before `createRuntime`.
    pub prestart: Vec<Hook>,
    /// `createRuntime`, run in the runtime's namespaces.
    pub create_runtime: Vec<Hook>,
    /// `createContainer`, run in the container's namespaces before `pivot_root`.
    pub create_container: Vec<Hook>,
    /// `startContainer`, run in the container just before the workload starts.
    pub start_container: Vec<Hook>,
    /// The state each hook reads on stdin: this JSON object with `status` and `pid` (the
    /// init's, on the host) set for the moment it runs.
    pub state: serde_json::Value,
}

impl Hooks {
    /// Whether any hook must run before the container's `pivot_root`.
    pub fn before_pivot(&self) -> bool {
        !self.prestart.is_empty()
            || !self.create_runtime.is_empty()
            || !self.create_container.is_empty()
    }

    /// The state JSON for `status` and the init's host `pid`.
    pub fn state_for(&self, status: &str, pid: i32) -> Vec<u8> {
        state_for(&self.state, status, pid)
    }

    /// Whether there is any hook at all.
    pub fn is_empty(&self) -> bool {
        !self.before_pivot() && self.start_container.is_empty()
    }
}

/// `state` with `status` and `pid` set, as JSON.
pub fn state_for(state: &serde_json::Value, status: &str, pid: i32) -> Vec<u8> {
    let mut state = state.clone();
    if let Some(map) = state.as_object_mut() {
        map.insert("status".into(), status.into());
        map.insert("pid".into(), pid.into());
    }
    serde_json::to_vec(&state).expect("plain JSON serializes")
}

/// Runs `hooks` in order, each with `state` on stdin; the first failure stops it, with a
/// message naming the hook (`kind` hook #N, its path) and saying why: its exit status or
/// signal, or its timeout, then the first of what it wrote.
pub fn run_all(kind: &str, hooks: &[Hook], state: &[u8]) -> Result<(), String> {
    for (i, hook) in hooks.iter().enumerate() {
        run_one(hook, state)
            .map_err(|why| format!("{kind} hook #{i} ({}) failed: {why}", hook.path.display()))?;
    }
    Ok(())
}

/// Runs every one of `hooks` in order, each with `state` on stdin, whatever the others did: the
/// runtime-spec's rule for `poststart` and `poststop` (a failure is a warning, and the remaining
/// hooks run as if it had succeeded). Returns one message per failed hook, as [`run_all`]'s.
pub fn run_each(kind: &str, hooks: &[Hook], state: &[u8]) -> Vec<String> {
    hooks
        .iter()
        .enumerate()
        .filter_map(|(i, hook)| {
            run_one(hook, state)
                .err()
                .map(|why| format!("{kind} hook #{i} ({}) failed: {why}", hook.path.display()))
        })
        .collect()
}

fn run_one(hook: &Hook, state: &[u8]) -> Result<(), String> {
    let output = memfd().map_err(|e| format!("memfd_create: {e}"))?;
    let mut output = std::fs::File::from(output);
    let mut cmd = Command::new(&hook.path);
    if let Some((argv0, rest)) = hook.args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    cmd.env_clear()
        .envs(hook.env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(output.try_clone().map_err(|e| e.to_string())?)
        .stderr(output.try_clone().map_err(|e| e.to_string())?);
    // SAFETY: the closure runs in the forked child before exec and only makes a system call on
    // its own process (sigprocmask): the runtime's blocked signals are not the hook's.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::signal::SigSet::empty()
                .thread_set_mask()
                .map_err(std::io::Error::from)
        })
    };
    let mut child = cmd.spawn().map_err(|e| format!("cannot run it: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin has closed it: that is its business.
        let _ = stdin.write_all(state);
    }
    let deadline = hook.timeout.map(|t| Instant::now() + t);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "timed out after {}s (killed)",
                hook.timeout.unwrap_or_default().as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if status.success() {
        return Ok(());
    }
    let mut said = String::new();
    let _ = output.rewind();
    let _ = output.take(512).read_to_string(&mut said);
    let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        _ => status.to_string(),
    };
    Err(if said.is_empty() {
        how
    } else {
        format!("{how}: {said}")
    })
}

/// An anonymous, close-on-exec file in memory.
fn memfd() -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"isol-hook".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes `hooks`' startContainer hooks with their state (status `created`, the init's host
/// `pid`) to a new memfd, which the init reads (see [`read_for_init`]).
pub(crate) fn write_for_init(hooks: &Hooks, pid: i32) -> std::io::Result<OwnedFd> {
    let fd = memfd()?;
    let mut file = std::fs::File::from(fd);
    let payload = ForInit {
        hooks: hooks.start_container.clone(),
        state: hooks.state_for("created", pid),
    };
    file.write_all(&serde_json::to_vec(&payload).expect("plain data serializes"))?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// What the init gets from [`write_for_init`].
#[derive(Serialize, Deserialize)]
pub(crate) struct ForInit {
    pub hooks: Vec<Hook>,
    pub state: Vec<u8>,
}

/// Reads what [`write_for_init`] wrote to `fd` (and closes it).
pub(crate) fn read_for_init(fd: i32) -> Result<ForInit, String> {
    // SAFETY: the fd number was handed to the init for this; nothing else in it owns it.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let mut text = Vec::new();
    file.read_to_end(&mut text)
        .map_err(|e| format!("cannot read the startContainer hooks: {e}"))?;
    serde_json::from_slice(&text).map_err(|e| format!("bad startContainer hooks: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout: Option<u64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["GREETING=hi".into()],
            timeout: timeout.map(Duration::from_secs),
        }
    }

    #[test]
    fn a_hook_reads_the_state_and_gets_only_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "{{ cat; echo; echo \"$GREETING ${{HOME:-nohome}}\"; }} > {0}",
            out.display()
        );
        let hooks = Hooks {
            state: serde_json::json!({"id": "c1"}),
            ..Hooks::default()
        };
        run_all(
            "poststart",
            &[hook(&script, None)],
            &hooks.state_for("running", 42),
        )
        .unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let state: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(state["status"], "running");
        assert_eq!(state["pid"], 42);
        assert_eq!(state["id"], "c1");
        assert!(text.ends_with("hi nohome\n"), "{text}");
    }

    #[test]
    fn a_failing_or_slow_hook_fails_with_what_it_said() {
        let e = run_all(
            "createRuntime",
            &[
                hook("true", None),
                hook("echo no network >&2; exit 3", None),
            ],
            b"{}",
        )
        .unwrap_err();
        assert_eq!(
            e,
            "createRuntime hook #1 (/bin/sh) failed: exit status 3: no network"
        );
        let started = Instant::now();
        let e = run_all("prestart", &[hook("sleep 30", Some(1))], b"{}").unwrap_err();
        assert!(e.ends_with("timed out after 1s (killed)"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let e = run_all(
            "poststop",
            &[Hook {
                path: "/nonexistent".into(),
                ..Hook::default()
            }],
            b"{}",
        )
        .unwrap_err();
        assert!(e.contains("cannot run it"), "{e}");
    }
}
