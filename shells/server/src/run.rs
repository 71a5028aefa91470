//! `aicd-server run`: one command that turns an issue into a change on a git repository on this
//! machine. It opens the embedded store (SQLite, in a temporary directory or `--data-dir`),
//! registers the repository with a local organization, files a job for the issue, runs it with the
//! configured agent and an in-process worker (assembled as `serve` assembles them), prints the
//! job's timeline as it happens, and ends with the outcome: the final state, the branch and pull
//! request, the diff and what the agent calls cost.
//!
//! Exit codes: 0 when the job opened its pull request, 1 when it failed (the reason is printed) or
//! anything else went wrong, 2 for bad arguments or configuration, 130 when interrupted (the first
//! Ctrl-C or SIGTERM cancels the job and waits for the worker to let go of it; a second one stops
//! at once).

mod repo;
mod timeline;

use std::fmt;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use aicd_core::forge::Forge;
use aicd_core::jobs::{IssueRef, Job, JobEvent, JobState, NewJob, Trigger};
use aicd_core::orchestrator::WorkerHandle;
use aicd_core::repos::{NewRepo, RepoPatch, RepoSource, Repository};
use aicd_core::store::{DispatchStore, SqlStore};
use aicd_core::tenancy::{Actor, NewOrg, NewUser, Role};
use aicd_core::{Core, Error, JobId, OrgId};
use aicd_runtime::assemble;
use aicd_runtime::config::{Config, Database, Environment, Signals};
use aicd_runtime::metrics::Metrics;
use aicd_runtime::shutdown;
use anyhow::Context;
use tokio::sync::broadcast;

use self::repo::LocalRepo;
use self::timeline::{Timeline, dollars, one_line, printable};

/// The exit code for bad arguments or configuration.
const EXIT_USAGE: u8 = 2;
/// The exit code after an interruption (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;
/// The log filter when `RUST_LOG` is not set: warnings and errors only, so the timeline reads well.
const QUIET_LOGS: &str = "warn";
/// The subject of the local user `run` acts as.
const LOCAL_SUBJECT: &str = "local:aicd-server-run";
/// The organization `run` registers repositories with (one per store, reused by later runs).
const LOCAL_ORG: &str = "Local";
/// How often the timeline is re-read when no event was heard on the bus.
const RESYNC: Duration = Duration::from_secs(1);
/// How often the spinner moves.
const SPIN: Duration = Duration::from_millis(120);
/// How long closing the store may take.
const STORE_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Events read at once.
const PAGE: u32 = 200;
/// The width of the outcome's labels.
const LABEL: usize = 15;

/// The arguments of `aicd-server run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// The git repository to work on: its top directory (with its .git directory) or a bare
    /// repository. Its working tree, index and HEAD are left untouched; the change is a new branch.
    #[arg(long, value_name = "PATH")]
    repo: PathBuf,
    /// The issue's title.
    #[arg(long, value_name = "TITLE")]
    issue: String,
    /// The issue's body. The scripted agent (the default) writes the text of each fenced code
    /// block whose info string is `aicd:write <path>` to that path.
    #[arg(long, value_name = "TEXT", conflicts_with = "body_file")]
    body: Option<String>,
    /// Read the issue's body from this file (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    body_file: Option<PathBuf>,
    /// The branch the change starts from and its pull request targets (default: the branch HEAD
    /// points to).
    #[arg(long, value_name = "BRANCH")]
    base: Option<String>,
    /// Keep the store (aicd.db) in this directory, to run again or look at later; by default it is
    /// a temporary directory, removed at the end. Not the directory of a running server.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

/// A problem with the arguments or the configuration, said so the user can fix it (exit code 2).
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Where the store lives.
enum StoreDir {
    /// A temporary directory, removed when this is dropped.
    Temporary(tempfile::TempDir),
    /// The directory given with `--data-dir`, kept.
    Kept(PathBuf),
}

impl StoreDir {
    fn path(&self) -> &Path {
        match self {
            StoreDir::Temporary(dir) => dir.path(),
            StoreDir::Kept(dir) => dir,
        }
    }
}

/// What the arguments asked for, checked.
struct Prepared {
    repo: LocalRepo,
    issue: IssueRef,
    store: StoreDir,
}

