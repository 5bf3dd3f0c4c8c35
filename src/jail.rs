//! The VMM's jail (docs/design.md, "The VMM's jail"): `isol-vmm` runs the VM in new mount,
//! PID, IPC, UTS and network namespaces, pivot_rooted into a tmpfs holding only the files the
//! VM needs and `/dev/kvm`, in a cgroup of its own (memory limit: guest RAM and a margin), and
//! once the VM is built as an unprivileged user with no capabilities and `no_new_privs`.
//! Made with the container runtime's own code (`isol_container::jail`, `cgroups`, `state`).
//!
//! Two processes: isol-vmm as isol exec'd it (same pid as `isol run`) stays outside as the
//! **relay**: it owns the run dir and the cgroup, forwards signals, waits, and exits with the
//! jailed VMM's status; its **child** (PID 1 of the new PID namespace) builds the jail, runs
//! the VM, and dies with the relay (`PR_SET_PDEATHSIG`). A SIGKILLed relay leaves the run dir
//! and the cgroup to the sweep of the next run (`isol_container::state::sweep`); the mounts
//! live in the child's mount namespace and die with it.
//!
//! The order in the child matters: everything that is per thread (bounding, inheritable and
//! ambient capability sets, `no_new_privs`) is done before the VMM starts its first thread,
//! so every thread inherits it; the uid and gid change comes once the VM is built (the
//! `before_guest` hook, `isol_vmm::config::BeforeGuest`), through glibc, which applies it to
//! every thread of the process, and a change to a non-root uid empties each thread's
//! permitted and effective sets.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use isol_container::cgroups::{self, CgroupManager, Entry, Limits};
use isol_container::jail as walls;
use isol_container::state::RunDir;
use isol_vmm::config::BeforeGuest;
use isol_vmm::launch::{Jailed, Launch, LaunchJail};
use nix::mount::{MsFlags, mount};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, kill, sigprocmask};
use nix::sys::stat::{Mode, SFlag, mknod};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The signals the relay passes on to the jailed VMM as they are: the VMM handles SIGINT and
/// SIGTERM (it shuts the VM down), and SIGWINCH (`-t`: the window size). Its own session
/// keeps the terminal's signals from reaching it twice.
const FORWARDED: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGWINCH];
/// Signals whose default action ended the VMM before it had a jail: the relay ends the jailed
/// VMM (SIGKILL: PID 1 of a namespace ignores signals it has no handler for) and exits 128+N.
const FATAL: [Signal; 4] = [
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

/// isol-vmm's jail step ([`isol_vmm::launch::main`]): without a jail in the launch, the VM
/// runs here as before; with one, this process becomes the relay and its jailed child runs
/// the VM. A setup error is isol's one line and 125.
pub fn enter(launch: &Launch) -> Jailed {
    let Some(jail) = &launch.jail else {
        return Jailed::Run(None);
    };
    match setup(launch, jail) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{}", error_line(&e));
            Jailed::Exit(125)
        }
    }
}

/// A jail's setup error as isol's one line: what failed, and the way around it.
fn error_line(e: &str) -> String {
    format!(
        "isol: Cannot jail the VMM: {e}; fix that, or run with {}=off to run the VMM without its jail",
        "ISOL_VMM_JAIL"
    )
}

/// One file or directory of the jail, bound at its own path (`path`), so no path in the
/// launch changes; `source` is what is bound there (the same path, but for the boot
/// profiles' directory).
#[derive(Debug, Clone, PartialEq)]
struct Bind {
    source: PathBuf,
    path: PathBuf,
    read_only: bool,
    dir: bool,
}

/// The files the jail's root holds besides `/dev/kvm`: the kernel, the root disk and the guest
/// init (or `--initrd`'s archive instead of both) read-only; the extra disks as the launch
/// offers them.
fn plan(launch: &Launch) -> Vec<Bind> {
    let mut out: Vec<Bind> = Vec::new();
    let mut add = |path: &Path, read_only: bool| {
        if let Some(e) = out.iter_mut().find(|e| e.path == path) {
            // The same file twice (a disk given read-only and read-write): as the most.
            e.read_only &= read_only;
        } else {
            out.push(Bind {
                source: path.to_owned(),
                path: path.to_owned(),
                read_only,
                dir: false,
            });
        }
    };
    add(&launch.kernel, true);
    if let Some(initrd) = &launch.initrd {
        // `--initrd`: that archive is the whole guest; no root disk, no guest init.
        add(initrd, true);
    } else {
        if launch.bundle.is_none() {
            add(&launch.root_disk, true);
        }
        add(&launch.init, true);
    }
    for d in &launch.disks {
        add(&d.path, d.read_only);
    }
    out
}

