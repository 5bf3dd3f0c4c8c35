//! Container networking: none (loopback only), host, and bridge (veth on `isol0`, NAT).
//!
//! * **none**: the child has a new network namespace and calls [`loopback_up`] in it.
//! * **host**: nothing; the child stays in the host's namespace.
//! * **bridge**: the parent calls [`attach`] with the child's pid. The first bridged container
//!   creates the bridge `isol0` holding the gateway (first usable) address of the subnet
//!   (`ISOL_BRIDGE_SUBNET`, default `10.88.0.0/24`), installs the nftables table `ip isol`
//!   (masquerade for traffic leaving the subnet other than through the bridge, forward accepts
//!   for the bridge) and turns net.ipv4.ip_forward on, remembering its old value. Each container
//!   gets a veth pair: `isolv<first 8 chars of id>` on the bridge, `eth0` in the container with
//!   the lowest free address and a default route via the gateway. [`Attachment::release`] (or its
//!   `Drop`) removes the veth and, for the last container, the bridge, the table, and restores
//!   ip_forward. [`sweep`] does the same for allocations whose isol was killed.
//!
//! Published ports (`-p`, [`PortMapping`]) are bound on the host by the attaching isol (the
//! check that nothing else holds them, kept for the run's life), recorded with the run's
//! allocation, and become DNAT rules in the nft table, which is rendered from the live
//! allocations whenever one with ports comes or goes: released, or swept after a SIGKILL, a
//! run's rules go with its record.
//!
//! A VM on the bridge ([`attach_vm`], `isol run --backend kvm --network bridge`) gets an address
//! from the same table and a tap `isolt<first 8 chars of id>` on the bridge instead of a veth
//! pair; its release, sweep and teardown are the same.
//!
//! Allocation state lives in `<state_root>/net/` (see `state.rs`), always under an flock, so
//! concurrent isol processes never hand out the same address or tear the bridge down under each
//! other. One host should use one `state_root`: the bridge and the nft table are host-wide.
//!
//! ## What the runtime must do, in order
//!
//! 1. At isol start: [`sweep`]`(state_root)`.
//! 2. Clone the child with CLONE_NEWNET (unless the mode is host); the child blocks on its sync pipe.
//! 3. Parent: [`attach`]`(mode, id, child_pid, state_root)` while the child is blocked and
//!    unreaped; on error kill and reap the child. Keep the returned [`Attachment`] alive.
//! 4. Parent: release the child. Child (modes none and bridge): [`loopback_up`] before dropping
//!    capabilities and installing seccomp, then exec.
//! 5. Parent, after reaping the child: [`Attachment::release`] (errors are worth reporting; on
//!    every other exit path the `Drop` does the same, best effort).

mod bridge;
mod cmd;
mod loopback;
mod nat;
pub mod pod;
mod publish;
mod state;
mod subnet;
mod veth;

use std::collections::HashSet;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::config::NetworkMode;

pub use bridge::BRIDGE;
pub use loopback::loopback_up;
pub use nat::TABLE as NFT_TABLE;
pub use publish::{PortMapping, Protocol, Reservations};
pub use subnet::{DEFAULT_SUBNET, SUBNET_ENV};
pub use veth::VETH_PREFIX;

use state::{Allocation, Locked};
use subnet::Subnet;