/// Runs `aicd-server run` with `config` (read from the environment) and `args`, and returns the
/// exit code. `config` is adjusted to the command: the embedded store in its own directory,
/// in-process signals, and local repositories allowed under the repository alone.
pub(crate) fn main(mut config: Config, args: RunArgs) -> ExitCode {
    let prepared = match prepare(&mut config, args) {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("aicd-server run: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("aicd-server run: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let _telemetry = match aicd_runtime::telemetry::init(&config, "aicd-server") {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("aicd-server run: cannot set up telemetry: {}", config.scrub(&format!("{e:#}")));
                return ExitCode::FAILURE;
            }
        };
        match execute(&config, &prepared).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("aicd-server run: {}", config.scrub(&format!("{e:#}")));
                if e.downcast_ref::<UsageError>().is_some() { ExitCode::from(EXIT_USAGE) } else { ExitCode::FAILURE }
            }
        }
    });
    // Work abandoned by a second Ctrl-C does not hold the exit up.
    runtime.shutdown_timeout(Duration::from_secs(1));
    // Removes a temporary store.
    drop(prepared);
    code
}

/// Checks the arguments and adjusts `config` to them.
fn prepare(config: &mut Config, args: RunArgs) -> Result<Prepared, UsageError> {
    if config.environment == Environment::Production {
        return Err(UsageError(
            "`run` works on a repository on this machine's disk, which AICD_ENV=production refuses".into(),
        ));
    }
    let body = match (args.body, &args.body_file) {
        (Some(_), Some(_)) => return Err(UsageError("--body and --body-file cannot be used together".into())),
        (Some(body), None) => body,
        (None, Some(file)) => read_body(file)?,
        (None, None) => String::new(),
    };
    let issue = IssueRef { number: None, title: args.issue, body, url: None, author: None }.validate().map_err(
        |e| match e {
            Error::InvalidInput(message) => UsageError(format!("the issue is not valid: {message}")),
            other => UsageError(other.to_string()),
        },
    )?;
    let repo = repo::check(&args.repo, args.base.as_deref())?;
    let store = match args.data_dir {
        Some(dir) => StoreDir::Kept(
            std::path::absolute(&dir).map_err(|e| UsageError(format!("--data-dir {}: {e}", dir.display())))?,
        ),
        None => StoreDir::Temporary(
            tempfile::Builder::new()
                .prefix("aicd-run-")
                .tempdir()
                .map_err(|e| UsageError(format!("cannot create a temporary directory for the store: {e}")))?,
        ),
    };
    if matches!(config.database, Database::Postgres { .. }) {
        eprintln!("aicd-server run: note: DATABASE_URL is not used; `run` keeps its own embedded store");
    }
    if matches!(config.signals, Signals::Redis { .. }) {
        eprintln!("aicd-server run: note: REDIS_URL is not used; `run` signals within its own process");
    }
    config.database = Database::Sqlite { path: store.path().join("aicd.db") };
    config.signals = Signals::Local;
    config.server.allow_local_repos = true;
    config.server.local_repo_roots = vec![repo.path.clone()];
    if std::env::var_os("RUST_LOG").is_none_or(|v| v.is_empty()) {
        config.log_filter = QUIET_LOGS.to_owned();
    }
    Ok(Prepared { repo, issue, store })
}

/// The issue's body from `file` (`-`: standard input).
fn read_body(file: &Path) -> Result<String, UsageError> {
    let mut bytes = Vec::new();
    let read = if file == Path::new("-") {
        std::io::stdin().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes))
    };
    read.map_err(|e| UsageError(format!("--body-file {}: {e}", file.display())))?;
    String::from_utf8(bytes).map_err(|_| UsageError(format!("--body-file {}: not UTF-8 text", file.display())))
}

/// Opens the store, runs the job and reports it; closes the store whatever happens.
async fn execute(config: &Config, prepared: &Prepared) -> anyhow::Result<ExitCode> {
    aicd_runtime::telemetry::install_crypto_provider();
    let mut signals = shutdown::Signals::install().context("cannot install signal handlers")?;
    let store = assemble::open_store(config).await?;
    let result = run_job(config, prepared, &store, &mut signals).await;
    // A job abandoned by a second signal may still hold a connection; it is not waited for long.
    if tokio::time::timeout(STORE_CLOSE_TIMEOUT, store.close()).await.is_err() {
        tracing::warn!("the store did not close in time");
    }
    result
}

/// The parts `run` works with, and where it stands.
struct Session<'a> {
    core: Core,
    actor: Actor,
    org: OrgId,
    forge: Arc<dyn Forge>,
    repo: &'a LocalRepo,
}

