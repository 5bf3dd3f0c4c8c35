//! Real privilege reduction, as root. Capabilities, no_new_privs and seccomp are per thread and
//! cannot be undone, so every check that changes them runs in a forked child, which reports
//! failures through a pipe (or, once it has exec'd, through its exit code).
//!
//! They need root (CAP_SETPCAP and friends) to mean anything: without it they fail at once
//! with a message saying so, as the workspace's integration tests do (`tests/common`).

mod security {
    use std::ffi::CString;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::path::Path;
    use std::time::{Duration, Instant};

    use caps::Capability;
    use isol_container::security::{
        SecurityError, capabilities, exe, no_new_privs, seccomp, set_no_new_privs,
    };
    use nix::errno::Errno;
    use nix::fcntl::OFlag;
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::{ForkResult, Gid, Pid, Uid, fork, pipe2, setgroups, setresgid, setresuid};

    /// Fails the test, loudly, when not run as root; true otherwise (a test that passed
    /// without root would have checked nothing).
    fn is_root() -> bool {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests drop capabilities, set no_new_privs and install seccomp filters for \
             real: run them as root (./test.sh)"
        );
        true
    }

    /// Runs `f` in a forked child. Returns the child's failure message, if any.
    fn in_child(f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
        let (r, w) = pipe2(OFlag::O_CLOEXEC).unwrap();
        // SAFETY: the child only runs `f` and exits with `_exit`; glibc's fork makes the
        // allocator usable in the child even though the test harness has other threads.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                drop(r);
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
                let (code, msg) = match outcome {
                    Ok(Ok(())) => (0, String::new()),
                    Ok(Err(msg)) => (1, msg),
                    Err(_) => (2, "the child panicked".to_string()),
                };
                let _ = File::from(w).write_all(msg.as_bytes());
                // SAFETY: ends the forked child without running the harness's destructors.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => {
                drop(w);
                let mut msg = String::new();
                File::from(r).read_to_string(&mut msg).unwrap();
                match waitpid(child, None).unwrap() {
                    WaitStatus::Exited(_, 0) => Ok(()),
                    status => Err(format!("{status:?}: {msg}")),
                }
            }
        }
    }

    /// Forks a child that runs `f`, which is expected to exec; returns the exit code.
    fn exit_code_of(f: impl FnOnce() -> Result<std::convert::Infallible, SecurityError>) -> i32 {
        // SAFETY: as in `in_child`.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let _ = f();
                // SAFETY: as in `in_child`.
                unsafe { libc::_exit(120) }
            }
            ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
                WaitStatus::Exited(_, code) => code,
                status => panic!("child ended with {status:?}"),
            },
        }
    }

    fn check(ok: bool, what: &str) -> Result<(), String> {
        if ok { Ok(()) } else { Err(what.to_string()) }
    }

    /// A `Cap*:` line of /proc/self/status as a mask.
    fn status_caps(field: &str) -> Result<u64, String> {
        let status = std::fs::read_to_string("/proc/self/status").map_err(|e| e.to_string())?;
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .ok_or(format!("no {field} in /proc/self/status"))?;
        u64::from_str_radix(line.trim(), 16).map_err(|e| e.to_string())
    }

    fn cstrings(strings: &[&str]) -> Vec<CString> {
        strings.iter().map(|s| CString::new(*s).unwrap()).collect()
    }

    fn syscall_errno(ret: libc::c_long) -> Option<Errno> {
        (ret == -1).then(Errno::last)
    }

    #[test]
    fn drop_to_default_leaves_docker_set() {
        if !is_root() {
            return;
        }
        in_child(|| {
            capabilities::drop_to_default().map_err(|e| e.to_string())?;
            let bounding = status_caps("CapBnd")?;
            let sys_admin = Capability::CAP_SYS_ADMIN.bitmask();
            check(bounding & sys_admin == 0, "CAP_SYS_ADMIN still in CapBnd")?;
            check(
                bounding & Capability::CAP_CHOWN.bitmask() != 0,
                "CAP_CHOWN not in CapBnd",
            )?;
            check(
                bounding == capabilities::DEFAULT_MASK,
                "CapBnd is not the default set",
            )?;
            check(
                status_caps("CapEff")? == capabilities::DEFAULT_MASK,
                "CapEff",
            )?;
            check(
                status_caps("CapPrm")? == capabilities::DEFAULT_MASK,
                "CapPrm",
            )?;
            check(status_caps("CapInh")? == 0, "CapInh not empty")?;
            check(status_caps("CapAmb")? == 0, "CapAmb not empty")?;
            // The bounding set cannot be raised again.
            // SAFETY: PR_CAPBSET_READ takes integers only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAPBSET_READ,
                    libc::c_ulong::from(Capability::CAP_SYS_ADMIN.index()),
                    0,
                    0,
                    0,
                )
            };
            check(r == 0, "PR_CAPBSET_READ still reports CAP_SYS_ADMIN")
        })
        .unwrap();
    }

    #[test]
    fn no_new_privs_reads_back_one() {
        if !is_root() {
            return;
        }
        in_child(|| {
            set_no_new_privs().map_err(|e| e.to_string())?;
            // SAFETY: PR_GET_NO_NEW_PRIVS takes integers only.
            let raw = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
            check(raw == 1, "PR_GET_NO_NEW_PRIVS is not 1")?;
            check(
                no_new_privs().map_err(|e| e.to_string())?,
                "no_new_privs() is false",
            )
        })
        .unwrap();
    }

    #[test]
    fn seccomp_filter_denies_namespaces_and_mounts() {
        if !is_root() {
            return;
        }
        let program = seccomp::default_filter().unwrap();
        in_child(|| {
            set_no_new_privs().map_err(|e| e.to_string())?;
            capabilities::drop_to_default().map_err(|e| e.to_string())?;
            seccomp::install(&program).map_err(|e| e.to_string())?;

            // SAFETY: every syscall below takes integers or valid NUL-terminated strings.
            let unshare = unsafe { libc::unshare(libc::CLONE_NEWNS) };
            check(
                unshare == -1 && Errno::last() == Errno::EPERM,
                "unshare(NEWNS) not EPERM",
            )?;
            // SAFETY: as above.
            let mount = unsafe {
                libc::mount(
                    c"none".as_ptr(),
                    c"/mnt".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    std::ptr::null(),
                )
            };
            check(
                mount == -1 && Errno::last() == Errno::EPERM,
                "mount not EPERM",
            )?;
            check(nix::unistd::getpid().as_raw() > 0, "getpid failed")?;
            // SAFETY: as above.
            let clone3 = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
            check(
                syscall_errno(clone3) == Some(Errno::ENOSYS),
                "clone3 not ENOSYS",
            )?;
            // SAFETY: as above; if the clone succeeded, the new child exits at once.
            let clone_userns = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            if clone_userns == 0 {
                // SAFETY: ends the unexpected child.
                unsafe { libc::_exit(0) }
            }
            check(
                syscall_errno(clone_userns) == Some(Errno::EPERM),
                "clone(CLONE_NEWUSER) not EPERM",
            )?;
            // SAFETY: as above.
            let keyctl = unsafe { libc::syscall(libc::SYS_keyctl, 0usize, 0usize) };
            check(
                syscall_errno(keyctl) == Some(Errno::EPERM),
                "keyctl not EPERM",
            )?;
            // SAFETY: as above.
            let vsock = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
            check(
                vsock == -1 && Errno::last() == Errno::EPERM,
                "AF_VSOCK socket not EPERM",
            )?;
            // SAFETY: as above.
            let inet = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            check(inet >= 0, "AF_INET socket refused")?;
            // SAFETY: as above.
            let future = unsafe { libc::syscall(1000) };
            check(
                syscall_errno(future) == Some(Errno::ENOSYS),
                "unknown syscall not ENOSYS",
            )?;
            // A plain fork (glibc's clone without namespace flags) still works.
            // SAFETY: the grandchild only exits.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {
                    // SAFETY: ends the grandchild.
                    unsafe { libc::_exit(7) }
                }
                Ok(ForkResult::Parent { child }) => {
                    let status = waitpid(child, None).map_err(|e| e.to_string())?;
                    check(status == WaitStatus::Exited(child, 7), "fork under seccomp")
                }
                Err(e) => Err(format!("fork under seccomp failed: {e}")),
            }
        })
        .unwrap();
    }

    #[test]
    fn sealed_memfd_refuses_writes() {
        let memfd = exe::sealed_copy(Path::new("/bin/true")).unwrap();
        let path = format!("/proc/self/fd/{}", memfd.as_raw_fd());
        // Reopening through /proc gives a new open file of the same memfd; writes must still
        // fail.
        match std::fs::OpenOptions::new().write(true).open(&path) {
            Err(e) => println!("reopen O_WRONLY refused: {e}"),
            Ok(f) => {
                let err = f.write_at(b"x", 0).unwrap_err();
                assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
                println!("reopen O_WRONLY allowed, write refused: {err}");
            }
        }
        let file = File::from(memfd);
        let err = file.write_at(b"\0", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        assert_eq!(
            file.set_len(0).unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
    }

    #[test]
    fn exec_of_sealed_copy_runs() {
        if !is_root() {
            return;
        }
        let memfd = exe::sealed_copy(Path::new("/bin/true")).unwrap();
        let argv = cstrings(&["true"]);
        let code = exit_code_of(|| exe::exec_self_as_init(memfd.as_fd(), &argv, &[]));
        assert_eq!(code, 0, "sealed /bin/true did not exit 0");
    }

    /// The whole child sequence, then a shell that forks, pipes and execs under the filter.
    #[test]
    fn full_sequence_runs_a_shell() {
        if !is_root() {
            return;
        }
        let program = seccomp::default_filter().unwrap();
        let sh = exe::sealed_copy(Path::new("/bin/sh")).unwrap();
        let script = format!(
            "grep -q '^CapEff:[[:space:]]*{:016x}$' /proc/self/status || exit 3; \
             echo hi | cat >/dev/null || exit 4; exit 42",
            capabilities::DEFAULT_MASK
        );
        let argv = cstrings(&["sh", "-c", &script]);
        let env = cstrings(&["PATH=/usr/bin:/bin"]);
        let code = exit_code_of(|| {
            set_no_new_privs()?;
            capabilities::drop_to_default()?;
            seccomp::install(&program)?;
            exe::exec_self_as_init(sh.as_fd(), &argv, &env)
        });
        assert_eq!(code, 42, "the shell under the container profile failed");
    }

    /// Non-root workload: the kernel clears every capability at exec (no ambient set).
    #[test]
    fn non_root_workload_has_no_capabilities() {
        if !is_root() {
            return;
        }
        let program = seccomp::default_filter().unwrap();
        let sh = exe::sealed_copy(Path::new("/bin/sh")).unwrap();
        let script = "grep -q '^CapEff:[[:space:]]*0000000000000000$' /proc/self/status \
                      && grep -q '^CapPrm:[[:space:]]*0000000000000000$' /proc/self/status \
                      && exit 42";
        let argv = cstrings(&["sh", "-c", script]);
        let env = cstrings(&["PATH=/usr/bin:/bin"]);
        let code = exit_code_of(|| {
            set_no_new_privs()?;
            capabilities::drop_to_default()?;
            let (uid, gid) = (Uid::from_raw(65534), Gid::from_raw(65534));
            let switched = setgroups(&[])
                .and_then(|()| setresgid(gid, gid, gid))
                .and_then(|()| setresuid(uid, uid, uid));
            if switched.is_err() {
                // SAFETY: ends the child.
                unsafe { libc::_exit(121) }
            }
            seccomp::install(&program)?;
            exe::exec_self_as_init(sh.as_fd(), &argv, &env)
        });
        assert_eq!(code, 42, "the non-root workload kept capabilities");
    }

    /// CVE-2019-5736: a process exec'd from the sealed copy shows the memfd as its exe, and
    /// neither it nor a reopen of it through /proc can be written.
    #[test]
    fn proc_exe_of_container_process_is_sealed_memfd() {
        if !is_root() {
            return;
        }
        let sleep = exe::sealed_copy(Path::new("/bin/sleep")).unwrap();
        let argv = cstrings(&["sleep", "30"]);
        // SAFETY: the child only execs, or exits.
        let child = match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let _ = exe::exec_self_as_init(sleep.as_fd(), &argv, &[]);
                // SAFETY: ends the child when the exec failed.
                unsafe { libc::_exit(120) }
            }
            ForkResult::Parent { child } => child,
        };
        let result = check_proc_exe(child);
        let _ = kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        result.unwrap();
    }

    fn check_proc_exe(child: Pid) -> Result<(), String> {
        let exe = format!("/proc/{child}/exe");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let target = std::fs::read_link(&exe).map_err(|e| e.to_string())?;
            if target.to_string_lossy().starts_with("/memfd:") {
                println!("{exe} -> {}", target.display());
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("{exe} still points to {}", target.display()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        for (what, write, read) in [("O_WRONLY", true, false), ("O_RDWR", true, true)] {
            match std::fs::OpenOptions::new()
                .write(write)
                .read(read)
                .open(&exe)
            {
                Err(e) => println!("open {exe} {what}: {e}"),
                Ok(f) => {
                    let err = f
                        .write_at(b"x", 0)
                        .err()
                        .ok_or(format!("wrote through {exe}"))?;
                    check(err.raw_os_error() == Some(libc::EPERM), "write not EPERM")?;
                    println!("open {exe} {what} allowed, write refused: {err}");
                }
            }
        }
        // The original exploit: hold an O_PATH descriptor, reopen it for writing later.
        let path_fd: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(&exe)
            .map_err(|e| e.to_string())?
            .into();
        let reopen = format!("/proc/self/fd/{}", path_fd.as_raw_fd());
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&reopen) {
            let err = f
                .write_at(b"x", 0)
                .err()
                .ok_or("wrote through the O_PATH reopen")?;
            check(
                err.raw_os_error() == Some(libc::EPERM),
                "O_PATH reopen write not EPERM",
            )?;
        }
        Ok(())
    }
}
