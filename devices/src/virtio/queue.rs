//! Descriptor chains, checked before use.
//!
//! virtio-queue's chain iterator stops quietly on a loop (after queue-size links), on a
//! `next` index past the table and on an unreadable descriptor. [`pop_chain`] turns
//! each of those into an error, and also rejects: an available index more than a queue
//! size ahead, a head index outside the table, a descriptor whose buffer is not wholly
//! inside guest memory, a readable descriptor after a writable one (virtio 1.x 2.7.4.2),
//! chains longer in total than [`MAX_CHAIN_BYTES`], and chains of more descriptors
//! than the queue holds (an indirect table, which no device here offers, could hold
//! 65535). A device only ever reads the
//! readable descriptors and writes the writable ones, through [`ValidChain`].

use std::num::Wrapping;
use std::sync::atomic::Ordering;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap};

/// Upper bound on the bytes one chain may describe (the spec allows up to 4 GiB; no
/// request of ours needs more than this).
pub const MAX_CHAIN_BYTES: u64 = 64 << 20;

/// What was wrong with a chain or ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The ring cannot be read (queue not ready or its rings outside memory).
    #[error("the available ring cannot be read")]
    Ring,
    /// The driver's available index is more than a queue size ahead of the device.
    #[error("available index {avail} is more than {size} ahead of {next}")]
    AvailIndex {
        /// Driver's index.
        avail: u16,
        /// Device's next index.
        next: u16,
        /// Queue size.
        size: u16,
    },
    /// The head index is outside the descriptor table.
    #[error("head index {0} is outside the descriptor table")]
    Head(u16),
    /// The chain does not end within the table (a loop, a `next` past the table, or
    /// more descriptors than the queue holds).
    #[error("the chain starting at {0} does not end (loop or overlong)")]
    Unterminated(u16),
    /// A buffer is not wholly inside guest memory.
    #[error("descriptor buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutOfRange {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// A device-readable descriptor follows a device-writable one.
    #[error("a readable descriptor follows a writable one")]
    Order,
    /// The chain describes more than [`MAX_CHAIN_BYTES`].
    #[error("the chain describes more than {MAX_CHAIN_BYTES} bytes")]
    TooLong,
    /// The used ring cannot be written.
    #[error("the used ring cannot be written")]
    Used,
}

/// One checked descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desc {
    /// Guest address of the buffer.
    pub addr: GuestAddress,
    /// Length.
    pub len: u32,
    /// Device-writable.
    pub writable: bool,
}

/// A chain whose every buffer lies inside guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidChain {
    /// Head index, for the used ring.
    pub head: u16,
    /// Descriptors in chain order: readable ones first, then writable ones.
    pub descs: Vec<Desc>,
}

impl ValidChain {
    /// The device-readable descriptors.
    pub fn readable(&self) -> impl Iterator<Item = &Desc> {
        self.descs.iter().filter(|d| !d.writable)
    }

    /// The device-writable descriptors.
    pub fn writable(&self) -> impl Iterator<Item = &Desc> {
        self.descs.iter().filter(|d| d.writable)
    }

    /// Total readable bytes.
    pub fn readable_len(&self) -> u64 {
        self.readable().map(|d| u64::from(d.len)).sum()
    }

    /// Total writable bytes.
    pub fn writable_len(&self) -> u64 {
        self.writable().map(|d| u64::from(d.len)).sum()
    }

    /// Copies up to `buf.len()` readable bytes starting at byte `skip` of the readable
    /// part; returns how many were copied.
    pub fn read_at(&self, mem: &GuestMemoryMmap, mut skip: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        for d in self.readable() {
            if done == buf.len() {
                break;
            }
            let len = u64::from(d.len);
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = ((len - skip) as usize).min(buf.len() - done);
            // In range: checked when the chain was popped.
            if mem
                .read_slice(&mut buf[done..done + n], d.addr.unchecked_add(skip))
                .is_err()
            {
                break;
            }
            done += n;
            skip = 0;
        }
        done
    }

    /// Copies `data` into the writable part starting at byte `skip`; returns how many
    /// bytes fitted.
    pub fn write_at(&self, mem: &GuestMemoryMmap, mut skip: u64, data: &[u8]) -> usize {
        let mut done = 0;
        for d in self.writable() {
            if done == data.len() {
                break;
            }
            let len = u64::from(d.len);
            if skip >= len {
                skip -= len;
                continue;
            }
            let n = ((len - skip) as usize).min(data.len() - done);
            if mem
                .write_slice(&data[done..done + n], d.addr.unchecked_add(skip))
                .is_err()
            {
                break;
            }
            done += n;
            skip = 0;
        }
        done
    }
}

