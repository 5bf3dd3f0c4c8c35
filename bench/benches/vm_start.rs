//! Start-up benchmark: isol's VMM against QEMU `-M microvm` and, when given one, Firecracker,
//! each booting the same guest; docs/benchmarks-vm.md.
//!
//! Run it where /dev/kvm is real, i.e. in the lab (`guest-images/bench/vm-start.sh`
//! builds it and runs it there). Two guests, each booted the same way by the VMMs that can:
//!
//! * **root disk** (`isol-disk`, `qemu-disk`): what `isol run --backend kvm IMAGE true` boots.
//!   The same guest kernel (vmlinux, PVH entry), 1 vCPU, the same guest RAM, the same devices
//!   (the image's read-only ext4 root disk on virtio-blk, a 3-port virtio console, a UART), the
//!   same command line (except `reboot=k` vs `reboot=t`: QEMU microvm has no i8042, and each
//!   VMM's own virtio-mmio windows) and the same initramfs content (isol's guest init and a
//!   run spec for `true`). Both stop at the guest init's power-off write.
//! * **initramfs** (`isol-initrd`, `qemu-initrd`, `firecracker`): the same kernel with one
//!   busybox initramfs whose `/init` runs `true` and reboots (`isol_bench::initrd_guest`),
//!   isol's command line, no other device than a UART: `isol run --backend kvm --initrd`,
//!   QEMU microvm with `-kernel -initrd -append`, Firecracker with `--no-api --config-file`.
//!   Each stops when the guest reboots. Firecracker has no virtio-console and no exit port,
//!   so this is the guest all three can run alike.
//!
//! Runs are interleaved (every subject once per round) after a warm-up, with every file a VMM
//! reads at start-up in RAM. Measured per run: wall time from spawn to reap (the VMM process's
//! whole life), and in separate runs (polling would perturb the timing) the peak RSS
//! (`ru_maxrss` from `wait4`) and the RSS of the guest RAM mapping (the largest anonymous
//! mapping of at least the guest size in `/proc/PID/smaps`, last value seen while reading it
//! every 50 ms, `qemu_microvm::SMAPS_EVERY`). VMM overhead = peak RSS − guest RAM resident.
//!
//! Options: `--runs N` (default 15), `--warmup N` (2), `--rss-runs N` (5),
//! `--memory MIB` (128), `--image NAME` (busybox), `--kernel FILE` (default
//! `$ISOL_KERNEL`, else guest-images/build-kernel.sh's vmlinux), `--qemu PATH`
//! (qemu-system-x86_64), `--isol PATH` (the release build of isol), `--disks DIR`
//! (where isol caches root disks: `$ISOL_HOME/vm-disks`, which `isol lab` sets to its tmpfs
//! store, else root's store /var/lib/isol/vm-disks), `--firecracker PATH` (a Firecracker
//! you built; default `$ISOL_BENCH_FIRECRACKER`, else none), `--busybox PATH` (the static
//! busybox of the initramfs guest, /bin/busybox), `--subjects LIST` (comma-separated, of
//! isol-disk, qemu-disk, isol-initrd, qemu-initrd, firecracker, isol-b; default all there
//! are), and for an A/B of isol itself `--isol-b PATH` (another isol build, subject `isol-b`
//! on the initramfs guest) with `--isol-b-env KEY=VALUE` (repeatable: its environment).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use isol_bench::firecracker::{self, Firecracker, FirecrackerVm};
use isol_bench::initrd_guest;
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
    firecracker: Option<PathBuf>,
    busybox: PathBuf,
    subjects: Option<Vec<String>>,
    isol_b: Option<PathBuf>,
    isol_b_env: Vec<(String, String)>,
}

