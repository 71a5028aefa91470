//! [`JobStore`] for [`SqlStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::connect::Scope;
use super::rows::{EventRow, JobRow, UsageRow, event_columns, job_columns, usage_columns};
use super::sql::{One, Tx, constraint_error, int, q};
use super::{JobStore, NewUsage, SqlStore, now};
use crate::jobs::{
    DayUsage, EventKind, Job, JobEvent, JobFilter, JobState, NewEvent, NewJob, Page, RepoUsage, StepAttempts,
    StepUsage, UsageRecord, UsageReport, UsageSummary, UsageTotals,
};
use crate::{Error, JobId, OrgId, Result};

/// One group of a usage report: its key, then input tokens, output tokens, cost, calls and pull
/// requests opened.
#[derive(sqlx::FromRow)]
struct SummaryRow<K>(K, i64, i64, i64, i64, i64);

impl<K> SummaryRow<K> {
    fn summary(&self) -> UsageSummary {
        let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
        UsageSummary {
            input_tokens: non_negative(self.1),
            output_tokens: non_negative(self.2),
            cost_micros: non_negative(self.3),
            calls: non_negative(self.4),
            pull_requests: non_negative(self.5),
        }
    }
}

/// The jobs of org `$1` whose pull request was opened in `[$2, $3)`, with their repository and
/// when (`repo_id`, `opened_at`). A job reaches PR_OPEN at most once, and stays there or moves to
/// MERGED or CLOSED, so only jobs in those states are looked at (through the org's index on jobs,
/// then each job's events).
macro_rules! opened_pull_requests_sql {
    () => {
        "SELECT repo_id, opened_at FROM (SELECT j.repo_id, \
         (SELECT MIN(e.at) FROM job_events e WHERE e.org_id = j.org_id AND e.job_id = j.id \
         AND e.kind = 'state_changed' AND e.to_state = 'pr_open') AS opened_at \
         FROM jobs j WHERE j.org_id = $1 AND j.state IN ('pr_open', 'merged', 'closed')) AS o \
         WHERE opened_at >= $2 AND opened_at < $3"
    };
}

/// Usage and opened pull requests of org `$1` in `[$2, $3)` per day; the day of a timestamp `t` is
/// `$day_start t $day_end`.
macro_rules! usage_by_day_sql {
    ($day_start:literal, $day_end:literal) => {
        concat!(
            "SELECT day, CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), \
             CAST(SUM(cost_micros) AS BIGINT), CAST(SUM(calls) AS BIGINT), CAST(SUM(pull_requests) AS BIGINT) \
             FROM (SELECT ",
            $day_start,
            "at",
            $day_end,
            " AS day, input_tokens, output_tokens, cost_micros, 1 AS calls, 0 AS pull_requests \
             FROM usage_records WHERE org_id = $1 AND at >= $2 AND at < $3 \
             UNION ALL SELECT ",
            $day_start,
            "opened_at",
            $day_end,
            ", 0, 0, 0, 0, 1 FROM (",
            opened_pull_requests_sql!(),
            ") AS p) AS u GROUP BY day ORDER BY day"
        )
    };
}

/// Usage and opened pull requests of org `$1` in `[$2, $3)` per repository (usage of no job has
/// no repository and is left out).
macro_rules! usage_by_repo_sql {
    () => {
        concat!(
            "SELECT repo_id, CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), \
             CAST(SUM(cost_micros) AS BIGINT), CAST(SUM(calls) AS BIGINT), CAST(SUM(pull_requests) AS BIGINT) \
             FROM (SELECT repo_id, input_tokens, output_tokens, cost_micros, 1 AS calls, 0 AS pull_requests \
             FROM usage_records WHERE org_id = $1 AND at >= $2 AND at < $3 AND repo_id IS NOT NULL \
             UNION ALL SELECT repo_id, 0, 0, 0, 0, 1 FROM (",
            opened_pull_requests_sql!(),
            ") AS p) AS u GROUP BY repo_id ORDER BY repo_id"
        )
    };
}

/// Usage of org `$1` in `[$2, $3)` per step and model.
const USAGE_BY_STEP_SQL: &str = "SELECT step, model, CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), \
     CAST(SUM(cost_micros) AS BIGINT), CAST(COUNT(*) AS BIGINT), CAST(0 AS BIGINT) FROM usage_records \
     WHERE org_id = $1 AND at >= $2 AND at < $3 GROUP BY step, model ORDER BY step, model";

#[derive(sqlx::FromRow)]
struct StepRow(String, String, i64, i64, i64, i64, i64);

