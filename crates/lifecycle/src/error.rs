//! What can go wrong when a run is asked for or stopped, typed so that each surface
//! decides how to say it (the server maps these to HTTP statuses in one place).

use wharf_store::StoreError;

/// One thing wrong with a run that was asked for, and the field at fault
/// (`parameters`, `executor`, `source.repo`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The run cannot start as asked (unknown or missing parameters, an executor this
    /// server lacks, host tasks where they are refused).
    #[error("{message}: {}", problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect::<Vec<_>>().join("; "))]
    Invalid { message: String, problems: Vec<Problem> },
    /// The request clashes with the state of the pipeline or run (inactive pipeline,
    /// finished run, nothing to retry).
    #[error("{0}")]
    Conflict(String),
    /// A stored pipeline version no longer validates (a newer Wharf is stricter).
    #[error("stored version {version} of pipeline {pipeline} no longer validates: {why}")]
    Unreadable { pipeline: i64, version: i64, why: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RunError {
    /// A run that cannot start, because of one field.
    pub(crate) fn cannot_start(path: &str, message: impl Into<String>) -> Self {
        RunError::Invalid {
            message: "the run cannot start".into(),
            problems: vec![Problem { path: path.to_owned(), message: message.into() }],
        }
    }
}

pub type Result<T, E = RunError> = std::result::Result<T, E>;
