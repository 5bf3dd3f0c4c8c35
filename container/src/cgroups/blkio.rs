//! Block IO and huge page limits (an OCI config's `linux.resources.blockIO` and
//! `hugepageLimits`, docker's `--blkio-weight`, `--device-read-bps`…): v1's `blkio` and
//! `hugetlb` hierarchies, v2's `io` and `hugetlb` controllers, written as runc writes them.
//!
//! - **weight** (10–1000): v1 `blkio.bfq.weight` (the BFQ scheduler), else `blkio.weight`
//!   (CFQ, before Linux 5.0); v2 `io.bfq.weight`, else `io.weight` `default N` by runc's map
//!   (`1 + (w-10)×9999/990`). A device's weight: the same files, `MAJ:MIN W`.
//! - **throttles** (bytes or IOs a second, per device): v1 `blkio.throttle.{read,write}_
//!   {bps,iops}_device` `MAJ:MIN RATE`; v2 `io.max` `MAJ:MIN rbps=… wbps=… riops=… wiops=…`.
//!   A rate of 0 removes the device's limit (v2 `max`).
//! - **huge pages** (bytes of a page size, `2MB`, `1GB`): v1 `hugetlb.<size>.limit_in_bytes`,
//!   v2 `hugetlb.<size>.max`.
//!
//! A limit whose file the host lacks (no blkio hierarchy, no BFQ or CFQ scheduler for a
//! weight, no hugetlb controller where isol looks, a page size the host has not) is refused
//! by name before anything is written.

use std::path::{Path, PathBuf};

use super::{CgroupError, write_file};

/// A device's block IO weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceWeight {
    pub major: u64,
    pub minor: u64,
    pub weight: u16,
}

/// A device's throttle: at most `rate` bytes (or IOs) a second; 0 removes the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRate {
    pub major: u64,
    pub minor: u64,
    pub rate: u64,
}

/// Block IO limits; empty: none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockIo {
    /// The cgroup's weight, 10–1000 (the kernel's default 100… or 500 with BFQ's scale).
    pub weight: Option<u16>,
    pub weight_device: Vec<DeviceWeight>,
    pub read_bps: Vec<DeviceRate>,
    pub write_bps: Vec<DeviceRate>,
    pub read_iops: Vec<DeviceRate>,
    pub write_iops: Vec<DeviceRate>,
}

impl BlockIo {
    pub fn is_empty(&self) -> bool {
        *self == BlockIo::default()
    }

    fn throttles(&self) -> [(&[DeviceRate], &'static str, &'static str); 4] {
        [
            (&self.read_bps, "blkio.throttle.read_bps_device", "rbps"),
            (&self.write_bps, "blkio.throttle.write_bps_device", "wbps"),
            (&self.read_iops, "blkio.throttle.read_iops_device", "riops"),
            (
                &self.write_iops,
                "blkio.throttle.write_iops_device",
                "wiops",
            ),
        ]
    }

    fn has_throttles(&self) -> bool {
        self.throttles().iter().any(|(l, _, _)| !l.is_empty())
    }

    fn has_weights(&self) -> bool {
        self.weight.is_some() || !self.weight_device.is_empty()
    }
}

/// At most `limit` bytes of huge pages of `page_size` (`2MB`, `1GB`: the kernel's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugepageLimit {
    pub page_size: String,
    pub limit: u64,
}

/// The weights the kernel takes (blkio and BFQ).
const WEIGHT_RANGE: std::ops::RangeInclusive<u16> = 10..=1000;

/// Checks what needs no cgroup: the weights' range and the page sizes the host has.
pub(crate) fn validate(io: &BlockIo, hugepages: &[HugepageLimit]) -> Result<(), CgroupError> {
    let weights = io
        .weight
        .iter()
        .chain(io.weight_device.iter().map(|d| &d.weight));
    if let Some(w) = weights.into_iter().find(|w| !WEIGHT_RANGE.contains(w)) {
        return Err(CgroupError::InvalidLimit {
            limit: "block IO weight",
            value: w.to_string(),
            reason: "the kernel accepts 10 to 1000",
        });
    }
    let sizes = host_page_sizes();
    for h in hugepages {
        if !sizes.contains(&h.page_size) {
            return Err(CgroupError::Unsupported(format!(
                "Huge page size {:?} is not one of this host's ({}); give one of them",
                h.page_size,
                if sizes.is_empty() {
                    "none".to_string()
                } else {
                    sizes.join(", ")
                }
            )));
        }
    }
    Ok(())
}

/// The host's huge page sizes as the cgroup files name them (`2MB`, `1GB`), from
/// /sys/kernel/mm/hugepages (`hugepages-2048kB`).
pub fn host_page_sizes() -> Vec<String> {
    let mut sizes: Vec<u64> = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()
        })
        .collect();
    sizes.sort_unstable();
    sizes.into_iter().map(page_size_name).collect()
}

