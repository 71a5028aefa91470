//! Carrying out `/aicd run|cancel|retry` comment commands, and the label and assignment triggers
//! recorded the same way.
//!
//! The webhook intake only records a command ([`aicd_core::github::GithubIntake::enqueue_command`]):
//! it must answer GitHub within seconds and never call GitHub itself. A [`CommandProcessor`] in
//! the worker claims recorded commands, checks through the API that whoever gave them (the
//! comment's author, the sender who labeled or assigned the issue, and the author of an issue
//! opened with the trigger label) has write access to the repository, and then carries them out or
//! answers with a polite comment. Bot accounts are trusted only where the repository's
//! `triggers.bots` setting allows them, and are never answered.
//!
//! A command's claim is leased: if the processor dies, or GitHub is unavailable (rate limited,
//! 5xx), the command is claimed again once the lease expires, up to [`MAX_ATTEMPTS`] times.
//! Carrying a command out is idempotent for its issue, so a repeat after a crash does no harm.

use std::time::Duration;

use aicd_core::Core;
use aicd_core::github::{Command, CommandKind, CommandOutcome, CommandSource, CommandStatus, StartOutcome};
use aicd_core::repos::Repository;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::app::{TokenPurpose, TokenScope};
use crate::intake::is_bot_login;
use crate::{InstallationClient, InstallationTokens};

/// How many times a command is claimed before it fails for good.
pub const MAX_ATTEMPTS: u32 = 5;

/// What became of a command [`CommandProcessor::process_next`] claimed.
#[derive(Clone, Debug, PartialEq)]
pub enum Processed {
    /// It ended with this status (and a reply comment when one was due).
    Finished(Command),
    /// GitHub (or the database) failed in a way that may pass: the command stays claimed until its
    /// lease expires and is then tried again.
    Deferred {
        /// The command.
        command: Command,
        /// Why.
        error: String,
    },
}

/// Claims recorded comment commands, checks their authors' access and carries them out.
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct CommandProcessor {
    core: Core,
    tokens: InstallationTokens,
    worker_id: String,
    lease: Duration,
    poll_interval: Duration,
}

impl CommandProcessor {
    /// A processor acting as the App through `tokens`, claiming commands as `worker_id` with a
    /// 60 s lease and looking for new ones every 2 s when idle.
    pub fn new(core: Core, tokens: InstallationTokens, worker_id: impl Into<String>) -> Self {
        Self {
            core,
            tokens,
            worker_id: worker_id.into(),
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_secs(2),
        }
    }

    /// Sets how long a claim lasts: a command whose processing was cut off (or deferred) is
    /// claimed again after it.
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets how long an idle processor waits before looking for commands again.
    pub fn with_poll_interval(mut self, poll_interval: Duration) -> Self {
        self.poll_interval = poll_interval;
        self
    }

