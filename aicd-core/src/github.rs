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

/// The label that starts a job unless a repository or its organization chooses another.
pub const DEFAULT_TRIGGER_LABEL: &str = "aicd";

/// The longest trigger label accepted (GitHub's own limit on label names).
const MAX_LABEL_CHARS: usize = 50;

/// What starts a job for an issue of a repository: resolved from the repository's settings over
/// the organization's.
///
/// Both settings objects may hold a `triggers` member:
///
/// ```json
/// {"triggers": {"label": "aicd", "assignment": true, "commands": true}}
/// ```
///
/// `label` is the label that starts a job (`null` disables label triggers), `assignment` whether
/// assigning the issue to the App's bot user does, `commands` whether `/aicd run|cancel|retry`
/// comments are obeyed. Each key is optional: the repository's value wins, then the
/// organization's, then the default ([`TriggerSettings::default`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerSettings {
    /// The label that starts a job when added (or present when the issue is opened); `None`
    /// disables label triggers. Compared as GitHub compares label names: case-insensitively
    /// (see [`TriggerSettings::matches_label`]).
    pub label: Option<String>,
    /// Whether assigning the issue to the App's bot user starts a job.
    pub assignment: bool,
    /// Whether `/aicd run|cancel|retry` comments are obeyed.
    pub commands: bool,
}

impl Default for TriggerSettings {
    /// Label [`DEFAULT_TRIGGER_LABEL`], assignment and commands on.
    fn default() -> Self {
        Self { label: Some(DEFAULT_TRIGGER_LABEL.to_owned()), assignment: true, commands: true }
    }
}

impl TriggerSettings {
    /// Resolves the triggers of a repository: for each of `label`, `assignment` and `commands`,
    /// the repository's `triggers` value if it has one, else the organization's, else the default
    /// (label [`DEFAULT_TRIGGER_LABEL`], assignment and commands on). An explicit `"label": null`
    /// disables label triggers and overrides a label set further up.
    ///
    /// Never fails: a malformed value (a `triggers` that is not an object, a key of the wrong
    /// type, a label [`TriggerSettings::validate`] would refuse) reads as absent.
    pub fn resolve(org_settings: &serde_json::Value, repo_settings: &serde_json::Value) -> TriggerSettings {
        let layers = [triggers_of(repo_settings), triggers_of(org_settings)];
        let defaults = TriggerSettings::default();
        let label = layers
            .iter()
            .flatten()
            .find_map(|t| match t.get("label")? {
                serde_json::Value::Null => Some(None),
                serde_json::Value::String(label) => check_label(label).ok().map(|l| Some(l.to_owned())),
                _ => None,
            })
            .unwrap_or(defaults.label);
        let flag = |key: &str, default: bool| {
            layers.iter().flatten().find_map(|t| t.get(key).and_then(serde_json::Value::as_bool)).unwrap_or(default)
        };
        TriggerSettings {
            label,
            assignment: flag("assignment", defaults.assignment),
            commands: flag("commands", defaults.commands),
        }
    }

