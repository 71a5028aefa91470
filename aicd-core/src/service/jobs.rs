//! Jobs, their timelines and usage.

use chrono::{DateTime, Utc};

use crate::diff::JobDiff;
use crate::forge::Forge;
use crate::jobs::{
    DEFAULT_MAX_COST_MICROS, DEFAULT_MAX_TOKENS, Job, JobEvent, JobFilter, NewJob, Page, UsageReport, UsageTotals,
};
use crate::tenancy::{Actor, Permission};
use crate::{Core, Error, JobId, OrgId, Result};

impl Core {
    /// Starts a job (it is queued in the same transaction that creates it). Its `created` event
    /// is published on the event bus, if there is one.
    pub async fn create_job(&self, actor: &Actor, org: OrgId, job: NewJob) -> Result<Job> {
        self.authorize(actor, org, Permission::JobCreate)?;
        let job = self.within_limits(org, job).await?;
        self.check_entitlement(org).await?;
        let (job, created) = self.store.create_job_with_event(org, job, &actor.principal.label()).await?;
        self.publish(std::slice::from_ref(&created)).await;
        self.job_queued().await;
        Ok(job)
    }

    /// Reads a job.
    pub async fn get_job(&self, actor: &Actor, org: OrgId, job: JobId) -> Result<Job> {
        self.authorize(actor, org, Permission::JobRead)?;
        self.store.get_job(org, job).await
    }

    /// Lists an organization's jobs, newest first.
    pub async fn list_jobs(&self, actor: &Actor, org: OrgId, filter: JobFilter) -> Result<Page<Job>> {
        self.authorize(actor, org, Permission::JobRead)?;
        self.store.list_jobs(org, filter).await
    }

    /// Cancels a job (see [`crate::store::JobStore::cancel_job`]).
    pub async fn cancel_job(&self, actor: &Actor, org: OrgId, job: JobId) -> Result<Job> {
        self.authorize(actor, org, Permission::JobCancel)?;
        let (job, events) = self.store.cancel_job(org, job, &actor.principal.label()).await?;
        self.publish(&events).await;
        Ok(job)
    }

    /// Deletes a finished job.
    pub async fn delete_job(&self, actor: &Actor, org: OrgId, job: JobId) -> Result<()> {
        self.authorize(actor, org, Permission::JobDelete)?;
        self.store.delete_job(org, job).await
    }

