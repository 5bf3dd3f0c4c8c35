//! PID 1 of isol's microVM guests.
//!
//! 1. Reports "init started" on the exit port, mounts `/proc`, `/sys`, `/dev`
//!    (devtmpfs), `/dev/pts`, `/dev/shm`. The exit port is reached with `ioperm`; on a
//!    kernel without `CONFIG_X86_IOPL_IOPERM` the same protocol goes as byte pairs over
//!    `/dev/ttyS1` (then "init started" is reported once `/dev` is mounted).
//! 2. Reads the run spec from `/isol/spec` (see [`isol_guest_init::spec`]). With
//!    `isol.root=DEV` on the kernel command line, mounts DEV (ext4, read-only) as the
//!    lower layer of an overlay with a tmpfs upper and switches root into it
//!    (docs/devices.md). Sets the hostname, brings the loopback interface up, and adds
//!    the container's /dev links (`/dev/fd`, `/dev/stdin`, …). With `isol.stdio=virtio`,
//!    the workload's stdio are pipes that init relays to and from the virtio-console
//!    ports named `isol.stdin/stdout/stderr` instead of ttyS0. Mounts cgroup2 and makes
//!    the workload's cgroup with the spec's `pids.max` and `memory.max`, shown read-only at
//!    `/sys/fs/cgroup` ([`isol_guest_init::cgroup`]). An OCI config's sysctls are written
//!    before the names are set, its masked and read-only paths applied last (spec version 6).
//! 3. Forks the workload: into its cgroup and a cgroup namespace, new session, `/dev/ttyS0` (raw, so output is byte-exact) as
//!    its controlling terminal and stdin/stdout/stderr, the spec's environment and
//!    working directory, the spec's user and privileges (bounding set, groups/gid/uid,
//!    capabilities, `no_new_privs`, seccomp last: [`isol_guest_init::privileges`]),
//!    `execve` with a `PATH` search. 127 if the command is not found, 126 if it cannot
//!    be executed, 125 if the setup itself failed.
//! 4. Reaps every child (it is PID 1: orphans are re-parented to it). When the workload
//!    exits it kills what is left, drains the console, writes the exit status (or
//!    128 + signal) to the exit port, syncs, and tells the VMM to power off (a write to
//!    0x4f2), which ends the VM at once. Should the VM still run, it reboots; the kernel
//!    (`reboot=k`) resets through the i8042 and the VMM ends the VM then.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::{AsRawFd, RawFd};

use isol_guest_init::cgroup::WorkloadCgroup;
use isol_guest_init::port::{
    EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, EXIT_SETUP_FAILED, EXIT_STATUS_PORT, PHASE_INIT_START,
    PHASE_PORT, PHASE_SPEC_LOADED, PHASE_WORKLOAD_EXEC, PHASE_WORKLOAD_EXIT,
    PHASE_WORKLOAD_RUNNING, PORT_COUNT, POWER_OFF, POWER_OFF_PORT,
};
use isol_guest_init::privileges;
use isol_guest_init::spec::{BundleRoot, MountSpec, SPEC_PATH, Spec};
use isol_guest_init::user::{self, Ids};

mod exec;

const CONSOLE: &str = "/dev/ttyS0";
/// Names of the virtio-console ports for the workload's stdin, stdout, stderr (the
/// VMM's `device_manager::STDIO_PORTS`).
const STDIO_PORTS: [&str; 3] = ["isol.stdin", "isol.stdout", "isol.stderr"];
/// The port carrying window sizes with a tty (the VMM's `device_manager::TTY_PORT`).
const TTY_PORT: &str = "isol.tty";
/// The UART that carries the exit-port protocol when port I/O is not available.
const EXIT_UART: &str = "/dev/ttyS1";
const DEFAULT_PATH: &[u8] = b"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The channel to isol's exit port: direct port I/O when `ioperm` works, else the
/// same `(offset, value)` pairs as a byte stream on ttyS1 (kernels built without
/// `CONFIG_X86_IOPL_IOPERM`), else nothing.
enum Port {
    Direct,
    Uart(fs::File),
    None,
}

impl Port {
    /// Direct port access, if the kernel allows it (usable before /dev exists).
    fn direct() -> Self {
        // SAFETY: ioperm only changes this process's I/O permission bitmap; arguments
        // are plain integers.
        let rc = unsafe {
            libc::ioperm(
                libc::c_ulong::from(EXIT_STATUS_PORT),
                libc::c_ulong::from(PORT_COUNT),
                1,
            )
        };
        if rc == 0 { Port::Direct } else { Port::None }
    }

    /// Falls back to the ttyS1 stream (needs /dev mounted).
    fn or_uart(self) -> Self {
        match self {
            Port::None => match open_raw_tty(EXIT_UART) {
                Ok(f) => Port::Uart(f),
                Err(e) => {
                    log(&format!(
                        "no exit port (no ioperm, {e}); the VMM will not see the exit status"
                    ));
                    Port::None
                }
            },
            p => p,
        }
    }

    fn is_direct(&self) -> bool {
        matches!(self, Port::Direct)
    }

    fn out(&self, port: u16, value: u8) {
        match self {
            Port::Direct => {
                // SAFETY: ioperm granted access to exactly these ports; `out` to them
                // traps to the VMM and touches no memory.
                unsafe {
                    std::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
                }
            }
            Port::Uart(f) => {
                let pair = [(port - EXIT_STATUS_PORT) as u8, value];
                let mut w: &fs::File = f;
                let _ = w.write_all(&pair);
                // The report must be on the wire before we go on (and before reboot).
                // SAFETY: valid tty fd.
                unsafe { libc::tcdrain(f.as_raw_fd()) };
            }
            Port::None => {}
        }
    }

    fn phase(&self, phase: u8) {
        self.out(PHASE_PORT, phase);
    }

    /// In the workload's process, before exec: gives up the exit ports, whose access
    /// `ioperm` gave init and which fork and exec would pass on (the workload must not
    /// report a status or power the VM off). The ttyS1 stream is close-on-exec.
    fn close_for_workload(&self) {
        if self.is_direct() {
            // SAFETY: ioperm only changes this process's I/O permission bitmap; turning
            // access off needs no privilege.
            unsafe {
                libc::ioperm(
                    libc::c_ulong::from(EXIT_STATUS_PORT),
                    libc::c_ulong::from(PORT_COUNT),
                    0,
                )
            };
        }
    }
}

fn log(msg: &str) {
    // Init's stderr is /dev/console when the initramfs has it; if not, nothing to do.
    let _ = writeln!(io::stderr(), "isol-init: {msg}");
}

fn cstr(b: &[u8]) -> Result<CString, String> {
    CString::new(b).map_err(|_| format!("{:?} contains a NUL byte", String::from_utf8_lossy(b)))
}

fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), String> {
    if let Err(e) = fs::create_dir_all(target) {
        return Err(format!("cannot create {target}: {e}"));
    }
    let (s, t, f, d) = (
        cstr(source.as_bytes())?,
        cstr(target.as_bytes())?,
        cstr(fstype.as_bytes())?,
        cstr(data.as_bytes())?,
    );
    // SAFETY: all pointers are to live NUL-terminated strings.
    let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // Already mounted (e.g. the kernel's devtmpfs.mount=1) is fine.
        if e.raw_os_error() == Some(libc::ENODEV) {
            return Err(format!(
                "cannot mount {fstype} on {target}: the guest kernel has no {fstype} filesystem; \
                 build it with {} (docs/vmm.md, \"The guest kernel\")",
                fs_option(fstype)
            ));
        }
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(format!("cannot mount {fstype} on {target}: {e}"));
        }
    }
    Ok(())
}

/// The kernel option that provides filesystem `fstype` (what an ENODEV from mount means).
fn fs_option(fstype: &str) -> &'static str {
    match fstype {
        "proc" => "CONFIG_PROC_FS=y",
        "sysfs" => "CONFIG_SYSFS=y",
        "devtmpfs" => "CONFIG_DEVTMPFS=y",
        "devpts" => "CONFIG_UNIX98_PTYS=y",
        "tmpfs" => "CONFIG_TMPFS=y",
        "ext4" => "CONFIG_EXT4_FS=y",
        "overlay" => "CONFIG_OVERLAY_FS=y",
        "virtiofs" => "CONFIG_VIRTIO_FS=y",
        _ => "support for it built in (=y: isol's guests load no modules)",
    }
}

/// The links every container's /dev has (the container runtime's `rootfs::devices`):
/// `/dev/fd`, `/dev/stdin`, `/dev/stdout`, `/dev/stderr`, `/dev/core`, and `/dev/ptmx` to the
/// devpts instance's own (devtmpfs makes a device node there).
const DEV_LINKS: [(&str, &str); 6] = [
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/core", "/proc/kcore"),
    ("/dev/ptmx", "pts/ptmx"),
];

fn make_dev_links() -> Result<(), String> {
    for (link, target) in DEV_LINKS {
        let _ = fs::remove_file(link);
        std::os::unix::fs::symlink(target, link)
            .map_err(|e| format!("cannot create {link}: {e}"))?;
    }
    Ok(())
}

/// Brings the loopback interface up, as a container's network namespace has it: the
/// kernel gives it 127.0.0.1/8 (and ::1) as it comes up.
fn loopback_up() -> Result<(), String> {
    let err = |what: &str| {
        format!(
            "cannot bring up the loopback interface ({what}: {}); the guest kernel needs \
             CONFIG_NET=y and CONFIG_INET=y",
            io::Error::last_os_error()
        )
    };
    // SAFETY: socket has no memory effects; the fd is closed below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(err("socket"));
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(b"lo") {
        *d = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills the flags of the live `req`; `s` is our socket.
    let mut result = if unsafe { libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        Err(err("SIOCGIFFLAGS"))
    } else {
        Ok(())
    };
    if result.is_ok() {
        // SAFETY: the flags member was just written by the kernel; both are plain data.
        unsafe { req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
        // SAFETY: SIOCSIFFLAGS reads the live `req`.
        if unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &req) } < 0 {
            result = Err(err("SIOCSIFFLAGS"));
        }
    }
    // SAFETY: `s` is ours and closed once.
    unsafe { libc::close(s) };
    result
}

