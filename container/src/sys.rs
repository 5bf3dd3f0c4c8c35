//! Small system helpers shared by the parent, the child and the init: the monotonic clock the
//! phases are measured with, C strings for execve, and close-on-exec flags. A leaf module: it
//! imports nothing of the crate but the error type.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;

use crate::error::ContainerError;

/// Monotonic clock in nanoseconds, comparable between the parent and the child.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec into the valid, exclusively borrowed struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// NUL-terminated copies of OS strings for execve; a NUL inside one is an error.
pub(crate) fn cstrings<'a>(
    items: impl IntoIterator<Item = &'a OsString>,
    what: &str,
) -> Result<Vec<CString>, ContainerError> {
    items.into_iter().map(|s| cstring(s, what)).collect()
}

pub(crate) fn cstring(s: &OsStr, what: &str) -> Result<CString, ContainerError> {
    CString::new(s.as_bytes()).map_err(|_| {
        ContainerError::Unsupported(format!(
            "The {what} {:?} contains a NUL byte, which cannot be passed to a program",
            s
        ))
    })
}

/// Marks a descriptor close-on-exec, ignoring failure (a descriptor of ours, known valid).
pub(crate) fn set_cloexec(fd: i32) {
    // SAFETY: fcntl(F_SETFD) only changes the close-on-exec flag of an fd this process owns.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// Clears a descriptor's close-on-exec flag, so that it survives exec.
pub(crate) fn clear_cloexec(fd: i32) -> io::Result<()> {
    // SAFETY: fcntl(F_SETFD) on an fd this process owns; it changes only its close-on-exec flag.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Marks every descriptor from `first` up close-on-exec. The error is that of listing the
/// descriptors, on kernels without close_range's CLOEXEC flag.
pub(crate) fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on this process's descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk /proc/self/fd.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first as i32)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number; a stale one (the dir fd) just fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}
