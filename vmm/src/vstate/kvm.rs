//! Opening /dev/kvm and checking it can run an isol guest.

use std::io;
use std::time::Duration;

use kvm_ioctls::{Cap, Kvm};

/// Errors opening or checking KVM.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// /dev/kvm does not exist.
    #[error(
        "/dev/kvm does not exist on this host; run inside the lab with `isol lab -- …` or on a host with KVM"
    )]
    NoDevice,
    /// /dev/kvm exists but cannot be opened.
    #[error(
        "No permission to open /dev/kvm; add yourself to the kvm group or run inside the lab with `isol lab -- …`"
    )]
    NoPermission,
    /// Any other open failure.
    #[error("Cannot open /dev/kvm: {0}; run inside the lab with `isol lab -- …`")]
    Open(io::Error),
    /// KVM's API version is not the stable one.
    #[error("KVM API version {0} is not 12; use a newer host kernel")]
    ApiVersion(i32),
    /// A capability isol needs is missing.
    #[error(
        "KVM lacks capability {0:?}, which the VMM needs; use a host kernel with full KVM support or the lab"
    )]
    MissingCap(Cap),
    /// KVM's supported CPUID could not be read.
    #[error("Cannot read KVM's supported CPUID: {0}; the host's KVM may be broken")]
    Cpuid(kvm_ioctls::Error),
    /// More vCPUs than KVM allows.
    #[error("KVM allows at most {max} vCPUs, {asked} were asked for; use fewer")]
    TooManyVcpus {
        /// Requested.
        asked: u8,
        /// KVM's limit.
        max: usize,
    },
}

/// Capabilities the recipe relies on.
pub const REQUIRED_CAPS: &[Cap] = &[
    Cap::Irqchip,
    Cap::Pit2,
    Cap::PitState2,
    Cap::Irqfd,
    Cap::UserMemory,
    Cap::SetTssAddr,
    Cap::ExtCpuid,
    Cap::ImmediateExit,
    Cap::AdjustClock,
    Cap::TscDeadlineTimer,
];

/// Opens /dev/kvm, mapping the common failures to errors that say what to do.
pub fn open_kvm() -> Result<Kvm, KvmError> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT => KvmError::NoDevice,
        libc::EACCES | libc::EPERM => KvmError::NoPermission,
        _ => KvmError::Open(io::Error::from_raw_os_error(e.errno())),
    })?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(KvmError::ApiVersion(v));
    }
    for cap in REQUIRED_CAPS {
        if !kvm.check_extension(*cap) {
            return Err(KvmError::MissingCap(*cap));
        }
    }
    Ok(kvm)
}

/// Checks that KVM can create `vcpus` vCPUs.
pub fn check_vcpus(kvm: &Kvm, vcpus: u8) -> Result<(), KvmError> {
    let max = kvm.get_max_vcpus();
    if usize::from(vcpus) > max {
        return Err(KvmError::TooManyVcpus { asked: vcpus, max });
    }
    Ok(())
}

/// Whether /dev/kvm is there and openable, without creating anything.
pub fn kvm_available() -> bool {
    open_kvm().is_ok()
}

/// How long KVM takes to run a fixed loop of 100 000 iterations in real mode. On
/// hardware virtualization this is well under a millisecond; when /dev/kvm runs guests
/// on its instruction emulator (nested without hardware support) it takes hundreds of
/// milliseconds, and a Linux kernel will not boot in useful time. Tests use it to skip.
/// The fastest of three passes.
///
/// An error on a host whose /dev/kvm is PVM's ([`pvm_host`]): its probe loop can be fast
/// enough (42 ms on 2026-12-07, 170 ms other days) while Linux guests fail at once.
pub fn measure_guest_speed() -> Result<Duration, String> {
    if pvm_host() {
        return Err(PVM_HOST.into());
    }
    run_probe_loop()
}

