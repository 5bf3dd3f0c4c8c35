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
use common::containerd::NO_CRI;

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

/// `ctr run --rm --log-uri file://LOG --runc-binary RUNTIME IMAGE ID sh -c SCRIPT`: the shim
/// copies the container's stdout and stderr into `log` itself, and deletes the task only once
/// its copy has ended (the pipes' end, which comes with the init's exit). No FIFO between the
/// shim and `ctr`, so none of `ctr`'s own race (docs/oci.md, "The lost output"): what the file
/// lacks, the runtime lost.
fn run_logged(ctrd: &Containerd, runtime: &str, id: &str, script: &str, log: &Path) -> Command {
    let uri = format!("file://{}", log.display());
    ctrd.ctr_command(&[
        "run",
        "--rm",
        "--log-uri",
        &uri,
        "--runc-binary",
        runtime,
        IMAGE,
        id,
        "sh",
        "-c",
        script,
    ])
}

/// Runs `ctr run --rm` (through [`run_logged`]) `runs` times in a row, each workload writing a
/// line to stdout and exiting with `i % 4`; checks each exit status and returns the runs whose
/// log is not that line (run, the log). Stdout only: with both streams in one file, the shim's
/// stdout copy closes the file at its pipe's end, and a stderr line its other copy has not
/// written by then is lost (containerd 1.6.20's `copyPipes`; runc too, docs/oci.md).
fn output_runs(
    ctrd: &Containerd,
    runtime: &str,
    runs: usize,
    prefix: &str,
) -> Vec<(usize, String)> {
    let logs = ctrd.tmp.path().join(format!("{prefix}-logs"));
    fs::create_dir_all(&logs).unwrap();
    let mut lost = Vec::new();
    for i in 0..runs {
        let log = logs.join(format!("{i}.log"));
        let script = format!("echo run {i}; exit {}", i % 4);
        let o = run_logged(ctrd, runtime, &format!("{prefix}-{i}"), &script, &log)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some((i % 4) as i32),
            "run {i}: {}\n{}",
            common::stderr(&o),
            ctrd.log()
        );
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text != format!("run {i}\n") {
            lost.push((i, text));
        }
    }
    lost
}

/// The busybox test image as [`IMAGE`], `sh` its command.
fn import_busybox(ctrd: &Containerd) {
    ctrd.import_busybox(
        IMAGE,
        serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}),
    );
}

/// No isol-runc state is left under the shim's root for the test's namespace.
fn assert_no_runtime_state() {
    let left: Vec<_> = fs::read_dir(runc_state_dir())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "isol-runc state left: {left:?}");
}

fn runc_state_dir() -> PathBuf {
    Path::new("/run/containerd/runc").join(NAMESPACE)
}

#[test]
fn ctr_runs_containers_on_isol_runc() {
    let _g = common::root_test();
    let ctrd = Containerd::start(NAMESPACE, NO_CRI);
    import_busybox(&ctrd);

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
    assert_no_runtime_state();
    drop(ctrd);
    common::assert_no_leftovers("ctr run");
}

/// The control file `name` of the cgroup at `path`: v2's own directory, or on v1 the one in
/// the hierarchy of the file's controller.
fn cgroup_file(path: &str, name: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return Path::new("/sys/fs/cgroup").join(rel).join(name);
    }
    let controller = name.split('.').next().unwrap();
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(rel)
        .join(name)
}

