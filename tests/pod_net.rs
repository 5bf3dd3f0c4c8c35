//! `--network ns:PATH`: a run on an existing network namespace's network, as CRI pods have it
//! (a CNI plugin configured the namespace: one veth `eth0` with an address and a default route).
//! A container joins the namespace; a VM takes it over: a tap inside it, tc-redirected both ways
//! to `eth0`, the guest with eth0's MAC, address and gateway (`isol_container::network::pod`).
//!
//! The library and the refusals run on the host (root, `/dev/net/tun`): a namespace made with
//! `ip netns add` and a veth pair, frames through the redirection read and written on the tap.
//! The VM tests boot guests: they run in the lab (`./test.sh`) and skip elsewhere unless
//! `ISOL_REQUIRE_KVM` is set; their namespace is made the CRI way, by Debian's CNI `bridge` and
//! `host-local` plugins run with a JSON configuration on stdin.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cni::*;
use common::*;

fn eth0_mac(ns: &Netns) -> [u8; 6] {
    let text = ns.sh("cat /sys/class/net/eth0/address");
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// The library on the host: the tap is made inside the namespace with eth0's MTU, tc redirects
/// both ways (an ARP request from the host's end arrives on the tap; the reply written to the
/// tap reaches the host, whose neighbour table then holds the pod's MAC), `lookup` finds the
/// run, and the release leaves the namespace as it was.
#[test]
fn a_tap_in_a_pod_namespace_is_redirected_both_ways_and_removed() {
    let _g = root_test();
    let ns = Netns::with_veth("podnt1", "podh1", "10.251.77");
    let state = tempfile::tempdir().unwrap();
    let (pod, tap) = isol_container::network::pod::attach_vm_to_netns(
        "podtest01",
        state.path(),
        &ns.path(),
        |name| isol_devices::virtio::net::Tap::create(name).map_err(|e| e.to_string()),
    )
    .unwrap();
    let mac = eth0_mac(&ns);
    let c = pod.config().clone();
    assert_eq!(c.interface, "eth0");
    assert_eq!(c.mac, mac);
    assert_eq!(c.address, Ipv4Addr::new(10, 251, 77, 2));
    assert_eq!(c.prefix, 24);
    assert_eq!(c.gateway, Ipv4Addr::new(10, 251, 77, 1));
    assert_eq!(c.mtu, 1500);
    assert_eq!(tap.name(), "isoltpodtest0");
    assert_eq!(pod.tap(), "isoltpodtest0");
    let mut links = ns.links();
    links.sort();
    assert_eq!(links, ["eth0", "isoltpodtest0", "lo"]);
    assert!(ns.sh("ip -o link show isoltpodtest0").contains("mtu 1500"));
    let ingress = ns.ingress();
    assert!(
        ingress.contains("mirred (Egress Redirect to device isoltpodtest0)")
            && ingress.contains("mirred (Egress Redirect to device eth0)"),
        "{ingress}"
    );
    let found = isol_container::network::lookup(state.path(), "podtest01").unwrap();
    assert_eq!(found.address, c.address);
    assert_eq!(found.mac, mac);
    assert_eq!(found.gateway, Some(c.gateway));

    // The host asks for the pod's address: the request reaches the tap, not the namespace.
    let mut tap = std::fs::File::from(tap.into_fd());
    let _ = Command::new("ip")
        .args(["neigh", "del", "10.251.77.2", "dev", "podh1"])
        .output();
    let mut pinger = Command::new("ping")
        .args(["-c", "3", "-W", "1", "10.251.77.2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let hdr = isol_devices::virtio::net::VNET_HDR_LEN;
    let deadline = Instant::now() + Duration::from_secs(10);
    let request = loop {
        let mut buf = [0u8; 2048];
        match tap.read(&mut buf) {
            Ok(n) if n >= hdr + 42 && buf[hdr + 12..hdr + 14] == [0x08, 0x06] => {
                break buf[hdr..n].to_vec();
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "no ARP request on the tap");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("reading the tap: {e}"),
        }
    };
    assert_eq!(&request[38..42], &[10, 251, 77, 2], "asks for the pod");
    // The reply, as the guest would send it, through the tap and eth0 to the host.
    let mut reply = vec![0u8; hdr];
    reply.extend_from_slice(&request[6..12]); // to the asker
    reply.extend_from_slice(&mac);
    reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
    reply.extend_from_slice(&mac);
    reply.extend_from_slice(&[10, 251, 77, 2]);
    reply.extend_from_slice(&request[22..28]); // its MAC
    reply.extend_from_slice(&request[28..32]); // its address
    tap.write_all(&reply).unwrap();
    let want = isol_container::network::format_mac(mac);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let neigh = sh("ip neigh show 10.251.77.2 dev podh1");
        if neigh.contains(&want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the host did not learn the pod's MAC {want}: {neigh}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = pinger.kill();
    let _ = pinger.wait();

    // Released: the tap goes with its descriptor, the redirection and the record with release.
    drop(tap);
    pod.release().unwrap();
    assert_eq!(ns.links().len(), 2, "{:?}", ns.links());
    assert_eq!(ns.ingress().trim(), "", "tc left in the namespace");
    assert!(isol_container::network::lookup(state.path(), "podtest01").is_none());
    assert_eq!(
        std::fs::read_dir(state.path().join("net/pods"))
            .unwrap()
            .count(),
        0
    );
    // The pod's own configuration is untouched.
    assert!(ns.sh("ip -4 -o addr show eth0").contains("10.251.77.2/24"));
    let _ = Command::new("ip").args(["link", "del", "podh1"]).output();
}

/// An ingress qdisc already on the pod's interface (another VM's, or the pod's own) is not
/// replaced: the attach fails saying so, keeps it, and leaves no tap or record.
#[test]
fn a_pod_interface_already_redirected_is_refused_and_kept() {
    let _g = root_test();
    let ns = Netns::with_veth("podnt2", "podh2", "10.251.78");
    ns.sh("tc qdisc add dev eth0 ingress");
    let state = tempfile::tempdir().unwrap();
    let e = isol_container::network::pod::attach_vm_to_netns(
        "podtest02",
        state.path(),
        &ns.path(),
        |name| isol_devices::virtio::net::Tap::create(name).map_err(|e| e.to_string()),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("already has an ingress qdisc"), "{e}");
    assert!(!e.contains('\n'), "{e}");
    assert_eq!(ns.links().len(), 2, "{:?}", ns.links());
    assert!(ns.sh("tc qdisc show dev eth0 ingress").contains("ingress"));
    assert_eq!(
        std::fs::read_dir(state.path().join("net/pods"))
            .unwrap()
            .count(),
        0
    );
    let _ = Command::new("ip").args(["link", "del", "podh2"]).output();
}

/// What cannot be a pod's network is a one-line error with exit status 125, before anything
/// is built: a missing path, a namespace with no interface or two, isol's own namespace, a
/// file that is not a namespace; on both backends where it applies.
#[test]
fn unusable_namespaces_are_refused_in_one_line() {
    let _g = root_test();
    let flag = |p: &Path| format!("ns:{}", p.display());
    assert_kvm_refused(
        &["--network", "ns:/nonexistent/netns", "busybox", "true"],
        &[],
        "Network namespace /nonexistent/netns cannot be used: No such file or directory",
    );
    let empty = Netns::new("podnt3");
    empty.sh("ip link set lo up");
    assert_kvm_refused(
        &["--network", &flag(&empty.path()), "busybox", "true"],
        &[],
        "no interface besides loopback",
    );
    let two = Netns::with_veth("podnt4", "podh4", "10.251.79");
    two.sh("ip tuntap add mode tap name eth1");
    assert_kvm_refused(
        &["--network", &flag(&two.path()), "busybox", "true"],
        &[],
        "2 interfaces besides loopback (eth0, eth1)",
    );
    assert_kvm_refused(
        &["--network", "ns:/proc/self/ns/net", "busybox", "true"],
        &[],
        "isol's own",
    );
    assert_kvm_refused(
        &["--network", "ns:/etc/hostname", "busybox", "true"],
        &[],
        "not a network namespace",
    );
    let o = isol(&[
        "run",
        "--network",
        "ns:/nonexistent/netns",
        "busybox",
        "true",
    ])
    .output()
    .unwrap();
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("/nonexistent/netns"), "{}", stderr(&o));
    let o = isol(&["run", "--network", "ns:", "busybox", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("ns:/run/netns/NAME"), "{}", stderr(&o));
    let _ = Command::new("ip").args(["link", "del", "podh4"]).output();
}

/// A container with `--network ns:PATH` joins the namespace: it sees the pod's eth0 and
/// address, and the namespace is as it was afterwards.
#[test]
fn a_container_joins_the_pod_namespace() {
    let _g = root_test();
    let ns = Netns::with_veth("podnt5", "podh5", "10.251.80");
    let out = ok(&[
        "run",
        "--network",
        &format!("ns:{}", ns.path().display()),
        "busybox",
        "--",
        "sh",
        "-c",
        "ip -4 -o addr show eth0 | awk '{print $4}'; ping -c1 -W5 10.251.80.1 >/dev/null && echo gw-ok",
    ]);
    assert_eq!(out, "10.251.80.2/24\ngw-ok\n");
    assert!(ns.sh("ip -4 -o addr show eth0").contains("10.251.80.2/24"));
    assert_no_leftovers("a container on a pod's namespace");
    let _ = Command::new("ip").args(["link", "del", "podh5"]).output();
}

fn line(out: &mut impl BufRead) -> String {
    let mut l = String::new();
    out.read_line(&mut l).unwrap();
    l.trim_end().to_string()
}

/// A VM on a CNI pod: the guest has the pod's address and eth0's MAC, pings the pod's gateway
/// (the CNI bridge on the host) and reaches a server there, the host reaches a server in the
/// VM at the pod's address, `isol inspect` shows the address; after the run the pod's
/// namespace has no tap and no tc, and nothing of isol is left on the host.
#[test]
fn a_vm_on_a_cni_pod_has_the_pod_s_address_and_both_ways_reach() {
    let _g = root_test();
    if !kvm_ready() {
        return;
    }
    let pod = CniPod::new("podvm1", "podbr1", "10.251.81.0/24");
    let mac = isol_container::network::format_mac(eth0_mac(&pod.ns));
    let gw = pod.gateway;
    let server = TcpListener::bind((gw, 0)).unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = server.accept() {
            let _ = s.write_all(b"hello-from-the-host\n");
        }
    });
    let script = format!(
        "ip -4 -o addr show eth0 | awk '{{print $4}}'; cat /sys/class/net/eth0/address; \
         ping -c1 -W10 {gw} >/dev/null && echo gw-ok; nc {gw} {port} </dev/null; \
         echo hello-from-the-pod-vm | nc -l -p 7001"
    );
    let mut vm = isol(&[
        "run",
        "--backend",
        "kvm",
        "--name",
        "podvm1",
        "--network",
        &format!("ns:{}", pod.ns.path().display()),
        "--json",
        "--timeout",
        "300",
        "busybox",
        "--",
        "sh",
        "-c",
        &script,
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(vm.stdout.take().unwrap());
    let first = line(&mut out);
    if !first.contains('/') {
        let _ = vm.kill();
        let mut err = String::new();
        let _ = vm.stderr.take().unwrap().read_to_string(&mut err);
        panic!("no address but {first:?}: {err}");
    }
    assert_eq!(first, format!("{}/24", pod.address));
    assert_eq!(line(&mut out), mac, "the guest NIC has eth0's MAC");
    assert_eq!(
        line(&mut out),
        "gw-ok",
        "the VM cannot ping the pod's gateway"
    );
    assert_eq!(line(&mut out), "hello-from-the-host");
    // While it runs: the tap and the redirection in the pod, the address in `isol inspect`.
    assert!(pod.ns.links().iter().any(|l| l.starts_with("isolt")));
    assert!(pod.ns.ingress().contains("mirred"));
    assert_eq!(
        ok(&["inspect", "--format", "{{.network.address}}", "podvm1"]).trim(),
        pod.address.to_string()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        match TcpStream::connect_timeout(&(pod.address, 7001).into(), Duration::from_secs(10)) {
            Ok(mut s) => {
                let mut got = String::new();
                s.read_to_string(&mut got).unwrap();
                break got;
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "cannot reach the VM at {}: {e}",
                    pod.address
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert_eq!(got, "hello-from-the-pod-vm\n");
    vm.stdout = Some(out.into_inner());
    let o = vm.wait_with_output().unwrap();
    let err = stderr(&o);
    assert_eq!(code(&o), 0, "{err}");
    let report = err.lines().rev().find(|l| l.starts_with('{')).unwrap();
    let v: serde_json::Value = serde_json::from_str(report).unwrap();
    assert_eq!(v["address"], pod.address.to_string(), "{v}");
    pod.assert_untouched("after the VM");
    assert_no_leftovers("a VM on a CNI pod");
}

/// An isol SIGKILLed while its VM runs on a pod: the tap goes with the VMM, and the next isol
/// (of either backend) removes the redirection from the pod's interface.
#[test]
fn nothing_is_left_in_the_pod_after_a_sigkill() {
    let _g = root_test();
    if !kvm_ready() {
        return;
    }
    let pod = CniPod::new("podvm2", "podbr2", "10.251.82.0/24");
    let mut vm = isol(&[
        "run",
        "--backend",
        "kvm",
        "--network",
        &format!("ns:{}", pod.ns.path().display()),
        "--timeout",
        "300",
        "busybox",
        "--",
        "sh",
        "-c",
        "ip -4 -o addr show eth0 | awk '{print $4}'; sleep 600",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = BufReader::new(vm.stdout.take().unwrap());
    assert_eq!(line(&mut out), format!("{}/24", pod.address));
    assert!(pod.ns.links().iter().any(|l| l.starts_with("isolt")));
    assert!(pod.ns.ingress().contains("mirred"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vm.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    vm.wait().unwrap();
    ok(&["run", "--backend", "kvm", "busybox", "true"]);
    pod.assert_untouched("after SIGKILL of isol and the next run");
    assert_no_leftovers("after SIGKILL of isol with a VM on a pod");
}
