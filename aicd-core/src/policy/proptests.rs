//! Property tests: `evaluate` never panics, unsafe paths are always flagged, secrets never leak.

use std::sync::LazyLock;

use proptest::prelude::*;

use super::{FileDiff, Policy, PolicyConfig, RuleId, evaluate};

/// Compiled once: building a policy per case would dominate the run time in debug builds.
static DEFAULT: LazyLock<Policy> = LazyLock::new(Policy::default);
static TIGHT: LazyLock<Policy> = LazyLock::new(|| {
    let cfg = PolicyConfig { max_files: Some(2), max_bytes: Some(700), ..PolicyConfig::default() };
    Policy::from_config(&cfg).unwrap_or_default()
});

fn bytes() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..600))
}

fn texty() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of("(assert|ghp_|token = |-----BEGIN |\r\n|\n|[a-zA-Z0-9 =\"'_]){0,80}")
        .prop_map(|s| s.map(String::into_bytes))
}

fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9._/\\\\:\\- ~\u{200C}\u{0}\n]{0,40}",
        "(\\.git|\\.github|tests|src|\\.\\.|\\.|CODEOWNERS|a\\.rs)(/(\\.git|workflows|tests|x_test\\.go|\\.\\.|\\.|)){0,4}",
    ]
}

/// A path that `unsafe_reason` would otherwise accept: 1-4 plain components.
fn plain_path() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9_.-]{0,8}", 1..4).prop_map(|parts| {
        parts
            .into_iter()
            .map(|p| if p.starts_with("..") || p == "." { format!("x{p}") } else { p })
            .collect::<Vec<_>>()
            .join("/")
    })
}

/// Turns a plain path into an unsafe one in one of the ways the rule promises to catch.
fn make_unsafe(path: &str, how: u8, c: char) -> String {
    match how % 10 {
        0 => format!("/{path}"),
        1 => format!("{path}/../x"),
        2 => format!("../{path}"),
        3 => format!("{path}/"),
        4 => path.replacen('/', "//", 1) + "//x",
        5 => format!("{path}\\x"),
        6 => format!("{path}{}", if c.is_control() { c } else { '\u{1}' }),
        7 => format!(".git/{path}"),
        8 => format!("C:/{path}"),
        _ => format!("{path}/./x"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn evaluate_never_panics(
        entries in prop::collection::vec((any_path(), prop_oneof![bytes(), texty()], prop_oneof![bytes(), texty()]), 0..6),
    ) {
        let diffs: Vec<FileDiff<'_>> = entries
            .iter()
            .map(|(p, b, a)| FileDiff { path: p, before: b.as_deref(), after: a.as_deref() })
            .collect();
        for policy in [&*DEFAULT, &*TIGHT] {
            let first = evaluate(&diffs, policy);
            prop_assert_eq!(&first, &evaluate(&diffs, policy));
            let mut sorted = first.clone();
            sorted.sort_by(|a, b| (&a.path, a.rule).cmp(&(&b.path, b.rule)));
            prop_assert_eq!(first, sorted);
        }
    }

    #[test]
    fn unsafe_paths_are_always_flagged(base in plain_path(), how in any::<u8>(), c in any::<char>(), content in bytes()) {
        let path = make_unsafe(&base, how, c);
        let diff = FileDiff { path: &path, before: None, after: content.as_deref() };
        let found = evaluate(&[diff], &DEFAULT);
        prop_assert!(
            found.iter().any(|v| v.rule == RuleId::UnsafePath && v.path.as_deref() == Some(path.as_str())),
            "{:?} not flagged: {:?}", path, found
        );
    }

    #[test]
    fn plain_paths_are_never_unsafe(path in plain_path()) {
        let diff = FileDiff::added(&path, b"text\n");
        prop_assert!(!evaluate(&[diff], &DEFAULT).iter().any(|v| v.rule == RuleId::UnsafePath));
    }

    #[test]
    fn secret_values_never_appear_in_messages(tail in "[A-Za-z0-9]{36}", prefix in "[a-z_ =:\"]{0,12}") {
        let token = format!("gh{}_{tail}", "p");
        let text = format!("{prefix} {token}\n");
        let found = evaluate(&[FileDiff::added("src/a.rs", text.as_bytes())], &DEFAULT);
        for v in &found {
            prop_assert!(!v.message.contains(&token));
            prop_assert!(!v.message.contains(&tail));
        }
        let lower = tail.to_ascii_lowercase();
        if !["xxxx", "example", "placeholder", "dummy", "redacted", "changeme"].iter().any(|p| lower.contains(p)) {
            prop_assert!(found.iter().any(|v| v.rule == RuleId::Secret));
        }
    }
}
