//! The embedded default's forge: a git repository on the local disk, driven through the `git`
//! program's plumbing so its working tree, index and checked-out branch are never touched (it may
//! be bare). Pull requests and comments are kept as files in the repository's git directory.

mod git;
mod records;
mod roots;
mod view;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use aicd_agent_api::{Changeset, RepoView, RepoViewLimits};
use async_trait::async_trait;
use chrono::Utc;

use self::git::{Git, TreeEntry};
use self::records::Records;
pub use self::roots::LocalRoots;
use self::view::LocalGitView;
use super::rules::{
    apply_changes, check_branch_name, check_changes, check_comment, check_commit_target, check_issue,
    check_pull_request, normalize_message, rejected, unavailable,
};
use super::{BranchRef, CommentId, Forge, NewPullRequest, PullRequest, PullRequestState};
use crate::jobs::PullRequestRef;
use crate::repos::{RepoSource, Repository};
use crate::{Error, Result};

/// Most bytes of a pull request diff returned by [`LocalGitForge::pull_request_diff`].
const MAX_DIFF_BYTES: usize = 8 * 1024 * 1024;

/// A [`Forge`] over git repositories on this machine ([`RepoSource::Local`]); any other source is
/// refused with [`Error::Rejected`].
///
/// Branches and commits are made with git plumbing (`hash-object`, a scratch index, `write-tree`,
/// `commit-tree`, and a compare-and-swap `update-ref`), so the repository's working tree, index
/// and `HEAD` are left exactly as they were. The user's and the system's git configuration are
/// ignored, commits are by `AI-CD <aicd@localhost>`, and every git command is bounded in output
/// and time. Pull requests are `<git-dir>/aicd/pulls/<number>.json` and comments
/// `<git-dir>/aicd/comments/<issue>/<id>.md`; publishing calls on one repository are serialized
/// within the process.
///
/// Repositories are opened at their canonical path, which must lie under the forge's
/// [`LocalRoots`] (anywhere for [`LocalGitForge::new`]; see [`LocalGitForge::within`]), and so
/// must their git directory. git trusts only that repository (`safe.directory`), and none of the
/// repository's hooks ever run (`core.hooksPath=/dev/null`): a repository's configuration cannot
/// run code of its owner in this process.
#[derive(Clone, Debug)]
pub struct LocalGitForge {
    limits: RepoViewLimits,
    timeout: Duration,
    roots: LocalRoots,
}

impl Default for LocalGitForge {
    fn default() -> Self {
        Self::new()
    }
}

/// A local repository found on disk.
#[derive(Clone, Debug)]
struct Opened {
    git: Git,
    /// The git directory holding refs, objects and the `aicd/` records.
    common_dir: PathBuf,
    /// The path as configured, for addresses.
    path: String,
    default_branch: String,
    full_name: String,
}

impl LocalGitForge {
    /// A forge whose views have the default limits and whose git commands may each run for up to
    /// two minutes.
    pub fn new() -> Self {
        Self { limits: RepoViewLimits::default(), timeout: Duration::from_secs(120), roots: LocalRoots::anywhere() }
    }

    /// The same forge refusing every repository (or git directory) outside `roots`, with
    /// [`Error::Rejected`] and a message that names the path, not the reason.
    #[must_use]
    pub fn within(mut self, roots: LocalRoots) -> Self {
        self.roots = roots;
        self
    }

    /// The same forge whose [`Forge::repo_view`]s enforce `limits`.
    #[must_use]
    pub fn with_view_limits(mut self, limits: RepoViewLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same forge whose git commands are stopped (failing with [`Error::Unavailable`]) after
    /// `timeout`.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Every pull request of `repo`, by number, open or not.
    pub async fn pull_requests(&self, repo: &Repository) -> Result<Vec<PullRequest>> {
        self.unlocked(repo, |r| Records::new(&r.common_dir).pulls()).await
    }

    /// The unified diff of pull request `number`: from the base commit recorded when it was opened
    /// to the current tip of its branch (truncated, with a note, past 8 MiB). An unknown number is
    /// [`Error::NotFound`] (`pull request`), a deleted branch [`Error::NotFound`] (`branch`).
    pub async fn pull_request_diff(&self, repo: &Repository, number: u64) -> Result<String> {
        self.unlocked(repo, move |r| {
            let pulls = Records::new(&r.common_dir).pulls()?;
            let pull =
                pulls.into_iter().find(|p| p.number == number).ok_or(Error::NotFound { kind: "pull request" })?;
            let head = r.branch_head(&pull.branch)?.ok_or(Error::NotFound { kind: "branch" })?;
            let args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", &pull.base_commit, &head, "--"];
            let (out, truncated) = r.git.run_truncated(&args, MAX_DIFF_BYTES)?;
            let mut diff = String::from_utf8_lossy(&out).into_owned();
            if truncated {
                diff.push_str("\n[diff truncated]\n");
            }
            Ok(diff)
        })
        .await
    }

    /// The current text of each comment on issue `issue_number` of `repo`, oldest first.
    pub async fn comments(&self, repo: &Repository, issue_number: u64) -> Result<Vec<String>> {
        check_issue(issue_number)?;
        self.unlocked(repo, move |r| Records::new(&r.common_dir).comments(issue_number)).await
    }

    /// Opens the repository and runs `op` on the blocking pool.
    async fn unlocked<T: Send + 'static>(
        &self,
        repo: &Repository,
        op: impl FnOnce(&Opened) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let opened = self.open(repo).await?;
        blocking(move || op(&opened)).await
    }

