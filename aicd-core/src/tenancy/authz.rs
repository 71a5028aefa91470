//! Who may do what: the actor of every tenant-scoped call, and the one role -> permission table.

use serde::{Deserialize, Serialize};

use super::Role;
use crate::{ApiKeyId, Error, OrgId, Result, UserId};

/// Who is acting, authenticated at the edge: the organization they act in and their role there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The user or program behind the call.
    pub principal: Principal,
    /// The organization the actor acts in.
    pub org_id: OrgId,
    /// The actor's role in that organization.
    pub role: Role,
}

/// The identity behind an [`Actor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Principal {
    /// A person signed in through the identity provider.
    User(UserId),
    /// A program using an API key.
    ApiKey(ApiKeyId),
}

impl Principal {
    /// A short stable label for timelines and logs, such as `user:<uuid>`.
    pub fn label(&self) -> String {
        match self {
            Principal::User(id) => format!("user:{id}"),
            Principal::ApiKey(id) => format!("api_key:{id}"),
        }
    }

    /// The user behind the principal, if it is one.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Principal::User(id) => Some(*id),
            Principal::ApiKey(_) => None,
        }
    }
}

impl Actor {
    /// An actor for a user acting in `org_id` with `role`.
    pub fn user(user_id: UserId, org_id: OrgId, role: Role) -> Self {
        Self { principal: Principal::User(user_id), org_id, role }
    }

    /// An actor for an API key of `org_id` carrying `role`.
    pub fn api_key(key_id: ApiKeyId, org_id: OrgId, role: Role) -> Self {
        Self { principal: Principal::ApiKey(key_id), org_id, role }
    }
}

/// Something an actor may be allowed to do within its organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Permission {
    /// Read the organization's settings.
    OrgRead,
    /// Change the organization's settings.
    OrgUpdate,
    /// Delete the organization and everything in it.
    OrgDelete,
    /// List members and their roles.
    MemberRead,
    /// Add, change and remove members.
    MemberManage,
    /// List API keys (never their secrets).
    ApiKeyRead,
    /// Create and revoke API keys.
    ApiKeyManage,
    /// Read repositories and their settings.
    RepoRead,
    /// Register, change and remove repositories.
    RepoManage,
    /// Read jobs, their events and diffs.
    JobRead,
    /// Start jobs.
    JobCreate,
    /// Cancel jobs.
    JobCancel,
    /// Retry failed jobs.
    JobRetry,
    /// Delete finished jobs.
    JobDelete,
    /// Read usage and cost.
    UsageRead,
    /// See and manage the organization's billing: plan, spend cap, the provider's portal.
    BillingManage,
    /// Link and unlink GitHub App installations (which decide whose repositories and events the
    /// organization receives).
    IntegrationManage,
}

/// The authorization table: each permission and the lowest role that holds it. Roles are ordered,
/// so a role holds every permission whose minimum is at or below it. Anything not listed is
/// denied.
pub const PERMISSIONS: &[(Permission, Role)] = &[
    (Permission::OrgRead, Role::Viewer),
    (Permission::MemberRead, Role::Viewer),
    (Permission::RepoRead, Role::Viewer),
    (Permission::JobRead, Role::Viewer),
    (Permission::UsageRead, Role::Viewer),
    (Permission::JobCreate, Role::Developer),
    (Permission::JobCancel, Role::Developer),
    (Permission::JobRetry, Role::Developer),
    (Permission::OrgUpdate, Role::OrgAdmin),
    (Permission::OrgDelete, Role::OrgAdmin),
    (Permission::MemberManage, Role::OrgAdmin),
    (Permission::BillingManage, Role::OrgAdmin),
    (Permission::ApiKeyRead, Role::OrgAdmin),
    (Permission::ApiKeyManage, Role::OrgAdmin),
    (Permission::RepoManage, Role::OrgAdmin),
    (Permission::JobDelete, Role::OrgAdmin),
    (Permission::IntegrationManage, Role::OrgAdmin),
];

impl Permission {
    /// Every permission in the table.
    pub fn all() -> impl Iterator<Item = Permission> {
        PERMISSIONS.iter().map(|(p, _)| *p)
    }

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::OrgRead => "org_read",
            Permission::OrgUpdate => "org_update",
            Permission::OrgDelete => "org_delete",
            Permission::MemberRead => "member_read",
            Permission::MemberManage => "member_manage",
            Permission::ApiKeyRead => "api_key_read",
            Permission::ApiKeyManage => "api_key_manage",
            Permission::RepoRead => "repo_read",
            Permission::RepoManage => "repo_manage",
            Permission::JobRead => "job_read",
            Permission::JobCreate => "job_create",
            Permission::JobCancel => "job_cancel",
            Permission::JobRetry => "job_retry",
            Permission::JobDelete => "job_delete",
            Permission::UsageRead => "usage_read",
            Permission::BillingManage => "billing_manage",
            Permission::IntegrationManage => "integration_manage",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Role {
    /// Whether this role holds `permission` (deny by default: a permission missing from the
    /// table is held by nobody).
    pub fn allows(self, permission: Permission) -> bool {
        PERMISSIONS.iter().find(|(p, _)| *p == permission).is_some_and(|(_, min)| self >= *min)
    }
}

/// Checks that `actor` may exercise `permission` in `org_id`.
///
/// An actor of another organization gets [`Error::NotFound`] (the resource does not exist as far
/// as it can tell); a member whose role is too low gets [`Error::Forbidden`].
pub fn authorize(actor: &Actor, org_id: OrgId, permission: Permission) -> Result<()> {
    if actor.org_id != org_id {
        return Err(Error::not_found("organization"));
    }
    if !actor.role.allows(permission) {
        return Err(Error::Forbidden { permission });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The expected matrix, written out by hand rather than derived from the table.
    fn expected(role: Role, permission: Permission) -> bool {
        use Permission::*;
        let viewer = [OrgRead, MemberRead, RepoRead, JobRead, UsageRead];
        let developer = [JobCreate, JobCancel, JobRetry];
        match role {
            Role::Viewer => viewer.contains(&permission),
            Role::Developer => viewer.contains(&permission) || developer.contains(&permission),
            Role::OrgAdmin => true,
        }
    }

    #[test]
    fn the_role_table_matches_the_expected_matrix() {
        assert_eq!(Permission::all().count(), 17, "every permission is in the table");
        for role in Role::ALL {
            for permission in Permission::all() {
                assert_eq!(role.allows(permission), expected(role, permission), "{role} {permission}");
            }
        }
    }

    #[test]
    fn another_orgs_actor_gets_not_found_and_a_low_role_gets_forbidden() {
        let org = OrgId::new();
        let viewer = Actor::user(UserId::new(), org, Role::Viewer);
        assert!(authorize(&viewer, org, Permission::JobRead).is_ok());
        assert!(matches!(authorize(&viewer, org, Permission::JobCreate), Err(Error::Forbidden { .. })));
        let admin_elsewhere = Actor::user(UserId::new(), OrgId::new(), Role::OrgAdmin);
        assert!(matches!(authorize(&admin_elsewhere, org, Permission::OrgRead), Err(Error::NotFound { .. })));
    }

    #[test]
    fn permission_names_are_unique() {
        let mut names: Vec<_> = Permission::all().map(Permission::as_str).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PERMISSIONS.len());
    }
}
