//! One SQL layer over two databases.
//!
//! The store's queries are written once, with `$1`-style placeholders, which PostgreSQL and
//! SQLite both accept (sqlx maps SQLite's `$N` to the N-th argument). Arguments are collected as
//! [`Arg`] values and bound to whichever backend the pool is; rows decode through one `FromRow`
//! struct that fits both. Backend differences (row-level security scope, `SKIP LOCKED`) are
//! explicit `match`es in the few places that have them.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{FromRow, Postgres, Sqlite, Transaction};
use uuid::Uuid;

use crate::Result;

/// The pool of one of the two backends.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Postgres(sqlx::PgPool),
    Sqlite(sqlx::SqlitePool),
}

/// A bound argument.
#[derive(Clone, Debug)]
pub(crate) enum Arg {
    Uuid(Option<Uuid>),
    Int(Option<i64>),
    Text(Option<String>),
    Bool(bool),
    Time(Option<DateTime<Utc>>),
    Json(Option<serde_json::Value>),
    Bytes(Option<Vec<u8>>),
}

macro_rules! arg_from {
    ($($t:ty => $variant:ident $(via $conv:expr)?),* $(,)?) => {$(
        impl From<$t> for Arg {
            fn from(v: $t) -> Self {
                Arg::$variant(Some(v).map($($conv)?))
            }
        }
        impl From<Option<$t>> for Arg {
            fn from(v: Option<$t>) -> Self {
                Arg::$variant(v.map($($conv)?))
            }
        }
    )*};
}

fn same<T>(v: T) -> T {
    v
}

arg_from! {
    Uuid => Uuid via same,
    crate::OrgId => Uuid via |v: crate::OrgId| v.0,
    crate::UserId => Uuid via |v: crate::UserId| v.0,
    crate::RepoId => Uuid via |v: crate::RepoId| v.0,
    crate::ApiKeyId => Uuid via |v: crate::ApiKeyId| v.0,
    crate::JobId => Uuid via |v: crate::JobId| v.0,
    crate::UsageId => Uuid via |v: crate::UsageId| v.0,
    crate::github::InstallationId => Int via crate::github::InstallationId::get,
    crate::github::GithubRepoId => Int via crate::github::GithubRepoId::get,
    i64 => Int via same,
    String => Text via same,
    &str => Text via str::to_owned,
    DateTime<Utc> => Time via same,
    serde_json::Value => Json via same,
    Vec<u8> => Bytes via same,
}

impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

/// Converts an unsigned count to the signed integer both databases store, saturating.
pub(crate) fn int(v: impl TryInto<i64>) -> Arg {
    Arg::Int(Some(v.try_into().unwrap_or(i64::MAX)))
}

/// A row type both backends can decode.
pub(crate) trait Decode: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}
impl<T> Decode for T where T: for<'r> FromRow<'r, PgRow> + for<'r> FromRow<'r, SqliteRow> + Send + Unpin {}

/// A statement and its arguments.
#[must_use]
pub(crate) struct Query {
    sql: &'static str,
    args: Vec<Arg>,
}

/// Starts a statement.
pub(crate) fn q(sql: &'static str) -> Query {
    Query { sql, args: Vec::new() }
}

impl Query {
    /// Binds the next `$N`.
    pub(crate) fn arg(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }
}

macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Uuid(v) => query.bind(v),
                Arg::Int(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
                Arg::Bool(v) => query.bind(v),
                Arg::Time(v) => query.bind(v),
                Arg::Json(v) => query.bind(v.map(sqlx::types::Json)),
                Arg::Bytes(v) => query.bind(v),
            };
        }
        query
    }};
}

/// An open transaction on either backend. Dropping it without [`Tx::commit`] rolls back.
pub(crate) enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

impl Tx {
    pub(crate) async fn fetch_all<T: Decode>(&mut self, query: Query) -> Result<Vec<T>> {
        Ok(match self {
            Tx::Postgres(tx) => bind_all!(sqlx::query_as::<_, T>(query.sql), query.args).fetch_all(&mut **tx).await?,
            Tx::Sqlite(tx) => bind_all!(sqlx::query_as::<_, T>(query.sql), query.args).fetch_all(&mut **tx).await?,
        })
    }

    pub(crate) async fn fetch_optional<T: Decode>(&mut self, query: Query) -> Result<Option<T>> {
        Ok(match self {
            Tx::Postgres(tx) => {
                bind_all!(sqlx::query_as::<_, T>(query.sql), query.args).fetch_optional(&mut **tx).await?
            }
            Tx::Sqlite(tx) => {
                bind_all!(sqlx::query_as::<_, T>(query.sql), query.args).fetch_optional(&mut **tx).await?
            }
        })
    }

    pub(crate) async fn fetch_one<T: Decode>(&mut self, query: Query) -> Result<T> {
        Ok(match self {
            Tx::Postgres(tx) => bind_all!(sqlx::query_as::<_, T>(query.sql), query.args).fetch_one(&mut **tx).await?,
            Tx::Sqlite(tx) => bind_all!(sqlx::query_as::<_, T>(query.sql), query.args).fetch_one(&mut **tx).await?,
        })
    }

    /// Runs a statement and returns how many rows it touched.
    pub(crate) async fn execute(&mut self, query: Query) -> Result<u64> {
        Ok(match self {
            Tx::Postgres(tx) => bind_all!(sqlx::query(query.sql), query.args).execute(&mut **tx).await?.rows_affected(),
            Tx::Sqlite(tx) => bind_all!(sqlx::query(query.sql), query.args).execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// Makes `scope`'s rows visible for the rest of the transaction (PostgreSQL row-level
    /// security; a no-op on SQLite, where every query is scoped by the application alone).
    pub(crate) async fn set_scope(&mut self, scope: super::connect::Scope<'_>) -> Result<()> {
        use super::connect::Scope;
        if matches!(self, Tx::Sqlite(_)) {
            return Ok(());
        }
        let (name, value) = match scope {
            Scope::Org(org) => ("app.org_id", org.to_string()),
            Scope::User(user) => ("app.user_id", user.to_string()),
            Scope::KeyPrefix(prefix) => ("app.key_prefix", prefix.to_owned()),
            Scope::System => ("app.scope", "system".to_owned()),
            Scope::Global => return Ok(()),
        };
        self.execute(q("SELECT set_config($1, $2, true)").arg(name).arg(value)).await?;
        Ok(())
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Postgres(tx) => tx.commit().await?,
            Tx::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }
}

/// A single-column row, for counts and ids.
#[derive(sqlx::FromRow)]
pub(crate) struct One<T>(pub(crate) T);

/// Whether a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(err: &crate::Error) -> bool {
    matches!(err, crate::Error::Database(sqlx::Error::Database(db)) if db.is_unique_violation())
}

/// Whether a database error is a foreign-key violation (a referenced row is missing).
pub(crate) fn is_foreign_key_violation(err: &crate::Error) -> bool {
    matches!(err, crate::Error::Database(sqlx::Error::Database(db)) if db.is_foreign_key_violation())
}

/// Maps constraint violations of an insert to domain errors: a duplicate is a conflict, a missing
/// parent is not found.
pub(crate) fn constraint_error(err: crate::Error, duplicate: &str, missing: &'static str) -> crate::Error {
    if is_unique_violation(&err) {
        crate::Error::Conflict(duplicate.to_owned())
    } else if is_foreign_key_violation(&err) {
        crate::Error::NotFound { kind: missing }
    } else {
        err
    }
}
