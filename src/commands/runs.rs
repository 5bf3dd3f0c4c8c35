//! The live runs: a record per run (container or microVM, in the foreground or detached) under
//! `<store>/runs/`, written by the process that supervises the run and removed when it ends;
//! `isol ps`, `isol inspect`, `isol stop` and `isol exec` read them.
//!
//! A record names its supervisor by `pid:starttime` (the isol process that runs a container, or
//! the VMM process of a microVM): a record whose supervisor is gone (SIGKILLed) is stale, and the
//! next listing removes it, with the detached run's log. Names are unique among live runs: the
//! check and the write happen under `runs/.lock`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cli::{ExecArgs, PsArgs, StopArgs};
use isol_container::security::seccomp::Seccomp;

/// One live run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub name: String,
    /// "container" or "kvm".
    pub backend: String,
    pub image: String,
    pub command: Vec<String>,
    /// Seconds since the epoch.
    pub started: u64,
    /// The supervising process, `pid:starttime`.
    pub owner: String,
    /// The IPC mode it was started with (`private`, `shareable`, `host`, `container:…`).
    pub ipc: String,
    /// The run's environment and working directory, for `isol exec`.
    pub env: Vec<String>,
    pub workdir: String,
    /// Where the container runtime keeps the run's state (containers only).
    pub state_root: Option<PathBuf>,
    /// Whether the workload runs under a seccomp filter.
    pub seccomp: bool,
    /// The profile file it was given (`--security-opt seccomp=FILE`), compiled again for
    /// `isol exec`; none: isol's default profile.
    #[serde(default)]
    pub seccomp_profile: Option<String>,
    /// The network mode (`none`, `host`, `bridge`, `container:NAME`), for `isol inspect`.
    #[serde(default)]
    pub network: String,
    /// The limits it was given, for `isol inspect`.
    #[serde(default)]
    pub limits: Limits,
    /// A microVM's shape, for `isol inspect`.
    #[serde(default)]
    pub vm: Option<VmShape>,
}

/// A run's resource limits, as given (none: unlimited, or the backend's default).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes: a container's cgroup limit, a VM's RAM.
    pub memory: Option<u64>,
    /// A container's CPU quota, a VM's vCPUs.
    pub cpus: Option<f64>,
    /// A container's pids.max.
    pub pids: Option<u64>,
}

/// What a microVM was started with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmShape {
    pub vcpus: u8,
    pub memory_mib: u32,
    /// The guest kernel's path.
    pub kernel: Option<PathBuf>,
}

/// The directory of the records.
pub fn dir(store_root: &Path) -> PathBuf {
    store_root.join("runs")
}

/// A run's record (`isol ps`, `inspect`, `stop`, `exec` read it).
pub fn record_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// The log of a detached run (its stdout and stderr).
pub fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.log"))
}

/// Names follow docker's rule: a letter or digit, then letters, digits, `_`, `.`, `-`.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!(
            "Invalid --name {name:?}: use up to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        );
    }
    if isol_container::state::is_run_id(name) {
        bail!("Invalid --name {name}: it looks like a run id; choose another name");
    }
    Ok(())
}

/// Holds `runs/.lock` while names are checked and records written.
struct Lock(#[allow(dead_code)] Flock<File>);

fn lock(dir: &Path) -> anyhow::Result<Lock> {
    fs::create_dir_all(dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    let path = dir.join(".lock");
    let f = File::create(&path).with_context(|| format!("Cannot create {}", path.display()))?;
    let f = Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow::anyhow!("Cannot lock {}: {e}", path.display()))?;
    Ok(Lock(f))
}

/// The live runs, oldest first; stale records (their supervisor is gone) are removed.
pub fn list(dir: &Path) -> Vec<Record> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if let Some(owner) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix('.')?.strip_suffix(".tmp"))
            .and_then(|n| n.split_once('.').map(|(_, owner)| owner.to_owned()))
        {
            // A record its writer did not finish: a dead writer's is a leftover.
            if !isol_container::state::token_alive(&owner) {
                let _ = fs::remove_file(&path);
            }
            continue;
        }
        if path.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let rec: Option<Record> = fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        match rec {
            Some(r) if isol_container::state::token_alive(&r.owner) => out.push(r),
            Some(r) => remove_files(dir, &r.id),
            // Unreadable: being written right now (records are renamed into place, so only a
            // foreign file); left alone.
            None => {}
        }
    }
    out.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
    out
}

fn remove_files(dir: &Path, id: &str) {
    let _ = fs::remove_file(record_path(dir, id));
    let _ = fs::remove_file(log_path(dir, id));
    let _ = fs::remove_file(socket_path(dir, id));
}

