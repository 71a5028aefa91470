use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::Write;

use super::secret::{is_placeholder_secret, percent_decode};
use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, Problems> {
    Config::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
}

fn problems(vars: &[(&str, &str)]) -> String {
    config(vars).expect_err("the configuration is refused").to_string()
}

const GOOD_SECRET: &str = "8c1f2a9d40e77b3a5c6d1e0f92ab47cd";
/// Another good secret (the old one while rotating).
const PEER_SECRET: &str = "5d0e7c3b19a84f62e1c9b07a3d5f28e4";
const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";

/// The smallest production configuration that passes.
fn production() -> Vec<(&'static str, &'static str)> {
    vec![
        ("AICD_ENV", "production"),
        ("DATABASE_URL", "postgres://app:Zq8-kW2r@db.internal/aicd?sslmode=verify-full"),
        ("REDIS_URL", "rediss://:Xk3v9Qw7@cache.internal:6380"),
    ]
}

fn with(
    mut base: Vec<(&'static str, &'static str)>,
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, &'static str)> {
    for (k, v) in extra {
        base.retain(|(name, _)| name != k);
        base.push((k, v));
    }
    base
}

#[test]
fn defaults_are_the_embedded_database_local_signals_and_the_scripted_agent() {
    let c = config(&[]).unwrap();
    assert_eq!(c.environment, Environment::Development);
    assert!(matches!(c.database, Database::Sqlite { ref path } if path == &PathBuf::from("./data/aicd.db")));
    assert!(matches!(c.signals, Signals::Local));
    assert!(matches!(c.agent, AgentKind::Scripted { delay: Duration::ZERO }), "{:?}", c.agent);
    assert_eq!(c.worker.concurrency, 4);
    assert_eq!(c.worker.lease, Duration::from_secs(30));
    assert_eq!(c.worker.poll_interval, Duration::from_millis(2000));
    assert_eq!(c.worker.listen_addr, "127.0.0.1:9090".parse().unwrap());
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.server.drain_delay, Duration::ZERO, "no drain delay unless asked for");
    assert_eq!(c.log_format, LogFormat::Text);
    assert_eq!(c.log_filter, "info");
    assert_eq!((c.otlp_endpoint.as_deref(), c.service_name.as_deref()), (None, None));
    let o = c.orchestrator();
    assert_eq!(o.heartbeat_every, Duration::from_secs(10));
    assert_eq!((o.concurrency, o.lease, o.poll_interval), (4, c.worker.lease, c.worker.poll_interval));
    assert_eq!(o.worker_id, c.worker.worker_id);
}

#[test]
fn server_defaults_follow_the_database() {
    let s = config(&[]).unwrap().server;
    assert_eq!(s.listen_addr, "127.0.0.1:8080".parse().unwrap());
    assert!(s.embedded_worker && s.allow_local_repos, "SQLite: an all-in-one development server");
    assert_eq!(s.max_body_bytes, 1_048_576);
    assert_eq!(s.request_timeout, Duration::from_secs(30));
    assert_eq!((s.rate_limit_per_minute, s.ip_rate_limit_per_minute), (600, 1200));
    assert!(s.cors_origins.is_empty() && s.public_url.is_none() && !s.trust_forwarded_headers);
    assert!(s.oidc.is_none());
    assert_eq!(s.github.api_url, "https://api.github.com");
    assert!(s.github.app_id.is_none() && s.github.private_key.is_none() && s.github.webhook_secret.is_none());

    let s = config(&[("DATABASE_URL", "postgres://app@db/aicd")]).unwrap().server;
    assert!(!s.embedded_worker && !s.allow_local_repos, "PostgreSQL: separate workers, no local repositories");
}