/// What can go wrong while wiring a container's network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "ISOL_BRIDGE_SUBNET={value} is not usable: {reason}; set it to a private IPv4 network such as 10.88.0.0/24, or unset it"
    )]
    InvalidSubnet { value: String, reason: String },
    #[error(
        "Bridge subnet {subnet} overlaps {address} on host interface {interface}; choose another subnet with ISOL_BRIDGE_SUBNET"
    )]
    SubnetOverlap {
        subnet: String,
        interface: String,
        address: String,
    },
    #[error(
        "Bridge {BRIDGE} is serving {active} for running containers, so {requested} cannot be used now; set ISOL_BRIDGE_SUBNET={active} or wait until they exit"
    )]
    SubnetInUse { requested: String, active: String },
    #[error(
        "No free address left in {subnet}; stop some bridged containers or set ISOL_BRIDGE_SUBNET to a larger network"
    )]
    Exhausted { subnet: String },
    #[error(
        "Container id {id:?} cannot name a network interface; use a non-empty id of ASCII letters and digits"
    )]
    InvalidId { id: String },
    #[error(
        "Veth {veth} is already used by running container {owner}; give containers ids that differ in their first 8 characters"
    )]
    VethInUse { veth: String, owner: String },
    #[error(
        "Host link {name} already exists but no running isol owns it; if it is stale, delete it with `ip link delete {name}`"
    )]
    StrayLink { name: String },
    #[error("Bridge networking needs root on the host; run isol as root or use --network none")]
    NotRoot,
    #[error(
        "Process {pid} has no network namespace to attach to (it has exited); call attach after clone and before reaping the child"
    )]
    NoNetns { pid: i32 },
    #[error(
        "Process {pid} shares isol's network namespace; clone the container with CLONE_NEWNET before attaching bridge networking"
    )]
    SharedNetns { pid: i32 },
    #[error("{}", state_message(path, error))]
    State { path: PathBuf, error: io::Error },
    #[error(
        "Cannot read or write {path}: {error}; bridge networking needs root and a writable /proc/sys"
    )]
    Sysctl {
        path: &'static str,
        error: io::Error,
    },
    #[error("Cannot run {program}: {error}; install it (Debian package {package})")]
    Spawn {
        program: String,
        package: &'static str,
        error: io::Error,
    },
    #[error(
        "`{command}` failed: {detail}; check the host's network configuration and that isol runs as root"
    )]
    Command { command: String, detail: String },
    #[error(
        "Cannot bring up loopback in the container's network namespace: {error}; loopback_up must run before capabilities are dropped"
    )]
    Loopback { error: io::Error },
    #[error("Cannot create the VM's tap {name}: {reason}")]
    Tap { name: String, reason: String },
    #[error(
        "Host port {mapping} is already in use ({error}): a host process or another run holds it; choose another host port with -p, or stop what holds it"
    )]
    PortInUse { mapping: String, error: io::Error },
    #[error(
        "Host port {mapping} is already published by running run {owner}; choose another host port with -p, or stop that run"
    )]
    PortPublished { mapping: String, owner: String },
    #[error(
        "Ports can only be published (-p) with --network bridge; add --network bridge or drop -p"
    )]
    PublishNeedsBridge,
    #[error("Network namespace {path} cannot be used: {reason}")]
    Netns { path: PathBuf, reason: String },
}

/// The prefix of every VM's tap on the bridge (`--network bridge` on kvm).
pub const TAP_PREFIX: &str = "isolt";

/// A container's place on the bridge. Released explicitly with [`Attachment::release`], or
/// best-effort on drop.
#[derive(Debug)]
pub struct Attachment {
    id: String,
    address: Ipv4Addr,
    gateway: Ipv4Addr,
    prefix: u8,
    host_veth: String,
    state_root: PathBuf,
    ports: Vec<PortMapping>,
    reservations: Reservations,
    released: bool,
}

impl Attachment {
    /// The container's address on the bridge.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// The bridge's address: the container's default gateway, and how it reaches the host.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The subnet's prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The name of the host side of the container's veth pair (a VM's tap).
    pub fn host_veth(&self) -> &str {
        &self.host_veth
    }

    /// The container id this attachment belongs to.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The published ports, with the host ports actually used (a port 0 asked for is the free
    /// one chosen).
    pub fn ports(&self) -> &[PortMapping] {
        &self.ports
    }

    /// The sockets holding the published host ports; they must stay open while the run lives.
    pub fn reservations(&self) -> &Reservations {
        &self.reservations
    }

