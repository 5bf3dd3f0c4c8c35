//! virtio 1.x devices on the virtio-mmio transport (version 2, "modern" layout).
//!
//! * [`mmio`]: the register file a guest driver talks to ([`MmioTransport`]), the status
//!   handshake, feature negotiation and queue setup.
//! * [`queue`]: popping descriptor chains from a virtio-queue [`Queue`] with every
//!   address, length and link checked before a device touches guest memory.
//! * [`block`]: virtio-blk over a raw host file.
//! * [`console`]: virtio-console with `VIRTIO_CONSOLE_F_MULTIPORT`, one named port per
//!   workload stdio stream.
//! * [`net`]: virtio-net over a tap, with the tap's checksum and segmentation offloads.
//! * [`fs`]: virtio-fs as a vhost-user frontend: the queues are served by a backend
//!   process (virtiofsd) on a unix socket, straight from guest memory.
//! * [`subscriber`]: the event-manager glue: queue ioeventfds and host fds to the device.
//!
//! The transport and its device sit behind one mutex: the vCPU threads take it for
//! register accesses (rare after boot), the device thread takes it to serve a queue.
//! Queue notifications reach the device thread through KVM ioeventfds and interrupts
//! leave it through KVM irqfds, so the data path never goes through a vCPU thread.

pub mod block;
pub mod console;
pub mod fs;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod subscriber;

use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, Events};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use mmio::MmioTransport;
pub use queue::{ChainError, Desc, ValidChain};
pub use virtio_queue::Queue;

/// `VIRTIO_F_VERSION_1`: the device and driver speak virtio 1.x (mandatory here).
pub const VIRTIO_F_VERSION_1: u32 = 32;

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready: queues are live.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Interrupt status bit: a used ring was updated.
pub const INT_VRING: u32 = 1;
/// Interrupt status bit: the configuration (or the device status) changed.
pub const INT_CONFIG: u32 = 2;

/// Device type ids (virtio 1.x, 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// File system device (virtio-fs).
    pub const FS: u32 = 26;
}

/// The interrupt line of one device: an interrupt-status word the transport exposes
/// and an eventfd registered as a KVM irqfd.
#[derive(Debug)]
pub struct IrqTrigger {
    status: Arc<AtomicU32>,
    /// Bits the interrupt status always shows (see [`IrqTrigger::set_sticky`]).
    sticky: AtomicU32,
    evt: EventFd,
}

impl IrqTrigger {
    /// A trigger that signals `evt`.
    pub fn new(evt: EventFd) -> Self {
        Self {
            status: Arc::new(AtomicU32::new(0)),
            sticky: AtomicU32::new(0),
            evt,
        }
    }

    /// Sets `bits` in the interrupt status and raises the line.
    pub fn trigger(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        // Fails only when the counter would overflow, i.e. the guest has not taken the
        // (edge) interrupt 2^64 times: the line is raised anyway.
        let _ = self.evt.write(1);
    }

    /// The current interrupt status.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst) | self.sticky.load(Ordering::SeqCst)
    }

    /// Makes the interrupt status show `bits` whatever was acknowledged, until the next
    /// call (0: none). For a device whose used-ring interrupts are raised by another
    /// process writing the eventfd directly (a vhost-user backend): the status word never
    /// sees those, and Linux's virtio-mmio driver looks at the queues only when the status
    /// it reads says `INT_VRING`. With the bit always set, each interrupt makes the driver
    /// check every queue of the device, which costs it nothing when a queue has no news.
    pub fn set_sticky(&self, bits: u32) {
        self.sticky.store(bits, Ordering::SeqCst);
    }

    /// Clears the bits the driver acknowledged.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The eventfd (for irqfd registration).
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// How a device tells the VMM that the process serving it is gone and the VM cannot go on
/// (a vhost-user backend that exited mid-run: the guest would wait for it forever). The
/// first reason raised is kept; the eventfd is what the VMM's event loop watches. Clones
/// share both.
#[derive(Debug, Clone)]
pub struct BackendLost {
    evt: Arc<EventFd>,
    reason: Arc<Mutex<Option<String>>>,
}

