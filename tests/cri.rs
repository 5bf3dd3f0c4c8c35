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

use std::fs;
use std::path::Path;

use common::cri::*;
use k8s_cri::v1::*;

const HANDLER: &str = "isol";

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
    let host = CriHost::start(&[Handler {
        name: HANDLER,
        binary: env!("CARGO_BIN_EXE_isol-runc").into(),
    }]);
    let result = host.run(pod_lifecycle(&host.ctrd, &host.log_dir));
    host.finish(result);
}

/// The kubelet's part: a pod, a container in it, and their end. Errors carry what failed.
async fn pod_lifecycle(
    ctrd: &common::containerd::Containerd,
    log_dir: &Path,
) -> Result<(), String> {
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

    let pod_config = pod_config("isol-pod", "c0ffee00-0000-4000-8000-000000000001", log_dir);
    let (pod, pod_ip) = run_pod(&mut cri, &pod_config, HANDLER).await?;
    let pause = sandbox_pid(&mut cri, &pod).await;
    // The sandbox's init is isol's.
    assert_eq!(
        fs::read_to_string(format!("/proc/{pause}/comm"))
            .unwrap()
            .trim(),
        "isol-init"
    );

    let script = "echo ns $(for n in net ipc uts pid; do readlink /proc/self/ns/$n; done); \
         echo ip $(ip -o -4 addr show eth0 | awk '{print $4}'); \
         echo hostname $(hostname); \
         while [ ! -e /tmp/done ]; do sleep 0.05; done; echo bye; exit 7";
    let container_config = container_config("work", script, 64);
    let ctr = start_container(&mut cri, &pod, &pod_config, container_config).await?;

    // ExecSync: its output, apart, and its exit code.
    let exec = exec_sync(
        &mut cri,
        &ctr,
        &[
            "sh",
            "-c",
            "echo out $(cat /proc/1/comm); echo err >&2; exit 5",
        ],
    )
    .await?;
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
    let done = exec_sync(&mut cri, &ctr, &["touch", "/tmp/done"]).await?;
    assert_eq!(done.exit_code, 0, "{done:?}");
    let status = wait_exited(&mut cri, &ctr).await;
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

    remove_pod(&mut cri, &pod, &[&ctr]).await?;
    assert_empty(&mut cri).await
}
