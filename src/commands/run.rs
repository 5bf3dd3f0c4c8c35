//! `isol run`: flags → a validated, backend-neutral run description → the chosen backend.
//!
//! Every flag means the same on both backends, or is rejected with a clear error where a backend
//! cannot honour it; the image's defaults (command, env, workdir, user) are merged here once, so
//! both backends receive the same argv and environment.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde_json::json;

use crate::cli::{Backend, Network, RunArgs};
use crate::size::parse_size;
use isol_container::security::exe::InitCopy;
use isol_container::security::seccomp::Seccomp;

/// Default PATH when the image sets none (docker's).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A run, backend-neutral, validated.
#[derive(Debug)]
pub struct RunSpec {
    pub image: isol_image::Image,
    pub args: Vec<OsString>,
    pub env: Vec<OsString>,
    pub workdir: PathBuf,
    pub hostname: String,
    pub user: Option<String>,
    /// Capabilities, no_new_privs, seccomp: the same on both backends.
    pub privileges: isol_container::Privileges,
    pub memory: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
    /// `--cpuset-cpus`: the CPUs the container may run on.
    pub cpuset_cpus: Option<isol_container::cgroups::cpuset::CpuList>,
    pub volumes: Vec<isol_container::Volume>,
}

/// `isol run`; `log_filter` is the log filter in force, handed on to isol-vmm.
pub fn run(args: RunArgs, log_filter: &str) -> anyhow::Result<i32> {
    if let Some(initrd) = &args.initrd {
        return super::run_initrd::run(&args, initrd, log_filter);
    }
    let rootless = !nix::unistd::geteuid().is_root();
    // The sealed copy of the container's init is made while the rest of the run is prepared
    // (docs/design.md, "The container backend"). A detached run's supervisor, forked below,
    // starts its own.
    let container = args.backend == Backend::Container;
    let init = (container && !args.detach).then(InitCopy::start);
    if rootless {
        check_user_namespaces()?;
    }
    let id = isol_container::state::new_run_id();
    let store = super::open_store()?;
    let spec = build_spec(&args, &store, &id)?;
    publish_ports(&args)?;
    let ns = namespace_options(&args, &store, rootless)?;
    if args.detach {
        check_detach_flags(&args)?;
        let root = store.root().to_path_buf();
        return super::detach::detach(&root, &id, || {
            let init = container.then(InitCopy::start);
            supervise(
                &args,
                spec,
                ns,
                &store,
                id.clone(),
                rootless,
                log_filter,
                init,
            )
        });
    }
    supervise(&args, spec, ns, &store, id, rootless, log_filter, init)
}

/// Runs the run in this process (the foreground, or a detached run's supervisor), registered
/// for `isol ps` while it runs. `init`: the container's init copy, started (container backend).
#[allow(clippy::too_many_arguments)]
fn supervise(
    args: &RunArgs,
    spec: RunSpec,
    ns: NamespaceOptions,
    store: &isol_image::Store,
    id: String,
    rootless: bool,
    log_filter: &str,
    init: Option<InitCopy>,
) -> anyhow::Result<i32> {
    let record = run_record(args, &spec, &ns, store, &id);
    // Removed when the run ends; a microVM's stays across the exec into isol-vmm, which keeps
    // this pid, and goes stale when it exits.
    let _registered = super::runs::register(&super::runs::dir(store.root()), record)?;
    // Held while the workload runs, so that `isol image rm` does not delete its image.
    let backend = match args.backend {
        Backend::Container => "container",
        Backend::Kvm => "VM",
    };
    let in_use = store.mark_in_use(&spec.image, &id, backend)?;
    match args.backend {
        Backend::Container => run_container(args, spec, ns, store, id, rootless, init),
        Backend::Kvm => run_kvm(args, spec, store, &in_use, &id, log_filter),
    }
}

/// The namespace flags (`--pid`, `--ipc`, `--uts`, `--cgroupns`, `--userns`, `--network
/// container:`), resolved for the container runtime.
#[derive(Debug, Default)]
pub struct NamespaceOptions {
    host: isol_container::HostNamespaces,
    join: Vec<(isol_container::SharedNamespace, PathBuf)>,
    /// `--ipc` as the run's record keeps it (`container:NAME` may join only a `shareable` one).
    ipc: String,
    /// `--userns private` as root: the host range the container's ids map to.
    user_namespace: Option<isol_container::UserNamespace>,
}

fn namespace_options(
    args: &RunArgs,
    store: &isol_image::Store,
    rootless: bool,
) -> anyhow::Result<NamespaceOptions> {
    use crate::cli::{HostOrOwn, IpcMode, NsMode};
    use isol_container::SharedNamespace;
    let ipc = match &args.ipc {
        None | Some(IpcMode::Private) => "private".to_owned(),
        Some(IpcMode::Shareable) => "shareable".to_owned(),
        Some(IpcMode::Host) => "host".to_owned(),
        Some(IpcMode::Container(n)) => format!("container:{n}"),
    };
    if args.backend == Backend::Kvm {
        check_kvm_namespace_flags(args)?;
        return Ok(NamespaceOptions {
            ipc,
            ..NamespaceOptions::default()
        });
    }
    if let Some(n) = &args.name {
        super::runs::validate_name(n)?;
    }
    let host = isol_container::HostNamespaces {
        pid: args.pid == Some(HostOrOwn::Host),
        ipc: args.ipc == Some(IpcMode::Host),
        uts: args.uts == Some(HostOrOwn::Host),
        cgroup: args.cgroupns == Some(NsMode::Host),
        // `isol run` always builds its root in a mount namespace of its own.
        mount: false,
    };
    if host.pid && rootless {
        bail!(
            "--pid host needs root: isol ends a run's processes through its cgroup, which a rootless run has none of; run isol as root or drop the flag"
        );
    }
    if host.uts && args.hostname.is_some() {
        bail!(
            "--hostname and --uts host conflict: a run in the host's UTS namespace has the host's hostname; drop one"
        );
    }
    match args.userns {
        Some(NsMode::Host) if rootless => bail!(
            "--userns host needs root: isol run as a user puts every container in a user namespace of its own (the caller's uid is root inside); run isol as root or drop the flag"
        ),
        _ => {}
    }
    let user_namespace = if args.userns == Some(NsMode::Private) && !rootless {
        if host.pid {
            bail!(
                "--userns private and --pid host conflict: the container's root could not mount a /proc for the host's PID namespace, which belongs to the host's user namespace; drop one"
            );
        }
        if matches!(args.network, Network::Container(_))
            || matches!(args.ipc, Some(IpcMode::Container(_)))
        {
            bail!(
                "--userns private cannot join another run's namespaces (--network/--ipc container:NAME): they belong to the host's user namespace; drop one"
            );
        }
        if let Network::Ns(path) = &args.network {
            bail!(
                "--userns private cannot join the network namespace {}: it belongs to the host's user namespace; drop one",
                path.display()
            );
        }
        Some(userns_range()?)
    } else {
        None
    };
    let mut join = Vec::new();
    let runs = super::runs::dir(store.root());
    let other = |what: &str, flag: &str| -> anyhow::Result<i32> {
        let rec = super::runs::find(&runs, what).with_context(|| flag.to_owned())?;
        if rec.backend != "container" {
            bail!(
                "{flag}: run {what} is a microVM, whose namespaces are in its own kernel; name a container"
            );
        }
        Ok(super::runs::container_info(&rec)
            .with_context(|| flag.to_owned())?
            .0)
    };
    if let Some(IpcMode::Container(n)) = &args.ipc {
        let flag = format!("--ipc container:{n}");
        let pid = other(n, &flag)?;
        let rec = super::runs::find(&runs, n)?;
        if rec.ipc != "shareable" && rec.ipc != "host" {
            bail!(
                "{flag}: run {n}'s IPC namespace is private (--ipc {}); start it with --ipc shareable to share it",
                rec.ipc
            );
        }
        join.push((SharedNamespace::Ipc, format!("/proc/{pid}/ns/ipc").into()));
    }
    if let Network::Container(n) = &args.network {
        let pid = other(n, &format!("--network container:{n}"))?;
        join.push((SharedNamespace::Net, format!("/proc/{pid}/ns/net").into()));
    }
    if let Network::Ns(path) = &args.network {
        // Checked here, so that a wrong path is isol's one-line error, not the child's.
        check_netns_flag(path, rootless, false)?;
        join.push((SharedNamespace::Net, path.clone()));
    }
    Ok(NamespaceOptions {
        host,
        join,
        ipc,
        user_namespace,
    })
}

