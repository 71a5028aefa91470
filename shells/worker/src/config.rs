//! Typed configuration, read once from the environment and validated as a whole: every problem is
//! reported at once, each naming its variable, and secrets (URLs that may carry a password) never
//! appear in a message or in `Debug` output.

use std::path::PathBuf;
use std::time::Duration;

use aicd_core::orchestrator::OrchestratorConfig;

/// A value that must never be printed (a URL with a password in it, say).
#[derive(Clone)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the secret, and of the password inside it if it is a URL,
    /// replaced by `[REDACTED]`: for error messages of libraries that were handed the secret.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.replace(&self.0, "[REDACTED]");
        if let Some(password) = url_password(&self.0) {
            text = text.replace(password, "[REDACTED]");
        }
        text
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// The password of `scheme://user:password@host/...`, if there is one.
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    userinfo.split_once(':').map(|(_, password)| password).filter(|p| !p.is_empty())
}

/// Where the data lives.
#[derive(Debug)]
pub(crate) enum Database {
    /// Production: PostgreSQL, used as the restricted application role (`DATABASE_URL`).
    Postgres { url: Secret },
    /// The embedded default: the SQLite file `AICD_DATA_DIR`/aicd.db.
    Sqlite { path: PathBuf },
}

/// How workers wake each other and publish job events.
#[derive(Debug)]
pub(crate) enum Signals {
    /// Through Redis (`REDIS_URL`), shared with every process using the same namespace.
    Redis { url: Secret, namespace: String },
    /// In-process only; other processes' new jobs are found by polling.
    Local,
}

/// The agent that plans, codes and reviews (`AICD_AGENT`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AgentKind {
    /// The deterministic scripted agent, each call delayed by `delay` (`AICD_SCRIPTED_AGENT_DELAY_MS`).
    Scripted { delay: Duration },
}

/// How log lines are written (`AICD_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Everything the worker needs to start.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) database: Database,
    pub(crate) signals: Signals,
    pub(crate) agent: AgentKind,
    pub(crate) worker_id: String,
    pub(crate) concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) poll_interval: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) log_format: LogFormat,
    /// The `RUST_LOG` directives (already checked to parse).
    pub(crate) log_filter: String,
}

const MAX_CONCURRENCY: u64 = 256;
const MAX_WORKER_ID_CHARS: usize = 128;
/// Upper bounds that keep durations far from overflow in the arithmetic done on them.
const MAX_SECS: u64 = 24 * 60 * 60;
const MAX_MILLIS: u64 = MAX_SECS * 1000;

impl Config {
    /// Reads the environment; on failure returns every problem, one per line, naming the variable.
    /// Empty values count as unset.
    pub(crate) fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()).filter(|v| !v.trim().is_empty())
        })
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mut r = Reader { get: &get, problems: Vec::new() };
        let database = match get("DATABASE_URL") {
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    r.problem(
                        "DATABASE_URL must be a postgres:// URL for the application role \
                         (leave it unset for the embedded SQLite database)",
                    );
                }
                Database::Postgres { url: Secret(url) }
            }
            None => {
                let dir = get("AICD_DATA_DIR").unwrap_or_else(|| "./data".into());
                if dir.contains('\u{FFFD}') {
                    r.problem("AICD_DATA_DIR must be valid UTF-8");
                }
                Database::Sqlite { path: PathBuf::from(dir).join("aicd.db") }
            }
        };
        let signals = match get("REDIS_URL") {
            Some(url) => {
                if !["redis://", "rediss://", "redis+unix://", "unix://"].iter().any(|s| url.starts_with(s)) {
                    r.problem("REDIS_URL must be a redis:// or rediss:// URL (leave it unset for in-process signals)");
                }
                let namespace = get("AICD_REDIS_NAMESPACE").unwrap_or_else(|| "aicd:".into());
                if namespace.chars().any(char::is_whitespace) || namespace.len() > 100 {
                    r.problem("AICD_REDIS_NAMESPACE must be at most 100 characters without whitespace");
                }
                Signals::Redis { url: Secret(url), namespace }
            }
            None => Signals::Local,
        };
        let agent = match get("AICD_AGENT").as_deref().map(str::trim) {
            None | Some("scripted") => {
                let delay = r.number("AICD_SCRIPTED_AGENT_DELAY_MS", 0, 0, MAX_MILLIS, "milliseconds");
                AgentKind::Scripted { delay: Duration::from_millis(delay) }
            }
            Some(other) => {
                r.problem(format!(
                    "AICD_AGENT must be `scripted`, the only agent in this build (got `{}`)",
                    shorten(other)
                ));
                AgentKind::Scripted { delay: Duration::ZERO }
            }
        };
        let worker_id = match get("AICD_WORKER_ID") {
            Some(id) => {
                let id = id.trim().to_owned();
                if id.chars().count() > MAX_WORKER_ID_CHARS || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    r.problem(format!(
                        "AICD_WORKER_ID must be 1 to {MAX_WORKER_ID_CHARS} characters without spaces or control \
                         characters"
                    ));
                }
                id
            }
            None => default_worker_id(),
        };
        let concurrency = r.number("AICD_WORKER_CONCURRENCY", 4, 1, MAX_CONCURRENCY, "jobs");
        let lease = r.number("AICD_LEASE_SECS", 30, 2, MAX_SECS, "seconds");
        let poll_interval = r.number("AICD_POLL_INTERVAL_MS", 2000, 10, MAX_MILLIS, "milliseconds");
        let shutdown_grace = r.number("AICD_SHUTDOWN_GRACE_SECS", 30, 0, MAX_SECS, "seconds");
        let log_format = match get("AICD_LOG_FORMAT").map(|f| f.trim().to_ascii_lowercase()).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => {
                r.problem("AICD_LOG_FORMAT must be `text` or `json`");
                LogFormat::Text
            }
        };
        let log_filter = get("RUST_LOG").unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&log_filter) {
            r.problem(format!("RUST_LOG is not a valid filter: {e}"));
        }
        if !r.problems.is_empty() {
            return Err(r.problems.join("\n"));
        }
        Ok(Self {
            database,
            signals,
            agent,
            worker_id,
            concurrency: usize::try_from(concurrency).unwrap_or(1),
            lease: Duration::from_secs(lease),
            poll_interval: Duration::from_millis(poll_interval),
            shutdown_grace: Duration::from_secs(shutdown_grace),
            log_format,
            log_filter,
        })
    }

    /// The orchestrator's settings: these, heartbeats every third of the lease, and the
    /// orchestrator's defaults for the rest.
    pub(crate) fn orchestrator(&self) -> OrchestratorConfig {
        OrchestratorConfig {
            worker_id: self.worker_id.clone(),
            concurrency: self.concurrency,
            lease: self.lease,
            heartbeat_every: self.lease / 3,
            poll_interval: self.poll_interval,
            ..OrchestratorConfig::default()
        }
    }

    /// Scrubs every secret of the configuration out of `text`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        if let Database::Postgres { url } = &self.database {
            text = url.scrub(&text);
        }
        if let Signals::Redis { url, .. } = &self.signals {
            text = url.scrub(&text);
        }
        text
    }
}

