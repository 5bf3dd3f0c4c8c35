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

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::rc::Rc;

use super::containerd::Containerd;
use super::subjects::{Outcome, Subject, SubjectInfo, Workload, check_exit, timed};

/// containerd's namespace for the bench's containers; runc's and isol-runc's cgroups go under
/// `/<namespace>/<id>` (ctr's default cgroups path), named as the bench's leftovers are.
pub const NAMESPACE: &str = "isol-bench-ctr";
/// The bench's busybox image in containerd.
pub const IMAGE_REF: &str = "isol.bench/busybox:latest";

/// Starts a containerd of the bench's own on a tmpfs at `<work>/containerd` and imports the
/// image made of `layers` (lowest first) with `env` as its environment; isol-runc-vm boots
/// `kernel`.
pub fn start(
    work: &Path,
    layers: &[PathBuf],
    env: &[String],
    kernel: Option<&Path>,
) -> Result<Containerd, String> {
    let mut c = Containerd::new(work.join("containerd"), NAMESPACE, NAMESPACE, None)?;
    c.start(kernel)?;
    c.import(
        IMAGE_REF,
        layers,
        serde_json::json!({"Env": env, "Cmd": ["sh"]}),
    )?;
    Ok(c)
}

/// Removes container `id` and its task, when a failed run left them.
fn forget(c: &Containerd, id: &str) {
    for args in [
        &["task", "delete", "--force", id][..],
        &["container", "rm", id],
    ] {
        let _ = c
            .ctr_command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// What the containerd of the bench whose scratch directory is `work` left, the daemon gone:
/// see [`super::containerd::release`]; its containers' cgroups are below `/<namespace>`.
pub(crate) fn release(work: &Path) {
    super::containerd::release(&work.join("containerd"), NAMESPACE);
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
        let root = self.ctrd.dir().join("runc").display().to_string();
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
                forget(&self.ctrd, &id);
                Err(e)
            }
        }
    }
}
