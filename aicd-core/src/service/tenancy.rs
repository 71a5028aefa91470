//! Organizations, members, API keys, and turning credentials into an [`Actor`].

use crate::store::{ApiKeyRecord, now};
use crate::tenancy::{
    Actor, ApiKey, ApiKeySecret, GeneratedKey, Membership, NewApiKey, NewOrg, NewUser, Org, OrgPatch, ParsedKey,
    Permission, Role, User, validate_name,
};
use crate::{ApiKeyId, Core, Error, OrgId, Result, UserId};

/// How out of date an API key's recorded last use may be: it is written at most this often
/// per key (and per process).
pub const KEY_USE_RESOLUTION: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// When this process last recorded each key's use.
#[derive(Debug, Default)]
pub(crate) struct KeyUses(std::sync::Mutex<std::collections::HashMap<ApiKeyId, chrono::DateTime<chrono::Utc>>>);

impl KeyUses {
    /// Whether this process should record `key`'s use at `at` (it has not within
    /// [`KEY_USE_RESOLUTION`]); if so, it is counted as recorded.
    fn claim(&self, key: ApiKeyId, at: chrono::DateTime<chrono::Utc>) -> bool {
        let mut uses = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if uses.get(&key).is_some_and(|last| at - *last < KEY_USE_RESOLUTION) {
            return false;
        }
        if uses.len() >= 10_000 {
            uses.retain(|_, last| at - *last < KEY_USE_RESOLUTION);
        }
        uses.insert(key, at);
        true
    }
}

impl Core {
    /// Turns a presented API key into the actor it stands for. Malformed, unknown, revoked and
    /// expired keys are all [`Error::Unauthenticated`] (the reason is not revealed to the caller).
    /// Records the key's last use, to within [`KEY_USE_RESOLUTION`], in the background: a
    /// request never waits for (or queues behind) that write.
    pub async fn authenticate_api_key(&self, presented: &ApiKeySecret) -> Result<Actor> {
        let parsed = ParsedKey::parse(presented).ok_or(Error::Unauthenticated("invalid API key"))?;
        let candidates = self.store.find_api_keys_by_prefix(&parsed.prefix).await?;
        let at = now();
        let stored = candidates
            .into_iter()
            .find(|c| parsed.matches(&c.hash))
            .ok_or(Error::Unauthenticated("invalid API key"))?;
        if !stored.key.is_usable(at) {
            return Err(Error::Unauthenticated("invalid API key"));
        }
        let stale = stored.key.last_used_at.is_none_or(|last| at - last >= KEY_USE_RESOLUTION);
        if stale && self.key_uses.claim(stored.key.id, at) {
            let (store, key) = (self.store.clone(), stored.key.clone());
            tokio::spawn(async move {
                if let Err(error) = store.touch_api_key(&key, at).await {
                    tracing::warn!(key_id = %key.id, %error, "could not record an API key's last use");
                }
            });
        }
        Ok(Actor::api_key(stored.key.id, stored.key.org_id, stored.key.role))
    }

    /// Returns the user for an identity provider subject, creating it on first sight.
    pub async fn sign_in(&self, user: NewUser) -> Result<User> {
        self.store.upsert_user(user).await
    }

    /// The actor for `user` acting in `org`; [`Error::NotFound`] if the user is not a member.
    pub async fn user_actor(&self, user: UserId, org: OrgId) -> Result<Actor> {
        let membership = self.store.get_membership(org, user).await?.ok_or(Error::not_found("organization"))?;
        Ok(Actor::user(user, org, membership.role))
    }

    /// Creates an organization whose first org_admin is `creator`.
    pub async fn create_org(&self, creator: UserId, org: NewOrg) -> Result<Org> {
        let limits = &self.options.limits;
        self.check_concurrency_limit(org.max_concurrent_jobs)?;
        let administered =
            self.store.list_orgs_of_user(creator).await?.iter().filter(|(_, role)| *role == Role::OrgAdmin).count();
        if administered >= usize::try_from(limits.max_orgs_per_user).unwrap_or(usize::MAX) {
            return Err(Error::Conflict(format!(
                "you administer {administered} organizations, this deployment's limit ({})",
                limits.max_orgs_per_user
            )));
        }
        self.store.create_org(org, Some(creator)).await
    }

    /// Refuses a concurrency limit above the operator's.
    fn check_concurrency_limit(&self, requested: Option<u32>) -> Result<()> {
        let cap = self.options.limits.max_concurrent_jobs;
        match requested {
            Some(n) if n > cap => {
                Err(Error::invalid(format!("max_concurrent_jobs must be at most {cap}, this deployment's limit")))
            }
            _ => Ok(()),
        }
    }

