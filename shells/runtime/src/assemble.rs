//! Building the parts a binary runs from its [`Config`]: the store, the signals, the agent, the
//! forge and the orchestrator, and the readiness checks over them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aicd_agent_api::testing::SlowAgent;
use aicd_agent_api::{Agent, ScriptedAgent};
use aicd_core::billing::MeterDispatcher;
use aicd_core::billing::stripe::StripeBilling;
use aicd_core::forge::{Forge, LocalGitForge, LocalRoots, RoutingForge};
use aicd_core::orchestrator::Orchestrator;
use aicd_core::signals::{Doorbell, EventBus, LocalDoorbell, LocalEventBus, RedisSignals};
use aicd_core::store::{PostgresOptions, SqlStore};
use aicd_core::{Core, CoreOptions};
use aicd_github::{AppCredentials, CommandProcessor, GitHubForge, InstallationTokens};
use anyhow::Context;
use serde::Serialize;

use crate::config::{AgentKind, Config, Database, Environment, Signals};
use crate::metrics::Metrics;

/// How long each readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest error shown in a readiness report.
const MAX_ERROR_CHARS: usize = 200;

/// Opens the store: PostgreSQL as the application role (`DATABASE_URL`, with a pool of
/// [`Database::pool_size`] connections), or the SQLite file, creating its directory. Errors name the variable and never carry a secret.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<SqlStore>> {
    let store = match &config.database {
        Database::Postgres { url, .. } => {
            let max_connections = config.database.pool_size(config.worker.concurrency);
            let options = PostgresOptions { max_connections, ..PostgresOptions::default() };
            SqlStore::postgres(url.expose(), options).await.map_err(|e| {
                anyhow::anyhow!("opening the PostgreSQL database (DATABASE_URL): {}", config.scrub(&e.to_string()))
            })?
        }
        Database::Sqlite { path } => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {} (AICD_DATA_DIR)", dir.display()))?;
            }
            SqlStore::sqlite(path)
                .await
                .with_context(|| format!("opening the SQLite database {} (AICD_DATA_DIR)", path.display()))?
        }
    };
    Ok(Arc::new(store))
}

/// The doorbell and event bus workers and the API share, and the Redis connection behind them,
/// if any (for readiness checks).
#[derive(Clone)]
pub struct SignalSet {
    /// Wakes idle workers when a job is queued.
    pub doorbell: Arc<dyn Doorbell>,
    /// Fans job events out to subscribers.
    pub bus: Arc<dyn EventBus>,
    /// The Redis connection, when signals go through Redis.
    pub redis: Option<Arc<RedisSignals>>,
}

impl std::fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalSet").field("redis", &self.redis.is_some()).finish_non_exhaustive()
    }
}

/// The signals: through Redis (`REDIS_URL`), or in-process ones. Redis need not answer: the
/// signals subscribe in the background and keep trying ([`RedisSignals::connect_lazy`]), so a
/// binary starts (and runs, polling the database) while Redis is down. Fails only for a malformed
/// `REDIS_URL`; errors name the variable and never carry a secret.
pub async fn open_signals(config: &Config) -> anyhow::Result<SignalSet> {
    Ok(match &config.signals {
        Signals::Redis { url, namespace } => {
            let redis = RedisSignals::connect_lazy(url.expose(), namespace)
                .map_err(|e| anyhow::anyhow!("REDIS_URL: {}", config.scrub(&e.to_string())))?;
            let redis = Arc::new(redis);
            SignalSet { doorbell: redis.clone(), bus: redis.clone(), redis: Some(redis) }
        }
        Signals::Local => {
            SignalSet { doorbell: Arc::new(LocalDoorbell::new()), bus: Arc::new(LocalEventBus::new()), redis: None }
        }
    })
}

/// The configured agent (`AICD_AGENT`): the scripted agent, slowed down by its delay if any, or
/// the LLM agent over its configured models. Fails when the LLM agent's HTTP client cannot be
/// built.
pub fn build_agent(config: &Config) -> anyhow::Result<Arc<dyn Agent>> {
    Ok(match &config.agent {
        AgentKind::Scripted { delay } if delay.is_zero() => Arc::new(ScriptedAgent::new()),
        AgentKind::Scripted { delay } => Arc::new(SlowAgent::new(ScriptedAgent::new(), *delay)),
        AgentKind::Llm(llm) => Arc::new(
            aicd_agent_api::llm::LlmAgent::new(llm.to_llm_config())
                .map_err(|why| anyhow::anyhow!("the LLM agent: {}", config.scrub(&why)))?,
        ),
    })
}