    /// Deletes the host veth and frees the address; the last container also takes down the
    /// bridge and the nft table and restores ip_forward. Call it after the child was reaped.
    pub fn release(mut self) -> Result<(), NetworkError> {
        self.release_once()
    }

    /// Leaves the release to the process this one becomes (exec of `isol-vmm`, same pid and
    /// so the same owner): no release on drop; that process calls [`release_held`]. If it
    /// never does (SIGKILL), the next isol's [`sweep`] does, as for any dead owner.
    pub fn hand_over(mut self) {
        self.released = true;
    }

    fn release_once(&mut self) -> Result<(), NetworkError> {
        if self.released {
            return Ok(());
        }
        self.released = true;
        let state = Locked::acquire(&self.state_root)?;
        release_locked(&state, self.address, &self.host_veth)
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if let Err(error) = self.release_once() {
            tracing::warn!("releasing the network of {}: {error}", self.id);
        }
    }
}

/// Parent side, after clone and before letting the child run: for [`NetworkMode::Bridge`] sets
/// everything up for the network namespace of `child_pid`; for none and host returns `Ok(None)`.
///
/// `child_pid` must be an unreaped child in its own network namespace; `state_root` is the
/// runtime's state directory (e.g. `/var/lib/isol/run`), the same for every isol on the host.
pub fn attach(
    mode: NetworkMode,
    id: &str,
    child_pid: i32,
    state_root: &Path,
    publish: &[PortMapping],
) -> Result<Option<Attachment>, NetworkError> {
    match mode {
        NetworkMode::None | NetworkMode::Host if !publish.is_empty() => {
            Err(NetworkError::PublishNeedsBridge)
        }
        NetworkMode::None | NetworkMode::Host => {
            let mode = if mode == NetworkMode::Host {
                "host"
            } else {
                "none"
            };
            tracing::debug!(mode, "network: nothing to attach");
            Ok(None)
        }
        NetworkMode::Bridge => {
            let a = attach_bridge(&Subnet::from_env()?, id, child_pid, state_root, publish)?;
            tracing::debug!(
                mode = "bridge",
                address = %a.address,
                gateway = %a.gateway,
                veth = %a.host_veth,
                bridge = BRIDGE,
                ports = ?a.ports,
                "network attached"
            );
            Ok(Some(a))
        }
    }
}

/// At isol start: frees the allocations of isol processes that died without releasing them
/// (their host veths are deleted), and takes the bridge down if no live container uses it.
/// Best effort: problems are printed as warnings; the next attach or sweep retries.
pub fn sweep(state_root: &Path) {
    if let Err(error) = try_sweep(state_root) {
        tracing::warn!("cleaning up stale container networks: {error}");
    }
}

fn try_sweep(state_root: &Path) -> Result<(), NetworkError> {
    // VMs on pod networks whose isol died: their redirections (no lock: one record each).
    pod::sweep(state_root);
    // Fast path for hosts that never used bridge networking: no lock, no commands.
    if !Locked::dir_of(state_root).exists() {
        return Ok(());
    }
    let state = Locked::acquire(state_root)?;
    let (occupied, prune_error) = prune(&state)?;
    if occupied.is_empty() && (state.active_subnet()?.is_some() || state.saved_forward()?.is_some())
    {
        teardown_shared(&state)?;
    } else if !occupied.is_empty() {
        // A dead run's published ports go with its record.
        refresh_nat(&state)?;
    }
    prune_error.map_or(Ok(()), Err)
}

fn attach_bridge(
    subnet: &Subnet,
    id: &str,
    child_pid: i32,
    state_root: &Path,
    publish: &[PortMapping],
) -> Result<Attachment, NetworkError> {
    // Everything that can be checked without touching the host comes first.
    let host_veth = veth::host_name(id)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(NetworkError::NotRoot);
    }
    let netns = veth::netns_of(child_pid)?;
    let (a, ()) = attach_link(
        subnet,
        id,
        host_veth,
        state_root,
        publish,
        |host_veth, address| {
            veth::create(host_veth, child_pid, mac_of(address))?;
            veth::configure_peer(&netns, address, subnet)
        },
    )?;
    Ok(a)
}

