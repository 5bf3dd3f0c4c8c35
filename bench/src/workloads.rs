//! The benchmarks beyond `start`: memory, density, cpu, syscall, io, net. Each one runs a
//! busybox workload in every isol backend measured and, as the reference, on the host (the
//! same busybox applets, through a directory of applet links), interleaved round by round
//! after one discarded warm-up round.
//!
//! Work is timed **inside** the workload: the script prints a start and an end marker
//! through busybox `ts %.s` (gettimeofday, microseconds), so start-up and teardown of the
//! runtime are not part of these numbers.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write as _};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::cancel;
use super::metrics::{Metric, Series};
use super::reap;
use super::stats::Status;

/// Where and how a workload runs.
#[derive(Debug, Clone)]
pub enum Runner {
    /// `isol run [--backend kvm] busybox …`.
    Isol {
        exe: PathBuf,
        store_root: PathBuf,
        kvm: bool,
        kernel: Option<PathBuf>,
    },
    /// `busybox sh -c …` on the host, with busybox's applets first in PATH.
    Host { bin_dir: PathBuf, io_dir: PathBuf },
}

impl Runner {
    pub fn subject(&self) -> &'static str {
        match self {
            Runner::Isol { kvm: true, .. } => "isol-kvm",
            Runner::Isol { .. } => "isol-container",
            Runner::Host { .. } => "host",
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Runner::Isol { kvm: true, .. } => "isol (kvm)",
            Runner::Isol { .. } => "isol (container)",
            Runner::Host { .. } => "host",
        }
    }

    fn is_kvm(&self) -> bool {
        matches!(self, Runner::Isol { kvm: true, .. })
    }

    /// The command running `sh -c script`; `stdin` asks for a piped stdin (`-i`); `volume`
    /// shares a host directory at [`SHARED`] (`-v DIR:/shared`; the host runs in it).
    fn command(&self, script: &str, stdin: bool, bridge: bool) -> Command {
        self.command_with(script, stdin, bridge, None)
    }

    fn command_with(
        &self,
        script: &str,
        stdin: bool,
        bridge: bool,
        volume: Option<&Path>,
    ) -> Command {
        match self {
            Runner::Isol {
                exe,
                store_root,
                kvm,
                kernel,
            } => {
                let mut c = Command::new(exe);
                c.env("ISOL_HOME", store_root).arg("run");
                if *kvm {
                    c.args(["--backend", "kvm"]);
                    if let Some(k) = kernel {
                        c.arg("--kernel").arg(k);
                    }
                }
                if stdin {
                    c.arg("-i");
                }
                if bridge {
                    c.args(["--network", "bridge"]);
                }
                if let Some(v) = volume {
                    c.arg("-v").arg(format!("{}:{SHARED}", v.display()));
                }
                c.args(["busybox", "--", "sh", "-c", script]);
                c
            }
            Runner::Host { bin_dir, io_dir } => {
                let mut c = Command::new(bin_dir.join("sh"));
                c.env("PATH", bin_dir)
                    .current_dir(io_dir)
                    .args(["-c", script]);
                c
            }
        }
    }

    /// The directory the IO workloads write in (`volume`: the shared directory's).
    fn io_dir(&self, volume: Option<&Path>) -> String {
        match (self, volume) {
            (Runner::Host { .. }, Some(v)) => v.display().to_string(),
            (Runner::Isol { .. }, Some(_)) => SHARED.to_string(),
            (Runner::Host { io_dir, .. }, None) => io_dir.display().to_string(),
            (Runner::Isol { .. }, None) => String::new(),
        }
    }
}

/// Where the `shared` benchmark's directory appears in a run.
const SHARED: &str = "/shared";

/// Makes `dir` hold a link to /bin/busybox for each applet the workloads use.
pub fn host_bin_dir(dir: &Path) -> Result<PathBuf, String> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        return Err("/bin/busybox not found; apt-get install busybox-static".into());
    }
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for applet in [
        "sh",
        "head",
        "sha256sum",
        "dd",
        "ts",
        "nc",
        "ip",
        "sleep",
        "cat",
        "tr",
        "unshare",
        "ls",
        "cp",
        "rm",
        "mkdir",
        "echo",
        "httpd",
        "wget",
        "kill",
    ] {
        let link = dir.join(applet);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(busybox, &link)
            .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
    }
    Ok(dir.to_path_buf())
}

/// Sizes of the work, smaller with `--quick`.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub cpu_mib: u64,
    pub syscall_bytes: u64,
    pub seq_mib: u64,
    pub rand_ops: u64,
    pub fsync_ops: u64,
    pub net_mib: u64,
    /// HTTP requests per round of `net-rr`.
    pub net_requests: u32,
    /// The `shared` benchmark's tree: directories, files in each.
    pub tree: (u32, u32),
}

impl Sizes {
    pub fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                cpu_mib: 16,
                syscall_bytes: 50_000,
                seq_mib: 16,
                rand_ops: 20,
                fsync_ops: 10,
                net_mib: 16,
                net_requests: 20,
                tree: (10, 20),
            }
        } else {
            Sizes {
                cpu_mib: 64,
                syscall_bytes: 200_000,
                seq_mib: 64,
                rand_ops: 200,
                fsync_ops: 100,
                net_mib: 64,
                net_requests: 100,
                tree: (20, 50),
            }
        }
    }
}

/// A workload timed between its markers.
struct Timed {
    id: &'static str,
    title: String,
    method: String,
    /// Untimed preparation (shell, may use `$D` and `run`).
    prep: String,
    /// The timed part.
    body: String,
    /// Samples are the time divided by this (ms per operation when > 1).
    per: f64,
    unit: &'static str,
    /// Not run on kvm: why.
    kvm_skip: Option<String>,
    kvm_note: Option<String>,
    /// Run in a fresh host directory shared with the run (`-v DIR:/shared`), filled with
    /// this first, untimed (the `shared` benchmark).
    share: Option<Fill>,
}

/// What a shared directory holds before a `shared` workload runs (written by the bench on
/// the host, so a VM's guest has never seen it: nothing of it is in the guest's cache).
#[derive(Debug, Clone, Copy)]
enum Fill {
    /// Nothing.
    Empty,
    /// `r.dat` of this many MiB.
    File(u64),
    /// `tree/dN/fM`: (directories, files in each), 100 bytes each.
    Tree(u32, u32),
}

