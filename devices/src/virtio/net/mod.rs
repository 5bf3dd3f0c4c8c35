//! virtio-net over a tap.
//!
//! Two queues of [`QUEUE_SIZE`]: receive (0) and transmit (1). Frames cross between the tap and
//! guest memory with one `readv`/`writev` each, straight from and into the guest's buffers, the
//! 12-byte virtio-net header included: the tap speaks the same header (`IFF_VNET_HDR`,
//! `TUNSETVNETHDRSZ` 12), so checksum and segmentation offloads pass through unchanged.
//!
//! * **tx** (guest notify on queue 1, on the device thread): each chain's readable part is one
//!   frame with its header, written to the tap. A chain shorter than the header or longer than
//!   a header plus [`MAX_FRAME`] is returned unused (length 0) and counted; a write the tap
//!   refuses (a malformed GSO header, the interface down) drops the frame, as a NIC would.
//! * **rx** (tap readable, or the guest posting buffers): a chain is popped, the tap read into
//!   its writable buffers; with nothing to read the chain goes back (`set_next_avail`). When
//!   the guest has no buffer left the tap is no longer watched (the kernel queues, then drops,
//!   as for a slow NIC) until the guest posts buffers again. A chain with less room than the
//!   header, or with a readable part, is returned unused and counted.
//!
//! * **notifications**: with `EVENT_IDX` (offered) the driver asks for an interrupt only
//!   once the used ring passes its `used_event`, and the device publishes in `avail_event`
//!   how far it has taken buffers after each pass over a queue, so the driver notifies
//!   only when the device may have run dry; a pass that finds more posted meanwhile goes
//!   round again. Without it, every pass that used a chain interrupts (unless the driver
//!   set `VRING_AVAIL_F_NO_INTERRUPT`) and every post notifies.
//!
//! Offered features: MAC, CSUM/GUEST_CSUM, GUEST_TSO4/6, GUEST_UFO, HOST_TSO4/6, HOST_UFO
//! (the HOST_ ones need nothing of the tap: it takes GSO frames from the header; the GUEST_
//! ones become the tap's `TUNSETOFFLOAD`, applied on the device thread before the next read
//! once the driver has acknowledged them). No MRG_RXBUF: Linux then posts 64 KiB receive
//! chains when it accepts TSO ("big packets"), which hold any frame the tap gives.
//!
//! Malformed chains (out of guest memory, loops, too many bytes) are refused by
//! [`super::queue::pop_chain`] and break the device (`DEVICE_NEEDS_RESET`) without touching
//! memory, as for the other devices.

pub mod tap;

use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use event_manager::{EventOps, EventSet, Events};
use virtio_queue::QueueT;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

use super::queue::{self, ValidChain};
use super::{DeviceFault, QueueCtx, VirtioDevice, device_type};
pub use tap::{Tap, TapError, VNET_HDR_LEN};

/// `VIRTIO_NET_F_CSUM`: the device takes frames with a partial checksum.
pub const F_CSUM: u32 = 0;
/// `VIRTIO_NET_F_GUEST_CSUM`: the driver takes frames with a partial checksum.
pub const F_GUEST_CSUM: u32 = 1;
/// `VIRTIO_NET_F_MAC`: the configuration space holds the MAC address.
pub const F_MAC: u32 = 5;
/// `VIRTIO_NET_F_GUEST_TSO4`.
pub const F_GUEST_TSO4: u32 = 7;
/// `VIRTIO_NET_F_GUEST_TSO6`.
pub const F_GUEST_TSO6: u32 = 8;
/// `VIRTIO_NET_F_GUEST_UFO`.
pub const F_GUEST_UFO: u32 = 10;
/// `VIRTIO_NET_F_HOST_TSO4`.
pub const F_HOST_TSO4: u32 = 11;
/// `VIRTIO_NET_F_HOST_TSO6`.
pub const F_HOST_TSO6: u32 = 12;
/// `VIRTIO_NET_F_HOST_UFO`.
pub const F_HOST_UFO: u32 = 14;
/// `VIRTIO_RING_F_EVENT_IDX`: each side says up to where it wants to be notified
/// (`used_event` in the available ring, `avail_event` in the used ring).
pub const F_EVENT_IDX: u32 = 29;
/// Not a virtio feature: isol's own switch (bit 63 of a [`Net::without`] mask, which no
/// virtio feature uses): `INT_VRING` kept set in the interrupt status while the device is
/// live, and the driver's `INTERRUPT_ACK` batched by KVM instead of an exit
/// ([`VirtioDevice::batch_interrupt_ack`]).
pub const STICKY_IRQ: u32 = 63;
/// Passes over a queue in one call when `EVENT_IDX` finds more work after the device
/// published how far it got (a driver refilling as fast as the device drains): bounds the
/// call, as the chain budget bounds each pass.
const EVENT_IDX_ROUNDS: usize = 16;