/// The host ids a root-run container's user namespace maps to (`--userns private`): 65536 of
/// them from `ISOL_USERNS_RANGE=START[:COUNT]`, else from the `isol` entries of /etc/subuid and
/// /etc/subgid (as dockerd's `userns-remap` takes its user's), else from 100000.
fn userns_range() -> anyhow::Result<isol_container::UserNamespace> {
    const DEFAULT: (u32, u32) = (100_000, 65_536);
    if let Ok(v) = std::env::var("ISOL_USERNS_RANGE") {
        let (start, count) =
            parse_userns_range(&v).with_context(|| format!("ISOL_USERNS_RANGE={v:?}"))?;
        return Ok(isol_container::UserNamespace::range(start, count));
    }
    let sub = |file: &str| -> anyhow::Result<(u32, u32)> {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        match text.lines().find_map(|l| l.strip_prefix("isol:")) {
            Some(range) => parse_userns_range(range)
                .with_context(|| format!("the isol entry of {file} ({range:?})")),
            None => Ok(DEFAULT),
        }
    };
    let (uid, uids) = sub("/etc/subuid")?;
    let (gid, gids) = sub("/etc/subgid")?;
    let mut ns = isol_container::UserNamespace::range(uid, uids);
    ns.gid_map = isol_container::UserNamespace::range(gid, gids).gid_map;
    Ok(ns)
}

/// `START[:COUNT]` (COUNT defaults to 65536): host ids START… for the container's 0….
fn parse_userns_range(s: &str) -> anyhow::Result<(u32, u32)> {
    let (start, count) = s.split_once(':').unwrap_or((s, "65536"));
    let (Ok(start), Ok(count)) = (start.trim().parse::<u32>(), count.trim().parse::<u32>()) else {
        bail!("not a range: give START[:COUNT] in host ids, e.g. 100000:65536");
    };
    if start == 0 || count == 0 || u64::from(start) + u64::from(count) > u64::from(u32::MAX) {
        bail!(
            "not a usable range: START must be above 0 (the host's root), COUNT at least 1, and START+COUNT below 4294967295; e.g. 100000:65536"
        );
    }
    Ok((start, count))
}

/// `--network ns:PATH`, either backend: root (the namespace belongs to the host's user
/// namespace), and PATH a network namespace other than isol's own; for a VM (`vm`), one the
/// VM can take over (one interface, with an IPv4 address and a default route), checked before
/// anything is built.
fn check_netns_flag(path: &Path, rootless: bool, vm: bool) -> anyhow::Result<()> {
    if rootless {
        bail!(
            "--network ns:{} needs root: the namespace belongs to the host's user namespace; run isol as root or use --network none",
            path.display()
        );
    }
    let netns = isol_container::network::pod::open_netns(path)?;
    if vm {
        isol_container::network::pod::read_config(path, &netns)?;
    }
    Ok(())
}

/// On kvm, every namespace flag that would share something with the host or another run is
/// refused: the VM's kernel has its own of everything.
fn check_kvm_namespace_flags(args: &RunArgs) -> anyhow::Result<()> {
    use crate::cli::{HostOrOwn, IpcMode, NsMode};
    let refuse = |flag: &str, what: &str| -> anyhow::Result<()> {
        bail!(
            "{flag} is not supported with --backend kvm: a VM has its own kernel, so there is no host {what} to share; drop it or use --backend container"
        )
    };
    if args.pid == Some(HostOrOwn::Host) {
        refuse("--pid host", "PID namespace")?;
    }
    if args.uts == Some(HostOrOwn::Host) {
        refuse("--uts host", "UTS namespace (hostname)")?;
    }
    if args.cgroupns == Some(NsMode::Host) {
        refuse("--cgroupns host", "cgroup namespace")?;
    }
    if args.userns == Some(NsMode::Host) {
        refuse("--userns host", "user namespace")?;
    }
    match &args.ipc {
        Some(IpcMode::Host) => refuse("--ipc host", "IPC namespace")?,
        Some(IpcMode::Shareable) | Some(IpcMode::Container(_)) => bail!(
            "--ipc shareable|container:NAME is not supported with --backend kvm: a VM's IPC objects live in its own kernel, which no other run shares; drop it or use --backend container"
        ),
        _ => {}
    }
    if let Network::Container(_) = &args.network {
        bail!(
            "--network container:NAME is not supported with --backend kvm: a VM's network stack is in its own kernel; drop it or use --backend container"
        );
    }
    if let Some(n) = &args.name {
        super::runs::validate_name(n)?;
    }
    Ok(())
}

/// `-p`/`--publish`, parsed (docker's syntax); refused without `--network bridge`, where the
/// run has no address of its own on the host for the ports to lead to.
fn publish_ports(args: &RunArgs) -> anyhow::Result<Vec<isol_container::network::PortMapping>> {
    let mut ports = Vec::new();
    for p in &args.publish {
        ports.extend(isol_container::network::PortMapping::parse(p).map_err(anyhow::Error::msg)?);
    }
    if !ports.is_empty() && args.network != Network::Bridge {
        bail!(
            "-p/--publish needs --network bridge: with --network {} the run has no address of its own on isol's bridge for the host's ports to lead to; add --network bridge or drop -p",
            args.network
        );
    }
    Ok(ports)
}

