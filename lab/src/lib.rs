//! `isol lab`: run a command inside the lab VM. The CLI turns its arguments into
//! [`LabOptions`] and calls [`run`].
//!
//! The lab is a QEMU TCG (software-emulated) x86_64 VM running Debian's 6.1
//! kernel with `kvm_amd` loaded on the emulated SVM, so it has a working
//! `/dev/kvm` even where the host's own `/dev/kvm` is unusable (nested PVM).
//! The host's root file system is shared read-only over virtio-9p and mounted
//! under a tmpfs overlay, so the command sees the host's files at the same
//! paths, runs in the same directory with the same environment, as root, on a
//! pure cgroup v2 hierarchy. See docs/lab.md.
//!
//! The heavy lifting is in two embedded scripts: `guest-images/lab/prepare.sh`
//! (kernel download + initramfs, cached under `$ISOL_CACHE/lab/`) and
//! `guest-images/lab/init` (the VM's PID 1). This file starts QEMU and moves
//! bytes: the command's stdout, stderr and a status channel come back on
//! three virtio-serial ports, each a FIFO on the host; the kernel console on a
//! fourth FIFO.

pub mod watch;

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, IsTerminal, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const PREPARE_SH: &str = include_str!("../../guest-images/lab/prepare.sh");
const LAB_INIT: &str = include_str!("../../guest-images/lab/init");

/// Minimal firmware shipped with Debian's qemu-system-data.
const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// Exit code for "the lab itself failed" (as `docker run` / `podman run`).
pub const LAB_FAILURE: i32 = 125;

/// isol's store inside the lab when the caller sets no `ISOL_HOME` (on the lab's tmpfs /run).
pub const LAB_ISOL_HOME: &str = "/run/isol";

/// How to run a command inside the lab VM (a QEMU VM with a real /dev/kvm); `isol lab`'s
/// options.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Memory of the lab VM, in QEMU `-m` syntax (4G, 2048M, ...).
    pub memory: String,

    /// Number of vCPUs of the lab VM (each is a host thread under QEMU TCG).
    pub cpus: u32,

    /// QEMU CPU model of the lab VM. The default is QEMU's `max` (which has AMD SVM)
    /// without ERMS ("fast rep movsb/stosb"): under TCG every iteration of a `rep`
    /// string instruction is one step of the emulator, so with ERMS the lab kernel
    /// zeroes and copies pages one byte per step, and zeroing the guest RAM a nested
    /// VM touches took most of its start-up time (docs/lab.md, "CPU model").
    pub cpu_model: String,

    /// Show the lab kernel's log and the lab init's steps on stderr.
    pub console: bool,

    /// Print how long preparation, boot, the command and shutdown took (stderr).
    pub timings: bool,

    /// Give the lab a network interface (QEMU user-mode networking, NAT to the
    /// outside; eth0 10.0.2.15/24, DNS 10.0.2.3). Without it the lab has only
    /// a loopback interface.
    pub net: bool,

    /// Extra words for the lab kernel's command line, separated by spaces:
    /// kernel parameters, and MODULE.PARAM=VALUE for the modules the lab loads
    /// (kvm, kvm_amd, ...). `--kernel-args ""` gives none.
    pub kernel_args: String,

    /// The QEMU binary to use.
    pub qemu: String,

    /// The command to run in the lab, and its arguments.
    pub command: Vec<String>,
}

/// What can go wrong running the lab (reported on stderr by [`run`], which then gives
/// [`LAB_FAILURE`]).
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A step on the host failed; `what` names it.
    #[error("{what}")]
    Io {
        /// The step, e.g. `opening /tmp/isol-lab.1.2/console`.
        what: String,
        #[source]
        source: io::Error,
    },
    /// A step whose error says enough by itself.
    #[error(transparent)]
    Os(#[from] io::Error),
    /// A path with a NUL byte in it.
    #[error(transparent)]
    Nul(#[from] std::ffi::NulError),
    /// prepare.sh failed, or printed no path for the kernel or initramfs.
    #[error("{0}")]
    Prepare(String),
    /// A bad `ISOL_LAB_FREEZE_SECS`.
    #[error(
        "ISOL_LAB_FREEZE_SECS={0}: expected whole seconds, at least 10 (the heartbeat comes \
         every 5 s)"
    )]
    FreezeWindow(String),
    /// No job directory could be created.
    #[error("cannot create a temp dir under {}", .0.display())]
    JobDir(PathBuf),
}

