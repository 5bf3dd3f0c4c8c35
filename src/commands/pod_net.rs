//! A VM on a pod's network (`isol run --backend kvm --network ns:PATH`, and isol-runc's kvm
//! backend with a network namespace joined by path): the VM's tap made inside the pod's
//! namespace and tc-redirected to and from its interface, whose MAC, address and gateway the
//! guest takes (`isol_container::network::pod`, docs/devices.md "On a pod's network").

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use isol_container::network::pod::PodAttachment;
use isol_vmm::launch::LaunchNet;

/// Attaches run `id`'s VM to the pod network of the namespace at `path`, recording it under
/// `state_root`: the launch's network (its `pod` record, which `isol-vmm` releases after the
/// VM), the tap's descriptor (to be kept across the exec of `isol-vmm`), and the attachment,
/// released on drop should the VM never run, else handed over with the exec.
pub fn attach(
    path: &Path,
    state_root: PathBuf,
    id: &str,
    masked_features: u64,
) -> anyhow::Result<(LaunchNet, OwnedFd, PodAttachment)> {
    let (pod, tap) =
        isol_container::network::pod::attach_vm_to_netns(id, &state_root, path, |name| {
            isol_devices::virtio::net::Tap::create(name).map_err(|e| e.to_string())
        })?;
    let c = pod.config();
    let launch = LaunchNet {
        tap_fd: tap.as_raw_fd(),
        tap: tap.name().to_owned(),
        mac: c.mac,
        address: c.address,
        prefix: c.prefix,
        gateway: c.gateway,
        state_root,
        ports: Vec::new(),
        pod: Some(pod.record().to_owned()),
        masked_features,
    };
    Ok((launch, tap.into_fd(), pod))
}
