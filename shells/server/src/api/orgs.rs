//! The caller, organizations, members and API keys.

use aicd_core::tenancy::{ApiKey, Membership, NewApiKey, NewOrg, Org, OrgPatch, Role, User};
use aicd_core::{ApiKeyId, OrgId, UserId};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::Items;
use crate::auth::{Auth, Caller, OrgScope};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Body, Path};
use crate::state::AppState;

/// The caller.
#[derive(Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Me {
    /// A signed-in person and the organizations they belong to.
    User {
        /// The user.
        user: User,
        /// Their organizations with their role in each.
        orgs: Vec<OrgWithRole>,
    },
    /// An API key, which acts in exactly one organization.
    ApiKey {
        /// The key's id.
        api_key_id: ApiKeyId,
        /// Its organization.
        org_id: OrgId,
        /// Its role there.
        role: Role,
    },
}

/// An organization and the caller's role in it.
#[derive(Serialize, ToSchema)]
pub(crate) struct OrgWithRole {
    /// The organization.
    #[serde(flatten)]
    org: Org,
    /// The caller's role in it.
    role: Role,
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/v1/me", tag = "orgs", security(("bearer" = [])),
    responses((status = 200, body = Me), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn me(State(state): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Me>> {
    Ok(Json(match caller {
        Caller::User(user) => {
            let orgs = state.core().list_orgs(user.id).await?;
            Me::User { user, orgs: orgs.into_iter().map(|(org, role)| OrgWithRole { org, role }).collect() }
        }
        Caller::ApiKey(actor) => {
            let aicd_core::tenancy::Principal::ApiKey(api_key_id) = actor.principal else {
                return Err(ApiError::internal(&"an API key caller without a key id"));
            };
            Me::ApiKey { api_key_id, org_id: actor.org_id, role: actor.role }
        }
    }))
}

/// The organizations the caller can act in (an API key: its own).
#[utoipa::path(get, path = "/v1/orgs", tag = "orgs", security(("bearer" = [])),
    responses((status = 200, body = Items<OrgWithRole>), (status = 401, body = crate::error::ErrorBody)))]
pub(crate) async fn list_orgs(
    State(state): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<Items<OrgWithRole>>> {
    let orgs = match caller {
        Caller::User(user) => state.core().list_orgs(user.id).await?,
        Caller::ApiKey(actor) => vec![(state.core().get_org(&actor, actor.org_id).await?, actor.role)],
    };
    Ok(Json(orgs.into_iter().map(|(org, role)| OrgWithRole { org, role }).collect::<Vec<_>>().into()))
}

/// A new organization.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateOrg {
    /// Its name (1 to 100 characters).
    name: String,
    /// How many of its jobs may run at once (default 4).
    max_concurrent_jobs: Option<u32>,
    /// Settings its repositories inherit key by key (a JSON object, default `{}`), for instance
    /// the default `triggers`: `{"label": "aicd" | null, "assignment": true, "commands": true}`.
    #[schema(value_type = Option<Object>)]
    settings: Option<serde_json::Value>,
}

/// Creates an organization; the signed-in caller becomes its org_admin. API keys cannot create
/// organizations (they belong to one).
#[utoipa::path(post, path = "/v1/orgs", tag = "orgs", security(("bearer" = [])), request_body = CreateOrg,
    responses((status = 201, body = Org), (status = 401, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn create_org(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Body(body): Body<CreateOrg>,
) -> ApiResult<(StatusCode, Json<Org>)> {
    let Caller::User(user) = caller else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "API keys cannot create organizations; sign in as a user",
        ));
    };
    let org = state
        .core()
        .create_org(
            user.id,
            NewOrg { name: body.name, max_concurrent_jobs: body.max_concurrent_jobs, settings: body.settings },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(org)))
}

/// Reads an organization.
#[utoipa::path(get, path = "/v1/orgs/{org_id}", tag = "orgs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 200, body = Org), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_org(State(state): State<AppState>, scope: OrgScope) -> ApiResult<Json<Org>> {
    Ok(Json(state.core().get_org(&scope.actor, scope.org).await?))
}

/// Changes to an organization.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateOrg {
    /// A new name.
    name: Option<String>,
    /// A new limit of concurrently running jobs.
    max_concurrent_jobs: Option<u32>,
    /// New settings (replace the old ones).
    #[schema(value_type = Option<Object>)]
    settings: Option<serde_json::Value>,
}

/// Renames an organization or changes its limits or settings (org_admin).
#[utoipa::path(patch, path = "/v1/orgs/{org_id}", tag = "orgs", security(("bearer" = [])), request_body = UpdateOrg,
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 200, body = Org), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn update_org(
    State(state): State<AppState>,
    scope: OrgScope,
    Body(body): Body<UpdateOrg>,
) -> ApiResult<Json<Org>> {
    let patch = OrgPatch { name: body.name, max_concurrent_jobs: body.max_concurrent_jobs, settings: body.settings };
    Ok(Json(state.core().update_org(&scope.actor, scope.org, patch).await?))
}

