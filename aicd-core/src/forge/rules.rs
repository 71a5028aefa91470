//! The input rules every forge applies, so that all of them ([`super::MemoryForge`],
//! [`super::LocalGitForge`], and forges in other crates such as the GitHub one) accept and refuse
//! exactly the same branch names, paths, messages and texts, with the same
//! [`Error::InvalidInput`] messages.
//!
//! The limits on texts are GitHub's, the strictest forge's: a pull request title of at most 256
//! characters, bodies and comments of at most 65,536. Callers that build such texts from longer
//! ones fit them first ([`fit_title`], [`fit_body`]).

use std::collections::BTreeMap;

use aicd_agent_api::{ChangeOp, FileChange, validate_repo_path};

use super::NewPullRequest;
use crate::repos::{BranchName, Repository};
use crate::{Error, Result};

/// Longest commit message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest pull request title accepted, in characters (GitHub's limit).
pub const MAX_TITLE_CHARS: usize = 256;
/// Longest pull request body or comment accepted, in characters (GitHub's limit).
pub const MAX_BODY_CHARS: usize = 65_536;
/// Longest file path accepted in a changeset, in bytes.
const MAX_PATH_BYTES: usize = 4096;

/// An error that may pass.
pub(super) fn unavailable(message: impl Into<String>) -> Error {
    Error::Unavailable { service: "forge", message: message.into(), retry_after: None }
}

/// An error that won't pass.
pub(super) fn rejected(message: impl Into<String>) -> Error {
    Error::Rejected { service: "forge", message: message.into() }
}

/// The error for a repository whose default branch does not exist.
pub(super) fn missing_default_branch(repo: &Repository) -> Error {
    rejected(format!("the default branch `{}` of `{}` does not exist", repo.default_branch, repo.full_name))
}

/// Checks a branch name by git's rules for branch names (`git check-ref-format --branch`); the
/// same rules as [`BranchName::parse`].
pub fn check_branch_name(name: &str) -> Result<()> {
    BranchName::parse(name).map(|_| ())
}

/// Checks that `branch` may receive commits: a valid name that is not the repository's default
/// branch.
pub fn check_commit_target(repo: &Repository, branch: &str) -> Result<()> {
    check_branch_name(branch)?;
    if branch == repo.default_branch {
        return Err(Error::invalid(format!(
            "refusing to commit to the default branch `{branch}`; commit to a branch of its own"
        )));
    }
    Ok(())
}

/// Checks a commit message (not blank, no NUL, at most 64 KiB) and returns it as stored: trailing
/// newlines trimmed, then one added.
pub fn normalize_message(message: &str) -> Result<String> {
    if message.trim().is_empty() {
        return Err(Error::invalid("the commit message must not be blank"));
    }
    if message.contains('\0') {
        return Err(Error::invalid("the commit message must not contain NUL"));
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(Error::invalid(format!("the commit message must be at most {MAX_MESSAGE_BYTES} bytes")));
    }
    Ok(format!("{}\n", message.trim_end_matches(['\n', '\r'])))
}

/// Checks that a changeset has changes and that every path is a plain relative file path: what
/// [`aicd_agent_api::validate_repo_path`] accepts, without empty, `.` or `.git` components, and at
/// most 4096 bytes.
pub fn check_changes(changes: &[FileChange]) -> Result<()> {
    if changes.is_empty() {
        return Err(Error::invalid("the changeset has no changes"));
    }
    for change in changes {
        let path = change.path.as_str();
        validate_repo_path(path).map_err(|e| Error::invalid(e.to_string()))?;
        let bad_component = path.split('/').find(|c| c.is_empty() || *c == "." || c.eq_ignore_ascii_case(".git"));
        if let Some(component) = bad_component {
            let why = if component.is_empty() { "an empty component" } else { "a `.` or `.git` component" };
            return Err(Error::invalid(format!("invalid path `{path}`: the path has {why}")));
        }
        if path.len() > MAX_PATH_BYTES {
            return Err(Error::invalid(format!("invalid path `{path}`: longer than {MAX_PATH_BYTES} bytes")));
        }
    }
    Ok(())
}

