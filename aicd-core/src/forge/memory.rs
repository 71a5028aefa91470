//! A forge held in memory, for tests: repositories are maps of branches to commits, with failure
//! injection and inspection helpers. It applies the input rules every forge shares
//! ([`super::rules`]).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use aicd_agent_api::{Changeset, FileChange, MemoryRepoView, RepoView, RepoViewLimits};
use async_trait::async_trait;

use super::rules::{
    apply_changes, check_branch_name, check_changes, check_comment, check_commit_target, check_pull_request,
    missing_default_branch, normalize_message, rejected, unavailable,
};
use super::{BranchRef, CommentId, Forge, NewPullRequest, PullRequest, PullRequestState};
use crate::jobs::PullRequestRef;
use crate::repos::Repository;
use crate::{Error, Result};

/// A [`Forge`] method, for [`MemoryForge::fail_next`] and [`MemoryForge::call_count`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForgeCall {
    /// [`Forge::repo_view`].
    RepoView,
    /// [`Forge::create_branch`].
    CreateBranch,
    /// [`Forge::commit_changes`].
    CommitChanges,
    /// [`Forge::delete_branch`].
    DeleteBranch,
    /// [`Forge::open_pull_request`].
    OpenPullRequest,
    /// [`Forge::post_comment`].
    PostComment,
    /// [`Forge::update_comment`].
    UpdateComment,
}

impl ForgeCall {
    /// The method's name, e.g. `open_pull_request`.
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeCall::RepoView => "repo_view",
            ForgeCall::CreateBranch => "create_branch",
            ForgeCall::CommitChanges => "commit_changes",
            ForgeCall::DeleteBranch => "delete_branch",
            ForgeCall::OpenPullRequest => "open_pull_request",
            ForgeCall::PostComment => "post_comment",
            ForgeCall::UpdateComment => "update_comment",
        }
    }
}

/// How an injected failure (see [`MemoryForge::fail_next`]) fails a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForgeFailure {
    /// The call fails with [`Error::Unavailable`] and has no effect.
    Transient,
    /// The call fails with [`Error::Rejected`] and has no effect.
    Permanent,
    /// The call takes effect, then fails with [`Error::Unavailable`], as when the connection drops
    /// before the forge's answer arrives. A retry must find the effect and not repeat it.
    LostResponse,
}

/// A [`Forge`] that keeps repositories in memory, for tests.
///
/// Repositories are found by [`Repository::full_name`] (its `source` is ignored) and must be seeded
/// with [`MemoryForge::add_repo`]; any other is refused with [`Error::Rejected`]. Operations work on
/// the branch named by [`Repository::default_branch`]. Clones share the same repositories, counters
/// and injected failures, so a test keeps one clone to inspect what the code under test did with
/// another. It follows the same rules as [`super::LocalGitForge`]: the same names, paths and texts
/// are accepted, and the same errors are returned.
#[derive(Clone, Debug, Default)]
pub struct MemoryForge {
    state: Arc<Mutex<State>>,
    limits: RepoViewLimits,
}

#[derive(Debug, Default)]
struct State {
    repos: HashMap<String, MemRepo>,
    next_commit: u64,
    next_comment: u64,
    calls: HashMap<ForgeCall, u64>,
    failures: HashMap<ForgeCall, VecDeque<ForgeFailure>>,
}

#[derive(Debug)]
struct MemRepo {
    seeded_default: String,
    commits: HashMap<String, Commit>,
    branches: BTreeMap<String, String>,
    pulls: Vec<PullRequest>,
    comments: BTreeMap<u64, Vec<(u64, String)>>,
}

#[derive(Debug)]
struct Commit {
    parent: Option<String>,
    files: BTreeMap<String, Vec<u8>>,
    message: String,
}

