//! Jobs: one issue being turned into a pull request, its timeline of events, and the usage it
//! spent.

mod events;
mod state;
mod update;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use events::{EventKind, JobEvent, NewEvent};
pub use state::{JobState, TRANSITIONS};
pub use update::{Fence, JobUpdate};

use crate::{Error, JobId, OrgId, RepoId, Result};

/// The issue a job works on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueRef {
    /// The issue number on the forge, if the job came from a real issue.
    pub number: Option<u64>,
    /// The title (1 to 500 characters).
    pub title: String,
    /// The body (at most 256 KiB).
    pub body: String,
    /// The issue's web address.
    pub url: Option<String>,
    /// The login of the issue's author.
    pub author: Option<String>,
}

const MAX_TITLE_CHARS: usize = 500;
const MAX_BODY_BYTES: usize = 256 * 1024;

impl IssueRef {
    /// Checks the issue's fields; the title is trimmed.
    pub fn validate(mut self) -> Result<Self> {
        self.title = self.title.trim().to_owned();
        if self.title.is_empty() {
            return Err(Error::invalid("issue.title must not be blank"));
        }
        if self.title.chars().count() > MAX_TITLE_CHARS {
            return Err(Error::invalid(format!("issue.title must be at most {MAX_TITLE_CHARS} characters")));
        }
        if self.title.contains('\0') || self.body.contains('\0') {
            return Err(Error::invalid("issue.title and issue.body must not contain NUL characters"));
        }
        if self.body.len() > MAX_BODY_BYTES {
            return Err(Error::invalid(format!("issue.body must be at most {MAX_BODY_BYTES} bytes")));
        }
        if self.number.is_some_and(|n| n == 0 || n > i64::MAX as u64) {
            return Err(Error::invalid("issue.number must be a positive issue number"));
        }
        Ok(self)
    }
}

/// What started a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The trigger label was put on the issue.
    Label,
    /// A `/aicd run` comment.
    Comment,
    /// The issue was assigned to the app's bot user.
    Assignment,
    /// A call to the API.
    Api,
}

impl Trigger {
    /// The stable name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Label => "label",
            Trigger::Comment => "comment",
            Trigger::Assignment => "assignment",
            Trigger::Api => "api",
        }
    }
}

impl std::str::FromStr for Trigger {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [Trigger::Label, Trigger::Comment, Trigger::Assignment, Trigger::Api]
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown trigger `{s}`")))
    }
}

/// How many times each step has been attempted (retries of transient failures included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepAttempts {
    /// Attempts at planning.
    pub planning: u32,
    /// Attempts at coding (across review rounds).
    pub coding: u32,
    /// Attempts at reviewing and publishing.
    pub reviewing: u32,
    /// Changesets the policy engine blocked.
    #[serde(default)]
    pub policy_blocks: u32,
}

/// A job's budget, shared by planner, coder and critic, and what it has spent of it: the agent
/// contract's own type, so the orchestrator hands it to the agent as it is.
pub use aicd_agent_api::Budget;

/// Default token budget of a job.
pub const DEFAULT_MAX_TOKENS: u64 = 2_000_000;
/// Default cost budget of a job, in micro-units of currency (20 units).
pub const DEFAULT_MAX_COST_MICROS: u64 = 20_000_000;

/// The worker holding a job, and until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker's identity.
    pub owner: String,
    /// When the lease lapses unless extended by a heartbeat.
    pub expires_at: DateTime<Utc>,
}

/// A pull request opened for a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestRef {
    /// Its number on the forge.
    pub number: u64,
    /// Its web address.
    pub url: String,
    /// The branch it proposes.
    pub branch: String,
}