/// Why a GitHub repository is refused when no GitHub App is configured.
pub const NO_GITHUB_APP: &str =
    "this deployment has no GitHub App configured (AICD_GITHUB_APP_ID, AICD_GITHUB_PRIVATE_KEY)";
/// Why a repository on the disk is refused when no directory may hold them.
pub const NO_LOCAL_ROOTS: &str =
    "this deployment has no directories for repositories on its own disk (AICD_LOCAL_REPO_ROOTS)";
/// Why a repository on the disk is refused in production.
pub const NO_LOCAL_REPOS: &str =
    "this deployment does not serve repositories on its own disk (never with AICD_ENV=production)";

/// The forge jobs publish through, chosen per repository by its source:
///
/// - [`RepoSource::Local`](aicd_core::repos::RepoSource::Local) repositories go to the local git
///   forge outside production (or when `AICD_ALLOW_LOCAL_REPOS` is set, which production refuses),
///   within the directories of `AICD_LOCAL_REPO_ROOTS` (refused with [`NO_LOCAL_ROOTS`] when there
///   are none). Registering them is what `AICD_ALLOW_LOCAL_REPOS` governs; a worker serves the
///   ones that exist even when its own environment does not set it (a standalone worker with
///   PostgreSQL defaults it to false), so only production refuses them here.
/// - [`RepoSource::Github`](aicd_core::repos::RepoSource::Github) repositories go to the GitHub
///   forge, acting as the App (`AICD_GITHUB_APP_ID` and its private key) on `AICD_GITHUB_API_URL`;
///   without an App they are refused with [`NO_GITHUB_APP`], a permanent error.
///
/// `tokens` is the process's one installation-token cache ([`github_tokens`]); the GitHub forge
/// checks each repository's access in `store` before every call.
pub fn build_forge(config: &Config, store: Arc<SqlStore>, tokens: Option<&InstallationTokens>) -> Arc<RoutingForge> {
    let serve_local = config.environment == Environment::Development || config.server.allow_local_repos;
    let roots = &config.server.local_repo_roots;
    let forge = if !serve_local {
        RoutingForge::new().refuse_local(NO_LOCAL_REPOS)
    } else if roots.is_empty() {
        RoutingForge::new().refuse_local(NO_LOCAL_ROOTS)
    } else {
        let local = LocalGitForge::new().within(LocalRoots::new(roots.iter().cloned()));
        RoutingForge::new().local(Arc::new(local))
    };
    let forge = match tokens {
        Some(tokens) => forge.github(Arc::new(GitHubForge::new(tokens.clone(), store))),
        None => forge.refuse_github(NO_GITHUB_APP),
    };
    Arc::new(forge)
}

/// The core services over the store, ringing the doorbell and publishing on the bus of `signals`,
/// billing through Stripe when it is configured. Errors name the variable and never carry the key.
pub fn build_core(config: &Config, store: Arc<SqlStore>, signals: &SignalSet) -> anyhow::Result<Core> {
    let options = CoreOptions {
        allow_local_repos: config.server.allow_local_repos,
        local_roots: LocalRoots::new(config.server.local_repo_roots.iter().cloned()),
        limits: config.server.limits,
        billing: config.billing.as_ref().map(|billing| billing.options.clone()),
    };
    let core = Core::new(store, options).with_doorbell(signals.doorbell.clone()).with_event_bus(signals.bus.clone());
    Ok(match &config.billing {
        Some(billing) => {
            let stripe = StripeBilling::new(billing.secret_key.expose(), Some(&billing.api_url))
                .map_err(|e| anyhow::anyhow!("AICD_STRIPE_SECRET_KEY / AICD_STRIPE_API_URL: {e}"))?;
            core.with_billing(Arc::new(stripe))
        }
        None => core,
    })
}

