//! The webhook events AI-CD acts on, read tolerantly from GitHub's payloads.
//!
//! Payloads are read field by field from the JSON, so unknown fields are ignored, and a null, a
//! missing field or a field of an unexpected type reads as absent (`None`, an empty string or
//! list, `false`). Only a payload that is not well-formed JSON is an error; a handled event that
//! lacks something AI-CD cannot do without (the repository of an `issues` event, the installation
//! of an `installation` event) becomes [`WebhookEvent::Ignored`] with the reason.

use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::{Error, Result};

/// A webhook delivery, by its `X-GitHub-Event` header and body.
///
/// It serializes (for the bindings) as one object: `kind` names the variant (`ping`,
/// `installation`, `installation_repositories`, `issues`, `issue_comment`, `pull_request`,
/// `ignored`) beside the variant's fields; actions are their GitHub names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WebhookEvent {
    /// `ping`: sent when the webhook is set up.
    Ping(Ping),
    /// `installation`: the App was installed, uninstalled, suspended or unsuspended.
    Installation(InstallationEvent),
    /// `installation_repositories`: repositories were added to or removed from an installation.
    InstallationRepositories(InstallationRepositoriesEvent),
    /// `issues`: an issue was opened, labeled, assigned, closed, ...
    Issues(IssuesEvent),
    /// `issue_comment`: a comment on an issue or a pull request.
    IssueComment(IssueCommentEvent),
    /// `pull_request`: a pull request changed (AI-CD follows merges and closes of its own).
    PullRequest(PullRequestEvent),
    /// Any other event, or a handled one AI-CD cannot act on.
    Ignored(Ignored),
}

/// A `ping` event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ping {
    /// GitHub's random piece of wisdom.
    pub zen: Option<String>,
    /// The webhook's id.
    pub hook_id: Option<u64>,
}

/// What happened to an installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstallationAction {
    /// The App was installed.
    Created,
    /// The App was uninstalled.
    Deleted,
    /// The installation was suspended.
    Suspend,
    /// The installation was unsuspended.
    Unsuspend,
    /// Anything else (`new_permissions_accepted`, ...), by name.
    Other(String),
}

/// A repository as installation events list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepoSummary {
    /// GitHub's numeric id (stable across renames).
    pub id: u64,
    /// `owner/name`.
    pub full_name: String,
}

/// An `installation` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstallationEvent {
    /// What happened.
    pub action: InstallationAction,
    /// The installation's id.
    pub installation_id: u64,
    /// The login of the account (organization or user) the App is installed on.
    pub account_login: Option<String>,
    /// The repositories the installation covers (for `created`; empty when GitHub sends none).
    pub repositories: Vec<RepoSummary>,
    /// Who did it.
    pub sender_login: Option<String>,
}

/// What happened to an installation's repositories.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepositoriesAction {
    /// Repositories were added.
    Added,
    /// Repositories were removed.
    Removed,
}

/// An `installation_repositories` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstallationRepositoriesEvent {
    /// What happened.
    pub action: RepositoriesAction,
    /// The installation's id.
    pub installation_id: u64,
    /// The login of the account the App is installed on.
    pub account_login: Option<String>,
    /// The repositories added.
    pub added: Vec<RepoSummary>,
    /// The repositories removed.
    pub removed: Vec<RepoSummary>,
    /// Who did it.
    pub sender_login: Option<String>,
}

/// The repository an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RepoInfo {
    /// GitHub's numeric id (stable across renames).
    pub id: u64,
    /// `owner/name`.
    pub full_name: String,
    /// Its default branch, when GitHub said.
    pub default_branch: Option<String>,
}

/// An issue (or a pull request seen as an issue) as events carry it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct IssueInfo {
    /// Its number in the repository.
    pub number: u64,
    /// Its title (empty if GitHub sent none).
    pub title: String,
    /// Its body in markdown (empty when GitHub sends `null`, as for an issue opened without one).
    pub body: String,
    /// Its web address (empty if GitHub sent none).
    pub html_url: String,
    /// The login of its author (`None` for a deleted account).
    pub user_login: Option<String>,
    /// The names of its labels.
    pub labels: Vec<String>,
    /// `open` or `closed` (empty if GitHub sent none).
    pub state: String,
    /// Whether it is a pull request (comments on pull requests arrive as `issue_comment`).
    pub is_pull_request: bool,
}

/// What happened to an issue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuesAction {
    /// It was opened.
    Opened,
    /// A label was added ([`IssuesEvent::label`] says which).
    Labeled,
    /// Someone was assigned ([`IssuesEvent::assignee`] says who).
    Assigned,
    /// It was closed.
    Closed,
    /// Anything else (`edited`, `reopened`, `unlabeled`, ...), by name.
    Other(String),
}

