//! Verification of the identity provider's JWTs (OIDC ID or access tokens) against its JWKS.
//!
//! Only RS256 and ES256 are accepted. The header's `kid` picks the key; keys are cached, and a
//! `kid` the cache does not know triggers one refetch of the JWKS, at most once per
//! [`OidcSettings::min_refetch`]. Tokens are never logged.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// After this long the cached keys are refreshed on the next verification (keys the provider has
/// withdrawn stop being accepted); if the refresh fails the cached keys stay in use.
const KEYS_MAX_AGE: Duration = Duration::from_secs(3600);
/// The largest JWKS body read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Tokens longer than this are rejected before any parsing.
const MAX_TOKEN_LEN: usize = 16 * 1024;
/// The longest accepted `sub`.
const MAX_SUBJECT_LEN: usize = 255;
/// The smallest accepted RSA modulus, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// Where the identity provider's keys are and what its tokens must say.
#[derive(Clone, Debug)]
pub(crate) struct OidcSettings {
    /// The exact `iss` tokens must carry.
    pub(crate) issuer: String,
    /// A value `aud` must be or contain.
    pub(crate) audience: String,
    /// The provider's JWKS document.
    pub(crate) jwks_url: String,
    /// The shortest interval between two fetches of the JWKS (so tokens with made-up `kid`s cannot
    /// make the server hammer the provider); 10 s in production, 0 in tests.
    pub(crate) min_refetch: Duration,
    /// The clock skew tolerated on `exp` and `nbf` (30 s); whole seconds count.
    pub(crate) leeway: Duration,
}

/// What a verified token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claims {
    /// `sub`: the provider's stable id of the user (non-empty, at most 255 characters).
    pub(crate) subject: String,
    /// `email`, unless the token says `email_verified: false`.
    pub(crate) email: Option<String>,
    /// `name`.
    pub(crate) name: Option<String>,
}

/// Why a token was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum JwtError {
    /// The token is not valid; the reason is safe to show the caller.
    Invalid(&'static str),
    /// The provider's keys could not be fetched (answer 503); the cause is for the logs.
    KeysUnavailable(String),
}

impl std::fmt::Display for JwtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtError::Invalid(reason) => write!(f, "invalid token: {reason}"),
            JwtError::KeysUnavailable(cause) => write!(f, "the identity provider's keys are unavailable: {cause}"),
        }
    }
}

impl std::error::Error for JwtError {}

/// Verifies JWTs; cheap to clone (clones share the key cache).
#[derive(Clone)]
pub(crate) struct JwtVerifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.inner.settings.issuer)
            .field("jwks_url", &self.inner.settings.jwks_url)
            .finish_non_exhaustive()
    }
}

struct Inner {
    settings: OidcSettings,
    http: reqwest::Client,
    /// The keys of the last successful fetch (empty before the first).
    keys: RwLock<Arc<KeySet>>,
    /// Held while fetching, so concurrent misses cause one fetch.
    fetch: tokio::sync::Mutex<FetchState>,
}

#[derive(Default)]
struct FetchState {
    /// When the last fetch started.
    last_attempt: Option<Instant>,
    /// Why the last fetch failed, if it did.
    last_error: Option<String>,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    /// `None` until the first successful fetch.
    fetched_at: Option<Instant>,
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    decoding: DecodingKey,
}

impl KeySet {
    /// The key for a token with this `kid` (or without one, if there is exactly one key).
    fn find(&self, kid: Option<&str>) -> Option<&Key> {
        match kid {
            Some(kid) => self.keys.iter().find(|key| key.kid.as_deref() == Some(kid)),
            None => match self.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }
    }

    fn is_stale(&self) -> bool {
        self.fetched_at.is_none_or(|at| at.elapsed() >= KEYS_MAX_AGE)
    }
}

/// The part of the JOSE header read before choosing a key.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// The claims read after the signature and the registered claims have been checked.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<serde_json::Value>,
    #[serde(default)]
    iss: Option<serde_json::Value>,
    #[serde(default)]
    email: Option<serde_json::Value>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    #[serde(default)]
    name: Option<serde_json::Value>,
}

