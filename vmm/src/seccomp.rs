//! Seccomp filters for the VMM's threads, one allow-list per kind of thread (Firecracker's
//! model): what each thread may ask of the kernel once the guest can run.
//!
//! The lists ([`ThreadKind::rules`]) name every syscall a thread of that kind makes after its
//! filter is in place, each with why; `ioctl` is checked by request number (`KVM_RUN` on a vCPU,
//! the two registrations of the late-I/O thread, …), `mmap` and `mprotect` never make memory
//! executable. Anything else **traps**: [`on_sigsys`] writes one line to stderr — which thread,
//! which syscall (number, name, first two arguments) — restores the terminal `-t -i` put in raw
//! mode, and ends the whole VMM with status 125. The lists are compiled once per VM by
//! [`Filters::build`] (seccompiler, tens of microseconds) and each thread installs its own,
//! on itself, before it does any of its work ([`Filters::apply`]).
//!
//! A thread inherits the filter of the thread that creates it and filters stack (a syscall must
//! pass every one), so the order matters: the main thread, whose list is the shortest after the
//! setup, installs its filter last, after it has started every other thread, and the vCPUs wait
//! for it before their first `KVM_RUN` ([`crate::event_loop::run_vm`]). Nothing a filtered thread
//! does creates a thread.
//!
//! `VmConfig::seccomp` says who is filtered: nobody ([`Seccomp::Off`], `ISOL_VMM_SECCOMP=off`),
//! the VMM's own threads ([`Seccomp::Threads`], for a caller whose process goes on after the VM:
//! tests, `isol bench`, isol without `isol-vmm`), or those and the calling thread, which runs the
//! event loop ([`Seccomp::Process`], `isol-vmm`). See docs/vmm.md, "Seccomp".

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Once};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the VMM's seccomp filters are written for x86_64");

/// Who gets a filter ([`crate::VmConfig::seccomp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Seccomp {
    /// Nobody: `ISOL_VMM_SECCOMP=off`.
    Off,
    /// The threads the VMM starts (vCPUs, device thread, console writers, boot helpers), not the
    /// calling thread: its process goes on after the VM (tests, `isol bench`, isol without
    /// `isol-vmm`), which no list can foresee.
    #[default]
    Threads,
    /// Those and the calling thread, which runs the event loop: a process that exits after
    /// this VM (`isol-vmm`).
    Process,
}

