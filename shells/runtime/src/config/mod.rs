//! Typed configuration, read once from the environment and validated as a whole: every problem is
//! reported at once, each starting with its variable's name, and secrets (URLs that may carry a
//! password, keys, shared secrets) never appear in a message, in `Debug` output or in
//! [`Config::summary`].
//!
//! [`variables`] lists every variable read, with its default and what it does.

mod billing;
mod llm;
mod reader;
mod secret;
#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use aicd_core::orchestrator::{OrchestratorConfig, StepTimeouts};

pub use billing::BillingSettings;
pub use llm::{LlmModel, LlmSettings};
pub use secret::Secret;

use reader::{Reader, shorten};
use secret::{is_placeholder_password, is_placeholder_secret, url_password};

/// Which rules apply (`AICD_ENV`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    /// The default: the embedded database, local repositories and plain HTTP are allowed.
    Development,
    /// PostgreSQL over TLS and Redis are required; local repositories, placeholder passwords and
    /// plain-HTTP public URLs are refused.
    Production,
}

impl Environment {
    /// `development` or `production`.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Development => "development",
            Environment::Production => "production",
        }
    }
}

/// Where the data lives.
#[derive(Clone, Debug)]
pub enum Database {
    /// PostgreSQL, used as the restricted application role (`DATABASE_URL`); migrations run as
    /// the owner role (`AICD_DATABASE_MIGRATION_URL`), when given.
    Postgres {
        /// The application role's URL.
        url: Secret,
        /// The schema owner's URL, for migrations.
        migration_url: Option<Secret>,
        /// Most connections the process opens (`AICD_DATABASE_POOL_SIZE`); `None`: sized from
        /// the worker's concurrency (see [`Database::pool_size`]).
        pool_size: Option<u32>,
    },
    /// The embedded default: the SQLite file `AICD_DATA_DIR`/aicd.db.
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
}

/// How workers wake each other and publish job events.
#[derive(Clone, Debug)]
pub enum Signals {
    /// Through Redis (`REDIS_URL`), shared with every process using the same namespace.
    Redis {
        /// The Redis URL.
        url: Secret,
        /// The key prefix (`AICD_REDIS_NAMESPACE`).
        namespace: String,
    },
    /// In-process only; other processes' new jobs are found by polling.
    Local,
}

/// The agent that plans, codes and reviews (`AICD_AGENT`).
#[derive(Clone, Debug)]
pub enum AgentKind {
    /// The deterministic scripted agent, each call delayed by `delay` (`AICD_SCRIPTED_AGENT_DELAY_MS`).
    Scripted {
        /// How long each call waits before answering.
        delay: Duration,
    },
    /// The LLM agent (`AICD_AGENT=llm`), with its models, limits, prices and prompts.
    Llm(Box<LlmSettings>),
}

impl AgentKind {
    /// `scripted` or `llm`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentKind::Scripted { .. } => "scripted",
            AgentKind::Llm(_) => "llm",
        }
    }
}

/// How log lines are written (`AICD_LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Sign-in through an OpenID Connect provider (`AICD_OIDC_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Oidc {
    /// The `iss` tokens must carry, exactly as the provider writes it.
    pub issuer: String,
    /// The `aud` tokens must carry.
    pub audience: String,
    /// Where the provider's signing keys are published.
    pub jwks_url: String,
}

/// The GitHub App (`AICD_GITHUB_*`).
#[derive(Clone, Debug)]
pub struct GithubSettings {
    /// The App's id; set together with `private_key`.
    pub app_id: Option<u64>,
    /// The App's private key (PEM); set together with `app_id`.
    pub private_key: Option<Secret>,
    /// The secret webhook deliveries are signed with.
    pub webhook_secret: Option<Secret>,
    /// While the webhook secret is being rotated, the old one: deliveries signed with either are
    /// accepted. Only set together with `webhook_secret`.
    pub previous_webhook_secret: Option<Secret>,
    /// The REST API's base URL, without a trailing slash.
    pub api_url: String,
    /// The App's slug (`AICD_GITHUB_APP_SLUG`): its bot user is `<slug>[bot]`, and assigning an
    /// issue to that user starts a job. Without it, assignment does not trigger.
    pub app_slug: Option<String>,
    /// The App's OAuth client (`AICD_GITHUB_CLIENT_ID`, `AICD_GITHUB_CLIENT_SECRET`), which the
    /// setup flow needs to check who installed the App; without it installations can only be
    /// linked by an operator.
    pub oauth: Option<OAuthClient>,
    /// GitHub's web address, without a trailing slash (`AICD_GITHUB_WEB_URL`).
    pub web_url: String,
    /// Where GitHub sends the browser back after authorizing the App (`AICD_GITHUB_CALLBACK_URL`:
    /// one of the App's callback URLs, the web app's setup page); `None`: this server's
    /// `/github/setup` under `AICD_PUBLIC_URL`, if that is set.
    pub callback_url: Option<String>,
}

/// The GitHub App's OAuth client.
#[derive(Clone, Debug)]
pub struct OAuthClient {
    /// Its client id.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: Secret,
}

/// How the webhook route protects itself (`AICD_WEBHOOK_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookLimits {
    /// The largest delivery accepted.
    pub max_body_bytes: usize,
    /// Deliveries read at once; past it, 503 at once.
    pub max_inflight: usize,
    /// How long a delivery's body may take to arrive.
    pub read_timeout: Duration,
    /// Deliveries with a bad signature accepted per client address per minute; past it, 429.
    pub bad_signatures_per_minute: u32,
    /// Deliveries read at once from one address outside `trusted_sources`; past it, 503.
    pub max_inflight_per_address: usize,
    /// The addresses GitHub sends deliveries from (`AICD_WEBHOOK_TRUSTED_SOURCES`; by default
    /// GitHub's published hook ranges): never turned away before their signature is checked,
    /// since every App's deliveries share them. Other addresses past the bad-signature limit are
    /// turned away before anything is read, and their slow or unreadable bodies count as bad.
    pub trusted_sources: Vec<IpRange>,
}

/// GitHub's published webhook source ranges (`hooks` of `GET https://api.github.com/meta`).
pub const GITHUB_HOOK_RANGES: &str =
    "192.30.252.0/22,185.199.108.0/22,140.82.112.0/20,143.55.64.0/20,2a0a:a440::/29,2606:50c0::/32";

/// A range of IP addresses in CIDR notation (`140.82.112.0/20`, `2606:50c0::/32`; a bare address
/// is a range of one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange {
    network: std::net::IpAddr,
    prefix: u8,
}

impl IpRange {
    /// Whether `ip` is in the range (an IPv4 address in IPv6 form counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for IpRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (address, prefix) = s.trim().split_once('/').map_or((s.trim(), None), |(a, p)| (a, Some(p)));
        let network: std::net::IpAddr = address.parse().map_err(|_| format!("`{s}` is not an IP address range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => {
                p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("`{s}` has an invalid prefix"))?
            }
        };
        Ok(Self { network, prefix })
    }
}

impl std::fmt::Display for IpRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl GithubSettings {
    /// The App's bot user (`<slug>[bot]`), when the slug is configured.
    pub fn bot_login(&self) -> Option<String> {
        self.app_slug.as_ref().map(|slug| format!("{slug}[bot]"))
    }
}

