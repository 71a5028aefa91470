//! What a verified webhook delivery does: the rules from GitHub's events to AI-CD's jobs, with
//! database work only (no GitHub call, no agent call), so the answer comes within GitHub's ten
//! seconds.
//!
//! A delivery becomes a [`VerifiedDelivery`] only through [`VerifiedDelivery::verify`], which
//! checks its `X-Hub-Signature-256`; [`Intake::receive`] then records it (by delivery id and by a
//! hash of its body, so a replayed body under a new id is a duplicate) and acts on it:
//!
//! | event | what happens |
//! |---|---|
//! | `issues.labeled` with the trigger label, `issues.opened` carrying it | a `run` is recorded for the worker to check the sender's (and an opened issue's author's) access |
//! | `issues.assigned` to `<slug>[bot]` | the same, for the assignment |
//! | `issues.closed` | the issue's unfinished job is cancelled |
//! | `issue_comment.created` with `/aicd run|cancel|retry` | the command is recorded for the same check |
//! | `pull_request.closed` | the job that opened it becomes `merged` or `closed` |
//! | `installation.*`, `installation_repositories.*` | repositories follow the installation; removed ones are detached |
//!
//! Nothing that could start a job on someone's word does so here: labels, assignments and
//! commands are recorded, and the worker's [`crate::CommandProcessor`] starts the job only after
//! GitHub says the person has write access. Triggers from bot accounts are ignored unless the
//! repository's `triggers.bots` setting allows them, and the App's own bot never triggers
//! anything (its comments and labels would otherwise start jobs of their own).

use aicd_core::Core;
use aicd_core::deliveries::{DeliveryClaim, DeliveryStatus, NewDelivery};
use aicd_core::github::{
    CommandKind, CommandSource, GithubIntake, GithubRepoId, GithubRepoInfo, Installation, InstallationId, NewCommand,
    TriggerSettings,
};
use aicd_core::jobs::IssueRef;
use aicd_core::repos::Repository;
use aicd_core::{OrgId, Result as CoreResult};
use sha2::{Digest, Sha256};
use tracing::Instrument;

use crate::webhooks::{
    self, CommentAction, InstallationAction, IssueInfo, IssuesAction, PullRequestAction, RepoSummary, WebhookEvent,
    WebhookSecret,
};
use crate::{Error, Result};

/// The login AI-CD attributes actions to when GitHub names no sender (GitHub's own placeholder
/// for deleted accounts).
const UNKNOWN_SENDER: &str = "ghost";

/// The longest delivery id accepted.
const MAX_DELIVERY_ID_CHARS: usize = 200;

/// A delivery left `processing` this long (its server died mid-way) may be processed again.
const STALE_AFTER_SECS: i64 = 300;

/// The `X-GitHub-Event` and `X-GitHub-Delivery` headers, trimmed, if present (an id of 1 to 200
/// characters).
fn delivery_headers<'a>(event: Option<&'a str>, delivery_id: Option<&'a str>) -> Result<(&'a str, &'a str)> {
    let event = event
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .ok_or(Error::MalformedDelivery("the X-GitHub-Event header is missing"))?;
    let delivery_id = delivery_id
        .map(str::trim)
        .filter(|d| !d.is_empty() && d.chars().count() <= MAX_DELIVERY_ID_CHARS)
        .ok_or(Error::MalformedDelivery("the X-GitHub-Delivery header is missing or longer than 200 characters"))?;
    Ok((event, delivery_id))
}

/// A delivery whose signature was checked against the webhook secret. Only
/// [`VerifiedDelivery::verify`] makes one.
#[derive(Clone, Debug)]
pub struct VerifiedDelivery<'a> {
    delivery_id: &'a str,
    event: &'a str,
    body: &'a [u8],
}

impl<'a> VerifiedDelivery<'a> {
    /// Checks a delivery as GitHub sent it: the `X-Hub-Signature-256` header (`signature`) against
    /// the raw `body` under `secret`, first and in constant time
    /// ([`Error::MissingSignature`], [`Error::MalformedSignature`], [`Error::BadSignature`]: answer
    /// them 401 and store nothing); then the `X-GitHub-Event` (`event`) and `X-GitHub-Delivery`
    /// (`delivery_id`, 1 to 200 characters) headers ([`Error::MalformedDelivery`]).
    pub fn verify(
        secret: &WebhookSecret,
        signature: Option<&str>,
        event: Option<&'a str>,
        delivery_id: Option<&'a str>,
        body: &'a [u8],
    ) -> Result<Self> {
        secret.verify(body, signature)?;
        let (event, delivery_id) = delivery_headers(event, delivery_id)?;
        Ok(Self { delivery_id, event, body })
    }

