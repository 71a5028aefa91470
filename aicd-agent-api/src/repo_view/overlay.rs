//! A repository view with a changeset applied on top.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{ChangeOp, Changeset, RepoView, RepoViewError, RepoViewLimits, validate_repo_path};

/// The files of a base [`RepoView`] with a [`Changeset`] applied: written files read as their
/// new content (and are listed, new ones included), deleted files read as absent (and are not
/// listed). The base's limits apply to the result.
///
/// A coder on a later round works on this view of the previous round's changeset
/// ([`Feedback::previous`](crate::Feedback::previous)); a critic reads the change it reviews
/// through it.
pub struct ChangesetView {
    base: Arc<dyn RepoView>,
    /// Path → new content, or `None` for a deleted file; the last change to a path wins.
    changes: BTreeMap<String, Option<Vec<u8>>>,
}

impl ChangesetView {
    /// `base` with `changeset` applied.
    pub fn new(base: Arc<dyn RepoView>, changeset: &Changeset) -> Self {
        Self { base, changes: file_contents(Some(changeset)) }
    }
}

/// Each path `changeset` touches, with its new content (`None`: deleted).
pub(crate) fn file_contents(changeset: Option<&Changeset>) -> BTreeMap<String, Option<Vec<u8>>> {
    changeset
        .into_iter()
        .flat_map(|c| &c.changes)
        .map(|change| {
            let content = match &change.op {
                ChangeOp::Write { content } => Some(content.clone()),
                ChangeOp::Delete => None,
            };
            (change.path.clone(), content)
        })
        .collect()
}

#[async_trait::async_trait]
impl RepoView for ChangesetView {
    async fn list_files(&self) -> Result<Vec<String>, RepoViewError> {
        let mut files = self.base.list_files().await?;
        files.retain(|path| !self.changes.contains_key(path));
        files.extend(self.changes.iter().filter(|(_, content)| content.is_some()).map(|(path, _)| path.clone()));
        files.sort();
        let limit = self.limits().max_files;
        if files.len() > limit {
            return Err(RepoViewError::TooManyFiles { count: files.len(), limit });
        }
        Ok(files)
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, RepoViewError> {
        validate_repo_path(path)?;
        match self.changes.get(path) {
            Some(Some(content)) => {
                let limit = self.limits().max_file_bytes;
                if content.len() > limit {
                    return Err(RepoViewError::FileTooLarge { path: path.to_owned(), size: content.len(), limit });
                }
                Ok(Some(content.clone()))
            }
            Some(None) => Ok(None),
            None => self.base.read_file(path).await,
        }
    }

    fn limits(&self) -> RepoViewLimits {
        self.base.limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileChange, MemoryRepoView};

    #[tokio::test]
    async fn changes_show_through_the_base() {
        let base = Arc::new(MemoryRepoView::from_files([("a.txt", "a"), ("b.txt", "b"), ("c.txt", "c")]));
        let changeset = Changeset::new(
            "s",
            vec![FileChange::write("a.txt", "A"), FileChange::delete("b.txt"), FileChange::write("new.txt", "n")],
        );
        let view = ChangesetView::new(base, &changeset);
        assert_eq!(view.list_files().await.unwrap(), ["a.txt", "c.txt", "new.txt"]);
        assert_eq!(view.read_file("a.txt").await.unwrap(), Some(b"A".to_vec()));
        assert_eq!(view.read_file("b.txt").await.unwrap(), None);
        assert_eq!(view.read_file("c.txt").await.unwrap(), Some(b"c".to_vec()));
        assert_eq!(view.read_file("new.txt").await.unwrap(), Some(b"n".to_vec()));
        assert!(matches!(view.read_file("../x").await, Err(RepoViewError::InvalidPath { .. })));
        // The base's limits hold for what the changeset adds.
        let small = Arc::new(MemoryRepoView::new().with_limits(RepoViewLimits { max_files: 1, max_file_bytes: 1 }));
        let big = ChangesetView::new(small, &Changeset::new("s", vec![FileChange::write("x", "xx")]));
        assert!(matches!(big.read_file("x").await, Err(RepoViewError::FileTooLarge { size: 2, .. })));
    }
}
