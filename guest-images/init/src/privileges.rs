//! The workload's identity and privileges, set by the guest init in the forked child just
//! before `execve`, so that a workload in the VM holds what it would hold in isol's
//! container for the same flags (docker's rules).
//!
//! [`apply`] goes in runc's order (`finalizeNamespace`, then the last steps of its init):
//!
//! 1. **bounding set** reduced to the kept capabilities (`PR_CAPBSET_DROP`): it needs
//!    `CAP_SETPCAP`, so before anything gives capabilities up;
//! 2. **groups, gid, uid** (`setgroups`, `setresgid`, `setresuid`): groups first, since a
//!    non-root uid cannot change them; a non-root uid loses the permitted and effective
//!    sets here;
//! 3. **ambient** cleared and **capset**: permitted and effective the kept set for uid 0 and
//!    empty for any other uid (docker gives a non-root user no capabilities), inheritable
//!    empty (CVE-2022-24769) unless an OCI config gives one (`isol-runc` on kvm: runc's
//!    rules, as isol's container backend). At `execve` a root workload's permitted and
//!    effective sets become its bounding set, i.e. the kept set again. An OCI config's
//!    **ambient** set is raised last: for a non-root uid the permitted set is kept across
//!    the switch (`PR_SET_KEEPCAPS`) for that, and after `execve` it holds exactly the
//!    ambient set, as runc's process does;
//! 4. **`no_new_privs`**;
//! 5. **seccomp** last (`seccomp(SECCOMP_SET_MODE_FILTER)`), so that only `execve` runs
//!    under the workload's filter. Without `no_new_privs` the kernel takes a filter only
//!    from a holder of `CAP_SYS_ADMIN`: then the filter goes on first instead, before step
//!    1, as runc and isol's container runtime do (docker's profile allows the steps after).
//!
//! Only syscalls; an error is a line for the workload's stderr (exit 125).

use std::io;

