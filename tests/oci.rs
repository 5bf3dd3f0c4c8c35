//! `isol-runc`, the OCI runtime, driven as a client drives it: this test plays containerd's
//! shim (a subreaper that creates a container, starts it, waits for its init and deletes it) on
//! a bundle made from the busybox test image, with config.json from `isol-runc spec`. Bad
//! bundles must fail the runc way (a JSON error line as the last line of `--log`), and nothing
//! may be left on the host after any of it.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::Value;

use common::shim::{become_subreaper, set_args, wait_status};

fn runc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_isol-runc")
}

/// A test that plays containerd's shim: as root, one at a time, this process a subreaper (a
/// container's init is re-parented to it).
fn as_a_shim() -> std::sync::MutexGuard<'static, ()> {
    let g = common::root_test();
    become_subreaper();
    g
}

/// A state root and a bundle, in a temp dir of their own.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
}

impl Fixture {
    /// A bundle whose rootfs is the busybox test image, and whose config.json is `spec`'s,
    /// edited by `edit`.
    fn new(edit: impl FnOnce(&mut Value)) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let bundle = tmp.path().join("bundle");
        fs::create_dir(&bundle).unwrap();
        common::busybox_rootfs(&bundle.join("rootfs"));
        let f = Fixture {
            _tmp: tmp,
            root,
            bundle,
        };
        let o = f.runc(&["spec", "--bundle", f.bundle.to_str().unwrap()]);
        assert!(o.status.success(), "spec: {}", common::stderr(&o));
        f.edit_config(edit);
        f
    }

    fn edit_config(&self, edit: impl FnOnce(&mut Value)) {
        let path = self.bundle.join("config.json");
        let mut v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        edit(&mut v);
        fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(runc_bin());
        c.arg("--root").arg(&self.root).args(args);
        c.stdin(Stdio::null());
        c
    }

    fn runc(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("isol-runc runs")
    }

    /// `create --bundle B ARGS… ID`, its stdio files (`<bundle>/stdout`, `<bundle>/stderr`):
    /// the container's init keeps the stdio it was created with, so a pipe read to its end, as
    /// `Command::output` does, would wait for the container's end. Returns the exit status and
    /// what create wrote to stderr.
    fn create(&self, id: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
        let stdout = fs::File::create(self.bundle.join("stdout")).unwrap();
        let stderr_path = self.bundle.join("stderr");
        let stderr = fs::File::create(&stderr_path).unwrap();
        let status = self
            .command(&["create", "--bundle", self.bundle.to_str().unwrap()])
            .args(args)
            .arg(id)
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .expect("isol-runc runs");
        (status, fs::read_to_string(&stderr_path).unwrap())
    }

    /// What the container wrote to its stdout so far.
    fn output(&self) -> String {
        fs::read_to_string(self.bundle.join("stdout")).unwrap()
    }

    fn state(&self, id: &str) -> Value {
        let o = self.runc(&["state", id]);
        assert!(o.status.success(), "state {id}: {}", common::stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// `delete --force ID` of a running container: it succeeds, and its init `init` (a child
    /// of this subreaper) ends by SIGKILL.
    fn force_delete(&self, id: &str, init: i32) {
        let o = self.runc(&["delete", "--force", id]);
        assert!(
            o.status.success(),
            "delete --force {id}: {}",
            common::stderr(&o)
        );
        assert_eq!(wait_status(init), 137, "{id}'s init");
    }

    /// Nothing of any container under the state root, and nothing on the host
    /// ([`common::assert_no_leftovers`]; `context` says after what).
    fn assert_clean(&self, context: &str) {
        self.assert_root_empty();
        common::assert_no_leftovers(context);
    }

    /// Nothing of any container under the state root.
    fn assert_root_empty(&self) {
        let left: Vec<_> = fs::read_dir(&self.root)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "state left behind: {left:?}");
    }
}

/// A failed test leaves no container behind for the next.
impl Drop for Fixture {
    fn drop(&mut self) {
        for e in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let _ = self.runc(&["delete", "--force", &id]);
        }
    }
}

#[test]
fn lifecycle_as_a_shim_create_start_wait_delete() {
    let _g = as_a_shim();
    // (script, signal sent after start, expected status)
    let cases: [(&str, Option<&str>, i32); 4] = [
        ("echo hello from $(hostname); exit 0", None, 0),
        ("echo three; exit 3", None, 3),
        ("echo waiting; exec sleep 30", Some("KILL"), 137),
        ("echo waiting; sleep 30", Some("15"), 143),
    ];
    for (i, (script, signal, expected)) in cases.into_iter().enumerate() {
        let id = format!("lifecycle-{i}");
        let cgroup = format!("/isol-oci-test/{id}");
        let f = Fixture::new(|v| {
            set_args(v, script);
            v["hostname"] = "oci-test".into();
            v["linux"]["cgroupsPath"] = cgroup.clone().into();
        });
        let pid_file = f.bundle.join("init.pid");
        let (status, err) = f.create(&id, &["--pid-file", pid_file.to_str().unwrap()]);
        assert!(status.success(), "create: {err}");
        let pid: i32 = fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();

        // Created: the init is alive, waits, and has started nothing.
        let st = f.state(&id);
        assert_eq!(st["status"], "created", "{st}");
        assert_eq!(st["pid"], pid);
        assert_eq!(st["id"], id.as_str());
        assert_eq!(st["ociVersion"], "1.2.0");
        assert_eq!(Path::new(st["bundle"].as_str().unwrap()), f.bundle);
        // In the cgroup the config names (leftover checks look for "isol" in cgroup names).
        let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            cgroups.lines().any(|l| l.ends_with(&format!(":{cgroup}"))),
            "not in {cgroup}: {cgroups}"
        );
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(
            comm.trim(),
            "isol-init",
            "the init has exec'd something else"
        );
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        assert!(
            children.trim().is_empty(),
            "started before start: {children}"
        );
        assert!(f.output().is_empty(), "the workload ran before start");

        let o = f.runc(&["start", &id]);
        assert!(o.status.success(), "start: {}", common::stderr(&o));
        if let Some(sig) = signal {
            // The workload is running once it has said so.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !f.output().contains("waiting") {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the workload never ran"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            assert_eq!(f.state(&id)["status"], "running");
            // ps: the init and the workload (sh, or the sleep it exec'd), by host pid.
            let o = f.runc(&["ps", "--format", "json", &id]);
            let pids: Vec<i32> = serde_json::from_slice(&o.stdout).unwrap();
            assert!(pids.len() >= 2, "{pids:?}");
            assert_eq!(pids[0], pid);
            let o = f.runc(&["ps", &id]);
            let table = common::stdout(&o);
            assert!(
                table.starts_with("UID") && table.contains("sleep 30"),
                "{table}"
            );
            let o = f.runc(&["kill", &id, sig]);
            assert!(o.status.success(), "kill: {}", common::stderr(&o));
        }
        assert_eq!(wait_status(pid), expected, "{script}");
        let output = f.output();
        if i == 0 {
            assert_eq!(output, "hello from oci-test\n");
        }
        assert_eq!(f.state(&id)["status"], "stopped");
        // runc's words, which containerd's shim reads as "already gone" (its kill before a
        // delete, on every container's exit under CRI): anything else fails the exit.
        let o = f.runc(&["kill", "--all", &id, "KILL"]);
        assert!(
            !o.status.success() && common::stderr(&o).contains("container not running"),
            "{}",
            common::stderr(&o)
        );

        let o = f.runc(&["delete", &id]);
        assert!(o.status.success(), "delete: {}", common::stderr(&o));
        let o = f.runc(&["state", &id]);
        assert!(!o.status.success());
        assert!(
            common::stderr(&o).contains(&format!("container {id} does not exist")),
            "{}",
            common::stderr(&o)
        );
        // The shim's cleanup deletes it again, forced: nothing left to delete is success, as
        // runc says; unforced, it is not.
        let o = f.runc(&["delete", "--force", &id]);
        assert!(o.status.success(), "delete --force: {}", common::stderr(&o));
        let o = f.runc(&["delete", &id]);
        assert!(
            !o.status.success()
                && common::stderr(&o).contains(&format!("container {id} does not exist")),
            "{}",
            common::stderr(&o)
        );
        f.assert_clean(script);
    }
}

/// `start` returns once the workload has been exec'd, as runc's does (its exec FIFO closes at
/// the workload's exec): poststart hooks, and the client, then find it running. A
/// startContainer hook of half a second holds the workload back; right after `start` the init's
/// child is the workload, already exec'd.
#[test]
fn start_returns_once_the_workload_is_execd() {
    let _g = as_a_shim();
    let f = Fixture::new(|v| {
        v["process"]["args"] = serde_json::json!(["tail", "-f", "/dev/null"]);
        v["hooks"] = serde_json::json!({
            "startContainer": [{"path": "/bin/sleep", "args": ["sleep", "0.5"]}]
        });
    });
    let (status, err) = f.create("execd", &[]);
    assert!(status.success(), "create: {err}");
    let pid = f.state("execd")["pid"].as_i64().unwrap() as i32;
    let o = f.runc(&["start", "execd"]);
    assert!(o.status.success(), "start: {}", common::stderr(&o));
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let comms: Vec<String> = children
        .split_whitespace()
        .map(|c| {
            fs::read_to_string(format!("/proc/{c}/comm"))
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .collect();
    assert_eq!(comms, ["tail"], "the init's children when start returned");
    f.force_delete("execd", pid);
    f.assert_clean("start returns once exec'd");
}

/// A short workload's output reaches the stdout and stderr it was created with, read as
/// containerd's shim reads them: from pipes whose write ends the caller closes once `create`
/// runs, and which it reads only after `create` returned and `start` was called. 100
/// containers at once, 10 at a time, each writing one line to each and exiting at once; every
/// line and every exit status is checked (docs/oci.md, "The soak": isol-runc's side of the
/// output `ctr run --rm` lost now and then).
#[test]
fn a_short_workloads_output_reaches_the_pipes_it_was_created_with() {
    let _g = as_a_shim();
    let f = Fixture::new(|v| {
        set_args(v, "echo out $(hostname); echo err >&2; exit 3");
        v["hostname"] = "short".into();
    });
    let lost = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..10 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= 100 {
                        break;
                    }
                    let got = short_run(&f, &format!("short-{i}"));
                    if got != ("out short\n".into(), "err\n".into(), 3) {
                        lost.lock().unwrap().push((i, got));
                    }
                }
            });
        }
    });
    let lost = lost.into_inner().unwrap();
    assert!(
        lost.is_empty(),
        "{} of 100 runs lost output (run, stdout, stderr, status): {lost:?}",
        lost.len()
    );
    f.assert_clean("short workloads");
}

/// One container as the shim runs it: create on fresh pipes, start, then read both pipes to
/// their end, wait for the init, delete. Returns stdout, stderr and the exit status.
fn short_run(f: &Fixture, id: &str) -> (String, String, i32) {
    use std::io::Read;
    let pipe = || {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (fs::File::from(r), fs::File::from(w))
    };
    let ((mut out_r, out_w), (mut err_r, err_w)) = (pipe(), pipe());
    let pid_file = f.bundle.join(format!("{id}.pid"));
    let status = f
        .command(&["create", "--bundle", f.bundle.to_str().unwrap()])
        .args(["--pid-file", pid_file.to_str().unwrap(), id])
        .stdout(out_w)
        .stderr(err_w)
        .status()
        .unwrap();
    assert!(status.success(), "create {id}");
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let o = f.runc(&["start", id]);
    assert!(o.status.success(), "start {id}: {}", common::stderr(&o));
    let (mut out, mut err) = (String::new(), String::new());
    out_r.read_to_string(&mut out).unwrap();
    err_r.read_to_string(&mut err).unwrap();
    let code = wait_status(pid);
    let o = f.runc(&["delete", id]);
    assert!(o.status.success(), "delete {id}: {}", common::stderr(&o));
    (out, err, code)
}

