//! The records of the GitHub integration and the rules on their fields.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[allow(unused_imports)] // for the docs
use super::GithubIntake;
use super::{GithubRepoId, InstallationId};
use crate::jobs::{IssueRef, Job, JobState, Lease, Trigger};
use crate::repos::Repository;
use crate::{Error, OrgId, RepoId, Result};

/// The states in which an issue's job counts as active: work is still to be done, or its pull
/// request is open. A trigger on an issue with a job in one of these states starts nothing.
pub const ACTIVE_STATES: [JobState; 5] =
    [JobState::Queued, JobState::Planning, JobState::Coding, JobState::Reviewing, JobState::PrOpen];

/// A GitHub App installation linked to an organization. An installation belongs to at most one
/// organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Installation {
    /// GitHub's installation id.
    pub installation_id: InstallationId,
    /// The organization it is linked to.
    pub org_id: OrgId,
    /// The login of the GitHub account (organization or user) the App is installed on, if known.
    pub account_login: Option<String>,
    /// Whether the installation is suspended on GitHub (its events are to be ignored).
    pub suspended: bool,
    /// Who proved control of it when it was linked: `github:<login>` (the setup flow) or
    /// `operator` (`aicd-server admin link-installation`).
    pub linked_by: Option<String>,
    /// When it was linked.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A repository an installation grants access to, as a webhook names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubRepoInfo {
    /// GitHub's numeric repository id (stable across renames).
    pub repo_id: GithubRepoId,
    /// `owner/name`.
    pub full_name: String,
    /// Its default branch, when the webhook said; used only when the repository is first
    /// registered (`main` otherwise), never to overwrite the branch an admin chose.
    pub default_branch: Option<String>,
}

/// How a GitHub repository of an organization may be reached right now, resolved from the store
/// every time it is needed ([`crate::store::GithubStore::github_access`]) rather than from a copy
/// of the repository: its installation is linked to the repository's organization and not
/// suspended, and the repository is not detached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GithubAccess {
    /// The installation to act as.
    pub installation_id: InstallationId,
    /// The repository, to narrow the installation's token to it.
    pub repo_id: GithubRepoId,
    /// Its `owner/name`, as last registered.
    pub full_name: String,
}

/// A pending link of an installation: the single-use half of the App's setup flow, used by
/// [`crate::Core::complete_github_install`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallState {
    /// The organization the installation is to be linked to.
    pub org_id: OrgId,
    /// Who started the flow (`user:<id>` or `api_key:<id>`, a [`crate::tenancy::Principal`]).
    pub created_by: String,
    /// When it can no longer be consumed.
    pub expires_at: DateTime<Utc>,
}

/// What [`GithubIntake::sync_github_repos`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RepoSync {
    /// Repositories registered, brought up to date (name, installation) or reattached.
    pub upserted: Vec<Repository>,
    /// Repositories the installation no longer grants access to: kept with their jobs' history,
    /// marked detached ([`Repository::detached_at`]). Their active jobs are to be cancelled.
    pub detached: Vec<Repository>,
    /// Added repositories that could not be registered, and why (an invalid name, or the name is
    /// taken by another repository of the organization).
    pub skipped: Vec<SkippedRepo>,
}

/// An added repository [`GithubIntake::sync_github_repos`] could not register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedRepo {
    /// The repository as the webhook named it.
    pub repo: GithubRepoInfo,
    /// Why it was not registered.
    pub reason: String,
}

/// What a trigger did to an issue's jobs.
#[derive(Clone, Debug, PartialEq)]
pub enum StartOutcome {
    /// A new job was queued.
    Created(Job),
    /// The issue already has an active job (see [`ACTIVE_STATES`]); nothing was created.
    AlreadyActive(Job),
}

impl StartOutcome {
    /// The job created, or the active one that prevented it.
    pub fn job(&self) -> &Job {
        match self {
            StartOutcome::Created(job) | StartOutcome::AlreadyActive(job) => job,
        }
    }

    /// Whether a new job was queued.
    pub fn is_created(&self) -> bool {
        matches!(self, StartOutcome::Created(_))
    }
}

/// Identifies a recorded comment command (increasing in the order commands were recorded).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(pub i64);

impl std::fmt::Display for CommandId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An `/aicd` command given in an issue comment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    /// `/aicd run`: start a job for the issue.
    Run,
    /// `/aicd cancel`: cancel the issue's active job.
    Cancel,
    /// `/aicd retry`: retry the issue's latest failed or cancelled job.
    Retry,
}

impl CommandKind {
    /// The stable name used in the database (and after `/aicd ` in a comment).
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Run => "run",
            CommandKind::Cancel => "cancel",
            CommandKind::Retry => "retry",
        }
    }
}

impl std::str::FromStr for CommandKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [CommandKind::Run, CommandKind::Cancel, CommandKind::Retry]
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown command `{s}`")))
    }
}

/// Where a comment command is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Waiting for the worker to check its author's access and carry it out.
    Pending,
    /// Carried out.
    Done,
    /// Not carried out: its author may not give commands (no write access).
    Refused,
    /// Carrying it out failed for good; the error says why.
    Failed,
}

