//! Protection of the isol binary from the container (CVE-2019-5736).
//!
//! The attack: a process in the container opens `/proc/<pid>/exe` of a runtime process that
//! entered the container (directly, or `O_PATH` and then `/proc/self/fd/N` once the runtime has
//! exec'd) and writes through it, replacing the runtime binary on the host.
//!
//! The defence: before anything of the container runs, the runtime copies the binary of the
//! container's init — `isol-init`, a small binary of its own beside isol, or isol itself, which
//! has the same init mode ([`init_binary`]) — into a memfd and seals it ([`sealed_init_copy`];
//! `isol run` starts it in a thread as soon as its command line is parsed and takes it before
//! the clone, [`InitCopy`]; otherwise a thread makes it while the cloned child builds its rootfs;
//! the descriptor goes with the child's go, [`send_fd`]): no write, shrink or grow is possible through any
//! descriptor, and the seals cannot be removed. The child's last step is [`exec_self_as_init`],
//! an `execveat` of that memfd, so from then on `/proc/<pid>/exe` of every process in the
//! container is the sealed memfd (`/memfd:isol-init (deleted)`), never a host file. The init then
//! execs the workload.
//!
//! Why a copy, and not runc ≥ 1.2's read-only overlayfs or bind mount of the binary: a copy
//! also holds against kernel bugs that let writes pierce a read-only mount into the page cache
//! (Dirty COW, Dirty Pipe and their kind), at the price of the copy: ~0.5 ms of CPU for the
//! 1.4 MiB `isol-init`, made while isol does other work.
//!
//! The memfd is created with `MFD_CLOEXEC`: `execveat(fd, "", AT_EMPTY_PATH)` of a close-on-exec
//! descriptor works for ELF binaries because the kernel opens the file before closing the
//! descriptors (only scripts fail, with `ENOENT`, since their interpreter would need
//! `/dev/fd/N`). The integration tests check it.
//!
//! Cost: one copy of the binary per container into shared memory, charged to the cgroup of the
//! process that copies (isol's), not the container's.

use std::convert::Infallible;
use std::ffi::{CStr, CString, c_char};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::errno::Errno;

use super::SecurityError;

/// Seals every sealed copy gets: no writes, no size change, no further seals.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Makes a sealed, close-on-exec memfd copy of the running binary (`/proc/self/exe`).
pub fn sealed_self_copy() -> Result<OwnedFd, SecurityError> {
    copy_and_seal(Path::new("/proc/self/exe"), c"isol")
}

/// Makes a sealed, close-on-exec memfd copy of the file at `path`.
pub fn sealed_copy(path: &Path) -> Result<OwnedFd, SecurityError> {
    copy_and_seal(path, c"isol-sealed")
}

/// Name of the small binary that holds only the container's init (`src/bin/isol-init.rs`).
pub const INIT_BINARY: &str = "isol-init";

/// The binary the container's init runs from: `isol-init` beside the running executable (how
/// isol is built and installed), else the running executable itself, which has the same init
/// mode. Both accept the same arguments (`child::INIT_MARKER` …).
pub fn init_binary() -> std::path::PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(INIT_BINARY)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| "/proc/self/exe".into())
}

/// Makes the sealed copy the container's init is exec'd from: of [`init_binary`] (1.2 MiB,
/// where the whole of isol is 4 MiB).
pub fn sealed_init_copy() -> Result<OwnedFd, SecurityError> {
    let path = init_binary();
    let fd = copy_and_seal(&path, c"isol-init")?;
    tracing::debug!(from = %path.display(), "sealed copy of the container's init made");
    Ok(fd)
}

/// A sealed copy of the container's init ([`sealed_init_copy`]) made in a thread of its own from
/// as early as its caller likes, so that the copy overlaps the caller's other work: `isol run`
/// starts it as soon as its command line says a container will run, and the run takes it
/// ([`crate::process::run_with_init`]) before it clones the container's child, since a child
/// cloned from a process with other threads must not allocate (a lock held by another thread
/// stays held in the child). The thread blocks every signal, so that the signals isol takes
/// stay with its main thread.
#[derive(Debug)]
pub struct InitCopy(Result<std::thread::JoinHandle<Result<OwnedFd, SecurityError>>, ()>);

impl InitCopy {
    /// Starts the copy. Where no thread can be started, [`InitCopy::finish`] makes the copy itself.
    pub fn start() -> Self {
        let thread = std::thread::Builder::new()
            .name("isol-init-copy".into())
            // It only makes system calls and builds the binary's path.
            .stack_size(64 << 10)
            .spawn(|| {
                let _ = nix::sys::signal::SigSet::all().thread_block();
                sealed_init_copy()
            });
        InitCopy(thread.map_err(drop))
    }

