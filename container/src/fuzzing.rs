//! Fuzz harness: seccomp profiles (docker's and the OCI spec's JSON) through isol's own parser
//! and BPF compiler.
//!
//! Compiled with the cargo feature `fuzzing` (for the cargo-fuzz target `seccomp_profile` in
//! the workspace's `fuzz/` directory) and for this crate's tests, which replay every file of
//! `fuzz/corpus/seccomp_profile/` through the same function. Not part of the default API.

use seccompiler::sock_filter;

use crate::security::SecurityError;
use crate::security::seccomp::profile::Context;
use crate::security::seccomp::{self, Profile};

/// `BPF_MAXINSNS`: the most instructions the kernel takes in one filter.
pub const MAX_INSNS: usize = 4096;
/// `BPF_MEMWORDS`: the scratch memory slots of classic BPF.
const MEMWORDS: u32 = 16;
/// `sizeof(struct seccomp_data)`: what a seccomp filter may load from.
const SECCOMP_DATA_LEN: u32 = 64;

// Classic BPF opcodes (`<linux/filter.h>`, `<linux/bpf_common.h>`).
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const W: u16 = 0x00;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const K: u16 = 0x00;
const X: u16 = 0x08;
const A: u16 = 0x10;
const ADD: u16 = 0x00;
const SUB: u16 = 0x10;
const MUL: u16 = 0x20;
const DIV: u16 = 0x30;
const OR: u16 = 0x40;
const AND: u16 = 0x50;
const LSH: u16 = 0x60;
const RSH: u16 = 0x70;
const NEG: u16 = 0x80;
const XOR: u16 = 0xa0;
const JA: u16 = 0x00;
const JEQ: u16 = 0x10;
const JGT: u16 = 0x20;
const JGE: u16 = 0x30;
const JSET: u16 = 0x40;
const TAX: u16 = 0x00;
const TXA: u16 = 0x80;

/// Checks `prog` as the kernel does before it accepts a seccomp filter: Linux's
/// `seccomp_check_filter` (only the instructions seccomp allows; loads of `seccomp_data` only,
/// aligned, in range) and `bpf_check_classic` (1 to 4096 instructions, every jump inside the
/// program, no division by a constant zero, shifts under 32, scratch slots under 16 and written
/// before read on every path, a return last), plus: every return is an action the kernel
/// knows, and never `SECCOMP_RET_USER_NOTIF` (isol runs no seccomp agent).
pub fn check_program(prog: &[sock_filter]) -> Result<(), String> {
    let len = prog.len();
    if len == 0 || len > MAX_INSNS {
        return Err(format!("{len} instructions (1 to {MAX_INSNS})"));
    }
    // Scratch slots written on every path to an instruction (bpf_check_classic's
    // check_load_and_stores): all unknown until a path reaches it.
    let mut written: Vec<Option<u16>> = vec![None; len];
    written[0] = Some(0);
    for (pc, i) in prog.iter().enumerate() {
        let bad = |why: &str| Err(format!("instruction {pc} {i:?}: {why}"));
        // Unreachable code (the kernel accepts it; its slots do not matter).
        let mem = written[pc].unwrap_or(u16::MAX);
        let mut mem_after = mem;
        let after = len - pc - 1;
        let class = i.code & 0x07;
        match i.code {
            c if c == LD | W | ABS => {
                if i.k >= SECCOMP_DATA_LEN || i.k % 4 != 0 {
                    return bad("load outside seccomp_data or unaligned");
                }
            }
            c if c == LD | W | LEN || c == LDX | W | LEN => {}
            c if c == LD | IMM || c == LDX | W | IMM => {}
            c if c == MISC | TAX || c == MISC | TXA => {}
            c if c == LD | MEM || c == LDX | W | MEM => {
                if i.k >= MEMWORDS {
                    return bad("scratch slot out of range");
                }
                if mem & (1 << i.k) == 0 {
                    return bad("scratch slot read before it is written");
                }
            }
            c if c == ST || c == STX => {
                if i.k >= MEMWORDS {
                    return bad("scratch slot out of range");
                }
                mem_after |= 1 << i.k;
            }
            c if class == ALU => {
                let op = c & 0xf0;
                if ![ADD, SUB, MUL, DIV, AND, OR, XOR, LSH, RSH, NEG].contains(&op)
                    || (op == NEG && c & X != 0)
                {
                    return bad("ALU operation seccomp does not allow");
                }
                if c & X == 0 {
                    if op == DIV && i.k == 0 {
                        return bad("division by zero");
                    }
                    if (op == LSH || op == RSH) && i.k >= 32 {
                        return bad("shift by 32 or more");
                    }
                }
            }
            c if c == JMP | JA => {
                if i.k as usize >= after {
                    return bad("jump past the end");
                }
            }
            c if class == JMP => {
                let op = c & 0xf0;
                if ![JEQ, JGT, JGE, JSET].contains(&op) {
                    return bad("jump seccomp does not allow");
                }
                if usize::from(i.jt) >= after || usize::from(i.jf) >= after {
                    return bad("conditional jump past the end");
                }
            }
            c if c == RET | K => check_action(i.k).or_else(|e| bad(&e))?,
            c if c == RET | A => {}
            _ => return bad("opcode seccomp does not allow"),
        }
        // Propagate what is written to the instructions this one leads to.
        let mut flow = |to: usize| {
            written[to] = Some(written[to].map_or(mem_after, |m| m & mem_after));
        };
        match (class, i.code & 0xf0) {
            (RET, _) => {}
            (JMP, JA) => flow(pc + 1 + i.k as usize),
            (JMP, _) => {
                flow(pc + 1 + usize::from(i.jt));
                flow(pc + 1 + usize::from(i.jf));
            }
            _ if pc + 1 < len => flow(pc + 1),
            _ => {}
        }
    }
    let last = prog[len - 1].code;
    if last != RET | K && last != RET | A {
        return Err(format!("the last instruction ({last:#x}) is not a return"));
    }
    Ok(())
}

