//! The exec server: `isol exec` into the VM (docs/vmm.md, "The exec channel").
//!
//! A thread reads frames ([`isol_guest_init::control`]) from the `isol.control` port and
//! starts each requested process as the workload is started (a fork of init, the same
//! `child_setup_and_exec`: the request's args, env, workdir and user, the workload's
//! privileges), with pipes or a pty of its own. Per process, threads copy its output into
//! frames (within the host's credit, [`control::WINDOW`]), its stdin from frames into its
//! pipe or pty, and report its exit. Init's main loop reaps every child: it hands the status
//! of an exec'd one to [`reaped`]. Once the workload ended, no process is started any more;
//! those running are killed with everything else.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};

use isol_guest_init::control::{
    self, Decoder, Frame, FrameError, KIND_ACK, KIND_ERROR, KIND_EXIT, KIND_STARTED, KIND_STDERR,
    KIND_STDOUT, Request, StartRequest,
};
use isol_guest_init::spec::Spec;

use crate::{Port, Stdio};

/// Exec'd processes not reaped yet: pid → where its wait status goes.
static CHILDREN: Mutex<Vec<(libc::pid_t, mpsc::Sender<i32>)>> = Mutex::new(Vec::new());
/// What a process killed because the workload ended is told (the VMM's words too).
const KILLED_WITH_THE_VM: &str =
    "the run ended (its workload exited or it was stopped): the process was killed with the VM";
/// The workload has ended: nothing is started any more.
static ENDED: AtomicBool = AtomicBool::new(false);

/// Init's main loop reaped `pid` with wait status `status`: an exec'd process's goes to it.
pub fn reaped(pid: libc::pid_t, status: i32) {
    let mut c = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = c.iter().position(|(p, _)| *p == pid) {
        let (_, tx) = c.swap_remove(i);
        let _ = tx.send(status);
    }
}

/// The workload ended: requests from now on are refused.
pub fn workload_ended() {
    ENDED.store(true, Ordering::SeqCst);
}

/// Output credit of one process (bytes it may still send before the host acknowledges).
struct Credit {
    state: Mutex<(usize, bool)>,
    cond: Condvar,
}

impl Credit {
    fn new() -> Self {
        Credit {
            state: Mutex::new((control::WINDOW, false)),
            cond: Condvar::new(),
        }
    }

    /// Up to `want` bytes of credit, waiting for some; 0 once closed.
    fn take(&self, want: usize) -> usize {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while s.0 == 0 && !s.1 {
            s = self.cond.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.1 {
            return 0;
        }
        let n = want.min(s.0);
        s.0 -= n;
        n
    }

    fn give(&self, n: usize) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = (s.0 + n).min(control::WINDOW);
        self.cond.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
        self.cond.notify_all();
    }
}

/// One running exec'd process, as the frame reader knows it.
struct Proc {
    pid: libc::pid_t,
    stdin: Option<mpsc::Sender<Vec<u8>>>,
    credit: Arc<Credit>,
    master: Option<Arc<fs::File>>,
}

type Procs = Arc<Mutex<HashMap<u32, Proc>>>;

/// Frames to the host, one writer at a time.
#[derive(Clone)]
struct Out(Arc<Mutex<fs::File>>);

impl Out {
    fn send(&self, f: &Frame) {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let _ = w.write_all(&f.encode());
    }

    fn error(&self, stream: u32, msg: &str) {
        self.send(&Frame::new(stream, KIND_ERROR, msg.as_bytes()));
    }
}

/// Serves `port` (the `isol.control` port, open read-write) on a thread of its own; `spec`:
/// the workload's, whose privileges and default user the processes get; `direct`: init
/// holds the exit ports (each child gives them up).
pub fn start(port: fs::File, spec: Spec, direct: bool) -> Result<(), String> {
    let out = Out(Arc::new(Mutex::new(
        port.try_clone()
            .map_err(|e| format!("cannot serve isol exec: {e}"))?,
    )));
    std::thread::Builder::new()
        .name("exec".into())
        .spawn(move || serve(port, &spec, direct, &out))
        .map_err(|e| format!("cannot serve isol exec: {e}"))?;
    Ok(())
}

fn serve(mut port: fs::File, spec: &Spec, direct: bool, out: &Out) {
    let procs: Procs = Arc::default();
    let mut decoder = Decoder::new();
    let mut buf = vec![0u8; control::MAX_PAYLOAD];
    loop {
        let n = match port.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let mut frames = Vec::new();
        if decoder.push(&buf[..n], &mut frames).is_err() {
            // The VMM checks what it relays; a broken stream here is a VMM bug.
            crate::log("the exec channel lost its framing; isol exec is off");
            return;
        }
        for f in frames {
            handle(f, spec, direct, out, &procs);
        }
    }
}

