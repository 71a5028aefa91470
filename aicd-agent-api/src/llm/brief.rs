//! The first message of each step: the issue, a bounded map of the repository, and what the
//! step builds on (the plan, the review's feedback, the change to review).

use std::fmt::Write as _;

use crate::{AgentError, Changeset, Feedback, Plan, TaskContext};

use super::workspace::{Workspace, as_text};

/// Most paths of the file tree shown.
const MAX_TREE: usize = 300;
/// Most lines of the README shown.
const README_LINES: usize = 120;
/// Most files the issue names that are shown.
const MAX_NAMED_FILES: usize = 4;
/// Most lines of each of those.
const NAMED_FILE_LINES: usize = 150;
/// Most bytes of the diff the critic is shown.
pub(crate) const MAX_DIFF_BYTES: usize = 60_000;

/// The issue and the repository's map, which every step starts from.
pub(crate) async fn repository(ctx: &TaskContext, workspace: &Workspace) -> Result<String, AgentError> {
    let issue = ctx.issue();
    let repo = ctx.repo();
    let mut text = String::new();
    let _ =
        writeln!(text, "# Issue{}\n\n{}\n", issue.number.map(|n| format!(" #{n}")).unwrap_or_default(), issue.title);
    if !issue.body.trim().is_empty() {
        let _ = writeln!(text, "{}\n", issue.body.trim());
    }
    let _ = writeln!(text, "# Repository {} (branch {})\n", repo.full_name, repo.default_branch);
    let files = workspace.files().await.map_err(AgentError::from)?;
    let _ = writeln!(text, "## Files ({})\n", files.len());
    for path in files.iter().take(MAX_TREE) {
        let _ = writeln!(text, "{path}");
    }
    if files.len() > MAX_TREE {
        let _ = writeln!(text, "… and {} more (use list_files)", files.len() - MAX_TREE);
    }
    let readme = files.iter().find(|p| !p.contains('/') && p.to_ascii_lowercase().starts_with("readme"));
    let mut shown = Vec::new();
    if let Some(readme) = readme {
        excerpt(&mut text, workspace, readme, README_LINES).await?;
        shown.push(readme.clone());
    }
    let mentioned = format!("{}\n{}", issue.title, issue.body);
    let named = files.iter().filter(|p| !shown.contains(*p) && names(&mentioned, p)).take(MAX_NAMED_FILES).cloned();
    for path in named.collect::<Vec<_>>() {
        excerpt(&mut text, workspace, &path, NAMED_FILE_LINES).await?;
    }
    Ok(text)
}

/// Whether `text` names the file `path`: its whole path, or (for a name with an extension) its
/// file name, as a word of its own. Bare names without an extension (`docs`, `Makefile`) are
/// too common in prose to count.
fn names(text: &str, path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let mut candidates = Vec::new();
    if path.contains('/') || path.contains('.') {
        candidates.push(path);
    }
    if name != path && name.contains('.') && name.len() > 3 {
        candidates.push(name);
    }
    candidates.into_iter().any(|needle| mentioned(text, needle))
}

/// Whether `needle` appears in `text` as a word of its own.
fn mentioned(text: &str, needle: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(needle).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let mut after = text[i + needle.len()..].chars();
        // A `.` right after the name ends a sentence unless a word goes on (`ops.pyc`).
        let after_ok = match after.next() {
            None => true,
            Some('.') => after.next().is_none_or(|c| !word(c)),
            Some(c) => !word(c),
        };
        before.is_none_or(|c| !word(c) && c != '.' && c != '/') && after_ok
    })
}

async fn excerpt(text: &mut String, workspace: &Workspace, path: &str, lines: usize) -> Result<(), AgentError> {
    let Some(content) = workspace.read(path).await.map_err(AgentError::from)? else { return Ok(()) };
    let Some(body) = as_text(&content) else { return Ok(()) };
    let total = body.lines().count();
    let _ = writeln!(
        text,
        "\n## {path}{}\n",
        if total > lines { format!(" (first {lines} of {total} lines)") } else { String::new() }
    );
    for (n, line) in body.lines().take(lines).enumerate() {
        let _ = writeln!(text, "{}\t{line}", n + 1);
    }
    Ok(())
}

/// The plan, for the coder and the critic.
pub(crate) fn plan(plan: &Plan) -> String {
    let mut text = format!("# Plan\n\n{}\n", plan.summary.trim());
    for (n, step) in plan.steps.iter().enumerate() {
        let _ = write!(text, "\n{}. {}", n + 1, step.description.trim());
        if let Some(path) = &step.path {
            let _ = write!(text, " ({path})");
        }
    }
    text.push('\n');
    text
}

/// The review's feedback, for a later coding round.
pub(crate) fn feedback(feedback: &Feedback) -> String {
    let mut text = format!("# Feedback on your change (round {})\n", feedback.round);
    for note in &feedback.notes {
        let _ = write!(text, "\n- {}", note.trim());
    }
    if let Some(previous) = &feedback.previous {
        let _ = write!(
            text,
            "\n\nYour earlier changes are already applied to the repository you see ({}). The edits you submit now are \
             made on top of them.",
            previous.paths().join(", ")
        );
    }
    text.push('\n');
    text
}

/// The change, for the critic.
pub(crate) fn change(changeset: &Changeset, diff: &str) -> String {
    format!("# The change\n\n{}\n\n```diff\n{}```\n", changeset.summary.trim(), diff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_by_path_or_by_a_whole_file_name() {
        let issue = "Crash in `calc/ops.py` when dividing; see ops.py and tests";
        assert!(names(issue, "calc/ops.py"));
        assert!(names("the bug is in ops.py.", "other/ops.py"));
        assert!(!names("mops.pyc is unrelated", "calc/ops.py"));
        assert!(!names("see the docs", "docs"), "names without an extension are too common to match");
    }
}
