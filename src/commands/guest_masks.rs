//! The paths of /proc and /sys a VM's guest init masks or makes read-only before the workload
//! runs: the container backend's own (`isol_container::MASKED_PATHS`, `READONLY_PATHS`,
//! runc's defaults), and more beyond them (an OCI config's), so that one set of flags means
//! one set of permissions on both backends (`isol run --backend kvm` and `isol-runc`'s kvm
//! backend alike).

use std::ffi::OsString;
use std::path::PathBuf;

/// The launch's masked and read-only paths: isol's own, then `masked` and `readonly`.
pub fn launch(masked: &[PathBuf], readonly: &[PathBuf]) -> isol_vmm::launch::LaunchOci {
    let paths = |own: &[&str], more: &[PathBuf]| {
        own.iter()
            .map(OsString::from)
            .chain(more.iter().map(|p| p.clone().into_os_string()))
            .collect()
    };
    isol_vmm::launch::LaunchOci {
        masked_paths: paths(isol_container::MASKED_PATHS, masked),
        readonly_paths: paths(isol_container::READONLY_PATHS, readonly),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isol_s_own_paths_come_first_then_the_given_ones() {
        let l = launch(&[PathBuf::from("/proc/x")], &[]);
        let own = isol_container::MASKED_PATHS.len();
        assert_eq!(l.masked_paths.len(), own + 1);
        assert!(
            l.masked_paths[..own]
                .iter()
                .zip(isol_container::MASKED_PATHS)
                .all(|(a, b)| a == b)
        );
        assert_eq!(l.masked_paths[own], "/proc/x");
        assert!(l.masked_paths.iter().any(|p| p == "/sys/firmware"));
        assert_eq!(
            l.readonly_paths,
            isol_container::READONLY_PATHS
                .iter()
                .map(OsString::from)
                .collect::<Vec<_>>()
        );
        assert!(l.sysctl.is_empty() && l.umask.is_none());
    }
}
