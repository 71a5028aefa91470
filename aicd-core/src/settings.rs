//! Typed settings of organizations and repositories: what each may hold, checked once where they
//! enter, and read back tolerantly from the store.
//!
//! Both are JSON objects in the API and the database. An organization's settings are defaults its
//! repositories inherit: triggers key by key, and its policy as the base that a repository's
//! settings and `.aicd.toml` add to (see [`PolicyConfig::merge`]):
//!
//! ```json
//! {"triggers": {"label": "aicd", "assignment": true, "commands": true, "bots": false},
//!  "policy": {"max_files": 20, "protected_paths": ["deploy/**"]}}
//! ```
//!
//! Unknown keys and wrong types are refused at the door ([`RepoSettings::parse`],
//! [`OrgSettings::parse`]) with a message naming the field, and a policy is compiled there too,
//! so a typo or a bad glob is a 422 rather than a setting silently ignored or a failure of every
//! later job. What is already stored is read with
//! [`RepoSettings::from_stored`] and [`OrgSettings::from_stored`], which keep every key they can
//! read and drop (with a warning) what they cannot, so an old row never makes a repository
//! unusable.

use serde::{Deserialize, Deserializer, Serialize};

use crate::policy::{Policy, PolicyConfig};
use crate::{Error, Result};

/// The largest settings object accepted, serialized.
const MAX_SETTINGS_BYTES: usize = 64 * 1024;

/// The longest trigger label accepted (GitHub's own limit on label names).
pub(crate) const MAX_LABEL_CHARS: usize = 50;

/// The `triggers` member of a settings object: each key optional, so a repository's value wins
/// over its organization's, which wins over the default (see
/// [`crate::github::TriggerSettings::resolve`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TriggerOverrides {
    /// The label that starts a job: absent inherits, `null` turns label triggers off.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub label: Option<Option<String>>,
    /// Whether assigning an issue to the App's bot user starts a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<bool>,
    /// Whether `/aicd run|cancel|retry` comments are obeyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<bool>,
    /// Whether triggers from bot accounts (`<name>[bot]`) are obeyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bots: Option<bool>,
}

/// Tells a `null` from an absent key: a present value (even `null`) is `Some`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(deserializer).map(Some)
}

impl TriggerOverrides {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Checks a label that is set: not blank, at most 50 characters, no control characters.
    fn validate(&self) -> Result<()> {
        if let Some(Some(label)) = &self.label {
            check_label(label)?;
        }
        Ok(())
    }
}

/// Checks a trigger label: not blank, at most 50 characters, no control characters.
pub(crate) fn check_label(label: &str) -> Result<&str> {
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

/// An organization's settings: defaults its repositories inherit.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OrgSettings {
    /// Trigger defaults.
    #[serde(default, skip_serializing_if = "TriggerOverrides::is_empty")]
    pub triggers: TriggerOverrides,
    /// Policy for every repository of the organization, merged over the deployment's defaults;
    /// a repository's settings and `.aicd.toml` can add protected paths, test paths and secret
    /// detectors but never remove these (see [`PolicyConfig::merge`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub policy: Option<PolicyConfig>,
    /// Set when a stored `policy` could not be read: the policy gate then refuses to pass any
    /// change of the organization rather than check it against less than it asked for.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub(crate) policy_unreadable: bool,
}

/// A repository's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RepoSettings {
    /// Triggers, over the organization's.
    #[serde(default, skip_serializing_if = "TriggerOverrides::is_empty")]
    pub triggers: TriggerOverrides,
    /// Policy settings merged over the organization's defaults, under the repository's own
    /// `.aicd.toml` (see [`PolicyConfig`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub policy: Option<PolicyConfig>,
    /// Set when a stored `policy` could not be read: the policy gate then refuses to pass any
    /// change rather than check it against less than the repository asked for.
    #[serde(skip)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub(crate) policy_unreadable: bool,
}

