//! The storage port and its SQL implementation for PostgreSQL and SQLite.
//!
//! Every method that touches tenant data takes the [`OrgId`] it is scoped to and never sees
//! another organization's rows: an id from another org reads as [`Error::NotFound`]. On
//! PostgreSQL, row-level security enforces the same scope a second time (see [`SqlStore`]).

pub(crate) mod connect;
mod deliveries;
mod dispatch;
pub(crate) mod jobs;
#[cfg(test)]
mod plans_tests;
mod repos;
pub(crate) mod rows;
pub(crate) mod sql;
mod tenancy;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use crate::billing::BillingStore;
pub use crate::github::GithubStore;
pub use connect::{PoolStats, PostgresOptions, SqlStore};

use crate::deliveries::{DeliveryClaim, DeliveryStatus, NewDelivery, WebhookDelivery};
use crate::jobs::{Fence, Job, JobEvent, JobFilter, JobUpdate, NewEvent, NewJob, Page, UsageRecord, UsageTotals};
use crate::repos::{NewRepo, RepoPatch, Repository};
use crate::tenancy::{ApiKey, Membership, NewOrg, NewUser, Org, OrgPatch, Role, User};
use crate::{ApiKeyId, JobId, OrgId, RepoId, Result, UsageId, UserId};

/// An API key as stored, with its hash, for authentication.
#[derive(Clone, Debug)]
pub struct StoredApiKey {
    /// The key's listing.
    pub key: ApiKey,
    /// SHA-256 of the whole key.
    pub hash: Vec<u8>,
}

/// An API key to insert (its secret already generated and hashed).
#[derive(Clone, Debug)]
pub struct ApiKeyRecord {
    /// Its name.
    pub name: String,
    /// The role it carries.
    pub role: Role,
    /// The lookup prefix.
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub hash: Vec<u8>,
    /// The user who created it.
    pub created_by: Option<UserId>,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A usage record to insert.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewUsage {
    /// The record's id, so the same spending recorded twice (a write retried after its outcome
    /// was unknown) is stored once; `None`: a new id.
    pub id: Option<UsageId>,
    /// The job it was spent on.
    pub job_id: Option<JobId>,
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
}

/// Organizations, users, memberships and API keys.
#[async_trait]
pub trait TenancyStore: Send + Sync {
    /// Creates an organization; if `admin` is given, that user becomes its first org_admin in the
    /// same transaction.
    async fn create_org(&self, org: NewOrg, admin: Option<UserId>) -> Result<Org>;
    /// Reads an organization.
    async fn get_org(&self, org: OrgId) -> Result<Org>;
    /// Changes an organization's settings.
    async fn update_org(&self, org: OrgId, patch: OrgPatch) -> Result<Org>;
    /// Deletes an organization and everything it owns.
    async fn delete_org(&self, org: OrgId) -> Result<()>;
    /// The organizations a user belongs to, with the user's role in each, oldest first.
    async fn list_orgs_of_user(&self, user: UserId) -> Result<Vec<(Org, Role)>>;

    /// Returns the user with this subject, creating it on first sight (and refreshing its e-mail
    /// and name otherwise).
    async fn upsert_user(&self, user: NewUser) -> Result<User>;
    /// Reads a user.
    async fn get_user(&self, user: UserId) -> Result<User>;

    /// Adds a member; [`crate::Error::Conflict`] if it already is one.
    async fn add_member(&self, org: OrgId, user: UserId, role: Role) -> Result<Membership>;
    /// A user's membership in an organization, if any.
    async fn get_membership(&self, org: OrgId, user: UserId) -> Result<Option<Membership>>;
    /// An organization's members, oldest first.
    async fn list_members(&self, org: OrgId) -> Result<Vec<Membership>>;
    /// Changes a member's role; refuses to demote the last org_admin.
    async fn set_member_role(&self, org: OrgId, user: UserId, role: Role) -> Result<Membership>;
    /// Removes a member; refuses to remove the last org_admin.
    async fn remove_member(&self, org: OrgId, user: UserId) -> Result<()>;

