//! End-to-end pipeline throughput and latency: N jobs through every state (QUEUED -> PLANNING ->
//! CODING -> REVIEWING -> PR_OPEN) with the instant scripted agent and the memory forge, on
//! PostgreSQL with Redis signals and on SQLite with in-process signals, one process-local worker.
//!
//! `cargo bench -p aicd-core --bench pipeline`; `AICD_BENCH_JOBS` sets N (default 200),
//! `AICD_BENCH_CONCURRENCY` the worker concurrencies to run (default `8,32`) and
//! `AICD_BENCH_BACKENDS` the backends (default `postgres,sqlite`); the PostgreSQL pool has
//! concurrency + 4 connections. `AICD_BENCH_MODE=backlog` enqueues every job before the worker
//! starts and times the drain (the wall time and jobs/s then count from the worker's start). Run without
//! `--bench` (as `cargo test --benches` does) or with `--test` or `--list`, it only pushes a handful
//! of jobs through SQLite, as a smoke test.

use aicd_core::github::{GithubRepoId, InstallationId};
use std::collections::{HashMap, HashSet};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aicd_agent_api::ScriptedAgent;
use aicd_core::forge::MemoryForge;
use aicd_core::jobs::{EventKind, IssueRef, JobState, NewJob, Trigger};
use aicd_core::orchestrator::{Orchestrator, OrchestratorConfig};
use aicd_core::policy::{Policy, PolicyConfig};
use aicd_core::repos::{NewRepo, RepoSource, Repository};
use aicd_core::signals::{Doorbell, EventBus, LocalDoorbell, LocalEventBus, RedisSignals};
use aicd_core::store::{JobStore, PostgresOptions, SqlStore, TenancyStore};
use aicd_core::tenancy::{Actor, NewOrg, NewUser, OrgPatch, Role};
use aicd_core::{Core, CoreOptions, JobId, OrgId};
use aicd_testkit::{TestPostgres, TestRedis, TestSqlite};
use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, Utc};
use tokio::sync::broadcast::error::RecvError;

const REPO: &str = "acme/widgets";
const DEFAULT_JOBS: usize = 200;
const WARM_UP: usize = 10;
const SMOKE_JOBS: usize = 5;
/// Polling the store for missing jobs kicks in after this long without a PR_OPEN event.
const STALL: Duration = Duration::from_secs(2);
/// The states after QUEUED that a job passes through, in order; the last one ends the run.
const STAGES: [JobState; 4] = [JobState::Planning, JobState::Coding, JobState::Reviewing, JobState::PrOpen];
const PHASES: [&str; 4] = ["queued", "planning", "coding", "reviewing+pr"];

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    PostgresRedis,
    Sqlite,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::PostgresRedis => "postgres+redis",
            Backend::Sqlite => "sqlite+local",
        }
    }
}

/// One fresh store, signals, org, repository and forge.
struct World {
    store: Arc<SqlStore>,
    core: Core,
    forge: MemoryForge,
    doorbell: Arc<dyn Doorbell>,
    bus: Arc<dyn EventBus>,
    org: OrgId,
    admin: Actor,
    repo: Repository,
    // Dropped last: they remove the database, the Redis namespace and the SQLite file.
    _redis: Option<TestRedis>,
    _postgres: Option<TestPostgres>,
    _sqlite: Option<TestSqlite>,
}