impl CommandStatus {
    /// The stable name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Done => "done",
            CommandStatus::Refused => "refused",
            CommandStatus::Failed => "failed",
        }
    }
}

impl std::str::FromStr for CommandStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        [CommandStatus::Pending, CommandStatus::Done, CommandStatus::Refused, CommandStatus::Failed]
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown command status `{s}`")))
    }
}

/// What recorded a command: a comment, or a trigger (a label, an assignment) that must also have
/// its sender's permission checked before a job starts. Recording the same source twice records
/// one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandSource {
    /// An `/aicd` line in an issue comment.
    Comment {
        /// GitHub's comment id.
        comment_id: i64,
    },
    /// The trigger label was put on the issue, or was on it when it was opened.
    Label {
        /// The `X-GitHub-Delivery` id of the delivery that said so.
        delivery_id: String,
    },
    /// The issue was assigned to the App's bot user.
    Assignment {
        /// The `X-GitHub-Delivery` id of the delivery that said so.
        delivery_id: String,
    },
}

impl CommandSource {
    /// What a job it starts is attributed to.
    pub fn trigger(&self) -> Trigger {
        match self {
            CommandSource::Comment { .. } => Trigger::Comment,
            CommandSource::Label { .. } => Trigger::Label,
            CommandSource::Assignment { .. } => Trigger::Assignment,
        }
    }

    /// The comment's id, for a comment.
    pub fn comment_id(&self) -> Option<i64> {
        match self {
            CommandSource::Comment { comment_id } => Some(*comment_id),
            _ => None,
        }
    }

    /// The key that deduplicates it: `comment:<id>`, `label:<delivery>` or `assignment:<delivery>`.
    pub(crate) fn key(&self) -> String {
        match self {
            CommandSource::Comment { comment_id } => format!("comment:{comment_id}"),
            CommandSource::Label { delivery_id } => format!("label:{delivery_id}"),
            CommandSource::Assignment { delivery_id } => format!("assignment:{delivery_id}"),
        }
    }

    /// The source stored as `trigger` and `key`; `None` if they do not fit together.
    pub(crate) fn from_stored(trigger: &str, key: &str) -> Option<Self> {
        let (kind, rest) = key.split_once(':')?;
        match (trigger, kind) {
            ("comment", "comment") => Some(CommandSource::Comment { comment_id: rest.parse().ok()? }),
            ("label", "label") => Some(CommandSource::Label { delivery_id: rest.to_owned() }),
            ("assignment", "assignment") => Some(CommandSource::Assignment { delivery_id: rest.to_owned() }),
            _ => None,
        }
    }

    fn validate(&self, command: CommandKind) -> Result<()> {
        match self {
            CommandSource::Comment { comment_id } => validate_github_id(*comment_id, "comment_id").map(|_| ()),
            CommandSource::Label { delivery_id } | CommandSource::Assignment { delivery_id } => {
                if command != CommandKind::Run {
                    return Err(Error::invalid("a label or an assignment can only start a job"));
                }
                if delivery_id.is_empty() || delivery_id.len() > 200 {
                    return Err(Error::invalid("delivery id must be 1 to 200 characters"));
                }
                Ok(())
            }
        }
    }
}

/// A command to record: an `/aicd` comment, or a label or an assignment that starts a job once
/// its sender (and, for an opened issue, its author) is found to have write access.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCommand {
    /// The repository (registered with the organization).
    pub repo_id: RepoId,
    /// The issue it is about.
    pub issue_number: u64,
    /// The command.
    pub command: CommandKind,
    /// What recorded it; recording the same source twice records one command.
    pub source: CommandSource,
    /// The GitHub login of who gave it (the comment's author, the sender who labeled or assigned).
    pub login: String,
    /// Another login whose access must be checked too: the issue's author when an opened issue
    /// carried the trigger label (an issue template may have put it there).
    pub author_login: Option<String>,
    /// The issue (title, body, address, author) to start a job with; required for
    /// [`CommandKind::Run`], whose job is created from it. Its number is set to `issue_number`.
    pub issue: Option<IssueRef>,
}

/// A recorded command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Its identifier.
    pub id: CommandId,
    /// The organization.
    pub org_id: OrgId,
    /// The repository.
    pub repo_id: RepoId,
    /// The issue it is about.
    pub issue_number: u64,
    /// The command.
    pub command: CommandKind,
    /// What recorded it.
    pub source: CommandSource,
    /// The GitHub login of who gave it.
    pub login: String,
    /// Another login whose access must be checked too (see [`NewCommand::author_login`]).
    pub author_login: Option<String>,
    /// The issue, for [`CommandKind::Run`].
    pub issue: Option<IssueRef>,
    /// Where it is.
    pub status: CommandStatus,
    /// Why it failed or was refused.
    pub error: Option<String>,
    /// How many times a worker claimed it.
    pub attempts: u32,
    /// The worker holding it, while one does.
    pub lease: Option<Lease>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What carrying out a command did ([`GithubIntake::execute_command`]).
