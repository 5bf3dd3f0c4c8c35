//! `isol bench`: measure isol against other runtimes, on this machine, and write a report.
//! The CLI turns its arguments into [`BenchOptions`] and calls [`run`].
//!
//! A benchmark is a named workload run on several subjects (isol's backends, peer runtimes).
//! Each subject first passes a pre-flight check (the workload must really run in it), then all
//! subjects run in turn — A B C A B C — for a few warm-up rounds that are discarded and `--runs`
//! timed rounds; every sample is kept in `report.json`.
//!
//! Everything runs inside one private mount namespace (see [`host::enter_private_mounts`]), so
//! every subject sees the same mounts and the roots the bench mounts vanish with it. Peers keep
//! their state under a temporary directory that the bench removes, with every container still
//! in it, whatever happens (Ctrl-C included: see [`cancel`]).

mod cancel;
pub mod containerd;
pub mod cri;
mod ctr;
pub mod docker_archive;
mod error;
pub mod firecracker;
mod host;
mod html;
pub mod initrd_guest;
mod lab;
mod metrics;
mod oci;
pub mod qemu_microvm;
mod reap;
mod report;
mod stats;
mod subjects;
mod workloads;

use std::collections::BTreeMap;
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub use error::BenchError;
use error::Step;
use host::{CgroupLayout, Machine};
use lab::KvmEnv;
use report::{BenchmarkReport, PhaseRow, Report, SampleRecord, Settings, SubjectReport};
use stats::{Status, Summary, round3};
use subjects::{Guest, IsolSubject, OciPeer, Outcome, QemuPeer, Subject, SubjectInfo, Workload};
use workloads::{MemoryPlan, Runner, Sizes};

/// Rounds of the start benchmark run before the timed ones and discarded (1 with `--quick`).
const WARMUP_ROUNDS: u32 = 3;
/// Timed runs per subject by default, and with `--quick`.
const DEFAULT_RUNS: u32 = 30;
const QUICK_RUNS: u32 = 10;
/// The image every benchmark runs (built in on first use).
const IMAGE: &str = "busybox";
/// Exit code after Ctrl-C.
const EXIT_CANCELLED: i32 = 130;

/// What to measure, and where to write the report: `isol bench`'s options.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// isol backends to measure; `None`: container, plus kvm where /dev/kvm is hardware. On a
    /// host whose /dev/kvm is emulated, kvm runs the whole bench in the lab (`isol lab`).
    pub backends: Option<Vec<BenchBackend>>,
    /// Runtimes to compare with: crun, runc (container side), qemu (VM side).
    pub peers: Vec<Peer>,
    /// Timed runs per subject; `None`: 30, or 10 with `quick`.
    pub runs: Option<u32>,
    /// A quick look: 10 timed runs per subject unless `runs` says otherwise.
    pub quick: bool,
    /// Directory for report.json, report.md and report.html; `None`:
    /// ./isol-bench-<UTC date-time>.
    pub out: Option<PathBuf>,
    /// Benchmarks to run.
    pub benchmarks: Vec<Benchmark>,
    /// This bench runs inside the lab for an outer `isol bench`, and prints its reports on
    /// stdout.
    pub lab_inner: bool,
}

/// An isol backend a bench can measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchBackend {
    Container,
    Kvm,
}

/// A runtime isol is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Crun,
    Runc,
    Qemu,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Crun => "crun",
            Peer::Runc => "runc",
            Peer::Qemu => "qemu",
        }
    }
}

/// A named workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Benchmark {
    /// Start → exit of `/bin/true`.
    Start,
    Memory,
    Density,
    Cpu,
    Syscall,
    Io,
    Net,
    /// A directory shared with the run: bind mount vs virtio-fs.
    Shared,
    /// `ctr run --rm` start → exit of `/bin/true`, with isol-runc, isol-runc-vm, runc and crun
    /// as containerd's runc binary.
    CtrRun,
    /// A pod through Kubernetes' CRI (containerd's CRI plugin), start → its container exited.
    Cri,
}

impl Benchmark {
    fn name(self) -> &'static str {
        match self {
            Benchmark::Start => "start",
            Benchmark::Memory => "memory",
            Benchmark::Density => "density",
            Benchmark::Cpu => "cpu",
            Benchmark::Syscall => "syscall",
            Benchmark::Io => "io",
            Benchmark::Net => "net",
            Benchmark::Shared => "shared",
            Benchmark::CtrRun => report::CTR_RUN,
            Benchmark::Cri => "cri",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Benchmark::Start => "start → exit of `/bin/true` in the busybox image",
            Benchmark::CtrRun => {
                "`ctr run --rm` start → exit of `/bin/true` in the busybox image, through containerd and its runc v2 shim, each runtime as the shim's runc binary"
            }
            Benchmark::Cri => {
                "a pod through Kubernetes' CRI (containerd 1.6): RunPodSandbox → the first container's `/bin/true` exited (CreateContainer, StartContainer, ContainerStatus polled until EXITED); teardown (StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox) timed apart"
            }
            _ => "",
        }
    }

    fn workload(self) -> Workload {
        Workload {
            args: vec!["/bin/true".into()],
            expect: 0,
        }
    }
}

/// A `--backends` word: `container` or `kvm`.
pub fn parse_backend(s: &str) -> Result<BenchBackend, String> {
    match s.trim() {
        "container" => Ok(BenchBackend::Container),
        "kvm" => Ok(BenchBackend::Kvm),
        other => Err(format!("unknown backend {other:?}: use container or kvm")),
    }
}

/// A `--peers` word: `crun`, `runc` or `qemu`.
pub fn parse_peer(s: &str) -> Result<Peer, String> {
    match s.trim() {
        "crun" => Ok(Peer::Crun),
        "runc" => Ok(Peer::Runc),
        "qemu" => Ok(Peer::Qemu),
        other => Err(format!("unknown peer {other:?}: use crun, runc, qemu")),
    }
}

/// A `--benchmarks` word: `start`, `memory`, `density`, `cpu`, `syscall`, `io`, `net`,
/// `shared`, `ctr-run` or `cri`.
pub fn parse_benchmark(s: &str) -> Result<Benchmark, String> {
    match s.trim() {
        "start" => Ok(Benchmark::Start),
        "memory" => Ok(Benchmark::Memory),
        "density" => Ok(Benchmark::Density),
        "cpu" => Ok(Benchmark::Cpu),
        "syscall" => Ok(Benchmark::Syscall),
        "io" => Ok(Benchmark::Io),
        "net" => Ok(Benchmark::Net),
        "shared" => Ok(Benchmark::Shared),
        "ctr-run" => Ok(Benchmark::CtrRun),
        "cri" => Ok(Benchmark::Cri),
        other => Err(format!(
            "unknown benchmark {other:?}: use start, memory, density, cpu, syscall, io, net, shared, ctr-run, cri"
        )),
    }
}

/// A number of timed runs: 1 to 100000.
pub fn parse_runs(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("a benchmark needs at least 1 timed run".into()),
        Ok(n) if n <= 100_000 => Ok(n),
        _ => Err("use a whole number of runs from 1 to 100000".into()),
    }
}

/// Order-preserving de-duplication.
fn dedup<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut out = Vec::new();
    for i in items {
        if !out.contains(i) {
            out.push(*i);
        }
    }
    out
}

