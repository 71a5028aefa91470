//! The GitHub App: webhook deliveries in, the App's setup flow, and linked installations.
//!
//! The webhook route only guards and translates: it refuses malformed headers and oversized
//! declared bodies before anything else, bounds the deliveries read at once, the size of each and
//! the time its body may take, counts bad signatures per client address (answering 429 past a
//! limit, to bad signatures only), verifies the signature before anything in the body is read,
//! and hands the verified delivery to [`aicd_github::Intake`], which holds the rules. Installations are linked only
//! through the setup flow ([`aicd_github::InstallFlow`]), which proves the installer controls the
//! installation, or by an operator (`aicd-server admin link-installation`).

use std::net::IpAddr;
use std::time::Duration;

use aicd_core::OrgId;
use aicd_core::github::{Installation, InstallationId};
use aicd_core::tenancy::Permission;
use aicd_github::VerifiedDelivery;
use aicd_github::setup::{Landing, LinkedInstallation, SetupCallback, SetupOutcome};
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::Items;
use crate::auth::OrgScope;
use crate::error::{ApiError, ApiResult, payload_too_large};
use crate::extract::{Path, Query};
use crate::middleware::{client_ip_of, rate_limited};
use crate::ratelimit::Decision;
use crate::state::AppState;

/// The webhook route's path.
pub(crate) const WEBHOOK_PATH: &str = "/webhooks/github";

/// What became of a delivery.
#[derive(Serialize, ToSchema)]
pub(crate) struct DeliveryReply {
    /// The `X-GitHub-Delivery` id.
    delivery_id: String,
    /// `processed`, `ignored` or `duplicate` (already handled; nothing was done again).
    status: &'static str,
    /// What was done, or why nothing was.
    detail: String,
}

