//! The VMM's jail (src/jail.rs, docs/design.md "The VMM's jail"), looked at from the host:
//! while a guest waits, `/proc` of the jailed VMM says which namespaces, root, user,
//! capabilities and cgroup it has; after a run, a failed run and a SIGKILLed isol nothing is
//! left (mounts, cgroups, run dirs, processes).
//!
//! The CLI tests boot guests: they run in the lab (`./test.sh`), pure cgroup v2, and skip
//! elsewhere unless `ISOL_REQUIRE_KVM` is set. `jail_on_a_host_whose_kvm_emulates` runs
//! `isol-vmm` directly where KVM only emulates (this development host, cgroup v1 hybrid): the
//! jail is complete before the first vCPU entry, so it is there to look at while the slow
//! guest has not got anywhere.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const NOBODY: &str = "65534";

/// The jailed VMM: the only child of the relay `relay`, once it has dropped to the
/// unprivileged user (then the VM is built and the guest may run).
fn jailed_vmm(relay: &mut Child) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = relay.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = relay.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("isol ended ({status}) before its VMM was seen jailed: {err}");
        }
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", relay.id()))
            .unwrap_or_default();
        if let Some(pid) = children
            .split_whitespace()
            .next()
            .and_then(|p| p.parse::<u32>().ok())
            && status_field(pid, "Uid").is_some_and(|u| u.split_whitespace().all(|i| i == NOBODY))
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no jailed VMM after 300 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    status_of(&format!("/proc/{pid}/status"), field)
}

fn status_of(path: &str, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
}

/// What the jail must be, checked on the running VMM `pid`; returns its cgroup path
/// (relative to the hierarchy's root, as /proc/PID/cgroup says it).
fn assert_jailed(pid: u32, files: &[&Path], profiles: Option<&Path>) -> String {
    // Namespaces: all but user, cgroup and time are the VMM's own.
    for ns in ["mnt", "pid", "ipc", "uts", "net"] {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let its = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(mine, its, "the VMM shares the host's {ns} namespace");
    }
    // It is PID 1 of its PID namespace.
    let nspid = status_field(pid, "NSpid").unwrap();
    assert!(
        nspid.ends_with("\t1") || nspid.ends_with(" 1"),
        "NSpid {nspid}"
    );
    // Every thread: the unprivileged user, no capability at all, no_new_privs.
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .collect();
    assert!(tasks.len() > 1, "the VMM runs threads");
    for t in tasks {
        let st = t.path().join("status");
        let st = st.to_str().unwrap();
        let name = status_of(st, "Name").unwrap_or_default();
        for f in ["Uid", "Gid"] {
            let ids = status_of(st, f).unwrap();
            assert!(
                ids.split_whitespace().all(|i| i == NOBODY),
                "thread {name}: {f} {ids}"
            );
        }
        assert_eq!(status_of(st, "Groups").unwrap(), "", "thread {name}");
        for f in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(
                status_of(st, f).unwrap(),
                "0000000000000000",
                "thread {name}: {f}"
            );
        }
        assert_eq!(status_of(st, "NoNewPrivs").unwrap(), "1", "thread {name}");
    }
    // No descriptor leads out of the jail: no directory, nothing of the store.
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let is_dir = std::fs::metadata(fd.path()).is_ok_and(|m| m.is_dir());
        assert!(
            !is_dir,
            "the VMM holds a directory open: {}",
            target.display()
        );
        assert!(
            !target.starts_with(test_home()),
            "the VMM holds {} open",
            target.display()
        );
    }
    // Its root holds the files it needs, /dev/kvm, and nothing else.
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let mut found = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let rel = Path::new("/").join(e.path().strip_prefix(&root).unwrap());
            if Some(rel.as_path()) == profiles {
                found.insert(rel);
            } else if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                found.insert(rel);
            }
        }
    }
    let mut want: BTreeSet<PathBuf> = files.iter().map(|p| p.to_path_buf()).collect();
    want.insert("/dev/kvm".into());
    if let Some(p) = profiles {
        want.insert(p.to_owned());
    }
    assert_eq!(found, want, "the jail's root");
    // The old root is gone: no mount of the host's is left in its table.
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let binds = want.len() - 1; // /dev/kvm is a node, not a mount
    assert_eq!(
        mounts.lines().count(),
        1 + binds,
        "its mounts: the jail's tmpfs and one bind per file\n{mounts}"
    );
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    cgroup
        .lines()
        .find_map(|l| {
            let (_, rest) = l.split_once(':')?;
            let (ctl, path) = rest.split_once(':')?;
            (ctl.is_empty() || ctl.split(',').any(|c| c == "memory")).then(|| path.to_string())
        })
        .filter(|p| p.starts_with("/isol/"))
        .unwrap_or_else(|| panic!("the VMM is not in an isol cgroup: {cgroup}"))
}

