//! `isol bench`, for real (as root): a short benchmark writes a complete report and leaves
//! nothing behind; bad input fails at once with one line and exit code 125. Nothing here looks
//! at the timings themselves: speed is for the benchmark to measure, not for tests to assert.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

/// A lab test's opening: `None` where KVM cannot run guests (the test has nothing to check:
/// [`kvm_ready`] says why); else, as root, the serial guard.
fn lab_test() -> Option<std::sync::MutexGuard<'static, ()>> {
    kvm_ready().then(root_test)
}

/// What a bench may leave behind: mounts, cgroups and scratch dirs named after it.
fn bench_leftovers() -> Vec<String> {
    let mut found = Vec::new();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    found.extend(
        mounts
            .lines()
            .filter(|l| l.contains("isol-bench"))
            .map(|l| format!("mount: {l}")),
    );
    let mut stack = vec![(Path::new("/sys/fs/cgroup").to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name().to_string_lossy().starts_with("isol-bench-") {
                found.push(format!("cgroup: {}", e.path().display()));
            }
            if depth < 4 {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    found
}

fn scratch_dirs() -> Vec<String> {
    fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("isol-bench."))
        .collect()
}

/// A finished `isol bench ARGS… --out DIR`: its output and the report it wrote.
struct Bench {
    /// Holds the report dir.
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    out: std::process::Output,
}

impl Bench {
    /// Runs `isol bench ARGS…` (with `env` set) into a fresh report dir; it must succeed.
    fn run(args: &[&str], env: &[(&str, &Path)]) -> Bench {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("report");
        let mut cmd = isol(&["bench"]);
        cmd.args(args).arg("--out").arg(&dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(code(&out), 0, "isol bench failed: {}", stderr(&out));
        Bench {
            _tmp: tmp,
            dir,
            out,
        }
    }

    /// `--runs 1 --quick --backends container --benchmarks BENCHMARKS`.
    fn quick_container(benchmarks: &str, env: &[(&str, &Path)]) -> Bench {
        let args = ["--runs", "1", "--quick", "--backends", "container"];
        Bench::run(&[&args[..], &["--benchmarks", benchmarks]].concat(), env)
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&fs::read(self.dir.join("report.json")).expect("report.json"))
            .unwrap()
    }

    fn md(&self) -> String {
        fs::read_to_string(self.dir.join("report.md")).expect("report.md")
    }
}

#[test]
fn a_short_bench_writes_a_complete_report_and_leaves_nothing() {
    let _g = root_test();
    let scratch_before = scratch_dirs();
    let bench = Bench::run(
        &[
            "--runs",
            "2",
            "--benchmarks",
            "start",
            "--backends",
            "container",
        ],
        &[],
    );
    let (o, dir, report) = (&bench.out, &bench.dir, bench.json());
    assert_eq!(report["schema"], "isol-bench/2");
    assert!(
        report["measured_in"]
            .as_str()
            .unwrap()
            .starts_with("Measured")
    );
    assert!(dir.join("report.html").is_file());
    let machine = &report["machine"];
    for key in [
        "kernel",
        "cpu_model",
        "cgroup_layout",
        "isol_version",
        "environment",
    ] {
        assert!(machine[key].is_string(), "machine.{key} missing: {machine}");
    }
    assert!(machine["nproc"].as_u64().unwrap() >= 1);
    assert!(machine["memory_bytes"].as_u64().unwrap() > 0);
    assert_eq!(report["settings"]["runs"], 2);
    let warmup = report["settings"]["warmup_rounds"].as_u64().unwrap() as usize;

    let benchmarks = report["benchmarks"].as_array().unwrap();
    assert_eq!(benchmarks.len(), 1);
    let b = &benchmarks[0];
    assert_eq!(b["name"], "start");
    assert_eq!(b["workload"], serde_json::json!(["/bin/true"]));
    let subjects = b["subjects"].as_array().unwrap();
    let names = subject_names(subjects);
    assert_eq!(names, ["isol", "isol-kvm", "crun", "runc", "qemu"]);

    for s in subjects {
        let name = s["name"].as_str().unwrap();
        match s["status"].as_str().unwrap() {
            "ok" => {
                let samples = s["samples"].as_array().unwrap();
                assert_eq!(samples.len(), 2, "{name}: {s}");
                assert_eq!(s["warmup_samples"].as_array().unwrap().len(), warmup);
                for x in samples {
                    assert!(x["wall_ms"].as_f64().unwrap() > 0.0, "{name}: {x}");
                }
                let sum = &s["summary"];
                assert_eq!(sum["n"], 2, "{name}: {sum}");
                for key in ["median", "p25", "p75", "min", "max"] {
                    assert!(sum[key].as_f64().unwrap() > 0.0, "{name}.{key}: {sum}");
                }
                assert!(s["error"].is_null());
            }
            "skipped" => {
                // Never a silent gap: a skipped peer says why.
                assert!(!s["error"].as_str().unwrap().is_empty(), "{s}");
                assert!(s["samples"].as_array().unwrap().is_empty());
                assert!(
                    stdout(o).contains(&format!("**{name}: skipped**")),
                    "{}",
                    stdout(o)
                );
            }
            other => panic!("{name}: unexpected status {other}: {s}"),
        }
    }

    // isol is never skipped, and its runs carry their phase breakdown.
    let isol = &subjects[0];
    assert_eq!(isol["status"], "ok", "{isol}");
    assert_eq!(isol["backend"], "container");
    for x in isol["samples"].as_array().unwrap() {
        assert!(x["phases_ms"]["rootfs"].as_f64().is_some(), "{x}");
    }
    let phases = isol["phases"].as_array().unwrap();
    assert!(phases.iter().any(|p| p["name"] == "outside-runtime"));
    for s in subjects
        .iter()
        .filter(|s| s["status"] == "ok" && s["kind"] == "peer")
    {
        let peer = s["name"].as_str().unwrap();
        assert!(b["ratios"]["isol"][peer].as_f64().unwrap() > 0.0, "{b}");
        assert!(
            b["ratios_with_root"]["isol"][peer].as_f64().unwrap() > 0.0,
            "{b}"
        );
        assert!(s["with_root_ms"]["median"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["samples"][0]["prep_ms"].as_f64().is_some(), "{s}");
    }

    // Each peer belongs to a side, and is compared only with isol's backend of that side.
    let side = |name: &str| subjects.iter().find(|s| s["name"] == name).unwrap()["backend"].clone();
    assert_eq!(side("crun"), "container");
    assert_eq!(side("qemu"), "kvm");
    assert_eq!(side("isol-kvm"), "kvm");
    assert!(b["ratios"]["isol"].get("qemu").is_none(), "{b}");

    // The VM side's memory: kvm is not measured on this host, so both rows are marked skips.
    let metrics = report["metrics"].as_array().unwrap();
    let vm = metrics
        .iter()
        .find(|m| m["id"] == "vm-memory-overhead")
        .expect("the VM memory metric, measured or skipped");
    assert_eq!(vm["benchmark"], "start");
    check_metric(vm);
    let vm_subjects: Vec<&str> = vm["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["subject"].as_str().unwrap())
        .collect();
    assert_eq!(vm_subjects, ["isol-kvm", "qemu"]);

    let md = bench.md();
    assert!(md.contains("| subject | median ms |"), "{md}");
    assert!(md.contains("### VMM memory overhead"), "{md}");
    assert!(md.contains("| isol "), "{md}");
    assert!(
        stdout(o).contains("| subject | median ms |"),
        "{}",
        stdout(o)
    );

    assert_eq!(bench_leftovers(), Vec::<String>::new());
    assert_eq!(
        scratch_dirs(),
        scratch_before,
        "scratch directory left in /tmp"
    );
}

#[test]
fn bad_input_fails_with_one_line_and_125() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    fs::write(&file, "").unwrap();
    let under_file = file.join("report");
    let cases: [(&[&str], &str); 6] = [
        (&["bench", "--peers", "crun,docker"], "docker"),
        (&["bench", "--backends", "container,xen"], "xen"),
        (&["bench", "--benchmarks", "start,disk"], "disk"),
        (&["bench", "--runs", "0"], "--runs"),
        (&["bench", "--runs", "many"], "--runs"),
        (
            &[
                "bench",
                "--runs",
                "2",
                "--out",
                under_file.to_str().unwrap(),
            ],
            "--out",
        ),
    ];
    for (args, mentions) in cases {
        let o = run(args);
        let err = stderr(&o);
        assert_eq!(code(&o), 125, "isol {args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "isol {args:?}: {err}");
        assert!(err.starts_with("isol: "), "{err}");
        assert!(err.contains(mentions), "isol {args:?}: {err}");
        assert!(
            stdout(&o).is_empty(),
            "isol {args:?} printed: {}",
            stdout(&o)
        );
    }
    assert!(!under_file.exists());
}

#[test]
fn a_peer_that_is_not_installed_is_a_marked_skip() {
    let _g = root_test();
    // No crun or runc in this PATH.
    let empty = tempfile::tempdir().unwrap();
    let args = [
        "--runs",
        "1",
        "--benchmarks",
        "start",
        "--backends",
        "container",
    ];
    let bench = Bench::run(
        &[&args[..], &["--peers", "crun,runc"]].concat(),
        &[("PATH", empty.path())],
    );
    let (o, report, md) = (&bench.out, bench.json(), bench.md());
    let subjects = report["benchmarks"][0]["subjects"].as_array().unwrap();
    for peer in ["crun", "runc"] {
        let s = subjects
            .iter()
            .find(|s| s["name"] == peer)
            .unwrap_or_else(|| panic!("no {peer} row: a silent gap"));
        assert_eq!(s["status"], "skipped", "{s}");
        let why = s["error"].as_str().unwrap();
        assert!(
            why.contains("not installed") && why.contains("apt-get install"),
            "{why}"
        );
        assert!(
            md.contains(&format!("**{peer}: skipped** — not installed")),
            "{md}"
        );
        assert!(
            stderr(o).contains(&format!("skipping {peer}: not installed")),
            "{}",
            stderr(o)
        );
    }
    // Not asked for: no qemu row.
    assert!(subjects.iter().all(|s| s["name"] != "qemu"));
    assert_eq!(subjects[0]["status"], "ok");
    assert_eq!(
        report["benchmarks"][0]["ratios"]["isol"],
        serde_json::json!(null)
    );
    assert_eq!(bench_leftovers(), Vec::<String>::new());
}

/// In the lab (real KVM, pure cgroup v2, / on overlayfs over 9p): every subject of the start
/// benchmark runs — isol's two backends, crun and runc (their upper dirs on a tmpfs there),
/// and QEMU microvm booting isol's guest — and the VM side's memory is measured for both VMMs.
#[test]
fn in_the_lab_every_start_subject_runs_and_both_vmms_memory_is_measured() {
    let Some(_g) = lab_test() else {
        return;
    };
    let bench = Bench::run(
        &[
            "--runs",
            "1",
            "--benchmarks",
            "start",
            "--backends",
            "container,kvm",
        ],
        &[],
    );
    let report = bench.json();
    let b = &report["benchmarks"][0];
    for s in b["subjects"].as_array().unwrap() {
        assert_eq!(s["status"], "ok", "{s}");
        assert_eq!(s["samples"].as_array().unwrap().len(), 1, "{s}");
    }
    assert!(
        b["ratios"]["isol-kvm"]["qemu"].as_f64().unwrap() > 0.0,
        "{b}"
    );
    assert!(b["ratios"]["isol-kvm"].get("crun").is_none(), "{b}");
    assert!(b["ratios"]["isol"]["crun"].as_f64().unwrap() > 0.0, "{b}");
    let vm = report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "vm-memory-overhead")
        .expect("the VM memory metric");
    check_metric(vm);
    for s in vm["series"].as_array().unwrap() {
        assert_eq!(s["status"], "ok", "{s}");
        let peak = s["parts"]["peak_rss_mib"][0].as_f64().unwrap();
        let guest = s["parts"]["guest_resident_mib"][0].as_f64().unwrap();
        assert!(guest > 0.0 && peak > guest, "{s}");
        let overhead = s["samples"][0].as_f64().unwrap();
        // A jailed VMM's overhead counts its relay's private pages too (design.md, "The
        // VMM's jail").
        let relay = s["parts"]
            .get("relay_private_mib")
            .map_or(0.0, |r| r[0].as_f64().unwrap());
        assert!((overhead - (peak - guest + relay)).abs() < 0.01, "{s}");
    }
    assert_eq!(vm["ratios"][0]["what"], "isol-kvm / qemu");
    assert_eq!(bench_leftovers(), Vec::<String>::new());
}

/// In the lab: the density benchmark starts isol's microVMs and QEMU microvm's (booting the
/// same guest, the workload's stdio on QEMU's own) side by side, gives each a rate per second
/// per core and their ratio, and leaves no VM running.
#[test]
fn lab_density_starts_isols_and_qemus_vms() {
    let Some(_g) = lab_test() else {
        return;
    };
    let bench = Bench::run(
        &[
            "--runs",
            "1",
            "--quick",
            "--benchmarks",
            "density",
            "--backends",
            "kvm",
            "--peers",
            "qemu",
        ],
        &[],
    );
    let report = bench.json();
    let d = report["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "density")
        .expect("the density metric")
        .clone();
    check_metric(&d);
    let series = d["series"].as_array().unwrap();
    for name in ["isol-kvm×10", "qemu×10"] {
        let s = series
            .iter()
            .find(|s| s["subject"] == name)
            .unwrap_or_else(|| panic!("no {name} row: {d}"));
        assert_eq!(s["status"], "ok", "{s}");
        assert!(s["samples"][0].as_f64().unwrap() > 0.0, "{s}");
    }
    assert!(
        d["ratios"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["what"] == "isol-kvm×10 / qemu×10"),
        "{d}"
    );
    let notes: Vec<&str> = d["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("QEMU") && n.contains("started per second per core")),
        "{notes:?}"
    );
    // Run through its staged dynamic loader: the name is not first on its command line.
    let qemus: Vec<String> = processes("")
        .into_iter()
        .filter(|c| c.contains("qemu-system"))
        .collect();
    assert_eq!(qemus, Vec::<String>::new());
    assert_eq!(bench_leftovers(), Vec::<String>::new());
}

/// The `ctr-run` benchmark's subjects, by name.
fn ctr_run_subjects(report: &Value) -> Vec<Value> {
    let b = report["benchmarks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "ctr-run")
        .expect("a ctr-run benchmark");
    assert!(
        b["description"].as_str().unwrap().contains("ctr run --rm"),
        "{b}"
    );
    b["subjects"].as_array().unwrap().clone()
}

/// `isol bench --quick --benchmarks ctr-run --peers runc --backends BACKENDS --runs RUNS`.
fn ctr_run_with_runc(backends: &str, runs: &str) -> Bench {
    for tool in ["containerd", "ctr", "runc"] {
        require_tool(tool);
    }
    let args = ["--quick", "--benchmarks", "ctr-run", "--peers", "runc"];
    Bench::run(
        &[&args[..], &["--backends", backends, "--runs", runs]].concat(),
        &[],
    )
}

/// The subjects' names, in the report's order.
fn subject_names(subjects: &[Value]) -> Vec<&str> {
    subjects
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect()
}

fn subject<'a>(subjects: &'a [Value], name: &str) -> &'a Value {
    subjects
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no {name} row: a silent gap"))
}

/// Nothing of the bench's containerd is left: no daemon or shim for its socket, no state of its
/// namespace under the shim's runc root, no cgroup of its namespace.
fn assert_no_containerd_left() {
    let ours: Vec<String> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("containerd") && c.contains("isol-bench."))
        .collect();
    assert_eq!(ours, Vec::<String>::new(), "containerd or shims left");
    let state = Path::new("/run/containerd/runc/isol-bench-ctr");
    let left: Vec<_> = fs::read_dir(state)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "runtime state left: {left:?}");
}

/// `--benchmarks ctr-run` on the host: `ctr run --rm` through a containerd of the bench's own,
/// with isol-runc and runc as its runc binary, both measured in the same run and compared both
/// ways; isol-runc-vm a marked skip (the kvm side was not asked for); nothing left.
#[test]
fn ctr_run_compares_isol_runc_and_runc_through_containerd() {
    let _g = root_test();
    let bench = ctr_run_with_runc("container", "2");
    let (report, md) = (bench.json(), bench.md());
    let subjects = ctr_run_subjects(&report);
    let names = subject_names(&subjects);
    assert_eq!(names, ["isol-runc", "isol-runc-vm", "runc"]);
    for name in ["isol-runc", "runc"] {
        let s = subject(&subjects, name);
        assert_eq!(s["status"], "ok", "{s}");
        assert_eq!(s["samples"].as_array().unwrap().len(), 2, "{s}");
        assert!(s["command"].as_str().unwrap().contains("ctr "), "{s}");
        assert!(s["version"].as_str().unwrap().contains("containerd"), "{s}");
    }
    assert_eq!(subject(&subjects, "isol-runc")["kind"], "isol");
    assert_eq!(subject(&subjects, "runc")["kind"], "peer");
    let vm = subject(&subjects, "isol-runc-vm");
    assert_eq!(vm["status"], "skipped", "{vm}");
    assert_eq!(vm["backend"], "kvm", "{vm}");
    assert!(
        vm["error"]
            .as_str()
            .unwrap()
            .contains("kvm backend not measured"),
        "{vm}"
    );
    let b = report["benchmarks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "ctr-run")
        .unwrap();
    // Each against the other, in the same run.
    assert!(
        b["ratios"]["isol-runc"]["runc"].as_f64().unwrap() > 0.0,
        "{b}"
    );
    assert!(
        b["ratios"]["runc"]["isol-runc"].as_f64().unwrap() > 0.0,
        "{b}"
    );
    assert!(md.contains("## ctr-run: `ctr run --rm`"), "{md}");
    assert!(
        md.contains("| vs isol-runc | vs isol-runc-vm | vs runc |"),
        "{md}"
    );
    assert!(
        md.contains("`ctr run --rm` with isol-runc starts and ends a container in"),
        "{md}"
    );
    assert!(
        md.contains("- **isol-runc-vm: skipped** — kvm backend not measured"),
        "{md}"
    );
    assert!(machine_has(&report, "containerd"), "{}", report["machine"]);
    assert_no_containerd_left();
    assert_eq!(bench_leftovers(), Vec::<String>::new());
    assert_eq!(scratch_dirs(), Vec::<String>::new());
}

fn machine_has(report: &Value, runtime: &str) -> bool {
    report["machine"]["runtimes"].get(runtime).is_some()
}

/// Without containerd, every `ctr-run` subject is a marked skip saying so, and the bench
/// still writes its report.
#[test]
fn ctr_run_without_containerd_is_a_marked_skip() {
    let _g = root_test();
    let empty = tempfile::tempdir().unwrap();
    let bench = Bench::quick_container("ctr-run", &[("PATH", empty.path())]);
    let (o, report) = (&bench.out, bench.json());
    let subjects = ctr_run_subjects(&report);
    assert!(subjects.len() >= 2, "{subjects:?}");
    for s in &subjects {
        assert_eq!(s["status"], "skipped", "{s}");
        let why = s["error"].as_str().unwrap();
        assert!(why.contains("no `containerd` in PATH"), "{why}");
    }
    assert!(
        stderr(o).contains("skipping ctr-run: not installed"),
        "{}",
        stderr(o)
    );
    assert_eq!(bench_leftovers(), Vec::<String>::new());
}

/// In the lab: `ctr-run` with the VM side too — isol-runc-vm boots a microVM per `ctr run`,
/// measured beside isol-runc and runc, and compared with both.
#[test]
fn in_the_lab_ctr_run_measures_isol_runc_vm_beside_the_containers() {
    let Some(_g) = lab_test() else {
        return;
    };
    let bench = ctr_run_with_runc("container,kvm", "1");
    let report = bench.json();
    let subjects = ctr_run_subjects(&report);
    for s in &subjects {
        assert_eq!(s["status"], "ok", "{s}");
        assert_eq!(s["samples"].as_array().unwrap().len(), 1, "{s}");
    }
    assert_eq!(subject(&subjects, "isol-runc-vm")["backend"], "kvm");
    let b = &report["benchmarks"][0];
    for (a, z) in [("isol-runc-vm", "isol-runc"), ("isol-runc-vm", "runc")] {
        assert!(b["ratios"][a][z].as_f64().unwrap() > 0.0, "{a}/{z}: {b}");
    }
    assert!(
        bench
            .md()
            .contains("With isol-runc-vm (a microVM per container) it takes"),
        "{}",
        bench.md()
    );
    assert_no_containerd_left();
    assert_eq!(bench_leftovers(), Vec::<String>::new());
}

/// Every metric's JSON: a method, a unit, and for every subject either samples with a summary
/// or a reason it has none.
fn check_metric(m: &Value) {
    let id = m["id"].as_str().unwrap();
    assert!(!m["method"].as_str().unwrap().is_empty(), "{id}: no method");
    assert!(m["unit"].is_string(), "{id}");
    let series = m["series"].as_array().unwrap();
    assert!(!series.is_empty(), "{id}: no series");
    for s in series {
        let subject = s["subject"].as_str().unwrap();
        match s["status"].as_str().unwrap() {
            "ok" => {
                let n = s["samples"].as_array().unwrap().len();
                assert!(n >= 1, "{id}/{subject}: no samples: {s}");
                assert_eq!(
                    s["summary"]["n"].as_u64().unwrap() as usize,
                    n,
                    "{id}/{subject}"
                );
                assert!(s["summary"]["median"].is_number(), "{id}/{subject}");
            }
            "skipped" | "failed" => {
                assert!(
                    !s["error"].as_str().unwrap_or("").is_empty(),
                    "{id}/{subject}: a gap without a reason: {s}"
                );
            }
            other => panic!("{id}/{subject}: status {other}"),
        }
    }
    for r in m["ratios"].as_array().unwrap() {
        assert!(r["value"].as_f64().unwrap() > 0.0, "{id}: {r}");
        assert!(!r["reading"].as_str().unwrap().is_empty(), "{id}: {r}");
    }
}

#[test]
fn the_workload_benchmarks_have_samples_from_every_backend_they_claim() {
    let _g = root_test();
    let bench = Bench::quick_container("memory,density,cpu,syscall,io,net,shared", &[]);
    let report = bench.json();
    assert!(report["benchmarks"].as_array().unwrap().is_empty());
    let metrics = report["metrics"].as_array().unwrap();
    let ids: Vec<&str> = metrics.iter().map(|m| m["id"].as_str().unwrap()).collect();
    for want in [
        "memory",
        "memory-growth",
        "density",
        "cpu",
        "syscall",
        "io-seq-write",
        "io-seq-read",
        "io-rand-read",
        "io-rand-write",
        "io-fsync",
        "net",
        "net-host",
        "net-rr",
        "shared-write",
        "shared-read",
        "shared-meta",
    ] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    for m in metrics {
        check_metric(m);
        let id = m["id"].as_str().unwrap();
        let series = m["series"].as_array().unwrap();
        let get = |p: &str| {
            series
                .iter()
                .find(|s| s["subject"].as_str().unwrap().starts_with(p))
        };
        // The container backend was asked for: it has samples (the one-instance memory and the
        // marker-timed work; concurrent starts are reported, failed or not, with a reason).
        if id != "memory-growth" {
            let c = get("isol-container").unwrap_or_else(|| panic!("{id}: no container"));
            assert_eq!(c["status"], "ok", "{id}: {c}");
        }
        // kvm was not: a marked skip, never a silent gap.
        let k = get("isol-kvm").unwrap_or_else(|| panic!("{id}: no kvm row"));
        assert_eq!(k["status"], "skipped", "{id}");
        if id == "net-host" {
            // The host sends: its row is a marked skip saying so.
            let h = get("host").unwrap_or_else(|| panic!("{id}: no host row"));
            assert_eq!(h["status"], "skipped", "{id}: {h}");
        } else if id == "density" {
            // No host row; QEMU, the kvm side's peer, is a marked skip without the kvm side.
            let q = get("qemu").unwrap_or_else(|| panic!("{id}: no qemu row"));
            assert_eq!(q["status"], "skipped", "{id}: {q}");
            assert!(
                q["error"]
                    .as_str()
                    .unwrap()
                    .contains("kvm backend was not measured"),
                "{q}"
            );
        } else if !id.starts_with("memory-growth") {
            let h = get("host").unwrap_or_else(|| panic!("{id}: no host reference"));
            assert_eq!(h["status"], "ok", "{id}: {h}");
        }
        if ["cpu", "syscall", "net"].contains(&id)
            || id.starts_with("io-")
            || id.starts_with("shared-")
        {
            assert!(
                m["ratios"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["what"] == "isol-container / host"),
                "{id}: {m}"
            );
        }
    }
    let md = bench.md();
    assert!(md.contains("isol-container / host = "), "{md}");
    assert!(md.contains("**isol (kvm): skipped**"), "{md}");
    assert_eq!(bench_leftovers(), Vec::<String>::new());
}

/// An instance that never prints `ready` (and ignores its stdin) is stopped at its deadline,
/// nothing of it is left running, and its rows say why — for the isol container and the host
/// alike — while the bench goes on to the end and writes its report.
#[test]
fn an_instance_that_never_gets_ready_is_stopped_and_its_rows_say_why() {
    let _g = root_test();
    // A sleep no other test runs, to find leftovers by.
    let never_ready = "exec sleep 3141";
    let bench = Bench::quick_container(
        "memory",
        &[
            ("ISOL_BENCH_IDLE_SCRIPT", Path::new(never_ready)),
            ("ISOL_BENCH_INSTANCE_TIMEOUT", Path::new("2")),
        ],
    );
    let report = bench.json();
    let metrics = report["metrics"].as_array().unwrap();
    let metric = |id: &str| {
        metrics
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no {id} metric: {metrics:?}"))
    };
    let memory = metric("memory");
    check_metric(memory);
    for subject in ["isol-container", "host"] {
        let s = memory["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subject"] == subject)
            .unwrap_or_else(|| panic!("no {subject} row: a silent gap"));
        assert_ne!(s["status"], "ok", "{s}");
        assert!(s["samples"].as_array().unwrap().is_empty(), "{s}");
        let why = s["error"].as_str().unwrap();
        assert!(
            why.contains("not ready within 2 s") && why.contains("stopped with SIGTERM"),
            "{why}"
        );
    }
    // Growth: ×1 failed the same way; larger N were not tried, and say so.
    let growth = metric("memory-growth");
    check_metric(growth);
    let rows = growth["series"].as_array().unwrap();
    let row = |subject: &str| rows.iter().find(|s| s["subject"] == subject).unwrap();
    assert!(
        row("isol-container×1")["error"]
            .as_str()
            .unwrap()
            .contains("not ready within 2 s"),
        "{growth}"
    );
    for n in [5, 10] {
        let s = row(&format!("isol-container×{n}"));
        assert_eq!(s["status"], "skipped", "{s}");
        assert!(
            s["error"]
                .as_str()
                .unwrap()
                .starts_with("not tried: ×1 failed"),
            "{s}"
        );
    }
    let md = bench.md();
    assert!(
        md.contains("**isol (container): skipped** — round 0: instance 1/1 not ready within 2 s"),
        "{md}"
    );
    // Every instance was stopped: no sleep 3141 is left.
    let left: Vec<String> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("sleep 3141"))
        .collect();
    assert_eq!(left, Vec::<String>::new());
    assert_eq!(bench_leftovers(), Vec::<String>::new());
}

