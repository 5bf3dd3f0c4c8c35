//! The kvm backend behind runc's command line: a bundle's workload in an isol microVM
//! (docs/oci.md, "The kvm backend").
//!
//! Which backend runs a container: the config's annotation [`BACKEND_ANNOTATION`]
//! (`kvm` or `container`), else the runtime's name — invoked as [`VM_RUNTIME_NAME`] (a link to
//! `isol-runc`, for clients that name a runtime binary rather than pass annotations, such as a
//! Kubernetes RuntimeClass handler), kvm; else container.
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

    /// The backend of a config with these annotations: the annotation's, else `default`.
    pub fn select(
        annotations: &BTreeMap<String, String>,
        default: Backend,
    ) -> Result<Backend, OciError> {
        match annotations.get(BACKEND_ANNOTATION).map(String::as_str) {
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
}

/// The pod network namespace a kvm config joins by path (`linux.namespaces`' network entry
/// with a `path`): the VM's tap is made there and takes over its interface, its address, MAC
/// and gateway (`isol_container::network::pod`).
pub fn pod_netns(cfg: &isol_container::ContainerConfig) -> Option<&Path> {
    cfg.join
        .iter()
        .find(|(ns, _)| *ns == isol_container::SharedNamespace::Net)
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
    // A network namespace by path is a pod's (the pause container's, configured by a CNI
    // plugin): the VM takes over its interface (`pod_netns`). Any other is refused.
    if let Some((ns, _)) = cfg
        .join
        .iter()
        .find(|(ns, _)| *ns != isol_container::SharedNamespace::Net)
    {
        return Err(refuse(&format!(
            "joining a {ns:?} namespace by path (linux.namespaces): a VM has its own kernel"
        )));
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
    if !cfg.sysctl.is_empty() {
        return Err(refuse("linux.sysctl"));
    }
    if !cfg.masked_paths.is_empty() || !cfg.readonly_paths.is_empty() {
        return Err(refuse(
            "linux.maskedPaths or linux.readonlyPaths beyond runc's defaults",
        ));
    }
    if !cfg.domainname.is_empty() {
        return Err(refuse("domainname"));
    }
    if cfg.umask.is_some_and(|u| u != 0o022) {
        return Err(refuse("process.user.umask other than 0022"));
    }
    if cfg.privileges.inheritable != 0 || cfg.privileges.ambient != 0 {
        return Err(refuse(
            "process.capabilities.inheritable or ambient (the guest gives the workload the bounding set's)",
        ));
    }
    let l = &cfg.limits;
    if l.cpus.is_some()
        || l.memory_swap.is_some_and(|s| Some(s) != l.memory)
        || l.cpuset_cpus.is_some()
        || l.cpuset_mems.is_some()
    {
        return Err(refuse(
            "linux.resources.cpu (quota, cpus, mems) or memory.swap: give memory and pids limits only",
        ));
    }
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
    fn the_vm_runtime_name_defaults_to_kvm() {
        let kvm = |p: &str| Backend::default_for(Some(std::ffi::OsStr::new(p)));
        assert_eq!(kvm("/usr/local/bin/isol-runc-vm"), Backend::Kvm);
        assert_eq!(kvm("isol-runc-vm"), Backend::Kvm);
        assert_eq!(kvm("/usr/local/bin/isol-runc"), Backend::Container);
        assert_eq!(Backend::default_for(None), Backend::Container);
    }
}
