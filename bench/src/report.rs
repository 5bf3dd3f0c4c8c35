//! What a bench writes: `report.json` (every sample, the machine, the settings) and `report.md`
//! (the tables people read). `report.html` will render the same [`Report`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::host::Machine;
use super::stats::{Status, Summary, round3};
use super::subjects::SubjectInfo;

/// The name of the `ctr-run` benchmark, whose subjects are all compared with each other.
pub const CTR_RUN: &str = "ctr-run";

/// Version of the `report.json` layout.
pub const SCHEMA: &str = "isol-bench/2";

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    /// Where everything was measured; the first line of report.md.
    pub measured_in: String,
    pub started_at: String,
    pub finished_at: String,
    /// The command line of the bench.
    pub argv: Vec<String>,
    pub machine: Machine,
    pub settings: Settings,
    pub benchmarks: Vec<BenchmarkReport>,
    /// memory, density, cpu, syscall, io, net.
    pub metrics: Vec<super::metrics::Metric>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Timed runs per subject.
    pub runs: u32,
    /// Rounds run first and discarded (kept in `warmup_samples`).
    pub warmup_rounds: u32,
    /// How subjects alternate: one run of each, in turn, per round.
    pub order: &'static str,
    /// What is timed.
    pub timing: &'static str,
    pub run_timeout_s: u64,
}

#[derive(Debug, Serialize)]
pub struct BenchmarkReport {
    pub name: &'static str,
    pub description: &'static str,
    pub image: String,
    /// The workload's argv inside the container.
    pub workload: Vec<String>,
    /// Run once per subject before timing, to prove the workload really runs in it.
    pub preflight: Vec<String>,
    pub subjects: Vec<SubjectReport>,
    /// `ratios[subject][peer]`: the subject's median over the peer's median.
    pub ratios: BTreeMap<String, BTreeMap<String, f64>>,
    /// `ratios_with_root[subject][peer]`: the subject's median over the median of the peer's
    /// run plus the untimed root preparation and cleanup the bench does for it (the work isol
    /// does inside its own run).
    pub ratios_with_root: BTreeMap<String, BTreeMap<String, f64>>,
}

#[derive(Debug, Serialize)]
pub struct SubjectReport {
    #[serde(flatten)]
    pub info: SubjectInfo,
    pub status: Status,
    pub error: Option<String>,
    /// What happened that the numbers do not show (a run repeated after a timeout).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Of `samples`; absent when there are none.
    pub summary: Option<Summary>,
    pub samples: Vec<SampleRecord>,
    pub warmup_samples: Vec<SampleRecord>,
    /// isol only: where its time goes.
    pub phases: Option<Vec<PhaseRow>>,
    /// Peers only: the untimed overlay root preparation (mkdir, mount) before each run.
    pub prep_ms: Option<Summary>,
    /// Peers only: the untimed overlay root cleanup (unmount, removal) after each run.
    pub cleanup_ms: Option<Summary>,
    /// Peers only: per run, prep + run + cleanup: the same work `isol run` does in its time.
    pub with_root_ms: Option<Summary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SampleRecord {
    /// 0-based round; warm-up rounds come first.
    pub round: u32,
    pub wall_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phases_ms: Option<BTreeMap<String, f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prep_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleanup_ms: Option<f64>,
}

/// One phase of isol's start, over the timed samples.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseRow {
    pub name: String,
    pub what: &'static str,
    pub median_ms: f64,
    pub p25_ms: f64,
    pub p75_ms: f64,
    /// `median_ms` over the median wall time (medians do not add up exactly).
    pub share: f64,
}

/// The pseudo-phase for what isol's runtime does not time itself.
pub const OUTSIDE: &str = "outside-runtime";

