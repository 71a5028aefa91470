//! The routes. Each handler authenticates (through its extractors), calls one core service with
//! the caller's [`aicd_core::tenancy::Actor`], and maps the result; the OpenAPI document is
//! generated from the same handlers, so every route is in it.

mod billing;
pub(crate) mod github;
mod jobs;
mod orgs;
mod repos;
pub(crate) mod system;

use axum::Router;
use axum::http::StatusCode;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

/// The OpenAPI document's fixed parts; the paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "AI-CD API",
        description = "Turns issues into reviewed pull requests. Authenticate with `Authorization: Bearer <token>`, \
                       where the token is an API key (`aicd_...`) or a JWT from the configured identity provider. \
                       Errors share one shape: `{\"error\": {\"code\", \"message\", \"details\", \"request_id\"}}`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::error::ErrorBody)),
    tags(
        (name = "system", description = "Health, readiness, metrics and this document"),
        (name = "orgs", description = "Organizations, members and API keys"),
        (name = "repos", description = "Repositories and their policy and trigger settings"),
        (name = "jobs", description = "Jobs: from an issue to a pull request"),
        (name = "usage", description = "Tokens, cost and pull requests"),
        (name = "github", description = "The GitHub App: webhook deliveries, its setup flow and linked installations"),
        (name = "billing", description = "Plans, usage against allowances and caps, the payment portal, Stripe's webhook"),
    )
)]
pub(crate) struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The routes and the OpenAPI document describing them.
pub(crate) fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::ready))
        .routes(routes!(system::metrics))
        .routes(routes!(system::openapi_json))
        .routes(routes!(system::docs))
        .routes(routes!(orgs::me))
        .routes(routes!(orgs::list_orgs, orgs::create_org))
        .routes(routes!(orgs::get_org, orgs::update_org, orgs::delete_org))
        .routes(routes!(orgs::list_members, orgs::add_member))
        .routes(routes!(orgs::update_member, orgs::remove_member))
        .routes(routes!(orgs::list_api_keys, orgs::create_api_key))
        .routes(routes!(orgs::revoke_api_key))
        .routes(routes!(repos::list_repos, repos::create_repo))
        .routes(routes!(repos::get_repo, repos::update_repo, repos::delete_repo))
        .routes(routes!(jobs::list_jobs, jobs::create_job))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(jobs::retry_job))
        .routes(routes!(jobs::list_events))
        .routes(routes!(jobs::stream_events))
        .routes(routes!(jobs::job_diff))
        .routes(routes!(jobs::usage))
        .routes(routes!(billing::get_billing, billing::update_billing))
        .routes(routes!(billing::billing_portal))
        .routes(routes!(billing::stripe_webhook))
        .routes(routes!(github::list_installations))
        .routes(routes!(github::unlink_installation))
        .routes(routes!(github::start_install))
        .routes(routes!(github::complete_setup))
        .routes(routes!(github::setup))
        // The route reads its body itself, within the webhook limits.
        .routes(routes!(github::webhook))
        .split_for_parts();
    (router, doc)
}

/// 404 in the error shape for paths no route matches.
pub(crate) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// 405 in the error shape.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not accept that method")
}

/// The list wrapper of collection responses.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Items<T> {
    /// The items.
    pub(crate) items: Vec<T>,
}

impl<T> From<Vec<T>> for Items<T> {
    fn from(items: Vec<T>) -> Self {
        Self { items }
    }
}
