//! Changeset size rules: `too_many_files` and `too_many_bytes`.

use std::collections::BTreeSet;

use super::violation::{RuleId, Violation};
use super::{FileDiff, Policy};

/// Adds size violations for the changeset as a whole (violations without a path).
///
/// Definitions, ignoring no-op entries (no sides, or identical sides):
/// - files changed: the number of distinct paths;
/// - bytes changed: the sum of `after` sizes of added and modified files plus the `before`
///   sizes of deleted files (i.e. everything written, plus everything removed).
pub(super) fn check(diffs: &[FileDiff<'_>], policy: &Policy, out: &mut Vec<Violation>) {
    let changed = || diffs.iter().filter(|d| !d.is_noop());
    let files = changed().map(|d| d.path).collect::<BTreeSet<_>>().len();
    let bytes = changed()
        .map(|d| d.after.or(d.before).map_or(0, <[u8]>::len))
        .fold(0u64, |sum, len| sum.saturating_add(u64::try_from(len).unwrap_or(u64::MAX)));
    if files > policy.max_files {
        out.push(Violation::new(
            RuleId::TooManyFiles,
            None,
            None,
            format!(
                "the change touches {files} files; the limit is {}. Split the work into smaller \
                 changes",
                policy.max_files
            ),
        ));
    }
    if bytes > policy.max_bytes {
        out.push(Violation::new(
            RuleId::TooManyBytes,
            None,
            None,
            format!(
                "the change writes or deletes {} ({bytes} bytes); the limit is {} ({} bytes)",
                human(bytes),
                human(policy.max_bytes),
                policy.max_bytes
            ),
        ));
    }
}

/// `1536` → `"1.5 KiB"`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicyConfig;

    fn limits(max_files: usize, max_bytes: u64) -> Policy {
        let cfg = PolicyConfig { max_files: Some(max_files), max_bytes: Some(max_bytes), ..PolicyConfig::default() };
        Policy::from_config(&cfg).unwrap()
    }

    fn run(diffs: &[FileDiff<'_>], policy: &Policy) -> Vec<Violation> {
        let mut out = Vec::new();
        check(diffs, policy, &mut out);
        out
    }

    #[test]
    fn file_limit_counts_distinct_changed_paths() {
        let policy = limits(2, 1000);
        let two = [
            FileDiff::added("a", b"1"),
            FileDiff::deleted("b", b"2"),
            FileDiff::modified("c", b"same", b"same"),
            FileDiff::added("a", b"1"),
        ];
        assert!(run(&two, &policy).is_empty());
        let three = [two[0], two[1], FileDiff::modified("c", b"x", b"y")];
        let out = run(&three, &policy);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, RuleId::TooManyFiles);
        assert_eq!(out[0].path, None);
        assert!(out[0].message.contains("touches 3 files; the limit is 2"), "{}", out[0].message);
    }

    #[test]
    fn byte_limit_counts_written_and_deleted_bytes() {
        let policy = limits(50, 10);
        let big = [0u8; 6];
        let at_limit = [FileDiff::modified("a", &[1u8; 100], &big[..4]), FileDiff::deleted("b", &big)];
        assert!(run(&at_limit, &policy).is_empty());
        let over = [at_limit[0], FileDiff::deleted("b", &[0u8; 7])];
        let out = run(&over, &policy);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, RuleId::TooManyBytes);
        assert_eq!(out[0].message, "the change writes or deletes 11 B (11 bytes); the limit is 10 B (10 bytes)");
    }

    #[test]
    fn default_limits() {
        let policy = Policy::default();
        let content = vec![b'a'; 1024 * 1024];
        assert!(run(&[FileDiff::added("a", &content)], &policy).is_empty());
        let bigger = vec![b'a'; 1024 * 1024 + 1];
        let out = run(&[FileDiff::added("a", &bigger)], &policy);
        assert!(out[0].message.contains("1.0 MiB (1048577 bytes); the limit is 1.0 MiB"));
        let names: Vec<String> = (0..51).map(|i| format!("f{i}")).collect();
        let diffs: Vec<FileDiff<'_>> = names.iter().map(|n| FileDiff::added(n, b"x")).collect();
        assert_eq!(run(&diffs[..50], &policy), vec![]);
        assert_eq!(run(&diffs, &policy)[0].rule, RuleId::TooManyFiles);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(u64::MAX), "16777216.0 TiB");
    }
}