async fn world(backend: Backend, concurrency: usize) -> Result<World> {
    let (store, doorbell, bus, postgres, redis, sqlite): (_, Arc<dyn Doorbell>, Arc<dyn EventBus>, _, _, _) =
        match backend {
            Backend::PostgresRedis => {
                let db = TestPostgres::new().await;
                SqlStore::migrate_postgres(&db.owner_url()).await.context("migrating PostgreSQL")?;
                let app_url = db.app_url("aicd_app").await;
                let store = SqlStore::postgres(
                    &app_url,
                    PostgresOptions { max_connections: concurrency as u32 + 4, ..Default::default() },
                )
                .await
                .context("opening PostgreSQL")?;
                let redis = TestRedis::new().await;
                let signals =
                    Arc::new(RedisSignals::connect(redis.url(), redis.namespace()).await.context("connecting Redis")?);
                (store, signals.clone(), signals, Some(db), Some(redis), None)
            }
            Backend::Sqlite => {
                let db = TestSqlite::new();
                let store = SqlStore::sqlite(db.path()).await.context("opening SQLite")?;
                (store, Arc::new(LocalDoorbell::new()), Arc::new(LocalEventBus::new()), None, None, Some(db))
            }
        };
    let store = Arc::new(store);
    let core = Core::new(store.clone(), CoreOptions::default());
    let subject = format!("https://idp.example|bench-{}", uuid::Uuid::new_v4());
    let user = core.sign_in(NewUser { subject, email: None, name: None }).await?.id;
    let org = core.create_org(user, NewOrg { name: "Acme".into(), max_concurrent_jobs: None, settings: None }).await?;
    store.update_org(org.id, OrgPatch { max_concurrent_jobs: Some(1000), ..Default::default() }).await?;
    let admin = Actor::user(user, org.id, Role::OrgAdmin);
    core.github_intake().link_installation(org.id, InstallationId::new(1).unwrap(), None, "operator").await?;
    let repo = NewRepo {
        full_name: REPO.into(),
        source: RepoSource::Github {
            installation_id: InstallationId::new(1).unwrap(),
            repo_id: GithubRepoId::new(1).unwrap(),
        },
        default_branch: None,
        settings: None,
    };
    let repo = core.create_repo(&admin, org.id, repo).await?;
    let forge = MemoryForge::new();
    forge.add_repo(REPO, "main", [("README.md", "# Widgets\n")]);
    Ok(World {
        store,
        core,
        forge,
        doorbell,
        bus,
        org: org.id,
        admin,
        repo,
        _redis: redis,
        _postgres: postgres,
        _sqlite: sqlite,
    })
}

/// What the event bus has shown so far.
#[derive(Default)]
struct Seen {
    /// Per job, when each of [`STAGES`] was first seen.
    stages: HashMap<JobId, [Option<Instant>; 4]>,
    /// Jobs that ended anywhere but PR_OPEN.
    failed: HashSet<JobId>,
    /// Events missed because the receiver lagged.
    lagged: u64,
}

/// Records the bus's state changes until aborted. Subscribes before returning.
fn collect(bus: &dyn EventBus) -> (Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let mut rx = bus.subscribe();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let task = tokio::spawn({
        let seen = seen.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(event) if event.kind == EventKind::StateChanged => {
                        let now = Instant::now();
                        let Some(to) = event.to_state else { continue };
                        let mut seen = seen.lock().unwrap();
                        if let Some(i) = STAGES.iter().position(|s| *s == to) {
                            seen.stages.entry(event.job_id).or_default()[i].get_or_insert(now);
                        } else if !to.is_runnable() {
                            seen.failed.insert(event.job_id);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => seen.lock().unwrap().lagged += n,
                    Err(RecvError::Closed) => break,
                }
            }
        }
    });
    (seen, task)
}

struct Enqueued {
    id: JobId,
    at: Instant,
    utc: DateTime<Utc>,
}

/// One measured batch.
struct Batch {
    jobs: Vec<Enqueued>,
    /// When each job reached PR_OPEN.
    done: HashMap<JobId, Instant>,
    started: Instant,
    enqueue_time: Duration,
    /// Jobs whose PR_OPEN was found by polling the store rather than on the bus.
    polled: usize,
}

impl World {
    async fn enqueue(&self, number: u64) -> Result<JobId> {
        let issue = IssueRef {
            number: Some(number),
            title: format!("Issue {number}"),
            body: format!("Please add a file.\n\n```aicd:write f{number}.txt\nfile {number}\n```\n"),
            url: None,
            author: Some("octocat".into()),
        };
        let job =
            NewJob { repo_id: self.repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None };
        // Creating a job rings the doorbell itself.
        let job = self.core.create_job(&self.admin, self.org, job).await?;
        Ok(job.id)
    }

