//! The container's seccomp filter, modelled on docker's default profile
//! (moby `profiles/seccomp/default.json`, as of docker 25+), for x86_64.
//!
//! Shape of the profile, as docker applies it to a container with the default capabilities
//! (no `CAP_SYS_ADMIN`, `CAP_SYS_PTRACE`, ...):
//!
//! * [`ALLOWED`]: syscalls allowed whatever their arguments — docker's unconditional list, plus
//!   `ptrace`/`process_vm_*` (docker allows them on kernels ≥ 4.8), `arch_prctl`/`modify_ldt`
//!   (x86) and `chroot` (granted with `CAP_SYS_CHROOT`, which is in the default set).
//! * Argument-checked: `clone` only without namespace flags ([`CLONE_NAMESPACE_FLAGS`]), `socket`
//!   for any family but `AF_VSOCK`, `personality` only with [`PERSONALITY_ALLOWED`].
//! * `clone3` fails with `ENOSYS`: its flags live in memory a filter cannot read, and `ENOSYS`
//!   makes glibc fall back to `clone`, where the namespace check applies.
//! * Any syscall newer than every syscall the profile names ([`HIGHEST_KNOWN`]) fails with
//!   `ENOSYS` rather than `EPERM`, as runc does, so that programs fall back from syscalls this
//!   profile predates instead of treating them as forbidden.
//! * Everything else fails with `EPERM`; [`DENIED`] lists the notable ones with the reason.
//! * A syscall made with another ABI (i386 `int 0x80`, x32) kills the process: the profile covers
//!   only the native x86_64 ABI. Docker also allows the i386 and x32 ABIs; 32-bit binaries are
//!   not supported in isol containers.
//!
//! Deliberate differences from docker: the `io_uring_*` syscalls are denied (as in docker 25+
//! and containerd), the 32-bit ABIs are refused, and `ENOSYS` for unknown syscalls is part of
//! the filter instead of a runc patch.
//!
//! [`default_filter`] compiles the profile in the parent (tens of microseconds; see the
//! `build_time` test): a binary search on the syscall number, then blocks of argument checks;
//! [`install`] loads it in the child with one `seccomp(2)` call. The program uses only the
//! syscall number and architecture for every syscall decided without its arguments, so
//! Linux ≥ 5.11 caches those as "always allow" and never runs the filter for them, and the short
//! search keeps that cache cheap to build at install time.
//!
//! A profile of the container's own ([`Profile`]: an OCI config's `linux.seccomp`, or docker's
//! JSON for `isol run --security-opt seccomp=FILE`) goes through the same compiler
//! ([`compile`]), with syscall numbers from the `syscalls` crate's x86_64 and i386 tables
//! (generated from the kernel's `syscall_64.tbl`/`syscall_32.tbl`, up to Linux 6.17), so that a
//! profile can name any syscall. seccompiler is not the compiler: its filters have one action
//! for every matching rule, and a profile gives each rule its own; isol uses its instruction
//! type and size check.

use std::str::FromStr;

use nix::errno::Errno;
use seccompiler::{BpfProgram, sock_filter};

use super::SecurityError;

pub mod profile;

pub use profile::{Action, Arg, Op, Profile, ProfileError, Rule};

#[cfg(not(target_arch = "x86_64"))]
compile_error!("isol's seccomp profile has a syscall table for x86_64 only");

/// A syscall the profile names: its name (as in `syscalls(2)`) and its x86_64 number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    pub name: &'static str,
    pub nr: i64,
}

const fn sc(name: &'static str, nr: libc::c_long) -> Syscall {
    Syscall { name, nr }
}

// x86_64 numbers of syscalls newer than libc's table (arch/x86/entry/syscalls/syscall_64.tbl).
const SYS_IO_PGETEVENTS: libc::c_long = 333;
const SYS_CACHESTAT: libc::c_long = 451;
const SYS_MAP_SHADOW_STACK: libc::c_long = 453;
const SYS_FUTEX_WAKE: libc::c_long = 454;
const SYS_FUTEX_WAIT: libc::c_long = 455;
const SYS_FUTEX_REQUEUE: libc::c_long = 456;

