//! The parent side of a run: prepare what must exist before the clone, clone the child into its
//! namespaces (`namespaces`), finish what can only be done from outside (uid maps, cgroup,
//! network), let the child go, wait for the workload, and tear everything down.
//!
//! The child reports to the parent over a pipe, one line per message:
//! `T name ns` (a phase finished at CLOCK_MONOTONIC `ns`), `E message` (setup failed),
//! `X code message` (the workload could not be executed; code is 126 or 127),
//! `R ns` (the workload is running), `G` (a created container's init waits at its start gate,
//! [`create`]). EOF after `R` is normal. While it waits, signals are tended
//! to by `signals`.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};

use crate::cgroups::{self, AnyCgroupManager, CgroupManager, Entry, Stats};
use crate::child::{self, ChildSpec};
use crate::config::{ContainerConfig, NetworkMode, Rootfs, SharedNamespace};
use crate::error::ContainerError;
use crate::namespaces;
use crate::network;
use crate::pty::Pty;
use crate::security;
use crate::signals;
use crate::state::{self, RunDir};
use crate::sys::monotonic_ns;

/// Where cgroupfs is mounted on the host.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Exit code of a run stopped by its timeout, as timeout(1).
pub const TIMEOUT_EXIT: i32 = 124;

/// How the workload ended, and what the run cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunResult {
    pub id: String,
    /// The exit code isol should exit with: the workload's status, 128+N when killed by signal
    /// N, 126/127 when it could not be executed.
    pub exit_code: i32,
    /// Set when the workload was killed by a signal.
    pub signal: Option<i32>,
    /// Why the workload could not be executed, when it could not.
    pub exec_error: Option<String>,
    /// Start phases in order, in milliseconds each.
    pub phases: Vec<(String, f64)>,
    /// Wall time from isol's start of the run to the workload's exit, in milliseconds.
    pub total_ms: f64,
    pub stats: Stats,
    pub address: Option<String>,
    /// The published ports, docker's way (`0.0.0.0:18080->8080/tcp`), host ports as bound.
    pub ports: Vec<String>,
}

/// Runs one container to completion.
pub fn run(cfg: &ContainerConfig) -> Result<RunResult, ContainerError> {
    run_with_init(cfg, None)
}

/// [`run`], with the sealed copy of the container's init started earlier by the caller
/// (`init`, see [`security::exe::InitCopy`]): it is taken before the clone. Without one, a
/// thread makes the copy while the child builds its rootfs.
pub fn run_with_init(
    cfg: &ContainerConfig,
    init: Option<security::exe::InitCopy>,
) -> Result<RunResult, ContainerError> {
    let t_start = monotonic_ns();
    let mut phases = Phases::new(t_start);
    let cgroup_root = Path::new(CGROUP_ROOT);
    state::sweep(&cfg.state_root, cgroup_root);

    // The writable layer is a tmpfs of the container's (see rootfs::overlay); rootless runs keep
    // it on the host's disk. A rootfs directory is written in place.
    let run_dir = match &cfg.rootfs {
        Rootfs::Layers(_) => Some(RunDir::create(&cfg.state_root, &cfg.id, cfg.rootless)?),
        Rootfs::Dir { .. } => None,
    };
    let mut guard = Teardown {
        run_dir,
        cgroup: None,
        net: None,
        child: None,
    };
    let res = run_in(cfg, &mut guard, &mut phases, cgroup_root, init);
    let td = monotonic_ns();
    let teardown = guard.finish();
    match res {
        Ok(mut r) => {
            teardown?;
            phases.push_at("teardown", monotonic_ns());
            let _ = td;
            r.phases = phases.into_ms();
            Ok(r)
        }
        Err(e) => Err(e),
    }
}

/// A container created to be started later ([`create`]).
#[derive(Debug)]
pub struct Created {
    /// The container's init, as the host sees it.
    pub pid: i32,
    /// With a terminal ([`ContainerConfig::tty`]): the pty's master, whose slave is the
    /// container's stdio and controlling terminal; the caller hands it to its client.
    pub console: Option<OwnedFd>,
}

