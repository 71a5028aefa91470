//! Embedding the engine in another program: open a store by its URL, bootstrap an
//! organization, act as an API key with the HTTP API's JSON shapes, follow a job's timeline, and
//! run workers with any agent over git repositories on the local disk.
//!
//! The Python and Node bindings are this module with their languages' types around it: every
//! operation, argument check and authorization decision is here (and in [`Core`]), so the
//! bindings only convert values.
//!
//! ```no_run
//! # async fn run() -> aicd_core::Result<()> {
//! use std::sync::Arc;
//! use aicd_core::embed::{Engine, OpenOptions, WorkerOptions};
//!
//! let engine = Engine::open("sqlite:aicd.db", OpenOptions { local_roots: vec!["/srv/repos".into()], ..OpenOptions::default() }).await?;
//! let boot = engine.bootstrap("Acme").await?;
//! let session = engine.session(&boot.api_key).await?;
//! let repo = session.call("repos.create", serde_json::json!({
//!     "full_name": "acme/widgets", "source": {"kind": "local", "path": "/srv/repos/widgets"}})).await?;
//! session.call("jobs.create", serde_json::json!({
//!     "repo_id": repo["id"], "issue": {"title": "Add a greeting", "body": "..."}})).await?;
//! let agent = Arc::new(aicd_agent_api::ScriptedAgent::default());
//! engine.orchestrator(agent, WorkerOptions::default()).run_until_idle().await?;
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use aicd_agent_api::Agent;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::forge::{LocalGitForge, LocalRoots};
use crate::jobs::{CreateJob, JobEvent, JobFilter, JobState, Trigger};
use crate::orchestrator::{Backoff, Orchestrator, OrchestratorConfig};
use crate::repos::NewRepo;
use crate::signals::{Doorbell, EventBus, LocalDoorbell, LocalEventBus, RedisSignals};
use crate::store::{PostgresOptions, SqlStore, Store};
use crate::tenancy::{Actor, ApiKeySecret, NewOrg};
use crate::{Core, CoreOptions, Error, JobId, OrgId, RepoId, Result};

/// How [`Engine::open`] opens the store.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Apply the PostgreSQL migrations before connecting (SQLite is always migrated when opened).
    pub migrate: bool,
    /// The PostgreSQL URL of the role that owns the schema, for migrating; default: the URL given
    /// to [`Engine::open`]. The engine itself connects with that URL, which must be a role that
    /// cannot bypass row-level security (see [`SqlStore::postgres`]).
    pub owner_url: Option<String>,
    /// The directories local repositories may be registered under (none by default: no local
    /// repository can be registered).
    pub local_roots: Vec<PathBuf>,
    /// Redis, for waking workers and following jobs across processes at once; without it,
    /// signals stay in this process and other processes notice work by polling.
    pub redis_url: Option<String>,
    /// Most PostgreSQL connections (default 10).
    pub max_connections: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self { migrate: false, owner_url: None, local_roots: Vec::new(), redis_url: None, max_connections: 10 }
    }
}

/// How the workers of [`Engine::orchestrator`] behave.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Jobs run at once (default 4).
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat (default 30 s; heartbeats every third of it).
    pub lease: Duration,
    /// How long an idle worker waits before looking for work without being woken (default 2 s).
    pub poll_interval: Duration,
    /// Attempts per step before the job fails (default 5).
    pub max_attempts: u32,
    /// The first retry's delay bound; later ones double, up to two minutes (default 2 s).
    pub retry_delay: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        let defaults = OrchestratorConfig::default();
        Self {
            concurrency: defaults.concurrency,
            lease: defaults.lease,
            poll_interval: defaults.poll_interval,
            max_attempts: defaults.max_attempts,
            retry_delay: defaults.backoff.base,
        }
    }
}

/// The engine over one store: the core services, the signals, and what workers need.
#[derive(Clone)]
pub struct Engine {
    core: Core,
    local_roots: Vec<PathBuf>,
    store: Arc<SqlStore>,
    doorbell: Arc<dyn Doorbell>,
    bus: Arc<dyn EventBus>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("backend", &self.store.backend()).finish_non_exhaustive()
    }
}

