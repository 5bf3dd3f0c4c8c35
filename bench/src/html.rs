//! `report.html`: the report as one self-contained page with hand-written SVG charts —
//! box plots of every distribution (box p25–p75, line at the median, whiskers to the last
//! sample within 1.5 IQR, dots for every sample) and start-up as a stacked timeline of phases.

use std::fmt::Write as _;

use super::metrics::Metric;
use super::report::{BenchmarkReport, Report, SubjectReport};
use super::stats::{Status, Summary};

const WIDTH: f64 = 960.0;
const LABEL_W: f64 = 230.0;
const ROW_H: f64 = 34.0;
const PLOT_W: f64 = WIDTH - LABEL_W - 125.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Minimal Markdown for the few inline forms the reports use: `code` and **bold**.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let e = esc(s);
    let mut code = false;
    for (i, part) in e.split('`').enumerate() {
        if i > 0 {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
        }
        let mut bold = false;
        for (j, p) in part.split("**").enumerate() {
            if j > 0 {
                out.push_str(if bold { "</b>" } else { "<b>" });
                bold = !bold;
            }
            out.push_str(p);
        }
        if bold {
            out.push_str("</b>");
        }
    }
    if code {
        out.push_str("</code>");
    }
    out
}

fn color(subject: &str) -> &'static str {
    let s = subject.to_ascii_lowercase();
    if s.contains("kvm") {
        "#e07b24"
    } else if s.starts_with("host") {
        "#7f7f7f"
    } else if s.starts_with("crun") {
        "#3a9d5d"
    } else if s.starts_with("runc") {
        "#8e5bb5"
    } else if s.starts_with("qemu") {
        "#c0392b"
    } else {
        "#2f6db5"
    }
}

const PHASE_COLORS: [&str; 12] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac", "#1f77b4", "#d62728",
];

/// A row of a box plot.
struct Row<'a> {
    label: String,
    subject: &'a str,
    samples: Vec<f64>,
    summary: Option<Summary>,
    /// Why there is no data.
    missing: Option<String>,
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn boxplot(rows: &[Row], unit: &str) -> String {
    // Scale: up to the furthest whisker (1.5 IQR), so that a few huge outliers on a busy
    // machine do not squash every box; samples beyond are drawn at the edge and counted.
    let mut hi: f64 = 0.0;
    for r in rows {
        if let Some(s) = r.summary {
            let iqr = s.p75 - s.p25;
            hi = hi.max(s.max.min(s.p75 + 1.5 * iqr)).max(s.median);
        }
    }
    let hi = nice_max(hi * 1.05);
    let x = |v: f64| LABEL_W + (v / hi).clamp(0.0, 1.0) * PLOT_W;
    let h = rows.len() as f64 * ROW_H + 54.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" font-family="sans-serif" font-size="12">"#
    );
    for i in 0..=5 {
        let v = hi * f64::from(i) / 5.0;
        let xx = x(v);
        let _ = write!(
            svg,
            r##"<line x1="{xx:.1}" y1="4" x2="{xx:.1}" y2="{:.1}" stroke="#e3e3e3"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
            h - 40.0,
            h - 26.0,
            fmt(v)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">{}</text>"##,
        LABEL_W + PLOT_W,
        h - 6.0,
        esc(unit)
    );
    for (i, r) in rows.iter().enumerate() {
        let y = 6.0 + i as f64 * ROW_H;
        let mid = y + ROW_H / 2.0 - 2.0;
        let c = color(r.subject);
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#222">{}</text>"##,
            LABEL_W - 8.0,
            mid + 4.0,
            esc(&r.label)
        );
        let Some(s) = r.summary else {
            let why = r.missing.as_deref().unwrap_or("no samples");
            let short: String = why.chars().take(95).collect();
            let _ = write!(
                svg,
                r##"<text x="{LABEL_W}" y="{:.1}" fill="#a33" font-style="italic">skipped — {}{}</text>"##,
                mid + 4.0,
                esc(&short),
                if short.len() < why.len() { "…" } else { "" }
            );
            continue;
        };
        let iqr = s.p75 - s.p25;
        let lo_w = r
            .samples
            .iter()
            .copied()
            .filter(|v| *v >= s.p25 - 1.5 * iqr)
            .fold(f64::INFINITY, f64::min)
            .min(s.p25);
        let hi_w = r
            .samples
            .iter()
            .copied()
            .filter(|v| *v <= s.p75 + 1.5 * iqr)
            .fold(f64::NEG_INFINITY, f64::max)
            .max(s.p75);
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" y1="{mid:.1}" x2="{:.1}" y2="{mid:.1}" stroke="{c}" stroke-width="1.5"/>"##,
            x(lo_w),
            x(hi_w)
        );
        let bw = (x(s.p75) - x(s.p25)).max(2.0);
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{c}" fill-opacity="0.35" stroke="{c}" stroke-width="1.5"/>"##,
            x(s.p25),
            y + 6.0,
            ROW_H - 16.0
        );
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" y1="{1:.1}" x2="{0:.1}" y2="{2:.1}" stroke="#111" stroke-width="2.5"/>"##,
            x(s.median),
            y + 4.0,
            y + ROW_H - 8.0
        );
        let mut beyond = 0;
        for (k, v) in r.samples.iter().enumerate() {
            if *v > hi {
                beyond += 1;
            }
            // A small vertical jitter so that equal samples stay visible.
            let jy = mid + ((k % 5) as f64 - 2.0) * 2.0;
            let _ = write!(
                svg,
                r##"<circle cx="{:.1}" cy="{jy:.1}" r="2" fill="{c}" fill-opacity="0.8"/>"##,
                x(*v)
            );
        }
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#111">{} (n={}){}</text>"##,
            LABEL_W + PLOT_W + 6.0,
            mid + 4.0,
            fmt(s.median),
            s.n,
            if beyond > 0 {
                format!(" +{beyond}▸")
            } else {
                String::new()
            }
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A bar of the timeline: label, subject, (phase, median ms) in order.
type Bar<'a> = (&'a str, &'a str, Vec<(String, f64)>);

