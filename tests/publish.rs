//! `-p`/`--publish` on the container backend, for real: a server in a bridged container
//! reached from the host through 127.0.0.1 and through the host's own address, TCP and UDP,
//! conflicts refused, and no DNAT rule left after a stop, a failure or a SIGKILL of isol.
//! Host-wide (the bridge, the nft table, ports): run under `flock /tmp/isol-ctr.lock`.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::*;

/// The nft table isol owns, as `nft list` prints it (empty when there is none).
fn nft_table() -> String {
    let o = std::process::Command::new("nft")
        .args(["list", "table", "ip", "isol"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The first global IPv4 address of the host that is not isol's bridge.
fn host_address() -> Ipv4Addr {
    let o = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.contains("isol"))
        .find_map(|l| {
            let cidr = l.split_whitespace().nth(3)?;
            cidr.split('/').next()?.parse().ok()
        })
        .expect("the host has a global IPv4 address")
}

/// An HTTP GET of `/` at `to`, retried until the server answers (it may still be starting).
fn http_get(to: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = || -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        };
        match attempt() {
            Ok(body) if body.contains("200") => return body,
            other if Instant::now() > deadline => panic!("GET {to}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// A UDP round trip to `to` (the echo server below answers each datagram), retried.
fn udp_echo(to: SocketAddr, from: Ipv4Addr) -> String {
    let s = UdpSocket::bind((from, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 256];
    for _ in 0..40 {
        s.send_to(b"ping", to).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return String::from_utf8_lossy(&buf[..n]).into_owned();
        }
    }
    panic!("no UDP answer from {to}");
}

/// A UDP echo server on `port` in the network namespace of process `pid` (the container's
/// init): the socket is made there by a thread that entered it, and served here. busybox has
/// no UDP server; the socket is as real as the workload's would be.
fn udp_echo_server_in(pid: i32, port: u16) {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on a namespace descriptor this thread holds; it moves only this thread.
        let r = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).unwrap();
        let mut buf = [0u8; 256];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let reply = format!("pong {} from {from}", String::from_utf8_lossy(&buf[..n]));
            let _ = s.send_to(reply.as_bytes(), from);
        }
    });
}

/// The container's init on the host, for run `id`.
fn init_pid(id: &str) -> i32 {
    isol_container::state::run_info(&test_home().join("containers"), id)
        .expect("the run is running")
        .0
}

/// `isol FLAGS busybox -- sh -c SCRIPT`, the flags split at spaces.
fn words<'a>(flags: &'a str, script: &'a str) -> Vec<&'a str> {
    let mut v: Vec<&str> = flags.split(' ').collect();
    v.extend(["busybox", "--", "sh", "-c", script]);
    v
}

const HTTPD: &str = "mkdir -p /www && echo hello-from-the-container > /www/index.html && exec httpd -f -p 8080 -h /www";

#[test]
fn published_ports_reach_the_container_from_the_host() {
    let _g = root_test();
    let _stop = StopAll;
    let id = ok(&words(
        "run -d --network bridge -p 18080:8080 -p 18081:8081/udp -p 127.0.0.1::8080",
        HTTPD,
    ));
    let id = id.trim();
    udp_echo_server_in(init_pid(id), 8081);

    // TCP, through loopback (route_localnet + masquerade) and the host's own address.
    let body = http_get("127.0.0.1:18080".parse().unwrap());
    assert!(body.contains("hello-from-the-container"), "{body}");
    let host = host_address();
    let body = http_get(SocketAddr::from((host, 18080)));
    assert!(body.contains("hello-from-the-container"), "{body}");
    // UDP: the answer comes back from the published address.
    let reply = udp_echo("127.0.0.1:18081".parse().unwrap(), Ipv4Addr::LOCALHOST);
    assert!(reply.starts_with("pong ping from "), "{reply}");
    let reply = udp_echo(SocketAddr::from((host, 18081)), host);
    assert!(reply.starts_with("pong ping from "), "{reply}");

    // ps shows the ports, the chosen one included, which leads to the same server.
    let runs = ps_json();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let ports: Vec<String> = runs[0]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ports[..2],
        ["0.0.0.0:18080->8080/tcp", "0.0.0.0:18081->8081/udp"]
    );
    let chosen = ports[2]
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.strip_suffix("->8080/tcp"))
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("{ports:?}"));
    assert_ne!(chosen, 0);
    let body = http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, chosen)));
    assert!(body.contains("hello-from-the-container"), "{body}");
    let table = ok(&["ps"]);
    assert!(
        table.contains("PORTS") && table.contains("0.0.0.0:18080->8080/tcp"),
        "{table}"
    );

    // Taken ports are refused, whoever holds them, with one line and 125.
    let o = run(&words("run --network bridge -p 18080:80", "true"));
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("18080"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let held = listener.local_addr().unwrap().port();
    let o = run(&words(
        &format!("run --network bridge -p {held}:80"),
        "true",
    ));
    assert_eq!(code(&o), 125, "{}", stderr(&o));
    assert!(stderr(&o).contains("already in use"), "{}", stderr(&o));
    drop(listener);
    // Only the bridge has an address to lead the ports to.
    for network in ["none", "host"] {
        let o = run(&words(
            &format!("run --network {network} -p 18082:80"),
            "true",
        ));
        assert_eq!(code(&o), 125, "{}", stderr(&o));
        assert!(stderr(&o).contains("--network bridge"), "{}", stderr(&o));
    }
    let o = run(&words("run --network bridge -p 80:80/sctp", "true"));
    assert_eq!(code(&o), 125, "{}", stderr(&o));

    // A stop takes the rules, and the ports are free again.
    ok(&["stop", id]);
    assert!(!nft_table().contains("dnat"), "{}", nft_table());
    std::net::TcpListener::bind("0.0.0.0:18080").unwrap();
    UdpSocket::bind("0.0.0.0:18081").unwrap();
    assert_no_leftovers("published ports after stop");
}

#[test]
fn published_rules_go_after_a_failure_and_a_sigkill() {
    let _g = root_test();
    let _stop = StopAll;
    // A workload that cannot start: its run ends, its rules with it.
    let o = run(&words(
        "run --network bridge -p 18090:8080",
        "no-such-command",
    ));
    assert_eq!(code(&o), 127, "{}", stderr(&o));
    assert_no_leftovers("published ports after a failed run");

    // Another run keeps the bridge and the table up while the publishing one is killed.
    let other = ok(&words("run -d --network bridge", "sleep 300"));
    let id = ok(&words("run -d --network bridge -p 18091:8080", HTTPD));
    let id = id.trim();
    let body = http_get("127.0.0.1:18091".parse().unwrap());
    assert!(body.contains("hello-from-the-container"), "{body}");
    assert!(nft_table().contains("dport 18091"), "{}", nft_table());
    // SIGKILL of the run's isol (its supervisor): the container dies with it, and the next
    // isol's sweep takes its rule out of the table that the other run still uses.
    kill_supervisor(id);
    ok(&["run", "busybox", "true"]);
    let table = nft_table();
    assert!(
        table.contains("masquerade"),
        "the other run's table: {table}"
    );
    assert!(
        !table.contains("18091") && !table.contains("publish"),
        "{table}"
    );
    std::net::TcpListener::bind("0.0.0.0:18091").unwrap();
    ok(&["stop", other.trim()]);
    assert_no_leftovers("published ports after SIGKILL of isol");
}