    /// Checks a delivery's headers before its body is read, so a route can refuse a malformed
    /// request before spending anything on it: the signature header has GitHub's form (`sha256=`
    /// and 64 hex digits; [`Error::MissingSignature`], [`Error::MalformedSignature`]), and the
    /// event and delivery id are there ([`Error::MalformedDelivery`]). Proves nothing: only
    /// [`VerifiedDelivery::verify`] does.
    pub fn check_headers(signature: Option<&str>, event: Option<&str>, delivery_id: Option<&str>) -> Result<()> {
        crate::webhooks::signature_digest(signature)?;
        delivery_headers(event, delivery_id).map(drop)
    }

    /// The `X-GitHub-Delivery` id.
    pub fn delivery_id(&self) -> &str {
        self.delivery_id
    }

    /// The `X-GitHub-Event` name.
    pub fn event(&self) -> &str {
        self.event
    }
}

/// What became of a delivery ([`Intake::receive`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Acted on.
    Processed,
    /// Recorded and deliberately not acted on (an event AI-CD does not handle, an unlinked
    /// installation, a trigger that is turned off).
    Ignored,
    /// Already received (the same delivery id, or the same body under another id): nothing was
    /// done again.
    Duplicate,
}

impl Disposition {
    /// `processed`, `ignored` or `duplicate`.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Processed => "processed",
            Disposition::Ignored => "ignored",
            Disposition::Duplicate => "duplicate",
        }
    }
}

/// A received delivery's outcome: what became of it, and what was done or why nothing was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// What became of it.
    pub disposition: Disposition,
    /// What was done, or why nothing was.
    pub detail: String,
}

/// The webhook rules over the core's [`GithubIntake`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Intake {
    github: GithubIntake,
    bot_login: Option<String>,
}

impl Intake {
    /// The intake over `core`'s store, event bus and doorbell. Assignment triggers need the App's
    /// bot user ([`Intake::with_bot_login`]).
    pub fn new(core: &Core) -> Self {
        Self { github: core.github_intake(), bot_login: None }
    }

    /// Assigning an issue to `bot_login` (the App's `<slug>[bot]`) starts a job.
    #[must_use]
    pub fn with_bot_login(mut self, bot_login: Option<String>) -> Self {
        self.bot_login = bot_login;
        self
    }

    /// Records `delivery` and acts on it, unless it is a duplicate (its delivery id was already
    /// processed or ignored, or its body was already received under another id).
    ///
    /// Fails with [`Error::MalformedPayload`] when the body is not JSON (answer 400; it is not
    /// recorded), and with [`Error::Core`] when the database fails (answer 503: the delivery is
    /// recorded as failed, and GitHub's redelivery is processed again). What a payload gets wrong
    /// otherwise (an odd login, an unknown repository) is [`Disposition::Ignored`] with the
    /// reason.
    pub async fn receive(&self, delivery: VerifiedDelivery<'_>) -> Result<Received> {
        let parsed = webhooks::parse_delivery(delivery.event, delivery.body)?;
        let new = NewDelivery {
            delivery_id: delivery.delivery_id.to_owned(),
            event: delivery.event.to_owned(),
            action: parsed.action.map(|a| a.chars().take(100).collect()),
            installation_id: parsed.installation_id.and_then(|id| InstallationId::from_u64(id).ok()),
            body_sha256: Some(Sha256::digest(delivery.body).to_vec()),
        };
        let span = tracing::info_span!(
            "github_delivery",
            delivery = %new.delivery_id,
            event = delivery.event,
            action = new.action.as_deref()
        );
        self.process(new, parsed.event).instrument(span).await.map_err(Error::Core)
    }

