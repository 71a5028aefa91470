//! The chaos campaign: several `aicd-worker` processes drive many jobs on a PostgreSQL server and
//! a Redis of the test's own while workers are killed with SIGKILL at random moments (and
//! replaced), PostgreSQL is crashed and restarted, and Redis goes away and comes back (with
//! replacement workers started while it is down). Afterwards every job is at PR_OPEN exactly
//! once: one pull request each, each state entered once and in order (no two workers wrote the
//! same transition), each step's result written once (a finished step is never re-run), and each
//! step charged once, plus at most once for each of its attempts cut short (failed, or its lease
//! expired).
//!
//! `.ci/run` runs a bounded campaign (`AICD_CHAOS_KILLS`, default 20 kills). A long one:
//! `AICD_CHAOS_KILLS=300 AICD_CHAOS_JOBS=600 cargo test -p aicd-worker --test chaos -- --nocapture`,
//! which prints its tally, including how long takeovers took after each kill.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicd_core::forge::{LocalGitForge, LocalRoots};
use aicd_core::jobs::{EventKind, IssueRef, JobState, NewJob, Trigger};
use aicd_core::repos::{NewRepo, RepoSource};
use aicd_core::store::{JobStore, PostgresOptions, SqlStore, TenancyStore};
use aicd_core::tenancy::{Actor, NewOrg, OrgPatch};
use aicd_core::{Core, CoreOptions};
use aicd_testkit::files::commit_all;
use aicd_testkit::{PgCluster, RedisServer, TestPostgres};

