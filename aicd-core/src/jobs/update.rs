//! A worker's fenced write to a job it holds.

use chrono::{DateTime, Utc};

use super::{JobState, NewEvent, PullRequestRef, StepAttempts};

/// Proof that a worker holds a job: the write succeeds only if the job is still in `state`, at
/// `epoch`, leased to `worker`. A worker whose lease expired (and was reaped or re-claimed) can
/// therefore change nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// The worker's identity.
    pub worker: String,
    /// The epoch the claim returned.
    pub epoch: i64,
    /// The state the worker believes the job is in.
    pub state: JobState,
}

/// What a worker writes when a step ends (or at a checkpoint within one). Absent fields keep their
/// value. Checkpoints and the transition are written in one transaction, so a crash leaves either
/// both or neither.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobUpdate {
    /// Move to this state (checked against the transition table).
    pub state: Option<JobState>,
    /// New plan checkpoint.
    pub plan: Option<serde_json::Value>,
    /// New changeset checkpoint; `Some(None)` clears it.
    pub changeset: Option<Option<serde_json::Value>>,
    /// New review checkpoint; `Some(None)` clears it.
    pub review: Option<Option<serde_json::Value>>,
    /// New feedback for the coder; `Some(None)` clears it.
    pub feedback: Option<Option<serde_json::Value>>,
    /// The pull request.
    pub pull_request: Option<PullRequestRef>,
    /// The progress comment.
    pub progress_comment: Option<u64>,
    /// New attempt counters.
    pub attempts: Option<StepAttempts>,
    /// New review round.
    pub review_round: Option<u32>,
    /// Not to be claimed again before this time.
    pub run_after: Option<DateTime<Utc>>,
    /// Why the job failed.
    pub failure_reason: Option<String>,
    /// Give the lease up (the job becomes claimable again unless terminal).
    pub release: bool,
    /// Events to append in the same transaction, after the state change's own event (activity
    /// events, which tell what led to the result, come before it).
    pub events: Vec<NewEvent>,
    /// Usage to record against the job in the same transaction (its `job_id` is ignored: the
    /// usage is the job's), so a step's cost is recorded exactly once, with its result.
    pub usage: Vec<crate::store::NewUsage>,
}
