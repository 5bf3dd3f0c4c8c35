//! The per-container veth pair: host side on `isol0`, peer `eth0` inside the container's netns.
//!
//! In-namespace configuration runs the *host's* `ip` under `nsenter --net=/proc/<pid>/ns/net`:
//! nsenter enters only the network namespace, so `ip` and its libraries come from the host and
//! nothing in the container image is used or trusted. This was chosen over `ip -n NAME` (which
//! needs a name under /run/netns that a killed isol would leak) and over setns(2) in a dedicated
//! thread (which would work, but puts one of isol's own threads into a namespace the container
//! controls, and the exact command in an error could not be replayed by hand). The cost is one
//! extra exec per bridged container start.
//!
//! `/proc/<pid>/ns/net` is stable for the duration: the runtime attaches while the child is an
//! unreaped child blocked on its sync pipe, so the pid cannot be reused.

use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;

use super::NetworkError;
use super::bridge::BRIDGE;
use super::cmd::run;
use super::subnet::Subnet;

/// The prefix of every host-side veth name.
pub const VETH_PREFIX: &str = "isolv";
/// The name of the container's interface.
pub const CONTAINER_IF: &str = "eth0";

/// The host-side veth name for container `id`: `isolv` + the first 8 characters of the id.
pub(crate) fn host_name(id: &str) -> Result<String, NetworkError> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(NetworkError::InvalidId { id: id.to_owned() });
    }
    Ok(format!("{VETH_PREFIX}{}", &id[..id.len().min(8)]))
}

/// The path of `pid`'s network namespace, after checking it is not isol's own: configuring the
/// container side in the host namespace would rename host links and replace the host's route.
pub(crate) fn netns_of(pid: i32) -> Result<String, NetworkError> {
    let path = format!("/proc/{pid}/ns/net");
    let theirs = fs::metadata(&path).map_err(|_| NetworkError::NoNetns { pid })?;
    let ours = fs::metadata("/proc/self/ns/net").map_err(|_| NetworkError::NoNetns {
        pid: std::process::id() as i32,
    })?;
    if pid <= 0 || (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Err(NetworkError::SharedNetns { pid });
    }
    Ok(path)
}

/// Creates the pair with the peer directly inside `pid`'s namespace as `eth0` (so no temporary
/// name ever exists on the host) with the MAC address `mac` (`super::mac_of` its address, so
/// that `isol inspect` can name it without entering the namespace), attaches the host side
/// to the bridge and brings it up.
pub(crate) fn create(host: &str, pid: i32, mac: [u8; 6]) -> Result<(), NetworkError> {
    let mac = super::format_mac(mac);
    let script = format!(
        "link add name {host} type veth peer name {CONTAINER_IF} address {mac} netns {pid}\n\
         link set dev {host} master {BRIDGE}\n\
         link set dev {host} up\n"
    );
    run("ip", &["-batch", "-"], Some(&script)).map(drop)
}

/// Inside the container's namespace: address, up, loopback up, default route via the gateway.
pub(crate) fn configure_peer(
    netns: &str,
    address: Ipv4Addr,
    subnet: &Subnet,
) -> Result<(), NetworkError> {
    let script = format!(
        "addr add {address}/{prefix} dev {CONTAINER_IF}\n\
         link set dev {CONTAINER_IF} up\n\
         link set dev lo up\n\
         route add default via {gateway} dev {CONTAINER_IF}\n",
        prefix = subnet.prefix(),
        gateway = subnet.gateway(),
    );
    let net = format!("--net={netns}");
    run("nsenter", &[&net, "ip", "-batch", "-"], Some(&script)).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(host_name("0123456789abcdef").unwrap(), "isolv01234567");
        assert_eq!(host_name("abc").unwrap(), "isolvabc");
        assert!(host_name("0123456789abcdef").unwrap().len() <= 15);
        for bad in ["", "a b", "../x", "é", "a-b"] {
            let error = host_name(bad).unwrap_err().to_string();
            assert!(error.starts_with("Container id"), "{error}");
        }
    }

    #[test]
    fn own_netns_is_refused() {
        let error = netns_of(std::process::id() as i32).unwrap_err().to_string();
        assert!(error.contains("shares isol's network namespace"), "{error}");
        assert!(matches!(netns_of(0), Err(NetworkError::NoNetns { .. })));
        assert!(matches!(netns_of(-5), Err(NetworkError::NoNetns { .. })));
    }
}
