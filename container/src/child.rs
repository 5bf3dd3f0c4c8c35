//! The child side of a run, between clone and exec: hostname, loopback, rootfs; then, once the
//! parent's go says the child is in its cgroup and its network is wired, the cgroup namespace,
//! terminal, working directory, user, privileges, and finally exec of the container's init from
//! the sealed copy of `isol-init` that came with the go (see `security::exe`).
//!
//! The child enters its cgroup first (v1: by itself; v2: it was born there), then does all it
//! can before the go while the parent wires its network and copies the init binary. Nothing of
//! the container runs before the go. In rootless mode the child first waits for the go, which
//! also means its uid/gid maps are written, as everything else needs them.
//!
//! Everything the child needs is computed by the parent before the clone ([`ChildSpec`]), so the
//! child mostly performs system calls.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, umask};

use crate::cgroups::Entry;
use crate::config::{
    ContainerConfig, Mount, NetworkMode, Privileges, Rlimit, Rootfs, SharedNamespace, Volume,
};
use crate::error::{Cause, ContainerError, SetupError};
use crate::hooks::{self, Hooks};
use crate::pty::Pty;
use crate::rootfs::{self, RootfsSpec};
use crate::state::RunDir;
use crate::sys::{self, cstring, cstrings, monotonic_ns};
use crate::{namespaces, network, security, user};

/// argv[0] of the container's init, and the marker that selects init mode in isol's `main`.
pub const INIT_ARGV0: &str = "isol-init";
pub const INIT_MARKER: &str = "--isol-container-init";

/// What the child needs, prepared by the parent.
pub(crate) struct ChildSpec<'a> {
    hostname: CString,
    domainname: CString,
    layers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
    /// `Some(readonly)` when `merged` is the rootfs directory itself ([`Rootfs::Dir`]).
    bind_root: Option<bool>,
    volumes: Vec<Volume>,
    mounts: Vec<Mount>,
    device_nodes: Vec<crate::config::DeviceNode>,
    rootfs_propagation: u64,
    set_joined_hostname: bool,
    join: Vec<(SharedNamespace, PathBuf)>,
    hooks: Hooks,
    host_namespaces: crate::config::HostNamespaces,
    rootless: bool,
    /// A user namespace of the container's own (as root): wait for its maps and the idmapped
    /// layers, then become its root.
    own_user_namespace: bool,
    network: NetworkMode,
    /// The run's /etc/hostname, /etc/hosts and /etc/resolv.conf, written once its network is
    /// wired.
    etc: Option<rootfs::EtcFiles>,
    cgroup: rootfs::CgroupView,
    interactive: bool,
    workdir: PathBuf,
    user: Option<String>,
    groups: Option<Vec<u32>>,
    rlimits: Vec<Rlimit>,
    umask: Option<u32>,
    oom_score_adj: Option<i32>,
    sysctl: Vec<(String, String)>,
    masked_paths: Vec<PathBuf>,
    readonly_paths: Vec<PathBuf>,
    privileges: Privileges,
    /// The start gate (a FIFO on the host) of a container created to be started later
    /// ([`crate::process::create`]): the init waits on it before it starts the workload.
    gate: Option<PathBuf>,
    preserve_fds: u32,
    /// The seccomp filter; none: unconfined.
    filter: Option<&'a security::seccomp::Filter>,
    pty: Option<&'a Pty>,
    /// argv of the init: INIT_ARGV0, INIT_MARKER, report fd, tty flag, gate fd, startContainer
    /// hooks fd, then the workload's argv.
    init_argv_tail: Vec<CString>,
    env: Vec<CString>,
}

impl std::fmt::Debug for ChildSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("hostname", &self.hostname)
            .field("merged", &self.merged)
            .finish_non_exhaustive()
    }
}

