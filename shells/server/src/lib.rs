//! The AI-CD HTTP API server as a library: [`Server`] assembles the core services, the store, the
//! signals and (in the embedded default) an in-process worker from an
//! [`aicd_runtime::config::Config`], and serves the API the web frontend uses. The `aicd-server`
//! binary is a thin CLI over it.
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! let config = aicd_runtime::config::Config::from_env()?;
//! let server = aicd_server::Server::build(&config).await?;
//! let listener = tokio::net::TcpListener::bind(config.server.listen_addr).await?;
//! server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

mod api;
pub(crate) mod auth;
mod error;
mod extract;
mod middleware;
pub(crate) mod ratelimit;
mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aicd_core::orchestrator::WorkerHandle;
use aicd_core::store::SqlStore;
use aicd_runtime::assemble::{self, Readiness};
use aicd_runtime::config::{Config, Signals};
use aicd_runtime::metrics::Metrics;
use anyhow::Context;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, header};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use crate::error::ApiError;
use crate::state::{AppState, BillingHooks, GithubHooks, HttpSettings, Inner};

/// Knobs that are not configuration variables, for embedding and tests.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The shortest time between two fetches of the identity provider's keys triggered by an
    /// unknown key id (so garbage tokens cannot make the server hammer the provider).
    pub jwks_min_refetch: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self { jwks_min_refetch: Duration::from_secs(10) }
    }
}

