//! The GitHub App: webhook deliveries in, and org admins linking installations.
//!
//! A delivery is verified (`X-Hub-Signature-256`) before anything in it is read, recorded by its
//! `X-GitHub-Delivery` id (a redelivery of a processed one has no effect; one whose processing
//! failed is processed again), and acted on with database work only: the request never calls
//! GitHub or an agent, so it answers well within GitHub's 10 seconds. Comment commands are only
//! recorded here; the worker checks their author's access through the API and carries them out.

use aicd_core::deliveries::{DeliveryClaim, DeliveryStatus, NewDelivery};
use aicd_core::github::{GithubIntake, GithubRepoInfo, Installation, NewCommand, TriggerSettings};
use aicd_core::jobs::{IssueRef, Trigger};
use aicd_core::repos::Repository;
use aicd_core::{OrgId, Result};
use aicd_github::webhooks::{
    self, CommentAction, InstallationAction, IssueInfo, IssuesAction, PullRequestAction, RepoSummary, WebhookEvent,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::ToSchema;

use super::Items;
use crate::auth::OrgScope;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Path};
use crate::state::AppState;

/// The webhook route's path.
pub(crate) const WEBHOOK_PATH: &str = "/webhooks/github";

/// The largest delivery accepted: GitHub caps payloads at 25 MB.
pub(crate) const MAX_DELIVERY_BYTES: usize = 25 * 1024 * 1024;

/// A delivery left `processing` this long (its server died mid-way) may be processed again.
const STALE_AFTER_SECS: i64 = 300;

/// The login AI-CD attributes actions to when GitHub names no sender (GitHub's own placeholder
/// for deleted accounts).
const UNKNOWN_SENDER: &str = "ghost";

/// What became of a delivery.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveryReply {
    /// The `X-GitHub-Delivery` id.
    delivery_id: String,
    /// `processed`, `ignored` or `duplicate` (already handled; nothing was done again).
    status: &'static str,
    /// What was done, or why nothing was.
    detail: String,
}

