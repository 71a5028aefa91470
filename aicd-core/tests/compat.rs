//! The migration rule, tested: migrations only add, so a release's queries work against the next
//! release's schema (and a rollback of the binaries needs no schema rollback).
//!
//! `tests/compat/` holds, per release, what `scripts/snapshot-queries <version>` captured when it
//! was cut: `queries-<version>.sql`, every statement that release's store sends PostgreSQL, and
//! `migrations-<version>.sha256`, the checksums of its migrations. Against them:
//!
//! - every snapshot statement still prepares on a database migrated by the current code, as the
//!   application role in an org-scoped transaction, as the store runs it;
//! - released migration files are unchanged;
//! - migrations newer than the last released one only add: no `DROP TABLE`, `DROP COLUMN`,
//!   `RENAME` or `ALTER COLUMN … TYPE` (dropping an index is fine).
//!
//! (`migration_upgrade.rs` proves the other half: data written under earlier migrations survives
//! the later ones.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aicd_core::store::SqlStore;
use aicd_testkit::TestPostgres;
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

fn compat_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat")
}

fn migrations_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations")
}

/// The files of `compat_dir()` named `<prefix><version><suffix>`, by version.
fn release_files(prefix: &str, suffix: &str) -> BTreeMap<String, PathBuf> {
    let files: BTreeMap<String, PathBuf> = std::fs::read_dir(compat_dir())
        .expect("tests/compat exists")
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?;
            let version = name.strip_prefix(prefix)?.strip_suffix(suffix)?.to_owned();
            Some((version, path))
        })
        .collect();
    assert!(!files.is_empty(), "no {prefix}<version>{suffix} in tests/compat (scripts/snapshot-queries writes them)");
    files
}

/// The statements of a snapshot: entries end with `;` and are separated by blank lines; the
/// leading `--` lines are its header.
fn statements(snapshot: &str) -> Vec<String> {
    snapshot
        .split("\n\n")
        .map(str::trim)
        .filter(|entry| !entry.is_empty() && !entry.starts_with("--"))
        .map(|entry| entry.strip_suffix(';').unwrap_or_else(|| panic!("an entry without its ';': {entry}")).to_owned())
        .collect()
}

#[tokio::test]
async fn every_released_query_prepares_against_the_current_migrations() {
    let db = TestPostgres::new().await;
    SqlStore::migrate_postgres(&db.owner_url()).await.expect("the current migrations apply");
    let mut app = PgConnection::connect(&db.app_url("aicd_app").await).await.unwrap();
    let org = uuid::Uuid::now_v7();

    let mut checked = 0;
    let mut broken = Vec::new();
    for (version, path) in release_files("queries-", ".sql") {
        let snapshot = std::fs::read_to_string(&path).unwrap();
        let statements = statements(&snapshot);
        assert!(statements.len() > 50, "{} holds only {} statements", path.display(), statements.len());
        for statement in statements {
            if let Err(error) = prepare(&mut app, org, &statement).await {
                broken.push(format!("release {version}: {statement}\n  -> {error}"));
            }
            checked += 1;
        }
    }
    assert!(
        broken.is_empty(),
        "{} of {checked} released statements no longer prepare against the current schema (a migration dropped \
         or renamed what they use; migrations may only add):\n{}",
        broken.len(),
        broken.join("\n")
    );
}

/// The types the store binds (its `Arg` values), tried for a parameter the statement alone does
/// not determine (such as `$3 IS NULL OR id <> $3`): the store's bound value gives it its type.
const BOUND_TYPES: [&str; 7] = ["uuid", "bigint", "text", "boolean", "timestamptz", "jsonb", "bytea"];