/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
/// The receive queue.
pub const RX: usize = 0;
/// The transmit queue.
pub const TX: usize = 1;
/// The longest frame after the header: a 64 KiB GSO frame with its Ethernet and VLAN headers
/// (what Firecracker allows, 65562 bytes).
pub const MAX_FRAME: usize = 65562;

/// The features [`Net::without`] may leave out, by the names `ISOL_NET_WITHOUT` takes.
pub const MASKABLE: [(&str, u32); 2] = [("event_idx", F_EVENT_IDX), ("sticky_irq", STICKY_IRQ)];

/// The feature bits named in `names` (comma-separated, from [`MASKABLE`]).
pub fn feature_mask(names: &str) -> Result<u64, String> {
    let mut mask = 0;
    for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let Some((_, bit)) = MASKABLE.iter().find(|(n, _)| *n == name) else {
            let known: Vec<&str> = MASKABLE.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown virtio-net feature {name:?}; use a comma-separated list of {}",
                known.join(", ")
            ));
        };
        mask |= 1u64 << bit;
    }
    Ok(mask)
}

/// Traffic counters (shared with whoever attached the device, for tests and the report).
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames handed to the guest.
    pub rx_frames: AtomicU64,
    /// Their bytes (headers excluded).
    pub rx_bytes: AtomicU64,
    /// Frames written to the tap.
    pub tx_frames: AtomicU64,
    /// Their bytes (headers excluded).
    pub tx_bytes: AtomicU64,
    /// Frames the tap refused (dropped).
    pub tx_dropped: AtomicU64,
    /// Chains returned unused: too short for the header, too long, or of the wrong direction.
    pub bad_chains: AtomicU64,
    /// Frames from the tap that were lost: longer than the guest's buffer (the tap would
    /// have cut them), or refused by the tap itself (a GSO type the header
    /// cannot carry).
    pub rx_dropped: AtomicU64,
}

impl NetStats {
    fn bump(c: &AtomicU64, by: u64) {
        c.fetch_add(by, Ordering::Relaxed);
    }
}

/// A virtio-net device on a tap.
#[derive(Debug)]
pub struct Net {
    tap: Tap,
    mac: [u8; 6],
    /// Whether the tap fd is in the device thread's epoll set.
    rx_watched: bool,
    /// The tap's reads fail for good (its interface was deleted): never watched again.
    tap_gone: bool,
    /// Offloads the driver accepted, to apply on the device thread before the next read.
    pending_offload: Option<u32>,
    /// Feature bits not offered (for A/B measurements: `Net::without`).
    masked: u64,
    /// The driver accepted `EVENT_IDX`.
    event_idx: bool,
    /// The last transmit call stopped at its bound with frames queued
    /// ([`VirtioDevice::take_unfinished`]).
    tx_unfinished: bool,
    stats: Arc<NetStats>,
}

impl Net {
    /// The device on `tap`, announcing `mac`.
    pub fn new(tap: Tap, mac: [u8; 6]) -> Self {
        Self {
            tap,
            mac,
            rx_watched: false,
            tap_gone: false,
            pending_offload: None,
            masked: 0,
            event_idx: false,
            tx_unfinished: false,
            stats: Arc::default(),
        }
    }

    /// Offers none of the feature bits in `mask` (for measurements of what a feature
    /// brings: the same build with it and without).
    pub fn without(mut self, mask: u64) -> Self {
        self.masked = mask;
        self
    }

    /// Counts traffic into `stats` instead of a private counter.
    pub fn with_stats(mut self, stats: Arc<NetStats>) -> Self {
        self.stats = stats;
        self
    }

    /// The traffic counters.
    pub fn stats(&self) -> &Arc<NetStats> {
        &self.stats
    }

    /// Whether `INT_VRING` stays set while live ([`STICKY_IRQ`], on unless masked).
    fn sticky_irq(&self) -> bool {
        self.masked & (1 << STICKY_IRQ) == 0
    }

