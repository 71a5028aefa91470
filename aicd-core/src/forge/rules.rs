//! The input rules every forge applies, so that all of them ([`super::MemoryForge`],
//! [`super::LocalGitForge`], and forges in other crates such as the GitHub one) accept and refuse
//! exactly the same branch names, paths, messages and texts, with the same
//! [`Error::InvalidInput`](crate::Error::InvalidInput) messages.

use std::collections::BTreeMap;

use aicd_agent_api::FileChange;

use super::NewPullRequest;
use super::memory;
use crate::Result;
use crate::repos::Repository;

/// Checks a branch name by git's rules for branch names (`git check-ref-format --branch`).
pub fn check_branch_name(name: &str) -> Result<()> {
    memory::check_branch_name(name)
}

/// Checks that `branch` may receive commits: a valid name that is not the repository's default
/// branch.
pub fn check_commit_target(repo: &Repository, branch: &str) -> Result<()> {
    memory::check_commit_target(repo, branch)
}

/// Checks a commit message (not blank, no NUL, at most 64 KiB) and returns it as stored: trailing
/// newlines trimmed, then one added.
pub fn normalize_message(message: &str) -> Result<String> {
    memory::normalize_message(message)
}

/// Checks that a changeset has changes and that every path is a plain relative file path: what
/// [`aicd_agent_api::validate_repo_path`] accepts, without empty, `.` or `.git` components, and at
/// most 4096 bytes.
pub fn check_changes(changes: &[FileChange]) -> Result<()> {
    memory::check_changes(changes)
}

/// Checks `changes` with [`check_changes`], then applies them in order to `files` (paths as
/// bytes), making each written file's value with `written(index of the change, content, previous
/// value)`. Deleting a file that is not there, or writing a file where a directory is (or below a
/// file), is [`Error::InvalidInput`](crate::Error::InvalidInput); `files` is then left
/// half-changed, so callers apply to a copy.
pub fn apply_changes<V>(
    files: &mut BTreeMap<Vec<u8>, V>,
    changes: &[FileChange],
    written: impl FnMut(usize, &[u8], Option<&V>) -> V,
) -> Result<()> {
    memory::apply_changes(files, changes, written)
}

/// Checks a pull request to open: a valid branch other than the default one, a title that is not
/// blank, bounded texts and a positive issue number.
pub fn check_pull_request(repo: &Repository, pr: &NewPullRequest) -> Result<()> {
    memory::check_pull_request(repo, pr)
}

/// Checks an issue number (positive).
pub fn check_issue(issue_number: u64) -> Result<()> {
    memory::check_issue(issue_number)
}

/// Checks a comment: a positive issue number and a body that is not blank and is at most 1 MiB.
pub fn check_comment(issue_number: u64, body: &str) -> Result<()> {
    memory::check_comment(issue_number, body)
}