/// An `issues` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IssuesEvent {
    /// What happened.
    pub action: IssuesAction,
    /// The App installation it came through (`None` if GitHub sent none).
    pub installation_id: Option<u64>,
    /// The repository.
    pub repository: RepoInfo,
    /// The issue.
    pub issue: IssueInfo,
    /// For `labeled`: the label's name.
    pub label: Option<String>,
    /// For `assigned`: the assignee's login.
    pub assignee: Option<String>,
    /// Who did it.
    pub sender_login: Option<String>,
}

/// What happened to a comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommentAction {
    /// It was posted.
    Created,
    /// Anything else (`edited`, `deleted`), by name.
    Other(String),
}

/// A comment on an issue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CommentInfo {
    /// Its id.
    pub id: u64,
    /// Its text in markdown (empty if GitHub sent none).
    pub body: String,
    /// The login of its author (`None` for a deleted account).
    pub user_login: Option<String>,
    /// The author's association with the repository (`OWNER`, `MEMBER`, `COLLABORATOR`,
    /// `CONTRIBUTOR`, `NONE`, ...), as GitHub sent it.
    pub author_association: Option<String>,
}

/// An `issue_comment` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IssueCommentEvent {
    /// What happened.
    pub action: CommentAction,
    /// The App installation it came through.
    pub installation_id: Option<u64>,
    /// The repository.
    pub repository: RepoInfo,
    /// The issue (or pull request) commented on.
    pub issue: IssueInfo,
    /// The comment.
    pub comment: CommentInfo,
    /// Who did it.
    pub sender_login: Option<String>,
}

/// What happened to a pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullRequestAction {
    /// It was opened.
    Opened,
    /// It was closed, merged or not ([`PullRequestEvent::merged`] says).
    Closed,
    /// It was reopened.
    Reopened,
    /// Anything else (`synchronize`, `edited`, ...), by name.
    Other(String),
}

/// A `pull_request` event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PullRequestEvent {
    /// What happened.
    pub action: PullRequestAction,
    /// The App installation it came through.
    pub installation_id: Option<u64>,
    /// The repository.
    pub repository: RepoInfo,
    /// The pull request's number.
    pub number: u64,
    /// Whether it is merged (`false` when GitHub sent `null`).
    pub merged: bool,
    /// The name of the branch it proposes (empty if GitHub sent none).
    pub head_ref: String,
    /// Its web address (empty if GitHub sent none).
    pub html_url: String,
    /// Who did it.
    pub sender_login: Option<String>,
}

/// An event AI-CD does not act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Ignored {
    /// The `X-GitHub-Event` name.
    pub event: String,
    /// The payload's `action`, if it had one.
    pub action: Option<String>,
    /// Why it is ignored, for logs.
    pub reason: String,
}

/// Reads a delivery: `event_name` is its `X-GitHub-Event` header, `body` its raw body (verify its
/// signature first with [`super::WebhookSecret::verify`]).
///
/// Fails with [`Error::MalformedPayload`] only when `body` is not well-formed JSON; every
/// well-formed body is an event, [`WebhookEvent::Ignored`] (with the reason) when it is not one
/// AI-CD handles or lacks what AI-CD needs.
pub fn parse_event(event_name: &str, body: &[u8]) -> Result<WebhookEvent> {
    parse_delivery(event_name, body).map(|delivery| delivery.event)
}

/// A delivery read once: its event, and the envelope fields every delivery is recorded with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The event, as [`parse_event`] reads it.
    pub event: WebhookEvent,
    /// The payload's `action`, if it has a textual one.
    pub action: Option<String>,
    /// The App installation it came through (`installation.id`), if any.
    pub installation_id: Option<u64>,
}

/// Reads a delivery as [`parse_event`] does, keeping its `action` and installation id even when
/// the event is [`WebhookEvent::Ignored`] (to record what was received).
pub fn parse_delivery(event_name: &str, body: &[u8]) -> Result<Delivery> {
    let payload: Value = serde_json::from_slice(body).map_err(|e| Error::MalformedPayload(e.to_string()))?;
    Ok(Delivery {
        event: read_event(event_name, &payload),
        action: text(&payload, &["action"]),
        installation_id: number(&payload, &["installation", "id"]),
    })
}