/// Names the step an I/O error comes from, as [`LabError::Io`].
trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, LabError>;
}

impl<T> Step<T> for io::Result<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, LabError> {
        self.map_err(|source| LabError::Io {
            what: what(),
            source,
        })
    }
}

/// An error and its causes, each after a colon.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Runs `args.command` in the lab VM and returns its exit code (128+N if it
/// was killed by signal N). Lab failures (no QEMU, kernel download failed,
/// the VM died before reporting, ...) are reported on stderr and give
/// [`LAB_FAILURE`] (125); an interrupt (SIGINT/SIGTERM/SIGHUP) stops the VM,
/// cleans up and gives 128+signal.
pub fn run(args: &LabOptions) -> i32 {
    // Bad input fails before anything is prepared or started.
    if let Some(word) = args
        .kernel_args
        .split_ascii_whitespace()
        .find(|w| !cmdline_safe(Path::new(w)))
    {
        eprintln!(
            "isol lab: --kernel-args: {word:?} cannot go on a kernel command line; use printable ASCII words without quotes"
        );
        return LAB_FAILURE;
    }
    let freeze_after = match freeze_window() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("isol lab: {e}");
            return LAB_FAILURE;
        }
    };
    let Some(qemu) = find_program(&args.qemu) else {
        eprintln!(
            "isol lab: {} not found; install it with: apt-get install qemu-system-x86",
            args.qemu
        );
        return LAB_FAILURE;
    };
    let _signals = SignalGuard::install();
    match run_lab(args, &qemu, freeze_after) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("isol lab: error: {}", with_causes(&err));
            LAB_FAILURE
        }
    }
}

