//! Test-protection rules: `deleted_test` and `removed_assertion`.

use regex::bytes::Regex;

use super::lines::split_lines;
use super::violation::{RuleId, Violation, show_path};
use super::{FileDiff, Policy};

/// Lines that assert or declare a test, across common languages and frameworks.
const ASSERTION_PATTERN: &str = concat!(
    r"(?i:\bassert)|XCTAssert|\bexpect\(|\bEXPECT_|\.should\b|\bshould\(",
    r"|#!?\[(?:[A-Za-z_][A-Za-z0-9_]*::)*test\b|@Test\b|\bit\(|\btest\(",
    r"|\bdef test_|\bfn test_|\bfunc Test|\bt\.(?:Error|Errorf|Fatal|Fatalf|Fail|FailNow)\b",
    r"|\brequire\.[A-Z]",
);

/// Counts assertion-like lines (see `ASSERTION_PATTERN`), ignoring comment lines so that
/// commenting an assertion out counts as removing it.
#[derive(Debug, Clone)]
pub(super) struct AssertionMatcher {
    regex: Option<Regex>,
}

impl AssertionMatcher {
    /// Compiles the built-in pattern (a constant covered by tests; if it ever failed to compile,
    /// the removed-assertion check would be skipped rather than panic).
    pub(super) fn new() -> Self {
        Self { regex: Regex::new(ASSERTION_PATTERN).ok() }
    }

    fn count(&self, text: &[u8]) -> usize {
        let Some(regex) = &self.regex else { return 0 };
        split_lines(text).into_iter().filter(|line| !is_comment(line) && regex.is_match(line)).count()
    }
}

/// True for lines that start with a common comment marker (`#[...]` attributes are not comments).
fn is_comment(line: &[u8]) -> bool {
    let trimmed = line.trim_ascii_start();
    if trimmed.starts_with(b"#[") || trimmed.starts_with(b"#![") {
        return false;
    }
    [&b"//"[..], b"#", b"--", b"/*", b"*", b"<!--", b";", b"%"].iter().any(|marker| trimmed.starts_with(marker))
}

/// Flags deleted test files and test files that lose assertion-like lines, unless
/// `allow_test_deletion` is set. A test file is one matching the test-path globs.
pub(super) fn check(diff: &FileDiff<'_>, policy: &Policy, out: &mut Vec<Violation>) {
    if policy.allow_test_deletion || !policy.test_paths.is_match(diff.path) {
        return;
    }
    let path = show_path(diff.path);
    match (diff.before, diff.after) {
        (Some(_), None) => out.push(Violation::new(
            RuleId::DeletedTest,
            Some(diff.path),
            None,
            format!("`{path}` is a test file and may not be deleted; fix the code, not the tests"),
        )),
        (Some(before), Some(after)) => {
            let was = policy.assertions.count(before);
            let now = policy.assertions.count(after);
            if now < was {
                let removed = was - now;
                let noun = if removed == 1 { "line" } else { "lines" };
                out.push(Violation::new(
                    RuleId::RemovedAssertion,
                    Some(diff.path),
                    None,
                    format!(
                        "`{path}`: {removed} assertion-like {noun} removed ({was} before, {now} \
                         after); tests may be extended but not weakened"
                    ),
                ));
            }
        }
        _ => {}
    }
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
    fn pattern_compiles_and_counts_languages() {
        let m = AssertionMatcher::new();
        assert!(m.regex.is_some());
        let text = b"#[test]\nfn test_a() {\n    assert_eq!(1, 1);\n}\n#[tokio::test]\n\
            expect(x).toBe(1);\nit('works', () => {});\nx.should.equal(1)\ndef test_b():\n\
            self.assertEqual(a, b)\nfunc TestX(t *testing.T) {\nt.Fatalf(\"x\")\n\
            require.Equal(t, 1, 2)\nEXPECT_EQ(a, b);\nXCTAssertTrue(x)\n@Test\n\
            let x = 1;\n";
        assert_eq!(m.count(text), 15);
    }

    #[test]
    fn comments_do_not_count() {
        let m = AssertionMatcher::new();
        assert_eq!(m.count(b"// assert!(x);\n# assert x\n  * expect(a)\n-- assert\n"), 0);
        assert_eq!(m.count(b"#[test]\n#![test]\n"), 2);
    }

    #[test]
    fn deleting_a_test_file_is_flagged() {
        let policy = Policy::default();
        for path in [
            "tests/api.rs",
            "crates/x/tests/it.rs",
            "pkg/foo_test.go",
            "test_foo.py",
            "src/a.test.ts",
            "web/__tests__/b.js",
            "spec/models/user_spec.rb",
            "Tests/Unit.cs",
        ] {
            let out = run(&policy, FileDiff::deleted(path, b"x"));
            assert_eq!(out.len(), 1, "{path}");
            assert_eq!(out[0].rule, RuleId::DeletedTest);
            assert!(out[0].message.contains("may not be deleted"));
        }
        assert!(run(&policy, FileDiff::deleted("src/testing.rs", b"x")).is_empty());
        assert!(run(&policy, FileDiff::deleted("src/contest.rs", b"x")).is_empty());
        assert!(run(&policy, FileDiff::added("tests/new.rs", b"x")).is_empty());
    }

    #[test]
    fn removed_assertions_are_counted() {
        let policy = Policy::default();
        let before = b"#[test]\nfn a() {\n    assert!(x);\n    assert_eq!(y, 1);\n}\n";
        let weaker = b"#[test]\nfn a() {\n    // assert!(x);\n}\n";
        let out = run(&policy, FileDiff::modified("tests/a.rs", before, weaker));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, RuleId::RemovedAssertion);
        assert_eq!(
            out[0].message,
            "`tests/a.rs`: 2 assertion-like lines removed (3 before, 1 after); tests may be \
             extended but not weakened"
        );
        let stronger = b"#[test]\nfn a() {\n    assert!(x);\n    assert_eq!(y, 2);\n    assert!(z);\n}\n";
        assert!(run(&policy, FileDiff::modified("tests/a.rs", before, stronger)).is_empty());
        // Not a test path: no check.
        assert!(run(&policy, FileDiff::modified("src/a.rs", before, weaker)).is_empty());
    }

    #[test]
    fn configured_test_paths_add_to_defaults_and_allow_switch() {
        let cfg = PolicyConfig { test_paths: Some(vec!["checks/**".into()]), ..PolicyConfig::default() };
        let policy = Policy::from_config(&cfg).unwrap();
        assert_eq!(run(&policy, FileDiff::deleted("checks/smoke.sh", b"x")).len(), 1);
        assert_eq!(run(&policy, FileDiff::deleted("tests/a.rs", b"x")).len(), 1);
        let cfg = PolicyConfig { allow_test_deletion: Some(true), ..PolicyConfig::default() };
        let policy = Policy::from_config(&cfg).unwrap();
        assert!(run(&policy, FileDiff::deleted("tests/a.rs", b"x")).is_empty());
        let out = run(&policy, FileDiff::modified("tests/a.rs", b"assert!(a);\n", b"\n"));
        assert!(out.is_empty());
    }
}
