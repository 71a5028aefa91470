//! [`DispatchStore`] for [`SqlStore`]: claiming with a lease and an epoch, heartbeats, fenced
//! writes, reaping expired leases, and the queue's gauges.

use async_trait::async_trait;
use uuid::Uuid;

use super::connect::Scope;
use super::jobs::{insert_event, insert_events, insert_usage};
use super::rows::{JobRow, job_columns};
use super::sql::{One, Tx, int, q};
use super::{DispatchStore, QueueStats, SqlStore, now};
use crate::jobs::{EventKind, Fence, Job, JobEvent, JobState, JobUpdate, NewEvent};
use crate::{Error, JobId, OrgId, Result};

/// The states a worker drives, as SQL (they must match `jobs_org_runnable_idx`'s predicate).
macro_rules! runnable {
    ($alias:literal) => {
        concat!($alias, "lease_owner IS NULL AND ", $alias, "state IN ('queued', 'planning', 'coding', 'reviewing')")
    };
}

/// The orgs with a runnable, unheld job whose `run_after` (`$1`) has come, at most `$2` of them,
/// with how many jobs each holds, its concurrency limit and since when its oldest runnable job
/// has waited: fewest held first, then the longest waiting. The orgs are found by walking
/// `jobs_org_runnable_idx` one org at a time (a loose index scan), so the cost grows with the
/// number of orgs that have work, not with the number of queued jobs.
pub(crate) const RUNNABLE_ORGS_SQL: &str = concat!(
    "WITH RECURSIVE r(org_id) AS (SELECT (SELECT j.org_id FROM jobs j WHERE ",
    runnable!("j."),
    " AND j.run_after <= $1 ORDER BY j.org_id LIMIT 1) \
     UNION ALL SELECT (SELECT j.org_id FROM jobs j WHERE ",
    runnable!("j."),
    " AND j.run_after <= $1 AND j.org_id > r.org_id ORDER BY j.org_id LIMIT 1) FROM r WHERE r.org_id IS NOT NULL) \
     SELECT w.org_id, \
     (SELECT COUNT(*) FROM jobs h WHERE h.org_id = w.org_id AND h.lease_owner IS NOT NULL) AS held, \
     o.max_concurrent_jobs, \
     (SELECT j.run_after FROM jobs j WHERE j.org_id = w.org_id AND ",
    runnable!("j."),
    " AND j.run_after <= $1 ORDER BY j.run_after, j.id LIMIT 1) AS oldest \
     FROM (SELECT org_id FROM r WHERE org_id IS NOT NULL LIMIT $2) w JOIN orgs o ON o.id = w.org_id \
     ORDER BY held, oldest, w.org_id"
);

/// The `$limit` oldest runnable jobs of org `$1` (`run_after` before `$5`), never more than
/// `$2` nor beyond the org's concurrency limit as it stands when the statement runs. `$greatest`
/// and `$least` are the backend's two-argument maximum and minimum.
macro_rules! picked_sql {
    ($column:literal, $greatest:literal, $least:literal) => {
        concat!(
            "SELECT j.id",
            $column,
            " FROM jobs j WHERE j.org_id = $1 AND ",
            runnable!("j."),
            " AND j.run_after <= $5 ORDER BY j.run_after, j.id LIMIT ",
            $greatest,
            "(0, ",
            $least,
            "($2, (SELECT max_concurrent_jobs FROM orgs WHERE id = $1) \
             - (SELECT COUNT(*) FROM jobs h WHERE h.org_id = $1 AND h.lease_owner IS NOT NULL)))"
        )
    };
}

/// The lease written by a claim: to worker `$3` until `$4`, at `$5`.
macro_rules! lease_set {
    () => {
        "UPDATE jobs SET lease_owner = $3, lease_expires_at = $4, epoch = epoch + 1, updated_at = $5 "
    };
}

