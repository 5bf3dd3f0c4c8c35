//! `isol-runc`'s kvm backend (docs/oci.md, "The kvm backend"): a bundle's workload in an isol
//! microVM behind runc's command line. This test plays containerd's shim (a subreaper that
//! creates, starts, waits for and deletes the container) on a busybox bundle with the
//! `io.isol.backend=kvm` annotation, then runs a real client: containerd 1.6's `ctr run` with
//! `isol-runc-vm` as its runc binary, and with the annotation, against the container backend
//! on the same image and command.
//!
//! The boot tests run in the lab (`./test.sh`), like tests/kvm.rs; they skip elsewhere unless
//! `ISOL_REQUIRE_KVM` is set. The refusal tests run anywhere.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::Value;

use common::shim::{become_subreaper, set_args, wait_status};

fn runc_bin() -> &'static str {
    env!("CARGO_BIN_EXE_isol-runc")
}

/// A state root and a busybox bundle with the kvm annotation, in a temp dir of their own.
struct Fixture {
    tmp: tempfile::TempDir,
    root: PathBuf,
    bundle: PathBuf,
}

impl Fixture {
    fn new(edit: impl FnOnce(&mut Value)) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state");
        let bundle = tmp.path().join("bundle");
        fs::create_dir(&bundle).unwrap();
        common::busybox_rootfs(&bundle.join("rootfs"));
        let f = Fixture { tmp, root, bundle };
        let o = f.runc(&["spec", "--bundle", f.bundle.to_str().unwrap()]);
        assert!(o.status.success(), "spec: {}", common::stderr(&o));
        let path = f.bundle.join("config.json");
        let mut v: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        v["annotations"] = serde_json::json!({"io.isol.backend": "kvm"});
        edit(&mut v);
        fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        f
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

    /// `create --bundle B --pid-file P ID` with stdout and stderr to files (the VM's process
    /// keeps them: they are the workload's); the exit status, create's stderr, and the pid.
    fn create(&self, id: &str) -> (bool, String, i32) {
        self.create_with(id, &[])
    }

    /// [`Fixture::create`] with more options.
    fn create_with(&self, id: &str, options: &[&str]) -> (bool, String, i32) {
        let stdout = fs::File::create(self.bundle.join("stdout")).unwrap();
        let stderr_path = self.bundle.join("stderr");
        let stderr = fs::File::create(&stderr_path).unwrap();
        let pid_file = self.tmp.path().join("pid");
        let status = self
            .command(&["create", "--bundle", self.bundle.to_str().unwrap()])
            .args(options)
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdout(stdout)
            .stderr(stderr)
            .status()
            .expect("isol-runc runs");
        let pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0);
        (
            status.success(),
            fs::read_to_string(&stderr_path).unwrap(),
            pid,
        )
    }

    fn output(&self) -> String {
        fs::read_to_string(self.bundle.join("stdout")).unwrap()
    }

    fn errors(&self) -> String {
        fs::read_to_string(self.bundle.join("stderr")).unwrap_or_default()
    }

    fn state(&self, id: &str) -> Value {
        let o = self.runc(&["state", id]);
        assert!(o.status.success(), "state {id}: {}", common::stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// A console socket (`NAME.sock` in the temp dir) and the thread that receives the one
    /// terminal master sent there, as containerd's shim does.
    fn console_socket(
        &self,
        name: &str,
    ) -> (PathBuf, std::thread::JoinHandle<std::os::fd::OwnedFd>) {
        let socket = self.tmp.path().join(format!("{name}.sock"));
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let receiver = std::thread::spawn(move || {
            use std::os::fd::AsFd;
            let (conn, _) = listener.accept().unwrap();
            isol_container::security::exe::receive_fd(conn.as_fd()).unwrap()
        });
        (socket, receiver)
    }

    /// Waits until the workload printed `line`.
    fn wait_output(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.output().lines().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "no {line:?} from the VM; stdout: {} stderr: {}",
                self.output(),
                self.errors()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for e in fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let _ = self.runc(&["delete", "--force", &id]);
        }
    }
}

/// The virtiofsd processes serving below `dir`.
fn virtiofsds_below(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("virtiofsd") && c.contains(&d))
        .collect()
}

