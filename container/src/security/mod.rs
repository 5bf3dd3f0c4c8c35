//! Privilege reduction before exec: capabilities, no_new_privs, seccomp, and protection of the
//! isol binary from the container (CVE-2019-5736).
//!
//! Split between the two sides of `clone`:
//!
//! * **Parent, before clone** (may allocate): [`seccomp::default_filter`] compiles the BPF program.
//! * **Parent, in a thread**: [`exe::sealed_init_copy`] makes the sealed memfd copy of the init
//!   binary — from the start of `isol run` up to the clone ([`exe::InitCopy`]), or else after the
//!   clone while the child builds its rootfs; [`exe::send_fd`] hands it to the child with its go
//!   ([`exe::receive_fd`]).
//! * **Child, last steps before exec** (only syscalls), in this order:
//!   1. [`capabilities::drop_to`] the run's set (docker's [`capabilities::DEFAULT`] unless
//!      `--cap-add`/`--cap-drop`, [`capabilities::tweak`]) — needs `CAP_SETPCAP`, so before
//!      any uid change.
//!   2. switch to the workload's groups/gid/uid (the child module; it uses `CAP_SETGID` and
//!      `CAP_SETUID`, which the default set keeps). A non-root uid loses every capability here
//!      or at exec, as in docker.
//!   3. [`set_no_new_privs`] — anywhere before step 4; without `CAP_SYS_ADMIN` the kernel
//!      accepts a seccomp filter only with it.
//!   4. [`seccomp::install`] — as late as possible, so the runtime itself needs few syscalls
//!      under the filter (it must allow `execveat`, which the profile does). Without
//!      `no_new_privs` (`--security-opt no-new-privileges=false`) it goes first instead, before
//!      step 1, while the runtime still holds `CAP_SYS_ADMIN`, as runc does.
//!   5. [`exe::exec_self_as_init`] — `execveat` of the sealed memfd; nothing runs after it. The
//!      memfd must not be closed with the other descriptors before this (mark them
//!      close-on-exec instead, e.g. `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`).
//!
//! The child-side functions only make syscalls (`exec_self_as_init` also builds its two pointer
//! arrays); their errors carry only an [`Errno`] and static data.

pub mod capabilities;
pub mod exe;
pub mod seccomp;

use std::path::PathBuf;

use nix::errno::Errno;

/// What went wrong while reducing the privileges of a container process.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(
        "Could not drop capability {cap} from the bounding set: {errno}; the runtime must still \
         hold CAP_SETPCAP here (drop capabilities before switching to the workload's uid)"
    )]
    BoundingSetDrop { cap: u8, errno: Errno },
    #[error(
        "Could not clear the ambient capability set: {0}; isol needs Linux 4.3 or newer for \
         ambient capabilities"
    )]
    AmbientClear(Errno),
    #[error(
        "Could not raise capability {cap} into the ambient set: {errno}; an ambient capability \
         must be in the permitted and inheritable sets too"
    )]
    AmbientRaise { cap: u8, errno: Errno },
    #[error(
        "Could not set the permitted and effective capabilities: {0}; the runtime must still hold \
         every default capability here (run isol as root and drop capabilities before the uid \
         switch)"
    )]
    Capset(Errno),
    #[error("Could not set no_new_privs: {0}; isol needs Linux 3.5 or newer")]
    NoNewPrivs(Errno),
    #[error(
        "The seccomp profile compiles to {0} BPF instructions, over the kernel's limit of 4096; \
         use fewer argument rules (each condition costs up to 6 instructions)"
    )]
    SeccompTooLarge(usize),
    #[error(
        "Could not install the seccomp filter: {0}; call set_no_new_privs first and make sure \
         the kernel has CONFIG_SECCOMP_FILTER"
    )]
    SeccompInstall(Errno),
    #[error(
        "Could not open {path} to make a sealed copy of it: {errno}; check that /proc is mounted \
         and the file is readable"
    )]
    ExeOpen { path: PathBuf, errno: Errno },
    #[error(
        "Could not create an executable memfd: {0}; isol needs Linux 3.17 or newer and the \
         sysctl vm.memfd_noexec must not be 2"
    )]
    MemfdCreate(Errno),
    #[error(
        "Could not copy {path} into the sealed memfd: {errno}; check free memory and that the \
         file is not being replaced while isol starts"
    )]
    ExeCopy { path: PathBuf, errno: Errno },
    #[error(
        "Could not seal the memfd copy of the isol binary: {0}; isol needs Linux 3.17 or newer \
         with memfd sealing"
    )]
    Seal(Errno),
    #[error(
        "The thread making the sealed copy of the container's init panicked; see the message above"
    )]
    CopyThread,
    #[error("An exec needs at least argv[0]; pass the program name as the first argument")]
    EmptyArgv,
    #[error(
        "Could not execute the sealed isol binary: {0}; the memfd must still be open in the \
         child (do not close it with the other descriptors) and the kernel must allow \
         execveat with AT_EMPTY_PATH"
    )]
    Exec(Errno),
}

/// Sets `no_new_privs` for the calling thread (and everything it execs): setuid/setgid bits and
/// file capabilities no longer grant anything, and an unprivileged process may install a seccomp
/// filter. It cannot be unset.
pub fn set_no_new_privs() -> Result<(), SecurityError> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes only integer arguments and touches no memory of ours.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    Errno::result(ret)
        .map(drop)
        .map_err(SecurityError::NoNewPrivs)
}

/// Whether `no_new_privs` is set for the calling thread.
pub fn no_new_privs() -> Result<bool, SecurityError> {
    // SAFETY: PR_GET_NO_NEW_PRIVS takes only integer arguments and touches no memory of ours.
    let ret = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    Errno::result(ret)
        .map(|v| v == 1)
        .map_err(SecurityError::NoNewPrivs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_line_and_capitalised() {
        let errors = [
            SecurityError::BoundingSetDrop {
                cap: 21,
                errno: Errno::EPERM,
            },
            SecurityError::Capset(Errno::EPERM),
            SecurityError::SeccompInstall(Errno::EACCES),
            SecurityError::MemfdCreate(Errno::EACCES),
            SecurityError::Exec(Errno::ENOENT),
            SecurityError::EmptyArgv,
        ];
        for e in errors {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "{msg}");
            assert!(msg.starts_with(char::is_uppercase), "{msg}");
        }
    }

    #[test]
    fn no_new_privs_reads_back() {
        // Only reads; setting it would affect the test harness thread.
        assert!(no_new_privs().is_ok());
    }
}