/// The boot profile of this VM (`isol_vmm::vstate::boot_profile`): the jailed VMM cannot
/// write isol's profile directory, so it gets a directory of its own in the run dir, owned
/// by its unprivileged user and bound at the profile directory's path, holding a copy of the
/// stored profile if there is one; a profile it records there is stored by the relay.
struct Profile {
    /// `<profiles>/<key>`.
    path: PathBuf,
    /// `<run dir>/boot-profile`.
    outbox: PathBuf,
    /// Whether a stored profile was handed in (then nothing is recorded).
    stored: bool,
}

impl Profile {
    fn prepare(launch: &Launch, jail: &LaunchJail, run: &RunDir) -> Result<Option<Self>, String> {
        let Some(path) = isol_vmm::vstate::boot_profile::profile_path(&launch.vm_config(None))
        else {
            return Ok(None);
        };
        let outbox = run.dir.join("boot-profile");
        let err = |e: std::io::Error| format!("Cannot create {}: {e}", outbox.display());
        fs::create_dir(&outbox).map_err(err)?;
        std::os::unix::fs::chown(&outbox, Some(jail.uid), Some(jail.gid)).map_err(err)?;
        let name = path.file_name().unwrap_or_default();
        let stored = fs::copy(&path, outbox.join(name)).is_ok();
        if stored {
            // Used now: kept by the pruning (the VMM marks only its copy).
            let _ =
                fs::File::open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        }
        Ok(Some(Profile {
            path,
            outbox,
            stored,
        }))
    }

    fn bind(&self) -> Option<Bind> {
        Some(Bind {
            source: self.outbox.clone(),
            path: self.path.parent()?.to_owned(),
            read_only: false,
            dir: true,
        })
    }

    /// After the run: the profile the VMM recorded, stored for the next boots.
    fn adopt(&self) {
        if self.stored {
            return;
        }
        let Some(name) = self.path.file_name() else {
            return;
        };
        if let Err(e) =
            isol_vmm::vstate::boot_profile::BootProfile::adopt(&self.outbox.join(name), &self.path)
        {
            tracing::warn!(
                "cannot store the boot profile {}: {e}; the next boot records it again",
                self.path.display()
            );
        }
    }
}

fn setup(launch: &Launch, jail: &LaunchJail) -> Result<Jailed, String> {
    let started = std::time::Instant::now();
    // The run dirs and cgroups of jails whose relay was SIGKILLed.
    isol_container::state::sweep(&jail.state_root, &jail.cgroup_root);
    let run = RunDir::create(&jail.state_root, &jail.id, false).map_err(|e| e.to_string())?;
    let cpuset = |what: &'static str, list: &Option<String>| {
        list.as_deref()
            .map(|l| cgroups::cpuset::CpuList::parse(what, l))
            .transpose()
            .map_err(|e| e.to_string())
    };
    let period = jail.cpu.period_us.unwrap_or(cgroups::CPU_PERIOD_US);
    let limits = Limits {
        memory: Some(jail.memory_max),
        cpus: jail.cpu.quota_us.map(|q| q as f64 / period as f64),
        cpu_period: jail.cpu.period_us,
        cpu_shares: jail.cpu.shares,
        cpuset_cpus: cpuset("cpu.cpus", &jail.cpu.cpus)?,
        cpuset_mems: cpuset("cpu.mems", &jail.cpu.mems)?,
        pids: Some(jail.pids_max),
        ..Default::default()
    };
    let cgroup = match cgroups::create(&jail.cgroup_root, &jail.id, &limits) {
        Ok(c) => c,
        Err(e) => {
            let _ = run.remove();
            return Err(e.to_string());
        }
    };
    let out = Profile::prepare(launch, jail, &run)
        .and_then(|profile| start(launch, jail, &run, &cgroup, profile.as_ref(), started));
    if let Ok(Jailed::Run(_)) = out {
        // The jailed child: the relay cleans up.
        return out;
    }
    if let Err(e) = cgroup.remove() {
        tracing::warn!("{e}");
    }
    if let Err(e) = run.remove() {
        tracing::warn!("{e}");
    }
    out
}

