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

use common::podman::Podman;
use common::shim::{become_subreaper, set_args, wait_status};

/// A lab test's opening: `None` (the test returns) without a KVM that runs guests; else the
/// root tests' lock, for the caller to hold, with this process a subreaper (a create's init,
/// the future VMM, is re-parented to it).
fn vm_test() -> Option<std::sync::MutexGuard<'static, ()>> {
    if !common::kvm_ready() {
        return None;
    }
    let g = common::root_test();
    become_subreaper();
    Some(g)
}

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
        self.create_env(id, options, &[])
    }

    /// [`Fixture::create_with`] with more environment for isol-runc.
    fn create_env(&self, id: &str, options: &[&str], env: &[(&str, &str)]) -> (bool, String, i32) {
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
            .envs(env.iter().copied())
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
    let Some(_g) = vm_test() else { return };
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
    let Some(_g) = vm_test() else { return };
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

/// `start` returns once the guest init has exec'd the workload, as runc's returns once its
/// workload was exec'd (the VMM holds the start gate until the guest says the exec succeeded).
/// Right after it, what the guest init made before that exec is there: a tmpfs's mount point,
/// made in the rootfs over virtio-fs (until 2026-12-07 `start` returned once the VMM ran, a
/// whole boot before), and a poststart hook, which runs after, sees it too. A workload that
/// cannot be exec'd fails `start` with the line a container's `create` fails with, and the pid
/// exits 127.
#[test]
fn start_returns_once_the_vm_s_workload_is_execd_and_fails_when_it_cannot_be() {
    let Some(_g) = vm_test() else { return };
    let vol = tempfile::tempdir().unwrap();
    let seen = vol.path().join("poststart");
    let f = Fixture::new(|v| {
        set_args(v, "echo ready; while :; do sleep 1; done");
        let mounts = v["mounts"].as_array_mut().unwrap();
        mounts.push(
            serde_json::json!({"destination": "/made-by-guest", "type": "tmpfs",
            "source": "tmpfs", "options": ["nosuid", "size=1m"]}),
        );
    });
    let made = f.bundle.join("rootfs/made-by-guest");
    let config = f.bundle.join("config.json");
    let mut v: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    let hook = format!(
        "test -d {} && echo seen > {}",
        made.display(),
        seen.display()
    );
    v["hooks"] =
        serde_json::json!({"poststart": [{"path": "/bin/sh", "args": ["sh", "-c", hook]}]});
    fs::write(&config, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let (ok, err, pid) = f.create("execd");
    assert!(ok, "create: {err}");
    assert!(!made.exists(), "the guest has not run yet");
    let o = f.runc(&["start", "execd"]);
    assert!(o.status.success(), "start: {}", common::stderr(&o));
    assert!(
        made.is_dir(),
        "right after start, the guest init's mount point is there"
    );
    assert_eq!(
        fs::read_to_string(&seen).unwrap_or_default(),
        "seen\n",
        "the poststart hook"
    );
    f.wait_output("ready");
    assert!(f.runc(&["kill", "execd", "KILL"]).status.success());
    assert_eq!(wait_status(pid), 137);
    assert!(f.runc(&["delete", "execd"]).status.success());
    assert_nothing_left(&f, "after a started VM");

    // A command the guest does not have: `start` fails, in the words of a container's `create`.
    // (runc's log line escapes the quotes around the name.)
    let not_found = r#"exec: \"nope\": executable file not found in $PATH"#;
    let f = Fixture::new(|v| v["process"]["args"] = serde_json::json!(["nope"]));
    let (ok, err, pid) = f.create("nope");
    assert!(ok, "create: {err}");
    let o = f.runc(&["start", "nope"]);
    assert!(
        !o.status.success(),
        "start of a command not found succeeded"
    );
    assert!(
        common::stderr(&o).contains(not_found),
        "{}",
        common::stderr(&o)
    );
    assert_eq!(wait_status(pid), 127);
    assert_eq!(f.state("nope")["status"], "stopped");
    assert!(f.runc(&["delete", "nope"]).status.success());
    assert_nothing_left(&f, "after a start that failed");
    let f = Fixture::new(|v| {
        v["annotations"] = serde_json::json!({"io.isol.backend": "container"});
        v["process"]["args"] = serde_json::json!(["nope"]);
    });
    let (ok, err, _) = f.create("nope-ctr");
    assert!(
        !ok && err.contains(not_found),
        "a container's create: {err}"
    );
    assert_nothing_left(&f, "after a container's create that failed");
}

/// runtime-tools' generator fills all five capability sets alike (docker's 14): the workload
/// in the VM holds exactly them, as root and as a non-root user (the ambient set, raised by
/// the guest init after the uid switch), as runc's process does. Until run spec 6 (2026-12-07)
/// `create` refused inheritable and ambient sets on kvm, failing every file of the suite.
#[test]
fn a_vm_workload_holds_the_config_s_inheritable_and_ambient_capabilities() {
    let Some(_g) = vm_test() else { return };
    let docker = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    for (uid, id) in [(0, "caps-root"), (1000, "caps-user")] {
        let f = Fixture::new(|v| {
            set_args(v, "grep -E '^(Cap|Uid)' /proc/self/status");
            let set = serde_json::json!(docker);
            v["process"]["capabilities"] = serde_json::json!({
                "bounding": set, "effective": set, "permitted": set,
                "inheritable": set, "ambient": set,
            });
            v["process"]["user"] = serde_json::json!({"uid": uid, "gid": uid});
        });
        let (ok, err, pid) = f.create(id);
        assert!(ok, "create {id}: {err}");
        assert!(f.runc(&["start", id]).status.success());
        assert_eq!(wait_status(pid), 0, "{id}: {}", f.errors());
        let out = f.output();
        assert!(out.contains(&format!("Uid:\t{uid}\t")), "{id}: {out}");
        for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert!(
                out.contains(&format!("{set}:\t00000000a80425fb\n")),
                "{id}: {set} is not docker's set: {out}"
            );
        }
        assert!(f.runc(&["delete", id]).status.success());
        assert_nothing_left(&f, id);
    }
}

/// The guest's root has a container's own mounts, as runc makes them and runtime-tools'
/// `runtimetest` checks them in `/proc/self/mountinfo`: /proc, a tmpfs /dev with the default
/// devices, /dev/pts, /dev/shm, /dev/mqueue, /sys, in that order, each with the source and
/// type a config lists (until 2026-12-07 the init's own devtmpfs and kernel mounts were moved
/// in, before the root, and there was no mqueue); `linux.sysctl` is written in the guest and
/// `process.oomScoreAdj` is the workload's there.
#[test]
fn a_vm_bundle_has_runc_s_mounts_in_order_and_its_sysctls() {
    let Some(_g) = vm_test() else { return };
    let f = Fixture::new(|v| {
        set_args(
            v,
            "awk '{ for (i = 7; $i != \"-\"; i++) {}; print $5, $(i+1), $(i+2) }' /proc/self/mountinfo; \
             echo fwd $(cat /proc/sys/net/ipv4/ip_forward); \
             echo shmmax $(cat /proc/sys/kernel/shmmax); \
             echo oom $(cat /proc/self/oom_score_adj); \
             ls -l /dev/null /dev/ptmx; \
             echo chardevs $(find /dev -maxdepth 1 -type c | sort)",
        );
        v["linux"]["sysctl"] =
            serde_json::json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "65536"});
        v["process"]["oomScoreAdj"] = serde_json::json!(100);
    });
    let (ok, err, pid) = f.create("vm-mounts");
    assert!(ok, "create: {err}");
    assert!(f.runc(&["start", "vm-mounts"]).status.success());
    assert_eq!(wait_status(pid), 0, "{}", f.errors());
    let out = f.output();
    let want = [
        "/proc proc proc",
        "/dev tmpfs tmpfs",
        "/dev/pts devpts devpts",
        "/dev/shm tmpfs shm",
        "/dev/mqueue mqueue mqueue",
        "/sys sysfs sysfs",
    ];
    let lines: Vec<&str> = out.lines().collect();
    let at: Vec<Option<usize>> = want
        .iter()
        .map(|w| lines.iter().position(|l| l == w))
        .collect();
    assert!(at.iter().all(Option::is_some), "{want:?} not all in: {out}");
    assert!(at.windows(2).all(|w| w[0] < w[1]), "not in order: {out}");
    assert!(
        lines.iter().position(|l| l.starts_with("/ ")) < at[0],
        "the root after its mounts: {out}"
    );
    assert!(
        out.contains("fwd 1\n") && out.contains("shmmax 65536\n"),
        "{out}"
    );
    assert!(
        out.contains("oom 100\n"),
        "the workload's oom_score_adj: {out}"
    );
    assert!(
        out.contains("crw-rw-rw-") && out.contains("1,   3"),
        "{out}"
    );
    assert!(out.contains("/dev/ptmx -> pts/ptmx"), "{out}");
    // /dev holds runc's default devices and the init's virtio ports, nothing more of the
    // guest's devtmpfs (until 2026-12-07: console, fuse, kmsg, and the UARTs ttyS0, ttyS1).
    let chardevs: Vec<&str> = out
        .lines()
        .find_map(|l| l.strip_prefix("chardevs "))
        .unwrap_or_else(|| panic!("{out}"))
        .split(' ')
        .filter_map(|c| c.strip_prefix("/dev/"))
        .collect();
    let defaults = ["null", "zero", "full", "random", "urandom", "tty"];
    let missing: Vec<_> = defaults.iter().filter(|d| !chardevs.contains(d)).collect();
    assert!(missing.is_empty(), "{missing:?} missing: {chardevs:?}");
    let other: Vec<&&str> = chardevs
        .iter()
        .filter(|c| !defaults.contains(c) && !c.starts_with("vport"))
        .collect();
    assert!(
        other.is_empty(),
        "more devices than a container's: {other:?}"
    );
    assert!(f.runc(&["delete", "vm-mounts"]).status.success());
    assert_nothing_left(&f, "vm-mounts");
}