/// The probe loop of [`measure_guest_speed`], whatever serves /dev/kvm.
fn run_probe_loop() -> Result<Duration, String> {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    let kvm = open_kvm().map_err(|e| e.to_string())?;
    let vm = kvm.create_vm().map_err(|e| e.to_string())?;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)])
        .map_err(|e| e.to_string())?;
    // mov ecx, 100000 ; l: dec ecx ; jnz l ; hlt
    let code: [u8; 12] = [
        0x66, 0xb9, 0xa0, 0x86, 0x01, 0x00, 0x66, 0x49, 0x75, 0xfc, 0xf4, 0xf4,
    ];
    mem.write_slice(&code, GuestAddress(0x1000))
        .map_err(|e| e.to_string())?;
    super::memory::register_memory(&vm, &mem).map_err(|e| e.to_string())?;
    let mut vcpu = vm.create_vcpu(0).map_err(|e| e.to_string())?;
    let mut sregs = vcpu.get_sregs().map_err(|e| e.to_string())?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(&sregs).map_err(|e| e.to_string())?;
    let regs = kvm_bindings::kvm_regs {
        rip: 0x1000,
        rflags: 2,
        ..Default::default()
    };
    let mut best = Duration::MAX;
    for _ in 0..PROBE_PASSES {
        vcpu.set_regs(&regs).map_err(|e| e.to_string())?;
        let start = std::time::Instant::now();
        loop {
            match vcpu.run() {
                Ok(kvm_ioctls::VcpuExit::Hlt) => break,
                Ok(other) => return Err(format!("unexpected exit {other:?}")),
                Err(e) if e.errno() == libc::EINTR => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
        best = best.min(start.elapsed());
    }
    Ok(best)
}

/// Why a PVM host's /dev/kvm cannot run isol's guests.
pub const PVM_HOST: &str = "this host's /dev/kvm is PVM's (the kvm_pvm module: nested virtualization without hardware support), which runs only PVM-aware guest kernels; isol's guest fails there with a KVM internal error; run the kvm backend in the lab: isol lab -- isol run --backend kvm …";

/// Whether /dev/kvm here is served by PVM (`kvm_pvm`, nested virtualization without
/// hardware support) rather than `kvm_intel` or `kvm_amd`.
pub fn pvm_host() -> bool {
    let loaded = |m: &str| std::path::Path::new("/sys/module").join(m).exists();
    loaded("kvm_pvm") && !loaded("kvm_intel") && !loaded("kvm_amd")
}

/// Passes of the probe loop [`measure_guest_speed`] times, keeping the fastest: the first
/// also pays the vCPU's first entry and the code page's first fault, and any pass can
/// lose the host CPU. In the lab, with another lab running on the same host, a single
/// pass once took 61 ms (2026-11-23), past [`EMULATED_THRESHOLD`]; the emulating host's
/// passes take ~170 ms each, every time.
const PROBE_PASSES: usize = 3;

/// Above this, [`measure_guest_speed`] means "emulated": Linux boots are hopeless.
pub const EMULATED_THRESHOLD: Duration = Duration::from_millis(50);

/// Fails at once when this host's /dev/kvm runs guests on an instruction emulator (nested
/// virtualization without hardware support, such as nested PVM), where a Linux guest would take
/// minutes to boot and end in a KVM internal error.
///
/// [`measure_guest_speed`] takes about a millisecond with hardware support and half a second
/// without. A "hardware" verdict is kept in `cache` (a file, e.g. `<cache>/kvm-speed`) keyed by
/// the kernel's boot id, so later runs on the same boot only read it; an "emulated" one is
/// measured twice before it is believed, and never kept, so a busy moment cannot refuse KVM for
/// the rest of the boot. Without a cache file, it is measured every time.
pub fn check_runs_guests(cache: Option<&std::path::Path>) -> Result<(), String> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let known_fast = cache
        .and_then(|c| std::fs::read_to_string(c).ok())
        .is_some_and(|text| {
            text.split_whitespace().next() == Some(boot_id.as_str()) && !boot_id.is_empty()
        });
    if known_fast {
        return Ok(());
    }
    let mut took = measure_guest_speed()?;
    if took > EMULATED_THRESHOLD {
        took = took.min(measure_guest_speed()?);
    }
    if took > EMULATED_THRESHOLD {
        return Err(format!(
            "This host's /dev/kvm runs guests on an instruction emulator (a 100 000-iteration guest loop took {} ms; with hardware virtualization it takes under 1 ms), so a VM would take minutes to boot; run the kvm backend in the lab: isol lab -- isol run --backend kvm …",
            took.as_millis()
        ));
    }
    if let Some(c) = cache
        && !boot_id.is_empty()
    {
        // Best effort: a cache that cannot be written only costs the next run a probe.
        let _ = c.parent().map(std::fs::create_dir_all);
        let tmp = c.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, format!("{boot_id} {}\n", took.as_micros())).is_ok() {
            let _ = std::fs::rename(&tmp, c);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_point_at_the_lab() {
        for e in [KvmError::NoDevice, KvmError::NoPermission] {
            let m = e.to_string();
            assert!(m.contains("isol lab"), "{m}");
            assert!(!m.contains('\n'));
        }
    }

    #[test]
    fn open_kvm_here_if_present() {
        // This host may or may not have /dev/kvm; either way the answer is an Ok or one
        // of the documented errors, never a panic.
        match open_kvm() {
            Ok(kvm) => check_vcpus(&kvm, 1).unwrap(),
            Err(e) => eprintln!("no usable KVM: {e}"),
        }
    }

    #[test]
    fn speed_probe_runs_real_mode_code() {
        if !std::path::Path::new("/dev/kvm").exists() {
            eprintln!("skipped: no /dev/kvm");
            return;
        }
        // The loop itself, also where measure_guest_speed refuses the host (PVM).
        let d = run_probe_loop().unwrap();
        eprintln!("100k-iteration loop took {d:?}");
        assert_eq!(measure_guest_speed().is_err(), pvm_host());
    }
}
