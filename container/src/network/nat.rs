//! NAT to the outside with nftables: the table `ip isol`, replaced atomically as a whole.

use super::NetworkError;
use super::cmd::run;
use super::subnet::Subnet;

/// The nftables table isol owns (family `ip`).
pub const TABLE: &str = "isol";

/// The ruleset: masquerade what leaves the subnet through anything but the bridge, and accept
/// forwarding to and from the bridge.
///
/// Prefixed with `add table` + `delete table` so that one `nft -f` transaction replaces any
/// previous version instead of appending duplicate rules.
fn ruleset(subnet: &Subnet, bridge: &str) -> String {
    format!(
        "add table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} oifname != \"{bridge}\" masquerade\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" accept\n\
         \t\toifname \"{bridge}\" accept\n\
         \t}}\n\
         }}\n"
    )
}

/// Installs (or replaces) the `ip isol` table.
pub(crate) fn install(subnet: &Subnet, bridge: &str) -> Result<(), NetworkError> {
    run("nft", &["-f", "-"], Some(&ruleset(subnet, bridge))).map(drop)
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
        let text = ruleset(&Subnet::parse("10.88.0.0/24").unwrap(), "isol0");
        assert!(text.starts_with("add table ip isol\ndelete table ip isol\ntable ip isol {"));
        assert!(text.contains("ip saddr 10.88.0.0/24 oifname != \"isol0\" masquerade"));
        assert!(text.contains("iifname \"isol0\" accept"));
        assert!(text.contains("oifname \"isol0\" accept"));
    }
}