#[test]
fn a_created_container_can_be_deleted_and_a_running_one_only_by_force() {
    let _g = as_a_shim();
    let f = Fixture::new(|v| set_args(v, "sleep 30"));
    let (status, err) = f.create("c-created", &[]);
    assert!(status.success(), "create: {err}");
    let pid = f.state("c-created")["pid"].as_i64().unwrap() as i32;
    // A second container of the same id is refused.
    let (status, err) = f.create("c-created", &[]);
    assert!(!status.success());
    assert!(err.contains("already exists"), "{err}");
    let o = f.runc(&["delete", "c-created"]);
    assert!(o.status.success(), "delete: {}", common::stderr(&o));
    assert_eq!(wait_status(pid), 137);

    let (status, err) = f.create("c-running", &[]);
    assert!(status.success(), "create: {err}");
    let pid = f.state("c-running")["pid"].as_i64().unwrap() as i32;
    assert!(f.runc(&["start", "c-running"]).status.success());
    let o = f.runc(&["delete", "c-running"]);
    assert!(!o.status.success(), "a running container was deleted");
    assert!(
        common::stderr(&o).contains("--force"),
        "{}",
        common::stderr(&o)
    );
    f.force_delete("c-running", pid);
    f.assert_clean("delete");
}

#[test]
fn run_returns_the_workload_status_with_limits_applied() {
    let _g = common::root_test();
    let f = Fixture::new(|v| {
        set_args(
            v,
            "ulimit -n; cat /proc/self/status | grep ^CapEff; hostname; \
             cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes 2>/dev/null \
             || cat /sys/fs/cgroup/memory.swap.max; exit 7",
        );
        v["hostname"] = "runner".into();
        // memory+swap, as docker's `--memory 64m` sends it: twice the limit.
        v["linux"]["resources"]["memory"] =
            serde_json::json!({"limit": 64 << 20, "swap": 128 << 20});
        v["linux"]["resources"]["pids"] = serde_json::json!({"limit": 32});
        v["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 77, "hard": 88}]);
    });
    let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "runner"]);
    assert_eq!(o.status.code(), Some(7), "run: {}", common::stderr(&o));
    let out = common::stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "77", "{out}");
    // spec's default capabilities: AUDIT_WRITE, KILL, NET_BIND_SERVICE.
    assert_eq!(lines[1], "CapEff:\t0000000020000420", "{out}");
    assert_eq!(lines[2], "runner");
    // v1: memory+swap; v2: the swap alone (where the host accounts swap at all).
    let v1 = Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v1 {
        assert_eq!(lines[3], (128u64 << 20).to_string(), "{out}");
    } else if v2 && lines.len() > 3 {
        assert_eq!(lines[3], (64u64 << 20).to_string(), "{out}");
    }
    f.assert_clean("run");
}

/// runtime-tools' validation suite writes every config with inheritable and ambient sets equal
/// to bounding; isol-runc refused them all before. They are set as given (the init and the
/// workload, root, keep them across their execs), and what the kernel would refuse is refused
/// before anything is made.
#[test]
fn inheritable_and_ambient_capabilities_are_set_as_the_config_gives_them() {
    let _g = common::root_test();
    let f = Fixture::new(|v| {
        set_args(v, "grep -E '^Cap(Inh|Prm|Eff|Amb)' /proc/self/status");
        let caps = &mut v["process"]["capabilities"];
        caps["inheritable"] = serde_json::json!(["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        caps["ambient"] = serde_json::json!(["CAP_NET_BIND_SERVICE"]);
    });
    let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "caps"]);
    assert_eq!(o.status.code(), Some(0), "run: {}", common::stderr(&o));
    // KILL is bit 5 (0x20), NET_BIND_SERVICE bit 10 (0x400), AUDIT_WRITE bit 29.
    assert_eq!(
        common::stdout(&o),
        "CapInh:\t0000000000000420\nCapPrm:\t0000000020000420\n\
         CapEff:\t0000000020000420\nCapAmb:\t0000000000000400\n"
    );
    f.assert_root_empty();

    for (set, names, what) in [
        (
            "ambient",
            ["CAP_KILL"],
            "ambient names a capability outside inheritable",
        ),
        (
            "inheritable",
            ["CAP_SYS_ADMIN"],
            "inheritable names a capability outside bounding",
        ),
    ] {
        f.edit_config(|v| {
            let caps = &mut v["process"]["capabilities"];
            caps["inheritable"] = serde_json::json!(["CAP_NET_BIND_SERVICE"]);
            caps["ambient"] = serde_json::json!([]);
            caps[set] = serde_json::json!(names);
        });
        let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "caps"]);
        assert_eq!(o.status.code(), Some(1), "{set}: {}", common::stderr(&o));
        let err = common::stderr(&o);
        assert!(
            err.contains(what) && err.lines().count() == 1,
            "{set}: {err}"
        );
        f.assert_root_empty();
    }
    common::assert_no_leftovers("caps");
}

/// The runtime-spec: mounts are made in the listed order. isol's own (/proc, /dev and below it,
/// /sys) come in runc's order, the one configs list them in; /sys used to come before /dev,
/// which runtime-tools' validation (mountinfo against config.json) failed in every test.
#[test]
fn the_configs_mounts_appear_in_mountinfo_in_the_listed_order() {
    let _g = common::root_test();
    let f = Fixture::new(|v| set_args(v, "cat /proc/self/mountinfo"));
    let config: Value =
        serde_json::from_slice(&fs::read(f.bundle.join("config.json")).unwrap()).unwrap();
    let listed: Vec<String> = config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap().to_string())
        .collect();
    assert!(listed.len() >= 6, "{listed:?}");
    let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "order"]);
    assert_eq!(o.status.code(), Some(0), "run: {}", common::stderr(&o));
    let out = common::stdout(&o);
    // The mount point is mountinfo's fifth field; the first mount at each listed destination.
    let mut seen: Vec<String> = Vec::new();
    for point in out.lines().filter_map(|l| l.split(' ').nth(4)) {
        if listed.iter().any(|d| d == point) && !seen.iter().any(|s| s == point) {
            seen.push(point.to_string());
        }
    }
    assert_eq!(seen, listed, "{out}");
    f.assert_clean("order");
}

/// What docker sends for `--user 1000:1000`: a bounding set, nothing permitted or effective.
/// The process runs as that user with exactly that bounding set and holds nothing; an `exec`
/// of the same shape too. Permitted capabilities for a non-root user stay refused.
#[test]
fn a_non_root_user_gets_the_bounding_set_and_holds_no_capability() {
    let _g = as_a_shim();
    let caps = |v: &mut Value| {
        v["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
        v["process"]["capabilities"] = serde_json::json!({
            "bounding": ["CAP_CHOWN", "CAP_KILL"], "permitted": [], "effective": []
        });
    };
    let f = Fixture::new(|v| {
        caps(v);
        set_args(
            v,
            "id -u; grep -E '^Cap(Prm|Eff|Bnd)' /proc/self/status; sleep 30",
        );
    });
    let (status, err) = f.create("nonroot", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("nonroot")["pid"].as_i64().unwrap() as i32;
    let o = f.runc(&["start", "nonroot"]);
    assert!(
        o.status.success(),
        "start: {}{}",
        common::stderr(&o),
        fs::read_to_string(f.bundle.join("stderr")).unwrap()
    );
    wait_for("the workload's output", || f.output().contains("CapBnd"));
    assert_eq!(
        f.output(),
        "1000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000021\n"
    );
    let spec: Value =
        serde_json::from_slice(&fs::read(f.bundle.join("config.json")).unwrap()).unwrap();
    let mut p = spec["process"].clone();
    p["args"] = serde_json::json!([
        "sh",
        "-c",
        "id -u; grep -E '^Cap(Eff|Bnd)' /proc/self/status"
    ]);
    let process = f.bundle.join("process.json");
    fs::write(&process, p.to_string()).unwrap();
    let o = f.runc(&["exec", "--process", process.to_str().unwrap(), "nonroot"]);
    assert!(o.status.success(), "exec: {}", common::stderr(&o));
    assert_eq!(
        common::stdout(&o),
        "1000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000021\n"
    );
    f.force_delete("nonroot", init);

    // Capabilities a non-root process would lose at its exec (not ambient): refused.
    f.edit_config(|v| v["process"]["capabilities"]["effective"] = serde_json::json!(["CAP_KILL"]));
    let (status, err) = f.create("holds", &[]);
    assert!(!status.success());
    assert!(err.contains("non-root process.user"), "{err}");
    f.assert_root_empty();

    // All five sets alike (runtime-tools' generator, runc's `spec`): the ambient set is held
    // across the init's exec and the workload's, as runc's process holds it.
    f.edit_config(|v| {
        let set = serde_json::json!(["CAP_CHOWN", "CAP_KILL"]);
        v["process"]["capabilities"] = serde_json::json!({
            "bounding": set, "permitted": set, "effective": set, "inheritable": set,
            "ambient": set,
        });
        set_args(
            v,
            "id -u; grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status",
        );
    });
    let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "ambient"]);
    assert!(o.status.success(), "run: {}", common::stderr(&o));
    assert_eq!(
        common::stdout(&o),
        "1000\nCapInh:\t0000000000000021\nCapPrm:\t0000000000000021\n\
         CapEff:\t0000000000000021\nCapBnd:\t0000000000000021\nCapAmb:\t0000000000000021\n"
    );
    f.assert_clean("non-root capabilities");
}

#[test]
fn bad_bundles_fail_with_a_json_error_and_leave_nothing() {
    let _g = common::root_test();
    // (what, how the bundle is spoiled, what the error says)
    type Case = (&'static str, fn(&Fixture), &'static str);
    let cases: [Case; 6] = [
        (
            "no config.json",
            |f| fs::remove_file(f.bundle.join("config.json")).unwrap(),
            "config.json: No such file",
        ),
        (
            "malformed JSON",
            |f| fs::write(f.bundle.join("config.json"), "{\"ociVersion\": ").unwrap(),
            "is not a valid OCI runtime config",
        ),
        (
            "unknown namespace",
            |f| f.edit_config(|v| v["linux"]["namespaces"][0]["type"] = "bogus".into()),
            "is not a valid OCI runtime config",
        ),
        (
            "missing rootfs",
            |f| fs::remove_dir_all(f.bundle.join("rootfs")).unwrap(),
            "rootfs",
        ),
        (
            "missing executable",
            |f| f.edit_config(|v| v["process"]["args"] = serde_json::json!(["/bin/nope"])),
            "no such file or directory",
        ),
        (
            "unsupported field",
            |f| f.edit_config(|v| v["process"]["terminal"] = true.into()),
            "process.terminal",
        ),
    ];
    for (i, (what, spoil, expected)) in cases.into_iter().enumerate() {
        let f = Fixture::new(|v| set_args(v, "true"));
        spoil(&f);
        let log = f.bundle.join("log.json");
        let id = format!("bad-{i}");
        let o = Command::new(runc_bin())
            .arg("--root")
            .arg(&f.root)
            .arg("--log")
            .arg(&log)
            .args(["--log-format", "json", "create", "--bundle"])
            .arg(&f.bundle)
            .arg(&id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!o.success(), "{what}: create succeeded");
        let text = fs::read_to_string(&log).unwrap_or_default();
        let last = text.lines().last().unwrap_or_default();
        let line: Value = serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("{what}: the log's last line {last:?} is not JSON: {e}"));
        assert_eq!(line["level"], "error", "{what}: {last}");
        let msg = line["msg"].as_str().unwrap();
        assert!(msg.contains(expected), "{what}: {msg}");
        assert!(!msg.contains('\n'));
        assert!(
            line["time"].as_str().is_some_and(|t| t.starts_with("20")),
            "{last}"
        );
        let o = f.runc(&["state", &id]);
        assert!(common::stderr(&o).contains("does not exist"), "{what}");
        f.assert_clean(what);
    }
}

