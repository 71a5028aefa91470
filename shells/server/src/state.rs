//! What every handler can reach: the core services and the server's own machinery.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aicd_core::Core;
use aicd_core::forge::Forge;
use aicd_core::signals::EventBus;
use aicd_core::store::SqlStore;
use aicd_runtime::assemble::Readiness;
use aicd_runtime::metrics::Metrics;
use tokio::sync::watch;

use crate::auth::Authenticator;
use crate::ratelimit::RateLimiter;

/// The HTTP-facing settings, resolved from the configuration.
#[derive(Clone, Debug)]
pub(crate) struct HttpSettings {
    pub(crate) max_body_bytes: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) rate_limit_per_minute: u32,
    pub(crate) ip_rate_limit_per_minute: u32,
    pub(crate) org_rate_limit_per_minute: u32,
    /// How long a live event stream stays open (`AICD_STREAM_MAX_SECS`).
    pub(crate) stream_max: Duration,
    pub(crate) trust_forwarded_headers: bool,
    /// Send `Strict-Transport-Security` (the public URL is https).
    pub(crate) hsts: bool,
    pub(crate) cors_origins: Vec<String>,
    /// The bearer token `/metrics` requires (`AICD_METRICS_TOKEN`), if any.
    pub(crate) metrics_token: Option<aicd_runtime::config::Secret>,
}

/// What the GitHub routes need: the webhook's secret, intake and limits, and the setup flow.
#[derive(Clone, Debug)]
pub(crate) struct GithubHooks {
    /// The secret deliveries are signed with; without it the route answers 503.
    pub(crate) webhook_secret: Option<aicd_github::webhooks::WebhookSecret>,
    /// The old secret while the webhook secret is rotated (`AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS`).
    pub(crate) previous_webhook_secret: Option<aicd_github::webhooks::WebhookSecret>,
    /// What verified deliveries do.
    pub(crate) intake: aicd_github::Intake,
    /// The App's setup flow (App, slug and OAuth client configured); without it installations
    /// are linked by an operator only.
    pub(crate) setup: Option<aicd_github::InstallFlow>,
    /// Deliveries whose body is being read right now, bounded.
    pub(crate) inflight: Arc<tokio::sync::Semaphore>,
    /// Deliveries being read per client address (outside the trusted sources), bounded.
    pub(crate) per_address: Arc<crate::api::github::AddressSlots>,
    /// The webhook route's limits.
    pub(crate) limits: aicd_runtime::config::WebhookLimits,
    /// The process's installation-token cache, when the App is configured.
    pub(crate) tokens: Option<aicd_github::InstallationTokens>,
}

/// What the billing routes need beyond the core.
#[derive(Clone, Debug, Default)]
pub(crate) struct BillingHooks {
    /// The secrets Stripe webhook events may be signed with (the current one first, then the
    /// previous one while it is rolled); empty: the route answers 503.
    pub(crate) webhook_secrets: Vec<aicd_runtime::config::Secret>,
    /// Where the customer portal returns to.
    pub(crate) portal_return_url: Option<String>,
}

/// Shared state of the HTTP handlers. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) core: Core,
    pub(crate) store: Arc<SqlStore>,
    pub(crate) forge: Arc<dyn Forge>,
    pub(crate) bus: Arc<dyn EventBus>,
    pub(crate) metrics: Metrics,
    pub(crate) readiness: Readiness,
    pub(crate) limiter: RateLimiter,
    pub(crate) auth: Authenticator,
    pub(crate) settings: HttpSettings,
    pub(crate) github: GithubHooks,
    pub(crate) billing: BillingHooks,
    pub(crate) started: Instant,
    /// Flips to `true` when the server stops accepting connections; live streams end on it.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// Set from the shutdown signal on: `/ready` answers 503 and responses close their
    /// connection, while the server still serves (the drain delay).
    pub(crate) draining: Arc<AtomicBool>,
}

impl AppState {
    pub(crate) fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    pub(crate) fn core(&self) -> &Core {
        &self.0.core
    }

    pub(crate) fn store(&self) -> &Arc<SqlStore> {
        &self.0.store
    }

    pub(crate) fn forge(&self) -> &dyn Forge {
        self.0.forge.as_ref()
    }

    pub(crate) fn bus(&self) -> &Arc<dyn EventBus> {
        &self.0.bus
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub(crate) fn readiness(&self) -> &Readiness {
        &self.0.readiness
    }

    pub(crate) fn limiter(&self) -> &RateLimiter {
        &self.0.limiter
    }

    pub(crate) fn auth(&self) -> &Authenticator {
        &self.0.auth
    }

    pub(crate) fn settings(&self) -> &HttpSettings {
        &self.0.settings
    }

    pub(crate) fn github(&self) -> &GithubHooks {
        &self.0.github
    }

    pub(crate) fn billing(&self) -> &BillingHooks {
        &self.0.billing
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.0.shutdown.clone()
    }

    /// Whether the server is shutting down (draining, or already stopping).
    pub(crate) fn draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }
}
