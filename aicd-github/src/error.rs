//! The error type of the GitHub integration.
//!
//! Calls to GitHub itself (the App's tokens, the REST client, the forge) fail with
//! [`aicd_core::Error`], so the orchestrator can tell transient failures from permanent ones; this
//! type covers what is checked before anything is sent: webhook signatures and payloads, and the
//! App's configuration.

/// What can go wrong verifying or reading what GitHub sends, or configuring the App.
///
/// No variant ever carries a secret (the webhook secret, the private key, a token).
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
    /// A webhook body is not well-formed JSON; the message says where.
    #[error("malformed webhook payload: {0}")]
    MalformedPayload(String),
    /// A signed delivery lacks a header it needs (its event name, its delivery id).
    #[error("malformed webhook delivery: {0}")]
    MalformedDelivery(&'static str),
    /// The App's private key is not a PEM-encoded RSA private key; the message says why, never
    /// what the key is.
    #[error("invalid GitHub App private key: {0}")]
    InvalidPrivateKey(String),
    /// The GitHub API address is not an absolute `http` or `https` URL.
    #[error("invalid GitHub API URL: {0}")]
    InvalidApiUrl(String),
    /// The App's setup flow cannot run here: no App, OAuth client or App slug is configured (or
    /// one is unusable); the message says which. Nothing is linked.
    #[error("GitHub App installation is not set up on this server: {0}")]
    SetupNotConfigured(&'static str),
    /// The setup redirect's `state` is missing, was not issued by this server, has expired or was
    /// already used. Nothing is linked; the installation is to be started again.
    #[error("invalid setup state: {0}")]
    InvalidSetupState(&'static str),
    /// The setup redirect is not one AI-CD can act on (no installation id, no authorization code
    /// where one is needed); the message says what is missing.
    #[error("invalid setup request: {0}")]
    InvalidSetupRequest(&'static str),
    /// The person who completed the installation could not be shown to control it: GitHub does
    /// not list it among their installations, they are not an admin of its organization, the
    /// authorization code was refused, or it is linked to another organization. Deliberately one
    /// answer for all of these, so the id of an installation tells nothing. Nothing is linked.
    #[error("the GitHub App installation could not be verified as one you control")]
    InstallationNotVerified,
    /// A core operation failed.
    #[error(transparent)]
    Core(#[from] aicd_core::Error),
}

/// The result of a GitHub integration operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