/// The memory limit of cgroup `path` (`/isol/<id>`), v2 or v1.
fn memory_limit(path: &str) -> u64 {
    let v2 = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let file = if v2.join("memory.max").exists() {
        v2.join("memory.max")
    } else {
        Path::new("/sys/fs/cgroup/memory")
            .join(path.trim_start_matches('/'))
            .join("memory.limit_in_bytes")
    };
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .trim()
        .parse()
        .unwrap()
}

/// Nothing of a jail is left: no VM run dir, no isol cgroup or mount, no isol-vmm process.
fn assert_no_jail_left(context: &str) {
    assert_no_leftovers(context);
    let vms = test_home().join("vms");
    let dirs: Vec<_> = std::fs::read_dir(&vms)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(dirs.is_empty(), "{context}: VM run dirs left: {dirs:?}");
    // The run's record (`isol ps`), log, exec socket and mark on its image: isol-vmm removes
    // them after the VM, as isol does after a container.
    for store_dir in ["runs", "in-use"] {
        let files: Vec<_> = std::fs::read_dir(test_home().join(store_dir))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name() != ".lock")
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            files.is_empty(),
            "{context}: left in {store_dir}/: {files:?}"
        );
    }
    let vmms = Command::new("pgrep")
        .args(["-x", "isol-vmm"])
        .output()
        .unwrap();
    assert!(
        vmms.stdout.is_empty(),
        "{context}: isol-vmm processes left: {}",
        String::from_utf8_lossy(&vmms.stdout)
    );
}

/// `isol run --backend kvm -i … busybox -- sh -c SCRIPT` with stdin and stdout piped.
fn waiting_vm(flags: &[&str], script: &str) -> Command {
    let mut args = vec!["run", "--backend", "kvm", "-i", "--timeout", "600"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["busybox", "--", "sh", "-c", script]);
    let mut c = isol(&args);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    c
}

/// The root disk, kernel and init a `--json` run of the same image used: from its process.
fn vm_files(pid: u32) -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    // Field 5 is the mount point inside its root.
    let mut out: Vec<PathBuf> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
        .filter(|p| p != Path::new("/"))
        .collect();
    out.sort();
    out
}

#[test]
fn the_vmm_runs_jailed_and_unprivileged_in_its_cgroup() {
    let _guard = root_test();
    if !kvm_ready() {
        return;
    }
    use std::io::Write;
    let mut child = waiting_vm(&["-m", "200m"], "read line; echo got-$line")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let vmm = jailed_vmm(&mut child);
    let files = vm_files(vmm);
    let kernel = PathBuf::from(std::env::var_os("ISOL_KERNEL").unwrap());
    let kernel = std::path::absolute(kernel).unwrap();
    assert!(files.contains(&kernel), "{files:?}");
    let profiles = isol_vmm::config::cache_dir().join("boot-profile");
    let plain: Vec<&Path> = files
        .iter()
        .map(PathBuf::as_path)
        .filter(|p| *p != profiles)
        .collect();
    // Kernel, root disk, init.
    assert_eq!(plain.len(), 3, "{files:?}");
    let cgroup = assert_jailed(vmm, &plain, Some(&profiles));
    assert_eq!(memory_limit(&cgroup), (200 + 64) << 20);
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "got-hello\n");
    assert_no_jail_left("after a run");
}

