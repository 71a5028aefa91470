//! Liveness, readiness, metrics and the API's own description.

use std::sync::OnceLock;

use aicd_runtime::assemble::ReadinessReport;
use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::state::AppState;

/// Liveness.
#[derive(Serialize, ToSchema)]
pub(crate) struct Health {
    /// Always `ok` when the process answers.
    status: &'static str,
    /// The server's version.
    version: &'static str,
    /// Seconds since the server started.
    uptime_secs: u64,
}

/// Liveness: the process is up. Checks nothing else (see `/ready`).
#[utoipa::path(get, path = "/health", tag = "system", responses((status = 200, body = Health)))]
pub(crate) async fn health(State(state): State<AppState>) -> Json<Health> {
    Json(Health { status: "ok", version: env!("CARGO_PKG_VERSION"), uptime_secs: state.uptime().as_secs() })
}

/// Readiness: the database answers (and Redis, when configured), and the server is not shutting
/// down. 503 when the database does not answer or the server is draining, so a load balancer stops
/// sending traffic here; Redis is not required, so without it the answer is 200 with
/// `degraded: true` and its check failing.
#[utoipa::path(
    get, path = "/ready", tag = "system",
    responses(
        (status = 200, description = "The database answers; `degraded` is true if Redis does not", body = Object),
        (status = 503, description = "The database does not answer (`checks` says why), or the server is shutting down (`draining`)", body = Object),
    )
)]
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    if state.draining() {
        let report = ReadinessReport { ready: false, degraded: false, checks: Vec::new() };
        return (StatusCode::SERVICE_UNAVAILABLE, Json(Ready { report, draining: true })).into_response();
    }
    let report = state.readiness().check().await;
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Ready { report, draining: false })).into_response()
}

/// The readiness report, and whether the server is shutting down (then not ready, checks not run).
#[derive(Serialize)]
struct Ready {
    #[serde(flatten)]
    report: ReadinessReport,
    draining: bool,
}

/// Prometheus metrics: request rates and durations, job steps, the queue's gauges, tokens and
/// cost (per step and per org), webhook outcomes, the database pool and the worker.
/// With `AICD_METRICS_TOKEN` set, only for `Authorization: Bearer <token>`.
#[utoipa::path(get, path = "/metrics", tag = "system", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain"),
    (status = 401, description = "AICD_METRICS_TOKEN is set and the request does not bear it", body = crate::error::ErrorBody)))]
pub(crate) async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if !aicd_runtime::ops::authorized(&headers, state.settings().metrics_token.as_ref()) {
        return crate::error::ApiError::unauthenticated("/metrics needs `Authorization: Bearer <AICD_METRICS_TOKEN>`")
            .into_response();
    }
    aicd_runtime::ops::refresh(state.metrics(), state.store()).await;
    ([(header::CONTENT_TYPE, aicd_runtime::metrics::CONTENT_TYPE)], state.metrics().render()).into_response()
}

/// The OpenAPI 3.1 document of this API, generated from the handlers.
#[utoipa::path(get, path = "/openapi.json", tag = "system", responses((status = 200, description = "OpenAPI document", body = Object)))]
pub(crate) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document().to_owned()).into_response()
}

/// The document, rendered once.
pub(crate) fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let (_, doc) = super::routes();
        doc.to_json().unwrap_or_else(|e| format!("{{\"error\": \"cannot render the OpenAPI document: {e}\"}}"))
    })
}

/// Human-readable API reference: every route with its summary, linking to the OpenAPI document.
#[utoipa::path(get, path = "/docs", tag = "system", responses((status = 200, description = "HTML", content_type = "text/html")))]
pub(crate) async fn docs() -> Response {
    static PAGE: OnceLock<String> = OnceLock::new();
    let page = PAGE.get_or_init(|| {
        let (_, doc) = super::routes();
        render_docs(&doc)
    });
    let mut response = Html(page.clone()).into_response();
    // The page is static: inline styles only, no scripts.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
    );
    response
}

fn render_docs(doc: &utoipa::openapi::OpenApi) -> String {
    let mut rows = String::new();
    for (path, item) in &doc.paths.paths {
        let operations = [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PATCH", &item.patch),
            ("PUT", &item.put),
            ("DELETE", &item.delete),
        ];
        for (method, operation) in operations {
            if let Some(op) = operation {
                let summary = op.summary.clone().or_else(|| op.description.clone()).unwrap_or_default();
                rows.push_str(&format!(
                    "<tr><td><code>{method}</code></td><td><code>{}</code></td><td>{}</td></tr>\n",
                    escape(path),
                    escape(&summary)
                ));
            }
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} reference</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem}}\
         td{{padding:.3rem .6rem;border-bottom:1px solid #ddd;vertical-align:top}}</style></head><body>\
         <h1>{title} {version}</h1><p>{description}</p>\
         <p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1).</p>\
         <table>{rows}</table></body></html>",
        title = escape(&doc.info.title),
        version = escape(&doc.info.version),
        description = escape(doc.info.description.as_deref().unwrap_or("")),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