/// Leases [`picked_sql!`]'s jobs. On PostgreSQL the picked ids are materialized first: as an
/// `IN (…)` semi-join the planner may re-run the pick once per runnable job.
const CLAIM_POSTGRES_SQL: &str = concat!(
    "WITH picked AS MATERIALIZED (",
    picked_sql!(" AS picked_id", "GREATEST", "LEAST"),
    ") ",
    lease_set!(),
    "FROM picked WHERE id = picked.picked_id AND ",
    runnable!(""),
    " RETURNING ",
    job_columns!()
);
const CLAIM_SQLITE_SQL: &str = concat!(
    lease_set!(),
    "WHERE id IN (",
    picked_sql!("", "MAX", "MIN"),
    ") AND ",
    runnable!(""),
    " RETURNING ",
    job_columns!()
);

/// The claim statement for PostgreSQL (for the plan tests).
#[cfg(test)]
pub(crate) fn claim_sql_postgres() -> &'static str {
    CLAIM_POSTGRES_SQL
}

/// Takes, without waiting, the claim lock of each org in `$1` (comma-separated ids) and returns
/// those it got. The lock is held to the end of the transaction; a claimer that finds an org's
/// lock taken passes the org over instead of queueing behind the other claim. The locks' first
/// key, 1095320388, is `AICD` read as a 32-bit integer: the claim locks' own namespace.
const LOCK_ORGS_SQL: &str = "SELECT o FROM unnest(CAST(string_to_array($1, ',') AS uuid[])) AS o \
     WHERE pg_try_advisory_xact_lock(1095320388, hashtext(CAST(o AS text)))";

/// The queued jobs of every org, counted on `jobs_queued_idx` (not the whole table).
pub(crate) const QUEUE_DEPTH_SQL: &str = "SELECT COUNT(*) FROM jobs WHERE state = 'queued'";

/// Every org's active jobs per state, with how many of them are held under a lease that expired
/// before `$1`. Each branch reads one partial index (`jobs_org_runnable_idx` for unheld jobs,
/// a range of `jobs_leased_idx` for held ones, expired or not), so finished jobs are never
/// scanned.
pub(crate) const QUEUE_STATS_SQL: &str = concat!(
    "SELECT state, CAST(SUM(n) AS BIGINT), CAST(SUM(expired) AS BIGINT) FROM (",
    "SELECT state, COUNT(*) AS n, 0 AS expired FROM jobs WHERE ",
    runnable!(""),
    " GROUP BY state UNION ALL ",
    "SELECT state, COUNT(*) AS n, COUNT(*) AS expired FROM jobs \
     WHERE lease_owner IS NOT NULL AND lease_expires_at < $1 GROUP BY state UNION ALL ",
    "SELECT state, COUNT(*) AS n, 0 AS expired FROM jobs \
     WHERE lease_owner IS NOT NULL AND lease_expires_at >= $1 GROUP BY state",
    ") AS active GROUP BY state"
);

/// The `run_after` of the longest-waiting unheld QUEUED job that may run at `$1`, read in
/// a partial index of active jobs (`jobs_queued_idx` or `jobs_org_runnable_idx`).
pub(crate) const OLDEST_RUNNABLE_SQL: &str =
    "SELECT MIN(run_after) FROM jobs WHERE state = 'queued' AND lease_owner IS NULL AND run_after <= $1";

/// Most orgs one claim looks at.
const MAX_ORGS_PER_CLAIM: i64 = 1000;
/// How often a claim that found every candidate org locked by other claimers tries again.
const LOCKED_RETRIES: u32 = 3;

/// An org with runnable work, as [`RUNNABLE_ORGS_SQL`] returns it (its `oldest` column only
/// orders the rows).
#[derive(sqlx::FromRow)]
struct Candidate {
    org_id: Uuid,
    held: i64,
    max_concurrent_jobs: i32,
}

/// Shares `max` claims between `orgs` (ordered fewest held first, then longest waiting): each
/// next claim goes to the org whose held jobs plus claims so far are fewest, first in order
/// among equals, while it is below its limit. Returns each org's share, in order, zeros left out.
fn fair_shares(orgs: &[Candidate], max: usize) -> Vec<(Uuid, usize)> {
    let mut given = vec![0usize; orgs.len()];
    for _ in 0..max {
        let next = orgs
            .iter()
            .zip(&given)
            .enumerate()
            .filter(|(_, (o, g))| o.held + (**g as i64) < i64::from(o.max_concurrent_jobs))
            .min_by_key(|(i, (o, g))| (o.held + (**g as i64), *i))
            .map(|(i, _)| i);
        match next {
            Some(i) => given[i] += 1,
            None => break,
        }
    }
    orgs.iter().zip(given).filter(|(_, g)| *g > 0).map(|(o, g)| (o.org_id, g)).collect()
}