/// Each finished step's output, saved before the transition that follows it, so a resumed job
/// continues where it was and never pays twice for a finished step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoints {
    /// The planner's plan.
    pub plan: Option<serde_json::Value>,
    /// The coder's changeset.
    pub changeset: Option<serde_json::Value>,
    /// The critic's review of the current changeset (cleared when a new changeset goes to review).
    pub review: Option<serde_json::Value>,
    /// Feedback for the coder's next round (from the critic or the policy engine).
    pub feedback: Option<serde_json::Value>,
    /// The pull request.
    pub pull_request: Option<PullRequestRef>,
    /// The progress comment on the issue, once posted.
    pub progress_comment: Option<u64>,
}

/// A job: one issue being turned into a reviewed pull request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Its identifier (time-ordered).
    pub id: JobId,
    /// The organization it belongs to.
    pub org_id: OrgId,
    /// The repository it works on.
    pub repo_id: RepoId,
    /// The issue it works on.
    pub issue: IssueRef,
    /// What started it.
    pub trigger: Trigger,
    /// Where it is.
    pub state: JobState,
    /// Attempts per step.
    pub attempts: StepAttempts,
    /// How many times the critic has sent the coder back.
    pub review_round: u32,
    /// Budget and spend.
    pub budget: Budget,
    /// The worker holding it, if any.
    pub lease: Option<Lease>,
    /// Incremented at every claim; a write carrying an older epoch is refused.
    pub epoch: i64,
    /// Not to be claimed before this time (backoff after a transient failure).
    pub run_after: DateTime<Utc>,
    /// Whether a person asked to cancel it while a worker held it.
    pub cancel_requested: bool,
    /// Each finished step's output.
    pub checkpoints: Checkpoints,
    /// Why it failed, in words a person can act on.
    pub failure_reason: Option<String>,
    /// Who started it (`user:<id>`, `api_key:<id>`, `github:<login>`).
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it reached a terminal state.
    pub finished_at: Option<DateTime<Utc>>,
}

/// What is needed to create a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewJob {
    /// The repository to work on (must belong to the job's organization).
    pub repo_id: RepoId,
    /// The issue to work on.
    pub issue: IssueRef,
    /// What started it.
    pub trigger: Trigger,
    /// Token budget; defaults to [`DEFAULT_MAX_TOKENS`].
    pub max_tokens: Option<u64>,
    /// Cost budget; defaults to [`DEFAULT_MAX_COST_MICROS`].
    pub max_cost_micros: Option<u64>,
}

/// Which of an organization's jobs to list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this repository.
    pub repo_id: Option<RepoId>,
    /// Only jobs older than this one (the cursor of the previous page).
    pub before: Option<JobId>,
    /// At most this many (1 to 100; default 50).
    pub limit: Option<u32>,
}

impl JobFilter {
    /// Largest page.
    pub const MAX_LIMIT: u32 = 100;
    /// Page size when none is asked for.
    pub const DEFAULT_LIMIT: u32 = 50;

    /// The page size, checked.
    pub fn limit(&self) -> Result<u32> {
        match self.limit {
            None => Ok(Self::DEFAULT_LIMIT),
            Some(n @ 1..=Self::MAX_LIMIT) => Ok(n),
            Some(_) => Err(Error::invalid(format!("limit must be between 1 and {}", Self::MAX_LIMIT))),
        }
    }
}

/// One page of a listing, newest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next_cursor: Option<JobId>,
}

/// One agent call's usage, recorded against an organization and a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Its identifier.
    pub id: crate::UsageId,
    /// The organization billed.
    pub org_id: OrgId,
    /// The job it was spent on.
    pub job_id: Option<JobId>,
    /// The repository of that job.
    pub repo_id: Option<RepoId>,
    /// The step (`planning`, `coding`, `reviewing`).
    pub step: String,
    /// The model that was called.
    pub model: String,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in micro-units of currency.
    pub cost_micros: u64,
    /// When it was spent.
    pub at: DateTime<Utc>,
}

/// Usage added up over a period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in micro-units of currency.
    pub cost_micros: u64,
    /// Number of agent calls.
    pub calls: u64,
}