/// Creates a container whose init waits, before it starts the workload, until the FIFO `gate`
/// is opened for reading (runc's create/start split), and returns once it waits. The container
/// then outlives the caller: its init is re-parented to the caller's subreaper, which waits for
/// it; its cgroup stays until [`crate::cgroups::open`]`(…).remove()`. The rootfs must be a
/// directory ([`Rootfs::Dir`]), and the network none or the host's.
pub fn create(cfg: &ContainerConfig, gate: &Path) -> Result<Created, ContainerError> {
    if !matches!(cfg.rootfs, Rootfs::Dir { .. }) {
        return Err(ContainerError::Unsupported(
            "A container created to be started later needs a rootfs directory".into(),
        ));
    }
    if cfg.network == NetworkMode::Bridge || cfg.timeout.is_some() {
        return Err(ContainerError::Unsupported(
            "A container created to be started later cannot have a bridge network or a timeout yet"
                .into(),
        ));
    }
    // The init reopens the gate as the container's root: with a user namespace of its own, an
    // unprivileged uid on the host, which must own it.
    if let Some(ns) = &cfg.user_namespace {
        let (uid, gid) = (ns.host_root_uid(), ns.host_root_gid());
        nix::unistd::chown(
            gate,
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
        )
        .map_err(|e| ContainerError::sys(format!("chown {}", gate.display()), e))?;
    }
    let cgroup_root = Path::new(CGROUP_ROOT);
    let mut phases = Phases::new(monotonic_ns());
    let mut guard = Teardown {
        run_dir: None,
        cgroup: None,
        net: None,
        child: None,
    };
    let created = create_in(cfg, &mut guard, &mut phases, cgroup_root, gate)?;
    // Handed over: the container and its cgroup outlive this process.
    guard.child = None;
    guard.cgroup = None;
    Ok(created)
}

fn create_in(
    cfg: &ContainerConfig,
    guard: &mut Teardown,
    phases: &mut Phases,
    cgroup_root: &Path,
    gate: &Path,
) -> Result<Created, ContainerError> {
    let launched = launch(cfg, guard, phases, cgroup_root, Some(gate), None)?;
    let stops = Cell::new(0);
    let reports = Reports {
        pipe: File::from(launched.reports),
        child: launched.child,
        sfd: &launched.sfd,
        stops: &stops,
        deadline: None,
    };
    let started = read_reports(reports, phases);
    let _ = launched.mask.thread_unblock();
    if let Some((msg, _)) = started?.exec_error {
        return Err(ContainerError::Setup(msg));
    }
    Ok(Created {
        pid: launched.child.as_raw(),
        console: launched.pty.map(Pty::into_master),
    })
}

/// A child launched through its go: in its namespaces and cgroup, its network wired, about to
/// exec (or execing) the container's init.
struct Launched {
    child: Pid,
    /// The child's report pipe.
    reports: OwnedFd,
    /// The signals isol takes while the container runs ([`signals::take`]), and their mask.
    mask: nix::sys::signal::SigSet,
    sfd: SignalFd,
    pty: Option<Pty>,
}

