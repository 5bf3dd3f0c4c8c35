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

/// Distinct RGB colours in the PNG, and its size.
fn colours(png: &Path) -> (usize, (u32, u32), bool) {
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
    // The container backend's blue (#2f6db5) from the box plots, within a little anti-aliasing.
    let mut blue = false;
    for px in bytes.chunks(step) {
        seen.insert((px[0], px[1], px[2]));
        if (i32::from(px[0]) - 0x2f).abs() < 6
            && (i32::from(px[1]) - 0x6d).abs() < 6
            && (i32::from(px[2]) - 0xb5).abs() < 6
        {
            blue = true;
        }
    }
    (seen.len(), (info.width, info.height), blue)
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
    let (n, size, blue) = colours(&png);
    assert_eq!(size, (1280, 2000));
    assert!(n > 16, "the screenshot is (nearly) blank: {n} colours");
    assert!(blue, "the charts' colours are not in the screenshot");
    // Kept for people: ISOL_BENCH_SCREENSHOT=path copies it out.
    if let Some(keep) = std::env::var_os("ISOL_BENCH_SCREENSHOT") {
        fs::copy(&png, keep).unwrap();
    }
}
