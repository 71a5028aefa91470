//! The serde (TOML) form of the policy, with org/repo merging.

use serde::{Deserialize, Serialize};

use super::error::PolicyError;

/// Policy settings as written in configuration: the `[policy]` table of a repository's
/// `.aicd.toml`, or the org defaults. Every field is optional so layers can be merged; a missing
/// field means "inherit" (ultimately the built-in default). Unknown keys are rejected.
///
/// Compile it with [`Policy::from_config`](super::Policy::from_config). The built-in defaults
/// ([`DEFAULT_PROTECTED_PATHS`](super::DEFAULT_PROTECTED_PATHS),
/// [`DEFAULT_TEST_PATHS`](super::DEFAULT_TEST_PATHS), all built-in secret detectors) are always
/// included by the compiler, so no configuration can remove them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Extra protected path globs (added to the defaults; additive when merging).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected_paths: Option<Vec<String>>,
    /// Maximum number of changed files (default 50; repo overrides org).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_files: Option<usize>,
    /// Maximum bytes changed, as defined by the `too_many_bytes` rule (default 1 MiB; repo
    /// overrides org).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
    /// Allow binary / non-UTF-8 content anywhere (default false; repo overrides org).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_binary: Option<bool>,
    /// Globs of paths allowed to hold binary content (additive when merging).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary_allow: Option<Vec<String>>,
    /// Globs of paths skipped by secret scanning, e.g. test fixtures (additive when merging).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_allow: Option<Vec<String>>,
    /// Extra secret detectors: Rust regex syntax, matched per added line. The named group
    /// `value` (else group 1, else the whole match) is the secret that gets redacted
    /// (additive when merging).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_patterns: Option<Vec<String>>,
    /// Extra globs of test files (added to the defaults; additive when merging).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_paths: Option<Vec<String>>,
    /// Allow deleting test files, removing assertions and otherwise weakening tests (default
    /// false; repo overrides org).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_test_deletion: Option<bool>,
}

/// The whole `.aicd.toml`: only `[policy]` is read; other tables (e.g. `[triggers]`) are ignored.
#[derive(Deserialize)]
struct RepoFile {
    #[serde(default)]
    policy: Option<PolicyConfig>,
}

impl PolicyConfig {
    /// Reads the `[policy]` table of a repository's `.aicd.toml`.
    ///
    /// A file without `[policy]` (or an empty file) yields the empty config. Other top-level
    /// tables are ignored, but unknown keys *inside* `[policy]` are an error, so typos are caught.
    /// Malformed TOML, wrong types and unknown keys give [`PolicyError::InvalidConfig`] whose
    /// message names the line and key; this never panics.
    pub fn from_repo_toml(text: &str) -> Result<Self, PolicyError> {
        toml::from_str::<RepoFile>(text)
            .map(|file| file.policy.unwrap_or_default())
            .map_err(|e| PolicyError::InvalidConfig { message: format!("`.aicd.toml`: {}", e.to_string().trim_end()) })
    }

    /// Layers a repository config over the org config.
    ///
    /// - Scalars (`max_files`, `max_bytes`, `allow_binary`, `allow_test_deletion`): the repo's
    ///   value wins when set (it may raise or lower a limit), else the org's.
    /// - Lists (`protected_paths`, `test_paths`, `secret_patterns`, `binary_allow`,
    ///   `secret_allow`): the union, org entries first, duplicates removed. A repo can add
    ///   protected paths, test paths and secret detectors but can never remove the org's; the
    ///   built-in defaults are added again at compile time. Note that the allowlists are additive
    ///   too, so a repo can widen them: `.aicd.toml` is itself a default protected path, so the
    ///   agent cannot edit it and widening needs a human commit.
    pub fn merge(org: &PolicyConfig, repo: &PolicyConfig) -> PolicyConfig {
        PolicyConfig {
            protected_paths: union(&org.protected_paths, &repo.protected_paths),
            max_files: repo.max_files.or(org.max_files),
            max_bytes: repo.max_bytes.or(org.max_bytes),
            allow_binary: repo.allow_binary.or(org.allow_binary),
            binary_allow: union(&org.binary_allow, &repo.binary_allow),
            secret_allow: union(&org.secret_allow, &repo.secret_allow),
            secret_patterns: union(&org.secret_patterns, &repo.secret_patterns),
            test_paths: union(&org.test_paths, &repo.test_paths),
            allow_test_deletion: repo.allow_test_deletion.or(org.allow_test_deletion),
        }
    }
}