/// Reads a settings object from the API: a JSON object of at most 64 KiB with only known keys.
fn parse_object<T: for<'de> Deserialize<'de>>(value: serde_json::Value) -> Result<T> {
    if !value.is_object() {
        return Err(Error::invalid("settings must be a JSON object"));
    }
    if value.to_string().len() > MAX_SETTINGS_BYTES {
        return Err(Error::invalid("settings must be at most 64 KiB"));
    }
    // serde would read a struct from an array too; a member is an object or absent.
    if let Some((key, _)) = value.as_object().into_iter().flatten().find(|(_, member)| member.is_array()) {
        return Err(Error::invalid(format!("settings.{key} must be a JSON object")));
    }
    if let Some(policy) = value.get("policy").filter(|p| !p.is_null()) {
        check_policy(policy)?;
    }
    serde_json::from_value(value).map_err(|e| Error::invalid(format!("invalid settings: {e}")))
}

/// Checks a `policy` member key by key, as `.aicd.toml`'s `[policy]` is read and then compiled,
/// so the message names the field that is unknown, of the wrong type, or holds a glob or
/// pattern that does not compile.
fn check_policy(policy: &serde_json::Value) -> Result<()> {
    let Some(object) = policy.as_object() else {
        return Err(Error::invalid("settings.policy must be a JSON object"));
    };
    for (key, value) in object {
        let field = serde_json::Value::Object(serde_json::Map::from_iter([(key.clone(), value.clone())]));
        let invalid = |e: &dyn std::fmt::Display| Error::invalid(format!("settings.policy.{key}: {e}"));
        let config: PolicyConfig = serde_json::from_value(field).map_err(|e| invalid(&e))?;
        Policy::from_config(&config).map_err(|e| invalid(&e))?;
    }
    Ok(())
}

/// A stored `triggers` member, read key by key: an unknown key is ignored, and a key that cannot
/// be read turns its trigger off (fails closed) rather than falling back to a default that might
/// turn on what the repository turned off. A member that is not an object turns every trigger
/// off.
fn stored_triggers(value: &serde_json::Value) -> TriggerOverrides {
    let Some(member) = value.get("triggers") else { return TriggerOverrides::default() };
    let off = TriggerOverrides { label: Some(None), assignment: Some(false), commands: Some(false), bots: Some(false) };
    let Some(object) = member.as_object() else {
        tracing::warn!("stored trigger settings are not an object; every trigger is off until they are set again");
        return off;
    };
    let mut triggers = TriggerOverrides::default();
    for (key, value) in object {
        let unreadable =
            |key: &str| tracing::warn!(key, "a stored trigger setting cannot be read; that trigger is off");
        match key.as_str() {
            "label" => {
                triggers.label = Some(match value {
                    serde_json::Value::String(label) if check_label(label).is_ok() => Some(label.clone()),
                    serde_json::Value::Null => None,
                    _ => {
                        unreadable(key);
                        None
                    }
                });
            }
            "assignment" | "commands" | "bots" => {
                let flag = value.as_bool().unwrap_or_else(|| {
                    unreadable(key);
                    false
                });
                match key.as_str() {
                    "assignment" => triggers.assignment = Some(flag),
                    "commands" => triggers.commands = Some(flag),
                    _ => triggers.bots = Some(flag),
                }
            }
            _ => tracing::warn!(key, "an unknown stored trigger setting is ignored"),
        }
    }
    triggers
}

/// A stored `policy` member and whether one was there but could not be read (the policy gate
/// then fails closed).
fn stored_policy(value: &serde_json::Value) -> (Option<PolicyConfig>, bool) {
    let policy = stored_member(value, "policy");
    let unreadable = policy.is_none() && value.get("policy").is_some_and(|p| !p.is_null());
    (policy, unreadable)
}

/// One member of a stored settings object, if it reads as `T`; dropped with a warning otherwise.
fn stored_member<T: for<'de> Deserialize<'de>>(value: &serde_json::Value, key: &str) -> Option<T> {
    let member = value.get(key)?;
    match serde_json::from_value(member.clone()) {
        Ok(read) => Some(read),
        Err(error) => {
            tracing::warn!(key, %error, "a stored setting cannot be read; it is ignored");
            None
        }
    }
}

