//! virtio devices end to end through `isol_vmm::run`.
//!
//! * `hostile_driver_*`: a hand-assembled guest of a few hundred instructions (32-bit,
//!   PVH entry, no Linux) drives the virtio-mmio block device's registers itself and
//!   posts broken descriptor chains. It runs wherever /dev/kvm works, even emulated.
//! * The others boot the guest kernel with a busybox rootfs and an extra raw disk, and
//!   check what the guest's `dd` did against the host file. They need hardware-speed
//!   KVM: run them in the lab,
//!
//! ```text
//! cargo build -p isol-guest-init && cargo test -p isol-vmm --test virtio --no-run
//! isol lab -- target/x86_64-unknown-linux-gnu/debug/deps/virtio-<hash> --test-threads=1
//! ```
//!
//! Those skip (passing, reason on stderr) like `boot.rs` — unless `ISOL_REQUIRE_KVM`
//! is set, which turns a skip into a failure.

use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

mod common;

use common::{busybox_rootfs, find_init};
use isol_vmm::config::DiskSpec;
use isol_vmm::test_images::tiny_elf;
use isol_vmm::{ExitKind, Rootfs, RunSpec, SerialOutput, SharedBuffer, VmConfig, VmOutcome};

// ---- a tiny hostile virtio driver ---------------------------------------------------

/// The first virtio-mmio window (the only device in these VMs).
const MMIO: u32 = 0xc000_0000;
const R_STATUS: u32 = MMIO + 0x70;
const R_DRV_FEAT: u32 = MMIO + 0x20;
const R_DRV_FEAT_SEL: u32 = MMIO + 0x24;
const R_QUEUE_SEL: u32 = MMIO + 0x30;
const R_QUEUE_NUM: u32 = MMIO + 0x38;
const R_QUEUE_READY: u32 = MMIO + 0x44;
const R_QUEUE_NOTIFY: u32 = MMIO + 0x50;
const R_INT_STATUS: u32 = MMIO + 0x60;
const R_INT_ACK: u32 = MMIO + 0x64;
const R_DESC: u32 = MMIO + 0x80;
const R_DRIVER: u32 = MMIO + 0x90;
const R_DEVICE: u32 = MMIO + 0xa0;

/// Guest-physical layout of the driver's queue and buffers.
const DESC: u32 = 0x20_0000;
const AVAIL: u32 = 0x20_1000;
const USED: u32 = 0x20_2000;
const HDR: u32 = 0x20_3000;
const STATUS_BYTE: u32 = 0x20_3200;
const DATA: u32 = 0x20_4000;
const QSIZE: u32 = 8;
/// `"ISOL"` little-endian: the first four bytes of the test disk.
const DISK_MAGIC: u32 = u32::from_le_bytes(*b"ISOL");
/// Polls of a register before the guest gives up (a bound, not a time).
const POLLS: u32 = 2_000_000;

const F_NEXT: u32 = 1;
const F_WRITE: u32 = 2;

/// A minimal 32-bit assembler: just the instructions the driver needs.
#[derive(Default)]
struct Asm {
    code: Vec<u8>,
    /// (position of a rel32, exit code of the failure it jumps to).
    fails: Vec<(usize, u8)>,
}

