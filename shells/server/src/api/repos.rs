//! Repositories. Policy and trigger settings live in a repository's `settings` object.

use aicd_core::repos::{NewRepo, RepoPatch, RepoSource, Repository};
use aicd_core::{OrgId, RepoId};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

use super::Items;
use crate::auth::OrgScope;
use crate::error::ApiResult;
use crate::extract::{Body, Path};
use crate::state::AppState;

/// Where a new repository lives.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum SourceBody {
    /// A GitHub repository reached through an App installation.
    Github {
        /// The App installation's id (linked to this organization).
        #[schema(value_type = i64)]
        installation_id: aicd_core::github::InstallationId,
        /// GitHub's numeric repository id.
        #[schema(value_type = i64)]
        repo_id: aicd_core::github::GithubRepoId,
    },
    /// A git repository on the server's disk: only when the server allows local repositories
    /// (`AICD_ALLOW_LOCAL_REPOS=true`, the embedded default's setting).
    Local {
        /// Absolute path of the repository.
        path: String,
    },
}

/// A repository to register.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRepo {
    /// `owner/name`.
    full_name: String,
    /// Where it lives.
    source: SourceBody,
    /// The branch pull requests target (default `main`).
    default_branch: Option<String>,
    /// Settings: `policy` (protected paths, secret patterns, size limits) and `triggers`.
    #[schema(value_type = Option<Object>)]
    settings: Option<serde_json::Value>,
}

/// Changes to a repository.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateRepo {
    /// A new default branch.
    default_branch: Option<String>,
    /// New settings (replace the old ones).
    #[schema(value_type = Option<Object>)]
    settings: Option<serde_json::Value>,
}

/// Lists the organization's repositories.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/repos", tag = "repos", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 200, body = Items<Repository>), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list_repos(State(state): State<AppState>, scope: OrgScope) -> ApiResult<Json<Items<Repository>>> {
    Ok(Json(state.core().list_repos(&scope.actor, scope.org).await?.into()))
}

/// Registers a repository (org_admin).
#[utoipa::path(post, path = "/v1/orgs/{org_id}/repos", tag = "repos", security(("bearer" = [])), request_body = CreateRepo,
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 201, body = Repository), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody),
        (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn create_repo(
    State(state): State<AppState>,
    scope: OrgScope,
    Body(body): Body<CreateRepo>,
) -> ApiResult<(StatusCode, Json<Repository>)> {
    let source = match body.source {
        SourceBody::Github { installation_id, repo_id } => RepoSource::Github { installation_id, repo_id },
        SourceBody::Local { path } => RepoSource::Local { path },
    };
    let repo =
        NewRepo { full_name: body.full_name, source, default_branch: body.default_branch, settings: body.settings };
    Ok((StatusCode::CREATED, Json(state.core().create_repo(&scope.actor, scope.org, repo).await?)))
}

/// Reads a repository.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/repos/{repo_id}", tag = "repos", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("repo_id" = uuid::Uuid, Path, description = "Repository id")),
    responses((status = 200, body = Repository), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_repo(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, repo)): Path<(OrgId, RepoId)>,
) -> ApiResult<Json<Repository>> {
    Ok(Json(state.core().get_repo(&scope.actor, scope.org, repo).await?))
}

/// Changes a repository's default branch or settings (org_admin).
#[utoipa::path(patch, path = "/v1/orgs/{org_id}/repos/{repo_id}", tag = "repos", security(("bearer" = [])), request_body = UpdateRepo,
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("repo_id" = uuid::Uuid, Path, description = "Repository id")),
    responses((status = 200, body = Repository), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn update_repo(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, repo)): Path<(OrgId, RepoId)>,
    Body(body): Body<UpdateRepo>,
) -> ApiResult<Json<Repository>> {
    let patch = RepoPatch { default_branch: body.default_branch, settings: body.settings };
    Ok(Json(state.core().update_repo(&scope.actor, scope.org, repo, patch).await?))
}

/// Removes a repository (org_admin).
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/repos/{repo_id}", tag = "repos", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"), ("repo_id" = uuid::Uuid, Path, description = "Repository id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 409, body = crate::error::ErrorBody)))]
pub(crate) async fn delete_repo(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, repo)): Path<(OrgId, RepoId)>,
) -> ApiResult<StatusCode> {
    state.core().delete_repo(&scope.actor, scope.org, repo).await?;
    Ok(StatusCode::NO_CONTENT)
}