/// `-d` runs without a terminal or stdin: `-t` and `-i` have nothing to attach to.
fn check_detach_flags(args: &RunArgs) -> anyhow::Result<()> {
    if args.tty || args.interactive {
        bail!(
            "-d with -i or -t is not supported: a detached run has no terminal or stdin to attach (isol has no attach yet); drop -i/-t"
        );
    }
    if args.json {
        bail!(
            "-d with --json is not supported: a detached run's report would have nowhere to go; drop one"
        );
    }
    Ok(())
}

/// The record `isol ps`, `stop` and `exec` read.
fn run_record(
    args: &RunArgs,
    spec: &RunSpec,
    ns: &NamespaceOptions,
    store: &isol_image::Store,
    id: &str,
) -> super::runs::Record {
    let container = args.backend == Backend::Container;
    let mut r = super::runs::new_record(
        id,
        args.name.as_deref(),
        if container { "container" } else { "kvm" },
    );
    r.image = spec.image.summary.name.clone();
    r.command = spec
        .args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    r.env = spec
        .env
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    r.workdir = spec.workdir.display().to_string();
    r.ipc.clone_from(&ns.ipc);
    r.seccomp = !matches!(spec.privileges.seccomp, Seccomp::Unconfined);
    r.seccomp_profile = seccomp_file(&args.security_opt);
    r.state_root = container.then(|| store.root().join("containers"));
    r.network = args.network.to_string();
    r.limits = super::runs::Limits {
        memory: spec.memory,
        cpus: spec.cpus,
        pids: spec.pids,
    };
    // What run_kvm will start (flags it refuses end the run before anyone can inspect it).
    r.vm = (!container).then(|| {
        let (vcpus, memory_mib) = vm_size(spec.cpus, spec.memory).unwrap_or((1, 256));
        super::runs::VmShape {
            vcpus,
            memory_mib,
            kernel: guest_kernel(args).ok(),
        }
    });
    r
}

/// `-m` in bytes (at least 6m), after checking `--cpus` against this host's CPUs.
pub(super) fn parse_memory_and_cpus(args: &RunArgs) -> anyhow::Result<Option<u64>> {
    let memory = args
        .memory
        .as_deref()
        .map(parse_size)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    if let Some(m) = memory
        && m < 6 << 20
    {
        bail!(
            "Memory limit {} is too small: the minimum is 6m",
            args.memory.as_deref().unwrap_or("")
        );
    }
    if let Some(c) = args.cpus {
        let host = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        if !(c.is_finite() && c >= 0.01 && c <= host) {
            bail!(
                "Invalid --cpus {c}: the range is 0.01 to {host:.2}, as this host has {host} CPUs"
            );
        }
    }
    Ok(memory)
}

/// `--timeout`: a positive number of seconds.
pub(super) fn check_timeout(args: &RunArgs) -> anyhow::Result<()> {
    if let Some(t) = args.timeout
        && !(t.is_finite() && t > 0.0 && t < 1e9)
    {
        bail!("Invalid --timeout {t}: give a positive number of seconds");
    }
    Ok(())
}

fn build_spec(args: &RunArgs, store: &isol_image::Store, id: &str) -> anyhow::Result<RunSpec> {
    // Validate the flags before touching the image, so bad input fails fast.
    let memory = parse_memory_and_cpus(args)?;
    let pids = match args.pids_limit {
        None => None,
        Some(n) if n >= 2 => Some(n as u64),
        Some(n) if n > 0 => bail!(
            "Invalid --pids-limit {n}: the container's init and the workload need at least 2; give 2 or more"
        ),
        Some(n) => bail!("Invalid --pids-limit {n}: it must be a positive number of processes"),
    };
    let cpuset_cpus = args
        .cpuset_cpus
        .as_deref()
        .map(|l| isol_container::cgroups::cpuset::CpuList::parse("--cpuset-cpus", l))
        .transpose()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(list) = cpuset_cpus {
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
        if let Ok(online) = isol_container::cgroups::cpuset::CpuList::parse("cpu", &online)
            && !list.is_subset(&online)
        {
            bail!(
                "Invalid --cpuset-cpus {list}: this host's online CPUs are {online}; give a list within them"
            );
        }
    }
    let volumes = args
        .volumes
        .iter()
        .map(|v| parse_volume(v))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut env_flags = Vec::new();
    for e in &args.env {
        env_flags.push(parse_env(e)?);
    }
    if let Some(w) = &args.workdir
        && !w.is_absolute()
    {
        bail!(
            "Working directory {} is not absolute; use a path starting with /",
            w.display()
        );
    }
    if let Some(h) = &args.hostname {
        validate_hostname(h)?;
    }
    check_timeout(args)?;
    let privileges = parse_privileges(args)?;

    let image_name = args.image.as_deref().unwrap_or_default();
    let image = store.resolve(image_name)?;
    let cfg = &image.config;

    let mut argv: Vec<OsString> = cfg.entrypoint.iter().map(OsString::from).collect();
    if args.command.is_empty() {
        argv.extend(cfg.cmd.iter().map(OsString::from));
    } else {
        argv.extend(args.command.iter().cloned());
    }
    if argv.is_empty() {
        bail!(
            "No command given and image '{image_name}' has no default command; give one after the image name"
        );
    }

    let hostname = args.hostname.clone().unwrap_or_else(|| id.to_string());
    let mut env: Vec<OsString> = Vec::new();
    let set = |env: &mut Vec<OsString>, kv: OsString| {
        let key = kv_key(&kv).to_vec();
        env.retain(|e| kv_key(e) != key.as_slice());
        env.push(kv);
    };
    for e in &cfg.env {
        set(&mut env, e.into());
    }
    if !env.iter().any(|e| kv_key(e) == b"PATH") {
        env.insert(0, DEFAULT_PATH.into());
    }
    set(&mut env, format!("HOSTNAME={hostname}").into());
    for e in env_flags {
        set(&mut env, e);
    }
    if !env.iter().any(|e| kv_key(e) == b"HOME") {
        env.push("HOME=/root".into());
    }

    let workdir = args
        .workdir
        .clone()
        .or_else(|| {
            cfg.workdir
                .as_ref()
                .filter(|w| !w.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/"));
    let user = args
        .user
        .clone()
        .or_else(|| cfg.user.clone().filter(|u| !u.is_empty()));
    if let Some(u) = &user {
        isol_container::check_user_spec(u).map_err(anyhow::Error::msg)?;
    }

    Ok(RunSpec {
        image,
        args: argv,
        env,
        workdir,
        hostname,
        user,
        privileges,
        memory,
        cpus: args.cpus,
        pids,
        cpuset_cpus,
        volumes,
    })
}

fn kv_key(kv: &OsString) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    let b = kv.as_bytes();
    b.split(|c| *c == b'=').next().unwrap_or(b)
}

/// `--cap-add`, `--cap-drop` and `--security-opt` over the defaults (docker's capabilities,
/// `no_new_privs`, docker's seccomp profile); the same privileges on both backends.
fn parse_privileges(args: &RunArgs) -> anyhow::Result<isol_container::Privileges> {
    use isol_container::security::capabilities;
    use isol_container::security::seccomp::Seccomp;
    let mut p = isol_container::Privileges {
        capabilities: capabilities::tweak(&args.cap_add, &args.cap_drop)?,
        ..Default::default()
    };
    for opt in &args.security_opt {
        // docker takes `key=value` and the older `key:value`.
        let (key, value) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (key, value) {
            ("no-new-privileges", None | Some("true")) => p.no_new_privs = true,
            ("no-new-privileges", Some("false")) => p.no_new_privs = false,
            ("no-new-privileges", Some(v)) => bail!(
                "Invalid --security-opt no-new-privileges={v}: use no-new-privileges, no-new-privileges=true or no-new-privileges=false"
            ),
            ("seccomp", Some("unconfined")) => p.seccomp = Seccomp::Unconfined,
            ("seccomp", Some(path)) if !path.is_empty() => {
                p.seccomp =
                    Seccomp::Profile(std::sync::Arc::new(seccomp_profile(path, p.capabilities)?))
            }
            ("seccomp", _) => bail!(
                "Invalid --security-opt {opt}: give seccomp=unconfined or seccomp=PROFILE.json (docker's profile format), or leave the option out for the default profile"
            ),
            _ => bail!(
                "Unknown --security-opt {opt:?}: isol supports no-new-privileges[=true|false], seccomp=unconfined and seccomp=PROFILE.json"
            ),
        }
    }
    Ok(p)
}

/// `--security-opt seccomp=PATH`: a profile in docker's JSON format, its `includes` and
/// `excludes` resolved for `capabilities` and this kernel as dockerd does, compiled once here
/// so that a bad profile fails before anything starts.
/// The profile file of `--security-opt seccomp=FILE`, if one was given.
fn seccomp_file(opts: &[String]) -> Option<String> {
    opts.iter()
        .filter_map(|o| o.strip_prefix("seccomp="))
        .rfind(|p| *p != "unconfined" && !p.is_empty())
        .map(str::to_owned)
}

pub(crate) fn seccomp_profile(
    path: &str,
    capabilities: u64,
) -> anyhow::Result<isol_container::security::seccomp::Profile> {
    use isol_container::security::seccomp::{self, Profile, profile::Context};
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!(
            "Invalid --security-opt seccomp={path}: cannot read the profile: {e}; give the path of a seccomp profile in docker's JSON format"
        )
    })?;
    let profile = Profile::from_json(&text, &Context::host(capabilities))
        .map_err(|e| anyhow::anyhow!("Invalid --security-opt seccomp={path}: {e}"))?;
    seccomp::compile(&profile)
        .map_err(|e| anyhow::anyhow!("Invalid --security-opt seccomp={path}: {e}"))?;
    Ok(profile)
}