/// A page of org `$1`'s jobs below id `$2`, newest first, at most `$3`.
pub(crate) const LIST_JOBS_SQL: &str =
    concat!("SELECT ", job_columns!(), " FROM jobs WHERE org_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3");
/// [`LIST_JOBS_SQL`] of the jobs in state `$4`.
pub(crate) const LIST_JOBS_BY_STATE_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE org_id = $1 AND state = $4 AND id < $2 ORDER BY id DESC LIMIT $3"
);
/// [`LIST_JOBS_SQL`] of the jobs of repository `$4`.
pub(crate) const LIST_JOBS_BY_REPO_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE org_id = $1 AND repo_id = $4 AND id < $2 ORDER BY id DESC LIMIT $3"
);
/// [`LIST_JOBS_SQL`] of the jobs of repository `$4` in state `$5`.
pub(crate) const LIST_JOBS_BY_REPO_AND_STATE_SQL: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobs WHERE org_id = $1 AND repo_id = $4 AND state = $5 AND id < $2 ORDER BY id DESC LIMIT $3"
);

#[async_trait]
impl JobStore for SqlStore {
    async fn create_job_with_event(&self, org: OrgId, job: NewJob, created_by: &str) -> Result<(Job, JobEvent)> {
        let issue = job.issue.validate()?;
        let max_tokens = job.max_tokens.unwrap_or(crate::jobs::DEFAULT_MAX_TOKENS);
        let max_cost = job.max_cost_micros.unwrap_or(crate::jobs::DEFAULT_MAX_COST_MICROS);
        if max_tokens == 0 || max_cost == 0 || max_tokens > i64::MAX as u64 || max_cost > i64::MAX as u64 {
            return Err(Error::invalid("budgets must be positive"));
        }
        let duplicate = match issue.number {
            Some(n) => format!("issue #{n} already has an active job"),
            None => "this job already exists".to_owned(),
        };
        let id = JobId::new();
        let at = now();
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: JobRow = tx
            .fetch_one(
                q(concat!(
                    "INSERT INTO jobs (id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, \
                     issue_author, trigger, state, attempts, budget_tokens, budget_cost_micros, run_after, \
                     created_by, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10, $11, $12, $13, $14, $13, $13) \
                     RETURNING ",
                    job_columns!()
                ))
                .arg(id)
                .arg(org)
                .arg(job.repo_id)
                .arg(issue.number.map(|n| n as i64))
                .arg(issue.title)
                .arg(issue.body)
                .arg(issue.url)
                .arg(issue.author)
                .arg(job.trigger.as_str())
                .arg(serde_json::to_value(StepAttempts::default()).unwrap_or_default())
                .arg(int(max_tokens))
                .arg(int(max_cost))
                .arg(at)
                .arg(created_by),
            )
            .await
            .map_err(|e| constraint_error(e, &duplicate, "repository"))?;
        let created =
            insert_event(&mut tx, org, id, NewEvent::new(created_by, EventKind::Created, "job queued")).await?;
        tx.commit().await?;
        Ok((row.try_into()?, created))
    }

