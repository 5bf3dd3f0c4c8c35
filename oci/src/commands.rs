//! The runtime's commands. `create` leaves the container's init waiting at its start gate (a
//! FIFO in the container's state directory) and returns; `start` opens the gate; the client,
//! a subreaper (containerd's shim), waits for the init, whose exit status is the workload's;
//! `delete` removes what is left (cgroup, state). Nothing here runs a container by itself:
//! [`isol_container::create`] does, with the same steps as `isol run`.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isol_container::cgroups::{self, CgroupManager};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::{Cli, Command, Kill};
use crate::error::OciError;
use crate::log::Log;
use crate::state::{self, ContainerDir, Saved, StateJson, Status};
use crate::vm::{self, Backend, VmRuntime};
use crate::{spec, state::DEFAULT_ROOT};

/// The backends this runtime offers: its default (by its name) and the kvm backend's
/// implementation, when the binary has one.
pub(crate) struct Runtime<'a> {
    pub default: Backend,
    pub vm: Option<&'a dyn VmRuntime>,
}

impl Runtime<'_> {
    fn vm(&self) -> Result<&dyn VmRuntime, OciError> {
        self.vm.ok_or_else(|| {
            OciError::Usage(
                "this runtime was built without the kvm backend: use isol-runc from the isol package".into(),
            )
        })
    }
}

/// Runs the command; `Ok` holds the exit status.
pub(crate) fn dispatch(cli: &Cli, log: &Log, rt: &Runtime<'_>) -> Result<i32, OciError> {
    if cli.global.systemd_cgroup {
        return Err(OciError::Usage(
            "--systemd-cgroup is not supported: isol manages cgroupfs itself; configure the client without the systemd cgroup driver (containerd: SystemdCgroup = false)".into(),
        ));
    }
    let root = cli
        .global
        .root
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
    log.debug(&format!("{:?}", cli.command));
    let preserve_fds = match &cli.command {
        Command::Create(c) => c.preserve_fds,
        Command::Run(r) => r.preserve_fds,
        Command::Exec(e) => e.preserve_fds,
        _ => 0,
    };
    check_preserved(preserve_fds)?;
    match &cli.command {
        Command::Create(c) => {
            let opts = CreateOpts {
                bundle: &c.bundle,
                pid_file: c.pid_file.as_deref(),
                console_socket: c.console_socket.as_deref(),
                preserve_fds: c.preserve_fds,
            };
            create(&root, &c.container_id, &opts, rt).map(|_| 0)
        }
        Command::Start(s) => start(&root, &s.container_id, log).map(|()| 0),
        Command::State(s) => {
            let json = state_json(&root, &s.container_id)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&json).expect("plain data serializes")
            );
            Ok(0)
        }
        Command::Kill(k) => kill_cmd(&root, k, rt).map(|()| 0),
        Command::Delete(d) => delete(&root, &d.container_id, d.force, log, rt).map(|()| 0),
        Command::Run(r) => {
            let opts = CreateOpts {
                bundle: &r.bundle,
                pid_file: r.pid_file.as_deref(),
                console_socket: r.console_socket.as_deref(),
                preserve_fds: r.preserve_fds,
            };
            run(&root, &r.container_id, &opts, r.detach, r.keep, log, rt)
        }
        Command::List(l) => list(&root, &l.format, l.quiet).map(|()| 0),
        Command::Spec(s) => spec_cmd(s).map(|()| 0),
        Command::Features(_) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&features()).expect("plain data serializes")
            );
            Ok(0)
        }
        Command::Ps(p) => ps(&root, p).map(|()| 0),
        Command::Exec(e) => exec(&root, e, rt),
        Command::Pause(p) => pause(&root, &p.container_id, true, rt).map(|()| 0),
        Command::Resume(r) => pause(&root, &r.container_id, false, rt).map(|()| 0),
        Command::Update(u) => update(&root, u, rt).map(|()| 0),
        Command::Events(e) => {
            crate::events::events(&root, &e.container_id, e.interval, e.stats).map(|()| 0)
        }
    }
}

/// `--preserve-fds N`: the caller's descriptors 3 to 3+N-1 must all be open, before this
/// process opens any of its own (which would otherwise take a missing one's number and reach
/// the container in its place).
fn check_preserved(n: i32) -> Result<(), OciError> {
    if n < 0 {
        return Err(OciError::Usage(format!(
            "invalid --preserve-fds {n}: give a number of descriptors, 0 or more"
        )));
    }
    for fd in 3..3 + n {
        // SAFETY: F_GETFD only reads the descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(OciError::Usage(format!(
                "--preserve-fds {n}: descriptor {fd} is not open; pass descriptors 3 to {} open",
                2 + n
            )));
        }
    }
    Ok(())
}

struct CreateOpts<'a> {
    bundle: &'a Path,
    pid_file: Option<&'a Path>,
    console_socket: Option<&'a Path>,
    preserve_fds: i32,
}

/// The bundle as an absolute path: the state keeps it, and clients give it relative.
fn absolute(path: &Path) -> Result<PathBuf, OciError> {
    std::path::absolute(path).map_err(|e| OciError::Bundle {
        what: format!("bad bundle path {}", path.display()),
        detail: e.to_string(),
    })
}

