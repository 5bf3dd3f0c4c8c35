//! Kubernetes' Container Runtime Interface on isol: the gRPC API the kubelet speaks, served by
//! containerd 1.6's CRI plugin, with a runtime handler `isol` whose runc binary is isol-runc.
//! The test is the kubelet: a small CRI client (the `k8s-cri` crate's types and tonic client,
//! over containerd's unix socket) runs a pod whose sandbox ("pause") image it built and
//! imported, with a CNI bridge network (Debian's containernetworking-plugins), then a
//! container in that pod: it joins the sandbox's network, IPC and UTS namespaces by path,
//! `ExecSync` runs in it, `UpdateContainerResources` changes its memory limit and cpuset, its exit code
//! and its CRI log are checked, and everything is stopped and removed. Nothing may be left:
//! containerd's and isol-runc's state, cgroups, mounts, the pod's network namespace and veth,
//! CNI's cache, processes.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::containerd::Containerd;
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

/// The CRI plugin's containerd namespace: the images a pod uses must be there.
const NAMESPACE: &str = "k8s.io";
const PAUSE_IMAGE: &str = "isol.test/pause:latest";
const IMAGE: &str = "isol.test/busybox:latest";
const HANDLER: &str = "isol";
/// The CNI network: a bridge of its own, on a subnet that is not isol0's (10.88.0.0/24).
const CNI_NETWORK: &str = "isol-cri";
const CNI_BRIDGE: &str = "isolcri0";
const CNI_SUBNET: &str = "10.89.0.0/24";
/// The pod's cgroup parent (cgroupfs driver): below it, one cgroup per container.
const CGROUP_PARENT: &str = "/isol-cri-pod";
const NS_POD: i32 = NamespaceMode::Pod as i32;
const NS_CONTAINER: i32 = NamespaceMode::Container as i32;

/// The CRI plugin's configuration: the `isol` runtime handler (runc's shim with isol-runc as
/// its runc), the pause image, cgroupfs, the CNI config directory. `{tmp}` is containerd's
/// temp dir.
fn cri_plugin() -> String {
    format!(
        r#"[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # This sandbox lacks CAP_SYS_RESOURCE: no oom_score_adj below containerd's own.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "{HANDLER}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{HANDLER}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{HANDLER}.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{{tmp}}/cni"
"#,
        runc = env!("CARGO_BIN_EXE_isol-runc"),
    )
}

/// A bridge network; host-local's leases in containerd's temp dir. containerd adds loopback.
fn cni_conflist(tmp: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [{
            "type": "bridge",
            "bridge": CNI_BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": CNI_SUBNET}]],
                "dataDir": tmp.join("cni-ipam"),
            },
        }],
    })
    .to_string()
}

