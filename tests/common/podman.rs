//! podman 4.3 (Debian 12's) with `isol-runc` as its OCI runtime (tests/podman.rs, and
//! tests/oci_vm.rs for the kvm backend): everything of podman's under a temp dir (`--root`,
//! `--runroot`, `--tmpdir`, a containers.conf and storage.conf of its own), the cgroupfs
//! manager, events to a file, no network (`--network none`), a busybox image the test builds
//! (`podman load`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const IMAGE: &str = "localhost/isol-test/busybox:latest";

/// The containers' cgroup parent (`--cgroup-parent`): podman's default with the cgroupfs
/// manager, `libpod_parent`, would stay on the host, as would conmon's cgroup below it.
pub const CGROUP_PARENT: &str = "isol-podman-test";

/// podman's default rlimits (nofile 1048576, nproc 4194304) are above what this sandbox lets
/// a process raise its hard limits to: every run names its own, as the issue says.
/// What every `podman run` gets: no network, the limits above, the test's cgroup parent.
pub const RUN_FLAGS: [&str; 8] = [
    "--network",
    "none",
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1000:1000",
    "--cgroup-parent",
    CGROUP_PARENT,
];

pub struct Podman {
    pub tmp: tempfile::TempDir,
    /// The OCI runtime podman is given (`--runtime`): isol-runc, or a link to it.
    runtime: PathBuf,
}

impl Podman {
    /// podman with `runtime` as its OCI runtime, its busybox test image loaded.
    pub fn new(runtime: &Path) -> Podman {
        Podman::with_network_backend(runtime, "cni")
    }

    /// [`Podman::new`] with `backend` (`cni`, podman 4.3's default in Debian, or `netavark`) as
    /// its network backend.
    pub fn with_network_backend(runtime: &Path, backend: &str) -> Podman {
        super::require_tool("podman");
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path();
        for d in ["root", "runroot", "tmp", "cni", "runtime-root"] {
            fs::create_dir(t.join(d)).unwrap();
        }
        // Nothing of the host's own podman configuration applies: the runtime, the network
        // configuration and the storage are the test's, and its locks are files in its tmpdir
        // (podman's default is a shared memory segment, /dev/shm/libpod_lock, host-wide). The
        // default sysctl is Debian's (/usr/share/containers/containers.conf, which
        // CONTAINERS_CONF keeps podman from reading).
        fs::write(
            t.join("containers.conf"),
            format!(
                "[containers]\ndefault_sysctls = [\"net.ipv4.ping_group_range=0 0\"]\n\n\
                 [network]\nnetwork_backend = \"{backend}\"\nnetwork_config_dir = \"{cni}\"\n\n[engine]\nevents_logger = \"file\"\n\
                 cgroup_manager = \"cgroupfs\"\nruntime = \"isol\"\nlock_type = \"file\"\n\n\
                 [engine.runtimes]\nisol = [\"{runc}\"]\n",
                cni = t.join("cni").display(),
                runc = runtime.display(),
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
        let p = Podman {
            tmp,
            runtime: runtime.to_owned(),
        };
        let archive = super::busybox_docker_archive(p.tmp.path(), IMAGE);
        p.ok(&["load", "-i", archive.to_str().unwrap()]);
        p
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    pub fn command(&self, args: &[&str]) -> Command {
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
            .arg(&self.runtime)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn podman(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("podman runs")
    }

    /// `podman ARGS…`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.podman(args);
        assert!(o.status.success(), "podman {args:?}: {}", super::stderr(&o));
        super::stdout(&o)
    }

    /// `podman run --rm RUN_FLAGS… EXTRA… IMAGE sh -c SCRIPT`.
    pub fn run(&self, extra: &[&str], script: &str) -> Output {
        let mut args = vec!["run", "--rm"];
        args.extend(RUN_FLAGS);
        args.extend(extra);
        args.extend([IMAGE, "sh", "-c", script]);
        self.podman(&args)
    }

    /// Nothing left: no container in podman, no image, no mount below its directories, and
    /// beside conmon's, nothing in the cgroup parent (each container's cgroup went with it).
    pub fn assert_clean(&self) {
        assert_eq!(self.ok(&["ps", "--all", "--quiet"]).trim(), "");
        self.ok(&["rmi", "--all", "--force"]);
        self.ok(&["system", "reset", "--force"]);
        assert_eq!(super::mounts_below(self.tmp.path()), Vec::<String>::new());
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
        let left: Vec<String> = cgroup_parents()
            .iter()
            .flat_map(|p| {
                let procs =
                    |d: &Path| fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                fs::read_dir(p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| format!("{} (procs: {:?})", e.path().display(), procs(&e.path())))
                    .chain([format!("{} (procs: {:?})", p.display(), procs(p))])
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(left.is_empty(), "podman's cgroup parent left: {left:?}");
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Whatever a failed test left: containers first, then podman's mounts of its storage.
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["system", "reset", "--force"]);
        super::unmount_below(self.tmp.path());
        remove_cgroup_parent();
    }
}

/// The cgroup parent in each hierarchy: v1's (one per controller) and v2's.
fn cgroup_parents() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .chain([root.to_path_buf()])
        .map(|h| h.join(CGROUP_PARENT))
        .filter(|p| p.is_dir())
        .collect()
}

/// Removes the cgroup parent and conmon's cgroup in it from every hierarchy, once their
/// processes are gone (conmon may still be ending when podman returns: up to 10 s); the
/// containers' own cgroups are isol-runc's, which `delete` removed.
pub fn remove_cgroup_parent() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        for parent in cgroup_parents() {
            let _ = fs::remove_dir(parent.join("conmon"));
            let _ = fs::remove_dir(&parent);
        }
        if cgroup_parents().is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
