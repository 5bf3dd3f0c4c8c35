//! A client of a microVM's exec channel (docs/vmm.md, "The exec channel"): one process per
//! connection — a START frame (args, env, workdir, user, tty), then stdin up, output down
//! (both within the channel's credit), signals and window sizes up, and the process's exit
//! status last (docker's codes: 126/127 cannot execute / not found, 128+N for a signal).
//! Shared by `isol exec` (`vm_exec`) and `isol-runc exec` on the kvm backend (`runc_vm`).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};

use anyhow::{Context, bail};
use isol_vmm::control::wire::{
    self, Decoder, Frame, KIND_ACK, KIND_ERROR, KIND_EXIT, KIND_RESIZE, KIND_SIGNAL, KIND_START,
    KIND_STARTED, KIND_STDERR, KIND_STDIN, KIND_STDIN_EOF, KIND_STDOUT, MAX_PAYLOAD, StartRequest,
    WINDOW,
};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

/// The VMM's message when the VM ended under a running process (`vmm::control`).
const ENDED_WITH_THE_VM: &str = "the run ended";
/// The status when the VMM refused or failed the process (isol's own failure).
const EXIT_FAILED: i32 = 125;

/// Where the start of the process is told (`isol-runc exec --detach` waits on it): `S` once
/// it started, else the VMM's error line, and the descriptor closed.
pub type Notify = Option<std::fs::File>;

/// Runs `req` through the exec channel `sock`: stdin (when `interactive`; else it is at its
/// end at once) to the process, its output to ours, SIGINT and SIGTERM (and SIGWINCH with a
/// terminal) to it; returns its exit status. With `req.detach` nothing is attached.
pub fn attach(
    sock: UnixStream,
    req: &StartRequest,
    interactive: bool,
    notify: Notify,
) -> anyhow::Result<i32> {
    let start = req
        .encode()
        .map_err(|e| anyhow::anyhow!("The command is too large for the exec channel: {e}"))?;
    // The signals go to the process, by a thread of their own: blocked here, before any
    // thread starts, so that every thread inherits the mask.
    let mut sigs = SigSet::empty();
    sigs.add(Signal::SIGINT);
    sigs.add(Signal::SIGTERM);
    if req.tty {
        sigs.add(Signal::SIGWINCH);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&sigs), None)
        .context("Cannot block the signals the exec forwards")?;
    let out = Out(Arc::new(Mutex::new(
        sock.try_clone().context("Cannot use the exec socket")?,
    )));
    let send_err = |e: std::io::Error| anyhow::anyhow!("The VM's exec channel closed: {e}");
    out.send(&Frame::new(0, KIND_START, start))
        .map_err(send_err)?;
    let credit = Arc::new(Credit(Mutex::new(WINDOW), Condvar::new()));
    let _raw = (req.tty && interactive).then(raw_mode);
    if req.detach {
        // Nothing to attach.
    } else if interactive {
        let (out, credit) = (out.clone(), credit.clone());
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || copy_stdin(&out, &credit))
            .context("Cannot start the exec's stdin thread")?;
    } else {
        out.send(&Frame::new(0, KIND_STDIN_EOF, Vec::new()))
            .map_err(send_err)?;
    }
    if !req.detach {
        let out = out.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || forward_signals(&sigs, &out))
            .context("Cannot start the exec's signal thread")?;
    }
    read_frames(sock, &out, &credit, notify)
}

/// Frames to the VMM, one writer at a time.
#[derive(Clone)]
struct Out(Arc<Mutex<UnixStream>>);

impl Out {
    fn send(&self, f: &Frame) -> std::io::Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&f.encode())
    }
}

/// Stdin credit: bytes that may be sent before the guest acknowledges.
struct Credit(Mutex<usize>, Condvar);

impl Credit {
    fn take(&self, want: usize) -> usize {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        while *c == 0 {
            c = self.1.wait(c).unwrap_or_else(|p| p.into_inner());
        }
        let n = want.min(*c);
        *c -= n;
        n
    }

    fn give(&self, n: usize) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *c = (*c + n).min(WINDOW);
        self.1.notify_all();
    }
}

/// Puts the terminal back (raw mode with `-it`).
struct RawMode(Option<libc::termios>);

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: restores the attributes tcgetattr returned, on our stdin.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t) };
        }
    }
}