/// What only the HTTP server uses.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    /// Where the API listens (`AICD_LISTEN_ADDR`).
    pub listen_addr: SocketAddr,
    /// How long the server keeps serving after SIGTERM while `/ready` reports it draining, so a
    /// load balancer stops sending it connections before it stops accepting them
    /// (`AICD_SHUTDOWN_DRAIN_SECS`).
    pub drain_delay: Duration,
    /// Whether the server runs a worker in-process (`AICD_EMBEDDED_WORKER`; default: with SQLite).
    pub embedded_worker: bool,
    /// Whether repositories on the server's disk may be registered (`AICD_ALLOW_LOCAL_REPOS`;
    /// default: with SQLite outside production; refused in production).
    pub allow_local_repos: bool,
    /// The largest request body accepted (`AICD_MAX_BODY_BYTES`).
    pub max_body_bytes: usize,
    /// How long a request may take (`AICD_REQUEST_TIMEOUT_SECS`).
    pub request_timeout: Duration,
    /// Requests per minute per API key or user (`AICD_RATE_LIMIT_PER_MINUTE`).
    pub rate_limit_per_minute: u32,
    /// Requests per minute per client IP address (`AICD_IP_RATE_LIMIT_PER_MINUTE`).
    pub ip_rate_limit_per_minute: u32,
    /// Requests per minute to one organization's routes, all its keys and members together
    /// (`AICD_ORG_RATE_LIMIT_PER_MINUTE`).
    pub org_rate_limit_per_minute: u32,
    /// The operator's limits on every organization (`AICD_LIMIT_*`).
    pub limits: aicd_core::Limits,
    /// How long one live event stream may stay open before the server ends it; clients reconnect
    /// with `Last-Event-ID` (`AICD_STREAM_MAX_SECS`).
    pub stream_max: Duration,
    /// Origins allowed to call the API from a browser, exactly `scheme://host[:port]`
    /// (`AICD_CORS_ORIGINS`); empty means none.
    pub cors_origins: Vec<String>,
    /// The URL the server is reached at, without a trailing slash (`AICD_PUBLIC_URL`); https means
    /// HSTS is sent.
    pub public_url: Option<String>,
    /// Whether to believe `X-Forwarded-For` and `X-Forwarded-Proto` (`AICD_TRUST_FORWARDED_HEADERS`):
    /// only behind a proxy that sets them.
    pub trust_forwarded_headers: bool,
    /// Sign-in through OpenID Connect, if configured.
    pub oidc: Option<Oidc>,
    /// The GitHub App.
    pub github: GithubSettings,
    /// The webhook route's limits.
    pub webhooks: WebhookLimits,
    /// The directories local repositories must be under (`AICD_LOCAL_REPO_ROOTS`): required when
    /// local repositories are allowed; in the embedded default, the data directory (and the
    /// directories given to `serve --repo-root`, added by the binary).
    pub local_repo_roots: Vec<PathBuf>,
}

/// What only the worker (standalone or embedded) uses.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// This worker's identity in leases and logs (`AICD_WORKER_ID`; default host-pid-random).
    pub worker_id: String,
    /// Jobs run at once (`AICD_WORKER_CONCURRENCY`).
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat (`AICD_LEASE_SECS`).
    pub lease: Duration,
    /// Attempts a step gets before its job fails (`AICD_MAX_ATTEMPTS`); an attempt cut short by
    /// a crash counts.
    pub max_attempts: u32,
    /// How often an idle worker polls when no doorbell rings (`AICD_POLL_INTERVAL_MS`).
    pub poll_interval: Duration,
    /// How long each step's agent call, and each forge call of publishing, may take
    /// (`AICD_STEP_TIMEOUT_PLANNING_SECS`, `AICD_STEP_TIMEOUT_CODING_SECS`,
    /// `AICD_STEP_TIMEOUT_REVIEWING_SECS`, `AICD_FORGE_TIMEOUT_SECS`).
    pub step_timeouts: StepTimeouts,
    /// Where the standalone worker serves /health, /ready and /metrics
    /// (`AICD_WORKER_LISTEN_ADDR`; port 0 picks a free port).
    pub listen_addr: SocketAddr,
}

/// Everything a binary needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Which rules apply.
    pub environment: Environment,
    /// Where the data lives.
    pub database: Database,
    /// How processes signal each other.
    pub signals: Signals,
    /// The agent.
    pub agent: AgentKind,
    /// Worker settings.
    pub worker: WorkerSettings,
    /// Server settings.
    pub server: ServerSettings,
    /// How long running jobs get to reach a checkpoint on shutdown (`AICD_SHUTDOWN_GRACE_SECS`).
    pub shutdown_grace: Duration,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// The `RUST_LOG` directives (already checked to parse).
    pub log_filter: String,
    /// Where traces are sent over OTLP/HTTP, without a trailing slash (`OTEL_EXPORTER_OTLP_ENDPOINT`;
    /// `/v1/traces` is appended); no traces are exported when unset.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of exported traces (`OTEL_SERVICE_NAME`; default: the binary's name).
    pub service_name: Option<String>,
    /// The bearer token `/metrics` requires (`AICD_METRICS_TOKEN`); unset: `/metrics` is open
    /// (keep it off the public edge).
    pub metrics_token: Option<Secret>,
    /// Billing through Stripe (`AICD_STRIPE_*`, `AICD_BILLING_*`); `None`: billing is off.
    pub billing: Option<BillingSettings>,
}

/// Every problem found in the configuration, each starting with its variable's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problems(pub Vec<String>);

impl std::fmt::Display for Problems {
    /// One problem per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for Problems {}

/// One environment variable the configuration reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variable {
    /// Its name.
    pub name: &'static str,
    /// Its default, in words when it depends on something; empty when unset means "off".
    pub default: &'static str,
    /// Whether its value is a secret (never shown).
    pub secret: bool,
    /// What it does.
    pub description: &'static str,
}

const fn var(name: &'static str, default: &'static str, secret: bool, description: &'static str) -> Variable {
    Variable { name, default, secret, description }
}

