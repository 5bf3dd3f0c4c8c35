//! `report.html` renders in a real browser: headless Chromium (Debian's `chromium`) takes a
//! screenshot of a report made by a short `isol bench`, and the PNG must be a real page — not
//! empty, not one flat colour, with the charts' colours in it.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

const CHROMIUM: &str = "/usr/bin/chromium";

fn screenshot(html: &Path, png: &Path, profile: &Path) {
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: this test renders report.html with headless Chromium; install it with `apt-get install -y chromium`"
    );
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Let layout and painting finish before the shot, however busy the machine is.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1280,2000")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    assert!(
        out.status.success() && png.is_file(),
        "chromium failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Distinct RGB colours in the PNG, its size, and the share of pixels that are not the page's
/// white background (text, tables, charts).
fn colours(png: &Path) -> (usize, (u32, u32), f64) {
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let mut seen = std::collections::HashSet::new();
    let (mut inked, mut total) = (0usize, 0usize);
    for px in bytes.chunks(step) {
        seen.insert((px[0], px[1], px[2]));
        total += 1;
        if px[0] < 240 || px[1] < 240 || px[2] < 240 {
            inked += 1;
        }
    }
    (
        seen.len(),
        (info.width, info.height),
        inked as f64 / total as f64,
    )
}

#[test]
fn report_html_renders_in_chromium() {
    require_root();
    let _g = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("report");
    let o = run(&[
        "bench",
        "--runs",
        "2",
        "--quick",
        "--backends",
        "container",
        "--benchmarks",
        "start,cpu",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 0, "isol bench failed: {}", stderr(&o));
    let html = dir.join("report.html");
    let text = fs::read_to_string(&html).unwrap();
    assert!(text.contains("<svg"), "no chart in report.html");
    assert!(text.contains("stacked phases"), "no start-up timeline");

    let png = tmp.path().join("report.png");
    screenshot(&html, &png, &tmp.path().join("chromium-profile"));
    assert!(
        fs::metadata(&png).unwrap().len() > 10_000,
        "tiny screenshot"
    );
    let (n, size, inked) = colours(&png);
    assert_eq!(size, (1280, 2000));
    let md = fs::read_to_string(dir.join("report.md")).unwrap_or_default();
    // Charts are anti-aliased and coloured: a painted report has many colours, and text, tables
    // and plots cover several percent of the page (the page measured here: ~10 %).
    assert!(
        n > 64,
        "the screenshot is (nearly) blank: {n} colours; report.md:\n{md}"
    );
    assert!(
        inked > 0.03,
        "only {:.1} % of the screenshot is painted; report.md:\n{md}",
        inked * 100.0
    );
    // Kept for people: ISOL_BENCH_SCREENSHOT=path copies it out.
    if let Some(keep) = std::env::var_os("ISOL_BENCH_SCREENSHOT") {
        fs::copy(&png, keep).unwrap();
    }
}
