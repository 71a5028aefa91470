//! The one error type of the core, and its `Result` alias.

use crate::jobs::JobState;
use crate::tenancy::Permission;

/// Everything a core operation can fail with, in domain words.
///
/// Callers map these to their own surface (HTTP status, exception class) in one place. `NotFound`
/// is also what another tenant's resource looks like, so ids cannot be probed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The resource does not exist, or belongs to an organization the actor cannot see.
    #[error("{kind} not found")]
    NotFound {
        /// What was looked for ("job", "repository", ...).
        kind: &'static str,
    },
    /// The actor is a member of the organization but its role does not grant the permission.
    #[error("permission denied: {permission} requires a higher role")]
    Forbidden {
        /// The permission that was required.
        permission: Permission,
    },
    /// The credentials are missing, malformed, revoked or expired.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    /// The input is invalid; the message says which field and why.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The operation conflicts with the current state (a duplicate name, the last admin, ...).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The job state machine does not allow this transition.
    #[error("illegal transition from {from} to {to}")]
    IllegalTransition {
        /// The state the job is in.
        from: JobState,
        /// The state that was requested.
        to: JobState,
    },
    /// A compare-and-set on a job lost: its state or lease epoch changed underneath the caller
    /// (another worker owns it now, or it was cancelled).
    #[error("job {job_id} changed underneath this worker (lease lost or state moved on)")]
    LeaseLost {
        /// The job that could not be written.
        job_id: crate::JobId,
    },
    /// A dependency (the forge, Redis) failed in a way that may pass: retry with backoff.
    #[error("{service} unavailable: {message}")]
    Unavailable {
        /// Which dependency (`forge`, `redis`, ...).
        service: &'static str,
        /// What happened, for logs and the job's timeline.
        message: String,
        /// How long the dependency asked us to wait, if it said.
        retry_after: Option<std::time::Duration>,
    },
    /// A dependency refused for good (lost access, a missing repository): fail with this reason.
    #[error("{service} refused: {message}")]
    Rejected {
        /// Which dependency.
        service: &'static str,
        /// Why, in words a person can act on.
        message: String,
    },
    /// The organization may not start new work until it pays or its period renews: its free
    /// allowance or its spend cap is used up (`code` `quota_exceeded`), or a payment failed and
    /// its grace period is over (`payment_required`). The message says where to fix it.
    #[error("{message}")]
    PaymentRequired {
        /// `quota_exceeded` or `payment_required`.
        code: &'static str,
        /// What was reached, and where to fix it.
        message: String,
    },
    /// The database refused to start safely (for example, row-level security is not enforced).
    #[error("unsafe database configuration: {0}")]
    UnsafeDatabase(String),
    /// A database error that is not the caller's fault.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration error: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// Stored data could not be decoded (a corrupted row or an incompatible schema).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

impl Error {
    /// A stable, machine-readable name of the error's kind, for the bindings' error codes and
    /// exception classes: `not_found`, `forbidden`, `unauthenticated`, `invalid_input`,
    /// `conflict`, `lease_lost`, `unavailable`, `rejected`, `quota_exceeded` or
    /// `payment_required`, `unsafe_database`, or `internal` (database, migration and stored
    /// data errors, which are not the caller's to fix).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Forbidden { .. } => "forbidden",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::InvalidInput(_) => "invalid_input",
            Self::Conflict(_) | Self::IllegalTransition { .. } => "conflict",
            Self::LeaseLost { .. } => "lease_lost",
            Self::Unavailable { .. } => "unavailable",
            Self::Rejected { .. } => "rejected",
            Self::PaymentRequired { code, .. } => code,
            Self::UnsafeDatabase(_) => "unsafe_database",
            Self::Database(_) | Self::Migration(_) | Self::Corrupt(_) => "internal",
        }
    }

    pub(crate) fn not_found(kind: &'static str) -> Self {
        Self::NotFound { kind }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }
}

/// The result of a core operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
