//! What starts a job for an issue: trigger settings resolved from a repository's settings over
//! its organization's.

use crate::settings::{OrgSettings, RepoSettings, TriggerOverrides};

/// The label that starts a job unless a repository or its organization chooses another.
pub const DEFAULT_TRIGGER_LABEL: &str = "aicd";

/// What starts a job for an issue of a repository: resolved from the repository's settings over
/// the organization's ([`crate::settings`]).
///
/// Both settings objects may hold a `triggers` member:
///
/// ```json
/// {"triggers": {"label": "aicd", "assignment": true, "commands": true, "bots": false}}
/// ```
///
/// `label` is the label that starts a job (`null` disables label triggers), `assignment` whether
/// assigning the issue to the App's bot user does, `commands` whether `/aicd run|cancel|retry`
/// comments are obeyed, `bots` whether labels, assignments and commands from bot accounts
/// (`<name>[bot]`) are obeyed (they are trusted without a permission check when they are).
/// Each key is optional: the repository's value wins, then the organization's, then the default
/// ([`TriggerSettings::default`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerSettings {
    /// The label that starts a job when added (or present when the issue is opened); `None`
    /// disables label triggers. Compared as GitHub compares label names: case-insensitively
    /// (see [`TriggerSettings::matches_label`]).
    pub label: Option<String>,
    /// Whether assigning the issue to the App's bot user starts a job.
    pub assignment: bool,
    /// Whether `/aicd run|cancel|retry` comments are obeyed.
    pub commands: bool,
    /// Whether triggers from bot accounts (`<name>[bot]`) are obeyed. Off by default: issue
    /// templates and labelling bots act for anyone, and a job's branch runs the repository's CI.
    pub bots: bool,
}

impl Default for TriggerSettings {
    /// Label [`DEFAULT_TRIGGER_LABEL`], assignment and commands on, bots off.
    fn default() -> Self {
        Self { label: Some(DEFAULT_TRIGGER_LABEL.to_owned()), assignment: true, commands: true, bots: false }
    }
}

impl TriggerSettings {
    /// Resolves the triggers of a repository: for each of `label`, `assignment`, `commands` and
    /// `bots`, the repository's value if it sets one, else the organization's, else the default
    /// (label [`DEFAULT_TRIGGER_LABEL`], assignment and commands on, bots off). A `null` label
    /// disables label triggers and overrides a label set further up.
    pub fn resolve(org: &OrgSettings, repo: &RepoSettings) -> TriggerSettings {
        let layers = [&repo.triggers, &org.triggers];
        let defaults = TriggerSettings::default();
        let label = layers.iter().find_map(|t| t.label.clone()).unwrap_or(defaults.label);
        let flag = |get: fn(&TriggerOverrides) -> Option<bool>, default: bool| {
            layers.iter().find_map(|t| get(t)).unwrap_or(default)
        };
        TriggerSettings {
            label,
            assignment: flag(|t| t.assignment, defaults.assignment),
            commands: flag(|t| t.commands, defaults.commands),
            bots: flag(|t| t.bots, defaults.bots),
        }
    }