impl Fill {
    fn make(self, dir: &Path) -> Result<(), String> {
        let err = |e: std::io::Error| format!("cannot fill {}: {e}", dir.display());
        fs::create_dir_all(dir).map_err(err)?;
        match self {
            Fill::Empty => {}
            Fill::File(mib) => {
                let f = File::create(dir.join("r.dat")).map_err(err)?;
                let chunk = vec![0x5au8; 1 << 20];
                let mut w = std::io::BufWriter::new(f);
                for _ in 0..mib {
                    w.write_all(&chunk).map_err(err)?;
                }
                w.flush().map_err(err)?;
            }
            Fill::Tree(dirs, files) => {
                for d in 0..dirs {
                    let sub = dir.join("tree").join(format!("d{d}"));
                    fs::create_dir_all(&sub).map_err(err)?;
                    for f in 0..files {
                        fs::write(sub.join(format!("f{f}")), [b'x'; 100]).map_err(err)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// `run CMD…`: runs CMD, and on failure prints `FAIL …` and stops the workload.
const PRELUDE: &str =
    r#"run() { out=$("$@" 2>&1) || { echo "FAIL $*: $(echo "$out" | tr '\n' ' ')"; exit 1; }; }; "#;

fn timed_script(dir: &str, prep: &str, body: &str) -> String {
    let d = if dir.is_empty() { "" } else { dir };
    format!("D={d}; {PRELUDE}{{ {prep} echo S; {body} echo E; }} 2>&1 | ts %.s")
}

/// Runs a marked workload once (`volume`: with that directory shared); returns the ms between
/// the markers and NOTE lines.
fn run_timed(
    r: &Runner,
    prep: &str,
    body: &str,
    volume: Option<&Path>,
) -> Result<(f64, Vec<String>), String> {
    let script = timed_script(&r.io_dir(volume), prep, body);
    let mut cmd = r.command_with(&script, false, false, volume);
    let out = output_with_timeout(&mut cmd)?;
    parse_marks(&out.0).map_err(|e| {
        if out.1.trim().is_empty() {
            e
        } else {
            format!("{e}; stderr: {}", last_line(&out.1))
        }
    })
}

fn last_line(s: &str) -> &str {
    s.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('{'))
        .unwrap_or("")
}

/// `(ms between "S" and "E", NOTE lines)` from `ts %.s` output.
pub fn parse_marks(out: &str) -> Result<(f64, Vec<String>), String> {
    let mut start = None;
    let mut end = None;
    let mut notes = Vec::new();
    let mut other = Vec::new();
    for line in out.lines() {
        let Some((t, text)) = line.split_once(' ') else {
            continue;
        };
        let t: Option<f64> = t.parse().ok();
        match (t, text.trim()) {
            (Some(t), "S") => start = Some(t),
            (Some(t), "E") => end = Some(t),
            (_, x) if x.starts_with("NOTE ") => notes.push(x[5..].to_string()),
            (_, x) => other.push(x.to_string()),
        }
    }
    match (start, end) {
        (Some(s), Some(e)) if e >= s => Ok(((e - s) * 1e3, notes)),
        _ => Err(format!(
            "the workload did not finish: {}",
            other
                .iter()
                .find(|l| l.starts_with("FAIL"))
                .or(other.last())
                .map_or("no output", |s| s.as_str())
        )),
    }
}

/// Runs `cmd` to its end (stdout and stderr captured), killing it after the run timeout.
fn output_with_timeout(cmd: &mut Command) -> Result<(String, String), String> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    cancel::arm(child.id());
    let stdout = child.stdout.take().map(OwnedFd::from);
    let stderr = child.stderr.take().map(OwnedFd::from);
    let pipes: Vec<File> = [stdout, stderr]
        .into_iter()
        .flatten()
        .map(File::from)
        .collect();
    let (status, out) = reap::wait_reading(&mut child, pipes, t0 + cancel::WAIT_LIMIT);
    cancel::settle(child, status, "the run did not finish")?;
    let text = |i: usize| String::from_utf8_lossy(out.get(i).map_or(&[][..], |v| v)).into_owned();
    Ok((text(0), text(1)))
}

fn timed_workloads(s: Sizes, which: &[&str]) -> Vec<Timed> {
    let tmpfs_note = "on kvm the root is an overlay of the read-only virtio-blk image disk with a tmpfs upper layer in guest RAM: new files never reach a disk, like the container's, whose overlay upper layer is a tmpfs in its mount namespace".to_string();
    let direct = "O_DIRECT is asked for (dd iflag/oflag=direct) and the fallback to buffered IO is noted when the filesystem refuses it (tmpfs does)";
    let mut v = Vec::new();
    if which.contains(&"cpu") {
        v.push(Timed {
            id: "cpu",
            title: format!("CPU-bound: sha256 of {} MiB", s.cpu_mib),
            method: format!(
                "busybox `head -c {} /dev/zero | sha256sum` inside the workload, timed between markers printed through busybox `ts` (gettimeofday); the same applets run on the host as the reference",
                s.cpu_mib << 20
            ),
            prep: String::new(),
            body: format!("head -c {} /dev/zero | sha256sum >/dev/null;", s.cpu_mib << 20),
            per: 1.0,
            unit: "ms",
            kvm_skip: None,
            kvm_note: None,
            share: None,
        });
    }
    if which.contains(&"syscall") {
        v.push(Timed {
            id: "syscall",
            title: format!("Syscall-heavy: dd bs=1 count={}", s.syscall_bytes),
            method: format!(
                "busybox `dd if=/dev/zero of=/dev/null bs=1 count={}`: one read and one write system call per byte ({} syscalls), timed inside the workload; samples are µs per byte (2 syscalls)",
                s.syscall_bytes,
                2 * s.syscall_bytes
            ),
            prep: String::new(),
            body: format!(
                "run dd if=/dev/zero of=/dev/null bs=1 count={};",
                s.syscall_bytes
            ),
            per: s.syscall_bytes as f64 / 1000.0,
            unit: "µs/byte",
            kvm_skip: None,
            kvm_note: None,
            share: None,
        });
    }
    if which.contains(&"io") {
        let mib = s.seq_mib;
        v.push(Timed {
            id: "io-seq-write",
            title: format!("IO: sequential write of {mib} MiB + fsync"),
            method: format!(
                "busybox `dd if=/dev/zero of=ROOT/bench.dat bs=1M count={mib} conv=fsync` on the root filesystem (container: its overlay's upper layer, a tmpfs in the container's mount namespace, so in memory; kvm: the same in guest RAM; host: a directory on the same filesystem as the image store, on disk)"
            ),
            prep: String::new(),
            body: format!("run dd if=/dev/zero of=$D/bench.dat bs=1M count={mib} conv=fsync;"),
            per: 1.0,
            unit: "ms",
            kvm_skip: None,
            kvm_note: Some(tmpfs_note.clone()),
            share: None,
        });
        let write_file =
            |m: u64| format!("run dd if=/dev/zero of=$D/bench.dat bs=1M count={m} conv=fsync; ");
        let probe = |flag: &str, var: &str| {
            format!(
                "if dd if=$D/bench.dat of=/dev/null bs=4k count=1 {flag}=direct 2>/dev/null; then {var}={flag}=direct; else {var}=; echo NOTE {flag}=direct refused, buffered IO used; fi; "
            )
        };
        v.push(Timed {
            id: "io-seq-read",
            title: format!("IO: sequential read of {mib} MiB"),
            method: format!(
                "the file is written and fsynced untimed, then `dd if=ROOT/bench.dat of=/dev/null bs=1M iflag=direct` is timed; {direct}"
            ),
            prep: write_file(mib) + &probe("iflag", "F"),
            body: "run dd if=$D/bench.dat of=/dev/null bs=1M $F;".into(),
            per: 1.0,
            unit: "ms",
            kvm_skip: None,
            kvm_note: Some(tmpfs_note.clone()),
            share: None,
        });
        let n = s.rand_ops;
        let lp = |cmd: &str| {
            format!(
                "i=0; while [ $i -lt {n} ]; do b=$(( (i * 2654435761) % 4096 )); {cmd} || exit 1; i=$((i+1)); done;"
            )
        };
        v.push(Timed {
            id: "io-rand-read",
            title: "IO: random 4 KiB reads".into(),
            method: format!(
                "{n} `dd bs=4k count=1 skip=R iflag=direct` at pseudo-random offsets of a 16 MiB file written untimed; samples are ms per read and **include one fork+exec of busybox dd per read** (busybox has no single-process random IO tool); {direct}"
            ),
            prep: write_file(16) + &probe("iflag", "F"),
            body: lp("dd if=$D/bench.dat of=/dev/null bs=4k count=1 skip=$b $F 2>/dev/null"),
            per: n as f64,
            unit: "ms/op",
            kvm_skip: None,
            kvm_note: Some(tmpfs_note.clone()),
            share: None,
        });
        v.push(Timed {
            id: "io-rand-write",
            title: "IO: random 4 KiB writes".into(),
            method: format!(
                "{n} `dd bs=4k count=1 seek=R conv=notrunc oflag=direct` at pseudo-random offsets of a 16 MiB file; ms per write, including one fork+exec per write; {direct}"
            ),
            prep: write_file(16)
                + "if dd if=/dev/zero of=$D/bench.dat bs=4k count=1 conv=notrunc oflag=direct 2>/dev/null; then F=oflag=direct; else F=; echo NOTE oflag=direct refused, buffered IO used; fi; ",
            body: lp(
                "dd if=/dev/zero of=$D/bench.dat bs=4k count=1 seek=$b conv=notrunc $F 2>/dev/null",
            ),
            per: n as f64,
            unit: "ms/op",
            kvm_skip: None,
            kvm_note: Some(tmpfs_note.clone()),
            share: None,
        });
        let f = s.fsync_ops;
        v.push(Timed {
            id: "io-fsync",
            title: "IO: 4 KiB write + fsync latency".into(),
            method: format!(
                "{f} `dd bs=4k count=1 seek=i conv=notrunc,fsync` to a 16 MiB file; ms per write+fsync, including one fork+exec each"
            ),
            prep: write_file(16),
            body: format!(
                "i=0; while [ $i -lt {f} ]; do dd if=/dev/zero of=$D/bench.dat bs=4k count=1 seek=$i conv=notrunc,fsync 2>/dev/null || exit 1; i=$((i+1)); done;"
            ),
            per: f as f64,
            unit: "ms/op",
            kvm_skip: None,
            kvm_note: Some(tmpfs_note),
            share: None,
        });
    }
    if which.contains(&"shared") {
        let mib = s.seq_mib;
        let (dirs, files) = s.tree;
        let how = "a fresh host directory per run, filled untimed by the bench on the host, shared at /shared: container: a bind mount (`-v DIR:/shared`); kvm: virtio-fs (`-v DIR:/shared`: isol's VMM a vhost-user frontend, virtiofsd 1.x with `--cache auto` serving it); host: the directory itself";
        let kvm_note = Some("kvm: every FUSE request is a virtqueue round trip to virtiofsd (kick by ioeventfd, interrupt by irqfd): no VMM on the path, but a guest exit and a host wake-up per request; the container's bind mount is the host's own filesystem".to_string());
        v.push(Timed {
            id: "shared-write",
            title: format!("Shared directory: write {mib} MiB + fsync"),
            method: format!(
                "busybox `dd if=/dev/zero of=/shared/w.dat bs=1M count={mib} conv=fsync` into {how}"
            ),
            prep: String::new(),
            body: format!("run dd if=/dev/zero of=$D/w.dat bs=1M count={mib} conv=fsync;"),
            per: 1.0,
            unit: "ms",
            kvm_skip: None,
            kvm_note: kvm_note.clone(),
            share: Some(Fill::Empty),
        });
        v.push(Timed {
            id: "shared-read",
            title: format!("Shared directory: read {mib} MiB"),
            method: format!(
                "busybox `dd if=/shared/r.dat of=/dev/null bs=1M` of a {mib} MiB file the bench wrote on the host before the run (in the host's page cache; never seen by the guest), in {how}"
            ),
            prep: String::new(),
            body: "run dd if=$D/r.dat of=/dev/null bs=1M;".into(),
            per: 1.0,
            unit: "ms",
            kvm_skip: None,
            kvm_note: kvm_note.clone(),
            share: Some(Fill::File(mib)),
        });
        v.push(Timed {
            id: "shared-meta",
            title: format!("Shared directory: metadata walk of {} files", dirs * files),
            method: format!(
                "a tree of {dirs} directories of {files} files of 100 bytes, written on the host before the run, then busybox `ls -lR` (lookups, getattr, readdir), `cp -a` of the tree (create, write, set times) and `rm -rf` of the copy (unlink, rmdir), timed together, in {how}"
            ),
            prep: String::new(),
            body: "run ls -lR $D/tree; run cp -a $D/tree $D/copy; run rm -rf $D/copy;".into(),
            per: 1.0,
            unit: "ms",
            kvm_skip: None,
            kvm_note,
            share: Some(Fill::Tree(dirs, files)),
        });
    }
    v
}

/// Progress callback: a message per step.
pub type Progress<'a> = &'a dyn Fn(String);

/// The marker-timed benchmarks (cpu, syscall, io, shared) over `runners`, the shared
/// directories made under `scratch`; `None` when cancelled.
pub fn timed_metrics(
    runners: &[Runner],
    sizes: Sizes,
    which: &[&str],
    runs: u32,
    scratch: &Path,
    progress: Progress,
) -> Option<Vec<Metric>> {
    let mut metrics = Vec::new();
    for w in timed_workloads(sizes, which) {
        let mut series: Vec<Series> = runners
            .iter()
            .map(|r| match (&w.kvm_skip, r.is_kvm()) {
                (Some(why), true) => Series::skipped(r.subject(), r.label(), why.clone()),
                _ => Series::new(r.subject(), r.label()),
            })
            .collect();
        let mut notes: Vec<String> = Vec::new();
        for round in 0..=runs {
            progress(format!("{}: round {round}/{runs}", w.id));
            for (r, s) in runners.iter().zip(series.iter_mut()) {
                if s.status != Status::Ok {
                    continue;
                }
                let dir = scratch.join(format!("shared-{}-{round}", r.subject()));
                let res = match w.share {
                    None => run_timed(r, &w.prep, &w.body, None),
                    Some(fill) => fill
                        .make(&dir)
                        .and_then(|()| run_timed(r, &w.prep, &w.body, Some(&dir))),
                };
                if w.share.is_some() {
                    let _ = fs::remove_dir_all(&dir);
                }
                if cancel::cancelled() {
                    return None;
                }
                match res {
                    Ok((ms, ns)) => {
                        for n in ns {
                            let n = format!("{}: {n}", r.label());
                            if !notes.contains(&n) {
                                notes.push(n);
                            }
                        }
                        if round > 0 {
                            s.push(ms / w.per);
                        }
                    }
                    Err(e) => s.fail(format!("round {round}: {e}")),
                }
            }
        }
        if let Some(n) = &w.kvm_note
            && runners.iter().any(Runner::is_kvm)
        {
            notes.push(n.clone());
        }
        let mut m = Metric {
            id: w.id.into(),
            benchmark: match w.id {
                id if id.starts_with("io") => "io",
                id if id.starts_with("shared") => "shared",
                id => id,
            },
            title: w.title,
            method: format!(
                "{}. One warm-up round discarded, then {runs} rounds, subjects interleaved.",
                w.method
            ),
            unit: w.unit,
            lower_is_better: true,
            series,
            ratios: Vec::new(),
            notes,
        };
        m.finish(&[
            ("isol-container", "host"),
            ("isol-kvm", "host"),
            ("isol-kvm", "isol-container"),
        ]);
        metrics.push(m);
    }
    Some(metrics)
}

/// Network throughput: a container sending to a server on isol's bridge — another container,
/// or a VM (`--network bridge` on kvm: virtio-net on a tap) — vs two processes over loopback
/// in a fresh network namespace on the host (`net`); and the host itself sending to the same
/// servers over the bridge (`net-host`).
pub fn net_metrics(
    runners: &[Runner],
    sizes: Sizes,
    runs: u32,
    progress: Progress,
) -> Option<Vec<Metric>> {
    let bytes = sizes.net_mib << 20;
    let host = runners.iter().find(|r| matches!(r, Runner::Host { .. }));
    let mut series = Vec::new();
    let mut from_host = Vec::new();
    let mut rr = Vec::new();
    for r in runners {
        series.push(Series::new(r.subject(), r.label()));
        rr.push(Series::new(r.subject(), r.label()));
        from_host.push(match r {
            Runner::Host { .. } => Series::skipped(
                r.subject(),
                r.label(),
                "the host is the sender here; its loopback baseline is in `net`".into(),
            ),
            Runner::Isol { .. } => Series::new(r.subject(), r.label()),
        });
    }
    for round in 0..=runs {
        progress(format!("net: round {round}/{runs}"));
        for (((r, s), h), q) in runners
            .iter()
            .zip(series.iter_mut())
            .zip(from_host.iter_mut())
            .zip(rr.iter_mut())
        {
            if q.status == Status::Ok {
                let res = net_rr(r, sizes.net_requests);
                if cancel::cancelled() {
                    return None;
                }
                match res {
                    Ok(ms) if round > 0 => q.push(ms / f64::from(sizes.net_requests)),
                    Ok(_) => {}
                    Err(e) => q.fail(format!("round {round}: {e}")),
                }
            }
            if h.status == Status::Ok
                && let Some(host) = host
            {
                let res = net_bridge(r, bytes, Some(host));
                if cancel::cancelled() {
                    return None;
                }
                match res {
                    Ok(ms) if round > 0 => h.push(bytes as f64 / (1 << 20) as f64 / (ms / 1e3)),
                    Ok(_) => {}
                    Err(e) => h.fail(format!("round {round}: {e}")),
                }
            }
            if s.status != Status::Ok {
                continue;
            }
            let res = match r {
                Runner::Host { .. } => net_host(r, bytes),
                Runner::Isol { .. } => net_bridge(r, bytes, None),
            };
            if cancel::cancelled() {
                return None;
            }
            match res {
                Ok(ms) if round > 0 => s.push(bytes as f64 / (1 << 20) as f64 / (ms / 1e3)),
                Ok(_) => {}
                Err(e) => s.fail(format!("round {round}: {e}")),
            }
        }
    }
    let mut m = Metric {
        id: "net".into(),
        benchmark: "net",
        title: format!("Network: {} MiB over TCP", sizes.net_mib),
        method: format!(
            "busybox `head -c {bytes} /dev/zero | nc ADDR 5001` to a busybox `nc -l -p 5001 >/dev/null`, timed inside the sender from before the first byte to nc's exit (the last socket buffer may still be in flight); container: server and client in two isol containers on isol's bridge (`--network bridge`, the server's own bridge address); kvm: the server in a VM on the bridge (virtio-net on a tap), the client in a container as above, so the two differ only in the receiver; host: both processes on loopback in a fresh network namespace (`unshare -n`, 127.0.0.1). Nothing else is contacted. Samples are MiB/s (higher is better). One warm-up round, then {runs} rounds."
        ),
        unit: "MiB/s",
        lower_is_better: false,
        series,
        ratios: Vec::new(),
        notes: Vec::new(),
    };
    m.finish(&[("isol-container", "host"), ("isol-kvm", "isol-container")]);
    let mut h = Metric {
        id: "net-host".into(),
        benchmark: "net",
        title: format!("Network: {} MiB over TCP from the host", sizes.net_mib),
        method: format!(
            "the host's busybox `head -c {bytes} /dev/zero | nc ADDR 5001` (in the host's own network namespace, through the bridge `isol0`) to a busybox `nc -l -p 5001 >/dev/null` in an isol container (its veth) or in a VM (virtio-net on a tap) on the bridge, timed inside the sender as for `net`; the same sender for both, so the two differ only in the receiver. Samples are MiB/s (higher is better). One warm-up round, then {runs} rounds."
        ),
        unit: "MiB/s",
        lower_is_better: false,
        series: from_host,
        ratios: Vec::new(),
        notes: Vec::new(),
    };
    h.finish(&[("isol-kvm", "isol-container")]);
    let n = sizes.net_requests;
    let mut q = Metric {
        id: "net-rr".into(),
        benchmark: "net",
        title: "Network: HTTP request latency".into(),
        method: format!(
            "{n} sequential busybox `wget -q -O /dev/null http://ADDR:8080/f` (a new TCP connection, one GET of a 3-byte file, the answer) from a client isol container on isol's bridge to a busybox `httpd` in an isol container (its veth) or a VM (virtio-net on a tap) on the bridge; host: client and server on loopback in a fresh network namespace (`unshare -n`). Timed inside the client from before the first request to the last answer; each sample is the mean per request, ms (lower is better), the client's fork and exec of wget included (the same client for every series, so only the server's side differs). One warm-up round, then {runs} rounds."
        ),
        unit: "ms",
        lower_is_better: true,
        series: rr,
        ratios: Vec::new(),
        notes: Vec::new(),
    };
    q.finish(&[("isol-container", "host"), ("isol-kvm", "isol-container")]);
    Some(vec![m, h, q])
}

/// `n` sequential HTTP GETs to a busybox httpd in `r` (for the host: both on loopback in a
/// fresh network namespace; for isol: the server on the bridge, the client a container).
fn net_rr(r: &Runner, n: u32) -> Result<f64, String> {
    let client = |addr: &str| {
        format!(
            "sleep 0.2; {{ echo S; i=0; while [ $i -lt {n} ]; do wget -q -O /dev/null http://{addr}:8080/f || {{ echo FAIL wget; break; }}; i=$((i+1)); done; [ $i -eq {n} ] && echo E; }} | ts %.s"
        )
    };
    let prep = "mkdir -p rr && echo ok > rr/f";
    match r {
        Runner::Host { bin_dir, io_dir } => {
            let script = format!(
                "ip link set lo up; {prep} || exit; httpd -f -p 8080 -h rr & {}; kill $!",
                client("127.0.0.1")
            );
            let mut cmd = Command::new(bin_dir.join("unshare"));
            cmd.env("PATH", bin_dir)
                .current_dir(io_dir)
                .args(["-n", "sh", "-c", &script]);
            let (o, e) = output_with_timeout(&mut cmd)?;
            parse_marks(&o)
                .map(|x| x.0)
                .map_err(|m| format!("{m} {}", last_line(&e)))
        }
        Runner::Isol { .. } => {
            // The server ends when its stdin closes (cat), taking its daemonized httpd with the
            // container's PID namespace or the VM.
            let mut server = Instance::spawn(&mut r.command(
                &format!(
                    "cd /tmp && {prep} && httpd -p 8080 -h rr; ip -4 -o addr show eth0; echo ready; cat >/dev/null"
                ),
                true,
                true,
            ))?;
            let out = server.read_until("ready", Instant::now() + Duration::from_secs(60));
            let res = out.and_then(|out| {
                let addr = eth0_address(&out)?;
                let mut cmd = container_of(r).command(&client(&addr), false, true);
                let (o, e) = output_with_timeout(&mut cmd)?;
                parse_marks(&o)
                    .map(|x| x.0)
                    .map_err(|m| format!("{m} {}", last_line(&e)))
            });
            let closed = server.close(Instant::now() + close_time());
            res.and_then(|ms| closed.map(|()| ms))
        }
    }
}

/// The address in a server's `ip -4 -o addr show eth0` line.
fn eth0_address(out: &str) -> Result<String, String> {
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| format!("the server printed no address: {out}"))
}

/// The container runner of the same isol as `r` (the client side of the network benchmarks:
/// for the kvm series only the server differs).
fn container_of(r: &Runner) -> Runner {
    match r {
        Runner::Isol {
            exe,
            store_root,
            kvm: true,
            ..
        } => Runner::Isol {
            exe: exe.clone(),
            store_root: store_root.clone(),
            kvm: false,
            kernel: None,
        },
        other => other.clone(),
    }
}

fn net_host(r: &Runner, bytes: u64) -> Result<f64, String> {
    // The listener keeps the script's stdin (a pipe that stays open while it receives: busybox
    // nc quits at EOF on its stdin); the bench closes it once the sender is done.
    let script = format!(
        "exec 3<&0; ip link set lo up; nc -l -p 5001 >/dev/null <&3 & sleep 0.3; {{ echo S; head -c {bytes} /dev/zero | nc 127.0.0.1 5001; echo E; }} | ts %.s"
    );
    let Runner::Host { bin_dir, io_dir } = r else {
        unreachable!()
    };
    let mut cmd = Command::new(bin_dir.join("unshare"));
    cmd.env("PATH", bin_dir)
        .current_dir(io_dir)
        .args(["-n", "sh", "-c", &script]);
    let mut inst = Instance::spawn(&mut cmd)?;
    let out = inst.read_until("E", Instant::now() + Duration::from_secs(120));
    let closed = inst.close(Instant::now() + close_time());
    parse_marks(&out?)
        .map(|x| x.0)
        .and_then(|ms| closed.map(|()| ms))
}

/// `r` receiving on the bridge from a container (`from` `None`) or from the host's `from`.
fn net_bridge(r: &Runner, bytes: u64, from: Option<&Runner>) -> Result<f64, String> {
    let mut server = Instance::spawn(&mut r.command(
        "ip -4 -o addr show eth0; echo ready; nc -l -p 5001 >/dev/null",
        true,
        true,
    ))?;
    let out = server.read_until("ready", Instant::now() + Duration::from_secs(60));
    let res = out.and_then(|out| {
        let addr = eth0_address(&out)?;
        // The listener needs a moment after printing "ready".
        let client = format!(
            "sleep 0.2; {{ echo S; head -c {bytes} /dev/zero | nc {addr} 5001 || echo FAIL nc; echo E; }} | ts %.s"
        );
        // The sender is always a container: for the kvm series only the receiver differs.
        let sender = container_of(r);
        let mut cmd = match from {
            Some(Runner::Host { bin_dir, io_dir }) => {
                let mut c = Command::new(bin_dir.join("sh"));
                c.env("PATH", bin_dir)
                    .current_dir(io_dir)
                    .args(["-c", &client]);
                c
            }
            _ => sender.command(&client, false, true),
        };
        let (o, e) = output_with_timeout(&mut cmd)?;
        parse_marks(&o)
            .map(|x| x.0)
            .map_err(|m| format!("{m} {}", last_line(&e)))
    });
    let closed = server.close(Instant::now() + close_time());
    res.and_then(|ms| closed.map(|()| ms))
}

/// A running instance with piped stdin/stdout, stderr to a file.
struct Instance {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr_path: Option<PathBuf>,
}

impl Instance {
    fn spawn(cmd: &mut Command) -> Result<Instance, String> {
        Instance::spawn_with(cmd, None)
    }

    fn spawn_with(cmd: &mut Command, stderr_path: Option<PathBuf>) -> Result<Instance, String> {
        let stderr = match &stderr_path {
            Some(p) => Stdio::from(
                File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?,
            ),
            None => Stdio::null(),
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
        // No run is armed while instances idle: the second Ctrl-C finds them here.
        cancel::track(child.id());
        let out = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Instance {
            child,
            lines: rx,
            stderr_path,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads lines until one ends with `word`, until `deadline`; returns everything read.
    fn read_until(&mut self, word: &str, deadline: Instant) -> Result<String, String> {
        let mut all = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    all.push_str(&l);
                    all.push('\n');
                    if l.trim_end().ends_with(word) {
                        return Ok(all);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let said = last_line(&all);
                    return Err(format!(
                        "no `{word}` from pid {} in time{}",
                        self.pid(),
                        if said.is_empty() {
                            String::new()
                        } else {
                            format!(" (it printed: {said})")
                        }
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let err = self
                        .stderr_path
                        .as_ref()
                        .and_then(|p| fs::read_to_string(p).ok())
                        .map(|e| last_line(&e).to_string())
                        .unwrap_or_default();
                    return Err(format!(
                        "it ended before printing `{word}`: {} {err}",
                        last_line(&all)
                    ));
                }
            }
        }
    }

    /// Closes stdin: the workload's `read` ends, a listener stops.
    fn hang_up(&mut self) {
        if let Some(mut i) = self.child.stdin.take() {
            let _ = i.write_all(b"\n");
        }
    }

    /// Hangs up and waits for the instance to end until `deadline`; one still running then is
    /// stopped ([`reap::stop`]) and the error says so.
    fn close(mut self, deadline: Instant) -> Result<(), String> {
        self.hang_up();
        let pid = self.pid();
        let res = if reap::wait_until(&mut self.child, deadline).is_some() {
            Ok(())
        } else {
            Err(format!(
                "pid {pid} did not end after its stdin was closed: {}",
                reap::stop(self.child)
            ))
        };
        cancel::untrack(pid);
        res
    }
}

/// Closes every instance in `insts` (all hung up first, one deadline for all); the first error.
fn close_all(insts: Vec<Instance>, grace: Duration) -> Result<(), String> {
    let mut insts = insts;
    for i in insts.iter_mut() {
        i.hang_up();
    }
    let deadline = Instant::now() + grace;
    let mut first = Ok(());
    for i in insts {
        if let Err(e) = i.close(deadline) {
            first = first.and(Err(e));
        }
    }
    first
}

/// How long instances get: to print `ready` (`n` of them started at once), and to end once
/// their stdin is closed. `ISOL_BENCH_INSTANCE_TIMEOUT` (seconds) sets both, for slow
/// machines and for tests of the timeout path.
fn ready_time(n: u32) -> Duration {
    instance_timeout_override().unwrap_or(Duration::from_secs(120 + 6 * u64::from(n)))
}

fn close_time() -> Duration {
    instance_timeout_override().unwrap_or(Duration::from_secs(30))
}

fn instance_timeout_override() -> Option<Duration> {
    std::env::var("ISOL_BENCH_INSTANCE_TIMEOUT")
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Resident memory of `pid` in MiB: (RSS, peak RSS).
fn proc_mem(pid: u32) -> Option<(f64, f64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok();
    mem_of(&status, rollup.as_deref())
}

/// (RSS, peak RSS) in MiB from `/proc/PID/status` and `/proc/PID/smaps_rollup`. RSS is the
/// rollup's `Rss`, counted from the page tables; status's `VmRSS` only where the rollup is
/// missing: kernels before 6.2 keep it in per-thread counters folded into the process's only
/// every 64 page faults (SPLIT_RSS_COUNTING), so a small process reads far too little there —
/// busybox sh idle in the lab's 6.1 kernel: VmRSS 4 kB, Rss 1624 kB. The peak is `VmHWM`
/// (from the same counters), raised to at least the RSS.
fn mem_of(status: &str, rollup: Option<&str>) -> Option<(f64, f64)> {
    let field = |text: &str, k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    let rss = rollup
        .and_then(|r| field(r, "Rss:"))
        .or_else(|| field(status, "VmRSS:"))?;
    Some((rss, field(status, "VmHWM:")?.max(rss)))
}

/// Memory charged to the cgroup of `pid`'s first child (the container's init), in MiB.
fn child_cgroup_mem(pid: u32) -> Option<f64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let child = tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .next()?;
    let cg = fs::read_to_string(format!("/proc/{child}/cgroup")).ok()?;
    let bytes = |p: String| {
        fs::read_to_string(p)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    for line in cg.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
        if ctrl.split(',').any(|c| c == "memory") {
            return bytes(format!("/sys/fs/cgroup/memory{path}/memory.usage_in_bytes"))
                .map(|b| b / 1048576.0);
        }
    }
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    bytes(format!("/sys/fs/cgroup{path}/memory.current")).map(|b| b / 1048576.0)
}

fn mem_available_mib() -> Option<f64> {
    fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

const IDLE: &str = "echo ready; read x; exit 0";

/// How the memory and density benchmarks bound their waits, for their methods.
const WAITS: &str = "Every wait is bounded: N instances must all print `ready` within 120 + 6·N s and end within 30 s once their stdin is closed; an instance that does not is stopped (SIGTERM to its process group, SIGKILL 5 s later) and the subject's row is marked failed with the reason, larger N not tried.";

/// The idle workload: [`IDLE`], or `ISOL_BENCH_IDLE_SCRIPT` (for tests of the path where an
/// instance never gets ready).
fn idle_script() -> String {
    std::env::var("ISOL_BENCH_IDLE_SCRIPT").unwrap_or_else(|_| IDLE.into())
}

/// One idle instance's memory, in MiB: (runtime RSS, runtime HWM, cgroup memory).
struct Idle {
    rss: f64,
    hwm: f64,
    cgroup: f64,
    /// A microVM's: the VMM's RSS beyond its guest RAM's resident pages (plus what only the
    /// jail's relay holds), the measure of docs/benchmarks-vm.md ("VMM overhead").
    vmm_overhead: Option<f64>,
    /// What only a jailed VMM's relay holds (its private pages), in `rss` and `vmm_overhead`.
    relay: f64,
    /// The RSS of the instance's virtiofsd processes (a microVM's shared directories).
    virtiofsd: f64,
}

/// What an instance gets beyond its console and root: a network (`--network bridge`) and a
/// shared directory (`-v DIR:/shared`: virtio-fs and a virtiofsd on kvm).
#[derive(Clone, Copy, Default)]
struct Devices<'a> {
    bridge: bool,
    share: Option<&'a Path>,
}

impl Devices<'_> {
    fn name(&self) -> &'static str {
        match (self.bridge, self.share.is_some()) {
            (false, false) => "console and root only",
            (true, false) => "+ network",
            (false, true) => "+ shared directory",
            (true, true) => "+ network + shared directory",
        }
    }

    fn key(&self) -> &'static str {
        match (self.bridge, self.share.is_some()) {
            (false, false) => "plain",
            (true, false) => "net",
            (false, true) => "fs",
            (true, true) => "net+fs",
        }
    }
}

/// Guest RAM is the largest mapping of at least this much (KiB) in a VMM's smaps.
const GUEST_RAM_MIN_KIB: u64 = 32 << 10;

/// The processes below `pid` (its children, theirs, …).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// Starts `n` idle instances at once; returns the time until all printed `ready`, their
/// memory (measured after a short settle), and the drop in MemAvailable.
fn start_idle(
    r: &Runner,
    n: u32,
    work: &Path,
    measure: bool,
) -> Result<(f64, Vec<Idle>, f64), String> {
    start_idle_with(r, n, work, measure, Devices::default())
}

/// Spawns `n` instances from `command` back to back (stderr to `<work>/idle-SUBJECT-I.err`)
/// and waits, under one deadline, until each printed `ready`. Returns the milliseconds from
/// the first spawn until the last was ready, the instances (to measure and close), and
/// whether all got ready.
fn launch_idle(
    n: u32,
    work: &Path,
    subject: &str,
    mut command: impl FnMut() -> Result<Command, String>,
) -> (f64, Vec<Instance>, Result<(), String>) {
    let t0 = Instant::now();
    let mut insts = Vec::new();
    let mut res = Ok(());
    for i in 0..n {
        if cancel::cancelled() {
            res = Err("cancelled".into());
            break;
        }
        let errf = work.join(format!("idle-{subject}-{i}.err"));
        match command().and_then(|mut cmd| Instance::spawn_with(&mut cmd, Some(errf))) {
            Ok(x) => insts.push(x),
            Err(e) => {
                res = Err(e);
                break;
            }
        }
    }
    // One deadline for all of them to be ready.
    let limit = ready_time(n);
    let deadline = t0 + limit;
    for (k, inst) in insts.iter_mut().enumerate() {
        if res.is_err() {
            break;
        }
        if let Err(e) = inst.read_until("ready", deadline) {
            res = Err(if Instant::now() >= deadline {
                format!(
                    "instance {}/{n} not ready within {} s ({e})",
                    k + 1,
                    limit.as_secs()
                )
            } else {
                format!("instance {}/{n}: {e}", k + 1)
            });
        }
    }
    (t0.elapsed().as_secs_f64() * 1e3, insts, res)
}

/// A peer VMM among the density benchmark's subjects (QEMU microvm): its report name and
/// label, and what starts one idle instance of `sh -c SCRIPT` (the script's argument) with
/// the workload's stdio on the command's own.
pub struct DensityPeer {
    pub subject: String,
    pub label: String,
    /// Why it is not measured (not installed, no kvm side), if it is not.
    pub skipped: Option<String>,
    pub command: IdleCommand,
}

/// What starts one idle instance of `sh -c SCRIPT`, given the script.
pub type IdleCommand = Box<dyn FnMut(&str) -> Result<Command, String>>;

/// `n` idle instances of `peer` started at once: the milliseconds until all were ready; each
/// is closed (its stdin) and must end.
fn start_idle_peer(peer: &mut DensityPeer, n: u32, work: &Path) -> Result<f64, String> {
    let script = idle_script();
    let (elapsed, insts, res) = launch_idle(n, work, &peer.subject, || (peer.command)(&script));
    let closed = close_all(insts, close_time());
    both(res, closed).map(|()| elapsed)
}

/// A run's result and its instances' closing: an instance that does not end when its stdin
/// closes fails the measurement too.
fn both(res: Result<(), String>, closed: Result<(), String>) -> Result<(), String> {
    match (res, closed) {
        (Err(e), Err(c)) => Err(format!("{e}; {c}")),
        (Err(e), Ok(())) => Err(e),
        (Ok(()), Err(c)) => Err(c),
        (Ok(()), Ok(())) => Ok(()),
    }
}

/// [`start_idle`] with `devices`.
fn start_idle_with(
    r: &Runner,
    n: u32,
    work: &Path,
    measure: bool,
    devices: Devices,
) -> Result<(f64, Vec<Idle>, f64), String> {
    let before = mem_available_mib().unwrap_or(0.0);
    let script = idle_script();
    let (elapsed, insts, res) = launch_idle(n, work, r.subject(), || {
        Ok(r.command_with(&script, true, devices.bridge, devices.share))
    });
    let mut mems = Vec::new();
    let mut drop_mib = 0.0;
    if res.is_ok() && measure {
        std::thread::sleep(Duration::from_millis(300));
        drop_mib = (before - mem_available_mib().unwrap_or(before)).max(0.0);
        for inst in &insts {
            // A jailed VMM (isol-vmm's jail) runs under a relay: the VMM's memory, plus
            // what only the relay holds.
            let jailed = matches!(r, Runner::Isol { kvm: true, .. })
                .then(|| super::qemu_microvm::jailed_child(inst.pid()))
                .flatten();
            let relay = jailed.map_or(0.0, |_| {
                super::qemu_microvm::private_kib(inst.pid()).unwrap_or(0) as f64 / 1024.0
            });
            let vmm = jailed.unwrap_or(inst.pid());
            let (rss, hwm) = proc_mem(vmm).unwrap_or((0.0, 0.0));
            let (rss, hwm) = (rss + relay, hwm + relay);
            // The VMM's RSS and its guest RAM's from one read of its smaps.
            let vmm_overhead = r
                .is_kvm()
                .then(|| super::qemu_microvm::rss_and_guest_kib(vmm, GUEST_RAM_MIN_KIB))
                .flatten()
                .and_then(|(total, guest)| {
                    guest.map(|g| total.saturating_sub(g) as f64 / 1024.0 + relay)
                });
            let virtiofsd = descendants(inst.pid())
                .into_iter()
                .filter(|p| {
                    fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim() == "virtiofsd")
                })
                .filter_map(|p| proc_mem(p).map(|(rss, _)| rss))
                .fold(0.0, |a, b| a + b);
            let cgroup = match r {
                Runner::Isol { kvm: false, .. } => child_cgroup_mem(inst.pid()).unwrap_or(0.0),
                _ => 0.0,
            };
            mems.push(Idle {
                rss,
                hwm,
                cgroup,
                vmm_overhead,
                relay,
                virtiofsd,
            });
        }
    }
    let closed = close_all(insts, close_time());
    both(res, closed).map(|()| (elapsed, mems, drop_mib))
}

/// Memory overhead of one idle instance, its growth with N, and start-up density.
pub struct MemoryPlan {
    pub growth: Vec<u32>,
    pub density: Vec<u32>,
    pub runs: u32,
    pub density_runs: u32,
    pub want_memory: bool,
    pub want_density: bool,
    /// Largest N of kvm instances started at once, and why not more.
    pub kvm_density_max: Option<(u32, &'static str)>,
}

/// One row group of the density table: a subject, whether it is a VM (for the lab's bound
/// on VMs started at once), and its per-instance memory in MiB where known (for the budget).
struct DensitySubject<'a> {
    subject: &'a str,
    label: &'a str,
    vm: bool,
    per_mib: Option<f64>,
}

/// The density series of `d`, one per N of the plan: `start(n)` starts n instances at once
/// and returns the milliseconds until all were ready. An N over the lab's bound or over half
/// of the `avail` MiB is skipped, and after a failure larger N are not tried. `None` when
/// cancelled.
fn density_series(
    d: &DensitySubject<'_>,
    plan: &MemoryPlan,
    avail: f64,
    progress: Progress,
    mut start: impl FnMut(u32) -> Result<f64, String>,
) -> Option<Vec<Series>> {
    let mut series = Vec::new();
    let mut failed: Option<String> = None;
    for &n in &plan.density {
        let mut s = Series::new(&format!("{}×{n}", d.subject), &format!("{} ×{n}", d.label));
        if let Some(why) = &failed {
            series.push(Series::skipped(&s.subject, &s.label, why.clone()));
            continue;
        }
        if let (true, Some((max, why))) = (d.vm, plan.kvm_density_max)
            && n > max
        {
            series.push(Series::skipped(&s.subject, &s.label, why.to_string()));
            continue;
        }
        if let Some(p) = d.per_mib
            && p * f64::from(n) > avail * 0.5
        {
            series.push(Series::skipped(
                &s.subject,
                &s.label,
                format!("{n} × {p:.1} MiB would exceed half of the {avail:.0} MiB available"),
            ));
            continue;
        }
        for round in 0..plan.density_runs {
            progress(format!(
                "density: {} ×{n}, {}/{}",
                d.label,
                round + 1,
                plan.density_runs
            ));
            let res = start(n);
            if cancel::cancelled() {
                return None;
            }
            match res {
                Ok(ms) => s.push(ms),
                Err(e) => {
                    failed = Some(format!("not tried: ×{n} failed ({e})"));
                    s.fail(e);
                    break;
                }
            }
        }
        series.push(s);
    }
    Some(series)
}

/// The RSS in MiB of one idle instance of `peer` (a VMM: guest RAM included), 300 ms after
/// it was ready.
fn peer_idle_rss(peer: &mut DensityPeer, work: &Path) -> Result<f64, String> {
    let script = idle_script();
    let (_, insts, res) = launch_idle(1, work, &peer.subject, || (peer.command)(&script));
    let rss = res.and_then(|()| {
        std::thread::sleep(Duration::from_millis(300));
        insts
            .first()
            .and_then(|i| proc_mem(i.pid()))
            .map(|(rss, _)| rss)
            .ok_or_else(|| "no memory reading".to_string())
    });
    let closed = close_all(insts, close_time());
    both(rss.as_ref().map(|_| ()).map_err(Clone::clone), closed).and(rss)
}

pub fn memory_metrics(
    runners: &[Runner],
    peers: &mut [DensityPeer],
    plan: &MemoryPlan,
    work: &Path,
    progress: Progress,
) -> Option<Vec<Metric>> {
    let mut out = Vec::new();
    // The workload's own footprint, on the host: what an instance costs beyond it.
    let mut host_rss = Vec::new();
    let mut idle: Vec<Series> = runners
        .iter()
        .map(|r| Series::new(r.subject(), r.label()))
        .collect();
    if plan.want_memory {
        for round in 0..plan.runs {
            progress(format!("memory: round {}/{}", round + 1, plan.runs));
            for (r, s) in runners.iter().zip(idle.iter_mut()) {
                if s.status != Status::Ok {
                    continue;
                }
                let res = start_idle(r, 1, work, true);
                if cancel::cancelled() {
                    return None;
                }
                match res {
                    Ok((_, m, _)) if !m.is_empty() => {
                        let m = &m[0];
                        if matches!(r, Runner::Host { .. }) {
                            host_rss.push(m.rss);
                        }
                        s.part("runtime_rss_mib", m.rss);
                        s.part("runtime_hwm_mib", m.hwm);
                        s.part("cgroup_mib", m.cgroup);
                        if let Some(o) = m.vmm_overhead {
                            s.part("vmm_overhead_mib", o);
                        }
                        s.push(m.rss + m.cgroup);
                    }
                    Ok(_) => s.fail("no memory reading".into()),
                    Err(e) => s.fail(format!("round {round}: {e}")),
                }
            }
        }
        let base = super::stats::Summary::of(&host_rss).map_or(0.0, |s| s.median);
        // Overhead = instance total minus what the workload needs on the host.
        for s in idle.iter_mut().filter(|s| s.subject != "host") {
            s.samples = s.samples.iter().map(|v| (v - base).max(0.0)).collect();
        }
        let mut m = Metric {
            id: "memory".into(),
            benchmark: "memory",
            title: "Memory overhead of one idle instance".into(),
            method: format!(
                "each instance runs busybox `sh -c '{IDLE}'` with a piped stdin; once it printed `ready` and 300 ms passed, the bench reads the RSS of the runtime process (`isol run`; for kvm that process is the VMM, `isol-vmm`, which `isol run` execs, and its RSS includes the guest RAM the guest touched; a jailed VMM runs as the child of that process, its relay, and the row is the VMM's RSS plus the relay's private memory) from /proc/PID/smaps_rollup (`Rss`: counted from the page tables; status's VmRSS lags on kernels before 6.2) and, for containers, the memory charged to the container's cgroup (v1 memory.usage_in_bytes / v2 memory.current, page cache included). The host row is the same script run directly on the host (its RSS); the isol rows are runtime RSS + cgroup memory minus that host median, i.e. the overhead beyond the workload itself. {} instance at a time, {} rounds. Parts per sample in report.json (`runtime_rss_mib`, `runtime_hwm_mib`, `cgroup_mib`; for kvm `vmm_overhead_mib`, the VMM's RSS beyond its guest RAM's resident pages, as the next table). {WAITS}",
                1, plan.runs
            ),
            unit: "MiB",
            lower_is_better: true,
            series: idle,
            ratios: Vec::new(),
            notes: vec![format!(
                "the host workload itself (busybox sh) has a median RSS of {base:.2} MiB, subtracted from the isol rows"
            )],
        };
        m.finish(&[("isol-kvm", "isol-container")]);
        out.push(m);

        if let Some(m) = vmm_overhead_with_devices(runners, plan, work, progress) {
            out.push(m);
        }
        if cancel::cancelled() {
            return None;
        }

        // Growth with N instances.
        let mut series = Vec::new();
        for r in runners.iter().filter(|r| !matches!(r, Runner::Host { .. })) {
            // After a failure, larger N are not tried (each would wait out its deadline).
            let mut failed: Option<String> = None;
            for &n in &plan.growth {
                progress(format!("memory growth: {} ×{n}", r.label()));
                let mut s = Series::new(
                    &format!("{}×{n}", r.subject()),
                    &format!("{} ×{n}", r.label()),
                );
                if let Some(why) = &failed {
                    series.push(Series::skipped(&s.subject, &s.label, why.clone()));
                    continue;
                }
                let res = start_idle(r, n, work, true);
                if cancel::cancelled() {
                    return None;
                }
                match res {
                    Ok((_, m, drop_mib)) => {
                        let total: f64 = m.iter().map(|x| x.rss + x.cgroup - base).sum();
                        s.push(total);
                        s.part("per_instance_mib", total / f64::from(n));
                        s.part("mem_available_drop_mib", drop_mib);
                    }
                    Err(e) => {
                        failed = Some(format!("not tried: ×{n} failed ({e})"));
                        s.fail(e);
                    }
                }
                series.push(s);
            }
        }
        let mut m = Metric {
            id: "memory-growth".into(),
            benchmark: "memory",
            title: "Memory of N idle instances".into(),
            method: format!(
                "N instances of the idle workload started at once (N = {}); the sum over them of the overhead measured as above, once per N. `per_instance_mib` and the drop of the host's MemAvailable (noisy on a busy machine) are in report.json.",
                plan.growth
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            unit: "MiB",
            lower_is_better: true,
            series,
            ratios: Vec::new(),
            notes: Vec::new(),
        };
        m.finish(&[]);
        for s in &m.series {
            if let (Some(p), Some(d)) = (
                s.parts.get("per_instance_mib").and_then(|v| v.first()),
                s.parts
                    .get("mem_available_drop_mib")
                    .and_then(|v| v.first()),
            ) {
                m.notes.push(format!(
                    "{}: {p:.2} MiB per instance; MemAvailable dropped by {d:.1} MiB",
                    s.label
                ));
            }
        }
        out.push(m);
    }

    if plan.want_density {
        let avail = mem_available_mib().unwrap_or(0.0);
        let mut series = Vec::new();
        let mut notes = Vec::new();
        let base = base_of(&out);
        for r in runners.iter().filter(|r| !matches!(r, Runner::Host { .. })) {
            let per = out
                .iter()
                .find(|m| m.id == "memory")
                .and_then(|m| m.series.iter().find(|s| s.subject == r.subject()))
                .and_then(|s| s.summary)
                .map(|s| s.median + base);
            let subject = DensitySubject {
                subject: r.subject(),
                label: r.label(),
                vm: r.is_kvm(),
                per_mib: per,
            };
            series.extend(density_series(&subject, plan, avail, progress, |n| {
                start_idle(r, n, work, false).map(|(ms, _, _)| ms)
            })?);
            if let Some(p) = per.filter(|p| *p > 0.0) {
                notes.push(format!(
                    "{}: a memory budget of {avail:.0} MiB (MemAvailable when density started) fits about {} idle instances at {p:.2} MiB each — computed from the measured per-instance memory (runtime RSS + cgroup), not measured",
                    r.label(),
                    (avail / p).floor()
                ));
            }
        }
        for peer in peers.iter_mut() {
            let (name, label) = (peer.subject.clone(), peer.label.clone());
            let row = |n: &u32| (format!("{name}×{n}"), format!("{label} ×{n}"));
            if let Some(why) = &peer.skipped {
                series.extend(plan.density.iter().map(|n| {
                    let (s, l) = row(n);
                    Series::skipped(&s, &l, why.clone())
                }));
                continue;
            }
            // What one idle instance of the peer holds (its RSS, guest RAM included), for
            // the budget: measured once here.
            progress(format!("density: {label}, one idle instance's memory"));
            match peer_idle_rss(peer, work) {
                Err(e) => series.extend(plan.density.iter().map(|n| {
                    let (s, l) = row(n);
                    let mut s = Series::new(&s, &l);
                    s.fail(format!("one idle instance: {e}"));
                    s
                })),
                Ok(per) => {
                    let subject = DensitySubject {
                        subject: &name,
                        label: &label,
                        vm: true,
                        per_mib: Some(per),
                    };
                    series.extend(density_series(&subject, plan, avail, progress, |n| {
                        start_idle_peer(peer, n, work)
                    })?);
                    notes.push(format!(
                        "{label}: one idle instance holds {per:.1} MiB (QEMU's RSS, guest RAM included), for the budget"
                    ));
                }
            }
        }
        let mut m = Metric {
            id: "density".into(),
            benchmark: "density",
            title: "Density: N instances started at once until all run".into(),
            method: format!(
                "N idle instances (`sh -c '{IDLE}'`) spawned back to back; the time from the first spawn until every one printed `ready` (all are running), for N = {}; {} round(s) each. A peer VMM (QEMU microvm) boots the guest isol's kvm backend boots (its kernel, root disk and guest init, 128 MiB, 1 vCPU) with the console's ports on its own stdin, stdout and stderr. N is skipped when N × the per-instance memory would exceed half of MemAvailable. The notes give it as a rate: N / that time / the machine's online CPUs, instances started per second per core. {WAITS}",
                plan.density
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                plan.density_runs
            ),
            unit: "ms",
            lower_is_better: true,
            series,
            ratios: Vec::new(),
            notes,
        };
        // isol's microVMs against its containers, and against each peer VMM's.
        let pairs: Vec<(String, String)> = plan
            .density
            .iter()
            .flat_map(|n| {
                std::iter::once(("isol-container".to_string(), n))
                    .chain(peers.iter().map(move |p| (p.subject.clone(), n)))
                    .map(move |(den, n)| (format!("isol-kvm×{n}"), format!("{den}×{n}")))
            })
            .collect();
        let refs: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        m.finish(&refs);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for s in &m.series {
            let n = s
                .subject
                .rsplit_once('×')
                .and_then(|(_, n)| n.parse::<f64>().ok());
            if let (Some(n), Some(sum)) = (n, s.summary) {
                m.notes.push(format!(
                    "{}: {:.2} started per second per core ({n} in {:.0} ms, median, on {cores} CPUs)",
                    s.label,
                    starts_per_core_second(n, sum.median, cores),
                    sum.median
                ));
            }
        }
        out.push(m);
    }
    Some(out)
}

/// The microVM's VMM overhead (its RSS beyond the guest RAM's resident pages) with each set
/// of devices a run can add: a network, a shared directory, both; and the virtiofsd's memory
/// beside it. `None` without a kvm runner.
fn vmm_overhead_with_devices(
    runners: &[Runner],
    plan: &MemoryPlan,
    work: &Path,
    progress: Progress,
) -> Option<Metric> {
    let r = runners.iter().find(|r| r.is_kvm())?;
    let share = work.join("devices-share");
    let made = fs::create_dir_all(&share).and_then(|()| fs::write(share.join("file"), "shared\n"));
    let sets = [
        Devices::default(),
        Devices {
            bridge: true,
            share: None,
        },
        Devices {
            bridge: false,
            share: Some(&share),
        },
        Devices {
            bridge: true,
            share: Some(&share),
        },
    ];
    let mut series = Vec::new();
    for d in sets {
        let subject = format!("isol-kvm {}", d.key());
        let label = format!("isol (kvm) {}", d.name());
        let mut s = Series::new(&subject, &label);
        if let Err(e) = &made {
            series.push(Series::skipped(
                &subject,
                &label,
                format!("cannot make {}: {e}", share.display()),
            ));
            continue;
        }
        for round in 0..plan.runs {
            progress(format!(
                "memory with devices: {}, {}/{}",
                d.name(),
                round + 1,
                plan.runs
            ));
            let res = start_idle_with(r, 1, work, true, d);
            if cancel::cancelled() {
                return None;
            }
            match res {
                Ok((_, m, _)) => match m.first().and_then(|m| m.vmm_overhead.map(|o| (o, m))) {
                    Some((o, m)) => {
                        s.part("runtime_rss_mib", m.rss);
                        s.part("relay_private_mib", m.relay);
                        s.part("virtiofsd_rss_mib", m.virtiofsd);
                        s.push(o);
                    }
                    None => s.fail("no guest RAM mapping found in the VMM's smaps".into()),
                },
                Err(e) => {
                    s.fail(format!("round {round}: {e}"));
                    break;
                }
            }
        }
        series.push(s);
    }
    let mut m = Metric {
        id: "memory-devices".into(),
        benchmark: "memory",
        title: "A microVM's VMM overhead with its devices".into(),
        method: format!(
            "one idle microVM as in the memory table, with: only its console and root; `--network bridge` (virtio-net and a tap); `-v DIR:/shared` (virtio-fs, whose vhost-user backend, a virtiofsd, maps guest RAM: then a shared memfd); both. The sample is the VMM's RSS minus the resident pages of its guest RAM mapping (the largest mapping of at least {} MiB, anonymous or the memfd), both from one read of /proc/PID/smaps, plus the jail relay's private memory: what the VMM costs beyond the guest's memory, the measure of docs/benchmarks-vm.md. The virtiofsd processes' RSS (`virtiofsd_rss_mib`; they map guest RAM too, so it includes the pages they touched), the VMM's whole RSS (`runtime_rss_mib`) and the relay's share (`relay_private_mib`, the jail's relay process that waits for the VMM) are parts in report.json. {} rounds each.",
            GUEST_RAM_MIN_KIB >> 10,
            plan.runs
        ),
        unit: "MiB",
        lower_is_better: true,
        series,
        ratios: Vec::new(),
        notes: Vec::new(),
    };
    m.finish(&[]);
    for s in &m.series {
        if let Some(v) = s
            .parts
            .get("virtiofsd_rss_mib")
            .filter(|v| v.iter().any(|x| *x > 0.0))
        {
            let median = super::stats::Summary::of(v).map_or(0.0, |s| s.median);
            m.notes.push(format!(
                "{}: virtiofsd RSS {median:.2} MiB (median), beside the VMM",
                s.label
            ));
        }
    }
    Some(m)
}

/// Density as a rate: `n` instances all running `ms` after the first spawn, on `cores` CPUs.
fn starts_per_core_second(n: f64, ms: f64, cores: usize) -> f64 {
    n / (ms / 1e3) / cores as f64
}

fn base_of(out: &[Metric]) -> f64 {
    out.iter()
        .find(|m| m.id == "memory")
        .and_then(|m| m.series.iter().find(|s| s.subject == "host"))
        .and_then(|s| s.summary)
        .map_or(0.0, |s| s.median)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn density_as_a_rate_is_per_second_and_per_core() {
        assert!((starts_per_core_second(10.0, 2000.0, 2) - 2.5).abs() < 1e-9);
        assert!((starts_per_core_second(50.0, 1000.0, 1) - 50.0).abs() < 1e-9);
    }

    #[test]
    fn the_processes_below_one_are_its_descendants() {
        let mut c = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & sleep 30; wait"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let found = loop {
            let d = descendants(c.id());
            if d.len() >= 2 || std::time::Instant::now() > deadline {
                break d;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        c.kill().unwrap();
        c.wait().unwrap();
        for p in &found {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*p as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert_eq!(found.len(), 2, "{found:?}");
    }

    #[test]
    fn shared_directories_are_filled_as_the_workloads_expect() {
        let dir = std::env::temp_dir().join(format!("isol-bench-fill-{}", std::process::id()));
        Fill::File(2).make(&dir.join("f")).unwrap();
        let size = fs::metadata(dir.join("f/r.dat")).map(|m| m.len());
        Fill::Tree(3, 4).make(&dir.join("t")).unwrap();
        let files: usize = fs::read_dir(dir.join("t/tree"))
            .unwrap()
            .map(|e| fs::read_dir(e.unwrap().path()).unwrap().count())
            .sum();
        Fill::Empty.make(&dir.join("e")).unwrap();
        let empty = fs::read_dir(dir.join("e")).unwrap().count();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(size.unwrap(), 2 << 20);
        assert_eq!(files, 12);
        assert_eq!(empty, 0);
        // Every shared workload writes where the share is, and only there.
        for w in timed_workloads(Sizes::new(true), &["shared"]) {
            assert!(w.share.is_some(), "{}", w.id);
            assert!(w.body.contains("$D/"), "{}", w.id);
        }
    }

    #[test]
    fn marks_give_the_time_between_them() {
        let out = "1000.000100 S\n1000.250100 E\n";
        let (ms, notes) = parse_marks(out).unwrap();
        assert!((ms - 250.0).abs() < 1e-6);
        assert!(notes.is_empty());
        let out = "1.0 NOTE iflag=direct refused\n1.0 S\n2.0 E\n";
        assert_eq!(parse_marks(out).unwrap().1, ["iflag=direct refused"]);
        let err = parse_marks("1.0 S\n1.1 FAIL dd: boom\n").unwrap_err();
        assert!(err.contains("FAIL dd: boom"), "{err}");
    }

    #[test]
    fn memory_is_read_from_the_page_tables() {
        // busybox sh idle in the lab (Linux 6.1.0-56-amd64, 2026-11-23): status's split
        // counters said 4 kB, the page tables 1624 kB.
        let status = "State:\tS (sleeping)\nVmHWM:\t       4 kB\nVmRSS:\t       4 kB\n";
        let rollup = "55c0f0000000-7ffd00000000 ---p 00000000 00:00 0    [rollup]\nRss:                1624 kB\nPss:                1617 kB\n";
        assert_eq!(
            mem_of(status, Some(rollup)),
            Some((1624.0 / 1024.0, 1624.0 / 1024.0))
        );
        // Without smaps_rollup (CONFIG_PROC_PAGE_MONITOR off): status, as before.
        let status = "VmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(mem_of(status, None), Some((1.0, 2.0)));
        // A process that exited (a zombie) has neither.
        assert_eq!(mem_of("State:\tZ (zombie)\n", None), None);
        // A live process, this one.
        let (rss, hwm) = proc_mem(std::process::id()).unwrap();
        assert!(rss > 0.0 && hwm >= rss, "{rss} {hwm}");
    }
}