#[test]
fn every_setting_is_read() {
    let c = config(&[
        ("DATABASE_URL", "postgres://app:pw@db/aicd"),
        ("AICD_DATABASE_MIGRATION_URL", "postgresql://owner:pw2@db/aicd"),
        ("REDIS_URL", "redis://:pw@cache:6379/0"),
        ("AICD_REDIS_NAMESPACE", "prod:"),
        ("AICD_WORKER_CONCURRENCY", "256"),
        ("AICD_WORKER_ID", "w-1"),
        ("AICD_LEASE_SECS", "2"),
        ("AICD_POLL_INTERVAL_MS", "10"),
        ("AICD_WORKER_LISTEN_ADDR", "0.0.0.0:0"),
        ("AICD_SHUTDOWN_GRACE_SECS", "0"),
        ("AICD_SHUTDOWN_DRAIN_SECS", "5"),
        ("AICD_AGENT", "scripted"),
        ("AICD_SCRIPTED_AGENT_DELAY_MS", "1500"),
        ("AICD_LOG_FORMAT", "JSON"),
        ("RUST_LOG", "warn,aicd_core=debug"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ("OTEL_SERVICE_NAME", "aicd-blue"),
        ("AICD_LISTEN_ADDR", "[::]:8443"),
        ("AICD_EMBEDDED_WORKER", "yes"),
        ("AICD_ALLOW_LOCAL_REPOS", "1"),
        ("AICD_MAX_BODY_BYTES", "1024"),
        ("AICD_REQUEST_TIMEOUT_SECS", "3600"),
        ("AICD_RATE_LIMIT_PER_MINUTE", "1"),
        ("AICD_IP_RATE_LIMIT_PER_MINUTE", "1000000"),
        ("AICD_CORS_ORIGINS", "https://app.example.com, http://localhost:3000/,https://APP.example.com"),
        ("AICD_PUBLIC_URL", "https://aicd.example.com/"),
        ("AICD_TRUST_FORWARDED_HEADERS", "TRUE"),
        ("AICD_OIDC_ISSUER", "https://idp.example.com/"),
        ("AICD_OIDC_AUDIENCE", "aicd"),
        ("AICD_GITHUB_APP_ID", "12345"),
        ("AICD_GITHUB_PRIVATE_KEY", "-----BEGIN RSA PRIVATE KEY-----\\nMIIEow\\n-----END RSA PRIVATE KEY-----\\n"),
        ("AICD_GITHUB_WEBHOOK_SECRET", GOOD_SECRET),
        ("AICD_GITHUB_API_URL", "https://ghe.example.com/api/v3/"),
        ("AICD_GITHUB_APP_SLUG", " AICD-Dev "),
        ("AICD_GITHUB_CLIENT_ID", "Iv23liAbCdEf012345"),
        ("AICD_GITHUB_CLIENT_SECRET", "0123456789abcdef0123456789abcdef01234567"),
        ("AICD_GITHUB_WEB_URL", "https://ghe.example.com/"),
        ("AICD_GITHUB_CALLBACK_URL", "https://app.example.com/github/setup?from=aicd"),
        ("AICD_WEBHOOK_MAX_BODY_BYTES", "26214400"),
        ("AICD_WEBHOOK_MAX_INFLIGHT", "1"),
        ("AICD_WEBHOOK_READ_TIMEOUT_SECS", "300"),
        ("AICD_WEBHOOK_BAD_SIGNATURES_PER_MINUTE", "5"),
        ("AICD_WEBHOOK_MAX_INFLIGHT_PER_ADDRESS", "2"),
        ("AICD_WEBHOOK_TRUSTED_SOURCES", "10.1.0.0/16, 2001:db8::/32,192.0.2.7"),
        ("AICD_LOCAL_REPO_ROOTS", "/srv/git, /home/dev/src ,/srv/git"),
    ])
    .unwrap();
    assert_eq!(c.server.github.bot_login().as_deref(), Some("aicd-dev[bot]"));
    assert!(matches!(
        c.database,
        Database::Postgres { ref url, ref migration_url, .. }
            if url.expose() == "postgres://app:pw@db/aicd"
                && migration_url.as_ref().map(Secret::expose) == Some("postgresql://owner:pw2@db/aicd")
    ));
    assert!(matches!(c.signals, Signals::Redis { ref namespace, .. } if namespace == "prod:"));
    assert!(matches!(c.agent, AgentKind::Scripted { delay } if delay == Duration::from_millis(1500)), "{:?}", c.agent);
    let w = &c.worker;
    assert_eq!((w.concurrency, w.worker_id.as_str()), (256, "w-1"));
    assert_eq!((w.lease, w.poll_interval), (Duration::from_secs(2), Duration::from_millis(10)));
    assert_eq!(w.listen_addr, "0.0.0.0:0".parse().unwrap(), "port 0 picks a free port");
    assert_eq!(c.shutdown_grace, Duration::ZERO);
    assert_eq!(c.server.drain_delay, Duration::from_secs(5));
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.orchestrator().heartbeat_every, Duration::from_nanos(666_666_666));
    assert_eq!(c.otlp_endpoint.as_deref(), Some("http://collector:4318"));
    assert_eq!(c.service_name.as_deref(), Some("aicd-blue"));
    let s = &c.server;
    assert_eq!(s.listen_addr, "[::]:8443".parse().unwrap());
    assert!(s.embedded_worker && s.allow_local_repos && s.trust_forwarded_headers);
    assert_eq!((s.max_body_bytes, s.request_timeout), (1024, Duration::from_secs(3600)));
    assert_eq!((s.rate_limit_per_minute, s.ip_rate_limit_per_minute), (1, 1_000_000));
    assert_eq!(s.cors_origins, ["https://app.example.com", "http://localhost:3000"]);
    assert_eq!(s.public_url.as_deref(), Some("https://aicd.example.com"));
    let oidc = s.oidc.as_ref().unwrap();
    assert_eq!(oidc.issuer, "https://idp.example.com/", "the issuer is kept exactly: tokens must match it");
    assert_eq!(oidc.audience, "aicd");
    assert_eq!(oidc.jwks_url, "https://idp.example.com/.well-known/jwks.json");
    let g = &s.github;
    assert_eq!(g.app_id, Some(12345));
    assert_eq!(g.private_key.as_ref().map(Secret::expose), Some(PEM), "\\n escapes become newlines");
    assert_eq!(g.webhook_secret.as_ref().map(Secret::expose), Some(GOOD_SECRET));
    assert_eq!(g.api_url, "https://ghe.example.com/api/v3");
    assert_eq!(g.web_url, "https://ghe.example.com");
    assert_eq!(g.callback_url.as_deref(), Some("https://app.example.com/github/setup?from=aicd"));
    let oauth = g.oauth.as_ref().expect("the OAuth client");
    assert_eq!(oauth.client_id, "Iv23liAbCdEf012345");
    assert_eq!(oauth.client_secret.expose(), "0123456789abcdef0123456789abcdef01234567");
    assert_eq!(
        s.webhooks,
        crate::config::WebhookLimits {
            max_body_bytes: 26_214_400,
            max_inflight: 1,
            read_timeout: Duration::from_secs(300),
            bad_signatures_per_minute: 5,
            max_inflight_per_address: 2,
            trusted_sources: ["10.1.0.0/16", "2001:db8::/32", "192.0.2.7"].map(|r| r.parse().unwrap()).to_vec(),
        }
    );
    let trusted = &s.webhooks.trusted_sources;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert!(trusted[0].contains(ip("10.1.255.3")) && !trusted[0].contains(ip("10.2.0.1")));
    assert!(trusted[0].contains(ip("::ffff:10.1.0.9")), "IPv4 in IPv6 form");
    assert!(trusted[1].contains(ip("2001:db8:ffff::1")) && !trusted[1].contains(ip("2001:db9::1")));
    assert!(trusted[2].contains(ip("192.0.2.7")) && !trusted[2].contains(ip("192.0.2.8")));
    assert_eq!(s.local_repo_roots, [PathBuf::from("/srv/git"), PathBuf::from("/home/dev/src")]);
}

