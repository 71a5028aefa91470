//! `aicd-worker`: runs the orchestrator's executors against PostgreSQL.
//!
//! This release checks its configuration and that the database is safe to use (row-level security
//! enforced, a restricted role); the executors arrive with the orchestrator.

use aicd_core::store::{PostgresOptions, SqlStore};
use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL (PostgreSQL, the application role) is required")?;
    let store = SqlStore::postgres(&url, PostgresOptions::default()).await.context("opening the store")?;
    store.ping().await?;
    tracing::info!(backend = store.backend(), "database reachable and isolation verified");
    Ok(())
}