/// Everything before the child's go, shared by [`run`] and [`create`]: the cgroup, the child's
/// clone into its namespaces, what only the parent can do (id maps, cgroup, network), and the
/// go with the sealed init (`init`, when the caller started its copy; else made here). With a
/// `gate`, the init waits on it before starting the workload. What it creates is held by `guard`.
fn launch(
    cfg: &ContainerConfig,
    guard: &mut Teardown,
    phases: &mut Phases,
    cgroup_root: &Path,
    gate: Option<&Path>,
    init: Option<security::exe::InitCopy>,
) -> Result<Launched, ContainerError> {
    if cfg.user_namespace.is_some() && cfg.rootless {
        return Err(ContainerError::Unsupported(
            "A user namespace with mappings of its own needs root: a rootless run maps only the caller; run as root or drop the mappings".into(),
        ));
    }
    if cfg.user_namespace.is_some() && !cfg.join.is_empty() {
        return Err(ContainerError::Unsupported(
            "A container with a user namespace of its own cannot join another container's namespaces (they belong to the host's user namespace); drop one".into(),
        ));
    }
    if cfg.host_namespaces.mount
        && (!matches!(cfg.rootfs, Rootfs::Dir { .. })
            || cfg.rootless
            || cfg.user_namespace.is_some()
            || cfg.join.iter().any(|(ns, _)| *ns == SharedNamespace::User))
    {
        return Err(ContainerError::Unsupported(
            "A container in the runtime's mount namespace needs a rootfs directory and no user namespace (its mounts are made in the runtime's namespace, which only the host's root may change)".into(),
        ));
    }
    if cfg.host_namespaces.pid && cfg.rootless {
        return Err(ContainerError::Unsupported(
            "The host's PID namespace (--pid host) needs root: isol ends the container's processes through its cgroup, which a rootless run has none of; run isol as root or drop the flag".into(),
        ));
    }
    // Everything that costs time and needs no child is done before the clone.
    let cgroup = if cfg.rootless {
        if !cfg.limits.is_empty() {
            return Err(ContainerError::Unsupported(
                "Resource limits (--memory, --cpus, --pids-limit) need root; run isol as root or drop them".into(),
            ));
        }
        None
    } else {
        let cgroup = match &cfg.cgroup_path {
            Some(path) => cgroups::create_long_lived_at(cgroup_root, path, &cfg.limits)?,
            None => cgroups::create(cgroup_root, &cfg.id, &cfg.limits)?,
        };
        // Before any process enters it; on failure the guard removes the cgroup.
        let mut rules = cfg.devices.clone();
        rules.extend(cfg.device_nodes.iter().filter_map(|n| n.mknod_rule()));
        let restricted = cgroup.restrict_devices(&rules);
        guard.cgroup = Some(cgroup);
        restricted?;
        guard.cgroup.take()
    };
    let cgroup_view = match &cgroup {
        Some(AnyCgroupManager::V2(_)) => crate::rootfs::CgroupView::V2,
        Some(AnyCgroupManager::V1(m)) => crate::rootfs::CgroupView::V1(m.views()),
        None => crate::rootfs::CgroupView::None,
    };
    guard.cgroup = cgroup;
    phases.push("cgroup");

    let filter = cfg.privileges.seccomp.filter()?;
    let pty = if cfg.tty { Some(Pty::open()?) } else { None };
    let spec = ChildSpec::new(
        cfg,
        guard.run_dir.as_ref(),
        gate,
        filter.as_ref(),
        pty.as_ref(),
        cgroup_view,
    )?;
    phases.push("prepare");
    // A copy started by the caller is taken now: the child is cloned from a single-threaded
    // process (it allocates). The phase is the wait for it, none when it was done already.
    let early_init = match init {
        Some(copy) => {
            let fd = copy.finish()?;
            phases.push("sealed-copy");
            Some(fd)
        }
        None => None,
    };

    // The go travels over a socket, with the sealed copy of isol the child execs as init.
    let (go_w, go_r) = {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| ContainerError::sys("socketpair", e))?
    };
    let (rep_r, rep_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| ContainerError::sys("pipe2", e))?;

    // Signals are taken synchronously through a signalfd; the child inherits the blocked mask,
    // which the container's init keeps and the workload resets.
    let (mask, sfd) = signals::take()?;

    let entry = match &guard.cgroup {
        Some(cg) => Some(cg.entry()?),
        None => None,
    };
    let into = match &entry {
        Some(Entry::CloneInto(dir)) => Some(dir.as_fd()),
        _ => None,
    };
    let joined = cfg
        .join
        .iter()
        .fold(0u64, |f, (ns, _)| f | ns.clone_flag() as u64);
    let flags = namespaces::clone_flags(cfg.network, cfg.rootless || cfg.user_namespace.is_some())
        & !joined
        & !cfg.host_namespaces.clone_flags();
    // A PID namespace is joined for the child before it is made: it is born there.
    let pid_ns = match cfg.join.iter().find(|(ns, _)| *ns == SharedNamespace::Pid) {
        Some((_, path)) => Some(namespaces::PidForChildren::enter(path).inspect_err(|_| {
            let _ = mask.thread_unblock();
        })?),
        None => None,
    };
    let (pid, born_in_cgroup) = match cfg.join.iter().find(|(ns, _)| *ns == SharedNamespace::User) {
        Some((_, path)) => namespaces::clone_in_user_namespace(path, flags, into),
        None => namespaces::clone_child(flags, into),
    };
    if pid != 0
        && let Some(ns) = pid_ns
        && let Err(e) = ns.restore()
    {
        let _ = mask.thread_unblock();
        if pid > 0 {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            guard.child = Some(Pid::from_raw(pid as i32));
        }
        return Err(e);
    }
    if pid < 0 {
        let _ = mask.thread_unblock();
        return Err(namespaces::clone_error(
            Errno::from_raw(-pid as i32),
            cfg.rootless,
            flags,
        ));
    }
    if pid == 0 {
        drop(go_w);
        drop(rep_r);
        let join = entry.as_ref().filter(|_| !born_in_cgroup);
        child::main(&spec, join, go_r, rep_w);
    }
    let child = Pid::from_raw(pid as i32);
    guard.child = Some(child);
    drop(go_r);
    drop(rep_w);
    // In a user namespace joined by path, the init reopens the gate as that namespace's root,
    // which the namespace's own maps place on the host: it must own the gate (as `create`
    // does it for a user namespace of the container's own).
    if let Some(gate) = gate
        && cfg.join.iter().any(|(ns, _)| *ns == SharedNamespace::User)
    {
        let ns = namespaces::read_maps(child)?;
        nix::unistd::chown(
            gate,
            ns.host_root_uid().map(nix::unistd::Uid::from_raw),
            ns.host_root_gid().map(nix::unistd::Gid::from_raw),
        )
        .map_err(|e| ContainerError::sys(format!("chown {}", gate.display()), e))?;
    }
    phases.push("namespaces");

    // Meanwhile the child builds its rootfs, and (unless the caller made it already) a thread of
    // ours copies isol's init binary (or, without one, isol itself) into a sealed memfd
    // (CVE-2019-5736, see `security::exe`): made here, its pages are charged to isol's cgroup,
    // never to the container's limit. The child waits for the go before anything of the
    // container runs.
    let outside = std::thread::scope(|s| {
        // The copy in hand, or the thread making it.
        let copy = early_init.ok_or_else(|| s.spawn(security::exe::sealed_init_copy));
        if cfg.rootless {
            namespaces::write_id_maps(child)?;
        }
        if let Some(userns) = &cfg.user_namespace {
            namespaces::write_maps(child, userns)?;
            let layers = match &cfg.rootfs {
                Rootfs::Layers(layers) => namespaces::idmapped_layers(child, layers)?,
                Rootfs::Dir { .. } => Vec::new(),
            };
            let fds: Vec<_> = layers.iter().map(AsFd::as_fd).collect();
            security::exe::send_fds(go_w.as_fd(), &fds).map_err(|e| {
                ContainerError::Setup(format!("Cannot hand the container its layers: {e}"))
            })?;
        }
        // Only where neither clone3 nor the child's own move could be used.
        if let Some(cg) = &guard.cgroup
            && !born_in_cgroup
            && !matches!(entry, Some(Entry::SelfJoin(_)))
        {
            cg.add_task(child.as_raw())?;
        }
        phases.push("cgroup-attach");
        guard.net = network::attach(
            cfg.network,
            &cfg.id,
            child.as_raw(),
            &cfg.state_root,
            &cfg.publish,
        )?;
        phases.push("network");
        // The container's namespaces exist; it has not pivoted yet (it waits for the go).
        if cfg.hooks.before_pivot() {
            let state = cfg.hooks.state_for("creating", child.as_raw());
            crate::hooks::run_all("prestart", &cfg.hooks.prestart, &state)
                .and_then(|()| {
                    crate::hooks::run_all("createRuntime", &cfg.hooks.create_runtime, &state)
                })
                .map_err(ContainerError::Setup)?;
            phases.push("hooks");
        }
        let init_exe = match copy {
            Ok(fd) => fd,
            Err(copier) => {
                let fd = copier.join().map_err(|_| {
                    ContainerError::Setup("The thread copying isol panicked".into())
                })??;
                phases.push("sealed-copy");
                fd
            }
        };
        security::exe::send_fd(go_w.as_fd(), init_exe.as_fd())
            .map_err(|e| ContainerError::Setup(format!("Cannot start the container: {e}")))
    });
    drop(go_w);
    if let Err(e) = outside {
        // When the child failed first, its error is the one that explains the failure.
        let _ = kill(child, Signal::SIGKILL);
        return Err(child_failure(rep_r).map_or(e, ContainerError::Setup));
    }
    Ok(Launched {
        child,
        reports: rep_r,
        mask,
        sfd,
        pty,
    })
}