impl<'a> ChildSpec<'a> {
    pub(crate) fn new(
        cfg: &ContainerConfig,
        run: Option<&RunDir>,
        gate: Option<&Path>,
        filter: Option<&'a security::seccomp::Filter>,
        pty: Option<&'a Pty>,
        cgroup: rootfs::CgroupView,
    ) -> Result<Self, ContainerError> {
        if cfg.args.is_empty() {
            return Err(ContainerError::Unsupported(
                "No command to run: give one after the image name".into(),
            ));
        }
        let (layers, upper, work, merged, bind_root) = match (&cfg.rootfs, run) {
            (Rootfs::Layers(layers), Some(run)) => (
                layers.clone(),
                run.upper.clone(),
                run.work.clone(),
                run.merged.clone(),
                None,
            ),
            (Rootfs::Dir { path, readonly }, _) => (
                Vec::new(),
                PathBuf::new(),
                PathBuf::new(),
                path.clone(),
                Some(*readonly),
            ),
            (Rootfs::Layers(_), None) => {
                return Err(ContainerError::Setup(
                    "An image's layers need a run directory for their writable layer".into(),
                ));
            }
        };
        Ok(ChildSpec {
            hostname: cstring(cfg.hostname.as_ref(), "hostname")?,
            domainname: cstring(cfg.domainname.as_ref(), "domainname")?,
            layers,
            upper,
            work,
            merged,
            bind_root,
            volumes: cfg.volumes.clone(),
            mounts: cfg.mounts.clone(),
            device_nodes: cfg.device_nodes.clone(),
            rootfs_propagation: cfg.rootfs_propagation,
            set_joined_hostname: cfg.set_joined_hostname,
            join: cfg.join.clone(),
            hooks: cfg.hooks.clone(),
            host_namespaces: cfg.host_namespaces,
            rootless: cfg.rootless,
            own_user_namespace: cfg.user_namespace.is_some(),
            network: cfg.network,
            etc: cfg
                .etc_files
                .then(|| rootfs::EtcFiles::for_run(cfg.network, &cfg.hostname)),
            cgroup,
            interactive: cfg.interactive,
            workdir: cfg.workdir.clone(),
            user: cfg.user.clone(),
            groups: cfg.groups.clone(),
            rlimits: cfg.rlimits.clone(),
            umask: cfg.umask,
            oom_score_adj: cfg.oom_score_adj,
            sysctl: cfg.sysctl.clone(),
            masked_paths: cfg.masked_paths.clone(),
            readonly_paths: cfg.readonly_paths.clone(),
            privileges: cfg.privileges.clone(),
            gate: gate.map(Path::to_path_buf),
            preserve_fds: cfg.preserve_fds,
            filter,
            pty,
            init_argv_tail: cstrings(&cfg.args, "argument")?,
            env: cstrings(&cfg.env, "environment variable")?,
        })
    }
}

/// The child's entry point after clone. Never returns: it execs the init or exits 125 after
/// reporting why it could not.
pub(crate) fn main(
    spec: &ChildSpec<'_>,
    cgroup: Option<&Entry>,
    go: OwnedFd,
    report: OwnedFd,
) -> ! {
    let mut report = File::from(report);
    let mut marks = Marks::default();
    match setup(spec, cgroup, go, &report, &mut marks) {
        Ok(never) => match never {},
        Err(e) => {
            marks.send(&report);
            // One line on the report pipe; the parent makes it a `ContainerError::Setup`.
            let line = e.to_string().replace('\n', " ");
            let _ = writeln!(report, "E {line}");
            // SAFETY: _exit ends this process without running the parent's atexit handlers or
            // destructors, which belong to the parent's copy of the state.
            unsafe { libc::_exit(125) }
        }
    }
}

/// The child's finished phases (`T name ns` reports), kept until its exec (or its error) and
/// sent in one write: the parent, which waits on the report pipe, then wakes once instead of once
/// per phase while the child works. Each carries its own time, so the phases are the same.
#[derive(Default)]
struct Marks(String);

impl Marks {
    fn mark(&mut self, name: &str) {
        use std::fmt::Write as _;
        let _ = writeln!(self.0, "T {name} {}", monotonic_ns());
    }

    fn send(&mut self, report: &File) {
        let _ = (&*report).write_all(self.0.as_bytes());
        self.0.clear();
    }
}

