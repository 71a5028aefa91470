//! [`TenancyStore`] for [`SqlStore`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::connect::Scope;
use super::rows::{ApiKeyRow, MembershipRow, OrgRow, OrgWithRoleRow, UserRow, api_key_columns, org_columns};
use super::sql::{One, Tx, constraint_error, int, q};
use super::{ApiKeyRecord, SqlStore, StoredApiKey, TenancyStore, now};
use crate::tenancy::{ApiKey, KEY_PREFIX, Membership, NewOrg, NewUser, Org, OrgPatch, Role, User};
use crate::{ApiKeyId, Error, OrgId, Result, UserId};

#[async_trait]
impl TenancyStore for SqlStore {
    async fn create_org(&self, org: NewOrg, admin: Option<UserId>) -> Result<Org> {
        let (name, limit, settings) = org.validate()?;
        let id = OrgId::new();
        let at = now();
        let mut tx = self.begin(Scope::Org(id)).await?;
        let row: OrgRow = tx
            .fetch_one(
                q(concat!(
                    "INSERT INTO orgs (id, name, max_concurrent_jobs, settings, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) RETURNING ",
                    org_columns!()
                ))
                .arg(id)
                .arg(name)
                .arg(int(limit))
                .arg(settings)
                .arg(at),
            )
            .await?;
        if let Some(user) = admin {
            insert_member(&mut tx, id, user, Role::OrgAdmin).await?;
        }
        tx.commit().await?;
        row.try_into()
    }

    async fn get_org(&self, org: OrgId) -> Result<Org> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<OrgRow> =
            tx.fetch_optional(q(concat!("SELECT ", org_columns!(), " FROM orgs WHERE id = $1")).arg(org)).await?;
        row.ok_or(Error::not_found("organization"))?.try_into()
    }

    async fn update_org(&self, org: OrgId, patch: OrgPatch) -> Result<Org> {
        let patch = patch.validate()?;
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<OrgRow> = tx
            .fetch_optional(
                q(concat!(
                    "UPDATE orgs SET name = COALESCE($2, name), \
                     max_concurrent_jobs = COALESCE($3, max_concurrent_jobs), \
                     settings = COALESCE($4, settings), updated_at = $5 \
                     WHERE id = $1 RETURNING ",
                    org_columns!()
                ))
                .arg(org)
                .arg(patch.name)
                .arg(patch.max_concurrent_jobs.map(i64::from))
                .arg(patch.settings)
                .arg(now()),
            )
            .await?;
        tx.commit().await?;
        row.ok_or(Error::not_found("organization"))?.try_into()
    }

    async fn delete_org(&self, org: OrgId) -> Result<()> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        // Repositories, keys, jobs, events and usage go with it (ON DELETE CASCADE).
        let deleted = tx.execute(q("DELETE FROM orgs WHERE id = $1").arg(org)).await?;
        if deleted == 0 {
            return Err(Error::not_found("organization"));
        }
        tx.commit().await
    }

    async fn list_orgs_of_user(&self, user: UserId) -> Result<Vec<(Org, Role)>> {
        let mut tx = self.begin(Scope::User(user)).await?;
        let rows: Vec<OrgWithRoleRow> = tx
            .fetch_all(
                q("SELECT o.id, o.name, o.max_concurrent_jobs, o.settings, o.created_at, o.updated_at, m.role \
                   FROM memberships m JOIN orgs o ON o.id = m.org_id \
                   WHERE m.user_id = $1 ORDER BY m.created_at, o.id")
                .arg(user),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn upsert_user(&self, user: NewUser) -> Result<User> {
        let subject = user.subject.trim();
        if subject.is_empty() || subject.len() > 512 {
            return Err(Error::invalid("user subject must be 1 to 512 characters"));
        }
        let mut tx = self.begin(Scope::Global).await?;
        let row: UserRow = tx
            .fetch_one(
                q("INSERT INTO users (id, subject, email, name, created_at) VALUES ($1, $2, $3, $4, $5) \
                   ON CONFLICT (subject) DO UPDATE SET email = excluded.email, name = excluded.name \
                   RETURNING id, subject, email, name, created_at")
                .arg(UserId::new())
                .arg(subject)
                .arg(user.email)
                .arg(user.name)
                .arg(now()),
            )
            .await?;
        tx.commit().await?;
        Ok(row.into())
    }

    async fn get_user(&self, user: UserId) -> Result<User> {
        let mut tx = self.begin(Scope::Global).await?;
        let row: Option<UserRow> = tx
            .fetch_optional(q("SELECT id, subject, email, name, created_at FROM users WHERE id = $1").arg(user))
            .await?;
        Ok(row.ok_or(Error::not_found("user"))?.into())
    }

    async fn add_member(&self, org: OrgId, user: UserId, role: Role) -> Result<Membership> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let membership = insert_member(&mut tx, org, user, role).await?;
        tx.commit().await?;
        Ok(membership)
    }

    async fn get_membership(&self, org: OrgId, user: UserId) -> Result<Option<Membership>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<MembershipRow> = tx
            .fetch_optional(
                q("SELECT org_id, user_id, role, created_at FROM memberships WHERE org_id = $1 AND user_id = $2")
                    .arg(org)
                    .arg(user),
            )
            .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn list_members(&self, org: OrgId) -> Result<Vec<Membership>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let rows: Vec<MembershipRow> = tx
            .fetch_all(
                q("SELECT org_id, user_id, role, created_at FROM memberships WHERE org_id = $1 \
                   ORDER BY created_at, user_id")
                .arg(org),
            )
            .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn set_member_role(&self, org: OrgId, user: UserId, role: Role) -> Result<Membership> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let current = lock_membership(&mut tx, org, user).await?;
        if current.role == Role::OrgAdmin && role != Role::OrgAdmin {
            ensure_another_admin(&mut tx, org).await?;
        }
        let row: MembershipRow = tx
            .fetch_one(
                q("UPDATE memberships SET role = $3 WHERE org_id = $1 AND user_id = $2 \
                   RETURNING org_id, user_id, role, created_at")
                .arg(org)
                .arg(user)
                .arg(role.as_str()),
            )
            .await?;
        tx.commit().await?;
        row.try_into()
    }

    async fn remove_member(&self, org: OrgId, user: UserId) -> Result<()> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let current = lock_membership(&mut tx, org, user).await?;
        if current.role == Role::OrgAdmin {
            ensure_another_admin(&mut tx, org).await?;
        }
        tx.execute(q("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2").arg(org).arg(user)).await?;
        tx.commit().await
    }

    async fn insert_api_key(&self, org: OrgId, key: ApiKeyRecord) -> Result<ApiKey> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: ApiKeyRow = tx
            .fetch_one(
                q(concat!(
                    "INSERT INTO api_keys (id, org_id, name, role, prefix, key_hash, created_by, created_at, \
                     expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ",
                    api_key_columns!()
                ))
                .arg(ApiKeyId::new())
                .arg(org)
                .arg(key.name)
                .arg(key.role.as_str())
                .arg(key.prefix)
                .arg(key.hash)
                .arg(key.created_by)
                .arg(now())
                .arg(key.expires_at),
            )
            .await
            .map_err(|e| constraint_error(e, "an API key with this prefix exists", "organization"))?;
        tx.commit().await?;
        row.into_key()
    }

    async fn list_api_keys(&self, org: OrgId) -> Result<Vec<ApiKey>> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let rows: Vec<ApiKeyRow> = tx
            .fetch_all(
                q(concat!("SELECT ", api_key_columns!(), " FROM api_keys WHERE org_id = $1 ORDER BY created_at, id"))
                    .arg(org),
            )
            .await?;
        rows.into_iter().map(ApiKeyRow::into_key).collect()
    }

    async fn revoke_api_key(&self, org: OrgId, key: ApiKeyId) -> Result<ApiKey> {
        let mut tx = self.begin(Scope::Org(org)).await?;
        let row: Option<ApiKeyRow> = tx
            .fetch_optional(
                q(concat!(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE org_id = $1 AND id = $2 \
                     RETURNING ",
                    api_key_columns!()
                ))
                .arg(org)
                .arg(key)
                .arg(now()),
            )
            .await?;
        tx.commit().await?;
        row.ok_or(Error::not_found("API key"))?.into_key()
    }

    async fn find_api_keys_by_prefix(&self, prefix: &str) -> Result<Vec<StoredApiKey>> {
        let mut tx = self.begin(Scope::KeyPrefix(prefix)).await?;
        let rows: Vec<ApiKeyRow> = tx
            .fetch_all(q(concat!("SELECT ", api_key_columns!(), " FROM api_keys WHERE prefix = $1")).arg(prefix))
            .await?;
        rows.into_iter()
            .map(|mut row| {
                let hash = std::mem::take(&mut row.key_hash);
                Ok(StoredApiKey { key: row.into_key()?, hash })
            })
            .collect()
    }

    async fn touch_api_key(&self, key: &ApiKey, at: DateTime<Utc>) -> Result<()> {
        let prefix = key.prefix.strip_prefix(KEY_PREFIX).unwrap_or(&key.prefix);
        let mut tx = self.begin(Scope::KeyPrefix(prefix)).await?;
        tx.execute(q("UPDATE api_keys SET last_used_at = $2 WHERE id = $1").arg(key.id).arg(at)).await?;
        tx.commit().await
    }
}

