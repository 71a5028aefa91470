//! Policy engine: the safety layer that checks an agent's changeset before anything is pushed.
//!
//! [`evaluate`] is a pure function from a list of [`FileDiff`]s and a compiled [`Policy`] to a
//! sorted list of [`Violation`]s. It does no I/O, never panics on any input (arbitrary paths and
//! bytes included), and runs in time roughly linear in the size of the changeset.
//!
//! Rule families (see [`RuleId`]):
//! - `unsafe_path`: absolute paths, `..`/`.`/empty components, backslashes, control characters,
//!   and anything inside a `.git` directory. Always on; cannot be configured away.
//! - `protected_path`: globs such as `.github/workflows/**` (the defaults cover every CI entry
//!   point, `.gitattributes` and `.gitmodules`); defaults plus org and repo additions.
//! - `secret`: gitleaks-style detectors run on *added* lines only; values are always redacted.
//! - `too_many_files` / `too_many_bytes`: changeset size limits.
//! - `binary_content`: written files that contain NUL bytes or are not valid UTF-8.
//! - `deleted_test` / `removed_assertion` / `weakened_test`: deleting test files, lowering the
//!   number of assertion-like lines in test code, or adding lines to it that skip a test or
//!   assert a tautology. Test code is a test path, or the inline `#[cfg(test)]` modules of a
//!   Rust file.
//!
//! Configuration comes from [`PolicyConfig`] (the `[policy]` table of `.aicd.toml`, merged over
//! the org defaults with [`PolicyConfig::merge`]) and is compiled with [`Policy::from_config`].

mod binary;
mod compiled;
mod config;
mod error;
mod glob;
mod lines;
mod paths;
#[cfg(test)]
mod proptests;
mod secret_rules;
mod secrets;
mod size;
mod tests_rule;
mod violation;

pub use compiled::{DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, DEFAULT_PROTECTED_PATHS, DEFAULT_TEST_PATHS, Policy};
pub use config::PolicyConfig;
pub use error::PolicyError;
pub use violation::{PolicyBlocked, RuleId, Violation};

/// One file of a changeset, as the engine sees it: a repository-relative path plus the file's
/// contents at the base commit (`before`) and after the agent's change (`after`).
///
/// `before == None` means the file is added, `after == None` means it is deleted, and both
/// present means it is modified. An entry with neither side (or identical sides) is a no-op: the
/// path rules still apply to it, but it does not count towards the size limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDiff<'a> {
    /// Repository-relative path with `/` separators, exactly as it would be written to git.
    pub path: &'a str,
    /// Contents at the base commit; `None` if the file did not exist there.
    pub before: Option<&'a [u8]>,
    /// Contents after the change; `None` if the change deletes the file.
    pub after: Option<&'a [u8]>,
}

impl<'a> FileDiff<'a> {
    /// A file that the change creates with contents `after`.
    pub const fn added(path: &'a str, after: &'a [u8]) -> Self {
        Self { path, before: None, after: Some(after) }
    }

    /// A file that existed with contents `before` and now has contents `after`.
    pub const fn modified(path: &'a str, before: &'a [u8], after: &'a [u8]) -> Self {
        Self { path, before: Some(before), after: Some(after) }
    }

    /// A file with contents `before` that the change deletes.
    pub const fn deleted(path: &'a str, before: &'a [u8]) -> Self {
        Self { path, before: Some(before), after: None }
    }

    /// True if the entry changes nothing (no sides, or identical contents on both sides).
    fn is_noop(&self) -> bool {
        self.before == self.after
    }
}