/// The lease the workers use; takeovers are measured against it.
const LEASE_SECS: u64 = 2;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A small deterministic generator, so a failing campaign can be replayed (`AICD_CHAOS_SEED`).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One `aicd-worker` process.
struct Worker {
    id: String,
    child: Child,
    killed_at: Option<Instant>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Campaign {
    env: Vec<(String, String)>,
    logs: tempfile::TempDir,
    started: usize,
}

impl Campaign {
    fn worker(&mut self, delay_ms: u64) -> Worker {
        self.started += 1;
        let id = format!("chaos-{}", self.started);
        let log = std::fs::File::create(self.logs.path().join(format!("{id}.log"))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_aicd-worker"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs([
                ("AICD_WORKER_ID", id.as_str()),
                ("AICD_SCRIPTED_AGENT_DELAY_MS", &delay_ms.to_string()),
                ("RUST_LOG", "warn"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("a worker starts");
        Worker { id, child, killed_at: None }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_job_reaches_pr_open_exactly_once_through_kills_and_outages() {
    let kills = setting("AICD_CHAOS_KILLS", 20);
    let jobs = setting("AICD_CHAOS_JOBS", 60);
    let mut rng = Rng(setting("AICD_CHAOS_SEED", 0x5eed_cafe) as u64 | 1);

    let cluster = PgCluster::start();
    let db = TestPostgres::on_server(&cluster.url()).await;
    SqlStore::migrate_postgres(&db.owner_url()).await.unwrap();
    let app_url = db.app_url("aicd_app").await;
    let redis_port = RedisServer::free_port();
    let mut redis = Some(RedisServer::start(redis_port).await);

    let store = Arc::new(SqlStore::postgres(&app_url, PostgresOptions::default()).await.unwrap());
    let roots = LocalRoots::new([std::env::temp_dir()]);
    let core =
        Core::new(store.clone(), CoreOptions { allow_local_repos: true, local_roots: roots, ..CoreOptions::default() });
    let (org, key, _) =
        core.bootstrap_org(NewOrg { name: "Acme".into(), max_concurrent_jobs: None, settings: None }).await.unwrap();
    store.update_org(org.id, OrgPatch { max_concurrent_jobs: Some(1000), ..Default::default() }).await.unwrap();
    let admin = Actor::api_key(key.id, org.id, key.role);
    let checkout = tempfile::Builder::new().prefix("aicd-chaos-").tempdir().unwrap();
    std::fs::write(checkout.path().join("README.md"), "# Chaos\n").unwrap();
    commit_all(checkout.path(), "Initial commit");
    let path = checkout.path().canonicalize().unwrap().to_str().unwrap().to_owned();
    let repo = NewRepo {
        full_name: "acme/chaos".into(),
        source: RepoSource::Local { path },
        default_branch: Some("main".into()),
        settings: None,
    };
    let repo = core.create_repo(&admin, org.id, repo).await.unwrap();
    let mut ids = Vec::with_capacity(jobs);
    for n in 1..=jobs as u64 {
        let issue = IssueRef {
            number: Some(n),
            title: format!("File {n}"),
            body: format!("```aicd:write f{n}.txt\nfile {n}\n```\n"),
            url: None,
            author: None,
        };
        let job = NewJob { repo_id: repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None };
        ids.push(core.create_job(&admin, org.id, job).await.unwrap().id);
    }

    let mut campaign = Campaign {
        env: vec![
            ("DATABASE_URL".into(), app_url.clone()),
            ("REDIS_URL".into(), RedisServer::url_for(redis_port)),
            ("AICD_WORKER_LISTEN_ADDR".into(), "127.0.0.1:0".into()),
            ("AICD_WORKER_CONCURRENCY".into(), "4".into()),
            ("AICD_LEASE_SECS".into(), LEASE_SECS.to_string()),
            // An attempt cut short by a kill counts (that is what stops a job that crashes its
            // worker every time); at this campaign's kill rate, a job's step may be cut short
            // more often than a production limit allows.
            ("AICD_MAX_ATTEMPTS".into(), "100".into()),
            ("AICD_POLL_INTERVAL_MS".into(), "100".into()),
            ("AICD_LOCAL_REPO_ROOTS".into(), std::env::temp_dir().display().to_string()),
        ],
        logs: tempfile::Builder::new().prefix("aicd-chaos-logs-").tempdir().unwrap(),
        started: 0,
    };
    let mut workers: Vec<Worker> = (0..3).map(|_| campaign.worker(50 + rng.below(250))).collect();
    let mut killed: Vec<Worker> = Vec::new();
    let (pg_restart_at, redis_down_at) = (kills / 3, 2 * kills / 3);
    let mut redis_back_at = None;
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(150 + rng.below(450))).await;
        let victim = rng.below(workers.len() as u64) as usize;
        let mut dead = workers.swap_remove(victim);
        dead.child.kill().unwrap();
        dead.child.wait().unwrap();
        dead.killed_at = Some(Instant::now());
        killed.push(dead);
        if kill == pg_restart_at {
            cluster.restart();
        }
        if kill == redis_down_at {
            redis = None;
            redis_back_at = Some(Instant::now() + Duration::from_secs(3));
        }
        // The replacement starts at once, also while Redis is down.
        workers.push(campaign.worker(50 + rng.below(250)));
        if redis.is_none() && redis_back_at.is_some_and(|at| Instant::now() >= at) {
            redis = Some(RedisServer::start(redis_port).await);
        }
    }
    if redis.is_none() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        redis = Some(RedisServer::start(redis_port).await);
    }

    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let mut open = 0;
        for id in &ids {
            // The test's own connections may have been cut by the restart: look again.
            let Ok(job) = store.get_job(org.id, *id).await else { break };
            assert!(job.state.is_runnable() || job.state == JobState::PrOpen, "{job:#?}");
            open += usize::from(job.state == JobState::PrOpen);
        }
        if open == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "{open} of {} jobs at PR_OPEN after the campaign", ids.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(workers);
    drop(redis);

    // Exactly once: one pull request per job, each state entered once, one usage record per step.
    let prs = LocalGitForge::new().pull_requests(&repo).await.unwrap();
    assert_eq!(prs.len(), ids.len(), "one pull request per job");
    let usage = store.list_usage(org.id, chrono::Utc::now() - chrono::Duration::hours(1), chrono::Utc::now()).await;
    let mut per_job: HashMap<_, Vec<String>> = HashMap::new();
    for record in usage.unwrap() {
        per_job.entry(record.job_id.unwrap()).or_default().push(record.step);
    }
    let mut takeovers = Vec::new();
    for id in &ids {
        let steps = per_job.remove(id).unwrap_or_default();
        let events = store.list_events(org.id, *id, None, 1000).await.unwrap();
        let timeline: Vec<String> = events.iter().map(|e| format!("{} {:?} {}", e.actor, e.kind, e.message)).collect();
        // Each step's result was written once: plan, change, approval, pull request.
        let results = events.iter().filter(|e| e.kind == EventKind::StepSucceeded).count();
        assert_eq!(results, 4, "job {id}: each step finished once: {timeline:#?}");
        // Each step was charged once, plus at most once per attempt that ended without its
        // result: on record as failed, or cut off by its lease expiring (a call that completed
        // after its worker lost the job is paid for, not written).
        let mut state = JobState::Queued;
        let mut interrupted: HashMap<JobState, usize> = HashMap::new();
        for event in &events {
            match event.kind {
                EventKind::StateChanged => state = event.to_state.unwrap_or(state),
                EventKind::StepFailed => *interrupted.entry(state).or_default() += 1,
                EventKind::Note if event.message.contains("expired") => *interrupted.entry(state).or_default() += 1,
                _ => {}
            }
        }
        for (step, in_state) in
            [("planning", JobState::Planning), ("coding", JobState::Coding), ("reviewing", JobState::Reviewing)]
        {
            let charged = steps.iter().filter(|s| *s == step).count();
            let cut_short = interrupted.get(&in_state).copied().unwrap_or_default();
            assert!(
                (1..=1 + cut_short).contains(&charged),
                "job {id}: {step} charged {charged} times with {cut_short} attempts cut short: {timeline:#?}"
            );
        }
        let entered: Vec<_> = events.iter().filter(|e| e.kind == EventKind::StateChanged).map(|e| e.to_state).collect();
        let expected = [JobState::Planning, JobState::Coding, JobState::Reviewing, JobState::PrOpen].map(Some);
        assert_eq!(entered, expected, "job {id}: each state entered once, in order");
        // Takeovers: when the lease of a killed worker was reaped.
        for event in events.iter().filter(|e| e.kind == EventKind::Note && e.message.contains("expired")) {
            let owner = event.message.split_whitespace().nth(4).unwrap_or_default();
            if let Some(dead) = killed.iter().find(|w| w.id == owner) {
                let at = dead.killed_at.unwrap();
                let noted = event.at;
                takeovers.push((noted, at));
            }
        }
    }
    let takeover_ms: Vec<i64> = {
        let now_utc = chrono::Utc::now();
        let now = Instant::now();
        takeovers
            .iter()
            .map(|(noted, killed_at)| {
                let killed_utc = now_utc - chrono::Duration::from_std(now - *killed_at).unwrap();
                (*noted - killed_utc).num_milliseconds()
            })
            .collect()
    };
    let mean = takeover_ms.iter().sum::<i64>() / (takeover_ms.len().max(1) as i64);
    let max = takeover_ms.iter().max().copied().unwrap_or_default();
    println!(
        "chaos: {} jobs, {kills} SIGKILLs, a PostgreSQL crash-restart, a 3 s Redis outage; every job at PR_OPEN \
         exactly once; {} leases taken over after kills, {mean} ms on average (max {max} ms) from the kill to \
         the lease being reaped, with {LEASE_SECS} s leases",
        ids.len(),
        takeover_ms.len()
    );
    drop(cluster);
}