fn create(
    root: &Path,
    id: &str,
    opts: &CreateOpts<'_>,
    rt: &Runtime<'_>,
) -> Result<Saved, OciError> {
    let dir = ContainerDir::new(root, id)?;

    let bundle = absolute(opts.bundle)?;
    // Everything that can be checked is, before anything is made.
    let spec = spec::load(&bundle)?;
    let backend = Backend::select(&annotations(&spec), rt.default)?;
    let mut cfg = spec::to_config(id, &bundle, &spec)?;
    cfg.preserve_fds = opts.preserve_fds as u32;
    match (cfg.tty, opts.console_socket) {
        (true, None) => {
            return Err(OciError::Usage(
                "process.terminal is set: give --console-socket, where the terminal's master goes"
                    .into(),
            ));
        }
        (false, Some(_)) => {
            return Err(OciError::Usage(
                "--console-socket is given but process.terminal is not set".into(),
            ));
        }
        _ => {}
    }
    if backend == Backend::Kvm {
        vm::check(&spec, &cfg)?;
        let runtime = rt.vm()?;
        dir.create()?;
        let made = create_vm(&dir, &bundle, &spec, &cfg, opts, runtime);
        if made.is_err() {
            let _ = runtime.clean(&dir.dir);
            let _ = dir.remove();
        }
        return made;
    }
    cfg.hooks.state = state::hook_state_template(id, &bundle, &annotations(&spec));
    dir.create()?;
    // Where `delete` finds the cgroup should create be killed before state.json is written.
    let cgroup_path = cfg.cgroup_path.clone().unwrap_or_default();
    let made = state::write_atomic(
        &dir.cgroup_file(),
        cgroup_path.as_os_str().as_encoded_bytes(),
    )
    .and_then(|()| match &cfg.rootfs {
        // Before anything is mounted in the runtime's namespace: what delete unmounts.
        isol_container::Rootfs::Dir { path, .. } if cfg.host_namespaces.mount => {
            crate::hostroot::record(&dir, path)
        }
        _ => Ok(()),
    })
    .and_then(|()| create_in(&dir, &bundle, &spec, &cfg, opts));
    if made.is_err() {
        // The container crate removed what it made (never a cgroup that existed before, which
        // another container may own), but for the mounts a container without a mount
        // namespace made in ours; the state is ours.
        let _ = crate::hostroot::unmount(&dir);
        let _ = dir.remove();
    }
    made
}

fn create_in(
    dir: &ContainerDir,
    bundle: &Path,
    spec: &oci_spec::runtime::Spec,
    cfg: &isol_container::ContainerConfig,
    opts: &CreateOpts<'_>,
) -> Result<Saved, OciError> {
    let fifo = dir.fifo();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| OciError::sys(format!("mkfifo {}", fifo.display()), e))?;
    // The init opens the gate to write as the workload's user, which may not be root (docker's
    // `--user`): writable by all, as runc's exec.fifo (0622), whatever the umask. Only `start`
    // reads it, as root.
    std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622))
        .map_err(|e| OciError::state(format!("chmod {}", fifo.display()), e))?;
    let hooks = spec.hooks().clone().unwrap_or_default();
    let poststart = spec::hook_list("hooks.poststart", hooks.poststart())?;
    let poststop = spec::hook_list("hooks.poststop", hooks.poststop())?;
    let created = isol_container::create(cfg, &fifo)?;
    let saved = Saved {
        id: dir.id.clone(),
        pid: created.pid,
        pid_start: state::start_time(created.pid).unwrap_or_default(),
        bundle: bundle.to_path_buf(),
        cgroup_path: cfg.cgroup_path.clone().unwrap_or_default(),
        rootfs: match &cfg.rootfs {
            isol_container::Rootfs::Dir { path, .. } => path.clone(),
            isol_container::Rootfs::Layers(_) => PathBuf::new(),
        },
        created: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        annotations: annotations(spec),
        shared_pid: cfg
            .join
            .iter()
            .any(|(ns, _)| *ns == isol_container::SharedNamespace::Pid),
        poststart,
        poststop,
        backend: Backend::Container,
        vm_memory: 0,
        vm_vcpus: 0,
    };
    let console = match (&created.console, opts.console_socket) {
        (Some(master), Some(socket)) => send_console(
            master.as_fd(),
            socket,
            spec.process().as_ref().and_then(|p| p.console_size()),
        ),
        _ => Ok(()),
    };
    let written = console
        .and_then(|()| dir.save(&saved))
        .and_then(|()| match opts.pid_file {
            Some(f) => state::write_atomic(f, created.pid.to_string().as_bytes()),
            None => Ok(()),
        });
    if let Err(e) = written {
        // Removing the cgroup kills the container with it.
        let _ = remove_cgroup(&saved.cgroup_path);
        return Err(e);
    }
    Ok(saved)
}