#[test]
fn webhook_limits_and_local_roots_have_safe_defaults_and_bounds() {
    let s = config(&[]).unwrap().server;
    assert_eq!((s.webhooks.max_body_bytes, s.webhooks.max_inflight), (5 * 1024 * 1024, 32));
    assert_eq!((s.webhooks.read_timeout, s.webhooks.bad_signatures_per_minute), (Duration::from_secs(10), 20));
    // The embedded default's root is its data directory, made absolute.
    assert_eq!(s.local_repo_roots.len(), 1);
    assert!(s.local_repo_roots[0].is_absolute() && s.local_repo_roots[0].ends_with("data"), "{:?}", s.local_repo_roots);
    assert_eq!(s.webhooks.max_inflight_per_address, 4);
    let github = s.webhooks.trusted_sources.clone();
    assert_eq!(github.len(), 6, "GitHub's hook ranges by default");
    assert!(github.iter().any(|r| r.contains("140.82.115.10".parse().unwrap())));
    assert!(!github.iter().any(|r| r.contains("203.0.113.9".parse().unwrap())));
    for bad in ["10.0.0.0/33", "nonsense", "::/129"] {
        let err = problems(&[("AICD_WEBHOOK_TRUSTED_SOURCES", bad)]);
        assert!(err.starts_with("AICD_WEBHOOK_TRUSTED_SOURCES"), "{bad}: {err}");
    }
    let err = problems(&[("AICD_WEBHOOK_MAX_BODY_BYTES", "26214401"), ("AICD_WEBHOOK_MAX_INFLIGHT", "0")]);
    assert!(err.contains("AICD_WEBHOOK_MAX_BODY_BYTES") && err.contains("AICD_WEBHOOK_MAX_INFLIGHT"), "{err}");
    // With PostgreSQL, local repositories need their roots named.
    let err = problems(&[("DATABASE_URL", "postgres://app@db/aicd"), ("AICD_ALLOW_LOCAL_REPOS", "true")]);
    assert!(err.starts_with("AICD_LOCAL_REPO_ROOTS is required"), "{err}");
    for bad in ["relative/dir", "/", "/srv/../etc"] {
        let err = problems(&[("AICD_LOCAL_REPO_ROOTS", bad)]);
        assert!(err.starts_with("AICD_LOCAL_REPO_ROOTS"), "{bad}: {err}");
    }
    let err = problems(&[("AICD_GITHUB_CLIENT_ID", "Iv23li")]);
    assert!(err.contains("AICD_GITHUB_CLIENT_SECRET is required"), "{err}");
    let err = problems(&[("AICD_GITHUB_CLIENT_ID", "Iv23li"), ("AICD_GITHUB_CLIENT_SECRET", "short")]);
    assert!(err.contains("at least 20 characters"), "{err}");
    for bad in ["app.example.com/setup", "https://app.example.com/setup#done", "ftp://app.example.com"] {
        let err = problems(&[("AICD_GITHUB_CALLBACK_URL", bad)]);
        assert!(err.starts_with("AICD_GITHUB_CALLBACK_URL"), "{bad}: {err}");
    }
    assert_eq!(config(&[]).unwrap().server.github.callback_url, None);
}

#[test]
fn the_data_dir_holds_the_sqlite_file_and_redis_has_a_default_namespace() {
    let c = config(&[("AICD_DATA_DIR", "/var/lib/aicd"), ("REDIS_URL", "redis://cache")]).unwrap();
    assert!(matches!(c.database, Database::Sqlite { ref path } if path == &PathBuf::from("/var/lib/aicd/aicd.db")));
    assert!(matches!(c.signals, Signals::Redis { ref namespace, .. } if namespace == "aicd:"));
}

#[test]
fn empty_values_count_as_unset() {
    let c = config(&[("DATABASE_URL", ""), ("REDIS_URL", "  "), ("AICD_WORKER_CONCURRENCY", ""), ("AICD_ENV", " ")])
        .unwrap();
    assert!(matches!(c.database, Database::Sqlite { .. }));
    assert!(matches!(c.signals, Signals::Local));
    assert_eq!((c.worker.concurrency, c.environment), (4, Environment::Development));
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
        ("AICD_SHUTDOWN_DRAIN_SECS", "3601"),
        ("AICD_AGENT", "gpt"),
        ("AICD_WORKER_ID", "has space"),
        ("AICD_LOG_FORMAT", "xml"),
        ("RUST_LOG", "=[=="),
    ])
    .unwrap_err();
    let names = [
        "DATABASE_URL",
        "REDIS_URL",
        "AICD_WORKER_CONCURRENCY",
        "AICD_LEASE_SECS",
        "AICD_POLL_INTERVAL_MS",
        "AICD_SHUTDOWN_GRACE_SECS",
        "AICD_SHUTDOWN_DRAIN_SECS",
        "AICD_AGENT",
        "AICD_WORKER_ID",
        "AICD_LOG_FORMAT",
        "RUST_LOG",
    ];
    for name in names {
        assert!(err.0.iter().any(|l| l.starts_with(name)), "{name} is not named in:\n{err}");
    }
    assert_eq!(err.0.len(), 11, "{err}");
    let text = err.to_string();
    assert_eq!(text.lines().count(), 11, "one problem per line:\n{text}");
    assert!(!text.contains("hunter2") && !text.contains("hunter3"), "{text}");
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert!(boxed.to_string().starts_with("DATABASE_URL"));
}

#[test]
fn every_server_problem_names_its_variable() {
    let err = config(&[
        ("AICD_ENV", "staging"),
        ("AICD_LISTEN_ADDR", "localhost:8080"),
        ("AICD_WORKER_LISTEN_ADDR", "9090"),
        ("AICD_EMBEDDED_WORKER", "maybe"),
        ("AICD_MAX_BODY_BYTES", "100"),
        ("AICD_REQUEST_TIMEOUT_SECS", "0"),
        ("AICD_RATE_LIMIT_PER_MINUTE", "1000001"),
        ("AICD_IP_RATE_LIMIT_PER_MINUTE", "0"),
        ("AICD_CORS_ORIGINS", "*"),
        ("AICD_PUBLIC_URL", "ftp://aicd.example.com"),
        ("AICD_TRUST_FORWARDED_HEADERS", "on"),
        ("AICD_OIDC_ISSUER", "idp.example.com"),
        ("AICD_OIDC_AUDIENCE", "aicd"),
        ("AICD_GITHUB_APP_ID", "-3"),
        ("AICD_GITHUB_PRIVATE_KEY", "not a key"),
        ("AICD_GITHUB_WEBHOOK_SECRET", "short"),
        ("AICD_GITHUB_API_URL", "api.github.com"),
        ("AICD_GITHUB_APP_SLUG", "my app[bot]"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "grpc://collector:4317"),
        ("AICD_DATABASE_MIGRATION_URL", "postgres://owner@db/aicd"),
    ])
    .unwrap_err();
    for name in [
        "AICD_ENV",
        "AICD_LISTEN_ADDR",
        "AICD_WORKER_LISTEN_ADDR",
        "AICD_EMBEDDED_WORKER",
        "AICD_MAX_BODY_BYTES",
        "AICD_REQUEST_TIMEOUT_SECS",
        "AICD_RATE_LIMIT_PER_MINUTE",
        "AICD_IP_RATE_LIMIT_PER_MINUTE",
        "AICD_CORS_ORIGINS",
        "AICD_PUBLIC_URL",
        "AICD_TRUST_FORWARDED_HEADERS",
        "AICD_OIDC_ISSUER",
        "AICD_GITHUB_APP_ID",
        "AICD_GITHUB_PRIVATE_KEY",
        "AICD_GITHUB_WEBHOOK_SECRET",
        "AICD_GITHUB_API_URL",
        "AICD_GITHUB_APP_SLUG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "AICD_DATABASE_MIGRATION_URL",
    ] {
        assert!(err.0.iter().any(|l| l.starts_with(name)), "{name} is not named in:\n{err}");
    }
    let known: Vec<&str> = variables().iter().map(|v| v.name).collect();
    for problem in &err.0 {
        assert!(known.iter().any(|name| problem.starts_with(name)), "a problem names no variable first: {problem}");
    }
}

