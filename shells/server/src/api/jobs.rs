//! Jobs, their timelines (as pages and as a live stream), their diffs, and usage.

use std::convert::Infallible;
use std::time::Duration;

use aicd_core::diff::JobDiff;
use aicd_core::jobs::{CreateJob, Job, JobEvent, JobFilter, JobState, Page, Trigger, UsageReport};
use aicd_core::{JobId, OrgId, RepoId};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;

use super::Items;
use crate::auth::OrgScope;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Path, Query};
use crate::state::AppState;

/// Starts a job: it is queued at once and a worker picks it up (developer).
#[utoipa::path(post, path = "/v1/orgs/{org_id}/jobs", tag = "jobs", security(("bearer" = [])), request_body = CreateJob,
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 201, body = Job), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn create_job(
    State(state): State<AppState>,
    scope: OrgScope,
    Body(body): Body<CreateJob>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    let job = body.into_new_job(Trigger::Api);
    Ok((StatusCode::CREATED, Json(state.core().create_job(&scope.actor, scope.org, job).await?)))
}

/// Filters and cursor of the job listing.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListJobs {
    /// Only jobs in this state (`queued`, `planning`, `coding`, `reviewing`, `pr_open`, `merged`,
    /// `closed`, `failed`, `cancelled`).
    #[param(value_type = Option<String>)]
    state: Option<JobState>,
    /// Only jobs of this repository.
    #[param(value_type = Option<uuid::Uuid>)]
    repo_id: Option<RepoId>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<uuid::Uuid>)]
    cursor: Option<JobId>,
    /// Page size, 1 to 100 (default 50).
    limit: Option<u32>,
}

/// Lists jobs, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/jobs", tag = "jobs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ListJobs),
    responses((status = 200, body = Page<Job>), (status = 404, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn list_jobs(
    State(state): State<AppState>,
    scope: OrgScope,
    Query(query): Query<ListJobs>,
) -> ApiResult<Json<Page<Job>>> {
    if query.limit.is_some_and(|l| !(1..=JobFilter::MAX_LIMIT).contains(&l)) {
        return Err(ApiError::invalid(format!("limit must be from 1 to {}", JobFilter::MAX_LIMIT)));
    }
    let filter = JobFilter { state: query.state, repo_id: query.repo_id, before: query.cursor, limit: query.limit };
    Ok(Json(state.core().list_jobs(&scope.actor, scope.org, filter).await?))
}

/// Reads a job: its state, checkpoints (plan, changeset, review), attempts, spend and pull request.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/jobs/{job_id}", tag = "jobs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("job_id" = uuid::Uuid, Path, description = "Job id")),
    responses((status = 200, body = Job), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_job(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, job)): Path<(OrgId, JobId)>,
) -> ApiResult<Json<Job>> {
    Ok(Json(state.core().get_job(&scope.actor, scope.org, job).await?))
}

/// Cancels a job that has not opened its pull request yet; a running step is interrupted
/// (developer). 409 when it has already ended.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/jobs/{job_id}/cancel", tag = "jobs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("job_id" = uuid::Uuid, Path, description = "Job id")),
    responses((status = 200, body = Job), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn cancel_job(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, job)): Path<(OrgId, JobId)>,
) -> ApiResult<Json<Job>> {
    Ok(Json(state.core().cancel_job(&scope.actor, scope.org, job).await?))
}

/// Starts a new job for the issue of a failed or cancelled one (developer). 409 otherwise.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/jobs/{job_id}/retry", tag = "jobs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("job_id" = uuid::Uuid, Path, description = "Job id")),
    responses((status = 201, body = Job), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn retry_job(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, job)): Path<(OrgId, JobId)>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    Ok((StatusCode::CREATED, Json(state.core().retry_job(&scope.actor, scope.org, job).await?)))
}

/// Paging through a timeline.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListEvents {
    /// Only events after this id.
    after: Option<i64>,
    /// At most this many, 1 to 500 (default 100).
    limit: Option<u32>,
}

/// A job's timeline, oldest first.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/jobs/{job_id}/events", tag = "jobs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("job_id" = uuid::Uuid, Path, description = "Job id"), ListEvents),
    responses((status = 200, body = Items<JobEvent>), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list_events(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, job)): Path<(OrgId, JobId)>,
    Query(query): Query<ListEvents>,
) -> ApiResult<Json<Items<JobEvent>>> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit must be from 1 to 500"));
    }
    Ok(Json(state.core().list_events(&scope.actor, scope.org, job, query.after, limit).await?.into()))
}

/// How often a live stream re-reads the timeline in case a published event was missed (Redis
/// down, a slow subscriber).
const STREAM_RESYNC: Duration = Duration::from_secs(3);
const STREAM_PAGE: u32 = 200;

