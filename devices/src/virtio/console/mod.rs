//! virtio-console with `VIRTIO_CONSOLE_F_MULTIPORT`: one device, one named port per
//! stream (isol uses `isol.stdin`, `isol.stdout`, `isol.stderr`). None of the ports is
//! a console port (hvc): they show up in the guest as `/dev/vportNpM`, which can say
//! EOF — when the host closes a port (PORT_OPEN 0) and its data is drained, the
//! guest's `read` returns 0.
//!
//! Queues: port 0 receive/transmit (0, 1), control receive/transmit (2, 3), then port
//! `p ≥ 1` receive/transmit (2 + 2p, 3 + 2p).
//!
//! Output (guest → host): each transmit buffer is copied out and handed to a writer
//! thread per port, which does blocking writes to the host fd. At most
//! [`OUTPUT_BUDGET`] bytes per port are in flight: past that the device leaves the
//! guest's buffers in the queue, the guest's writes block once the queue is full, and
//! the writer thread's progress (an eventfd) resumes it. Nothing is buffered without
//! bound and the event loop itself never blocks on the host.
//!
//! Input (host → guest): nothing is sent before the guest has opened the port (Linux
//! drops data that reaches a closed generic port); then the host fd is read only when
//! the guest has receive buffers posted (the fd is watched only then), at most one
//! read per readiness event; a
//! non-pollable input (a regular file, `/dev/null`) is read when buffers arrive. At EOF
//! the remaining bytes are delivered first, then the port is closed.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use event_manager::{EventOps, EventSet, Events};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::queue::{self, ChainError};
use super::{DeviceFault, QueueCtx, VirtioDevice, device_type};

/// `VIRTIO_CONSOLE_F_MULTIPORT`.
pub const F_MULTIPORT: u32 = 1;

/// Control events (virtio 1.x, 5.3.6.2).
#[allow(missing_docs)]
pub mod event {
    pub const DEVICE_READY: u16 = 0;
    pub const DEVICE_ADD: u16 = 1;
    pub const DEVICE_REMOVE: u16 = 2;
    pub const PORT_READY: u16 = 3;
    pub const CONSOLE_PORT: u16 = 4;
    pub const RESIZE: u16 = 5;
    pub const PORT_OPEN: u16 = 6;
    pub const PORT_NAME: u16 = 7;
}

/// Queue size of every queue.
pub const QUEUE_SIZE: u16 = 256;
/// Output bytes per port that may be in flight to the host.
pub const OUTPUT_BUDGET: usize = 1 << 20;
/// Largest transmit buffer accepted (Linux sends at most 32 KiB, or a pipe's worth
/// through splice).
pub const MAX_TX_CHAIN: u64 = 4 << 20;
/// Host read size for input.
const INPUT_CHUNK: usize = 64 << 10;

const CTRL_RX: usize = 2;
const CTRL_TX: usize = 3;

fn rx_queue(port: usize) -> usize {
    if port == 0 { 0 } else { 2 + 2 * port }
}

fn tx_queue(port: usize) -> usize {
    rx_queue(port) + 1
}

/// Which port a data queue belongs to, and whether it is the transmit queue.
fn port_of(q: usize) -> Option<(usize, bool)> {
    match q {
        0 | 1 => Some((0, q == 1)),
        CTRL_RX | CTRL_TX => None,
        _ => Some(((q - 2) / 2, q % 2 == 1)),
    }
}

/// A host fd the writer thread writes a port's output to, blocking or not: a write that
/// would block (`EAGAIN` on an fd whose open file description is `O_NONBLOCK` — a
/// setting shared with whoever else holds it, e.g. the shell or the program reading
/// isol's output, so it is not ours to clear) waits for the fd to become writable
/// and tries again, instead of failing and losing the output.
#[derive(Debug)]
pub struct FdWriter(File);

impl FdWriter {
    /// Writes to `file`.
    pub fn new(file: File) -> Self {
        Self(file)
    }

    /// Waits until the fd can take more bytes (or has an error the next write reports).
    fn wait_writable(&self) -> std::io::Result<()> {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, -1) } < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.wait_writable()?,
                r => return r,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a port connects to on the host.
pub enum PortIo {
    /// Host → guest from this file (stdin). `None` = at EOF from the start.
    Input(Option<File>),
    /// Guest → host into this writer (stdout/stderr).
    Output(Box<dyn Write + Send>),
    /// Both ways: host → guest from the file, guest → host into the writer (the VMM's
    /// exec channel, `isol.control`).
    Duplex(File, Box<dyn Write + Send>),
}

impl std::fmt::Debug for PortIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortIo::Input(file) => f.debug_tuple("Input").field(file).finish(),
            PortIo::Output(_) => f.write_str("Output(..)"),
            PortIo::Duplex(file, _) => f.debug_tuple("Duplex").field(file).finish(),
        }
    }
}

/// One port of the device.
#[derive(Debug)]
pub struct PortConfig {
    /// The name the guest sees in `/sys/class/virtio-ports/*/name`.
    pub name: String,
    /// Where the data goes.
    pub io: PortIo,
}

#[derive(Debug)]
struct Input {
    file: Option<File>,
    pollable: bool,
    watched: bool,
    eof: bool,
    pending: Vec<u8>,
    off: usize,
}

#[derive(Debug)]
struct Output {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    in_flight: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Port {
    name: String,
    input: Option<Input>,
    output: Option<Output>,
    ready: bool,
    /// The guest has the port open. Linux drops data that arrives on a closed
    /// generic port, so input waits for this.
    guest_open: bool,
    open_sent: bool,
    close_sent: bool,
}

/// The console device.
#[derive(Debug)]
pub struct Console {
    ports: Vec<Port>,
    ctrl_out: VecDeque<Vec<u8>>,
    resume_evt: EventFd,
    /// The device's own "more work" signal: a receive pass (port or control) that stops at
    /// its cap of a queue size of chains writes it, and the device thread serves the
    /// receive queues again (see [`Console::reschedule`]).
    more_evt: EventFd,
}

/// Errors creating the console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// An eventfd or a thread could not be created.
    #[error("Cannot set up the virtio console: {0}; raise the open-file or thread limit")]
    Setup(std::io::Error),
}

