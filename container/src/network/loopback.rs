//! Bringing `lo` up in the calling thread's network namespace.
//!
//! This runs in the child on every container start (network modes none and bridge), so it is two
//! ioctls on a throwaway datagram socket: no fork, no exec, nothing from the container image, and
//! no filesystem access (it works before or after pivot_root). It needs CAP_NET_ADMIN in the
//! network namespace, so it must run before capabilities are dropped.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::NetworkError;

/// An `ifreq` for the interface `lo`, flags zeroed.
fn lo_request() -> libc::ifreq {
    // SAFETY: ifreq is a plain C struct (a name array and a union of plain data); all-zero is a
    // valid value for every field.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    request
}

fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The flags of `lo` in the current network namespace.
#[cfg(test)]
fn lo_flags() -> io::Result<libc::c_short> {
    let socket = inet_socket()?;
    let mut request = lo_request();
    get_flags(&socket, &mut request)?;
    // SAFETY: SIOCGIFFLAGS filled the ifru_flags member of the union.
    Ok(unsafe { request.ifr_ifru.ifru_flags })
}

fn get_flags(socket: &OwnedFd, request: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into `request`, a valid,
    // exclusively borrowed ifreq that outlives the call.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, request) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Child side, in the container's new network namespace: brings loopback up.
///
/// Idempotent (a no-op if `lo` is already up). Must run before capabilities are dropped.
pub fn loopback_up() -> Result<(), NetworkError> {
    let up = || -> io::Result<()> {
        let socket = inet_socket()?;
        let mut request = lo_request();
        get_flags(&socket, &mut request)?;
        // SAFETY: SIOCGIFFLAGS filled the ifru_flags member of the union.
        let flags = unsafe { request.ifr_ifru.ifru_flags };
        if flags & libc::IFF_UP as libc::c_short != 0 {
            return Ok(());
        }
        request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        // SAFETY: SIOCSIFFLAGS only reads `request`, a valid ifreq naming `lo` with its new flags.
        let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &request) };
        if result < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    up().map_err(|error| NetworkError::Loopback { error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn is_up() -> bool {
        lo_flags().unwrap() & libc::IFF_UP as libc::c_short != 0
    }

    /// Runs `body` in a thread that has its own, fresh network namespace. CLONE_NEWNET may be
    /// unshared by one thread of a multi-threaded process; the namespace dies with the thread.
    fn in_fresh_netns<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET) (the tests run as root)");
            body()
        })
        .join()
        .unwrap()
    }

    #[test]
    fn loopback_comes_up_in_a_fresh_netns() {
        let (before, after, echoed) = in_fresh_netns(|| {
            let before = is_up();
            // With lo down, 127.0.0.1 is unreachable even though the address exists.
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let target = listener.local_addr().unwrap();
            assert!(TcpStream::connect(target).is_err());
            let start = std::time::Instant::now();
            loopback_up().unwrap();
            let elapsed = start.elapsed();
            assert!(elapsed.as_millis() < 100, "loopback_up took {elapsed:?}");
            loopback_up().unwrap();
            let after = is_up();
            let mut client = TcpStream::connect(target).unwrap();
            client.write_all(b"ping").unwrap();
            let (mut server, _) = listener.accept().unwrap();
            let mut buffer = [0; 4];
            server.read_exact(&mut buffer).unwrap();
            (before, after, buffer == *b"ping")
        });
        assert!(!before, "lo of a fresh netns should start down");
        assert!(after && echoed);
        // The test process's own namespace was not touched.
        assert!(is_up());
    }
}