impl Asm {
    fn u32(&mut self, v: u32) {
        self.code.extend_from_slice(&v.to_le_bytes());
    }
    /// `mov dword [addr], v`
    fn store(&mut self, addr: u32, v: u32) {
        self.code.extend_from_slice(&[0xc7, 0x05]);
        self.u32(addr);
        self.u32(v);
    }
    /// One 16-byte split-ring descriptor.
    fn desc(&mut self, i: u32, addr: u64, len: u32, flags: u32, next: u32) {
        let at = DESC + 16 * i;
        self.store(at, addr as u32);
        self.store(at + 4, (addr >> 32) as u32);
        self.store(at + 8, len);
        self.store(at + 12, flags | (next << 16));
    }
    /// `mov eax, dword [addr]`
    fn load(&mut self, addr: u32) {
        self.code.push(0xa1);
        self.u32(addr);
    }
    /// `movzx eax, word [addr]`
    fn load16(&mut self, addr: u32) {
        self.code.extend_from_slice(&[0x0f, 0xb7, 0x05]);
        self.u32(addr);
    }
    /// `movzx eax, byte [addr]`
    fn load8(&mut self, addr: u32) {
        self.code.extend_from_slice(&[0x0f, 0xb6, 0x05]);
        self.u32(addr);
    }
    /// `jcc rel32` to the failure `code` (0x84 jz, 0x85 jnz).
    fn jcc_fail(&mut self, cc: u8, code: u8) {
        self.code.extend_from_slice(&[0x0f, cc]);
        self.fails.push((self.code.len(), code));
        self.u32(0);
    }
    /// Fails with `code` unless `eax & mask != 0`.
    fn expect_bits(&mut self, mask: u32, code: u8) {
        self.code.push(0xa9); // test eax, imm32
        self.u32(mask);
        self.jcc_fail(0x84, code);
    }
    /// Fails with `code` unless `eax == v`.
    fn expect_eq(&mut self, v: u32, code: u8) {
        self.code.push(0x3d); // cmp eax, imm32
        self.u32(v);
        self.jcc_fail(0x85, code);
    }
    /// Polls `[addr]` (a `width`-byte load) until `(value & mask) == want`, at most
    /// [`POLLS`] times, else fails with `code`.
    fn poll(&mut self, addr: u32, width: u8, mask: u32, want: u32, code: u8) {
        self.code.push(0xb9); // mov ecx, POLLS
        self.u32(POLLS);
        let top = self.code.len();
        match width {
            4 => self.load(addr),
            _ => self.load16(addr),
        }
        self.code.push(0x25); // and eax, imm32
        self.u32(mask);
        self.code.push(0x3d); // cmp eax, want
        self.u32(want);
        // je done (over: dec ecx [1], jnz top [2], jmp fail [5])
        self.code.extend_from_slice(&[0x74, 8]);
        self.code.push(0x49); // dec ecx
        let back = top as isize - (self.code.len() as isize + 2);
        self.code.extend_from_slice(&[0x75, back as i8 as u8]); // jnz top
        self.code.push(0xe9); // jmp fail
        self.fails.push((self.code.len(), code));
        self.u32(0);
    }
    /// Reset, feature negotiation (VERSION_1 only), queue 0 of [`QSIZE`] entries set
    /// up with empty rings, DRIVER_OK.
    fn bring_up(&mut self) {
        self.store(R_STATUS, 0);
        self.store(R_STATUS, 1);
        self.store(R_STATUS, 3);
        self.store(R_DRV_FEAT_SEL, 1);
        self.store(R_DRV_FEAT, 1); // bit 32: VIRTIO_F_VERSION_1
        self.store(R_DRV_FEAT_SEL, 0);
        self.store(R_DRV_FEAT, 0);
        self.store(R_STATUS, 0xb);
        self.load(R_STATUS);
        self.expect_bits(8, 30); // FEATURES_OK latched
        self.store(R_QUEUE_SEL, 0);
        self.store(R_QUEUE_NUM, QSIZE);
        for (reg, addr) in [(R_DESC, DESC), (R_DRIVER, AVAIL), (R_DEVICE, USED)] {
            self.store(reg, addr);
            self.store(reg + 4, 0);
        }
        self.store(R_QUEUE_READY, 1);
        self.store(AVAIL, 0);
        self.store(AVAIL + 4, 0);
        self.store(USED, 0);
        self.store(STATUS_BYTE, 0xff);
        self.store(R_STATUS, 0xf);
        self.load(R_STATUS);
        self.expect_eq(0xf, 31); // DRIVER_OK, not broken
    }
    /// Publishes avail ring entry 0 = `head` with available index `idx`, notifies.
    fn post(&mut self, head: u32, idx: u32) {
        self.store(AVAIL + 4, head);
        self.store(AVAIL, idx << 16);
        self.store(R_QUEUE_NOTIFY, 0);
    }
    /// Reports `code` on the exit port and pulses the reset line.
    fn exit(&mut self, code: u8) {
        self.code
            .extend_from_slice(&isol_vmm::test_images::exit_code_program(code));
    }
    fn finish(mut self) -> Vec<u8> {
        self.exit(0);
        for (at, code) in std::mem::take(&mut self.fails) {
            let target = self.code.len();
            let rel = (target as i64 - (at as i64 + 4)) as i32;
            self.code[at..at + 4].copy_from_slice(&rel.to_le_bytes());
            self.exit(code);
        }
        self.code
    }
}

