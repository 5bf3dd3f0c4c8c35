//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` for an `isol run`, as `docker run`
//! provides them: the container's own hostname, a hosts file naming localhost (and, on the
//! bridge, the container's address with its hostname), and the host's resolvers where the
//! container can reach them.
//!
//! The contents are computed by the parent ([`EtcFiles::for_run`], which reads the host's
//! resolv.conf); the child writes them into its own root after `pivot_root` and the go, when its
//! network is wired and its address known ([`EtcFiles::write`]). They go into the overlay's
//! writable layer, so the image is never touched, and only where `/etc` belongs to the container's
//! root filesystem: an `/etc` (or one of the three files) that a volume or mount provides is left
//! to it. An OCI bundle's client brings its own files as mounts, so `isol-runc` writes none.

use std::ffi::CStr;
use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, futimens};
use nix::sys::time::TimeSpec;
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::config::{Mount, NetworkMode, Volume};
use crate::error::SetupError;

/// docker's hosts file without the container's own line.
const HOSTS_BASE: &str = "127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
ff00::0\tip6-mcastprefix
ff02::1\tip6-allnodes
ff02::2\tip6-allrouters
";

/// The resolvers a container gets when the host names none it could reach (docker's choice).
const FALLBACK_NAMESERVERS: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\n";

/// The host's resolver configuration, and systemd-resolved's list of real upstream servers for
/// a host whose resolv.conf names only its local stub.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";
const RESOLVED_UPSTREAMS: &str = "/run/systemd/resolve/resolv.conf";

/// The three files of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EtcFiles {
    hostname: String,
    /// The hosts file, less the line naming the container's address (added by the child).
    hosts: String,
    /// Append `<address>\t<hostname>` once the bridge has given the container its address.
    hosts_add_address: bool,
    resolv_conf: String,
}

impl EtcFiles {
    /// The files for a run with this network and hostname, from the host's resolv.conf and, with
    /// the host's network, its hosts file.
    pub(crate) fn for_run(network: NetworkMode, hostname: &str) -> EtcFiles {
        let read = |p: &str| fs::read_to_string(p).ok();
        match network {
            NetworkMode::Host => EtcFiles {
                hostname: hostname.to_owned(),
                hosts: read("/etc/hosts").unwrap_or_else(|| HOSTS_BASE.to_owned()),
                hosts_add_address: false,
                resolv_conf: read(HOST_RESOLV_CONF)
                    .unwrap_or_else(|| FALLBACK_NAMESERVERS.to_owned()),
            },
            NetworkMode::None | NetworkMode::Bridge => EtcFiles {
                hostname: hostname.to_owned(),
                hosts: HOSTS_BASE.to_owned(),
                hosts_add_address: network == NetworkMode::Bridge,
                resolv_conf: container_resolv_conf(
                    read(HOST_RESOLV_CONF).as_deref(),
                    read(RESOLVED_UPSTREAMS).as_deref(),
                ),
            },
        }
    }

    /// In the child, in its own root (after `pivot_root`) and with its network wired: writes
    /// the files into `/etc`, except where `/etc` or the file comes from a volume or a mount.
    pub(crate) fn write(&self, volumes: &[Volume], mounts: &[Mount]) -> Result<(), SetupError> {
        let provided = |name: &str| {
            let file = Path::new("/etc").join(name);
            volumes
                .iter()
                .map(|v| v.target.as_path())
                .chain(mounts.iter().map(|m| m.target.as_path()))
                .any(|t| t == Path::new("/etc") || t == file)
        };
        let Some(etc) = open_etc().map_err(|e| SetupError::rootfs("Cannot open /etc", e))? else {
            return Ok(());
        };
        // The image's /etc keeps its times, as a bind of the files (docker's way) would leave
        // them: only the files are new.
        let before = nix::sys::stat::fstat(&etc)
            .map_err(|e| SetupError::rootfs("Cannot stat /etc", io::Error::from(e)))?;
        let address = if self.hosts_add_address {
            own_address()
        } else {
            None
        };
        for (name, content) in self.contents(address) {
            if provided(name) {
                continue;
            }
            replace(&etc, name, content.as_bytes())
                .map_err(|e| SetupError::rootfs(format!("Cannot write /etc/{name}"), e))?;
        }
        let (atime, mtime) = (
            TimeSpec::new(before.st_atime, before.st_atime_nsec),
            TimeSpec::new(before.st_mtime, before.st_mtime_nsec),
        );
        futimens(&etc, &atime, &mtime)
            .map_err(|e| SetupError::rootfs("Cannot keep the times of /etc", io::Error::from(e)))
    }
}