/// Receives a GitHub webhook delivery (signed with the App's webhook secret).
///
/// 401 for a missing or wrong signature (nothing is stored), 429 instead once a client address
/// has sent too many of those (a good signature is always accepted), 503 when the server has no webhook secret or is reading too many deliveries
/// at once, 413 over the size limit, 408 when the body is too slow to arrive. Every verified
/// delivery is acknowledged with 200, including events AI-CD ignores; if processing fails (the
/// database is down), the answer is 503 and GitHub's redelivery is processed again.
#[utoipa::path(post, path = "/webhooks/github", tag = "github",
    params(
        ("X-GitHub-Event" = String, Header, description = "The event name"),
        ("X-GitHub-Delivery" = String, Header, description = "The delivery's unique id"),
        ("X-Hub-Signature-256" = String, Header, description = "`sha256=` HMAC of the body under the webhook secret"),
    ),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, body = DeliveryReply), (status = 400, body = crate::error::ErrorBody),
        (status = 401, body = crate::error::ErrorBody), (status = 408, body = crate::error::ErrorBody),
        (status = 413, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn webhook(State(state): State<AppState>, request: Request) -> ApiResult<Json<DeliveryReply>> {
    let metrics = state.metrics();
    let hooks = state.github();
    let Some(secret) = hooks.webhook_secret.as_ref() else {
        metrics.webhook("unknown", "disabled");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_disabled",
            "this server does not accept GitHub webhooks: AICD_GITHUB_WEBHOOK_SECRET is not set",
        ));
    };
    let client = client_ip_of(&request, state.settings().trust_forwarded_headers);
    let address = client.parse::<IpAddr>().ok();
    // GitHub sends every App's deliveries from shared addresses: those are never turned away
    // before their signature is checked. Others past the bad-signature limit are.
    let trusted = address.is_some_and(|ip| hooks.limits.trusted_sources.iter().any(|range| range.contains(ip)));
    let strikes = Strikes {
        key: format!("webhook-bad-signature:{}", crate::ratelimit::address_key(&client)),
        limit: hooks.limits.bad_signatures_per_minute,
        trusted,
    };
    if !trusted && let Decision::Limited { retry_after } = state.limiter().peek(&strikes.key, strikes.limit).await {
        metrics.webhook("unknown", "rate_limited");
        return Err(rate_limited(retry_after));
    }
    // Cheap checks first, before a place is taken or a byte of the body read.
    let headers = request.headers();
    match VerifiedDelivery::check_headers(
        header(headers, "x-hub-signature-256"),
        header(headers, "x-github-event"),
        header(headers, "x-github-delivery"),
    ) {
        Ok(()) => {}
        Err(aicd_github::Error::MalformedDelivery(message)) => {
            metrics.webhook("unknown", "malformed");
            return Err(ApiError::bad_request(message));
        }
        Err(error) => return Err(strikes.refuse(&state, &client, error).await),
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|length| length > hooks.limits.max_body_bytes) {
        metrics.webhook("unknown", "too_large");
        return Err(too_large(hooks.limits.max_body_bytes));
    }
    // One address may not hold more than a few places (GitHub's may: they are shared).
    let _address_slot = match address.filter(|_| !trusted) {
        Some(ip) => match hooks.per_address.take(ip, hooks.limits.max_inflight_per_address) {
            Some(slot) => Some(slot),
            None => {
                metrics.webhook("unknown", "busy");
                return Err(ApiError::unavailable("too many deliveries from this address are being received")
                    .with_retry_after(Duration::from_secs(1)));
            }
        },
        None => None,
    };
    // A place per delivery whose body is being read or processed: past the bound, turn away at
    // once rather than hold memory and connections for whoever opens the most.
    let Ok(_permit) = hooks.inflight.clone().try_acquire_owned() else {
        metrics.webhook("unknown", "busy");
        return Err(ApiError::unavailable("too many webhook deliveries are being received; redeliver shortly")
            .with_retry_after(Duration::from_secs(1)));
    };
    let (parts, body) = request.into_parts();
    let read = axum::body::to_bytes(body, hooks.limits.max_body_bytes);
    let body = match tokio::time::timeout(hooks.limits.read_timeout, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(error)) if is_length_limit(&error) => {
            metrics.webhook("unknown", "too_large");
            return Err(too_large(hooks.limits.max_body_bytes));
        }
        Ok(Err(error)) => {
            metrics.webhook("unknown", "unreadable");
            tracing::debug!(%error, %client, "a webhook body could not be read");
            strikes.count(&state).await;
            return Err(ApiError::bad_request("the delivery's body could not be read"));
        }
        Err(_) => {
            metrics.webhook("unknown", "timeout");
            strikes.count(&state).await;
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!("the delivery's body did not arrive within {} s", hooks.limits.read_timeout.as_secs()),
            ));
        }
    };
    let headers = &parts.headers;
    let verify = |secret| {
        VerifiedDelivery::verify(
            secret,
            header(headers, "x-hub-signature-256"),
            header(headers, "x-github-event"),
            header(headers, "x-github-delivery"),
            &body,
        )
    };
    // While the secret is rotated, a delivery signed with the old one is still accepted.
    let verified = match (verify(secret), hooks.previous_webhook_secret.as_ref()) {
        (Err(error), Some(previous)) if !matches!(error, aicd_github::Error::MalformedDelivery(_)) => {
            verify(previous).map_err(|_| error)
        }
        (verified, _) => verified,
    };
    let delivery = match verified {
        Ok(delivery) => delivery,
        Err(aicd_github::Error::MalformedDelivery(message)) => return Err(ApiError::bad_request(message)),
        Err(error) => return Err(strikes.refuse(&state, &client, error).await),
    };
    let event = delivery.event().to_owned();
    let delivery_id = delivery.delivery_id().to_owned();
    match hooks.intake.receive(delivery).await {
        Ok(received) => {
            let status = received.disposition.as_str();
            metrics.webhook(&event, status);
            Ok(Json(DeliveryReply { delivery_id, status, detail: received.detail }))
        }
        Err(aicd_github::Error::MalformedPayload(e)) => {
            metrics.webhook(&event, "malformed");
            Err(ApiError::bad_request(format!("the delivery is not JSON: {e}")))
        }
        Err(error) => {
            metrics.webhook(&event, "failed");
            tracing::warn!(%error, "delivery processing failed");
            Err(ApiError::unavailable("the delivery could not be processed; redeliver it")
                .with_retry_after(Duration::from_secs(30)))
        }
    }
}

