//! The `aicd-worker` binary as a real process.
//!
//! The crash-safety proof: a worker **process** is killed with SIGKILL in the middle of a step;
//! another worker takes the job once the lease expires and finishes it; exactly one PR exists;
//! finished steps were not re-run. It runs on PostgreSQL with Redis signals, and on the embedded
//! SQLite file shared by two processes (WAL mode) with in-process signals.
//!
//! Also: SIGTERM mid-step stops the worker within its grace period and releases the lease, a
//! worker whose Redis is down starts and finishes a job by polling, and a bad configuration exits
//! non-zero naming the variable without ever printing a password.
//!
//! Each test sets up, in the test process, a fresh database, a git repository in a temporary
//! directory, an organization, the repository registered as a local one, and a job whose issue
//! asks (through the scripted agent) for `hello.txt`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aicd_core::forge::LocalGitForge;
use aicd_core::jobs::{EventKind, IssueRef, Job, JobState, NewJob, Trigger};
use aicd_core::repos::{NewRepo, RepoSource, Repository};
use aicd_core::store::{JobStore, PostgresOptions, SqlStore};
use aicd_core::tenancy::{Actor, NewOrg};
use aicd_core::{Core, CoreOptions, JobId, OrgId};
use aicd_testkit::{TestPostgres, TestRedis, TestSqlite};

const HELLO: &str = "Hello from a worker that survived a crash!";