/// An assembled server: the API, and in the embedded default the worker too.
pub struct Server {
    state: AppState,
    router: Router,
    store: Arc<SqlStore>,
    worker: Option<WorkerHandle>,
    /// The embedded worker's comment command processor (with the GitHub App configured).
    commands: Option<tokio::task::JoinHandle<()>>,
    meters: Option<tokio::task::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    /// Set when the shutdown signal arrives: `/ready` answers 503 from then on.
    draining: Arc<AtomicBool>,
    drain_delay: Duration,
    grace: Duration,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("embedded_worker", &self.worker.is_some()).finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store and signals described by `config`, and starts the in-process worker when
    /// `config.server.embedded_worker` is set.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        Self::build_with(config, ServerOptions::default()).await
    }

    /// [`Server::build`] with `options`.
    pub async fn build_with(config: &Config, options: ServerOptions) -> anyhow::Result<Self> {
        aicd_runtime::telemetry::install_crypto_provider();
        let metrics = Metrics::new();
        let store = assemble::open_store(config).await?;
        let signals = assemble::open_signals(config).await?;
        let core = assemble::build_core(config, store.clone(), &signals)?;
        let limiter = match &config.signals {
            Signals::Redis { url, namespace } => ratelimit::RateLimiter::redis(url.expose(), namespace.clone())
                .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?,
            Signals::Local => ratelimit::RateLimiter::local(),
        };
        let jwt = match &config.server.oidc {
            Some(oidc) => {
                let http = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .context("cannot build the HTTP client for the identity provider")?;
                let settings = auth::jwt::OidcSettings {
                    issuer: oidc.issuer.clone(),
                    audience: oidc.audience.clone(),
                    jwks_url: oidc.jwks_url.clone(),
                    min_refetch: options.jwks_min_refetch,
                    leeway: Duration::from_secs(30),
                };
                Some(auth::jwt::JwtVerifier::new(settings, http))
            }
            None => None,
        };
        // One installation-token cache for the process: routes, forge and command processor share it.
        let tokens = assemble::github_tokens(config)?;
        let forge = assemble::build_forge(config, store.clone(), tokens.as_ref());
        let worker = match config.server.embedded_worker {
            true => Some(
                assemble::build_orchestrator(config, store.clone(), &signals, &metrics, forge.clone())?.spawn_worker(),
            ),
            false => None,
        };
        let (stop, stopping) = watch::channel(false);
        let draining = Arc::new(AtomicBool::new(false));
        let commands = if config.server.embedded_worker {
            assemble::build_command_processor(config, core.clone(), tokens.as_ref()).map(|p| p.spawn(stop.subscribe()))
        } else {
            None
        };
        let meters = if config.server.embedded_worker {
            assemble::build_meter_dispatcher(config, &core).map(|d| d.spawn(stop.subscribe()))
        } else {
            None
        };
        let settings = HttpSettings {
            max_body_bytes: config.server.max_body_bytes,
            request_timeout: config.server.request_timeout,
            rate_limit_per_minute: config.server.rate_limit_per_minute,
            ip_rate_limit_per_minute: config.server.ip_rate_limit_per_minute,
            org_rate_limit_per_minute: config.server.org_rate_limit_per_minute,
            stream_max: config.server.stream_max,
            trust_forwarded_headers: config.server.trust_forwarded_headers,
            hsts: config.server.public_url.as_deref().is_some_and(|u| u.starts_with("https://")),
            cors_origins: config.server.cors_origins.clone(),
            metrics_token: config.metrics_token.clone(),
        };
        let github = GithubHooks {
            webhook_secret: config
                .server
                .github
                .webhook_secret
                .as_ref()
                .map(|secret| aicd_github::webhooks::WebhookSecret::new(secret.expose()))
                .transpose()
                .map_err(|e| anyhow::anyhow!("AICD_GITHUB_WEBHOOK_SECRET: {e}"))?,
            previous_webhook_secret: config
                .server
                .github
                .previous_webhook_secret
                .as_ref()
                .map(|secret| aicd_github::webhooks::WebhookSecret::new(secret.expose()))
                .transpose()
                .map_err(|e| anyhow::anyhow!("AICD_GITHUB_WEBHOOK_SECRET_PREVIOUS: {e}"))?,
            intake: aicd_github::Intake::new(&core).with_bot_login(config.server.github.bot_login()),
            setup: assemble::install_flow(config, &core, tokens.as_ref())?,
            inflight: Arc::new(tokio::sync::Semaphore::new(config.server.webhooks.max_inflight)),
            per_address: Arc::default(),
            limits: config.server.webhooks.clone(),
            tokens,
        };
        let billing = config
            .billing
            .as_ref()
            .map(|billing| BillingHooks {
                webhook_secrets: billing
                    .webhook_secret
                    .iter()
                    .chain(&billing.previous_webhook_secret)
                    .cloned()
                    .collect(),
                portal_return_url: billing.portal_return_url.clone().or_else(|| config.server.public_url.clone()),
            })
            .unwrap_or_default();
        let state = AppState::new(Inner {
            core,
            store: store.clone(),
            forge,
            bus: signals.bus.clone(),
            metrics,
            readiness: Readiness::new(store.clone(), signals.redis.clone()),
            limiter,
            auth: auth::Authenticator::new(jwt),
            settings,
            github,
            billing,
            started: Instant::now(),
            shutdown: stopping,
            draining: draining.clone(),
        });
        let router = router(state.clone());
        tracing::info!(
            database = store.backend(),
            signals = if signals.redis.is_some() { "redis" } else { "local" },
            embedded_worker = worker.is_some(),
            identity_provider = config.server.oidc.is_some(),
            "server assembled"
        );
        Ok(Self {
            state,
            router,
            store,
            worker,
            commands,
            meters,
            stop,
            draining,
            drain_delay: config.server.drain_delay,
            grace: config.shutdown_grace,
        })
    }

    /// The HTTP application, for serving elsewhere or calling in-process.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves on `listener` until `shutdown` completes. Then `/ready` answers 503 (draining) and
    /// every response closes its connection, while the server keeps accepting and serving for the
    /// drain delay (`AICD_SHUTDOWN_DRAIN_SECS`), so a load balancer takes it out of rotation
    /// before it stops accepting; then it stops accepting connections, ends live streams, lets
    /// in-flight requests finish and the embedded worker reach a checkpoint (each within the
    /// shutdown grace period), and closes the store.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = listener.local_addr().context("the listener has no local address")?;
        tracing::info!(%addr, "listening");
        let app = self.router.into_make_service_with_connect_info::<SocketAddr>();
        let mut stopping = self.stop.subscribe();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopping.wait_for(|stop| *stop).await;
                })
                .await
        });
        shutdown.await;
        self.draining.store(true, Ordering::Relaxed);
        if !self.drain_delay.is_zero() {
            tracing::info!(drain_secs = self.drain_delay.as_secs(), "shutting down: not ready, still serving");
            tokio::time::sleep(self.drain_delay).await;
        }
        tracing::info!(grace_secs = self.grace.as_secs(), "shutting down: draining requests");
        let _ = self.stop.send(true);
        let worker = async {
            if let Some(worker) = self.worker {
                worker.shutdown(self.grace).await;
            }
            if let Some(commands) = self.commands
                && tokio::time::timeout(self.grace, commands).await.is_err()
            {
                tracing::warn!("the comment command processor did not stop in time (its claim lapses)");
            }
            if let Some(meters) = self.meters
                && tokio::time::timeout(self.grace, meters).await.is_err()
            {
                tracing::warn!("the billing meter dispatcher did not stop in time (its claim lapses)");
            }
        };
        let drained = async {
            match tokio::time::timeout(self.grace, server).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(anyhow::Error::from(e).context("serving failed")),
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("the server task failed")),
                Err(_) => {
                    tracing::warn!("requests still running after the grace period were cut off");
                    Ok(())
                }
            }
        };
        let ((), drained) = tokio::join!(worker, drained);
        drop(self.state);
        self.store.close().await;
        tracing::info!("server stopped");
        drained
    }
}

/// The routes with their layers.
fn router(state: AppState) -> Router {
    let (routes, _doc) = api::routes();
    let settings = state.settings().clone();
    let mut app = routes
        .route_layer(axum::middleware::from_fn(middleware::record_route))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), middleware::guard));
    if !settings.cors_origins.is_empty() {
        let origins: Vec<HeaderValue> =
            settings.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
        app = app.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, middleware::REQUEST_ID])
                .expose_headers([middleware::REQUEST_ID, header::RETRY_AFTER])
                .max_age(Duration::from_secs(600)),
        );
    }
    app.layer(axum::middleware::from_fn_with_state(state.clone(), middleware::observe)).with_state(state)
}

/// The OpenAPI document of the API, as JSON.
pub fn openapi_json() -> String {
    api::system::document().to_owned()
}