    /// Opens the repository and runs `op` on the blocking pool while holding the repository's
    /// process-wide lock.
    async fn locked<T: Send + 'static>(
        &self,
        repo: &Repository,
        op: impl FnOnce(&Opened) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let opened = self.open(repo).await?;
        let lock = repo_lock(&opened.common_dir);
        let _guard = lock.lock().await;
        blocking(move || op(&opened)).await
    }

    async fn open(&self, repo: &Repository) -> Result<Opened> {
        let path = match &repo.source {
            RepoSource::Local { path } => path.clone(),
            RepoSource::Github { .. } => {
                return Err(rejected(format!("`{}` is not a local repository", repo.full_name)));
            }
        };
        let (default_branch, full_name, timeout) = (repo.default_branch.clone(), repo.full_name.clone(), self.timeout);
        let roots = self.roots.clone();
        blocking(move || {
            // The reason is logged; the job's timeline (which its tenant reads) only says which path.
            let not_accessible = |why: &dyn std::fmt::Display| {
                tracing::warn!(path, reason = %why, "a local repository is not accessible");
                rejected(LocalRoots::not_accessible(&path))
            };
            let dir = std::fs::canonicalize(&path).map_err(|e| not_accessible(&e))?;
            if !roots.contains(&dir) {
                return Err(not_accessible(&format!("{} is outside the repository roots", dir.display())));
            }
            // Registration stores the canonical path, which is unique; a path stored otherwise (by
            // an earlier version) could be a second way into another organization's repository.
            if dir.as_os_str() != std::ffi::OsStr::new(&path) {
                return Err(not_accessible(&format!(
                    "its registered path is not canonical (it resolves to {}); register it again",
                    dir.display()
                )));
            }
            let mut git = Git::new(dir.clone(), timeout);
            let layout = git.layout().map_err(|e| match e {
                Error::Rejected { message, .. } => not_accessible(&message),
                other => other,
            })?;
            let canonical = |p: &std::path::Path| std::fs::canonicalize(p).map_err(|e| not_accessible(&e));
            let (git_dir, common_dir) = (canonical(&layout.git_dir)?, canonical(&layout.common_dir)?);
            // The path must be the repository itself: its working tree's top (with its own `.git`
            // directory), or a bare repository. Not a directory inside one, its `.git`, or a linked
            // worktree: another path of the same refs and objects would let two organizations
            // share them, however unique the registered paths are.
            let own = if layout.bare { dir.clone() } else { dir.join(".git") };
            if git_dir != own || common_dir != own {
                return Err(not_accessible(&format!(
                    "it is not a repository's top directory (its git directory is {})",
                    common_dir.display()
                )));
            }
            if !roots.contains(&common_dir) {
                return Err(not_accessible(&format!(
                    "its git directory {} is outside the roots",
                    common_dir.display()
                )));
            }
            git.trust(common_dir.clone());
            Ok(Opened { git, common_dir, path, default_branch, full_name })
        })
        .await
    }
}

impl Opened {
    fn branch_head(&self, branch: &str) -> Result<Option<String>> {
        self.git.resolve_commit(&format!("refs/heads/{branch}"))
    }

    fn default_head(&self) -> Result<String> {
        self.branch_head(&self.default_branch)?.ok_or_else(|| {
            let repo_name = &self.full_name;
            rejected(format!("the default branch `{}` of `{repo_name}` does not exist", self.default_branch))
        })
    }

    fn check_branch(&self, branch: &str) -> Result<()> {
        check_branch_name(branch)?;
        self.git.check_branch_name(branch)
    }

    fn create_branch(&self, branch: &str) -> Result<BranchRef> {
        self.check_branch(branch)?;
        let refname = format!("refs/heads/{branch}");
        let found = |head| BranchRef { name: branch.to_owned(), head };
        if let Some(head) = self.git.resolve_commit(&refname)? {
            return Ok(found(head));
        }
        let base = self.default_head()?;
        match self.git.update_ref(&refname, &base, "") {
            Ok(()) => Ok(found(base)),
            // Another process may have created it meanwhile: then it is returned as it is.
            Err(e) => self.git.resolve_commit(&refname)?.map(found).ok_or(e),
        }
    }

