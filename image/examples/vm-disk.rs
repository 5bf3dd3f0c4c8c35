//! Times the first-run work of `isol run --backend kvm IMAGE` before the VM starts: the
//! layers' unpacking and the root disk's build, each timed, from a cold store (the image's
//! unpacked layers and its cached disk are removed first).
//!
//! `cargo run --release -p isol-image --example vm-disk -- STORE IMAGE` (the store of
//! `ISOL_HOME`, an image imported into it). docs/benchmarks-vm.md, "First run of a big image".

use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(root), Some(reference)) = (args.next(), args.next()) else {
        eprintln!("usage: vm-disk STORE IMAGE");
        std::process::exit(2);
    };
    let store = isol_image::Store::open(PathBuf::from(root)).expect("open the store");
    let image = store
        .resolve(&reference.to_string_lossy())
        .expect("resolve the image");
    // Cold: no unpacked layer, no cached disk.
    for d in &image.diff_ids {
        let hex = d.strip_prefix("sha256:").unwrap_or(d);
        let dir = store.root().join("layers/sha256").join(hex);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(dir.with_extension("done"));
    }
    let _ = std::fs::remove_dir_all(store.vm_cache());
    let cpu = cpu_seconds();
    let t = Instant::now();
    let layers = store.unpack(&image).expect("unpack");
    let unpacked = (t.elapsed(), cpu_seconds() - cpu);
    let cpu = cpu_seconds();
    let t = Instant::now();
    let mut merged = None;
    let disk = isol_image::vm::root_reporting(
        &store.vm_cache(),
        isol_image::vm::VmImage {
            digest: &image.summary.digest,
            layers: &layers,
        },
        isol_image::vm::RootForm::Disk,
        &mut |p| {
            if matches!(p, isol_image::vm::Progress::Writing { .. }) && merged.is_none() {
                merged = Some(t.elapsed());
            }
        },
    )
    .expect("build the root disk");
    let built = (t.elapsed(), cpu_seconds() - cpu);
    println!(
        "unpack {:.2} s (cpu {:.2} s); root disk {:.2} s (cpu {:.2} s; merge {:.2} s), {} MiB",
        unpacked.0.as_secs_f64(),
        unpacked.1,
        built.0.as_secs_f64(),
        built.1,
        merged.unwrap_or_default().as_secs_f64(),
        std::fs::metadata(&disk).map_or(0, |m| m.len() >> 20)
    );
}

/// User and system CPU seconds of this process and its waited-for children (mkfs.ext4).
fn cpu_seconds() -> f64 {
    let sum = |who| {
        // SAFETY: getrusage fills the struct it is given.
        let mut r: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `r` is a valid rusage to write.
        unsafe { libc::getrusage(who, &mut r) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(r.ru_utime) + tv(r.ru_stime)
    };
    sum(libc::RUSAGE_SELF) + sum(libc::RUSAGE_CHILDREN)
}