    /// Claims the oldest pending command and processes it; `None` when there is none.
    ///
    /// The author's permission is read from GitHub. Without write access the command is
    /// [`CommandStatus::Refused`] and the author gets a polite reply; with it the command is
    /// carried out ([`aicd_core::github::GithubIntake::execute_command`]) and
    /// [`CommandStatus::Done`], with a reply when there was nothing to do. A command GitHub says
    /// the installation can no longer reach, or one that failed [`MAX_ATTEMPTS`] times, is
    /// [`CommandStatus::Failed`]. Replies are best effort: a reply that cannot be posted is logged.
    ///
    /// # Errors
    /// Only when the database fails while claiming or finishing.
    pub async fn process_next(&self) -> aicd_core::Result<Option<Processed>> {
        let intake = self.core.github_intake();
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::seconds(60));
        let Some(command) = intake.claim_pending_command(&self.worker_id, lease).await? else {
            return Ok(None);
        };
        let span = tracing::info_span!(
            "github_command",
            command = %command.id,
            org = %command.org_id,
            issue = command.issue_number,
            kind = command.command.as_str(),
        );
        self.process(command).instrument(span).await.map(Some)
    }

    async fn process(&self, command: Command) -> aicd_core::Result<Processed> {
        let intake = self.core.github_intake();
        match self.decide(&command).await {
            Ok(decision) => self.finish(command, decision).await,
            Err(error) if is_transient(&error) && command.attempts < MAX_ATTEMPTS => {
                tracing::warn!(%error, attempts = command.attempts, "command deferred; it is tried again after its lease");
                Ok(Processed::Deferred { command, error: error.to_string() })
            }
            Err(error) => {
                tracing::warn!(%error, attempts = command.attempts, "command failed");
                let message = format!("could not carry out the command: {error}");
                let finished =
                    intake.finish_command(command.org_id, command.id, CommandStatus::Failed, Some(&message)).await?;
                Ok(Processed::Finished(finished))
            }
        }
    }

    /// Processes commands until `stop` turns `true`, waiting [`Self::with_poll_interval`] whenever
    /// there is none. Database errors are logged and retried after the interval.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            tracing::info!(worker = %self.worker_id, "processing GitHub comment commands");
            while !*stop.borrow() {
                let idle = match self.process_next().await {
                    Ok(Some(_)) => false,
                    Ok(None) => true,
                    Err(error) => {
                        tracing::warn!(%error, "could not process GitHub comment commands");
                        true
                    }
                };
                if idle {
                    tokio::select! {
                        () = tokio::time::sleep(self.poll_interval) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        })
    }

    /// Checks whoever gave the command and carries it out; an error leaves the command
    /// unfinished.
    async fn decide(&self, command: &Command) -> aicd_core::Result<Decision> {
        let intake = self.core.github_intake();
        let repo = self.core.store().get_repo(command.org_id, command.repo_id).await?;
        let (client, owner, name) = self.client(&repo).await?;
        let triggers = intake.trigger_settings(command.org_id, &repo).await?;
        for login in std::iter::once(&command.login).chain(&command.author_login) {
            let trusted = if is_bot_login(login) {
                triggers.bots
            } else {
                client.permission(&owner, &name, login).await?.has_write()
            };
            if !trusted {
                // Bots are not answered (they would not read it, and might answer back).
                let reply = (!is_bot_login(login)).then(|| refusal(command, login, &repo.full_name));
                let error = format!("`{login}` has no write access");
                return Ok(Decision { status: CommandStatus::Refused, reply, repo, error: Some(error) });
            }
        }
        let outcome = match intake.execute_command(command).await {
            Ok(outcome) => outcome,
            // The organization may not start new work: say why, once, where it was asked for.
            Err(aicd_core::Error::PaymentRequired { code, message }) => {
                let reply = Some(format!(
                    "@{login}, AI-CD did not start: {message}.",
                    login = command.login,
                    message = message.trim_end_matches('.')
                ));
                return Ok(Decision { status: CommandStatus::Refused, reply, repo, error: Some(code.to_owned()) });
            }
            Err(error) => return Err(error),
        };
        let reply = reply_to(command, &outcome);
        Ok(Decision { status: CommandStatus::Done, reply, repo, error: None })
    }

    async fn finish(&self, command: Command, decision: Decision) -> aicd_core::Result<Processed> {
        let error = decision.error.as_deref();
        let finished =
            self.core.github_intake().finish_command(command.org_id, command.id, decision.status, error).await?;
        tracing::info!(status = decision.status.as_str(), "command finished");
        if let Some(reply) = decision.reply {
            let posted = match self.client(&decision.repo).await {
                Ok((client, owner, name)) => {
                    client.create_issue_comment(&owner, &name, command.issue_number, &reply).await.map(|_| ())
                }
                Err(error) => Err(error),
            };
            if let Err(error) = posted {
                tracing::warn!(%error, "could not reply to the command");
            }
        }
        Ok(Processed::Finished(finished))
    }

    /// A client for answering in `repo`'s issues, resolved from the store now: a repository
    /// whose installation is no longer linked to its organization (or is suspended), or that is
    /// detached, is refused before any token is requested.
    async fn client(&self, repo: &Repository) -> aicd_core::Result<(InstallationClient, String, String)> {
        let access = self.core.store().github_access(repo.org_id, repo.id).await?;
        let (owner, name) = access.full_name.split_once('/').ok_or_else(|| aicd_core::Error::Rejected {
            service: "github",
            message: format!("`{}` is not an `owner/name` repository", access.full_name),
        })?;
        let scope = TokenScope::repository(access.installation_id, access.repo_id, TokenPurpose::Converse);
        Ok((self.tokens.client(scope), owner.to_owned(), name.to_owned()))
    }
}

