//! Live event streams across replicas: a job run by one replica's worker is followed on another
//! replica's stream (through Redis and the shared timeline), and a reconnect with `Last-Event-ID`
//! resumes exactly after the last event seen.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use support::{TestServer, git_repo, read_stream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_run_on_one_replica_streams_on_another_and_resumes_after_last_event_id() {
    // Replica A runs the worker; replica B only serves the API. Same database, same Redis.
    let a = TestServer::postgres(&[("AICD_EMBEDDED_WORKER", "true"), ("AICD_POLL_INTERVAL_MS", "50")]).await;
    let b = a.replica(&[("AICD_EMBEDDED_WORKER", "false")]).await;
    let (org, _, developer, admin) = a.org_with_keys("acme").await;
    let repo = git_repo();
    let repo_id = b.local_repo(&org, &admin, repo.path()).await;
    let body = "```aicd:write notes.md\nstreamed\n```";
    let job = b
        .post(
            &format!("/v1/orgs/{}/jobs", org.id),
            &developer,
            json!({"repo_id": repo_id, "issue": {"number": 3, "title": "Add notes", "body": body}}),
        )
        .await;
    assert_eq!(job.status, StatusCode::CREATED, "{}", job.text);
    let stream = format!("/v1/orgs/{}/jobs/{}/events/stream", org.id, job.body["id"].as_str().unwrap());

    let events = read_stream(&b, &stream, &developer, None, "pr_open").await;
    let states: Vec<&str> = events.iter().filter_map(|e| e.data["to_state"].as_str()).collect();
    assert_eq!(states, ["planning", "coding", "reviewing", "pr_open"]);
    assert_eq!(events[0].data["kind"], "created", "the stream starts at the beginning of the timeline");
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, without duplicates: {ids:?}");

    // Reconnecting (to the other replica) after the third event resumes with the fourth.
    let resumed = read_stream(&a, &stream, &developer, Some(ids[2]), "pr_open").await;
    let resumed_ids: Vec<i64> = resumed.iter().map(|e| e.id).collect();
    assert_eq!(resumed_ids, ids[3..], "exactly the events after Last-Event-ID");

    // The stream ends by itself once the pull request is open (waiting for nothing), and a
    // reconnection after the last event answers 204, so EventSource clients stop.
    let ended = tokio::time::timeout(Duration::from_secs(20), read_stream(&a, &stream, &developer, Some(ids[2]), ""))
        .await
        .expect("the stream of a job with its pull request open ends");
    let ended_ids: Vec<i64> = ended.iter().map(|e| e.id).collect();
    let timeline = a.get(&format!("{}?after={}", stream.trim_end_matches("/stream"), ids[2]), &developer).await;
    let stored: Vec<i64> =
        timeline.body["items"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    // A note may still be written just after PR_OPEN: the stream sent what was stored when it
    // ended, in order and from where it resumed.
    assert!(!ended_ids.is_empty() && stored.starts_with(&ended_ids), "{ended_ids:?} then the end; stored {stored:?}");
    let last = *stored.last().unwrap();
    let done = a
        .http
        .get(a.url(&stream))
        .bearer_auth(&developer)
        .header("last-event-id", last.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::NO_CONTENT);
    let earlier = a
        .http
        .get(a.url(&stream))
        .bearer_auth(&developer)
        .header("last-event-id", ids[2].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(earlier.status(), StatusCode::OK, "what is left is still streamed");

    // Another org cannot open the stream.
    let (_, _, _, outsider) = b.org_with_keys("globex").await;
    let reply = b.get(&stream, &outsider).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_a_finished_job_replays_the_timeline_and_ends() {
    let server = TestServer::postgres(&[]).await;
    let (org, viewer, developer, admin) = server.org_with_keys("acme").await;
    let dir = support::local_dir();
    let repo_id = server.local_repo(&org, &admin, dir.path()).await;
    let job = server
        .post(
            &format!("/v1/orgs/{}/jobs", org.id),
            &developer,
            json!({"repo_id": repo_id, "issue": {"title": "Something"}}),
        )
        .await;
    let id = job.body["id"].as_str().unwrap();
    let cancelled = server.post(&format!("/v1/orgs/{}/jobs/{id}/cancel", org.id), &developer, json!({})).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text);
    let events = read_stream(&server, &format!("/v1/orgs/{}/jobs/{id}/events/stream", org.id), &viewer, None, "").await;
    let kinds: Vec<&str> = events.iter().map(|e| e.data["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"created"));
    assert_eq!(events.last().unwrap().data["to_state"], "cancelled", "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_after_its_maximum_lifetime_and_resumes_with_last_event_id() {
    let server = TestServer::postgres(&[("AICD_STREAM_MAX_SECS", "1")]).await;
    let (org, viewer, developer, admin) = server.org_with_keys("acme").await;
    let dir = support::local_dir();
    let repo_id = server.local_repo(&org, &admin, dir.path()).await;
    let job = server
        .post(&format!("/v1/orgs/{}/jobs", org.id), &developer, json!({"repo_id": repo_id, "issue": {"title": "Wait"}}))
        .await;
    // No worker runs here: the job stays queued, and only the lifetime ends the stream.
    let stream = format!("/v1/orgs/{}/jobs/{}/events/stream", org.id, job.body["id"].as_str().unwrap());
    let events = tokio::time::timeout(Duration::from_secs(20), read_stream(&server, &stream, &viewer, None, ""))
        .await
        .expect("the stream ends after AICD_STREAM_MAX_SECS");
    assert_eq!(events.len(), 1, "the created event");
    let again = read_stream(&server, &stream, &viewer, Some(events[0].id), "");
    let resumed = tokio::time::timeout(Duration::from_secs(20), again).await.expect("and again");
    assert!(resumed.is_empty(), "nothing is repeated: {:?}", resumed.iter().map(|e| e.id).collect::<Vec<_>>());
}
