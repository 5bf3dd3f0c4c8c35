//! A real client nobody here wrote: containerd 1.6 and its `ctr`, with `isol-runc` as the runc
//! binary of containerd's runc shim (`ctr run --runc-binary`). The test starts its own
//! containerd (root, state and socket in a temp dir), imports a busybox docker-archive it
//! builds from the busybox test image, and runs containers to their end: output, exit codes 0
//! and 3, and 137 and 143 after `ctr task kill`; and a detached one with `task exec`, `task ps`,
//! `task kill` and deletion. Nothing may be left after.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::containerd::Containerd;

/// The containerd namespace of the test's containers (the shim keeps runc state under
/// /run/containerd/runc/<namespace>).
const NAMESPACE: &str = "isol-test";
const IMAGE: &str = "isol.test/busybox:latest";

/// containerd without its CRI plugin: only `ctr` talks to it.
const NO_CRI: &str = "[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable = true\n";

/// `ctr run --rm --runc-binary isol-runc IMAGE ID sh -c SCRIPT`.
fn run_command(ctrd: &Containerd, id: &str, script: &str) -> Command {
    ctrd.ctr_command(&[
        "run",
        "--rm",
        "--runc-binary",
        env!("CARGO_BIN_EXE_isol-runc"),
        IMAGE,
        id,
        "sh",
        "-c",
        script,
    ])
}

fn runc_state_dir() -> PathBuf {
    Path::new("/run/containerd/runc").join(NAMESPACE)
}

#[test]
fn ctr_runs_containers_on_isol_runc() {
    let _g = common::root_test();
    let ctrd = Containerd::start(NAMESPACE, NO_CRI);
    ctrd.import_busybox(
        IMAGE,
        serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}),
    );

    let o = run_command(
        &ctrd,
        "hello",
        "echo hello from $(cat /proc/1/comm); exit 0",
    )
    .output()
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}",
        common::stderr(&o),
        ctrd.log()
    );
    assert_eq!(common::stdout(&o), "hello from isol-init\n");

    let o = run_command(&ctrd, "three", "exit 3").output().unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));

    for (signal, expected) in [("SIGKILL", 137), ("SIGTERM", 143)] {
        let id = format!("killed-{}", signal.to_lowercase());
        let mut child = run_command(&ctrd, &id, "sleep 60")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        ctrd.wait_running(&id);
        let o = ctrd.ctr(&["task", "kill", "--signal", signal, &id]);
        assert!(o.status.success(), "kill: {}", common::stderr(&o));
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(expected), "{signal}");
    }

    // A detached container: task exec (its status), task ps, task kill, task and container
    // deletion.
    let runc = env!("CARGO_BIN_EXE_isol-runc");
    let o = ctrd.ctr(&[
        "run",
        "-d",
        "--runc-binary",
        runc,
        IMAGE,
        "detached",
        "sleep",
        "60",
    ]);
    assert!(o.status.success(), "run -d: {}", common::stderr(&o));
    ctrd.wait_running("detached");
    let o = ctrd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "detached",
        "sh",
        "-c",
        "echo exec in $(cat /proc/1/comm); exit 4",
    ]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "task exec: {}",
        common::stderr(&o)
    );
    assert_eq!(common::stdout(&o), "exec in isol-init\n");
    let o = ctrd.ctr(&["task", "ps", "detached"]);
    assert!(o.status.success(), "task ps: {}", common::stderr(&o));
    assert!(
        common::stdout(&o).lines().count() >= 3,
        "{}",
        common::stdout(&o)
    );
    let o = ctrd.ctr(&["task", "kill", "--signal", "SIGKILL", "detached"]);
    assert!(o.status.success(), "task kill: {}", common::stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !common::stdout(&ctrd.ctr(&["task", "ls"])).contains("STOPPED") {
        assert!(Instant::now() < deadline, "the task never stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = ctrd.ctr(&["task", "delete", "detached"]);
    assert!(o.status.success(), "task delete: {}", common::stderr(&o));
    let o = ctrd.ctr(&["container", "rm", "detached"]);
    assert!(o.status.success(), "container rm: {}", common::stderr(&o));

    // --rm deleted every container: no task, no runtime state, nothing on the host.
    let o = ctrd.ctr(&["container", "ls", "-q"]);
    assert_eq!(common::stdout(&o).trim(), "", "containers left");
    let left: Vec<_> = fs::read_dir(runc_state_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "isol-runc state left: {left:?}");
    drop(ctrd);
    common::assert_no_leftovers("ctr run");
}
