//! Claiming, leases, fencing and reaping.

use aicd_core::Error;
use aicd_core::jobs::{EventKind, Fence, Job, JobState, JobUpdate, NewEvent};
use aicd_core::store::{DispatchStore, JobStore, QueueStats, TenancyStore};
use aicd_core::tenancy::OrgPatch;
use chrono::Duration;
use serde_json::json;

use crate::jobs::{new_job, org_with_repo};
use crate::support::Harness;

fn fence(worker: &str, job: &Job) -> Fence {
    Fence { worker: worker.into(), epoch: job.epoch, state: job.state }
}

fn to(state: JobState) -> JobUpdate {
    JobUpdate { state: Some(state), ..Default::default() }
}

pub(crate) async fn claims_take_the_oldest_runnable_job_once_with_a_new_epoch(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let first = h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let second = h.core.create_job(&admin, org, new_job(repo.id, Some(2))).await.unwrap();
    let a = h.store.claim_next("w1", Duration::seconds(30)).await.unwrap().expect("a job");
    assert_eq!(a.id, first.id);
    assert_eq!(a.epoch, first.epoch + 1);
    assert_eq!(a.lease.as_ref().unwrap().owner, "w1");
    let b = h.store.claim_next("w2", Duration::seconds(30)).await.unwrap().expect("another job");
    assert_eq!(b.id, second.id, "a held job is not claimed twice");
    assert!(h.store.claim_next("w3", Duration::seconds(30)).await.unwrap().is_none());
}

pub(crate) async fn the_per_org_concurrency_limit_holds_when_claiming(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    h.store.update_org(org, OrgPatch { max_concurrent_jobs: Some(2), ..Default::default() }).await.unwrap();
    for n in 1..=4 {
        h.core.create_job(&admin, org, new_job(repo.id, Some(n))).await.unwrap();
    }
    let (other, other_admin, other_repo) = org_with_repo(h, "Other").await;
    let theirs = h.core.create_job(&other_admin, other, new_job(other_repo.id, Some(1))).await.unwrap();
    let mut claimed = Vec::new();
    while let Some(job) = h.store.claim_next("w", Duration::seconds(30)).await.unwrap() {
        claimed.push(job);
    }
    assert_eq!(claimed.iter().filter(|j| j.org_id == org).count(), 2, "Acme is capped at 2");
    assert!(claimed.iter().any(|j| j.id == theirs.id), "another org is not starved by Acme's backlog");
    // Finishing one frees a slot.
    let done = claimed.iter().find(|j| j.org_id == org).unwrap();
    h.store.update_job(org, done.id, &fence("w", done), to(JobState::Failed)).await.unwrap();
    let next = h.store.claim_next("w", Duration::seconds(30)).await.unwrap().expect("a freed slot");
    assert_eq!(next.org_id, org);
}

pub(crate) async fn a_checkpoint_and_its_transition_are_written_together(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let job = h.store.claim_next("w1", Duration::seconds(30)).await.unwrap().unwrap();
    let (job, _) = h.store.update_job(org, job.id, &fence("w1", &job), to(JobState::Planning)).await.unwrap();
    let update = JobUpdate {
        state: Some(JobState::Coding),
        plan: Some(json!({"summary": "do it", "steps": []})),
        events: vec![
            NewEvent::new("worker:w1", EventKind::StepSucceeded, "planned"),
            NewEvent::new("agent:a", EventKind::Activity, "read README.md"),
        ],
        ..Default::default()
    };
    let (written, events) = h.store.update_job(org, job.id, &fence("w1", &job), update).await.unwrap();
    assert_eq!(written.state, JobState::Coding);
    assert_eq!(written.checkpoints.plan, Some(json!({"summary": "do it", "steps": []})));
    let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
    // What led to the result comes before the state change, the result after it; as stored.
    assert_eq!(kinds, [EventKind::Activity, EventKind::StateChanged, EventKind::StepSucceeded]);
    let stored = h.store.list_events(org, job.id, None, 100).await.unwrap();
    assert_eq!(stored[stored.len() - 3..], events[..]);
    assert_eq!(h.store.get_job(org, job.id).await.unwrap(), written);
}