/// Bad signatures counted per client address. For GitHub's own (trusted) addresses a strike only
/// ever turns away requests that fail the signature check too: every App's deliveries come from
/// them, so anyone pointing a webhook with a wrong secret at this server could otherwise lock out
/// real ones. Other addresses past the limit are turned away before anything is read, and their
/// slow or unreadable bodies count as strikes too.
struct Strikes {
    key: String,
    limit: u32,
    trusted: bool,
}

impl Strikes {
    /// Counts a refused signature: 401, or 429 past the limit. Only the first refusal of an
    /// address in a window is logged as a warning.
    async fn refuse(&self, state: &AppState, client: &str, error: aicd_github::Error) -> ApiError {
        let metrics = state.metrics();
        match state.limiter().check(&self.key, self.limit).await {
            Decision::Limited { retry_after } => {
                tracing::debug!(%error, %client, "webhook delivery refused: bad signature, past the limit");
                metrics.webhook("unknown", "rate_limited");
                rate_limited(retry_after)
            }
            Decision::Allowed { remaining } => {
                if remaining + 1 >= self.limit {
                    tracing::warn!(%error, %client, "webhook delivery refused: bad signature");
                } else {
                    tracing::debug!(%error, %client, "webhook delivery refused: bad signature");
                }
                metrics.webhook("unknown", "rejected");
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", error.to_string())
            }
        }
    }

    /// Counts a slow or unreadable body against an address outside the trusted sources.
    async fn count(&self, state: &AppState) {
        if !self.trusted {
            state.limiter().check(&self.key, self.limit).await;
        }
    }
}

/// Deliveries being read per client address. Cheap to share.
#[derive(Debug, Default)]
pub(crate) struct AddressSlots {
    taken: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One delivery's place among its address's; given back on drop.
pub(crate) struct AddressSlot<'a> {
    slots: &'a AddressSlots,
    ip: IpAddr,
}

impl AddressSlots {
    /// A place for a delivery from `ip`, unless `limit` are being read already.
    pub(crate) fn take(&self, ip: IpAddr, limit: usize) -> Option<AddressSlot<'_>> {
        let mut taken = self.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = taken.entry(ip).or_default();
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot { slots: self, ip })
    }
}

impl Drop for AddressSlot<'_> {
    fn drop(&mut self) {
        let mut taken = self.slots.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = taken.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                taken.remove(&self.ip);
            }
        }
    }
}

/// 413 naming the limit.
fn too_large(limit: usize) -> ApiError {
    payload_too_large().with_details(serde_json::json!({ "limit_bytes": limit }))
}

/// Whether reading a body failed for its size (rather than the client going away).
fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Where to install the App.
#[derive(Serialize, ToSchema)]
pub(crate) struct InstallLinkReply {
    /// The App's install page on GitHub; after installing, GitHub sends the browser back to the
    /// App's setup URL, whose query the same caller then posts to
    /// `/v1/orgs/{org_id}/github/setup` to link the installation to this organization.
    install_url: String,
    /// Until when the link may be used (once).
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// Starts installing the GitHub App for the organization (org_admin): returns the App's install
/// page with a signed, expiring, single-use state naming this organization and the caller. 503
/// when the App's OAuth client is not configured.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/github/install", tag = "github", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 201, body = InstallLinkReply), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn start_install(
    State(state): State<AppState>,
    scope: OrgScope,
) -> ApiResult<(StatusCode, Json<InstallLinkReply>)> {
    // The role first: only an org admin learns what this server lacks.
    state.core().check_permission(&scope.actor, scope.org, Permission::IntegrationManage)?;
    let flow = setup_flow(&state)?;
    let link = flow.start(&scope.actor, scope.org).await?;
    Ok((StatusCode::CREATED, Json(InstallLinkReply { install_url: link.install_url, expires_at: link.expires_at })))
}