/// Clones the jailed child; returns [`Jailed::Run`] in it, and in the relay the status to
/// exit with once the child ended.
fn start(
    launch: &Launch,
    jail: &LaunchJail,
    run: &RunDir,
    cgroup: &cgroups::AnyCgroupManager,
    profile: Option<&Profile>,
    started: std::time::Instant,
) -> Result<Jailed, String> {
    let entry = cgroup.entry().map_err(|e| e.to_string())?;
    let into = match &entry {
        Entry::CloneInto(dir) => Some(dir.as_fd()),
        Entry::SelfJoin(_) => None,
    };
    let mut files = plan(launch);
    files.extend(profile.and_then(Profile::bind));
    let root = run.dir.join("root");
    fs::create_dir(&root).map_err(|e| format!("Cannot create {}: {e}", root.display()))?;
    let kvm = fs::metadata("/dev/kvm")
        .ok()
        .filter(|m| m.file_type().is_char_device())
        .map(|m| m.rdev())
        .ok_or("/dev/kvm is not a character device; run `isol doctor`")?;
    // The relay's life line: the child holds the read end, which reads end-of-file once the
    // relay is gone (checked where the parent-death signal may have come too late).
    let (life_r, life_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // Blocked before the clone, so the relay misses none (the child restores its mask).
    let mut relayed = SigSet::empty();
    for s in FORWARDED.iter().chain(&FATAL).chain(&[Signal::SIGCHLD]) {
        relayed.add(*s);
    }
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&relayed), Some(&mut old_mask))
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let cloned = started.elapsed();
    let (pid, born) = walls::clone_into(walls::NAMESPACES, into).map_err(|e| e.to_string())?;
    if pid == 0 {
        drop(life_w);
        return match child(launch, &root, &entry, life_r, &files, kvm, &old_mask) {
            Ok(hook) => {
                // The jail's cost on the way to the VM (docs/design.md, "The VMM's jail").
                tracing::debug!(
                    before_clone_ms = cloned.as_secs_f64() * 1e3,
                    total_ms = started.elapsed().as_secs_f64() * 1e3,
                    "VMM jailed"
                );
                Ok(Jailed::Run(Some(hook)))
            }
            Err(e) => {
                eprintln!("{}", error_line(&e));
                // SAFETY: ends the jailed child at once: the relay cleans up and reports.
                unsafe { libc::_exit(125) }
            }
        };
    }
    drop(life_r);
    if let Some(c) = &launch.control {
        // The jailed VMM serves the exec channel; the relay's copy would keep the socket
        // accepting clients (into its backlog) after the VM.
        // SAFETY: the listening socket isol handed over, used by nothing in the relay; closed
        // once.
        unsafe { libc::close(c.fd) };
    }
    if let Some(fd) = launch.start_gate {
        // The jailed VMM's alone: `start` waits for the gate's end, which the relay's copy
        // would put off to the VM's end.
        // SAFETY: the gate isol-runc handed over, used by nothing in the relay; closed once.
        unsafe { libc::close(fd) };
    }
    let child = Pid::from_raw(pid);
    if !born && matches!(entry, Entry::CloneInto(_)) {
        // No clone3 here: moved by pid.
        if let Err(e) = cgroup.add_task(pid) {
            let _ = kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            return Err(e.to_string());
        }
    }
    tracing::debug!(pid, id = %jail.id, "jailed VMM started");
    let code = relay(child, &relayed);
    drop(life_w);
    if let Some(p) = profile {
        p.adopt();
    }
    Ok(Jailed::Exit(code))
}

/// The relay: passes signals on until the jailed VMM ends; its exit status, or 128+N.
fn relay(child: Pid, set: &SigSet) -> i32 {
    let mut killed_for = None;
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig == Signal::SIGCHLD {
            match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::Signaled(_, s, _)) => return killed_for.unwrap_or(128 + s as i32),
                Ok(_) => {}
                Err(_) => return 125,
            }
        } else if FORWARDED.contains(&sig) {
            let _ = kill(child, sig);
        } else {
            killed_for = Some(128 + sig as i32);
            let _ = kill(child, Signal::SIGKILL);
        }
    }
}

/// Until the VM's own SIGINT/SIGTERM handling starts, a termination signal ends the jailed
/// VMM as it ended the VMM without a jail (PID 1 of a namespace ignores signals it has no
/// handler for).
extern "C" fn exit_on_signal(sig: libc::c_int) {
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(128 + sig) }
}

