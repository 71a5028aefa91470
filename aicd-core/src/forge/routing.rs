//! A forge that hands each call to the forge for the repository's source: one deployment serves
//! GitHub repositories and repositories on its own disk through one [`Forge`].

use std::sync::Arc;

use aicd_agent_api::{Changeset, RepoView};
use async_trait::async_trait;

use super::{BranchRef, CommentId, Forge, NewPullRequest};
use crate::jobs::PullRequestRef;
use crate::repos::{RepoSource, Repository};
use crate::{Error, Result};

/// The message of the error for a GitHub repository when no GitHub forge is configured (see
/// [`RoutingForge::refuse_github`]).
const NO_GITHUB: &str = "this deployment has no GitHub App configured";
/// The message of the error for a local repository when no local forge is configured (see
/// [`RoutingForge::refuse_local`]).
const NO_LOCAL: &str = "this deployment does not serve repositories on its own disk";

/// Where the calls for one kind of [`RepoSource`] go.
#[derive(Clone)]
enum Route {
    /// To this forge.
    Serve(Arc<dyn Forge>),
    /// Nowhere: every call fails with [`Error::Rejected`] and this message.
    Refuse(String),
}

/// A [`Forge`] that sends each call to the forge configured for the repository's
/// [`Repository::source`]: [`RepoSource::Local`] to the one given to [`RoutingForge::local`],
/// [`RepoSource::Github`] to the one given to [`RoutingForge::github`].
///
/// A repository whose kind has no forge is refused with [`Error::Rejected`] (permanent, so a job
/// fails at once rather than retrying) whose message says what the deployment lacks: by default
/// "this deployment has no GitHub App configured" (`service` `github`) or "this deployment does
/// not serve repositories on its own disk" (`service` `forge`); [`RoutingForge::refuse_github`] and
/// [`RoutingForge::refuse_local`] replace it, for instance with the settings to change. Cheap to
/// clone; clones share the forges.
///
/// ```
/// use std::sync::Arc;
/// use aicd_core::forge::{LocalGitForge, RoutingForge};
///
/// let forge = RoutingForge::new()
///     .local(Arc::new(LocalGitForge::new()))
///     .refuse_github("this deployment has no GitHub App configured (set GITHUB_APP_ID)");
/// assert!(forge.serves_local() && !forge.serves_github());
/// ```
#[derive(Clone)]
pub struct RoutingForge {
    local: Route,
    github: Route,
}

impl Default for RoutingForge {
    fn default() -> Self {
        Self::new()
    }
}

impl RoutingForge {
    /// A forge with no routes: every repository is refused until [`RoutingForge::local`] or
    /// [`RoutingForge::github`] gives its kind a forge.
    pub fn new() -> Self {
        Self { local: Route::Refuse(NO_LOCAL.to_owned()), github: Route::Refuse(NO_GITHUB.to_owned()) }
    }

    /// Sends the calls for [`RepoSource::Local`] repositories to `forge`.
    #[must_use]
    pub fn local(mut self, forge: Arc<dyn Forge>) -> Self {
        self.local = Route::Serve(forge);
        self
    }

    /// Sends the calls for [`RepoSource::Github`] repositories to `forge`.
    #[must_use]
    pub fn github(mut self, forge: Arc<dyn Forge>) -> Self {
        self.github = Route::Serve(forge);
        self
    }

    /// Refuses [`RepoSource::Local`] repositories with [`Error::Rejected`] (`service` `forge`)
    /// and `message`, dropping the local forge if one was given.
    #[must_use]
    pub fn refuse_local(mut self, message: impl Into<String>) -> Self {
        self.local = Route::Refuse(message.into());
        self
    }

    /// Refuses [`RepoSource::Github`] repositories with [`Error::Rejected`] (`service` `github`)
    /// and `message`, dropping the GitHub forge if one was given.
    #[must_use]
    pub fn refuse_github(mut self, message: impl Into<String>) -> Self {
        self.github = Route::Refuse(message.into());
        self
    }

    /// Whether [`RepoSource::Local`] repositories have a forge.
    pub fn serves_local(&self) -> bool {
        matches!(self.local, Route::Serve(_))
    }

    /// Whether [`RepoSource::Github`] repositories have a forge.
    pub fn serves_github(&self) -> bool {
        matches!(self.github, Route::Serve(_))
    }

    /// The forge for `repo`, or the error refusing it.
    pub fn route(&self, repo: &Repository) -> Result<&dyn Forge> {
        let (route, service) = match repo.source {
            RepoSource::Local { .. } => (&self.local, "forge"),
            RepoSource::Github { .. } => (&self.github, "github"),
        };
        match route {
            Route::Serve(forge) => Ok(forge.as_ref()),
            Route::Refuse(message) => Err(Error::Rejected { service, message: message.clone() }),
        }
    }
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Serve(_) => f.write_str("Serve(..)"),
            Route::Refuse(message) => f.debug_tuple("Refuse").field(message).finish(),
        }
    }
}

impl std::fmt::Debug for RoutingForge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingForge").field("local", &self.local).field("github", &self.github).finish()
    }
}

#[async_trait]
impl Forge for RoutingForge {
    async fn repo_view(&self, repo: &Repository) -> Result<Arc<dyn RepoView>> {
        self.route(repo)?.repo_view(repo).await
    }

    async fn create_branch(&self, repo: &Repository, branch: &str) -> Result<BranchRef> {
        self.route(repo)?.create_branch(repo, branch).await
    }

    async fn commit_changes(
        &self,
        repo: &Repository,
        branch: &str,
        changeset: &Changeset,
        message: &str,
    ) -> Result<BranchRef> {
        self.route(repo)?.commit_changes(repo, branch, changeset, message).await
    }

    async fn delete_branch(&self, repo: &Repository, branch: &str) -> Result<()> {
        self.route(repo)?.delete_branch(repo, branch).await
    }

    async fn open_pull_request(&self, repo: &Repository, pr: &NewPullRequest) -> Result<PullRequestRef> {
        self.route(repo)?.open_pull_request(repo, pr).await
    }

    async fn post_comment(&self, repo: &Repository, issue_number: u64, body: &str) -> Result<CommentId> {
        self.route(repo)?.post_comment(repo, issue_number, body).await
    }

    async fn update_comment(&self, repo: &Repository, issue_number: u64, comment: CommentId, body: &str) -> Result<()> {
        self.route(repo)?.update_comment(repo, issue_number, comment, body).await
    }
}