/// What [`Engine::bootstrap`] created.
#[derive(Clone, Debug)]
pub struct Bootstrapped {
    /// The new organization.
    pub org_id: OrgId,
    /// Its first org_admin API key, shown this once (only its hash is stored).
    pub api_key: String,
}

impl Engine {
    /// Opens the store at `url`: `postgres://…` / `postgresql://…`, or `sqlite:<path>` (the file
    /// is created if missing). [`Error::InvalidInput`] for any other URL; errors never show the
    /// URL's password.
    pub async fn open(url: &str, options: OpenOptions) -> Result<Self> {
        let store = if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(Error::invalid("a SQLite URL names its file: sqlite:<path>"));
            }
            SqlStore::sqlite(path).await?
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            if options.migrate {
                SqlStore::migrate_postgres(options.owner_url.as_deref().unwrap_or(url)).await?;
            }
            let pg = PostgresOptions { max_connections: options.max_connections.max(1), ..PostgresOptions::default() };
            SqlStore::postgres(url, pg).await?
        } else {
            return Err(Error::invalid("the store's URL must start with postgres://, postgresql:// or sqlite:"));
        };
        let (doorbell, bus): (Arc<dyn Doorbell>, Arc<dyn EventBus>) = match &options.redis_url {
            Some(redis) => {
                let signals = Arc::new(RedisSignals::connect_lazy(redis, "aicd")?);
                (signals.clone(), signals)
            }
            None => (Arc::new(LocalDoorbell::new()), Arc::new(LocalEventBus::new())),
        };
        let store = Arc::new(store);
        let core_options = CoreOptions {
            allow_local_repos: !options.local_roots.is_empty(),
            local_roots: LocalRoots::new(options.local_roots.clone()),
            ..CoreOptions::default()
        };
        let core = Core::new(store.clone() as Arc<dyn Store>, core_options)
            .with_doorbell(doorbell.clone())
            .with_event_bus(bus.clone());
        Ok(Self { core, local_roots: options.local_roots, store, doorbell, bus })
    }

    /// The core services, for what this module does not wrap.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Creates an organization named `name` with a first org_admin API key (what
    /// `aicd-server admin bootstrap` does).
    pub async fn bootstrap(&self, name: &str) -> Result<Bootstrapped> {
        let new = NewOrg { name: name.to_owned(), max_concurrent_jobs: None, settings: None };
        let (org, _, secret) = self.core.bootstrap_org(new).await?;
        Ok(Bootstrapped { org_id: org.id, api_key: secret.expose().to_owned() })
    }

    /// Acts as the holder of `api_key`, with the same authorization as the HTTP API.
    /// [`Error::Unauthenticated`] for a key that is malformed, unknown, revoked or expired.
    pub async fn session(&self, api_key: &str) -> Result<Session> {
        let actor = self.core.authenticate_api_key(&ApiKeySecret::new(api_key)).await?;
        Ok(Session { core: self.core.clone(), bus: self.bus.clone(), actor })
    }

    /// An orchestrator running `agent` on this store, publishing through git repositories on the
    /// local disk (under [`OpenOptions::local_roots`] only). Run it with [`Orchestrator::run_worker`] or [`Orchestrator::run_until_idle`].
    pub fn orchestrator(&self, agent: Arc<dyn Agent>, options: WorkerOptions) -> Orchestrator {
        let config = OrchestratorConfig {
            concurrency: options.concurrency.max(1),
            lease: options.lease,
            heartbeat_every: options.lease / 3,
            poll_interval: options.poll_interval,
            max_attempts: options.max_attempts.max(1),
            backoff: Backoff { base: options.retry_delay, ..Backoff::default() },
            ..OrchestratorConfig::default()
        };
        let store = self.store.clone() as Arc<dyn Store>;
        let forge = LocalGitForge::new().within(LocalRoots::new(self.local_roots.clone()));
        Orchestrator::new(store, agent, Arc::new(forge), self.doorbell.clone(), self.bus.clone(), config)
    }

    /// Closes the store's connections; later calls fail.
    pub async fn close(&self) {
        self.store.close().await;
    }
}