    async fn get_job(&self, org: OrgId, job: JobId) -> Result<Job> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        fetch_job(&mut tx, org, job).await
    }

    async fn list_jobs(&self, org: OrgId, filter: JobFilter) -> Result<Page<Job>> {
        let limit = filter.limit()?;
        let mut tx = self.begin(Scope::Org(org)).await?;
        // One statement per filter, each an index range scan newest first (a cursor-less page
        // starts below the largest id).
        let before = filter.before.map_or(uuid::Uuid::max(), |id| id.0);
        let page = q(match (filter.state, filter.repo_id) {
            (None, None) => LIST_JOBS_SQL,
            (Some(_), None) => LIST_JOBS_BY_STATE_SQL,
            (None, Some(_)) => LIST_JOBS_BY_REPO_SQL,
            (Some(_), Some(_)) => LIST_JOBS_BY_REPO_AND_STATE_SQL,
        })
        .arg(org)
        .arg(before)
        .arg(int(limit + 1));
        let query = match (filter.state, filter.repo_id) {
            (None, None) => page,
            (Some(state), None) => page.arg(state.as_str()),
            (None, Some(repo)) => page.arg(repo),
            (Some(state), Some(repo)) => page.arg(repo).arg(state.as_str()),
        };
        let rows: Vec<JobRow> = tx.fetch_all(query).await?;
        let mut items = rows.into_iter().map(Job::try_from).collect::<Result<Vec<_>>>()?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(|j| j.id)
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn cancel_job(&self, org: OrgId, job: JobId, actor: &str) -> Result<(Job, Vec<JobEvent>)> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let current = lock_job(&mut tx, org, job).await?;
        current.state.check_transition(JobState::Cancelled)?;
        let at = now();
        let mut events = Vec::new();
        if current.lease.is_some() {
            if !current.cancel_requested {
                tx.execute(
                    q("UPDATE jobs SET cancel_requested = $3, updated_at = $4 WHERE org_id = $1 AND id = $2")
                        .arg(org)
                        .arg(job)
                        .arg(true)
                        .arg(at),
                )
                .await?;
                let event = NewEvent::new(
                    actor,
                    EventKind::CancelRequested,
                    "cancellation requested; the worker stops at its next checkpoint",
                );
                events.push(insert_event(&mut tx, org, job, event).await?);
            }
        } else {
            // Bumping the epoch fences off any worker that still believes it holds the job.
            tx.execute(
                q("UPDATE jobs SET state = 'cancelled', epoch = epoch + 1, finished_at = $3, updated_at = $3 \
                   WHERE org_id = $1 AND id = $2")
                .arg(org)
                .arg(job)
                .arg(at),
            )
            .await?;
            let event = NewEvent::state_changed(actor, current.state, JobState::Cancelled);
            events.push(insert_event(&mut tx, org, job, event).await?);
        }
        let job = fetch_job(&mut tx, org, job).await?;
        tx.commit().await?;
        Ok((job, events))
    }

    async fn count_queued_jobs(&self, org: OrgId) -> Result<u64> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let n: One<i64> =
            tx.fetch_one(q("SELECT COUNT(*) FROM jobs WHERE org_id = $1 AND state = 'queued'").arg(org)).await?;
        tx.commit().await?;
        Ok(u64::try_from(n.0).unwrap_or(0))
    }

    async fn delete_job(&self, org: OrgId, job: JobId) -> Result<()> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let current = lock_job(&mut tx, org, job).await?;
        if !current.state.is_terminal() {
            return Err(Error::Conflict(format!(
                "the job is {}; only finished jobs can be deleted (cancel it first)",
                current.state
            )));
        }
        tx.execute(q("DELETE FROM jobs WHERE org_id = $1 AND id = $2").arg(org).arg(job)).await?;
        tx.commit().await
    }

    async fn append_event(&self, org: OrgId, job: JobId, event: NewEvent) -> Result<JobEvent> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let event =
            insert_event(&mut tx, org, job, event).await.map_err(|e| constraint_error(e, "duplicate event", "job"))?;
        tx.commit().await?;
        Ok(event)
    }

    async fn append_events(&self, org: OrgId, job: JobId, events: Vec<NewEvent>) -> Result<Vec<JobEvent>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let events = insert_events(&mut tx, org, job, events)
            .await
            .map_err(|e| constraint_error(e, "duplicate event", "job"))?;
        tx.commit().await?;
        Ok(events)
    }

    async fn list_events(&self, org: OrgId, job: JobId, after: Option<i64>, limit: u32) -> Result<Vec<JobEvent>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        ensure_job(&mut tx, org, job).await?;
        let rows: Vec<EventRow> = tx
            .fetch_all(
                q(concat!(
                    "SELECT ",
                    event_columns!(),
                    " FROM job_events WHERE org_id = $1 AND job_id = $2 AND id > $3 ORDER BY id LIMIT $4"
                ))
                .arg(org)
                .arg(job)
                .arg(after.unwrap_or(0))
                .arg(int(limit.clamp(1, 1000))),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn record_usage(&self, org: OrgId, usage: NewUsage) -> Result<UsageRecord> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let repo_id = match usage.job_id {
            Some(job) => Some(ensure_job(&mut tx, org, job).await?),
            None => None,
        };
        let (job, spent) = (usage.job_id, (usage.input_tokens.saturating_add(usage.output_tokens), usage.cost_micros));
        let id = usage.id.unwrap_or_default();
        let record = match insert_usage(&mut tx, org, job, repo_id, NewUsage { id: Some(id), ..usage }).await? {
            Some(record) => record,
            None => {
                // Already recorded: nothing more to add up.
                let row: UsageRow = tx
                    .fetch_one(
                        q(concat!("SELECT ", usage_columns!(), " FROM usage_records WHERE org_id = $1 AND id = $2"))
                            .arg(org)
                            .arg(id),
                    )
                    .await?;
                return row.try_into();
            }
        };
        if let Some(job) = job {
            tx.execute(
                q("UPDATE jobs SET spent_tokens = spent_tokens + $3, spent_cost_micros = spent_cost_micros + $4 \
                   WHERE org_id = $1 AND id = $2")
                .arg(org)
                .arg(job)
                .arg(int(spent.0))
                .arg(int(spent.1)),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(record)
    }

    async fn list_usage(&self, org: OrgId, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<UsageRecord>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let rows: Vec<UsageRow> = tx
            .fetch_all(
                q(concat!(
                    "SELECT ",
                    usage_columns!(),
                    " FROM usage_records WHERE org_id = $1 AND at >= $2 AND at < $3 ORDER BY at, id"
                ))
                .arg(org)
                .arg(from)
                .arg(to),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn usage_totals(&self, org: OrgId, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<UsageTotals> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let (input, output, cost, calls): (i64, i64, i64, i64) = tx
            .fetch_one(
                q("SELECT CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
                   CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), \
                   CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT), COUNT(*) \
                   FROM usage_records WHERE org_id = $1 AND at >= $2 AND at < $3")
                .arg(org)
                .arg(from)
                .arg(to),
            )
            .await?;
        let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(UsageTotals {
            input_tokens: non_negative(input),
            output_tokens: non_negative(output),
            cost_micros: non_negative(cost),
            calls: non_negative(calls),
        })
    }

    async fn usage_report(&self, org: OrgId, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<UsageReport> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        // The day of a timestamp, in UTC, as `YYYY-MM-DD` text: PostgreSQL converts from
        // `timestamptz`; SQLite's `date()` reads the stored RFC 3339 text (offset included).
        let by_day_sql = match tx {
            Tx::Postgres(_) => usage_by_day_sql!("to_char(", " AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
            Tx::Sqlite(_) => usage_by_day_sql!("date(", ")"),
        };
        let by_day: Vec<SummaryRow<String>> = tx.fetch_all(q(by_day_sql).arg(org).arg(from).arg(to)).await?;
        let by_repo: Vec<SummaryRow<uuid::Uuid>> =
            tx.fetch_all(q(usage_by_repo_sql!()).arg(org).arg(from).arg(to)).await?;
        let mut by_day = by_day
            .into_iter()
            .map(|r| {
                let day = r.0.parse().map_err(|_| Error::Corrupt(format!("unreadable usage day `{}`", r.0)))?;
                Ok(DayUsage { day, summary: r.summary() })
            })
            .collect::<Result<Vec<_>>>()?;
        by_day.sort_by_key(|d| d.day);
        let mut by_repo: Vec<RepoUsage> =
            by_repo.into_iter().map(|r| RepoUsage { repo_id: r.0.into(), summary: r.summary() }).collect();
        by_repo.sort_by_key(|r| r.repo_id);
        let by_step: Vec<StepRow> = tx.fetch_all(q(USAGE_BY_STEP_SQL).arg(org).arg(from).arg(to)).await?;
        let by_step = by_step
            .into_iter()
            .map(|StepRow(step, model, input, output, cost, calls, prs)| StepUsage {
                step,
                model,
                summary: SummaryRow((), input, output, cost, calls, prs).summary(),
            })
            .collect();
        // Every usage record and every opened pull request of the period falls on exactly one day.
        let mut totals = UsageSummary::default();
        for day in &by_day {
            totals.add(&day.summary);
        }
        Ok(UsageReport { from, to, totals, by_repo, by_day, by_step })
    }
}

pub(crate) async fn fetch_job(tx: &mut Tx, org: OrgId, job: JobId) -> Result<Job> {
    let row: Option<JobRow> = tx
        .fetch_optional(
            q(concat!("SELECT ", job_columns!(), " FROM jobs WHERE org_id = $1 AND id = $2")).arg(org).arg(job),
        )
        .await?;
    row.ok_or(Error::not_found("job"))?.try_into()
}

/// Reads a job after taking its row lock (PostgreSQL) or the write lock (SQLite), so the caller's
/// decision and update are not raced by another writer.
pub(crate) async fn lock_job(tx: &mut Tx, org: OrgId, job: JobId) -> Result<Job> {
    tx.execute(q("UPDATE jobs SET updated_at = updated_at WHERE org_id = $1 AND id = $2").arg(org).arg(job)).await?;
    fetch_job(tx, org, job).await
}

/// Checks the job is the org's and returns its repository.
async fn ensure_job(tx: &mut Tx, org: OrgId, job: JobId) -> Result<crate::RepoId> {
    let repo: Option<One<uuid::Uuid>> =
        tx.fetch_optional(q("SELECT repo_id FROM jobs WHERE org_id = $1 AND id = $2").arg(org).arg(job)).await?;
    repo.map(|r| r.0.into()).ok_or(Error::not_found("job"))
}

pub(crate) async fn insert_event(tx: &mut Tx, org: OrgId, job: JobId, event: NewEvent) -> Result<JobEvent> {
    let row: EventRow = tx
        .fetch_one(
            q(concat!(
                "INSERT INTO job_events (org_id, job_id, at, actor, kind, from_state, to_state, message, data) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
                event_columns!()
            ))
            .arg(org)
            .arg(job)
            .arg(now())
            .arg(event.actor)
            .arg(event.kind.as_str())
            .arg(event.from_state.map(JobState::as_str))
            .arg(event.to_state.map(JobState::as_str))
            .arg(event.message)
            .arg(event.data),
        )
        .await?;
    row.try_into()
}

/// Appends `events` in one statement, in order; returns them as stored, oldest first.
pub(crate) async fn insert_events(tx: &mut Tx, org: OrgId, job: JobId, events: Vec<NewEvent>) -> Result<Vec<JobEvent>> {
    match events.len() {
        0 => return Ok(Vec::new()),
        1 => {
            let event = events.into_iter().next().expect("one event");
            return Ok(vec![insert_event(tx, org, job, event).await?]);
        }
        _ => {}
    }
    let batch: Vec<serde_json::Value> = events
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "actor": e.actor,
                "kind": e.kind.as_str(),
                "from_state": e.from_state.map(JobState::as_str),
                "to_state": e.to_state.map(JobState::as_str),
                "message": e.message,
                "data": e.data,
            })
        })
        .collect();
    let sql = match tx {
        Tx::Postgres(_) => concat!(
            "INSERT INTO job_events (org_id, job_id, at, actor, kind, from_state, to_state, message, data) \
             SELECT $1, $2, $3, e.v->>'actor', e.v->>'kind', e.v->>'from_state', e.v->>'to_state', \
             e.v->>'message', e.v->'data' FROM jsonb_array_elements($4) WITH ORDINALITY AS e(v, n) ORDER BY e.n \
             RETURNING ",
            event_columns!()
        ),
        Tx::Sqlite(_) => concat!(
            "INSERT INTO job_events (org_id, job_id, at, actor, kind, from_state, to_state, message, data) \
             SELECT $1, $2, $3, e.value->>'$.actor', e.value->>'$.kind', e.value->>'$.from_state', \
             e.value->>'$.to_state', e.value->>'$.message', e.value->'$.data' FROM json_each($4) AS e \
             ORDER BY e.key RETURNING ",
            event_columns!()
        ),
    };
    let rows: Vec<EventRow> =
        tx.fetch_all(q(sql).arg(org).arg(job).arg(now()).arg(serde_json::Value::Array(batch))).await?;
    let mut appended = rows.into_iter().map(JobEvent::try_from).collect::<Result<Vec<_>>>()?;
    appended.sort_by_key(|e| e.id);
    Ok(appended)
}

