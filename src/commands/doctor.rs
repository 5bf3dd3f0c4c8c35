//! `isol doctor`: what this host offers and lacks for each backend, each line with what to do.

use std::fs;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

use crate::cli::DoctorArgs;

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Missing,
}

#[derive(Debug, Serialize)]
struct Check {
    area: &'static str,
    level: Level,
    /// What was found.
    found: String,
    /// What to do about it (empty when nothing needs doing).
    action: String,
}

impl Check {
    fn new(
        area: &'static str,
        level: Level,
        found: impl Into<String>,
        action: impl Into<String>,
    ) -> Self {
        Check {
            area,
            level,
            found: found.into(),
            action: action.into(),
        }
    }
}

pub fn run(args: DoctorArgs) -> anyhow::Result<i32> {
    let checks = vec![
        privileges(),
        user_namespaces(),
        overlayfs(),
        cgroups(),
        kvm(),
        tool(
            "qemu",
            "qemu-system-x86_64",
            &["--version"],
            "for `isol lab` and the QEMU microvm benchmark peer",
            "apt-get install qemu-system-x86",
        ),
        tool(
            "nftables",
            "nft",
            &["--version"],
            "for --network bridge NAT",
            "apt-get install nftables",
        ),
        tool(
            "iproute2",
            "ip",
            &["-V"],
            "for --network bridge links",
            "apt-get install iproute2",
        ),
        busybox(),
        container_init(),
        vmm_binary(),
    ];
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
        return Ok(0);
    }
    for c in &checks {
        let tag = match c.level {
            Level::Ok => "ok     ",
            Level::Warn => "warn   ",
            Level::Missing => "missing",
        };
        if c.action.is_empty() {
            println!("{tag} {:<16} {}", c.area, c.found);
        } else {
            println!("{tag} {:<16} {} -> {}", c.area, c.found, c.action);
        }
    }
    Ok(0)
}

fn privileges() -> Check {
    if nix::unistd::geteuid().is_root() {
        Check::new("privileges", Level::Ok, "running as root", "")
    } else {
        Check::new(
            "privileges",
            Level::Warn,
            "not root: containers run rootless (user namespace; no cgroup limits, no bridge network)",
            "run isol as root for limits and bridge networking",
        )
    }
}

fn read_trim(p: &str) -> Option<String> {
    fs::read_to_string(p).ok().map(|s| s.trim().to_string())
}

fn user_namespaces() -> Check {
    let max = read_trim("/proc/sys/user/max_user_namespaces");
    let unpriv = read_trim("/proc/sys/kernel/unprivileged_userns_clone");
    match (max.as_deref(), unpriv.as_deref()) {
        (Some("0"), _) => Check::new(
            "user namespaces",
            Level::Warn,
            "disabled (user.max_user_namespaces=0): rootless containers cannot run",
            "sysctl -w user.max_user_namespaces=15000, or run isol as root",
        ),
        (_, Some("0")) => Check::new(
            "user namespaces",
            Level::Warn,
            "unprivileged ones are disabled (kernel.unprivileged_userns_clone=0)",
            "sysctl -w kernel.unprivileged_userns_clone=1, or run isol as root",
        ),
        (Some(m), _) => Check::new(
            "user namespaces",
            Level::Ok,
            format!("allowed (up to {m})"),
            "",
        ),
        (None, _) => Check::new(
            "user namespaces",
            Level::Missing,
            "not supported by this kernel",
            "run isol as root; rootless mode needs CONFIG_USER_NS",
        ),
    }
}

fn overlayfs() -> Check {
    let fss = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if fss
        .lines()
        .any(|l| l.trim_end().ends_with("\toverlay") || l.trim() == "nodev\toverlay")
    {
        Check::new("overlayfs", Level::Ok, "available", "")
    } else if Path::new("/sys/module/overlay").exists() {
        Check::new("overlayfs", Level::Ok, "available (module)", "")
    } else {
        Check::new(
            "overlayfs",
            Level::Missing,
            "not loaded",
            "modprobe overlay (the container rootfs needs it)",
        )
    }
}

fn cgroups() -> Check {
    use isol_container::cgroups::{Layout, detect};
    match detect(Path::new(isol_container::process::CGROUP_ROOT)) {
        Ok(Layout::V2 { root }) => {
            let ctrls = fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            let ctrls = ctrls.trim();
            let missing: Vec<&str> = ["memory", "cpu", "pids"]
                .into_iter()
                .filter(|c| !ctrls.split(' ').any(|x| x == *c))
                .collect();
            if missing.is_empty() {
                Check::new(
                    "cgroups",
                    Level::Ok,
                    format!("v2 (controllers: {ctrls})"),
                    "",
                )
            } else {
                Check::new(
                    "cgroups",
                    Level::Warn,
                    format!("v2, lacking {}", missing.join(", ")),
                    "enable them in the root's cgroup.subtree_control for --memory/--cpus/--pids-limit",
                )
            }
        }
        Ok(Layout::V1 {
            hierarchies,
            unified,
            ..
        }) => {
            let mut ctrls: Vec<String> = hierarchies
                .iter()
                .flat_map(|h| h.controllers.iter().cloned())
                .filter(|c| !c.starts_with("name="))
                .collect();
            ctrls.sort();
            let kind = if unified.is_some() {
                "v1 (hybrid)"
            } else {
                "v1"
            };
            let missing: Vec<&str> = ["memory", "cpu", "cpuacct", "pids"]
                .into_iter()
                .filter(|c| !ctrls.iter().any(|x| x == c))
                .collect();
            if missing.is_empty() {
                Check::new(
                    "cgroups",
                    Level::Ok,
                    format!("{kind} (controllers: {})", ctrls.join(", ")),
                    "",
                )
            } else {
                Check::new(
                    "cgroups",
                    Level::Warn,
                    format!("{kind}, lacking {}", missing.join(", ")),
                    "mount those controllers for --memory/--cpus/--pids-limit",
                )
            }
        }
        Err(e) => Check::new(
            "cgroups",
            Level::Missing,
            e.to_string(),
            "mount cgroupfs at /sys/fs/cgroup",
        ),
    }
}

