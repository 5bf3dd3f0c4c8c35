//! `-p`/`--publish`: a port of a run on the bridge reachable on the host's own addresses.
//!
//! Each mapping is a DNAT rule in isol's nft table (see `nat.rs`) and a socket isol binds to
//! the host port for as long as the run lives, as docker does: the bind is the check that no
//! host process and no other run holds the port, and holding it keeps later ones off it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, bind, getsockname, listen, setsockopt,
    socket, sockopt,
};
use serde::{Deserialize, Serialize};

use super::NetworkError;

/// A transport protocol a port is published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The name nft and docker use.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One `-p` mapping as asked for; `host_port` 0 means "any free port".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address it is published on; `None`: every address of the host.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    /// docker's form: `0.0.0.0:8080->80/tcp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}->{}/{}",
            self.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            self.host_port,
            self.container_port,
            self.protocol.name()
        )
    }
}

impl PortMapping {
    /// Parses docker's `[IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp]`, where both ports may be
    /// ranges of the same length (`8000-8001:80-81`); one mapping per port.
    pub fn parse(spec: &str) -> Result<Vec<PortMapping>, String> {
        let bad = |why: &str| {
            format!(
                "Invalid -p {spec:?}: {why}; use [IP:][HOSTPORT:]CONTAINERPORT[/tcp|/udp], e.g. -p 8080:80"
            )
        };
        let (ports, protocol) = match spec.rsplit_once('/') {
            None => (spec, Protocol::Tcp),
            Some((p, "tcp")) => (p, Protocol::Tcp),
            Some((p, "udp")) => (p, Protocol::Udp),
            Some((_, other)) => return Err(bad(&format!("unknown protocol {other:?}"))),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => (None, "", *c),
            [h, c] => (None, *h, *c),
            [ip, h, c] => (Some(*ip), *h, *c),
            _ => {
                return Err(bad(
                    "too many ':' (IPv6 host addresses are not supported: isol's bridge is IPv4)",
                ));
            }
        };
        let host_ip = match ip {
            None | Some("") => None,
            Some(text) => match text.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(IpAddr::V4(a)) if a.is_unspecified() => None,
                Ok(IpAddr::V4(a)) if a.is_multicast() || a.is_broadcast() => {
                    return Err(bad(&format!("{a} is not an address of this host")));
                }
                Ok(IpAddr::V4(a)) => Some(a),
                Ok(IpAddr::V6(_)) => {
                    return Err(bad(
                        "IPv6 host addresses are not supported: isol's bridge is IPv4",
                    ));
                }
                Err(_) => return Err(bad(&format!("{text:?} is not an IPv4 address"))),
            },
        };
        let container = range(container).ok_or_else(|| bad("the container port is not a port"))?;
        let host = match host {
            "" => None,
            h => Some(range(h).ok_or_else(|| bad("the host port is not a port"))?),
        };
        if let Some(h) = host
            && h.1 - h.0 != container.1 - container.0
        {
            return Err(bad("the host and container port ranges differ in length"));
        }
        Ok((container.0..=container.1)
            .enumerate()
            .map(|(i, container_port)| PortMapping {
                host_ip,
                host_port: host.map_or(0, |h| h.0 + i as u16),
                container_port,
                protocol,
            })
            .collect())
    }

    /// True when this mapping and `other` cannot both be published: same protocol and port,
    /// and addresses that overlap (every address overlaps each one).
    pub fn conflicts_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

/// `PORT` or `FIRST-LAST`, ports 1 to 65535.
fn range(text: &str) -> Option<(u16, u16)> {
    let port = |t: &str| {
        t.parse::<u16>()
            .ok()
            .filter(|p| *p != 0 && t.bytes().all(|b| b.is_ascii_digit()))
    };
    match text.split_once('-') {
        None => port(text).map(|p| (p, p)),
        Some((a, b)) => Some((port(a)?, port(b)?)).filter(|(a, b)| a <= b),
    }
}

/// The host ports of a run, bound (not listening: the DNAT rules take the traffic before it
/// reaches them) while the run lives.
#[derive(Debug, Default)]
pub struct Reservations {
    sockets: Vec<OwnedFd>,
}

impl Reservations {
    /// The descriptors, for a caller that keeps them open across an exec.
    pub fn fds(&self) -> Vec<RawFd> {
        self.sockets.iter().map(AsRawFd::as_raw_fd).collect()
    }
}