/// Inserts a usage record (of `job` in repository `repo`, if any) and its billable facts (the
/// billing outbox), leaving the job's spent counters to the caller; `None` if a record with its id
/// is already stored.
pub(crate) async fn insert_usage(
    tx: &mut Tx,
    org: OrgId,
    job: Option<JobId>,
    repo: Option<crate::RepoId>,
    usage: NewUsage,
) -> Result<Option<UsageRecord>> {
    let row: Option<UsageRow> = tx
        .fetch_optional(
            q(concat!(
                "INSERT INTO usage_records (id, org_id, job_id, repo_id, step, model, input_tokens, \
                 output_tokens, cost_micros, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (id) DO NOTHING RETURNING ",
                usage_columns!()
            ))
            .arg(usage.id.unwrap_or_default())
            .arg(org)
            .arg(job)
            .arg(repo)
            .arg(usage.step)
            .arg(usage.model)
            .arg(int(usage.input_tokens))
            .arg(int(usage.output_tokens))
            .arg(int(usage.cost_micros))
            .arg(now()),
        )
        .await?;
    let Some(record) = row.map(UsageRecord::try_from).transpose()? else { return Ok(None) };
    let amounts = (record.input_tokens, record.output_tokens, record.cost_micros);
    crate::billing::enqueue_usage(tx, org, job, record.id, amounts, record.at).await?;
    Ok(Some(record))
}
