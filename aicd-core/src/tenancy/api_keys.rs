//! API keys: `aicd_` + 32 random base62 characters + a 6-character checksum.
//!
//! The checksum lets the server (and secret scanners) reject a mistyped or made-up key without a
//! database lookup. Only a SHA-256 hash of the whole key is stored, next to a short lookup prefix;
//! the key itself is shown once, at creation.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Role;
use crate::{ApiKeyId, Error, OrgId, Result, UserId};

/// The fixed start of every key.
pub const KEY_PREFIX: &str = "aicd_";
const BODY_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
/// How many body characters are stored in clear for lookup (about 59 bits).
const LOOKUP_LEN: usize = 10;
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A whole API key. Its `Debug` and `Display` print `[REDACTED]`; [`ApiKeySecret::expose`] is the
/// one way to read it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret(String);

impl ApiKeySecret {
    /// Wraps a presented key (for example, from an `Authorization` header).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The key itself. Only for handing it to its owner once, or sending it over the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// A freshly generated key: the secret for its owner, and what is stored.
#[derive(Debug)]
pub struct GeneratedKey {
    /// The whole key, to be shown once.
    pub secret: ApiKeySecret,
    /// The lookup prefix stored in clear.
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub hash: [u8; 32],
}

/// A presented key that has the right shape and checksum.
#[derive(Debug)]
pub struct ParsedKey {
    /// The lookup prefix.
    pub prefix: String,
    /// SHA-256 of the whole key.
    pub hash: [u8; 32],
}

impl GeneratedKey {
    /// Generates a key from the operating system's random source.
    pub fn generate() -> Result<Self> {
        let mut body = String::with_capacity(BODY_LEN);
        let mut buf = [0u8; 64];
        while body.len() < BODY_LEN {
            getrandom::fill(&mut buf).map_err(|e| Error::Corrupt(format!("no random source for API keys: {e}")))?;
            // Rejection sampling keeps every character equally likely.
            for b in buf.iter().filter(|b| **b < 248) {
                if body.len() == BODY_LEN {
                    break;
                }
                body.push(ALPHABET[usize::from(*b % 62)] as char);
            }
        }
        let key = format!("{KEY_PREFIX}{body}{}", checksum(&body));
        Ok(Self { prefix: body[..LOOKUP_LEN].to_owned(), hash: hash(&key), secret: ApiKeySecret(key) })
    }
}

impl ParsedKey {
    /// Checks a presented key's shape and checksum; `None` if it cannot be one of ours.
    pub fn parse(presented: &ApiKeySecret) -> Option<Self> {
        let rest = presented.0.strip_prefix(KEY_PREFIX)?;
        if rest.len() != BODY_LEN + CHECKSUM_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let (body, sum) = rest.split_at(BODY_LEN);
        if checksum(body) != sum {
            return None;
        }
        Some(Self { prefix: body[..LOOKUP_LEN].to_owned(), hash: hash(&presented.0) })
    }

    /// Compares this key's hash with a stored one in constant time.
    pub fn matches(&self, stored_hash: &[u8]) -> bool {
        stored_hash.len() == self.hash.len() && bool::from(self.hash.ct_eq(stored_hash))
    }
}

fn checksum(body: &str) -> String {
    let mut n = crc32fast::hash(body.as_bytes());
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// An API key as listed: everything but the secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKey {
    /// Its identifier.
    pub id: ApiKeyId,
    /// The organization it acts in.
    pub org_id: OrgId,
    /// A name chosen by its creator.
    pub name: String,
    /// The role it carries.
    pub role: Role,
    /// The visible start of the key (`aicd_` and the lookup prefix), to recognise it.
    pub prefix: String,
    /// Who created it, if a user did.
    pub created_by: Option<UserId>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used to authenticate.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    /// Whether the key may authenticate at `now`: not revoked and not expired.
    pub fn is_usable(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
}

/// What is needed to create an API key.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewApiKey {
    /// A name to recognise it by (1 to 100 characters).
    pub name: String,
    /// The role it carries; never higher than its creator's.
    pub role: Role,
    /// When it stops working, if ever; must be in the future.
    pub expires_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_match_their_hash() {
        let key = GeneratedKey::generate().unwrap();
        assert!(key.secret.expose().starts_with("aicd_"));
        assert_eq!(key.secret.expose().len(), KEY_PREFIX.len() + BODY_LEN + CHECKSUM_LEN);
        let parsed = ParsedKey::parse(&key.secret).expect("own key parses");
        assert_eq!(parsed.prefix, key.prefix);
        assert!(parsed.matches(&key.hash));
    }

    #[test]
    fn a_changed_character_fails_the_checksum() {
        let key = GeneratedKey::generate().unwrap();
        let mut text = key.secret.expose().to_owned();
        let i = KEY_PREFIX.len() + 3;
        let c = if &text[i..=i] == "a" { "b" } else { "a" };
        text.replace_range(i..=i, c);
        assert!(ParsedKey::parse(&ApiKeySecret::new(text)).is_none());
    }

    #[test]
    fn malformed_keys_are_rejected_without_panicking() {
        for bad in ["", "aicd_", "aicd_short", "ghp_abc", "aicd_ðððððððððððððððððððððððððððððð", &"aicd_".repeat(20)]
        {
            assert!(ParsedKey::parse(&ApiKeySecret::new(bad)).is_none(), "{bad}");
        }
    }

    #[test]
    fn secrets_never_print() {
        let key = GeneratedKey::generate().unwrap();
        assert_eq!(format!("{:?}", key.secret), "[REDACTED]");
        assert_eq!(key.secret.to_string(), "[REDACTED]");
        assert!(!format!("{key:?}").contains(key.secret.expose()));
    }

    #[test]
    fn keys_differ() {
        let a = GeneratedKey::generate().unwrap();
        let b = GeneratedKey::generate().unwrap();
        assert_ne!(a.secret, b.secret);
    }

    #[test]
    fn a_wrong_hash_does_not_match() {
        let key = GeneratedKey::generate().unwrap();
        let parsed = ParsedKey::parse(&key.secret).unwrap();
        assert!(!parsed.matches(&[0u8; 32]));
        assert!(!parsed.matches(&key.hash[..31]));
    }
}
