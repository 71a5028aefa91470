//! What starts a job for an issue: trigger settings resolved from a repository's settings over
//! its organization's.

use crate::{Error, Result};

/// The label that starts a job unless a repository or its organization chooses another.
pub const DEFAULT_TRIGGER_LABEL: &str = "aicd";

/// The longest trigger label accepted (GitHub's own limit on label names).
const MAX_LABEL_CHARS: usize = 50;

/// What starts a job for an issue of a repository: resolved from the repository's settings over
/// the organization's.
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
    /// Resolves the triggers of a repository: for each of `label`, `assignment` and `commands`,
    /// the repository's `triggers` value if it has one, else the organization's, else the default
    /// (label [`DEFAULT_TRIGGER_LABEL`], assignment and commands on). An explicit `"label": null`
    /// disables label triggers and overrides a label set further up.
    ///
    /// Never fails: a malformed value (a `triggers` that is not an object, a key of the wrong
    /// type, a label [`TriggerSettings::validate`] would refuse) reads as absent.
    pub fn resolve(org_settings: &serde_json::Value, repo_settings: &serde_json::Value) -> TriggerSettings {
        let layers = [triggers_of(repo_settings), triggers_of(org_settings)];
        let defaults = TriggerSettings::default();
        let label = layers
            .iter()
            .flatten()
            .find_map(|t| match t.get("label")? {
                serde_json::Value::Null => Some(None),
                serde_json::Value::String(label) => check_label(label).ok().map(|l| Some(l.to_owned())),
                _ => None,
            })
            .unwrap_or(defaults.label);
        let flag = |key: &str, default: bool| {
            layers.iter().flatten().find_map(|t| t.get(key).and_then(serde_json::Value::as_bool)).unwrap_or(default)
        };
        TriggerSettings {
            label,
            assignment: flag("assignment", defaults.assignment),
            commands: flag("commands", defaults.commands),
            bots: flag("bots", defaults.bots),
        }
    }

    /// Checks a settings object's `triggers` member (absent is fine): an object with only the keys
    /// `label` (a non-blank string of at most 50 characters, or `null` to disable label triggers),
    /// `assignment`, `commands` and `bots` (booleans), each optional.
    /// [`Error::InvalidInput`] otherwise. A `settings` that is not an object has no `triggers`
    /// member and passes (whether settings must be an object is checked elsewhere).
    pub fn validate(settings: &serde_json::Value) -> Result<()> {
        let Some(triggers) = settings.get("triggers") else { return Ok(()) };
        let Some(triggers) = triggers.as_object() else {
            return Err(Error::invalid("settings.triggers must be a JSON object"));
        };
        for (key, value) in triggers {
            match (key.as_str(), value) {
                ("label", serde_json::Value::Null) => {}
                ("label", serde_json::Value::String(label)) => {
                    check_label(label)?;
                }
                ("label", _) => return Err(Error::invalid("settings.triggers.label must be a string or null")),
                ("assignment" | "commands" | "bots", serde_json::Value::Bool(_)) => {}
                ("assignment" | "commands" | "bots", _) => {
                    return Err(Error::invalid(format!("settings.triggers.{key} must be true or false")));
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "settings.triggers has an unknown key `{key}` (expected label, assignment, commands or bots)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether `label` is the trigger label. Label names are compared as GitHub compares them:
    /// case-insensitively (`AICD` matches `aicd`), ignoring surrounding whitespace. Always `false`
    /// when label triggers are disabled.
    pub fn matches_label(&self, label: &str) -> bool {
        self.label.as_deref().is_some_and(|own| own.trim().to_lowercase() == label.trim().to_lowercase())
    }
}

/// The `triggers` object of a settings object, if it has one.
fn triggers_of(settings: &serde_json::Value) -> Option<&serde_json::Map<String, serde_json::Value>> {
    settings.get("triggers")?.as_object()
}

/// Checks a trigger label: not blank, at most 50 characters, no control characters.
fn check_label(label: &str) -> Result<&str> {
    if label.trim().is_empty() {
        return Err(Error::invalid("settings.triggers.label must not be blank (use null to disable label triggers)"));
    }
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(Error::invalid(format!("settings.triggers.label must be at most {MAX_LABEL_CHARS} characters")));
    }
    if label.chars().any(char::is_control) {
        return Err(Error::invalid("settings.triggers.label must not contain control characters"));
    }
    Ok(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers_default_when_absent_everywhere() {
        let empty = serde_json::json!({});
        let resolved = TriggerSettings::resolve(&empty, &empty);
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
        assert!(TriggerSettings::resolve(&bots, &empty).bots);
        assert!(!TriggerSettings::resolve(&bots, &serde_json::json!({ "triggers": { "bots": false } })).bots);
        assert_eq!(DEFAULT_TRIGGER_LABEL, "aicd");
        let other = serde_json::json!({ "policy": { "max_files": 3 } });
        assert_eq!(TriggerSettings::resolve(&other, &serde_json::Value::Null), TriggerSettings::default());
    }

    #[test]
    fn repository_triggers_override_the_organization_key_by_key() {
        let org = serde_json::json!({ "triggers": { "label": "ai", "assignment": false, "commands": false } });
        let repo = serde_json::json!({ "triggers": { "commands": true } });
        assert_eq!(
            TriggerSettings::resolve(&org, &repo),
            TriggerSettings { label: Some("ai".into()), assignment: false, commands: true, bots: false }
        );
        // The org alone; the repository alone.
        assert_eq!(
            TriggerSettings::resolve(&org, &serde_json::json!({})),
            TriggerSettings { label: Some("ai".into()), assignment: false, commands: false, bots: false }
        );
        let repo = serde_json::json!({ "triggers": { "label": "bot-please", "assignment": false } });
        assert_eq!(
            TriggerSettings::resolve(&serde_json::json!({}), &repo),
            TriggerSettings { label: Some("bot-please".into()), assignment: false, commands: true, bots: false }
        );
    }

    #[test]
    fn a_null_label_disables_label_triggers_at_either_level() {
        let org = serde_json::json!({ "triggers": { "label": null } });
        let resolved = TriggerSettings::resolve(&org, &serde_json::json!({}));
        assert_eq!(resolved.label, None);
        assert!(!resolved.matches_label("aicd"));
        // A repository may turn it back on, or turn off the org's label.
        let repo = serde_json::json!({ "triggers": { "label": "go" } });
        assert_eq!(TriggerSettings::resolve(&org, &repo).label.as_deref(), Some("go"));
        let org = serde_json::json!({ "triggers": { "label": "ai" } });
        let repo = serde_json::json!({ "triggers": { "label": null } });
        assert_eq!(TriggerSettings::resolve(&org, &repo).label, None);
    }

    #[test]
    fn malformed_trigger_values_read_as_absent() {
        let org = serde_json::json!({ "triggers": { "label": "ai", "assignment": false } });
        for repo in [
            serde_json::json!({ "triggers": "label" }),
            serde_json::json!({ "triggers": null }),
            serde_json::json!({ "triggers": { "label": 5, "assignment": "no", "commands": 0 } }),
            serde_json::json!({ "triggers": { "label": "" } }),
            serde_json::json!({ "triggers": { "label": "x".repeat(51) } }),
            serde_json::json!([1, 2]),
        ] {
            assert_eq!(
                TriggerSettings::resolve(&org, &repo),
                TriggerSettings { label: Some("ai".into()), assignment: false, commands: true, bots: false },
                "{repo}"
            );
        }
        let bad_org = serde_json::json!({ "triggers": { "label": ["x"], "commands": "yes" } });
        assert_eq!(TriggerSettings::resolve(&bad_org, &serde_json::json!({})), TriggerSettings::default());
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

    #[test]
    fn trigger_settings_are_validated() {
        for ok in [
            serde_json::json!({}),
            serde_json::json!({ "policy": {} }),
            serde_json::json!({ "triggers": {} }),
            serde_json::json!({ "triggers": { "label": null } }),
            serde_json::json!({ "triggers": { "label": "x".repeat(50), "assignment": false, "commands": true } }),
            serde_json::json!({ "triggers": { "label": "ready for AI 🤖" } }),
        ] {
            assert!(TriggerSettings::validate(&ok).is_ok(), "{ok}");
        }
        for bad in [
            serde_json::json!({ "triggers": null }),
            serde_json::json!({ "triggers": [] }),
            serde_json::json!({ "triggers": "aicd" }),
            serde_json::json!({ "triggers": { "label": "" } }),
            serde_json::json!({ "triggers": { "label": "   " } }),
            serde_json::json!({ "triggers": { "label": "x".repeat(51) } }),
            serde_json::json!({ "triggers": { "label": "a\nb" } }),
            serde_json::json!({ "triggers": { "label": 1 } }),
            serde_json::json!({ "triggers": { "label": ["aicd"] } }),
            serde_json::json!({ "triggers": { "assignment": "yes" } }),
            serde_json::json!({ "triggers": { "commands": null } }),
            serde_json::json!({ "triggers": { "labels": ["aicd"] } }),
        ] {
            assert!(matches!(TriggerSettings::validate(&bad), Err(Error::InvalidInput(_))), "{bad}");
        }
    }
}