static VARIABLES: &[Variable] = &[
    var(
        "AICD_ENV",
        "development",
        false,
        "`development` or `production`; production requires PostgreSQL over TLS and Redis, and refuses local \
         repositories, placeholder passwords and plain-HTTP public URLs",
    ),
    var(
        "DATABASE_URL",
        "",
        true,
        "PostgreSQL URL of the restricted application role (postgres://); unset: the embedded SQLite database",
    ),
    var(
        "AICD_DATABASE_MIGRATION_URL",
        "",
        true,
        "PostgreSQL URL of the schema owner, used to run migrations (needs DATABASE_URL)",
    ),
    var(
        "AICD_DATABASE_POOL_SIZE",
        "0",
        false,
        "Most PostgreSQL connections a process opens (0: the worker's concurrency plus 10, at most 128)",
    ),
    var("AICD_DATA_DIR", "./data", false, "Directory of the embedded SQLite database (aicd.db), without DATABASE_URL"),
    var("REDIS_URL", "", true, "Redis URL (redis:// or rediss://) for cross-process signals; unset: in-process only"),
    var("AICD_REDIS_NAMESPACE", "aicd:", false, "Prefix of every Redis key and channel"),
    var(
        "AICD_AGENT",
        "scripted",
        false,
        "The agent: `scripted` (deterministic, follows the issue's `aicd:` blocks) or `llm` (a language model, \
         AICD_LLM_*)",
    ),
    var("AICD_SCRIPTED_AGENT_DELAY_MS", "0", false, "Delay before each scripted agent call, in milliseconds"),
    var("AICD_LLM_PROVIDER", "", false, "The LLM's protocol: `openai` (and compatible servers) or `anthropic`"),
    var(
        "AICD_LLM_BASE_URL",
        "<the vendor's>",
        false,
        "Where the model is served (https://api.openai.com/v1, https://api.anthropic.com, or e.g. Ollama's \
         http://localhost:11434/v1)",
    ),
    var("AICD_LLM_API_KEY", "", true, "The provider's API key (may be empty only for a server on this machine)"),
    var("AICD_LLM_MODEL", "", false, "The model's name at the provider (the coder's, and the others' by default)"),
    var("AICD_LLM_PLANNER_PROVIDER", "", false, "The planner's provider, when it differs (unset: the coder's)"),
    var("AICD_LLM_PLANNER_BASE_URL", "", false, "The planner's base URL (unset: the coder's, for the same provider)"),
    var("AICD_LLM_PLANNER_API_KEY", "", true, "The planner's API key (unset: the coder's, at the same address)"),
    var("AICD_LLM_PLANNER_MODEL", "", false, "The planner's model (unset: the coder's, for the same provider)"),
    var("AICD_LLM_CRITIC_PROVIDER", "", false, "The critic's provider, when it differs (it may be another vendor)"),
    var("AICD_LLM_CRITIC_BASE_URL", "", false, "The critic's base URL (unset: the coder's, for the same provider)"),
    var("AICD_LLM_CRITIC_API_KEY", "", true, "The critic's API key (unset: the coder's, at the same address)"),
    var("AICD_LLM_CRITIC_MODEL", "", false, "The critic's model (unset: the coder's, for the same provider)"),
    var("AICD_LLM_MAX_TURNS", "30", false, "Model answers a step may take before it fails (1 to 500)"),
    var(
        "AICD_LLM_MAX_OUTPUT_TOKENS",
        "8192",
        false,
        "Most tokens per model answer, less when the budget has less left",
    ),
    var(
        "AICD_LLM_PRICES_PATH",
        "",
        false,
        "A TOML file of model prices (`[models.\"<model>\"]` input_per_mtok, output_per_mtok, \
         cached_input_per_mtok, in US dollars) extending the built-in table",
    ),
    var(
        "AICD_AGENT_PROMPTS_DIR",
        "",
        false,
        "A directory of planner.md, coder.md, critic.md (each starting `version: <name>`) replacing the built-in \
         prompts",
    ),
    var("AICD_WORKER_ID", "<host>-<pid>-<random>", false, "This worker's identity in leases and logs"),
    var("HOSTNAME", "", false, "Host name for the default worker id when the system's cannot be read"),
    var("AICD_WORKER_CONCURRENCY", "4", false, "Jobs a worker runs at once (1 to 256)"),
    var("AICD_LEASE_SECS", "30", false, "Seconds a claim lasts without a heartbeat (2 to 86400)"),
    var(
        "AICD_MAX_ATTEMPTS",
        "5",
        false,
        "Attempts a step gets before its job fails, counting attempts cut short by a crash (1 to 100)",
    ),
    var("AICD_POLL_INTERVAL_MS", "2000", false, "Milliseconds an idle worker waits for the doorbell before polling"),
    var(
        "AICD_STEP_TIMEOUT_PLANNING_SECS",
        "900",
        false,
        "Seconds the planner's call may take before it is abandoned and the step retried (1 to 86400)",
    ),
    var(
        "AICD_STEP_TIMEOUT_CODING_SECS",
        "900",
        false,
        "Seconds the coder's call may take before it is abandoned and the step retried (1 to 86400)",
    ),
    var(
        "AICD_STEP_TIMEOUT_REVIEWING_SECS",
        "900",
        false,
        "Seconds the critic's call may take before it is abandoned and the step retried (1 to 86400)",
    ),
    var(
        "AICD_FORGE_TIMEOUT_SECS",
        "120",
        false,
        "Seconds each forge call of publishing (branch, commit, pull request) may take before it is retried \
         (1 to 86400)",
    ),
    var(
        "AICD_WORKER_LISTEN_ADDR",
        "127.0.0.1:9090",
        false,
        "Where the standalone worker serves /health, /ready and /metrics (port 0: any free port)",
    ),
    var("AICD_SHUTDOWN_GRACE_SECS", "30", false, "Seconds running jobs get to reach a checkpoint on shutdown"),
    var(
        "AICD_SHUTDOWN_DRAIN_SECS",
        "0",
        false,
        "Seconds the server keeps accepting after SIGTERM while /ready answers 503 (draining), before it stops \
         accepting and finishes in-flight requests; set it above the load balancer's time to mark a replica \
         unhealthy (0 to 3600)",
    ),
    var("AICD_LOG_FORMAT", "text", false, "`text` or `json` log lines on stderr"),
    var("RUST_LOG", "info", false, "Log filter directives, such as `info,aicd_core=debug`"),
    var(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "",
        false,
        "OTLP/HTTP collector base URL (http:// or https://; /v1/traces is appended); unset: no trace export. \
         The exporter also honours OTEL_EXPORTER_OTLP_HEADERS",
    ),
    var("OTEL_SERVICE_NAME", "the binary's name", false, "service.name of exported traces"),
    var(
        "AICD_METRICS_TOKEN",
        "",
        true,
        "Bearer token /metrics requires (at least 20 random characters); unset: /metrics is open",
    ),
    var("AICD_LISTEN_ADDR", "127.0.0.1:8080", false, "Where the server's API listens"),
    var("AICD_EMBEDDED_WORKER", "true with SQLite, else false", false, "Whether the server runs a worker in-process"),
    var(
        "AICD_ALLOW_LOCAL_REPOS",
        "true with SQLite outside production, else false",
        false,
        "Whether repositories on the server's disk may be registered (refused in production)",
    ),
    var("AICD_MAX_BODY_BYTES", "1048576", false, "Largest request body accepted (1024 to 67108864)"),
    var("AICD_REQUEST_TIMEOUT_SECS", "30", false, "Seconds a request may take (1 to 3600)"),
    var("AICD_RATE_LIMIT_PER_MINUTE", "600", false, "Requests per minute per API key or user (1 to 1000000)"),
    var("AICD_IP_RATE_LIMIT_PER_MINUTE", "1200", false, "Requests per minute per client IP address (1 to 1000000)"),
    var(
        "AICD_STREAM_MAX_SECS",
        "3600",
        false,
        "Seconds a live event stream stays open before the server ends it (clients resume with Last-Event-ID; 1 to 86400)",
    ),
    var(
        "AICD_LIMIT_MAX_CONCURRENT_JOBS",
        "1000",
        false,
        "The highest concurrency limit an organization may set for itself (1 to 1000)",
    ),
    var("AICD_LIMIT_MAX_JOB_TOKENS", "20000000", false, "The largest token budget of one job (1 to 10^12)"),
    var(
        "AICD_LIMIT_MAX_JOB_COST_MICROS",
        "200000000",
        false,
        "The largest cost budget of one job, in micro-units of currency (1 to 10^12)",
    ),
    var(
        "AICD_LIMIT_MAX_QUEUED_JOBS",
        "10000",
        false,
        "QUEUED jobs an organization may have; creating one through the API beyond it is refused (1 to 10^9)",
    ),
    var(
        "AICD_LIMIT_MAX_ORGS_PER_USER",
        "20",
        false,
        "Organizations a user may administer when creating another (1 to 100000)",
    ),
    var(
        "AICD_ORG_RATE_LIMIT_PER_MINUTE",
        "3000",
        false,
        "Requests per minute to one organization's routes, all its keys and members together (1 to 1000000)",
    ),
    var(
        "AICD_CORS_ORIGINS",
        "",
        false,
        "Comma-separated browser origins allowed to call the API, exactly scheme://host[:port]; `*` is refused",
    ),
    var("AICD_PUBLIC_URL", "", false, "The URL the server is reached at; https means HSTS is sent"),
    var(
        "AICD_TRUST_FORWARDED_HEADERS",
        "false",
        false,
        "Believe X-Forwarded-For and X-Forwarded-Proto (only behind a proxy that sets them)",
    ),
    var("AICD_OIDC_ISSUER", "", false, "OpenID Connect issuer for sign-in (with AICD_OIDC_AUDIENCE)"),
    var("AICD_OIDC_AUDIENCE", "", false, "Audience tokens must carry (with AICD_OIDC_ISSUER)"),
    var("AICD_OIDC_JWKS_URL", "<issuer>/.well-known/jwks.json", false, "Where the issuer's signing keys are"),
    var("AICD_GITHUB_APP_ID", "", false, "The GitHub App's id (with its private key)"),
    var(
        "AICD_GITHUB_PRIVATE_KEY",
        "",
        true,
        "The GitHub App's private key, PEM text (`\\n` escapes allowed); or use AICD_GITHUB_PRIVATE_KEY_PATH",
    ),
    var("AICD_GITHUB_PRIVATE_KEY_PATH", "", false, "File holding the GitHub App's private key (PEM)"),
    var(
        "AICD_GITHUB_WEBHOOK_SECRET",
        "",
        true,
        "Secret GitHub signs webhook deliveries with (at least 20 random characters)",
    ),
    var(
        "AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS",
        "",
        true,
        "While rotating the webhook secret: the old one, still accepted beside AICD_GITHUB_WEBHOOK_SECRET",
    ),
    var("AICD_GITHUB_API_URL", "https://api.github.com", false, "GitHub REST API base URL (GitHub Enterprise Server)"),
    var(
        "AICD_GITHUB_APP_SLUG",
        "",
        false,
        "The App's slug (as in its URL); assigning an issue to `<slug>[bot]` starts a job, and the install link \
         points at the App's page",
    ),
    var(
        "AICD_GITHUB_CLIENT_ID",
        "",
        false,
        "The App's OAuth client id (with its secret): linking an installation needs it to check the installer",
    ),
    var(
        "AICD_GITHUB_CLIENT_SECRET",
        "",
        true,
        "The App's OAuth client secret (with AICD_GITHUB_CLIENT_ID); also signs install states",
    ),
    var(
        "AICD_GITHUB_WEB_URL",
        "https://github.com",
        false,
        "GitHub's web address (install pages, OAuth); `https://<host>` for GitHub Enterprise Server",
    ),
    var(
        "AICD_GITHUB_CALLBACK_URL",
        "",
        false,
        "The App's callback URL GitHub returns to after authorizing (the web app's setup page); default \
         `<AICD_PUBLIC_URL>/github/setup`",
    ),
    var(
        "AICD_WEBHOOK_MAX_BODY_BYTES",
        "5242880",
        false,
        "Largest webhook delivery accepted (1024 to 26214400, GitHub's cap)",
    ),
    var("AICD_WEBHOOK_MAX_INFLIGHT", "32", false, "Webhook deliveries read at once; past it, 503 at once (1 to 10000)"),
    var(
        "AICD_WEBHOOK_READ_TIMEOUT_SECS",
        "10",
        false,
        "Seconds a webhook delivery's body may take to arrive (1 to 300)",
    ),
    var(
        "AICD_WEBHOOK_BAD_SIGNATURES_PER_MINUTE",
        "20",
        false,
        "Deliveries with a bad signature accepted per client address per minute; past it, 429 (1 to 1000000)",
    ),
    var(
        "AICD_WEBHOOK_MAX_INFLIGHT_PER_ADDRESS",
        "4",
        false,
        "Deliveries read at once from one address outside the trusted sources; past it, 503 (1 to 10000)",
    ),
    var(
        "AICD_WEBHOOK_TRUSTED_SOURCES",
        GITHUB_HOOK_RANGES,
        false,
        "Comma-separated address ranges GitHub sends deliveries from (GitHub's `hooks` ranges by default; set \
         your GitHub Enterprise Server's): never turned away before their signature is checked",
    ),
    var(
        "AICD_STRIPE_SECRET_KEY",
        "",
        true,
        "Stripe API key (sk_live_/rk_live_; sk_test_/rk_test_ outside production); unset: billing is off, nothing \
         is metered or refused for payment",
    ),
    var(
        "AICD_STRIPE_WEBHOOK_SECRET",
        "",
        true,
        "Signing secret of the Stripe webhook endpoint /webhooks/stripe (whsec_...); unset: that route answers 503",
    ),
    var(
        "AICD_STRIPE_WEBHOOK_SECRET_PREVIOUS",
        "",
        true,
        "While rolling the Stripe webhook secret: the old one, still accepted beside AICD_STRIPE_WEBHOOK_SECRET",
    ),
    var("AICD_STRIPE_API_URL", "https://api.stripe.com", false, "Stripe API base URL (tests and proxies)"),
    var("AICD_STRIPE_METER_INPUT_TOKENS", "aicd_input_tokens", false, "Stripe meter event name of input tokens"),
    var("AICD_STRIPE_METER_OUTPUT_TOKENS", "aicd_output_tokens", false, "Stripe meter event name of output tokens"),
    var("AICD_STRIPE_METER_COST", "aicd_cost_micros", false, "Stripe meter event name of agent cost (micro-units)"),
    var("AICD_STRIPE_METER_PRS", "aicd_pull_requests", false, "Stripe meter event name of pull requests opened"),
    var(
        "AICD_STRIPE_METER_MERGED_PRS",
        "aicd_merged_pull_requests",
        false,
        "Stripe meter event name of pull requests merged",
    ),
    var(
        "AICD_BILLING_MODE",
        "tokens",
        false,
        "Pricing mode of a new billing account: tokens, cost, pull_requests or merged_pull_requests",
    ),
    var(
        "AICD_BILLING_FREE_JOBS",
        "20",
        false,
        "Jobs an organization without an active subscription may create per month (UTC), or `unlimited`",
    ),
    var(
        "AICD_BILLING_FREE_COST_MICROS",
        "5000000",
        false,
        "Agent cost (micro-units) an organization without an active subscription may spend per month, or `unlimited`",
    ),
    var("AICD_BILLING_GRACE_DAYS", "7", false, "Days new jobs are still accepted after a failed payment (0 to 365)"),
    var(
        "AICD_BILLING_MAX_MONTHLY_COST_MICROS",
        "",
        false,
        "The highest monthly spend cap (micro-units) of every organization; an org admin may set a lower one",
    ),
    var("AICD_BILLING_PORTAL_RETURN_URL", "AICD_PUBLIC_URL", false, "Where Stripe's customer portal returns to"),
    var(
        "AICD_LOCAL_REPO_ROOTS",
        "the data directory with SQLite",
        false,
        "Comma-separated directories local repositories must be under (required when they are allowed); \
         `aicd-server serve --repo-root DIR` adds one",
    ),
];