/// `-e KEY=VALUE` sets; `-e KEY` passes the host's value (skipped when unset, as docker does).
fn parse_env(e: &str) -> anyhow::Result<OsString> {
    let (key, value) = match e.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (e, None),
    };
    if key.is_empty() || key.contains('\0') {
        bail!("Invalid environment variable {e:?}: use KEY=VALUE");
    }
    Ok(match value {
        Some(_) => e.into(),
        None => match std::env::var_os(key) {
            Some(v) => {
                let mut s = OsString::from(format!("{key}="));
                s.push(v);
                s
            }
            None => bail!("Environment variable {key} is not set on the host; use {key}=VALUE"),
        },
    })
}

fn validate_hostname(h: &str) -> anyhow::Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        bail!("Invalid hostname {h:?}: use letters, digits, '-' and '.', at most 64 characters");
    }
    Ok(())
}

/// `HOST:CTR[:ro|rw]`; the host path must exist, the container path must be absolute.
fn parse_volume(v: &str) -> anyhow::Result<isol_container::Volume> {
    let parts: Vec<&str> = v.split(':').collect();
    let (src, dst, mode) = match parts.as_slice() {
        [s, d] => (*s, *d, "rw"),
        [s, d, m] => (*s, *d, *m),
        _ => bail!("Invalid volume {v:?}: use HOST:CONTAINER[:ro]"),
    };
    let read_only = match mode {
        "ro" => true,
        "rw" => false,
        m => bail!("Invalid volume mode {m:?} in {v:?}: use ro or rw"),
    };
    let target = PathBuf::from(dst);
    if !target.is_absolute() {
        bail!("Volume target {dst:?} is not absolute; use a path starting with /");
    }
    if target
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        bail!("Volume target {dst:?} contains '..'; give the path without it");
    }
    // Normalised: "//proc/" is /proc.
    let target: PathBuf = target.components().collect();
    if target == Path::new("/") {
        bail!(
            "Volume target / would hide the image's whole filesystem; mount the directory below /, e.g. {src}:/data"
        );
    }
    if target.starts_with("/proc") {
        bail!(
            "Volume target {dst:?} is inside /proc, which the container's own procfs must keep; mount it elsewhere"
        );
    }
    let source = Path::new(src);
    let source = source.canonicalize().map_err(|e| {
        anyhow::anyhow!("Volume source {src} does not exist ({e}); create it or fix the path")
    })?;
    Ok(isol_container::Volume {
        source,
        target,
        read_only,
    })
}

/// Running as non-root needs unprivileged user namespaces.
fn check_user_namespaces() -> anyhow::Result<()> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        bail!(
            "isol is not root and this host allows no user namespaces (user.max_user_namespaces=0); run isol as root or raise that sysctl"
        );
    }
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        bail!(
            "isol is not root and this host forbids unprivileged user namespaces (kernel.unprivileged_userns_clone=0); run isol as root or set that sysctl to 1"
        );
    }
    Ok(())
}

