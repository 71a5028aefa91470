//! The GitHub integration's services: admins link installations through [`Core`]; the webhook
//! route and the command worker go through [`GithubIntake`].

use super::{
    Command, CommandId, CommandKind, CommandOutcome, CommandStatus, GithubRepoId, GithubRepoInfo, InstallState,
    Installation, InstallationId, NewCommand, RepoSync, StartOutcome, TriggerSettings, actor_label,
};
use crate::deliveries::{DeliveryClaim, DeliveryStatus, NewDelivery, WebhookDelivery};
use crate::jobs::{IssueRef, Job, JobState, NewEvent, NewJob, Trigger};
use crate::repos::Repository;
use crate::tenancy::{Actor, Permission, Principal};
use crate::{Core, Error, JobId, OrgId, RepoId, Result};

/// The timeline actor of what GitHub itself reports (a pull request merged or closed).
const GITHUB_ACTOR: &str = "github";

impl Core {
    /// Records the start of the App's setup flow for `org` (needs
    /// [`Permission::IntegrationManage`]): a pending link identified by the SHA-256 of a secret
    /// nonce the caller puts, signed, in the install URL's `state`. It lasts until `expires_at` and
    /// can be used once, by the same caller ([`Core::complete_github_install`]), so an installation
    /// is only ever linked to the organization, and by the person, that started its installation.
    pub async fn start_github_install(
        &self,
        actor: &Actor,
        org: OrgId,
        nonce_hash: Vec<u8>,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<InstallState> {
        self.authorize(actor, org, Permission::IntegrationManage)?;
        if nonce_hash.len() != 32 {
            return Err(Error::invalid("the install state's nonce hash must be a SHA-256 digest"));
        }
        self.store.create_install_state(org, nonce_hash, &actor.principal.label(), expires_at).await
    }

    /// Checks that the pending link named by `nonce_hash` may be used by `actor`: it is in `org`,
    /// unused and unexpired, `actor` started it, and may still manage the organization's
    /// integrations ([`Permission::IntegrationManage`]). [`Error::NotFound`] for any state
    /// that is not usable by `actor` (which is not said, so a state cannot be probed).
    pub async fn check_github_install(&self, actor: &Actor, org: OrgId, nonce_hash: &[u8]) -> Result<()> {
        self.authorize(actor, org, Permission::IntegrationManage)?;
        match self.store.find_install_state(org, nonce_hash).await? {
            Some(state) if state.created_by == actor.principal.label() => Ok(()),
            Some(state) => {
                tracing::warn!(%org, started_by = %state.created_by, by = %actor.principal.label(),
                    "an install state used by someone other than who started it");
                Err(Error::not_found("install state"))
            }
            None => Err(Error::not_found("install state")),
        }
    }

    /// Completes the setup flow once control of the installation has been proven: uses up the
    /// pending link (as [`Core::check_github_install`] checks it) and links the installation to
    /// `org`, recording who proved control (`linked_by`, e.g. `github:<login>`), in one step:
    /// both happen or neither. [`Error::NotFound`] when the state is not usable by `actor`;
    /// [`Error::Conflict`] when another organization has linked the installation (answer that
    /// exactly like an installation that cannot be verified).
    pub async fn complete_github_install(
        &self,
        actor: &Actor,
        org: OrgId,
        nonce_hash: &[u8],
        installation_id: InstallationId,
        account_login: Option<String>,
        linked_by: &str,
    ) -> Result<Installation> {
        self.authorize(actor, org, Permission::IntegrationManage)?;
        // The GitHub round trips took a while: the caller must still hold the right now.
        let current = self.refreshed_actor(actor, org).await?;
        self.authorize(&current, org, Permission::IntegrationManage)?;
        let linked = self
            .store
            .link_installation_with_state(
                org,
                nonce_hash,
                &actor.principal.label(),
                installation_id,
                account_login,
                linked_by,
            )
            .await?;
        linked.ok_or_else(|| Error::not_found("install state"))
    }

    /// `actor` as the store sees it now: the member's current role, or the API key's while it is
    /// usable. [`Error::NotFound`] when the member left or the key was revoked or expired.
    async fn refreshed_actor(&self, actor: &Actor, org: OrgId) -> Result<Actor> {
        let role = match actor.principal {
            Principal::User(user) => self.store.get_membership(org, user).await?.map(|m| m.role),
            Principal::ApiKey(key) => {
                let now = chrono::Utc::now();
                self.store
                    .list_api_keys(org)
                    .await?
                    .into_iter()
                    .find(|k| k.id == key && k.is_usable(now))
                    .map(|k| k.role)
            }
        };
        let role = role.ok_or(Error::not_found("organization"))?;
        Ok(Actor { principal: actor.principal, org_id: org, role })
    }

    /// The organization's linked installations, by id (any member may list them:
    /// [`Permission::OrgRead`]).
    pub async fn list_installations(&self, actor: &Actor, org: OrgId) -> Result<Vec<Installation>> {
        self.authorize(actor, org, Permission::OrgRead)?;
        self.store.list_installations(org).await
    }

    /// Unlinks an installation (needs [`Permission::IntegrationManage`]); its events are ignored
    /// from then on. Its repositories are detached (kept, with their jobs' history, and refused by
    /// the forge until an installation that covers them is linked again) and their unfinished jobs
    /// cancelled, as `actor`. Returns the detached repositories. [`Error::NotFound`] if the
    /// organization has not linked it.
    pub async fn unlink_installation(
        &self,
        actor: &Actor,
        org: OrgId,
        installation_id: InstallationId,
    ) -> Result<Vec<Repository>> {
        self.authorize(actor, org, Permission::IntegrationManage)?;
        let detached = self.store.unlink_installation(org, installation_id).await?;
        self.github_intake().cancel_repo_jobs(org, &detached, &actor.principal.label()).await?;
        Ok(detached)
    }

    /// The GitHub intake over the same store, event bus and doorbell (see [`GithubIntake`]).
    pub fn github_intake(&self) -> GithubIntake {
        GithubIntake { core: self.clone() }
    }
}

/// What the GitHub webhook route and the command worker do to the database: find an event's
/// organization by installation, keep repositories in line with installations, start issue jobs
/// idempotently, record comment commands and carry them out, and end jobs whose pull request was
/// merged or closed. Obtained from [`Core::github_intake`]; cheap to clone.
///
/// It acts **without an [`Actor`]**: nothing here checks a permission, so it must only be given
/// what a verified webhook says (signature checked; the organization taken from
/// [`GithubIntake::installation`], never from the payload). Jobs and events it creates are
/// attributed to `github:<login>` (the GitHub user who triggered them) or `github`. Every call is
/// database-only and returns within a request's time; none calls GitHub.
#[derive(Clone, Debug)]
pub struct GithubIntake {
    core: Core,
}

impl GithubIntake {
    /// The linked installation with this id, whatever its organization: the organization a
    /// webhook's event belongs to. `None` if no organization has linked it (ignore the event).
    /// A suspended installation's events are to be ignored too.
    pub async fn installation(&self, installation_id: InstallationId) -> Result<Option<Installation>> {
        self.core.store.find_installation(installation_id).await
    }

