//! An OCI bundle's `config.json` → isol's [`ContainerConfig`].
//!
//! Everything the config asks is either honoured or refused with an [`OciError::Unsupported`]
//! naming the field: nothing is silently ignored. Where isol is stricter than the config asks
//! (it always gives a cgroup namespace to a container of its own mount namespace, and its own seccomp filter), docs/oci.md says so.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use isol_container::cgroups::devices::{
    ACCESS_MKNOD, ACCESS_READ, ACCESS_WRITE, DeviceKind, DeviceRule,
};
use isol_container::{ContainerConfig, Limits, NetworkMode, Rlimit, Rootfs, SharedNamespace};
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Mount, Process, Spec};

use crate::error::OciError;

/// Reads and parses `<bundle>/config.json`.
pub fn load(bundle: &Path) -> Result<Spec, OciError> {
    let path = bundle.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| OciError::Bundle {
        what: format!("cannot read {}", path.display()),
        detail: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| OciError::Bundle {
        what: format!("{} is not a valid OCI runtime config", path.display()),
        detail: e.to_string(),
    })
}

/// The process `exec` starts in the container whose init is `init_pid`: `process` as the config
/// gives it (the same checks and refusals as the container's own process), under the seccomp
/// profile of the container's config, `container`.
pub fn to_exec(
    process: &Process,
    init_pid: i32,
    container: &Spec,
) -> Result<isol_container::exec::ExecSpec, OciError> {
    check_process(process)?;
    let user = process.user();
    let (args, env) = args_and_env(process)?;
    let caps = capabilities(process, user.uid())?;
    if caps.inheritable != 0 || caps.ambient != 0 {
        return Err(unsupported(
            "process.capabilities",
            "with inheritable or ambient capabilities is not supported by isol-runc exec yet",
        ));
    }
    let capabilities = caps.bounding;
    let linux = container.linux().clone().unwrap_or_default();
    Ok(isol_container::exec::ExecSpec {
        init_pid,
        args,
        env,
        cwd: process.cwd().clone(),
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        capabilities,
        rlimits: rlimits(process)?,
        seccomp: seccomp(&linux, capabilities)?,
        umask: user.umask(),
        oom_score_adj: oom_score_adj(process)?,
        terminal: (process.terminal() == Some(true)).then(|| {
            process
                .console_size()
                .map(|s| (s.height() as u16, s.width() as u16))
        }),
        preserve_fds: 0,
    })
}

/// The container configuration for `spec`, from the bundle at `bundle` (absolute).
pub fn to_config(id: &str, bundle: &Path, spec: &Spec) -> Result<ContainerConfig, OciError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| unsupported("root", "is missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !rootfs.is_dir() {
        return Err(OciError::Bundle {
            what: format!("the rootfs {} is not a directory", rootfs.display()),
            detail: "root.path must name the container's root filesystem".into(),
        });
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| unsupported("process", "is missing"))?;
    check_process(process)?;
    let (args, env) = args_and_env(process)?;
    let user = process.user();
    let groups = user.additional_gids().clone().unwrap_or_default();
    let caps = capabilities(process, user.uid())?;

    let linux = spec.linux().clone().unwrap_or_default();
    let Namespaces {
        network,
        join,
        host_mount,
        host_cgroup,
    } = namespaces(&linux)?;
    let user_namespace = user_namespace(&linux, &join)?;
    // As runc: names are set in a UTS namespace joined by path (every process there sees
    // them); the host's (the type absent from the list) is refused them.
    let uts_listed = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|ns| ns.typ() == LinuxNamespaceType::Uts);
    if !uts_listed {
        for (field, value) in [
            ("hostname", spec.hostname()),
            ("domainname", spec.domainname()),
        ] {
            if value.as_ref().is_some_and(|h| !h.is_empty()) {
                return Err(unsupported(
                    field,
                    "cannot be set in the host's uts namespace: add a uts namespace to linux.namespaces (a new one, or one joined by path)",
                ));
            }
        }
    }
    let (limits, devices) = resources(&linux)?;
    check_linux(&linux)?;
    let mounts = mounts(spec.mounts().as_deref().unwrap_or_default())?;
    let in_user_namespace =
        user_namespace.is_some() || join.iter().any(|(ns, _)| *ns == SharedNamespace::User);
    let device_nodes = device_nodes(&linux, in_user_namespace)?;
    let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => 0,
        Some(p) => propagation(p).ok_or_else(|| {
            unsupported(
                "linux.rootfsPropagation",
                &format!("{p:?} is not a propagation: give shared, slave, private or unbindable (r… for the whole tree)"),
            )
        })?,
    };
    if host_mount && rootfs_propagation != 0 {
        return Err(unsupported(
            "linux.rootfsPropagation",
            "is given without a mount namespace: it would change the propagation of the runtime's own mounts; add a mount namespace, or drop it",
        ));
    }

    Ok(ContainerConfig {
        id: id.to_string(),
        rootfs: Rootfs::Dir {
            path: rootfs,
            readonly: root.readonly().unwrap_or(false),
        },
        // Unused by a rootfs directory; where runs of `isol run` would keep their state.
        state_root: bundle.to_path_buf(),
        args,
        env,
        workdir: process.cwd().clone(),
        hostname: spec.hostname().clone().unwrap_or_default(),
        domainname: spec.domainname().clone().unwrap_or_default(),
        user: Some(format!("{}:{}", user.uid(), user.gid())),
        groups: Some(groups),
        limits,
        cgroup_path: Some(cgroup_path(id, &linux)?),
        hooks: hooks(spec, serde_json::Value::Null)?,
        rlimits: rlimits(process)?,
        privileges: isol_container::Privileges {
            capabilities: caps.bounding,
            inheritable: caps.inheritable,
            ambient: caps.ambient,
            // As runc: only when the config asks; without it the filter goes on while isol
            // still holds the capabilities to install it.
            no_new_privs: process.no_new_privileges() == Some(true),
            seccomp: seccomp(&linux, caps.bounding)?,
        },
        devices,
        device_nodes,
        rootfs_propagation,
        set_joined_hostname: true,
        network,
        publish: Vec::new(),
        etc_files: false,
        join,
        host_namespaces: isol_container::HostNamespaces {
            mount: host_mount,
            cgroup: host_cgroup,
            ..Default::default()
        },
        volumes: Vec::new(),
        mounts,
        // The stdio `create` was given is the workload's, stdin included; with a terminal, the
        // pty's slave (its master goes to the console socket).
        interactive: true,
        tty: process.terminal() == Some(true),
        preserve_fds: 0,
        rootless: false,
        user_namespace,
        timeout: None,
        umask: user.umask(),
        oom_score_adj: oom_score_adj(process)?,
        sysctl: sysctl(&linux, network)?,
        masked_paths: beyond(
            "linux.maskedPaths",
            linux.masked_paths(),
            isol_container::MASKED_PATHS,
        )?,
        readonly_paths: beyond(
            "linux.readonlyPaths",
            linux.readonly_paths(),
            &[isol_container::MASKED_PATHS, isol_container::READONLY_PATHS].concat(),
        )?,
    })
}

/// The paths of `asked` that isol does not mask or protect anyway (`have`): isol masks and
/// write-protects its own lists (runc's defaults) whatever the config says, so a config may
/// list fewer (isol stays stricter) and more (podman's `/sys/dev/block`).
fn beyond(
    field: &str,
    asked: &Option<Vec<String>>,
    have: &[&str],
) -> Result<Vec<PathBuf>, OciError> {
    let mut out = Vec::new();
    for p in asked.iter().flatten() {
        let path = Path::new(p);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(unsupported(
                field,
                &format!("lists {p:?}: give absolute paths without '..'"),
            ));
        }
        if !have.contains(&p.as_str()) {
            out.push(path.to_path_buf());
        }
    }
    Ok(out)
}

