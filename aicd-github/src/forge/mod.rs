//! The GitHub forge: [`aicd_core::forge::Forge`] over GitHub's REST API, acting as the App
//! installation that gives access to each repository.

mod rules;
mod view;

use std::collections::BTreeMap;
use std::sync::Arc;

use aicd_agent_api::{Changeset, FileChange, RepoView, RepoViewLimits};
use aicd_core::forge::{BranchRef, CommentId, Forge, NewPullRequest};
use aicd_core::github::{GithubRepoId, GithubStore, InstallationId};
use aicd_core::jobs::PullRequestRef;
use aicd_core::repos::{RepoSource, Repository};
use aicd_core::{Error, Result};
use base64::Engine;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::json;

use self::rules::{
    apply_changes, check_branch_name, check_changes, check_comment, check_commit_target, check_pull_request,
    missing_default_branch, normalize_message,
};
use self::view::{GitHubView, Tree};
use crate::app::{InstallationTokens, TokenPurpose, TokenScope};
use crate::client::{InstallationClient, RepoName, Target, encode, rejected, status_error, unavailable};

/// A [`Forge`] for repositories on GitHub ([`RepoSource::Github`], whose `full_name` is
/// `owner/name`); any other source is refused with [`Error::Rejected`].
///
/// Every call first resolves, from the store, how the repository may be reached now
/// ([`GithubStore::github_access`]): a repository whose installation was unlinked, linked to
/// another organization or suspended, or a detached repository, is refused with
/// [`Error::Rejected`] before any token is requested. It then acts as that installation with a
/// token narrowed to the one repository and the call's needs (reads with
/// [`TokenPurpose::Read`], branches and commits with [`TokenPurpose::Push`], the pull request with
/// [`TokenPurpose::PullRequest`], comments with [`TokenPurpose::Converse`]), from the
/// [`InstallationTokens`] cache. It accepts and refuses the same inputs as the built-in forges
/// (`MemoryForge`, `LocalGitForge`), and is idempotent as the [`Forge`] contract requires:
///
/// - [`Forge::repo_view`] reads the default branch's tree recursively once and each file's blob
///   when it is read, within the view's [`RepoViewLimits`].
/// - [`Forge::create_branch`] creates the branch at the default branch's head, or returns it as it
///   is when it already exists.
/// - [`Forge::commit_changes`] writes blobs (base64, so any bytes), a tree on the branch head's
///   tree (deletions as `sha: null`, file modes kept), a commit and a fast-forward of the branch. A
///   retry whose commit is already the branch's head (same message, same changes on its parent) is
///   recognised and returned, and so is a changeset that would not change the head's tree: no
///   second commit, and no empty one.
/// - [`Forge::open_pull_request`] returns the open pull request of the branch if there is one, else
///   opens one against the default branch, adding `Closes #<issue>` to the body when the body does
///   not already close the issue.
///
/// Errors follow [`crate::client`]: transient ones (network, 5xx, rate limits with GitHub's
/// `retry_after`) are [`Error::Unavailable`], permanent ones (lost access, GitHub's validation
/// failures) [`Error::Rejected`], with `service` `github`.
#[derive(Clone)]
pub struct GitHubForge {
    tokens: InstallationTokens,
    access: Arc<dyn GithubStore>,
    limits: RepoViewLimits,
    recheck: std::time::Duration,
}

impl std::fmt::Debug for GitHubForge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubForge")
            .field("tokens", &self.tokens)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct GitRef {
    object: GitObject,
}

#[derive(Deserialize)]
struct GitObject {
    sha: String,
}

#[derive(Deserialize)]
struct GitCommit {
    sha: String,
    tree: GitObject,
    #[serde(default)]
    message: String,
    #[serde(default)]
    parents: Vec<GitObject>,
}

#[derive(Deserialize)]
struct Pull {
    number: u64,
    html_url: String,
    head: PullHead,
}

