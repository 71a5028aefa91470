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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IssueRef {
    /// The issue number on the forge, if the job came from a real issue.
    pub number: Option<u64>,
    /// The title (1 to 500 characters).
    pub title: String,
    /// The body (at most 256 KiB).
    pub body: String,
    /// The issue's web address: an `https://` URL of at most 2,048 characters.
    pub url: Option<String>,
    /// The login of the issue's author.
    pub author: Option<String>,
}

const MAX_TITLE_CHARS: usize = 500;
const MAX_BODY_BYTES: usize = 256 * 1024;
const MAX_URL_CHARS: usize = 2048;

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
        if let Some(url) = &self.url {
            // Shown to people and linked from pull requests: only a plain web address.
            let host = url.strip_prefix("https://").map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
            let plain = !url.chars().any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<' || c == '>');
            if host.is_none_or(|h| h.is_empty() || h.contains('@')) || !plain || url.chars().count() > MAX_URL_CHARS {
                return Err(Error::invalid(format!(
                    "issue.url must be an https:// address of at most {MAX_URL_CHARS} characters"
                )));
            }
        }
        Ok(self)
    }
}

/// What started a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lease {
    /// The worker's identity.
    pub owner: String,
    /// When the lease lapses unless extended by a heartbeat.
    pub expires_at: DateTime<Utc>,
}

/// A pull request opened for a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl Job {
    /// What a retry of this job creates (the same repository, issue, trigger and budget), if it
    /// failed or was cancelled; `None` otherwise.
    pub fn retry(&self) -> Option<NewJob> {
        matches!(self.state, JobState::Failed | JobState::Cancelled).then(|| NewJob {
            repo_id: self.repo_id,
            issue: self.issue.clone(),
            trigger: self.trigger,
            max_tokens: Some(self.budget.max_tokens),
            max_cost_micros: Some(self.budget.max_cost_micros),
        })
    }
}

/// What is needed to create a job.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// The issue of a [`CreateJob`], as the HTTP API and the bindings take it.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IssueBody {
    /// 1 to 500 characters.
    pub title: String,
    /// The issue text (at most 256 KiB).
    #[serde(default)]
    pub body: String,
    /// The issue's number on the forge, if any.
    pub number: Option<u64>,
    /// The issue's web address, if any.
    pub url: Option<String>,
}

/// A job to start, as the HTTP API and the bindings take it (unknown fields are refused).
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// The repository to work on.
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub repo_id: RepoId,
    /// The issue to turn into a pull request.
    pub issue: IssueBody,
    /// Token budget (default 2,000,000).
    pub max_tokens: Option<u64>,
    /// Cost budget in micro-units of currency (default 20,000,000).
    pub max_cost_micros: Option<u64>,
}

impl CreateJob {
    /// The job to create, started by `trigger` (the issue has no author: the caller is the
    /// job's actor).
    pub fn into_new_job(self, trigger: Trigger) -> NewJob {
        let issue = IssueRef {
            number: self.issue.number,
            title: self.issue.title,
            body: self.issue.body,
            url: self.issue.url,
            author: None,
        };
        NewJob {
            repo_id: self.repo_id,
            issue,
            trigger,
            max_tokens: self.max_tokens,
            max_cost_micros: self.max_cost_micros,
        }
    }
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `before` to get the next page; `None` on the last page.
    pub next_cursor: Option<JobId>,
}

/// One agent call's usage, recorded against an organization and a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// Usage and outcomes added up over a period (the totals, one repository's, or one day's share of
/// a [`UsageReport`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageSummary {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cost in micro-units of currency.
    pub cost_micros: u64,
    /// Number of agent calls.
    pub calls: u64,
    /// Number of jobs whose pull request was opened (the job moved to `pr_open`) in the period.
    pub pull_requests: u64,
}

impl UsageSummary {
    /// Adds `other` to this summary (saturating).
    pub fn add(&mut self, other: &UsageSummary) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_micros = self.cost_micros.saturating_add(other.cost_micros);
        self.calls = self.calls.saturating_add(other.calls);
        self.pull_requests = self.pull_requests.saturating_add(other.pull_requests);
    }
}

/// One repository's share of a [`UsageReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepoUsage {
    /// The repository.
    pub repo_id: RepoId,
    /// What was spent on its jobs and how many pull requests they opened.
    #[serde(flatten)]
    pub summary: UsageSummary,
}

/// One day's share of a [`UsageReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DayUsage {
    /// The day, in UTC.
    pub day: chrono::NaiveDate,
    /// What was spent that day and how many pull requests were opened.
    #[serde(flatten)]
    pub summary: UsageSummary,
}

/// One step and model's share of a [`UsageReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepUsage {
    /// The step (`planning`, `coding`, `reviewing`).
    pub step: String,
    /// The model (or models, joined with `+`) that did the work.
    pub model: String,
    /// What was spent (pull requests are counted by day and repository, not here).
    #[serde(flatten)]
    pub summary: UsageSummary,
}

