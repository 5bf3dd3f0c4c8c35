//! `-v HOSTDIR:DIR[:ro]` on the kvm backend: one virtiofsd per directory, started here and
//! handed to the VMM as a connected vhost-user socket (docs/devices.md, "virtio-fs").
//!
//! For each directory: a listening socket in a fresh root-only directory, a connection to
//! it made at once (the first in its queue, so no one else's is served), the socket's path
//! and directory removed (nothing on disk from then on, whatever happens to isol), then
//! virtiofsd started on the listening descriptor (`--fd`), which it accepts the queued
//! connection from. The connected end goes to the VMM (an inherited descriptor, like the
//! tap of `--network bridge`): the jail needs no path to it. virtiofsd is isol's child with
//! a parent-death signal, and exits when the connection closes: when the VM ends, or when
//! the VMM dies. The process isol execs (the relay, or the VMM without a jail) reaps it
//! (`isol_vmm::launch::end_backends`).

use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// Environment override: the virtiofsd to run.
pub const VIRTIOFSD_ENV: &str = "ISOL_VIRTIOFSD";
/// Where distributions install virtiofsd outside `PATH` (Debian's and Fedora's package).
const VIRTIOFSD_ELSEWHERE: [&str; 2] = ["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];

/// The virtiofsd to run: `$ISOL_VIRTIOFSD`, else `virtiofsd` on `PATH`, else where
/// distributions put it.
pub fn virtiofsd() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(VIRTIOFSD_ENV) {
        let p = PathBuf::from(p);
        if !is_executable(&p) {
            bail!(
                "{VIRTIOFSD_ENV}={} is not an executable file; point it at virtiofsd or unset it",
                p.display()
            );
        }
        return Ok(p);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("virtiofsd"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(VIRTIOFSD_ELSEWHERE.iter().map(PathBuf::from))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "-v with a directory on --backend kvm needs virtiofsd, which is not on PATH or in /usr/libexec; install it: cargo install virtiofsd (setup.sh does), or set {VIRTIOFSD_ENV}"
            )
        })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One shared directory as the launch will carry it.
#[derive(Debug)]
pub struct Share {
    /// The host directory.
    pub source: PathBuf,
    /// Where the guest mounts it.
    pub target: PathBuf,
    /// `:ro`.
    pub read_only: bool,
}

/// The started virtiofsds and the VMM's ends of their sockets. Dropped in this process (a
/// failed start, or the VM run without isol-vmm), each virtiofsd is disconnected and reaped.
#[derive(Debug)]
pub struct KvmShares {
    /// What the launch carries, in the order of `shares`.
    pub launch: Vec<isol_vmm::launch::LaunchShare>,
    sockets: Vec<UnixStream>,
    children: Vec<Child>,
}

impl KvmShares {
    /// Starts one virtiofsd per share (`id`: the run's, for the socket directory's name).
    pub fn start(shares: &[Share], id: &str) -> anyhow::Result<KvmShares> {
        let mut out = KvmShares {
            launch: Vec::new(),
            sockets: Vec::new(),
            children: Vec::new(),
        };
        if shares.is_empty() {
            return Ok(out);
        }
        let bin = virtiofsd()?;
        for (i, s) in shares.iter().enumerate() {
            let (listener, socket) = listen_and_connect(id, i)?;
            let child = spawn(&bin, s, &listener).with_context(|| {
                format!(
                    "Cannot start {} for {}; check that it runs (virtiofsd --version)",
                    bin.display(),
                    s.source.display()
                )
            })?;
            // virtiofsd has it now.
            drop(listener);
            out.launch.push(isol_vmm::launch::LaunchShare {
                socket_fd: socket.as_raw_fd(),
                tag: format!("isol-fs{i}"),
                guest_path: s.target.clone().into_os_string(),
                read_only: s.read_only,
                backend_pid: child.id(),
            });
            out.sockets.push(socket);
            out.children.push(child);
        }
        Ok(out)
    }

    /// The sockets stay open in isol-vmm; virtiofsd stays its child (same pid), reaped there.
    pub fn keep_across_exec(&self) -> anyhow::Result<()> {
        for s in &self.sockets {
            // SAFETY: F_SETFD on a descriptor this process owns; integer arguments only.
            if unsafe { libc::fcntl(s.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
                bail!(
                    "Cannot hand the shared directories over to isol-vmm: {}; raise the open-file limit",
                    std::io::Error::last_os_error()
                );
            }
        }
        Ok(())
    }
}

impl Drop for KvmShares {
    fn drop(&mut self) {
        // Disconnected, each virtiofsd exits; one that does not is killed.
        self.sockets.clear();
        for c in &mut self.children {
            let start = std::time::Instant::now();
            while matches!(c.try_wait(), Ok(None)) {
                if start.elapsed() > std::time::Duration::from_secs(5) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

/// A listening socket and the one connection to it that virtiofsd will serve; the socket's
/// path and its directory are gone when this returns.
fn listen_and_connect(id: &str, i: usize) -> anyhow::Result<(UnixListener, UnixStream)> {
    let dir = std::env::temp_dir().join(format!("isol-virtiofs-{id}-{i}"));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("Cannot create {}; check that it is writable", dir.display()))?;
    let path = dir.join("sock");
    let pair = UnixListener::bind(&path).and_then(|l| Ok((UnixStream::connect(&path)?, l)));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    let (socket, listener) = pair.with_context(|| {
        format!(
            "Cannot make the vhost-user socket {}; check the temporary directory",
            path.display()
        )
    })?;
    Ok((listener, socket))
}

/// Starts virtiofsd on `listener` for `s`: its own sandbox (namespaces and pivot_root into
/// the directory, its seccomp filter, capabilities dropped to what it needs), `--readonly`
/// for `:ro`, metadata cached by the guest for a second (`--cache auto`: a change made on
/// the host is seen within about a second; the guest's writes reach the host at once),
/// errors only on isol's stderr, killed if isol dies.
fn spawn(bin: &Path, s: &Share, listener: &UnixListener) -> std::io::Result<Child> {
    let fd = listener.as_raw_fd();
    let parent = std::process::id();
    let mut cmd = Command::new(bin);
    cmd.arg(format!("--fd={fd}"))
        .arg("--shared-dir")
        .arg(&s.source)
        .args(["--sandbox", "namespace", "--cache", "auto"])
        .args(["--log-level", "error"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if s.read_only {
        cmd.arg("--readonly");
    }
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls (`before_exec`).
    unsafe { cmd.pre_exec(move || before_exec(fd, parent)) };
    cmd.spawn()
}

/// virtiofsd's child side, between fork and exec: the listening socket survives the exec (it
/// is close-on-exec in isol), and the child is killed with isol (or the isol-vmm it becomes:
/// same pid, same thread), or ends at once if isol is already gone.
fn before_exec(fd: i32, parent: u32) -> std::io::Result<()> {
    // SAFETY: F_SETFD on a descriptor this process inherited; integer arguments only.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: prctl with integer arguments, on this process only.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: getppid has no arguments and cannot fail.
    if unsafe { libc::getppid() } as u32 != parent {
        // SAFETY: ends this forked child at once, as exec would have replaced it.
        unsafe { libc::_exit(1) };
    }
    Ok(())
}