/// The driver program: five kinds of broken queue, each of which must make the device
/// set DEVICE_NEEDS_RESET and raise a configuration interrupt; then, after a reset, a
/// good read of sector 0 and a write (refused: the disk is read-only). Exit status 0
/// when every step went as expected, else the number of the failed check.
fn hostile_driver() -> Vec<u8> {
    let mut a = Asm::default();
    // (scenario, descriptors, head, avail idx)
    type Descs = &'static [(u64, u32, u32, u32)];
    let bad: [(&str, Descs, u32, u32); 5] = [
        (
            "buffer outside guest memory",
            &[(0xf000_0000, 16, 0, 0)],
            0,
            1,
        ),
        (
            "looping chain",
            &[
                (HDR as u64, 16, F_NEXT, 1),
                (HDR as u64 + 16, 16, F_NEXT, 0),
            ],
            0,
            1,
        ),
        (
            "overlong chain (> 64 MiB)",
            &[
                (HDR as u64, 16, F_NEXT, 1),
                (0x200_0000, 0x400_0000, F_NEXT | F_WRITE, 2),
                (STATUS_BYTE as u64, 1, F_WRITE, 0),
            ],
            0,
            1,
        ),
        ("head past the queue", &[(HDR as u64, 16, 0, 0)], 200, 1),
        ("avail index runaway", &[(HDR as u64, 16, 0, 0)], 0, 100),
    ];
    for (k, (_what, descs, head, idx)) in bad.iter().enumerate() {
        let k = k as u8;
        a.bring_up();
        for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
            a.desc(i as u32, *addr, *len, *flags, *next);
        }
        a.post(*head, *idx);
        a.poll(R_STATUS, 4, 0x40, 0x40, 10 + k); // DEVICE_NEEDS_RESET
        a.load(R_INT_STATUS);
        a.expect_bits(2, 20 + k); // configuration interrupt
        a.store(R_INT_ACK, 3);
    }
    // After a reset the device serves again: read sector 0.
    a.bring_up();
    a.store(HDR, 0); // VIRTIO_BLK_T_IN
    a.store(HDR + 4, 0);
    a.store(HDR + 8, 0); // sector
    a.store(HDR + 12, 0);
    a.desc(0, HDR.into(), 16, F_NEXT, 1);
    a.desc(1, DATA.into(), 512, F_NEXT | F_WRITE, 2);
    a.desc(2, STATUS_BYTE.into(), 1, F_WRITE, 0);
    a.post(0, 1);
    a.poll(USED + 2, 2, 0xffff, 1, 40);
    a.load8(STATUS_BYTE);
    a.expect_eq(0, 41); // VIRTIO_BLK_S_OK
    a.load(DATA);
    a.expect_eq(DISK_MAGIC, 42);
    // A write to the read-only disk completes with IOERR, and the device stays usable.
    a.store(HDR, 1); // VIRTIO_BLK_T_OUT
    a.store(HDR + 8, 1);
    a.store(STATUS_BYTE, 0xff);
    a.desc(0, HDR.into(), 16, F_NEXT, 1);
    a.desc(1, DATA.into(), 512, F_NEXT, 2);
    a.desc(2, STATUS_BYTE.into(), 1, F_WRITE, 0);
    a.store(AVAIL + 6, 0); // ring[1] = head 0
    a.store(AVAIL, 2 << 16);
    a.store(R_QUEUE_NOTIFY, 0);
    a.poll(USED + 2, 2, 0xffff, 2, 43);
    a.load8(STATUS_BYTE);
    a.expect_eq(1, 44); // VIRTIO_BLK_S_IOERR
    a.load(R_STATUS);
    a.expect_eq(0xf, 45);
    a.finish()
}

