//! `isol-runc events [--stats] [--interval D] ID`: a container's cgroup statistics and its OOM
//! kills, one JSON object a line, in runc's shapes (`{"type":"stats","id":…,"data":{…}}`,
//! `{"type":"oom","id":…}`), read from the cgroup files on v1 and v2 as runc reads them. For
//! a container in a VM (the kvm backend) the cgroup is the VMM's: the host's cost of the VM
//! (its vCPU threads, guest RAM and the VMM's own), and an OOM kill there is the VMM's.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isol_container::cgroups::{self, AnyCgroupManager, CgroupManager};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde_json::{Map, Value, json};

use crate::error::OciError;
use crate::state::{ContainerDir, Saved, Status};
use crate::vm::Backend;

/// How often the OOM counter is looked at between two stats (without a watch on it: v1), and
/// whether the container still runs.
const OOM_POLL: Duration = Duration::from_millis(100);

/// `events`: with `stats`, one stats object and return; else a stats object every `interval`
/// and an `oom` object whenever the kernel's OOM killer has killed in the container's cgroup,
/// until the container stops (then it returns, as runc's does once the container is gone).
pub fn events(root: &Path, id: &str, interval: Duration, stats: bool) -> Result<(), OciError> {
    let dir = ContainerDir::new(root, id)?;
    let saved = dir.load()?;
    let status = dir.status(&saved);
    if status == Status::Stopped {
        return Err(OciError::Status {
            id: id.into(),
            status: status.as_str().into(),
            what: "a stopped container has no statistics".into(),
        });
    }
    let cgroup_root = Path::new(isol_container::process::CGROUP_ROOT);
    let cgroup = cgroups::open_at(cgroup_root, &saved.cgroup_path)
        .map_err(isol_container::ContainerError::Cgroup)?;
    if saved.backend == Backend::Kvm && !exists(&cgroup) {
        return Err(no_vmm_cgroup(&saved, status));
    }
    let emit = |v: Value| -> Result<(), OciError> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{v}")
            .and_then(|()| out.flush())
            .map_err(|e| OciError::state("write the events to stdout", e))
    };
    let stats_event = || json!({"type": "stats", "id": id, "data": stats_json(&cgroup)});
    if stats {
        return emit(stats_event());
    }
    if interval.is_zero() {
        return Err(OciError::Usage(
            "events --interval must be above zero (e.g. 5s, 500ms)".into(),
        ));
    }
    // On v2, a watch on memory.events wakes this loop when the kernel changes it (as runc and
    // containerd watch it): an OOM kill is read before its victim is gone — a VM's VMM, whose
    // cgroup goes with it.
    let watch = oom_watch(&cgroup);
    let mut ooms = oom_kills(&cgroup).unwrap_or(0);
    let mut next = Instant::now();
    loop {
        // The counter first: a kill that ended the container is still told.
        if let Some(now) = oom_kills(&cgroup) {
            if now > ooms {
                emit(json!({"type": "oom", "id": id}))?;
            }
            ooms = now;
        }
        if dir.status(&saved) == Status::Stopped || !cgroup.path().exists() {
            return Ok(());
        }
        if Instant::now() >= next {
            emit(stats_event())?;
            next += interval;
        }
        let wait = OOM_POLL.min(next.saturating_duration_since(Instant::now()));
        match &watch {
            Some(w) => wait_for_change(w, wait),
            None => std::thread::sleep(wait),
        }
    }
}

/// Whether the cgroup is there (v2: its directory; v1: its memory or cpuacct hierarchy's).
fn exists(cgroup: &AnyCgroupManager) -> bool {
    match cgroup {
        AnyCgroupManager::V1(m) => ["memory", "cpuacct", "pids"]
            .iter()
            .any(|c| m.dir(c).is_some_and(Path::is_dir)),
        AnyCgroupManager::V2(m) => m.path().is_dir(),
    }
}

/// Why a VM has no statistics: its VMM's cgroup is made when it starts, by its jail.
fn no_vmm_cgroup(saved: &Saved, status: Status) -> OciError {
    let what = if status == Status::Created {
        "a VM's statistics are its VMM's cgroup's, which its jail makes when the VM starts: start it first"
            .to_string()
    } else {
        format!(
            "a VM's statistics are its VMM's cgroup's ({}), and this VM has none: its VMM runs without its jail (isol-runc not root, or ISOL_VMM_JAIL=off)",
            saved.cgroup_path.display()
        )
    };
    OciError::Status {
        id: saved.id.clone(),
        status: status.as_str().into(),
        what,
    }
}

