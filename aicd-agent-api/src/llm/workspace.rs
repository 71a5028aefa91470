//! The repository as one step sees it: the base view, with the changes made so far on top. The
//! read tools look at it, the coder's edits apply to it, and the changeset it ends with is what
//! differs from the base.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use crate::{AgentError, Changeset, FileChange, RepoView, RepoViewError, validate_repo_path};

use super::tools::{Edit, EditAction, ListFiles, ReadFile, Search};

/// Most paths `list_files` answers.
const MAX_LISTED: usize = 400;
/// Most lines `read_file` answers at once.
const MAX_READ_LINES: usize = 400;
/// Most bytes `read_file` answers at once.
const MAX_READ_BYTES: usize = 40_000;
/// A line longer than this (a minified file) is cut when read.
const MAX_LINE_BYTES: usize = 2_000;
/// How much of such a line is shown.
const MAX_LINE_CHARS: usize = 500;
/// Most matches `search` answers.
const MAX_MATCHES: usize = 100;
/// Most files `search` reads.
const MAX_SEARCHED_FILES: usize = 2_000;
/// Longest line shown in a search match.
const MAX_MATCH_CHARS: usize = 240;
/// Largest compiled regular expression.
const MAX_REGEX_BYTES: usize = 1 << 20;

/// What a tool call answers: text for the model, or a tool error the model is told about.
pub(crate) type ToolAnswer = Result<String, String>;

/// The step's working copy of the repository.
pub(crate) struct Workspace {
    base: Arc<dyn RepoView>,
    /// Path → new content, or `None` for deleted; what the step (and earlier rounds) changed.
    changes: BTreeMap<String, Option<Vec<u8>>>,
    /// Base reads already made.
    cache: Mutex<HashMap<String, Option<Arc<Vec<u8>>>>>,
    /// The base's file list, once read.
    listing: Mutex<Option<Arc<Vec<String>>>>,
}

impl Workspace {
    /// `base` with `applied` (an earlier round's changeset) on top.
    pub(crate) fn new(base: Arc<dyn RepoView>, applied: Option<&Changeset>) -> Self {
        let changes = crate::repo_view::file_contents(applied);
        Self { base, changes, cache: Mutex::default(), listing: Mutex::default() }
    }