impl BackendLost {
    /// A notice nobody raised yet.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            evt: Arc::new(EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)?),
            reason: Arc::default(),
        })
    }

    /// Says why the VM cannot go on (one line, for the user) and wakes the watcher.
    pub fn raise(&self, reason: String) {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(reason);
        // Fails only if the counter would overflow: it is non-zero, so the watcher wakes.
        let _ = self.evt.write(1);
    }

    /// The first reason raised, if any.
    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The eventfd the watcher polls (readable once raised).
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// Why a device stopped serving its queues. The transport answers with
/// `DEVICE_NEEDS_RESET` and a configuration interrupt; the device stays idle until the
/// driver resets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceFault {
    /// The guest put a malformed descriptor chain or ring index in a queue.
    #[error("malformed queue {queue}: {error}")]
    Chain {
        /// Queue index.
        queue: usize,
        /// What was wrong.
        error: ChainError,
    },
    /// The driver set DRIVER_OK with a queue the device needs left unusable.
    #[error("queue {0} is not set up")]
    QueueNotReady(usize),
    /// The process serving the device's queues (a vhost-user backend) refused or failed
    /// a request.
    #[error("backend: {0}")]
    Backend(String),
}

/// What a device may touch while it serves a queue or a host event.
#[derive(Debug)]
pub struct QueueCtx<'a> {
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
    /// The device's queues, in transport order.
    pub queues: &'a mut [Queue],
    /// The device's interrupt.
    pub irq: &'a IrqTrigger,
}

/// `VRING_AVAIL_F_NO_INTERRUPT`: the driver asks for no used-ring interrupts (virtio 1.x,
/// 2.7.7), e.g. Linux while NAPI polls a network queue.
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

impl QueueCtx<'_> {
    /// Raises a used-ring interrupt for `queue` unless the driver suppressed it: with
    /// `EVENT_IDX`, by its `used_event`; without, by `VRING_AVAIL_F_NO_INTERRUPT`, which
    /// virtio-queue does not look at. A driver that sets the flag polls the used ring and
    /// checks it again when it clears the flag, so nothing it is owed is lost; every
    /// interrupt it did not want costs the guest an exit to read the interrupt status and
    /// one to acknowledge it.
    pub fn notify(&mut self, queue: usize) {
        use virtio_queue::QueueT;
        use vm_memory::{Bytes, GuestAddress};
        let q = &mut self.queues[queue];
        // On error (a used ring outside memory) interrupt anyway: the guest gets to see
        // its own mess. `needs_notification` fences the used-ring writes before any read.
        let needed = q.needs_notification(self.mem).unwrap_or(true);
        let suppressed = !q.event_idx_enabled()
            && self
                .mem
                .read_obj::<u16>(GuestAddress(q.avail_ring()))
                .is_ok_and(|f| u16::from_le(f) & VRING_AVAIL_F_NO_INTERRUPT != 0);
        if needed && !suppressed {
            self.irq.trigger(INT_VRING);
        }
    }
}

