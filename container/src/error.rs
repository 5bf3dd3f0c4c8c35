//! Errors of a container run. Messages are one line, say what went wrong and what to do.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Run state on the host could not be created or removed.
    #[error("Cannot {what}: {source}; check that the isol state directory is writable")]
    State { what: String, source: io::Error },
    /// A system call in the parent failed.
    #[error("{what} failed: {source}")]
    Sys { what: String, source: nix::Error },
    /// The container's setup inside the new namespaces failed (reported by the child).
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// The configuration cannot be honoured on this host.
    #[error("{0}")]
    Unsupported(String),
}

impl ContainerError {
    pub(crate) fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        ContainerError::Sys {
            what: what.into(),
            source,
        }
    }
}
