//! A hook for whoever wants to know how each step went (metrics, say), without the orchestrator
//! knowing who listens.

use std::time::Duration;

use aicd_agent_api::Usage;

use crate::jobs::JobState;
use crate::{JobId, OrgId};

/// How one attempt at a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepOutcome {
    /// The step did its work and the job moved on (a review that requests changes counts: the
    /// critic did its work).
    Succeeded,
    /// A transient failure, or the worker let go (shutdown, lost lease): the step runs again later.
    Retrying,
    /// A permanent failure: the job fails.
    Failed,
    /// The policy engine blocked the change (whether the coder is sent back or the job fails).
    Blocked,
    /// A person cancelled the job while the step ran.
    Cancelled,
}

impl StepOutcome {
    /// Every outcome.
    pub const ALL: [StepOutcome; 5] = [
        StepOutcome::Succeeded,
        StepOutcome::Retrying,
        StepOutcome::Failed,
        StepOutcome::Blocked,
        StepOutcome::Cancelled,
    ];

    /// `succeeded`, `retrying`, `failed`, `blocked` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Succeeded => "succeeded",
            StepOutcome::Retrying => "retrying",
            StepOutcome::Failed => "failed",
            StepOutcome::Blocked => "blocked",
            StepOutcome::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for StepOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One ended attempt at a step, as [`StepObserver::step_finished`] hears of it.
///
/// `step` is [`JobState::Planning`], [`JobState::Coding`] or [`JobState::Reviewing`] for the agent
/// steps, and [`JobState::PrOpen`] for publishing (branch, commit and pull request: the step that
/// leads to PR_OPEN). `usage` is what the attempt's agent call spent, if it returned; `None` for
/// publishing and for attempts that ended before the agent answered.
#[derive(Clone, Copy, Debug)]
pub struct StepReport<'a> {
    /// The organization the job belongs to.
    pub org: OrgId,
    /// The job.
    pub job: JobId,
    /// The step attempted.
    pub step: JobState,
    /// How the attempt ended.
    pub outcome: StepOutcome,
    /// How long the attempt took.
    pub elapsed: Duration,
    /// What the attempt's agent call spent, if it returned.
    pub usage: Option<&'a Usage>,
}

/// Told about every attempt at an agent step and at publishing, once the attempt has ended and
/// its outcome has been written.
///
/// Called on the worker's task: implementations must be quick and must not block.
pub trait StepObserver: Send + Sync {
    /// One attempt at a step ended, as `report` says.
    fn step_finished(&self, report: &StepReport<'_>);

    /// A call of `step` (the agent's, or for [`JobState::PrOpen`] one of the forge's) was
    /// abandoned after its `limit` ([`super::StepTimeouts`]); the attempt then ends as
    /// [`StepOutcome::Retrying`]. Does nothing unless implemented.
    fn step_timed_out(&self, step: JobState, limit: Duration) {
        let _ = (step, limit);
    }
}
