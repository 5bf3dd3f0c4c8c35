//! A VM on a pod's network: its tap inside a network namespace someone else configured.
//!
//! CRI pods get their network from a CNI plugin, which configures a network namespace (the
//! pause container's): one interface (`eth0`, a veth to the host's bridge) with an address, a
//! MAC and a default route. A VM put on that network ([`attach_vm_to_netns`]) does what Kata
//! Containers does:
//!
//! 1. read the namespace's single non-loopback interface: its MAC, first IPv4 address and
//!    prefix, MTU, and the gateway of its default route (`ip -j` inside the namespace);
//! 2. create a tap `isolt<first 8 chars of id>` inside the namespace: `/dev/net/tun` opened and
//!    `TUNSETIFF` done by a thread that has `setns`'d into it (a tun interface belongs to the
//!    namespace of whoever opened `/dev/net/tun`); the descriptor then works from anywhere,
//!    the VMM's jail included;
//! 3. redirect every frame between the two with tc: an ingress qdisc on each, and on each a
//!    u32 filter matching everything with `action mirred egress redirect dev` the other;
//! 4. give the guest's NIC the interface's MAC, and the guest the address, prefix and gateway:
//!    the VM *is* the pod on the wire; the namespace's own stack, which still holds the address
//!    (CNI's DEL needs it), sees nothing (its interface's ingress is redirected).
//!
//! Teardown ([`PodAttachment::release`], [`release_held`] after an exec, or the next isol's
//! [`super::sweep`] after a SIGKILL) removes the interface's ingress qdisc, with its filter; the
//! tap goes with its last descriptor (a tun interface cannot be deleted while open), and its own
//! qdisc with it. The namespace belongs to the caller and is never deleted.
//!
//! The run is recorded in `<state_root>/net/pods/<id>.json` (owner pid and start time, the
//! namespace's path and inode, the interface and tap, the guest's configuration) before anything
//! is changed in the namespace, so a killed isol's changes are found and undone, and
//! [`super::lookup`] (`isol inspect`, `isol ps`) finds the run's address.
//!
//! Commands run inside the namespace as the host's `ip` and `tc` under
//! `nsenter --net=/proc/<isol's pid>/fd/<N>` (the namespace as isol holds it open, so a path
//! replaced meanwhile cannot redirect them), as the bridge's veth code does.

use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::NetworkError;
use super::cmd::run;
use super::state::{Locked, start_time};

/// The guest's network, as read from the pod's interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodConfig {
    /// The pod's interface (`eth0` under CNI).
    pub interface: String,
    /// Its MAC address: the guest NIC's.
    pub mac: [u8; 6],
    /// Its first IPv4 address: the guest's.
    pub address: Ipv4Addr,
    /// That address's prefix length.
    pub prefix: u8,
    /// The gateway of the namespace's default route through the interface.
    pub gateway: Ipv4Addr,
    /// The interface's MTU (the tap gets the same).
    pub mtu: u32,
}

/// The record of one VM on a pod's network (`<state_root>/net/pods/<id>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PodRecord {
    id: String,
    /// The namespace's path as given (informative), and its identity.
    netns: PathBuf,
    netns_dev: u64,
    netns_ino: u64,
    tap: String,
    config: PodConfig,
    /// The owning isol.
    pid: i32,
    start_time: u64,
}

impl PodRecord {
    fn owner_alive(&self) -> bool {
        super::state::alive(self.pid, self.start_time)
    }
}

/// The directory of the pod records.
fn pods_dir(state_root: &Path) -> PathBuf {
    Locked::dir_of(state_root).join("pods")
}

fn state_error(path: &Path, error: std::io::Error) -> NetworkError {
    NetworkError::State {
        path: path.to_owned(),
        error,
    }
}

/// Opens the network namespace at `path` (a bind mount such as `/run/netns/NAME`, or
/// `/proc/PID/ns/net`), checking that it is one and not isol's own.
pub fn open_netns(path: &Path) -> Result<OwnedFd, NetworkError> {
    let bad = |reason: String| NetworkError::Netns {
        path: path.to_owned(),
        reason,
    };
    let file = fs::File::open(path).map_err(|e| {
        bad(format!(
            "{e}; give the path of a network namespace (/run/netns/NAME, /proc/PID/ns/net)"
        ))
    })?;
    if crate::namespaces::namespace_type(&file) != Some(libc::CLONE_NEWNET) {
        return Err(bad("it is not a network namespace".into()));
    }
    let theirs = file.metadata().map_err(|e| bad(e.to_string()))?;
    let ours = fs::metadata("/proc/self/ns/net").map_err(|e| bad(e.to_string()))?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Err(bad(
            "it is isol's own (the host's), whose interface a VM cannot take over".into(),
        ));
    }
    Ok(file.into())
}

