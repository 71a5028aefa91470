//! A stand-in OIDC identity provider for tests: signing keys generated at run time, their public
//! JWKS, and signed tokens.
//!
//! Serve [`TestIssuer::jwks`] (e.g. with wiremock) at the server's JWKS URL and send
//! [`TestIssuer::token`]s as bearer tokens.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::EncodePrivateKey as _;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::rand_core::OsRng;
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};

/// One signing key with its public JWK.
struct SigningKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

/// Signing keys of a test identity provider.
pub struct TestIssuer {
    keys: Vec<SigningKey>,
}

impl Default for TestIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TestIssuer {
    /// An issuer with one fresh ES256 key, kid `k1`.
    pub fn new() -> Self {
        Self { keys: vec![ec_key("k1".to_owned())] }
    }

    /// Adds an RS256 key, kid `r1`. The 2048-bit RSA key is generated once per test process and
    /// shared by every issuer of that process (generating one is slow in debug builds).
    pub fn with_rsa(mut self) -> Self {
        self.keys.push(rsa_key("r1".to_owned()));
        self
    }

    /// Adds a fresh ES256 key and returns its kid; [`TestIssuer::jwks`] includes it from now on.
    pub fn rotate(&mut self) -> String {
        // Kids are unique: the number grows with every key added.
        let kid = format!("k{}", self.keys.len() + 1);
        self.keys.push(ec_key(kid.clone()));
        kid
    }

    /// The public keys: `{"keys": [...]}`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// `claims` signed with the key `kid` (RS256 for the RSA key, ES256 otherwise), with `kid` in
    /// the header. Panics if there is no such key.
    pub fn token(&self, kid: &str, claims: Value) -> String {
        self.sign(kid, Some(kid), claims)
    }

    /// Like [`TestIssuer::token`] but without `kid` in the header.
    pub fn token_without_kid(&self, kid: &str, claims: Value) -> String {
        self.sign(kid, None, claims)
    }

    fn sign(&self, kid: &str, header_kid: Option<&str>, claims: Value) -> String {
        let key = self.keys.iter().find(|k| k.kid == kid).unwrap_or_else(|| panic!("TestIssuer has no key {kid:?}"));
        let header = Header { kid: header_kid.map(str::to_owned), ..Header::new(key.alg) };
        jsonwebtoken::encode(&header, &claims, &key.encoding).expect("signing a test token")
    }

    /// Typical claims: `iss`, `aud`, `sub`, `iat` now and `exp` in ten minutes.
    pub fn claims(issuer: &str, audience: &str, subject: &str) -> Value {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is after 1970").as_secs();
        json!({ "iss": issuer, "aud": audience, "sub": subject, "iat": now, "exp": now + 600 })
    }
}

fn ec_key(kid: String) -> SigningKey {
    let secret = p256::SecretKey::random(&mut OsRng);
    let der = secret.to_pkcs8_der().expect("PKCS#8-encoding a P-256 key");
    let point = secret.public_key().to_encoded_point(false);
    let (Some(x), Some(y)) = (point.x(), point.y()) else { panic!("an uncompressed point has x and y") };
    let jwk = json!({
        "kty": "EC",
        "crv": "P-256",
        "use": "sig",
        "alg": "ES256",
        "kid": kid,
        "x": URL_SAFE_NO_PAD.encode(x),
        "y": URL_SAFE_NO_PAD.encode(y),
    });
    SigningKey { kid, alg: Algorithm::ES256, encoding: EncodingKey::from_ec_der(der.as_bytes()), jwk }
}

/// The process's RSA key: PKCS#1 DER of the private key, and the public n and e.
fn shared_rsa() -> &'static (Vec<u8>, Vec<u8>, Vec<u8>) {
    static KEY: OnceLock<(Vec<u8>, Vec<u8>, Vec<u8>)> = OnceLock::new();
    KEY.get_or_init(|| {
        let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("generating an RSA key");
        let der = key.to_pkcs1_der().expect("PKCS#1-encoding an RSA key");
        (der.as_bytes().to_vec(), key.n().to_bytes_be(), key.e().to_bytes_be())
    })
}

fn rsa_key(kid: String) -> SigningKey {
    let (der, n, e) = shared_rsa();
    let jwk = json!({
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(n),
        "e": URL_SAFE_NO_PAD.encode(e),
    });
    SigningKey { kid, alg: Algorithm::RS256, encoding: EncodingKey::from_rsa_der(der), jwk }
}