/// Syscalls allowed with any arguments.
pub const ALLOWED: &[Syscall] = &[
    sc("accept", libc::SYS_accept),
    sc("accept4", libc::SYS_accept4),
    sc("access", libc::SYS_access),
    sc("adjtimex", libc::SYS_adjtimex),
    sc("alarm", libc::SYS_alarm),
    sc("bind", libc::SYS_bind),
    sc("brk", libc::SYS_brk),
    sc("cachestat", SYS_CACHESTAT),
    sc("capget", libc::SYS_capget),
    sc("capset", libc::SYS_capset),
    sc("chdir", libc::SYS_chdir),
    sc("chmod", libc::SYS_chmod),
    sc("chown", libc::SYS_chown),
    sc("clock_adjtime", libc::SYS_clock_adjtime),
    sc("clock_getres", libc::SYS_clock_getres),
    sc("clock_gettime", libc::SYS_clock_gettime),
    sc("clock_nanosleep", libc::SYS_clock_nanosleep),
    sc("close", libc::SYS_close),
    sc("close_range", libc::SYS_close_range),
    sc("connect", libc::SYS_connect),
    sc("copy_file_range", libc::SYS_copy_file_range),
    sc("creat", libc::SYS_creat),
    sc("dup", libc::SYS_dup),
    sc("dup2", libc::SYS_dup2),
    sc("dup3", libc::SYS_dup3),
    sc("epoll_create", libc::SYS_epoll_create),
    sc("epoll_create1", libc::SYS_epoll_create1),
    sc("epoll_ctl", libc::SYS_epoll_ctl),
    sc("epoll_ctl_old", libc::SYS_epoll_ctl_old),
    sc("epoll_pwait", libc::SYS_epoll_pwait),
    sc("epoll_pwait2", libc::SYS_epoll_pwait2),
    sc("epoll_wait", libc::SYS_epoll_wait),
    sc("epoll_wait_old", libc::SYS_epoll_wait_old),
    sc("eventfd", libc::SYS_eventfd),
    sc("eventfd2", libc::SYS_eventfd2),
    sc("execve", libc::SYS_execve),
    sc("execveat", libc::SYS_execveat),
    sc("exit", libc::SYS_exit),
    sc("exit_group", libc::SYS_exit_group),
    sc("faccessat", libc::SYS_faccessat),
    sc("faccessat2", libc::SYS_faccessat2),
    sc("fadvise64", libc::SYS_fadvise64),
    sc("fallocate", libc::SYS_fallocate),
    sc("fanotify_mark", libc::SYS_fanotify_mark),
    sc("fchdir", libc::SYS_fchdir),
    sc("fchmod", libc::SYS_fchmod),
    sc("fchmodat", libc::SYS_fchmodat),
    sc("fchmodat2", libc::SYS_fchmodat2),
    sc("fchown", libc::SYS_fchown),
    sc("fchownat", libc::SYS_fchownat),
    sc("fcntl", libc::SYS_fcntl),
    sc("fdatasync", libc::SYS_fdatasync),
    sc("fgetxattr", libc::SYS_fgetxattr),
    sc("flistxattr", libc::SYS_flistxattr),
    sc("flock", libc::SYS_flock),
    sc("fork", libc::SYS_fork),
    sc("fremovexattr", libc::SYS_fremovexattr),
    sc("fsetxattr", libc::SYS_fsetxattr),
    sc("fstat", libc::SYS_fstat),
    sc("fstatfs", libc::SYS_fstatfs),
    sc("fsync", libc::SYS_fsync),
    sc("ftruncate", libc::SYS_ftruncate),
    sc("futex", libc::SYS_futex),
    sc("futex_requeue", SYS_FUTEX_REQUEUE),
    sc("futex_wait", SYS_FUTEX_WAIT),
    sc("futex_waitv", libc::SYS_futex_waitv),
    sc("futex_wake", SYS_FUTEX_WAKE),
    sc("futimesat", libc::SYS_futimesat),
    sc("getcpu", libc::SYS_getcpu),
    sc("getcwd", libc::SYS_getcwd),
    sc("getdents", libc::SYS_getdents),
    sc("getdents64", libc::SYS_getdents64),
    sc("getegid", libc::SYS_getegid),
    sc("geteuid", libc::SYS_geteuid),
    sc("getgid", libc::SYS_getgid),
    sc("getgroups", libc::SYS_getgroups),
    sc("getitimer", libc::SYS_getitimer),
    sc("getpeername", libc::SYS_getpeername),
    sc("getpgid", libc::SYS_getpgid),
    sc("getpgrp", libc::SYS_getpgrp),
    sc("getpid", libc::SYS_getpid),
    sc("getppid", libc::SYS_getppid),
    sc("getpriority", libc::SYS_getpriority),
    sc("getrandom", libc::SYS_getrandom),
    sc("getresgid", libc::SYS_getresgid),
    sc("getresuid", libc::SYS_getresuid),
    sc("getrlimit", libc::SYS_getrlimit),
    sc("get_robust_list", libc::SYS_get_robust_list),
    sc("getrusage", libc::SYS_getrusage),
    sc("getsid", libc::SYS_getsid),
    sc("getsockname", libc::SYS_getsockname),
    sc("getsockopt", libc::SYS_getsockopt),
    sc("get_thread_area", libc::SYS_get_thread_area),
    sc("gettid", libc::SYS_gettid),
    sc("gettimeofday", libc::SYS_gettimeofday),
    sc("getuid", libc::SYS_getuid),
    sc("getxattr", libc::SYS_getxattr),
    sc("inotify_add_watch", libc::SYS_inotify_add_watch),
    sc("inotify_init", libc::SYS_inotify_init),
    sc("inotify_init1", libc::SYS_inotify_init1),
    sc("inotify_rm_watch", libc::SYS_inotify_rm_watch),
    sc("io_cancel", libc::SYS_io_cancel),
    sc("ioctl", libc::SYS_ioctl),
    sc("io_destroy", libc::SYS_io_destroy),
    sc("io_getevents", libc::SYS_io_getevents),
    sc("io_pgetevents", SYS_IO_PGETEVENTS),
    sc("ioprio_get", libc::SYS_ioprio_get),
    sc("ioprio_set", libc::SYS_ioprio_set),
    sc("io_setup", libc::SYS_io_setup),
    sc("io_submit", libc::SYS_io_submit),
    sc("kill", libc::SYS_kill),
    sc("landlock_add_rule", libc::SYS_landlock_add_rule),
    sc("landlock_create_ruleset", libc::SYS_landlock_create_ruleset),
    sc("landlock_restrict_self", libc::SYS_landlock_restrict_self),
    sc("lchown", libc::SYS_lchown),
    sc("lgetxattr", libc::SYS_lgetxattr),
    sc("link", libc::SYS_link),
    sc("linkat", libc::SYS_linkat),
    sc("listen", libc::SYS_listen),
    sc("listxattr", libc::SYS_listxattr),
    sc("llistxattr", libc::SYS_llistxattr),
    sc("lremovexattr", libc::SYS_lremovexattr),
    sc("lseek", libc::SYS_lseek),
    sc("lsetxattr", libc::SYS_lsetxattr),
    sc("lstat", libc::SYS_lstat),
    sc("madvise", libc::SYS_madvise),
    sc("map_shadow_stack", SYS_MAP_SHADOW_STACK),
    sc("membarrier", libc::SYS_membarrier),
    sc("memfd_create", libc::SYS_memfd_create),
    sc("memfd_secret", libc::SYS_memfd_secret),
    sc("mincore", libc::SYS_mincore),
    sc("mkdir", libc::SYS_mkdir),
    sc("mkdirat", libc::SYS_mkdirat),
    sc("mknod", libc::SYS_mknod),
    sc("mknodat", libc::SYS_mknodat),
    sc("mlock", libc::SYS_mlock),
    sc("mlock2", libc::SYS_mlock2),
    sc("mlockall", libc::SYS_mlockall),
    sc("mmap", libc::SYS_mmap),
    sc("mprotect", libc::SYS_mprotect),
    sc("mq_getsetattr", libc::SYS_mq_getsetattr),
    sc("mq_notify", libc::SYS_mq_notify),
    sc("mq_open", libc::SYS_mq_open),
    sc("mq_timedreceive", libc::SYS_mq_timedreceive),
    sc("mq_timedsend", libc::SYS_mq_timedsend),
    sc("mq_unlink", libc::SYS_mq_unlink),
    sc("mremap", libc::SYS_mremap),
    sc("msgctl", libc::SYS_msgctl),
    sc("msgget", libc::SYS_msgget),
    sc("msgrcv", libc::SYS_msgrcv),
    sc("msgsnd", libc::SYS_msgsnd),
    sc("msync", libc::SYS_msync),
    sc("munlock", libc::SYS_munlock),
    sc("munlockall", libc::SYS_munlockall),
    sc("munmap", libc::SYS_munmap),
    sc("name_to_handle_at", libc::SYS_name_to_handle_at),
    sc("nanosleep", libc::SYS_nanosleep),
    sc("newfstatat", libc::SYS_newfstatat),
    sc("open", libc::SYS_open),
    sc("openat", libc::SYS_openat),
    sc("openat2", libc::SYS_openat2),
    sc("pause", libc::SYS_pause),
    sc("pidfd_open", libc::SYS_pidfd_open),
    sc("pidfd_send_signal", libc::SYS_pidfd_send_signal),
    sc("pipe", libc::SYS_pipe),
    sc("pipe2", libc::SYS_pipe2),
    sc("pkey_alloc", libc::SYS_pkey_alloc),
    sc("pkey_free", libc::SYS_pkey_free),
    sc("pkey_mprotect", libc::SYS_pkey_mprotect),
    sc("poll", libc::SYS_poll),
    sc("ppoll", libc::SYS_ppoll),
    sc("prctl", libc::SYS_prctl),
    sc("pread64", libc::SYS_pread64),
    sc("preadv", libc::SYS_preadv),
    sc("preadv2", libc::SYS_preadv2),
    sc("prlimit64", libc::SYS_prlimit64),
    sc("process_mrelease", libc::SYS_process_mrelease),
    sc("pselect6", libc::SYS_pselect6),
    sc("pwrite64", libc::SYS_pwrite64),
    sc("pwritev", libc::SYS_pwritev),
    sc("pwritev2", libc::SYS_pwritev2),
    sc("read", libc::SYS_read),
    sc("readahead", libc::SYS_readahead),
    sc("readlink", libc::SYS_readlink),
    sc("readlinkat", libc::SYS_readlinkat),
    sc("readv", libc::SYS_readv),
    sc("recvfrom", libc::SYS_recvfrom),
    sc("recvmmsg", libc::SYS_recvmmsg),
    sc("recvmsg", libc::SYS_recvmsg),
    sc("remap_file_pages", libc::SYS_remap_file_pages),
    sc("removexattr", libc::SYS_removexattr),
    sc("rename", libc::SYS_rename),
    sc("renameat", libc::SYS_renameat),
    sc("renameat2", libc::SYS_renameat2),
    sc("restart_syscall", libc::SYS_restart_syscall),
    sc("rmdir", libc::SYS_rmdir),
    sc("rseq", libc::SYS_rseq),
    sc("rt_sigaction", libc::SYS_rt_sigaction),
    sc("rt_sigpending", libc::SYS_rt_sigpending),
    sc("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    sc("rt_sigqueueinfo", libc::SYS_rt_sigqueueinfo),
    sc("rt_sigreturn", libc::SYS_rt_sigreturn),
    sc("rt_sigsuspend", libc::SYS_rt_sigsuspend),
    sc("rt_sigtimedwait", libc::SYS_rt_sigtimedwait),
    sc("rt_tgsigqueueinfo", libc::SYS_rt_tgsigqueueinfo),
    sc("sched_getaffinity", libc::SYS_sched_getaffinity),
    sc("sched_getattr", libc::SYS_sched_getattr),
    sc("sched_getparam", libc::SYS_sched_getparam),
    sc("sched_get_priority_max", libc::SYS_sched_get_priority_max),
    sc("sched_get_priority_min", libc::SYS_sched_get_priority_min),
    sc("sched_getscheduler", libc::SYS_sched_getscheduler),
    sc("sched_rr_get_interval", libc::SYS_sched_rr_get_interval),
    sc("sched_setaffinity", libc::SYS_sched_setaffinity),
    sc("sched_setattr", libc::SYS_sched_setattr),
    sc("sched_setparam", libc::SYS_sched_setparam),
    sc("sched_setscheduler", libc::SYS_sched_setscheduler),
    sc("sched_yield", libc::SYS_sched_yield),
    sc("seccomp", libc::SYS_seccomp),
    sc("select", libc::SYS_select),
    sc("semctl", libc::SYS_semctl),
    sc("semget", libc::SYS_semget),
    sc("semop", libc::SYS_semop),
    sc("semtimedop", libc::SYS_semtimedop),
    sc("sendfile", libc::SYS_sendfile),
    sc("sendmmsg", libc::SYS_sendmmsg),
    sc("sendmsg", libc::SYS_sendmsg),
    sc("sendto", libc::SYS_sendto),
    sc("setfsgid", libc::SYS_setfsgid),
    sc("setfsuid", libc::SYS_setfsuid),
    sc("setgid", libc::SYS_setgid),
    sc("setgroups", libc::SYS_setgroups),
    sc("setitimer", libc::SYS_setitimer),
    sc("setpgid", libc::SYS_setpgid),
    sc("setpriority", libc::SYS_setpriority),
    sc("setregid", libc::SYS_setregid),
    sc("setresgid", libc::SYS_setresgid),
    sc("setresuid", libc::SYS_setresuid),
    sc("setreuid", libc::SYS_setreuid),
    sc("setrlimit", libc::SYS_setrlimit),
    sc("set_robust_list", libc::SYS_set_robust_list),
    sc("setsid", libc::SYS_setsid),
    sc("setsockopt", libc::SYS_setsockopt),
    sc("set_thread_area", libc::SYS_set_thread_area),
    sc("set_tid_address", libc::SYS_set_tid_address),
    sc("setuid", libc::SYS_setuid),
    sc("setxattr", libc::SYS_setxattr),
    sc("shmat", libc::SYS_shmat),
    sc("shmctl", libc::SYS_shmctl),
    sc("shmdt", libc::SYS_shmdt),
    sc("shmget", libc::SYS_shmget),
    sc("shutdown", libc::SYS_shutdown),
    sc("sigaltstack", libc::SYS_sigaltstack),
    sc("signalfd", libc::SYS_signalfd),
    sc("signalfd4", libc::SYS_signalfd4),
    sc("socketpair", libc::SYS_socketpair),
    sc("splice", libc::SYS_splice),
    sc("stat", libc::SYS_stat),
    sc("statfs", libc::SYS_statfs),
    sc("statx", libc::SYS_statx),
    sc("symlink", libc::SYS_symlink),
    sc("symlinkat", libc::SYS_symlinkat),
    sc("sync", libc::SYS_sync),
    sc("sync_file_range", libc::SYS_sync_file_range),
    sc("syncfs", libc::SYS_syncfs),
    sc("sysinfo", libc::SYS_sysinfo),
    sc("tee", libc::SYS_tee),
    sc("tgkill", libc::SYS_tgkill),
    sc("time", libc::SYS_time),
    sc("timer_create", libc::SYS_timer_create),
    sc("timer_delete", libc::SYS_timer_delete),
    sc("timer_getoverrun", libc::SYS_timer_getoverrun),
    sc("timer_gettime", libc::SYS_timer_gettime),
    sc("timer_settime", libc::SYS_timer_settime),
    sc("timerfd_create", libc::SYS_timerfd_create),
    sc("timerfd_gettime", libc::SYS_timerfd_gettime),
    sc("timerfd_settime", libc::SYS_timerfd_settime),
    sc("times", libc::SYS_times),
    sc("tkill", libc::SYS_tkill),
    sc("truncate", libc::SYS_truncate),
    sc("umask", libc::SYS_umask),
    sc("uname", libc::SYS_uname),
    sc("unlink", libc::SYS_unlink),
    sc("unlinkat", libc::SYS_unlinkat),
    sc("utime", libc::SYS_utime),
    sc("utimensat", libc::SYS_utimensat),
    sc("utimes", libc::SYS_utimes),
    sc("vfork", libc::SYS_vfork),
    sc("vmsplice", libc::SYS_vmsplice),
    sc("wait4", libc::SYS_wait4),
    sc("waitid", libc::SYS_waitid),
    sc("write", libc::SYS_write),
    sc("writev", libc::SYS_writev),
    sc("process_vm_readv", libc::SYS_process_vm_readv),
    sc("process_vm_writev", libc::SYS_process_vm_writev),
    sc("ptrace", libc::SYS_ptrace),
    sc("arch_prctl", libc::SYS_arch_prctl),
    sc("modify_ldt", libc::SYS_modify_ldt),
    sc("chroot", libc::SYS_chroot),
];

/// `clone` is allowed only when none of these flags is set: creating namespaces needs
/// `CAP_SYS_ADMIN`, which the container does not have (docker's `0x7e020000`).
pub const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// The only `personality(2)` arguments allowed: `PER_LINUX`, `PER_LINUX32`, `UNAME26`,
/// `UNAME26 | PER_LINUX32` and `0xffffffff` (query the current persona).
pub const PERSONALITY_ALLOWED: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Syscalls allowed only with some arguments: see the module documentation.
pub const ARG_CHECKED: [Syscall; 3] = [
    sc("clone", libc::SYS_clone),
    sc("socket", libc::SYS_socket),
    sc("personality", libc::SYS_personality),
];

/// Fails with `ENOSYS` so that libc falls back to `clone`.
pub const CLONE3: Syscall = sc("clone3", libc::SYS_clone3);

/// Notable syscalls the profile denies (`EPERM`), with the reason; documentation for
/// `isol doctor`, and checked against [`ALLOWED`] by the tests. Not exhaustive: everything not
/// allowed is denied.
pub const DENIED: &[(Syscall, &str)] = &[
    (sc("mount", libc::SYS_mount), "mounts need CAP_SYS_ADMIN"),
    (
        sc("umount2", libc::SYS_umount2),
        "mounts need CAP_SYS_ADMIN",
    ),
    (
        sc("pivot_root", libc::SYS_pivot_root),
        "mounts need CAP_SYS_ADMIN",
    ),
    (sc("fsopen", libc::SYS_fsopen), "mounts need CAP_SYS_ADMIN"),
    (
        sc("fsconfig", libc::SYS_fsconfig),
        "mounts need CAP_SYS_ADMIN",
    ),
    (
        sc("fsmount", libc::SYS_fsmount),
        "mounts need CAP_SYS_ADMIN",
    ),
    (sc("fspick", libc::SYS_fspick), "mounts need CAP_SYS_ADMIN"),
    (
        sc("move_mount", libc::SYS_move_mount),
        "mounts need CAP_SYS_ADMIN",
    ),
    (
        sc("open_tree", libc::SYS_open_tree),
        "mounts need CAP_SYS_ADMIN",
    ),
    (
        sc("mount_setattr", libc::SYS_mount_setattr),
        "mounts need CAP_SYS_ADMIN",
    ),
    (
        sc("unshare", libc::SYS_unshare),
        "new namespaces need CAP_SYS_ADMIN",
    ),
    (
        sc("setns", libc::SYS_setns),
        "joining namespaces needs CAP_SYS_ADMIN",
    ),
    (
        sc("sethostname", libc::SYS_sethostname),
        "needs CAP_SYS_ADMIN",
    ),
    (
        sc("setdomainname", libc::SYS_setdomainname),
        "needs CAP_SYS_ADMIN",
    ),
    (sc("quotactl", libc::SYS_quotactl), "needs CAP_SYS_ADMIN"),
    (
        sc("quotactl_fd", libc::SYS_quotactl_fd),
        "needs CAP_SYS_ADMIN",
    ),
    (
        sc("fanotify_init", libc::SYS_fanotify_init),
        "needs CAP_SYS_ADMIN",
    ),
    (
        sc("lookup_dcookie", libc::SYS_lookup_dcookie),
        "needs CAP_SYS_ADMIN",
    ),
    (
        sc("bpf", libc::SYS_bpf),
        "needs CAP_BPF or CAP_SYS_ADMIN; large kernel attack surface",
    ),
    (
        sc("perf_event_open", libc::SYS_perf_event_open),
        "needs CAP_PERFMON; leaks host data",
    ),
    (
        sc("syslog", libc::SYS_syslog),
        "the kernel log is not namespaced",
    ),
    (
        sc("keyctl", libc::SYS_keyctl),
        "the kernel keyring is not namespaced",
    ),
    (
        sc("add_key", libc::SYS_add_key),
        "the kernel keyring is not namespaced",
    ),
    (
        sc("request_key", libc::SYS_request_key),
        "the kernel keyring is not namespaced",
    ),
    (sc("kexec_load", libc::SYS_kexec_load), "loads a new kernel"),
    (
        sc("kexec_file_load", libc::SYS_kexec_file_load),
        "loads a new kernel",
    ),
    (sc("reboot", libc::SYS_reboot), "needs CAP_SYS_BOOT"),
    (
        sc("init_module", libc::SYS_init_module),
        "needs CAP_SYS_MODULE",
    ),
    (
        sc("finit_module", libc::SYS_finit_module),
        "needs CAP_SYS_MODULE",
    ),
    (
        sc("delete_module", libc::SYS_delete_module),
        "needs CAP_SYS_MODULE",
    ),
    (sc("acct", libc::SYS_acct), "needs CAP_SYS_PACCT"),
    (sc("swapon", libc::SYS_swapon), "needs CAP_SYS_ADMIN"),
    (sc("swapoff", libc::SYS_swapoff), "needs CAP_SYS_ADMIN"),
    (
        sc("settimeofday", libc::SYS_settimeofday),
        "the clock is not namespaced",
    ),
    (
        sc("clock_settime", libc::SYS_clock_settime),
        "the clock is not namespaced",
    ),
    (sc("iopl", libc::SYS_iopl), "needs CAP_SYS_RAWIO"),
    (sc("ioperm", libc::SYS_ioperm), "needs CAP_SYS_RAWIO"),
    (
        sc("open_by_handle_at", libc::SYS_open_by_handle_at),
        "escapes the rootfs (\"shocker\")",
    ),
    (
        sc("userfaultfd", libc::SYS_userfaultfd),
        "widens kernel race windows for exploits",
    ),
    (
        sc("io_uring_setup", libc::SYS_io_uring_setup),
        "bypasses seccomp; large attack surface",
    ),
    (
        sc("io_uring_enter", libc::SYS_io_uring_enter),
        "bypasses seccomp; large attack surface",
    ),
    (
        sc("io_uring_register", libc::SYS_io_uring_register),
        "bypasses seccomp",
    ),
    (sc("kcmp", libc::SYS_kcmp), "needs CAP_SYS_PTRACE"),
    (
        sc("pidfd_getfd", libc::SYS_pidfd_getfd),
        "needs CAP_SYS_PTRACE",
    ),
    (
        sc("process_madvise", libc::SYS_process_madvise),
        "needs CAP_SYS_PTRACE",
    ),
    (sc("mbind", libc::SYS_mbind), "needs CAP_SYS_NICE"),
    (
        sc("set_mempolicy", libc::SYS_set_mempolicy),
        "needs CAP_SYS_NICE",
    ),
    (
        sc("get_mempolicy", libc::SYS_get_mempolicy),
        "needs CAP_SYS_NICE",
    ),
    (
        sc("set_mempolicy_home_node", libc::SYS_set_mempolicy_home_node),
        "needs CAP_SYS_NICE",
    ),
    (
        sc("migrate_pages", libc::SYS_migrate_pages),
        "needs CAP_SYS_NICE",
    ),
    (sc("move_pages", libc::SYS_move_pages), "needs CAP_SYS_NICE"),
    (sc("vhangup", libc::SYS_vhangup), "needs CAP_SYS_TTY_CONFIG"),
    (sc("uselib", libc::SYS_uselib), "obsolete"),
    (sc("ustat", libc::SYS_ustat), "obsolete"),
    (sc("sysfs", libc::SYS_sysfs), "obsolete"),
    (sc("_sysctl", libc::SYS__sysctl), "obsolete"),
    (sc("nfsservctl", libc::SYS_nfsservctl), "obsolete"),
];

/// The highest syscall number the profile names; anything above fails with `ENOSYS`.
pub const HIGHEST_KNOWN: i64 = highest_known();

const fn highest_known() -> i64 {
    let mut max = CLONE3.nr;
    let mut i = 0;
    while i < ALLOWED.len() {
        if ALLOWED[i].nr > max {
            max = ALLOWED[i].nr;
        }
        i += 1;
    }
    let mut i = 0;
    while i < ARG_CHECKED.len() {
        if ARG_CHECKED[i].nr > max {
            max = ARG_CHECKED[i].nr;
        }
        i += 1;
    }
    let mut i = 0;
    while i < DENIED.len() {
        if DENIED[i].0.nr > max {
            max = DENIED[i].0.nr;
        }
        i += 1;
    }
    max
}

/// `AUDIT_ARCH_X86_64` from `<linux/audit.h>`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `AUDIT_ARCH_I386`: `EM_386 | __AUDIT_ARCH_LE` (`int 0x80` from any process).
const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
/// Set in the syscall number of x32-ABI syscalls (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in `struct seccomp_data`: the number, the architecture, then six 64-bit arguments.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARGS: u32 = 16;
/// Classic BPF opcodes the compiler emits.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_AND_K: u16 = 0x54;
const BPF_JEQ_K: u16 = 0x15;
const BPF_JGT_K: u16 = 0x25;
const BPF_JGE_K: u16 = 0x35;
const BPF_RET_K: u16 = 0x06;
const BPF_JA: u16 = 0x05;
/// The kernel's limit on the length of one filter (`BPF_MAXINSNS`).
const MAX_INSTRUCTIONS: usize = 4096;

/// A compiled profile: the BPF program for [`install`] and its `seccomp(2)` flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub program: BpfProgram,
    /// [`profile::FLAG_LOG`], [`profile::FLAG_SPEC_ALLOW`].
    pub flags: u32,
}

