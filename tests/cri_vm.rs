//! Kubernetes schedules onto isol, container or VM (issue 19): containerd 1.6's CRI plugin
//! with two runtime handlers, `isol` (isol-runc: containers) and `isol-vm` (the
//! `isol-runc-vm` link: each container a microVM), one pod on each, the same image and
//! command in both. The test is the kubelet (the CRI client of tests/common/cri.rs):
//!
//! - each pod's sandbox runs on the container backend (under `isol-runc-vm` too: it only holds
//!   the pod's namespaces, docs/oci.md "A CRI pod in VMs"), and gets its address from the CNI
//!   bridge plugin;
//! - each pod first runs an init container to completion, as the kubelet does: in the
//!   `isol-vm` pod a VM of its own on the pod's network, which writes the pod's address and
//!   hostname to a host directory bound into it and exits; the pod's container, a second VM
//!   in the same pod after the first has ended, is not refused;
//! - each pod's container serves HTTP (busybox httpd) on the pod's address: in the `isol-vm`
//!   pod a VM that took over the pod's interface, joined the pod's IPC and UTS namespaces
//!   (the guest answers to the pod's hostname);
//! - `ExecSync` runs the same command in both, with the same results but for each pod's own
//!   name and address (and kernel: the VM's is the guest's);
//! - the host reaches each pod and the pods reach each other;
//! - a second VM in the VM pod is refused in one line (two VMs cannot both be the pod's
//!   interface), and the first keeps serving;
//! - the VM pod's VMM SIGKILLed, its successor (started before the dead one is removed, as
//!   the kubelet restarts a container) takes the pod's interface over and serves;
//! - everything is stopped and removed, and nothing is left: containerd's and isol-runc's
//!   state, shims, VMMs, virtiofsd, cgroups, mounts, network namespaces, veths, taps, tc, CNI's
//!   cache.
//!
//! It needs KVM: it runs in the lab (`./test.sh`, with containerd's temp dirs on /run) and
//! skips elsewhere unless `ISOL_REQUIRE_KVM` is set.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::containerd::Containerd;
use common::cri::*;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::Channel;

const CONTAINERS: &str = "isol";
const VMS: &str = "isol-vm";
/// Where each pod's httpd listens.
const PORT: u16 = 8080;

fn runc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_isol-runc")
}

#[test]
fn cri_runs_one_pod_in_containers_and_one_in_vms() {
    if !common::kvm_ready() {
        return;
    }
    let _g = common::root_test();
    let mut host = CriHost::start(&[
        Handler {
            name: CONTAINERS,
            binary: runc_bin().into(),
        },
        // The VM runtime's name, as setup.sh links it beside isol-runc: a link of the test's
        // own, in containerd's temp dir (`{tmp}`), made before the first pod.
        Handler {
            name: VMS,
            binary: "{tmp}/bin/isol-runc-vm".into(),
        },
    ]);
    host.vms = true;
    let bin = host.ctrd.tmp.path().join("bin");
    fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(runc_bin(), bin.join("isol-runc-vm")).unwrap();
    let result = host.run(two_pods(&host.ctrd, &host.log_dir));
    host.finish(result);
}

/// The workload, the same in both pods: it says where it is, then serves a page naming its
/// host on the pod's address.
const WORKLOAD: &str = "echo ip $(ip -o -4 addr show eth0 | awk '{print $4}'); \
     echo hostname $(hostname); \
     mkdir -p /srv && echo hello from $(hostname) > /srv/index.html && \
     exec httpd -f -p 8080 -h /srv";

/// What `ExecSync` runs, the same in both pods: its name, its address, its own page, and an
/// exit code of its own, with a line on stderr.
const PROBE: &str = "echo hostname $(hostname); \
     echo ip $(ip -o -4 addr show eth0 | awk '{print $4}'); \
     wget -q -O - http://127.0.0.1:8080/; \
     echo err >&2; exit 5";

/// What each pod's init container runs: it writes where it ran to the host directory bound
/// at `/shared`, then exits.
const INIT: &str = "echo ip $(ip -o -4 addr show eth0 | awk '{print $4}') hostname $(hostname) \
     > /shared/init.txt";