/// An API key's view of its organization: the HTTP API's operations, taking and returning its
/// JSON shapes.
#[derive(Clone)]
pub struct Session {
    core: Core,
    bus: Arc<dyn EventBus>,
    actor: Actor,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("org_id", &self.actor.org_id).field("role", &self.actor.role).finish()
    }
}

/// Arguments naming a job.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobArgs {
    job_id: JobId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoArgs {
    repo_id: RepoId,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ListJobsArgs {
    state: Option<JobState>,
    repo_id: Option<RepoId>,
    cursor: Option<JobId>,
    limit: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsArgs {
    job_id: JobId,
    after: Option<i64>,
    limit: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct UsageArgs {
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

/// The operations [`Session::call`] knows.
pub const OPERATIONS: &[&str] = &[
    "orgs.list",
    "repos.create",
    "repos.list",
    "repos.get",
    "jobs.create",
    "jobs.list",
    "jobs.get",
    "jobs.cancel",
    "jobs.retry",
    "jobs.events",
    "usage",
];

/// The most events [`Session::call`]`("jobs.events")` returns at once, and its default.
const MAX_EVENTS: u32 = 1000;

impl Session {
    /// The API key's organization.
    pub fn org_id(&self) -> OrgId {
        self.actor.org_id
    }

    /// The authenticated actor.
    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// Runs operation `op` (one of [`OPERATIONS`]) with `args` (an object, or `null` for none)
    /// and returns its result, each in the HTTP API's JSON shape:
    ///
    /// | `op` | `args` | result |
    /// |---|---|---|
    /// | `orgs.list` | — | `[{org, role}]` |
    /// | `repos.create` | `{full_name, source: {kind: "local", path}, default_branch?, settings?}` | a repository |
    /// | `repos.list` | — | `[repository]` |
    /// | `repos.get` | `{repo_id}` | a repository |
    /// | `jobs.create` | `{repo_id, issue: {title, body?, number?, url?}, max_tokens?, max_cost_micros?}` | a job |
    /// | `jobs.list` | `{state?, repo_id?, cursor?, limit?}` | `{items, next_cursor}` |
    /// | `jobs.get`, `jobs.cancel`, `jobs.retry` | `{job_id}` | a job |
    /// | `jobs.events` | `{job_id, after?, limit?}` | `[event]`, oldest first |
    /// | `usage` | `{from?, to?}` (RFC 3339; default the last 30 days) | a usage report |
    ///
    /// [`Error::InvalidInput`] for an unknown operation or arguments of the wrong shape (unknown
    /// fields included); otherwise the errors of the [`Core`] call.
    pub async fn call(&self, op: &str, args: Value) -> Result<Value> {
        let (core, actor, org) = (&self.core, &self.actor, self.actor.org_id);
        match op {
            "orgs.list" => {
                no_args(op, &args)?;
                let org = core.get_org(actor, org).await?;
                Ok(json!([{ "org": org, "role": actor.role }]))
            }
            "repos.create" => {
                let repo: NewRepo = parse(op, args)?;
                to_json(core.create_repo(actor, org, repo).await?)
            }
            "repos.list" => {
                no_args(op, &args)?;
                to_json(core.list_repos(actor, org).await?)
            }
            "repos.get" => {
                let RepoArgs { repo_id } = parse(op, args)?;
                to_json(core.get_repo(actor, org, repo_id).await?)
            }
            "jobs.create" => {
                let job: CreateJob = parse(op, args)?;
                to_json(core.create_job(actor, org, job.into_new_job(Trigger::Api)).await?)
            }
            "jobs.list" => {
                let list: ListJobsArgs = parse_or_default(op, args)?;
                if list.limit.is_some_and(|l| !(1..=JobFilter::MAX_LIMIT).contains(&l)) {
                    return Err(Error::invalid(format!("limit must be from 1 to {}", JobFilter::MAX_LIMIT)));
                }
                let filter =
                    JobFilter { state: list.state, repo_id: list.repo_id, before: list.cursor, limit: list.limit };
                to_json(core.list_jobs(actor, org, filter).await?)
            }
            "jobs.get" => {
                let JobArgs { job_id } = parse(op, args)?;
                to_json(core.get_job(actor, org, job_id).await?)
            }
            "jobs.cancel" => {
                let JobArgs { job_id } = parse(op, args)?;
                to_json(core.cancel_job(actor, org, job_id).await?)
            }
            "jobs.retry" => {
                let JobArgs { job_id } = parse(op, args)?;
                to_json(core.retry_job(actor, org, job_id).await?)
            }
            "jobs.events" => {
                let EventsArgs { job_id, after, limit } = parse(op, args)?;
                let limit = limit.unwrap_or(MAX_EVENTS);
                if !(1..=MAX_EVENTS).contains(&limit) {
                    return Err(Error::invalid(format!("limit must be from 1 to {MAX_EVENTS}")));
                }
                to_json(core.list_events(actor, org, job_id, after, limit).await?)
            }
            "usage" => {
                let UsageArgs { from, to } = parse_or_default(op, args)?;
                let to = to.unwrap_or_else(Utc::now);
                let from = from.unwrap_or(to - chrono::Duration::days(30));
                to_json(core.usage_report(actor, org, from, to).await?)
            }
            other => Err(Error::invalid(format!("unknown operation `{other}`; known: {}", OPERATIONS.join(", ")))),
        }
    }

    /// Follows job `job`'s timeline from its start: every event in order, each once, live as it
    /// is appended, ending after the event that takes the job to PR_OPEN or to an end
    /// (failed, cancelled, merged, closed). The job must be visible to this key
    /// ([`Error::NotFound`] at the first [`Follow::next`] otherwise).
    pub fn follow(&self, job: JobId) -> Follow {
        Follow {
            session: self.clone(),
            job,
            after: None,
            pending: VecDeque::new(),
            wake: self.bus.subscribe(),
            done: false,
        }
    }
}

/// A job's timeline as it happens ([`Session::follow`]).
#[derive(Debug)]
pub struct Follow {
    session: Session,
    job: JobId,
    after: Option<i64>,
    pending: VecDeque<JobEvent>,
    wake: broadcast::Receiver<JobEvent>,
    done: bool,
}

/// How long [`Follow::next`] waits for a live signal before reading the timeline anyway (events
/// appended by a worker in another process without Redis arrive this late at most).
const FOLLOW_POLL: Duration = Duration::from_millis(250);

impl Follow {
    /// The next event, waiting for it if need be; `None` once the followed job has reached
    /// PR_OPEN or an end and every event up to that one was returned.
    pub async fn next(&mut self) -> Result<Option<JobEvent>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.after = Some(event.id);
                if event.to_state.is_some_and(|s| s == JobState::PrOpen || s.is_terminal()) {
                    self.done = true;
                    self.pending.clear();
                }
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            let Session { core, actor, .. } = &self.session;
            let events = core.list_events(actor, actor.org_id, self.job, self.after, MAX_EVENTS).await?;
            if !events.is_empty() {
                self.pending.extend(events);
                continue;
            }
            let job = self.job;
            let signal = async {
                loop {
                    match self.wake.recv().await {
                        Ok(event) if event.job_id == job => return,
                        Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                        // No bus any more: polling alone.
                        Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            };
            let _ = tokio::time::timeout(FOLLOW_POLL, signal).await;
        }
    }
}

fn parse<T: DeserializeOwned>(op: &str, args: Value) -> Result<T> {
    serde_json::from_value(args).map_err(|e| Error::invalid(format!("{op}: {e}")))
}

fn parse_or_default<T: DeserializeOwned + Default>(op: &str, args: Value) -> Result<T> {
    if args.is_null() { Ok(T::default()) } else { parse(op, args) }
}

fn no_args(op: &str, args: &Value) -> Result<()> {
    match args {
        Value::Null => Ok(()),
        Value::Object(map) if map.is_empty() => Ok(()),
        _ => Err(Error::invalid(format!("{op} takes no arguments"))),
    }
}

fn to_json(value: impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Corrupt(format!("a result could not be encoded: {e}")))
}
