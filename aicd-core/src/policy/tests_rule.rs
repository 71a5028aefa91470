//! Test-protection rules: `deleted_test`, `removed_assertion` and `weakened_test`.
//!
//! Test code is a file matching the test-path globs, or a Rust file with an inline
//! `#[cfg(test)]` module: there, the lines from its first `#[cfg(test)]` on (where such modules
//! conventionally sit) are the test code.

use regex::bytes::Regex;

use super::lines::{added_flags, line_number, split_lines};
use super::violation::{RuleId, Violation, show_path};
use super::{FileDiff, Policy};

/// Lines that assert or declare a test, across common languages and frameworks.
const ASSERTION_PATTERN: &str = concat!(
    r"(?i:\bassert)|XCTAssert|\bexpect\(|\bEXPECT_|\.should\b|\bshould\(",
    r"|#!?\[(?:[A-Za-z_][A-Za-z0-9_]*::)*test\b|@Test\b|\bit\(|\btest\(",
    r"|\bdef test_|\bfn test_|\bfunc Test|\bt\.(?:Error|Errorf|Fatal|Fatalf|Fail|FailNow)\b",
    r"|\brequire\.[A-Z]",
);

/// Markers that skip a test: Rust, Python, JavaScript/TypeScript, Go, Java/Kotlin.
const SKIP_PATTERN: &str = concat!(
    r"#\[\s*ignore\b",
    r"|@pytest\.mark\.skip(?:if)?\b|@unittest\.skip",
    r"|\b(?:it|describe|test)\.skip\b|\bx(?:it|describe|test)\s*\(",
    r"|\bt\.Skip(?:Now|f)?\s*\(",
    r"|@Disabled\b|@Ignore\b",
);

/// Assertions of a constant that always holds.
const ALWAYS_TRUE_PATTERN: &str = concat!(
    r"\b(?:debug_)?assert!\s*\(\s*true\s*[,)]",
    r"|\bassert\s*\(?\s*True\s*\)?\s*(?:$|[,;#])",
    r"|\bassert(?:True)?\s*\(\s*(?:true|True)\s*[,)]",
    r"|\bassertFalse\s*\(\s*(?:false|False)\s*[,)]",
    r"|\bexpect\(\s*(?:true|1)\s*\)\s*\.\s*toBeTruthy\(",
);

/// A literal: boolean, number or string without escapes.
const LITERAL: &str = r#"(true|false|True|False|-?\d+(?:\.\d+)?|"[^"\\]*"|'[^'\\]*')"#;

/// Assertions comparing two literals (groups 1 and 2); a tautology when both are the same.
const EQUAL_LITERALS_TEMPLATES: &[&str] = &[
    r"\b(?:debug_)?assert_eq!\s*\(\s*L\s*,\s*L\s*[,)]",
    r"\bassert(?:Equals?|_equal|Same)\s*\(\s*L\s*,\s*L\s*[,)]",
    r"\bexpect\(\s*L\s*\)\s*\.\s*to(?:Be|Equal|StrictEqual)\(\s*L\s*\)",
    r"\bassert\s+L\s*==\s*L\s*(?:$|[,;#])",
    r"\b(?:assert|require)\.Equal\(\s*t\s*,\s*L\s*,\s*L\s*[,)]",
];

/// Recognizes assertion-like lines, skip markers and tautological assertions, ignoring comment
/// lines (so commenting an assertion out counts as removing it, and a commented-out marker
/// skips nothing).
#[derive(Debug, Clone)]
pub(super) struct AssertionMatcher {
    regex: Option<Regex>,
    skip: Option<Regex>,
    always_true: Option<Regex>,
    equal_literals: Vec<Regex>,
    inline_tests: Option<Regex>,
}

/// How a test-code line weakens the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Weakening {
    Skip,
    Tautology,
}

impl AssertionMatcher {
    /// Compiles the built-in patterns (constants covered by tests; if one ever failed to
    /// compile, its check would be skipped rather than panic).
    pub(super) fn new() -> Self {
        Self {
            regex: Regex::new(ASSERTION_PATTERN).ok(),
            skip: Regex::new(SKIP_PATTERN).ok(),
            always_true: Regex::new(ALWAYS_TRUE_PATTERN).ok(),
            equal_literals: EQUAL_LITERALS_TEMPLATES
                .iter()
                .filter_map(|template| Regex::new(&template.replace('L', LITERAL)).ok())
                .collect(),
            inline_tests: Regex::new(r"^\s*#\[\s*cfg\s*\(\s*test\s*\)\s*\]").ok(),
        }
    }

