//! Fuzz harness: the exec channel's host side ([`Channel`]) between a guest and clients
//! that both play from the input. The guest is what an attacker controls (frames on the
//! `isol.control` port); clients (`isol exec`, any local user who can reach the socket)
//! play too. The channel runs on real sockets (socketpairs), one [`Channel::turn`] at a
//! time without waiting, exactly as its thread runs it.
//!
//! Checks after every step, what the channel promises (docs/vmm.md, "The exec channel"):
//! its buffers stay bounded (bytes for the guest, each client's queue, every decoder); what
//! it sends either way is well-formed frames (each side decodes it without error); the
//! guest hears only kinds a client may send, and CLOSE, each for a stream it heard START
//! for, with at most [`WINDOW`] bytes of stdin unacknowledged per stream; a client hears
//! stream 0 only, kinds the guest may send and ERROR (a one-line message), at most
//! [`WINDOW`] bytes of output it has not acknowledged, nothing after EXIT or ERROR, and its
//! connection ends only after one of them.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use isol_guest_init::control::{
    self, Decoder, Frame, FrameError, HEADER_LEN, KIND_ACK, KIND_ERROR, KIND_EXIT, KIND_RESIZE,
    KIND_SIGNAL, KIND_START, KIND_STARTED, KIND_STDERR, KIND_STDIN, KIND_STDIN_EOF, KIND_STDOUT,
    MAX_PAYLOAD, Request, StartRequest, WINDOW,
};
use vmm_sys_util::eventfd::EventFd;

use super::{CLIENT_OUT_LIMIT, Channel, MAX_CLIENTS, TO_GUEST_LIMIT, nonblocking, socketpair};

/// Most clients the harness connects.
const MAX_PEERS: usize = 6;
/// Most steps of one input.
const MAX_STEPS: usize = 200;
/// Room for the one ERROR frame a client may get beyond its queue's limit.
const ERROR_ROOM: usize = HEADER_LEN + 512;

/// Reads fixed-size values off the front of the input; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

/// The harness's end of one client's connection, and what that client heard.
struct Peer {
    sock: Option<OwnedFd>,
    decoder: Decoder,
    /// Output bytes heard and not acknowledged back.
    unacked: usize,
    /// EXIT or ERROR heard.
    ended: bool,
    /// What this client sent the channel, decoded as the channel decodes it: its ACKs.
    sent: Decoder,
    /// The client acknowledged output it had not heard (a fuzzed ACK), or sent what does
    /// not decode. The channel counts a client's window by its ACKs, so such a client may
    /// then hear more than [`WINDOW`] past what it heard and acknowledged: its end-to-end
    /// window is not checked any more (the channel's own count, in [`check`], still is).
    over_acked: bool,
}

/// The harness's end of the guest's port, and what the guest heard.
struct Guest {
    sock: Option<OwnedFd>,
    decoder: Decoder,
    /// Streams the guest heard START for, and their stdin bytes not acknowledged back.
    streams: Vec<(u32, usize)>,
    /// What the guest sent the channel, decoded as the channel decodes it: its ACKs.
    sent: Decoder,
    /// Streams whose stdin the guest acknowledged past what it heard (a fuzzed ACK, perhaps
    /// before it heard the stream's START): the channel counts the window by the guest's
    /// ACKs, so their end-to-end window is not checked any more (the channel's own count, in
    /// [`check`], still is), as for a client ([`Peer::over_acked`]).
    over_acked: Vec<u32>,
    /// The guest sent what does not decode: no stream's window is checked any more.
    garbled: bool,
}

/// Sends what the socket takes of `bytes`, the channel turning meanwhile; gives up (the
/// rest dropped) when neither moves. Returns how many bytes went.
fn send(ch: &mut Channel, stop: &EventFd, buf: &mut [u8], fd: RawFd, bytes: &[u8]) -> usize {
    let all = bytes;
    let mut bytes = bytes;
    let mut stalled = 0;
    while !bytes.is_empty() && stalled < 2 {
        // SAFETY: sends from the live slice, at most its length.
        let n = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n > 0 {
            bytes = &bytes[n as usize..];
            stalled = 0;
        } else if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock
        {
            break;
        } else {
            stalled += 1;
        }
        turns(ch, stop, buf);
    }
    all.len() - bytes.len()
}

/// Lets the channel serve what is ready, a few turns at most.
fn turns(ch: &mut Channel, stop: &EventFd, buf: &mut [u8]) {
    for _ in 0..8 {
        if ch.turn(stop, buf, 0).unwrap_or(0) == 0 {
            break;
        }
    }
}

