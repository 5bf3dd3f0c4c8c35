//! Errors of a container run. Messages are one line, say what went wrong and what to do.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Run state on the host could not be created or removed.
    #[error("{}", state_message(what, source))]
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

/// Why the child's setup failed, between clone and exec. The child writes the message on the
/// report pipe (`E message`, see `process`), where the parent turns it into
/// [`ContainerError::Setup`]: these are the messages users see.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    /// Entering the container's cgroup (cgroup v1: the child moves itself).
    #[error("Cannot enter the container's cgroup: {0}")]
    Cgroup(#[source] nix::Error),
    /// A namespace of the container: its hostname, its cgroup namespace, its new session.
    #[error("{what}: {source}")]
    Namespace {
        what: &'static str,
        source: nix::Error,
    },
    /// The loopback in the container's network namespace.
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    /// Assembling the rootfs: a mount, or a file or directory it needs. `what` opens the message.
    #[error("{what}: {source}")]
    Rootfs { what: String, source: Cause },
    /// The overlay of the image's layers could not be mounted.
    #[error(
        "Cannot mount the overlay rootfs at {}: {source}; check that the kernel has overlayfs (`modprobe overlay`)",
        .at.display()
    )]
    Overlay {
        at: std::path::PathBuf,
        source: nix::Error,
    },
    #[error("The image has no layers; re-import it")]
    NoLayers,
    #[error("The image has too many layers ({0}) for one overlay mount; flatten it")]
    TooManyLayers(usize),
    #[error("the run's upper dir has no parent")]
    UpperWithoutParent,
    /// The container's terminal (`-t`) or stdin. `what` opens the message.
    #[error("{what}: {source}")]
    Terminal { what: String, source: Cause },
    #[error("the pty slave is closed")]
    PtyClosed,
    /// The working directory, and the descriptors the init inherits. `what` opens the message.
    #[error("{what}: {source}")]
    Process { what: String, source: Cause },
    /// The user the workload runs as.
    #[error(transparent)]
    User(#[from] crate::user::UserError),
    /// Capabilities, no_new_privs, seccomp, and the exec of the init.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// A createContainer hook failed (the message names it and says why).
    #[error("{0}")]
    Hook(String),
}

/// What failed underneath a setup step: a system call, or a file operation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Cause {
    #[error(transparent)]
    Sys(#[from] nix::Error),
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl SetupError {
    pub(crate) fn rootfs(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        SetupError::Rootfs {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn terminal(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        SetupError::Terminal {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn process(what: impl Into<String>, source: impl Into<Cause>) -> Self {
        SetupError::Process {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Whether `e` says the filesystem (or the user's quota on it) is full.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// [`ContainerError::State`]'s message: a full filesystem (ENOSPC, EDQUOT) is named as such.
pub(crate) fn state_message(what: &str, source: &io::Error) -> String {
    if is_disk_full(source) {
        format!(
            "The filesystem of isol's run state (in the image store) is full: cannot {what}: {source}; free space on it, or point ISOL_HOME at a larger one"
        )
    } else {
        format!("Cannot {what}: {source}; check that the isol state directory is writable")
    }
}

impl ContainerError {
    pub(crate) fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        ContainerError::Sys {
            what: what.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    /// The child's errors read as the messages users have always seen: the cause after a colon,
    /// in the words of the system call's or the file operation's own error.
    #[test]
    fn setup_errors_keep_their_messages() {
        let e = Errno::EPERM;
        let io = || io::Error::from_raw_os_error(libc::ENOENT);
        let cases = [
            (
                SetupError::rootfs("Cannot mount /proc in the container", e),
                format!("Cannot mount /proc in the container: {e}"),
            ),
            (
                SetupError::rootfs("Cannot create /dev/pts", io()),
                format!("Cannot create /dev/pts: {}", io()),
            ),
            (
                SetupError::Overlay {
                    at: "/r/merged".into(),
                    source: e,
                },
                format!(
                    "Cannot mount the overlay rootfs at /r/merged: {e}; check that the kernel has overlayfs (`modprobe overlay`)"
                ),
            ),
            (
                SetupError::TooManyLayers(300),
                "The image has too many layers (300) for one overlay mount; flatten it".into(),
            ),
            (
                SetupError::Cgroup(e),
                format!("Cannot enter the container's cgroup: {e}"),
            ),
            (
                SetupError::Namespace {
                    what: "setsid failed",
                    source: e,
                },
                format!("setsid failed: {e}"),
            ),
            (
                crate::user::UserError::OutOfRange {
                    spec: "4294967295".into(),
                }
                .into(),
                "Invalid user \"4294967295\": uids and gids must be in range 0-2147483647; give ids in that range".into(),
            ),
            (
                crate::user::UserError::Uid {
                    uid: 1000,
                    source: e,
                }
                .into(),
                format!("Cannot switch to uid 1000: {e}"),
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }
}
