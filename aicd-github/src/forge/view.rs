//! A [`RepoView`] of one tree of a GitHub repository: the file list comes from one recursive tree
//! read, and files are read lazily, each through the blob API.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use aicd_agent_api::{RepoView, RepoViewError, RepoViewLimits, validate_repo_path};
use base64::Engine;
use http::Method;
use serde::Deserialize;

use aicd_core::github::{GithubRepoId, InstallationId};
use aicd_core::store::GithubStore;
use aicd_core::{OrgId, RepoId};

use crate::client::{InstallationClient, RepoName, encode};

/// How long a view trusts its last check that the repository is still reachable (its
/// installation linked to the organization, the repository attached, through the same
/// installation) before it asks the store again, by default
/// ([`GitHubForge::with_access_recheck`](super::GitHubForge::with_access_recheck)). Bounds how long an unlinked repository can still be read by a job step in
/// progress.
pub(super) const DEFAULT_ACCESS_RECHECK: Duration = Duration::from_secs(5);

/// Who may still read through a view: the repository's organization, asked again (at most every
/// `every`) before GitHub is.
pub(super) struct AccessCheck {
    pub(super) store: Arc<dyn GithubStore>,
    pub(super) org: OrgId,
    pub(super) repo: RepoId,
    /// The installation and GitHub repository the view's token was minted for: access through
    /// anything else (a re-link elsewhere) is no access for this view.
    pub(super) reached_as: (InstallationId, GithubRepoId),
    pub(super) every: Duration,
    pub(super) checked_at: Mutex<Instant>,
}

impl AccessCheck {
    async fn ensure(&self) -> Result<(), RepoViewError> {
        let last = *self.checked_at.lock().unwrap_or_else(PoisonError::into_inner);
        if last.elapsed() < self.every {
            return Ok(());
        }
        let access = self.store.github_access(self.org, self.repo).await.map_err(|error| match error {
            aicd_core::Error::Rejected { message, .. } => RepoViewError::Inaccessible(message),
            other => unavailable(other),
        })?;
        if (access.installation_id, access.repo_id) != self.reached_as {
            return Err(RepoViewError::Inaccessible(
                "the repository is now reached through another installation; the job must start again".into(),
            ));
        }
        *self.checked_at.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        Ok(())
    }
}

/// A tree as `GET /repos/{o}/{r}/git/trees/{sha}` returns it.
#[derive(Deserialize)]
pub(super) struct Tree {
    pub(super) sha: String,
    #[serde(default)]
    pub(super) truncated: bool,
    #[serde(default)]
    pub(super) tree: Vec<TreeItem>,
}

/// One entry of a [`Tree`].
#[derive(Deserialize)]
pub(super) struct TreeItem {
    pub(super) path: String,
    pub(super) mode: String,
    #[serde(rename = "type")]
    pub(super) kind: String,
    pub(super) sha: String,
    pub(super) size: Option<u64>,
}

/// A blob as `GET /repos/{o}/{r}/git/blobs/{sha}` returns it.
#[derive(Deserialize)]
struct Blob {
    content: String,
    encoding: String,
}

/// A file found in the tree: its blob id and size.
#[derive(Clone, Debug)]
struct FileEntry {
    sha: String,
    size: u64,
}

/// The files of one tree of a GitHub repository, bounded by `limits`. Before it asks GitHub, it
/// checks (at most every few seconds) that the repository is still reachable from its
/// organization, so an unlink stops its reads too.
///
/// When GitHub truncated the recursive listing (past 100,000 entries or 7 MB), the view lists what
/// GitHub returned (which is normally already over the file limit, so `list_files` fails with
/// `TooManyFiles`), and `read_file` finds a file missing from the listing by walking the tree one
/// directory at a time.
pub(super) struct GitHubView {
    client: InstallationClient,
    access: AccessCheck,
    repo: RepoName,
    root_tree: String,
    files: BTreeMap<String, FileEntry>,
    truncated: bool,
    limits: RepoViewLimits,
}

