//! The guest's `eth0` on isol's bridge (`--network bridge`): address, netmask, up, default
//! route, with the classic ioctls (`SIOCSIFADDR`, `SIOCSIFNETMASK`, `SIOCSIFFLAGS`,
//! `SIOCADDRT`) — what a container's `eth0` gets from `ip` on the host.
//!
//! The VMM says what on the kernel command line: `isol.net=ADDRESS/PREFIX,GATEWAY`.

use std::io;
use std::net::Ipv4Addr;

/// The interface the guest kernel gives the (only) virtio-net card.
pub const IFACE: &str = "eth0";

/// `eth0`'s configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetArgs {
    /// The guest's address.
    pub address: Ipv4Addr,
    /// Prefix length, 1 to 32.
    pub prefix: u8,
    /// The default gateway (the bridge).
    pub gateway: Ipv4Addr,
}

impl NetArgs {
    /// Parses the value of `isol.net=`: `ADDRESS/PREFIX,GATEWAY`.
    pub fn parse(v: &str) -> Option<NetArgs> {
        let (cidr, gateway) = v.split_once(',')?;
        let (address, prefix) = cidr.split_once('/')?;
        let prefix: u8 = prefix.parse().ok().filter(|p| (1..=32).contains(p))?;
        Some(NetArgs {
            address: address.parse().ok()?,
            prefix,
            gateway: gateway.parse().ok()?,
        })
    }

    /// The netmask of the prefix.
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix)))
    }
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes) and both are plain
    // data; the kernel reads the family to know which it is.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *b as libc::c_char;
    }
    req
}

/// Configures `eth0` as `args` says. An error names the step and what to check.
pub fn configure(args: &NetArgs) -> Result<(), String> {
    let err = |what: &str| {
        let e = io::Error::last_os_error();
        let hint = if e.raw_os_error() == Some(libc::ENODEV) {
            "the guest kernel has no virtio-net card; build it with CONFIG_VIRTIO_NET=y"
        } else {
            "the guest kernel needs CONFIG_INET=y"
        };
        format!("cannot configure {IFACE} ({what}: {e}); {hint}")
    };
    // SAFETY: socket has no memory effects; the fd is closed below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(err("socket"));
    }
    let result = (|| {
        let mut req = ifreq(IFACE);
        req.ifr_ifru.ifru_addr = sockaddr(args.address);
        // SAFETY: SIOCSIFADDR reads the live `req`; `s` is our socket.
        if unsafe { libc::ioctl(s, libc::SIOCSIFADDR, &req) } < 0 {
            return Err(err("SIOCSIFADDR"));
        }
        req.ifr_ifru.ifru_netmask = sockaddr(args.netmask());
        // SAFETY: as above, SIOCSIFNETMASK.
        if unsafe { libc::ioctl(s, libc::SIOCSIFNETMASK, &req) } < 0 {
            return Err(err("SIOCSIFNETMASK"));
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        // SAFETY: as above, SIOCSIFFLAGS.
        if unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS, &req) } < 0 {
            return Err(err("SIOCSIFFLAGS"));
        }
        // SAFETY: rtentry is plain data (a null rt_dev: the kernel picks the interface by
        // the gateway, which is on eth0's subnet); all zeroes is a valid value.
        let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
        rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
        rt.rt_gateway = sockaddr(args.gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        // SAFETY: SIOCADDRT reads the live `rt`.
        if unsafe { libc::ioctl(s, libc::SIOCADDRT, &rt) } < 0 {
            return Err(err("SIOCADDRT (default route)"));
        }
        Ok(())
    })();
    // SAFETY: `s` is ours and closed once.
    unsafe { libc::close(s) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_argument_parses_and_bad_ones_do_not() {
        let a = NetArgs::parse("10.88.0.2/24,10.88.0.1").unwrap();
        assert_eq!(a.address, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(a.gateway, Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(a.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(
            NetArgs::parse("10.0.0.9/32,10.0.0.1").unwrap().netmask(),
            Ipv4Addr::BROADCAST
        );
        for bad in [
            "",
            "10.88.0.2/24",
            "10.88.0.2,10.88.0.1",
            "10.88.0.2/0,10.88.0.1",
            "10.88.0.2/33,10.88.0.1",
            "10.88.0/24,10.88.0.1",
            "10.88.0.2/24,x",
        ] {
            assert_eq!(NetArgs::parse(bad), None, "{bad}");
        }
    }
}
