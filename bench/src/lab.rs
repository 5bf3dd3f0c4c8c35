//! Where the kvm backend can be measured. On a host whose /dev/kvm is hardware, here. On one
//! whose /dev/kvm is emulated (nested PVM) or absent, the whole bench — the kvm side and the
//! container side it is compared with — re-runs itself inside the lab (`isol lab`), and the
//! outer bench writes the reports the inner one prints on stdout. Nothing measured on the host
//! is mixed with what was measured in the lab.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::{BenchError, Step};
use super::reap;

/// How long the bench in the lab may go without a line of progress before the lab is taken
/// for hung. Its own waits are bounded: the longest gap between its lines, a `memory` round
/// whose three subjects all wait out their deadlines and are stopped, is under 9 minutes.
const LAB_STALL: Duration = Duration::from_secs(12 * 60);

/// Set by the outer bench for the one in the lab.
pub const IN_LAB_ENV: &str = "ISOL_BENCH_IN_LAB";
/// The isol binary, as the outer bench knows its path.
pub const EXE_ENV: &str = "ISOL_BENCH_EXE";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmEnv {
    Hardware,
    /// /dev/kvm exists but runs guests by emulation; or is absent / unusable (the reason).
    Unusable(String),
    /// Inside `isol lab`: a real KVM on an emulated CPU.
    Lab,
}

impl KvmEnv {
    pub fn detect() -> KvmEnv {
        if std::env::var_os(IN_LAB_ENV).is_some() {
            return KvmEnv::Lab;
        }
        if !Path::new("/dev/kvm").exists() {
            return KvmEnv::Unusable("absent: /dev/kvm does not exist".into());
        }
        match isol_vmm::measure_guest_speed() {
            Ok(t) if t < isol_vmm::EMULATED_THRESHOLD => KvmEnv::Hardware,
            Ok(_) => KvmEnv::Unusable(
                "emulated: this host's /dev/kvm runs guests by instruction emulation".into(),
            ),
            Err(e) => KvmEnv::Unusable(format!("unusable: {e}")),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            KvmEnv::Hardware => "hardware".into(),
            KvmEnv::Unusable(why) => why.clone(),
            KvmEnv::Lab => {
                "lab: a real KVM inside a QEMU-TCG VM with an emulated CPU (isol lab)".into()
            }
        }
    }
}

/// What the bench inside the lab prints on stdout: the three reports.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub json: String,
    pub md: String,
    pub html: String,
    pub tables: String,
}

pub const ENVELOPE_MARK: &str = "ISOL_BENCH_REPORT ";

/// Runs `isol bench ARGS… --lab-inner` in the lab; returns the reports it printed.
pub fn run_in_lab(exe: &Path, host_line: &str) -> Result<Envelope, BenchError> {
    let mut inner: Vec<String> = std::env::args().skip(1).collect();
    // The lab cannot write our --out: the inner bench prints the reports instead.
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == "--out" {
            inner.drain(i..(i + 2).min(inner.len()));
        } else if inner[i].starts_with("--out=") {
            inner.remove(i);
        } else {
            i += 1;
        }
    }
    inner.push("--lab-inner".into());
    eprintln!(
        "isol bench: /dev/kvm here is not hardware; running the whole bench in the lab (isol lab), so the kvm and container sides are measured in the same machine"
    );
    let mut child = Command::new(exe)
        .arg("lab")
        .args(["--memory", "6G", "--"])
        .arg(exe)
        .args(&inner)
        .env(IN_LAB_ENV, "1")
        .env(EXE_ENV, exe)
        .env("ISOL_BENCH_OUTER_HOST", host_line)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .step(|| "Cannot start isol lab".into())?;
    // stdout (the reports) is read to its end meanwhile; stderr (the inner bench's progress)
    // is passed on line by line, and each line counts as a sign of life.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let last = Arc::new(Mutex::new((Instant::now(), String::new())));
    let stderr = child.stderr.take().expect("piped stderr");
    let seen = Arc::clone(&last);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if let Ok(mut l) = seen.lock() {
                *l = (Instant::now(), line);
            }
        }
    });
    let status = loop {
        if let Some(st) = reap::wait_until(&mut child, Instant::now() + Duration::from_secs(5)) {
            break st;
        }
        let (at, line) = last
            .lock()
            .map(|l| l.clone())
            .unwrap_or_else(|_| (Instant::now(), String::new()));
        if at.elapsed() > LAB_STALL {
            // isol lab stops its VM on SIGTERM (and QEMU dies with it on SIGKILL).
            let how = reap::stop_one(child);
            return Err(BenchError::Failed(format!(
                "The lab made no progress for {} minutes (last: {:?}) and was stopped ({how}): the lab's nested KVM sometimes hangs for good (docs/lab.md, \"Known fault\"); no report was written, run it again",
                LAB_STALL.as_secs() / 60,
                line.trim()
            )));
        }
    };
    let text = reader.join().unwrap_or_default();
    let Some(line) = text.lines().find_map(|l| l.strip_prefix(ENVELOPE_MARK)) else {
        return Err(BenchError::Failed(format!(
            "The bench in the lab printed no report (isol lab exited with {status}); see the messages above"
        )));
    };
    serde_json::from_str(line).step(|| "Cannot read the report the bench in the lab printed".into())
}