fn run_in(
    cfg: &ContainerConfig,
    guard: &mut Teardown,
    phases: &mut Phases,
    cgroup_root: &Path,
    init: Option<security::exe::InitCopy>,
) -> Result<RunResult, ContainerError> {
    let Launched {
        child,
        reports: rep_r,
        mask,
        sfd,
        pty,
    } = launch(cfg, guard, phases, cgroup_root, None, init)?;
    let address = guard.net.as_ref().map(|a| a.address().to_string());
    let ports = guard.net.as_ref().map_or_else(Vec::new, |a| {
        a.ports().iter().map(ToString::to_string).collect()
    });

    let deadline = cfg.timeout.map(|t| std::time::Instant::now() + t);
    let stops = Cell::new(0);
    let reports = Reports {
        pipe: File::from(rep_r),
        child,
        sfd: &sfd,
        stops: &stops,
        deadline,
    };
    let started = read_reports(reports, phases)?;
    // For `isol exec`, `isol stop` and `isol ps`: where the container's init is, and its
    // address; removed with the run directory. Written only now that the workload runs: before,
    // the child may still be building its root (an exec that joined it then would see the
    // host's files).
    if let Some(dir) = &guard.run_dir {
        state::write_run_info(&dir.dir, child.as_raw(), address.as_deref())?;
    }
    let exit_from_report = started.exec_error.as_ref().map(|(_, code)| *code);
    let exec_error = started.exec_error.map(|(msg, _)| msg);
    if let Some(p) = &pty {
        p.close_slave();
    }

    let status = match &pty {
        Some(p) => p.relay(child, &sfd, deadline, &stops)?,
        None => signals::wait_forwarding(child, &sfd, deadline, &stops)?,
    };
    let timed_out = matches!(status, WaitStatus::Signaled(_, Signal::SIGKILL, _))
        && deadline.is_some_and(|d| std::time::Instant::now() >= d);
    guard.child = None;
    let _ = mask.thread_unblock();
    let t_exit = monotonic_ns();
    phases.push_at("run", t_exit);

    let (mut exit_code, mut signal) = match status {
        WaitStatus::Exited(_, c) => (c, None),
        WaitStatus::Signaled(_, s, _) => (128 + s as i32, Some(s as i32)),
        _ => (125, None),
    };
    // The init exits with 128+N for a workload killed by signal N; its last report says which.
    if signal.is_none()
        && let Some(s) = last_report(started.reader)
    {
        signal = Some(s);
    }
    if let Some(code) = exit_from_report {
        exit_code = code;
    }
    if timed_out {
        exit_code = TIMEOUT_EXIT;
    }
    let mut stats = match &guard.cgroup {
        Some(cg) => cg.stats().unwrap_or_default(),
        None => Stats::default(),
    };
    if stats.cpu_usage_usec.is_none() {
        // Without a cpu hierarchy (no --cpus on cgroup v1): the CPU time of the container's init
        // and every descendant it reaped, as the kernel accounts it to its waited-for children.
        stats.cpu_usage_usec = children_cpu_usec();
    }
    Ok(RunResult {
        id: cfg.id.clone(),
        exit_code,
        signal,
        exec_error,
        phases: Vec::new(),
        total_ms: (t_exit - phases.start) as f64 / 1e6,
        stats,
        address,
        ports,
    })
}

