//! The kvm backend behind runc's command line: a bundle's workload in an isol microVM
//! (docs/oci.md, "The kvm backend").
//!
//! Which backend runs a container: the config's annotation [`BACKEND_ANNOTATION`]
//! (`kvm` or `container`), else the runtime's name — invoked as [`VM_RUNTIME_NAME`] (a link to
//! `isol-runc`, for clients that name a runtime binary rather than pass annotations, such as a
//! Kubernetes RuntimeClass handler), kvm; else container. Under that name a CRI pod's sandbox
//! (the pause container, [`CRI_CONTAINER_TYPE`] `sandbox`) stays a container: it only holds
//! the pod's namespaces, which the pod's VMs join (its network) or mirror (its hostname).
//!
//! This crate does not run VMs: it does not depend on the VMM. The binary that does
//! (`isol-runc`, in the `isol` crate) hands it a [`VmRuntime`]; the commands here keep the
//! state, the start gate and the statuses as for a container.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::OciError;

/// The annotation that picks the backend: `kvm` or `container`.
pub const BACKEND_ANNOTATION: &str = "io.isol.backend";
/// The runtime's name (argv\[0\]'s file name) whose default backend is kvm.
pub const VM_RUNTIME_NAME: &str = "isol-runc-vm";

/// The annotation containerd's CRI plugin (1.6) puts on every container it makes: `sandbox`
/// for a pod's pause container, `container` for the others.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// [`CRI_CONTAINER_TYPE`]'s value for a pod's sandbox.
pub const CRI_SANDBOX: &str = "sandbox";

/// What runs a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A namespaced container (isol's container runtime).
    #[default]
    Container,
    /// An isol microVM.
    Kvm,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Container => "container",
            Backend::Kvm => "kvm",
        }
    }

    /// The runtime's default: kvm when invoked as [`VM_RUNTIME_NAME`].
    pub fn default_for(argv0: Option<&std::ffi::OsStr>) -> Backend {
        let name = argv0
            .map(Path::new)
            .and_then(Path::file_name)
            .and_then(|n| n.to_str());
        if name == Some(VM_RUNTIME_NAME) {
            Backend::Kvm
        } else {
            Backend::Container
        }
    }

    /// The backend of a config with these annotations: the annotation's, else `default` —
    /// except for a CRI pod's sandbox under a kvm default, which is a container: it holds the
    /// pod's namespaces (made by the runtime, its network configured by a CNI plugin) for the
    /// pod's VMs to join, and runs nothing of the pod's (Kata's sandbox is the VM itself; here
    /// each container is a VM of its own, so the sandbox needs none).
    pub fn select(
        annotations: &BTreeMap<String, String>,
        default: Backend,
    ) -> Result<Backend, OciError> {
        let sandbox = annotations.get(CRI_CONTAINER_TYPE).map(String::as_str) == Some(CRI_SANDBOX);
        match annotations.get(BACKEND_ANNOTATION).map(String::as_str) {
            None if sandbox => Ok(Backend::Container),
            None => Ok(default),
            Some("kvm") => Ok(Backend::Kvm),
            Some("container") => Ok(Backend::Container),
            Some(other) => Err(OciError::Unsupported(format!(
                "annotation {BACKEND_ANNOTATION}={other:?} is not a backend: give kvm or container"
            ))),
        }
    }
}

/// What `create` hands the kvm backend.
#[derive(Debug)]
pub struct VmCreate<'a> {
    pub id: &'a str,
    /// The container's state directory (`<root>/<id>`): what the VM keeps there (the
    /// directory its virtio-fs share stages, the exec channel's socket, the jail's run
    /// directory) goes with it.
    pub dir: &'a Path,
    /// The start gate: the VM's process opens it to write, writes one byte once past it
    /// and holds it open until it runs the VM.
    pub fifo: &'a Path,
    /// The config, checked by [`check`]: what the VM gets.
    pub config: &'a isol_container::ContainerConfig,
    /// The guest's vCPUs, from the config's CPU limits ([`guest_vcpus`]).
    pub vcpus: u8,
    /// With `process.terminal`: the slave of the pty whose master goes to the console
    /// socket. The VM's process makes it its stdio and controlling terminal (so a resize of
    /// the master reaches it as SIGWINCH) and the workload runs on a terminal of the guest's,
    /// sized as the slave is, as `isol run -t` runs one.
    pub terminal: Option<std::os::fd::BorrowedFd<'a>>,
}

