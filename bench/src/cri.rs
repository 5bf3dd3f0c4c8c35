//! The `cri` benchmark: a pod started through Kubernetes' CRI, the way a kubelet starts one,
//! on containerd 1.6's CRI plugin with one runtime handler per subject: `isol` (isol-runc: the
//! container backend), `isol-vm` (the `isol-runc-vm` link: the kvm backend) and `runc` (for
//! reference). One run is `RunPodSandbox` + `CreateContainer` + `StartContainer` and
//! `ContainerStatus` polled until the container has exited (the workload, `/bin/true`, ran):
//! what a kubelet waits for before a pod's first container has done its work. The teardown —
//! `StopContainer`, `RemoveContainer`, `StopPodSandbox`, `RemovePodSandbox` — is timed apart.
//!
//! The bench starts a containerd of its own (config, root, state, socket on a tmpfs it mounts
//! in its scratch dir: overlayfs snapshots need a filesystem that is neither overlayfs nor 9p),
//! with a CNI bridge network of its own, and imports the pause image (busybox sleeping) and the
//! workload image (busybox), both made of the very layers the other benchmarks run. Everything
//! goes with [`CriHost`]'s drop: pods, the daemon, shims, mounts, the bridge, cgroups.
//!
//! The pieces the tests' CRI client shares (tests/common/cri.rs) are public here: the CRI
//! plugin's configuration, the CNI network, the connection, a kubelet's namespace options.

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use nix::mount::{MntFlags, umount2};
use tonic::transport::{Channel, Endpoint, Uri};

use super::cancel;
use super::containerd::Containerd;
use super::report::BenchmarkReport;
use super::subjects::{Outcome, Subject, SubjectInfo, Workload};

/// The CRI plugin's containerd namespace: the images a pod uses must be there.
pub const NAMESPACE: &str = "k8s.io";
/// The bench's images in containerd.
const PAUSE_IMAGE: &str = "isol.bench/pause:latest";
const IMAGE: &str = "isol.bench/busybox:latest";
/// The bench's CNI network: a bridge and subnet of its own (the tests' is isolcri0,
/// 10.89.0.0/24; isol's isol0 is 10.88.0.0/24).
const CNI_NETWORK: &str = "isol-bench-cri";
const CNI_BRIDGE: &str = "isolbcri0";
const CNI_SUBNET: &str = "10.90.0.0/24";
/// The pods' cgroup parent (cgroupfs driver), removed after the bench.
const CGROUP_PARENT: &str = "/isol-bench-cri";
/// How often `ContainerStatus` is asked while the workload runs: often enough for the
/// milliseconds a container handler takes on hardware, not so often that the polling (each
/// call is work for containerd too) competes with the pod for the CPU.
const POLL_EVERY: Duration = Duration::from_millis(5);
/// How long a pod's container may take to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(60);

/// A runtime handler: its name (what `RunPodSandbox` and a RuntimeClass name) and its runc
/// binary. `{tmp}` in the binary's path is containerd's directory.
#[derive(Debug)]
pub struct Handler {
    pub name: &'static str,
    pub binary: String,
}

/// The CRI plugin's configuration: one runtime per handler (runc's shim with the handler's
/// binary as its runc, its state in the host's `/run/containerd/runc/k8s.io`: a longer root
/// would put a VM's `control.sock` past `SUN_LEN`), the first the default, the pause image `pause_image`, cgroupfs, the
/// CNI config directory `{tmp}/cni` (`{tmp}` is containerd's directory).
pub fn cri_plugin(handlers: &[Handler], pause_image: &str) -> String {
    let mut runtimes = String::new();
    for h in handlers {
        let key = format!(
            r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{}]"#,
            h.name
        );
        runtimes.push_str(&format!(
            "    {key}\n      runtime_type = \"io.containerd.runc.v2\"\n      {opts}\n        BinaryName = \"{bin}\"\n        SystemdCgroup = false\n",
            opts = key.replace("]", ".options]"),
            bin = h.binary,
        ));
    }
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  # A sandbox may lack CAP_SYS_RESOURCE: no oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "{default}"
{runtimes}  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{{tmp}}/cni"
"#,
        default = handlers[0].name,
    )
}