/// Every environment variable the configuration reads, in the order of the documentation.
pub fn variables() -> &'static [Variable] {
    VARIABLES
}

const MAX_CONCURRENCY: u64 = 256;
const MAX_WORKER_ID_CHARS: usize = 128;
/// Upper bounds that keep durations far from overflow in the arithmetic done on them.
const MAX_SECS: u64 = 24 * 60 * 60;
const MAX_MILLIS: u64 = MAX_SECS * 1000;
const TLS_SSLMODES: &[&str] = &["require", "verify-ca", "verify-full"];

impl Config {
    /// Reads the process environment; on failure returns every problem. Empty values count as
    /// unset.
    pub fn from_env() -> Result<Self, Problems> {
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Reads the variables through `lookup` (for tests, or another source than the process
    /// environment); empty or blank values count as unset. On failure returns every problem.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Problems> {
        let mut r = Reader::new(&lookup);
        let environment = match r.get("AICD_ENV").map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                r.problem(format!("AICD_ENV must be `development` or `production` (got `{}`)", shorten(other)));
                Environment::Development
            }
        };
        let production = environment == Environment::Production;
        let database = read_database(&mut r, production);
        let signals = read_signals(&mut r, production);
        let agent = match r.get("AICD_AGENT").as_deref().map(str::trim) {
            None | Some("scripted") => {
                let delay = r.number("AICD_SCRIPTED_AGENT_DELAY_MS", 0, 0, MAX_MILLIS, "milliseconds");
                AgentKind::Scripted { delay: Duration::from_millis(delay) }
            }
            Some("llm") => match llm::read(&mut r) {
                Some(settings) => AgentKind::Llm(Box::new(settings)),
                None => AgentKind::Scripted { delay: Duration::ZERO },
            },
            Some(other) => {
                r.problem(format!("AICD_AGENT must be `scripted` or `llm` (got `{}`)", shorten(other)));
                AgentKind::Scripted { delay: Duration::ZERO }
            }
        };
        let worker = read_worker(&mut r);
        let server = read_server(&mut r, production, &database);
        let shutdown_grace = r.number("AICD_SHUTDOWN_GRACE_SECS", 30, 0, MAX_SECS, "seconds");
        let log_format = match r.get("AICD_LOG_FORMAT").map(|f| f.trim().to_ascii_lowercase()).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => {
                r.problem("AICD_LOG_FORMAT must be `text` or `json`");
                LogFormat::Text
            }
        };
        let log_filter = r.get("RUST_LOG").unwrap_or_else(|| "info".into());
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&log_filter) {
            r.problem(format!("RUST_LOG is not a valid filter: {e}"));
        }
        let otlp_endpoint =
            r.http_url("OTEL_EXPORTER_OTLP_ENDPOINT", false, "").map(|url| url.trim_end_matches('/').to_owned());
        let service_name = r.get("OTEL_SERVICE_NAME").map(|name| name.trim().to_owned());
        if service_name.as_ref().is_some_and(|n| n.chars().count() > 200 || n.chars().any(char::is_control)) {
            r.problem("OTEL_SERVICE_NAME must be at most 200 characters without control characters");
        }
        let metrics_token = r.get("AICD_METRICS_TOKEN").map(|token| token.trim().to_owned());
        if let Some(token) = &metrics_token {
            if token.chars().count() < 20 {
                r.problem("AICD_METRICS_TOKEN must be at least 20 characters (try `openssl rand -hex 32`)");
            } else if is_placeholder_secret(token) {
                r.problem("AICD_METRICS_TOKEN is a placeholder; generate a random one (`openssl rand -hex 32`)");
            }
        }
        let billing = billing::read(&mut r, production);
        if !r.problems.is_empty() {
            return Err(Problems(r.problems));
        }
        Ok(Self {
            environment,
            database,
            signals,
            agent,
            worker,
            server,
            shutdown_grace: Duration::from_secs(shutdown_grace),
            log_format,
            log_filter,
            otlp_endpoint,
            service_name,
            metrics_token: metrics_token.map(Secret::new),
            billing,
        })
    }

    /// Every environment variable the configuration reads (the same list as [`variables`]).
    pub fn variables() -> &'static [Variable] {
        VARIABLES
    }

    /// The orchestrator's settings: the worker's, heartbeats every third of the lease, and the
    /// orchestrator's defaults for the rest.
    pub fn orchestrator(&self) -> OrchestratorConfig {
        let w = &self.worker;
        OrchestratorConfig {
            worker_id: w.worker_id.clone(),
            concurrency: w.concurrency,
            lease: w.lease,
            max_attempts: w.max_attempts,
            heartbeat_every: w.lease / 3,
            poll_interval: w.poll_interval,
            step_timeouts: w.step_timeouts,
            ..OrchestratorConfig::default()
        }
    }

    /// `text` with every secret of the configuration (and the passwords inside secret URLs)
    /// replaced by `[REDACTED]`.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in self.secrets() {
            text = secret.scrub(&text);
        }
        text
    }

    fn secrets(&self) -> Vec<&Secret> {
        let mut secrets = Vec::new();
        if let Database::Postgres { url, migration_url, .. } = &self.database {
            secrets.push(url);
            secrets.extend(migration_url);
        }
        if let Signals::Redis { url, .. } = &self.signals {
            secrets.push(url);
        }
        let github = &self.server.github;
        secrets.extend(&github.private_key);
        secrets.extend(&github.webhook_secret);
        secrets.extend(&github.previous_webhook_secret);
        secrets.extend(&self.metrics_token);
        secrets.extend(github.oauth.as_ref().map(|o| &o.client_secret));
        if let AgentKind::Llm(llm) = &self.agent {
            secrets.extend(llm.secrets());
        }
        if let Some(billing) = &self.billing {
            secrets.extend(billing.secrets());
        }
        secrets
    }

    /// Each variable in effect (set, or defaulted) with its effective value, in the order of
    /// [`variables`]; secrets show as `[secret]`. Variables that are unset and off are left out; a
    /// GitHub App key read from `AICD_GITHUB_PRIVATE_KEY_PATH` shows as `AICD_GITHUB_PRIVATE_KEY`.
    pub fn summary(&self) -> Vec<(&'static str, String)> {
        VARIABLES
            .iter()
            .filter_map(|v| {
                let value = self.effective(v.name)?;
                Some((v.name, if v.secret { "[secret]".to_owned() } else { value }))
            })
            .collect()
    }

    /// The effective value behind a variable, if it is in effect.
    fn effective(&self, name: &str) -> Option<String> {
        let (w, s) = (&self.worker, &self.server);
        let postgres = match &self.database {
            Database::Postgres { migration_url, .. } => Some(migration_url),
            Database::Sqlite { .. } => None,
        };
        let redis_namespace = match &self.signals {
            Signals::Redis { namespace, .. } => Some(namespace.clone()),
            Signals::Local => None,
        };
        if let AgentKind::Llm(llm) = &self.agent
            && (name.starts_with("AICD_LLM_") || name == "AICD_AGENT_PROMPTS_DIR")
        {
            return llm.effective(name);
        }
        if name.starts_with("AICD_STRIPE_") || name.starts_with("AICD_BILLING_") {
            return self.billing.as_ref()?.effective(name);
        }
        let oidc = s.oidc.as_ref();
        let github = &s.github;
        Some(match name {
            "AICD_ENV" => self.environment.as_str().to_owned(),
            "DATABASE_URL" => postgres.map(|_| String::new())?,
            "AICD_DATABASE_MIGRATION_URL" => postgres?.as_ref().map(|_| String::new())?,
            "AICD_DATABASE_POOL_SIZE" => match &self.database {
                Database::Postgres { .. } => self.database.pool_size(self.worker.concurrency).to_string(),
                Database::Sqlite { .. } => return None,
            },
            "AICD_DATA_DIR" => match &self.database {
                Database::Sqlite { path } => path.parent().map(|p| p.display().to_string()).unwrap_or_default(),
                Database::Postgres { .. } => return None,
            },
            "REDIS_URL" => redis_namespace.as_ref().map(|_| String::new())?,
            "AICD_REDIS_NAMESPACE" => redis_namespace?,
            "AICD_AGENT" => self.agent.as_str().to_owned(),
            "AICD_SCRIPTED_AGENT_DELAY_MS" => match self.agent {
                AgentKind::Scripted { delay } => delay.as_millis().to_string(),
                AgentKind::Llm(_) => return None,
            },
            "AICD_WORKER_ID" => w.worker_id.clone(),
            "AICD_WORKER_CONCURRENCY" => w.concurrency.to_string(),
            "AICD_LEASE_SECS" => w.lease.as_secs().to_string(),
            "AICD_MAX_ATTEMPTS" => w.max_attempts.to_string(),
            "AICD_POLL_INTERVAL_MS" => w.poll_interval.as_millis().to_string(),
            "AICD_STEP_TIMEOUT_PLANNING_SECS" => w.step_timeouts.planning.as_secs().to_string(),
            "AICD_STEP_TIMEOUT_CODING_SECS" => w.step_timeouts.coding.as_secs().to_string(),
            "AICD_STEP_TIMEOUT_REVIEWING_SECS" => w.step_timeouts.reviewing.as_secs().to_string(),
            "AICD_FORGE_TIMEOUT_SECS" => w.step_timeouts.forge.as_secs().to_string(),
            "AICD_WORKER_LISTEN_ADDR" => w.listen_addr.to_string(),
            "AICD_SHUTDOWN_GRACE_SECS" => self.shutdown_grace.as_secs().to_string(),
            "AICD_SHUTDOWN_DRAIN_SECS" => s.drain_delay.as_secs().to_string(),
            "AICD_LOG_FORMAT" => match self.log_format {
                LogFormat::Text => "text".to_owned(),
                LogFormat::Json => "json".to_owned(),
            },
            "RUST_LOG" => self.log_filter.clone(),
            "OTEL_EXPORTER_OTLP_ENDPOINT" => self.otlp_endpoint.clone()?,
            "OTEL_SERVICE_NAME" => self.service_name.clone()?,
            "AICD_METRICS_TOKEN" => self.metrics_token.as_ref().map(|_| String::new())?,
            "AICD_LISTEN_ADDR" => s.listen_addr.to_string(),
            "AICD_EMBEDDED_WORKER" => s.embedded_worker.to_string(),
            "AICD_ALLOW_LOCAL_REPOS" => s.allow_local_repos.to_string(),
            "AICD_MAX_BODY_BYTES" => s.max_body_bytes.to_string(),
            "AICD_REQUEST_TIMEOUT_SECS" => s.request_timeout.as_secs().to_string(),
            "AICD_RATE_LIMIT_PER_MINUTE" => s.rate_limit_per_minute.to_string(),
            "AICD_IP_RATE_LIMIT_PER_MINUTE" => s.ip_rate_limit_per_minute.to_string(),
            "AICD_ORG_RATE_LIMIT_PER_MINUTE" => s.org_rate_limit_per_minute.to_string(),
            "AICD_STREAM_MAX_SECS" => s.stream_max.as_secs().to_string(),
            "AICD_LIMIT_MAX_CONCURRENT_JOBS" => s.limits.max_concurrent_jobs.to_string(),
            "AICD_LIMIT_MAX_JOB_TOKENS" => s.limits.max_job_tokens.to_string(),
            "AICD_LIMIT_MAX_JOB_COST_MICROS" => s.limits.max_job_cost_micros.to_string(),
            "AICD_LIMIT_MAX_QUEUED_JOBS" => s.limits.max_queued_jobs.to_string(),
            "AICD_LIMIT_MAX_ORGS_PER_USER" => s.limits.max_orgs_per_user.to_string(),
            "AICD_CORS_ORIGINS" if !s.cors_origins.is_empty() => s.cors_origins.join(","),
            "AICD_PUBLIC_URL" => s.public_url.clone()?,
            "AICD_TRUST_FORWARDED_HEADERS" => s.trust_forwarded_headers.to_string(),
            "AICD_OIDC_ISSUER" => oidc?.issuer.clone(),
            "AICD_OIDC_AUDIENCE" => oidc?.audience.clone(),
            "AICD_OIDC_JWKS_URL" => oidc?.jwks_url.clone(),
            "AICD_GITHUB_APP_ID" => github.app_id?.to_string(),
            "AICD_GITHUB_PRIVATE_KEY" => github.private_key.as_ref().map(|_| String::new())?,
            "AICD_GITHUB_WEBHOOK_SECRET" => github.webhook_secret.as_ref().map(|_| String::new())?,
            "AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS" => github.previous_webhook_secret.as_ref().map(|_| String::new())?,
            "AICD_GITHUB_API_URL" => github.api_url.clone(),
            "AICD_GITHUB_APP_SLUG" => github.app_slug.clone()?,
            "AICD_GITHUB_CLIENT_ID" => github.oauth.as_ref()?.client_id.clone(),
            "AICD_GITHUB_CLIENT_SECRET" => github.oauth.as_ref().map(|_| String::new())?,
            "AICD_GITHUB_WEB_URL" => github.web_url.clone(),
            "AICD_GITHUB_CALLBACK_URL" => github.callback_url.clone()?,
            "AICD_WEBHOOK_MAX_BODY_BYTES" => s.webhooks.max_body_bytes.to_string(),
            "AICD_WEBHOOK_MAX_INFLIGHT" => s.webhooks.max_inflight.to_string(),
            "AICD_WEBHOOK_READ_TIMEOUT_SECS" => s.webhooks.read_timeout.as_secs().to_string(),
            "AICD_WEBHOOK_BAD_SIGNATURES_PER_MINUTE" => s.webhooks.bad_signatures_per_minute.to_string(),
            "AICD_WEBHOOK_MAX_INFLIGHT_PER_ADDRESS" => s.webhooks.max_inflight_per_address.to_string(),
            "AICD_WEBHOOK_TRUSTED_SOURCES" => {
                s.webhooks.trusted_sources.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
            }
            "AICD_LOCAL_REPO_ROOTS" if !s.local_repo_roots.is_empty() => {
                s.local_repo_roots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(",")
            }
            _ => return None,
        })
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The value of query parameter `key` in `url`, if present.
fn query_param<'u>(url: &'u str, keys: &[&str]) -> Option<&'u str> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| keys.contains(k)).map(|(_, v)| v)
}