    /// Creates an organization with a first org_admin API key, for a self-hoster without an
    /// identity provider. The secret is returned once and never stored.
    pub async fn bootstrap_org(&self, org: NewOrg) -> Result<(Org, ApiKey, ApiKeySecret)> {
        let org = self.store.create_org(org, None).await?;
        let generated = GeneratedKey::generate()?;
        let record = ApiKeyRecord {
            name: "bootstrap".into(),
            role: Role::OrgAdmin,
            prefix: generated.prefix,
            hash: generated.hash.to_vec(),
            created_by: None,
            expires_at: None,
        };
        let key = self.store.insert_api_key(org.id, record).await?;
        Ok((org, key, generated.secret))
    }

    /// The organizations `user` belongs to, with its role in each.
    pub async fn list_orgs(&self, user: UserId) -> Result<Vec<(Org, Role)>> {
        self.store.list_orgs_of_user(user).await
    }

    /// Reads an organization.
    pub async fn get_org(&self, actor: &Actor, org: OrgId) -> Result<Org> {
        self.authorize(actor, org, Permission::OrgRead)?;
        self.store.get_org(org).await
    }

    /// Changes an organization's settings.
    pub async fn update_org(&self, actor: &Actor, org: OrgId, patch: OrgPatch) -> Result<Org> {
        self.authorize(actor, org, Permission::OrgUpdate)?;
        self.check_concurrency_limit(patch.max_concurrent_jobs)?;
        self.store.update_org(org, patch).await
    }

    /// Deletes an organization and everything in it.
    pub async fn delete_org(&self, actor: &Actor, org: OrgId) -> Result<()> {
        self.authorize(actor, org, Permission::OrgDelete)?;
        self.store.delete_org(org).await
    }

    /// Lists an organization's members.
    pub async fn list_members(&self, actor: &Actor, org: OrgId) -> Result<Vec<Membership>> {
        self.authorize(actor, org, Permission::MemberRead)?;
        self.store.list_members(org).await
    }

    /// Adds an existing user as a member.
    pub async fn add_member(&self, actor: &Actor, org: OrgId, user: UserId, role: Role) -> Result<Membership> {
        self.authorize(actor, org, Permission::MemberManage)?;
        self.store.add_member(org, user, role).await
    }

    /// Changes a member's role (the last org_admin cannot be demoted).
    pub async fn set_member_role(&self, actor: &Actor, org: OrgId, user: UserId, role: Role) -> Result<Membership> {
        self.authorize(actor, org, Permission::MemberManage)?;
        self.store.set_member_role(org, user, role).await
    }

    /// Removes a member (the last org_admin cannot be removed).
    pub async fn remove_member(&self, actor: &Actor, org: OrgId, user: UserId) -> Result<()> {
        self.authorize(actor, org, Permission::MemberManage)?;
        self.store.remove_member(org, user).await
    }

    /// Creates an API key carrying at most the actor's own role. The secret is returned once and
    /// never stored; only its hash is.
    pub async fn create_api_key(&self, actor: &Actor, org: OrgId, key: NewApiKey) -> Result<(ApiKey, ApiKeySecret)> {
        self.authorize(actor, org, Permission::ApiKeyManage)?;
        let name = validate_name("API key name", &key.name)?;
        if key.role > actor.role {
            return Err(Error::invalid(format!("an API key cannot carry a role above your own ({})", actor.role)));
        }
        if key.expires_at.is_some_and(|at| at <= now()) {
            return Err(Error::invalid("expires_at must be in the future"));
        }
        let generated = GeneratedKey::generate()?;
        let record = ApiKeyRecord {
            name,
            role: key.role,
            prefix: generated.prefix,
            hash: generated.hash.to_vec(),
            created_by: actor.principal.user_id(),
            expires_at: key.expires_at,
        };
        let stored = self.store.insert_api_key(org, record).await?;
        Ok((stored, generated.secret))
    }

    /// Lists an organization's API keys (never their secrets).
    pub async fn list_api_keys(&self, actor: &Actor, org: OrgId) -> Result<Vec<ApiKey>> {
        self.authorize(actor, org, Permission::ApiKeyRead)?;
        self.store.list_api_keys(org).await
    }

    /// Revokes an API key; it stops authenticating at once.
    pub async fn revoke_api_key(&self, actor: &Actor, org: OrgId, key: ApiKeyId) -> Result<ApiKey> {
        self.authorize(actor, org, Permission::ApiKeyManage)?;
        self.store.revoke_api_key(org, key).await
    }
}