/// The kinds of the VMM's threads, each with its own list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThreadKind {
    /// The thread that called `run`: the event loop, then the teardown and the report.
    Main,
    /// A vCPU thread (`isol-vcpuN`).
    Vcpu,
    /// The virtio device thread (`isol-virtio`): queues, disk I/O, console input.
    Virtio,
    /// A console output writer (`isol-stdout`, `isol-stderr`).
    ConsoleOutput,
    /// The boot-set thread (`isol-prefault`): faults guest RAM in, records the boot profile.
    BootSet,
    /// The thread registering the virtio ioeventfds and batching zones (`isol-late-io`).
    LateIo,
    /// `-t`'s window-size thread (`isol-winsize`).
    Winsize,
    /// The exec channel's thread (`isol-control`: `control.rs`).
    Control,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 8] = [
        ThreadKind::Main,
        ThreadKind::Vcpu,
        ThreadKind::Virtio,
        ThreadKind::ConsoleOutput,
        ThreadKind::BootSet,
        ThreadKind::LateIo,
        ThreadKind::Winsize,
        ThreadKind::Control,
    ];

    /// Its name in messages and in `ISOL_VMM_SECCOMP=test-violation:NAME`.
    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Main => "main",
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Virtio => "virtio",
            ThreadKind::ConsoleOutput => "console-output",
            ThreadKind::BootSet => "boot-set",
            ThreadKind::LateIo => "late-io",
            ThreadKind::Winsize => "winsize",
            ThreadKind::Control => "control",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The syscalls this kind makes beyond [`COMMON`], with their argument checks.
    fn rules(self) -> Vec<(i64, Vec<SeccompRule>)> {
        use libc::*;
        let any = |nr: c_long| (nr, Vec::new());
        match self {
            ThreadKind::Main => vec![
                // The event loop: epoll on the reset, vCPU-stop and signal eventfds and stdin.
                any(SYS_epoll_wait),
                any(SYS_epoll_pwait),
                // Stops watching a stdin at EOF.
                any(SYS_epoll_ctl),
                // Eventfds and stdin (forwarded to the UART).
                any(SYS_read),
                // Kicks the vCPUs out of KVM_RUN (pthread_kill: tgkill to getpid's process).
                any(SYS_tgkill),
                any(SYS_getpid),
                // Puts the SIGINT/SIGTERM dispositions back after the VM.
                any(SYS_rt_sigaction),
                // Without a jail, isol-vmm reaps the virtiofsds of `-v DIR:DIR` after the VM
                // (`launch::end_backends`): waits, and kills one that hangs.
                any(SYS_wait4),
                any(SYS_kill),
                any(SYS_nanosleep),
                any(SYS_clock_nanosleep),
            ],
            ThreadKind::Vcpu => vec![
                (
                    SYS_ioctl,
                    ioctls(&[
                        KVM_RUN,
                        // The registers after a triple fault or a failed entry.
                        KVM_GET_REGS,
                        KVM_GET_SREGS,
                        // Parked for a pause: the guest's kvmclock told (vstate::pause).
                        KVM_KVMCLOCK_CTRL,
                    ]),
                ),
                // The console's control queue is served on the vCPU (the guest spins on it);
                // a port just opened gets its pending stdin then.
                any(SYS_read),
                // The UART's output waits for room on a non-blocking stdout (FdWriter).
                any(SYS_poll),
                any(SYS_ppoll),
                // virtio-fs: the vhost-user requests of the driver's DRIVER_OK and reset (the
                // memory table and the rings' eventfds go as SCM_RIGHTS) and their replies.
                any(SYS_sendmsg),
                any(SYS_recvmsg),
            ],
            ThreadKind::Virtio => vec![
                // Its event manager: queue ioeventfds, stdin, the -t window-size pipe.
                any(SYS_epoll_wait),
                any(SYS_epoll_pwait),
                any(SYS_epoll_ctl),
                // Eventfds, stdin, the window-size pipe.
                any(SYS_read),
                // virtio-blk: IN, OUT and FLUSH requests.
                any(SYS_pread64),
                any(SYS_pwrite64),
                any(SYS_fdatasync),
                // virtio-net: one frame per readv/writev between the tap and guest memory.
                any(SYS_readv),
                any(SYS_writev),
                // virtio-net: the offloads the driver accepted, set on the tap before the
                // next read (the driver's DRIVER_OK comes on a vCPU thread, which has no
                // such ioctl).
                (
                    SYS_ioctl,
                    ioctls(&[isol_devices::virtio::net::tap::TUNSETOFFLOAD]),
                ),
            ],
            ThreadKind::ConsoleOutput => vec![
                // Waits for room on a non-blocking stdout/stderr (FdWriter).
                any(SYS_poll),
                any(SYS_ppoll),
            ],
            ThreadKind::BootSet => vec![
                // Faults guest RAM in (MADV_POPULATE_WRITE, in COMMON's madvise), reads what is
                // resident, waits for the first vCPU entry.
                any(SYS_mincore),
                any(SYS_nanosleep),
                any(SYS_clock_nanosleep),
                // Stores the profile: create the directory, write a temporary file named by
                // the pid, rename it, prune the directory (list, stat, unlink).
                any(SYS_getpid),
                any(SYS_mkdir),
                any(SYS_mkdirat),
                any(SYS_openat),
                any(SYS_statx),
                any(SYS_newfstatat),
                any(SYS_fstat),
                any(SYS_getdents64),
                any(SYS_rename),
                any(SYS_renameat),
                any(SYS_renameat2),
                any(SYS_unlink),
                any(SYS_unlinkat),
            ],
            ThreadKind::LateIo => vec![(
                SYS_ioctl,
                ioctls(&[KVM_IOEVENTFD, KVM_REGISTER_COALESCED_MMIO]),
            )],
            ThreadKind::Winsize => vec![
                // sigwait for SIGWINCH.
                any(SYS_rt_sigtimedwait),
                // The terminal's size (TIOCGWINSZ on stdin).
                (
                    SYS_ioctl,
                    vec![fd_ioctl(STDIN_FILENO as u64, libc::TIOCGWINSZ)],
                ),
            ],
            ThreadKind::Control => vec![
                // Waits on the listening socket, its clients and the console port's socket.
                any(SYS_poll),
                any(SYS_ppoll),
                // Takes a client (non-blocking, close-on-exec: no fcntl).
                any(SYS_accept4),
                // Reads frames; sends them without SIGPIPE (send: sendto).
                any(SYS_read),
                any(SYS_sendto),
            ],
        }
    }
}

/// The calls glibc makes on every thread of the process when one of them changes its ids
/// (its `setxid` signal): a jailed VMM drops to an unprivileged user once the VM is built
/// (`VmConfig::before_guest`), while every thread started before (boot set, late I/O,
/// console writers, vCPUs waiting for their start, `-t`'s window-size thread) already runs
/// under its filter. Only an empty group list; the ids are whatever the jail chose
/// (a thread without `CAP_SETUID` cannot change them to anything else). glibc's handler
/// checks the signal came from its own process first (`getpid`).
fn setxid() -> Vec<(i64, Vec<SeccompRule>)> {
    vec![
        (libc::SYS_getpid, Vec::new()),
        (
            libc::SYS_setgroups,
            vec![rule(vec![cond(0, SeccompCmpOp::Eq, 0)])],
        ),
        (libc::SYS_setresgid, Vec::new()),
        (libc::SYS_setresuid, Vec::new()),
    ]
}

// ioctl request numbers: _IOC(dir, 0xAE, nr, size).
const fn kvm_ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xAE << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const KVM_RUN: u64 = kvm_ioc(0, 0x80, 0);
const KVM_GET_REGS: u64 = kvm_ioc(IOC_READ, 0x81, size_of::<kvm_bindings::kvm_regs>());
const KVM_GET_SREGS: u64 = kvm_ioc(IOC_READ, 0x83, size_of::<kvm_bindings::kvm_sregs>());
const KVM_KVMCLOCK_CTRL: u64 = kvm_ioc(0, 0xad, 0);
const KVM_IOEVENTFD: u64 = kvm_ioc(IOC_WRITE, 0x79, size_of::<kvm_bindings::kvm_ioeventfd>());
const KVM_REGISTER_COALESCED_MMIO: u64 = kvm_ioc(
    IOC_WRITE,
    0x67,
    size_of::<kvm_bindings::kvm_coalesced_mmio_zone>(),
);

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).expect("argument index below 6")
}

fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
    SeccompRule::new(conditions).expect("a rule with conditions")
}

