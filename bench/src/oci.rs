//! The OCI runtime config (`config.json`) given to crun and runc: the equivalent of what
//! `isol run busybox /bin/true` sets up, field by field, so that every runtime does the same
//! work.
//!
//! What isol's container runtime does, and how it is expressed here:
//!
//! * namespaces: pid, ipc, uts, mount, network (loopback only), cgroup → `linux.namespaces`;
//! * a writable root: overlayfs of the image layers with a fresh upper per run → the bench mounts
//!   the same overlay on `rootfs/` before each peer run, `root.readonly = false`;
//! * /proc, a read-only /sys (no cgroup mount under it on cgroup v1, as isol), a tmpfs /dev with
//!   the standard devices, devpts, /dev/shm and /dev/mqueue → `mounts`;
//! * masked and read-only paths → `linux.maskedPaths`, `linux.readonlyPaths` (isol's lists);
//! * docker's 14 default capabilities in bounding, effective and permitted, none inheritable or
//!   ambient; `no_new_privs` → `process.capabilities`, `process.noNewPrivileges`;
//! * isol's seccomp profile (docker's default) → `linux.seccomp`, generated from the very syscall
//!   lists isol compiles its filter from;
//! * the environment `isol run` builds for busybox (PATH, HOSTNAME, HOME), cwd `/`, uid 0, no
//!   terminal, no resource limits (a cgroup is still created: runtimes always create one).

use serde_json::{Value, json};

use isol_container::security::seccomp;

/// The hostname of every peer container (isol uses the run id, of the same length).
pub const HOSTNAME: &str = "isol-bench0";

/// `config.json` for a bundle whose root is `rootfs/`, running `args` with `env`.
pub fn config(args: &[String], env: &[String]) -> Value {
    // Docker's default capabilities, from the very list isol keeps (caps prints `CAP_*` names).
    let caps: Vec<String> = isol_container::security::capabilities::DEFAULT
        .iter()
        .map(|c| c.to_string())
        .collect();
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": args,
            "env": env,
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "inheritable": [],
                "ambient": [],
            },
            "noNewPrivileges": true,
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": HOSTNAME,
        "mounts": [
            {
                "destination": "/proc",
                "type": "proc",
                "source": "proc",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" },
                { "type": "network" },
                { "type": "cgroup" },
            ],
            // The same paths isol masks and protects.
            "maskedPaths": isol_container::MASKED_PATHS,
            "readonlyPaths": isol_container::READONLY_PATHS,
            "seccomp": seccomp_profile(),
        },
    })
}

/// isol's seccomp profile in the OCI format: everything not listed fails with EPERM; `clone`
/// only without namespace flags, `socket` for any family but AF_VSOCK, `personality` with the
/// allowed personas only, `clone3` fails with ENOSYS.
pub fn seccomp_profile() -> Value {
    let allowed: Vec<&str> = seccomp::ALLOWED.iter().map(|s| s.name).collect();
    let mut syscalls = vec![
        json!({ "names": allowed, "action": "SCMP_ACT_ALLOW" }),
        json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{
                "index": 0,
                "value": seccomp::CLONE_NAMESPACE_FLAGS,
                "valueTwo": 0,
                "op": "SCMP_CMP_MASKED_EQ",
            }],
        }),
        json!({
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": libc::AF_VSOCK, "op": "SCMP_CMP_NE" }],
        }),
        json!({
            "names": [seccomp::CLONE3.name],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::ENOSYS,
        }),
    ];
    // Rules of one syscall are ORed across entries, ANDed within one entry's args.
    for persona in seccomp::PERSONALITY_ALLOWED {
        syscalls.push(json!({
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{ "index": 0, "value": persona, "op": "SCMP_CMP_EQ" }],
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_matches_what_isol_does() {
        let c = config(&["/bin/true".into()], &["PATH=/bin".into()]);
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network", "cgroup"]);
        assert_eq!(c["process"]["terminal"], false);
        assert_eq!(c["process"]["args"][0], "/bin/true");
        assert_eq!(c["root"]["readonly"], false);
        let caps = c["process"]["capabilities"]["bounding"].as_array().unwrap();
        assert_eq!(
            caps.len(),
            isol_container::security::capabilities::DEFAULT.len()
        );
        assert!(caps.contains(&json!("CAP_NET_BIND_SERVICE")));
        assert!(!caps.contains(&json!("CAP_SYS_ADMIN")));
        let names = c["linux"]["seccomp"]["syscalls"][0]["names"]
            .as_array()
            .unwrap();
        assert_eq!(names.len(), seccomp::ALLOWED.len());
        assert!(names.iter().all(|n| n != "mount"));
    }
}