/// Runs the bench `args` asks for and writes its reports; returns the exit code: 0, or 130
/// when cancelled (Ctrl-C). isol failing its own benchmark is an error, after the report is
/// written.
pub fn run(args: BenchOptions) -> Result<i32, BenchError> {
    let runs = args
        .runs
        .unwrap_or(if args.quick { QUICK_RUNS } else { DEFAULT_RUNS });
    let started = host::now_unix();
    host::require_root()?;
    let kvm_env = KvmEnv::detect();
    let requested_kvm = args
        .backends
        .as_ref()
        .is_some_and(|b| b.contains(&BenchBackend::Kvm));
    if args.lab_inner {
        return run_inner(&args, runs, started, kvm_env);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("isol-bench-{}", host::stamp(started))));
    let created_out = prepare_out(&out)?;
    let remove_out = || {
        if created_out {
            let _ = fs::remove_dir(&out);
        }
    };

    let files = if requested_kvm && matches!(kvm_env, KvmEnv::Unusable(_)) {
        let exe = isol_exe()?;
        let here = Machine::probe(CgroupLayout::detect(), String::new()).one_line();
        match lab::run_in_lab(&exe, &here) {
            Ok(e) => e,
            Err(e) => {
                remove_out();
                return Err(e);
            }
        }
    } else {
        let report = match bench(&args, runs, started, &kvm_env) {
            Ok(Some(r)) => r,
            Ok(None) => {
                remove_out();
                sweep_killed_runs();
                eprintln!(
                    "isol: benchmark cancelled; its containers, mounts and bundles are removed and no report was written"
                );
                return Ok(EXIT_CANCELLED);
            }
            Err(e) => {
                remove_out();
                return Err(e);
            }
        };
        envelope(&report)?
    };

    let write = |name: &str, text: &str| -> Result<PathBuf, BenchError> {
        let path = out.join(name);
        fs::write(&path, text).step(|| {
            format!(
                "Cannot write {}; choose a writable directory with --out",
                path.display()
            )
        })?;
        Ok(path)
    };
    let json_path = write("report.json", &(files.json.clone() + "\n"))?;
    let md_path = write("report.md", &files.md)?;
    let html_path = write("report.html", &files.html)?;
    print!("{}", files.tables);
    eprintln!(
        "isol bench: wrote {}, {} and {}",
        json_path.display(),
        md_path.display(),
        html_path.display()
    );
    // The report is written either way; isol failing its own benchmark is isol failing.
    let v: serde_json::Value = serde_json::from_str(&files.json).unwrap_or_default();
    if let Some(s) = v["benchmarks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| b["subjects"].as_array().into_iter().flatten())
        .find(|s| s["kind"] == "isol" && s["status"] == "failed")
    {
        return Err(BenchError::Failed(format!(
            "isol itself failed during the benchmark: {}; see {}",
            s["error"].as_str().unwrap_or("no reason recorded"),
            md_path.display()
        )));
    }
    Ok(0)
}

/// The bench inside the lab: runs, then prints the reports on stdout in one line.
fn run_inner(
    args: &BenchOptions,
    runs: u32,
    started: u64,
    kvm_env: KvmEnv,
) -> Result<i32, BenchError> {
    match bench(args, runs, started, &kvm_env)? {
        Some(report) => {
            let e = envelope(&report)?;
            println!(
                "{}{}",
                lab::ENVELOPE_MARK,
                serde_json::to_string(&e).step(|| "Cannot serialize the report".into())?
            );
            Ok(0)
        }
        None => {
            sweep_killed_runs();
            Ok(EXIT_CANCELLED)
        }
    }
}

/// After a cancel: the cgroups and run dirs of `isol run`s a second Ctrl-C killed (a killed run
/// cannot remove them itself; their mounts went with their mount namespaces).
fn sweep_killed_runs() {
    if let Ok(store) = open_store() {
        isol_container::state::sweep(
            &store.root().join("containers"),
            Path::new(isol_container::process::CGROUP_ROOT),
        );
    }
}

/// The image store isol uses (as the CLI opens it): `$ISOL_HOME`, else /var/lib/isol.
fn open_store() -> Result<isol_image::Store, BenchError> {
    Ok(isol_image::Store::open(isol_image::Store::default_root())?)
}

/// The three reports and the stdout tables.
fn envelope(report: &Report) -> Result<lab::Envelope, BenchError> {
    let json =
        serde_json::to_string_pretty(report).step(|| "Cannot serialize the report".into())?;
    let mut tables = String::new();
    for b in &report.benchmarks {
        tables.push_str(&format!("## {}: {}\n\n", b.name, b.description));
        tables.push_str(&b.table_markdown());
        tables.push('\n');
    }
    for m in &report.metrics {
        tables.push_str(&m.markdown());
    }
    Ok(lab::Envelope {
        md: report.markdown(),
        html: html::render(report),
        json,
        tables,
    })
}

/// Creates the report directory and checks that it is writable; returns whether it was created.
fn prepare_out(dir: &Path) -> Result<bool, BenchError> {
    let existed = dir.is_dir();
    let fail = |e: std::io::Error| {
        BenchError::Failed(format!(
            "Cannot write the report to {}: {e}; choose a writable directory with --out",
            dir.display()
        ))
    };
    fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".isol-bench-write-test");
    if let Err(e) = fs::write(&probe, b"") {
        if !existed {
            let _ = fs::remove_dir(dir);
        }
        return Err(fail(e));
    }
    let _ = fs::remove_file(&probe);
    Ok(!existed)
}