/// The billing meter dispatcher of a worker (standalone or embedded), when billing is configured:
/// its claims last `AICD_LEASE_SECS`, and it polls every `AICD_POLL_INTERVAL_MS` when nothing is due.
pub fn build_meter_dispatcher(config: &Config, core: &Core) -> Option<MeterDispatcher> {
    config.billing.as_ref()?;
    let worker = format!("{}-billing", config.worker.worker_id);
    match MeterDispatcher::new(core.clone(), worker) {
        // The job lease and poll interval serve the outbox's claims too.
        Ok(dispatcher) => {
            Some(dispatcher.with_lease(config.worker.lease).with_poll_interval(config.worker.poll_interval))
        }
        Err(error) => {
            tracing::error!(%error, "billing is configured but its meter dispatcher cannot start");
            None
        }
    }
}

/// The GitHub App's installation-token cache, when the App is configured (`AICD_GITHUB_APP_ID`
/// with its private key); `None` otherwise. Build it once per process and share it (clones share
/// the cache): the forge, the command processor and the server's routes all mint through it.
/// Requests name the App by `AICD_GITHUB_APP_SLUG` when it is set. Errors name the variable and
/// never carry the key.
pub fn github_tokens(config: &Config) -> anyhow::Result<Option<InstallationTokens>> {
    let github = &config.server.github;
    let (Some(app_id), Some(key)) = (github.app_id, &github.private_key) else { return Ok(None) };
    let credentials = AppCredentials::new(app_id, key.expose()).map_err(|e| {
        anyhow::anyhow!("AICD_GITHUB_PRIVATE_KEY (or AICD_GITHUB_PRIVATE_KEY_PATH): {}", config.scrub(&e.to_string()))
    })?;
    let mut tokens = InstallationTokens::new(credentials, &github.api_url)
        .map_err(|e| anyhow::anyhow!("AICD_GITHUB_API_URL: {}", config.scrub(&e.to_string())))?;
    if let Some(slug) = &github.app_slug {
        tokens = tokens.with_app_slug(slug);
    }
    Ok(Some(tokens))
}

/// The GitHub App's setup flow, when the App (`tokens`), its slug and its OAuth client are all
/// configured; `None` otherwise (installations are then linked by an operator only). When
/// GitHub's redirect carries no code, the flow sends the browser to authorize and back to
/// `AICD_GITHUB_CALLBACK_URL` (default: `/github/setup` under `AICD_PUBLIC_URL`).
pub fn install_flow(
    config: &Config,
    core: &Core,
    tokens: Option<&InstallationTokens>,
) -> anyhow::Result<Option<aicd_github::InstallFlow>> {
    let github = &config.server.github;
    let (Some(tokens), Some(slug), Some(oauth)) = (tokens, &github.app_slug, &github.oauth) else {
        return Ok(None);
    };
    let settings = aicd_github::SetupSettings {
        app_slug: slug.clone(),
        client_id: oauth.client_id.clone(),
        client_secret: oauth.client_secret.expose().to_owned(),
        web_url: github.web_url.clone(),
        callback_url: github.callback_url.clone().or_else(|| {
            config.server.public_url.as_deref().map(|url| format!("{}/github/setup", url.trim_end_matches('/')))
        }),
        state_ttl: aicd_github::setup::DEFAULT_STATE_TTL,
    };
    let flow = aicd_github::InstallFlow::new(core.clone(), tokens.clone(), settings).map_err(|e| {
        anyhow::anyhow!("AICD_GITHUB_CLIENT_ID / AICD_GITHUB_WEB_URL: {}", config.scrub(&e.to_string()))
    })?;
    Ok(Some(flow))
}

/// The processor of `/aicd` commands and other triggers, when the GitHub App is configured
/// (`tokens`, the process's cache from [`github_tokens`]): it claims what webhooks recorded, checks
/// the senders' access and carries them out. It claims as the worker's id and polls at the
/// worker's interval.
pub fn build_command_processor(
    config: &Config,
    core: Core,
    tokens: Option<&InstallationTokens>,
) -> Option<CommandProcessor> {
    tokens.map(|tokens| {
        CommandProcessor::new(core, tokens.clone(), config.worker.worker_id.clone())
            .with_poll_interval(config.worker.poll_interval)
    })
}