fn setup(
    spec: &ChildSpec<'_>,
    cgroup: Option<&Entry>,
    go: OwnedFd,
    report: &File,
    marks: &mut Marks,
) -> Result<std::convert::Infallible, SetupError> {
    // If isol dies, so does the container (and with it its PID namespace) — until a created
    // container is handed over, below.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and changes only this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // The start gate is opened (as a path only: opening a FIFO to write would wait for its
    // reader) while the host's filesystem is still in view; the init reopens it to wait.
    let gate = match &spec.gate {
        Some(path) => Some(
            nix::fcntl::open(
                path,
                nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| {
                SetupError::process(format!("Cannot open the start gate {}", path.display()), e)
            })?,
        ),
        None => None,
    };
    // First into the container's cgroup (cgroup v1; on v2 clone3 did it), so that whatever the
    // child does from here is accounted and limited there.
    if let Some(entry) = cgroup {
        entry.join_self().map_err(SetupError::Cgroup)?;
    }
    let mut go = Go::Waiting(go);
    if spec.rootless {
        go.wait();
    }
    // A user namespace of the container's own: the parent's first message says its maps are
    // written and brings the idmapped layers; then this process, still the host's root by its
    // ids, becomes the namespace's root (uid 0 inside, the mapped uid outside), so that what
    // it creates belongs to the container's root.
    let joined = |t: SharedNamespace| spec.join.iter().any(|(ns, _)| *ns == t);
    let idmapped = if spec.own_user_namespace {
        let layers = go.receive_mounts();
        become_namespace_root()?;
        layers
    } else {
        // A user namespace joined by path (the parent's helper joined it for the clone): its
        // root, whose ids the namespace's own maps give.
        if joined(SharedNamespace::User) {
            become_namespace_root()?;
        }
        Vec::new()
    };
    // (PID and user namespaces were joined before the clone.)
    for (ns, path) in spec
        .join
        .iter()
        .filter(|(ns, _)| !matches!(ns, SharedNamespace::Pid | SharedNamespace::User))
    {
        namespaces::join(*ns, path)?;
    }
    if !joined(SharedNamespace::Uts) && !spec.host_namespaces.uts {
        namespaces::set_hostname(&spec.hostname)?;
        if !spec.domainname.is_empty() {
            namespaces::set_domainname(&spec.domainname)?;
        }
    } else if joined(SharedNamespace::Uts) && spec.set_joined_hostname {
        // As runc: an OCI config's names are set in the namespace it joins (every process
        // there sees them), only when given.
        if !spec.hostname.is_empty() {
            namespaces::set_hostname(&spec.hostname)?;
        }
        if !spec.domainname.is_empty() {
            namespaces::set_domainname(&spec.domainname)?;
        }
    }
    if spec.network != NetworkMode::Host && !joined(SharedNamespace::Net) {
        network::loopback_up()?;
    }
    // Through the host's /proc, which is still in view: a namespaced sysctl is the writer's
    // namespace's, whichever /proc it is written through.
    for (key, value) in &spec.sysctl {
        write_sysctl(key, value)?;
    }
    if let Some(adj) = spec.oom_score_adj {
        set_oom_score_adj(adj)?;
    }
    marks.mark("child-prepare");

    umask(Mode::empty());
    let console = spec.pty.map(|p| p.slave_path());
    let rootfs_spec = RootfsSpec {
        layers: &spec.layers,
        upper: &spec.upper,
        work: &spec.work,
        merged: &spec.merged,
        bind_root: spec.bind_root,
        volumes: &spec.volumes,
        mounts: &spec.mounts,
        device_nodes: &spec.device_nodes,
        rootfs_propagation: spec.rootfs_propagation,
        rootless: spec.rootless,
        user_namespace: spec.rootless || spec.own_user_namespace || joined(SharedNamespace::User),
        idmapped: &idmapped,
        host_network: spec.network == NetworkMode::Host,
        console: console.as_deref(),
        masked: &spec.masked_paths,
        readonly: &spec.readonly_paths,
        host_mount: spec.host_namespaces.mount,
    };
    rootfs::mount_all(&rootfs_spec)?;
    // The init's pid on the host (the host's /proc is still in view), for the hooks' state.
    let host_pid = if spec.hooks.is_empty() {
        0
    } else {
        host_pid()?
    };
    if spec.hooks.before_pivot() {
        // The parent runs the prestart and createRuntime hooks before its go; then the
        // createContainer ones run here, in the container's namespaces, before pivot_root.
        go.wait();
        umask(Mode::from_bits_truncate(0o022));
        hooks::run_all(
            "createContainer",
            &spec.hooks.create_container,
            &spec.hooks.state_for("creating", host_pid),
        )
        .map_err(SetupError::Hook)?;
        umask(Mode::empty());
    }
    rootfs::enter(&rootfs_spec)?;
    umask(Mode::from_bits_truncate(spec.umask.unwrap_or(0o022)));
    marks.mark("rootfs");

    let init_exe = go.wait();
    if let Some(etc) = &spec.etc {
        etc.write(&spec.volumes, &spec.mounts)?;
    }
    if gate.is_some() {
        // A created container outlives the isol that created it: its client (a shim, a
        // subreaper) waits for it. Before the go, the parent was still there to kill it.
        // SAFETY: as above; 0 clears the parent-death signal.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0) };
    }
    // The cgroup namespace is created after the parent moved us into our cgroup, so that the
    // container sees that cgroup as its root.
    if !spec.host_namespaces.cgroup {
        namespaces::enter_cgroup_namespace()?;
    }
    rootfs::mount_cgroup(&rootfs_spec, &spec.cgroup)?;

    // A new session: signals typed at isol's terminal reach isol, which forwards them, and not
    // the container directly. With -t the pty becomes the controlling terminal.
    nix::unistd::setsid().map_err(|source| SetupError::Namespace {
        what: "setsid failed",
        source,
    })?;
    match spec.pty {
        Some(p) => p.make_controlling_and_stdio()?,
        None if !spec.interactive => redirect_stdin_to_null()?,
        None => {}
    }

    enter_workdir(&spec.workdir)?;
    // No user: root, with the groups the image's /etc/group gives root, as docker does -
    // never the groups isol itself runs with.
    let ids = {
        let mut ids = user::resolve(spec.user.as_deref().unwrap_or("0"))?;
        if let Some(groups) = &spec.groups {
            ids.groups.clone_from(groups);
        }
        Some(ids)
    };
    // Before the capabilities go: raising a hard limit needs CAP_SYS_RESOURCE.
    for r in &spec.rlimits {
        set_rlimit(r)?;
    }
    // Without no_new_privs the kernel takes a filter only from a holder of CAP_SYS_ADMIN: then
    // it goes on first, while the runtime still holds every capability, as runc does (the
    // profile allows the steps that follow).
    let filter_first = !spec.privileges.no_new_privs;
    if filter_first && let Some(filter) = spec.filter {
        security::seccomp::install_with_flags(&filter.program, filter.flags)?;
    }
    match &ids {
        // Changing ids needs CAP_SETUID/CAP_SETGID, which the set may lack.
        Some(ids) => user::switch_with_capabilities(
            spec.privileges.capabilities,
            spec.privileges.ambient,
            ids,
        )?,
        None => security::capabilities::drop_to(spec.privileges.capabilities)?,
    }
    security::capabilities::set_inheritable_ambient(
        spec.privileges.inheritable,
        spec.privileges.ambient,
    )?;
    if spec.privileges.no_new_privs {
        security::set_no_new_privs()?;
    }
    marks.mark("security");

    let mut argv = Vec::with_capacity(spec.init_argv_tail.len() + 5);
    argv.push(CString::new(INIT_ARGV0).expect("no NUL"));
    argv.push(CString::new(INIT_MARKER).expect("no NUL"));
    argv.push(CString::new(report.as_raw_fd().to_string()).expect("no NUL"));
    argv.push(CString::new(if spec.pty.is_some() { "1" } else { "0" }).expect("no NUL"));
    let gate_arg = gate
        .as_ref()
        .map_or("-".into(), |g| g.as_raw_fd().to_string());
    argv.push(CString::new(gate_arg).expect("no NUL"));
    // The startContainer hooks, with their state, for the init to run once started.
    let start_hooks = if spec.hooks.start_container.is_empty() {
        None
    } else {
        Some(
            hooks::write_for_init(&spec.hooks, host_pid)
                .map_err(|e| SetupError::process("Cannot pass the startContainer hooks", e))?,
        )
    };
    let hooks_arg = start_hooks
        .as_ref()
        .map_or("-".into(), |h| h.as_raw_fd().to_string());
    argv.push(CString::new(hooks_arg).expect("no NUL"));
    argv.extend(spec.init_argv_tail.iter().cloned());
    // Nothing of isol's (the host terminal, pipes, the signalfd, a pty master) may reach the
    // container: every descriptor but stdio closes at exec, except the report pipe, which the
    // init closes itself. The sealed memfd is exec'd by descriptor, so it may close too.
    // The descriptors the caller passes on (`preserve_fds` of them from 3, below every one isol
    // opened) stay open too.
    let first_closed = 3 + spec.preserve_fds;
    sys::cloexec_from(first_closed)
        .map_err(|e| SetupError::process("Cannot list open descriptors", e))?;
    let kept = [gate.as_ref(), start_hooks.as_ref()];
    let passed = (3..first_closed as i32).chain(kept.iter().flatten().map(|f| f.as_raw_fd()));
    for fd in std::iter::once(report.as_raw_fd()).chain(passed) {
        sys::clear_cloexec(fd).map_err(|e| SetupError::process("fcntl(F_SETFD) failed", e))?;
    }
    // The filter goes on last: from here on only what the workload may do is allowed.
    if !filter_first && let Some(filter) = spec.filter {
        security::seccomp::install_with_flags(&filter.program, filter.flags)?;
    }
    marks.mark("seccomp");
    marks.send(report);
    Ok(security::exe::exec_self_as_init(
        init_exe, &argv, &spec.env,
    )?)
}

