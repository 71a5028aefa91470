//! Repositories registered with an organization: a GitHub repository reached through an App
//! installation, or a git repository on the local disk (the embedded default's forge).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::github::{GithubRepoId, InstallationId};
use crate::settings::RepoSettings;
use crate::{Error, OrgId, RepoId, Result};

/// Where a repository lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RepoSource {
    /// A GitHub repository reached through an App installation.
    Github {
        /// The App installation that grants access.
        installation_id: InstallationId,
        /// GitHub's numeric repository id (stable across renames).
        repo_id: GithubRepoId,
    },
    /// A git repository on this machine's disk.
    Local {
        /// Absolute path of the repository.
        path: String,
    },
}

impl RepoSource {
    /// `github` or `local`.
    pub fn kind(&self) -> &'static str {
        match self {
            RepoSource::Github { .. } => "github",
            RepoSource::Local { .. } => "local",
        }
    }
}

/// A repository registered with an organization.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Repository {
    /// Its identifier.
    pub id: RepoId,
    /// The organization it belongs to.
    pub org_id: OrgId,
    /// `owner/name` on GitHub; a chosen name for local repositories. Unique within the org.
    pub full_name: String,
    /// Where it lives.
    pub source: RepoSource,
    /// The branch pull requests target.
    pub default_branch: String,
    /// Policy and trigger settings.
    pub settings: RepoSettings,
    /// When it was detached from GitHub: its installation was unlinked, or no longer grants
    /// access to it. A detached repository keeps its jobs' history; nothing reaches GitHub for it
    /// until an installation that covers it is linked again, which reattaches it. `None` for a
    /// repository in use (and for local ones).
    pub detached_at: Option<DateTime<Utc>>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What is needed to register a repository.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewRepo {
    /// `owner/name` (1 to 200 characters).
    pub full_name: String,
    /// Where it lives.
    pub source: RepoSource,
    /// The branch pull requests target (default `main`).
    pub default_branch: Option<String>,
    /// Policy and trigger settings: a JSON object of at most 64 KiB read as [`RepoSettings`]
    /// (unknown keys refused; default `{}`).
    pub settings: Option<serde_json::Value>,
}

/// A change to a repository; absent fields are left as they are.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RepoPatch {
    /// A new target branch.
    pub default_branch: Option<String>,
    /// New settings, replacing the old (a JSON object).
    pub settings: Option<serde_json::Value>,
}

impl NewRepo {
    /// Checks every field and fills in defaults.
    pub fn validate(mut self) -> Result<Self> {
        self.full_name = validate_full_name(&self.full_name)?;
        if let RepoSource::Local { path } = &self.source
            && (!path.starts_with('/') || path.split('/').any(|c| c == "..") || path.contains('\0'))
        {
            return Err(Error::invalid("source.path must be an absolute path without `..`"));
        }
        self.default_branch = Some(validate_branch(self.default_branch.as_deref().unwrap_or("main"))?);
        self.settings = Some(validate_settings(self.settings.take())?);
        Ok(self)
    }
}

impl RepoPatch {
    /// Checks the fields that are present.
    pub fn validate(self) -> Result<Self> {
        Ok(Self {
            default_branch: self.default_branch.as_deref().map(validate_branch).transpose()?,
            settings: self.settings.map(|s| validate_settings(Some(s))).transpose()?,
        })
    }
}

fn validate_full_name(name: &str) -> Result<String> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && !name.split('/').any(|part| part.is_empty() || part == "." || part == "..");
    if ok {
        Ok(name.to_owned())
    } else {
        Err(Error::invalid("full_name must look like `owner/name` (letters, digits, `-`, `_`, `.`)"))
    }
}

fn validate_branch(branch: &str) -> Result<String> {
    BranchName::parse(branch).map(BranchName::into_string)
}

/// A branch name valid by git's rules for branch names (`git check-ref-format --branch`): what a
/// repository's default branch and every forge's branches must be (see
/// [`crate::forge::rules::check_branch_name`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BranchName(String);

impl BranchName {
    /// `name` if it is a valid branch name: 1 to 255 bytes, not `@` or `HEAD`, not starting with
    /// `-` or `/`, not ending with `/` or `.`, without `..`, `@{`, `//`, a component that starts
    /// with `.` or ends with `.lock`, a control character, a space or any of `~^:?*[\`.
    /// [`Error::InvalidInput`] otherwise.
    pub fn parse(name: &str) -> Result<Self> {
        let ok = !name.is_empty()
            && name.len() <= 255
            && name != "@"
            && name != "HEAD"
            && !name.starts_with(['-', '/'])
            && !name.ends_with(['/', '.'])
            && !name.contains("..")
            && !name.contains("@{")
            && !name.contains("//")
            && !name.split('/').any(|part| part.starts_with('.') || part.ends_with(".lock"))
            && !name.chars().any(|c| c.is_control() || " ~^:?*[\\".contains(c));
        if ok { Ok(Self(name.to_owned())) } else { Err(Error::invalid(format!("`{name}` is not a valid branch name"))) }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for BranchName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a repository's settings ([`RepoSettings::parse`]) and returns them in their stored form;
/// `{}` when absent.
pub(crate) fn validate_settings(settings: Option<serde_json::Value>) -> Result<serde_json::Value> {
    match settings {
        None => Ok(serde_json::json!({})),
        Some(value) => Ok(RepoSettings::parse(value)?.to_json()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> NewRepo {
        NewRepo {
            full_name: name.into(),
            source: RepoSource::Github {
                installation_id: InstallationId::new(1).unwrap(),
                repo_id: GithubRepoId::new(2).unwrap(),
            },
            default_branch: None,
            settings: None,
        }
    }

    #[test]
    fn accepts_owner_slash_name_and_fills_defaults() {
        let r = repo(" octo/hello-world.rs ").validate().unwrap();
        assert_eq!(r.full_name, "octo/hello-world.rs");
        assert_eq!(r.default_branch.as_deref(), Some("main"));
        assert_eq!(r.settings, Some(serde_json::json!({})));
    }

    #[test]
    fn rejects_bad_names_branches_paths_and_settings() {
        for bad in ["", "/", "a//b", "../x", "a b", "a/..", &"x".repeat(201)] {
            assert!(repo(bad).validate().is_err(), "{bad:?}");
        }
        for bad in ["bad..branch", "a//b", ".hidden", "x.lock", "HEAD", "-x"] {
            let mut r = repo("a/b");
            r.default_branch = Some(bad.into());
            assert!(r.validate().is_err(), "{bad}");
        }
        let mut r = repo("a/b");
        r.settings = Some(serde_json::json!([1]));
        assert!(r.validate().is_err());
        let mut r = repo("a/b");
        r.settings = Some(serde_json::json!({ "triggers": { "label": "" } }));
        assert!(matches!(r.validate(), Err(Error::InvalidInput(_))));
        let patch =
            RepoPatch { settings: Some(serde_json::json!({ "triggers": { "colour": 1 } })), ..Default::default() };
        assert!(matches!(patch.validate(), Err(Error::InvalidInput(_))));
        let patch = RepoPatch { settings: Some(serde_json::json!({ "colour": 1 })), ..Default::default() };
        assert!(matches!(patch.validate(), Err(Error::InvalidInput(_))));
        let patch =
            RepoPatch { settings: Some(serde_json::json!({ "triggers": { "label": null } })), ..Default::default() };
        assert!(patch.validate().is_ok());
        let mut r = repo("a/b");
        r.source = RepoSource::Local { path: "relative/path".into() };
        assert!(r.validate().is_err());
    }
}