    /// The tap's offload flags for the driver's features.
    pub fn offload_for(acked: u64) -> u32 {
        let has = |bit: u32| acked & (1u64 << bit) != 0;
        let mut f = 0;
        if has(F_GUEST_CSUM) {
            f |= tap::TUN_F_CSUM;
            if has(F_GUEST_TSO4) {
                f |= tap::TUN_F_TSO4;
            }
            if has(F_GUEST_TSO6) {
                f |= tap::TUN_F_TSO6;
            }
            if has(F_GUEST_UFO) {
                f |= tap::TUN_F_UFO;
            }
        }
        f
    }

    fn apply_offload(&mut self) {
        if let Some(f) = self.pending_offload.take()
            && self.tap.set_offload(f).is_err()
        {
            // A host without UFO offload (it came and went in Linux): the rest still helps.
            let _ = self.tap.set_offload(f & !tap::TUN_F_UFO);
        }
    }

    fn watch(&mut self, ops: &mut EventOps, on: bool) {
        let ev = Events::new_raw(self.tap.as_raw_fd(), EventSet::IN);
        if on && !self.rx_watched && !self.tap_gone {
            self.rx_watched = ops.add(ev).is_ok();
        } else if !on && self.rx_watched {
            let _ = ops.remove(ev);
            self.rx_watched = false;
        }
    }

    /// Moves frames from the tap into the guest's receive buffers until either runs out (or a
    /// queue's worth, so the loop ends). Returns whether the tap should stay watched: not when
    /// the guest ran out of buffers (its next rx notification brings some), nor when the tap
    /// is gone.
    ///
    /// A read that fails for one frame (the tap refused to encode it) loses that frame and
    /// goes on with the next; a frame longer than the chain (the tap cuts it to the room it
    /// is given, silently) is dropped and the chain given to the next frame. Any other error (`EBADFD`, `EIO`: the interface was deleted under us)
    /// ends receiving for good: the descriptor stays readable and level-triggered epoll would
    /// spin the device thread on it.
    fn rx(&mut self, ctx: &mut QueueCtx<'_>) -> Result<bool, DeviceFault> {
        self.apply_offload();
        let mut used = false;
        let mut starved = false;
        for _ in 0..EVENT_IDX_ROUNDS {
            starved = self.rx_pass(ctx, &mut used)?;
            // With EVENT_IDX the driver notifies only past `avail_event`: publish how far
            // the device got, and go round again if buffers came meanwhile (else the
            // driver, seeing nothing owed, would not notify for them).
            if !self.event_idx || !self.publish_avail_event(ctx, RX)? || !starved {
                break;
            }
            // Buffers came between the pass running out and `avail_event` going out: the
            // driver posted them seeing the old one, so it may never notify for them. They
            // are the device's to fill, in the next round or, once the rounds are spent, at
            // the tap's next readiness (it stays watched). (The transmit side's twin of this
            // stalled streams: see `tx`; here a driver must land in that narrow window
            // every round, which no test has made happen.)
            starved = false;
        }
        if used {
            ctx.notify(RX);
        }
        Ok(!starved && !self.tap_gone)
    }

    /// Whether the driver posted more since the device's last pop: `avail_event` published
    /// first (virtio 1.x, 2.7.10), so a buffer posted after this read is notified.
    fn publish_avail_event(&self, ctx: &mut QueueCtx<'_>, q: usize) -> Result<bool, DeviceFault> {
        ctx.queues[q]
            .enable_notification(ctx.mem)
            .map_err(|_| DeviceFault::Chain {
                queue: q,
                error: queue::ChainError::Used,
            })
    }