/// Receives a GitHub webhook delivery (signed with the App's webhook secret).
///
/// 401 for a missing or wrong signature (nothing is stored), 503 when the server has no webhook
/// secret. Every verified delivery is acknowledged with 200, including events AI-CD ignores;
/// if processing fails (the database is down), the answer is 503 and GitHub's redelivery is
/// processed again.
#[utoipa::path(post, path = "/webhooks/github", tag = "github",
    params(
        ("X-GitHub-Event" = String, Header, description = "The event name"),
        ("X-GitHub-Delivery" = String, Header, description = "The delivery's unique id"),
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` HMAC of the body under the webhook secret"),
    ),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, body = DeliveryReply), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 413, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<DeliveryReply>> {
    let metrics = state.metrics();
    let Some(secret) = state.github().webhook_secret.as_ref() else {
        metrics.webhook("unknown", "disabled");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_disabled",
            "this server does not accept GitHub webhooks: AICD_GITHUB_WEBHOOK_SECRET is not set",
        ));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Err(e) = secret.verify(&body, header("x-hub-signature-256")) {
        metrics.webhook("unknown", "rejected");
        tracing::warn!(error = %e, "webhook delivery refused: bad signature");
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string()));
    }
    let event = header("x-github-event")
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::bad_request("the X-GitHub-Event header is missing"))?;
    let delivery_id = header("x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 200)
        .ok_or_else(|| ApiError::bad_request("the X-GitHub-Delivery header is missing or longer than 200 characters"))?
        .to_owned();
    let parsed = webhooks::parse_delivery(event, &body).map_err(|e| {
        metrics.webhook(event, "malformed");
        ApiError::bad_request(format!("the delivery is not JSON: {e}"))
    })?;
    let new = NewDelivery {
        delivery_id,
        event: event.to_owned(),
        action: parsed.action.map(|a| a.chars().take(100).collect()),
        installation_id: parsed.installation_id.and_then(|id| i64::try_from(id).ok()),
    };
    let span =
        tracing::info_span!("github_delivery", delivery = %new.delivery_id, event, action = new.action.as_deref());
    receive(&state, new, parsed.event).instrument(span).await
}

/// Records a verified delivery and acts on it unless it is a duplicate.
async fn receive(state: &AppState, delivery: NewDelivery, parsed: WebhookEvent) -> ApiResult<Json<DeliveryReply>> {
    let metrics = state.metrics();
    let intake = state.core().github_intake();
    let (delivery_id, event) = (delivery.delivery_id.clone(), delivery.event.clone());
    let event = event.as_str();
    let claim = intake.begin_delivery(delivery, chrono::Duration::seconds(STALE_AFTER_SECS)).await?;
    if let DeliveryClaim::Duplicate(status) = claim {
        metrics.webhook(event, "duplicate");
        tracing::info!(previous = status.as_str(), "delivery already received; nothing done");
        let detail = format!("delivery already received ({})", status.as_str());
        return Ok(Json(DeliveryReply { delivery_id, status: "duplicate", detail }));
    }
    let handler = Handler { intake: intake.clone(), bot_login: state.github().bot_login.as_deref() };
    match handler.handle(parsed).await {
        Ok(Handled::Processed(detail)) => {
            intake.finish_delivery(&delivery_id, DeliveryStatus::Processed, None).await?;
            metrics.webhook(event, "processed");
            tracing::info!(%detail, "delivery processed");
            Ok(Json(DeliveryReply { delivery_id, status: "processed", detail }))
        }
        Ok(Handled::Ignored(detail)) => {
            intake.finish_delivery(&delivery_id, DeliveryStatus::Ignored, Some(&detail)).await?;
            metrics.webhook(event, "ignored");
            tracing::info!(reason = %detail, "delivery ignored");
            Ok(Json(DeliveryReply { delivery_id, status: "ignored", detail }))
        }
        Err(error) => {
            metrics.webhook(event, "failed");
            tracing::warn!(%error, "delivery processing failed; a redelivery is processed again");
            if let Err(e) = intake.finish_delivery(&delivery_id, DeliveryStatus::Failed, Some(&error.to_string())).await
            {
                tracing::warn!(error = %e, "could not record the failure (the delivery is retaken once stale)");
            }
            Err(ApiError::unavailable("the delivery could not be processed; redeliver it")
                .with_retry_after(std::time::Duration::from_secs(30)))
        }
    }
}

/// What a verified delivery led to.
enum Handled {
    Processed(String),
    Ignored(String),
}

/// Acts on one parsed event, with database work only.
struct Handler<'a> {
    intake: GithubIntake,
    bot_login: Option<&'a str>,
}

impl Handler<'_> {
    /// Errors are the ones worth a redelivery (the database failed); what a payload gets wrong is
    /// [`Handled::Ignored`].
    async fn handle(&self, event: WebhookEvent) -> Result<Handled> {
        let outcome = match event {
            WebhookEvent::Ping(ping) => Ok(Handled::Processed(format!(
                "pong{}",
                ping.hook_id.map(|h| format!(" (hook {h})")).unwrap_or_default()
            ))),
            WebhookEvent::Installation(e) => self.installation(e).await,
            WebhookEvent::InstallationRepositories(e) => self.repositories(e).await,
            WebhookEvent::Issues(e) => self.issues(e).await,
            WebhookEvent::IssueComment(e) => self.comment(e).await,
            WebhookEvent::PullRequest(e) => self.pull_request(e).await,
            WebhookEvent::Ignored(ignored) => Ok(Handled::Ignored(ignored.reason)),
            _ => Ok(Handled::Ignored("not an event AI-CD handles".to_owned())),
        };
        match outcome {
            // What a payload gets wrong (an odd login, a title too long) is not worth a redelivery.
            Err(aicd_core::Error::InvalidInput(reason)) => Ok(Handled::Ignored(format!("unusable payload: {reason}"))),
            Err(aicd_core::Error::NotFound { kind }) => Ok(Handled::Ignored(format!("{kind} not found"))),
            other => other,
        }
    }

    /// The linked, active organization of an installation; the reason to ignore the event otherwise.
    async fn org_of(&self, installation_id: Option<u64>) -> Result<std::result::Result<OrgId, String>> {
        let Some(id) = installation_id.and_then(|i| i64::try_from(i).ok()) else {
            return Ok(Err("the delivery names no installation".to_owned()));
        };
        Ok(match self.intake.installation(id).await? {
            None => Err(format!("installation {id} is not linked to an organization")),
            Some(Installation { suspended: true, .. }) => Err(format!("installation {id} is suspended")),
            Some(installation) => Ok(installation.org_id),
        })
    }

    /// The organization and registered repository an event is about.
    async fn repo_of(
        &self,
        installation_id: Option<u64>,
        repo_id: u64,
    ) -> Result<std::result::Result<(OrgId, Repository), String>> {
        let org = match self.org_of(installation_id).await? {
            Ok(org) => org,
            Err(reason) => return Ok(Err(reason)),
        };
        let Ok(github_id) = i64::try_from(repo_id) else { return Ok(Err("invalid repository id".to_owned())) };
        Ok(match self.intake.find_github_repo(org, github_id).await? {
            Some(repo) => Ok((org, repo)),
            None => Err(format!("repository {repo_id} is not registered with the installation's organization")),
        })
    }

    async fn installation(&self, e: webhooks::InstallationEvent) -> Result<Handled> {
        let Ok(id) = i64::try_from(e.installation_id) else {
            return Ok(Handled::Ignored("invalid installation id".into()));
        };
        match e.action {
            InstallationAction::Created => match self.org_of(Some(e.installation_id)).await? {
                Ok(org) => {
                    let sync = self.intake.sync_github_repos(org, id, &repo_infos(&e.repositories), &[]).await?;
                    Ok(Handled::Processed(format!("{} repositories registered", sync.upserted.len())))
                }
                Err(reason) => Ok(Handled::Ignored(reason)),
            },
            InstallationAction::Deleted => Ok(match self.intake.remove_installation(id).await? {
                Some(_) => Handled::Processed(format!("installation {id} unlinked")),
                None => Handled::Ignored(format!("installation {id} was not linked")),
            }),
            InstallationAction::Suspend | InstallationAction::Unsuspend => {
                let suspended = e.action == InstallationAction::Suspend;
                Ok(match self.intake.set_installation_suspended(id, suspended).await? {
                    Some(_) if suspended => Handled::Processed(format!("installation {id} suspended")),
                    Some(_) => Handled::Processed(format!("installation {id} unsuspended")),
                    None => Handled::Ignored(format!("installation {id} is not linked to an organization")),
                })
            }
            InstallationAction::Other(action) => Ok(Handled::Ignored(format!("installation action `{action}`"))),
        }
    }

    async fn repositories(&self, e: webhooks::InstallationRepositoriesEvent) -> Result<Handled> {
        let org = match self.org_of(Some(e.installation_id)).await? {
            Ok(org) => org,
            Err(reason) => return Ok(Handled::Ignored(reason)),
        };
        let Ok(id) = i64::try_from(e.installation_id) else {
            return Ok(Handled::Ignored("invalid installation id".into()));
        };
        let removed: Vec<i64> = e.removed.iter().filter_map(|r| i64::try_from(r.id).ok()).collect();
        let sync = self.intake.sync_github_repos(org, id, &repo_infos(&e.added), &removed).await?;
        for skipped in &sync.skipped {
            tracing::warn!(repo = %skipped.repo.full_name, reason = %skipped.reason, "repository not registered");
        }
        Ok(Handled::Processed(format!(
            "{} registered, {} removed, {} kept (active job), {} skipped",
            sync.upserted.len(),
            sync.removed.len(),
            sync.kept.len(),
            sync.skipped.len()
        )))
    }

    async fn issues(&self, e: webhooks::IssuesEvent) -> Result<Handled> {
        if e.issue.is_pull_request {
            return Ok(Handled::Ignored("the issue is a pull request".into()));
        }
        let (org, repo) = match self.repo_of(e.installation_id, e.repository.id).await? {
            Ok(found) => found,
            Err(reason) => return Ok(Handled::Ignored(reason)),
        };
        let sender = e.sender_login.as_deref().unwrap_or(UNKNOWN_SENDER);
        if e.action == IssuesAction::Closed {
            return Ok(match self.intake.cancel_issue_job(org, repo.id, e.issue.number, sender).await? {
                Some(job) => Handled::Processed(format!("issue closed: job {} cancelled", job.id)),
                None => Handled::Ignored("issue closed; no job to cancel".into()),
            });
        }
        let triggers = self.intake.trigger_settings(org, &repo).await?;
        let trigger = match &e.action {
            IssuesAction::Labeled if e.label.as_deref().is_some_and(|l| triggers.matches_label(l)) => Trigger::Label,
            IssuesAction::Opened if e.issue.labels.iter().any(|l| triggers.matches_label(l)) => Trigger::Label,
            IssuesAction::Assigned if triggers.assignment && self.is_bot(e.assignee.as_deref()) => Trigger::Assignment,
            IssuesAction::Labeled | IssuesAction::Opened | IssuesAction::Assigned => {
                return Ok(Handled::Ignored(not_a_trigger(&triggers)));
            }
            IssuesAction::Closed => unreachable!("handled above"),
            IssuesAction::Other(action) => return Ok(Handled::Ignored(format!("issues action `{action}`"))),
        };
        if e.issue.state == "closed" {
            return Ok(Handled::Ignored("the issue is closed".into()));
        }
        let outcome = self.intake.start_issue_job(org, repo.id, issue_ref(&e.issue), trigger, sender).await?;
        Ok(Handled::Processed(if outcome.is_created() {
            format!("job {} queued", outcome.job().id)
        } else {
            format!("the issue already has an active job ({})", outcome.job().id)
        }))
    }

    async fn comment(&self, e: webhooks::IssueCommentEvent) -> Result<Handled> {
        if e.action != CommentAction::Created {
            return Ok(Handled::Ignored("only new comments carry commands".into()));
        }
        let Some(command) = webhooks::parse_command(&e.comment.body) else {
            return Ok(Handled::Ignored("no /aicd command".into()));
        };
        if e.issue.is_pull_request {
            return Ok(Handled::Ignored("commands are given on issues, not pull requests".into()));
        }
        let Some(login) = e.comment.user_login.clone() else {
            return Ok(Handled::Ignored("the comment has no author".into()));
        };
        if login.ends_with("[bot]") {
            return Ok(Handled::Ignored("commands from bots are not obeyed".into()));
        }
        let (org, repo) = match self.repo_of(e.installation_id, e.repository.id).await? {
            Ok(found) => found,
            Err(reason) => return Ok(Handled::Ignored(reason)),
        };
        if !self.intake.trigger_settings(org, &repo).await?.commands {
            return Ok(Handled::Ignored("comment commands are turned off for this repository".into()));
        }
        let Ok(comment_id) = i64::try_from(e.comment.id) else {
            return Ok(Handled::Ignored("invalid comment id".into()));
        };
        let new = NewCommand {
            repo_id: repo.id,
            issue_number: e.issue.number,
            command,
            login,
            comment_id,
            issue: Some(issue_ref(&e.issue)),
        };
        let recorded = self.intake.enqueue_command(org, new).await?;
        Ok(Handled::Processed(format!("command {} recorded for the worker", recorded.id)))
    }

    async fn pull_request(&self, e: webhooks::PullRequestEvent) -> Result<Handled> {
        if e.action != PullRequestAction::Closed {
            return Ok(Handled::Ignored("only closed pull requests matter".into()));
        }
        let (org, repo) = match self.repo_of(e.installation_id, e.repository.id).await? {
            Ok(found) => found,
            Err(reason) => return Ok(Handled::Ignored(reason)),
        };
        Ok(match self.intake.close_pull_request(org, repo.id, e.number, e.merged).await? {
            Some(job) => Handled::Processed(format!("job {} is {}", job.id, job.state)),
            None => Handled::Ignored("no job waits on this pull request".into()),
        })
    }

    fn is_bot(&self, assignee: Option<&str>) -> bool {
        matches!((self.bot_login, assignee), (Some(bot), Some(who)) if bot.eq_ignore_ascii_case(who))
    }
}

fn not_a_trigger(triggers: &TriggerSettings) -> String {
    match &triggers.label {
        Some(label) => format!("not a trigger (the trigger label is `{label}`)"),
        None => "not a trigger (label triggers are turned off)".to_owned(),
    }
}

fn repo_infos(repos: &[RepoSummary]) -> Vec<GithubRepoInfo> {
    repos
        .iter()
        .filter_map(|r| {
            Some(GithubRepoInfo {
                repo_id: i64::try_from(r.id).ok()?,
                full_name: r.full_name.clone(),
                default_branch: None,
            })
        })
        .collect()
}

fn issue_ref(issue: &IssueInfo) -> IssueRef {
    IssueRef {
        number: Some(issue.number),
        title: issue.title.clone(),
        body: issue.body.clone(),
        url: (!issue.html_url.is_empty()).then(|| issue.html_url.clone()),
        author: issue.user_login.clone(),
    }
}

/// An installation to link.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkInstallation {
    /// GitHub's id of the App installation (from the installation's settings URL or the App's
    /// setup redirect).
    installation_id: i64,
    /// The GitHub account (organization or user) it is installed on.
    account_login: Option<String>,
}

/// Lists the GitHub App installations linked to the organization.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/github/installations", tag = "github", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 200, body = Items<Installation>), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list_installations(
    State(state): State<AppState>,
    scope: OrgScope,
) -> ApiResult<Json<Items<Installation>>> {
    Ok(Json(state.core().list_installations(&scope.actor, scope.org).await?.into()))
}

/// A linked installation, and what became of its repositories.
#[derive(Serialize, ToSchema)]
pub(crate) struct LinkedInstallation {
    #[serde(flatten)]
    installation: Installation,
    /// How many of the installation's repositories were registered with the organization (`null`
    /// when they could not be listed; they then follow the installation's later events).
    repositories_synced: Option<usize>,
    /// Why the repositories could not be listed, if they could not.
    sync_error: Option<String>,
}

/// Links a GitHub App installation to the organization (org_admin): its webhook events start
/// jobs here from then on, and its repositories are registered (listed through the App when it
/// is configured; later they follow `installation_repositories` events). An installation
/// belongs to one organization: 409 if another has linked it; 422 if GitHub says it does not
/// exist.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/github/installations", tag = "github", security(("bearer" = [])),
    request_body = LinkInstallation,
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 201, body = LinkedInstallation), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn link_installation(
    State(state): State<AppState>,
    scope: OrgScope,
    Body(body): Body<LinkInstallation>,
) -> ApiResult<(StatusCode, Json<LinkedInstallation>)> {
    let id = body.installation_id;
    let installation = state.core().link_installation(&scope.actor, scope.org, id, body.account_login).await?;
    let (repositories_synced, sync_error) = match sync_linked(&state, scope.org, id).await {
        Ok(synced) => (synced, None),
        Err(aicd_core::Error::Rejected { message, .. }) => {
            // GitHub does not know the installation (or refuses the App on it): undo the link.
            state.core().unlink_installation(&scope.actor, scope.org, id).await?;
            return Err(ApiError::invalid(format!("GitHub App installation {id} cannot be used: {message}")));
        }
        Err(error) => {
            tracing::warn!(installation = id, %error, "could not list a newly linked installation's repositories");
            (None, Some(error.to_string()))
        }
    };
    Ok((StatusCode::CREATED, Json(LinkedInstallation { installation, repositories_synced, sync_error })))
}

/// Registers the repositories of a newly linked installation; `None` without a configured App.
async fn sync_linked(state: &AppState, org: OrgId, installation_id: i64) -> Result<Option<usize>> {
    let Some(tokens) = state.github().tokens.clone() else { return Ok(None) };
    let id =
        u64::try_from(installation_id).map_err(|_| aicd_core::Error::InvalidInput("invalid installation id".into()))?;
    let listed = aicd_github::InstallationClient::new(tokens, id).repositories().await?;
    let repos: Vec<GithubRepoInfo> = listed
        .into_iter()
        .filter_map(|r| {
            Some(GithubRepoInfo {
                repo_id: i64::try_from(r.id).ok()?,
                full_name: r.full_name,
                default_branch: r.default_branch,
            })
        })
        .collect();
    let sync = state.core().github_intake().sync_github_repos(org, installation_id, &repos, &[]).await?;
    Ok(Some(sync.upserted.len()))
}

/// Unlinks a GitHub App installation (org_admin): its events are ignored from then on.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/github/installations/{installation_id}", tag = "github",
    security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"),
        ("installation_id" = i64, Path, description = "GitHub's installation id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn unlink_installation(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, installation_id)): Path<(OrgId, i64)>,
) -> ApiResult<StatusCode> {
    state.core().unlink_installation(&scope.actor, scope.org, installation_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
