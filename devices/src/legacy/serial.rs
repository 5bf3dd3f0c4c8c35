//! The 8250/16550 UART on COM1, backed by vm-superio.
//!
//! Output goes to any `Write`; input is queued by the event loop (host stdin) and fed
//! into the UART's 64-byte FIFO as the guest drains it. The interrupt is an [`EventFd`]
//! the VMM registers as a KVM irqfd on GSI 4.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};

use vm_superio::Serial;
use vm_superio::serial::NoEvents;
use vmm_sys_util::eventfd::EventFd;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// Bytes of host input buffered beyond the FIFO before [`SerialDevice::wants_input`]
/// says to stop reading the host side.
pub const MAX_PENDING_INPUT: usize = 64 * 1024;

/// The UART plus the input not yet in its FIFO.
pub struct SerialDevice {
    serial: Serial<EventFdTrigger, NoEvents, Box<dyn Write + Send>>,
    pending: VecDeque<u8>,
    output_errors: u64,
}

impl fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialDevice")
            .field("pending", &self.pending.len())
            .field("output_errors", &self.output_errors)
            .finish()
    }
}

impl SerialDevice {
    /// A UART raising `interrupt` and writing transmitted bytes to `out`.
    pub fn new(interrupt: EventFd, out: Box<dyn Write + Send>) -> Self {
        Self {
            serial: Serial::new(EventFdTrigger::new(interrupt), out),
            pending: VecDeque::new(),
            output_errors: 0,
        }
    }

    /// Queues host input for the guest and moves as much as fits into the FIFO.
    pub fn queue_input(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.pending.extend(bytes);
        self.fill_fifo()
    }

    /// Whether the host side should keep reading input (the backlog is not too large).
    pub fn wants_input(&self) -> bool {
        self.pending.len() < MAX_PENDING_INPUT
    }

    /// Bytes the guest could not write to the host (e.g. closed stdout).
    pub fn output_errors(&self) -> u64 {
        self.output_errors
    }

    fn fill_fifo(&mut self) -> io::Result<()> {
        while !self.pending.is_empty() && self.serial.fifo_capacity() > 0 {
            let (front, _) = self.pending.as_slices();
            let n = self
                .serial
                .enqueue_raw_bytes(front)
                .map_err(|e| io::Error::other(format!("{e:?}")))?;
            self.pending.drain(..n);
        }
        Ok(())
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let v = u8::try_from(offset).map_or(0xff, |o| self.serial.read(o));
        data.fill(v);
        // Reading the receive buffer may have made room; keep it fed. A failed
        // interrupt (eventfd overflow) leaves the byte in the FIFO for the next poll.
        let _ = self.fill_fifo();
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (Ok(offset), Some(&v)) = (u8::try_from(offset), data.first()) else {
            return;
        };
        if self.serial.write(offset, v).is_err() {
            self.output_errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const THR: u64 = 0;
    const IER: u64 = 1;
    const LSR: u64 = 5;

    #[test]
    fn transmits_to_output() {
        let out = Shared::default();
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(evt, Box::new(out.clone()));
        for b in b"hi\n" {
            s.write(0x3f8, THR, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
    }

    #[test]
    fn input_beyond_fifo_is_kept_and_delivered_in_order() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut s = SerialDevice::new(evt.try_clone().unwrap(), Box::new(io::sink()));
        // Enable the received-data interrupt.
        s.write(0x3f8, IER, &[0x01]);
        let input: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        s.queue_input(&input).unwrap();
        assert!(evt.read().unwrap() >= 1, "interrupt raised");
        let mut got = Vec::new();
        loop {
            let mut lsr = [0];
            s.read(0x3f8, LSR, &mut lsr);
            if lsr[0] & 1 == 0 {
                break;
            }
            let mut b = [0];
            s.read(0x3f8, THR, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, input);
        assert!(s.wants_input());
    }
}