/// Waits until `ctr task ls` shows the task `id` with `status`.
fn wait_status(ctrd: &Containerd, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = common::stdout(&ctrd.ctr(&["task", "ls"]));
        if out
            .lines()
            .any(|l| l.split_whitespace().next() == Some(id) && l.contains(status))
        {
            return;
        }
        assert!(Instant::now() < deadline, "task {id} never {status}: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctr_terminals_pause_resume_limits_env_and_two_containers() {
    let _g = common::root_test();
    let ctrd = Containerd::start(NAMESPACE, NO_CRI);
    import_busybox(&ctrd);
    let runc = env!("CARGO_BIN_EXE_isol-runc");

    // ctr run -t, on a real terminal: the workload's stdio is a terminal of its size.
    let t = common::pty::spawn_command(
        ctrd.ctr_command(&[
            "run",
            "-t",
            "--rm",
            "--runc-binary",
            runc,
            IMAGE,
            "on-a-tty",
            "sh",
            "-c",
            common::containerd::TTY_SCRIPT,
        ]),
        33,
        77,
    );
    let (code, out) = t.finish();
    assert!(
        out.contains("is-a-tty") && out.contains("size 33 77"),
        "{out:?}"
    );
    assert_eq!(code, Some(6), "{out}");

    // Two containers at once, one with a memory limit and an environment variable.
    let o = ctrd.ctr(&[
        "run",
        "-d",
        "--memory-limit",
        "67108864",
        "--env",
        "GREETING=hello-from-env",
        "--runc-binary",
        runc,
        IMAGE,
        "limited",
        "sleep",
        "60",
    ]);
    assert!(o.status.success(), "run -d limited: {}", common::stderr(&o));
    let o = ctrd.ctr(&[
        "run",
        "-d",
        "--runc-binary",
        runc,
        IMAGE,
        "second",
        "sleep",
        "60",
    ]);
    assert!(o.status.success(), "run -d second: {}", common::stderr(&o));
    ctrd.wait_running("limited");
    ctrd.wait_running("second");
    // ctr's cgroup is /<namespace>/<id>: the limit is there.
    let limit = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        cgroup_file(&format!("/{NAMESPACE}/limited"), "memory.max")
    } else {
        cgroup_file(&format!("/{NAMESPACE}/limited"), "memory.limit_in_bytes")
    };
    assert_eq!(fs::read_to_string(&limit).unwrap().trim(), "67108864");
    let o = ctrd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "env",
        "limited",
        "sh",
        "-c",
        "echo $GREETING",
    ]);
    assert!(o.status.success(), "task exec: {}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "hello-from-env\n");

    // task pause / resume: the freezer, as ctr sees it.
    let o = ctrd.ctr(&["task", "pause", "limited"]);
    assert!(o.status.success(), "pause: {}", common::stderr(&o));
    wait_status(&ctrd, "limited", "PAUSED");
    wait_status(&ctrd, "second", "RUNNING");
    let o = ctrd.ctr(&["task", "resume", "limited"]);
    assert!(o.status.success(), "resume: {}", common::stderr(&o));
    wait_status(&ctrd, "limited", "RUNNING");

    // task exec -t, on a real terminal.
    let t = common::pty::spawn_command(
        ctrd.ctr_command(&[
            "task",
            "exec",
            "-t",
            "--exec-id",
            "tty",
            "second",
            "sh",
            "-c",
            "[ -t 0 ] && echo exec-on-a-tty; exit 7",
        ]),
        24,
        80,
    );
    let (code, out) = t.finish();
    assert!(out.contains("exec-on-a-tty"), "{out:?}");
    assert_eq!(code, Some(7), "{out}");

    for id in ["limited", "second"] {
        let o = ctrd.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
        assert!(o.status.success(), "kill {id}: {}", common::stderr(&o));
        wait_status(&ctrd, id, "STOPPED");
        let o = ctrd.ctr(&["task", "delete", id]);
        assert!(
            o.status.success(),
            "task delete {id}: {}",
            common::stderr(&o)
        );
        let o = ctrd.ctr(&["container", "rm", id]);
        assert!(
            o.status.success(),
            "container rm {id}: {}",
            common::stderr(&o)
        );
    }
    assert_no_runtime_state();
    drop(ctrd);
    common::assert_no_leftovers("ctr terminals, pause, limits");
}

