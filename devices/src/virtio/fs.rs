//! virtio-fs as a vhost-user frontend (virtio 1.x, 5.11; the vhost-user protocol).
//!
//! The device is a tag and a connected unix socket to a vhost-user-fs backend (virtiofsd,
//! started by isol per share). The VMM keeps only the virtio-mmio register file and the
//! configuration space (the tag the guest mounts, the number of request queues); the
//! backend serves the queues itself, straight from guest memory:
//!
//! * at [`VhostUserFs::connect`] (before the guest runs): `SET_OWNER`, the backend's
//!   virtio and protocol features (`VHOST_USER_F_PROTOCOL_FEATURES` is required: it is what
//!   makes rings start disabled until `SET_VRING_ENABLE`, and what `REPLY_ACK` rides on);
//! * at `DRIVER_OK`: the features the driver accepted, the memory table (every guest RAM
//!   region as an fd and offset: guest memory must be file-backed, a memfd, and
//!   [`VhostUserFs`] refuses to start without), then per queue its size, the host addresses
//!   of its three rings, its first index, its **call** fd — the transport's interrupt
//!   eventfd, a KVM irqfd, so the backend interrupts the guest without the VMM — its
//!   **kick** fd — the queue's notification eventfd, a KVM ioeventfd on `QUEUE_NOTIFY`, so
//!   the guest's notifies reach the backend without the VMM — and `SET_VRING_ENABLE`;
//! * at reset: `GET_VRING_BASE` per started queue, which stops it in the backend.
//!
//! * mid-run: the socket's hang-up, watched on the device thread: the backend is gone (it
//!   exited, or was killed), and the guest's requests would wait for it forever; the
//!   device raises its [`BackendLost`] notice, which ends the VM with a one-line error
//!   naming the share ([`VhostUserFs::on_backend_lost`]).
//!
//! The transport's interrupt status word never sees the backend's interrupts, and Linux
//! reads it to know whether to look at the queues: the device keeps `INT_VRING` set in it
//! while live ([`IrqTrigger::set_sticky`]).
//!
//! [`IrqTrigger::set_sticky`]: super::IrqTrigger::set_sticky

use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use event_manager::{EventOps, EventSet, Events};
use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use super::{
    BackendLost, DeviceFault, INT_VRING, QueueCtx, VIRTIO_F_VERSION_1, VirtioDevice, device_type,
};

/// Longest tag the configuration space holds (virtio 1.x, 5.11.4; not NUL-terminated when
/// it is this long).
pub const TAG_MAX: usize = 36;
/// Request queues offered (besides the high-priority queue). Linux uses one anyway.
pub const REQUEST_QUEUES: usize = 1;
/// Size of each queue.
pub const QUEUE_SIZE: u16 = 1024;
/// Virtio features passed through from the backend when it offers them: indirect
/// descriptors, event index. (`VERSION_1` is the transport's; features of other
/// transports, such as notification data, are not.)
const PASSED_FEATURES: u64 = (1 << 28) | (1 << 29) | (1 << VIRTIO_F_VERSION_1);
/// The vhost-user protocol features isol uses: an acknowledgement of every request, so a
/// refused memory table or ring is seen at `DRIVER_OK`, not as a hung guest later.
const PROTOCOL_FEATURES: VhostUserProtocolFeatures = VhostUserProtocolFeatures::REPLY_ACK;

/// Errors connecting to a backend.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The tag does not fit the configuration space.
    #[error(
        "virtio-fs tag {0:?} must be 1 to {TAG_MAX} bytes without NUL; this is a bug in the caller"
    )]
    Tag(String),
    /// A vhost-user request failed.
    #[error("the vhost-user backend did not answer {what}: {source}; check that virtiofsd runs")]
    Backend {
        /// Which request.
        what: &'static str,
        /// Why.
        source: vhost::Error,
    },
    /// The backend lacks `VHOST_USER_F_PROTOCOL_FEATURES`.
    #[error(
        "the vhost-user backend does not offer protocol features; use virtiofsd 1.x (cargo install virtiofsd)"
    )]
    NoProtocolFeatures,
}