fn run_lab(args: &LabOptions, qemu: &Path, freeze_after: Duration) -> Result<i32, LabError> {
    let t_start = Instant::now();
    let job = JobDir::create()?;
    let progress = Progress::new();

    // 1. Kernel + initramfs (cached; the first run downloads ~70 MB).
    progress.set("preparing the lab kernel and initramfs");
    let prepared = match prepare(&job, &progress)? {
        Prepared::Ready(p) => p,
        Prepared::Interrupted(sig) => {
            progress.clear();
            return Ok(128 + sig);
        }
    };
    let t_prepared = Instant::now();

    // 2. The job: what to run, where, with which environment.
    write_nul_list(&job.path.join("argv"), args.command.iter().map(OsStr::new))?;
    let mut env: Vec<OsString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            kv
        })
        .collect();
    // isol's store must be writable and lockable: the host's, seen through the lab's read-only
    // 9p root under an overlay, is neither reliably. Unless the caller chose one, isol inside the
    // lab keeps its store on the lab's tmpfs.
    if std::env::var_os("ISOL_HOME").is_none() {
        env.push(OsString::from(format!("ISOL_HOME={LAB_ISOL_HOME}")));
    }
    write_nul_list(&job.path.join("env"), env.iter().map(OsString::as_os_str))?;
    let cwd = std::env::current_dir().step(|| "current directory".into())?;
    write_nul_list(&job.path.join("cwd"), [cwd.as_os_str()])?;

    // 3. Host ends of the VM's character devices.
    let stop = Arc::new(AtomicBool::new(false));
    // However we leave (errors included), the pump threads end.
    let _stop_pumps = StopOnDrop(Arc::clone(&stop));
    let console_tail = Arc::new(Mutex::new(Tail::new(64 * 1024)));
    let (events_tx, events) = mpsc::channel::<Event>();
    let mut pumps = Vec::new();
    let show_console = args.console;
    let tail = Arc::clone(&console_tail);
    pumps.push(Pump::start(
        &job.path.join("console"),
        &stop,
        move |data| {
            if show_console {
                let _ = io::stderr().lock().write_all(data);
            }
            tail.lock().unwrap_or_else(|e| e.into_inner()).push(data);
        },
    )?);
    let broken_pipe = Arc::new(AtomicBool::new(false));
    let mut out = StreamSink::new(io::stdout(), &broken_pipe, &progress);
    pumps.push(Pump::start(&job.path.join("stdout"), &stop, move |data| {
        out.write(data)
    })?);
    let mut err = StreamSink::new(io::stderr(), &broken_pipe, &progress);
    pumps.push(Pump::start(&job.path.join("stderr"), &stop, move |data| {
        err.write(data)
    })?);
    let mut status_buf = Vec::new();
    pumps.push(Pump::start(&job.path.join("status"), &stop, move |data| {
        status_buf.extend_from_slice(data);
        while let Some(nl) = status_buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = status_buf.drain(..=nl).collect();
            if let Some(ev) = Event::parse(&String::from_utf8_lossy(&line)) {
                let _ = events_tx.send(ev);
            }
        }
    })?);

    // 4. Boot.
    if args.console {
        progress.clear();
    } else {
        progress.set("booting the lab VM (QEMU TCG)");
    }
    let qemu_log = job.path.join("qemu.log");
    let mut cmd = qemu_command(qemu, args, &prepared, &job.path, &qemu_log)?;
    tracing::debug!(command = ?cmd, "starting QEMU");
    let mut child = cmd
        .spawn()
        .step(|| format!("starting {}", qemu.display()))?;
    let t_spawned = Instant::now();
    tracing::debug!(pid = child.id(), log = %qemu_log.display(), "QEMU started");

    let mut t_started = None;
    let mut t_exited = None;
    let mut guest_uptime = None;
    let mut exit_code = None;
    let mut lab_error = None;
    let mut interrupted = None;
    let mut last_heard = Instant::now();
    let mut frozen = false;
    let qemu_status: ExitStatus = loop {
        // From QEMU's start: the boot to the command takes seconds, and a lab can hang
        // there too (2026-12-06: once in a test.sh run, until its 10-minute bound).
        if exit_code.is_none() && last_heard.elapsed() > freeze_after {
            frozen = true;
            break kill_and_wait(&mut child)?;
        }
        if let Some(sig) = take_signal() {
            interrupted = Some(sig);
            progress.clear();
            break kill_and_wait(&mut child)?;
        }
        if broken_pipe.load(Ordering::SeqCst) && exit_code.is_none() {
            interrupted = Some(libc::SIGPIPE);
            break kill_and_wait(&mut child)?;
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let event = events.recv_timeout(Duration::from_millis(50));
        if event.is_ok() {
            last_heard = Instant::now();
        }
        match event {
            Ok(Event::Alive) => {}
            Ok(Event::Start(uptime)) => {
                progress.clear();
                t_started = Some(Instant::now());
                guest_uptime = Some(uptime);
            }
            Ok(Event::Exit(code)) => {
                t_exited = Some(Instant::now());
                exit_code = Some(code);
            }
            Ok(Event::Error(msg)) => lab_error = Some(msg),
            Err(_) => {}
        }
    };
    let t_end = Instant::now();
    progress.clear();

    // QEMU is gone: everything it wrote is in the FIFOs. Drain them.
    stop.store(true, Ordering::SeqCst);
    for pump in pumps {
        pump.join();
    }
    for ev in events.try_iter() {
        match ev {
            Event::Alive => {}
            Event::Start(uptime) => guest_uptime = Some(uptime),
            Event::Exit(code) => exit_code = Some(code),
            Event::Error(msg) => lab_error = Some(msg),
        }
    }
    if let Some(sig) = interrupted {
        if sig != libc::SIGPIPE {
            eprintln!("isol lab: interrupted, lab VM stopped");
        }
        return Ok(128 + sig);
    }

    if args.timings {
        let secs = |a: Instant, b: Instant| b.duration_since(a).as_secs_f64();
        eprintln!(
            "isol lab: timings: prepare {:.2}s, boot to command {}, command {}, shutdown {}, total {:.2}s",
            secs(t_start, t_prepared),
            t_started.map_or("-".into(), |t| format!(
                "{:.2}s (guest uptime {:.2}s)",
                secs(t_spawned, t),
                guest_uptime.unwrap_or(0.0)
            )),
            match (t_started, t_exited) {
                (Some(a), Some(b)) => format!("{:.2}s", secs(a, b)),
                _ => "-".into(),
            },
            t_exited.map_or("-".into(), |t| format!("{:.2}s", secs(t, t_end))),
            secs(t_start, t_end),
        );
    }

    match exit_code {
        Some(code) => Ok(code),
        None => {
            let why = match lab_error {
                Some(msg) => msg,
                None if frozen && t_started.is_none() => format!(
                    "the lab froze while booting: nothing from it for {} s, so it was stopped; \
                     this is QEMU's emulation hanging the lab kernel (docs/lab.md, \"Known \
                     fault\"), not the command's: run it again",
                    freeze_after.as_secs()
                ),
                None if frozen => format!(
                    "the lab froze: no heartbeat from it for {} s, so it was stopped; this is \
                     the lab's nested-KVM fault (docs/lab.md, \"Known fault\"), not the \
                     command's: run it again",
                    freeze_after.as_secs()
                ),
                None => {
                    let tail = console_tail.lock().unwrap_or_else(|e| e.into_inner());
                    match kernel_panic(&String::from_utf8_lossy(tail.bytes())) {
                        Some(what) => format!(
                            "the lab kernel panicked ({what}); with nested guests running this \
                             is the lab's nested-KVM fault (docs/lab.md, \"Known fault\"), not \
                             the command's: run it again"
                        ),
                        None => format!(
                            "the lab VM stopped without reporting an exit code (QEMU: {qemu_status})"
                        ),
                    }
                }
            };
            eprintln!("isol lab: error: {why}");
            if !args.console {
                let tail = console_tail.lock().unwrap_or_else(|e| e.into_inner());
                let text = String::from_utf8_lossy(tail.bytes());
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    eprintln!("isol lab: last lines of the lab console:");
                    for l in &lines[lines.len().saturating_sub(25)..] {
                        eprintln!("  {l}");
                    }
                }
            }
            if let Ok(log) = fs::read_to_string(&qemu_log) {
                for l in log.lines().filter(|l| !l.trim().is_empty()) {
                    eprintln!("isol lab: qemu: {l}");
                }
            }
            Ok(LAB_FAILURE)
        }
    }
}