    /// Checks a settings object's `triggers` member (absent is fine): an object with only the keys
    /// `label` (a non-blank string of at most 50 characters, or `null` to disable label triggers),
    /// `assignment` (a boolean) and `commands` (a boolean), each optional.
    /// [`Error::InvalidInput`] otherwise. A `settings` that is not an object has no `triggers`
    /// member and passes (whether settings must be an object is checked elsewhere).
    pub fn validate(settings: &serde_json::Value) -> Result<()> {
        let Some(triggers) = settings.get("triggers") else { return Ok(()) };
        let Some(triggers) = triggers.as_object() else {
            return Err(Error::invalid("settings.triggers must be a JSON object"));
        };
        for (key, value) in triggers {
            match (key.as_str(), value) {
                ("label", serde_json::Value::Null) => {}
                ("label", serde_json::Value::String(label)) => {
                    check_label(label)?;
                }
                ("label", _) => return Err(Error::invalid("settings.triggers.label must be a string or null")),
                ("assignment" | "commands", serde_json::Value::Bool(_)) => {}
                ("assignment" | "commands", _) => {
                    return Err(Error::invalid(format!("settings.triggers.{key} must be true or false")));
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "settings.triggers has an unknown key `{key}` (expected label, assignment or commands)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether `label` is the trigger label. Label names are compared as GitHub compares them:
    /// case-insensitively (`AICD` matches `aicd`), ignoring surrounding whitespace. Always `false`
    /// when label triggers are disabled.
    pub fn matches_label(&self, label: &str) -> bool {
        self.label.as_deref().is_some_and(|own| own.trim().to_lowercase() == label.trim().to_lowercase())
    }
}

/// The `triggers` object of a settings object, if it has one.
fn triggers_of(settings: &serde_json::Value) -> Option<&serde_json::Map<String, serde_json::Value>> {
    settings.get("triggers")?.as_object()
}

/// Checks a trigger label: not blank, at most 50 characters, no control characters.
fn check_label(label: &str) -> Result<&str> {
    if label.trim().is_empty() {
        return Err(Error::invalid("settings.triggers.label must not be blank (use null to disable label triggers)"));
    }
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(Error::invalid(format!("settings.triggers.label must be at most {MAX_LABEL_CHARS} characters")));
    }
    if label.chars().any(char::is_control) {
        return Err(Error::invalid("settings.triggers.label must not contain control characters"));
    }
    Ok(label)
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

    #[test]
    fn triggers_default_when_absent_everywhere() {
        let empty = serde_json::json!({});
        let resolved = TriggerSettings::resolve(&empty, &empty);
        assert_eq!(resolved, TriggerSettings::default());
        assert_eq!(
            resolved,
            TriggerSettings { label: Some(DEFAULT_TRIGGER_LABEL.into()), assignment: true, commands: true }
        );
        assert_eq!(DEFAULT_TRIGGER_LABEL, "aicd");
        let other = serde_json::json!({ "policy": { "max_files": 3 } });
        assert_eq!(TriggerSettings::resolve(&other, &serde_json::Value::Null), TriggerSettings::default());
    }

    #[test]
    fn repository_triggers_override_the_organization_key_by_key() {
        let org = serde_json::json!({ "triggers": { "label": "ai", "assignment": false, "commands": false } });
        let repo = serde_json::json!({ "triggers": { "commands": true } });
        assert_eq!(
            TriggerSettings::resolve(&org, &repo),
            TriggerSettings { label: Some("ai".into()), assignment: false, commands: true }
        );
        // The org alone; the repository alone.
        assert_eq!(
            TriggerSettings::resolve(&org, &serde_json::json!({})),
            TriggerSettings { label: Some("ai".into()), assignment: false, commands: false }
        );
        let repo = serde_json::json!({ "triggers": { "label": "bot-please", "assignment": false } });
        assert_eq!(
            TriggerSettings::resolve(&serde_json::json!({}), &repo),
            TriggerSettings { label: Some("bot-please".into()), assignment: false, commands: true }
        );
    }

    #[test]
    fn a_null_label_disables_label_triggers_at_either_level() {
        let org = serde_json::json!({ "triggers": { "label": null } });
        let resolved = TriggerSettings::resolve(&org, &serde_json::json!({}));
        assert_eq!(resolved.label, None);
        assert!(!resolved.matches_label("aicd"));
        // A repository may turn it back on, or turn off the org's label.
        let repo = serde_json::json!({ "triggers": { "label": "go" } });
        assert_eq!(TriggerSettings::resolve(&org, &repo).label.as_deref(), Some("go"));
        let org = serde_json::json!({ "triggers": { "label": "ai" } });
        let repo = serde_json::json!({ "triggers": { "label": null } });
        assert_eq!(TriggerSettings::resolve(&org, &repo).label, None);
    }

    #[test]
    fn malformed_trigger_values_read_as_absent() {
        let org = serde_json::json!({ "triggers": { "label": "ai", "assignment": false } });
        for repo in [
            serde_json::json!({ "triggers": "label" }),
            serde_json::json!({ "triggers": null }),
            serde_json::json!({ "triggers": { "label": 5, "assignment": "no", "commands": 0 } }),
            serde_json::json!({ "triggers": { "label": "" } }),
            serde_json::json!({ "triggers": { "label": "x".repeat(51) } }),
            serde_json::json!([1, 2]),
        ] {
            assert_eq!(
                TriggerSettings::resolve(&org, &repo),
                TriggerSettings { label: Some("ai".into()), assignment: false, commands: true },
                "{repo}"
            );
        }
        let bad_org = serde_json::json!({ "triggers": { "label": ["x"], "commands": "yes" } });
        assert_eq!(TriggerSettings::resolve(&bad_org, &serde_json::json!({})), TriggerSettings::default());
    }

    #[test]
    fn labels_match_case_insensitively() {
        let triggers = TriggerSettings { label: Some("AI-CD Ready".into()), ..TriggerSettings::default() };
        assert!(triggers.matches_label("ai-cd ready"));
        assert!(triggers.matches_label("AI-CD READY"));
        assert!(!triggers.matches_label("ai-cd"));
        assert!(TriggerSettings::default().matches_label("AICD"));
        let unicode = TriggerSettings { label: Some("Ärger".into()), ..TriggerSettings::default() };
        assert!(unicode.matches_label("ÄRGER"));
        assert!(triggers.matches_label(" ai-cd ready "));
        let off = TriggerSettings { label: None, ..TriggerSettings::default() };
        assert!(!off.matches_label("aicd"));
    }

    #[test]
    fn trigger_settings_are_validated() {
        for ok in [
            serde_json::json!({}),
            serde_json::json!({ "policy": {} }),
            serde_json::json!({ "triggers": {} }),
            serde_json::json!({ "triggers": { "label": null } }),
            serde_json::json!({ "triggers": { "label": "x".repeat(50), "assignment": false, "commands": true } }),
            serde_json::json!({ "triggers": { "label": "ready for AI 🤖" } }),
        ] {
            assert!(TriggerSettings::validate(&ok).is_ok(), "{ok}");
        }
        for bad in [
            serde_json::json!({ "triggers": null }),
            serde_json::json!({ "triggers": [] }),
            serde_json::json!({ "triggers": "aicd" }),
            serde_json::json!({ "triggers": { "label": "" } }),
            serde_json::json!({ "triggers": { "label": "   " } }),
            serde_json::json!({ "triggers": { "label": "x".repeat(51) } }),
            serde_json::json!({ "triggers": { "label": "a\nb" } }),
            serde_json::json!({ "triggers": { "label": 1 } }),
            serde_json::json!({ "triggers": { "label": ["aicd"] } }),
            serde_json::json!({ "triggers": { "assignment": "yes" } }),
            serde_json::json!({ "triggers": { "commands": null } }),
            serde_json::json!({ "triggers": { "labels": ["aicd"] } }),
        ] {
            assert!(matches!(TriggerSettings::validate(&bad), Err(Error::InvalidInput(_))), "{bad}");
        }
    }
}