/// Start-up as stacked phases: one bar per isol backend, phase medians end to end.
fn timeline(b: &BenchmarkReport) -> Option<String> {
    let bars: Vec<Bar> = b
        .subjects
        .iter()
        .filter_map(|s| {
            let p = s.phases.as_ref()?;
            Some((
                s.info.label.as_str(),
                s.info.name.as_str(),
                p.iter().map(|r| (r.name.clone(), r.median_ms)).collect(),
            ))
        })
        .collect();
    if bars.is_empty() {
        return None;
    }
    let total = bars
        .iter()
        .map(|(_, _, p)| p.iter().map(|x| x.1).sum::<f64>())
        .fold(0.0, f64::max);
    let hi = nice_max(total);
    let x = |v: f64| LABEL_W + v / hi * PLOT_W;
    let mut names: Vec<String> = Vec::new();
    for (_, _, p) in &bars {
        for (n, _) in p {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let legend_rows = names.len().div_ceil(5);
    let h = bars.len() as f64 * 44.0 + 54.0 + legend_rows as f64 * 18.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" font-family="sans-serif" font-size="12">"#
    );
    let axis_y = bars.len() as f64 * 44.0 + 8.0;
    for i in 0..=5 {
        let v = hi * f64::from(i) / 5.0;
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" y1="4" x2="{0:.1}" y2="{1:.1}" stroke="#e3e3e3"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle" fill="#555">{3}</text>"##,
            x(v),
            axis_y,
            axis_y + 14.0,
            fmt(v)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555">ms (medians)</text>"##,
        LABEL_W + PLOT_W,
        axis_y + 28.0
    );
    for (i, (label, _, phases)) in bars.iter().enumerate() {
        let y = 8.0 + i as f64 * 44.0;
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#222">{}</text>"##,
            LABEL_W - 8.0,
            y + 20.0,
            esc(label)
        );
        let mut at = 0.0;
        for (name, ms) in phases {
            let k = names.iter().position(|n| n == name).unwrap_or(0);
            let c = PHASE_COLORS[k % PHASE_COLORS.len()];
            let w = (x(at + ms) - x(at)).max(0.5);
            let _ = write!(
                svg,
                r##"<rect x="{:.1}" y="{y:.1}" width="{w:.1}" height="28" fill="{c}" stroke="#fff" stroke-width="0.5"><title>{}: {:.2} ms</title></rect>"##,
                x(at),
                esc(name),
                ms
            );
            if w > 38.0 {
                let _ = write!(
                    svg,
                    r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#fff" font-size="11">{}</text>"##,
                    x(at) + w / 2.0,
                    y + 18.0,
                    fmt(*ms)
                );
            }
            at += ms;
        }
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#111">{} ms</text>"##,
            x(at) + 6.0,
            y + 19.0,
            fmt(at)
        );
    }
    let ly = axis_y + 46.0;
    for (k, n) in names.iter().enumerate() {
        let (col, row) = (k % 5, k / 5);
        let lx = LABEL_W + col as f64 * 140.0;
        let yy = ly + row as f64 * 18.0;
        let _ = write!(
            svg,
            r##"<rect x="{lx:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{yy:.1}" fill="#222">{}</text>"##,
            yy - 10.0,
            PHASE_COLORS[k % PHASE_COLORS.len()],
            lx + 16.0,
            esc(n)
        );
    }
    svg.push_str("</svg>");
    Some(svg)
}