impl JwtVerifier {
    /// A verifier fetching keys with `http` (which must have a TLS crypto provider if the JWKS URL
    /// is https). Nothing is fetched until the first token arrives.
    pub(crate) fn new(settings: OidcSettings, http: reqwest::Client) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                http,
                keys: RwLock::new(Arc::new(KeySet::default())),
                fetch: tokio::sync::Mutex::new(FetchState::default()),
            }),
        }
    }

    /// Checks `token`'s signature and claims.
    pub(crate) async fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header = parse_header(token)?;
        let alg = match header.alg.as_str() {
            "RS256" => Algorithm::RS256,
            "ES256" => Algorithm::ES256,
            _ => return Err(JwtError::Invalid("unsupported algorithm (only RS256 and ES256 are accepted)")),
        };
        if header.crit.is_some() {
            return Err(JwtError::Invalid("unsupported critical header parameters"));
        }
        let keys = self.keys_for(header.kid.as_deref()).await?;
        let key = keys.find(header.kid.as_deref()).ok_or(JwtError::Invalid(match header.kid {
            Some(_) => "unknown signing key",
            None => "the token has no kid and the identity provider has several keys",
        }))?;
        if key.alg != alg {
            return Err(JwtError::Invalid("the algorithm does not match the signing key"));
        }
        self.check(token, key)
    }

    /// The key set to look `kid` up in: the cached one, refreshed first when it is missing the
    /// key (at most once per `min_refetch`) or old.
    async fn keys_for(&self, kid: Option<&str>) -> Result<Arc<KeySet>, JwtError> {
        let cached = self.cached();
        if cached.find(kid).is_some() && !cached.is_stale() {
            return Ok(cached);
        }
        let mut state = self.inner.fetch.lock().await;
        // Another task may have fetched while this one waited.
        let cached = self.cached();
        let found = cached.find(kid).is_some();
        if found && !cached.is_stale() {
            return Ok(cached);
        }
        let never_fetched = cached.fetched_at.is_none();
        let may_fetch = state.last_attempt.is_none_or(|at| at.elapsed() >= self.inner.settings.min_refetch);
        if !may_fetch {
            return match (&state.last_error, never_fetched) {
                (Some(error), true) => Err(JwtError::KeysUnavailable(error.clone())),
                // Unknown kid: verify() answers "unknown signing key"; a stale set is still used.
                _ => Ok(cached),
            };
        }
        state.last_attempt = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                state.last_error = None;
                let keys = Arc::new(keys);
                *self.inner.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = keys.clone();
                Ok(keys)
            }
            Err(error) => {
                tracing::warn!(jwks_url = %self.inner.settings.jwks_url, %error, "fetching the identity provider's JWKS failed");
                state.last_error = Some(error.clone());
                if found {
                    // The key is known; keep using it while the provider is unreachable.
                    Ok(cached)
                } else {
                    Err(JwtError::KeysUnavailable(error))
                }
            }
        }
    }

    fn cached(&self) -> Arc<KeySet> {
        self.inner.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Fetches and parses the JWKS.
    async fn fetch(&self) -> Result<KeySet, String> {
        let url = &self.inner.settings.jwks_url;
        let mut response = self
            .inner
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        if response.content_length().is_some_and(|len| len > MAX_JWKS_BYTES as u64) {
            return Err(format!("GET {url}: the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("GET {url}: the JWKS is larger than {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let keys = parse_jwks(&body).map_err(|e| format!("GET {url}: {e}"))?;
        tracing::info!(jwks_url = %url, keys = keys.len(), "fetched the identity provider's JWKS");
        Ok(KeySet { keys, fetched_at: Some(Instant::now()) })
    }

    /// Checks the signature with `key`, then the claims.
    fn check(&self, token: &str, key: &Key) -> Result<Claims, JwtError> {
        let settings = &self.inner.settings;
        let mut validation = Validation::new(key.alg);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[settings.issuer.as_str()]);
        validation.set_audience(&[settings.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<RawClaims>(token, &key.decoding, &validation)
            .map_err(|e| JwtError::Invalid(reason(e.kind())))?;
        let claims = data.claims;
        // jsonwebtoken accepts an array `iss` containing the issuer; require the exact string.
        if claims.iss.as_ref().and_then(|v| v.as_str()) != Some(settings.issuer.as_str()) {
            return Err(JwtError::Invalid("wrong issuer"));
        }
        let subject = match claims.sub {
            Some(serde_json::Value::String(sub)) => sub,
            _ => return Err(JwtError::Invalid("missing or malformed sub")),
        };
        if subject.is_empty() || subject.chars().count() > MAX_SUBJECT_LEN {
            return Err(JwtError::Invalid("sub must be 1 to 255 characters"));
        }
        let email_unverified = claims.email_verified.as_ref().and_then(serde_json::Value::as_bool) == Some(false);
        let email = if email_unverified { None } else { non_empty_string(claims.email) };
        Ok(Claims { subject, email, name: non_empty_string(claims.name) })
    }
}

fn non_empty_string(value: Option<serde_json::Value>) -> Option<String> {
    match value {
        Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Some(s),
        _ => None,
    }
}

/// Reads the JOSE header without trusting anything in it yet.
fn parse_header(token: &str) -> Result<RawHeader, JwtError> {
    const MALFORMED: JwtError = JwtError::Invalid("malformed token");
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Invalid("token too long"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(MALFORMED);
    };
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| MALFORMED)?;
    serde_json::from_slice(&bytes).map_err(|_| MALFORMED)
}

/// A reason safe to show the caller.
fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm => "the algorithm does not match the signing key",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "missing exp",
            "iss" => "missing iss",
            "aud" => "missing aud",
            "sub" => "missing sub",
            _ => "missing a required claim",
        },
        ErrorKind::InvalidClaimFormat(_) => "malformed claims",
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
            "the identity provider's key is unusable"
        }
        _ => "malformed token",
    }
}

