//! The `secret` rule: scan added lines with the built-in and configured detectors.

use regex::bytes::{Captures, Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use super::error::PolicyError;
use super::lines::{added_flags, line_number, split_lines};
use super::secret_rules::{BUILTIN_RULES, Validate, accept};
use super::violation::{RuleId, Violation, show_path};
use super::{FileDiff, Policy};

/// Compile-size limit for one configured pattern (bounds work done on untrusted config).
const CUSTOM_SIZE_LIMIT: usize = 1 << 20;
/// Compile-size limit for the combined prefilter set.
const SET_SIZE_LIMIT: usize = 32 << 20;
/// Secrets listed per file before the rest are summarised in one violation.
const MAX_PER_FILE: usize = 20;
/// Characters of a secret that a message may reveal (only for values of at least 12 chars).
const REVEALED_CHARS: usize = 4;

/// All secret detectors, compiled, plus a [`RegexSet`] prefilter that finds candidate lines in
/// one pass.
#[derive(Debug, Clone)]
pub(super) struct SecretScanner {
    set: RegexSet,
    rules: Vec<Detector>,
}

#[derive(Debug, Clone)]
struct Detector {
    label: String,
    regex: Regex,
    validate: Validate,
}

/// A secret candidate that passed its rule's check.
struct Finding<'t> {
    label: &'t str,
    value: &'t [u8],
}

impl SecretScanner {
    /// Compiles the built-in detectors plus `custom` patterns (reported as
    /// [`PolicyError::InvalidRegex`] when they do not compile).
    pub(super) fn build<'p>(custom: impl IntoIterator<Item = &'p str>) -> Result<Self, PolicyError> {
        let mut rules = Vec::new();
        for rule in BUILTIN_RULES {
            rules.push(Detector {
                label: rule.label.to_owned(),
                regex: compile(rule.pattern, usize::MAX)?,
                validate: rule.validate,
            });
        }
        for pattern in custom {
            if rules.iter().any(|r| r.validate == Validate::Custom && r.regex.as_str() == pattern) {
                continue;
            }
            rules.push(Detector {
                label: format!("secret (custom pattern `{}`)", show_path(pattern)),
                regex: compile(pattern, CUSTOM_SIZE_LIMIT)?,
                validate: Validate::Custom,
            });
        }
        let set = RegexSetBuilder::new(rules.iter().map(|r| r.regex.as_str()))
            .size_limit(SET_SIZE_LIMIT)
            .build()
            .map_err(|e| PolicyError::InvalidRegex {
                pattern: "(all secret patterns combined)".into(),
                message: e.to_string(),
            })?;
        Ok(Self { set, rules })
    }

    /// Secrets on `lines[index]`, at most one per distinct span (earlier rules win overlaps).
    fn scan_line<'t>(&'t self, lines: &[&'t [u8]], index: usize) -> Vec<Finding<'t>> {
        let Some(line) = lines.get(index) else {
            return Vec::new();
        };
        let mut found: Vec<(usize, usize, Finding<'t>)> = Vec::new();
        for rule_index in self.set.matches(line).iter() {
            let Some(rule) = self.rules.get(rule_index) else {
                continue;
            };
            for caps in rule.regex.captures_iter(line) {
                let (Some(whole), Some(value)) = (caps.get(0), secret_group(&caps)) else {
                    continue;
                };
                let (start, end) = (value.start(), value.end());
                if found.iter().any(|(s, e, _)| start < *e && *s < end) {
                    continue;
                }
                if accept(rule.validate, value.as_bytes(), lines, index, whole.end()) {
                    let finding = Finding { label: &rule.label, value: value.as_bytes() };
                    found.push((start, end, finding));
                }
            }
        }
        found.into_iter().map(|(_, _, f)| f).collect()
    }
}

fn compile(pattern: &str, size_limit: usize) -> Result<Regex, PolicyError> {
    RegexBuilder::new(pattern)
        .size_limit(size_limit)
        .build()
        .map_err(|e| PolicyError::InvalidRegex { pattern: pattern.to_owned(), message: e.to_string() })
}

/// The group holding the secret: `value` if named, else group 1, else the whole match.
fn secret_group<'h>(caps: &Captures<'h>) -> Option<regex::bytes::Match<'h>> {
    caps.name("value").or_else(|| caps.get(1)).or_else(|| caps.get(0))
}