#[derive(Deserialize)]
struct PullHead {
    #[serde(rename = "ref")]
    name: String,
}

#[derive(Deserialize)]
struct Created {
    sha: String,
}

/// A leaf of a tree (a file, a symlink or a submodule) as a commit needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Leaf {
    mode: String,
    kind: String,
    sha: String,
}

/// One call's view of a repository: who to ask and what it is called.
struct Remote {
    client: InstallationClient,
    name: RepoName,
    /// The installation and repository the client's tokens are for.
    reached_as: (InstallationId, GithubRepoId),
}

impl GitHubForge {
    /// A forge acting through the installations of `tokens`' App, checking each repository's
    /// access in `access` (the store the repositories are registered in) before every call; its
    /// views have the default limits.
    pub fn new(tokens: InstallationTokens, access: Arc<dyn GithubStore>) -> Self {
        Self { tokens, access, limits: RepoViewLimits::default(), recheck: view::DEFAULT_ACCESS_RECHECK }
    }

    /// The same forge whose views trust a check of the repository's access for `every` before
    /// asking the store again (5 s by default; zero checks before every read of GitHub). It bounds
    /// how long a job step in progress can still read a repository after its installation is
    /// unlinked.
    #[must_use]
    pub fn with_access_recheck(mut self, every: std::time::Duration) -> Self {
        self.recheck = every;
        self
    }

    /// The same forge whose [`Forge::repo_view`]s enforce `limits`.
    #[must_use]
    pub fn with_view_limits(mut self, limits: RepoViewLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Who to ask about `repo`, for `purpose`: resolved from the store now, never from `repo`'s
    /// own copy of its installation.
    async fn target(&self, repo: &Repository, purpose: TokenPurpose) -> Result<Remote> {
        if !matches!(repo.source, RepoSource::Github { .. }) {
            return Err(rejected(format!("`{}` is not a GitHub repository", repo.full_name)));
        }
        let access = self.access.github_access(repo.org_id, repo.id).await?;
        let name = RepoName::parse(&access.full_name)?;
        let scope = TokenScope::repository(access.installation_id, access.repo_id, purpose);
        Ok(Remote { client: self.tokens.client(scope), name, reached_as: (access.installation_id, access.repo_id) })
    }
}

impl Remote {
    /// The head commit of `branch`, or `None` if GitHub says 404 (the branch, or the repository).
    async fn branch_head(&self, branch: &str) -> Result<Option<String>> {
        let path = format!("{}/git/ref/heads/{}", self.name.path(), encode(branch, true));
        let reply = self.client.send(Method::GET, &path, None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !reply.status.is_success() {
            return Err(status_error(&reply, &Target::Repo(&self.name)));
        }
        Ok(Some(reply.json::<GitRef>(&Target::Repo(&self.name))?.object.sha))
    }

    async fn default_head(&self, repo: &Repository) -> Result<String> {
        match self.branch_head(&repo.default_branch).await? {
            Some(head) => Ok(head),
            None => Err(self.client.explain_not_found(&self.name, missing_default_branch(repo)).await),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.client.call(Method::GET, &self.name, path, None).await
    }

    async fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: serde_json::Value) -> Result<T> {
        self.client.call(Method::POST, &self.name, path, Some(&body)).await
    }

    async fn commit(&self, sha: &str) -> Result<GitCommit> {
        self.get(&format!("{}/git/commits/{}", self.name.path(), encode(sha, false))).await
    }

    /// Every leaf of tree `sha` by path, or `None` when GitHub truncated the listing.
    async fn leaves(&self, sha: &str) -> Result<Option<BTreeMap<Vec<u8>, Leaf>>> {
        let tree: Tree =
            self.get(&format!("{}/git/trees/{}?recursive=1", self.name.path(), encode(sha, false))).await?;
        if tree.truncated {
            return Ok(None);
        }
        let leaves = tree
            .tree
            .into_iter()
            .filter(|item| item.kind != "tree")
            .map(|item| (item.path.into_bytes(), Leaf { mode: item.mode, kind: item.kind, sha: item.sha }))
            .collect();
        Ok(Some(leaves))
    }

    /// Writes the blob of each written file (in the order of the changes; `None` for deletions).
    async fn write_blobs(&self, changes: &[FileChange]) -> Result<Vec<Option<String>>> {
        let path = format!("{}/git/blobs", self.name.path());
        let mut blobs = Vec::with_capacity(changes.len());
        for change in changes {
            let sha = match change.content() {
                Some(content) => {
                    let content = base64::engine::general_purpose::STANDARD.encode(content);
                    let created: Created =
                        self.post(&path, json!({ "content": content, "encoding": "base64" })).await?;
                    Some(created.sha)
                }
                None => None,
            };
            blobs.push(sha);
        }
        Ok(blobs)
    }

    /// Writes a tree of `entries` on `base_tree`; `Ok(None)` when GitHub refuses the entries (422),
    /// as when they do not apply to that base.
    async fn write_tree(&self, base_tree: &str, entries: &[serde_json::Value]) -> Result<Option<String>> {
        let path = format!("{}/git/trees", self.name.path());
        let body = json!({ "base_tree": base_tree, "tree": entries });
        let reply = self.client.send(Method::POST, &path, Some(&body)).await?;
        if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
            return Ok(None);
        }
        if !reply.status.is_success() {
            return Err(status_error(&reply, &Target::Repo(&self.name)));
        }
        Ok(Some(reply.json::<Created>(&Target::Repo(&self.name))?.sha))
    }

