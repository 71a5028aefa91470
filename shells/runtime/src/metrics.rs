//! Prometheus metrics of the HTTP API, webhooks, the queue and the orchestrator's steps, in one
//! registry rendered as OpenMetrics text.
//!
//! Label values are bounded: methods and steps come from fixed sets, and free-form values (routes,
//! webhook events and outcomes, rate-limit scopes) are cut to a safe alphabet and length and capped
//! in number, so a stream of odd requests cannot grow the registry without end.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aicd_agent_api::Usage;
use aicd_core::jobs::JobState;
use aicd_core::orchestrator::{StepObserver, StepOutcome};
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
    /// The free-form label values seen so far, per label.
    seen: Mutex<HashMap<&'static str, HashSet<String>>>,
}

/// The process's metrics. Cheap to clone; clones share the registry.
///
/// Exposed series: `aicd_http_requests_total{method,route,status}`,
/// `aicd_http_request_duration_seconds{method,route}`, `aicd_rate_limited_total{scope}`,
/// `aicd_webhook_deliveries_total{event,outcome}`, `aicd_jobs_queued`,
/// `aicd_job_steps_total{step,outcome}`, `aicd_job_step_duration_seconds{step}`,
/// `aicd_agent_tokens_total{step,direction}`, `aicd_agent_cost_micros_total{step}`,
/// `aicd_step_timeouts_total{step}` (present at zero for every step from the start) and
/// `aicd_build_info{version}`. Steps are `planning`, `coding`, `reviewing` and `publishing`.
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
        for step in [JobState::Planning, JobState::Coding, JobState::Reviewing, JobState::PrOpen] {
            step_timeouts.get_or_create(&StepLabels { step: step_label(step) }).inc_by(0);
        }
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

    /// Every metric, as OpenMetrics text (of type [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
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
    fn step_finished(&self, step: JobState, outcome: StepOutcome, elapsed: Duration, usage: Option<&Usage>) {
        let step = step_label(step);
        let inner = &self.inner;
        inner
            .steps
            .get_or_create(&StepOutcomeLabels { step: step.clone(), outcome: outcome.as_str().to_owned() })
            .inc();
        inner.step_duration.get_or_create(&StepLabels { step: step.clone() }).observe(elapsed.as_secs_f64());
        if let Some(usage) = usage {
            for (direction, n) in [("input", usage.input_tokens), ("output", usage.output_tokens)] {
                let labels = TokenLabels { step: step.clone(), direction: direction.to_owned() };
                inner.tokens.get_or_create(&labels).inc_by(n);
            }
            inner.cost.get_or_create(&StepLabels { step }).inc_by(usage.cost_micros);
        }
    }

    fn step_timed_out(&self, step: JobState, _limit: Duration) {
        self.inner.step_timeouts.get_or_create(&StepLabels { step: step_label(step) }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        m.step_finished(JobState::Coding, StepOutcome::Succeeded, Duration::ZERO, Some(&usage));
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
        m.step_finished(JobState::Planning, StepOutcome::Succeeded, Duration::from_millis(200), Some(&usage));
        m.step_finished(JobState::Coding, StepOutcome::Retrying, Duration::from_secs(2), None);
        m.step_finished(JobState::PrOpen, StepOutcome::Succeeded, Duration::from_secs(1), None);
        let text = m.render();
        let planned = r#"aicd_job_steps_total{step="planning",outcome="succeeded"}"#;
        assert_eq!(sample(&text, planned), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"aicd_job_steps_total{step="coding",outcome="retrying"}"#), Some(1.0));
        assert_eq!(sample(&text, r#"aicd_job_steps_total{step="publishing",outcome="succeeded"}"#), Some(1.0));
        let input = r#"aicd_agent_tokens_total{step="planning",direction="input"}"#;
        assert_eq!(sample(&text, input), Some(100.0), "{text}");
        assert_eq!(sample(&text, r#"aicd_agent_tokens_total{step="planning",direction="output"}"#), Some(20.0));
        assert_eq!(sample(&text, r#"aicd_agent_cost_micros_total{step="planning"}"#), Some(3000.0));
        assert_eq!(sample(&text, r#"aicd_job_step_duration_seconds_sum{step="coding"}"#), Some(2.0), "{text}");
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