fn union(first: &Option<Vec<String>>, second: &Option<Vec<String>>) -> Option<Vec<String>> {
    if first.is_none() && second.is_none() {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for item in first.iter().chain(second.iter()).flatten() {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| (*s).to_owned()).collect())
    }

    #[test]
    fn parses_documented_layout_and_ignores_other_tables() {
        let text = r#"
[triggers]
labels = ["ai"]

[policy]
protected_paths = ["infra/**"]
max_files = 20
max_bytes = 200000
allow_binary = false
binary_allow = ["assets/**/*.png"]
secret_allow = ["tests/fixtures/**"]
test_paths = ["checks/**"]
allow_test_deletion = false
"#;
        let cfg = PolicyConfig::from_repo_toml(text).unwrap();
        assert_eq!(cfg.protected_paths, strings(&["infra/**"]));
        assert_eq!(cfg.max_files, Some(20));
        assert_eq!(cfg.max_bytes, Some(200_000));
        assert_eq!(cfg.allow_binary, Some(false));
        assert_eq!(cfg.binary_allow, strings(&["assets/**/*.png"]));
        assert_eq!(cfg.secret_allow, strings(&["tests/fixtures/**"]));
        assert_eq!(cfg.test_paths, strings(&["checks/**"]));
        assert_eq!(cfg.allow_test_deletion, Some(false));
        assert_eq!(cfg.secret_patterns, None);
    }

    #[test]
    fn missing_policy_table_is_empty_config() {
        assert_eq!(PolicyConfig::from_repo_toml("").unwrap(), PolicyConfig::default());
        let cfg = PolicyConfig::from_repo_toml("[triggers]\nanything = 1\n").unwrap();
        assert_eq!(cfg, PolicyConfig::default());
    }

    fn config_error(text: &str) -> String {
        match PolicyConfig::from_repo_toml(text) {
            Err(PolicyError::InvalidConfig { message }) => message,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn unknown_key_in_policy_names_key_and_line() {
        let message = config_error("[policy]\nmax_files = 3\nmax_file = 2\n");
        assert!(message.contains("max_file"), "{message}");
        assert!(message.contains("line 3"), "{message}");
        let shown = PolicyError::InvalidConfig { message }.to_string();
        assert!(shown.starts_with("invalid policy configuration:"), "{shown}");
    }

    #[test]
    fn malformed_toml_and_wrong_types_are_invalid_config() {
        let message = config_error("[policy\nmax_files = 3\n");
        assert!(message.contains("line 1"), "{message}");
        let message = config_error("[policy]\nmax_files = \"many\"\n");
        assert!(message.contains("max_files") || message.contains("line 2"), "{message}");
        let message = config_error("[policy]\nmax_bytes = -1\n");
        assert!(message.contains("line 2"), "{message}");
        config_error("policy = 5\n");
        config_error("[policy]\nprotected_paths = \"infra/**\"\n");
    }

    #[test]
    fn merge_unions_lists_and_repo_overrides_scalars() {
        let org = PolicyConfig {
            protected_paths: strings(&["deploy/**", "infra/**"]),
            max_files: Some(30),
            max_bytes: Some(500),
            allow_binary: Some(true),
            secret_allow: strings(&["fixtures/**"]),
            ..PolicyConfig::default()
        };
        let repo = PolicyConfig {
            protected_paths: strings(&["infra/**", "db/migrations/**"]),
            max_files: Some(10),
            test_paths: strings(&["checks/**"]),
            ..PolicyConfig::default()
        };
        let merged = PolicyConfig::merge(&org, &repo);
        assert_eq!(merged.protected_paths, strings(&["deploy/**", "infra/**", "db/migrations/**"]));
        assert_eq!(merged.max_files, Some(10));
        assert_eq!(merged.max_bytes, Some(500));
        assert_eq!(merged.allow_binary, Some(true));
        assert_eq!(merged.secret_allow, strings(&["fixtures/**"]));
        assert_eq!(merged.test_paths, strings(&["checks/**"]));
        assert_eq!(merged.binary_allow, None);
    }

    #[test]
    fn repo_empty_list_cannot_remove_org_entries() {
        let org = PolicyConfig { protected_paths: strings(&["deploy/**"]), ..PolicyConfig::default() };
        let repo = PolicyConfig::from_repo_toml("[policy]\nprotected_paths = []\n").unwrap();
        let merged = PolicyConfig::merge(&org, &repo);
        assert_eq!(merged.protected_paths, strings(&["deploy/**"]));
    }

    #[test]
    fn serde_round_trip_skips_unset_fields() {
        let cfg = PolicyConfig { max_files: Some(5), ..PolicyConfig::default() };
        let json = serde_json::to_string(&cfg).unwrap();
        assert_eq!(json, r#"{"max_files":5}"#);
        assert_eq!(serde_json::from_str::<PolicyConfig>(&json).unwrap(), cfg);
    }
}
