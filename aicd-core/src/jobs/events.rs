//! A job's timeline: an append-only list of what happened, who did it, and when.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::JobState;
use crate::{JobId, OrgId};

/// What kind of thing happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The job was created.
    Created,
    /// The job moved from one state to another.
    StateChanged,
    /// A step finished; the message summarizes its output.
    StepSucceeded,
    /// A step failed (transiently or for good); the message says why.
    StepFailed,
    /// The policy engine blocked a changeset; `data` lists the violations.
    PolicyBlocked,
    /// A person asked to cancel the job while a worker held it.
    CancelRequested,
    /// What the agent is doing during a step (a file read, a search, an edit rejected), as it
    /// does it.
    Activity,
    /// Anything else worth showing.
    Note,
}

impl EventKind {
    /// The stable name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::StateChanged => "state_changed",
            EventKind::StepSucceeded => "step_succeeded",
            EventKind::StepFailed => "step_failed",
            EventKind::PolicyBlocked => "policy_blocked",
            EventKind::CancelRequested => "cancel_requested",
            EventKind::Activity => "activity",
            EventKind::Note => "note",
        }
    }

    /// Parses a stored name; unknown names (from a newer version) read as [`EventKind::Note`].
    pub fn parse(s: &str) -> Self {
        [
            EventKind::Created,
            EventKind::StateChanged,
            EventKind::StepSucceeded,
            EventKind::StepFailed,
            EventKind::PolicyBlocked,
            EventKind::CancelRequested,
            EventKind::Activity,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .unwrap_or(EventKind::Note)
    }
}

/// One entry of a job's timeline. Ids increase in the order events were appended, so a stream
/// can resume after the last id it saw.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobEvent {
    /// Position in the timeline (increasing).
    pub id: i64,
    /// The job.
    pub job_id: JobId,
    /// The job's organization.
    pub org_id: OrgId,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// Who did it (`user:<id>`, `api_key:<id>`, `worker:<id>`, `system`).
    pub actor: String,
    /// What kind of thing happened.
    pub kind: EventKind,
    /// The state before, for state changes.
    pub from_state: Option<JobState>,
    /// The state after, for state changes.
    pub to_state: Option<JobState>,
    /// A sentence a person can read.
    pub message: String,
    /// Structured details (violations, usage, step output summary).
    pub data: serde_json::Value,
}

/// An event to append.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Who did it.
    pub actor: String,
    /// What kind of thing happened.
    pub kind: EventKind,
    /// The state before, for state changes.
    pub from_state: Option<JobState>,
    /// The state after, for state changes.
    pub to_state: Option<JobState>,
    /// A sentence a person can read.
    pub message: String,
    /// Structured details.
    pub data: serde_json::Value,
}

impl NewEvent {
    /// An event of `kind` with a message and no state change.
    pub fn new(actor: impl Into<String>, kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            actor: actor.into(),
            kind,
            from_state: None,
            to_state: None,
            message: message.into(),
            data: serde_json::Value::Object(Default::default()),
        }
    }

    /// The note on a retry's timeline naming the job it retries (`data.retry_of`).
    pub fn retry_of(actor: impl Into<String>, retried: crate::JobId) -> Self {
        Self::new(actor, EventKind::Note, format!("retry of job {retried}"))
            .with_data(serde_json::json!({ "retry_of": retried }))
    }

    /// A state change from `from` to `to`.
    pub fn state_changed(actor: impl Into<String>, from: JobState, to: JobState) -> Self {
        Self {
            from_state: Some(from),
            to_state: Some(to),
            ..Self::new(actor, EventKind::StateChanged, format!("{from} -> {to}"))
        }
    }

    /// Attaches structured details.
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}