#[test]
fn hostile_driver_breaks_the_device_not_the_vmm() {
    if !isol_vmm::kvm_available() {
        if std::env::var_os("ISOL_REQUIRE_KVM").is_some() {
            panic!("ISOL_REQUIRE_KVM is set but /dev/kvm is not usable");
        }
        eprintln!("skipped: /dev/kvm is not usable here");
        return;
    }
    let mut kernel = tempfile::NamedTempFile::new().unwrap();
    kernel
        .write_all(&tiny_elf(&hostile_driver(), 0x100_0000, true))
        .unwrap();
    let mut disk = tempfile::NamedTempFile::new().unwrap();
    let mut content = vec![0u8; 64 << 10];
    content[..8].copy_from_slice(b"ISOLDISK");
    content[512..1024].fill(0x5a);
    disk.write_all(&content).unwrap();
    let spec = DiskSpec {
        path: disk.path().to_owned(),
        read_only: true,
        ..Default::default()
    };
    let stats = spec.stats.clone();
    let cfg = VmConfig {
        kernel: kernel.path().to_owned(),
        rootfs: Rootfs::None,
        memory_mib: 128,
        serial_output: SerialOutput::Sink,
        forward_stdin: false,
        timeout: Some(Duration::from_secs(300)),
        disks: vec![spec],
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let out = isol_vmm::run(&cfg).expect("the VMM survives a hostile driver");
    eprintln!("hostile driver ran in {:?}", start.elapsed());
    assert_eq!(
        out.exit_code, 0,
        "the guest's check {} failed (see hostile_driver)",
        out.exit_code
    );
    let (reads, writes, flushes, errors) = stats.counts();
    assert_eq!((reads, writes, flushes, errors), (1, 1, 0, 1));
    assert_eq!(std::fs::read(disk.path()).unwrap(), content);
}

// ---- Linux guests with an extra disk -------------------------------------------------

struct Env {
    kernel: PathBuf,
    init: PathBuf,
    rootfs: PathBuf,
    _tmp: tempfile::TempDir,
}

fn find_kernel() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("ISOL_KERNEL") {
        return Some(k.into());
    }
    isol_vmm::config::cached_kernel_dir().map(|d| d.join("vmlinux"))
}

