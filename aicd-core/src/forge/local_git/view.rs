//! A [`RepoView`] of one commit of a local git repository: files are listed with `git ls-tree`
//! and read with `git cat-file`, lazily, on tokio's blocking pool.

use aicd_agent_api::{RepoView, RepoViewError, RepoViewLimits, validate_repo_path};
use async_trait::async_trait;

use super::git::{Git, Opts, parse_ls_tree};
use crate::Error;

/// The files of `commit`, bounded by `limits`.
pub(super) struct LocalGitView {
    pub(super) git: Git,
    pub(super) commit: String,
    pub(super) limits: RepoViewLimits,
}

/// A file found in the tree: its blob id and size.
struct Blob {
    oid: String,
    size: u64,
}

#[async_trait]
impl RepoView for LocalGitView {
    async fn list_files(&self) -> Result<Vec<String>, RepoViewError> {
        let (git, commit, limit) = (self.git.clone(), self.commit.clone(), self.limits.max_files);
        let (count, mut files) = blocking(move || list(&git, &commit, limit)).await?;
        if count > limit {
            return Err(RepoViewError::TooManyFiles { count, limit });
        }
        files.sort();
        Ok(files)
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, RepoViewError> {
        validate_repo_path(path)?;
        let (git, commit, limit) = (self.git.clone(), self.commit.clone(), self.limits.max_file_bytes);
        let owned = path.to_owned();
        let Some(blob) = blocking(move || find_blob(&git, &commit, &owned)).await? else {
            return Ok(None);
        };
        if blob.size > limit as u64 {
            let size = usize::try_from(blob.size).unwrap_or(usize::MAX);
            return Err(RepoViewError::FileTooLarge { path: path.to_owned(), size, limit });
        }
        let git = self.git.clone();
        let content =
            blocking(move || git.run_limited(&["cat-file", "blob", &blob.oid], Opts::default(), limit)).await?;
        Ok(Some(content))
    }

    fn limits(&self) -> RepoViewLimits {
        self.limits
    }
}

/// Counts every file of `commit` and returns the UTF-8 paths of the first `keep` of them
/// (submodules are not files; paths that are not UTF-8 cannot be named through a view and are
/// left out).
fn list(git: &Git, commit: &str, keep: usize) -> crate::Result<(usize, Vec<String>)> {
    git.stream(&["ls-tree", "-r", "-z", "--full-tree", commit], |out| {
        let (mut count, mut files) = (0, Vec::new());
        let mut record = Vec::new();
        loop {
            record.clear();
            if out.read_until(0, &mut record)? == 0 {
                break;
            }
            if record.last() == Some(&0) {
                record.pop();
            }
            let Some(entry) = parse_ls_tree(&record) else { continue };
            if entry.kind != "blob" {
                continue;
            }
            count += 1;
            if files.len() < keep {
                match String::from_utf8(entry.path) {
                    Ok(path) => files.push(path),
                    Err(e) => {
                        tracing::debug!(path = %String::from_utf8_lossy(e.as_bytes()), "skipping a non-UTF-8 path")
                    }
                }
            }
        }
        Ok((count, files))
    })
}

/// The blob at exactly `path` in `commit`, if there is one.
fn find_blob(git: &Git, commit: &str, path: &str) -> crate::Result<Option<Blob>> {
    let out = git.run_limited(&["ls-tree", "-z", "-l", "--full-tree", commit, "--", path], Opts::default(), 1 << 20)?;
    let found = out
        .split(|b| *b == 0)
        .filter_map(parse_ls_tree)
        .find(|e| e.path == path.as_bytes() && e.kind == "blob")
        .map(|e| Blob { oid: e.oid, size: e.size.unwrap_or(0) });
    Ok(found)
}

async fn blocking<T: Send + 'static>(
    op: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, RepoViewError> {
    match tokio::task::spawn_blocking(op).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(Error::Unavailable { message, .. } | Error::Rejected { message, .. })) => {
            Err(RepoViewError::Unavailable(message))
        }
        Ok(Err(other)) => Err(RepoViewError::Unavailable(other.to_string())),
        Err(e) => Err(RepoViewError::Unavailable(format!("reading the repository failed: {e}"))),
    }
}
