//! `isol-vmm`: the VMM of `isol run --backend kvm`, as a small executable of its own.
//!
//! `isol run --backend kvm` does the CLI's part (flags, image, root disk, kernel and init
//! lookup, validation) and then execs this binary, same pid, handing it the launch
//! description on an inherited memfd (`isol_vmm::launch`). It holds only the VMM and its
//! devices, so the pages of isol's CLI, container runtime and image store are not part of
//! a running VM's memory. Without it beside isol, isol runs the same code in-process.

#[path = "../jail.rs"]
mod jail;
#[path = "../logging.rs"]
mod logging;

fn main() -> std::process::ExitCode {
    // `--network bridge`: the lease isol took (same pid: this process is its owner), given
    // back here after the VM by the process isol exec'd — the relay, or the VMM without a
    // jail — never by the jailed child.
    let mut lease: Option<isol_vmm::launch::LaunchNet> = None;
    // The exec channel's socket path, removed after the VM by the relay (a VMM without a jail
    // ends with its main thread filtered: its record and socket go stale together, and the
    // next listing of the runs removes both, as after a SIGKILL).
    let mut control: Option<std::path::PathBuf> = None;
    // The run's record and its mark on its image, which isol would have removed itself had it
    // not become this process: removed after the VM by the relay, as the socket is.
    let mut leftovers = Vec::new();
    // `-v DIR:DIR`: the virtiofsds isol started are this pid's children, ended likewise.
    let mut shares: Option<isol_vmm::launch::Launch> = None;
    let code = isol_vmm::launch::main(
        std::env::args_os(),
        |filter| {
            logging::init(filter);
        },
        |launch| {
            let jailed = jail::enter(launch);
            if !matches!(jailed, isol_vmm::launch::Jailed::Run(Some(_))) {
                lease = launch.net.clone();
                shares = (!launch.shares.is_empty()).then(|| launch.clone());
            }
            if matches!(jailed, isol_vmm::launch::Jailed::Exit(_)) {
                control = launch.control.as_ref().map(|c| c.path.clone());
                leftovers = launch.leftovers.clone();
            }
            jailed
        },
    );
    if let Some(net) = lease {
        release(&net);
    }
    for path in control.into_iter().map(Into::into).chain(leftovers) {
        let _ = std::fs::remove_file::<std::ffi::OsString>(path);
    }
    if let Some(l) = shares {
        isol_vmm::launch::end_backends(&l);
    }
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}

/// Closes this process's descriptor of the tap (it goes with the last one) and gives the
/// address back; the bridge and its NAT go with the last user. On a pod's network, removes
/// the tc redirection to the pod's interface instead.
fn release(net: &isol_vmm::launch::LaunchNet) {
    // SAFETY: the tap's descriptor isol handed over, used by nothing else in this process
    // any more (the VM is over); closed once.
    unsafe { libc::close(net.tap_fd) };
    // `--network ns:PATH`: the redirection in the pod's namespace, not a lease on the bridge.
    let released = match &net.pod {
        Some(record) => isol_container::network::pod::release_held(record),
        None => isol_container::network::release_held(&net.state_root, net.address, &net.tap),
    };
    if let Err(e) = released {
        tracing::warn!("releasing the VM's network: {e}; the next isol run retries");
    }
}
