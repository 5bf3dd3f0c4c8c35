//! podman 4.3 (Debian 12's) drives `isol-runc` as its OCI runtime (`--runtime`), through
//! conmon, as it drives runc: everything of podman's under a temp dir (`--root`, `--runroot`,
//! `--tmpdir`, a containers.conf and storage.conf of its own), the cgroupfs manager, events to
//! a file, no network (`--network none`), a busybox image the test builds (`podman load`).
//! podman sends its own seccomp profile, sysctls and rlimits: isol-runc honours them. Checked:
//! `run --rm` output and exit codes, `run -d` + `exec` + `stop`, `run -it` on a pty, and that
//! nothing is left behind, on the host or in podman's state.

mod common;

use std::io::Write;
use std::path::Path;

use common::podman::{IMAGE, Podman, RUN_FLAGS};

#[test]
fn podman_runs_containers_on_isol_runc() {
    let _g = common::root_test();
    let p = Podman::new(Path::new(env!("CARGO_BIN_EXE_isol-runc")));

    // run --rm: the output and the exit status; podman's seccomp profile is on.
    let o = p.run(
        &[],
        "echo hello from $(cat /proc/1/comm); grep ^Seccomp: /proc/self/status; exit 0",
    );
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "hello from isol-init\nSeccomp:\t2\n");
    let o = p.run(&[], "exit 3");
    assert_eq!(o.status.code(), Some(3), "{}", common::stderr(&o));
    // The limits and sysctls podman was asked for.
    let o = p.run(
        &[
            "--sysctl",
            "net.ipv4.ping_group_range=0 0",
            "--sysctl",
            "kernel.shmmax=65536",
        ],
        "ulimit -n; ulimit -u; cat /proc/sys/net/ipv4/ping_group_range /proc/sys/kernel/shmmax",
    );
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "1024\n1000\n0\t0\n65536\n");

    // run -d, exec (its output and status), stop (SIGTERM: 143), rm.
    let mut args = vec!["run", "-d", "--name", "bg"];
    args.extend(RUN_FLAGS);
    args.extend([IMAGE, "sleep", "60"]);
    let id = p.ok(&args);
    assert_eq!(id.trim().len(), 64, "{id}");
    let o = p.podman(&[
        "exec",
        "bg",
        "sh",
        "-c",
        "echo exec in $(cat /proc/1/comm); exit 4",
    ]);
    assert_eq!(o.status.code(), Some(4), "exec: {}", common::stderr(&o));
    assert_eq!(common::stdout(&o), "exec in isol-init\n");
    p.ok(&["stop", "--time", "5", "bg"]);
    let code = p.ok(&["inspect", "--format", "{{.State.ExitCode}}", "bg"]);
    assert_eq!(code.trim(), "143");
    p.ok(&["rm", "bg"]);

    // run -it on a pty: a terminal of the pty's size, the exit status through it.
    let mut args = vec!["run", "--rm", "-it"];
    args.extend(RUN_FLAGS);
    args.extend([IMAGE, "sh"]);
    let mut t = common::pty::spawn_command(p.command(&args), 30, 90);
    t.master
        .write_all(b"stty size; tty; echo mark-$((6*7))\n")
        .unwrap();
    t.read_until("mark-42");
    assert!(t.seen.contains("30 90"), "{}", t.seen);
    // isol binds the terminal at /dev/console, as runc does.
    assert!(t.seen.contains("/dev/console"), "{}", t.seen);
    t.master.write_all(b"exit 5\n").unwrap();
    let status = t.child.wait().unwrap();
    assert_eq!(status.code(), Some(5), "{}", t.seen);

    // Nothing left: no container in podman, no isol-runc state, nothing on the host.
    p.assert_clean();
    common::assert_no_leftovers("podman");
}
