//! `isol-runc`'s kvm backend ([`isol_oci::vm::VmRuntime`]): a bundle's workload in an isol
//! microVM, run by `isol-vmm` as `isol run --backend kvm` runs one (docs/oci.md, "The kvm
//! backend").
//!
//! `create` forks the process that becomes the VMM. It keeps create's stdio (the workload's
//! stdin, stdout and stderr, through the VM's console ports), and, in a mount namespace of
//! its own, stages the VM's root in the container's state directory (Kata's way): the
//! bundle's rootfs bound at `share/rootfs` (`root.readonly` is the guest's to apply, once
//! it made its mount points) and each bind
//! mount's source at `share/mounts/N`, all served by one virtiofsd as one virtio-fs device;
//! the guest init makes `rootfs` its root and binds the mounts into it (spec version 5). The
//! process binds the exec channel's socket (`control.sock`), tells `create` it is ready,
//! and waits at the start gate; `start` opens it, and it execs `isol-vmm` with the launch,
//! the jail included, as `isol run` does. Its pid is the run's: it exits with the workload's
//! status. Its mounts vanish with it and virtiofsd (the namespace is theirs alone), so a
//! SIGKILL leaves none on the host.
//!
//! A network namespace joined by path (`linux.namespaces`: a CRI pod's, made by the pause
//! container and configured by a CNI plugin) is the VM's network: the VM's process makes
//! the VM's tap inside it and redirects the pod's interface to it (`crate::pod_net`), the
//! guest taking the interface's address, MAC and gateway. The redirection is recorded in
//! the container's state directory (`net/pods/<id>.json`); `isol-vmm` undoes it after the
//! VM, and `delete` does after a SIGKILL (the namespace stays: it is the pod's). A UTS
//! namespace joined by path (the pod's) gives the guest its hostname, unless the config names
//! one; an IPC namespace joined by path is the guest's own (docs/oci.md, "What does not map").

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use isol_oci::OciError;
use isol_oci::vm::{VmCreate, VmExec, VmRuntime};
use isol_vmm::launch::{Launch, LaunchBundle, LaunchControl, LaunchMount};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use crate::shares::{KvmShares, Share};

/// The staging directory in the container's state directory: what virtiofsd serves.
const STAGING: &str = "share";
/// The exec channel's socket in the container's state directory.
const CONTROL: &str = "control.sock";
/// The jail's run directories, in the container's state directory.
const JAIL_DIR: &str = "vm";
/// How long `kill` waits for the guest to say the signal was sent.
const SIGNAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The kvm backend.
pub struct Vm;

fn vm_error(e: anyhow::Error) -> OciError {
    OciError::Vm(format!("{e:#}"))
}