    /// One pass of [`Net::rx`]: up to a queue's worth of frames. Returns whether it stopped
    /// for want of buffers; sets `used` if a chain went back to the driver.
    fn rx_pass(&mut self, ctx: &mut QueueCtx<'_>, used: &mut bool) -> Result<bool, DeviceFault> {
        let fault = |error| DeviceFault::Chain { queue: RX, error };
        let budget = usize::from(ctx.queues[RX].size());
        let mut starved = false;
        for _ in 0..budget {
            let Some(c) = queue::pop_chain(&mut ctx.queues[RX], ctx.mem).map_err(fault)? else {
                starved = true;
                break;
            };
            if c.readable_len() > 0 || c.writable_len() < VNET_HDR_LEN as u64 {
                NetStats::bump(&self.stats.bad_chains, 1);
                queue::add_used(&mut ctx.queues[RX], ctx.mem, c.head, 0).map_err(fault)?;
                *used = true;
                continue;
            }
            match self.read_frame(ctx.mem, &c) {
                Ok(n) if n as u64 > c.writable_len() => {
                    NetStats::bump(&self.stats.rx_dropped, 1);
                    let q = &mut ctx.queues[RX];
                    q.set_next_avail(q.next_avail().wrapping_sub(1));
                }
                Ok(n) => {
                    // num_buffers: one chain per frame without MRG_RXBUF (the tap leaves it).
                    c.write_at(ctx.mem, 10, &1u16.to_le_bytes());
                    NetStats::bump(&self.stats.rx_frames, 1);
                    NetStats::bump(&self.stats.rx_bytes, (n - VNET_HDR_LEN) as u64);
                    queue::add_used(&mut ctx.queues[RX], ctx.mem, c.head, n as u32)
                        .map_err(fault)?;
                    *used = true;
                }
                Err(e) if e.raw_os_error().is_none() => {
                    // The chain cannot be mapped: returned unused, the frame stays queued.
                    NetStats::bump(&self.stats.bad_chains, 1);
                    queue::add_used(&mut ctx.queues[RX], ctx.mem, c.head, 0).map_err(fault)?;
                    *used = true;
                }
                Err(e) => {
                    // The chain stays the guest's.
                    let q = &mut ctx.queues[RX];
                    q.set_next_avail(q.next_avail().wrapping_sub(1));
                    match e.raw_os_error() {
                        // Nothing (more) to read.
                        Some(libc::EAGAIN) => break,
                        // This frame only: the tap has dropped it.
                        Some(libc::EINVAL) | Some(libc::EFAULT) => {
                            NetStats::bump(&self.stats.rx_dropped, 1);
                        }
                        _ => {
                            self.tap_gone = true;
                            break;
                        }
                    }
                }
            }
        }
        Ok(starved)
    }