use crate::spec::{Security, SockFilter};
use crate::user::Ids;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit halves per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapUserHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`, one per 32 capabilities.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapUserData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Applies `security` and switches to `ids` (none: stay root) in that order; see the module
/// documentation.
pub fn apply(ids: Option<&Ids>, security: &Security) -> Result<(), String> {
    let filter_first = !security.no_new_privs;
    if filter_first && !security.seccomp.is_empty() {
        install_filter(&security.seccomp)?;
    }
    if let Some(keep) = security.capabilities {
        shrink_bounding_set(keep)?;
    }
    let root = ids.is_none_or(|i| i.uid == 0);
    if let Some(ids) = ids {
        if !root && security.ambient != 0 {
            // SAFETY: integer arguments only; changes only this thread's flag.
            let rc = unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
            check(
                rc.into(),
                "cannot keep the capabilities across the uid switch",
            )?;
        }
        switch_user(ids)?;
    }
    if let Some(keep) = security.capabilities {
        // A non-root uid keeps its permitted set (KEEPCAPS) only to raise the ambient set.
        let (effective, permitted) = match (root, security.ambient) {
            (true, _) => (keep, keep),
            (false, 0) => (0, 0),
            (false, _) => (0, keep),
        };
        set_capabilities(effective, permitted, security.inheritable)?;
        raise_ambient(security.ambient)?;
    }
    if security.no_new_privs {
        // SAFETY: integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        check(rc.into(), "cannot set no_new_privs")?;
    }
    if !filter_first && !security.seccomp.is_empty() {
        install_filter(&security.seccomp)?;
    }
    Ok(())
}

fn check(rc: libc::c_long, what: &str) -> Result<(), String> {
    if rc < 0 {
        return Err(format!("{what}: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// Drops every capability but those in `keep` from the bounding set.
fn shrink_bounding_set(keep: u64) -> Result<(), String> {
    for cap in (0..64u32).filter(|c| keep & (1 << c) == 0) {
        // SAFETY: integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            // EINVAL: the kernel knows no capability this high (nor any above).
            if e.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(format!(
                "cannot drop capability {cap} from the bounding set: {e}"
            ));
        }
    }
    Ok(())
}

fn switch_user(ids: &Ids) -> Result<(), String> {
    let groups: &[libc::gid_t] = &ids.groups;
    // SAFETY: the pointer and length describe `groups`, which outlives the call.
    let rc = unsafe { libc::setgroups(groups.len(), groups.as_ptr()) };
    check(rc.into(), "cannot set the supplementary groups")?;
    // SAFETY: integer arguments only.
    let rc = unsafe { libc::setresgid(ids.gid, ids.gid, ids.gid) };
    check(rc.into(), &format!("cannot switch to gid {}", ids.gid))?;
    // SAFETY: integer arguments only.
    let rc = unsafe { libc::setresuid(ids.uid, ids.uid, ids.uid) };
    check(rc.into(), &format!("cannot switch to uid {}", ids.uid))
}

/// Raises each capability of `ambient` into the ambient set (each must be permitted and
/// inheritable, as the host checked).
fn raise_ambient(ambient: u64) -> Result<(), String> {
    for cap in (0..64u32).filter(|c| ambient & (1 << c) != 0) {
        // SAFETY: integer arguments only.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                libc::c_ulong::from(cap),
                0,
                0,
            )
        };
        check(
            rc.into(),
            &format!("cannot raise capability {cap} into the ambient set"),
        )?;
    }
    Ok(())
}

/// Clears the ambient set and sets effective, permitted and inheritable.
fn set_capabilities(effective: u64, permitted: u64, inheritable: u64) -> Result<(), String> {
    // SAFETY: integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    check(rc.into(), "cannot clear the ambient capabilities")?;
    let mut header = CapUserHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // The casts take the low and the high 32 capabilities.
    let half = |shift: u32| CapUserData {
        effective: (effective >> shift) as u32,
        permitted: (permitted >> shift) as u32,
        inheritable: (inheritable >> shift) as u32,
    };
    let data = [half(0), half(32)];
    // SAFETY: a version-3 header and the two data structs that version reads, both live
    // for the call; the kernel writes at most the header's version.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    check(rc, "cannot set the workload's capabilities")
}

fn install_filter(program: &[SockFilter]) -> Result<(), String> {
    let prog = libc::sock_fprog {
        // The spec holds at most 4096 instructions.
        len: program.len() as u16,
        // SockFilter is #[repr(C)] with the fields of the kernel's sock_filter; the kernel
        // only reads the program.
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    // SAFETY: `prog` describes `program.len()` instructions that outlive the call; the
    // kernel copies them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &raw const prog,
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENOSYS | libc::EINVAL) => format!(
                "cannot install the workload's seccomp filter: {e}; the guest kernel lacks CONFIG_SECCOMP_FILTER: rebuild it with guest-images/build-kernel.sh, or run with --security-opt seccomp=unconfined"
            ),
            _ => format!("cannot install the workload's seccomp filter: {e}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::io::Read;
    use std::os::fd::FromRawFd;

    use super::*;

    /// docker's default set, `0xa80425fb`.
    const DOCKER: u64 = 0xa804_25fb;

    /// A filter failing `mkdir` and `mkdirat` with EPERM, allowing everything else.
    fn no_mkdir() -> Vec<SockFilter> {
        let s = |code, k| SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        };
        let eq = |k, jt, jf| SockFilter {
            code: 0x15,
            jt,
            jf,
            k,
        };
        vec![
            s(0x20, 0), // A = nr
            eq(libc::SYS_mkdir as u32, 1, 0),
            eq(libc::SYS_mkdirat as u32, 0, 1),
            s(0x06, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
            s(0x06, libc::SECCOMP_RET_ALLOW),
        ]
    }

    /// Forks, applies `security` as `ids` in the child and execs `argv` there; returns its
    /// stdout and exit status.
    fn run_as(ids: Option<&Ids>, security: &Security, argv: &[&str]) -> (String, i32) {
        let args: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
        let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only makes syscalls (apply allocates only on its error path,
        // which then exits) and execs.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match apply(ids, security) {
                Ok(()) => {
                    // SAFETY: both descriptors are open.
                    unsafe { libc::dup2(fds[1], 1) };
                    // SAFETY: argv is NULL-terminated and its strings are alive.
                    unsafe { libc::execv(ptrs[0], ptrs.as_ptr()) };
                    126
                }
                Err(_) => 125,
            };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        // SAFETY: the write end is ours to close; the read end becomes the File's.
        unsafe { libc::close(fds[1]) };
        // SAFETY: `fds[0]` is an open descriptor nothing else owns.
        let mut out = unsafe { std::fs::File::from_raw_fd(fds[0]) };
        let mut text = String::new();
        out.read_to_string(&mut text).unwrap();
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        (text, libc::WEXITSTATUS(status))
    }

    /// The `Cap*`, `NoNewPrivs` and `Seccomp` lines of a process's status after `security`.
    fn status_after(ids: Option<&Ids>, security: &Security) -> Vec<String> {
        let (text, code) = run_as(ids, security, &["/bin/cat", "/proc/self/status"]);
        assert_eq!(code, 0, "{text}");
        text.lines()
            .filter(|l| {
                l.starts_with("Cap") || l.starts_with("NoNewPrivs:") || l.starts_with("Seccomp:")
            })
            .map(|l| l.replace('\t', " "))
            .collect()
    }

    fn root() -> bool {
        // SAFETY: no arguments.
        unsafe { libc::geteuid() == 0 }
    }

    fn docker_default() -> Security {
        Security {
            capabilities: Some(DOCKER),
            no_new_privs: true,
            seccomp: no_mkdir(),
            ..Security::default()
        }
    }

    /// runtime-tools' generator's config: all five sets docker's, on kvm since run spec 6.
    fn all_five_sets() -> Security {
        Security {
            inheritable: DOCKER,
            ambient: DOCKER,
            ..docker_default()
        }
    }

    #[test]
    fn an_oci_config_s_inheritable_and_ambient_sets_are_held_across_exec() {
        if !root() {
            eprintln!("skipped: needs root to set capabilities");
            return;
        }
        let ids = Ids {
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
        };
        // Root and a non-root user alike hold all five (runc's process_user, runtimetest).
        for who in [None, Some(&ids)] {
            let lines = status_after(who, &all_five_sets());
            for want in [
                "CapInh: 00000000a80425fb",
                "CapPrm: 00000000a80425fb",
                "CapEff: 00000000a80425fb",
                "CapBnd: 00000000a80425fb",
                "CapAmb: 00000000a80425fb",
            ] {
                assert!(
                    lines.iter().any(|l| l == want),
                    "{who:?}: {want} not in {lines:?}"
                );
            }
        }
        // An ambient set smaller than the inheritable one: a non-root user holds only it.
        let s = Security {
            inheritable: DOCKER,
            ambient: 1 << 10,
            ..docker_default()
        };
        let lines = status_after(Some(&ids), &s);
        for want in [
            "CapInh: 00000000a80425fb",
            "CapPrm: 0000000000000400",
            "CapEff: 0000000000000400",
            "CapAmb: 0000000000000400",
        ] {
            assert!(lines.iter().any(|l| l == want), "{want} not in {lines:?}");
        }
    }

    #[test]
    fn root_keeps_exactly_the_kept_set_across_exec() {
        if !root() {
            eprintln!("skipped: needs root to drop capabilities");
            return;
        }
        let lines = status_after(None, &docker_default());
        for want in [
            "CapInh: 0000000000000000",
            "CapPrm: 00000000a80425fb",
            "CapEff: 00000000a80425fb",
            "CapBnd: 00000000a80425fb",
            "CapAmb: 0000000000000000",
            "NoNewPrivs: 1",
            "Seccomp: 2",
        ] {
            assert!(lines.iter().any(|l| l == want), "{want} not in {lines:?}");
        }
    }

    #[test]
    fn a_non_root_user_holds_no_capability() {
        if !root() {
            eprintln!("skipped: needs root to switch users");
            return;
        }
        let ids = Ids {
            uid: 1000,
            gid: 1000,
            groups: vec![1000, 10],
        };
        let lines = status_after(Some(&ids), &docker_default());
        for want in [
            "CapInh: 0000000000000000",
            "CapPrm: 0000000000000000",
            "CapEff: 0000000000000000",
            "CapBnd: 00000000a80425fb",
            "CapAmb: 0000000000000000",
        ] {
            assert!(lines.iter().any(|l| l == want), "{want} not in {lines:?}");
        }
        let (status, code) = run_as(
            Some(&ids),
            &docker_default(),
            &["/bin/cat", "/proc/self/status"],
        );
        assert_eq!(code, 0);
        for want in [
            "Uid:\t1000\t1000\t1000\t1000\n",
            "Gid:\t1000\t1000\t1000\t1000\n",
            "Groups:\t10 1000 \n",
        ] {
            assert!(status.contains(want), "{want:?} not in {status}");
        }
    }

    #[test]
    fn the_filter_denies_what_it_denies() {
        let dir = std::env::temp_dir().join(format!("isol-guest-init-{}", std::process::id()));
        let d = dir.to_str().unwrap().to_owned();
        let unconfined = Security::default();
        let filtered = Security {
            capabilities: None,
            no_new_privs: true,
            seccomp: no_mkdir(),
            ..Security::default()
        };
        let (_, code) = run_as(None, &filtered, &["/bin/mkdir", &d]);
        assert_eq!(code, 1, "mkdir must fail under the filter");
        assert!(!dir.exists());
        let (_, code) = run_as(None, &unconfined, &["/bin/mkdir", &d]);
        assert_eq!(code, 0);
        assert!(dir.is_dir());
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn without_no_new_privs_the_filter_goes_on_first() {
        if !root() {
            eprintln!("skipped: needs root to drop capabilities");
            return;
        }
        // The kept set lacks CAP_SYS_ADMIN, without which the kernel refuses a filter from a
        // thread without no_new_privs: installed last, it would fail the run (EACCES).
        let s = Security {
            capabilities: Some(DOCKER),
            no_new_privs: false,
            seccomp: no_mkdir(),
            ..Security::default()
        };
        let ids = Ids {
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
        };
        for who in [None, Some(&ids)] {
            let lines = status_after(who, &s);
            assert!(lines.iter().any(|l| l == "NoNewPrivs: 0"), "{lines:?}");
            assert!(lines.iter().any(|l| l == "Seccomp: 2"), "{lines:?}");
        }
    }
}