    fn commit_changes(&self, branch: &str, changeset: &Changeset, message: &str) -> Result<BranchRef> {
        self.check_branch(branch)?;
        let changes = &changeset.changes;
        check_changes(changes)?;
        let tip = self.branch_head(branch)?.ok_or(Error::NotFound { kind: "branch" })?;
        let tip_commit = self.git.read_commit(&tip)?;
        let blobs = changes
            .iter()
            .map(|c| c.content().map(|bytes| self.git.write_blob(bytes)).transpose())
            .collect::<Result<Vec<_>>>()?;
        let tree_with_changes = |base_tree: &str| -> Result<String> {
            let mut files = self.git.list_tree(base_tree)?;
            apply_changes(&mut files, changes, |index, _, previous: Option<&TreeEntry>| TreeEntry {
                mode: match previous {
                    Some(entry) if entry.mode == "100755" => "100755".to_owned(),
                    _ => "100644".to_owned(),
                },
                oid: blobs[index].clone().unwrap_or_default(),
            })?;
            self.git.write_tree(&self.common_dir, &files)
        };
        // A retry of the commit that made the tip: same message, same changes on the same parent.
        if tip_commit.message == message.as_bytes()
            && let [parent] = tip_commit.parents.as_slice()
        {
            let parent_tree = self.git.read_commit(parent)?.tree;
            match tree_with_changes(&parent_tree) {
                Ok(tree) if tree == tip_commit.tree => return Ok(BranchRef { name: branch.to_owned(), head: tip }),
                // Changes that do not apply to the parent cannot have made the tip.
                Ok(_) | Err(Error::InvalidInput(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let tree = tree_with_changes(&tip_commit.tree)?;
        let commit = self.git.commit_tree(&tree, &tip, message)?;
        self.git.update_ref(&format!("refs/heads/{branch}"), &commit, &tip)?;
        Ok(BranchRef { name: branch.to_owned(), head: commit })
    }

    fn open_pull_request(&self, pr: &NewPullRequest) -> Result<PullRequestRef> {
        self.check_branch(&pr.branch)?;
        let records = Records::new(&self.common_dir);
        let open = records.pulls()?.into_iter().find(|p| p.branch == pr.branch && p.state == PullRequestState::Open);
        if let Some(open) = open {
            return Ok(open.to_ref());
        }
        if self.branch_head(&pr.branch)?.is_none() {
            return Err(Error::NotFound { kind: "branch" });
        }
        let base_commit = self.default_head()?;
        let created_at = Utc::now();
        let pull = records.create_pull(|number| PullRequest {
            number,
            url: format!("file://{}#pull/{number}", self.path),
            branch: pr.branch.clone(),
            base: self.default_branch.clone(),
            base_commit: base_commit.clone(),
            title: pr.title.clone(),
            body: pr.body.clone(),
            issue_number: pr.issue_number,
            state: PullRequestState::Open,
            created_at,
        })?;
        Ok(pull.to_ref())
    }
}

#[async_trait]
impl Forge for LocalGitForge {
    async fn repo_view(&self, repo: &Repository) -> Result<Arc<dyn RepoView>> {
        let limits = self.limits;
        self.unlocked(repo, move |r| {
            let commit = r.default_head()?;
            Ok(Arc::new(LocalGitView { git: r.git.clone(), commit, limits }) as Arc<dyn RepoView>)
        })
        .await
    }

    async fn create_branch(&self, repo: &Repository, branch: &str) -> Result<BranchRef> {
        check_branch_name(branch)?;
        let branch = branch.to_owned();
        self.locked(repo, move |r| r.create_branch(&branch)).await
    }

    async fn delete_branch(&self, repo: &Repository, branch: &str) -> Result<()> {
        check_commit_target(repo, branch)?;
        let refname = format!("refs/heads/{branch}");
        self.locked(repo, move |r| match r.git.resolve_commit(&refname)? {
            Some(head) => r.git.delete_ref(&refname, &head),
            None => Ok(()),
        })
        .await
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
        check_changes(&changeset.changes)?;
        let (branch, changeset) = (branch.to_owned(), changeset.clone());
        self.locked(repo, move |r| r.commit_changes(&branch, &changeset, &message)).await
    }

    async fn open_pull_request(&self, repo: &Repository, pr: &NewPullRequest) -> Result<PullRequestRef> {
        check_pull_request(repo, pr)?;
        let pr = pr.clone();
        self.locked(repo, move |r| r.open_pull_request(&pr)).await
    }

    async fn post_comment(&self, repo: &Repository, issue_number: u64, body: &str) -> Result<CommentId> {
        check_comment(issue_number, body)?;
        let body = body.to_owned();
        self.locked(repo, move |r| Records::new(&r.common_dir).post_comment(issue_number, &body)).await
    }

    async fn update_comment(&self, repo: &Repository, issue_number: u64, comment: CommentId, body: &str) -> Result<()> {
        check_comment(issue_number, body)?;
        let body = body.to_owned();
        self.locked(repo, move |r| Records::new(&r.common_dir).update_comment(issue_number, comment, &body)).await
    }
}

/// The process-wide lock of the repository whose git directory is `common_dir`.
fn repo_lock(common_dir: &Path) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: LazyLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = LazyLock::new(Default::default);
    let mut locks = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    locks.retain(|_, lock| Arc::strong_count(lock) > 1);
    locks.entry(common_dir.to_path_buf()).or_default().clone()
}

async fn blocking<T: Send + 'static>(op: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(op).await.map_err(|e| unavailable(format!("a git task failed: {e}")))?
}
