//! docker 20.10 (Debian 12's docker.io) runs its containers on `isol-runc`, registered as a
//! runtime (`daemon.json` `runtimes`) and picked with `docker run --runtime isol`. The test
//! starts a dockerd of its own: its data root, exec root, pid file, socket and daemon.json in a
//! temp dir, a containerd of its own (tests/common/containerd.rs, `--containerd`), a bridge of
//! its own (`--bridge`, created and deleted here) without iptables rules (`--iptables=false`:
//! nothing of the host's firewall changes), and a cgroup parent of its own. Never the host's
//! /var/lib/docker, /run/docker.sock or docker0, and nothing of it is left running.
//!
//! dockerd sends what runc gets: its seccomp profile, its capability sets (`--user`: a bounding
//! set and nothing permitted), memory+swap, pids, a read-only root, libnetwork's `prestart`
//! hook that wires the container's network namespace to the bridge. Checked: output, exit
//! codes, `-i`, `-t`, `-d` + `exec` + `pause`/`unpause` + `stop` + `logs`, limits, users,
//! capabilities, the default bridge, `--network none` and `host`, and that after dockerd stops
//! nothing is left: no isol-runc state, cgroup, mount, veth or process.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::containerd::Containerd;

const IMAGE: &str = "isol-test/busybox:latest";

/// docker.io's own client: a `docker` earlier on the PATH may be another version's.
const DOCKER: &str = "/usr/bin/docker";

/// The test's bridge (`--bridge`): dockerd's default network uses it instead of making docker0.
const BRIDGE: &str = "isol-dk0";
const GATEWAY: &str = "10.213.0.1";

/// Every container's cgroup parent (dockerd's `--cgroup-parent`; its default, `docker`, is
/// the host's).
const CGROUP_PARENT: &str = "isol-docker-test";

struct Docker {
    tmp: tempfile::TempDir,
    daemon: Option<Child>,
    containerd: Option<Containerd>,
}

