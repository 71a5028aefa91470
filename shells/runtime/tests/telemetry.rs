//! Trace export end to end: `telemetry::init` with an OTLP endpoint sends spans, as OTLP/HTTP
//! protobuf, to a collector (a stand-in that records what it receives), and dropping the guard
//! flushes them. Its own test binary: the subscriber is process-wide.

use std::sync::{Arc, Mutex};

use aicd_runtime::config::Config;
use aicd_runtime::telemetry;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn collect(State(received): State<Received>, headers: HeaderMap, body: Bytes) -> &'static str {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    received.lock().unwrap().push((content_type, body.to_vec()));
    ""
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_and_flushed_on_drop() {
    let received: Received = Arc::default();
    let collector = Router::new().route("/v1/traces", post(collect)).with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let config = Config::from_lookup(|name| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        "OTEL_SERVICE_NAME" => Some("aicd-telemetry-test".into()),
        "RUST_LOG" => Some("info".into()),
        _ => None,
    })
    .unwrap();
    let guard = telemetry::init(&config, "aicd-default").unwrap();
    assert!(guard.exporting());
    assert!(telemetry::init(&config, "aicd-default").is_err(), "a second subscriber is refused");

    tracing::info_span!("a_traced_step", job_id = "j-1").in_scope(|| tracing::info!("inside the span"));
    drop(guard);

    let received = received.lock().unwrap().clone();
    assert!(!received.is_empty(), "the collector received the spans when the guard was dropped");
    let (content_type, body) = &received[0];
    assert_eq!(content_type, "application/x-protobuf");
    let contains = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"a_traced_step"), "the span is in the export");
    assert!(contains(b"aicd-telemetry-test"), "service.name comes from OTEL_SERVICE_NAME");
}