/// `--network bridge` for a VM: an address on the bridge like a container's, and a tap
/// `isolt<first 8 chars of id>` on the bridge, made by `create_tap(name)` (the caller opens
/// it: it holds the descriptor the VMM serves, and the tap goes with its last descriptor).
/// Recorded in the same allocation table, so the same release, sweep and teardown apply.
pub fn attach_vm<T>(
    id: &str,
    state_root: &Path,
    publish: &[PortMapping],
    create_tap: impl FnOnce(&str) -> Result<T, String>,
) -> Result<(Attachment, T), NetworkError> {
    let tap = veth::host_name(id)?.replacen(VETH_PREFIX, TAP_PREFIX, 1);
    if !nix::unistd::geteuid().is_root() {
        return Err(NetworkError::NotRoot);
    }
    let subnet = Subnet::from_env()?;
    let (a, t) = attach_link(&subnet, id, tap, state_root, publish, |name, _| {
        let t = create_tap(name).map_err(|reason| NetworkError::Tap {
            name: name.to_owned(),
            reason,
        })?;
        bridge::enslave(name)?;
        Ok(t)
    })?;
    tracing::debug!(
        mode = "bridge",
        address = %a.address,
        gateway = %a.gateway,
        tap = %a.host_veth,
        bridge = BRIDGE,
        ports = ?a.ports,
        "VM network attached"
    );
    Ok((a, t))
}

/// After a [`Attachment::hand_over`]: frees `address` if the calling process still holds it
/// for `link` (deleting the link, and the bridge with the last user), as
/// [`Attachment::release`] would have.
pub fn release_held(state_root: &Path, address: Ipv4Addr, link: &str) -> Result<(), NetworkError> {
    let state = Locked::acquire(state_root)?;
    let me = Allocation::owned_by_me("", link);
    let held = state.entries()?.into_iter().any(|e| {
        e.address == address
            && e.allocation
                .is_some_and(|a| a.veth == link && a.pid == me.pid && a.start_time == me.start_time)
    });
    if !held {
        return Ok(());
    }
    release_locked(&state, address, link)
}

