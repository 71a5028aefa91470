//! What the AI-CD binaries (`aicd-server`, `aicd-worker`) share: typed configuration read from the
//! environment, telemetry (logs, traces, Prometheus metrics), the assembly of the store, signals,
//! agent, forge and orchestrator, the operational HTTP endpoints, and signal-driven shutdown.

pub mod assemble;
pub mod config;
pub mod metrics;
pub mod ops;
pub mod shutdown;
pub mod telemetry;
