//! Kubernetes' CRI for the tests (tests/cri.rs, tests/cri_vm.rs): a containerd 1.6 of the
//! test's own with its CRI plugin and runtime handlers whose runc is isol-runc, a CNI bridge
//! network (Debian's containernetworking-plugins), the pause and workload images, a small CRI
//! client (the `k8s-cri` crate's types and tonic client over containerd's unix socket), and
//! the check that nothing is left afterwards: no pod or container in containerd, no
//! isol-runc state, shim, VMM or virtiofsd, link, network namespace, CNI result, mount or
//! cgroup.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use isol_bench::cri::{Handler, NAMESPACE, namespace_options};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

use super::containerd::Containerd;

/// Where runc's shim keeps its runc's state for that namespace (`--root`).
pub const RUNC_ROOT: &str = "/run/containerd/runc/k8s.io";
pub const PAUSE_IMAGE: &str = "isol.test/pause:latest";
pub const IMAGE: &str = "isol.test/busybox:latest";
/// The CNI network: a bridge of its own, on a subnet that is not isol0's (10.88.0.0/24).
pub const CNI_NETWORK: &str = "isol-cri";
pub const CNI_BRIDGE: &str = "isolcri0";
pub const CNI_SUBNET: &str = "10.89.0.0/24";
/// The first three octets of [`CNI_SUBNET`]; `.1` is the bridge (the pods' gateway).
pub const CNI_PREFIX: &str = "10.89.0.";
/// The pods' cgroup parent (cgroupfs driver): below it, one cgroup per container.
pub const CGROUP_PARENT: &str = "/isol-cri-pod";

/// The CRI plugin's configuration for the tests' pause image: see
/// [`isol_bench::cri::cri_plugin`].
pub fn cri_plugin(handlers: &[Handler]) -> String {
    isol_bench::cri::cri_plugin(handlers, PAUSE_IMAGE)
}

/// What the host has before the test, to compare after it.
#[derive(Debug, PartialEq)]
pub struct HostState {
    links: BTreeSet<String>,
    netns: BTreeSet<String>,
    cni_results: BTreeSet<String>,
    /// The entries of [`RUNC_ROOT`].
    runc_state: BTreeSet<String>,
}

fn names(dir: &str) -> BTreeSet<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub fn host_state() -> HostState {
    let o = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    let links = super::stdout(&o)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect();
    HostState {
        links,
        netns: names("/run/netns"),
        cni_results: names("/var/lib/cni/results"),
        runc_state: names(RUNC_ROOT),
    }
}

/// Processes whose command line names `needle` (containerd's shims name its temp dir:
/// `-address DIR/sock`), other than `except` and this one.
fn processes_naming(needle: &str, except: u32) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == except || pid == std::process::id() {
            continue;
        }
        let Ok(cmdline) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

pub async fn connect(socket: PathBuf) -> RuntimeServiceClient<Channel> {
    isol_bench::cri::connect(socket).await.unwrap()
}

/// A pod named `name` (its hostname too) with the uid `uid`, logging to `log_dir`.
pub fn pod_config(name: &str, uid: &str, log_dir: &Path) -> PodSandboxConfig {
    isol_bench::cri::pod_config(name, uid, log_dir, CGROUP_PARENT)
}

/// `/proc/<pid>/ns/<ns>` of a host process, as `readlink` prints it (`net:[4026…]`).
pub fn ns_link(pid: i64, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

/// The host pid in a verbose status's `info` (containerd's).
fn info_pid(info: &std::collections::HashMap<String, String>) -> i64 {
    let info: serde_json::Value =
        serde_json::from_str(info.get("info").expect("verbose info")).unwrap();
    info["pid"].as_i64().expect("a pid in the verbose info")
}

/// The sandbox's host pid, from its verbose status.
pub async fn sandbox_pid(cri: &mut RuntimeServiceClient<Channel>, id: &str) -> i64 {
    let status = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    info_pid(&status.info)
}

/// A container's host pid, from its verbose status: its init's, or for a VM the VMM's.
pub async fn container_pid(cri: &mut RuntimeServiceClient<Channel>, id: &str) -> i64 {
    let status = cri
        .container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner();
    info_pid(&status.info)
}

/// A container `name` of the workload image running `sh -c SCRIPT`, logging to `NAME.log`,
/// with a memory limit of `memory_mib` and the kubelet's namespace options.
pub fn container_config(name: &str, script: &str, memory_mib: i64) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into()],
        args: vec![script.into()],
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: memory_mib << 20,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// Runs the pod `config` on `handler`: its id and IP (checked to be ready, on `handler`, with
/// an address on the CNI bridge's subnet).
pub async fn run_pod(
    cri: &mut RuntimeServiceClient<Channel>,
    config: &PodSandboxConfig,
    handler: &str,
) -> Result<(String, String), String> {
    let pod = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox on {handler}: {e}"))?
        .into_inner()
        .pod_sandbox_id;
    let status = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .map_err(|e| format!("PodSandboxStatus: {e}"))?
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(status.runtime_handler, handler);
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    assert!(
        ip.starts_with(CNI_PREFIX),
        "the pod's IP {ip:?} is not on the CNI bridge's subnet {CNI_SUBNET}"
    );
    Ok((pod, ip))
}