/// Every subject, in the order of a round.
const SUBJECTS: [&str; 6] = [
    "isol-disk",
    "qemu-disk",
    "isol-initrd",
    "qemu-initrd",
    "firecracker",
    "isol-b",
];

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
        firecracker: std::env::var_os("ISOL_BENCH_FIRECRACKER")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from),
        busybox: "/bin/busybox".into(),
        subjects: None,
        isol_b: None,
        isol_b_env: Vec::new(),
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
            "--firecracker" => o.firecracker = Some(val()?.into()),
            "--busybox" => o.busybox = val()?.into(),
            "--subjects" => {
                let list: Vec<String> = val()?.split(',').map(str::to_owned).collect();
                if let Some(bad) = list.iter().find(|n| !SUBJECTS.contains(&n.as_str())) {
                    return Err(format!(
                        "--subjects: no subject {bad}; the subjects are {}",
                        SUBJECTS.join(", ")
                    ));
                }
                o.subjects = Some(list);
            }
            "--isol-b" => o.isol_b = Some(val()?.into()),
            "--isol-b-env" => {
                let kv = val()?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or(format!("--isol-b-env {kv}: give KEY=VALUE"))?;
                o.isol_b_env.push((k.into(), v.into()));
            }
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
    let fc = match &o.firecracker {
        Some(p) if !p.is_file() => {
            return Err(format!(
                "--firecracker {}: no such file; build Firecracker first (docs/benchmarks-vm.md)",
                p.display()
            ));
        }
        Some(p) => {
            Some(Firecracker::stage(p, &tmp.join("firecracker")).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let isol_b = match &o.isol_b {
        Some(p) => {
            let b = tmp.join("bin-b");
            fs::create_dir_all(&b).map_err(|e| format!("cannot create {}: {e}", b.display()))?;
            for f in [p.clone(), p.with_file_name(isol_vmm::launch::VMM_BINARY)] {
                if f.is_file() {
                    copy(&f, &b)?;
                }
            }
            Some(b.join("isol"))
        }
        None => None,
    };
    let wanted = |name: &str| {
        let available = match name {
            "firecracker" => fc.is_some(),
            "isol-b" => isol_b.is_some(),
            _ => true,
        };
        available
            && o.subjects
                .as_ref()
                .is_none_or(|l| l.iter().any(|n| n == name))
    };
    if o.subjects
        .as_ref()
        .is_some_and(|l| l.iter().any(|n| !wanted(n)))
    {
        return Err(
            "--subjects names firecracker or isol-b without --firecracker or --isol-b".into(),
        );
    }
    let disk_rows = wanted("isol-disk") || wanted("qemu-disk");

    let mem = o.memory_mib.to_string();
    let memory_mib = u32::try_from(o.memory_mib).map_err(|_| "--memory is too large")?;
    let isol_run = |isol: &Path, extra: &[&OsStr]| {
        let mut c = Command::new(isol);
        c.args(["run", "--backend", "kvm", "-m"])
            .arg(format!("{mem}m"))
            .arg("--kernel")
            .arg(&kernel)
            .args(extra);
        c
    };

    // The root-disk guest: isol's own run, and QEMU booting what isol boots.
    let image_args = [OsStr::new(o.image.as_str()), OsStr::new("true")];
    let isol_disk = |extra: &[&OsStr]| isol_run(&isol, &[extra, &image_args[..]].concat());
    let mut disk_initrd = None;
    let mut disk = None;
    if disk_rows {
        // The first run builds the image's root disk (and checks that the VM works).
        run_once(&mut isol_disk(&[]), None)?;
        let d = newest_file(&o.disks, "ext4")?;
        let spec = RunSpec {
            args: vec!["true".into()],
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            workdir: "/".into(),
            hostname: "bench".into(),
            ..Default::default()
        };
        // What isol puts in the initramfs with a root disk: init and the spec only.
        let image =
            isol_vmm::initramfs::build_initramfs(&Rootfs::Disk(d.clone()), Some(&init), &spec)
                .map_err(|e| e.to_string())?
                .ok_or("no initramfs")?;
        let path = tmp.join("initramfs.cpio");
        fs::write(&path, &image).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!(
            "vm_start: root-disk guest: initramfs {} KiB (isol's guest init + run spec), root disk {}",
            image.len() / 1024,
            d.display()
        );
        disk_initrd = Some(path);
        disk = Some(d);
    }
    // isol's command line, with QEMU's own virtio-mmio windows and the triple fault reset.
    let disk_cmdline = qemu_microvm::cmdline(false).map_err(|e| e.to_string())?;
    let qemu_disk = |cmdline: &str, end: QemuEnd| {
        qemu.command(&Microvm {
            kernel: &kernel,
            initrd: disk_initrd.as_deref().unwrap_or(Path::new("")),
            disk: disk.as_deref(),
            memory_mib,
            cmdline,
            end,
            stdio: false,
        })
    };
    if wanted("qemu-disk") {
        // QEMU cannot report the workload's status, so check once that its guest really
        // does the same work: the kernel log on, and isa-debug-exit on isol's exit-status
        // port (QEMU then exits with 2 × status + 1 when init reports).
        let check = qemu_disk(
            &qemu_microvm::cmdline(true).map_err(|e| e.to_string())?,
            QemuEnd::Status,
        )
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run QEMU: {e}"))?;
        qemu_microvm::check_guest(check.status, &String::from_utf8_lossy(&check.stdout), 0)
            .map_err(|e| format!("{e}\n{}", String::from_utf8_lossy(&check.stderr).trim()))?;
    }

    // The initramfs guest, the same for every VMM; and a copy whose /init says it ran `true`,
    // for the check.
    let write_guest = |say: bool, name: &str| -> Res<PathBuf> {
        let image = initrd_guest::initramfs(&o.busybox, say).map_err(|e| {
            format!(
                "cannot build the initramfs from {}: {e}",
                o.busybox.display()
            )
        })?;
        let path = tmp.join(name);
        fs::write(&path, image).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    };
    let guest = write_guest(false, "guest.cpio")?;
    let guest_say = write_guest(true, "guest-check.cpio")?;
    let guest_k = initrd_guest::cmdline(false).map_err(|e| e.to_string())?;
    let guest_t = initrd_guest::cmdline(true).map_err(|e| e.to_string())?;
    let isol_initrd = |isol: &Path, initrd: &Path, extra: &[&OsStr]| {
        isol_run(
            isol,
            &[&[OsStr::new("--initrd"), initrd.as_os_str()][..], extra].concat(),
        )
    };
    let isol_b_cmd = |initrd: &Path, extra: &[&OsStr]| {
        let mut c = isol_initrd(isol_b.as_deref().unwrap_or(Path::new("")), initrd, extra);
        c.envs(o.isol_b_env.iter().map(|(k, v)| (k, v)));
        c
    };
    let qemu_initrd = |initrd: &Path| {
        qemu.command(&Microvm {
            kernel: &kernel,
            initrd,
            disk: None,
            memory_mib,
            cmdline: &guest_t,
            end: QemuEnd::Reset,
            stdio: false,
        })
    };
    let fc_config = |initrd: &Path, name: &str| -> Res<PathBuf> {
        let c = firecracker::config(&FirecrackerVm {
            kernel: &kernel,
            initrd,
            memory_mib,
            vcpus: 1,
            cmdline: &guest_k,
        });
        let path = tmp.join(name);
        fs::write(&path, c.to_string())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    };
    let fc_timed = fc_config(&guest, "firecracker.json")?;
    let fc_check = fc_config(&guest_say, "firecracker-check.json")?;
    let fc_cmd = |config: &Path| match &fc {
        Some(f) => f.command(config),
        None => Command::new("false"),
    };

    // Check once that each VMM boots the initramfs guest, its /init runs `true` and the
    // reboot ends the VMM cleanly.
    let mut checks: Vec<(&str, Command)> = Vec::new();
    if wanted("isol-initrd") {
        checks.push(("isol-initrd", isol_initrd(&isol, &guest_say, &[])));
    }
    if wanted("isol-b") {
        checks.push(("isol-b", isol_b_cmd(&guest_say, &[])));
    }
    if wanted("qemu-initrd") {
        checks.push(("qemu-initrd", qemu_initrd(&guest_say)));
    }
    if wanted("firecracker") {
        checks.push(("firecracker", fc_cmd(&fc_check)));
    }
    for (name, mut c) in checks {
        let out = c
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {name}: {e}"))?;
        let console = String::from_utf8_lossy(&out.stdout);
        if !qemu_microvm::ended_cleanly(out.status) || !console.contains(initrd_guest::SAID) {
            return Err(format!(
                "{name} did not boot the initramfs guest to its end ({}): stdout {:?}, stderr {:?}",
                out.status,
                console.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }

    println!(
        "vm_start: kernel {}, {} MiB, 1 vCPU, {} runs each (+{} warm-up), interleaved; {vmm_note}",
        kernel.display(),
        o.memory_mib,
        o.runs,
        o.warmup
    );
    if let Some(p) = &o.firecracker {
        let v = Command::new(p)
            .arg("--version")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", p.display()))?;
        let v = String::from_utf8_lossy(&v.stdout);
        println!(
            "vm_start: {} ({})",
            v.lines().next().unwrap_or("Firecracker, version unknown"),
            p.display()
        );
    }
    println!(
        "vm_start: initramfs guest {} KiB (busybox {}), command line {guest_k:?} (QEMU: reboot=t)",
        fs::metadata(&guest).map(|m| m.len() / 1024).unwrap_or(0),
        o.busybox.display()
    );
    type Make<'a> = Box<dyn Fn() -> Command + 'a>;
    let all: [(&str, Make); 6] = [
        ("isol-disk", Box::new(|| isol_disk(&[]))),
        (
            "qemu-disk",
            Box::new(|| qemu_disk(&disk_cmdline, QemuEnd::PowerOff)),
        ),
        ("isol-initrd", Box::new(|| isol_initrd(&isol, &guest, &[]))),
        ("qemu-initrd", Box::new(|| qemu_initrd(&guest))),
        ("firecracker", Box::new(|| fc_cmd(&fc_timed))),
        ("isol-b", Box::new(|| isol_b_cmd(&guest, &[]))),
    ];
    let subjects: Vec<(&str, Make)> = all.into_iter().filter(|(name, _)| wanted(name)).collect();
    for (name, c) in &subjects {
        let c = c();
        println!(
            "  {name:<12} {} {}",
            c.get_program().to_string_lossy(),
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    for _ in 0..o.warmup {
        for (_, c) in &subjects {
            run_once(&mut c(), None)?;
        }
    }
    let mut walls: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
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
    let mut rss: Vec<Vec<Sample>> = (0..subjects.len()).map(|_| Vec::new()).collect();
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
    // One more run of each isol for its own view: setup steps, boot timeline, exit counts.
    let trace = OsStr::new("--trace-exits");
    let mut traced: Vec<(&str, Command)> = Vec::new();
    if wanted("isol-disk") {
        traced.push(("isol-disk", isol_disk(&[trace])));
    }
    if wanted("isol-initrd") {
        traced.push(("isol-initrd", isol_initrd(&isol, &guest, &[trace])));
    }
    if wanted("isol-b") {
        traced.push(("isol-b", isol_b_cmd(&guest, &[trace])));
    }
    for (name, mut c) in traced {
        let out = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run isol: {e}"))?;
        println!("{name} --trace-exits (one run):");
        for l in String::from_utf8_lossy(&out.stderr).lines() {
            println!("    {l}");
        }
    }
    let _ = fs::remove_dir_all(&tmp);

    let rows: Vec<Row> = walls.iter().zip(&rss).map(|(w, r)| Row::of(w, r)).collect();
    println!();
    println!(
        "| subject | start→exit median | p25 | p75 | peak RSS | guest RAM resident | VMM overhead |"
    );
    println!("|---|---|---|---|---|---|---|");
    for ((name, _), r) in subjects.iter().zip(&rows) {
        println!(
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            r.med, r.p25, r.p75, r.maxrss, r.guest, r.overhead
        );
    }
    let row = |name: &str| {
        subjects
            .iter()
            .position(|(n, _)| *n == name)
            .map(|k| &rows[k])
    };
    for (a, b) in [
        ("isol-initrd", "firecracker"),
        ("isol-initrd", "qemu-initrd"),
        ("firecracker", "qemu-initrd"),
        ("isol-disk", "qemu-disk"),
        ("isol-b", "isol-initrd"),
        ("isol-b", "firecracker"),
    ] {
        if let (Some(x), Some(y)) = (row(a), row(b)) {
            println!(
                "| ratio {a} / {b} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                x.med / y.med,
                x.p25 / y.p25,
                x.p75 / y.p75,
                x.maxrss / y.maxrss,
                x.guest / y.guest,
                x.overhead / y.overhead
            );
        }
    }
    Ok(())
}

/// One subject's line of the table.
struct Row {
    p25: f64,
    med: f64,
    p75: f64,
    maxrss: f64,
    guest: f64,
    overhead: f64,
}

impl Row {
    fn of(walls: &[f64], rss: &[Sample]) -> Row {
        let w = sorted(walls.iter().copied());
        let mib = |k: u64| k as f64 / 1024.0;
        let maxrss = sorted(rss.iter().map(|s| mib(s.maxrss_kib)));
        let guest = sorted(rss.iter().map(|s| mib(s.guest_kib.unwrap_or(0))));
        let over = sorted(
            rss.iter()
                .map(|s| mib(s.maxrss_kib.saturating_sub(s.guest_kib.unwrap_or(0)))),
        );
        Row {
            p25: percentile(&w, 0.25),
            med: percentile(&w, 0.5),
            p75: percentile(&w, 0.75),
            maxrss: percentile(&maxrss, 0.5),
            guest: percentile(&guest, 0.5),
            overhead: percentile(&over, 0.5),
        }
    }
}
