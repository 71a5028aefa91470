//! Property: whatever sequence of writes workers attempt, the store records only transitions the
//! table allows, and a terminal job never moves again.

#[path = "support/mod.rs"]
mod support;

use aicd_core::github::{GithubRepoId, InstallationId};
use aicd_core::jobs::{Fence, IssueRef, JobState, JobUpdate, NewJob, TRANSITIONS, Trigger};
use aicd_core::repos::{NewRepo, RepoSource};
use aicd_core::store::{DispatchStore, JobStore, RepoStore, TenancyStore};
use aicd_core::tenancy::NewOrg;
use proptest::prelude::*;

fn any_state() -> impl Strategy<Value = JobState> {
    proptest::sample::select(JobState::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_store_records_only_table_transitions(requests in proptest::collection::vec(any_state(), 1..24)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let h = support::sqlite().await;
            let org = h.store.create_org(NewOrg { name: "P".into(), max_concurrent_jobs: None, settings: None }, None).await.unwrap();
            let repo = NewRepo {
                full_name: "p/r".into(),
                source: RepoSource::Github { installation_id: InstallationId::new(1).unwrap(), repo_id: GithubRepoId::new(1).unwrap() },
                default_branch: None,
                settings: None,
            };
            let repo = h.store.create_repo(org.id, repo).await.unwrap();
            let issue = IssueRef { number: None, title: "t".into(), body: String::new(), url: None, author: None };
            let new = NewJob { repo_id: repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None };
            let job = h.store.create_job(org.id, new, "test").await.unwrap();
            let claimed = h.store.claim_next("w", chrono::Duration::seconds(60)).await.unwrap().unwrap();
            let mut fence = Fence { worker: "w".into(), epoch: claimed.epoch, state: claimed.state };
            for to in requests {
                let update = JobUpdate { state: Some(to), ..Default::default() };
                if let Ok((written, _)) = h.store.update_job(org.id, job.id, &fence, update).await {
                    fence.state = written.state;
                }
            }
            let events = h.store.list_events(org.id, job.id, None, 1000).await.unwrap();
            let mut state = JobState::Queued;
            for change in events.iter().filter(|e| e.from_state.is_some()) {
                let (from, to) = (change.from_state.unwrap(), change.to_state.unwrap());
                assert_eq!(from, state, "events chain");
                assert!(!state.is_terminal(), "moved after {state}");
                assert!(TRANSITIONS.iter().any(|(f, next)| *f == from && next.contains(&to)), "{from} -> {to}");
                state = to;
            }
            assert_eq!(h.store.get_job(org.id, job.id).await.unwrap().state, state);
        });
    }
}
