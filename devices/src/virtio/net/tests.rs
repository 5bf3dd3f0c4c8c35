//! virtio-net against a real tap (root and /dev/net/tun: the CI host, the lab), a driver
//! written here that follows the split-ring layout and one that does not.
//!
//! The host end is a packet socket bound to the tap: what the device writes to the tap, the
//! host receives; what the host sends on the tap, the device reads. The taps are named
//! `vnett…`, not `isol…`: the integration tests' leftover checks look for `isol` in link names,
//! and may run on the same host at the same time.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use event_manager::{EventOps, Events};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::*;
use crate::virtio::IrqTrigger;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const RXQ: u64 = 0x0;
const TXQ: u64 = 0x1_0000;
const BUF: u64 = 0x10_0000;

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
}

fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
}

/// A ready queue of 16 at `base` whose descriptor table holds `descs`, with `heads` available.
fn queue(m: &GuestMemoryMmap, base: u64, descs: &[RawDescriptor], heads: &[u16]) -> Queue {
    let vq = MockSplitQueue::create(m, GuestAddress(base), 16);
    for (i, d) in descs.iter().enumerate() {
        vq.desc_table().store(i as u16, *d).unwrap();
    }
    for (i, h) in heads.iter().enumerate() {
        vq.avail().ring().ref_at(i).unwrap().store(h.to_le());
    }
    vq.avail().idx().store((heads.len() as u16).to_le());
    vq.create_queue::<Queue>().unwrap()
}

/// Used element `i` of `q`: (id, len).
fn used(m: &GuestMemoryMmap, q: &Queue, i: u64) -> (u32, u32) {
    let at = q.used_ring() + 4 + 8 * i;
    (
        m.read_obj(GuestAddress(at)).unwrap(),
        m.read_obj(GuestAddress(at + 4)).unwrap(),
    )
}

fn root_with_tun() -> bool {
    // SAFETY: geteuid touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !std::path::Path::new("/dev/net/tun").exists() {
        eprintln!("skipped: needs root and /dev/net/tun");
        return false;
    }
    true
}

/// An up tap of its own and a packet socket on it.
struct Host {
    name: String,
    sock: OwnedFd,
}

fn tap() -> (Tap, Host) {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "vnett{}x{}",
        std::process::id() % 10_000,
        N.fetch_add(1, Ordering::Relaxed)
    );
    let tap = Tap::create(&name).unwrap();
    // No IPv6 chatter (router solicitations, MLD) on the host side: the tests count frames.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
    let ok = std::process::Command::new("ip")
        .args(["link", "set", "dev", &name, "up"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip link set {name} up");
    let c = std::ffi::CString::new(name.clone()).unwrap();
    // SAFETY: a NUL-terminated name alive for the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(index, 0);
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket creation.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            i32::from(proto),
        )
    };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; zero is a valid start.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = index as i32;
    // SAFETY: `sa` is a sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
    (tap, Host { name, sock })
}