/// A microVM's exec channel (`isol exec`; docs/vmm.md, "The exec channel").
pub fn socket_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.sock"))
}

/// A registered run: removes its record when dropped (the run ended).
#[derive(Debug)]
pub struct Registered {
    dir: PathBuf,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        remove_files(&self.dir, &self.id);
    }
}

/// Writes `rec` (its owner: this process), refusing a name a live run holds.
pub fn register(dir: &Path, mut rec: Record) -> anyhow::Result<Registered> {
    let _lock = lock(dir)?;
    if let Some(other) = list(dir).iter().find(|r| r.name == rec.name) {
        bail!(
            "The name {} is already in use by run {}: choose another --name, or stop that run (isol stop {})",
            rec.name,
            other.id,
            rec.name
        );
    }
    rec.owner = isol_container::state::owner_token(std::process::id())
        .context("Cannot read this process's start time in /proc")?;
    let path = record_path(dir, &rec.id);
    // Named by its writer too: one a SIGKILLed isol left is known dead (`list` removes it).
    let tmp = dir.join(format!(".{}.{}.tmp", rec.id, rec.owner));
    if let Err(source) =
        fs::write(&tmp, serde_json::to_vec(&rec)?).and_then(|()| fs::rename(&tmp, &path))
    {
        // Nothing half-written stays (a full store's filesystem: the file made, its bytes not).
        let _ = fs::remove_file(&tmp);
        return Err(isol_image::ImageError::Io {
            action: "write",
            path,
            source,
        }
        .into());
    }
    Ok(Registered {
        dir: dir.to_owned(),
        id: rec.id,
    })
}

/// The live run named `what`: a name, an id, or a unique prefix of an id.
pub fn find(dir: &Path, what: &str) -> anyhow::Result<Record> {
    let runs = list(dir);
    if let Some(r) = runs.iter().find(|r| r.name == what || r.id == what) {
        return Ok(r.clone());
    }
    let by_prefix: Vec<_> = runs.iter().filter(|r| r.id.starts_with(what)).collect();
    match by_prefix.as_slice() {
        [one] if !what.is_empty() => Ok((*one).clone()),
        [] | [_] => bail!("No such run: {what}; `isol ps` lists the live runs"),
        _ => bail!("{what} is the start of several runs' ids; give more of it, or the name"),
    }
}

/// A running container's init (host pid) and address.
pub fn container_info(rec: &Record) -> anyhow::Result<(i32, Option<String>)> {
    rec.state_root
        .as_deref()
        .and_then(|root| isol_container::state::run_info(root, &rec.id))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "Run {} ({}) is not running (yet, or any more); `isol ps` lists the live runs",
                rec.name,
                rec.id
            )
        })
}

pub(crate) fn pid_of(token: &str) -> Option<Pid> {
    token
        .split(':')
        .next()
        .and_then(|p| p.parse().ok())
        .map(Pid::from_raw)
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A live run's status: a container whose init is not running yet is `starting`.
pub fn status(r: &Record) -> &'static str {
    if r.backend == "container" && container_info(r).is_err() {
        "starting"
    } else {
        "running"
    }
}

/// When it started, RFC 3339 to the second.
pub fn started_rfc3339(r: &Record) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(r.started))
        .to_string()
}

