//! Dropping to docker's default capability set.
//!
//! The container keeps the 14 capabilities docker grants by default ([`DEFAULT`]); everything
//! else leaves the bounding set, so nothing the workload execs can ever get it back. Permitted and
//! effective become exactly the default set; inheritable and ambient become empty.
//!
//! Inheritable is empty on purpose, as in docker ≥ 20.10.14 and runc ≥ 1.1.1 (CVE-2022-24769):
//! a non-empty inheritable set would let a non-root workload gain those capabilities by executing
//! a file that carries inheritable file capabilities. With inheritable and ambient empty, a
//! workload running as a non-root uid ends up with no capabilities after exec, which is docker's
//! behaviour.
//!
//! Everything here is raw `prctl`/`capset`, without allocation, because it runs in the cloned
//! child just before exec.

use caps::Capability;
use nix::errno::Errno;

use super::SecurityError;

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The capabilities in `caps` as a bit mask (bit n = capability number n), the format of the
/// `Cap*` lines of `/proc/<pid>/status`.
pub const fn mask(caps: &[Capability]) -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < caps.len() {
        mask |= 1u64 << (caps[i] as u8);
        i += 1;
    }
    mask
}

/// [`DEFAULT`] as a bit mask: `0x00000000a80425fb`.
pub const DEFAULT_MASK: u64 = mask(&DEFAULT);

/// Every capability this crate knows by name (up to `CAP_CHECKPOINT_RESTORE`), as a mask: what
/// `--cap-add ALL` grants.
pub fn all_mask() -> u64 {
    caps::all().iter().fold(0, |m, c| m | c.bitmask())
}

/// A capability name as docker takes it: any case, with or without `CAP_`; `None` if unknown.
pub fn by_name(name: &str) -> Option<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    full.parse().ok()
}

/// A capability name `--cap-add`/`--cap-drop` did not know.
#[derive(Debug, thiserror::Error)]
#[error(
    "Unknown capability {0:?}; give a name from capabilities(7) such as NET_ADMIN or CAP_SYS_PTRACE, or ALL"
)]
pub struct UnknownCapability(pub String);

/// The capability set of docker's `--cap-add`/`--cap-drop` (moby's `TweakCapabilities`), starting
/// from [`DEFAULT`]: `--cap-add ALL` grants everything but the drops; else `--cap-drop ALL`
/// keeps only the adds; else the default set less the drops, plus the adds.
pub fn tweak(add: &[String], drop: &[String]) -> Result<u64, UnknownCapability> {
    let is_all = |n: &String| n.trim().eq_ignore_ascii_case("ALL");
    let masks = |names: &[String]| -> Result<u64, UnknownCapability> {
        names.iter().filter(|n| !is_all(n)).try_fold(0, |m, n| {
            by_name(n)
                .map(|c| m | c.bitmask())
                .ok_or_else(|| UnknownCapability(n.clone()))
        })
    };
    let (added, dropped) = (masks(add)?, masks(drop)?);
    Ok(if add.iter().any(is_all) {
        all_mask() & !dropped
    } else if drop.iter().any(is_all) {
        added
    } else {
        (DEFAULT_MASK & !dropped) | added
    })
}

/// Drops the calling thread to docker's default capability set: see the module documentation.
///
/// Call it while the process still runs as root (it needs `CAP_SETPCAP` in the effective set to
/// shrink the bounding set), after `no_new_privs` and before switching to the workload's uid.
pub fn drop_to_default() -> Result<(), SecurityError> {
    drop_to(DEFAULT_MASK)
}

/// Drops the calling thread to the capabilities in `keep` (a [`mask`]): bounding set reduced to
/// `keep`, permitted and effective set to `keep`, inheritable and ambient cleared.
pub fn drop_to(keep: u64) -> Result<(), SecurityError> {
    // The bounding set first: dropping from it needs CAP_SETPCAP in the effective set, which the
    // capset below could remove when `keep` lacks it.
    drop_bounding_to(keep)?;
    capset(keep, keep, 0)
}