    /// The open pull request whose head is `branch` of this repository, if there is one.
    async fn open_pull(&self, branch: &str) -> Result<Option<Pull>> {
        let head = encode(&format!("{}:{branch}", self.name.owner), false);
        let pulls: Vec<Pull> =
            self.get(&format!("{}/pulls?head={head}&state=open&per_page=100", self.name.path())).await?;
        Ok(pulls.into_iter().find(|p| p.head.name == branch))
    }
}

/// The tree entries (for `POST .../git/trees` on `base`'s tree) that turn `base` into `after`:
/// changed and added leaves with their blob, removed ones with `sha: null`.
fn diff_entries(base: &BTreeMap<Vec<u8>, Leaf>, after: &BTreeMap<Vec<u8>, Leaf>) -> Vec<serde_json::Value> {
    let mut entries = Vec::new();
    for (path, leaf) in after {
        if base.get(path) != Some(leaf) {
            let path = String::from_utf8_lossy(path);
            entries.push(json!({ "path": path, "mode": leaf.mode, "type": leaf.kind, "sha": leaf.sha }));
        }
    }
    for (path, leaf) in base {
        if !after.contains_key(path) {
            let path = String::from_utf8_lossy(path);
            entries.push(json!({ "path": path, "mode": leaf.mode, "type": leaf.kind, "sha": null }));
        }
    }
    entries
}

/// The tree entries for `changes` without knowing the base tree: each path's last change, written
/// files as regular files.
fn blind_entries(changes: &[FileChange], blobs: &[Option<String>]) -> Vec<serde_json::Value> {
    let mut last: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for (change, blob) in changes.iter().zip(blobs) {
        last.insert(change.path.as_str(), blob.as_deref());
    }
    last.into_iter().map(|(path, sha)| json!({ "path": path, "mode": "100644", "type": "blob", "sha": sha })).collect()
}

/// `changes` applied to `files`: written files keep an executable mode, anything else becomes a
/// regular file.
fn apply(
    files: &BTreeMap<Vec<u8>, Leaf>,
    changes: &[FileChange],
    blobs: &[Option<String>],
) -> Result<BTreeMap<Vec<u8>, Leaf>> {
    let mut after = files.clone();
    apply_changes(&mut after, changes, |index, previous| Leaf {
        mode: match previous {
            Some(leaf) if leaf.mode == "100755" => "100755".to_owned(),
            _ => "100644".to_owned(),
        },
        kind: "blob".to_owned(),
        sha: blobs.get(index).cloned().flatten().unwrap_or_default(),
    })?;
    Ok(after)
}

/// Whether two commit messages are the same but for trailing line ends.
fn same_message(a: &str, b: &str) -> bool {
    a.trim_end_matches(['\n', '\r']) == b.trim_end_matches(['\n', '\r'])
}

/// `body`, ending with `Closes #<issue>` unless it already closes the issue.
fn body_closing(body: &str, issue_number: Option<u64>) -> String {
    let Some(n) = issue_number else { return body.to_owned() };
    let lower = body.to_lowercase();
    let keywords = ["close", "closes", "closed", "fix", "fixes", "fixed", "resolve", "resolves", "resolved"];
    let closes = keywords.iter().any(|k| {
        let needle = format!("{k} #{n}");
        lower.match_indices(&needle).any(|(at, _)| {
            let next = lower[at + needle.len()..].chars().next();
            !next.is_some_and(|c| c.is_ascii_digit())
        })
    });
    if closes {
        body.to_owned()
    } else if body.trim().is_empty() {
        format!("Closes #{n}\n")
    } else {
        format!("{}\n\nCloses #{n}\n", body.trim_end())
    }
}

#[async_trait::async_trait]
impl Forge for GitHubForge {
    async fn repo_view(&self, repo: &Repository) -> Result<Arc<dyn RepoView>> {
        let target = self.target(repo, TokenPurpose::Read).await?;
        let path = format!("{}/git/trees/{}?recursive=1", target.name.path(), encode(&repo.default_branch, true));
        let reply = target.client.send(Method::GET, &path, None).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(target.client.explain_not_found(&target.name, missing_default_branch(repo)).await);
        }
        if !reply.status.is_success() {
            return Err(status_error(&reply, &Target::Repo(&target.name)));
        }
        let tree: Tree = reply.json(&Target::Repo(&target.name))?;
        let access = view::AccessCheck {
            store: self.access.clone(),
            org: repo.org_id,
            repo: repo.id,
            reached_as: target.reached_as,
            every: self.recheck,
            checked_at: std::sync::Mutex::new(std::time::Instant::now()),
        };
        Ok(Arc::new(GitHubView::new(target.client, access, target.name, tree, self.limits)))
    }

