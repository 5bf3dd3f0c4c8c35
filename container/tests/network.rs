//! Bridge networking for real, as root: real network namespaces (`unshare -n sleep`), real veths,
//! the real `isol0` bridge and `ip isol` nft table, real pings between them.
//!
//! Traffic only goes to addresses these tests create (container addresses and the bridge's
//! gateway address). The bridge is host-wide, so every test that touches it holds `BRIDGE_LOCK`,
//! and each one checks that it leaves the host as it found it: no `isol*` link, no `ip isol`
//! table, ip_forward restored.
//!
//! Some scenarios need a second isol process (one that gets SIGKILLed, or one with a different
//! `ISOL_BRIDGE_SUBNET`): the test binary re-runs itself with `ISOL_NET_TEST_HELPER` set, which
//! turns the `helper` test into that process.

mod network {
    use std::net::Ipv4Addr;
    use std::path::Path;
    use std::process::{Child, Command, Output, Stdio};
    use std::sync::{Arc, Barrier, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use isol_container::NetworkMode;
    use isol_container::network::{Attachment, BRIDGE, NetworkError, attach, sweep};

    static BRIDGE_LOCK: Mutex<()> = Mutex::new(());

    /// One bridge test's world: the bridge to itself, a state root, and the ip_forward value to
    /// come back to. Declared first in a test, so it is dropped last: by then every attachment has
    /// been released (or dropped), and a sweep removes what a failed test or a killed helper left.
    struct Scene {
        state: tempfile::TempDir,
        forward_before: String,
        _lock: MutexGuard<'static, ()>,
    }

    impl Scene {
        fn new() -> Self {
            let lock = BRIDGE_LOCK
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Scene {
                state: tempfile::tempdir().unwrap(),
                forward_before: ip_forward(),
                _lock: lock,
            }
        }

        fn root(&self) -> &Path {
            self.state.path()
        }

        /// The host as it should be when no isol container runs.
        fn assert_clean(&self) {
            assert_eq!(
                host_isol_links(),
                Vec::<String>::new(),
                "isol links left on the host"
            );
            assert!(!nft_has_isol_table(), "nft table ip isol left behind");
            assert_eq!(ip_forward(), self.forward_before, "ip_forward not restored");
        }
    }

    impl Drop for Scene {
        fn drop(&mut self) {
            sweep(self.state.path());
        }
    }

    /// A process in its own network namespace, standing in for a container. Killed on drop.
    struct Netns {
        child: Child,
    }

    fn netns_link(pid: &str) -> std::io::Result<std::path::PathBuf> {
        std::fs::read_link(format!("/proc/{pid}/ns/net"))
    }

    impl Netns {
        fn new() -> Self {
            let child = Command::new("unshare")
                .args(["--net", "sleep", "120"])
                .stdin(Stdio::null())
                .spawn()
                .expect("spawn unshare (util-linux)");
            let netns = Netns { child };
            // unshare(1) switches namespace after it starts: wait until it has.
            let ours = netns_link("self").unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            while netns_link(&netns.pid().to_string()).ok().as_ref() == Some(&ours) {
                assert!(Instant::now() < deadline, "unshare did not create a netns");
                std::thread::sleep(Duration::from_millis(5));
            }
            netns
        }

        fn pid(&self) -> i32 {
            self.child.id() as i32
        }

        fn run(&self, args: &[&str]) -> Output {
            Command::new("nsenter")
                .arg(format!("--net=/proc/{}/ns/net", self.pid()))
                .args(args)
                .output()
                .expect("run nsenter")
        }

        fn ping(&self, address: Ipv4Addr) -> bool {
            let output = self.run(&["ping", "-c1", "-W2", &address.to_string()]);
            output.status.success()
        }

        fn eth0_addresses(&self) -> String {
            let output = self.run(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
            String::from_utf8_lossy(&output.stdout).into_owned()
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn host_isol_links() -> Vec<String> {
        let output = Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap().to_owned())
            .filter(|name| name.starts_with("isol"))
            .collect()
    }

    fn nft_has_isol_table() -> bool {
        let output = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line.contains("isol"))
    }

    fn ip_forward() -> String {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
            .unwrap()
            .trim()
            .to_owned()
    }

    fn link_exists(name: &str) -> bool {
        Path::new("/sys/class/net").join(name).exists()
    }

    fn bridge(id: &str, netns: &Netns, state_root: &Path) -> Attachment {
        attach(NetworkMode::Bridge, id, netns.pid(), state_root, &[])
            .unwrap_or_else(|error| panic!("attach {id}: {error}"))
            .expect("bridge mode returns an attachment")
    }

    /// Runs this test binary as a helper process (see the `helper` test).
    fn run_helper(mode: &str, state_root: &Path, pid: i32, subnet: Option<&str>) -> Output {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([
                "--exact",
                "network::helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("ISOL_NET_TEST_HELPER", mode)
            .env("ISOL_NET_TEST_STATE", state_root)
            .env("ISOL_NET_TEST_PID", pid.to_string());
        match subnet {
            Some(subnet) => command.env("ISOL_BRIDGE_SUBNET", subnet),
            None => command.env_remove("ISOL_BRIDGE_SUBNET"),
        };
        command.output().unwrap()
    }

    /// The `KEY=value` line a helper printed.
    fn helper_value(output: &Output, key: &str) -> Option<String> {
        let prefix = format!("{key}=");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find_map(|line| line.strip_prefix(&prefix).map(str::to_owned))
    }

    /// Not a test of its own: when run with `ISOL_NET_TEST_HELPER`, acts as a second isol.
    /// * `attach-and-die`: attach, then SIGKILL itself (no release, no destructors).
    /// * `attach-ping-release`: attach, ping the gateway from the netns, release.
    #[test]
    fn helper() {
        let Ok(mode) = std::env::var("ISOL_NET_TEST_HELPER") else {
            return;
        };
        // The harness has printed "test network::helper ... " without a newline.
        println!();
        let state_root = std::env::var_os("ISOL_NET_TEST_STATE").unwrap();
        let pid: i32 = std::env::var("ISOL_NET_TEST_PID").unwrap().parse().unwrap();
        let attached = attach(
            NetworkMode::Bridge,
            "helper01",
            pid,
            Path::new(&state_root),
            &[],
        );
        let attachment = match attached {
            Ok(attachment) => attachment.unwrap(),
            Err(error) => {
                println!("ERROR={error}");
                println!("KIND={error:?}");
                return;
            }
        };
        println!("ADDRESS={}", attachment.address());
        println!("GATEWAY={}", attachment.gateway());
        match mode.as_str() {
            "attach-and-die" => {
                use std::io::Write;
                std::io::stdout().flush().unwrap();
                nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
                unreachable!();
            }
            "attach-ping-release" => {
                let ping = Command::new("nsenter")
                    .arg(format!("--net=/proc/{pid}/ns/net"))
                    .args(["ping", "-c1", "-W2", &attachment.gateway().to_string()])
                    .output()
                    .unwrap();
                println!("PING={}", ping.status.success());
                println!(
                    "RELEASE={:?}",
                    attachment.release().map_err(|e| e.to_string())
                );
            }
            other => panic!("unknown helper mode {other}"),
        }
    }

    #[test]
    fn two_containers_reach_each_other_and_the_gateway() {
        let scene = Scene::new();
        let (one, two) = (Netns::new(), Netns::new());

        let a = bridge("0a1b2c3d4e5f", &one, scene.root());
        let b = bridge("99887766", &two, scene.root());
        assert_ne!(a.address(), b.address());
        assert_eq!(a.gateway(), b.gateway());
        assert_eq!(
            u32::from(a.gateway()) + 1,
            u32::from(a.address()),
            "lowest free address"
        );
        assert_eq!(u32::from(a.gateway()) + 2, u32::from(b.address()));
        assert_eq!(a.host_veth(), "isolv0a1b2c3d");
        assert!(
            link_exists(BRIDGE) && link_exists("isolv0a1b2c3d") && link_exists("isolv99887766")
        );
        assert_eq!(ip_forward(), "1");
        assert!(nft_has_isol_table());
        assert!(
            one.eth0_addresses()
                .contains(&format!("inet {}/", a.address()))
        );
        let route = one.run(&["ip", "-4", "route", "show", "default"]);
        assert!(
            String::from_utf8_lossy(&route.stdout).contains(&format!("via {}", a.gateway())),
            "{route:?}"
        );

        assert!(one.ping(b.address()), "container one cannot ping two");
        assert!(two.ping(a.address()), "container two cannot ping one");
        assert!(
            one.ping(a.gateway()) && two.ping(b.gateway()),
            "cannot ping the gateway"
        );
        assert!(
            one.ping(Ipv4Addr::LOCALHOST),
            "loopback is not up in the container"
        );

        // The first release keeps the bridge for the second container.
        a.release().unwrap();
        assert!(!link_exists("isolv0a1b2c3d"));
        assert!(link_exists(BRIDGE) && nft_has_isol_table());
        assert!(two.ping(b.gateway()));
        b.release().unwrap();
        scene.assert_clean();
        assert!(
            std::fs::read_dir(scene.root().join("net/addr"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[test]
    fn release_on_drop_and_after_the_container_exited() {
        let scene = Scene::new();
        {
            let one = Netns::new();
            let _dropped = bridge("d0d0d0d0", &one, scene.root());
        }
        scene.assert_clean();

        // The container exits first: its netns (and so the veth) goes away on its own.
        let one = Netns::new();
        let attachment = bridge("e1e1e1e1", &one, scene.root());
        drop(one);
        attachment.release().unwrap();
        scene.assert_clean();
    }

    #[test]
    fn concurrent_attach_and_release() {
        const N: usize = 4;
        let scene = Scene::new();
        let state = Arc::new(scene.root().to_owned());
        let namespaces: Vec<Netns> = (0..N).map(|_| Netns::new()).collect();
        let barrier = Arc::new(Barrier::new(N));
        let threads: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(i, netns)| {
                let (pid, state, barrier) = (netns.pid(), state.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    attach(
                        NetworkMode::Bridge,
                        &format!("c0ncur{i:02}"),
                        pid,
                        &state,
                        &[],
                    )
                })
            })
            .collect();
        let attachments: Vec<Attachment> = threads
            .into_iter()
            .map(|thread| thread.join().unwrap().unwrap().unwrap())
            .collect();
        let mut addresses: Vec<Ipv4Addr> = attachments.iter().map(Attachment::address).collect();
        addresses.sort();
        addresses.dedup();
        assert_eq!(addresses.len(), N, "two containers got the same address");
        assert!(namespaces[0].ping(attachments[N - 1].address()));
        assert!(namespaces[N - 1].ping(attachments[0].address()));

        let barrier = Arc::new(Barrier::new(N));
        let threads: Vec<_> = attachments
            .into_iter()
            .map(|attachment| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    attachment.release()
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        scene.assert_clean();
    }

    #[test]
    fn sweep_tears_down_after_a_killed_isol() {
        let scene = Scene::new();
        let orphan = Netns::new();

        let output = run_helper("attach-and-die", scene.root(), orphan.pid(), None);
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&output.status),
            Some(libc::SIGKILL),
            "{output:?}"
        );
        let address = helper_value(&output, "ADDRESS").expect("the helper attached");
        // The killed isol left everything behind.
        assert!(link_exists(BRIDGE) && link_exists("isolvhelper01") && nft_has_isol_table());
        assert!(scene.root().join("net/addr").join(&address).exists());

        sweep(scene.root());
        assert!(!scene.root().join("net/addr").join(&address).exists());
        scene.assert_clean();
    }

    #[test]
    fn sweep_keeps_the_bridge_for_live_containers() {
        let scene = Scene::new();
        let (orphan, live) = (Netns::new(), Netns::new());

        // The live container attaches first (a later attach would prune the dead owner itself).
        let survivor = bridge("11ve11ve", &live, scene.root());
        let output = run_helper("attach-and-die", scene.root(), orphan.pid(), None);
        let dead_address: Ipv4Addr = helper_value(&output, "ADDRESS").unwrap().parse().unwrap();
        assert!(link_exists("isolvhelper01"));

        sweep(scene.root());
        assert!(
            !link_exists("isolvhelper01"),
            "the dead owner's veth was not deleted"
        );
        assert!(link_exists(BRIDGE) && nft_has_isol_table() && ip_forward() == "1");
        assert!(
            live.ping(survivor.gateway()),
            "sweep broke a live container"
        );

        // The dead owner's address is free again.
        let reuse = Netns::new();
        let second = bridge("5ec0nd00", &reuse, scene.root());
        assert_eq!(second.address(), dead_address);
        second.release().unwrap();
        survivor.release().unwrap();
        scene.assert_clean();
    }

    #[test]
    fn attach_prunes_a_killed_isol_too() {
        let scene = Scene::new();
        let orphan = Netns::new();
        let output = run_helper("attach-and-die", scene.root(), orphan.pid(), None);
        assert!(helper_value(&output, "ADDRESS").is_some(), "{output:?}");
        // No sweep: the next attach notices the dead owner, rebuilds the shared setup and
        // still restores the ip_forward value saved by the dead isol.
        let fresh = Netns::new();
        let attachment = bridge("f4e5f4e5", &fresh, scene.root());
        assert!(!link_exists("isolvhelper01"));
        assert!(fresh.ping(attachment.gateway()));
        attachment.release().unwrap();
        scene.assert_clean();
    }

    #[test]
    fn bad_bridge_subnet_gives_a_clear_error() {
        let scene = Scene::new();
        let netns = Netns::new();
        for (value, reason) in [
            ("banana", "CIDR"),
            ("10.88.0.0/33", "prefix length"),
            ("10.88.0.5/24", "did you mean 10.88.0.0/24"),
            ("203.0.113.0/24", "private"),
        ] {
            let output = run_helper(
                "attach-ping-release",
                scene.root(),
                netns.pid(),
                Some(value),
            );
            let error = helper_value(&output, "ERROR").unwrap_or_else(|| panic!("{output:?}"));
            assert!(
                error.starts_with(&format!("ISOL_BRIDGE_SUBNET={value} is not usable: ")),
                "{error}"
            );
            assert!(error.contains(reason), "{error}");
            assert!(
                helper_value(&output, "KIND")
                    .unwrap()
                    .starts_with("InvalidSubnet")
            );
        }
        assert!(
            !scene.root().join("net").exists(),
            "a bad subnet touched the state"
        );
        scene.assert_clean();
    }

    #[test]
    fn custom_subnet_and_subnet_in_use() {
        let scene = Scene::new();
        let netns = Netns::new();

        let output = run_helper(
            "attach-ping-release",
            scene.root(),
            netns.pid(),
            Some("10.89.7.0/24"),
        );
        assert_eq!(
            helper_value(&output, "ADDRESS").as_deref(),
            Some("10.89.7.2"),
            "{output:?}"
        );
        assert_eq!(
            helper_value(&output, "GATEWAY").as_deref(),
            Some("10.89.7.1")
        );
        assert_eq!(helper_value(&output, "PING").as_deref(), Some("true"));
        assert_eq!(helper_value(&output, "RELEASE").as_deref(), Some("Ok(())"));
        scene.assert_clean();

        // While a container uses the default subnet, another subnet is refused.
        let live = Netns::new();
        let attachment = bridge("da7ada7a", &live, scene.root());
        let output = run_helper(
            "attach-ping-release",
            scene.root(),
            netns.pid(),
            Some("10.89.7.0/24"),
        );
        let error = helper_value(&output, "ERROR").unwrap_or_else(|| panic!("{output:?}"));
        assert!(error.contains("cannot be used now"), "{error}");
        assert!(live.ping(attachment.gateway()));
        attachment.release().unwrap();
        scene.assert_clean();
    }

    #[test]
    fn refusals_leave_nothing_behind() {
        let scene = Scene::new();

        for mode in [NetworkMode::None, NetworkMode::Host] {
            assert!(attach(mode, "abc", 1, scene.root(), &[]).unwrap().is_none());
        }
        // The test process is in the host netns: wiring "its" eth0 would wreck the host.
        let me = std::process::id() as i32;
        let error = attach(NetworkMode::Bridge, "abc", me, scene.root(), &[]).unwrap_err();
        assert!(matches!(error, NetworkError::SharedNetns { .. }), "{error}");

        // Two ids with the same first 8 characters would share a veth name.
        let (one, two) = (Netns::new(), Netns::new());
        let first = bridge("abcdef0123", &one, scene.root());
        let error = attach(
            NetworkMode::Bridge,
            "abcdef0199",
            two.pid(),
            scene.root(),
            &[],
        )
        .unwrap_err();
        assert!(matches!(error, NetworkError::VethInUse { .. }), "{error}");
        assert!(
            error
                .to_string()
                .starts_with("Veth isolvabcdef01 is already used")
        );
        assert!(one.ping(first.gateway()));
        first.release().unwrap();
        scene.assert_clean();
    }
}