impl VmRuntime for Vm {
    fn create(&self, req: &VmCreate<'_>) -> Result<i32, OciError> {
        // Everything that can be checked is, before the fork.
        if let Some(path) = isol_oci::vm::pod_netns(req.config) {
            check_pod(path, req.dir).map_err(vm_error)?;
        }
        let launch = plan(req).map_err(vm_error)?;
        let vmm = isol_vmm::launch::vmm_binary().ok_or_else(|| {
            OciError::Vm(format!(
                "{} was not found beside isol-runc; install it there (cargo build --bins), or set {}",
                isol_vmm::launch::VMM_BINARY,
                isol_vmm::launch::VMM_ENV
            ))
        })?;
        crate::shares::virtiofsd().map_err(vm_error)?;
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| OciError::Vm(format!("cannot make a pipe: {e}")))?;
        // SAFETY: isol-runc is single-threaded here; the child runs Rust code that allocates,
        // which is fine without other threads, and ends with exec or _exit.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(ready_r);
                vmm_process(req, launch, &vmm, ready_w)
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop(ready_w);
                let mut answer = Vec::new();
                let _ = std::fs::File::from(ready_r).read_to_end(&mut answer);
                if answer == b"R" {
                    return Ok(child.as_raw());
                }
                let _ = nix::sys::wait::waitpid(child, None);
                let msg = String::from_utf8_lossy(&answer).trim().to_string();
                Err(OciError::Vm(if msg.is_empty() {
                    "the VM's process ended before it was ready".into()
                } else {
                    msg
                }))
            }
            Err(e) => Err(OciError::Vm(format!(
                "cannot fork the VM's process: {e}; raise the process limit"
            ))),
        }
    }

    fn signal(&self, dir: &Path, signal: i32) -> Result<(), OciError> {
        send_signal(dir, signal).map_err(vm_error)
    }

    fn exec(&self, dir: &Path, req: VmExec<'_>) -> Result<i32, OciError> {
        exec(dir, req).map_err(vm_error)
    }

    fn clean(&self, dir: &Path) -> Result<(), OciError> {
        // A pod network's redirection whose VMM was killed before it could undo it.
        isol_container::network::pod::sweep(dir);
        clean(&dir.join(STAGING)).map_err(vm_error)
    }

    fn pause(&self, dir: &Path, pause: bool) -> Result<(), OciError> {
        send_pause(dir, pause).map_err(vm_error)
    }

    fn vmm_memory_margin(&self) -> u64 {
        isol_vmm::launch::JAIL_MEMORY_MARGIN
    }

    fn max_vcpus(&self) -> u8 {
        isol_vmm::arch::x86_64::mptable::MAX_CPUS
    }
}

/// A pod's network namespace the VM can take over: one of its own (not the host's) whose one
/// interface has an address and a default route, and isol-runc is root.
///
/// First, the redirections that VMs killed before they could undo them left (a SIGKILL, the
/// OOM killer), which each one's `delete` would undo, are undone from their records in the
/// state directories beside `dir` (the container's): a kubelet starts a dead container's
/// successor in the same pod before it deletes the dead one, whose redirection of the pod's
/// interface to its gone tap would refuse the new VM and keep the pod off the wire.
fn check_pod(path: &Path, dir: &Path) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(isol_container::network::NetworkError::NotRoot.into());
    }
    if let Some(root) = dir.parent() {
        for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
            isol_container::network::pod::sweep(&entry.path());
        }
    }
    let netns = isol_container::network::pod::open_netns(path)?;
    isol_container::network::pod::read_config(path, &netns)?;
    Ok(())
}