#[test]
fn numbers_are_range_checked() {
    for (name, bad) in [
        ("AICD_WORKER_CONCURRENCY", "257"),
        ("AICD_WORKER_CONCURRENCY", "-1"),
        ("AICD_WORKER_CONCURRENCY", "four"),
        ("AICD_LEASE_SECS", "99999999999999999999"),
        ("AICD_SCRIPTED_AGENT_DELAY_MS", "1.5"),
        ("AICD_MAX_BODY_BYTES", "67108865"),
        ("AICD_REQUEST_TIMEOUT_SECS", "3601"),
    ] {
        let err = problems(&[(name, bad)]);
        assert!(err.starts_with(name) && err.contains(&format!("(got `{bad}`)")), "{err}");
    }
    assert_eq!(config(&[("AICD_WORKER_CONCURRENCY", " 1 ")]).unwrap().worker.concurrency, 1);
}

#[test]
fn booleans_accept_true_false_1_0_yes_no() {
    for (raw, value) in [("true", true), ("FALSE", false), ("1", true), ("0", false), ("Yes", true), ("no", false)] {
        let c = config(&[("AICD_TRUST_FORWARDED_HEADERS", raw), ("AICD_EMBEDDED_WORKER", raw)]).unwrap();
        assert_eq!((c.server.trust_forwarded_headers, c.server.embedded_worker), (value, value), "{raw}");
    }
    assert!(problems(&[("AICD_ALLOW_LOCAL_REPOS", "y")]).starts_with("AICD_ALLOW_LOCAL_REPOS"));
}

#[test]
fn a_long_bad_value_is_cut_short_in_the_message() {
    let long = "x".repeat(500);
    let err = problems(&[("AICD_AGENT", &long)]);
    assert!(err.len() < 200, "{err}");
}

#[test]
fn secrets_never_print() {
    let c = config(&[
        ("DATABASE_URL", "postgres://app:hunter2@db/aicd"),
        ("AICD_DATABASE_MIGRATION_URL", "postgres://owner:hunter4@db/aicd"),
        ("REDIS_URL", "redis://default:hunter3@cache:6379"),
        ("AICD_GITHUB_APP_ID", "1"),
        ("AICD_GITHUB_PRIVATE_KEY", PEM),
        ("AICD_GITHUB_WEBHOOK_SECRET", GOOD_SECRET),
    ])
    .unwrap();
    let shown = format!("{c:?}");
    for secret in ["hunter2", "hunter3", "hunter4", "MIIEow", GOOD_SECRET] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let scrubbed = c.scrub(&format!(
        "connecting to postgres://app:hunter2@db/aicd failed: hunter2? hunter3! hunter4 {GOOD_SECRET} {PEM}"
    ));
    for secret in ["hunter2", "hunter3", "hunter4", "MIIEow", GOOD_SECRET] {
        assert!(!scrubbed.contains(secret), "{secret} in {scrubbed}");
    }
    let summary = c.summary();
    let value = |name: &str| summary.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
    for name in [
        "DATABASE_URL",
        "AICD_DATABASE_MIGRATION_URL",
        "REDIS_URL",
        "AICD_GITHUB_PRIVATE_KEY",
        "AICD_GITHUB_WEBHOOK_SECRET",
    ] {
        assert_eq!(value(name), Some("[secret]"), "{name}: {summary:?}");
    }
    let all = format!("{summary:?}");
    assert!(!all.contains("hunter") && !all.contains(GOOD_SECRET), "{all}");
}

#[test]
fn percent_encoded_passwords_are_scrubbed_in_both_forms() {
    let secret = Secret::new("postgres://app:p%40ss%2Fword@db/aicd");
    let scrubbed = secret.scrub("auth failed for p%40ss%2Fword (p@ss/word)");
    assert!(!scrubbed.contains("p%40ss") && !scrubbed.contains("p@ss/word"), "{scrubbed}");
    assert_eq!(Secret::new("").scrub("unchanged"), "unchanged");
    assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
}

#[test]
fn the_summary_shows_each_effective_value_in_the_documented_order() {
    let c = config(&[("AICD_WORKER_ID", "w-9"), ("AICD_CORS_ORIGINS", "http://localhost:3000")]).unwrap();
    let summary = c.summary();
    let value = |name: &str| summary.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone());
    assert_eq!(value("AICD_ENV").as_deref(), Some("development"));
    assert_eq!(value("AICD_DATA_DIR").as_deref(), Some("./data"));
    assert_eq!(value("AICD_WORKER_ID").as_deref(), Some("w-9"));
    assert_eq!(value("AICD_WORKER_LISTEN_ADDR").as_deref(), Some("127.0.0.1:9090"));
    assert_eq!(value("AICD_STEP_TIMEOUT_CODING_SECS").as_deref(), Some("900"));
    assert_eq!(value("AICD_FORGE_TIMEOUT_SECS").as_deref(), Some("120"));
    assert_eq!(value("AICD_EMBEDDED_WORKER").as_deref(), Some("true"));
    assert_eq!(value("AICD_CORS_ORIGINS").as_deref(), Some("http://localhost:3000"));
    assert_eq!(value("AICD_GITHUB_API_URL").as_deref(), Some("https://api.github.com"));
    for off in ["DATABASE_URL", "REDIS_URL", "AICD_REDIS_NAMESPACE", "AICD_OIDC_ISSUER", "AICD_PUBLIC_URL"] {
        assert_eq!(value(off), None, "{off} is not in effect");
    }
    let order: Vec<usize> =
        summary.iter().map(|(n, _)| variables().iter().position(|v| v.name == *n).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{summary:?}");
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
    let (a, b) = (config(&[]).unwrap().worker.worker_id, config(&[]).unwrap().worker.worker_id);
    assert_ne!(a, b);
    let parts: Vec<&str> = a.rsplitn(3, '-').collect();
    assert_eq!(parts.len(), 3, "{a}");
    assert_eq!(parts[0].len(), 8, "{a}");
    assert_eq!(parts[1], std::process::id().to_string(), "{a}");
    assert!(!parts[2].is_empty() && !a.contains(char::is_whitespace), "{a}");
}

