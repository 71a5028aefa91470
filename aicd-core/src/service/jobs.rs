//! Jobs, their timelines and usage.

use chrono::{DateTime, Utc};

use crate::jobs::{Job, JobEvent, JobFilter, NewJob, Page, UsageTotals};
use crate::tenancy::{Actor, Permission};
use crate::{Core, JobId, OrgId, Result};

impl Core {
    /// Starts a job (it is queued in the same transaction that creates it).
    pub async fn create_job(&self, actor: &Actor, org: OrgId, job: NewJob) -> Result<Job> {
        self.authorize(actor, org, Permission::JobCreate)?;
        let job = self.store.create_job(org, job, &actor.principal.label()).await?;
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
}

impl Core {
    /// Starts a new job for the same issue as a failed or cancelled one, with the same budget.
    /// The old job stays as it was; [`crate::Error::Conflict`] if it has not ended that way.
    pub async fn retry_job(&self, actor: &Actor, org: OrgId, job: JobId) -> Result<Job> {
        self.authorize(actor, org, Permission::JobRetry)?;
        let old = self.store.get_job(org, job).await?;
        if !matches!(old.state, crate::jobs::JobState::Failed | crate::jobs::JobState::Cancelled) {
            return Err(crate::Error::Conflict(format!(
                "only failed or cancelled jobs can be retried; this one is {}",
                old.state
            )));
        }
        let new = NewJob {
            repo_id: old.repo_id,
            issue: old.issue,
            trigger: old.trigger,
            max_tokens: Some(old.budget.max_tokens),
            max_cost_micros: Some(old.budget.max_cost_micros),
        };
        let created = self.store.create_job(org, new, &actor.principal.label()).await?;
        let note = crate::jobs::NewEvent::new(
            actor.principal.label(),
            crate::jobs::EventKind::Note,
            format!("retry of job {}", old.id),
        )
        .with_data(serde_json::json!({ "retry_of": old.id }));
        self.store.append_event(org, created.id, note).await?;
        self.job_queued().await;
        Ok(created)
    }
}
