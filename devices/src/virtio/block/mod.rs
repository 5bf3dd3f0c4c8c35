//! virtio-blk over a raw host file.
//!
//! One request queue. Requests are served synchronously on the device thread (never a
//! vCPU thread) with positional I/O straight between the file and guest memory:
//!
//! | type | effect | used length |
//! |------|--------|-------------|
//! | IN (0) | `pread` into the writable buffers | data + 1 |
//! | OUT (1) | `pwrite` from the readable buffers; IOERR when read-only | 1 |
//! | FLUSH (4) | `fdatasync` | 1 |
//! | GET_ID (8) | up to 20 bytes of the id string | id + 1 |
//! | other | UNSUPP | 1 |
//!
//! A request that is malformed (no status byte, a header shorter than 16 bytes, a data
//! length that is not a multiple of 512, sectors past the end) completes with IOERR
//! (or with length 0 when there is no status byte to write); a malformed *chain* (see
//! [`super::queue`]) breaks the device.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

use super::queue::{self, ValidChain};
use super::{DeviceFault, QueueCtx, VirtioDevice, device_type};

/// `VIRTIO_BLK_F_SEG_MAX`.
pub const F_SEG_MAX: u32 = 2;
/// `VIRTIO_BLK_F_RO`.
pub const F_RO: u32 = 5;
/// `VIRTIO_BLK_F_FLUSH`.
pub const F_FLUSH: u32 = 9;

/// Request types.
pub const T_IN: u32 = 0;
/// Write.
pub const T_OUT: u32 = 1;
/// Flush.
pub const T_FLUSH: u32 = 4;
/// Get the device id string.
pub const T_GET_ID: u32 = 8;

/// Status: success.
pub const S_OK: u8 = 0;
/// Status: I/O error.
pub const S_IOERR: u8 = 1;
/// Status: unsupported request.
pub const S_UNSUPP: u8 = 2;

/// Sector size.
pub const SECTOR: u64 = 512;
/// Queue size.
pub const QUEUE_SIZE: u16 = 256;
/// Segments per request we announce (leaves room for header and status).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Length of the GET_ID answer.
pub const ID_LEN: usize = 20;