/// A CNI network `name`: a bridge `bridge` that is the pods' gateway on `subnet`, with a
/// default route through it (a VM on a pod's network takes the pod's gateway: docs/oci.md,
/// "On a pod's network"); host-local's leases in `ipam_dir`. containerd adds loopback.
pub fn cni_conflist(name: &str, bridge: &str, subnet: &str, ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [{
            "type": "bridge",
            "bridge": bridge,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": subnet}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": ipam_dir,
            },
        }],
    })
    .to_string()
}

/// A CRI client over containerd's unix socket `socket`; every call fails after 60 s, saying
/// so.
pub async fn connect(socket: PathBuf) -> Result<RuntimeServiceClient<Channel>, String> {
    let channel = Endpoint::try_from("http://[::]:50051")
        .map_err(|e| e.to_string())?
        .timeout(Duration::from_secs(60))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .map_err(|e| format!("cannot connect to containerd's CRI socket: {e}"))?;
    Ok(RuntimeServiceClient::new(channel))
}

/// A kubelet's defaults: the pod's network and IPC namespaces shared by its containers, a PID
/// namespace per container.
pub fn namespace_options() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A pod named `name` (its hostname too) with the uid `uid`, logging to `log_dir`, its
/// cgroups below `cgroup_parent` (cgroupfs), with a kubelet's namespace options.
pub fn pod_config(name: &str, uid: &str, log_dir: &Path, cgroup_parent: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the cri benchmark needs: the runtimes of its handlers, the image's layers and
/// environment, the guest kernel for the VM handler.
#[derive(Debug)]
pub struct CriSetup<'a> {
    /// isol-runc, if found beside the isol binary.
    pub isol_runc: Option<PathBuf>,
    /// The guest kernel: the `isol-vm` handler is measured only with it.
    pub kernel: Option<PathBuf>,
    /// runc, if runc is among the peers and installed.
    pub runc: Option<PathBuf>,
    pub layers: &'a [PathBuf],
    pub env: &'a [String],
    pub work: &'a Path,
}

/// A kubelet's host: containerd with the CRI plugin and the bench's handlers, the CNI network,
/// the images; its drop removes all of it.
#[derive(Debug)]
pub struct CriHost {
    ctrd: Containerd,
    rt: tokio::runtime::Runtime,
    client: Option<RuntimeServiceClient<Channel>>,
}