/// A watch on v2's `memory.events` (none on v1, or where it cannot be made: the loop then
/// polls).
fn oom_watch(cgroup: &AnyCgroupManager) -> Option<Inotify> {
    let AnyCgroupManager::V2(m) = cgroup else {
        return None;
    };
    let i = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
    i.add_watch(&m.path().join("memory.events"), AddWatchFlags::IN_MODIFY)
        .ok()?;
    Some(i)
}

/// Waits at most `timeout` for the watched file to change, then drains the watch's events.
fn wait_for_change(watch: &Inotify, timeout: Duration) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(watch.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    if poll(&mut fds, PollTimeout::from(ms)).is_ok_and(|n| n > 0) {
        let _ = watch.read_events();
    }
}

/// Kills by the OOM killer in the cgroup so far: v1 `memory.oom_control` `oom_kill`, v2
/// `memory.events` `oom_kill`; none where the file cannot be read (the cgroup gone).
fn oom_kills(cgroup: &AnyCgroupManager) -> Option<u64> {
    let (file, dir) = match cgroup {
        AnyCgroupManager::V1(m) => ("memory.oom_control", m.dir("memory")),
        AnyCgroupManager::V2(m) => ("memory.events", Some(m.path())),
    };
    let text = std::fs::read_to_string(dir?.join(file)).ok()?;
    Some(parse_keyed(&text).get("oom_kill").copied().unwrap_or(0))
}

/// runc's `types.Stats` for the cgroup: cpu, memory, pids, blkio, hugetlb.
pub fn stats_json(cgroup: &AnyCgroupManager) -> Value {
    let data = match cgroup {
        AnyCgroupManager::V1(m) => v1_stats(|c| m.dir(c).map(Path::to_path_buf)),
        AnyCgroupManager::V2(m) => v2_stats(m.path()),
    };
    let mut data = data;
    data.insert("intel_rdt".into(), json!({}));
    data.insert("network_interfaces".into(), Value::Null);
    Value::Object(data)
}

fn v1_stats(dir: impl Fn(&str) -> Option<PathBuf>) -> Map<String, Value> {
    let mut data = Map::new();
    // CPU: cpuacct's nanoseconds; cpuacct.stat's ticks (USER_HZ, 100 a second) in ns.
    let mut usage = Map::new();
    if let Some(d) = dir("cpuacct") {
        put(&mut usage, "total", read_u64(&d.join("cpuacct.usage")));
        put_list(&mut usage, "percpu", &d.join("cpuacct.usage_percpu"));
        put_list(
            &mut usage,
            "percpu_kernel",
            &d.join("cpuacct.usage_percpu_sys"),
        );
        put_list(
            &mut usage,
            "percpu_user",
            &d.join("cpuacct.usage_percpu_user"),
        );
        let stat = keyed(&d.join("cpuacct.stat"));
        let ns = |k: &str| stat.get(k).map(|t| t * (1_000_000_000 / 100));
        usage.insert("kernel".into(), json!(ns("system").unwrap_or(0)));
        usage.insert("user".into(), json!(ns("user").unwrap_or(0)));
    }
    let mut throttling = Map::new();
    if let Some(d) = dir("cpu") {
        let stat = keyed(&d.join("cpu.stat"));
        put(&mut throttling, "periods", stat.get("nr_periods").copied());
        put(
            &mut throttling,
            "throttled_periods",
            stat.get("nr_throttled").copied(),
        );
        put(
            &mut throttling,
            "throttled_time",
            stat.get("throttled_time").copied(),
        );
    }
    data.insert(
        "cpu".into(),
        json!({"usage": usage, "throttling": throttling}),
    );
    if let Some(d) = dir("memory") {
        let raw = keyed(&d.join("memory.stat"));
        let entry = |prefix: &str| {
            let f = |name: &str| read_u64(&d.join(format!("{prefix}.{name}")));
            let mut e = Map::new();
            e.insert("limit".into(), json!(f("limit_in_bytes").unwrap_or(0)));
            put(&mut e, "usage", f("usage_in_bytes"));
            put(&mut e, "max", f("max_usage_in_bytes"));
            e.insert("failcnt".into(), json!(f("failcnt").unwrap_or(0)));
            Value::Object(e)
        };
        let mut memory = Map::new();
        put(&mut memory, "cache", raw.get("cache").copied());
        memory.insert("usage".into(), entry("memory"));
        memory.insert("swap".into(), entry("memory.memsw"));
        memory.insert("kernel".into(), entry("memory.kmem"));
        memory.insert("kernelTCP".into(), entry("memory.kmem.tcp"));
        memory.insert("raw".into(), json!(raw));
        data.insert("memory".into(), Value::Object(memory));
    }
    if let Some(d) = dir("pids") {
        data.insert("pids".into(), pids(&d));
    }
    let mut blkio = Map::new();
    if let Some(d) = dir("blkio") {
        // CFQ's and BFQ's files where the scheduler gives them, else the throttle layer's (as
        // runc falls back).
        for (key, names) in [
            (
                "ioServiceBytesRecursive",
                [
                    "blkio.io_service_bytes_recursive",
                    "blkio.throttle.io_service_bytes_recursive",
                ],
            ),
            (
                "ioServicedRecursive",
                [
                    "blkio.io_serviced_recursive",
                    "blkio.throttle.io_serviced_recursive",
                ],
            ),
        ] {
            if let Some(entries) = names.iter().find_map(|n| blkio_entries(&d.join(n))) {
                blkio.insert(key.into(), Value::Array(entries));
            }
        }
    }
    data.insert("blkio".into(), Value::Object(blkio));
    let mut hugetlb = Map::new();
    if let Some(d) = dir("hugetlb") {
        for size in cgroups::blkio::host_page_sizes() {
            let f = |name: &str| read_u64(&d.join(format!("hugetlb.{size}.{name}")));
            let mut e = Map::new();
            put(&mut e, "usage", f("usage_in_bytes"));
            put(&mut e, "max", f("max_usage_in_bytes"));
            e.insert("failcnt".into(), json!(f("failcnt").unwrap_or(0)));
            hugetlb.insert(size, Value::Object(e));
        }
    }
    data.insert("hugetlb".into(), Value::Object(hugetlb));
    data
}