fn run_container(
    args: &RunArgs,
    spec: RunSpec,
    ns: NamespaceOptions,
    store: &isol_image::Store,
    id: String,
    rootless: bool,
    init: Option<InitCopy>,
) -> anyhow::Result<i32> {
    let network = match args.network {
        // The joined namespace is wired already.
        Network::None | Network::Container(_) | Network::Ns(_) => isol_container::NetworkMode::None,
        Network::Host => isol_container::NetworkMode::Host,
        Network::Bridge => {
            if rootless {
                bail!("--network bridge needs root; run isol as root or use --network none|host");
            }
            isol_container::NetworkMode::Bridge
        }
    };
    let privileges = container_privileges(args, spec.privileges, rootless)?;
    let layers = store
        .unpack(&spec.image)
        .context("Cannot unpack the image's layers")?;
    let cfg = isol_container::ContainerConfig {
        id,
        rootfs: isol_container::Rootfs::Layers(layers),
        state_root: store.root().join("containers"),
        args: spec.args,
        env: spec.env,
        workdir: spec.workdir,
        hostname: spec.hostname,
        domainname: String::new(),
        user: spec.user,
        groups: None,
        privileges,
        limits: isol_container::Limits {
            memory: spec.memory,
            cpus: spec.cpus,
            pids: spec.pids,
            cpu_shares: None,
            memory_swap: None,
            cpuset_cpus: spec.cpuset_cpus,
            cpuset_mems: None,
            ..Default::default()
        },
        cgroup_path: None,
        hooks: Default::default(),
        rlimits: Vec::new(),
        devices: isol_container::cgroups::devices::DEFAULT_RULES.to_vec(),
        device_nodes: Vec::new(),
        rootfs_propagation: 0,
        set_joined_hostname: false,
        network,
        publish: publish_ports(args)?,
        etc_files: true,
        join: ns.join,
        host_namespaces: ns.host,
        volumes: spec.volumes,
        mounts: Vec::new(),
        interactive: args.interactive,
        tty: args.tty,
        preserve_fds: 0,
        rootless,
        user_namespace: ns.user_namespace,
        timeout: args.timeout.map(std::time::Duration::from_secs_f64),
        umask: None,
        oom_score_adj: None,
        sysctl: Vec::new(),
        masked_paths: Vec::new(),
        readonly_paths: Vec::new(),
    };
    let result = isol_container::run_with_init(&cfg, init)?;
    // The child's steps (rootfs, exec) cannot log themselves (see docs/design.md, "Logging"):
    // their durations, in order, from the run's phases.
    for (phase, ms) in &result.phases {
        tracing::debug!(phase = %phase, ms = round3(*ms), "container step done");
    }
    tracing::debug!(
        id = %result.id,
        exit_code = result.exit_code,
        signal = ?result.signal,
        "container exited"
    );
    if let Some(msg) = &result.exec_error {
        eprintln!("isol: {msg}");
    }
    if args.json {
        let phases: serde_json::Map<String, serde_json::Value> = result
            .phases
            .iter()
            .map(|(k, v)| (k.clone(), json!(round3(*v))))
            .collect();
        let report = json!({
            "backend": "container",
            "id": result.id,
            "image": spec.image.summary.name,
            "exit_code": result.exit_code,
            "signal": result.signal,
            "exec_error": result.exec_error,
            "phases_ms": phases,
            "total_ms": round3(result.total_ms),
            "peak_memory_bytes": result.stats.memory_peak,
            "oom_kills": result.stats.oom_kills,
            "cpu_usage_usec": result.stats.cpu_usage_usec,
            "cpu_nr_throttled": result.stats.cpu_nr_throttled,
            "cpu_throttled_usec": result.stats.cpu_throttled_usec,
            "pids_limit_hits": result.stats.pids_limit_hits,
            "address": result.address,
            "ports": result.ports,
        });
        eprintln!("{report}");
    }
    Ok(result.exit_code)
}

/// A container gets no capability its runtime does not hold: a rootful isol whose own bounding
/// set lacks some (a restricted host, or isol itself in a container) gives `--cap-add ALL` what it
/// has, and refuses a capability named in `--cap-add` that it lacks. (Rootless, the runtime is
/// root with every capability in its own user namespace; in a VM the guest init holds them all.)
fn container_privileges(
    args: &RunArgs,
    mut p: isol_container::Privileges,
    rootless: bool,
) -> anyhow::Result<isol_container::Privileges> {
    use isol_container::security::capabilities;
    if rootless {
        return Ok(p);
    }
    let (_, held, _) = capabilities::current()?;
    for name in &args.cap_add {
        if let Some(cap) = capabilities::by_name(name)
            && cap.bitmask() & held == 0
        {
            bail!(
                "--cap-add {name}: isol itself does not hold {cap} (its bounding set lacks it), so it cannot give it to the container; drop the flag, or run isol where it holds {cap}"
            );
        }
    }
    p.capabilities &= held;
    Ok(p)
}

/// Flags the kvm backend cannot honour yet are refused, never silently ignored.
fn check_kvm_flags(args: &RunArgs, spec: &RunSpec) -> anyhow::Result<()> {
    let refuse = |flag: &str, why: &str| -> anyhow::Result<()> {
        bail!(
            "{flag} is not supported with --backend kvm ({why}); drop it or use --backend container"
        )
    };
    if args.network == Network::Host {
        refuse(
            "--network host",
            "a VM has its own kernel and network stack, so it cannot share the host's; use --network bridge to reach it from the host",
        )?;
    }
    if let Network::Ns(path) = &args.network {
        check_netns_flag(path, !nix::unistd::geteuid().is_root(), true)?;
    }
    for v in &spec.volumes {
        // A host without virtiofsd is told at once.
        if kvm_volume_kind(v)? == KvmVolume::Shared {
            super::shares::virtiofsd()?;
        }
    }
    if spec.cpuset_cpus.is_some() {
        refuse(
            "--cpuset-cpus",
            "isol's VMM does not pin its vCPU threads to host CPUs yet; --cpus sets the number of vCPUs",
        )?;
    }
    Ok(())
}

/// The image's layers as a cached read-only ext4 root disk. Its first run unpacks the layers
/// and builds the disk (seconds for a big image: docs/benchmarks-vm.md), with a progress bar
/// on stderr when it is a terminal.
fn vm_root_disk(store: &isol_image::Store, image: &isol_image::Image) -> anyhow::Result<PathBuf> {
    use indicatif::{ProgressBar, ProgressStyle};
    let cache = store.vm_cache();
    let digest = &image.summary.digest;
    if let Some(disk) = isol_image::vm::cached_disk(&cache, digest) {
        return Ok(disk);
    }
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        let b = ProgressBar::new_spinner();
        b.enable_steady_tick(std::time::Duration::from_millis(100));
        b
    } else {
        ProgressBar::hidden()
    };
    bar.set_message(format!(
        "first run of {}: unpacking its layers",
        image.summary.name
    ));
    let layers = store
        .unpack(image)
        .context("Cannot unpack the image's layers")?;
    let vm_image = isol_image::vm::VmImage {
        digest,
        layers: &layers,
    };
    let mut writing = false;
    let disk = isol_image::vm::root_reporting(
        &cache,
        vm_image,
        isol_image::vm::RootForm::Disk,
        &mut |p| match p {
            isol_image::vm::Progress::Merging => bar.set_message(format!(
                "first run of {}: merging its layers",
                image.summary.name
            )),
            isol_image::vm::Progress::Writing { done, total } => {
                if !writing {
                    writing = true;
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{spinner} {msg} [{bar:30}] {bytes}/{total_bytes}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    bar.set_message(format!(
                        "first run of {}: building its root disk",
                        image.summary.name
                    ));
                }
                bar.set_length(total);
                bar.set_position(done);
            }
        },
    );
    bar.finish_and_clear();
    disk.context("Cannot build the VM's root disk")
}