pub(crate) async fn writes_follow_the_transition_table(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let job = h.store.claim_next("w1", Duration::seconds(30)).await.unwrap().unwrap();
    let result = h.store.update_job(org, job.id, &fence("w1", &job), to(JobState::PrOpen)).await;
    assert!(matches!(result, Err(Error::IllegalTransition { from: JobState::Queued, to: JobState::PrOpen })));
    let (failed, _) = h.store.update_job(org, job.id, &fence("w1", &job), to(JobState::Failed)).await.unwrap();
    assert!(failed.lease.is_none() && failed.finished_at.is_some(), "a terminal state gives the lease up");
    assert!(h.store.claim_next("w1", Duration::seconds(30)).await.unwrap().is_none(), "terminal jobs are not claimed");
}

pub(crate) async fn a_stale_worker_cannot_transition_or_checkpoint_after_lease_expiry(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let stale = h.store.claim_next("w1", Duration::milliseconds(200)).await.unwrap().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Expired but not yet reaped: the old holder is already fenced off.
    let result = h.store.update_job(org, stale.id, &fence("w1", &stale), to(JobState::Planning)).await;
    assert!(matches!(result, Err(Error::LeaseLost { .. })), "{result:?}");
    let beat = h.store.heartbeat(org, stale.id, &fence("w1", &stale), Duration::seconds(30)).await;
    assert!(matches!(beat, Err(Error::LeaseLost { .. })));

    let reaped = h.store.reap_expired_leases().await.unwrap();
    assert_eq!(reaped.len(), 1);
    assert!(reaped[0].message.contains("w1"));
    let fresh = h.store.claim_next("w2", Duration::seconds(30)).await.unwrap().expect("re-queued");
    assert_eq!((fresh.id, fresh.epoch), (stale.id, stale.epoch + 1));

    let checkpoint = JobUpdate { plan: Some(json!({"stale": true})), ..Default::default() };
    let result = h.store.update_job(org, stale.id, &fence("w1", &stale), checkpoint).await;
    assert!(matches!(result, Err(Error::LeaseLost { .. })), "{result:?}");
    let (job, _) = h.store.update_job(org, fresh.id, &fence("w2", &fresh), to(JobState::Planning)).await.unwrap();
    assert_eq!(job.checkpoints.plan, None, "the stale worker wrote nothing");
}

pub(crate) async fn heartbeats_extend_the_lease_and_report_cancellation(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    let created = h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let job = h.store.claim_next("w1", Duration::milliseconds(300)).await.unwrap().unwrap();
    for _ in 0..3 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        assert!(!h.store.heartbeat(org, job.id, &fence("w1", &job), Duration::milliseconds(300)).await.unwrap());
    }
    assert!(h.store.reap_expired_leases().await.unwrap().is_empty(), "a live lease is not reaped");
    let marked = h.core.cancel_job(&admin, org, created.id).await.unwrap();
    assert!(marked.cancel_requested && marked.state == JobState::Queued, "a held job is only marked");
    assert!(h.store.heartbeat(org, job.id, &fence("w1", &job), Duration::seconds(30)).await.unwrap());
    let (cancelled, _) = h.store.update_job(org, job.id, &fence("w1", &job), to(JobState::Cancelled)).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
}

pub(crate) async fn a_released_job_waits_for_its_run_after(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    h.core.create_job(&admin, org, new_job(repo.id, Some(1))).await.unwrap();
    let job = h.store.claim_next("w1", Duration::seconds(30)).await.unwrap().unwrap();
    let later = chrono::Utc::now() + Duration::milliseconds(400);
    let update = JobUpdate { release: true, run_after: Some(later), ..Default::default() };
    let (released, _) = h.store.update_job(org, job.id, &fence("w1", &job), update).await.unwrap();
    assert!(released.lease.is_none());
    assert!(h.store.claim_next("w1", Duration::seconds(30)).await.unwrap().is_none(), "not before run_after");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(h.store.claim_next("w1", Duration::seconds(30)).await.unwrap().is_some());
}