fn v2_stats(d: &Path) -> Map<String, Value> {
    let mut data = Map::new();
    let stat = keyed(&d.join("cpu.stat"));
    let ns = |k: &str| stat.get(k).map(|us| us * 1000);
    let mut usage = Map::new();
    put(&mut usage, "total", ns("usage_usec"));
    usage.insert("kernel".into(), json!(ns("system_usec").unwrap_or(0)));
    usage.insert("user".into(), json!(ns("user_usec").unwrap_or(0)));
    let mut throttling = Map::new();
    put(&mut throttling, "periods", stat.get("nr_periods").copied());
    put(
        &mut throttling,
        "throttled_periods",
        stat.get("nr_throttled").copied(),
    );
    put(&mut throttling, "throttled_time", ns("throttled_usec"));
    data.insert(
        "cpu".into(),
        json!({"usage": usage, "throttling": throttling}),
    );
    // Memory as runc gives it on v2: "swap" is memory+swap, as v1's memsw; the failures are
    // memory.events' "max"; "max" is memory.peak where the kernel has it (≥ 5.19).
    let raw = keyed(&d.join("memory.stat"));
    let current = read_u64(&d.join("memory.current"));
    let limit = read_max(&d.join("memory.max"));
    let events = keyed(&d.join("memory.events"));
    let mut usage = Map::new();
    usage.insert("limit".into(), json!(limit));
    put(&mut usage, "usage", current);
    put(&mut usage, "max", read_u64(&d.join("memory.peak")));
    usage.insert(
        "failcnt".into(),
        json!(events.get("max").copied().unwrap_or(0)),
    );
    let mut swap = Map::new();
    swap.insert(
        "limit".into(),
        json!(limit.saturating_add(read_max(&d.join("memory.swap.max")))),
    );
    put(
        &mut swap,
        "usage",
        read_u64(&d.join("memory.swap.current")).map(|s| s + current.unwrap_or(0)),
    );
    swap.insert("failcnt".into(), json!(0));
    let mut memory = Map::new();
    put(&mut memory, "cache", raw.get("file").copied());
    memory.insert("usage".into(), Value::Object(usage));
    memory.insert("swap".into(), Value::Object(swap));
    memory.insert("kernel".into(), json!({"limit": 0, "failcnt": 0}));
    memory.insert("kernelTCP".into(), json!({"limit": 0, "failcnt": 0}));
    memory.insert("raw".into(), json!(raw));
    data.insert("memory".into(), Value::Object(memory));
    data.insert("pids".into(), pids(d));
    // io.stat: "MAJ:MIN rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…", a line a device.
    let mut bytes = Vec::new();
    let mut ios = Vec::new();
    for line in std::fs::read_to_string(d.join("io.stat"))
        .unwrap_or_default()
        .lines()
    {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(parse_dev) else {
            continue;
        };
        for kv in fields {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            let (list, op) = match k {
                "rbytes" => (&mut bytes, "Read"),
                "wbytes" => (&mut bytes, "Write"),
                "rios" => (&mut ios, "Read"),
                "wios" => (&mut ios, "Write"),
                _ => continue,
            };
            list.push(blkio_entry(major, minor, op, v));
        }
    }
    let mut blkio = Map::new();
    if !bytes.is_empty() {
        blkio.insert("ioServiceBytesRecursive".into(), Value::Array(bytes));
    }
    if !ios.is_empty() {
        blkio.insert("ioServicedRecursive".into(), Value::Array(ios));
    }
    data.insert("blkio".into(), Value::Object(blkio));
    let mut hugetlb = Map::new();
    for size in cgroups::blkio::host_page_sizes() {
        let file = |name: &str| d.join(format!("hugetlb.{size}.{name}"));
        let Some(current) = read_u64(&file("current")) else {
            continue;
        };
        let mut e = Map::new();
        put(&mut e, "usage", Some(current));
        let failcnt = keyed(&file("events")).get("max").copied().unwrap_or(0);
        e.insert("failcnt".into(), json!(failcnt));
        hugetlb.insert(size, Value::Object(e));
    }
    data.insert("hugetlb".into(), Value::Object(hugetlb));
    data
}