/// The container's seccomp filter: the config's `linux.seccomp`, compiled here so that a bad
/// profile fails `create`; without one, isol's own profile (docker's default), never none.
fn seccomp(
    linux: &oci_spec::runtime::Linux,
    capabilities: u64,
) -> Result<isol_container::security::seccomp::Seccomp, OciError> {
    use isol_container::security::seccomp::{self, Profile, Seccomp, profile::Context};
    let Some(config) = linux.seccomp() else {
        return Ok(Seccomp::Default);
    };
    let refuse = |e: &dyn std::fmt::Display| unsupported("linux.seccomp:", &e.to_string());
    let value = serde_json::to_value(config).map_err(|e| refuse(&e))?;
    let profile =
        Profile::from_value(value, &Context::host(capabilities)).map_err(|e| refuse(&e))?;
    seccomp::compile(&profile).map_err(|e| refuse(&e))?;
    Ok(Seccomp::Profile(std::sync::Arc::new(profile)))
}

/// `process.oomScoreAdj`, in the kernel's range.
fn oom_score_adj(process: &Process) -> Result<Option<i32>, OciError> {
    match process.oom_score_adj() {
        Some(v) if !(-1000..=1000).contains(&v) => Err(unsupported(
            "process.oomScoreAdj",
            &format!("{v} is out of range (-1000 to 1000)"),
        )),
        v => Ok(v),
    }
}

/// The sysctls of the container's own namespaces that runc allows: IPC (`kernel.msg*`,
/// `kernel.sem`, `kernel.shm*`, `fs.mqueue.*`; isol always gives a new or joined IPC namespace)
/// and, with a network namespace of the container's, `net.*`; sorted by name.
fn sysctl(
    linux: &oci_spec::runtime::Linux,
    network: NetworkMode,
) -> Result<Vec<(String, String)>, OciError> {
    const IPC: [&str; 8] = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let mut out: Vec<(String, String)> = linux
        .sysctl()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    out.sort();
    for (key, value) in &out {
        let well_formed = key.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
        if !well_formed || value.contains('\n') {
            return Err(unsupported(
                "linux.sysctl",
                &format!("{key:?} = {value:?} is not a sysctl name and value"),
            ));
        }
        if IPC.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
            continue;
        }
        if key.starts_with("net.") {
            if network == NetworkMode::Host {
                return Err(unsupported(
                    "linux.sysctl",
                    &format!(
                        "{key} is not allowed in the host's network namespace; give the container a network namespace"
                    ),
                ));
            }
            continue;
        }
        let why = match key.as_str() {
            "kernel.hostname" => "conflicts with the hostname field; set hostname instead",
            "kernel.domainname" => "conflicts with the domainname field; set domainname instead",
            _ => {
                "is not in a namespace of the container's own (runc allows kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.* and net.*)"
            }
        };
        return Err(unsupported("linux.sysctl", &format!("{key} {why}")));
    }
    Ok(out)
}

/// The process's argv (not empty) and environment.
fn args_and_env(process: &Process) -> Result<(Vec<OsString>, Vec<OsString>), OciError> {
    let args = process
        .args()
        .as_ref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| unsupported("process.args", "is empty"))?
        .iter()
        .map(OsString::from)
        .collect();
    let env = process
        .env()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(OsString::from)
        .collect();
    Ok((args, env))
}

fn unsupported(field: &str, why: &str) -> OciError {
    OciError::Unsupported(format!("{field} {why}"))
}

/// A field isol cannot honour yet, when the config sets it.
fn refuse_set<T>(field: &str, value: &Option<T>) -> Result<(), OciError> {
    match value {
        Some(_) => Err(unsupported(field, "is not supported by isol yet")),
        None => Ok(()),
    }
}

fn check_process(p: &Process) -> Result<(), OciError> {
    refuse_set("process.apparmorProfile", p.apparmor_profile())?;
    refuse_set("process.selinuxLabel", p.selinux_label())?;
    refuse_set("process.ioPriority", p.io_priority())?;
    refuse_set("process.scheduler", p.scheduler())?;
    refuse_set("process.execCPUAffinity", p.exec_cpu_affinity())?;
    refuse_set("process.user.username", p.user().username())?;
    for (name, id) in [("uid", p.user().uid()), ("gid", p.user().gid())] {
        if id > isol_container::MAX_ID {
            return Err(unsupported(
                &format!("process.user.{name}"),
                &format!("{id} is out of range (0-{})", isol_container::MAX_ID),
            ));
        }
    }
    if !p.cwd().is_absolute() {
        return Err(unsupported("process.cwd", "must be an absolute path"));
    }
    Ok(())
}

/// A process's capability sets: for root, bounding = permitted = effective; for a non-root user,
/// the bounding set only (it holds none permitted or effective: what docker sends for `--user`);
/// the inheritable and ambient sets as the config gives them (runc's `spec` writes both empty;
/// runtime-tools' generator and older clients fill them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Caps {
    bounding: u64,
    inheritable: u64,
    ambient: u64,
}

fn capabilities(p: &Process, uid: u32) -> Result<Caps, OciError> {
    let Some(c) = p.capabilities() else {
        return Ok(Caps::default());
    };
    let mask = |set: &Option<oci_spec::runtime::Capabilities>| -> Result<u64, OciError> {
        let mut m = 0u64;
        for cap in set.iter().flatten() {
            let name = serde_json::to_value(cap)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let cap: caps::Capability = name.parse().map_err(|_| {
                unsupported(
                    "process.capabilities",
                    &format!("names {name}, unknown to this host"),
                )
            })?;
            m |= cap.bitmask();
        }
        Ok(m)
    };
    let bounding = mask(c.bounding())?;
    let (permitted, effective) = (mask(c.permitted())?, mask(c.effective())?);
    let (inheritable, ambient) = (mask(c.inheritable())?, mask(c.ambient())?);
    // The kernel's rules (capset(2), PR_CAP_AMBIENT_RAISE), checked before anything is made.
    if inheritable & !bounding != 0 {
        return Err(unsupported(
            "process.capabilities",
            "inheritable names a capability outside bounding: the kernel refuses it; add it to bounding or remove it",
        ));
    }
    if ambient & !inheritable != 0 {
        return Err(unsupported(
            "process.capabilities",
            "ambient names a capability outside inheritable: the kernel refuses it; add it to inheritable or remove it",
        ));
    }
    if ambient & !permitted != 0 {
        return Err(unsupported(
            "process.capabilities",
            "ambient names a capability outside permitted: the kernel refuses it; add it to permitted or remove it",
        ));
    }
    // A non-root process holds, after its exec, only its ambient set (it has no file
    // capabilities): permitted and effective empty (docker's `--user`), or equal to ambient
    // (what runtime-tools' generator and runc's `spec` with all five sets send).
    if uid != 0
        && (permitted != 0 || effective != 0)
        && (permitted != ambient || effective != ambient)
    {
        return Err(unsupported(
            "process.capabilities",
            "with permitted or effective capabilities other than the ambient set for a \
             non-root process.user is not supported (after its exec a non-root process holds \
             only its ambient capabilities): make them equal to ambient, or empty",
        ));
    }
    if uid == 0 && (permitted != bounding || effective != bounding) {
        return Err(unsupported(
            "process.capabilities",
            "with bounding, permitted and effective sets that differ is not supported by isol yet",
        ));
    }
    Ok(Caps {
        bounding,
        inheritable,
        ambient,
    })
}