/// The jailed child, before the VMM starts any thread: its cgroup, its session, its root, its
/// capability bounds. Returns the privilege drop for when the VM is built.
fn child(
    launch: &Launch,
    root: &Path,
    entry: &Entry,
    life: OwnedFd,
    files: &[Bind],
    kvm: u64,
    old_mask: &SigSet,
) -> Result<BeforeGuest, String> {
    let jail = launch.jail.as_ref().ok_or("no jail in the launch")?;
    die_with_relay(&life)?;
    entry
        .join_self()
        .map_err(|e| format!("Cannot enter the VMM's cgroup: {e}"))?;
    // A session of its own: the terminal's signals reach the relay only, which passes them on.
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: installs an async-signal-safe handler for a valid signal.
        unsafe { libc::signal(sig, exit_on_signal as *const () as libc::sighandler_t) };
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(old_mask), None)
        .map_err(|e| format!("sigprocmask: {e}"))?;
    // The cgroup's files are the entry's, closed with it once the child is in the VM's build.
    let mut keep = vec![life.as_raw_fd()];
    // `--network bridge`: the tap isol opened on the host, which the jail cannot open.
    keep.extend(launch.net.as_ref().map(|n| n.tap_fd));
    // `isol exec`'s listening socket, bound on the host where its clients find it.
    keep.extend(launch.control.as_ref().map(|c| c.fd));
    // `isol-runc start`'s gate: the VMM says on it when the workload runs.
    keep.extend(launch.start_gate);

    // `-v DIR:DIR`: the sockets connected to the virtiofsds isol started.
    keep.extend(launch.shares.iter().map(|s| s.socket_fd));
    match entry {
        Entry::CloneInto(dir) => keep.push(dir.as_raw_fd()),
        Entry::SelfJoin(files) => keep.extend(files.iter().map(AsRawFd::as_raw_fd)),
    }
    close_inherited(&keep)?;
    build_root(root, files, kvm)?;
    walls::drop_bounding_set().map_err(|e| e.to_string())?;
    isol_container::security::set_no_new_privs().map_err(|e| e.to_string())?;
    let (uid, gid) = (jail.uid, jail.gid);
    Ok(BeforeGuest(Arc::new(move || {
        drop_privileges(uid, gid, &life)
    })))
}

/// Closes every descriptor but stdio and those in `keep` (owned by the child's own values):
/// nothing the VMM inherited (the image's in-use mark, whatever isol's caller left open)
/// stays open in the jail. Before pivot_root: it reads /proc/self/fd.
fn close_inherited(keep: &[i32]) -> Result<(), String> {
    let fds: Vec<i32> = fs::read_dir("/proc/self/fd")
        .map_err(|e| format!("Cannot list the VMM's descriptors: {e}"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: closes a descriptor nothing in this process uses any more (the directory
        // listing's own is already closed: EBADF, ignored).
        unsafe { libc::close(fd) };
    }
    Ok(())
}

/// `PR_SET_PDEATHSIG(SIGKILL)`, then a check that the relay did not die before it: a killed
/// isol takes its VM with it (and with PID 1 of the namespace, everything in it).
fn die_with_relay(life: &OwnedFd) -> Result<(), String> {
    // SAFETY: PR_SET_PDEATHSIG takes only integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_PDEATHSIG: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut fds = [libc::pollfd {
        fd: life.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    if n > 0 && fds[0].revents & (libc::POLLHUP | libc::POLLIN) != 0 {
        return Err("isol ended while the VM started".into());
    }
    Ok(())
}

/// The jail's root: a tmpfs over `<run dir>/root` (in this mount namespace only; on the host
/// it stays an empty directory), with each file bound at its own path and `/dev/kvm`; then
/// pivot_root into it, the old root detached, and the tmpfs made read-only.
fn build_root(root: &Path, files: &[Bind], kvm: u64) -> Result<(), String> {
    walls::make_mounts_private().map_err(|e| e.to_string())?;
    let base = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        base,
        Some("mode=0755,size=64k,nr_inodes=256"),
    )
    .map_err(|e| format!("Cannot mount the VMM's jail at {}: {e}", root.display()))?;
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let err = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        format!("Cannot {what} {} in the VMM's jail: {e}", p.display())
    };
    // Directories first; a file under a bound directory comes with it.
    let mut sorted: Vec<&Bind> = files.iter().collect();
    sorted.sort_by_key(|e| !e.dir);
    let mut bound_dirs: Vec<&Path> = Vec::new();
    for f in sorted {
        if bound_dirs.iter().any(|d| f.path.starts_with(d)) {
            continue;
        }
        let target = inside(&f.path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| err("create", &f.path, &e))?;
        }
        if f.dir {
            fs::create_dir(&target).map_err(|e| err("create", &f.path, &e))?;
            bound_dirs.push(&f.path);
        } else {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&target)
                .map_err(|e| err("create", &f.path, &e))?;
        }
        mount(
            Some(&f.source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| err("bind", &f.path, &e))?;
        if f.read_only {
            mount(
                None::<&str>,
                &target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base,
                None::<&str>,
            )
            .map_err(|e| err("make read-only", &f.path, &e))?;
        }
    }
    let dev = root.join("dev");
    fs::create_dir_all(&dev).map_err(|e| err("create", Path::new("/dev"), &e))?;
    mknod(
        &dev.join("kvm"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        kvm,
    )
    .map_err(|e| err("create", Path::new("/dev/kvm"), &e))?;
    // No /dev/net/tun: the tap of `--network bridge` is opened on the host by isol and
    // inherited as a descriptor (it stays in the host's network namespace, on the bridge).
    walls::pivot_root(root).map_err(|e| e.to_string())?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | base,
        None::<&str>,
    )
    .map_err(|e| format!("Cannot make the VMM's jail read-only: {e}"))?;
    Ok(())
}