/// A `SECCOMP_RET_*` value isol may return: a known action, errno data under 4096.
fn check_action(k: u32) -> Result<(), String> {
    let action = k & libc::SECCOMP_RET_ACTION_FULL;
    let data = k & libc::SECCOMP_RET_DATA;
    match action {
        libc::SECCOMP_RET_KILL_PROCESS
        | libc::SECCOMP_RET_KILL_THREAD
        | libc::SECCOMP_RET_TRAP
        | libc::SECCOMP_RET_TRACE
        | libc::SECCOMP_RET_LOG
        | libc::SECCOMP_RET_ALLOW => Ok(()),
        libc::SECCOMP_RET_ERRNO if data < 4096 => Ok(()),
        _ => Err(format!("return {k:#x} is no action isol compiles")),
    }
}

/// Fuzz target `seccomp_profile`: any bytes as a profile's JSON, read against two contexts
/// (every capability on an unknown kernel; none on Linux 5.4, so `includes`/`excludes`
/// go both ways), and every accepted profile compiled. Never a panic; a refusal is a one-line
/// error naming the profile; a compiled program passes [`check_program`], or the compiler
/// refuses it as over the kernel's limit.
pub fn seccomp_profile(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for ctx in [
        Context {
            capabilities: u64::MAX,
            kernel: None,
        },
        Context {
            capabilities: 0,
            kernel: Some((5, 4)),
        },
    ] {
        let profile = match Profile::from_json(text, &ctx) {
            Ok(p) => p,
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with("Invalid seccomp profile: ") && !msg.contains('\n'),
                    "not a one-line refusal: {msg:?}"
                );
                continue;
            }
        };
        check_compiled(&profile);
    }
}

