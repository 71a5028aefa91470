//! Logs and traces: one `tracing` subscriber writing to stderr (text or JSON) and, when an OTLP
//! endpoint is configured, exporting spans over OTLP/HTTP (protobuf) in batches.

use std::io::IsTerminal;

use anyhow::Context;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{Config, LogFormat};

/// Keeps the trace exporter alive; dropping it sends the spans still buffered and shuts the
/// exporter down.
///
/// Drop it while the Tokio runtime that [`init`] ran in is still running, and not from a task of
/// a current-thread runtime (the flush waits for a task on the runtime).
#[must_use = "dropping the guard stops trace export"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("could not flush the remaining traces: {e}");
        }
    }
}

/// Installs the process's `tracing` subscriber: `config.log_filter` as the filter, log lines on
/// stderr as JSON or text (with colours only on a terminal), and, when `config.otlp_endpoint` is
/// set, a batch exporter sending spans to `{endpoint}/v1/traces` as OTLP/HTTP protobuf, with
/// `service.name` from `config.service_name` or `default_service`.
///
/// With an OTLP endpoint it must be called inside a Tokio runtime (the exporter runs as a task on
/// it). Fails if a subscriber is already installed or the exporter cannot be built.
pub fn init(config: &Config, default_service: &'static str) -> anyhow::Result<TelemetryGuard> {
    type Boxed = Box<dyn Layer<Registry> + Send + Sync>;
    let filter = EnvFilter::builder().parse(&config.log_filter).context("RUST_LOG is not a valid filter")?;
    let logs: Boxed = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(endpoint, config.service_name.as_deref().unwrap_or(default_service))?),
        None => None,
    };
    let traces: Option<Boxed> =
        provider.as_ref().map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("aicd")).boxed());
    tracing_subscriber::registry()
        .with(logs.and_then(traces).with_filter(filter))
        .try_init()
        .context("a tracing subscriber is already installed")?;
    if let (Some(provider), Some(endpoint)) = (&provider, &config.otlp_endpoint) {
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::info!(endpoint = %endpoint, "exporting traces over OTLP/HTTP");
    }
    Ok(TelemetryGuard { provider })
}

fn tracer_provider(endpoint: &str, service: &str) -> anyhow::Result<SdkTracerProvider> {
    install_crypto_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
        .context("cannot build the OTLP trace exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
    tokio::runtime::Handle::try_current()
        .context("exporting traces needs a Tokio runtime: call telemetry::init inside one")?;
    let processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let resource = Resource::builder().with_service_name(service.to_owned()).build();
    Ok(SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource).build())
}

/// Installs rustls's `ring` crypto provider as the process default, once; later calls (and a
/// provider installed by someone else) are left as they are. HTTPS clients need it.
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all this asks for.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::install_crypto_provider;

    #[test]
    fn installing_the_crypto_provider_twice_is_harmless() {
        install_crypto_provider();
        install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
