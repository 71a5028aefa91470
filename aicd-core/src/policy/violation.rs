//! Violations, their rule identifiers, and the blocked-change error.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies the rule that produced a [`Violation`].
///
/// The snake_case names from [`RuleId::as_str`] (identical to the serde form) are stable: they
/// are stored in job events. Declaration order is the order used to sort violations of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RuleId {
    /// The path is absolute, escapes the repository, is malformed, or points into `.git`.
    UnsafePath,
    /// The path matches a protected glob.
    ProtectedPath,
    /// An added line looks like it contains a secret.
    Secret,
    /// A written file holds binary or non-UTF-8 content.
    BinaryContent,
    /// A test file is deleted.
    DeletedTest,
    /// A test file has fewer assertion-like lines than before.
    RemovedAssertion,
    /// Test code gains a skip marker (`#[ignore]`, `it.skip`, `t.Skip(`, ...) or an assertion
    /// that always holds (`assert!(true)`, `assert_eq!(1, 1)`, ...).
    WeakenedTest,
    /// The change touches more files than allowed.
    TooManyFiles,
    /// The change writes or deletes more bytes than allowed.
    TooManyBytes,
}

impl RuleId {
    /// Every rule, in declaration order.
    pub const ALL: &'static [RuleId] = &[
        RuleId::UnsafePath,
        RuleId::ProtectedPath,
        RuleId::Secret,
        RuleId::BinaryContent,
        RuleId::DeletedTest,
        RuleId::RemovedAssertion,
        RuleId::WeakenedTest,
        RuleId::TooManyFiles,
        RuleId::TooManyBytes,
    ];

    /// The stable snake_case name, e.g. `"protected_path"`; same as the serde representation.
    pub const fn as_str(self) -> &'static str {
        match self {
            RuleId::UnsafePath => "unsafe_path",
            RuleId::ProtectedPath => "protected_path",
            RuleId::Secret => "secret",
            RuleId::BinaryContent => "binary_content",
            RuleId::DeletedTest => "deleted_test",
            RuleId::RemovedAssertion => "removed_assertion",
            RuleId::WeakenedTest => "weakened_test",
            RuleId::TooManyFiles => "too_many_files",
            RuleId::TooManyBytes => "too_many_bytes",
        }
    }
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One reason a change may not be pushed.
///
/// `message` is a self-contained sentence for the person who triggered the job (and for the coding
/// agent as feedback); it names the path and line when relevant and never contains a detected
/// secret's value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Violation {
    /// The rule that fired.
    pub rule: RuleId,
    /// The offending path, or `None` for changeset-wide rules (size limits).
    pub path: Option<String>,
    /// 1-based line in the file's new contents, when the rule points at one line.
    pub line: Option<u32>,
    /// Human-readable explanation.
    pub message: String,
}

impl Violation {
    /// Creates a violation; used by the rules, and by callers that need to fabricate one in tests.
    pub fn new(rule: RuleId, path: Option<&str>, line: Option<u32>, message: String) -> Self {
        Self { rule, path: path.map(str::to_owned), line, message }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.message, self.rule)
    }
}

/// The error returned by [`check`](super::check): a non-empty list of violations whose `Display`
/// is a readable multi-line summary (at most [`PolicyBlocked::MAX_LISTED`] items are listed).
/// Serializes as the plain list of violations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PolicyBlocked {
    violations: Vec<Violation>,
}

impl PolicyBlocked {
    /// How many violations the `Display` summary lists before "... and N more".
    pub const MAX_LISTED: usize = 50;

    /// Wraps violations (normally the non-empty output of [`evaluate`](super::evaluate)).
    pub fn new(violations: Vec<Violation>) -> Self {
        Self { violations }
    }

    /// The violations, in evaluation order.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Takes the violations out.
    pub fn into_violations(self) -> Vec<Violation> {
        self.violations
    }
}

impl fmt::Display for PolicyBlocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.violations.len();
        let noun = if n == 1 { "violation" } else { "violations" };
        write!(f, "change blocked by policy ({n} {noun}):")?;
        for v in self.violations.iter().take(Self::MAX_LISTED) {
            write!(f, "\n- {v}")?;
        }
        if n > Self::MAX_LISTED {
            write!(f, "\n- ... and {} more", n - Self::MAX_LISTED)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyBlocked {}

/// Renders a path for a message: control characters escaped, backticks replaced, long paths cut.
pub(super) fn show_path(path: &str) -> String {
    const MAX_CHARS: usize = 200;
    let mut out = String::new();
    for (i, c) in path.chars().enumerate() {
        if i == MAX_CHARS {
            out.push('…');
            break;
        }
        match c {
            '`' => out.push('\''),
            c if c.is_control() => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_match_serde() {
        for rule in RuleId::ALL {
            let json = serde_json::to_string(rule).unwrap();
            assert_eq!(json, format!("\"{}\"", rule.as_str()));
            assert_eq!(serde_json::from_str::<RuleId>(&json).unwrap(), *rule);
            assert_eq!(rule.to_string(), rule.as_str());
        }
        let names: Vec<&str> = RuleId::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            names,
            [
                "unsafe_path",
                "protected_path",
                "secret",
                "binary_content",
                "deleted_test",
                "removed_assertion",
                "weakened_test",
                "too_many_files",
                "too_many_bytes"
            ]
        );
    }

    #[test]
    fn violation_json_round_trip() {
        let v = Violation::new(RuleId::Secret, Some("a.rs"), Some(3), "msg".into());
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"{"rule":"secret","path":"a.rs","line":3,"message":"msg"}"#);
        assert_eq!(serde_json::from_str::<Violation>(&json).unwrap(), v);
    }

    #[test]
    fn blocked_summary_is_multiline_and_capped() {
        let one = PolicyBlocked::new(vec![Violation::new(RuleId::TooManyFiles, None, None, "too many".into())]);
        assert_eq!(one.to_string(), "change blocked by policy (1 violation):\n- too many [too_many_files]");
        let many: Vec<Violation> =
            (0..60).map(|i| Violation::new(RuleId::Secret, Some("f"), Some(i), format!("m{i}"))).collect();
        let text = PolicyBlocked::new(many).to_string();
        assert_eq!(text.lines().count(), 1 + PolicyBlocked::MAX_LISTED + 1);
        assert!(text.ends_with("- ... and 10 more"));
    }

    #[test]
    fn show_path_escapes_controls_and_truncates() {
        assert_eq!(show_path("a\u{0}b`c"), "a\\u{0}b'c");
        let long = "x".repeat(500);
        assert_eq!(show_path(&long).chars().count(), 201);
    }
}