impl EtcFiles {
    /// The three files, `(name in /etc, content)`; `address` (the run's own on the bridge) gets
    /// its line `ADDRESS<TAB>HOSTNAME` in the hosts file when the network wants one.
    fn contents(&self, address: Option<Ipv4Addr>) -> [(&'static str, String); 3] {
        let mut hosts = self.hosts.clone();
        if self.hosts_add_address
            && let Some(addr) = address
        {
            hosts.push_str(&format!("{addr}\t{}\n", self.hostname));
        }
        [
            ("hostname", format!("{}\n", self.hostname)),
            ("hosts", hosts),
            ("resolv.conf", self.resolv_conf.clone()),
        ]
    }
}

/// `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` for a microVM run with this network,
/// hostname and (on the bridge) address: the same contents a container run with the same flags
/// gets, for the guest init to write into the VM's root. A file that a volume provides (a volume
/// on `/etc` or on the file itself) is left out, as the container backend leaves it.
pub fn vm_etc_files(
    network: NetworkMode,
    hostname: &str,
    address: Option<Ipv4Addr>,
    volumes: &[Volume],
) -> Vec<(&'static str, String)> {
    let provided = |name: &str| {
        let file = Path::new("/etc").join(name);
        volumes
            .iter()
            .any(|v| v.target == Path::new("/etc") || v.target == file)
    };
    EtcFiles::for_run(network, hostname)
        .contents(address)
        .into_iter()
        .filter(|(name, _)| !provided(name))
        .collect()
}

/// The host's resolv.conf as a container on its own network gets it: nameservers on the host's
/// loopback (a local cache or systemd-resolved's stub, unreachable from the container) and IPv6
/// ones (isol's bridge is IPv4 only) dropped; with systemd-resolved's stub, its upstream
/// servers instead; when none remains, public resolvers — what docker does.
fn container_resolv_conf(host: Option<&str>, resolved: Option<&str>) -> String {
    let servers = |text: &str| text.lines().filter_map(nameserver).collect::<Vec<IpAddr>>();
    let text = match (host, resolved) {
        (Some(h), Some(r)) if servers(h).iter().all(IpAddr::is_loopback) => r,
        (Some(h), _) => h,
        (None, _) => "",
    };
    let mut out = String::new();
    let mut kept = 0;
    for line in text.lines() {
        match nameserver(line) {
            Some(IpAddr::V4(a)) if !a.is_loopback() => kept += 1,
            Some(_) => continue,
            None => {}
        }
        out.push_str(line);
        out.push('\n');
    }
    if kept == 0 {
        out.push_str(FALLBACK_NAMESERVERS);
    }
    out
}

/// The address of a `nameserver` line.
fn nameserver(line: &str) -> Option<IpAddr> {
    let mut words = line.split_whitespace();
    (words.next()? == "nameserver").then_some(())?;
    words.next()?.parse().ok()
}

/// `/etc` of the container's root, opened without following a symlink; created when the image
/// has none. `None` when it is a symlink or another mount than the root's (a volume, say).
fn open_etc() -> io::Result<Option<OwnedFd>> {
    match fs::symlink_metadata("/etc") {
        Ok(m) if m.file_type().is_symlink() => return Ok(None),
        Ok(m) if m.dev() != fs::metadata("/")?.dev() => return Ok(None),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir("/etc")?,
        Err(e) => return Err(e),
    }
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    Ok(Some(open("/etc", flags, Mode::empty())?))
}

/// Replaces `/etc/NAME` (whatever it was: a file, a symlink) with a new file holding `content`.
/// A directory of that name stays.
fn replace(etc: &OwnedFd, name: &str, content: &[u8]) -> io::Result<()> {
    match unlinkat(etc, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(Errno::EISDIR) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
    let fd = openat(
        etc,
        name,
        flags | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?;
    fs::File::from(fd).write_all(content)
}

/// The container's IPv4 address on its own network (the bridge's veth): the first address of an
/// interface other than loopback.
fn own_address() -> Option<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list it allocated, freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() && found.is_none() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and points to a sockaddr of the family it names.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        // SAFETY: `ifa_name` is a NUL-terminated string of the same node.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_bytes();
        if family as i32 != libc::AF_INET || name == b"lo" {
            continue;
        }
        // SAFETY: an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_gets_the_container_s_files_with_its_address_and_without_what_volumes_provide() {
        let addr = Ipv4Addr::new(10, 88, 0, 7);
        let files = vm_etc_files(NetworkMode::Bridge, "web", Some(addr), &[]);
        let names: Vec<_> = files.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["hostname", "hosts", "resolv.conf"]);
        assert_eq!(files[0].1, "web\n");
        assert_eq!(files[1].1, format!("{HOSTS_BASE}10.88.0.7\tweb\n"));
        let ctr = EtcFiles::for_run(NetworkMode::Bridge, "web");
        assert_eq!(files[2].1, ctr.resolv_conf, "the container's resolvers");
        // No network: no address line.
        let none = vm_etc_files(NetworkMode::None, "web", Some(addr), &[]);
        assert_eq!(none[1].1, HOSTS_BASE);
        let vol = |t: &str| Volume {
            source: "/srv".into(),
            target: t.into(),
            read_only: false,
        };
        let files = vm_etc_files(NetworkMode::Bridge, "web", None, &[vol("/etc/hosts")]);
        assert_eq!(
            files.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            ["hostname", "resolv.conf"]
        );
        assert!(vm_etc_files(NetworkMode::Bridge, "web", None, &[vol("/etc")]).is_empty());
    }