/// What each of isol's phases covers (container/src/process.rs).
pub fn phase_meaning(name: &str) -> &'static str {
    match name {
        OUTSIDE => {
            "exec of the isol binary, CLI parsing, store open, image resolve, layer check, JSON output, exit"
        }
        "cgroup" => "sweep of stale runs, run dir creation, cgroup creation",
        "prepare" => "seccomp filter compile, child spec",
        "namespaces" => {
            "clone into new pid/ipc/uts/mount/net namespaces (and, on cgroup v2, into the cgroup)"
        }
        "cgroup-attach" => {
            "uid/gid maps (rootless); a move by pid only where clone3 is missing (the child enters its cgroup itself)"
        }
        "network" => "network setup (none: nothing)",
        "child-prepare" => "child: its cgroup (v1: writes 0 to tasks), hostname, loopback up",
        "rootfs" => {
            "child: tmpfs writable layer, overlay, /proc, /sys, /dev, pivot_root, masked paths"
        }
        "sealed-copy" => "parent thread: sealed memfd copy of isol-init, which the child waits for",
        "security" => "child: cgroup namespace, setsid, stdin, workdir, capabilities, no_new_privs",
        "seccomp" => "child: install the seccomp filter",
        "exec" => "child: execveat of the sealed init, which forks and execs the workload",
        "run" => {
            "the workload runs and exits, the container's namespaces are torn down; isol reaps it"
        }
        "teardown" => "cgroup removal, run dir removal",
        "vmm-setup" => {
            "kvm: VMM start → first vCPU entry (VM, memory, kernel and initramfs load, devices)"
        }
        "kernel-boot" => "kvm: first vCPU entry → guest init starts",
        "init" => "kvm: guest init mounts the root and starts the workload",
        "workload" => "kvm: the workload runs and exits",
        "vm-exit" => "kvm: workload exit → the VM is gone",
        _ => "",
    }
}

impl BenchmarkReport {
    /// Median of an ok (or failed, with samples) subject by name.
    pub(crate) fn median(&self, name: &str) -> Option<f64> {
        self.subjects
            .iter()
            .find(|s| s.info.name == name && s.status == Status::Ok)
            .and_then(|s| s.summary)
            .map(|s| s.median)
    }

    /// Whether every subject is compared with every other (`ctr-run`: the same client with
    /// each runtime, the container and the VM side alike) rather than isol with the peers.
    fn all_pairs(&self) -> bool {
        self.name == CTR_RUN
    }

