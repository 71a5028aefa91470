//! Tenancy: organizations, users, memberships and roles, API keys, and the authorization table.

mod api_keys;
mod authz;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use api_keys::{ApiKey, ApiKeySecret, GeneratedKey, KEY_PREFIX, NewApiKey, ParsedKey};
pub use authz::{Actor, PERMISSIONS, Permission, Principal, authorize};

use crate::settings::OrgSettings;
use crate::{Error, OrgId, Result, UserId};

/// A member's role within one organization. Roles are ordered: each grants everything the one
/// before it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads the organization's repositories, jobs and usage.
    Viewer,
    /// A viewer who can also start, cancel and retry jobs.
    Developer,
    /// Everything, including members, API keys, repositories and the organization itself.
    OrgAdmin,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Developer, Role::OrgAdmin];

    /// The stable name stored in the database and used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::OrgAdmin => "org_admin",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown role `{s}` (expected viewer, developer or org_admin)")))
    }
}

/// An organization: the unit of tenancy, billing and isolation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Org {
    /// Its identifier.
    pub id: OrgId,
    /// Its display name.
    pub name: String,
    /// How many of its jobs may run at once.
    pub max_concurrent_jobs: u32,
    /// Settings its repositories inherit key by key, for instance the default `triggers`:
    /// `{"label": "aicd" | null, "assignment": true, "commands": true, "bots": false}`.
    pub settings: OrgSettings,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was last changed.
    pub updated_at: DateTime<Utc>,
}

/// What is needed to create an organization.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewOrg {
    /// Its display name (1 to 100 characters, not blank).
    pub name: String,
    /// How many of its jobs may run at once (default 4).
    pub max_concurrent_jobs: Option<u32>,
    /// Settings its repositories inherit: a JSON object of at most 64 KiB read as
    /// [`OrgSettings`] (unknown keys refused; default `{}`).
    pub settings: Option<serde_json::Value>,
}

/// A change to an organization; absent fields are left as they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrgPatch {
    /// A new display name.
    pub name: Option<String>,
    /// A new concurrency limit (1 to 1000).
    pub max_concurrent_jobs: Option<u32>,
    /// New settings, replacing the old (a JSON object of at most 64 KiB).
    pub settings: Option<serde_json::Value>,
}

/// Checks an organization's settings ([`OrgSettings::parse`]) and returns them in their stored
/// form; `{}` when absent.
fn validate_org_settings(settings: Option<serde_json::Value>) -> Result<serde_json::Value> {
    match settings {
        None => Ok(serde_json::json!({})),
        Some(value) => Ok(OrgSettings::parse(value)?.to_json()),
    }
}

/// Default concurrency limit of a new organization.
pub const DEFAULT_MAX_CONCURRENT_JOBS: u32 = 4;

impl NewOrg {
    /// Checks the fields and returns them normalized, defaults filled in: the name, the
    /// concurrency limit and the settings.
    pub fn validate(self) -> Result<(String, u32, serde_json::Value)> {
        let name = validate_name("organization name", &self.name)?;
        let limit = validate_limit(self.max_concurrent_jobs.unwrap_or(DEFAULT_MAX_CONCURRENT_JOBS))?;
        let settings = validate_org_settings(self.settings)?;
        Ok((name, limit, settings))
    }
}

impl OrgPatch {
    /// Checks the fields that are present.
    pub fn validate(self) -> Result<Self> {
        Ok(Self {
            name: self.name.as_deref().map(|n| validate_name("organization name", n)).transpose()?,
            max_concurrent_jobs: self.max_concurrent_jobs.map(validate_limit).transpose()?,
            settings: self.settings.map(|s| validate_org_settings(Some(s))).transpose()?,
        })
    }
}

fn validate_limit(limit: u32) -> Result<u32> {
    if (1..=1000).contains(&limit) {
        Ok(limit)
    } else {
        Err(Error::invalid("max_concurrent_jobs must be between 1 and 1000"))
    }
}

/// Trims a display name and checks it is 1 to 100 printable characters.
pub(crate) fn validate_name(what: &str, name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} must not be blank")));
    }
    if name.chars().count() > 100 {
        return Err(Error::invalid(format!("{what} must be at most 100 characters")));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(format!("{what} must not contain control characters")));
    }
    Ok(name.to_owned())
}

/// A person, known by the subject of the OAuth provider's tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    /// Its identifier.
    pub id: UserId,
    /// The identity provider's subject (`iss` and `sub`), unique.
    pub subject: String,
    /// The e-mail address the provider reported, if any.
    pub email: Option<String>,
    /// The display name the provider reported, if any.
    pub name: Option<String>,
    /// When the user was first seen.
    pub created_at: DateTime<Utc>,
}

/// What the identity provider says about a user; used to create it on first sight.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NewUser {
    /// The provider's subject (unique, not blank).
    pub subject: String,
    /// The e-mail address, if any.
    pub email: Option<String>,
    /// The display name, if any.
    pub name: Option<String>,
}

/// A user's role in an organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Membership {
    /// The organization.
    pub org_id: OrgId,
    /// The member.
    pub user_id: UserId,
    /// The member's role there.
    pub role: Role,
    /// When the membership began.
    pub created_at: DateTime<Utc>,
}