impl OrgSettings {
    /// Settings given to the API: a JSON object of at most 64 KiB whose members are known and
    /// valid (a `policy` is read as the `[policy]` table of `.aicd.toml` is, and must compile).
    /// [`Error::InvalidInput`] says which is not, naming the field.
    pub fn parse(value: serde_json::Value) -> Result<Self> {
        let settings: Self = parse_object(value)?;
        settings.triggers.validate()?;
        Ok(settings)
    }

    /// Settings as stored: what can be read of them (never fails). Both fail closed: a trigger
    /// setting that cannot be read turns that trigger off, and an unreadable policy makes the
    /// policy gate refuse every change of the organization.
    pub fn from_stored(value: &serde_json::Value) -> Self {
        let (policy, policy_unreadable) = stored_policy(value);
        Self { triggers: stored_triggers(value), policy, policy_unreadable }
    }

    /// The JSON object they are stored and shown as.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}))
    }
}

impl RepoSettings {
    /// Settings given to the API: a JSON object of at most 64 KiB whose members are known and
    /// valid (a `policy` is read as the `[policy]` table of `.aicd.toml` is, and must compile).
    /// [`Error::InvalidInput`] says which is not, naming the field.
    pub fn parse(value: serde_json::Value) -> Result<Self> {
        let settings: Self = parse_object(value)?;
        settings.triggers.validate()?;
        Ok(settings)
    }

    /// Settings as stored: what can be read of them (never fails). Both fail closed: a trigger
    /// setting that cannot be read turns that trigger off, and an unreadable policy makes the
    /// policy gate refuse every change.
    pub fn from_stored(value: &serde_json::Value) -> Self {
        let (policy, policy_unreadable) = stored_policy(value);
        Self { triggers: stored_triggers(value), policy, policy_unreadable }
    }