/// `ioctl` with one of `requests`, on any fd.
fn ioctls(requests: &[u64]) -> Vec<SeccompRule> {
    requests
        .iter()
        .map(|r| rule(vec![cond(1, SeccompCmpOp::Eq, *r)]))
        .collect()
}

/// `ioctl(fd, request, …)`.
fn fd_ioctl(fd: u64, request: u64) -> SeccompRule {
    rule(vec![
        cond(0, SeccompCmpOp::Eq, fd),
        cond(1, SeccompCmpOp::Eq, request),
    ])
}

/// What every thread needs: memory, locks, signals, its own end, and the trap handler's line.
fn common() -> Vec<(i64, Vec<SeccompRule>)> {
    use libc::*;
    let any = |nr: c_long| (nr, Vec::new());
    let no_exec = || {
        vec![rule(vec![cond(
            2,
            SeccompCmpOp::MaskedEq(PROT_EXEC as u64),
            0,
        )])]
    };
    vec![
        // Mutexes, condition variables, channels, joins.
        any(SYS_futex),
        // Channels back off by yielding.
        any(SYS_sched_yield),
        // The allocator (glibc malloc: brk, mmap, its arenas' mprotect, trims), thread stacks
        // freed at the end (madvise); never executable memory.
        any(SYS_brk),
        (SYS_mmap, no_exec()),
        (SYS_mprotect, no_exec()),
        any(SYS_munmap),
        any(SYS_mremap),
        any(SYS_madvise),
        // Eventfds (irqfds, wake-ups), the UART's and consoles' output, log lines on stderr,
        // the SIGINT/SIGTERM handler (any thread may take it) and the trap handler's line.
        any(SYS_write),
        // Descriptors the thread owns going away (a vCPU's fd, a writer's stdout copy); Rust
        // checks that one is open before it closes it (fcntl F_GETFD, debug builds).
        any(SYS_close),
        (
            SYS_fcntl,
            vec![rule(vec![cond(1, SeccompCmpOp::Eq, F_GETFD as u64)])],
        ),
        // Signal handlers return (the vCPU kick, SIGINT/SIGTERM), syscalls they interrupted
        // restart; glibc masks signals around a thread's end.
        any(SYS_rt_sigreturn),
        any(SYS_restart_syscall),
        any(SYS_rt_sigprocmask),
        // Rust's stack-overflow handler is taken down at a thread's end.
        any(SYS_sigaltstack),
        // The clock (normally the vDSO), HashMap keys.
        any(SYS_clock_gettime),
        any(SYS_getrandom),
        // glibc's malloc sizes its arena limit by the CPUs a thread may use, on a thread's
        // first allocation once there are more than 8 arenas.
        any(SYS_sched_getaffinity),
        // A thread's end, the process's end (and the trap handler's exit).
        any(SYS_exit),
        any(SYS_exit_group),
        // The terminal put back as it was (tcsetattr on stdin, which glibc 2.36 follows with
        // a TCGETS to check what the kernel took): by the main thread after the VM, by the
        // trap handler on whatever thread it runs.
        (
            SYS_ioctl,
            vec![
                fd_ioctl(STDIN_FILENO as u64, libc::TCSETS),
                fd_ioctl(STDIN_FILENO as u64, libc::TCGETS),
            ],
        ),
    ]
    .into_iter()
    .chain(setxid())
    .collect()
}

/// Errors compiling or installing a filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// seccompiler refused a list (a bug in this module).
    #[error(
        "Cannot compile the VMM's seccomp filter for its {kind} threads: {msg}; this is a bug, set ISOL_VMM_SECCOMP=off to run without it and report it"
    )]
    Compile {
        /// Which list.
        kind: &'static str,
        /// Why.
        msg: String,
    },
    /// The trap handler could not be installed.
    #[error(
        "Cannot install the VMM's SIGSYS handler: {0}; set ISOL_VMM_SECCOMP=off to run without seccomp filters"
    )]
    Handler(std::io::Error),
    /// The kernel refused a filter (no CONFIG_SECCOMP_FILTER, …).
    #[error(
        "Cannot install the seccomp filter of the VMM's {kind} thread: {msg}; the host kernel needs seccomp filters (CONFIG_SECCOMP_FILTER), or set ISOL_VMM_SECCOMP=off to run without them"
    )]
    Install {
        /// Which thread.
        kind: &'static str,
        /// Why.
        msg: String,
    },
    /// A bad `ISOL_VMM_SECCOMP`.
    #[error(
        "ISOL_VMM_SECCOMP={0:?} is neither on nor off; unset it, or set it to off to run the VMM without seccomp filters"
    )]
    Setting(String),
}

/// The environment variable isol reads (the VMM reads no environment: isol puts what it says
/// in the launch description).
pub const ENV: &str = "ISOL_VMM_SECCOMP";

/// What `ISOL_VMM_SECCOMP` says: whether the filters are on, and the test-only
/// `test-violation:KIND`, which makes a thread of KIND make one forbidden syscall right after
/// installing its filter (the lab tests' way to see the trap end a VM; not for users).
pub fn parse_setting(value: Option<&str>) -> Result<(bool, Option<ThreadKind>), SeccompError> {
    let Some(v) = value.map(str::trim) else {
        return Ok((true, None));
    };
    match v {
        "" | "on" | "1" | "true" => Ok((true, None)),
        "off" | "0" | "false" => Ok((false, None)),
        _ => v
            .strip_prefix("test-violation:")
            .and_then(|k| ThreadKind::ALL.into_iter().find(|t| t.name() == k))
            .map(|k| (true, Some(k)))
            .ok_or_else(|| SeccompError::Setting(v.to_owned())),
    }
}