/// Checks a changeset against a policy and returns every violation found.
///
/// The result is deterministic: sorted by path (changeset-wide violations, which have no path,
/// come first), then by rule in [`RuleId`] declaration order, then by line and message, with exact
/// duplicates removed. An empty vector means the change may be pushed.
pub fn evaluate(diffs: &[FileDiff<'_>], policy: &Policy) -> Vec<Violation> {
    let mut out = Vec::new();
    for diff in diffs {
        paths::check(diff, policy, &mut out);
        binary::check(diff, policy, &mut out);
        secrets::check(diff, policy, &mut out);
        tests_rule::check(diff, policy, &mut out);
    }
    size::check(diffs, policy, &mut out);
    out.sort_by(|a, b| (&a.path, a.rule, a.line, &a.message).cmp(&(&b.path, b.rule, b.line, &b.message)));
    out.dedup();
    out
}

/// Like [`evaluate`], but as a `Result`: `Ok(())` if the change is allowed, otherwise a
/// [`PolicyBlocked`] error carrying all violations with a readable summary as its `Display`.
pub fn check(diffs: &[FileDiff<'_>], policy: &Policy) -> Result<(), PolicyBlocked> {
    let violations = evaluate(diffs, policy);
    if violations.is_empty() { Ok(()) } else { Err(PolicyBlocked::new(violations)) }
}

/// The `secret` rule over the texts a change publishes besides its files — `(label, text)`
/// pairs such as the commit message and the pull request's title and body — under `policy`'s
/// detectors (built-in and configured). Every line counts (these texts have no base to compare
/// with) and no path allowlist applies. Sorted like [`evaluate`]'s result; empty if clean.
pub fn evaluate_texts(texts: &[(&str, &str)], policy: &Policy) -> Vec<Violation> {
    let mut out = Vec::new();
    for (label, text) in texts {
        secrets::check_text(label, text, policy, &mut out);
    }
    out.sort_by(|a, b| (&a.path, a.rule, a.line, &a.message).cmp(&(&b.path, b.rule, b.line, &b.message)));
    out.dedup();
    out
}

/// Checks a changeset on its own, without the repository it applies to, against `config`
/// compiled over the built-in defaults: every write counts as an added file and every delete as
/// the deletion of a file whose contents are unknown (so the rules on deleted tests still apply
/// to its path). For scripts that vet changes before submitting them; the orchestrator checks
/// against the base commit. [`PolicyError`] if `config` does not compile.
pub fn check_changeset(
    changeset: &aicd_agent_api::Changeset,
    config: &PolicyConfig,
) -> Result<Vec<Violation>, PolicyError> {
    let policy = Policy::from_config(config)?;
    let diffs: Vec<FileDiff<'_>> = changeset
        .changes
        .iter()
        .map(|change| match change.content() {
            Some(after) => FileDiff::added(&change.path, after),
            None => FileDiff::deleted(&change.path, b""),
        })
        .collect();
    Ok(evaluate(&diffs, &policy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_split_across_two_string_literals_is_found() {
        let policy = Policy::default();
        let (head, tail) = ("ghp_Zq8rT2mW5xY7bN4k", "L1vC9dF3gH6jP0sA2eR5");
        let secrets = |text: &str| -> Vec<(u32, String)> {
            evaluate(&[FileDiff::added("src/client.py", text.as_bytes())], &policy)
                .into_iter()
                .filter(|v| v.rule == RuleId::Secret)
                .map(|v| (v.line.unwrap_or(0), v.message))
                .collect()
        };
        for split in [
            format!("token = (\"{head}\"\n         \"{tail}\")\n"),
            format!("const token = '{head}' +\n  '{tail}';\n"),
            format!("$token = \"{head}\" .\n    \"{tail}\";\n"),
        ] {
            let found = secrets(&split);
            let joined = "lines 1-2: possible GitHub token split across two lines";
            assert!(found.iter().any(|(line, m)| *line == 1 && m.contains(joined)), "{split}: {found:?}");
            assert!(found.iter().all(|(_, m)| !m.contains(tail)), "redacted: {found:?}");
        }
        // Adjacent literals that do not make a secret, and list items, are left alone.
        assert!(secrets("names = [\n  \"ghp_\",\n  \"Zq8rT2mW5xY7bN4kL1vC9dF3gH6jP0sA2eR5\",\n]\n").len() <= 1);
        assert!(secrets("greeting = \"Hello, \" +\n    \"world\"\n").is_empty());
    }

    #[test]
    fn texts_are_scanned_line_by_line_without_path_allowlists() {
        let key = format!("AKIA{}", "QWERTYUIOPASDFGH");
        let everything = PolicyConfig { secret_allow: Some(vec!["**".into()]), ..PolicyConfig::default() };
        let policy = Policy::from_config(&everything).unwrap();
        let body = format!("## Plan\nUse the key\n{key}\n");
        let found = evaluate_texts(&[("commit message", "Add a.txt"), ("pull request body", &body)], &policy);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].rule, found[0].path.as_deref(), found[0].line), (RuleId::Secret, None, Some(3)));
        assert!(found[0].message.starts_with("the pull request body, line 3: possible AWS access key id"));
        assert!(!found[0].message.contains(&key), "redacted: {}", found[0].message);
        assert!(evaluate_texts(&[("commit message", "Add a.txt\n\nAI-CD job 1")], &policy).is_empty());
    }

    #[test]
    fn a_changeset_is_checked_on_its_own() {
        use aicd_agent_api::{Changeset, FileChange};
        let changeset = Changeset {
            summary: "ci".into(),
            changes: vec![
                FileChange::write(".github/workflows/ci.yml", "on: push\n"),
                FileChange::write("src/lib.rs", "pub fn ok() {}\n"),
                FileChange::delete("tests/api.rs"),
            ],
        };
        let violations = check_changeset(&changeset, &PolicyConfig::default()).unwrap();
        let rules: Vec<(Option<&str>, RuleId)> = violations.iter().map(|v| (v.path.as_deref(), v.rule)).collect();
        assert_eq!(
            rules,
            [(Some(".github/workflows/ci.yml"), RuleId::ProtectedPath), (Some("tests/api.rs"), RuleId::DeletedTest)]
        );
        let bad = PolicyConfig { secret_patterns: Some(vec!["(".into()]), ..PolicyConfig::default() };
        assert!(check_changeset(&changeset, &bad).is_err());
    }

    #[test]
    fn clean_change_passes() {
        let policy = Policy::default();
        let diffs = [
            FileDiff::modified("src/lib.rs", b"fn a() {}\n", b"fn a() {}\nfn b() {}\n"),
            FileDiff::added("README.md", b"# Title\n"),
        ];
        assert_eq!(evaluate(&diffs, &policy), vec![]);
        assert!(check(&diffs, &policy).is_ok());
    }

    #[test]
    fn output_is_sorted_by_path_then_rule() {
        let policy = Policy::from_config(&PolicyConfig { max_files: Some(1), ..PolicyConfig::default() }).unwrap();
        let diffs = [
            FileDiff::added("zz/../x", b"ok\n"),
            FileDiff::added(".git/config", b"\0"),
            FileDiff::deleted("tests/a.rs", b"#[test]\n"),
        ];
        let got = evaluate(&diffs, &policy);
        let keys: Vec<(Option<&str>, RuleId)> = got.iter().map(|v| (v.path.as_deref(), v.rule)).collect();
        assert_eq!(
            keys,
            vec![
                (None, RuleId::TooManyFiles),
                (Some(".git/config"), RuleId::UnsafePath),
                (Some(".git/config"), RuleId::ProtectedPath),
                (Some(".git/config"), RuleId::BinaryContent),
                (Some("tests/a.rs"), RuleId::DeletedTest),
                (Some("zz/../x"), RuleId::UnsafePath),
            ]
        );
        let err = check(&diffs, &policy).unwrap_err();
        assert_eq!(err.violations(), got.as_slice());
    }

    #[test]
    fn noop_entries_are_harmless() {
        let policy = Policy::default();
        let diffs =
            [FileDiff { path: "src/a.rs", before: None, after: None }, FileDiff::modified("src/b.rs", b"x\n", b"x\n")];
        assert!(evaluate(&diffs, &policy).is_empty());
    }
}