/// A virtio-fs device whose queues a vhost-user backend serves.
pub struct VhostUserFs {
    config: [u8; TAG_MAX + 4],
    frontend: Frontend,
    /// Virtio features the backend offers that the device passes on.
    features: u64,
    /// The queue notification eventfds (the backend's kick fds).
    kicks: Vec<EventFd>,
    /// Queues handed to the backend since the last activation.
    started: Vec<usize>,
    /// Raised, with the share's name, when the backend hangs up.
    lost: Option<(BackendLost, String)>,
}

impl std::fmt::Debug for VhostUserFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserFs")
            .field("tag", &self.tag())
            .field("features", &self.features)
            .field("started", &self.started)
            .finish()
    }
}

fn backend(what: &'static str) -> impl FnOnce(vhost::Error) -> FsError {
    move |source| FsError::Backend { what, source }
}

impl VhostUserFs {
    /// A device with `tag` on `socket`, a connection to a vhost-user-fs backend: takes
    /// ownership of the backend and negotiates the protocol features.
    pub fn connect(socket: UnixStream, tag: &str) -> Result<Self, FsError> {
        if tag.is_empty() || tag.len() > TAG_MAX || tag.contains('\0') {
            return Err(FsError::Tag(tag.to_string()));
        }
        let mut config = [0u8; TAG_MAX + 4];
        config[..tag.len()].copy_from_slice(tag.as_bytes());
        config[TAG_MAX..].copy_from_slice(&(REQUEST_QUEUES as u32).to_le_bytes());

        let mut frontend = Frontend::from_stream(socket, 1 + REQUEST_QUEUES as u64);
        frontend.set_owner().map_err(backend("SET_OWNER"))?;
        let offered = frontend.get_features().map_err(backend("GET_FEATURES"))?;
        let protocol = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        if offered & protocol == 0 {
            return Err(FsError::NoProtocolFeatures);
        }
        let theirs = frontend
            .get_protocol_features()
            .map_err(backend("GET_PROTOCOL_FEATURES"))?;
        let acked = theirs & PROTOCOL_FEATURES;
        frontend
            .set_protocol_features(acked)
            .map_err(backend("SET_PROTOCOL_FEATURES"))?;
        if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        Ok(Self {
            config,
            frontend,
            features: offered & PASSED_FEATURES,
            kicks: Vec::new(),
            started: Vec::new(),
            lost: None,
        })
    }

    /// When the backend hangs up (it exited or was killed while the VM runs), raise
    /// `notice` with a line naming `share` (what the user asked for, e.g. the guest path).
    pub fn on_backend_lost(mut self, notice: BackendLost, share: &str) -> Self {
        self.lost = Some((notice, share.to_string()));
        self
    }

    /// The tag the guest mounts.
    pub fn tag(&self) -> String {
        let end = self.config[..TAG_MAX]
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(TAG_MAX);
        String::from_utf8_lossy(&self.config[..end]).into_owned()
    }

    fn start(&mut self, ctx: &mut QueueCtx<'_>, acked: u64) -> Result<(), String> {
        let protocol = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
        self.frontend
            .set_features(acked | protocol)
            .map_err(|e| format!("SET_FEATURES: {e}"))?;
        let regions = ctx
            .mem
            .iter()
            .map(VhostUserMemoryRegionInfo::from_guest_region)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "guest memory is not shareable (not file-backed)".to_string())?;
        self.frontend
            .set_mem_table(&regions)
            .map_err(|e| format!("SET_MEM_TABLE: {e}"))?;
        for (i, q) in ctx.queues.iter().enumerate() {
            if !q.ready() {
                continue;
            }
            let host = |a: u64| {
                ctx.mem
                    .get_host_address(GuestAddress(a))
                    .map(|p| p as u64)
                    .map_err(|e| format!("queue {i}: ring at {a:#x}: {e}"))
            };
            let ring = VringConfigData {
                queue_max_size: q.max_size(),
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: host(q.desc_table())?,
                used_ring_addr: host(q.used_ring())?,
                avail_ring_addr: host(q.avail_ring())?,
                log_addr: None,
            };
            let kick = self
                .kicks
                .get(i)
                .ok_or_else(|| format!("queue {i} has no notification eventfd"))?;
            let step =
                |what: &str, r: vhost::Result<()>| r.map_err(|e| format!("queue {i}: {what}: {e}"));
            step("SET_VRING_NUM", self.frontend.set_vring_num(i, q.size()))?;
            step("SET_VRING_ADDR", self.frontend.set_vring_addr(i, &ring))?;
            step(
                "SET_VRING_BASE",
                self.frontend.set_vring_base(i, q.next_avail()),
            )?;
            step(
                "SET_VRING_CALL",
                self.frontend.set_vring_call(i, ctx.irq.eventfd()),
            )?;
            step("SET_VRING_KICK", self.frontend.set_vring_kick(i, kick))?;
            step("SET_VRING_ENABLE", self.frontend.set_vring_enable(i, true))?;
            self.started.push(i);
        }
        ctx.irq.set_sticky(INT_VRING);
        Ok(())
    }

    /// Stops every started queue in the backend (`GET_VRING_BASE`).
    fn stop(&mut self) {
        for i in std::mem::take(&mut self.started) {
            // A backend that is gone has stopped already.
            let _ = self.frontend.get_vring_base(i);
        }
    }
}

