//! Address buses (port I/O and MMIO) that route guest accesses to devices.
//!
//! A [`Bus`] maps non-overlapping ranges `[base, base + len)` to devices. A device sees
//! the base of the range it was inserted at and the offset of the access inside it,
//! never the absolute address.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// A device that answers reads and writes on a bus.
pub trait BusDevice: Send {
    /// The guest read `data.len()` bytes at `base + offset`; fill `data`.
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]);
    /// The guest wrote `data` at `base + offset`.
    fn write(&mut self, base: u64, offset: u64, data: &[u8]);
}

/// Errors of bus construction.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// A range of zero length was inserted.
    #[error(
        "Bus range for {name} at {base:#x} has zero length; give the device a length of at least 1"
    )]
    ZeroLength {
        /// Device name.
        name: String,
        /// Range base.
        base: u64,
    },
    /// The range wraps past the end of the address space.
    #[error(
        "Bus range for {name} at {base:#x} (+{len:#x}) overflows the address space; pick a lower base"
    )]
    Overflow {
        /// Device name.
        name: String,
        /// Range base.
        base: u64,
        /// Range length.
        len: u64,
    },
    /// The new range overlaps one already on the bus.
    #[error(
        "Bus range for {name} at {base:#x} (+{len:#x}) overlaps {other} at {other_base:#x} (+{other_len:#x}); move one of them"
    )]
    Overlap {
        /// Device name.
        name: String,
        /// Range base.
        base: u64,
        /// Range length.
        len: u64,
        /// Name of the device already there.
        other: String,
        /// Its base.
        other_base: u64,
        /// Its length.
        other_len: u64,
    },
}

/// A device shared between the bus and whoever else needs to reach it (the event loop).
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

#[derive(Clone)]
struct Entry {
    len: u64,
    name: String,
    device: SharedDevice,
}

/// Where an access landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusHit<'a> {
    /// Name given when the device was inserted.
    pub name: &'a str,
    /// Base of the device's range.
    pub base: u64,
}

/// A set of non-overlapping address ranges, each backed by a device.
#[derive(Clone, Default)]
pub struct Bus {
    // Keyed by range base.
    ranges: BTreeMap<u64, Entry>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut l = f.debug_list();
        for (base, e) in &self.ranges {
            l.entry(&format_args!("{}@{:#x}+{:#x}", e.name, base, e.len));
        }
        l.finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `[base, base + len)`. Rejects empty, wrapping and overlapping ranges.
    pub fn insert(
        &mut self,
        device: SharedDevice,
        base: u64,
        len: u64,
        name: &str,
    ) -> Result<(), BusError> {
        if len == 0 {
            return Err(BusError::ZeroLength {
                name: name.into(),
                base,
            });
        }
        let end = base
            .checked_add(len - 1)
            .ok_or_else(|| BusError::Overflow {
                name: name.into(),
                base,
                len,
            })?;
        // The nearest range starting at or below `end` is the only one that can overlap.
        if let Some((&ob, oe)) = self.ranges.range(..=end).next_back()
            && ob + (oe.len - 1) >= base
        {
            return Err(BusError::Overlap {
                name: name.into(),
                base,
                len,
                other: oe.name.clone(),
                other_base: ob,
                other_len: oe.len,
            });
        }
        self.ranges.insert(
            base,
            Entry {
                len,
                name: name.into(),
                device,
            },
        );
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &Entry)> {
        let (&base, e) = self.ranges.range(..=addr).next_back()?;
        (addr - base < e.len).then_some((base, e))
    }

