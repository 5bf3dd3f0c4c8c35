//! Shared helpers of isol's integration tests: run the real `isol` binary against a test image
//! store, and check that nothing a run created is left on the host.

#![allow(dead_code)]

pub mod cni;
pub mod containerd;
pub mod cri;
pub use isol_lab::watch as lab_watch;
pub mod podman;
pub mod pty;
pub mod shim;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};

/// Container tests change host-wide state (cgroups, links, mounts) and check that nothing is left
/// behind, so they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    baseline_mounts();
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The mounts that existed before any test ran: those are the host's, not leaks (the lab, for
/// one, mounts its module tree from /var/cache/isol).
fn baseline_mounts() -> &'static Vec<String> {
    static BASELINE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    BASELINE.get_or_init(|| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    })
}

pub fn isol_bin() -> &'static str {
    env!("CARGO_BIN_EXE_isol")
}

/// The image store the tests share (the busybox image is built into it on first use).
pub fn test_home() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("isol-home")
}

pub fn require_root() {
    baseline_mounts();
    assert!(
        nix::unistd::geteuid().is_root(),
        "the integration tests create namespaces, mounts and cgroups: run them as root (./test.sh)"
    );
}

/// The prologue of a test that runs isol for real and checks the host after it: root is
/// required (the test fails at once, saying so, without it), and the host is the test's
/// alone until the guard drops ([`serial`]).
pub fn root_test() -> MutexGuard<'static, ()> {
    require_root();
    serial()
}

/// `isol ARGS…` with the test store (and isol's default logging, whatever `ISOL_LOG` the
/// tests run with).
pub fn isol(args: &[&str]) -> Command {
    let mut c = Command::new(isol_bin());
    c.args(args)
        .env("ISOL_HOME", test_home())
        .env_remove("ISOL_LOG")
        .stdin(Stdio::null());
    c
}

/// The busybox test image's layers, copied into `to` (created): a rootfs directory, as an OCI
/// bundle has.
pub fn busybox_rootfs(to: &Path) {
    let store = isol_image::Store::open(test_home()).unwrap();
    store.ensure_default().unwrap();
    let image = store.resolve("busybox").unwrap();
    let layers = store.unpack(&image).unwrap();
    std::fs::create_dir(to).unwrap();
    for layer in layers {
        let o = Command::new("cp")
            .arg("-a")
            .arg(layer.join("."))
            .arg(to)
            .output()
            .unwrap();
        assert!(o.status.success(), "cp: {}", stderr(&o));
    }
}

/// Fails the test unless `tool` is on the PATH (a client of isol-runc that setup.sh installs).
pub fn require_tool(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(found, "{tool} is missing: run ./setup.sh (it installs it)");
}

