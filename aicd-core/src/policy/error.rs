//! Errors raised while reading or compiling a policy configuration.

/// Why a policy configuration could not be read or compiled.
///
/// Evaluation itself never fails; only configuration can. Every message names the offending
/// key, line, glob or pattern so the repository owner can fix `.aicd.toml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The configuration text is not valid TOML or does not fit the `[policy]` schema
    /// (wrong type, unknown key, negative limit, ...).
    #[error("invalid policy configuration: {message}")]
    InvalidConfig {
        /// Human-readable description, including the line and key when known.
        message: String,
    },
    /// A path glob in the configuration does not parse.
    #[error("invalid glob `{glob}` in policy: {message}")]
    InvalidGlob {
        /// The glob exactly as written in the configuration.
        glob: String,
        /// Why the glob was rejected.
        message: String,
    },
    /// A custom secret pattern (`secret_patterns`) is not a valid regular expression.
    #[error("invalid secret pattern `{pattern}` in policy: {message}")]
    InvalidRegex {
        /// The pattern exactly as written in the configuration.
        pattern: String,
        /// Why the pattern was rejected.
        message: String,
    },
}
