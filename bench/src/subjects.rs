//! The things a benchmark times: isol itself, run as a user would; peer runtimes (crun,
//! runc) given the same image as an OCI bundle; and QEMU `-M microvm` booting the same guest
//! as isol's kvm backend (kernel, initramfs, root disk: [`crate::qemu_microvm`]).
//!
//! Every run of every subject goes through [`timed`]: the wall time from just before the spawn
//! to just after `wait` returns, stdin and stdout on /dev/null, stderr on a pipe read to the end
//! (isol's `--json` line, or the runtime's error), the process in its own process group.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::statfs::{OVERLAYFS_SUPER_MAGIC, statfs};
use serde::Serialize;

use super::cancel;
use super::oci;
use super::qemu_microvm::{self, Measured, Microvm, Qemu, QemuEnd};
use super::reap;

/// What to run in the container, and the exit code that proves it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub args: Vec<String>,
    pub expect: i32,
}

/// One run of one subject.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Spawn → exit, in milliseconds.
    pub wall_ms: f64,
    /// isol's own start phases (from `--json`), in its order.
    pub phases: Option<Vec<(String, f64)>>,
    /// Untimed preparation before the run (a peer's overlay root: mkdir, mount), in ms.
    pub prep_ms: Option<f64>,
    /// Untimed cleanup after the run (a peer's overlay root: unmount, removal), in ms.
    pub cleanup_ms: Option<f64>,
}

/// What a subject is, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct SubjectInfo {
    /// Short name: `isol`, `crun`, `runc`.
    pub name: String,
    /// Name and version, for tables: `crun 1.8.1`.
    pub label: String,
    /// `isol` or `peer`.
    pub kind: &'static str,
    /// The isol backend measured (`container`, `kvm`), for isol subjects; for peers, the
    /// backend they are compared with (crun, runc: `container`; qemu: `kvm`).
    pub backend: Option<&'static str>,
    /// `--version` of the program, first line.
    pub version: String,
    /// The command that is timed, with placeholders for per-run values.
    pub command: String,
    /// How the subject gets its root filesystem.
    pub rootfs: String,
}

/// A subject of a benchmark.
pub trait Subject {
    fn info(&self) -> &SubjectInfo;
    /// Runs `w` once and checks its exit code.
    fn run(&mut self, w: &Workload) -> Result<Outcome, String>;
    /// Runs `w` once before timing, proving that the workload really runs in the subject.
    fn preflight(&mut self, w: &Workload) -> Result<(), String> {
        self.run(w).map(|_| ())
    }
    /// For VMMs: the command that runs `w` in a VM of [`VM_MEMORY_MIB`], exiting 0.
    fn vm_command(&mut self, _w: &Workload) -> Option<Result<Command, String>> {
        None
    }
    /// For peer VMMs: the command that runs `w` with its stdin, stdout and stderr on the
    /// command's own, as `isol run -i` gives them (the density benchmark's idle instances).
    fn stdio_command(&mut self, _w: &Workload) -> Option<Result<Command, String>> {
        None
    }
}

/// Guest RAM of both VMMs in the start benchmark: isol's kvm default.
pub const VM_MEMORY_MIB: u32 = 256;

/// Runs `cmd` to completion, timed: see the module documentation.
pub(crate) fn timed(cmd: &mut Command) -> Result<(f64, ExitStatus, String), String> {
    timed_to(cmd, Stdio::null())
}

/// [`timed`], with the process's stdout on `stdout`.
fn timed_to(cmd: &mut Command, stdout: Stdio) -> Result<(f64, ExitStatus, String), String> {
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .process_group(0);
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    cancel::arm(child.id());
    // The watchdog kills the run's process group at RUN_TIMEOUT; waiting is bounded beyond
    // that too, for a process that SIGKILL does not end (stuck in the kernel).
    let pipes: Vec<_> = child.stderr.take().into_iter().collect();
    let (status, mut out) = reap::wait_reading(&mut child, pipes, t0 + cancel::WAIT_LIMIT);
    let wall = t0.elapsed();
    let status = cancel::settle(child, status, "the run did not finish")?;
    Ok((
        wall.as_secs_f64() * 1e3,
        status,
        String::from_utf8_lossy(&out.pop().unwrap_or_default()).into_owned(),
    ))
}