/// Everything readable on `fd` now, and whether the peer closed its end (or it failed).
fn drain(fd: RawFd) -> (Vec<u8>, bool) {
    let mut all = Vec::new();
    let mut b = [0u8; 16 << 10];
    loop {
        // SAFETY: reads into the live buffer, at most its length.
        let n = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
        match n {
            0 => return (all, true),
            n if n > 0 => all.extend_from_slice(&b[..n as usize]),
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock => {
                return (all, false);
            }
            _ => return (all, true),
        }
    }
}

fn check(ch: &Channel) {
    let clients = ch.clients.len();
    assert!(clients <= MAX_CLIENTS + 1, "{clients} clients");
    // Clients are read only while less waits; in that turn each adds what one read took, and
    // each client that ends adds a CLOSE.
    let to_guest_max = TO_GUEST_LIMIT + MAX_PEERS * (2 * HEADER_LEN + MAX_PAYLOAD);
    assert!(
        ch.to_guest.len() <= to_guest_max,
        "{} bytes wait for the guest",
        ch.to_guest.len()
    );
    assert!(ch.guest_decoder.held() <= HEADER_LEN + MAX_PAYLOAD);
    for c in ch.clients.values() {
        assert!(
            c.out.len() <= CLIENT_OUT_LIMIT + ERROR_ROOM,
            "{} bytes queued for a client",
            c.out.len()
        );
        assert!(c.decoder.held() <= HEADER_LEN + MAX_PAYLOAD);
        // Counted past the window only by the frame that ended the exec.
        assert!(c.done || (c.out_unacked <= WINDOW && c.in_unacked <= WINDOW));
    }
    for (s, fd) in &ch.by_stream {
        assert_eq!(
            ch.clients[fd].stream,
            Some(*s),
            "stream {s} maps to a client not on it"
        );
    }
}

impl Peer {
    /// Takes what the channel sent this client; `ack`: acknowledges its output.
    fn read(&mut self, ack: bool) -> Option<Vec<u8>> {
        let fd = self.sock.as_ref()?.as_raw_fd();
        let (bytes, eof) = drain(fd);
        let mut frames = Vec::new();
        self.decoder
            .push(&bytes, &mut frames)
            .expect("the channel sent a client a malformed frame");
        for f in frames {
            assert!(!self.ended, "a frame after EXIT or ERROR: {f:?}");
            assert_eq!(f.stream, 0);
            assert!(control::from_guest(f.kind) || f.kind == KIND_ERROR, "{f:?}");
            match f.kind {
                KIND_STDOUT | KIND_STDERR => {
                    self.unacked += f.payload.len();
                    assert!(
                        self.over_acked || self.unacked <= WINDOW,
                        "a client got past its window"
                    );
                }
                KIND_EXIT | KIND_ERROR => self.ended = true,
                _ => {}
            }
            if f.kind == KIND_ERROR {
                let m = String::from_utf8_lossy(&f.payload);
                assert!(
                    !m.chars().any(char::is_control) && m.chars().count() <= 1024,
                    "an error not on one short, printable line: {m:?}"
                );
            }
        }
        if eof {
            assert!(
                self.ended,
                "a client's connection closed before EXIT or ERROR"
            );
            self.sock = None;
            return None;
        }
        if ack && self.unacked > 0 {
            // Counted off when sent ([`Peer::sent`]).
            let n = self.unacked as u32;
            return Some(Frame::new(0, KIND_ACK, n.to_le_bytes()).encode());
        }
        None
    }

    /// Accounts for `bytes` the client sent: each ACK in them counts off what it heard, and
    /// one that acknowledges more than that (or bytes that do not decode) ends the check
    /// of its window ([`Peer::over_acked`]).
    fn sent(&mut self, bytes: &[u8]) {
        let mut frames = Vec::new();
        if self.sent.push(bytes, &mut frames).is_err() {
            self.over_acked = true;
            return;
        }
        for f in frames.into_iter().filter(|f| f.kind == KIND_ACK) {
            match f.u32() {
                Ok(n) if n as usize <= self.unacked => self.unacked -= n as usize,
                _ => self.over_acked = true,
            }
        }
    }
}

