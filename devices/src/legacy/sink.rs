//! A device that swallows writes and reads as a fixed byte: for ports Linux pokes for
//! timing or diagnostics (POST code 0x80, DMA page registers, I/O delay 0xed).

use crate::bus::BusDevice;

/// Ignores writes; reads return `read_value` in every byte.
#[derive(Debug, Clone, Copy)]
pub struct Sink {
    read_value: u8,
}

impl Sink {
    /// A sink whose reads return `read_value`.
    pub fn new(read_value: u8) -> Self {
        Self { read_value }
    }
}

impl BusDevice for Sink {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        data.fill(self.read_value);
    }

    fn write(&mut self, _base: u64, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixed_value_and_ignores_writes() {
        let mut s = Sink::new(0);
        s.write(0x80, 0, &[0x12]);
        let mut b = [0xaa; 2];
        s.read(0x80, 0, &mut b);
        assert_eq!(b, [0, 0]);
    }
}
