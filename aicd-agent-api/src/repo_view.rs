//! A read-only, bounded view of the repository at the base commit.

mod memory;
mod overlay;

pub use memory::MemoryRepoView;
pub use overlay::ChangesetView;
#[cfg(feature = "llm")]
pub(crate) use overlay::file_contents;

use serde::{Deserialize, Serialize};

/// Read-only access to the repository's files at the commit the job starts
/// from.
///
/// Implementations must be bounded: they fail with
/// [`RepoViewError::TooManyFiles`] or [`RepoViewError::FileTooLarge`] rather
/// than hand an agent more than [`RepoView::limits`] allows, and they reject
/// paths that could escape the repository with
/// [`RepoViewError::InvalidPath`] (see [`validate_repo_path`]).
#[async_trait::async_trait]
pub trait RepoView: Send + Sync {
    /// Every file path in the repository, `/`-separated, relative to its
    /// root, sorted. Fails with [`RepoViewError::TooManyFiles`] when there
    /// are more than `limits().max_files`.
    async fn list_files(&self) -> Result<Vec<String>, RepoViewError>;

    /// The content of the file at `path`, or `None` if there is no such
    /// file. Fails with [`RepoViewError::InvalidPath`] for an absolute path
    /// or one with a `..` component, and [`RepoViewError::FileTooLarge`] for
    /// a file over `limits().max_file_bytes`.
    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, RepoViewError>;

    /// The bounds this view enforces.
    fn limits(&self) -> RepoViewLimits;
}

/// The bounds of a [`RepoView`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RepoViewLimits {
    /// Most files [`RepoView::list_files`] will return.
    pub max_files: usize,
    /// Largest file, in bytes, [`RepoView::read_file`] will return.
    pub max_file_bytes: usize,
}

impl RepoViewLimits {
    /// The default maximum number of files: 10,000.
    pub const DEFAULT_MAX_FILES: usize = 10_000;
    /// The default maximum file size: 1 MiB.
    pub const DEFAULT_MAX_FILE_BYTES: usize = 1024 * 1024;
}

impl Default for RepoViewLimits {
    /// 10,000 files and 1 MiB per file.
    fn default() -> Self {
        Self { max_files: Self::DEFAULT_MAX_FILES, max_file_bytes: Self::DEFAULT_MAX_FILE_BYTES }
    }
}

/// Why a [`RepoView`] call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RepoViewError {
    /// The repository has more files than the view allows.
    #[error("the repository has {count} files, more than the limit of {limit}")]
    TooManyFiles {
        /// How many files there are.
        count: usize,
        /// The view's `max_files`.
        limit: usize,
    },
    /// The file is larger than the view allows.
    #[error("file `{path}` is {size} bytes, more than the limit of {limit}")]
    FileTooLarge {
        /// The requested path.
        path: String,
        /// The file's size in bytes.
        size: usize,
        /// The view's `max_file_bytes`.
        limit: usize,
    },
    /// The path is not a relative path inside the repository.
    #[error("invalid path `{path}`: {reason}")]
    InvalidPath {
        /// The requested path.
        path: String,
        /// Why it was rejected, readable by a person.
        reason: String,
    },
    /// The repository could not be read right now; retrying may succeed.
    #[error("the repository is unavailable: {0}")]
    Unavailable(String),
    /// The repository may no longer be read (its access was withdrawn); retrying will not help.
    #[error("the repository can no longer be read: {0}")]
    Inaccessible(String),
}

impl RepoViewError {
    /// True for errors that may go away on retry ([`RepoViewError::Unavailable`]).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// Checks that `path` is a relative path that stays inside the repository.
///
/// Rejects the empty path, absolute paths (leading `/` or `\`, or a Windows
/// drive such as `C:`), paths containing NUL, and paths with a `..`
/// component (with `/` or `\` as separators). It does not check that the
/// file exists. Implementations of [`RepoView`] should call it in
/// [`RepoView::read_file`].
pub fn validate_repo_path(path: &str) -> Result<(), RepoViewError> {
    let invalid = |reason: &str| Err(RepoViewError::InvalidPath { path: path.to_owned(), reason: reason.to_owned() });
    let bytes = path.as_bytes();
    if path.is_empty() {
        return invalid("the path is empty");
    }
    if path.contains('\0') {
        return invalid("the path contains a NUL byte");
    }
    if path.starts_with(['/', '\\']) || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':') {
        return invalid("the path is absolute; use a path relative to the repository root");
    }
    if path.split(['/', '\\']).any(|part| part == "..") {
        return invalid("the path has a `..` component");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_paths() {
        for ok in ["a", "a/b.txt", "a/.b", "a..b/c", ".github/x.yml", "./a"] {
            assert_eq!(validate_repo_path(ok), Ok(()), "{ok}");
        }
        for bad in ["", "/etc/passwd", "\\x", "C:/x", "c:", "..", "../a", "a/../b", "a/..", "a\\..\\b", "a\0b"] {
            assert!(matches!(validate_repo_path(bad), Err(RepoViewError::InvalidPath { .. })), "{bad:?}");
        }
    }

    #[test]
    fn default_limits() {
        let l = RepoViewLimits::default();
        assert_eq!(l.max_files, 10_000);
        assert_eq!(l.max_file_bytes, 1_048_576);
    }

    #[test]
    fn transient_only_when_unavailable() {
        assert!(RepoViewError::Unavailable("x".into()).is_transient());
        assert!(!RepoViewError::TooManyFiles { count: 2, limit: 1 }.is_transient());
        assert!(!RepoViewError::Inaccessible("unlinked".into()).is_transient());
    }
}