/// Nothing of the container is left: no state, no virtiofsd, no mount, cgroup or link of
/// isol's.
fn assert_nothing_left(f: &Fixture, context: &str) {
    let left: Vec<_> = fs::read_dir(&f.root)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{context}: state left behind: {left:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !virtiofsds_below(&f.root).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(virtiofsds_below(&f.root), Vec::<String>::new(), "{context}");
    common::assert_no_leftovers(context);
}

#[test]
fn a_bundle_runs_in_a_vm_through_create_start_kill_and_delete() {
    if !common::kvm_ready() {
        return;
    }
    let _g = common::root_test();
    become_subreaper();
    let host_kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let vol = tempfile::tempdir().unwrap();
    fs::write(vol.path().join("in.txt"), "from the host\n").unwrap();
    let hosts = vol.path().join("hosts");
    fs::write(&hosts, "10.1.2.3 pod\n").unwrap();
    let script = "echo out; echo err >&2; uname -r; cat /v/in.txt; cat /etc/hosts; \
                  touch /x 2>/dev/null || echo root-ro; touch /v/y 2>/dev/null || echo vol-ro; \
                  echo rw > /scratch/f && cat /scratch/f; \
                  trap 'echo got TERM; exit 7' TERM; echo ready; \
                  while :; do sleep 0.1; done";
    let f = Fixture::new(|v| {
        set_args(v, script);
        v["root"]["readonly"] = serde_json::json!(true);
        let mounts = v["mounts"].as_array_mut().unwrap();
        mounts.push(serde_json::json!({"destination": "/v", "type": "bind",
            "source": vol.path(), "options": ["rbind", "ro"]}));
        mounts.push(
            serde_json::json!({"destination": "/etc/hosts", "type": "bind",
            "source": hosts, "options": ["rbind", "ro"]}),
        );
        mounts.push(
            serde_json::json!({"destination": "/scratch", "type": "tmpfs",
            "source": "tmpfs", "options": ["nosuid", "size=1m"]}),
        );
    });
    let (ok, err, pid) = f.create("vm1");
    assert!(ok, "create: {err}");
    assert!(pid > 0, "the pid file holds the VM's process");
    let state = f.state("vm1");
    assert_eq!(state["status"], "created");
    assert_eq!(state["pid"], pid);

    let o = f.runc(&["start", "vm1"]);
    assert!(o.status.success(), "start: {}", common::stderr(&o));
    // The pid is the VMM's: isol-vmm, exec'd by the process create made (same pid).
    let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.to_string_lossy().ends_with("isol-vmm"),
        "the pid file's process is {}",
        exe.display()
    );
    f.wait_output("ready");
    let out = f.output();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "out");
    assert_ne!(
        lines[1],
        host_kernel.trim(),
        "the workload runs on the guest's kernel"
    );
    assert_eq!(
        &lines[2..],
        [
            "from the host",
            "10.1.2.3 pod",
            "root-ro",
            "vol-ro",
            "rw",
            "ready"
        ]
    );
    assert!(f.errors().contains("err"), "stderr: {}", f.errors());
    assert_eq!(f.state("vm1")["status"], "running");
    // ps: the VMM's host pids, the pid file's first, then the jailed VMM's.
    let o = f.runc(&["ps", "--format", "json", "vm1"]);
    assert!(o.status.success(), "ps: {}", common::stderr(&o));
    let pids: Vec<i32> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pids.first(), Some(&pid), "ps: {pids:?}");
    assert!(pids.len() >= 2, "the jailed VMM is listed too: {pids:?}");

    // SIGTERM reaches the workload in the guest: its trap runs and sets the status.
    let o = f.runc(&["kill", "vm1", "TERM"]);
    assert!(o.status.success(), "kill: {}", common::stderr(&o));
    assert_eq!(wait_status(pid), 7, "stdout: {}", f.output());
    assert!(f.output().ends_with("got TERM\n"), "{}", f.output());
    assert_eq!(f.state("vm1")["status"], "stopped");
    let o = f.runc(&["delete", "vm1"]);
    assert!(o.status.success(), "delete: {}", common::stderr(&o));
    assert_nothing_left(&f, "after delete");
}