/// `2048` kB → `2MB`, `1048576` → `1GB`, `64` → `64KB`, as the kernel names the files.
pub fn page_size_name(kb: u64) -> String {
    if kb >= 1 << 20 && kb.is_multiple_of(1 << 20) {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 && kb.is_multiple_of(1 << 10) {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

fn missing(limit: &str, root: &Path, hint: &str) -> CgroupError {
    CgroupError::Unsupported(format!(
        "The {limit} limit cannot be set: {hint} under {}; drop the limit",
        root.display()
    ))
}

/// The first of `names` in `dir` that exists.
fn first_of(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

/// v1: `blkio` and `hugetlb` are the hierarchies' directories of the cgroup, where mounted.
/// Everything is checked before anything is written.
pub(crate) fn apply_v1(
    io: &BlockIo,
    hugepages: &[HugepageLimit],
    blkio: Option<&Path>,
    hugetlb: Option<&Path>,
    root: &Path,
) -> Result<(), CgroupError> {
    let mut writes: Vec<(PathBuf, String)> = Vec::new();
    if !io.is_empty() {
        let Some(dir) = blkio else {
            return Err(missing(
                "block IO",
                root,
                "this host mounts no blkio hierarchy",
            ));
        };
        if io.has_weights() {
            let Some(file) = first_of(dir, &["blkio.bfq.weight", "blkio.weight"]) else {
                return Err(missing(
                    "block IO weight",
                    root,
                    "this host's blkio controller has no weight (blkio.bfq.weight needs the BFQ IO scheduler, blkio.weight CFQ's)",
                ));
            };
            let device_file = file.with_file_name(format!(
                "{}_device",
                file.file_name().unwrap().to_string_lossy()
            ));
            if let Some(w) = io.weight {
                writes.push((file.clone(), w.to_string()));
            }
            for d in &io.weight_device {
                writes.push((
                    device_file.clone(),
                    format!("{}:{} {}", d.major, d.minor, d.weight),
                ));
            }
        }
        for (list, file, _) in io.throttles() {
            for d in list {
                writes.push((
                    dir.join(file),
                    format!("{}:{} {}", d.major, d.minor, d.rate),
                ));
            }
        }
        if io.has_throttles() && !dir.join("blkio.throttle.read_bps_device").exists() {
            return Err(missing(
                "block IO throttle",
                root,
                "this host's blkio controller has no throttle files",
            ));
        }
    }
    if !hugepages.is_empty() {
        let Some(dir) = hugetlb else {
            return Err(missing(
                "huge page",
                root,
                "this host mounts no cgroup v1 hugetlb hierarchy (a hybrid host may hold hugetlb in its unified cgroup2 hierarchy, which isol does not use beside v1)",
            ));
        };
        for h in hugepages {
            writes.push((
                dir.join(format!("hugetlb.{}.limit_in_bytes", h.page_size)),
                h.limit.to_string(),
            ));
        }
    }
    write_all(&writes)
}

/// v2: the `io` and `hugetlb` controllers' files in the cgroup's directory.
pub(crate) fn apply_v2(
    io: &BlockIo,
    hugepages: &[HugepageLimit],
    dir: &Path,
    root: &Path,
) -> Result<(), CgroupError> {
    let mut writes: Vec<(PathBuf, String)> = Vec::new();
    if io.has_weights() {
        let bfq = dir.join("io.bfq.weight");
        if bfq.exists() {
            if let Some(w) = io.weight {
                writes.push((bfq.clone(), w.to_string()));
            }
            for d in &io.weight_device {
                writes.push((bfq.clone(), format!("{}:{} {}", d.major, d.minor, d.weight)));
            }
        } else if dir.join("io.weight").exists() && io.weight_device.is_empty() {
            if let Some(w) = io.weight {
                writes.push((dir.join("io.weight"), format!("default {}", io_weight(w))));
            }
        } else {
            return Err(missing(
                "block IO weight",
                root,
                if io.weight_device.is_empty() {
                    "the cgroup has neither io.bfq.weight (the BFQ IO scheduler) nor io.weight (the io controller with iocost)"
                } else {
                    "a device's weight needs io.bfq.weight (the BFQ IO scheduler on that device), which the cgroup lacks"
                },
            ));
        }
    }
    if io.has_throttles() {
        let max = dir.join("io.max");
        if !max.exists() {
            return Err(missing(
                "block IO throttle",
                root,
                "the cgroup has no io.max (the io controller is not enabled for it)",
            ));
        }
        for (list, _, key) in io.throttles() {
            for d in list {
                let rate = if d.rate == 0 {
                    "max".to_string()
                } else {
                    d.rate.to_string()
                };
                writes.push((max.clone(), format!("{}:{} {key}={rate}", d.major, d.minor)));
            }
        }
    }
    for h in hugepages {
        let file = dir.join(format!("hugetlb.{}.max", h.page_size));
        if !file.exists() {
            return Err(missing(
                "huge page",
                root,
                "the cgroup has no hugetlb files (the hugetlb controller is not enabled for it)",
            ));
        }
        writes.push((file, h.limit.to_string()));
    }
    write_all(&writes)
}

/// v2's `io.weight` (1–10000, default 100) for a blkio weight (10–1000), runc's map.
pub fn io_weight(blkio: u16) -> u64 {
    1 + (u64::from(blkio.clamp(10, 1000)) - 10) * 9999 / 990
}

fn write_all(writes: &[(PathBuf, String)]) -> Result<(), CgroupError> {
    for (path, value) in writes {
        write_file(path, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_and_page_sizes_map_as_runc_maps_them() {
        assert_eq!(io_weight(10), 1);
        assert_eq!(io_weight(1000), 10000);
        assert_eq!(io_weight(500), 4950);
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1_048_576), "1GB");
        assert_eq!(page_size_name(64), "64KB");
        let e = validate(
            &BlockIo {
                weight: Some(5),
                ..BlockIo::default()
            },
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("10 to 1000"), "{e}");
        let e = validate(
            &BlockIo::default(),
            &[HugepageLimit {
                page_size: "3MB".into(),
                limit: 1,
            }],
        )
        .unwrap_err();
        assert!(e.to_string().contains("\"3MB\""), "{e}");
    }

    #[test]
    fn v1_writes_throttles_and_refuses_what_the_host_lacks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for f in [
            "blkio.throttle.read_bps_device",
            "blkio.throttle.write_bps_device",
            "blkio.throttle.read_iops_device",
            "blkio.throttle.write_iops_device",
        ] {
            std::fs::write(dir.join(f), "").unwrap();
        }
        let io = BlockIo {
            read_bps: vec![DeviceRate {
                major: 254,
                minor: 0,
                rate: 1048576,
            }],
            write_iops: vec![DeviceRate {
                major: 8,
                minor: 16,
                rate: 100,
            }],
            ..BlockIo::default()
        };
        apply_v1(&io, &[], Some(dir), None, dir).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("blkio.throttle.read_bps_device"), "254:0 1048576");
        assert_eq!(read("blkio.throttle.write_iops_device"), "8:16 100");
        // No weight file (no BFQ, no CFQ): refused, nothing written.
        std::fs::write(dir.join("blkio.throttle.read_bps_device"), "").unwrap();
        let weighted = BlockIo {
            weight: Some(300),
            ..io.clone()
        };
        let e = apply_v1(&weighted, &[], Some(dir), None, dir).unwrap_err();
        assert!(e.to_string().contains("BFQ"), "{e}");
        assert_eq!(read("blkio.throttle.read_bps_device"), "");
        let e = apply_v1(&io, &[], None, None, dir).unwrap_err();
        assert!(e.to_string().contains("no blkio hierarchy"), "{e}");
        let huge = [HugepageLimit {
            page_size: "2MB".into(),
            limit: 4194304,
        }];
        let e = apply_v1(&BlockIo::default(), &huge, None, None, dir).unwrap_err();
        assert!(e.to_string().contains("hugetlb"), "{e}");
        std::fs::write(dir.join("hugetlb.2MB.limit_in_bytes"), "").unwrap();
        apply_v1(&BlockIo::default(), &huge, None, Some(dir), dir).unwrap();
        assert_eq!(read("hugetlb.2MB.limit_in_bytes"), "4194304");
    }

    #[test]
    fn v2_writes_io_max_and_weights() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("io.max"), "").unwrap();
        std::fs::write(dir.join("io.weight"), "").unwrap();
        let io = BlockIo {
            weight: Some(500),
            write_bps: vec![DeviceRate {
                major: 254,
                minor: 0,
                rate: 0,
            }],
            ..BlockIo::default()
        };
        apply_v2(&io, &[], dir, dir).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
        assert_eq!(read("io.max"), "254:0 wbps=max");
        assert_eq!(read("io.weight"), "default 4950");
        let per_device = BlockIo {
            weight_device: vec![DeviceWeight {
                major: 254,
                minor: 0,
                weight: 200,
            }],
            ..BlockIo::default()
        };
        let e = apply_v2(&per_device, &[], dir, dir).unwrap_err();
        assert!(e.to_string().contains("io.bfq.weight"), "{e}");
        let huge = [HugepageLimit {
            page_size: "2MB".into(),
            limit: 2097152,
        }];
        let e = apply_v2(&BlockIo::default(), &huge, dir, dir).unwrap_err();
        assert!(e.to_string().contains("hugetlb"), "{e}");
    }
}