    /// The organization an installation is linked to, and whether it is suspended; `None` if it
    /// is not linked.
    pub async fn installation_org(&self, installation_id: InstallationId) -> Result<Option<(OrgId, bool)>> {
        Ok(self.installation(installation_id).await?.map(|i| (i.org_id, i.suspended)))
    }

    /// Records that an installation was suspended (`installation.suspend`) or unsuspended
    /// (`installation.unsuspend`); `None` if it is not linked.
    pub async fn set_installation_suspended(
        &self,
        installation_id: InstallationId,
        suspended: bool,
    ) -> Result<Option<Installation>> {
        self.core.store.set_installation_suspended(installation_id, suspended).await
    }

    /// Links an installation to `org` once control of it has been proven (the setup flow's
    /// user-to-server check, or an operator's word), recording who proved it (`linked_by`:
    /// `github:<login>` or `operator`). Linking it again to the same org succeeds;
    /// [`Error::Conflict`] if another organization has linked it (callers facing a tenant answer
    /// it exactly like an installation that cannot be verified).
    pub async fn link_installation(
        &self,
        org: OrgId,
        installation_id: InstallationId,
        account_login: Option<String>,
        linked_by: &str,
    ) -> Result<Installation> {
        self.core.store.link_installation(org, installation_id, account_login, linked_by).await
    }