/// The allocation and the shared setup around one host link on the bridge: records the lowest
/// free address for `host_link` and the `publish`ed ports (bound on the host first) under the
/// lock, sets up the bridge and NAT if needed, then `create(host_link, address)`, then the
/// ports' DNAT rules; undoes all of it if that fails.
fn attach_link<T>(
    subnet: &Subnet,
    id: &str,
    host_link: String,
    state_root: &Path,
    publish: &[PortMapping],
    create: impl FnOnce(&str, Ipv4Addr) -> Result<T, NetworkError>,
) -> Result<(Attachment, T), NetworkError> {
    let state = Locked::acquire(state_root)?;
    // A dead owner's record must not block the start of a live container; sweep reports it.
    let (occupied, _) = prune(&state)?;
    let active = state.active_subnet()?;
    if !occupied.is_empty() {
        if let Some(active) = active.as_deref().filter(|a| *a != subnet.to_string()) {
            return Err(NetworkError::SubnetInUse {
                requested: subnet.to_string(),
                active: active.to_owned(),
            });
        }
        if let Some((_, owner)) = occupied.iter().find(|(_, a)| a.veth == host_link) {
            return Err(NetworkError::VethInUse {
                veth: host_link,
                owner: owner.id.clone(),
            });
        }
    }
    if bridge::link_exists(&host_link) {
        return Err(NetworkError::StrayLink { name: host_link });
    }
    // A port another live run publishes is refused by name; one a host process holds, by the
    // bind. (The other run holds its ports bound too; the record catches one whose holder
    // has exited while its VM or container still runs.)
    let conflict = |ports: &[PortMapping]| -> Result<(), NetworkError> {
        for m in ports.iter().filter(|m| m.host_port != 0) {
            if let Some((_, owner)) = occupied
                .iter()
                .find(|(_, a)| a.ports.iter().any(|p| p.conflicts_with(m)))
            {
                return Err(NetworkError::PortPublished {
                    mapping: m.to_string(),
                    owner: owner.id.clone(),
                });
            }
        }
        Ok(())
    };
    conflict(publish)?;
    let (ports, reservations) = publish::reserve(publish)?;
    conflict(&ports)?;
    let taken: HashSet<Ipv4Addr> = occupied.iter().map(|(address, _)| *address).collect();
    let address = subnet
        .container_addresses()
        .find(|address| !taken.contains(address))
        .ok_or_else(|| NetworkError::Exhausted {
            subnet: subnet.to_string(),
        })?;
    // Recorded before anything is created, so a crash from here on leaves a trace for sweep.
    let allocation = Allocation {
        ports: ports.clone(),
        ..Allocation::owned_by_me(id, &host_link)
    };
    state.insert(address, &allocation)?;

    let set_up = || -> Result<T, NetworkError> {
        if occupied.is_empty() || active.is_none() || !bridge::link_exists(BRIDGE) {
            setup_shared(&state, subnet)?;
            // Reattach live containers if the bridge had vanished under them.
            for (_, allocation) in &occupied {
                if bridge::link_exists(&allocation.veth) {
                    let _ = cmd::run(
                        "ip",
                        &["link", "set", "dev", &allocation.veth, "master", BRIDGE],
                        None,
                    );
                }
            }
        }
        let t = create(&host_link, address)?;
        // This run's ports, and those of the others if the table was just rebuilt.
        refresh_nat(&state)?;
        Ok(t)
    };
    match set_up() {
        Ok(t) => Ok((
            Attachment {
                id: id.to_owned(),
                address,
                gateway: subnet.gateway(),
                prefix: subnet.prefix(),
                host_veth: host_link,
                state_root: state_root.to_owned(),
                ports,
                reservations,
                released: false,
            },
            t,
        )),
        Err(error) => {
            // Undo this attachment (and the shared setup if nobody else uses it); report the cause.
            let _ = release_locked(&state, address, &host_link);
            Err(error)
        }
    }
}

/// Allocations that hold an address: `(address, owner)`.
type Occupied = Vec<(Ipv4Addr, Allocation)>;

/// Drops the records of dead owners after deleting their host veths. Returns the allocations
/// that still occupy an address (live owners, and dead ones whose veth could not be deleted),
/// plus the first cleanup error.
fn prune(state: &Locked) -> Result<(Occupied, Option<NetworkError>), NetworkError> {
    let mut occupied = Vec::new();
    let mut first_error = None;
    for entry in state.entries()? {
        match entry.allocation {
            Some(allocation) if allocation.owner_alive() => {
                occupied.push((entry.address, allocation));
            }
            Some(allocation) => {
                match bridge::delete_link(&allocation.veth)
                    .and_then(|()| state.remove(entry.address))
                {
                    Ok(()) => {}
                    Err(error) => {
                        first_error.get_or_insert(error);
                        occupied.push((entry.address, allocation));
                    }
                }
            }
            // Unreadable: written by an isol that died mid-write (the write is atomic, so this
            // takes a broken filesystem); nothing was created for it yet.
            None => {
                if let Err(error) = state.remove(entry.address) {
                    first_error.get_or_insert(error);
                }
            }
        }
    }
    Ok((occupied, first_error))
}

/// Frees one allocation; tears the shared setup down when nothing occupies the bridge anymore.
fn release_locked(state: &Locked, address: Ipv4Addr, host_veth: &str) -> Result<(), NetworkError> {
    // Keep the record if the veth cannot be deleted, so that a later sweep retries.
    bridge::delete_link(host_veth)?;
    state.remove(address)?;
    let (occupied, prune_error) = prune(state)?;
    if occupied.is_empty() {
        teardown_shared(state)?;
    } else {
        // The released run's published ports, if it had any, leave the table.
        refresh_nat(state)?;
    }
    prune_error.map_or(Ok(()), Err)
}

