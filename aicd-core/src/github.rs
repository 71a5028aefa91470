//! The GitHub integration's data: App installations linked to organizations, the repositories
//! that follow them, `/aicd` comment commands waiting for their author's permission check, and
//! what a trigger does to an issue's jobs.
//!
//! Everything here touches the database only (no GitHub API call), so a webhook request can
//! persist and enqueue within GitHub's 10 seconds. Organization admins link and unlink
//! installations through [`crate::Core`] (permission
//! [`crate::tenancy::Permission::IntegrationManage`]); the webhook route and the command worker
//! use [`GithubIntake`], which acts without an [`crate::tenancy::Actor`] and must only be handed
//! verified webhook data.
//!
//! An issue has at most one *active* job (see [`ACTIVE_STATES`]): a trigger on an issue that has
//! one gets [`StartOutcome::AlreadyActive`], even when two deliveries race.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use crate::service::GithubIntake;

use crate::jobs::{IssueRef, Job, JobState, Lease};
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
    pub installation_id: i64,
    /// The organization it is linked to.
    pub org_id: OrgId,
    /// The login of the GitHub account (organization or user) the App is installed on, if known.
    pub account_login: Option<String>,
    /// Whether the installation is suspended on GitHub (its events are to be ignored).
    pub suspended: bool,
    /// When it was linked.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A repository an installation grants access to, as a webhook names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubRepoInfo {
    /// GitHub's numeric repository id (stable across renames).
    pub repo_id: i64,
    /// `owner/name`.
    pub full_name: String,
    /// Its default branch, when the webhook said; used only when the repository is first
    /// registered (`main` otherwise), never to overwrite the branch an admin chose.
    pub default_branch: Option<String>,
}

/// What [`GithubIntake::sync_github_repos`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RepoSync {
    /// Repositories registered or brought up to date (name, installation).
    pub upserted: Vec<Repository>,
    /// Repositories removed from the organization (with their finished jobs).
    pub removed: Vec<RepoId>,
    /// Repositories removed from the installation but kept, because they have an active job
    /// (see [`ACTIVE_STATES`]). They stay registered until an admin deletes them.
    pub kept: Vec<Repository>,
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

/// A comment command to record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCommand {
    /// The repository (registered with the organization).
    pub repo_id: RepoId,
    /// The issue the comment is on.
    pub issue_number: u64,
    /// The command.
    pub command: CommandKind,
    /// The comment author's GitHub login.
    pub login: String,
    /// GitHub's comment id: recording the same comment twice records one command.
    pub comment_id: i64,
    /// The issue (title, body, address, author) to start a job with; required for
    /// [`CommandKind::Run`], whose job is created from it. Its number is set to `issue_number`.
    pub issue: Option<IssueRef>,
}

/// A recorded comment command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Its identifier.
    pub id: CommandId,
    /// The organization.
    pub org_id: OrgId,
    /// The repository.
    pub repo_id: RepoId,
    /// The issue the comment is on.
    pub issue_number: u64,
    /// The command.
    pub command: CommandKind,
    /// The comment author's GitHub login.
    pub login: String,
    /// GitHub's comment id.
    pub comment_id: i64,
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
        validate_github_id(self.comment_id, "comment_id")?;
        self.login = validate_login(&self.login)?;
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
            login: "octocat".into(),
            comment_id: 1,
            issue: None,
        };
        assert!(command.clone().validate().is_err());
        let issue = IssueRef { number: None, title: " Fix ".into(), body: String::new(), url: None, author: None };
        let valid = NewCommand { issue: Some(issue), ..command.clone() }.validate().unwrap();
        assert_eq!(valid.issue.as_ref().map(|i| (i.number, i.title.as_str())), Some((Some(7), "Fix")));
        assert!(NewCommand { command: CommandKind::Cancel, comment_id: 0, ..command.clone() }.validate().is_err());
        assert!(NewCommand { command: CommandKind::Cancel, issue_number: 0, ..command }.validate().is_err());
    }
}
