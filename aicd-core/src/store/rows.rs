//! Row shapes shared by both backends, and their conversion into domain types.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use crate::deliveries::{DeliveryStatus, WebhookDelivery};
use crate::github::{GithubRepoId, InstallationId};
use crate::jobs::{
    Budget, Checkpoints, EventKind, IssueRef, Job, JobEvent, JobState, Lease, PullRequestRef, StepAttempts, UsageRecord,
};
use crate::repos::{RepoSource, Repository};
use crate::settings::{OrgSettings, RepoSettings};
use crate::tenancy::{ApiKey, KEY_PREFIX, Membership, Org, Role, User};
use crate::{Error, Result};

fn unsigned(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("negative {what}: {v}")))
}

fn small(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Corrupt(format!("{what} out of range: {v}")))
}

fn parsed<T: std::str::FromStr>(v: &str, what: &str) -> Result<T> {
    v.parse().map_err(|_| Error::Corrupt(format!("unknown {what} `{v}`")))
}

#[derive(sqlx::FromRow)]
pub(crate) struct OrgRow {
    id: Uuid,
    name: String,
    max_concurrent_jobs: i32,
    settings: Json<serde_json::Value>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! org_columns {
    () => {
        "id, name, max_concurrent_jobs, settings, created_at, updated_at"
    };
}
pub(crate) use org_columns;

impl TryFrom<OrgRow> for Org {
    type Error = Error;
    fn try_from(r: OrgRow) -> Result<Self> {
        Ok(Org {
            id: r.id.into(),
            name: r.name,
            max_concurrent_jobs: small(r.max_concurrent_jobs.into(), "max_concurrent_jobs")?,
            settings: OrgSettings::from_stored(&r.settings.0),
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct OrgWithRoleRow {
    #[sqlx(flatten)]
    org: OrgRow,
    role: String,
}

impl TryFrom<OrgWithRoleRow> for (Org, Role) {
    type Error = Error;
    fn try_from(r: OrgWithRoleRow) -> Result<Self> {
        Ok((r.org.try_into()?, parsed(&r.role, "role")?))
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UserRow {
    id: Uuid,
    subject: String,
    email: Option<String>,
    name: Option<String>,
    created_at: DateTime<Utc>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        User { id: r.id.into(), subject: r.subject, email: r.email, name: r.name, created_at: r.created_at }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MembershipRow {
    org_id: Uuid,
    user_id: Uuid,
    role: String,
    created_at: DateTime<Utc>,
}

impl TryFrom<MembershipRow> for Membership {
    type Error = Error;
    fn try_from(r: MembershipRow) -> Result<Self> {
        Ok(Membership {
            org_id: r.org_id.into(),
            user_id: r.user_id.into(),
            role: parsed(&r.role, "role")?,
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ApiKeyRow {
    id: Uuid,
    org_id: Uuid,
    name: String,
    role: String,
    prefix: String,
    pub(crate) key_hash: Vec<u8>,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

macro_rules! api_key_columns {
    () => {
        "id, org_id, name, role, prefix, key_hash, created_by, created_at, expires_at, last_used_at, revoked_at"
    };
}
pub(crate) use api_key_columns;

impl ApiKeyRow {
    pub(crate) fn into_key(self) -> Result<ApiKey> {
        Ok(ApiKey {
            id: self.id.into(),
            org_id: self.org_id.into(),
            name: self.name,
            role: parsed(&self.role, "role")?,
            prefix: format!("{KEY_PREFIX}{}", self.prefix),
            created_by: self.created_by.map(Into::into),
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
            revoked_at: self.revoked_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct RepoRow {
    id: Uuid,
    org_id: Uuid,
    kind: String,
    full_name: String,
    github_installation_id: Option<i64>,
    github_repo_id: Option<i64>,
    local_path: Option<String>,
    default_branch: String,
    settings: Json<serde_json::Value>,
    detached_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! repo_columns {
    () => {
        "id, org_id, kind, full_name, github_installation_id, github_repo_id, \
     local_path, default_branch, settings, detached_at, created_at, updated_at"
    };
}
pub(crate) use repo_columns;

impl TryFrom<RepoRow> for Repository {
    type Error = Error;
    fn try_from(r: RepoRow) -> Result<Self> {
        let source = match (r.kind.as_str(), r.github_installation_id, r.github_repo_id, r.local_path) {
            ("github", Some(installation_id), Some(repo_id), _) => {
                let corrupt = |_| Error::Corrupt(format!("repository {} has an invalid GitHub id", r.id));
                RepoSource::Github {
                    installation_id: InstallationId::new(installation_id).map_err(corrupt)?,
                    repo_id: GithubRepoId::new(repo_id).map_err(corrupt)?,
                }
            }
            ("local", _, _, Some(path)) => RepoSource::Local { path },
            (kind, ..) => {
                return Err(Error::Corrupt(format!("repository {} of kind `{kind}` is incomplete", r.id)));
            }
        };
        Ok(Repository {
            id: r.id.into(),
            org_id: r.org_id.into(),
            full_name: r.full_name,
            source,
            default_branch: r.default_branch,
            settings: RepoSettings::from_stored(&r.settings.0),
            detached_at: r.detached_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct JobRow {
    id: Uuid,
    org_id: Uuid,
    repo_id: Uuid,
    issue_number: Option<i64>,
    issue_title: String,
    issue_body: String,
    issue_url: Option<String>,
    issue_author: Option<String>,
    trigger: String,
    state: String,
    attempts: Json<StepAttempts>,
    review_round: i32,
    budget_tokens: i64,
    budget_cost_micros: i64,
    spent_tokens: i64,
    spent_cost_micros: i64,
    lease_owner: Option<String>,
    lease_expires_at: Option<DateTime<Utc>>,
    epoch: i64,
    run_after: DateTime<Utc>,
    cancel_requested: bool,
    plan: Option<Json<serde_json::Value>>,
    changeset: Option<Json<serde_json::Value>>,
    review: Option<Json<serde_json::Value>>,
    feedback: Option<Json<serde_json::Value>>,
    pull_request: Option<Json<PullRequestRef>>,
    progress_comment_id: Option<i64>,
    failure_reason: Option<String>,
    created_by: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

macro_rules! job_columns {
    () => {
        "id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, \
     issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, \
     spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, \
     review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at"
    };
}
pub(crate) use job_columns;

impl TryFrom<JobRow> for Job {
    type Error = Error;
    fn try_from(r: JobRow) -> Result<Self> {
        Ok(Job {
            id: r.id.into(),
            org_id: r.org_id.into(),
            repo_id: r.repo_id.into(),
            issue: IssueRef {
                number: r.issue_number.map(|n| unsigned(n, "issue number")).transpose()?,
                title: r.issue_title,
                body: r.issue_body,
                url: r.issue_url,
                author: r.issue_author,
            },
            trigger: parsed(&r.trigger, "trigger")?,
            state: parsed::<JobState>(&r.state, "job state")?,
            attempts: r.attempts.0,
            review_round: small(r.review_round.into(), "review round")?,
            budget: Budget {
                max_tokens: unsigned(r.budget_tokens, "budget")?,
                max_cost_micros: unsigned(r.budget_cost_micros, "budget")?,
                spent_tokens: unsigned(r.spent_tokens, "spend")?,
                spent_cost_micros: unsigned(r.spent_cost_micros, "spend")?,
            },
            lease: match (r.lease_owner, r.lease_expires_at) {
                (Some(owner), Some(expires_at)) => Some(Lease { owner, expires_at }),
                _ => None,
            },
            epoch: r.epoch,
            run_after: r.run_after,
            cancel_requested: r.cancel_requested,
            checkpoints: Checkpoints {
                plan: r.plan.map(|j| j.0),
                changeset: r.changeset.map(|j| j.0),
                review: r.review.map(|j| j.0),
                feedback: r.feedback.map(|j| j.0),
                pull_request: r.pull_request.map(|j| j.0),
                progress_comment: r.progress_comment_id.map(|n| unsigned(n, "comment id")).transpose()?,
            },
            failure_reason: r.failure_reason,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    id: i64,
    job_id: Uuid,
    org_id: Uuid,
    at: DateTime<Utc>,
    actor: String,
    kind: String,
    from_state: Option<String>,
    to_state: Option<String>,
    message: String,
    data: Json<serde_json::Value>,
}

macro_rules! event_columns {
    () => {
        "id, job_id, org_id, at, actor, kind, from_state, to_state, message, data"
    };
}
pub(crate) use event_columns;

impl TryFrom<EventRow> for JobEvent {
    type Error = Error;
    fn try_from(r: EventRow) -> Result<Self> {
        Ok(JobEvent {
            id: r.id,
            job_id: r.job_id.into(),
            org_id: r.org_id.into(),
            at: r.at,
            actor: r.actor,
            kind: EventKind::parse(&r.kind),
            from_state: r.from_state.as_deref().map(|s| parsed(s, "job state")).transpose()?,
            to_state: r.to_state.as_deref().map(|s| parsed(s, "job state")).transpose()?,
            message: r.message,
            data: r.data.0,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct UsageRow {
    id: Uuid,
    org_id: Uuid,
    job_id: Option<Uuid>,
    repo_id: Option<Uuid>,
    step: String,
    model: String,
    input_tokens: i64,
    output_tokens: i64,
    cost_micros: i64,
    at: DateTime<Utc>,
}

macro_rules! usage_columns {
    () => {
        "id, org_id, job_id, repo_id, step, model, input_tokens, output_tokens, cost_micros, at"
    };
}
pub(crate) use usage_columns;

impl TryFrom<UsageRow> for UsageRecord {
    type Error = Error;
    fn try_from(r: UsageRow) -> Result<Self> {
        Ok(UsageRecord {
            id: r.id.into(),
            org_id: r.org_id.into(),
            job_id: r.job_id.map(Into::into),
            repo_id: r.repo_id.map(Into::into),
            step: r.step,
            model: r.model,
            input_tokens: unsigned(r.input_tokens, "tokens")?,
            output_tokens: unsigned(r.output_tokens, "tokens")?,
            cost_micros: unsigned(r.cost_micros, "cost")?,
            at: r.at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    delivery_id: String,
    event: String,
    action: Option<String>,
    installation_id: Option<i64>,
    status: String,
    error: Option<String>,
    attempts: i32,
    received_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

macro_rules! delivery_columns {
    () => {
        "delivery_id, event, action, installation_id, status, error, attempts, received_at, updated_at"
    };
}
pub(crate) use delivery_columns;

impl TryFrom<DeliveryRow> for WebhookDelivery {
    type Error = Error;
    fn try_from(r: DeliveryRow) -> Result<Self> {
        Ok(WebhookDelivery {
            status: DeliveryStatus::parse(&r.status)
                .ok_or_else(|| Error::Corrupt(format!("unknown delivery status `{}`", r.status)))?,
            delivery_id: r.delivery_id,
            event: r.event,
            action: r.action,
            installation_id: r.installation_id.and_then(|id| InstallationId::new(id).ok()),
            error: r.error,
            attempts: small(r.attempts.into(), "attempts")?,
            received_at: r.received_at,
            updated_at: r.updated_at,
        })
    }
}