/// A docker-archive (`docker save`'s format) of the busybox test image, tagged `tag`, made in
/// `dir` (its `image/` and `busybox.tar`): what a client of isol-runc imports.
pub fn busybox_docker_archive(dir: &Path, tag: &str) -> PathBuf {
    busybox_docker_archive_with(
        dir,
        tag,
        serde_json::json!({"Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}),
    )
}

/// [`busybox_docker_archive`] whose image config's `config` section (Cmd, Entrypoint, Env…) is
/// `config`.
pub fn busybox_docker_archive_with(dir: &Path, tag: &str, config: serde_json::Value) -> PathBuf {
    busybox_docker_archive_adding(dir, tag, config, &[])
}

/// [`busybox_docker_archive_with`] with the host's files `add` (source, path in the image)
/// copied into its layer.
pub fn busybox_docker_archive_adding(
    dir: &Path,
    tag: &str,
    config: serde_json::Value,
    add: &[(&Path, &str)],
) -> PathBuf {
    let rootfs = dir.join("image-rootfs");
    busybox_rootfs(&rootfs);
    for (from, to) in add {
        let to = rootfs.join(to.trim_start_matches('/'));
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap();
    }
    isol_bench::docker_archive::docker_archive(dir, tag, &[rootfs], config).unwrap()
}

/// Every mount point below `dir` (a client's storage, a daemon's state).
pub fn mounts_below(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// Unmounts whatever is mounted below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let mut points = mounts_below(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Runs `isol ARGS…` to completion. Inside the lab a kvm run that ends with the guest's
/// triple fault — one of the lab's own nested-KVM faults (docs/lab.md, "Known fault"), never
/// seen on hardware KVM — is run again, up to [`LAB_TRIPLE_FAULT_ATTEMPTS`] in all, saying so;
/// a triple fault isol caused would recur every time, and outside the lab none is retried.
pub fn run(args: &[&str]) -> Output {
    let kvm = args.windows(2).any(|w| w == ["--backend", "kvm"]) || args.contains(&"--backend=kvm");
    let mut attempt = 1;
    loop {
        let o = isol(args).output().expect("isol runs");
        let triple = code(&o) == 125 && stderr(&o).contains("hit a triple fault");
        if !(kvm && triple && lab_watch::in_the_lab()) || attempt == LAB_TRIPLE_FAULT_ATTEMPTS {
            return o;
        }
        attempt += 1;
        // Straight to stderr: the harness would hold an eprintln! back until the end.
        let _ = writeln!(
            std::io::stderr(),
            "the lab's nested KVM triple-faulted the guest of isol {args:?}; attempt {attempt} of {LAB_TRIPLE_FAULT_ATTEMPTS}"
        );
    }
}

/// Runs of one kvm command in [`run`] when the lab's nested KVM triple-faults its guest.
pub const LAB_TRIPLE_FAULT_ATTEMPTS: usize = 3;

/// Runs `c` with `input` on its stdin (written by a thread of its own, then closed: the end
/// reaches the command) and its stdout and stderr captured.
pub fn output_with_stdin(c: &mut Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&input));
    let o = child.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    o
}

/// A tmpfs of `size` (tmpfs's `size=`) mounted on the directory `dir`, made if missing;
/// unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some(format!("size={size}").as_str()),
        )
        .unwrap();
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// Asserts that a run succeeded and returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(code(&o), 0, "isol {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

/// `isol run --backend kvm ARGS…` with `env` fails before any guest runs: one line saying
/// `needle`, status 125.
pub fn assert_kvm_refused(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let mut all = vec!["run", "--backend", "kvm"];
    all.extend_from_slice(args);
    // Any existing file passes for the init: these errors come before it is used.
    let o = isol(&all)
        .env("ISOL_GUEST_INIT", "/bin/busybox")
        .env_remove("ISOL_VIRTIOFSD")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 125, "isol {args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
}

/// What a run may leave behind on the host, named so a failure says what leaked.
pub fn leftovers() -> Vec<String> {
    let mut found = Vec::new();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let baseline = baseline_mounts();
    for l in mounts.lines() {
        if baseline.iter().any(|b| b == l) {
            continue;
        }
        if l.contains(test_home().to_str().unwrap()) || l.contains("isol") {
            found.push(format!("mount: {l}"));
        }
    }
    for root in cgroup_dirs() {
        found.push(format!("cgroup: {}", root.display()));
    }
    let links = Command::new("ip").args(["-o", "link"]).output();
    if let Ok(l) = links {
        for line in String::from_utf8_lossy(&l.stdout).lines() {
            if line.contains("isol") {
                found.push(format!("link: {line}"));
            }
        }
    }
    let nft = Command::new("nft").args(["list", "tables"]).output();
    if let Ok(n) = nft {
        for line in String::from_utf8_lossy(&n.stdout).lines() {
            if line.contains("isol") {
                found.push(format!("nft: {line}"));
            }
        }
    }
    let containers = test_home().join("containers");
    if let Ok(entries) = std::fs::read_dir(&containers) {
        for e in entries.flatten() {
            if e.file_name() != "net" {
                found.push(format!("run dir: {}", e.path().display()));
            }
        }
    }
    found
}

fn cgroup_dirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let root = Path::new("/sys/fs/cgroup");
    let mut stack = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let p = e.path();
            if e.file_name().to_string_lossy().contains("isol") {
                out.push(p.clone());
            }
            if depth < 2 {
                stack.push((p, depth + 1));
            }
        }
    }
    out
}