    async fn process(&self, delivery: NewDelivery, event: WebhookEvent) -> CoreResult<Received> {
        let delivery_id = delivery.delivery_id.clone();
        let stale_after = chrono::Duration::seconds(STALE_AFTER_SECS);
        if let DeliveryClaim::Duplicate(status) = self.github.begin_delivery(delivery, stale_after).await? {
            tracing::info!(previous = status.as_str(), "delivery already received; nothing done");
            let detail = format!("delivery already received ({})", status.as_str());
            return Ok(Received { disposition: Disposition::Duplicate, detail });
        }
        let handler = Handler { github: &self.github, bot_login: self.bot_login.as_deref(), delivery_id: &delivery_id };
        let (disposition, detail, status) = match handler.handle(event).await {
            Ok(Handled::Processed(detail)) => (Disposition::Processed, detail, DeliveryStatus::Processed),
            Ok(Handled::Ignored(detail)) => (Disposition::Ignored, detail, DeliveryStatus::Ignored),
            Err(error) => {
                tracing::warn!(%error, "delivery processing failed; a redelivery is processed again");
                let message = error.to_string();
                let recorded = self.github.finish_delivery(&delivery_id, DeliveryStatus::Failed, Some(&message));
                if let Err(e) = recorded.await {
                    tracing::warn!(error = %e, "could not record the failure (the delivery is retaken once stale)");
                }
                return Err(error);
            }
        };
        let error = (status == DeliveryStatus::Ignored).then_some(detail.as_str());
        self.github.finish_delivery(&delivery_id, status, error).await?;
        tracing::info!(status = disposition.as_str(), %detail, "delivery handled");
        Ok(Received { disposition, detail })
    }
}

/// What a verified delivery led to.
enum Handled {
    Processed(String),
    Ignored(String),
}

/// Acts on one parsed event, with database work only.
struct Handler<'a> {
    github: &'a GithubIntake,
    bot_login: Option<&'a str>,
    delivery_id: &'a str,
}

