//! The `isol0` bridge, host links in general, and net.ipv4.ip_forward.

use std::ffi::CString;
use std::fs;

use super::NetworkError;
use super::cmd::run;
use super::subnet::Subnet;

/// The bridge every bridged container's veth is attached to.
pub const BRIDGE: &str = "isol0";

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// The bridge's MAC address, fixed and locally administered ("isol0" in ASCII after 02). Without
/// an explicit address a bridge takes the lowest MAC among its ports, so it would change whenever
/// a container leaves, and the other containers would lose the gateway until their ARP entry for
/// it expires. It is only ever seen by the containers on this host.
const BRIDGE_MAC: &str = "02:69:73:6f:6c:30";

/// True when a link called `name` exists in the calling thread's network namespace.
pub(crate) fn link_exists(name: &str) -> bool {
    let Ok(name) = CString::new(name) else {
        return false;
    };
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// Deletes the host link `name` if it exists.
///
/// A veth also disappears on its own when its peer's namespace is destroyed (asynchronously), so a
/// failure is only an error if the link is still there afterwards.
pub(crate) fn delete_link(name: &str) -> Result<(), NetworkError> {
    if !link_exists(name) {
        return Ok(());
    }
    match run("ip", &["link", "delete", "dev", name], None) {
        Err(error) if link_exists(name) => Err(error),
        _ => Ok(()),
    }
}

/// Puts the host link `name` (a VM's tap) on the bridge and brings it up.
pub(crate) fn enslave(name: &str) -> Result<(), NetworkError> {
    let script = format!(
        "link set dev {name} master {BRIDGE}\n\
         link set dev {name} up\n"
    );
    run("ip", &["-batch", "-"], Some(&script)).map(drop)
}

/// Fails when a host interface other than the bridge already has an address in `subnet`:
/// routing the subnet to the bridge would cut the host off from that network.
pub(crate) fn check_no_overlap(subnet: &Subnet) -> Result<(), NetworkError> {
    let output = run("ip", &["-o", "-4", "addr", "show"], None)?;
    for line in output.lines() {
        // "4: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\ …"
        let mut words = line.split_whitespace();
        let interface = words.nth(1).unwrap_or_default();
        let Some(address) = words.skip_while(|w| *w != "inet").nth(1) else {
            continue;
        };
        if interface == BRIDGE {
            continue;
        }
        if Subnet::of_interface_address(address).is_some_and(|net| net.overlaps(subnet)) {
            return Err(NetworkError::SubnetOverlap {
                subnet: subnet.to_string(),
                interface: interface.to_owned(),
                address: address.to_owned(),
            });
        }
    }
    Ok(())
}

/// Creates `isol0` with the gateway address of `subnet` and brings it up.
pub(crate) fn create(subnet: &Subnet) -> Result<(), NetworkError> {
    let script = format!(
        "link add name {BRIDGE} address {BRIDGE_MAC} type bridge\n\
         addr add {gateway}/{prefix} dev {BRIDGE}\n\
         link set dev {BRIDGE} up\n",
        gateway = subnet.gateway(),
        prefix = subnet.prefix(),
    );
    run("ip", &["-batch", "-"], Some(&script)).map(drop)
}

/// net.ipv4.ip_forward, as the kernel prints it ("0" or "1").
pub(crate) fn forwarding() -> Result<String, NetworkError> {
    fs::read_to_string(IP_FORWARD)
        .map(|value| value.trim().to_owned())
        .map_err(|error| NetworkError::Sysctl {
            path: IP_FORWARD,
            error,
        })
}

pub(crate) fn set_forwarding(value: &str) -> Result<(), NetworkError> {
    fs::write(IP_FORWARD, format!("{value}\n")).map_err(|error| NetworkError::Sysctl {
        path: IP_FORWARD,
        error,
    })
}

/// `route_localnet` on the bridge: on while ports are published, so that a connection from
/// the host to 127.0.0.1 can be sent to a run (its loopback source is masqueraded); the nft
/// table drops what arrives on the bridge for 127.0.0.0/8. It goes with the bridge.
pub(crate) fn set_route_localnet(on: bool) -> Result<(), NetworkError> {
    const PATH: &str = "/proc/sys/net/ipv4/conf/isol0/route_localnet";
    fs::write(PATH, if on { "1\n" } else { "0\n" })
        .map_err(|error| NetworkError::Sysctl { path: PATH, error })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_exists_and_odd_names_do_not() {
        assert!(link_exists("lo"));
        assert!(!link_exists("isolnosuchlink"));
        assert!(!link_exists("bad\0name"));
        delete_link("isolnosuchlink").unwrap();
    }

    #[test]
    fn host_addresses_are_checked() {
        // 127.0.0.1/8 is on lo on every host: a subnet inside it must be refused. (The parser only
        // accepts private subnets, so this builds one through the interface-address path.)
        let inside_loopback = Subnet::of_interface_address("127.1.0.0/24").unwrap();
        let error = check_no_overlap(&inside_loopback).unwrap_err().to_string();
        assert!(error.contains("on host interface lo"), "{error}");
    }

    #[test]
    fn forwarding_is_readable() {
        assert!(["0", "1"].contains(&forwarding().unwrap().as_str()));
    }
}