#[test]
fn a_production_configuration_passes_with_postgres_over_tls_and_redis() {
    let c = config(&with(
        production(),
        &[
            ("AICD_OIDC_ISSUER", "https://idp.example.com"),
            ("AICD_OIDC_AUDIENCE", "aicd"),
            ("AICD_PUBLIC_URL", "https://aicd.example.com"),
            ("AICD_CORS_ORIGINS", "https://app.example.com"),
            ("AICD_GITHUB_WEBHOOK_SECRET", GOOD_SECRET),
        ],
    ))
    .unwrap();
    assert_eq!(c.environment, Environment::Production);
    assert!(!c.server.allow_local_repos && !c.server.embedded_worker);
    for mode in ["require", "verify-ca", "VERIFY-FULL"] {
        let url = format!("postgres://app:Zq8-kW2r@db/aicd?application_name=x&sslmode={mode}");
        let url: &'static str = Box::leak(url.into_boxed_str());
        assert!(config(&with(production(), &[("DATABASE_URL", url)])).is_ok(), "{mode}");
    }
}

#[test]
fn production_requires_postgres_and_redis() {
    let err = problems(&[("AICD_ENV", "production")]);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("DATABASE_URL is required")), "{err}");
    assert!(lines.iter().any(|l| l.starts_with("REDIS_URL is required")), "{err}");
    assert_eq!(lines.len(), 2, "{err}");
}

#[test]
fn production_requires_tls_to_the_database() {
    for url in [
        "postgres://app:Zq8-kW2r@db/aicd",
        "postgres://app:Zq8-kW2r@db/aicd?sslmode=prefer",
        "postgres://app:Zq8-kW2r@db/aicd?sslmode=disable",
        "postgres://app:Zq8-kW2r@db/aicd#sslmode=require",
    ] {
        let err = problems(&with(production(), &[("DATABASE_URL", url)]));
        assert!(err.starts_with("DATABASE_URL must request TLS"), "{url}: {err}");
        assert!(!err.contains("Zq8-kW2r"), "{err}");
    }
}

#[test]
fn production_refuses_placeholder_passwords() {
    for password in ["password", "changeme", "change-me", "Secret", "postgres", "example", "test", "xxxx", "aaaaaaaa"] {
        let db: &'static str = Box::leak(format!("postgres://app:{password}@db/aicd?sslmode=require").into_boxed_str());
        let redis: &'static str = Box::leak(format!("redis://:{password}@cache").into_boxed_str());
        let err = problems(&with(production(), &[("DATABASE_URL", db), ("REDIS_URL", redis)]));
        assert!(err.lines().any(|l| l.starts_with("DATABASE_URL has a placeholder password")), "{password}: {err}");
        assert!(err.lines().any(|l| l.starts_with("REDIS_URL has a placeholder password")), "{password}: {err}");
    }
    // Percent-encoded, too; and not outside production.
    let db = "postgres://app:chang%65me@db/aicd?sslmode=require";
    assert!(problems(&with(production(), &[("DATABASE_URL", db)])).contains("placeholder"));
    assert!(config(&[("DATABASE_URL", "postgres://app:postgres@db/aicd"), ("REDIS_URL", "redis://:test@c")]).is_ok());
}

#[test]
fn production_refuses_local_repositories_and_plain_http() {
    let err = problems(&with(
        production(),
        &[
            ("AICD_ALLOW_LOCAL_REPOS", "true"),
            ("AICD_OIDC_ISSUER", "http://idp.example.com"),
            ("AICD_OIDC_AUDIENCE", "aicd"),
            ("AICD_PUBLIC_URL", "http://aicd.example.com"),
            ("AICD_CORS_ORIGINS", "https://ok.example.com,http://app.example.com"),
        ],
    ));
    for name in ["AICD_ALLOW_LOCAL_REPOS", "AICD_OIDC_ISSUER", "AICD_PUBLIC_URL", "AICD_CORS_ORIGINS"] {
        assert!(err.lines().any(|l| l.starts_with(name)), "{name} is not named in:\n{err}");
    }
    assert_eq!(err.lines().count(), 4, "{err}");
    // In development, all of it is fine.
    let c = config(&[
        ("AICD_ALLOW_LOCAL_REPOS", "true"),
        ("AICD_OIDC_ISSUER", "http://localhost:8081/realms/dev"),
        ("AICD_OIDC_AUDIENCE", "aicd"),
        ("AICD_PUBLIC_URL", "http://localhost:8080"),
        ("AICD_CORS_ORIGINS", "http://localhost:3000"),
    ])
    .unwrap();
    assert_eq!(c.server.oidc.unwrap().jwks_url, "http://localhost:8081/realms/dev/.well-known/jwks.json");
}

#[test]
fn a_metrics_token_must_be_long_and_random() {
    assert!(problems(&[("AICD_METRICS_TOKEN", "short")]).contains("AICD_METRICS_TOKEN must be at least 20"));
    assert!(problems(&[("AICD_METRICS_TOKEN", "changeme-changeme-changeme")]).contains("placeholder"));
    let config = config(&[("AICD_METRICS_TOKEN", GOOD_SECRET)]).unwrap();
    assert_eq!(config.metrics_token.as_ref().map(Secret::expose), Some(GOOD_SECRET));
}

#[test]
fn the_previous_webhook_secret_is_checked_like_the_secret_and_needs_it() {
    let alone = problems(&[("AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS", GOOD_SECRET)]);
    assert!(alone.contains("only accepted beside AICD_GITHUB_WEBHOOK_SECRET"), "{alone}");
    let short =
        problems(&[("AICD_GITHUB_WEBHOOK_SECRET", GOOD_SECRET), ("AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS", "short")]);
    assert!(short.contains("AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS must be at least 20"), "{short}");
    let both =
        config(&[("AICD_GITHUB_WEBHOOK_SECRET", GOOD_SECRET), ("AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS", PEER_SECRET)])
            .expect("both secrets are accepted");
    assert_eq!(both.server.github.previous_webhook_secret.as_ref().map(Secret::expose), Some(PEER_SECRET));
}

#[test]
fn webhook_secrets_must_be_long_and_not_placeholders_everywhere() {
    assert!(problems(&[("AICD_GITHUB_WEBHOOK_SECRET", "0123456789abcdefghi")]).contains("at least 20"));
    for placeholder in [
        "changeme-changeme-changeme",
        "your-webhook-secret-here",
        "xxxxxxxxxxxxxxxxxxxxxxxx",
        "abababababababababababab",
        "testtesttesttesttesttest",
        "12345678901234567890",
        "replace_me_with_a_real_secret",
        "<placeholder-for-the-secret>",
        "an-example-webhook-value",
    ] {
        let err = problems(&[("AICD_GITHUB_WEBHOOK_SECRET", placeholder)]);
        assert!(err.starts_with("AICD_GITHUB_WEBHOOK_SECRET is a placeholder"), "{placeholder}: {err}");
        assert!(!err.contains(placeholder), "the secret is not quoted back: {err}");
        let err = problems(&with(production(), &[("AICD_GITHUB_WEBHOOK_SECRET", placeholder)]));
        assert!(err.starts_with("AICD_GITHUB_WEBHOOK_SECRET is a placeholder"), "{placeholder}: {err}");
    }
    assert!(!is_placeholder_secret(GOOD_SECRET));
    assert!(!is_placeholder_secret("Tz4-q9Rm_2Lx8vBn6Wc1"));
}