/// The launch of `req`'s VM, without what the VM's process makes (the share, the exec
/// channel): every check that can fail `create` before the fork.
fn plan(req: &VmCreate<'_>) -> anyhow::Result<Launch> {
    let cfg = req.config;
    let (seccomp, seccomp_test_violation) =
        isol_vmm::seccomp::parse_setting(std::env::var(isol_vmm::seccomp::ENV).ok().as_deref())?;
    let memory_mib = u32::try_from(isol_oci::vm::guest_memory(cfg) >> 20).unwrap_or(u32::MAX);
    let min = isol_vmm::config::MIN_MEMORY_MIB;
    if memory_mib < min {
        bail!(
            "linux.resources.memory.limit of {memory_mib} MiB is too small for a microVM: give {min} MiB or more"
        );
    }
    let kernel = match std::env::var_os("ISOL_KERNEL") {
        Some(k) => PathBuf::from(k),
        None => isol_vmm::config::cached_kernel_dir()
            .map(|d| d.join("vmlinux"))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "no guest kernel: set ISOL_KERNEL, or build one into the cache with guest-images/build-kernel.sh"
                )
            })?,
    };
    isol_vmm::loader::check_kernel(&kernel)?;
    isol_vmm::kconfig::check_for_run(
        &kernel,
        &isol_vmm::kconfig::Needs {
            vcpus: req.vcpus,
            nic: isol_oci::vm::pod_netns(cfg).is_some(),
            pids_limit: cfg.limits.pids.is_some(),
            memory_limit: cfg.limits.memory.is_some(),
            fs: true,
        },
    )?;
    let speed_cache = isol_vmm::config::cache_dir().join("kvm-speed");
    isol_vmm::vstate::kvm::check_runs_guests(Some(&speed_cache)).map_err(anyhow::Error::msg)?;
    let init = isol_vmm::config::default_guest_init().ok_or_else(|| {
        anyhow::anyhow!(
            "the guest init isol-guest-init was not found beside isol-runc; build it (cargo build -p isol-guest-init) or set ISOL_GUEST_INIT"
        )
    })?;
    let workload_seccomp = match cfg.privileges.seccomp.filter()? {
        None => Vec::new(),
        Some(f) if f.flags != 0 => bail!(
            "the seccomp profile's flags (SECCOMP_FILTER_FLAG_LOG, SECCOMP_FILTER_FLAG_SPEC_ALLOW) are not supported on the kvm backend; drop them from linux.seccomp or use the container backend"
        ),
        Some(f) => f.words(),
    };
    let abs = |p: &Path| {
        std::path::absolute(p).with_context(|| format!("cannot make {} absolute", p.display()))
    };
    let mut launch = Launch {
        kernel: abs(&kernel)?,
        root_disk: PathBuf::new(),
        bundle: None,
        initrd: None,
        rlimits: cfg
            .rlimits
            .iter()
            .map(|r| (r.resource, r.soft, r.hard))
            .collect(),
        groups: cfg.groups.clone(),
        init: abs(&init)?,
        // The config's CPU limits, as Kata sizes its VM (`isol_oci::vm::guest_vcpus`); they
        // also bound the VMM's cgroup (below).
        vcpus: req.vcpus,
        memory_mib,
        args: cfg.args.clone(),
        env: cfg.env.clone(),
        workdir: cfg.workdir.clone().into_os_string(),
        hostname: hostname(cfg)?.into(),
        user: cfg.user.clone().unwrap_or_default().into(),
        // The same privileges as the container backend's: the bounding set, the inheritable
        // and ambient sets, no_new_privs and the config's own seccomp profile, compiled here,
        // applied by the guest init.
        capabilities: Some(cfg.privileges.capabilities),
        inheritable: cfg.privileges.inheritable,
        ambient: cfg.privileges.ambient,
        no_new_privs: cfg.privileges.no_new_privs,
        workload_seccomp,
        disks: Vec::new(),
        timeout: None,
        console: false,
        trace_exits: false,
        // create's stdin is the workload's, whatever it is (often /dev/null).
        interactive: true,
        // `process.terminal`: the VM's process is on the pty whose master went to the
        // console socket; the guest gives the workload a pty of its own, as `isol run -t`.
        tty: cfg.tty,
        json: false,
        image: req.id.to_string(),
        boot_profiles: isol_vmm::config::default_boot_profiles(),
        log_filter: Some(std::env::var("ISOL_LOG").unwrap_or_else(|_| "warn".into())),
        seccomp,
        seccomp_test_violation,
        jail: None,
        net: None,
        etc_files: Vec::new(),
        control: None,
        shares: Vec::new(),
        pids_limit: cfg.limits.pids,
        memory_limit: cfg.limits.memory,
        leftovers: Vec::new(),
        start_gate: None,
        oci: oci_setup(cfg),
    };
    let jail_off = std::env::var("ISOL_VMM_JAIL").is_ok_and(|v| v == "off");
    let l = &cfg.limits;
    let cpu = isol_vmm::launch::JailCpu {
        quota_us: l.cpus.map(|c| {
            (c * l
                .cpu_period
                .unwrap_or(isol_container::cgroups::CPU_PERIOD_US) as f64)
                .round() as u64
        }),
        period_us: l.cpu_period,
        shares: l.cpu_shares,
        cpus: l.cpuset_cpus.map(|c| c.to_string()),
        mems: l.cpuset_mems.map(|c| c.to_string()),
    };
    if nix::unistd::geteuid().is_root() && !jail_off {
        let mut jail = isol_vmm::launch::LaunchJail::new(
            req.id,
            req.dir.join(JAIL_DIR),
            isol_container::process::CGROUP_ROOT.into(),
            &launch,
        );
        jail.cpu = cpu;
        launch.jail = Some(jail);
    } else if cpu != isol_vmm::launch::JailCpu::default() {
        bail!(
            "linux.resources.cpu (quota, shares, cpus, mems) bounds the VMM's cgroup, which only its jail has: run isol-runc as root, without ISOL_VMM_JAIL=off"
        );
    }
    Ok(launch)
}