fn mount_all() -> Result<(), String> {
    let nodev = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount("proc", "/proc", "proc", nodev, "")?;
    mount("sysfs", "/sys", "sysfs", nodev, "")?;
    mount("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID, "mode=0755")?;
    mount(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "gid=5,mode=0620,ptmxmode=0666",
    )?;
    mount(
        "shm",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "mode=1777",
    )?;
    make_dev_links()
}

/// Sets the guest's hostname and, when given, its NIS domain name (an OCI config's
/// `domainname`); an empty name leaves the kernel's.
fn set_names(hostname: &[u8], domainname: &[u8]) -> Result<(), String> {
    type Setter = unsafe extern "C" fn(*const libc::c_char, libc::size_t) -> libc::c_int;
    let setters: [(&str, &[u8], Setter); 2] = [
        ("hostname", hostname, libc::sethostname),
        ("domainname", domainname, libc::setdomainname),
    ];
    for (what, name, set) in setters {
        if name.is_empty() {
            continue;
        }
        // SAFETY: the pointer/length pair describes `name`.
        if unsafe { set(name.as_ptr().cast(), name.len()) } != 0 {
            return Err(format!("cannot set {what}: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Writes each sysctl to `/proc/sys/<key with dots as slashes>` (the spec's keys are checked
/// words: the path stays below /proc/sys). One the guest kernel lacks fails the run, as it
/// fails a container's create.
fn write_sysctls(sysctl: &[(Vec<u8>, Vec<u8>)]) -> Result<(), String> {
    for (key, value) in sysctl {
        let key = String::from_utf8_lossy(key);
        let value = String::from_utf8_lossy(value);
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        fs::write(&path, value.as_bytes()).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::NotFound {
                " (the guest kernel has no such sysctl; drop it from linux.sysctl)"
            } else {
                ""
            };
            format!("cannot set sysctl {key} to {value:?}: {path}: {e}{hint}")
        })?;
    }
    Ok(())
}

/// Hides each of `masked` (a file under /dev/null, a directory under an empty read-only
/// tmpfs) and binds each of `readonly` read-only onto itself; missing paths are skipped, as
/// runc skips them. sysfs refuses mounts on some of its entries: those stay as they are, as
/// in a container (`isol_container`'s `mask_paths`).
fn mask_paths(masked: &[Vec<u8>], readonly: &[Vec<u8>]) -> Result<(), String> {
    for p in masked {
        let path = std::path::Path::new(OsStr::from_bytes(p));
        let Ok(meta) = fs::metadata(path) else {
            continue;
        };
        let res = if meta.is_dir() {
            mount(
                "tmpfs",
                &path.to_string_lossy(),
                "tmpfs",
                libc::MS_RDONLY,
                "size=0",
            )
        } else {
            bind(b"/dev/null", p, 0)
        };
        if let Err(e) = res
            && !p.starts_with(b"/sys/")
        {
            return Err(format!("cannot mask {}: {e}", path.display()));
        }
    }
    for p in readonly {
        if fs::symlink_metadata(OsStr::from_bytes(p)).is_err() {
            continue;
        }
        bind(p, p, libc::MS_RDONLY)?;
    }
    Ok(())
}

/// Opens a serial tty in raw mode so bytes pass unchanged.
fn open_raw_tty(path: &str) -> Result<fs::File, String> {
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot open {path}: {e}"))?;
    // SAFETY: termios is plain data; zeroed is a valid initial value for tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer to a termios.
    if unsafe { libc::tcgetattr(f.as_raw_fd(), &mut t) } == 0 {
        // SAFETY: `t` was filled by tcgetattr.
        unsafe { libc::cfmakeraw(&mut t) };
        // SAFETY: valid fd and termios.
        unsafe { libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t) };
    }
    Ok(f)
}

fn exec_status(errno: i32) -> u8 {
    match errno {
        libc::ENOENT | libc::ENOTDIR => EXIT_NOT_FOUND,
        _ => EXIT_NOT_EXECUTABLE,
    }
}

/// The workload's standard streams.
enum Stdio {
    /// One tty for all three, made the controlling terminal.
    Tty(fs::File),
    /// Pipes that init relays to and from the virtio-console ports ([`PortRelay`]): stdin's
    /// read end, stdout's and stderr's write ends. Not the ports themselves: a port opens
    /// once, and `/dev/stdout` (a reopen through /proc/self/fd) must work as with the
    /// container's pipes.
    Pipes([fs::File; 3]),
    /// The slave of a pty whose master init relays to the ports (`isol.tty=1`).
    Pty(fs::File),
}

/// The workload's cgroup once the workload runs: `isol exec`'s processes join it too, so its
/// limits count them as a container's cgroup counts `isol exec`'s (exec.rs).
static WORKLOAD_CGROUP: std::sync::OnceLock<WorkloadCgroup> = std::sync::OnceLock::new();

/// The workload's pid, for a signal sent to it over the exec channel (`isol-runc kill`).
static WORKLOAD_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Runs in the forked child; never returns. `cgroup`: the workload's cgroup, joined first.
/// `workload`: the run's workload (its exec is a boot phase), not a process of `isol exec`.
/// `exec_pipe`: the write end of init's close-on-exec pipe, whose end init reads once the exec
/// succeeded; a byte on it says that the exec failed ([`exec_succeeded`]).
fn child(
    spec: &Spec,
    cgroup: Option<&WorkloadCgroup>,
    stdio: &Stdio,
    port: &Port,
    workload: bool,
    exec_pipe: Option<&fs::File>,
) -> ! {
    let code = match child_setup_and_exec(spec, cgroup, stdio, port, workload) {
        Ok(never) => match never {},
        Err((code, msg)) => {
            let _ = writeln!(io::stderr(), "isol-init: {msg}");
            if let Some(mut p) = exec_pipe {
                let _ = p.write_all(&[code]);
            }
            code
        }
    };
    // SAFETY: _exit is always safe; skips atexit handlers that belong to the parent.
    unsafe { libc::_exit(i32::from(code)) }
}

enum Never {}

/// Gives the workload default signal dispositions and an empty mask, as a shell
/// would: the Rust runtime ignores SIGPIPE in init, and ignored signals survive
/// `execve` (a workload writing to a closed pipe must die of SIGPIPE, not see EPIPE).
fn reset_signals() {
    for sig in 1..libc::SIGRTMIN() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: restoring the default disposition has no memory effects.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    // SAFETY: valid pointer; unblocks everything.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) };
}

fn child_setup_and_exec(
    spec: &Spec,
    cgroup: Option<&WorkloadCgroup>,
    stdio: &Stdio,
    port: &Port,
    workload: bool,
) -> Result<Never, (u8, String)> {
    let setup = |m: String| (EXIT_SETUP_FAILED, m);
    // The cgroup first: whatever the workload does from here on counts against its limits.
    if let Some(c) = cgroup {
        c.join().map_err(setup)?;
    }
    reset_signals();
    // SAFETY: setsid has no memory effects; fails only if already a group leader.
    unsafe { libc::setsid() };
    let fds: [RawFd; 3] = match stdio {
        Stdio::Tty(console) | Stdio::Pty(console) => {
            // SAFETY: plain ioctl on a valid tty fd; makes it our controlling terminal.
            unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSCTTY, 0) };
            [console.as_raw_fd(); 3]
        }
        Stdio::Pipes(p) => [p[0].as_raw_fd(), p[1].as_raw_fd(), p[2].as_raw_fd()],
    };
    // The sources are all > 2 (opened after 0-2 were taken by /dev/console or left
    // empty, see `reserve_low_fds`), so no dup2 below clobbers a later source.
    for (fd, src) in fds.iter().enumerate() {
        // SAFETY: dup2 on valid fds; dup2 clears FD_CLOEXEC on the copy.
        if unsafe { libc::dup2(*src, fd as RawFd) } < 0 {
            return Err(setup(format!(
                "cannot attach the workload's stdio: {}",
                io::Error::last_os_error()
            )));
        }
    }

    let workdir: &[u8] = if spec.workdir.is_empty() {
        b"/"
    } else {
        &spec.workdir
    };
    std::env::set_current_dir(OsStr::from_bytes(workdir)).map_err(|e| {
        setup(format!(
            "cannot change to working directory {}: {e}",
            String::from_utf8_lossy(workdir)
        ))
    })?;

    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with(b"PATH=")) {
        env.push(DEFAULT_PATH.to_vec());
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix(b"PATH="))
        .unwrap_or(&DEFAULT_PATH[5..])
        .to_vec();
    let argv = spec
        .args
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(setup)?;
    let envp = env
        .iter()
        .map(|e| cstr(e))
        .collect::<Result<Vec<_>, _>>()
        .map_err(setup)?;
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(std::ptr::null());

    let prog = &spec.args[0];
    let name = String::from_utf8_lossy(prog).into_owned();
    let candidates: Vec<Vec<u8>> = if prog.contains(&b'/') {
        vec![prog.clone()]
    } else if prog.is_empty() {
        Vec::new()
    } else {
        path.split(|&b| b == b':')
            .map(|d| {
                let d: &[u8] = if d.is_empty() { b"." } else { d };
                let mut p = d.to_vec();
                p.push(b'/');
                p.extend_from_slice(prog);
                p
            })
            .collect()
    };

    let mut ids = resolve_user(&spec.user).map_err(setup)?;
    if let (Some(ids), Some(groups)) = (ids.as_mut(), &spec.groups) {
        // An OCI config's additionalGids: exactly these, the gid first.
        ids.groups = std::iter::once(ids.gid)
            .chain(groups.iter().copied())
            .collect();
    }
    set_rlimits(&spec.rlimits).map_err(setup)?;
    if let Some(adj) = spec.root.as_ref().and_then(|r| r.oom_score_adj) {
        // Before the capabilities go: lowering it needs CAP_SYS_RESOURCE.
        fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| setup(format!("cannot set oom_score_adj to {adj}: {e}")))?;
    }
    if let Some(mask) = spec.oci.umask {
        // SAFETY: umask only sets this process's file mode creation mask.
        unsafe { libc::umask(mask as libc::mode_t) };
    }
    if workload {
        port.phase(PHASE_WORKLOAD_EXEC);
    }
    port.close_for_workload();
    privileges::apply(ids.as_ref(), &spec.security).map_err(setup)?;
    // The first candidate that exists but cannot run decides the error (126);
    // otherwise nothing was found (127).
    let mut cannot_run: Option<io::Error> = None;
    for c in candidates {
        let Ok(c) = CString::new(c) else { continue };
        // SAFETY: argv/envp are NULL-terminated arrays of pointers into live CStrings.
        unsafe { libc::execve(c.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
        let e = io::Error::last_os_error();
        if cannot_run.is_none() && exec_status(e.raw_os_error().unwrap_or(0)) == EXIT_NOT_EXECUTABLE
        {
            cannot_run = Some(e);
        }
    }
    let status = if cannot_run.is_some() {
        EXIT_NOT_EXECUTABLE
    } else {
        EXIT_NOT_FOUND
    };
    let msg = if status == EXIT_NOT_FOUND {
        format!("{name}: command not found")
    } else {
        format!(
            "{name}: cannot execute: {}",
            cannot_run.map(|e| e.to_string()).unwrap_or_default()
        )
    };
    Err((status, msg))
}

/// The spec's resource limits (an OCI config's `process.rlimits`), set while the init's
/// capabilities still allow raising a hard limit.
fn set_rlimits(limits: &[isol_guest_init::spec::Rlimit]) -> Result<(), String> {
    for r in limits {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        if unsafe { libc::setrlimit(r.resource as _, &lim) } != 0 {
            return Err(format!(
                "cannot set resource limit {} to {}/{}: {}",
                r.resource,
                r.soft,
                r.hard,
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// The spec's user resolved in the guest root's /etc/passwd and /etc/group, as the
/// container runtime does in the container's root; none: root, with the groups the image
/// gives root (as docker, and as the container runtime).
fn resolve_user(spec: &[u8]) -> Result<Option<Ids>, String> {
    let spec = if spec.is_empty() { b"0" } else { spec };
    let spec = std::str::from_utf8(spec)
        .map_err(|_| format!("user {:?} is not UTF-8", String::from_utf8_lossy(spec)))?;
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
    user::resolve(spec, &read("/etc/passwd"), &read("/etc/group"))
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Waits for `main_pid`, reaping every other child on the way; returns its status.
fn wait_workload(main_pid: libc::pid_t) -> u8 {
    loop {
        let mut st = 0;
        // SAFETY: waitpid writes to `st` only.
        let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
        if pid < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // ECHILD: the workload is gone without us seeing it; cannot happen for PID 1.
            return EXIT_SETUP_FAILED;
        }
        if pid != main_pid {
            exec::reaped(pid, st);
        } else {
            if libc::WIFEXITED(st) {
                return libc::WEXITSTATUS(st) as u8;
            }
            if libc::WIFSIGNALED(st) {
                return (128 + libc::WTERMSIG(st)).min(255) as u8;
            }
        }
    }
}

/// Kills whatever the workload left behind and reaps it.
fn kill_and_reap_all() {
    // SAFETY: kill(-1) signals every process but init itself.
    unsafe { libc::kill(-1, libc::SIGKILL) };
    loop {
        let mut st = 0;
        // SAFETY: waitpid writes to `st` only.
        let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
        if pid < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
        if pid > 0 {
            exec::reaped(pid, st);
        }
    }
}

/// What the VMM told init on the kernel command line.
#[derive(Debug, Default, PartialEq, Eq)]
struct BootArgs {
    /// `isol.root=DEV`: the root disk (ext4, read-only).
    root: Option<String>,
    /// `isol.stdio=virtio`: stdio on virtio-console ports.
    virtio_stdio: bool,
    /// `isol.tty=1`: the workload gets a pseudo-terminal relayed to the ports, and
    /// window sizes arrive on the `isol.tty` port.
    tty: bool,
    /// `isol.disk=INDEX:HEXPATH`: a block device node for extra disk INDEX at PATH.
    disk_nodes: Vec<(usize, Vec<u8>)>,
    /// `isol.net=ADDRESS/PREFIX,GATEWAY`: configure eth0 (`--network bridge`).
    net: Option<String>,
    /// `isol.control=1`: serve `isol exec` on the `isol.control` port.
    control: bool,
    /// `isol.fs=HEXTAG:MODE:HEXPATH`: mount the virtio-fs device TAG at PATH, read-only
    /// when MODE is `ro` (`-v DIR:DIR` on kvm).
    shares: Vec<Share>,
}

/// One virtio-fs mount (`isol.fs=`).
#[derive(Debug, PartialEq, Eq)]
struct Share {
    tag: String,
    read_only: bool,
    path: Vec<u8>,
}

impl Share {
    fn parse(s: &str) -> Option<Share> {
        let mut it = s.split(':');
        let tag = String::from_utf8(unhex(it.next()?)?).ok()?;
        let read_only = match it.next()? {
            "ro" => true,
            "rw" => false,
            _ => return None,
        };
        let path = unhex(it.next()?)?;
        (it.next().is_none() && !tag.is_empty() && path.first() == Some(&b'/')).then_some(Share {
            tag,
            read_only,
            path,
        })
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn parse_cmdline(cmdline: &str) -> BootArgs {
    let mut a = BootArgs::default();
    for w in cmdline.split_ascii_whitespace() {
        if let Some(dev) = w.strip_prefix("isol.root=") {
            a.root = Some(dev.to_owned());
        } else if w == "isol.stdio=virtio" {
            a.virtio_stdio = true;
        } else if w == "isol.tty=1" {
            a.tty = true;
        } else if w == "isol.control=1" {
            a.control = true;
        } else if let Some(n) = w.strip_prefix("isol.net=") {
            a.net = Some(n.to_owned());
        } else if let Some(f) = w.strip_prefix("isol.fs=") {
            if let Some(share) = Share::parse(f) {
                a.shares.push(share);
            } else {
                log(&format!("ignoring {w}: not isol.fs=HEXTAG:ro|rw:HEXPATH"));
            }
        } else if let Some(d) = w.strip_prefix("isol.disk=")
            && let Some((i, hex)) = d.split_once(':')
            && let (Ok(i), Some(path)) = (i.parse(), unhex(hex))
        {
            a.disk_nodes.push((i, path));
        }
    }
    a
}

fn mkdir(p: &str) -> Result<(), String> {
    fs::create_dir_all(p).map_err(|e| format!("cannot create {p}: {e}"))
}

/// Mounts the root disk read-only as the lower layer of an overlay whose upper layer
/// is a tmpfs, moves /dev, /proc and /sys into it and makes it the root (the
/// initramfs is rootfs, which cannot be pivoted away: move-mount + chroot, as
/// switch_root does).
fn switch_to_disk(dev: &str) -> Result<(), String> {
    mount(dev, "/isol/lower", "ext4", libc::MS_RDONLY, "")?;
    mount("tmpfs", "/isol/rw", "tmpfs", 0, "mode=0755")?;
    mkdir("/isol/rw/upper")?;
    mkdir("/isol/rw/work")?;
    mount(
        "overlay",
        "/isol/root",
        "overlay",
        0,
        "lowerdir=/isol/lower,upperdir=/isol/rw/upper,workdir=/isol/rw/work",
    )?;
    move_kernel_mounts()?;
    enter_root()
}

/// An OCI bundle's root (`isol-runc` on kvm, spec version 5): the virtio-fs share holds the
/// bundle's root filesystem as `rootfs` and each bind mount's source; the root is a bind of
/// `rootfs` with a container's own /proc, /dev (a tmpfs), /dev/pts, /dev/shm, /dev/mqueue and
/// /sys made in it ([`bundle_kernel_mounts`]), then the config's mounts, then (with
/// `root.readonly`) the root itself made read-only, as runc does.
fn switch_to_bundle(root: &BundleRoot) -> Result<(), String> {
    let tag = String::from_utf8_lossy(&root.tag).into_owned();
    mount(&tag, "/isol/share", "virtiofs", 0, "")?;
    mkdir("/isol/root")?;
    bind(b"/isol/share/rootfs", b"/isol/root", 0)?;
    bundle_kernel_mounts()?;
    for m in &root.mounts {
        bundle_mount(m)?;
    }
    if root.readonly {
        remount_bind(b"/isol/root", libc::MS_RDONLY)?;
    }
    enter_root()
}

/// One mount of the bundle's config, under /isol/root: a bind of a path of the share (its
/// target made a file or a directory as its source is), or a filesystem with its options.
fn bundle_mount(m: &MountSpec) -> Result<(), String> {
    let mut target = b"/isol/root".to_vec();
    target.extend_from_slice(&m.target);
    let t = std::path::Path::new(OsStr::from_bytes(&target));
    if !m.fstype.is_empty() {
        let flags = m.flags as libc::c_ulong;
        return mount(
            &String::from_utf8_lossy(&m.source),
            &t.to_string_lossy(),
            &String::from_utf8_lossy(&m.fstype),
            flags,
            &String::from_utf8_lossy(&m.data),
        );
    }
    let mut source = b"/isol/share/".to_vec();
    source.extend_from_slice(&m.source);
    let s = std::path::Path::new(OsStr::from_bytes(&source));
    if s.is_dir() {
        fs::create_dir_all(t).map_err(|e| format!("cannot create {}: {e}", t.display()))?;
    } else if !t.exists() {
        if let Some(parent) = t.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        fs::File::create(t).map_err(|e| format!("cannot create {}: {e}", t.display()))?;
    }
    let extra = m.flags as libc::c_ulong
        & (libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC);
    bind(&source, &target, extra)
}

/// Binds `source` (recursively) at `target`, then remounts it with `flags` when any.
fn bind(source: &[u8], target: &[u8], flags: libc::c_ulong) -> Result<(), String> {
    let (s, t) = (cstr(source)?, cstr(target)?);
    // SAFETY: valid NUL-terminated paths; a bind mount takes no type or data.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot bind {} at {}: {}",
            String::from_utf8_lossy(source),
            String::from_utf8_lossy(target),
            io::Error::last_os_error()
        ));
    }
    if flags != 0 {
        remount_bind(target, flags)?;
    }
    Ok(())
}

/// Remounts the bind mount at `target` with `flags` (`MS_RDONLY`…).
fn remount_bind(target: &[u8], flags: libc::c_ulong) -> Result<(), String> {
    let t = cstr(target)?;
    // SAFETY: a valid NUL-terminated path; a remount takes no source, type or data.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot make {} read-only: {}",
            String::from_utf8_lossy(target),
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The mounts runc makes for every container (runc's `spec`, runtime-tools' generator), in
/// its order, each with the source and type a config lists: mount order, types and sources
/// are what runtime-tools' `runtimetest` checks against `/proc/self/mountinfo`. Fresh
/// mounts, not the init's own moved in: those were mounted first and would come before the
/// root in mountinfo, and the init's /dev is a devtmpfs.
const BUNDLE_MOUNTS: [(&str, &str, &str, libc::c_ulong, &str); 6] = [
    ("proc", "/proc", "proc", NODEV_NOEXEC, ""),
    (
        "tmpfs",
        "/dev",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        "mode=755,size=65536k",
    ),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    ),
    (
        "shm",
        "/dev/shm",
        "tmpfs",
        NODEV_NOEXEC,
        "mode=1777,size=65536k",
    ),
    ("mqueue", "/dev/mqueue", "mqueue", NODEV_NOEXEC, ""),
    ("sysfs", "/sys", "sysfs", NODEV_NOEXEC, ""),
];

const NODEV_NOEXEC: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// The character devices of a bundle's /dev: runc's defaults (the devices of every
/// container) and the virtio-console ports (`vportNpM`) the init opens after the switch for
/// the workload's stdio and the exec channel. Nothing else of the devtmpfs (`kmsg`, `fuse`,
/// `console`, the UARTs, …): a container on the host has none of it. The UARTs the init may
/// fall back to ([`CONSOLE`], [`EXIT_UART`]) are opened before the switch.
fn bundle_device(name: &[u8]) -> bool {
    const DEFAULT: [&[u8]; 6] = [b"null", b"zero", b"full", b"random", b"urandom", b"tty"];
    DEFAULT.contains(&name) || name.starts_with(b"vport")
}

/// [`BUNDLE_MOUNTS`] in /isol/root, then in its /dev a node for each character device of the
/// init's devtmpfs that a bundle's /dev holds ([`bundle_device`]) and the container's links
/// ([`DEV_LINKS`]).
fn bundle_kernel_mounts() -> Result<(), String> {
    for (source, target, fstype, flags, data) in BUNDLE_MOUNTS {
        mount(source, &format!("/isol/root{target}"), fstype, flags, data)?;
    }
    for e in fs::read_dir("/dev").map_err(|e| format!("cannot read /dev: {e}"))? {
        let e = e.map_err(|e| format!("cannot read /dev: {e}"))?;
        let Ok(meta) = e.metadata() else { continue };
        if !meta.file_type().is_char_device() || !bundle_device(e.file_name().as_bytes()) {
            continue;
        }
        let mut node = b"/isol/root/dev/".to_vec();
        node.extend_from_slice(e.file_name().as_bytes());
        let path = cstr(&node)?;
        // SAFETY: a valid NUL-terminated path; mknod reads nothing else.
        let mut rc = unsafe { libc::mknod(path.as_ptr(), meta.mode(), meta.rdev()) };
        if rc == 0 {
            // Undoes the umask: a non-root workload writes /dev/null (0666, as devtmpfs has it).
            // SAFETY: a valid NUL-terminated path; chmod reads nothing else.
            rc = unsafe { libc::chmod(path.as_ptr(), meta.mode() & 0o7777) };
        }
        if rc != 0 {
            return Err(format!(
                "cannot create {}: {}",
                String::from_utf8_lossy(&node),
                io::Error::last_os_error()
            ));
        }
    }
    for (link, target) in DEV_LINKS {
        let at = format!("/isol/root{link}");
        std::os::unix::fs::symlink(target, &at).map_err(|e| format!("cannot create {at}: {e}"))?;
    }
    Ok(())
}

/// Moves /dev, /proc and /sys (with what is mounted below them) into /isol/root.
fn move_kernel_mounts() -> Result<(), String> {
    for m in ["/dev", "/proc", "/sys"] {
        let to = format!("/isol/root{m}");
        mkdir(&to)?;
        let (s, t) = (cstr(m.as_bytes())?, cstr(to.as_bytes())?);
        // SAFETY: valid NUL-terminated paths; MS_MOVE ignores type and data.
        let rc = unsafe {
            libc::mount(
                s.as_ptr(),
                t.as_ptr(),
                std::ptr::null(),
                libc::MS_MOVE,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(format!("cannot move {m}: {}", io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Makes /isol/root the root: move-mount onto `/`, then chroot.
fn enter_root() -> Result<(), String> {
    std::env::set_current_dir("/isol/root").map_err(|e| format!("cannot enter the root: {e}"))?;
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c".".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(format!(
            "cannot move the root: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: valid NUL-terminated path.
    if unsafe { libc::chroot(c".".as_ptr()) } != 0 {
        return Err(format!("cannot chroot: {}", io::Error::last_os_error()));
    }
    std::env::set_current_dir("/").map_err(|e| format!("cannot enter the root: {e}"))
}

/// Creates a block device node at each requested path for the extra disk whose
/// serial (`/sys/block/vdX/serial`, the VMM's GET_ID) is `isol-diskINDEX` (`-v` on kvm).
fn make_disk_nodes(nodes: &[(usize, Vec<u8>)]) -> Result<(), String> {
    for (index, path) in nodes {
        let want = format!("isol-disk{index}");
        let dev = fs::read_dir("/sys/block")
            .map_err(|e| format!("cannot list /sys/block: {e}"))?
            .flatten()
            .find(|e| {
                fs::read_to_string(e.path().join("serial")).is_ok_and(|s| s.trim_end() == want)
            })
            .and_then(|e| fs::read_to_string(e.path().join("dev")).ok())
            .ok_or_else(|| format!("no virtio disk with serial {want}"))?;
        let (major, minor) = dev
            .trim()
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| format!("bad device number {dev:?} for {want}"))?;
        let p = std::path::Path::new(OsStr::from_bytes(path));
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let _ = fs::remove_file(p);
        let c = cstr(path)?;
        // SAFETY: valid NUL-terminated path; mknod creates a device node only.
        let rc = unsafe {
            libc::mknod(
                c.as_ptr(),
                libc::S_IFBLK | 0o660,
                libc::makedev(major, minor),
            )
        };
        if rc != 0 {
            return Err(format!(
                "cannot create {}: {}",
                p.display(),
                io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Mounts each virtio-fs share at its path in the workload's root (created if missing),
/// read-only for `:ro`: virtiofsd refuses writes as well (`--readonly`), this makes the
/// guest say EROFS before asking.
fn mount_shares(shares: &[Share]) -> Result<(), String> {
    for s in shares {
        let target = std::path::Path::new(OsStr::from_bytes(&s.path));
        fs::create_dir_all(target)
            .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        let (src, dst) = (cstr(s.tag.as_bytes())?, cstr(&s.path)?);
        let flags = if s.read_only { libc::MS_RDONLY } else { 0 };
        // SAFETY: valid NUL-terminated strings; no data.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                c"virtiofs".as_ptr(),
                flags,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            let hint = if e.raw_os_error() == Some(libc::ENODEV) {
                format!("; build the guest kernel with {}", fs_option("virtiofs"))
            } else {
                String::new()
            };
            return Err(format!(
                "cannot mount the shared directory {} (virtio-fs tag {}): {e}{hint}",
                target.display(),
                s.tag
            ));
        }
    }
    Ok(())
}

/// Finds the virtio-console ports named `names` (the VMM names them; they appear
/// asynchronously after the driver probes) and opens them: the first for reading,
/// the others for writing.
fn open_stdio_ports<const N: usize>(names: [&str; N]) -> Result<[fs::File; N], String> {
    let found = find_ports(names);
    let open = |i: usize| -> Result<fs::File, String> {
        let p = found[i]
            .as_ref()
            .ok_or_else(|| format!("no virtio-console port named {}", names[i]))?;
        // isol.stdin and isol.tty are read, the others written.
        let input = i == 0 || i == 3;
        fs::OpenOptions::new()
            .read(input)
            .write(!input)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(p)
            .map_err(|e| format!("cannot open {p}: {e}"))
    };
    let mut out = Vec::with_capacity(N);
    for i in 0..N {
        out.push(open(i)?);
    }
    out.try_into()
        .map_err(|_| "internal error: port count".to_string())
}

/// The virtio-console port named `name`, open for reading and writing.
fn open_port(name: &str) -> Result<fs::File, String> {
    let [found] = find_ports([name]);
    let p = found.ok_or_else(|| format!("no virtio-console port named {name}"))?;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&p)
        .map_err(|e| format!("cannot open {p}: {e}"))
}

/// The device paths of the ports named `names`, waiting up to ~10 s for them to appear.
fn find_ports<const N: usize>(names: [&str; N]) -> [Option<String>; N] {
    let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
    // The ports are announced by control messages handled in a kernel workqueue; they
    // are normally there long before init runs. Give up after ~10 s.
    for _ in 0..1000 {
        if let Ok(dir) = fs::read_dir("/sys/class/virtio-ports") {
            for e in dir.flatten() {
                let Ok(name) = fs::read_to_string(e.path().join("name")) else {
                    continue;
                };
                if let Some(i) = names.iter().position(|n| *n == name.trim_end()) {
                    found[i] = Some(format!("/dev/{}", e.file_name().to_string_lossy()));
                }
            }
        }
        if found
            .iter()
            .all(|f| f.as_ref().is_some_and(|p| fs::metadata(p).is_ok()))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    found
}

/// The master of a new pseudo-terminal and the path of its slave.
fn open_pty() -> Result<(fs::File, String), String> {
    let master = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open("/dev/pts/ptmx")
        .map_err(|e| format!("cannot open /dev/pts/ptmx (kernel without UNIX98_PTYS?): {e}"))?;
    let unlock: libc::c_int = 0;
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads an int from a live local; the fd is a pty master.
    let unlocked = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } == 0;
    // SAFETY: TIOCGPTN writes an unsigned int into a live local.
    let ok = unlocked && unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } == 0;
    if !ok {
        return Err(format!(
            "cannot unlock the pty: {}",
            io::Error::last_os_error()
        ));
    }
    Ok((master, format!("/dev/pts/{n}")))
}

/// Applies a window size line `"ROWS COLS"` to the pty; the kernel sends SIGWINCH to
/// the foreground process group when it changes.
fn set_winsize(master: &fs::File, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let mut it = text.split_ascii_whitespace().map(str::parse::<u16>);
    let (Some(Ok(rows)), Some(Ok(cols))) = (it.next(), it.next()) else {
        return;
    };
    exec::set_size(master, (rows, cols));
}

/// Reads one `\n`-terminated line (without it); `None` at EOF or error.
fn read_line(f: &mut fs::File) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match f.read(&mut b) {
            Ok(0) => return (!line.is_empty()).then_some(line),
            Ok(_) if b[0] == b'\n' => return Some(line),
            Ok(_) if line.len() < 64 => line.push(b[0]),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Copies `from` to `to` until EOF or an error on either side.
fn pump(mut from: fs::File, mut to: fs::File) {
    use std::io::Read;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // EIO on a pty master: every slave fd is closed.
            Err(_) => return,
        }
    }
}

/// A pipe (read end, write end), both close-on-exec.
fn pipe() -> Result<(fs::File, fs::File), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!(
            "cannot make a pipe for the workload: {}",
            io::Error::last_os_error()
        ));
    }
    use std::os::fd::FromRawFd;
    // SAFETY: fds[0] was just made by pipe2 and is owned here only.
    let read = unsafe { fs::File::from_raw_fd(fds[0]) };
    // SAFETY: as for fds[0].
    let write = unsafe { fs::File::from_raw_fd(fds[1]) };
    // Fewer wake-ups for a fast writer (the default is 64 KiB); best effort.
    // SAFETY: fcntl on a pipe fd we own.
    unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, 1 << 20) };
    Ok((read, write))
}

/// Without a tty: the workload's stdio are pipes, and init copies between them and the
/// virtio-console ports (stdin port → pipe; pipes → stdout and stderr ports).
struct PortRelay {
    /// (from, to) for stdin, stdout, stderr.
    pumps: [(fs::File, fs::File); 3],
}

impl PortRelay {
    /// The relay for `ports` (stdin, stdout, stderr) and the workload's pipe ends.
    fn new(ports: [fs::File; 3]) -> Result<([fs::File; 3], Self), String> {
        let [p_in, p_out, p_err] = ports;
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let pumps = [(p_in, in_w), (out_r, p_out), (err_r, p_err)];
        Ok(([in_r, out_w, err_w], Self { pumps }))
    }

    /// Starts the three copies (after the fork: init must fork single-threaded); returns
    /// stdout's and stderr's, to be joined once the workload's processes are gone (their
    /// pipes then read EOF), so everything they wrote is sent. Stdin's ends with the
    /// host's EOF, or when the workload closes its end.
    fn start(self) -> Result<Vec<std::thread::JoinHandle<()>>, String> {
        let err = |e: io::Error| format!("cannot start the stdio relay: {e}");
        let [stdin, stdout, stderr] = self.pumps;
        std::thread::Builder::new()
            .spawn(move || pump(stdin.0, stdin.1))
            .map_err(err)?;
        [stdout, stderr]
            .into_iter()
            .map(|(from, to)| {
                std::thread::Builder::new()
                    .spawn(move || pump(from, to))
                    .map_err(err)
            })
            .collect()
    }
}

/// With a tty: the relay threads between the pty master and the ports, started after
/// the fork. The output relay is returned, to be joined once the workload's processes
/// are gone (the master then reads EIO), so everything they wrote is sent.
struct Relay {
    master: fs::File,
    ports: [fs::File; 4],
}

impl Relay {
    fn start(self) -> Result<std::thread::JoinHandle<()>, String> {
        let err = |e: io::Error| format!("cannot start the tty relay: {e}");
        let Relay { master, ports } = self;
        let [stdin, stdout, stderr, mut control] = ports;
        drop(stderr);
        let m_in = master.try_clone().map_err(err)?;
        let m_size = master.try_clone().map_err(err)?;
        std::thread::Builder::new()
            .spawn(move || pump(stdin, m_in))
            .map_err(err)?;
        std::thread::Builder::new()
            .spawn(move || {
                while let Some(line) = read_line(&mut control) {
                    set_winsize(&m_size, &line);
                }
            })
            .map_err(err)?;
        std::thread::Builder::new()
            .spawn(move || pump(master, stdout))
            .map_err(err)
    }
}

/// Makes sure fds 0-2 are taken (by /dev/null when the kernel gave init no console),
/// so files opened later never land on them.
fn reserve_low_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD only queries the fd.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            // SAFETY: valid path; the new fd is the lowest free one, i.e. `fd`.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// Whether the workload's exec succeeded: the end of `exec_pipe`'s read end (the workload's
/// write end closed at its exec, init's own already), not a byte (the child failed first).
fn exec_succeeded(mut exec_pipe: fs::File) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match io::Read::read(&mut exec_pipe, &mut byte) {
            Ok(n) => return n == 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

fn run(port: &mut Port) -> Result<(u8, Option<fs::File>), String> {
    mount_all()?;
    reserve_low_fds();
    if !port.is_direct() {
        *port = std::mem::replace(port, Port::None).or_uart();
        port.phase(PHASE_INIT_START);
    }
    let raw = fs::read(SPEC_PATH).map_err(|e| format!("cannot read {SPEC_PATH}: {e}"))?;
    let spec = Spec::decode(&raw).map_err(|e| e.to_string())?;
    let boot = parse_cmdline(&fs::read_to_string("/proc/cmdline").unwrap_or_default());
    // The UART console, when it carries the workload's stdio, is opened before the switch: a
    // bundle's /dev has no node for it (as the exit port's stream above).
    let uart_console = if boot.virtio_stdio {
        None
    } else {
        Some(open_raw_tty(CONSOLE)?)
    };
    if let Some(dev) = &boot.root {
        switch_to_disk(dev)?;
    } else if let Some(root) = &spec.root {
        switch_to_bundle(root)?;
    }
    make_disk_nodes(&boot.disk_nodes)?;
    mount_shares(&boot.shares)?;
    loopback_up()?;
    if let Some(n) = &boot.net {
        let args = isol_guest_init::net::NetArgs::parse(n).ok_or_else(|| {
            format!("isol.net={n} is not ADDRESS/PREFIX,GATEWAY; this is a bug in the VMM")
        })?;
        isol_guest_init::net::configure(&args)?;
    }
    write_sysctls(&spec.oci.sysctl)?;
    set_names(&spec.hostname, &spec.oci.domainname)?;
    isol_guest_init::etc::write_etc_files(std::path::Path::new("/"), &spec.etc_files)?;
    let cgroup = WorkloadCgroup::setup(&spec.limits)?;
    let mut relay = None;
    let mut port_relay = None;
    let (stdio, console) = if boot.virtio_stdio && boot.tty {
        let mut ports =
            open_stdio_ports([STDIO_PORTS[0], STDIO_PORTS[1], STDIO_PORTS[2], TTY_PORT])?;
        let (master, slave) = open_pty()?;
        // The initial size comes first on the control port, before the workload runs.
        if let Some(line) = read_line(&mut ports[3]) {
            set_winsize(&master, &line);
        }
        let slave = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&slave)
            .map_err(|e| format!("cannot open {slave}: {e}"))?;
        relay = Some(Relay { master, ports });
        (Stdio::Pty(slave), None)
    } else if boot.virtio_stdio {
        let (workload, r) = PortRelay::new(open_stdio_ports(STDIO_PORTS)?)?;
        port_relay = Some(r);
        (Stdio::Pipes(workload), None)
    } else {
        let c = uart_console.ok_or("no console: this is a bug in isol-init")?;
        (
            Stdio::Tty(c.try_clone().map_err(|e| e.to_string())?),
            Some(c),
        )
    };
    // Last, once init has written what it writes below /proc and /sys; the workload (and
    // `isol exec`'s processes) inherit the masks in the mount namespace they make.
    mask_paths(&spec.oci.masked_paths, &spec.oci.readonly_paths)?;
    port.phase(PHASE_SPEC_LOADED);
    // Tells init whether the workload's exec succeeded (`exec_succeeded`).
    let (exec_r, exec_w) = pipe()?;

    // SAFETY: single-threaded process; the child only calls async-signal-safe functions
    // and exec (allocation in the child is fine: no other thread can hold the lock).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("cannot fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(exec_r);
        child(&spec, cgroup.as_ref(), &stdio, port, true, Some(&exec_w));
    }
    drop(exec_w);
    WORKLOAD_PID.store(pid, std::sync::atomic::Ordering::SeqCst);
    // Our copies of the ports must not keep them open (a port allows one opener), nor
    // ours of the pty slave (the master would never see the workload hang up).
    drop(stdio);
    // Kept for `isol exec`'s processes, which join it as the workload did.
    if let Some(c) = cgroup {
        let _ = WORKLOAD_CGROUP.set(c);
    }
    let mut output = match relay {
        Some(r) => vec![r.start()?],
        None => Vec::new(),
    };
    if let Some(r) = port_relay {
        output.extend(r.start()?);
    }
    if boot.control {
        // `isol exec`: a failure to serve it is no reason to fail the workload.
        if let Err(e) = open_port(isol_guest_init::control::PORT_NAME)
            .and_then(|p| exec::start(p, spec.clone(), port.is_direct()))
        {
            log(&format!("isol exec will not work in this VM: {e}"));
        }
    }
    // `isol-runc start` returns on this phase, as runc's returns once its workload was exec'd.
    if exec_succeeded(exec_r) {
        port.phase(PHASE_WORKLOAD_RUNNING);
    }
    let status = wait_workload(pid);
    exec::workload_ended();
    port.phase(PHASE_WORKLOAD_EXIT);
    kill_and_reap_all();
    for t in output {
        let _ = t.join();
    }
    Ok((status, console))
}

fn power_off(port: &Port) -> ! {
    // SAFETY: sync has no arguments.
    unsafe { libc::sync() };
    // Everything is on the disks: the VMM can stop the VM here. The kernel's reboot path
    // (device shutdown, I/O APIC teardown: hundreds of exits) is only the fallback.
    port.out(POWER_OFF_PORT, POWER_OFF);
    // SAFETY: reboot with a valid command; PID 1 has CAP_SYS_BOOT.
    unsafe { libc::reboot(libc::RB_AUTOBOOT) };
    log(&format!("reboot failed: {}", io::Error::last_os_error()));
    loop {
        // SAFETY: pause just sleeps until a signal.
        unsafe { libc::pause() };
    }
}

fn main() {
    if std::process::id() != 1 {
        eprintln!(
            "isol-guest-init is PID 1 inside an isol microVM; it is not meant to be run directly"
        );
        std::process::exit(2);
    }
    let mut port = Port::direct();
    port.phase(PHASE_INIT_START);
    let status = match run(&mut port) {
        Ok((status, console)) => {
            if let Some(c) = console {
                // Let the UART finish sending the workload's last bytes before reset.
                // SAFETY: valid tty fd.
                unsafe { libc::tcdrain(c.as_raw_fd()) };
            }
            status
        }
        Err(msg) => {
            log(&msg);
            EXIT_SETUP_FAILED
        }
    };
    port.out(EXIT_STATUS_PORT, status);
    power_off(&port);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_errors_map_to_shell_statuses() {
        assert_eq!(exec_status(libc::ENOENT), 127);
        assert_eq!(exec_status(libc::ENOTDIR), 127);
        assert_eq!(exec_status(libc::EACCES), 126);
        assert_eq!(exec_status(libc::ENOEXEC), 126);
    }

    #[test]
    fn boot_args_come_from_the_cmdline() {
        let a = parse_cmdline("console=ttyS0 isol.root=/dev/vda quiet isol.stdio=virtio\n");
        assert_eq!(a.root.as_deref(), Some("/dev/vda"));
        assert!(a.virtio_stdio && !a.tty);
        assert!(parse_cmdline("isol.stdio=virtio isol.tty=1").tty);
        let a = parse_cmdline("isol.disk=0:2f612062 isol.disk=1:zz isol.disk=2:2f78");
        assert_eq!(
            a.disk_nodes,
            vec![(0, b"/a b".to_vec()), (2, b"/x".to_vec())]
        );
        assert_eq!(parse_cmdline("console=ttyS0"), BootArgs::default());
        let a = parse_cmdline("quiet isol.net=10.88.0.2/24,10.88.0.1 isol.stdio=virtio");
        assert_eq!(a.net.as_deref(), Some("10.88.0.2/24,10.88.0.1"));
        // Tag "fs0", /a b; then a bad mode, a relative path and a bad hex are ignored.
        let a = parse_cmdline(
            "isol.fs=667330:ro:2f612062 isol.fs=667330:rx:2f61 isol.fs=667330:rw:61 isol.fs=6:rw:2f",
        );
        assert_eq!(
            a.shares,
            vec![Share {
                tag: "fs0".into(),
                read_only: true,
                path: b"/a b".to_vec()
            }]
        );
    }

    #[test]
    fn cstr_rejects_nul() {
        assert!(cstr(b"a\0b").is_err());
        assert_eq!(cstr(b"a b").unwrap().as_bytes(), b"a b");
    }

    #[test]
    fn exit_port_constants_match_the_vmm_side() {
        assert_eq!(u64::from(EXIT_STATUS_PORT), 0x4f0);
        assert_eq!(PHASE_PORT, EXIT_STATUS_PORT + 1);
    }
}