/// The event a well-formed payload carries.
fn read_event(event_name: &str, payload: &Value) -> WebhookEvent {
    let action = text(payload, &["action"]);
    let ignored = |reason: &str| {
        WebhookEvent::Ignored(Ignored {
            event: event_name.to_owned(),
            action: action.clone(),
            reason: reason.to_owned(),
        })
    };
    if !payload.is_object() {
        return ignored("the payload is not a JSON object");
    }
    let sender_login = text(payload, &["sender", "login"]);
    let installation_id = number(payload, &["installation", "id"]);
    match event_name {
        "ping" => WebhookEvent::Ping(Ping { zen: text(payload, &["zen"]), hook_id: number(payload, &["hook_id"]) }),
        "installation" => {
            let Some(installation_id) = installation_id else { return ignored("no installation id") };
            let Some(action) = action.as_deref() else { return ignored("no action") };
            WebhookEvent::Installation(InstallationEvent {
                action: match action {
                    "created" => InstallationAction::Created,
                    "deleted" => InstallationAction::Deleted,
                    "suspend" => InstallationAction::Suspend,
                    "unsuspend" => InstallationAction::Unsuspend,
                    other => InstallationAction::Other(other.to_owned()),
                },
                installation_id,
                account_login: text(payload, &["installation", "account", "login"]),
                repositories: repo_list(payload.get("repositories")),
                sender_login,
            })
        }
        "installation_repositories" => {
            let Some(installation_id) = installation_id else { return ignored("no installation id") };
            let action = match action.as_deref() {
                Some("added") => RepositoriesAction::Added,
                Some("removed") => RepositoriesAction::Removed,
                Some(_) => return ignored("not an action AI-CD handles"),
                None => return ignored("no action"),
            };
            WebhookEvent::InstallationRepositories(InstallationRepositoriesEvent {
                action,
                installation_id,
                account_login: text(payload, &["installation", "account", "login"]),
                added: repo_list(payload.get("repositories_added")),
                removed: repo_list(payload.get("repositories_removed")),
                sender_login,
            })
        }
        "issues" => {
            let Some(action) = action.as_deref() else { return ignored("no action") };
            let Some(repository) = repo_info(payload.get("repository")) else {
                return ignored("no repository id and full name");
            };
            let Some(issue) = issue_info(payload.get("issue")) else { return ignored("no issue number") };
            WebhookEvent::Issues(IssuesEvent {
                action: match action {
                    "opened" => IssuesAction::Opened,
                    "labeled" => IssuesAction::Labeled,
                    "assigned" => IssuesAction::Assigned,
                    "closed" => IssuesAction::Closed,
                    other => IssuesAction::Other(other.to_owned()),
                },
                installation_id,
                repository,
                issue,
                label: text(payload, &["label", "name"]),
                assignee: text(payload, &["assignee", "login"]),
                sender_login,
            })
        }
        "issue_comment" => {
            let Some(action) = action.as_deref() else { return ignored("no action") };
            let Some(repository) = repo_info(payload.get("repository")) else {
                return ignored("no repository id and full name");
            };
            let Some(issue) = issue_info(payload.get("issue")) else { return ignored("no issue number") };
            let Some(comment_id) = number(payload, &["comment", "id"]) else {
                return ignored("no comment id");
            };
            WebhookEvent::IssueComment(IssueCommentEvent {
                action: match action {
                    "created" => CommentAction::Created,
                    other => CommentAction::Other(other.to_owned()),
                },
                installation_id,
                repository,
                issue,
                comment: CommentInfo {
                    id: comment_id,
                    body: text(payload, &["comment", "body"]).unwrap_or_default(),
                    user_login: text(payload, &["comment", "user", "login"]),
                    author_association: text(payload, &["comment", "author_association"]),
                },
                sender_login,
            })
        }
        "pull_request" => {
            let Some(action) = action.as_deref() else { return ignored("no action") };
            let Some(repository) = repo_info(payload.get("repository")) else {
                return ignored("no repository id and full name");
            };
            let number = number(payload, &["number"]).or_else(|| number(payload, &["pull_request", "number"]));
            let Some(number) = number else { return ignored("no pull request number") };
            WebhookEvent::PullRequest(PullRequestEvent {
                action: match action {
                    "opened" => PullRequestAction::Opened,
                    "closed" => PullRequestAction::Closed,
                    "reopened" => PullRequestAction::Reopened,
                    other => PullRequestAction::Other(other.to_owned()),
                },
                installation_id,
                repository,
                number,
                merged: boolean(payload, &["pull_request", "merged"]).unwrap_or(false),
                head_ref: text(payload, &["pull_request", "head", "ref"]).unwrap_or_default(),
                html_url: text(payload, &["pull_request", "html_url"]).unwrap_or_default(),
                sender_login,
            })
        }
        _ => ignored("not an event AI-CD handles"),
    }
}

fn at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

fn text(value: &Value, path: &[&str]) -> Option<String> {
    at(value, path).and_then(Value::as_str).map(str::to_owned)
}

fn number(value: &Value, path: &[&str]) -> Option<u64> {
    at(value, path).and_then(Value::as_u64)
}

fn boolean(value: &Value, path: &[&str]) -> Option<bool> {
    at(value, path).and_then(Value::as_bool)
}