/// The init container of the pod `pod`, with the host directory `shared` at `/shared`.
fn init_container(pod: &str, shared: &Path) -> ContainerConfig {
    let mut c = container_config(&format!("{pod}-init"), INIT, 128);
    c.mounts = vec![Mount {
        container_path: "/shared".into(),
        host_path: shared.display().to_string(),
        ..Default::default()
    }];
    c
}

/// The kubelet's way with an init container: created, started, and waited for until it has
/// exited (before the pod's other containers are created); its id and exit code.
async fn run_init(
    cri: &mut RuntimeServiceClient<Channel>,
    pod: &str,
    pod_config: &PodSandboxConfig,
    config: ContainerConfig,
) -> Result<(String, i32), String> {
    let id = create_container(cri, pod, pod_config, config).await?;
    cri.start_container(StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .map_err(|e| format!("StartContainer: {e}"))?;
    let status = wait_exited(cri, &id).await;
    Ok((id, status.exit_code))
}

/// The pods' container `name`: the workload, with 128 MiB (a VM's RAM, a container's
/// `memory.max`).
fn workload(name: &str) -> ContainerConfig {
    container_config(name, WORKLOAD, 128)
}

/// One pod: its name (and hostname), id, IP and its container's id.
struct Pod {
    name: &'static str,
    id: String,
    ip: String,
    config: PodSandboxConfig,
    /// Its init container, exited.
    init: String,
    ctr: String,
}

/// The body of `GET /` from `ip`:[`PORT`], the test being the host, once the server answers.
fn fetch(ip: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr: std::net::SocketAddr = format!("{ip}:{PORT}").parse().unwrap();
    loop {
        let attempt = (|| {
            let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok::<_, std::io::Error>(answer)
        })();
        match attempt {
            Ok(a) if a.contains("\r\n\r\n") => {
                return Ok(a.split_once("\r\n\r\n").unwrap().1.to_string());
            }
            other if Instant::now() > deadline => {
                return Err(format!("the host cannot fetch http://{addr}/: {other:?}"));
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The lines the container `name` logged to stdout (CRI's `TIMESTAMP STREAM F LINE`).
fn logged(log_dir: &Path, name: &str) -> Vec<String> {
    fs::read_to_string(log_dir.join(format!("{name}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(" stdout F "))
        .map(|(_, text)| text.to_string())
        .collect()
}

/// Waits until the container `name` logged `n` lines; them.
async fn wait_logged(log_dir: &Path, name: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = logged(log_dir, name);
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{name} logged {lines:?}, not {n} lines"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn comm(pid: i64) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The kubelet's part: a pod on each handler, the checks, their end.
async fn two_pods(ctrd: &Containerd, log_dir: &Path) -> Result<(), String> {
    let mut cri = connect(ctrd.socket()).await;
    let mut pods = Vec::new();
    for (name, uid, handler) in [
        (
            "pod-ctr",
            "c0ffee00-0000-4000-8000-000000000011",
            CONTAINERS,
        ),
        ("pod-vm", "c0ffee00-0000-4000-8000-000000000012", VMS),
    ] {
        let config = pod_config(name, uid, log_dir);
        let (id, ip) = run_pod(&mut cri, &config, handler).await?;
        // The sandbox is a container on either handler: it holds the pod's namespaces.
        let pause = sandbox_pid(&mut cri, &id).await;
        assert_eq!(comm(pause), "isol-init", "{name}'s sandbox");
        // The init container runs to its end first, on the pod's network and hostname, and
        // leaves its result in the host directory bound into it.
        let shared = ctrd.tmp.path().join(format!("{name}-shared"));
        fs::create_dir(&shared).unwrap();
        let (init, code) = run_init(&mut cri, &id, &config, init_container(name, &shared)).await?;
        assert_eq!(code, 0, "{name}'s init container's exit code");
        assert_eq!(
            fs::read_to_string(shared.join("init.txt")).unwrap_or_default(),
            format!("ip {ip}/24 hostname {name}\n"),
            "what {name}'s init container wrote"
        );
        // Then the pod's container: in the VM pod a second VM, the first one ended.
        let ctr = start_container(&mut cri, &id, &config, workload(name)).await?;
        pods.push(Pod {
            name,
            id,
            ip,
            config,
            init,
            ctr,
        });
    }
    let (c, v) = (&pods[0], &pods[1]);
    assert_ne!(c.ip, v.ip);
    assert_eq!(comm(container_pid(&mut cri, &c.ctr).await), "isol-init");
    assert_eq!(
        comm(container_pid(&mut cri, &v.ctr).await),
        "isol-vmm",
        "the VM pod's container is a VM"
    );

    for p in &pods {
        // What each logged: the pod's address (the VM took over the pod's interface) and the
        // pod's hostname (the VM's, from the pod's UTS namespace).
        let lines = wait_logged(log_dir, p.name, 2).await;
        assert_eq!(
            lines,
            [format!("ip {}/24", p.ip), format!("hostname {}", p.name)],
            "{}'s log",
            p.name
        );
        // The host reaches each pod.
        assert_eq!(fetch(&p.ip)?, format!("hello from {}\n", p.name));
        // ExecSync: the same command, the same results.
        let exec = exec_sync(&mut cri, &p.ctr, &["sh", "-c", PROBE]).await?;
        assert_eq!(
            String::from_utf8_lossy(&exec.stdout),
            format!(
                "hostname {n}\nip {ip}/24\nhello from {n}\n",
                n = p.name,
                ip = p.ip
            ),
            "ExecSync in {}",
            p.name
        );
        assert_eq!(String::from_utf8_lossy(&exec.stderr), "err\n", "{}", p.name);
        assert_eq!(exec.exit_code, 5, "{}", p.name);
    }
    // The pods reach each other.
    for (from, to) in [(c, v), (v, c)] {
        let url = format!("http://{}:{PORT}/", to.ip);
        let exec = exec_sync(&mut cri, &from.ctr, &["wget", "-q", "-O", "-", &url]).await?;
        assert_eq!(
            (exec.exit_code, String::from_utf8_lossy(&exec.stdout)),
            (0, format!("hello from {}\n", to.name).into()),
            "{} -> {}: {}",
            from.name,
            to.name,
            String::from_utf8_lossy(&exec.stderr)
        );
    }
    // The container's kernel is the host's; the VM's is the guest's.
    let host_kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut kernels = Vec::new();
    for p in &pods {
        let exec = exec_sync(&mut cri, &p.ctr, &["uname", "-r"]).await?;
        kernels.push(String::from_utf8_lossy(&exec.stdout).into_owned());
    }
    assert_eq!(kernels[0], host_kernel, "the container's kernel");
    assert_ne!(kernels[1], host_kernel, "the VM's kernel");

    // A second VM in the VM pod while the first runs cannot be the pod's interface too:
    // refused in one line, and the first serves on (the exited init VM did not count).
    let second = create_container(&mut cri, &v.id, &v.config, workload("second")).await?;
    let refused = cri
        .start_container(StartContainerRequest {
            container_id: second.clone(),
        })
        .await
        .expect_err("a second VM on one pod's interface");
    assert!(
        refused
            .message()
            .contains("another VM already took over its interface (its tap isolt"),
        "{refused:?}"
    );
    assert!(!refused.message().contains('\n'), "{refused:?}");
    cri.remove_container(RemoveContainerRequest {
        container_id: second,
    })
    .await
    .map_err(|e| format!("RemoveContainer: {e}"))?;
    assert_eq!(fetch(&v.ip)?, format!("hello from {}\n", v.name));

    // The VM pod's VMM killed (SIGKILL: the OOM killer's way), the kubelet starts the
    // container's successor before it removes the dead one: that VM undoes the redirection
    // the dead one left, takes the pod's interface and serves.
    let vmm = container_pid(&mut cri, &v.ctr).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vmm as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert_eq!(wait_exited(&mut cri, &v.ctr).await.exit_code, 137);
    let restarted = start_container(&mut cri, &v.id, &v.config, workload("restarted")).await?;
    assert_eq!(fetch(&v.ip)?, format!("hello from {}\n", v.name));

    for p in &pods {
        let mut ctrs = vec![p.init.as_str(), p.ctr.as_str()];
        if p.id == v.id {
            ctrs.push(&restarted);
        }
        remove_pod(&mut cri, &p.id, &ctrs).await?;
    }
    assert_empty(&mut cri).await
}