pub async fn container_state(cri: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
    cri.container_status(ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .expect("a status")
}

/// Creates the container `config` in the pod `pod`; its id.
pub async fn create_container(
    cri: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, String> {
    Ok(cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .map_err(|e| format!("CreateContainer: {e}"))?
        .into_inner()
        .container_id)
}

/// Creates and starts the container `config` in the pod `pod`; its id, once running.
pub async fn start_container(
    cri: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<String, String> {
    let ctr = create_container(cri, pod, pod_config, config).await?;
    assert_eq!(
        container_state(cri, &ctr).await.state,
        ContainerState::ContainerCreated as i32
    );
    cri.start_container(StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .map_err(|e| format!("StartContainer: {e}"))?;
    assert_eq!(
        container_state(cri, &ctr).await.state,
        ContainerState::ContainerRunning as i32
    );
    Ok(ctr)
}

/// `ExecSync` of `cmd` in the container `id`.
pub async fn exec_sync(
    cri: &mut RuntimeServiceClient<Channel>,
    id: &str,
    cmd: &[&str],
) -> Result<ExecSyncResponse, String> {
    Ok(cri
        .exec_sync(ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 60,
        })
        .await
        .map_err(|e| format!("ExecSync {cmd:?} in {id}: {e}"))?
        .into_inner())
}

/// Waits for the container `id` to exit; its status.
pub async fn wait_exited(cri: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = container_state(cri, id).await;
        if s.state == ContainerState::ContainerExited as i32 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "the container never exited: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops and removes the containers `ctrs` and then the pod `pod`, as a kubelet does.
pub async fn remove_pod(
    cri: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    ctrs: &[&str],
) -> Result<(), String> {
    for ctr in ctrs {
        cri.stop_container(StopContainerRequest {
            container_id: ctr.to_string(),
            timeout: 10,
        })
        .await
        .map_err(|e| format!("StopContainer {ctr}: {e}"))?;
        cri.remove_container(RemoveContainerRequest {
            container_id: ctr.to_string(),
        })
        .await
        .map_err(|e| format!("RemoveContainer {ctr}: {e}"))?;
    }
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .map_err(|e| format!("StopPodSandbox: {e}"))?;
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.into(),
    })
    .await
    .map_err(|e| format!("RemovePodSandbox: {e}"))?;
    Ok(())
}

/// Neither pods nor containers left in the CRI.
pub async fn assert_empty(cri: &mut RuntimeServiceClient<Channel>) -> Result<(), String> {
    let pods = cri
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .map_err(|e| format!("ListPodSandbox: {e}"))?
        .into_inner()
        .items;
    assert!(pods.is_empty(), "pods left: {pods:?}");
    let containers = cri
        .list_containers(ListContainersRequest::default())
        .await
        .map_err(|e| format!("ListContainers: {e}"))?
        .into_inner()
        .containers;
    assert!(containers.is_empty(), "containers left: {containers:?}");
    Ok(())
}

/// Stops and removes every pod (and so its containers), as a kubelet would, after a failure.
async fn remove_pods(ctrd: &Containerd) {
    let mut cri = connect(ctrd.socket()).await;
    let Ok(pods) = cri.list_pod_sandbox(ListPodSandboxRequest::default()).await else {
        return;
    };
    for pod in pods.into_inner().items {
        let id = pod.id;
        if let Err(e) = cri
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
        {
            eprintln!("cleanup: StopPodSandbox {id}: {e}");
        }
        if let Err(e) = cri
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
        {
            eprintln!("cleanup: RemovePodSandbox {id}: {e}");
        }
    }
}

/// The bridge the CNI plugin makes stays after the pods (CNI's DEL leaves it): removed on
/// drop, whatever the test's outcome.
struct Bridge;

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", CNI_BRIDGE])
            .output();
    }
}

