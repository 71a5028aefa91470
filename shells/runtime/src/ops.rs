//! The operational endpoints every binary serves: `GET /health` (the process is up), `GET /ready`
//! (its dependencies answer) and `GET /metrics` (Prometheus).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicd_core::store::{DispatchStore, SqlStore};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::assemble::Readiness;
use crate::config::Secret;
use crate::metrics::{CONTENT_TYPE, Metrics};

/// How long `/metrics` waits for the queue's gauges before rendering the last known values.
const QUEUE_STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the gauges read from the database are reused: scrapes within this time (several
/// Prometheus servers, a person's curl) cost the database nothing.
pub const QUEUE_STATS_TTL: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Ops {
    metrics: Metrics,
    readiness: Readiness,
    store: Arc<SqlStore>,
    started: Instant,
    token: Option<Arc<Secret>>,
}

/// The routes `GET /health`, `GET /ready` and `GET /metrics`, as a router to serve alone or to
/// merge into another.
///
/// - `/health`: 200 `{"status":"ok","version":...,"uptime_secs":...}` while the process runs.
/// - `/ready`: 200 when every check of `readiness` passes, else 503; the body is the
///   [`crate::assemble::ReadinessReport`].
/// - `/metrics`: refreshes the gauges read from `store_for_depth` ([`refresh`]), then renders
///   `metrics` as OpenMetrics text. With `metrics_token`, only for a request bearing it
///   ([`authorized`]); 401 otherwise.
pub fn router(
    metrics: Metrics,
    readiness: Readiness,
    store_for_depth: Arc<SqlStore>,
    metrics_token: Option<Secret>,
) -> Router {
    let token = metrics_token.map(Arc::new);
    let ops = Ops { metrics, readiness, store: store_for_depth, started: Instant::now(), token };
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(ops)
}

async fn health(State(ops): State<Ops>) -> Response {
    let body = serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": ops.started.elapsed().as_secs(),
    });
    axum::Json(body).into_response()
}

async fn ready(State(ops): State<Ops>) -> Response {
    let report = ops.readiness.check().await;
    let status = if report.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(report)).into_response()
}

async fn metrics_text(State(ops): State<Ops>, headers: HeaderMap) -> Response {
    if !authorized(&headers, ops.token.as_deref()) {
        let body = serde_json::json!({"error": {"code": "unauthenticated",
            "message": "/metrics needs `Authorization: Bearer <AICD_METRICS_TOKEN>`"}});
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], axum::Json(body)).into_response();
    }
    refresh(&ops.metrics, &ops.store).await;
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], ops.metrics.render()).into_response()
}

/// Whether a request with `headers` may read `/metrics`: always without a `token`, else only
/// with `Authorization: Bearer <token>` (compared in constant time).
pub fn authorized(headers: &HeaderMap, token: Option<&Secret>) -> bool {
    let Some(token) = token else { return true };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, given)| given.trim().as_bytes())
        .unwrap_or_default();
    let expected = token.expose().as_bytes();
    given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// Refreshes the gauges read from the database before a scrape: the queue's
/// ([`Metrics::set_queue_stats`]: at most once per [`QUEUE_STATS_TTL`] across concurrent
/// scrapes, keeping the last values if the database does not answer within 2 s) and the pool's
/// ([`Metrics::set_pool_stats`]).
pub async fn refresh(metrics: &Metrics, store: &SqlStore) {
    refresh_within(metrics, store, QUEUE_STATS_TTL).await;
}

/// [`refresh`], reusing the queue's gauges for `ttl`.
async fn refresh_within(metrics: &Metrics, store: &SqlStore, ttl: Duration) {
    if metrics.queue_refresh_due(ttl) {
        match tokio::time::timeout(QUEUE_STATS_TIMEOUT, store.queue_stats()).await {
            Ok(Ok(stats)) => metrics.set_queue_stats(&stats),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not read the queue's gauges"),
            Err(_) => tracing::warn!("reading the queue's gauges timed out"),
        }
    }
    metrics.set_pool_stats(store.pool_stats());
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use aicd_testkit::TestSqlite;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(router: &Router, path: &str) -> (StatusCode, String, String) {
        let request = Request::get(path).body(Body::empty()).unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn health_ready_and_metrics_answer() {
        let db = TestSqlite::new();
        let store = Arc::new(SqlStore::sqlite(db.path()).await.unwrap());
        let metrics = Metrics::new();
        metrics.set_queue_depth(99);
        let router = router(metrics, Readiness::new(store.clone(), None), store.clone(), None);

        let (status, content_type, body) = get(&router, "/health").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("application/json"), "{content_type}");
        let health: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(health["status"], "ok");
        assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
        assert!(health["uptime_secs"].is_u64(), "{health}");

        let (status, _, body) = get(&router, "/ready").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(report["ready"], true);
        assert_eq!(report["checks"][0]["name"], "database");

        let (status, content_type, body) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, CONTENT_TYPE);
        assert!(body.lines().any(|l| l == "aicd_jobs_queued 0"), "the depth is refreshed from the store:\n{body}");

        store.close().await;
        let (status, _, body) = get(&router, "/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let (status, _, body) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK, "metrics render without the database");
        assert!(body.lines().any(|l| l == "aicd_jobs_queued 0"), "the last value is kept:\n{body}");
    }

    #[tokio::test]
    async fn the_queue_gauges_are_reused_between_close_scrapes() {
        let db = TestSqlite::new();
        let store = Arc::new(SqlStore::sqlite(db.path()).await.unwrap());
        let metrics = Metrics::new();
        refresh(&metrics, &store).await;
        // A value the database would overwrite with 0 survives a scrape right after: no query.
        metrics.set_queue_depth(42);
        refresh(&metrics, &store).await;
        assert!(metrics.render().lines().any(|l| l == "aicd_jobs_queued 42"), "the gauges were read again");
        // Once they are older than the TTL, the next scrape reads them again.
        refresh_within(&metrics, &store, Duration::ZERO).await;
        assert!(metrics.render().lines().any(|l| l == "aicd_jobs_queued 0"), "stale gauges are refreshed");
    }

    #[tokio::test]
    async fn a_metrics_token_is_required_when_set() {
        let db = TestSqlite::new();
        let store = Arc::new(SqlStore::sqlite(db.path()).await.unwrap());
        let token = Secret::new("c41b7e09d2a85f36e1b0d9c7a4f2e583");
        let router = router(Metrics::new(), Readiness::new(store.clone(), None), store, Some(token.clone()));
        for auth in [None, Some("Bearer wrong"), Some("Basic c41b7e09d2a85f36e1b0d9c7a4f2e583"), Some("Bearer c41b")] {
            let mut request = Request::get("/metrics");
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            let response = router.clone().oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        }
        let request = Request::get("/metrics")
            .header(header::AUTHORIZATION, format!("bearer {}", token.expose()))
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let (status, _, _) = get(&router, "/health").await;
        assert_eq!(status, StatusCode::OK, "/health and /ready stay open");
    }

    #[tokio::test]
    async fn serve_stops_when_told() {
        let db = TestSqlite::new();
        let store = Arc::new(SqlStore::sqlite(db.path()).await.unwrap());
        let router = router(Metrics::new(), Readiness::new(store.clone(), None), store, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, async {
            let _ = stopped.await;
        }));
        stop.send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), server).await.expect("the server stops");
        assert!(result.unwrap().is_ok());
    }
}