/// Adds `secret` violations for lines that `diff` adds, unless the path is allowlisted.
pub(super) fn check(diff: &FileDiff<'_>, policy: &Policy, out: &mut Vec<Violation>) {
    let Some(after) = diff.after else { return };
    if policy.secret_allow.is_match(diff.path) {
        return;
    }
    let lines = split_lines(after);
    let added = added_flags(diff.before, &lines);
    let path = show_path(diff.path);
    let mut listed = 0usize;
    let mut unlisted = 0usize;
    let mut report = |line: u32, what: String| {
        if listed == MAX_PER_FILE {
            unlisted += 1;
            return;
        }
        listed += 1;
        let message = format!(
            "`{path}` {what}; remove it from the change and read the value from the environment or a \
             secret store instead"
        );
        out.push(Violation::new(RuleId::Secret, Some(diff.path), Some(line), message));
    };
    for (index, is_added) in added.iter().enumerate() {
        if !is_added {
            continue;
        }
        for finding in policy.secrets.scan_line(&lines, index) {
            let line = line_number(index);
            report(line, format!("line {line}: possible {} ({})", finding.label, redact(finding.value)));
        }
    }
    // A value split into two string literals on adjacent lines (`"ghp_abc" +` / `"def"`), found
    // only when the halves are joined: reported when the finding spans the join.
    for index in 0..lines.len().saturating_sub(1) {
        if !(added[index] || added[index + 1]) {
            continue;
        }
        let Some((joined, at)) = joined_literal(lines[index], lines[index + 1]) else { continue };
        let joined_lines = [joined.as_slice()];
        for finding in policy.secrets.scan_line(&joined_lines, 0) {
            let start = (finding.value.as_ptr() as usize).saturating_sub(joined.as_ptr() as usize);
            if !(start < at && at < start + finding.value.len()) {
                continue;
            }
            let line = line_number(index);
            let (label, value) = (finding.label, redact(finding.value));
            report(
                line,
                format!("lines {line}-{}: possible {label} split across two lines ({value})", line.saturating_add(1)),
            );
        }
    }
    if unlisted > 0 {
        let message = format!("`{path}`: {unlisted} more possible secrets not listed");
        out.push(Violation::new(RuleId::Secret, Some(diff.path), None, message));
    }
}

/// The `secret` rule over a text the change publishes besides its files (the commit message,
/// the pull request's title and body): every line is scanned, and no path allowlist applies, as
/// the text is not a file. Violations carry no path; their message names `label`.
pub(super) fn check_text(label: &str, text: &str, policy: &Policy, out: &mut Vec<Violation>) {
    let lines = split_lines(text.as_bytes());
    let mut listed = 0usize;
    for index in 0..lines.len() {
        for finding in policy.secrets.scan_line(&lines, index) {
            if listed == MAX_PER_FILE {
                let message = format!("the {label}: more possible secrets not listed");
                out.push(Violation::new(RuleId::Secret, None, None, message));
                return;
            }
            listed += 1;
            let line = line_number(index);
            let message = format!(
                "the {label}, line {line}: possible {} ({}); the agent must not repeat a secret in \
                 what it writes about the change",
                finding.label,
                redact(finding.value)
            );
            out.push(Violation::new(RuleId::Secret, None, Some(line), message));
        }
    }
}

/// The string literal that `first` ends and `second` continues, joined: `first` without its
/// closing quote and the operator after it (`+`, `.`, `..`, `&`, `\`), `second` without a leading
/// operator and its opening quote. Returns the joined bytes and where the join is; `None` unless
/// `first` ends a quoted literal and `second` starts one.
fn joined_literal(first: &[u8], second: &[u8]) -> Option<(Vec<u8>, usize)> {
    const OPERATORS: &[u8] = b"+.&\\";
    let first = first.trim_ascii_end();
    let mut end = first.len();
    while end > 0 && OPERATORS.contains(&first[end - 1]) {
        end -= 1;
    }
    let first = first[..end].trim_ascii_end();
    let first = first.strip_suffix(b"\"").or_else(|| first.strip_suffix(b"'"))?;
    let second = second.trim_ascii_start();
    let start = second.iter().take_while(|b| OPERATORS.contains(b)).count();
    let second = second[start..].trim_ascii_start();
    let second = second.strip_prefix(b"\"").or_else(|| second.strip_prefix(b"'"))?;
    let mut joined = first.to_vec();
    let at = joined.len();
    joined.extend_from_slice(second);
    Some((joined, at))
}

/// A safe description of a secret: at most its first 4 characters, then `…` and its length.
pub(super) fn redact(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let len = text.chars().count();
    let shown: String = if len >= 12 {
        text.chars().take(REVEALED_CHARS).map(|c| if c.is_ascii_graphic() && c != '`' { c } else { '?' }).collect()
    } else {
        String::new()
    };
    format!("`{shown}…`, {len} chars")
}

#[cfg(test)]
mod tests;
