//! Running the policy engine on a changeset: compare each changed file with the base, under the
//! deployment's defaults merged with the organization's policy, the repository's settings and its
//! `.aicd.toml`, in that order (each layer can add protected paths, test paths and secret
//! detectors, never remove them; see [`PolicyConfig::merge`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aicd_agent_api::{ChangeOp, Changeset, RepoView};

use crate::policy::{FileDiff, Policy, PolicyConfig, Violation, evaluate};
use crate::repos::Repository;
use crate::settings::OrgSettings;

/// Why the gate could not decide: a configuration a person must fix, or a repository read that
/// may pass.
pub(crate) enum GateError {
    Config(String),
    Read(aicd_agent_api::RepoViewError),
}

/// The repository's policy file.
const REPO_POLICY_FILE: &str = ".aicd.toml";

/// Compiled policies by their configuration. Compiling the secret rules costs milliseconds, far
/// more than evaluating a typical changeset, and most jobs share a few configurations.
#[derive(Debug, Default)]
pub(crate) struct PolicyCache {
    compiled: Mutex<HashMap<String, Arc<Policy>>>,
}

impl PolicyCache {
    /// Distinct configurations kept before the cache starts over.
    const CAPACITY: usize = 256;

    fn get(&self, config: &PolicyConfig) -> Result<Arc<Policy>, GateError> {
        let key = serde_json::to_string(config).unwrap_or_default();
        if let Some(policy) = self.compiled.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(policy);
        }
        let policy =
            Arc::new(Policy::from_config(config).map_err(|e| GateError::Config(format!("invalid policy: {e}")))?);
        if let Ok(mut map) = self.compiled.lock() {
            if map.len() >= Self::CAPACITY {
                map.clear();
            }
            map.insert(key, policy.clone());
        }
        Ok(policy)
    }
}

/// The effective policy: `defaults` (the deployment's) ← the organization's settings ← the
/// repository's settings ← its `.aicd.toml`, compiled (and cached).
pub(crate) async fn effective(
    cache: &PolicyCache,
    defaults: &PolicyConfig,
    org: &OrgSettings,
    repo: &Repository,
    view: &dyn RepoView,
) -> Result<Arc<Policy>, GateError> {
    let mut config = defaults.clone();
    if org.policy_unreadable {
        return Err(GateError::Config(
            "the organization's stored policy settings cannot be read; set them again".into(),
        ));
    }
    if let Some(from_org) = &org.policy {
        config = PolicyConfig::merge(&config, from_org);
    }
    if repo.settings.policy_unreadable {
        return Err(GateError::Config("the repository's stored policy settings cannot be read; set them again".into()));
    }
    if let Some(from_settings) = &repo.settings.policy {
        config = PolicyConfig::merge(&config, from_settings);
    }
    if let Some(text) = view.read_file(REPO_POLICY_FILE).await.map_err(GateError::Read)? {
        let text =
            String::from_utf8(text).map_err(|_| GateError::Config(format!("{REPO_POLICY_FILE} is not UTF-8")))?;
        let from_file = PolicyConfig::from_repo_toml(&text)
            .map_err(|e| GateError::Config(format!("{REPO_POLICY_FILE} is invalid: {e}")))?;
        config = PolicyConfig::merge(&config, &from_file);
    }
    cache.get(&config)
}

/// The violations of `changeset` under the [`effective`] policy (the orchestrator keeps the
/// policy, so it calls the two halves itself).
#[cfg(test)]
pub(crate) async fn check(
    cache: &PolicyCache,
    defaults: &PolicyConfig,
    org: &OrgSettings,
    repo: &Repository,
    view: &dyn RepoView,
    changeset: &Changeset,
) -> Result<Vec<Violation>, GateError> {
    let policy = effective(cache, defaults, org, repo, view).await?;
    evaluate_changeset(&policy, view, changeset).await
}

/// The violations of `changeset` under `policy`, each changed file compared with its contents in
/// `view` (the base).
pub(crate) async fn evaluate_changeset(
    policy: &Policy,
    view: &dyn RepoView,
    changeset: &Changeset,
) -> Result<Vec<Violation>, GateError> {
    let mut before = Vec::with_capacity(changeset.changes.len());
    for change in &changeset.changes {
        // Unsafe paths are not read; the engine reports them.
        let content = if aicd_agent_api::validate_repo_path(&change.path).is_ok() {
            view.read_file(&change.path).await.map_err(GateError::Read)?
        } else {
            None
        };
        before.push(content);
    }
    let diffs: Vec<FileDiff<'_>> = changeset
        .changes
        .iter()
        .zip(&before)
        .map(|(change, before)| FileDiff {
            path: &change.path,
            before: before.as_deref(),
            after: match &change.op {
                ChangeOp::Write { content } => Some(content.as_slice()),
                ChangeOp::Delete => None,
            },
        })
        .collect();
    Ok(evaluate(&diffs, policy))
}