/// Checks `changes` with [`check_changes`], then applies them in order to `files` (paths as
/// bytes), making each written file's value with `written(index of the change, content, previous
/// value)`. Deleting a file that is not there, or writing a file where a directory is (or below a
/// file), is [`Error::InvalidInput`]; `files` is then left half-changed, so callers apply to a
/// copy.
pub fn apply_changes<V>(
    files: &mut BTreeMap<Vec<u8>, V>,
    changes: &[FileChange],
    mut written: impl FnMut(usize, &[u8], Option<&V>) -> V,
) -> Result<()> {
    check_changes(changes)?;
    for (index, change) in changes.iter().enumerate() {
        let key = change.path.as_bytes();
        match &change.op {
            ChangeOp::Write { content } => {
                let value = written(index, content, files.get(key));
                files.insert(key.to_vec(), value);
            }
            ChangeOp::Delete => {
                if files.remove(key).is_none() {
                    return Err(Error::invalid(format!(
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
            return Err(Error::invalid(format!(
                "cannot write `{}`: `{}` is a file, not a directory",
                change.path,
                String::from_utf8_lossy(file)
            )));
        }
        let mut below = key.to_vec();
        below.push(b'/');
        if files.range(below.clone()..).next().is_some_and(|(k, _)| k.starts_with(&below)) {
            return Err(Error::invalid(format!("cannot write `{}`: it is a directory", change.path)));
        }
    }
    Ok(())
}

/// Checks a pull request to open: a valid branch other than the default one, a title that is not
/// blank and at most [`MAX_TITLE_CHARS`], a body of at most [`MAX_BODY_CHARS`] and a positive
/// issue number.
pub fn check_pull_request(repo: &Repository, pr: &NewPullRequest) -> Result<()> {
    check_branch_name(&pr.branch)?;
    if pr.branch == repo.default_branch {
        return Err(Error::invalid("a pull request cannot propose the default branch to itself"));
    }
    if pr.title.trim().is_empty() {
        return Err(Error::invalid("the pull request title must not be blank"));
    }
    if pr.title.chars().count() > MAX_TITLE_CHARS {
        return Err(Error::invalid(format!("the pull request title must be at most {MAX_TITLE_CHARS} characters")));
    }
    if pr.body.chars().count() > MAX_BODY_CHARS {
        return Err(Error::invalid(format!("the pull request body must be at most {MAX_BODY_CHARS} characters")));
    }
    if pr.issue_number == Some(0) {
        return Err(Error::invalid("the issue number must be positive"));
    }
    Ok(())
}

/// Checks an issue number (positive).
pub fn check_issue(issue_number: u64) -> Result<()> {
    if issue_number == 0 {
        return Err(Error::invalid("the issue number must be positive"));
    }
    Ok(())
}

/// Checks a comment: a positive issue number and a body that is not blank and is at most
/// [`MAX_BODY_CHARS`].
pub fn check_comment(issue_number: u64, body: &str) -> Result<()> {
    check_issue(issue_number)?;
    if body.trim().is_empty() {
        return Err(Error::invalid("the comment must not be blank"));
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(Error::invalid(format!("the comment must be at most {MAX_BODY_CHARS} characters")));
    }
    Ok(())
}

/// `title` fitted to [`MAX_TITLE_CHARS`] with `suffix` (such as ` (#12)`) kept whole: the title
/// is cut on a character boundary, trailing spaces dropped, and an ellipsis added when it was cut.
pub fn fit_title(title: &str, suffix: &str) -> String {
    let room = MAX_TITLE_CHARS.saturating_sub(suffix.chars().count());
    let title = title.trim();
    if title.chars().count() <= room {
        return format!("{title}{suffix}");
    }
    let cut: String = title.chars().take(room.saturating_sub(1)).collect();
    format!("{}…{suffix}", cut.trim_end())
}

/// `body` fitted to [`MAX_BODY_CHARS`]: when it is longer, it is cut on a line (or character)
/// boundary and `note` (say, where the rest can be read) is appended, the whole within the limit.
pub fn fit_body(body: &str, note: &str) -> String {
    if body.chars().count() <= MAX_BODY_CHARS {
        return body.to_owned();
    }
    let note = format!("\n\n…\n\n{note}\n");
    let room = MAX_BODY_CHARS.saturating_sub(note.chars().count());
    let mut cut: String = body.chars().take(room).collect();
    if let Some(line) = cut.rfind('\n').filter(|at| *at > cut.len() / 2) {
        cut.truncate(line);
    }
    cut.push_str(&note);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_fit_githubs_limit_keeping_the_suffix() {
        let long = "é".repeat(300);
        let fitted = fit_title(&long, " (#12)");
        assert_eq!(fitted.chars().count(), MAX_TITLE_CHARS);
        assert!(fitted.ends_with("… (#12)"), "{fitted}");
        assert_eq!(fit_title(" Fix it ", " (#1)"), "Fix it (#1)");
        let exact = "x".repeat(MAX_TITLE_CHARS - 5);
        assert_eq!(fit_title(&exact, " (#1)").chars().count(), MAX_TITLE_CHARS);
        assert!(!fit_title(&exact, " (#1)").contains('…'));
    }

    #[test]
    fn bodies_fit_githubs_limit_with_a_pointer() {
        let short = "a body";
        assert_eq!(fit_body(short, "see the timeline"), short);
        let long = "line of text\n".repeat(10_000);
        let fitted = fit_body(&long, "The rest is in the job's timeline.");
        assert!(fitted.chars().count() <= MAX_BODY_CHARS);
        assert!(fitted.ends_with("The rest is in the job's timeline.\n"));
        let no_lines = "ß".repeat(70_000);
        assert!(fit_body(&no_lines, "more").chars().count() <= MAX_BODY_CHARS);
    }
}