/// The last non-empty line of a program's stderr, for error messages.
pub(crate) fn last_line(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('{'))
        .unwrap_or("no error output")
}

pub(crate) fn check_exit(
    what: &str,
    status: ExitStatus,
    w: &Workload,
    stderr: &str,
) -> Result<(), String> {
    if status.code() == Some(w.expect) {
        return Ok(());
    }
    Err(format!(
        "`{what} {}` ended with {status} instead of exit status {}: {}",
        w.args.join(" "),
        w.expect,
        last_line(stderr)
    ))
}

/// The order in which isol's container runtime reports its phases (see container/process.rs).
/// `isol run` takes the init's sealed copy, started with the run, before the clone; where the
/// copy is made after the clone (isol-runc), it comes after `rootfs`.
const PHASE_ORDER: &[&str] = &[
    "cgroup",
    "prepare",
    "sealed-copy",
    "namespaces",
    "cgroup-attach",
    "network",
    "child-prepare",
    "rootfs",
    "security",
    "seccomp",
    "exec",
    "run",
    "teardown",
];

/// The kvm backend's start phases from its `--json` `timeline_ms` (offsets from VMM start):
/// VMM setup, kernel boot, init, workload, exit.
fn parse_timeline(stderr: &str) -> Option<Vec<(String, f64)>> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let t = v.get("timeline_ms")?;
    let at = |k: &str| t.get(k).and_then(serde_json::Value::as_f64);
    let marks = [
        ("vmm-setup", Some(0.0), at("first_vcpu_entry")),
        ("kernel-boot", at("first_vcpu_entry"), at("init_start")),
        ("init", at("init_start"), at("workload_start")),
        ("workload", at("workload_start"), at("workload_exit")),
        ("vm-exit", at("workload_exit"), at("vm_exit")),
    ];
    let phases: Vec<(String, f64)> = marks
        .iter()
        .filter_map(|(name, a, b)| Some((name.to_string(), (b.as_ref()? - a.as_ref()?).max(0.0))))
        .collect();
    (!phases.is_empty()).then_some(phases)
}

/// isol's phases from its `--json` stderr line, in the runtime's order (unknown ones last).
fn parse_phases(stderr: &str) -> Option<Vec<(String, f64)>> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v.get("timeline_ms").is_some() {
        return parse_timeline(stderr);
    }
    let map = v.get("phases_ms")?.as_object()?;
    let mut phases: Vec<(String, f64)> = map
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect();
    let rank = |name: &str| {
        PHASE_ORDER
            .iter()
            .position(|p| *p == name)
            .unwrap_or(PHASE_ORDER.len())
    };
    phases.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then(a.0.cmp(&b.0)));
    Some(phases)
}

/// isol, spawned as a user runs it: `isol run --json IMAGE CMD…` with the bench's store.
#[derive(Debug)]
pub struct IsolSubject {
    info: SubjectInfo,
    exe: PathBuf,
    store_root: PathBuf,
    image: String,
    /// `Some(kernel)` for the kvm backend.
    kvm_kernel: Option<PathBuf>,
}

impl IsolSubject {
    pub fn new(exe: PathBuf, store_root: PathBuf, image: &str) -> IsolSubject {
        IsolSubject {
            info: SubjectInfo {
                name: "isol".into(),
                label: format!("isol {} (container)", env!("CARGO_PKG_VERSION")),
                kind: "isol",
                backend: Some("container"),
                version: format!("isol {}", env!("CARGO_PKG_VERSION")),
                command: format!(
                    "ISOL_HOME={} {} run --json {image} CMD",
                    store_root.display(),
                    exe.display()
                ),
                rootfs: "its own: overlayfs of the image layer with a fresh upper dir, mounted by isol inside the timed run".into(),
            },
            exe,
            store_root,
            image: image.into(),
            kvm_kernel: None,
        }
    }

