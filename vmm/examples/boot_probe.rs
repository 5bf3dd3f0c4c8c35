//! Boots one microVM the way `isol run --backend kvm` does, with extra kernel
//! parameters, for profiling the guest's boot (needs real KVM: run it in the lab).
//!
//! ```text
//! boot_probe --kernel VMLINUX --init GUEST_INIT --disk ROOT.ext4 [--memory MIB]
//!            [--console] [--append "PARAM …"]… [--] CMD ARGS…
//! ```
//!
//! For example, the kernel's own view of where boot time goes, without the cost of
//! printing it on the slow serial console while booting:
//!
//! ```text
//! boot_probe … --append "printk.time=1 initcall_debug log_buf_len=1M" -- dmesg
//! ```
//!
//! The boot timeline and exit counts (`--trace-exits`) always go to stderr.

use std::path::PathBuf;

use isol_vmm::{GuestStdio, Rootfs, RunSpec, SerialOutput, VmConfig};

fn main() {
    let mut cfg = VmConfig {
        memory_mib: 128,
        trace_exits: true,
        forward_stdin: false,
        stdio: GuestStdio::VirtioConsole,
        serial_output: SerialOutput::Stdout,
        boot_profiles: isol_vmm::config::default_boot_profiles(),
        ..VmConfig::default()
    };
    let mut args = std::env::args().skip(1);
    let mut argv = Vec::new();
    let usage = "usage: boot_probe --kernel F --init F --disk F [--memory MIB] [--console] [--append P]… [--] CMD…";
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| panic!("{a} needs a value; {usage}"))
        };
        match a.as_str() {
            "--kernel" => cfg.kernel = val().into(),
            "--init" => cfg.init = Some(val().into()),
            "--disk" => cfg.rootfs = Rootfs::Disk(PathBuf::from(val())),
            "--memory" => cfg.memory_mib = val().parse().expect("--memory takes MiB"),
            "--console" => cfg.console = true,
            "--append" => cfg
                .extra_cmdline
                .extend(val().split_whitespace().map(String::from)),
            "--" => {
                argv.extend(args.by_ref().map(Into::into));
                break;
            }
            _ => argv.push(a.into()),
        }
    }
    assert!(!argv.is_empty(), "no command; {usage}");
    cfg.spec = RunSpec {
        args: argv,
        env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
        workdir: "/".into(),
        hostname: "probe".into(),
        ..Default::default()
    };
    match isol_vmm::run(&cfg) {
        Ok(o) => std::process::exit(o.exit_code),
        Err(e) => {
            eprintln!("boot_probe: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
