//! Start-up benchmark: isol's VMM (`isol run --backend kvm IMAGE true`) against QEMU
//! `-M microvm` booting the same kernel with the same initramfs content.
//!
//! Run it where /dev/kvm is real, i.e. in the lab (`guest-images/bench/vm-start.sh`
//! builds it and runs it there). Both subjects get the same guest kernel (vmlinux,
//! PVH entry), 1 vCPU, the same guest RAM, the same devices (the image's read-only ext4
//! root disk on virtio-blk, a 3-port virtio console, a UART), the same command line
//! (except `reboot=k` vs `reboot=t`: QEMU microvm has no i8042, and each VMM's own
//! virtio-mmio windows) and the same initramfs content (isol's guest init and a run
//! spec for `true`). Each stops when the guest resets. Runs are interleaved A B A B
//! after a warm-up, with every file either VMM reads at start-up in RAM.
//!
//! Measured per run: wall time from spawn to reap (the VMM process's whole life), and
//! in separate runs (polling would perturb the timing) the peak RSS (`ru_maxrss` from
//! `wait4`) and the RSS of the guest RAM mapping (the largest anonymous mapping of at
//! least the guest size in `/proc/PID/smaps`, last value seen while reading it
//! every 50 ms, `qemu_microvm::SMAPS_EVERY`). VMM overhead = peak RSS − guest RAM resident.
//!
//! Options: `--runs N` (default 15), `--warmup N` (2), `--rss-runs N` (5),
//! `--memory MIB` (128), `--image NAME` (busybox), `--kernel FILE` (default
//! `$ISOL_KERNEL`, else guest-images/build-kernel.sh's vmlinux), `--qemu PATH`
//! (qemu-system-x86_64), `--isol PATH` (the release build of isol), `--disks DIR`
//! (where isol caches root disks: `$ISOL_HOME/vm-disks`, which `isol lab` sets to its tmpfs
//! store, else root's store /var/lib/isol/vm-disks).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use isol_bench::qemu_microvm::{self, Microvm, Qemu, QemuEnd};
use isol_vmm::{Rootfs, RunSpec};

type Res<T> = Result<T, String>;

struct Opts {
    runs: usize,
    warmup: usize,
    rss_runs: usize,
    memory_mib: u64,
    image: String,
    kernel: Option<PathBuf>,
    qemu: String,
    isol: PathBuf,
    disks: PathBuf,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_path_buf()
}

fn parse_opts() -> Res<Opts> {
    let root = repo_root();
    let mut o = Opts {
        runs: 15,
        warmup: 2,
        rss_runs: 5,
        memory_mib: 128,
        image: "busybox".into(),
        kernel: std::env::var_os("ISOL_KERNEL").map(PathBuf::from),
        qemu: "qemu-system-x86_64".into(),
        isol: root.join("target/x86_64-unknown-linux-gnu/release/isol"),
        disks: std::env::var_os("ISOL_HOME")
            .filter(|h| !h.is_empty())
            .map_or_else(|| PathBuf::from("/var/lib/isol"), PathBuf::from)
            .join("vm-disks"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        // `cargo bench` passes --bench; ignore it.
        if a == "--bench" {
            continue;
        }
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        let num = |v: String| v.parse().map_err(|_| format!("{a}: {v} is not a number"));
        match a.as_str() {
            "--runs" => o.runs = num(val()?)?,
            "--warmup" => o.warmup = num(val()?)?,
            "--rss-runs" => o.rss_runs = num(val()?)?,
            "--memory" => o.memory_mib = num(val()?)? as u64,
            "--image" => o.image = val()?,
            "--kernel" => o.kernel = Some(val()?.into()),
            "--qemu" => o.qemu = val()?,
            "--isol" => o.isol = val()?.into(),
            "--disks" => o.disks = val()?.into(),
            _ => {
                return Err(format!(
                    "unknown argument {a}; see the top of bench/benches/vm_start.rs"
                ));
            }
        }
    }
    Ok(o)
}

/// One finished run.
struct Sample {
    wall: Duration,
    maxrss_kib: u64,
    guest_kib: Option<u64>,
}

/// Runs `cmd` to the end; with `poll_kib`, samples the guest mapping's RSS meanwhile.
fn run_once(cmd: &mut Command, poll_kib: Option<u64>) -> Res<Sample> {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let m = qemu_microvm::wait_measured(&mut child, poll_kib, None)
        .map_err(|e| format!("wait4: {e}"))?;
    let wall = start.elapsed();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    if !qemu_microvm::ended_cleanly(m.status) {
        return Err(format!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            m.status,
            err.trim()
        ));
    }
    Ok(Sample {
        wall,
        maxrss_kib: m.maxrss_kib,
        guest_kib: m.guest_kib,
    })
}

