//! The layers every request passes through: request id, tracing span, metrics, per-IP rate limit,
//! body limit, timeout and security headers.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::api::github;
use crate::error::{ApiError, payload_too_large};
use crate::ratelimit::Decision;
use crate::state::AppState;

/// The request id header, accepted from the caller when well-formed and always echoed.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT_REQUEST_ID: String;
}

/// The id of the request being handled, if called while handling one.
pub(crate) fn current_request_id() -> Option<String> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

/// Where the inner route layer leaves the matched route template for the outer layers.
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<String>>);

/// Inner layer (a `route_layer`): records the matched route template, which only exists once the
/// router has matched.
pub(crate) async fn record_route(request: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) =
        (request.extensions().get::<RouteSlot>(), request.extensions().get::<MatchedPath>())
    {
        let _ = slot.0.set(path.as_str().to_owned());
    }
    next.run(request).await
}

/// Outer layer: request id, span, timing and metrics, security headers.
pub(crate) async fn observe(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_acceptable_request_id(id))
        .map_or_else(|| uuid::Uuid::now_v7().simple().to_string(), str::to_owned);
    let slot = RouteSlot::default();
    request.extensions_mut().insert(slot.clone());
    let method = request.method().clone();
    let forwarded_https = state.settings().trust_forwarded_headers
        && request.headers().get("x-forwarded-proto").is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"https"));
    let span = tracing::info_span!("request", %method, route = tracing::field::Empty, request_id = %request_id);
    let mut response = CURRENT_REQUEST_ID
        .scope(request_id.clone(), async move { next.run(request).await }.instrument(span.clone()))
        .await;
    let route = slot.0.get().map_or("unmatched", String::as_str);
    span.record("route", route);
    let status = response.status();
    let elapsed = started.elapsed();
    state.metrics().http_request(method.as_str(), route, status.as_u16(), elapsed);
    span.in_scope(|| {
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), elapsed_ms, "request failed");
        } else {
            tracing::info!(status = status.as_u16(), elapsed_ms, "request");
        }
    });
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert(REQUEST_ID, value);
    }
    security_headers(headers, state.settings().hsts || forwarded_https);
    if state.draining() {
        // A kept-alive connection would pin its client to a replica that is going away; closing
        // it after this response sends the client's next request through the load balancer.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A caller-supplied request id is kept only if it is short and plain, so it can't inject
/// anything into logs or headers.
fn is_acceptable_request_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn security_headers(headers: &mut HeaderMap, hsts: bool) {
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    if hsts {
        headers
            .insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    }
}

/// Per-IP rate limit (before authentication, so floods of bad credentials are limited too),
/// declared body size check, and the request timeout.
pub(crate) async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let settings = state.settings();
    let declared =
        request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    // GitHub's deliveries have a limit of their own, and are not limited per IP: they come from
    // GitHub's few addresses; the route counts bad signatures per address instead.
    let webhook = request.uri().path() == github::WEBHOOK_PATH;
    let limit = if webhook { state.github().limits.max_body_bytes } else { settings.max_body_bytes };
    if declared.is_some_and(|n| n > limit as u64) {
        return payload_too_large().with_details(serde_json::json!({ "limit_bytes": limit })).into_response();
    }
    let exempt = webhook || matches!(request.uri().path(), "/health" | "/ready" | "/metrics");
    if !exempt {
        let ip = client_ip_of(&request, settings.trust_forwarded_headers);
        let key = format!("ip:{}", crate::ratelimit::address_key(&ip));
        if let Decision::Limited { retry_after } = state.limiter().check(&key, settings.ip_rate_limit_per_minute).await
        {
            state.metrics().rate_limited("ip");
            return rate_limited(retry_after).into_response();
        }
    }
    let timeout = settings.request_timeout;
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} s", timeout.as_secs()),
        )
        .with_retry_after(Duration::from_secs(1))
        .into_response(),
    }
}

/// 429 with `Retry-After`.
pub(crate) fn rate_limited(retry_after: Duration) -> ApiError {
    ApiError::new(axum::http::StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests; slow down")
        .with_details(serde_json::json!({ "retry_after_secs": retry_after.as_secs().max(1) }))
        .with_retry_after(retry_after)
}

/// The caller's address: the peer, or with trusted forwarding headers the last hop a proxy added.
pub(crate) fn client_ip_of(request: &Request, trust_forwarded: bool) -> String {
    if trust_forwarded
        && let Some(ip) = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse::<IpAddr>().ok())
    {
        return ip.to_string();
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_owned(), |ConnectInfo(addr)| addr.ip().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_from_callers_are_kept_only_when_plain() {
        assert!(is_acceptable_request_id("abc-123_x.y:z"));
        assert!(!is_acceptable_request_id(""));
        assert!(!is_acceptable_request_id("a b"));
        assert!(!is_acceptable_request_id("a\nb"));
        assert!(!is_acceptable_request_id(&"a".repeat(129)));
    }
}