/// This process's pid in the host's PID namespace: /proc before pivot_root is the host's.
fn host_pid() -> Result<i32, SetupError> {
    let link = std::fs::read_link("/proc/self")
        .map_err(|e| SetupError::process("Cannot read /proc/self", e))?;
    link.to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| SetupError::Hook(format!("/proc/self is {}: not a pid", link.display())))
}

/// setresgid, setgroups and setresuid to 0 in the user namespace just mapped.
fn become_namespace_root() -> Result<(), SetupError> {
    let root = user::Ids {
        uid: 0,
        gid: 0,
        groups: Vec::new(),
    };
    root.apply().map_err(|e| {
        SetupError::process(
            "Cannot become root in the container's user namespace (is its root mapped?)",
            std::io::Error::other(e.to_string()),
        )
    })
}

/// The parent's go, which brings the sealed copy of the init binary to exec.
enum Go {
    Waiting(OwnedFd),
    Received(OwnedFd),
}

impl Go {
    /// Before the go, in a user namespace of the container's own: the message that says its
    /// maps are written, with the idmapped layers (none for a rootfs directory). When the
    /// parent died or gave up instead, exits quietly: the parent reports the error.
    fn receive_mounts(&self) -> Vec<OwnedFd> {
        let Go::Waiting(sock) = self else {
            unreachable!("the mounts come before the go")
        };
        match security::exe::receive_fds(sock.as_fd()) {
            Ok(fds) => fds,
            // SAFETY: see `main`.
            Err(_) => unsafe { libc::_exit(125) },
        }
    }