/// Renders the nft table again from the recorded allocations (the live ones, after a
/// prune): the DNAT rules of every published port, and `route_localnet` on the bridge while
/// there are any. Nothing to do while the shared setup is not in place (it installs the table
/// itself) or when neither the table nor the records have ports.
fn refresh_nat(state: &Locked) -> Result<(), NetworkError> {
    let Some(active) = state.active_subnet()? else {
        return Ok(());
    };
    if !bridge::link_exists(BRIDGE) {
        return Ok(());
    }
    let subnet = Subnet::from_setting(Some(&active))?;
    let published = published_of(state)?;
    let any = published.iter().any(|(_, p)| !p.is_empty());
    if !any && !state.has_published()? {
        return Ok(());
    }
    nat::install(&subnet, BRIDGE, &published)?;
    bridge::set_route_localnet(any)?;
    state.set_has_published(any)
}

/// Every recorded allocation's address and published ports.
fn published_of(state: &Locked) -> Result<Vec<(Ipv4Addr, Vec<PortMapping>)>, NetworkError> {
    Ok(state
        .entries()?
        .into_iter()
        .filter_map(|e| e.allocation.map(|a| (e.address, a.ports)))
        .collect())
}

/// The MAC address of a run's interface on the bridge (a container's `eth0`, a VM's
/// virtio-net): locally administered, `02:69` then the four bytes of its address, as docker
/// derives its `02:42:…` ones. Unique on the bridge and stable per address.
pub fn mac_of(address: Ipv4Addr) -> [u8; 6] {
    let a = address.octets();
    [0x02, 0x69, a[0], a[1], a[2], a[3]]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// A live run's place on the bridge, as [`lookup`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunNetwork {
    /// The run's address.
    pub address: Ipv4Addr,
    /// The subnet's prefix length and the bridge's address (the run's default gateway); none
    /// if the subnet record cannot be read (the bridge is being taken down).
    pub prefix: Option<u8>,
    /// See `prefix`.
    pub gateway: Option<Ipv4Addr>,
    /// The MAC address of its interface ([`mac_of`]).
    pub mac: [u8; 6],
    /// The host side of its link: a container's veth, a VM's tap.
    pub link: String,
    /// Its published ports, with the host ports actually used.
    pub ports: Vec<PortMapping>,
}

/// The place on the bridge of run `id`, while its isol lives (for `isol ps` and `isol
/// inspect`); read without the lock (records are replaced atomically).
pub fn lookup(state_root: &Path, id: &str) -> Option<RunNetwork> {
    if let Some(pod) = pod::lookup(state_root, id) {
        return Some(pod);
    }
    let dir = Locked::dir_of(state_root);
    let (address, allocation) = std::fs::read_dir(dir.join("addr")).ok()?.find_map(|item| {
        let item = item.ok()?;
        let address: Ipv4Addr = item.file_name().to_str()?.parse().ok()?;
        let allocation: Allocation =
            serde_json::from_slice(&std::fs::read(item.path()).ok()?).ok()?;
        (allocation.id == id && allocation.owner_alive()).then_some((address, allocation))
    })?;
    let subnet = std::fs::read_to_string(dir.join("subnet"))
        .ok()
        .and_then(|s| Subnet::parse(s.trim()).ok());
    Some(RunNetwork {
        address,
        prefix: subnet.map(|s| s.prefix()),
        gateway: subnet.map(|s| s.gateway()),
        mac: mac_of(address),
        link: allocation.veth,
        ports: allocation.ports,
    })
}

