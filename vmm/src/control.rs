//! The exec channel's host side (docs/vmm.md, "The exec channel"): a thread of its own
//! (`isol-control`) between the clients of a listening unix socket (`isol exec`, one
//! connection per process) and the guest init's end of the `isol.control` console port,
//! which the console device reaches through a socketpair like any input and output.
//!
//! The guest is untrusted and so are clients: every socket is non-blocking, nothing is read
//! that could not be buffered within fixed bounds (frames of at most
//! [`control::MAX_PAYLOAD`], per exec at most [`control::WINDOW`] bytes of output and of stdin
//! in flight, checked here in both directions), and a misbehaving exec is ended with an
//! error frame to its client. Nothing here touches the VMM's event loop or the device thread:
//! a guest that floods or stalls the channel stalls only this thread.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use isol_guest_init::control::{
    self, Decoder, Frame, FrameError, KIND_ACK, KIND_CLOSE, KIND_ERROR, KIND_EXIT, KIND_START,
    KIND_STDERR, KIND_STDIN, KIND_STDOUT, KIND_VM_PAUSE, KIND_VM_RESUME, MAX_PAYLOAD, WINDOW,
};
use vmm_sys_util::eventfd::EventFd;

use crate::vstate::pause::Pauser;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzzing;

/// The wire format, for clients (`isol exec`).
pub use isol_guest_init::control as wire;

/// Most execs served at once; a further client gets an error.
pub const MAX_CLIENTS: usize = 64;
/// Bytes waiting for the guest above which clients are not read.
const TO_GUEST_LIMIT: usize = 4 * MAX_PAYLOAD;
/// Most bytes queued for one client: its output window and room for the small frames (STARTED,
/// ACKs, EXIT). A guest that fills it (frames a client does not read, beyond its credit) ends
/// that exec.
const CLIENT_OUT_LIMIT: usize = WINDOW + MAX_PAYLOAD;
/// After the VM: how long clients get to take their last frames.
const FLUSH_LIMIT: Duration = Duration::from_secs(1);
/// How long a pause or resume waits for the vCPUs (they park within one exit).
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// One connected `isol exec`.
#[derive(Debug)]
struct Client {
    fd: OwnedFd,
    decoder: Decoder,
    /// Frames for it, encoded.
    out: Vec<u8>,
    /// Its stream id, once it sent START.
    stream: Option<u32>,
    /// Output the guest sent that the client has not acknowledged.
    out_unacked: usize,
    /// Stdin the client sent that the guest has not acknowledged.
    in_unacked: usize,
    /// EXIT or ERROR is queued: close once `out` is written.
    done: bool,
}

impl Client {
    fn send(&mut self, f: &Frame) {
        f.encode_into(&mut self.out);
    }

    fn fail(&mut self, msg: &str) {
        self.send(&Frame::new(0, KIND_ERROR, msg.as_bytes()));
        self.done = true;
    }
}

/// The channel's state, one per VM.
#[derive(Debug)]
pub struct Channel {
    listener: OwnedFd,
    guest: OwnedFd,
    guest_decoder: Decoder,
    guest_broken: bool,
    to_guest: Vec<u8>,
    clients: HashMap<RawFd, Client>,
    by_stream: HashMap<u32, RawFd>,
    next_stream: u32,
    /// How a client's PAUSE and RESUME reach the vCPUs (`vstate::pause`).
    pauser: Option<std::sync::Arc<Pauser>>,
}

/// Makes `fd` non-blocking.
pub(crate) fn nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns; integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `read` into `buf`: `Some(0)` at EOF, `None` when nothing is there (or interrupted).
fn read(fd: RawFd, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
    // SAFETY: reads into the live buffer, at most its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = std::io::Error::last_os_error();
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// Sends what it can of `buf` (without SIGPIPE), removing it; an error: the peer is gone.
fn flush(fd: RawFd, buf: &mut Vec<u8>) -> std::io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: sends from the live buffer, at most its length.
        let n = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            };
        }
        buf.drain(..n as usize);
    }
    Ok(())
}