fn rlimits(p: &Process) -> Result<Vec<Rlimit>, OciError> {
    let mut out = Vec::new();
    for r in p.rlimits().iter().flatten() {
        let name = serde_json::to_value(r.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let resource = match name.as_str() {
            "RLIMIT_CPU" => libc::RLIMIT_CPU,
            "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
            "RLIMIT_DATA" => libc::RLIMIT_DATA,
            "RLIMIT_STACK" => libc::RLIMIT_STACK,
            "RLIMIT_CORE" => libc::RLIMIT_CORE,
            "RLIMIT_RSS" => libc::RLIMIT_RSS,
            "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
            "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
            "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
            "RLIMIT_AS" => libc::RLIMIT_AS,
            "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
            "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
            "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
            "RLIMIT_NICE" => libc::RLIMIT_NICE,
            "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
            "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
            _ => return Err(unsupported("process.rlimits", &format!("names {name:?}"))),
        };
        if r.soft() > r.hard() {
            return Err(unsupported(
                "process.rlimits",
                &format!("{name}: soft {} is above hard {}", r.soft(), r.hard()),
            ));
        }
        out.push(Rlimit {
            resource,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    Ok(out)
}

/// The namespaces of the container: a new mount namespace always, and a cgroup namespace; the
/// config chooses the network (a new one with loopback, or the host's), and a new, a joined
/// (by path, as a pod's containers join its sandbox's) or the runtime's own (a type absent
/// from the list, as runc) UTS, IPC and PID namespace.
fn namespaces(linux: &oci_spec::runtime::Linux) -> Result<Namespaces, OciError> {
    let list = linux.namespaces().clone().unwrap_or_default();
    let mut join = Vec::new();
    for ns in &list {
        let shared = match ns.typ() {
            LinuxNamespaceType::Network => Some(SharedNamespace::Net),
            LinuxNamespaceType::Ipc => Some(SharedNamespace::Ipc),
            LinuxNamespaceType::Uts => Some(SharedNamespace::Uts),
            LinuxNamespaceType::Pid => Some(SharedNamespace::Pid),
            LinuxNamespaceType::User if ns.path().is_some() => Some(SharedNamespace::User),
            LinuxNamespaceType::Mount => Some(SharedNamespace::Mount),
            LinuxNamespaceType::User => continue,
            LinuxNamespaceType::Time => {
                return Err(unsupported(
                    "linux.namespaces",
                    &format!(
                        "asks for a {} namespace, not supported by isol yet",
                        ns.typ()
                    ),
                ));
            }
            _ => None,
        };
        if let Some(path) = ns.path() {
            let Some(shared) = shared else {
                return Err(unsupported(
                    "linux.namespaces",
                    &format!(
                        "joins the {} namespace at {}: isol joins only user, mount, network, ipc, uts and pid namespaces",
                        ns.typ(),
                        path.display()
                    ),
                ));
            };
            if !path.exists() {
                return Err(OciError::Bundle {
                    what: format!(
                        "the {} namespace {} does not exist",
                        ns.typ(),
                        path.display()
                    ),
                    detail: "linux.namespaces names it by path".into(),
                });
            }
            join.push((shared, path.clone()));
        }
    }
    let has = |t: LinuxNamespaceType| list.iter().any(|ns| ns.typ() == t);
    let joins_user = join.iter().any(|(ns, _)| *ns == SharedNamespace::User);
    // No mount namespace: the runtime's, as runc (its mounts are made in the caller's
    // namespace, and the container chroots); a user namespace could not mount there.
    let host_mount = !has(LinuxNamespaceType::Mount);
    if host_mount && has(LinuxNamespaceType::User) {
        return Err(unsupported(
            "linux.namespaces",
            "has a user namespace and no mount namespace (the runtime's, where the container's root could not mount its rootfs): add a mount namespace",
        ));
    }
    // A type absent from the list: the runtime's own namespace, as runc stays in it. The
    // child joins it by the runtime's path (the clone made no new one).
    for (t, shared, name) in [
        (LinuxNamespaceType::Pid, SharedNamespace::Pid, "pid"),
        (LinuxNamespaceType::Ipc, SharedNamespace::Ipc, "ipc"),
        (LinuxNamespaceType::Uts, SharedNamespace::Uts, "uts"),
    ] {
        if !has(t) {
            if joins_user {
                // The runtime's own namespace belongs to the host's user namespace, which the
                // container's root holds no capability in (runc refuses to join it too).
                return Err(unsupported(
                    "linux.namespaces",
                    &format!(
                        "joins a user namespace and has no {name} namespace (the host's, which belongs to the host's user namespace): add a new one, or one joined by path"
                    ),
                ));
            }
            join.push((
                shared,
                PathBuf::from(format!("/proc/{}/ns/{name}", std::process::id())),
            ));
        }
    }
    let network = if has(LinuxNamespaceType::Network) {
        NetworkMode::None
    } else {
        NetworkMode::Host
    };
    Ok(Namespaces {
        network,
        join,
        host_mount,
        // isol adds a cgroup namespace to a container of its own mount namespace whatever the
        // list says; one in the runtime's mount namespace gets the runtime's, as runc (the
        // runtime-spec: a type absent from the list is the runtime's), unless it lists one.
        host_cgroup: host_mount && !has(LinuxNamespaceType::Cgroup),
    })
}

/// What `linux.namespaces` gives: see [`namespaces`].
struct Namespaces {
    network: NetworkMode,
    join: Vec<(SharedNamespace, PathBuf)>,
    /// No mount namespace: the runtime's ([`isol_container::HostNamespaces::mount`]).
    host_mount: bool,
    host_cgroup: bool,
}

/// The container's cgroup: `cgroupsPath` (absolute or not, always below each hierarchy's root),
/// or `isol/<id>` without one. systemd's `slice:prefix:name` form is refused.
fn cgroup_path(id: &str, linux: &oci_spec::runtime::Linux) -> Result<PathBuf, OciError> {
    let Some(path) = linux.cgroups_path() else {
        return Ok(Path::new(isol_container::cgroups::ISOL_DIR).join(id));
    };
    if path.to_string_lossy().contains(':') {
        return Err(unsupported(
            "linux.cgroupsPath",
            &format!(
                "{} is a systemd unit path: the systemd cgroup driver is not supported by isol yet",
                path.display()
            ),
        ));
    }
    isol_container::cgroups::check_path(path)
        .map(Path::to_path_buf)
        .map_err(|e| unsupported("linux.cgroupsPath", &e.to_string()))
}

fn resources(linux: &oci_spec::runtime::Linux) -> Result<(Limits, Vec<DeviceRule>), OciError> {
    let Some(r) = linux.resources() else {
        return Ok((
            Limits::default(),
            isol_container::cgroups::devices::DEFAULT_RULES.to_vec(),
        ));
    };
    let limits = limits(r)?;
    // As runc: the config's rules, then the devices every container has (isol creates their
    // nodes), whatever the rules before said (a config's usual first rule denies everything).
    let mut devices = r
        .devices()
        .iter()
        .flatten()
        .map(device_rule)
        .collect::<Result<Vec<_>, _>>()?;
    devices.extend_from_slice(isol_container::cgroups::devices::DEFAULT_RULES);
    Ok((limits, devices))
}

/// The limits `update --resources` sets: memory, CPU quota and pids, as at creation; the
/// device rules cannot change.
pub fn update_limits(r: &LinuxResources) -> Result<Limits, OciError> {
    if r.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(unsupported(
            "linux.resources.devices",
            "cannot be changed by update (isol sets a container's devices at its creation)",
        ));
    }
    if r.memory().and_then(|m| m.limit()).is_some_and(|l| l <= 0)
        || r.pids().is_some_and(|p| p.limit() <= 0)
    {
        return Err(unsupported(
            "linux.resources",
            "with an unlimited (-1 or 0) memory or pids limit is not supported by isol's update yet: give a number",
        ));
    }
    let limits = limits(r)?;
    if limits.is_empty() {
        return Err(OciError::Usage(
            "update changes nothing: give a memory limit, a CPU quota, period or shares, a pids limit, a cpuset, block IO or huge page limits".into(),
        ));
    }
    Ok(limits)
}

/// The memory, CPU and pids limits of `r`; what isol cannot set is refused by name.
fn limits(r: &LinuxResources) -> Result<Limits, OciError> {
    let mut limits = Limits::default();
    if let Some(b) = r.block_io() {
        limits.block_io = block_io(b)?;
    }
    refuse_set("linux.resources.network", r.network())?;
    refuse_set("linux.resources.rdma", r.rdma())?;
    refuse_set("linux.resources.unified", r.unified())?;
    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        let Ok(limit) = u64::try_from(h.limit()) else {
            return Err(unsupported(
                &format!("linux.resources.hugepageLimits[{i}].limit"),
                &format!("{} is negative: give a number of bytes", h.limit()),
            ));
        };
        limits
            .hugepages
            .push(isol_container::cgroups::blkio::HugepageLimit {
                page_size: h.page_size().clone(),
                limit,
            });
    }
    if let Some(m) = r.memory() {
        limits.memory = match m.limit() {
            Some(l) if l > 0 => Some(l as u64),
            _ => None,
        };
        // memory+swap: -1 (unlimited) or the same as the limit is isol's default, no swap; a
        // larger one (docker's `--memory` sends twice the limit) is set as given.
        limits.memory_swap = match (m.swap(), limits.memory) {
            (None | Some(-1), _) => None,
            (Some(s), Some(l)) if s as u64 == l => None,
            (Some(s), Some(l)) if s > 0 && s as u64 > l => Some(s as u64),
            (Some(s), _) => {
                return Err(unsupported(
                    "linux.resources.memory.swap",
                    &format!(
                        "{s} must be -1 or at least linux.resources.memory.limit (memory+swap)"
                    ),
                ));
            }
        };
        for (name, set) in [
            ("reservation", m.reservation().is_some_and(|v| v > 0)),
            ("kernel", m.kernel().is_some_and(|v| v > 0)),
            ("kernelTCP", m.kernel_tcp().is_some_and(|v| v > 0)),
            ("swappiness", m.swappiness().is_some()),
            ("disableOOMKiller", m.disable_oom_killer() == Some(true)),
        ] {
            if set {
                return Err(unsupported(
                    &format!("linux.resources.memory.{name}"),
                    "is not supported by isol yet",
                ));
            }
        }
    }
    if let Some(c) = r.cpu() {
        // The kernel's default period, 100 ms, is written with a quota anyway.
        limits.cpu_period = c
            .period()
            .filter(|p| *p != 0 && *p != isol_container::cgroups::CPU_PERIOD_US);
        let period = limits
            .cpu_period
            .unwrap_or(isol_container::cgroups::CPU_PERIOD_US);
        if let Some(quota) = c.quota().filter(|q| *q > 0) {
            limits.cpus = Some(quota as f64 / period as f64);
        }
        // 1024, the kernel's default weight, which containerd always sends, is what a new
        // cgroup has: nothing to write (on v1, not even the cpu hierarchy to join). CRI gives
        // a pod's sandbox 2.
        limits.cpu_shares = c.shares().filter(|s| *s > 0 && *s != 1024);
        // docker sends "" for a flag not given: unset.
        let list = |name: &'static str, field: &Option<String>| {
            field
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(|s| {
                    isol_container::cgroups::cpuset::CpuList::parse(name, s).map_err(|e| {
                        unsupported(&format!("linux.resources.{name}:"), &e.to_string())
                    })
                })
                .transpose()
        };
        limits.cpuset_cpus = list("cpu.cpus", c.cpus())?;
        limits.cpuset_mems = list("cpu.mems", c.mems())?;
        for (name, set) in [
            ("realtimeRuntime", c.realtime_runtime().is_some()),
            ("realtimePeriod", c.realtime_period().is_some()),
            ("idle", c.idle().is_some_and(|i| i != 0)),
            ("burst", c.burst().is_some_and(|b| b != 0)),
        ] {
            if set {
                return Err(unsupported(
                    &format!("linux.resources.cpu.{name}"),
                    "is not supported by isol yet",
                ));
            }
        }
    }
    if let Some(p) = r.pids()
        && p.limit() > 0
    {
        limits.pids = Some(p.limit() as u64);
    }
    Ok(limits)
}

/// `linux.resources.blockIO`: the weight, devices' weights and throttles. docker sends
/// `{"weight": 0}` for no `--blkio-weight`: zero means "not set" there, as for runc.
fn block_io(
    b: &oci_spec::runtime::LinuxBlockIo,
) -> Result<isol_container::cgroups::blkio::BlockIo, OciError> {
    use isol_container::cgroups::blkio::{BlockIo, DeviceRate, DeviceWeight};
    let field = |name: &str| format!("linux.resources.blockIO.{name}");
    let number = |name: &str, n: i64| {
        u64::try_from(n).map_err(|_| {
            unsupported(
                &field(name),
                &format!("has a negative device number {n}: give the device's major and minor"),
            )
        })
    };
    if b.leaf_weight().is_some_and(|w| w != 0) {
        return Err(unsupported(
            &field("leafWeight"),
            "is not supported by isol (the kernel dropped it with CFQ, Linux 5.0)",
        ));
    }
    let mut io = BlockIo {
        weight: b.weight().filter(|w| *w != 0),
        ..BlockIo::default()
    };
    for d in b.weight_device().iter().flatten() {
        if d.leaf_weight().is_some_and(|w| w != 0) {
            return Err(unsupported(
                &field("weightDevice[].leafWeight"),
                "is not supported by isol (the kernel dropped it with CFQ, Linux 5.0)",
            ));
        }
        if let Some(weight) = d.weight().filter(|w| *w != 0) {
            io.weight_device.push(DeviceWeight {
                major: number("weightDevice", d.major())?,
                minor: number("weightDevice", d.minor())?,
                weight,
            });
        }
    }
    for (name, list, to) in [
        (
            "throttleReadBpsDevice",
            b.throttle_read_bps_device(),
            &mut io.read_bps,
        ),
        (
            "throttleWriteBpsDevice",
            b.throttle_write_bps_device(),
            &mut io.write_bps,
        ),
        (
            "throttleReadIOPSDevice",
            b.throttle_read_iops_device(),
            &mut io.read_iops,
        ),
        (
            "throttleWriteIOPSDevice",
            b.throttle_write_iops_device(),
            &mut io.write_iops,
        ),
    ] {
        for d in list.iter().flatten() {
            to.push(DeviceRate {
                major: number(name, d.major())?,
                minor: number(name, d.minor())?,
                rate: d.rate(),
            });
        }
    }
    Ok(io)
}

fn device_rule(d: &oci_spec::runtime::LinuxDeviceCgroup) -> Result<DeviceRule, OciError> {
    use oci_spec::runtime::LinuxDeviceType;
    let kind = match d.typ() {
        None | Some(LinuxDeviceType::A) => DeviceKind::All,
        Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => DeviceKind::Char,
        Some(LinuxDeviceType::B) => DeviceKind::Block,
        Some(t) => {
            return Err(unsupported(
                "linux.resources.devices",
                &format!("has a rule of type {t:?}, which no cgroup can hold"),
            ));
        }
    };
    let num = |n: Option<i64>| -> Result<Option<u32>, OciError> {
        match n {
            None | Some(-1) => Ok(None),
            Some(n) => u32::try_from(n).map(Some).map_err(|_| {
                unsupported(
                    "linux.resources.devices",
                    &format!("has a device number {n} out of range"),
                )
            }),
        }
    };
    let mut access = 0;
    for c in d.access().as_deref().unwrap_or("rwm").chars() {
        access |= match c {
            'r' => ACCESS_READ,
            'w' => ACCESS_WRITE,
            'm' => ACCESS_MKNOD,
            _ => {
                return Err(unsupported(
                    "linux.resources.devices",
                    &format!("has an access {c:?}: only r, w and m exist"),
                ));
            }
        };
    }
    Ok(DeviceRule {
        allow: d.allow(),
        kind,
        major: num(d.major())?,
        minor: num(d.minor())?,
        access,
    })
}

/// The device nodes isol creates in every container's /dev.
const DEFAULT_NODES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// A new user namespace (`linux.namespaces` has type `user`), with the config's
/// `uidMappings` and `gidMappings`. As runc, isol chowns nothing: a rootfs directory the
/// mapped root (the host uid container uid 0 maps to) does not own is read-only to it.
fn user_namespace(
    linux: &oci_spec::runtime::Linux,
    join: &[(SharedNamespace, PathBuf)],
) -> Result<Option<isol_container::UserNamespace>, OciError> {
    let new = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|ns| ns.typ() == LinuxNamespaceType::User);
    let map = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        m.iter()
            .flatten()
            .map(|m| isol_container::IdMapping {
                inside: m.container_id(),
                outside: m.host_id(),
                count: m.size(),
            })
            .collect::<Vec<_>>()
    };
    let (uid_map, gid_map) = (map(linux.uid_mappings()), map(linux.gid_mappings()));
    if join.iter().any(|(ns, _)| *ns == SharedNamespace::User) {
        // As runc: the joined namespace's maps are its maker's, written once for good.
        if !uid_map.is_empty() || !gid_map.is_empty() {
            return Err(unsupported(
                "linux.uidMappings and gidMappings",
                "are given with a user namespace joined by path, whose maps are already written: drop them, or drop the path for a new user namespace",
            ));
        }
        return Ok(None);
    }
    if !new {
        if !uid_map.is_empty() || !gid_map.is_empty() {
            return Err(unsupported(
                "linux.uidMappings and gidMappings",
                "are given without a user namespace: add {\"type\": \"user\"} to linux.namespaces, or drop them",
            ));
        }
        return Ok(None);
    }
    if uid_map.is_empty() || gid_map.is_empty() {
        return Err(unsupported(
            "linux.namespaces",
            "asks for a user namespace without linux.uidMappings and gidMappings: give both (isol maps no ids by itself)",
        ));
    }
    if !join.is_empty() {
        return Err(unsupported(
            "linux.namespaces",
            "asks for a user namespace and shares or joins a pid, ipc, uts or network namespace, which belongs to another user namespace: give the container new ones of each",
        ));
    }
    let ns = isol_container::UserNamespace { uid_map, gid_map };
    // The rootfs is used as it is, as runc does (isol chowns nothing of a bundle): where the
    // mapped root does not own it, the container's root reads it but cannot write to it.
    if ns.host_root_uid().is_none() {
        return Err(unsupported(
            "linux.uidMappings",
            "do not map the container's uid 0: map it to the host uid that owns the rootfs",
        ));
    }
    Ok(Some(ns))
}