/// A VM's vCPUs (`--cpus`, a whole number, or 1) and RAM in MiB (`--memory`, or 256),
/// checked against the VMM's minimum and this host's memory.
pub(super) fn vm_size(cpus: Option<f64>, memory: Option<u64>) -> anyhow::Result<(u8, u32)> {
    let vcpus = match cpus {
        None => 1,
        Some(c) if c.fract() == 0.0 && (1.0..=255.0).contains(&c) => c as u8,
        Some(c) => {
            bail!("--cpus {c} is not a whole number of vCPUs; the kvm backend needs 1, 2, …")
        }
    };
    let memory_mib = match memory {
        None => 256,
        Some(m) => u32::try_from(m >> 20).unwrap_or(u32::MAX),
    };
    let min = isol_vmm::config::MIN_MEMORY_MIB;
    if memory_mib < min {
        bail!("Memory {memory_mib} MiB is too small for a microVM: give --memory {min}m or more");
    }
    if let Some(host) = isol_vmm::config::host_memory_mib()
        && u64::from(memory_mib) > host
    {
        bail!(
            "Memory {memory_mib} MiB is more than this host has ({host} MiB): give a smaller --memory"
        );
    }
    Ok((vcpus, memory_mib))
}

/// How a `-v` source reaches a VM: a directory is shared (virtio-fs, served by virtiofsd), a
/// block device or an image file is attached as a disk (virtio-blk, seen at the target as a
/// block device).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KvmVolume {
    Shared,
    Disk,
}

fn kvm_volume_kind(v: &isol_container::Volume) -> anyhow::Result<KvmVolume> {
    use std::os::unix::fs::FileTypeExt;
    let t = std::fs::metadata(&v.source)
        .with_context(|| format!("Cannot read volume source {}", v.source.display()))?
        .file_type();
    if t.is_dir() {
        Ok(KvmVolume::Shared)
    } else if t.is_block_device() || t.is_file() {
        Ok(KvmVolume::Disk)
    } else {
        bail!(
            "-v {}: a socket, FIFO or character device cannot be given to a VM; with --backend kvm give a directory (shared), an image file or a block device (a disk), or use --backend container",
            v.source.display()
        )
    }
}

/// The guest kernel: --kernel, $ISOL_KERNEL, or the one build-kernel.sh cached.
fn guest_kernel(args: &RunArgs) -> anyhow::Result<PathBuf> {
    if let Some(k) = &args.kernel {
        return Ok(k.clone());
    }
    if let Some(k) = std::env::var_os("ISOL_KERNEL") {
        return Ok(k.into());
    }
    isol_vmm::config::cached_kernel_dir()
        .map(|d| d.join("vmlinux"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "No guest kernel found in the cache ($ISOL_CACHE, default /var/cache/isol): build it with guest-images/build-kernel.sh or pass --kernel PATH"
            )
        })
}

/// [`guest_kernel`], checked first (bad input): a kernel that cannot be opened or is no kernel.
pub(super) fn checked_guest_kernel(args: &RunArgs) -> anyhow::Result<PathBuf> {
    let kernel = guest_kernel(args)?;
    isol_vmm::loader::check_kernel(&kernel)?;
    Ok(kernel)
}