/// Errors opening a disk.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The file cannot be opened.
    #[error("Cannot open disk image {path}: {source}; check that it exists and is readable")]
    Open {
        /// Path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Requests a disk has completed, by kind (shared with whoever attached the disk, for
/// tests and tracing). Counted when the request completes, whatever its status.
#[derive(Debug, Default)]
pub struct BlockStats {
    /// IN requests.
    pub reads: AtomicU64,
    /// OUT requests.
    pub writes: AtomicU64,
    /// FLUSH requests.
    pub flushes: AtomicU64,
    /// Requests that completed with IOERR or UNSUPP.
    pub errors: AtomicU64,
    /// Bytes read into the guest.
    pub bytes_read: AtomicU64,
    /// Bytes written from the guest.
    pub bytes_written: AtomicU64,
}

impl BlockStats {
    /// A snapshot: (reads, writes, flushes, errors).
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.reads.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
            self.flushes.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// A virtio block device.
#[derive(Debug)]
pub struct Block {
    file: File,
    read_only: bool,
    sectors: u64,
    id: [u8; ID_LEN],
    stats: Arc<BlockStats>,
}

fn be_err(path: &Path) -> impl FnOnce(std::io::Error) -> BlockError + '_ {
    move |source| BlockError::Open {
        path: path.to_owned(),
        source,
    }
}

impl Block {
    /// Opens `path` as a disk; `id` is what GET_ID returns (truncated to 20 bytes).
    pub fn open(path: &Path, read_only: bool, id: &str) -> Result<Self, BlockError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(be_err(path))?;
        Self::from_file(file, read_only, id).map_err(be_err(path))
    }

    /// Uses an open file as the disk.
    pub fn from_file(file: File, read_only: bool, id: &str) -> std::io::Result<Self> {
        let len = file.metadata()?.len();
        let mut idb = [0u8; ID_LEN];
        let n = id.len().min(ID_LEN);
        idb[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Self {
            file,
            read_only,
            sectors: len / SECTOR,
            id: idb,
            stats: Arc::default(),
        })
    }

    /// Counts requests into `stats` instead of a private counter.
    pub fn with_stats(mut self, stats: Arc<BlockStats>) -> Self {
        self.stats = stats;
        self
    }

    /// The request counters.
    pub fn stats(&self) -> &Arc<BlockStats> {
        &self.stats
    }

    /// Capacity in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Executes one request; returns (status, bytes written into the writable part
    /// before the status byte).
    fn execute(&mut self, mem: &GuestMemoryMmap, c: &ValidChain, data_len: u64) -> (u8, u64) {
        let mut hdr = [0u8; 16];
        if c.read_at(mem, 0, &mut hdr) != 16 {
            return (S_IOERR, 0);
        }
        let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let (status, written) = self.execute_kind(mem, c, data_len, kind, &hdr);
        let s = &self.stats;
        let bump = |c: &AtomicU64, by: u64| {
            c.fetch_add(by, Ordering::Relaxed);
        };
        let ok = status == S_OK;
        match kind {
            T_IN => {
                bump(&s.reads, 1);
                if ok {
                    bump(&s.bytes_read, written);
                }
            }
            T_OUT => {
                bump(&s.writes, 1);
                if ok {
                    bump(&s.bytes_written, c.readable_len() - 16);
                }
            }
            T_FLUSH => bump(&s.flushes, 1),
            _ => {}
        }
        if !ok {
            bump(&s.errors, 1);
        }
        (status, written)
    }

    fn execute_kind(
        &mut self,
        mem: &GuestMemoryMmap,
        c: &ValidChain,
        data_len: u64,
        kind: u32,
        hdr: &[u8; 16],
    ) -> (u8, u64) {
        let sector = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or([0; 8]));
        match kind {
            T_IN => {
                if !data_len.is_multiple_of(SECTOR) || !self.in_range(sector, data_len) {
                    return (S_IOERR, 0);
                }
                match self.transfer(mem, c, sector * SECTOR, data_len, true) {
                    Ok(()) => (S_OK, data_len),
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_OUT => {
                let out_len = c.readable_len() - 16;
                if self.read_only
                    || !out_len.is_multiple_of(SECTOR)
                    || !self.in_range(sector, out_len)
                {
                    return (S_IOERR, 0);
                }
                match self.transfer(mem, c, sector * SECTOR, out_len, false) {
                    Ok(()) => (S_OK, 0),
                    Err(_) => (S_IOERR, 0),
                }
            }
            T_FLUSH => match self.file.sync_data() {
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            },
            T_GET_ID => {
                let n = (data_len as usize).min(ID_LEN);
                let w = c.write_at(mem, 0, &self.id[..n]);
                (S_OK, w as u64)
            }
            _ => (S_UNSUPP, 0),
        }
    }

    fn in_range(&self, sector: u64, len: u64) -> bool {
        sector
            .checked_add(len / SECTOR)
            .is_some_and(|end| end <= self.sectors)
    }

    /// Moves `len` bytes between the file at `pos` and the chain's data buffers:
    /// the writable ones minus the status byte (`to_guest`), or the readable ones
    /// after the 16-byte header.
    fn transfer(
        &mut self,
        mem: &GuestMemoryMmap,
        c: &ValidChain,
        mut pos: u64,
        len: u64,
        to_guest: bool,
    ) -> std::io::Result<()> {
        let mut skip: u64 = if to_guest { 0 } else { 16 };
        let mut left = len;
        let descs: Vec<_> = if to_guest {
            c.writable().copied().collect()
        } else {
            c.readable().copied().collect()
        };
        for d in descs {
            if left == 0 {
                break;
            }
            let dlen = u64::from(d.len);
            if skip >= dlen {
                skip -= dlen;
                continue;
            }
            let n = (dlen - skip).min(left);
            let addr = vm_memory::Address::unchecked_add(&d.addr, skip);
            skip = 0;
            let slice = mem
                .get_slice(addr, n as usize)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            if to_guest {
                let mut done = 0usize;
                let guard = slice.ptr_guard_mut();
                while done < n as usize {
                    // SAFETY: `done < n`, so the offset stays inside the slice.
                    let start = unsafe { guard.as_ptr().add(done) };
                    // SAFETY: `start` points at `n - done` bytes of guest memory that the
                    // chain check proved mapped; the slice keeps the mapping alive.
                    let buf = unsafe { std::slice::from_raw_parts_mut(start, n as usize - done) };
                    let r = self.file.read_at(buf, pos + done as u64)?;
                    if r == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    done += r;
                }
            } else {
                let guard = slice.ptr_guard();
                // SAFETY: as above, for reading `n` bytes.
                let buf = unsafe { std::slice::from_raw_parts(guard.as_ptr(), n as usize) };
                self.file.write_all_at(buf, pos)?;
            }
            pos += n;
            left -= n;
        }
        if left == 0 {
            Ok(())
        } else {
            Err(std::io::ErrorKind::UnexpectedEof.into())
        }
    }

    fn serve(&mut self, ctx: &mut QueueCtx<'_>) -> Result<(), DeviceFault> {
        let fault = |error| DeviceFault::Chain { queue: 0, error };
        let mut served = false;
        // At most a queue's worth of chains per notification: a guest whose used ring lies over
        // its available ring would otherwise keep this loop going forever (each used index the
        // device writes raises the available index). A driver cannot have more than that many
        // chains waiting when the pass starts, and the block device never suppresses
        // notifications, so chains added during the pass come with a notification of their own.
        let budget = usize::from(virtio_queue::QueueT::size(&ctx.queues[0]));
        for _ in 0..budget {
            let Some(c) = queue::pop_chain(&mut ctx.queues[0], ctx.mem).map_err(fault)? else {
                break;
            };
            served = true;
            let wlen = c.writable_len();
            let used = if wlen == 0 || c.readable_len() < 16 {
                // Nowhere to put a status, or no header: fail the request. Write the
                // status if there is a byte for it.
                if wlen > 0 {
                    self.write_status(ctx.mem, &c, wlen - 1, S_IOERR);
                    1
                } else {
                    0
                }
            } else {
                let (status, written) = self.execute(ctx.mem, &c, wlen - 1);
                self.write_status(ctx.mem, &c, wlen - 1, status);
                written as u32 + 1
            };
            queue::add_used(&mut ctx.queues[0], ctx.mem, c.head, used).map_err(fault)?;
        }
        if served {
            ctx.notify(0);
        }
        Ok(())
    }

    fn write_status(&self, mem: &GuestMemoryMmap, c: &ValidChain, at: u64, status: u8) {
        c.write_at(mem, at, &[status]);
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn features(&self) -> u64 {
        let mut f = (1u64 << F_FLUSH) | (1 << F_SEG_MAX);
        if self.read_only {
            f |= 1 << F_RO;
        }
        f
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config: capacity (le64), size_max (le32), seg_max (le32).
        let mut cfg = [0u8; 16];
        cfg[..8].copy_from_slice(&self.sectors.to_le_bytes());
        cfg[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        for (i, b) in data.iter_mut().enumerate() {
            *b = cfg.get(offset as usize + i).copied().unwrap_or(0);
        }
    }

    fn activate(&mut self, ctx: &mut QueueCtx<'_>, _acked: u64) -> Result<(), DeviceFault> {
        use virtio_queue::QueueT;
        if !ctx.queues[0].ready() {
            return Err(DeviceFault::QueueNotReady(0));
        }
        // Requests may already be waiting (the notify came before DRIVER_OK).
        self.serve(ctx)
    }

    fn process_queue(
        &mut self,
        _index: usize,
        ctx: &mut QueueCtx<'_>,
        _ops: Option<&mut event_manager::EventOps>,
    ) -> Result<(), DeviceFault> {
        self.serve(ctx)
    }

    // Requests are served synchronously on notification, and the driver waits for
    // each: nothing of the guest's is left to finish.
    fn reset(&mut self, _ctx: Option<&mut QueueCtx<'_>>) {}
}

// Keep the trait import used in non-test builds.
#[allow(dead_code)]
fn _uses(m: &GuestMemoryMmap) -> usize {
    m.num_regions()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::IrqTrigger;
    use crate::virtio::queue::tests::{F_NEXT, F_WRITE, mem, queue_with, raw};
    use std::io::Write;
    use virtio_queue::{Queue, QueueT};
    use vm_memory::Bytes;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x20_0000;
    const STATUS: u64 = 0x30_0000;

    fn disk(ro: bool) -> (Block, tempfile::NamedTempFile) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let content: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&content).unwrap();
        (Block::open(f.path(), ro, "isol-test-disk").unwrap(), f)
    }

    fn header(m: &GuestMemoryMmap, kind: u32, sector: u64) {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        m.write_slice(&h, GuestAddress(HDR)).unwrap();
        m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    }

    fn run(b: &mut Block, m: &GuestMemoryMmap, q: Queue) -> (Result<(), DeviceFault>, u32, u8) {
        let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut qs = [q];
        let mut ctx = QueueCtx {
            mem: m,
            queues: &mut qs,
            irq: &irq,
        };
        let r = b.process_queue(0, &mut ctx, None);
        // Used element 0: id at used+4, len at used+8.
        let used = GuestAddress(qs[0].used_ring());
        let len: u32 = m.read_obj(GuestAddress(used.0 + 8)).unwrap();
        (r, len, m.read_obj(GuestAddress(STATUS)).unwrap())
    }

    fn three(data_flags: u16, data_len: u32) -> Vec<virtio_queue::desc::RawDescriptor> {
        vec![
            raw(HDR, 16, F_NEXT, 1),
            raw(DATA, data_len, F_NEXT | data_flags, 2),
            raw(STATUS, 1, F_WRITE, 0),
        ]
    }

    #[test]
    fn read_returns_data_and_length() {
        let (mut b, _f) = disk(true);
        let m = mem();
        header(&m, T_IN, 2);
        let q = queue_with(&m, &three(F_WRITE, 1024));
        let (r, len, st) = run(&mut b, &m, q);
        r.unwrap();
        assert_eq!((len, st), (1025, S_OK));
        let mut got = vec![0u8; 1024];
        m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        let want: Vec<u8> = (1024..2048u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn write_then_flush_reach_the_file() {
        let (mut b, f) = disk(false);
        let m = mem();
        header(&m, T_OUT, 1);
        m.write_slice(&[7u8; 512], GuestAddress(DATA)).unwrap();
        let (r, len, st) = run(&mut b, &m, queue_with(&m, &three(0, 512)));
        r.unwrap();
        assert_eq!((len, st), (1, S_OK));
        let disk = std::fs::read(f.path()).unwrap();
        assert_eq!(&disk[512..1024], &[7u8; 512][..]);
        header(&m, T_FLUSH, 0);
        let q = queue_with(&m, &[raw(HDR, 16, F_NEXT, 1), raw(STATUS, 1, F_WRITE, 0)]);
        let (r, len, st) = run(&mut b, &m, q);
        r.unwrap();
        assert_eq!((len, st), (1, S_OK));
    }

    #[test]
    fn read_only_refuses_writes() {
        let (mut b, f) = disk(true);
        assert_ne!(b.features() & (1 << F_RO), 0);
        let m = mem();
        header(&m, T_OUT, 0);
        let (_, len, st) = run(&mut b, &m, queue_with(&m, &three(0, 512)));
        assert_eq!((len, st), (1, S_IOERR));
        assert_eq!(std::fs::read(f.path()).unwrap()[0], 0);
    }

    #[test]
    fn bad_requests_fail_with_status() {
        let (mut b, _f) = disk(false);
        let m = mem();
        // Past the end.
        header(&m, T_IN, 16);
        let (_, _, st) = run(&mut b, &m, queue_with(&m, &three(F_WRITE, 512)));
        assert_eq!(st, S_IOERR);
        // Not a multiple of 512.
        header(&m, T_IN, 0);
        let (_, _, st) = run(&mut b, &m, queue_with(&m, &three(F_WRITE, 100)));
        assert_eq!(st, S_IOERR);
        // Unknown type.
        header(&m, 77, 0);
        let (_, len, st) = run(&mut b, &m, queue_with(&m, &three(F_WRITE, 512)));
        assert_eq!((len, st), (1, S_UNSUPP));
        // No writable status byte: completed with length 0, nothing written.
        header(&m, T_IN, 0);
        let q = queue_with(&m, &[raw(HDR, 16, 0, 0)]);
        let (r, len, st) = run(&mut b, &m, q);
        r.unwrap();
        assert_eq!((len, st), (0, 0xff));
    }

    #[test]
    fn get_id() {
        let (mut b, _f) = disk(true);
        let m = mem();
        header(&m, T_GET_ID, 0);
        let (_, len, st) = run(&mut b, &m, queue_with(&m, &three(F_WRITE, 20)));
        assert_eq!((len, st), (21, S_OK));
        let mut id = [0u8; 14];
        m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id, b"isol-test-disk");
    }

    #[test]
    fn malformed_chain_breaks_the_device_without_touching_memory() {
        let (mut b, _f) = disk(false);
        let m = mem();
        header(&m, T_IN, 0);
        let q = queue_with(
            &m,
            &[
                raw(HDR, 16, F_NEXT, 1),
                raw(0xfff_0000, 0x20_0000, F_NEXT | F_WRITE, 2),
                raw(STATUS, 1, F_WRITE, 0),
            ],
        );
        let (r, _, st) = run(&mut b, &m, q);
        assert!(matches!(r, Err(DeviceFault::Chain { queue: 0, .. })));
        assert_eq!(st, 0xff, "status untouched");
        let q = queue_with(
            &m,
            &[raw(HDR, 16, F_NEXT, 1), raw(STATUS, 1, F_NEXT | F_WRITE, 0)],
        );
        let (r, _, _) = run(&mut b, &m, q);
        assert!(matches!(r, Err(DeviceFault::Chain { .. })));
        let _ = QueueT::size(&queue_with(&m, &[]));
    }

    #[test]
    fn config_space_has_capacity() {
        let (b, _f) = disk(true);
        let mut c = [0u8; 8];
        b.read_config(0, &mut c);
        assert_eq!(u64::from_le_bytes(c), 16);
    }
}