/// What `exec` hands the kvm backend: a process for the guest init to start beside the
/// workload, with the workload's privileges (capabilities, seccomp, no_new_privs).
#[derive(Debug)]
pub struct VmExec<'a> {
    pub args: Vec<String>,
    /// `KEY=VALUE` each.
    pub env: Vec<String>,
    pub cwd: std::path::PathBuf,
    /// `uid:gid`.
    pub user: String,
    /// Exactly these supplementary groups besides the gid (`process.user.additionalGids`, as
    /// runc: none listed, none).
    pub groups: Vec<u32>,
    /// With a terminal: the slave of the pty whose master went to the console socket; the
    /// process gets a terminal of the guest's, relayed to it.
    pub terminal: Option<std::os::fd::OwnedFd>,
    /// Return once the process started, its relay (whose pid goes to `pid_file` and whose
    /// exit status is the process's) left running.
    pub detach: bool,
    pub pid_file: Option<&'a Path>,
}

/// The VM side, implemented where the VMM is (the `isol` crate's `isol-runc`).
pub trait VmRuntime {
    /// Starts the process that becomes the VMM and returns its pid once it is ready (the
    /// root staged, the file server started) and waiting at the start gate. That process
    /// lives exactly as long as the workload and exits with its status (128+N for a signal).
    fn create(&self, req: &VmCreate<'_>) -> Result<i32, OciError>;

    /// Sends `signal` to the workload in the guest of the running VM whose state directory
    /// is `dir`.
    fn signal(&self, dir: &Path, signal: i32) -> Result<(), OciError>;

    /// Runs a process in the guest of the running VM whose state directory is `dir`;
    /// returns its exit status (0 with `detach`, once it started).
    fn exec(&self, dir: &Path, req: VmExec<'_>) -> Result<i32, OciError>;

    /// Removes what the VM kept in its state directory `dir`, the VMM gone, without ever
    /// following a mount into what it shared.
    fn clean(&self, dir: &Path) -> Result<(), OciError>;

    /// Parks every vCPU of the running VM whose state directory is `dir` (`pause`), or runs
    /// them again; returns once they are.
    fn pause(&self, dir: &Path, pause: bool) -> Result<(), OciError>;

    /// The VMM's own memory beyond guest RAM, in bytes: its cgroup's memory limit is the
    /// guest's limit and this.
    fn vmm_memory_margin(&self) -> u64;

    /// The most vCPUs the VMM gives a guest.
    fn max_vcpus(&self) -> u8;
}

/// KVM's kernel threads of a VM in its VMM's cgroup v2 `cgroup`, moved to the root cgroup
/// (`root`) so that the cgroup can freeze; their thread ids, for [`return_kthreads`].
///
/// Before Linux 6.13, KVM runs a kernel thread per VM (`kvm-nx-lpage-recovery`) in the cgroup
/// of the process that made the VM. The v2 freezer skips kernel threads but counts them, so
/// `cgroup.events` never says `frozen 1` while one is there (the lab's 6.1: `pause` of a VM
/// failed after 10 s). The root cgroup takes it (v2's rule against processes beside child
/// cgroups spares the root, not `isol`, which delegates controllers). On v1, whose freezer
/// leaves kernel threads out, and on 6.13 and later (a user worker, frozen with the VMM),
/// there is none to move.
pub fn park_kthreads(root: &Path, cgroup: &Path) -> Result<Vec<i32>, OciError> {
    let threads = cgroup.join("cgroup.threads");
    let Ok(list) = std::fs::read_to_string(&threads) else {
        return Ok(Vec::new());
    };
    let mut moved = Vec::new();
    for tid in list.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        if !is_kthread(tid) {
            continue;
        }
        let into = root.join("cgroup.procs");
        match std::fs::write(&into, tid.to_string()) {
            Ok(()) => moved.push(tid),
            // Gone meanwhile (its VM ended).
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => {
                return_kthreads(cgroup, &moved);
                return Err(OciError::state(
                    format!(
                        "move KVM's kernel thread {tid} out of {} (it keeps the cgroup from freezing) into {}",
                        cgroup.display(),
                        into.display()
                    ),
                    e,
                ));
            }
        }
    }
    Ok(moved)
}

/// Puts the kernel threads [`park_kthreads`] moved back into `cgroup` (those still there and
/// still kernel threads: a recycled id is left alone).
pub fn return_kthreads(cgroup: &Path, tids: &[i32]) {
    for &tid in tids {
        if is_kthread(tid) {
            let _ = std::fs::write(cgroup.join("cgroup.procs"), tid.to_string());
        }
    }
}

/// Whether `tid` is a kernel thread (`PF_KTHREAD` in /proc/TID/stat's flags).
fn is_kthread(tid: i32) -> bool {
    const PF_KTHREAD: u64 = 0x0020_0000;
    std::fs::read_to_string(format!("/proc/{tid}/stat"))
        .ok()
        .and_then(|s| {
            // After the command's closing parenthesis: state is field 3, flags field 9.
            let rest = &s[s.rfind(')')? + 2..];
            rest.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|flags| flags & PF_KTHREAD != 0)
}

/// A VM's RAM without a memory limit, as `isol run`'s.
pub const DEFAULT_MEMORY_MIB: u64 = 256;

/// The guest RAM of a VM for `cfg`, in bytes: its memory limit in whole MiB, else
/// [`DEFAULT_MEMORY_MIB`].
pub fn guest_memory(cfg: &isol_container::ContainerConfig) -> u64 {
    match cfg.limits.memory {
        None => DEFAULT_MEMORY_MIB << 20,
        Some(m) => m.div_ceil(1 << 20) << 20,
    }
}

/// The host's online CPUs (`/sys/devices/system/cpu/online`), if it says.
pub fn host_online_cpus() -> Option<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    let list = isol_container::cgroups::cpuset::CpuList::parse("cpu", text.trim()).ok()?;
    u32::try_from(list.iter().count()).ok()
}

/// The vCPUs of a VM with `limits`, as Kata sizes its VM: a CPU quota's CPUs rounded up
/// (`quota / period`), else the CPUs of the cpuset (`cpu.cpus`), else 1; at most the host's
/// `online` CPUs and `max`, the most the VMM gives a guest. The limits still bound the VMM's
/// cgroup (its vCPU threads), as `update` changes them; the count is fixed at boot.
pub fn guest_vcpus(limits: &isol_container::cgroups::Limits, online: Option<u32>, max: u8) -> u8 {
    let period = limits
        .cpu_period
        .unwrap_or(isol_container::cgroups::CPU_PERIOD_US)
        .max(1);
    let wanted = match (limits.cpus, limits.cpuset_cpus) {
        (Some(cpus), _) if cpus > 0.0 => {
            let quota = (cpus * period as f64).round() as u64;
            quota.div_ceil(period)
        }
        (_, Some(set)) => set.iter().count() as u64,
        _ => 1,
    };
    let cap = u64::from(max).min(online.map_or(u64::MAX, u64::from));
    u8::try_from(wanted.clamp(1, cap.max(1))).unwrap_or(max)
}

/// What `update` of a VM's resources sets on the VMM's cgroup: the CPU limits as they are
/// (they bound the vCPU threads); a memory limit as the guest's limit plus `margin`, the
/// VMM's own, as `create` made it — never below the guest's RAM (`ram`, fixed when it
/// booted), which the host would then reclaim by killing the VM. Huge page limits hold as
/// they are (the VMM uses none). What cannot be honoured is refused by name.
pub fn update_limits(
    limits: &isol_container::cgroups::Limits,
    ram: u64,
    margin: u64,
) -> Result<isol_container::cgroups::Limits, OciError> {
    let refuse = |what: &str, why: &str| {
        Err(OciError::Unsupported(format!(
            "{what} cannot be updated on the kvm backend ({BACKEND_ANNOTATION}=kvm): {why}"
        )))
    };
    if limits.pids.is_some() {
        return refuse(
            "linux.resources.pids.limit",
            "the workload's processes are in the guest, whose pids limit was set in the guest's own cgroup when it booted",
        );
    }
    if limits.memory_swap.is_some() {
        return refuse(
            "linux.resources.memory.swap",
            "guest RAM is not swapped; give the memory limit only",
        );
    }
    if !limits.block_io.is_empty() {
        return refuse(
            "linux.resources.blockIO",
            "the VM has no block device: its root is shared over virtio-fs by a virtiofsd outside the VMM's cgroup",
        );
    }
    let memory = match limits.memory {
        Some(_) if ram == 0 => {
            return refuse(
                "linux.resources.memory.limit",
                "this VM was created by an isol-runc that did not record its RAM; recreate it",
            );
        }
        Some(m) if m < ram => {
            return Err(OciError::Unsupported(format!(
                "linux.resources.memory.limit of {} MiB is below the VM's RAM ({} MiB, fixed when it booted): the VMM's cgroup would have the host kill the VM to reclaim it; give {} MiB or more",
                m >> 20,
                ram >> 20,
                ram >> 20
            )));
        }
        Some(m) => Some(m.saturating_add(margin)),
        None => None,
    };
    Ok(isol_container::cgroups::Limits {
        memory,
        cpus: limits.cpus,
        cpu_period: limits.cpu_period,
        cpu_shares: limits.cpu_shares,
        cpuset_cpus: limits.cpuset_cpus,
        cpuset_mems: limits.cpuset_mems,
        ..Default::default()
    })
}

/// The pod network namespace a kvm config joins by path (`linux.namespaces`' network entry
/// with a `path`): the VM's tap is made there and takes over its interface, its address, MAC
/// and gateway (`isol_container::network::pod`).
pub fn pod_netns(cfg: &isol_container::ContainerConfig) -> Option<&Path> {
    joined(cfg, isol_container::SharedNamespace::Net)
}

/// The path of the `kind` namespace a config joins (`linux.namespaces` with a `path`).
pub fn joined(
    cfg: &isol_container::ContainerConfig,
    kind: isol_container::SharedNamespace,
) -> Option<&Path> {
    cfg.join
        .iter()
        .find(|(ns, _)| *ns == kind)
        .map(|(_, p)| p.as_path())
}

pub(crate) fn refuse(what: &str) -> OciError {
    OciError::Unsupported(format!(
        "{what} is not supported on the kvm backend ({BACKEND_ANNOTATION}=kvm); drop it or use the container backend"
    ))
}

/// Refuses, by name, what a config asks that a VM cannot honour (yet).
pub fn check(
    spec: &oci_spec::runtime::Spec,
    cfg: &isol_container::ContainerConfig,
) -> Result<(), OciError> {
    use isol_container::NetworkMode;
    if cfg.preserve_fds > 0 {
        return Err(refuse("--preserve-fds"));
    }
    if cfg.host_namespaces.mount {
        return Err(refuse(
            "a config without a mount namespace (linux.namespaces: the runtime's, as runc runs it): a VM has its own kernel and mounts",
        ));
    }
    // Namespaces joined by path are a pod's (its sandbox's, as CRI gives every container):
    // the network's is the VM's network (the VM takes over its interface: `pod_netns`); the
    // UTS namespace's hostname is the guest's (unless the config names one); the IPC
    // namespace cannot be shared across the VM's boundary (SysV IPC and POSIX message queues
    // live in a kernel), the guest has its own. A PID, user or mount namespace (a cgroup
    // one is refused by the spec's conversion for every backend) cannot be shared either,
    // and sharing it is what the config asks: refused.
    use isol_container::SharedNamespace;
    if let Some((ns, path)) = cfg.join.iter().find(|(ns, _)| {
        !matches!(
            ns,
            SharedNamespace::Net | SharedNamespace::Uts | SharedNamespace::Ipc
        )
    }) {
        return Err(refuse(&format!(
            "joining the {} namespace at {} (linux.namespaces): a VM has its own kernel, whose processes cannot be in a host's namespace",
            ns.name(),
            path.display()
        )));
    }
    // Taken as given (no setns into them): checked to be what the config calls them, as a
    // container's setns checks them (runtime-tools' `linux_ns_path_type`).
    for (ns, path) in &cfg.join {
        if matches!(ns, SharedNamespace::Uts | SharedNamespace::Ipc) {
            isol_container::check_namespace_file(path, *ns).map_err(|e| OciError::Bundle {
                what: "config.json: linux.namespaces".into(),
                detail: e.to_string(),
            })?;
        }
    }
    let netns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|n| {
            n.iter()
                .any(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        });
    if !netns || cfg.network != NetworkMode::None {
        return Err(refuse(
            "the host's network (no network namespace in linux.namespaces): a VM has its own network stack; list a network namespace",
        ));
    }
    if cfg.user_namespace.is_some() || cfg.rootless {
        return Err(refuse("a user namespace (linux.uidMappings)"));
    }
    if !cfg.device_nodes.is_empty() {
        return Err(refuse("linux.devices"));
    }
    let l = &cfg.limits;
    if l.memory_swap.is_some_and(|s| Some(s) != l.memory) {
        return Err(refuse(
            "linux.resources.memory.swap other than the limit (guest RAM is not swapped)",
        ));
    }
    if !l.block_io.is_empty() {
        return Err(refuse(
            "linux.resources.blockIO (the VM has no block device: its root is shared over virtio-fs)",
        ));
    }
    // `hugepageLimits` hold as they are: guest RAM is not backed by huge pages, the VMM uses
    // none (kubelet sends a limit for every page size).
    let hooks = spec.hooks().clone().unwrap_or_default();
    for (name, list) in [
        ("hooks.prestart", hooks.prestart()),
        ("hooks.createRuntime", hooks.create_runtime()),
        ("hooks.createContainer", hooks.create_container()),
        ("hooks.startContainer", hooks.start_container()),
    ] {
        if list.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(refuse(name));
        }
    }
    for m in &cfg.mounts {
        match m.fstype.as_deref() {
            None => {
                let meta = std::fs::metadata(&m.source).map_err(|e| OciError::Bundle {
                    what: format!("the bind mount source {}", m.source.display()),
                    detail: e.to_string(),
                })?;
                if !meta.is_dir() && !meta.is_file() {
                    return Err(refuse(&format!(
                        "mounts: {} binds {}, which is neither a directory nor a file",
                        m.target.display(),
                        m.source.display()
                    )));
                }
            }
            Some("tmpfs" | "mqueue") => {}
            Some(other) => {
                return Err(refuse(&format!(
                    "mounts: a {other} mount at {}",
                    m.target.display()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_wins_over_the_runtime_name() {
        let mut a = BTreeMap::new();
        assert_eq!(
            Backend::select(&a, Backend::Kvm).unwrap(),
            Backend::Kvm,
            "no annotation: the default"
        );
        a.insert(BACKEND_ANNOTATION.to_string(), "container".to_string());
        assert_eq!(
            Backend::select(&a, Backend::Kvm).unwrap(),
            Backend::Container
        );
        a.insert(BACKEND_ANNOTATION.to_string(), "kvm".to_string());
        assert_eq!(
            Backend::select(&a, Backend::Container).unwrap(),
            Backend::Kvm
        );
        a.insert(BACKEND_ANNOTATION.to_string(), "qemu".to_string());
        let e = Backend::select(&a, Backend::Container)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"qemu\" is not a backend"), "{e}");
    }

    #[test]
    fn update_maps_memory_and_cpu_to_the_vmm_s_cgroup_and_refuses_the_rest() {
        use isol_container::cgroups::Limits;
        const MIB: u64 = 1 << 20;
        let (ram, margin) = (128 * MIB, 64 * MIB);
        let cpus = isol_container::cgroups::cpuset::CpuList::parse("cpu.cpus", "0-1").unwrap();
        let given = Limits {
            memory: Some(256 * MIB),
            cpus: Some(0.5),
            cpu_period: Some(50_000),
            cpu_shares: Some(2048),
            cpuset_cpus: Some(cpus),
            ..Default::default()
        };
        let l = update_limits(&given, ram, margin).unwrap();
        assert_eq!(
            l.memory,
            Some(320 * MIB),
            "the guest's limit and the margin"
        );
        assert_eq!(
            (l.cpus, l.cpu_period, l.cpu_shares, l.cpuset_cpus),
            (Some(0.5), Some(50_000), Some(2048), Some(cpus))
        );
        // The RAM itself is the least: what create gave the cgroup.
        let at_ram = Limits {
            memory: Some(ram),
            ..Default::default()
        };
        assert_eq!(
            update_limits(&at_ram, ram, margin).unwrap().memory,
            Some(192 * MIB)
        );
        let msg = |l: Limits, ram| update_limits(&l, ram, margin).unwrap_err().to_string();
        let below = msg(
            Limits {
                memory: Some(64 * MIB),
                ..Default::default()
            },
            ram,
        );
        assert!(
            below.contains(
                "memory.limit of 64 MiB is below the VM's RAM (128 MiB, fixed when it booted)"
            ) && below.contains("give 128 MiB or more"),
            "{below}"
        );
        assert!(
            msg(at_ram.clone(), 0).contains("did not record its RAM"),
            "an older state.json"
        );
        let pids = msg(
            Limits {
                pids: Some(10),
                ..Default::default()
            },
            ram,
        );
        assert!(
            pids.contains("pids.limit cannot be updated on the kvm backend"),
            "{pids}"
        );
        let swap = msg(
            Limits {
                memory: Some(ram),
                memory_swap: Some(2 * ram),
                ..Default::default()
            },
            ram,
        );
        assert!(swap.contains("memory.swap"), "{swap}");
        let mut io = Limits::default();
        io.block_io.weight = Some(100);
        assert!(msg(io, ram).contains("blockIO"));
        for m in [below, pids, swap] {
            assert!(!m.contains('\n'), "{m}");
        }
    }

    #[test]
    fn vcpus_come_from_the_quota_else_the_cpuset_else_one() {
        use isol_container::cgroups::Limits;
        use isol_container::cgroups::cpuset::CpuList;
        let quota = |cpus: f64, period: Option<u64>| Limits {
            cpus: Some(cpus),
            cpu_period: period,
            ..Default::default()
        };
        let n = |l: &Limits| guest_vcpus(l, Some(8), 32);
        assert_eq!(n(&Limits::default()), 1, "no CPU limit");
        assert_eq!(n(&quota(2.0, None)), 2, "200000/100000");
        assert_eq!(n(&quota(1.5, None)), 2, "150000/100000, rounded up");
        assert_eq!(n(&quota(0.25, Some(50_000))), 1, "below one CPU");
        assert_eq!(n(&quota(3.0, Some(50_000))), 3, "150000/50000");
        let set = Limits {
            cpuset_cpus: Some(CpuList::parse("cpu.cpus", "0,2-4").unwrap()),
            ..Default::default()
        };
        assert_eq!(n(&set), 4, "the cpuset's CPUs");
        // The quota wins over the cpuset, as in Kata.
        let both = Limits {
            cpus: Some(1.0),
            ..set.clone()
        };
        assert_eq!(n(&both), 1);
        // Capped by the host's online CPUs and by the VMM.
        assert_eq!(guest_vcpus(&quota(16.0, None), Some(2), 32), 2);
        assert_eq!(guest_vcpus(&quota(64.0, None), None, 32), 32);
        assert_eq!(guest_vcpus(&quota(64.0, None), Some(0), 32), 1);
        assert!(host_online_cpus().is_some_and(|c| c >= 1));
    }

    #[test]
    fn kernel_threads_are_told_from_processes() {
        // kthreadd is PID 2 where the host's PIDs are seen; this test's process is no kernel
        // thread.
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c == "kthreadd\n") {
            assert!(is_kthread(2));
        }
        assert!(!is_kthread(std::process::id() as i32));
        assert!(!is_kthread(i32::MAX));
        // A cgroup without cgroup.threads (v1, or none): nothing to move.
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            park_kthreads(tmp.path(), tmp.path()).unwrap(),
            Vec::<i32>::new()
        );
    }

    #[test]
    fn a_cri_sandbox_under_the_vm_runtime_name_is_a_container() {
        let mut a = BTreeMap::new();
        a.insert(CRI_CONTAINER_TYPE.to_string(), CRI_SANDBOX.to_string());
        assert_eq!(
            Backend::select(&a, Backend::Kvm).unwrap(),
            Backend::Container
        );
        // The annotation still means what it says.
        a.insert(BACKEND_ANNOTATION.to_string(), "kvm".to_string());
        assert_eq!(Backend::select(&a, Backend::Kvm).unwrap(), Backend::Kvm);
        // A pod's other containers are VMs.
        let mut a = BTreeMap::new();
        a.insert(CRI_CONTAINER_TYPE.to_string(), "container".to_string());
        assert_eq!(Backend::select(&a, Backend::Kvm).unwrap(), Backend::Kvm);
    }

    #[test]
    fn the_vm_runtime_name_defaults_to_kvm() {
        let kvm = |p: &str| Backend::default_for(Some(std::ffi::OsStr::new(p)));
        assert_eq!(kvm("/usr/local/bin/isol-runc-vm"), Backend::Kvm);
        assert_eq!(kvm("isol-runc-vm"), Backend::Kvm);
        assert_eq!(kvm("/usr/local/bin/isol-runc"), Backend::Container);
        assert_eq!(Backend::default_for(None), Backend::Container);
    }
}