    /// isol's kvm backend, booting `kernel` with [`VM_MEMORY_MIB`] of guest RAM.
    pub fn kvm(exe: PathBuf, store_root: PathBuf, image: &str, kernel: PathBuf) -> IsolSubject {
        IsolSubject {
            info: SubjectInfo {
                name: "isol-kvm".into(),
                label: format!("isol {} (kvm)", env!("CARGO_PKG_VERSION")),
                kind: "isol",
                backend: Some("kvm"),
                version: format!("isol {}", env!("CARGO_PKG_VERSION")),
                command: format!(
                    "ISOL_HOME={} {} run --backend kvm --kernel {} --memory {VM_MEMORY_MIB}m --json {image} CMD",
                    store_root.display(),
                    exe.display(),
                    kernel.display()
                ),
                rootfs: "the image's layers as a cached read-only ext4 virtio-blk disk, with a tmpfs upper layer in guest RAM".into(),
            },
            exe,
            store_root,
            image: image.into(),
            kvm_kernel: Some(kernel),
        }
    }
}

impl IsolSubject {
    fn command(&self, w: &Workload) -> Command {
        let mut cmd = Command::new(&self.exe);
        cmd.env("ISOL_HOME", &self.store_root).arg("run");
        if let Some(k) = &self.kvm_kernel {
            cmd.args(["--backend", "kvm", "--kernel"])
                .arg(k)
                .args(["--memory", &format!("{VM_MEMORY_MIB}m")]);
        }
        cmd.args(["--json", &self.image]).args(&w.args);
        cmd
    }
}

impl Subject for IsolSubject {
    fn info(&self) -> &SubjectInfo {
        &self.info
    }

    fn run(&mut self, w: &Workload) -> Result<Outcome, String> {
        let (wall_ms, status, stderr) = timed(&mut self.command(w))?;
        check_exit("isol run", status, w, &stderr)?;
        let phases = parse_phases(&stderr).ok_or_else(|| {
            format!(
                "`isol run --json` printed no phases on stderr: {}",
                last_line(&stderr)
            )
        })?;
        Ok(Outcome {
            wall_ms,
            phases: Some(phases),
            prep_ms: None,
            cleanup_ms: None,
        })
    }

    fn vm_command(&mut self, w: &Workload) -> Option<Result<Command, String>> {
        self.kvm_kernel.is_some().then(|| Ok(self.command(w)))
    }
}

/// An OCI runtime (crun, runc) run as `RUNTIME --root STATE run --bundle BUNDLE ID`, with a
/// fresh overlay root per run mounted by the bench before the timed run, like a container
/// engine's snapshotter does.
#[derive(Debug)]
pub struct OciPeer {
    info: SubjectInfo,
    binary: PathBuf,
    dir: PathBuf,
    bundle: PathBuf,
    rootfs: PathBuf,
    state: PathBuf,
    layers: Vec<PathBuf>,
    env: Vec<String>,
    config_for: Option<Vec<String>>,
    mounted: bool,
    /// The scratch dir is overlayfs or 9p (the lab), which cannot hold an overlay's upper
    /// dir: each run's upper and work dirs go on a tmpfs mounted on its run dir, as isol
    /// does for its own writable layer there.
    upper_on_tmpfs: bool,
    /// That tmpfs is mounted now.
    run_tmpfs: Option<PathBuf>,
    seq: u64,
}

/// 9p's statfs magic (the lab's root is the host's / through 9p, under an overlay).
const V9FS_MAGIC: i64 = 0x0102_1997;

/// Whether an overlay's upper dir cannot be on the filesystem of `dir`.
fn needs_tmpfs_upper(dir: &Path) -> bool {
    statfs(dir).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == OVERLAYFS_SUPER_MAGIC || t.0 == V9FS_MAGIC
    })
}