fn raw_mode() -> RawMode {
    // SAFETY: isatty only queries the fd.
    if unsafe { libc::isatty(libc::STDIN_FILENO) } != 1 {
        return RawMode(None);
    }
    // SAFETY: termios is plain data filled by tcgetattr.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and pointer.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut t) } != 0 {
        return RawMode(None);
    }
    let saved = t;
    // SAFETY: `t` came from tcgetattr; cfmakeraw edits it in place.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: valid fd and termios.
    unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) };
    RawMode(Some(saved))
}

/// Our terminal's size (stdin's, else stdout's); (0, 0) without one.
pub fn term_size() -> (u16, u16) {
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        // SAFETY: winsize is plain data; TIOCGWINSZ fills it when `fd` is a terminal.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return (ws.ws_row, ws.ws_col);
        }
    }
    (0, 0)
}

fn size_payload((rows, cols): (u16, u16)) -> Vec<u8> {
    let mut p = rows.to_le_bytes().to_vec();
    p.extend_from_slice(&cols.to_le_bytes());
    p
}

/// Stdin → STDIN frames within the credit, then STDIN_EOF.
fn copy_stdin(out: &Out, credit: &Credit) {
    let mut buf = vec![0u8; MAX_PAYLOAD];
    let mut stdin = std::io::stdin().lock();
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut off = 0;
        while off < n {
            let c = credit.take(n - off);
            if out
                .send(&Frame::new(0, KIND_STDIN, &buf[off..off + c]))
                .is_err()
            {
                return;
            }
            off += c;
        }
    }
    let _ = out.send(&Frame::new(0, KIND_STDIN_EOF, Vec::new()));
}

/// SIGINT and SIGTERM to the process; SIGWINCH (with -t) as the terminal's new size.
fn forward_signals(sigs: &SigSet, out: &Out) {
    loop {
        let Ok(sig) = sigs.wait() else { continue };
        let f = if sig == Signal::SIGWINCH {
            Frame::new(0, KIND_RESIZE, size_payload(term_size()))
        } else {
            Frame::new(0, KIND_SIGNAL, vec![sig as u8])
        };
        if out.send(&f).is_err() {
            return;
        }
    }
}

/// Output frames to our stdout and stderr (each acknowledged once written) until EXIT.
fn read_frames(
    mut sock: UnixStream,
    out: &Out,
    credit: &Credit,
    mut notify: Notify,
) -> anyhow::Result<i32> {
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; MAX_PAYLOAD + wire::HEADER_LEN];
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) => bail!(
                "The VM's exec channel closed before the process ended; the run has ended or is stopping"
            ),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => bail!("Cannot read the VM's exec channel: {e}"),
        };
        let mut frames = Vec::new();
        decoder
            .push(&buf[..n], &mut frames)
            .map_err(|e| anyhow::anyhow!("The VMM sent {e}"))?;
        for f in frames {
            match f.kind {
                KIND_STDOUT | KIND_STDERR => {
                    // A closed stdout or stderr drops the output (the process goes on).
                    let _ = if f.kind == KIND_STDOUT {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&f.payload).and_then(|()| o.flush())
                    } else {
                        std::io::stderr().lock().write_all(&f.payload)
                    };
                    let ack = (f.payload.len() as u32).to_le_bytes();
                    let _ = out.send(&Frame::new(0, KIND_ACK, ack));
                }
                KIND_ACK => credit.give(f.u32().unwrap_or(0) as usize),
                KIND_STARTED => {
                    if let Some(mut n) = notify.take() {
                        let _ = n.write_all(b"S");
                    }
                }
                KIND_EXIT => return f.i32().map_err(|e| anyhow::anyhow!("The VMM sent {e}")),
                KIND_ERROR => {
                    // One printable line whatever came (the VMM makes it so already).
                    let msg = isol_vmm::control::error_line(&f.payload);
                    match notify.take() {
                        Some(mut n) => {
                            let _ = n.write_all(msg.as_bytes());
                        }
                        None => eprintln!("isol: {msg}"),
                    }
                    // Killed with the VM, as docker's exec'd processes are with their container.
                    return Ok(if msg.starts_with(ENDED_WITH_THE_VM) {
                        137
                    } else {
                        EXIT_FAILED
                    });
                }
                k => bail!("The VMM sent a frame of unexpected kind {k}"),
            }
        }
    }
}