/// The compiled filters, one per [`ThreadKind`] (a clone shares them).
#[derive(Debug, Clone)]
pub struct Filters {
    programs: Arc<[BpfProgram]>,
    violation: Option<ThreadKind>,
}

impl Filters {
    /// Compiles every list and installs the process's SIGSYS handler. `violation`: the
    /// test-only forbidden call ([`parse_setting`]).
    pub fn build(violation: Option<ThreadKind>) -> Result<Filters, SeccompError> {
        install_handler()?;
        keep_heaps();
        let mut programs = Vec::with_capacity(ThreadKind::ALL.len());
        for kind in ThreadKind::ALL {
            let compile_err = |e: &dyn std::fmt::Display| SeccompError::Compile {
                kind: kind.name(),
                msg: e.to_string(),
            };
            // None: allowed with any arguments, which wins over argument checks.
            let mut merged: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
            for (nr, r) in common().into_iter().chain(kind.rules()) {
                let entry = merged.entry(nr).or_insert_with(|| Some(Vec::new()));
                match (entry.as_mut(), r.is_empty()) {
                    (_, true) => *entry = None,
                    (Some(list), false) => list.extend(r),
                    (None, false) => {}
                }
            }
            let rules = merged
                .into_iter()
                .map(|(nr, r)| (nr, r.unwrap_or_default()))
                .collect();
            let filter = SeccompFilter::new(
                rules,
                SeccompAction::Trap,
                SeccompAction::Allow,
                TargetArch::x86_64,
            )
            .map_err(|e| compile_err(&e))?;
            programs.push(BpfProgram::try_from(filter).map_err(|e| compile_err(&e))?);
        }
        Ok(Filters {
            programs: programs.into(),
            violation,
        })
    }

    /// The program of `kind`.
    pub fn program(&self, kind: ThreadKind) -> &BpfProgram {
        &self.programs[kind.index()]
    }

    /// Installs `kind`'s filter on the calling thread (for good).
    pub fn apply(&self, kind: ThreadKind) -> Result<(), SeccompError> {
        KIND.with(|k| k.set(Some(kind)));
        seccompiler::apply_filter(self.program(kind)).map_err(|e| SeccompError::Install {
            kind: kind.name(),
            msg: e.to_string(),
        })?;
        if self.violation == Some(kind) {
            // SAFETY: getppid takes no arguments and changes nothing; no list allows it.
            unsafe { libc::syscall(libc::SYS_getppid) };
        }
        Ok(())
    }

    /// [`Filters::apply`] on a thread that has nobody to return an error to: a thread that
    /// cannot be filtered must not run, so the VMM ends with one line and status 125.
    pub fn apply_or_exit(&self, kind: ThreadKind) {
        if let Err(e) = self.apply(kind) {
            eprintln!("isol: {e}");
            restore_terminal();
            // SAFETY: ends the process at once, as the trap handler does.
            unsafe { libc::_exit(125) };
        }
    }
}

/// Installs `kind`'s filter from `filters`, if any ([`Filters::apply_or_exit`]).
pub fn enter(filters: Option<&Filters>, kind: ThreadKind) {
    if let Some(f) = filters {
        f.apply_or_exit(kind);
    }
}

thread_local! {
    /// This thread's kind, for the trap handler's line.
    static KIND: Cell<Option<ThreadKind>> = const { Cell::new(None) };
}

/// The terminal attributes `-t -i` replaced ([`set_saved_terminal`]), for the trap handler.
static SAVED_TERMIOS: AtomicPtr<libc::termios> = AtomicPtr::new(std::ptr::null_mut());

/// Records the attributes to put back on stdin if a trap ends the VMM (`None`: the terminal
/// is as it was). The previous record is leaked: a few bytes per `-t -i` run.
pub fn set_saved_terminal(t: Option<libc::termios>) {
    let p = t.map_or(std::ptr::null_mut(), |t| Box::into_raw(Box::new(t)));
    SAVED_TERMIOS.store(p, Ordering::SeqCst);
}

fn restore_terminal() {
    let p = SAVED_TERMIOS.load(Ordering::SeqCst);
    if !p.is_null() {
        // SAFETY: `p` came from Box::into_raw and is never freed; tcsetattr is
        // async-signal-safe and only reads it.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, p) };
    }
}

/// glibc's `free` reads `/proc/sys/vm/overcommit_memory` the first time it shrinks the heap of
/// a thread's arena: an `open` no list allows, on any thread that frees memory. A trim
/// threshold above any such heap's size (64 MiB) means it never shrinks one; memory freed at
/// the top of a heap stays mapped for reuse, until the process ends. (The main heap's `brk`
/// is not trimmed either; large allocations are `mmap`s of their own and still go back.)
fn keep_heaps() {
    static KEEP: Once = Once::new();
    // SAFETY: mallopt only sets malloc's parameters, under its own lock.
    KEEP.call_once(|| unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    });
}

static HANDLER: Once = Once::new();

fn install_handler() -> Result<(), SeccompError> {
    let mut result = Ok(());
    HANDLER.call_once(|| {
        // SAFETY: sigaction is plain data; zeroed means no flags and an empty mask.
        let mut act: libc::sigaction = unsafe { std::mem::zeroed() };
        act.sa_sigaction = on_sigsys as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO;
        // SAFETY: a valid signal number and a live sigaction; the handler is async-signal-safe.
        if unsafe { libc::sigaction(libc::SIGSYS, &act, std::ptr::null_mut()) } != 0 {
            result = Err(SeccompError::Handler(std::io::Error::last_os_error()));
        }
    });
    result
}

