//! The device cgroup: which device nodes a container may create (mknod), read and write.
//!
//! Without it, a container's root can `mknod` any device of the host — a loop device, a disk,
//! /dev/kvm — and open it: namespaces do not cover devices. Every container gets the same default
//! set as runc and docker: null, zero, full, random, urandom, tty, console, ptmx and the pty
//! slaves, nothing else, mknod included. An OCI config may give its own rules.
//!
//! * cgroup v1: the `devices` controller: `a` written to `devices.deny` (deny everything), then
//!   each rule to `devices.allow` or `devices.deny`, in order.
//! * cgroup v2 has no device files: an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`,
//!   attached to the cgroup, answers each access (built here, instruction by instruction, as runc
//!   does: the rules last to first, the first that matches decides, and no match denies).

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The kind of device a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
    /// Both kinds.
    All,
}

/// What may be done with a device: read, write, mknod (bits of [`DeviceRule::access`]).
pub const ACCESS_MKNOD: u8 = 1;
pub const ACCESS_READ: u8 = 2;
pub const ACCESS_WRITE: u8 = 4;
/// `rwm`.
pub const ACCESS_ALL: u8 = ACCESS_MKNOD | ACCESS_READ | ACCESS_WRITE;

/// One allow or deny rule, as the OCI runtime spec's `linux.resources.devices` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// `None`: any major number.
    pub major: Option<u32>,
    /// `None`: any minor number.
    pub minor: Option<u32>,
    /// [`ACCESS_READ`] | [`ACCESS_WRITE`] | [`ACCESS_MKNOD`].
    pub access: u8,
}

impl DeviceRule {
    const fn allow_char(major: u32, minor: Option<u32>) -> Self {
        DeviceRule {
            allow: true,
            kind: DeviceKind::Char,
            major: Some(major),
            minor,
            access: ACCESS_ALL,
        }
    }

    /// The access letters, `rwm` order.
    fn access_letters(&self) -> String {
        let mut s = String::new();
        for (bit, c) in [(ACCESS_READ, 'r'), (ACCESS_WRITE, 'w'), (ACCESS_MKNOD, 'm')] {
            if self.access & bit != 0 {
                s.push(c);
            }
        }
        s
    }

    /// The lines this rule is written as to cgroup v1's `devices.allow`/`devices.deny`.
    pub fn v1_entries(&self) -> Vec<String> {
        let num = |n: Option<u32>| n.map_or("*".to_string(), |n| n.to_string());
        // `a` alone means every device with every access; a narrower rule for both kinds is one
        // line per kind.
        let types: &[char] = match self.kind {
            DeviceKind::All
                if self.major.is_none() && self.minor.is_none() && self.access == ACCESS_ALL =>
            {
                return vec!["a".into()];
            }
            DeviceKind::All => &['c', 'b'],
            DeviceKind::Char => &['c'],
            DeviceKind::Block => &['b'],
        };
        let (major, minor, access) = (num(self.major), num(self.minor), self.access_letters());
        types
            .iter()
            .map(|t| format!("{t} {major}:{minor} {access}"))
            .collect()
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allow { "allow" } else { "deny" };
        write!(f, "{verdict} {}", self.v1_entries().join(", "))
    }
}

/// The devices every container may use, as runc's and docker's defaults: the nodes isol creates
/// in the container's /dev, the console, and the pty master and slaves — each with mknod, read
/// and write. Everything else is denied.
pub const DEFAULT_RULES: &[DeviceRule] = &[
    DeviceRule::allow_char(1, Some(3)), // null
    DeviceRule::allow_char(1, Some(5)), // zero
    DeviceRule::allow_char(1, Some(7)), // full
    DeviceRule::allow_char(1, Some(8)), // random
    DeviceRule::allow_char(1, Some(9)), // urandom
    DeviceRule::allow_char(5, Some(0)), // tty
    DeviceRule::allow_char(5, Some(1)), // console
    DeviceRule::allow_char(5, Some(2)), // ptmx
    DeviceRule::allow_char(136, None),  // pts/*
];

// ---- cgroup v2: the eBPF program --------------------------------------------------------------

/// `struct bpf_insn` (linux/bpf.h).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one (little endian bitfields).
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const JMP_JEQ_K: u8 = 0x15;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

// Registers.
const R0: u8 = 0; // return value
const R1: u8 = 1; // the context: struct bpf_cgroup_dev_ctx
const R2: u8 = 2; // device type
const R3: u8 = 3; // access
const R4: u8 = 4; // major
const R5: u8 = 5; // minor
const R6: u8 = 6; // scratch