/// The guest's hostname: the config's; else, on a UTS namespace joined by path (a CRI pod's,
/// its sandbox's), that namespace's, so that the VM answers to the pod's name as the pod's
/// containers do. The guest's UTS namespace is its own: a name set later in the pod's is not
/// seen (docs/oci.md, "What does not map").
fn hostname(cfg: &isol_container::ContainerConfig) -> anyhow::Result<String> {
    match isol_oci::vm::joined(cfg, isol_container::SharedNamespace::Uts) {
        Some(path) if cfg.hostname.is_empty() => Ok(isol_container::hostname_in(path)?),
        _ => Ok(cfg.hostname.clone()),
    }
}

/// What the guest init sets up beyond the workload's process, as the container backend does
/// in a container: the config's sysctls (checked as for a container: namespaced ones only),
/// domain name and umask, and isol's masked and read-only paths (runc's defaults) with the
/// config's beyond them.
fn oci_setup(cfg: &isol_container::ContainerConfig) -> isol_vmm::launch::LaunchOci {
    isol_vmm::launch::LaunchOci {
        sysctl: cfg.sysctl.clone(),
        domainname: cfg.domainname.clone(),
        // The kernel keeps a umask's permission bits only.
        umask: cfg.umask.map(|u| u & 0o777),
        ..crate::guest_masks::launch(&cfg.masked_paths, &cfg.readonly_paths)
    }
}

/// The VM's process, after the fork: never returns. Until it is ready, a failure goes to
/// `create` on `ready`; after, to the workload's stderr, and the process exits 125.
fn vmm_process(req: &VmCreate<'_>, launch: Launch, vmm: &Path, ready: OwnedFd) -> ! {
    let mut ready = std::fs::File::from(ready);
    let prepared = match terminal(req).and_then(|()| prepare(req, launch)) {
        Ok(p) => p,
        Err(e) => {
            let _ = write!(ready, "{e:#}");
            // SAFETY: ends this forked child; nothing of the parent's is to be flushed.
            unsafe { libc::_exit(125) }
        }
    };
    let _ = ready.write_all(b"R");
    drop(ready);
    let e = gate_and_exec(req, &prepared, vmm);
    eprintln!("isol-runc: {e:#}");
    // The VM never ran: the pod network's redirection and the file server go now.
    drop(prepared);
    // SAFETY: as above.
    unsafe { libc::_exit(125) }
}

/// `process.terminal`: the VM's process leaves create's session and stdio for the pty's
/// slave, its controlling terminal, before it starts anything (virtiofsd): what was create's
/// stdio is left to create (a client that reads create's output to its end, as containerd's
/// shim does with a terminal, sees that end when create exits). A resize of the master
/// sends the process SIGWINCH; isol-vmm passes the size to the guest.
fn terminal(req: &VmCreate<'_>) -> anyhow::Result<()> {
    let Some(t) = req.terminal else {
        return Ok(());
    };
    nix::unistd::setsid().context("cannot make the VM's session")?;
    on_terminal(t, true)
}

/// What the VM's process made before it is ready.
struct Prepared {
    launch: Launch,
    shares: KvmShares,
    control: std::os::unix::net::UnixListener,
    /// On a pod's network: the tap's descriptor (isol-vmm's) and the redirection (isol-vmm
    /// undoes it after the VM; undone on drop should the VM never run).
    pod: Option<(OwnedFd, isol_container::network::pod::PodAttachment)>,
}