impl VirtioDevice for VhostUserFs {
    fn device_type(&self) -> u32 {
        device_type::FS
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE; 1 + REQUEST_QUEUES]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(src) = self.config.get(start..) {
            let n = src.len().min(data.len());
            data[..n].copy_from_slice(&src[..n]);
        }
    }

    fn activate(&mut self, ctx: &mut QueueCtx<'_>, acked_features: u64) -> Result<(), DeviceFault> {
        self.stop();
        self.start(ctx, acked_features)
            .map_err(DeviceFault::Backend)
    }

    fn process_queue(
        &mut self,
        _index: usize,
        _ctx: &mut QueueCtx<'_>,
        _ops: Option<&mut EventOps>,
    ) -> Result<(), DeviceFault> {
        // The backend serves the queues; a notify that reached the VMM was written to the
        // kick eventfd by the transport already.
        Ok(())
    }

    fn backend_serves_queues(&self) -> bool {
        true
    }

    // INT_VRING is sticky while live (`start`).
    fn batch_interrupt_ack(&self) -> bool {
        true
    }

    fn set_queue_evts(&mut self, evts: &[EventFd]) -> std::io::Result<()> {
        self.kicks = evts
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    fn reset(&mut self, _ctx: Option<&mut QueueCtx<'_>>) {
        self.stop();
    }

    fn init_host_events(&mut self, ops: &mut EventOps) {
        // Only the hang-up: the replies to requests are read where they are made. A
        // backend already gone is reported at once (epoll reports a pending hang-up).
        // Fails only on ENOMEM; a death would then go unseen, as before this watch.
        let _ = ops.add(Events::new_raw(
            self.frontend.as_raw_fd(),
            EventSet::READ_HANG_UP,
        ));
    }

    fn owns_fd(&self, fd: RawFd) -> bool {
        fd == self.frontend.as_raw_fd()
    }

    fn process_host_event(
        &mut self,
        events: Events,
        _ctx: Option<&mut QueueCtx<'_>>,
        ops: &mut EventOps,
    ) -> Result<(), DeviceFault> {
        let gone = EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR;
        if !events.event_set().intersects(gone) {
            return Ok(());
        }
        // Level-triggered: once is enough.
        let _ = ops.remove(events);
        let tag = self.tag();
        if let Some((notice, share)) = &self.lost {
            notice.raise(format!(
                "virtiofsd serving the shared directory {share} (virtio-fs {tag}) exited while the VM ran; the run was stopped. Check virtiofsd's message above and that the directory is still there, then run again"
            ));
        }
        // Nothing will serve the queues again.
        self.started.clear();
        Err(DeviceFault::Backend(format!(
            "the vhost-user backend of {tag} hung up"
        )))
    }

    // No `shutdown`: the VM is over, the socket closes with the device and the backend
    // exits; nothing is asked of it (the thread that ends the VM sends nothing).
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::BusDevice;
    use crate::virtio::mmio::{MmioTransport, reg};
    use crate::virtio::status;
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::mpsc;
    use vm_memory::{FileOffset, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    // vhost-user request codes (the protocol's numbers, as a backend sees them).
    const GET_FEATURES: u32 = 1;
    const SET_FEATURES: u32 = 2;
    const SET_OWNER: u32 = 3;
    const SET_MEM_TABLE: u32 = 5;
    const SET_VRING_NUM: u32 = 8;
    const SET_VRING_ADDR: u32 = 9;
    const SET_VRING_BASE: u32 = 10;
    const GET_VRING_BASE: u32 = 11;
    const SET_VRING_KICK: u32 = 12;
    const SET_VRING_CALL: u32 = 13;
    const GET_PROTOCOL_FEATURES: u32 = 15;
    const SET_PROTOCOL_FEATURES: u32 = 16;
    const SET_VRING_ENABLE: u32 = 18;
    const REPLY: u32 = 0x4;
    const NEED_REPLY: u32 = 0x8;

    /// One request as the backend received it: code, body, number of fds attached.
    #[derive(Debug)]
    struct Req {
        code: u32,
        body: Vec<u8>,
        fds: usize,
    }

    /// Receives one request, reports it on `tx`, then answers it (reported first, so the
    /// frontend, which waits for the answer, finds it reported when it goes on).
    fn recv(sock: &UnixStream, tx: &mpsc::Sender<Req>) -> Option<()> {
        let mut hdr = [0u8; 12];
        let mut fds = [0 as libc::c_int; 8];
        let mut iov = libc::iovec {
            iov_base: hdr.as_mut_ptr().cast(),
            iov_len: hdr.len(),
        };
        let mut cbuf = [0u64; 16];
        // SAFETY: a zeroed msghdr is a valid empty one; every pointer set below points at
        // a live local buffer of the given length.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: `msg` describes buffers that live across the call.
        let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
        if n != 12 {
            return None;
        }
        let mut nfds = 0;
        // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel just filled.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !c.is_null() {
            // SAFETY: `c` points at a control message header inside `cbuf`.
            let hdr = unsafe { &*c };
            let (level, ty, len) = (hdr.cmsg_level, hdr.cmsg_type, hdr.cmsg_len);
            if level == libc::SOL_SOCKET && ty == libc::SCM_RIGHTS {
                // SAFETY: CMSG_LEN(0) is a constant computation.
                let data = len - unsafe { libc::CMSG_LEN(0) } as usize;
                let k = data / std::mem::size_of::<libc::c_int>();
                // SAFETY: the message carries `k` fds right after its header.
                let src = unsafe { libc::CMSG_DATA(c) }.cast::<libc::c_int>();
                for j in 0..k {
                    // SAFETY: j < k: inside the message's data.
                    let p = unsafe { src.add(j) };
                    // SAFETY: `p` points at one of the message's fds (maybe unaligned).
                    fds[nfds] = unsafe { p.read_unaligned() };
                    nfds += 1;
                }
            }
            // SAFETY: as above.
            c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
        }
        for fd in &fds[..nfds] {
            // SAFETY: the fds just received are ours to close.
            drop(unsafe { OwnedFd::from_raw_fd(*fd) });
        }
        let code = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
        let flags = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
        let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
        let mut body = vec![0u8; size];
        (&*sock).read_exact(&mut body).ok()?;
        let vring_state = body.get(..4).map(<[u8]>::to_vec);
        tx.send(Req {
            code,
            body,
            fds: nfds,
        })
        .ok()?;
        let reply = |payload: &[u8]| {
            let mut out = Vec::new();
            out.extend_from_slice(&code.to_le_bytes());
            out.extend_from_slice(&(1 | REPLY).to_le_bytes());
            out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            out.extend_from_slice(payload);
            (&*sock).write_all(&out).unwrap();
        };
        match code {
            GET_FEATURES => {
                reply(&((1u64 << 32) | (1 << 30) | (1 << 29) | (1 << 28) | (1 << 38)).to_le_bytes())
            }
            GET_PROTOCOL_FEATURES => reply(&(0x8u64 | 0x1).to_le_bytes()),
            GET_VRING_BASE => {
                let mut st = vring_state.unwrap_or_default();
                st.extend_from_slice(&0u32.to_le_bytes());
                reply(&st)
            }
            _ if flags & NEED_REPLY != 0 => reply(&0u64.to_le_bytes()),
            _ => {}
        }
        Some(())
    }

    /// A stand-in backend on the other end of a socket pair: it answers the requests as
    /// virtiofsd would and reports each one.
    fn backend() -> (UnixStream, mpsc::Receiver<Req>) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || while recv(&theirs, &tx).is_some() {});
        (ours, rx)
    }

    fn shared_mem() -> GuestMemoryMmap {
        let len = 1 << 20;
        let f = tempfile::tempfile().unwrap();
        f.set_len(len as u64).unwrap();
        let region = MmapRegion::from_file(FileOffset::new(f, 0), len).unwrap();
        GuestMemoryMmap::from_regions(vec![GuestRegionMmap::new(region, GuestAddress(0)).unwrap()])
            .unwrap()
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(0, off, &v.to_le_bytes());
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(0, off, &mut b);
        u32::from_le_bytes(b)
    }

    /// The driver's side of setup, as Linux does it, up to DRIVER_OK.
    fn drive(t: &mut MmioTransport, features: u64) {
        use status::*;
        w(t, reg::STATUS, ACKNOWLEDGE);
        w(t, reg::STATUS, ACKNOWLEDGE | DRIVER);
        w(t, reg::DRIVER_FEATURES_SEL, 0);
        w(t, reg::DRIVER_FEATURES, features as u32);
        w(t, reg::DRIVER_FEATURES_SEL, 1);
        w(t, reg::DRIVER_FEATURES, (features >> 32) as u32);
        w(t, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        for q in 0..2u32 {
            let base = 0x1_0000 + u64::from(q) * 0x1_0000;
            w(t, reg::QUEUE_SEL, q);
            w(t, reg::QUEUE_NUM, 256);
            w(t, reg::QUEUE_DESC_LOW, base as u32);
            w(t, reg::QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
            w(t, reg::QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
            w(t, reg::QUEUE_READY, 1);
        }
        w(
            t,
            reg::STATUS,
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
        );
    }

    #[test]
    fn the_config_space_holds_the_tag_and_one_request_queue() {
        let (sock, rx) = backend();
        let fs = VhostUserFs::connect(sock, "isol-fs0").unwrap();
        // SET_PROTOCOL_FEATURES has no answer: wait for it.
        let codes: Vec<u32> = (0..4).map(|_| rx.recv().unwrap().code).collect();
        assert_eq!(
            codes,
            [
                SET_OWNER,
                GET_FEATURES,
                GET_PROTOCOL_FEATURES,
                SET_PROTOCOL_FEATURES
            ]
        );
        let mut t = MmioTransport::new(
            Box::new(fs),
            shared_mem(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        )
        .unwrap();
        assert_eq!(r(&mut t, reg::DEVICE_ID), 26);
        let mut cfg = [0u8; 40];
        for (i, chunk) in cfg.chunks_mut(4).enumerate() {
            t.read(0, reg::CONFIG + 4 * i as u64, chunk);
        }
        assert_eq!(&cfg[..9], b"isol-fs0\0");
        assert_eq!(u32::from_le_bytes(cfg[36..40].try_into().unwrap()), 1);
        // Indirect descriptors and event index pass; PROTOCOL_FEATURES (30) and
        // notification data (38) do not.
        w(&mut t, reg::DEVICE_FEATURES_SEL, 0);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), (1 << 28) | (1 << 29));
        w(&mut t, reg::DEVICE_FEATURES_SEL, 1);
        assert_eq!(r(&mut t, reg::DEVICE_FEATURES), 1);
        w(&mut t, reg::QUEUE_SEL, 1);
        assert_eq!(r(&mut t, reg::QUEUE_NUM_MAX), u32::from(QUEUE_SIZE));
    }

    #[test]
    fn bad_tags_are_refused() {
        for tag in ["", "a\0b", &"x".repeat(TAG_MAX + 1)] {
            let (sock, _rx) = backend();
            assert!(matches!(
                VhostUserFs::connect(sock, tag),
                Err(FsError::Tag(_))
            ));
        }
    }

    #[test]
    fn driver_ok_hands_memory_and_rings_to_the_backend_and_reset_stops_them() {
        let (sock, rx) = backend();
        let fs = VhostUserFs::connect(sock, "t").unwrap();
        for _ in 0..4 {
            rx.recv().unwrap();
        }
        let mut t = MmioTransport::new(
            Box::new(fs),
            shared_mem(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        )
        .unwrap();
        assert!(t.backend_serves_queues());
        drive(&mut t, (1 << 32) | (1 << 29));
        assert!(!t.is_broken());
        let reqs: Vec<Req> = rx.try_iter().collect();
        let codes: Vec<u32> = reqs.iter().map(|r| r.code).collect();
        let per_queue = [
            SET_VRING_NUM,
            SET_VRING_ADDR,
            SET_VRING_BASE,
            SET_VRING_CALL,
            SET_VRING_KICK,
            SET_VRING_ENABLE,
        ];
        let mut want = vec![SET_FEATURES, SET_MEM_TABLE];
        want.extend(per_queue);
        want.extend(per_queue);
        assert_eq!(codes, want);
        // The driver's features plus PROTOCOL_FEATURES.
        assert_eq!(
            u64::from_le_bytes(reqs[0].body[..8].try_into().unwrap()),
            (1 << 32) | (1 << 30) | (1 << 29)
        );
        // One region, its fd attached.
        assert_eq!(reqs[1].fds, 1);
        // Call and kick each carry their eventfd.
        assert_eq!(reqs[5].fds, 1);
        assert_eq!(reqs[6].fds, 1);
        // The backend's interrupts are seen by the driver's status read.
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS) & INT_VRING, INT_VRING);
        w(&mut t, reg::INTERRUPT_ACK, INT_VRING);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS) & INT_VRING, INT_VRING);

        w(&mut t, reg::STATUS, 0);
        let codes: Vec<u32> = rx.try_iter().map(|r| r.code).collect();
        assert_eq!(codes, [GET_VRING_BASE, GET_VRING_BASE]);
        assert_eq!(r(&mut t, reg::INTERRUPT_STATUS), 0);
    }

    #[test]
    fn a_backend_that_hangs_up_raises_the_notice_with_the_share() {
        use crate::virtio::subscriber::VirtioSubscriber;
        use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
        use std::sync::{Arc, Mutex};
        // A backend that answers the handshake, then dies.
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let dies = std::thread::spawn(move || {
            for _ in 0..4 {
                recv(&theirs, &tx).unwrap();
            }
        });
        let notice = BackendLost::new().unwrap();
        let fs = VhostUserFs::connect(ours, "isol-fs0")
            .unwrap()
            .on_backend_lost(notice.clone(), "/data");
        assert_eq!(rx.iter().count(), 4);
        let t = MmioTransport::new(
            Box::new(fs),
            shared_mem(),
            EventFd::new(EFD_NONBLOCK).unwrap(),
        )
        .unwrap();
        let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
        em.add_subscriber(Arc::new(Mutex::new(VirtioSubscriber::new(Arc::new(
            Mutex::new(t),
        )))));
        // Alive: nothing to report.
        assert_eq!(notice.reason(), None);
        dies.join().unwrap();
        for _ in 0..50 {
            if notice.reason().is_some() {
                break;
            }
            em.run_with_timeout(100).unwrap();
        }
        let why = notice.reason().expect("the hang-up was seen");
        assert!(
            why.contains("virtiofsd serving the shared directory /data (virtio-fs isol-fs0)"),
            "{why}"
        );
        assert!(!why.contains('\n'), "one line: {why}");
        assert_eq!(notice.eventfd().read().unwrap(), 1);
        // Seen once: the socket is no longer watched.
        assert_eq!(em.run_with_timeout(50).unwrap(), 0);
    }

    #[test]
    fn anonymous_guest_memory_breaks_the_device_at_driver_ok() {
        let (sock, _rx) = backend();
        let fs = VhostUserFs::connect(sock, "t").unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut t =
            MmioTransport::new(Box::new(fs), mem, EventFd::new(EFD_NONBLOCK).unwrap()).unwrap();
        drive(&mut t, 1 << 32);
        assert!(t.is_broken());
        assert_ne!(r(&mut t, reg::STATUS) & status::DEVICE_NEEDS_RESET, 0);
    }
}