    /// The subjects `s` is compared with: the peers of its side (container or kvm); in
    /// `ctr-run`, every other subject.
    fn peers_of(&self, s: &SubjectReport) -> Vec<String> {
        if self.all_pairs() {
            return self
                .subjects
                .iter()
                .filter(|p| p.info.name != s.info.name)
                .map(|p| p.info.name.clone())
                .collect();
        }
        self.subjects
            .iter()
            .filter(|p| p.info.kind == "peer")
            .filter(|p| match (p.info.backend, s.info.backend) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            })
            .map(|p| p.info.name.clone())
            .collect()
    }

    /// Fills `ratios` from the subjects' medians, each subject against the peers of its side.
    pub fn compute_ratios(&mut self) {
        let mut ratios = BTreeMap::new();
        for s in &self.subjects {
            let Some(m) = self.median(&s.info.name) else {
                continue;
            };
            let row: BTreeMap<String, f64> = self
                .peers_of(s)
                .iter()
                .filter_map(|p| Some((p.clone(), round3(m / self.median(p)?))))
                .collect();
            if !row.is_empty() {
                ratios.insert(s.info.name.clone(), row);
            }
        }
        self.ratios = ratios;
        let with_root = |name: &str| {
            self.subjects
                .iter()
                .find(|s| s.info.name == name && s.status == Status::Ok)
                .and_then(|s| s.with_root_ms)
                .map(|s| s.median)
        };
        let mut ratios = BTreeMap::new();
        for s in self.subjects.iter().filter(|s| s.info.kind == "isol") {
            let Some(m) = self.median(&s.info.name) else {
                continue;
            };
            let row: BTreeMap<String, f64> = self
                .peers_of(s)
                .iter()
                .filter_map(|p| Some((p.clone(), round3(m / with_root(p)?))))
                .collect();
            if !row.is_empty() {
                ratios.insert(s.info.name.clone(), row);
            }
        }
        self.ratios_with_root = ratios;
    }

    /// The table's "vs" columns: the peers; in `ctr-run`, every subject.
    fn peer_names(&self) -> Vec<&str> {
        self.subjects
            .iter()
            .filter(|s| self.all_pairs() || s.info.kind == "peer")
            .map(|s| s.info.name.as_str())
            .collect()
    }

    /// The comparison table, the one-line reading, and why subjects are missing.
    pub fn table_markdown(&self) -> String {
        let peers = self.peer_names();
        let mut md = String::new();
        md.push_str("| subject | median ms | p25–p75 ms | min ms | max ms | n |");
        for p in &peers {
            let _ = write!(md, " vs {p} |");
        }
        md.push_str("\n|---|--:|--:|--:|--:|--:|");
        for _ in &peers {
            md.push_str("--:|");
        }
        md.push('\n');
        for s in &self.subjects {
            let _ = write!(md, "| {} |", s.info.label);
            match (s.status, s.summary) {
                (Status::Skipped, _) | (_, None) => {
                    let word = if s.status == Status::Failed {
                        "failed"
                    } else {
                        "skipped"
                    };
                    let _ = write!(md, " {word} | — | — | — | 0 |");
                }
                (status, Some(sum)) => {
                    let mark = if status == Status::Failed {
                        " (failed)"
                    } else {
                        ""
                    };
                    let _ = write!(
                        md,
                        " {:.2}{mark} | {:.2}–{:.2} | {:.2} | {:.2} | {} |",
                        sum.median, sum.p25, sum.p75, sum.min, sum.max, sum.n
                    );
                }
            }
            for p in &peers {
                match self.ratios.get(&s.info.name).and_then(|r| r.get(*p)) {
                    Some(r) => {
                        let _ = write!(md, " {r:.2}× |");
                    }
                    None => md.push_str(" — |"),
                }
            }
            md.push('\n');
        }
        md.push('\n');
        md.push_str(&self.reading());
        md.push('\n');
        let missing: Vec<&SubjectReport> = self
            .subjects
            .iter()
            .filter(|s| s.status != Status::Ok)
            .collect();
        let noted: Vec<&SubjectReport> = self
            .subjects
            .iter()
            .filter(|s| !s.notes.is_empty())
            .collect();
        if !missing.is_empty() || !noted.is_empty() {
            md.push('\n');
        }
        for s in noted {
            let _ = writeln!(md, "- **{}:** {}", s.info.name, s.notes.join("; "));
        }
        if !missing.is_empty() {
            for s in missing {
                let word = match s.status {
                    Status::Failed => "failed",
                    _ => "skipped",
                };
                let _ = writeln!(
                    md,
                    "- **{}: {word}** — {}",
                    s.info.name,
                    s.error.as_deref().unwrap_or("no reason recorded")
                );
            }
        }
        md
    }

    /// What the numbers mean: one line per side measured.
    pub fn reading(&self) -> String {
        if self.all_pairs() {
            return self.ctr_run_reading();
        }
        if self.name == "cri" {
            return self.cri_reading();
        }
        let mut lines = vec![self.container_reading()];
        if let Some(kvm) = self.median("isol-kvm") {
            let line = match self.ratios.get("isol-kvm").and_then(|r| r.get("qemu")) {
                Some(r) => format!(
                    "isol's VMM starts a microVM, runs the workload and ends it in {r:.2}× QEMU microvm's time (same kernel, initramfs and root disk)."
                ),
                None => format!(
                    "isol's VMM starts a microVM, runs the workload and ends it in {kvm:.2} ms (median); QEMU did not run to compare with."
                ),
            };
            lines.push(line);
        }
        lines.join(" ")
    }

    /// `ctr-run`: isol-runc against runc and crun, and the VM against the container.
    fn ctr_run_reading(&self) -> String {
        let Some(isol) = self.median("isol-runc") else {
            return "isol-runc has no result in this benchmark, so there is nothing to compare."
                .into();
        };
        let r = self.ratios.get("isol-runc");
        let peers: Vec<String> = ["runc", "crun"]
            .iter()
            .filter_map(|p| Some(format!("{:.2}× {p}'s", r?.get(*p)?)))
            .collect();
        let mut line = if peers.is_empty() {
            format!(
                "`ctr run --rm` with isol-runc starts and ends a container in {isol:.2} ms (median); no other runtime ran to compare with."
            )
        } else {
            format!(
                "`ctr run --rm` with isol-runc starts and ends a container in {} time.",
                join_and(&peers)
            )
        };
        if let Some(vm) = self.ratios.get("isol-runc-vm") {
            let vs: Vec<String> = ["isol-runc", "runc"]
                .iter()
                .filter_map(|p| Some(format!("{:.2}× {p}'s", vm.get(*p)?)))
                .collect();
            if !vs.is_empty() {
                let _ = write!(
                    line,
                    " With isol-runc-vm (a microVM per container) it takes {} time.",
                    join_and(&vs)
                );
            }
        }
        line
    }

    fn container_reading(&self) -> String {
        let Some(isol) = self.median("isol") else {
            return "isol's container backend has no result in this benchmark, so there is nothing to compare.".into();
        };
        let Some(r) = self.ratios.get("isol").filter(|r| !r.is_empty()) else {
            return format!(
                "isol starts and ends a container in {isol:.2} ms (median); no peer ran to compare with."
            );
        };
        let parts: Vec<String> = r.iter().map(|(p, v)| format!("{v:.2}× {p}'s")).collect();
        let mut line = format!(
            "isol starts and ends a container in {} time",
            join_and(&parts)
        );
        if let Some(c) = r.get("crun") {
            let verdict = if *c <= 0.8 { "met" } else { "not met" };
            let _ = write!(line, " (goal ≤ 0.8× crun: {verdict})");
        }
        line.push('.');
        line
    }
}

