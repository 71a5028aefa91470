//! `aicd-server`: the AI-CD server binary.
//!
//! `serve` (the default) runs the HTTP API; with no `DATABASE_URL` it is the embedded default (a
//! SQLite file under `AICD_DATA_DIR`, the worker in-process, no Redis). `migrate` applies database
//! migrations, `config check` validates every setting at once, `admin bootstrap` creates an
//! organization with a first org_admin API key, and `admin link-installation` links a GitHub App
//! installation to an organization as the operator. `run` turns one issue into a change on a local
//! git repository from start to finish, printing the job's timeline (see the `run` module).
//! `policy scan` runs the policy engine's secret rules over staged changes or files, for a
//! pre-commit hook (see the `scan` module).

mod run;
mod scan;

use std::process::ExitCode;
use std::sync::Arc;

use aicd_core::store::SqlStore;
use aicd_core::tenancy::NewOrg;
use aicd_core::{Core, CoreOptions};
use aicd_runtime::config::{Config, Database};
use aicd_runtime::shutdown::Signals;
use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "aicd-server", version, about = "AI-CD: turns issues into reviewed pull requests")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default). Without DATABASE_URL: the embedded default, with the
    /// worker in-process.
    Serve {
        /// A directory local repositories may be registered under, besides AICD_LOCAL_REPO_ROOTS
        /// (and, in the embedded default, the data directory). Repeatable.
        #[arg(long = "repo-root", value_name = "DIR")]
        repo_roots: Vec<std::path::PathBuf>,
    },
    /// Run one issue to a change on a local git repository, printing the job's timeline.
    ///
    /// Uses the embedded store (temporary unless --data-dir), the configured agent (AICD_AGENT) and
    /// an in-process worker; prints the job's events as they happen, then its state, branch, pull
    /// request, diff and cost. Exits 0 when the pull request is open, 1 when the job failed, 2 for
    /// bad arguments or configuration, 130 when interrupted (Ctrl-C cancels the job).
    Run(run::RunArgs),
    /// Apply database migrations (PostgreSQL: as the owner role of AICD_DATABASE_MIGRATION_URL).
    Migrate,
    /// Configuration tasks.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Administrative tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Billing tasks of the operator.
    Billing {
        #[command(subcommand)]
        command: BillingCommand,
    },
    /// The policy engine, outside a job.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Scan files for secrets with the policy engine's secret rules, as a pre-commit hook does.
    ///
    /// Prints each finding as `path:line: rule: message`, the secret redacted. Exits 1 when it
    /// finds any, 0 when none, 2 for bad arguments or when git or a file cannot be read. Reads no
    /// configuration.
    Scan(scan::ScanArgs),
}