/// `exec` into a running VM: in the foreground (its output, stderr and exit status; `-e`,
/// `--cwd`, `-u`; `--process`), detached (the relay's pid in the pid file lives as long as
/// the process and exits with its status; a signal to it reaches the process), and with a
/// terminal handed to `--console-socket`.
#[test]
fn exec_into_a_running_vm_in_the_foreground_detached_and_on_a_terminal() {
    let Some(_g) = vm_test() else { return };
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
    let Some(_g) = vm_test() else { return };
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
/// the redirection before `delete`; after a SIGKILL of the VMM, `delete` does, or before it
/// the next VM on the pod (a kubelet's restart of the dead container). Either way the
/// namespace is left as CNI made it, and still there.
#[test]
fn a_vm_joins_a_cni_pod_s_network_namespace_by_path() {
    use common::cni::CniPod;
    let Some(_g) = vm_test() else { return };
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
    // Its redirection of the pod's interface (to its gone tap) is left to its delete; a
    // kubelet starts the dead container's successor in the pod first: that VM undoes it from
    // the dead one's record, and runs on the pod.
    assert!(pod.ns.ingress().contains("mirred"), "{}", pod.ns.ingress());
    // The same runtime root (a shim's), the same bundle with a workload that exits.
    let config = f.bundle.join("config.json");
    let mut v: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    set_args(&mut v, &format!("{reach}; exit 0"));
    fs::write(&config, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let (ok, err, next) = f.create("podvm3");
    assert!(ok, "create after a killed VM on the pod: {err}");
    assert!(f.runc(&["start", "podvm3"]).status.success());
    assert_eq!(wait_status(next), 0, "stderr: {}", f.errors());
    assert_eq!(f.output(), expected, "stderr: {}", f.errors());
    assert!(f.runc(&["delete", "podvm3"]).status.success());
    assert!(f.runc(&["delete", "podvm2"]).status.success());
    pod.assert_untouched("after SIGKILL of the VMM and delete");
    assert!(pod.ns.path().exists(), "the pod's namespace is the pod's");
    assert_nothing_left(&f, "after SIGKILL of a VM on a pod");
}

/// The config's sysctls, domain name and umask, and masked and read-only paths (runc's
/// defaults and more), applied by the guest init: the workload in the VM sees exactly what the
/// same bundle's workload sees in a container. A sysctl the guest kernel lacks fails the run
/// (125) with one line.
#[test]
fn sysctls_masked_and_read_only_paths_mean_the_same_in_a_vm_and_a_container() {
    if !common::kvm_ready() {
        return;
    }
    let _g = common::root_test();
    let script = "cat /proc/sys/net/ipv4/ping_group_range /proc/sys/kernel/shmmax; \
                  cat /proc/sys/kernel/domainname; \
                  echo version=$(cat /proc/version) secret=$(cat /secret); \
                  echo tty=$(ls -A /proc/tty | wc -l); \
                  (touch /proc/tty/x) 2>&1; \
                  (echo 1 > /proc/sys/kernel/shmmax) 2>&1; \
                  (touch /etc/x) 2>&1; \
                  umask; touch /made && stat -c %a /made; rm /made";
    let edit = |v: &mut Value| {
        set_args(v, script);
        v["linux"]["sysctl"] = serde_json::json!({
            "net.ipv4.ping_group_range": "0 0",
            "kernel.shmmax": "65536",
        });
        // Writable (runc's default is read-only), so that /etc's EROFS is the config's.
        v["root"]["readonly"] = false.into();
        v["domainname"] = "example.org".into();
        v["process"]["user"]["umask"] = 0o077.into();
        // runc's defaults (in `spec`'s config) and more: a file of /proc and one of the
        // rootfs, a directory of /proc, a path that does not exist (skipped, as runc).
        for p in ["/proc/version", "/secret", "/proc/tty", "/no/such/path"] {
            v["linux"]["maskedPaths"]
                .as_array_mut()
                .unwrap()
                .push(p.into());
        }
        v["linux"]["readonlyPaths"]
            .as_array_mut()
            .unwrap()
            .push("/etc".into());
    };
    let run = |backend: &str| {
        let f = Fixture::new(|v| {
            edit(v);
            v["annotations"]["io.isol.backend"] = backend.into();
        });
        fs::write(f.bundle.join("rootfs/secret"), "from the image\n").unwrap();
        let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "s1"]);
        assert_nothing_left(&f, backend);
        (common::stdout(&o), common::stderr(&o), o.status.code())
    };
    let vm = run("kvm");
    assert_eq!(vm.2, Some(0), "kvm: {vm:?}");
    let lines: Vec<&str> = vm.0.lines().collect();
    assert_eq!(
        lines[..5],
        ["0\t0", "65536", "example.org", "version= secret=", "tty=0"],
        "{vm:?}"
    );
    // A masked directory is a read-only tmpfs; /proc/sys and the config's /etc are read-only.
    for (line, path) in lines[5..8]
        .iter()
        .zip(["/proc/tty/x", "/proc/sys/kernel/shmmax", "/etc/x"])
    {
        assert!(
            line.contains(path) && line.ends_with("Read-only file system"),
            "{line:?} ({vm:?})"
        );
    }
    assert_eq!(lines[8..], ["0077", "600"], "{vm:?}");
    assert_eq!(run("container"), vm, "the container backend");

    // A sysctl the guest kernel lacks: the run fails in one line, nothing left.
    let f = Fixture::new(|v| {
        set_args(v, "echo never");
        v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.no_such_sysctl": "1"});
    });
    let o = f.runc(&["run", "--bundle", f.bundle.to_str().unwrap(), "s2"]);
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert_eq!(common::stdout(&o), "");
    assert!(
        err.contains("cannot set sysctl net.ipv4.no_such_sysctl to \"1\"")
            && err.contains("the guest kernel has no such sysctl"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_nothing_left(&f, "after a sysctl the guest lacks");
}

/// podman 4.3 with `isol-runc-vm` (a link to isol-runc under the VM runtime's name) as its OCI
/// runtime, against `isol-runc` (the container backend), on the same image and command:
/// podman's default config (its sysctl `net.ipv4.ping_group_range`, its masked and read-only
/// paths) means the same in both; the output, stderr and exit status, stdin with `-i`, `run
/// -d` with `exec` and `stop`, `run -it` on a terminal.
#[test]
fn podman_runs_the_same_image_and_command_in_a_vm_and_a_container() {
    if !common::kvm_ready() {
        return;
    }
    let _g = common::root_test();
    let links = tempfile::tempdir().unwrap();
    let vm_runtime = links.path().join("isol-runc-vm");
    std::os::unix::fs::symlink(runc_bin(), &vm_runtime).unwrap();
    let script = "echo hi; cat /proc/sys/net/ipv4/ping_group_range; \
                  echo block=$(ls -A /sys/dev/block | wc -l); \
                  (echo 1 > /proc/sys/kernel/shmmax) 2>&1; echo to-stderr >&2; exit 3";
    let run = |runtime: &Path| {
        let p = Podman::new(runtime);
        let o = p.run(&[], script);
        let plain = (common::stdout(&o), common::stderr(&o), o.status.code());
        // -i: podman's stdin reaches the workload, and its end.
        let mut args = vec!["run", "--rm", "-i"];
        args.extend(common::podman::RUN_FLAGS);
        args.extend([common::podman::IMAGE, "sh", "-c", "cat; exit 4"]);
        let o = common::output_with_stdin(&mut p.command(&args), b"from stdin\n");
        let stdin = (common::stdout(&o), common::stderr(&o), o.status.code());
        // run -d, exec (its output and status), stop (SIGTERM to the workload: 143), rm.
        let mut args = vec!["run", "-d", "--name", "bg"];
        args.extend(common::podman::RUN_FLAGS);
        args.extend([common::podman::IMAGE, "sleep", "60"]);
        p.ok(&args);
        let o = p.podman(&["exec", "bg", "sh", "-c", "echo in-exec; exit 5"]);
        let exec = (common::stdout(&o), common::stderr(&o), o.status.code());
        p.ok(&["stop", "--time", "10", "bg"]);
        let stopped = p.ok(&["inspect", "--format", "{{.State.ExitCode}}", "bg"]);
        p.ok(&["rm", "bg"]);
        // run -it on a pty: a terminal of the pty's size, the exit status through it.
        let mut args = vec!["run", "--rm", "-it"];
        args.extend(common::podman::RUN_FLAGS);
        args.extend([common::podman::IMAGE, "sh"]);
        let mut t = common::pty::spawn_command(p.command(&args), 30, 90);
        {
            use std::io::Write;
            t.master
                .write_all(b"stty size; echo mark-$((6*7))\n")
                .unwrap();
            t.read_until("mark-42");
            t.master.write_all(b"exit 5\n").unwrap();
        }
        let (code, seen) = t.finish();
        let terminal = (seen.contains("30 90"), code);
        p.assert_clean();
        (plain, stdin, exec, stopped, terminal)
    };
    let container = run(Path::new(runc_bin()));
    let (plain, stdin, exec, stopped, terminal) = &container;
    assert_eq!(*terminal, (true, Some(5)), "run -it");
    assert_eq!(*exec, ("in-exec\n".to_string(), String::new(), Some(5)));
    assert_eq!(stopped.trim(), "143");
    assert_eq!(plain.2, Some(3), "container: {plain:?}");
    let lines: Vec<&str> = plain.0.lines().collect();
    assert_eq!(lines[..3], ["hi", "0\t0", "block=0"], "{plain:?}");
    assert!(lines[3].ends_with("Read-only file system"), "{plain:?}");
    assert_eq!(plain.1, "to-stderr\n");
    assert_eq!(*stdin, ("from stdin\n".to_string(), String::new(), Some(4)));
    assert_eq!(
        run(&vm_runtime),
        container,
        "isol-runc-vm against isol-runc"
    );
    common::assert_no_leftovers("after podman");
}

/// podman's own network on kvm: a bridge network of Debian's podman 4.3 (its CNI backend:
/// `bridge` with a gateway and a default route, `portmap`, `firewall`, `tuning`), whose
/// namespace podman makes, configures and hands isol-runc-vm in config.json by path, as a CRI
/// pod's. A VM container and a container (isol-runc, a second podman with the same network's
/// configuration) on that network reach each other by IP; the host reaches the VM by its IP
/// and through the port podman publishes (`-p HOST:CTR`, portmap's DNAT to the pod's address,
/// which the VM took over). While the VM runs, podman's namespace holds its tap and the tc
/// redirection; `podman rm` leaves nothing: no record of the redirection, no namespace, tap,
/// process, mount or cgroup.
#[test]
fn podman_bridge_network_and_published_port_reach_a_vm() {
    if !common::kvm_ready() {
        return;
    }
    let _g = common::root_test();
    let links = tempfile::tempdir().unwrap();
    let vm_runtime = links.path().join("isol-runc-vm");
    std::os::unix::fs::symlink(runc_bin(), &vm_runtime).unwrap();
    let vm = Podman::new(&vm_runtime);
    let ctr = Podman::new(Path::new(runc_bin()));
    podman_network_reaches_a_vm(&vm, &ctr, &[], "isolpodvm", "10.251.95.", 18095);
    drop((vm, ctr));
    common::assert_no_leftovers("after podman's network");
}

/// The same with podman's other network backend, netavark (Debian's netavark 1.4: a bridge,
/// podman's own address allocation, iptables rules for the published port), and one podman
/// whose runtime is isol-runc: the VM container is chosen by the annotation
/// `io.isol.backend=kvm` that podman passes on in config.json.
#[test]
fn podman_netavark_network_and_published_port_reach_a_vm() {
    if !common::kvm_ready() {
        return;
    }
    common::require_tool("/usr/lib/podman/netavark");
    let _g = common::root_test();
    let p = Podman::with_network_backend(Path::new(runc_bin()), "netavark");
    assert_eq!(
        p.ok(&["info", "--format", "{{.Host.NetworkBackend}}"])
            .trim(),
        "netavark"
    );
    podman_network_reaches_a_vm(
        &p,
        &p,
        &["--annotation", "io.isol.backend=kvm"],
        "isolpodnv",
        "10.251.96.",
        18096,
    );
    drop(p);
    common::assert_no_leftovers("after podman's netavark network");
}

/// The body of the two tests above: network `net` (`prefix`0/24) made by `vm`'s podman (and
/// given to `ctr`'s when it is another, as CNI's configuration: its address allocation is
/// kept per network name on the host), a container of `ctr`'s, a VM of `vm`'s (`vm_flags`
/// added to its `run`) publishing `published`.
fn podman_network_reaches_a_vm(
    vm: &Podman,
    ctr: &Podman,
    vm_flags: &[&str],
    net: &str,
    prefix: &str,
    published: u16,
) {
    use common::podman::{IMAGE, RUN_FLAGS};
    /// The network's bridge, which CNI's DEL leaves: removed on drop.
    struct Bridge(String);
    impl Drop for Bridge {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).output();
        }
    }
    let two = !std::ptr::eq(vm, ctr);
    let subnet = format!("{prefix}0/24");
    let mut create = vec!["network", "create", "--subnet", &subnet];
    if !two {
        // netavark's DNS server (aardvark-dns) is not what this test is about.
        create.push("--disable-dns");
    }
    create.push(net);
    vm.ok(&create);
    if two {
        let conf = format!("{net}.conflist");
        fs::copy(vm.path("cni").join(&conf), ctr.path("cni").join(&conf)).unwrap();
    }
    let _bridge = Bridge(
        vm.ok(&[
            "network",
            "inspect",
            "--format",
            "{{.NetworkInterface}}",
            net,
        ])
        .trim()
        .to_string(),
    );
    let mut flags = vec!["run", "-d", "--network", net];
    flags.extend_from_slice(&RUN_FLAGS[2..]);
    let serve = |text: &str| {
        format!("mkdir -p /srv && echo {text} > /srv/index.html && exec httpd -f -p 8080 -h /srv")
    };
    let ip_of = |p: &Podman, name: &str| {
        p.ok(&[
            "inspect",
            "--format",
            &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
            name,
        ])
        .trim()
        .to_string()
    };

    let mut args = flags.clone();
    args.extend(["--name", "web", IMAGE, "sh", "-c"]);
    let script = serve("hello-from-the-container");
    args.push(&script);
    ctr.ok(&args);
    let web = ip_of(ctr, "web");
    assert!(web.starts_with(prefix), "the container's IP {web:?}");

    // The VM: its address, the container's page, then a server of its own, published.
    let script = format!(
        "echo ip $(ip -o -4 addr show eth0 | awk '{{print $4}}'); \
         wget -q -O - http://{web}:8080/; {}",
        serve("hello-from-the-vm")
    );
    let publish = format!("{published}:8080");
    let mut args = flags.clone();
    args.extend(vm_flags);
    args.extend(["--name", "vm", "-p", &publish, IMAGE, "sh", "-c", &script]);
    vm.ok(&args);
    let vm_ip = ip_of(vm, "vm");
    assert!(vm_ip.starts_with(prefix), "the VM's IP {vm_ip:?}");
    assert_ne!(vm_ip, web);
    let deadline = Instant::now() + Duration::from_secs(60);
    let logged = loop {
        let logs = vm.ok(&["logs", "vm"]);
        if logs.lines().count() >= 2 || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        logged,
        format!("ip {vm_ip}/24\nhello-from-the-container\n"),
        "the VM's log"
    );
    let host_kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(vm.ok(&["exec", "vm", "uname", "-r"]), host_kernel, "a VM");

    // The host reaches the VM by its IP and through the published port (on the bridge's
    // address, the host's own), and the container reaches the VM.
    let gateway = format!("{prefix}1");
    assert_eq!(http_get(&vm_ip, 8080), "hello-from-the-vm\n");
    assert_eq!(http_get(&gateway, published), "hello-from-the-vm\n");
    let url = format!("http://{vm_ip}:8080/");
    assert_eq!(
        ctr.ok(&["exec", "web", "wget", "-q", "-O", "-", &url]),
        "hello-from-the-vm\n"
    );

    // podman's namespace holds the VM's tap and the redirection, recorded in isol-runc's state.
    let netns = vm
        .ok(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.SandboxKey}}",
            "vm",
        ])
        .trim()
        .to_string();
    let in_netns = |cmd: &str| {
        let o = Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["sh", "-c", cmd])
            .output()
            .unwrap();
        common::stdout(&o)
    };
    assert!(in_netns("ip -o link").contains("isolt"), "the VM's tap");
    assert!(in_netns("tc filter show dev eth0 ingress").contains("mirred"));
    let records = || {
        let o = Command::new("find")
            .args([
                "/run",
                vm.tmp.path().to_str().unwrap(),
                "-path",
                "*/net/pods/*.json",
            ])
            .output()
            .unwrap();
        common::stdout(&o)
    };
    assert_eq!(
        records().lines().count(),
        1,
        "the VM's record: {}",
        records()
    );

    // Stop (SIGTERM to the workload in the guest), rm: nothing left.
    vm.ok(&["stop", "--time", "10", "vm"]);
    assert_eq!(
        vm.ok(&["inspect", "--format", "{{.State.ExitCode}}", "vm"])
            .trim(),
        "143"
    );
    vm.ok(&["rm", "vm"]);
    assert_eq!(records(), "", "records of the redirection left");
    assert!(
        !Path::new(&netns).exists(),
        "podman's namespace {netns} left"
    );
    ctr.ok(&["rm", "--force", "--time", "0", "web"]);
    vm.ok(&["network", "rm", net]);
    vm.assert_clean();
    if two {
        ctr.ok(&["network", "rm", net]);
        ctr.assert_clean();
    }
}