/// Prepares `statement` as the store's prepared statements are (parsed and analysed, nothing
/// run), in a transaction scoped to `org` as the store sets it, then rolls back. Parameters the
/// statement leaves undetermined get the first of [`BOUND_TYPES`] that prepares.
async fn prepare(app: &mut PgConnection, org: uuid::Uuid, statement: &str) -> Result<(), sqlx::Error> {
    let mut types: Vec<&str> = Vec::new();
    let mut result = try_prepare(app, org, statement, &types).await;
    while let Err(error) = &result {
        let Some(n) = undetermined_parameter(error).filter(|&n| types.get(n - 1).is_none_or(|t| *t == "unknown"))
        else {
            break;
        };
        if types.len() < n {
            types.resize(n, "unknown");
        }
        for candidate in BOUND_TYPES {
            types[n - 1] = candidate;
            result = try_prepare(app, org, statement, &types).await;
            match &result {
                Ok(()) => return Ok(()),
                // Past this one: the next undetermined parameter.
                Err(e) if undetermined_parameter(e).is_some_and(|m| m != n) => break,
                Err(_) => {}
            }
        }
    }
    result
}

async fn try_prepare(
    app: &mut PgConnection,
    org: uuid::Uuid,
    statement: &str,
    types: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("BEGIN; SELECT set_config('app.org_id', '{org}', true)")))
        .execute(&mut *app)
        .await?;
    let types = if types.is_empty() { String::new() } else { format!("({})", types.join(", ")) };
    let prepared =
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("PREPARE compat{types} AS {statement}"))).execute(&mut *app).await;
    // A prepared statement outlives its transaction.
    sqlx::raw_sql("ROLLBACK; DEALLOCATE ALL").execute(&mut *app).await?;
    prepared.map(drop)
}

/// `n` when PostgreSQL could not determine the type of parameter `$n`.
fn undetermined_parameter(error: &sqlx::Error) -> Option<usize> {
    let message = error.as_database_error()?.message();
    message.strip_prefix("could not determine data type of parameter $")?.parse().ok()
}

/// `(path under migrations/, sha256)` of every pinned migration, from every release.
fn pinned() -> Vec<(String, String)> {
    let mut pins = Vec::new();
    for path in release_files("migrations-", ".sha256").into_values() {
        for line in std::fs::read_to_string(&path).unwrap().lines().filter(|l| !l.trim().is_empty()) {
            let (sum, file) =
                line.split_once("  ").unwrap_or_else(|| panic!("{}: not `sha256  path`: {line}", path.display()));
            pins.push((file.to_owned(), sum.to_owned()));
        }
    }
    pins
}

#[test]
fn released_migrations_are_unchanged() {
    let pins = pinned();
    assert!(pins.iter().any(|(f, _)| f.starts_with("postgres/")) && pins.iter().any(|(f, _)| f.starts_with("sqlite/")));
    for (file, sum) in pins {
        let text = std::fs::read(migrations_dir().join(&file))
            .unwrap_or_else(|e| panic!("the released migration {file} is gone ({e}); released migrations stay"));
        let actual = hex::encode(Sha256::digest(&text));
        assert_eq!(actual, sum, "the released migration {file} was edited; add a new migration instead");
    }
}

#[test]
fn migrations_after_the_last_release_only_add() {
    let pins = pinned();
    for backend in ["postgres", "sqlite"] {
        let released: Vec<&str> = pins.iter().filter_map(|(f, _)| f.strip_prefix(backend)?.strip_prefix('/')).collect();
        let last = released.iter().max().expect("each backend has released migrations").to_owned();
        let mut newer = 0;
        for entry in std::fs::read_dir(migrations_dir().join(backend)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if !name.ends_with(".sql") || released.contains(&name.as_str()) {
                continue;
            }
            assert!(
                name.as_str() > last,
                "{backend}/{name} is not released yet sorts before the last released migration {last}: a new \
                 migration goes after it"
            );
            let problems = destructive(&std::fs::read_to_string(&path).unwrap());
            assert!(
                problems.is_empty(),
                "{backend}/{name} does not only add (the previous release's queries would break against it): {}",
                problems.join("; ")
            );
            newer += 1;
        }
        eprintln!("{backend}: {newer} migrations after {last} checked");
    }
}