    /// Unlinks an uninstalled installation (`installation.deleted`) and returns what was linked;
    /// `None` if it was not. Its repositories are detached (kept with their jobs' history) and
    /// their unfinished jobs cancelled, as `github`.
    pub async fn remove_installation(&self, installation_id: InstallationId) -> Result<Option<Installation>> {
        let Some((installation, detached)) = self.core.store.remove_installation(installation_id).await? else {
            return Ok(None);
        };
        self.cancel_repo_jobs(installation.org_id, &detached, GITHUB_ACTOR).await?;
        Ok(Some(installation))
    }

    /// Follows an installation's repositories (`installation.created`,
    /// `installation_repositories.added/removed`); see [`crate::store::GithubStore::sync_github_repos`].
    /// Removed repositories are detached (listed in [`RepoSync::detached`]) and their unfinished
    /// jobs cancelled, as `github`.
    pub async fn sync_github_repos(
        &self,
        org: OrgId,
        installation_id: InstallationId,
        added: &[GithubRepoInfo],
        removed: &[GithubRepoId],
    ) -> Result<RepoSync> {
        let sync = self.core.store.sync_github_repos(org, installation_id, added, removed).await?;
        self.cancel_repo_jobs(org, &sync.detached, GITHUB_ACTOR).await?;
        Ok(sync)
    }

