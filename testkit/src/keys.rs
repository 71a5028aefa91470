//! An RSA key pair for a GitHub App's private key in tests.

use std::sync::OnceLock;

/// A 2048-bit RSA key pair, PEM-encoded (PKCS#1), as GitHub hands out App private keys.
#[derive(Debug)]
pub struct RsaKeyPair {
    /// The private key (`-----BEGIN RSA PRIVATE KEY-----`).
    pub private_pem: String,
    /// The public key (`-----BEGIN RSA PUBLIC KEY-----`), to verify what the private key signed.
    pub public_pem: String,
}

/// One key pair per test binary: generating a 2048-bit key takes a while, so it is done once.
pub fn rsa_key_pair() -> &'static RsaKeyPair {
    static KEYS: OnceLock<RsaKeyPair> = OnceLock::new();
    KEYS.get_or_init(|| {
        use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
        let private = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generating an RSA key");
        let line = rsa::pkcs8::LineEnding::LF;
        RsaKeyPair {
            private_pem: private.to_pkcs1_pem(line).expect("PEM-encoding the private key").to_string(),
            public_pem: private.to_public_key().to_pkcs1_pem(line).expect("PEM-encoding the public key"),
        }
    })
}