impl Host {
    /// The next frame the host received on the tap that is ours (skips IPv6 chatter).
    fn recv(&self, ether_type: u16) -> Option<Vec<u8>> {
        for _ in 0..200 {
            let mut b = vec![0u8; 70_000];
            // SAFETY: `b` is writable for its length.
            let n = unsafe { libc::recv(self.sock.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) };
            if n < 0 {
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            }
            b.truncate(n as usize);
            if b.len() >= 14 && u16::from_be_bytes([b[12], b[13]]) == ether_type {
                return Some(b);
            }
        }
        None
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: `frame` is readable for its length.
        let n = unsafe { libc::send(self.sock.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // The tap goes with its descriptor; this is for a test that panicked holding it.
        let _ = std::process::Command::new("ip")
            .args(["link", "delete", "dev", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A frame of a private EtherType (0x88b5, "local experimental") with `payload`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `n` one-descriptor transmit chains at `BUF`, each a zeroed header and `f`.
fn tx_chains(m: &GuestMemoryMmap, f: &[u8], n: u64) -> Vec<RawDescriptor> {
    (0..n)
        .map(|i| {
            let at = BUF + i * 0x1000;
            m.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(at))
                .unwrap();
            m.write_slice(f, GuestAddress(at + VNET_HDR_LEN as u64))
                .unwrap();
            raw(at, (VNET_HDR_LEN + f.len()) as u32, 0, 0)
        })
        .collect()
}

fn serve(
    net: &mut Net,
    m: &GuestMemoryMmap,
    qs: &mut [Queue; 2],
    q: usize,
) -> Result<(), DeviceFault> {
    let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let mut ctx = QueueCtx {
        mem: m,
        queues: qs,
        irq: &irq,
    };
    net.process_queue(q, &mut ctx, None)
}

#[test]
fn features_and_config_space() {
    if !root_with_tun() {
        return;
    }
    let (t, _h) = tap();
    let net = Net::new(t, [2, 0x69, 0x73, 1, 2, 3]);
    let f = net.features();
    for bit in [F_MAC, F_CSUM, F_GUEST_CSUM, F_HOST_TSO4, F_GUEST_TSO4] {
        assert_ne!(f & (1 << bit), 0, "bit {bit}");
    }
    assert_eq!(net.queue_max_sizes(), [256, 256]);
    let mut mac = [0u8; 8];
    net.read_config(0, &mut mac);
    assert_eq!(mac, [2, 0x69, 0x73, 1, 2, 3, 0, 0]);
    let mut tail = [9u8; 2];
    net.read_config(u64::MAX, &mut tail);
    assert_eq!(tail, [0, 0]);
    // Offloads only with the checksum they rest on.
    assert_eq!(Net::offload_for(1 << F_GUEST_TSO4), 0);
    assert_eq!(
        Net::offload_for((1 << F_GUEST_CSUM) | (1 << F_GUEST_TSO4)),
        tap::TUN_F_CSUM | tap::TUN_F_TSO4
    );
}

#[test]
fn tx_writes_the_frame_to_the_tap_and_rx_brings_one_back() {
    if !root_with_tun() {
        return;
    }
    let (t, host) = tap();
    let mut net = Net::new(t, [2, 0, 0, 0, 0, 9]);
    let m = mem();
    // tx: header (zeroed: no offload) and the frame split over two descriptors.
    let payload: Vec<u8> = (0..1000u32).map(|i| (i % 253) as u8).collect();
    let f = frame(&payload);
    m.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(BUF))
        .unwrap();
    m.write_slice(&f[..20], GuestAddress(BUF + 0x1000)).unwrap();
    m.write_slice(&f[20..], GuestAddress(BUF + 0x2000)).unwrap();
    let txd = [
        raw(BUF, VNET_HDR_LEN as u32, F_NEXT, 1),
        raw(BUF + 0x1000, 20, F_NEXT, 2),
        raw(BUF + 0x2000, (f.len() - 20) as u32, 0, 0),
    ];
    let mut qs = [queue(&m, RXQ, &[], &[]), queue(&m, TXQ, &txd, &[0])];
    serve(&mut net, &m, &mut qs, TX).unwrap();
    assert_eq!(used(&m, &qs[TX], 0), (0, 0));
    assert_eq!(
        host.recv(0x88b5).as_deref(),
        Some(&f[..]),
        "the host got the frame"
    );
    assert_eq!(net.stats().tx_frames.load(Ordering::Relaxed), 1);

    // rx: the host sends; the guest's two-descriptor chain receives header + frame.
    let back = frame(b"from the host, through the tap");
    host.send(&back);
    let rxd = [
        raw(BUF + 0x10_000, 8, F_NEXT | F_WRITE, 1),
        raw(BUF + 0x20_000, 2000, F_WRITE, 0),
    ];
    m.write_slice(&[0xee; 12], GuestAddress(BUF + 0x20_000))
        .unwrap();
    qs[RX] = queue(&m, RXQ, &rxd, &[0]);
    let mut got = None;
    for _ in 0..100 {
        serve(&mut net, &m, &mut qs, RX).unwrap();
        if qs[RX].next_used() == 1 {
            got = Some(used(&m, &qs[RX], 0));
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let (id, len) = got.expect("the frame reached the guest");
    assert_eq!((id, len as usize), (0, VNET_HDR_LEN + back.len()));
    let mut buf = vec![0u8; VNET_HDR_LEN + back.len()];
    m.read_slice(&mut buf[..8], GuestAddress(BUF + 0x10_000))
        .unwrap();
    m.read_slice(&mut buf[8..], GuestAddress(BUF + 0x20_000))
        .unwrap();
    assert_eq!(&buf[10..12], &[1, 0], "num_buffers is 1");
    assert_eq!(&buf[VNET_HDR_LEN..], &back[..]);
}

#[test]
fn rx_with_nothing_to_read_gives_the_chain_back() {
    if !root_with_tun() {
        return;
    }
    let (t, _host) = tap();
    let mut net = Net::new(t, [2, 0, 0, 0, 0, 9]);
    let m = mem();
    let mut qs = [
        queue(&m, RXQ, &[raw(BUF, 2000, F_WRITE, 0)], &[0]),
        queue(&m, TXQ, &[], &[]),
    ];
    serve(&mut net, &m, &mut qs, RX).unwrap();
    assert_eq!(qs[RX].next_used(), 0);
    assert_eq!(qs[RX].next_avail(), 0, "the chain is available again");
}

/// A hostile driver's chains: each is refused (returned unused, or the device breaks) and
/// nothing reaches the tap or guest memory outside the chain; the VMM goes on.
#[test]
fn malformed_tx_and_rx_chains_are_refused_without_a_crash() {
    if !root_with_tun() {
        return;
    }
    let (t, host) = tap();
    let mut net = Net::new(t, [2, 0, 0, 0, 0, 9]);
    let m = mem();
    let f = frame(b"x");
    m.write_slice(&f, GuestAddress(BUF + 0x1000)).unwrap();
    // tx: shorter than the header; a writable descriptor; longer than a 64 KiB frame.
    let txd = [
        raw(BUF, 11, 0, 0),
        raw(BUF, 12, F_NEXT, 2),
        raw(BUF + 0x1000, 100, F_WRITE, 0),
        raw(BUF, (VNET_HDR_LEN + MAX_FRAME + 1) as u32, 0, 0),
    ];
    let mut qs = [queue(&m, RXQ, &[], &[]), queue(&m, TXQ, &txd, &[0, 1, 3])];
    serve(&mut net, &m, &mut qs, TX).unwrap();
    assert_eq!(qs[TX].next_used(), 3);
    for i in 0..3 {
        assert_eq!(used(&m, &qs[TX], i).1, 0);
    }
    assert_eq!(net.stats().bad_chains.load(Ordering::Relaxed), 3);
    assert_eq!(net.stats().tx_frames.load(Ordering::Relaxed), 0);
    assert!(host.recv(0x88b5).is_none(), "nothing reached the host");

    // rx: less room than the header; a readable descriptor in a receive chain.
    host.send(&frame(b"waiting"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let rxd = [raw(BUF, 4, F_WRITE, 0), raw(BUF, 2000, 0, 0)];
    qs[RX] = queue(&m, RXQ, &rxd, &[0, 1]);
    serve(&mut net, &m, &mut qs, RX).unwrap();
    assert_eq!(qs[RX].next_used(), 2);
    assert_eq!(used(&m, &qs[RX], 0).1, 0);
    assert_eq!(used(&m, &qs[RX], 1).1, 0);
    assert_eq!(net.stats().rx_frames.load(Ordering::Relaxed), 0);

    // Out of guest memory, a loop, a huge length: the device breaks, memory untouched.
    let cases: [&[RawDescriptor]; 3] = [
        &[raw(0xfff_f000, 0x2000, 0, 0)],
        &[raw(BUF, 12, F_NEXT, 1), raw(BUF, 12, F_NEXT, 0)],
        &[raw(BUF, u32::MAX, 0, 0)],
    ];
    for (i, descs) in cases.iter().enumerate() {
        for q in [RX, TX] {
            let mut d = descs.to_vec();
            if q == RX {
                for x in &mut d {
                    let s = SplitDescriptor::from(*x);
                    *x = raw(s.addr().0, s.len(), s.flags() | F_WRITE, s.next());
                }
            }
            let mut qs = [queue(&m, RXQ, &[], &[]), queue(&m, TXQ, &[], &[])];
            qs[q] = queue(&m, if q == RX { RXQ } else { TXQ }, &d, &[0]);
            let r = serve(&mut net, &m, &mut qs, q);
            assert!(
                matches!(r, Err(DeviceFault::Chain { queue, .. }) if queue == q),
                "case {i} on queue {q}: {r:?}"
            );
        }
    }
    // An available index far ahead of the device.
    let vq = MockSplitQueue::create(&m, GuestAddress(TXQ), 16);
    vq.avail().idx().store(1000u16.to_le());
    let mut qs = [
        queue(&m, RXQ, &[], &[]),
        vq.create_queue::<Queue>().unwrap(),
    ];
    assert!(serve(&mut net, &m, &mut qs, TX).is_err());
}

/// The tap cuts a frame longer than the guest's chain to the room it is given and says
/// nothing: before, the cut frame went to the guest as if whole. Now the frame is dropped
/// and counted, and the chain takes the next one.
#[test]
fn a_frame_longer_than_the_chain_is_dropped_and_the_chain_takes_the_next() {
    if !root_with_tun() {
        return;
    }
    let (t, host) = tap();
    let mut net = Net::new(t, [2, 0, 0, 0, 0, 9]);
    let m = mem();
    let big = frame(&[7u8; 1000]);
    let small = frame(b"fits");
    host.send(&big);
    host.send(&small);
    let room = (VNET_HDR_LEN + 200) as u32;
    let mut qs = [
        queue(&m, RXQ, &[raw(BUF, room, F_WRITE, 0)], &[0]),
        queue(&m, TXQ, &[], &[]),
    ];
    for _ in 0..100 {
        serve(&mut net, &m, &mut qs, RX).unwrap();
        if qs[RX].next_used() == 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(qs[RX].next_used(), 1, "a frame reached the guest");
    let (id, len) = used(&m, &qs[RX], 0);
    assert_eq!(
        (id, len as usize),
        (0, VNET_HDR_LEN + small.len()),
        "the used length is the small frame's, within the chain"
    );
    let mut got = vec![0u8; small.len()];
    m.read_slice(&mut got, GuestAddress(BUF + VNET_HDR_LEN as u64))
        .unwrap();
    assert_eq!(got, small);
    assert_eq!(net.stats().rx_dropped.load(Ordering::Relaxed), 1);
}

/// The device's event loop, as the VMM runs it: the tap watched, each event served.
struct Loop {
    net: Net,
    mem: GuestMemoryMmap,
    queues: [Queue; 2],
    irq: IrqTrigger,
    wakes: usize,
}

impl event_manager::MutEventSubscriber for Loop {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        self.wakes += 1;
        let mut ctx = QueueCtx {
            mem: &self.mem,
            queues: &mut self.queues,
            irq: &self.irq,
        };
        self.net
            .process_host_event(events, Some(&mut ctx), ops)
            .unwrap();
    }

    fn init(&mut self, ops: &mut EventOps) {
        self.net.init_host_events(ops);
    }
}

/// An interface deleted under the VMM (`ip link delete` on the host) leaves its descriptor
/// readable for good (`EPOLLERR`, reads fail with `EBADFD`): the device stops watching it
/// instead of spinning its thread on a level-triggered epoll. Before, every wait woke at once.
#[test]
fn a_deleted_tap_stops_being_watched_instead_of_spinning_the_device_thread() {
    use event_manager::{EventManager, SubscriberOps};
    use std::sync::{Arc, Mutex};
    if !root_with_tun() {
        return;
    }
    let (t, host) = tap();
    let m = mem();
    let sub = Arc::new(Mutex::new(Loop {
        net: Net::new(t, [2, 0, 0, 0, 0, 9]),
        queues: [
            queue(&m, RXQ, &[raw(BUF, 2000, F_WRITE, 0)], &[0]),
            queue(&m, TXQ, &[], &[]),
        ],
        mem: m,
        irq: IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()),
        wakes: 0,
    }));
    let mut em = EventManager::<Arc<Mutex<Loop>>>::new().unwrap();
    em.add_subscriber(sub.clone());
    // Alive and idle: nothing wakes the loop.
    em.run_with_timeout(20).unwrap();
    assert_eq!(sub.lock().unwrap().wakes, 0);
    let ok = std::process::Command::new("ip")
        .args(["link", "delete", "dev", &host.name])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ip link delete {}", host.name);
    for _ in 0..20 {
        em.run_with_timeout(20).unwrap();
    }
    let s = sub.lock().unwrap();
    assert_eq!(s.wakes, 1, "one wake to find the tap gone, then none");
    assert_eq!(
        s.queues[RX].next_avail(),
        0,
        "the guest's chain is still its own"
    );
    assert_eq!(s.queues[RX].next_used(), 0);
}

#[test]
fn feature_masks_by_name() {
    assert_eq!(feature_mask(""), Ok(0));
    assert_eq!(feature_mask("event_idx"), Ok(1 << F_EVENT_IDX));
    let e = feature_mask("event_idx,bogus").unwrap_err();
    assert!(e.contains("unknown virtio-net feature \"bogus\""), "{e}");
    assert!(e.contains("event_idx"), "{e}");
}

/// With `EVENT_IDX`, each pass publishes `avail_event` (how far the device took buffers, so
/// the driver notifies only past it) and interrupts only once the used ring passes the
/// driver's `used_event`; masked, the feature is not offered.
#[test]
fn event_idx_publishes_avail_event_and_honours_used_event() {
    if !root_with_tun() {
        return;
    }
    let (t, host) = tap();
    let mut net = Net::new(t, [2, 0, 0, 0, 0, 9]);
    assert_ne!(net.features() & (1 << F_EVENT_IDX), 0, "offered");
    let m = mem();
    let f = frame(b"event index");
    let txd = tx_chains(&m, &f, 3);
    let mut qs = [queue(&m, RXQ, &[], &[]), queue(&m, TXQ, &txd, &[0, 1])];
    // The mock's used ring starts where the avail ring's used_event is (it leaves no room
    // for it): a used ring of its own.
    qs[TX].set_used_ring_address(Some((TXQ + 0x8000) as u32), Some(0));
    // used_event (after the 16 available entries): interrupt once used passes 2.
    let used_event = qs[TX].avail_ring() + 4 + 2 * 16;
    m.write_obj(2u16.to_le(), GuestAddress(used_event)).unwrap();
    let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let mut ctx = QueueCtx {
        mem: &m,
        queues: &mut qs,
        irq: &irq,
    };
    net.activate(&mut ctx, (1 << F_EVENT_IDX) | (1u64 << 32))
        .unwrap();
    net.process_queue(TX, &mut ctx, None).unwrap();
    let avail_event = |q: &Queue| -> u16 {
        m.read_obj::<u16>(GuestAddress(q.used_ring() + 4 + 8 * 16))
            .map(u16::from_le)
            .unwrap()
    };
    assert_eq!(avail_event(&ctx.queues[TX]), 2, "published: taken up to 2");
    assert!(
        irq.eventfd().read().is_err(),
        "no interrupt before used_event"
    );
    // A third frame: the used ring passes used_event, the driver is interrupted.
    let avail = ctx.queues[TX].avail_ring();
    m.write_obj(2u16.to_le(), GuestAddress(avail + 4 + 2 * 2))
        .unwrap();
    m.write_obj(3u16.to_le(), GuestAddress(avail + 2)).unwrap();
    net.process_queue(TX, &mut ctx, None).unwrap();
    assert_eq!(avail_event(&ctx.queues[TX]), 3);
    assert_eq!(
        irq.eventfd().read().unwrap(),
        1,
        "interrupted past used_event"
    );
    for _ in 0..3 {
        assert_eq!(host.recv(0x88b5).as_deref(), Some(&f[..]));
    }
    let (t2, _h2) = tap();
    let masked = Net::new(t2, [2, 0, 0, 0, 0, 9]).without(feature_mask("event_idx").unwrap());
    assert_eq!(masked.features() & (1 << F_EVENT_IDX), 0, "masked");
}

/// A driver that queues frames as fast as the device takes them (a guest streaming out)
/// keeps the transmit call going round its `EVENT_IDX` passes until their bound; the
/// frames queued then were queued seeing an `avail_event` the device had not yet moved,
/// so the driver notifies for none of them. The device must say the queue is unfinished
/// (the transport then notifies the device thread itself), or the guest, its ring full,
/// waits for them forever: a stream that stalls with nothing left to wake either side.
#[test]
fn a_transmit_cut_short_by_its_bound_is_finished_without_a_notification() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, fence};
    if !root_with_tun() {
        return;
    }
    const FRAMES: u16 = 20_000;
    let (t, _host) = tap();
    let mut net = Net::new(t, [2, 0, 0, 0, 0, 7]);
    let m = mem();
    let f = frame(b"streamed out");
    let txd = tx_chains(&m, &f, 16);
    let mut qs = [queue(&m, RXQ, &[], &[]), queue(&m, TXQ, &txd, &[])];
    qs[TX].set_used_ring_address(Some((TXQ + 0x8000) as u32), Some(0));
    let avail = qs[TX].avail_ring();
    let used_ring = qs[TX].used_ring();
    let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let mut ctx = QueueCtx {
        mem: &m,
        queues: &mut qs,
        irq: &irq,
    };
    net.activate(&mut ctx, (1 << F_EVENT_IDX) | (1u64 << 32))
        .unwrap();
    // The driver, on a thread of its own: Linux's split-ring rules (vring_need_event).
    let notified = Arc::new(AtomicU64::new(0));
    let driver = {
        let (m, notified) = (m.clone(), notified.clone());
        std::thread::spawn(move || {
            let used_idx = GuestAddress(used_ring + 2);
            let avail_event = GuestAddress(used_ring + 4 + 8 * 16);
            let mut posted: u16 = 0;
            while posted < FRAMES {
                fence(Ordering::SeqCst);
                let done = u16::from_le(m.read_obj::<u16>(used_idx).unwrap());
                if posted.wrapping_sub(done) >= 16 {
                    std::hint::spin_loop();
                    continue;
                }
                let slot = u64::from(posted % 16);
                m.write_obj((posted % 16).to_le(), GuestAddress(avail + 4 + 2 * slot))
                    .unwrap();
                fence(Ordering::SeqCst);
                let new = posted.wrapping_add(1);
                m.write_obj(new.to_le(), GuestAddress(avail + 2)).unwrap();
                fence(Ordering::SeqCst);
                let event = u16::from_le(m.read_obj::<u16>(avail_event).unwrap());
                if new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(posted) {
                    notified.fetch_add(1, Ordering::SeqCst);
                }
                posted = new;
            }
        })
    };
    // The device thread: served when notified, or when it said it was unfinished.
    let (mut seen, mut again, mut idle) = (0, false, 0u32);
    loop {
        let n = notified.load(Ordering::SeqCst);
        if n > seen || again {
            seen = n;
            net.process_queue(TX, &mut ctx, None).unwrap();
            again = net.take_unfinished(TX);
            idle = 0;
            continue;
        }
        let done = u16::from_le(m.read_obj::<u16>(GuestAddress(used_ring + 2)).unwrap());
        if done == FRAMES {
            break;
        }
        idle += 1;
        assert!(
            idle < 5_000,
            "transmit stalled: {done} of {FRAMES} frames used, the driver waiting for the \
             rest and the device for a notification"
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    driver.join().unwrap();
}