/// The mount namespace, the staged root, virtiofsd, the exec channel's socket, the launch.
fn prepare(req: &VmCreate<'_>, mut launch: Launch) -> anyhow::Result<Prepared> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("cannot make the VM's mount namespace")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("cannot make the VM's mounts private")?;
    // In this process, which becomes isol-vmm (same pid: the record's owner).
    let pod = match isol_oci::vm::pod_netns(req.config) {
        Some(path) => {
            let (net, tap, attachment) =
                crate::pod_net::attach(path, req.dir.to_owned(), req.id, 0)?;
            launch.net = Some(net);
            Some((tap, attachment))
        }
        None => None,
    };
    let staging = req.dir.join(STAGING);
    let bundle = stage(&staging, req.config)?;
    let shares = KvmShares::start(
        &[Share {
            source: staging,
            // Mounted by the guest init as the root, not at a path of its own.
            target: PathBuf::new(),
            read_only: false,
        }],
        req.id,
    )?;
    let control_path = req.dir.join(CONTROL);
    let control = std::os::unix::net::UnixListener::bind(&control_path)
        .with_context(|| format!("cannot create {}", control_path.display()))?;
    std::fs::set_permissions(&control_path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", control_path.display()))?;
    launch.bundle = Some(LaunchBundle {
        tag: shares.launch[0].tag.clone(),
        ..bundle
    });
    launch.shares = shares.launch.clone();
    launch.control = Some(LaunchControl {
        fd: control.as_raw_fd(),
        path: control_path,
    });
    launch.vm_config(None).validate()?;
    if let Some(adj) = req.config.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .context("cannot set process.oomScoreAdj on the VMM")?;
    }
    Ok(Prepared {
        launch,
        shares,
        control,
        pod,
    })
}

/// Waits at the start gate, passes it, and becomes `isol-vmm`, which holds the gate until
/// the guest init says the workload's exec succeeded (`isol_vmm::launch::StartGate`: `start`
/// returns then, as runc's does once its workload was exec'd). Returns only on failure.
fn gate_and_exec(req: &VmCreate<'_>, p: &Prepared, vmm: &Path) -> anyhow::Error {
    let gate = std::fs::OpenOptions::new()
        .write(true)
        .open(req.fifo)
        .and_then(|mut g| g.write_all(&[0]).map(|()| g));
    let gate = match gate {
        Ok(g) => g,
        Err(e) => return anyhow::anyhow!("cannot pass the start gate: {e}"),
    };
    if let Err(e) = p.shares.keep_across_exec() {
        return e;
    }
    let tap = p.pod.as_ref().map(|(tap, _)| tap.as_raw_fd());
    for fd in [p.control.as_raw_fd(), gate.as_raw_fd()]
        .into_iter()
        .chain(tap)
    {
        // SAFETY: F_SETFD on a descriptor this process owns; integer arguments only.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
            return anyhow::anyhow!(
                "cannot hand the exec channel, the start gate or the VM's tap to isol-vmm: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let launch = Launch {
        start_gate: Some(gate.as_raw_fd()),
        ..p.launch.clone()
    };
    let e = isol_vmm::launch::exec(vmm, &launch, [OsString::from(req.id)]);
    drop(gate);
    e.into()
}

/// Stages the root and the bind mounts' sources under `staging` (in the VM process's own
/// mount namespace), and returns the mounts as the guest makes them.
fn stage(staging: &Path, cfg: &isol_container::ContainerConfig) -> anyhow::Result<LaunchBundle> {
    let isol_container::Rootfs::Dir { path, readonly } = &cfg.rootfs else {
        bail!("a bundle's root is a directory");
    };
    let mkdir = |p: &Path| {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(p)
            .with_context(|| format!("cannot create {}", p.display()))
    };
    mkdir(staging)?;
    let root = staging.join("rootfs");
    mkdir(&root)?;
    // Writable here: the guest init makes its mount points in it (inside the guest, where a
    // symlink of the rootfs cannot lead to the host's files) and then makes its root
    // read-only, as runc does once its mounts are made. The binds' sources are read-only here
    // already.
    bind(path, &root, false)?;
    let mounts_dir = staging.join("mounts");
    mkdir(&mounts_dir)?;
    let mut mounts = Vec::new();
    let guest_flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    for (i, m) in cfg.mounts.iter().enumerate() {
        let Some(fstype) = &m.fstype else {
            let at = mounts_dir.join(i.to_string());
            if m.source.is_dir() {
                mkdir(&at)?;
            } else {
                std::fs::File::create(&at)
                    .with_context(|| format!("cannot create {}", at.display()))?;
            }
            bind(&m.source, &at, m.flags & libc::MS_RDONLY != 0)?;
            mounts.push(LaunchMount {
                fstype: String::new(),
                source: format!("mounts/{i}").into(),
                target: m.target.clone().into_os_string(),
                flags: m.flags & guest_flags,
                data: String::new(),
            });
            continue;
        };
        mounts.push(LaunchMount {
            fstype: fstype.clone(),
            source: m.source.clone().into_os_string(),
            target: m.target.clone().into_os_string(),
            flags: m.flags,
            data: m.data.clone(),
        });
    }
    Ok(LaunchBundle {
        tag: String::new(),
        readonly: *readonly,
        mounts,
        oom_score_adj: cfg.oom_score_adj,
    })
}

/// Binds `source` at `target` (recursively), read-only when asked.
fn bind(source: &Path, target: &Path, read_only: bool) -> anyhow::Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .with_context(|| format!("cannot bind {} for the VM", source.display()))?;
    if read_only {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .with_context(|| format!("cannot make {} read-only", target.display()))?;
    }
    Ok(())
}