/// Deletes an organization and everything in it (org_admin).
#[utoipa::path(delete, path = "/v1/orgs/{org_id}", tag = "orgs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn delete_org(State(state): State<AppState>, scope: OrgScope) -> ApiResult<StatusCode> {
    state.core().delete_org(&scope.actor, scope.org).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists the members.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/members", tag = "orgs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 200, body = Items<Membership>), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list_members(State(state): State<AppState>, scope: OrgScope) -> ApiResult<Json<Items<Membership>>> {
    Ok(Json(state.core().list_members(&scope.actor, scope.org).await?.into()))
}

/// A user to add.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddMember {
    /// An existing user's id (users exist once they have signed in).
    user_id: UserId,
    /// Their role: `viewer`, `developer` or `org_admin`.
    role: Role,
}

/// Adds a member (org_admin).
#[utoipa::path(post, path = "/v1/orgs/{org_id}/members", tag = "orgs", security(("bearer" = [])), request_body = AddMember,
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 201, body = Membership), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn add_member(
    State(state): State<AppState>,
    scope: OrgScope,
    Body(body): Body<AddMember>,
) -> ApiResult<(StatusCode, Json<Membership>)> {
    let membership = state.core().add_member(&scope.actor, scope.org, body.user_id, body.role).await?;
    Ok((StatusCode::CREATED, Json(membership)))
}

/// A member's new role.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateMember {
    /// `viewer`, `developer` or `org_admin`.
    role: Role,
}

/// Changes a member's role (org_admin; the last org_admin cannot be demoted).
#[utoipa::path(patch, path = "/v1/orgs/{org_id}/members/{user_id}", tag = "orgs", security(("bearer" = [])),
    request_body = UpdateMember,
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("user_id" = uuid::Uuid, Path, description = "User id")),
    responses((status = 200, body = Membership), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn update_member(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, user)): Path<(OrgId, UserId)>,
    Body(body): Body<UpdateMember>,
) -> ApiResult<Json<Membership>> {
    Ok(Json(state.core().set_member_role(&scope.actor, scope.org, user, body.role).await?))
}

/// Removes a member (org_admin; the last org_admin cannot be removed).
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/members/{user_id}", tag = "orgs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("user_id" = uuid::Uuid, Path, description = "User id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, user)): Path<(OrgId, UserId)>,
) -> ApiResult<StatusCode> {
    state.core().remove_member(&scope.actor, scope.org, user).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Lists the API keys (never their secrets).
#[utoipa::path(get, path = "/v1/orgs/{org_id}/api-keys", tag = "orgs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 200, body = Items<ApiKey>), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list_api_keys(State(state): State<AppState>, scope: OrgScope) -> ApiResult<Json<Items<ApiKey>>> {
    Ok(Json(state.core().list_api_keys(&scope.actor, scope.org).await?.into()))
}

/// A new API key.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateApiKey {
    /// A name to recognize it by.
    name: String,
    /// Its role; at most the caller's own.
    role: Role,
    /// When it stops working (RFC 3339); never when absent.
    expires_at: Option<DateTime<Utc>>,
}

/// A created API key with its secret, which is shown this once.
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedApiKey {
    /// The key's record.
    api_key: ApiKey,
    /// The secret to send as `Authorization: Bearer <secret>`. Never shown again.
    secret: String,
}

/// Creates an API key (org_admin). The response is the only time the secret is shown.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/api-keys", tag = "orgs", security(("bearer" = [])), request_body = CreateApiKey,
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 201, body = CreatedApiKey), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn create_api_key(
    State(state): State<AppState>,
    scope: OrgScope,
    Body(body): Body<CreateApiKey>,
) -> ApiResult<(StatusCode, Json<CreatedApiKey>)> {
    let key = NewApiKey { name: body.name, role: body.role, expires_at: body.expires_at };
    let (api_key, secret) = state.core().create_api_key(&scope.actor, scope.org, key).await?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { api_key, secret: secret.expose().to_owned() })))
}

/// Revokes an API key; it stops working at once (org_admin).
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/api-keys/{key_id}", tag = "orgs", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("key_id" = uuid::Uuid, Path, description = "API key id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn revoke_api_key(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, key)): Path<(OrgId, ApiKeyId)>,
) -> ApiResult<StatusCode> {
    state.core().revoke_api_key(&scope.actor, scope.org, key).await?;
    Ok(StatusCode::NO_CONTENT)
}