/// `name` on `$PATH` (or as given if it has a `/`).
fn which(name: &str) -> Res<PathBuf> {
    if name.contains('/') {
        return Ok(name.into());
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("{name} not found; apt-get install qemu-system-x86"))
}

/// The most recently modified `*.EXT` file in `dir`.
fn newest_file(dir: &Path, ext: &str) -> Res<PathBuf> {
    fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .max_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok())
        .ok_or_else(|| {
            format!(
                "no .{ext} file in {}; did isol build the root disk?",
                dir.display()
            )
        })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = p * (sorted.len() - 1) as f64;
    let (lo, hi) = (idx.floor() as usize, idx.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (idx - lo as f64)
}

fn sorted(v: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    v
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("vm_start: {e}");
        std::process::exit(1);
    }
}

fn real_main() -> Res<()> {
    let o = parse_opts()?;
    if fs::metadata("/dev/kvm").is_err() {
        return Err(
            "no /dev/kvm here; run it in the lab: isol lab -- guest-images/bench/vm-start.sh"
                .into(),
        );
    }
    if !isol_vmm::kvm_available() {
        return Err("/dev/kvm is not usable here; run it in the lab: isol lab -- guest-images/bench/vm-start.sh".into());
    }
    let root = repo_root();
    let kernel = match &o.kernel {
        Some(k) => k.clone(),
        None => {
            let out = Command::new(root.join("guest-images/build-kernel.sh"))
                .arg("--quiet")
                .output()
                .map_err(|e| format!("cannot run build-kernel.sh: {e}"))?;
            if !out.status.success() {
                return Err("guest-images/build-kernel.sh failed; run it on the host first".into());
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("vmlinux")
        }
    };
    let init = o.isol.with_file_name("isol-guest-init");
    for p in [&o.isol, &init, &kernel] {
        if !p.is_file() {
            return Err(format!(
                "{} not found; build first: cargo build --release -p isol -p isol-guest-init",
                p.display()
            ));
        }
    }

    // Everything both VMMs read at start-up goes to a RAM-backed directory first (in the
    // lab the host's files come over 9p at ~20 MB/s, which would measure 9p, not the
    // VMMs): the kernel, isol and its guest init, QEMU with its shared libraries and its
    // firmware. The root disk is the one isol built in the image store (the lab's tmpfs).
    let tmp = std::env::temp_dir().join(format!("isol-vm-start-{}", std::process::id()));
    let bin = tmp.join("bin");
    fs::create_dir_all(&bin).map_err(|e| format!("cannot create {}: {e}", bin.display()))?;
    let copy = |from: &Path, dir: &Path| -> Res<PathBuf> {
        let to = dir.join(from.file_name().ok_or("no file name")?);
        fs::copy(from, &to).map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
        Ok(to)
    };
    let kernel = copy(&kernel, &tmp)?;
    let isol = copy(&o.isol, &bin)?;
    copy(&init, &bin)?;
    // isol execs its VMM, isol-vmm, from beside itself (else it runs the VMM in-process).
    let vmm = o.isol.with_file_name(isol_vmm::launch::VMM_BINARY);
    let vmm_note = if vmm.is_file() {
        copy(&vmm, &bin)?;
        "isol execs isol-vmm"
    } else {
        "no isol-vmm beside isol: the VMM runs inside isol"
    };
    let qemu = Qemu::stage(&which(&o.qemu)?, &tmp.join("qemu")).map_err(|e| e.to_string())?;

    let mem = o.memory_mib.to_string();
    let isol_cmd_with = |extra: &[&str]| {
        let mut c = Command::new(&isol);
        c.args(["run", "--backend", "kvm", "-m"])
            .arg(format!("{mem}m"))
            .arg("--kernel")
            .arg(&kernel)
            .args(extra)
            .args([o.image.as_str(), "true"]);
        c
    };
    let isol_cmd = || isol_cmd_with(&[]);
    // The first run builds the image's root disk (and checks that the VM works).
    run_once(&mut isol_cmd(), None)?;
    let disk = newest_file(&o.disks, "ext4")?;
    let spec = RunSpec {
        args: vec!["true".into()],
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        workdir: "/".into(),
        hostname: "bench".into(),
        ..Default::default()
    };
    // What isol puts in the initramfs with a root disk: init and the spec only.
    let image =
        isol_vmm::initramfs::build_initramfs(&Rootfs::Disk(disk.clone()), Some(&init), &spec)
            .map_err(|e| e.to_string())?
            .ok_or("no initramfs")?;
    let initrd = tmp.join("initramfs.cpio");
    fs::write(&initrd, &image).map_err(|e| format!("cannot write {}: {e}", initrd.display()))?;
    // isol's command line, with QEMU's own virtio-mmio windows and the triple fault reset.
    let cmdline = qemu_microvm::cmdline(false).map_err(|e| e.to_string())?;
    let memory_mib = u32::try_from(o.memory_mib).map_err(|_| "--memory is too large")?;
    let vm = |cmdline: &str, end: QemuEnd| {
        qemu.command(&Microvm {
            kernel: &kernel,
            initrd: &initrd,
            disk: &disk,
            memory_mib,
            cmdline,
            end,
        })
    };
    // Timed runs end where isol's do: at init's power-off write, after the report and sync.
    let qemu_cmd = || vm(&cmdline, QemuEnd::PowerOff);

    // QEMU cannot report the workload's status, so check once that its guest really
    // does the same work: the kernel log on, and isa-debug-exit on isol's exit-status
    // port (QEMU then exits with 2 × status + 1 when init reports).
    let check = vm(
        &qemu_microvm::cmdline(true).map_err(|e| e.to_string())?,
        QemuEnd::Status,
    )
    .stdin(Stdio::null())
    .output()
    .map_err(|e| format!("cannot run QEMU: {e}"))?;
    qemu_microvm::check_guest(check.status, &String::from_utf8_lossy(&check.stdout), 0)
        .map_err(|e| format!("{e}\n{}", String::from_utf8_lossy(&check.stderr).trim()))?;
    println!(
        "vm_start: kernel {}, initramfs {} KiB, {} MiB, 1 vCPU, {} runs each (+{} warm-up), interleaved; {vmm_note}",
        kernel.display(),
        image.len() / 1024,
        o.memory_mib,
        o.runs,
        o.warmup
    );
    let subjects: [(&str, &dyn Fn() -> Command); 2] =
        [("isol", &isol_cmd), ("qemu-microvm", &qemu_cmd)];
    for _ in 0..o.warmup {
        for (_, c) in &subjects {
            run_once(&mut c(), None)?;
        }
    }
    let mut walls: [Vec<f64>; 2] = Default::default();
    for i in 0..o.runs {
        for (k, (name, c)) in subjects.iter().enumerate() {
            let s = run_once(&mut c(), None)?;
            walls[k].push(s.wall.as_secs_f64() * 1e3);
            eprintln!(
                "  run {i:>2} {name:<13} {:>9.1} ms",
                s.wall.as_secs_f64() * 1e3
            );
        }
    }
    let min_kib = o.memory_mib * 1024;
    let mut rss: [Vec<Sample>; 2] = Default::default();
    for i in 0..o.rss_runs {
        for (k, (name, c)) in subjects.iter().enumerate() {
            let s = run_once(&mut c(), Some(min_kib))?;
            eprintln!(
                "  rss {i:>2} {name:<13} peak {:>6.1} MiB, guest RAM resident {:>6.1} MiB",
                s.maxrss_kib as f64 / 1024.0,
                s.guest_kib.unwrap_or(0) as f64 / 1024.0
            );
            rss[k].push(s);
        }
    }
    // One more isol run for its own view: setup steps, boot timeline, exit counts.
    let trace = isol_cmd_with(&["--trace-exits"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run isol: {e}"))?;
    println!("isol --trace-exits (one run):");
    for l in String::from_utf8_lossy(&trace.stderr).lines() {
        println!("    {l}");
    }
    let _ = fs::remove_dir_all(&tmp);

    struct Row {
        p25: f64,
        med: f64,
        p75: f64,
        maxrss: f64,
        guest: f64,
        overhead: f64,
    }
    let rows: Vec<Row> = (0..2)
        .map(|k| {
            let w = sorted(walls[k].iter().copied());
            let maxrss = sorted(rss[k].iter().map(|s| s.maxrss_kib as f64 / 1024.0));
            let guest = sorted(
                rss[k]
                    .iter()
                    .map(|s| s.guest_kib.unwrap_or(0) as f64 / 1024.0),
            );
            let over =
                sorted(rss[k].iter().map(|s| {
                    (s.maxrss_kib.saturating_sub(s.guest_kib.unwrap_or(0))) as f64 / 1024.0
                }));
            Row {
                p25: percentile(&w, 0.25),
                med: percentile(&w, 0.5),
                p75: percentile(&w, 0.75),
                maxrss: percentile(&maxrss, 0.5),
                guest: percentile(&guest, 0.5),
                overhead: percentile(&over, 0.5),
            }
        })
        .collect();
    println!();
    println!(
        "| subject | start→exit median | p25 | p75 | peak RSS | guest RAM resident | VMM overhead |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (k, (name, _)) in subjects.iter().enumerate() {
        let r = &rows[k];
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            r.med, r.p25, r.p75, r.maxrss, r.guest, r.overhead
        );
    }
    let (a, b) = (&rows[0], &rows[1]);
    println!(
        "| ratio isol / qemu | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        a.med / b.med,
        a.p25 / b.p25,
        a.p75 / b.p75,
        a.maxrss / b.maxrss,
        a.guest / b.guest,
        a.overhead / b.overhead
    );
    Ok(())
}
