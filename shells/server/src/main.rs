//! `aicd-server`: the AI-CD server binary.
//!
//! Today it manages the database (`migrate`) and bootstraps an organization with a first admin API
//! key (`admin bootstrap`). With no `DATABASE_URL` it uses the embedded SQLite database under
//! `AICD_DATA_DIR`.

mod config;

use std::sync::Arc;

use aicd_core::store::{PostgresOptions, SqlStore};
use aicd_core::tenancy::NewOrg;
use aicd_core::{Core, CoreOptions};
use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, Database};

#[derive(Parser)]
#[command(name = "aicd-server", version, about = "AI-CD: turns issues into reviewed pull requests")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply database migrations (PostgreSQL: as the owner role of AICD_DATABASE_MIGRATION_URL).
    Migrate,
    /// Administrative tasks.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = Config::from_env().map_err(|problems| anyhow::anyhow!("invalid configuration:\n{problems}"))?;
    match cli.command {
        Command::Migrate => migrate(&config).await,
        Command::Admin { command: AdminCommand::Bootstrap { org, json } } => bootstrap(&config, org, json).await,
    }
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
            open_sqlite(path).await?;
            tracing::info!(path = %path.display(), "SQLite migrations applied");
        }
    }
    Ok(())
}

async fn open_sqlite(path: &std::path::Path) -> anyhow::Result<SqlStore> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(SqlStore::sqlite(path).await?)
}

async fn open_store(config: &Config) -> anyhow::Result<SqlStore> {
    Ok(match &config.database {
        Database::Postgres { url, .. } => SqlStore::postgres(url.expose(), PostgresOptions::default()).await?,
        Database::Sqlite { path } => open_sqlite(path).await?,
    })
}

async fn bootstrap(config: &Config, name: String, json: bool) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let core = Core::new(Arc::new(store), CoreOptions::default());
    let (org, _key, secret) = core.bootstrap_org(NewOrg { name, max_concurrent_jobs: None }).await?;
    if json {
        println!("{}", serde_json::json!({ "org_id": org.id, "api_key": secret.expose() }));
    } else {
        println!("Organization {} ({}) created.", org.name, org.id);
        println!("Its org_admin API key (shown once, keep it safe):\n\n    {}\n", secret.expose());
    }
    Ok(())
}