pub(crate) async fn the_queue_depth_counts_queued_jobs_of_every_org(h: &Harness) {
    assert_eq!(h.store.queue_depth().await.unwrap(), 0, "an empty database has no backlog");
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    for n in 1..=3 {
        h.core.create_job(&admin, org, new_job(repo.id, Some(n))).await.unwrap();
    }
    let (other, other_admin, other_repo) = org_with_repo(h, "Other").await;
    let theirs = h.core.create_job(&other_admin, other, new_job(other_repo.id, Some(1))).await.unwrap();
    assert_eq!(h.store.queue_depth().await.unwrap(), 4, "queued jobs of both orgs are counted");

    // A job that moves on, or is cancelled, leaves the queue.
    let job = h.store.claim_next("w1", Duration::seconds(30)).await.unwrap().unwrap();
    h.store.update_job(job.org_id, job.id, &fence("w1", &job), to(JobState::Planning)).await.unwrap();
    h.core.cancel_job(&other_admin, other, theirs.id).await.unwrap();
    assert_eq!(h.store.queue_depth().await.unwrap(), 2);
}

/// Registered here rather than in `main.rs`, next to the test it runs.
pub(crate) async fn queue_stats_count_active_jobs_the_oldest_wait_and_expired_leases(h: &Harness) {
    assert_eq!(h.store.queue_stats().await.unwrap(), QueueStats::default(), "an empty database is idle");
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    for n in 1..=4 {
        h.core.create_job(&admin, org, new_job(repo.id, Some(n))).await.unwrap();
    }
    let (other, other_admin, other_repo) = org_with_repo(h, "Other").await;
    let theirs = h.core.create_job(&other_admin, other, new_job(other_repo.id, Some(1))).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let stats = h.store.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.planning, stats.coding, stats.reviewing, stats.expired_leases), (5, 0, 0, 0, 0));
    // A finished (cancelled) job is not counted.
    h.core.cancel_job(&other_admin, other, theirs.id).await.unwrap();
    assert!(stats.oldest_wait >= std::time::Duration::from_millis(40), "{stats:?}");
    assert!(stats.oldest_wait < std::time::Duration::from_secs(60), "{stats:?}");

    // One job moves to PLANNING under a lease that then lapses, one to CODING under a live one.
    let held = h.store.claim("w1", Duration::milliseconds(300), 2).await.unwrap();
    assert_eq!(held.len(), 2);
    let (a, b) = (&held[0], &held[1]);
    h.store.update_job(a.org_id, a.id, &fence("w1", a), to(JobState::Planning)).await.unwrap();
    let (b, _) = h.store.update_job(b.org_id, b.id, &fence("w1", b), to(JobState::Planning)).await.unwrap();
    let (b, _) = h.store.update_job(b.org_id, b.id, &fence("w1", &b), to(JobState::Coding)).await.unwrap();
    h.store.heartbeat(b.org_id, b.id, &fence("w1", &b), Duration::seconds(60)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let stats = h.store.queue_stats().await.unwrap();
    assert_eq!((stats.queued, stats.planning, stats.coding, stats.reviewing), (2, 1, 1, 0), "{stats:?}");
    assert_eq!(stats.expired_leases, 1, "the lapsed lease is counted until the reaper releases it: {stats:?}");

    h.store.reap_expired_leases().await.unwrap();
    let stats = h.store.queue_stats().await.unwrap();
    assert_eq!((stats.planning, stats.expired_leases), (1, 0), "released, still PLANNING: {stats:?}");

    // Only jobs whose run_after has come count towards the oldest wait.
    let later = chrono::Utc::now() + Duration::hours(1);
    for job in h.store.claim("w2", Duration::seconds(30), 10).await.unwrap() {
        let update = JobUpdate { release: true, run_after: Some(later), ..Default::default() };
        h.store.update_job(job.org_id, job.id, &fence("w2", &job), update).await.unwrap();
    }
    let stats = h.store.queue_stats().await.unwrap();
    assert_eq!(stats.oldest_wait, std::time::Duration::ZERO, "nothing may run yet: {stats:?}");
}

mod queue_depth_tests {
    crate::conformance!(dispatch: the_queue_depth_counts_queued_jobs_of_every_org);
}

mod queue_stats_tests {
    crate::conformance!(dispatch: queue_stats_count_active_jobs_the_oldest_wait_and_expired_leases);
}

