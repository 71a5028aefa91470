//! GitHub webhook deliveries: verifying their signatures, reading their payloads
//! ([`parse_event`]) and the commands in comments ([`parse_command`]).
//!
//! GitHub signs each delivery with HMAC-SHA256 of the raw body under the webhook secret and sends
//! it as `X-Hub-Signature-256: sha256=<hex>`. The signature is checked before anything in the body
//! is parsed, with a constant-time comparison.

mod events;

pub use events::{
    Command, CommentAction, CommentInfo, Delivery, Ignored, InstallationAction, InstallationEvent,
    InstallationRepositoriesEvent, IssueCommentEvent, IssueInfo, IssuesAction, IssuesEvent, Ping, PullRequestAction,
    PullRequestEvent, RepoInfo, RepoSummary, RepositoriesAction, WebhookEvent, parse_command, parse_delivery,
    parse_event,
};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{Error, Result};

/// The webhook secret shared with GitHub. Its `Debug` never prints the value.
#[derive(Clone)]
pub struct WebhookSecret {
    /// HMAC-SHA256 keyed with the secret, cloned for each delivery.
    keyed: Hmac<Sha256>,
}

impl WebhookSecret {
    /// Wraps a secret; an empty one is refused, since it would accept forged deliveries.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self> {
        let secret = secret.into();
        if secret.is_empty() {
            return Err(Error::InvalidSecret("the webhook secret must not be empty"));
        }
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&secret)
            .map_err(|_| Error::InvalidSecret("the webhook secret cannot key HMAC-SHA256"))?;
        Ok(Self { keyed })
    }

    fn mac(&self) -> Hmac<Sha256> {
        self.keyed.clone()
    }

    /// The `X-Hub-Signature-256` value GitHub would send for `body`.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    /// Checks a delivery's `X-Hub-Signature-256` header against its raw body.
    ///
    /// Errors say whether the header was missing, malformed or wrong; all three must be answered
    /// with 401 and nothing stored.
    pub fn verify(&self, body: &[u8], signature_header: Option<&str>) -> Result<()> {
        let expected = signature_digest(signature_header)?;
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(&expected).map_err(|_| Error::BadSignature)
    }
}

/// The digest an `X-Hub-Signature-256` header carries: `sha256=` and 64 hex digits.
/// [`Error::MissingSignature`] without a header, [`Error::MalformedSignature`] for any other form.
pub fn signature_digest(signature_header: Option<&str>) -> Result<Vec<u8>> {
    let header = signature_header.ok_or(Error::MissingSignature)?;
    let hex_digest = header.trim().strip_prefix("sha256=").ok_or(Error::MalformedSignature)?;
    if hex_digest.len() != 64 {
        return Err(Error::MalformedSignature);
    }
    hex::decode(hex_digest).map_err(|_| Error::MalformedSignature)
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented test vector ("Validating webhook deliveries").
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &str = "Hello, World!";
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn githubs_documented_test_vector_verifies() {
        let secret = WebhookSecret::new(SECRET).unwrap();
        assert_eq!(secret.sign(BODY.as_bytes()), SIGNATURE);
        secret.verify(BODY.as_bytes(), Some(SIGNATURE)).unwrap();
    }

    #[test]
    fn a_changed_body_or_secret_fails() {
        let secret = WebhookSecret::new(SECRET).unwrap();
        assert!(matches!(secret.verify(b"Hello, World?", Some(SIGNATURE)), Err(Error::BadSignature)));
        let other = WebhookSecret::new("another secret").unwrap();
        assert!(matches!(other.verify(BODY.as_bytes(), Some(SIGNATURE)), Err(Error::BadSignature)));
    }

    #[test]
    fn missing_and_malformed_signatures_are_told_apart() {
        let secret = WebhookSecret::new(SECRET).unwrap();
        let body = BODY.as_bytes();
        assert!(matches!(secret.verify(body, None), Err(Error::MissingSignature)));
        for bad in ["", "sha1=abc", "sha256=", "sha256=zz", &SIGNATURE[..70], &SIGNATURE.replace("sha256=", "")] {
            assert!(matches!(secret.verify(body, Some(bad)), Err(Error::MalformedSignature)), "{bad}");
        }
        let uppercase = SIGNATURE.to_uppercase().replace("SHA256=", "sha256=");
        secret.verify(body, Some(&uppercase)).unwrap();
    }

    #[test]
    fn an_empty_secret_is_refused_and_secrets_never_print() {
        assert!(WebhookSecret::new("").is_err());
        let secret = WebhookSecret::new(SECRET).unwrap();
        assert!(!format!("{secret:?}").contains("Secret to"));
    }
}