/// `create` on the kvm backend: the gate, then the VM's process, which waits at it.
fn create_vm(
    dir: &ContainerDir,
    bundle: &Path,
    spec: &oci_spec::runtime::Spec,
    cfg: &isol_container::ContainerConfig,
    opts: &CreateOpts<'_>,
    runtime: &dyn VmRuntime,
) -> Result<Saved, OciError> {
    let fifo = dir.fifo();
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| OciError::sys(format!("mkfifo {}", fifo.display()), e))?;
    let hooks = spec.hooks().clone().unwrap_or_default();
    let poststart = spec::hook_list("hooks.poststart", hooks.poststart())?;
    let poststop = spec::hook_list("hooks.poststop", hooks.poststop())?;
    // The jailed VMM's cgroup (`isol_vmm::launch::LaunchJail`): `delete` removes it, `ps`
    // lists it.
    let cgroup_path = PathBuf::from("isol").join(&dir.id);
    state::write_atomic(
        &dir.cgroup_file(),
        cgroup_path.as_os_str().as_encoded_bytes(),
    )?;
    // A terminal: the VM's process gets the slave, the client the master (once the process
    // is ready, as the container's). Close-on-exec: the slave stays only on the VM's stdio.
    let pty = match opts.console_socket {
        Some(_) => Some(open_pty()?),
        None => None,
    };
    let vcpus = vm::guest_vcpus(&cfg.limits, vm::host_online_cpus(), runtime.max_vcpus());
    let pid = runtime.create(&vm::VmCreate {
        id: &dir.id,
        dir: &dir.dir,
        fifo: &fifo,
        config: cfg,
        vcpus,
        terminal: pty.as_ref().map(|p| p.slave.as_fd()),
    })?;
    let saved = Saved {
        id: dir.id.clone(),
        pid,
        pid_start: state::start_time(pid).unwrap_or_default(),
        bundle: bundle.to_path_buf(),
        cgroup_path,
        rootfs: match &cfg.rootfs {
            isol_container::Rootfs::Dir { path, .. } => path.clone(),
            isol_container::Rootfs::Layers(_) => PathBuf::new(),
        },
        created: humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        annotations: annotations(spec),
        // Its processes on the host are the VMM's: the process `create` made and those of
        // the jail's cgroup.
        shared_pid: true,
        poststart,
        poststop,
        backend: Backend::Kvm,
        vm_memory: vm::guest_memory(cfg),
        vm_vcpus: vcpus,
    };
    let console = match (&pty, opts.console_socket) {
        (Some(pty), Some(socket)) => send_console(
            pty.master.as_fd(),
            socket,
            spec.process().as_ref().and_then(|p| p.console_size()),
        ),
        _ => Ok(()),
    };
    drop(pty);
    let written = console
        .and_then(|()| dir.save(&saved))
        .and_then(|()| match opts.pid_file {
            Some(f) => state::write_atomic(f, pid.to_string().as_bytes()),
            None => Ok(()),
        });
    if let Err(e) = written {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
        return Err(e);
    }
    Ok(saved)
}

fn annotations(spec: &oci_spec::runtime::Spec) -> std::collections::BTreeMap<String, String> {
    spec.annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// A pty pair for a process of the kvm backend, both ends close-on-exec: what execs keeps
/// the slave only where it was put on its stdio.
fn open_pty() -> Result<nix::pty::OpenptyResult, OciError> {
    let pty = nix::pty::openpty(None, None).map_err(|e| OciError::sys("openpty", e))?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| OciError::sys("make the terminal close-on-exec", e))?;
    }
    Ok(pty)
}

/// Hands the terminal's master to the client through its console socket (`SCM_RIGHTS`, as
/// runc), sized as `process.consoleSize` says.
fn send_console(
    master: std::os::fd::BorrowedFd<'_>,
    socket: &Path,
    size: Option<oci_spec::runtime::Box>,
) -> Result<(), OciError> {
    use std::os::fd::AsRawFd;
    if let Some(size) = size {
        let ws = libc::winsize {
            ws_row: size.height() as u16,
            ws_col: size.width() as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize, valid for the call, on a pty master we hold.
        let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        nix::errno::Errno::result(r).map_err(|e| OciError::sys("set the terminal's size", e))?;
    }
    let sock = std::os::unix::net::UnixStream::connect(socket).map_err(|e| {
        OciError::state(
            format!("connect to the console socket {}", socket.display()),
            e,
        )
    })?;
    isol_container::security::exe::send_fd(sock.as_fd(), master)
        .map_err(|e| OciError::sys("send the terminal to the console socket", e))
}

fn start(root: &Path, id: &str, log: &Log) -> Result<(), OciError> {
    let dir = ContainerDir::new(root, id)?;
    let saved = dir.load()?;
    match dir.status(&saved) {
        Status::Created => {}
        s => {
            return Err(OciError::Status {
                id: id.into(),
                status: s.as_str().into(),
                what: "only a created container can be started".into(),
            });
        }
    }
    open_gate(&dir.fifo(), &saved)?;
    let _ = std::fs::remove_file(dir.fifo());
    // As the runtime-spec says: a failing poststart hook is logged, the remaining ones run, and
    // the container runs on.
    let state = saved.hook_state(Status::Running);
    for e in isol_container::hooks::run_each("poststart", &saved.poststart, &state) {
        log.line("warning", &e);
    }
    Ok(())
}

/// Opens the start gate, reads the byte the init writes once it passed it, then waits for the
/// gate's end: the init holds it open (close-on-exec) until the workload has been exec'd, so
/// that, as with runc, the workload runs when `start` returns and its poststart hooks run.
/// On kvm the VMM holds it until the guest init says the workload's exec succeeded, and says
/// so on it before its end: `S`, else `E<status> <why>` (`isol_vmm::launch::StartGate`); a
/// workload that could not be exec'd fails `start`, as it fails `create` on a container.
fn open_gate(fifo: &Path, saved: &Saved) -> Result<(), OciError> {
    let said = read_gate(fifo, saved)?;
    if saved.backend != Backend::Kvm {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&said);
    if said.starts_with('S') {
        return Ok(());
    }
    let why = match said.strip_prefix('E') {
        Some(e) => e
            .split_once(' ')
            .map_or(e, |(_, why)| why)
            .trim()
            .to_string(),
        None => {
            "the VM's process ended before its workload started; the container's stderr says why"
                .into()
        }
    };
    Err(OciError::NotStarted {
        id: saved.id.clone(),
        why,
    })
}

/// [`open_gate`]'s wait: what the gate carried after the init's byte, to its end.
fn read_gate(fifo: &Path, saved: &Saved) -> Result<Vec<u8>, OciError> {
    use nix::fcntl::OFlag;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let fd = nix::fcntl::open(
        fifo,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| OciError::sys(format!("cannot open the start gate {}", fifo.display()), e))?;
    let mut file = std::fs::File::from(fd);
    let mut passed = false;
    let mut said = Vec::new();
    loop {
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(OciError::sys("poll on the start gate", e)),
        }
        let mut byte = [0u8; 1];
        match file.read(&mut byte) {
            Ok(1) if passed => said.push(byte[0]),
            Ok(1) => passed = true,
            // Without a writer: none yet before the byte, the end of the gate after it.
            Ok(_) if passed => return Ok(said),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(OciError::state("read the start gate", e)),
        }
        if passed {
            // The init has started; it exits (closing the gate) if the workload cannot run.
            continue;
        }
        if !state::init_alive(saved.pid, saved.pid_start) {
            return Err(OciError::Status {
                id: saved.id.clone(),
                status: Status::Stopped.as_str().into(),
                what: "its init exited before it was started".into(),
            });
        }
    }
}