pub(crate) async fn a_small_org_is_not_starved_by_another_orgs_backlog(h: &Harness) {
    let (big, big_admin, big_repo) = org_with_repo(h, "Acme").await;
    h.store.update_org(big, OrgPatch { max_concurrent_jobs: Some(1000), ..Default::default() }).await.unwrap();
    for n in 1..=100 {
        h.core.create_job(&big_admin, big, new_job(big_repo.id, Some(n))).await.unwrap();
    }
    let (small, small_admin, small_repo) = org_with_repo(h, "Other").await;
    let theirs = h.core.create_job(&small_admin, small, new_job(small_repo.id, Some(1))).await.unwrap();
    // Four workers claim at the same moment, one job each.
    let claims = (0..4).map(|i| {
        let store = h.store.clone();
        tokio::spawn(async move { store.claim_next(&format!("w{i}"), Duration::seconds(30)).await.unwrap() })
    });
    let mut claimed = Vec::new();
    for claim in claims {
        claimed.extend(claim.await.unwrap());
    }
    assert!(
        claimed.iter().any(|j| j.id == theirs.id),
        "the small org's job is among the first claims: {:?}",
        claimed.iter().map(|j| j.org_id == small).collect::<Vec<_>>()
    );
    // One at a time, the org holding fewer jobs goes first.
    let (late, late_admin, late_repo) = org_with_repo(h, "Late").await;
    let waiting = h.core.create_job(&late_admin, late, new_job(late_repo.id, Some(1))).await.unwrap();
    let next = h.store.claim_next("w9", Duration::seconds(30)).await.unwrap().expect("a job");
    assert_eq!(next.id, waiting.id, "an org holding nothing is served before one holding several");
}

pub(crate) async fn a_batch_claim_is_shared_fairly_within_each_limit(h: &Harness) {
    let (a, a_admin, a_repo) = org_with_repo(h, "Acme").await;
    h.store.update_org(a, OrgPatch { max_concurrent_jobs: Some(4), ..Default::default() }).await.unwrap();
    for n in 1..=6 {
        h.core.create_job(&a_admin, a, new_job(a_repo.id, Some(n))).await.unwrap();
    }
    let (b, b_admin, b_repo) = org_with_repo(h, "Other").await;
    for n in 1..=3 {
        h.core.create_job(&b_admin, b, new_job(b_repo.id, Some(n))).await.unwrap();
    }
    let first = h.store.claim("w1", Duration::seconds(30), 4).await.unwrap();
    let count = |jobs: &[Job], org| jobs.iter().filter(|j| j.org_id == org).count();
    assert_eq!((count(&first, a), count(&first, b)), (2, 2), "four claims shared two and two");
    assert!(first.iter().all(|j| j.lease.as_ref().is_some_and(|l| l.owner == "w1")));
    let rest = h.store.claim("w2", Duration::seconds(30), 10).await.unwrap();
    assert_eq!((count(&rest, a), count(&rest, b)), (2, 1), "Acme stops at its limit of 4, Other runs out");
    assert!(h.store.claim("w3", Duration::seconds(30), 10).await.unwrap().is_empty());
    let mut ids: Vec<_> = first.iter().chain(&rest).map(|j| j.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 7, "no job is claimed twice");
}

pub(crate) async fn the_concurrency_limit_holds_under_many_concurrent_claimers(h: &Harness) {
    let (org, admin, repo) = org_with_repo(h, "Acme").await;
    h.store.update_org(org, OrgPatch { max_concurrent_jobs: Some(3), ..Default::default() }).await.unwrap();
    for n in 1..=30 {
        h.core.create_job(&admin, org, new_job(repo.id, Some(n))).await.unwrap();
    }
    for round in 0..3 {
        let claims = (0..16).map(|i| {
            let store = h.store.clone();
            tokio::spawn(async move { store.claim(&format!("w{round}-{i}"), Duration::seconds(30), 4).await.unwrap() })
        });
        let mut claimed = Vec::new();
        for claim in claims {
            claimed.extend(claim.await.unwrap());
        }
        assert_eq!(claimed.len(), 3, "round {round}: exactly the limit is held, whoever claims");
        // Finish them, freeing the slots for the next round.
        for job in claimed {
            h.store
                .update_job(org, job.id, &fence(&job.lease.as_ref().unwrap().owner, &job), to(JobState::Cancelled))
                .await
                .unwrap();
        }
    }
}