    async fn base_files(&self) -> Result<Arc<Vec<String>>, RepoViewError> {
        if let Some(files) = self.listing.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            return Ok(files);
        }
        let files = Arc::new(self.base.list_files().await?);
        *self.listing.lock().unwrap_or_else(PoisonError::into_inner) = Some(files.clone());
        Ok(files)
    }

    /// Every file, sorted, with the changes applied.
    pub(crate) async fn files(&self) -> Result<Vec<String>, RepoViewError> {
        let mut files: Vec<String> =
            self.base_files().await?.iter().filter(|p| !self.changes.contains_key(*p)).cloned().collect();
        files.extend(self.changes.iter().filter(|(_, c)| c.is_some()).map(|(p, _)| p.clone()));
        files.sort();
        Ok(files)
    }

    async fn base_read(&self, path: &str) -> Result<Option<Arc<Vec<u8>>>, RepoViewError> {
        if let Some(hit) = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get(path) {
            return Ok(hit.clone());
        }
        let content = self.base.read_file(path).await?.map(Arc::new);
        self.cache.lock().unwrap_or_else(PoisonError::into_inner).insert(path.to_owned(), content.clone());
        Ok(content)
    }

    /// A file's content now, or `None` if there is no such file.
    pub(crate) async fn read(&self, path: &str) -> Result<Option<Arc<Vec<u8>>>, RepoViewError> {
        validate_repo_path(path)?;
        match self.changes.get(path) {
            Some(Some(content)) => Ok(Some(Arc::new(content.clone()))),
            Some(None) => Ok(None),
            None => self.base_read(path).await,
        }
    }

    // --- the read tools ---------------------------------------------------------------------

    /// `list_files`.
    pub(crate) async fn list_files(&self, args: &ListFiles) -> Result<ToolAnswer, AgentError> {
        let prefix = normalize_dir(args.path.as_deref().unwrap_or(""));
        let files = answer(self.files().await)?;
        let files = match files {
            Ok(files) => files,
            Err(why) => return Ok(Err(why)),
        };
        let under: Vec<&String> = files.iter().filter(|f| is_under(f, &prefix)).collect();
        if under.is_empty() {
            return Ok(Ok(format!("no files under `{prefix}`")));
        }
        let mut text = under.iter().take(MAX_LISTED).map(|f| f.as_str()).collect::<Vec<_>>().join("\n");
        if under.len() > MAX_LISTED {
            text.push_str(&format!(
                "\n… and {} more files (list a subdirectory to see them)",
                under.len() - MAX_LISTED
            ));
        }
        Ok(Ok(text))
    }

    /// `read_file`.
    pub(crate) async fn read_file(&self, args: &ReadFile) -> Result<ToolAnswer, AgentError> {
        let content = match answer(self.read(&args.path).await)? {
            Ok(Some(content)) => content,
            Ok(None) => return Ok(Err(format!("`{}` does not exist", args.path))),
            Err(why) => return Ok(Err(why)),
        };
        let Some(text) = as_text(&content) else {
            return Ok(Ok(format!("`{}` is a binary file of {} bytes; it is not shown", args.path, content.len())));
        };
        let lines: Vec<&str> = text.lines().collect();
        let total = lines.len();
        if total == 0 {
            return Ok(Ok(format!("`{}` is empty", args.path)));
        }
        let start = usize::try_from(args.start_line.unwrap_or(1)).unwrap_or(usize::MAX).max(1);
        if start > total {
            return Ok(Err(format!("`{}` has {total} lines; start_line {start} is past its end", args.path)));
        }
        let wanted_end = args.end_line.map_or(total, |e| usize::try_from(e).unwrap_or(usize::MAX)).min(total);
        if wanted_end < start {
            return Ok(Err("end_line must not be before start_line".into()));
        }
        let mut body = String::new();
        let mut end = start - 1;
        for (n, line) in lines.iter().enumerate().take(wanted_end).skip(start - 1) {
            let line = if line.len() > MAX_LINE_BYTES {
                format!("{} …[line cut]", shorten(line, MAX_LINE_CHARS))
            } else {
                (*line).to_owned()
            };
            let numbered = format!("{}\t{line}\n", n + 1);
            if end - (start - 1) >= MAX_READ_LINES || body.len() + numbered.len() > MAX_READ_BYTES {
                break;
            }
            body.push_str(&numbered);
            end = n + 1;
        }
        let mut text = format!("{} (lines {start}-{end} of {total})\n{body}", args.path);
        if end < wanted_end {
            text.push_str(&format!("… cut at line {end}; read on with start_line {}\n", end + 1));
        }
        Ok(Ok(text))
    }

    /// `search`.
    pub(crate) async fn search(&self, args: &Search) -> Result<ToolAnswer, AgentError> {
        let regex = match regex::RegexBuilder::new(&args.pattern).size_limit(MAX_REGEX_BYTES).build() {
            Ok(regex) => regex,
            Err(e) => return Ok(Err(format!("invalid regular expression: {e}"))),
        };
        let prefix = normalize_dir(args.path.as_deref().unwrap_or(""));
        let files = match answer(self.files().await)? {
            Ok(files) => files,
            Err(why) => return Ok(Err(why)),
        };
        let under: Vec<&String> = files.iter().filter(|f| is_under(f, &prefix)).collect();
        let mut matches = Vec::new();
        let mut more = false;
        for path in under.iter().take(MAX_SEARCHED_FILES) {
            let content = match self.read(path).await {
                Ok(Some(content)) => content,
                Ok(None) | Err(RepoViewError::FileTooLarge { .. }) => continue,
                Err(e) if e.is_transient() => return Err(e.into()),
                Err(_) => continue,
            };
            let Some(text) = as_text(&content) else { continue };
            for (n, line) in text.lines().enumerate() {
                if regex.is_match(line) {
                    if matches.len() == MAX_MATCHES {
                        more = true;
                        break;
                    }
                    matches.push(format!("{path}:{}: {}", n + 1, shorten(line.trim_end(), MAX_MATCH_CHARS)));
                }
            }
            if more {
                break;
            }
        }
        if matches.is_empty() {
            return Ok(Ok(format!("no match for `{}`", args.pattern)));
        }
        let mut text = matches.join("\n");
        if more {
            text.push_str(&format!("\n… more than {MAX_MATCHES} matches; narrow the pattern or the path"));
        } else if under.len() > MAX_SEARCHED_FILES {
            text.push_str(&format!("\n… only the first {MAX_SEARCHED_FILES} files were searched; give a path"));
        }
        Ok(Ok(text))
    }

    // --- edits ------------------------------------------------------------------------------

    /// Applies `edits` in order, all or none: on any edit that does not apply, nothing changes
    /// and the answer names each such edit and why.
    pub(crate) async fn apply(&mut self, edits: &[Edit]) -> Result<Result<(), Vec<String>>, AgentError> {
        if edits.is_empty() {
            return Ok(Err(vec!["no edits: submit at least one".into()]));
        }
        let mut scratch: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut problems = Vec::new();
        for (n, edit) in edits.iter().enumerate() {
            let name = format!("edit {} ({} `{}`)", n + 1, action_name(edit.action), edit.path);
            if let Err(why) = check_edit_path(&edit.path) {
                problems.push(format!("{name}: {why}"));
                continue;
            }
            let current = match scratch.get(&edit.path) {
                Some(content) => content.clone().map(Arc::new),
                None => match self.read(&edit.path).await {
                    Ok(content) => content,
                    Err(e) if e.is_transient() => return Err(e.into()),
                    Err(e) => {
                        problems.push(format!("{name}: {e}"));
                        continue;
                    }
                },
            };
            match edit_result(edit, current.as_deref().map(Vec::as_slice)) {
                Ok(content) => {
                    scratch.insert(edit.path.clone(), content);
                }
                Err(why) => problems.push(format!("{name}: {why}")),
            }
        }
        if !problems.is_empty() {
            return Ok(Err(problems));
        }
        self.changes.extend(scratch);
        Ok(Ok(()))
    }

    /// What differs from the base, as a changeset with `summary`.
    pub(crate) async fn changeset(&self, summary: &str) -> Result<Changeset, AgentError> {
        let mut changes = Vec::new();
        for (path, content) in &self.changes {
            let base = self.base_read(path).await.map_err(AgentError::from)?;
            match (content, base) {
                (Some(new), Some(old)) if new == old.as_ref() => {}
                (Some(new), _) => changes.push(FileChange::write(path.clone(), new.clone())),
                (None, Some(_)) => changes.push(FileChange::delete(path.clone())),
                (None, None) => {}
            }
        }
        Ok(Changeset::new(summary, changes))
    }

    /// A unified diff of what differs from the base, at most `limit` bytes.
    pub(crate) async fn diff(&self, limit: usize) -> Result<String, AgentError> {
        let mut out = String::new();
        for (path, content) in &self.changes {
            let base = self.base_read(path).await.map_err(AgentError::from)?;
            let old = base.as_deref().map(|b| String::from_utf8_lossy(b).into_owned());
            let new = content.as_deref().map(|c| String::from_utf8_lossy(c).into_owned());
            if old == new {
                continue;
            }
            let (a, b) = (old.as_deref().unwrap_or(""), new.as_deref().unwrap_or(""));
            let header_old = if old.is_some() { format!("a/{path}") } else { "/dev/null".into() };
            let header_new = if new.is_some() { format!("b/{path}") } else { "/dev/null".into() };
            let diff = similar::TextDiff::from_lines(a, b);
            let text = diff.unified_diff().context_radius(3).header(&header_old, &header_new).to_string();
            if out.len() + text.len() > limit {
                out.push_str(&format!("… the diff is cut here; read the changed files ({path} and after)\n"));
                break;
            }
            out.push_str(&text);
        }
        Ok(out)
    }
}