impl GitHubView {
    pub(super) fn new(
        client: InstallationClient,
        access: AccessCheck,
        repo: RepoName,
        tree: Tree,
        limits: RepoViewLimits,
    ) -> Self {
        let files = tree
            .tree
            .into_iter()
            .filter(|item| item.kind == "blob")
            .map(|item| (item.path, FileEntry { sha: item.sha, size: item.size.unwrap_or(0) }))
            .collect::<BTreeMap<_, _>>();
        if tree.truncated {
            tracing::warn!(
                repo = %repo,
                listed = files.len(),
                "GitHub truncated the repository's tree; the view lists only part of it"
            );
        }
        Self { client, access, repo, root_tree: tree.sha, files, truncated: tree.truncated, limits }
    }

    /// Finds `path` by reading the trees on its way (for a truncated listing).
    async fn walk(&self, path: &str) -> Result<Option<FileEntry>, RepoViewError> {
        let mut tree_sha = self.root_tree.clone();
        let parts: Vec<&str> = path.split('/').collect();
        for (depth, part) in parts.iter().enumerate() {
            self.access.ensure().await?;
            let tree_path = format!("{}/git/trees/{}", self.repo.path(), encode(&tree_sha, false));
            let tree: Tree = self.client.call(Method::GET, &self.repo, &tree_path, None).await.map_err(unavailable)?;
            let last = depth + 1 == parts.len();
            let wanted = if last { "blob" } else { "tree" };
            let Some(item) = tree.tree.into_iter().find(|i| i.path == *part && i.kind == wanted) else {
                return Ok(None);
            };
            if last {
                return Ok(Some(FileEntry { sha: item.sha, size: item.size.unwrap_or(0) }));
            }
            tree_sha = item.sha;
        }
        Ok(None)
    }
}

#[async_trait::async_trait]
impl RepoView for GitHubView {
    async fn list_files(&self) -> Result<Vec<String>, RepoViewError> {
        let (count, limit) = (self.files.len(), self.limits.max_files);
        if count > limit {
            return Err(RepoViewError::TooManyFiles { count, limit });
        }
        Ok(self.files.keys().cloned().collect())
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, RepoViewError> {
        validate_repo_path(path)?;
        let entry = match self.files.get(path) {
            Some(entry) => entry.clone(),
            None if self.truncated => match self.walk(path).await? {
                Some(entry) => entry,
                None => return Ok(None),
            },
            None => return Ok(None),
        };
        let limit = self.limits.max_file_bytes;
        let too_large = |size: usize| RepoViewError::FileTooLarge { path: path.to_owned(), size, limit };
        if entry.size > limit as u64 {
            return Err(too_large(usize::try_from(entry.size).unwrap_or(usize::MAX)));
        }
        self.access.ensure().await?;
        let blob_path = format!("{}/git/blobs/{}", self.repo.path(), encode(&entry.sha, false));
        let blob: Blob = self.client.call(Method::GET, &self.repo, &blob_path, None).await.map_err(unavailable)?;
        let content = match blob.encoding.as_str() {
            "base64" => {
                let compact: Vec<u8> = blob.content.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
                base64::engine::general_purpose::STANDARD.decode(compact).map_err(|e| {
                    RepoViewError::Unavailable(format!("GitHub sent `{path}` in base64 that does not decode: {e}"))
                })?
            }
            _ => blob.content.into_bytes(),
        };
        if content.len() > limit {
            return Err(too_large(content.len()));
        }
        Ok(Some(content))
    }

    fn limits(&self) -> RepoViewLimits {
        self.limits
    }
}

fn unavailable(error: aicd_core::Error) -> RepoViewError {
    match error {
        aicd_core::Error::Unavailable { message, .. } | aicd_core::Error::Rejected { message, .. } => {
            RepoViewError::Unavailable(message)
        }
        other => RepoViewError::Unavailable(other.to_string()),
    }
}