fn state_json(root: &Path, id: &str) -> Result<StateJson, OciError> {
    let dir = ContainerDir::new(root, id)?;
    let saved = dir.load()?;
    let status = dir.status(&saved);
    Ok(StateJson {
        oci_version: state::OCI_VERSION,
        id: saved.id,
        status: status.as_str(),
        pid: if status == Status::Stopped {
            0
        } else {
            saved.pid
        },
        bundle: saved.bundle,
        rootfs: saved.rootfs,
        created: saved.created,
        annotations: saved.annotations,
    })
}

/// A signal by name (`KILL`, `SIGKILL`, any case) or number.
fn parse_signal(s: &str) -> Result<Signal, OciError> {
    let bad = || {
        OciError::Usage(format!(
            "invalid signal {s:?}: use a name (TERM) or a number"
        ))
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse().map_err(|_| bad())
}

fn kill_cmd(root: &Path, k: &Kill, rt: &Runtime<'_>) -> Result<(), OciError> {
    let signal = parse_signal(&k.signal)?;
    let dir = ContainerDir::new(root, &k.container_id)?;
    let saved = dir.load()?;
    let status = dir.status(&saved);
    // In a running VM a signal goes to the workload, through the exec channel to the guest
    // init; SIGKILL ends the VMM (and the VM) at once, as a created one's waiting process.
    if saved.backend == Backend::Kvm && status == Status::Paused && signal != Signal::SIGKILL {
        // The guest init sends it, and a paused VM runs nothing.
        return Err(OciError::Status {
            id: saved.id,
            status: status.as_str().into(),
            what: format!(
                "{signal} reaches the workload in the VM only while it runs: resume it first, or send KILL"
            ),
        });
    }
    if saved.backend == Backend::Kvm && status == Status::Running && signal != Signal::SIGKILL {
        return rt.vm()?.signal(&dir.dir, signal as i32);
    }
    if status == Status::Stopped {
        return Err(OciError::Status {
            id: saved.id,
            status: Status::Stopped.as_str().into(),
            // runc's words: containerd's shim takes "container not running" for a process
            // already gone (it kills before each delete), anything else for a failure.
            what: "container not running, there is no process to signal".into(),
        });
    }
    let init = Pid::from_raw(saved.pid);
    let targets = if k.all && saved.backend == Backend::Container {
        members(&saved)
    } else {
        vec![init]
    };
    for pid in targets {
        match kill(pid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(OciError::sys(format!("kill {pid} with {signal}"), e)),
        }
    }
    if saved.backend == Backend::Kvm && status == Status::Paused {
        // The jailed VMM dies with its relay (its parent-death signal); frozen, on cgroup v1
        // only once thawed.
        thaw(&saved);
    }
    Ok(())
}

/// Thaws the cgroup of `saved`, if it has one (a task killed while frozen dies then).
fn thaw(saved: &Saved) {
    let _ = cgroups::open_at(
        Path::new(isol_container::process::CGROUP_ROOT),
        &saved.cgroup_path,
    )
    .and_then(|cg| cg.set_frozen(false));
}

/// `exec`: a further process in a running container, from `--process F` (a runtime-spec
/// process, what containerd sends) or from the command line over the container's own process.
fn exec(root: &Path, e: &liboci_cli::Exec, rt: &Runtime<'_>) -> Result<i32, OciError> {
    let refuse = |what: &str| {
        Err(OciError::Usage(format!(
            "exec {what} is not supported by isol-runc yet"
        )))
    };

    if e.process_label.is_some() || e.apparmor.is_some() || e.cgroup.is_some() {
        return refuse("--process-label, --apparmor or --cgroup");
    }
    let dir = ContainerDir::new(root, &e.container_id)?;
    let saved = dir.load()?;
    let status = dir.status(&saved);
    if status == Status::Paused && saved.backend == Backend::Kvm {
        // runc's refusal, without its way around: a paused VM runs nothing, the guest init
        // that would start the process included.
        return Err(OciError::Status {
            id: saved.id,
            status: status.as_str().into(),
            what: "cannot exec in a paused container: its VM's vCPUs are parked (resume it first; --ignore-paused cannot help a VM)".into(),
        });
    }
    if status != Status::Running {
        return Err(OciError::Status {
            id: saved.id,
            status: status.as_str().into(),
            what: "only a running container can execute a process".into(),
        });
    }
    // The container's config: its process for the command-line form, its seccomp profile.
    let container = spec::load(&saved.bundle)?;
    let process = match &e.process {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|err| OciError::state(format!("read {}", path.display()), err))?;
            serde_json::from_str(&text).map_err(|err| OciError::Bundle {
                what: format!("{} is not a valid OCI process", path.display()),
                detail: err.to_string(),
            })?
        }
        None => {
            if e.command.is_empty() {
                return Err(OciError::Usage(
                    "exec needs a command, or --process FILE".into(),
                ));
            }
            let mut p = container.process().clone().unwrap_or_default();
            p.set_args(Some(e.command.clone()));
            let mut env = p.env().clone().unwrap_or_default();
            env.extend(e.env.iter().map(|(k, v)| format!("{k}={v}")));
            p.set_env(Some(env));
            if let Some(cwd) = &e.cwd {
                p.set_cwd(cwd.clone());
            }
            if let Some((uid, gid)) = e.user {
                let mut user = p.user().clone();
                user.set_uid(uid);
                user.set_gid(gid.unwrap_or(0));
                user.set_additional_gids(Some(e.additional_gids.clone()));
                p.set_user(user);
            }
            p.set_terminal(Some(e.tty));
            p
        }
    };
    if saved.backend == Backend::Kvm {
        return exec_vm(&dir, e, &process, rt.vm()?);
    }
    let mut spec = spec::to_exec(&process, saved.pid, &container)?;
    spec.preserve_fds = e.preserve_fds as u32;
    // As runc: a terminal's master goes to the console socket, which a terminal needs.
    match (spec.terminal.is_some(), &e.console_socket) {
        (true, None) => {
            return Err(OciError::Usage(
                "exec with a terminal (--tty, or process.terminal) needs --console-socket, where the terminal's master goes".into(),
            ));
        }
        (false, Some(_)) => {
            return Err(OciError::Usage(
                "--console-socket is given but the process has no terminal (give --tty)".into(),
            ));
        }
        _ => {}
    }
    let cgroup = cgroups::open_at(
        Path::new(isol_container::process::CGROUP_ROOT),
        &saved.cgroup_path,
    )
    .ok();
    if !e.detach {
        // The process is the grandchild of this one: it is re-parented here to be waited for.
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer and changes only this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    }
    let executed = isol_container::exec::exec(&spec, cgroup.as_ref())?;
    let pid = executed.pid;
    if let (Some(master), Some(socket)) = (&executed.console, &e.console_socket) {
        // The size was set with the pty.
        if let Err(err) = send_console(master.as_fd(), socket, None) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            if !e.detach {
                let _ = nix::sys::wait::waitpid(Pid::from_raw(pid), None);
            }
            return Err(err);
        }
    }
    drop(executed);
    if let Some(f) = &e.pid_file {
        state::write_atomic(f, pid.to_string().as_bytes())?;
    }
    if e.detach {
        return Ok(0);
    }
    match nix::sys::wait::waitpid(Pid::from_raw(pid), None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => Ok(c),
        Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => Ok(128 + s as i32),
        Ok(_) => Ok(1),
        Err(err) => Err(OciError::sys("wait for the executed process", err)),
    }
}

