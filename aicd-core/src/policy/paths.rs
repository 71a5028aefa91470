//! Path rules: `unsafe_path` (unconditional) and `protected_path` (globs).

use super::violation::{RuleId, Violation, show_path};
use super::{FileDiff, Policy};

/// Adds path violations for one entry. Applies to every entry, including deletions and no-ops.
pub(super) fn check(diff: &FileDiff<'_>, policy: &Policy, out: &mut Vec<Violation>) {
    let path = diff.path;
    if let Some(reason) = unsafe_reason(path) {
        out.push(Violation::new(
            RuleId::UnsafePath,
            Some(path),
            None,
            format!("`{}` is not a safe repository path: {reason}", show_path(path)),
        ));
    }
    if let Some(glob) = policy.protected.first_match(path) {
        out.push(Violation::new(
            RuleId::ProtectedPath,
            Some(path),
            None,
            format!(
                "`{}` is a protected path (matches `{}`); changes to it need a human",
                show_path(path),
                show_path(glob)
            ),
        ));
    }
}

/// Why `path` may not be written by a change, or `None` if it is a plain relative path.
///
/// Rejects: the empty path; control characters (NUL included); backslashes (Windows separators,
/// `C:\x`, `\\server`); absolute paths; drive prefixes (`C:`); empty components (`a//b`,
/// trailing `/`); `.` and `..` components; and any component that a filesystem may treat as
/// `.git` (case-insensitive, trailing dots/spaces, zero-width characters, the 8.3 name `git~1`),
/// mirroring git's own `verify_path`.
pub(super) fn unsafe_reason(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("the path is empty".into());
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Some(format!("it contains the control character U+{:04X}", u32::from(c)));
    }
    if path.contains('\\') {
        return Some("it contains a backslash (use `/` as the separator)".into());
    }
    if path.starts_with('/') {
        return Some("it is absolute".into());
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Some("it starts with a drive letter".into());
    }
    for component in path.split('/') {
        match component {
            "" => return Some("it has an empty component (`//` or a trailing `/`)".into()),
            "." => return Some("it has a `.` component".into()),
            ".." => return Some("it has a `..` component".into()),
            c if is_git_dir_name(c) => {
                return Some("it is inside a `.git` directory (git metadata)".into());
            }
            _ => {}
        }
    }
    None
}

/// True if a filesystem might resolve `component` to `.git`.
fn is_git_dir_name(component: &str) -> bool {
    let visible: String = component.chars().filter(|c| !is_ignorable(*c)).collect();
    let trimmed = visible.trim_end_matches(['.', ' ']);
    trimmed.eq_ignore_ascii_case(".git") || trimmed.eq_ignore_ascii_case("git~1")
}

/// Code points that HFS+ ignores in file names (zero-width and directional marks).
fn is_ignorable(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_rejected() {
        for path in [
            "",
            "/etc/passwd",
            "C:\\x",
            "C:/x",
            "c:x",
            "\\\\server\\share",
            "src\\main.rs",
            "../x",
            "a/../../x",
            "a/..",
            "./a",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\nb",
            "a\u{7f}",
            ".git/config",
            "sub/.git/hooks/pre-commit",
            ".GIT/hooks/x",
            ".git./x",
            ".git /x",
            "git~1/config",
            ".g\u{200C}it/config",
        ] {
            assert!(unsafe_reason(path).is_some(), "{path:?} should be unsafe");
        }
    }

    #[test]
    fn ordinary_paths_are_safe() {
        for path in [
            "src/main.rs",
            ".github/workflows/ci.yml",
            ".gitignore",
            ".gitmodules",
            "a/.github/x",
            "dir.git/x",
            "x..y",
            "...",
            "ünïcode/файл.txt",
            "a b/c d.txt",
        ] {
            assert_eq!(unsafe_reason(path), None, "{path:?} should be safe");
        }
    }

    #[test]
    fn protected_path_message_names_the_glob() {
        let mut out = Vec::new();
        let diff = FileDiff::modified(".github/workflows/ci.yml", b"a", b"b");
        check(&diff, &Policy::default(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule, RuleId::ProtectedPath);
        assert_eq!(
            out[0].message,
            "`.github/workflows/ci.yml` is a protected path (matches `.github/workflows/**`); \
             changes to it need a human"
        );
    }

    #[test]
    fn protected_applies_to_deletes_and_defaults_cover_codeowners_and_config() {
        let policy = Policy::default();
        for diff in [
            FileDiff::deleted("CODEOWNERS", b"* @team"),
            FileDiff::added("docs/CODEOWNERS", b"* @team"),
            FileDiff::added(".github/CODEOWNERS", b"* @team"),
            FileDiff::modified(".aicd.toml", b"", b"[policy]\n"),
            FileDiff::added(".github/workflows/nested/x.yml", b"on: push"),
        ] {
            let mut out = Vec::new();
            check(&diff, &policy, &mut out);
            assert!(out.iter().any(|v| v.rule == RuleId::ProtectedPath), "{}", diff.path);
        }
        let mut out = Vec::new();
        check(&FileDiff::added("src/CODEOWNERS.md", b""), &policy, &mut out);
        check(&FileDiff::added(".github/dependabot.yml", b""), &policy, &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn defaults_cover_every_ci_entry_point_and_git_attributes() {
        let policy = Policy::default();
        for (path, glob) in [
            (".github/workflows/ci.yml", ".github/workflows/**"),
            (".github/actions/setup/action.yml", ".github/actions/**"),
            (".github/actions/build/run.sh", ".github/actions/**"),
            ("action.yml", "**/action.yml"),
            ("tools/release/action.yml", "**/action.yml"),
            ("action.yaml", "**/action.yaml"),
            ("ci/deploy/action.yaml", "**/action.yaml"),
            (".gitlab-ci.yml", ".gitlab-ci.yml"),
            (".circleci/config.yml", ".circleci/**"),
            ("Jenkinsfile", "**/Jenkinsfile"),
            ("services/api/Jenkinsfile", "**/Jenkinsfile"),
            (".buildkite/pipeline.yml", ".buildkite/**"),
            ("azure-pipelines.yml", "azure-pipelines.yml"),
            (".gitattributes", "**/.gitattributes"),
            ("assets/.gitattributes", "**/.gitattributes"),
            (".gitmodules", "**/.gitmodules"),
            ("vendor/lib/.gitmodules", "**/.gitmodules"),
        ] {
            let mut out = Vec::new();
            check(&FileDiff::added(path, b"x"), &policy, &mut out);
            assert_eq!(out.len(), 1, "{path}: {out:?}");
            assert_eq!(out[0].rule, RuleId::ProtectedPath, "{path}");
            assert!(out[0].message.contains(&format!("(matches `{glob}`)")), "{path}: {}", out[0].message);
        }
        for path in [
            "src/actions.rs",
            "src/action.yml.md",
            "docs/action.yml/readme.md",
            "my-action.yml",
            "Jenkinsfile.md",
            "docs/jenkins.md",
            "src/circleci/config.yml",
            "azure-pipelines.yaml.bak",
            ".gitignore",
            "src/gitattributes.rs",
        ] {
            let mut out = Vec::new();
            check(&FileDiff::added(path, b"x"), &policy, &mut out);
            assert!(out.is_empty(), "{path} is not protected: {out:?}");
        }
    }

    #[test]
    fn unsafe_message_escapes_control_characters() {
        let mut out = Vec::new();
        check(&FileDiff::added("a\u{1b}[31m", b""), &Policy::default(), &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].message.contains("a\\u{1b}[31m"), "{}", out[0].message);
        assert!(!out[0].message.contains('\u{1b}'));
    }
}
