//! CPU and memory-node lists, the format of the kernel's `cpuset.cpus` / `cpuset.mems`
//! (`0-3,8,10-11`): what docker's `--cpuset-cpus`, an OCI config's `linux.resources.cpu.cpus`
//! and `mems` give.
//!
//! A list is held as a bitmap of [`CpuList::MAX`] entries, so that [`super::Limits`] stays
//! `Copy`, and written back in the kernel's canonical form (ranges, ascending), whatever the
//! order and overlaps the input had.

use std::fmt;

use super::CgroupError;

/// A set of CPU (or memory node) numbers, 0 to [`CpuList::MAX`] − 1.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuList {
    bits: [u64; CpuList::WORDS],
}

impl CpuList {
    const WORDS: usize = 16;
    /// One more than the largest number a list may name (1024, as many as x86_64's default
    /// `NR_CPUS` covers in distribution kernels of small hosts; a larger one is refused).
    pub const MAX: u32 = (Self::WORDS * 64) as u32;

    /// Parses the kernel's list format (`0-3,8`); `what` names the field in the error. An
    /// empty list is refused (the kernel would leave the cgroup without CPUs).
    pub fn parse(what: &'static str, text: &str) -> Result<CpuList, CgroupError> {
        let invalid = |reason| CgroupError::InvalidLimit {
            limit: what,
            value: format!("{text:?}"),
            reason,
        };
        let number = |s: &str| -> Result<u32, CgroupError> {
            let s = s.trim();
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(
                    "give numbers and ranges separated by commas, e.g. 0-3,6",
                ));
            }
            match s.parse::<u32>() {
                Ok(n) if n < Self::MAX => Ok(n),
                _ => Err(invalid("isol takes numbers up to 1023")),
            }
        };
        let mut list = CpuList::default();
        for part in text.trim().split(',') {
            let (first, last) = match part.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                None => {
                    let n = number(part)?;
                    (n, n)
                }
            };
            if first > last {
                return Err(invalid("a range must go upwards, e.g. 2-5"));
            }
            for n in first..=last {
                list.insert(n);
            }
        }
        Ok(list)
    }

    fn insert(&mut self, n: u32) {
        self.bits[(n / 64) as usize] |= 1 << (n % 64);
    }

    /// True when `n` is in the list.
    pub fn contains(&self, n: u32) -> bool {
        n < Self::MAX && self.bits[(n / 64) as usize] & (1 << (n % 64)) != 0
    }

    /// True when every number of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuList) -> bool {
        self.bits.iter().zip(&other.bits).all(|(a, b)| a & !b == 0)
    }

    /// The numbers, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..Self::MAX).filter(|n| self.contains(*n))
    }
}

impl fmt::Display for CpuList {
    /// The kernel's canonical form: ascending ranges, `0-3,8`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut n = 0;
        while n < Self::MAX {
            if !self.contains(n) {
                n += 1;
                continue;
            }
            let start = n;
            while n + 1 < Self::MAX && self.contains(n + 1) {
                n += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == n {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{n}")?;
            }
            n += 1;
        }
        Ok(())
    }
}

impl fmt::Debug for CpuList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CpuList({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_to_the_kernels_canonical_form() {
        for (input, canonical) in [
            ("0", "0"),
            ("0-3", "0-3"),
            ("3,1,2,0", "0-3"),
            (" 0-1, 4 ,6-7", "0-1,4,6-7"),
            ("5-5", "5"),
            ("0-2,1-4", "0-4"),
            ("63-64", "63-64"),
            ("1023", "1023"),
        ] {
            let list = CpuList::parse("cpuset cpus", input).unwrap();
            assert_eq!(list.to_string(), canonical, "{input}");
            assert_eq!(CpuList::parse("x", canonical).unwrap(), list);
        }
        for bad in ["", ",", "a", "1-", "-1", "3-1", "1024", "0x1", "1,,2", "-"] {
            let err = CpuList::parse("cpuset cpus", bad).unwrap_err().to_string();
            assert!(err.starts_with("Invalid cpuset cpus limit"), "{bad}: {err}");
        }
    }

    #[test]
    fn cpu_lists_compare_as_sets() {
        let a = CpuList::parse("x", "1,3").unwrap();
        let b = CpuList::parse("x", "0-3").unwrap();
        assert!(a.is_subset(&b) && !b.is_subset(&a));
        assert_eq!(a.iter().collect::<Vec<_>>(), [1, 3]);
        assert!(b.contains(0) && !b.contains(4) && !b.contains(5000));
    }
}