#[test]
fn oidc_issuer_and_audience_come_together() {
    assert!(problems(&[("AICD_OIDC_ISSUER", "https://idp.example.com")]).starts_with("AICD_OIDC_AUDIENCE is required"));
    assert!(problems(&[("AICD_OIDC_AUDIENCE", "aicd")]).starts_with("AICD_OIDC_ISSUER is required"));
    assert!(problems(&[("AICD_OIDC_JWKS_URL", "https://idp.example.com/keys")]).starts_with("AICD_OIDC_JWKS_URL"));
    let c = config(&[
        ("AICD_OIDC_ISSUER", "https://idp.example.com"),
        ("AICD_OIDC_AUDIENCE", "aicd"),
        ("AICD_OIDC_JWKS_URL", "https://idp.example.com/protocol/openid-connect/certs"),
    ])
    .unwrap();
    assert_eq!(c.server.oidc.unwrap().jwks_url, "https://idp.example.com/protocol/openid-connect/certs");
    assert!(
        problems(&[
            ("AICD_OIDC_ISSUER", "https://idp.example.com"),
            ("AICD_OIDC_AUDIENCE", "aicd"),
            ("AICD_OIDC_JWKS_URL", "file:///etc/keys"),
        ])
        .starts_with("AICD_OIDC_JWKS_URL must be an http")
    );
}

#[test]
fn the_github_app_key_comes_inline_or_from_a_file_with_its_id() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "{PEM}").unwrap();
    let path = file.path().to_str().unwrap().to_owned();
    let c = config(&[("AICD_GITHUB_APP_ID", "7"), ("AICD_GITHUB_PRIVATE_KEY_PATH", &path)]).unwrap();
    assert_eq!(c.server.github.private_key.as_ref().map(Secret::expose), Some(PEM));

    let both = problems(&[
        ("AICD_GITHUB_APP_ID", "7"),
        ("AICD_GITHUB_PRIVATE_KEY", PEM),
        ("AICD_GITHUB_PRIVATE_KEY_PATH", &path),
    ]);
    assert!(both.starts_with("AICD_GITHUB_PRIVATE_KEY and AICD_GITHUB_PRIVATE_KEY_PATH are both set"), "{both}");
    let missing = problems(&[("AICD_GITHUB_APP_ID", "7"), ("AICD_GITHUB_PRIVATE_KEY_PATH", "/nonexistent/key.pem")]);
    assert!(missing.starts_with("AICD_GITHUB_PRIVATE_KEY_PATH cannot be read"), "{missing}");
    assert!(problems(&[("AICD_GITHUB_APP_ID", "7")]).starts_with("AICD_GITHUB_PRIVATE_KEY (or"));
    assert!(problems(&[("AICD_GITHUB_PRIVATE_KEY", PEM)]).starts_with("AICD_GITHUB_APP_ID is required"));
    let not_pem = problems(&[("AICD_GITHUB_APP_ID", "7"), ("AICD_GITHUB_PRIVATE_KEY", "MIIEow")]);
    assert!(not_pem.starts_with("AICD_GITHUB_PRIVATE_KEY must be a PEM") && !not_pem.contains("MIIEow"), "{not_pem}");
}

#[test]
fn cors_origins_are_exact() {
    for bad in ["https://app.example.com/path", "app.example.com", "https://", "https://a.example.com:99999", "null"] {
        assert!(problems(&[("AICD_CORS_ORIGINS", bad)]).starts_with("AICD_CORS_ORIGINS must be"), "{bad}");
    }
    assert!(problems(&[("AICD_CORS_ORIGINS", "https://a.example.com,*")]).contains("`*`"));
    let c = config(&[("AICD_CORS_ORIGINS", "http://[::1]:3000, http://127.0.0.1:8080,")]).unwrap();
    assert_eq!(c.server.cors_origins, ["http://[::1]:3000", "http://127.0.0.1:8080"]);
}

/// Every variable the configuration asks for is documented in `variables()`, and every documented
/// one is asked for by some configuration.
#[test]
fn variables_lists_every_variable_read() {
    let asked = RefCell::new(BTreeSet::new());
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), PEM).unwrap();
    let key_path = key.path().to_str().unwrap().to_owned();
    let everything = |name: &str| {
        asked.borrow_mut().insert(name.to_owned());
        variables().iter().any(|v| v.name == name).then(|| match name {
            "DATABASE_URL" | "AICD_DATABASE_MIGRATION_URL" => "postgres://a@db/x".to_owned(),
            "REDIS_URL" => "redis://cache".to_owned(),
            "AICD_GITHUB_PRIVATE_KEY_PATH" => key_path.clone(),
            _ => "x".to_owned(),
        })
    };
    let _ = Config::from_lookup(everything);
    let _ = Config::from_lookup(|name| {
        asked.borrow_mut().insert(name.to_owned());
        None
    });
    let _ = Config::from_lookup(|name| {
        asked.borrow_mut().insert(name.to_owned());
        (name == "AICD_GITHUB_PRIVATE_KEY_PATH").then(|| key_path.clone())
    });
    // The LLM agent's variables, asked for only with it.
    let _ = Config::from_lookup(|name| {
        asked.borrow_mut().insert(name.to_owned());
        match name {
            "AICD_AGENT" => Some("llm".to_owned()),
            n if n.ends_with("_PROVIDER") => Some("openai".to_owned()),
            n if n.starts_with("AICD_LLM_") || n == "AICD_AGENT_PROMPTS_DIR" => Some("x".to_owned()),
            _ => None,
        }
    });
    let listed: BTreeSet<String> = variables().iter().map(|v| v.name.to_owned()).collect();
    let asked = asked.into_inner();
    let read_but_unlisted: Vec<_> = asked.difference(&listed).collect();
    assert!(read_but_unlisted.is_empty(), "read but not listed: {read_but_unlisted:?}");
    let listed_but_unread: Vec<_> = listed.difference(&asked).filter(|n| *n != "HOSTNAME").collect();
    assert!(listed_but_unread.is_empty(), "listed but never read: {listed_but_unread:?}");
    assert_eq!(listed.len(), variables().len(), "no variable is listed twice");
    assert!(variables().iter().all(|v| !v.description.is_empty()));
    assert_eq!(Config::variables(), variables());
    let secrets: Vec<&str> = variables().iter().filter(|v| v.secret).map(|v| v.name).collect();
    assert_eq!(
        secrets,
        [
            "DATABASE_URL",
            "AICD_DATABASE_MIGRATION_URL",
            "REDIS_URL",
            "AICD_LLM_API_KEY",
            "AICD_LLM_PLANNER_API_KEY",
            "AICD_LLM_CRITIC_API_KEY",
            "AICD_METRICS_TOKEN",
            "AICD_GITHUB_PRIVATE_KEY",
            "AICD_GITHUB_WEBHOOK_SECRET",
            "AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS",
            "AICD_GITHUB_CLIENT_SECRET",
            "AICD_STRIPE_SECRET_KEY",
            "AICD_STRIPE_WEBHOOK_SECRET",
            "AICD_STRIPE_WEBHOOK_SECRET_PREVIOUS",
        ]
    );
}