impl OciPeer {
    /// Sets up `<work>/<name>/{bundle/rootfs,state}` for `binary`.
    pub fn new(
        name: &str,
        binary: PathBuf,
        version: String,
        work: &Path,
        layers: Vec<PathBuf>,
        env: Vec<String>,
    ) -> Result<OciPeer, String> {
        let dir = work.join(name);
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        let state = dir.join("state");
        for d in [&rootfs, &state] {
            fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let upper_on_tmpfs = needs_tmpfs_upper(&dir);
        Ok(OciPeer {
            info: SubjectInfo {
                name: name.into(),
                label: format!("{name} {}", short_version(&version)),
                kind: "peer",
                backend: Some("container"),
                version,
                command: format!(
                    "{} --root {} run --bundle {} ID",
                    binary.display(),
                    state.display(),
                    bundle.display()
                ),
                rootfs: format!(
                    "overlayfs of the same image layer with a fresh upper dir{}, mounted by the bench before the timed run and unmounted after it",
                    if upper_on_tmpfs {
                        " on a tmpfs of its own (the scratch dir is overlayfs/9p here, which cannot hold an upper dir; isol does the same)"
                    } else {
                        ""
                    }
                ),
            },
            binary,
            dir,
            bundle,
            rootfs,
            state,
            layers,
            env,
            config_for: None,
            mounted: false,
            upper_on_tmpfs,
            run_tmpfs: None,
            seq: 0,
        })
    }

    fn write_config(&mut self, w: &Workload) -> Result<(), String> {
        if self.config_for.as_ref() == Some(&w.args) {
            return Ok(());
        }
        let path = self.bundle.join("config.json");
        let text = serde_json::to_string_pretty(&oci::config(&w.args, &self.env))
            .map_err(|e| e.to_string())?;
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        self.config_for = Some(w.args.clone());
        Ok(())
    }

    /// Mounts a fresh overlay on the bundle's rootfs, with its upper and work dirs in `run_dir`.
    fn mount_root(&mut self, run_dir: &Path) -> Result<(), String> {
        if self.upper_on_tmpfs {
            fs::create_dir_all(run_dir)
                .map_err(|e| format!("cannot create {}: {e}", run_dir.display()))?;
            mount(
                Some("tmpfs"),
                run_dir,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some("mode=0700"),
            )
            .map_err(|e| format!("cannot mount a tmpfs on {}: {e}", run_dir.display()))?;
            self.run_tmpfs = Some(run_dir.to_path_buf());
        }
        let (upper, work) = (run_dir.join("upper"), run_dir.join("work"));
        for d in [&upper, &work] {
            fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
        }
        let lower: Vec<String> = self
            .layers
            .iter()
            .rev()
            .map(|l| l.display().to_string())
            .collect();
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            &self.rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(opts.as_str()),
        )
        .map_err(|e| format!("cannot mount the overlay root for {}: {e}", self.info.name))?;
        self.mounted = true;
        Ok(())
    }

    /// Deletes container `id` if the runtime kept it, unmounts the root, removes `run_dir`.
    fn after_run(&mut self, id: &str, run_dir: &Path) -> Result<(), String> {
        let mut first_err = None;
        if self.state.join(id).exists()
            && let Err(e) = self.delete(id)
        {
            first_err.get_or_insert(e);
        }
        // A runtime that failed half-way may have made its cgroups and no state to delete them
        // by (crun refused by a real-time scheduling policy leaves one per v1 hierarchy).
        remove_peer_cgroups(Path::new("/sys/fs/cgroup"), id);
        if self.mounted {
            match umount2(&self.rootfs, MntFlags::MNT_DETACH) {
                Ok(()) => self.mounted = false,
                Err(e) => {
                    first_err
                        .get_or_insert(format!("cannot unmount {}: {e}", self.rootfs.display()));
                }
            }
        }
        if let Some(t) = self.run_tmpfs.take()
            && let Err(e) = umount2(&t, MntFlags::MNT_DETACH)
        {
            first_err.get_or_insert(format!("cannot unmount {}: {e}", t.display()));
        }
        if let Err(e) = fs::remove_dir_all(run_dir)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            first_err.get_or_insert(format!("cannot remove {}: {e}", run_dir.display()));
        }
        first_err.map_or(Ok(()), Err)
    }

    fn delete(&self, id: &str) -> Result<(), String> {
        let out = Command::new(&self.binary)
            .arg("--root")
            .arg(&self.state)
            .args(["delete", "-f", id])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {} delete: {e}", self.info.name))?;
        if !out.status.success() {
            return Err(format!(
                "`{} delete -f {id}` failed: {}",
                self.info.name,
                last_line(&String::from_utf8_lossy(&out.stderr))
            ));
        }
        Ok(())
    }

    /// Removes every container still in the state dir, the root mount and the subject's dir.
    fn close(&mut self) {
        if let Ok(entries) = fs::read_dir(&self.state) {
            for e in entries.flatten() {
                if e.path().is_dir()
                    && let Some(id) = e.file_name().to_str()
                {
                    let _ = self.delete(id);
                }
            }
        }
        if self.mounted && umount2(&self.rootfs, MntFlags::MNT_DETACH).is_ok() {
            self.mounted = false;
        }
        if let Some(t) = self.run_tmpfs.take()
            && umount2(&t, MntFlags::MNT_DETACH).is_err()
        {
            self.run_tmpfs = Some(t);
        }
        if !self.mounted && self.run_tmpfs.is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes the cgroup `id` that a peer runtime makes by default (no `cgroupsPath`: the
/// container's id under the root of each hierarchy) below `root`, in every v1 hierarchy and
/// in the unified one, with the cgroups below it, where one is left. Best effort: a runtime
/// that is still removing its own (crun on a hybrid host's unified hierarchy) may be a step
/// ahead, and one still busy is the runtime's to report.
fn remove_peer_cgroups(root: &Path, id: &str) {
    fn remove_tree(dir: &Path) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
        let _ = fs::remove_dir(dir);
    }
    let hierarchies = fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .chain([root.to_path_buf()]);
    for h in hierarchies {
        let dir = h.join(id);
        if dir.is_dir() {
            remove_tree(&dir);
        }
    }
}

impl Subject for OciPeer {
    fn info(&self) -> &SubjectInfo {
        &self.info
    }

    fn run(&mut self, w: &Workload) -> Result<Outcome, String> {
        self.write_config(w)?;
        self.seq += 1;
        let id = format!(
            "isol-bench-{}-{}-{}",
            std::process::id(),
            self.info.name,
            self.seq
        );
        let run_dir = self.dir.join(format!("run-{}", self.seq));
        let t_prep = Instant::now();
        if let Err(e) = self.mount_root(&run_dir) {
            let _ = self.after_run(&id, &run_dir);
            return Err(e);
        }
        let prep_ms = t_prep.elapsed().as_secs_f64() * 1e3;

        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.state)
            .args(["run", "--bundle"])
            .arg(&self.bundle)
            .arg(&id);
        let res = timed(&mut cmd);

        let t_cleanup = std::time::Instant::now();
        let cleaned = self.after_run(&id, &run_dir);
        let cleanup_ms = t_cleanup.elapsed().as_secs_f64() * 1e3;
        let (wall_ms, status, stderr) = res?;
        check_exit(&self.info.name, status, w, &stderr)?;
        cleaned?;
        Ok(Outcome {
            wall_ms,
            phases: None,
            prep_ms: Some(prep_ms),
            cleanup_ms: Some(cleanup_ms),
        })
    }
}