/// `isol ps --json`: the live runs.
pub fn ps_json() -> Vec<serde_json::Value> {
    let out = ok(&["ps", "--json"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Stops whatever a failed test left running.
pub struct StopAll;

impl Drop for StopAll {
    fn drop(&mut self) {
        for r in ps_json() {
            let _ = run(&["stop", "-t", "0", r["id"].as_str().unwrap()]);
        }
    }
}

/// SIGKILLs the isol process that supervises run `id` (its record's owner) and waits until
/// it is gone; returns its pid.
pub fn kill_supervisor(id: &str) -> i32 {
    let record = std::fs::read_to_string(test_home().join(format!("runs/{id}.json"))).unwrap();
    let rec: serde_json::Value = serde_json::from_str(&record).unwrap();
    let owner: i32 = rec["owner"]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(owner),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Gone, or a zombie nobody reaps yet (it holds nothing any more).
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::time::Instant::now() < end {
        match std::fs::read_to_string(format!("/proc/{owner}/stat")) {
            Ok(stat) if !stat.rsplit(')').next().unwrap_or("").starts_with(" Z") => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => break,
        }
    }
    owner
}

/// Asserts that the host holds nothing of isol's.
pub fn assert_no_leftovers(context: &str) {
    // Teardown of a killed PID namespace is asynchronous in the kernel; give it a moment.
    for _ in 0..50 {
        if leftovers().is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{context}: left behind on the host: {:#?}", leftovers());
}

/// Whether this host runs guests in hardware and the guest kernel is given, so the kvm boot
/// tests can run (in the lab). Otherwise they skip with the reason — unless `ISOL_REQUIRE_KVM`
/// is set, as in the lab, where a skip would hide a broken setup.
pub fn kvm_ready() -> bool {
    let ready = guest_speed().and_then(|()| match std::env::var_os("ISOL_KERNEL") {
        None => Err("ISOL_KERNEL is not set (./test.sh sets it to the built guest kernel)".into()),
        Some(_) => Ok(()),
    });
    ready.map_err(skip_kvm_test).is_ok()
}

/// The guest kernel for tests that run both backends in one process (tests/parity.rs), or
/// `None` when they must skip, saying why ([`kvm_ready`]'s rules). `ISOL_KERNEL`, else the newest
/// `/var/cache/isol/kernel/*/vmlinux`; the guest init must be `ISOL_GUEST_INIT` or
/// `isol-guest-init` beside the isol binary. Probed once per test binary.
pub fn kvm_kernel() -> Option<PathBuf> {
    static ENV: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let env = ENV.get_or_init(|| {
        guest_speed()?;
        let kernel = std::env::var_os("ISOL_KERNEL")
            .map(PathBuf::from)
            .or_else(newest_kernel)
            .ok_or("no guest kernel: build it with guest-images/build-kernel.sh")?;
        if std::env::var_os("ISOL_GUEST_INIT").is_none() {
            let beside = PathBuf::from(isol_bin()).with_file_name("isol-guest-init");
            if !beside.is_file() {
                return Err(format!(
                    "{} is missing: cargo build -p isol-guest-init",
                    beside.display()
                ));
            }
        }
        Ok(kernel)
    });
    env.clone().map_err(skip_kvm_test).ok()
}

/// Whether /dev/kvm runs guests in hardware, or why not.
fn guest_speed() -> Result<(), String> {
    match isol_vmm::measure_guest_speed() {
        Err(e) => Err(format!("no usable /dev/kvm: {e}")),
        Ok(speed) if speed > isol_vmm::EMULATED_THRESHOLD => Err(format!(
            "/dev/kvm emulates guests ({speed:?} for the probe loop); run in the lab"
        )),
        Ok(_) => Ok(()),
    }
}

/// A kvm test that cannot run here skips, saying why — or fails when `ISOL_REQUIRE_KVM` is set.
fn skip_kvm_test(why: String) {
    if std::env::var_os("ISOL_REQUIRE_KVM").is_some() {
        panic!("ISOL_REQUIRE_KVM is set but: {why}");
    }
    eprintln!("skipped: {why}");
}

/// The newest cached guest kernel.
fn newest_kernel() -> Option<PathBuf> {
    std::fs::read_dir("/var/cache/isol/kernel")
        .ok()?
        .flatten()
        .map(|e| e.path().join("vmlinux"))
        .filter(|p| p.is_file())
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}
