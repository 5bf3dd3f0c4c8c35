//! The bridge's IPv4 subnet: parsing and validating `ISOL_BRIDGE_SUBNET`, and address arithmetic.

use std::fmt;
use std::net::Ipv4Addr;

use super::NetworkError;

/// The environment variable that overrides the bridge subnet.
pub const SUBNET_ENV: &str = "ISOL_BRIDGE_SUBNET";
/// The bridge subnet when `ISOL_BRIDGE_SUBNET` is unset or empty.
pub const DEFAULT_SUBNET: &str = "10.88.0.0/24";

/// RFC 1918 private ranges; the bridge subnet must lie inside one of them.
const PRIVATE: [(u32, u8); 3] = [
    (u32::from_be_bytes([10, 0, 0, 0]), 8),
    (u32::from_be_bytes([172, 16, 0, 0]), 12),
    (u32::from_be_bytes([192, 168, 0, 0]), 16),
];

/// A validated private IPv4 network with room for the gateway and at least one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subnet {
    network: u32,
    prefix: u8,
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl Subnet {
    /// Parses `a.b.c.d/n`, returning why it is unusable on failure.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| "it is not in CIDR form ADDRESS/PREFIX".to_owned())?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{address:?} is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length between 0 and 32"))?;
        if prefix > 30 {
            return Err(format!(
                "a /{prefix} has no room for the gateway and a container (use /30 or shorter)"
            ));
        }
        let raw = u32::from(address);
        let network = raw & mask(prefix);
        if network != raw {
            return Err(format!(
                "host bits are set (did you mean {}/{prefix}?)",
                Ipv4Addr::from(network)
            ));
        }
        let subnet = Subnet { network, prefix };
        if !PRIVATE.iter().any(|&(net, len)| {
            Subnet {
                network: net,
                prefix: len,
            }
            .contains_subnet(&subnet)
        }) {
            return Err(
                "it is not inside a private range (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16)"
                    .to_owned(),
            );
        }
        Ok(subnet)
    }

    /// The subnet to use: `value` (the environment variable's content) or the default.
    pub(crate) fn from_setting(value: Option<&str>) -> Result<Self, NetworkError> {
        let text = value.map(str::trim).filter(|v| !v.is_empty());
        let text = text.unwrap_or(DEFAULT_SUBNET);
        Subnet::parse(text).map_err(|reason| NetworkError::InvalidSubnet {
            value: text.to_owned(),
            reason,
        })
    }

    /// The subnet from `ISOL_BRIDGE_SUBNET`, or the default when it is unset or empty.
    pub(crate) fn from_env() -> Result<Self, NetworkError> {
        match std::env::var_os(SUBNET_ENV) {
            None => Subnet::from_setting(None),
            Some(value) => match value.to_str() {
                Some(value) => Subnet::from_setting(Some(value)),
                None => Err(NetworkError::InvalidSubnet {
                    value: value.to_string_lossy().into_owned(),
                    reason: "it is not valid UTF-8".to_owned(),
                }),
            },
        }
    }

    pub(crate) fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The bridge's own address: the first usable address.
    pub(crate) fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    fn broadcast(&self) -> u32 {
        self.network | !mask(self.prefix)
    }

    /// Addresses containers may get: after the gateway, before the broadcast address.
    pub(crate) fn container_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        (self.network + 2..self.broadcast()).map(Ipv4Addr::from)
    }

    #[cfg(test)]
    fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix) == self.network
    }

    fn contains_subnet(&self, other: &Subnet) -> bool {
        other.prefix >= self.prefix && other.network & mask(self.prefix) == self.network
    }

    /// True when the two networks share any address.
    pub(crate) fn overlaps(&self, other: &Subnet) -> bool {
        self.contains_subnet(other) || other.contains_subnet(self)
    }

    /// The network of an interface address such as `192.0.2.2/24` (host bits allowed).
    pub(crate) fn of_interface_address(text: &str) -> Option<Subnet> {
        let (address, prefix) = text.split_once('/')?;
        let address: Ipv4Addr = address.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(Subnet {
            network: u32::from(address) & mask(prefix),
            prefix,
        })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(text: &str) -> String {
        Subnet::parse(text).unwrap_err()
    }

    #[test]
    fn default_subnet() {
        let subnet = Subnet::from_setting(None).unwrap();
        assert_eq!(subnet.to_string(), "10.88.0.0/24");
        assert_eq!(subnet.gateway(), Ipv4Addr::new(10, 88, 0, 1));
        let addresses: Vec<_> = subnet.container_addresses().collect();
        assert_eq!(addresses.len(), 253);
        assert_eq!(addresses[0], Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(addresses[252], Ipv4Addr::new(10, 88, 0, 254));
        assert_eq!(Subnet::from_setting(Some("  ")).unwrap(), subnet);
    }

    #[test]
    fn custom_subnets() {
        let subnet = Subnet::from_setting(Some("172.20.4.0/22")).unwrap();
        assert_eq!(subnet.gateway(), Ipv4Addr::new(172, 20, 4, 1));
        assert!(subnet.contains(Ipv4Addr::new(172, 20, 7, 200)));
        assert!(!subnet.contains(Ipv4Addr::new(172, 20, 8, 1)));
        let tiny = Subnet::parse("192.168.9.4/30").unwrap();
        assert_eq!(
            tiny.container_addresses().collect::<Vec<_>>(),
            [Ipv4Addr::new(192, 168, 9, 6)]
        );
        assert!(Subnet::parse("10.0.0.0/8").is_ok());
    }

    #[test]
    fn bad_subnets_say_why() {
        assert!(reason("banana").contains("CIDR"));
        assert!(reason("10.88.0/24").contains("not an IPv4 address"));
        assert!(reason("10.88.0.0/33").contains("prefix length"));
        assert!(reason("10.88.0.0/x").contains("prefix length"));
        assert!(reason("10.88.0.0/31").contains("no room"));
        assert!(reason("10.88.0.5/24").contains("did you mean 10.88.0.0/24"));
        assert!(reason("8.8.8.0/24").contains("private"));
        assert!(reason("172.32.0.0/16").contains("private"));
        assert!(reason("10.0.0.0/7").contains("private"));
        let error = Subnet::from_setting(Some("10.88.0.0/33"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("ISOL_BRIDGE_SUBNET=10.88.0.0/33 is not usable"),
            "{error}"
        );
        assert!(!error.contains('\n'));
    }

    #[test]
    fn overlap() {
        let a = Subnet::parse("10.88.0.0/24").unwrap();
        let b = Subnet::of_interface_address("10.88.0.77/16").unwrap();
        let c = Subnet::of_interface_address("10.89.0.1/24").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
        assert!(Subnet::of_interface_address("nonsense").is_none());
    }
}