impl Drop for OciPeer {
    fn drop(&mut self) {
        self.close();
    }
}

/// QEMU `-M microvm` booting the guest isol's kvm backend boots: the same kernel, the same
/// cached read-only root disk, an initramfs with isol's guest init and the workload's spec
/// (built by isol's own code), the same devices and command line, [`VM_MEMORY_MIB`], 1 vCPU.
/// QEMU and its libraries run from copies in the scratch dir (RAM in the lab, not 9p).
#[derive(Debug)]
pub struct QemuPeer {
    info: SubjectInfo,
    qemu: Qemu,
    dir: PathBuf,
    kernel: PathBuf,
    disk: PathBuf,
    init: PathBuf,
    env: Vec<String>,
    /// The workload's privileges, as `isol run --backend kvm` gives them by default (docker's
    /// capabilities, no_new_privs, docker's seccomp profile), so that the guest does the same work.
    security: isol_vmm::Security,
    /// The initramfs built for each workload.
    initrds: Vec<(Vec<String>, PathBuf)>,
}

/// What the QEMU peer boots.
#[derive(Debug, Clone)]
pub struct Guest {
    pub kernel: PathBuf,
    /// isol's cached root disk of the image.
    pub disk: PathBuf,
    /// isol's guest init.
    pub init: PathBuf,
    /// The workload's environment.
    pub env: Vec<String>,
}

