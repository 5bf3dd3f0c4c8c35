//! `isol lab` itself. The tests that boot the lab VM (QEMU TCG, tens of seconds each) run
//! where `ISOL_LAB_TESTS` is set — `./test.sh` sets it once the lab's cache is prepared —
//! and skip elsewhere; the bad-input tests run everywhere.

mod common;

use common::*;

/// `isol lab -- sh -c SCRIPT`, with a freeze window if given.
fn lab_sh(script: &str, freeze_secs: Option<&str>) -> std::process::Output {
    let mut c = isol(&["lab", "--", "sh", "-c", script]);
    if let Some(secs) = freeze_secs {
        c.env("ISOL_LAB_FREEZE_SECS", secs);
    }
    c.output().unwrap()
}

fn lab_tests() -> bool {
    if std::env::var_os("ISOL_LAB_TESTS").is_some() {
        return true;
    }
    eprintln!("skipped: boots the lab VM; ./test.sh runs it with ISOL_LAB_TESTS=1");
    false
}

/// The lab's nested KVM sometimes freezes the whole lab for good (docs/lab.md, "Known
/// fault"). Its init sends a heartbeat every 5 s; a lab that falls silent is stopped, with an
/// error that says what happened. Here the heartbeat is stopped on purpose.
#[test]
fn a_lab_that_falls_silent_is_stopped_with_a_clear_error() {
    if !lab_tests() {
        return;
    }
    let _g = serial();
    let o = lab_sh(
        "kill -STOP $(cat /run/isol-lab/heartbeat.pid); echo stopped; sleep 600",
        Some("15"),
    );
    assert_eq!(code(&o), 125, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "stopped\n");
    assert!(
        stderr(&o).contains("isol lab: error: the lab froze: no heartbeat from it for 15 s"),
        "stderr: {}",
        stderr(&o)
    );
}

/// A lab that hangs before the command starts is stopped too: here its init is a `sleep`
/// (`rdinit=`; the words without `=` are init's arguments), so nothing ever comes.
#[test]
fn a_lab_that_hangs_while_booting_is_stopped_with_a_clear_error() {
    if !lab_tests() {
        return;
    }
    let _g = serial();
    let o = isol(&[
        "lab",
        "--kernel-args",
        "rdinit=/bin/busybox sleep 600",
        "--",
        "true",
    ])
    .env("ISOL_LAB_FREEZE_SECS", "15")
    .output()
    .unwrap();
    assert_eq!(code(&o), 125, "stderr: {}", stderr(&o));
    assert!(
        stderr(&o)
            .contains("isol lab: error: the lab froze while booting: nothing from it for 15 s"),
        "stderr: {}",
        stderr(&o)
    );
}

/// A command that prints nothing for longer than the window is not taken for a frozen lab:
/// the heartbeat is the lab's, not the command's.
#[test]
fn a_quiet_command_is_not_taken_for_a_frozen_lab() {
    if !lab_tests() {
        return;
    }
    let _g = serial();
    let o = lab_sh("sleep 35; echo done; exit 3", Some("15"));
    assert_eq!(code(&o), 3, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "done\n");
}

#[test]
fn a_bad_freeze_window_is_refused_before_the_lab_starts() {
    for bad in ["abc", "5", "-1"] {
        let o = isol(&["lab", "--", "true"])
            .env("ISOL_LAB_FREEZE_SECS", bad)
            .output()
            .unwrap();
        assert_eq!(code(&o), 125, "{bad}: {}", stderr(&o));
        assert_eq!(
            stderr(&o).trim(),
            format!(
                "isol lab: ISOL_LAB_FREEZE_SECS={bad}: expected whole seconds, at least 10 \
                 (the heartbeat comes every 5 s)"
            )
        );
    }
}

/// The lab's fix for its freeze (docs/lab.md, "Known fault"): a VM with an irqchip and a
/// vCPU is held for the lab's life, so KVM never flips its static keys (live patching of the
/// lab kernel's text) when a VM starts or ends.
#[test]
fn the_lab_holds_a_vm_so_kvm_never_patches_its_text() {
    if !lab_tests() {
        return;
    }
    let _g = serial();
    let o = lab_sh(
        "p=$(pgrep -o -f isol-lab-kvm-keys) && ls -l /proc/$p/fd | grep -c 'anon_inode:kvm-'",
        None,
    );
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    // The VM and its vCPU.
    assert_eq!(stdout(&o), "2\n");
}
