//! A watchdog for kvm runs inside the lab: a run whose stdout stops moving (or, for a VMM in
//! the caller's own process, that has not ended in time) is looked at, and what the lab's KVM
//! shows decides whose fault the stall is. Tests use it to tell the lab's known faults from
//! isol's own (docs/lab.md, "Known fault").
//!
//! The lab's nested KVM (kvm_amd on QEMU's emulated SVM) now and then spins a guest's vCPU
//! for good (docs/lab.md, "Known fault"): the vCPU thread burns a CPU inside KVM_RUN while
//! the guest either makes no exit at all or exits again and again at a "guest" RIP that is
//! the lab kernel's own kvm code (`__svm_vcpu_run`), where the guest has nothing mapped.
//! A stall of isol's own — a lost notification or interrupt — looks different: the vCPU
//! halted (sleeping) with nothing for the device to do, or a guest spinning in its own code.
//! Only the first picture counts as the lab's; anything else is reported as a failure.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a stalled VMM's thread CPU times are compared, and then its guest's exits traced.
const TRACE_WINDOW: Duration = Duration::from_secs(2);
/// The lab kernel's tracefs.
const TRACEFS: &str = "/sys/kernel/tracing";

/// How a watched run went.
#[derive(Debug)]
pub enum Watched {
    /// It ended by itself.
    Ended(Output),
    /// It was stopped after a stall that shows the lab's vCPU spin; what was seen.
    LabSpin(String),
    /// It was stopped after a stall that is not the lab's spin; what was seen.
    Stalled(String),
}

/// Waits for `child` (stdout and stderr piped), stopping it once its stdout has not moved
/// for `stall` while its guest runs. The child is the VMM itself (`isol run --backend kvm`
/// execs `isol-vmm`, whose vCPU threads are `isol-vcpuN`) or, with the VMM's jail, the relay
/// whose jailed child process holds the vCPU threads: the child and its descendants are looked at.
pub fn watch(mut child: Child, stall: Duration) -> Watched {
    let progress = Arc::new(AtomicUsize::new(0));
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let moved = progress.clone();
    let out_t = std::thread::spawn(move || {
        let (mut all, mut buf) = (Vec::new(), vec![0u8; 1 << 16]);
        while let Ok(n @ 1..) = out.read(&mut buf) {
            all.extend_from_slice(&buf[..n]);
            moved.fetch_add(n, Ordering::Relaxed);
        }
        all
    });
    let err_t = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = err.read_to_end(&mut all);
        all
    });
    let (mut seen, mut since, mut vmm) = (0, Instant::now(), None);
    loop {
        if let Some(status) = child.try_wait().expect("wait for isol") {
            return Watched::Ended(Output {
                status,
                stdout: out_t.join().unwrap(),
                stderr: err_t.join().unwrap(),
            });
        }
        let now = progress.load(Ordering::Relaxed);
        // The clock starts with the guest: before its vCPU thread exists isol prepares the
        // image and the VM's disk, which can take a while on a fresh store.
        vmm = vmm.or_else(|| vcpu_process(child.id()));
        if now != seen || vmm.is_none() {
            (seen, since) = (now, Instant::now());
        } else if let Some(pid) = vmm.filter(|_| since.elapsed() >= stall) {
            let look = look_at(pid);
            if pid != child.id() {
                // SAFETY: kill(2) on a pid we found among the child's descendants; it takes
                // no pointers.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
            drop(out_t.join());
            let stderr = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
            let what = format!(
                "no stdout for {stall:?} after {seen} bytes; {}; isol's stderr: {:?}",
                look.text,
                stderr.lines().last().unwrap_or("")
            );
            return if look.lab_spin {
                Watched::LabSpin(what)
            } else {
                Watched::Stalled(what)
            };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether this runs inside `isol lab` (its init's state directory).
pub fn in_the_lab() -> bool {
    std::path::Path::new("/run/isol-lab/heartbeat.pid").exists()
}

/// [`watch`] for a VMM in this process (a test calling `isol_vmm::run`): runs `run` and, if it
/// has not returned `stall` after a vCPU thread (`isol-vcpuN`) appeared, looks once at this
/// process's threads and the lab's trace of their exits. Returns what `run` returned and
/// the look, if one was taken: whether it shows the lab's vCPU spin, and what was seen.
pub fn watch_here<T>(stall: Duration, run: impl FnOnce() -> T) -> (T, Option<(bool, String)>) {
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut booted: Option<Instant> = None;
            while !done.load(Ordering::Relaxed) {
                let me = std::process::id();
                match booted {
                    None if has_vcpu(me) => booted = Some(Instant::now()),
                    Some(t) if t.elapsed() >= stall => {
                        let look = look_at(me);
                        return Some((look.lab_spin, look.text));
                    }
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            None
        });
        let out = run();
        done.store(true, Ordering::Relaxed);
        (out, watcher.join().expect("the watcher does not panic"))
    })
}

/// The process, `pid` or one of its descendants, that has a vCPU thread (isol-vmm, or its
/// jailed child, with its guest running).
fn vcpu_process(pid: u32) -> Option<u32> {
    let mut parents: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // After the comm's ')': state, then the parent's pid.
        let ppid = stat
            .rfind(')')
            .and_then(|c| stat[c + 1..].split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.entry(ppid).or_default().push(p);
        }
    }
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if has_vcpu(p) {
            return Some(p);
        }
        todo.extend(parents.get(&p).into_iter().flatten());
    }
    None
}