impl Filter {
    /// The program with each instruction as the kernel lays out `struct sock_filter`, read as
    /// one little-endian `u64` (`code | jt << 16 | jf << 24 | k << 32`): the form in which isol
    /// hands the program to a microVM's guest init, which installs it there.
    pub fn words(&self) -> Vec<u64> {
        self.program
            .iter()
            .map(|i| {
                u64::from(i.code)
                    | u64::from(i.jt) << 16
                    | u64::from(i.jf) << 24
                    | u64::from(i.k) << 32
            })
            .collect()
    }
}

/// Which seccomp filter a container's processes get.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// isol's profile ([`default_filter`]), docker's default.
    #[default]
    Default,
    /// None (`--security-opt seccomp=unconfined`).
    Unconfined,
    /// A profile of its own (an OCI config's `linux.seccomp`, `--security-opt seccomp=FILE`).
    Profile(std::sync::Arc<Profile>),
}

impl Seccomp {
    /// The filter to install; `None` when unconfined.
    pub fn filter(&self) -> Result<Option<Filter>, SecurityError> {
        match self {
            Seccomp::Default => Ok(Some(Filter {
                program: default_filter()?,
                flags: 0,
            })),
            Seccomp::Unconfined => Ok(None),
            Seccomp::Profile(p) => compile(p).map(Some),
        }
    }
}