    /// A job's timeline after event `after`, oldest first.
    pub async fn list_events(
        &self,
        actor: &Actor,
        org: OrgId,
        job: JobId,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Vec<JobEvent>> {
        self.authorize(actor, org, Permission::JobRead)?;
        self.store.list_events(org, job, after, limit).await
    }

    /// An organization's usage added up over `[from, to)`.
    pub async fn usage_totals(
        &self,
        actor: &Actor,
        org: OrgId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<UsageTotals> {
        self.authorize(actor, org, Permission::UsageRead)?;
        if from >= to {
            return Err(crate::Error::invalid("`from` must be before `to`"));
        }
        self.store.usage_totals(org, from, to).await
    }

    /// An organization's usage over `[from, to)`: totals, per repository and per day (UTC), with
    /// the number of pull requests opened (see [`UsageReport`]). [`Error::InvalidInput`] unless
    /// `from` is before `to` and the period is at most [`UsageReport::MAX_DAYS`] days long.
    pub async fn usage_report(
        &self,
        actor: &Actor,
        org: OrgId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<UsageReport> {
        self.authorize(actor, org, Permission::UsageRead)?;
        if from >= to {
            return Err(Error::invalid("`from` must be before `to`"));
        }
        if to - from > chrono::Duration::days(UsageReport::MAX_DAYS) {
            return Err(Error::invalid(format!("a usage report covers at most {} days", UsageReport::MAX_DAYS)));
        }
        self.store.usage_report(org, from, to).await
    }

    /// The changes a job proposes, as a git-style unified diff against the head of its
    /// repository's default branch (read through `forge`; see [`crate::diff::unified_diff`]).
    /// [`Error::Conflict`] if the job has no changeset yet, or its repository is detached from GitHub.
    pub async fn job_diff(&self, actor: &Actor, org: OrgId, job: JobId, forge: &dyn Forge) -> Result<JobDiff> {
        self.authorize(actor, org, Permission::JobRead)?;
        let job = self.store.get_job(org, job).await?;
        let Some(changeset) = &job.checkpoints.changeset else {
            return Err(Error::Conflict(format!("job {} has no changeset yet (it is {})", job.id, job.state)));
        };
        let changeset: aicd_agent_api::Changeset = serde_json::from_value(changeset.clone())
            .map_err(|e| Error::Corrupt(format!("the changeset of job {} cannot be read: {e}", job.id)))?;
        let repo = self.store.get_repo(org, job.repo_id).await?;
        if repo.detached_at.is_some() {
            // The forge would refuse too (it checks the link before any token); say it plainly.
            return Err(Error::Conflict(format!(
                "`{}` is detached from GitHub (its installation was unlinked or no longer grants access), \
                 so its files cannot be read",
                repo.full_name
            )));
        }
        let base = forge.repo_view(&repo).await?;
        let diff = crate::diff::unified_diff(&changeset, base.as_ref()).await?;
        Ok(JobDiff { job_id: job.id, base_branch: repo.default_branch, files: diff.files, patch: diff.patch })
    }

    /// Publishes the first events `actor` appended to a new job (its `created` event, and the
    /// note of a retry) on the event bus, so live streams see the job appear. Events a worker may
    /// already have appended are left to the worker, which publishes its own. Best effort: the job
    /// exists either way.
    async fn publish_created(&self, actor: &Actor, org: OrgId, job: JobId) {
        if self.bus.is_none() {
            return;
        }
        match self.store.list_events(org, job, None, 10).await {
            Ok(mut events) => {
                let label = actor.principal.label();
                events.retain(|e| e.actor == label);
                self.publish(&events).await;
            }
            Err(err) => tracing::warn!(%org, %job, %err, "could not read a new job's events to publish them"),
        }
    }
}

impl Core {
    /// `job` with its budget checked against the operator's limits (a budget not given is the
    /// default, lowered to the limit), if the organization may queue another job.
    async fn within_limits(&self, org: OrgId, mut job: NewJob) -> Result<NewJob> {
        let limits = &self.options.limits;
        if job.max_tokens.is_some_and(|n| n > limits.max_job_tokens) {
            return Err(Error::invalid(format!(
                "max_tokens must be at most {}, this deployment's limit per job",
                limits.max_job_tokens
            )));
        }
        if job.max_cost_micros.is_some_and(|n| n > limits.max_job_cost_micros) {
            return Err(Error::invalid(format!(
                "max_cost_micros must be at most {}, this deployment's limit per job",
                limits.max_job_cost_micros
            )));
        }
        job.max_tokens = Some(job.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS).min(limits.max_job_tokens));
        job.max_cost_micros =
            Some(job.max_cost_micros.unwrap_or(DEFAULT_MAX_COST_MICROS).min(limits.max_job_cost_micros));
        let queued = self.store.count_queued_jobs(org).await?;
        if queued >= limits.max_queued_jobs {
            return Err(Error::Conflict(format!(
                "the organization has {queued} queued jobs, this deployment's limit ({}): wait for some to start",
                limits.max_queued_jobs
            )));
        }
        Ok(job)
    }

    /// Starts a new job for the same issue as a failed or cancelled one, with the same budget.
    /// The old job stays as it was; [`crate::Error::Conflict`] if it has not ended that way. The
    /// new job's `created` event and the note linking it to the old one are published on the
    /// event bus, if there is one.
    pub async fn retry_job(&self, actor: &Actor, org: OrgId, job: JobId) -> Result<Job> {
        self.authorize(actor, org, Permission::JobRetry)?;
        let old = self.store.get_job(org, job).await?;
        let Some(new) = old.retry() else {
            return Err(crate::Error::Conflict(format!(
                "only failed or cancelled jobs can be retried; this one is {}",
                old.state
            )));
        };
        let new = self.within_limits(org, new).await?;
        self.check_entitlement(org).await?;
        let created = self.store.create_job(org, new, &actor.principal.label()).await?;
        let note = crate::jobs::NewEvent::retry_of(actor.principal.label(), old.id);
        self.store.append_event(org, created.id, note).await?;
        self.publish_created(actor, org, created.id).await;
        self.job_queued().await;
        Ok(created)
    }
}