/// `--net=/proc/<isol>/fd/<fd>`: nsenter's way into the namespace as isol holds it open.
fn nsenter_net(netns: &impl AsFd) -> String {
    format!(
        "--net=/proc/{}/fd/{}",
        std::process::id(),
        netns.as_fd().as_raw_fd()
    )
}

/// `nsenter --net=… PROGRAM -batch -` with `script` on stdin.
fn run_in(netns: &impl AsFd, program: &str, script: &str) -> Result<String, NetworkError> {
    run(
        "nsenter",
        &[&nsenter_net(netns), program, "-batch", "-"],
        Some(script),
    )
}

/// `nsenter --net=… ARGS…` (one command, its stdout).
fn query(netns: &impl AsFd, args: &[&str]) -> Result<String, NetworkError> {
    let net = nsenter_net(netns);
    let mut all = vec![net.as_str()];
    all.extend_from_slice(args);
    run("nsenter", &all, None)
}

/// `ip -j addr` and `ip -j -4 route show default`, as the parts we read.
#[derive(Debug, Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    link_type: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    addr_info: Vec<IpAddr>,
}

#[derive(Debug, Deserialize)]
struct IpAddr {
    family: String,
    local: String,
    prefixlen: u8,
}

#[derive(Debug, Deserialize)]
struct IpRoute {
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: Option<String>,
}

