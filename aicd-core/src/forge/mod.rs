//! The forge port: where repositories live and pull requests are opened (GitHub, or a git
//! repository on the local disk for the embedded default, or memory for tests).
//!
//! Every publishing operation is idempotent, because a job that crashed mid-publish is resumed and
//! does the same calls again: a branch that exists is reused, a commit already on the branch is not
//! made twice, and an open pull request for the branch is returned instead of a second one.

mod local_git;
mod memory;
mod routing;
pub mod rules;

use std::sync::Arc;

use aicd_agent_api::{Changeset, RepoView};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use crate::Result;
use crate::jobs::PullRequestRef;
use crate::repos::Repository;

pub use local_git::{LocalGitForge, LocalRoots};
pub use memory::{ForgeCall, ForgeFailure, MemoryForge};
pub use routing::RoutingForge;

/// A branch and the commit at its tip.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchRef {
    /// The branch name (without `refs/heads/`).
    pub name: String,
    /// The commit id at its tip.
    pub head: String,
}

/// A pull request to open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPullRequest {
    /// The branch with the changes.
    pub branch: String,
    /// The title.
    pub title: String,
    /// The body (markdown).
    pub body: String,
    /// The issue it resolves, if any.
    pub issue_number: Option<u64>,
}

/// The state of a [`PullRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullRequestState {
    /// Open: [`Forge::open_pull_request`] returns it for its branch.
    Open,
    /// Closed without merging.
    Closed,
    /// Merged into its base.
    Merged,
}

/// A pull request as a built-in forge records it ([`LocalGitForge`] in
/// `<git-dir>/aicd/pulls/<number>.json`, [`MemoryForge`] in memory), with everything it was opened
/// with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// Its number (1, 2, ... per repository).
    pub number: u64,
    /// Its address (`file://<repository path>#pull/<number>`, `memory://<full_name>/pull/<number>`).
    pub url: String,
    /// The branch it proposes.
    pub branch: String,
    /// The branch it targets (the default branch when it was opened).
    pub base: String,
    /// The base branch's head commit when it was opened; its diff is taken from there.
    pub base_commit: String,
    /// Its title.
    pub title: String,
    /// Its body (markdown).
    pub body: String,
    /// The issue it resolves, if any.
    pub issue_number: Option<u64>,
    /// Whether it is open.
    pub state: PullRequestState,
    /// When it was opened.
    pub created_at: DateTime<Utc>,
}

impl PullRequest {
    /// The reference a [`Forge`] hands back for it.
    pub fn to_ref(&self) -> PullRequestRef {
        PullRequestRef { number: self.number, url: self.url.clone(), branch: self.branch.clone() }
    }
}

/// Identifies a comment on an issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommentId(pub u64);

/// Where repositories live and pull requests are opened.
///
/// Errors: [`crate::Error::Unavailable`] for failures that may pass (timeouts, 5xx, rate limits:
/// the caller retries with backoff), [`crate::Error::Rejected`] for ones that won't (lost access,
/// a missing repository), with a message a person can act on.
#[async_trait]
pub trait Forge: Send + Sync {
    /// A read-only view of the repository at the head of its default branch.
    async fn repo_view(&self, repo: &Repository) -> Result<Arc<dyn RepoView>>;

    /// Creates `branch` at the head of the default branch; if it already exists, returns it as it
    /// is.
    async fn create_branch(&self, repo: &Repository, branch: &str) -> Result<BranchRef>;

    /// Commits `changeset` on top of `branch` (which must exist) and returns the new tip. If the
    /// branch's tip already is a commit of exactly these changes with this message (a retry), it
    /// is returned and nothing new is committed.
    async fn commit_changes(
        &self,
        repo: &Repository,
        branch: &str,
        changeset: &Changeset,
        message: &str,
    ) -> Result<BranchRef>;

    /// Deletes `branch` (never the default branch), as a publish that failed for good cleans up
    /// what it created. Deleting a branch that does not exist succeeds.
    async fn delete_branch(&self, repo: &Repository, branch: &str) -> Result<()>;

    /// Opens a pull request from `pr.branch` to the default branch, or returns the one already
    /// open for that branch.
    async fn open_pull_request(&self, repo: &Repository, pr: &NewPullRequest) -> Result<PullRequestRef>;

    /// Posts a comment on an issue.
    async fn post_comment(&self, repo: &Repository, issue_number: u64, body: &str) -> Result<CommentId>;

    /// Replaces the text of a comment posted with [`Forge::post_comment`].
    async fn update_comment(&self, repo: &Repository, issue_number: u64, comment: CommentId, body: &str) -> Result<()>;
}
