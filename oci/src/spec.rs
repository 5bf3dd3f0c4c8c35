//! An OCI bundle's `config.json` → isol's [`ContainerConfig`].
//!
//! Everything the config asks is either honoured or refused with an [`OciError::Unsupported`]
//! naming the field: nothing is silently ignored. Where isol is stricter than the config asks
//! (it always gives a cgroup namespace and its own seccomp filter), docs/oci.md says so.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use isol_container::cgroups::devices::{
    ACCESS_MKNOD, ACCESS_READ, ACCESS_WRITE, DeviceKind, DeviceRule,
};
use isol_container::{ContainerConfig, Limits, NetworkMode, Rlimit, Rootfs, SharedNamespace};
use oci_spec::runtime::{LinuxNamespaceType, Mount, Process, Spec};

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
/// gives it (the same checks and refusals as the container's own process).
pub fn to_exec(
    process: &Process,
    init_pid: i32,
) -> Result<isol_container::exec::ExecSpec, OciError> {
    if process.terminal() == Some(true) {
        return Err(unsupported(
            "process.terminal",
            "is not supported by isol-runc exec yet",
        ));
    }
    check_process(process)?;
    let user = process.user();
    let (args, env) = args_and_env(process)?;
    Ok(isol_container::exec::ExecSpec {
        init_pid,
        args,
        env,
        cwd: process.cwd().clone(),
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        capabilities: capabilities(process, user.uid())?,
        rlimits: rlimits(process)?,
        seccomp: true,
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
    let capabilities = capabilities(process, user.uid())?;

    let linux = spec.linux().clone().unwrap_or_default();
    let (network, join) = namespaces(&linux)?;
    if join.iter().any(|(ns, _)| *ns == SharedNamespace::Uts)
        && spec.hostname().as_ref().is_some_and(|h| !h.is_empty())
    {
        return Err(unsupported(
            "hostname",
            "cannot be set in a joined uts namespace (it is the namespace owner's)",
        ));
    }
    let (limits, devices) = resources(&linux)?;
    check_linux(&linux)?;
    check_spec(spec)?;
    let mounts = mounts(spec.mounts().as_deref().unwrap_or_default())?;

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
        user: Some(format!("{}:{}", user.uid(), user.gid())),
        groups: Some(groups),
        limits,
        cgroup_path: Some(cgroup_path(id, &linux)?),
        rlimits: rlimits(process)?,
        privileges: isol_container::Privileges {
            capabilities,
            // As runc: only when the config asks; without it the filter goes on while isol
            // still holds the capabilities to install it.
            no_new_privs: process.no_new_privileges() == Some(true),
            seccomp: true,
        },
        devices,
        network,
        join,
        host_namespaces: Default::default(),
        volumes: Vec::new(),
        mounts,
        // The stdio `create` was given is the workload's, stdin included; with a terminal, the
        // pty's slave (its master goes to the console socket).
        interactive: true,
        tty: process.terminal() == Some(true),
        rootless: false,
        timeout: None,
    })
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
    refuse_set("process.oomScoreAdj", &p.oom_score_adj())?;
    refuse_set("process.ioPriority", p.io_priority())?;
    refuse_set("process.scheduler", p.scheduler())?;
    refuse_set("process.execCPUAffinity", p.exec_cpu_affinity())?;
    refuse_set("process.user.umask", &p.user().umask())?;
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

/// One capability set for bounding, permitted and effective, as isol keeps them; inheritable and
/// ambient empty.
fn capabilities(p: &Process, uid: u32) -> Result<u64, OciError> {
    let Some(c) = p.capabilities() else {
        return Ok(0);
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
    if mask(c.permitted())? != bounding || mask(c.effective())? != bounding {
        return Err(unsupported(
            "process.capabilities",
            "with bounding, permitted and effective sets that differ is not supported by isol yet",
        ));
    }
    if mask(c.inheritable())? != 0 || mask(c.ambient())? != 0 {
        return Err(unsupported(
            "process.capabilities",
            "with inheritable or ambient capabilities is not supported by isol yet",
        ));
    }
    if uid != 0 && bounding != 0 {
        return Err(unsupported(
            "process.capabilities",
            "for a non-root process.user is not supported by isol yet (the process would lose them)",
        ));
    }
    Ok(bounding)
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

/// The namespaces isol gives every container: new mount, UTS, IPC and PID namespaces, and a
/// cgroup namespace. The config chooses the network (a new one with loopback, or the host's)
/// and may join existing network, IPC and UTS namespaces by path, as a pod's containers join
/// its sandbox's.
fn namespaces(
    linux: &oci_spec::runtime::Linux,
) -> Result<(NetworkMode, Vec<(SharedNamespace, PathBuf)>), OciError> {
    let list = linux.namespaces().clone().unwrap_or_default();
    let mut join = Vec::new();
    for ns in &list {
        let shared = match ns.typ() {
            LinuxNamespaceType::Network => Some(SharedNamespace::Net),
            LinuxNamespaceType::Ipc => Some(SharedNamespace::Ipc),
            LinuxNamespaceType::Uts => Some(SharedNamespace::Uts),
            LinuxNamespaceType::User | LinuxNamespaceType::Time => {
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
                        "joins the {} namespace at {}: isol joins only network, ipc and uts namespaces yet",
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
    for t in [
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ] {
        if !has(t) {
            return Err(unsupported(
                "linux.namespaces",
                &format!("lacks a {t} namespace: sharing the host's is not supported by isol yet"),
            ));
        }
    }
    let network = if has(LinuxNamespaceType::Network) {
        NetworkMode::None
    } else {
        NetworkMode::Host
    };
    Ok((network, join))
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
    let mut limits = Limits::default();
    let Some(r) = linux.resources() else {
        return Ok((
            limits,
            isol_container::cgroups::devices::DEFAULT_RULES.to_vec(),
        ));
    };
    refuse_set("linux.resources.blockIO", r.block_io())?;
    refuse_set("linux.resources.network", r.network())?;
    refuse_set("linux.resources.rdma", r.rdma())?;
    refuse_set("linux.resources.unified", r.unified())?;
    if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
        return Err(unsupported(
            "linux.resources.hugepageLimits",
            "is not supported by isol yet",
        ));
    }
    if let Some(m) = r.memory() {
        limits.memory = match m.limit() {
            Some(l) if l > 0 => Some(l as u64),
            _ => None,
        };
        // -1 (unlimited) or the same as the limit is what isol does: memory+swap = memory.
        if m.swap().is_some_and(|s| s > 0 && Some(s) != m.limit()) {
            return Err(unsupported(
                "linux.resources.memory.swap",
                "other than the memory limit is not supported by isol yet",
            ));
        }
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
        if let Some(quota) = c.quota().filter(|q| *q > 0) {
            let period = c.period().unwrap_or(100_000);
            if period != isol_container::cgroups::CPU_PERIOD_US {
                return Err(unsupported(
                    "linux.resources.cpu.period",
                    &format!(
                        "{period} is not supported by isol yet (only {})",
                        isol_container::cgroups::CPU_PERIOD_US
                    ),
                ));
            }
            limits.cpus = Some(quota as f64 / period as f64);
        }
        for (name, set) in [
            // 1024 is the kernel's default weight, which containerd always sends.
            ("shares", c.shares().is_some_and(|s| s > 0 && s != 1024)),
            ("cpus", c.cpus().as_ref().is_some_and(|s| !s.is_empty())),
            ("mems", c.mems().as_ref().is_some_and(|s| !s.is_empty())),
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

fn check_linux(linux: &oci_spec::runtime::Linux) -> Result<(), OciError> {
    refuse_set("linux.uidMappings", linux.uid_mappings())?;
    refuse_set("linux.gidMappings", linux.gid_mappings())?;
    refuse_set("linux.seccomp", linux.seccomp())?;
    refuse_set("linux.intelRdt", linux.intel_rdt())?;
    refuse_set("linux.memoryPolicy", linux.memory_policy())?;
    refuse_set("linux.personality", linux.personality())?;
    refuse_set("linux.timeOffsets", linux.time_offsets())?;
    refuse_set("linux.netDevices", linux.net_devices())?;
    refuse_set("linux.mountLabel", linux.mount_label())?;
    if linux.sysctl().as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(unsupported("linux.sysctl", "is not supported by isol yet"));
    }
    if let Some(p) = linux.rootfs_propagation()
        && !matches!(p.as_str(), "" | "private" | "rprivate")
    {
        return Err(unsupported(
            "linux.rootfsPropagation",
            &format!("{p:?} is not supported by isol yet (only private)"),
        ));
    }
    for d in linux.devices().iter().flatten() {
        if !DEFAULT_NODES.iter().any(|n| d.path() == Path::new(n)) {
            return Err(unsupported(
                "linux.devices",
                &format!(
                    "asks for {}: isol creates only {} yet",
                    d.path().display(),
                    DEFAULT_NODES.join(", ")
                ),
            ));
        }
    }
    // isol masks and write-protects its own list (runc's defaults); a config may ask for less
    // (isol stays stricter), not for more.
    let within = |field: &str, asked: &Option<Vec<String>>, have: &[&str]| {
        for p in asked.iter().flatten() {
            if !have.contains(&p.as_str()) {
                return Err(unsupported(
                    field,
                    &format!("lists {p}, which isol cannot mask or protect yet"),
                ));
            }
        }
        Ok(())
    };
    within(
        "linux.maskedPaths",
        linux.masked_paths(),
        &[
            isol_container::MASKED_PATHS,
            &["/proc/kcore", "/proc/scsi", "/sys/fs/selinux"],
        ]
        .concat(),
    )?;
    within(
        "linux.readonlyPaths",
        linux.readonly_paths(),
        isol_container::READONLY_PATHS,
    )?;
    Ok(())
}

fn check_spec(spec: &Spec) -> Result<(), OciError> {
    refuse_set("domainname", spec.domainname())?;
    if let Some(h) = spec.hooks() {
        let any = h.prestart().is_some()
            || h.create_runtime().is_some()
            || h.create_container().is_some()
            || h.start_container().is_some()
            || h.poststart().is_some()
            || h.poststop().is_some();
        if any {
            return Err(unsupported("hooks", "are not supported by isol yet"));
        }
    }
    Ok(())
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
        let (flags, data) = mount_options(dest, &options)?;
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
        });
    }
    Ok(out)
}

/// A mount's options as mount(2) flags and the filesystem's own data, as runc reads them.
fn mount_options(dest: &Path, options: &[String]) -> Result<(u64, String), OciError> {
    let mut flags: u64 = 0;
    let mut data = Vec::new();
    for o in options {
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
            // Every mount of an isol container is private already.
            "private" | "rprivate" => (0, 0),
            "shared" | "rshared" | "slave" | "rslave" | "unbindable" | "runbindable" => {
                return Err(unsupported(
                    "mounts",
                    &format!(
                        "{}: propagation {o:?} is not supported by isol yet (only private)",
                        dest.display()
                    ),
                ));
            }
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
    Ok((flags, data.join(",")))
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
    fn what_isol_cannot_honour_is_refused_by_name() {
        let refused = |edit: fn(&mut serde_json::Value), field: &str| {
            let e = convert(&spec_with(edit)).unwrap_err().to_string();
            assert!(e.contains(field), "{e}");
        };
        // The default spec's first namespace is the PID namespace.
        refused(
            |v| v["linux"]["namespaces"][0]["path"] = "/proc/1/ns/pid".into(),
            "linux.namespaces",
        );
        refused(
            |v| v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW"}),
            "linux.seccomp",
        );
        refused(
            |v| {
                v["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                    {"destination": "/run", "type": "tmpfs", "options": ["rshared"]}
                ))
            },
            "mounts",
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
            |v| v["hooks"] = serde_json::json!({"poststart": [{"path": "/bin/true"}]}),
            "hooks",
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
    fn resources_become_limits_and_device_rules() {
        let cfg = convert(&spec_with(|v| {
            v["linux"]["resources"] = serde_json::json!({
                "memory": {"limit": 67108864},
                "cpu": {"quota": 50000, "period": 100000},
                "pids": {"limit": 64},
                "devices": [{"allow": false, "access": "rwm"},
                            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"}]
            });
        }))
        .unwrap();
        assert_eq!(cfg.limits.memory, Some(64 << 20));
        assert_eq!(cfg.limits.cpus, Some(0.5));
        assert_eq!(cfg.limits.pids, Some(64));
        let defaults = isol_container::cgroups::devices::DEFAULT_RULES;
        assert_eq!(cfg.devices.len(), 2 + defaults.len());
        assert_eq!(&cfg.devices[2..], defaults);
        assert!(!cfg.devices[0].allow);
        assert_eq!(cfg.devices[1].access, ACCESS_READ | ACCESS_WRITE);
    }
}