/// The pod's configuration from `ip -j addr show` and `ip -j -4 route show default` as printed
/// inside the namespace at `path`.
fn parse_config(path: &Path, links: &str, routes: &str) -> Result<PodConfig, NetworkError> {
    let bad = |reason: String| NetworkError::Netns {
        path: path.to_owned(),
        reason,
    };
    let links: Vec<IpLink> =
        serde_json::from_str(links).map_err(|e| bad(format!("`ip -j addr` printed {e}")))?;
    let mut links: Vec<IpLink> = links
        .into_iter()
        .filter(|l| l.link_type != "loopback")
        .collect();
    // A VM's tap beside the pod's interface: another VM has taken the pod over (its interface
    // is redirected to that tap), and a pod's one interface can be only one VM's.
    if let Some(tap) = links
        .iter()
        .find(|l| l.ifname.starts_with(super::TAP_PREFIX))
    {
        return Err(bad(format!(
            "another VM already took over its interface (its tap {} is there): a pod's network is one VM's; run the pod's other containers on the container backend, or in a pod of their own",
            tap.ifname
        )));
    }
    let link = match links.len() {
        1 => links.remove(0),
        0 => {
            return Err(bad(
                "it has no interface besides loopback; configure the pod's network first (a CNI plugin's ADD)".into(),
            ));
        }
        _ => {
            return Err(bad(format!(
                "it has {} interfaces besides loopback ({}); a VM takes over exactly one, so give it a namespace with one",
                links.len(),
                links
                    .iter()
                    .map(|l| l.ifname.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };
    let name = &link.ifname;
    let mac = parse_mac(&link.address)
        .ok_or_else(|| bad(format!("its interface {name} has no Ethernet address ({:?}); a VM needs an Ethernet interface (a veth)", link.address)))?;
    let (address, prefix) = link
        .addr_info
        .iter()
        .find(|a| a.family == "inet")
        .and_then(|a| Some((a.local.parse().ok()?, a.prefixlen)))
        .ok_or_else(|| bad(format!("its interface {name} has no IPv4 address; configure the pod's network first (a CNI plugin's ADD)")))?;
    if link.mtu < 1500 {
        return Err(bad(format!(
            "its interface {name} has MTU {}, and the guest's NIC is not told of one below 1500 yet; give the pod's network MTU 1500 or more",
            link.mtu
        )));
    }
    let routes: Vec<IpRoute> =
        serde_json::from_str(routes).map_err(|e| bad(format!("`ip -j route` printed {e}")))?;
    let gateway = routes
        .iter()
        .filter(|r| r.dev.as_deref().is_none_or(|d| d == name))
        .find_map(|r| r.gateway.as_deref()?.parse().ok())
        .ok_or_else(|| bad(format!("it has no IPv4 default route through {name}; give the pod a gateway (the CNI bridge plugin's isGateway, or a default route)")))?;
    Ok(PodConfig {
        interface: name.clone(),
        mac,
        address,
        prefix,
        gateway,
        mtu: link.mtu,
    })
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    let mac: [u8; 6] = bytes.try_into().ok()?;
    (mac != [0; 6]).then_some(mac)
}

/// Reads the pod's configuration from the namespace `netns` (opened by [`open_netns`] from
/// `path`): its single non-loopback interface's MAC, IPv4 address, MTU, and default gateway.
pub fn read_config(path: &Path, netns: &impl AsFd) -> Result<PodConfig, NetworkError> {
    let links = query(netns, &["ip", "-j", "addr", "show"])?;
    let routes = query(netns, &["ip", "-j", "-4", "route", "show", "default"])?;
    parse_config(path, &links, &routes)
}

/// A VM's place on a pod's network: released with [`PodAttachment::release`], best effort on
/// drop, or left to the process isol execs with [`PodAttachment::hand_over`].
#[derive(Debug)]
pub struct PodAttachment {
    record: PathBuf,
    netns: OwnedFd,
    tap: String,
    config: PodConfig,
    released: bool,
}

impl PodAttachment {
    /// The guest's network (the pod's interface's).
    pub fn config(&self) -> &PodConfig {
        &self.config
    }

    /// The tap's name inside the namespace.
    pub fn tap(&self) -> &str {
        &self.tap
    }

    /// The record, for [`release_held`] after an exec.
    pub fn record(&self) -> &Path {
        &self.record
    }

    /// Removes the redirection and the record. Call it once the tap's descriptors are closed
    /// (or about to be: the tap goes with the last one).
    pub fn release(mut self) -> Result<(), NetworkError> {
        self.release_once()
    }

    /// Leaves the release to the process this one becomes (exec of `isol-vmm`, same pid and
    /// so the same owner), which calls [`release_held`]; a SIGKILL leaves it to the next
    /// isol's [`super::sweep`].
    pub fn hand_over(mut self) {
        self.released = true;
    }

    fn release_once(&mut self) -> Result<(), NetworkError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        teardown(&self.netns, &self.config.interface, &self.tap)?;
        remove_record(&self.record)
    }
}

impl Drop for PodAttachment {
    fn drop(&mut self) {
        if let Err(error) = self.release_once() {
            tracing::warn!("releasing the pod network of {}: {error}", self.tap);
        }
    }
}

fn remove_record(record: &Path) -> Result<(), NetworkError> {
    match fs::remove_file(record) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(state_error(record, e)),
        _ => Ok(()),
    }
}

/// Removes the interface's ingress qdisc (and the filter redirecting it to the tap) and the
/// tap's, if the tap is still there; what is already gone is no error.
fn teardown(netns: &impl AsFd, interface: &str, tap: &str) -> Result<(), NetworkError> {
    let qdiscs = query(netns, &["tc", "-j", "qdisc", "show", "ingress"])?;
    #[derive(Deserialize)]
    struct Qdisc {
        kind: String,
        #[serde(default)]
        dev: Option<String>,
    }
    let qdiscs: Vec<Qdisc> = serde_json::from_str(&qdiscs).unwrap_or_default();
    let script: String = qdiscs
        .iter()
        .filter(|q| q.kind == "ingress")
        .filter_map(|q| q.dev.as_deref())
        .filter(|dev| *dev == interface || *dev == tap)
        .map(|dev| format!("qdisc del dev {dev} ingress\n"))
        .collect();
    if script.is_empty() {
        return Ok(());
    }
    run_in(netns, "tc", &script).map(drop)
}

/// Puts a VM on the pod network of the namespace at `netns_path`: reads the pod's interface
/// ([`read_config`]), records the run, creates the tap `isolt<first 8 chars of id>` inside the
/// namespace with `create_tap(name)`, called on a thread that has joined the namespace (it
/// opens `/dev/net/tun`, and the caller keeps what it returns: the tap lives while a descriptor
/// of it is open), gives the tap the interface's MTU, brings it up and redirects each one's
/// ingress to the other (tc). On error, whatever was done is undone.
pub fn attach_vm_to_netns<T: Send>(
    id: &str,
    state_root: &Path,
    netns_path: &Path,
    create_tap: impl FnOnce(&str) -> Result<T, String> + Send,
) -> Result<(PodAttachment, T), NetworkError> {
    let tap = super::veth::host_name(id)?.replacen(super::VETH_PREFIX, super::TAP_PREFIX, 1);
    if !nix::unistd::geteuid().is_root() {
        return Err(NetworkError::NotRoot);
    }
    let netns = open_netns(netns_path)?;
    let config = read_config(netns_path, &netns)?;
    let meta = fs::metadata(format!("/proc/self/fd/{}", netns.as_raw_fd())).map_err(|e| {
        NetworkError::Netns {
            path: netns_path.to_owned(),
            reason: e.to_string(),
        }
    })?;
    let pid = std::process::id() as i32;
    let record = PodRecord {
        id: id.to_owned(),
        netns: netns_path.to_owned(),
        netns_dev: meta.dev(),
        netns_ino: meta.ino(),
        tap: tap.clone(),
        config: config.clone(),
        pid,
        start_time: start_time(pid).unwrap_or(0),
    };
    let dir = pods_dir(state_root);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| state_error(&dir, e))?;
    let path = dir.join(format!("{id}.json"));
    let tmp = dir.join(format!(".{id}.json.tmp"));
    fs::write(
        &tmp,
        serde_json::to_vec(&record).expect("a record serializes"),
    )
    .and_then(|()| fs::rename(&tmp, &path))
    .map_err(|e| state_error(&path, e))?;
    let mut attachment = PodAttachment {
        record: path,
        netns,
        tap: tap.clone(),
        config,
        released: false,
    };
    // The tap is born in the namespace of the thread that opens /dev/net/tun: a thread of its
    // own joins the pod's, and ends there.
    let netns_fd = attachment.netns.as_fd();
    let made = std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(netns_fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("cannot enter the pod's network namespace: {e}"))?;
            create_tap(&tap)
        })
        .join()
        .unwrap_or_else(|_| Err("the thread creating it panicked".into()))
    })
    .map_err(|reason| NetworkError::Tap {
        name: tap.clone(),
        reason,
    });
    let made = match made {
        Ok(t) => t,
        Err(e) => {
            // Nothing was changed in the namespace yet: only the record goes.
            attachment.released = true;
            let _ = remove_record(&attachment.record);
            return Err(e);
        }
    };
    let interface = &attachment.config.interface;
    let mtu = attachment.config.mtu;
    run_in(
        &attachment.netns,
        "ip",
        &format!("link set dev {tap} mtu {mtu} up\n"),
    )?;
    // The pod's interface must have no ingress qdisc yet: another VM's (two VMs cannot be
    // the same pod on the wire) or the pod's own, which is not ours to replace.
    if let Err(e) = run_in(
        &attachment.netns,
        "tc",
        &format!("qdisc add dev {interface} ingress\n"),
    ) {
        // Not ours: keep it.
        attachment.released = true;
        let _ = remove_record(&attachment.record);
        return Err(NetworkError::Netns {
            path: netns_path.to_owned(),
            reason: format!(
                "its interface {interface} already has an ingress qdisc (another VM on this pod, or the pod's own traffic control) and cannot be redirected to a VM ({e})"
            ),
        });
    }
    let redirect = |from: &str, to: &str| {
        format!(
            "filter add dev {from} parent ffff: protocol all u32 match u8 0 0 action mirred egress redirect dev {to}\n"
        )
    };
    let script = format!(
        "{}qdisc add dev {tap} ingress\n{}",
        redirect(interface, &tap),
        redirect(&tap, interface)
    );
    // On error the attachment's drop removes the qdiscs and the record.
    run_in(&attachment.netns, "tc", &script)?;
    tracing::debug!(
        mode = "pod",
        netns = %netns_path.display(),
        interface = %interface,
        address = %attachment.config.address,
        gateway = %attachment.config.gateway,
        mac = %super::format_mac(attachment.config.mac),
        tap = %tap,
        "VM network attached to the pod's"
    );
    Ok((attachment, made))
}