impl Database {
    /// The PostgreSQL pool's size: `AICD_DATABASE_POOL_SIZE`, or room for `concurrency` jobs
    /// plus ten connections for the API, the reaper and the rest (at most 128). SQLite keeps
    /// one connection.
    pub fn pool_size(&self, concurrency: usize) -> u32 {
        match self {
            Database::Postgres { pool_size: Some(n), .. } => *n,
            Database::Postgres { pool_size: None, .. } => {
                u32::try_from(concurrency.saturating_add(10)).unwrap_or(u32::MAX).min(128)
            }
            Database::Sqlite { .. } => 1,
        }
    }
}

fn read_database(r: &mut Reader<'_>, production: bool) -> Database {
    let migration_url = r.get("AICD_DATABASE_MIGRATION_URL").map(|u| u.trim().to_owned());
    let Some(url) = r.get("DATABASE_URL").map(|u| u.trim().to_owned()) else {
        if production {
            r.problem(
                "DATABASE_URL is required when AICD_ENV=production (the embedded SQLite database is for \
                 development)",
            );
        }
        if migration_url.is_some() {
            r.problem("AICD_DATABASE_MIGRATION_URL needs DATABASE_URL (the embedded SQLite database migrates itself)");
        }
        let dir = r.get("AICD_DATA_DIR").unwrap_or_else(|| "./data".into());
        if dir.contains('\u{FFFD}') {
            r.problem("AICD_DATA_DIR must be valid UTF-8");
        }
        return Database::Sqlite { path: PathBuf::from(dir).join("aicd.db") };
    };
    if !is_postgres_url(&url) {
        r.problem(
            "DATABASE_URL must be a postgres:// URL for the application role \
             (leave it unset for the embedded SQLite database)",
        );
    } else if production {
        let sslmode = query_param(&url, &["sslmode", "ssl-mode"]).map(str::to_ascii_lowercase);
        if !sslmode.as_deref().is_some_and(|mode| TLS_SSLMODES.contains(&mode)) {
            r.problem(
                "DATABASE_URL must request TLS when AICD_ENV=production: add sslmode=require (or verify-ca, \
                 verify-full) to its query",
            );
        }
        if url_password(&url).is_some_and(|p| is_placeholder_password(&secret::percent_decode(p))) {
            r.problem("DATABASE_URL has a placeholder password; use a real one when AICD_ENV=production");
        }
    }
    if migration_url.as_deref().is_some_and(|u| !is_postgres_url(u)) {
        r.problem("AICD_DATABASE_MIGRATION_URL must be a postgres:// URL for the schema owner");
    }
    let pool_size = match r.number("AICD_DATABASE_POOL_SIZE", 0, 0, 512, "connections") {
        0 => None,
        n => Some(u32::try_from(n).unwrap_or(512)),
    };
    Database::Postgres { url: Secret::new(url), migration_url: migration_url.map(Secret::new), pool_size }
}

