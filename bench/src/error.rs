//! What can go wrong in a bench, as the CLI reports it: one line, the step first, then its
//! causes.

/// Everything that can stop a bench (a subject failing is not an error: the report says so).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A step failed: `what` names it, `source` says why.
    #[error("{what}")]
    Step {
        /// The step, as the user reads it: `Cannot create the benchmark's mount namespace`.
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The image store could not be opened.
    #[error(transparent)]
    Store(#[from] isol_image::ImageError),
    /// A failure its message says all about.
    #[error("{0}")]
    Failed(String),
}

/// Names the step an error comes from ([`BenchError::Step`]).
pub(crate) trait Step<T> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, BenchError>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Step<T> for Result<T, E> {
    fn step(self, what: impl FnOnce() -> String) -> Result<T, BenchError> {
        self.map_err(|source| BenchError::Step {
            what: what(),
            source: Box::new(source),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_reads_as_its_name_then_its_cause() {
        let e = Err::<(), _>(std::io::Error::from_raw_os_error(libc::EACCES))
            .step(|| "Cannot create /x".into())
            .unwrap_err();
        assert_eq!(e.to_string(), "Cannot create /x");
        let cause = std::error::Error::source(&e).map(ToString::to_string);
        assert_eq!(cause.as_deref(), Some("Permission denied (os error 13)"));
        assert_eq!(BenchError::Failed("x y".into()).to_string(), "x y");
    }
}
