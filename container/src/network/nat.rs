//! NAT to the outside with nftables: the table `ip isol`, replaced atomically as a whole.

use std::fmt::Write;
use std::net::Ipv4Addr;

use super::NetworkError;
use super::cmd::run;
use super::publish::PortMapping;
use super::subnet::Subnet;

/// The nftables table isol owns (family `ip`).
pub const TABLE: &str = "isol";

/// The ruleset: masquerade what leaves the subnet through anything but the bridge, and accept
/// forwarding to and from the bridge.
///
/// With published ports (`published`: each run's address and its mappings), a DNAT rule per
/// port in the chain `publish`, reached for packets to any of the host's own addresses
/// arriving from outside (prerouting) and sent by the host itself (output). A connection from
/// the host to 127.0.0.1 leaves through the bridge with its loopback source, which
/// `route_localnet` on the bridge lets through and the postrouting masquerade rewrites to the
/// gateway's address so that the reply comes back; a run reaching a published port of the
/// bridge (its own or another's) through a host address is masqueraded the same way. The
/// chain `localnet` drops what arrives on the bridge for 127.0.0.0/8 before routing, so that
/// `route_localnet` opens no path from the runs to the host's loopback services.
///
/// Prefixed with `add table` + `delete table` so that one `nft -f` transaction replaces any
/// previous version instead of appending duplicate rules.
fn ruleset(subnet: &Subnet, bridge: &str, published: &[(Ipv4Addr, Vec<PortMapping>)]) -> String {
    let mut text = format!(
        "add table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != \"{bridge}\" masquerade\n"
    );
    let any = published.iter().any(|(_, ports)| !ports.is_empty());
    if any {
        let _ = write!(
            text,
            "\t\toifname \"{bridge}\" ip saddr 127.0.0.0/8 masquerade\n\
             \t\toifname \"{bridge}\" ip saddr {subnet} ct status dnat masquerade\n"
        );
    }
    let _ = write!(
        text,
        "\t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" accept\n\
         \t\toifname \"{bridge}\" accept\n\
         \t}}\n\
         \tchain localnet {{\n\
         \t\ttype filter hook prerouting priority raw; policy accept;\n\
         \t\tiifname \"{bridge}\" ip daddr 127.0.0.0/8 drop\n\
         \t}}\n"
    );
    if any {
        text.push_str(
            "\tchain prerouting {\n\
             \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
             \t\tfib daddr type local jump publish\n\
             \t}\n\
             \tchain output {\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             \t\tfib daddr type local jump publish\n\
             \t}\n\
             \tchain publish {\n",
        );
        for (address, ports) in published {
            for m in ports {
                let to = match m.host_ip {
                    Some(ip) => format!("ip daddr {ip} "),
                    None => String::new(),
                };
                let _ = writeln!(
                    text,
                    "\t\t{to}{} dport {} dnat to {address}:{}",
                    m.protocol.name(),
                    m.host_port,
                    m.container_port
                );
            }
        }
        text.push_str("\t}\n");
    }
    text.push_str("}\n");
    text
}

/// Installs (or replaces) the `ip isol` table, with a DNAT rule for every published port.
pub(crate) fn install(
    subnet: &Subnet,
    bridge: &str,
    published: &[(Ipv4Addr, Vec<PortMapping>)],
) -> Result<(), NetworkError> {
    run(
        "nft",
        &["-f", "-"],
        Some(&ruleset(subnet, bridge, published)),
    )
    .map(drop)
}

/// True when the table `ip isol` exists.
pub(crate) fn present() -> Result<bool, NetworkError> {
    let tables = run("nft", &["list", "tables", "ip"], None)?;
    Ok(tables
        .lines()
        .any(|line| line.split_whitespace().eq(["table", "ip", TABLE])))
}

/// Deletes the table `ip isol` if it exists.
pub(crate) fn remove() -> Result<(), NetworkError> {
    if present()? {
        run("nft", &["delete", "table", "ip", TABLE], None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_text() {
        let subnet = Subnet::parse("10.88.0.0/24").unwrap();
        let text = ruleset(&subnet, "isol0", &[]);
        assert!(text.starts_with("add table ip isol\ndelete table ip isol\ntable ip isol {"));
        assert!(text.contains("ip saddr 10.88.0.0/24 oifname != \"isol0\" masquerade"));
        assert!(text.contains("iifname \"isol0\" accept"));
        assert!(text.contains("oifname \"isol0\" accept"));
        assert!(text.contains("iifname \"isol0\" ip daddr 127.0.0.0/8 drop"));
        assert!(!text.contains("dnat"), "{text}");
        let ports = [
            PortMapping::parse("18080:8080").unwrap(),
            PortMapping::parse("127.0.0.1:5353:53/udp").unwrap(),
        ]
        .concat();
        let text = ruleset(&subnet, "isol0", &[(Ipv4Addr::new(10, 88, 0, 2), ports)]);
        assert!(
            text.contains("\t\ttcp dport 18080 dnat to 10.88.0.2:8080\n"),
            "{text}"
        );
        assert!(
            text.contains("\t\tip daddr 127.0.0.1 udp dport 5353 dnat to 10.88.0.2:53\n"),
            "{text}"
        );
        assert!(text.contains("oifname \"isol0\" ip saddr 127.0.0.0/8 masquerade"));
        assert_eq!(text.matches("fib daddr type local jump publish").count(), 2);
    }
}
