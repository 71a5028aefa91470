//! The input rules every forge applies ([`aicd_core::forge::rules`]), so the GitHub forge accepts
//! and refuses exactly what `aicd_core::forge::MemoryForge` and `aicd_core::forge::LocalGitForge`
//! do, with the same messages; and the GitHub forge's own error for a missing default branch.

use std::collections::BTreeMap;

use aicd_agent_api::FileChange;
use aicd_core::forge::rules;
use aicd_core::repos::Repository;
use aicd_core::{Error, Result};

pub(super) use aicd_core::forge::rules::{
    check_branch_name, check_changes, check_comment, check_commit_target, check_pull_request, normalize_message,
};

/// [`rules::apply_changes`] for callers that make a written file's value from its index and
/// previous value only: `written(index of the change, previous value)`.
pub(super) fn apply_changes<V>(
    files: &mut BTreeMap<Vec<u8>, V>,
    changes: &[FileChange],
    mut written: impl FnMut(usize, Option<&V>) -> V,
) -> Result<()> {
    rules::apply_changes(files, changes, |index, _content, previous| written(index, previous))
}

/// The error for a repository whose default branch does not exist.
pub(super) fn missing_default_branch(repo: &Repository) -> Error {
    Error::Rejected {
        service: "github",
        message: format!("the default branch `{}` of `{}` does not exist", repo.default_branch, repo.full_name),
    }
}