/// The reason of the last kernel panic in the lab console's text, if it shows one.
fn kernel_panic(console: &str) -> Option<&str> {
    console
        .lines()
        .rev()
        .find_map(|l| l.split_once("Kernel panic - not syncing: "))
        .map(|(_, why)| why.trim())
}

/// Paths of the lab kernel and initramfs.
#[derive(Debug)]
struct LabImages {
    kernel: PathBuf,
    initrd: PathBuf,
    /// The lab kernel's module tree (for /lib/modules/<version> in the lab).
    modules: Option<PathBuf>,
}

#[derive(Debug)]
enum Prepared {
    Ready(LabImages),
    Interrupted(i32),
}

/// Runs the embedded prepare.sh (stderr lines are its progress).
fn prepare(job: &JobDir, progress: &Progress) -> Result<Prepared, LabError> {
    let script = job.path.join("prepare.sh");
    let init = job.path.join("init");
    fs::write(&script, PREPARE_SH)?;
    fs::write(&init, LAB_INIT)?;
    tracing::debug!(script = %script.display(), "preparing the lab image");
    let mut child = Command::new("bash")
        .arg(&script)
        .arg("--init")
        .arg(&init)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .step(|| "running the lab's prepare.sh (bash)".into())?;
    let stderr = child.stderr.take().expect("piped");
    let pb = progress.clone();
    let reader = thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let msg = line.strip_prefix("isol-lab: ").unwrap_or(&line);
            pb.set(&format!("lab: {msg}"));
            lines.push(line);
        }
        lines
    });
    let mut stdout = child.stdout.take().expect("piped");
    let status = loop {
        if let Some(sig) = take_signal() {
            // The script traps signals and removes its temp dirs.
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
            let _ = reader.join();
            return Ok(Prepared::Interrupted(sig));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    stdout.read_to_string(&mut out)?;
    let lines = reader.join().unwrap_or_default();
    if !status.success() {
        progress.clear();
        for l in &lines {
            eprintln!("{l}");
        }
        return Err(LabError::Prepare(format!(
            "preparing the lab failed ({status})"
        )));
    }
    let get = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .map(PathBuf::from)
            .ok_or_else(|| LabError::Prepare(format!("prepare.sh printed no {key}=")))
    };
    Ok(Prepared::Ready(LabImages {
        kernel: get("kernel")?,
        initrd: get("initrd")?,
        modules: get("modules").ok(),
    }))
}

