//! Billing: an organization's plan, usage and spend cap, the payment provider's portal, and the
//! provider's webhook.

use aicd_core::billing::webhook::{self, SignatureError};
use aicd_core::billing::{BillingStatus, EventOutcome};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::OrgScope;
use crate::error::{ApiError, ApiResult};
use crate::extract::Body;
use crate::state::AppState;

/// The organization's billing: how it is billed, its subscription, this month's usage against its
/// allowance and cap, and whether new jobs are accepted (org_admin). 404 when this deployment does
/// not bill.
#[utoipa::path(get, path = "/v1/orgs/{org_id}/billing", tag = "billing", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 200, body = BillingStatus), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody)))]
pub(crate) async fn get_billing(State(state): State<AppState>, scope: OrgScope) -> ApiResult<Json<BillingStatus>> {
    Ok(Json(state.core().billing_status(&scope.actor, scope.org).await?))
}

/// Changes to an organization's billing.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBilling {
    /// The most the organization may spend per calendar month (UTC), in micro-units of currency;
    /// `null` removes the organization's own cap. At most the deployment's cap.
    #[serde(default, with = "serde_with_null")]
    #[schema(value_type = Option<u64>)]
    spend_cap_micros: Option<Option<u64>>,
}

/// Tells a field set to `null` from a field left out.
mod serde_with_null {
    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
        Option::<u64>::deserialize(d).map(Some)
    }
}

/// Sets the organization's monthly spend cap (org_admin). 422 above the deployment's cap.
#[utoipa::path(patch, path = "/v1/orgs/{org_id}/billing", tag = "billing", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    request_body = UpdateBilling,
    responses((status = 200, body = BillingStatus), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
pub(crate) async fn update_billing(
    State(state): State<AppState>,
    scope: OrgScope,
    Body(body): Body<UpdateBilling>,
) -> ApiResult<Json<BillingStatus>> {
    let core = state.core();
    match body.spend_cap_micros {
        Some(cap) => Ok(Json(core.set_spend_cap(&scope.actor, scope.org, cap).await?)),
        None => Ok(Json(core.billing_status(&scope.actor, scope.org).await?)),
    }
}

/// A portal session.
#[derive(Serialize, ToSchema)]
pub(crate) struct PortalSession {
    /// The payment provider's portal for this organization (payment method, invoices,
    /// subscription); short-lived, open it at once.
    url: String,
}

/// Opens a session of the payment provider's customer portal (org_admin), creating the
/// organization's customer if it has none. 404 when this deployment does not bill; 503 when the
/// provider cannot be reached.
#[utoipa::path(post, path = "/v1/orgs/{org_id}/billing/portal", tag = "billing", security(("bearer" = [])),
    params(("org_id" = uuid::Uuid, Path, description = "Organization id")),
    responses((status = 200, body = PortalSession), (status = 403, body = crate::error::ErrorBody),
        (status = 404, body = crate::error::ErrorBody), (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn billing_portal(State(state): State<AppState>, scope: OrgScope) -> ApiResult<Json<PortalSession>> {
    let return_url = state.billing().portal_return_url.clone().unwrap_or_default();
    let url = state.core().billing_portal(&scope.actor, scope.org, &return_url).await?;
    Ok(Json(PortalSession { url }))
}

/// What became of a Stripe event.
#[derive(Serialize, ToSchema)]
pub(crate) struct StripeEventReply {
    /// The event's id.
    event_id: String,
    /// `applied`, `duplicate` (handled before; nothing was done again), `ignored` (not an event
    /// billing acts on) or `unknown_customer` (no organization has that customer).
    status: &'static str,
}

/// Receives a Stripe webhook event, signed with the endpoint's secret (`Stripe-Signature`).
///
/// The signature is checked over the raw body before anything is parsed: every `v1` signature of
/// the header against the current and the previous secret, within 300 s of its timestamp. A
/// missing, wrong or stale signature is 400 and nothing is stored. A verified event is applied
/// once (by its id) and acknowledged with 200, also when it is ignored; 503 when the database is
/// unavailable (Stripe delivers it again), and when the server has no webhook secret.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "billing",
    params(("Stripe-Signature" = String, Header, description = "`t=<unix time>,v1=<HMAC-SHA256 hex>`")),
    request_body(content = Object, content_type = "application/json"),
    responses((status = 200, body = StripeEventReply), (status = 400, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub(crate) async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<StripeEventReply>> {
    let secrets = &state.billing().webhook_secrets;
    if secrets.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhooks_disabled",
            "this server does not accept Stripe webhooks: AICD_STRIPE_WEBHOOK_SECRET is not set",
        ));
    }
    let signature = headers.get("stripe-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
    let secrets: Vec<&str> = secrets.iter().map(|s| s.expose()).collect();
    let now = chrono::Utc::now();
    if let Err(error) = webhook::verify_signature(&secrets, signature, &body, now, webhook::DEFAULT_TOLERANCE) {
        tracing::info!(%error, "a Stripe webhook was refused");
        let message = match error {
            SignatureError::Stale { .. } => "the Stripe-Signature timestamp is too old (or in the future)",
            _ => "the Stripe-Signature header is missing or does not match the body",
        };
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "invalid_signature", message));
    }
    let event = webhook::parse_event(&body).map_err(|error| {
        tracing::warn!(%error, "a verified Stripe webhook could not be read");
        ApiError::bad_request(format!("the event could not be read: {error}"))
    })?;
    let outcome = state.core().apply_billing_webhook(&event).await?;
    let status = match outcome {
        EventOutcome::Applied { org } => {
            tracing::info!(event = %event.id, kind = %event.kind, %org, "Stripe event applied");
            "applied"
        }
        EventOutcome::Duplicate => "duplicate",
        EventOutcome::Ignored => "ignored",
        EventOutcome::UnknownCustomer => {
            tracing::info!(event = %event.id, kind = %event.kind, "Stripe event for a customer of no organization");
            "unknown_customer"
        }
    };
    Ok(Json(StripeEventReply { event_id: event.id, status }))
}