    /// Blocks until the go has come (only the first call waits) and returns the sealed copy.
    /// When the parent died or gave up instead, exits quietly: the parent reports the error.
    fn wait(&mut self) -> BorrowedFd<'_> {
        if let Go::Waiting(sock) = self {
            match security::exe::receive_fd(sock.as_fd()) {
                Ok(fd) => *self = Go::Received(fd),
                // SAFETY: see `main`.
                Err(_) => unsafe { libc::_exit(125) },
            }
        }
        match &*self {
            Go::Received(fd) => fd.as_fd(),
            Go::Waiting(_) => unreachable!("set above"),
        }
    }
}

/// setrlimit(2) for one of the configuration's limits (in the container's process, before its
/// capabilities drop).
pub(crate) fn set_rlimit(r: &Rlimit) -> Result<(), SetupError> {
    let limit = libc::rlimit {
        rlim_cur: r.soft,
        rlim_max: r.hard,
    };
    // SAFETY: setrlimit reads the struct, valid for the call, and changes only this process.
    let ret = unsafe { libc::setrlimit(r.resource as _, &limit) };
    nix::errno::Errno::result(ret).map(drop).map_err(|e| {
        SetupError::process(
            format!(
                "Cannot set resource limit {} to {}:{}",
                r.resource, r.soft, r.hard
            ),
            e,
        )
    })
}

/// Writes the calling process's `oom_score_adj` (-1000 to 1000; lowering it needs
/// `CAP_SYS_RESOURCE`).
pub(crate) fn set_oom_score_adj(adj: i32) -> Result<(), SetupError> {
    std::fs::write("/proc/self/oom_score_adj", adj.to_string()).map_err(|e| {
        SetupError::process(
            format!(
                "Cannot set oom_score_adj to {adj} (lowering it needs CAP_SYS_RESOURCE; give a value no lower than the runtime's own)"
            ),
            e,
        )
    })
}

/// Writes `value` to `/proc/sys/<key with dots as slashes>`; `key` is made of letters, digits,
/// `_`, `-` and dots only.
fn write_sysctl(key: &str, value: &str) -> Result<(), SetupError> {
    let valid = !key.is_empty()
        && key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !valid {
        return Err(SetupError::process(
            format!("Invalid sysctl name {key:?}"),
            nix::errno::Errno::EINVAL,
        ));
    }
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|e| {
        SetupError::process(format!("Cannot set sysctl {key} to {value:?} ({path})"), e)
    })
}

fn redirect_stdin_to_null() -> Result<(), SetupError> {
    let null =
        File::open("/dev/null").map_err(|e| SetupError::terminal("Cannot open /dev/null", e))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| SetupError::terminal("Cannot redirect stdin", e))
}

/// Enters the working directory, creating it as docker does when the image lacks it.
fn enter_workdir(dir: &Path) -> Result<(), SetupError> {
    let cannot = |what: &str, e: Cause| {
        SetupError::process(
            format!("Cannot {what} the working directory {}", dir.display()),
            e,
        )
    };
    if let Err(e) = nix::unistd::chdir(dir) {
        if e != nix::errno::Errno::ENOENT {
            return Err(cannot("enter", e.into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| cannot("create", e.into()))?;
        nix::unistd::chdir(dir).map_err(|e| cannot("enter", e.into()))?;
    }
    Ok(())
}
