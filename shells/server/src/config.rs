//! Typed configuration, read once from the environment and validated as a whole.

use std::path::PathBuf;

/// A value that must never be printed (a URL with a password in it, say).
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Where the data lives.
#[derive(Debug)]
pub(crate) enum Database {
    /// Production: PostgreSQL, used as the restricted application role.
    Postgres {
        /// `DATABASE_URL`: the application role.
        url: Secret,
        /// `AICD_DATABASE_MIGRATION_URL`: the owner role, for migrations.
        migration_url: Option<Secret>,
    },
    /// The embedded default: a SQLite file.
    Sqlite {
        /// `AICD_DATA_DIR`/aicd.db.
        path: PathBuf,
    },
}

#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) database: Database,
}

impl Config {
    /// Reads the environment; on failure returns every problem, one per line, naming the variable.
    pub(crate) fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut problems = Vec::new();
        let database = match get("DATABASE_URL") {
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    problems.push(
                        "DATABASE_URL must be a postgres:// URL (leave it unset for the embedded SQLite database)",
                    );
                }
                let migration_url = get("AICD_DATABASE_MIGRATION_URL");
                if migration_url
                    .as_deref()
                    .is_some_and(|u| !(u.starts_with("postgres://") || u.starts_with("postgresql://")))
                {
                    problems.push("AICD_DATABASE_MIGRATION_URL must be a postgres:// URL");
                }
                Database::Postgres { url: Secret(url), migration_url: migration_url.map(Secret) }
            }
            None => {
                let dir = PathBuf::from(get("AICD_DATA_DIR").unwrap_or_else(|| "./data".into()));
                Database::Sqlite { path: dir.join("aicd.db") }
            }
        };
        if problems.is_empty() { Ok(Self { database }) } else { Err(problems.join("\n")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn no_database_url_means_the_embedded_database() {
        let c = config(&[]).unwrap();
        assert!(matches!(c.database, Database::Sqlite { ref path } if path == &PathBuf::from("./data/aicd.db")));
        let c = config(&[("AICD_DATA_DIR", "/var/lib/aicd")]).unwrap();
        assert!(matches!(c.database, Database::Sqlite { ref path } if path == &PathBuf::from("/var/lib/aicd/aicd.db")));
    }

    #[test]
    fn every_problem_is_reported_at_once_without_secrets() {
        let err =
            config(&[("DATABASE_URL", "mysql://u:hunter2@x/db"), ("AICD_DATABASE_MIGRATION_URL", "nope")]).unwrap_err();
        assert!(err.contains("DATABASE_URL must be") && err.contains("AICD_DATABASE_MIGRATION_URL must be"), "{err}");
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn urls_never_print() {
        let c = config(&[("DATABASE_URL", "postgres://app:hunter2@db/aicd")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