#[test]
fn the_llm_agent_reads_its_models_with_per_role_overrides() {
    let c = config(&[
        ("AICD_AGENT", "llm"),
        ("AICD_LLM_PROVIDER", "anthropic"),
        ("AICD_LLM_API_KEY", "sk-ant-coder-secret"),
        ("AICD_LLM_MODEL", "claude-sonnet-4-5"),
        ("AICD_LLM_PLANNER_MODEL", "claude-haiku-4-5"),
        ("AICD_LLM_CRITIC_PROVIDER", "openai"),
        ("AICD_LLM_CRITIC_API_KEY", "sk-critic-secret"),
        ("AICD_LLM_CRITIC_MODEL", "gpt-4.1"),
        ("AICD_LLM_MAX_TURNS", "12"),
    ])
    .unwrap();
    let AgentKind::Llm(llm) = &c.agent else { panic!("{:?}", c.agent) };
    assert_eq!(
        (llm.coder.base_url.as_str(), llm.coder.model.as_str()),
        ("https://api.anthropic.com", "claude-sonnet-4-5")
    );
    let planner = llm.planner.as_ref().unwrap();
    assert_eq!(
        (planner.model.as_str(), planner.api_key.expose()),
        ("claude-haiku-4-5", "sk-ant-coder-secret"),
        "inherits the key"
    );
    let critic = llm.critic.as_ref().unwrap();
    assert_eq!((critic.base_url.as_str(), critic.api_key.expose()), ("https://api.openai.com/v1", "sk-critic-secret"));
    assert_eq!(llm.max_turns, 12);
    // Keys are secrets: never in the summary, scrubbed from messages.
    let summary = format!("{:?}", c.summary());
    assert!(!summary.contains("coder-secret") && !summary.contains("critic-secret"), "{summary}");
    assert!(summary.contains("(\"AICD_LLM_PLANNER_MODEL\", \"claude-haiku-4-5\")"), "{summary}");
    assert_eq!(c.scrub("failed: sk-critic-secret"), "failed: [REDACTED]");
    assert!(!format!("{c:?}").contains("sk-ant-coder-secret"));
    // A local server needs no key and no price.
    let local = config(&[
        ("AICD_AGENT", "llm"),
        ("AICD_LLM_PROVIDER", "openai"),
        ("AICD_LLM_BASE_URL", "http://localhost:11434/v1"),
        ("AICD_LLM_MODEL", "qwen2.5-coder:7b"),
    ]);
    assert!(local.is_ok(), "{:?}", local.err().map(|p| p.to_string()));
}

#[test]
fn the_llm_agent_refuses_what_it_cannot_use() {
    let err = problems(&[("AICD_AGENT", "llm")]);
    assert!(err.contains("AICD_LLM_PROVIDER is required"), "{err}");
    let err = problems(&[("AICD_AGENT", "llm"), ("AICD_LLM_PROVIDER", "bard"), ("AICD_LLM_MODEL", "x")]);
    assert!(err.contains("unknown LLM provider `bard`"), "{err}");
    let err = problems(&[("AICD_AGENT", "llm"), ("AICD_LLM_PROVIDER", "openai"), ("AICD_LLM_MODEL", "gpt-4.1")]);
    assert!(err.contains("AICD_LLM_API_KEY is required"), "{err}");
    // A paid platform cannot enforce budgets it cannot price.
    let err = problems(&[
        ("AICD_AGENT", "llm"),
        ("AICD_LLM_PROVIDER", "openai"),
        ("AICD_LLM_API_KEY", "k"),
        ("AICD_LLM_MODEL", "mystery-model"),
    ]);
    assert!(err.contains("`mystery-model` has no price") && err.contains("AICD_LLM_PRICES_PATH"), "{err}");
    let mut prices = tempfile::NamedTempFile::new().unwrap();
    writeln!(prices, "[models.\"mystery-model\"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0").unwrap();
    let path = prices.path().to_str().unwrap().to_owned();
    let priced = config(&[
        ("AICD_AGENT", "llm"),
        ("AICD_LLM_PROVIDER", "openai"),
        ("AICD_LLM_API_KEY", "k"),
        ("AICD_LLM_MODEL", "mystery-model"),
        ("AICD_LLM_PRICES_PATH", &path),
    ]);
    assert!(priced.is_ok(), "{:?}", priced.err().map(|p| p.to_string()));
    let err = problems(&[
        ("AICD_AGENT", "llm"),
        ("AICD_LLM_PROVIDER", "openai"),
        ("AICD_LLM_API_KEY", "k"),
        ("AICD_LLM_MODEL", "gpt-4.1"),
        ("AICD_AGENT_PROMPTS_DIR", "/nonexistent/prompts"),
    ]);
    assert!(err.contains("AICD_AGENT_PROMPTS_DIR"), "{err}");
    let err = problems(&[("AICD_AGENT", "gpt")]);
    assert!(err.contains("AICD_AGENT must be `scripted` or `llm`"), "{err}");
}