impl MemoryForge {
    /// A forge with no repositories, whose views have the default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same forge (sharing its repositories) whose [`Forge::repo_view`]s enforce `limits`.
    #[must_use]
    pub fn with_view_limits(mut self, limits: RepoViewLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Adds (or replaces) the repository `full_name` with one commit of `files` on
    /// `default_branch`.
    pub fn add_repo<P, C>(&self, full_name: &str, default_branch: &str, files: impl IntoIterator<Item = (P, C)>)
    where
        P: Into<String>,
        C: Into<Vec<u8>>,
    {
        let mut state = self.lock();
        let id = state.new_commit_id();
        let commit = Commit {
            parent: None,
            files: files.into_iter().map(|(p, c)| (p.into(), c.into())).collect(),
            message: "Initial commit\n".to_owned(),
        };
        let repo = MemRepo {
            seeded_default: default_branch.to_owned(),
            commits: HashMap::from([(id.clone(), commit)]),
            branches: BTreeMap::from([(default_branch.to_owned(), id)]),
            pulls: Vec::new(),
            comments: BTreeMap::new(),
        };
        state.repos.insert(full_name.to_owned(), repo);
    }

    /// Makes the next `times` calls of `method` fail as `failure` says (after any failures already
    /// queued for it). Every call still counts in [`MemoryForge::call_count`].
    pub fn fail_next(&self, method: ForgeCall, failure: ForgeFailure, times: u32) {
        let mut state = self.lock();
        let queue = state.failures.entry(method).or_default();
        queue.extend(std::iter::repeat_n(failure, times as usize));
    }

    /// How many times `method` was called on this forge or any clone of it, failed calls included.
    pub fn call_count(&self, method: ForgeCall) -> u64 {
        self.lock().calls.get(&method).copied().unwrap_or(0)
    }

    /// The pull requests of `full_name` in the order they were opened (empty for an unknown
    /// repository).
    pub fn pull_requests(&self, full_name: &str) -> Vec<PullRequestRef> {
        self.pull_request_details(full_name).iter().map(PullRequest::to_ref).collect()
    }

    /// The pull requests of `full_name` with their titles, bodies and bases, in the order they were
    /// opened.
    pub fn pull_request_details(&self, full_name: &str) -> Vec<PullRequest> {
        self.lock().repos.get(full_name).map(|r| r.pulls.clone()).unwrap_or_default()
    }

    /// The files at the tip of `branch`, or `None` if the repository or the branch does not exist.
    pub fn branch_files(&self, full_name: &str, branch: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let state = self.lock();
        let repo = state.repos.get(full_name)?;
        let tip = repo.branches.get(branch)?;
        repo.commits.get(tip).map(|c| c.files.clone())
    }

    /// The tip commit id of `branch`, or `None` if the repository or the branch does not exist.
    pub fn branch_head(&self, full_name: &str, branch: &str) -> Option<String> {
        self.lock().repos.get(full_name)?.branches.get(branch).cloned()
    }

    /// How many commits `branch` has that the default branch given to [`MemoryForge::add_repo`]
    /// does not (0 for an unknown repository or branch).
    pub fn commits_on(&self, full_name: &str, branch: &str) -> usize {
        let state = self.lock();
        let Some(repo) = state.repos.get(full_name) else { return 0 };
        let base: HashSet<&str> = repo.ancestry(repo.branches.get(&repo.seeded_default)).collect();
        repo.ancestry(repo.branches.get(branch)).take_while(|id| !base.contains(id)).count()
    }

    /// The current text of each comment on issue `issue` of `full_name`, oldest first.
    pub fn comments(&self, full_name: &str, issue: u64) -> Vec<String> {
        let state = self.lock();
        let comments = state.repos.get(full_name).and_then(|r| r.comments.get(&issue));
        comments.map(|c| c.iter().map(|(_, body)| body.clone()).collect()).unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts the call and applies an injected failure: `Err` to fail now, `Ok(true)` to take effect
    /// and then fail.
    fn begin(&self, call: ForgeCall) -> Result<bool> {
        let mut state = self.lock();
        *state.calls.entry(call).or_default() += 1;
        match state.failures.get_mut(&call).and_then(VecDeque::pop_front) {
            None => Ok(false),
            Some(ForgeFailure::LostResponse) => Ok(true),
            Some(ForgeFailure::Transient) => {
                Err(unavailable(format!("injected transient failure of {}", call.as_str())))
            }
            Some(ForgeFailure::Permanent) => Err(rejected(format!("injected permanent failure of {}", call.as_str()))),
        }
    }

    /// Runs `op` on the repository under the lock, with the call counted and failures injected.
    fn with_repo<T>(
        &self,
        call: ForgeCall,
        repo: &Repository,
        op: impl FnOnce(&mut State, &str) -> Result<T>,
    ) -> Result<T> {
        let lose_response = self.begin(call)?;
        let mut state = self.lock();
        if !state.repos.contains_key(&repo.full_name) {
            return Err(rejected(format!(
                "the repository `{}` is not accessible (it does not exist or access was lost)",
                repo.full_name
            )));
        }
        let value = op(&mut state, &repo.full_name)?;
        if lose_response {
            return Err(unavailable(format!("the answer to {} was lost (injected)", call.as_str())));
        }
        Ok(value)
    }
}

impl State {
    fn new_commit_id(&mut self) -> String {
        self.next_commit += 1;
        format!("{:040x}", self.next_commit)
    }

    fn repo(&mut self, full_name: &str) -> &mut MemRepo {
        self.repos.get_mut(full_name).expect("checked by MemoryForge::with_repo")
    }
}

impl MemRepo {
    fn ancestry<'a>(&'a self, tip: Option<&'a String>) -> impl Iterator<Item = &'a str> + 'a {
        std::iter::successors(tip.map(String::as_str), |id| self.commits.get(*id)?.parent.as_deref())
    }

    fn default_head(&self, repo: &Repository) -> Result<&str> {
        self.branches.get(&repo.default_branch).map(String::as_str).ok_or_else(|| missing_default_branch(repo))
    }
}

#[async_trait]
impl Forge for MemoryForge {
    async fn repo_view(&self, repo: &Repository) -> Result<Arc<dyn RepoView>> {
        let limits = self.limits;
        self.with_repo(ForgeCall::RepoView, repo, |state, name| {
            let r = state.repo(name);
            let files = r.commits[r.default_head(repo)?].files.clone();
            Ok(Arc::new(MemoryRepoView::from_files(files).with_limits(limits)) as Arc<dyn RepoView>)
        })
    }