fn env() -> Result<&'static Env, String> {
    static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let speed =
            isol_vmm::measure_guest_speed().map_err(|e| format!("no usable /dev/kvm: {e}"))?;
        if speed > isol_vmm::EMULATED_THRESHOLD {
            return Err(format!(
                "/dev/kvm emulates guests ({speed:?} for a 100k loop); run these in the lab: isol lab -- <test binary>"
            ));
        }
        let kernel = find_kernel().ok_or("no guest kernel; run guest-images/build-kernel.sh")?;
        let init = find_init().ok_or("no guest init; cargo build -p isol-guest-init")?;
        let busybox: PathBuf =
            std::env::var_os("ISOL_BUSYBOX").map_or("/bin/busybox".into(), Into::into);
        if !busybox.exists() {
            return Err(format!("no busybox at {}", busybox.display()));
        }
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let rootfs = tmp.path().join("rootfs.cpio");
        let applets = [
            "sh", "dd", "sync", "md5sum", "head", "tr", "printf", "echo", "cat", "od", "cmp",
        ];
        busybox_rootfs(&rootfs, &busybox, &applets, &[])?;
        Ok(Env {
            kernel,
            init,
            rootfs,
            _tmp: tmp,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

macro_rules! env_or_skip {
    () => {
        match env() {
            Ok(e) => e,
            Err(why) => {
                if std::env::var_os("ISOL_REQUIRE_KVM").is_some() {
                    panic!("ISOL_REQUIRE_KVM is set but: {why}");
                }
                eprintln!("skipped: {why}");
                return;
            }
        }
    };
}

/// A 1 MiB disk whose block `n` (4 KiB) is filled with byte `n`.
fn disk_file() -> (tempfile::NamedTempFile, Vec<u8>) {
    let content: Vec<u8> = (0..256u32)
        .flat_map(|n| std::iter::repeat_n(n as u8, 4096))
        .collect();
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&content).unwrap();
    (f, content)
}

fn read_only_disk(f: &tempfile::NamedTempFile) -> DiskSpec {
    DiskSpec {
        path: f.path().to_owned(),
        read_only: true,
        ..Default::default()
    }
}

/// Runs `script` with the extra disk as /dev/vda; returns (exit code, console output).
fn run_with_disk(e: &Env, disk: &DiskSpec, script: &str) -> (i32, String) {
    let (o, out) = run_with_disk_outcome(e, disk, script);
    (o.exit_code, out)
}

/// [`run_with_disk`], with the whole outcome (exit counts too).
fn run_with_disk_outcome(e: &Env, disk: &DiskSpec, script: &str) -> (VmOutcome, String) {
    let out = SharedBuffer::default();
    let cfg = VmConfig {
        kernel: e.kernel.clone(),
        rootfs: Rootfs::Cpio(e.rootfs.clone()),
        init: Some(e.init.clone()),
        memory_mib: 256,
        spec: RunSpec {
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into()],
            workdir: "/".into(),
            hostname: "isol-test".into(),
            ..Default::default()
        },
        serial_output: SerialOutput::Buffer(out.clone()),
        forward_stdin: false,
        timeout: Some(Duration::from_secs(120)),
        disks: vec![disk.clone()],
        boot_profiles: isol_vmm::config::default_boot_profiles(),
        ..Default::default()
    };
    let text = |b: &SharedBuffer| String::from_utf8_lossy(&b.contents()).into_owned();
    match isol_vmm::run(&cfg) {
        Ok(o) => {
            let t = text(&out);
            (o, t)
        }
        Err(err) => panic!("{err}\n--- console ---\n{}", text(&out)),
    }
}

fn md5_hex(b: &[u8]) -> String {
    // md5 is not in the dependency tree; the host's md5sum is (coreutils).
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("md5sum on the host");
    child.stdin.take().unwrap().write_all(b).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..32].to_owned()
}

#[test]
fn block_reads_and_writes_match_the_host_file() {
    let e = env_or_skip!();
    let (f, mut want) = disk_file();
    let disk = DiskSpec {
        path: f.path().to_owned(),
        read_only: false,
        ..Default::default()
    };
    // Reads: blocks 3 and 200-201 as the test wrote them. Writes: 8 KiB of 'A' at block
    // 10, 512 bytes of 'z' at byte 300 * 512 (not block-aligned for 4 KiB), fsync'ed.
    let script = "dd if=/dev/vda bs=4096 skip=3 count=1 2>/dev/null | md5sum; \
        dd if=/dev/vda bs=4096 skip=200 count=2 2>/dev/null | md5sum; \
        head -c 8192 /dev/zero | tr '\\0' A > /tmp/a && \
        dd if=/tmp/a of=/dev/vda bs=4096 seek=10 conv=notrunc,fsync 2>/dev/null && \
        head -c 512 /dev/zero | tr '\\0' z > /tmp/z && \
        dd if=/tmp/z of=/dev/vda bs=512 seek=300 conv=notrunc,fsync 2>/dev/null && echo written";
    let (code, out) = run_with_disk(e, &disk, script);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&md5_hex(&want[3 * 4096..4 * 4096])),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&md5_hex(&want[200 * 4096..202 * 4096])),
        "{out}"
    );
    assert_eq!(lines[2], "written");
    want[10 * 4096..12 * 4096].fill(b'A');
    want[300 * 512..301 * 512].fill(b'z');
    let got = std::fs::read(f.path()).unwrap();
    assert!(
        got == want,
        "the host file differs from what the guest wrote"
    );
    let (reads, writes, _flushes, errors) = disk.stats.counts();
    assert!(reads >= 2 && writes >= 2, "{:?}", disk.stats);
    assert_eq!(errors, 0);
}

