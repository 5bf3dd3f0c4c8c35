//! The `ctr-run` benchmark: `ctr run --rm IMAGE ID /bin/true`, start → exit, through a real
//! client nobody here wrote — containerd 1.6, its runc v2 shim, `ctr` — with each runtime as the
//! shim's runc binary (`--runc-binary`): isol-runc (the container backend), isol-runc-vm (the
//! same binary under its VM name: the kvm backend) and the peers (runc, crun). What a user of
//! containerd waits for, the clients' own work included.
//!
//! The bench starts a containerd of its own (config, root, state and socket on a tmpfs it
//! mounts in its scratch dir: overlayfs snapshots need a filesystem that is not overlayfs or
//! 9p, which the lab's root is) and imports the bench's busybox image into it, built from the
//! very layers the other benchmarks run. Everything goes with [`Containerd`]'s drop: the
//! daemon, any shim still running for its socket, the mounts below its dir, the cgroups of its
//! namespace.

use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sha2::{Digest, Sha256};

use super::cancel;
use super::reap;
use super::subjects::{Outcome, Subject, SubjectInfo, Workload, check_exit, last_line, timed};

/// containerd's namespace for the bench's containers; runc's and isol-runc's cgroups go under
/// `/<namespace>/<id>` (ctr's default cgroups path), named as the bench's leftovers are.
pub const NAMESPACE: &str = "isol-bench-ctr";
/// The bench's busybox image in containerd.
pub const IMAGE_REF: &str = "isol.bench/busybox:latest";
/// How long containerd gets to answer `ctr version` after its start.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A containerd of the bench's own, with the bench's busybox image imported.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    daemon: Option<Child>,
    /// `containerd --version`, first line.
    pub version: String,
    ctr: PathBuf,
}