    /// When the store's timeline says the job reached PR_OPEN.
    async fn pr_open_at(&self, job: JobId) -> Result<Option<DateTime<Utc>>> {
        let events = self.store.list_events(self.org, job, None, 1000).await?;
        Ok(events
            .iter()
            .find(|e| e.kind == EventKind::StateChanged && e.to_state == Some(JobState::PrOpen))
            .map(|e| e.at))
    }

    /// Enqueues `count` jobs numbered from `first` and waits until all reach PR_OPEN.
    async fn batch(&self, seen: &Mutex<Seen>, first: u64, count: usize) -> Result<Batch> {
        let started = Instant::now();
        let jobs = self.enqueue_all(first, count).await?;
        let enqueue_time = started.elapsed();
        self.wait(seen, jobs, started, enqueue_time).await
    }

    /// Enqueues `count` jobs numbered from `first`, one after the other.
    async fn enqueue_all(&self, first: u64, count: usize) -> Result<Vec<Enqueued>> {
        let mut jobs = Vec::with_capacity(count);
        for number in first..first + count as u64 {
            let (at, utc) = (Instant::now(), Utc::now());
            jobs.push(Enqueued { id: self.enqueue(number).await?, at, utc });
        }
        Ok(jobs)
    }

    /// Waits until every job of `jobs` reached PR_OPEN.
    async fn wait(
        &self,
        seen: &Mutex<Seen>,
        jobs: Vec<Enqueued>,
        started: Instant,
        enqueue_time: Duration,
    ) -> Result<Batch> {
        let count = jobs.len();
        let deadline = Instant::now() + Duration::from_secs(120) + Duration::from_millis(200) * count as u32;
        let mut done = HashMap::with_capacity(count);
        let (mut polled, mut lag_handled, mut progress_at) = (0, 0, Instant::now());
        // The jobs not yet seen at PR_OPEN; each tick looks at these only, so waiting costs
        // little next to the work measured (and never holds the collector up for long).
        let mut remaining: Vec<&Enqueued> = jobs.iter().collect();
        loop {
            let (lagged, failed) = {
                let seen = seen.lock().unwrap();
                remaining.retain(|job| match seen.stages.get(&job.id).and_then(|s| s[3]) {
                    Some(at) => {
                        done.insert(job.id, at);
                        progress_at = Instant::now();
                        false
                    }
                    None => true,
                });
                (seen.lagged, remaining.iter().find(|j| seen.failed.contains(&j.id)).map(|j| j.id))
            };
            if let Some(id) = failed {
                let job = self.store.get_job(self.org, id).await?;
                bail!("job {id} ended in {:?}: {:?}", job.state, job.failure_reason);
            }
            if remaining.is_empty() {
                break;
            }
            if lagged > lag_handled || progress_at.elapsed() >= STALL {
                // The bus missed something (or is slow): read the missing jobs from the store.
                lag_handled = lagged;
                progress_at = Instant::now();
                let mut still = Vec::with_capacity(remaining.len());
                for job in remaining {
                    let state = self.store.get_job(self.org, job.id).await?;
                    if state.state == JobState::PrOpen {
                        let at = self.pr_open_at(job.id).await?.context("PR_OPEN without its event")?;
                        let after = (at - job.utc).to_std().unwrap_or_default();
                        done.insert(job.id, job.at + after);
                        polled += 1;
                    } else if !state.state.is_runnable() {
                        bail!("job {} ended in {:?}: {:?}", job.id, state.state, state.failure_reason);
                    } else {
                        still.push(job);
                    }
                }
                remaining = still;
                continue;
            }
            if Instant::now() > deadline {
                bail!("timed out: {} of {count} jobs reached PR_OPEN", done.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Batch { jobs, done, started, enqueue_time, polled })
    }
}

/// Figures for one configuration.
struct Report {
    label: String,
    concurrency: usize,
    jobs: usize,
    enqueue: Duration,
    wall: Duration,
    /// Enqueue -> PR_OPEN, sorted, in ms.
    latencies: Vec<f64>,
    polled: usize,
    /// Per phase (see [`PHASES`]), sorted durations in ms, for jobs whose every stage the bus showed.
    phases: [Vec<f64>; 4],
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

async fn measure(backend: Backend, concurrency: usize, jobs: usize, warm_up: usize, backlog: bool) -> Result<Report> {
    let label = backend.label();
    let world = world(backend, concurrency).await.with_context(|| format!("setting up {label}"))?;
    let (seen, collector) = collect(world.bus.as_ref());
    let config = OrchestratorConfig {
        worker_id: format!("bench-{label}-c{concurrency}"),
        concurrency,
        poll_interval: Duration::from_millis(100),
        ..OrchestratorConfig::default()
    };
    let orchestrator = Orchestrator::new(
        world.store.clone(),
        Arc::new(ScriptedAgent::new()),
        Arc::new(world.forge.clone()),
        world.doorbell.clone(),
        world.bus.clone(),
        config,
    );
    // A backlog is enqueued before the worker starts, and timed from its start.
    let backlog = if backlog { Some(world.enqueue_all(1, jobs).await.context("enqueuing the backlog")?) } else { None };
    let worker = orchestrator.spawn_worker();

    let outcome = async {
        let mut all = Vec::with_capacity(warm_up + jobs);
        let batch = match backlog {
            Some(queued) => world.wait(&seen, queued, Instant::now(), Duration::ZERO).await?,
            None => {
                if warm_up > 0 {
                    let warm = world.batch(&seen, 1, warm_up).await.context("warm-up")?;
                    all.extend(warm.jobs.iter().map(|j| j.id));
                }
                world.batch(&seen, warm_up as u64 + 1, jobs).await?
            }
        };
        all.extend(batch.jobs.iter().map(|j| j.id));

        for id in &all {
            let job = world.store.get_job(world.org, *id).await?;
            ensure!(job.state == JobState::PrOpen, "job {id} is {:?}, not PR_OPEN", job.state);
        }
        let prs = world.forge.pull_requests(REPO).len();
        ensure!(prs == all.len(), "{prs} pull requests for {} jobs", all.len());
        Ok(batch)
    }
    .await;
    worker.shutdown(Duration::from_secs(10)).await;
    collector.abort();
    let lagged = seen.lock().unwrap().lagged;
    if lagged > 0 {
        eprintln!("pipeline: the event bus dropped {lagged} events for the collector (the store was read instead)");
    }
    let batch = outcome.with_context(|| format!("{label}, concurrency {concurrency}"))?;

    let end = batch.done.values().max().copied().unwrap_or(batch.started);
    let latencies = sorted(batch.jobs.iter().map(|j| ms(batch.done[&j.id].saturating_duration_since(j.at))).collect());
    let mut phases: [Vec<f64>; 4] = Default::default();
    {
        let seen = seen.lock().unwrap();
        for job in &batch.jobs {
            let Some(stages) = seen.stages.get(&job.id) else { continue };
            let [Some(a), Some(b), Some(c), Some(d)] = *stages else { continue };
            for (phase, (from, to)) in phases.iter_mut().zip([(job.at, a), (a, b), (b, c), (c, d)]) {
                phase.push(ms(to.saturating_duration_since(from)));
            }
        }
    }
    Ok(Report {
        label: label.to_owned(),
        concurrency,
        jobs,
        enqueue: batch.enqueue_time,
        wall: end.saturating_duration_since(batch.started),
        latencies,
        polled: batch.polled,
        phases: phases.map(sorted),
    })
}

fn print(reports: &[Report]) {
    println!();
    println!(
        "{:<16} {:>4} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
        "config", "conc", "N", "enqueue s", "wall s", "jobs/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "polled"
    );
    for r in reports {
        let l = &r.latencies;
        println!(
            "{:<16} {:>4} {:>5} {:>9.2} {:>8.2} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>6}",
            r.label,
            r.concurrency,
            r.jobs,
            r.enqueue.as_secs_f64(),
            r.wall.as_secs_f64(),
            r.jobs as f64 / r.wall.as_secs_f64(),
            percentile(l, 50.0),
            percentile(l, 90.0),
            percentile(l, 99.0),
            l.last().copied().unwrap_or(f64::NAN),
            r.polled,
        );
    }
    println!();
    println!("time per phase, p50 / p90 ms (from the event bus; `queued` counts from the enqueue call)");
    print!("{:<16} {:>4}", "config", "conc");
    for phase in PHASES {
        print!(" {phase:>17}");
    }
    println!();
    for r in reports {
        print!("{:<16} {:>4}", r.label, r.concurrency);
        for phase in &r.phases {
            let cell = format!("{:.1} / {:.1}", percentile(phase, 50.0), percentile(phase, 90.0));
            print!(" {cell:>17}");
        }
        println!();
    }
}

async fn run(smoke: bool) -> Result<()> {
    if smoke {
        let report = measure(Backend::Sqlite, 8, SMOKE_JOBS, 0, false).await?;
        println!("pipeline smoke test: {} jobs reached PR_OPEN on {}", report.jobs, report.label);
        return Ok(());
    }
    let jobs = match std::env::var("AICD_BENCH_JOBS") {
        Ok(v) => {
            v.trim().parse::<usize>().ok().filter(|n| *n > 0).context("AICD_BENCH_JOBS must be a positive integer")?
        }
        Err(_) => DEFAULT_JOBS,
    };
    let concurrencies = list("AICD_BENCH_CONCURRENCY", "8,32")?
        .iter()
        .map(|c| c.parse::<usize>().ok().filter(|c| *c > 0).context("AICD_BENCH_CONCURRENCY: positive integers"))
        .collect::<Result<Vec<_>>>()?;
    let mut configs = Vec::new();
    for backend in list("AICD_BENCH_BACKENDS", "postgres,sqlite")? {
        let backend = match backend.as_str() {
            "postgres" => Backend::PostgresRedis,
            "sqlite" => Backend::Sqlite,
            other => bail!("AICD_BENCH_BACKENDS: unknown backend `{other}` (postgres, sqlite)"),
        };
        configs.extend(concurrencies.iter().map(|c| (backend, *c)));
    }
    let backlog = match std::env::var("AICD_BENCH_MODE").as_deref() {
        Ok("backlog") => true,
        Ok("flow") | Err(_) => false,
        Ok(other) => bail!("AICD_BENCH_MODE: unknown mode `{other}` (flow, backlog)"),
    };
    let mut reports = Vec::new();
    for (backend, concurrency) in configs {
        eprintln!("pipeline: {} with concurrency {concurrency}, {WARM_UP} warm-up + {jobs} jobs", backend.label());
        reports.push(measure(backend, concurrency, jobs, WARM_UP, backlog).await?);
    }
    print(&reports);
    // The coding step compiles the policy (secret detectors, globs) for every job; show its share.
    let rounds = 20;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(Policy::from_config(&PolicyConfig::default())?);
    }
    println!();
    println!(
        "compiling the default policy (once per distinct configuration): {:.2} ms",
        ms(started.elapsed()) / f64::from(rounds)
    );
    Ok(())
}

/// A comma-separated list from the environment, or `default`.
fn list(name: &str, default: &str) -> Result<Vec<String>> {
    let value = std::env::var(name).unwrap_or_else(|_| default.to_owned());
    let items: Vec<String> = value.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    ensure!(!items.is_empty(), "{name} is empty");
    Ok(items)
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing (or `--test`/`--list` when
    // asked), and then a smoke run is enough.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--test" || a == "--list") || !args.iter().any(|a| a == "--bench");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pipeline: no Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(smoke)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pipeline bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