impl Channel {
    /// The channel between `listener`'s clients and `guest`, the VMM's end of the console
    /// port's socketpair. Both are made non-blocking.
    pub fn new(listener: OwnedFd, guest: OwnedFd) -> std::io::Result<Self> {
        nonblocking(listener.as_raw_fd())?;
        nonblocking(guest.as_raw_fd())?;
        Ok(Channel {
            listener,
            guest,
            guest_decoder: Decoder::new(),
            guest_broken: false,
            to_guest: Vec::new(),
            clients: HashMap::new(),
            by_stream: HashMap::new(),
            next_stream: 1,
            pauser: None,
        })
    }

    /// Serves the clients' PAUSE and RESUME with `pauser`.
    pub fn with_pauser(mut self, pauser: std::sync::Arc<Pauser>) -> Self {
        self.pauser = Some(pauser);
        self
    }

    /// A client's PAUSE or RESUME: the VMM's, never the guest's. Waits (this thread only,
    /// at most [`PAUSE_TIMEOUT`]) until the vCPUs are parked or run; EXIT 0, or ERROR.
    fn pause(&mut self, fd: RawFd, pause: bool) {
        let done = match &self.pauser {
            None => Err("this VM cannot be paused (the VMM serves no pauses)".to_string()),
            Some(p) => p.set(pause, PAUSE_TIMEOUT).map_err(|e| e.to_string()),
        };
        let Some(c) = self.clients.get_mut(&fd) else {
            return;
        };
        match done {
            Ok(()) => {
                c.send(&Frame::new(0, KIND_EXIT, 0i32.to_le_bytes().to_vec()));
                c.done = true;
            }
            Err(e) => c.fail(&e),
        }
    }

    /// Serves until `stop` is written, then gives the clients their last frames.
    pub fn serve(mut self, stop: &EventFd) {
        let mut buf = vec![0u8; MAX_PAYLOAD + control::HEADER_LEN];
        while self.turn(stop, &mut buf, -1).is_some() {}
        self.finish(&mut buf);
    }