#[test]
fn sync_flushes_to_the_host_file() {
    let e = env_or_skip!();
    let (f, mut want) = disk_file();
    let disk = DiskSpec {
        path: f.path().to_owned(),
        read_only: false,
        ..Default::default()
    };
    // A buffered write (no fsync, no direct I/O), then sync on the device.
    let script = "head -c 4096 /dev/zero | tr '\\0' S > /tmp/s && \
        dd if=/tmp/s of=/dev/vda bs=4096 seek=7 conv=notrunc 2>/dev/null && sync /dev/vda && echo synced";
    let (code, out) = run_with_disk(e, &disk, script);
    assert_eq!((code, out.as_str()), (0, "synced\n"));
    want[7 * 4096..8 * 4096].fill(b'S');
    assert!(
        std::fs::read(f.path()).unwrap() == want,
        "data not on the host file"
    );
    let flushes = disk.stats.flushes.load(Ordering::Relaxed);
    assert!(
        flushes >= 1,
        "no FLUSH reached the device: {:?}",
        disk.stats
    );
}

/// The driver's setup writes (feature selectors, queue select and size, ring addresses)
/// are batched by KVM (coalesced MMIO) and applied before the next exit: the disk still
/// comes up and reads right, and none of those writes exited.
#[test]
fn queue_setup_writes_are_batched_not_exits() {
    let e = env_or_skip!();
    let (f, want) = disk_file();
    let disk = read_only_disk(&f);
    let script = "dd if=/dev/vda bs=4096 skip=7 count=1 2>/dev/null | md5sum";
    let (o, out) = run_with_disk_outcome(e, &disk, script);
    assert_eq!(o.exit_code, 0, "{out}");
    assert!(out.contains(&md5_hex(&want[7 * 4096..8 * 4096])), "{out}");
    let c = &o.exit_counts;
    // The disk's one queue alone: its six ring-address writes.
    assert!(c.of_kind(ExitKind::MmioBatched) >= 6, "{c:?}");
    let base = isol_vmm::device_manager::VIRTIO_MMIO_BASE;
    for reg in [
        0x14, 0x20, 0x24, 0x30, 0x38, 0x80, 0x84, 0x90, 0x94, 0xa0, 0xa4,
    ] {
        assert_eq!(
            c.get(ExitKind::MmioWrite, base + reg),
            0,
            "a write to register {reg:#x} exited: {c:?}"
        );
    }
}

#[test]
fn read_only_disk_refuses_writes() {
    let e = env_or_skip!();
    let (f, want) = disk_file();
    let disk = read_only_disk(&f);
    let script = "cat /sys/block/vda/ro; \
        dd if=/dev/vda bs=4096 skip=5 count=1 2>/dev/null | md5sum; \
        head -c 4096 /dev/zero | tr '\\0' W > /tmp/w; \
        dd if=/tmp/w of=/dev/vda bs=4096 seek=1 conv=notrunc,fsync; echo dd=$?";
    let (code, out) = run_with_disk(e, &disk, script);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with("1\n"),
        "the guest sees a writable disk:\n{out}"
    );
    assert!(out.contains(&md5_hex(&want[5 * 4096..6 * 4096])), "{out}");
    assert!(out.contains("dd=1"), "the write did not fail:\n{out}");
    // The guest kernel refuses before a request is made (6.1: EPERM from the block
    // layer); the device's own refusal (IOERR) is checked by the hostile driver.
    assert!(
        [
            "Operation not permitted",
            "Read-only file system",
            "I/O error"
        ]
        .iter()
        .any(|m| out.contains(m)),
        "{out}"
    );
    assert!(
        std::fs::read(f.path()).unwrap() == want,
        "the host file changed"
    );
    assert_eq!(disk.stats.writes.load(Ordering::Relaxed), 0);
}
