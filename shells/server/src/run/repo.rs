//! Checking `run --repo`: a git repository's own top directory with a branch to start from, found
//! before anything is opened, so a wrong path is a clear message and not a failed job.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use aicd_core::repos::BranchName;

use super::UsageError;

/// A local repository `run` may work on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LocalRepo {
    /// Its canonical path (links followed): the working tree's top, or the bare repository.
    pub(crate) path: PathBuf,
    /// Whether it is a bare repository (no working tree; its git directory is `path` itself).
    pub(crate) bare: bool,
    /// The branch the change starts from and its pull request targets.
    pub(crate) base: String,
}

impl LocalRepo {
    /// The git directory, where the local forge records pull requests (under `aicd/`).
    pub(crate) fn git_dir(&self) -> PathBuf {
        if self.bare { self.path.clone() } else { self.path.join(".git") }
    }
}

/// Checks `path`: it must be a repository's top directory (a working tree with its own `.git`
/// directory, or a bare repository; not its `.git`, a directory inside it, a linked worktree or a
/// submodule), and `base` (or, when `None`, the branch `HEAD` points to) must be a branch with a
/// commit. Every refusal says what to do instead.
pub(crate) fn check(path: &Path, base: Option<&str>) -> Result<LocalRepo, UsageError> {
    let shown = path.display();
    let canonical = std::fs::canonicalize(path).map_err(|e| UsageError(format!("--repo {shown}: {e}")))?;
    if !canonical.is_dir() {
        return Err(UsageError(format!("--repo {shown} is not a directory")));
    }
    if canonical.to_str().is_none() {
        return Err(UsageError(format!("--repo {shown}: the path must be valid UTF-8")));
    }
    let bare = match shape(&canonical) {
        Shape::WorkTree => false,
        Shape::Bare => true,
        Shape::GitDir => {
            let parent = canonical.parent().unwrap_or(&canonical).display().to_string();
            return Err(UsageError(format!(
                "--repo {shown} is a repository's .git directory: pass the repository itself ({parent})"
            )));
        }
        Shape::GitFile => {
            return Err(UsageError(format!(
                "--repo {shown} is a linked worktree or a submodule (its .git is a file): pass the main \
                 repository's directory"
            )));
        }
        Shape::Other => {
            let hint = match canonical.ancestors().skip(1).find(|dir| shape(dir) == Shape::WorkTree) {
                Some(top) => format!("it is inside the repository {}: pass that directory", top.display()),
                None => "create one with `git init` and commit something first".to_owned(),
            };
            return Err(UsageError(format!(
                "--repo {shown} is not a git repository (it has no .git directory and is not a bare \
                 repository); {hint}"
            )));
        }
    };
    let git = Git { dir: canonical.clone() };
    let base = match base {
        Some(branch) => BranchName::parse(branch)
            .map_err(|_| UsageError(format!("--base `{branch}` is not a valid branch name")))?
            .into_string(),
        None => {
            let head = git.output(&["symbolic-ref", "--quiet", "--short", "HEAD"])?;
            head.filter(|b| !b.is_empty()).ok_or_else(|| {
                UsageError(format!(
                    "--repo {shown}: HEAD is not on a branch (detached); check a branch out or name one with --base"
                ))
            })?
        }
    };
    let spec = format!("refs/heads/{base}^{{commit}}");
    if git.output(&["rev-parse", "--verify", "--quiet", &spec])?.is_none() {
        return Err(UsageError(format!(
            "--repo {shown}: the branch `{base}` has no commit yet (commit something first, or name another \
             branch with --base)"
        )));
    }
    Ok(LocalRepo { path: canonical, bare, base })
}

/// What a directory looks like, to git.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// A working tree with its own `.git` directory.
    WorkTree,
    /// A bare repository.
    Bare,
    /// A `.git` directory of a working tree.
    GitDir,
    /// A working tree whose `.git` is a file (a linked worktree, a submodule).
    GitFile,
    /// None of these.
    Other,
}