    /// One turn of the loop: waits up to `timeout` ms (-1: for ever) for an event and serves
    /// what is ready. `None` once `stop` is written (or poll fails), else how many
    /// descriptors were ready.
    fn turn(&mut self, stop: &EventFd, buf: &mut [u8], timeout: libc::c_int) -> Option<usize> {
        let mut fds = vec![
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                // A broken channel is not watched (poll skips a negative fd).
                fd: if self.guest_broken {
                    -1
                } else {
                    self.guest.as_raw_fd()
                },
                events: libc::POLLIN
                    | if self.to_guest.is_empty() {
                        0
                    } else {
                        libc::POLLOUT
                    },
                revents: 0,
            },
            libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let read_clients = self.to_guest.len() < TO_GUEST_LIMIT;
        for (fd, c) in &self.clients {
            let mut events = 0;
            if read_clients && !c.done {
                events |= libc::POLLIN;
            }
            if !c.out.is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                // Nothing wanted: not watched (poll reports a hang-up whatever is asked).
                fd: if events == 0 { -1 } else { *fd },
                events,
                revents: 0,
            });
        }
        // SAFETY: polls the live array of pollfds, its length given.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                return Some(0);
            }
            tracing::warn!(
                "the exec channel stops: poll: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        if fds[0].revents != 0 {
            return None;
        }
        if fds[1].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            self.read_guest(buf);
        }
        if fds[2].revents & libc::POLLIN != 0 {
            self.accept();
        }
        for p in fds[3..].iter().filter(|p| p.fd >= 0) {
            let gone = p.revents & (libc::POLLHUP | libc::POLLERR) != 0;
            if p.revents & libc::POLLOUT != 0 {
                self.write_client(p.fd);
            }
            if p.revents & libc::POLLIN != 0 || (gone && read_clients) {
                self.read_client(p.fd, buf);
            } else if gone {
                // A client that hung up while the guest's queue is full is not read (what it
                // sent would grow the queue past its limit): its output fails to go, and it is
                // dropped.
                self.write_client(p.fd);
            }
        }
        if !self.to_guest.is_empty()
            && !self.guest_broken
            && flush(self.guest.as_raw_fd(), &mut self.to_guest).is_err()
        {
            self.break_guest("the guest's end of the channel is gone");
        }
        let done: Vec<RawFd> = self
            .clients
            .iter()
            .filter(|(_, c)| c.done && c.out.is_empty())
            .map(|(fd, _)| *fd)
            .collect();
        for fd in done {
            self.drop_client(fd, false);
        }
        Some(n as usize)
    }

    /// After the VM: what the guest still sent goes out, every other client is told its
    /// process was killed with the VM, each gets up to [`FLUSH_LIMIT`] to take it.
    fn finish(&mut self, buf: &mut [u8]) {
        if !self.guest_broken {
            // The device's end may be closed by now: its EOF is the VM's end, not a break.
            self.guest_broken = true;
            self.read_guest_until_eof(buf);
        }
        for c in self.clients.values_mut() {
            if !c.done {
                c.fail(
                    "the run ended (its workload exited or it was stopped): the process was killed with the VM",
                );
            }
        }
        let end = Instant::now() + FLUSH_LIMIT;
        while Instant::now() < end && self.clients.values().any(|c| !c.out.is_empty()) {
            let mut fds: Vec<libc::pollfd> = self
                .clients
                .iter()
                .filter(|(_, c)| !c.out.is_empty())
                .map(|(fd, _)| libc::pollfd {
                    fd: *fd,
                    events: libc::POLLOUT,
                    revents: 0,
                })
                .collect();
            // SAFETY: polls the live array of pollfds, its length given.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
            for p in fds {
                if p.revents != 0 {
                    self.write_client(p.fd);
                }
            }
        }
    }

    fn accept(&mut self) {
        // SAFETY: accept4 with no address wanted; the new descriptor is owned below.
        let fd = unsafe {
            libc::accept4(
                self.listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return;
        }
        use std::os::fd::FromRawFd;
        // SAFETY: a descriptor accept4 just made, owned here only.
        self.add_client(unsafe { OwnedFd::from_raw_fd(fd) });
    }

    /// Serves a connected client on `fd` (non-blocking), or tells it why not.
    fn add_client(&mut self, fd: OwnedFd) {
        let mut c = Client {
            decoder: Decoder::new(),
            out: Vec::new(),
            stream: None,
            out_unacked: 0,
            in_unacked: 0,
            done: false,
            fd,
        };
        if self.clients.len() >= MAX_CLIENTS {
            c.fail(&format!(
                "the VM already runs {MAX_CLIENTS} exec'd processes; wait for one to end"
            ));
        } else if self.guest_broken {
            c.fail("the VM's exec channel is broken (the guest sent a malformed frame)");
        }
        self.clients.insert(c.fd.as_raw_fd(), c);
    }

    fn write_client(&mut self, fd: RawFd) {
        let Some(c) = self.clients.get_mut(&fd) else {
            return;
        };
        if flush(fd, &mut c.out).is_err() {
            self.drop_client(fd, true);
        }
    }

    /// Forgets client `fd`; `gone`: before its process ended (the guest kills it).
    fn drop_client(&mut self, fd: RawFd, gone: bool) {
        let Some(c) = self.clients.remove(&fd) else {
            return;
        };
        if let Some(s) = c.stream {
            self.by_stream.remove(&s);
            if gone && !c.done && !self.guest_broken {
                Frame::new(s, KIND_CLOSE, Vec::new()).encode_into(&mut self.to_guest);
            }
        }
    }

    fn read_client(&mut self, fd: RawFd, buf: &mut [u8]) {
        let Some(c) = self.clients.get_mut(&fd) else {
            return;
        };
        if c.done {
            return;
        }
        let n = match read(fd, buf) {
            Ok(Some(0)) | Err(_) => return self.drop_client(fd, true),
            Ok(Some(n)) => n,
            Ok(None) => return,
        };
        let mut frames = Vec::new();
        if let Err(e) = c.decoder.push(&buf[..n], &mut frames) {
            c.fail(&format!("isol exec sent {e}"));
            return self.close_stream(fd);
        }
        for f in frames {
            if let Err(e) = self.on_client_frame(fd, f) {
                if let Some(c) = self.clients.get_mut(&fd) {
                    c.fail(&format!("isol exec sent {e}"));
                }
                return self.close_stream(fd);
            }
        }
    }

    /// A client that broke the protocol: its process is killed.
    fn close_stream(&mut self, fd: RawFd) {
        if let Some(c) = self.clients.get_mut(&fd)
            && let Some(s) = c.stream.take()
        {
            self.by_stream.remove(&s);
            if !self.guest_broken {
                Frame::new(s, KIND_CLOSE, Vec::new()).encode_into(&mut self.to_guest);
            }
        }
    }

    fn on_client_frame(&mut self, fd: RawFd, mut f: Frame) -> Result<(), FrameError> {
        let Some(c) = self.clients.get_mut(&fd) else {
            return Ok(());
        };
        if c.done {
            return Ok(());
        }
        if matches!(f.kind, KIND_VM_PAUSE | KIND_VM_RESUME) && c.stream.is_none() {
            self.pause(fd, f.kind == KIND_VM_PAUSE);
            return Ok(());
        }
        if !control::from_client(f.kind) || (f.kind == KIND_START) == c.stream.is_some() {
            return Err(FrameError::BadKind(f.kind));
        }
        match f.kind {
            KIND_START => {
                let s = self.next_stream;
                self.next_stream = self.next_stream.wrapping_add(1).max(1);
                c.stream = Some(s);
                self.by_stream.insert(s, fd);
            }
            KIND_STDIN => {
                c.in_unacked += f.payload.len();
                if c.in_unacked > WINDOW {
                    return Err(FrameError::WindowOverrun);
                }
            }
            KIND_ACK => {
                let n = f.u32()? as usize;
                c.out_unacked = c.out_unacked.saturating_sub(n);
            }
            _ => {}
        }
        if let Some(s) = c.stream {
            f.stream = s;
            f.encode_into(&mut self.to_guest);
        }
        Ok(())
    }

    fn read_guest(&mut self, buf: &mut [u8]) {
        loop {
            let n = match read(self.guest.as_raw_fd(), buf) {
                Ok(Some(0)) | Err(_) => {
                    return self.break_guest("the guest's end of the channel is gone");
                }
                Ok(Some(n)) => n,
                Ok(None) => return,
            };
            let mut frames = Vec::new();
            let r = self.guest_decoder.push(&buf[..n], &mut frames);
            for f in frames {
                self.on_guest_frame(f);
            }
            if let Err(e) = r {
                return self.break_guest(&format!("the guest sent {e}"));
            }
        }
    }

    /// What the guest sent before the VM ended (the device's end closed or not).
    fn read_guest_until_eof(&mut self, buf: &mut [u8]) {
        while let Ok(Some(n)) = read(self.guest.as_raw_fd(), buf) {
            if n == 0 {
                return;
            }
            let mut frames = Vec::new();
            let r = self.guest_decoder.push(&buf[..n], &mut frames);
            for f in frames {
                self.on_guest_frame(f);
            }
            if r.is_err() {
                return;
            }
        }
    }

    /// The guest's side cannot be read any further: every exec ends with `why`.
    fn break_guest(&mut self, why: &str) {
        if !self.guest_broken {
            tracing::warn!("the exec channel is broken: {why}");
        }
        self.guest_broken = true;
        self.to_guest.clear();
        self.by_stream.clear();
        for c in self.clients.values_mut() {
            if !c.done {
                c.fail(&format!("the VM's exec channel is broken: {why}"));
            }
        }
    }

    fn on_guest_frame(&mut self, f: Frame) {
        let Some(&fd) = self.by_stream.get(&f.stream) else {
            // A stream whose client is gone (or never was): dropped.
            return;
        };
        let Some(c) = self.clients.get_mut(&fd) else {
            return;
        };
        let bad = |c: &mut Client, e: FrameError| c.fail(&format!("the guest sent {e}"));
        if !control::from_guest(f.kind) {
            bad(c, FrameError::BadKind(f.kind));
            return self.close_stream(fd);
        }
        match f.kind {
            KIND_STDOUT | KIND_STDERR => {
                c.out_unacked += f.payload.len();
                if c.out_unacked > WINDOW {
                    bad(c, FrameError::WindowOverrun);
                    return self.close_stream(fd);
                }
            }
            KIND_ACK => match f.u32() {
                Ok(n) => {
                    c.in_unacked = c.in_unacked.saturating_sub(n as usize);
                }
                Err(e) => {
                    bad(c, e);
                    return self.close_stream(fd);
                }
            },
            KIND_EXIT => {
                if let Err(e) = f.i32() {
                    bad(c, e);
                    return self.close_stream(fd);
                }
            }
            _ => {}
        }
        let payload = if f.kind == KIND_ERROR {
            // The guest's words, printed by `isol exec` on the user's terminal: one line,
            // bounded, nothing a terminal would act on.
            error_line(&f.payload).into_bytes()
        } else {
            f.payload
        };
        if c.out.len() + control::HEADER_LEN + payload.len() > CLIENT_OUT_LIMIT {
            bad(c, FrameError::WindowOverrun);
            return self.close_stream(fd);
        }
        c.send(&Frame::new(0, f.kind, payload));
        if matches!(f.kind, KIND_EXIT | KIND_ERROR) {
            c.done = true;
            if let Some(s) = c.stream.take() {
                self.by_stream.remove(&s);
            }
        }
    }
}

