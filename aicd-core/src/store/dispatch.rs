//! [`DispatchStore`] for [`SqlStore`]: claiming with a lease and an epoch, heartbeats, fenced
//! writes, reaping expired leases, and the queue depth.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::connect::Scope;
use super::jobs::{fetch_job, insert_event, lock_job};
use super::rows::{JobRow, job_columns};
use super::sql::{One, Tx, int, q};
use super::{DispatchStore, SqlStore, now};
use crate::jobs::{EventKind, Fence, Job, JobEvent, JobState, JobUpdate, NewEvent};
use crate::{Error, JobId, OrgId, Result};

/// The oldest runnable, unheld job of an org that is under its concurrency limit.
macro_rules! candidate_sql {
    ($lock:literal) => {
        concat!(
            "SELECT j.id, j.org_id FROM jobs j JOIN orgs o ON o.id = j.org_id \
             WHERE j.lease_owner IS NULL AND j.state IN ('queued', 'planning', 'coding', 'reviewing') \
             AND j.run_after <= $1 \
             AND (SELECT COUNT(*) FROM jobs h WHERE h.org_id = j.org_id AND h.lease_owner IS NOT NULL) \
                 < o.max_concurrent_jobs \
             ORDER BY j.run_after, j.id LIMIT 1",
            $lock
        )
    };
}

#[async_trait]
impl DispatchStore for SqlStore {
    async fn claim_next(&self, worker: &str, lease: chrono::Duration) -> Result<Option<Job>> {
        let at = now();
        let mut tx = self.begin(Scope::System).await?;
        let postgres = matches!(tx, Tx::Postgres(_));
        let candidate: Option<(Uuid, Uuid)> = if postgres {
            // SKIP LOCKED: concurrent claimers pass over each other's candidates instead of waiting.
            tx.fetch_optional(q(candidate_sql!(" FOR UPDATE OF j SKIP LOCKED")).arg(at)).await?
        } else {
            // SQLite has one writer: the transaction alone serializes claims.
            tx.fetch_optional(q(candidate_sql!("")).arg(at)).await?
        };
        let Some((job, org)) = candidate else { return Ok(None) };
        if postgres {
            // Serialize claims within the org so two workers cannot both take its last free slot.
            let limit: One<i32> =
                tx.fetch_one(q("SELECT max_concurrent_jobs FROM orgs WHERE id = $1 FOR UPDATE").arg(org)).await?;
            let held: One<i64> = tx
                .fetch_one(q("SELECT COUNT(*) FROM jobs WHERE org_id = $1 AND lease_owner IS NOT NULL").arg(org))
                .await?;
            if held.0 >= i64::from(limit.0) {
                return Ok(None);
            }
        }
        let row: JobRow = tx
            .fetch_one(
                q(concat!(
                    "UPDATE jobs SET lease_owner = $2, lease_expires_at = $3, epoch = epoch + 1, updated_at = $4 \
                     WHERE id = $1 RETURNING ",
                    job_columns!()
                ))
                .arg(job)
                .arg(worker)
                .arg(at + lease)
                .arg(at),
            )
            .await?;
        tx.commit().await?;
        row.try_into().map(Some)
    }

    async fn heartbeat(&self, org: OrgId, job: JobId, fence: &Fence, lease: chrono::Duration) -> Result<bool> {
        let at = now();
        let mut tx = self.begin(Scope::Org(org)).await?;
        let cancel: Option<One<bool>> = tx
            .fetch_optional(
                q("UPDATE jobs SET lease_expires_at = $5 WHERE org_id = $1 AND id = $2 AND epoch = $3 \
                   AND lease_owner = $4 AND lease_expires_at > $6 RETURNING cancel_requested")
                .arg(org)
                .arg(job)
                .arg(fence.epoch)
                .arg(fence.worker.as_str())
                .arg(at + lease)
                .arg(at),
            )
            .await?;
        tx.commit().await?;
        cancel.map(|c| c.0).ok_or(Error::LeaseLost { job_id: job })
    }