/// A JWK as published; every field optional so one odd key does not spoil the set.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    key_ops: Option<Vec<String>>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
    #[serde(default)]
    crv: Option<String>,
    #[serde(default)]
    x: Option<String>,
    #[serde(default)]
    y: Option<String>,
}

/// The usable signature keys of a JWKS document; keys of other uses or types are skipped.
fn parse_jwks(body: &[u8]) -> Result<Vec<Key>, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let set: RawSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys: Vec<Key> = Vec::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<RawJwk>(value) else {
            tracing::debug!("skipping a malformed JWK");
            continue;
        };
        let kid = jwk.kid.clone();
        match usable_key(jwk) {
            Ok(key) => {
                if keys.iter().any(|k| k.kid == key.kid) {
                    tracing::warn!(?kid, "skipping a JWK whose kid repeats an earlier key's");
                    continue;
                }
                keys.push(key);
            }
            Err(why) => tracing::debug!(?kid, why, "skipping a JWK"),
        }
    }
    if keys.is_empty() {
        return Err("the JWKS has no usable RS256 or ES256 signature keys".to_owned());
    }
    Ok(keys)
}

fn usable_key(jwk: RawJwk) -> Result<Key, &'static str> {
    if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
        return Err("not a signature key");
    }
    if jwk.key_ops.as_ref().is_some_and(|ops| !ops.iter().any(|op| op == "verify")) {
        return Err("key_ops does not allow verify");
    }
    let (alg, decoding) = match jwk.kty.as_str() {
        "RSA" => {
            let (Some(n), Some(e)) = (&jwk.n, &jwk.e) else {
                return Err("RSA key without n or e");
            };
            let modulus = URL_SAFE_NO_PAD.decode(n).map_err(|_| "RSA n is not base64url")?;
            let exponent = URL_SAFE_NO_PAD.decode(e).map_err(|_| "RSA e is not base64url")?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return Err("RSA key shorter than 2048 bits");
            }
            if exponent.is_empty() {
                return Err("RSA e is empty");
            }
            (Algorithm::RS256, DecodingKey::from_rsa_raw_components(&modulus, &exponent))
        }
        "EC" => {
            if jwk.crv.as_deref() != Some("P-256") {
                return Err("EC key not on P-256");
            }
            let (Some(x), Some(y)) = (&jwk.x, &jwk.y) else {
                return Err("EC key without x or y");
            };
            let x_len = URL_SAFE_NO_PAD.decode(x).map_err(|_| "EC x is not base64url")?.len();
            let y_len = URL_SAFE_NO_PAD.decode(y).map_err(|_| "EC y is not base64url")?.len();
            if x_len != 32 || y_len != 32 {
                return Err("EC coordinates are not 32 bytes");
            }
            (Algorithm::ES256, DecodingKey::from_ec_components(x, y).map_err(|_| "EC key is malformed")?)
        }
        _ => return Err("unsupported key type"),
    };
    let expected = match alg {
        Algorithm::RS256 => "RS256",
        _ => "ES256",
    };
    if jwk.alg.as_deref().is_some_and(|a| a != expected) {
        return Err("the key's alg is not RS256 or ES256");
    }
    Ok(Key { kid: jwk.kid, alg, decoding })
}