impl SqlStore {
    /// One claim transaction; also says whether an org was passed over because another
    /// claimer held its lock.
    async fn claim_once(&self, worker: &str, lease: chrono::Duration, max: usize) -> Result<(Vec<Job>, bool)> {
        let at = now();
        let mut tx = self.begin(Scope::System).await?;
        let postgres = matches!(tx, Tx::Postgres(_));
        let orgs: Vec<Candidate> = tx.fetch_all(q(RUNNABLE_ORGS_SQL).arg(at).arg(MAX_ORGS_PER_CLAIM)).await?;
        let mut shares = fair_shares(&orgs, max);
        let mut passed_over = false;
        if postgres && !shares.is_empty() {
            // SQLite has one writer: its transaction alone serializes claims.
            let ids = shares.iter().map(|(org, _)| org.to_string()).collect::<Vec<_>>().join(",");
            let locked: Vec<One<Uuid>> = tx.fetch_all(q(LOCK_ORGS_SQL).arg(ids)).await?;
            let before = shares.len();
            shares.retain(|(org, _)| locked.iter().any(|l| l.0 == *org));
            passed_over = shares.len() < before;
        }
        let mut claimed = Vec::with_capacity(max);
        for (org, share) in shares {
            let sql = if postgres { CLAIM_POSTGRES_SQL } else { CLAIM_SQLITE_SQL };
            let rows: Vec<JobRow> =
                tx.fetch_all(q(sql).arg(org).arg(int(share)).arg(worker).arg(at + lease).arg(at)).await?;
            for row in rows {
                claimed.push(Job::try_from(row)?);
            }
        }
        tx.commit().await?;
        Ok((claimed, passed_over))
    }
}