/// GitHub's redirect after installing, as the web app hands it over: the query of the App's
/// setup URL.
#[derive(serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SetupRequest {
    /// The installation GitHub says was made (a number, or its text as in the query).
    #[schema(value_type = Option<String>)]
    #[serde(default, deserialize_with = "number_or_text")]
    installation_id: Option<String>,
    /// `install`, `update` or `request`.
    #[serde(default)]
    setup_action: Option<String>,
    /// The state of the install link.
    #[serde(default)]
    state: Option<String>,
    /// The OAuth authorization code.
    #[serde(default)]
    code: Option<String>,
}

/// Reads a number or a string as text: an installation id straight from a query string or typed.
fn number_or_text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(u64),
        Text(String),
    }
    Ok(<Option<Id> as serde::Deserialize>::deserialize(deserializer)?.map(|id| match id {
        Id::Number(n) => n.to_string(),
        Id::Text(text) => text,
    }))
}

impl From<SetupRequest> for SetupCallback {
    fn from(r: SetupRequest) -> Self {
        SetupCallback { installation_id: r.installation_id, setup_action: r.setup_action, state: r.state, code: r.code }
    }
}

/// What completing the setup did.
#[derive(Serialize, ToSchema)]
pub(crate) struct SetupReply {
    /// `linked`, or `authorize`: GitHub gave no code, send the browser to `authorize_url` first
    /// (it comes back to the App's callback URL with one).
    status: &'static str,
    /// GitHub's authorization page (status `authorize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    authorize_url: Option<String>,
    /// The installation as linked (status `linked`).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    installation: Option<Installation>,
    /// How many of the installation's repositories were registered (`null` when they could not
    /// be listed; they then follow the installation's later events).
    #[serde(skip_serializing_if = "Option::is_none")]
    repositories_synced: Option<usize>,
    /// Why the repositories could not be listed, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    sync_error: Option<String>,
}

impl From<SetupOutcome> for SetupReply {
    fn from(outcome: SetupOutcome) -> Self {
        match outcome {
            SetupOutcome::Authorize { url } => Self {
                status: "authorize",
                authorize_url: Some(url),
                installation: None,
                repositories_synced: None,
                sync_error: None,
            },
            SetupOutcome::Linked(LinkedInstallation { installation, repositories_synced, sync_error }) => Self {
                status: "linked",
                authorize_url: None,
                installation: Some(installation),
                repositories_synced,
                sync_error,
            },
        }
    }
}