/// Run first thing on each thread the console starts (its output writers), on that thread:
/// the VMM installs the thread's seccomp filter there.
pub type ThreadStart = Arc<dyn Fn() + Send + Sync>;

fn writer_thread(
    name: String,
    mut out: Box<dyn Write + Send>,
    rx: mpsc::Receiver<Vec<u8>>,
    in_flight: Arc<AtomicUsize>,
    resume: EventFd,
    start: Option<ThreadStart>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("isol-{name}"))
        .spawn(move || {
            if let Some(start) = start {
                start();
            }
            let mut dead = false;
            for chunk in rx {
                // After a write error (a closed pipe) keep consuming, so the guest
                // never blocks on a reader that is gone.
                if !dead && out.write_all(&chunk).is_err() {
                    dead = true;
                }
                in_flight.fetch_sub(chunk.len(), Ordering::SeqCst);
                let _ = resume.write(1);
            }
            let _ = out.flush();
        })
}

/// The size the driver gave queue `q`: the most chains one serve pass takes from it.
fn queue_size(ctx: &QueueCtx<'_>, q: usize) -> usize {
    usize::from(virtio_queue::QueueT::size(&ctx.queues[q]))
}

fn control(id: u32, ev: u16, value: u16) -> Vec<u8> {
    let mut m = Vec::with_capacity(8);
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(&ev.to_le_bytes());
    m.extend_from_slice(&value.to_le_bytes());
    m
}

impl Console {
    /// A console with `ports` (port 0 first). Starts one writer thread per output port.
    pub fn new(ports: Vec<PortConfig>) -> Result<Self, ConsoleError> {
        Self::with_thread_start(ports, None)
    }

    /// [`Console::new`], with `start` run first on each writer thread.
    pub fn with_thread_start(
        ports: Vec<PortConfig>,
        start: Option<ThreadStart>,
    ) -> Result<Self, ConsoleError> {
        let resume_evt = EventFd::new(EFD_NONBLOCK).map_err(ConsoleError::Setup)?;
        let more_evt = EventFd::new(EFD_NONBLOCK).map_err(ConsoleError::Setup)?;
        let mut out = Vec::new();
        for p in ports {
            let (file, writer) = match p.io {
                PortIo::Input(file) => (Some(file), None),
                PortIo::Output(w) => (None, Some(w)),
                PortIo::Duplex(file, w) => (Some(Some(file)), Some(w)),
            };
            let input = file.map(|file| Input {
                eof: file.is_none(),
                file,
                pollable: false,
                watched: false,
                pending: Vec::new(),
                off: 0,
            });
            let output = match writer {
                None => None,
                Some(w) => {
                    let (tx, rx) = mpsc::channel();
                    let in_flight = Arc::new(AtomicUsize::new(0));
                    let thread = writer_thread(
                        p.name.clone(),
                        w,
                        rx,
                        in_flight.clone(),
                        resume_evt.try_clone().map_err(ConsoleError::Setup)?,
                        start.clone(),
                    )
                    .map_err(ConsoleError::Setup)?;
                    Some(Output {
                        tx: Some(tx),
                        in_flight,
                        thread: Some(thread),
                    })
                }
            };
            out.push(Port {
                name: p.name,
                input,
                output,
                ready: false,
                guest_open: false,
                open_sent: false,
                close_sent: false,
            });
        }
        Ok(Self {
            ports: out,
            ctrl_out: VecDeque::new(),
            resume_evt,
            more_evt,
        })
    }

    /// The input port reading from host fd `fd`.
    fn input_port(&self, fd: RawFd) -> Option<usize> {
        self.ports.iter().position(|p| {
            p.input
                .as_ref()
                .and_then(|i| i.file.as_ref())
                .is_some_and(|f| f.as_raw_fd() == fd)
        })
    }

    fn fault(q: usize) -> impl Fn(ChainError) -> DeviceFault {
        move |error| DeviceFault::Chain { queue: q, error }
    }