    /// Whether `label` is the trigger label. Label names are compared as GitHub compares them:
    /// case-insensitively (`AICD` matches `aicd`), ignoring surrounding whitespace. Always `false`
    /// when label triggers are disabled.
    pub fn matches_label(&self, label: &str) -> bool {
        self.label.as_deref().is_some_and(|own| own.trim().to_lowercase() == label.trim().to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings as read back from the store.
    fn org_settings(value: serde_json::Value) -> OrgSettings {
        OrgSettings::from_stored(&value)
    }

    fn repo_settings(value: serde_json::Value) -> RepoSettings {
        RepoSettings::from_stored(&value)
    }

    #[test]
    fn triggers_default_when_absent_everywhere() {
        let empty = serde_json::json!({});
        let resolved = TriggerSettings::resolve(&org_settings(empty.clone()), &repo_settings(empty.clone()));
        assert_eq!(resolved, TriggerSettings::default());
        assert_eq!(
            resolved,
            TriggerSettings {
                label: Some(DEFAULT_TRIGGER_LABEL.into()),
                assignment: true,
                commands: true,
                bots: false
            }
        );
        let bots = serde_json::json!({ "triggers": { "bots": true } });
        assert!(TriggerSettings::resolve(&org_settings(bots.clone()), &repo_settings(empty.clone())).bots);
        assert!(
            !TriggerSettings::resolve(
                &org_settings(bots),
                &repo_settings(serde_json::json!({ "triggers": { "bots": false } }))
            )
            .bots
        );
        assert_eq!(DEFAULT_TRIGGER_LABEL, "aicd");
        let other = serde_json::json!({ "policy": { "max_files": 3 } });
        assert_eq!(
            TriggerSettings::resolve(&org_settings(other), &repo_settings(serde_json::Value::Null)),
            TriggerSettings::default()
        );
    }

    #[test]
    fn repository_triggers_override_the_organization_key_by_key() {
        let org = serde_json::json!({ "triggers": { "label": "ai", "assignment": false, "commands": false } });
        let repo = serde_json::json!({ "triggers": { "commands": true } });
        assert_eq!(
            TriggerSettings::resolve(&org_settings(org.clone()), &repo_settings(repo.clone())),
            TriggerSettings { label: Some("ai".into()), assignment: false, commands: true, bots: false }
        );
        // The org alone; the repository alone.
        assert_eq!(
            TriggerSettings::resolve(&org_settings(org.clone()), &repo_settings(serde_json::json!({}))),
            TriggerSettings { label: Some("ai".into()), assignment: false, commands: false, bots: false }
        );
        let repo = serde_json::json!({ "triggers": { "label": "bot-please", "assignment": false } });
        assert_eq!(
            TriggerSettings::resolve(&org_settings(serde_json::json!({})), &repo_settings(repo.clone())),
            TriggerSettings { label: Some("bot-please".into()), assignment: false, commands: true, bots: false }
        );
    }

    #[test]
    fn a_null_label_disables_label_triggers_at_either_level() {
        let org = serde_json::json!({ "triggers": { "label": null } });
        let resolved = TriggerSettings::resolve(&org_settings(org.clone()), &repo_settings(serde_json::json!({})));
        assert_eq!(resolved.label, None);
        assert!(!resolved.matches_label("aicd"));
        // A repository may turn it back on, or turn off the org's label.
        let repo = serde_json::json!({ "triggers": { "label": "go" } });
        assert_eq!(
            TriggerSettings::resolve(&org_settings(org.clone()), &repo_settings(repo.clone())).label.as_deref(),
            Some("go")
        );
        let org = serde_json::json!({ "triggers": { "label": "ai" } });
        let repo = serde_json::json!({ "triggers": { "label": null } });
        assert_eq!(TriggerSettings::resolve(&org_settings(org.clone()), &repo_settings(repo.clone())).label, None);
    }

    #[test]
    fn malformed_stored_trigger_values_turn_their_trigger_off() {
        let org = serde_json::json!({ "triggers": { "label": "ai", "assignment": true, "commands": true } });
        let off = TriggerSettings { label: None, assignment: false, commands: false, bots: false };
        // A `triggers` member that is not an object turns every trigger off.
        for repo in [serde_json::json!({ "triggers": "label" }), serde_json::json!({ "triggers": null })] {
            let resolved = TriggerSettings::resolve(&org_settings(org.clone()), &repo_settings(repo.clone()));
            assert_eq!(resolved, off, "{repo}");
        }
        // Key by key: what cannot be read is off, the rest still inherits.
        let repo = serde_json::json!({ "triggers": { "label": 5, "assignment": "no" } });
        let resolved = TriggerSettings::resolve(&org_settings(org.clone()), &repo_settings(repo));
        assert_eq!(resolved, TriggerSettings { label: None, assignment: false, commands: true, bots: false });
        for label in [serde_json::json!(""), serde_json::json!("x".repeat(51))] {
            let repo = serde_json::json!({ "triggers": { "label": label } });
            let resolved = TriggerSettings::resolve(&org_settings(org.clone()), &repo_settings(repo));
            assert_eq!(resolved.label, None, "an invalid stored label is no label, not the default");
        }
        // Settings that are not an object at all carry nothing: the org's apply.
        let resolved = TriggerSettings::resolve(&org_settings(org.clone()), &repo_settings(serde_json::json!([1, 2])));
        assert_eq!(resolved.label.as_deref(), Some("ai"));
        let bad_org = serde_json::json!({ "triggers": { "label": ["x"], "commands": "yes" } });
        assert_eq!(
            TriggerSettings::resolve(&org_settings(bad_org), &repo_settings(serde_json::json!({}))),
            TriggerSettings { label: None, commands: false, ..TriggerSettings::default() }
        );
    }

    #[test]
    fn labels_match_case_insensitively() {
        let triggers = TriggerSettings { label: Some("AI-CD Ready".into()), ..TriggerSettings::default() };
        assert!(triggers.matches_label("ai-cd ready"));
        assert!(triggers.matches_label("AI-CD READY"));
        assert!(!triggers.matches_label("ai-cd"));
        assert!(TriggerSettings::default().matches_label("AICD"));
        let unicode = TriggerSettings { label: Some("Ärger".into()), ..TriggerSettings::default() };
        assert!(unicode.matches_label("ÄRGER"));
        assert!(triggers.matches_label(" ai-cd ready "));
        let off = TriggerSettings { label: None, ..TriggerSettings::default() };
        assert!(!off.matches_label("aicd"));
    }
}