/// The orchestrator over these parts, with the configured agent and `forge` ([`build_forge`]),
/// reporting every step, its slots and its running jobs to `metrics`.
pub fn build_orchestrator(
    config: &Config,
    store: Arc<SqlStore>,
    signals: &SignalSet,
    metrics: &Metrics,
    forge: Arc<dyn Forge>,
) -> anyhow::Result<Orchestrator> {
    let orchestrator = Orchestrator::new(
        store,
        build_agent(config)?,
        forge,
        signals.doorbell.clone(),
        signals.bus.clone(),
        config.orchestrator(),
    );
    metrics.track_worker(orchestrator.config().concurrency, orchestrator.running_jobs());
    Ok(orchestrator.with_observer(Arc::new(metrics.clone())))
}

/// Whether the process can do its work: the database answers (required), and Redis when it is
/// used (not required: without it the process still works, degraded).
#[derive(Clone, Debug)]
pub struct Readiness {
    store: Arc<SqlStore>,
    redis: Option<Arc<RedisSignals>>,
}

/// The outcome of every readiness check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// Whether every required check passed.
    pub ready: bool,
    /// Whether a check that is not required failed (Redis is down: signals cross no processes,
    /// workers poll).
    pub degraded: bool,
    /// Each check, `database` first.
    pub checks: Vec<CheckResult>,
}

/// One readiness check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckResult {
    /// `database` or `redis`.
    pub name: &'static str,
    /// Whether it answered in time.
    pub ok: bool,
    /// Whether the process is not ready without it (the database is required; Redis is not).
    pub required: bool,
    /// How long it took, in milliseconds.
    pub latency_ms: u64,
    /// Why not, in short and without credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Readiness {
    /// Checks of `store`, and of `redis` if given.
    pub fn new(store: Arc<SqlStore>, redis: Option<Arc<RedisSignals>>) -> Self {
        Self { store, redis }
    }

    /// Runs every check at once, each within 2 seconds.
    pub async fn check(&self) -> ReadinessReport {
        let database = timed("database", true, self.store.ping());
        let checks = match &self.redis {
            Some(redis) => {
                let (database, redis) = tokio::join!(database, timed("redis", false, redis.ping()));
                vec![database, redis]
            }
            None => vec![database.await],
        };
        let ready = checks.iter().all(|c| c.ok || !c.required);
        let degraded = checks.iter().any(|c| !c.ok && !c.required);
        ReadinessReport { ready, degraded, checks }
    }
}

async fn timed(name: &'static str, required: bool, check: impl Future<Output = aicd_core::Result<()>>) -> CheckResult {
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, check).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(short(&redact_userinfo(&e.to_string()))),
        Err(_) => Some(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
    };
    CheckResult { name, ok: error.is_none(), required, latency_ms, error }
}