/// `exec` on the kvm backend: the process goes to the guest init over the VM's exec channel,
/// through a relay on the host (`VmRuntime::exec`). The guest gives it the workload's
/// capabilities, seccomp filter and no_new_privs; the process's own are not used.
fn exec_vm(
    dir: &ContainerDir,
    e: &liboci_cli::Exec,
    process: &oci_spec::runtime::Process,
    runtime: &dyn VmRuntime,
) -> Result<i32, OciError> {
    if e.preserve_fds > 0 {
        return Err(vm::refuse("exec --preserve-fds"));
    }
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(OciError::Usage(
            "exec needs a command: process.args is empty".into(),
        ));
    }
    let terminal = process.terminal().unwrap_or(false);
    let terminal = match (terminal, &e.console_socket) {
        (true, None) => {
            return Err(OciError::Usage(
                "exec with a terminal (--tty, or process.terminal) needs --console-socket, where the terminal's master goes".into(),
            ));
        }
        (false, Some(_)) => {
            return Err(OciError::Usage(
                "--console-socket is given but the process has no terminal (give --tty)".into(),
            ));
        }
        (true, Some(socket)) => {
            let pty = open_pty()?;
            send_console(pty.master.as_fd(), socket, process.console_size())?;
            Some(pty.slave)
        }
        (false, None) => None,
    };
    let user = process.user();
    runtime.exec(
        &dir.dir,
        vm::VmExec {
            args,
            env: process.env().clone().unwrap_or_default(),
            cwd: process.cwd().clone(),
            user: format!("{}:{}", user.uid(), user.gid()),
            groups: user.additional_gids().clone().unwrap_or_default(),
            terminal,
            detach: e.detach,
            pid_file: e.pid_file.as_deref(),
        },
    )
}