impl Handler<'_> {
    /// Errors are the ones worth a redelivery (the database failed); what a payload gets wrong is
    /// [`Handled::Ignored`].
    async fn handle(&self, event: WebhookEvent) -> CoreResult<Handled> {
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
        };
        match outcome {
            // What a payload gets wrong (an odd login, a title too long) is not worth a redelivery.
            Err(aicd_core::Error::InvalidInput(reason)) => Ok(Handled::Ignored(format!("unusable payload: {reason}"))),
            Err(aicd_core::Error::NotFound { kind }) => Ok(Handled::Ignored(format!("{kind} not found"))),
            other => other,
        }
    }

    /// The linked, active organization of an installation; the reason to ignore the event otherwise.
    async fn org_of(&self, installation_id: Option<u64>) -> CoreResult<Result<(OrgId, InstallationId), String>> {
        let Some(id) = installation_id.and_then(|i| InstallationId::from_u64(i).ok()) else {
            return Ok(Err("the delivery names no installation".to_owned()));
        };
        Ok(match self.github.installation(id).await? {
            None => Err(format!("installation {id} is not linked to an organization")),
            Some(Installation { suspended: true, .. }) => Err(format!("installation {id} is suspended")),
            Some(installation) => Ok((installation.org_id, id)),
        })
    }

    /// The organization and registered, attached repository an event is about.
    async fn repo_of(
        &self,
        installation_id: Option<u64>,
        repo_id: u64,
    ) -> CoreResult<Result<(OrgId, Repository), String>> {
        let (org, installation) = match self.org_of(installation_id).await? {
            Ok(found) => found,
            Err(reason) => return Ok(Err(reason)),
        };
        let Ok(github_id) = GithubRepoId::from_u64(repo_id) else { return Ok(Err("invalid repository id".to_owned())) };
        Ok(match self.github.find_github_repo(org, github_id).await? {
            Some(repo) if repo.detached_at.is_some() => Err(format!("repository {repo_id} is detached")),
            Some(repo) if !repo_of_installation(&repo, installation) => {
                Err(format!("repository {repo_id} is registered through another installation"))
            }
            Some(repo) => Ok((org, repo)),
            None => Err(format!("repository {repo_id} is not registered with the installation's organization")),
        })
    }

    async fn installation(&self, e: webhooks::InstallationEvent) -> CoreResult<Handled> {
        let Ok(id) = InstallationId::from_u64(e.installation_id) else {
            return Ok(Handled::Ignored("invalid installation id".into()));
        };
        match e.action {
            InstallationAction::Created => match self.org_of(Some(e.installation_id)).await? {
                Ok((org, _)) => {
                    let sync = self.github.sync_github_repos(org, id, &repo_infos(&e.repositories), &[]).await?;
                    Ok(Handled::Processed(format!("{} repositories registered", sync.upserted.len())))
                }
                Err(reason) => Ok(Handled::Ignored(reason)),
            },
            InstallationAction::Deleted => Ok(match self.github.remove_installation(id).await? {
                Some(_) => Handled::Processed(format!("installation {id} unlinked; its repositories are detached")),
                None => Handled::Ignored(format!("installation {id} was not linked")),
            }),
            InstallationAction::Suspend | InstallationAction::Unsuspend => {
                let suspended = e.action == InstallationAction::Suspend;
                Ok(match self.github.set_installation_suspended(id, suspended).await? {
                    Some(_) if suspended => Handled::Processed(format!("installation {id} suspended")),
                    Some(_) => Handled::Processed(format!("installation {id} unsuspended")),
                    None => Handled::Ignored(format!("installation {id} is not linked to an organization")),
                })
            }
            InstallationAction::Other(action) => Ok(Handled::Ignored(format!("installation action `{action}`"))),
        }
    }

    async fn repositories(&self, e: webhooks::InstallationRepositoriesEvent) -> CoreResult<Handled> {
        let (org, id) = match self.org_of(Some(e.installation_id)).await? {
            Ok(found) => found,
            Err(reason) => return Ok(Handled::Ignored(reason)),
        };
        let removed: Vec<GithubRepoId> = e.removed.iter().filter_map(|r| GithubRepoId::from_u64(r.id).ok()).collect();
        let sync = self.github.sync_github_repos(org, id, &repo_infos(&e.added), &removed).await?;
        for skipped in &sync.skipped {
            tracing::warn!(repo = %skipped.repo.full_name, reason = %skipped.reason, "repository not registered");
        }
        Ok(Handled::Processed(format!(
            "{} registered, {} detached, {} skipped",
            sync.upserted.len(),
            sync.detached.len(),
            sync.skipped.len()
        )))
    }

    async fn issues(&self, e: webhooks::IssuesEvent) -> CoreResult<Handled> {
        if e.issue.is_pull_request {
            return Ok(Handled::Ignored("the issue is a pull request".into()));
        }
        let (org, repo) = match self.repo_of(e.installation_id, e.repository.id).await? {
            Ok(found) => found,
            Err(reason) => return Ok(Handled::Ignored(reason)),
        };
        let sender = e.sender_login.as_deref().unwrap_or(UNKNOWN_SENDER);
        if e.action == IssuesAction::Closed {
            return Ok(match self.github.cancel_issue_job(org, repo.id, e.issue.number, sender).await? {
                Some(job) => Handled::Processed(format!("issue closed: job {} cancelled", job.id)),
                None => Handled::Ignored("issue closed; no job to cancel".into()),
            });
        }
        let triggers = self.github.trigger_settings(org, &repo).await?;
        let delivery_id = self.delivery_id.to_owned();
        let source = match &e.action {
            IssuesAction::Labeled if e.label.as_deref().is_some_and(|l| triggers.matches_label(l)) => {
                CommandSource::Label { delivery_id }
            }
            IssuesAction::Opened if e.issue.labels.iter().any(|l| triggers.matches_label(l)) => {
                CommandSource::Label { delivery_id }
            }
            IssuesAction::Assigned if triggers.assignment && self.is_bot(e.assignee.as_deref()) => {
                CommandSource::Assignment { delivery_id }
            }
            IssuesAction::Labeled | IssuesAction::Opened | IssuesAction::Assigned => {
                return Ok(Handled::Ignored(not_a_trigger(&triggers)));
            }
            IssuesAction::Closed => unreachable!("handled above"),
            IssuesAction::Other(action) => return Ok(Handled::Ignored(format!("issues action `{action}`"))),
        };
        if e.issue.state == "closed" {
            return Ok(Handled::Ignored("the issue is closed".into()));
        }
        if self.is_bot(Some(sender)) {
            return Ok(Handled::Ignored("AI-CD's own actions are never triggers".into()));
        }
        if is_bot_login(sender) && !triggers.bots {
            return Ok(Handled::Ignored(format!("triggers from bots (`{sender}`) are not obeyed in this repository")));
        }
        // An opened issue that carries the label got it from its author (or a template): the
        // author must be trusted too.
        let author_login = match e.action {
            IssuesAction::Opened => e.issue.user_login.clone().filter(|author| author != sender),
            _ => None,
        };
        let what = if matches!(source, CommandSource::Assignment { .. }) { "assignment" } else { "label" };
        let new = NewCommand {
            repo_id: repo.id,
            issue_number: e.issue.number,
            command: CommandKind::Run,
            source,
            login: sender.to_owned(),
            author_login,
            issue: Some(issue_ref(&e.issue)),
        };
        let recorded = self.github.enqueue_command(org, new).await?;
        Ok(Handled::Processed(format!(
            "{what} recorded as command {}: a job starts once the sender's access is checked",
            recorded.id
        )))
    }

    async fn comment(&self, e: webhooks::IssueCommentEvent) -> CoreResult<Handled> {
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
        let (org, repo) = match self.repo_of(e.installation_id, e.repository.id).await? {
            Ok(found) => found,
            Err(reason) => return Ok(Handled::Ignored(reason)),
        };
        let triggers = self.github.trigger_settings(org, &repo).await?;
        if !triggers.commands {
            return Ok(Handled::Ignored("comment commands are turned off for this repository".into()));
        }
        if self.is_bot(Some(&login)) {
            return Ok(Handled::Ignored("AI-CD's own comments carry no commands".into()));
        }
        if is_bot_login(&login) && !triggers.bots {
            return Ok(Handled::Ignored("commands from bots are not obeyed".into()));
        }
        let Ok(comment_id) = i64::try_from(e.comment.id) else {
            return Ok(Handled::Ignored("invalid comment id".into()));
        };
        let new = NewCommand {
            repo_id: repo.id,
            issue_number: e.issue.number,
            command,
            source: CommandSource::Comment { comment_id },
            login,
            author_login: None,
            issue: Some(issue_ref(&e.issue)),
        };
        let recorded = self.github.enqueue_command(org, new).await?;
        Ok(Handled::Processed(format!("command {} recorded for the worker", recorded.id)))
    }

    async fn pull_request(&self, e: webhooks::PullRequestEvent) -> CoreResult<Handled> {
        if e.action != PullRequestAction::Closed {
            return Ok(Handled::Ignored("only closed pull requests matter".into()));
        }
        let (org, repo) = match self.repo_of(e.installation_id, e.repository.id).await? {
            Ok(found) => found,
            Err(reason) => return Ok(Handled::Ignored(reason)),
        };
        Ok(match self.github.close_pull_request(org, repo.id, e.number, e.merged).await? {
            Some(job) => Handled::Processed(format!("job {} is {}", job.id, job.state)),
            None => Handled::Ignored("no job waits on this pull request".into()),
        })
    }

    fn is_bot(&self, assignee: Option<&str>) -> bool {
        matches!((self.bot_login, assignee), (Some(bot), Some(who)) if bot.eq_ignore_ascii_case(who))
    }
}

