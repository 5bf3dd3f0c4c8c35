//! The exec channel's wire format (`isol exec` into a microVM; docs/vmm.md, "The exec
//! channel"), shared by the guest init, the VMM and `isol exec`.
//!
//! One virtio-console port, `isol.control`, carries frames between the guest init and the VMM;
//! the VMM relays them to and from its clients (`isol exec`) on a unix socket, one connection
//! per process. A frame, all integers little-endian:
//!
//! ```text
//! stream  u32   which exec (the VMM numbers them; 0 between the VMM and a client)
//! kind    u8    what it is (KIND_*)
//! len     u32   payload bytes, at most MAX_PAYLOAD
//! payload len bytes
//! ```
//!
//! Flow control is by credit: a side may have at most [`WINDOW`] bytes of output (stdout and
//! stderr together) or of stdin in flight per exec; the receiver returns credit with an ACK
//! once it has written the bytes on. The VMM checks both directions, so its buffers stay
//! bounded whatever the guest (untrusted) or a client sends: a frame longer than
//! [`MAX_PAYLOAD`] breaks the channel; a frame of the wrong kind, a bad payload or a window
//! overrun ends that exec with an error.

use std::fmt;

pub use crate::spec::{Spec, SpecError};

/// Name of the console port.
pub const PORT_NAME: &str = "isol.control";
/// Frame header size.
pub const HEADER_LEN: usize = 9;
/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = 64 << 10;
/// Output (or stdin) bytes of one exec that may be in flight, unacknowledged.
pub const WINDOW: usize = 256 << 10;

/// Client → guest: start a process ([`StartRequest`]).
pub const KIND_START: u8 = 1;
/// Client → guest: bytes for the process's stdin.
pub const KIND_STDIN: u8 = 2;
/// Client → guest: stdin is at its end.
pub const KIND_STDIN_EOF: u8 = 3;
/// Client → guest: a signal for the process (u8 number).
pub const KIND_SIGNAL: u8 = 4;
/// Client → guest: the terminal's size (u16 rows, u16 cols).
pub const KIND_RESIZE: u8 = 5;
/// Either way: credit back (u32 bytes written on).
pub const KIND_ACK: u8 = 6;
/// VMM → guest: the client is gone; the process is killed.
pub const KIND_CLOSE: u8 = 7;
/// Client → VMM: park every vCPU (`isol-runc pause` on kvm). The VMM answers EXIT 0 once
/// they are, or ERROR; it never reaches the guest, and is the connection's only frame.
pub const KIND_VM_PAUSE: u8 = 8;
/// Client → VMM: run the vCPUs again (`isol-runc resume`); answered as [`KIND_VM_PAUSE`].
pub const KIND_VM_RESUME: u8 = 9;
/// Guest → client: the process runs (u32 pid in the guest).
pub const KIND_STARTED: u8 = 16;
/// Guest → client: the process's stdout (with a tty: the terminal's output).
pub const KIND_STDOUT: u8 = 17;
/// Guest → client: the process's stderr.
pub const KIND_STDERR: u8 = 18;
/// Guest → client: the process ended (i32: its status, or 128 + signal); the last frame.
pub const KIND_EXIT: u8 = 19;
/// Guest or VMM → client: the exec failed (a one-line message); the last frame.
pub const KIND_ERROR: u8 = 20;

/// Whether a client may send frames of `kind`.
pub fn from_client(kind: u8) -> bool {
    matches!(
        kind,
        KIND_START | KIND_STDIN | KIND_STDIN_EOF | KIND_SIGNAL | KIND_RESIZE | KIND_ACK
    )
}

/// Whether the guest may send frames of `kind`.
pub fn from_guest(kind: u8) -> bool {
    matches!(
        kind,
        KIND_STARTED | KIND_STDOUT | KIND_STDERR | KIND_EXIT | KIND_ERROR | KIND_ACK
    )
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The exec it belongs to.
    pub stream: u32,
    /// `KIND_*`.
    pub kind: u8,
    /// At most [`MAX_PAYLOAD`] bytes.
    pub payload: Vec<u8>,
}

impl Frame {
    /// A frame.
    pub fn new(stream: u32, kind: u8, payload: impl Into<Vec<u8>>) -> Self {
        Frame {
            stream,
            kind,
            payload: payload.into(),
        }
    }

