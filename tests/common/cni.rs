//! Network namespaces for the pod network tests (tests/pod_net.rs, tests/oci_vm.rs): one made
//! with `ip netns add` and a veth, or the CRI way, by Debian's CNI `bridge` and `host-local`
//! plugins run with a JSON configuration on stdin.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `sh -c SCRIPT`, its stdout; panics with its stderr on failure.
pub fn sh(script: &str) -> String {
    let o = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A network namespace `ip netns add NAME`, deleted on drop (with the veths inside).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&format!("ip netns add {name}"));
        Netns {
            name: name.to_owned(),
        }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }

    /// `SCRIPT` run inside the namespace.
    pub fn sh(&self, script: &str) -> String {
        sh(&format!("ip netns exec {} sh -c '{script}'", self.name))
    }

    /// A veth pair: `host` on the host with `.1/24` of `net`, `eth0` inside with `.2/24`, up,
    /// the default route via `.1`: what CNI's bridge plugin leaves, without the bridge.
    pub fn with_veth(name: &str, host: &str, net: &str) -> Netns {
        let ns = Netns::new(name);
        sh(&format!(
            "ip link del {host} 2>/dev/null; ip link add name {host} type veth peer name eth0 netns {name} && \
             ip addr add {net}.1/24 dev {host} && ip link set {host} up"
        ));
        ns.sh(&format!(
            "ip addr add {net}.2/24 dev eth0 && ip link set eth0 up && ip link set lo up && \
             ip route add default via {net}.1"
        ));
        ns
    }

    /// The namespace's links, one name a line.
    pub fn links(&self) -> Vec<String> {
        self.sh("ip -o link show")
            .lines()
            .filter_map(|l| Some(l.split(':').nth(1)?.trim().split('@').next()?.to_owned()))
            .collect()
    }

    /// What tc has on the namespace's ingress side: qdiscs and filters.
    pub fn ingress(&self) -> String {
        self.sh("tc qdisc show ingress; for d in $(ls /sys/class/net); do tc filter show dev $d ingress; done")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// A pod network made as CRI makes it: a namespace, and Debian's CNI `bridge` plugin with
/// `host-local` addresses run on it (ADD; DEL and the bridge removed on drop).
pub struct CniPod {
    pub ns: Netns,
    conf: String,
    data: tempfile::TempDir,
    bridge: String,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

pub const CNI_PATH: &str = "/usr/lib/cni";

pub fn cni(command: &str, ns: &Netns, conf: &str) -> String {
    let mut child = Command::new(format!("{CNI_PATH}/bridge"))
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &ns.name)
        .env("CNI_NETNS", ns.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("Debian's containernetworking-plugins (setup.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "CNI bridge {command}: {out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The configuration the one plugin of the network list `conflist` is run with, as libcni
/// gives it: the plugin's section with the list's `cniVersion` and `name`.
fn plugin_config(conflist: &str) -> String {
    let list: serde_json::Value = serde_json::from_str(conflist).unwrap();
    let mut plugin = list["plugins"][0].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    plugin["name"] = list["name"].clone();
    plugin.to_string()
}

impl CniPod {
    /// The pod network `name` on a bridge `bridge` that is its gateway on `subnet`: the
    /// bench's CRI network ([`isol_bench::cri::cni_conflist`]).
    pub fn new(name: &str, bridge: &str, subnet: &str) -> CniPod {
        let ns = Netns::new(name);
        let data = tempfile::tempdir().unwrap();
        let conf = plugin_config(&isol_bench::cri::cni_conflist(
            name,
            bridge,
            subnet,
            data.path(),
        ));
        let result: serde_json::Value = serde_json::from_str(&cni("ADD", &ns, &conf)).unwrap();
        let ip = &result["ips"][0];
        let address = ip["address"].as_str().unwrap();
        CniPod {
            address: address.split('/').next().unwrap().parse().unwrap(),
            gateway: ip["gateway"].as_str().unwrap().parse().unwrap(),
            ns,
            conf,
            data,
            bridge: bridge.to_owned(),
        }
    }

    /// The namespace holds only what CNI put there (lo, eth0) and no tc.
    pub fn assert_untouched(&self, context: &str) {
        let mut links = self.ns.links();
        links.sort();
        assert_eq!(links, ["eth0", "lo"], "{context}: links in the pod");
        assert_eq!(self.ns.ingress().trim(), "", "{context}: tc in the pod");
        assert!(
            self.ns
                .sh("ip -4 -o addr show eth0")
                .contains(&format!("{}/", self.address)),
            "{context}: the pod's address"
        );
    }
}

impl Drop for CniPod {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| cni("DEL", &self.ns, &self.conf));
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
        let _ = &self.data;
    }
}
