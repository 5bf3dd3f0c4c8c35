//! `isol run --backend kvm --initrd FILE`: a guest kernel and a complete initramfs booted as
//! they are, the way Firecracker and QEMU boot them (docs/cli.md, "A kernel and an initramfs").
//!
//! The archive's own `/init` is PID 1: isol adds no guest init, run spec, root disk or virtio
//! device, so every flag its guest init or those devices would honour is refused here. The
//! serial console is the run's stdout (and stdin with `-i`); the run ends with status 0 when
//! the guest reboots (`reboot=k`), or with the status the guest writes to isol's exit port.

use std::path::Path;

use anyhow::{Context, bail};

use crate::cli::{Backend, Network, RunArgs};

/// The first flag given that a run of a whole initramfs cannot honour, and why.
fn refused(args: &RunArgs) -> Option<(&'static str, &'static str)> {
    const NO_INIT: &str =
        "the archive's own /init runs instead of isol's guest init, which is what applies it";
    const NO_DEVICE: &str = "the guest has no device but its serial console";
    const UNLISTED: &str = "such a run is not one isol ps, stop or exec can reach";
    const OWN_KERNEL: &str = "a VM's namespaces are in its own kernel";
    let given = [
        (
            args.image.is_some() || !args.command.is_empty(),
            "an image or a command",
            "the archive's own /init is what runs; give neither",
        ),
        (!args.env.is_empty(), "-e/--env", NO_INIT),
        (args.workdir.is_some(), "-w/--workdir", NO_INIT),
        (args.hostname.is_some(), "--hostname", NO_INIT),
        (args.user.is_some(), "-u/--user", NO_INIT),
        (!args.cap_add.is_empty(), "--cap-add", NO_INIT),
        (!args.cap_drop.is_empty(), "--cap-drop", NO_INIT),
        (!args.security_opt.is_empty(), "--security-opt", NO_INIT),
        (args.pids_limit.is_some(), "--pids-limit", NO_INIT),
        (
            args.cpuset_cpus.is_some(),
            "--cpuset-cpus",
            "isol's VMM does not pin its vCPU threads",
        ),
        (args.network != Network::None, "--network", NO_DEVICE),
        (!args.publish.is_empty(), "-p/--publish", NO_DEVICE),
        (!args.volumes.is_empty(), "-v/--volume", NO_DEVICE),
        (args.tty, "-t/--tty", NO_DEVICE),
        (args.detach, "-d/--detach", UNLISTED),
        (args.name.is_some(), "--name", UNLISTED),
        (args.pid.is_some(), "--pid", OWN_KERNEL),
        (args.ipc.is_some(), "--ipc", OWN_KERNEL),
        (args.uts.is_some(), "--uts", OWN_KERNEL),
        (args.cgroupns.is_some(), "--cgroupns", OWN_KERNEL),
        (args.userns.is_some(), "--userns", OWN_KERNEL),
    ];
    given
        .into_iter()
        .find(|(on, _, _)| *on)
        .map(|(_, flag, why)| (flag, why))
}

/// Checks the flags of a `--initrd` run: the kvm backend, nothing a whole initramfs cannot
/// honour.
fn check_flags(args: &RunArgs) -> anyhow::Result<()> {
    if args.backend != Backend::Kvm {
        bail!(
            "--initrd boots a kernel with an initramfs in a microVM, and a container has no kernel of its own: add --backend kvm"
        );
    }
    if let Some((flag, why)) = refused(args) {
        bail!("{flag} cannot be used with --initrd ({why}); drop it");
    }
    super::run::check_timeout(args)
}