fn check_linux(linux: &oci_spec::runtime::Linux) -> Result<(), OciError> {
    refuse_set("linux.intelRdt", linux.intel_rdt())?;
    refuse_set("linux.memoryPolicy", linux.memory_policy())?;
    refuse_set("linux.personality", linux.personality())?;
    refuse_set("linux.timeOffsets", linux.time_offsets())?;
    refuse_set("linux.netDevices", linux.net_devices())?;
    refuse_set("linux.mountLabel", linux.mount_label())?;
    Ok(())
}

/// A propagation's mount(2) flags: `shared`, `slave`, `private`, `unbindable`, and their `r…`
/// (recursive) forms.
fn propagation(name: &str) -> Option<u64> {
    let (rec, base) = match name.strip_prefix('r') {
        Some(base) => (libc::MS_REC, base),
        None => (0, name),
    };
    let flag = match base {
        "shared" => libc::MS_SHARED,
        "slave" => libc::MS_SLAVE,
        "private" => libc::MS_PRIVATE,
        "unbindable" => libc::MS_UNBINDABLE,
        _ => return None,
    };
    Some(flag | rec)
}

/// The config's `linux.devices` beyond the nodes isol makes anyway: made below /dev with their
/// mode (runc's default 0666) and owner (root by default).
fn device_nodes(
    linux: &oci_spec::runtime::Linux,
    user_namespace: bool,
) -> Result<Vec<isol_container::DeviceNode>, OciError> {
    use isol_container::DeviceNodeKind;
    use oci_spec::runtime::LinuxDeviceType;
    let mut out: Vec<isol_container::DeviceNode> = Vec::new();
    for d in linux.devices().iter().flatten() {
        let path = d.path();
        if DEFAULT_NODES.iter().any(|n| path == Path::new(n)) {
            continue;
        }
        let name = path.display();
        let refuse = |why: &str| Err(unsupported("linux.devices", &format!("{name}: {why}")));
        if !path.starts_with("/dev/")
            || path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            return refuse(
                "isol makes device nodes only below /dev (give an absolute path there, without '..')",
            );
        }
        if out.iter().any(|n| n.path == *path) {
            return refuse("is listed twice");
        }
        if user_namespace {
            return refuse(
                "a container with a user namespace cannot make device nodes, and isol does not bind the host's yet",
            );
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceNodeKind::Char,
            LinuxDeviceType::B => DeviceNodeKind::Block,
            LinuxDeviceType::P => DeviceNodeKind::Fifo,
            t => {
                return refuse(&format!(
                    "type {t:?} is not a device node: give c, u, b or p"
                ));
            }
        };
        let number = |n: i64| {
            u32::try_from(n).map(u64::from).map_err(|_| {
                unsupported(
                    "linux.devices",
                    &format!("{name}: device number {n} is out of range"),
                )
            })
        };
        let mode = d.file_mode().unwrap_or(0o666);
        if mode & !0o7777 != 0 {
            return refuse(&format!(
                "fileMode {mode:#o} has bits beyond the permissions (0o7777)"
            ));
        }
        out.push(isol_container::DeviceNode {
            path: path.clone(),
            kind,
            major: number(d.major())?,
            minor: number(d.minor())?,
            mode,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    Ok(out)
}

/// The config's hooks, checked (an absolute path, a positive timeout), as the runtime runs
/// them; `state` is the state JSON they read, without its status and pid.
pub fn hooks(
    spec: &Spec,
    state: serde_json::Value,
) -> Result<isol_container::hooks::Hooks, OciError> {
    let Some(h) = spec.hooks() else {
        return Ok(isol_container::hooks::Hooks::default());
    };
    // The runtime runs these itself, from the state (checked here, with the others).
    hook_list("hooks.poststart", h.poststart())?;
    hook_list("hooks.poststop", h.poststop())?;
    Ok(isol_container::hooks::Hooks {
        prestart: hook_list("hooks.prestart", h.prestart())?,
        create_runtime: hook_list("hooks.createRuntime", h.create_runtime())?,
        create_container: hook_list("hooks.createContainer", h.create_container())?,
        start_container: hook_list("hooks.startContainer", h.start_container())?,
        state,
    })
}

/// One list of hooks, checked.
pub fn hook_list(
    field: &str,
    list: &Option<Vec<oci_spec::runtime::Hook>>,
) -> Result<Vec<isol_container::hooks::Hook>, OciError> {
    list.iter()
        .flatten()
        .map(|h| {
            if !h.path().is_absolute() {
                return Err(unsupported(
                    field,
                    &format!("has the path {}: it must be absolute", h.path().display()),
                ));
            }
            let timeout = match h.timeout() {
                None => None,
                Some(t) if t > 0 => Some(std::time::Duration::from_secs(t as u64)),
                Some(t) => {
                    return Err(unsupported(
                        field,
                        &format!("has the timeout {t}: it must be a positive number of seconds"),
                    ));
                }
            };
            Ok(isol_container::hooks::Hook {
                path: h.path().clone(),
                args: h.args().clone().unwrap_or_default(),
                env: h.env().clone().unwrap_or_default(),
                timeout,
            })
        })
        .collect()
}

/// The mounts every isol container gets anyway, as (destination, type).
const PROVIDED: &[(&str, &[&str])] = &[
    ("/proc", &["proc"]),
    ("/dev", &["tmpfs"]),
    ("/dev/pts", &["devpts"]),
    ("/dev/shm", &["tmpfs", "shm"]),
    ("/dev/mqueue", &["mqueue"]),
    ("/sys", &["sysfs"]),
    ("/sys/fs/cgroup", &["cgroup", "cgroup2"]),
];

/// The config's mounts: those isol makes in every container are accepted as they are; the
/// others (binds, tmpfs…) are made in order, with their options; a propagation other than
/// private is refused.
fn mounts(list: &[Mount]) -> Result<Vec<isol_container::Mount>, OciError> {
    let mut out = Vec::new();
    for m in list {
        let dest = m.destination();
        if !dest.is_absolute() {
            return Err(unsupported(
                "mounts",
                &format!("destination {} must be absolute", dest.display()),
            ));
        }
        let typ = m.typ().as_deref().unwrap_or("");
        let options = m.options().clone().unwrap_or_default();
        let is_bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        if !is_bind
            && PROVIDED
                .iter()
                .any(|(d, types)| dest == Path::new(d) && types.contains(&typ))
        {
            continue;
        }
        let source: PathBuf = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
        let (flags, data, propagation) = mount_options(dest, &options)?;
        if is_bind && !source.exists() {
            return Err(OciError::Bundle {
                what: format!("the bind mount source {} does not exist", source.display()),
                detail: format!("mount at {}", dest.display()),
            });
        }
        if !is_bind && typ.is_empty() {
            return Err(unsupported(
                "mounts",
                &format!("{}: a mount needs a type", dest.display()),
            ));
        }
        out.push(isol_container::Mount {
            fstype: (!is_bind).then(|| typ.to_string()),
            source,
            target: dest.clone(),
            flags,
            data,
            propagation,
        });
    }
    Ok(out)
}

/// A mount's options as mount(2) flags, the filesystem's own data and its propagation (set once
/// it is mounted, the last one given), as runc reads them.
fn mount_options(dest: &Path, options: &[String]) -> Result<(u64, String, u64), OciError> {
    let mut flags: u64 = 0;
    let mut data = Vec::new();
    let mut propagated = 0;
    for o in options {
        if let Some(p) = propagation(o) {
            propagated = p;
            continue;
        }
        let (set, clear): (u64, u64) = match o.as_str() {
            "bind" => (libc::MS_BIND, 0),
            "rbind" => (libc::MS_BIND | libc::MS_REC, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            "noatime" => (libc::MS_NOATIME, 0),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, 0),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, 0),
            "nostrictatime" => (0, libc::MS_STRICTATIME),
            // The filesystem's own options (size=, mode=, newinstance…) go to it as they are.
            other if other.contains('=') || !other.chars().all(|c| c.is_ascii_lowercase()) => {
                data.push(other.to_string());
                (0, 0)
            }
            other => {
                return Err(unsupported(
                    "mounts",
                    &format!(
                        "{}: option {other:?} is not supported by isol yet",
                        dest.display()
                    ),
                ));
            }
        };
        flags = (flags | set) & !clear;
    }
    Ok((flags, data.join(","), propagated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(edit: impl FnOnce(&mut serde_json::Value)) -> Spec {
        let mut v = serde_json::to_value(crate::commands::default_spec()).unwrap();
        edit(&mut v);
        serde_json::from_value(v).unwrap()
    }

    fn convert(spec: &Spec) -> Result<ContainerConfig, OciError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        to_config("c1", dir.path(), spec)
    }

    #[test]
    fn the_default_spec_converts() {
        let cfg = convert(&spec_with(|_| {})).unwrap();
        assert!(matches!(cfg.rootfs, Rootfs::Dir { readonly: true, .. }));
        assert_eq!(cfg.network, NetworkMode::None);
        assert_eq!(cfg.user.as_deref(), Some("0:0"));
        assert_eq!(cfg.rlimits.len(), 1);
        assert_eq!(cfg.cgroup_path.as_deref(), Some(Path::new("isol/c1")));
        let cfg = convert(&spec_with(|v| {
            v["linux"]["cgroupsPath"] = "/default/c1".into()
        }))
        .unwrap();
        assert_eq!(cfg.cgroup_path.as_deref(), Some(Path::new("default/c1")));
        let cfg = convert(&spec_with(|v| v["process"]["terminal"] = true.into())).unwrap();
        assert!(cfg.tty);
    }

    #[test]
    fn seccomp_umask_oom_score_and_sysctls_convert() {
        use isol_container::security::seccomp::{Action, Seccomp};
        let cfg = convert(&spec_with(|_| {})).unwrap();
        assert_eq!(cfg.privileges.seccomp, Seccomp::Default);
        assert_eq!((cfg.umask, cfg.oom_score_adj), (None, None));
        let cfg = convert(&spec_with(|v| {
            v["linux"]["seccomp"] = serde_json::json!({
                "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": [{"names": ["read", "newer_than_any_kernel"], "action": "SCMP_ACT_ALLOW"},
                             {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13,
                              "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}]
            });
            v["process"]["user"]["umask"] = 0o077.into();
            v["process"]["oomScoreAdj"] = 500.into();
            v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "65536"});
        }))
        .unwrap();
        let Seccomp::Profile(p) = &cfg.privileges.seccomp else {
            panic!("{:?}", cfg.privileges.seccomp)
        };
        assert_eq!(p.default_action, Action::Errno(38));
        assert!(p.i386);
        assert_eq!(p.rules[1].action, Action::Errno(13));
        assert_eq!(cfg.umask, Some(0o077));
        assert_eq!(cfg.oom_score_adj, Some(500));
        assert_eq!(
            cfg.sysctl,
            [
                ("kernel.shmmax".to_string(), "65536".to_string()),
                ("net.ipv4.ip_forward".to_string(), "1".to_string())
            ]
        );
        // net.* only with a network namespace of the container's.
        let e = convert(&spec_with(|v| {
            v["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "network");
            v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        }))
        .unwrap_err()
        .to_string();
        assert!(e.contains("host's network namespace"), "{e}");
    }

    #[test]
    fn inheritable_and_ambient_capabilities_convert_within_the_kernels_rules() {
        let with = |inh: &[&str], amb: &[&str]| {
            convert(&spec_with(|v| {
                v["process"]["capabilities"]["inheritable"] = serde_json::json!(inh);
                v["process"]["capabilities"]["ambient"] = serde_json::json!(amb);
            }))
        };
        let cfg = with(&["CAP_KILL", "CAP_NET_BIND_SERVICE"], &["CAP_KILL"]).unwrap();
        assert_eq!(cfg.privileges.capabilities, 0x2000_0420);
        assert_eq!(cfg.privileges.inheritable, 0x420);
        assert_eq!(cfg.privileges.ambient, 0x20);
        let e = with(&["CAP_SYS_ADMIN"], &[]).unwrap_err().to_string();
        assert!(
            e.contains("inheritable names a capability outside bounding"),
            "{e}"
        );
        let e = with(&["CAP_KILL"], &["CAP_NET_BIND_SERVICE"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ambient names a capability outside inheritable"),
            "{e}"
        );
    }

    #[test]
    fn user_namespaces_need_their_mappings_and_new_namespaces() {
        let refused = |edit: fn(&mut serde_json::Value), want: &str| {
            let e = convert(&spec_with(edit)).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        fn add_user(v: &mut serde_json::Value) {
            let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
            ns.push(serde_json::json!({"type": "user"}));
        }
        refused(
            |v| {
                v["linux"]["uidMappings"] =
                    serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 10}]);
            },
            "without a user namespace",
        );
        refused(add_user, "without linux.uidMappings and gidMappings");
        refused(
            |v| {
                add_user(v);
                let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
                ns.last_mut().unwrap()["path"] = "/proc/self/ns/user".into();
                let map = serde_json::json!([{"containerID": 0, "hostID": 0, "size": 1}]);
                v["linux"]["uidMappings"] = map.clone();
                v["linux"]["gidMappings"] = map;
            },
            "are given with a user namespace joined by path",
        );
        refused(
            |v| {
                add_user(v);
                let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
                ns.last_mut().unwrap()["path"] = "/proc/self/ns/user".into();
                ns.retain(|n| n["type"] != "uts");
            },
            "joins a user namespace and has no uts namespace",
        );
        // Joined without maps: accepted, the other namespaces new ones born in it.
        let cfg = convert(&spec_with(|v| {
            add_user(v);
            let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
            ns.last_mut().unwrap()["path"] = "/proc/self/ns/user".into();
        }))
        .unwrap();
        assert!(cfg.user_namespace.is_none());
        assert_eq!(
            cfg.join,
            vec![(SharedNamespace::User, PathBuf::from("/proc/self/ns/user"))]
        );
        refused(
            |v| {
                add_user(v);
                let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 10}]);
                v["linux"]["uidMappings"] = map.clone();
                v["linux"]["gidMappings"] = map;
                let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
                ns.retain(|n| n["type"] != "pid");
            },
            "belongs to another user namespace",
        );
    }

    #[test]
    fn a_mount_namespace_is_joined_by_path_or_the_runtimes_without_one() {
        let cfg = convert(&spec_with(|v| {
            let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
            let mnt = ns.iter_mut().find(|n| n["type"] == "mount").unwrap();
            mnt["path"] = "/proc/self/ns/mnt".into();
        }))
        .unwrap();
        assert!(
            cfg.join
                .contains(&(SharedNamespace::Mount, PathBuf::from("/proc/self/ns/mnt")))
        );
        assert!(!cfg.host_namespaces.mount && !cfg.host_namespaces.cgroup);
        // No mount namespace: the runtime's, and its cgroup namespace unless one is listed.
        let cfg = convert(&spec_with(|v| {
            let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "mount" && n["type"] != "cgroup");
        }))
        .unwrap();
        assert!(cfg.host_namespaces.mount && cfg.host_namespaces.cgroup);
        let cfg = convert(&spec_with(|v| {
            let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
            ns.retain(|n| n["type"] != "mount");
            ns.push(serde_json::json!({"type": "cgroup"}));
        }))
        .unwrap();
        assert!(cfg.host_namespaces.mount && !cfg.host_namespaces.cgroup);
    }

    #[test]
    fn what_isol_cannot_honour_is_refused_by_name() {
        let refused = |edit: fn(&mut serde_json::Value), field: &str| {
            let e = convert(&spec_with(edit)).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        };
        refused(
            |v| {
                let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
                ns.retain(|n| n["type"] != "mount");
                v["linux"]["rootfsPropagation"] = "rshared".into();
            },
            "linux.rootfsPropagation is given without a mount namespace",
        );
        refused(
            |v| {
                let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
                ns.retain(|n| n["type"] != "mount");
                ns.push(serde_json::json!({"type": "user", "path": "/proc/self/ns/user"}));
            },
            "has a user namespace and no mount namespace",
        );
        refused(
            |v| {
                let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
                ns.retain(|n| n["type"] != "uts");
                v["domainname"] = "example.org".into();
                v["hostname"] = serde_json::Value::Null;
            },
            "domainname cannot be set",
        );
        refused(
            |v| v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_NOTIFY"}),
            "linux.seccomp: Invalid seccomp profile: defaultAction SCMP_ACT_NOTIFY",
        );
        refused(
            |v| v["linux"]["sysctl"] = serde_json::json!({"kernel.pid_max": "100000"}),
            "linux.sysctl kernel.pid_max is not in a namespace",
        );
        refused(
            |v| v["linux"]["sysctl"] = serde_json::json!({"kernel.hostname": "x"}),
            "linux.sysctl kernel.hostname conflicts",
        );
        refused(
            |v| v["process"]["oomScoreAdj"] = 1001.into(),
            "process.oomScoreAdj 1001 is out of range",
        );
        refused(
            |v| v["linux"]["rootfsPropagation"] = "rsharedd".into(),
            "linux.rootfsPropagation \"rsharedd\" is not a propagation",
        );
        refused(
            |v| {
                v["linux"]["devices"] = serde_json::json!([{"path": "/tmp/fuse", "type": "c", "major": 10, "minor": 229}])
            },
            "linux.devices /tmp/fuse: isol makes device nodes only below /dev",
        );
        refused(
            |v| {
                v["linux"]["devices"] = serde_json::json!([{"path": "/dev/../etc/x", "type": "c", "major": 1, "minor": 3}])
            },
            "without '..'",
        );
        refused(
            |v| {
                v["linux"]["devices"] = serde_json::json!([{"path": "/dev/fuse", "type": "c",
                    "major": 10, "minor": 229, "fileMode": 0o10666}])
            },
            "fileMode 0o10666 has bits beyond",
        );
        refused(
            |v| {
                let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
                ns.retain(|n| n["type"] != "uts");
            },
            "hostname cannot be set in the host's uts namespace",
        );
        refused(
            |v| v["linux"]["cgroupsPath"] = "system.slice:isol:c1".into(),
            "linux.cgroupsPath",
        );
        refused(
            |v| v["linux"]["cgroupsPath"] = "/a/../../etc".into(),
            "linux.cgroupsPath",
        );
        refused(
            |v| v["hooks"] = serde_json::json!({"poststart": [{"path": "bin/true"}]}),
            "hooks.poststart has the path bin/true: it must be absolute",
        );
        refused(
            |v| {
                v["hooks"] =
                    serde_json::json!({"createRuntime": [{"path": "/bin/true", "timeout": 0}]})
            },
            "hooks.createRuntime has the timeout 0",
        );
        refused(
            |v| v["linux"]["resources"]["blockIO"] = serde_json::json!({"leafWeight": 500}),
            "linux.resources.blockIO.leafWeight",
        );
        refused(
            |v| {
                v["linux"]["resources"]["hugepageLimits"] =
                    serde_json::json!([{"pageSize": "2MB", "limit": -1}])
            },
            "hugepageLimits[0].limit",
        );
    }

    #[test]
    fn block_io_and_huge_pages_become_limits() {
        use isol_container::cgroups::blkio::{DeviceRate, DeviceWeight, HugepageLimit};
        let cfg = convert(&spec_with(|v| {
            v["linux"]["resources"] = serde_json::json!({
                "blockIO": {
                    "weight": 300,
                    "weightDevice": [{"major": 8, "minor": 0, "weight": 200}],
                    "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                    "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 50}]
                },
                "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]
            });
        }))
        .unwrap();
        let io = &cfg.limits.block_io;
        assert_eq!(io.weight, Some(300));
        assert_eq!(
            io.weight_device,
            [DeviceWeight {
                major: 8,
                minor: 0,
                weight: 200
            }]
        );
        assert_eq!(
            io.read_bps,
            [DeviceRate {
                major: 8,
                minor: 0,
                rate: 1048576
            }]
        );
        assert_eq!(io.write_iops[0].rate, 50);
        assert!(io.write_bps.is_empty() && io.read_iops.is_empty());
        assert_eq!(
            cfg.limits.hugepages,
            [HugepageLimit {
                page_size: "2MB".into(),
                limit: 4194304
            }]
        );
    }

    #[test]
    fn mounts_beyond_isols_own_are_made_with_their_options() {
        let cfg = convert(&spec_with(|v| {
            let m = v["mounts"].as_array_mut().unwrap();
            m.push(
                serde_json::json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            );
            m.push(
                serde_json::json!({"destination": "/data", "type": "bind", "source": "/tmp",
                "options": ["rbind", "ro", "nodev"]}),
            );
        }))
        .unwrap();
        assert_eq!(cfg.mounts.len(), 2, "{:?}", cfg.mounts);
        let run = &cfg.mounts[0];
        assert_eq!(run.fstype.as_deref(), Some("tmpfs"));
        assert_eq!(run.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(run.data, "mode=755,size=65536k");
        let data = &cfg.mounts[1];
        assert_eq!(data.fstype, None);
        assert_eq!(
            data.flags,
            libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY | libc::MS_NODEV
        );
    }

    #[test]
    fn devices_propagation_and_a_joined_hostname_convert() {
        let cfg = convert(&spec_with(|v| {
            v["linux"]["devices"] = serde_json::json!([
                {"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229},
                {"path": "/dev/sda", "type": "b", "major": 8, "minor": 0, "fileMode": 0o640,
                 "uid": 1000, "gid": 6},
                {"path": "/dev/pipes/p0", "type": "p", "major": 0, "minor": 0}
            ]);
            v["linux"]["rootfsPropagation"] = "rslave".into();
            v["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                {"destination": "/mnt", "type": "bind", "source": "/tmp",
                 "options": ["rbind", "rshared", "ro"]}
            ));
            let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
            let uts = ns.iter_mut().find(|n| n["type"] == "uts").unwrap();
            uts["path"] = "/proc/self/ns/uts".into();
        }))
        .unwrap();
        use isol_container::{DeviceNode, DeviceNodeKind};
        assert_eq!(
            cfg.device_nodes,
            [
                DeviceNode {
                    path: "/dev/fuse".into(),
                    kind: DeviceNodeKind::Char,
                    major: 10,
                    minor: 229,
                    mode: 0o666,
                    uid: 0,
                    gid: 0
                },
                DeviceNode {
                    path: "/dev/sda".into(),
                    kind: DeviceNodeKind::Block,
                    major: 8,
                    minor: 0,
                    mode: 0o640,
                    uid: 1000,
                    gid: 6
                },
                DeviceNode {
                    path: "/dev/pipes/p0".into(),
                    kind: DeviceNodeKind::Fifo,
                    major: 0,
                    minor: 0,
                    mode: 0o666,
                    uid: 0,
                    gid: 0
                },
            ]
        );
        assert_eq!(cfg.rootfs_propagation, libc::MS_SLAVE | libc::MS_REC);
        let mnt = cfg.mounts.last().unwrap();
        assert_eq!(mnt.propagation, libc::MS_SHARED | libc::MS_REC);
        assert_eq!(mnt.flags, libc::MS_BIND | libc::MS_REC | libc::MS_RDONLY);
        // runc's spec has a hostname: set in the joined namespace.
        assert!(cfg.set_joined_hostname && !cfg.hostname.is_empty());
        assert_eq!(propagation("unbindable"), Some(libc::MS_UNBINDABLE));
        assert_eq!(
            propagation("rprivate"),
            Some(libc::MS_PRIVATE | libc::MS_REC)
        );
        assert_eq!(propagation("ro"), None);
    }

    /// What docker 20.10 sends for "nothing asked" is accepted.
    #[test]
    fn dockers_unset_resources_are_accepted() {
        convert(&spec_with(|v| {
            v["linux"]["resources"] = serde_json::json!({
                "memory": {"disableOOMKiller": false}, "cpu": {"shares": 0}, "blockIO": {"weight": 0}
            });
        }))
        .unwrap();
    }

    #[test]
    fn resources_become_limits_and_device_rules() {
        let cfg = convert(&spec_with(|v| {
            v["linux"]["resources"] = serde_json::json!({
                "memory": {"limit": 67108864},
                "cpu": {"quota": 50000, "period": 100000, "shares": 1024},
                "pids": {"limit": 64},
                "devices": [{"allow": false, "access": "rwm"},
                            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}]
            });
        }))
        .unwrap();
        assert_eq!(cfg.limits.memory, Some(64 << 20));
        assert_eq!(cfg.limits.cpus, Some(0.5));
        assert_eq!(cfg.limits.pids, Some(64));
        // containerd's 1024 is the kernel's default: nothing to write.
        assert_eq!(cfg.limits.cpu_shares, None);
        let pod = convert(&spec_with(|v| {
            v["linux"]["resources"] = serde_json::json!({"cpu": {"shares": 2}});
        }))
        .unwrap();
        assert_eq!(pod.limits.cpu_shares, Some(2));
        // docker's --cpuset-cpus and CRI's cpuset_cpus: in the kernel's canonical form.
        let pinned = convert(&spec_with(|v| {
            v["linux"]["resources"] = serde_json::json!({"cpu": {"cpus": "1,0", "mems": "0"}});
        }))
        .unwrap();
        assert_eq!(
            pinned.limits.cpuset_cpus.map(|l| l.to_string()).as_deref(),
            Some("0-1")
        );
        assert_eq!(
            pinned.limits.cpuset_mems.map(|l| l.to_string()).as_deref(),
            Some("0")
        );
        // docker sends "" for no --cpuset-cpus.
        let unset = convert(&spec_with(|v| {
            v["linux"]["resources"] = serde_json::json!({"cpu": {"cpus": "", "mems": ""}});
        }))
        .unwrap();
        assert_eq!(
            (unset.limits.cpuset_cpus, unset.limits.cpuset_mems),
            (None, None)
        );
        let e = convert(&spec_with(|v| {
            v["linux"]["resources"] = serde_json::json!({"cpu": {"cpus": "3-1"}});
        }))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("linux.resources.cpu.cpus: Invalid cpu.cpus limit"),
            "{e}"
        );
        let defaults = isol_container::cgroups::devices::DEFAULT_RULES;
        assert_eq!(cfg.devices.len(), 2 + defaults.len());
        assert_eq!(&cfg.devices[2..], defaults);
        assert!(!cfg.devices[0].allow);
        assert_eq!(cfg.devices[1].access, ACCESS_READ | ACCESS_WRITE);
    }
}