impl QemuPeer {
    /// Stages `binary` in `<work>/qemu`.
    pub fn new(
        binary: &Path,
        version: String,
        work: &Path,
        guest: Guest,
    ) -> Result<QemuPeer, String> {
        let dir = work.join("qemu");
        let qemu = Qemu::stage(binary, &dir.join("bin")).map_err(|e| e.to_string())?;
        let cmdline = qemu_microvm::cmdline(false).map_err(|e| e.to_string())?;
        Ok(QemuPeer {
            info: SubjectInfo {
                name: "qemu".into(),
                label: format!("QEMU {} microvm", short_version(&version)),
                kind: "peer",
                backend: Some("kvm"),
                version,
                command: format!(
                    "{} -M microvm,… -enable-kvm -cpu host -m {VM_MEMORY_MIB} -smp 1 -nodefaults -no-reboot -drive file={},readonly=on … -kernel {} -initrd INITRD -append '{cmdline}'",
                    binary.display(),
                    guest.disk.display(),
                    guest.kernel.display()
                ),
                rootfs: "isol's cached read-only ext4 root disk of the image on virtio-blk, initramfs with isol's guest init and the run spec (what isol's kvm backend boots)".into(),
            },
            qemu,
            dir,
            kernel: guest.kernel,
            disk: guest.disk,
            init: guest.init,
            env: guest.env,
            security: isol_vmm::Security {
                capabilities: Some(isol_container::security::capabilities::DEFAULT_MASK),
                no_new_privs: true,
                seccomp: isol_container::security::seccomp::default_filter_words()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(isol_vmm::SockFilter::from_u64)
                    .collect(),
                inheritable: 0,
                ambient: 0,
            },
            initrds: Vec::new(),
        })
    }

    fn initrd(&mut self, w: &Workload) -> Result<PathBuf, String> {
        if let Some((_, p)) = self.initrds.iter().find(|(a, _)| *a == w.args) {
            return Ok(p.clone());
        }
        let spec = isol_vmm::RunSpec {
            args: w.args.iter().map(Into::into).collect(),
            env: self.env.iter().map(Into::into).collect(),
            workdir: "/".into(),
            hostname: oci::HOSTNAME.into(),
            user: "".into(),
            security: self.security.clone(),
            etc_files: Vec::new(),
            limits: Default::default(),
            ..Default::default()
        };
        let image = isol_vmm::initramfs::build_initramfs(
            &isol_vmm::Rootfs::Disk(self.disk.clone()),
            Some(&self.init),
            &spec,
        )
        .map_err(|e| format!("cannot build the initramfs for QEMU: {e}"))?
        .ok_or("no initramfs for a root disk")?;
        let path = self
            .dir
            .join(format!("initramfs-{}.cpio", self.initrds.len()));
        fs::write(&path, image).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        self.initrds.push((w.args.clone(), path.clone()));
        Ok(path)
    }

    fn command(&mut self, w: &Workload, verify: bool) -> Result<Command, String> {
        self.command_with(w, verify, false)
    }

    /// [`QemuPeer::command`]; `stdio` puts the workload's stdio on QEMU's own.
    fn command_with(&mut self, w: &Workload, verify: bool, stdio: bool) -> Result<Command, String> {
        let initrd = self.initrd(w)?;
        let cmdline = qemu_microvm::cmdline(verify).map_err(|e| e.to_string())?;
        Ok(self.qemu.command(&Microvm {
            kernel: &self.kernel,
            initrd: &initrd,
            disk: Some(&self.disk),
            memory_mib: VM_MEMORY_MIB,
            cmdline: &cmdline,
            end: if verify {
                QemuEnd::Status
            } else {
                QemuEnd::PowerOff
            },
            stdio,
        }))
    }
}

impl Subject for QemuPeer {
    fn info(&self) -> &SubjectInfo {
        &self.info
    }

    /// Timed runs end at init's power-off write (after its report and `sync`), as
    /// isol's do; QEMU's exit status is then the same whatever the workload returned,
    /// so [`Subject::preflight`] checks the workload.
    fn run(&mut self, w: &Workload) -> Result<Outcome, String> {
        let (wall_ms, status, stderr) = timed(&mut self.command(w, false)?)?;
        if status.code() != Some(qemu_microvm::POWER_OFF_EXIT) {
            return Err(format!("QEMU ended with {status}: {}", last_line(&stderr)));
        }
        Ok(Outcome {
            wall_ms,
            phases: None,
            prep_ms: None,
            cleanup_ms: None,
        })
    }

    /// With the kernel log and `isa-debug-exit` on isol's exit port: the guest must mount
    /// the root disk and init report `w.expect`.
    fn preflight(&mut self, w: &Workload) -> Result<(), String> {
        let log = self.dir.join("console.log");
        let file =
            fs::File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let res = timed_to(&mut self.command(w, true)?, file.into());
        let console = fs::read_to_string(&log).unwrap_or_default();
        // A run that hung: how far the guest got is the last thing it printed.
        let (_, status, stderr) = res.map_err(|e| {
            format!(
                "{e}; the guest's console ended with: {:?}",
                last_line(&console)
            )
        })?;
        // One line: the reports show it as a list item.
        qemu_microvm::check_guest(status, &console, w.expect)
            .map_err(|e| format!("{e}; {}", last_line(&stderr)).replace('\n', " ⏎ "))
    }