#[test]
fn step_timeouts_default_to_15_minutes_and_the_forge_to_2_and_reach_the_orchestrator() {
    let c = config(&[]).unwrap();
    let t = c.worker.step_timeouts;
    let quarter_hour = Duration::from_secs(900);
    assert_eq!((t.planning, t.coding, t.reviewing), (quarter_hour, quarter_hour, quarter_hour));
    assert_eq!(t.forge, Duration::from_secs(120));

    let c = config(&[
        ("AICD_STEP_TIMEOUT_PLANNING_SECS", "60"),
        ("AICD_STEP_TIMEOUT_CODING_SECS", "1800"),
        ("AICD_STEP_TIMEOUT_REVIEWING_SECS", "1"),
        ("AICD_FORGE_TIMEOUT_SECS", "86400"),
    ])
    .unwrap();
    let t = c.orchestrator().step_timeouts;
    assert_eq!(t.planning, Duration::from_secs(60));
    assert_eq!(t.coding, Duration::from_secs(1800));
    assert_eq!(t.reviewing, Duration::from_secs(1));
    assert_eq!(t.forge, Duration::from_secs(86400));

    let err = config(&[
        ("AICD_STEP_TIMEOUT_PLANNING_SECS", "0"),
        ("AICD_STEP_TIMEOUT_CODING_SECS", "soon"),
        ("AICD_STEP_TIMEOUT_REVIEWING_SECS", "86401"),
        ("AICD_FORGE_TIMEOUT_SECS", "-1"),
    ])
    .unwrap_err();
    assert_eq!(err.0.len(), 4, "{err}");
    for name in [
        "AICD_STEP_TIMEOUT_PLANNING_SECS",
        "AICD_STEP_TIMEOUT_CODING_SECS",
        "AICD_STEP_TIMEOUT_REVIEWING_SECS",
        "AICD_FORGE_TIMEOUT_SECS",
    ] {
        assert!(err.0.iter().any(|l| l.starts_with(name) && l.contains("1 to 86400")), "{name}:\n{err}");
    }
}

#[test]
fn the_database_pool_is_sized_on_its_own_or_as_configured() {
    let url = ("DATABASE_URL", "postgres://app:pw@127.0.0.1/aicd");
    let auto = config(&[url, ("AICD_WORKER_CONCURRENCY", "4")]).unwrap();
    assert_eq!(auto.database.pool_size(auto.worker.concurrency), 14, "room for the API beside 4 jobs");
    let big = config(&[url, ("AICD_WORKER_CONCURRENCY", "256")]).unwrap();
    assert_eq!(big.database.pool_size(big.worker.concurrency), 128);
    let set = config(&[url, ("AICD_DATABASE_POOL_SIZE", "40")]).unwrap();
    assert_eq!(set.database.pool_size(set.worker.concurrency), 40);
    assert!(config(&[url, ("AICD_DATABASE_POOL_SIZE", "513")]).is_err());
}

#[test]
fn the_attempt_limit_reaches_the_orchestrator_and_is_range_checked() {
    assert_eq!(config(&[]).unwrap().orchestrator().max_attempts, 5);
    assert_eq!(config(&[("AICD_MAX_ATTEMPTS", "12")]).unwrap().orchestrator().max_attempts, 12);
    assert!(problems(&[("AICD_MAX_ATTEMPTS", "0")]).contains("AICD_MAX_ATTEMPTS"));
    assert!(problems(&[("AICD_MAX_ATTEMPTS", "101")]).contains("AICD_MAX_ATTEMPTS"));
}

#[test]
fn billing_is_off_without_a_stripe_key_and_checked_with_one() {
    assert!(config(&[]).unwrap().billing.is_none());
    let half = problems(&[("AICD_BILLING_FREE_JOBS", "5")]);
    assert!(half.contains("AICD_BILLING_FREE_JOBS is set but AICD_STRIPE_SECRET_KEY is not"), "{half}");

    let key = "sk_test_51MzQ2aLkdIwHu7ix0123456789abcdef";
    let billing = config(&[
        ("AICD_STRIPE_SECRET_KEY", key),
        ("AICD_STRIPE_WEBHOOK_SECRET", "whsec_5f8a1c2d3e4b5a6978c1d2e3"),
        ("AICD_BILLING_MODE", "merged_pull_requests"),
        ("AICD_BILLING_FREE_JOBS", "unlimited"),
        ("AICD_BILLING_FREE_COST_MICROS", "0"),
        ("AICD_BILLING_GRACE_DAYS", "2"),
        ("AICD_STRIPE_METER_PRS", "prs.opened"),
    ])
    .unwrap();
    let settings = billing.billing.as_ref().expect("billing is on");
    assert_eq!(settings.api_url, "https://api.stripe.com");
    let options = &settings.options;
    assert_eq!(options.default_mode, aicd_core::billing::PricingMode::MergedPullRequests);
    assert_eq!((options.free_jobs_per_month, options.free_cost_micros_per_month), (None, Some(0)));
    assert_eq!(options.grace_period, Duration::from_secs(2 * 24 * 3600));
    assert_eq!(options.meters.pull_requests, "prs.opened");
    assert_eq!(options.meters.input_tokens, "aicd_input_tokens");
    // Secrets are hidden from the summary and scrubbed from messages.
    let summary = billing.summary();
    assert!(summary.contains(&("AICD_STRIPE_SECRET_KEY", "[secret]".to_owned())), "{summary:?}");
    assert!(summary.contains(&("AICD_BILLING_FREE_JOBS", "unlimited".to_owned())), "{summary:?}");
    assert!(!billing.scrub(&format!("failed with {key}")).contains(key));

    let bad = problems(&[
        ("AICD_STRIPE_SECRET_KEY", "pk_test_123"),
        ("AICD_STRIPE_WEBHOOK_SECRET", "not-a-secret"),
        ("AICD_BILLING_MODE", "per-seat"),
        ("AICD_BILLING_FREE_JOBS", "-1"),
        ("AICD_STRIPE_METER_COST", "has spaces"),
    ]);
    for name in [
        "AICD_STRIPE_SECRET_KEY must be a Stripe secret or restricted key",
        "AICD_STRIPE_WEBHOOK_SECRET must be",
        "AICD_BILLING_MODE must be",
        "AICD_BILLING_FREE_JOBS",
        "AICD_STRIPE_METER_COST must be a Stripe meter event name",
    ] {
        assert!(bad.contains(name), "{name} in {bad}");
    }
    assert!(!bad.contains("pk_test_123"), "the key is never echoed: {bad}");
}

#[test]
fn production_bills_with_live_keys_only_over_https() {
    let test_key = problems(&with(production(), &[("AICD_STRIPE_SECRET_KEY", "sk_test_51MzQ2aLkdIwHu7ix0123")]));
    assert!(test_key.contains("AICD_STRIPE_SECRET_KEY is a test-mode key; production needs a live key"), "{test_key}");
    let plain = problems(&with(
        production(),
        &[
            ("AICD_STRIPE_SECRET_KEY", "sk_live_51MzQ2aLkdIwHu7ix0123"),
            ("AICD_STRIPE_API_URL", "http://stripe.internal"),
        ],
    ));
    assert!(plain.contains("AICD_STRIPE_API_URL"), "{plain}");
    let live = config(&with(production(), &[("AICD_STRIPE_SECRET_KEY", "rk_live_51MzQ2aLkdIwHu7ix0123")])).unwrap();
    assert!(live.billing.is_some());
}