    async fn create_branch(&self, repo: &Repository, branch: &str) -> Result<BranchRef> {
        self.with_repo(ForgeCall::CreateBranch, repo, |state, name| {
            check_branch_name(branch)?;
            let r = state.repo(name);
            let head = match r.branches.get(branch) {
                Some(head) => head.clone(),
                None => {
                    if r.branches.keys().any(|b| ref_names_collide(b, branch)) {
                        return Err(rejected(format!(
                            "cannot create branch `{branch}`: it collides with an existing one"
                        )));
                    }
                    let head = r.default_head(repo)?.to_owned();
                    r.branches.insert(branch.to_owned(), head.clone());
                    head
                }
            };
            Ok(BranchRef { name: branch.to_owned(), head })
        })
    }

    async fn delete_branch(&self, repo: &Repository, branch: &str) -> Result<()> {
        self.with_repo(ForgeCall::DeleteBranch, repo, |state, name| {
            check_commit_target(repo, branch)?;
            state.repo(name).branches.remove(branch);
            Ok(())
        })
    }

    async fn commit_changes(
        &self,
        repo: &Repository,
        branch: &str,
        changeset: &Changeset,
        message: &str,
    ) -> Result<BranchRef> {
        self.with_repo(ForgeCall::CommitChanges, repo, |state, name| {
            check_commit_target(repo, branch)?;
            let message = normalize_message(message)?;
            check_changes(&changeset.changes)?;
            let id = state.new_commit_id();
            let r = state.repo(name);
            let tip = r.branches.get(branch).ok_or(Error::NotFound { kind: "branch" })?.clone();
            let tip_commit = &r.commits[&tip];
            if tip_commit.message == message
                && let Some(parent) = &tip_commit.parent
                && apply_to(&r.commits[parent].files, &changeset.changes).is_ok_and(|f| f == tip_commit.files)
            {
                return Ok(BranchRef { name: branch.to_owned(), head: tip });
            }
            let files = apply_to(&tip_commit.files, &changeset.changes)?;
            r.commits.insert(id.clone(), Commit { parent: Some(tip), files, message });
            r.branches.insert(branch.to_owned(), id.clone());
            Ok(BranchRef { name: branch.to_owned(), head: id })
        })
    }

