//! `aicd-worker`: claims jobs and drives them QUEUED -> PLANNING -> CODING -> REVIEWING -> PR_OPEN.
//!
//! Configured from the environment (see `config.rs`): PostgreSQL (`DATABASE_URL`, as the restricted
//! application role) or the embedded SQLite file under `AICD_DATA_DIR`; Redis signals
//! (`REDIS_URL`) or in-process ones; the scripted agent; the local git forge. Runs until SIGTERM
//! or Ctrl-C, then stops claiming and lets running jobs reach a checkpoint and release their
//! leases within `AICD_SHUTDOWN_GRACE_SECS`. A second signal stops it at once.

mod config;
mod shutdown;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use aicd_agent_api::testing::SlowAgent;
use aicd_agent_api::{Agent, ScriptedAgent};
use aicd_core::forge::LocalGitForge;
use aicd_core::orchestrator::Orchestrator;
use aicd_core::signals::{Doorbell, EventBus, LocalDoorbell, LocalEventBus, RedisSignals};
use aicd_core::store::{PostgresOptions, SqlStore};
use anyhow::Context;

use crate::config::{AgentKind, Config, Database, LogFormat, Signals};

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(problems) => {
            let problems: Vec<String> = problems.lines().map(|p| format!("  - {p}")).collect();
            eprintln!("aicd-worker: invalid configuration:\n{}", problems.join("\n"));
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %config.scrub(&describe(&e)), "the worker stopped");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::new(&config.log_filter);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

async fn run(config: &Config) -> anyhow::Result<()> {
    let mut signals = shutdown::Signals::install()?;
    let (store, orchestrator) = tokio::select! {
        built = build(config) => built?,
        signal = signals.next() => {
            tracing::info!(signal, "stopped while starting");
            return Ok(());
        }
    };
    let worker = orchestrator.spawn_worker();
    let signal = signals.next().await;
    let grace_secs = config.shutdown_grace.as_secs();
    tracing::info!(signal, grace_secs, "shutting down: no new claims; running jobs stop at their next checkpoint");
    tokio::select! {
        () = worker.shutdown(config.shutdown_grace) => {}
        signal = signals.next() => {
            anyhow::bail!("{signal} during shutdown: stopped without waiting for running jobs (their leases lapse)");
        }
    }
    store.close().await;
    tracing::info!("worker exited");
    Ok(())
}

/// Opens the store and the signals and assembles the orchestrator.
async fn build(config: &Config) -> anyhow::Result<(Arc<SqlStore>, Orchestrator)> {
    let store = Arc::new(match &config.database {
        Database::Postgres { url } => {
            let max_connections = u32::try_from(config.concurrency + 2).unwrap_or(u32::MAX).clamp(4, 32);
            let options = PostgresOptions { max_connections, ..PostgresOptions::default() };
            SqlStore::postgres(url.expose(), options).await.context("opening the PostgreSQL database (DATABASE_URL)")?
        }
        Database::Sqlite { path } => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {} (AICD_DATA_DIR)", dir.display()))?;
            }
            SqlStore::sqlite(path).await.with_context(|| format!("opening the SQLite database {}", path.display()))?
        }
    });
    let (doorbell, bus): (Arc<dyn Doorbell>, Arc<dyn EventBus>) = match &config.signals {
        Signals::Redis { url, namespace } => {
            let redis =
                Arc::new(RedisSignals::connect(url.expose(), namespace).await.context("connecting to REDIS_URL")?);
            (redis.clone(), redis)
        }
        Signals::Local => (Arc::new(LocalDoorbell::new()), Arc::new(LocalEventBus::new())),
    };
    let agent: Arc<dyn Agent> = match config.agent {
        AgentKind::Scripted { delay } if delay.is_zero() => Arc::new(ScriptedAgent::new()),
        AgentKind::Scripted { delay } => Arc::new(SlowAgent::new(ScriptedAgent::new(), delay)),
    };
    tracing::info!(
        worker_id = %config.worker_id,
        database = store.backend(),
        signals = if matches!(config.signals, Signals::Local) { "local" } else { "redis" },
        agent = agent.name(),
        concurrency = config.concurrency,
        lease_secs = config.lease.as_secs(),
        "worker ready"
    );
    let forge = Arc::new(LocalGitForge::new());
    let orchestrator = Orchestrator::new(store.clone(), agent, forge, doorbell, bus, config.orchestrator());
    Ok((store, orchestrator))
}

/// The error and its causes on one line, each said once (core errors repeat their source).
fn describe(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain().map(ToString::to_string) {
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}