/// A virtio device model behind an [`MmioTransport`].
pub trait VirtioDevice: Send {
    /// The virtio device type id.
    fn device_type(&self) -> u32;
    /// Features the device offers (VERSION_1 is added by the transport).
    fn features(&self) -> u64;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Reads the device-specific configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// The driver wrote the configuration space (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// DRIVER_OK: the queues are live.
    fn activate(&mut self, ctx: &mut QueueCtx<'_>, acked_features: u64) -> Result<(), DeviceFault>;
    /// The driver notified queue `index`.
    fn process_queue(
        &mut self,
        index: usize,
        ctx: &mut QueueCtx<'_>,
        ops: Option<&mut EventOps>,
    ) -> Result<(), DeviceFault>;
    /// Whether the driver busy-waits for the device to use what it puts on queue `index`
    /// (Linux's virtio-console spins on its control queue until the host has taken each
    /// message). Such a queue is served on the vCPU thread, at the notify's exit, so the
    /// spinning guest finds its buffer used when it resumes, instead of spinning until
    /// the device thread wakes up; the device thread is notified as well, for the work
    /// that needs its event loop. No ioeventfd is registered for it.
    fn serve_on_notify(&self, _index: usize) -> bool {
        false
    }
    /// Whether the last [`VirtioDevice::process_queue`] of queue `index` stopped, at a
    /// bound on one call's work, short of what the driver queued, and no notification of
    /// the driver's will announce the rest (with `EVENT_IDX` it notifies only past the
    /// `avail_event` the device published, and it may have queued the rest seeing an older
    /// one). The transport then notifies the device thread itself, so the rest is served
    /// after the loop's other events. Asking clears it.
    fn take_unfinished(&mut self, _index: usize) -> bool {
        false
    }
    /// Whether another process serves the queues (a vhost-user backend): the queue
    /// notification eventfds are handed to it (as KVM ioeventfds still), and the device
    /// thread must not read them.
    fn backend_serves_queues(&self) -> bool {
        false
    }
    /// The transport's queue notification eventfds, one per queue, given once when the
    /// transport is made (a vhost-user device hands them to its backend).
    fn set_queue_evts(&mut self, _evts: &[EventFd]) -> std::io::Result<()> {
        Ok(())
    }
    /// Whether the device keeps `INT_VRING` set in the interrupt status while live
    /// ([`IrqTrigger::set_sticky`]), so that the driver's `INTERRUPT_ACK` of it changes
    /// nothing and may be applied late: the VMM then lets KVM batch that register's writes
    /// (coalesced MMIO) instead of taking an exit for each, one of the two exits to the VMM
    /// per interrupt. (An ack of `INT_CONFIG` applied late can only meet a second
    /// configuration interrupt, which the devices here raise only when they break.)
    fn batch_interrupt_ack(&self) -> bool {
        false
    }
    /// Registers the device's own host fds (called once, on the device thread).
    fn init_host_events(&mut self, _ops: &mut EventOps) {}
    /// One of the device's host fds is ready.
    fn process_host_event(
        &mut self,
        _events: Events,
        _ctx: Option<&mut QueueCtx<'_>>,
        _ops: &mut EventOps,
    ) -> Result<(), DeviceFault> {
        Ok(())
    }
    /// Whether `fd` is one of the device's host fds.
    fn owns_fd(&self, _fd: RawFd) -> bool {
        false
    }
    /// The driver reset the device: forget everything queue-related. `ctx` is the
    /// queues as they were (`None` if the device was not live): the last chance to
    /// finish what the driver already handed over and will not wait for — Linux resets
    /// every virtio device on its way to reboot, right after the workload's last
    /// `write` returned (console output still in the transmit queue).
    fn reset(&mut self, ctx: Option<&mut QueueCtx<'_>>);
    /// The VM is over: finish pending work (e.g. flush output the guest already queued).
    fn shutdown(&mut self, _ctx: Option<&mut QueueCtx<'_>>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::QueueT;
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    /// Linux sets `VRING_AVAIL_F_NO_INTERRUPT` while NAPI polls the receive queue: an
    /// interrupt then is one the guest pays two exits for and finds nothing in. Before the
    /// flag was honoured every pass over a queue interrupted.
    #[test]
    fn the_driver_s_no_interrupt_flag_suppresses_the_interrupt() {
        let m = queue::tests::mem();
        let mut q = [queue::tests::queue_with(
            &m,
            &[queue::tests::raw(0x10_0000, 16, queue::tests::F_WRITE, 0)],
        )];
        let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let flags = GuestAddress(q[0].avail_ring());
        let notify = |q: &mut [Queue; 1], no_interrupt: bool| {
            m.write_obj(u16::from(no_interrupt).to_le(), flags).unwrap();
            let _ = irq.eventfd().read();
            irq.ack(INT_VRING);
            q[0].add_used(&m, 0, 16).unwrap();
            QueueCtx {
                mem: &m,
                queues: q,
                irq: &irq,
            }
            .notify(0);
            irq.eventfd().read().is_ok()
        };
        assert!(!notify(&mut q, true), "suppressed by the driver");
        assert_eq!(irq.status() & INT_VRING, 0);
        assert!(notify(&mut q, false), "wanted");
        assert_eq!(irq.status() & INT_VRING, INT_VRING);
    }
}
