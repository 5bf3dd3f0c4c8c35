//! The i8042 keyboard controller, reduced to what a microVM needs: the guest writing
//! 0xfe (pulse the CPU reset line) to the command port. Linux does that on `reboot=k`,
//! which is how an isol guest powers off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use vm_superio::I8042Device;
use vmm_sys_util::eventfd::EventFd;

use super::EventFdTrigger;
use crate::bus::BusDevice;

/// i8042 at 0x60 (data) / 0x64 (command, status). Signals `reset_evt` on CPU reset.
#[derive(Debug)]
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
    resets: u64,
    stop_flag: Option<Arc<AtomicBool>>,
}

impl I8042 {
    /// A controller that writes to `reset_evt` when the guest asks for a CPU reset.
    pub fn new(reset_evt: EventFd) -> Self {
        Self {
            inner: I8042Device::new(EventFdTrigger::new(reset_evt)),
            resets: 0,
            stop_flag: None,
        }
    }

    /// Also raises `flag` on reset, synchronously, so the vCPU that pulsed the line
    /// (and any other that looks) stops running guest code before the event loop even
    /// wakes up.
    pub fn with_stop_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.stop_flag = Some(flag);
        self
    }

    /// How many times the guest pulsed the reset line.
    pub fn resets(&self) -> u64 {
        self.resets
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        // Status 0: output buffer empty, input buffer empty, so probes don't spin.
        let v = u8::try_from(offset).map_or(0, |o| self.inner.read(o));
        data.fill(v);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (Ok(offset), Some(&value)) = (u8::try_from(offset), data.first()) else {
            return;
        };
        if offset == 4 && value == 0xfe {
            self.resets += 1;
            if let Some(f) = &self.stop_flag {
                f.store(true, Ordering::SeqCst);
            }
        }
        // The only failure is the eventfd write, which cannot fail short of the counter
        // overflowing (2^64 - 1 resets); nothing useful to do with it on a vCPU thread.
        let _ = self.inner.write(offset, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn reset_command_signals_the_event() {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let flag = Arc::new(AtomicBool::new(false));
        let mut dev = I8042::new(evt.try_clone().unwrap()).with_stop_flag(flag.clone());
        dev.write(0x60, 4, &[0xd1]);
        assert!(evt.read().is_err(), "no reset yet");
        assert!(!flag.load(Ordering::SeqCst));
        dev.write(0x60, 4, &[0xfe]);
        assert_eq!(evt.read().unwrap(), 1);
        assert_eq!(dev.resets(), 1);
        assert!(flag.load(Ordering::SeqCst));
        let mut status = [0xff];
        dev.read(0x60, 4, &mut status);
        assert_eq!(status, [0]);
    }
}