/// How a command ends.
struct Decision {
    status: CommandStatus,
    reply: Option<String>,
    repo: Repository,
    error: Option<String>,
}

/// The polite answer to `login`, who may not give `command`.
fn refusal(command: &Command, login: &str, repo: &str) -> String {
    let opened_by_author = command.author_login.as_deref() == Some(login);
    match &command.source {
        CommandSource::Comment { .. } => format!(
            "@{login}, thanks, but only people with write access to `{repo}` can give AI-CD commands, \
             so `/aicd {verb}` was not carried out. A maintainer can run it for you.",
            verb = command.command.as_str(),
        ),
        CommandSource::Label { .. } if opened_by_author => format!(
            "@{login}, thanks for the issue. It was opened with AI-CD's trigger label, but AI-CD only starts \
             on issues from people with write access to `{repo}`, so nothing was started. A maintainer can add \
             the label again to start it."
        ),
        CommandSource::Label { .. } => format!(
            "@{login}, thanks, but only people with write access to `{repo}` can start AI-CD, so the trigger \
             label was not acted on. A maintainer can add it for you."
        ),
        CommandSource::Assignment { .. } => format!(
            "@{login}, thanks, but only people with write access to `{repo}` can start AI-CD, so assigning \
             this issue to it was not acted on. A maintainer can assign it for you."
        ),
    }
}

/// The reply a carried-out command deserves: none when the job's own progress comment says it
/// all, a short note when there was nothing to do.
fn reply_to(command: &Command, outcome: &CommandOutcome) -> Option<String> {
    let login = &command.login;
    match outcome {
        CommandOutcome::Started(StartOutcome::Created(_)) => None,
        CommandOutcome::Started(StartOutcome::AlreadyActive(job))
        | CommandOutcome::Retried(Some(StartOutcome::AlreadyActive(job))) => Some(format!(
            "@{login}, this issue already has an AI-CD job in progress (`{}`, {}), so no second one was started.",
            job.id, job.state
        )),
        CommandOutcome::Retried(Some(StartOutcome::Created(_))) => None,
        CommandOutcome::Retried(None) => Some(format!(
            "@{login}, there is no failed or cancelled AI-CD job on this issue to retry. Use `/aicd run` to start one."
        )),
        CommandOutcome::Cancelled(Some(job)) => Some(format!("@{login}, AI-CD job `{}` is being cancelled.", job.id)),
        CommandOutcome::Cancelled(None) => Some(match command.command {
            CommandKind::Cancel => format!(
                "@{login}, there is no AI-CD job in progress on this issue to cancel \
                 (a job whose pull request is open ends when the pull request is closed)."
            ),
            _ => format!("@{login}, there was nothing to do."),
        }),
    }
}

/// Whether an error may pass on a later attempt.
fn is_transient(error: &aicd_core::Error) -> bool {
    matches!(error, aicd_core::Error::Unavailable { .. } | aicd_core::Error::Database(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_services_and_the_database_are_transient() {
        let unavailable =
            aicd_core::Error::Unavailable { service: "github", message: "rate limited".into(), retry_after: None };
        assert!(is_transient(&unavailable));
        assert!(!is_transient(&aicd_core::Error::Rejected { service: "github", message: "gone".into() }));
        assert!(!is_transient(&aicd_core::Error::NotFound { kind: "repository" }));
    }
}
