//! The `binary_content` rule.

use super::lines::line_number;
use super::violation::{RuleId, Violation, show_path};
use super::{FileDiff, Policy};

/// How far into a file to look for a NUL byte (git's own heuristic uses the same window).
const NUL_WINDOW: usize = 8000;

/// Flags written files whose new contents have a NUL byte in the first 8000 bytes or are not
/// valid UTF-8, unless `allow_binary` is set or the path matches `binary_allow`.
pub(super) fn check(diff: &FileDiff<'_>, policy: &Policy, out: &mut Vec<Violation>) {
    let Some(after) = diff.after else { return };
    if policy.allow_binary || policy.binary_allow.is_match(diff.path) {
        return;
    }
    let path = show_path(diff.path);
    let window = after.get(..NUL_WINDOW).unwrap_or(after);
    let (line, problem) = if let Some(at) = window.iter().position(|b| *b == 0) {
        (line_of(after, at), "contains a NUL byte (binary content)")
    } else if let Err(e) = std::str::from_utf8(after) {
        (line_of(after, e.valid_up_to()), "is not valid UTF-8")
    } else {
        return;
    };
    let message = format!(
        "`{path}` {problem} at line {line}; binary files are not allowed unless listed in \
         `binary_allow`"
    );
    out.push(Violation::new(RuleId::BinaryContent, Some(diff.path), Some(line), message));
}

/// 1-based line number of byte offset `at`.
fn line_of(text: &[u8], at: usize) -> u32 {
    let before = text.get(..at).unwrap_or(text);
    line_number(before.iter().filter(|b| **b == b'\n').count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;

    fn run(policy: &Policy, diff: FileDiff<'_>) -> Vec<Violation> {
        let mut out = Vec::new();
        check(&diff, policy, &mut out);
        out
    }

    #[test]
    fn nul_and_invalid_utf8_are_flagged_with_line() {
        let policy = Policy::default();
        let out = run(&policy, FileDiff::added("img.png", b"\x89PNG\r\n\x1a\n\0\0"));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, RuleId::BinaryContent);
        assert_eq!(out[0].line, Some(3));
        assert!(out[0].message.starts_with("`img.png` contains a NUL byte"), "{}", out[0].message);
        let out = run(&policy, FileDiff::modified("a.txt", b"ok", b"ok\nla\xff\n"));
        assert_eq!(out[0].line, Some(2));
        assert!(out[0].message.contains("is not valid UTF-8"));
    }

    #[test]
    fn text_and_deletions_pass() {
        let policy = Policy::default();
        assert!(run(&policy, FileDiff::added("a.md", "ünïcode ✓\r\n".as_bytes())).is_empty());
        assert!(run(&policy, FileDiff::deleted("a.bin", b"\0\0")).is_empty());
    }

    #[test]
    fn nul_after_window_is_caught_only_as_valid_utf8() {
        let policy = Policy::default();
        let mut text = vec![b'a'; NUL_WINDOW];
        text.push(0);
        // NUL is valid UTF-8, so a late NUL alone is tolerated (same window as git).
        assert!(run(&policy, FileDiff::added("late.txt", &text)).is_empty());
    }

    #[test]
    fn allow_binary_and_allowlist() {
        let cfg = PolicyConfig { binary_allow: Some(vec!["assets/**/*.png".into()]), ..PolicyConfig::default() };
        let policy = Policy::from_config(&cfg).unwrap();
        assert!(run(&policy, FileDiff::added("assets/icons/a.png", b"\0")).is_empty());
        assert_eq!(run(&policy, FileDiff::added("assets/icons/a.PNG", b"\0")).len(), 1);
        assert_eq!(run(&policy, FileDiff::added("src/a.png", b"\0")).len(), 1);
        let cfg = PolicyConfig { allow_binary: Some(true), ..PolicyConfig::default() };
        let policy = Policy::from_config(&cfg).unwrap();
        assert!(run(&policy, FileDiff::added("src/a.bin", b"\0\xff")).is_empty());
    }
}
