//! What can go wrong in the OCI runtime. Each message says what is wrong and, where it helps,
//! what to do: containerd shows it to its user as it is.

/// An OCI runtime failure.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The container id is not one isol accepts.
    #[error(
        "invalid container id {0:?}: use 1 to 64 letters, digits, '_', '-' or '.', not starting with '.'"
    )]
    InvalidId(String),
    /// No container of this id under the state root.
    #[error("container {0} does not exist")]
    NotFound(String),
    #[error("container {0} already exists")]
    Exists(String),
    /// The command does not apply to the container in its present status.
    #[error("container {id} is {status}: {what}")]
    Status {
        id: String,
        status: String,
        what: String,
    },
    /// The bundle or its config.json is unusable.
    #[error("{what}: {detail}")]
    Bundle { what: String, detail: String },
    /// The config asks for something isol cannot honour (yet).
    #[error("config.json: {0}")]
    Unsupported(String),
    /// A bad argument on the command line.
    #[error("{0}")]
    Usage(String),
    /// State under the state root could not be read or written.
    #[error("cannot {what}: {source}")]
    State {
        what: String,
        source: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
    #[error(transparent)]
    Container(#[from] isol_container::ContainerError),
    /// The kvm backend failed (its message says what to do).
    #[error("{0}")]
    Vm(String),
    /// A VM's workload did not start (its exec failed in the guest, or its setup did): the
    /// VM has ended, or is ending, with the guest's status.
    #[error("container {id} did not start: {why}")]
    NotStarted { id: String, why: String },
}

impl OciError {
    pub(crate) fn state(what: impl Into<String>, source: std::io::Error) -> Self {
        OciError::State {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        OciError::Sys {
            what: what.into(),
            source,
        }
    }
}