/// A chart row's label: a subject that failed part-way keeps its samples and says so (its
/// reason is in the list under the table).
fn failed_label(label: &str, status: Status) -> String {
    if status == Status::Failed {
        format!("{label} (failed)")
    } else {
        label.to_string()
    }
}

fn start_row(s: &SubjectReport) -> Row<'_> {
    Row {
        label: failed_label(&s.info.label, s.status),
        subject: &s.info.name,
        samples: s.samples.iter().map(|x| x.wall_ms).collect(),
        summary: s.summary.filter(|_| s.status != Status::Skipped),
        missing: s.error.clone(),
    }
}

fn start_section(r: &Report, b: &BenchmarkReport, html: &mut String) {
    let _ = write!(
        html,
        "<h2>Start-up: {}</h2><p class=method>Method: wall time from spawning the runtime's process to its exit; every subject runs the same busybox image, subjects interleaved after warm-up. Box: p25–p75; black line: median; dots: every timed run.</p>",
        inline(b.description)
    );
    // One plot per side: a VM takes far longer to start than a container, and one scale for
    // both would flatten the container side.
    let sides = [
        (
            "container",
            "Containers: isol's container backend, crun, runc",
        ),
        (
            "kvm",
            "MicroVMs: isol's kvm backend (its own VMM), QEMU -M microvm",
        ),
    ];
    for (side, title) in sides {
        let rows: Vec<Row> = b
            .subjects
            .iter()
            .filter(|s| s.info.backend.unwrap_or("container") == side)
            .map(start_row)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = write!(html, "<h3>{title}</h3>");
        html.push_str(&boxplot(&rows, "ms"));
    }
    let _ = write!(html, "<p class=reading>{}</p>", inline(&b.reading()));
    if let Some(t) = timeline(b) {
        html.push_str("<h3>Where the start-up time goes (stacked phases, medians)</h3>");
        html.push_str("<p class=method>Container: isol's own phases from <code>isol run --json</code> (<code>phases_ms</code>) plus <code>outside-runtime</code> (the rest of the wall time). kvm: from <code>timeline_ms</code>: VMM setup → first vCPU entry → kernel boot → guest init → workload → VM exit. Medians of parts do not add up exactly to the median of the whole.</p>");
        html.push_str(&t);
    }
    table(html, &b.table_markdown());
    for m in r.metrics.iter().filter(|m| m.benchmark == b.name) {
        metric_section(m, html);
    }
}