/// Binds every mapping's host port, as docker does, so that a port a host process or another
/// run holds is refused here; a port 0 becomes the free port the kernel chose. Returns the
/// mappings with their actual host ports.
pub(crate) fn reserve(
    mappings: &[PortMapping],
) -> Result<(Vec<PortMapping>, Reservations), NetworkError> {
    let mut reserved = Reservations::default();
    let mut published = Vec::with_capacity(mappings.len());
    for m in mappings {
        let in_use = |error: std::io::Error| NetworkError::PortInUse {
            mapping: format!(
                "{}:{}/{}",
                m.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                m.host_port,
                m.protocol.name()
            ),
            error,
        };
        let kind = match m.protocol {
            Protocol::Tcp => SockType::Stream,
            Protocol::Udp => SockType::Datagram,
        };
        let fd = socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None)
            .map_err(|e| in_use(e.into()))?;
        let address = SockaddrIn::from(SocketAddrV4::new(
            m.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            m.host_port,
        ));
        if m.protocol == Protocol::Tcp {
            // As docker's (Go's) listeners: SO_REUSEADDR, so that the TIME_WAIT connections of
            // an earlier server on the port (a host process that just ended, whose clients
            // closed last) do not refuse it for a minute; and listening, so that a host
            // process binding it later fails, SO_REUSEADDR or not. Nothing is ever accepted:
            // the DNAT rules take the port's traffic before it reaches the socket.
            setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| in_use(e.into()))?;
        }
        // UDP without SO_REUSEADDR: any socket already on the port is a conflict.
        bind(fd.as_raw_fd(), &address).map_err(|e| in_use(e.into()))?;
        if m.protocol == Protocol::Tcp {
            listen(&fd, Backlog::new(1).expect("1 is a valid backlog"))
                .map_err(|e| in_use(e.into()))?;
        }
        let bound: SockaddrIn = getsockname(fd.as_raw_fd()).map_err(|e| in_use(e.into()))?;
        published.push(PortMapping {
            host_port: bound.port(),
            ..*m
        });
        reserved.sockets.push(fd);
    }
    Ok((published, reserved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(spec: &str) -> PortMapping {
        let v = PortMapping::parse(spec).unwrap();
        assert_eq!(v.len(), 1, "{spec}");
        v[0]
    }

    #[test]
    fn docker_forms_parse() {
        let m = one("8080:80");
        assert_eq!((m.host_ip, m.host_port, m.container_port), (None, 8080, 80));
        assert_eq!(m.protocol, Protocol::Tcp);
        assert_eq!(one("80").host_port, 0);
        assert_eq!(one("53/udp").protocol, Protocol::Udp);
        let m = one("127.0.0.1:8080:80/tcp");
        assert_eq!(m.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(m.to_string(), "127.0.0.1:8080->80/tcp");
        let m = one("127.0.0.1::80");
        assert_eq!((m.host_ip, m.host_port), (Some(Ipv4Addr::LOCALHOST), 0));
        assert_eq!(one("0.0.0.0:1:2").host_ip, None);
        let r = PortMapping::parse("8000-8002:80-82/udp").unwrap();
        assert_eq!(
            r.iter()
                .map(|m| (m.host_port, m.container_port))
                .collect::<Vec<_>>(),
            [(8000, 80), (8001, 81), (8002, 82)]
        );
        assert_eq!(PortMapping::parse("80-81").unwrap().len(), 2);
    }

    #[test]
    fn bad_forms_say_what_is_wrong() {
        for (spec, why) in [
            ("", "not a port"),
            ("0", "not a port"),
            ("70000:80", "not a port"),
            ("+80", "not a port"),
            ("80/sctp", "unknown protocol"),
            ("8000-8001:80", "differ in length"),
            ("81-80:81-80", "not a port"),
            ("::1:80:80", "too many"),
            ("[::1]:80:80", "IPv6"),
            ("host:80:80", "not an IPv4 address"),
            ("224.0.0.1:80:80", "not an address of this host"),
        ] {
            let e = PortMapping::parse(spec).unwrap_err();
            assert!(e.contains(why), "{spec}: {e}");
            assert!(e.starts_with("Invalid -p") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn conflicts() {
        let any = one("8080:80");
        assert!(any.conflicts_with(&one("127.0.0.1:8080:81")));
        assert!(!any.conflicts_with(&one("8080:80/udp")));
        assert!(!any.conflicts_with(&one("8081:80")));
        assert!(!one("127.0.0.1:8080:80").conflicts_with(&one("127.0.0.2:8080:80")));
    }

    #[test]
    fn a_held_port_is_refused_and_port_0_is_chosen() {
        let (published, held) = reserve(&[one("127.0.0.1::80"), one("127.0.0.1::80/udp")]).unwrap();
        assert_ne!(published[0].host_port, 0);
        assert_ne!(published[1].host_port, 0);
        assert_eq!(held.fds().len(), 2);
        let taken = PortMapping {
            host_port: published[0].host_port,
            ..one("80")
        };
        let error = reserve(&[taken]).unwrap_err().to_string();
        assert!(error.contains("already in use"), "{error}");
        // A host process's listener is refused just the same.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let error = reserve(&[PortMapping {
            host_port: port,
            ..one("80")
        }])
        .unwrap_err()
        .to_string();
        assert!(error.contains(&format!(":{port}/tcp")), "{error}");
    }

    /// A port whose last server just ended, its connections in TIME_WAIT (the server closed
    /// first), is free to publish at once, as with docker; a reserved TCP port still refuses a
    /// host process's listener, SO_REUSEADDR (std's default) or not.
    #[test]
    fn time_wait_does_not_hold_a_port_and_a_reserved_one_refuses_listeners() {
        use std::io::Read;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (served, _) = listener.accept().unwrap();
        drop(served);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        drop(client);
        drop(listener);
        let mapping = PortMapping {
            host_port: port,
            ..one("127.0.0.1::80")
        };
        let (published, held) = reserve(&[mapping]).unwrap();
        assert_eq!(published[0].host_port, port);
        let error = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
        drop(held);
    }
}