async fn insert_member(tx: &mut Tx, org: OrgId, user: UserId, role: Role) -> Result<Membership> {
    let row: MembershipRow = tx
        .fetch_one(
            q("INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
               RETURNING org_id, user_id, role, created_at")
            .arg(org)
            .arg(user)
            .arg(role.as_str())
            .arg(now()),
        )
        .await
        .map_err(|e| constraint_error(e, "the user is already a member", "user"))?;
    row.try_into()
}

/// Reads a membership after locking its organization's row, so concurrent role changes of the same
/// org serialize (the last-admin rule depends on it).
async fn lock_membership(tx: &mut Tx, org: OrgId, user: UserId) -> Result<Membership> {
    tx.execute(q("UPDATE orgs SET updated_at = updated_at WHERE id = $1").arg(org)).await?;
    let row: Option<MembershipRow> = tx
        .fetch_optional(
            q("SELECT org_id, user_id, role, created_at FROM memberships WHERE org_id = $1 AND user_id = $2")
                .arg(org)
                .arg(user),
        )
        .await?;
    row.ok_or(Error::not_found("member"))?.try_into()
}

async fn ensure_another_admin(tx: &mut Tx, org: OrgId) -> Result<()> {
    let admins: One<i64> =
        tx.fetch_one(q("SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'org_admin'").arg(org)).await?;
    if admins.0 <= 1 {
        return Err(Error::Conflict("an organization must keep at least one org_admin".into()));
    }
    Ok(())
}
