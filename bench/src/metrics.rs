//! The benchmarks beyond `start`, as the report keeps them: a [`Metric`] is one measured
//! quantity (a CPU loop's time, an idle instance's memory, …) with one [`Series`] of samples
//! per subject, the method it was measured with, and ratios between subjects.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::stats::{Status, Summary, round3};

#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// Unique id: `cpu`, `io-seq-write`, `memory-growth`, …
    pub id: String,
    /// Benchmark it belongs to (`--benchmarks` name).
    pub benchmark: &'static str,
    pub title: String,
    /// How it was measured, in one paragraph.
    pub method: String,
    /// Unit of every sample.
    pub unit: &'static str,
    pub lower_is_better: bool,
    pub series: Vec<Series>,
    pub ratios: Vec<Ratio>,
    /// Facts the reader needs (fallbacks taken, limits).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// `isol-container`, `isol-kvm`, `host`, optionally with `×N`.
    pub subject: String,
    pub label: String,
    pub status: Status,
    pub error: Option<String>,
    pub samples: Vec<f64>,
    pub summary: Option<Summary>,
    /// Components of each sample (same order as `samples`), e.g. `runtime_rss_mib`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, Vec<f64>>,
}

impl Series {
    pub fn new(subject: &str, label: &str) -> Series {
        Series {
            subject: subject.into(),
            label: label.into(),
            status: Status::Ok,
            error: None,
            samples: Vec::new(),
            summary: None,
            parts: BTreeMap::new(),
        }
    }

    pub fn skipped(subject: &str, label: &str, why: String) -> Series {
        Series {
            status: Status::Skipped,
            error: Some(why),
            ..Series::new(subject, label)
        }
    }

    pub fn push(&mut self, v: f64) {
        self.samples.push(round3(v));
    }

    pub fn part(&mut self, name: &str, v: f64) {
        self.parts.entry(name.into()).or_default().push(round3(v));
    }

    pub fn fail(&mut self, why: String) {
        if self.status == Status::Ok {
            self.status = if self.samples.is_empty() {
                Status::Skipped
            } else {
                Status::Failed
            };
            self.error = Some(why);
        }
    }

    pub fn ok(&self) -> bool {
        self.status != Status::Skipped && self.summary.is_some()
    }

    fn median(&self) -> Option<f64> {
        self.summary.filter(|_| self.ok()).map(|s| s.median)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    /// `isol-kvm / isol-container`
    pub what: String,
    pub value: f64,
    /// One line saying what it means.
    pub reading: String,
}

impl Metric {
    /// Summaries of every series, and the ratios `num / den` asked for (when both have data).
    pub fn finish(&mut self, pairs: &[(&str, &str)]) {
        for s in &mut self.series {
            s.summary = Summary::of(&s.samples).map(|x| Summary {
                median: round3(x.median),
                p25: round3(x.p25),
                p75: round3(x.p75),
                min: round3(x.min),
                max: round3(x.max),
                mean: round3(x.mean),
                ..x
            });
        }
        let find = |name: &str| self.series.iter().find(|s| s.subject == name);
        let mut ratios = Vec::new();
        for (num, den) in pairs {
            let (Some(n), Some(d)) = (find(num), find(den)) else {
                continue;
            };
            let (Some(a), Some(b)) = (n.median(), d.median()) else {
                continue;
            };
            if b == 0.0 {
                continue;
            }
            let value = round3(a / b);
            let reading = if self.unit == "MiB" {
                format!("{} uses {value:.2}× the memory of {}.", n.label, d.label)
            } else if self.lower_is_better {
                format!(
                    "{} takes {value:.2}× the time of {} ({}).",
                    n.label,
                    d.label,
                    if value > 1.0 { "slower" } else { "faster" }
                )
            } else {
                format!("{} measures {value:.2}× {}.", n.label, d.label)
            };
            ratios.push(Ratio {
                what: format!("{num} / {den}"),
                value,
                reading,
            });
        }
        self.ratios = ratios;
    }

    /// The table, ratios, method and skips, as Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "### {}\n", self.title);
        let _ = writeln!(md, "Method: {}\n", self.method);
        let u = self.unit;
        let _ = writeln!(
            md,
            "| subject | median {u} | p25–p75 {u} | min {u} | max {u} | n |\n|---|--:|--:|--:|--:|--:|"
        );
        for s in &self.series {
            match (s.status, s.summary) {
                (Status::Skipped, _) | (_, None) => {
                    let _ = writeln!(md, "| {} | skipped | — | — | — | 0 |", s.label);
                }
                (st, Some(x)) => {
                    let mark = if st == Status::Failed {
                        " (failed)"
                    } else {
                        ""
                    };
                    let _ = writeln!(
                        md,
                        "| {} | {:.2}{mark} | {:.2}–{:.2} | {:.2} | {:.2} | {} |",
                        s.label, x.median, x.p25, x.p75, x.min, x.max, x.n
                    );
                }
            }
        }
        md.push('\n');
        for r in &self.ratios {
            let _ = writeln!(md, "- **{} = {:.2}×** — {}", r.what, r.value, r.reading);
        }
        for s in self.series.iter().filter(|s| s.status != Status::Ok) {
            let word = if s.status == Status::Failed {
                "failed"
            } else {
                "skipped"
            };
            let _ = writeln!(
                md,
                "- **{}: {word}** — {}",
                s.label,
                s.error.as_deref().unwrap_or("no reason recorded")
            );
        }
        for n in &self.notes {
            let _ = writeln!(md, "- Note: {n}");
        }
        md.push('\n');
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_need_both_sides() {
        let mut a = Series::new("isol-container", "isol (container)");
        for v in [2.0, 4.0, 6.0] {
            a.push(v);
        }
        let mut h = Series::new("host", "host");
        for v in [1.0, 2.0, 3.0] {
            h.push(v);
        }
        let k = Series::skipped("isol-kvm", "isol (kvm)", "no kvm".into());
        let mut m = Metric {
            id: "cpu".into(),
            benchmark: "cpu",
            title: "CPU".into(),
            method: "m".into(),
            unit: "ms",
            lower_is_better: true,
            series: vec![a, k, h],
            ratios: Vec::new(),
            notes: Vec::new(),
        };
        m.finish(&[("isol-container", "host"), ("isol-kvm", "host")]);
        assert_eq!(m.ratios.len(), 1);
        assert_eq!(m.ratios[0].value, 2.0);
        let md = m.markdown();
        assert!(md.contains("| isol (kvm) | skipped |"), "{md}");
        assert!(md.contains("**isol (kvm): skipped** — no kvm"), "{md}");
        assert!(md.contains("isol-container / host = 2.00×"), "{md}");
    }
}
