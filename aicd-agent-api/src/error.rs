//! Why an agent call failed, and what the orchestrator should do about it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::RepoViewError;

/// The result type of this crate, with [`AgentError`] as the default error.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// An agent call's failure, classified by what the orchestrator should do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AgentError {
    /// A failure that may go away: retry the call with backoff, waiting at
    /// least `retry_after` when it is given.
    #[error("transient agent failure: {message}")]
    Transient {
        /// What went wrong, readable by a person.
        message: String,
        /// How long the provider asked to wait before retrying, if it said.
        #[serde(default)]
        retry_after: Option<Duration>,
    },
    /// A failure retrying cannot fix: fail the job, showing `message` to
    /// the person who opened the issue.
    #[error("{message}")]
    Permanent {
        /// Why the job cannot go on, readable by a person.
        message: String,
    },
    /// The job's budget does not allow the call: stop the job.
    #[error("budget exhausted: {message}")]
    BudgetExhausted {
        /// Which limit was reached, readable by a person.
        message: String,
    },
    /// The agent stopped without a real attempt because what it depends on is known to be down
    /// (its provider's circuit breaker is open): run the step again after `retry_after`, without
    /// counting this as one of the step's attempts.
    #[error("agent paused: {message}")]
    Paused {
        /// Why, readable by a person.
        message: String,
        /// When to try again.
        retry_after: Duration,
    },
}

impl AgentError {
    /// A transient error with no retry hint.
    pub fn transient(message: impl Into<String>) -> Self {
        Self::Transient { message: message.into(), retry_after: None }
    }

    /// A transient error asking the caller to wait `retry_after` first.
    pub fn transient_after(message: impl Into<String>, retry_after: Duration) -> Self {
        Self::Transient { message: message.into(), retry_after: Some(retry_after) }
    }

    /// A permanent error with a reason a person can read.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent { message: message.into() }
    }

    /// A paused error: try again after `retry_after`, not counting an attempt.
    pub fn paused(message: impl Into<String>, retry_after: Duration) -> Self {
        Self::Paused { message: message.into(), retry_after }
    }

    /// A budget-exhausted error.
    pub fn budget_exhausted(message: impl Into<String>) -> Self {
        Self::BudgetExhausted { message: message.into() }
    }

    /// True for [`AgentError::Transient`] and [`AgentError::Paused`]: the call may be retried.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient { .. } | Self::Paused { .. })
    }

    /// True for [`AgentError::Permanent`] only (not for
    /// [`AgentError::BudgetExhausted`], which is also final).
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Permanent { .. })
    }

    /// True for [`AgentError::BudgetExhausted`].
    pub fn is_budget_exhausted(&self) -> bool {
        matches!(self, Self::BudgetExhausted { .. })
    }

    /// The message, without the classification prefix `Display` adds.
    pub fn message(&self) -> &str {
        match self {
            Self::Transient { message, .. }
            | Self::Permanent { message }
            | Self::BudgetExhausted { message }
            | Self::Paused { message, .. } => message,
        }
    }

    /// The retry hint of a transient or paused error, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Transient { retry_after, .. } => *retry_after,
            Self::Paused { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }
}

impl From<RepoViewError> for AgentError {
    /// [`RepoViewError::Unavailable`] becomes transient; every other repo
    /// view error is permanent, with the error's text as message.
    fn from(err: RepoViewError) -> Self {
        if err.is_transient() { Self::transient(err.to_string()) } else { Self::permanent(err.to_string()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let t = AgentError::transient_after("rate limited", Duration::from_secs(3));
        assert!(t.is_transient() && !t.is_permanent());
        assert_eq!(t.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(t.message(), "rate limited");
        let p = AgentError::permanent("no");
        assert!(p.is_permanent() && !p.is_transient());
        assert_eq!(p.to_string(), "no");
        let b = AgentError::budget_exhausted("tokens");
        assert!(b.is_budget_exhausted() && !b.is_permanent() && !b.is_transient());
        assert_eq!(b.retry_after(), None);
        let paused = AgentError::paused("circuit open", Duration::from_secs(30));
        assert!(paused.is_transient() && !paused.is_permanent());
        assert_eq!((paused.retry_after(), paused.message()), (Some(Duration::from_secs(30)), "circuit open"));
    }

    #[test]
    fn from_repo_view_error() {
        let e: AgentError = RepoViewError::Unavailable("git timeout".into()).into();
        assert!(e.is_transient());
        assert!(e.message().contains("git timeout"));
        let e: AgentError = RepoViewError::TooManyFiles { count: 2, limit: 1 }.into();
        assert!(e.is_permanent());
        let e: AgentError = RepoViewError::InvalidPath { path: "/x".into(), reason: "absolute".into() }.into();
        assert!(e.is_permanent());
        assert!(e.message().contains("/x"));
    }

    #[test]
    fn json_round_trip() {
        let e = AgentError::transient_after("x", Duration::from_millis(1500));
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"kind\":\"transient\""));
        assert_eq!(serde_json::from_str::<AgentError>(&json).unwrap(), e);
    }
}
