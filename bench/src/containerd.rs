//! A containerd 1.6 of the bench's own, for the `ctr-run` benchmark (CRI plugin off) and the
//! `cri` benchmark (CRI plugin on): its config, root, state and socket on a tmpfs it mounts
//! at a directory in the bench's scratch dir (overlayfs snapshots need a filesystem that is
//! neither overlayfs nor 9p, which the lab's root is), started to die with the bench
//! (`PR_SET_PDEATHSIG`), its images imported as docker archives with `ctr`. Its drop, or the
//! next bench's [`sweep`] after a SIGKILLed one, ends and removes all it left: the daemon, the
//! shims of its socket with their containers, the mounts below its directory, the directory,
//! and the cgroups below the parent its containers were given.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::subjects::last_line;
use super::{cancel, reap};

/// How long containerd gets to answer after its start.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The CRI plugin's section for a containerd without it.
const NO_CRI: &str = "[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable = true\n";

/// A containerd of the bench's own; its drop (or [`Containerd::stop`]) ends and removes it.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    daemon: Option<Child>,
    /// `containerd --version`, first line.
    pub version: String,
    binary: PathBuf,
    ctr: PathBuf,
    /// The containerd namespace `ctr` works in.
    namespace: &'static str,
    /// The cgroup (relative to a hierarchy's root) its containers' cgroups are made below.
    cgroup_parent: &'static str,
}