/// User + system CPU time of this process's waited-for children, in microseconds.
fn children_cpu_usec() -> Option<u64> {
    use nix::sys::resource::{UsageWho, getrusage};
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).ok()?;
    let us = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Some(us(u.user_time()) + us(u.system_time()))
}

/// What the reports said up to the workload's start.
struct Started<'a> {
    /// Why the workload could not be executed, with its exit code (126, 127).
    exec_error: Option<(String, i32)>,
    /// The rest of the reports, for [`last_report`].
    reader: BufReader<Reports<'a>>,
}

/// Reads the child's reports up to the workload's start (`R`), or to EOF when it did not start.
fn read_reports<'a>(
    reports: Reports<'a>,
    phases: &mut Phases,
) -> Result<Started<'a>, ContainerError> {
    let mut reader = BufReader::new(reports);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line));
        let (tag, rest) = text.split_once(' ').unwrap_or((&text, ""));
        match tag {
            "T" => {
                if let Some((name, ns)) = rest.split_once(' ')
                    && let Ok(ns) = ns.parse()
                {
                    phases.push_at(name, ns);
                }
            }
            // The workload runs, or (with a start gate) the init waits to start it.
            "R" | "G" => {
                if let Ok(ns) = rest.parse() {
                    phases.push_at("exec", ns);
                }
                return Ok(Started {
                    exec_error: None,
                    reader,
                });
            }
            "E" => return Err(ContainerError::Setup(rest.to_string())),
            "X" => {
                let (code, msg) = rest.split_once(' ').unwrap_or(("127", rest));
                return Ok(Started {
                    exec_error: Some((msg.to_string(), code.parse().unwrap_or(127))),
                    reader,
                });
            }
            _ => {}
        }
    }
    Err(ContainerError::Setup(
        "The container's init died before starting the workload; run with --json for details or check the kernel log".into(),
    ))
}