    fn vm_command(&mut self, w: &Workload) -> Option<Result<Command, String>> {
        Some(self.command(w, false))
    }

    fn stdio_command(&mut self, w: &Workload) -> Option<Result<Command, String>> {
        Some(self.command_with(w, false, true))
    }
}

/// Runs a VMM's `cmd` once and measures its memory ([`qemu_microvm::wait_measured`], polling
/// the guest RAM mapping of [`VM_MEMORY_MIB`]); stderr goes to `log`.
pub fn measure_vm(cmd: &mut Command, log: &Path) -> Result<Measured, String> {
    let file =
        fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    cancel::arm(child.id());
    let m = qemu_microvm::wait_measured(
        &mut child,
        Some(u64::from(VM_MEMORY_MIB) << 10),
        Some(Instant::now() + cancel::WAIT_LIMIT),
    );
    let ended = match m {
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => None,
        m => Some(m),
    };
    let m = cancel::settle(child, ended, "the VM did not end")?;
    let m = m.map_err(|e| format!("cannot wait for {:?}: {e}", cmd.get_program()))?;
    if !qemu_microvm::ended_cleanly(m.status) {
        let err = fs::read_to_string(log).unwrap_or_default();
        return Err(format!(
            "{:?} ended with {}: {}",
            cmd.get_program(),
            m.status,
            last_line(&err)
        ));
    }
    if m.guest_kib.is_none() {
        return Err(format!(
            "no guest RAM mapping of {VM_MEMORY_MIB} MiB was seen in /proc/PID/smaps of {:?}",
            cmd.get_program()
        ));
    }
    Ok(m)
}

/// The version number in a `--version` line: `crun 1.8.1` → `1.8.1`.
pub fn short_version(version: &str) -> &str {
    version
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("?")
}

/// The first line of `binary --version`.
pub fn version_of(binary: &Path) -> Result<String, String> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} --version: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} --version` failed: {}",
            binary.display(),
            last_line(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

/// `name` looked up in `PATH`, as a shell would.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_s_leftover_cgroups_are_removed_from_every_hierarchy() {
        // Real cgroups where this host lets root make them (the bench runs as root).
        let id = format!("isol-bench-test-{}-crun-1", std::process::id());
        let root = Path::new("/sys/fs/cgroup");
        let made: Vec<PathBuf> = fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join(&id))
            .chain([root.join(&id)])
            .filter(|d| fs::create_dir(d).is_ok())
            .collect();
        assert!(!made.is_empty(), "no cgroup could be made below {root:?}");
        // One with a cgroup below it, as a runtime may leave.
        let nested = made[0].join("container");
        fs::create_dir(&nested).unwrap();
        remove_peer_cgroups(root, &id);
        let left: Vec<&PathBuf> = made.iter().filter(|d| d.exists()).collect();
        for d in &left {
            let _ = fs::remove_dir(nested.as_path());
            let _ = fs::remove_dir(d);
        }
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn phases_come_in_the_runtime_order() {
        let stderr = "warning\n{\"phases_ms\":{\"teardown\":2.0,\"cgroup\":1.0,\"exec\":3.0,\"zzz\":0.5,\"prepare\":1.5}}\n";
        let p = parse_phases(stderr).unwrap();
        let names: Vec<&str> = p.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["cgroup", "prepare", "exec", "teardown", "zzz"]);
        assert!(parse_phases("no json").is_none());
        let kvm = "{\"timeline_ms\":{\"first_vcpu_entry\":2.0,\"init_start\":10.0,\"workload_start\":11.0,\"workload_exit\":12.5,\"vm_exit\":13.0,\"first_console_output\":null}}";
        let p = parse_phases(kvm).unwrap();
        assert_eq!(p[0], ("vmm-setup".to_string(), 2.0));
        assert_eq!(p[1], ("kernel-boot".to_string(), 8.0));
        assert_eq!(p.len(), 5);
        assert_eq!(last_line("a\nboom\n{\"x\":1}\n"), "boom");
    }
}
