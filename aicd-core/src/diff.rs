//! A job's proposed changes as a git-style unified diff, for people to read before the pull
//! request exists (or without opening it).
//!
//! [`unified_diff`] compares a [`Changeset`] with the files of the base it applies to, read
//! through a [`RepoView`]; [`crate::Core::job_diff`] does so for a job's changeset checkpoint
//! against the head of its repository's default branch.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use aicd_agent_api::{Changeset, RepoView, RepoViewError};
use serde::{Deserialize, Serialize};
use similar::{ChangeTag, TextDiff};

use crate::{Error, JobId, Result};

/// Lines of unchanged context around each change, as `git diff` shows by default.
const CONTEXT_LINES: usize = 3;

/// How long the line diff of one file may take before it settles for a correct but possibly
/// longer diff (pathological inputs make an exact diff quadratic).
const DIFF_TIMEOUT: Duration = Duration::from_secs(1);

/// What a change does to a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DiffStatus {
    /// The file is new: the base has no file at its path.
    Added,
    /// The file exists in the base and gets new content.
    Modified,
    /// The file exists in the base and is deleted.
    Deleted,
}

/// One changed file of a diff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DiffFile {
    /// Its path, relative to the repository root, as the changeset names it.
    pub path: String,
    /// Whether it is added, modified or deleted.
    pub status: DiffStatus,
    /// Lines added (0 for a binary file).
    pub additions: u32,
    /// Lines removed (0 for a binary file).
    pub deletions: u32,
    /// Whether either side is not text (not UTF-8, or contains a NUL byte); the patch then says
    /// only that the files differ.
    pub binary: bool,
}

/// The diff of a changeset against its base: the files it changes and the patch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangesetDiff {
    /// The files that differ from the base, sorted by path.
    pub files: Vec<DiffFile>,
    /// A git-style unified diff of those files, in the same order (empty when nothing differs).
    pub patch: String,
}

/// The changes a job proposes, as a diff against the head of its repository's default branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobDiff {
    /// The job.
    pub job_id: JobId,
    /// The branch the diff is taken against (the repository's default branch).
    pub base_branch: String,
    /// The files that differ from the base, sorted by path.
    pub files: Vec<DiffFile>,
    /// A git-style unified diff of those files, in the same order (empty when nothing differs).
    pub patch: String,
}

/// Compares `changeset` with the files of `base`, the tree it applies to.
///
/// Changes apply in order, so when a changeset touches a path twice the last change counts. A
/// written file that `base` lacks is added; a deleted one it has is deleted; a file whose final
/// content equals the base's, or a delete of a file the base lacks, is no change and is left out.
///
/// The patch reads like `git diff`'s: for each file a `diff --git a/<path> b/<path>` line, a
/// `new file mode` or `deleted file mode` line for additions and deletions, then `--- a/<path>`
/// and `+++ b/<path>` (`/dev/null` for the missing side) and `@@` hunks with three lines of
/// context, or `Binary files ... differ` when either side is not text. There are no `index` lines
/// (the base's blob ids are not known here). Paths with quotes, backslashes, control or non-ASCII
/// characters are quoted as git quotes them.
///
/// Errors: [`Error::Unavailable`] when the base cannot be read right now (retry later);
/// [`Error::Rejected`] when it refuses a path (an invalid path, or a file larger than the view
/// allows).
pub async fn unified_diff(changeset: &Changeset, base: &dyn RepoView) -> Result<ChangesetDiff> {
    let mut finals: BTreeMap<&str, Option<&[u8]>> = BTreeMap::new();
    for change in &changeset.changes {
        finals.insert(change.path.as_str(), change.content());
    }
    let mut diff = ChangesetDiff::default();
    for (path, new) in finals {
        let old = base.read_file(path).await.map_err(view_error)?;
        let status = match (&old, new) {
            (None, None) => continue,
            (Some(old), Some(new)) if old.as_slice() == new => continue,
            (None, Some(_)) => DiffStatus::Added,
            (Some(_), None) => DiffStatus::Deleted,
            (Some(_), Some(_)) => DiffStatus::Modified,
        };
        diff.files.push(file_patch(
            &mut diff.patch,
            path,
            status,
            old.as_deref().unwrap_or_default(),
            new.unwrap_or_default(),
        ));
    }
    Ok(diff)
}

