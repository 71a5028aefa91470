//! The effective, compiled policy.

use super::config::PolicyConfig;
use super::error::PolicyError;
use super::glob::GlobList;
use super::secrets::SecretScanner;
use super::tests_rule::AssertionMatcher;

/// Protected path globs that every policy includes; configuration can only add to them.
///
/// Every CI entry point is protected, not only GitHub workflows: composite actions
/// (`.github/actions/**`, `action.yml` / `action.yaml` at any depth), GitLab, CircleCI, Jenkins
/// (`Jenkinsfile` at any depth), Buildkite and Azure Pipelines, since a change to any of them runs
/// code with the CI's secrets. So are git metadata, `.gitattributes` and `.gitmodules` (at any
/// depth: filters, diff drivers and submodule URLs change what git runs and fetches), CODEOWNERS,
/// and `.aicd.toml` itself so the agent cannot loosen the policy that governs it.
pub const DEFAULT_PROTECTED_PATHS: &[&str] = &[
    ".github/workflows/**",
    ".github/actions/**",
    "**/action.yml",
    "**/action.yaml",
    ".gitlab-ci.yml",
    ".circleci/**",
    "**/Jenkinsfile",
    ".buildkite/**",
    "azure-pipelines.yml",
    ".git/**",
    "**/.gitattributes",
    "**/.gitmodules",
    "CODEOWNERS",
    ".github/CODEOWNERS",
    "docs/CODEOWNERS",
    ".aicd.toml",
];

/// Globs of test files that every policy includes; configuration can only add to them.
pub const DEFAULT_TEST_PATHS: &[&str] = &[
    "**/tests/**",
    "**/test/**",
    "**/*_test.*",
    "**/*_tests.*",
    "**/test_*.*",
    "**/*.test.*",
    "**/*.spec.*",
    "**/__tests__/**",
    "**/spec/**",
];

/// Default maximum number of files one change may touch.
pub const DEFAULT_MAX_FILES: usize = 50;

/// Default maximum number of bytes one change may write or delete (1 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;

/// The effective policy: globs and regexes precompiled, ready for [`evaluate`](super::evaluate).
///
/// Build it with [`Policy::from_config`] (usually from [`PolicyConfig::merge`] of the org and repo
/// configs); [`Policy::default`] is the safe built-in policy. Protected-path and test-path globs
/// match case-insensitively (stricter on case-insensitive filesystems); allowlist globs match
/// case-sensitively (narrower). Cloning is cheap enough to share per job.
#[derive(Debug, Clone)]
pub struct Policy {
    pub(super) protected: GlobList,
    pub(super) max_files: usize,
    pub(super) max_bytes: u64,
    pub(super) allow_binary: bool,
    pub(super) binary_allow: GlobList,
    pub(super) secret_allow: GlobList,
    pub(super) secrets: SecretScanner,
    pub(super) test_paths: GlobList,
    pub(super) allow_test_deletion: bool,
    pub(super) assertions: AssertionMatcher,
}

impl Policy {
    /// Compiles a configuration into a policy, adding the built-in defaults.
    ///
    /// Fails with [`PolicyError::InvalidGlob`] on a glob that does not parse and
    /// [`PolicyError::InvalidRegex`] on a bad custom secret pattern; never panics.
    pub fn from_config(config: &PolicyConfig) -> Result<Self, PolicyError> {
        let protected = GlobList::build(with_defaults(DEFAULT_PROTECTED_PATHS, &config.protected_paths), true)?;
        let test_paths = GlobList::build(with_defaults(DEFAULT_TEST_PATHS, &config.test_paths), true)?;
        let binary_allow = GlobList::build(listed(&config.binary_allow), false)?;
        let secret_allow = GlobList::build(listed(&config.secret_allow), false)?;
        let secrets = SecretScanner::build(listed(&config.secret_patterns))?;
        Ok(Self {
            protected,
            max_files: config.max_files.unwrap_or(DEFAULT_MAX_FILES),
            max_bytes: config.max_bytes.unwrap_or(DEFAULT_MAX_BYTES),
            allow_binary: config.allow_binary.unwrap_or(false),
            binary_allow,
            secret_allow,
            secrets,
            test_paths,
            allow_test_deletion: config.allow_test_deletion.unwrap_or(false),
            assertions: AssertionMatcher::new(),
        })
    }