#[cfg(test)]
mod tests {
    use aicd_agent_api::{FileChange, MemoryRepoView};

    use super::*;
    use crate::ids::{OrgId, RepoId};
    use crate::repos::RepoSource;
    use crate::settings::RepoSettings;

    fn repo(settings: serde_json::Value) -> Repository {
        Repository {
            id: RepoId::new(),
            org_id: OrgId::new(),
            full_name: "acme/app".into(),
            source: RepoSource::Local { path: "/nowhere".into() },
            default_branch: "main".into(),
            settings: RepoSettings::from_stored(&settings),
            detached_at: None,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        }
    }

    #[tokio::test]
    async fn stored_policy_settings_are_applied_and_unreadable_ones_fail_closed() {
        let cache = PolicyCache::default();
        let view = MemoryRepoView::new();
        let changeset = Changeset {
            changes: vec![FileChange::write("a.txt", "a"), FileChange::write("b.txt", "b")],
            ..Changeset::default()
        };
        let defaults = PolicyConfig::default();
        let limited = repo(serde_json::json!({ "policy": { "max_files": 1 } }));
        let org = OrgSettings::default();
        let violations = check(&cache, &defaults, &org, &limited, &view, &changeset).await.ok().unwrap();
        assert!(!violations.is_empty(), "max_files from the settings applies");
        let plain = repo(serde_json::json!({}));
        assert!(check(&cache, &defaults, &org, &plain, &view, &changeset).await.ok().unwrap().is_empty());
        let broken = repo(serde_json::json!({ "policy": { "max_files": "one" } }));
        let refused = check(&cache, &defaults, &org, &broken, &view, &changeset).await;
        assert!(matches!(refused, Err(GateError::Config(_))), "an unreadable stored policy stops the job");
        let broken_org = OrgSettings::from_stored(&serde_json::json!({ "policy": { "max_files": "one" } }));
        let refused = check(&cache, &defaults, &broken_org, &plain, &view, &changeset).await;
        assert!(matches!(refused, Err(GateError::Config(_))), "an unreadable organization policy stops the job");
    }

    fn rules(violations: &[Violation]) -> Vec<(String, crate::policy::RuleId)> {
        violations.iter().map(|v| (v.path.clone().unwrap_or_default(), v.rule)).collect()
    }

    #[tokio::test]
    async fn the_organization_policy_is_merged_and_a_repository_cannot_remove_its_paths() {
        use crate::policy::RuleId::{ProtectedPath, TooManyFiles};
        let cache = PolicyCache::default();
        let defaults = PolicyConfig { max_files: Some(1), ..PolicyConfig::default() };
        let org = OrgSettings::from_stored(&serde_json::json!({
            "policy": { "protected_paths": ["deploy/**"], "max_files": 5 }
        }));
        let changeset = Changeset {
            changes: vec![FileChange::write("deploy/app.yml", "replicas: 3"), FileChange::write("src/a.rs", "")],
            ..Changeset::default()
        };
        // The organization's path is protected and its limit is over the deployment's.
        let plain = repo(serde_json::json!({}));
        let violations = check(&cache, &defaults, &org, &plain, &MemoryRepoView::new(), &changeset).await.ok().unwrap();
        assert_eq!(rules(&violations), [("deploy/app.yml".to_owned(), ProtectedPath)]);
        assert!(violations[0].message.contains("(matches `deploy/**`)"), "{}", violations[0].message);
        // Neither the repository's settings nor its `.aicd.toml` can take the path away; both
        // can add paths and override the limit.
        let repo_settings = repo(serde_json::json!({ "policy": { "protected_paths": [], "max_files": 1 } }));
        let view = MemoryRepoView::new().with_file(".aicd.toml", "[policy]\nprotected_paths = []\ntest_paths = []\n");
        let violations = check(&cache, &defaults, &org, &repo_settings, &view, &changeset).await.ok().unwrap();
        assert_eq!(
            rules(&violations),
            [(String::new(), TooManyFiles), ("deploy/app.yml".to_owned(), ProtectedPath)],
            "{violations:?}"
        );
        let view = MemoryRepoView::new().with_file(".aicd.toml", "[policy]\nprotected_paths = [\"src/**\"]\n");
        let violations = check(&cache, &defaults, &org, &plain, &view, &changeset).await.ok().unwrap();
        assert_eq!(
            rules(&violations),
            [("deploy/app.yml".to_owned(), ProtectedPath), ("src/a.rs".to_owned(), ProtectedPath)]
        );
    }

    #[test]
    fn a_configuration_is_compiled_once() {
        let cache = PolicyCache::default();
        let config = PolicyConfig::default();
        let a = cache.get(&config).ok().unwrap();
        let b = cache.get(&config).ok().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let other = PolicyConfig { max_files: Some(3), ..PolicyConfig::default() };
        let c = cache.get(&other).ok().unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(c.max_files(), 3);
    }
}
