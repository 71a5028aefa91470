//! The installation token never reaches the logs. A test binary of its own: `tracing` caches
//! per callsite whether anyone listens, and tests running on other threads without a subscriber
//! would race this one's capture.

mod api_support;

use std::sync::{Arc, Mutex};

use aicd_core::forge::{CommentId, Forge};
use api_support::*;
use chrono::TimeDelta;
use serde_json::json;

/// Everything logged while publishing, at every level, never contains the token.
#[tokio::test]
async fn the_token_never_reaches_the_logs() {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests of this binary run on other threads without a subscriber; make sure no callsite
    // stays cached as uninteresting.
    tracing::callsite::rebuild_interest_cache();

    let (server, tokens) = github().await;
    mount_token(&server, INSTALLATION, TimeDelta::hours(1)).await;
    mock(&server, "POST", &format!("{REPO}/issues/7/comments"), json_response(201, json!({"id": 1}))).await;
    mock(&server, "PATCH", &format!("{REPO}/issues/comments/1"), json_response(500, json!({"message": "oops"}))).await;
    let Setup { forge, repo, _db, .. } = setup(&tokens).await;
    tracing::callsite::rebuild_interest_cache();
    forge.post_comment(&repo, 7, "hello").await.unwrap();
    forge.update_comment(&repo, 7, CommentId(1), "hello").await.unwrap_err();

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("access_tokens"), "the capture works: {logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
    assert!(!logs.contains("ghs_"), "{logs}");
}
