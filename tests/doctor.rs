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
        "kvm vmm",
    ] {
        let c = by_area(area);
        let level = c["level"].as_str().unwrap();
        assert!(["ok", "warn", "missing"].contains(&level), "{c}");
        // Whatever is not ok says what to do.
        if level != "ok" {
            assert!(!c["action"].as_str().unwrap().is_empty(), "{c}");
        }
    }
    // The test binaries run beside the isol-init and isol-vmm cargo built.
    assert_eq!(by_area("container init")["level"], "ok");
    let vmm = by_area("kvm vmm");
    assert_eq!(vmm["level"], "ok", "{vmm}");
    assert!(
        vmm["found"]
            .as_str()
            .unwrap()
            .contains(env!("CARGO_BIN_EXE_isol-vmm")),
        "{vmm}"
    );
    // /dev/kvm: hardware or emulation, as the VMM's own probe finds.
    let kvm = by_area("kvm");
    match isol_vmm::measure_guest_speed() {
        _ if isol_vmm::vstate::kvm::pvm_host() => {
            assert_eq!(kvm["level"], "warn", "{kvm}");
            assert!(kvm["found"].as_str().unwrap().contains("kvm_pvm"), "{kvm}");
        }
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

#[test]
fn doctor_says_where_the_vm_runs() {
    let level = |value: &str| {
        let o = isol(&["doctor", "--json"])
            .env("ISOL_VMM", value)
            .output()
            .unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        let checks: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
        let c = checks
            .into_iter()
            .find(|c| c["area"] == "kvm vmm")
            .expect("a kvm vmm line");
        assert!(!c["action"].as_str().unwrap().is_empty(), "{c}");
        c["level"].as_str().unwrap().to_string()
    };
    // Empty: no isol-vmm, the VM runs inside isol (works, costs memory).
    assert_eq!(level(""), "warn");
    // A path that is not there: `isol run --backend kvm` would fail.
    assert_eq!(level("/nonexistent/isol-vmm"), "missing");
}