/// `text` with the user information of any URL in it (`scheme://user:password@`) replaced.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c.is_whitespace() || "/?#\"'".contains(c)).unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("[REDACTED]");
                rest = &tail[at..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

fn short(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_CHARS {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(MAX_ERROR_CHARS).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use aicd_testkit::{RedisServer, TestRedis, TestSqlite};

    fn sqlite_config(dir: &Path) -> Config {
        let dir = dir.to_str().expect("a UTF-8 path").to_owned();
        Config::from_lookup(|name| (name == "AICD_DATA_DIR").then(|| dir.clone())).expect("a valid configuration")
    }

    #[test]
    fn urls_lose_their_user_information() {
        assert_eq!(
            redact_userinfo("PING to redis://:hunter2@cache:6379 failed; see https://docs.example.com/x"),
            "PING to redis://[REDACTED]@cache:6379 failed; see https://docs.example.com/x"
        );
        assert_eq!(redact_userinfo("postgres://app:pw@db/x?a=b@c"), "postgres://[REDACTED]@db/x?a=b@c");
        assert_eq!(redact_userinfo("no url here"), "no url here");
        assert_eq!(short(&"x".repeat(500)).chars().count(), MAX_ERROR_CHARS + 3);
    }

    #[tokio::test]
    async fn sqlite_opens_in_a_new_data_dir_and_is_ready() {
        let db = TestSqlite::new();
        let dir = db.dir().join("nested").join("data");
        let config = sqlite_config(&dir);
        let store = open_store(&config).await.unwrap();
        assert!(dir.join("aicd.db").exists());
        let signals = open_signals(&config).await.unwrap();
        assert!(signals.redis.is_none());
        let forge = build_forge(&config, store.clone(), None);
        let _orchestrator = build_orchestrator(&config, store.clone(), &signals, &Metrics::new(), forge).unwrap();
        assert_eq!(build_agent(&config).unwrap().name(), ScriptedAgent::new().name());

        let report = Readiness::new(store.clone(), None).check().await;
        assert!(report.ready, "{report:?}");
        assert_eq!(report.checks.len(), 1);
        assert_eq!((report.checks[0].name, report.checks[0].error.as_deref()), ("database", None));

        store.close().await;
        let report = Readiness::new(store, None).check().await;
        assert!(!report.ready && report.checks[0].error.is_some(), "{report:?}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ready"], false);
        assert_eq!(json["checks"][0]["name"], "database");
    }

    #[tokio::test]
    async fn redis_signals_are_checked_too() {
        let db = TestSqlite::new();
        let redis = TestRedis::new().await;
        let (url, namespace) = (redis.url().to_owned(), redis.namespace().to_owned());
        let config = Config::from_lookup(|name| match name {
            "AICD_DATA_DIR" => db.dir().to_str().map(str::to_owned),
            "REDIS_URL" => Some(url.clone()),
            "AICD_REDIS_NAMESPACE" => Some(namespace.clone()),
            _ => None,
        })
        .unwrap();
        let store = open_store(&config).await.unwrap();
        let signals = open_signals(&config).await.unwrap();
        let redis = signals.redis.clone().expect("Redis signals");
        assert!(redis.wait_subscribed(Duration::from_secs(10)).await, "subscribed in the background");
        let report = Readiness::new(store, Some(redis)).check().await;
        assert!(report.ready && !report.degraded, "{report:?}");
        let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
        assert_eq!(names, ["database", "redis"]);
        assert!(report.checks.iter().all(|c| c.ok), "{report:?}");
    }

    #[tokio::test]
    async fn redis_down_at_start_is_degraded_not_fatal_and_recovers_when_it_answers() {
        let db = TestSqlite::new();
        let port = RedisServer::free_port();
        let config = Config::from_lookup(|name| match name {
            "AICD_DATA_DIR" => db.dir().to_str().map(str::to_owned),
            "REDIS_URL" => Some(RedisServer::url_for(port)),
            "AICD_REDIS_NAMESPACE" => Some("aicd-test:runtime-late:".to_owned()),
            _ => None,
        })
        .unwrap();
        let store = open_store(&config).await.unwrap();
        let started = Instant::now();
        let signals = open_signals(&config).await.expect("Redis being down does not stop the start");
        assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
        let forge = build_forge(&config, store.clone(), None);
        let _orchestrator = build_orchestrator(&config, store.clone(), &signals, &Metrics::new(), forge).unwrap();

        let readiness = Readiness::new(store, signals.redis.clone());
        let report = readiness.check().await;
        assert!(report.ready && report.degraded, "ready, without Redis: {report:?}");
        let redis = &report.checks[1];
        assert_eq!((redis.name, redis.ok, redis.required), ("redis", false, false), "{report:?}");
        assert!(redis.error.as_deref().is_some_and(|e| e.contains("down")), "{report:?}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!((json["ready"].clone(), json["degraded"].clone()), (true.into(), true.into()));
        assert_eq!(json["checks"][0]["required"], true);

        let _server = RedisServer::start(port).await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let report = readiness.check().await;
            if !report.degraded {
                assert!(report.ready && report.checks.iter().all(|c| c.ok), "{report:?}");
                break;
            }
            assert!(Instant::now() < deadline, "still degraded once Redis answers: {report:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn an_unreachable_database_fails_naming_the_variable_without_the_password() {
        let config = Config::from_lookup(|name| {
            (name == "DATABASE_URL").then(|| "postgres://aicd:hunter2-secret@127.0.0.1:1/aicd".to_owned())
        })
        .unwrap();
        let err = format!("{:#}", open_store(&config).await.unwrap_err());
        assert!(err.contains("DATABASE_URL") && !err.contains("hunter2-secret"), "{err}");
    }
}