fn qemu_command(
    qemu: &Path,
    args: &LabOptions,
    images: &LabImages,
    job: &Path,
    log: &Path,
) -> Result<Command, LabError> {
    let mut append = String::from("console=ttyS0 panic=-1 reboot=t");
    append.push_str(if args.console {
        " isol.console"
    } else {
        " quiet"
    });
    append.push_str(&format!(" isol.job={}", job.display()));
    if let Some(modules) = images.modules.as_deref().filter(|m| cmdline_safe(m)) {
        append.push_str(&format!(" isol.modules={}", modules.display()));
    }
    if args.net {
        append.push_str(" isol.net");
    }
    for word in args.kernel_args.split_ascii_whitespace() {
        append.push(' ');
        append.push_str(word);
    }
    let chardev = |id: &str| {
        let mut s = OsString::from(format!("file,id={id},path="));
        s.push(job.join(id));
        s
    };
    let mut cmd = Command::new(qemu);
    // qboot instead of SeaBIOS: ~0.5s less firmware time under TCG.
    if Path::new(QBOOT).is_file() {
        cmd.args(["-bios", QBOOT]);
    }
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args(["-accel", "tcg,thread=multi", "-cpu", &args.cpu_model])
    .args(["-smp", &args.cpus.to_string(), "-m", &args.memory])
    .arg("-kernel")
    .arg(&images.kernel)
    .arg("-initrd")
    .arg(&images.initrd)
    .args(["-append", &append])
    .arg("-chardev")
    .arg(chardev("console"))
    .args(["-serial", "chardev:console"])
    .args(["-device", "virtio-serial-pci"]);
    for port in ["stdout", "stderr", "status"] {
        cmd.arg("-chardev").arg(chardev(port)).args([
            "-device",
            &format!("virtserialport,chardev={port},name=isol.{port}"),
        ]);
    }
    cmd.args([
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
    ]);
    if args.net {
        cmd.args(["-nic", "user,model=virtio-net-pci"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log)?)
        // Not in our process group: a terminal's Ctrl-C reaches only us, and
        // we stop QEMU ourselves.
        .process_group(0);
    // Never outlive isol (even if it is SIGKILLed).
    let die_with_parent = || {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe, and
    // touches no memory shared with the parent.
    unsafe { cmd.pre_exec(die_with_parent) };
    Ok(cmd)
}

/// Sets the flag when dropped.
#[derive(Debug)]
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn kill_and_wait(child: &mut Child) -> io::Result<ExitStatus> {
    // Nothing in the lab is worth a graceful shutdown: its disk is a tmpfs.
    let _ = child.kill();
    child.wait()
}

/// How long the lab may stay silent on its status port (it sends a heartbeat every 5 s
/// while the command runs; before that, the boot to the command takes seconds) before it
/// counts as frozen and is stopped: `ISOL_LAB_FREEZE_SECS`, default 120.
fn freeze_window() -> Result<Duration, LabError> {
    const DEFAULT: u64 = 120;
    let Some(v) = std::env::var_os("ISOL_LAB_FREEZE_SECS") else {
        return Ok(Duration::from_secs(DEFAULT));
    };
    match v.to_str().and_then(|v| v.parse::<u64>().ok()) {
        Some(secs) if secs >= 10 => Ok(Duration::from_secs(secs)),
        _ => Err(LabError::FreezeWindow(v.to_string_lossy().into_owned())),
    }
}

/// Status channel protocol (see guest-images/lab/init).
#[derive(Debug)]
enum Event {
    Alive,
    Start(f64),
    Exit(i32),
    Error(String),
}

impl Event {
    fn parse(line: &str) -> Option<Event> {
        let line = line.trim_end();
        if line.starts_with("ISOL_LAB_ALIVE") {
            Some(Event::Alive)
        } else if let Some(rest) = line.strip_prefix("ISOL_LAB_START ") {
            Some(Event::Start(rest.trim().parse().unwrap_or(0.0)))
        } else if let Some(rest) = line.strip_prefix("ISOL_LAB_EXIT ") {
            rest.trim().parse().ok().map(Event::Exit)
        } else {
            line.strip_prefix("ISOL_LAB_ERROR ")
                .map(|m| Event::Error(m.to_string()))
        }
    }
}

/// Copies a FIFO that QEMU writes to into a callback, until `stop` is set
/// and the FIFO is empty. We hold the FIFO open read-write, so QEMU's open
/// never blocks and we never see a premature EOF.
#[derive(Debug)]
struct Pump {
    thread: JoinHandle<()>,
}

impl Pump {
    fn start(
        path: &Path,
        stop: &Arc<AtomicBool>,
        mut sink: impl FnMut(&[u8]) + Send + 'static,
    ) -> Result<Pump, LabError> {
        mkfifo(path)?;
        let mut fifo = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .step(|| format!("opening {}", path.display()))?;
        let stop = Arc::clone(stop);
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match fifo.read(&mut buf) {
                    Ok(n) if n > 0 => sink(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Ok(_) | Err(_) => {
                        // Empty (EAGAIN). Done if QEMU has exited.
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let mut pfd = libc::pollfd {
                            fd: fifo.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        };
                        // SAFETY: one valid pollfd, for the duration of the call.
                        unsafe { libc::poll(&mut pfd, 1, 100) };
                    }
                }
            }
        });
        Ok(Pump { thread })
    }

    fn join(self) {
        let _ = self.thread.join();
    }
}