use vm_memory::Address;

/// Pops the next available chain, checked. `Ok(None)`: nothing available.
pub fn pop_chain(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
) -> Result<Option<ValidChain>, ChainError> {
    let avail = queue
        .avail_idx(mem, Ordering::Acquire)
        .map_err(|_| ChainError::Ring)?;
    let next = Wrapping(queue.next_avail());
    if avail == next {
        return Ok(None);
    }
    let size = queue.size();
    if (avail - next).0 > size {
        return Err(ChainError::AvailIndex {
            avail: avail.0,
            next: next.0,
            size,
        });
    }
    let chain = match queue.iter(mem).map_err(|_| ChainError::Ring)?.next() {
        Some(c) => c,
        None => return Ok(None),
    };
    let head = chain.head_index();
    if head >= size {
        return Err(ChainError::Head(head));
    }
    let mut descs = Vec::new();
    let mut total: u64 = 0;
    let mut last_has_next = true;
    let mut seen_writable = false;
    for d in chain {
        last_has_next = d.has_next();
        let (addr, len) = (d.addr(), d.len());
        if !GuestMemoryBackend::check_range(mem, addr, len as usize) && len > 0 {
            return Err(ChainError::OutOfRange { addr: addr.0, len });
        }
        total += u64::from(len);
        if total > MAX_CHAIN_BYTES {
            return Err(ChainError::TooLong);
        }
        let writable = d.is_write_only();
        if seen_writable && !writable {
            return Err(ChainError::Order);
        }
        seen_writable |= writable;
        descs.push(Desc {
            addr,
            len,
            writable,
        });
        // No device of ours offers VIRTIO_RING_F_INDIRECT_DESC, but virtio-queue's
        // iterator follows an indirect descriptor anyway, into a table of up to 65535
        // entries: without this bound a guest makes each chain cost 65535 descriptor
        // reads (seen while analysing a hang the fuzzer found). A chain of the queue's
        // own table never has more than `size`.
        if descs.len() > usize::from(size) {
            return Err(ChainError::Unterminated(head));
        }
    }
    // An empty chain (head unreadable) or one that was cut off with `next` still set:
    // the iterator gave up on a loop, a bad link or an unreadable descriptor.
    if descs.is_empty() || last_has_next {
        return Err(ChainError::Unterminated(head));
    }
    Ok(Some(ValidChain { head, descs }))
}

/// Returns a chain to the driver with `len` bytes written.
pub fn add_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> Result<(), ChainError> {
    queue.add_used(mem, head, len).map_err(|_| ChainError::Used)
}