impl Docker {
    fn start() -> Docker {
        for tool in ["dockerd", DOCKER] {
            common::require_tool(tool);
        }
        // A bridge left by a test killed half-way goes first.
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
        for args in [
            vec!["link", "add", BRIDGE, "type", "bridge"],
            vec!["addr", "add", "10.213.0.1/24", "dev", BRIDGE],
            vec!["link", "set", BRIDGE, "up"],
        ] {
            let o = Command::new("ip").args(&args).output().unwrap();
            assert!(o.status.success(), "ip {args:?}: {}", common::stderr(&o));
        }
        let containerd = Containerd::start("moby", common::containerd::NO_CRI);
        let tmp = tempfile::Builder::new()
            .prefix("isol-docker.")
            .tempdir()
            .unwrap();
        let t = tmp.path();
        fs::create_dir(t.join("client")).unwrap();
        fs::write(
            t.join("daemon.json"),
            serde_json::json!({
                "runtimes": {"isol": {"path": env!("CARGO_BIN_EXE_isol-runc")}}
            })
            .to_string(),
        )
        .unwrap();
        let log = fs::File::create(t.join("dockerd.log")).unwrap();
        let daemon = Command::new("dockerd")
            .arg("--config-file")
            .arg(t.join("daemon.json"))
            .arg("--data-root")
            .arg(t.join("data"))
            .arg("--exec-root")
            .arg(t.join("exec"))
            .arg("--pidfile")
            .arg(t.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", t.join("docker.sock").display()))
            .arg("--containerd")
            .arg(containerd.socket())
            .args(["--bridge", BRIDGE, "--cgroup-parent", CGROUP_PARENT])
            .args(["--iptables=false", "--ip-masq=false", "--ip-forward=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd starts");
        let d = Docker {
            tmp,
            daemon: Some(daemon),
            containerd: Some(containerd),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.docker(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not come up: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn log(&self) -> String {
        fs::read_to_string(self.tmp.path().join("dockerd.log")).unwrap_or_default()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.env("DOCKER_CONFIG", self.tmp.path().join("client"))
            .arg("-H")
            .arg(format!(
                "unix://{}",
                self.tmp.path().join("docker.sock").display()
            ))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn docker(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("docker runs")
    }

    /// `docker ARGS…`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?}: {}\n{}",
            common::stderr(&o),
            self.log()
        );
        common::stdout(&o)
    }

    /// `docker run --rm --runtime isol EXTRA… IMAGE sh -c SCRIPT`.
    fn run(&self, extra: &[&str], script: &str) -> Output {
        self.run_command(extra, &["sh", "-c", script])
            .output()
            .expect("docker runs")
    }

    /// `docker run --rm --runtime isol EXTRA… IMAGE ARGS…`, to be run.
    fn run_command(&self, extra: &[&str], args: &[&str]) -> Command {
        let mut all = vec!["run", "--rm", "--runtime", "isol"];
        all.extend(extra);
        all.push(IMAGE);
        all.extend(args);
        self.command(&all)
    }

    /// [`Docker::run`], which must exit 0; its stdout.
    fn out(&self, extra: &[&str], script: &str) -> String {
        let o = self.run(extra, script);
        assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
        common::stdout(&o)
    }

    /// The containers' state in the runtimes' roots that dockerd gives its shims
    /// (`<exec-root>/runtime-*/moby/<id>`; 20.10 names them all `runtime-runc`).
    fn runtime_state(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for root in fs::read_dir(self.tmp.path().join("exec"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if root.file_name().to_string_lossy().starts_with("runtime-") {
                let ns = root.path().join("moby");
                out.extend(
                    fs::read_dir(ns)
                        .into_iter()
                        .flatten()
                        .flatten()
                        .map(|e| e.path()),
                );
            }
        }
        out
    }

    /// Stops dockerd (SIGTERM: it stops its containers and waits) and then the containerd.
    fn stop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = d.wait();
        }
        // dockerd keeps its default network namespace bind-mounted in its exec root.
        common::unmount_below(self.tmp.path());
        self.containerd.take();
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        // Whatever a failed test left: containers first, then the daemons, the bridge and the
        // cgroup parent (dockerd makes it in the cpuset hierarchy itself).
        if self.daemon.is_some() {
            let ids = self.docker(&["ps", "--all", "--quiet"]);
            for id in common::stdout(&ids).split_whitespace() {
                let _ = self.docker(&["rm", "--force", id]);
            }
        }
        self.stop();
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
        remove_cgroup_parent();
    }
}

fn remove_cgroup_parent() {
    for e in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let _ = fs::remove_dir(e.path().join(CGROUP_PARENT));
    }
    let _ = fs::remove_dir(Path::new("/sys/fs/cgroup").join(CGROUP_PARENT));
}

/// The links enslaved to the test's bridge (the containers' veths).
fn bridge_ports() -> String {
    let o = Command::new("ip")
        .args(["-o", "link", "show", "master", BRIDGE])
        .output()
        .unwrap();
    common::stdout(&o)
}

#[test]
fn docker_runs_containers_on_isol_runc() {
    let _g = common::root_test();
    let mut d = Docker::start();
    let info = d.ok(&["info", "--format", "{{json .Runtimes}}"]);
    assert!(info.contains("isol-runc"), "{info}");
    let image_dir = d.tmp.path().join("image");
    fs::create_dir(&image_dir).unwrap();
    let archive = common::busybox_docker_archive(&image_dir, IMAGE);
    d.ok(&["load", "-i", archive.to_str().unwrap()]);

    // Output on stdout and stderr apart, the exit status; docker's seccomp profile is on.
    let o = d.run(
        &["--network", "none"],
        "echo hello from $(cat /proc/1/comm); echo to stderr >&2; grep ^Seccomp: /proc/self/status",
    );
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "hello from isol-init\nSeccomp:\t2\n");
    assert_eq!(common::stderr(&o), "to stderr\n");
    let o = d.run(&["--network", "none"], "exit 3");
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));

    // -i: the client's stdin reaches the workload.
    let mut c = d.run_command(
        &["-i", "--network", "none"],
        &["sh", "-c", "read line; echo got $line"],
    );
    let o = common::output_with_stdin(&mut c, b"input\n");
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "got input\n");

    // Limits: memory (and memory+swap, twice it, as docker sends), pids.
    assert_eq!(
        d.out(
        &["--network", "none", "--memory", "64m", "--pids-limit", "20"],
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max; \
         cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max",
    ), format!("{}\n20\n", 64 << 20));

    // --cpuset-cpus and --device: the container runs on CPU 0 only, and has the devices (the
    // host's /dev/fuse with its numbers and mode; /dev/null renamed) that docker's device
    // cgroup rules let it open.
    assert_eq!(
        d.out(
            &[
                "--network",
                "none",
                "--cpuset-cpus",
                "0",
                "--device",
                "/dev/fuse",
                "--device",
                "/dev/null:/dev/xnull",
            ],
            "grep ^Cpus_allowed_list /proc/self/status; stat -c '%F %t:%T %a' /dev/fuse; \
             echo x > /dev/xnull && echo wrote",
        ),
        "Cpus_allowed_list:\t0\ncharacter special file a:e5 600\nwrote\n"
    );

    // Another user, a read-only root, capabilities dropped and added: docker sends a non-root
    // user a bounding set and nothing permitted or effective.
    assert_eq!(
        d.out(
            &[
                "--network",
                "none",
                "--user",
                "1000:1000",
                "--read-only",
                "--cap-drop",
                "ALL",
                "--cap-add",
                "NET_RAW",
            ],
            "id; grep -E '^Cap(Eff|Bnd)' /proc/self/status; touch /x 2>&1 || true",
        ),
        "uid=1000 gid=1000 groups=1000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000002000\n\
         touch: /x: Read-only file system\n"
    );
    assert_eq!(
        d.out(
            &[
                "--network",
                "none",
                "--cap-drop",
                "ALL",
                "--cap-add",
                "NET_RAW",
            ],
            "grep -E '^Cap(Eff|Bnd)' /proc/self/status",
        ),
        "CapEff:\t0000000000002000\nCapBnd:\t0000000000002000\n"
    );

    // The default bridge: libnetwork's prestart hook gives the container its veth on the
    // test's bridge, and the container reaches the gateway.
    assert_eq!(
        d.out(
            &[],
            &format!(
                "ip route | grep ^default; ping -c 1 -W 5 {GATEWAY} >/dev/null && echo reached"
            ),
        ),
        format!("default via {GATEWAY} dev eth0 \nreached\n")
    );
    // --network none: loopback only; host: the host's links.
    let o = d.run(&["--network", "none"], "ls /sys/class/net");
    assert_eq!(common::stdout(&o), "lo\n", "{}", common::stderr(&o));
    let o = d.run(
        &["--network", "host"],
        &format!("ls /sys/class/net | grep -x {BRIDGE}"),
    );
    assert_eq!(
        common::stdout(&o),
        format!("{BRIDGE}\n"),
        "{}",
        common::stderr(&o)
    );

    // -d, exec, pause/unpause, stop (SIGTERM reaches the workload), logs, rm.
    let id = d.ok(&[
        "run",
        "-d",
        "--name",
        "bg",
        "--runtime",
        "isol",
        IMAGE,
        "sh",
        "-c",
        "trap 'echo got TERM; exit 7' TERM; echo started; while :; do sleep 0.1; done",
    ]);
    assert_eq!(id.trim().len(), 64, "{id}");
    let o = d.docker(&[
        "exec",
        "bg",
        "sh",
        "-c",
        "echo exec in $(cat /proc/1/comm); exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "exec: {}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "exec in isol-init\n");
    assert_ne!(bridge_ports(), "", "the container's veth is on the bridge");
    d.ok(&["pause", "bg"]);
    assert_eq!(
        d.ok(&["inspect", "--format", "{{.State.Status}}", "bg"]),
        "paused\n"
    );
    d.ok(&["unpause", "bg"]);
    assert_eq!(
        d.ok(&["inspect", "--format", "{{.State.Status}}", "bg"]),
        "running\n"
    );
    d.ok(&["stop", "--time", "10", "bg"]);
    assert_eq!(
        d.ok(&["inspect", "--format", "{{.State.ExitCode}}", "bg"]),
        "7\n"
    );
    assert_eq!(d.ok(&["logs", "bg"]), "started\ngot TERM\n");
    d.ok(&["rm", "bg"]);
    assert_eq!(bridge_ports(), "", "a veth left on the bridge");

    // -t on a pty: a terminal of the pty's size, the exit status through it.
    let c = d.run_command(&["-it", "--network", "none"], &["sh"]);
    let mut t = common::pty::spawn_command(c, 30, 90);
    // (Its size stays 0x0: docker 20.10 sends no consoleSize, and its client's later resize
    // did not arrive here with runc as the runtime either, 2026-12-07.)
    t.master.write_all(b"tty; echo mark-$((6*7))\n").unwrap();
    t.read_until("mark-42");
    assert!(t.seen.contains("/dev/console"), "{}", t.seen);
    t.master.write_all(b"exit 5\n").unwrap();
    let status = t.child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{}", t.seen);

    // A container left running when dockerd stops: dockerd stops it (SIGTERM), and after the
    // daemon nothing is left.
    d.ok(&[
        "run",
        "-d",
        "--runtime",
        "isol",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "600",
    ]);
    assert_eq!(d.ok(&["ps", "--quiet"]).lines().count(), 1);
    // isol-runc's state of the running container, where dockerd's shim keeps it.
    let state = d.runtime_state();
    assert_eq!(state.len(), 1, "{state:?}");
    assert!(state[0].join("state.json").is_file(), "{state:?}");
    let tmp = d.tmp.path().to_path_buf();
    d.stop();
    assert_eq!(
        d.runtime_state(),
        Vec::<PathBuf>::new(),
        "isol-runc state left"
    );
    assert_eq!(common::mounts_below(&tmp), Vec::<String>::new());
    assert_eq!(bridge_ports(), "", "a veth left on the bridge");
    let o = Command::new("pgrep")
        .args(["-f", &tmp.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(common::stdout(&o), "", "processes left");
    for e in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        for c in fs::read_dir(e.path().join(CGROUP_PARENT))
            .into_iter()
            .flatten()
            .flatten()
        {
            assert!(!c.path().is_dir(), "cgroup left: {}", c.path().display());
        }
    }
    remove_cgroup_parent();
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
    common::assert_no_leftovers("docker");
}