#[test]
fn spec_features_and_version() {
    // One at a time with the others: they reap orphans with waitpid(-1), which would take the
    // children this test waits for.
    let _g = common::serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_str().unwrap();
    let runc = |args: &[&str]| Command::new(runc_bin()).args(args).output().unwrap();
    assert!(runc(&["spec", "--bundle", dir]).status.success());
    let spec: Value =
        serde_json::from_slice(&fs::read(tmp.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["terminal"], false);
    assert_eq!(spec["root"]["path"], "rootfs");
    // It does not overwrite a config.
    let o = runc(&["spec", "--bundle", dir]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("exists"));

    let o = runc(&["features"]);
    let features: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(features["linux"]["namespaces"].as_array().unwrap().len() >= 5);
    assert_eq!(features["linux"]["seccomp"]["enabled"], true);
    assert!(
        features["linux"]["seccomp"]["actions"]
            .as_array()
            .unwrap()
            .contains(&"SCMP_ACT_ERRNO".into())
    );
    let o = runc(&["--version"]);
    assert!(
        common::stdout(&o).contains("spec: 1.2.0"),
        "{}",
        common::stdout(&o)
    );
    assert_eq!(features["hooks"].as_array().unwrap().len(), 6, "{features}");
    // events of no container, or with a bad interval, fail saying why.
    let o = runc(&["--root", dir, "events", "x"]);
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("container x does not exist"),
        "{}",
        common::stderr(&o)
    );
    let o = runc(&["--root", dir, "events", "--interval", "soon", "x"]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("5s"), "{}", common::stderr(&o));
}

#[test]
fn a_create_killed_at_any_point_is_cleaned_up_by_delete_force() {
    let _g = as_a_shim();
    let f = Fixture::new(|v| set_args(v, "sleep 30"));
    let delays = [0, 1, 2, 4, 8, 16, 32, 64, 200];
    kill_creates(&f, "killed-create", &delays, |delay_ms| {
        f.assert_clean(&format!("create killed after {delay_ms} ms"));
    });
}

/// Creates of `<prefix>-<i>` in `f` killed `delays_ms[i]` ms after their start, each followed
/// by `delete --force` (as a shim does), which undoes whatever create had done or says there
/// was nothing; then `check(delay)`.
fn kill_creates(f: &Fixture, prefix: &str, delays_ms: &[u64], mut check: impl FnMut(u64)) {
    for (i, &delay_ms) in delays_ms.iter().enumerate() {
        let id = format!("{prefix}-{i}");
        let mut create = f
            .command(&["create", "--bundle", f.bundle.to_str().unwrap(), &id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = create.kill();
        let _ = create.wait();
        // Whatever create had done, delete --force undoes it (or finds nothing, which it
        // counts as done, as runc).
        let o = f.runc(&["delete", "--force", &id]);
        assert!(
            o.status.success(),
            "after {delay_ms} ms: {}",
            common::stderr(&o)
        );
        // The init, when there was one, was re-parented to us: reap it.
        while let Ok(status) = waitpid(None::<Pid>, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        check(delay_ms);
    }
}

#[test]
fn a_container_joins_another_ones_network_ipc_and_uts_namespaces_by_path() {
    let _g = as_a_shim();
    // The "pod sandbox": created, its namespaces held by its init.
    let sandbox = Fixture::new(|v| {
        set_args(v, "sleep 30");
        v["hostname"] = "the-pod".into();
    });
    let (status, err) = sandbox.create("sandbox", &[]);
    assert!(status.success(), "create: {err}");
    let pid = sandbox.state("sandbox")["pid"].as_i64().unwrap();
    let ns = |t: &str| {
        fs::read_link(format!("/proc/{pid}/ns/{t}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };

    let member = Fixture::new(|v| {
        set_args(
            v,
            "for t in net ipc uts pid; do readlink /proc/self/ns/$t; done; hostname",
        );
        v["hostname"] = Value::Null;
        for n in v["linux"]["namespaces"].as_array_mut().unwrap() {
            let t = n["type"].as_str().unwrap().to_string();
            let proc_name = match t.as_str() {
                "network" => "net",
                "ipc" => "ipc",
                "uts" => "uts",
                _ => continue,
            };
            n["path"] = format!("/proc/{pid}/ns/{proc_name}").into();
        }
    });
    let o = member.runc(&["run", "--bundle", member.bundle.to_str().unwrap(), "member"]);
    assert!(o.status.success(), "run: {}", common::stderr(&o));
    let out = common::stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], ns("net"), "{out}");
    assert_eq!(lines[1], ns("ipc"), "{out}");
    assert_eq!(lines[2], ns("uts"), "{out}");
    assert_ne!(
        lines[3],
        ns("pid"),
        "the PID namespace is the member's own: {out}"
    );
    assert_eq!(lines[4], "the-pod");
    member.assert_root_empty();

    // As runc: a hostname is set in the namespace the container joins, which every process
    // there then sees (the next member, which sets none, reads it).
    member.edit_config(|v| v["hostname"] = "renamed-pod".into());
    let o = member.runc(&["run", "--bundle", member.bundle.to_str().unwrap(), "member"]);
    assert!(o.status.success(), "run: {}", common::stderr(&o));
    assert_eq!(common::stdout(&o).lines().nth(4), Some("renamed-pod"));
    member.edit_config(|v| v["hostname"] = Value::Null);
    let o = member.runc(&["run", "--bundle", member.bundle.to_str().unwrap(), "member"]);
    assert!(o.status.success(), "run: {}", common::stderr(&o));
    assert_eq!(common::stdout(&o).lines().nth(4), Some("renamed-pod"));
    // The host's UTS namespace (no uts in the list) is refused one.
    member.edit_config(|v| {
        v["hostname"] = "mine".into();
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "uts");
    });
    let o = member.runc(&["run", "--bundle", member.bundle.to_str().unwrap(), "member"]);
    assert!(
        common::stderr(&o).contains("hostname cannot be set in the host's uts namespace"),
        "{}",
        common::stderr(&o)
    );
    assert_ne!(
        fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "mine"
    );

    let o = sandbox.runc(&["delete", "--force", "sandbox"]);
    assert!(o.status.success(), "delete: {}", common::stderr(&o));
    assert_eq!(wait_status(pid as i32), 137);
    common::assert_no_leftovers("joined namespaces");
}

#[test]
fn a_terminal_is_handed_to_the_console_socket() {
    use std::io::Read;
    use std::os::fd::AsFd;
    let _g = as_a_shim();
    let f = Fixture::new(|v| {
        set_args(
            v,
            "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; stty size; exit 5",
        );
        v["process"]["terminal"] = true.into();
        v["process"]["consoleSize"] = serde_json::json!({"height": 30, "width": 100});
    });
    // Without a console socket, a terminal is refused, as runc does.
    let (status, err) = f.create("tty", &[]);
    assert!(!status.success());
    assert!(err.contains("--console-socket"), "{err}");

    let socket = f.bundle.join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        isol_container::security::exe::receive_fd(conn.as_fd()).unwrap()
    });
    let (status, err) = f.create("tty", &["--console-socket", socket.to_str().unwrap()]);
    assert!(status.success(), "create: {err}");
    let master = fs::File::from(receiver.join().unwrap());
    let pid = f.state("tty")["pid"].as_i64().unwrap() as i32;
    let o = f.runc(&["start", "tty"]);
    assert!(o.status.success(), "start: {}", common::stderr(&o));
    // The master reads the workload's output until its last slave closes (EIO).
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut master = master;
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("is-a-tty"), "{out:?}");
    assert!(out.contains("30 100"), "{out:?}");
    assert_eq!(wait_status(pid), 5);
    assert!(f.runc(&["delete", "tty"]).status.success());
    f.assert_clean("terminal");
}

#[test]
fn exec_runs_further_processes_in_a_running_container() {
    let _g = as_a_shim();
    let f = Fixture::new(|v| {
        set_args(v, "echo started; sleep 30");
        v["hostname"] = "exec-host".into();
    });
    let (status, err) = f.create("busy", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("busy")["pid"].as_i64().unwrap() as i32;
    assert!(f.runc(&["start", "busy"]).status.success());
    let ns = |pid: i32, t: &str| fs::read_link(format!("/proc/{pid}/ns/{t}")).unwrap();

    // The command line form, over the container's own process: its namespaces, its
    // capabilities, its cgroup; the exit status is the process's.
    let o = f.runc(&[
        "exec",
        "busy",
        "sh",
        "-c",
        "hostname; cat /proc/1/comm; grep CapEff /proc/self/status; exit 6",
    ]);
    assert_eq!(o.status.code(), Some(6), "exec: {}", common::stderr(&o));
    assert_eq!(
        common::stdout(&o),
        "exec-host\nisol-init\nCapEff:\t0000000020000420\n"
    );

    // --process, as containerd sends it, as another user.
    let process = f.bundle.join("process.json");
    let spec: Value =
        serde_json::from_slice(&fs::read(f.bundle.join("config.json")).unwrap()).unwrap();
    let mut p = spec["process"].clone();
    p["args"] = serde_json::json!(["sh", "-c", "id -u; id -g"]);
    p["user"] = serde_json::json!({"uid": 1000, "gid": 1001});
    p["capabilities"] = Value::Null;
    fs::write(&process, p.to_string()).unwrap();
    let o = f.runc(&["exec", "--process", process.to_str().unwrap(), "busy"]);
    assert!(o.status.success(), "exec --process: {}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "1000\n1001\n");

    // --detach --pid-file: the process outlives the command, in the container's namespaces.
    let pid_file = f.bundle.join("exec.pid");
    // (Its stdio is the command's: not a pipe read to its end, which would wait for it.)
    let status = f
        .command(&[
            "exec",
            "--detach",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "busy",
            "sleep",
            "30",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "exec --detach");
    let pid: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for t in ["pid", "mnt", "net", "uts", "ipc"] {
        assert_eq!(ns(pid, t), ns(init, t), "{t}");
    }
    let o = f.runc(&["ps", "--format", "json", "busy"]);
    let pids: Vec<i32> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(pids.contains(&pid), "{pids:?}");

    // What cannot be executed fails the runc way.
    let o = f.runc(&["exec", "busy", "/bin/nope"]);
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("no such file or directory"),
        "{}",
        common::stderr(&o)
    );

    // The detached process is ours to reap, as a shim reaps every child: until it is reaped,
    // the dying init of its PID namespace waits for it (and delete for the init).
    let reaper = std::thread::spawn(move || waitpid(Pid::from_raw(pid), None));
    let o = f.runc(&["delete", "--force", "busy"]);
    assert!(o.status.success(), "delete: {}", common::stderr(&o));
    assert!(matches!(
        reaper.join().unwrap(),
        Ok(WaitStatus::Signaled(
            _,
            nix::sys::signal::Signal::SIGKILL,
            _
        ))
    ));
    assert_eq!(wait_status(init), 137);
    f.assert_clean("exec");
}

/// A profile as docker, podman and containerd send them, with each kind of rule: an errno of its
/// own, a condition on an argument, a kill.
fn test_profile() -> Value {
    serde_json::json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat", "a_syscall_no_kernel_has"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]},
            {"names": ["sync"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]
    })
}

/// What the workload does under [`test_profile`]: mkdir fails with EACCES, SIGUSR1 (10) cannot
/// be sent but signal 0 can, and sync kills the shell (SIGSYS, 159).
const PROFILE_PROBE: &str = "grep ^Seccomp: /proc/self/status; mkdir /tmp/d; echo mkdir=$?; \
     kill -USR1 $$ 2>/dev/null; echo usr1=$?; kill -0 $$; echo zero=$?; exec sync";
const PROFILE_OUT: &str = "Seccomp:\t2\nmkdir=1\nusr1=1\nzero=0\n";

#[test]
fn a_configs_own_seccomp_profile_is_enforced_on_its_processes() {
    let _g = as_a_shim();
    let f = Fixture::new(|v| {
        set_args(v, PROFILE_PROBE);
        v["linux"]["seccomp"] = test_profile();
    });
    let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "sc"]);
    assert_eq!(o.status.code(), Some(159), "run: {}", common::stderr(&o));
    assert_eq!(common::stdout(&o), PROFILE_OUT);
    assert!(
        common::stderr(&o).contains("Permission denied"),
        "{}",
        common::stderr(&o)
    );

    // A process exec'd into the container gets the container's profile too.
    f.edit_config(|v| set_args(v, "sleep 30"));
    let (status, err) = f.create("sc2", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("sc2")["pid"].as_i64().unwrap() as i32;
    assert!(f.runc(&["start", "sc2"]).status.success());
    let o = f.runc(&["exec", "sc2", "sh", "-c", PROFILE_PROBE]);
    assert_eq!(o.status.code(), Some(159), "exec: {}", common::stderr(&o));
    assert_eq!(common::stdout(&o), PROFILE_OUT);
    f.force_delete("sc2", init);

    // A profile isol cannot honour fails create with its reason, and leaves nothing.
    f.edit_config(|v| {
        v["linux"]["seccomp"] = serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": "/run/seccomp-agent.sock",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        })
    });
    let (status, err) = f.create("sc3", &[]);
    assert!(!status.success());
    assert!(
        err.contains("linux.seccomp: Invalid seccomp profile: listenerPath"),
        "{err}"
    );
    f.assert_clean("seccomp");
}

