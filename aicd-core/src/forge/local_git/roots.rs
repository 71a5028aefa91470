//! Where local repositories may be: the directories an operator put them under.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The directories local repositories must be under ([`LocalRoots::resolve`]).
///
/// A path is resolved to its canonical form (symbolic links followed) and must then lie under
/// one of the roots, themselves canonical; so neither `..`, nor a link, nor a repository whose
/// `.git` file points elsewhere can reach outside them. [`LocalRoots::default`] has no root:
/// nothing is under it. [`LocalRoots::anywhere`] allows every path, for embedders and tests that
/// choose their paths themselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalRoots {
    /// `None`: anywhere.
    roots: Option<Vec<PathBuf>>,
}

impl Default for LocalRoots {
    /// No root: no path is under it.
    fn default() -> Self {
        Self { roots: Some(Vec::new()) }
    }
}

/// What a client is told about a path that cannot be used, whatever the reason (so the server's
/// disk cannot be probed through it).
const NOT_ACCESSIBLE: &str = "is not an accessible repository under this server's repository roots";

impl LocalRoots {
    /// Every path is allowed.
    pub fn anywhere() -> Self {
        Self { roots: None }
    }

    /// Paths under `roots`. Roots that do not exist (or cannot be resolved) are left out, with a
    /// warning.
    pub fn new(roots: impl IntoIterator<Item = PathBuf>) -> Self {
        let mut canonical = Vec::new();
        for root in roots {
            match std::fs::canonicalize(&root) {
                Ok(dir) if dir.is_dir() => canonical.push(dir),
                Ok(_) => tracing::warn!(root = %root.display(), "a local repository root is not a directory; ignored"),
                Err(e) => {
                    tracing::warn!(root = %root.display(), error = %e, "a local repository root cannot be resolved; ignored")
                }
            }
        }
        Self { roots: Some(canonical) }
    }

    /// The roots, canonical; `None` when every path is allowed.
    pub fn roots(&self) -> Option<&[PathBuf]> {
        self.roots.as_deref()
    }

    /// Whether `canonical` (already resolved) lies under a root.
    pub fn contains(&self, canonical: &Path) -> bool {
        match &self.roots {
            None => true,
            Some(roots) => roots.iter().any(|root| canonical.starts_with(root)),
        }
    }

    /// The canonical form of `path`, a repository's top directory under a root: a working tree
    /// with its own `.git` directory, or a bare repository (not a repository's `.git`, a
    /// directory inside one, or a linked worktree). [`Error::InvalidInput`] saying only that the
    /// path is not accessible otherwise (the reason is logged, never returned).
    pub fn resolve(&self, path: &str) -> Result<PathBuf> {
        let refuse = |why: &dyn std::fmt::Display| {
            tracing::info!(path, reason = %why, "a local repository path was refused");
            Error::invalid(format!("`{path}` {NOT_ACCESSIBLE}"))
        };
        let canonical = std::fs::canonicalize(path).map_err(|e| refuse(&e))?;
        if !canonical.is_dir() {
            return Err(refuse(&"not a directory"));
        }
        if !self.contains(&canonical) {
            return Err(refuse(&format!("{} is outside every root", canonical.display())));
        }
        if !is_repository_top(&canonical) {
            return Err(refuse(&"not a repository's top directory"));
        }
        Ok(canonical)
    }

    /// The message of the error for a path that cannot be used.
    pub(crate) fn not_accessible(path: &str) -> String {
        format!("the repository `{path}` {NOT_ACCESSIBLE}")
    }
}

/// Whether `dir` (canonical) is a repository's own top directory, by its shape: a `.git`
/// directory inside, or the parts of a bare repository (and not itself named `.git`). The forge
/// checks again with git when it opens the repository.
fn is_repository_top(dir: &Path) -> bool {
    if dir.join(".git").is_dir() {
        return true;
    }
    let bare = dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir();
    bare && dir.file_name().is_some_and(|name| name != ".git")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_only_under_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("repos").join("a");
        std::fs::create_dir_all(inside.join(".git")).unwrap();
        let outside = dir.path().join("elsewhere");
        std::fs::create_dir_all(outside.join(".git")).unwrap();
        let roots = LocalRoots::new([dir.path().join("repos"), dir.path().join("missing")]);
        assert_eq!(roots.roots().map(<[PathBuf]>::len), Some(1));
        let resolved = roots.resolve(inside.to_str().unwrap()).unwrap();
        assert_eq!(resolved, std::fs::canonicalize(&inside).unwrap());
        for bad in
            [outside.to_str().unwrap().to_owned(), "/etc".to_owned(), format!("{}/../elsewhere", inside.display())]
        {
            let err = roots.resolve(&bad).unwrap_err().to_string();
            assert!(err.contains("not an accessible repository") && !err.contains("No such file"), "{err}");
        }
        // A link under a root that points outside it is outside.
        let link = dir.path().join("repos").join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert!(roots.resolve(link.to_str().unwrap()).is_err());
        assert!(LocalRoots::default().resolve(inside.to_str().unwrap()).is_err());
        assert!(LocalRoots::anywhere().resolve(outside.to_str().unwrap()).is_ok());
    }

    #[test]
    fn only_a_repositorys_top_directory_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let roots = LocalRoots::new([dir.path().to_path_buf()]);
        let top = dir.path().join("a");
        for part in [".git/objects", ".git/refs", "src"] {
            std::fs::create_dir_all(top.join(part)).unwrap();
        }
        std::fs::write(top.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        let bare = dir.path().join("b.git");
        for part in ["objects", "refs"] {
            std::fs::create_dir_all(bare.join(part)).unwrap();
        }
        std::fs::write(bare.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::create_dir_all(dir.path().join("plain")).unwrap();
        assert!(roots.resolve(top.to_str().unwrap()).is_ok());
        assert!(roots.resolve(bare.to_str().unwrap()).is_ok());
        for not_top in [top.join(".git"), top.join("src"), dir.path().join("plain")] {
            assert!(roots.resolve(not_top.to_str().unwrap()).is_err(), "{}", not_top.display());
        }
    }
}