/// The command's output going to our stdout/stderr. If that breaks (e.g.
/// `isol lab cmd | head`), further output is dropped and `broken_pipe` is
/// set: the lab is then stopped, as the command would have got SIGPIPE.
#[derive(Debug)]
struct StreamSink<W: Write> {
    out: W,
    broken: bool,
    broken_pipe: Arc<AtomicBool>,
    /// Cleared before the first byte goes out.
    progress: Option<Progress>,
}

impl<W: Write> StreamSink<W> {
    fn new(out: W, broken_pipe: &Arc<AtomicBool>, progress: &Progress) -> Self {
        StreamSink {
            out,
            broken: false,
            broken_pipe: Arc::clone(broken_pipe),
            progress: Some(progress.clone()),
        }
    }

    fn write(&mut self, data: &[u8]) {
        if self.broken {
            return;
        }
        if let Some(progress) = self.progress.take() {
            progress.clear();
        }
        if let Err(e) = self.out.write_all(data).and_then(|()| self.out.flush()) {
            self.broken = true;
            if e.kind() == io::ErrorKind::BrokenPipe {
                self.broken_pipe.store(true, Ordering::SeqCst);
            }
        }
    }
}

/// The last `cap` bytes of the console, for error reports.
#[derive(Debug)]
struct Tail {
    buf: Vec<u8>,
    cap: usize,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail {
            buf: Vec::new(),
            cap,
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        if self.buf.len() > self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// A spinner on stderr, only if stderr is a terminal.
#[derive(Clone, Debug)]
struct Progress {
    bar: ProgressBar,
}

impl Progress {
    fn new() -> Self {
        let bar = if io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    fn set(&self, msg: &str) {
        self.bar.set_message(msg.to_string());
    }

    fn clear(&self) {
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

/// The per-run temp dir (job description + FIFOs); removed on drop. It is
/// under the host's temp dir, which the lab sees at the same path via 9p.
#[derive(Debug)]
struct JobDir {
    path: PathBuf,
}

impl JobDir {
    fn create() -> Result<JobDir, LabError> {
        let mut base = std::env::temp_dir();
        // The path goes on the kernel command line: keep it simple.
        if !cmdline_safe(&base) {
            base = PathBuf::from("/tmp");
        }
        sweep_stale(&base);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        for i in 0..100u32 {
            let path = base.join(format!("isol-lab.{}.{:08x}", std::process::id(), nanos ^ i));
            match fs::create_dir(&path) {
                Ok(()) => {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
                    return Ok(JobDir { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e).step(|| format!("creating {}", path.display())),
            }
        }
        Err(LabError::JobDir(base))
    }
}

/// Removes job dirs left behind by `isol lab` processes that no longer exist
/// (SIGKILLed: QEMU died with them, their temp dir did not).
fn sweep_stale(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("isol-lab."))
            .and_then(|rest| rest.split('.').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(60)));
        if old && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for JobDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// Whether `path` can go on the kernel command line as is.
fn cmdline_safe(path: &Path) -> bool {
    path.as_os_str()
        .as_bytes()
        .iter()
        .all(|b| b.is_ascii_graphic() && *b != b'"')
}

fn write_nul_list<'a>(path: &Path, items: impl IntoIterator<Item = &'a OsStr>) -> io::Result<()> {
    let mut data = Vec::new();
    for item in items {
        data.extend_from_slice(item.as_bytes());
        data.push(0);
    }
    fs::write(path, data)
}

fn mkfifo(path: &Path) -> Result<(), LabError> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error()).step(|| format!("mkfifo {}", path.display()));
    }
    Ok(())
}

/// `name` if it contains a slash, else its first match in $PATH.
fn find_program(name: &str) -> Option<PathBuf> {
    let is_exec = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_exec(p))
}

/// Last signal (SIGINT/SIGTERM/SIGHUP) received while a lab runs, or 0.
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

fn take_signal() -> Option<i32> {
    match SIGNAL.swap(0, Ordering::SeqCst) {
        0 => None,
        sig => Some(sig),
    }
}

/// Catches SIGINT/SIGTERM/SIGHUP for the duration of a lab run (so we can
/// stop QEMU and clean up), restoring the previous handlers on drop.
#[derive(Debug)]
struct SignalGuard {
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl SignalGuard {
    fn install() -> SignalGuard {
        SIGNAL.store(0, Ordering::SeqCst);
        let mut old = Vec::new();
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: all-zero is a valid sigaction (SIG_DFL, empty mask, no flags).
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            // SAFETY: as above.
            let mut prev: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointers for the call; the handler only stores to an
            // atomic, which is async-signal-safe.
            if unsafe { libc::sigaction(sig, &sa, &mut prev) } == 0 {
                old.push((sig, prev));
            }
        }
        SignalGuard { old }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        for (sig, prev) in &self.old {
            // SAFETY: restores a sigaction previously returned by the kernel.
            unsafe { libc::sigaction(*sig, prev, std::ptr::null_mut()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert!(matches!(
            Event::parse("ISOL_LAB_EXIT 42\n"),
            Some(Event::Exit(42))
        ));
        assert!(matches!(Event::parse("ISOL_LAB_START 3.5"), Some(Event::Start(s)) if s == 3.5));
        assert!(
            matches!(Event::parse("ISOL_LAB_ERROR no kvm"), Some(Event::Error(m)) if m == "no kvm")
        );
        assert!(matches!(
            Event::parse("ISOL_LAB_ALIVE 12.5\n"),
            Some(Event::Alive)
        ));
        assert!(Event::parse("garbage").is_none());
    }

    #[test]
    fn a_kernel_panic_is_named_by_its_reason() {
        let console = "[  902.650172] RIP: 0010:exc_page_fault+0x1e/0x170\n\
            [  902.884877] Kernel panic - not syncing: corrupted stack end detected inside scheduler\n\
            [  902.885794] Kernel Offset: disabled\n";
        assert_eq!(
            kernel_panic(console),
            Some("corrupted stack end detected inside scheduler")
        );
        assert_eq!(kernel_panic("[ 1.0] reboot: Power down\n"), None);
    }

    #[test]
    fn tail_keeps_the_end() {
        let mut t = Tail::new(4);
        t.push(b"abc");
        t.push(b"defg");
        assert_eq!(t.bytes(), b"defg");
    }

    #[test]
    fn errors_name_the_step_then_the_cause() {
        let e = Err::<(), _>(io::Error::from_raw_os_error(libc::ENOENT))
            .step(|| "opening /x".into())
            .unwrap_err();
        assert_eq!(
            with_causes(&e),
            "opening /x: No such file or directory (os error 2)"
        );
        let e = LabError::FreezeWindow("5".into()).to_string();
        assert_eq!(
            e,
            "ISOL_LAB_FREEZE_SECS=5: expected whole seconds, at least 10 (the heartbeat comes every 5 s)"
        );
    }

    #[test]
    fn embedded_scripts() {
        assert!(LAB_INIT.starts_with("#!/bin/busybox sh"));
        assert!(PREPARE_SH.contains("modinfo -F depends"));
    }
}