/// `process.user.umask`, `process.oomScoreAdj` and `linux.sysctl` apply to the container's
/// processes (exec'd ones too) and its namespaces, never to the host.
#[test]
fn umask_oom_score_adj_and_sysctls_apply_inside() {
    let _g = as_a_shim();
    let host = |key: &str| fs::read_to_string(format!("/proc/sys/{key}")).unwrap();
    let (shmmax, forward) = (host("kernel/shmmax"), host("net/ipv4/ip_forward"));
    let own_adj: i32 = fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let raised = (own_adj + 300).min(1000);
    let probe = "umask; touch /tmp/f; stat -c %a /tmp/f; cat /proc/self/oom_score_adj \
                 /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward";
    let f = Fixture::new(|v| {
        set_args(v, &format!("{probe}; sleep 30"));
        v["root"]["readonly"] = false.into();
        v["process"]["user"]["umask"] = 0o077.into();
        v["process"]["oomScoreAdj"] = raised.into();
        v["linux"]["sysctl"] =
            serde_json::json!({"kernel.shmmax": "65536", "net.ipv4.ip_forward": "1"});
    });
    let (status, err) = f.create("knobs", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("knobs")["pid"].as_i64().unwrap() as i32;
    assert!(f.runc(&["start", "knobs"]).status.success());
    let want = format!("0077\n600\n{raised}\n65536\n1\n");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while f.output() != want && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(f.output(), want);
    // An exec'd process: the same umask and oom_score_adj, the same namespaces' sysctls.
    let o = f.runc(&[
        "exec",
        "knobs",
        "sh",
        "-c",
        &probe.replace("/tmp/f", "/tmp/g"),
    ]);
    assert!(o.status.success(), "exec: {}", common::stderr(&o));
    assert_eq!(common::stdout(&o), want);
    f.force_delete("knobs", init);
    assert_eq!(
        (host("kernel/shmmax"), host("net/ipv4/ip_forward")),
        (shmmax, forward),
        "the host's sysctls changed"
    );

    // Lowering oom_score_adj needs CAP_SYS_RESOURCE: without it, create fails as runc's does.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:\t"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    f.edit_config(|v| {
        set_args(v, "cat /proc/self/oom_score_adj");
        v["process"]["oomScoreAdj"] = (own_adj - 1).max(-1000).into();
        v["linux"]["sysctl"] = Value::Null;
    });
    let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "lower"]);
    // CAP_SYS_RESOURCE is capability 24.
    if eff & (1 << 24) != 0 {
        assert!(o.status.success(), "run: {}", common::stderr(&o));
    } else {
        assert!(!o.status.success());
        assert!(
            common::stderr(&o).contains("Cannot set oom_score_adj"),
            "{}",
            common::stderr(&o)
        );
    }
    f.assert_clean("knobs");
}

/// The control file `name` of the cgroup at `path` (below the hierarchy's root): v2's own
/// directory, or on v1 the hierarchy whose mount holds the file (`freezer.state` in freezer's).
fn cgroup_file(path: &str, name: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        return Path::new("/sys/fs/cgroup").join(rel).join(name);
    }
    let controller = name.split('.').next().unwrap();
    for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let hierarchy = e.file_name().to_string_lossy().into_owned();
        if hierarchy.split(',').any(|c| c == controller) {
            return e.path().join(rel).join(name);
        }
    }
    panic!("no {name} for cgroup {path}");
}