impl Guest {
    /// Takes what the channel sent the guest, parsed as the guest init parses it; `ack`:
    /// acknowledges the stdin.
    fn read(&mut self, ack: bool) -> Vec<u8> {
        let Some(fd) = self.sock.as_ref().map(AsRawFd::as_raw_fd) else {
            return Vec::new();
        };
        let (bytes, _) = drain(fd);
        let mut frames = Vec::new();
        self.decoder
            .push(&bytes, &mut frames)
            .expect("the channel sent the guest a malformed frame");
        for f in frames {
            let (stream, kind, len) = (f.stream, f.kind, f.payload.len());
            assert_ne!(stream, 0, "a frame for stream 0 reached the guest");
            let known = self.streams.iter().position(|(s, _)| *s == stream);
            match Request::parse(f) {
                Err(FrameError::BadKind(k)) => panic!("the guest got a frame of kind {k}"),
                Err(e) => assert!(
                    matches!(kind, KIND_START | KIND_SIGNAL | KIND_RESIZE | KIND_ACK),
                    "{e:?}"
                ),
                Ok(_) => {}
            }
            if kind == KIND_START {
                assert!(known.is_none(), "a second START for stream {stream}");
                self.streams.push((stream, 0));
                continue;
            }
            let i =
                known.unwrap_or_else(|| panic!("kind {kind} for stream {stream}, never started"));
            if kind == KIND_STDIN {
                self.streams[i].1 += len;
                assert!(
                    self.garbled
                        || self.over_acked.contains(&stream)
                        || self.streams[i].1 <= WINDOW,
                    "the guest got past a stdin window"
                );
            }
        }
        let mut out = Vec::new();
        if ack {
            // Counted off when sent ([`Guest::sent`]).
            for (s, n) in &self.streams {
                if *n > 0 {
                    Frame::new(*s, KIND_ACK, (*n as u32).to_le_bytes()).encode_into(&mut out);
                }
            }
        }
        out
    }

    /// Accounts for `bytes` the guest sent: each ACK in them counts off the stdin its stream
    /// heard; one for more than that, or for a stream it never heard START for, ends the check
    /// of that stream's window ([`Guest::over_acked`]).
    fn sent(&mut self, bytes: &[u8]) {
        let mut frames = Vec::new();
        if self.sent.push(bytes, &mut frames).is_err() {
            self.garbled = true;
            return;
        }
        for f in frames.into_iter().filter(|f| f.kind == KIND_ACK) {
            let known = self.streams.iter_mut().find(|(s, _)| *s == f.stream);
            match (f.u32(), known) {
                (Ok(n), Some((_, heard))) if n as usize <= *heard => *heard -= n as usize,
                _ => self.over_acked.push(f.stream),
            }
        }
    }
}

/// A payload of `len` bytes: the input's next bytes, repeated. Made by doubling (a dozen
/// copies for 64 KiB): byte by byte, every byte an instrumented compare, it took 80 % of the
/// fuzzer's time.
fn payload(inp: &mut Input, len: usize) -> Vec<u8> {
    let seed = inp.bytes(8);
    if seed.is_empty() {
        return vec![b'x'; len];
    }
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&seed[..seed.len().min(len)]);
    while v.len() < len {
        let n = v.len().min(len - v.len());
        v.extend_from_within(..n);
    }
    v
}

/// A well-formed frame a guest could send (or, with the kind's high bit, any kind).
fn guest_frame(inp: &mut Input, g: &Guest) -> Frame {
    const KINDS: [u8; 6] = [
        KIND_STARTED,
        KIND_STDOUT,
        KIND_STDERR,
        KIND_EXIT,
        KIND_ERROR,
        KIND_ACK,
    ];
    let pick = inp.u8();
    let stream = match g.streams.get(usize::from(pick) % 8) {
        Some((s, _)) if pick < 0xf0 => *s,
        _ => inp.u32(),
    };
    let k = inp.u8();
    let kind = if k & 0x80 != 0 {
        k & 0x7f
    } else {
        KINDS[usize::from(k) % KINDS.len()]
    };
    let len = match kind {
        KIND_STARTED | KIND_EXIT | KIND_ACK if k & 0x40 == 0 => 4,
        _ => usize::from(inp.u16()),
    };
    Frame::new(stream, kind, payload(inp, len.min(MAX_PAYLOAD)))
}

/// A well-formed frame a client could send (or, with the kind's high bit, any kind).
fn client_frame(inp: &mut Input) -> Frame {
    const KINDS: [u8; 6] = [
        KIND_START,
        KIND_STDIN,
        KIND_STDIN_EOF,
        KIND_SIGNAL,
        KIND_RESIZE,
        KIND_ACK,
    ];
    let k = inp.u8();
    let kind = if k & 0x80 != 0 {
        k & 0x7f
    } else {
        KINDS[usize::from(k) % KINDS.len()]
    };
    let body = match kind {
        KIND_START if k & 0x40 == 0 => StartRequest {
            spec: isol_guest_init::spec::Spec {
                args: vec![b"true".to_vec()],
                ..Default::default()
            },
            tty: k & 0x20 != 0,
            ..StartRequest::default()
        }
        .encode()
        .unwrap_or_default(),
        KIND_STDIN_EOF => Vec::new(),
        KIND_SIGNAL if k & 0x40 == 0 => vec![inp.u8()],
        KIND_RESIZE | KIND_ACK if k & 0x40 == 0 => inp.bytes(4).to_vec(),
        _ => {
            let len = usize::from(inp.u16());
            payload(inp, len.min(MAX_PAYLOAD))
        }
    };
    Frame::new(0, kind, body)
}