/// isol's profile (see the module documentation) as a [`Profile`] over syscall numbers.
fn default_rules() -> (Action, Vec<NumberedRule>) {
    let allow = |s: &Syscall| NumberedRule {
        nr: s.nr as u32,
        action: Action::Allow,
        args: Vec::new(),
    };
    let mut rules: Vec<NumberedRule> = ALLOWED.iter().map(allow).collect();
    let cond = |index, op, value, low32| Arg {
        index,
        op,
        value,
        low32,
    };
    // clone(flags, ...): `flags & CLONE_NAMESPACE_FLAGS == 0`. `unsigned long`, all 64 bits.
    rules.push(NumberedRule {
        nr: libc::SYS_clone as u32,
        action: Action::Allow,
        args: vec![cond(
            0,
            Op::MaskedEq {
                mask: CLONE_NAMESPACE_FLAGS,
            },
            0,
            false,
        )],
    });
    // socket(domain, ...): an `int`, so only the low 32 bits count, as in the kernel.
    rules.push(NumberedRule {
        nr: libc::SYS_socket as u32,
        action: Action::Allow,
        args: vec![cond(0, Op::Ne, libc::AF_VSOCK as u64, true)],
    });
    // personality(persona): an `unsigned int`.
    for persona in PERSONALITY_ALLOWED {
        rules.push(NumberedRule {
            nr: libc::SYS_personality as u32,
            action: Action::Allow,
            args: vec![cond(0, Op::Eq, persona, true)],
        });
    }
    rules.push(NumberedRule {
        nr: CLONE3.nr as u32,
        action: Action::Errno(libc::ENOSYS as u16),
        args: Vec::new(),
    });
    // Named, so that they count for the highest known number (everything above: ENOSYS).
    for (s, _) in DENIED {
        rules.push(NumberedRule {
            nr: s.nr as u32,
            action: Action::Errno(libc::EPERM as u16),
            args: Vec::new(),
        });
    }
    (Action::Errno(libc::EPERM as u16), rules)
}

/// Compiles isol's profile (see the module documentation) into a BPF program for [`install`].
/// Meant for the parent, before clone: it allocates and costs tens of microseconds.
pub fn default_filter() -> Result<BpfProgram, SecurityError> {
    let (default, rules) = default_rules();
    let x86_64 = section(&rules, default, Abi::X86_64)?;
    finish(x86_64, None)
}

/// [`default_filter`] as the guest init takes it ([`Filter::words`]).
pub fn default_filter_words() -> Result<Vec<u64>, SecurityError> {
    Ok(Filter {
        program: default_filter()?,
        flags: 0,
    }
    .words())
}

/// Compiles `profile` (an OCI config's or docker's JSON, [`Profile`]) for x86_64, and for i386
/// when it lists `SCMP_ARCH_X86`: the same program shape as isol's own profile.
///
/// Semantics, as runc with libseccomp: unknown syscall names are skipped; a syscall's rules
/// with conditions are tried in the profile's order, the first whose conditions all hold
/// decides; several conditions on the same argument in one rule are alternatives (runc splits
/// them into rules of one condition); then the syscall's first rule without conditions, else
/// the default action. Numbers above every syscall the profile names fail with `ENOSYS` unless
/// the default action allows, as runc does, so that programs fall back from newer syscalls.
/// x32-ABI syscalls fail with `EPERM` (isol runs no x32 binaries), and syscalls of any other
/// ABI (i386 unless listed) kill the process.
pub fn compile(profile: &Profile) -> Result<Filter, SecurityError> {
    let x86_64 = section(
        &number(profile, |n| {
            syscalls::x86_64::Sysno::from_str(n)
                .ok()
                .map(|s| s.id() as u32)
        }),
        profile.default_action,
        Abi::X86_64,
    )?;
    let i386 = if profile.i386 {
        Some(section(
            &number(profile, |n| {
                syscalls::x86::Sysno::from_str(n)
                    .ok()
                    .map(|s| s.id() as u32)
            }),
            profile.default_action,
            Abi::I386,
        )?)
    } else {
        None
    };
    Ok(Filter {
        program: finish(x86_64, i386)?,
        flags: profile.flags,
    })
}