#[derive(Clone, Debug, PartialEq)]
pub enum CommandOutcome {
    /// `run`: a job was queued, or the issue already had an active one.
    Started(StartOutcome),
    /// `cancel`: the job cancelled (or marked for cancellation, if a worker holds it); `None` when
    /// the issue had no job that can be cancelled (none active, or its pull request is open).
    Cancelled(Option<Job>),
    /// `retry`: a new job for the issue's latest failed or cancelled job, or the issue's active
    /// job; `None` when there is nothing to retry.
    Retried(Option<StartOutcome>),
}

/// The longest GitHub login accepted (GitHub's own limit is 39; bots add `[bot]`).
const MAX_LOGIN_CHARS: usize = 100;

/// Checks a GitHub login (1 to 100 printable characters, no whitespace).
pub(crate) fn validate_login(login: &str) -> Result<String> {
    let ok = !login.is_empty()
        && login.chars().count() <= MAX_LOGIN_CHARS
        && !login.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(login.to_owned()) } else { Err(Error::invalid(format!("`{login}` is not a valid GitHub login"))) }
}

/// The timeline label of a GitHub user acting through a webhook: `github:<login>`.
pub(crate) fn actor_label(login: &str) -> Result<String> {
    Ok(format!("github:{}", validate_login(login)?))
}

/// Checks a GitHub numeric id (installation, repository, comment).
pub(crate) fn validate_github_id(id: i64, what: &str) -> Result<i64> {
    if id > 0 { Ok(id) } else { Err(Error::invalid(format!("{what} must be a positive GitHub id"))) }
}

impl NewCommand {
    /// Checks every field; the issue's number is set to `issue_number`.
    pub fn validate(mut self) -> Result<Self> {
        if self.issue_number == 0 || self.issue_number > i64::MAX as u64 {
            return Err(Error::invalid("issue_number must be a positive issue number"));
        }
        self.source.validate(self.command)?;
        self.login = validate_login(&self.login)?;
        self.author_login = self.author_login.as_deref().map(validate_login).transpose()?;
        if self.command == CommandKind::Run && self.issue.is_none() {
            return Err(Error::invalid("a `run` command needs the issue to start a job with"));
        }
        if let Some(mut issue) = self.issue.take() {
            issue.number = Some(self.issue_number);
            self.issue = Some(issue.validate()?);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in [CommandKind::Run, CommandKind::Cancel, CommandKind::Retry] {
            assert_eq!(c.as_str().parse::<CommandKind>().unwrap(), c);
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
        for s in [CommandStatus::Pending, CommandStatus::Done, CommandStatus::Refused, CommandStatus::Failed] {
            assert_eq!(s.as_str().parse::<CommandStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("launch".parse::<CommandKind>().is_err());
    }

    #[test]
    fn command_sources_round_trip_through_their_stored_form() {
        for source in [
            CommandSource::Comment { comment_id: 77 },
            CommandSource::Label { delivery_id: "72d3162e-cc78-11e3-81ab-4c9367dc0958".into() },
            CommandSource::Assignment { delivery_id: "a:b".into() },
        ] {
            let trigger = source.trigger().as_str();
            assert_eq!(CommandSource::from_stored(trigger, &source.key()), Some(source));
        }
        assert_eq!(CommandSource::from_stored("label", "comment:1"), None);
        assert_eq!(CommandSource::from_stored("comment", "comment:x"), None);
    }

    #[test]
    fn active_states_are_the_non_terminal_ones() {
        for state in JobState::ALL {
            assert_eq!(ACTIVE_STATES.contains(&state), !state.is_terminal(), "{state}");
        }
    }

    #[test]
    fn logins_are_checked() {
        assert_eq!(actor_label("octocat").unwrap(), "github:octocat");
        assert!(validate_login("dependabot[bot]").is_ok());
        for bad in ["", "a b", "tab\t", &"x".repeat(101)] {
            assert!(validate_login(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_run_command_needs_its_issue() {
        let command = NewCommand {
            repo_id: RepoId::new(),
            issue_number: 7,
            command: CommandKind::Run,
            source: CommandSource::Comment { comment_id: 1 },
            login: "octocat".into(),
            author_login: None,
            issue: None,
        };
        assert!(command.clone().validate().is_err());
        let issue = IssueRef { number: None, title: " Fix ".into(), body: String::new(), url: None, author: None };
        let valid = NewCommand { issue: Some(issue), ..command.clone() }.validate().unwrap();
        assert_eq!(valid.issue.as_ref().map(|i| (i.number, i.title.as_str())), Some((Some(7), "Fix")));
        let zero = CommandSource::Comment { comment_id: 0 };
        assert!(NewCommand { command: CommandKind::Cancel, source: zero, ..command.clone() }.validate().is_err());
        let label = CommandSource::Label { delivery_id: "d-1".into() };
        assert!(NewCommand { command: CommandKind::Cancel, source: label, ..command.clone() }.validate().is_err());
        assert!(NewCommand { command: CommandKind::Cancel, issue_number: 0, ..command }.validate().is_err());
    }
}