/// `ps`: the container's processes, as host pids (`--format json`, what containerd reads), or
/// the lines of the host's `ps -ef` (or `ps OPTIONS`) for them.
fn ps(root: &Path, p: &liboci_cli::Ps) -> Result<(), OciError> {
    let dir = ContainerDir::new(root, &p.container_id)?;
    let saved = dir.load()?;
    let pids: Vec<i32> = if dir.status(&saved) == Status::Stopped {
        Vec::new()
    } else {
        members(&saved).into_iter().map(Pid::as_raw).collect()
    };
    match p.format.as_str() {
        "json" => {
            println!(
                "{}",
                serde_json::to_string(&pids).expect("plain data serializes")
            );
            Ok(())
        }
        "table" => {
            let options = if p.ps_options.is_empty() {
                vec!["-ef".to_string()]
            } else {
                p.ps_options.clone()
            };
            let out = std::process::Command::new("ps")
                .args(&options)
                .output()
                .map_err(|e| OciError::state("run ps", e))?;
            if !out.status.success() {
                return Err(OciError::Usage(format!(
                    "ps {}: {}",
                    options.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let mut lines = text.lines();
            let header = lines.next().unwrap_or_default();
            let pid_col = header
                .split_whitespace()
                .position(|h| h == "PID")
                .ok_or_else(|| OciError::Usage("ps printed no PID column".into()))?;
            println!("{header}");
            for line in lines {
                let pid = line
                    .split_whitespace()
                    .nth(pid_col)
                    .and_then(|f| f.parse::<i32>().ok());
                if pid.is_some_and(|pid| pids.contains(&pid)) {
                    println!("{line}");
                }
            }
            Ok(())
        }
        other => Err(OciError::Usage(format!(
            "invalid --format {other:?}: use table or json"
        ))),
    }
}

/// The container's processes, init first: those of its PID namespace, or of its cgroup where
/// the PID namespace is shared (a pod's, or the host's).
fn members(saved: &Saved) -> Vec<Pid> {
    if !saved.shared_pid {
        return pid_namespace_members(saved.pid);
    }
    let mut pids = vec![Pid::from_raw(saved.pid)];
    if let Ok(cg) = cgroups::open_at(
        Path::new(isol_container::process::CGROUP_ROOT),
        &saved.cgroup_path,
    ) {
        let procs = std::fs::read_to_string(cg.path().join("cgroup.procs")).unwrap_or_default();
        pids.extend(
            procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .filter(|&p| p != saved.pid)
                .map(Pid::from_raw),
        );
    }
    pids
}

/// The processes in the PID namespace `init` is PID 1 of, init first.
fn pid_namespace_members(init: i32) -> Vec<Pid> {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(target) = ns(&init.to_string()) else {
        return vec![Pid::from_raw(init)];
    };
    let mut pids = vec![Pid::from_raw(init)];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        if pid != init && ns(name).as_ref() == Some(&target) {
            pids.push(Pid::from_raw(pid));
        }
    }
    pids
}

/// `pause` (`freeze`) or `resume`: the freezer of the container's cgroup. As runc, only a
/// running container can be paused and only a paused one resumed. A VM's vCPUs are parked
/// by its VMM first, then its cgroup frozen (`pause_vm`).
fn pause(root: &Path, id: &str, freeze: bool, rt: &Runtime<'_>) -> Result<(), OciError> {
    let dir = ContainerDir::new(root, id)?;
    let saved = dir.load()?;
    let status = dir.status(&saved);
    let (wanted, what) = if freeze {
        (Status::Running, "only a running container can be paused")
    } else {
        (Status::Paused, "only a paused container can be resumed")
    };
    if status != wanted {
        return Err(OciError::Status {
            id: id.into(),
            status: status.as_str().into(),
            what: what.into(),
        });
    }
    if saved.backend == Backend::Kvm {
        return pause_vm(&dir, &saved, freeze, rt.vm()?);
    }
    let cgroup = cgroups::open_at(
        Path::new(isol_container::process::CGROUP_ROOT),
        &saved.cgroup_path,
    )
    .map_err(isol_container::ContainerError::Cgroup)?;
    cgroup
        .set_frozen(freeze)
        .map_err(|e| OciError::Container(isol_container::ContainerError::Cgroup(e)))
}

/// `pause` and `resume` of a VM. Pause: the VMM parks every vCPU (out of `KVM_RUN`, so that
/// the freezer can stop the threads: one in `KVM_RUN` on nested KVM did not freeze), then the
/// VMM's cgroup is frozen, if it has one, and the VM is marked paused. Resume: the cgroup
/// thawed, then the vCPUs run again, the mark removed.
fn pause_vm(
    dir: &ContainerDir,
    saved: &Saved,
    freeze: bool,
    runtime: &dyn VmRuntime,
) -> Result<(), OciError> {
    // A VMM without its jail (ISOL_VMM_JAIL=off) has no cgroup: its vCPUs are parked only.
    let root = Path::new(isol_container::process::CGROUP_ROOT);
    let exists = !saved.cgroup_path.as_os_str().is_empty()
        && (root.join(&saved.cgroup_path).is_dir()
            || root.join("freezer").join(&saved.cgroup_path).is_dir());
    let cgroup = cgroups::open_at(root, &saved.cgroup_path)
        .ok()
        .filter(|_| exists);
    let cgroup_err = |e| OciError::Container(isol_container::ContainerError::Cgroup(e));
    // KVM's kernel threads, out of the cgroup while it is frozen (`vm::park_kthreads`).
    let v2_dir = root.join(&saved.cgroup_path);
    let kthreads = dir.dir.join("vm-kthreads");
    if freeze {
        runtime.pause(&dir.dir, true)?;
        let frozen = cgroup.as_ref().map_or(Ok(()), |cg| {
            let moved = vm::park_kthreads(root, &v2_dir)?;
            let list: Vec<String> = moved.iter().map(i32::to_string).collect();
            let frozen = state::write_atomic(&kthreads, list.join("\n").as_bytes())
                .and_then(|()| cg.set_frozen(true).map_err(cgroup_err));
            if frozen.is_err() {
                vm::return_kthreads(&v2_dir, &moved);
                let _ = std::fs::remove_file(&kthreads);
            }
            frozen
        });
        if let Err(e) = frozen {
            let _ = runtime.pause(&dir.dir, false);
            return Err(e);
        }
        return state::write_atomic(&dir.vm_paused(), b"");
    }
    if let Some(cg) = &cgroup {
        cg.set_frozen(false).map_err(cgroup_err)?;
        let moved: Vec<i32> = std::fs::read_to_string(&kthreads)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect();
        vm::return_kthreads(&v2_dir, &moved);
        let _ = std::fs::remove_file(&kthreads);
    }
    runtime.pause(&dir.dir, false)?;
    match std::fs::remove_file(dir.vm_paused()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(OciError::state(
            format!("remove {}", dir.vm_paused().display()),
            e,
        )),
        _ => Ok(()),
    }
}

/// `update`: new memory, CPU and pids limits for a container's cgroup, from `--resources FILE`
/// (`-`: stdin; a runtime-spec `linux.resources` object, what containerd sends) or from runc's
/// flags.
fn update(root: &Path, u: &liboci_cli::Update, rt: &Runtime<'_>) -> Result<(), OciError> {
    let resources: oci_spec::runtime::LinuxResources = match &u.resources {
        Some(path) => {
            let text = if path == Path::new("-") {
                let mut t = String::new();
                std::io::stdin()
                    .read_to_string(&mut t)
                    .map_err(|e| OciError::state("read the resources from stdin", e))?;
                t
            } else {
                std::fs::read_to_string(path)
                    .map_err(|e| OciError::state(format!("read {}", path.display()), e))?
            };
            serde_json::from_str(&text).map_err(|e| OciError::Bundle {
                what: format!(
                    "{} is not a valid OCI linux.resources object",
                    path.display()
                ),
                detail: e.to_string(),
            })?
        }
        None => {
            if u.l3_cache_schema.is_some() || u.mem_bw_schema.is_some() {
                return Err(OciError::Usage(
                    "update --l3-cache-schema and --mem-bw-schema (Intel RDT) are not supported by isol-runc".into(),
                ));
            }
            // runc's flags, as the resources object they stand for: what isol cannot set is
            // refused by the same checks as a config's.
            let json = serde_json::json!({
                "memory": {"limit": u.memory, "reservation": u.memory_reservation,
                           "swap": u.memory_swap},
                "cpu": {"quota": u.cpu_quota, "period": u.cpu_period, "shares": u.cpu_share,
                        "cpus": u.cpuset_cpus, "mems": u.cpuset_mems,
                        "realtimeRuntime": u.cpu_rt_runtime, "realtimePeriod": u.cpu_rt_period},
                "pids": u.pids_limit.map(|l| serde_json::json!({"limit": l})),
                "blockIO": u.blkio_weight.map(|w| serde_json::json!({"weight": w})),
            });
            serde_json::from_value(strip_nulls(json)).map_err(|e| {
                OciError::Usage(format!("update: a flag's value is out of range: {e}"))
            })?
        }
    };
    let mut resources = resources;
    let dir = ContainerDir::new(root, &u.container_id)?;
    let saved = dir.load()?;
    // containerd's CRI sends the container's whole resources, its device rules included:
    // those the container was created with change nothing.
    if resources.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        let created = spec::load(&saved.bundle).ok().and_then(|s| {
            s.linux()
                .as_ref()
                .and_then(|l| l.resources().as_ref())
                .and_then(|r| r.devices().clone())
        });
        if created.as_ref() == resources.devices().as_ref() {
            resources.set_devices(None);
        }
    }
    let mut limits = spec::update_limits(&resources)?;
    if saved.backend == Backend::Kvm {
        // The VMM's cgroup, whose threads are the guest's vCPUs.
        limits = vm::update_limits(&limits, saved.vm_memory, rt.vm()?.vmm_memory_margin())?;
    }
    let status = dir.status(&saved);
    if status == Status::Stopped {
        return Err(OciError::Status {
            id: saved.id,
            status: status.as_str().into(),
            what: "there is no cgroup to update".into(),
        });
    }
    let cgroup = cgroups::open_at(
        Path::new(isol_container::process::CGROUP_ROOT),
        &saved.cgroup_path,
    )
    .map_err(isol_container::ContainerError::Cgroup)?;
    cgroup
        .apply(&limits)
        .map_err(|e| OciError::Container(isol_container::ContainerError::Cgroup(e)))
}

/// `value` without its null members, at any depth (an unset flag), nor the objects they empty.
fn strip_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => serde_json::Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, strip_nulls(v)))
                .filter(|(_, v)| !v.is_null() && v.as_object().is_none_or(|o| !o.is_empty()))
                .collect(),
        ),
        v => v,
    }
}