/// A kubelet's host: containerd with the CRI plugin and `handlers`, the CNI network, the pause
/// image (busybox sleeping until the sandbox is stopped) and the workload image (busybox)
/// imported, a pod log directory; [`CriHost::finish`] checks that nothing is left.
pub struct CriHost {
    pub ctrd: Containerd,
    pub log_dir: PathBuf,
    before: HostState,
    rt: tokio::runtime::Runtime,
    bridge: Bridge,
    /// Whether the pods run VMs: then any isol-vmm left is one of theirs.
    pub vms: bool,
}

impl CriHost {
    pub fn start(handlers: &[Handler]) -> CriHost {
        assert!(
            Path::new("/usr/lib/cni/bridge").exists(),
            "/usr/lib/cni/bridge is missing: run ./setup.sh (it installs containernetworking-plugins)"
        );
        let before = host_state();
        let ctrd = Containerd::start(NAMESPACE, &cri_plugin(handlers));
        let bridge = Bridge;
        let tmp = ctrd.tmp.path().to_path_buf();
        fs::create_dir_all(tmp.join("cni")).unwrap();
        fs::write(
            tmp.join("cni/10-isol-cri.conflist"),
            isol_bench::cri::cni_conflist(
                CNI_NETWORK,
                CNI_BRIDGE,
                CNI_SUBNET,
                &tmp.join("cni-ipam"),
            ),
        )
        .unwrap();
        let env = serde_json::json!(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
        ctrd.import_busybox(
            PAUSE_IMAGE,
            serde_json::json!({"Entrypoint": ["sleep", "infinity"], "Env": env}),
        );
        ctrd.import_busybox(IMAGE, serde_json::json!({"Cmd": ["sh"], "Env": env}));
        let log_dir = tmp.join("pod-logs");
        fs::create_dir(&log_dir).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        CriHost {
            ctrd,
            log_dir,
            before,
            rt,
            bridge,
            vms: false,
        }
    }

    /// Runs the kubelet's part, `work`, catching its panic for [`CriHost::finish`].
    pub fn run(
        &self,
        work: impl std::future::Future<Output = Result<(), String>>,
    ) -> std::thread::Result<Result<(), String>> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.rt.block_on(work)))
    }

    /// After [`CriHost::run`]: whatever happened, removes every pod (a shim outlives
    /// containerd: its containers would too), and fails with containerd's log if the work
    /// failed. Then nothing may be left: no pod or container in containerd, no isol-runc
    /// state, no shim, VMM or virtiofsd, link, network namespace, CNI result, mount or cgroup.
    pub fn finish(self, result: std::thread::Result<Result<(), String>>) {
        self.rt.block_on(remove_pods(&self.ctrd));
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}\ncontainerd's log:\n{}", self.ctrd.log()),
            Err(panic) => {
                eprintln!("containerd's log:\n{}", self.ctrd.log());
                std::panic::resume_unwind(panic);
            }
        }

        // What another run left there before this test (a SIGKILLed bench's cut-short create)
        // is not this test's.
        let left: Vec<_> = names(RUNC_ROOT)
            .difference(&self.before.runc_state)
            .cloned()
            .collect();
        assert!(left.is_empty(), "isol-runc state left: {left:?}");
        let o = self.ctrd.ctr(&["container", "ls", "-q"]);
        assert_eq!(super::stdout(&o).trim(), "", "containers left");
        let tmp = self.ctrd.tmp.path().display().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut others = processes_naming(&tmp, self.ctrd.pid());
            // A VM's virtiofsd names its container's state directory; isol-vmm its id only:
            // with VMs (in the lab, a host of the test's own) any isol-vmm is the test's.
            others.extend(processes_naming(RUNC_ROOT, 0));
            if self.vms {
                others.extend(processes_naming("isol-vmm", 0));
            }
            if others.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "processes left: {others:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        let CriHost {
            ctrd,
            before,
            bridge,
            ..
        } = self;
        drop(ctrd);
        drop(bridge);
        assert_eq!(
            host_state(),
            before,
            "links, network namespaces or CNI results left"
        );
        super::assert_no_leftovers("CRI pods");
    }
}