// struct bpf_cgroup_dev_ctx: access_type = (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*, major, minor.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The program for `rules`: loads the access into registers, then one block per rule, last rule
/// first; a block that matches returns its verdict; the end returns 0 (deny).
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut prog = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU64_AND_K, R2, 0, 0, 0xffff),
        insn(LDX_MEM_W, R3, R1, 0, 0),
        insn(ALU64_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        // Each condition jumps past the rest of the block when it does not hold; the jump
        // offsets are filled in once the block's length is known.
        let mut block: Vec<Insn> = Vec::new();
        let mut skips: Vec<usize> = Vec::new();
        let mut skip_unless = |block: &mut Vec<Insn>, code: u8, reg: u8, imm: i32| {
            skips.push(block.len());
            block.push(insn(code, reg, 0, 0, imm));
        };
        match rule.kind {
            DeviceKind::Char => skip_unless(&mut block, JMP_JNE_K, R2, DEV_CHAR),
            DeviceKind::Block => skip_unless(&mut block, JMP_JNE_K, R2, DEV_BLOCK),
            DeviceKind::All => {}
        }
        if let Some(major) = rule.major {
            skip_unless(&mut block, JMP_JNE_K, R4, major as i32);
        }
        if let Some(minor) = rule.minor {
            skip_unless(&mut block, JMP_JNE_K, R5, minor as i32);
        }
        let access = i32::from(rule.access & ACCESS_ALL);
        if access != i32::from(ACCESS_ALL) {
            block.push(insn(ALU64_MOV_X, R6, R3, 0, 0));
            if rule.allow {
                // An allow rule covers a request only if every access asked for is allowed.
                block.push(insn(ALU64_AND_K, R6, 0, 0, !access & i32::from(ACCESS_ALL)));
                skip_unless(&mut block, JMP_JNE_K, R6, 0);
            } else {
                // A deny rule applies as soon as one access asked for is denied.
                block.push(insn(ALU64_AND_K, R6, 0, 0, access));
                skip_unless(&mut block, JMP_JEQ_K, R6, 0);
            }
        }
        block.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(rule.allow)));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        let unconditional = skips.is_empty();
        for at in skips {
            block[at].off = (len - at - 1) as i16;
        }
        prog.extend(block);
        if unconditional {
            // A rule for every device and access (docker's and containerd's first rule, "deny
            // all") decides whatever reaches it: the rules before it and the final deny would
            // be unreachable, which the verifier refuses ("unreachable insn").
            return prog;
        }
    }
    prog.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    prog.push(insn(JMP_EXIT, 0, 0, 0, 0));
    prog
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Other programs may be attached to the same cgroup and its ancestors; all must allow.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// Loads `prog` into the kernel as a cgroup device program. On a verifier error, the error
/// carries the verifier's log.
pub fn load(prog: &[Insn]) -> Result<OwnedFd, (io::Error, String)> {
    let mut log = vec![0u8; 64 * 1024];
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"isol_device");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: c"Apache-2.0".as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..ProgLoadAttr::default()
    };
    // SAFETY: bpf(BPF_PROG_LOAD) reads `attr` (size given) and the instructions and license it
    // points to, all alive for the call, and writes at most log_size bytes into `log`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
        return Err((err, text));
    }
    // SAFETY: the kernel just returned this new fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches the program `prog` to the cgroup directory `cgroup` (open). The attachment holds