fn handle(f: Frame, spec: &Spec, direct: bool, out: &Out, procs: &Procs) {
    let stream = f.stream;
    let req = match Request::parse(f) {
        Ok(r) => r,
        // A start request that cannot be decoded is answered; anything else malformed (the
        // VMM relays only well-formed kinds) is dropped, as a frame for no process is.
        Err(e @ FrameError::BadStart(_)) => return out.error(stream, &e.to_string()),
        Err(_) => return,
    };
    if let Request::SignalWorkload(sig) = req {
        return signal_workload(stream, sig, out);
    }
    if let Request::Start(req) = req {
        if ENDED.load(Ordering::SeqCst) {
            return out.error(
                stream,
                "the run's workload has ended; nothing more runs in its VM",
            );
        }
        if let Err(e) = spawn(stream, *req, spec, direct, out, procs) {
            out.error(stream, &e);
        }
        return;
    }
    let mut map = procs.lock().unwrap_or_else(|p| p.into_inner());
    let Some(p) = map.get_mut(&stream) else {
        return;
    };
    match req {
        Request::Stdin(data) => {
            if let Some(tx) = &p.stdin {
                let _ = tx.send(data);
            }
        }
        Request::StdinEof => p.stdin = None,
        Request::Signal(sig) => {
            // SAFETY: kill has no memory effects; the pid is ours until reaped (it is in
            // the map until then).
            unsafe { libc::kill(p.pid, libc::c_int::from(sig)) };
        }
        Request::Resize(rows, cols) => {
            if let Some(m) = &p.master {
                set_size(m, (rows, cols));
            }
        }
        Request::Ack(n) => p.credit.give(n as usize),
        Request::Close => {
            // SAFETY: as for a signal.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
            p.credit.close();
            p.stdin = None;
        }
        Request::Start(_) | Request::SignalWorkload(_) => {}
    }
}

/// Sends `sig` to the run's workload (`isol-runc kill`), and ends the stream.
fn signal_workload(stream: u32, sig: u8, out: &Out) {
    let pid = crate::WORKLOAD_PID.load(Ordering::SeqCst);
    if pid <= 0 {
        return out.error(stream, "the workload has not started");
    }
    // SAFETY: kill has no memory effects. The workload is init's child: its pid stays its own
    // until init reaps it, and ENDED is set right after (a pid recycled in between would
    // have to be forked in those few instructions, by a process init is about to kill).
    if ENDED.load(Ordering::SeqCst) || unsafe { libc::kill(pid, libc::c_int::from(sig)) } != 0 {
        return out.error(stream, "the run's workload has ended");
    }
    out.send(&Frame::new(stream, KIND_EXIT, 0i32.to_le_bytes()));
}

/// Sets the pty master's window size; a zero dimension (no size known) leaves it as it is.
pub(crate) fn set_size(master: &fs::File, (rows, cols): (u16, u16)) {
    if rows == 0 || cols == 0 {
        return;
    }
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a live local; the fd is a pty master.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
}

fn open_rw(path: &str) -> Result<fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("cannot open {path}: {e}"))
}

/// What the host's side of a process is: where its stdin goes, where its output comes from.
struct Ends {
    stdin: Option<fs::File>,
    output: Vec<(u8, fs::File)>,
    master: Option<Arc<fs::File>>,
}