/// Longest error message relayed from the guest, in characters.
pub const MAX_ERROR_LINE: usize = 512;

/// An ERROR frame's payload (from the guest: anything) as one line fit for a terminal: UTF-8
/// (invalid bytes replaced), newlines as spaces, other control characters escaped (`\u{1b}`),
/// at most [`MAX_ERROR_LINE`] characters (cut short: then one more, `…`).
pub fn error_line(payload: &[u8]) -> String {
    let mut out = String::new();
    let mut n = 0;
    for c in String::from_utf8_lossy(payload).chars() {
        let before = out.len();
        match c {
            '\n' => out.push(' '),
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
        n += out[before..].chars().count();
        if n > MAX_ERROR_LINE {
            out.truncate(before);
            out.push('…');
            break;
        }
    }
    out
}

/// A connected pair of stream sockets, both close-on-exec.
pub fn socketpair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the live array.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: made by socketpair just now, owned here only.
    let a = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    // SAFETY: as above.
    let b = unsafe { OwnedFd::from_raw_fd(fds[1]) };
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use isol_guest_init::control::{KIND_SIGNAL, KIND_STARTED, StartRequest};
    use isol_guest_init::spec::Spec;
    use std::io::{Read, Write};
    use std::os::unix::net::{UnixListener, UnixStream};

    /// A channel on a real listening socket and a real socketpair, served by its thread; the
    /// test plays the guest on `guest` and clients by connecting.
    struct Rig {
        path: std::path::PathBuf,
        guest: UnixStream,
        stop: EventFd,
        thread: Option<std::thread::JoinHandle<()>>,
        _dir: tempfile::TempDir,
    }

    impl Rig {
        fn new() -> Self {
            Self::with(None)
        }

        fn with(pauser: Option<std::sync::Arc<Pauser>>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("c.sock");
            let l = UnixListener::bind(&path).unwrap();
            let (ours, theirs) = socketpair().unwrap();
            let mut ch = Channel::new(l.into(), ours).unwrap();
            if let Some(p) = pauser {
                ch = ch.with_pauser(p);
            }
            let stop = EventFd::new(libc::EFD_NONBLOCK).unwrap();
            let s2 = stop.try_clone().unwrap();
            let thread = std::thread::spawn(move || ch.serve(&s2));
            let guest = UnixStream::from(theirs);
            guest
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            Rig {
                path,
                guest,
                stop,
                thread: Some(thread),
                _dir: dir,
            }
        }

        fn client(&self) -> UnixStream {
            let c = UnixStream::connect(&self.path).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            c
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = self.stop.write(1);
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    fn read_frame(s: &mut UnixStream) -> Frame {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while out.is_empty() {
            assert_eq!(s.read(&mut b).unwrap(), 1, "EOF before a frame");
            d.push(&b, &mut out).unwrap();
        }
        out.remove(0)
    }

    fn start() -> Frame {
        let r = StartRequest {
            spec: Spec {
                args: vec![b"true".to_vec()],
                ..Spec::default()
            },
            ..StartRequest::default()
        };
        Frame::new(0, KIND_START, r.encode().unwrap())
    }

    fn message(f: &Frame) -> String {
        assert_eq!(f.kind, KIND_ERROR, "{f:?}");
        String::from_utf8(f.payload.clone()).unwrap()
    }

    #[test]
    fn pause_and_resume_are_the_vmm_s_and_never_reach_the_guest() {
        use std::sync::Arc;
        let pauser = Arc::new(Pauser::new().unwrap());
        pauser.started(1);
        // The event loop and the one vCPU: it parks and runs as asked.
        let vcpu = crate::vstate::pause::follow(pauser.clone(), 1, 2);
        let mut rig = Rig::with(Some(pauser.clone()));
        let mut c = rig.client();
        c.write_all(&Frame::new(0, KIND_VM_PAUSE, Vec::new()).encode())
            .unwrap();
        assert_eq!(read_frame(&mut c).i32(), Ok(0));
        assert!(pauser.is_paused());
        assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0, "closed after its answer");
        let mut c = rig.client();
        c.write_all(&Frame::new(0, KIND_VM_RESUME, Vec::new()).encode())
            .unwrap();
        assert_eq!(read_frame(&mut c).i32(), Ok(0));
        assert!(!pauser.is_paused());
        vcpu.join().unwrap();
        // An exec still goes to the guest, and it saw nothing before it.
        let mut a = rig.client();
        a.write_all(&start().encode()).unwrap();
        assert_eq!(read_frame(&mut rig.guest).kind, KIND_START);
        // Once the VM ends, a pause fails with one line.
        pauser.end();
        let mut c = rig.client();
        c.write_all(&Frame::new(0, KIND_VM_PAUSE, Vec::new()).encode())
            .unwrap();
        assert!(message(&read_frame(&mut c)).contains("The VM is ending"));
        // Inside an exec's stream it is a kind a client may not send.
        a.write_all(&Frame::new(0, KIND_VM_PAUSE, Vec::new()).encode())
            .unwrap();
        assert!(message(&read_frame(&mut a)).contains("kind"));
        // A channel without a pauser says so.
        let rig = Rig::new();
        let mut c = rig.client();
        c.write_all(&Frame::new(0, KIND_VM_PAUSE, Vec::new()).encode())
            .unwrap();
        assert!(message(&read_frame(&mut c)).contains("cannot be paused"));
    }

    #[test]
    fn frames_are_relayed_with_the_streams_renumbered() {
        let mut rig = Rig::new();
        let mut a = rig.client();
        let mut b = rig.client();
        a.write_all(&start().encode()).unwrap();
        let fa = read_frame(&mut rig.guest);
        b.write_all(&start().encode()).unwrap();
        let fb = read_frame(&mut rig.guest);
        assert_eq!((fa.kind, fb.kind), (KIND_START, KIND_START));
        assert_ne!(fa.stream, fb.stream);
        rig.guest
            .write_all(&Frame::new(fb.stream, KIND_STDOUT, b"to b".to_vec()).encode())
            .unwrap();
        rig.guest
            .write_all(&Frame::new(fa.stream, KIND_STARTED, 42u32.to_le_bytes()).encode())
            .unwrap();
        assert_eq!(
            read_frame(&mut b),
            Frame::new(0, KIND_STDOUT, b"to b".to_vec())
        );
        assert_eq!(
            read_frame(&mut a),
            Frame::new(0, KIND_STARTED, 42u32.to_le_bytes())
        );
        rig.guest
            .write_all(&Frame::new(fa.stream, KIND_EXIT, 7i32.to_le_bytes()).encode())
            .unwrap();
        assert_eq!(read_frame(&mut a).i32(), Ok(7));
        // After EXIT the VMM closes the connection.
        assert_eq!(a.read(&mut [0u8; 1]).unwrap(), 0);
        // A client that goes away: the guest hears CLOSE for its stream.
        drop(b);
        let f = read_frame(&mut rig.guest);
        assert_eq!((f.stream, f.kind), (fb.stream, KIND_CLOSE));
    }

    #[test]
    fn a_guest_that_overruns_its_window_ends_that_exec_only() {
        let mut rig = Rig::new();
        let mut a = rig.client();
        let mut b = rig.client();
        a.write_all(&start().encode()).unwrap();
        let sa = read_frame(&mut rig.guest).stream;
        b.write_all(&start().encode()).unwrap();
        let sb = read_frame(&mut rig.guest).stream;
        // Client a never reads nor acknowledges; the guest sends past the window.
        let chunk = vec![b'x'; MAX_PAYLOAD];
        for _ in 0..WINDOW / MAX_PAYLOAD + 1 {
            rig.guest
                .write_all(&Frame::new(sa, KIND_STDOUT, chunk.clone()).encode())
                .unwrap();
        }
        // The guest is told to kill it.
        let f = read_frame(&mut rig.guest);
        assert_eq!((f.stream, f.kind), (sa, KIND_CLOSE));
        // a gets its window's worth, then the error.
        let mut got = 0;
        let msg = loop {
            let f = read_frame(&mut a);
            if f.kind == KIND_STDOUT {
                got += f.payload.len();
            } else {
                break message(&f);
            }
        };
        assert_eq!(got, WINDOW);
        assert!(msg.contains("without acknowledgement"), "{msg}");
        // b goes on.
        rig.guest
            .write_all(&Frame::new(sb, KIND_STDERR, b"ok".to_vec()).encode())
            .unwrap();
        assert_eq!(read_frame(&mut b).payload, b"ok");
    }

    #[test]
    fn a_guest_that_floods_small_frames_is_bounded_too() {
        let mut rig = Rig::new();
        let mut a = rig.client();
        a.write_all(&start().encode()).unwrap();
        let sa = read_frame(&mut rig.guest).stream;
        // ACKs carry no output, so no credit limits them; the client's queue does.
        let ack = Frame::new(sa, KIND_ACK, 1u32.to_le_bytes()).encode();
        let flood: Vec<u8> = ack.repeat(CLIENT_OUT_LIMIT / ack.len() + 1);
        rig.guest.write_all(&flood).unwrap();
        let f = read_frame(&mut rig.guest);
        assert_eq!((f.stream, f.kind), (sa, KIND_CLOSE));
        let msg = loop {
            let f = read_frame(&mut a);
            if f.kind != KIND_ACK {
                break message(&f);
            }
        };
        assert!(msg.contains("without acknowledgement"), "{msg}");
    }

    #[test]
    fn a_malformed_guest_frame_breaks_the_channel_with_a_clear_error() {
        let mut rig = Rig::new();
        let mut a = rig.client();
        a.write_all(&start().encode()).unwrap();
        let sa = read_frame(&mut rig.guest).stream;
        // A frame of a kind the guest may not send ends that exec.
        rig.guest
            .write_all(&Frame::new(sa, KIND_START, Vec::new()).encode())
            .unwrap();
        assert!(message(&read_frame(&mut a)).contains("unexpected kind"));
        // A length over the limit breaks the channel: later clients are refused.
        let mut bad = Frame::new(sa, KIND_STDOUT, Vec::new()).encode();
        bad[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        rig.guest.write_all(&bad).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let mut b = rig.client();
        let msg = message(&read_frame(&mut b));
        assert!(msg.contains("broken"), "{msg}");
    }

    #[test]
    fn a_client_must_start_first_and_respect_its_window() {
        let mut rig = Rig::new();
        let mut a = rig.client();
        a.write_all(&Frame::new(0, KIND_STDIN, b"x".to_vec()).encode())
            .unwrap();
        assert!(message(&read_frame(&mut a)).contains("unexpected kind"));
        let mut b = rig.client();
        b.write_all(&start().encode()).unwrap();
        let sb = read_frame(&mut rig.guest).stream;
        let chunk = Frame::new(0, KIND_STDIN, vec![0; MAX_PAYLOAD]).encode();
        for _ in 0..WINDOW / MAX_PAYLOAD + 1 {
            let _ = b.write_all(&chunk);
        }
        let msg = loop {
            let f = read_frame(&mut b);
            if f.kind == KIND_ERROR {
                break message(&f);
            }
        };
        assert!(msg.contains("without acknowledgement"), "{msg}");
        // The guest got the window's worth, then CLOSE.
        let mut got = 0;
        loop {
            let f = read_frame(&mut rig.guest);
            assert_eq!(f.stream, sb);
            match f.kind {
                KIND_STDIN => got += f.payload.len(),
                KIND_CLOSE => break,
                k => panic!("kind {k}"),
            }
        }
        assert_eq!(got, WINDOW);
        // A bad ACK payload from the guest ends that exec.
        let mut c = rig.client();
        c.write_all(&start().encode()).unwrap();
        let sc = read_frame(&mut rig.guest).stream;
        rig.guest
            .write_all(&Frame::new(sc, KIND_ACK, vec![1]).encode())
            .unwrap();
        assert!(message(&read_frame(&mut c)).contains("malformed payload"));
    }

    /// Found by the fuzz target `control` (2026-12-07): the guest's ERROR message went to the
    /// client as it was, and `isol exec` printed it on the user's terminal: many lines,
    /// escape sequences and all.
    #[test]
    fn a_guest_error_reaches_the_client_as_one_escaped_line() {
        let mut rig = Rig::new();
        let mut a = rig.client();
        a.write_all(&start().encode()).unwrap();
        let sa = read_frame(&mut rig.guest).stream;
        let mut evil = b"fine\n\x1b]0;owned\x07\x1b[2J\r".to_vec();
        evil.extend(vec![b'x'; 4 * MAX_ERROR_LINE]);
        rig.guest
            .write_all(&Frame::new(sa, KIND_ERROR, evil).encode())
            .unwrap();
        let msg = message(&read_frame(&mut a));
        assert!(
            msg.starts_with("fine \\u{1b}]0;owned\\u{7}\\u{1b}[2J\\r"),
            "{msg}"
        );
        assert!(!msg.chars().any(char::is_control), "{msg}");
        assert_eq!(msg.chars().count(), MAX_ERROR_LINE + 1, "{msg}");
        assert!(msg.ends_with("x…"), "{msg}");
    }

    /// Found by the fuzz target `control` (2026-12-07): a client that hung up was read on its
    /// hang-up even while the bytes waiting for the guest were over their limit, so what it had
    /// sent before (frames without credit, such as SIGNAL: as much as its socket held) all went
    /// into the guest's queue.
    #[test]
    fn a_client_that_hangs_up_is_not_read_past_the_guests_limit() {
        let (ours, _guest) = socketpair().unwrap(); // the guest never reads
        let (listener, _never) = socketpair().unwrap();
        let mut ch = Channel::new(listener, ours).unwrap();
        let stop = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut buf = vec![0u8; MAX_PAYLOAD + control::HEADER_LEN];
        let (client, mine) = socketpair().unwrap();
        ch.add_client(client);
        let mut mine = UnixStream::from(mine);
        mine.set_nonblocking(true).unwrap();
        mine.write_all(&start().encode()).unwrap();
        let signals = Frame::new(0, KIND_SIGNAL, vec![15]).encode().repeat(4096);
        // Until the guest's socket and then its queue are full and the client is not read.
        let mut stalled = 0;
        while stalled < 50 {
            let sent = mine.write(&signals).unwrap_or(0);
            ch.turn(&stop, &mut buf, 0);
            stalled = if sent == 0 { stalled + 1 } else { 0 };
        }
        assert!(ch.to_guest.len() >= TO_GUEST_LIMIT, "{}", ch.to_guest.len());
        drop(mine);
        for _ in 0..100 {
            ch.turn(&stop, &mut buf, 0);
        }
        assert!(
            ch.to_guest.len() <= TO_GUEST_LIMIT + buf.len() + control::HEADER_LEN,
            "{} bytes wait for the guest",
            ch.to_guest.len()
        );
    }

    #[test]
    fn clients_left_when_the_vm_ends_are_told_so() {
        let mut rig = Rig::new();
        let mut a = rig.client();
        a.write_all(&start().encode()).unwrap();
        let _ = read_frame(&mut rig.guest);
        let _ = rig.stop.write(1);
        rig.thread.take().unwrap().join().unwrap();
        assert!(message(&read_frame(&mut a)).contains("killed with the VM"));
    }
}