/// Creates the bridge, the nft table and turns forwarding on, replacing any leftovers.
fn setup_shared(state: &Locked, subnet: &Subnet) -> Result<(), NetworkError> {
    // A bridge left behind (crashed teardown, or another subnet) is rebuilt from scratch.
    bridge::delete_link(BRIDGE)?;
    bridge::check_no_overlap(subnet)?;
    // The markers go first: whatever fails after this point, teardown/sweep know what to undo.
    state.set_active_subnet(&subnet.to_string())?;
    if state.saved_forward()?.is_none() {
        state.save_forward(&bridge::forwarding()?)?;
    }
    bridge::create(subnet)?;
    nat::install(subnet, BRIDGE, &[])?;
    state.set_has_published(false)?;
    // Forwarding last, once the NAT rules are in place.
    bridge::set_forwarding("1")
}

/// Undoes `setup_shared`. Every step is attempted; the markers are removed only when all
/// succeeded, so a failed teardown is retried by the next release or sweep.
fn teardown_shared(state: &Locked) -> Result<(), NetworkError> {
    let mut first_error: Option<NetworkError> = None;
    let mut keep = |result: Result<(), NetworkError>| {
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    };
    match state.saved_forward() {
        Ok(Some(value)) => {
            keep(bridge::set_forwarding(&value).and_then(|()| state.clear_saved_forward()))
        }
        Ok(None) => {}
        Err(error) => keep(Err(error)),
    }
    keep(nat::remove());
    keep(bridge::delete_link(BRIDGE));
    match first_error {
        None => state
            .set_has_published(false)
            .and_then(|()| state.clear_active_subnet()),
        Some(error) => Err(error),
    }
}

/// [`NetworkError::State`]'s message: a full filesystem is named as such.
fn state_message(path: &std::path::Path, error: &io::Error) -> String {
    if crate::error::is_disk_full(error) {
        crate::error::state_message(&format!("write {}", path.display()), error)
    } else {
        format!(
            "Cannot use network state at {}: {error}; check that the state directory is on a writable local filesystem",
            path.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_and_host_need_nothing() {
        let root = tempfile::tempdir().unwrap();
        let publish = PortMapping::parse("8080:80").unwrap();
        for mode in [NetworkMode::None, NetworkMode::Host] {
            assert!(attach(mode, "abc", 1, root.path(), &[]).unwrap().is_none());
            let error = attach(mode, "abc", 1, root.path(), &publish).unwrap_err();
            assert!(matches!(error, NetworkError::PublishNeedsBridge), "{error}");
        }
        assert!(!root.path().join("net").exists());
    }

    #[test]
    fn sweep_without_state_does_nothing() {
        let root = tempfile::tempdir().unwrap();
        sweep(root.path());
        assert!(!root.path().join("net").exists());
    }

    #[test]
    fn bad_arguments_fail_before_touching_the_host() {
        let root = tempfile::tempdir().unwrap();
        let subnet = Subnet::parse("10.88.0.0/24").unwrap();
        let error = attach_bridge(&subnet, "", 1, root.path(), &[]).unwrap_err();
        assert!(matches!(error, NetworkError::InvalidId { .. }), "{error}");
        let me = std::process::id() as i32;
        let error = attach_bridge(&subnet, "abc", me, root.path(), &[]).unwrap_err();
        assert!(matches!(error, NetworkError::SharedNetns { .. }), "{error}");
        let error = attach_bridge(&subnet, "abc", i32::MAX, root.path(), &[]).unwrap_err();
        assert!(matches!(error, NetworkError::NoNetns { .. }), "{error}");
        assert!(!root.path().join("net").exists());
    }

    #[test]
    fn messages_are_one_capitalised_line() {
        let errors = [
            NetworkError::NotRoot,
            NetworkError::Exhausted {
                subnet: "10.88.0.0/30".into(),
            },
            NetworkError::SubnetInUse {
                requested: "10.89.0.0/24".into(),
                active: "10.88.0.0/24".into(),
            },
            NetworkError::Loopback {
                error: io::Error::from_raw_os_error(libc::EPERM),
            },
        ];
        for error in errors {
            let text = error.to_string();
            assert!(text.starts_with(|c: char| c.is_ascii_uppercase()), "{text}");
            assert!(!text.contains('\n'), "{text}");
        }
    }
}