    async fn open_pull_request(&self, repo: &Repository, pr: &NewPullRequest) -> Result<PullRequestRef> {
        self.with_repo(ForgeCall::OpenPullRequest, repo, |state, name| {
            check_pull_request(repo, pr)?;
            let r = state.repo(name);
            if let Some(open) = r.pulls.iter().find(|p| p.branch == pr.branch && p.state == PullRequestState::Open) {
                return Ok(open.to_ref());
            }
            if !r.branches.contains_key(&pr.branch) {
                return Err(Error::NotFound { kind: "branch" });
            }
            let number = r.pulls.len() as u64 + 1;
            let opened = PullRequest {
                number,
                url: format!("memory://{name}/pull/{number}"),
                branch: pr.branch.clone(),
                base: repo.default_branch.clone(),
                base_commit: r.default_head(repo)?.to_owned(),
                title: pr.title.clone(),
                body: pr.body.clone(),
                issue_number: pr.issue_number,
                state: PullRequestState::Open,
                created_at: chrono::Utc::now(),
            };
            r.pulls.push(opened.clone());
            Ok(opened.to_ref())
        })
    }

    async fn post_comment(&self, repo: &Repository, issue_number: u64, body: &str) -> Result<CommentId> {
        self.with_repo(ForgeCall::PostComment, repo, |state, name| {
            check_comment(issue_number, body)?;
            state.next_comment += 1;
            let id = state.next_comment;
            state.repo(name).comments.entry(issue_number).or_default().push((id, body.to_owned()));
            Ok(CommentId(id))
        })
    }

    async fn update_comment(&self, repo: &Repository, issue_number: u64, comment: CommentId, body: &str) -> Result<()> {
        self.with_repo(ForgeCall::UpdateComment, repo, |state, name| {
            check_comment(issue_number, body)?;
            let comments = state.repo(name).comments.get_mut(&issue_number);
            let slot = comments.and_then(|c| c.iter_mut().find(|(id, _)| *id == comment.0));
            let (_, text) = slot.ok_or(Error::NotFound { kind: "comment" })?;
            body.clone_into(text);
            Ok(())
        })
    }
}

fn apply_to(files: &BTreeMap<String, Vec<u8>>, changes: &[FileChange]) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut bytes: BTreeMap<Vec<u8>, Vec<u8>> =
        files.iter().map(|(path, content)| (path.clone().into_bytes(), content.clone())).collect();
    apply_changes(&mut bytes, changes, |_, content, _| content.to_vec())?;
    Ok(bytes.into_iter().map(|(path, content)| (String::from_utf8_lossy(&path).into_owned(), content)).collect())
}

/// Whether creating `new` next to the existing branch `existing` is impossible because one would
/// be a directory of the other (`a` and `a/b`).
fn ref_names_collide(existing: &str, new: &str) -> bool {
    let prefixed = |long: &str, short: &str| long.strip_prefix(short).is_some_and(|rest| rest.starts_with('/'));
    prefixed(existing, new) || prefixed(new, existing)
}