#[test]
fn nothing_is_left_after_a_failed_run_a_signal_and_a_sigkilled_isol() {
    let _guard = root_test();
    if !kvm_ready() {
        return;
    }
    // A failed run: the timeout stops the guest.
    let o = isol(&[
        "run",
        "--backend",
        "kvm",
        "--timeout",
        "1",
        "busybox",
        "--",
        "sleep",
        "60",
    ])
    .output()
    .unwrap();
    assert_eq!(code(&o), 124, "stderr: {}", stderr(&o));
    assert_no_jail_left("after a timed-out run");

    // SIGTERM to isol reaches the jailed VMM, which shuts the VM down: 128 + 15.
    let mut child = waiting_vm(&[], "read line")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    jailed_vmm(&mut child);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(code(&o), 143, "stderr: {}", stderr(&o));
    assert_no_jail_left("after SIGTERM");

    // SIGKILL of isol (the relay) kills the jailed VMM; the next run sweeps its run dir and
    // cgroup.
    let mut child = waiting_vm(&[], "read line").spawn().unwrap();
    let vmm = jailed_vmm(&mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{vmm}")).exists() {
        assert!(
            Instant::now() < deadline,
            "the jailed VMM outlived its SIGKILLed isol"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = isol(&["run", "--backend", "kvm", "busybox", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    assert_no_jail_left("after a SIGKILLed isol and the next run");
}

#[test]
fn a_jailed_vmm_records_its_boot_profile_and_the_next_boot_uses_it() {
    let _guard = root_test();
    if !kvm_ready() {
        return;
    }
    // A cache of its own: no profile for this machine yet.
    let cache = tempfile::tempdir().unwrap();
    let boot = || {
        let o = isol(&[
            "run",
            "--backend",
            "kvm",
            "--trace-exits",
            "busybox",
            "--",
            "true",
        ])
        .env("ISOL_CACHE", cache.path())
        .output()
        .unwrap();
        assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
        stderr(&o)
    };
    let first = boot();
    assert!(first.contains("recorded at init start"), "{first}");
    let stored: Vec<_> = std::fs::read_dir(cache.path().join("boot-profile"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let second = boot();
    assert!(second.contains("faulted in ahead of the guest"), "{second}");
    assert_no_jail_left("after two boots with profiles");
}

#[test]
fn isol_vmm_jail_off_runs_the_vmm_as_before() {
    let _guard = root_test();
    if !kvm_ready() {
        return;
    }
    let o = isol(&[
        "run",
        "--backend",
        "kvm",
        "busybox",
        "--",
        "sh",
        "-c",
        "echo in; exit 7",
    ])
    .env("ISOL_VMM_JAIL", "off")
    .output()
    .unwrap();
    assert_eq!(code(&o), 7, "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), "in\n");
    // Without the jail the VMM's main thread ends filtered and cannot remove the run's record
    // and socket (docs/design.md); the next listing of the runs does.
    ps_json();
    assert_no_jail_left("after a run without the jail");
}

#[test]
fn a_bad_jail_setting_is_refused_in_one_line() {
    let o = isol(&["run", "--backend", "kvm", "busybox", "--", "true"])
        .env("ISOL_VMM_JAIL", "maybe")
        .output()
        .unwrap();
    // Refused before or after other checks of this host, always as isol's error.
    assert_eq!(code(&o), 125, "stderr: {}", stderr(&o));
    let e = stderr(&o);
    if kvm_ready() {
        assert!(e.contains("ISOL_VMM_JAIL=maybe"), "{e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// `isol-vmm` started directly with a launch description, as `isol run` starts it.
fn spawn_vmm(launch: &isol_vmm::launch::Launch) -> Child {
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let fd: OwnedFd = launch.to_memfd().unwrap();
    let raw = fd.as_raw_fd();
    let mut c = Command::new(env!("CARGO_BIN_EXE_isol-vmm"));
    c.args(["--launch-fd", &raw.to_string(), "--", "test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let keep = move || {
        // SAFETY: F_SETFD on an fd this process owns; fcntl is async-signal-safe.
        if unsafe { libc::fcntl(raw, libc::F_SETFD, 0) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure only calls fcntl between fork and exec.
    unsafe { c.pre_exec(keep) };
    let child = c.spawn().unwrap();
    drop(fd);
    child
}

#[test]
fn jail_on_a_host_whose_kvm_emulates() {
    let _guard = root_test();
    // Where guests run in hardware (the lab), the CLI tests above look at the jail; here the
    // guest is too slow to get anywhere, which leaves all the time needed to look.
    match isol_vmm::measure_guest_speed() {
        Ok(speed) if speed > isol_vmm::EMULATED_THRESHOLD => {}
        _ => {
            eprintln!("skipped: no /dev/kvm that only emulates");
            return;
        }
    }
    let Some(kernel) = kvm_kernel_any() else {
        eprintln!("skipped: no guest kernel (guest-images/build-kernel.sh)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let disk = tmp.path().join("root.ext4");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let data = tmp.path().join("data.img");
    std::fs::write(&data, vec![0u8; 1 << 20]).unwrap();
    let init = PathBuf::from(env!("CARGO_BIN_EXE_isol-vmm")).with_file_name("isol-guest-init");
    let init = if init.is_file() {
        init
    } else {
        PathBuf::from(env!("CARGO_BIN_EXE_isol-init"))
    };
    let id = isol_container::state::new_run_id();
    let state_root = test_home().join("vms");
    let launch = isol_vmm::launch::Launch {
        kernel: kernel.clone(),
        root_disk: disk.clone(),
        bundle: None,
        initrd: None,
        rlimits: Vec::new(),
        groups: None,
        init: init.clone(),
        vcpus: 1,
        memory_mib: 128,
        args: vec!["true".into()],
        env: vec![],
        workdir: "/".into(),
        hostname: "h".into(),
        user: "".into(),
        capabilities: None,
        inheritable: 0,
        ambient: 0,
        no_new_privs: false,
        workload_seccomp: Vec::new(),
        disks: vec![isol_vmm::launch::LaunchDisk {
            path: data.clone(),
            read_only: false,
            guest_path: "/data".into(),
        }],
        timeout: Some(Duration::from_secs(60)),
        console: false,
        trace_exits: false,
        interactive: false,
        tty: false,
        json: false,
        image: "none".into(),
        boot_profiles: None,
        // ISOL_LOG=debug shows the jail's steps and their times (with --nocapture).
        log_filter: std::env::var("ISOL_LOG").ok(),
        // As isol run starts it: the VMM's threads filtered, then jailed.
        seccomp: true,
        seccomp_test_violation: None,
        jail: Some(isol_vmm::launch::LaunchJail {
            id: id.clone(),
            state_root: state_root.clone(),
            cgroup_root: "/sys/fs/cgroup".into(),
            uid: 65534,
            gid: 65534,
            memory_max: 192 << 20,
            pids_max: 40,
            cpu: Default::default(),
        }),
        net: None,
        etc_files: Vec::new(),
        control: None,
        shares: Vec::new(),
        pids_limit: None,
        memory_limit: None,
        leftovers: Vec::new(),
        start_gate: None,
        oci: Default::default(),
    };
    let mut relay = spawn_vmm(&launch);
    let vmm = jailed_vmm(&mut relay);
    let cgroup = assert_jailed(vmm, &[&kernel, &disk, &init, &data], None);
    assert_eq!(cgroup, format!("/isol/{id}"));
    assert_eq!(memory_limit(&cgroup), 192 << 20);
    assert!(state_root.join(&id).join("owner").is_file());
    // SIGINT to the relay: the VMM stops the VM, isol ends with 128 + 2.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(relay.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = relay.wait_with_output().unwrap();
    assert_eq!(code(&o), 130, "stderr: {}", stderr(&o));
    eprint!("{}", stderr(&o));
    assert_no_jail_left("after an interrupted jailed VMM");
}

fn kvm_kernel_any() -> Option<PathBuf> {
    std::env::var_os("ISOL_KERNEL")
        .map(PathBuf::from)
        .or_else(|| {
            isol_vmm::config::cached_kernel_dir()
                .map(|d| d.join("vmlinux"))
                .filter(|k| k.is_file())
        })
}