    /// Appends the wire form to `out`. The payload must fit [`MAX_PAYLOAD`] (callers chunk).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        debug_assert!(self.payload.len() <= MAX_PAYLOAD);
        out.extend_from_slice(&self.stream.to_le_bytes());
        out.push(self.kind);
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(HEADER_LEN + self.payload.len());
        self.encode_into(&mut v);
        v
    }

    /// The payload as one u32 (ACK, STARTED).
    pub fn u32(&self) -> Result<u32, FrameError> {
        let b: [u8; 4] = self
            .payload
            .as_slice()
            .try_into()
            .map_err(|_| FrameError::BadPayload(self.kind))?;
        Ok(u32::from_le_bytes(b))
    }

    /// The payload as one i32 (EXIT).
    pub fn i32(&self) -> Result<i32, FrameError> {
        self.u32().map(|v| v as i32)
    }
}

/// What is wrong with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A length over [`MAX_PAYLOAD`]: the channel cannot be read further.
    TooLong(u32),
    /// A kind this side may not receive.
    BadKind(u8),
    /// A payload that does not fit its kind.
    BadPayload(u8),
    /// More in flight than [`WINDOW`].
    WindowOverrun,
    /// A start request that cannot be decoded.
    BadStart(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLong(n) => write!(
                f,
                "a frame of {n} bytes, over the limit of {MAX_PAYLOAD}: the channel is broken"
            ),
            FrameError::BadKind(k) => write!(f, "a frame of unexpected kind {k}"),
            FrameError::BadPayload(k) => write!(f, "a frame of kind {k} with a malformed payload"),
            FrameError::WindowOverrun => write!(
                f,
                "more than {WINDOW} bytes sent without acknowledgement (flow control broken)"
            ),
            FrameError::BadStart(m) => write!(f, "a malformed start request: {m}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Cuts a byte stream into frames, holding at most one frame's worth of bytes.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether bytes of an unfinished frame are held.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes of an unfinished frame held: never more than a header and [`MAX_PAYLOAD`].
    pub fn held(&self) -> usize {
        self.buf.len()
    }

    /// Adds `bytes`, appending the frames they complete to `out`. After an error the
    /// decoder is useless (the stream has lost its framing).
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Frame>) -> Result<(), FrameError> {
        while !bytes.is_empty() {
            let need = if self.buf.len() < HEADER_LEN {
                HEADER_LEN - self.buf.len()
            } else {
                let len = u32::from_le_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
                HEADER_LEN + len as usize - self.buf.len()
            };
            let n = need.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() == HEADER_LEN {
                let len = u32::from_le_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
                if len as usize > MAX_PAYLOAD {
                    return Err(FrameError::TooLong(len));
                }
            }
            if self.buf.len() >= HEADER_LEN {
                let len = u32::from_le_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
                if self.buf.len() == HEADER_LEN + len as usize {
                    let stream =
                        u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                    let kind = self.buf[4];
                    let payload = self.buf.split_off(HEADER_LEN);
                    self.buf.clear();
                    out.push(Frame {
                        stream,
                        kind,
                        payload,
                    });
                }
            }
        }
        Ok(())
    }
}

/// A process to start in the guest: `args`, `env`, `workdir`, `user` and (with a user) `groups`
/// of [`Spec`] (the rest of it is ignored: the workload's own privileges apply), and how to
/// attach it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StartRequest {
    /// What to run; its `user` empty: the workload's user.
    pub spec: Spec,
    /// A pseudo-terminal for its stdio.
    pub tty: bool,
    /// Detached: stdio on /dev/null, no output, no exit status.
    pub detach: bool,
    /// The terminal's initial size (rows, cols); 0: the default.
    pub size: (u16, u16),
}

impl StartRequest {
    /// The payload of a START frame: flags (bit 0 tty, bit 1 detach), rows, cols, then the
    /// spec.
    pub fn encode(&self) -> Result<Vec<u8>, SpecError> {
        let mut out = vec![u8::from(self.tty) | u8::from(self.detach) << 1];
        out.extend_from_slice(&self.size.0.to_le_bytes());
        out.extend_from_slice(&self.size.1.to_le_bytes());
        out.extend_from_slice(&self.spec.encode()?);
        if out.len() > MAX_PAYLOAD {
            return Err(SpecError::TooLarge(out.len()));
        }
        Ok(out)
    }