    /// Sends queued control messages into the guest's control receive buffers, at most a
    /// queue size of them per pass (see [`Console::reschedule`]).
    fn flush_ctrl(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceFault> {
        let mut sent = false;
        let mut budget = queue_size(ctx, CTRL_RX);
        // Buffers that arrive while notifications are turned on are looked for once more;
        // a second miss waits for the notification (bounded: a guest cannot keep the
        // device thread here).
        for _ in 0..2 {
            let mut starving = false;
            while let Some(msg) = self.ctrl_out.front() {
                if budget == 0 {
                    self.reschedule();
                    break;
                }
                budget -= 1;
                let Some(c) = queue::pop_chain(&mut ctx.queues[CTRL_RX], ctx.mem)
                    .map_err(Self::fault(CTRL_RX))?
                else {
                    starving = true;
                    break;
                };
                let n = c.write_at(ctx.mem, 0, msg);
                queue::add_used(&mut ctx.queues[CTRL_RX], ctx.mem, c.head, n as u32)
                    .map_err(Self::fault(CTRL_RX))?;
                self.ctrl_out.pop_front();
                sent = true;
            }
            if !Self::want_buffers(ctx, CTRL_RX, starving)? {
                break;
            }
        }
        if sent {
            ctx.notify(CTRL_RX);
        }
        Ok(())
    }

    /// Receive queues and the driver's notifications: Linux's driver kicks the device
    /// once for every receive buffer it adds (`add_inbuf`), ~256 per queue as it fills
    /// them at boot — each kick a VM exit. The device needs to hear of new buffers only
    /// while it is `starving` (it has something to deliver and no buffer for it), so the
    /// queue's notifications are on only then (`VRING_USED_F_NO_NOTIFY` otherwise).
    /// Returns whether buffers came in meanwhile (then deliver again).
    fn want_buffers(ctx: &mut QueueCtx<'_>, q: usize, starving: bool) -> Result<bool, DeviceFault> {
        use virtio_queue::QueueT;
        let queue = &mut ctx.queues[q];
        let r = if starving {
            queue.enable_notification(ctx.mem)
        } else {
            queue.disable_notification(ctx.mem).map(|()| false)
        };
        r.map_err(|_| DeviceFault::Chain {
            queue: q,
            error: queue::ChainError::Ring,
        })
    }

    /// Asks the device thread to serve the receive queues again: a receive pass stopped at
    /// its cap of a queue size of chains with work left. Those queues' notifications are
    /// off while the device is not starving (see [`Console::want_buffers`]), so buffers the
    /// driver added meanwhile would otherwise wait for a kick that never comes. A driver
    /// that follows the ring layout never gets here (it cannot have more buffers posted
    /// than the queue holds); one whose used ring overlaps its available ring raises its
    /// own available index with every used entry, and is served a queue's worth per pass,
    /// between the device thread's other events, instead of spinning it (finding 1 in
    /// docs/fuzzing.md).
    fn reschedule(&self) {
        // Fails only when the counter is at its maximum: then it is already signalled.
        let _ = self.more_evt.write(1);
    }

    /// Handles the driver's control messages.
    fn serve_ctrl_tx(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceFault> {
        let mut any = false;
        // At most a queue's worth per notification, as the block device (a used ring over the
        // available ring would loop forever, here on the vCPU thread); the control transmit
        // queue's notifications are never suppressed.
        for _ in 0..queue_size(ctx, CTRL_TX) {
            let Some(c) = queue::pop_chain(&mut ctx.queues[CTRL_TX], ctx.mem)
                .map_err(Self::fault(CTRL_TX))?
            else {
                break;
            };
            any = true;
            let mut m = [0u8; 8];
            if c.read_at(ctx.mem, 0, &mut m) == 8 {
                let id = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
                let ev = u16::from_le_bytes([m[4], m[5]]);
                let value = u16::from_le_bytes([m[6], m[7]]);
                self.on_control(id, ev, value);
            }
            queue::add_used(&mut ctx.queues[CTRL_TX], ctx.mem, c.head, 0)
                .map_err(Self::fault(CTRL_TX))?;
        }
        if any {
            ctx.notify(CTRL_TX);
        }
        self.flush_ctrl(ctx)
    }

    fn on_control(&mut self, id: u32, ev: u16, value: u16) {
        match ev {
            event::DEVICE_READY if value == 1 => {
                for p in 0..self.ports.len() {
                    self.ctrl_out
                        .push_back(control(p as u32, event::DEVICE_ADD, 0));
                }
            }
            event::PORT_READY if value == 1 => {
                let Some(port) = self.ports.get_mut(id as usize) else {
                    return;
                };
                if port.ready {
                    return;
                }
                port.ready = true;
                // Open before naming: the guest finds its ports by name, and a read on
                // a port the host has not opened returns EOF. An input already at EOF
                // with nothing left stays closed: the guest's reads return EOF at once.
                let live = port
                    .input
                    .as_ref()
                    .is_none_or(|i| !(i.eof && i.off >= i.pending.len()));
                if live {
                    self.ctrl_out.push_back(control(id, event::PORT_OPEN, 1));
                    port.open_sent = true;
                } else {
                    port.close_sent = true;
                }
                let mut name = control(id, event::PORT_NAME, 0);
                name.extend_from_slice(port.name.as_bytes());
                self.ctrl_out.push_back(name);
            }
            event::PORT_OPEN => {
                if let Some(port) = self.ports.get_mut(id as usize) {
                    port.guest_open = value == 1;
                }
            }
            // Something we do not act on.
            _ => {}
        }
    }

    /// Moves guest output of `port` to its writer thread, within the budget (or all of
    /// it when `drain`), at most a queue size of chains per pass: transmit queues never
    /// suppress notifications, so whatever the driver adds during the pass comes with a
    /// kick of its own, and a used ring over the available ring cannot hold the thread
    /// here.
    fn serve_tx(
        &mut self,
        port: usize,
        ctx: &mut QueueCtx<'_>,
        drain: bool,
    ) -> Result<(), DeviceFault> {
        let q = tx_queue(port);
        let mut any = false;
        for _ in 0..queue_size(ctx, q) {
            if let Some(o) = &self.ports[port].output
                && !drain
                && o.in_flight.load(Ordering::SeqCst) >= OUTPUT_BUDGET
            {
                break;
            }
            let Some(c) = queue::pop_chain(&mut ctx.queues[q], ctx.mem).map_err(Self::fault(q))?
            else {
                break;
            };
            any = true;
            let len = c.readable_len();
            if len > MAX_TX_CHAIN {
                return Err(Self::fault(q)(ChainError::TooLong));
            }
            if let Some(o) = &self.ports[port].output
                && let Some(tx) = &o.tx
                && len > 0
            {
                let mut buf = vec![0u8; len as usize];
                let n = c.read_at(ctx.mem, 0, &mut buf);
                buf.truncate(n);
                o.in_flight.fetch_add(buf.len(), Ordering::SeqCst);
                if tx.send(buf).is_err() {
                    o.in_flight.store(0, Ordering::SeqCst);
                }
            }
            queue::add_used(&mut ctx.queues[q], ctx.mem, c.head, 0).map_err(Self::fault(q))?;
        }
        if any {
            ctx.notify(q);
        }
        Ok(())
    }

    /// Hands every transmit buffer the guest queued to the writers, budget or not (the
    /// device is going away). A malformed chain ends the drain, as it would end serving.
    fn drain_output(&mut self, ctx: Option<&mut QueueCtx<'_>>) {
        let Some(ctx) = ctx else { return };
        for p in 0..self.ports.len() {
            if self.ports[p].output.is_some() {
                let _ = self.serve_tx(p, ctx, true);
            }
        }
    }

    /// Copies pending input into the guest's receive buffers of `port`.
    fn deliver_input(&mut self, port: usize, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceFault> {
        let q = rx_queue(port);
        let mut any = false;
        let open = self.ports[port].guest_open;
        let mut starving = false;
        let mut looked_again = false;
        // At most a queue size of chains per pass (see `reschedule`).
        let mut budget = queue_size(ctx, q);
        loop {
            let Some(inp) = self.ports[port].input.as_mut() else {
                // An output port: nothing ever goes into its receive buffers.
                return Self::want_buffers(ctx, q, false).map(drop);
            };
            if !open {
                break;
            }
            if inp.off >= inp.pending.len() {
                inp.pending.clear();
                inp.off = 0;
                // A non-pollable input is read whenever buffers are there.
                if inp.pollable || inp.eof {
                    break;
                }
                if !Self::read_input(inp) {
                    break;
                }
                continue;
            }
            if budget == 0 {
                self.reschedule();
                break;
            }
            budget -= 1;
            let Some(c) = queue::pop_chain(&mut ctx.queues[q], ctx.mem).map_err(Self::fault(q))?
            else {
                // Data to deliver (or a file to read) and no buffer: hear of the next one
                // (and look once more if one came in meanwhile).
                if Self::want_buffers(ctx, q, true)? && !looked_again {
                    looked_again = true;
                    continue;
                }
                starving = true;
                break;
            };
            let n = c.write_at(ctx.mem, 0, &inp.pending[inp.off..]);
            inp.off += n;
            queue::add_used(&mut ctx.queues[q], ctx.mem, c.head, n as u32)
                .map_err(Self::fault(q))?;
            any = true;
        }
        if !starving {
            Self::want_buffers(ctx, q, false)?;
        }
        if any {
            ctx.notify(q);
        }
        // EOF with everything delivered: close the port (after the data, so the guest
        // sees the data first).
        let p = &mut self.ports[port];
        if let Some(inp) = &p.input
            && inp.eof
            && inp.off >= inp.pending.len()
            && p.open_sent
            && !p.close_sent
        {
            p.close_sent = true;
            self.ctrl_out
                .push_back(control(port as u32, event::PORT_OPEN, 0));
            self.flush_ctrl(ctx)?;
        }
        Ok(())
    }

    /// One read from the host input into `pending`; false if nothing was read.
    fn read_input(inp: &mut Input) -> bool {
        let Some(f) = inp.file.as_mut() else {
            inp.eof = true;
            return false;
        };
        let mut buf = vec![0u8; INPUT_CHUNK];
        match f.read(&mut buf) {
            Ok(0) => {
                inp.eof = true;
                false
            }
            Ok(n) => {
                buf.truncate(n);
                inp.pending = buf;
                inp.off = 0;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => false,
            Err(_) => {
                inp.eof = true;
                false
            }
        }
    }

    /// Another pass over the receive queues that are set up: control messages and input
    /// (the work [`Console::reschedule`] asked for).
    fn serve_receive_queues(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceFault> {
        use virtio_queue::QueueT;
        if ctx.queues[CTRL_RX].ready() {
            self.flush_ctrl(ctx)?;
        }
        for p in 0..self.ports.len() {
            if self.ports[p].input.is_some() && ctx.queues[rx_queue(p)].ready() {
                self.deliver_input(p, ctx)?;
            }
        }
        Ok(())
    }

    /// Watches the input fd when there is room for more input, stops when there is not.
    fn update_input_watch(&mut self, ops: Option<&mut EventOps>) {
        let Some(ops) = ops else { return };
        for p in &mut self.ports {
            let Some(inp) = p.input.as_mut() else {
                continue;
            };
            let Some(f) = inp.file.as_ref() else { continue };
            if !inp.pollable {
                continue;
            }
            let want = !inp.eof && inp.off >= inp.pending.len() && p.guest_open;
            let ev = Events::new_raw(f.as_raw_fd(), EventSet::IN);
            if want && !inp.watched {
                inp.watched = ops.add(ev).is_ok();
            } else if !want && inp.watched {
                let _ = ops.remove(ev);
                inp.watched = false;
            }
        }
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        device_type::CONSOLE
    }

    fn features(&self) -> u64 {
        1 << F_MULTIPORT
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 2 + 2 * self.ports.len()]
    }

    /// Linux's `__send_control_msg` spins until the host has used each control message
    /// (DEVICE_READY, and PORT_READY and PORT_OPEN for every port, during boot).
    fn serve_on_notify(&self, index: usize) -> bool {
        index == CTRL_TX
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // cols (le16), rows (le16), max_nr_ports (le32), emerg_wr (le32).
        let mut cfg = [0u8; 12];
        cfg[4..8].copy_from_slice(&(self.ports.len() as u32).to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = cfg.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn activate(&mut self, ctx: &mut QueueCtx<'_>, _acked: u64) -> Result<(), DeviceFault> {
        // The driver fills the receive queues right after DRIVER_OK: no kicks for that
        // (see `want_buffers`); a port with input turns them on when it starves.
        use virtio_queue::QueueT;
        for q in std::iter::once(CTRL_RX).chain((0..self.ports.len()).map(rx_queue)) {
            if ctx.queues[q].ready() {
                Self::want_buffers(ctx, q, false)?;
            }
        }
        Ok(())
    }

    fn process_queue(
        &mut self,
        index: usize,
        ctx: &mut QueueCtx<'_>,
        ops: Option<&mut EventOps>,
    ) -> Result<(), DeviceFault> {
        match index {
            CTRL_TX => {
                self.serve_ctrl_tx(ctx)?;
                // The guest may just have opened an input port.
                for p in 0..self.ports.len() {
                    if self.ports[p].input.is_some() {
                        self.deliver_input(p, ctx)?;
                    }
                }
            }
            CTRL_RX => self.flush_ctrl(ctx)?,
            q => match port_of(q) {
                Some((p, true)) if p < self.ports.len() => self.serve_tx(p, ctx, false)?,
                Some((p, false)) if p < self.ports.len() => self.deliver_input(p, ctx)?,
                _ => {}
            },
        }
        self.update_input_watch(ops);
        Ok(())
    }

    fn init_host_events(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::new(&self.resume_evt, EventSet::IN));
        let _ = ops.add(Events::new(&self.more_evt, EventSet::IN));
        for p in &mut self.ports {
            if let Some(inp) = p.input.as_mut()
                && let Some(f) = inp.file.as_ref()
            {
                // epoll refuses regular files and /dev/null: those are read whenever
                // the guest posts buffers instead.
                let ev = Events::new_raw(f.as_raw_fd(), EventSet::IN);
                inp.pollable = ops.add(ev).is_ok();
                if inp.pollable {
                    let _ = ops.remove(ev);
                }
            }
        }
    }

    fn owns_fd(&self, fd: RawFd) -> bool {
        fd == self.resume_evt.as_raw_fd()
            || fd == self.more_evt.as_raw_fd()
            || self.input_port(fd).is_some()
    }

    fn process_host_event(
        &mut self,
        events: Events,
        ctx: Option<&mut QueueCtx<'_>>,
        mut ops: &mut EventOps,
    ) -> Result<(), DeviceFault> {
        if events.fd() == self.resume_evt.as_raw_fd() {
            let _ = self.resume_evt.read();
            if let Some(ctx) = ctx {
                for p in 0..self.ports.len() {
                    if self.ports[p].output.is_some() {
                        self.serve_tx(p, ctx, false)?;
                    }
                }
            }
            return Ok(());
        }
        if events.fd() == self.more_evt.as_raw_fd() {
            let _ = self.more_evt.read();
            if let Some(ctx) = ctx {
                self.serve_receive_queues(ctx)?;
            }
            self.update_input_watch(Some(ops));
            return Ok(());
        }
        // An input fd: only that port's (the others' fds may not be ready, and they
        // are blocking).
        let Some(p) = self.input_port(events.fd()) else {
            let _ = ops.remove(events);
            return Ok(());
        };
        if let Some(ctx) = ctx {
            if let Some(inp) = self.ports[p].input.as_mut()
                && inp.off >= inp.pending.len()
                && !inp.eof
            {
                if events.event_set().contains(EventSet::IN) {
                    Self::read_input(inp);
                } else {
                    // HUP/ERR without data: the writer is gone.
                    inp.eof = true;
                }
            }
            self.deliver_input(p, ctx)?;
        }
        // Unwatch while no buffers / not active; rewatched on the next receive notify.
        let port = &mut self.ports[p];
        if let Some(inp) = port.input.as_mut()
            && inp.watched
        {
            let done = inp.eof || inp.off < inp.pending.len();
            if done || !port.guest_open {
                let _ = ops.remove(events);
                inp.watched = false;
            }
        }
        let _ = &mut ops;
        Ok(())
    }

    fn reset(&mut self, ctx: Option<&mut QueueCtx<'_>>) {
        // Output the guest queued is the workload's: hand all of it to the writers
        // before the queues are forgotten. The driver does not wait for it — Linux
        // resets the device on its way to reboot, right after the workload's last
        // `write` returned — and while the host reader lags (over the budget) that can
        // be megabytes.
        self.drain_output(ctx);
        self.ctrl_out.clear();
        for p in &mut self.ports {
            p.ready = false;
            p.guest_open = false;
            p.open_sent = false;
            p.close_sent = false;
        }
    }

    fn shutdown(&mut self, ctx: Option<&mut QueueCtx<'_>>) {
        self.drain_output(ctx);
        for p in &mut self.ports {
            if let Some(o) = p.output.as_mut() {
                o.tx = None;
                if let Some(t) = o.thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::IrqTrigger;
    use crate::virtio::queue::tests::{F_WRITE, mem, raw};
    use std::sync::Mutex;
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Rig<'a> {
        m: &'a GuestMemoryMmap,
        vqs: Vec<MockSplitQueue<'a, GuestMemoryMmap>>,
        qs: Vec<Queue>,
        irq: IrqTrigger,
    }

    impl<'a> Rig<'a> {
        fn new(m: &'a GuestMemoryMmap, n: usize) -> Self {
            let vqs: Vec<_> = (0..n)
                .map(|i| MockSplitQueue::create(m, GuestAddress(0x1_0000 * i as u64), 16))
                .collect();
            let qs = vqs.iter().map(|v| v.create_queue().unwrap()).collect();
            Self {
                m,
                vqs,
                qs,
                irq: IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            }
        }

        fn ctx(&mut self) -> QueueCtx<'_> {
            QueueCtx {
                mem: self.m,
                queues: &mut self.qs,
                irq: &self.irq,
            }
        }

        /// Posts one single-descriptor buffer on queue `q`.
        fn post(&self, q: usize, addr: u64, len: u32, flags: u16) {
            let vq = &self.vqs[q];
            let idx = u16::from_le(vq.avail().idx().load());
            vq.desc_table()
                .store(idx, raw(addr, len, flags, 0))
                .unwrap();
            vq.avail()
                .ring()
                .ref_at(idx as usize)
                .unwrap()
                .store(idx.to_le());
            vq.avail().idx().store((idx + 1).to_le());
        }

        /// (len) of used element `i` of queue `q`.
        fn used_len(&self, q: usize, i: u64) -> u32 {
            let used = self.vqs[q].used_addr().0;
            self.m.read_obj(GuestAddress(used + 4 + 8 * i + 4)).unwrap()
        }
    }

    fn ctrl(m: &GuestMemoryMmap, addr: u64) -> (u32, u16, u16) {
        let mut b = [0u8; 8];
        m.read_slice(&mut b, GuestAddress(addr)).unwrap();
        (
            u32::from_le_bytes(b[..4].try_into().unwrap()),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
        )
    }

    #[test]
    fn multiport_handshake_names_and_eof() {
        let out = Sink::default();
        let mut c = Console::new(vec![
            PortConfig {
                name: "isol.stdin".into(),
                io: PortIo::Input(None),
            },
            PortConfig {
                name: "isol.stdout".into(),
                io: PortIo::Output(Box::new(out.clone())),
            },
        ])
        .unwrap();
        assert_eq!(c.queue_max_sizes().len(), 6);
        let mut cfg = [0u8; 4];
        c.read_config(4, &mut cfg);
        assert_eq!(u32::from_le_bytes(cfg), 2);
        let m = mem();
        let mut rig = Rig::new(&m, 6);
        for i in 0..8 {
            rig.post(CTRL_RX, 0x80_0000 + 0x100 * i, 0x100, F_WRITE);
        }
        // DEVICE_READY → one DEVICE_ADD per port.
        m.write_slice(&control(0, event::DEVICE_READY, 1), GuestAddress(0x90_0000))
            .unwrap();
        rig.post(CTRL_TX, 0x90_0000, 8, 0);
        c.process_queue(CTRL_TX, &mut rig.ctx(), None).unwrap();
        assert_eq!(ctrl(&m, 0x80_0000), (0, event::DEVICE_ADD, 0));
        assert_eq!(ctrl(&m, 0x80_0100), (1, event::DEVICE_ADD, 0));
        // PORT_READY for the output port → open, then the name.
        m.write_slice(&control(1, event::PORT_READY, 1), GuestAddress(0x90_0100))
            .unwrap();
        rig.post(CTRL_TX, 0x90_0100, 8, 0);
        c.process_queue(CTRL_TX, &mut rig.ctx(), None).unwrap();
        assert_eq!(ctrl(&m, 0x80_0200), (1, event::PORT_OPEN, 1));
        assert_eq!(ctrl(&m, 0x80_0300), (1, event::PORT_NAME, 0));
        assert_eq!(rig.used_len(CTRL_RX, 3), 8 + 11);
        let mut name = [0u8; 11];
        m.read_slice(&mut name, GuestAddress(0x80_0308)).unwrap();
        assert_eq!(&name, b"isol.stdout");
        // PORT_READY for the input port at EOF: named, never opened (reads see EOF).
        m.write_slice(&control(0, event::PORT_READY, 1), GuestAddress(0x90_0200))
            .unwrap();
        rig.post(CTRL_TX, 0x90_0200, 8, 0);
        c.process_queue(CTRL_TX, &mut rig.ctx(), None).unwrap();
        assert_eq!(ctrl(&m, 0x80_0400), (0, event::PORT_NAME, 0));
        assert_eq!(u16::from_le(rig.vqs[CTRL_RX].used().idx().load()), 5);

        // Output: the bytes reach the writer, in order.
        m.write_slice(b"hello ", GuestAddress(0xa0_0000)).unwrap();
        m.write_slice(b"world", GuestAddress(0xa1_0000)).unwrap();
        rig.post(tx_queue(1), 0xa0_0000, 6, 0);
        rig.post(tx_queue(1), 0xa1_0000, 5, 0);
        c.process_queue(tx_queue(1), &mut rig.ctx(), None).unwrap();
        c.shutdown(Some(&mut rig.ctx()));
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hello world");
    }

    #[test]
    fn a_duplex_port_carries_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in");
        std::fs::write(&p, b"from host").unwrap();
        let out = Sink::default();
        let mut c = Console::new(vec![PortConfig {
            name: "isol.control".into(),
            io: PortIo::Duplex(File::open(&p).unwrap(), Box::new(out.clone())),
        }])
        .unwrap();
        let m = mem();
        let mut rig = Rig::new(&m, 4);
        (0..4).for_each(|i| rig.post(CTRL_RX, 0x80_0000 + 0x100 * i, 0x100, F_WRITE));
        // The guest's control messages, each in a transmit buffer of its own.
        let mut from_guest = |at: u64, ev: u16| {
            m.write_slice(&control(0, ev, 1), GuestAddress(at)).unwrap();
            rig.post(CTRL_TX, at, 8, 0);
            c.process_queue(CTRL_TX, &mut rig.ctx(), None).unwrap();
        };
        from_guest(0x90_0000, event::PORT_READY);
        // Opened by the host (its input is live), then named; the guest opens it too.
        assert_eq!(ctrl(&m, 0x80_0000), (0, event::PORT_OPEN, 1));
        assert_eq!(ctrl(&m, 0x80_0100), (0, event::PORT_NAME, 0));
        from_guest(0x90_0100, event::PORT_OPEN);
        // Host → guest.
        rig.post(0, 0xa0_0000, 0x100, F_WRITE);
        c.process_queue(0, &mut rig.ctx(), None).unwrap();
        assert_eq!(rig.used_len(0, 0), 9);
        let mut got = [0u8; 9];
        m.read_slice(&mut got, GuestAddress(0xa0_0000)).unwrap();
        assert_eq!(&got, b"from host");
        // Guest → host, on the same port.
        m.write_slice(b"from guest", GuestAddress(0xb0_0000))
            .unwrap();
        rig.post(1, 0xb0_0000, 10, 0);
        c.process_queue(1, &mut rig.ctx(), None).unwrap();
        c.shutdown(Some(&mut rig.ctx()));
        assert_eq!(out.0.lock().unwrap().as_slice(), b"from guest");
    }

    #[test]
    fn input_is_delivered_then_the_port_closes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in");
        std::fs::write(&p, b"abcdefghij").unwrap();
        let mut c = Console::new(vec![PortConfig {
            name: "isol.stdin".into(),
            io: PortIo::Input(Some(File::open(&p).unwrap())),
        }])
        .unwrap();
        let m = mem();
        let mut rig = Rig::new(&m, 4);
        for i in 0..4 {
            rig.post(CTRL_RX, 0x80_0000 + 0x100 * i, 0x100, F_WRITE);
        }
        m.write_slice(&control(0, event::PORT_READY, 1), GuestAddress(0x90_0000))
            .unwrap();
        rig.post(CTRL_TX, 0x90_0000, 8, 0);
        c.process_queue(CTRL_TX, &mut rig.ctx(), None).unwrap();
        assert_eq!(ctrl(&m, 0x80_0000), (0, event::PORT_OPEN, 1));
        // Regular file: not pollable, read when buffers come. 4-byte buffers.
        for i in 0..3 {
            rig.post(0, 0xa0_0000 + 0x100 * i, 4, F_WRITE);
        }
        c.process_queue(0, &mut rig.ctx(), None).unwrap();
        // Nothing flows until the guest opens the port (Linux drops data on a closed
        // port).
        assert_eq!(u16::from_le(rig.vqs[0].used().idx().load()), 0);
        m.write_slice(&control(0, event::PORT_OPEN, 1), GuestAddress(0x90_0100))
            .unwrap();
        rig.post(CTRL_TX, 0x90_0100, 8, 0);
        c.process_queue(CTRL_TX, &mut rig.ctx(), None).unwrap();
        assert_eq!(
            (rig.used_len(0, 0), rig.used_len(0, 1), rig.used_len(0, 2)),
            (4, 4, 2)
        );
        let mut got = [0u8; 4];
        m.read_slice(&mut got, GuestAddress(0xa0_0100)).unwrap();
        assert_eq!(&got, b"efgh");
        // EOF is only seen with the next buffers; then the port closes.
        rig.post(0, 0xa0_0300, 4, F_WRITE);
        c.process_queue(0, &mut rig.ctx(), None).unwrap();
        assert_eq!(ctrl(&m, 0x80_0200), (0, event::PORT_OPEN, 0));
        assert_eq!(
            u16::from_le(rig.vqs[0].used().idx().load()),
            3,
            "no empty buffer"
        );
    }

    #[test]
    fn receive_queues_ask_for_kicks_only_while_starving() {
        // The used ring's flags (its first le16); bit 0 is VRING_USED_F_NO_NOTIFY.
        const VRING_USED_F_NO_NOTIFY: u16 = 1;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in");
        std::fs::write(&p, b"abcdefgh").unwrap();
        let mut c = Console::new(vec![
            PortConfig {
                name: "isol.stdin".into(),
                io: PortIo::Input(Some(File::open(&p).unwrap())),
            },
            PortConfig {
                name: "isol.stdout".into(),
                io: PortIo::Output(Box::new(Sink::default())),
            },
        ])
        .unwrap();
        let m = mem();
        let mut rig = Rig::new(&m, 6);
        let no_kicks = |rig: &Rig<'_>, q: usize| {
            let flags: u16 = m.read_obj(rig.vqs[q].used_addr()).unwrap();
            u16::from_le(flags) & VRING_USED_F_NO_NOTIFY != 0
        };
        // Live: no receive queue wants kicks (the driver fills them all now).
        c.activate(&mut rig.ctx(), 0).unwrap();
        for q in [CTRL_RX, rx_queue(0), rx_queue(1)] {
            assert!(no_kicks(&rig, q), "queue {q}");
        }
        assert!(!no_kicks(&rig, CTRL_TX) && !no_kicks(&rig, tx_queue(1)));
        // Control messages and no control buffer: kicks on until they went out.
        m.write_slice(&control(0, event::PORT_READY, 1), GuestAddress(0x90_0000))
            .unwrap();
        rig.post(CTRL_TX, 0x90_0000, 8, 0);
        c.process_queue(CTRL_TX, &mut rig.ctx(), None).unwrap();
        assert!(!no_kicks(&rig, CTRL_RX));
        for i in 0..4 {
            rig.post(CTRL_RX, 0x80_0000 + 0x100 * i, 0x100, F_WRITE);
        }
        c.process_queue(CTRL_RX, &mut rig.ctx(), None).unwrap();
        assert_eq!(ctrl(&m, 0x80_0000), (0, event::PORT_OPEN, 1));
        assert!(no_kicks(&rig, CTRL_RX));
        // The guest opens the input port; input is there and no buffer: kicks on.
        m.write_slice(&control(0, event::PORT_OPEN, 1), GuestAddress(0x90_0100))
            .unwrap();
        rig.post(CTRL_TX, 0x90_0100, 8, 0);
        c.process_queue(CTRL_TX, &mut rig.ctx(), None).unwrap();
        assert!(!no_kicks(&rig, rx_queue(0)));
        // Buffers for all of it and the EOF: delivered, kicks off again.
        for i in 0..3 {
            rig.post(rx_queue(0), 0xa0_0000 + 0x100 * i, 4, F_WRITE);
        }
        c.process_queue(rx_queue(0), &mut rig.ctx(), None).unwrap();
        assert_eq!((rig.used_len(0, 0), rig.used_len(0, 1)), (4, 4));
        assert!(no_kicks(&rig, rx_queue(0)));
        // The output port's receive queue never wanted any.
        assert!(no_kicks(&rig, rx_queue(1)));
    }

    /// A writer that writes one chunk per message on its channel.
    struct Gate(mpsc::Receiver<()>, Sink);
    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            self.1.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Port 0 an input at EOF, port 1 an output through a [`Gate`]: the sender lets
    /// one chunk through per message, the sink holds what was written.
    fn gated_console() -> (Console, mpsc::Sender<()>, Sink) {
        let (open, gate) = mpsc::channel();
        let sink = Sink::default();
        let c = Console::new(vec![
            PortConfig {
                name: "in".into(),
                io: PortIo::Input(None),
            },
            PortConfig {
                name: "out".into(),
                io: PortIo::Output(Box::new(Gate(gate, sink.clone()))),
            },
        ])
        .unwrap();
        (c, open, sink)
    }

    #[test]
    fn output_stops_at_the_budget_and_resumes() {
        let (mut c, open, sink) = gated_console();
        let m = mem();
        let mut rig = Rig::new(&m, 6);
        // Three buffers of 600 KiB: the first two are taken (budget 1 MiB reached),
        // the third stays with the guest while the host does not write.
        for i in 0..3 {
            rig.post(tx_queue(1), 0x10_0000 + 0x10_0000 * i, 600 << 10, 0);
        }
        c.process_queue(tx_queue(1), &mut rig.ctx(), None).unwrap();
        assert_eq!(u16::from_le(rig.vqs[tx_queue(1)].used().idx().load()), 2);
        // The host makes progress: the resume eventfd fires and the rest is taken.
        open.send(()).unwrap();
        while c.ports[1]
            .output
            .as_ref()
            .unwrap()
            .in_flight
            .load(Ordering::SeqCst)
            >= OUTPUT_BUDGET
        {
            std::thread::yield_now();
        }
        c.serve_tx(1, &mut rig.ctx(), false).unwrap();
        assert_eq!(u16::from_le(rig.vqs[tx_queue(1)].used().idx().load()), 3);
        open.send(()).unwrap();
        open.send(()).unwrap();
        c.shutdown(Some(&mut rig.ctx()));
        assert_eq!(sink.0.lock().unwrap().len(), 3 * (600 << 10));
    }

    /// A pipe whose write end is `O_NONBLOCK` (as a shell or a reader may leave isol's
    /// stdout): (read end, write end).
    fn nonblocking_pipe() -> (File, File) {
        use std::os::unix::io::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two fds, owned by the Files below.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: O_NONBLOCK on the write end we just made.
        let r = unsafe { libc::fcntl(fds[1], libc::F_SETFL, libc::O_NONBLOCK) };
        assert_eq!(r, 0);
        // SAFETY: a fresh fd, owned once.
        let rd = unsafe { File::from_raw_fd(fds[0]) };
        // SAFETY: as above.
        let wr = unsafe { File::from_raw_fd(fds[1]) };
        (rd, wr)
    }

    #[test]
    fn output_to_a_nonblocking_fd_waits_for_the_reader() {
        // 1.8 MiB into a 64 KiB pipe whose reader starts late: the writer meets EAGAIN
        // and must wait for room, not drop the rest.
        let (mut rd, wr) = nonblocking_pipe();
        let mut c = Console::new(vec![PortConfig {
            name: "out".into(),
            io: PortIo::Output(Box::new(FdWriter::new(wr))),
        }])
        .unwrap();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut got = Vec::new();
            rd.read_to_end(&mut got).unwrap();
            got
        });
        let m = mem();
        let mut rig = Rig::new(&m, 4);
        let mut want = Vec::new();
        for i in 0..3u8 {
            let addr = 0x10_0000 + 0x10_0000 * u64::from(i);
            let chunk: Vec<u8> = (0..600 << 10).map(|j: u32| (j % 251) as u8 ^ i).collect();
            m.write_slice(&chunk, GuestAddress(addr)).unwrap();
            want.extend_from_slice(&chunk);
            rig.post(tx_queue(0), addr, 600 << 10, 0);
        }
        c.process_queue(tx_queue(0), &mut rig.ctx(), None).unwrap();
        // Hands the rest over and closes the write end once the writer is done.
        c.shutdown(Some(&mut rig.ctx()));
        let got = reader.join().unwrap();
        assert_eq!(got.len(), want.len(), "output lost on EAGAIN");
        assert!(got == want, "output reordered or corrupted");
    }

    #[test]
    fn a_reset_hands_the_queued_output_over_first() {
        // The host reader lags: the budget is used up and a third buffer waits in the
        // queue when the guest resets the device (as Linux does on its way to reboot,
        // right after the workload exits). Its bytes must still come out, in order.
        let (mut c, open, sink) = gated_console();
        let m = mem();
        let mut rig = Rig::new(&m, 6);
        let mut want = Vec::new();
        for i in 0..3u8 {
            let addr = 0x10_0000 + 0x10_0000 * u64::from(i);
            let chunk = vec![b'a' + i; 600 << 10];
            m.write_slice(&chunk, GuestAddress(addr)).unwrap();
            want.extend_from_slice(&chunk);
            rig.post(tx_queue(1), addr, 600 << 10, 0);
        }
        c.process_queue(tx_queue(1), &mut rig.ctx(), None).unwrap();
        assert_eq!(u16::from_le(rig.vqs[tx_queue(1)].used().idx().load()), 2);
        c.reset(Some(&mut rig.ctx()));
        assert_eq!(
            u16::from_le(rig.vqs[tx_queue(1)].used().idx().load()),
            3,
            "the reset took the waiting buffer"
        );
        // After the reset the queues are gone: the VMM shuts down without them.
        for _ in 0..3 {
            open.send(()).unwrap();
        }
        c.shutdown(None);
        assert!(*sink.0.lock().unwrap() == want, "output lost or reordered");
    }

    /// Runs `f` on a thread; whether it returned within `secs` (a hang leaves the thread
    /// spinning until the test process exits).
    fn finishes(secs: u64, f: impl FnOnce() + Send + 'static) -> bool {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(std::time::Duration::from_secs(secs))
            .is_ok()
    }

    /// A used ring over the available ring (finding 1 in docs/fuzzing.md): every used
    /// entry raises `avail.idx` one past the device's next index, so a receive pass that
    /// took chains while it had input to deliver (here zero-length buffers, which deliver
    /// nothing) never ran out of them and held the device thread forever. A pass now
    /// takes a queue size of chains, then signals the device's own "more work" eventfd.
    #[test]
    fn a_used_ring_over_the_avail_ring_does_not_hold_the_receive_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in");
        std::fs::write(&p, b"abcdefgh").unwrap();
        let file = File::open(&p).unwrap();
        let done = finishes(20, move || {
            let mut c = Console::new(vec![PortConfig {
                name: "isol.stdin".into(),
                io: PortIo::Input(Some(file)),
            }])
            .unwrap();
            let m = mem();
            let mut rig = Rig::new(&m, 4);
            for i in 0..4 {
                rig.post(CTRL_RX, 0x80_0000 + 0x100 * i, 0x100, F_WRITE);
            }
            for (i, ev) in [event::PORT_READY, event::PORT_OPEN]
                .into_iter()
                .enumerate()
            {
                let at = 0x90_0000 + 0x100 * i as u64;
                m.write_slice(&control(0, ev, 1), GuestAddress(at)).unwrap();
                rig.post(CTRL_TX, at, 8, 0);
                c.process_queue(CTRL_TX, &mut rig.ctx(), None).unwrap();
            }
            // One zero-length receive buffer, the used ring at the available ring's
            // address, the device's used index one ahead.
            rig.post(0, 0xa0_0000, 0, F_WRITE);
            let avail = rig.vqs[0].avail_addr().0;
            rig.qs[0].set_used_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
            rig.qs[0].set_next_used(1);
            let more = c.more_evt.try_clone().unwrap();
            let _ = c.process_queue(0, &mut rig.ctx(), None);
            // The pass stopped at the cap and asked to be run again.
            assert_eq!(more.read().unwrap(), 1, "no reschedule at the cap");
            c.shutdown(None);
        });
        assert!(done, "the receive pass never returned");
    }

    /// The same ring layout on a transmit queue with no writer behind it (port 0 is
    /// stdin, so no output budget ends the pass): at most a queue size of chains per
    /// notification, and no reschedule (transmit queues always ask for kicks).
    #[test]
    fn a_used_ring_over_the_avail_ring_does_not_hold_the_transmit_path() {
        let done = finishes(20, || {
            let mut c = Console::new(vec![PortConfig {
                name: "isol.stdin".into(),
                io: PortIo::Input(None),
            }])
            .unwrap();
            let m = mem();
            let mut rig = Rig::new(&m, 4);
            rig.post(1, 0xa0_0000, 4, 0);
            let avail = rig.vqs[1].avail_addr().0;
            rig.qs[1].set_used_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
            rig.qs[1].set_next_used(1);
            let more = c.more_evt.try_clone().unwrap();
            c.process_queue(1, &mut rig.ctx(), None).unwrap();
            assert_eq!(rig.qs[1].next_avail(), 16, "one queue size of chains");
            assert!(more.read().is_err(), "a transmit pass needs no reschedule");
            c.shutdown(None);
        });
        assert!(done, "the transmit pass never returned");
    }
}