/// What the host has before the test, to compare after it.
#[derive(Debug, PartialEq)]
struct HostState {
    links: BTreeSet<String>,
    netns: BTreeSet<String>,
    cni_results: BTreeSet<String>,
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

fn host_state() -> HostState {
    let o = std::process::Command::new("ip")
        .args(["-o", "link"])
        .output()
        .unwrap();
    let links = common::stdout(&o)
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        .collect();
    HostState {
        links,
        netns: names("/run/netns"),
        cni_results: names("/var/lib/cni/results"),
    }
}

/// Processes whose command line names `dir` (containerd's shims do: `-address DIR/sock`),
/// other than `except`.
fn processes_naming(dir: &Path, except: u32) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
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
        if cmdline.contains(&needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

async fn connect(socket: PathBuf) -> RuntimeServiceClient<Channel> {
    let channel = Endpoint::try_from("http://[::]:50051")
        .unwrap()
        // No call may hang the suite: each one fails after this, saying so.
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
        .expect("connect to containerd's CRI socket");
    RuntimeServiceClient::new(channel)
}

/// A kubelet's defaults: the pod's network and IPC namespaces shared by its containers, a PID
/// namespace per container.
fn namespace_options() -> NamespaceOption {
    NamespaceOption {
        network: NS_POD,
        pid: NS_CONTAINER,
        ipc: NS_POD,
        ..Default::default()
    }
}

fn pod_config(log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "isol-pod".into(),
            uid: "c0ffee00-0000-4000-8000-000000000001".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "isol-pod".into(),
        log_directory: log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: CGROUP_PARENT.into(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `/proc/<pid>/ns/<ns>` of a host process, as `readlink` prints it (`net:[4026…]`).
fn ns_link(pid: i64, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

/// The sandbox's host pid, from its verbose status (containerd's `info`).
async fn sandbox_pid(cri: &mut RuntimeServiceClient<Channel>, id: &str) -> i64 {
    let status = cri
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(status.info.get("info").expect("verbose info")).unwrap();
    info["pid"].as_i64().expect("the sandbox's pid")
}

async fn container_state(cri: &mut RuntimeServiceClient<Channel>, id: &str) -> ContainerStatus {
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

/// The memory limit of the container's cgroup (v1 or v2), in bytes.
fn cgroup_memory_limit(container_id: &str) -> String {
    cgroup_file(
        container_id,
        "memory",
        "memory.limit_in_bytes",
        "memory.max",
    )
}

/// A file of the container's cgroup: `v1_file` in the v1 hierarchy `v1`, else `v2_file`.
fn cgroup_file(container_id: &str, v1: &str, v1_file: &str, v2_file: &str) -> String {
    let v1 = Path::new("/sys/fs/cgroup")
        .join(v1)
        .join(CGROUP_PARENT.trim_start_matches('/'))
        .join(container_id)
        .join(v1_file);
    let v2 = Path::new("/sys/fs/cgroup")
        .join(CGROUP_PARENT.trim_start_matches('/'))
        .join(container_id)
        .join(v2_file);
    fs::read_to_string(&v1)
        .or_else(|_| fs::read_to_string(&v2))
        .unwrap_or_else(|e| panic!("{} nor {}: {e}", v1.display(), v2.display()))
        .trim()
        .to_string()
}

#[test]
fn cri_runs_a_pod_on_isol_runc() {
    let _g = common::root_test();
    assert!(
        Path::new("/usr/lib/cni/bridge").exists(),
        "/usr/lib/cni/bridge is missing: run ./setup.sh (it installs containernetworking-plugins)"
    );
    let before = host_state();
    let ctrd = Containerd::start(NAMESPACE, &cri_plugin());
    let tmp = ctrd.tmp.path().to_path_buf();
    // The bridge the CNI plugin makes stays after the pod (CNI's DEL leaves it): removed here,
    // whatever the test's outcome.
    struct Bridge;
    impl Drop for Bridge {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", CNI_BRIDGE])
                .output();
        }
    }
    let _bridge = Bridge;
    fs::create_dir_all(tmp.join("cni")).unwrap();
    fs::write(tmp.join("cni/10-isol-cri.conflist"), cni_conflist(&tmp)).unwrap();
    let env = serde_json::json!(["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]);
    // The pause image: busybox whose entrypoint sleeps until the sandbox is stopped.
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
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rt.block_on(pod_lifecycle(&ctrd, &log_dir))
    }));
    // Whatever failed, the pod goes (a shim outlives containerd: its containers would too).
    rt.block_on(remove_pods(&ctrd));
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{e}\ncontainerd's log:\n{}", ctrd.log()),
        Err(panic) => {
            eprintln!("containerd's log:\n{}", ctrd.log());
            std::panic::resume_unwind(panic);
        }
    }

    // Nothing left: no pod or container in containerd, no runtime state, no shim.
    let left: Vec<_> = fs::read_dir(Path::new("/run/containerd/runc").join(NAMESPACE))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "isol-runc state left: {left:?}");
    let o = ctrd.ctr(&["container", "ls", "-q"]);
    assert_eq!(common::stdout(&o).trim(), "", "containers left");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs = processes_naming(&tmp, std::process::id());
        // containerd itself names the temp dir (--config).
        let others: Vec<_> = procs.iter().filter(|p| !p.contains(" --config ")).collect();
        if others.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes left: {others:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(ctrd);
    drop(_bridge);
    assert_eq!(
        host_state(),
        before,
        "links, network namespaces or CNI results left"
    );
    common::assert_no_leftovers("CRI pod");
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

/// The kubelet's part: a pod, a container in it, and their end. Errors carry what failed.
async fn pod_lifecycle(ctrd: &Containerd, log_dir: &Path) -> Result<(), String> {
    let mut cri = connect(ctrd.socket()).await;
    let version = cri
        .version(VersionRequest {
            version: "v1".into(),
        })
        .await
        .map_err(|e| format!("Version: {e}"))?
        .into_inner();
    assert_eq!(version.runtime_name, "containerd");
    assert_eq!(version.runtime_api_version, "v1");

    let pod_config = pod_config(log_dir);
    let pod = cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: HANDLER.into(),
        })
        .await
        .map_err(|e| format!("RunPodSandbox: {e}"))?
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
    assert_eq!(status.runtime_handler, HANDLER);
    let pod_ip = status.network.map(|n| n.ip).unwrap_or_default();
    assert!(
        pod_ip.starts_with("10.89.0."),
        "the pod's IP {pod_ip:?} is not on the CNI bridge's subnet {CNI_SUBNET}"
    );
    let pause = sandbox_pid(&mut cri, &pod).await;
    // The sandbox's init is isol's.
    assert_eq!(
        fs::read_to_string(format!("/proc/{pause}/comm"))
            .unwrap()
            .trim(),
        "isol-init"
    );

    let container_config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "work".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into()],
        args: vec![
            "echo ns $(for n in net ipc uts pid; do readlink /proc/self/ns/$n; done); \
             echo ip $(ip -o -4 addr show eth0 | awk '{print $4}'); \
             echo hostname $(hostname); \
             while [ ! -e /tmp/done ]; do sleep 0.05; done; echo bye; exit 7"
                .into(),
        ],
        log_path: "work.log".into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    let ctr = cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(container_config),
            sandbox_config: Some(pod_config.clone()),
        })
        .await
        .map_err(|e| format!("CreateContainer: {e}"))?
        .into_inner()
        .container_id;
    assert_eq!(
        container_state(&mut cri, &ctr).await.state,
        ContainerState::ContainerCreated as i32
    );
    cri.start_container(StartContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .map_err(|e| format!("StartContainer: {e}"))?;
    assert_eq!(
        container_state(&mut cri, &ctr).await.state,
        ContainerState::ContainerRunning as i32
    );

    // ExecSync: its output, apart, and its exit code.
    let exec = cri
        .exec_sync(ExecSyncRequest {
            container_id: ctr.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo out $(cat /proc/1/comm); echo err >&2; exit 5".into(),
            ],
            timeout: 20,
        })
        .await
        .map_err(|e| format!("ExecSync: {e}"))?
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "out isol-init\n");
    assert_eq!(String::from_utf8_lossy(&exec.stderr), "err\n");
    assert_eq!(exec.exit_code, 5);

    // UpdateContainerResources: a new memory limit and a cpuset in the container's cgroup.
    assert_eq!(cgroup_memory_limit(&ctr), (64u64 << 20).to_string());
    cri.update_container_resources(UpdateContainerResourcesRequest {
        container_id: ctr.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            cpuset_cpus: "0".into(),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("UpdateContainerResources: {e}"))?;
    assert_eq!(cgroup_memory_limit(&ctr), (96u64 << 20).to_string());
    assert_eq!(
        cgroup_file(&ctr, "cpuset", "cpuset.cpus", "cpuset.cpus"),
        "0"
    );

    // The workload ends (exit 7) once told to; its status says so.
    let done = cri
        .exec_sync(ExecSyncRequest {
            container_id: ctr.clone(),
            cmd: vec!["touch".into(), "/tmp/done".into()],
            timeout: 20,
        })
        .await
        .map_err(|e| format!("ExecSync: {e}"))?
        .into_inner();
    assert_eq!(done.exit_code, 0, "{done:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = container_state(&mut cri, &ctr).await;
        if s.state == ContainerState::ContainerExited as i32 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the container never exited: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.exit_code, 7, "{status:?}");

    // The CRI log: `TIMESTAMP STREAM F LINE` per line.
    let log = fs::read_to_string(log_dir.join("work.log")).map_err(|e| format!("log: {e}"))?;
    let lines: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once(" stdout F "))
        .map(|(_, text)| text)
        .collect();
    assert_eq!(lines.len(), 4, "{log}");
    // The container joined the sandbox's network, IPC and UTS namespaces, and has a PID
    // namespace of its own.
    let ns: Vec<&str> = lines[0].split(' ').collect();
    assert_eq!(ns.len(), 5, "{log}");
    assert_eq!(ns[0], "ns", "{log}");
    assert_eq!(ns[1], ns_link(pause, "net"), "network namespace");
    assert_eq!(ns[2], ns_link(pause, "ipc"), "IPC namespace");
    assert_eq!(ns[3], ns_link(pause, "uts"), "UTS namespace");
    assert_ne!(ns[4], ns_link(pause, "pid"), "PID namespace");
    assert_eq!(lines[1], format!("ip {pod_ip}/24"), "{log}");
    assert_eq!(lines[2], "hostname isol-pod", "{log}");
    assert_eq!(lines[3], "bye", "{log}");

    cri.stop_container(StopContainerRequest {
        container_id: ctr.clone(),
        timeout: 10,
    })
    .await
    .map_err(|e| format!("StopContainer: {e}"))?;
    cri.remove_container(RemoveContainerRequest {
        container_id: ctr.clone(),
    })
    .await
    .map_err(|e| format!("RemoveContainer: {e}"))?;
    cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .map_err(|e| format!("StopPodSandbox: {e}"))?;
    cri.remove_pod_sandbox(RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await
    .map_err(|e| format!("RemovePodSandbox: {e}"))?;

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