/// After a [`PodAttachment::hand_over`]: undoes the redirection recorded at `record` if the
/// calling process still owns it (same pid and start time), and removes the record.
pub fn release_held(record: &Path) -> Result<(), NetworkError> {
    let Some(rec) = read_record(record) else {
        return Ok(());
    };
    let pid = std::process::id() as i32;
    if rec.pid != pid || Some(rec.start_time) != start_time(pid) {
        return Ok(());
    }
    release_record(record, &rec)
}

fn read_record(path: &Path) -> Option<PodRecord> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// Undoes a record's redirection if its namespace is still the one recorded, then removes it.
fn release_record(path: &Path, rec: &PodRecord) -> Result<(), NetworkError> {
    if let Ok(netns) = open_netns(&rec.netns) {
        let same = fs::metadata(format!("/proc/self/fd/{}", netns.as_raw_fd()))
            .is_ok_and(|m| (m.dev(), m.ino()) == (rec.netns_dev, rec.netns_ino));
        if same {
            teardown(&netns, &rec.config.interface, &rec.tap)?;
        }
    }
    // Else the namespace is gone (and with it the qdiscs), or the path names another now.
    remove_record(path)
}

/// Part of [`super::sweep`]: undoes the redirections of runs whose isol died (also called
/// alone, on a state root of pod records only: isol-runc's container directory).
pub fn sweep(state_root: &Path) {
    let Ok(entries) = fs::read_dir(pods_dir(state_root)) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(rec) = read_record(&path) else {
            // A torn write by a dead isol: nothing was changed before the record was whole.
            let _ = fs::remove_file(&path);
            continue;
        };
        if rec.owner_alive() {
            continue;
        }
        if let Err(e) = release_record(&path, &rec) {
            tracing::warn!("cleaning up the pod network of dead run {}: {e}", rec.id);
        }
    }
}