impl CriHost {
    /// Starts containerd with the CRI plugin and `handlers`, and imports the images.
    pub fn start(handlers: &[Handler], s: &CriSetup) -> Result<CriHost, String> {
        if !Path::new("/usr/lib/cni/bridge").exists() {
            return Err("not installed: no /usr/lib/cni/bridge; install containernetworking-plugins (./setup.sh does)".into());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the CRI client's runtime: {e}"))?;
        let ctrd = Containerd::new(
            s.work.join("cri"),
            NAMESPACE,
            CGROUP_PARENT,
            Some(&cri_plugin(handlers, PAUSE_IMAGE)),
        )?;
        let mut host = CriHost {
            ctrd,
            rt,
            client: None,
        };
        let dir = host.ctrd.dir().to_path_buf();
        for d in ["cni", "bin", "pod-logs"] {
            fs::create_dir_all(dir.join(d))
                .map_err(|e| format!("cannot create {}: {e}", dir.join(d).display()))?;
        }
        host.ctrd.write(
            "cni/10-isol-bench-cri.conflist",
            &cni_conflist(CNI_NETWORK, CNI_BRIDGE, CNI_SUBNET, &dir.join("cni-ipam")),
        )?;
        if let Some(runc) = &s.isol_runc {
            // The VM runtime's name, as setup.sh links it beside isol-runc.
            std::os::unix::fs::symlink(runc, dir.join("bin/isol-runc-vm"))
                .map_err(|e| format!("cannot link isol-runc-vm: {e}"))?;
        }
        // isol-runc-vm boots the kernel the rest of the bench boots.
        host.ctrd.start(s.kernel.as_deref())?;
        let (rt, client, socket) = (&host.rt, &mut host.client, host.ctrd.socket());
        host.ctrd.wait_until("containerd's CRI", || {
            let Ok(mut c) = rt.block_on(connect(socket.clone())) else {
                return false;
            };
            let up = rt.block_on(c.version(VersionRequest::default())).is_ok();
            *client = up.then_some(c);
            up
        })?;
        let env = serde_json::json!(s.env);
        host.ctrd.import(
            PAUSE_IMAGE,
            s.layers,
            serde_json::json!({"Entrypoint": ["sleep", "infinity"], "Env": env}),
        )?;
        host.ctrd.import(
            IMAGE,
            s.layers,
            serde_json::json!({"Cmd": ["sh"], "Env": env}),
        )?;
        Ok(host)
    }

    fn client(&mut self) -> RuntimeServiceClient<Channel> {
        self.client.clone().expect("connected in start")
    }

    /// One timed run of `w` in a pod on `handler`: see the module documentation.
    fn run_pod(&mut self, handler: &str, seq: u64, w: &Workload) -> Result<Outcome, String> {
        let mut cri = self.client();
        let name = pod_name(std::process::id(), handler, seq);
        let log_dir = self.ctrd.dir().join("pod-logs");
        let pod_config = pod_config(&name, &name, &log_dir, CGROUP_PARENT);
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "workload".into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: w.args.clone(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespace_options()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let handler = handler.to_string();
        let rt = &self.rt;
        let mut pod = None;
        let mut ctr = None;
        let t0 = Instant::now();
        let started = rt.block_on(async {
            let id = cri
                .run_pod_sandbox(RunPodSandboxRequest {
                    config: Some(pod_config.clone()),
                    runtime_handler: handler.clone(),
                })
                .await
                .map_err(|e| format!("RunPodSandbox: {}", e.message()))?
                .into_inner()
                .pod_sandbox_id;
            pod = Some(id.clone());
            let c = cri
                .create_container(CreateContainerRequest {
                    pod_sandbox_id: id,
                    config: Some(config),
                    sandbox_config: Some(pod_config),
                })
                .await
                .map_err(|e| format!("CreateContainer: {}", e.message()))?
                .into_inner()
                .container_id;
            ctr = Some(c.clone());
            cri.start_container(StartContainerRequest {
                container_id: c.clone(),
            })
            .await
            .map_err(|e| format!("StartContainer: {}", e.message()))?;
            wait_exited(&mut cri, &c).await
        });
        let wall = t0.elapsed();
        let t1 = Instant::now();
        let removed = rt.block_on(remove(&mut cri, pod.as_deref(), ctr.as_deref()));
        let teardown = t1.elapsed();
        let exit = started.map_err(|e| format!("{e} ({})", self.ctrd.log_tail()))?;
        removed?;
        if exit != w.expect {
            return Err(format!(
                "the pod's container `{}` exited with {exit} instead of {}",
                w.args.join(" "),
                w.expect
            ));
        }
        Ok(Outcome {
            wall_ms: wall.as_secs_f64() * 1e3,
            phases: None,
            prep_ms: None,
            cleanup_ms: Some(teardown.as_secs_f64() * 1e3),
        })
    }

    /// Stops and removes every pod left (a failed or cancelled run's).
    fn remove_all(&mut self) {
        let Some(mut cri) = self.client.clone() else {
            return;
        };
        self.rt.block_on(async {
            let Ok(pods) = cri.list_pod_sandbox(ListPodSandboxRequest::default()).await else {
                return;
            };
            for pod in pods.into_inner().items {
                let _ = remove(&mut cri, Some(&pod.id), None).await;
            }
        });
    }
}

/// Polls the container `id` until it has exited; its exit code.
async fn wait_exited(cri: &mut RuntimeServiceClient<Channel>, id: &str) -> Result<i32, String> {
    let deadline = Instant::now() + EXIT_WITHIN;
    loop {
        let status = cri
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(|e| format!("ContainerStatus: {}", e.message()))?
            .into_inner()
            .status
            .ok_or("ContainerStatus: no status")?;
        if status.state == ContainerState::ContainerExited as i32 {
            return Ok(status.exit_code);
        }
        if Instant::now() > deadline || cancel::cancelled() {
            return Err(format!(
                "the pod's container did not exit within {} s",
                EXIT_WITHIN.as_secs()
            ));
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A kubelet's teardown: stops and removes the container `ctr`, then the pod `pod`.
async fn remove(
    cri: &mut RuntimeServiceClient<Channel>,
    pod: Option<&str>,
    ctr: Option<&str>,
) -> Result<(), String> {
    if let Some(ctr) = ctr {
        cri.stop_container(StopContainerRequest {
            container_id: ctr.into(),
            timeout: 10,
        })
        .await
        .map_err(|e| format!("StopContainer: {}", e.message()))?;
        cri.remove_container(RemoveContainerRequest {
            container_id: ctr.into(),
        })
        .await
        .map_err(|e| format!("RemoveContainer: {}", e.message()))?;
    }
    if let Some(pod) = pod {
        cri.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .map_err(|e| format!("StopPodSandbox: {}", e.message()))?;
        cri.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.into(),
        })
        .await
        .map_err(|e| format!("RemovePodSandbox: {}", e.message()))?;
    }
    Ok(())
}

impl Drop for CriHost {
    fn drop(&mut self) {
        self.remove_all();
        self.client = None;
        self.ctrd.stop();
        delete_bridge();
        // A pod whose teardown failed keeps its network.
        let me = std::process::id();
        release_networks(|bench| bench == me);
    }
}

/// A bench's pod's name (its hostname too): `isol-bench-<bench's pid>-<handler>-<seq>`. CNI
/// keeps it with a pod's network (`K8S_POD_NAME`), so that the next bench finds a killed
/// one's: [`release_networks`].
fn pod_name(bench: u32, handler: &str, seq: u64) -> String {
    format!("{POD_PREFIX}{bench}-{handler}-{seq}")
}

const POD_PREFIX: &str = "isol-bench-";

/// CNI's DEL leaves the bridge.
fn delete_bridge() {
    let _ = Command::new("ip")
        .args(["link", "del", CNI_BRIDGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Ends and removes what the [`CriHost`] of the SIGKILLed bench whose scratch directory is
/// `work` left: its containerd's (the shims of its socket with their containers, its mounts,
/// its directory, the pods' cgroups: [`super::containerd::release`]), the CNI bridge, and the
/// handlers' runtime state (runc's root for the CRI's namespace) of the containers whose
/// bundle was in `work`.
pub(crate) fn release(work: &Path) {
    super::containerd::release(&work.join("cri"), CGROUP_PARENT);
    delete_bridge();
    let prefix = format!("{}/", work.display());
    for e in fs::read_dir(RUNC_STATE).into_iter().flatten().flatten() {
        // Or no state at all: a create the kill cut short (never a container's).
        let ours = match fs::read_to_string(e.path().join("state.json")) {
            Ok(t) => serde_json::from_str::<serde_json::Value>(&t)
                .ok()
                .and_then(|v| v["bundle"].as_str().map(|b| b.starts_with(&prefix)))
                .unwrap_or(false),
            Err(_) => fs::read_dir(e.path()).is_ok_and(|mut d| d.next().is_none()),
        };
        if ours {
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// runc's (and isol-runc's) state root for the CRI's containerd namespace, as runc's shim
/// passes it by default.
const RUNC_STATE: &str = "/run/containerd/runc/k8s.io";

/// Where containerd 1.6's CNI library keeps what each network's ADD gave a pod, for its DEL
/// (`<network>-<sandbox id>-<interface>`: loopback's and the bench's bridge's). containerd has
/// no setting for it: a bench that is killed leaves its pods' results there, with the pods'
/// network namespaces that they name (`/run/netns/cni-…`, made by containerd).
const CNI_RESULTS: &str = "/var/lib/cni/results";

/// Removes the CNI results of the pods of the benches `dead` says are gone (by the bench pid
/// in the pod's name: [`pod_name`]), and the network namespaces they name, unmounted.
pub(crate) fn release_networks(dead: impl Fn(u32) -> bool) {
    for e in fs::read_dir(CNI_RESULTS).into_iter().flatten().flatten() {
        let Ok(text) = fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let bench = v["cniArgs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a[0] == "K8S_POD_NAME")
            .and_then(|a| a[1].as_str()?.strip_prefix(POD_PREFIX)?.split('-').next())
            .and_then(|pid| pid.parse().ok());
        if !bench.is_some_and(&dead) {
            continue;
        }
        for netns in v["result"]["interfaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["sandbox"].as_str())
            .filter(|p| {
                let p = Path::new(p);
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("cni-"))
                    && [Path::new("/run/netns"), Path::new("/var/run/netns")]
                        .contains(&p.parent().unwrap_or(p))
            })
        {
            let _ = umount2(netns, MntFlags::MNT_DETACH);
            let _ = fs::remove_file(netns);
        }
        let _ = fs::remove_file(e.path());
    }
}

/// One handler of the shared [`CriHost`]: a pod per run.
#[derive(Debug)]
pub struct CriSubject {
    info: SubjectInfo,
    host: Rc<RefCell<CriHost>>,
    handler: &'static str,
    seq: u64,
}

impl CriSubject {
    /// The handler `handler` (`isol`, `isol-vm`, `runc`) whose runtime is `version`.
    pub fn new(
        host: Rc<RefCell<CriHost>>,
        handler: &'static str,
        kind: &'static str,
        backend: &'static str,
        version: String,
    ) -> CriSubject {
        let label = match kind {
            "isol" => format!("{handler} {} ({backend})", env!("CARGO_PKG_VERSION")),
            _ => format!("{handler} {}", super::subjects::short_version(&version)),
        };
        let containerd = host.borrow().ctrd.version.clone();
        CriSubject {
            info: SubjectInfo {
                name: handler.into(),
                label,
                kind,
                backend: Some(backend),
                command: format!(
                    "CRI RunPodSandbox(runtime_handler={handler}) + CreateContainer + StartContainer + ContainerStatus until EXITED"
                ),
                rootfs: format!(
                    "containerd's overlayfs snapshot of the image, made by containerd inside the timed run{}",
                    if backend == "kvm" {
                        ", shared with the VM over virtio-fs"
                    } else {
                        ""
                    }
                ),
                version: format!("{version}; {containerd}"),
            },
            host,
            handler,
            seq: 0,
        }
    }
}

impl Subject for CriSubject {
    fn info(&self) -> &SubjectInfo {
        &self.info
    }

    fn run(&mut self, w: &Workload) -> Result<Outcome, String> {
        self.seq += 1;
        self.host.borrow_mut().run_pod(self.handler, self.seq, w)
    }
}

/// The handlers of the bench's CRI host: `isol` and, with the kernel, `isol-vm`, with
/// isol-runc; `runc` with runc.
pub fn handlers(s: &CriSetup) -> Vec<Handler> {
    let mut handlers = Vec::new();
    if let Some(r) = &s.isol_runc {
        handlers.push(Handler {
            name: "isol",
            binary: r.display().to_string(),
        });
        if s.kernel.is_some() {
            handlers.push(Handler {
                name: "isol-vm",
                binary: "{tmp}/bin/isol-runc-vm".into(),
            });
        }
    }
    if let Some(r) = &s.runc {
        handlers.push(Handler {
            name: "runc",
            binary: r.display().to_string(),
        });
    }
    handlers
}

impl BenchmarkReport {
    /// The cri benchmark's ratios beyond each subject's against its side's peers: the VM
    /// handler's against the container handler's.
    pub(crate) fn add_cri_ratios(&mut self) {
        if let (Some(vm), Some(ctr)) = (self.median("isol-vm"), self.median("isol")) {
            self.ratios
                .entry("isol-vm".into())
                .or_default()
                .insert("isol".into(), super::stats::round3(vm / ctr));
        }
    }

    /// What the cri benchmark's numbers mean.
    pub(crate) fn cri_reading(&self) -> String {
        let mut lines = Vec::new();
        match (self.median("isol"), self.median("runc")) {
            (Some(i), Some(r)) => lines.push(format!(
                "A pod's first container has run `/bin/true` and exited, through the CRI, in {i:.2} ms on isol-runc: {:.2}× runc's {r:.2} ms.",
                i / r
            )),
            (Some(i), None) => lines.push(format!(
                "A pod's first container has run `/bin/true` and exited, through the CRI, in {i:.2} ms on isol-runc (median); runc did not run to compare with."
            )),
            _ => lines.push(
                "isol-runc's container handler has no result in this benchmark, so there is nothing to compare.".into(),
            ),
        }
        if let Some(vm) = self.median("isol-vm") {
            let vs = self
                .ratios
                .get("isol-vm")
                .and_then(|r| r.get("isol"))
                .map(|r| format!(": {r:.2}× the container handler's time"))
                .unwrap_or_default();
            lines.push(format!(
                "In a microVM (handler isol-vm) it takes {vm:.2} ms{vs}."
            ));
        }
        let teardown: Vec<String> = self
            .subjects
            .iter()
            .filter_map(|s| Some(format!("{} {:.2} ms", s.info.name, s.cleanup_ms?.median)))
            .collect();
        if !teardown.is_empty() {
            lines.push(format!(
                "Teardown (StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox), medians: {}.",
                teardown.join(", ")
            ));
        }
        lines.join(" ")
    }
}