    /// Stores a new API key.
    async fn insert_api_key(&self, org: OrgId, key: ApiKeyRecord) -> Result<ApiKey>;
    /// An organization's API keys (revoked ones included), oldest first.
    async fn list_api_keys(&self, org: OrgId) -> Result<Vec<ApiKey>>;
    /// Revokes a key; revoking a revoked key changes nothing and succeeds.
    async fn revoke_api_key(&self, org: OrgId, key: ApiKeyId) -> Result<ApiKey>;
    /// Keys whose lookup prefix is `prefix`, from any organization (for authentication).
    async fn find_api_keys_by_prefix(&self, prefix: &str) -> Result<Vec<StoredApiKey>>;
    /// Records that a key was used at `at`.
    async fn touch_api_key(&self, key: &ApiKey, at: DateTime<Utc>) -> Result<()>;
}

/// Repositories.
#[async_trait]
pub trait RepoStore: Send + Sync {
    /// Registers a repository (already validated); [`crate::Error::Conflict`] on a duplicate name.
    async fn create_repo(&self, org: OrgId, repo: NewRepo) -> Result<Repository>;
    /// Reads a repository.
    async fn get_repo(&self, org: OrgId, repo: RepoId) -> Result<Repository>;
    /// An organization's repositories by name.
    async fn list_repos(&self, org: OrgId) -> Result<Vec<Repository>>;
    /// Changes a repository's settings.
    async fn update_repo(&self, org: OrgId, repo: RepoId, patch: RepoPatch) -> Result<Repository>;
    /// Removes a repository and its jobs.
    async fn delete_repo(&self, org: OrgId, repo: RepoId) -> Result<()>;
}

/// Jobs, their events and usage.
#[async_trait]
pub trait JobStore: Send + Sync {
    /// Creates a job in QUEUED with its `created` event, in one transaction: the insert is the
    /// enqueue. [`crate::Error::NotFound`] if the repository is not the org's;
    /// [`crate::Error::Conflict`] if the issue already has an active job.
    async fn create_job(&self, org: OrgId, job: NewJob, created_by: &str) -> Result<Job> {
        Ok(self.create_job_with_event(org, job, created_by).await?.0)
    }
    /// [`JobStore::create_job`], also returning the `created` event as stored (to publish it
    /// without reading it back).
    async fn create_job_with_event(&self, org: OrgId, job: NewJob, created_by: &str) -> Result<(Job, JobEvent)>;
    /// Reads a job.
    async fn get_job(&self, org: OrgId, job: JobId) -> Result<Job>;
    /// An organization's jobs, newest first, one page at a time.
    async fn list_jobs(&self, org: OrgId, filter: JobFilter) -> Result<Page<Job>>;
    /// Cancels a job: a queued (or unheld) job moves to CANCELLED at once; a job a worker holds is
    /// marked, and the worker stops at its next checkpoint. Both append an event, which is returned
    /// with the job (none when the job was already marked). [`crate::Error::IllegalTransition`] if
    /// the job is past cancelling.
    async fn cancel_job(&self, org: OrgId, job: JobId, actor: &str) -> Result<(Job, Vec<JobEvent>)>;
    /// Deletes a finished job and its events; [`crate::Error::Conflict`] if it is still active.
    async fn delete_job(&self, org: OrgId, job: JobId) -> Result<()>;
    /// How many of the organization's jobs are QUEUED.
    async fn count_queued_jobs(&self, org: OrgId) -> Result<u64>;
    /// Appends an event to a job's timeline.
    async fn append_event(&self, org: OrgId, job: JobId, event: NewEvent) -> Result<JobEvent>;
    /// Appends events to a job's timeline in order, in one transaction.
    async fn append_events(&self, org: OrgId, job: JobId, events: Vec<NewEvent>) -> Result<Vec<JobEvent>> {
        let mut appended = Vec::with_capacity(events.len());
        for event in events {
            appended.push(self.append_event(org, job, event).await?);
        }
        Ok(appended)
    }
    /// A job's events after `after` (exclusive), oldest first, at most `limit`.
    async fn list_events(&self, org: OrgId, job: JobId, after: Option<i64>, limit: u32) -> Result<Vec<JobEvent>>;
    /// Records one agent call's usage against the org (and the job, if given). Recording a usage
    /// whose `id` is already stored changes nothing and returns the stored record.
    async fn record_usage(&self, org: OrgId, usage: NewUsage) -> Result<UsageRecord>;
    /// Usage records of an organization in `[from, to)`, oldest first.
    async fn list_usage(&self, org: OrgId, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<UsageRecord>>;
    /// Usage of an organization added up over `[from, to)`.
    async fn usage_totals(&self, org: OrgId, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<UsageTotals>;
    /// Usage of an organization over `[from, to)` added up in total, per repository and per day
    /// (UTC), with the number of jobs whose pull request was opened in the period (see
    /// [`crate::jobs::UsageReport`]).
    async fn usage_report(
        &self,
        org: OrgId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<crate::jobs::UsageReport>;
}

/// Webhook deliveries (not tenant data: they arrive before their org is known).
#[async_trait]
pub trait DeliveryStore: Send + Sync {
    /// Records a received delivery and says whether to process it: first sight, a failed one, or
    /// one stuck in processing for longer than `stale_after` is processed (again); anything else,
    /// including a body already received under another delivery id, is a duplicate.
    async fn begin_delivery(&self, delivery: NewDelivery, stale_after: chrono::Duration) -> Result<DeliveryClaim>;
    /// Records how processing ended.
    async fn finish_delivery(&self, delivery_id: &str, status: DeliveryStatus, error: Option<&str>) -> Result<()>;
    /// Reads a delivery.
    async fn get_delivery(&self, delivery_id: &str) -> Result<WebhookDelivery>;
}

/// Dispatch: how workers take jobs and write to the jobs they hold.
///
/// The database is the queue. A worker claims a job with a lease and a new epoch, extends the lease
/// by heartbeats, and writes with [`DispatchStore::update_job`], a compare-and-set on (job, state,
/// epoch, lease holder). A reaper re-queues jobs whose lease expired, so a crashed worker's job is
/// taken over; the old worker's writes then fail with [`crate::Error::LeaseLost`].
#[async_trait]
pub trait DispatchStore: Send + Sync {
    /// Claims the runnable, unheld job that has waited longest (`run_after` reached) among
    /// organizations below their concurrency limit: it gets a lease for `lease` and its epoch is
    /// incremented. `None` when there is nothing to do.
    async fn claim_next(&self, worker: &str, lease: chrono::Duration) -> Result<Option<Job>> {
        Ok(self.claim(worker, lease, 1).await?.pop())
    }
    /// Claims up to `max` runnable, unheld jobs at once (as [`DispatchStore::claim_next`] does
    /// one), shared fairly between organizations: each next job goes to the org holding the
    /// fewest jobs (its own held ones plus those given in this claim), the longest-waiting org
    /// first among equals, and no org beyond its concurrency limit, however many workers claim
    /// at the same time. Within an org, the job that has waited longest comes first. Empty when
    /// there is nothing to do.
    async fn claim(&self, worker: &str, lease: chrono::Duration, max: usize) -> Result<Vec<Job>>;
    /// Extends the lease by `lease` from now if the worker still holds the job under `fence`;
    /// returns whether a person asked to cancel it. [`crate::Error::LeaseLost`] otherwise
    /// (including when the lease has already expired).
    async fn heartbeat(&self, org: OrgId, job: JobId, fence: &Fence, lease: chrono::Duration) -> Result<bool>;
    /// Applies `update` if the worker still holds the job under `fence` and its lease has not
    /// expired; a state change is checked against the transition table and recorded as an event,
    /// together with `update.events`, in the same transaction. Terminal states and `release`
    /// give the lease up. Returns the job as written and the events appended.
    async fn update_job(
        &self,
        org: OrgId,
        job: JobId,
        fence: &Fence,
        update: JobUpdate,
    ) -> Result<(Job, Vec<JobEvent>)>;
    /// Releases every lease that has expired (its worker died or stalled), so the jobs can be
    /// claimed again; returns the events it appended.
    async fn reap_expired_leases(&self) -> Result<Vec<JobEvent>>;
    /// How many jobs are QUEUED, across every organization (held or not, whatever their
    /// `run_after`): the backlog gauge for operators. Not tenant data: a count only.
    async fn queue_depth(&self) -> Result<u64>;
    /// The operators' view of the queue across every organization: active jobs per state, how
    /// long the longest-waiting runnable job has waited, and how many jobs are still held under
    /// an expired lease (their worker died or stalled, and the reaper has not yet released them).
    /// Reads only active jobs (partial indexes), whatever the number of finished ones. Not
    /// tenant data: counts only.
    async fn queue_stats(&self) -> Result<QueueStats>;
}

/// What [`DispatchStore::queue_stats`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Jobs in QUEUED, held or not, whatever their `run_after`.
    pub queued: u64,
    /// Jobs in PLANNING.
    pub planning: u64,
    /// Jobs in CODING.
    pub coding: u64,
    /// Jobs in REVIEWING.
    pub reviewing: u64,
    /// How long the longest-waiting QUEUED job that may run now (unheld, its `run_after` come)
    /// has waited since its `run_after`; zero when there is none.
    pub oldest_wait: std::time::Duration,
    /// Jobs held under a lease that has expired.
    pub expired_leases: u64,
}

/// The whole storage port.
pub trait Store:
    TenancyStore + RepoStore + JobStore + DeliveryStore + DispatchStore + GithubStore + BillingStore
{
}
impl<T: TenancyStore + RepoStore + JobStore + DeliveryStore + DispatchStore + GithubStore + BillingStore> Store for T {}

/// Now, at the microsecond precision both databases keep, so values read back compare equal.
pub(crate) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}