fn run_kvm(
    args: &RunArgs,
    spec: RunSpec,
    store: &isol_image::Store,
    in_use: &isol_image::InUse,
    id: &str,
    log_filter: &str,
) -> anyhow::Result<i32> {
    check_kvm_flags(args, &spec)?;
    // The environment is read here, once: ISOL_VMM_SECCOMP (docs/vmm.md, "Seccomp").
    let (seccomp, seccomp_test_violation) =
        isol_vmm::seccomp::parse_setting(std::env::var(isol_vmm::seccomp::ENV).ok().as_deref())?;
    let (vcpus, memory_mib) = vm_size(spec.cpus, spec.memory)?;
    let kernel = checked_guest_kernel(args)?;
    // A kernel whose config can be found and lacks what isol needs is refused here, with
    // the options named, rather than failing inside the guest.
    let mut shared = Vec::new();
    let mut disks = Vec::new();
    for v in &spec.volumes {
        match kvm_volume_kind(v)? {
            KvmVolume::Shared => shared.push(super::shares::Share {
                source: v.source.clone(),
                target: v.target.clone(),
                read_only: v.read_only,
            }),
            KvmVolume::Disk => disks.push(isol_vmm::launch::LaunchDisk {
                path: v.source.clone(),
                read_only: v.read_only,
                guest_path: v.target.clone().into_os_string(),
            }),
        }
    }
    isol_vmm::kconfig::check_for_run(
        &kernel,
        &isol_vmm::kconfig::Needs {
            vcpus,
            nic: matches!(args.network, Network::Bridge | Network::Ns(_)),
            pids_limit: spec.pids.is_some(),
            memory_limit: spec.memory.is_some(),
            fs: !shared.is_empty(),
        },
    )?;
    // Then, before any work on the image: a host whose KVM only emulates is told so at once.
    // The environment is read here, once: ISOL_CACHE.
    let speed_cache = isol_vmm::config::cache_dir().join("kvm-speed");
    isol_vmm::vstate::kvm::check_runs_guests(Some(&speed_cache)).map_err(anyhow::Error::msg)?;
    let init = isol_vmm::config::default_guest_init().ok_or_else(|| {
        anyhow::anyhow!("The guest init isol-guest-init was not found beside isol; build it (cargo build -p isol-guest-init) or set ISOL_GUEST_INIT")
    })?;
    let root_disk = vm_root_disk(store, &spec.image)?;
    let launch = isol_vmm::launch::Launch {
        kernel,
        root_disk,
        bundle: None,
        initrd: None,
        rlimits: Vec::new(),
        groups: None,
        init,
        vcpus,
        memory_mib,
        args: spec.args,
        env: spec.env,
        workdir: spec.workdir.into_os_string(),
        hostname: spec.hostname.into(),
        user: spec.user.unwrap_or_default().into(),
        // The same privileges as a container's: the profile is compiled here, on the host, and
        // the guest init applies them.
        capabilities: Some(spec.privileges.capabilities),
        inheritable: spec.privileges.inheritable,
        ambient: spec.privileges.ambient,
        no_new_privs: spec.privileges.no_new_privs,
        workload_seccomp: match spec.privileges.seccomp.filter()? {
            None => Vec::new(),
            Some(f) if f.flags != 0 => bail!(
                "The seccomp profile's flags (SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW) are not supported with --backend kvm; drop them from the profile or use --backend container"
            ),
            Some(f) => f.words(),
        },
        disks,
        timeout: args.timeout.map(std::time::Duration::from_secs_f64),
        console: args.console,
        trace_exits: args.trace_exits,
        interactive: args.interactive,
        tty: args.tty,
        json: args.json,
        image: spec.image.summary.name,
        // The environment is read here, once: ISOL_CACHE, ISOL_BOOT_PROFILE=off.
        boot_profiles: isol_vmm::config::default_boot_profiles(),
        log_filter: Some(log_filter.to_owned()),
        seccomp,
        seccomp_test_violation,
        jail: None,
        net: None,
        etc_files: Vec::new(),
        control: None,
        shares: Vec::new(),
        // The guest init enforces them in the guest kernel's cgroup v2, as the container
        // backend's cgroup does on the host; --memory also sizes the guest's RAM (above).
        pids_limit: spec.pids,
        memory_limit: spec.memory,
        leftovers: Vec::new(),
        start_gate: None,
        // /proc and /sys masked and read-only in the guest as in a container (docker's and
        // runc's defaults): one set of flags, one set of permissions on both backends.
        oci: super::guest_masks::launch(&[], &[]),
    };
    // The jail binds each file at its own path and the VMM runs in it with `/` as its working
    // directory: every path absolute.
    let launch = absolute_paths(launch)?;
    // Last before the VMM: the tap and the address exist from here on.
    let network = kvm_network(args, store, id)?;
    // /etc/hostname, /etc/hosts, /etc/resolv.conf: what a container run with these flags gets.
    let mode = match network {
        Some(_) => isol_container::NetworkMode::Bridge,
        None => isol_container::NetworkMode::None,
    };
    let etc_files: Vec<(String, String)> = isol_container::vm_etc_files(
        mode,
        &launch.hostname.to_string_lossy(),
        network.as_ref().map(|n| n.launch.address),
        &spec.volumes,
    )
    .into_iter()
    .map(|(name, content)| (name.to_owned(), content))
    .collect();
    let jail = vmm_jail(store, &launch, id)?;
    // Everything that can be checked before the VMM starts fails here, as isol's error.
    isol_vmm::launch::Launch {
        jail: jail.clone(),
        net: network.as_ref().map(|n| n.launch.clone()),
        etc_files: etc_files.clone(),
        ..launch.clone()
    }
    .vm_config(None)
    .validate()?;
    // Last: the virtiofsds of `-v DIR:DIR` (they need the directories absolute).
    let shared = shared
        .into_iter()
        .map(|s| {
            Ok(super::shares::Share {
                source: std::path::absolute(&s.source).with_context(|| {
                    format!("Cannot make {} an absolute path", s.source.display())
                })?,
                ..s
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shares = super::shares::KvmShares::start(&shared, id)?;
    let launch = isol_vmm::launch::Launch {
        jail,
        net: network.as_ref().map(|n| n.launch.clone()),
        etc_files,
        shares: shares.launch.clone(),
        ..launch
    };
    // `isol exec`'s way into the VM: a socket beside the run's record, served by the VMM.
    let control = exec_socket(store, id)?;
    let launch = isol_vmm::launch::Launch {
        control: Some(isol_vmm::launch::LaunchControl {
            fd: std::os::fd::AsRawFd::as_raw_fd(&control.0),
            path: control.1.clone(),
        }),
        ..launch
    };
    // The VM runs in isol-vmm, which this process becomes (same pid), so that none of
    // isol's own code is mapped while it runs; without isol-vmm, here.
    match isol_vmm::launch::vmm_binary() {
        Some(vmm) => {
            in_use.keep_across_exec()?;
            // Nothing of this process is dropped across the exec: isol-vmm removes the run's
            // record, its log and its mark on the image after the VM (the socket is `control`).
            let runs = super::runs::dir(store.root());
            let launch = isol_vmm::launch::Launch {
                leftovers: vec![
                    super::runs::record_path(&runs, id).into(),
                    super::runs::log_path(&runs, id).into(),
                    in_use.path().into(),
                ],
                ..launch
            };
            keep_fd_across_exec(&control.0)?;
            if let Some(n) = &network {
                n.keep_across_exec()?;
            }
            shares.keep_across_exec()?;
            tracing::debug!(vmm = %vmm.display(), "handing the VM over to isol-vmm (exec)");
            Err(isol_vmm::launch::exec(&vmm, &launch, std::env::args_os()).into())
        }
        None => {
            tracing::debug!("running the VM in this process (no isol-vmm)");
            let code = isol_vmm::launch::run(&launch);
            // Disconnects and reaps the virtiofsds.
            drop(shares);
            Ok(code)
        }
    }
}

/// The exec channel's listening socket, `<store>/runs/<id>.sock`, for root (or the rootless
/// user) only; the VMM inherits it (docs/vmm.md, "The exec channel").
fn exec_socket(store: &isol_image::Store, id: &str) -> anyhow::Result<ExecSocket> {
    use std::os::unix::fs::PermissionsExt;
    let path = super::runs::socket_path(&super::runs::dir(store.root()), id);
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path)
        .with_context(|| format!("Cannot create the exec socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("Cannot restrict {}", path.display()))?;
    Ok(ExecSocket(l, path))
}

/// The exec socket and its path, removed when dropped: a start that fails, or the VM run in
/// this process; across the exec of isol-vmm nothing is dropped, and isol-vmm removes it.
struct ExecSocket(std::os::unix::net::UnixListener, PathBuf);

impl Drop for ExecSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.1);
    }
}

/// Clears close-on-exec on `fd`, which isol-vmm inherits.
fn keep_fd_across_exec(fd: &impl std::os::fd::AsRawFd) -> anyhow::Result<()> {
    // SAFETY: F_SETFD on a descriptor this process owns; integer arguments only.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        bail!(
            "Cannot hand the exec socket over to isol-vmm: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// A VM's place on isol's bridge (`--network bridge`): the lease and the open tap. Dropped
/// (in this process: a failed start, or the VM run without isol-vmm), the lease is given back
/// and the tap goes with its descriptor; across the exec of isol-vmm neither is dropped, and
/// isol-vmm gives the lease back after the VM (`src/bin/isol-vmm.rs`), or the next isol's
/// sweep does if it was killed (same pid, same owner record).
struct KvmNetwork {
    launch: isol_vmm::launch::LaunchNet,
    tap: std::os::fd::OwnedFd,
    _hold: KvmNetworkHold,
}

/// What a VM's network holds until it is released: a lease on the bridge, or the redirection
/// in a pod's namespace (`--network ns:PATH`), both released on drop.
enum KvmNetworkHold {
    Lease(isol_container::network::Attachment),
    Pod {
        _attachment: isol_container::network::pod::PodAttachment,
    },
}

impl KvmNetwork {
    /// The tap's descriptor, and the sockets holding the published host ports, stay open in
    /// isol-vmm (the ports' until it exits: the jailed VMM closes its copies).
    fn keep_across_exec(&self) -> anyhow::Result<()> {
        use std::os::fd::AsRawFd;
        let reservations = match &self._hold {
            KvmNetworkHold::Lease(lease) => lease.reservations().fds(),
            KvmNetworkHold::Pod { .. } => Vec::new(),
        };
        for fd in std::iter::once(self.tap.as_raw_fd()).chain(reservations) {
            // SAFETY: F_SETFD on a descriptor this process owns; integer arguments only.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
                bail!(
                    "Cannot hand the VM's network over to isol-vmm: {}; raise the open-file limit",
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(())
    }
}

/// `--network bridge` on kvm: the VM's tap on `isol0` and an address from the containers'
/// allocation table (`isol_container::network::attach_vm`), NAT as for containers. `none`:
/// nothing (the guest has loopback only).
fn kvm_network(
    args: &RunArgs,
    store: &isol_image::Store,
    id: &str,
) -> anyhow::Result<Option<KvmNetwork>> {
    // The containers' network state: one allocation table and one bridge for both backends.
    let state_root = store.root().join("containers");
    // Leases of runs whose isol was killed, whichever backend they were.
    isol_container::network::sweep(&state_root);
    if let Network::Ns(path) = &args.network {
        return kvm_pod_network(path, state_root, id).map(Some);
    }
    if args.network != Network::Bridge {
        return Ok(None);
    }
    let ports = publish_ports(args)?;
    let (lease, tap) = isol_container::network::attach_vm(id, &state_root, &ports, |name| {
        isol_devices::virtio::net::Tap::create(name).map_err(|e| e.to_string())
    })?;
    let launch = isol_vmm::launch::LaunchNet {
        tap_fd: std::os::fd::AsRawFd::as_raw_fd(&tap),
        tap: tap.name().to_owned(),
        // Locally administered, from the address, as a container's eth0 has.
        mac: isol_container::network::mac_of(lease.address()),
        address: lease.address(),
        prefix: lease.prefix(),
        gateway: lease.gateway(),
        state_root,
        ports: lease.ports().iter().map(ToString::to_string).collect(),
        pod: None,
        masked_features: net_without()?,
    };
    tracing::debug!(tap = %launch.tap, address = %launch.address, "VM network attached");
    Ok(Some(KvmNetwork {
        launch,
        tap: tap.into_fd(),
        _hold: KvmNetworkHold::Lease(lease),
    }))
}

/// `--network ns:PATH` on kvm: the VM takes over the namespace's interface — a tap there,
/// tc-redirected both ways, the interface's MAC, address and gateway for the guest
/// (`isol_container::network::pod`, docs/devices.md "Network").
fn kvm_pod_network(path: &Path, state_root: PathBuf, id: &str) -> anyhow::Result<KvmNetwork> {
    let (launch, tap, pod) = super::pod_net::attach(path, state_root, id, net_without()?)?;
    Ok(KvmNetwork {
        launch,
        tap,
        _hold: KvmNetworkHold::Pod { _attachment: pod },
    })
}

/// Environment switch for measurements: `ISOL_NET_WITHOUT=event_idx` makes the VM's
/// network card not offer those virtio features (docs/benchmarks.md, "Network").
pub const NET_WITHOUT_ENV: &str = "ISOL_NET_WITHOUT";

fn net_without() -> anyhow::Result<u64> {
    let Some(v) = std::env::var_os(NET_WITHOUT_ENV) else {
        return Ok(0);
    };
    isol_devices::virtio::net::feature_mask(&v.to_string_lossy())
        .map_err(|e| anyhow::anyhow!("{NET_WITHOUT_ENV}: {e}"))
}

/// Environment switch: `ISOL_VMM_JAIL=off` runs the VMM without its jail (for debugging).
pub const JAIL_ENV: &str = "ISOL_VMM_JAIL";
/// The jail `isol-vmm` builds around the VM (src/jail.rs), unless `ISOL_VMM_JAIL=off`; only
/// root can build one (namespaces without a user namespace, cgroups, /dev/kvm as a node).
pub(super) fn vmm_jail(
    store: &isol_image::Store,
    launch: &isol_vmm::launch::Launch,
    id: &str,
) -> anyhow::Result<Option<isol_vmm::launch::LaunchJail>> {
    match std::env::var(JAIL_ENV).as_deref() {
        Ok("off") => return Ok(None),
        Ok("on") | Ok("") | Err(_) => {}
        Ok(other) => {
            bail!("{JAIL_ENV}={other} is not a setting: use {JAIL_ENV}=off (or leave it unset)")
        }
    }
    if !nix::unistd::geteuid().is_root() {
        tracing::debug!("not root: the VMM runs without its jail");
        return Ok(None);
    }
    Ok(Some(isol_vmm::launch::LaunchJail::new(
        id,
        store.root().join("vms"),
        isol_container::process::CGROUP_ROOT.into(),
        launch,
    )))
}

/// The launch with every host path absolute.
fn absolute_paths(l: isol_vmm::launch::Launch) -> anyhow::Result<isol_vmm::launch::Launch> {
    let abs = |p: PathBuf| {
        std::path::absolute(&p)
            .with_context(|| format!("Cannot make {} an absolute path", p.display()))
    };
    let mut disks = Vec::with_capacity(l.disks.len());
    for d in l.disks {
        disks.push(isol_vmm::launch::LaunchDisk {
            path: abs(d.path)?,
            ..d
        });
    }
    Ok(isol_vmm::launch::Launch {
        kernel: abs(l.kernel)?,
        root_disk: abs(l.root_disk)?,
        init: abs(l.init)?,
        boot_profiles: l.boot_profiles.map(abs).transpose()?,
        disks,
        ..l
    })
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_and_validate() {
        let v = parse_volume("/tmp:/data:ro").unwrap();
        assert!(v.read_only);
        assert_eq!(v.target, PathBuf::from("/data"));
        assert!(parse_volume("/tmp:data").is_err());
        assert!(
            parse_volume("/does/not/exist:/x")
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
        assert!(parse_volume("/tmp:/x:rx").is_err());
        for bad in [
            "/tmp:/",
            "/tmp://",
            "/tmp:/proc",
            "/tmp:/proc/sys",
            "/tmp://proc/",
            "/tmp:/a/../proc",
        ] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_volume("/tmp:/procfs").unwrap().target,
            PathBuf::from("/procfs")
        );
        assert_eq!(
            parse_volume("/tmp://data/").unwrap().target,
            PathBuf::from("/data")
        );
        assert!(parse_volume("/tmp").is_err());
    }

    #[test]
    fn env_and_hostnames_validate() {
        assert_eq!(parse_env("A=b c").unwrap(), OsString::from("A=b c"));
        assert!(parse_env("=x").is_err());
        assert!(validate_hostname("web-1.local").is_ok());
        assert!(validate_hostname("bad host").is_err());
        assert!(validate_hostname("-x").is_err());
    }
}