/// The init's last report, once it has exited: the signal that killed the workload, if one did
/// (`W signal N`; `W exit C` for an exit).
fn last_report(mut reader: BufReader<Reports<'_>>) -> Option<i32> {
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut rest);
    String::from_utf8_lossy(&rest)
        .lines()
        .find_map(|l| l.strip_prefix("W signal ")?.parse().ok())
}

/// The child's own error (`E` report), if it reported one before it died. Call it only once the
/// child is dead or dying, since it reads to end of file.
fn child_failure(rep_r: OwnedFd) -> Option<String> {
    BufReader::new(File::from(rep_r))
        .split(b'\n')
        .map_while(Result::ok)
        .find_map(|line| {
            line.strip_prefix(b"E ")
                .map(|msg| String::from_utf8_lossy(msg).into_owned())
        })
}

/// The report pipe, read while signals are tended to (forwarded, a stopped init continued) and
/// the deadline kept: setup and the exec of the workload must not wait on a stopped init either.
struct Reports<'a> {
    pipe: File,
    child: Pid,
    sfd: &'a SignalFd,
    stops: &'a Cell<u32>,
    deadline: Option<std::time::Instant>,
}

impl std::io::Read for Reports<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use nix::poll::{PollFd, PollFlags, poll};
        loop {
            let mut fds = [
                PollFd::new(self.pipe.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.sfd.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, signals::poll_timeout(self.child, self.deadline)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            if ready(&fds[1]) {
                signals::forward_signals(self.child, self.sfd, self.stops);
            }
            if ready(&fds[0]) {
                return std::io::Read::read(&mut self.pipe, buf);
            }
        }
    }
}

/// Phase timestamps of one run.
#[derive(Debug)]
pub(crate) struct Phases {
    start: u64,
    marks: Vec<(String, u64)>,
}

impl Phases {
    fn new(start: u64) -> Self {
        Phases {
            start,
            marks: Vec::new(),
        }
    }

    fn push(&mut self, name: &str) {
        self.push_at(name, monotonic_ns());
    }

    fn push_at(&mut self, name: &str, ns: u64) {
        self.marks.push((name.to_string(), ns));
    }

    /// Durations of each phase, from the end of the one before.
    fn into_ms(mut self) -> Vec<(String, f64)> {
        // The child's marks arrive after the parent's later ones; order by time.
        self.marks.sort_by_key(|(_, t)| *t);
        let mut prev = self.start;
        let mut out = Vec::with_capacity(self.marks.len());
        for (name, t) in self.marks {
            out.push((name, t.saturating_sub(prev) as f64 / 1e6));
            prev = prev.max(t);
        }
        out
    }
}

/// Everything a run created on the host, released in reverse order whatever happened.
struct Teardown {
    run_dir: Option<RunDir>,
    cgroup: Option<AnyCgroupManager>,
    net: Option<network::Attachment>,
    child: Option<Pid>,
}

impl Teardown {
    fn finish(&mut self) -> Result<(), ContainerError> {
        let mut first_err = None;
        if let Some(child) = self.child.take() {
            // Killing the init of a PID namespace kills everything in it.
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
        }
        if let Some(net) = self.net.take()
            && let Err(e) = net.release()
        {
            first_err.get_or_insert(ContainerError::from(e));
        }
        if let Some(cg) = self.cgroup.take()
            && let Err(e) = cg.remove()
        {
            first_err.get_or_insert(ContainerError::from(e));
        }
        if let Some(dir) = self.run_dir.take()
            && let Err(e) = dir.remove()
        {
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}
