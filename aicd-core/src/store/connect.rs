//! Opening a [`SqlStore`]: migrations, connection options and the PostgreSQL safety check.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::sql::{One, Pool, Tx, q};
use crate::{Error, OrgId, Result, UserId};

/// The migrations of `backend`, tolerating ones already applied by a newer release: after a
/// rollback the previous release still migrates (a no-op) and starts, since migrations only
/// add, so a release's queries work against the next release's schema.
fn migrator(postgres: bool) -> sqlx::migrate::Migrator {
    let mut migrator =
        if postgres { sqlx::migrate!("./migrations/postgres") } else { sqlx::migrate!("./migrations/sqlite") };
    migrator.set_ignore_missing(true);
    migrator
}

/// Every table holding tenant rows; each must have row-level security enabled and forced.
pub(crate) const TENANT_TABLES: &[&str] = &[
    "orgs",
    "memberships",
    "repositories",
    "api_keys",
    "jobs",
    "job_events",
    "usage_records",
    "github_installations",
    "github_commands",
];

/// The [`super::Store`] over PostgreSQL (production) or SQLite (the embedded default).
///
/// On PostgreSQL it connects as the application role, which must own no table and can neither
/// bypass row-level security nor be a superuser; [`SqlStore::postgres`] checks this and that every
/// tenant table has RLS enabled and forced, and refuses to start otherwise. Each tenant-scoped
/// operation runs in a transaction that first sets `app.org_id`, so the database itself hides
/// other organizations' rows even from a query that forgot its `WHERE org_id`.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pub(crate) pool: Pool,
}

/// How long a pooled connection may sit idle before it is checked on its next use.
const IDLE_CHECK_AFTER: Duration = Duration::from_secs(10);

/// A snapshot of the connection pool, from [`SqlStore::pool_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open (idle or in use).
    pub open: u32,
    /// Open connections not in use (never more than `open`).
    pub idle: u32,
    /// The most connections the pool opens.
    pub max: u32,
}

impl PoolStats {
    /// Open connections in use.
    pub fn in_use(&self) -> u32 {
        self.open - self.idle
    }
}

/// Pool settings for PostgreSQL.
#[derive(Clone, Debug)]
pub struct PostgresOptions {
    /// Most connections the pool opens (default 10).
    pub max_connections: u32,
    /// How long to wait for a connection before failing (default 5 s).
    pub acquire_timeout: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self { max_connections: 10, acquire_timeout: Duration::from_secs(5) }
    }
}

/// Whose rows a transaction may see on PostgreSQL (SQLite ignores it).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scope<'a> {
    /// One organization's rows.
    Org(OrgId),
    /// A user's own memberships and their organizations, across orgs.
    User(UserId),
    /// API keys with this lookup prefix, across orgs.
    KeyPrefix(&'a str),
    /// Jobs and orgs of every organization (the dispatcher's claim and lease reaping), GitHub
    /// installations to read (a webhook's org), and GitHub commands to claim.
    System,
    /// No tenant rows (users, webhook deliveries).
    Global,
}

impl SqlStore {
    /// Applies the PostgreSQL migrations, connecting with `owner_url` (the role that owns the
    /// schema; it also creates the `aicd_app` group role if missing). Safe to run repeatedly and
    /// from several processes at once, and on a schema a newer release has migrated further
    /// (after a rollback): migrations this release does not know are left as they are.
    pub async fn migrate_postgres(owner_url: &str) -> Result<()> {
        let options = PgConnectOptions::from_str(owner_url)?;
        let pool = PgPoolOptions::new().max_connections(1).connect_with(loopback_without_tls(options)).await?;
        migrator(true).run(&pool).await?;
        // Fresh statistics, so the planner's first plans are not guesses (the dispatch queries do
        // not depend on them, but reports and admin queries do).
        sqlx::query("ANALYZE").execute(&pool).await?;
        pool.close().await;
        Ok(())
    }

