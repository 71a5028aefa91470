//! Live event streams across replicas: a job run by one replica's worker is followed on another
//! replica's stream (through Redis and the shared timeline), and a reconnect with `Last-Event-ID`
//! resumes exactly after the last event seen.

mod support;

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
    let created = b
        .post(
            &format!("/v1/orgs/{}/repos", org.id),
            &admin,
            json!({"full_name": "acme/demo", "source": {"kind": "local", "path": repo.path().display().to_string()}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let body = "```aicd:write notes.md\nstreamed\n```";
    let job = b
        .post(
            &format!("/v1/orgs/{}/jobs", org.id),
            &developer,
            json!({"repo_id": created.body["id"], "issue": {"number": 3, "title": "Add notes", "body": body}}),
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
    let repo = server
        .post(
            &format!("/v1/orgs/{}/repos", org.id),
            &admin,
            json!({"full_name": "acme/demo", "source": {"kind": "local", "path": dir.path().display().to_string()}}),
        )
        .await;
    let job = server
        .post(
            &format!("/v1/orgs/{}/jobs", org.id),
            &developer,
            json!({"repo_id": repo.body["id"], "issue": {"title": "Something"}}),
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
