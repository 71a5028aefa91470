#![recursion_limit = "256"]
//! Test support for AI-CD: each test gets its own fresh PostgreSQL database, SQLite file and Redis
//! namespace, removed again when the test ends.
//!
//! - PostgreSQL comes from `AICD_TEST_DATABASE_URL` (default
//!   `postgres://postgres@127.0.0.1:5432/postgres`), a role that may create databases and roles.
//!   With the `docker` feature, when nothing answers there, a PostgreSQL container is started
//!   through testcontainers. When neither works the test fails and says how to provide one:
//!   nothing is ever skipped.
//! - Redis comes from `AICD_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`); a test that
//!   needs Redis down at first, or gone and back, starts a private one with [`RedisServer`]
//!   (`redis-server` must be on `PATH`).
//! - [`github::FakeGitHub`] stands in for GitHub: stateful, and as strict as GitHub's documented
//!   rules.
//! - [`cassette::Recording`] replays recorded LLM interactions (and records new ones).
//! - [`process`] runs the workspace's binaries as child processes; [`LoadBalancer`] spreads
//!   connections over several of them, as a load balancer in front of replicas does.

mod balancer;
pub mod cassette;
pub mod files;
pub mod github;
mod keys;
mod pg_cluster;
mod postgres;
pub mod process;
mod proxy;
mod redis;
mod redis_server;
mod sqlite;

pub use balancer::LoadBalancer;
pub use keys::{RsaKeyPair, rsa_key_pair};
pub use pg_cluster::PgCluster;
pub use postgres::TestPostgres;
pub use proxy::TcpProxy;
pub use redis::TestRedis;
pub use redis_server::RedisServer;
pub use sqlite::TestSqlite;

/// Runs an async clean-up to completion from a `Drop`, on a thread of its own so it works both
/// inside and outside a Tokio runtime.
pub(crate) fn block_on_cleanup<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let handle = std::thread::spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(cleanup),
        Err(e) => eprintln!("aicd-testkit: no runtime for clean-up: {e}"),
    });
    let _ = handle.join();
}
