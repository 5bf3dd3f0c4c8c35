//! podman 4.3 (Debian 12's) drives `isol-runc` as its OCI runtime (`--runtime`), through
//! conmon, as it drives runc: everything of podman's under a temp dir (`--root`, `--runroot`,
//! `--tmpdir`, a containers.conf and storage.conf of its own), the cgroupfs manager, events to
//! a file, no network (`--network none`), a busybox image the test builds (`podman load`).
//! podman sends its own seccomp profile, sysctls and rlimits: isol-runc honours them. Checked:
//! `run --rm` output and exit codes, `run -d` + `exec` + `stop`, `run -it` on a pty, and that
//! nothing is left behind, on the host or in podman's state.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const IMAGE: &str = "localhost/isol-test/busybox:latest";

/// The containers' cgroup parent (`--cgroup-parent`): podman's default with the cgroupfs
/// manager, `libpod_parent`, would stay on the host, as would conmon's cgroup below it.
const CGROUP_PARENT: &str = "isol-podman-test";

/// podman's default rlimits (nofile 1048576, nproc 4194304) are above what this sandbox lets
/// a process raise its hard limits to: every run names its own, as the issue says.
/// What every `podman run` gets: no network, the limits above, the test's cgroup parent.
const RUN_FLAGS: [&str; 8] = [
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1000:1000",
    "--cgroup-parent",
    CGROUP_PARENT,
];

struct Podman {
    tmp: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        common::require_tool("podman");
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        for d in ["root", "runroot", "tmp", "cni", "runtime-root"] {
            fs::create_dir(t.join(d)).unwrap();
        }
        // Nothing of the host's own podman configuration applies: the runtime, the network
        // configuration and the storage are the test's, and its locks are files in its tmpdir
        // (podman's default is a shared memory segment, /dev/shm/libpod_lock, host-wide).
        fs::write(
            t.join("containers.conf"),
            format!(
                "[network]\nnetwork_config_dir = \"{cni}\"\n\n[engine]\nevents_logger = \"file\"\n\
                 cgroup_manager = \"cgroupfs\"\nruntime = \"isol\"\nlock_type = \"file\"\n\n\
                 [engine.runtimes]\nisol = [\"{runc}\"]\n",
                cni = t.join("cni").display(),
                runc = env!("CARGO_BIN_EXE_isol-runc"),
            ),
        )
        .unwrap();
        fs::write(
            t.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"overlay\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                t.join("root").display(),
                t.join("runroot").display()
            ),
        )
        .unwrap();
        fs::write(
            t.join("registries.conf"),
            "unqualified-search-registries = []\n",
        )
        .unwrap();
        Podman { tmp }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("runroot"))
            .arg("--tmpdir")
            .arg(self.path("tmp"))
            .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
            .arg("--runtime")
            .arg(env!("CARGO_BIN_EXE_isol-runc"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn podman(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("podman runs")
    }

    /// `podman ARGS…`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.podman(args);
        assert!(
            o.status.success(),
            "podman {args:?}: {}",
            common::stderr(&o)
        );
        common::stdout(&o)
    }

    /// `podman run --rm RUN_FLAGS… EXTRA… IMAGE sh -c SCRIPT`.
    fn run(&self, extra: &[&str], script: &str) -> Output {
        let mut args = vec!["run", "--rm"];
        args.extend(RUN_FLAGS);
        args.extend(extra);
        args.extend([IMAGE, "sh", "-c", script]);
        self.podman(&args)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Whatever a failed test left: containers first, then podman's mounts of its storage.
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["system", "reset", "--force"]);
        common::unmount_below(self.tmp.path());
        remove_cgroup_parent();
    }
}

/// Removes the cgroup parent and conmon's cgroup in it from every hierarchy, once their
/// processes are gone; the containers' own cgroups are isol-runc's, which `delete` removed.
fn remove_cgroup_parent() {
    for e in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let parent = e.path().join(CGROUP_PARENT);
        let _ = fs::remove_dir(parent.join("conmon"));
        let _ = fs::remove_dir(&parent);
    }
    let _ = fs::remove_dir(
        Path::new("/sys/fs/cgroup")
            .join(CGROUP_PARENT)
            .join("conmon"),
    );
}

#[test]
fn podman_runs_containers_on_isol_runc() {
    let _g = common::root_test();
    let p = Podman::new();
    let archive = common::busybox_docker_archive(p.tmp.path(), IMAGE);
    p.ok(&["load", "-i", archive.to_str().unwrap()]);

    // run --rm: the output and the exit status; podman's seccomp profile is on.
    let o = p.run(
        &[],
        "echo hello from $(cat /proc/1/comm); grep ^Seccomp: /proc/self/status; exit 0",
    );
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "hello from isol-init\nSeccomp:\t2\n");
    let o = p.run(&[], "exit 3");
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    // The limits and sysctls podman was asked for.
    let o = p.run(
        &[
            "--sysctl",
            "net.ipv4.ping_group_range=0 0",
            "--sysctl",
            "kernel.shmmax=65536",
        ],
        "ulimit -n; ulimit -u; cat /proc/sys/net/ipv4/ping_group_range /proc/sys/kernel/shmmax",
    );
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "1024\n1000\n0\t0\n65536\n");

    // run -d, exec (its output and status), stop (SIGTERM: 143), rm.
    let mut args = vec!["run", "-d", "--name", "bg"];
    args.extend(RUN_FLAGS);
    args.extend([IMAGE, "sleep", "60"]);
    let id = p.ok(&args);
    assert_eq!(id.trim().len(), 64, "{id}");
    let o = p.podman(&[
        "exec",
        "bg",
        "sh",
        "-c",
        "echo exec in $(cat /proc/1/comm); exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "exec: {}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "exec in isol-init\n");
    p.ok(&["stop", "--time", "5", "bg"]);
    let code = p.ok(&["inspect", "--format", "{{.State.ExitCode}}", "bg"]);
    assert_eq!(code.trim(), "143");
    p.ok(&["rm", "bg"]);

    // run -it on a pty: a terminal of the pty's size, the exit status through it.
    let mut args = vec!["run", "--rm", "-it"];
    args.extend(RUN_FLAGS);
    args.extend([IMAGE, "sh"]);
    let mut t = common::pty::spawn_command(p.command(&args), 30, 90);
    t.master
        .write_all(b"stty size; tty; echo mark-$((6*7))\n")
        .unwrap();
    t.read_until("mark-42");
    assert!(t.seen.contains("30 90"), "{}", t.seen);
    // isol binds the terminal at /dev/console, as runc does.
    assert!(t.seen.contains("/dev/console"), "{}", t.seen);
    t.master.write_all(b"exit 5\n").unwrap();
    let status = t.child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{}", t.seen);

    // Nothing left: no container in podman, no isol-runc state, nothing on the host.
    assert_eq!(p.ok(&["ps", "--all", "--quiet"]).trim(), "");
    p.ok(&["rmi", "--all", "--force"]);
    p.ok(&["system", "reset", "--force"]);
    assert_eq!(common::mounts_below(p.tmp.path()), Vec::<String>::new());
    // Beside conmon's, nothing in the cgroup parent: each container's cgroup went with it.
    for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for c in fs::read_dir(e.path().join(CGROUP_PARENT))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = c.file_name().to_string_lossy().into_owned();
            assert!(
                !c.path().is_dir() || name == "conmon",
                "cgroup left: {}",
                c.path().display()
            );
        }
    }
    remove_cgroup_parent();
    common::assert_no_leftovers("podman");
}
