//! isol's device models.
//!
//! * [`bus`]: the port-I/O and MMIO buses the vCPU threads dispatch exits on.
//! * `fuzzing` (cargo feature `fuzzing`): the fuzz harnesses of `fuzz/`, see
//!   docs/fuzzing.md.
//! * [`legacy`]: the PC devices a Linux guest expects on an x86 microVM (8250 serial,
//!   i8042 reset line, CMOS/RTC, POST port, PIC/PIT holes) and isol's own exit port.
//!
//! This crate never depends on the VMM: devices see only offsets into their range and
//! talk back through [`vmm_sys_util::eventfd::EventFd`]s and shared state.

pub mod bus;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod legacy;
pub mod virtio;

pub use bus::{Bus, BusDevice, BusError};