// Make sure the trait methods used through `mem` resolve the way we expect.
#[allow(dead_code)]
fn _assert_guest_memory<M: GuestMemory>(_: &M) {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Bytes;

    pub(crate) const F_NEXT: u16 = 1;
    pub(crate) const F_WRITE: u16 = 2;

    pub(crate) fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap()
    }

    pub(crate) fn raw(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    /// A ready queue of size 16 whose table holds `descs` verbatim (flags and `next`
    /// as given) with one available head, 0.
    pub(crate) fn queue_with(m: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Queue {
        let vq = MockSplitQueue::new(m, 16);
        for (i, d) in descs.iter().enumerate() {
            vq.desc_table().store(i as u16, *d).unwrap();
        }
        vq.avail().ring().ref_at(0).unwrap().store(0u16.to_le());
        vq.avail().idx().store(1u16.to_le());
        vq.create_queue::<Queue>().unwrap()
    }

    #[test]
    fn good_chain_is_split_into_readable_and_writable() {
        let m = mem();
        let mut q = queue_with(
            &m,
            &[
                raw(0x10_0000, 16, F_NEXT, 1),
                raw(0x10_1000, 512, F_NEXT | F_WRITE, 2),
                raw(0x10_2000, 1, F_WRITE, 0),
            ],
        );
        let c = pop_chain(&mut q, &m).unwrap().unwrap();
        assert_eq!(c.head, 0);
        assert_eq!(c.readable_len(), 16);
        assert_eq!(c.writable_len(), 513);
        assert_eq!(pop_chain(&mut q, &m).unwrap(), None);
        m.write_slice(b"hello", GuestAddress(0x10_0000)).unwrap();
        let mut b = [0u8; 5];
        assert_eq!(c.read_at(&m, 0, &mut b), 5);
        assert_eq!(&b, b"hello");
        assert_eq!(c.write_at(&m, 510, b"xyz"), 3);
        let mut w = [0u8; 1];
        m.read_slice(&mut w, GuestAddress(0x10_2000)).unwrap();
        assert_eq!(w, [b'z']);
    }

    #[test]
    fn out_of_range_buffer_is_rejected() {
        let m = mem();
        let mut q = queue_with(&m, &[raw(0xff_f000, 0x2000, 0, 0)]);
        assert!(matches!(
            pop_chain(&mut q, &m),
            Err(ChainError::OutOfRange { .. })
        ));
        let mut q = queue_with(&m, &[raw(u64::MAX - 4, 16, 0, 0)]);
        assert!(matches!(
            pop_chain(&mut q, &m),
            Err(ChainError::OutOfRange { .. })
        ));
    }

    #[test]
    fn looping_chain_is_rejected() {
        let m = mem();
        let mut q = queue_with(
            &m,
            &[raw(0x10_0000, 16, F_NEXT, 1), raw(0x10_1000, 16, F_NEXT, 0)],
        );
        assert_eq!(pop_chain(&mut q, &m), Err(ChainError::Unterminated(0)));
        // A self-loop.
        let mut q = queue_with(&m, &[raw(0x10_0000, 16, F_NEXT, 0)]);
        assert_eq!(pop_chain(&mut q, &m), Err(ChainError::Unterminated(0)));
    }

    #[test]
    fn overlong_chain_is_rejected() {
        let m = mem();
        // 16 descriptors linked 0→1→…→15→16: `next` past the table.
        let descs: Vec<_> = (0..16).map(|i| raw(0x10_0000, 8, F_NEXT, i + 1)).collect();
        let mut q = queue_with(&m, &descs);
        assert_eq!(pop_chain(&mut q, &m), Err(ChainError::Unterminated(0)));
        // Too many bytes.
        let mut q = queue_with(
            &m,
            &[
                raw(0x10_0000, 0x80_0000, F_NEXT, 1),
                raw(0x10_0000, 0x80_0000, F_NEXT, 2),
            ]
            .into_iter()
            .chain((2..16).map(|i| raw(0x10_0000, 0x80_0000, F_NEXT, i + 1)))
            .collect::<Vec<_>>(),
        );
        assert_eq!(pop_chain(&mut q, &m), Err(ChainError::TooLong));
    }

    /// An indirect descriptor (a feature no device here offers) pointing at a table of
    /// thousands of zero-length entries made one chain cost thousands of reads (seen
    /// while analysing a hang the `block` fuzzer found).
    #[test]
    fn indirect_table_longer_than_the_queue_is_rejected() {
        const F_INDIRECT: u16 = 4;
        let m = mem();
        let table = 0x20_0000u64;
        let n = 4096u16;
        for i in 0..n {
            let d = raw(0x10_0000, 0, F_NEXT, i + 1);
            m.write_obj(d, GuestAddress(table + 16 * u64::from(i)))
                .unwrap();
        }
        let mut q = queue_with(&m, &[raw(table, 16 * u32::from(n), F_INDIRECT, 0)]);
        assert_eq!(pop_chain(&mut q, &m), Err(ChainError::Unterminated(0)));
    }

    #[test]
    fn readable_after_writable_is_rejected() {
        let m = mem();
        let mut q = queue_with(
            &m,
            &[
                raw(0x10_0000, 16, F_NEXT | F_WRITE, 1),
                raw(0x10_1000, 16, 0, 0),
            ],
        );
        assert_eq!(pop_chain(&mut q, &m), Err(ChainError::Order));
    }

    #[test]
    fn bad_ring_indexes_are_rejected() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        vq.avail().ring().ref_at(0).unwrap().store(40u16.to_le());
        vq.avail().idx().store(1u16.to_le());
        let mut q: Queue = vq.create_queue().unwrap();
        assert_eq!(pop_chain(&mut q, &m), Err(ChainError::Head(40)));

        let vq = MockSplitQueue::new(&m, 16);
        vq.avail().idx().store(100u16.to_le());
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(matches!(
            pop_chain(&mut q, &m),
            Err(ChainError::AvailIndex { avail: 100, .. })
        ));
    }
}