/// What in a migration's SQL removes or changes what a released query may use: `DROP TABLE`,
/// `DROP COLUMN` (also as `DROP` alone in `ALTER TABLE`), `RENAME`, `ALTER COLUMN … TYPE`.
/// Comments are ignored; `DROP INDEX` and the rest are allowed.
fn destructive(sql: &str) -> Vec<String> {
    let code: String = sql.lines().map(|line| line.split("--").next().unwrap_or("")).collect::<Vec<_>>().join(" ");
    let mut problems = Vec::new();
    for statement in code.split(';') {
        let words: Vec<String> = statement.split_whitespace().map(str::to_ascii_uppercase).collect();
        let shown = || statement.split_whitespace().collect::<Vec<_>>().join(" ");
        let has = |pair: [&str; 2]| words.windows(2).any(|w| w[0] == pair[0] && w[1] == pair[1]);
        let alter_table = has(["ALTER", "TABLE"]);
        if has(["DROP", "TABLE"]) {
            problems.push(format!("drops a table: {}", shown()));
        }
        // `ALTER TABLE t DROP [COLUMN] c`, but not `DROP CONSTRAINT`, `DROP DEFAULT`, `DROP NOT NULL`.
        let drops_column = alter_table
            && words.windows(2).any(|w| {
                w[0] == "DROP" && !matches!(w[1].as_str(), "CONSTRAINT" | "DEFAULT" | "NOT" | "EXPRESSION" | "IDENTITY")
            });
        if drops_column {
            problems.push(format!("drops a column: {}", shown()));
        }
        if words.iter().any(|w| w == "RENAME") {
            problems.push(format!("renames: {}", shown()));
        }
        // `ALTER [COLUMN] c TYPE …` and `ALTER [COLUMN] c SET DATA TYPE …` (ALTER TABLE's own ALTER
        // is followed by TABLE).
        let retypes = alter_table
            && words.iter().enumerate().any(|(i, w)| {
                let rest = &words[i + 1..];
                let rest = if rest.first().is_some_and(|w| w == "COLUMN") { &rest[1..] } else { rest };
                w == "ALTER"
                    && rest.first().is_some_and(|name| name != "TABLE")
                    && (rest.get(1).is_some_and(|w| w == "TYPE")
                        || rest.get(1..4).is_some_and(|w| w == ["SET", "DATA", "TYPE"]))
            });
        if retypes {
            problems.push(format!("changes a column's type: {}", shown()));
        }
    }
    problems
}

#[test]
fn the_lint_finds_what_breaks_released_queries_and_allows_the_rest() {
    for sql in [
        "DROP TABLE jobs;",
        "drop table if exists jobs;",
        "ALTER TABLE jobs DROP COLUMN plan;",
        "ALTER TABLE jobs DROP plan;",
        "ALTER TABLE jobs\n    DROP COLUMN IF EXISTS plan;",
        "ALTER TABLE jobs RENAME COLUMN plan TO plans;",
        "ALTER TABLE jobs RENAME TO work;",
        "ALTER TABLE jobs ALTER COLUMN epoch TYPE integer;",
        "ALTER TABLE jobs ALTER epoch TYPE integer USING epoch::integer;",
        "ALTER TABLE jobs ALTER COLUMN epoch SET DATA TYPE integer;",
        "CREATE INDEX a ON jobs (id); ALTER TABLE orgs DROP COLUMN settings;",
    ] {
        assert!(!destructive(sql).is_empty(), "not caught: {sql}");
    }
    for sql in [
        "CREATE TABLE t (id uuid PRIMARY KEY);",
        "ALTER TABLE jobs ADD COLUMN note text;",
        "DROP INDEX jobs_runnable_idx;",
        "DROP INDEX IF EXISTS jobs_org_newest_idx;",
        "ALTER TABLE github_commands ALTER COLUMN comment_id DROP NOT NULL;",
        "ALTER TABLE jobs ALTER COLUMN note SET DEFAULT '';",
        "ALTER TABLE jobs DROP CONSTRAINT jobs_check;",
        "ALTER TABLE jobs ADD COLUMN type text;",
        "-- we never DROP TABLE or RENAME here\nCREATE INDEX b ON jobs (state);",
    ] {
        assert!(destructive(sql).is_empty(), "wrongly refused: {sql}: {:?}", destructive(sql));
    }
}

#[test]
fn the_snapshot_format_round_trips() {
    let snapshot = "-- header\n-- more\n\nSELECT 1;\n\nSELECT a\nFROM b WHERE c = $1;\n";
    assert_eq!(statements(snapshot), ["SELECT 1", "SELECT a\nFROM b WHERE c = $1"]);
}