    async fn update_job(
        &self,
        org: OrgId,
        job: JobId,
        fence: &Fence,
        mut update: JobUpdate,
    ) -> Result<(Job, Vec<JobEvent>)> {
        let at = now();
        let mut tx = self.begin(Scope::Org(org)).await?;
        let current = lock_job(&mut tx, org, job).await?;
        let held = current.state == fence.state
            && current.epoch == fence.epoch
            && current.lease.as_ref().is_some_and(|l| l.owner == fence.worker && l.expires_at > at);
        if !held {
            return Err(Error::LeaseLost { job_id: job });
        }
        let mut next = current.clone();
        let mut events = Vec::new();
        if let Some(to) = update.state {
            current.state.check_transition(to)?;
            next.state = to;
            let mut event = NewEvent::state_changed(format!("worker:{}", fence.worker), current.state, to);
            if let Some(reason) = update.failure_reason.as_deref().filter(|_| to == JobState::Failed) {
                event.message = format!("{} -> {}: {reason}", current.state, to);
            }
            events.push(event);
        }
        let extra_events = std::mem::take(&mut update.events);
        let release = update.release;
        apply(&mut next, update, at);
        if release || next.state.is_terminal() || !next.state.is_runnable() {
            next.lease = None;
        }
        let c = &next.checkpoints;
        let written = tx
            .execute(
                q("UPDATE jobs SET state = $3, attempts = $4, review_round = $5, run_after = $6, plan = $7, \
                   changeset = $8, review = $9, feedback = $10, pull_request = $11, progress_comment_id = $12, \
                   failure_reason = $13, lease_owner = $14, lease_expires_at = $15, finished_at = $16, \
                   updated_at = $17 WHERE org_id = $1 AND id = $2 AND epoch = $18 AND state = $19")
                .arg(org)
                .arg(job)
                .arg(next.state.as_str())
                .arg(serde_json::to_value(next.attempts).unwrap_or_default())
                .arg(int(next.review_round))
                .arg(next.run_after)
                .arg(c.plan.clone())
                .arg(c.changeset.clone())
                .arg(c.review.clone())
                .arg(c.feedback.clone())
                .arg(c.pull_request.as_ref().and_then(|pr| serde_json::to_value(pr).ok()))
                .arg(c.progress_comment.map(|n| n as i64))
                .arg(next.failure_reason.clone())
                .arg(next.lease.as_ref().map(|l| l.owner.clone()))
                .arg(next.lease.as_ref().map(|l| l.expires_at))
                .arg(next.finished_at)
                .arg(at)
                .arg(fence.epoch)
                .arg(fence.state.as_str()),
            )
            .await?;
        if written != 1 {
            return Err(Error::LeaseLost { job_id: job });
        }
        events.extend(extra_events);
        let mut appended = Vec::with_capacity(events.len());
        for event in events {
            appended.push(insert_event(&mut tx, org, job, event).await?);
        }
        let job = fetch_job(&mut tx, org, job).await?;
        tx.commit().await?;
        Ok((job, appended))
    }

    async fn reap_expired_leases(&self) -> Result<Vec<JobEvent>> {
        let at = now();
        let mut tx = self.begin(Scope::System).await?;
        let expired: Vec<(Uuid, Uuid, String)> = tx
            .fetch_all(
                q("SELECT id, org_id, lease_owner FROM jobs WHERE lease_owner IS NOT NULL AND lease_expires_at < $1")
                    .arg(at),
            )
            .await?;
        let mut events = Vec::with_capacity(expired.len());
        for (job, org, owner) in expired {
            let released = tx
                .execute(
                    q("UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 \
                       WHERE id = $1 AND lease_owner = $3 AND lease_expires_at < $2")
                    .arg(job)
                    .arg(at)
                    .arg(owner.as_str()),
                )
                .await?;
            if released == 1 {
                let org = OrgId::from(org);
                tx.set_scope(Scope::Org(org)).await?;
                let message = format!("the lease of worker {owner} expired; the job is queued again");
                let event = NewEvent::new("system", EventKind::Note, message);
                events.push(insert_event(&mut tx, org, job.into(), event).await?);
                tx.set_scope(Scope::System).await?;
            }
        }
        tx.commit().await?;
        Ok(events)
    }

    async fn queue_depth(&self) -> Result<u64> {
        // The system scope sees every org's jobs on PostgreSQL, as the claim does.
        let mut tx = self.begin(Scope::System).await?;
        let queued: One<i64> = tx.fetch_one(q("SELECT COUNT(*) FROM jobs WHERE state = 'queued'")).await?;
        tx.commit().await?;
        Ok(u64::try_from(queued.0).unwrap_or(0))
    }
}

fn apply(job: &mut Job, update: JobUpdate, at: DateTime<Utc>) {
    let c = &mut job.checkpoints;
    if let Some(plan) = update.plan {
        c.plan = Some(plan);
    }
    if let Some(changeset) = update.changeset {
        c.changeset = changeset;
    }
    if let Some(review) = update.review {
        c.review = review;
    }
    if let Some(feedback) = update.feedback {
        c.feedback = feedback;
    }
    if let Some(pr) = update.pull_request {
        c.pull_request = Some(pr);
    }
    if let Some(comment) = update.progress_comment {
        c.progress_comment = Some(comment);
    }
    if let Some(attempts) = update.attempts {
        job.attempts = attempts;
    }
    if let Some(round) = update.review_round {
        job.review_round = round;
    }
    if let Some(run_after) = update.run_after {
        job.run_after = run_after;
    }
    if let Some(reason) = update.failure_reason {
        job.failure_reason = Some(reason);
    }
    if job.state.is_terminal() && job.finished_at.is_none() {
        job.finished_at = Some(at);
    }
}