/// The Markdown tables of a section, rendered as HTML tables and lists.
fn table(html: &mut String, md: &str) {
    let mut in_table = false;
    let mut in_list = false;
    for line in md.lines() {
        let l = line.trim();
        if l.starts_with('|') {
            if l.starts_with("|---") || l.starts_with("|--") {
                continue;
            }
            if !in_table {
                html.push_str("<table>");
                in_table = true;
            }
            html.push_str("<tr>");
            for cell in l.trim_matches('|').split('|') {
                let _ = write!(html, "<td>{}</td>", inline(cell.trim()));
            }
            html.push_str("</tr>");
            continue;
        }
        if in_table {
            html.push_str("</table>");
            in_table = false;
        }
        if let Some(item) = l.strip_prefix("- ") {
            if !in_list {
                html.push_str("<ul>");
                in_list = true;
            }
            let _ = write!(html, "<li>{}</li>", inline(item));
            continue;
        }
        if in_list {
            html.push_str("</ul>");
            in_list = false;
        }
    }
    if in_table {
        html.push_str("</table>");
    }
    if in_list {
        html.push_str("</ul>");
    }
}

fn metric_section(m: &Metric, html: &mut String) {
    let _ = write!(
        html,
        "<h3 id=\"{}\">{}</h3><p class=method>Method: {}</p>",
        esc(&m.id),
        inline(&m.title),
        inline(&m.method)
    );
    let rows: Vec<Row> = m
        .series
        .iter()
        .map(|s| Row {
            label: failed_label(&s.label, s.status),
            subject: &s.subject,
            samples: s.samples.clone(),
            summary: s.summary.filter(|_| s.status != Status::Skipped),
            missing: s.error.clone(),
        })
        .collect();
    let unit = format!(
        "{}{}",
        m.unit,
        if m.lower_is_better {
            " (lower is better)"
        } else {
            " (higher is better)"
        }
    );
    html.push_str(&boxplot(&rows, &unit));
    if !m.ratios.is_empty() {
        html.push_str("<ul class=ratios>");
        for r in &m.ratios {
            let _ = write!(
                html,
                "<li><b>{} = {:.2}×</b> — {}</li>",
                esc(&r.what),
                r.value,
                inline(&r.reading)
            );
        }
        html.push_str("</ul>");
    }
    let md = m.markdown();
    // The table and the skip/notes lists (the title and method are above already).
    let rest: String = md
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .filter(|l| !l.contains(" = ") || !l.starts_with("- **"))
        .map(|l| format!("{l}\n"))
        .collect();
    table(html, &rest);
}