    /// Which device (if any) covers `addr`.
    pub fn lookup(&self, addr: u64) -> Option<BusHit<'_>> {
        self.find(addr).map(|(base, e)| BusHit {
            name: &e.name,
            base,
        })
    }

    /// Dispatches a read. Returns `None` (and leaves `data` alone) when nothing is mapped.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> Option<BusHit<'_>> {
        let (base, e) = self.find(addr)?;
        // A poisoned lock means a device panicked on another vCPU; keep serving.
        let mut dev = e.device.lock().unwrap_or_else(|p| p.into_inner());
        dev.read(base, addr - base, data);
        Some(BusHit {
            name: &e.name,
            base,
        })
    }

    /// Dispatches a write. Returns `None` when nothing is mapped.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<BusHit<'_>> {
        let (base, e) = self.find(addr)?;
        let mut dev = e.device.lock().unwrap_or_else(|p| p.into_inner());
        dev.write(base, addr - base, data);
        Some(BusHit {
            name: &e.name,
            base,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        reads: Vec<(u64, u64, usize)>,
        writes: Vec<(u64, u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
            self.reads.push((base, offset, data.len()));
            data.fill(offset as u8);
        }
        fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
            self.writes.push((base, offset, data.to_vec()));
        }
    }

    fn dev() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder::default()))
    }

    #[test]
    fn offsets_are_relative_to_the_range_base() {
        let mut bus = Bus::new();
        let d = dev();
        bus.insert(d.clone(), 0x3f8, 8, "serial").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(bus.read(0x3fd, &mut buf).unwrap().name, "serial");
        assert_eq!(buf, [5]);
        bus.write(0x3f8, b"x").unwrap();
        let d = d.lock().unwrap();
        assert_eq!(d.reads, vec![(0x3f8, 5, 1)]);
        assert_eq!(d.writes, vec![(0x3f8, 0, vec![b'x'])]);
    }

    #[test]
    fn unmapped_addresses_miss() {
        let mut bus = Bus::new();
        bus.insert(dev(), 0x10, 0x10, "a").unwrap();
        let mut buf = [0xaa; 2];
        assert!(bus.read(0x0f, &mut buf).is_none());
        assert!(bus.read(0x20, &mut buf).is_none());
        assert_eq!(buf, [0xaa; 2]);
        assert!(bus.write(0x20, &[1]).is_none());
        assert_eq!(bus.lookup(0x1f).unwrap().base, 0x10);
    }

    #[test]
    fn overlaps_are_rejected() {
        let mut bus = Bus::new();
        bus.insert(dev(), 0x100, 0x10, "a").unwrap();
        // Same base, straddling the start, straddling the end, containing, contained.
        for (base, len) in [
            (0x100, 1),
            (0xf8, 0x9),
            (0x10f, 4),
            (0xf0, 0x40),
            (0x104, 2),
        ] {
            let err = bus.insert(dev(), base, len, "b").unwrap_err();
            assert!(
                matches!(err, BusError::Overlap { .. }),
                "{base:#x}+{len:#x}"
            );
        }
        // Adjacent on both sides is fine.
        bus.insert(dev(), 0xf0, 0x10, "below").unwrap();
        bus.insert(dev(), 0x110, 0x10, "above").unwrap();
        assert_eq!(bus.lookup(0x10f).unwrap().name, "a");
        assert_eq!(bus.lookup(0x110).unwrap().name, "above");
    }

    #[test]
    fn empty_and_wrapping_ranges_are_rejected() {
        let mut bus = Bus::new();
        assert!(matches!(
            bus.insert(dev(), 0, 0, "z"),
            Err(BusError::ZeroLength { .. })
        ));
        assert!(matches!(
            bus.insert(dev(), u64::MAX, 2, "w"),
            Err(BusError::Overflow { .. })
        ));
        bus.insert(dev(), u64::MAX, 1, "last").unwrap();
        assert_eq!(bus.lookup(u64::MAX).unwrap().name, "last");
    }

    #[test]
    fn error_messages_are_one_line() {
        let mut bus = Bus::new();
        bus.insert(dev(), 0x60, 1, "i8042").unwrap();
        let msg = bus.insert(dev(), 0x60, 4, "x").unwrap_err().to_string();
        assert!(!msg.contains('\n'));
        assert!(msg.starts_with("Bus range"));
    }
}
