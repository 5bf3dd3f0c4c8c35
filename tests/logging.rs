//! Logging: `ISOL_LOG` and `--log-level` say what isol did on stderr, never on the workload's
//! stdout; warnings keep their `isol: warning: …` form and the filter silences them.

mod common;

use std::process::Output;

use common::*;

/// `isol ARGS…` with the test store and `ISOL_LOG` set to `env` (unset: `None`).
fn run_logged(env: Option<&str>, args: &[&str]) -> Output {
    let mut c = isol(args);
    if let Some(v) = env {
        c.env("ISOL_LOG", v);
    }
    c.output().expect("isol runs")
}

#[test]
fn isol_log_debug_tells_what_isol_did_on_stderr_only() {
    let _g = root_test();
    let args = ["run", "busybox", "echo", "hi"];
    let quiet = run_logged(None, &args);
    assert_eq!(code(&quiet), 0, "{}", stderr(&quiet));
    assert_eq!(stderr(&quiet), "", "nothing is logged by default");

    let o = run_logged(Some("debug"), &args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stdout(&o), stdout(&quiet));
    assert_eq!(stdout(&o), "hi\n");
    let err = stderr(&o);
    for step in [
        "image resolved",
        "cgroup created",
        "cgroup devices restricted",
        "network: nothing to attach mode=\"none\"",
        "phase=rootfs",
        "phase=exec",
        "container exited",
    ] {
        assert!(err.contains(step), "{step:?} not logged: {err}");
    }
    for line in err.lines() {
        assert!(line.starts_with("isol: debug: "), "{line:?} in {err}");
    }
    // The flag wins over the variable; a target directive picks one crate.
    let o = isol(&["--log-level", "info", "run", "busybox", "true"])
        .env("ISOL_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!((code(&o), stderr(&o).as_str()), (0, ""));
    let o = run_logged(Some("isol_image=debug"), &["run", "busybox", "true"]);
    let err = stderr(&o);
    assert!(err.contains("image resolved"), "{err}");
    assert!(!err.contains("cgroup created"), "{err}");
    // Nobody reading the log (`2>&1 | head`) does not stop the run half-way.
    let mut child = isol(&["run", "busybox", "sh", "-c", "sleep 0.2; echo done"])
        .env("ISOL_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!((code(&o), stdout(&o).as_str()), (0, "done\n"));
    assert_no_leftovers("ISOL_LOG=debug");
}

#[test]
fn a_warning_keeps_its_form_and_log_level_error_silences_it() {
    let _g = root_test();
    // A store whose network state is broken: each run warns that it cannot sweep it.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join("containers")).unwrap();
    std::fs::write(home.path().join("containers/net"), "not a directory").unwrap();
    let warned = |level: Option<&str>, env: Option<&str>| {
        let mut args = vec!["run", "busybox", "echo", "ok"];
        if let Some(l) = level {
            args.splice(0..0, ["--log-level", l]);
        }
        let mut c = isol(&args);
        c.env("ISOL_HOME", home.path());
        if let Some(v) = env {
            c.env("ISOL_LOG", v);
        }
        let o = c.output().unwrap();
        assert_eq!(code(&o), 0, "{}", stderr(&o));
        assert_eq!(stdout(&o), "ok\n");
        stderr(&o)
    };
    let err = warned(None, None);
    assert!(
        err.starts_with("isol: warning: cleaning up stale container networks: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(warned(Some("error"), None), "");
    assert_eq!(warned(None, Some("error")), "");
    assert_eq!(warned(Some("error"), Some("debug")), "");
    // A subcommand's flag too (clap's global flag), and a bad ISOL_LOG is said once.
    let o = isol(&["run", "--log-level=error", "busybox", "true"])
        .env("ISOL_HOME", home.path())
        .output()
        .unwrap();
    assert_eq!((code(&o), stderr(&o).as_str()), (0, ""));
    let err = warned(None, Some("isol=loud"));
    assert!(
        err.starts_with("isol: warning: ignoring ISOL_LOG=\"isol=loud\""),
        "{err}"
    );
    assert_no_leftovers("--log-level error");
}