/// Gives the calling thread the inheritable set `inheritable` and raises `ambient` into its
/// ambient set, keeping its effective and permitted sets: an OCI config's own inheritable and
/// ambient sets (isol's own runs keep both empty, see the module documentation). Call it after
/// [`drop_to`] (which clears both) and the uid switch; `inheritable` must lie within the
/// bounding set and `ambient` within permitted and inheritable, or the kernel refuses.
pub fn set_inheritable_ambient(inheritable: u64, ambient: u64) -> Result<(), SecurityError> {
    if inheritable == 0 && ambient == 0 {
        return Ok(());
    }
    let (effective, permitted, _) = current()?;
    capset(effective, permitted, inheritable)?;
    for cap in 0..64u8 {
        if ambient & (1u64 << cap) == 0 {
            continue;
        }
        // SAFETY: PR_CAP_AMBIENT_RAISE takes only integer arguments and touches no memory of ours.
        let ret = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                libc::c_ulong::from(cap),
                0,
                0,
            )
        };
        Errno::result(ret).map_err(|errno| SecurityError::AmbientRaise { cap, errno })?;
    }
    Ok(())
}

/// Drops the calling thread's bounding set to `keep` (ambient and inheritable cleared) while its
/// permitted and effective sets become `keep | extra`: the bounding set is final, and the
/// thread still holds `extra` (CAP_SETUID, CAP_SETGID) for the steps before it drops those too,
/// or loses them with every other capability at a change to a non-root uid. Dropping from the
/// bounding set removes nothing from the permitted set, so the order works.
pub fn drop_bounding_holding(keep: u64, extra: u64) -> Result<(), SecurityError> {
    drop_bounding_to(keep)?;
    capset(keep | extra, keep | extra, 0)
}

/// Empties the calling thread's bounding, ambient and inheritable sets and leaves its permitted
/// and effective sets as they are: the thread keeps its privileges for now, but once a change
/// to a non-root uid clears those sets nothing can bring a capability back, and threads it
/// starts afterwards inherit the empty sets (the VMM's jail: it drops the bounding set before
/// it starts any thread, and its uid later, in every thread at once).
pub fn drop_bounding() -> Result<(), SecurityError> {
    drop_bounding_to(0)?;
    let (effective, permitted, _) = current()?;
    capset(effective, permitted, 0)
}

/// The bounding set reduced to `keep`, and the ambient set cleared.
fn drop_bounding_to(keep: u64) -> Result<(), SecurityError> {
    for cap in 0..64u8 {
        if keep & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_READ takes only integer arguments and touches no memory of ours.
        let present =
            unsafe { libc::prctl(libc::PR_CAPBSET_READ, libc::c_ulong::from(cap), 0, 0, 0) };
        match Errno::result(present) {
            // The kernel has no capability with this number, nor any higher one.
            Err(Errno::EINVAL) => break,
            Err(errno) => return Err(SecurityError::BoundingSetDrop { cap, errno }),
            Ok(0) => continue,
            Ok(_) => {}
        }
        // SAFETY: PR_CAPBSET_DROP takes only integer arguments and touches no memory of ours.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        Errno::result(ret).map_err(|errno| SecurityError::BoundingSetDrop { cap, errno })?;
    }

    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes only integer arguments and touches no memory of ours.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    Errno::result(ret).map_err(SecurityError::AmbientClear)?;
    Ok(())
}