/// `isol run --backend kvm --initrd FILE`; `log_filter` is handed on to isol-vmm.
pub fn run(args: &RunArgs, initrd: &Path, log_filter: &str) -> anyhow::Result<i32> {
    check_flags(args)?;
    let memory = super::run::parse_memory_and_cpus(args)?;
    let (vcpus, memory_mib) = super::run::vm_size(args.cpus, memory)?;
    let abs = |p: &Path| {
        std::path::absolute(p)
            .with_context(|| format!("Cannot make {} an absolute path", p.display()))
    };
    let initrd = abs(initrd)?;
    let meta = std::fs::metadata(&initrd)
        .with_context(|| format!("Cannot read --initrd {}", initrd.display()))?;
    if !meta.is_file() {
        bail!(
            "--initrd {} is not a file: give a newc cpio archive",
            initrd.display()
        );
    }
    let kernel = abs(&super::run::checked_guest_kernel(args)?)?;
    // The environment is read here, once: ISOL_VMM_SECCOMP, ISOL_CACHE, ISOL_BOOT_PROFILE.
    let (seccomp, seccomp_test_violation) =
        isol_vmm::seccomp::parse_setting(std::env::var(isol_vmm::seccomp::ENV).ok().as_deref())?;
    let speed_cache = isol_vmm::config::cache_dir().join("kvm-speed");
    isol_vmm::vstate::kvm::check_runs_guests(Some(&speed_cache)).map_err(anyhow::Error::msg)?;
    let launch = isol_vmm::launch::Launch {
        kernel,
        root_disk: Default::default(),
        initrd: Some(initrd.clone()),
        bundle: None,
        rlimits: Vec::new(),
        groups: None,
        init: Default::default(),
        vcpus,
        memory_mib,
        args: Vec::new(),
        env: Vec::new(),
        workdir: Default::default(),
        hostname: Default::default(),
        user: Default::default(),
        capabilities: None,
        inheritable: 0,
        ambient: 0,
        no_new_privs: false,
        workload_seccomp: Vec::new(),
        disks: Vec::new(),
        timeout: args.timeout.map(std::time::Duration::from_secs_f64),
        console: args.console,
        trace_exits: args.trace_exits,
        interactive: args.interactive,
        tty: false,
        json: args.json,
        // The report's "image".
        image: initrd.display().to_string(),
        boot_profiles: isol_vmm::config::default_boot_profiles(),
        log_filter: Some(log_filter.to_owned()),
        seccomp,
        seccomp_test_violation,
        jail: None,
        net: None,
        etc_files: Vec::new(),
        control: None,
        shares: Vec::new(),
        pids_limit: None,
        memory_limit: None,
        leftovers: Vec::new(),
        start_gate: None,
        oci: Default::default(),
    };
    let store = super::open_store()?;
    let id = isol_container::state::new_run_id();
    let launch = isol_vmm::launch::Launch {
        jail: super::run::vmm_jail(&store, &launch, &id)?,
        ..launch
    };
    launch.vm_config(None).validate()?;
    match isol_vmm::launch::vmm_binary() {
        Some(vmm) => Err(isol_vmm::launch::exec(&vmm, &launch, std::env::args_os()).into()),
        None => Ok(isol_vmm::launch::run(&launch)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(argv: &[&str]) -> RunArgs {
        let mut all = vec!["isol", "run"];
        all.extend_from_slice(argv);
        match crate::cli::Cli::try_parse_from(all).unwrap().command {
            crate::cli::Command::Run(a) => *a,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn an_initrd_needs_no_image_and_takes_the_vm_flags() {
        let a = parse(&[
            "--backend",
            "kvm",
            "--initrd",
            "/i.cpio",
            "-m",
            "128m",
            "--cpus",
            "1",
            "--timeout",
            "5",
            "--json",
            "--trace-exits",
            "--console",
            "-i",
            "--kernel",
            "/k",
        ]);
        assert_eq!(a.initrd.as_deref(), Some(Path::new("/i.cpio")));
        assert_eq!(a.image, None);
        check_flags(&a).unwrap();
        // Without --initrd an image is still required.
        assert!(crate::cli::Cli::try_parse_from(["isol", "run", "--backend", "kvm"]).is_err());
    }

    #[test]
    fn what_a_whole_initramfs_cannot_honour_is_refused_by_name() {
        let refusal = |argv: &[&str]| {
            let mut all = vec!["--initrd", "/i.cpio"];
            all.extend_from_slice(argv);
            check_flags(&parse(&all)).unwrap_err().to_string()
        };
        let e = refusal(&["--backend", "container"]);
        assert!(e.contains("add --backend kvm"), "{e}");
        for (flags, named) in [
            (&["busybox"][..], "an image or a command"),
            (&["-e", "A=1"], "-e/--env"),
            (&["-u", "1000"], "-u/--user"),
            (&["--network", "bridge"], "--network"),
            (&["-v", "/tmp:/tmp"], "-v/--volume"),
            (&["-t"], "-t/--tty"),
            (&["-d"], "-d/--detach"),
            (&["--pids-limit", "5"], "--pids-limit"),
            (&["--cap-drop", "ALL"], "--cap-drop"),
        ] {
            let mut argv = vec!["--backend", "kvm"];
            argv.extend_from_slice(flags);
            let e = refusal(&argv);
            assert!(
                e.starts_with(named)
                    && e.contains("cannot be used with --initrd")
                    && !e.contains('\n'),
                "{flags:?}: {e}"
            );
        }
        let e = refusal(&["--backend", "kvm", "--timeout", "0"]);
        assert!(e.contains("--timeout"), "{e}");
    }
}