/// A line built without allocating, for the trap handler.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn push(&mut self, s: &[u8]) {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn push_dec(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn push_hex(&mut self, v: u64) {
        let mut digits = [0u8; 16];
        let mut i = digits.len();
        let mut v = v;
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.push(b"0x");
        self.push(&digits[i..]);
    }
}

/// The trap's line: which thread, which syscall and its first two arguments.
fn violation_line(kind: Option<ThreadKind>, nr: i64, args: [u64; 2]) -> Line {
    let mut l = Line {
        buf: [0; 512],
        len: 0,
    };
    l.push(b"isol: the VMM's ");
    l.push(kind.map_or("unknown", ThreadKind::name).as_bytes());
    l.push(b" thread made a system call its seccomp filter forbids: ");
    match usize::try_from(nr).ok().and_then(|i| SYSCALL_NAMES.get(i)) {
        Some(name) if !name.is_empty() => l.push(name.as_bytes()),
        _ => l.push(b"syscall"),
    }
    l.push(b" (");
    l.push_dec(nr as u64);
    l.push(b", arguments ");
    l.push_hex(args[0]);
    l.push(b", ");
    l.push_hex(args[1]);
    l.push(b"); this is a bug in isol's seccomp filter for the VMM; set ISOL_VMM_SECCOMP=off to run without it and report it\n");
    l
}

