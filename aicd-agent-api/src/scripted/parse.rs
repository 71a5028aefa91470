//! Parser for the `aicd:` blocks of an issue body.
//!
//! Follows CommonMark's fenced code blocks at the top level of the document:
//! an opening fence is 3 or more backticks or tildes indented by at most 3
//! spaces, followed by an info string (which, for backtick fences, may not
//! contain a backtick); the block ends at a line holding only a run of the
//! same character at least as long, indented by at most 3 spaces. Content
//! lines lose as many leading spaces (up to the opening fence's indentation)
//! as the opening fence had. Line endings (`\r\n`, `\r`) are normalised to
//! `\n`, and every content line ends with `\n`. Fences inside block quotes or
//! list items are not recognised.

use std::collections::HashMap;

use crate::FileChange;

/// The info-string word that writes a file.
pub const WRITE_DIRECTIVE: &str = "aicd:write";
/// The info-string word that deletes a file.
pub const DELETE_DIRECTIVE: &str = "aicd:delete";

/// Why an issue body's `aicd:` blocks could not be read. Every message names
/// the line and says how to fix it, so it can be shown to the issue's author.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// A fenced block is never closed.
    #[error(
        "line {line}: the code block opened with {fence}{info} is never closed; \
         end it with a line holding only {fence}"
    )]
    UnterminatedFence {
        /// The 1-based line of the opening fence.
        line: usize,
        /// The opening fence's marker, e.g. "```".
        fence: String,
        /// The opening fence's info string, e.g. "aicd:write a.txt".
        info: String,
    },
    /// An `aicd:write` or `aicd:delete` block names no path.
    #[error("line {line}: `{directive}` needs a path, e.g. `{directive} src/lib.rs`")]
    MissingPath {
        /// The 1-based line of the opening fence.
        line: usize,
        /// The directive word.
        directive: String,
    },
    /// An `aicd:delete` block has content.
    #[error(
        "line {line}: the `aicd:delete {path}` block must be empty; \
         to replace the file use `aicd:write {path}` instead"
    )]
    DeleteWithContent {
        /// The 1-based line of the opening fence.
        line: usize,
        /// The path to delete.
        path: String,
    },
    /// An info string starts with `aicd:` but names no known directive.
    #[error(
        "line {line}: unknown directive `{directive}`; \
         use `aicd:write <path>` or `aicd:delete <path>`"
    )]
    UnknownDirective {
        /// The 1-based line of the opening fence.
        line: usize,
        /// The unknown word.
        directive: String,
    },
    /// Two blocks change the same path.
    #[error("line {line}: `{path}` is already changed by the block on line {first_line}")]
    DuplicatePath {
        /// The 1-based line of the second block's opening fence.
        line: usize,
        /// The path.
        path: String,
        /// The 1-based line of the first block's opening fence.
        first_line: usize,
    },
}

/// An opening fence.
struct Fence<'a> {
    indent: usize,
    ch: char,
    len: usize,
    info: &'a str,
}

impl Fence<'_> {
    fn marker(&self) -> String {
        self.ch.to_string().repeat(self.len)
    }

    fn closes_at(&self, line: &str) -> bool {
        let rest = line.trim_start_matches(' ');
        if line.len() - rest.len() > 3 {
            return false;
        }
        let after = rest.trim_start_matches(self.ch);
        rest.len() - after.len() >= self.len && after.trim_matches([' ', '\t']).is_empty()
    }
}

fn opening_fence(line: &str) -> Option<Fence<'_>> {
    let rest = line.trim_start_matches(' ');
    let indent = line.len() - rest.len();
    let ch = rest.chars().next().filter(|c| matches!(c, '`' | '~'))?;
    let after = rest.trim_start_matches(ch);
    let len = rest.len() - after.len();
    let info = after.trim_matches([' ', '\t']);
    if indent > 3 || len < 3 || (ch == '`' && info.contains('`')) {
        return None;
    }
    Some(Fence { indent, ch, len, info })
}

/// What a block's info string asks for.
enum Directive<'a> {
    None,
    Write(&'a str),
    Delete(&'a str),
}

fn directive(info: &str, line: usize) -> Result<Directive<'_>, ScriptError> {
    let (word, rest) = info.split_once([' ', '\t']).unwrap_or((info, ""));
    let path = rest.trim();
    let make = match word {
        WRITE_DIRECTIVE => Directive::Write,
        DELETE_DIRECTIVE => Directive::Delete,
        w if w.starts_with("aicd:") => {
            return Err(ScriptError::UnknownDirective { line, directive: w.to_owned() });
        }
        _ => return Ok(Directive::None),
    };
    if path.is_empty() {
        return Err(ScriptError::MissingPath { line, directive: word.to_owned() });
    }
    Ok(make(path))
}

/// Reads the `aicd:write <path>` and `aicd:delete <path>` blocks of an issue
/// body, in order, as file changes. Paths are trimmed but otherwise passed
/// through as written.
///
/// Returns an empty list when there is no such block. Other fenced blocks
/// are skipped; an unterminated one is an error only if it is an `aicd:`
/// block or would swallow one (otherwise, as in CommonMark, it runs to the
/// end of the body).
pub fn parse_script(body: &str) -> Result<Vec<FileChange>, ScriptError> {
    let text = body.replace("\r\n", "\n").replace('\r', "\n");
    let lines: Vec<&str> = text.lines().collect();
    let mut changes = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(fence) = opening_fence(lines[i]) else {
            i += 1;
            continue;
        };
        let line = i + 1;
        let action = directive(fence.info, line)?;
        let Some(close) = (i + 1..lines.len()).find(|&j| fence.closes_at(lines[j])) else {
            let swallows_directive =
                lines[i + 1..].iter().any(|l| opening_fence(l).is_some_and(|f| f.info.starts_with("aicd:")));
            if matches!(action, Directive::None) && !swallows_directive {
                // CommonMark: the block runs to the end of the body.
                break;
            }
            return Err(ScriptError::UnterminatedFence { line, fence: fence.marker(), info: fence.info.to_owned() });
        };
        let content = &lines[i + 1..close];
        i = close + 1;
        let change = match action {
            Directive::None => continue,
            Directive::Write(path) => FileChange::write(path, block_text(content, fence.indent)),
            Directive::Delete(path) => {
                if content.iter().any(|l| !l.trim().is_empty()) {
                    return Err(ScriptError::DeleteWithContent { line, path: path.to_owned() });
                }
                FileChange::delete(path)
            }
        };
        if let Some(&first_line) = seen.get(&change.path) {
            return Err(ScriptError::DuplicatePath { line, path: change.path, first_line });
        }
        seen.insert(change.path.clone(), line);
        changes.push(change);
    }
    Ok(changes)
}

/// The block's text: each line with up to `indent` leading spaces removed,
/// followed by `\n`.
fn block_text(lines: &[&str], indent: usize) -> String {
    let mut out = String::new();
    for l in lines {
        let strip = l.len() - l.trim_start_matches(' ').len();
        out.push_str(&l[strip.min(indent)..]);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