fn shape(dir: &Path) -> Shape {
    let dot_git = dir.join(".git");
    if dot_git.is_dir() {
        return Shape::WorkTree;
    }
    if dot_git.is_file() {
        return Shape::GitFile;
    }
    let repo_parts = dir.join("HEAD").is_file() && dir.join("objects").is_dir() && dir.join("refs").is_dir();
    match (repo_parts, dir.file_name().is_some_and(|name| name == ".git")) {
        (true, true) => Shape::GitDir,
        (true, false) => Shape::Bare,
        _ => Shape::Other,
    }
}

/// git on one repository, the way the local forge runs it: without the user's or the system's
/// configuration or the caller's `GIT_*` variables, trusting only that repository, with its hooks
/// and file-system monitor off, and never looking above it for another repository.
struct Git {
    dir: PathBuf,
}

impl Git {
    /// The trimmed standard output of `git <args>`, or `None` when git exits non-zero.
    fn output(&self, args: &[&str]) -> Result<Option<String>, UsageError> {
        let mut cmd = Command::new("git");
        cmd.env_clear();
        for keep in ["PATH", "HOME", "TMPDIR", "GIT_EXEC_PATH", "SYSTEMROOT"] {
            if let Some(value) = std::env::var_os(keep) {
                cmd.env(keep, value);
            }
        }
        cmd.envs([("LC_ALL", "C"), ("GIT_CONFIG_NOSYSTEM", "1"), ("GIT_CONFIG_GLOBAL", "/dev/null")]);
        if let Some(parent) = self.dir.parent() {
            cmd.env("GIT_CEILING_DIRECTORIES", parent);
        }
        let mut safe = OsString::from("safe.directory=");
        safe.push(&self.dir);
        cmd.arg("-C").arg(&self.dir).arg("-c").arg(safe);
        cmd.args(["-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false"]).args(args);
        let out = cmd
            .output()
            .map_err(|e| UsageError(format!("cannot run git ({e}): local repositories need git on the PATH")))?;
        Ok(out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?}");
    }

    #[test]
    fn a_repository_top_with_a_commit_is_accepted_and_anything_else_explained() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("demo");
        std::fs::create_dir_all(repo.join("src")).unwrap();
        git(&repo, &["init", "-q", "-b", "trunk"]);
        let err = check(&repo, None).unwrap_err().0;
        assert!(err.contains("`trunk` has no commit yet"), "{err}");
        git(&repo, &["commit", "-q", "--allow-empty", "-m", "init"]);

        let found = check(&repo, None).unwrap();
        assert_eq!(found.path, std::fs::canonicalize(&repo).unwrap());
        assert_eq!((found.bare, found.base.as_str()), (false, "trunk"));
        assert_eq!(found.git_dir(), found.path.join(".git"));
        let err = check(&repo, Some("main")).unwrap_err().0;
        assert!(err.contains("`main` has no commit yet"), "{err}");
        let err = check(&repo, Some("bad..name")).unwrap_err().0;
        assert!(err.contains("not a valid branch name"), "{err}");

        let err = check(&repo.join("src"), None).unwrap_err().0;
        assert!(err.contains("is inside the repository") && err.contains("demo"), "{err}");
        let err = check(&repo.join(".git"), None).unwrap_err().0;
        assert!(err.contains("a repository's .git directory"), "{err}");
        let err = check(&dir.path().join("missing"), None).unwrap_err().0;
        assert!(err.starts_with("--repo ") && err.contains("No such file"), "{err}");
        let plain = dir.path().join("plain");
        std::fs::create_dir(&plain).unwrap();
        let err = check(&plain, None).unwrap_err().0;
        assert!(err.contains("is not a git repository") && err.contains("git init"), "{err}");

        let bare = dir.path().join("demo.git");
        git(dir.path(), &["clone", "-q", "--bare", repo.to_str().unwrap(), bare.to_str().unwrap()]);
        let found = check(&bare, None).unwrap();
        assert_eq!((found.bare, found.base.as_str()), (true, "trunk"));
        assert_eq!(found.git_dir(), found.path);
    }
}