fn delete(root: &Path, id: &str, force: bool, log: &Log, rt: &Runtime<'_>) -> Result<(), OciError> {
    let dir = ContainerDir::new(root, id)?;
    let mut poststop = None;
    let cgroup_path = match dir.load() {
        Ok(saved) => {
            let status = dir.status(&saved);
            if matches!(status, Status::Running | Status::Paused) && !force {
                return Err(OciError::Status {
                    id: id.into(),
                    status: status.as_str().into(),
                    what: "stop it first, or delete it with --force".into(),
                });
            }
            if status != Status::Stopped {
                // Killing the init of a PID namespace kills everything in it.
                let _ = kill(Pid::from_raw(saved.pid), Signal::SIGKILL);
                if status == Status::Paused {
                    // A frozen task dies of its SIGKILL once thawed (cgroup v1).
                    let _ = cgroups::open_at(
                        Path::new(isol_container::process::CGROUP_ROOT),
                        &saved.cgroup_path,
                    )
                    .and_then(|cg| cg.set_frozen(false));
                }
                wait_gone(&saved);
            }
            let cgroup_path = saved.cgroup_path.clone();
            poststop = Some(saved);
            cgroup_path
        }
        // A create that was killed half-way leaves a directory without state: its cgroup,
        // if any, holds whatever it started.
        Err(OciError::NotFound(_)) if dir.dir.is_dir() => {
            let recorded = std::fs::read(dir.cgroup_file()).unwrap_or_default();
            PathBuf::from(String::from_utf8_lossy(&recorded).into_owned())
        }
        // Nothing to delete: with --force that is success, as runc says (containerd's shim
        // deletes each container a second time, forced, when it cleans up).
        Err(OciError::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    if !cgroup_path.as_os_str().is_empty() {
        remove_cgroup(&cgroup_path)?;
    }
    // What a container without a mount namespace left in ours, its processes gone.
    crate::hostroot::unmount(&dir)?;
    // A VM's staged root, unmounted with its process, never removed through a mount.
    if let Some(vm) = rt.vm {
        vm.clean(&dir.dir)?;
    }
    // After the container is gone; a failing poststop hook is logged, the remaining ones run,
    // and the delete goes on.
    if let Some(saved) = poststop {
        let state = saved.hook_state(Status::Stopped);
        for e in isol_container::hooks::run_each("poststop", &saved.poststop, &state) {
            log.line("warning", &e);
        }
    }
    dir.remove()
}

/// Waits (a few seconds at most) until the init is gone or a zombie its parent must reap.
fn wait_gone(saved: &Saved) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while state::init_alive(saved.pid, saved.pid_start) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn remove_cgroup(path: &Path) -> Result<(), OciError> {
    let root = Path::new(isol_container::process::CGROUP_ROOT);
    match cgroups::open_for_removal(root, path) {
        Ok(cg) => cg
            .remove()
            .map_err(|e| OciError::Container(isol_container::ContainerError::Cgroup(e))),
        // No cgroup hierarchy at all: none was made.
        Err(_) => Ok(()),
    }
}

fn run(
    root: &Path,
    id: &str,
    opts: &CreateOpts<'_>,
    detach: bool,
    keep: bool,
    log: &Log,
    rt: &Runtime<'_>,
) -> Result<i32, OciError> {
    let saved = create(root, id, opts, rt)?;
    if let Err(e) = start(root, id, log) {
        // On kvm the workload's setup and exec fail after `create`, in the guest, whose init
        // said why in one line on the workload's stderr (this process's): the VM's status
        // (127 not found, 126, 125 setup), as `run` gave before `start` waited for the exec.
        let code = match &e {
            OciError::NotStarted { .. } => {
                match nix::sys::wait::waitpid(Pid::from_raw(saved.pid), None) {
                    Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => Some(c),
                    _ => None,
                }
            }
            _ => None,
        };
        let _ = delete(root, id, true, log, rt);
        return code.ok_or(e);
    }
    if detach {
        return Ok(0);
    }
    // The init is this process's child: it was cloned from here.
    let status = nix::sys::wait::waitpid(Pid::from_raw(saved.pid), None);
    let code = match status {
        Ok(nix::sys::wait::WaitStatus::Exited(_, c)) => c,
        Ok(nix::sys::wait::WaitStatus::Signaled(_, s, _)) => 128 + s as i32,
        Ok(_) => 1,
        Err(e) => {
            let _ = delete(root, id, true, log, rt);
            return Err(OciError::sys("wait for the container's init", e));
        }
    };
    if !keep {
        delete(root, id, true, log, rt)?;
    }
    Ok(code)
}

fn list(root: &Path, format: &str, quiet: bool) -> Result<(), OciError> {
    let states: Vec<StateJson> = state::list(root)
        .iter()
        .filter_map(|id| state_json(root, id).ok())
        .collect();
    match format {
        _ if quiet => {
            for s in &states {
                println!("{}", s.id);
            }
        }
        "json" => println!(
            "{}",
            serde_json::to_string(&states).expect("plain data serializes")
        ),
        "table" => {
            println!(
                "{:<20} {:<8} {:<10} {:<40} CREATED",
                "ID", "PID", "STATUS", "BUNDLE"
            );
            for s in &states {
                println!(
                    "{:<20} {:<8} {:<10} {:<40} {}",
                    s.id,
                    s.pid,
                    s.status,
                    s.bundle.display(),
                    s.created
                );
            }
        }
        other => {
            return Err(OciError::Usage(format!(
                "invalid --format {other:?}: use table or json"
            )));
        }
    }
    Ok(())
}

/// `spec`: the runtime spec's default config (runc's), without a terminal, which isol-runc
/// does not support yet, and without inheritable and ambient capabilities (as runc ≥ 1.1.1
/// writes it, after CVE-2022-24769).
fn spec_cmd(s: &liboci_cli::Spec) -> Result<(), OciError> {
    if s.rootless {
        return Err(OciError::Usage(
            "spec --rootless is not supported by isol-runc yet".into(),
        ));
    }
    let bundle = s.bundle.clone().unwrap_or_else(|| PathBuf::from("."));
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(OciError::Usage(format!(
            "{} exists: remove it first, or give another --bundle",
            path.display()
        )));
    }
    let spec = default_spec();
    let json = serde_json::to_vec_pretty(&spec).expect("plain data serializes");
    std::fs::write(&path, json).map_err(|e| OciError::state(format!("write {}", path.display()), e))
}

/// The config `spec` writes.
pub(crate) fn default_spec() -> oci_spec::runtime::Spec {
    let mut spec = oci_spec::runtime::Spec::default();
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(false));
        if let Some(mut caps) = p.capabilities().clone() {
            caps.set_inheritable(None);
            caps.set_ambient(None);
            p.set_capabilities(Some(caps));
        }
    }
    spec
}

/// `features`: the runtime-spec's features document, for what isol-runc supports today.
fn features() -> serde_json::Value {
    use isol_container::security::seccomp::profile as seccomp;
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": state::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": ["bind", "rbind", "ro", "rw", "private", "rprivate", "shared", "rshared",
                         "slave", "rslave", "unbindable", "runbindable"],
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"],
            "capabilities": caps::all().iter().map(|c| c.to_string()).collect::<Vec<_>>(),
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            "seccomp": {
                "enabled": true,
                "actions": seccomp::ACTIONS,
                "operators": seccomp::OPERATORS,
                "archs": ["SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
                "knownFlags": seccomp::FLAGS,
                "supportedFlags": seccomp::FLAGS
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {"io.github.isol.runtime": "isol-runc"}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), Signal::SIGUSR1);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("999").is_err());
    }
}