#[test]
fn exit_codes_sigkill_and_delete_force_of_a_running_vm() {
    if !common::kvm_ready() {
        return;
    }
    let _g = common::root_test();
    become_subreaper();
    // The workload's own status.
    let f = Fixture::new(|v| set_args(v, "echo bye; exit 3"));
    let (ok, err, pid) = f.create("vm2");
    assert!(ok, "create: {err}");
    assert!(f.runc(&["start", "vm2"]).status.success());
    assert_eq!(wait_status(pid), 3);
    assert_eq!(f.output(), "bye\n");
    assert!(f.runc(&["delete", "vm2"]).status.success());
    assert_nothing_left(&f, "after an exit");

    // SIGKILL ends the VMM: 137.
    let f = Fixture::new(|v| set_args(v, "echo ready; while :; do sleep 1; done"));
    let (ok, err, pid) = f.create("vm3");
    assert!(ok, "create: {err}");
    assert!(f.runc(&["start", "vm3"]).status.success());
    f.wait_output("ready");
    assert!(f.runc(&["kill", "vm3", "KILL"]).status.success());
    assert_eq!(wait_status(pid), 137);
    assert!(f.runc(&["delete", "vm3"]).status.success());
    assert_nothing_left(&f, "after SIGKILL");

    // A running VM is deleted only by force; a created one at once.
    let f = Fixture::new(|v| set_args(v, "echo ready; while :; do sleep 1; done"));
    let (ok, err, pid) = f.create("vm4");
    assert!(ok, "create: {err}");
    assert!(f.runc(&["start", "vm4"]).status.success());
    f.wait_output("ready");
    let o = f.runc(&["delete", "vm4"]);
    assert!(!o.status.success());
    assert!(
        common::stderr(&o).contains("delete it with --force"),
        "{}",
        common::stderr(&o)
    );
    assert!(f.runc(&["delete", "--force", "vm4"]).status.success());
    assert_eq!(wait_status(pid), 137);
    assert_nothing_left(&f, "after delete --force");
    let (ok, err, pid) = f.create("vm5");
    assert!(ok, "create: {err}");
    assert!(f.runc(&["delete", "vm5"]).status.success());
    assert_eq!(wait_status(pid), 137);
    assert_nothing_left(&f, "after deleting a created VM");
}