    /// The inverse of [`StartRequest::encode`].
    pub fn decode(b: &[u8]) -> Result<Self, FrameError> {
        if b.len() < 5 || b[0] & !3 != 0 {
            return Err(FrameError::BadStart("bad header".into()));
        }
        let spec = Spec::decode(&b[5..]).map_err(|e| FrameError::BadStart(e.to_string()))?;
        Ok(StartRequest {
            spec,
            tty: b[0] & 1 != 0,
            detach: b[0] & 2 != 0,
            size: (
                u16::from_le_bytes([b[1], b[2]]),
                u16::from_le_bytes([b[3], b[4]]),
            ),
        })
    }
}

/// A frame from the host to the guest init, its payload checked against its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Start a process.
    Start(Box<StartRequest>),
    /// Send this signal to the run's workload (a START made by [`signal_workload`]).
    SignalWorkload(u8),
    /// Bytes for its stdin.
    Stdin(Vec<u8>),
    /// Its stdin is at its end.
    StdinEof,
    /// A signal for it.
    Signal(u8),
    /// The terminal's size (rows, cols).
    Resize(u16, u16),
    /// Output credit back.
    Ack(u32),
    /// The client is gone: kill it.
    Close,
}

impl Request {
    /// What `f` asks of the guest: [`FrameError::BadKind`] for a kind the host may not send,
    /// [`FrameError::BadPayload`] or [`FrameError::BadStart`] for a payload that does not
    /// fit its kind (STDIN_EOF's and CLOSE's payloads are ignored).
    pub fn parse(f: Frame) -> Result<Request, FrameError> {
        let bad = FrameError::BadPayload(f.kind);
        Ok(match f.kind {
            KIND_START => match workload_signal(&f.payload) {
                Some(sig) => Request::SignalWorkload(sig),
                None => Request::Start(Box::new(StartRequest::decode(&f.payload)?)),
            },
            KIND_STDIN => Request::Stdin(f.payload),
            KIND_STDIN_EOF => Request::StdinEof,
            KIND_SIGNAL => match f.payload[..] {
                [sig] => Request::Signal(sig),
                _ => return Err(bad),
            },
            KIND_RESIZE => match f.payload[..] {
                [a, b, c, d] => {
                    Request::Resize(u16::from_le_bytes([a, b]), u16::from_le_bytes([c, d]))
                }
                _ => return Err(bad),
            },
            KIND_ACK => Request::Ack(f.u32()?),
            KIND_CLOSE => Request::Close,
            k => return Err(FrameError::BadKind(k)),
        })
    }
}

/// The START flag (bit 2) of a request that starts nothing but sends a signal to the run's
/// workload (`isol-runc kill` on kvm): the payload is this flag and the signal's number. The
/// guest answers with an EXIT of 0 once sent, or an ERROR when the workload has ended.
pub const START_SIGNAL_WORKLOAD: u8 = 4;

/// The payload of a START frame that signals the workload.
pub fn signal_workload(signal: u8) -> Vec<u8> {
    vec![START_SIGNAL_WORKLOAD, signal]
}

/// The signal of a START payload made by [`signal_workload`]; none for any other.
pub fn workload_signal(payload: &[u8]) -> Option<u8> {
    match payload {
        [START_SIGNAL_WORKLOAD, sig] => Some(*sig),
        _ => None,
    }
}