/// One rule for one syscall number.
#[derive(Debug, Clone)]
struct NumberedRule {
    nr: u32,
    action: Action,
    args: Vec<Arg>,
}

/// The profile's rules by number in one ABI's table (`lookup`), unknown names skipped, rules
/// with several conditions on one argument split as runc does.
fn number(profile: &Profile, lookup: impl Fn(&str) -> Option<u32>) -> Vec<NumberedRule> {
    let mut out = Vec::new();
    for rule in &profile.rules {
        let mut indices: Vec<u8> = rule.args.iter().map(|a| a.index).collect();
        indices.sort_unstable();
        let repeated = indices.windows(2).any(|w| w[0] == w[1]);
        let alternatives: Vec<Vec<Arg>> = if repeated {
            rule.args.iter().map(|a| vec![*a]).collect()
        } else {
            vec![rule.args.clone()]
        };
        for name in &rule.names {
            let Some(nr) = lookup(name) else {
                tracing::trace!(syscall = %name, "seccomp: unknown syscall skipped");
                continue;
            };
            for args in &alternatives {
                out.push(NumberedRule {
                    nr,
                    action: rule.action,
                    args: args.clone(),
                });
            }
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abi {
    X86_64,
    I386,
}

/// What the filter does with one syscall number in `0..=highest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Return this action (`SECCOMP_RET_*`).
    Return(u32),
    /// Jump to this block of argument checks.
    CheckArgs(usize),
}

/// The code for one ABI, the syscall number not yet loaded:
///
/// ```text
/// 0: A = nr
/// 1: if A >= X32_SYSCALL_BIT goto 3        (x86_64 only: x32, and -1)
/// 2: if A > highest goto 4 else goto 5
/// 3: return ERRNO(EPERM)
/// 4: return ENOSYS (or the default action when it allows)
/// 5: the binary search ([`emit_search`]), then the blocks of argument checks
/// ```
///
/// Everything before the argument checks reads only the architecture and the number, so the
/// kernel's per-syscall action cache (Linux ≥ 5.11) covers every syscall decided without them.
fn section(
    rules: &[NumberedRule],
    default: Action,
    abi: Abi,
) -> Result<Vec<sock_filter>, SecurityError> {
    use std::collections::BTreeMap;
    /// A syscall's first rule without conditions, and its rules with conditions in order.
    type Rules<'r> = (Option<Action>, Vec<(&'r [Arg], Action)>);
    let mut by_nr: BTreeMap<u32, Rules<'_>> = BTreeMap::new();
    for r in rules {
        let entry = by_nr.entry(r.nr).or_default();
        if r.args.is_empty() {
            entry.0.get_or_insert(r.action);
        } else {
            entry.1.push((&r.args, r.action));
        }
    }
    let highest = by_nr.keys().next_back().copied().unwrap_or(0);
    let above = if default.allows() {
        default
    } else {
        Action::Errno(libc::ENOSYS as u16)
    };
    let mut blocks: Vec<Vec<sock_filter>> = Vec::new();
    let mut runs: Vec<(u32, Verdict)> = Vec::new();
    for nr in 0..=highest {
        let verdict = match by_nr.get(&nr) {
            None => Verdict::Return(default.ret()),
            Some((unconditional, conditional)) => {
                let fallback = unconditional.unwrap_or(default);
                let checks: Vec<_> = conditional.iter().filter(|(_, a)| *a != fallback).collect();
                if checks.is_empty() {
                    Verdict::Return(fallback.ret())
                } else {
                    let mut block = Vec::new();
                    for (args, action) in checks {
                        block.extend(rule_code(args, *action));
                    }
                    block.push(stmt(BPF_RET_K, fallback.ret()));
                    blocks.push(block);
                    Verdict::CheckArgs(blocks.len() - 1)
                }
            }
        };
        if runs.last().is_none_or(|(_, v)| *v != verdict) {
            runs.push((nr, verdict));
        }
    }
    let mut code = vec![stmt(BPF_LD_W_ABS, DATA_NR)];
    match abi {
        Abi::X86_64 => code.extend([
            jump(BPF_JGE_K, X32_SYSCALL_BIT, 1, 0),
            jump(BPF_JGT_K, highest, 1, 2),
            stmt(BPF_RET_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
            stmt(BPF_RET_K, above.ret()),
        ]),
        Abi::I386 => code.extend([jump(BPF_JGT_K, highest, 0, 1), stmt(BPF_RET_K, above.ret())]),
    }
    let mut to_blocks = Vec::new();
    emit_search(&runs, &mut code, &mut to_blocks);
    let mut starts = Vec::with_capacity(blocks.len());
    for block in blocks {
        starts.push(code.len());
        code.extend(block);
    }
    for (at, block) in to_blocks {
        code[at].k = (starts[block] - at - 1) as u32;
    }
    if code.len() > MAX_INSTRUCTIONS {
        return Err(SecurityError::SeccompTooLarge(code.len()));
    }
    Ok(code)
}

/// The architecture check before the ABIs' sections: x86_64, then i386 when present; any other
/// architecture kills the process.
fn finish(
    x86_64: Vec<sock_filter>,
    i386: Option<Vec<sock_filter>>,
) -> Result<BpfProgram, SecurityError> {
    let mut program = vec![stmt(BPF_LD_W_ABS, DATA_ARCH)];
    match &i386 {
        None => program.extend([
            jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
            stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        ]),
        Some(_) => program.extend([
            jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 3, 0),
            jump(BPF_JEQ_K, AUDIT_ARCH_I386, 0, 1),
            stmt(BPF_JA, x86_64.len() as u32 + 1),
            stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        ]),
    }
    program.extend(x86_64);
    program.extend(i386.into_iter().flatten());
    if program.len() > MAX_INSTRUCTIONS {
        return Err(SecurityError::SeccompTooLarge(program.len()));
    }
    Ok(program)
}

/// A placeholder for "this rule does not hold": patched into a jump to the next rule.
const FAIL: u8 = u8::MAX;

/// One rule: its conditions, each jumping past the rule when it fails, then `return action`.
/// At most 6 conditions of at most 6 instructions: every jump stays short.
fn rule_code(args: &[Arg], action: Action) -> Vec<sock_filter> {
    let mut code = Vec::new();
    for a in args {
        code.extend(condition(a));
    }
    code.push(stmt(BPF_RET_K, action.ret()));
    let end = code.len();
    for (at, ins) in code.iter_mut().enumerate() {
        if ins.code == BPF_RET_K || ins.code == BPF_LD_W_ABS || ins.code == BPF_AND_K {
            continue;
        }
        let to_end = (end - at - 1) as u8;
        if ins.jt == FAIL {
            ins.jt = to_end;
        }
        if ins.jf == FAIL {
            ins.jf = to_end;
        }
    }
    code
}

