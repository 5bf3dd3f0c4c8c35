//! A minimal MC146818 CMOS/RTC at 0x70 (index) / 0x71 (data).
//!
//! It answers the time-of-day registers with the host's UTC time in BCD, 24-hour mode,
//! with "update in progress" always clear and the battery reported good, so Linux's
//! `rtc_cmos`/`mach_get_cmos_time` read a sane wall clock. Every other register reads 0
//! and writes are stored but have no effect (no alarms, no periodic interrupt).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0a;
const REG_STATUS_B: u8 = 0x0b;
const REG_STATUS_C: u8 = 0x0c;
const REG_STATUS_D: u8 = 0x0d;
const REG_CENTURY: u8 = 0x32;

/// Status B: 24-hour mode, BCD (DM bit clear).
const STATUS_B_24H: u8 = 0x02;
/// Status D: valid RAM and time (battery good).
const STATUS_D_VRT: u8 = 0x80;
/// Status A: 32.768 kHz time base, 1024 Hz rate; UIP clear.
const STATUS_A_DEFAULT: u8 = 0x26;

/// The CMOS/RTC device.
#[derive(Debug)]
pub struct Cmos {
    index: u8,
    ram: [u8; 128],
    clock: fn() -> u64,
}

impl Default for Cmos {
    fn default() -> Self {
        Self::new()
    }
}

fn host_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bcd(v: u64) -> u8 {
    // Callers pass values below 100.
    (((v / 10) << 4) | (v % 10)) as u8
}

/// (year, month 1-12, day 1-31) of the civil date `days` after 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl Cmos {
    /// A CMOS reading the host's clock.
    pub fn new() -> Self {
        Self::with_clock(host_now)
    }

    /// A CMOS reading seconds since the Unix epoch from `clock` (for tests).
    pub fn with_clock(clock: fn() -> u64) -> Self {
        Self {
            index: 0,
            ram: [0; 128],
            clock,
        }
    }

    fn register(&self, index: u8) -> u8 {
        let now = (self.clock)();
        let secs_of_day = now % 86_400;
        let days = (now / 86_400) as i64;
        let (year, month, day) = civil_from_days(days);
        let year = year.max(0) as u64;
        match index {
            REG_SECONDS => bcd(secs_of_day % 60),
            REG_MINUTES => bcd(secs_of_day / 60 % 60),
            REG_HOURS => bcd(secs_of_day / 3600),
            // 1970-01-01 was a Thursday; CMOS counts Sunday as 1.
            REG_WEEKDAY => bcd(((days + 4).rem_euclid(7) + 1) as u64),
            REG_DAY => bcd(day),
            REG_MONTH => bcd(month),
            REG_YEAR => bcd(year % 100),
            REG_CENTURY => bcd(year / 100 % 100),
            REG_STATUS_A => STATUS_A_DEFAULT,
            REG_STATUS_B => STATUS_B_24H,
            REG_STATUS_C => 0,
            REG_STATUS_D => STATUS_D_VRT,
            i => self.ram[usize::from(i & 0x7f)],
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 => self.index,
            1 => self.register(self.index),
            _ => 0xff,
        };
        data.fill(v);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        match offset {
            // Bit 7 of the index port is the NMI mask; ignore it.
            0 => self.index = v & 0x7f,
            1 => self.ram[usize::from(self.index)] = v,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_reg(c: &mut Cmos, r: u8) -> u8 {
        c.write(0x70, 0, &[r]);
        let mut b = [0];
        c.read(0x70, 1, &mut b);
        b[0]
    }

    #[test]
    fn reports_time_in_bcd() {
        // 2026-11-22 13:45:09 UTC, a Sunday.
        let mut c = Cmos::with_clock(|| 1_795_355_109);
        assert_eq!(read_reg(&mut c, REG_SECONDS), 0x09);
        assert_eq!(read_reg(&mut c, REG_MINUTES), 0x45);
        assert_eq!(read_reg(&mut c, REG_HOURS), 0x13);
        assert_eq!(read_reg(&mut c, REG_DAY), 0x22);
        assert_eq!(read_reg(&mut c, REG_MONTH), 0x11);
        assert_eq!(read_reg(&mut c, REG_YEAR), 0x26);
        assert_eq!(read_reg(&mut c, REG_CENTURY), 0x20);
        assert_eq!(read_reg(&mut c, REG_WEEKDAY), 0x01);
        assert_eq!(read_reg(&mut c, REG_STATUS_A) & 0x80, 0, "UIP clear");
        assert_eq!(read_reg(&mut c, REG_STATUS_B), STATUS_B_24H);
        assert_eq!(read_reg(&mut c, REG_STATUS_D), STATUS_D_VRT);
    }

    #[test]
    fn nmi_bit_is_masked_and_ram_is_kept() {
        let mut c = Cmos::with_clock(|| 0);
        c.write(0x70, 0, &[0x80 | 0x40]);
        c.write(0x70, 1, &[0x5a]);
        assert_eq!(read_reg(&mut c, 0x40), 0x5a);
        // The epoch itself: 1970-01-01, Thursday (5).
        assert_eq!(read_reg(&mut c, REG_YEAR), 0x70);
        assert_eq!(read_reg(&mut c, REG_CENTURY), 0x19);
        assert_eq!(read_reg(&mut c, REG_WEEKDAY), 0x05);
    }
}