    /// Waits for the copy (makes it here when no thread could be started) and returns it; the
    /// thread has ended when this returns.
    pub fn finish(self) -> Result<OwnedFd, SecurityError> {
        match self.0 {
            Ok(thread) => thread.join().unwrap_or(Err(SecurityError::CopyThread)),
            Err(()) => sealed_init_copy(),
        }
    }
}

fn copy_and_seal(path: &Path, name: &CStr) -> Result<OwnedFd, SecurityError> {
    let io_errno = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let mut source = File::open(path).map_err(|e| SecurityError::ExeOpen {
        path: path.to_owned(),
        errno: io_errno(e),
    })?;
    let mut memfd = File::from(create_memfd(name)?);
    // std's copy uses copy_file_range, then sendfile, then read/write, whichever the kernel
    // supports between these two files; it copies up to end of file.
    std::io::copy(&mut source, &mut memfd).map_err(|e| SecurityError::ExeCopy {
        path: path.to_owned(),
        errno: io_errno(e),
    })?;
    let memfd = OwnedFd::from(memfd);
    seal(memfd.as_fd())?;
    Ok(memfd)
}

/// An executable memfd with sealing allowed.
fn create_memfd(name: &CStr) -> Result<OwnedFd, SecurityError> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) asks for an executable memfd explicitly: with vm.memfd_noexec=1 a
    // memfd created without it cannot be executed. Older kernels reject the flag with EINVAL.
    match memfd_create(name, flags | libc::MFD_EXEC) {
        Err(SecurityError::MemfdCreate(Errno::EINVAL)) => memfd_create(name, flags),
        result => result,
    }
}

fn memfd_create(name: &CStr, flags: libc::c_uint) -> Result<OwnedFd, SecurityError> {
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    let fd = Errno::result(fd).map_err(SecurityError::MemfdCreate)?;
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn seal(fd: BorrowedFd<'_>) -> Result<(), SecurityError> {
    // F_SEAL_EXEC (Linux 6.3) also freezes the mode bits; older kernels reject it with EINVAL.
    match add_seals(fd, SEALS | libc::F_SEAL_EXEC) {
        Err(Errno::EINVAL) => add_seals(fd, SEALS),
        result => result,
    }
    .map_err(SecurityError::Seal)
}

fn add_seals(fd: BorrowedFd<'_>, seals: libc::c_int) -> Result<(), Errno> {
    // F_SEAL_WRITE fails with EBUSY while a page of the memfd is still referenced from
    // elsewhere (the kernel waits ~150 ms for such pins, then gives up): the splice that
    // copied isol in can leave its pages in a pipe buffer a moment longer. Seen once in a
    // hundred runs on a busy host; tried again a few times before it is an error.
    let mut tries = 0;
    loop {
        // SAFETY: F_ADD_SEALS takes an integer argument and touches no memory of ours.
        let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
        match Errno::result(ret) {
            Err(Errno::EBUSY) if tries < 5 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            r => return r.map(drop),
        }
    }
}

/// The seals on `fd` (`F_GET_SEALS`), e.g. to check a copy in `isol doctor` or tests.
pub fn seals(fd: BorrowedFd<'_>) -> Result<libc::c_int, Errno> {
    // SAFETY: F_GET_SEALS takes no argument and touches no memory of ours.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    Errno::result(ret)
}

/// Replaces the calling process with the program in `memfd` (normally the sealed copy of isol,
/// started in its container-init mode by `init_args`), with `execveat(memfd, "", argv, envp,
/// AT_EMPTY_PATH)`. `init_args[0]` is the program name the new process sees; `env` holds
/// `KEY=VALUE` strings. Returns only on failure.
///
/// It allocates the two pointer arrays execveat needs (no string copies), so the parent must be
/// single-threaded at clone time, as for any allocation in the child.
pub fn exec_self_as_init(
    memfd: BorrowedFd<'_>,
    init_args: &[CString],
    env: &[CString],
) -> Result<Infallible, SecurityError> {
    if init_args.is_empty() {
        return Err(SecurityError::EmptyArgv);
    }
    let argv = null_terminated(init_args);
    let envp = null_terminated(env);
    // SAFETY: the path is an empty NUL-terminated string; `argv` and `envp` are NULL-terminated
    // arrays of pointers to NUL-terminated strings that outlive the call. On success the call
    // does not return.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            memfd.as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(SecurityError::Exec(Errno::last()))
}

/// Sends `fd` with a one-byte message over the unix socket `sock` (`SCM_RIGHTS`): how the parent
/// hands the sealed copy to a child cloned before the copy existed.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<(), Errno> {
    send_fds(sock, &[fd])
}