/// Removes the staging directory: each mount point is detached first (should one be
/// mounted in this namespace), then removed as the empty directory or file it is. Nothing
/// is removed recursively, so nothing a mount shared can be.
fn clean(staging: &Path) -> anyhow::Result<()> {
    if std::fs::symlink_metadata(staging).is_err() {
        return Ok(());
    }
    let mut points = vec![staging.join("rootfs")];
    let mounts = staging.join("mounts");
    if let Ok(entries) = std::fs::read_dir(&mounts) {
        points.extend(entries.flatten().map(|e| e.path()));
    }
    for p in &points {
        let _ = umount2(p, MntFlags::MNT_DETACH);
        let removed = match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => std::fs::remove_dir(p),
            Ok(_) => std::fs::remove_file(p),
            Err(_) => Ok(()),
        };
        removed.with_context(|| format!("cannot remove {}", p.display()))?;
    }
    for d in [&mounts, staging] {
        match std::fs::remove_dir(d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("cannot remove {}", d.display()));
            }
            _ => {}
        }
    }
    Ok(())
}

/// `exec`: the process through the VM's exec channel (`exec_channel::attach`), relayed by
/// this process — or, with `detach`, by a child of its own (in a session of its own) that
/// outlives it: its pid goes to the pid file, its life is the process's and its exit status
/// is the process's (the client, a subreaper, waits on it). With a terminal the relay's
/// stdio is the pty's slave (its master went to the console socket): the guest's terminal
/// does the line discipline, so the slave is raw, and its size follows the slave's.
fn exec(dir: &Path, req: VmExec<'_>) -> anyhow::Result<i32> {
    use isol_vmm::control::wire::{Spec, StartRequest};
    let path = dir.join(CONTROL);
    let sock = std::os::unix::net::UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach the VM's exec channel {}; is the VM running?",
            path.display()
        )
    })?;
    let mut start = StartRequest {
        spec: Spec {
            args: req.args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: req.env.iter().map(|e| e.as_bytes().to_vec()).collect(),
            workdir: req.cwd.as_os_str().as_encoded_bytes().to_vec(),
            user: req.user.into_bytes(),
            groups: Some(req.groups),
            ..Default::default()
        },
        tty: req.terminal.is_some(),
        detach: false,
        size: (0, 0),
    };
    start
        .encode()
        .map_err(|e| anyhow::anyhow!("the process is too large for the VM's exec channel: {e}"))?;
    if !req.detach {
        if let Some(t) = &req.terminal {
            on_terminal(t, false)?;
            start.size = crate::exec_channel::term_size();
        }
        return crate::exec_channel::attach(sock, &start, true, None);
    }
    let (started_r, started_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot make a pipe")?;
    // SAFETY: isol-runc is single-threaded here; the child runs Rust code that allocates,
    // which is fine without other threads, and ends with _exit.
    match unsafe { nix::unistd::fork() }
        .context("cannot fork the exec's relay; raise the process limit")?
    {
        nix::unistd::ForkResult::Child => {
            drop(started_r);
            let mut notify = std::fs::File::from(started_w);
            let code = (|| {
                // Its own session: the client's signals to isol-runc's group are not its.
                nix::unistd::setsid().context("cannot make the relay's session")?;
                if let Some(t) = &req.terminal {
                    on_terminal(t, true)?;
                    start.size = crate::exec_channel::term_size();
                }
                drop(req.terminal);
                let n = notify.try_clone().context("cannot keep the start pipe")?;
                crate::exec_channel::attach(sock, &start, true, Some(n))
            })();
            let code = code.unwrap_or_else(|e| {
                let _ = write!(notify, "{e:#}");
                125
            });
            // SAFETY: ends this forked child; nothing of the parent's is to be flushed.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(started_w);
            drop(sock);
            drop(req.terminal);
            // `S` as soon as the process started (the relay holds the pipe on, to write a
            // failure of its own); else, to the pipe's end, why not.
            let mut started = std::fs::File::from(started_r);
            let mut answer = vec![0u8];
            if !matches!(started.read(&mut answer), Ok(1)) {
                answer.clear();
            }
            if answer.first() != Some(&b'S') {
                let _ = started.read_to_end(&mut answer);
                let _ = nix::sys::wait::waitpid(child, None);
                let msg = String::from_utf8_lossy(&answer).trim().to_string();
                bail!(
                    "{}",
                    if msg.is_empty() {
                        "the exec's relay ended before the process started".into()
                    } else {
                        msg
                    }
                );
            }
            if let Some(f) = req.pid_file {
                let tmp = f.with_extension("isol-tmp");
                std::fs::write(&tmp, child.as_raw().to_string())
                    .and_then(|()| std::fs::rename(&tmp, f))
                    .with_context(|| format!("cannot write the pid file {}", f.display()))?;
            }
            Ok(0)
        }
    }
}