fn pids(d: &Path) -> Value {
    let mut p = Map::new();
    put(&mut p, "current", read_u64(&d.join("pids.current")));
    // "max": no limit, which runc gives as 0 (omitted).
    put(&mut p, "limit", read_u64(&d.join("pids.max")));
    Value::Object(p)
}

/// v1's blkio lines, "MAJ:MIN Op value" (and a last "Total value"), as runc's entries; `None`
/// where the file is missing.
fn blkio_entries(path: &Path) -> Option<Vec<Value>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (major, minor) = parse_dev(f.next()?)?;
                let op = f.next()?;
                let value = f.next()?.parse().ok()?;
                Some(blkio_entry(major, minor, op, value))
            })
            .collect(),
    )
}

/// One blkio entry, its zero members left out (as runc's `omitempty`).
fn blkio_entry(major: u64, minor: u64, op: &str, value: u64) -> Value {
    let mut e = Map::new();
    put(&mut e, "major", Some(major));
    put(&mut e, "minor", Some(minor));
    e.insert("op".into(), json!(op));
    put(&mut e, "value", Some(value));
    Value::Object(e)
}

fn parse_dev(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Sets `key` when the value is there and not zero (Go's `omitempty`).
fn put(map: &mut Map<String, Value>, key: &str, value: Option<u64>) {
    if let Some(v) = value.filter(|v| *v != 0) {
        map.insert(key.into(), json!(v));
    }
}

fn put_list(map: &mut Map<String, Value>, key: &str, path: &Path) {
    let list: Vec<u64> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    if !list.is_empty() {
        map.insert(key.into(), json!(list));
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// A v2 limit: a number, or `max` (none: `u64::MAX`, as runc gives it).
fn read_max(path: &Path) -> u64 {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim() == "max" => u64::MAX,
        Ok(s) => s.trim().parse().unwrap_or(0),
        Err(_) => 0,
    }
}

/// A flat keyed file ("key value" lines): memory.stat, cpu.stat, memory.events…
fn keyed(path: &Path) -> BTreeMap<String, u64> {
    parse_keyed(&std::fs::read_to_string(path).unwrap_or_default())
}

fn parse_keyed(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// runc's `--interval` is a Go duration (`5s`, `100ms`, `1m`); a bare number is seconds.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("invalid interval {s:?}: {e}; give a duration such as 5s, 500ms or 1m")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_as_go_durations() {
        assert_eq!(parse_interval("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_interval("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_interval("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_interval("soon").unwrap_err().contains("5s"));
    }

    #[test]
    fn blkio_lines_become_runc_entries() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x");
        std::fs::write(&f, "254:0 Read 4096\n254:0 Write 0\nTotal 4096\n").unwrap();
        assert_eq!(
            blkio_entries(&f).unwrap(),
            vec![
                json!({"major": 254, "op": "Read", "value": 4096}),
                json!({"major": 254, "op": "Write"}),
            ]
        );
        assert!(blkio_entries(&dir.path().join("missing")).is_none());
    }
}