/// A path an edit may change: relative, `/`-separated without empty, `.` or `..` parts, and not
/// in `.git` (the same paths the forges accept).
fn check_edit_path(path: &str) -> Result<(), String> {
    validate_repo_path(path).map_err(|e| e.to_string())?;
    if path.contains('\\') {
        return Err("use `/` to separate directories".into());
    }
    if path.split('/').any(|part| part.is_empty() || part == ".") {
        return Err("the path has an empty or `.` part; write it as it is listed".into());
    }
    if path.split('/').any(|part| part.eq_ignore_ascii_case(".git")) {
        return Err("files under `.git` cannot be changed".into());
    }
    Ok(())
}

/// What `edit` makes of a file whose content is `current` (`None`: no such file): the new
/// content, `None` to delete it, or why the edit does not apply.
fn edit_result(edit: &Edit, current: Option<&[u8]>) -> Result<Option<Vec<u8>>, String> {
    match edit.action {
        EditAction::Write => {
            let content = edit.content.as_ref().ok_or("`write` needs `content`, the file's whole new text")?;
            if edit.search.is_some() || edit.replace.is_some() {
                return Err("`write` takes `content` only".into());
            }
            Ok(Some(content.clone().into_bytes()))
        }
        EditAction::Delete => {
            if edit.content.is_some() || edit.search.is_some() || edit.replace.is_some() {
                return Err("`delete` takes no `content`, `search` or `replace`".into());
            }
            current.ok_or("the file does not exist")?;
            Ok(None)
        }
        EditAction::Replace => {
            let (Some(search), Some(replace)) = (&edit.search, &edit.replace) else {
                return Err("`replace` needs `search` (the exact text now in the file) and `replace`".into());
            };
            if edit.content.is_some() {
                return Err("`replace` takes `search` and `replace`, not `content`".into());
            }
            if search.is_empty() {
                return Err("`search` is empty".into());
            }
            let current = current.ok_or("the file does not exist (use `write` to create it)")?;
            let text = std::str::from_utf8(current).map_err(|_| "the file is not text; use `write`")?;
            // A file with Windows line ends was shown without its `\r`s: match it the same way.
            let (search, replace) = if text.contains("\r\n") && !search.contains('\r') {
                (search.replace('\n', "\r\n"), replace.replace('\n', "\r\n"))
            } else {
                (search.clone(), replace.clone())
            };
            match text.matches(search.as_str()).count() {
                0 => Err("no match for `search`: it must be the exact current text, including indentation, without \
                     line numbers (read the file again)"
                    .into()),
                1 => Ok(Some(text.replacen(search.as_str(), &replace, 1).into_bytes())),
                n => Err(format!("`search` matches {n} places; include more surrounding lines so it matches one")),
            }
        }
    }
}