/// How following a job ended.
enum Followed {
    /// It left the runnable states (PR_OPEN, FAILED, ...).
    Settled(Box<Job>),
    /// A signal arrived first.
    Interrupted(&'static str),
}

/// Registers the repository, files the job, runs it with an in-process worker while printing its
/// timeline, cancels it on a signal, and prints the outcome; returns the exit code.
async fn run_job(
    config: &Config,
    prepared: &Prepared,
    store: &Arc<SqlStore>,
    signals: &mut shutdown::Signals,
) -> anyhow::Result<ExitCode> {
    let signal_set = assemble::open_signals(config).await?;
    let core = assemble::build_core(config, store.clone(), &signal_set)?;
    let forge = assemble::build_forge(config, store.clone(), None);
    let orchestrator =
        assemble::build_orchestrator(config, store.clone(), &signal_set, &Metrics::new(), forge.clone())?;
    let agent = config.agent.as_str().to_owned();
    let (actor, org) = local_actor(&core).await?;
    let repo = register(&core, &actor, org, prepared).await?;
    let waiting = store.queue_depth().await.unwrap_or(0);
    // Subscribed before the job exists, so none of its events can be missed.
    let mut live = signal_set.bus.subscribe();
    let new = NewJob {
        repo_id: repo.id,
        issue: prepared.issue.clone(),
        trigger: Trigger::Api,
        max_tokens: None,
        max_cost_micros: None,
    };
    let job = core.create_job(&actor, org, new).await.map_err(|e| match e {
        Error::InvalidInput(message) => anyhow::Error::new(UsageError(format!("the job cannot be filed: {message}"))),
        other => anyhow::Error::new(other).context("filing the job"),
    })?;
    let worker = orchestrator.spawn_worker();
    let session = Session { core, actor, org, forge, repo: &prepared.repo };

    let stdout = std::io::stdout();
    let tty = stdout.is_terminal() && std::env::var_os("TERM").is_none_or(|term| term != "dumb");
    let mut timeline = Timeline::new(stdout, tty);
    timeline.line(&format!("Job {} for \"{}\"", job.id, one_line(&job.issue.title)));
    timeline.line(&format!("  repository {} (base {})", prepared.repo.path.display(), prepared.repo.base));
    let store_line = match &prepared.store {
        StoreDir::Temporary(_) => "temporary, removed at the end".to_owned(),
        StoreDir::Kept(dir) => dir.join("aicd.db").display().to_string(),
    };
    timeline.line(&format!("  agent {agent}; store {store_line}"));
    if waiting > 0 {
        timeline.line(&format!("  note: {waiting} other job(s) wait in this store; this worker may run them too"));
    }
    timeline.line("");

    let mut after = None;
    let followed = follow(&session, job.id, &mut after, &mut live, signals, &mut timeline).await;
    let (job, interrupted) = match followed {
        Ok(Followed::Settled(job)) => {
            worker.shutdown(config.shutdown_grace).await;
            (*job, false)
        }
        Ok(Followed::Interrupted(signal)) => {
            if !cancel(&session, job.id, signal, worker, config.shutdown_grace, signals, &mut timeline).await? {
                timeline.finish();
                return Ok(ExitCode::from(EXIT_INTERRUPTED));
            }
            drain(&session, job.id, &mut after, &mut timeline).await?;
            (session.core.get_job(&session.actor, org, job.id).await?, true)
        }
        Err(e) => {
            worker.shutdown(config.shutdown_grace).await;
            return Err(e);
        }
    };
    let mut out = timeline.finish();
    report(&session, &job, &mut out).await?;
    if let StoreDir::Kept(dir) = &prepared.store {
        let _ = writeln!(out, "{:<LABEL$}{}", "store:", dir.join("aicd.db").display());
    }
    let _ = out.flush();
    Ok(match job.state {
        _ if interrupted => ExitCode::from(EXIT_INTERRUPTED),
        JobState::PrOpen | JobState::Merged | JobState::Closed => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}

/// The local user `run` acts as, as the org_admin of the store's local organization (both made
/// on first use).
async fn local_actor(core: &Core) -> anyhow::Result<(Actor, OrgId)> {
    let user = NewUser { subject: LOCAL_SUBJECT.into(), email: None, name: Some("aicd-server run".into()) };
    let user = core.sign_in(user).await.context("creating the local user")?;
    let existing =
        core.list_orgs(user.id).await?.into_iter().find(|(org, role)| org.name == LOCAL_ORG && *role == Role::OrgAdmin);
    let org = match existing {
        Some((org, _)) => org,
        None => {
            let org = NewOrg { name: LOCAL_ORG.into(), max_concurrent_jobs: None, settings: None };
            core.create_org(user.id, org).await.context("creating the local organization")?
        }
    };
    Ok((core.user_actor(user.id, org.id).await?, org.id))
}

/// The repository of `prepared`, registered with `org` (or as registered by an earlier run, its
/// default branch set to the base).
async fn register(core: &Core, actor: &Actor, org: OrgId, prepared: &Prepared) -> anyhow::Result<Repository> {
    let repo = &prepared.repo;
    let path = repo.path.to_str().context("the repository's path is not UTF-8")?;
    let repos = core.list_repos(actor, org).await?;
    if let Some(found) = repos.iter().find(|r| matches!(&r.source, RepoSource::Local { path: p } if p == path)) {
        if found.default_branch == repo.base {
            return Ok(found.clone());
        }
        let patch = RepoPatch { default_branch: Some(repo.base.clone()), settings: None };
        return Ok(core.update_repo(actor, org, found.id, patch).await?);
    }
    let new = NewRepo {
        full_name: unique_name(&repos, &repo.path),
        source: RepoSource::Local { path: path.to_owned() },
        default_branch: Some(repo.base.clone()),
        settings: None,
    };
    core.create_repo(actor, org, new).await.map_err(|e| match e {
        Error::InvalidInput(message) | Error::Conflict(message) => {
            let hint = match &prepared.store {
                StoreDir::Kept(_) => " (is it registered in this --data-dir by another organization? use another one)",
                StoreDir::Temporary(_) => "",
            };
            anyhow::Error::new(UsageError(format!("--repo {path} cannot be registered: {message}{hint}")))
        }
        other => anyhow::Error::new(other).context("registering the repository"),
    })
}

/// `local/<directory name>`, with a number added if the organization has that name already.
fn unique_name(repos: &[Repository], path: &Path) -> String {
    let dir = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let clean: String =
        dir.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    let clean = clean.trim_start_matches('.');
    let base = format!("local/{}", if clean.is_empty() { "repository" } else { clean });
    let taken = |name: &str| repos.iter().any(|r| r.full_name == name);
    (1..).map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") }).find(|name| !taken(name)).unwrap_or(base)
}

/// Prints the job's events as they happen until it settles or a signal arrives. `after` is the
/// last event printed.
async fn follow<W: Write>(
    session: &Session<'_>,
    job: JobId,
    after: &mut Option<i64>,
    live: &mut broadcast::Receiver<JobEvent>,
    signals: &mut shutdown::Signals,
    timeline: &mut Timeline<W>,
) -> anyhow::Result<Followed> {
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut spin = tokio::time::interval(SPIN);
    spin.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut bus_open = true;
    loop {
        drain(session, job, after, timeline).await?;
        let current = session.core.get_job(&session.actor, session.org, job).await?;
        if !current.state.is_runnable() {
            // The events written with the last transition.
            drain(session, job, after, timeline).await?;
            return Ok(Followed::Settled(Box::new(current)));
        }
        timeline.set_state(current.state);
        // Wait for news of the job (the timeline stays the source of truth), moving the spinner.
        loop {
            tokio::select! {
                received = live.recv(), if bus_open => match received {
                    Ok(event) if event.job_id == job => break,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => bus_open = false,
                },
                _ = resync.tick() => break,
                _ = spin.tick(), if timeline.live() => timeline.spin(),
                signal = signals.next() => return Ok(Followed::Interrupted(signal)),
            }
        }
    }
}

/// Prints the events after `after`.
async fn drain<W: Write>(
    session: &Session<'_>,
    job: JobId,
    after: &mut Option<i64>,
    timeline: &mut Timeline<W>,
) -> anyhow::Result<()> {
    loop {
        let page = session.core.list_events(&session.actor, session.org, job, *after, PAGE).await?;
        for event in &page {
            timeline.event(event);
            *after = Some(event.id);
        }
        if page.len() < PAGE as usize {
            return Ok(());
        }
    }
}

/// Cancels the job after `signal`: asks for it, lets the worker stop at its next checkpoint and
/// release the job (within `grace`), and cancels what is left unheld. `false` when a second signal
/// cut that short.
async fn cancel<W: Write>(
    session: &Session<'_>,
    job: JobId,
    signal: &'static str,
    worker: WorkerHandle,
    grace: Duration,
    signals: &mut shutdown::Signals,
    timeline: &mut Timeline<W>,
) -> anyhow::Result<bool> {
    timeline.line(&format!("{signal}: cancelling the job (again to stop at once)"));
    request_cancel(session, job).await?;
    tokio::select! {
        () = worker.shutdown(grace) => {}
        signal = signals.next() => {
            timeline.line(&format!("{signal}: stopped without waiting for the worker"));
            return Ok(false);
        }
    }
    if session.core.get_job(&session.actor, session.org, job).await?.state.is_runnable() {
        // Released by the worker, or never claimed: cancelled at once now.
        request_cancel(session, job).await?;
    }
    Ok(true)
}

/// Asks to cancel the job (at once if no worker holds it); a job that ended meanwhile is left as it is.
async fn request_cancel(session: &Session<'_>, job: JobId) -> anyhow::Result<()> {
    match session.core.cancel_job(&session.actor, session.org, job).await {
        // It ended meanwhile.
        Ok(_) | Err(Error::Conflict(_)) => Ok(()),
        Err(e) => Err(anyhow::Error::new(e).context("cancelling the job")),
    }
}

/// Prints how the job ended: its state (and why it failed), its branch and pull request, its diff
/// and what it cost.
async fn report(session: &Session<'_>, job: &Job, out: &mut impl Write) -> anyhow::Result<()> {
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<LABEL$}{}", "state:", job.state);
    if job.state == JobState::Failed {
        let reason = printable(job.failure_reason.as_deref().unwrap_or("no reason was recorded"));
        for (i, line) in reason.trim().lines().enumerate() {
            let label = if i == 0 { "reason:" } else { "" };
            let _ = writeln!(out, "{}", format!("{label:<LABEL$}{line}").trim_end());
        }
    }
    if let Some(pr) = &job.checkpoints.pull_request {
        let _ = writeln!(out, "{:<LABEL$}{}", "branch:", pr.branch);
        let _ = writeln!(out, "{:<LABEL$}#{} {}", "pull request:", pr.number, pr.url);
        let record = session.repo.git_dir().join("aicd").join("pulls").join(format!("{}.json", pr.number));
        if record.is_file() {
            let _ = writeln!(out, "{:LABEL$}recorded in {}", "", record.display());
        }
        let _ = writeln!(out, "{:<LABEL$}git -C {} show {}", "inspect:", session.repo.path.display(), pr.branch);
    }
    let unpublished = if job.checkpoints.pull_request.is_some() { "" } else { " (not published)" };
    match session.core.job_diff(&session.actor, session.org, job.id, session.forge.as_ref()).await {
        Ok(diff) if diff.patch.is_empty() => {
            let _ = writeln!(out, "{:<LABEL$}no change against {}{unpublished}", "diff:", diff.base_branch);
        }
        Ok(diff) => {
            let files = diff.files.len();
            let plural = if files == 1 { "" } else { "s" };
            let _ = writeln!(out, "{:<LABEL$}{files} file{plural} against {}{unpublished}", "diff:", diff.base_branch);
            let _ = writeln!(out);
            let patch = printable(&diff.patch);
            let _ = write!(out, "{patch}");
            if !patch.ends_with('\n') {
                let _ = writeln!(out);
            }
            let _ = writeln!(out);
        }
        // No changeset: the job ended before the coder wrote one.
        Err(Error::Conflict(_)) => {}
        Err(e) => {
            let _ = writeln!(out, "{:<LABEL$}unavailable: {}", "diff:", one_line(&e.to_string()));
        }
    }
    let spent = spent(session, job).await?;
    let calls = if spent.calls == 1 { "1 agent call".to_owned() } else { format!("{} agent calls", spent.calls) };
    let _ = writeln!(
        out,
        "{:<LABEL$}{} tokens in, {} tokens out, {} ({calls})",
        "cost:",
        spent.input_tokens,
        spent.output_tokens,
        dollars(spent.cost_micros)
    );
    Ok(())
}

/// What a job's agent calls spent, added up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Spent {
    input_tokens: u64,
    output_tokens: u64,
    cost_micros: u64,
    calls: u64,
}

/// What the job's agent calls spent, from its usage records.
async fn spent(session: &Session<'_>, job: &Job) -> anyhow::Result<Spent> {
    let from = job.created_at - chrono::Duration::seconds(1);
    let to = chrono::Utc::now() + chrono::Duration::seconds(1);
    let records = session.core.store().list_usage(session.org, from, to).await.context("reading the job's usage")?;
    Ok(records.iter().filter(|r| r.job_id == Some(job.id)).fold(Spent::default(), |sum, r| Spent {
        input_tokens: sum.input_tokens.saturating_add(r.input_tokens),
        output_tokens: sum.output_tokens.saturating_add(r.output_tokens),
        cost_micros: sum.cost_micros.saturating_add(r.cost_micros),
        calls: sum.calls + 1,
    }))
}
