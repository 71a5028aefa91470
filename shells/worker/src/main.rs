//! `aicd-worker`: claims jobs and drives them QUEUED -> PLANNING -> CODING -> REVIEWING -> PR_OPEN.
//!
//! Configured from the environment (see `aicd_runtime::config`): PostgreSQL (`DATABASE_URL`, as the
//! restricted application role) or the embedded SQLite file under `AICD_DATA_DIR`; Redis signals
//! (`REDIS_URL`) or in-process ones; the scripted agent; the local git forge. Serves `/health`,
//! `/ready` and `/metrics` on `AICD_WORKER_LISTEN_ADDR`. Runs until SIGTERM or Ctrl-C, then stops
//! claiming, lets running jobs reach a checkpoint and release their leases within
//! `AICD_SHUTDOWN_GRACE_SECS`, and stops serving. A second signal stops it at once.
//!
//! Exit codes: 0 after a clean shutdown, 2 for an invalid configuration (every problem listed), 1
//! for anything else.

use std::process::ExitCode;
use std::sync::Arc;

use aicd_core::orchestrator::Orchestrator;
use aicd_core::store::SqlStore;
use aicd_github::CommandProcessor;
use aicd_runtime::assemble::{self, Readiness};
use aicd_runtime::config::{Config, Signals};
use aicd_runtime::metrics::Metrics;
use aicd_runtime::shutdown;
use aicd_runtime::{ops, telemetry};
use anyhow::Context;

/// How long the ops server gets to finish requests in flight once the worker has stopped.
const OPS_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(problems) => {
            let problems: Vec<String> = problems.0.iter().map(|p| format!("  - {p}")).collect();
            eprintln!("aicd-worker: invalid configuration:\n{}", problems.join("\n"));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("aicd-worker: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = {
        let _inside = runtime.enter();
        telemetry::init(&config, "aicd-worker")
    };
    let telemetry = match telemetry {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("aicd-worker: cannot start telemetry: {}", config.scrub(&describe(&e)));
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %config.scrub(&describe(&e)), "the worker stopped");
            ExitCode::FAILURE
        }
    };
    // Flushes the traces still buffered, on the runtime that exports them.
    drop(telemetry);
    code
}

async fn run(config: &Config) -> anyhow::Result<()> {
    let mut signals = shutdown::Signals::install()?;
    let metrics = Metrics::new();
    let Parts { store, orchestrator, readiness, commands, meters } = tokio::select! {
        built = build(config, &metrics) => built?,
        signal = signals.next() => {
            tracing::info!(signal, "stopped while starting");
            return Ok(());
        }
    };
    let addr = config.worker.listen_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (AICD_WORKER_LISTEN_ADDR)"))?;
    let bound = listener.local_addr().context("the ops listener has no address")?;
    tracing::info!(addr = %bound, "ops listening");
    let (stop_ops, ops_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = ops::router(metrics, readiness, store.clone(), config.metrics_token.clone());
    let mut ops_server = tokio::spawn(ops::serve(listener, router, async {
        let _ = ops_stopped.await;
    }));

    let worker = orchestrator.spawn_worker();
    let (stop_commands, commands_stopping) = tokio::sync::watch::channel(false);
    let meters = meters.map(|dispatcher| dispatcher.spawn(commands_stopping.clone()));
    let commands = commands.map(|processor| processor.spawn(commands_stopping));
    let mut ops_failed = None;
    let signal = tokio::select! {
        signal = signals.next() => signal,
        ended = &mut ops_server => {
            let error = match ended {
                Ok(Ok(())) => "it stopped".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!(%error, "the ops server failed; shutting down");
            ops_failed = Some(error);
            "the ops server's failure"
        }
    };
    let grace_secs = config.shutdown_grace.as_secs();
    tracing::info!(signal, grace_secs, "shutting down: no new claims; running jobs stop at their next checkpoint");
    let _ = stop_commands.send(true);
    tokio::select! {
        () = worker.shutdown(config.shutdown_grace) => {}
        signal = signals.next() => {
            anyhow::bail!("{signal} during shutdown: stopped without waiting for running jobs (their leases lapse)");
        }
    }
    if let Some(commands) = commands
        && tokio::time::timeout(config.shutdown_grace.max(OPS_STOP_TIMEOUT), commands).await.is_err()
    {
        tracing::warn!("the comment command processor did not stop in time (its claim lapses)");
    }
    if let Some(meters) = meters
        && tokio::time::timeout(config.shutdown_grace.max(OPS_STOP_TIMEOUT), meters).await.is_err()
    {
        tracing::warn!("the billing meter dispatcher did not stop in time (its claim lapses)");
    }
    if ops_failed.is_none() {
        let _ = stop_ops.send(());
        match tokio::time::timeout(OPS_STOP_TIMEOUT, ops_server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the ops server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the ops server task failed"),
            Err(_) => tracing::warn!("the ops server did not stop in time"),
        }
    }
    store.close().await;
    if let Some(error) = ops_failed {
        anyhow::bail!("the ops server on {bound} failed: {error}");
    }
    tracing::info!("worker exited");
    Ok(())
}

/// What the worker runs.
struct Parts {
    store: Arc<SqlStore>,
    orchestrator: Orchestrator,
    readiness: Readiness,
    /// The `/aicd` comment command processor, when the GitHub App is configured.
    commands: Option<CommandProcessor>,
    meters: Option<aicd_core::billing::MeterDispatcher>,
}

/// Opens the store and the signals and assembles the orchestrator (reporting to `metrics`), the
/// comment command processor and the readiness checks.
async fn build(config: &Config, metrics: &Metrics) -> anyhow::Result<Parts> {
    let store = assemble::open_store(config).await?;
    let signals = assemble::open_signals(config).await?;
    // One installation-token cache for the process: the forge and the command processor share it.
    let tokens = assemble::github_tokens(config)?;
    let forge = assemble::build_forge(config, store.clone(), tokens.as_ref());
    let orchestrator = assemble::build_orchestrator(config, store.clone(), &signals, metrics, forge)?;
    let core = assemble::build_core(config, store.clone(), &signals)?;
    let meters = assemble::build_meter_dispatcher(config, &core);
    let commands = assemble::build_command_processor(config, core, tokens.as_ref());
    tracing::info!(
        worker_id = %config.worker.worker_id,
        environment = config.environment.as_str(),
        database = store.backend(),
        signals = if matches!(config.signals, Signals::Local) { "local" } else { "redis" },
        agent = config.agent.as_str(),
        concurrency = config.worker.concurrency,
        lease_secs = config.worker.lease.as_secs(),
        github_commands = commands.is_some(),
        billing = meters.is_some(),
        "worker ready"
    );
    let readiness = Readiness::new(store.clone(), signals.redis.clone());
    Ok(Parts { store, orchestrator, readiness, commands, meters })
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