fn kvm() -> Check {
    if !Path::new("/dev/kvm").exists() {
        return Check::new(
            "kvm",
            Level::Missing,
            "/dev/kvm does not exist: no hardware virtualization here",
            "use `isol lab -- isol run --backend kvm …` to run the kvm backend in an emulated lab",
        );
    }
    if isol_vmm::vstate::kvm::pvm_host() {
        return Check::new(
            "kvm",
            Level::Warn,
            isol_vmm::vstate::kvm::PVM_HOST,
            "use `isol lab -- isol run --backend kvm …`",
        );
    }
    match isol_vmm::measure_guest_speed() {
        Err(e) => Check::new(
            "kvm",
            Level::Missing,
            format!("/dev/kvm is present but unusable: {e}"),
            "check permissions on /dev/kvm (run as root or join the kvm group), or use `isol lab`",
        ),
        Ok(t) => {
            // The probe runs 100 000 iterations of a two-instruction loop.
            let per_iter_ns = t.as_nanos() as f64 / 100_000.0;
            if t >= isol_vmm::EMULATED_THRESHOLD {
                Check::new(
                    "kvm",
                    Level::Warn,
                    format!(
                        "/dev/kvm runs guests by emulation ({:.0} ns per loop iteration; hardware takes ~1 ns): Linux guests cannot usefully boot",
                        per_iter_ns
                    ),
                    "use `isol lab -- isol run --backend kvm …`",
                )
            } else {
                Check::new(
                    "kvm",
                    Level::Ok,
                    format!(
                        "/dev/kvm runs guests in hardware ({per_iter_ns:.1} ns per loop iteration)"
                    ),
                    "",
                )
            }
        }
    }
}

fn tool(area: &'static str, bin: &str, args: &[&str], why: &str, install: &str) -> Check {
    match Command::new(bin).args(args).output() {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout);
            let first = text.lines().next().unwrap_or("").trim().to_string();
            Check::new(area, Level::Ok, format!("{first} ({why})"), "")
        }
        _ => Check::new(
            area,
            Level::Missing,
            format!("{bin} not found ({why})"),
            install.to_string(),
        ),
    }
}

fn busybox() -> Check {
    match fs::read("/bin/busybox") {
        Ok(elf) if !has_interp(&elf) => Check::new(
            "default image",
            Level::Ok,
            "static /bin/busybox present (the built-in busybox image is made from it)",
            "",
        ),
        Ok(_) => Check::new(
            "default image",
            Level::Missing,
            "/bin/busybox is dynamically linked",
            "apt-get install busybox-static",
        ),
        Err(_) => Check::new(
            "default image",
            Level::Missing,
            "/bin/busybox not found",
            "apt-get install busybox-static",
        ),
    }
}

/// The binary the container's init runs from (a sealed copy of it per run, CVE-2019-5736).
fn container_init() -> Check {
    let path = isol_container::security::exe::init_binary();
    if path.ends_with(isol_container::security::exe::INIT_BINARY) {
        return Check::new(
            "container init",
            Level::Ok,
            format!(
                "{} (a sealed copy of it is each container's PID 1)",
                path.display()
            ),
            "",
        );
    }
    Check::new(
        "container init",
        Level::Warn,
        "isol-init is not beside isol: each container start copies all of isol (4 MiB) instead",
        "install isol-init next to isol (setup.sh does; cargo build --release builds it)",
    )
}

/// The executable a VM runs in: `isol-vmm` (isol execs it), else isol itself.
fn vmm_binary() -> Check {
    let area = "kvm vmm";
    match isol_vmm::launch::vmm_binary() {
        Some(p) if p.is_file() => Check::new(
            area,
            Level::Ok,
            format!(
                "{} (each VM runs in it, without isol's own code mapped)",
                p.display()
            ),
            "",
        ),
        Some(p) => Check::new(
            area,
            Level::Missing,
            format!(
                "{} names {}, which is not a file: `isol run --backend kvm` fails",
                isol_vmm::launch::VMM_ENV,
                p.display()
            ),
            format!(
                "point {} at isol-vmm, or unset it",
                isol_vmm::launch::VMM_ENV
            ),
        ),
        None => Check::new(
            area,
            Level::Warn,
            "isol-vmm is not beside isol (or ISOL_VMM is empty): each VM runs inside isol, whose 4 MiB executable adds ~3.5 MiB to its memory",
            "install isol-vmm next to isol (setup.sh does; cargo build --release builds it)",
        ),
    }
}

/// Whether an ELF file has a PT_INTERP program header (is dynamically linked).
fn has_interp(elf: &[u8]) -> bool {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return true;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&elf[o..o + 8]);
        u64::from_le_bytes(b) as usize
    };
    let phoff = u64_at(32);
    let phentsize = u16_at(54);
    let phnum = u16_at(56);
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= elf.len() && u32::from_le_bytes([elf[o], elf[o + 1], elf[o + 2], elf[o + 3]]) == 3
    })
}

#[cfg(test)]
mod tests {
    use super::has_interp;

    #[test]
    fn static_and_dynamic_elves_are_told_apart() {
        let sh = std::fs::read("/bin/sh").unwrap();
        assert!(has_interp(&sh), "/bin/sh is dynamic on Debian");
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(!has_interp(&me), "isol's test binary is static");
        assert!(has_interp(b"not an elf"));
    }
}