    /// Maximum number of changed files allowed.
    pub fn max_files(&self) -> usize {
        self.max_files
    }

    /// Maximum number of changed bytes allowed.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Whether binary / non-UTF-8 content is allowed everywhere.
    pub fn allow_binary(&self) -> bool {
        self.allow_binary
    }

    /// Whether deleting test files and removing assertions is allowed.
    pub fn allow_test_deletion(&self) -> bool {
        self.allow_test_deletion
    }

    /// All protected path globs in effect (defaults first).
    pub fn protected_paths(&self) -> &[String] {
        self.protected.patterns()
    }

    /// All test-file globs in effect (defaults first).
    pub fn test_paths(&self) -> &[String] {
        self.test_paths.patterns()
    }

    /// The first protected glob matching `path`, or `None` if the path is not protected.
    /// Lets callers refuse early (e.g. before starting the agent) with the same wording.
    pub fn protected_match(&self, path: &str) -> Option<&str> {
        self.protected.first_match(path)
    }
}

impl Default for Policy {
    /// The safe built-in policy: all defaults, nothing allowlisted.
    fn default() -> Self {
        // The built-in globs and regexes are constants covered by unit tests, so this cannot fail.
        Self::from_config(&PolicyConfig::default()).expect("built-in policy compiles")
    }
}

fn with_defaults<'a>(defaults: &'a [&'a str], extra: &'a Option<Vec<String>>) -> impl Iterator<Item = &'a str> {
    defaults.iter().copied().chain(listed(extra))
}

fn listed(list: &Option<Vec<String>>) -> impl Iterator<Item = &str> {
    list.iter().flatten().map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_compiles_with_documented_values() {
        let policy = Policy::default();
        assert_eq!(policy.max_files(), 50);
        assert_eq!(policy.max_bytes(), 1_048_576);
        assert!(!policy.allow_binary());
        assert!(!policy.allow_test_deletion());
        assert_eq!(policy.protected_paths(), DEFAULT_PROTECTED_PATHS);
        assert_eq!(policy.test_paths(), DEFAULT_TEST_PATHS);
    }

    #[test]
    fn repo_cannot_remove_defaults() {
        let repo = PolicyConfig::from_repo_toml("[policy]\nprotected_paths = [\"infra/**\"]\n").unwrap();
        let policy = Policy::from_config(&PolicyConfig::merge(&PolicyConfig::default(), &repo)).unwrap();
        assert_eq!(policy.protected_match(".github/workflows/ci.yml"), Some(".github/workflows/**"));
        assert_eq!(policy.protected_match("infra/main.tf"), Some("infra/**"));
        assert_eq!(policy.protected_match("src/main.rs"), None);
    }

    #[test]
    fn repo_overrides_limits() {
        let org = PolicyConfig { max_files: Some(10), max_bytes: Some(10), ..PolicyConfig::default() };
        let repo = PolicyConfig::from_repo_toml("[policy]\nmax_files = 20\n").unwrap();
        let policy = Policy::from_config(&PolicyConfig::merge(&org, &repo)).unwrap();
        assert_eq!(policy.max_files(), 20);
        assert_eq!(policy.max_bytes(), 10);
    }

    #[test]
    fn invalid_glob_in_any_list_is_reported() {
        for field in ["protected_paths", "binary_allow", "secret_allow", "test_paths"] {
            let text = format!("[policy]\n{field} = [\"ok/**\", \"bad/[z-\"]\n");
            let cfg = PolicyConfig::from_repo_toml(&text).unwrap();
            match Policy::from_config(&cfg) {
                Err(PolicyError::InvalidGlob { glob, message }) => {
                    assert_eq!(glob, "bad/[z-", "{field}");
                    assert!(!message.is_empty());
                }
                other => panic!("{field}: expected InvalidGlob, got {other:?}"),
            }
        }
    }

    #[test]
    fn protected_globs_are_case_insensitive() {
        let policy = Policy::default();
        assert!(policy.protected_match(".GitHub/Workflows/ci.yml").is_some());
        assert!(policy.protected_match("codeowners").is_some());
        assert!(policy.protected_match("src/CODEOWNERS").is_none());
    }
}