#[cfg(test)]
#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/support/jwt.rs"]
mod test_issuer;

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde_json::json;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    use super::test_issuer::TestIssuer;

    const ISSUER: &str = "https://idp.example.com/";
    const AUDIENCE: &str = "aicd";

    fn http() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    async fn serve(jwks: serde_json::Value) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(jwks))
            .mount(&server)
            .await;
        server
    }

    fn settings(jwks_url: String) -> OidcSettings {
        OidcSettings {
            issuer: ISSUER.to_owned(),
            audience: AUDIENCE.to_owned(),
            jwks_url,
            min_refetch: Duration::ZERO,
            leeway: Duration::from_secs(30),
        }
    }

    fn verifier(server: &MockServer) -> JwtVerifier {
        JwtVerifier::new(settings(format!("{}/jwks", server.uri())), http())
    }

    async fn jwks_requests(server: &MockServer) -> usize {
        server.received_requests().await.unwrap_or_default().len()
    }

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn claims() -> serde_json::Value {
        TestIssuer::claims(ISSUER, AUDIENCE, "user-1")
    }

    #[tokio::test]
    async fn es256_token_is_accepted() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let mut c = claims();
        c["email"] = json!("ada@example.com");
        c["name"] = json!("Ada");
        let claims = verifier(&server).verify(&issuer.token("k1", c)).await.unwrap();
        assert_eq!(
            claims,
            Claims { subject: "user-1".into(), email: Some("ada@example.com".into()), name: Some("Ada".into()) }
        );
    }

    #[tokio::test]
    async fn rs256_token_is_accepted() {
        let issuer = TestIssuer::new().with_rsa();
        let server = serve(issuer.jwks()).await;
        let claims = verifier(&server).verify(&issuer.token("r1", claims())).await.unwrap();
        assert_eq!(claims.subject, "user-1");
        assert_eq!(claims.email, None);
    }

    #[tokio::test]
    async fn keys_are_cached() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let verifier = verifier(&server);
        for _ in 0..3 {
            verifier.verify(&issuer.token("k1", claims())).await.unwrap();
        }
        assert_eq!(jwks_requests(&server).await, 1);
    }

    #[tokio::test]
    async fn rotated_key_is_fetched_once() {
        let mut issuer = TestIssuer::new();
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(issuer.jwks()))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        let verifier = verifier(&server);
        verifier.verify(&issuer.token("k1", claims())).await.unwrap();
        assert_eq!(jwks_requests(&server).await, 1);

        let kid = issuer.rotate();
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(issuer.jwks()))
            .mount(&server)
            .await;
        let verified = verifier.verify(&issuer.token(&kid, claims())).await.unwrap();
        assert_eq!(verified.subject, "user-1");
        assert_eq!(jwks_requests(&server).await, 2, "exactly one refetch");
        // Both keys are now cached.
        verifier.verify(&issuer.token("k1", claims())).await.unwrap();
        verifier.verify(&issuer.token(&kid, claims())).await.unwrap();
        assert_eq!(jwks_requests(&server).await, 2);
    }

    #[tokio::test]
    async fn unknown_kid_after_refetch_is_invalid() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let verifier = verifier(&server);
        verifier.verify(&issuer.token("k1", claims())).await.unwrap();
        let mut stranger = TestIssuer::new();
        let kid = stranger.rotate();
        let err = verifier.verify(&stranger.token(&kid, claims())).await.unwrap_err();
        assert_eq!(err, JwtError::Invalid("unknown signing key"));
        assert_eq!(jwks_requests(&server).await, 2);
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_interval() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let mut settings = settings(format!("{}/jwks", server.uri()));
        settings.min_refetch = Duration::from_secs(60);
        let verifier = JwtVerifier::new(settings, http());
        verifier.verify(&issuer.token("k1", claims())).await.unwrap();
        let mut stranger = TestIssuer::new();
        for _ in 0..5 {
            let kid = stranger.rotate();
            let err = verifier.verify(&stranger.token(&kid, claims())).await.unwrap_err();
            assert_eq!(err, JwtError::Invalid("unknown signing key"));
        }
        assert_eq!(jwks_requests(&server).await, 1);
    }

    #[tokio::test]
    async fn signature_by_another_key_with_a_known_kid_is_rejected() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let forger = TestIssuer::new();
        let err = verifier(&server).verify(&forger.token("k1", claims())).await.unwrap_err();
        assert_eq!(err, JwtError::Invalid("bad signature"));
    }

    #[tokio::test]
    async fn expired_token_is_invalid() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let mut c = claims();
        c["iat"] = json!(now() - 600);
        c["exp"] = json!(now() - 60);
        let err = verifier(&server).verify(&issuer.token("k1", c)).await.unwrap_err();
        assert_eq!(err, JwtError::Invalid("expired"));
    }

    #[tokio::test]
    async fn leeway_tolerates_small_skew() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let verifier = verifier(&server);
        let mut c = claims();
        c["exp"] = json!(now() - 10);
        c["nbf"] = json!(now() + 10);
        verifier.verify(&issuer.token("k1", c)).await.unwrap();
        let mut c = claims();
        c["nbf"] = json!(now() + 120);
        assert_eq!(
            verifier.verify(&issuer.token("k1", c)).await.unwrap_err(),
            JwtError::Invalid("not yet valid (nbf)")
        );
    }

    #[tokio::test]
    async fn required_claims() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let verifier = verifier(&server);
        for (claim, reason) in
            [("exp", "missing exp"), ("sub", "missing sub"), ("aud", "missing aud"), ("iss", "missing iss")]
        {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(claim);
            assert_eq!(
                verifier.verify(&issuer.token("k1", c)).await.unwrap_err(),
                JwtError::Invalid(reason),
                "{claim}"
            );
        }
        for sub in [json!(""), json!("x".repeat(256)), json!(42)] {
            let mut c = claims();
            c["sub"] = sub;
            assert!(matches!(verifier.verify(&issuer.token("k1", c)).await, Err(JwtError::Invalid(_))));
        }
        let mut c = claims();
        c["sub"] = json!("x".repeat(255));
        verifier.verify(&issuer.token("k1", c)).await.unwrap();
    }

    #[tokio::test]
    async fn wrong_issuer_is_invalid() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let verifier = verifier(&server);
        for iss in [json!("https://evil.example.com/"), json!("https://idp.example.com"), json!([ISSUER, "x"])] {
            let mut c = claims();
            c["iss"] = iss;
            assert_eq!(verifier.verify(&issuer.token("k1", c)).await.unwrap_err(), JwtError::Invalid("wrong issuer"));
        }
    }

    #[tokio::test]
    async fn audience_may_be_a_list() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let verifier = verifier(&server);
        let mut c = claims();
        c["aud"] = json!(["other", AUDIENCE]);
        verifier.verify(&issuer.token("k1", c)).await.unwrap();
        for aud in [json!("other"), json!(["other", "another"])] {
            let mut c = claims();
            c["aud"] = aud;
            assert_eq!(verifier.verify(&issuer.token("k1", c)).await.unwrap_err(), JwtError::Invalid("wrong audience"));
        }
    }

    #[tokio::test]
    async fn unverified_email_is_dropped() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let mut c = claims();
        c["email"] = json!("ada@example.com");
        c["email_verified"] = json!(false);
        assert_eq!(verifier(&server).verify(&issuer.token("k1", c)).await.unwrap().email, None);
    }

    fn b64(value: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    #[tokio::test]
    async fn alg_none_and_hs256_are_rejected() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        let verifier = verifier(&server);
        let body = b64(&claims());
        let none = format!("{}.{body}.", b64(&json!({"alg": "none", "kid": "k1"})));
        let err = verifier.verify(&none).await.unwrap_err();
        assert_eq!(err, JwtError::Invalid("unsupported algorithm (only RS256 and ES256 are accepted)"));
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header { kid: Some("k1".into()), ..jsonwebtoken::Header::new(Algorithm::HS256) },
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        let err = verifier.verify(&hs).await.unwrap_err();
        assert_eq!(err, JwtError::Invalid("unsupported algorithm (only RS256 and ES256 are accepted)"));
        assert_eq!(jwks_requests(&server).await, 0, "rejected before any key is fetched");
    }

    #[tokio::test]
    async fn algorithm_must_match_the_key() {
        let issuer = TestIssuer::new().with_rsa();
        let server = serve(issuer.jwks()).await;
        let token = issuer.token("k1", claims());
        // Relabel the ES256 token as RS256 (same kid).
        let (_, rest) = token.split_once('.').unwrap();
        let relabelled = format!("{}.{rest}", b64(&json!({"alg": "RS256", "kid": "k1", "typ": "JWT"})));
        let err = verifier(&server).verify(&relabelled).await.unwrap_err();
        assert_eq!(err, JwtError::Invalid("the algorithm does not match the signing key"));
    }

    #[tokio::test]
    async fn tampered_token_is_rejected() {
        let issuer = TestIssuer::new().with_rsa();
        let server = serve(issuer.jwks()).await;
        let verifier = verifier(&server);
        for kid in ["k1", "r1"] {
            let token = issuer.token(kid, claims());
            let (signed, _) = token.rsplit_once('.').unwrap();
            let (header, _) = signed.split_once('.').unwrap();
            let mut c = claims();
            c["sub"] = json!("admin");
            let tampered_payload = format!("{header}.{}.{}", b64(&c), token.rsplit_once('.').unwrap().1);
            assert_eq!(verifier.verify(&tampered_payload).await.unwrap_err(), JwtError::Invalid("bad signature"));
            let mut sig = token.rsplit_once('.').unwrap().1.to_owned().into_bytes();
            sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
            let tampered_sig = format!("{signed}.{}", String::from_utf8(sig).unwrap());
            assert_eq!(verifier.verify(&tampered_sig).await.unwrap_err(), JwtError::Invalid("bad signature"));
        }
        assert_eq!(verifier.verify("not.a.jwt").await.unwrap_err(), JwtError::Invalid("malformed token"));
        assert_eq!(verifier.verify("garbage").await.unwrap_err(), JwtError::Invalid("malformed token"));
    }

    #[tokio::test]
    async fn kid_is_optional_with_a_single_key() {
        let issuer = TestIssuer::new();
        let server = serve(issuer.jwks()).await;
        verifier(&server).verify(&issuer.token_without_kid("k1", claims())).await.unwrap();

        let issuer = TestIssuer::new().with_rsa();
        let server = serve(issuer.jwks()).await;
        let err = verifier(&server).verify(&issuer.token_without_kid("k1", claims())).await.unwrap_err();
        assert_eq!(err, JwtError::Invalid("the token has no kid and the identity provider has several keys"));
    }

    #[tokio::test]
    async fn unusable_keys_are_skipped() {
        let issuer = TestIssuer::new();
        let mut jwks = issuer.jwks();
        let keys = jwks["keys"].as_array_mut().unwrap();
        let good = keys[0].clone();
        let mut enc = good.clone();
        enc["use"] = json!("enc");
        enc["kid"] = json!("enc-key");
        keys.insert(0, enc);
        keys.insert(0, json!({"kty": "OKP", "crv": "Ed25519", "x": "abc", "kid": "ed"}));
        keys.insert(0, json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}));
        keys.insert(0, json!({"kty": "RSA", "kid": "bad-rsa"}));
        keys.insert(0, json!({"kid": "no-kty"}));
        let mut wrong_alg = good.clone();
        wrong_alg["kid"] = json!("es384");
        wrong_alg["alg"] = json!("ES384");
        keys.push(wrong_alg);
        let server = serve(jwks).await;
        let verifier = verifier(&server);
        verifier.verify(&issuer.token("k1", claims())).await.unwrap();
        let forged = issuer.token("k1", claims());
        let (_, rest) = forged.split_once('.').unwrap();
        for kid in ["enc-key", "es384"] {
            let relabelled = format!("{}.{rest}", b64(&json!({"alg": "ES256", "kid": kid})));
            assert_eq!(verifier.verify(&relabelled).await.unwrap_err(), JwtError::Invalid("unknown signing key"));
        }
    }

    #[tokio::test]
    async fn jwks_errors_are_keys_unavailable() {
        let issuer = TestIssuer::new();
        let server = MockServer::start().await;
        Mock::given(method("GET")).and(path("/jwks")).respond_with(ResponseTemplate::new(500)).mount(&server).await;
        let err = verifier(&server).verify(&issuer.token("k1", claims())).await.unwrap_err();
        assert!(matches!(err, JwtError::KeysUnavailable(ref cause) if cause.contains("500")), "{err:?}");

        let server = serve(json!({"keys": []})).await;
        let err = verifier(&server).verify(&issuer.token("k1", claims())).await.unwrap_err();
        assert!(matches!(err, JwtError::KeysUnavailable(_)), "{err:?}");

        let server = MockServer::start().await;
        let big = "x".repeat(MAX_JWKS_BYTES + 1);
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_string(big))
            .mount(&server)
            .await;
        let err = verifier(&server).verify(&issuer.token("k1", claims())).await.unwrap_err();
        assert!(matches!(err, JwtError::KeysUnavailable(ref cause) if cause.contains("larger")), "{err:?}");

        let err = JwtVerifier::new(settings("http://127.0.0.1:1/jwks".to_owned()), http())
            .verify(&issuer.token("k1", claims()))
            .await
            .unwrap_err();
        assert!(matches!(err, JwtError::KeysUnavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn cached_keys_survive_a_provider_outage() {
        let mut issuer = TestIssuer::new();
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/jwks"))
            .respond_with(ResponseTemplate::new(200).set_body_json(issuer.jwks()))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("GET")).and(path("/jwks")).respond_with(ResponseTemplate::new(503)).mount(&server).await;
        let verifier = verifier(&server);
        verifier.verify(&issuer.token("k1", claims())).await.unwrap();
        let kid = issuer.rotate();
        // The new kid needs the provider: 503.
        assert!(matches!(verifier.verify(&issuer.token(&kid, claims())).await, Err(JwtError::KeysUnavailable(_))));
        // The cached key still works.
        verifier.verify(&issuer.token("k1", claims())).await.unwrap();
    }
}
