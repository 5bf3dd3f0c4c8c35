//! A containerd 1.6 of the test's own (tests/containerd.rs, tests/cri.rs): its root, state,
//! socket and config in a temp dir whose name holds "isol", so that a mount it leaves (an
//! overlay snapshot, a sandbox's /dev/shm) is one the suites' leftover check reports; and
//! docker-archive images built from the busybox test image, imported with `ctr`.

use std::fs;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A workload for `ctr run -t`: whether its stdin and stdout are a terminal, the terminal's
/// size, exit 6. ctr sizes the terminal once the task has started (as with runc): until then
/// it is 0x0, for which busybox's stty prints only an error (and exits 0), so it waits for a
/// size (5 s at most).
pub const TTY_SCRIPT: &str = "[ -t 0 ] && [ -t 1 ] && echo is-a-tty; i=0; \
     until s=$(stty size 2>/dev/null); [ -n \"$s\" ] || [ $i = 100 ]; do \
     i=$((i+1)); sleep 0.05; done; \
     echo size $s; exit 6";

/// The config's plugin section for a containerd without its CRI plugin (ctr, dockerd).
pub const NO_CRI: &str = "[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable = true\n";

pub struct Containerd {
    pub tmp: tempfile::TempDir,
    daemon: Child,
    /// The containerd namespace `ctr` works in.
    pub namespace: &'static str,
}

impl Containerd {
    /// Starts containerd with `plugins`: the config's plugin sections (TOML), e.g. the CRI
    /// plugin's (`{tmp}` in it is replaced by the temp dir). `namespace` is `ctr`'s.
    pub fn start(namespace: &'static str, plugins: &str) -> Containerd {
        for tool in ["containerd", "ctr"] {
            super::require_tool(tool);
        }
        let tmp = tempfile::Builder::new()
            .prefix("isol-containerd.")
            .tempdir()
            .unwrap();
        let t = tmp.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n[grpc]\n  address = \"{sock}\"\n{plugins}",
            root = t.join("root").display(),
            state = t.join("state").display(),
            sock = t.join("sock").display(),
            plugins = plugins.replace("{tmp}", &t.display().to_string()),
        );
        fs::write(t.join("config.toml"), config).unwrap();
        let log = fs::File::create(t.join("containerd.log")).unwrap();
        let daemon = Command::new("containerd")
            .arg("--config")
            .arg(t.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("containerd starts");
        let c = Containerd {
            tmp,
            daemon,
            namespace,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.ctr(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// containerd's pid.
    pub fn pid(&self) -> u32 {
        self.daemon.id()
    }

    pub fn socket(&self) -> std::path::PathBuf {
        self.tmp.path().join("sock")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.tmp.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.socket())
            .args(["--namespace", self.namespace])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_command(args).output().expect("ctr runs")
    }

    /// A docker-archive of the busybox test image as `name`, its image config's `config`
    /// section being `config` (Cmd, Entrypoint, Env…), imported into `ctr`'s namespace.
    pub fn import_busybox(&self, name: &str, config: serde_json::Value) {
        let slug: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let dir = self.tmp.path().join(format!("image-{slug}"));
        fs::create_dir(&dir).unwrap();
        let archive = super::busybox_docker_archive_with(&dir, name, config);
        let o = self.ctr(&["image", "import", archive.to_str().unwrap()]);
        assert!(o.status.success(), "import: {}", super::stderr(&o));
    }

    /// Waits until the task `id` runs.
    pub fn wait_running(&self, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = self.ctr(&["task", "ls"]);
            let out = super::stdout(&o);
            if out
                .lines()
                .any(|l| l.starts_with(id) && l.contains("RUNNING"))
            {
                return;
            }
            assert!(Instant::now() < deadline, "task {id} never ran: {out}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.daemon.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.daemon.wait();
        // A test that failed half-way leaves tasks behind: their shims outlive containerd and
        // their rootfs overlays stay mounted below the temp dir.
        isol_bench::containerd::release_dir(self.tmp.path());
    }
}