fn action_name(action: EditAction) -> &'static str {
    match action {
        EditAction::Write => "write",
        EditAction::Delete => "delete",
        EditAction::Replace => "replace",
    }
}

/// A repository read's outcome for a tool: transient failures end the step (they may pass);
/// the rest become a tool error the model reads.
fn answer<T>(result: Result<T, RepoViewError>) -> Result<Result<T, String>, AgentError> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(e) if e.is_transient() => Err(e.into()),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// A directory prefix without `./` or a trailing `/` (`""` for the root).
fn normalize_dir(path: &str) -> String {
    let path = path.trim().trim_start_matches("./").trim_matches('/');
    if path == "." { String::new() } else { path.to_owned() }
}

fn is_under(file: &str, dir: &str) -> bool {
    dir.is_empty() || file == dir || file.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// The text of `content`, unless it looks binary (a NUL near the start, or not UTF-8).
pub(crate) fn as_text(content: &[u8]) -> Option<&str> {
    if content.iter().take(8000).any(|b| *b == 0) {
        return None;
    }
    std::str::from_utf8(content).ok()
}

/// `text` cut to `max` characters, with an ellipsis.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max.saturating_sub(1)).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryRepoView;

    fn workspace() -> Workspace {
        let base = MemoryRepoView::from_files([
            ("src/lib.rs", "fn a() {}\nfn b() {}\nfn a2() {}\n"),
            ("src/bin/main.rs", "fn main() { a(); }\n"),
            ("README.md", "# Demo\n"),
            ("logo.png", "\u{0}PNG"),
        ]);
        Workspace::new(Arc::new(base), None)
    }

    fn reading(path: &str, start_line: Option<u64>, end_line: Option<u64>) -> ReadFile {
        ReadFile { path: path.into(), start_line, end_line }
    }

    fn edit(path: &str, action: EditAction) -> Edit {
        Edit { path: path.into(), action, content: None, search: None, replace: None }
    }

    fn replace(path: &str, search: &str, with: &str) -> Edit {
        Edit { search: Some(search.into()), replace: Some(with.into()), ..edit(path, EditAction::Replace) }
    }

    #[tokio::test]
    async fn read_tools_answer_bounded_text() {
        let ws = workspace();
        let listed = ws.list_files(&ListFiles { path: Some("./src/".into()) }).await.unwrap().unwrap();
        assert_eq!(listed, "src/bin/main.rs\nsrc/lib.rs");
        let read = reading("src/lib.rs", Some(2), Some(2));
        assert_eq!(ws.read_file(&read).await.unwrap().unwrap(), "src/lib.rs (lines 2-2 of 3)\n2\tfn b() {}\n");
        let missing = reading("nope.rs", None, None);
        assert!(ws.read_file(&missing).await.unwrap().unwrap_err().contains("does not exist"));
        let binary = reading("logo.png", None, None);
        assert!(ws.read_file(&binary).await.unwrap().unwrap().contains("binary"));
        let found = ws.search(&Search { pattern: r"fn a\w*".into(), path: None }).await.unwrap().unwrap();
        assert_eq!(found, "src/lib.rs:1: fn a() {}\nsrc/lib.rs:3: fn a2() {}");
        let bad = ws.search(&Search { pattern: "(".into(), path: None }).await.unwrap().unwrap_err();
        assert!(bad.contains("invalid regular expression"), "{bad}");
        let escape = reading("../etc/passwd", None, None);
        assert!(ws.read_file(&escape).await.unwrap().unwrap_err().contains("invalid path"));
    }

    #[tokio::test]
    async fn edits_apply_all_or_nothing_and_say_why_not() {
        let mut ws = workspace();
        let problems = ws
            .apply(&[
                replace("src/lib.rs", "fn b() {}", "fn b() { todo() }"),
                replace("src/lib.rs", "fn c() {}", "x"),
                replace("src/lib.rs", "fn a", "fn z"),
                edit("gone.rs", EditAction::Delete),
            ])
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("edit 2 (replace `src/lib.rs`): no match"), "{problems:?}");
        assert!(problems[1].contains("matches 2 places"), "{problems:?}");
        assert!(problems[2].contains("does not exist"), "{problems:?}");
        assert!(ws.changeset("s").await.unwrap().is_empty(), "nothing applied");

        let write = Edit { content: Some("new\n".into()), ..edit("docs/new.md", EditAction::Write) };
        ws.apply(&[replace("src/lib.rs", "fn b() {}", "fn b() { 1 }"), write, edit("README.md", EditAction::Delete)])
            .await
            .unwrap()
            .unwrap();
        let changeset = ws.changeset("s").await.unwrap();
        assert_eq!(changeset.paths(), ["README.md", "docs/new.md", "src/lib.rs"]);
        assert!(ws.diff(10_000).await.unwrap().contains("+fn b() { 1 }"));
        // Later reads see the edits.
        let read = reading("src/lib.rs", None, None);
        assert!(ws.read_file(&read).await.unwrap().unwrap().contains("fn b() { 1 }"));
    }

    #[tokio::test]
    async fn odd_files_and_paths_are_handled() {
        let base = MemoryRepoView::from_files([("win.txt", "one\r\ntwo\r\n"), ("min.js", "x".repeat(50_000).as_str())]);
        let mut ws = Workspace::new(Arc::new(base), None);
        ws.apply(&[replace("win.txt", "one\ntwo\n", "one\nthree\n")]).await.unwrap().unwrap();
        assert_eq!(ws.read("win.txt").await.unwrap().unwrap().as_slice(), b"one\r\nthree\r\n", "line ends kept");
        let read = reading("min.js", None, None);
        let long = ws.read_file(&read).await.unwrap().unwrap();
        assert!(long.contains("(lines 1-1 of 1)") && long.contains("[line cut]") && long.len() < 1_000, "{long}");
        for bad in ["./a.txt", "a//b", ".git/config", "src/.git/x", "a\\b"] {
            let write = Edit { content: Some("x".into()), ..edit(bad, EditAction::Write) };
            assert!(ws.apply(&[write]).await.unwrap().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_later_round_builds_on_the_earlier_changeset() {
        let base: Arc<dyn RepoView> = Arc::new(MemoryRepoView::from_files([("a.txt", "one\n")]));
        let first = Changeset::new("first", vec![FileChange::write("a.txt", "one fixed\n")]);
        let mut ws = Workspace::new(base, Some(&first));
        ws.apply(&[Edit { content: Some("docs\n".into()), ..edit("b.txt", EditAction::Write) }])
            .await
            .unwrap()
            .unwrap();
        let cumulative = ws.changeset("second").await.unwrap();
        assert_eq!(
            cumulative.changes,
            [FileChange::write("a.txt", "one fixed\n"), FileChange::write("b.txt", "docs\n")]
        );
        // Undoing an earlier change leaves no change for that file.
        ws.apply(&[replace("a.txt", "one fixed", "one")]).await.unwrap().unwrap();
        assert_eq!(ws.changeset("third").await.unwrap().paths(), ["b.txt"]);
    }
}