/// Whether process `pid` has a vCPU thread (it is isol-vmm and its guest runs).
fn has_vcpu(pid: u32) -> bool {
    threads(pid)
        .values()
        .any(|(comm, ..)| comm.starts_with("isol-vcpu"))
}

/// What a stalled run showed.
struct Look {
    lab_spin: bool,
    text: String,
}

/// One thread of the VMM: name, state, CPU ticks so far.
fn threads(pid: u32) -> BTreeMap<u32, (String, char, u64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // comm is in parentheses and may hold spaces: the fields after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let state = f.first().and_then(|s| s.chars().next()).unwrap_or('?');
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // After ')': state(0) … utime(11) stime(12).
        out.insert(tid, (comm, state, ticks(11) + ticks(12)));
    }
    out
}

/// Looks at a stalled VMM: its threads' CPU use over [`TRACE_WINDOW`] and, when a vCPU
/// thread is busy, the lab kernel's `kvm:kvm_exit` records over another one.
fn look_at(pid: u32) -> Look {
    let before = threads(pid);
    std::thread::sleep(TRACE_WINDOW);
    let after = threads(pid);
    let window_ticks = TRACE_WINDOW.as_secs() * 100; // USER_HZ
    let mut text = format!("threads (state, CPU over {TRACE_WINDOW:?}):");
    let mut busy = Vec::new();
    for (tid, (comm, state, t1)) in &after {
        let used = t1 - before.get(tid).map_or(*t1, |b| b.2);
        text.push_str(&format!(" {comm} {state} {}%", used * 100 / window_ticks));
        // A vCPU thread that ran at least half of the window.
        if comm.starts_with("isol-vcpu") && used * 2 >= window_ticks {
            busy.push(*tid);
        }
    }
    let exits = if busy.is_empty() {
        Ok(Vec::new())
    } else {
        record_exits().map(|lines| exits_of(&lines, &busy))
    };
    let lab_spin = match exits {
        Err(e) => {
            text.push_str(&format!("; no trace of the guest's exits: {e}"));
            false
        }
        Ok(exits) => {
            let (lab, why) = spin_verdict(&exits, &lab_kvm_text(), !busy.is_empty());
            text.push_str(&format!("; {why}"));
            lab
        }
    };
    Look { lab_spin, text }
}

/// One exit of the guest as the lab's KVM traced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub reason: String,
    pub rip: u64,
}