/// An organization's usage over `[from, to)`: the totals, and the same split by repository, by
/// day (UTC) and by step and model.
///
/// Only repositories and days with usage or an opened pull request are listed. The days add up to
/// the totals exactly; so do the repositories, except for usage not tied to a job (hence to no
/// repository), which counts in the totals and its day only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageReport {
    /// Start of the period (inclusive).
    pub from: DateTime<Utc>,
    /// End of the period (exclusive).
    pub to: DateTime<Utc>,
    /// Everything in the period.
    pub totals: UsageSummary,
    /// Per repository, sorted by repository id.
    pub by_repo: Vec<RepoUsage>,
    /// Per day (UTC), oldest first.
    pub by_day: Vec<DayUsage>,
    /// Per step and model, sorted by step then model.
    pub by_step: Vec<StepUsage>,
}

impl UsageReport {
    /// Longest period a report may cover, in days.
    pub const MAX_DAYS: i64 = 366;
}

#[cfg(all(test, feature = "openapi"))]
mod openapi_tests {
    use serde_json::json;
    use utoipa::PartialSchema;

    use super::*;

    fn schema_of<T: PartialSchema>() -> serde_json::Value {
        serde_json::to_value(T::schema()).expect("the schema serializes")
    }

    #[test]
    fn api_types_have_schemas_that_follow_their_serde_form() {
        let job = schema_of::<Job>();
        assert_eq!(job["type"], "object");
        assert_eq!(job["properties"]["state"]["$ref"], "#/components/schemas/JobState");
        assert_eq!(job["properties"]["budget"]["$ref"], "#/components/schemas/Budget");
        assert!(job["required"].as_array().unwrap().contains(&json!("checkpoints")));

        // Ids are UUID strings; enums use their snake_case names; internally tagged enums name
        // their tag; flattened summaries are merged in.
        assert_eq!(
            schema_of::<crate::JobId>(),
            json!({
                "description": "Identifies a job (one issue being turned into a pull request).",
                "type": "string",
                "format": "uuid",
            })
        );
        assert!(schema_of::<JobState>()["enum"].as_array().unwrap().contains(&json!("pr_open")));
        assert!(schema_of::<EventKind>()["enum"].as_array().unwrap().contains(&json!("state_changed")));
        assert!(schema_of::<crate::tenancy::Role>()["enum"].as_array().unwrap().contains(&json!("org_admin")));
        let source = schema_of::<crate::repos::RepoSource>();
        assert_eq!(source["oneOf"][0]["properties"]["kind"]["enum"], json!(["github"]));
        let day = schema_of::<DayUsage>();
        assert_eq!(day["allOf"][0]["$ref"], "#/components/schemas/UsageSummary");
        assert_eq!(day["allOf"][1]["properties"]["day"]["format"], "date");
        let page = schema_of::<Page<Job>>();
        assert_eq!(page["properties"]["items"]["items"]["$ref"], "#/components/schemas/Job");
        let diff = schema_of::<crate::diff::DiffFile>();
        assert_eq!(diff["properties"]["status"]["$ref"], "#/components/schemas/DiffStatus");
        assert_eq!(schema_of::<crate::diff::DiffStatus>()["enum"], json!(["added", "modified", "deleted"]));
        for schema in [
            schema_of::<JobEvent>(),
            schema_of::<UsageReport>(),
            schema_of::<UsageTotals>(),
            schema_of::<crate::diff::JobDiff>(),
            schema_of::<crate::repos::Repository>(),
            schema_of::<crate::tenancy::Org>(),
            schema_of::<crate::tenancy::ApiKey>(),
            schema_of::<crate::tenancy::Membership>(),
            schema_of::<crate::tenancy::User>(),
            schema_of::<Budget>(),
        ] {
            assert_eq!(schema["type"], "object", "{schema}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(url: &str) -> IssueRef {
        IssueRef { number: Some(1), title: "t".into(), body: String::new(), url: Some(url.into()), author: None }
    }

    #[test]
    fn an_issue_url_must_be_a_plain_https_address() {
        for good in ["https://github.com/acme/widgets/issues/7", "https://ghe.example.com:8443/a/b/issues/1?x=1#c"] {
            assert!(issue(good).validate().is_ok(), "{good}");
        }
        let long = format!("https://github.com/{}", "a".repeat(MAX_URL_CHARS));
        for bad in [
            "http://github.com/acme/widgets/issues/7",
            "javascript:alert(1)",
            "https://",
            "https:///path",
            "https://user@evil.example/x",
            "https://github.com/a b",
            "https://github.com/\"><script>",
            "ftp://github.com/x",
            long.as_str(),
        ] {
            let error = issue(bad).validate().unwrap_err().to_string();
            assert!(error.contains("issue.url must be an https:// address"), "{bad}: {error}");
        }
        let none = IssueRef { url: None, ..issue("https://x") };
        assert!(none.validate().is_ok());
    }
}
