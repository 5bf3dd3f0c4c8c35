//! A seccomp profile in the JSON shape docker and the OCI runtime spec share (`linux.seccomp`
//! of a config.json; docker's and podman's `seccomp.json`): default action, architectures,
//! flags, and rules of syscall names, an action and argument conditions. [`Profile::from_json`]
//! reads it (docker's `includes`/`excludes` resolved against the run's capabilities, as
//! dockerd does before it hands the profile to runc); [`super::compile`] makes the BPF program.
//!
//! What is refused, with a message naming it: `SCMP_ACT_NOTIFY` and `listenerPath` (a seccomp
//! agent isol does not run), flags other than `SECCOMP_FILTER_FLAG_TSYNC` (implicit: the
//! container's process is single-threaded when the filter goes on), `..._LOG` and
//! `..._SPEC_ALLOW`, unknown actions, operators and architectures, an argument index over 5, an
//! errno over 4095. Unknown syscall names are skipped, as libseccomp and runc do (a profile
//! names syscalls of other architectures and of newer kernels).

use std::collections::BTreeSet;

use serde::Deserialize;

/// What the filter does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `SCMP_ACT_ALLOW`.
    Allow,
    /// `SCMP_ACT_ERRNO`: fail with this errno.
    Errno(u16),
    /// `SCMP_ACT_KILL`, `SCMP_ACT_KILL_THREAD`: kill the calling thread (SIGSYS).
    KillThread,
    /// `SCMP_ACT_KILL_PROCESS`: kill the whole process (SIGSYS).
    KillProcess,
    /// `SCMP_ACT_TRAP`: send SIGSYS to the thread.
    Trap,
    /// `SCMP_ACT_LOG`: allow, and log it (the kernel's audit log).
    Log,
    /// `SCMP_ACT_TRACE`: notify a ptrace tracer with this value; without one, `ENOSYS`.
    Trace(u16),
}

impl Action {
    /// The `SECCOMP_RET_*` value a filter returns for it.
    pub fn ret(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(e) => libc::SECCOMP_RET_ERRNO | u32::from(e),
            Action::KillThread => libc::SECCOMP_RET_KILL_THREAD,
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
            Action::Trap => libc::SECCOMP_RET_TRAP,
            Action::Log => libc::SECCOMP_RET_LOG,
            Action::Trace(v) => libc::SECCOMP_RET_TRACE | u32::from(v),
        }
    }

    /// Whether the syscall goes through (no errno, no signal).
    pub fn allows(self) -> bool {
        matches!(self, Action::Allow | Action::Log)
    }
}

/// A comparison of one syscall argument (libseccomp's `SCMP_CMP_*`), on all 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    /// `arg & mask == value`.
    MaskedEq {
        mask: u64,
    },
}

/// One argument condition: `args[index] OP value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    /// 0 to 5.
    pub index: u8,
    pub op: Op,
    pub value: u64,
    /// Compare only the low 32 bits (the argument is an `int`): isol's own profile uses this
    /// where the kernel ignores the high half; profiles from JSON compare all 64 bits, as
    /// libseccomp does.
    pub low32: bool,
}

/// Syscalls, and what happens to them when all of `args` hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub names: Vec<String>,
    pub action: Action,
    /// All must hold (several on the same argument: any, as runc splits them).
    pub args: Vec<Arg>,
}

/// `SECCOMP_FILTER_FLAG_LOG`: log every action but `ALLOW`.
pub const FLAG_LOG: u32 = 2;
/// `SECCOMP_FILTER_FLAG_SPEC_ALLOW`: no speculative store bypass mitigation.
pub const FLAG_SPEC_ALLOW: u32 = 4;

/// A seccomp profile, ready for [`super::compile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// For every syscall no rule decides.
    pub default_action: Action,
    /// Whether 32-bit x86 (`int 0x80`) syscalls go through the profile too (`SCMP_ARCH_X86`
    /// listed); if not, they kill the process.
    pub i386: bool,
    /// `seccomp(2)` flags: [`FLAG_LOG`], [`FLAG_SPEC_ALLOW`].
    pub flags: u32,
    pub rules: Vec<Rule>,
}

/// A profile isol cannot read or honour.
#[derive(Debug, thiserror::Error)]
#[error("Invalid seccomp profile: {0}")]
pub struct ProfileError(pub String);

fn invalid(msg: impl Into<String>) -> ProfileError {
    ProfileError(msg.into())
}

/// What docker's `includes`/`excludes` are checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// The run's capabilities (bounding set), bit n = capability n.
    pub capabilities: u64,
    /// The kernel's `major.minor`; `None`: take every `minKernel` as met.
    pub kernel: Option<(u32, u32)>,
}