    /// Connects to PostgreSQL as the application role, after checking it is safe to (see the type
    /// docs). [`Error::UnsafeDatabase`] names what is wrong.
    pub async fn postgres(app_url: &str, options: PostgresOptions) -> Result<Self> {
        let connect = loopback_without_tls(PgConnectOptions::from_str(app_url)?.application_name("aicd"));
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            // Checking every connection before use would cost a round trip per transaction:
            // only a connection that sat idle for a while is checked (it may have outlived a
            // server restart); a busy one that broke fails its statement, which callers retry
            // like any database error.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_CHECK_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect)
            .await?;
        let store = Self { pool: Pool::Postgres(pool) };
        store.verify_postgres_isolation().await?;
        Ok(store)
    }

    /// Opens (creating if needed) a SQLite database file and applies its migrations. SQLite has a
    /// single writer, so the store keeps a single connection.
    pub async fn sqlite(path: impl AsRef<Path>) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        migrator(false).run(&pool).await?;
        Ok(Self { pool: Pool::Sqlite(pool) })
    }

    /// `postgres` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Postgres(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    /// The connection pool's state now: connections open, idle, and the most it may open.
    pub fn pool_stats(&self) -> PoolStats {
        let (open, idle, max) = match &self.pool {
            Pool::Postgres(pool) => (pool.size(), pool.num_idle(), pool.options().get_max_connections()),
            Pool::Sqlite(pool) => (pool.size(), pool.num_idle(), pool.options().get_max_connections()),
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX).min(open);
        PoolStats { open, idle, max }
    }

    /// Whether the database answers a trivial query (for readiness checks).
    pub async fn ping(&self) -> Result<()> {
        let mut tx = self.begin(Scope::Global).await?;
        tx.fetch_one::<One<i32>>(q("SELECT 1")).await?;
        Ok(())
    }

    /// Closes every connection; later calls fail.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(pool) => pool.close().await,
            Pool::Sqlite(pool) => pool.close().await,
        }
    }

    /// Opens a transaction that sees `scope`'s rows.
    pub(crate) async fn begin(&self, scope: Scope<'_>) -> Result<Tx> {
        match &self.pool {
            Pool::Sqlite(pool) => Ok(Tx::Sqlite(pool.begin().await?)),
            Pool::Postgres(pool) => match begin_statement(scope) {
                // BEGIN and the scope in one round trip.
                Some(statement) => Ok(Tx::Postgres(pool.begin_with(sqlx::AssertSqlSafe(statement)).await?)),
                None => {
                    let mut tx = Tx::Postgres(pool.begin().await?);
                    tx.set_scope(scope).await?;
                    Ok(tx)
                }
            },
        }
    }

    async fn verify_postgres_isolation(&self) -> Result<()> {
        let mut tx = self.begin(Scope::Global).await?;
        let (superuser, bypass): (bool, bool) = tx
            .fetch_one::<(bool, bool)>(q("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"))
            .await?;
        let mut problems = Vec::new();
        if superuser {
            problems.push("the application role is a superuser".to_owned());
        }
        if bypass {
            problems.push("the application role has BYPASSRLS".to_owned());
        }
        let owned: Vec<One<String>> = tx
            .fetch_all(q("SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() \
                          AND tableowner = current_user ORDER BY 1"))
            .await?;
        if !owned.is_empty() {
            let names: Vec<_> = owned.into_iter().map(|t| t.0).collect();
            problems.push(format!("the application role owns tables ({})", names.join(", ")));
        }
        // The known tenant tables, and any other table that carries an org_id.
        let with_org: Vec<One<String>> = tx
            .fetch_all(q("SELECT DISTINCT c.relname::text FROM pg_attribute a \
                          JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
                          WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attname = 'org_id' \
                          AND NOT a.attisdropped"))
            .await?;
        let mut tables: Vec<String> = TENANT_TABLES.iter().map(|t| (*t).to_owned()).collect();
        tables.extend(with_org.into_iter().map(|t| t.0));
        tables.sort();
        tables.dedup();
        for table in &tables {
            let row: Option<(bool, bool)> = tx
                .fetch_optional(
                    q("SELECT c.relrowsecurity, c.relforcerowsecurity FROM pg_class c \
                       JOIN pg_namespace n ON n.oid = c.relnamespace \
                       WHERE n.nspname = current_schema() AND c.relname = $1 AND c.relkind = 'r'")
                    .arg(table.as_str()),
                )
                .await?;
            match row {
                None => problems.push(format!("table {table} is missing (run the migrations)")),
                Some((false, _)) => problems.push(format!("row-level security is not enabled on {table}")),
                Some((true, false)) => problems.push(format!("row-level security is not forced on {table}")),
                Some((true, true)) => {}
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(Error::UnsafeDatabase(problems.join("; "))) }
    }
}

/// The statement that opens a transaction already scoped to `scope`, when the scope's value
/// can be written into SQL safely (ids and fixed words; anything else is bound as an argument
/// after `BEGIN`).
fn begin_statement(scope: Scope<'_>) -> Option<String> {
    let (name, value) = match scope {
        Scope::Org(org) => ("app.org_id", org.to_string()),
        Scope::User(user) => ("app.user_id", user.to_string()),
        Scope::System => ("app.scope", "system".to_owned()),
        Scope::Global => return Some("BEGIN".to_owned()),
        Scope::KeyPrefix(prefix) => {
            if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return None;
            }
            ("app.key_prefix", prefix.to_owned())
        }
    };
    Some(format!("BEGIN; SELECT set_config('{name}', '{value}', true)"))
}

/// Loopback connections whose URL does not ask for TLS do without it: TLS to a database on the
/// same machine protects nothing and costs a large share of the CPU. A URL with `sslmode` keeps
/// what it says, so production (`sslmode=require` or stricter) is unchanged.
fn loopback_without_tls(options: PgConnectOptions) -> PgConnectOptions {
    use sqlx::postgres::PgSslMode;
    let host = options.get_host();
    let loopback = host == "localhost"
        || host.starts_with('/')
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback && matches!(options.get_ssl_mode(), PgSslMode::Prefer) {
        options.ssl_mode(PgSslMode::Disable)
    } else {
        options
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::postgres::{PgConnectOptions, PgSslMode};

    use super::{Scope, begin_statement, loopback_without_tls};

    fn mode(url: &str) -> PgSslMode {
        loopback_without_tls(PgConnectOptions::from_str(url).unwrap()).get_ssl_mode()
    }

    #[test]
    fn loopback_goes_without_tls_unless_the_url_asks_for_it() {
        assert!(matches!(mode("postgres://app@127.0.0.1/aicd"), PgSslMode::Disable));
        assert!(matches!(mode("postgres://app@localhost/aicd"), PgSslMode::Disable));
        assert!(matches!(mode("postgres://app@127.0.0.1/aicd?sslmode=require"), PgSslMode::Require));
        assert!(matches!(mode("postgres://app@db.example.com/aicd"), PgSslMode::Prefer));
    }

    #[test]
    fn only_safe_scope_values_are_written_into_the_begin_statement() {
        let org = crate::OrgId::new();
        assert_eq!(
            begin_statement(Scope::Org(org)).unwrap(),
            format!("BEGIN; SELECT set_config('app.org_id', '{org}', true)")
        );
        assert_eq!(begin_statement(Scope::Global).unwrap(), "BEGIN");
        assert!(begin_statement(Scope::KeyPrefix("abc_12-x")).is_some());
        for hostile in ["x'); DROP TABLE jobs; --", "a b", ""] {
            assert!(begin_statement(Scope::KeyPrefix(hostile)).is_none(), "{hostile:?} is bound, not written");
        }
    }
}
