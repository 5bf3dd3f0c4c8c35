//! What a runtime's client (containerd's shim) does around `isol-runc create`: it becomes the
//! subreaper that inherits the process `create` leaves, and reaps it for its exit status.

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde_json::Value;

/// A config.json's process runs `sh -c SCRIPT`.
pub fn set_args(v: &mut Value, script: &str) {
    v["process"]["args"] = serde_json::json!(["sh", "-c", script]);
}

/// This test process becomes what containerd's shim is: the subreaper that inherits the init
/// (or the VMM) when `create` returns.
pub fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer and changes only this process.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    assert_eq!(r, 0, "prctl(PR_SET_CHILD_SUBREAPER)");
}

/// The exit status as a shim reports it: the code, or 128+N for a death by signal N.
pub fn wait_status(pid: i32) -> i32 {
    match waitpid(Pid::from_raw(pid), None).expect("the process is our child now") {
        WaitStatus::Exited(_, c) => c,
        WaitStatus::Signaled(_, s, _) => 128 + s as i32,
        other => panic!("unexpected wait status {other:?}"),
    }
}