fn read_signals(r: &mut Reader<'_>, production: bool) -> Signals {
    let Some(url) = r.get("REDIS_URL").map(|u| u.trim().to_owned()) else {
        if production {
            r.problem("REDIS_URL is required when AICD_ENV=production (workers in other processes need its signals)");
        }
        return Signals::Local;
    };
    if !["redis://", "rediss://", "redis+unix://", "unix://"].iter().any(|s| url.starts_with(s)) {
        r.problem("REDIS_URL must be a redis:// or rediss:// URL (leave it unset for in-process signals)");
    } else if production && url_password(&url).is_some_and(|p| is_placeholder_password(&secret::percent_decode(p))) {
        r.problem("REDIS_URL has a placeholder password; use a real one when AICD_ENV=production");
    }
    let namespace = r.get("AICD_REDIS_NAMESPACE").unwrap_or_else(|| "aicd:".into());
    if namespace.chars().any(char::is_whitespace) || namespace.len() > 100 {
        r.problem("AICD_REDIS_NAMESPACE must be at most 100 characters without whitespace");
    }
    Signals::Redis { url: Secret::new(url), namespace }
}

fn read_worker(r: &mut Reader<'_>) -> WorkerSettings {
    let worker_id = match r.get("AICD_WORKER_ID") {
        Some(id) => {
            let id = id.trim().to_owned();
            if id.chars().count() > MAX_WORKER_ID_CHARS || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
                r.problem(format!(
                    "AICD_WORKER_ID must be 1 to {MAX_WORKER_ID_CHARS} characters without spaces or control characters"
                ));
            }
            id
        }
        None => default_worker_id(r),
    };
    let concurrency = r.number("AICD_WORKER_CONCURRENCY", 4, 1, MAX_CONCURRENCY, "jobs");
    let lease = r.number("AICD_LEASE_SECS", 30, 2, MAX_SECS, "seconds");
    let max_attempts = r.number("AICD_MAX_ATTEMPTS", 5, 1, 100, "attempts");
    let poll_interval = r.number("AICD_POLL_INTERVAL_MS", 2000, 10, MAX_MILLIS, "milliseconds");
    let step_timeouts = read_step_timeouts(r);
    let listen_addr = r.socket_addr("AICD_WORKER_LISTEN_ADDR", SocketAddr::from((Ipv4Addr::LOCALHOST, 9090)));
    WorkerSettings {
        worker_id,
        concurrency: usize::try_from(concurrency).unwrap_or(1),
        lease: Duration::from_secs(lease),
        max_attempts: u32::try_from(max_attempts).unwrap_or(5),
        poll_interval: Duration::from_millis(poll_interval),
        step_timeouts,
        listen_addr,
    }
}