/// Every run's output reaches the shim: 40 `ctr run --rm` in a row (`ISOL_OUTPUT_RUNS` to
/// change the count), the shim writing each container's stdout into a file (`--log-uri`),
/// each file checked. Before 2026-12-07 the soak counted about one `ctr run`
/// in 170 without its output, with `ctr`'s FIFOs; that loss was `ctr`'s own (docs/oci.md,
/// "The lost output": runc loses the same output when `ctr` is slow), and this test keeps it
/// out, so that a line missing here is one the runtime lost: the workload's output not in
/// the shim's pipe when the init's exit is reported, or the pipe's end not coming with it.
#[test]
fn ctr_run_output_reaches_the_shim_every_time() {
    let _g = common::root_test();
    let runs: usize = std::env::var("ISOL_OUTPUT_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    let ctrd = Containerd::start(NAMESPACE, NO_CRI);
    import_busybox(&ctrd);
    let lost = output_runs(&ctrd, env!("CARGO_BIN_EXE_isol-runc"), runs, "out");
    assert!(
        lost.is_empty(),
        "{} of {runs} runs lost output (run, what the shim wrote): {lost:?}",
        lost.len()
    );
    let o = ctrd.ctr(&["container", "ls", "-q"]);
    assert_eq!(common::stdout(&o).trim(), "", "containers left");
    assert_no_runtime_state();
    drop(ctrd);
    common::assert_no_leftovers("ctr run output");
}

/// The soak: `ctr run --rm` 200 times in a row (`ISOL_SOAK_RUNS` to change the count), each
/// with its output (through the shim's log file, as ctr_run_output_reaches_the_shim_every_time)
/// and exit status checked, and nothing left after — no container, no
/// isol-runc state, no shim, no cgroup, mount or link; nor a process, file descriptor or
/// thread more in containerd than after the first run. Minutes long, so ignored:
/// `flock /tmp/isol-ctr.lock cargo test --test containerd -- --ignored soak`.
#[test]
#[ignore = "a soak of minutes: run it with --ignored"]
fn soak_ctr_run_rm_200_times_leaves_nothing() {
    let _g = common::root_test();
    let runs: usize = std::env::var("ISOL_SOAK_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let ctrd = Containerd::start(NAMESPACE, NO_CRI);
    import_busybox(&ctrd);
    let daemon = ctrd.pid();
    let fds = || fs::read_dir(format!("/proc/{daemon}/fd")).unwrap().count();
    let threads = || {
        fs::read_dir(format!("/proc/{daemon}/task"))
            .unwrap()
            .count()
    };
    // ISOL_SOAK_RUNTIME=/usr/sbin/runc runs the same soak on runc, for comparison.
    let runtime = std::env::var("ISOL_SOAK_RUNTIME")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_isol-runc").to_string());
    let started = Instant::now();
    // containerd's descriptors and threads once it has run one container.
    let mut lost = output_runs(&ctrd, &runtime, 1, "soak-first");
    let after_first = (fds(), threads());
    lost.extend(output_runs(&ctrd, &runtime, runs - 1, "soak"));
    let elapsed = started.elapsed();
    let o = ctrd.ctr(&["container", "ls", "-q"]);
    assert_eq!(common::stdout(&o).trim(), "", "containers left");
    assert_no_runtime_state();
    // containerd's own descriptors and threads come and go a little (its gRPC connections, the
    // Go runtime's threads): a leak of one per run would be 200.
    let (fds_now, threads_now) = (fds(), threads());
    assert!(
        fds_now <= after_first.0 + 20,
        "containerd's descriptors grew from {} to {fds_now} over {runs} runs",
        after_first.0
    );
    assert!(
        threads_now <= after_first.1 + 20,
        "containerd's threads grew from {} to {threads_now} over {runs} runs",
        after_first.1
    );
    let shims = Command::new("pgrep")
        .args(["-f", &ctrd.socket().display().to_string()])
        .output()
        .unwrap();
    let shims: Vec<_> = common::stdout(&shims)
        .lines()
        .filter(|p| p.trim() != daemon.to_string())
        .map(str::to_string)
        .collect();
    assert!(shims.is_empty(), "shims left: {shims:?}");
    eprintln!(
        "soak: {} of {runs} runs lost their output; {runs} runs in {:.1} s ({:.0} ms each); containerd's fds {} → {fds_now}, threads {} → {threads_now}",
        lost.len(),
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1000.0 / runs as f64,
        after_first.0,
        after_first.1
    );
    drop(ctrd);
    common::assert_no_leftovers("ctr run soak");
    // Through `--log-uri`, as in ctr_run_output_reaches_the_shim_every_time: `ctr`'s own FIFO
    // race (docs/oci.md, "The lost output") is not measured here, the runtime is.
    assert!(
        lost.is_empty(),
        "{} of {runs} runs lost output (run, what the shim wrote): {lost:?}",
        lost.len()
    );
}
