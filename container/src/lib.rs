//! isol's container runtime.
//!
//! A run is: the parent ([`process::run`]) clones a child into new namespaces (`namespaces`,
//! which says which and why), places it in a cgroup, wires its network, and lets it go; the child
//! (`child`) assembles the rootfs (`rootfs`), drops privileges (`security`) and executes the
//! container's init ([`init`]) from a sealed copy of isol, which starts the workload. `state`
//! makes sure nothing a run created survives it, even when isol itself was killed.
//!
//! [`process::create`] shares every step of a run up to the go and stops there: the init waits
//! at a start gate before it starts the workload, and the container outlives its creator —
//! runc's create/start split, for the OCI runtime (`isol-oci`).

pub mod cgroups;
mod child;
pub mod config;
pub mod error;
pub mod exec;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod hooks;
pub mod init;
pub mod jail;
mod namespaces;
pub mod network;
pub mod process;
mod pty;
mod rootfs;
pub mod security;
mod signals;
pub mod state;
mod sys;
mod user;

pub use child::{INIT_ARGV0, INIT_MARKER};
pub use config::{
    ContainerConfig, DeviceNode, DeviceNodeKind, HostNamespaces, IdMapping, Limits, Mount,
    NetworkMode, Privileges, Rlimit, Rootfs, SharedNamespace, UserNamespace, Volume,
};
pub use error::ContainerError;
pub use namespaces::{check_namespace_file, hostname_in, namespace_type};
pub use process::{Created, RunResult, create, run, run_with_init};
/// The paths of /proc and /sys every container gets masked, and read-only (as runc's defaults).
pub use rootfs::{MASKED_PATHS, READONLY_PATHS, vm_etc_files};
pub use user::{MAX_ID, UserError, check_spec as check_user_spec};