    fn read_frame(&self, mem: &GuestMemoryMmap, c: &ValidChain) -> std::io::Result<usize> {
        let mut slices = Vec::with_capacity(c.descs.len());
        for d in c.writable() {
            let s = mem
                .get_slice(d.addr, d.len as usize)
                // A buffer across two memory regions: the chain's fault, not the tap's.
                .map_err(|e| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
                })?;
            slices.push(s);
        }
        let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard_mut()).collect();
        let mut iovs: Vec<libc::iovec> = guards
            .iter()
            .zip(&slices)
            .map(|(g, s)| libc::iovec {
                iov_base: g.as_ptr().cast(),
                iov_len: s.len(),
            })
            .collect();
        // One byte past the chain: the tap cuts a frame to the room it is given and returns
        // only what it copied, so a frame that fills the chain exactly and one that was cut
        // would look the same; with this byte, a cut frame reads one byte more than the chain.
        let mut past = [0u8; 1];
        iovs.push(libc::iovec {
            iov_base: past.as_mut_ptr().cast(),
            iov_len: past.len(),
        });
        // SAFETY: each iovec but the last is a writable descriptor's buffer, proved inside
        // guest memory when the chain was popped, the guards keeping the mappings alive during
        // the call; the last is `past`, alive on this stack for the call.
        let n = unsafe { self.tap.readv(&iovs) }?;
        if n < VNET_HDR_LEN {
            // Not from a tap with a vnet header: one bad frame.
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        Ok(n)
    }

    /// Writes every frame the guest queued to the tap.
    fn tx(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceFault> {
        let mut used = false;
        let mut more = false;
        for _ in 0..EVENT_IDX_ROUNDS {
            self.tx_pass(ctx, &mut used)?;
            // As for rx: the driver notifies again only past what is published here.
            more = self.event_idx && self.publish_avail_event(ctx, TX)?;
            if !more {
                break;
            }
        }
        // Rounds spent with frames still queued: the driver queued them seeing an
        // `avail_event` it had passed, and will not notify for them (a guest whose
        // transmit ring is full then waits for them forever).
        self.tx_unfinished = more;
        if used {
            ctx.notify(TX);
        }
        Ok(())
    }

    /// One pass of [`Net::tx`]: up to a queue's worth of frames.
    fn tx_pass(&mut self, ctx: &mut QueueCtx<'_>, used: &mut bool) -> Result<(), DeviceFault> {
        let fault = |error| DeviceFault::Chain { queue: TX, error };
        let budget = usize::from(ctx.queues[TX].size());
        for _ in 0..budget {
            let Some(c) = queue::pop_chain(&mut ctx.queues[TX], ctx.mem).map_err(fault)? else {
                break;
            };
            let len = c.readable_len();
            if c.writable_len() > 0
                || len < VNET_HDR_LEN as u64
                || len > (VNET_HDR_LEN + MAX_FRAME) as u64
            {
                NetStats::bump(&self.stats.bad_chains, 1);
            } else {
                match self.write_frame(ctx.mem, &c) {
                    Ok(_) => {
                        NetStats::bump(&self.stats.tx_frames, 1);
                        NetStats::bump(&self.stats.tx_bytes, len - VNET_HDR_LEN as u64);
                    }
                    Err(_) => NetStats::bump(&self.stats.tx_dropped, 1),
                }
            }
            queue::add_used(&mut ctx.queues[TX], ctx.mem, c.head, 0).map_err(fault)?;
            *used = true;
        }
        Ok(())
    }

    fn write_frame(&self, mem: &GuestMemoryMmap, c: &ValidChain) -> std::io::Result<usize> {
        let mut slices = Vec::with_capacity(c.descs.len());
        for d in c.readable() {
            let s = mem
                .get_slice(d.addr, d.len as usize)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            slices.push(s);
        }
        let guards: Vec<_> = slices.iter().map(|s| s.ptr_guard()).collect();
        let iovs: Vec<libc::iovec> = guards
            .iter()
            .zip(&slices)
            .map(|(g, s)| libc::iovec {
                iov_base: g.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            })
            .collect();
        // SAFETY: each iovec is a readable descriptor's buffer inside guest memory (checked
        // when popped); the guards keep the mappings alive; the tap only reads them.
        unsafe { self.tap.writev(&iovs) }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_type::NET
    }

    fn features(&self) -> u64 {
        [
            F_CSUM,
            F_GUEST_CSUM,
            F_MAC,
            F_GUEST_TSO4,
            F_GUEST_TSO6,
            F_GUEST_UFO,
            F_HOST_TSO4,
            F_HOST_TSO6,
            F_HOST_UFO,
            F_EVENT_IDX,
        ]
        .iter()
        .fold(0u64, |f, bit| f | (1 << bit))
            & !self.masked
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config: mac[6] (status and the rest are not offered).
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| self.mac.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn activate(&mut self, ctx: &mut QueueCtx<'_>, acked: u64) -> Result<(), DeviceFault> {
        for q in [RX, TX] {
            if !ctx.queues[q].ready() {
                return Err(DeviceFault::QueueNotReady(q));
            }
        }
        // This runs on the vCPU thread that wrote DRIVER_OK, whose seccomp list has no tap
        // I/O: the offloads wait for the device thread's next read, and the queues for the
        // driver's first notifications (Linux fills and kicks them once the device is live).
        self.pending_offload = Some(Self::offload_for(acked));
        self.event_idx = acked & (1 << F_EVENT_IDX) != 0;
        for q in ctx.queues.iter_mut() {
            q.set_event_idx(self.event_idx);
        }
        if self.sticky_irq() {
            // Each interrupt makes the driver look at both queues, which costs it nothing
            // when one has no news; its acknowledgement then needs no exit.
            ctx.irq.set_sticky(super::INT_VRING);
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
            RX => {
                let watch = self.rx(ctx)?;
                if let Some(ops) = ops {
                    // Buffers left: watch the tap (level-triggered: what waits is seen);
                    // none: the driver's next notification comes with some.
                    self.watch(ops, watch);
                }
                Ok(())
            }
            TX => self.tx(ctx),
            _ => Ok(()),
        }
    }

    fn init_host_events(&mut self, ops: &mut EventOps) {
        self.watch(ops, true);
    }

    fn batch_interrupt_ack(&self) -> bool {
        self.sticky_irq()
    }

    fn take_unfinished(&mut self, index: usize) -> bool {
        index == TX && std::mem::take(&mut self.tx_unfinished)
    }

    fn owns_fd(&self, fd: RawFd) -> bool {
        fd == self.tap.as_raw_fd()
    }

    fn process_host_event(
        &mut self,
        _events: Events,
        ctx: Option<&mut QueueCtx<'_>>,
        ops: &mut EventOps,
    ) -> Result<(), DeviceFault> {
        let Some(ctx) = ctx else {
            // Not live: stop watching until the driver posts buffers.
            self.watch(ops, false);
            return Ok(());
        };
        if !self.rx(ctx)? {
            // No buffer left: the guest's next rx notify watches the tap again (or the tap
            // is gone).
            self.watch(ops, false);
        }
        Ok(())
    }

    // Frames are handled as they come: nothing of the guest's waits in the device.
    fn reset(&mut self, _ctx: Option<&mut QueueCtx<'_>>) {
        self.pending_offload = None;
        self.event_idx = false;
        self.tx_unfinished = false;
    }
}

#[cfg(test)]
mod tests;