/// `struct __user_cap_header_struct` from `<linux/capability.h>`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct` from `<linux/capability.h>`; version 3 uses two of them, the
/// low and the high 32 capabilities.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Sets the effective, permitted and inheritable sets of the calling thread.
fn capset(effective: u64, permitted: u64, inheritable: u64) -> Result<(), SecurityError> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    // The `as u32` casts split each 64-bit set into its low and high halves.
    let data = [
        CapData {
            effective: effective as u32,
            permitted: permitted as u32,
            inheritable: inheritable as u32,
        },
        CapData {
            effective: (effective >> 32) as u32,
            permitted: (permitted >> 32) as u32,
            inheritable: (inheritable >> 32) as u32,
        },
    ];
    // SAFETY: `header` and `data` have the kernel's layout for version 3 (one header, two data
    // structs), both outlive the call, and the kernel only reads `data` (it may write the
    // preferred version into `header`, which is mutable).
    let ret = unsafe { libc::syscall(libc::SYS_capset, &raw mut header, data.as_ptr()) };
    Errno::result(ret).map(drop).map_err(SecurityError::Capset)
}

/// The effective, permitted and inheritable sets of the calling thread, as masks.
pub fn current() -> Result<(u64, u64, u64), SecurityError> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `header` and `data` have the kernel's layout for version 3 and outlive the call;
    // the kernel writes at most two data structs.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr()) };
    Errno::result(ret).map_err(SecurityError::Capset)?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mask_matches_docker() {
        // Docker's documented default: CapEff 00000000a80425fb for a root container.
        assert_eq!(DEFAULT_MASK, 0x0000_0000_a804_25fb);
        assert_eq!(DEFAULT_MASK.count_ones() as usize, DEFAULT.len());
    }

    #[test]
    fn default_set_lacks_dangerous_capabilities() {
        for cap in [
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_SYS_PTRACE,
            Capability::CAP_SYS_MODULE,
            Capability::CAP_NET_ADMIN,
            Capability::CAP_DAC_READ_SEARCH,
            Capability::CAP_SYS_RAWIO,
            Capability::CAP_BPF,
        ] {
            assert_eq!(
                DEFAULT_MASK & cap.bitmask(),
                0,
                "{cap} must not be in the default set"
            );
        }
    }

    #[test]
    fn default_set_names_for_docs() {
        let names: Vec<String> = DEFAULT.iter().map(ToString::to_string).collect();
        assert!(names.contains(&"CAP_NET_BIND_SERVICE".to_string()));
        assert!(names.iter().all(|n| n.starts_with("CAP_")));
    }

    #[test]
    fn cap_add_and_drop_follow_docker() {
        let v = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let net_admin = Capability::CAP_NET_ADMIN.bitmask();
        let chown = Capability::CAP_CHOWN.bitmask();
        assert_eq!(tweak(&[], &[]).unwrap(), DEFAULT_MASK);
        assert_eq!(
            tweak(&v(&["net_admin"]), &v(&["CAP_CHOWN"])).unwrap(),
            (DEFAULT_MASK | net_admin) & !chown
        );
        assert_eq!(tweak(&[], &v(&["all"])).unwrap(), 0);
        assert_eq!(tweak(&v(&["NET_ADMIN"]), &v(&["ALL"])).unwrap(), net_admin);
        assert_eq!(
            tweak(&v(&["ALL"]), &v(&["chown"])).unwrap(),
            all_mask() & !chown
        );
        // Adding wins over dropping the same capability, as in docker's default branch.
        assert_eq!(tweak(&v(&["CHOWN"]), &v(&["CHOWN"])).unwrap(), DEFAULT_MASK);
        assert!(all_mask() & Capability::CAP_CHECKPOINT_RESTORE.bitmask() != 0);
        let e = tweak(&v(&["NET_ADMINN"]), &[]).unwrap_err().to_string();
        assert!(e.starts_with("Unknown capability \"NET_ADMINN\"; "), "{e}");
        assert!(tweak(&[], &v(&["bogus"])).is_err());
    }

    #[test]
    fn current_reads_back() {
        let (eff, perm, _) = current().unwrap();
        assert_eq!(eff & !perm, 0, "effective must be a subset of permitted");
    }
}