/// Appends one file's patch to `patch` and returns its summary. `old` and `new` are empty for the
/// missing side of an addition or a deletion.
fn file_patch(patch: &mut String, path: &str, status: DiffStatus, old: &[u8], new: &[u8]) -> DiffFile {
    let a = quote_path("a/", path);
    let b = quote_path("b/", path);
    let _ = writeln!(patch, "diff --git {a} {b}");
    match status {
        DiffStatus::Added => patch.push_str("new file mode 100644\n"),
        DiffStatus::Deleted => patch.push_str("deleted file mode 100644\n"),
        DiffStatus::Modified => {}
    }
    let old_name = if status == DiffStatus::Added { "/dev/null" } else { a.as_str() };
    let new_name = if status == DiffStatus::Deleted { "/dev/null" } else { b.as_str() };
    let mut file = DiffFile { path: path.to_owned(), status, additions: 0, deletions: 0, binary: false };
    let (Some(old_text), Some(new_text)) = (as_text(old), as_text(new)) else {
        file.binary = true;
        let _ = writeln!(patch, "Binary files {old_name} and {new_name} differ");
        return file;
    };
    let diff = TextDiff::configure().timeout(DIFF_TIMEOUT).diff_lines(old_text, new_text);
    for change in diff.iter_all_changes() {
        match change.tag() {
            ChangeTag::Insert => file.additions = file.additions.saturating_add(1),
            ChangeTag::Delete => file.deletions = file.deletions.saturating_add(1),
            ChangeTag::Equal => {}
        }
    }
    // Writes `--- `/`+++ ` and the hunks, or nothing when there are no hunks (an empty file added
    // or deleted), as git does.
    let _ = write!(patch, "{}", diff.unified_diff().context_radius(CONTEXT_LINES).header(old_name, new_name));
    file
}

/// The content as text, if it is: valid UTF-8 without NUL bytes (git's test for binary content
/// is a NUL byte).
fn as_text(content: &[u8]) -> Option<&str> {
    if content.contains(&0) {
        return None;
    }
    std::str::from_utf8(content).ok()
}

/// `prefix` + `path`, in double quotes with C-style escapes if the path has characters git quotes
/// (`"`, `\`, control characters, bytes outside ASCII).
fn quote_path(prefix: &str, path: &str) -> String {
    let needs_quotes = path.bytes().any(|b| b == b'"' || b == b'\\' || !is_printable_ascii(b));
    if !needs_quotes {
        return format!("{prefix}{path}");
    }
    let mut quoted = String::with_capacity(path.len() + prefix.len() + 2);
    quoted.push('"');
    quoted.push_str(prefix);
    for b in path.bytes() {
        match b {
            b'"' => quoted.push_str("\\\""),
            b'\\' => quoted.push_str("\\\\"),
            b'\x07' => quoted.push_str("\\a"),
            b'\x08' => quoted.push_str("\\b"),
            b'\t' => quoted.push_str("\\t"),
            b'\n' => quoted.push_str("\\n"),
            b'\x0b' => quoted.push_str("\\v"),
            b'\x0c' => quoted.push_str("\\f"),
            b'\r' => quoted.push_str("\\r"),
            b if !is_printable_ascii(b) => {
                let _ = write!(quoted, "\\{b:03o}");
            }
            b => quoted.push(char::from(b)),
        }
    }
    quoted.push('"');
    quoted
}

/// A byte git prints in a path as it is (space to `~`).
fn is_printable_ascii(b: u8) -> bool {
    (0x20..0x7f).contains(&b)
}

fn view_error(err: RepoViewError) -> Error {
    if err.is_transient() {
        Error::Unavailable { service: "forge", message: err.to_string(), retry_after: None }
    } else {
        Error::Rejected { service: "forge", message: err.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_quoted_as_git_quotes_them() {
        assert_eq!(quote_path("a/", "src/main.rs"), "a/src/main.rs");
        assert_eq!(quote_path("a/", "with space"), "a/with space");
        assert_eq!(quote_path("b/", "tab\there"), "\"b/tab\\there\"");
        assert_eq!(quote_path("a/", "qu\"ote"), "\"a/qu\\\"ote\"");
        assert_eq!(quote_path("a/", "é"), "\"a/\\303\\251\"");
    }

    #[test]
    fn text_is_utf8_without_nul() {
        assert_eq!(as_text(b"hi\n"), Some("hi\n"));
        assert_eq!(as_text(b""), Some(""));
        assert_eq!(as_text(b"a\0b"), None);
        assert_eq!(as_text(&[0xff, 0xfe]), None);
    }
}
