//! Legacy PC devices for an x86 microVM, plus isol's exit port.
//!
//! Port map (everything not listed is either owned by KVM's in-kernel irqchip/PIT —
//! 0x20-0x21, 0x40-0x43, 0x61, 0xa0-0xa1, 0x4d0-0x4d1 — or unmapped, which reads as
//! 0xff and ignores writes):
//!
//! | ports          | device                                   |
//! |----------------|------------------------------------------|
//! | 0x060-0x064    | i8042 (only the CPU-reset command, 0xfe) |
//! | 0x070-0x071    | CMOS/RTC (time of day, status registers) |
//! | 0x080-0x08f    | POST code / DMA page registers (sink)    |
//! | 0x0ed          | I/O delay port (sink)                    |
//! | 0x2f8-0x2ff    | 8250 UART, COM2, IRQ 3: exit-port stream |
//! | 0x3f8-0x3ff    | 8250 UART, COM1, IRQ 4                   |
//! | 0x4f0-0x4f3    | isol exit port (see [`exit_port`])       |

pub mod cmos;
pub mod exit_port;
pub mod i8042;
pub mod serial;
pub mod sink;

use std::io;

use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

pub use cmos::Cmos;
pub use exit_port::{ExitChannelWriter, ExitPort, Phase};
pub use i8042::I8042;
pub use serial::SerialDevice;
pub use sink::Sink;

/// COM1.
pub const SERIAL_PORT_BASE: u64 = 0x3f8;
/// Ports the UART decodes.
pub const SERIAL_PORT_LEN: u64 = 8;
/// COM1's ISA interrupt line.
pub const SERIAL_IRQ: u32 = 4;
/// COM2: carries the exit-port protocol as a byte stream (see [`exit_port`]).
pub const EXIT_UART_PORT_BASE: u64 = 0x2f8;
/// COM2's ISA interrupt line.
pub const EXIT_UART_IRQ: u32 = 3;
/// i8042 data port; the command/status port is at +4.
pub const I8042_PORT_BASE: u64 = 0x60;
/// Ports the i8042 model decodes (0x60-0x64; KVM's PIT owns 0x61 first).
pub const I8042_PORT_LEN: u64 = 5;
/// CMOS index port; data is at +1.
pub const CMOS_PORT_BASE: u64 = 0x70;
/// Ports the CMOS model decodes.
pub const CMOS_PORT_LEN: u64 = 2;
/// isol's exit port.
pub const EXIT_PORT_BASE: u64 = exit_port::EXIT_PORT_BASE;
/// Ports the exit port decodes.
pub const EXIT_PORT_LEN: u64 = exit_port::EXIT_PORT_LEN;

/// A [`Trigger`] that signals an [`EventFd`] (a KVM irqfd or an event-loop wakeup).
#[derive(Debug)]
pub struct EventFdTrigger(EventFd);

impl EventFdTrigger {
    /// Wraps `evt`.
    pub fn new(evt: EventFd) -> Self {
        Self(evt)
    }

    /// The wrapped event fd.
    pub fn event_fd(&self) -> &EventFd {
        &self.0
    }
}

impl Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}