/// The frames of `data` for `stream`, each at most [`MAX_PAYLOAD`].
pub fn data_frames(stream: u32, kind: u8, data: &[u8]) -> impl Iterator<Item = Frame> + '_ {
    data.chunks(MAX_PAYLOAD)
        .map(move |c| Frame::new(stream, kind, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.push(bytes, &mut out)?;
        Ok(out)
    }

    #[test]
    fn frames_round_trip_byte_by_byte() {
        let frames = vec![
            Frame::new(7, KIND_STDOUT, b"hello".to_vec()),
            Frame::new(0, KIND_STDIN_EOF, Vec::new()),
            Frame::new(u32::MAX, KIND_STDERR, vec![0xff; MAX_PAYLOAD]),
        ];
        let wire: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        assert_eq!(decode_all(&wire).unwrap(), frames);
        let mut d = Decoder::new();
        let mut out = Vec::new();
        for b in &wire {
            d.push(std::slice::from_ref(b), &mut out).unwrap();
        }
        assert_eq!(out, frames);
        assert!(d.is_empty());
    }

    #[test]
    fn a_huge_length_is_refused_before_anything_is_allocated() {
        let mut wire = Frame::new(1, KIND_STDOUT, Vec::new()).encode();
        wire[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_all(&wire), Err(FrameError::TooLong(u32::MAX)));
        wire[5..9].copy_from_slice(&(MAX_PAYLOAD as u32 + 1).to_le_bytes());
        assert!(matches!(decode_all(&wire), Err(FrameError::TooLong(_))));
    }

    #[test]
    fn a_partial_frame_waits_and_holds_no_more_than_itself() {
        let wire = Frame::new(1, KIND_STDOUT, vec![1; 100]).encode();
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.push(&wire[..50], &mut out).unwrap();
        assert!(out.is_empty() && !d.is_empty());
        d.push(&wire[50..], &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(d.is_empty());
    }

    #[test]
    fn kinds_are_checked_by_direction() {
        for k in 0..=255u8 {
            assert!(!(from_client(k) && from_guest(k) && k != KIND_ACK), "{k}");
        }
        assert!(!from_client(KIND_EXIT) && !from_client(KIND_CLOSE) && !from_client(0));
        assert!(!from_guest(KIND_START) && !from_guest(KIND_CLOSE) && !from_guest(255));
    }

    #[test]
    fn numeric_payloads_must_be_exact() {
        assert_eq!(Frame::new(1, KIND_ACK, 5u32.to_le_bytes()).u32(), Ok(5));
        assert_eq!(
            Frame::new(1, KIND_ACK, vec![1, 2, 3]).u32(),
            Err(FrameError::BadPayload(KIND_ACK))
        );
        assert_eq!(
            Frame::new(1, KIND_EXIT, vec![0; 5]).i32(),
            Err(FrameError::BadPayload(KIND_EXIT))
        );
        assert_eq!(
            Frame::new(1, KIND_EXIT, (-1i32).to_le_bytes()).i32(),
            Ok(-1)
        );
    }

    #[test]
    fn start_requests_round_trip_and_garbage_is_refused() {
        let r = StartRequest {
            spec: Spec {
                args: vec![b"sh".to_vec(), b"-c".to_vec(), b"echo 'a b'\n".to_vec()],
                env: vec![b"A=1".to_vec()],
                workdir: b"/tmp".to_vec(),
                user: b"1000:1000".to_vec(),
                ..Spec::default()
            },
            tty: true,
            detach: false,
            size: (24, 80),
        };
        assert_eq!(StartRequest::decode(&r.encode().unwrap()).unwrap(), r);
        assert!(StartRequest::decode(b"").is_err());
        assert!(StartRequest::decode(&[4, 0, 0, 0, 0]).is_err());
        let mut b = r.encode().unwrap();
        b.truncate(b.len() - 1);
        assert!(matches!(
            StartRequest::decode(&b),
            Err(FrameError::BadStart(_))
        ));
        let huge = StartRequest {
            spec: Spec {
                args: vec![vec![b'a'; MAX_PAYLOAD]],
                ..Spec::default()
            },
            ..r
        };
        assert!(huge.encode().is_err());
    }

    #[test]
    fn a_workload_signal_is_no_start_request() {
        let p = signal_workload(15);
        assert_eq!(workload_signal(&p), Some(15));
        assert!(StartRequest::decode(&p).is_err());
        assert_eq!(workload_signal(&[START_SIGNAL_WORKLOAD, 1, 2]), None);
    }

    #[test]
    fn data_is_cut_into_frames_that_fit() {
        let data = vec![9u8; MAX_PAYLOAD * 2 + 1];
        let f: Vec<_> = data_frames(3, KIND_STDIN, &data).collect();
        assert_eq!(f.len(), 3);
        assert!(
            f.iter()
                .all(|f| f.payload.len() <= MAX_PAYLOAD && f.stream == 3)
        );
        assert_eq!(f[2].payload.len(), 1);
    }
}