/// the program: the fd may be closed after, and removing the cgroup releases both.
pub fn attach(prog: &OwnedFd, cgroup: &OwnedFd) -> io::Result<()> {
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttachAttr::default()
    };
    // SAFETY: bpf(BPF_PROG_ATTACH) only reads `attr`, alive for the call; both fds are open.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `prog` on one access the way the kernel would: a tiny interpreter of the few
    /// instructions [`program`] emits, so the rule logic is checked without root.
    fn eval(prog: &[Insn], kind: i32, access: u8, major: u32, minor: u32) -> u64 {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
                ALU64_AND_K => r[dst] &= i.imm as i64 as u64,
                ALU64_RSH_K => r[dst] >>= i.imm,
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JEQ_K if r[dst] == i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JMP_JEQ_K | JMP_JNE_K => {}
                JMP_EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn cgroups_devices_default_program_allows_only_the_default_set() {
        let p = program(DEFAULT_RULES);
        let rw = ACCESS_READ | ACCESS_WRITE;
        for (major, minor) in [
            (1, 3),
            (1, 5),
            (1, 7),
            (1, 8),
            (1, 9),
            (5, 0),
            (5, 1),
            (5, 2),
        ] {
            assert_eq!(eval(&p, DEV_CHAR, rw, major, minor), 1, "c {major}:{minor}");
            assert_eq!(eval(&p, DEV_CHAR, ACCESS_MKNOD, major, minor), 1);
            // The same numbers as a block device are another device.
            assert_eq!(
                eval(&p, DEV_BLOCK, rw, major, minor),
                0,
                "b {major}:{minor}"
            );
        }
        assert_eq!(eval(&p, DEV_CHAR, rw, 136, 7), 1, "a pty slave");
        // A loop device, loop-control, /dev/kvm, fuse, tty0, a disk: denied, mknod too.
        for (kind, major, minor) in [
            (DEV_BLOCK, 7, 0),
            (DEV_CHAR, 10, 237),
            (DEV_CHAR, 10, 232),
            (DEV_CHAR, 10, 229),
            (DEV_CHAR, 4, 0),
            (DEV_BLOCK, 8, 0),
            (DEV_BLOCK, 253, 0),
        ] {
            assert_eq!(eval(&p, kind, ACCESS_READ, major, minor), 0);
            assert_eq!(eval(&p, kind, ACCESS_MKNOD, major, minor), 0);
        }
    }

    #[test]
    fn cgroups_devices_last_matching_rule_decides() {
        let rules = [
            DeviceRule {
                allow: true,
                kind: DeviceKind::All,
                major: None,
                minor: None,
                access: ACCESS_ALL,
            },
            DeviceRule {
                allow: false,
                kind: DeviceKind::Block,
                major: Some(7),
                minor: None,
                access: ACCESS_WRITE,
            },
            DeviceRule {
                allow: true,
                kind: DeviceKind::Char,
                major: Some(10),
                minor: Some(200),
                access: ACCESS_READ,
            },
        ];
        let p = program(&rules);
        assert_eq!(
            eval(&p, DEV_BLOCK, ACCESS_READ, 7, 1),
            1,
            "read of a loop device"
        );
        assert_eq!(
            eval(&p, DEV_BLOCK, ACCESS_WRITE, 7, 1),
            0,
            "its write denied"
        );
        assert_eq!(eval(&p, DEV_BLOCK, ACCESS_READ | ACCESS_WRITE, 7, 1), 0);
        assert_eq!(eval(&p, DEV_CHAR, ACCESS_READ, 10, 200), 1);
        // The last rule allows only reading 10:200; a write falls through to the first rule.
        assert_eq!(eval(&p, DEV_CHAR, ACCESS_WRITE, 10, 200), 1);
        assert_eq!(eval(&p, DEV_BLOCK, ACCESS_ALL, 8, 0), 1);
        assert_eq!(eval(&program(&[]), DEV_CHAR, ACCESS_READ, 1, 3), 0);
    }

    /// Every instruction of `prog` is reached from the first, as the kernel's verifier demands.
    fn assert_all_reachable(prog: &[Insn]) {
        let mut seen = vec![false; prog.len()];
        let mut todo = vec![0usize];
        while let Some(pc) = todo.pop() {
            if pc >= prog.len() || std::mem::replace(&mut seen[pc], true) {
                continue;
            }
            match prog[pc].code {
                JMP_EXIT => {}
                JMP_JEQ_K | JMP_JNE_K => {
                    todo.push(pc + 1);
                    todo.push(pc + 1 + prog[pc].off as usize);
                }
                _ => todo.push(pc + 1),
            }
        }
        let unreached: Vec<usize> = (0..prog.len()).filter(|&i| !seen[i]).collect();
        assert!(unreached.is_empty(), "unreachable insns {unreached:?}");
    }

    /// docker's, containerd's and CRI's rules open with "deny everything": the program ends at
    /// it (the kernel refused the unreachable final deny after it, on cgroup v2).
    #[test]
    fn cgroups_devices_a_rule_for_everything_ends_the_program() {
        let deny_all = DeviceRule {
            allow: false,
            kind: DeviceKind::All,
            major: None,
            minor: None,
            access: ACCESS_ALL,
        };
        let mut rules = vec![deny_all];
        rules.extend_from_slice(DEFAULT_RULES);
        let p = program(&rules);
        assert_all_reachable(&p);
        assert_all_reachable(&program(DEFAULT_RULES));
        assert_eq!(eval(&p, DEV_CHAR, ACCESS_READ, 1, 3), 1);
        assert_eq!(eval(&p, DEV_CHAR, ACCESS_READ, 1, 1), 0);
        // A rule for everything after the others: they can never decide.
        let p = program(&[DEFAULT_RULES[0], deny_all]);
        assert_all_reachable(&p);
        assert_eq!(eval(&p, DEV_CHAR, ACCESS_READ, 1, 3), 0);
    }

    #[test]
    fn cgroups_devices_v1_entries() {
        assert_eq!(DEFAULT_RULES[0].v1_entries(), ["c 1:3 rwm"]);
        assert_eq!(DEFAULT_RULES[8].v1_entries(), ["c 136:* rwm"]);
        let all = DeviceRule {
            allow: true,
            kind: DeviceKind::All,
            major: None,
            minor: None,
            access: ACCESS_ALL,
        };
        assert_eq!(all.v1_entries(), ["a"]);
        let mknod_any = DeviceRule {
            access: ACCESS_MKNOD,
            ..all
        };
        assert_eq!(mknod_any.v1_entries(), ["c *:* m", "b *:* m"]);
    }
}
