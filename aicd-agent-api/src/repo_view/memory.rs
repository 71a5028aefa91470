//! An in-memory [`RepoView`] for tests and scripted runs.

use std::collections::BTreeMap;

use super::{RepoView, RepoViewError, RepoViewLimits, validate_repo_path};

/// A [`RepoView`] over files held in memory, enforcing its limits exactly as
/// a real view must.
///
/// `list_files` fails with [`RepoViewError::TooManyFiles`] when it holds
/// more than `max_files` files; `read_file` fails with
/// [`RepoViewError::FileTooLarge`] for a file over `max_file_bytes` and with
/// [`RepoViewError::InvalidPath`] for a path rejected by
/// [`validate_repo_path`]. Paths are matched exactly (no normalisation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryRepoView {
    files: BTreeMap<String, Vec<u8>>,
    limits: RepoViewLimits,
}

impl MemoryRepoView {
    /// An empty view with the default limits (10,000 files, 1 MiB each).
    pub fn new() -> Self {
        Self::default()
    }

    /// A view of `files` with the default limits.
    pub fn from_files<P, C>(files: impl IntoIterator<Item = (P, C)>) -> Self
    where
        P: Into<String>,
        C: Into<Vec<u8>>,
    {
        Self {
            files: files.into_iter().map(|(p, c)| (p.into(), c.into())).collect(),
            limits: RepoViewLimits::default(),
        }
    }

    /// The same view with `limits` in place of the current ones.
    #[must_use]
    pub fn with_limits(mut self, limits: RepoViewLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same view with `content` at `path` (replacing any file there).
    #[must_use]
    pub fn with_file(mut self, path: impl Into<String>, content: impl Into<Vec<u8>>) -> Self {
        self.insert(path, content);
        self
    }

    /// Puts `content` at `path`, returning the previous content if any.
    /// Limits are checked when reading, not here.
    pub fn insert(&mut self, path: impl Into<String>, content: impl Into<Vec<u8>>) -> Option<Vec<u8>> {
        self.files.insert(path.into(), content.into())
    }

    /// How many files the view holds.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when the view holds no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

#[async_trait::async_trait]
impl RepoView for MemoryRepoView {
    async fn list_files(&self) -> Result<Vec<String>, RepoViewError> {
        if self.files.len() > self.limits.max_files {
            return Err(RepoViewError::TooManyFiles { count: self.files.len(), limit: self.limits.max_files });
        }
        Ok(self.files.keys().cloned().collect())
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, RepoViewError> {
        validate_repo_path(path)?;
        let Some(content) = self.files.get(path) else {
            return Ok(None);
        };
        if content.len() > self.limits.max_file_bytes {
            return Err(RepoViewError::FileTooLarge {
                path: path.to_owned(),
                size: content.len(),
                limit: self.limits.max_file_bytes,
            });
        }
        Ok(Some(content.clone()))
    }

    fn limits(&self) -> RepoViewLimits {
        self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn lists_sorted_and_reads() {
        let view = MemoryRepoView::from_files([("b.txt", "B"), ("a/x.rs", "X")]);
        assert_eq!(view.len(), 2);
        block_on(async {
            assert_eq!(view.list_files().await.unwrap(), ["a/x.rs", "b.txt"]);
            assert_eq!(view.read_file("b.txt").await.unwrap(), Some(b"B".to_vec()));
            assert_eq!(view.read_file("missing").await.unwrap(), None);
        });
    }

    #[test]
    fn enforces_file_count_limit() {
        let limits = RepoViewLimits { max_files: 2, max_file_bytes: 10 };
        let mut view = MemoryRepoView::new().with_limits(limits).with_file("a", "1").with_file("b", "2");
        block_on(async {
            assert_eq!(view.list_files().await.unwrap().len(), 2);
            view.insert("c", "3");
            assert_eq!(view.list_files().await, Err(RepoViewError::TooManyFiles { count: 3, limit: 2 }));
        });
    }

    #[test]
    fn enforces_file_size_limit() {
        let limits = RepoViewLimits { max_files: 10, max_file_bytes: 4 };
        let view = MemoryRepoView::new().with_limits(limits).with_file("ok", "1234").with_file("big", "12345");
        assert_eq!(view.limits(), limits);
        block_on(async {
            assert!(view.read_file("ok").await.unwrap().is_some());
            assert_eq!(
                view.read_file("big").await,
                Err(RepoViewError::FileTooLarge { path: "big".into(), size: 5, limit: 4 })
            );
        });
    }

    #[test]
    fn rejects_escaping_paths_even_if_stored() {
        let view = MemoryRepoView::new().with_file("/etc/passwd", "root").with_file("../up", "x");
        block_on(async {
            for p in ["/etc/passwd", "../up", "a/../../b"] {
                assert!(matches!(view.read_file(p).await, Err(RepoViewError::InvalidPath { .. })));
            }
        });
    }
}