fn repo_list(value: Option<&Value>) -> Vec<RepoSummary> {
    let items = value.and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    items
        .iter()
        .filter_map(|r| Some(RepoSummary { id: number(r, &["id"])?, full_name: text(r, &["full_name"])? }))
        .collect()
}

fn repo_info(value: Option<&Value>) -> Option<RepoInfo> {
    let r = value?;
    Some(RepoInfo {
        id: number(r, &["id"])?,
        full_name: text(r, &["full_name"])?,
        default_branch: text(r, &["default_branch"]),
    })
}

fn issue_info(value: Option<&Value>) -> Option<IssueInfo> {
    let i = value?;
    let labels = i.get("labels").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    Some(IssueInfo {
        number: number(i, &["number"])?,
        title: text(i, &["title"]).unwrap_or_default(),
        body: text(i, &["body"]).unwrap_or_default(),
        html_url: text(i, &["html_url"]).unwrap_or_default(),
        user_login: text(i, &["user", "login"]),
        labels: labels.iter().filter_map(|l| text(l, &["name"]).or_else(|| l.as_str().map(str::to_owned))).collect(),
        state: text(i, &["state"]).unwrap_or_default(),
        is_pull_request: i.get("pull_request").is_some_and(|p| !p.is_null()),
    })
}

/// A command given in a comment: core's [`CommandKind`](aicd_core::github::CommandKind), recorded
/// as it is parsed.
pub use aicd_core::github::CommandKind as Command;

/// The first `/aicd run`, `/aicd cancel` or `/aicd retry` command in a comment, if any.
///
/// A command must begin a line (leading and trailing whitespace ignored); `/aicd` and the verb are
/// matched case-insensitively and may be followed by more words, which are ignored. Lines quoted
/// with `>` and lines inside fenced code blocks do not count, so quoting or documenting a command
/// does not run it.
pub fn parse_command(comment_body: &str) -> Option<Command> {
    let mut fence: Option<(char, usize)> = None;
    for line in comment_body.lines() {
        let line = line.trim();
        let fence_len = |c: char| line.chars().take_while(|x| *x == c).count();
        if let Some((c, len)) = fence {
            if fence_len(c) >= len && line.trim_start_matches(c).trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if let Some(c) = ['`', '~'].into_iter().find(|c| fence_len(*c) >= 3) {
            fence = Some((c, fence_len(c)));
            continue;
        }
        if line.starts_with('>') {
            continue;
        }
        let mut words = line.split_whitespace();
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("/aicd")) {
            continue;
        }
        let command = match words.next().map(str::to_ascii_lowercase).as_deref() {
            Some("run") => Command::Run,
            Some("cancel") => Command::Cancel,
            Some("retry") => Command::Retry,
            _ => continue,
        };
        return Some(command);
    }
    None
}

/// Serializes action enums as GitHub's names for them (an `Other` as the name it carries).
macro_rules! action_names {
    ($($ty:ident { $($variant:ident => $name:literal),* $(,)? } $(, $other:ident)?;)*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(match self {
                    $(Self::$variant => $name,)*
                    $(Self::$other(name) => name,)?
                })
            }
        }
    )*};
}

action_names! {
    InstallationAction { Created => "created", Deleted => "deleted", Suspend => "suspend", Unsuspend => "unsuspend" }, Other;
    RepositoriesAction { Added => "added", Removed => "removed" };
    IssuesAction { Opened => "opened", Labeled => "labeled", Assigned => "assigned", Closed => "closed" }, Other;
    CommentAction { Created => "created" }, Other;
    PullRequestAction { Opened => "opened", Closed => "closed", Reopened => "reopened" }, Other;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_begin_a_line_and_quotes_and_code_do_not_count() {
        assert_eq!(parse_command("/aicd run"), Some(Command::Run));
        assert_eq!(parse_command("  /AICD   Cancel  \n"), Some(Command::Cancel));
        assert_eq!(parse_command("Thanks!\r\n/aicd retry please"), Some(Command::Retry));
        assert_eq!(parse_command("please /aicd run"), None);
        assert_eq!(parse_command("> /aicd run\nno"), None);
        assert_eq!(parse_command("  > /aicd run"), None);
        assert_eq!(parse_command("/aicd running"), None);
        assert_eq!(parse_command("/aicdrun"), None);
        assert_eq!(parse_command("/aicd"), None);
        assert_eq!(parse_command("/aicd stop\n/aicd cancel"), Some(Command::Cancel));
        assert_eq!(parse_command("```\n/aicd run\n```\n"), None);
        assert_eq!(parse_command("~~~~\n/aicd run\n~~~~\n/aicd retry"), Some(Command::Retry));
        assert_eq!(parse_command(""), None);
    }
}