/// The bench's scratch directory; removed with everything in it when dropped.
#[derive(Debug)]
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Result<WorkDir, BenchError> {
        // The scratch directories of benches that were killed (their pid is gone): what they
        // left there (a CRI host's pods and mounts) ends, then they go.
        let tmp = std::env::temp_dir();
        let dead =
            |pid: u32| pid == std::process::id() || !Path::new(&format!("/proc/{pid}")).exists();
        containerd::sweep(&tmp, dead);
        for e in fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name();
            let Some(pid) = name
                .to_str()
                .and_then(|n| n.strip_prefix("isol-bench."))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if dead(pid) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        let dir = tmp.join(format!("isol-bench.{}", std::process::id()));
        fs::create_dir_all(&dir).step(|| {
            format!(
                "Cannot create the benchmark's scratch directory {}; set TMPDIR to a writable one",
                dir.display()
            )
        })?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A subject and what happened to it in one benchmark.
struct Slot {
    info: SubjectInfo,
    /// `None` when it could not be set up (then `error` says why).
    subject: Option<Box<dyn Subject>>,
    status: Status,
    error: Option<String>,
    warmup: Vec<(u32, Outcome)>,
    samples: Vec<(u32, Outcome)>,
    /// What happened that the numbers do not show (a run repeated after a timeout).
    notes: Vec<String>,
}

impl Slot {
    fn ready(subject: Box<dyn Subject>) -> Slot {
        Slot {
            info: subject.info().clone(),
            subject: Some(subject),
            status: Status::Ok,
            error: None,
            warmup: Vec::new(),
            samples: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn skipped(name: &str, version: String, error: String) -> Slot {
        Slot {
            info: SubjectInfo {
                name: name.into(),
                label: name.into(),
                kind: "peer",
                backend: match name {
                    "qemu" | "isol-kvm" | "isol-runc-vm" => Some("kvm"),
                    _ => Some("container"),
                },
                version,
                command: String::new(),
                rootfs: String::new(),
            },
            subject: None,
            status: Status::Skipped,
            error: Some(error),
            warmup: Vec::new(),
            samples: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn active(&self) -> bool {
        self.subject.is_some() && self.status == Status::Ok
    }

    /// Runs `f` against the subject; a run the watchdog killed for exceeding
    /// [`cancel::RUN_TIMEOUT`] is repeated once per subject and benchmark, with a note. In the
    /// lab, nested KVM now and then freezes a guest for good (docs/lab.md, "Known fault"): one
    /// such run says nothing about the subject's speed; a second one fails it.
    fn run_retrying<T>(
        &mut self,
        what: &str,
        bar: &ProgressBar,
        mut f: impl FnMut(&mut dyn Subject) -> Result<T, String>,
    ) -> Result<T, String> {
        let subject = self.subject.as_mut().expect("active slots have a subject");
        let timeouts = cancel::timeouts();
        let res = f(subject.as_mut());
        // Only repeats leave notes, so an empty list means none was repeated yet.
        match res {
            Err(e)
                if cancel::timeouts() > timeouts
                    && self.notes.is_empty()
                    && !cancel::cancelled() =>
            {
                let msg = format!("{what} was killed ({e}) and repeated once");
                note(bar, format!("isol bench: {}: {msg}", self.info.name));
                self.notes.push(msg);
                f(subject.as_mut())
            }
            res => res,
        }
    }
}

/// Which isol backends a bench measures, and why a side it leaves out is not measured.
struct Sides {
    container: bool,
    kvm: bool,
    /// The kvm side's skip reason, for every series it lacks.
    kvm_skip: String,
    /// The container side's skip reason.
    container_skip: String,
}

impl Sides {
    /// `--backends`, or by default the container side, plus kvm where /dev/kvm is hardware
    /// or in the lab.
    fn choose(args: &BenchOptions, kvm_env: &KvmEnv) -> Sides {
        let backends = match &args.backends {
            Some(b) => dedup(b),
            None if matches!(kvm_env, KvmEnv::Hardware | KvmEnv::Lab) => {
                vec![BenchBackend::Container, BenchBackend::Kvm]
            }
            None => vec![BenchBackend::Container],
        };
        Sides {
            container: backends.contains(&BenchBackend::Container),
            kvm: backends.contains(&BenchBackend::Kvm),
            kvm_skip: format!(
                "kvm backend not measured: /dev/kvm here is {}; `isol bench --backends container,kvm` runs the whole bench in the lab",
                kvm_env.describe()
            ),
            container_skip: "container backend not measured: not in --backends".to_string(),
        }
    }
}

/// What every benchmark runs with: the image, the isol binary, the machine's description, the
/// progress bar and the scratch directory.
struct Setup {
    store: isol_image::Store,
    image: isol_image::Image,
    /// The image's unpacked layers, for the peers' roots.
    layers: Vec<PathBuf>,
    /// The environment `isol run` gives the image's containers, for the peers.
    peer_env: Vec<String>,
    machine: Machine,
    exe: PathBuf,
    bar: ProgressBar,
    /// The guest kernel, copied into `work` (in the lab: to RAM, not 9p, for both VMMs); `None`
    /// without the kvm side.
    kernel: Option<PathBuf>,
    /// Last, so dropped last: the peers that keep their state in it are gone by then.
    work: WorkDir,
}

impl Setup {
    /// Enters the bench's private mount namespace, installs the Ctrl-C handlers, gets the image
    /// and, with `with_kvm`, the guest kernel.
    fn new(with_kvm: bool, kvm_env: &KvmEnv) -> Result<Setup, BenchError> {
        let layout = CgroupLayout::detect();
        // First, while this process has one thread: the namespace is per thread.
        let environment = host::enter_private_mounts(layout)?;
        cancel::install()?;

        let store = open_store()?;
        let image = store
            .resolve(IMAGE)
            .step(|| "Cannot get the busybox image the benchmark runs".into())?;
        let layers = store
            .unpack(&image)
            .step(|| "Cannot unpack the busybox image's layers".into())?;
        let peer_env = container_env(&image.config.env);
        let mut machine = Machine::probe(layout, environment);
        machine.kvm = kvm_env.describe();

        let work = WorkDir::create()?;
        let exe = isol_exe()?;
        let bar = progress_bar();
        let kernel = if with_kvm {
            let k = guest_kernel()?;
            let copy = work.0.join("vmlinux");
            fs::copy(&k, &copy).step(|| format!("Cannot copy the guest kernel {}", k.display()))?;
            Some(copy)
        } else {
            None
        };
        Ok(Setup {
            store,
            image,
            layers,
            peer_env,
            machine,
            exe,
            bar,
            kernel,
            work,
        })
    }
}

/// Sets up the environment and subjects, runs every benchmark; `None` when cancelled.
fn bench(
    args: &BenchOptions,
    runs: u32,
    started: u64,
    kvm_env: &KvmEnv,
) -> Result<Option<Report>, BenchError> {
    let sides = Sides::choose(args, kvm_env);
    let mut setup = Setup::new(sides.kvm, kvm_env)?;
    let selected = dedup(&args.benchmarks);
    let warmup = if args.quick { 1 } else { WARMUP_ROUNDS };
    let mut benchmarks = Vec::new();
    let mut metrics = Vec::new();
    if selected.contains(&Benchmark::Start) {
        let Some((start, vm_memory)) = start_benchmark(args, &mut setup, &sides, (warmup, runs))?
        else {
            return Ok(None);
        };
        benchmarks.push(start);
        metrics.push(vm_memory);
    }
    if selected.contains(&Benchmark::CtrRun) {
        let mut slots = ctr_slots(args, &mut setup, &sides);
        let Some(report) = run_benchmark(
            Benchmark::CtrRun,
            &mut slots,
            (warmup, runs),
            &setup.bar,
            args.lab_inner,
        )?
        else {
            return Ok(None);
        };
        benchmarks.push(report);
    }
    if selected.contains(&Benchmark::Cri) {
        let Some(cri) = cri_benchmark(args, &mut setup, &sides, (warmup, runs))? else {
            return Ok(None);
        };
        benchmarks.push(cri);
    }
    let Some(more) = workload_metrics(args, &mut setup, &sides, &selected, runs, kvm_env)? else {
        return Ok(None);
    };
    metrics.extend(more);
    mark_unmeasured(&mut metrics, &sides);
    setup.bar.finish_and_clear();
    setup.machine.loadavg_end = host::loadavg();
    Ok(Some(Report {
        schema: report::SCHEMA,
        measured_in: measured_in(kvm_env, &setup.machine, &sides),
        started_at: host::rfc3339(started),
        finished_at: host::rfc3339(host::now_unix()),
        argv: std::env::args().filter(|a| a != "--lab-inner").collect(),
        machine: setup.machine,
        settings: Settings {
            runs,
            warmup_rounds: warmup,
            order: "interleaved (one run of each subject per round, same order every round)",
            timing: "start: wall time from spawning the runtime's process to its exit (Instant around spawn → wait), stdin/stdout on /dev/null, stderr on a pipe; cpu/syscall/io/net: inside the workload, between markers",
            run_timeout_s: cancel::RUN_TIMEOUT.as_secs(),
        },
        benchmarks,
        metrics,
    }))
}

/// The start benchmark on isol's backends and the peers, then the VM side's memory in runs of
/// its own (reading smaps would perturb the timing); `None` when cancelled.
fn start_benchmark(
    args: &BenchOptions,
    setup: &mut Setup,
    sides: &Sides,
    (warmup, runs): (u32, u32),
) -> Result<Option<(BenchmarkReport, metrics::Metric)>, BenchError> {
    let mut slots = start_slots(args, setup, sides);
    let inner = args.lab_inner;
    let Some(report) = run_benchmark(
        Benchmark::Start,
        &mut slots,
        (warmup, runs),
        &setup.bar,
        inner,
    )?
    else {
        return Ok(None);
    };
    let rounds = runs.min(if args.quick { 3 } else { 5 });
    let memory = vm_memory_metric(&mut slots, rounds, &setup.work.0, &setup.bar, inner);
    Ok(memory.map(|m| (report, m)))
}

/// The start benchmark's subjects: isol on each backend, then the peers, each ready or
/// skipped with the reason.
fn start_slots(args: &BenchOptions, setup: &mut Setup, sides: &Sides) -> Vec<Slot> {
    let store_root = setup.store.root().to_path_buf();
    let mut slots = Vec::new();
    if sides.container {
        slots.push(Slot::ready(Box::new(IsolSubject::new(
            setup.exe.clone(),
            store_root.clone(),
            IMAGE,
        ))));
    } else {
        slots.push(Slot::skipped(
            "isol",
            String::new(),
            sides.container_skip.clone(),
        ));
    }
    if let Some(k) = &setup.kernel {
        slots.push(Slot::ready(Box::new(IsolSubject::kvm(
            setup.exe.clone(),
            store_root,
            IMAGE,
            k.clone(),
        ))));
    } else {
        let mut s = Slot::skipped("isol-kvm", String::new(), sides.kvm_skip.clone());
        s.info.kind = "isol";
        slots.push(s);
    }
    for peer in dedup(&args.peers) {
        let slot = match peer {
            Peer::Qemu => qemu_slot(setup),
            _ if !sides.container => Slot::skipped(
                peer.name(),
                String::new(),
                format!(
                    "{} is a container runtime, and the container backend was not measured",
                    peer.name()
                ),
            ),
            _ => peer_slot(peer, setup),
        };
        if let Some(e) = &slot.error {
            note(
                &setup.bar,
                format!("isol bench: skipping {}: {e}", peer.name()),
            );
        }
        slots.push(slot);
    }
    slots
}

/// The `ctr-run` benchmark's subjects, each containerd's runc binary: isol-runc (container),
/// isol-runc-vm (kvm), then the container peers (runc, crun); each ready or skipped with the
/// reason. They share one containerd, stopped with the last of them.
fn ctr_slots(args: &BenchOptions, setup: &mut Setup, sides: &Sides) -> Vec<Slot> {
    let isol_runc = setup.exe.with_file_name("isol-runc");
    let peers: Vec<Peer> = dedup(&args.peers)
        .into_iter()
        .filter(|p| *p != Peer::Qemu)
        .collect();
    let isol_slot = |name: &str, why: String| {
        let mut s = Slot::skipped(name, String::new(), why);
        s.info.kind = "isol";
        s
    };
    let all_skipped = |why: &str| {
        let mut slots = vec![
            isol_slot("isol-runc", why.to_string()),
            isol_slot("isol-runc-vm", why.to_string()),
        ];
        slots.extend(
            peers
                .iter()
                .map(|p| Slot::skipped(p.name(), String::new(), why.to_string())),
        );
        slots
    };
    if !isol_runc.is_file() {
        return all_skipped(&format!(
            "no isol-runc beside isol ({}): build it (cargo build --bin isol-runc) or install it (setup.sh)",
            isol_runc.display()
        ));
    }
    // isol-runc-vm is isol-runc under its VM name: a link in the scratch dir.
    let vm_runtime = setup.work.0.join("ctr-bin").join("isol-runc-vm");
    let linked = fs::create_dir_all(setup.work.0.join("ctr-bin"))
        .and_then(|()| std::os::unix::fs::symlink(&isol_runc, &vm_runtime));
    let kernel = setup.kernel.as_deref();
    let ctrd = match ctr::start(&setup.work.0, &setup.layers, &setup.peer_env, kernel) {
        Ok(c) => std::rc::Rc::new(c),
        Err(e) => {
            note(&setup.bar, format!("isol bench: skipping ctr-run: {e}"));
            return all_skipped(&e);
        }
    };
    setup
        .machine
        .runtimes
        .insert("containerd".into(), ctrd.version.clone());
    let isol_version = format!("isol {}", env!("CARGO_PKG_VERSION"));
    let mut slots = Vec::new();
    if sides.container {
        slots.push(Slot::ready(Box::new(ctr::CtrSubject::new(
            ctrd.clone(),
            "isol-runc",
            isol_runc.clone(),
            "isol",
            "container",
            isol_version.clone(),
        ))));
    } else {
        slots.push(isol_slot("isol-runc", sides.container_skip.clone()));
    }
    match (&setup.kernel, linked) {
        (Some(_), Ok(())) => slots.push(Slot::ready(Box::new(ctr::CtrSubject::new(
            ctrd.clone(),
            "isol-runc-vm",
            vm_runtime,
            "isol",
            "kvm",
            isol_version,
        )))),
        (Some(_), Err(e)) => slots.push(isol_slot(
            "isol-runc-vm",
            format!("cannot link {} to isol-runc: {e}", vm_runtime.display()),
        )),
        (None, _) => slots.push(isol_slot("isol-runc-vm", sides.kvm_skip.clone())),
    }
    for peer in peers {
        let name = peer.name();
        let slot = if !sides.container {
            Slot::skipped(
                name,
                String::new(),
                format!(
                    "{name} is a container runtime, and the container backend was not measured"
                ),
            )
        } else {
            match subjects::find_in_path(name) {
                None => Slot::skipped(
                    name,
                    String::new(),
                    format!(
                        "not installed: no `{name}` in PATH; install it (apt-get install {name})"
                    ),
                ),
                Some(binary) => match subjects::version_of(&binary) {
                    Ok(v) => {
                        setup.machine.runtimes.insert(name.into(), v.clone());
                        Slot::ready(Box::new(ctr::CtrSubject::new(
                            ctrd.clone(),
                            name,
                            binary,
                            "peer",
                            "container",
                            v,
                        )))
                    }
                    Err(e) => Slot::skipped(name, String::new(), e),
                },
            }
        };
        slots.push(slot);
    }
    slots
}

/// The cri benchmark: a pod per run on each handler of a containerd of the bench's own
/// (`isol`, `isol-vm` with the kvm side, `runc` among the peers); `None` when cancelled.
fn cri_benchmark(
    args: &BenchOptions,
    setup: &mut Setup,
    sides: &Sides,
    rounds: (u32, u32),
) -> Result<Option<BenchmarkReport>, BenchError> {
    let isol_runc = setup.exe.with_file_name("isol-runc");
    let runc = dedup(&args.peers)
        .contains(&Peer::Runc)
        .then(|| subjects::find_in_path("runc"))
        .flatten();
    let s = cri::CriSetup {
        isol_runc: (sides.container && isol_runc.is_file()).then_some(isol_runc.clone()),
        kernel: setup.kernel.clone(),
        runc: runc.clone().filter(|_| sides.container),
        layers: &setup.layers,
        env: &setup.peer_env,
        work: &setup.work.0,
    };
    let handlers = cri::handlers(&s);
    let host = if handlers.is_empty() {
        Err(format!(
            "no runtime to measure: {} is missing",
            isol_runc.display()
        ))
    } else {
        cri::CriHost::start(&handlers, &s).map(|h| std::rc::Rc::new(std::cell::RefCell::new(h)))
    };
    let mut slots = Vec::new();
    let runc_version = runc.as_deref().map(subjects::version_of);
    for (name, kind, backend) in [
        ("isol", "isol", "container"),
        ("isol-vm", "isol", "kvm"),
        ("runc", "peer", "container"),
    ] {
        let why = match (name, &host) {
            (_, Err(e)) => Some(e.clone()),
            ("isol", _) | ("runc", _) if !sides.container => Some(sides.container_skip.clone()),
            ("isol-vm", _) if setup.kernel.is_none() => Some(sides.kvm_skip.clone()),
            ("isol" | "isol-vm", _) if s.isol_runc.is_none() => Some(format!(
                "not built: no {} beside the isol binary",
                isol_runc.display()
            )),
            ("runc", _) if !args.peers.contains(&Peer::Runc) => Some("not in --peers".into()),
            ("runc", _) if runc.is_none() => {
                Some("not installed: no `runc` in PATH; install it (apt-get install runc)".into())
            }
            ("runc", _) => runc_version.clone().and_then(Result::err),
            _ => None,
        };
        let slot = match (why, &host) {
            (None, Ok(h)) => {
                let version = match name {
                    "runc" => runc_version
                        .clone()
                        .and_then(Result::ok)
                        .unwrap_or_default(),
                    _ => format!("isol-runc {}", env!("CARGO_PKG_VERSION")),
                };
                let subject = cri::CriSubject::new(h.clone(), name, kind, backend, version);
                Slot::ready(Box::new(subject))
            }
            (why, _) => {
                let why = why.unwrap_or_default();
                note(
                    &setup.bar,
                    format!("isol bench: cri: skipping {name}: {why}"),
                );
                let mut slot = Slot::skipped(name, String::new(), why);
                slot.info.kind = kind;
                slot.info.backend = Some(backend);
                slot
            }
        };
        slots.push(slot);
    }
    let report = run_benchmark(
        Benchmark::Cri,
        &mut slots,
        rounds,
        &setup.bar,
        args.lab_inner,
    )?;
    // The subjects hold the host: all go before the host's drop removes what is left.
    drop(slots);
    drop(host);
    Ok(report.map(|mut r| {
        r.add_cri_ratios();
        r
    }))
}

/// Where the benchmarks beyond start run: isol's backends and the host.
fn runners(setup: &Setup, sides: &Sides) -> Result<Vec<Runner>, BenchError> {
    let mut runners = Vec::new();
    if sides.container {
        runners.push(Runner::Isol {
            exe: setup.exe.clone(),
            store_root: setup.store.root().to_path_buf(),
            kvm: false,
            kernel: None,
        });
    }
    if let Some(k) = &setup.kernel {
        runners.push(Runner::Isol {
            exe: setup.exe.clone(),
            store_root: setup.store.root().to_path_buf(),
            kvm: true,
            kernel: Some(k.clone()),
        });
    }
    let work = &setup.work.0;
    let io_dir = work.join("host-io");
    fs::create_dir_all(&io_dir).step(|| format!("Cannot create {}", io_dir.display()))?;
    runners.push(Runner::Host {
        bin_dir: workloads::host_bin_dir(&work.join("host-bin")).map_err(BenchError::Failed)?,
        io_dir,
    });
    Ok(runners)
}

/// The memory and density benchmarks' instance counts and runs.
fn memory_plan(
    args: &BenchOptions,
    runs: u32,
    work_runs: u32,
    want_density: bool,
    kvm_env: &KvmEnv,
) -> MemoryPlan {
    MemoryPlan {
        growth: vec![1, 5, 10],
        density: if args.quick || args.lab_inner {
            vec![10, 50]
        } else {
            vec![10, 50, 100]
        },
        runs: work_runs,
        density_runs: runs.min(if args.quick { 1 } else { 3 }),
        want_memory: true,
        want_density,
        kvm_density_max: (args.quick && matches!(kvm_env, KvmEnv::Lab)).then_some((
            10,
            "not with --quick in the lab: dozens of VMs booting on the lab's emulated CPU take minutes",
        )),
    }
}

/// The benchmarks beyond start (memory, density, cpu, syscall, io, net) on isol's backends and
/// the host; `None` when cancelled.
fn workload_metrics(
    args: &BenchOptions,
    setup: &mut Setup,
    sides: &Sides,
    selected: &[Benchmark],
    runs: u32,
    kvm_env: &KvmEnv,
) -> Result<Option<Vec<metrics::Metric>>, BenchError> {
    // QEMU microvm beside isol's microVMs in the density benchmark.
    let mut peers = Vec::new();
    if selected.contains(&Benchmark::Density) && dedup(&args.peers).contains(&Peer::Qemu) {
        peers.push(qemu_density_peer(setup));
    }
    let setup = &*setup;
    let runners = runners(setup, sides)?;
    let work_runs = runs.min(if args.quick { 2 } else { 10 });
    let sizes = Sizes::new(args.quick);
    let bar = &setup.bar;
    let progress = |msg: String| {
        if args.lab_inner || bar.is_hidden() {
            eprintln!("isol bench: {msg}");
        } else {
            bar.set_prefix("");
            bar.set_message(msg);
            bar.tick();
        }
    };
    if !bar.is_hidden() {
        bar.set_length(0);
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
    }
    let mut metrics = Vec::new();
    let want = |b: Benchmark| selected.contains(&b);
    if want(Benchmark::Memory) || want(Benchmark::Density) {
        let plan = memory_plan(args, runs, work_runs, want(Benchmark::Density), kvm_env);
        match workloads::memory_metrics(&runners, &mut peers, &plan, &setup.work.0, &progress) {
            Some(ms) => metrics.extend(ms.into_iter().filter(|m| {
                (m.benchmark == "memory" && want(Benchmark::Memory)) || m.benchmark == "density"
            })),
            None => return Ok(None),
        }
    }
    let timed: Vec<&str> = [
        Benchmark::Cpu,
        Benchmark::Syscall,
        Benchmark::Io,
        Benchmark::Shared,
    ]
    .into_iter()
    .filter(|b| want(*b))
    .map(Benchmark::name)
    .collect();
    if !timed.is_empty() {
        match workloads::timed_metrics(&runners, sizes, &timed, work_runs, &setup.work.0, &progress)
        {
            Some(ms) => metrics.extend(ms),
            None => return Ok(None),
        }
    }
    if want(Benchmark::Net) {
        match workloads::net_metrics(&runners, sizes, work_runs, &progress) {
            Some(ms) => metrics.extend(ms),
            None => return Ok(None),
        }
    }
    Ok(Some(metrics))
}

/// Never a silent gap: a backend not measured is a marked skip in every metric beyond start.
fn mark_unmeasured(metrics: &mut [metrics::Metric], sides: &Sides) {
    for m in metrics.iter_mut().filter(|m| m.benchmark != "start") {
        let has = |m: &metrics::Metric, p: &str| m.series.iter().any(|s| s.subject.starts_with(p));
        if !sides.kvm && !has(m, "isol-kvm") {
            m.series.push(metrics::Series::skipped(
                "isol-kvm",
                "isol (kvm)",
                sides.kvm_skip.clone(),
            ));
        }
        if !sides.container && !has(m, "isol-container") {
            m.series.push(metrics::Series::skipped(
                "isol-container",
                "isol (container)",
                sides.container_skip.clone(),
            ));
        }
    }
}

/// Where everything was measured: the report's first line.
fn measured_in(kvm_env: &KvmEnv, machine: &Machine, sides: &Sides) -> String {
    match kvm_env {
        KvmEnv::Lab => format!(
            "Measured inside the lab (a QEMU-TCG VM with nested KVM{}): every subject, the kvm and the container side alike, ran there, so they compare with each other but not with numbers measured directly on a host.",
            machine
                .outer_host
                .as_deref()
                .map(|h| format!(", on {h}"))
                .unwrap_or_default()
        ),
        _ if sides.kvm => "Measured on this host, kvm backend on hardware /dev/kvm.".into(),
        _ => format!(
            "Measured on this host; {}",
            if sides.container {
                sides.kvm_skip.as_str()
            } else {
                ""
            }
        ),
    }
}

/// The isol binary to run: in the lab, the path the outer bench gave (the lab's
/// /proc/self/exe shows the host root's mount point, not a path that exists there).
fn isol_exe() -> Result<PathBuf, BenchError> {
    if let Some(p) = std::env::var_os(lab::EXE_ENV) {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().step(|| "Cannot find the isol binary to benchmark".into())?;
    if exe.is_file() {
        return Ok(exe);
    }
    // Run in the lab directly (`isol lab -- isol bench …`): /proc/self/exe names the path
    // outside the lab's root; the path it was started by is good there.
    let argv0 = PathBuf::from(std::env::args_os().next().unwrap_or_default());
    let found = if argv0.components().count() > 1 {
        std::path::absolute(&argv0).ok().filter(|p| p.is_file())
    } else {
        argv0.to_str().and_then(subjects::find_in_path)
    };
    found.ok_or_else(|| {
        BenchError::Failed(format!(
            "Cannot find the isol binary to benchmark: {} does not exist here",
            exe.display()
        ))
    })
}

/// The guest kernel `isol run --backend kvm` would boot: $ISOL_KERNEL, or the newest cached.
fn guest_kernel() -> Result<PathBuf, BenchError> {
    if let Some(k) = std::env::var_os("ISOL_KERNEL") {
        return Ok(k.into());
    }
    let cache = std::env::var_os("ISOL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/isol"));
    fs::read_dir(cache.join("kernel"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("vmlinux"))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .ok_or_else(|| {
            BenchError::Failed(format!(
                "No guest kernel in {} for the kvm backend: build it with guest-images/build-kernel.sh or set ISOL_KERNEL",
                cache.join("kernel").display()
            ))
        })
}

/// The environment `isol run` gives a busybox container (see commands/run.rs), for the peers.
fn container_env(image_env: &[String]) -> Vec<String> {
    let mut env: Vec<String> = image_env.to_vec();
    let has = |env: &[String], key: &str| env.iter().any(|e| e.split('=').next() == Some(key));
    if !has(&env, "PATH") {
        env.insert(
            0,
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        );
    }
    env.retain(|e| e.split('=').next() != Some("HOSTNAME"));
    env.push(format!("HOSTNAME={}", oci::HOSTNAME));
    if !has(&env, "HOME") {
        env.push("HOME=/root".into());
    }
    env
}

/// A peer ready to run, or skipped with the reason.
fn peer_slot(peer: Peer, setup: &mut Setup) -> Slot {
    let name = peer.name();
    let Some(binary) = subjects::find_in_path(name) else {
        return Slot::skipped(
            name,
            String::new(),
            format!("not installed: no `{name}` in PATH; install it (apt-get install {name})"),
        );
    };
    let version = match subjects::version_of(&binary) {
        Ok(v) => v,
        Err(e) => return Slot::skipped(name, String::new(), e),
    };
    setup.machine.runtimes.insert(name.into(), version.clone());
    match OciPeer::new(
        name,
        binary,
        version.clone(),
        &setup.work.0,
        setup.layers.clone(),
        setup.peer_env.clone(),
    ) {
        Ok(p) => Slot::ready(Box::new(p)),
        Err(e) => Slot::skipped(name, version, e),
    }
}

/// QEMU `-M microvm` as a density subject: its idle instances boot the guest isol's kvm
/// backend boots with the workload's stdio on QEMU's own; skipped as [`qemu_slot`] says.
fn qemu_density_peer(setup: &mut Setup) -> workloads::DensityPeer {
    let slot = qemu_slot(setup);
    let skipped = slot
        .subject
        .is_none()
        .then(|| slot.error.clone().unwrap_or_default());
    let mut subject = slot.subject;
    workloads::DensityPeer {
        subject: slot.info.name,
        label: slot.info.label,
        skipped,
        command: Box::new(move |script| {
            let w = subjects::Workload {
                args: vec!["sh".into(), "-c".into(), script.into()],
                expect: 0,
            };
            subject
                .as_mut()
                .and_then(|s| s.stdio_command(&w))
                .unwrap_or_else(|| Err("QEMU is not set up".into()))
        }),
    }
}

/// QEMU `-M microvm`, ready to boot the guest isol's kvm backend boots, or skipped.
fn qemu_slot(setup: &mut Setup) -> Slot {
    let Some(kernel) = setup.kernel.clone() else {
        return Slot::skipped(
            "qemu",
            String::new(),
            "QEMU -M microvm is the kvm backend's peer, and the kvm backend was not measured"
                .into(),
        );
    };
    let Some(binary) = subjects::find_in_path("qemu-system-x86_64") else {
        return Slot::skipped(
            "qemu",
            String::new(),
            "not installed: no `qemu-system-x86_64` in PATH; apt-get install qemu-system-x86"
                .into(),
        );
    };
    let version = match subjects::version_of(&binary) {
        Ok(v) => v,
        Err(e) => return Slot::skipped("qemu", String::new(), e),
    };
    setup
        .machine
        .runtimes
        .insert("qemu".into(), version.clone());
    // The root disk isol's kvm backend boots (built now if not cached yet).
    let vm_image = isol_image::vm::VmImage {
        digest: &setup.image.summary.digest,
        layers: &setup.layers,
    };
    let disk = match isol_image::vm::root(
        &setup.store.vm_cache(),
        vm_image,
        isol_image::vm::RootForm::Disk,
    ) {
        Ok(d) => d,
        Err(e) => {
            return Slot::skipped(
                "qemu",
                version,
                format!("cannot build isol's root disk for QEMU: {e}"),
            );
        }
    };
    let init = std::env::var_os("ISOL_GUEST_INIT")
        .map(PathBuf::from)
        .unwrap_or_else(|| setup.exe.with_file_name("isol-guest-init"));
    let guest = Guest {
        kernel,
        disk,
        init,
        env: setup.peer_env.clone(),
    };
    match QemuPeer::new(&binary, version.clone(), &setup.work.0, guest) {
        Ok(q) => Slot::ready(Box::new(q)),
        Err(e) => Slot::skipped("qemu", version, e),
    }
}

/// The VMM memory overhead of isol-kvm and QEMU (peak RSS − guest RAM resident), measured in
/// `rounds` start → exit runs of their own, interleaved; `None` when cancelled.
fn vm_memory_metric(
    slots: &mut [Slot],
    rounds: u32,
    work: &Path,
    bar: &ProgressBar,
    inner: bool,
) -> Option<metrics::Metric> {
    let workload = Benchmark::Start.workload();
    let mut series: Vec<(usize, metrics::Series)> = Vec::new();
    for name in ["isol-kvm", "qemu"] {
        let Some(i) = slots.iter().position(|s| s.info.name == name) else {
            continue;
        };
        let slot = &slots[i];
        let mut s = metrics::Series::new(name, &slot.info.label);
        if !slot.active() {
            s = metrics::Series::skipped(
                name,
                &slot.info.label,
                format!(
                    "start → exit not measured: {}",
                    slot.error.as_deref().unwrap_or("no reason recorded")
                ),
            );
        }
        series.push((i, s));
    }
    if series.iter().any(|(_, s)| s.status == Status::Ok) {
        bar.set_prefix("start");
        bar.set_length(u64::from(rounds) * series.len() as u64);
        bar.set_position(0);
    }
    let log = work.join("vm-memory.log");
    for round in 0..rounds {
        if inner {
            eprintln!("isol bench: start: VM memory round {}/{rounds}", round + 1);
        }
        bar.set_message(format!("VM memory {}/{rounds}", round + 1));
        for (i, s) in series.iter_mut() {
            if s.status != Status::Ok {
                continue;
            }
            let subject = slots[*i]
                .subject
                .as_mut()
                .expect("ok series have a subject");
            let res = match subject.vm_command(&workload) {
                Some(Ok(mut cmd)) => subjects::measure_vm(&mut cmd, &log),
                Some(Err(e)) => Err(e),
                None => Err("not a VMM".into()),
            };
            if cancel::cancelled() {
                return None;
            }
            bar.inc(1);
            match res {
                Ok(m) => {
                    let mib = |kib: u64| kib as f64 / 1024.0;
                    s.push(mib(m.overhead_kib()));
                    s.part("peak_rss_mib", mib(m.maxrss_kib));
                    s.part("guest_resident_mib", mib(m.guest_kib.unwrap_or(0)));
                    s.part("relay_private_mib", mib(m.relay_kib.unwrap_or(0)));
                }
                Err(e) => s.fail(format!("round {round}: {e}")),
            }
        }
    }
    let _ = fs::remove_file(&log);
    let mut m = metrics::Metric {
        id: "vm-memory-overhead".into(),
        benchmark: "start",
        title: "VMM memory overhead: peak RSS − guest RAM resident".into(),
        method: format!(
            "{rounds} start → exit runs of `/bin/true` per VMM after the timed ones, interleaved (isol-kvm, qemu), both with {} MiB of guest RAM and 1 vCPU: peak RSS is `ru_maxrss` of the VMM process from `wait4`; guest RAM resident is the RSS of the guest RAM mapping (the largest anonymous mapping ≥ the guest size in /proc/PID/smaps, last value seen while reading it every {every} ms, which misses at most what the guest touches in the last {every} ms before it powers off; each read walks the VMM's page tables, so these runs are not timed); the sample is their difference: what the VMM itself costs. isol's VMM runs jailed (docs/design.md, \"The VMM's jail\"): `wait4`'s peak RSS is then the jailed VMM's (the larger of it and its relay), its smaps hold the guest RAM, and the relay's private memory (`Private_Clean` + `Private_Dirty` of its smaps_rollup, last value seen) is added to the sample. Parts per sample in report.json (`peak_rss_mib`, `guest_resident_mib`, `relay_private_mib`).",
            subjects::VM_MEMORY_MIB,
            every = qemu_microvm::SMAPS_EVERY.as_millis(),
        ),
        unit: "MiB",
        lower_is_better: true,
        series: series.into_iter().map(|(_, s)| s).collect(),
        ratios: Vec::new(),
        notes: vec![
            "for isol the VMM process is the one `isol run` started: isol's CLI (image lookup, root-disk cache check) execs `isol-vmm` in it (same pid), so its peak RSS is the larger of the CLI's and the VM's (the VM's), and while the VM runs only isol-vmm's executable is mapped (without isol-vmm beside isol, the VM runs inside isol and its whole executable counts)".into(),
        ],
    };
    m.finish(&[("isol-kvm", "qemu")]);
    Some(m)
}

/// A line on stderr above the progress bar (or plain, when the bar is hidden).
fn note(bar: &ProgressBar, msg: String) {
    if bar.is_hidden() {
        eprintln!("{msg}");
    } else {
        bar.println(msg);
    }
}

fn progress_bar() -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar
}

/// Pre-flight, warm-up and timed rounds of one benchmark; `None` when cancelled.
fn run_benchmark(
    bm: Benchmark,
    slots: &mut [Slot],
    (warmup, runs): (u32, u32),
    bar: &ProgressBar,
    inner: bool,
) -> Result<Option<BenchmarkReport>, BenchError> {
    let workload = bm.workload();
    // Exit status 42 can only come from the shell in the container: proof that the runtime
    // really ran the workload, and not just returned 0.
    let proof = Workload {
        args: vec!["/bin/sh".into(), "-c".into(), "exit 42".into()],
        expect: 42,
    };
    let active = slots.iter().filter(|s| s.active()).count() as u64;
    bar.set_prefix(bm.name());
    bar.set_length(active * (2 + u64::from(warmup + runs)));
    bar.set_position(0);

    bar.set_message("pre-flight");
    for slot in slots.iter_mut().filter(|s| s.active()) {
        for w in [&proof, &workload] {
            let res = slot.run_retrying("the pre-flight run", bar, |s| s.preflight(w));
            if cancel::cancelled() {
                return Ok(None);
            }
            bar.inc(1);
            if let Err(e) = res {
                if slot.info.kind == "isol" {
                    let cmd = w.args.join(" ");
                    let (who, what) = match bm {
                        Benchmark::Start => ("isol", format!("isol run {IMAGE} {cmd}")),
                        _ => (
                            slot.info.name.as_str(),
                            slot.info.command.replace("CMD", &cmd),
                        ),
                    };
                    return Err(BenchError::Failed(format!(
                        "{who} cannot run the benchmark's workload (`{what}`): {e}"
                    )));
                }
                note(
                    bar,
                    format!(
                        "isol bench: skipping {}: pre-flight failed: {e}",
                        slot.info.name
                    ),
                );
                slot.status = Status::Skipped;
                slot.error = Some(format!("pre-flight failed: {e}"));
                break;
            }
        }
    }

    for round in 0..warmup + runs {
        if inner {
            eprintln!(
                "isol bench: {}: round {}/{}",
                bm.name(),
                round + 1,
                warmup + runs
            );
        }
        bar.set_message(if round < warmup {
            format!("warm-up {}/{warmup}", round + 1)
        } else {
            format!("round {}/{runs}", round - warmup + 1)
        });
        for slot in slots.iter_mut().filter(|s| s.active()) {
            let res = slot.run_retrying(&format!("round {round}"), bar, |s| s.run(&workload));
            if cancel::cancelled() {
                return Ok(None);
            }
            bar.inc(1);
            match res {
                Ok(o) if round < warmup => slot.warmup.push((round, o)),
                Ok(o) => slot.samples.push((round, o)),
                Err(e) => {
                    note(
                        bar,
                        format!(
                            "isol bench: {} failed in round {round}: {e}",
                            slot.info.name
                        ),
                    );
                    slot.status = Status::Failed;
                    slot.error = Some(format!("round {round} failed: {e}"));
                }
            }
        }
    }

    let mut report = BenchmarkReport {
        name: bm.name(),
        description: bm.description(),
        image: IMAGE.into(),
        workload: workload.args.clone(),
        preflight: vec![proof.args.join(" "), workload.args.join(" ")],
        subjects: slots.iter().map(subject_report).collect(),
        ratios: BTreeMap::new(),
        ratios_with_root: BTreeMap::new(),
    };
    report.compute_ratios();
    Ok(Some(report))
}

fn record(round: u32, o: &Outcome) -> SampleRecord {
    SampleRecord {
        round,
        wall_ms: round3(o.wall_ms),
        phases_ms: o.phases.as_ref().map(|p| {
            p.iter()
                .map(|(name, ms)| (name.clone(), round3(*ms)))
                .collect()
        }),
        prep_ms: o.prep_ms.map(round3),
        cleanup_ms: o.cleanup_ms.map(round3),
    }
}

fn subject_report(slot: &Slot) -> SubjectReport {
    let walls: Vec<f64> = slot.samples.iter().map(|(_, o)| o.wall_ms).collect();
    let summary = Summary::of(&walls).map(rounded);
    let preps: Vec<f64> = slot.samples.iter().filter_map(|(_, o)| o.prep_ms).collect();
    let cleanups: Vec<f64> = slot
        .samples
        .iter()
        .filter_map(|(_, o)| o.cleanup_ms)
        .collect();
    let with_root: Vec<f64> = slot
        .samples
        .iter()
        .filter_map(|(_, o)| Some(o.prep_ms? + o.wall_ms + o.cleanup_ms?))
        .collect();
    SubjectReport {
        info: slot.info.clone(),
        status: slot.status,
        error: slot.error.clone(),
        notes: slot.notes.clone(),
        summary,
        samples: slot.samples.iter().map(|(r, o)| record(*r, o)).collect(),
        warmup_samples: slot.warmup.iter().map(|(r, o)| record(*r, o)).collect(),
        phases: phase_rows(&slot.samples, summary.map(|s| s.median)),
        prep_ms: Summary::of(&preps).map(rounded),
        cleanup_ms: Summary::of(&cleanups).map(rounded),
        with_root_ms: Summary::of(&with_root).map(rounded),
    }
}

fn rounded(s: Summary) -> Summary {
    Summary {
        median: round3(s.median),
        p25: round3(s.p25),
        p75: round3(s.p75),
        min: round3(s.min),
        max: round3(s.max),
        mean: round3(s.mean),
        ..s
    }
}

/// isol's phases over its samples, plus the time outside them; `None` for peers.
fn phase_rows(samples: &[(u32, Outcome)], median_wall: Option<f64>) -> Option<Vec<PhaseRow>> {
    let median_wall = median_wall?;
    let mut order: Vec<String> = vec![report::OUTSIDE.into()];
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for (_, o) in samples {
        let phases = o.phases.as_ref()?;
        let inside: f64 = phases.iter().map(|(_, ms)| ms).sum();
        values
            .entry(report::OUTSIDE.into())
            .or_default()
            .push((o.wall_ms - inside).max(0.0));
        for (name, ms) in phases {
            if !order.contains(name) {
                order.push(name.clone());
            }
            values.entry(name.clone()).or_default().push(*ms);
        }
    }
    let rows = order
        .into_iter()
        .filter_map(|name| {
            let s = Summary::of(values.get(&name)?)?;
            Some(PhaseRow {
                what: report::phase_meaning(&name),
                median_ms: round3(s.median),
                p25_ms: round3(s.p25),
                p75_ms: round3(s.p75),
                share: round3(s.median / median_wall),
                name,
            })
        })
        .collect();
    Some(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hangs (as the watchdog would see it) on the runs listed in `hang`, 0-based.
    struct Flaky {
        info: SubjectInfo,
        calls: usize,
        hang: Vec<usize>,
    }

    impl Subject for Flaky {
        fn info(&self) -> &SubjectInfo {
            &self.info
        }
        fn run(&mut self, _: &Workload) -> Result<Outcome, String> {
            self.calls += 1;
            if self.hang.contains(&(self.calls - 1)) {
                cancel::count_timeout();
                return Err("the run did not finish within 60 s and was killed".into());
            }
            Ok(Outcome {
                wall_ms: 1.0,
                phases: None,
                prep_ms: None,
                cleanup_ms: None,
            })
        }
    }

    fn flaky(hang: &[usize]) -> Slot {
        let mut slot = Slot::skipped("qemu", "1".into(), String::new());
        slot.subject = Some(Box::new(Flaky {
            info: slot.info.clone(),
            calls: 0,
            hang: hang.to_vec(),
        }));
        slot.status = Status::Ok;
        slot
    }

    #[test]
    fn one_timed_out_run_per_subject_is_repeated_with_a_note() {
        let w = Workload {
            args: vec!["true".into()],
            expect: 0,
        };
        let bar = ProgressBar::hidden();
        // A run that is killed once is repeated, and the report says so.
        let mut slot = flaky(&[0, 2]);
        assert!(slot.run_retrying("round 0", &bar, |s| s.run(&w)).is_ok());
        assert_eq!(slot.notes.len(), 1);
        assert!(
            slot.notes[0].starts_with("round 0 was killed ("),
            "{:?}",
            slot.notes
        );
        // Only once per subject: the next timeout is the subject's failure.
        let err = slot
            .run_retrying("round 1", &bar, |s| s.run(&w))
            .unwrap_err();
        assert!(err.contains("killed"), "{err}");
        // Two in a row: the repeat's failure is returned.
        let mut slot = flaky(&[0, 1]);
        assert!(slot.run_retrying("round 0", &bar, |s| s.run(&w)).is_err());
        // A failure that is not a timeout is not repeated.
        let mut slot = flaky(&[]);
        let res: Result<(), String> = slot.run_retrying("round 0", &bar, |_| Err("exit 3".into()));
        assert_eq!(res.unwrap_err(), "exit 3");
        assert!(slot.notes.is_empty());
    }

    #[test]
    fn runs_and_names_are_validated() {
        assert!(parse_runs("0").unwrap_err().contains("at least 1"));
        assert_eq!(parse_runs("30"), Ok(30));
        assert!(parse_runs("x").is_err());
        assert!(parse_peer("docker").unwrap_err().contains("crun, runc"));
        assert_eq!(parse_peer("qemu"), Ok(Peer::Qemu));
        assert!(parse_benchmark("disk").is_err());
        assert_eq!(parse_peer("runc"), Ok(Peer::Runc));
        assert_eq!(
            dedup(&[Peer::Crun, Peer::Crun, Peer::Runc]),
            [Peer::Crun, Peer::Runc]
        );
    }

    #[test]
    fn peers_get_isols_environment() {
        let env = container_env(&["PATH=/bin".into(), "HOSTNAME=x".into()]);
        assert_eq!(env, ["PATH=/bin", "HOSTNAME=isol-bench0", "HOME=/root"]);
        assert!(container_env(&[])[0].starts_with("PATH=/usr/local/sbin"));
    }
}
