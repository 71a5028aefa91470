//! The input rules every forge applies, so the GitHub forge accepts and refuses exactly what
//! `aicd_core::forge::MemoryForge` and `aicd_core::forge::LocalGitForge` do, with the same
//! messages.
//!
//! These mirror the `pub(super)` rules in `aicd-core/src/forge/memory.rs`, which the core does not
//! export; keep the two in step (or have the core export them and use those).

use std::collections::BTreeMap;

use aicd_agent_api::{ChangeOp, FileChange, validate_repo_path};
use aicd_core::forge::NewPullRequest;
use aicd_core::repos::Repository;
use aicd_core::{Error, Result};

/// Longest commit message accepted, in bytes.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest pull request title accepted, in characters.
const MAX_TITLE_CHARS: usize = 1000;
/// Longest pull request or comment body accepted, in bytes.
const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Longest file path accepted in a changeset, in bytes.
const MAX_PATH_BYTES: usize = 4096;

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidInput(message.into())
}

/// Checks a branch name by git's rules for branch names (`git check-ref-format --branch`).
pub(super) fn check_branch_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "@"
        && name != "HEAD"
        && !name.starts_with(['-', '/'])
        && !name.ends_with(['/', '.'])
        && !name.contains("..")
        && !name.contains("@{")
        && !name.contains("//")
        && !name.split('/').any(|part| part.starts_with('.') || part.ends_with(".lock"))
        && !name.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c));
    if ok { Ok(()) } else { Err(invalid(format!("`{name}` is not a valid branch name"))) }
}

/// Checks that `branch` may receive commits: a valid name that is not the default branch.
pub(super) fn check_commit_target(repo: &Repository, branch: &str) -> Result<()> {
    check_branch_name(branch)?;
    if branch == repo.default_branch {
        return Err(invalid(format!(
            "refusing to commit to the default branch `{branch}`; commit to a branch of its own"
        )));
    }
    Ok(())
}

/// Checks a commit message and returns it as stored: trailing newlines trimmed, then one added.
pub(super) fn normalize_message(message: &str) -> Result<String> {
    if message.trim().is_empty() {
        return Err(invalid("the commit message must not be blank"));
    }
    if message.contains('\0') {
        return Err(invalid("the commit message must not contain NUL"));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(invalid(format!("the commit message must be at most {MAX_MESSAGE_BYTES} bytes")));
    }
    Ok(format!("{}\n", message.trim_end_matches(['\n', '\r'])))
}

/// Checks that a changeset has changes and that every path is a plain relative file path.
pub(super) fn check_changes(changes: &[FileChange]) -> Result<()> {
    if changes.is_empty() {
        return Err(invalid("the changeset has no changes"));
    }
    for change in changes {
        let path = change.path.as_str();
        validate_repo_path(path).map_err(|e| invalid(e.to_string()))?;
        let bad_component = path.split('/').find(|c| c.is_empty() || *c == "." || c.eq_ignore_ascii_case(".git"));
        if let Some(component) = bad_component {
            let why = if component.is_empty() { "an empty component" } else { "a `.` or `.git` component" };
            return Err(invalid(format!("invalid path `{path}`: the path has {why}")));
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(invalid(format!("invalid path `{path}`: longer than {MAX_PATH_BYTES} bytes")));
        }
    }
    Ok(())
}

/// Applies `changes` in order to `files` (paths as bytes), making each written file's value with
/// `written(index of the change, previous value)`. Deleting a file that is not there, or writing a
/// file where a directory is (or below a file), is [`Error::InvalidInput`]; `files` is then left
/// half-changed, so callers apply to a copy.
pub(super) fn apply_changes<V>(
    files: &mut BTreeMap<Vec<u8>, V>,
    changes: &[FileChange],
    mut written: impl FnMut(usize, Option<&V>) -> V,
) -> Result<()> {
    check_changes(changes)?;
    for (index, change) in changes.iter().enumerate() {
        let key = change.path.as_bytes();
        match &change.op {
            ChangeOp::Write { .. } => {
                let value = written(index, files.get(key));
                files.insert(key.to_vec(), value);
            }
            ChangeOp::Delete => {
                if files.remove(key).is_none() {
                    return Err(invalid(format!(
                        "cannot delete `{}`: there is no such file on the branch",
                        change.path
                    )));
                }
            }
        }
    }
    for change in changes.iter().filter(|c| !c.is_delete()) {
        let key = change.path.as_bytes();
        if !files.contains_key(key) {
            continue;
        }
        let slashes = key.iter().enumerate().filter(|(_, b)| **b == b'/').map(|(i, _)| i);
        if let Some(file) = slashes.map(|i| &key[..i]).find(|prefix| files.contains_key(*prefix)) {
            return Err(invalid(format!(
                "cannot write `{}`: `{}` is a file, not a directory",
                change.path,
                String::from_utf8_lossy(file)
            )));
        }
        let mut below = key.to_vec();
        below.push(b'/');
        if files.range(below.clone()..).next().is_some_and(|(k, _)| k.starts_with(&below)) {
            return Err(invalid(format!("cannot write `{}`: it is a directory", change.path)));
        }
    }
    Ok(())
}

/// Checks a pull request to open: a valid branch other than the default one, a title that is not
/// blank, bounded texts and a positive issue number.
pub(super) fn check_pull_request(repo: &Repository, pr: &NewPullRequest) -> Result<()> {
    check_branch_name(&pr.branch)?;
    if pr.branch == repo.default_branch {
        return Err(invalid("a pull request cannot propose the default branch to itself"));
    }
    if pr.title.trim().is_empty() {
        return Err(invalid("the pull request title must not be blank"));
    }
    if pr.title.chars().count() > MAX_TITLE_CHARS {
        return Err(invalid(format!("the pull request title must be at most {MAX_TITLE_CHARS} characters")));
    }
    if pr.body.len() > MAX_BODY_BYTES {
        return Err(invalid(format!("the pull request body must be at most {MAX_BODY_BYTES} bytes")));
    }
    if pr.issue_number == Some(0) {
        return Err(invalid("the issue number must be positive"));
    }
    Ok(())
}

/// Checks a comment: a positive issue number and a body that is not blank and is bounded.
pub(super) fn check_comment(issue_number: u64, body: &str) -> Result<()> {
    if issue_number == 0 {
        return Err(invalid("the issue number must be positive"));
    }
    if body.trim().is_empty() {
        return Err(invalid("the comment must not be blank"));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(invalid(format!("the comment must be at most {MAX_BODY_BYTES} bytes")));
    }
    Ok(())
}

/// The error for a repository whose default branch does not exist.
pub(super) fn missing_default_branch(repo: &Repository) -> Error {
    Error::Rejected {
        service: "github",
        message: format!("the default branch `{}` of `{}` does not exist", repo.default_branch, repo.full_name),
    }
}