/// Code that falls through when `a` holds and jumps to [`FAIL`] when not. 64-bit compares
/// look at the high half first (`seccomp_data` args are little-endian `u64`s).
fn condition(a: &Arg) -> Vec<sock_filter> {
    let lo_at = DATA_ARGS + 8 * u32::from(a.index);
    let hi_at = lo_at + 4;
    let (hi, lo) = ((a.value >> 32) as u32, a.value as u32);
    let ld = |at| stmt(BPF_LD_W_ABS, at);
    if a.low32 {
        return match a.op {
            Op::Eq => vec![ld(lo_at), jump(BPF_JEQ_K, lo, 0, FAIL)],
            Op::Ne => vec![ld(lo_at), jump(BPF_JEQ_K, lo, FAIL, 0)],
            Op::Gt => vec![ld(lo_at), jump(BPF_JGT_K, lo, 0, FAIL)],
            Op::Ge => vec![ld(lo_at), jump(BPF_JGE_K, lo, 0, FAIL)],
            Op::Lt => vec![ld(lo_at), jump(BPF_JGE_K, lo, FAIL, 0)],
            Op::Le => vec![ld(lo_at), jump(BPF_JGT_K, lo, FAIL, 0)],
            Op::MaskedEq { mask } => vec![
                ld(lo_at),
                stmt(BPF_AND_K, mask as u32),
                jump(BPF_JEQ_K, lo, 0, FAIL),
            ],
        };
    }
    match a.op {
        Op::Eq => vec![
            ld(hi_at),
            jump(BPF_JEQ_K, hi, 0, FAIL),
            ld(lo_at),
            jump(BPF_JEQ_K, lo, 0, FAIL),
        ],
        // Holds when either half differs.
        Op::Ne => vec![
            ld(hi_at),
            jump(BPF_JEQ_K, hi, 0, 2),
            ld(lo_at),
            jump(BPF_JEQ_K, lo, FAIL, 0),
        ],
        // hi > HI, or hi == HI and lo > LO (>= for Ge).
        Op::Gt | Op::Ge => vec![
            ld(hi_at),
            jump(BPF_JGT_K, hi, 3, 0),
            jump(BPF_JEQ_K, hi, 0, FAIL),
            ld(lo_at),
            jump(
                if a.op == Op::Gt { BPF_JGT_K } else { BPF_JGE_K },
                lo,
                0,
                FAIL,
            ),
        ],
        // hi < HI, or hi == HI and lo < LO (<= for Le).
        Op::Lt | Op::Le => vec![
            ld(hi_at),
            jump(BPF_JGT_K, hi, FAIL, 0),
            jump(BPF_JEQ_K, hi, 0, 2),
            ld(lo_at),
            jump(
                if a.op == Op::Lt { BPF_JGE_K } else { BPF_JGT_K },
                lo,
                FAIL,
                0,
            ),
        ],
        Op::MaskedEq { mask } => vec![
            ld(hi_at),
            stmt(BPF_AND_K, (mask >> 32) as u32),
            jump(BPF_JEQ_K, hi, 0, FAIL),
            ld(lo_at),
            stmt(BPF_AND_K, mask as u32),
            jump(BPF_JEQ_K, lo, 0, FAIL),
        ],
    }
}