/// The body of `GET /` from `ip`:`port`.
fn http_get(ip: &str, port: u16) -> String {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().unwrap();
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("the host cannot reach {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    match answer.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_string(),
        None => panic!("{addr} answered {answer:?}"),
    }
}

/// A change to config.json.
type Edit = Box<dyn Fn(&mut Value)>;

/// The last number the counter loop of `pause_resume_update_and_kill_of_a_paused_vm` printed.
fn last_count(f: &Fixture) -> u64 {
    f.output()
        .lines()
        .filter_map(|l| l.parse().ok())
        .next_back()
        .unwrap_or(0)
}

/// A file of the VMM's cgroup (`isol/<id>`, cgroup v2: the lab's), trimmed.
fn vmm_cgroup(id: &str, file: &str) -> String {
    let path = Path::new("/sys/fs/cgroup/isol").join(id).join(file);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// `pause` parks the VM's vCPUs and freezes the VMM's cgroup: a counter in the guest stops
/// (its last value the same two seconds later), `state` says paused, exec and a signal
/// other than KILL are refused; `resume` runs it on. `linux.resources.cpu` at create and
/// `update` of memory and CPU set the VMM's cgroup; what cannot map is refused in one line.
/// A paused VM dies of `kill KILL` and of `delete --force`; nothing is left.
#[test]
fn pause_resume_update_and_kill_of_a_paused_vm() {
    let Some(_g) = vm_test() else { return };
    assert!(
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "this test reads the VMM's cgroup v2 files (the lab's layout)"
    );
    let counter = "i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done";
    let f = Fixture::new(|v| {
        set_args(v, counter);
        v["linux"]["resources"] = serde_json::json!({
            "memory": {"limit": 128 << 20},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
        });
    });
    let (ok, err, pid) = f.create("vmp");
    assert!(ok, "create: {err}");
    assert!(f.runc(&["start", "vmp"]).status.success());
    f.wait_output("3");
    // create: the CPU limits bound the VMM's cgroup; its memory is the guest's and a margin.
    assert_eq!(vmm_cgroup("vmp", "cpu.max"), "50000 100000");
    assert_eq!(
        vmm_cgroup("vmp", "cpu.weight"),
        isol_container::cgroups::cpu_weight(512).to_string()
    );
    assert_eq!(vmm_cgroup("vmp", "cpuset.cpus"), "0");
    assert_eq!(
        vmm_cgroup("vmp", "memory.max"),
        ((128 + 64) << 20).to_string()
    );

    let threads = vmm_cgroup("vmp", "cgroup.threads").lines().count();
    let o = f.runc(&["pause", "vmp"]);
    assert!(o.status.success(), "pause: {}", common::stderr(&o));
    assert_eq!(f.state("vmp")["status"], "paused");
    assert!(
        vmm_cgroup("vmp", "cgroup.events").contains("frozen 1"),
        "{}",
        vmm_cgroup("vmp", "cgroup.events")
    );
    let paused_at = last_count(&f);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(last_count(&f), paused_at, "the counter ran while paused");
    for (args, needle) in [
        (
            &["pause", "vmp"][..],
            "is paused: only a running container can be paused",
        ),
        (
            &["exec", "vmp", "true"][..],
            "cannot exec in a paused container",
        ),
        (
            &["kill", "vmp", "TERM"][..],
            "resume it first, or send KILL",
        ),
        (&["delete", "vmp"][..], "is paused: stop it first"),
    ] {
        let o = f.runc(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let e = common::stderr(&o);
        assert!(e.contains(needle), "{args:?}: {needle:?} not in {e}");
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    }
    // As runc 1.1 does with a paused container: update sets its cgroup, ps lists its
    // processes, list says paused.
    let o = f.runc(&["update", "--cpu-quota", "30000", "vmp"]);
    assert!(
        o.status.success(),
        "update while paused: {}",
        common::stderr(&o)
    );
    assert_eq!(vmm_cgroup("vmp", "cpu.max"), "30000 100000");
    let o = f.runc(&["ps", "--format", "json", "vmp"]);
    assert!(
        o.status.success(),
        "ps while paused: {}",
        common::stderr(&o)
    );
    let pids: Vec<i32> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pids.first(), Some(&pid), "{pids:?}");
    assert!(pids.len() > 1, "the jailed VMM too: {pids:?}");
    let o = f.runc(&["list", "--format", "json"]);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "vmp" && c["status"] == "paused"),
        "{list}"
    );
    let o = f.runc(&["resume", "vmp"]);
    assert!(o.status.success(), "resume: {}", common::stderr(&o));
    assert_eq!(f.state("vmp")["status"], "running");
    assert!(vmm_cgroup("vmp", "cgroup.events").contains("frozen 0"));
    assert_eq!(
        vmm_cgroup("vmp", "cgroup.threads").lines().count(),
        threads,
        "KVM's kernel thread, out of the cgroup while it froze, is back"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while last_count(&f) <= paused_at {
        assert!(Instant::now() < deadline, "the counter never went on");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = f.runc(&["resume", "vmp"]);
    assert!(
        common::stderr(&o).contains("is running: only a paused container can be resumed"),
        "{}",
        common::stderr(&o)
    );

    // update: what maps changes the VMM's cgroup.
    let o = f.runc(&[
        "update",
        "--memory",
        &(256u64 << 20).to_string(),
        "--cpu-quota",
        "20000",
        "--cpu-share",
        "2048",
        "vmp",
    ]);
    assert!(o.status.success(), "update: {}", common::stderr(&o));
    assert_eq!(
        vmm_cgroup("vmp", "memory.max"),
        ((256 + 64) << 20).to_string()
    );
    assert_eq!(vmm_cgroup("vmp", "cpu.max"), "20000 100000");
    assert_eq!(
        vmm_cgroup("vmp", "cpu.weight"),
        isol_container::cgroups::cpu_weight(2048).to_string()
    );
    // What does not map: one line, nothing changed.
    for (args, needle) in [
        (
            &["update", "--memory", &(64u64 << 20).to_string(), "vmp"][..],
            "memory.limit of 64 MiB is below the VM's RAM (128 MiB, fixed when it booted)",
        ),
        (
            &["update", "--pids-limit", "10", "vmp"][..],
            "linux.resources.pids.limit cannot be updated on the kvm backend",
        ),
        (
            &["update", "--blkio-weight", "100", "vmp"][..],
            "linux.resources.blockIO cannot be updated on the kvm backend",
        ),
    ] {
        let o = f.runc(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let e = common::stderr(&o);
        assert!(e.contains(needle), "{args:?}: {needle:?} not in {e}");
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    }
    assert_eq!(
        vmm_cgroup("vmp", "memory.max"),
        ((256 + 64) << 20).to_string()
    );

    // A paused VM dies of KILL.
    assert!(f.runc(&["pause", "vmp"]).status.success());
    let o = f.runc(&["kill", "vmp", "KILL"]);
    assert!(o.status.success(), "kill: {}", common::stderr(&o));
    assert_eq!(wait_status(pid), 137);
    assert_eq!(f.state("vmp")["status"], "stopped");
    assert!(f.runc(&["delete", "vmp"]).status.success());
    assert_nothing_left(&f, "after KILL of a paused VM");

    // And of delete --force.
    let f = Fixture::new(|v| set_args(v, counter));
    let (ok, err, pid) = f.create("vmq");
    assert!(ok, "create: {err}");
    assert!(f.runc(&["start", "vmq"]).status.success());
    f.wait_output("2");
    assert!(f.runc(&["pause", "vmq"]).status.success());
    assert_eq!(f.state("vmq")["status"], "paused");
    let o = f.runc(&["delete", "--force", "vmq"]);
    assert!(o.status.success(), "delete: {}", common::stderr(&o));
    assert_eq!(wait_status(pid), 137);
    assert_nothing_left(&f, "after delete --force of a paused VM");

    // A VMM without its jail has no cgroup: its vCPUs are parked all the same, and the state
    // comes from the VM's mark.
    let f = Fixture::new(|v| set_args(v, counter));
    let (ok, err, pid) = f.create_env("vmr", &[], &[("ISOL_VMM_JAIL", "off")]);
    assert!(ok, "create: {err}");
    assert!(f.runc(&["start", "vmr"]).status.success());
    f.wait_output("2");
    assert!(!Path::new("/sys/fs/cgroup/isol/vmr").exists());
    let o = f.runc(&["pause", "vmr"]);
    assert!(o.status.success(), "pause: {}", common::stderr(&o));
    assert_eq!(f.state("vmr")["status"], "paused");
    // Nothing frozen: output the guest queued before it was parked may still be written out.
    std::thread::sleep(Duration::from_millis(500));
    let paused_at = last_count(&f);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(last_count(&f), paused_at, "the counter ran while paused");
    assert!(f.runc(&["resume", "vmr"]).status.success());
    assert_eq!(f.state("vmr")["status"], "running");
    let deadline = Instant::now() + Duration::from_secs(60);
    while last_count(&f) <= paused_at {
        assert!(Instant::now() < deadline, "the counter never went on");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(f.runc(&["kill", "vmr", "KILL"]).status.success());
    assert_eq!(wait_status(pid), 137);
    assert!(f.runc(&["delete", "vmr"]).status.success());
    assert_nothing_left(&f, "after a VM without a jail");
}

/// The guest's vCPUs come from the config's CPU limits, as Kata sizes its VM: a quota of
/// 200000 per 100000 µs is 2 vCPUs (and still the VMM's cgroup's quota), a cpuset of two CPUs
/// is 2, no CPU limit 1 (the lab has 2 CPUs). Until 2026-12-07 every guest had one.
#[test]
fn a_vm_has_the_vcpus_of_its_cpu_quota_or_cpuset() {
    let Some(_g) = vm_test() else { return };
    let cases = [
        (
            "quota",
            serde_json::json!({"cpu": {"quota": 200000, "period": 100000}}),
            "2",
        ),
        ("cpuset", serde_json::json!({"cpu": {"cpus": "0-1"}}), "2"),
        ("none", serde_json::json!({}), "1"),
    ];
    for (name, resources, want) in cases {
        let f = Fixture::new(|v| {
            set_args(v, "nproc; grep -c ^processor /proc/cpuinfo");
            v["linux"]["resources"] = resources.clone();
        });
        let id = format!("vmc-{name}");
        let (ok, err, pid) = f.create(&id);
        assert!(ok, "{name}: create: {err}");
        assert!(f.runc(&["start", &id]).status.success());
        assert_eq!(wait_status(pid), 0, "{name}: {}", f.errors());
        assert_eq!(
            f.output(),
            format!("{want}\n{want}\n"),
            "{name}: {}",
            f.errors()
        );
        assert!(f.runc(&["delete", &id]).status.success());
        assert_nothing_left(&f, name);
    }
}

/// `events` of a VM: the VMM's cgroup's statistics (the host's cost of the VM: its memory
/// limit is the guest's RAM and the VMM's margin), refused in one line before `start` (the
/// cgroup is made then); and an OOM kill in that cgroup — its memory.max set below what the
/// VM holds, from outside — is an `oom` event, after which `events` ends with the VM (137).
#[test]
fn events_of_a_vm_are_its_vmm_s_cgroup_s_stats_and_oom_kills() {
    let Some(_g) = vm_test() else { return };
    assert!(
        Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        "this test sets the VMM's cgroup v2 files (the lab's layout)"
    );
    let f = Fixture::new(|v| {
        set_args(v, "echo ready; while :; do sleep 1; done");
        v["linux"]["resources"] = serde_json::json!({"memory": {"limit": 128 << 20}});
    });
    let (ok, err, pid) = f.create("vme");
    assert!(ok, "create: {err}");
    let o = f.runc(&["events", "--stats", "vme"]);
    assert!(!o.status.success());
    let e = common::stderr(&o);
    assert!(e.contains("start it first"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
    assert!(f.runc(&["start", "vme"]).status.success());
    f.wait_output("ready");
    let o = f.runc(&["events", "--stats", "vme"]);
    assert!(o.status.success(), "events: {}", common::stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["type"], "stats");
    assert_eq!(v["id"], "vme");
    let data = &v["data"];
    assert_eq!(
        data["memory"]["usage"]["limit"],
        (128u64 + 64) << 20,
        "the VMM's limit: {data}"
    );
    assert!(
        data["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{data}"
    );
    assert!(
        data["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0,
        "{data}"
    );
    assert!(data["pids"]["current"].as_u64().unwrap_or(0) >= 1, "{data}");

    let events = f
        .command(&["events", "--interval", "1s", "vme"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first stats line says the loop runs.
    std::thread::sleep(Duration::from_secs(2));
    fs::write(
        "/sys/fs/cgroup/isol/vme/memory.max",
        (8u64 << 20).to_string(),
    )
    .expect("memory.max of the VMM's cgroup");
    assert_eq!(wait_status(pid), 137, "{}", f.errors());
    let o = events.wait_with_output().unwrap();
    assert!(o.status.success(), "events: {}", common::stderr(&o));
    let lines: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "stats", "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l == &serde_json::json!({"type": "oom", "id": "vme"})),
        "no oom event: {lines:?}"
    );
    assert!(f.runc(&["delete", "vme"]).status.success());
    assert_nothing_left(&f, "after the VMM's OOM kill");
}

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
            // Taken as given on kvm (no setns), so checked for its type (runtime-tools'
            // `linux_ns_path_type`).
            Box::new(|v| {
                for n in v["linux"]["namespaces"].as_array_mut().unwrap() {
                    if n["type"] == "ipc" {
                        n["path"] = "/proc/self/ns/mnt".into();
                    }
                }
            }),
            "/proc/self/ns/mnt is not the IPC namespace the config says it is (a namespace of another type)",
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
        (
            Box::new(|v| {
                v["linux"]["resources"] = serde_json::json!({"blockIO": {"weight": 100}});
            }),
            "linux.resources.blockIO (the VM has no block device",
        ),
        (
            // A pod sharing its process namespace: a VM's processes cannot be in it.
            Box::new(|v| {
                for n in v["linux"]["namespaces"].as_array_mut().unwrap() {
                    if n["type"] == "pid" {
                        n["path"] = "/proc/self/ns/pid".into();
                    }
                }
            }),
            "joining the PID namespace at /proc/self/ns/pid (linux.namespaces): a VM has its own kernel",
        ),
        (
            Box::new(|v| v["linux"]["sysctl"] = serde_json::json!({"kernel.pid_max": "100000"})),
            "linux.sysctl kernel.pid_max is not in a namespace of the container's own",
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

/// A CRI pod's sandbox (containerd's annotation `io.kubernetes.cri.container-type=sandbox`)
/// under the VM runtime's name is a container: it holds the pod's namespaces for the pod's
/// VMs. Its init is isol's, on the host's kernel; nothing is left.
#[test]
fn a_cri_sandbox_under_the_vm_runtime_name_is_a_container() {
    let _g = common::root_test();
    let f = Fixture::new(|v| {
        v["annotations"] = serde_json::json!({"io.kubernetes.cri.container-type": "sandbox"});
        set_args(v, "cat /proc/1/comm /proc/sys/kernel/osrelease");
    });
    let vm_runtime = f.tmp.path().join("isol-runc-vm");
    std::os::unix::fs::symlink(runc_bin(), &vm_runtime).unwrap();
    let o = Command::new(&vm_runtime)
        .arg("--root")
        .arg(&f.root)
        .args(["run", "--bundle", f.bundle.to_str().unwrap(), "sandbox1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "run: {}", common::stderr(&o));
    let host_kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(common::stdout(&o), format!("isol-init\n{host_kernel}"));
    assert_nothing_left(&f, "after a sandbox under isol-runc-vm");
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