/// `exec` into a running VM: in the foreground (its output, stderr and exit status; `-e`,
/// `--cwd`, `-u`; `--process`), detached (the relay's pid in the pid file lives as long as
/// the process and exits with its status; a signal to it reaches the process), and with a
/// terminal handed to `--console-socket`.
#[test]
fn exec_into_a_running_vm_in_the_foreground_detached_and_on_a_terminal() {
    if !common::kvm_ready() {
        return;
    }
    let _g = common::root_test();
    become_subreaper();
    let f = Fixture::new(|v| set_args(v, "echo ready; while :; do sleep 0.1; done"));
    let (ok, err, pid) = f.create("vm6");
    assert!(ok, "create: {err}");
    assert!(f.runc(&["start", "vm6"]).status.success());
    f.wait_output("ready");

    let o = f.runc(&[
        "exec",
        "--cwd",
        "/tmp",
        "-e",
        "X=1",
        "-u",
        "1000:1000",
        "--additional-gids",
        "10",
        "-g",
        "20",
        "vm6",
        "sh",
        "-c",
        "echo $X; pwd; id -u; id -G; uname -r; echo e >&2; exit 5",
    ]);
    let out = common::stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(o.status.code(), Some(5), "exec: {}", common::stderr(&o));
    // Exactly the groups asked for, as runc: the gid and the additional ones.
    assert_eq!(&lines[..4], ["1", "/tmp", "1000", "1000 10 20"], "{out}");
    let host_kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(lines[4], host_kernel.trim(), "exec runs in the guest");
    assert_eq!(common::stderr(&o), "e\n");
    // Not found: 127, as docker's.
    let o = f.runc(&["exec", "vm6", "no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", common::stderr(&o));

    // --process, as containerd sends it.
    let process = f.tmp.path().join("process.json");
    fs::write(
        &process,
        serde_json::to_vec(&serde_json::json!({
            "args": ["sh", "-c", "echo from-process $Y $(id -G); exit 4"],
            "env": ["PATH=/bin:/usr/bin", "Y=2"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0, "additionalGids": [7]},
        }))
        .unwrap(),
    )
    .unwrap();
    let o = f.runc(&["exec", "--process", process.to_str().unwrap(), "vm6"]);
    assert_eq!(o.status.code(), Some(4), "{}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "from-process 2 0 7\n");

    // --detach: the relay outlives isol-runc (re-parented to us, the subreaper); SIGTERM
    // to it reaches the process, whose status is its.
    let pid_file = f.tmp.path().join("exec.pid");
    let log = f.tmp.path().join("exec.out");
    let err_log = f.tmp.path().join("exec.err");
    let o = f
        .command(&[
            "exec",
            "--detach",
            "--pid-file",
            pid_file.to_str().unwrap(),
            "vm6",
        ])
        .args([
            "sh",
            "-c",
            "trap 'echo got TERM; exit 9' TERM; echo started; while :; do sleep 0.1; done",
        ])
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(&err_log).unwrap())
        .status()
        .unwrap();
    // The relay keeps the stdio it was given (as runc's detached process): no pipe here,
    // whose end would come with the relay's.
    assert!(
        o.success(),
        "exec --detach: {}",
        fs::read_to_string(&err_log).unwrap()
    );
    let relay: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fs::read_to_string(&log).unwrap().contains("started") {
        assert!(
            Instant::now() < deadline,
            "the detached process never wrote"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        waitpid(
            Pid::from_raw(relay),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG)
        )
        .unwrap(),
        WaitStatus::StillAlive,
        "the relay lives as long as the process"
    );
    nix::sys::signal::kill(Pid::from_raw(relay), nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(wait_status(relay), 9);
    assert_eq!(fs::read_to_string(&log).unwrap(), "started\ngot TERM\n");

    // -t: a terminal of the guest's, relayed to the pty whose master went to the socket.
    let (socket, receiver) = f.console_socket("console");
    let o = f
        .command(&[
            "exec",
            "-t",
            "--detach",
            "--console-socket",
            socket.to_str().unwrap(),
        ])
        .arg("--pid-file")
        .arg(&pid_file)
        .args([
            "vm6",
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; exit 6",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "exec -t: {}", common::stderr(&o));
    let mut master = fs::File::from(receiver.join().unwrap());
    let relay: i32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(wait_status(relay), 6);
    let mut out = String::new();
    common::pty::read_to_end(&mut master, &mut out);
    assert!(out.contains("is-a-tty"), "{out:?}");

    assert!(f.runc(&["kill", "vm6", "KILL"]).status.success());
    assert_eq!(wait_status(pid), 137);
    let o = f.runc(&["exec", "vm6", "true"]);
    assert!(!o.status.success(), "exec into a stopped VM");
    assert!(f.runc(&["delete", "vm6"]).status.success());
    assert_nothing_left(&f, "after exec");
}

/// `process.terminal` on kvm: create's `--console-socket` gets a pty master whose slave is
/// the VM's process's stdio and controlling terminal; the workload runs on a terminal of the
/// guest's, sized by `process.consoleSize`, reads what is typed on the master, sees a resize
/// of the master (`stty size`), and its exit status is the pid's; create's own stdout and
/// stderr get nothing. A second one, without a size, ends through `kill TERM` and its trap
/// (status 0). Each leaves nothing.
#[test]
fn a_vm_s_workload_on_a_terminal_gets_its_size_input_resizes_and_exit_status() {
    if !common::kvm_ready() {
        return;
    }
    let _g = common::root_test();
    become_subreaper();
    let script = "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; echo size $(stty size); \
                  read l; echo got-$l; read l; i=0; \
                  until s=$(stty size); [ \"$s\" = '12 34' ] || [ $i = 200 ]; do \
                  i=$((i+1)); sleep 0.05; done; echo resized $s; exit 4";
    let f = Fixture::new(|v| {
        set_args(v, script);
        v["process"]["terminal"] = true.into();
        v["process"]["consoleSize"] = serde_json::json!({"height": 20, "width": 60});
    });
    let (socket, receiver) = f.console_socket("console");
    let (ok, err, pid) = f.create_with("vmt", &["--console-socket", socket.to_str().unwrap()]);
    assert!(ok, "create: {err}");
    let mut master = fs::File::from(receiver.join().unwrap());
    assert_eq!(f.state("vmt")["status"], "created");
    assert!(f.runc(&["start", "vmt"]).status.success());
    let mut seen = String::new();
    common::pty::read_until(&mut master, &mut seen, "size 20 60\r\n");
    assert!(seen.contains("is-a-tty"), "{seen:?}");
    {
        use std::io::Write;
        master.write_all(b"hello\n").unwrap();
        common::pty::read_until(&mut master, &mut seen, "got-hello");
        common::pty::resize(&master, 12, 34);
        master.write_all(b"go\n").unwrap();
    }
    common::pty::read_until(&mut master, &mut seen, "resized");
    assert_eq!(wait_status(pid), 4, "{seen:?}");
    common::pty::read_to_end(&mut master, &mut seen);
    assert!(seen.contains("resized 12 34\r\n"), "{seen:?}");
    assert_eq!((f.output(), f.errors()), (String::new(), String::new()));
    assert_eq!(f.state("vmt")["status"], "stopped");
    assert!(f.runc(&["delete", "vmt"]).status.success());
    assert_nothing_left(&f, "after a terminal");

    let f = Fixture::new(|v| {
        set_args(
            v,
            "trap 'echo trapped; exit 0' TERM; echo waiting; while :; do sleep 0.1; done",
        );
        v["process"]["terminal"] = true.into();
    });
    let (socket, receiver) = f.console_socket("console");
    let (ok, err, pid) = f.create_with("vmk", &["--console-socket", socket.to_str().unwrap()]);
    assert!(ok, "create: {err}");
    let mut master = fs::File::from(receiver.join().unwrap());
    assert!(f.runc(&["start", "vmk"]).status.success());
    let mut seen = String::new();
    common::pty::read_until(&mut master, &mut seen, "waiting");
    assert!(f.runc(&["kill", "vmk", "TERM"]).status.success());
    assert_eq!(wait_status(pid), 0, "{seen:?}");
    common::pty::read_to_end(&mut master, &mut seen);
    assert!(seen.contains("trapped"), "{seen:?}");
    assert!(f.runc(&["delete", "vmk"]).status.success());
    assert_nothing_left(&f, "after a terminal and kill");
}

/// A bundle that joins a CNI pod's network namespace by path (a CRI sandbox's, configured by
/// Debian's `bridge` and `host-local` plugins): the workload has the pod's address on eth0 and
/// reaches a server on the pod's gateway (the CNI bridge on the host); while it runs the pod
/// holds the VM's tap and the tc redirection. After a workload that exits, isol-vmm has undone
/// the redirection before `delete`; after a SIGKILL of the VMM, `delete` does. Either way the
/// namespace is left as CNI made it, and still there.
#[test]
fn a_vm_joins_a_cni_pod_s_network_namespace_by_path() {
    use common::cni::CniPod;
    if !common::kvm_ready() {
        return;
    }
    let _g = common::root_test();
    become_subreaper();
    let pod = CniPod::new("ocipodvm1", "ocipodbr1", "10.251.91.0/24");
    let gw = pod.gateway;
    let server = std::net::TcpListener::bind((gw, 0)).unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in server.incoming().flatten() {
            use std::io::Write;
            let _ = (&s).write_all(b"hello-from-the-gateway\n");
        }
    });
    let on_pod = |script: String| {
        let path = pod.ns.path();
        Fixture::new(move |v| {
            set_args(v, &script);
            for n in v["linux"]["namespaces"].as_array_mut().unwrap() {
                if n["type"] == "network" {
                    n["path"] = path.to_str().unwrap().into();
                }
            }
        })
    };
    let reach = format!(
        "ip -4 -o addr show eth0 | awk '{{print $4}}'; nc {gw} {port} </dev/null; echo ready"
    );
    let expected = format!("{}/24\nhello-from-the-gateway\nready\n", pod.address);

    // The workload exits: isol-vmm undoes the redirection after the VM.
    let f = on_pod(format!("{reach}; exit 0"));
    let (ok, err, pid) = f.create("podvm1");
    assert!(ok, "create: {err}");
    assert!(f.runc(&["start", "podvm1"]).status.success());
    assert_eq!(wait_status(pid), 0, "stderr: {}", f.errors());
    assert_eq!(f.output(), expected, "stderr: {}", f.errors());
    pod.assert_untouched("after the VM, before delete");
    assert!(f.runc(&["delete", "podvm1"]).status.success());
    assert_nothing_left(&f, "after a VM on a pod");
    drop(f);

    // SIGKILL of the VMM while the workload runs: delete undoes the redirection.
    let f = on_pod(format!("{reach}; while :; do sleep 0.1; done"));
    let (ok, err, pid) = f.create("podvm2");
    assert!(ok, "create: {err}");
    assert!(f.runc(&["start", "podvm2"]).status.success());
    f.wait_output("ready");
    assert_eq!(f.output(), expected, "stderr: {}", f.errors());
    assert!(
        pod.ns.links().iter().any(|l| l.starts_with("isolt")),
        "the VM's tap is in the pod: {:?}",
        pod.ns.links()
    );
    assert!(pod.ns.ingress().contains("mirred"), "{}", pod.ns.ingress());
    assert!(f.runc(&["kill", "podvm2", "KILL"]).status.success());
    assert_eq!(wait_status(pid), 137);
    assert!(f.runc(&["delete", "podvm2"]).status.success());
    pod.assert_untouched("after SIGKILL of the VMM and delete");
    assert!(pod.ns.path().exists(), "the pod's namespace is the pod's");
    assert_nothing_left(&f, "after SIGKILL of a VM on a pod");
}

/// A change to config.json.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn what_a_vm_cannot_honour_is_refused_in_one_line_and_leaves_nothing() {
    let _g = common::root_test();
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["annotations"]["io.isol.backend"] = "qemu".into()),
            "is not a backend: give kvm or container",
        ),
        (
            Box::new(|v| v["process"]["terminal"] = true.into()),
            "process.terminal is set: give --console-socket, where the terminal's master goes",
        ),
        (
            Box::new(|v| {
                let ns = v["linux"]["namespaces"].as_array_mut().unwrap();
                for n in ns.iter_mut() {
                    if n["type"] == "network" {
                        n["path"] = "/proc/self/ns/net".into();
                    }
                }
            }),
            "it is isol's own (the host's), whose interface a VM cannot take over",
        ),
        (
            Box::new(|v| {
                v["linux"]["namespaces"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|n| n["type"] != "mount")
            }),
            "a config without a mount namespace (linux.namespaces: the runtime's, as runc runs it): a VM has its own kernel and mounts is not supported on the kvm backend",
        ),
        (
            Box::new(|v| {
                v["mounts"].as_array_mut().unwrap().push(serde_json::json!(
                    {"destination": "/mnt", "type": "ext4", "source": "/dev/sda"}))
            }),
            "mounts: a ext4 mount at /mnt is not supported on the kvm backend",
        ),
    ];
    for (edit, needle) in cases {
        let f = Fixture::new(edit);
        let (ok, err, _) = f.create("bad");
        assert!(!ok, "{needle}: create succeeded");
        assert!(err.contains(needle), "{needle:?} not in: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        let left: Vec<_> = fs::read_dir(&f.root)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{needle}: state left behind: {left:?}");
    }
    // A console socket without a terminal, as for a container.
    let f = Fixture::new(|_| {});
    let (ok, err, _) = f.create_with("bad", &["--console-socket", "/nonexistent.sock"]);
    assert!(
        !ok,
        "create with a console socket and no terminal succeeded"
    );
    assert!(
        err.contains("--console-socket is given but process.terminal is not set"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(fs::read_dir(&f.root).map_or(true, |mut d| d.next().is_none()));
}

/// containerd's `ctr run`, with `isol-runc-vm` (a link to isol-runc under the VM runtime's
/// name), with the annotation on `isol-runc`, and on the container backend: the same output
/// and exit status, nothing left.
#[test]
fn ctr_runs_the_same_image_and_command_in_a_vm_and_a_container() {
    if !common::kvm_ready() {
        return;
    }
    let _g = common::root_test();
    let ctrd = common::containerd::Containerd::start("isol-vm-test", common::containerd::NO_CRI);
    let image = "isol.test/busybox:vm";
    ctrd.import_busybox(image, serde_json::json!({}));
    let links = tempfile::tempdir().unwrap();
    let vm_runtime = links.path().join("isol-runc-vm");
    std::os::unix::fs::symlink(runc_bin(), &vm_runtime).unwrap();
    let script = "echo hello; ls /bin/busybox; id -u; echo to-stderr >&2; exit 3";
    let run = |id: &str, runtime: &Path, annotation: Option<&str>| {
        let mut args = vec!["run", "--rm", "--runc-binary", runtime.to_str().unwrap()];
        if let Some(a) = annotation {
            args.extend(["--annotation", a]);
        }
        args.extend([image, id, "sh", "-c", script]);
        let o = ctrd
            .ctr_command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        (
            common::stdout(&o),
            common::stderr(&o),
            o.status.code().unwrap_or(-1),
        )
    };
    let container = run("c-ctr", Path::new(runc_bin()), None);
    let by_name = run("vm-ctr", &vm_runtime, None);
    let by_annotation = run("vm-ann", Path::new(runc_bin()), Some("io.isol.backend=kvm"));
    assert_eq!(container.2, 3, "container: {container:?}");
    assert_eq!(container.0, "hello\n/bin/busybox\n0\n");
    assert_eq!(by_name, container, "isol-runc-vm against the container");
    assert_eq!(
        by_annotation, container,
        "the annotation against the container"
    );
    // The annotation wins over the name: a container, under the VM runtime's name.
    let back = run("c-ann", &vm_runtime, Some("io.isol.backend=container"));
    assert_eq!(back, container);
    // ctr run -t on a real terminal: the workload is on a terminal of ctr's size (which ctr
    // sets once the task started: the VM's first size, or a resize of its terminal, whichever
    // comes first), the same bytes and status. (A resize of a running VM's terminal: the test
    // above.)
    let on_tty = |id: &str, runtime: &Path| {
        common::pty::spawn_command(
            ctrd.ctr_command(&[
                "run",
                "-t",
                "--rm",
                "--runc-binary",
                runtime.to_str().unwrap(),
                image,
                id,
                "sh",
                "-c",
                common::containerd::TTY_SCRIPT,
            ]),
            33,
            77,
        )
        .finish()
    };
    let container_tty = on_tty("c-tty", Path::new(runc_bin()));
    assert_eq!(container_tty.0, Some(6), "{container_tty:?}");
    assert!(
        container_tty.1.contains("is-a-tty") && container_tty.1.contains("size 33 77"),
        "{container_tty:?}"
    );
    let vm_tty = on_tty("vm-tty", &vm_runtime);
    assert_eq!(
        vm_tty, container_tty,
        "ctr run -t: the VM against the container"
    );
    // ctr task exec into a `ctr run -d` VM task: its output and status; ctr task kill.
    let o = ctrd.ctr(&[
        "run",
        "-d",
        "--runc-binary",
        vm_runtime.to_str().unwrap(),
        image,
        "vm-d",
        "sh",
        "-c",
        "trap 'exit 8' TERM; while :; do sleep 0.1; done",
    ]);
    assert!(o.status.success(), "run -d: {}", common::stderr(&o));
    ctrd.wait_running("vm-d");
    let o = ctrd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "vm-d",
        "sh",
        "-c",
        "echo in-the-vm; uname -r; exit 4",
    ]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "task exec: {}",
        common::stderr(&o)
    );
    let out = common::stdout(&o);
    assert!(out.starts_with("in-the-vm\n"), "{out}");
    let host_kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        !out.contains(host_kernel.trim()),
        "exec ran on the host: {out}"
    );
    let o = ctrd.ctr(&["task", "kill", "vm-d"]);
    assert!(o.status.success(), "task kill: {}", common::stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = common::stdout(&ctrd.ctr(&["task", "ls"]));
        if out
            .lines()
            .any(|l| l.starts_with("vm-d") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "vm-d never stopped: {out}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for args in [
        &["task", "delete", "vm-d"][..],
        &["container", "rm", "vm-d"],
    ] {
        let o = ctrd.ctr(args);
        assert!(o.status.success(), "{args:?}: {}", common::stderr(&o));
    }
    let o = ctrd.ctr(&["container", "ls", "-q"]);
    assert_eq!(common::stdout(&o), "", "containers left in containerd");
    drop(ctrd);
    assert_eq!(
        virtiofsds_below(Path::new("/run")),
        Vec::<String>::new(),
        "virtiofsd left"
    );
    common::assert_no_leftovers("after ctr run");
}