/// The step timeouts, each 1 s to a day, defaulting to the orchestrator's.
fn read_step_timeouts(r: &mut Reader<'_>) -> StepTimeouts {
    let defaults = StepTimeouts::default();
    let mut secs =
        |name: &str, default: Duration| Duration::from_secs(r.number(name, default.as_secs(), 1, MAX_SECS, "seconds"));
    StepTimeouts {
        planning: secs("AICD_STEP_TIMEOUT_PLANNING_SECS", defaults.planning),
        coding: secs("AICD_STEP_TIMEOUT_CODING_SECS", defaults.coding),
        reviewing: secs("AICD_STEP_TIMEOUT_REVIEWING_SECS", defaults.reviewing),
        forge: secs("AICD_FORGE_TIMEOUT_SECS", defaults.forge),
    }
}

fn read_server(r: &mut Reader<'_>, production: bool, database: &Database) -> ServerSettings {
    let sqlite = matches!(database, Database::Sqlite { .. });
    let listen_addr = r.socket_addr("AICD_LISTEN_ADDR", SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)));
    let drain_delay = r.number("AICD_SHUTDOWN_DRAIN_SECS", 0, 0, 3600, "seconds");
    let embedded_worker = r.boolean("AICD_EMBEDDED_WORKER", sqlite);
    let allow_local_repos = r.boolean("AICD_ALLOW_LOCAL_REPOS", sqlite && !production);
    if production && allow_local_repos {
        r.problem(
            "AICD_ALLOW_LOCAL_REPOS cannot be true when AICD_ENV=production (it exposes the server's disk to \
             every organization)",
        );
    }
    let max_body_bytes = r.number("AICD_MAX_BODY_BYTES", 1_048_576, 1024, 67_108_864, "bytes");
    let request_timeout = r.number("AICD_REQUEST_TIMEOUT_SECS", 30, 1, 3600, "seconds");
    let rate_limit = r.number("AICD_RATE_LIMIT_PER_MINUTE", 600, 1, 1_000_000, "requests");
    let ip_rate_limit = r.number("AICD_IP_RATE_LIMIT_PER_MINUTE", 1200, 1, 1_000_000, "requests");
    let org_rate_limit = r.number("AICD_ORG_RATE_LIMIT_PER_MINUTE", 3000, 1, 1_000_000, "requests");
    let stream_max = r.number("AICD_STREAM_MAX_SECS", 3600, 1, 86_400, "seconds");
    let defaults = aicd_core::Limits::default();
    let limits = aicd_core::Limits {
        max_concurrent_jobs: u32::try_from(r.number("AICD_LIMIT_MAX_CONCURRENT_JOBS", 1000, 1, 1000, "jobs"))
            .unwrap_or(defaults.max_concurrent_jobs),
        max_job_tokens: r.number("AICD_LIMIT_MAX_JOB_TOKENS", defaults.max_job_tokens, 1, 1_000_000_000_000, "tokens"),
        max_job_cost_micros: r.number(
            "AICD_LIMIT_MAX_JOB_COST_MICROS",
            defaults.max_job_cost_micros,
            1,
            1_000_000_000_000,
            "micro-units",
        ),
        max_queued_jobs: r.number("AICD_LIMIT_MAX_QUEUED_JOBS", defaults.max_queued_jobs, 1, 1_000_000_000, "jobs"),
        max_orgs_per_user: u32::try_from(r.number("AICD_LIMIT_MAX_ORGS_PER_USER", 20, 1, 100_000, "organizations"))
            .unwrap_or(defaults.max_orgs_per_user),
    };
    let cors_origins = read_cors_origins(r, production);
    let public_url = r
        .http_url("AICD_PUBLIC_URL", production, "when AICD_ENV=production")
        .map(|url| url.trim_end_matches('/').to_owned());
    if public_url.as_deref().is_some_and(|u| u.contains(['?', '#'])) {
        r.problem("AICD_PUBLIC_URL must not have a query or fragment");
    }
    let trust_forwarded_headers = r.boolean("AICD_TRUST_FORWARDED_HEADERS", false);
    let oidc = read_oidc(r, production);
    let github = read_github(r);
    let webhooks = read_webhook_limits(r);
    // Production refuses local repositories outright (above); their roots are then moot.
    let local_repo_roots = read_local_repo_roots(r, allow_local_repos && !production, database);
    ServerSettings {
        listen_addr,
        drain_delay: Duration::from_secs(drain_delay),
        embedded_worker,
        allow_local_repos,
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(1_048_576),
        request_timeout: Duration::from_secs(request_timeout),
        rate_limit_per_minute: u32::try_from(rate_limit).unwrap_or(600),
        ip_rate_limit_per_minute: u32::try_from(ip_rate_limit).unwrap_or(1200),
        org_rate_limit_per_minute: u32::try_from(org_rate_limit).unwrap_or(3000),
        limits,
        stream_max: Duration::from_secs(stream_max),
        cors_origins,
        public_url,
        trust_forwarded_headers,
        oidc,
        github,
        webhooks,
        local_repo_roots,
    }
}

fn read_webhook_limits(r: &mut Reader<'_>) -> WebhookLimits {
    let max_body_bytes = r.number("AICD_WEBHOOK_MAX_BODY_BYTES", 5 * 1024 * 1024, 1024, 25 * 1024 * 1024, "bytes");
    let max_inflight = r.number("AICD_WEBHOOK_MAX_INFLIGHT", 32, 1, 10_000, "deliveries");
    let read_timeout = r.number("AICD_WEBHOOK_READ_TIMEOUT_SECS", 10, 1, 300, "seconds");
    let bad_signatures = r.number("AICD_WEBHOOK_BAD_SIGNATURES_PER_MINUTE", 20, 1, 1_000_000, "deliveries");
    let per_address = r.number("AICD_WEBHOOK_MAX_INFLIGHT_PER_ADDRESS", 4, 1, 10_000, "deliveries");
    let sources = r.get("AICD_WEBHOOK_TRUSTED_SOURCES").unwrap_or_else(|| GITHUB_HOOK_RANGES.to_owned());
    let mut trusted_sources = Vec::new();
    for range in sources.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match range.parse::<IpRange>() {
            Ok(range) => trusted_sources.push(range),
            Err(why) => {
                r.problem(format!("AICD_WEBHOOK_TRUSTED_SOURCES: {why} (use CIDR ranges like 140.82.112.0/20)"))
            }
        }
    }
    WebhookLimits {
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(5 * 1024 * 1024),
        max_inflight: usize::try_from(max_inflight).unwrap_or(32),
        read_timeout: Duration::from_secs(read_timeout),
        bad_signatures_per_minute: u32::try_from(bad_signatures).unwrap_or(20),
        max_inflight_per_address: usize::try_from(per_address).unwrap_or(4),
        trusted_sources,
    }
}

/// `AICD_LOCAL_REPO_ROOTS`: absolute directories without `..`. Required when local repositories
/// are allowed, except in the embedded default, whose data directory is the default root.
fn read_local_repo_roots(r: &mut Reader<'_>, allowed: bool, database: &Database) -> Vec<PathBuf> {
    const NAME: &str = "AICD_LOCAL_REPO_ROOTS";
    let Some(raw) = r.get(NAME) else {
        return match database {
            Database::Sqlite { path } if allowed => {
                let dir = path.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
                vec![std::path::absolute(&dir).unwrap_or(dir)]
            }
            _ if allowed => {
                r.problem(format!(
                    "{NAME} is required when local repositories are allowed (AICD_ALLOW_LOCAL_REPOS): the \
                     directories repositories may be registered under"
                ));
                Vec::new()
            }
            _ => Vec::new(),
        };
    };
    let mut roots = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let path = PathBuf::from(item);
        if !path.is_absolute() || path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            r.problem(format!("{NAME} must list absolute directories without `..` (got `{}`)", shorten(item)));
        } else if path == std::path::Path::new("/") {
            r.problem(format!("{NAME} must not be `/` (it would expose the whole disk)"));
        } else if !roots.contains(&path) {
            roots.push(path);
        }
    }
    roots
}

/// `scheme://host[:port]`, lowercased, a trailing `/` dropped; anything else is a problem.
fn read_cors_origins(r: &mut Reader<'_>, production: bool) -> Vec<String> {
    const NAME: &str = "AICD_CORS_ORIGINS";
    let Some(raw) = r.get(NAME) else { return Vec::new() };
    let mut origins: Vec<String> = Vec::new();
    for item in raw.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if item == "*" {
            r.problem(format!("{NAME} must list exact origins: `*` (any origin) is refused"));
            continue;
        }
        let origin = item.strip_suffix('/').unwrap_or(item).to_ascii_lowercase();
        let valid = is_origin(&origin);
        if !valid {
            r.problem(format!(
                "{NAME} must be comma-separated origins like https://app.example.com or http://localhost:3000, \
                 without a path (got `{}`)",
                shorten(item)
            ));
        } else if production && !origin.starts_with("https://") {
            r.problem(format!("{NAME} must use https:// origins when AICD_ENV=production (got `{}`)", shorten(item)));
        } else if !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    origins
}