/// A test's database, repository, organization and job, and how workers reach the database.
struct World {
    store: Arc<SqlStore>,
    core: Core,
    admin: Actor,
    org: OrgId,
    repo: Repository,
    repo_dir: tempfile::TempDir,
    logs: tempfile::TempDir,
    /// The variables telling a worker where the database (and Redis, if any) is.
    env: Vec<(&'static str, String)>,
    _postgres: Option<TestPostgres>,
    _redis: Option<TestRedis>,
    _sqlite: Option<TestSqlite>,
}

async fn postgres_and_redis() -> World {
    let db = TestPostgres::new().await;
    SqlStore::migrate_postgres(&db.owner_url()).await.expect("migrations apply");
    let app_url = db.app_url("aicd_app").await;
    let store = SqlStore::postgres(&app_url, PostgresOptions::default()).await.expect("the store opens");
    let redis = TestRedis::new().await;
    let env = vec![
        ("DATABASE_URL", app_url),
        ("REDIS_URL", redis.url().to_owned()),
        ("AICD_REDIS_NAMESPACE", redis.namespace().to_owned()),
    ];
    World::new(store, env, Some(db), Some(redis), None).await
}

async fn sqlite() -> World {
    let db = TestSqlite::new();
    let store = SqlStore::sqlite(db.path()).await.expect("the store opens");
    let env = vec![("AICD_DATA_DIR", db.dir().to_str().expect("a UTF-8 path").to_owned())];
    World::new(store, env, None, None, Some(db)).await
}

impl World {
    async fn new(
        store: SqlStore,
        env: Vec<(&'static str, String)>,
        postgres: Option<TestPostgres>,
        redis: Option<TestRedis>,
        sqlite: Option<TestSqlite>,
    ) -> World {
        let store = Arc::new(store);
        let roots = aicd_core::forge::LocalRoots::new([std::env::temp_dir()]);
        let core = Core::new(
            store.clone(),
            CoreOptions { allow_local_repos: true, local_roots: roots, ..CoreOptions::default() },
        );
        let (org, key, _secret) = core
            .bootstrap_org(NewOrg { name: "Acme".into(), max_concurrent_jobs: None, settings: None })
            .await
            .unwrap();
        let admin = Actor::api_key(key.id, org.id, key.role);
        let repo_dir = git_repository();
        let path = repo_dir.path().canonicalize().unwrap().to_str().expect("a UTF-8 path").to_owned();
        let new_repo = NewRepo {
            full_name: "acme/hello".into(),
            source: RepoSource::Local { path },
            default_branch: Some("main".into()),
            settings: None,
        };
        let repo = core.create_repo(&admin, org.id, new_repo).await.unwrap();
        let logs = tempfile::Builder::new().prefix("aicd-worker-logs-").tempdir().unwrap();
        World {
            store,
            core,
            admin,
            org: org.id,
            repo,
            repo_dir,
            logs,
            env,
            _postgres: postgres,
            _redis: redis,
            _sqlite: sqlite,
        }
    }

    /// A job asking for `hello.txt`, created as the org's admin.
    async fn job(&self) -> Job {
        let issue = IssueRef {
            number: Some(1),
            title: "Say hello".into(),
            body: format!("Please add a greeting.\n\n```aicd:write hello.txt\n{HELLO}\n```\n"),
            url: None,
            author: Some("octocat".into()),
        };
        let job =
            NewJob { repo_id: self.repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None };
        self.core.create_job(&self.admin, self.org, job).await.unwrap()
    }

    /// Starts `aicd-worker` with this world's database, identified as `id`, with these settings on
    /// top of the test defaults (2 s leases, 100 ms polling).
    fn worker(&self, id: &str, settings: &[(&str, &str)]) -> Worker {
        let mut env: Vec<(String, String)> = vec![
            ("AICD_WORKER_ID".into(), id.into()),
            ("AICD_LEASE_SECS".into(), "2".into()),
            ("AICD_POLL_INTERVAL_MS".into(), "100".into()),
            ("AICD_SHUTDOWN_GRACE_SECS".into(), "10".into()),
            ("AICD_LOCAL_REPO_ROOTS".into(), std::env::temp_dir().display().to_string()),
            ("RUST_LOG".into(), "info".into()),
        ];
        env.extend(self.env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        env.extend(settings.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        Worker::start(id, &env, &self.logs.path().join(format!("{id}.log")))
    }

    async fn get(&self, job: JobId) -> Job {
        self.store.get_job(self.org, job).await.unwrap()
    }

    /// Polls the job until `done` holds; panics after `within`, or as soon as `worker` (if
    /// given) exits.
    async fn wait_for(
        &self,
        job: JobId,
        what: &str,
        within: Duration,
        mut worker: Option<&mut Worker>,
        done: impl Fn(&Job) -> bool,
    ) -> Job {
        let deadline = Instant::now() + within;
        loop {
            let current = self.get(job).await;
            if done(&current) {
                return current;
            }
            if let Some(worker) = worker.as_deref_mut()
                && let Some(status) = worker.child.try_wait().unwrap()
            {
                panic!("{} exited ({status}) before {what}: {current:#?}\n{}", worker.id, worker.log());
            }
            assert!(Instant::now() < deadline, "timed out after {within:?} waiting for {what}: {current:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn timeline(&self, job: JobId) -> Vec<(EventKind, String)> {
        let events = self.store.list_events(self.org, job, None, 1000).await.unwrap();
        events.into_iter().map(|e| (e.kind, e.message)).collect()
    }

    fn git(&self, args: &[&str]) -> String {
        git(self.repo_dir.path(), args)
    }
}

/// A git repository on `main` with one commit, in a new temporary directory.
fn git_repository() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("aicd-worker-repo-").tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(dir.path().join("README.md"), "# Hello\n").unwrap();
    git(dir.path(), &["add", "README.md"]);
    git(dir.path(), &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "Initial commit"]);
    dir
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().expect("git runs");
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A running `aicd-worker` process, killed (SIGKILL) when dropped, also when a test panics. Its
/// stderr goes to a log file, printed when a test fails while it is alive.
struct Worker {
    id: String,
    child: Child,
    log: PathBuf,
}

impl Worker {
    fn start(id: &str, env: &[(String, String)], log: &Path) -> Worker {
        let child = command(env).stderr(std::fs::File::create(log).unwrap()).spawn().expect("the worker starts");
        Worker { id: id.to_owned(), child, log: log.to_owned() }
    }

    fn log(&self) -> String {
        format!("--- {} log ---\n{}", self.id, std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Kills the process with SIGKILL, as a crash would, and reaps it.
    fn crash(&mut self) {
        self.child.kill().expect("SIGKILL is sent");
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "{status}");
    }

    /// Sends SIGTERM.
    fn terminate(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, at most `within`.
    async fn exited(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let alive = matches!(self.child.try_wait(), Ok(None));
        if alive {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
    }
}

/// `aicd-worker` with a clean environment: only `PATH` (the local forge runs `git`), its ops
/// endpoints on a free port (workers of parallel tests must not share one), and `env`.
fn command(env: &[(String, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aicd-worker"));
    command.env_clear().stdin(Stdio::null()).stdout(Stdio::null());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.env("AICD_WORKER_LISTEN_ADDR", "127.0.0.1:0");
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// Generates one test per backend: PostgreSQL with Redis signals, and SQLite with in-process ones.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::postgres_and_redis().await).await }
        )* }
        mod sqlite { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::sqlite().await).await }
        )* }
    };
}

both!(a_worker_killed_mid_step_is_replaced_and_the_job_finishes_once, sigterm_mid_step_releases_the_lease_and_exits_0);

async fn a_worker_killed_mid_step_is_replaced_and_the_job_finishes_once(w: World) {
    let job = w.job().await;

    // Worker A is slow, so it is caught in the middle of coding: planning is checkpointed and the
    // coding attempt is counted, but the agent's coding call has not returned.
    let mut a = w.worker("worker-a", &[("AICD_SCRIPTED_AGENT_DELAY_MS", "1500")]);
    let held_by_a = |j: &Job| j.lease.as_ref().is_some_and(|l| l.owner == "worker-a");
    w.wait_for(job.id, "worker A to be coding", Duration::from_secs(30), Some(&mut a), |j| {
        j.state == JobState::Coding && j.attempts.coding == 1 && held_by_a(j)
    })
    .await;
    a.crash();
    let crashed = w.get(job.id).await;
    assert_eq!(crashed.state, JobState::Coding, "A died mid-step: {crashed:#?}");
    assert!(held_by_a(&crashed), "A's lease is still recorded: {crashed:#?}");
    assert!(crashed.checkpoints.plan.is_some(), "planning was checkpointed: {crashed:#?}");
    assert!(crashed.checkpoints.changeset.is_none(), "coding was not: {crashed:#?}");

    // Worker B reaps A's lease once it expires, resumes at CODING and finishes.
    let mut b = w.worker("worker-b", &[("AICD_SCRIPTED_AGENT_DELAY_MS", "0")]);
    let done = w.wait_for(job.id, "PR_OPEN", Duration::from_secs(60), Some(&mut b), |j| !j.state.is_runnable()).await;
    assert_eq!(done.state, JobState::PrOpen, "{done:#?}\n{}", b.log());
    assert!(done.lease.is_none(), "{done:#?}");

    let prs = LocalGitForge::new().pull_requests(&w.repo).await.unwrap();
    assert_eq!(prs.len(), 1, "exactly one pull request: {prs:#?}");
    let pr = done.checkpoints.pull_request.clone().expect("the job records its pull request");
    assert_eq!((prs[0].number, &prs[0].branch), (pr.number, &pr.branch));
    assert_eq!(w.git(&["show", &format!("{}:hello.txt", pr.branch)]), format!("{HELLO}\n"));
    assert_eq!(w.git(&["rev-list", "--count", &format!("main..{}", pr.branch)]).trim(), "1", "one commit");

    let usage = w.store.list_usage(w.org, job.created_at - chrono::Duration::hours(1), chrono::Utc::now()).await;
    let steps: Vec<String> = usage.unwrap().into_iter().filter(|u| u.job_id == Some(job.id)).map(|u| u.step).collect();
    let count = |step: &str| steps.iter().filter(|s| *s == step).count();
    assert_eq!(count("planning"), 1, "planning ran once, by A, and was not re-run: {steps:?}");
    assert_eq!(count("coding"), 1, "only B's coding call finished: {steps:?}");
    assert_eq!(done.attempts.planning, 1, "{done:#?}");
    assert_eq!(done.attempts.coding, 2, "A's interrupted attempt counts: {done:#?}");

    let timeline = w.timeline(job.id).await;
    assert!(
        timeline.iter().any(|(kind, m)| *kind == EventKind::Note && m.contains("lease of worker worker-a expired")),
        "the timeline notes the expired lease: {timeline:#?}"
    );
    let states: Vec<&str> =
        timeline.iter().filter(|(kind, _)| *kind == EventKind::StateChanged).map(|(_, m)| m.as_str()).collect();
    assert_eq!(states.len(), 4, "QUEUED -> PLANNING -> CODING -> REVIEWING -> PR_OPEN, once each: {states:#?}");

    // B, idle, stops cleanly on SIGTERM.
    b.terminate();
    let status = b.exited(Duration::from_secs(15)).await.expect("B exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", b.log());
}

async fn sigterm_mid_step_releases_the_lease_and_exits_0(w: World) {
    let job = w.job().await;
    let mut worker = w.worker("worker-t", &[("AICD_SCRIPTED_AGENT_DELAY_MS", "5000"), ("AICD_LEASE_SECS", "30")]);
    w.wait_for(job.id, "the worker to be planning", Duration::from_secs(30), Some(&mut worker), |j| {
        j.state == JobState::Planning
            && j.attempts.planning == 1
            && j.lease.as_ref().is_some_and(|l| l.owner == "worker-t")
    })
    .await;

    let sent = Instant::now();
    worker.terminate();
    let status = worker.exited(Duration::from_secs(10)).await.expect("the worker exits within its grace period");
    assert!(status.success(), "{status}\n{}", worker.log());
    assert!(sent.elapsed() < Duration::from_secs(3), "it did not wait for the agent call: {:?}", sent.elapsed());

    let job = w.get(job.id).await;
    assert!(job.lease.is_none(), "the lease is released, not left to expire: {job:#?}");
    assert_eq!(job.state, JobState::Planning, "{job:#?}");
    assert!(job.state.is_runnable() && job.checkpoints.plan.is_none(), "{job:#?}");
    let log = worker.log();
    assert!(log.contains("SIGTERM") && log.contains("worker exited"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_a_worker_starts_and_finishes_a_job_by_polling() {
    let w = postgres_and_redis().await;
    let nowhere = aicd_testkit::RedisServer::url_for(aicd_testkit::RedisServer::free_port());
    let mut worker = w.worker("worker-r", &[("REDIS_URL", &nowhere)]);
    let job = w.job().await;
    let done =
        w.wait_for(job.id, "PR_OPEN", Duration::from_secs(60), Some(&mut worker), |j| !j.state.is_runnable()).await;
    assert_eq!(done.state, JobState::PrOpen, "{done:#?}\n{}", worker.log());
    assert_eq!(
        w.git(&["show", &format!("{}:hello.txt", done.checkpoints.pull_request.unwrap().branch)]),
        format!("{HELLO}\n")
    );
    let log = worker.log();
    assert!(log.contains("could not subscribe to Redis signals"), "{log}");
    worker.terminate();
    let status = worker.exited(Duration::from_secs(15)).await.expect("the worker exits after SIGTERM");
    assert!(status.success(), "{status}\n{}", worker.log());
}

/// Runs the worker with `env` until it exits (at most 30 s) and returns its status and stderr.
async fn run_to_exit(env: &[(&str, &str)]) -> (ExitStatus, String) {
    let logs = tempfile::tempdir().unwrap();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let mut worker = Worker::start("misconfigured", &env, &logs.path().join("stderr.log"));
    let status = worker.exited(Duration::from_secs(30)).await.expect("the worker gives up within 30 s");
    (status, std::fs::read_to_string(&worker.log).unwrap())
}

#[tokio::test]
async fn a_bad_setting_exits_non_zero_naming_every_bad_variable() {
    let (status, stderr) =
        run_to_exit(&[("AICD_WORKER_CONCURRENCY", "lots"), ("AICD_LEASE_SECS", "1"), ("AICD_AGENT", "gpt-9")]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    for name in ["AICD_WORKER_CONCURRENCY", "AICD_LEASE_SECS", "AICD_AGENT"] {
        assert!(stderr.contains(name), "{name} is not named:\n{stderr}");
    }
}

#[tokio::test]
async fn a_database_password_is_never_shown() {
    const PASSWORD: &str = "hunter2-do-not-print";
    // Rejected by the configuration check...
    let url = format!("mysql://aicd:{PASSWORD}@127.0.0.1/aicd");
    let (status, stderr) = run_to_exit(&[("DATABASE_URL", &url), ("AICD_WORKER_CONCURRENCY", "0")]).await;
    assert!(!status.success() && stderr.contains("DATABASE_URL"), "{status}\n{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");

    // ...and failing to connect (nothing listens on port 1), in both log formats.
    let url = format!("postgres://aicd:{PASSWORD}@127.0.0.1:1/aicd");
    for format in ["text", "json"] {
        let (status, stderr) = run_to_exit(&[("DATABASE_URL", &url), ("AICD_LOG_FORMAT", format)]).await;
        assert!(!status.success() && stderr.contains("DATABASE_URL"), "{status}\n{stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
    }
}