/// Collects problems while reading variables.
struct Reader<'a> {
    get: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<String>,
}

impl Reader<'_> {
    fn problem(&mut self, message: impl Into<String>) {
        self.problems.push(message.into());
    }

    /// A whole number in `min..=max`, or `default` when unset.
    fn number(&mut self, name: &str, default: u64, min: u64, max: u64, unit: &str) -> u64 {
        let Some(raw) = (self.get)(name) else { return default };
        match raw.trim().parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.problem(format!(
                    "{name} must be a whole number of {unit} from {min} to {max} (got `{}`)",
                    shorten(&raw)
                ));
                default
            }
        }
    }
}

/// A value quoted back in a message, cut short.
fn shorten(value: &str) -> String {
    const MAX: usize = 40;
    if value.chars().count() <= MAX {
        value.to_owned()
    } else {
        format!("{}...", value.chars().take(MAX).collect::<String>())
    }
}

/// `<hostname or "worker">-<pid>-<random>`: unique per process, and recognisable in the lease
/// column and the logs.
fn default_worker_id() -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).take(63).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, String> {
        Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn defaults_are_the_embedded_database_local_signals_and_the_scripted_agent() {
        let c = config(&[]).unwrap();
        assert!(matches!(c.database, Database::Sqlite { ref path } if path == &PathBuf::from("./data/aicd.db")));
        assert!(matches!(c.signals, Signals::Local));
        assert_eq!(c.agent, AgentKind::Scripted { delay: Duration::ZERO });
        assert_eq!(c.concurrency, 4);
        assert_eq!(c.lease, Duration::from_secs(30));
        assert_eq!(c.poll_interval, Duration::from_millis(2000));
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.log_filter, "info");
        let o = c.orchestrator();
        assert_eq!(o.heartbeat_every, Duration::from_secs(10));
        assert_eq!((o.concurrency, o.lease, o.poll_interval), (4, c.lease, c.poll_interval));
        assert_eq!(o.worker_id, c.worker_id);
    }

    #[test]
    fn every_setting_is_read() {
        let c = config(&[
            ("DATABASE_URL", "postgres://app:pw@db/aicd"),
            ("REDIS_URL", "redis://:pw@cache:6379/0"),
            ("AICD_REDIS_NAMESPACE", "prod:"),
            ("AICD_WORKER_CONCURRENCY", "256"),
            ("AICD_WORKER_ID", "w-1"),
            ("AICD_LEASE_SECS", "2"),
            ("AICD_POLL_INTERVAL_MS", "10"),
            ("AICD_SHUTDOWN_GRACE_SECS", "0"),
            ("AICD_AGENT", "scripted"),
            ("AICD_SCRIPTED_AGENT_DELAY_MS", "1500"),
            ("AICD_LOG_FORMAT", "JSON"),
            ("RUST_LOG", "warn,aicd_core=debug"),
        ])
        .unwrap();
        assert!(matches!(c.database, Database::Postgres { ref url } if url.expose() == "postgres://app:pw@db/aicd"));
        assert!(matches!(c.signals, Signals::Redis { ref namespace, .. } if namespace == "prod:"));
        assert_eq!(c.agent, AgentKind::Scripted { delay: Duration::from_millis(1500) });
        assert_eq!((c.concurrency, c.worker_id.as_str()), (256, "w-1"));
        assert_eq!((c.lease, c.poll_interval), (Duration::from_secs(2), Duration::from_millis(10)));
        assert_eq!(c.shutdown_grace, Duration::ZERO);
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.orchestrator().heartbeat_every, Duration::from_nanos(666_666_666));
    }

    #[test]
    fn the_data_dir_holds_the_sqlite_file_and_redis_has_a_default_namespace() {
        let c = config(&[("AICD_DATA_DIR", "/var/lib/aicd"), ("REDIS_URL", "redis://cache")]).unwrap();
        assert!(matches!(c.database, Database::Sqlite { ref path } if path == &PathBuf::from("/var/lib/aicd/aicd.db")));
        assert!(matches!(c.signals, Signals::Redis { ref namespace, .. } if namespace == "aicd:"));
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_variable() {
        let err = config(&[
            ("DATABASE_URL", "mysql://u:hunter2@x/db"),
            ("REDIS_URL", "http://:hunter3@cache"),
            ("AICD_WORKER_CONCURRENCY", "0"),
            ("AICD_LEASE_SECS", "1"),
            ("AICD_POLL_INTERVAL_MS", "5"),
            ("AICD_SHUTDOWN_GRACE_SECS", "soon"),
            ("AICD_AGENT", "gpt"),
            ("AICD_WORKER_ID", "has space"),
            ("AICD_LOG_FORMAT", "xml"),
            ("RUST_LOG", "=[=="),
        ])
        .unwrap_err();
        for name in [
            "DATABASE_URL",
            "REDIS_URL",
            "AICD_WORKER_CONCURRENCY",
            "AICD_LEASE_SECS",
            "AICD_POLL_INTERVAL_MS",
            "AICD_SHUTDOWN_GRACE_SECS",
            "AICD_AGENT",
            "AICD_WORKER_ID",
            "AICD_LOG_FORMAT",
            "RUST_LOG",
        ] {
            assert!(err.lines().any(|l| l.starts_with(name)), "{name} is not named in:\n{err}");
        }
        assert_eq!(err.lines().count(), 10, "{err}");
        assert!(!err.contains("hunter2") && !err.contains("hunter3"), "{err}");
    }

    #[test]
    fn numbers_are_range_checked() {
        for (name, bad) in [
            ("AICD_WORKER_CONCURRENCY", "257"),
            ("AICD_WORKER_CONCURRENCY", "-1"),
            ("AICD_WORKER_CONCURRENCY", "four"),
            ("AICD_LEASE_SECS", "99999999999999999999"),
            ("AICD_SCRIPTED_AGENT_DELAY_MS", "1.5"),
        ] {
            let err = config(&[(name, bad)]).unwrap_err();
            assert!(err.starts_with(name) && err.contains(&format!("(got `{bad}`)")), "{err}");
        }
        assert_eq!(config(&[("AICD_WORKER_CONCURRENCY", " 1 ")]).unwrap().concurrency, 1);
    }

    #[test]
    fn a_long_bad_value_is_cut_short_in_the_message() {
        let long = "x".repeat(500);
        let err = config(&[("AICD_AGENT", &long)]).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let c = config(&[
            ("DATABASE_URL", "postgres://app:hunter2@db/aicd"),
            ("REDIS_URL", "redis://default:hunter3@cache:6379"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("hunter3"), "{shown}");
        let scrubbed = c.scrub("connecting to postgres://app:hunter2@db/aicd failed: hunter2? hunter3!");
        assert!(!scrubbed.contains("hunter2") && !scrubbed.contains("hunter3"), "{scrubbed}");
    }

    #[test]
    fn passwords_are_found_in_urls() {
        assert_eq!(url_password("postgres://app:pw@db/x"), Some("pw"));
        assert_eq!(url_password("redis://:pw@cache"), Some("pw"));
        assert_eq!(url_password("postgres://app:p%40ss@db:5432/x?sslmode=require"), Some("p%40ss"));
        assert_eq!(url_password("postgres://app@db/x"), None);
        assert_eq!(url_password("postgres://db/x?user=a@b"), None);
        assert_eq!(url_password("not a url"), None);
    }

    #[test]
    fn the_default_worker_id_is_host_pid_random_and_unique() {
        let (a, b) = (config(&[]).unwrap().worker_id, config(&[]).unwrap().worker_id);
        assert_ne!(a, b);
        let parts: Vec<&str> = a.rsplitn(3, '-').collect();
        assert_eq!(parts.len(), 3, "{a}");
        assert_eq!(parts[0].len(), 8, "{a}");
        assert_eq!(parts[1], std::process::id().to_string(), "{a}");
        assert!(!parts[2].is_empty() && !a.contains(char::is_whitespace), "{a}");
    }
}