#[derive(Subcommand)]
enum BillingCommand {
    /// List what the payment provider has not acknowledged yet, per organization and meter:
    /// pending rows (still being sent) and parked ones (refused, with the reason), with their
    /// totals and oldest fact. Prints nothing else when everything is acknowledged.
    Reconcile {
        /// Print one JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Set how an organization is billed from now on (facts already recorded keep their meter).
    SetMode {
        /// The organization's id.
        #[arg(long)]
        org: aicd_core::OrgId,
        /// `tokens`, `cost`, `pull_requests` or `merged_pull_requests`.
        #[arg(long)]
        mode: aicd_core::billing::PricingMode,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate every setting at once; print each problem, or the effective settings (secrets
    /// hidden). Exits 2 when there is a problem.
    Check,
    /// Print every configuration variable, its default and whether it is secret, as a Markdown
    /// table (the README's table is this output).
    Variables,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an organization and print a first org_admin API key (shown once).
    Bootstrap {
        /// The organization's name.
        #[arg(long)]
        org: String,
        /// Print one JSON line: {"org_id": ..., "api_key": ...}.
        #[arg(long)]
        json: bool,
    },
    /// Link a GitHub App installation to an organization, as the operator, without the setup
    /// flow's check: only for an installation you know belongs to that organization's owners.
    /// Registers its repositories when the App is configured.
    LinkInstallation {
        /// The organization's id.
        #[arg(long)]
        org: aicd_core::OrgId,
        /// GitHub's installation id.
        #[arg(long)]
        installation: aicd_core::github::InstallationId,
        /// The login of the account it is installed on.
        #[arg(long)]
        account: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Config { command: ConfigCommand::Variables }) = cli.command {
        print!("{}", variables_table());
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Policy { command: PolicyCommand::Scan(args) }) = cli.command {
        return scan::main(args);
    }
    let mut config = match Config::from_env() {
        Ok(config) => config,
        Err(problems) => {
            let list: Vec<String> = problems.0.iter().map(|p| format!("  - {p}")).collect();
            eprintln!("aicd-server: invalid configuration:\n{}", list.join("\n"));
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Run(args)) = cli.command {
        return run::main(config, args);
    }
    if let Some(Command::Serve { repo_roots }) = &cli.command {
        add_repo_roots(&mut config, repo_roots);
    }
    if let Some(Command::Config { command: ConfigCommand::Check }) = cli.command {
        println!("configuration OK ({} environment)", config.environment.as_str());
        for (name, value) in config.summary() {
            println!("  {name}={value}");
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("aicd-server: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let _telemetry = match aicd_runtime::telemetry::init(&config, "aicd-server") {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("aicd-server: cannot set up telemetry: {}", config.scrub(&format!("{e:#}")));
                return Err(None);
            }
        };
        let result = match cli.command.unwrap_or(Command::Serve { repo_roots: Vec::new() }) {
            Command::Serve { .. } => serve(&config).await,
            Command::Migrate => migrate(&config).await,
            Command::Admin { command: AdminCommand::Bootstrap { org, json } } => bootstrap(&config, org, json).await,
            Command::Admin { command: AdminCommand::LinkInstallation { org, installation, account } } => {
                link_installation(&config, org, installation, account).await
            }
            Command::Billing { command: BillingCommand::Reconcile { json } } => reconcile(&config, json).await,
            Command::Billing { command: BillingCommand::SetMode { org, mode } } => set_mode(&config, org, mode).await,
            Command::Config { .. } | Command::Run(_) | Command::Policy { .. } => Ok(()),
        };
        result.map_err(Some)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Some(e)) => {
            let message = config.scrub(&format!("{e:#}"));
            tracing::error!(error = %message, "aicd-server stopped");
            eprintln!("aicd-server: {message}");
            ExitCode::FAILURE
        }
        Err(None) => ExitCode::FAILURE,
    }
}

/// Adds `serve --repo-root` directories to the local repository roots (where local repositories
/// are allowed; elsewhere they could not be registered anyway).
fn add_repo_roots(config: &mut Config, roots: &[std::path::PathBuf]) {
    for root in roots {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.clone());
        if !config.server.local_repo_roots.contains(&root) {
            config.server.local_repo_roots.push(root);
        }
    }
}

/// The configuration variables as a Markdown table.
fn variables_table() -> String {
    let mut table = String::from("| variable | default | secret | meaning |\n|---|---|---|---|\n");
    for v in aicd_runtime::config::variables() {
        let default = if v.default.is_empty() { "unset".to_owned() } else { format!("`{}`", v.default) };
        let secret = if v.secret { "yes" } else { "no" };
        table.push_str(&format!("| `{}` | {default} | {secret} | {} |\n", v.name, v.description.replace('|', "\\|")));
    }
    table
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    let mut signals = Signals::install().context("cannot install signal handlers")?;
    let server = aicd_server::Server::build(config).await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {} (AICD_LISTEN_ADDR)", config.server.listen_addr))?;
    server
        .serve(listener, async move {
            let signal = signals.next().await;
            tracing::info!(signal, "shutdown requested");
        })
        .await
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    match &config.database {
        Database::Postgres { migration_url, .. } => {
            let url =
                migration_url.as_ref().context("AICD_DATABASE_MIGRATION_URL is required to migrate PostgreSQL")?;
            SqlStore::migrate_postgres(url.expose()).await?;
            tracing::info!("PostgreSQL migrations applied");
        }
        Database::Sqlite { path } => {
            aicd_runtime::assemble::open_store(config).await?;
            tracing::info!(path = %path.display(), "SQLite migrations applied");
        }
    }
    Ok(())
}

async fn link_installation(
    config: &Config,
    org: aicd_core::OrgId,
    installation: aicd_core::github::InstallationId,
    account: Option<String>,
) -> anyhow::Result<()> {
    let store = aicd_runtime::assemble::open_store(config).await?;
    let core = Core::new(store.clone() as Arc<dyn aicd_core::store::Store>, CoreOptions::default());
    core.store().get_org(org).await.with_context(|| format!("organization {org}"))?;
    let linked = core.github_intake().link_installation(org, installation, account, "operator").await?;
    println!("Installation {} linked to organization {org}.", linked.installation_id);
    match aicd_runtime::assemble::github_tokens(config)? {
        Some(tokens) => {
            match aicd_github::setup::sync_installation_repositories(&core, &tokens, org, installation).await {
                Ok(count) => println!("{count} repositories registered."),
                Err(e) => println!("Its repositories could not be listed ({e}); they follow its webhook events."),
            }
        }
        None => println!("No GitHub App is configured here: its repositories follow its webhook events."),
    }
    store.close().await;
    Ok(())
}

/// `billing reconcile`: what the payment provider has not acknowledged, per org and meter.
async fn reconcile(config: &Config, json: bool) -> anyhow::Result<()> {
    use aicd_core::store::BillingStore;
    let store = aicd_runtime::assemble::open_store(config).await?;
    let lines = store.reconcile_outbox().await?;
    store.close().await;
    if json {
        for line in &lines {
            println!("{}", serde_json::to_string(line)?);
        }
        return Ok(());
    }
    if lines.is_empty() {
        println!("every billable fact is acknowledged by the payment provider");
        return Ok(());
    }
    println!(
        "{:<36}  {:<20}  {:<7}  {:>6}  {:>14}  {:<20}  last error",
        "org", "meter", "status", "rows", "total", "oldest"
    );
    for l in &lines {
        println!(
            "{:<36}  {:<20}  {:<7}  {:>6}  {:>14}  {:<20}  {}",
            l.org_id.to_string(),
            l.meter.as_str(),
            l.status.as_str(),
            l.rows,
            l.total,
            l.oldest.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            l.last_error.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// `billing set-mode`: how an organization is billed from now on.
async fn set_mode(config: &Config, org: aicd_core::OrgId, mode: aicd_core::billing::PricingMode) -> anyhow::Result<()> {
    use aicd_core::store::{BillingStore, TenancyStore};
    let store = aicd_runtime::assemble::open_store(config).await?;
    store.get_org(org).await.map_err(|e| anyhow::anyhow!("organization {org}: {e}"))?;
    store.open_billing_account(org, mode).await?;
    let account = store.set_pricing_mode(org, mode).await?;
    store.close().await;
    println!("organization {org} is billed by {} from now on", account.mode);
    Ok(())
}

async fn bootstrap(config: &Config, name: String, json: bool) -> anyhow::Result<()> {
    let store = aicd_runtime::assemble::open_store(config).await?;
    let core = Core::new(store.clone() as Arc<dyn aicd_core::store::Store>, CoreOptions::default());
    let (org, _key, secret) = core.bootstrap_org(NewOrg { name, max_concurrent_jobs: None, settings: None }).await?;
    if json {
        println!("{}", serde_json::json!({ "org_id": org.id, "api_key": secret.expose() }));
    } else {
        println!("Organization {} ({}) created.", org.name, org.id);
        println!("Its org_admin API key (shown once, keep it safe):\n\n    {}\n", secret.expose());
    }
    store.close().await;
    Ok(())
}
