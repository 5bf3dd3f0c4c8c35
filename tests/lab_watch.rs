//! The lab watchdog of the long kvm runs (`common::lab_watch`): its reading of the lab
//! kernel's trace and kallsyms, its verdicts, and the watchdog itself on real processes. No
//! kvm needed.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::lab_watch::{self, Watched};
use common::*;

// The watchdog's reading of a stall, on text as the lab kernel writes it (records taken in the
// lab, 2026-12-06).

const TRACE: &str = "\
     isol-vcpu0-4242    [001] .....   812.193441: kvm_exit: vcpu 0 reason npf rip 0xffffffffc045620c info1 0x0000000100000014 info2 0x0000000003a1c000 intr_info 0x00000000 error_code 0x00000000
     isol-vcpu0-4242    [001] .....   812.193502: kvm_exit: vcpu 0 reason npf rip 0xffffffffc045620c info1 0x0000000100000014 info2 0x0000000003a1c000 intr_info 0x00000000 error_code 0x00000000
   isol-virtio-4240    [000] .....   812.193600: kvm_exit: vcpu 0 reason io rip 0xffffffff81234567 info1 0x0 info2 0x0 intr_info 0x00000000 error_code 0x00000000
     isol-vcpu0-4242    [001] .....    31.986071: kvm_exit: vcpu 0 reason interrupt rip 0x531fe6 info1 0x0000000000000000 info2 0x0000000000000000 intr_info 0x00000000 error_code 0x00000000";

const KALLSYMS: &str = "\
ffffffff9e000000 T _stext
ffffffffc0440000 t svm_vcpu_run\t[kvm_amd]
ffffffffc0456170 t __svm_vcpu_run\t[kvm_amd]
ffffffffc0390000 T kvm_vcpu_ioctl\t[kvm]
ffffffffc0500000 t e1000_probe\t[e1000]
ffffffffc0456000 d svm_data\t[kvm_amd]";

fn trace_lines() -> Vec<String> {
    TRACE.lines().map(str::to_string).collect()
}

#[test]
fn the_watchdog_reads_the_vcpus_exits_from_the_lab_trace() {
    let e = lab_watch::exits_of(&trace_lines(), &[4242]);
    assert_eq!(e.len(), 3, "{e:?}");
    assert_eq!(e[0].reason, "npf");
    assert_eq!(e[0].rip, 0xffff_ffff_c045_620c);
    assert_eq!(e[2].reason, "interrupt");
    assert_eq!(e[2].rip, 0x53_1fe6);
    assert!(lab_watch::exits_of(&trace_lines(), &[4243]).is_empty());
}

#[test]
fn the_lab_kvm_text_is_kvm_and_kvm_amd_only() {
    let r = lab_watch::lab_kvm_text_from(KALLSYMS);
    assert_eq!(
        r,
        vec![
            (0xffff_ffff_c039_0000, 0xffff_ffff_c039_1000),
            (0xffff_ffff_c044_0000, 0xffff_ffff_c045_7170)
        ]
    );
}

#[test]
fn only_a_busy_vcpu_at_the_labs_own_rip_or_without_exits_is_the_labs_spin() {
    let lab = lab_watch::lab_kvm_text_from(KALLSYMS);
    let spin = lab_watch::exits_of(&trace_lines()[..2], &[4242]);
    let (yes, why) = lab_watch::spin_verdict(&spin, &lab, true);
    assert!(yes, "{why}");
    assert!(why.contains("2× npf at 0xffffffffc045620c"), "{why}");
    // The same exits with every vCPU idle: not the lab's (the guest waits).
    assert!(!lab_watch::spin_verdict(&spin, &lab, false).0);
    // Busy without any exit: stuck inside the lab's KVM.
    assert!(lab_watch::spin_verdict(&[], &lab, true).0);
    // Busy in its own code (a guest spinning on something isol never gave it): not the lab's.
    let own = lab_watch::exits_of(&trace_lines()[3..], &[4242]);
    let (yes, why) = lab_watch::spin_verdict(&own, &lab, true);
    assert!(!yes, "{why}");
    // Mostly the guest's own code with a few lab RIPs: not the lab's.
    let mut mixed = [own.clone(), own].concat();
    mixed.extend(spin);
    assert!(!lab_watch::spin_verdict(&mixed, &lab, true).0);
}

/// The full path of program `name` on $PATH.
fn which(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|f| f.is_file())
        })
        .unwrap_or_else(|| panic!("{name} is not on $PATH"))
}

/// `sh -c SCRIPT` with stdout and stderr piped, as the watchdog takes a run.
fn sh_piped(script: &str) -> Child {
    Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_watchdog_returns_a_run_that_ends() {
    let child = sh_piped("echo out; echo err >&2; exit 3");
    let Watched::Ended(o) = lab_watch::watch(child, Duration::from_secs(30)) else {
        panic!("the run ended by itself")
    };
    assert_eq!(
        (code(&o), stdout(&o), stderr(&o)),
        (3, "out\n".into(), "err\n".into())
    );
}

#[test]
fn the_watchdog_stops_a_silent_run_that_is_not_the_labs_spin() {
    // Output, then silence with the "vCPU" asleep: what a lost wakeup looks like. The clock
    // starts once a thread named isol-vcpu* exists: here `sleep` run under that name.
    let dir = tempfile::tempdir().unwrap();
    let vcpu = dir.path().join("isol-vcpu0");
    std::os::unix::fs::symlink(which("sleep"), &vcpu).unwrap();
    let child = sh_piped(&format!("echo started; exec {} 600", vcpu.display()));
    let pid = child.id();
    match lab_watch::watch(child, Duration::from_secs(1)) {
        Watched::Stalled(what) => {
            assert!(what.contains("after 8 bytes"), "{what}");
            assert!(what.contains("every vCPU idle"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the run was stopped"
    );
}

#[test]
fn the_watchdogs_clock_starts_with_the_guest() {
    // Silent for longer than the stall bound, but without a vCPU thread yet (isol preparing
    // the image and the VM's disk): not a stall.
    let child = sh_piped("sleep 3; echo late");
    let Watched::Ended(o) = lab_watch::watch(child, Duration::from_secs(1)) else {
        panic!("a run before its guest starts is not stopped")
    };
    assert_eq!(stdout(&o), "late\n");
}

#[test]
fn the_watchdog_finds_the_vcpus_in_a_child_process() {
    // With the VMM's jail, the process a test starts is the relay and the vCPU threads live in
    // its jailed child: the watchdog must look there. The "vCPU" here exits after 20 s, so a
    // watchdog that does not see it returns the run as ended instead of stalled.
    let dir = tempfile::tempdir().unwrap();
    let vcpu = dir.path().join("isol-vcpu0");
    std::os::unix::fs::symlink(which("sleep"), &vcpu).unwrap();
    let child = Command::new("sh")
        .args(["-c", &format!("echo started; {} 20 & wait", vcpu.display())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let group = nix::unistd::Pid::from_raw(-(child.id() as i32));
    let watched = lab_watch::watch(child, Duration::from_secs(1));
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
    match watched {
        Watched::Stalled(what) => assert!(what.contains("isol-vcpu0 S"), "{what}"),
        other => panic!("{other:?}"),
    }
}