/// Completes linking a GitHub App installation to the organization (org_admin, and the same
/// caller who started the install link): the body is the query GitHub's redirect brought to the
/// App's setup URL. Links once GitHub confirms that the user who authorized controls the
/// installation. Nothing is linked on any error, and an error before the link leaves the state
/// usable: 400 `invalid_state` for a missing, forged, expired, used or someone else's state, 400
/// for an incomplete redirect, 403 when the installation cannot be verified as the user's (or is
/// linked elsewhere), 503 when GitHub is unavailable or the flow is not configured.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/github/setup", tag = "github", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    request_body = SetupRequest,
    responses((status = 200, body = SetupReply), (status = 400, body = crate::error::ErrorBody),
        (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn complete_setup(
    State(state): State<AppState>,
    scope: OrgScope,
    crate::extract::Body(request): crate::extract::Body<SetupRequest>,
) -> ApiResult<Json<SetupReply>> {
    state.core().check_permission(&scope.actor, scope.org, Permission::IntegrationManage)?;
    let flow = setup_flow(&state)?;
    match flow.complete(&scope.actor, scope.org, request.into()).await {
        Ok(outcome) => Ok(Json(outcome.into())),
        Err(error) => {
            tracing::info!(%error, "GitHub App setup refused; nothing linked");
            Err(error.into())
        }
    }
}

/// What the browser GitHub sent back should do next.
#[derive(Serialize, ToSchema)]
pub(crate) struct LandingReply {
    /// Always `not_linked`: nothing is linked by this page.
    status: &'static str,
    /// What to do, for a person reading it.
    message: String,
    /// The installation GitHub says was made (not yet verified).
    installation_id: InstallationId,
}

/// GitHub's redirect after the App is installed, when the App's setup (callback) URL is this
/// server rather than the web app. Without `code` it redirects to GitHub to authorize first.
/// With one it links nothing and shows nothing of the redirect: the authorization code proves the
/// installer's control to whoever holds it, so it must only ever travel from the installer's own
/// browser to the web app's setup page, which completes the link signed in as whoever started
/// it (`POST /v1/orgs/{org_id}/github/setup`). 400 `invalid_state` for a missing, forged or
/// expired state, 400 for an incomplete redirect, 503 when the flow is not configured.
#[utoipa::path(get, path = "/github/setup", tag = "github",
    params(
        ("installation_id" = Option<String>, Query, description = "The installation GitHub says was made"),
        ("setup_action" = Option<String>, Query, description = "`install` or `update`"),
        ("state" = Option<String>, Query, description = "The state of the install link"),
        ("code" = Option<String>, Query, description = "The OAuth authorization code"),
    ),
    responses((status = 200, body = LandingReply), (status = 302, description = "Authorize on GitHub first"),
        (status = 400, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn setup(State(state): State<AppState>, Query(callback): Query<SetupCallback>) -> ApiResult<Response> {
    let flow = setup_flow(&state)?;
    match flow.landing(&callback)? {
        Landing::Authorize { url } => Ok((StatusCode::FOUND, [(header::LOCATION, url)]).into_response()),
        Landing::Complete { installation_id, .. } => {
            let reply = LandingReply {
                status: "not_linked",
                message: format!(
                    "GitHub installed the App (installation {installation_id}), but this address cannot link it: \
                     set the App's callback URL to the AI-CD web app's setup page, which links it signed in as the \
                     person who started the install link, and install again. Do not share this page's address."
                ),
                installation_id,
            };
            Ok(Json(reply).into_response())
        }
    }
}

fn setup_flow(state: &AppState) -> ApiResult<&aicd_github::InstallFlow> {
    state.github().setup.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "github_setup_unavailable",
            "this server cannot link GitHub App installations: it needs the App (AICD_GITHUB_APP_ID, its key), \
             its slug (AICD_GITHUB_APP_SLUG) and its OAuth client (AICD_GITHUB_CLIENT_ID, AICD_GITHUB_CLIENT_SECRET)",
        )
    })
}

/// Lists the GitHub App installations linked to the organization.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/github/installations", tag = "github", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 200, body = Items<Installation>), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn list_installations(
    State(state): State<AppState>,
    scope: OrgScope,
) -> ApiResult<Json<Items<Installation>>> {
    Ok(Json(state.core().list_installations(&scope.actor, scope.org).await?.into()))
}

/// Unlinks a GitHub App installation (org_admin): its events are ignored from then on, its
/// repositories are detached (kept with their history; nothing reaches GitHub for them) and their
/// unfinished jobs are cancelled.
#[utoipa::path(delete, path = "/v1/orgs/{org_id}/github/installations/{installation_id}", tag = "github",
    security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id"),
        ("installation_id" = i64, Path, description = "GitHub's installation id")),
    responses((status = 204), (status = 403, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn unlink_installation(
    State(state): State<AppState>,
    scope: OrgScope,
    Path((_, installation_id)): Path<(OrgId, InstallationId)>,
) -> ApiResult<StatusCode> {
    state.core().unlink_installation(&scope.actor, scope.org, installation_id).await?;
    if let Some(tokens) = &state.github().tokens {
        tokens.forget_installation(installation_id);
    }
    Ok(StatusCode::NO_CONTENT)
}