#[async_trait]
impl DispatchStore for SqlStore {
    async fn claim(&self, worker: &str, lease: chrono::Duration, max: usize) -> Result<Vec<Job>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut retries = 0;
        loop {
            let (claimed, passed_over) = self.claim_once(worker, lease, max).await?;
            if !claimed.is_empty() || !passed_over || retries == LOCKED_RETRIES {
                return Ok(claimed);
            }
            // Every org with work was being claimed by someone else: look again shortly.
            retries += 1;
            tokio::time::sleep(std::time::Duration::from_millis(2 * u64::from(retries))).await;
        }
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
        let to = update.state.unwrap_or(fence.state);
        // Activity notes happened before the step's result: they come before its state change.
        let (mut events, others): (Vec<NewEvent>, Vec<NewEvent>) =
            std::mem::take(&mut update.events).into_iter().partition(|e| e.kind == EventKind::Activity);
        if let Some(to) = update.state {
            fence.state.check_transition(to)?;
            let mut event = NewEvent::state_changed(format!("worker:{}", fence.worker), fence.state, to);
            if let Some(reason) = update.failure_reason.as_deref().filter(|_| to == JobState::Failed) {
                event.message = format!("{} -> {}: {reason}", fence.state, to);
            }
            events.push(event);
        }
        events.extend(others);
        let usage = std::mem::take(&mut update.usage);
        let (tokens, cost) = usage.iter().fold((0u64, 0u64), |(t, c), u| {
            (t.saturating_add(u.input_tokens.saturating_add(u.output_tokens)), c.saturating_add(u.cost_micros))
        });
        let release = update.release || to.is_terminal() || !to.is_runnable();
        let mut tx = self.begin(Scope::Org(org)).await?;
        // One compare-and-set: the job is written only if this worker still holds it, in the
        // state and epoch it was claimed in, with the lease not yet expired.
        let row: Option<JobRow> = tx
            .fetch_optional(
                q(concat!(
                    "UPDATE jobs SET state = $3, attempts = COALESCE($4, attempts), \
                     review_round = COALESCE($5, review_round), run_after = COALESCE($6, run_after), \
                     plan = COALESCE($7, plan), changeset = CASE WHEN $8 THEN $9 ELSE changeset END, \
                     review = CASE WHEN $10 THEN $11 ELSE review END, \
                     feedback = CASE WHEN $12 THEN $13 ELSE feedback END, \
                     pull_request = COALESCE($14, pull_request), \
                     progress_comment_id = COALESCE($15, progress_comment_id), \
                     failure_reason = COALESCE($16, failure_reason), \
                     lease_owner = CASE WHEN $17 THEN NULL ELSE lease_owner END, \
                     lease_expires_at = CASE WHEN $17 THEN NULL ELSE lease_expires_at END, \
                     finished_at = CASE WHEN $18 THEN COALESCE(finished_at, $19) ELSE finished_at END, \
                     spent_tokens = spent_tokens + $23, spent_cost_micros = spent_cost_micros + $24, \
                     updated_at = $19 \
                     WHERE org_id = $1 AND id = $2 AND epoch = $20 AND state = $21 AND lease_owner = $22 \
                     AND lease_expires_at > $19 RETURNING ",
                    job_columns!()
                ))
                .arg(org)
                .arg(job)
                .arg(to.as_str())
                .arg(update.attempts.map(|a| serde_json::to_value(a).unwrap_or_default()))
                .arg(update.review_round.map(i64::from))
                .arg(update.run_after)
                .arg(update.plan)
                .arg(update.changeset.is_some())
                .arg(update.changeset.flatten())
                .arg(update.review.is_some())
                .arg(update.review.flatten())
                .arg(update.feedback.is_some())
                .arg(update.feedback.flatten())
                .arg(update.pull_request.as_ref().and_then(|pr| serde_json::to_value(pr).ok()))
                .arg(update.progress_comment.map(|n| n as i64))
                .arg(update.failure_reason)
                .arg(release)
                .arg(to.is_terminal())
                .arg(at)
                .arg(fence.epoch)
                .arg(fence.state.as_str())
                .arg(fence.worker.as_str())
                .arg(int(tokens))
                .arg(int(cost)),
            )
            .await?;
        let Some(row) = row else { return Err(Error::LeaseLost { job_id: job }) };
        let written = Job::try_from(row)?;
        let appended = insert_events(&mut tx, org, job, events).await?;
        for spent in usage {
            // Usage already stored (by a write whose outcome its worker never learnt) is not
            // stored again; it cannot have been added to the job's counters by this write.
            insert_usage(&mut tx, org, Some(job), Some(written.repo_id), spent).await?;
        }
        if update.state == Some(JobState::PrOpen) {
            crate::billing::enqueue_pull_request(&mut tx, org, job, crate::billing::Meter::PullRequests, at).await?;
        }
        tx.commit().await?;
        Ok((written, appended))
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
        let queued: One<i64> = tx.fetch_one(q(QUEUE_DEPTH_SQL)).await?;
        tx.commit().await?;
        Ok(u64::try_from(queued.0).unwrap_or(0))
    }

    async fn queue_stats(&self) -> Result<QueueStats> {
        let at = now();
        let mut tx = self.begin(Scope::System).await?;
        let rows: Vec<(String, i64, i64)> = tx.fetch_all(q(QUEUE_STATS_SQL).arg(at)).await?;
        let oldest: One<Option<chrono::DateTime<chrono::Utc>>> = tx.fetch_one(q(OLDEST_RUNNABLE_SQL).arg(at)).await?;
        tx.commit().await?;
        let mut stats = QueueStats::default();
        for (state, n, expired) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match state.parse::<JobState>().ok() {
                Some(JobState::Queued) => stats.queued += n,
                Some(JobState::Planning) => stats.planning += n,
                Some(JobState::Coding) => stats.coding += n,
                Some(JobState::Reviewing) => stats.reviewing += n,
                // A held job in another state is not active work; nothing else is selected.
                _ => {}
            }
            stats.expired_leases += u64::try_from(expired).unwrap_or(0);
        }
        stats.oldest_wait = oldest.0.and_then(|since| (at - since).to_std().ok()).unwrap_or_default();
        Ok(stats)
    }
}