fn spawn(
    stream: u32,
    req: StartRequest,
    base: &Spec,
    direct: bool,
    out: &Out,
    procs: &Procs,
) -> Result<(), String> {
    let mut spec = base.clone();
    spec.args = req.spec.args;
    spec.env = req.spec.env;
    spec.workdir = req.spec.workdir;
    if !req.spec.user.is_empty() {
        // Another user: its groups are the request's (exactly those, as an OCI process's
        // additionalGids; none given: /etc/group's), not the workload's.
        spec.user = req.spec.user;
        spec.groups = req.spec.groups;
    }
    let (stdio, ends) = if req.detach {
        let null = || open_rw("/dev/null");
        (
            Stdio::Pipes([null()?, null()?, null()?]),
            Ends {
                stdin: None,
                output: Vec::new(),
                master: None,
            },
        )
    } else if req.tty {
        let (master, slave) = crate::open_pty()?;
        set_size(&master, req.size);
        let slave = open_rw(&slave)?;
        let m = |f: &fs::File| f.try_clone().map_err(|e| e.to_string());
        (
            Stdio::Pty(slave),
            Ends {
                stdin: Some(m(&master)?),
                output: vec![(KIND_STDOUT, m(&master)?)],
                master: Some(Arc::new(master)),
            },
        )
    } else {
        let (in_r, in_w) = crate::pipe()?;
        let (out_r, out_w) = crate::pipe()?;
        let (err_r, err_w) = crate::pipe()?;
        (
            Stdio::Pipes([in_r, out_w, err_w]),
            Ends {
                stdin: Some(in_w),
                output: vec![(KIND_STDOUT, out_r), (KIND_STDERR, err_r)],
                master: None,
            },
        )
    };
    let (status_tx, status_rx) = mpsc::channel();
    let pid = {
        // Held across the fork: init's main loop cannot hand this child's status on before
        // it is registered.
        let mut children = CHILDREN.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: the child calls only what a child of a threaded process may before exec
        // (glibc's fork makes malloc usable in it), then execs or _exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("cannot fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            let port = if direct { Port::Direct } else { Port::None };
            crate::child(
                &spec,
                crate::WORKLOAD_CGROUP.get(),
                &stdio,
                &port,
                false,
                None,
            );
        }
        children.push((pid, status_tx));
        pid
    };
    // Our copies of the child's ends: the pumps must see its hang-up.
    drop(stdio);
    out.send(&Frame::new(
        stream,
        KIND_STARTED,
        (pid as u32).to_le_bytes(),
    ));
    if req.detach {
        // Reaped by init's main loop; nobody waits for it here.
        std::thread::spawn(move || {
            let _ = status_rx.recv();
        });
        out.send(&Frame::new(stream, KIND_EXIT, 0i32.to_le_bytes()));
        return Ok(());
    }
    let credit = Arc::new(Credit::new());
    let stdin = ends.stdin.map(|w| {
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let out = out.clone();
        std::thread::spawn(move || copy_stdin(rx, w, stream, &out));
        tx
    });
    procs.lock().unwrap_or_else(|p| p.into_inner()).insert(
        stream,
        Proc {
            pid,
            stdin,
            credit: credit.clone(),
            master: ends.master,
        },
    );
    let pumps: Vec<_> = ends
        .output
        .into_iter()
        .map(|(kind, from)| {
            let (out, credit) = (out.clone(), credit.clone());
            std::thread::spawn(move || copy_output(from, kind, stream, &credit, &out))
        })
        .collect();
    let (out, procs) = (out.clone(), procs.clone());
    std::thread::spawn(move || {
        let st = status_rx.recv().unwrap_or(0);
        let code = if libc::WIFEXITED(st) {
            libc::WEXITSTATUS(st)
        } else if libc::WIFSIGNALED(st) {
            128 + libc::WTERMSIG(st)
        } else {
            125
        };
        for p in pumps {
            let _ = p.join();
        }
        // Its stdin copy and pty go with the entry.
        procs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&stream);
        if ENDED.load(Ordering::SeqCst) && libc::WIFSIGNALED(st) {
            // Killed by init with everything else (the VMM says the same if this is late).
            out.error(stream, KILLED_WITH_THE_VM);
        } else {
            out.send(&Frame::new(stream, KIND_EXIT, code.to_le_bytes()));
        }
    });
    Ok(())
}

/// Process output → frames, within the credit; a closed credit (the client is gone) drops it.
fn copy_output(mut from: fs::File, kind: u8, stream: u32, credit: &Credit, out: &Out) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // EIO on a pty master: every slave fd is closed.
            Err(_) => return,
        };
        let mut off = 0;
        while off < n {
            let c = credit.take(n - off);
            if c == 0 {
                break;
            }
            out.send(&Frame::new(stream, kind, &buf[off..off + c]));
            off += c;
        }
    }
}

/// Frames → the process's stdin; each chunk acknowledged once written.
fn copy_stdin(rx: mpsc::Receiver<Vec<u8>>, mut to: fs::File, stream: u32, out: &Out) {
    let mut broken = false;
    for chunk in rx {
        // A process that closed its stdin: the rest is acknowledged and dropped.
        if !broken && to.write_all(&chunk).is_err() {
            broken = true;
        }
        out.send(&Frame::new(
            stream,
            KIND_ACK,
            (chunk.len() as u32).to_le_bytes(),
        ));
    }
}