/// Command lines of the processes that run `prefix…`.
fn processes(prefix: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with(prefix))
        .collect()
}

#[test]
fn a_second_ctrl_c_stops_idle_instances_at_once_and_leaves_nothing() {
    let _g = root_test();
    // Instances that never get ready, with a deadline no test waits out: only the second
    // Ctrl-C can end the wait for them. A sleep no other test runs, to find them by.
    let tmp = tempfile::tempdir().unwrap();
    let mut bench = isol(&[
        "bench",
        "--runs",
        "1",
        "--quick",
        "--backends",
        "container",
        "--benchmarks",
        "memory",
    ])
    .arg("--out")
    .arg(tmp.path().join("report"))
    .env("ISOL_BENCH_IDLE_SCRIPT", "exec sleep 2718")
    .env("ISOL_BENCH_INSTANCE_TIMEOUT", "100000")
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    // The first idle instance (the container's) is running once its workload is.
    while processes("sleep 2718").is_empty() {
        assert!(bench.try_wait().unwrap().is_none(), "the bench ended early");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pid = nix::unistd::Pid::from_raw(bench.id() as i32);
    // Two different signals, so that neither is merged into the other while pending.
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // Without the second Ctrl-C's kill the bench would wait 100000 s for the instance.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(st) = bench.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = bench.kill();
            let _ = bench.wait();
            // Its instances, stopped as the bench would (isol cleans up on SIGTERM).
            for e in fs::read_dir("/proc").unwrap().flatten() {
                let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                let pid = e.file_name().to_string_lossy().parse::<i32>();
                if let Ok(pid) = pid
                    && cmd.starts_with(&format!("{} run ", isol_bin()))
                    && cmd.ends_with("exec sleep 2718 ")
                {
                    let pid = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
            }
            panic!("the bench did not stop after the second Ctrl-C");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut bench.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("benchmark cancelled"), "{err}");
    assert!(!tmp.path().join("report").exists(), "a report was written");
    assert_eq!(processes("sleep 2718"), Vec::<String>::new());
    assert_eq!(bench_leftovers(), Vec::<String>::new());
    assert_no_leftovers("after a second Ctrl-C");
    let marks = fs::read_dir(test_home().join("in-use")).map_or(0, |d| d.count());
    assert_eq!(marks, 0, "a killed run's in-use mark was left");
}

/// The links and shims a cri benchmark may leave: its CNI bridge, containerd's runc v2 shims.
fn cri_leftovers() -> Vec<String> {
    let mut found = bench_leftovers();
    if Path::new("/sys/class/net/isolbcri0").exists() {
        found.push("link: isolbcri0".into());
    }
    // The bench's containerd and its shims name its scratch dir (`-address DIR/sock`).
    found.extend(
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains("containerd") && c.contains("/isol-bench."))
            .map(|c| format!("process: {c}")),
    );
    found
}

