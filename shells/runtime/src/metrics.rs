//! Prometheus metrics of the HTTP API, webhooks, the queue and the orchestrator's steps, in one
//! registry rendered as OpenMetrics text.
//!
//! Label values are bounded: methods and steps come from fixed sets, and free-form values (routes,
//! webhook events and outcomes, rate-limit scopes) are cut to a safe alphabet and length and capped
//! in number, so a stream of odd requests cannot grow the registry without end.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aicd_core::jobs::JobState;
use aicd_core::orchestrator::{RunningJobs, StepObserver, StepOutcome, StepReport};
use aicd_core::store::{PoolStats, QueueStats};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of what [`Metrics::render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How many distinct values a free-form label may take; later ones are counted as `other`.
const MAX_VALUES_PER_LABEL: usize = 100;
/// The longest free-form label value kept.
const MAX_LABEL_CHARS: usize = 80;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    event: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepOutcomeLabels {
    step: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    step: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgTokenLabels {
    org_id: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgLabels {
    org_id: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn http_histogram() -> Histogram {
    Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

fn step_histogram() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0])
}

struct Inner {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    rate_limited: Family<ScopeLabels, Counter>,
    webhooks: Family<WebhookLabels, Counter>,
    queued: Gauge,
    steps: Family<StepOutcomeLabels, Counter>,
    step_duration: HistogramFamily<StepLabels>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<StepLabels, Counter>,
    step_timeouts: Family<StepLabels, Counter>,
    org_tokens: Family<OrgTokenLabels, Counter>,
    org_cost: Family<OrgLabels, Counter>,
    jobs: Family<StateLabels, Gauge>,
    oldest_wait: Gauge<f64, AtomicU64>,
    lease_expired: Gauge,
    pool: Family<StateLabels, Gauge>,
    pool_max: Gauge,
    worker_slots: Gauge,
    worker_running: Gauge,
    /// The worker whose running jobs are sampled at each render, with its slots.
    worker: Mutex<Option<(usize, RunningJobs)>>,
    /// When the queue's gauges were last refreshed (or a refresh began).
    queue_refreshed: Mutex<Option<std::time::Instant>>,
    /// The free-form label values seen so far, per label.
    seen: Mutex<HashMap<&'static str, HashSet<String>>>,
}

/// The scopes of the rate limits, present at zero from the start.
const RATE_LIMIT_SCOPES: &[&str] = &["ip", "api_key", "user", "org"];

/// The active states, as `aicd_jobs{state}` labels them.
const ACTIVE_STATES: [JobState; 4] = [JobState::Queued, JobState::Planning, JobState::Coding, JobState::Reviewing];

/// The process's metrics. Cheap to clone; clones share the registry.
///
/// Exposed series: `aicd_http_requests_total{method,route,status}`,
/// `aicd_http_request_duration_seconds{method,route}`, `aicd_rate_limited_total{scope}`,
/// `aicd_webhook_deliveries_total{event,outcome}`, `aicd_jobs_queued`,
/// `aicd_job_steps_total{step,outcome}`, `aicd_job_step_duration_seconds{step}`,
/// `aicd_agent_tokens_total{step,direction}`, `aicd_agent_cost_micros_total{step}`,
/// `aicd_org_agent_tokens_total{org_id,direction}`, `aicd_org_agent_cost_micros_total{org_id}`
/// (at most 100 orgs by id, later ones as `other`), `aicd_step_timeouts_total{step}` (present at
/// zero for every step from the start), the queue gauges `aicd_jobs{state}` (the active states),
/// `aicd_queue_oldest_age_seconds` and `aicd_jobs_lease_expired` (set by
/// [`Metrics::set_queue_stats`]), the pool gauges `aicd_db_pool_connections{state}` (`idle`,
/// `in_use`) and `aicd_db_pool_max_connections` ([`Metrics::set_pool_stats`]), the worker gauges
/// `aicd_worker_slots` and `aicd_worker_jobs_running` ([`Metrics::track_worker`]; zero in a
/// process without a worker) and `aicd_build_info{version}`. Steps are `planning`, `coding`,
/// `reviewing` and `publishing`.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered and at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = HistogramFamily::<RouteLabels>::new_with_constructor(http_histogram);
        let rate_limited = Family::<ScopeLabels, Counter>::default();
        let webhooks = Family::<WebhookLabels, Counter>::default();
        let queued = Gauge::default();
        let steps = Family::<StepOutcomeLabels, Counter>::default();
        let step_duration = HistogramFamily::<StepLabels>::new_with_constructor(step_histogram);
        let tokens = Family::<TokenLabels, Counter>::default();
        let cost = Family::<StepLabels, Counter>::default();
        let step_timeouts = Family::<StepLabels, Counter>::default();
        // Every series with a fixed set of labels is present at zero from the start, so a rate or
        // an alert over it has data before the first event (and a scrape shows every family).
        for step in [JobState::Planning, JobState::Coding, JobState::Reviewing, JobState::PrOpen] {
            let labels = StepLabels { step: step_label(step) };
            step_timeouts.get_or_create(&labels).inc_by(0);
            drop(step_duration.get_or_create(&labels));
            for outcome in StepOutcome::ALL {
                let labels = StepOutcomeLabels { step: step_label(step), outcome: outcome.as_str().to_owned() };
                steps.get_or_create(&labels).inc_by(0);
            }
            if step != JobState::PrOpen {
                cost.get_or_create(&labels).inc_by(0);
                for direction in ["input", "output"] {
                    tokens
                        .get_or_create(&TokenLabels { step: step_label(step), direction: direction.to_owned() })
                        .inc_by(0);
                }
            }
        }
        for scope in RATE_LIMIT_SCOPES {
            rate_limited.get_or_create(&ScopeLabels { scope: (*scope).to_owned() }).inc_by(0);
        }
        let org_tokens = Family::<OrgTokenLabels, Counter>::default();
        let org_cost = Family::<OrgLabels, Counter>::default();
        let jobs = Family::<StateLabels, Gauge>::default();
        for state in ACTIVE_STATES {
            jobs.get_or_create(&StateLabels { state: state.as_str().to_owned() }).set(0);
        }
        let oldest_wait = Gauge::<f64, AtomicU64>::default();
        let lease_expired = Gauge::default();
        let pool = Family::<StateLabels, Gauge>::default();
        for state in ["idle", "in_use"] {
            pool.get_or_create(&StateLabels { state: state.to_owned() }).set(0);
        }
        let pool_max = Gauge::default();
        let worker_slots = Gauge::default();
        let worker_running = Gauge::default();
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION").to_owned() }).set(1);

        registry.register("aicd_http_requests", "HTTP requests answered", http_requests.clone());
        registry.register(
            "aicd_http_request_duration_seconds",
            "Time to answer HTTP requests, in seconds",
            http_duration.clone(),
        );
        registry.register("aicd_rate_limited", "Requests refused by a rate limit", rate_limited.clone());
        registry.register("aicd_webhook_deliveries", "Webhook deliveries received", webhooks.clone());
        registry.register("aicd_jobs_queued", "Jobs waiting in QUEUED, across organizations", queued.clone());
        registry.register("aicd_job_steps", "Attempts at job steps, by how they ended", steps.clone());
        registry.register(
            "aicd_job_step_duration_seconds",
            "Time taken by attempts at job steps, in seconds",
            step_duration.clone(),
        );
        registry.register("aicd_agent_tokens", "Tokens used by agent calls", tokens.clone());
        registry.register("aicd_agent_cost_micros", "Cost of agent calls, in micro-units of currency", cost.clone());
        registry.register(
            "aicd_step_timeouts",
            "Agent and forge calls abandoned after their step's timeout",
            step_timeouts.clone(),
        );
        registry.register("aicd_org_agent_tokens", "Tokens used by agent calls, per organization", org_tokens.clone());
        registry.register(
            "aicd_org_agent_cost_micros",
            "Cost of agent calls per organization, in micro-units of currency",
            org_cost.clone(),
        );
        registry.register("aicd_jobs", "Active jobs across organizations, by state", jobs.clone());
        registry.register(
            "aicd_queue_oldest_age_seconds",
            "How long the longest-waiting runnable QUEUED job has waited, in seconds",
            oldest_wait.clone(),
        );
        registry.register(
            "aicd_jobs_lease_expired",
            "Jobs still held under an expired lease (their worker died or stalled)",
            lease_expired.clone(),
        );
        registry.register("aicd_db_pool_connections", "Open database connections, by state", pool.clone());
        registry.register(
            "aicd_db_pool_max_connections",
            "The most database connections the pool opens",
            pool_max.clone(),
        );
        registry.register("aicd_worker_slots", "Jobs this process's worker may run at once", worker_slots.clone());
        registry.register("aicd_worker_jobs_running", "Jobs this process's worker is running", worker_running.clone());
        registry.register("aicd_build_info", "The running version (always 1)", build_info);
        let inner = Inner {
            registry,
            http_requests,
            http_duration,
            rate_limited,
            webhooks,
            queued,
            steps,
            step_duration,
            tokens,
            cost,
            step_timeouts,
            org_tokens,
            org_cost,
            jobs,
            oldest_wait,
            lease_expired,
            pool,
            pool_max,
            worker_slots,
            worker_running,
            worker: Mutex::default(),
            queue_refreshed: Mutex::default(),
            seen: Mutex::default(),
        };
        Self { inner: Arc::new(inner) }
    }

    /// Counts an answered HTTP request and its duration. `route` must be the matched route
    /// template (`/v1/orgs/{org}/jobs`), never the raw URI; `unmatched` for requests that matched
    /// no route.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = bounded_method(method);
        let route = self.bounded("route", route);
        let labels = HttpLabels { method: method.clone(), route: route.clone(), status: status.to_string() };
        self.inner.http_requests.get_or_create(&labels).inc();
        self.inner.http_duration.get_or_create(&RouteLabels { method, route }).observe(elapsed.as_secs_f64());
    }

    /// Counts a request refused by the rate limit of `scope` (`key`, `user`, `ip`, ...).
    pub fn rate_limited(&self, scope: &str) {
        let scope = self.bounded("scope", scope);
        self.inner.rate_limited.get_or_create(&ScopeLabels { scope }).inc();
    }

    /// Counts a webhook delivery of `event` (`issues`, `ping`, ...) that ended with `outcome`
    /// (`processed`, `duplicate`, `ignored`, `rejected`, ...).
    pub fn webhook(&self, event: &str, outcome: &str) {
        let labels = WebhookLabels { event: self.bounded("event", event), outcome: self.bounded("outcome", outcome) };
        self.inner.webhooks.get_or_create(&labels).inc();
    }

    /// Sets the number of QUEUED jobs.
    pub fn set_queue_depth(&self, n: u64) {
        self.inner.queued.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the queue gauges: `aicd_jobs_queued`, `aicd_jobs{state}`,
    /// `aicd_queue_oldest_age_seconds` and `aicd_jobs_lease_expired`.
    pub fn set_queue_stats(&self, stats: &QueueStats) {
        let inner = &self.inner;
        self.set_queue_depth(stats.queued);
        for (state, n) in ACTIVE_STATES.into_iter().zip([stats.queued, stats.planning, stats.coding, stats.reviewing]) {
            inner.jobs.get_or_create(&StateLabels { state: state.as_str().to_owned() }).set(gauge_value(n));
        }
        inner.oldest_wait.set(stats.oldest_wait.as_secs_f64());
        inner.lease_expired.set(gauge_value(stats.expired_leases));
    }

    /// Whether the queue's gauges are older than `ttl`; if so, they count as refreshed from now
    /// on, so of concurrent callers only one is told to refresh them.
    pub fn queue_refresh_due(&self, ttl: Duration) -> bool {
        let Ok(mut last) = self.inner.queue_refreshed.lock() else { return true };
        if last.is_some_and(|at| at.elapsed() < ttl) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }

    /// Sets the database pool gauges.
    pub fn set_pool_stats(&self, stats: PoolStats) {
        let inner = &self.inner;
        for (state, n) in [("idle", stats.idle), ("in_use", stats.in_use())] {
            inner.pool.get_or_create(&StateLabels { state: state.to_owned() }).set(i64::from(n));
        }
        inner.pool_max.set(i64::from(stats.max));
    }

    /// Reports this process's worker in `aicd_worker_slots` (`slots`) and
    /// `aicd_worker_jobs_running` (`running`, read at every render).
    pub fn track_worker(&self, slots: usize, running: RunningJobs) {
        self.inner.worker_slots.set(gauge_value(slots));
        if let Ok(mut worker) = self.inner.worker.lock() {
            *worker = Some((slots, running));
        }
    }

    /// Every metric, as OpenMetrics text (of type [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        if let Ok(worker) = self.inner.worker.lock()
            && let Some((_, running)) = worker.as_ref()
        {
            self.inner.worker_running.set(gauge_value(running.get()));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry) {
            tracing::warn!(error = %e, "could not render the metrics");
        }
        out
    }

    /// `value` cut to a safe alphabet and length, or `other` once `label` has taken too many
    /// distinct values.
    fn bounded(&self, label: &'static str, value: &str) -> String {
        let value: String = value
            .chars()
            .take(MAX_LABEL_CHARS)
            .map(|c| if c.is_ascii_alphanumeric() || "/{}_-.:*".contains(c) { c } else { '_' })
            .collect();
        let value = if value.is_empty() { "none".to_owned() } else { value };
        let Ok(mut seen) = self.inner.seen.lock() else { return "other".to_owned() };
        let values = seen.entry(label).or_default();
        if values.contains(&value) {
            value
        } else if values.len() < MAX_VALUES_PER_LABEL {
            values.insert(value.clone());
            value
        } else {
            "other".to_owned()
        }
    }
}

/// `n` as a gauge's value (saturating).
fn gauge_value(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

fn bounded_method(method: &str) -> String {
    const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    let upper = method.to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) { upper } else { "OTHER".to_owned() }
}

/// The `step` label: `planning`, `coding`, `reviewing`, and `publishing` for the step that leads
/// to PR_OPEN.
fn step_label(step: JobState) -> String {
    match step {
        JobState::PrOpen => "publishing".to_owned(),
        other => other.as_str().to_owned(),
    }
}

impl StepObserver for Metrics {
    fn step_finished(&self, report: &StepReport<'_>) {
        let step = step_label(report.step);
        let inner = &self.inner;
        inner
            .steps
            .get_or_create(&StepOutcomeLabels { step: step.clone(), outcome: report.outcome.as_str().to_owned() })
            .inc();
        inner.step_duration.get_or_create(&StepLabels { step: step.clone() }).observe(report.elapsed.as_secs_f64());
        if let Some(usage) = report.usage {
            let org_id = self.bounded("org_id", &report.org.to_string());
            for (direction, n) in [("input", usage.input_tokens), ("output", usage.output_tokens)] {
                let labels = TokenLabels { step: step.clone(), direction: direction.to_owned() };
                inner.tokens.get_or_create(&labels).inc_by(n);
                let labels = OrgTokenLabels { org_id: org_id.clone(), direction: direction.to_owned() };
                inner.org_tokens.get_or_create(&labels).inc_by(n);
            }
            inner.cost.get_or_create(&StepLabels { step }).inc_by(usage.cost_micros);
            inner.org_cost.get_or_create(&OrgLabels { org_id }).inc_by(usage.cost_micros);
        }
    }

    fn step_timed_out(&self, step: JobState, _limit: Duration) {
        self.inner.step_timeouts.get_or_create(&StepLabels { step: step_label(step) }).inc();
    }
}

#[cfg(test)]
mod tests {
    use aicd_agent_api::Usage;
    use aicd_core::{JobId, OrgId};

    use super::*;

    /// An attempt at `step` of a job of `org`.
    fn step(m: &Metrics, org: OrgId, step: JobState, outcome: StepOutcome, elapsed: Duration, usage: Option<&Usage>) {
        m.step_finished(&StepReport { org, job: JobId::new(), step, outcome, elapsed, usage });
    }

    /// The value of the sample whose line starts with `prefix`.
    fn sample(text: &str, prefix: &str) -> Option<f64> {
        text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
    }

    #[test]
    fn a_fresh_registry_renders_the_gauges_and_ends_with_eof() {
        let text = Metrics::new().render();
        assert!(text.contains("# TYPE aicd_jobs_queued gauge"), "{text}");
        assert_eq!(sample(&text, "aicd_jobs_queued "), Some(0.0), "{text}");
        assert!(text.contains(&format!("aicd_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
        assert_eq!(sample(&text, r#"aicd_step_timeouts_total{step="coding"}"#), Some(0.0), "{text}");
        assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
        assert!(CONTENT_TYPE.starts_with("application/openmetrics-text"));
    }

    #[test]
    fn every_metric_is_rendered_once_used() {
        let m = Metrics::new();
        m.http_request("GET", "/health", 200, Duration::ZERO);
        m.rate_limited("ip");
        m.webhook("ping", "processed");
        let usage = Usage { input_tokens: 1, output_tokens: 1, cost_micros: 1, model: "scripted".into() };
        step(&m, OrgId::new(), JobState::Coding, StepOutcome::Succeeded, Duration::ZERO, Some(&usage));
        let text = m.render();
        for (name, kind) in [
            ("aicd_http_requests", "counter"),
            ("aicd_http_request_duration_seconds", "histogram"),
            ("aicd_rate_limited", "counter"),
            ("aicd_webhook_deliveries", "counter"),
            ("aicd_jobs_queued", "gauge"),
            ("aicd_job_steps", "counter"),
            ("aicd_job_step_duration_seconds", "histogram"),
            ("aicd_agent_tokens", "counter"),
            ("aicd_agent_cost_micros", "counter"),
            ("aicd_step_timeouts", "counter"),
            ("aicd_org_agent_tokens", "counter"),
            ("aicd_org_agent_cost_micros", "counter"),
            ("aicd_jobs", "gauge"),
            ("aicd_queue_oldest_age_seconds", "gauge"),
            ("aicd_jobs_lease_expired", "gauge"),
            ("aicd_db_pool_connections", "gauge"),
            ("aicd_db_pool_max_connections", "gauge"),
            ("aicd_worker_slots", "gauge"),
            ("aicd_worker_jobs_running", "gauge"),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}")), "{name} missing:\n{text}");
        }
    }

    #[test]
    fn http_requests_webhooks_rate_limits_and_the_queue_are_counted() {
        let m = Metrics::new();
        m.http_request("get", "/v1/orgs/{org}/jobs", 200, Duration::from_millis(30));
        m.http_request("GET", "/v1/orgs/{org}/jobs", 200, Duration::from_millis(10));
        m.http_request("BREW", "/v1/orgs/{org}/jobs", 418, Duration::from_millis(1));
        m.rate_limited("key");
        m.webhook("issues", "processed");
        m.set_queue_depth(7);
        let clone = m.clone();
        clone.webhook("issues", "processed");
        let text = m.render();
        let ok = r#"aicd_http_requests_total{method="GET",route="/v1/orgs/{org}/jobs",status="200"}"#;
        assert_eq!(sample(&text, ok), Some(2.0), "{text}");
        assert!(text.contains(r#"method="OTHER""#), "{text}");
        let count = r#"aicd_http_request_duration_seconds_count{method="GET",route="/v1/orgs/{org}/jobs"}"#;
        assert_eq!(sample(&text, count), Some(2.0), "{text}");
        assert_eq!(sample(&text, r#"aicd_rate_limited_total{scope="key"}"#), Some(1.0), "{text}");
        let webhooks = r#"aicd_webhook_deliveries_total{event="issues",outcome="processed"}"#;
        assert_eq!(sample(&text, webhooks), Some(2.0), "clones share the registry:\n{text}");
        assert_eq!(sample(&text, "aicd_jobs_queued "), Some(7.0), "{text}");
    }

    #[test]
    fn free_form_labels_are_bounded() {
        let m = Metrics::new();
        for n in 0..(MAX_VALUES_PER_LABEL + 50) {
            m.webhook(&format!("event{n}"), "processed");
        }
        m.rate_limited("a\"b\n{c}");
        m.http_request("GET", &"/x".repeat(500), 200, Duration::ZERO);
        let text = m.render();
        let events = text.lines().filter(|l| l.starts_with("aicd_webhook_deliveries_total{")).count();
        assert_eq!(events, MAX_VALUES_PER_LABEL + 1, "the rest are counted as other");
        assert_eq!(sample(&text, r#"aicd_webhook_deliveries_total{event="other",outcome="processed"}"#), Some(50.0));
        assert!(text.contains(r#"scope="a_b_{c}""#), "{text}");
        assert!(text.lines().all(|l| l.len() < 400), "label values are cut short");
    }

    #[test]
    fn steps_durations_tokens_and_cost_come_from_the_observer() {
        let m = Metrics::new();
        let usage = Usage { input_tokens: 100, output_tokens: 20, cost_micros: 3000, model: "scripted".into() };
        let (acme, other) = (OrgId::new(), OrgId::new());
        step(&m, acme, JobState::Planning, StepOutcome::Succeeded, Duration::from_millis(200), Some(&usage));
        step(&m, acme, JobState::Coding, StepOutcome::Retrying, Duration::from_secs(2), None);
        step(&m, acme, JobState::PrOpen, StepOutcome::Succeeded, Duration::from_secs(1), None);
        step(&m, other, JobState::Coding, StepOutcome::Succeeded, Duration::from_secs(1), Some(&usage));
        step(&m, acme, JobState::Reviewing, StepOutcome::Succeeded, Duration::from_secs(1), Some(&usage));
        let text = m.render();
        let planned = r#"aicd_job_steps_total{step="planning",outcome="succeeded"}"#;
        assert_eq!(sample(&text, planned), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"aicd_job_steps_total{step="coding",outcome="retrying"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"aicd_job_steps_total{step="publishing",outcome="succeeded"}"#), Some(1.0));
        let input = r#"aicd_agent_tokens_total{step="planning",direction="input"}"#;
        assert_eq!(sample(&text, input), Some(100.0), "{text}");
        assert_eq!(sample(&text, r#"aicd_agent_tokens_total{step="planning",direction="output"}"#), Some(20.0));
        assert_eq!(sample(&text, r#"aicd_agent_cost_micros_total{step="planning"}"#), Some(3000.0));
        assert_eq!(sample(&text, r#"aicd_job_step_duration_seconds_sum{step="coding"}"#), Some(3.0), "{text}");
        let acme_input = format!(r#"aicd_org_agent_tokens_total{{org_id="{acme}",direction="input"}}"#);
        assert_eq!(sample(&text, &acme_input), Some(200.0), "per org, across steps:\n{text}");
        let other_output = format!(r#"aicd_org_agent_tokens_total{{org_id="{other}",direction="output"}}"#);
        assert_eq!(sample(&text, &other_output), Some(20.0), "{text}");
        assert_eq!(sample(&text, &format!(r#"aicd_org_agent_cost_micros_total{{org_id="{acme}"}}"#)), Some(6000.0));
    }

    #[test]
    fn a_queue_refresh_is_due_once_per_ttl() {
        let m = Metrics::new();
        assert!(m.queue_refresh_due(Duration::from_secs(60)), "never refreshed");
        assert!(!m.queue_refresh_due(Duration::from_secs(60)), "the first caller refreshes; the others reuse");
        assert!(m.clone().queue_refresh_due(Duration::ZERO), "stale after the TTL");
    }

    #[test]
    fn the_queue_pool_and_worker_gauges_show_what_they_were_given() {
        let m = Metrics::new();
        let text = m.render();
        for state in ["queued", "planning", "coding", "reviewing"] {
            assert_eq!(sample(&text, &format!(r#"aicd_jobs{{state="{state}"}}"#)), Some(0.0), "{text}");
        }
        let mut stats = QueueStats::default();
        (stats.queued, stats.planning, stats.coding, stats.reviewing, stats.expired_leases) = (7, 3, 2, 1, 1);
        stats.oldest_wait = Duration::from_millis(2500);
        m.set_queue_stats(&stats);
        m.set_pool_stats(PoolStats { open: 6, idle: 2, max: 20 });
        let running = RunningJobs::default();
        m.track_worker(8, running.clone());
        let text = m.render();
        assert_eq!(sample(&text, "aicd_jobs_queued "), Some(7.0), "{text}");
        for (state, n) in [("queued", 7.0), ("planning", 3.0), ("coding", 2.0), ("reviewing", 1.0)] {
            assert_eq!(sample(&text, &format!(r#"aicd_jobs{{state="{state}"}}"#)), Some(n), "{text}");
        }
        assert_eq!(sample(&text, "aicd_queue_oldest_age_seconds "), Some(2.5), "{text}");
        assert_eq!(sample(&text, "aicd_jobs_lease_expired "), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"aicd_db_pool_connections{state="idle"}"#), Some(2.0), "{text}");
        assert_eq!(sample(&text, r#"aicd_db_pool_connections{state="in_use"}"#), Some(4.0), "{text}");
        assert_eq!(sample(&text, "aicd_db_pool_max_connections "), Some(20.0), "{text}");
        assert_eq!(sample(&text, "aicd_worker_slots "), Some(8.0), "{text}");
        assert_eq!(sample(&text, "aicd_worker_jobs_running "), Some(0.0), "{text}");
    }

    #[test]
    fn step_timeouts_are_counted_per_step() {
        let m = Metrics::new();
        m.step_timed_out(JobState::Coding, Duration::from_secs(900));
        m.step_timed_out(JobState::Coding, Duration::from_secs(900));
        m.step_timed_out(JobState::PrOpen, Duration::from_secs(120));
        let text = m.render();
        assert_eq!(sample(&text, r#"aicd_step_timeouts_total{step="coding"}"#), Some(2.0), "{text}");
        assert_eq!(sample(&text, r#"aicd_step_timeouts_total{step="publishing"}"#), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"aicd_step_timeouts_total{step="planning"}"#), Some(0.0), "{text}");
    }
}