/// The [`BeforeGuest`] hook: no supplementary groups, then the unprivileged gid and uid in
/// every thread (glibc's set*id broadcast); the kernel clears each thread's permitted and
/// effective capabilities with the change to a non-root uid, and this thread's sets are
/// emptied explicitly. The uid change clears the parent-death signal: set again.
fn drop_privileges(uid: u32, gid: u32, life: &OwnedFd) -> Result<(), String> {
    let started = std::time::Instant::now();
    // SAFETY: setgroups with an empty list reads no memory.
    if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
        return Err(format!("setgroups: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: integer arguments only; glibc applies it to every thread.
    if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
        return Err(format!(
            "setresgid {gid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: as above.
    if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
        return Err(format!(
            "setresuid {uid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    walls::drop_all_capabilities().map_err(|e| e.to_string())?;
    die_with_relay(life)?;
    tracing::debug!(
        uid,
        gid,
        ms = started.elapsed().as_secs_f64() * 1e3,
        "VMM privileges dropped"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_binds_each_file_once_read_only_unless_a_disk_is_writable() {
        let launch = Launch {
            kernel: "/k/vmlinux".into(),
            root_disk: "/s/root.ext4".into(),
            bundle: None,
            initrd: None,
            rlimits: Vec::new(),
            groups: None,
            init: "/b/init".into(),
            vcpus: 1,
            memory_mib: 128,
            args: vec![],
            env: vec![],
            workdir: "/".into(),
            hostname: "h".into(),
            user: "".into(),
            capabilities: None,
            inheritable: 0,
            ambient: 0,
            no_new_privs: false,
            workload_seccomp: Vec::new(),
            disks: vec![
                isol_vmm::launch::LaunchDisk {
                    path: "/d/a.img".into(),
                    read_only: true,
                    guest_path: "/a".into(),
                },
                isol_vmm::launch::LaunchDisk {
                    path: "/d/a.img".into(),
                    read_only: false,
                    guest_path: "/b".into(),
                },
            ],
            timeout: None,
            console: false,
            trace_exits: false,
            interactive: false,
            tty: false,
            json: false,
            image: "busybox".into(),
            boot_profiles: Some("/c/boot-profiles".into()),
            log_filter: None,
            seccomp: true,
            seccomp_test_violation: None,
            jail: None,
            net: None,
            shares: Vec::new(),
            etc_files: Vec::new(),
            control: None,
            pids_limit: None,
            memory_limit: None,
            leftovers: Vec::new(),
            start_gate: None,
            oci: Default::default(),
        };
        let p = plan(&launch);
        let ro: Vec<(&str, bool)> = p
            .iter()
            .map(|e| (e.path.to_str().unwrap(), e.read_only))
            .collect();
        assert_eq!(
            ro,
            [
                ("/k/vmlinux", true),
                ("/s/root.ext4", true),
                ("/b/init", true),
                ("/d/a.img", false),
            ]
        );
        assert!(p.iter().all(|b| b.source == b.path && !b.dir));
        // `--initrd`: the archive instead of the root disk and the guest init.
        let p = plan(&Launch {
            initrd: Some("/i/initrd.cpio".into()),
            root_disk: PathBuf::new(),
            init: PathBuf::new(),
            disks: Vec::new(),
            ..launch
        });
        let ro: Vec<(&str, bool)> = p
            .iter()
            .map(|e| (e.path.to_str().unwrap(), e.read_only))
            .collect();
        assert_eq!(ro, [("/k/vmlinux", true), ("/i/initrd.cpio", true)]);
    }
}