impl Containerd {
    /// Mounts a tmpfs at `dir` and writes containerd's config there, with `cri` as the CRI
    /// plugin's section (`{tmp}` in it is `dir`), or the plugin off. `ctr` works in
    /// `namespace`; the containers' cgroups go below `cgroup_parent`. Files the config names
    /// (a CNI config…) may be added to [`Containerd::dir`] before [`Containerd::start`].
    pub fn new(
        dir: PathBuf,
        namespace: &'static str,
        cgroup_parent: &'static str,
        cri: Option<&str>,
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
        fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        mount(
            Some("tmpfs"),
            &dir,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0700"),
        )
        .map_err(|e| format!("cannot mount a tmpfs on {}: {e}", dir.display()))?;
        let c = Containerd {
            dir,
            daemon: None,
            version,
            binary,
            ctr,
            namespace,
            cgroup_parent,
        };
        let d = c.dir.display().to_string();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n[grpc]\n  address = \"{d}/sock\"\n{}",
            cri.unwrap_or(NO_CRI).replace("{tmp}", &d),
        );
        c.write("config.toml", &config)?;
        Ok(c)
    }

    /// containerd's directory (its tmpfs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `text` to `name` in containerd's directory.
    pub fn write(&self, name: &str, text: &str) -> Result<(), String> {
        let path = self.dir.join(name);
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// containerd's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// Starts the daemon and waits until `ctr version` gets an answer. `kernel`: the guest
    /// kernel isol-runc-vm boots (`ISOL_KERNEL` in the daemon's environment, and so in its
    /// shims' and their runtimes').
    pub fn start(&mut self, kernel: Option<&Path>) -> Result<(), String> {
        let log = fs::File::create(self.dir.join("containerd.log"))
            .map_err(|e| format!("cannot create containerd's log: {e}"))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot create containerd's log: {e}"))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0);
        if let Some(k) = kernel {
            cmd.env("ISOL_KERNEL", k);
        }
        // containerd dies with the bench, even a SIGKILLed one (the next bench sweeps what
        // its shims kept: `sweep`).
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
        let daemon = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        cancel::track(daemon.id());
        self.daemon = Some(daemon);
        self.wait_until("containerd", || {
            self.ctr_command(&["version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// Waits until `up` says `what` (containerd, a plugin of it) answers, at most
    /// [`READY_WITHIN`] and not past a cancel; else an error with containerd's last error.
    pub fn wait_until(&self, what: &str, mut up: impl FnMut() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + READY_WITHIN;
        while !up() {
            if Instant::now() > deadline || cancel::cancelled() {
                return Err(format!(
                    "{what} did not answer within {} s: {}",
                    READY_WITHIN.as_secs(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The last error containerd logged, or its log's last line.
    pub fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        match log.lines().rev().find(|l| l.contains("level=error")) {
            Some(l) => l.to_string(),
            None => last_line(&log).to_string(),
        }
    }

    /// `ctr --address SOCK --namespace NAMESPACE ARGS…`.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.ctr);
        c.arg("--address")
            .arg(self.socket())
            .args(["--namespace", self.namespace])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// Imports the image `tag` made of `layers` (lowest first) with the image config's
    /// `config` section, as a docker archive (`ctr image import`).
    pub fn import(
        &self,
        tag: &str,
        layers: &[PathBuf],
        config: serde_json::Value,
    ) -> Result<(), String> {
        let dir = self.dir.join("image");
        let archive = super::docker_archive::docker_archive(&dir, tag, layers, config);
        let out = archive.and_then(|a| {
            self.ctr_command(&["image", "import"])
                .arg(a)
                .output()
                .map_err(|e| format!("cannot run ctr: {e}"))
        });
        let _ = fs::remove_dir_all(&dir);
        let out = out?;
        if !out.status.success() {
            return Err(format!(
                "`ctr image import` of {tag} failed: {}",
                last_line(&String::from_utf8_lossy(&out.stderr))
            ));
        }
        Ok(())
    }

    /// Ends the daemon (SIGTERM, SIGKILL after 10 s) and removes what it left: see
    /// [`release`]. Again, it does nothing.
    pub fn stop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let pid = daemon.id();
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            if reap::wait_until(&mut daemon, Instant::now() + Duration::from_secs(10)).is_none() {
                reap::stop_one(daemon);
            }
            cancel::untrack(pid);
        }
        release(&self.dir, self.cgroup_parent);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a [`Containerd`] at `dir` left once the daemon is gone: the shims of its socket with
/// their containers' first processes (a failed run's task, or all of them after a SIGKILLed
/// bench), the mounts under `dir`, `dir`, and the cgroups below `cgroup_parent` (runc removes
/// a container's cgroup, not the parent above it: on cgroup v2 `/sys/fs/cgroup/<parent>`, on
/// v1 the same in each hierarchy).
pub(crate) fn release(dir: &Path, cgroup_parent: &str) {
    release_dir(dir);
    end_cgroup_tree(cgroup_parent.trim_start_matches('/'));
}

/// What a containerd whose socket is `dir/sock` left below `dir` once it is gone: the shims of
/// its socket (and with them their containers), the mounts under `dir` (deepest first), `dir`.
/// The tests' containerd (tests/common/containerd.rs) is released so too.
pub fn release_dir(dir: &Path) {
    let address = dir.join("sock").display().to_string();
    for pid in shims_of(&address) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let prefix = format!("{}/", dir.display());
    let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = umount2(m.as_str(), MntFlags::MNT_DETACH);
    }
    let _ = umount2(dir, MntFlags::MNT_DETACH);
    let _ = fs::remove_dir_all(dir);
}

/// Ends every process in the cgroup `parent` (relative to the cgroup root: v2, or each v1
/// hierarchy) and below, and removes those cgroups, deepest first. After a SIGKILLed bench
/// its containers' processes outlive their shims there.
fn end_cgroup_tree(parent: &str) {
    let roots = fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
        .map(|h| h.path().join(parent))
        .chain([Path::new("/sys/fs/cgroup").join(parent)]);
    for root in roots {
        let mut dirs = vec![root.clone()];
        let mut i = 0;
        while i < dirs.len() {
            for e in fs::read_dir(&dirs[i]).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
            i += 1;
        }
        for d in &dirs {
            for pid in fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        for d in dirs.iter().rev() {
            // A killed process leaves its cgroup a moment later.
            let until = Instant::now() + Duration::from_secs(2);
            while fs::remove_dir(d).is_err() && d.exists() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The shims a bench that is gone left, by the scratch directory in their socket address:
/// `(pid of that bench, shim pid)`.
fn orphan_shims(tmp: &Path) -> Vec<(u32, i32)> {
    let prefix = format!("{}/isol-bench.", tmp.display());
    shims()
        .into_iter()
        .filter_map(|(pid, address)| {
            let rest = address.strip_prefix(&prefix)?;
            Some((rest.split('/').next()?.parse().ok()?, pid))
        })
        .collect()
}

/// What the containerds of SIGKILLed benches left (a containerd dies with its bench:
/// `PR_SET_PDEATHSIG`; its shims and their containers do not): `dead` says whether the bench
/// of a pid is gone. Found by their scratch directories in `tmp` and by the shims' addresses
/// (a scratch directory may be gone while its shims run): the cri benchmark's host (with what
/// it left outside its directory: `cri::release`) and the ctr-run benchmark's containerd.
pub(crate) fn sweep(tmp: &Path, dead: impl Fn(u32) -> bool) {
    let mut benches = Vec::new();
    for (bench, shim) in orphan_shims(tmp) {
        if dead(bench) {
            let _ = kill(Pid::from_raw(shim), Signal::SIGKILL);
            benches.push(bench);
        }
    }
    benches.extend(
        fs::read_dir(tmp)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("cri").exists() || e.path().join("containerd").exists())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_prefix("isol-bench.")?
                    .parse()
                    .ok()
            })
            .filter(|b| dead(*b)),
    );
    benches.sort_unstable();
    benches.dedup();
    for b in benches {
        let work = tmp.join(format!("isol-bench.{b}"));
        super::cri::release(&work);
        super::ctr::release(&work);
    }
    // A pod's network, by its name, which names its bench: even when nothing else is left.
    super::cri::release_networks(&dead);
}

/// The pids of the runc v2 shims started for containerd's socket `address`.
fn shims_of(address: &str) -> Vec<i32> {
    shims()
        .into_iter()
        .filter(|(_, a)| a == address)
        .map(|(pid, _)| pid)
        .collect()
}

/// Every runc v2 shim on the host, with the containerd socket address it was started for.
fn shims() -> Vec<(i32, String)> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if !args
                .first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
            {
                return None;
            }
            let address = args.windows(2).find(|w| w[0] == b"-address")?[1];
            Some((pid, String::from_utf8_lossy(address).into_owned()))
        })
        .collect()
}