/// Waits until `cond` holds (10 s at most).
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn pause_freezes_the_container_and_resume_thaws_it() {
    let _g = as_a_shim();
    let cgroup = "/isol-oci-test/paused";
    let f = Fixture::new(|v| {
        set_args(v, "while :; do echo tick; sleep 0.05; done");
        v["linux"]["cgroupsPath"] = cgroup.into();
    });
    let (status, err) = f.create("paused", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("paused")["pid"].as_i64().unwrap() as i32;
    // A created container cannot be paused (as runc).
    let o = f.runc(&["pause", "paused"]);
    assert!(
        common::stderr(&o).contains("is created: only a running container can be paused"),
        "{}",
        common::stderr(&o)
    );
    assert!(f.runc(&["start", "paused"]).status.success());
    wait_for("the workload ticks", || f.output().contains("tick"));

    let o = f.runc(&["pause", "paused"]);
    assert!(o.status.success(), "pause: {}", common::stderr(&o));
    assert_eq!(f.state("paused")["status"], "paused");
    // The kernel says so, v1 or v2.
    let frozen = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        fs::read_to_string(cgroup_file(cgroup, "cgroup.events"))
            .unwrap()
            .contains("frozen 1")
    } else {
        fs::read_to_string(cgroup_file(cgroup, "freezer.state")).unwrap() == "FROZEN\n"
    };
    assert!(frozen, "the cgroup is not frozen");
    // Nothing runs: the output stays as it was.
    let before = f.output();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(f.output(), before, "the workload ran while paused");
    // Paused: no second pause, no exec, no delete without --force.
    for (args, msg) in [
        (&["pause", "paused"][..], "is paused: only a running"),
        (&["exec", "paused", "true"][..], "is paused"),
        (&["delete", "paused"][..], "is paused: stop it first"),
    ] {
        let o = f.runc(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(common::stderr(&o).contains(msg), "{}", common::stderr(&o));
    }

    let o = f.runc(&["resume", "paused"]);
    assert!(o.status.success(), "resume: {}", common::stderr(&o));
    assert_eq!(f.state("paused")["status"], "running");
    let ticks = before.lines().count();
    wait_for("the workload ticks again", || {
        f.output().lines().count() > ticks + 2
    });
    let o = f.runc(&["resume", "paused"]);
    assert!(
        common::stderr(&o).contains("is running: only a paused container can be resumed"),
        "{}",
        common::stderr(&o)
    );

    // delete --force of a paused container thaws and kills it.
    assert!(f.runc(&["pause", "paused"]).status.success());
    f.force_delete("paused", init);
    f.assert_clean("pause");
}

#[test]
fn update_changes_memory_cpu_and_pids_limits() {
    let _g = as_a_shim();
    let cgroup = "/isol-oci-test/updated";
    let f = Fixture::new(|v| {
        set_args(v, "sleep 30");
        v["linux"]["cgroupsPath"] = cgroup.into();
    });
    let (status, err) = f.create("updated", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("updated")["pid"].as_i64().unwrap() as i32;
    assert!(f.runc(&["start", "updated"]).status.success());
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let read = |name: &str| {
        fs::read_to_string(cgroup_file(cgroup, name))
            .unwrap()
            .trim()
            .to_string()
    };

    // runc's flags: limits the container was created without.
    let o = f.runc(&[
        "update",
        "--memory",
        "67108864",
        "--cpu-quota",
        "50000",
        "--cpu-period",
        "100000",
        "--pids-limit",
        "20",
        "updated",
    ]);
    assert!(o.status.success(), "update: {}", common::stderr(&o));
    if v2 {
        assert_eq!(read("memory.max"), "67108864");
        assert_eq!(read("cpu.max"), "50000 100000");
    } else {
        assert_eq!(read("memory.limit_in_bytes"), "67108864");
        assert_eq!(read("cpu.cfs_quota_us"), "50000");
    }
    // A period alone: the quota stays.
    let o = f.runc(&["update", "--cpu-period", "200000", "updated"]);
    assert!(o.status.success(), "update: {}", common::stderr(&o));
    if v2 {
        assert_eq!(read("cpu.max"), "50000 200000");
    } else {
        assert_eq!(read("cpu.cfs_period_us"), "200000");
        assert_eq!(read("cpu.cfs_quota_us"), "50000");
    }
    assert_eq!(read("pids.max"), "20");

    // --resources -, as containerd sends it.
    let mut update = f
        .command(&["update", "--resources", "-", "updated"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    update
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"memory": {"limit": 33554432}, "pids": {"limit": 10}}"#)
        .unwrap();
    let o = update.wait_with_output().unwrap();
    assert!(o.status.success(), "update -r -: {}", common::stderr(&o));
    let memory = if v2 {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(read(memory), "33554432");
    assert_eq!(read("pids.max"), "10");

    // What isol cannot change is refused by name, and changes nothing.
    let devices = f.bundle.join("devices.json");
    fs::write(
        &devices,
        r#"{"devices": [{"allow": true, "access": "rwm"}], "memory": {"limit": 1048576}}"#,
    )
    .unwrap();
    for (args, msg) in [
        (
            &["update", "--cpu-period", "5000000", "updated"][..],
            "cpu period",
        ),
        (
            &["update", "--cpuset-cpus", "0-", "updated"][..],
            "cpu.cpus",
        ),
        (
            &["update", "--memory-reservation", "1000", "updated"][..],
            "memory.reservation",
        ),
        (
            &[
                "update",
                "--resources",
                devices.to_str().unwrap(),
                "updated",
            ][..],
            "devices cannot be changed",
        ),
        (&["update", "updated"][..], "changes nothing"),
        (&["update", "--memory", "1", "nope"][..], "does not exist"),
    ] {
        let o = f.runc(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(common::stderr(&o).contains(msg), "{}", common::stderr(&o));
    }
    assert_eq!(read(memory), "33554432");

    f.force_delete("updated", init);
    let o = f.runc(&["update", "--memory", "1048576", "updated"]);
    assert!(common::stderr(&o).contains("does not exist"));
    f.assert_clean("update");
}

/// `events --stats` gives runc's shape with the cgroup files' values; `events --interval`
/// streams stats and an `oom` object when the OOM killer kills in the container, and ends
/// when the container does.
#[test]
fn events_give_the_cgroups_statistics_and_oom_kills() {
    use std::io::{BufRead, BufReader};
    let _g = as_a_shim();
    let cgroup = "/isol-oci-test/events";
    let f = Fixture::new(|v| {
        // Waits for the go (a file), then fills memory past the limit: the OOM killer kills
        // `tail`, the shell goes on.
        set_args(
            v,
            "while [ ! -e /tmp/go ]; do sleep 0.1; done; tail /dev/zero; echo survived; sleep 30",
        );
        v["root"]["readonly"] = false.into();
        v["linux"]["cgroupsPath"] = cgroup.into();
        v["linux"]["resources"] = serde_json::json!({
            "memory": {"limit": 33554432, "swap": 33554432},
            "pids": {"limit": 20},
        });
    });
    fs::create_dir_all(f.bundle.join("rootfs/tmp")).unwrap();
    let (status, err) = f.create("events", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("events")["pid"].as_i64().unwrap() as i32;
    assert!(f.runc(&["start", "events"]).status.success());
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let read = |name: &str| -> u64 {
        fs::read_to_string(cgroup_file(cgroup, name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    // The container is idle (a sleep and its shell): its pids and limits hold still.
    let o = f.runc(&["events", "--stats", "events"]);
    assert!(o.status.success(), "events --stats: {}", common::stderr(&o));
    let lines: Vec<&str> = std::str::from_utf8(&o.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let ev: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(ev["type"], "stats");
    assert_eq!(ev["id"], "events");
    let data = &ev["data"];
    assert_eq!(data["pids"]["current"], read("pids.current"), "{data}");
    assert_eq!(data["pids"]["limit"], 20);
    assert_eq!(data["memory"]["usage"]["limit"], 33554432u64);
    let usage = data["memory"]["usage"]["usage"].as_u64().unwrap();
    assert!(usage > 0 && usage <= 33554432, "{data}");
    let cpu = data["cpu"]["usage"]["total"].as_u64().unwrap();
    let cpu_now = if v2 {
        fs::read_to_string(cgroup_file(cgroup, "cpu.stat"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1000
    } else {
        read("cpuacct.usage")
    };
    assert!(cpu > 0 && cpu <= cpu_now, "{cpu} vs {cpu_now}");
    if v2 {
        assert_eq!(data["memory"]["raw"]["anon"], {
            let stat = fs::read_to_string(cgroup_file(cgroup, "memory.stat")).unwrap();
            let anon: u64 = stat
                .lines()
                .find_map(|l| l.strip_prefix("anon "))
                .unwrap()
                .parse()
                .unwrap();
            anon
        });
    } else {
        assert_eq!(
            data["memory"]["raw"]["hierarchical_memory_limit"],
            33554432u64
        );
    }
    assert!(
        data["blkio"].is_object() && data["hugetlb"].is_object(),
        "{data}"
    );

    // The stream: stats at once, then the OOM kill.
    let mut stream = f
        .command(&["events", "--interval", "200ms", "events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(stream.stdout.take().unwrap()).lines();
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["type"], "stats");
    fs::write(f.bundle.join("rootfs/tmp/go"), "").unwrap();
    let mut seen = Vec::new();
    let oom = loop {
        let Some(Ok(line)) = lines.next() else {
            break false;
        };
        let ev: Value = serde_json::from_str(&line).unwrap();
        if ev["type"] == "oom" {
            assert_eq!(ev["id"], "events");
            break true;
        }
        assert_eq!(ev["type"], "stats", "{line}");
        seen.push(line);
        if seen.len() > 300 {
            break false;
        }
    };
    assert!(oom, "no oom event after {} stats", seen.len());
    wait_for("the shell after the OOM kill", || {
        f.output().contains("survived")
    });

    // The container's end ends the stream.
    let o = f.runc(&["kill", "events", "KILL"]);
    assert!(o.status.success(), "kill: {}", common::stderr(&o));
    assert_eq!(wait_status(init), 137);
    let rest: Vec<_> = lines.map_while(Result::ok).collect();
    assert!(rest.iter().all(|l| l.contains("\"stats\"")), "{rest:?}");
    assert!(stream.wait().unwrap().success());
    let o = f.runc(&["events", "--stats", "events"]);
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("stopped"),
        "{}",
        common::stderr(&o)
    );
    assert!(f.runc(&["delete", "events"]).status.success());
    f.assert_clean("events");
}

/// A block device of this host for block IO throttles (`MAJ:MIN` from /sys/block): a whole
/// disk (vda, sda, nvme…) first, else any (the lab has no disk).
fn a_disk() -> Option<(String, u64, u64)> {
    let mut disks: Vec<_> = fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let virtual_dev = |n: &String| {
        ["loop", "ram", "zram", "dm-", "md"]
            .iter()
            .any(|p| n.starts_with(p))
    };
    disks.sort_by_key(|n| (virtual_dev(n), n.clone()));
    let name = disks.into_iter().next()?;
    let dev = fs::read_to_string(format!("/sys/block/{name}/dev")).ok()?;
    let (major, minor) = dev.trim().split_once(':')?;
    Some((name, major.parse().ok()?, minor.parse().ok()?))
}

/// blockIO throttles and weight, hugepageLimits: written where the host's cgroups have them
/// (v1 `blkio`/`hugetlb` hierarchies, v2 `io`/`hugetlb`), refused by name where not; `update`
/// changes them.
#[test]
fn block_io_and_huge_page_limits_follow_the_host() {
    let _g = as_a_shim();
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let cgroup = "/isol-oci-test/blkio";
    // The lab has no block device at all: there only the weight and huge pages are tried.
    let disk = a_disk();
    match &disk {
        Some((name, major, minor)) => eprintln!("throttling {name} ({major}:{minor})"),
        None => eprintln!("no block device in /sys/block here: throttles not tried"),
    }
    let f = Fixture::new(|v| {
        set_args(v, "sleep 30");
        v["linux"]["cgroupsPath"] = cgroup.into();
        if let Some((_, major, minor)) = disk {
            v["linux"]["resources"] = serde_json::json!({"blockIO": {
                "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1048576}],
                "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}],
            }});
        }
    });
    let (status, err) = f.create("blkio", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("blkio")["pid"].as_i64().unwrap() as i32;
    let read = |name: &str| {
        fs::read_to_string(cgroup_file(cgroup, name))
            .unwrap()
            .trim()
            .to_string()
    };
    let update = f.bundle.join("update.json");
    if let Some((_, major, minor)) = disk {
        let dev = format!("{major}:{minor}");
        if v2 {
            let max = read("io.max");
            assert!(
                max.contains(&format!("{dev} rbps=1048576 wbps=max riops=max wiops=100")),
                "{max}"
            );
        } else {
            assert_eq!(
                read("blkio.throttle.read_bps_device"),
                format!("{dev} 1048576")
            );
            assert_eq!(
                read("blkio.throttle.write_iops_device"),
                format!("{dev} 100")
            );
        }
        // update: a new write rate.
        fs::write(
            &update,
            serde_json::json!({"blockIO": {
                "throttleWriteBpsDevice": [{"major": major, "minor": minor, "rate": 2097152}],
            }})
            .to_string(),
        )
        .unwrap();
        let o = f.runc(&["update", "--resources", update.to_str().unwrap(), "blkio"]);
        assert!(o.status.success(), "update: {}", common::stderr(&o));
        if v2 {
            assert!(
                read("io.max").contains("wbps=2097152"),
                "{}",
                read("io.max")
            );
        } else {
            assert_eq!(
                read("blkio.throttle.write_bps_device"),
                format!("{dev} 2097152")
            );
        }
    }
    // The weight and huge pages where the host has them.
    let weight_file = if v2 {
        ["io.bfq.weight", "io.weight"]
            .iter()
            .map(|n| cgroup_file(cgroup, n))
            .find(|p| p.exists())
    } else {
        ["blkio.bfq.weight", "blkio.weight"]
            .iter()
            .map(|n| cgroup_file(cgroup, n))
            .find(|p| p.exists())
    };
    let o = f.runc(&["update", "--blkio-weight", "300", "blkio"]);
    match &weight_file {
        Some(file) => {
            assert!(o.status.success(), "update: {}", common::stderr(&o));
            let w = fs::read_to_string(file).unwrap();
            assert!(w.contains("300") || w.contains("default 2930"), "{w}");
        }
        None => {
            assert!(!o.status.success());
            let err = common::stderr(&o);
            assert!(
                err.contains("block IO weight") && err.contains("BFQ"),
                "{err}"
            );
        }
    }
    let hugetlb = if v2 {
        fs::read_to_string(cgroup_file(cgroup, "cgroup.controllers"))
            .unwrap()
            .split_whitespace()
            .any(|c| c == "hugetlb")
    } else {
        fs::read_dir("/sys/fs/cgroup").unwrap().flatten().any(|e| {
            e.file_name()
                .to_string_lossy()
                .split(',')
                .any(|c| c == "hugetlb")
        })
    };
    let has_2mb = Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists();
    fs::write(
        &update,
        r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}"#,
    )
    .unwrap();
    let o = f.runc(&["update", "--resources", update.to_str().unwrap(), "blkio"]);
    let err = common::stderr(&o);
    if hugetlb && has_2mb {
        assert!(o.status.success(), "update: {err}");
        let file = if v2 {
            "hugetlb.2MB.max"
        } else {
            "hugetlb.2MB.limit_in_bytes"
        };
        assert_eq!(read(file), "4194304");
    } else {
        assert!(!o.status.success());
        assert!(err.contains("huge page") || err.contains("2MB"), "{err}");
    }
    // A page size no host has: refused by name.
    fs::write(
        &update,
        r#"{"hugepageLimits": [{"pageSize": "3MB", "limit": 4194304}]}"#,
    )
    .unwrap();
    let o = f.runc(&["update", "--resources", update.to_str().unwrap(), "blkio"]);
    assert!(!o.status.success());
    let err = common::stderr(&o);
    assert!(err.contains("3MB") && err.contains("this host's"), "{err}");

    f.force_delete("blkio", init);
    f.assert_clean("blkio");
}

/// A hook that records, under `dir`, what it read on stdin (`<name>.json`) and its mount and
/// PID namespaces (`<name>.ns`), with the shell at `sh`.
fn recording_hook(sh: &str, dir: &str, name: &str) -> Value {
    serde_json::json!({
        "path": sh,
        "args": ["sh", "-c", format!(
            "cat > {dir}/{name}.json; for t in mnt pid; do readlink /proc/self/ns/$t; done > {dir}/{name}.ns; echo \"$HOOK_ENV\" > {dir}/{name}.env"
        )],
        "env": [format!("HOOK_ENV={name}-env")],
        "timeout": 10
    })
}

#[test]
fn hooks_run_where_and_when_the_runtime_spec_says() {
    let _g = as_a_shim();
    let seen = tempfile::tempdir().unwrap();
    let dir = seen.path().to_str().unwrap().to_string();
    let f = Fixture::new(|v| {
        // The workload shows that startContainer ran before it.
        set_args(v, "cat /hooks/startContainer.env; sleep 30");
        v["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"destination": "/hooks", "type": "bind",
                "source": dir, "options": ["rbind", "rw"]}));
        v["annotations"] = serde_json::json!({"org.example.key": "value"});
        let h = |name: &str| vec![recording_hook("/bin/sh", &dir, name)];
        v["hooks"] = serde_json::json!({
            "prestart": h("prestart"),
            "createRuntime": h("createRuntime"),
            "createContainer": h("createContainer"),
            // The container's shell, at the container's path: /hooks there.
            "startContainer": [recording_hook("/bin/sh", "/hooks", "startContainer")],
            "poststart": h("poststart"),
            "poststop": h("poststop"),
        });
    });
    let read = |name: &str| fs::read_to_string(seen.path().join(name)).unwrap_or_default();
    let state = |name: &str| -> Value {
        serde_json::from_str(&read(&format!("{name}.json")))
            .unwrap_or_else(|e| panic!("{name}.json: {e}: {:?}", read(&format!("{name}.json"))))
    };
    let (status, err) = f.create("hooked", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("hooked")["pid"].as_i64().unwrap();
    let ns = |pid: &str| {
        ["mnt", "pid"]
            .map(|t| {
                fs::read_link(format!("/proc/{pid}/ns/{t}"))
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .join("\n")
            + "\n"
    };
    let (host_ns, init_ns) = (ns("self"), ns(&init.to_string()));
    assert_ne!(host_ns, init_ns);
    // After create: the creation hooks ran, the others not yet.
    for (name, status, namespaces) in [
        ("prestart", "creating", &host_ns),
        ("createRuntime", "creating", &host_ns),
        ("createContainer", "creating", &init_ns),
    ] {
        let s = state(name);
        assert_eq!(s["status"], status, "{name}: {s}");
        assert_eq!(s["pid"], init, "{name}: {s}");
        assert_eq!(s["id"], "hooked", "{name}: {s}");
        assert_eq!(s["annotations"]["org.example.key"], "value", "{name}: {s}");
        assert_eq!(Path::new(s["bundle"].as_str().unwrap()), f.bundle);
        assert_eq!(
            &read(&format!("{name}.ns")),
            namespaces,
            "{name}'s namespaces"
        );
        assert_eq!(read(&format!("{name}.env")), format!("{name}-env\n"));
    }
    assert!(
        read("startContainer.json").is_empty(),
        "startContainer before start"
    );
    assert!(read("poststart.json").is_empty(), "poststart before start");

    assert!(f.runc(&["start", "hooked"]).status.success());
    wait_for("the workload saw the startContainer hook", || {
        f.output() == "startContainer-env\n"
    });
    let s = state("startContainer");
    assert_eq!(
        (s["status"].as_str(), s["pid"].as_i64()),
        (Some("created"), Some(init))
    );
    // In the container: its namespaces (its /proc shows them as the host's shows the init's).
    assert_eq!(read("startContainer.ns"), init_ns);
    let s = state("poststart");
    assert_eq!(
        (s["status"].as_str(), s["pid"].as_i64()),
        (Some("running"), Some(init))
    );
    assert_eq!(read("poststart.ns"), host_ns);
    assert!(read("poststop.json").is_empty(), "poststop before delete");

    f.force_delete("hooked", init as i32);
    let s = state("poststop");
    assert_eq!(
        (s["status"].as_str(), s["pid"].as_i64()),
        (Some("stopped"), Some(0))
    );
    f.assert_clean("hooks");
}

#[test]
fn a_failing_creation_hook_fails_create_and_a_failing_poststart_is_logged() {
    let _g = as_a_shim();
    let failing = serde_json::json!([{"path": "/bin/sh",
        "args": ["sh", "-c", "echo the network is not ready >&2; exit 3"]}]);
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let f = Fixture::new(|v| {
            set_args(v, "true");
            v["hooks"] = serde_json::json!({ kind: failing });
        });
        let (status, err) = f.create("failing", &[]);
        assert!(!status.success(), "{kind}: create succeeded");
        assert!(
            err.contains(&format!(
                "{kind} hook #0 (/bin/sh) failed: exit status 3: the network is not ready"
            )),
            "{kind}: {err}"
        );
        f.assert_clean(kind);
    }
    // A hook that outlives its timeout is killed, and fails create.
    let f = Fixture::new(|v| {
        set_args(v, "true");
        v["hooks"] = serde_json::json!({"createRuntime": [
            {"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    });
    let (status, err) = f.create("slow", &[]);
    assert!(!status.success());
    assert!(err.contains("timed out after 1s"), "{err}");
    f.assert_root_empty();

    // poststart and poststop: a warning, the hooks after the failing one still run (the
    // runtime-spec; runtime-tools' poststart_fail and poststop_fail), and the container lives on
    // / is deleted.
    let f = Fixture::new(|v| {
        set_args(v, "sleep 30");
        let after = |kind: &str| {
            serde_json::json!({"path": "/bin/sh",
                "args": ["sh", "-c", format!("echo {kind} >> \"$0\"/after"), "DIR"]})
        };
        let mut poststart = failing.clone();
        poststart.as_array_mut().unwrap().push(after("poststart"));
        let mut poststop = failing.clone();
        poststop.as_array_mut().unwrap().push(after("poststop"));
        v["hooks"] = serde_json::json!({"poststart": poststart, "poststop": poststop});
    });
    // The second hooks append to <bundle>/after ($0 is the bundle).
    f.edit_config(|v| {
        let dir = f.bundle.to_str().unwrap();
        for kind in ["poststart", "poststop"] {
            v["hooks"][kind][1]["args"][3] = dir.into();
        }
    });
    let after = f.bundle.join("after");
    let (status, err) = f.create("warned", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("warned")["pid"].as_i64().unwrap() as i32;
    let o = f.runc(&["start", "warned"]);
    assert!(o.status.success(), "start: {}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("level=warning")
            && common::stderr(&o).contains("poststart hook #0"),
        "{}",
        common::stderr(&o)
    );
    assert_eq!(f.state("warned")["status"], "running");
    assert_eq!(fs::read_to_string(&after).unwrap(), "poststart\n");
    let o = f.runc(&["delete", "--force", "warned"]);
    assert!(o.status.success(), "delete: {}", common::stderr(&o));
    assert!(
        common::stderr(&o).contains("poststop hook #0"),
        "{}",
        common::stderr(&o)
    );
    assert_eq!(wait_status(init), 137);
    assert_eq!(fs::read_to_string(&after).unwrap(), "poststart\npoststop\n");
    f.assert_clean("failing hooks");
}

#[test]
fn pid_namespaces_are_joined_by_path_or_shared_with_the_host_and_domainname_is_set() {
    let _g = as_a_shim();
    let sandbox = Fixture::new(|v| set_args(v, "sleep 30"));
    let (status, err) = sandbox.create("pid-sandbox", &[]);
    assert!(status.success(), "create: {err}");
    let pid = sandbox.state("pid-sandbox")["pid"].as_i64().unwrap();
    let ns_of = |pid: &str, t: &str| {
        fs::read_link(format!("/proc/{pid}/ns/{t}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };

    // A pod's container in its sandbox's PID namespace: the sandbox's init is its PID 1.
    let member = Fixture::new(|v| {
        set_args(
            v,
            "readlink /proc/self/ns/pid; cat /proc/1/comm; cat /proc/sys/kernel/domainname; \
             sleep 30 & echo $!; wait",
        );
        v["domainname"] = "example.org".into();
        for n in v["linux"]["namespaces"].as_array_mut().unwrap() {
            if n["type"] == "pid" {
                n["path"] = format!("/proc/{pid}/ns/pid").into();
            }
        }
    });
    let (status, err) = member.create("pid-member", &[]);
    assert!(status.success(), "create: {err}");
    let member_init = member.state("pid-member")["pid"].as_i64().unwrap();
    assert_eq!(
        ns_of(&member_init.to_string(), "pid"),
        ns_of(&pid.to_string(), "pid")
    );
    assert!(member.runc(&["start", "pid-member"]).status.success());
    wait_for("the member's output", || {
        member.output().lines().count() == 4
    });
    let out = member.output();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], ns_of(&pid.to_string(), "pid"), "{out}");
    assert_eq!(lines[1], "isol-init", "{out}");
    assert_eq!(lines[2], "example.org", "{out}");
    // Its processes are those of its cgroup, not of the shared namespace: ps and kill --all
    // leave the sandbox alone.
    let o = member.runc(&["ps", "--format", "json", "pid-member"]);
    let pids: Vec<i64> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        !pids.contains(&pid),
        "the sandbox listed as the member's: {pids:?}"
    );
    assert_eq!(pids.len(), 3, "init, sh and sleep: {pids:?}");
    let o = member.runc(&["kill", "--all", "pid-member", "KILL"]);
    assert!(o.status.success(), "kill --all: {}", common::stderr(&o));
    assert_eq!(wait_status(member_init as i32), 137);
    assert_eq!(sandbox.state("pid-sandbox")["status"], "created");
    assert!(member.runc(&["delete", "pid-member"]).status.success());

    // uts, ipc and pid absent from the list: the host's (the runtime's), as runc.
    let host = Fixture::new(|v| {
        set_args(
            v,
            "for t in uts ipc pid mnt; do readlink /proc/self/ns/$t; done; hostname",
        );
        v["hostname"] = Value::Null;
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| !["uts", "ipc", "pid"].contains(&n["type"].as_str().unwrap()));
    });
    let o = host.runc(&["run", "--bundle", host.bundle.to_str().unwrap(), "on-host"]);
    assert!(o.status.success(), "run: {}", common::stderr(&o));
    let out = common::stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], ns_of("self", "uts"), "{out}");
    assert_eq!(lines[1], ns_of("self", "ipc"), "{out}");
    assert_eq!(lines[2], ns_of("self", "pid"), "{out}");
    assert_ne!(lines[3], ns_of("self", "mnt"), "{out}");
    assert_eq!(
        lines[4],
        nix::unistd::gethostname().unwrap().to_string_lossy()
    );
    // …where neither a hostname nor a domain name may be set.
    host.edit_config(|v| v["hostname"] = "mine".into());
    let o = host.runc(&["run", "--bundle", host.bundle.to_str().unwrap(), "on-host"]);
    assert!(
        common::stderr(&o).contains("hostname cannot be set"),
        "{}",
        common::stderr(&o)
    );
    host.assert_root_empty();

    let o = sandbox.runc(&["delete", "--force", "pid-sandbox"]);
    assert!(o.status.success(), "delete: {}", common::stderr(&o));
    assert_eq!(wait_status(pid as i32), 137);
    common::assert_no_leftovers("pid namespaces");
}

/// Reads the terminal's master until its last slave closes (EIO).
fn read_terminal(master: fs::File) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut master = master;
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("reading the terminal: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `command` with `file` as its descriptor 3.
fn with_fd3(mut command: Command, file: &fs::File) -> Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = file.as_raw_fd();
    let dup = move || {
        // dup2 onto the child's own descriptor 3 (which then has no close-on-exec flag), from a
        // descriptor the test holds open; when that is 3 itself (a test process with few open
        // files: the lab), dup2 does nothing and the flag is cleared instead.
        let r = if fd == 3 {
            // SAFETY: F_SETFD only changes the flags of a descriptor the child holds.
            unsafe { libc::fcntl(3, libc::F_SETFD, 0) }
        } else {
            // SAFETY: dup2 between descriptors the child holds and owns.
            unsafe { libc::dup2(fd, 3) }
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and makes one system call.
    unsafe { command.pre_exec(dup) };
    command
}

#[test]
fn exec_gets_a_terminal_and_descriptors_are_passed_on() {
    use std::os::fd::AsFd;
    let _g = as_a_shim();
    let f = Fixture::new(|v| set_args(v, "cat <&3; sleep 30"));
    let message = f.bundle.join("message");
    fs::write(&message, "through fd 3\n").unwrap();
    // create --preserve-fds 1: the workload reads the caller's descriptor 3.
    let stdout = fs::File::create(f.bundle.join("stdout")).unwrap();
    let status = with_fd3(
        f.command(&[
            "create",
            "--bundle",
            f.bundle.to_str().unwrap(),
            "--preserve-fds",
            "1",
            "tty-exec",
        ]),
        &fs::File::open(&message).unwrap(),
    )
    .stdout(stdout)
    .stderr(Stdio::null())
    .status()
    .unwrap();
    assert!(status.success(), "create --preserve-fds");
    let init = f.state("tty-exec")["pid"].as_i64().unwrap() as i32;
    assert!(f.runc(&["start", "tty-exec"]).status.success());
    wait_for("the workload read fd 3", || f.output() == "through fd 3\n");

    // exec -t: a terminal of its own, its master sent to the console socket.
    let socket = f.bundle.join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let receiver = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        isol_container::security::exe::receive_fd(conn.as_fd()).unwrap()
    });
    let o = f.runc(&[
        "exec",
        "-t",
        "--console-socket",
        socket.to_str().unwrap(),
        "tty-exec",
        "sh",
        "-c",
        "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "exec -t: {}", common::stderr(&o));
    let out = read_terminal(fs::File::from(receiver.join().unwrap()));
    assert!(out.contains("is-a-tty"), "{out:?}");

    // --process with a terminal of a size, as containerd sends `ctr task exec -t`.
    let listener = std::os::unix::net::UnixListener::bind(f.bundle.join("console2.sock")).unwrap();
    let receiver = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        isol_container::security::exe::receive_fd(conn.as_fd()).unwrap()
    });
    let spec: Value =
        serde_json::from_slice(&fs::read(f.bundle.join("config.json")).unwrap()).unwrap();
    let mut p = spec["process"].clone();
    p["args"] = serde_json::json!(["stty", "size"]);
    p["terminal"] = true.into();
    p["consoleSize"] = serde_json::json!({"height": 25, "width": 90});
    let process = f.bundle.join("process.json");
    fs::write(&process, p.to_string()).unwrap();
    let sock2 = f.bundle.join("console2.sock");
    let o = f.runc(&[
        "exec",
        "--process",
        process.to_str().unwrap(),
        "--console-socket",
        sock2.to_str().unwrap(),
        "tty-exec",
    ]);
    assert!(o.status.success(), "exec --process: {}", common::stderr(&o));
    let out = read_terminal(fs::File::from(receiver.join().unwrap()));
    assert!(out.contains("25 90"), "{out:?}");

    // A terminal without a console socket is refused, as runc does.
    let o = f.runc(&["exec", "-t", "tty-exec", "true"]);
    assert!(
        common::stderr(&o).contains("needs --console-socket"),
        "{}",
        common::stderr(&o)
    );

    // exec --preserve-fds 1: the process gets descriptor 3, and no other of the caller's.
    let o = with_fd3(
        f.command(&[
            "exec",
            "--preserve-fds",
            "1",
            "tty-exec",
            "sh",
            "-c",
            "cat <&3; ls /proc/self/fd | wc -l",
        ]),
        &fs::File::open(&message).unwrap(),
    )
    .output()
    .unwrap();
    assert!(
        o.status.success(),
        "exec --preserve-fds: {}",
        common::stderr(&o)
    );
    // 0, 1, 2, 3 and the one ls opens to list them.
    assert_eq!(common::stdout(&o), "through fd 3\n5\n");
    let o = f.runc(&["exec", "tty-exec", "sh", "-c", "ls /proc/self/fd | wc -l"]);
    assert_eq!(common::stdout(&o), "4\n", "{}", common::stderr(&o));
    // Descriptors it was told of but not given: refused before isol-runc opens one of its own
    // (which would take the missing number and reach the process).
    let o = with_fd3(
        f.command(&["exec", "--preserve-fds", "2", "tty-exec", "true"]),
        &fs::File::open(&message).unwrap(),
    )
    .output()
    .unwrap();
    assert!(
        common::stderr(&o).contains("--preserve-fds 2: descriptor 4 is not open"),
        "{}",
        common::stderr(&o)
    );

    f.force_delete("tty-exec", init);
    f.assert_clean("exec -t");
}

/// `linux.uidMappings`/`gidMappings` with a new user namespace: the container's root is the
/// mapped host uid, and, as runc, isol changes no owner: a rootfs that does not belong to the
/// mapped root is refused, saying so, and one that does is the container's root's.
#[test]
fn a_user_namespace_maps_the_containers_root_to_the_configs_range() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let _g = common::root_test();
    let f = Fixture::new(|v| {
        set_args(
            v,
            "id -u; cat /proc/self/uid_map /proc/self/gid_map; touch /made && stat -c %u /made",
        );
        v["root"]["readonly"] = false.into();
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
        let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        v["linux"]["uidMappings"] = map.clone();
        v["linux"]["gidMappings"] = map;
    });
    let bundle = f.bundle.to_str().unwrap();
    // A rootfs the host's root owns is used as it is, as runc does: the container's root
    // (host uid 100000) reads it but cannot write to it.
    fs::set_permissions(f._tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let o = f.runc(&["run", "--bundle", bundle, "userns"]);
    let err = common::stderr(&o);
    if !o.status.success() && err.contains("a process in a chroot") {
        // Inside `isol lab` the host is a chroot, where the kernel refuses new user namespaces.
        eprintln!("skipping the mapped runs here: {}", err.trim());
        f.assert_clean("user namespace");
        return;
    }
    assert_eq!(o.status.code(), Some(1), "run: {err}");
    let out = common::stdout(&o);
    assert!(out.starts_with("0\n"), "{out}");
    assert!(!f.bundle.join("rootfs/made").exists());
    f.assert_root_empty();

    // The mapped root's rootfs.
    let chown = Command::new("chown")
        .args(["-R", "-h", "100000:100000"])
        .arg(f.bundle.join("rootfs"))
        .status()
        .unwrap();
    assert!(chown.success());
    let o = f.runc(&["run", "--bundle", bundle, "userns"]);
    let err = common::stderr(&o);
    if !o.status.success() && err.contains("a process in a chroot") {
        // Inside `isol lab` the host is a chroot, where the kernel refuses new user namespaces.
        eprintln!("skipping the mapped run here: {}", err.trim());
        f.assert_clean("user namespace");
        return;
    }
    assert!(o.status.success(), "run: {err}");
    let out: Vec<String> = common::stdout(&o)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        out,
        ["0", "0 100000 65536", "0 100000 65536", "0"],
        "{out:?}"
    );
    let made = fs::metadata(f.bundle.join("rootfs/made")).unwrap();
    assert_eq!(made.uid(), 100000);
    f.assert_clean("user namespace");
}

/// A user namespace joined by path (a pod's sandbox's, in Kubernetes with user namespaces):
/// the container's root is that namespace's, with its maps; mappings given with a path are
/// refused, as runc refuses them.
#[test]
fn a_user_namespace_is_joined_by_path() {
    let _g = common::root_test();
    // A namespace of its own, held by a sleep: `unshare` maps root to root in it.
    let mut holder = Command::new("unshare")
        .args(["--user", "--map-root-user", "sleep", "120"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs");
    let proc_dir = PathBuf::from(format!("/proc/{}", holder.id()));
    // unshare writes the maps, then execs sleep.
    let mut ended = false;
    wait_for("the namespace's maps", || {
        ended = matches!(holder.try_wait(), Ok(Some(_)));
        ended || fs::read_to_string(proc_dir.join("comm")).is_ok_and(|c| c.trim() == "sleep")
    });
    if ended {
        let mut err = String::new();
        use std::io::Read;
        holder
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        // Inside `isol lab` the host is a chroot, where the kernel refuses new user namespaces
        // (EPERM, which root meets nowhere else).
        assert!(err.contains("Operation not permitted"), "unshare: {err}");
        eprintln!("skipping here: {}", err.trim());
        return;
    }
    let ns_path = proc_dir.join("ns/user");
    let maps = [
        fs::read_to_string(proc_dir.join("uid_map")).unwrap(),
        fs::read_to_string(proc_dir.join("gid_map")).unwrap(),
    ];
    let ns_link = fs::read_link(&ns_path).unwrap();
    let f = Fixture::new(|v| {
        set_args(
            v,
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; readlink /proc/self/ns/user; hostname",
        );
        v["hostname"] = "joined".into();
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user", "path": ns_path}));
    });
    let bundle = f.bundle.to_str().unwrap();
    let o = f.runc(&["run", "--bundle", bundle, "joinuser"]);
    // A process exec'd into such a container is in the joined namespace too.
    become_subreaper();
    f.edit_config(|v| set_args(v, "sleep 30"));
    let (status, err) = f.create("joinexec", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("joinexec")["pid"].as_i64().unwrap() as i32;
    assert!(f.runc(&["start", "joinexec"]).status.success());
    let exec = f.runc(&[
        "exec",
        "joinexec",
        "sh",
        "-c",
        "cat /proc/self/uid_map; readlink /proc/self/ns/user",
    ]);
    f.force_delete("joinexec", init);
    // With mappings too: refused before anything is made.
    f.edit_config(|v| {
        let map = serde_json::json!([{"containerID": 0, "hostID": 0, "size": 1}]);
        v["linux"]["uidMappings"] = map.clone();
        v["linux"]["gidMappings"] = map;
    });
    let refused = f.runc(&["run", "--bundle", bundle, "joinuser"]);
    let _ = holder.kill();
    let _ = holder.wait();
    let err = common::stderr(&o);
    assert!(o.status.success(), "run: {err}");
    let norm = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let mut want = norm(&maps[0]);
    want.extend(norm(&maps[1]));
    want.push("0".into());
    want.push(ns_link.to_string_lossy().into_owned());
    want.push("joined".into());
    assert_eq!(norm(&common::stdout(&o)), want);
    assert!(exec.status.success(), "exec: {}", common::stderr(&exec));
    let mut want = norm(&maps[0]);
    want.push(ns_link.to_string_lossy().into_owned());
    assert_eq!(norm(&common::stdout(&exec)), want);
    f.assert_root_empty();

    assert!(!refused.status.success());
    let err = common::stderr(&refused);
    assert!(err.contains("joined by path"), "{err}");
    f.assert_clean("joined user namespace");
}

/// The CPUs of the cgroup `path`'s parent that a test may pin to (`cpuset.cpus` of the
/// hierarchy's root; v2 `cpuset.cpus.effective`).
fn host_cpus() -> String {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let file = if v2 {
        "/sys/fs/cgroup/cpuset.cpus.effective"
    } else {
        "/sys/fs/cgroup/cpuset/cpuset.cpus"
    };
    fs::read_to_string(file).unwrap().trim().to_string()
}

/// docker's `--cpuset-cpus`, CRI's `cpuset_cpus`: `linux.resources.cpu.cpus` and `mems` pin the
/// container's cgroup (v1: its cpuset, filled from its parents before the init joins it), the
/// workload's allowed CPUs say so, and `update` moves it; CPUs beyond the host's are refused by
/// name and leave nothing.
#[test]
fn cpuset_pins_the_container_and_update_moves_it() {
    let _g = as_a_shim();
    let cgroup = "/isol-oci-test/pinned";
    let f = Fixture::new(|v| {
        set_args(
            v,
            "grep -E '^(Cpus|Mems)_allowed_list' /proc/self/status; read line; \
             grep ^Cpus_allowed_list /proc/self/status",
        );
        v["linux"]["cgroupsPath"] = cgroup.into();
        v["linux"]["resources"]["cpu"] = serde_json::json!({"cpus": "0", "mems": "0"});
    });
    // The workload reads a line before its second look: its stdin is a FIFO we hold.
    let fifo = f.bundle.join("stdin");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::OpenOptions::new().read(true).write(true).open(fifo))
    };
    let stdin = fs::File::open(&fifo).unwrap();
    let writer = reader.join().unwrap().unwrap();
    let stdout = fs::File::create(f.bundle.join("stdout")).unwrap();
    let status = f
        .command(&["create", "--bundle", f.bundle.to_str().unwrap(), "pinned"])
        .stdin(stdin)
        .stdout(stdout)
        .status()
        .unwrap();
    assert!(status.success(), "create failed");
    let init = f.state("pinned")["pid"].as_i64().unwrap() as i32;
    let read = |name: &str| {
        fs::read_to_string(cgroup_file(cgroup, name))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("cpuset.cpus"), "0");
    assert_eq!(read("cpuset.mems"), "0");
    assert!(f.runc(&["start", "pinned"]).status.success());
    wait_for("the first look", || f.output().lines().count() >= 2);
    assert_eq!(
        f.output(),
        "Cpus_allowed_list:\t0\nMems_allowed_list:\t0\n",
        "{}",
        f.output()
    );

    // update --cpuset-cpus, runc's flag: to every CPU the host has (its canonical form).
    let all = host_cpus();
    let o = f.runc(&["update", "--cpuset-cpus", &all, "pinned"]);
    assert!(o.status.success(), "update: {}", common::stderr(&o));
    assert_eq!(read("cpuset.cpus"), all);
    use std::io::Write;
    (&writer).write_all(b"go\n").unwrap();
    assert_eq!(wait_status(init), 0);
    assert!(
        f.output()
            .ends_with(&format!("Cpus_allowed_list:\t{all}\n")),
        "{}",
        f.output()
    );
    let o = f.runc(&["delete", "pinned"]);
    assert!(o.status.success(), "delete: {}", common::stderr(&o));

    // A CPU the host lacks, and a list that is none, fail create by name and leave nothing.
    for (cpus, msg) in [
        (
            "1023",
            "Invalid cpuset CPUs 1023: the container may use only",
        ),
        ("2-1", "linux.resources.cpu.cpus: Invalid cpu.cpus limit"),
    ] {
        f.edit_config(|v| v["linux"]["resources"]["cpu"] = serde_json::json!({"cpus": cpus}));
        let (status, err) = f.create("pinned", &[]);
        assert!(!status.success(), "create with cpus {cpus} succeeded");
        assert!(err.contains(msg), "{cpus}: {err}");
        f.assert_root_empty();
    }
    f.assert_clean("cpuset");
}

/// docker's `--device`: `linux.devices` are made in the container's /dev with their type,
/// numbers, mode and owner, as runc makes them; whether they open is the device cgroup's
/// rules' (the config's `linux.resources.devices`).
#[test]
fn linux_devices_are_made_with_their_mode_and_owner() {
    let _g = common::root_test();
    let f = Fixture::new(|v| {
        set_args(
            v,
            "for d in /dev/mynull /dev/blk/b0 /dev/fifo0 /dev/mymem; do \
               stat -c '%n %F %t:%T %a %u:%g' $d; done; \
             echo hi > /dev/mynull && echo wrote; \
             head -c 1 /dev/mymem >/dev/null 2>&1 || echo denied",
        );
        v["linux"]["devices"] = serde_json::json!([
            {"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
            {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o606,
             "uid": 1000, "gid": 5},
            {"path": "/dev/blk/b0", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600},
            {"path": "/dev/fifo0", "type": "p", "major": 0, "minor": 0},
            {"path": "/dev/mymem", "type": "c", "major": 1, "minor": 1}
        ]);
        // Only runc's defaults are allowed (null's 1:3 among them, /dev/mem's 1:1 not). The
        // workload is root without CAP_DAC_OVERRIDE: "others" may write the renamed null.
        v["linux"]["resources"]["devices"] = serde_json::json!([{"allow": false, "access": "rwm"}]);
    });
    let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "devices"]);
    assert!(o.status.success(), "run: {}", common::stderr(&o));
    assert_eq!(
        common::stdout(&o),
        "/dev/mynull character special file 1:3 606 1000:5\n\
         /dev/blk/b0 block special file 7:0 600 0:0\n\
         /dev/fifo0 fifo 0:0 666 0:0\n\
         /dev/mymem character special file 1:1 666 0:0\n\
         wrote\ndenied\n"
    );
    f.assert_root_empty();

    // A node that is already there (isol's /dev/console of a terminal… here /dev/pts's) fails
    // create by name and leaves nothing.
    f.edit_config(|v| {
        v["linux"]["devices"] =
            serde_json::json!([{"path": "/dev/pts", "type": "c", "major": 1, "minor": 3}])
    });
    let (status, err) = f.create("devices", &[]);
    assert!(!status.success());
    assert!(err.contains("Cannot create the device /dev/pts"), "{err}");
    f.assert_clean("devices");
}

/// Says whether the container's `/` is in a peer group (mountinfo's `shared:N`).
const ROOT_PROPAGATION: &str = "awk '$5 == \"/\" { print ($0 ~ / shared:/) ? \"/ shared\" : \"/ not shared\" }' /proc/self/mountinfo";

/// A directory of the test's own, bound onto itself and made shared: a mount point whose new
/// mounts propagate, as a kubelet's `/var/lib/kubelet` is. Unmounted (with what is below) on
/// drop.
struct SharedDir {
    path: PathBuf,
}

impl SharedDir {
    fn new(path: PathBuf) -> SharedDir {
        use nix::mount::{MsFlags, mount};
        fs::create_dir_all(&path).unwrap();
        mount(
            Some(&path),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        let d = SharedDir { path };
        mount(
            None::<&str>,
            &d.path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();
        d
    }
}

impl Drop for SharedDir {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// kubelet's mount propagation: a bind with `rslave` sees what the host mounts below its source
/// after the container started (HostToContainer), one with `rprivate` does not; the config's
/// `rootfsPropagation` is the container's `/`'s (mountinfo's `shared:`), and the rootfs's own
/// mounts stay the container's.
#[test]
fn mount_propagation_follows_the_config() {
    let _g = as_a_shim();
    let tmp = tempfile::tempdir().unwrap();
    let shared = SharedDir::new(tmp.path().join("isol-shared"));
    let src = shared.path.to_str().unwrap().to_string();
    let f = Fixture::new(|v| {
        set_args(v, "sleep 30");
        v["mounts"].as_array_mut().unwrap().extend([
            serde_json::json!({"destination": "/mnt/slave", "type": "bind", "source": src,
                               "options": ["rbind", "rslave"]}),
            serde_json::json!({"destination": "/mnt/private", "type": "bind", "source": src,
                               "options": ["rbind", "rprivate"]}),
        ]);
    });
    let (status, err) = f.create("propagated", &[]);
    assert!(status.success(), "create: {err}");
    let init = f.state("propagated")["pid"].as_i64().unwrap() as i32;
    assert!(f.runc(&["start", "propagated"]).status.success());

    // The host mounts a tmpfs below the shared directory, after the container started.
    let sub = shared.path.join("sub");
    fs::create_dir(&sub).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &sub,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=64k"),
    )
    .unwrap();
    fs::write(sub.join("file"), "from the host\n").unwrap();
    let o = f.runc(&[
        "exec",
        "propagated",
        "sh",
        "-c",
        &format!(
            "cat /mnt/slave/sub/file; cat /mnt/private/sub/file 2>/dev/null || echo not in private; {ROOT_PROPAGATION}"
        ),
    ]);
    let _ = nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH);
    assert!(o.status.success(), "exec: {}", common::stderr(&o));
    assert_eq!(
        common::stdout(&o),
        "from the host\nnot in private\n/ not shared\n",
        "{}",
        common::stderr(&o)
    );
    f.force_delete("propagated", init);

    // rootfsPropagation: the container's / is shared (a peer group of the container's own), and
    // a mount the workload makes below it stays in the container.
    f.edit_config(|v| {
        v["linux"]["rootfsPropagation"] = "rshared".into();
        v["mounts"].as_array_mut().unwrap().retain(|m| {
            !m["destination"]
                .as_str()
                .unwrap_or_default()
                .starts_with("/mnt/")
        });
        set_args(v, ROOT_PROPAGATION);
    });
    let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "propagated"]);
    assert!(o.status.success(), "run: {}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "/ shared\n");
    // The rootfs's own mounts (its /proc, /dev…) never reached the host.
    let bundle = f.bundle.to_str().unwrap().to_string();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&bundle),
        "the container's mounts reached the host: {mounts}"
    );
    f.assert_root_empty();
    drop(shared);
    common::assert_no_leftovers("propagation");
}

fn ns_link(pid: &str, t: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{t}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// `unshare --mount --propagation private`: the command its arguments make runs in a mount
/// namespace of its own, whose mounts reach no other namespace.
fn in_a_private_mount_namespace() -> Command {
    let mut c = Command::new("unshare");
    c.args(["--mount", "--propagation", "private"]);
    c
}

/// A mount namespace joined by path (runtime-tools' `linux_ns_path`): the container's root is
/// built and pivoted to inside it, as runc does. The namespace is a helper's (`unshare
/// --mount`), which the test ends; nothing of the container is left in the test's.
#[test]
fn a_mount_namespace_is_joined_by_path_and_the_root_built_in_it() {
    let _g = as_a_shim();
    let mut helper = in_a_private_mount_namespace()
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    let hpid = helper.id().to_string();
    let ours = ns_link("self", "mnt");
    wait_for("the helper's mount namespace", || {
        ns_link(&hpid, "mnt") != ours
    });
    let theirs = ns_link(&hpid, "mnt");

    let f = Fixture::new(|v| {
        set_args(
            v,
            "readlink /proc/self/ns/mnt; test -x /bin/busybox && grep -c ' /proc ' /proc/self/mountinfo",
        );
        let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
        let mnt = ns.iter_mut().find(|n| n["type"] == "mount").unwrap();
        mnt["path"] = format!("/proc/{hpid}/ns/mnt").into();
    });
    // In the lab, whose root is a chroot, setns gives the joiner the namespace's own root,
    // where the bundle is not (runc fails alike): then the join must fail on the rootfs, in
    // one line, leaving nothing.
    let visible = Command::new("nsenter")
        .arg(format!("--mount=/proc/{hpid}/ns/mnt"))
        .args(["test", "-d"])
        .arg(&f.bundle)
        .status()
        .unwrap()
        .success();
    let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "joiner"]);
    if visible {
        assert!(o.status.success(), "run: {}", common::stderr(&o));
        let out = common::stdout(&o);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, [theirs.as_str(), "1"], "{out}");
    } else {
        let err = common::stderr(&o);
        assert!(!o.status.success(), "run in a chroot: {err}");
        assert!(err.contains("Cannot bind the rootfs"), "{err}");
    }
    f.assert_root_empty();
    // Built in the helper's namespace, never in the test's.
    let bundle = f.bundle.to_str().unwrap().to_string();
    assert!(
        !fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&bundle),
        "the container's mounts reached the test's namespace"
    );

    helper.kill().unwrap();
    helper.wait().unwrap();
    drop(f);
    common::assert_no_leftovers("a joined mount namespace");
}

/// The mount points at or below `dir` in this process's mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = fs::canonicalize(dir).unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(&dir))
        .map(str::to_string)
        .collect()
}

/// A config without a mount namespace (runtime-tools' `linux_ns_itype`): as runc, the
/// container's mounts are made in the runtime's mount namespace and it chroots; `delete`, and
/// a `create` that fails after its mounts, unmount them. Run in a private mount namespace of
/// the test's own ([`no_mount_namespace_in`]), so that the host's is never touched.
#[test]
fn without_a_mount_namespace_the_runtimes_is_used_and_delete_unmounts() {
    let _g = common::root_test();
    let o = in_a_private_mount_namespace()
        .arg(std::env::current_exe().unwrap())
        .args([
            "no_mount_namespace_in",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ISOL_TEST_PRIVATE_MOUNT_NS", ns_link("self", "mnt"))
        .output()
        .unwrap();
    let all = format!("{}{}", common::stdout(&o), common::stderr(&o));
    assert!(o.status.success() && all.contains("1 passed"), "{all}");
    common::assert_no_leftovers("no mount namespace");
}

/// Not a test of its own: [`without_a_mount_namespace_the_runtimes_is_used_and_delete_unmounts`]
/// runs it in a mount namespace of its own (it refuses the host's).
#[test]
#[ignore = "run by without_a_mount_namespace_the_runtimes_is_used_and_delete_unmounts"]
fn no_mount_namespace_in() {
    // The caller's mount namespace, which this one must not be.
    let outer = std::env::var("ISOL_TEST_PRIVATE_MOUNT_NS").unwrap_or_default();
    assert!(
        !outer.is_empty() && ns_link("self", "mnt") != outer,
        "run only in a private mount namespace, as without_a_mount_namespace_the_runtimes_is_used_and_delete_unmounts does"
    );
    let _g = as_a_shim();
    let f = Fixture::new(|v| {
        set_args(
            v,
            "readlink /proc/self/ns/mnt; readlink /proc/self/ns/cgroup; test -x /bin/busybox && echo root",
        );
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "mount" && n["type"] != "cgroup");
    });
    let rootfs = f.bundle.join("rootfs");
    let (status, err) = f.create("shared-mnt", &[]);
    assert!(status.success(), "create: {err}");
    // As runc: the mounts are the runtime's namespace's, and the init is chrooted.
    let mounted = mounts_under(&rootfs);
    let proc_dir = fs::canonicalize(&rootfs).unwrap().join("proc");
    assert!(
        mounted.iter().any(|m| Path::new(m) == proc_dir),
        "{mounted:?}"
    );
    let pid = f.state("shared-mnt")["pid"].as_i64().unwrap().to_string();
    assert_eq!(ns_link(&pid, "mnt"), ns_link("self", "mnt"));
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        fs::canonicalize(&rootfs).unwrap()
    );
    assert!(f.runc(&["start", "shared-mnt"]).status.success());
    wait_for("the container's output", || f.output().lines().count() == 3);
    let out = f.output();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            ns_link("self", "mnt").as_str(),
            ns_link("self", "cgroup").as_str(),
            "root"
        ],
        "{out}"
    );
    assert_eq!(wait_status(pid.parse().unwrap()), 0);
    let o = f.runc(&["delete", "shared-mnt"]);
    assert!(o.status.success(), "delete: {}", common::stderr(&o));
    assert_eq!(mounts_under(&rootfs), Vec::<String>::new());
    f.assert_root_empty();

    // A create that fails once its mounts are made (no such program) leaves none.
    f.edit_config(|v| v["process"]["args"] = serde_json::json!(["/no/such/program"]));
    let (status, err) = f.create("shared-mnt", &[]);
    assert!(!status.success());
    assert!(err.contains("/no/such/program"), "{err}");
    assert_eq!(mounts_under(&rootfs), Vec::<String>::new());
    f.assert_root_empty();
    // And a running one that `delete --force` ends.
    f.edit_config(|v| set_args(v, "sleep 30"));
    let (status, err) = f.create("shared-mnt", &[]);
    assert!(status.success(), "create: {err}");
    let pid = f.state("shared-mnt")["pid"].as_i64().unwrap();
    f.force_delete("shared-mnt", pid as i32);
    assert_eq!(mounts_under(&rootfs), Vec::<String>::new());
    f.assert_root_empty();
    // And a create killed at any point, once `delete --force` has run (as a shim does).
    kill_creates(&f, "killed", &[0, 2, 8, 16, 32, 64, 200], |delay_ms| {
        assert_eq!(
            mounts_under(&rootfs),
            Vec::<String>::new(),
            "create killed after {delay_ms} ms"
        );
        f.assert_root_empty();
    });
}