    fn count(&self, lines: &[&[u8]]) -> usize {
        let Some(regex) = &self.regex else { return 0 };
        lines.iter().filter(|line| !is_comment(line) && regex.is_match(line)).count()
    }

    /// The index of the first `#[cfg(test)]` line, if any.
    fn inline_tests_start(&self, lines: &[&[u8]]) -> Option<usize> {
        let regex = self.inline_tests.as_ref()?;
        lines.iter().position(|line| regex.is_match(line))
    }

    fn weakening(&self, line: &[u8]) -> Option<Weakening> {
        if is_comment(line) {
            return None;
        }
        if self.skip.as_ref().is_some_and(|r| r.is_match(line)) {
            return Some(Weakening::Skip);
        }
        let always_true = self.always_true.as_ref().is_some_and(|r| r.is_match(line));
        let equal_literals = || {
            self.equal_literals.iter().any(|regex| {
                regex.captures_iter(line).any(|c| c.get(1).map(|m| m.as_bytes()) == c.get(2).map(|m| m.as_bytes()))
            })
        };
        (always_true || equal_literals()).then_some(Weakening::Tautology)
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

/// Which lines of a file are test code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// A test file: every line.
    File,
    /// A Rust file with inline test modules: the lines from the first `#[cfg(test)]` on.
    InlineModules,
}

impl Scope {
    /// Where the test code of `lines` starts.
    fn start(self, matcher: &AssertionMatcher, lines: &[&[u8]]) -> usize {
        match self {
            Scope::File => 0,
            Scope::InlineModules => matcher.inline_tests_start(lines).unwrap_or(lines.len()),
        }
    }
}

/// Whether `diff` is test code: a test path, or a Rust file that has (or had) an inline
/// `#[cfg(test)]` module.
fn scope(diff: &FileDiff<'_>, policy: &Policy) -> Option<Scope> {
    if policy.test_paths.is_match(diff.path) {
        return Some(Scope::File);
    }
    let rust = diff.path.rsplit('/').next().is_some_and(|name| name.ends_with(".rs"));
    let inline =
        |side: Option<&[u8]>| side.is_some_and(|t| policy.assertions.inline_tests_start(&split_lines(t)).is_some());
    (rust && (inline(diff.before) || inline(diff.after))).then_some(Scope::InlineModules)
}

/// Flags deleted test files, test code that loses assertion-like lines, and added lines of test
/// code that skip a test or assert a tautology, unless `allow_test_deletion` is set.
pub(super) fn check(diff: &FileDiff<'_>, policy: &Policy, out: &mut Vec<Violation>) {
    if policy.allow_test_deletion {
        return;
    }
    let Some(scope) = scope(diff, policy) else { return };
    let path = show_path(diff.path);
    let Some(after) = diff.after else {
        if diff.before.is_some() {
            let what = match scope {
                Scope::File => "is a test file",
                Scope::InlineModules => "holds tests (`#[cfg(test)]`)",
            };
            out.push(Violation::new(
                RuleId::DeletedTest,
                Some(diff.path),
                None,
                format!("`{path}` {what} and may not be deleted; fix the code, not the tests"),
            ));
        }
        return;
    };
    let matcher = &policy.assertions;
    let after_lines = split_lines(after);
    let after_start = scope.start(matcher, &after_lines);
    if let Some(before) = diff.before {
        let before_lines = split_lines(before);
        let was = matcher.count(&before_lines[scope.start(matcher, &before_lines)..]);
        let now = matcher.count(&after_lines[after_start..]);
        if now < was {
            let removed = was - now;
            let noun = if removed == 1 { "line" } else { "lines" };
            out.push(Violation::new(
                RuleId::RemovedAssertion,
                Some(diff.path),
                None,
                format!(
                    "`{path}`: {removed} assertion-like {noun} removed ({was} before, {now} after); tests may \
                     be extended but not weakened"
                ),
            ));
        }
    }
    let added = added_flags(diff.before, &after_lines);
    for (index, line) in after_lines.iter().enumerate().skip(after_start) {
        if !added[index] {
            continue;
        }
        let what = match matcher.weakening(line) {
            Some(Weakening::Skip) => "adds a marker that skips a test",
            Some(Weakening::Tautology) => "adds an assertion that always holds",
            None => continue,
        };
        out.push(Violation::new(
            RuleId::WeakenedTest,
            Some(diff.path),
            Some(line_number(index)),
            format!("`{path}` line {}: {what}; tests may be extended but not weakened", line_number(index)),
        ));
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
        assert!(m.regex.is_some() && m.skip.is_some() && m.always_true.is_some() && m.inline_tests.is_some());
        assert_eq!(m.equal_literals.len(), EQUAL_LITERALS_TEMPLATES.len());
        let text = b"#[test]\nfn test_a() {\n    assert_eq!(1, 1);\n}\n#[tokio::test]\n\
            expect(x).toBe(1);\nit('works', () => {});\nx.should.equal(1)\ndef test_b():\n\
            self.assertEqual(a, b)\nfunc TestX(t *testing.T) {\nt.Fatalf(\"x\")\n\
            require.Equal(t, 1, 2)\nEXPECT_EQ(a, b);\nXCTAssertTrue(x)\n@Test\n\
            let x = 1;\n";
        assert_eq!(m.count(&split_lines(text)), 15);
    }

    #[test]
    fn comments_do_not_count() {
        let m = AssertionMatcher::new();
        assert_eq!(m.count(&split_lines(b"// assert!(x);\n# assert x\n  * expect(a)\n-- assert\n")), 0);
        assert_eq!(m.count(&split_lines(b"#[test]\n#![test]\n")), 2);
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

    /// The weakened-test violations of `diff` under the default policy, as (line, message).
    fn weakened(diff: FileDiff<'_>) -> Vec<(Option<u32>, String)> {
        run(&Policy::default(), diff)
            .into_iter()
            .filter(|v| v.rule == RuleId::WeakenedTest)
            .map(|v| (v.line, v.message))
            .collect()
    }

    #[test]
    fn added_skip_markers_are_weakening_in_every_language() {
        for (path, before, after) in [
            ("tests/api.rs", "#[test]\nfn a() { assert!(x); }\n", "#[test]\n#[ignore]\nfn a() { assert!(x); }\n"),
            (
                "tests/api.rs",
                "#[test]\nfn a() { assert!(x); }\n",
                "#[test]\n#[ignore = \"slow\"]\nfn a() { assert!(x); }\n",
            ),
            ("test_api.py", "def test_a():\n    assert x\n", "@pytest.mark.skip\ndef test_a():\n    assert x\n"),
            (
                "test_api.py",
                "def test_a():\n    assert x\n",
                "@pytest.mark.skip(reason=\"flaky\")\ndef test_a():\n    assert x\n",
            ),
            (
                "test_api.py",
                "def test_a():\n    assert x\n",
                "@pytest.mark.skipif(sys.platform == \"win32\")\ndef test_a():\n    assert x\n",
            ),
            (
                "tests/test_api.py",
                "    def test_a(self):\n        self.assertEqual(a, b)\n",
                "    @unittest.skip(\"later\")\n    def test_a(self):\n        self.assertEqual(a, b)\n",
            ),
            (
                "src/a.test.ts",
                "it('works', () => { expect(a).toBe(1); });\n",
                "it.skip('works', () => { expect(a).toBe(1); });\n",
            ),
            ("src/a.spec.js", "describe('a', () => {});\n", "describe.skip('a', () => {});\n"),
            (
                "src/a.test.js",
                "test('a', () => { expect(a).toBe(1); });\n",
                "test.skip('a', () => { expect(a).toBe(1); });\n",
            ),
            (
                "web/__tests__/b.js",
                "it('a', () => { expect(a).toBe(1); });\n",
                "xit('a', () => { expect(a).toBe(1); });\n",
            ),
            ("web/__tests__/b.js", "describe('a', () => {});\n", "xdescribe('a', () => {});\n"),
            (
                "pkg/foo_test.go",
                "func TestA(t *testing.T) {\n\tt.Fatal(\"x\")\n}\n",
                "func TestA(t *testing.T) {\n\tt.Skip(\"later\")\n\tt.Fatal(\"x\")\n}\n",
            ),
            (
                "pkg/foo_test.go",
                "func TestA(t *testing.T) {\n\tt.Fatal(\"x\")\n}\n",
                "func TestA(t *testing.T) {\n\tt.SkipNow()\n\tt.Fatal(\"x\")\n}\n",
            ),
            (
                "src/test/java/AppTest.java",
                "    @Test\n    void a() { assertEquals(a, b); }\n",
                "    @Disabled\n    @Test\n    void a() { assertEquals(a, b); }\n",
            ),
            (
                "src/test/kotlin/AppTest.kt",
                "    @Test\n    fun a() { assertEquals(a, b) }\n",
                "    @Ignore\n    @Test\n    fun a() { assertEquals(a, b) }\n",
            ),
        ] {
            let found = weakened(FileDiff::modified(path, before.as_bytes(), after.as_bytes()));
            assert_eq!(found.len(), 1, "{path}: {after:?} gave {found:?}");
            assert!(found[0].1.contains("skips a test"), "{path}: {}", found[0].1);
            assert!(found[0].1.contains("tests may be extended but not weakened"));
        }
    }

    #[test]
    fn only_added_uncommented_markers_count() {
        // A marker already there is not added; neither is one that moved.
        let before = b"#[test]\n#[ignore]\nfn a() {}\n#[test]\nfn b() { assert!(x); }\n";
        let after = b"#[test]\nfn b() { assert!(x); }\n#[test]\n#[ignore]\nfn a() {}\n";
        assert!(weakened(FileDiff::modified("tests/a.rs", before, after)).is_empty());
        // Commented-out markers skip nothing.
        let after = b"#[test]\n// #[ignore]\nfn b() { assert!(x); }\n# @pytest.mark.skip\n";
        assert!(weakened(FileDiff::modified("tests/a.rs", b"#[test]\nfn b() { assert!(x); }\n", after)).is_empty());
        // The violation points at the added line.
        let found =
            weakened(FileDiff::modified("tests/a.rs", b"#[test]\nfn b() {}\n", b"#[test]\n#[ignore]\nfn b() {}\n"));
        assert_eq!(found.iter().map(|(line, _)| *line).collect::<Vec<_>>(), [Some(2)]);
        assert!(found[0].1.starts_with("`tests/a.rs` line 2: adds a marker that skips a test"), "{}", found[0].1);
    }

    #[test]
    fn assertions_replaced_by_tautologies_are_weakening() {
        for (path, before, after) in [
            ("tests/a.rs", "    assert!(total > 0);\n", "    assert!(true);\n"),
            ("tests/a.rs", "    assert!(total > 0, \"positive\");\n", "    assert!( true, \"positive\");\n"),
            ("tests/a.rs", "    assert_eq!(total, 3);\n", "    assert_eq!(1, 1);\n"),
            ("tests/a.rs", "    assert_eq!(name, \"ok\");\n", "    assert_eq!(\"ok\", \"ok\");\n"),
            ("tests/a.rs", "    assert_eq!(flag, true);\n", "    assert_eq!(true, true, \"always\");\n"),
            ("test_a.py", "    assert total == 3\n", "    assert True\n"),
            ("test_a.py", "    assert total == 3\n", "    assert 3 == 3\n"),
            ("tests/test_a.py", "        self.assertEqual(total, 3)\n", "        self.assertEqual(3, 3)\n"),
            ("tests/test_a.py", "        self.assertTrue(ok)\n", "        self.assertTrue(True)\n"),
            ("src/a.test.ts", "  expect(total).toBe(3);\n", "  expect(true).toBe(true);\n"),
            ("src/a.test.ts", "  expect(total).toEqual(3);\n", "  expect(3).toEqual(3);\n"),
            ("src/test/java/AppTest.java", "        assertTrue(app.ok());\n", "        assertTrue(true);\n"),
            ("src/test/java/AppTest.java", "        assertEquals(3, app.total());\n", "        assertEquals(3, 3);\n"),
            ("pkg/foo_test.go", "\tassert.Equal(t, 3, total)\n", "\tassert.Equal(t, 3, 3)\n"),
        ] {
            let found = weakened(FileDiff::modified(path, before.as_bytes(), after.as_bytes()));
            assert_eq!(found.len(), 1, "{path}: {after:?} gave {found:?}");
            assert!(found[0].1.contains("adds an assertion that always holds"), "{path}: {}", found[0].1);
        }
    }

    #[test]
    fn real_assertions_and_ordinary_code_are_not_weakening() {
        for (path, after) in [
            (
                "tests/a.rs",
                "    assert_eq!(1, total);\n    assert_eq!(1, 2);\n    assert!(truth);\n    assert!(x == true);\n",
            ),
            ("tests/a.rs", "    let ignored = skip(items);\n    exit(0);\n    assert_eq!(\"a\", \"b\");\n"),
            ("test_a.py", "    assert True_value\n    assert x == 3\n    self.assertTrue(x is True)\n"),
            (
                "src/a.test.ts",
                "  expect(a).toBe(true);\n  expect(true).toBe(false);\n  it('skips nothing', () => {});\n",
            ),
            ("pkg/foo_test.go", "\tt.Skipped()\n\tassert.Equal(t, 3, total)\n"),
            ("src/test/java/AppTest.java", "    @IgnoreExtraProperties\n    @Test\n"),
        ] {
            let found = weakened(FileDiff::modified(path, b"", after.as_bytes()));
            assert!(found.is_empty(), "{path}: {after:?} gave {found:?}");
        }
        // Outside test code the markers mean nothing.
        for (path, after) in [
            ("src/player.js", "function xit(a) {}\nxit(1);\nit.skip = true;\n"),
            ("src/lib.rs", "#[ignore]\nfn helper() { assert!(true); }\n"),
            ("app/main.py", "@pytest.mark.skip\nassert True\n"),
            ("src/actions.rs", "fn skip() { assert_eq!(1, 1); }\n"),
        ] {
            assert!(run(&Policy::default(), FileDiff::modified(path, b"", after.as_bytes())).is_empty(), "{path}");
        }
    }

    #[test]
    fn inline_rust_test_modules_are_test_code() {
        let before =
            b"pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n\
            #[test]\n    fn adds() {\n        assert_eq!(add(1, 2), 3);\n        assert_eq!(add(0, 0), 0);\n    }\n}\n";
        // Removing an assertion from the inline module is weakening, as under `tests/`.
        let weaker =
            b"pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\n#[cfg(test)]\nmod tests {\n    use super::*;\n\n\
            #[test]\n    fn adds() {\n        assert_eq!(add(1, 2), 3);\n    }\n}\n";
        let out = run(&Policy::default(), FileDiff::modified("src/foo.rs", before, weaker));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].rule, RuleId::RemovedAssertion);
        assert!(
            out[0].message.starts_with("`src/foo.rs`: 1 assertion-like line removed (3 before, 2 after)"),
            "{}",
            out[0].message
        );
        // So is dropping the whole module, ignoring a test in it, or making it a tautology.
        let dropped = b"pub fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n";
        let out = run(&Policy::default(), FileDiff::modified("src/foo.rs", before, dropped));
        assert_eq!(out.iter().map(|v| v.rule).collect::<Vec<_>>(), [RuleId::RemovedAssertion], "{out:?}");
        let ignored = String::from_utf8(before.to_vec()).unwrap().replace("#[test]\n", "#[test]\n    #[ignore]\n");
        let found = weakened(FileDiff::modified("src/foo.rs", before, ignored.as_bytes()));
        assert_eq!(found.iter().map(|(line, _)| *line).collect::<Vec<_>>(), [Some(10)], "{found:?}");
        let tautology = String::from_utf8(before.to_vec()).unwrap().replace("add(0, 0), 0", "0, 0");
        assert_eq!(weakened(FileDiff::modified("src/foo.rs", before, tautology.as_bytes())).len(), 1);
        // Assertions in the code above the module are not test code.
        let code_before = b"pub fn f(x: u8) {\n    assert!(x < 10);\n}\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() { assert!(true == true); }\n}\n";
        let code_after =
            b"pub fn f(x: u8) {\n}\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() { assert!(true == true); }\n}\n";
        assert!(run(&Policy::default(), FileDiff::modified("src/f.rs", code_before, code_after)).is_empty());
        // Deleting a file that holds tests is deleting tests; one without tests is not.
        let out = run(&Policy::default(), FileDiff::deleted("src/foo.rs", before));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, RuleId::DeletedTest);
        assert!(run(&Policy::default(), FileDiff::deleted("src/bar.rs", dropped)).is_empty());
        // A file without inline tests is ordinary code.
        let plain = b"pub fn f() {\n    assert!(ready());\n}\n";
        assert!(run(&Policy::default(), FileDiff::modified("src/bar.rs", plain, b"pub fn f() {}\n")).is_empty());
        // `#[cfg(test)]` means nothing outside Rust.
        assert!(run(&Policy::default(), FileDiff::deleted("notes/foo.md", before)).is_empty());
    }

    #[test]
    fn allow_test_deletion_also_allows_weakening() {
        let cfg = PolicyConfig { allow_test_deletion: Some(true), ..PolicyConfig::default() };
        let policy = Policy::from_config(&cfg).unwrap();
        assert!(run(&policy, FileDiff::modified("tests/a.rs", b"fn a() {}\n", b"#[ignore]\nfn a() {}\n")).is_empty());
    }
}