/// Emits the search over `runs` (non-empty): `if nr >= first of the upper half` → upper half,
/// else the lower half, down to one run, which is its verdict. Every path is about
/// log2(runs) ≈ 7 compares and reads nothing but the number. `to_blocks` gets the `JA`s to
/// patch: (position, block).
fn emit_search(
    runs: &[(u32, Verdict)],
    code: &mut Vec<sock_filter>,
    to_blocks: &mut Vec<(usize, usize)>,
) {
    if let [(_, verdict)] = runs {
        match verdict {
            Verdict::Return(action) => code.push(stmt(BPF_RET_K, *action)),
            Verdict::CheckArgs(block) => {
                to_blocks.push((code.len(), *block));
                code.push(stmt(BPF_JA, 0));
            }
        }
        return;
    }
    let (lower, upper) = runs.split_at(runs.len() / 2);
    let mut lower_code = Vec::new();
    let mut lower_blocks = Vec::new();
    emit_search(lower, &mut lower_code, &mut lower_blocks);
    // A conditional jump reaches at most 255 instructions ahead; beyond, it goes through a JA.
    let far = lower_code.len() > usize::from(u8::MAX);
    if far {
        code.push(jump(BPF_JGE_K, upper[0].0, 0, 1));
        code.push(stmt(BPF_JA, lower_code.len() as u32));
    } else {
        code.push(jump(BPF_JGE_K, upper[0].0, lower_code.len() as u8, 0));
    }
    let base = code.len();
    code.extend(lower_code);
    to_blocks.extend(lower_blocks.into_iter().map(|(at, b)| (base + at, b)));
    emit_search(upper, code, to_blocks);
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Installs `program` as a seccomp filter on the calling thread; it is inherited by everything
/// the thread execs or forks and cannot be removed. Needs `no_new_privs` (see
/// [`super::set_no_new_privs`]) or `CAP_SYS_ADMIN`. Makes one syscall and does not allocate: meant
/// for the child, just before exec.
pub fn install(program: &[sock_filter]) -> Result<(), SecurityError> {
    install_with_flags(program, 0)
}

/// [`install`] with `seccomp(2)` flags ([`Filter::flags`]).
pub fn install_with_flags(program: &[sock_filter], flags: u32) -> Result<(), SecurityError> {
    let len =
        u16::try_from(program.len()).map_err(|_| SecurityError::SeccompInstall(Errno::EINVAL))?;
    let fprog = libc::sock_fprog {
        len,
        // seccompiler's `sock_filter` is `#[repr(C)]` with the same fields as libc's; the kernel
        // only reads the program.
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `fprog` points to `len` valid instructions that outlive the call; the kernel copies
    // the program and does not keep the pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &raw const fprog,
        )
    };
    Errno::result(ret)
        .map(drop)
        .map_err(SecurityError::SeccompInstall)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::time::Instant;

    use super::*;

    /// What the kernel would return for one syscall: a small classic-BPF interpreter for the
    /// instructions the filter uses.
    fn evaluate(program: &[sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        run(program, arch, nr, args).0
    }

    /// The action, and how many instructions ran to reach it.
    fn run(program: &[sock_filter], arch: u32, nr: i64, args: [u64; 6]) -> (u32, usize) {
        let mut steps = 0;
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as u32).to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, arg) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_ne_bytes());
        }
        let mut acc = 0u32;
        let mut pc = 0usize;
        loop {
            let ins = &program[pc];
            steps += 1;
            let k = ins.k;
            let branch = |cond: bool| usize::from(if cond { ins.jt } else { ins.jf });
            pc += 1;
            match ins.code {
                0x20 => {
                    let at = k as usize;
                    acc = u32::from_ne_bytes(data[at..at + 4].try_into().unwrap());
                }
                0x54 => acc &= k,
                0x05 => pc += k as usize,
                0x15 => pc += branch(acc == k),
                0x25 => pc += branch(acc > k),
                0x35 => pc += branch(acc >= k),
                0x45 => pc += branch(acc & k != 0),
                0x06 => return (k, steps),
                code => panic!("unexpected BPF opcode {code:#x}"),
            }
        }
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    fn x86_64(program: &[sock_filter], nr: i64, arg0: u64) -> u32 {
        evaluate(program, AUDIT_ARCH_X86_64, nr, [arg0, 0, 0, 0, 0, 0])
    }

    #[test]
    fn words_are_the_kernel_layout() {
        let program = default_filter().unwrap();
        let words = default_filter_words().unwrap();
        assert_eq!(words.len(), program.len());
        for (i, w) in program.iter().zip(&words) {
            assert_eq!(std::mem::size_of::<sock_filter>(), 8);
            // SAFETY: sock_filter is #[repr(C)] with u16, u8, u8, u32: 8 bytes without padding,
            // and `i` points to one.
            let bytes: [u8; 8] = unsafe { std::ptr::read((i as *const sock_filter).cast()) };
            assert_eq!(u64::from_le_bytes(bytes), *w);
        }
    }

    #[test]
    fn filter_compiles_within_kernel_limit() {
        let program = default_filter().unwrap();
        assert!(program.len() <= MAX_INSTRUCTIONS);
        println!(
            "seccomp: {} allowed + {} argument-checked syscalls, {} BPF instructions",
            ALLOWED.len(),
            ARG_CHECKED.len(),
            program.len()
        );
    }

    /// Every number gets the profile's verdict, and in a few steps: the kernel runs the filter for
    /// every number when it is installed (its action cache), so the path length is its cost.
    #[test]
    fn every_syscall_number_is_decided_by_a_short_search() {
        let program = default_filter().unwrap();
        let allowed: HashSet<i64> = ALLOWED.iter().map(|s| s.nr).collect();
        let checked: HashSet<i64> = ARG_CHECKED.iter().map(|s| s.nr).collect();
        let mut longest = 0;
        for nr in 0..=HIGHEST_KNOWN + 64 {
            let (action, steps) = run(&program, AUDIT_ARCH_X86_64, nr, [0; 6]);
            let want = if allowed.contains(&nr) {
                ALLOW
            } else if nr == CLONE3.nr || nr > HIGHEST_KNOWN {
                ENOSYS
            } else if checked.contains(&nr) {
                action // the argument checks have tests of their own
            } else {
                EPERM
            };
            assert_eq!(action, want, "syscall {nr}");
            if !checked.contains(&nr) {
                longest = longest.max(steps);
            }
        }
        println!("seccomp: at most {longest} instructions per syscall number");
        // 8 of prologue, then about log2(runs of equal verdicts) compares.
        assert!(longest <= 20, "{longest} instructions on the longest path");
    }

    /// A search too big for 8-bit conditional jumps (which the profile does not need today)
    /// still finds every run: its far branches go through `JA`.
    #[test]
    fn long_searches_jump_far() {
        let runs: Vec<(u32, Verdict)> = (0..1200)
            .map(|i| {
                (
                    i * 2,
                    Verdict::Return(if i % 2 == 0 { ALLOW } else { EPERM }),
                )
            })
            .chain([(2400, Verdict::CheckArgs(0))])
            .collect();
        let mut code = vec![stmt(BPF_LD_W_ABS, DATA_NR)];
        let mut to_checks = Vec::new();
        emit_search(&runs, &mut code, &mut to_checks);
        let end = code.len();
        for (at, _) in to_checks {
            code[at].k = (end - at - 1) as u32;
        }
        code.push(stmt(BPF_RET_K, KILL));
        assert!(code.iter().any(|i| i.code == BPF_JA && i.k > 255));
        for nr in 0..2500 {
            let want = match nr {
                2400.. => KILL,
                _ if (nr / 2) % 2 == 0 => ALLOW,
                _ => EPERM,
            };
            assert_eq!(evaluate(&code, 0, nr, [0; 6]), want, "{nr}");
        }
    }

    #[test]
    fn filter_is_deterministic() {
        assert_eq!(default_filter().unwrap(), default_filter().unwrap());
    }

    #[test]
    fn build_time() {
        let start = Instant::now();
        let runs = 100;
        for _ in 0..runs {
            std::hint::black_box(default_filter().unwrap());
        }
        println!(
            "seccomp: default_filter() takes {:?} per build",
            start.elapsed() / runs
        );
    }

    #[test]
    fn table_has_no_duplicates() {
        let mut names = HashSet::new();
        let mut numbers = HashSet::new();
        for s in ALLOWED.iter().chain(&ARG_CHECKED).chain([&CLONE3]) {
            assert!(names.insert(s.name), "{} listed twice", s.name);
            assert!(numbers.insert(s.nr), "{} ({}) listed twice", s.name, s.nr);
        }
        assert!(
            ALLOWED.len() > 290,
            "docker allows about 300 syscalls on x86_64"
        );
    }

    #[test]
    fn names_match_numbers() {
        // Spot checks against arch/x86/entry/syscalls/syscall_64.tbl.
        let find = |name| ALLOWED.iter().find(|s| s.name == name).map(|s| s.nr);
        assert_eq!(find("read"), Some(0));
        assert_eq!(find("execve"), Some(59));
        assert_eq!(find("chroot"), Some(161));
        assert_eq!(find("io_pgetevents"), Some(333));
        assert_eq!(find("cachestat"), Some(451));
        assert_eq!(find("futex_requeue"), Some(456));
        assert_eq!(HIGHEST_KNOWN, 456);
    }

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        let allowed: HashSet<i64> = ALLOWED.iter().map(|s| s.nr).collect();
        let checked: HashSet<i64> = ARG_CHECKED.iter().map(|s| s.nr).collect();
        let program = default_filter().unwrap();
        for (s, why) in DENIED {
            assert!(!allowed.contains(&s.nr), "{} is allowed but {why}", s.name);
            assert!(!checked.contains(&s.nr), "{} is allowed but {why}", s.name);
            assert_eq!(x86_64(&program, s.nr, 0), EPERM, "{}", s.name);
        }
        assert!(!allowed.contains(&CLONE3.nr));
    }

    #[test]
    fn allowed_syscalls_are_allowed() {
        let program = default_filter().unwrap();
        for s in ALLOWED {
            assert_eq!(x86_64(&program, s.nr, 0), ALLOW, "{}", s.name);
        }
    }

    #[test]
    fn clone_without_namespace_flags_only() {
        let program = default_filter().unwrap();
        let fork_flags =
            (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID | libc::SIGCHLD) as u64;
        let thread_flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(x86_64(&program, libc::SYS_clone, fork_flags), ALLOW);
        assert_eq!(x86_64(&program, libc::SYS_clone, thread_flags), ALLOW);
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            let flags = fork_flags | flag as u64;
            assert_eq!(x86_64(&program, libc::SYS_clone, flags), EPERM, "{flag:#x}");
        }
        assert_eq!(x86_64(&program, libc::SYS_clone3, 0), ENOSYS);
    }

    #[test]
    fn socket_denies_vsock_only() {
        let program = default_filter().unwrap();
        let vsock = libc::AF_VSOCK as u64;
        assert_eq!(x86_64(&program, libc::SYS_socket, vsock), EPERM);
        // The kernel reads `int domain`: garbage in the high half must not get vsock through.
        assert_eq!(x86_64(&program, libc::SYS_socket, (1 << 32) | vsock), EPERM);
        for family in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ] {
            assert_eq!(x86_64(&program, libc::SYS_socket, family as u64), ALLOW);
        }
    }

    #[test]
    fn personality_only_docker_values() {
        let program = default_filter().unwrap();
        for persona in PERSONALITY_ALLOWED {
            assert_eq!(x86_64(&program, libc::SYS_personality, persona), ALLOW);
        }
        // ADDR_NO_RANDOMIZE, READ_IMPLIES_EXEC.
        for persona in [0x0004_0000, 0x0040_0000] {
            assert_eq!(x86_64(&program, libc::SYS_personality, persona), EPERM);
        }
    }

    #[test]
    fn unknown_and_foreign_syscalls() {
        let program = default_filter().unwrap();
        // Newer than the profile (statmount, mseal, far future): ENOSYS, so libc falls back.
        for nr in [457, 462, 1000] {
            assert_eq!(x86_64(&program, nr, 0), ENOSYS, "{nr}");
        }
        // Gaps below the highest known number (e.g. the removed create_module): EPERM.
        assert_eq!(x86_64(&program, 174, 0), EPERM);
        // x32 ABI read(2) and nr -1: EPERM.
        assert_eq!(x86_64(&program, i64::from(X32_SYSCALL_BIT), 0), EPERM);
        assert_eq!(x86_64(&program, -1, 0), EPERM);
        // i386 ABI: killed.
        let audit_arch_i386 = 3 | 0x4000_0000;
        let args = [0; 6];
        assert_eq!(evaluate(&program, audit_arch_i386, 1, args), KILL);
        assert_eq!(evaluate(&program, audit_arch_i386, 435, args), KILL);
    }

    use crate::security::capabilities;

    const MOBY: &str = include_str!("testdata/moby-default.json");
    const PODMAN: &str = include_str!("testdata/podman-default.json");

    fn ctx(capabilities: u64) -> profile::Context {
        profile::Context {
            capabilities,
            kernel: Some((6, 1)),
        }
    }

    fn compiled(text: &str, capabilities: u64) -> Filter {
        compile(&Profile::from_json(text, &ctx(capabilities)).unwrap()).unwrap()
    }

    fn nr(name: &str) -> i64 {
        i64::from(syscalls::x86_64::Sysno::from_str(name).unwrap().id())
    }

    /// isol's hand-kept table and the generated one agree on every name.
    #[test]
    fn own_table_matches_the_generated_one() {
        for s in ALLOWED
            .iter()
            .chain(&ARG_CHECKED)
            .chain([&CLONE3])
            .chain(DENIED.iter().map(|(s, _)| s))
        {
            assert_eq!(nr(s.name), s.nr, "{}", s.name);
        }
    }

    /// docker's default profile (moby), as dockerd resolves it for the default capabilities:
    /// the same verdicts as isol's own profile for what both decide alike.
    #[test]
    fn moby_default_profile() {
        let f = compiled(MOBY, capabilities::DEFAULT_MASK);
        let p = &f.program;
        assert!(p.len() <= MAX_INSTRUCTIONS);
        println!(
            "seccomp: moby's default profile is {} instructions",
            p.len()
        );
        for name in ["read", "execve", "mkdir", "ptrace", "chroot", "arch_prctl"] {
            assert_eq!(x86_64(p, nr(name), 0), ALLOW, "{name}");
        }
        for name in [
            "mount",
            "unshare",
            "setns",
            "bpf",
            "kexec_load",
            "reboot",
            "syslog",
        ] {
            assert_eq!(x86_64(p, nr(name), 0), EPERM, "{name}");
        }
        assert_eq!(x86_64(p, nr("clone3"), 0), ENOSYS);
        assert_eq!(x86_64(p, nr("clone"), libc::SIGCHLD as u64), ALLOW);
        let newns = (libc::SIGCHLD | libc::CLONE_NEWNS) as u64;
        assert_eq!(x86_64(p, nr("clone"), newns), EPERM);
        assert_eq!(x86_64(p, nr("socket"), libc::AF_INET as u64), ALLOW);
        assert_eq!(x86_64(p, nr("socket"), libc::AF_VSOCK as u64), EPERM);
        assert_eq!(x86_64(p, nr("personality"), 0xffff_ffff), ALLOW);
        assert_eq!(x86_64(p, nr("personality"), 0x0004_0000), EPERM);
        // Newer than anything it names: ENOSYS.
        assert_eq!(x86_64(p, 1000, 0), ENOSYS);
        // It lists SCMP_ARCH_X86 (archMap): i386 syscalls go through the i386 table.
        let i386 = |nr: i64, arg0: u64| evaluate(p, AUDIT_ARCH_I386, nr, [arg0, 0, 0, 0, 0, 0]);
        let i386_nr = |name: &str| i64::from(syscalls::x86::Sysno::from_str(name).unwrap().id());
        assert_eq!(i386(i386_nr("read"), 0), ALLOW);
        assert_eq!(i386(i386_nr("socketcall"), 0), ALLOW);
        assert_eq!(i386(i386_nr("mount"), 0), EPERM);
        // The x86_64 number of mount (165) is getresuid on i386.
        assert_eq!(i386(165, 0), ALLOW);
        // x32: refused.
        assert_eq!(x86_64(p, i64::from(X32_SYSCALL_BIT), 0), EPERM);

        // With CAP_SYS_ADMIN: mount, unshare and clone with any flags.
        let admin = capabilities::DEFAULT_MASK | 1 << 21;
        let f = compiled(MOBY, admin);
        assert_eq!(x86_64(&f.program, nr("mount"), 0), ALLOW);
        assert_eq!(x86_64(&f.program, nr("clone"), newns), ALLOW);
        assert_eq!(x86_64(&f.program, nr("clone3"), 0), ALLOW);
    }

    /// podman's default profile (containers-common, Debian 12): ENOSYS by default, EPERM for
    /// the syscalls a missing capability forbids, and a two-argument rule on socket.
    #[test]
    fn podman_default_profile() {
        let f = compiled(PODMAN, capabilities::DEFAULT_MASK);
        let p = &f.program;
        println!(
            "seccomp: podman's default profile is {} instructions",
            p.len()
        );
        assert_eq!(x86_64(p, nr("read"), 0), ALLOW);
        // podman allows mount and unshare: capabilities guard them.
        assert_eq!(x86_64(p, nr("mount"), 0), ALLOW);
        assert_eq!(x86_64(p, nr("add_key"), 0), ENOSYS);
        assert_eq!(x86_64(p, nr("io_uring_setup"), 0), ENOSYS);
        assert_eq!(x86_64(p, nr("bpf"), 0), EPERM);
        // socket(AF_NETLINK, _, NETLINK_AUDIT) fails with EINVAL without CAP_AUDIT_WRITE, which
        // the default set holds: allowed here.
        let args = [16, 3, 9, 0, 0, 0];
        assert_eq!(evaluate(p, AUDIT_ARCH_X86_64, nr("socket"), args), ALLOW);
        let f = compiled(PODMAN, capabilities::DEFAULT_MASK & !(1 << 29));
        let einval = libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32;
        assert_eq!(
            evaluate(&f.program, AUDIT_ARCH_X86_64, nr("socket"), args),
            einval
        );
        let other = [16, 3, 0, 0, 0, 0];
        assert_eq!(
            evaluate(&f.program, AUDIT_ARCH_X86_64, nr("socket"), other),
            ALLOW
        );
    }

    /// Every action, errnoRet, unknown names, flags, and rule order.
    #[test]
    fn actions_and_rule_order() {
        let text = r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_TSYNC"],
          "syscalls":[
            {"names":["mkdir","no_such_syscall"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
            {"names":["rmdir"],"action":"SCMP_ACT_ERRNO"},
            {"names":["sync"],"action":"SCMP_ACT_KILL"},
            {"names":["syncfs"],"action":"SCMP_ACT_KILL_PROCESS"},
            {"names":["fsync"],"action":"SCMP_ACT_KILL_THREAD"},
            {"names":["getpid"],"action":"SCMP_ACT_TRAP"},
            {"names":["getppid"],"action":"SCMP_ACT_LOG"},
            {"names":["gettid"],"action":"SCMP_ACT_TRACE","errnoRet":7},
            {"names":["kill"],"action":"SCMP_ACT_ERRNO","errnoRet":1,"args":[{"index":1,"value":10,"op":"SCMP_CMP_EQ"}]},
            {"names":["kill"],"action":"SCMP_ACT_ERRNO","errnoRet":2,"args":[{"index":1,"value":9,"op":"SCMP_CMP_GE"}]},
            {"names":["kill"],"action":"SCMP_ACT_ERRNO","errnoRet":3},
            {"names":["tkill"],"action":"SCMP_ACT_ERRNO","errnoRet":4,
             "args":[{"index":1,"value":1,"op":"SCMP_CMP_EQ"},{"index":1,"value":2,"op":"SCMP_CMP_EQ"}]}]}"#;
        let f = compiled(text, 0);
        assert_eq!(f.flags, profile::FLAG_LOG);
        let p = &f.program;
        let errno = |e: u32| libc::SECCOMP_RET_ERRNO | e;
        assert_eq!(x86_64(p, nr("mkdir"), 0), errno(13));
        assert_eq!(x86_64(p, nr("rmdir"), 0), errno(1));
        assert_eq!(x86_64(p, nr("sync"), 0), libc::SECCOMP_RET_KILL_THREAD);
        assert_eq!(x86_64(p, nr("syncfs"), 0), KILL);
        assert_eq!(x86_64(p, nr("fsync"), 0), libc::SECCOMP_RET_KILL_THREAD);
        assert_eq!(x86_64(p, nr("getpid"), 0), libc::SECCOMP_RET_TRAP);
        assert_eq!(x86_64(p, nr("getppid"), 0), libc::SECCOMP_RET_LOG);
        assert_eq!(x86_64(p, nr("gettid"), 0), libc::SECCOMP_RET_TRACE | 7);
        assert_eq!(x86_64(p, nr("read"), 0), ALLOW);
        // The default allows: numbers above the profile's are allowed too, not ENOSYS.
        assert_eq!(x86_64(p, 1000, 0), ALLOW);
        let kill = |sig: u64| evaluate(p, AUDIT_ARCH_X86_64, nr("kill"), [1, sig, 0, 0, 0, 0]);
        // The first rule whose conditions hold, then the unconditional one.
        assert_eq!(kill(10), errno(1));
        assert_eq!(kill(15), errno(2));
        assert_eq!(kill(0), errno(3));
        // Two conditions on one argument: either (runc).
        let tkill = |sig: u64| evaluate(p, AUDIT_ARCH_X86_64, nr("tkill"), [1, sig, 0, 0, 0, 0]);
        assert_eq!(tkill(1), errno(4));
        assert_eq!(tkill(2), errno(4));
        assert_eq!(tkill(3), ALLOW);
        // No SCMP_ARCH_X86: i386 kills.
        assert_eq!(evaluate(p, AUDIT_ARCH_I386, 1, [0; 6]), KILL);
    }

    /// Each comparison on 64-bit values, against the same comparison in Rust, for values around
    /// the halves' boundaries.
    #[test]
    fn comparisons_are_64_bit() {
        let edges = [
            0u64,
            1,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0001,
            0x7fff_ffff_ffff_ffff,
            0xffff_ffff_0000_0000,
            u64::MAX,
            0x2_0000_0005,
            5,
        ];
        type Holds = fn(u64, u64, u64) -> bool;
        let ops: [(&str, Holds); 7] = [
            ("SCMP_CMP_NE", |a, v, _| a != v),
            ("SCMP_CMP_LT", |a, v, _| a < v),
            ("SCMP_CMP_LE", |a, v, _| a <= v),
            ("SCMP_CMP_EQ", |a, v, _| a == v),
            ("SCMP_CMP_GE", |a, v, _| a >= v),
            ("SCMP_CMP_GT", |a, v, _| a > v),
            ("SCMP_CMP_MASKED_EQ", |a, m, v| a & m == v),
        ];
        for (op, holds) in ops {
            for &value in &edges {
                for &two in &[0u64, 5, 0x1_0000_0000] {
                    let text = format!(
                        r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{{"index":3,"value":{value},"valueTwo":{two},"op":"{op}"}}]}}]}}"#
                    );
                    let f = compiled(&text, 0);
                    for &arg in &edges {
                        let got = evaluate(
                            &f.program,
                            AUDIT_ARCH_X86_64,
                            nr("kill"),
                            [0, 0, 0, arg, 0, 0],
                        );
                        let want = if holds(arg, value, two) { EPERM } else { ALLOW };
                        assert_eq!(got, want, "{op} arg {arg:#x} value {value:#x} two {two:#x}");
                    }
                }
            }
        }
    }

    /// A profile too long for the kernel is refused, not truncated.
    #[test]
    fn oversized_profile_is_refused() {
        let rules: Vec<String> = (0..700)
            .map(|i| {
                format!(
                    r#"{{"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{{"index":1,"value":{i},"op":"SCMP_CMP_EQ"}},{{"index":2,"value":{i},"op":"SCMP_CMP_EQ"}}]}}"#
                )
            })
            .collect();
        let text = format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{}]}}"#,
            rules.join(",")
        );
        let p = Profile::from_json(&text, &ctx(0)).unwrap();
        let e = compile(&p).unwrap_err().to_string();
        assert!(
            e.contains("too large") || e.contains("4096") || e.contains("instructions"),
            "{e}"
        );
    }
}