impl Context {
    /// `capabilities` on the running kernel (`uname -r`).
    pub fn host(capabilities: u64) -> Context {
        let kernel = nix::sys::utsname::uname()
            .ok()
            .and_then(|u| parse_kernel(&u.release().to_string_lossy()));
        Context {
            capabilities,
            kernel,
        }
    }
}

fn parse_kernel(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawProfile {
    default_action: String,
    default_errno_ret: Option<u32>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
    #[serde(default)]
    arch_map: Option<Vec<RawArchMap>>,
    #[serde(default)]
    flags: Option<Vec<String>>,
    #[serde(default)]
    listener_path: Option<String>,
    #[serde(default)]
    syscalls: Option<Vec<RawSyscall>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawArchMap {
    architecture: String,
    #[serde(default)]
    sub_architectures: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSyscall {
    #[serde(default)]
    names: Option<Vec<String>>,
    /// docker's older single-name form.
    #[serde(default)]
    name: Option<String>,
    action: String,
    #[serde(default)]
    errno_ret: Option<u32>,
    #[serde(default)]
    args: Option<Vec<RawArg>>,
    #[serde(default)]
    includes: Option<RawFilter>,
    #[serde(default)]
    excludes: Option<RawFilter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawArg {
    index: u32,
    value: u64,
    #[serde(default)]
    value_two: Option<u64>,
    op: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawFilter {
    #[serde(default)]
    caps: Option<Vec<String>>,
    #[serde(default)]
    arches: Option<Vec<String>>,
    #[serde(default)]
    min_kernel: Option<String>,
}

/// The actions isol compiles (for `isol-runc features`).
pub const ACTIONS: [&str; 8] = [
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];

/// The comparisons isol compiles.
pub const OPERATORS: [&str; 7] = [
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];

/// The filter flags isol takes.
pub const FLAGS: [&str; 3] = [
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_TSYNC",
];

/// libseccomp's architecture names (the OCI spec's list).
const ARCHES: [&str; 20] = [
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
];

impl Profile {
    /// Reads a profile in docker's / the OCI spec's JSON shape. `includes`/`excludes` (docker's,
    /// absent from OCI configs) keep or drop a rule as dockerd does, for the architecture
    /// `amd64`, the capabilities and the kernel of `ctx`.
    pub fn from_json(text: &str, ctx: &Context) -> Result<Profile, ProfileError> {
        let raw: RawProfile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        Profile::from_raw(raw, ctx)
    }

    /// [`Profile::from_json`] of an already parsed JSON value (an OCI config's `linux.seccomp`).
    pub fn from_value(value: serde_json::Value, ctx: &Context) -> Result<Profile, ProfileError> {
        let raw: RawProfile = serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
        Profile::from_raw(raw, ctx)
    }

    fn from_raw(raw: RawProfile, ctx: &Context) -> Result<Profile, ProfileError> {
        if raw.listener_path.as_deref().is_some_and(|p| !p.is_empty()) {
            return Err(invalid(
                "listenerPath (a seccomp agent, SCMP_ACT_NOTIFY) is not supported by isol; remove it and the NOTIFY rules",
            ));
        }
        let default_errno = errno(raw.default_errno_ret, "defaultErrnoRet")?;
        let default_action = action(&raw.default_action, default_errno, "defaultAction")?;

        let mut arches: BTreeSet<String> = BTreeSet::new();
        for a in raw.architectures.iter().flatten() {
            arches.insert(arch(a)?.to_string());
        }
        for m in raw.arch_map.iter().flatten() {
            // docker: the native architecture's entry brings its sub-architectures.
            if arch(&m.architecture)? == "SCMP_ARCH_X86_64" {
                arches.insert(m.architecture.clone());
                for s in m.sub_architectures.iter().flatten() {
                    arches.insert(arch(s)?.to_string());
                }
            }
        }

        let mut flags = 0;
        for f in raw.flags.iter().flatten() {
            flags |= match f.as_str() {
                "SECCOMP_FILTER_FLAG_TSYNC" => 0,
                "SECCOMP_FILTER_FLAG_LOG" => FLAG_LOG,
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => FLAG_SPEC_ALLOW,
                other => {
                    return Err(invalid(format!(
                        "flag {other} is not supported by isol; it takes SECCOMP_FILTER_FLAG_TSYNC, SECCOMP_FILTER_FLAG_LOG and SECCOMP_FILTER_FLAG_SPEC_ALLOW"
                    )));
                }
            };
        }

        let mut rules = Vec::new();
        for (i, s) in raw.syscalls.into_iter().flatten().enumerate() {
            let what = format!("syscalls[{i}]");
            let names: Vec<String> = s.names.into_iter().flatten().chain(s.name).collect();
            if names.is_empty() {
                return Err(invalid(format!("{what} names no syscall; give \"names\"")));
            }
            let act = action(
                &s.action,
                errno(s.errno_ret, &format!("{what}.errnoRet"))?,
                &format!("{what}.action"),
            )?;
            let mut args = Vec::new();
            for (j, a) in s.args.into_iter().flatten().enumerate() {
                args.push(arg(&a, &format!("{what}.args[{j}]"))?);
            }
            if !applies(s.includes.unwrap_or_default(), true, ctx, &what)?
                || !applies(s.excludes.unwrap_or_default(), false, ctx, &what)?
            {
                continue;
            }
            rules.push(Rule {
                names,
                action: act,
                args,
            });
        }
        Ok(Profile {
            default_action,
            i386: arches.contains("SCMP_ARCH_X86"),
            flags,
            rules,
        })
    }
}

/// docker's rule filter: `includes` must all hold, `excludes` must all fail; the architecture is
/// `amd64` (Go's name; `x86_64` too), capabilities and kernel those of `ctx`.
fn applies(f: RawFilter, include: bool, ctx: &Context, what: &str) -> Result<bool, ProfileError> {
    if let Some(arches) = f.arches
        && !arches.is_empty()
    {
        let native = arches.iter().any(|a| a == "amd64" || a == "x86_64");
        if native != include {
            return Ok(false);
        }
    }
    if let Some(caps) = f.caps {
        for c in caps {
            let held = crate::security::capabilities::by_name(&c)
                .is_some_and(|cap| ctx.capabilities & (1u64 << (cap as u8)) != 0);
            if held != include {
                return Ok(false);
            }
        }
    }
    if let Some(min) = f.min_kernel {
        let want = parse_kernel(&min).ok_or_else(|| {
            invalid(format!(
                "{what}: minKernel {min:?} is not a kernel version; write it as \"4.8\""
            ))
        })?;
        let met = ctx.kernel.is_none_or(|k| k >= want);
        if met != include {
            return Ok(false);
        }
    }
    Ok(true)
}

fn arch(name: &str) -> Result<&str, ProfileError> {
    if ARCHES.contains(&name) {
        Ok(name)
    } else {
        Err(invalid(format!(
            "unknown architecture {name:?}; use libseccomp's names such as SCMP_ARCH_X86_64"
        )))
    }
}

fn errno(value: Option<u32>, what: &str) -> Result<Option<u16>, ProfileError> {
    match value {
        None => Ok(None),
        Some(e) if e <= 4095 => Ok(Some(e as u16)),
        Some(e) => Err(invalid(format!(
            "{what} {e} is not an errno; give a number from 0 to 4095 (1 is EPERM)"
        ))),
    }
}

/// An action name; `errno` is the rule's `errnoRet` (EPERM when none, as runc).
fn action(name: &str, errno: Option<u16>, what: &str) -> Result<Action, ProfileError> {
    let errno = errno.unwrap_or(libc::EPERM as u16);
    Ok(match name {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => Action::Errno(errno),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_TRACE" => Action::Trace(errno),
        "SCMP_ACT_NOTIFY" => {
            return Err(invalid(format!(
                "{what} SCMP_ACT_NOTIFY is not supported by isol (it runs no seccomp agent); use SCMP_ACT_ERRNO or SCMP_ACT_TRACE"
            )));
        }
        other => {
            return Err(invalid(format!(
                "{what} {other:?} is not a seccomp action; use SCMP_ACT_ALLOW, ERRNO, KILL, KILL_PROCESS, KILL_THREAD, TRAP, LOG or TRACE"
            )));
        }
    })
}

fn arg(a: &RawArg, what: &str) -> Result<Arg, ProfileError> {
    let index = u8::try_from(a.index)
        .ok()
        .filter(|i| *i < 6)
        .ok_or_else(|| {
            invalid(format!(
                "{what}.index {} is out of range; a syscall has arguments 0 to 5",
                a.index
            ))
        })?;
    let (op, value) = match a.op.as_str() {
        "SCMP_CMP_NE" => (Op::Ne, a.value),
        "SCMP_CMP_LT" => (Op::Lt, a.value),
        "SCMP_CMP_LE" => (Op::Le, a.value),
        "SCMP_CMP_EQ" => (Op::Eq, a.value),
        "SCMP_CMP_GE" => (Op::Ge, a.value),
        "SCMP_CMP_GT" => (Op::Gt, a.value),
        // libseccomp: `value` is the mask, `valueTwo` what the masked argument must equal.
        "SCMP_CMP_MASKED_EQ" => (Op::MaskedEq { mask: a.value }, a.value_two.unwrap_or(0)),
        other => {
            return Err(invalid(format!(
                "{what}.op {other:?} is not a comparison; use SCMP_CMP_NE, LT, LE, EQ, GE, GT or MASKED_EQ"
            )));
        }
    };
    Ok(Arg {
        index,
        op,
        value,
        low32: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_DEFAULT: Context = Context {
        capabilities: crate::security::capabilities::DEFAULT_MASK,
        kernel: Some((6, 1)),
    };

    #[test]
    fn docker_includes_and_excludes() {
        let text = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["a"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}},
            {"names":["b"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_ADMIN"]}},
            {"names":["c"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["s390x"]}},
            {"names":["d"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64","x32"]}},
            {"names":["e"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}},
            {"names":["f"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"7.0"}},
            {"names":["g"],"action":"SCMP_ACT_ALLOW","excludes":{"caps":["CAP_SYS_CHROOT"]}}]}"#;
        let p = Profile::from_json(text, &ROOT_DEFAULT).unwrap();
        let names: Vec<&str> = p.rules.iter().map(|r| r.names[0].as_str()).collect();
        assert_eq!(names, ["b", "d", "e"]);
        assert_eq!(p.default_action, Action::Errno(1));
        assert!(!p.i386);
    }

    #[test]
    fn errno_defaults_and_arch_map() {
        let text = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
            "archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86","SCMP_ARCH_X32"]},
                       {"architecture":"SCMP_ARCH_AARCH64","subArchitectures":["SCMP_ARCH_ARM"]}],
            "flags":["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"},
                        {"names":["kill"],"action":"SCMP_ACT_ERRNO","errnoRet":13,
                         "args":[{"index":1,"value":10,"op":"SCMP_CMP_EQ"}]},
                        {"names":["clone"],"action":"SCMP_ACT_ALLOW",
                         "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#;
        let p = Profile::from_json(text, &ROOT_DEFAULT).unwrap();
        assert_eq!(p.default_action, Action::Errno(38));
        assert!(p.i386);
        assert_eq!(p.flags, FLAG_LOG);
        assert_eq!(p.rules[0].action, Action::Errno(1));
        assert_eq!(p.rules[1].action, Action::Errno(13));
        assert_eq!(
            p.rules[2].args[0],
            Arg {
                index: 0,
                op: Op::MaskedEq { mask: 2114060288 },
                value: 0,
                low32: false
            }
        );
    }

    #[test]
    fn refusals_are_one_clear_line() {
        let cases = [
            (r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#, "SCMP_ACT_NOTIFY"),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/agent.sock"}"#,
                "listenerPath",
            ),
            (r#"{"defaultAction":"SCMP_ACT_NOPE"}"#, "SCMP_ACT_NOPE"),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_NEW_LISTENER"]}"#,
                "NEW_LISTENER",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_Z80"]}"#,
                "SCMP_ARCH_Z80",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
                "index 6",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["kill"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_XX"}]}]}"#,
                "SCMP_CMP_XX",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":70000}"#,
                "70000",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ALLOW"}]}"#,
                "names no syscall",
            ),
            ("{", "EOF"),
        ];
        for (text, needle) in cases {
            let e = Profile::from_json(text, &ROOT_DEFAULT)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{e}");
            assert!(e.starts_with("Invalid seccomp profile: "), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    /// What `isol-runc features` says isol takes, it takes.
    #[test]
    fn the_advertised_actions_operators_and_flags_are_accepted() {
        for a in ACTIONS {
            let text = format!(r#"{{"defaultAction":"{a}"}}"#);
            assert!(Profile::from_json(&text, &ROOT_DEFAULT).is_ok(), "{a}");
        }
        for op in OPERATORS {
            let text = format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["kill"],"action":"SCMP_ACT_ERRNO","args":[{{"index":0,"value":1,"op":"{op}"}}]}}]}}"#
            );
            assert!(Profile::from_json(&text, &ROOT_DEFAULT).is_ok(), "{op}");
        }
        for f in FLAGS {
            let text = format!(r#"{{"defaultAction":"SCMP_ACT_ALLOW","flags":["{f}"]}}"#);
            assert!(Profile::from_json(&text, &ROOT_DEFAULT).is_ok(), "{f}");
        }
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel("6.1.0-28-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel("x"), None);
    }
}