    #[test]
    fn resolv_conf_drops_loopback_and_ipv6_servers_and_keeps_the_rest() {
        let host = "# comment\nsearch example.org\nnameserver 127.0.0.1\nnameserver 10.0.0.2\nnameserver ::1\nnameserver 2001:db8::1\noptions ndots:2\n";
        assert_eq!(
            container_resolv_conf(Some(host), None),
            "# comment\nsearch example.org\nnameserver 10.0.0.2\noptions ndots:2\n"
        );
    }

    #[test]
    fn resolv_conf_falls_back_to_public_resolvers() {
        assert_eq!(
            container_resolv_conf(Some("nameserver 127.0.0.11\n"), None),
            FALLBACK_NAMESERVERS
        );
        assert_eq!(container_resolv_conf(None, None), FALLBACK_NAMESERVERS);
    }

    #[test]
    fn resolv_conf_uses_systemd_resolved_upstreams_behind_its_stub() {
        let stub = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n";
        let upstream = "nameserver 192.168.1.1\nsearch lan\n";
        assert_eq!(
            container_resolv_conf(Some(stub), Some(upstream)),
            "nameserver 192.168.1.1\nsearch lan\n"
        );
        // A host with a real resolver keeps its own file.
        assert_eq!(
            container_resolv_conf(Some("nameserver 10.1.1.1\n"), Some(upstream)),
            "nameserver 10.1.1.1\n"
        );
    }

    #[test]
    fn hosts_of_a_bridge_run_wait_for_the_address() {
        let f = EtcFiles::for_run(NetworkMode::Bridge, "web");
        assert_eq!(f.hosts, HOSTS_BASE);
        assert!(f.hosts_add_address);
        let f = EtcFiles::for_run(NetworkMode::None, "web");
        assert!(!f.hosts_add_address);
        assert_eq!(f.hostname, "web");
    }
}
