//! The error type of the GitHub integration.

/// What can go wrong talking to GitHub or reading what it sends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `X-Hub-Signature-256` header is missing.
    #[error("missing webhook signature")]
    MissingSignature,
    /// The signature header is not of the form `sha256=<64 hex digits>`.
    #[error("malformed webhook signature")]
    MalformedSignature,
    /// The signature does not match the body and the webhook secret.
    #[error("webhook signature does not match")]
    BadSignature,
    /// The webhook secret is unusable (empty).
    #[error("invalid webhook secret: {0}")]
    InvalidSecret(&'static str),
    /// A core operation failed.
    #[error(transparent)]
    Core(#[from] aicd_core::Error),
}

/// The result of a GitHub integration operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