    /// Cancels the unfinished jobs (QUEUED to REVIEWING) of `repos`, as `actor`; a job whose pull
    /// request is open is left to end with its pull request. Jobs that end meanwhile are passed
    /// over.
    pub(crate) async fn cancel_repo_jobs(&self, org: OrgId, repos: &[Repository], actor: &str) -> Result<()> {
        for repo in repos {
            for job in self.core.store.unfinished_repo_jobs(org, repo.id).await? {
                match self.core.store.cancel_job(org, job.id, actor).await {
                    Ok((_, events)) => self.core.publish(&events).await,
                    Err(Error::IllegalTransition { .. }) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(())
    }

    /// The organization's repository with this GitHub id; `None` if it has not registered it.
    pub async fn find_github_repo(&self, org: OrgId, github_repo_id: GithubRepoId) -> Result<Option<Repository>> {
        self.core.store.find_github_repo(org, github_repo_id).await
    }

    /// What starts a job for the issues of `repo`, a repository of `org`: its `triggers` settings
    /// over the organization's, key by key (see [`TriggerSettings::resolve`]). Reads the
    /// organization; [`Error::NotFound`] if it does not exist. `repo` is taken as given (read it
    /// with [`GithubIntake::find_github_repo`]); a repository of another organization is refused
    /// with [`Error::NotFound`] rather than resolved against the wrong defaults.
    pub async fn trigger_settings(&self, org: OrgId, repo: &Repository) -> Result<TriggerSettings> {
        if repo.org_id != org {
            return Err(Error::not_found("repository"));
        }
        let org = self.core.store.get_org(org).await?;
        Ok(TriggerSettings::resolve(&org.settings, &repo.settings))
    }

    /// Records a received webhook delivery and says whether to process it (see
    /// [`crate::store::DeliveryStore::begin_delivery`]): first sight, a redelivery of one that
    /// failed, or one stuck in processing for longer than `stale_after` gets
    /// [`DeliveryClaim::Process`]; anything else is a [`DeliveryClaim::Duplicate`] to acknowledge
    /// without effect. Finish a processed delivery with [`GithubIntake::finish_delivery`].
    pub async fn begin_delivery(&self, delivery: NewDelivery, stale_after: chrono::Duration) -> Result<DeliveryClaim> {
        self.core.store.begin_delivery(delivery, stale_after).await
    }

    /// Records how processing a delivery ended: [`DeliveryStatus::Processed`],
    /// [`DeliveryStatus::Ignored`], or [`DeliveryStatus::Failed`] with the error (a redelivery is
    /// then processed again). [`Error::NotFound`] if it was never begun.
    pub async fn finish_delivery(&self, delivery_id: &str, status: DeliveryStatus, error: Option<&str>) -> Result<()> {
        self.core.store.finish_delivery(delivery_id, status, error).await
    }

    /// Reads a recorded delivery by its delivery id; [`Error::NotFound`] if there is none.
    pub async fn get_delivery(&self, delivery_id: &str) -> Result<WebhookDelivery> {
        self.core.store.get_delivery(delivery_id).await
    }

    /// Starts a job for an issue (a label, an assignment, a `/aicd run` command), attributed to
    /// `github:<sender>`, unless the issue already has an active job (see [`crate::github::ACTIVE_STATES`]),
    /// which is returned as [`StartOutcome::AlreadyActive`]. Two deliveries racing for the same
    /// issue create one job. `issue.number` is required. A new job is queued at once (the
    /// doorbell rings and its `created` event is published).
    pub async fn start_issue_job(
        &self,
        org: OrgId,
        repo_id: RepoId,
        issue: IssueRef,
        trigger: Trigger,
        sender: &str,
    ) -> Result<StartOutcome> {
        let label = actor_label(sender)?;
        if self.core.options.billing.is_some() {
            // An issue already being worked on is answered as such, whatever the entitlement
            // (without billing, the store's start says so itself).
            if let Some(number) = issue.number
                && let Some(active) = self.core.store.active_issue_job(org, repo_id, number).await?
            {
                return Ok(StartOutcome::AlreadyActive(active));
            }
            self.core.check_entitlement(org).await?;
        }
        let job = NewJob { repo_id, issue, trigger, max_tokens: None, max_cost_micros: None };
        let outcome = self.core.store.start_issue_job(org, job, &label).await?;
        if let StartOutcome::Created(job) = &outcome {
            self.queued(org, job.id, &label).await;
        }
        Ok(outcome)
    }

    /// The issue's active job (see [`crate::github::ACTIVE_STATES`]), if it has one.
    pub async fn active_issue_job(&self, org: OrgId, repo_id: RepoId, issue_number: u64) -> Result<Option<Job>> {
        self.core.store.active_issue_job(org, repo_id, issue_number).await
    }

    /// Records a `/aicd` comment command as pending, for the command worker to check its author's
    /// access and carry it out; recording the same comment again (a redelivery) returns the
    /// command already recorded.
    pub async fn enqueue_command(&self, org: OrgId, command: NewCommand) -> Result<Command> {
        self.core.store.enqueue_command(org, command).await
    }

    /// Reads a recorded command of the organization.
    pub async fn get_command(&self, org: OrgId, command: CommandId) -> Result<Command> {
        self.core.store.get_command(org, command).await
    }

    /// Claims the oldest pending command of any organization for `worker`, leased for `lease`:
    /// if the worker neither finishes it nor stays alive, another claims it once the lease has
    /// expired (so a transient failure is retried after `lease`; see [`Command::attempts`]).
    pub async fn claim_pending_command(&self, worker: &str, lease: chrono::Duration) -> Result<Option<Command>> {
        self.core.store.claim_pending_command(worker, lease).await
    }

    /// Records how a command ended: [`CommandStatus::Done`] once [`GithubIntake::execute_command`]
    /// succeeded, [`CommandStatus::Refused`] if its author lacks write access,
    /// [`CommandStatus::Failed`] for good otherwise. [`Error::Conflict`] if it has already ended.
    pub async fn finish_command(
        &self,
        org: OrgId,
        command: CommandId,
        status: CommandStatus,
        error: Option<&str>,
    ) -> Result<Command> {
        self.core.store.finish_command(org, command, status, error).await
    }

    /// Carries out a command whose author's write access has been checked, as `github:<login>`:
    /// `run` starts a job from the recorded issue (attributed to the command's source: a comment,
    /// a label or an assignment, see [`super::CommandSource::trigger`]), `cancel` and `retry` act
    /// as [`GithubIntake::cancel_issue_job`] and [`GithubIntake::retry_issue_job`]. Safe to repeat
    /// (after a worker died mid-way): each is idempotent for its issue. Does not finish the
    /// command.
    pub async fn execute_command(&self, command: &Command) -> Result<CommandOutcome> {
        let (org, repo, number) = (command.org_id, command.repo_id, command.issue_number);
        match command.command {
            CommandKind::Run => {
                let issue = command
                    .issue
                    .clone()
                    .ok_or_else(|| Error::Corrupt(format!("`run` command {} has no issue", command.id)))?;
                let trigger = command.source.trigger();
                let outcome = self.start_issue_job(org, repo, issue, trigger, &command.login).await?;
                Ok(CommandOutcome::Started(outcome))
            }
            CommandKind::Cancel => {
                Ok(CommandOutcome::Cancelled(self.cancel_issue_job(org, repo, number, &command.login).await?))
            }
            CommandKind::Retry => {
                Ok(CommandOutcome::Retried(self.retry_issue_job(org, repo, number, &command.login).await?))
            }
        }
    }

    /// Cancels the issue's active job as `github:<sender>` (see
    /// [`crate::store::JobStore::cancel_job`]: at once if no worker holds it, at the worker's next
    /// checkpoint otherwise). `None` when there is nothing to cancel: no active job, or its pull
    /// request is already open (closing the pull request ends it).
    pub async fn cancel_issue_job(
        &self,
        org: OrgId,
        repo_id: RepoId,
        issue_number: u64,
        sender: &str,
    ) -> Result<Option<Job>> {
        let label = actor_label(sender)?;
        let Some(active) = self.core.store.active_issue_job(org, repo_id, issue_number).await? else {
            return Ok(None);
        };
        if !active.state.can_transition_to(JobState::Cancelled) {
            return Ok(None);
        }
        match self.core.store.cancel_job(org, active.id, &label).await {
            Ok((job, events)) => {
                self.core.publish(&events).await;
                Ok(Some(job))
            }
            // It ended (or opened its pull request) meanwhile.
            Err(Error::IllegalTransition { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Retries the issue's latest job as `github:<sender>` if it failed or was cancelled: a new job
    /// for the same issue, trigger and budget, whose timeline notes which job it retries (as
    /// [`Core::retry_job`] does). If the issue has an active job, that job is returned as
    /// [`StartOutcome::AlreadyActive`]; `None` when there is nothing to retry (no job, or the
    /// latest one's pull request was merged or closed).
    pub async fn retry_issue_job(
        &self,
        org: OrgId,
        repo_id: RepoId,
        issue_number: u64,
        sender: &str,
    ) -> Result<Option<StartOutcome>> {
        let label = actor_label(sender)?;
        let store = &self.core.store;
        if let Some(active) = store.active_issue_job(org, repo_id, issue_number).await? {
            return Ok(Some(StartOutcome::AlreadyActive(active)));
        }
        let Some(old) = store.latest_issue_job(org, repo_id, issue_number).await? else { return Ok(None) };
        let Some(new) = old.retry() else { return Ok(None) };
        self.core.check_entitlement(org).await?;
        let outcome = store.start_issue_job(org, new, &label).await?;
        if let StartOutcome::Created(created) = &outcome {
            store.append_event(org, created.id, NewEvent::retry_of(label.clone(), old.id)).await?;
            self.queued(org, created.id, &label).await;
        }
        Ok(Some(outcome))
    }

    /// Ends the job whose pull request `pr_number` of the repository was merged (MERGED) or
    /// closed without merging (CLOSED), as `github`, and publishes the state change. `None` if no
    /// job of the repository waits on that pull request (not one of AI-CD's, or already ended).
    pub async fn close_pull_request(
        &self,
        org: OrgId,
        repo_id: RepoId,
        pr_number: u64,
        merged: bool,
    ) -> Result<Option<Job>> {
        let closed = self.core.store.close_pull_request(org, repo_id, pr_number, merged, GITHUB_ACTOR).await?;
        Ok(match closed {
            Some((job, event)) => {
                self.core.publish(std::slice::from_ref(&event)).await;
                Some(job)
            }
            None => None,
        })
    }

    /// Rings the doorbell for a new job and publishes the first events `label` appended to it.
    async fn queued(&self, org: OrgId, job: JobId, label: &str) {
        if self.core.bus.is_some() {
            match self.core.store.list_events(org, job, None, 10).await {
                Ok(mut events) => {
                    events.retain(|e| e.actor == label);
                    self.core.publish(&events).await;
                }
                Err(err) => tracing::warn!(%org, %job, %err, "could not read a new job's events to publish them"),
            }
        }
        self.core.job_queued().await;
    }
}