/// The cri benchmark's report: one row per handler (`isol`, `isol-vm`, `runc`), each `ok`
/// with `runs` samples and their teardown apart, or skipped where `skipped` says why.
fn check_cri(report: &Value, runs: usize, skipped: &[(&str, &str)]) -> Value {
    let b = report["benchmarks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "cri")
        .expect("the cri benchmark")
        .clone();
    assert_eq!(b["workload"], serde_json::json!(["/bin/true"]));
    let subjects = b["subjects"].as_array().unwrap();
    let names = subject_names(subjects);
    assert_eq!(names, ["isol", "isol-vm", "runc"], "{b}");
    for s in subjects {
        let name = s["name"].as_str().unwrap();
        if let Some((_, why)) = skipped.iter().find(|(n, _)| *n == name) {
            assert_eq!(s["status"], "skipped", "{s}");
            assert!(s["error"].as_str().unwrap().contains(why), "{s}");
            continue;
        }
        assert_eq!(s["status"], "ok", "{s}");
        assert!(
            s["command"].as_str().unwrap().contains("RunPodSandbox"),
            "{s}"
        );
        let samples = s["samples"].as_array().unwrap();
        assert_eq!(samples.len(), runs, "{s}");
        for sample in samples {
            assert!(sample["wall_ms"].as_f64().unwrap() > 0.0, "{s}");
            assert!(sample["cleanup_ms"].as_f64().unwrap() > 0.0, "{s}");
        }
        assert!(s["cleanup_ms"]["median"].as_f64().unwrap() > 0.0, "{s}");
    }
    b
}

/// The cri benchmark on this host: a pod per run through containerd's CRI on isol-runc and
/// on runc, the two compared; the VM handler skipped with the kvm side's reason, and nothing
/// left (pods, shims, the bridge, cgroups, mounts).
#[test]
fn the_cri_benchmark_starts_pods_on_isol_runc_and_runc() {
    let _g = root_test();
    let scratch_before = scratch_dirs();
    let bench = Bench::quick_container("cri", &[]);
    let (report, md) = (bench.json(), bench.md());
    let b = check_cri(&report, 1, &[("isol-vm", "kvm backend not measured")]);
    assert!(b["ratios"]["isol"]["runc"].as_f64().unwrap() > 0.0, "{b}");
    assert!(md.contains("through the CRI"), "{md}");
    assert!(md.contains("Teardown (StopContainer"), "{md}");
    assert!(md.contains("× runc's"), "{md}");
    assert_eq!(cri_leftovers(), Vec::<String>::new());
    assert_eq!(scratch_dirs(), scratch_before);
}

/// A SIGKILLed bench in the middle of the cri benchmark: its containerd dies with it
/// (`PR_SET_PDEATHSIG`); the shims it started, their pods, its mounts and scratch dir are
/// swept by the next bench, which leaves nothing either.
#[test]
fn a_sigkilled_cri_benchmark_is_swept_by_the_next_one() {
    a_sigkilled_bench_is_swept_by_the_next_one("cri");
}

/// The same for the ctr-run benchmark's containerd, shims and containers.
#[test]
fn a_sigkilled_ctr_run_benchmark_is_swept_by_the_next_one() {
    a_sigkilled_bench_is_swept_by_the_next_one("ctr-run");
}

fn a_sigkilled_bench_is_swept_by_the_next_one(benchmark: &str) {
    let _g = root_test();
    let scratch_before = scratch_dirs();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = isol(&["bench"])
        .args(["--runs", "50", "--quick", "--backends", "container"])
        .args(["--benchmarks", benchmark, "--out"])
        .arg(tmp.path().join("report"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let scratch = format!("/isol-bench.{}/", child.id());
    let procs = |what: &str| -> Vec<String> {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(what) && c.contains(&scratch))
            .collect()
    };
    let bench = child.id();
    // Wait (bounded) until a pod's shim runs (the bench is inside the benchmark) and, for the
    // cri one, a pod's network is up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while procs("containerd-shim").is_empty()
        || (benchmark == "cri" && cni_results_of(bench).is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no shim of the bench's containerd appeared"
        );
        assert!(child.try_wait().unwrap().is_none(), "the bench ended early");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // containerd follows its parent; the shims are not its children.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !procs("containerd --config").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the bench's containerd outlived it: {:?}",
            procs("containerd --config")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !cri_leftovers().is_empty(),
        "a killed bench leaves its shims for the next one to sweep"
    );
    // And, for the cri one, its pods' CNI results and the network namespaces they name.
    let networks = cni_results_of(bench);
    assert_eq!(networks.is_empty(), benchmark != "cri", "{networks:?}");
    let _next = Bench::quick_container(benchmark, &[]);
    assert_eq!(cri_leftovers(), Vec::<String>::new());
    assert_eq!(scratch_dirs(), scratch_before);
    assert_eq!(cni_results_of(bench), Vec::<(String, Vec<String>)>::new());
    for (_, netns) in networks {
        for ns in netns {
            assert!(!Path::new(&ns).exists(), "{ns} outlived the sweep");
        }
    }
}

/// The CNI results (containerd's CNI library keeps them in /var/lib/cni/results) of the pods
/// of the bench whose pid is `bench` (its pods' names hold it), each with the network
/// namespaces it names.
fn cni_results_of(bench: u32) -> Vec<(String, Vec<String>)> {
    let pod = format!("\"isol-bench-{bench}-");
    fs::read_dir("/var/lib/cni/results")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let text = fs::read_to_string(e.path()).ok()?;
            if !text.contains(&pod) {
                return None;
            }
            let v: Value = serde_json::from_str(&text).ok()?;
            let netns = v["result"]["interfaces"]
                .as_array()?
                .iter()
                .filter_map(|i| Some(i["sandbox"].as_str()?.to_string()))
                .collect();
            Some((e.path().display().to_string(), netns))
        })
        .collect()
}

/// In the lab: the cri benchmark's three handlers, the VM one a microVM per pod, and the VM's
/// time over the container's. Not named `in_the_lab…`: test.sh's lab line leaves it out (it
/// takes minutes in the lab; docs/benchmarks.md, "The `cri` benchmark").
#[test]
fn cri_benchmark_runs_pods_in_vms_lab() {
    let Some(_g) = lab_test() else {
        return;
    };
    let args = "--runs 2 --quick --benchmarks cri --backends container,kvm";
    let bench = Bench::run(&args.split(' ').collect::<Vec<_>>(), &[]);
    let b = check_cri(&bench.json(), 2, &[]);
    assert!(
        b["ratios"]["isol-vm"]["isol"].as_f64().unwrap() > 0.0,
        "{b}"
    );
    assert!(b["ratios"]["isol"]["runc"].as_f64().unwrap() > 0.0, "{b}");
    assert!(bench.md().contains("In a microVM (handler isol-vm)"));
    assert_eq!(cri_leftovers(), Vec::<String>::new());
}
