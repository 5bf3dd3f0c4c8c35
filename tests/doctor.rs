//! `isol doctor` tells the truth about this host: its verdicts agree with independent probes.

mod common;

use common::*;

#[test]
fn doctor_reports_every_area_and_agrees_with_the_host() {
    let out = ok(&["doctor", "--json"]);
    let checks: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let by_area = |a: &str| {
        checks
            .iter()
            .find(|c| c["area"] == a)
            .unwrap_or_else(|| panic!("no {a} line in {out}"))
            .clone()
    };
    for area in [
        "privileges",
        "user namespaces",
        "overlayfs",
        "cgroups",
        "kvm",
        "qemu",
        "nftables",
        "iproute2",
        "default image",
        "container init",
    ] {
        let c = by_area(area);
        let level = c["level"].as_str().unwrap();
        assert!(["ok", "warn", "missing"].contains(&level), "{c}");
        // Whatever is not ok says what to do.
        if level != "ok" {
            assert!(!c["action"].as_str().unwrap().is_empty(), "{c}");
        }
    }
    // The test binaries run beside the isol-init cargo built.
    assert_eq!(by_area("container init")["level"], "ok");
    // /dev/kvm: hardware or emulation, as the VMM's own probe finds.
    let kvm = by_area("kvm");
    match isol_vmm::measure_guest_speed() {
        Ok(t) if t < isol_vmm::EMULATED_THRESHOLD => assert_eq!(kvm["level"], "ok", "{kvm}"),
        Ok(_) => {
            assert_eq!(kvm["level"], "warn", "{kvm}");
            assert!(
                kvm["action"].as_str().unwrap().contains("isol lab"),
                "{kvm}"
            );
        }
        Err(_) => assert_eq!(kvm["level"], "missing", "{kvm}"),
    }
    // cgroups: the version the mounts show.
    let cg = by_area("cgroups");
    let is_v2 = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    let found = cg["found"].as_str().unwrap();
    assert!(found.starts_with(if is_v2 { "v2" } else { "v1" }), "{cg}");
    // Privileges: as the test runs.
    let root = nix::unistd::geteuid().is_root();
    assert_eq!(
        by_area("privileges")["level"],
        if root { "ok" } else { "warn" }
    );
}