/// The harness: a channel, a guest and up to [`MAX_PEERS`] clients, driven by `data`.
pub fn channel(data: &[u8]) {
    let mut inp = Input(data);
    let (ours, theirs) = socketpair().expect("socketpair");
    // A listener nobody connects to: clients are added directly.
    let (listener, _never) = socketpair().expect("socketpair");
    let mut ch = Channel::new(listener, ours).expect("channel");
    nonblocking(theirs.as_raw_fd()).expect("non-blocking");
    let stop = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
    let mut buf = vec![0u8; MAX_PAYLOAD + HEADER_LEN];
    let mut guest = Guest {
        sock: Some(theirs),
        decoder: Decoder::new(),
        streams: Vec::new(),
        sent: Decoder::new(),
        over_acked: Vec::new(),
        garbled: false,
    };
    let mut peers: Vec<Peer> = Vec::new();
    for _ in 0..MAX_STEPS {
        if inp.0.is_empty() {
            break;
        }
        // Low nibble: what happens; bits 4-6: which client; bit 7: a flag (acknowledge, or
        // for the guest's hang-up, that it happens at all).
        let op = inp.u8();
        let p = usize::from((op >> 4) & 7) % MAX_PEERS;
        let flag = op & 0x80 != 0;
        match op & 0x0f {
            0 if peers.len() < MAX_PEERS => {
                let (a, b) = socketpair().expect("socketpair");
                nonblocking(a.as_raw_fd()).expect("non-blocking");
                nonblocking(b.as_raw_fd()).expect("non-blocking");
                ch.add_client(a);
                peers.push(Peer {
                    sock: Some(b),
                    decoder: Decoder::new(),
                    unacked: 0,
                    ended: false,
                    sent: Decoder::new(),
                    over_acked: false,
                });
            }
            1 | 2 => {
                let bytes = if op & 0x0f == 1 {
                    guest_frame(&mut inp, &guest).encode()
                } else {
                    let n = usize::from(inp.u8());
                    inp.bytes(n).to_vec()
                };
                if let Some(fd) = guest.sock.as_ref().map(AsRawFd::as_raw_fd) {
                    let n = send(&mut ch, &stop, &mut buf, fd, &bytes);
                    guest.sent(&bytes[..n]);
                }
            }
            3 | 4 => {
                let bytes = if op & 0x0f == 3 {
                    client_frame(&mut inp).encode()
                } else {
                    let n = usize::from(inp.u8());
                    inp.bytes(n).to_vec()
                };
                if let Some(peer) = peers.get_mut(p)
                    && let Some(fd) = peer.sock.as_ref().map(AsRawFd::as_raw_fd)
                {
                    let n = send(&mut ch, &stop, &mut buf, fd, &bytes);
                    peer.sent(&bytes[..n]);
                }
            }
            5 => {
                if let Some(peer) = peers.get_mut(p)
                    && let Some(ack) = peer.read(flag)
                    && let Some(fd) = peer.sock.as_ref().map(AsRawFd::as_raw_fd)
                {
                    let n = send(&mut ch, &stop, &mut buf, fd, &ack);
                    peer.sent(&ack[..n]);
                }
            }
            6 => {
                if let Some(peer) = peers.get_mut(p) {
                    peer.sock = None;
                }
            }
            7 => {
                let ack = guest.read(flag);
                if let Some(fd) = guest.sock.as_ref().map(AsRawFd::as_raw_fd) {
                    let n = send(&mut ch, &stop, &mut buf, fd, &ack);
                    guest.sent(&ack[..n]);
                }
            }
            8 if flag => guest.sock = None,
            _ => {}
        }
        turns(&mut ch, &stop, &mut buf);
        check(&ch);
    }
    // The VM ends: the clients that are still there hang up, so the flush does not wait.
    for peer in &mut peers {
        peer.read(false);
        peer.sock = None;
    }
    ch.finish(&mut buf);
    check(&ch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_its_seed_repeated() {
        for seed_len in [0, 1, 3, 8] {
            let seed: Vec<u8> = (1..=seed_len).collect();
            for len in [0, 1, 2, 7, 8, 9, 17, 1000, MAX_PAYLOAD] {
                let got = payload(&mut Input(&seed), len);
                let want: Vec<u8> = if seed.is_empty() {
                    vec![b'x'; len]
                } else {
                    seed.iter().copied().cycle().take(len).collect()
                };
                assert_eq!(got, want, "seed {seed_len}, len {len}");
            }
        }
    }
}