/// Receives the descriptor [`send_fd`] sent, close-on-exec. Fails with `EPIPE` when the other end
/// closed without sending one.
pub fn receive_fd(sock: BorrowedFd<'_>) -> Result<OwnedFd, Errno> {
    receive_fds(sock)?.into_iter().next().ok_or(Errno::EPIPE)
}

/// The most descriptors one message of [`send_fds`] carries (the kernel's `SCM_MAX_FD`).
pub const MAX_FDS: usize = 253;

/// Sends `fds` (none, or up to [`MAX_FDS`]) in one message over the unix socket `sock`.
pub fn send_fds(sock: BorrowedFd<'_>, fds: &[BorrowedFd<'_>]) -> Result<(), Errno> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [std::io::IoSlice::new(b"m")];
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsg: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsg, MsgFlags::empty(), None).map(drop)
}

/// Receives the descriptors one [`send_fds`] sent (maybe none), close-on-exec. Fails with
/// `EPIPE` when the other end closed without sending.
pub fn receive_fds(sock: BorrowedFd<'_>) -> Result<Vec<OwnedFd>, Errno> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(Errno::EINTR) => continue,
            result => break result?,
        }
    };
    if msg.bytes == 0 {
        return Err(Errno::EPIPE);
    }
    let mut out = Vec::new();
    for cmsg in msg.cmsgs().map_err(|_| Errno::EBADMSG)? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: the kernel just installed these descriptors in our table for us alone.
            out.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(out)
}

/// The `char *const[]` form of `strings`, borrowing them.
fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    let mut pointers = Vec::with_capacity(strings.len() + 1);
    pointers.extend(strings.iter().map(|s| s.as_ptr()));
    pointers.push(std::ptr::null());
    pointers
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::time::Instant;

    use super::*;

    #[test]
    fn self_copy_is_sealed_and_complete() {
        let start = Instant::now();
        let fd = sealed_self_copy().unwrap();
        let elapsed = start.elapsed();
        let size = std::fs::metadata("/proc/self/exe").unwrap().len();
        println!(
            "exe: sealed_self_copy() of {:.1} MiB took {elapsed:?}",
            size as f64 / (1 << 20) as f64
        );

        let got = seals(fd.as_fd()).unwrap();
        assert_eq!(got & SEALS, SEALS, "seals {got:#x}");
        let file = File::from(fd);
        assert_eq!(file.metadata().unwrap().len(), size);
        let mut head = [0u8; 4];
        file.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(&head, b"\x7fELF");
    }

    #[test]
    fn sealed_copy_refuses_changes() {
        let file = File::from(sealed_self_copy().unwrap());
        let err = file.write_at(b"x", 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        let err = file.set_len(1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        // Seals cannot be removed, nor added to.
        assert_eq!(
            add_seals(file.as_fd(), libc::F_SEAL_FUTURE_WRITE),
            Err(Errno::EPERM)
        );
    }

    #[test]
    fn the_init_copy_is_of_a_binary_with_the_init_mode() {
        let fd = sealed_init_copy().unwrap();
        let size = File::from(fd).metadata().unwrap().len();
        let path = init_binary();
        println!("exe: init binary {} ({size} bytes)", path.display());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    }

    #[test]
    fn exec_needs_argv0() {
        let fd = sealed_copy(Path::new("/bin/true")).unwrap();
        let err = exec_self_as_init(fd.as_fd(), &[], &[]).unwrap_err();
        assert!(matches!(err, SecurityError::EmptyArgv));
    }

    #[test]
    fn a_sealed_copy_passes_over_a_socket() {
        use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let copy = sealed_copy(Path::new("/bin/true")).unwrap();
        send_fd(a.as_fd(), copy.as_fd()).unwrap();
        let got = receive_fd(b.as_fd()).unwrap();
        assert_ne!(got.as_raw_fd(), copy.as_raw_fd());
        assert_eq!(seals(got.as_fd()).unwrap() & SEALS, SEALS);
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(got.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        // The other end closed without a descriptor: the child must not wait forever.
        drop(a);
        assert_eq!(receive_fd(b.as_fd()).unwrap_err(), Errno::EPIPE);
    }

    #[test]
    fn pointer_arrays_are_null_terminated() {
        let strings = [c"isol".to_owned(), c"init".to_owned()];
        let pointers = null_terminated(&strings);
        assert_eq!(pointers.len(), 3);
        assert!(pointers[2].is_null());
        // SAFETY: pointers[1] points to the NUL-terminated string owned by `strings`.
        assert_eq!(unsafe { CStr::from_ptr(pointers[1]) }, c"init");
        assert!(null_terminated(&[])[0].is_null());
    }
}