/// The live run `id` on a pod's network, for [`super::lookup`].
pub(crate) fn lookup(state_root: &Path, id: &str) -> Option<super::RunNetwork> {
    let rec = read_record(&pods_dir(state_root).join(format!("{id}.json")))?;
    rec.owner_alive().then(|| super::RunNetwork {
        address: rec.config.address,
        prefix: Some(rec.config.prefix),
        gateway: Some(rec.config.gateway),
        mac: rec.config.mac,
        link: rec.tap,
        ports: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINKS: &str = r#"[{"ifindex":1,"ifname":"lo","mtu":65536,"link_type":"loopback","address":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
        {"ifindex":3,"ifname":"eth0","mtu":1500,"link_type":"ether","address":"0a:58:0a:16:00:05","addr_info":[{"family":"inet","local":"10.22.0.5","prefixlen":16},{"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#;
    const ROUTES: &str = r#"[{"dst":"default","gateway":"10.22.0.1","dev":"eth0","flags":[]}]"#;

    #[test]
    fn a_cni_pod_s_interface_is_read() {
        let c = parse_config(Path::new("/run/netns/p"), LINKS, ROUTES).unwrap();
        assert_eq!(
            c,
            PodConfig {
                interface: "eth0".into(),
                mac: [0x0a, 0x58, 0x0a, 0x16, 0, 5],
                address: Ipv4Addr::new(10, 22, 0, 5),
                prefix: 16,
                gateway: Ipv4Addr::new(10, 22, 0, 1),
                mtu: 1500,
            }
        );
    }

    #[test]
    fn what_a_vm_cannot_take_over_is_refused_in_one_line() {
        let p = Path::new("/run/netns/p");
        let lo_only = r#"[{"ifname":"lo","link_type":"loopback","address":"00:00:00:00:00:00"}]"#;
        let two = LINKS.replace("}]}]", "}]},{\"ifname\":\"eth1\",\"link_type\":\"ether\"}]");
        let no_v4 = LINKS.replace(
            "\"family\":\"inet\",\"local\":\"10",
            "\"family\":\"x\",\"local\":\"10",
        );
        let small = LINKS.replace("\"mtu\":1500", "\"mtu\":1400");
        let taken = LINKS.replace(
            "}]}]",
            "}]},{\"ifname\":\"isolt1234abcd\",\"link_type\":\"ether\"}]",
        );
        for (links, routes, why) in [
            (lo_only, ROUTES, "no interface besides loopback"),
            (&two, ROUTES, "2 interfaces besides loopback (eth0, eth1)"),
            (LINKS, "[]", "no IPv4 default route through eth0"),
            (&no_v4, ROUTES, "no IPv4 address"),
            (&small, ROUTES, "MTU 1400"),
            (
                &taken,
                ROUTES,
                "another VM already took over its interface (its tap isolt1234abcd is there)",
            ),
        ] {
            let e = parse_config(p, links, routes).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert!(
                e.starts_with("Network namespace /run/netns/p cannot be used: "),
                "{e}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn isol_s_own_namespace_and_other_files_are_refused() {
        let e = open_netns(Path::new("/proc/self/ns/net"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("isol's own"), "{e}");
        let e = open_netns(Path::new("/proc/self/ns/uts"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a network namespace"), "{e}");
        let e = open_netns(Path::new("/nonexistent/netns"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/netns") && e.contains("No such file"),
            "{e}"
        );
    }
}