    async fn create_branch(&self, repo: &Repository, branch: &str) -> Result<BranchRef> {
        check_branch_name(branch)?;
        let target = self.target(repo, TokenPurpose::Push).await?;
        let found = |head: String| BranchRef { name: branch.to_owned(), head };
        let base = target.default_head(repo).await?;
        let path = format!("{}/git/refs", target.name.path());
        let body = json!({ "ref": format!("refs/heads/{branch}"), "sha": base });
        let reply = target.client.send(Method::POST, &path, Some(&body)).await?;
        if reply.status.is_success() {
            return Ok(found(base));
        }
        if reply.status == StatusCode::UNPROCESSABLE_ENTITY && reply.message().contains("already exists") {
            return match target.branch_head(branch).await? {
                Some(head) => Ok(found(head)),
                None => Err(unavailable(format!("branch `{branch}` exists and yet cannot be read; try again"), None)),
            };
        }
        Err(status_error(&reply, &Target::Repo(&target.name)))
    }

    async fn commit_changes(
        &self,
        repo: &Repository,
        branch: &str,
        changeset: &Changeset,
        message: &str,
    ) -> Result<BranchRef> {
        check_commit_target(repo, branch)?;
        let message = normalize_message(message)?;
        let changes = &changeset.changes;
        check_changes(changes)?;
        let target = self.target(repo, TokenPurpose::Push).await?;
        let Some(tip) = target.branch_head(branch).await? else {
            return Err(target.client.explain_not_found(&target.name, Error::NotFound { kind: "branch" }).await);
        };
        let found = |head: String| BranchRef { name: branch.to_owned(), head };
        let tip_commit = target.commit(&tip).await?;
        let mut blobs = None;

        // A retry of the commit that made the tip: same message, same changes on the same parent.
        if same_message(&tip_commit.message, &message)
            && let [parent] = tip_commit.parents.as_slice()
        {
            let written = target.write_blobs(changes).await?;
            let parent_tree = target.commit(&parent.sha).await?.tree.sha;
            let entries = match target.leaves(&parent_tree).await? {
                Some(files) => match apply(&files, changes, &written) {
                    Ok(after) => Some(diff_entries(&files, &after)),
                    // Changes that do not apply to the parent cannot have made the tip.
                    Err(Error::InvalidInput(_)) => None,
                    Err(e) => return Err(e),
                },
                None => Some(blind_entries(changes, &written)),
            };
            if let Some(entries) = entries
                && target.write_tree(&parent_tree, &entries).await?.as_deref() == Some(tip_commit.tree.sha.as_str())
            {
                tracing::debug!(repo = %target.name, branch, "the branch head already is this commit");
                return Ok(found(tip_commit.sha));
            }
            blobs = Some(written);
        }

        let files = target.leaves(&tip_commit.tree.sha).await?;
        if let Some(files) = &files {
            // Refuse what the other forges refuse before writing anything.
            apply(files, changes, &vec![None; changes.len()])?;
        }
        let blobs = match blobs {
            Some(blobs) => blobs,
            None => target.write_blobs(changes).await?,
        };
        let entries = match &files {
            Some(files) => diff_entries(files, &apply(files, changes, &blobs)?),
            None => blind_entries(changes, &blobs),
        };
        if entries.is_empty() {
            return Ok(found(tip));
        }
        let tree = match target.write_tree(&tip_commit.tree.sha, &entries).await? {
            Some(tree) => tree,
            None => {
                return Err(rejected(format!(
                    "GitHub refused the tree of the changes to `{branch}` of {}",
                    target.name
                )));
            }
        };
        if tree == tip_commit.tree.sha {
            return Ok(found(tip));
        }
        let commits = format!("{}/git/commits", target.name.path());
        let commit: Created =
            target.post(&commits, json!({ "message": message, "tree": tree, "parents": [tip] })).await?;
        let ref_path = format!("{}/git/refs/heads/{}", target.name.path(), encode(branch, true));
        let body = json!({ "sha": commit.sha, "force": false });
        let reply = target.client.send(Method::PATCH, &ref_path, Some(&body)).await?;
        if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
            // Someone else moved the branch meanwhile: a retry commits on its new head.
            return Err(unavailable(
                format!("branch `{branch}` of {} moved while committing ({})", target.name, reply.message()),
                None,
            ));
        }
        if !reply.status.is_success() {
            return Err(status_error(&reply, &Target::Repo(&target.name)));
        }
        Ok(found(commit.sha))
    }

    async fn delete_branch(&self, repo: &Repository, branch: &str) -> Result<()> {
        check_commit_target(repo, branch)?;
        let target = self.target(repo, TokenPurpose::Push).await?;
        let path = format!("{}/git/refs/heads/{}", target.name.path(), encode(branch, true));
        let reply = target.client.send(Method::DELETE, &path, None).await?;
        // 422 "Reference does not exist" and 404 both mean there is nothing left to delete.
        if reply.status.is_success() || reply.status == StatusCode::UNPROCESSABLE_ENTITY {
            return Ok(());
        }
        if reply.status == StatusCode::NOT_FOUND {
            return match target.client.explain_not_found(&target.name, Error::NotFound { kind: "branch" }).await {
                Error::NotFound { .. } => Ok(()),
                other => Err(other),
            };
        }
        Err(status_error(&reply, &Target::Repo(&target.name)))
    }

    async fn open_pull_request(&self, repo: &Repository, pr: &NewPullRequest) -> Result<PullRequestRef> {
        check_pull_request(repo, pr)?;
        let target = self.target(repo, TokenPurpose::PullRequest).await?;
        let to_ref = |p: Pull| PullRequestRef { number: p.number, url: p.html_url, branch: pr.branch.clone() };
        if let Some(open) = target.open_pull(&pr.branch).await? {
            return Ok(to_ref(open));
        }
        let path = format!("{}/pulls", target.name.path());
        let body = json!({
            "title": pr.title,
            "head": pr.branch,
            "base": repo.default_branch,
            "body": body_closing(&pr.body, pr.issue_number),
        });
        let reply = target.client.send(Method::POST, &path, Some(&body)).await?;
        if reply.status.is_success() {
            return Ok(to_ref(reply.json(&Target::Repo(&target.name))?));
        }
        if reply.status == StatusCode::UNPROCESSABLE_ENTITY {
            if reply.message().contains("already exists")
                && let Some(open) = target.open_pull(&pr.branch).await?
            {
                return Ok(to_ref(open));
            }
            // GitHub says only that the head is invalid; the other forges say the branch is missing.
            if target.branch_head(&pr.branch).await?.is_none() {
                return Err(Error::NotFound { kind: "branch" });
            }
        }
        Err(status_error(&reply, &Target::Repo(&target.name)))
    }

    async fn post_comment(&self, repo: &Repository, issue_number: u64, body: &str) -> Result<CommentId> {
        check_comment(issue_number, body)?;
        let target = self.target(repo, TokenPurpose::Converse).await?;
        let id = target.client.create_issue_comment(&target.name.owner, &target.name.name, issue_number, body).await?;
        Ok(CommentId(id))
    }

    async fn update_comment(&self, repo: &Repository, issue_number: u64, comment: CommentId, body: &str) -> Result<()> {
        check_comment(issue_number, body)?;
        let target = self.target(repo, TokenPurpose::Converse).await?;
        target.client.update_issue_comment(&target.name.owner, &target.name.name, comment.0, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_closes_the_issue_once() {
        assert_eq!(body_closing("Closes #7\n\nPlan", Some(7)), "Closes #7\n\nPlan");
        assert_eq!(body_closing("fixes #7.", Some(7)), "fixes #7.");
        assert_eq!(body_closing("Closes #77", Some(7)), "Closes #77\n\nCloses #7\n");
        assert_eq!(body_closing("Plan\n", Some(7)), "Plan\n\nCloses #7\n");
        assert_eq!(body_closing("Plan", None), "Plan");
    }

    #[test]
    fn entries_are_the_difference_between_trees() {
        let leaf = |sha: &str, mode: &str| Leaf { mode: mode.to_owned(), kind: "blob".to_owned(), sha: sha.to_owned() };
        let base = BTreeMap::from([
            (b"a".to_vec(), leaf("1", "100644")),
            (b"run.sh".to_vec(), leaf("2", "100755")),
            (b"gone".to_vec(), leaf("3", "100644")),
        ]);
        let changes = vec![FileChange::write("run.sh", "x"), FileChange::delete("gone"), FileChange::write("new", "y")];
        let blobs = vec![Some("4".to_owned()), None, Some("5".to_owned())];
        let after = apply(&base, &changes, &blobs).unwrap();
        let entries = diff_entries(&base, &after);
        assert_eq!(
            entries,
            vec![
                json!({"path": "new", "mode": "100644", "type": "blob", "sha": "5"}),
                json!({"path": "run.sh", "mode": "100755", "type": "blob", "sha": "4"}),
                json!({"path": "gone", "mode": "100644", "type": "blob", "sha": null}),
            ]
        );
        assert!(matches!(apply(&base, &[FileChange::delete("nope")], &[None]), Err(Error::InvalidInput(_))));
        assert!(matches!(apply(&base, &[FileChange::write("a/b", "x")], &[None]), Err(Error::InvalidInput(_))));
    }
}