/// `isol ps`.
pub fn ps(args: PsArgs) -> anyhow::Result<i32> {
    let store = super::open_store()?;
    let runs = list(&dir(store.root()));
    let rows: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| {
            // Both backends' runs on the bridge are in the containers' network table.
            let net = isol_container::network::lookup(&store.root().join("containers"), &r.id);
            let address = if r.backend == "container" {
                container_info(r).ok().and_then(|(_, a)| a)
            } else {
                net.as_ref().map(|n| n.address.to_string())
            };
            let ports: Vec<String> = net
                .map(|n| n.ports.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            serde_json::json!({
                "id": r.id,
                "name": r.name,
                "backend": r.backend,
                "image": r.image,
                "command": r.command,
                "status": status(r),
                "started": started_rfc3339(r),
                "address": address,
                "ports": ports,
            })
        })
        .collect();
    if args.json {
        println!("{}", serde_json::Value::Array(rows));
        return Ok(0);
    }
    let mut table = vec![
        [
            "ID", "NAME", "BACKEND", "IMAGE", "COMMAND", "STATUS", "STARTED", "ADDRESS", "PORTS",
        ]
        .map(String::from),
    ];
    for (r, row) in runs.iter().zip(&rows) {
        let mut cmd = r.command.join(" ");
        if cmd.chars().count() > 30 {
            cmd = cmd.chars().take(29).collect::<String>() + "…";
        }
        let up = now_secs().saturating_sub(r.started);
        table.push([
            r.id.clone(),
            r.name.clone(),
            r.backend.clone(),
            r.image.clone(),
            format!("\"{cmd}\""),
            row["status"].as_str().unwrap_or("").to_owned(),
            format!("{up}s ago"),
            row["address"].as_str().unwrap_or("-").to_owned(),
            match row["ports"].as_array() {
                Some(p) if !p.is_empty() => p
                    .iter()
                    .filter_map(|p| p.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => "-".to_owned(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..9)
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(0)
}

/// `isol stop`: SIGTERM to the workload, SIGKILL after the grace period; waits until the run's
/// supervisor has cleaned up.
pub fn stop(args: StopArgs) -> anyhow::Result<i32> {
    let store = super::open_store()?;
    let dir = dir(store.root());
    let mut failed = false;
    for what in &args.runs {
        match stop_one(&dir, what, Duration::from_secs(args.time.into())) {
            Ok(()) => println!("{what}"),
            Err(e) => {
                eprintln!("isol: {e:#}");
                failed = true;
            }
        }
    }
    Ok(if failed { crate::EXIT_ISOL as i32 } else { 0 })
}

fn stop_one(dir: &Path, what: &str, grace: Duration) -> anyhow::Result<()> {
    let rec = find(dir, what)?;
    let owner = pid_of(&rec.owner).context("The run's record names no process")?;
    let gone = |limit: Duration| {
        let end = Instant::now() + limit;
        loop {
            if !isol_container::state::token_alive(&rec.owner) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // The supervisor forwards SIGTERM to the workload (a container's init, or the VMM's guest).
    let _ = kill(owner, Signal::SIGTERM);
    if gone(grace) {
        return Ok(());
    }
    // Then the container's init (the supervisor cleans up after it), or the VMM itself.
    match container_info(&rec) {
        Ok((init, _)) => {
            let _ = kill(Pid::from_raw(init), Signal::SIGKILL);
        }
        Err(_) => {
            let _ = kill(owner, Signal::SIGKILL);
        }
    }
    if gone(Duration::from_secs(10)) {
        return Ok(());
    }
    // A supervisor that does not end: killed; what it leaves is swept by the next run.
    let _ = kill(owner, Signal::SIGKILL);
    if gone(Duration::from_secs(5)) {
        return Ok(());
    }
    bail!("Run {what} did not stop; its supervisor is process {owner}")
}

/// `isol exec`.
pub fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    let store = super::open_store()?;
    let dir = dir(store.root());
    let rec = find(&dir, &args.run)?;
    let env = exec_env(&rec, &args)?;
    let cwd = match &args.workdir {
        Some(w) if !w.is_absolute() => bail!(
            "Working directory {} is not absolute; use a path starting with /",
            w.display()
        ),
        Some(w) => w.clone(),
        None => PathBuf::from(&rec.workdir),
    };
    if rec.backend == "kvm" {
        return super::vm_exec::exec(&args, &socket_path(&dir, &rec.id), &rec, env, cwd);
    }
    for (set, flag) in [
        (args.tty, "-t"),
        (args.detach, "-d"),
        (args.user.is_some(), "-u"),
    ] {
        if set {
            bail!(
                "isol exec {flag} is not supported for containers yet (it is for microVMs); drop {flag}"
            );
        }
    }
    let (init_pid, _) = container_info(&rec)?;
    let status = read_status(init_pid)?;
    let spec = isol_container::exec::ExecSpec {
        init_pid,
        args: args.command.clone(),
        env,
        cwd,
        uid: status.uid,
        gid: status.gid,
        groups: status.groups,
        capabilities: status.cap_bnd,
        rlimits: Vec::new(),
        seccomp: match (&rec.seccomp_profile, rec.seccomp) {
            (_, false) => Seccomp::Unconfined,
            (None, true) => Seccomp::Default,
            (Some(path), true) => Seccomp::Profile(std::sync::Arc::new(
                super::run::seccomp_profile(path, status.cap_bnd)?,
            )),
        },
        umask: None,
        oom_score_adj: None,
        terminal: None,
        preserve_fds: 0,
    };
    let cgroup =
        isol_container::cgroups::open(Path::new(isol_container::process::CGROUP_ROOT), &rec.id)
            .ok();
    if !args.interactive {
        let null = File::open("/dev/null").context("Cannot open /dev/null")?;
        nix::unistd::dup2_stdin(&null).context("Cannot redirect stdin")?;
    }
    // The process is this one's grandchild: re-parented here, to be waited for.
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer and changes only this process.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let pid = match isol_container::exec::exec(&spec, cgroup.as_ref()) {
        Ok(executed) => executed.pid,
        Err(isol_container::ContainerError::Setup(msg)) if exec_code(&msg).is_some() => {
            eprintln!("isol: {msg}");
            return Ok(exec_code(&msg).unwrap_or(126));
        }
        Err(e) => return Err(e.into()),
    };
    loop {
        match nix::sys::wait::waitpid(Pid::from_raw(pid), None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => return Ok(c),
            Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => bail!("Cannot wait for the process in the container: {e}"),
        }
    }
}

/// The run's environment with `-e`'s on top (a key given again replaces the run's).
fn exec_env(rec: &Record, args: &ExecArgs) -> anyhow::Result<Vec<std::ffi::OsString>> {
    let mut env: Vec<std::ffi::OsString> = rec.env.iter().map(Into::into).collect();
    for e in &args.env {
        if !e.contains('=') || e.starts_with('=') {
            bail!("Invalid -e {e:?}: give KEY=VALUE");
        }
        let key = &e[..e.find('=').unwrap_or(0) + 1];
        env.retain(|v| !v.to_string_lossy().starts_with(key));
        env.push(e.into());
    }
    Ok(env)
}

/// 127 for a command that is not found, 126 for one that cannot be executed: the messages of
/// `isol_container::init::exec_failure`, which all start with `exec: `.
fn exec_code(msg: &str) -> Option<i32> {
    let rest = msg.strip_prefix("exec: ")?;
    if rest.ends_with("not found in $PATH") || rest.ends_with("no such file or directory") {
        Some(127)
    } else {
        Some(126)
    }
}

/// The ids and bounding set of a running container's init: the workload's own.
struct InitStatus {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    cap_bnd: u64,
}

fn read_status(pid: i32) -> anyhow::Result<InitStatus> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).with_context(|| format!("Cannot read {path}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .with_context(|| format!("{path} has no {name}"))
    };
    let first = |s: &str| s.split_whitespace().next().and_then(|v| v.parse().ok());
    // The ids as the container's user namespace numbers them (status shows the host's), for
    // the process that joins it (`--userns private`: host 100000 is the container's 0).
    let uid_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
    let gid_map = fs::read_to_string(format!("/proc/{pid}/gid_map")).unwrap_or_default();
    let uid: u32 = first(field("Uid:")?).context("bad Uid")?;
    let gid: u32 = first(field("Gid:")?).context("bad Gid")?;
    Ok(InitStatus {
        uid: inside(&uid_map, uid),
        gid: inside(&gid_map, gid),
        groups: field("Groups:")?
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .map(|g| inside(&gid_map, g))
            .collect(),
        cap_bnd: u64::from_str_radix(field("CapBnd:")?, 16).context("bad CapBnd")?,
    })
}

/// The id inside a user namespace of host id `id`, by its `uid_map` or `gid_map` as the host
/// reads it (`inside outside count` lines); unchanged where no line maps it (no user namespace
/// of its own: `0 0 4294967295`).
fn inside(map: &str, id: u32) -> u32 {
    map.lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
            (f.len() == 3).then(|| (f[0], f[1], f[2]))
        })
        .find(|&(_, out, n)| u64::from(id) >= out && u64::from(id) - out < n)
        .map_or(id, |(ins, out, _)| (ins + u64::from(id) - out) as u32)
}

/// A new record for a run, before it is registered.
pub fn new_record(id: &str, name: Option<&str>, backend: &str) -> Record {
    Record {
        id: id.to_owned(),
        name: name.unwrap_or(id).to_owned(),
        backend: backend.to_owned(),
        image: String::new(),
        command: Vec::new(),
        started: now_secs(),
        owner: String::new(),
        ipc: "private".into(),
        env: Vec::new(),
        workdir: "/".into(),
        state_root: None,
        seccomp: true,
        seccomp_profile: None,
        network: "none".into(),
        limits: Limits::default(),
        vm: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by tests/soak.sh in the lab (2026-12-07): an isol SIGKILLed between writing its
    /// record and renaming it left `.<id>.tmp` for good (nothing looked at it). The temporary
    /// names its writer now, and a listing removes a dead writer's.
    #[test]
    fn a_record_a_dead_isol_was_writing_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let own = isol_container::state::owner_token(std::process::id()).unwrap();
        // pid 1 did not start at tick 1: a dead writer's token.
        let dead = dir.path().join(".0123456789ab.1:1.tmp");
        let live = dir.path().join(format!(".0123456789ac.{own}.tmp"));
        let foreign = dir.path().join("notes.txt");
        for p in [&dead, &live, &foreign] {
            fs::write(p, b"{").unwrap();
        }
        assert!(list(dir.path()).is_empty());
        assert!(!dead.exists(), "a dead writer's record was left");
        assert!(live.exists(), "a record being written was removed");
        assert!(foreign.exists());
    }
}