/// Whether a login is a bot account's (GitHub names them `<name>[bot]`).
pub(crate) fn is_bot_login(login: &str) -> bool {
    login.ends_with("[bot]")
}

/// Whether `repo` is reached through `installation`.
fn repo_of_installation(repo: &Repository, installation: InstallationId) -> bool {
    matches!(repo.source, aicd_core::repos::RepoSource::Github { installation_id, .. } if installation_id == installation)
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
                repo_id: GithubRepoId::from_u64(r.id).ok()?,
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
        // Only a plain https address is kept (job creation refuses others: a job is not lost over it).
        url: (issue.html_url.starts_with("https://") && !issue.html_url.chars().any(char::is_whitespace))
            .then(|| issue.html_url.clone()),
        author: issue.user_login.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_signed_deliveries_with_their_headers_verify() {
        let secret = WebhookSecret::new("a webhook secret of some length").unwrap();
        let body = br#"{"zen":"Keep it logically awesome."}"#;
        let signature = secret.sign(body);
        let ok = VerifiedDelivery::verify(&secret, Some(&signature), Some("ping"), Some(" d-1 "), body).unwrap();
        assert_eq!((ok.event(), ok.delivery_id()), ("ping", "d-1"));
        assert!(matches!(
            VerifiedDelivery::verify(&secret, Some(&signature), Some("ping"), Some("d-1"), b"{}"),
            Err(Error::BadSignature)
        ));
        assert!(matches!(
            VerifiedDelivery::verify(&secret, None, Some("ping"), Some("d-1"), body),
            Err(Error::MissingSignature)
        ));
        assert!(matches!(
            VerifiedDelivery::verify(&secret, Some(&signature), None, Some("d-1"), body),
            Err(Error::MalformedDelivery(_))
        ));
        let long = "x".repeat(201);
        assert!(matches!(
            VerifiedDelivery::verify(&secret, Some(&signature), Some("ping"), Some(&long), body),
            Err(Error::MalformedDelivery(_))
        ));
    }

    #[test]
    fn bot_logins_are_recognised() {
        assert!(is_bot_login("dependabot[bot]"));
        assert!(!is_bot_login("octocat"));
    }
}