impl Containerd {
    /// Starts `containerd` (found in PATH) on a tmpfs at `<work>/containerd` and imports the
    /// image made of `layers` (lowest first) with `env` as its environment. `env_for_shims`:
    /// variables the daemon, and so its shims and the runtimes, get (isol-runc-vm's kernel).
    pub fn start(
        work: &Path,
        layers: &[PathBuf],
        env: &[String],
        env_for_shims: &[(&str, &Path)],
    ) -> Result<Containerd, String> {
        let Some(binary) = super::subjects::find_in_path("containerd") else {
            return Err(
                "not installed: no `containerd` in PATH; install it (apt-get install containerd)"
                    .into(),
            );
        };
        let Some(ctr) = super::subjects::find_in_path("ctr") else {
            return Err("not installed: no `ctr` in PATH (it comes with containerd)".into());
        };
        let version = super::subjects::version_of(&binary)?;
        let dir = work.join("containerd");
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0700"),
        )
        .map_err(|e| format!("cannot mount a tmpfs on {}: {e}", dir.display()))?;
        let mut c = Containerd {
            dir,
            daemon: None,
            version,
            ctr,
        };
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n[grpc]\n  address = \"{sock}\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable = true\n",
            root = c.dir.join("root").display(),
            state = c.dir.join("state").display(),
            sock = c.socket().display(),
        );
        let config_path = c.dir.join("config.toml");
        fs::write(&config_path, config)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;
        let log = fs::File::create(c.dir.join("containerd.log"))
            .map_err(|e| format!("cannot create containerd's log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot create containerd's log: {e}"))?;
        let mut cmd = Command::new(&binary);
        cmd.arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        // containerd dies with the bench, even a SIGKILLed one (the next bench sweeps what
        // its shims kept: `cri::sweep`).
        let die_with_parent = || {
            // SAFETY: prctl with PR_SET_PDEATHSIG takes integers and changes only this
            // (forked) process; it is async-signal-safe.
            if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: the closure only calls prctl, async-signal-safe, as a pre_exec one must.
        unsafe { cmd.pre_exec(die_with_parent) };
        for (k, v) in env_for_shims {
            cmd.env(k, v);
        }
        let daemon = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        cancel::track(daemon.id());
        c.daemon = Some(daemon);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let ok = c
                .ctr_command(&["version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            if Instant::now() > deadline || cancel::cancelled() {
                return Err(format!(
                    "containerd did not answer within {} s: {}",
                    READY_WITHIN.as_secs(),
                    last_line(&c.log())
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        c.import(layers, env)?;
        Ok(c)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address SOCK --namespace NAMESPACE ARGS…`.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("--address")
            .arg(self.socket())
            .args(["--namespace", NAMESPACE])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// The image as a docker archive (`docker save`'s format: one tar per layer, the image
    /// config, `manifest.json`), imported with `ctr image import`.
    fn import(&self, layers: &[PathBuf], env: &[String]) -> Result<(), String> {
        let image = self.dir.join("image");
        fs::create_dir_all(&image)
            .map_err(|e| format!("cannot create {}: {e}", image.display()))?;
        let mut names = Vec::new();
        let mut diff_ids = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            let name = format!("layer{i}.tar");
            let archive = image.join(&name);
            tar(layer, &archive)?;
            diff_ids.push(format!("sha256:{}", sha256_file(&archive)?));
            names.push(name);
        }
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": env, "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string();
        let config_name = format!("{}.json", hex::encode(Sha256::digest(config.as_bytes())));
        let manifest = serde_json::json!([
            {"Config": config_name, "RepoTags": [IMAGE_REF], "Layers": names}
        ])
        .to_string();
        for (name, text) in [(config_name.as_str(), config), ("manifest.json", manifest)] {
            fs::write(image.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))?;
        }
        let archive = self.dir.join("image.tar");
        tar(&image, &archive)?;
        let _ = fs::remove_dir_all(&image);
        let out = self
            .ctr_command(&["image", "import"])
            .arg(&archive)
            .output()
            .map_err(|e| format!("cannot run ctr: {e}"))?;
        let _ = fs::remove_file(&archive);
        if !out.status.success() {
            return Err(format!(
                "`ctr image import` of the bench's busybox failed: {}",
                last_line(&String::from_utf8_lossy(&out.stderr))
            ));
        }
        Ok(())
    }

    /// Removes container `id` and its task, when a failed run left them.
    fn forget(&self, id: &str) {
        for args in [
            &["task", "delete", "--force", id][..],
            &["container", "rm", id],
        ] {
            let _ = self
                .ctr_command(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            let pid = daemon.id();
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            let mut daemon = daemon;
            if reap::wait_until(&mut daemon, Instant::now() + Duration::from_secs(10)).is_none() {
                reap::stop_one(daemon);
            }
            cancel::untrack(pid);
        }
        release(&self.dir);
    }
}

/// What a [`Containerd`] at `dir` left, the daemon gone: its shims (a failed run's task, or
/// all of them after a SIGKILLed bench) and their containers, its mounts and directory, and
/// the cgroups of its namespace (runc removes a container's cgroup, not the namespace's above
/// it: on cgroup v2 `/sys/fs/cgroup/<namespace>`, on v1 the same in each hierarchy).
pub(crate) fn release(dir: &Path) {
    super::cri::release_daemon_dir(dir);
    super::cri::end_cgroup_tree(NAMESPACE);
}

/// `tar -cf ARCHIVE` of everything in `dir`, with numeric owners (a layer's files keep theirs).
fn tar(dir: &Path, archive: &Path) -> Result<(), String> {
    let out = Command::new("tar")
        .arg("--numeric-owner")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(archive)
        .arg(".")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot archive {}: {}",
            dir.display(),
            last_line(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    Ok(())
}

/// The pids of the runc v2 shims started for containerd's socket `address`.
fn sha256_file(path: &Path) -> Result<String, String> {
    let mut f = fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// One runtime as the shim's runc binary: `ctr run --rm --runc-binary RUNTIME IMAGE ID CMD…`.
#[derive(Debug)]
pub struct CtrSubject {
    info: SubjectInfo,
    ctrd: Rc<Containerd>,
    runtime: PathBuf,
    seq: u64,
}

impl CtrSubject {
    /// `name` (`isol-runc`, `isol-runc-vm`, `runc`, `crun`) running `runtime`.
    pub fn new(
        ctrd: Rc<Containerd>,
        name: &str,
        runtime: PathBuf,
        kind: &'static str,
        backend: &'static str,
        version: String,
    ) -> CtrSubject {
        let label = match kind {
            "isol" => format!("{name} {} ({backend})", env!("CARGO_PKG_VERSION")),
            _ => format!("{name} {}", super::subjects::short_version(&version)),
        };
        CtrSubject {
            info: SubjectInfo {
                name: name.into(),
                label,
                kind,
                backend: Some(backend),
                command: format!(
                    "ctr --address SOCK --namespace {NAMESPACE} run --rm --runc-binary {} {IMAGE_REF} ID CMD",
                    runtime.display()
                ),
                rootfs: format!(
                    "containerd's overlayfs snapshot of the image (made and removed by containerd inside the timed run), {}",
                    if backend == "kvm" {
                        "shared with the VM over virtio-fs"
                    } else {
                        "the container's root"
                    }
                ),
                version: format!("{version}; {}", ctrd.version),
            },
            ctrd,
            runtime,
            seq: 0,
        }
    }
}

impl Subject for CtrSubject {
    fn info(&self) -> &SubjectInfo {
        &self.info
    }

    fn run(&mut self, w: &Workload) -> Result<Outcome, String> {
        self.seq += 1;
        let id = format!("{}-{}", self.info.name, self.seq);
        let runtime = self.runtime.display().to_string();
        // The runtimes' state goes under the daemon's tmpfs, not the host's /run/containerd/runc.
        let root = self.ctrd.dir.join("runc").display().to_string();
        let mut args = vec![
            "run",
            "--rm",
            "--runc-binary",
            &runtime,
            "--runc-root",
            &root,
            IMAGE_REF,
            &id,
        ];
        args.extend(w.args.iter().map(String::as_str));
        let res = timed(&mut self.ctrd.ctr_command(&args));
        let checked = res.and_then(|(wall_ms, status, stderr)| {
            check_exit("ctr run", status, w, &stderr).map(|()| wall_ms)
        });
        match checked {
            Ok(wall_ms) => Ok(Outcome {
                wall_ms,
                phases: None,
                prep_ms: None,
                cleanup_ms: None,
            }),
            Err(e) => {
                self.ctrd.forget(&id);
                Err(e)
            }
        }
    }
}