/// Compiles `profile` and checks the program (or the refusal).
fn check_compiled(profile: &Profile) {
    match seccomp::compile(profile) {
        Ok(filter) => {
            if let Err(e) = check_program(&filter.program) {
                panic!("the kernel would refuse the program: {e}\n{profile:?}");
            }
        }
        Err(SecurityError::SeccompTooLarge(n)) => assert!(n > MAX_INSNS, "{n} is not too large"),
        Err(e) => panic!("compile failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use seccompiler::sock_filter;

    use super::*;

    #[test]
    fn replay_seccomp_profile_corpus() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/seccomp_profile");
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .expect("fuzz/corpus/seccomp_profile/")
            .map(|e| e.unwrap().path())
            .collect();
        assert!(!files.is_empty(), "{dir:?} is empty");
        for p in &files {
            seccomp_profile(&std::fs::read(p).unwrap());
        }
        eprintln!("seccomp_profile: replayed {} corpus files", files.len());
    }

    /// The real profiles compile to programs the checker (and so the kernel) takes.
    #[test]
    fn docker_and_podman_profiles_and_isol_s_own_pass_the_check() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/security/testdata");
        for f in ["moby-default.json", "podman-default.json"] {
            let text = std::fs::read_to_string(dir.join(f)).unwrap();
            let p = Profile::from_json(&text, &Context::host(u64::MAX)).unwrap();
            let prog = seccomp::compile(&p).unwrap().program;
            check_program(&prog).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        check_program(&seccomp::default_filter().unwrap()).unwrap();
    }

    fn i(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
        sock_filter { code, jt, jf, k }
    }

    /// The checker refuses what the kernel refuses (so that a pass means something).
    #[test]
    fn the_checker_refuses_what_the_kernel_refuses() {
        let ret = || i(RET | K, 0, 0, libc::SECCOMP_RET_ALLOW);
        let ld_nr = || i(LD | W | ABS, 0, 0, 0);
        assert!(check_program(&[ld_nr(), ret()]).is_ok());
        let bad: &[(&str, Vec<sock_filter>)] = &[
            ("empty", vec![]),
            ("too long", (0..=MAX_INSNS).map(|_| ret()).collect()),
            ("no return last", vec![ret(), ld_nr()]),
            ("jt past the end", vec![i(JMP | JEQ | K, 1, 0, 0), ret()]),
            ("jf past the end", vec![i(JMP | JGE | K, 0, 2, 0), ret()]),
            ("ja past the end", vec![i(JMP | JA, 0, 0, 1), ret()]),
            (
                "load past seccomp_data",
                vec![i(LD | W | ABS, 0, 0, 64), ret()],
            ),
            ("unaligned load", vec![i(LD | W | ABS, 0, 0, 2), ret()]),
            ("byte load", vec![i(LD | 0x10 | ABS, 0, 0, 0), ret()]),
            ("divide by zero", vec![i(ALU | DIV | K, 0, 0, 0), ret()]),
            ("shift by 32", vec![i(ALU | LSH | K, 0, 0, 32), ret()]),
            ("slot read unwritten", vec![i(LD | MEM, 0, 0, 3), ret()]),
            ("slot 16", vec![i(ST, 0, 0, 16), ret()]),
            (
                "slot written on one path only",
                vec![
                    i(JMP | JEQ | K, 0, 1, 0),
                    i(ST, 0, 0, 1),
                    i(LD | MEM, 0, 0, 1),
                    ret(),
                ],
            ),
            ("user notif", vec![i(RET | K, 0, 0, 0x7fc0_0000)]),
            ("errno over 4095", vec![i(RET | K, 0, 0, 0x0005_1000)]),
        ];
        for (what, prog) in bad {
            assert!(check_program(prog).is_err(), "{what} passed");
        }
        let slot_ok = [i(ST, 0, 0, 1), i(LD | MEM, 0, 0, 1), i(RET | A, 0, 0, 0)];
        assert!(check_program(&slot_ok).is_ok());
    }

    #[test]
    fn empty_and_odd_inputs() {
        for d in [
            &b""[..],
            b"{}",
            b"null",
            b"\xff\xfe",
            b"{\"defaultAction\":1}",
        ] {
            seccomp_profile(d);
        }
    }
}