fn join_and(parts: &[String]) -> String {
    match parts {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

impl Report {
    /// Whether `name` is one of the benchmarks with a section of their own (`start`): its
    /// metrics are shown in that section.
    pub fn has_benchmark(&self, name: &str) -> bool {
        self.benchmarks.iter().any(|b| b.name == name)
    }

    /// `report.md`.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut md = format!("**{}**\n\n# isol bench\n\n", self.measured_in);
        let _ = writeln!(md, "- Date: {} (to {})", self.started_at, self.finished_at);
        let _ = writeln!(
            md,
            "- Machine: {}, {} CPUs, {}, Linux {}, {}; /dev/kvm: {}",
            m.cpu_model,
            m.nproc,
            gib(m.memory_bytes),
            m.kernel,
            m.cgroup_layout_description,
            m.kvm
        );
        if let Some(h) = &m.outer_host {
            let _ = writeln!(md, "- Lab host: {h}");
        }
        let _ = writeln!(md, "- Environment: {}", m.environment);
        let load = |l: Option<[f64; 3]>| {
            l.map_or("?".into(), |l| {
                format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
            })
        };
        let _ = writeln!(
            md,
            "- Load average at start / end: {} / {}{}",
            load(m.loadavg_start),
            load(m.loadavg_end),
            if m.busy() {
                " — **the machine was busy with other work: absolute times are inflated, ratios less so (subjects are interleaved)**"
            } else {
                ""
            }
        );
        let _ = writeln!(md, "- Versions: {}", m.versions().join("; "));
        let s = &self.settings;
        let _ = writeln!(
            md,
            "- Method: {} timed runs per subject after {} warm-up round(s), {}; {}",
            s.runs, s.warmup_rounds, s.order, s.timing
        );
        let _ = writeln!(md, "- Command: `{}`", self.argv.join(" "));
        for b in &self.benchmarks {
            let _ = writeln!(md, "\n## {}: {}\n", b.name, b.description);
            md.push_str(&b.table_markdown());
            if let Some(phases) = b
                .subjects
                .iter()
                .find(|s| s.info.name == "isol")
                .and_then(|s| s.phases.as_ref())
            {
                md.push_str("\n### Where isol's time goes\n\n");
                md.push_str(
                    "Medians over the timed runs, from `isol run --json`; `outside-runtime` is the wall time minus the runtime's phases.\n\n",
                );
                md.push_str(
                    "| phase | median ms | p25–p75 ms | ≈ share | what |\n|---|--:|--:|--:|---|\n",
                );
                for p in phases {
                    let _ = writeln!(
                        md,
                        "| {} | {:.2} | {:.2}–{:.2} | {:.0}% | {} |",
                        p.name,
                        p.median_ms,
                        p.p25_ms,
                        p.p75_ms,
                        p.share * 100.0,
                        p.what
                    );
                }
            }
            let roots: Vec<String> = b
                .subjects
                .iter()
                .filter_map(|s| {
                    let (w, p, c) = (s.with_root_ms?, s.prep_ms?, s.cleanup_ms?);
                    Some(format!(
                        "{} {:.2} ms (root prep {:.2} + cleanup {:.2})",
                        s.info.name, w.median, p.median, c.median
                    ))
                })
                .collect();
            if !roots.is_empty() {
                let _ = writeln!(
                    md,
                    "\nCounting the overlay root the bench prepares and removes for each peer run, untimed above (isol does that work inside its own time), the peers' medians are: {}.",
                    roots.join(", ")
                );
                if let Some(r) = b.ratios_with_root.get("isol").filter(|r| !r.is_empty()) {
                    let parts: Vec<String> =
                        r.iter().map(|(p, v)| format!("{v:.2}× {p}'s")).collect();
                    let _ = writeln!(md, "On that basis isol takes {}.", join_and(&parts));
                }
            }
            for m in self.metrics.iter().filter(|m| m.benchmark == b.name) {
                md.push('\n');
                md.push_str(&m.markdown());
            }
            md.push_str("\n### Subjects\n\n");
            for s in &b.subjects {
                let _ = writeln!(
                    md,
                    "- {}: `{}`; root: {}",
                    s.info.label,
                    if s.info.command.is_empty() {
                        "—"
                    } else {
                        &s.info.command
                    },
                    if s.info.rootfs.is_empty() {
                        "—"
                    } else {
                        &s.info.rootfs
                    }
                );
            }
        }
        let mut last = "";
        for m in self
            .metrics
            .iter()
            .filter(|m| !self.has_benchmark(m.benchmark))
        {
            if m.benchmark != last {
                let _ = writeln!(md, "\n## {}\n", m.benchmark);
                last = m.benchmark;
            }
            md.push_str(&m.markdown());
        }
        md
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn subject(name: &str, kind: &'static str, samples: &[f64]) -> SubjectReport {
        SubjectReport {
            info: SubjectInfo {
                name: name.into(),
                label: name.into(),
                kind,
                backend: None,
                version: String::new(),
                command: String::new(),
                rootfs: String::new(),
            },
            status: if samples.is_empty() {
                Status::Skipped
            } else {
                Status::Ok
            },
            error: samples.is_empty().then(|| "not installed".into()),
            notes: Vec::new(),
            summary: Summary::of(samples),
            samples: Vec::new(),
            warmup_samples: Vec::new(),
            phases: None,
            prep_ms: None,
            cleanup_ms: None,
            with_root_ms: None,
        }
    }

    #[test]
    fn ratios_and_reading() {
        let mut b = BenchmarkReport {
            name: "start",
            description: "",
            image: "busybox".into(),
            workload: vec!["/bin/true".into()],
            preflight: Vec::new(),
            subjects: vec![
                subject("isol", "isol", &[10.0, 11.0, 12.0]),
                subject("crun", "peer", &[20.0, 22.0, 24.0]),
                subject("runc", "peer", &[]),
            ],
            ratios: BTreeMap::new(),
            ratios_with_root: BTreeMap::new(),
        };
        b.compute_ratios();
        assert_eq!(b.ratios["isol"]["crun"], 0.5);
        assert!(!b.ratios["isol"].contains_key("runc"));
        assert_eq!(
            b.reading(),
            "isol starts and ends a container in 0.50× crun's time (goal ≤ 0.8× crun: met)."
        );
        let t = b.table_markdown();
        assert!(t.contains("| isol | 11.00 | 10.50–11.50 | 10.00 | 12.00 | 3 | 0.50× | — |"));
        assert!(t.contains("| runc | skipped |"));
        assert!(t.contains("- **runc: skipped** — not installed"));
    }
}