/// Makes the pty's slave `t` this process's stdio (and, with `ctty`, its controlling
/// terminal, so that a resize of the master sends it SIGWINCH; the process leads its
/// session).
fn on_terminal(t: impl AsFd, ctty: bool) -> anyhow::Result<()> {
    let t = t.as_fd();
    nix::unistd::dup2_stdin(t)
        .and_then(|()| nix::unistd::dup2_stdout(t))
        .and_then(|()| nix::unistd::dup2_stderr(t))
        .context("cannot put the terminal on the process's stdio")?;
    // SAFETY: TIOCSCTTY takes an integer; the calling process is a session leader.
    if ctty && unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } != 0 {
        bail!(
            "cannot make the terminal the process's controlling terminal: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Sends `signal` to the workload over the exec channel (a START frame that starts nothing
/// but signals the workload: `isol_guest_init::control::signal_workload`).
fn send_signal(dir: &Path, signal: i32) -> anyhow::Result<()> {
    use isol_vmm::control::wire::{self, Frame, KIND_START};
    let sig = u8::try_from(signal).context("signal number out of range")?;
    let frame = Frame::new(0, KIND_START, wire::signal_workload(sig));
    request(dir, &frame, SIGNAL_TIMEOUT, "signal the workload").map_err(|e| match e {
        Request::Late => anyhow::anyhow!("the VM did not answer the signal in time"),
        Request::Ended => anyhow::anyhow!("the VM ended before the signal was delivered"),
        Request::Failed(e) => e,
    })
}

/// Asks the VMM, over the exec channel's socket, to park its vCPUs (`pause`) or run them
/// again (a PAUSE or RESUME frame, which the VMM serves itself: docs/vmm.md, "Pause and
/// resume"); returns once it says they are.
fn send_pause(dir: &Path, pause: bool) -> anyhow::Result<()> {
    use isol_vmm::control::wire::{Frame, KIND_VM_PAUSE, KIND_VM_RESUME};
    let (kind, what) = if pause {
        (KIND_VM_PAUSE, "pause")
    } else {
        (KIND_VM_RESUME, "resume")
    };
    // The VMM's own wait, and room.
    let timeout = isol_vmm::control::PAUSE_TIMEOUT + SIGNAL_TIMEOUT;
    let frame = Frame::new(0, kind, Vec::new());
    request(dir, &frame, timeout, &format!("{what} the VM")).map_err(|e| match e {
        Request::Late => anyhow::anyhow!("the VMM did not {what} the VM in time"),
        Request::Ended => anyhow::anyhow!("the VM ended before it could {what}"),
        Request::Failed(e) => e,
    })
}

/// Why a [`request`] got no EXIT.
enum Request {
    /// No answer within the timeout.
    Late,
    /// The channel closed first.
    Ended,
    /// Anything else, said.
    Failed(anyhow::Error),
}

/// Sends `frame` on a connection of its own to the VM's exec channel and waits, at most
/// `timeout`, for its EXIT (`Ok`) or ERROR (`cannot WHAT: …`).
fn request(
    dir: &Path,
    frame: &isol_vmm::control::wire::Frame,
    timeout: Duration,
    what: &str,
) -> Result<(), Request> {
    use isol_vmm::control::wire::{Decoder, KIND_ERROR, KIND_EXIT};
    let path = dir.join(CONTROL);
    let mut s = std::os::unix::net::UnixStream::connect(&path)
        .with_context(|| {
            format!(
                "cannot reach the VM's exec channel {}; is the VM running?",
                path.display()
            )
        })
        .map_err(Request::Failed)?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.write_all(&frame.encode()))
        .map_err(|e| Request::Failed(anyhow::anyhow!("cannot {what}: {e}")))?;
    let mut decoder = Decoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).map_err(|_| Request::Late)?;
        if n == 0 {
            return Err(Request::Ended);
        }
        let mut frames = Vec::new();
        decoder
            .push(&buf[..n], &mut frames)
            .map_err(|e| Request::Failed(anyhow::anyhow!("the VM's exec channel broke: {e}")))?;
        for f in frames {
            match f.kind {
                KIND_EXIT => return Ok(()),
                KIND_ERROR => {
                    return Err(Request::Failed(anyhow::anyhow!(
                        "cannot {what}: {}",
                        String::from_utf8_lossy(&f.payload)
                    )));
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_removes_mount_points_but_never_what_is_in_them() {
        let tmp = tempfile::tempdir().unwrap();
        let staging = tmp.path().join("share");
        std::fs::create_dir_all(staging.join("rootfs")).unwrap();
        std::fs::create_dir_all(staging.join("mounts/0")).unwrap();
        std::fs::write(staging.join("mounts/1"), b"").unwrap();
        clean(&staging).unwrap();
        assert!(!staging.exists());
        // A staging directory whose root holds files (a mount seen through) is not emptied.
        std::fs::create_dir_all(staging.join("rootfs")).unwrap();
        std::fs::write(staging.join("rootfs/precious"), b"x").unwrap();
        assert!(clean(&staging).is_err());
        assert!(staging.join("rootfs/precious").exists());
        // Nothing there: nothing to do.
        assert!(clean(&tmp.path().join("none")).is_ok());
    }
}