/// `report.html`.
pub fn render(r: &Report) -> String {
    let m = &r.machine;
    let mut html = String::from(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>isol bench</title><style>
body{font-family:sans-serif;margin:24px auto;max-width:1000px;color:#222;background:#fff}
h1{margin:8px 0 4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
.where{background:#fff4d6;border-left:5px solid #e0a800;padding:8px 12px;font-weight:bold}
.busy{background:#fde2e1;border-left:5px solid #c0392b;padding:6px 12px}
.method{color:#444;font-size:13px}.reading{font-weight:bold}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td{border:1px solid #ddd;padding:3px 8px}
tr:first-child td{background:#f3f3f3;font-weight:bold}code{background:#f3f3f3;padding:0 3px}
ul{font-size:13px}.ratios{font-size:14px}dt{font-weight:bold;float:left;width:150px}dd{margin-left:160px}
</style></head><body>"#,
    );
    let _ = write!(
        html,
        "<p class=where>{}</p><h1>isol bench</h1>",
        inline(&r.measured_in)
    );
    let load = |l: Option<[f64; 3]>| {
        l.map_or("?".into(), |l| {
            format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
        })
    };
    let versions = m.versions();
    let _ = write!(
        html,
        "<dl><dt>Date</dt><dd>{} → {}</dd><dt>Machine</dt><dd>{}, {} CPUs, {:.1} GiB, Linux {}, {}</dd><dt>/dev/kvm</dt><dd>{}</dd>{}<dt>Environment</dt><dd>{}</dd><dt>Load</dt><dd>{} → {}</dd><dt>Versions</dt><dd>{}</dd><dt>Command</dt><dd><code>{}</code></dd><dt>Runs</dt><dd>start: {} timed runs per subject after {} warm-up round(s), {}</dd></dl>",
        esc(&r.started_at),
        esc(&r.finished_at),
        esc(&m.cpu_model),
        m.nproc,
        m.memory_bytes as f64 / (1u64 << 30) as f64,
        esc(&m.kernel),
        esc(m.cgroup_layout_description),
        esc(&m.kvm),
        m.outer_host
            .as_deref()
            .map(|h| format!("<dt>Lab host</dt><dd>{}</dd>", esc(h)))
            .unwrap_or_default(),
        esc(&m.environment),
        load(m.loadavg_start),
        load(m.loadavg_end),
        esc(&versions.join("; ")),
        esc(&r.argv.join(" ")),
        r.settings.runs,
        r.settings.warmup_rounds,
        esc(r.settings.order)
    );
    if m.busy() {
        html.push_str("<p class=busy>The machine was busy with other work (load above half the CPUs): absolute times are inflated and have long tails; ratios less so (subjects are interleaved).</p>");
    }
    for b in &r.benchmarks {
        start_section(r, b, &mut html);
    }
    let mut last = "";
    for mt in r.metrics.iter().filter(|m| !r.has_benchmark(m.benchmark)) {
        if mt.benchmark != last {
            let title = match mt.benchmark {
                "memory" => "Memory overhead",
                "density" => "Density",
                "cpu" => "CPU-bound work",
                "syscall" => "Syscall-heavy work",
                "io" => "IO on the root filesystem",
                "net" => "Network",
                "shared" => "A directory shared with the host",
                other => other,
            };
            let _ = write!(html, "<h2>{title}</h2>");
            last = mt.benchmark;
        }
        metric_section(mt, &mut html);
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markdown_and_scales() {
        assert_eq!(inline("a `b<c` **d**"), "a <code>b&lt;c</code> <b>d</b>");
        assert_eq!(nice_max(7.3), 10.0);
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(180.0), 200.0);
        let rows = [
            Row {
                label: "a".into(),
                subject: "isol",
                samples: vec![1.0, 2.0, 3.0, 4.0, 5.0, 100.0],
                summary: Summary::of(&[1.0, 2.0, 3.0, 4.0, 5.0, 100.0]),
                missing: None,
            },
            Row {
                label: "b".into(),
                subject: "isol-kvm",
                samples: vec![],
                summary: None,
                missing: Some("no kvm".into()),
            },
        ];
        let svg = boxplot(&rows, "ms");
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("skipped — no kvm"));
        assert!(
            svg.contains("+1▸"),
            "the outlier beyond the scale is counted"
        );
    }

    #[test]
    fn the_start_table_shows_the_runs_notes() {
        use super::super::report::tests::subject;
        let mut isol = subject("isol", "isol", &[10.0, 11.0, 12.0]);
        isol.notes.push(
            "round 3 was killed (the run did not finish within 60 s) and repeated once".into(),
        );
        let b = BenchmarkReport {
            name: "start",
            description: "",
            image: "busybox".into(),
            workload: vec!["/bin/true".into()],
            preflight: Vec::new(),
            subjects: vec![isol, subject("crun", "peer", &[20.0, 22.0, 24.0])],
            ratios: Default::default(),
            ratios_with_root: Default::default(),
        };
        let md = b.table_markdown();
        assert!(md.contains("- **isol:** round 3 was killed"), "{md}");
        let layout = super::super::host::CgroupLayout::detect();
        let r = Report {
            schema: super::super::report::SCHEMA,
            measured_in: "Measured on this host".into(),
            started_at: String::new(),
            finished_at: String::new(),
            argv: vec!["isol".into(), "bench".into()],
            machine: super::super::host::Machine::probe(layout, String::new()),
            settings: super::super::report::Settings {
                runs: 3,
                warmup_rounds: 1,
                order: "interleaved",
                timing: "wall",
                run_timeout_s: 60,
            },
            benchmarks: vec![b],
            metrics: Vec::new(),
        };
        let html = render(&r);
        assert!(
            html.contains("<li><b>isol:</b> round 3 was killed (the run did not finish within 60 s) and repeated once</li>"),
            "{html}"
        );
    }
}