/// The `kvm_exit` records of threads `tids` in the text of the lab's trace buffer
/// (`isol-vcpu0-1234 [001] d..2. 12.5: kvm_exit: vcpu 0 reason npf rip 0xffff… info …`).
pub fn exits_of(lines: &[String], tids: &[u32]) -> Vec<Exit> {
    lines
        .iter()
        .filter(|l| {
            let task = l.split_whitespace().next().unwrap_or("");
            let tid = task.rsplit('-').next().and_then(|t| t.parse::<u32>().ok());
            tid.is_some_and(|t| tids.contains(&t))
        })
        .filter_map(|l| {
            let (_, rest) = l.split_once("kvm_exit: ")?;
            let mut w = rest.split_whitespace();
            let mut reason = None;
            let mut rip = None;
            while let Some(k) = w.next() {
                match k {
                    "reason" => reason = w.next().map(str::to_string),
                    "rip" => {
                        rip = w
                            .next()
                            .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                    }
                    _ => {}
                }
            }
            Some(Exit {
                reason: reason?,
                rip: rip?,
            })
        })
        .collect()
}

/// Address ranges of the lab kernel's own KVM code (modules `kvm` and `kvm_amd`), from
/// /proc/kallsyms: each module's lowest to highest text symbol, plus a page.
pub fn lab_kvm_text_from(kallsyms: &str) -> Vec<(u64, u64)> {
    let mut ranges: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for l in kallsyms.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        let [addr, kind, _name, module] = f[..] else {
            continue;
        };
        if !matches!(kind, "t" | "T") || !matches!(module, "[kvm]" | "[kvm_amd]") {
            continue;
        }
        let Ok(a) = u64::from_str_radix(addr, 16) else {
            continue;
        };
        let r = ranges.entry(module).or_insert((a, a));
        r.0 = r.0.min(a);
        r.1 = r.1.max(a);
    }
    ranges.values().map(|&(lo, hi)| (lo, hi + 4096)).collect()
}

fn lab_kvm_text() -> Vec<(u64, u64)> {
    lab_kvm_text_from(&std::fs::read_to_string("/proc/kallsyms").unwrap_or_default())
}

/// Whether the exits of a stalled guest's busy vCPUs show the lab's spin, and why.
/// `busy`: some vCPU thread ran for at least half of the window.
pub fn spin_verdict(exits: &[Exit], lab_text: &[(u64, u64)], busy: bool) -> (bool, String) {
    if !busy {
        return (
            false,
            "every vCPU idle: the guest waits for something that never came (a lost notification or interrupt?)"
                .into(),
        );
    }
    if exits.is_empty() {
        return (
            true,
            "a vCPU thread busy in KVM_RUN with no guest exit at all: stuck inside the lab's KVM"
                .into(),
        );
    }
    let in_lab = exits
        .iter()
        .filter(|e| lab_text.iter().any(|&(lo, hi)| (lo..hi).contains(&e.rip)))
        .count();
    let mut by: BTreeMap<(&str, u64), usize> = BTreeMap::new();
    for e in exits {
        *by.entry((&e.reason, e.rip)).or_default() += 1;
    }
    let mut top: Vec<_> = by.into_iter().collect();
    top.sort_by_key(|t| std::cmp::Reverse(t.1));
    let top: Vec<String> = top
        .iter()
        .take(4)
        .map(|((r, rip), n)| format!("{n}× {r} at {rip:#x}"))
        .collect();
    let lab = in_lab * 10 >= exits.len() * 9;
    let whose = if lab {
        "the guest's RIP is the lab kernel's own KVM code: the lab's nested SVM spins it"
    } else {
        "the guest runs its own code"
    };
    (
        lab,
        format!(
            "{} exits in {TRACE_WINDOW:?}, {in_lab} at the lab's KVM text ({whose}): {}",
            exits.len(),
            top.join(", ")
        ),
    )
}

/// The lab kernel's `kvm:kvm_exit` records over [`TRACE_WINDOW`].
fn record_exits() -> std::io::Result<Vec<String>> {
    let put = |name: &str, v: &str| std::fs::write(format!("{TRACEFS}/{name}"), v);
    if !std::path::Path::new(TRACEFS).join("events").exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "tracefs", "tracefs", TRACEFS])
            .status();
    }
    put("tracing_on", "0")?;
    put("buffer_size_kb", "4096")?;
    put("trace", "")?;
    put("events/kvm/kvm_exit/enable", "1")?;
    put("tracing_on", "1")?;
    std::thread::sleep(TRACE_WINDOW);
    put("tracing_on", "0")?;
    put("events/kvm/kvm_exit/enable", "0")?;
    let text = std::fs::read_to_string(format!("{TRACEFS}/trace"))?;
    put("trace", "")?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}