    /// The JSON object they are stored and shown as.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::json!({}))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn known_settings_parse_and_round_trip() {
        let value = json!({
            "triggers": { "label": "ready for AI 🤖", "assignment": false, "commands": true, "bots": true },
            "policy": { "max_files": 3 }
        });
        let settings = RepoSettings::parse(value.clone()).unwrap();
        assert_eq!(settings.triggers.label, Some(Some("ready for AI 🤖".into())));
        assert_eq!(settings.policy.as_ref().and_then(|p| p.max_files), Some(3));
        assert_eq!(settings.to_json(), value);
        // A null label is kept apart from an absent one.
        let off = RepoSettings::parse(json!({ "triggers": { "label": null } })).unwrap();
        assert_eq!(off.triggers.label, Some(None));
        assert_eq!(off.to_json(), json!({ "triggers": { "label": null } }));
        assert_eq!(RepoSettings::parse(json!({})).unwrap().to_json(), json!({}));
        assert_eq!(OrgSettings::parse(json!({ "triggers": {} })).unwrap(), OrgSettings::default());
    }

    #[test]
    fn unknown_or_invalid_settings_are_refused_at_the_door() {
        for bad in [
            json!([1]),
            json!("x"),
            json!({ "colour": "red" }),
            json!({ "triggers": null }),
            json!({ "triggers": [] }),
            json!({ "policy": [] }),
            json!({ "triggers": { "label": "" } }),
            json!({ "triggers": { "label": "   " } }),
            json!({ "triggers": { "label": "x".repeat(51) } }),
            json!({ "triggers": { "label": "a\nb" } }),
            json!({ "triggers": { "label": 1 } }),
            json!({ "triggers": { "assignment": "yes" } }),
            json!({ "triggers": { "labels": ["aicd"] } }),
            json!({ "policy": { "max_files": "many" } }),
            json!({ "policy": { "colour": 1 } }),
            json!({ "padding": "x".repeat(70 * 1024) }),
        ] {
            assert!(matches!(RepoSettings::parse(bad.clone()), Err(Error::InvalidInput(_))), "{bad}");
        }
        assert!(matches!(OrgSettings::parse(json!({ "colour": "red" })), Err(Error::InvalidInput(_))));
    }

    #[test]
    fn stored_settings_keep_what_can_be_read() {
        let stored =
            json!({ "triggers": { "label": 7, "commands": false }, "policy": { "max_files": 2 }, "old": true });
        let settings = RepoSettings::from_stored(&stored);
        // The unreadable label is off (not the default label); the readable key is kept.
        assert_eq!(
            settings.triggers,
            TriggerOverrides { label: Some(None), commands: Some(false), ..Default::default() }
        );
        let odd = RepoSettings::from_stored(&json!({ "triggers": { "assignment": "no", "future": 1, "bots": true } }));
        assert_eq!(odd.triggers, TriggerOverrides { assignment: Some(false), bots: Some(true), ..Default::default() });
        let broken = OrgSettings::from_stored(&json!({ "triggers": [1] }));
        assert_eq!((broken.triggers.label.clone(), broken.triggers.commands), (Some(None), Some(false)));
        assert!(!settings.policy_unreadable);
        assert_eq!(settings.policy.and_then(|p| p.max_files), Some(2));
        let broken = RepoSettings::from_stored(&json!({ "policy": { "max_files": "many" } }));
        assert!(broken.policy.is_none() && broken.policy_unreadable, "an unreadable policy fails closed");
        assert_eq!(OrgSettings::from_stored(&json!([1, 2])), OrgSettings::default());
        let org = OrgSettings::from_stored(&json!({ "triggers": { "label": "ship" } }));
        assert_eq!(org.triggers.label, Some(Some("ship".into())));
    }

    fn refusal(result: Result<impl std::fmt::Debug>) -> String {
        match result {
            Err(Error::InvalidInput(message)) => message,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn org_policy_is_read_and_shown() {
        let value = json!({ "policy": { "protected_paths": ["deploy/**"], "max_files": 20 } });
        let settings = OrgSettings::parse(value.clone()).unwrap();
        let policy = settings.policy.clone().unwrap();
        assert_eq!(policy.protected_paths, Some(vec!["deploy/**".to_owned()]));
        assert_eq!(policy.max_files, Some(20));
        assert_eq!(settings.to_json(), value);
        assert_eq!(OrgSettings::from_stored(&value), settings);
        assert_eq!(OrgSettings::parse(json!({ "policy": null })).unwrap(), OrgSettings::default());
        let broken = OrgSettings::from_stored(&json!({ "policy": { "max_files": "many" } }));
        assert!(broken.policy.is_none() && broken.policy_unreadable, "an unreadable policy fails closed");
    }

    #[test]
    fn invalid_policy_settings_are_refused_naming_the_field() {
        for (policy, field) in [
            (json!({ "max_file": 3 }), "settings.policy.max_file"),
            (json!({ "max_files": "many" }), "settings.policy.max_files"),
            (json!({ "max_bytes": -1 }), "settings.policy.max_bytes"),
            (json!({ "allow_binary": "yes" }), "settings.policy.allow_binary"),
            (json!({ "protected_paths": "deploy/**" }), "settings.policy.protected_paths"),
            (json!({ "protected_paths": ["ok/**", "bad/[z-"] }), "settings.policy.protected_paths"),
            (json!({ "test_paths": ["[z-"] }), "settings.policy.test_paths"),
            (json!({ "secret_patterns": ["(unclosed"] }), "settings.policy.secret_patterns"),
            (json!("deploy/**"), "settings.policy"),
        ] {
            let org = refusal(OrgSettings::parse(json!({ "policy": policy.clone() })));
            assert!(org.starts_with(field), "{policy}: {org}");
            let repo = refusal(RepoSettings::parse(json!({ "policy": policy.clone() })));
            assert!(repo.starts_with(field), "{policy}: {repo}");
        }
    }
}