/// SIGSYS from a filter's trap: one line on stderr, the terminal back, status 125. Only
/// async-signal-safe calls (write, tcsetattr, _exit), which every list allows.
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // The `_sigsys` member of the siginfo union: `void *_call_addr; int _syscall; …` at
    // offset 16 (after si_signo, si_errno, si_code and padding).
    // SAFETY: the kernel passes a valid siginfo_t (128 bytes) for a SA_SIGINFO handler, so
    // offset 24 is inside it.
    let at = unsafe { info.cast::<u8>().add(24) };
    // SAFETY: SIGSYS from seccomp fills `_sigsys`, whose `_syscall` is at offset 24.
    let nr = unsafe { at.cast::<libc::c_int>().read_unaligned() };
    let args = if ctx.is_null() {
        [0; 2]
    } else {
        // SAFETY: a SA_SIGINFO handler's third argument is the thread's ucontext_t.
        let regs = unsafe { &(*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs };
        [
            regs[libc::REG_RDI as usize] as u64,
            regs[libc::REG_RSI as usize] as u64,
        ]
    };
    // One line per process: where two threads trap at once (the console writers of stdout
    // and stderr), the second waits for the first's _exit, which ends it too.
    static REPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if REPORTING.swap(true, std::sync::atomic::Ordering::SeqCst) {
        loop {
            std::hint::spin_loop();
        }
    }
    let kind = KIND.with(|k| k.get());
    let line = violation_line(kind, i64::from(nr), args);
    let mut done = 0;
    while done < line.len {
        // SAFETY: write(2) is async-signal-safe; the buffer is live and `len` bounds it.
        let n = unsafe {
            libc::write(
                libc::STDERR_FILENO,
                line.buf[done..].as_ptr().cast(),
                line.len - done,
            )
        };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
    // After the line: a trap in here (SIGSYS is blocked in its own handler) kills the
    // process without one.
    restore_terminal();
    // SAFETY: ends the process at once (exit_group), async-signal-safe.
    unsafe { libc::_exit(125) };
}

/// x86_64 syscall names by number (asm/unistd_64.h), for the trap's line; "" where none.
#[rustfmt::skip]
const SYSCALL_NAMES: &[&str] = &[
    "read", "write", "open", "close", "stat", "fstat", "lstat", "poll", "lseek", "mmap",
    "mprotect", "munmap", "brk", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "ioctl",
    "pread64", "pwrite64", "readv", "writev", "access", "pipe", "select", "sched_yield",
    "mremap", "msync", "mincore", "madvise", "shmget", "shmat", "shmctl", "dup", "dup2",
    "pause", "nanosleep", "getitimer", "alarm", "setitimer", "getpid", "sendfile", "socket",
    "connect", "accept", "sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "bind",
    "listen", "getsockname", "getpeername", "socketpair", "setsockopt", "getsockopt", "clone",
    "fork", "vfork", "execve", "exit", "wait4", "kill", "uname", "semget", "semop", "semctl",
    "shmdt", "msgget", "msgsnd", "msgrcv", "msgctl", "fcntl", "flock", "fsync", "fdatasync",
    "truncate", "ftruncate", "getdents", "getcwd", "chdir", "fchdir", "rename", "mkdir",
    "rmdir", "creat", "link", "unlink", "symlink", "readlink", "chmod", "fchmod", "chown",
    "fchown", "lchown", "umask", "gettimeofday", "getrlimit", "getrusage", "sysinfo", "times",
    "ptrace", "getuid", "syslog", "getgid", "setuid", "setgid", "geteuid", "getegid",
    "setpgid", "getppid", "getpgrp", "setsid", "setreuid", "setregid", "getgroups",
    "setgroups", "setresuid", "getresuid", "setresgid", "getresgid", "getpgid", "setfsuid",
    "setfsgid", "getsid", "capget", "capset", "rt_sigpending", "rt_sigtimedwait",
    "rt_sigqueueinfo", "rt_sigsuspend", "sigaltstack", "utime", "mknod", "uselib",
    "personality", "ustat", "statfs", "fstatfs", "sysfs", "getpriority", "setpriority",
    "sched_setparam", "sched_getparam", "sched_setscheduler", "sched_getscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval", "mlock",
    "munlock", "mlockall", "munlockall", "vhangup", "modify_ldt", "pivot_root", "_sysctl",
    "prctl", "arch_prctl", "adjtimex", "setrlimit", "chroot", "sync", "acct", "settimeofday",
    "mount", "umount2", "swapon", "swapoff", "reboot", "sethostname", "setdomainname", "iopl",
    "ioperm", "create_module", "init_module", "delete_module", "get_kernel_syms",
    "query_module", "quotactl", "nfsservctl", "getpmsg", "putpmsg", "afs_syscall", "tuxcall",
    "security", "gettid", "readahead", "setxattr", "lsetxattr", "fsetxattr", "getxattr",
    "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr", "removexattr",
    "lremovexattr", "fremovexattr", "tkill", "time", "futex", "sched_setaffinity",
    "sched_getaffinity", "set_thread_area", "io_setup", "io_destroy", "io_getevents",
    "io_submit", "io_cancel", "get_thread_area", "lookup_dcookie", "epoll_create",
    "epoll_ctl_old", "epoll_wait_old", "remap_file_pages", "getdents64", "set_tid_address",
    "restart_syscall", "semtimedop", "fadvise64", "timer_create", "timer_settime",
    "timer_gettime", "timer_getoverrun", "timer_delete", "clock_settime", "clock_gettime",
    "clock_getres", "clock_nanosleep", "exit_group", "epoll_wait", "epoll_ctl", "tgkill",
    "utimes", "vserver", "mbind", "set_mempolicy", "get_mempolicy", "mq_open", "mq_unlink",
    "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr", "kexec_load", "waitid",
    "add_key", "request_key", "keyctl", "ioprio_set", "ioprio_get", "inotify_init",
    "inotify_add_watch", "inotify_rm_watch", "migrate_pages", "openat", "mkdirat", "mknodat",
    "fchownat", "futimesat", "newfstatat", "unlinkat", "renameat", "linkat", "symlinkat",
    "readlinkat", "fchmodat", "faccessat", "pselect6", "ppoll", "unshare", "set_robust_list",
    "get_robust_list", "splice", "tee", "sync_file_range", "vmsplice", "move_pages",
    "utimensat", "epoll_pwait", "signalfd", "timerfd_create", "eventfd", "fallocate",
    "timerfd_settime", "timerfd_gettime", "accept4", "signalfd4", "eventfd2", "epoll_create1",
    "dup3", "pipe2", "inotify_init1", "preadv", "pwritev", "rt_tgsigqueueinfo",
    "perf_event_open", "recvmmsg", "fanotify_init", "fanotify_mark", "prlimit64",
    "name_to_handle_at", "open_by_handle_at", "clock_adjtime", "syncfs", "sendmmsg", "setns",
    "getcpu", "process_vm_readv", "process_vm_writev", "kcmp", "finit_module", "sched_setattr",
    "sched_getattr", "renameat2", "seccomp", "getrandom", "memfd_create", "kexec_file_load",
    "bpf", "execveat", "userfaultfd", "membarrier", "mlock2", "copy_file_range", "preadv2",
    "pwritev2", "pkey_mprotect", "pkey_alloc", "pkey_free", "statx", "io_pgetevents", "rseq",
    "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "",
    "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "",
    "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "",
    "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "", "",
    "pidfd_send_signal", "io_uring_setup", "io_uring_enter", "io_uring_register", "open_tree",
    "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "pidfd_open", "clone3",
    "close_range", "openat2", "pidfd_getfd", "faccessat2", "process_madvise", "epoll_pwait2",
    "mount_setattr", "quotactl_fd", "landlock_create_ruleset", "landlock_add_rule",
    "landlock_restrict_self", "memfd_secret", "process_mrelease", "futex_waitv",
    "set_mempolicy_home_node",
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    /// Runs `body` in a forked child with `kind`'s filter installed, stderr into a pipe;
    /// returns its exit status and what it wrote on stderr. The child only makes raw
    /// syscalls after the fork (the test process has other threads).
    fn in_child(filters: &Filters, kind: ThreadKind, body: impl FnOnce()) -> (i32, String) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the child runs only async-signal-safe code and raw syscalls, then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: in the child: stderr to the pipe.
            unsafe { libc::dup2(fds[1], libc::STDERR_FILENO) };
            KIND.with(|k| k.set(Some(kind)));
            if seccompiler::apply_filter(filters.program(kind)).is_err() {
                // SAFETY: ends the child.
                unsafe { libc::_exit(99) };
            }
            body();
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: the write end is ours; the child has its copy.
        unsafe { libc::close(fds[1]) };
        let mut err = String::new();
        // SAFETY: the read end, owned from here.
        let mut r = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        r.read_to_string(&mut err).unwrap();
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status),
            "child died of a signal: {status:#x}"
        );
        (libc::WEXITSTATUS(status), err)
    }

    fn raw(nr: libc::c_long, a: u64, b: u64, c: u64) -> libc::c_long {
        // SAFETY: the calls the tests make are harmless with these arguments (bad fds,
        // null pointers where the kernel checks them).
        unsafe { libc::syscall(nr, a, b, c) }
    }

    fn filters() -> Filters {
        Filters::build(None).unwrap()
    }

    #[test]
    fn every_list_compiles_small_and_fast() {
        let t = std::time::Instant::now();
        let f = filters();
        let took = t.elapsed();
        for kind in ThreadKind::ALL {
            let len = f.program(kind).len();
            assert!(len > 20 && len < 400, "{kind:?}: {len} instructions");
        }
        assert!(took.as_millis() < 50, "{took:?}");
    }

    #[test]
    fn ioctl_numbers_are_the_kernel_s() {
        // From <linux/kvm.h> as compiled by the kernel (strace -e ioctl shows the same).
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
        assert_eq!(KVM_KVMCLOCK_CTRL, 0xaead);
        assert_eq!(KVM_IOEVENTFD, 0x4040_ae79);
        assert_eq!(KVM_REGISTER_COALESCED_MMIO, 0x4010_ae67);
        assert_eq!(SYSCALL_NAMES[libc::SYS_ioctl as usize], "ioctl");
        assert_eq!(SYSCALL_NAMES[libc::SYS_getppid as usize], "getppid");
        assert_eq!(SYSCALL_NAMES[libc::SYS_openat2 as usize], "openat2");
    }

    #[test]
    fn a_vcpu_may_run_kvm_but_not_other_ioctls_or_files() {
        let f = filters();
        // Allowed: KVM_RUN and the register reads (EBADF on fd -1, past the filter), write,
        // futex, anonymous memory, its end.
        let (code, err) = in_child(&f, ThreadKind::Vcpu, || {
            for req in [KVM_RUN, KVM_GET_REGS, KVM_GET_SREGS, KVM_KVMCLOCK_CTRL] {
                if raw(libc::SYS_ioctl, u64::MAX, req, 0) != -1 {
                    // SAFETY: ends the child.
                    unsafe { libc::_exit(3) };
                }
            }
            raw(libc::SYS_write, 2, b"ok".as_ptr() as u64, 2);
            let p = raw(
                libc::SYS_mmap,
                0,
                4096,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
            );
            let _ = p;
        });
        assert_eq!((code, err.as_str()), (0, "ok"));
        // Forbidden: another KVM ioctl (KVM_SET_REGS), an open, executable memory.
        let set_regs = kvm_ioc(IOC_WRITE, 0x82, size_of::<kvm_bindings::kvm_regs>());
        let (code, err) = in_child(&f, ThreadKind::Vcpu, || {
            raw(libc::SYS_ioctl, 7, set_regs, 0);
        });
        assert_eq!(code, 125);
        assert_eq!(
            err,
            format!(
                "isol: the VMM's vcpu thread made a system call its seccomp filter forbids: \
                 ioctl (16, arguments 0x7, {set_regs:#x}); this is a bug in isol's seccomp \
                 filter for the VMM; set ISOL_VMM_SECCOMP=off to run without it and report it\n"
            )
        );
        let (code, err) = in_child(&f, ThreadKind::Vcpu, || {
            raw(
                libc::SYS_openat,
                libc::AT_FDCWD as u64,
                c"/etc/passwd".as_ptr() as u64,
                0,
            );
        });
        assert_eq!(code, 125);
        assert!(
            err.contains("vcpu thread") && err.contains(": openat (257,"),
            "{err}"
        );
        let (code, err) = in_child(&f, ThreadKind::Vcpu, || {
            let anon = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
            // SAFETY: a fresh anonymous mapping, or the trap.
            unsafe {
                libc::syscall(
                    libc::SYS_mmap,
                    0,
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    anon,
                    -1,
                    0,
                )
            };
        });
        assert_eq!(code, 125);
        assert!(err.contains(": mmap (9,"), "{err}");
    }

    #[test]
    fn each_kind_allows_its_own_calls_and_traps_the_others() {
        let f = filters();
        let ioctl = |fd: u64, req: u64| {
            move || {
                raw(libc::SYS_ioctl, fd, req, 0);
            }
        };
        type Call = Box<dyn Fn()>;
        let allowed: Vec<(ThreadKind, Call)> = vec![
            (
                ThreadKind::Main,
                Box::new(|| {
                    raw(libc::SYS_epoll_wait, u64::MAX, 0, 0);
                    raw(libc::SYS_tgkill, 0, 0, 0);
                    raw(libc::SYS_read, u64::MAX, 0, 0);
                }),
            ),
            (ThreadKind::Main, Box::new(ioctl(0, libc::TCSETS))),
            (
                ThreadKind::Virtio,
                Box::new(|| {
                    raw(libc::SYS_pread64, u64::MAX, 0, 0);
                    raw(libc::SYS_pwrite64, u64::MAX, 0, 0);
                    raw(libc::SYS_fdatasync, u64::MAX, 0, 0);
                    raw(libc::SYS_epoll_ctl, u64::MAX, 0, 0);
                    raw(libc::SYS_readv, u64::MAX, 0, 0);
                    raw(libc::SYS_writev, u64::MAX, 0, 0);
                    raw(
                        libc::SYS_ioctl,
                        u64::MAX,
                        isol_devices::virtio::net::tap::TUNSETOFFLOAD,
                        0,
                    );
                }),
            ),
            (
                ThreadKind::ConsoleOutput,
                Box::new(|| {
                    raw(libc::SYS_poll, 0, 0, 0);
                }),
            ),
            (
                ThreadKind::BootSet,
                Box::new(|| {
                    raw(libc::SYS_mincore, 0, 0, 0);
                    raw(libc::SYS_renameat2, u64::MAX, 0, u64::MAX);
                    raw(libc::SYS_unlinkat, u64::MAX, 0, 0);
                }),
            ),
            (ThreadKind::LateIo, Box::new(ioctl(u64::MAX, KVM_IOEVENTFD))),
            (
                ThreadKind::LateIo,
                Box::new(ioctl(u64::MAX, KVM_REGISTER_COALESCED_MMIO)),
            ),
            (ThreadKind::Winsize, Box::new(ioctl(0, libc::TIOCGWINSZ))),
            (
                ThreadKind::Control,
                Box::new(|| {
                    raw(libc::SYS_poll, 0, 0, 0);
                    raw(libc::SYS_accept4, u64::MAX, 0, 0);
                    raw(libc::SYS_sendto, u64::MAX, 0, 0);
                }),
            ),
        ];
        for (kind, call) in allowed {
            let (code, err) = in_child(&f, kind, call);
            assert_eq!((code, err.as_str()), (0, ""), "{kind:?}");
        }
        let forbidden: Vec<(ThreadKind, Call, &str)> = vec![
            // The main thread creates no thread and runs no KVM ioctl once filtered.
            (
                ThreadKind::Main,
                Box::new(|| {
                    raw(libc::SYS_clone, 0, 0, 0);
                }),
                "clone",
            ),
            (ThreadKind::Main, Box::new(ioctl(3, KVM_RUN)), "ioctl"),
            // The device thread opens nothing, the late-I/O thread runs no vCPU.
            (
                ThreadKind::Virtio,
                Box::new(|| {
                    raw(libc::SYS_openat, 0, 0, 0);
                }),
                "openat",
            ),
            (ThreadKind::LateIo, Box::new(ioctl(3, KVM_RUN)), "ioctl"),
            // The exec channel's thread opens and connects nothing: its sockets are given.
            (
                ThreadKind::Control,
                Box::new(|| {
                    raw(libc::SYS_connect, u64::MAX, 0, 0);
                }),
                "connect",
            ),
            // TIOCGWINSZ only on stdin, TCSETS only on stdin.
            (
                ThreadKind::Winsize,
                Box::new(ioctl(1, libc::TIOCGWINSZ)),
                "ioctl",
            ),
            (
                ThreadKind::ConsoleOutput,
                Box::new(ioctl(1, libc::TCSETS)),
                "ioctl",
            ),
            (
                ThreadKind::ConsoleOutput,
                Box::new(|| {
                    raw(libc::SYS_socket, 1, 1, 0);
                }),
                "socket",
            ),
            (
                ThreadKind::BootSet,
                Box::new(|| {
                    raw(libc::SYS_execve, 0, 0, 0);
                }),
                "execve",
            ),
        ];
        for (kind, call, name) in forbidden {
            let (code, err) = in_child(&f, kind, call);
            assert_eq!(code, 125, "{kind:?} {name}: {err}");
            let want = format!(
                "the VMM's {} thread made a system call its seccomp filter forbids: {name} (",
                kind.name()
            );
            assert!(err.contains(&want) && err.lines().count() == 1, "{err}");
        }
    }

    #[test]
    fn the_test_violation_traps_right_after_the_filter() {
        let f = Filters::build(Some(ThreadKind::ConsoleOutput)).unwrap();
        // Other kinds make no violation.
        let (code, err) = in_child(&f, ThreadKind::Virtio, || {});
        assert_eq!((code, err.as_str()), (0, ""));
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: the child makes raw syscalls only, then _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: in the child.
            unsafe { libc::dup2(fds[1], libc::STDERR_FILENO) };
            f.apply_or_exit(ThreadKind::ConsoleOutput);
            // SAFETY: not reached: the violation ends the child with 125.
            unsafe { libc::_exit(0) };
        }
        // SAFETY: our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut err = String::new();
        // SAFETY: the read end, owned from here.
        unsafe { std::fs::File::from_raw_fd(fds[0]) }
            .read_to_string(&mut err)
            .unwrap();
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 125,
            "{status:#x}"
        );
        assert!(
            err.starts_with("isol: the VMM's console-output thread made a system call its seccomp filter forbids: getppid (110,"),
            "{err}"
        );
    }

    #[test]
    fn the_setting_is_on_off_or_a_test_violation() {
        assert_eq!(parse_setting(None).unwrap(), (true, None));
        assert_eq!(parse_setting(Some("off")).unwrap(), (false, None));
        assert_eq!(parse_setting(Some(" on ")).unwrap(), (true, None));
        assert_eq!(
            parse_setting(Some("test-violation:late-io")).unwrap(),
            (true, Some(ThreadKind::LateIo))
        );
        for bad in ["no", "test-violation:gpu", "test-violation:"] {
            let e = parse_setting(Some(bad)).unwrap_err().to_string();
            assert!(e.contains("neither on nor off") && !e.contains('\n'), "{e}");
        }
        for k in ThreadKind::ALL {
            let s = format!("test-violation:{}", k.name());
            assert_eq!(parse_setting(Some(&s)).unwrap().1, Some(k));
        }
    }

    #[test]
    fn the_line_is_one_line_for_any_number() {
        for nr in [0, 110, 334, 335, 450, 451, 100_000, -1] {
            let l = violation_line(Some(ThreadKind::Main), nr, [u64::MAX, 0]);
            let s = std::str::from_utf8(&l.buf[..l.len]).unwrap();
            assert_eq!(s.matches('\n').count(), 1, "{s}");
            assert!(s.ends_with("report it\n"), "{s}");
        }
        let l = violation_line(None, 335, [1, 2]);
        let s = std::str::from_utf8(&l.buf[..l.len]).unwrap();
        assert!(
            s.contains("unknown thread") && s.contains(": syscall (335, arguments 0x1, 0x2)"),
            "{s}"
        );
    }
}