/// A job's timeline as Server-Sent Events: the events so far (after `Last-Event-ID` when
/// reconnecting), then each new one as it happens, from any worker or replica. Each event's `id`
/// is its timeline position and its `event` its kind; the data is the event as JSON. The stream
/// ends once the job has settled (its pull request is open, or it reached a final state), and
/// after `AICD_STREAM_MAX_SECS` in any case (reconnect with `Last-Event-ID`). A reconnection to a
/// settled job with nothing after its `Last-Event-ID` answers 204, so EventSource clients stop.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/jobs/{job_id}/events/stream", tag = "jobs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("job_id" = uuid::Uuid, Path, description = "Job id"),
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event")),
    responses((status = 200, description = "text/event-stream of JobEvent", content_type = "text/event-stream"),
        (status = 204, description = "The job has settled and nothing follows Last-Event-ID: stop reconnecting"),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn stream_events(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, job_id)): Path<(OrgId, JobId)>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let after = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::invalid("Last-Event-ID must be an event id"))?,
        ),
    };
    // Subscribe before reading the timeline, so nothing falls between the two.
    let live = state.bus().subscribe();
    let job = state.core().get_job(&scope.actor, scope.org, job_id).await?;
    if let Some(after) = after
        && settled(job.state)
        && state.core().list_events(&scope.actor, scope.org, job.id, Some(after), 1).await?.is_empty()
    {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (tx, rx) = mpsc::channel::<Event>(64);
    let until = tokio::time::Instant::now() + state.settings().stream_max;
    tokio::spawn(feed(state, scope, job, after, live, tx, until));
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

/// Whether a stream of a job in `state` has nothing more to wait for: its pull request is open
/// (later changes, a merge, come from GitHub, possibly days later) or it reached a final state.
fn settled(state: JobState) -> bool {
    state == JobState::PrOpen || state.is_terminal()
}

/// Sends the timeline after `after`, then live events, until the job has settled, the client
/// goes away, `until` comes or the server shuts down.
async fn feed(
    state: AppState,
    scope: OrgScope,
    job: Job,
    mut after: Option<i64>,
    mut live: broadcast::Receiver<JobEvent>,
    tx: mpsc::Sender<Event>,
    until: tokio::time::Instant,
) {
    let mut shutdown = state.shutdown_signal();
    let mut resync = tokio::time::interval(STREAM_RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut finished = settled(job.state);
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Catch up from the timeline (the source of truth).
        loop {
            let page = match state.core().list_events(&scope.actor, scope.org, job.id, after, STREAM_PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, job_id = %job.id, "live stream cannot read the timeline");
                    break;
                }
            };
            let full = page.len() == STREAM_PAGE as usize;
            for event in page {
                finished |= event.to_state.is_some_and(settled);
                after = Some(event.id);
                if tx.send(sse_event(&event)).await.is_err() {
                    return;
                }
            }
            if !full {
                break;
            }
        }
        if finished {
            return;
        }
        tokio::select! {
            received = live.recv() => match received {
                Ok(event) if event.job_id == job.id && event.org_id == scope.org => {
                    if after.is_none_or(|a| event.id == a + 1) {
                        finished |= event.to_state.is_some_and(settled);
                        after = Some(event.id);
                        if tx.send(sse_event(&event)).await.is_err() {
                            return;
                        }
                    }
                    // Otherwise a gap or a duplicate: the catch-up read above settles it.
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => tokio::time::sleep(STREAM_RESYNC).await,
            },
            _ = resync.tick() => {}
            _ = tx.closed() => return,
            _ = shutdown.changed() => return,
            () = tokio::time::sleep_until(until) => return,
        }
    }
}

fn sse_event(event: &JobEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned());
    Event::default().id(event.id.to_string()).event(event.kind.as_str()).data(data)
}

/// The changes a job made (or proposes), as a git-style unified diff with a per-file summary.
/// 409 before the coder has produced a changeset.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/jobs/{job_id}/diff", tag = "jobs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("job_id" = uuid::Uuid, Path, description = "Job id")),
    responses((status = 200, body = JobDiff), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn job_diff(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, job)): Path<(OrgId, JobId)>,
) -> ApiResult<Json<JobDiff>> {
    Ok(Json(state.core().job_diff(&scope.actor, scope.org, job, state.forge()).await?))
}

/// The period of a usage report.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UsageQuery {
    /// Start (inclusive): RFC 3339 time or `YYYY-MM-DD` (UTC midnight). Default: 30 days before `to`.
    from: Option<String>,
    /// End (exclusive): RFC 3339 time or `YYYY-MM-DD`. Default: now.
    to: Option<String>,
}

/// Tokens, cost and pull requests over a period, in total, per repository and per day.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/usage", tag = "usage", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), UsageQuery),
    responses((status = 200, body = UsageReport), (status = 404, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn usage(
    State(state): State<AppState>,
    scope: OrgScope,
    Query(query): Query<UsageQuery>,
) -> ApiResult<Json<UsageReport>> {
    let to = query.to.as_deref().map(|t| parse_time("to", t)).transpose()?.unwrap_or_else(Utc::now);
    let from =
        query.from.as_deref().map(|f| parse_time("from", f)).transpose()?.unwrap_or(to - chrono::Duration::days(30));
    Ok(Json(state.core().usage_report(&scope.actor, scope.org, from, to).await?))
}

fn parse_time(name: &str, value: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map(|day| day.and_time(NaiveTime::MIN).and_utc())
        .map_err(|_| ApiError::invalid(format!("`{name}` must be an RFC 3339 time or a YYYY-MM-DD date")))
}
