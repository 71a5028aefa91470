//! The setup flow's `state`: which organization an installation is to be linked to, and the
//! secret nonce of its single-use pending link, signed so a forged or altered state is refused
//! before anything is looked up.
//!
//! `v1.<org id, 32 hex digits>.<nonce, base64url>.<expiry, Unix seconds>.<HMAC-SHA256, base64url>`,
//! signed with a key derived from the App's OAuth client secret (every replica has it; nothing
//! else needs distributing).

use aicd_core::OrgId;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::{Error, Result};

/// The version tag every state starts with.
const VERSION: &str = "v1";
/// What the signing key is derived for (so the client secret's HMAC means nothing elsewhere).
const KEY_PURPOSE: &[u8] = b"aicd github install state v1";
/// Bytes of a nonce.
pub(crate) const NONCE_BYTES: usize = 32;
/// The longest state read (a real one is about 150 characters).
const MAX_STATE_CHARS: usize = 512;

/// Signs and checks states. `Debug` never shows the key.
#[derive(Clone)]
pub(crate) struct StateKey {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for StateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateKey([REDACTED])")
    }
}

/// What a valid state says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StateClaims {
    pub(crate) org: OrgId,
    pub(crate) nonce: Vec<u8>,
    pub(crate) expires_at: DateTime<Utc>,
}

impl StateKey {
    /// The key derived from the App's OAuth client secret.
    pub(crate) fn derive(client_secret: &str) -> Result<Self> {
        let mut derive = <Hmac<Sha256> as KeyInit>::new_from_slice(client_secret.as_bytes())
            .map_err(|_| Error::SetupNotConfigured("the OAuth client secret cannot key HMAC-SHA256"))?;
        derive.update(KEY_PURPOSE);
        let key = derive.finalize().into_bytes();
        let keyed = <Hmac<Sha256> as KeyInit>::new_from_slice(&key)
            .map_err(|_| Error::SetupNotConfigured("the state key cannot key HMAC-SHA256"))?;
        Ok(Self { keyed })
    }

    /// The state for `claims`.
    pub(crate) fn sign(&self, claims: &StateClaims) -> String {
        let payload = format!(
            "{VERSION}.{}.{}.{}",
            claims.org.as_uuid().simple(),
            URL_SAFE_NO_PAD.encode(&claims.nonce),
            claims.expires_at.timestamp()
        );
        let mut mac = self.keyed.clone();
        mac.update(payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    /// What `state` says, if it was signed with this key and has not expired at `now`.
    /// [`Error::InvalidSetupState`] otherwise; the signature is compared in constant time, and
    /// nothing of a state that does not verify is trusted.
    pub(crate) fn verify(&self, state: &str, now: DateTime<Utc>) -> Result<StateClaims> {
        let invalid = || Error::InvalidSetupState("the state was not issued by this server");
        if state.len() > MAX_STATE_CHARS {
            return Err(invalid());
        }
        let (payload, signature) = state.rsplit_once('.').ok_or_else(invalid)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| invalid())?;
        let mut mac = self.keyed.clone();
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature).map_err(|_| invalid())?;
        let mut parts = payload.split('.');
        let (Some(VERSION), Some(org), Some(nonce), Some(expires), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let org: OrgId = org.parse().map_err(|_| invalid())?;
        let nonce = URL_SAFE_NO_PAD.decode(nonce).map_err(|_| invalid())?;
        let expires_at =
            expires.parse::<i64>().ok().and_then(|t| DateTime::from_timestamp(t, 0)).ok_or_else(invalid)?;
        if nonce.len() != NONCE_BYTES {
            return Err(invalid());
        }
        if expires_at <= now {
            return Err(Error::InvalidSetupState("the state has expired; start the installation again"));
        }
        Ok(StateClaims { org, nonce, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: DateTime<Utc>) -> StateClaims {
        StateClaims { org: OrgId::new(), nonce: vec![7; NONCE_BYTES], expires_at: now + chrono::Duration::minutes(30) }
    }

    #[test]
    fn a_signed_state_verifies_until_it_expires() {
        let key = StateKey::derive("an oauth client secret").unwrap();
        let now = Utc::now();
        let mut claims = claims(now);
        claims.expires_at = DateTime::from_timestamp(claims.expires_at.timestamp(), 0).unwrap();
        let state = key.sign(&claims);
        assert!(state.len() < 200 && !state.contains(['+', '/', '=', '&', '?']), "{state}");
        assert_eq!(key.verify(&state, now).unwrap(), claims);
        assert!(matches!(
            key.verify(&state, now + chrono::Duration::minutes(31)),
            Err(Error::InvalidSetupState(m)) if m.contains("expired")
        ));
    }

    #[test]
    fn forged_altered_and_foreign_states_are_refused() {
        let key = StateKey::derive("an oauth client secret").unwrap();
        let now = Utc::now();
        let state = key.sign(&claims(now));
        let other = StateKey::derive("another secret").unwrap();
        assert!(other.verify(&state, now).is_err());
        // Another org in a state signed for the first.
        let (payload, signature) = state.rsplit_once('.').unwrap();
        let mut parts: Vec<&str> = payload.split('.').collect();
        let org = OrgId::new().as_uuid().simple().to_string();
        parts[1] = &org;
        assert!(key.verify(&format!("{}.{signature}", parts.join(".")), now).is_err());
        for bad in ["", "v1", "v1.x.y.z.w", &"a".repeat(600), &format!("{state}x")] {
            assert!(matches!(key.verify(bad, now), Err(Error::InvalidSetupState(_))), "{bad}");
        }
        assert!(!format!("{key:?}").contains("secret"));
    }
}