/// Whether `origin` is exactly `http(s)://host[:port]` (host a name, an IPv4 address or a
/// bracketed IPv6 address).
fn is_origin(origin: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else { return false };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => ("ipv6", None),
            _ => match after.strip_prefix(':') {
                Some(port) => ("ipv6", Some(port)),
                None => return false,
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    (scheme == "http" || scheme == "https")
        && !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
}

fn read_oidc(r: &mut Reader<'_>, production: bool) -> Option<Oidc> {
    const WHY: &str = "when AICD_ENV=production";
    let issuer_set = r.get("AICD_OIDC_ISSUER").is_some();
    let issuer = r.http_url("AICD_OIDC_ISSUER", production, WHY);
    let audience = r.get("AICD_OIDC_AUDIENCE").map(|a| a.trim().to_owned());
    let jwks_set = r.get("AICD_OIDC_JWKS_URL").is_some();
    let jwks_url = r.http_url("AICD_OIDC_JWKS_URL", false, "");
    match (issuer_set, audience.is_some()) {
        (true, false) => r.problem("AICD_OIDC_AUDIENCE is required when AICD_OIDC_ISSUER is set"),
        (false, true) => r.problem("AICD_OIDC_ISSUER is required when AICD_OIDC_AUDIENCE is set"),
        (false, false) if jwks_set => {
            r.problem("AICD_OIDC_JWKS_URL needs AICD_OIDC_ISSUER and AICD_OIDC_AUDIENCE");
        }
        _ => {}
    }
    let (issuer, audience) = (issuer?, audience?);
    let jwks_url = match jwks_url {
        Some(url) => url,
        None if jwks_set => return None,
        None => format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
    };
    Some(Oidc { issuer, audience, jwks_url })
}

fn read_github(r: &mut Reader<'_>) -> GithubSettings {
    let app_id = r.get("AICD_GITHUB_APP_ID").and_then(|raw| match raw.trim().parse::<u64>() {
        Ok(id) if id > 0 => Some(id),
        _ => {
            r.problem(format!("AICD_GITHUB_APP_ID must be a positive whole number (got `{}`)", shorten(&raw)));
            None
        }
    });
    let app_id_set = r.get("AICD_GITHUB_APP_ID").is_some();
    let inline = r.get("AICD_GITHUB_PRIVATE_KEY");
    let path = r.get("AICD_GITHUB_PRIVATE_KEY_PATH").map(|p| p.trim().to_owned());
    let (key, key_var) = match (inline, path) {
        (Some(_), Some(_)) => {
            r.problem("AICD_GITHUB_PRIVATE_KEY and AICD_GITHUB_PRIVATE_KEY_PATH are both set; set only one");
            (None, "AICD_GITHUB_PRIVATE_KEY")
        }
        (Some(pem), None) => (Some(pem.replace("\\n", "\n")), "AICD_GITHUB_PRIVATE_KEY"),
        (None, Some(path)) => match std::fs::read_to_string(&path) {
            Ok(pem) => (Some(pem), "AICD_GITHUB_PRIVATE_KEY_PATH"),
            Err(e) => {
                r.problem(format!("AICD_GITHUB_PRIVATE_KEY_PATH cannot be read ({}): {e}", shorten(&path)));
                (None, "AICD_GITHUB_PRIVATE_KEY_PATH")
            }
        },
        (None, None) => (None, ""),
    };
    let key = key.map(|pem| pem.trim().to_owned());
    if key.as_deref().is_some_and(|pem| !pem.starts_with("-----BEGIN")) {
        r.problem(format!("{key_var} must be a PEM private key (starting with -----BEGIN)"));
    }
    let key_given = !key_var.is_empty();
    match (app_id_set, key_given) {
        (true, false) => r.problem(
            "AICD_GITHUB_PRIVATE_KEY (or AICD_GITHUB_PRIVATE_KEY_PATH) is required when AICD_GITHUB_APP_ID is set",
        ),
        (false, true) => r.problem(format!("AICD_GITHUB_APP_ID is required when {key_var} is set")),
        _ => {}
    }
    let mut webhook_secret = |var: &str| {
        let secret = r.get(var).map(|s| s.trim().to_owned());
        if let Some(secret) = &secret {
            if secret.chars().count() < 20 {
                r.problem(format!("{var} must be at least 20 characters (try `openssl rand -hex 32`)"));
            } else if is_placeholder_secret(secret) {
                r.problem(format!("{var} is a placeholder; generate a random one (`openssl rand -hex 32`)"));
            }
        }
        secret
    };
    let (webhook_secret, previous_webhook_secret) =
        (webhook_secret("AICD_GITHUB_WEBHOOK_SECRET"), webhook_secret("AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS"));
    if previous_webhook_secret.is_some() && webhook_secret.is_none() {
        r.problem(
            "AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS is only accepted beside AICD_GITHUB_WEBHOOK_SECRET (the new one)",
        );
    }
    let api_url = r
        .http_url("AICD_GITHUB_API_URL", false, "")
        .map_or_else(|| "https://api.github.com".to_owned(), |url| url.trim_end_matches('/').to_owned());
    let app_slug = r.get("AICD_GITHUB_APP_SLUG").map(|s| s.trim().to_ascii_lowercase());
    if let Some(slug) = &app_slug
        && (slug.is_empty()
            || slug.len() > 100
            || !slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            || slug.starts_with('-'))
    {
        r.problem(format!(
            "AICD_GITHUB_APP_SLUG must be the App's slug: letters, digits and `-` (got `{}`)",
            shorten(slug)
        ));
    }
    let client_id = r.get("AICD_GITHUB_CLIENT_ID").map(|id| id.trim().to_owned());
    let client_secret = r.get("AICD_GITHUB_CLIENT_SECRET").map(|secret| secret.trim().to_owned());
    if client_id.as_ref().is_some_and(|id| id.len() > 100 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'))
    {
        r.problem("AICD_GITHUB_CLIENT_ID must be the App's client id (letters, digits and `.`)");
    }
    if client_secret.as_ref().is_some_and(|secret| secret.chars().count() < 20) {
        r.problem("AICD_GITHUB_CLIENT_SECRET must be the App's client secret (at least 20 characters)");
    }
    let oauth = match (client_id, client_secret) {
        (Some(client_id), Some(secret)) => Some(OAuthClient { client_id, client_secret: Secret::new(secret) }),
        (Some(_), None) => {
            r.problem("AICD_GITHUB_CLIENT_SECRET is required when AICD_GITHUB_CLIENT_ID is set");
            None
        }
        (None, Some(_)) => {
            r.problem("AICD_GITHUB_CLIENT_ID is required when AICD_GITHUB_CLIENT_SECRET is set");
            None
        }
        (None, None) => None,
    };
    let web_url = r
        .http_url("AICD_GITHUB_WEB_URL", false, "")
        .map_or_else(|| "https://github.com".to_owned(), |url| url.trim_end_matches('/').to_owned());
    let callback_url = r.http_url("AICD_GITHUB_CALLBACK_URL", false, "");
    if callback_url.as_deref().is_some_and(|u| u.contains('#')) {
        r.problem("AICD_GITHUB_CALLBACK_URL must not have a fragment (`#`)");
    }
    GithubSettings {
        app_id,
        private_key: key.map(Secret::new),
        webhook_secret: webhook_secret.map(Secret::new),
        previous_webhook_secret: previous_webhook_secret.map(Secret::new),
        api_url,
        app_slug,
        oauth,
        web_url,
        callback_url,
    }
}

/// `<hostname or "worker">-<pid>-<random>`: unique per process, and recognisable in the lease
/// column and the logs.
fn default_worker_id(r: &Reader<'_>) -> String {
    let host = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .or_else(|| r.get("HOSTNAME"))
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c)).take(63).collect())
        .filter(|h: &String| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}
