//! GitHub App authentication: the App's own JWT, and installation access tokens minted with it and
//! cached until shortly before they expire.
//!
//! An App authenticates as itself with a short-lived RS256 JWT signed by its private key, and
//! trades that JWT for an *installation access token* (one organization or user that installed
//! the App). Every token AI-CD mints is narrowed to what one task needs ([`TokenScope`]): one
//! repository (`repository_ids`) and the permissions of its purpose ([`TokenPurpose`]), so a token
//! that leaks, or a bug, reaches one repository with the least access. Tokens last an hour;
//! [`InstallationTokens`] mints one per installation and scope, hands the same one to every caller
//! until five minutes before it expires, and lets concurrent callers share a single mint. Neither
//! the private key nor any token ever appears in `Debug` output, errors or logs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use aicd_core::github::{GithubRepoId, InstallationId};
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::client::{Http, InstallationClient, Target, status_error};
use crate::{Error, Result};

/// The address of github.com's REST API, the default of [`InstallationTokens::new`]'s `api_url`.
/// GitHub Enterprise Server's is `https://<host>/api/v3`.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// How long before a cached installation token expires it is replaced by a new one.
pub const TOKEN_REFRESH_MARGIN: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// How far in the past an App JWT's `iat` is put, to allow for clock drift between us and GitHub.
const JWT_BACKDATE_SECS: i64 = 60;
/// How long after now an App JWT expires (GitHub refuses more than ten minutes).
const JWT_LIFETIME_SECS: i64 = 9 * 60;

/// A GitHub App's identity: its numeric id and its RSA private key.
///
/// The key is checked when the credentials are made (it must be a PEM-encoded RSA private key,
/// PKCS#1 `BEGIN RSA PRIVATE KEY` as GitHub issues it, or PKCS#8 `BEGIN PRIVATE KEY`), so a bad
/// key is found at start-up rather than at the first webhook. `Debug` prints the App id and never
/// the key.
#[derive(Clone)]
pub struct AppCredentials {
    app_id: u64,
    key: EncodingKey,
}

/// The claims of an App JWT.
#[derive(Serialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
    iss: String,
}

impl AppCredentials {
    /// Credentials for App `app_id` with the private key `private_key_pem` (the `.pem` file's
    /// contents). Fails with [`Error::InvalidPrivateKey`] if the key is not a usable RSA private
    /// key; the error never quotes the key.
    pub fn new(app_id: u64, private_key_pem: impl AsRef<[u8]>) -> Result<Self> {
        let key = EncodingKey::from_rsa_pem(private_key_pem.as_ref())
            .map_err(|e| Error::InvalidPrivateKey(format!("not a PEM-encoded RSA private key ({e})")))?;
        let credentials = Self { app_id, key };
        // `from_rsa_pem` only decodes the PEM armour; signing proves the key is a private RSA key.
        credentials.app_jwt()?;
        Ok(credentials)
    }

    /// The App's id (the JWT's `iss`).
    pub fn app_id(&self) -> u64 {
        self.app_id
    }

    /// A JWT authenticating as the App itself, as GitHub requires for `/app/...` endpoints:
    /// RS256, `iss` = the App id (as a string), `iat` = now − 60 s (allowing for clock drift) and
    /// `exp` = now + 9 min (GitHub refuses more than 10 minutes).
    pub fn app_jwt(&self) -> Result<String> {
        self.app_jwt_at(Utc::now())
    }

    /// [`AppCredentials::app_jwt`] as if it were `now`.
    pub fn app_jwt_at(&self, now: DateTime<Utc>) -> Result<String> {
        let now = now.timestamp();
        let claims =
            AppClaims { iat: now - JWT_BACKDATE_SECS, exp: now + JWT_LIFETIME_SECS, iss: self.app_id.to_string() };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| Error::InvalidPrivateKey(format!("signing the App JWT failed ({e})")))
    }
}

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredentials").field("app_id", &self.app_id).field("private_key", &"[REDACTED]").finish()
    }
}

/// An installation access token and when it expires. `Debug` prints the expiry and never the
/// token.
#[derive(Clone, PartialEq, Eq)]
pub struct InstallationToken {
    token: String,
    expires_at: DateTime<Utc>,
}

impl InstallationToken {
    /// A token (for tests and for callers that obtained one elsewhere).
    pub fn new(token: impl Into<String>, expires_at: DateTime<Utc>) -> Self {
        Self { token: token.into(), expires_at }
    }

    /// The token itself, to send as `Authorization: Bearer <token>`. Never log it.
    pub fn secret(&self) -> &str {
        &self.token
    }

    /// When GitHub stops accepting it.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
    }

    /// Whether it is still worth handing out at `now`: more than [`TOKEN_REFRESH_MARGIN`] before
    /// it expires.
    pub fn is_fresh_at(&self, now: DateTime<Utc>) -> bool {
        let margin = TimeDelta::from_std(TOKEN_REFRESH_MARGIN).unwrap_or(TimeDelta::MAX);
        now.checked_add_signed(margin).is_some_and(|t| t < self.expires_at)
    }
}

impl std::fmt::Debug for InstallationToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationToken").field("token", &"[REDACTED]").field("expires_at", &self.expires_at).finish()
    }
}

/// What a token is for: the permissions it is minted with.
///
/// | purpose | permissions |
/// |---|---|
/// | [`Read`](TokenPurpose::Read) | contents: read, metadata: read |
/// | [`Push`](TokenPurpose::Push) | contents: write, metadata: read |
/// | [`PullRequest`](TokenPurpose::PullRequest) | pull_requests: write, contents: read, metadata: read |
/// | [`Converse`](TokenPurpose::Converse) | issues: write, metadata: read |
/// | [`ListRepositories`](TokenPurpose::ListRepositories) | metadata: read |
///
/// The App must have been granted at least these (its documented permissions: contents, issues
/// and pull requests read and write, metadata read); GitHub refuses a token for more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenPurpose {
    /// Reading a repository's files (a job's view, a diff).
    Read,
    /// Creating, committing to and deleting a job's branch.
    Push,
    /// Opening (or finding) a job's pull request.
    PullRequest,
    /// Commenting in a repository's issues (a job's progress, replies to commands), and reading a
    /// collaborator's permission.
    Converse,
    /// Listing the repositories an installation reaches (not narrowed to one repository).
    ListRepositories,
}

impl TokenPurpose {
    /// The `permissions` object of the mint request.
    fn permissions(self) -> serde_json::Value {
        match self {
            TokenPurpose::Read => serde_json::json!({ "contents": "read", "metadata": "read" }),
            TokenPurpose::Push => serde_json::json!({ "contents": "write", "metadata": "read" }),
            TokenPurpose::PullRequest => serde_json::json!({
                "pull_requests": "write", "contents": "read", "metadata": "read"
            }),
            TokenPurpose::Converse => serde_json::json!({ "issues": "write", "metadata": "read" }),
            TokenPurpose::ListRepositories => serde_json::json!({ "metadata": "read" }),
        }
    }
}

/// What one installation token may reach: the installation, at most one of its repositories, and
/// the permissions of a [`TokenPurpose`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenScope {
    /// The installation the token acts as.
    pub installation: InstallationId,
    /// The one repository it reaches (`repository_ids`); `None` for every repository of the
    /// installation, which only [`TokenPurpose::ListRepositories`] should need.
    pub repository: Option<GithubRepoId>,
    /// What it may do there.
    pub purpose: TokenPurpose,
}

impl TokenScope {
    /// A token for `purpose` on one repository of an installation.
    pub fn repository(installation: InstallationId, repository: GithubRepoId, purpose: TokenPurpose) -> Self {
        Self { installation, repository: Some(repository), purpose }
    }

    /// A token that lists an installation's repositories (metadata only, all its repositories).
    pub fn listing(installation: InstallationId) -> Self {
        Self { installation, repository: None, purpose: TokenPurpose::ListRepositories }
    }

    /// The body of `POST /app/installations/{id}/access_tokens`.
    fn request_body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "permissions": self.purpose.permissions() });
        if let Some(repository) = self.repository {
            body["repository_ids"] = serde_json::json!([repository.as_u64()]);
        }
        body
    }
}

/// The body of `POST /app/installations/{id}/access_tokens`'s answer (only what is used).
#[derive(Deserialize)]
struct MintedToken {
    token: String,
    expires_at: DateTime<Utc>,
}

/// How many scopes the cache holds before it first sweeps out those without a fresh token.
const SWEEP_AT: usize = 1024;

/// One scope's slot in the cache: held while minting, so concurrent callers wait for the mint in
/// progress and share its token.
type Slot = Arc<tokio::sync::Mutex<Option<InstallationToken>>>;

/// The App's connection to one GitHub (github.com or an Enterprise Server): its credentials, the
/// API address, the HTTP client and a cache of installation access tokens.
///
/// Cheap to clone; clones share the HTTP client and the cache, so a process needs one. Tokens are
/// minted with `POST {api_url}/app/installations/{id}/access_tokens` (authenticated with
/// [`AppCredentials::app_jwt`], narrowed to a [`TokenScope`]), cached per scope until
/// [`TOKEN_REFRESH_MARGIN`] before their `expires_at`, and minted once for all the callers that
/// ask for the same scope at the same time.
#[derive(Clone)]
pub struct InstallationTokens {
    inner: Arc<Inner>,
}

struct Inner {
    credentials: AppCredentials,
    http: Http,
    slots: Mutex<HashMap<TokenScope, Slot>>,
    /// The cache size at which the next miss sweeps it.
    sweep_at: AtomicUsize,
}

impl InstallationTokens {
    /// Tokens for the App `credentials` from the GitHub whose REST API is at `api_url`
    /// ([`DEFAULT_API_URL`] for github.com, `https://<host>/api/v3` for an Enterprise Server, a
    /// mock server's address in tests). Fails with [`Error::InvalidApiUrl`] unless `api_url` is an
    /// absolute `http` or `https` URL.
    ///
    /// TLS uses rustls with the process's default crypto provider if one is installed, else
    /// `ring`, and the Mozilla root certificates. Connecting times out after 10 s and reading an
    /// answer after 60 s. The HTTP client is built at the first request, on that request's Tokio
    /// runtime, and serves requests on it from then on: use the tokens (and their clones) within
    /// one runtime.
    pub fn new(credentials: AppCredentials, api_url: &str) -> Result<Self> {
        let mut http = Http::new(api_url)?;
        let agent = format!("aicd/{} (GitHub App {})", env!("CARGO_PKG_VERSION"), credentials.app_id);
        if let Ok(agent) = http::HeaderValue::from_str(&agent) {
            http.user_agent = agent;
        }
        let inner =
            Inner { credentials, http, slots: Mutex::new(HashMap::new()), sweep_at: AtomicUsize::new(SWEEP_AT) };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// Names the App by its slug in every request's `User-Agent` (`<slug> (aicd/<version>)`), as
    /// GitHub asks of Apps; without it the App id is named. A slug that cannot be sent in a header
    /// is ignored. Call it before cloning: clones made earlier keep the previous name.
    #[must_use]
    pub fn with_app_slug(mut self, slug: &str) -> Self {
        let agent = format!("{slug} (aicd/{})", env!("CARGO_PKG_VERSION"));
        if let (Some(inner), Ok(agent)) = (Arc::get_mut(&mut self.inner), http::HeaderValue::from_str(&agent)) {
            inner.http.user_agent = agent;
        }
        self
    }

    /// The REST API address given to [`InstallationTokens::new`], without a trailing `/`.
    pub fn api_url(&self) -> &str {
        self.inner.http.api_url()
    }

    /// The App's credentials.
    pub fn credentials(&self) -> &AppCredentials {
        &self.inner.credentials
    }

    /// A REST client acting within `scope`.
    pub fn client(&self, scope: TokenScope) -> InstallationClient {
        InstallationClient::new(self.clone(), scope)
    }

    /// A token for `scope`: the cached one while it has more than [`TOKEN_REFRESH_MARGIN`] left,
    /// else a new one (one mint for all concurrent callers).
    ///
    /// Errors are [`aicd_core::Error::Unavailable`] (`service` `github`) for network failures, 5xx
    /// and rate limits (with GitHub's `retry_after` when it gave one), and
    /// [`aicd_core::Error::Rejected`] when GitHub refuses for good: the installation no longer
    /// exists or is suspended, or the App's credentials are refused.
    pub async fn token(&self, scope: TokenScope) -> aicd_core::Result<InstallationToken> {
        let slot = self.slot(scope);
        let mut cached = slot.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| t.is_fresh_at(Utc::now())) {
            return Ok(token.clone());
        }
        let token = self.mint(scope).await?;
        *cached = Some(token.clone());
        Ok(token)
    }

    /// Drops the cached token of `scope` if it still is `stale` (GitHub refused it), so the next
    /// [`InstallationTokens::token`] mints a new one.
    pub async fn forget(&self, scope: TokenScope, stale: &InstallationToken) {
        let slot = self.slot(scope);
        let mut cached = slot.lock().await;
        if cached.as_ref() == Some(stale) {
            *cached = None;
        }
    }

    /// Drops every cached token of `installation` (it was unlinked or suspended here).
    pub fn forget_installation(&self, installation: InstallationId) {
        let mut slots = self.inner.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|scope, _| scope.installation != installation);
    }

    fn slot(&self, scope: TokenScope) -> Slot {
        let mut slots = self.inner.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.len() >= self.inner.sweep_at.load(Ordering::Relaxed) && !slots.contains_key(&scope) {
            // Scopes multiply with repositories and purposes: drop the slots nobody holds (only the
            // map has them, so no caller is about to lock one) whose token is no longer fresh.
            let now = Utc::now();
            slots.retain(|_, slot| {
                Arc::strong_count(slot) > 1
                    || slot.try_lock().map_or(true, |token| token.as_ref().is_some_and(|t| t.is_fresh_at(now)))
            });
            // Sweep again only once the cache has doubled, so a cache full of fresh tokens is not
            // scanned on every miss.
            self.inner.sweep_at.store((slots.len() * 2).max(SWEEP_AT), Ordering::Relaxed);
        }
        slots.entry(scope).or_default().clone()
    }

    /// How many scopes have a slot in the cache.
    #[cfg(test)]
    fn cached_scopes(&self) -> usize {
        self.inner.slots.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    async fn mint(&self, scope: TokenScope) -> aicd_core::Result<InstallationToken> {
        let installation_id = scope.installation.as_u64();
        let jwt = self.inner.credentials.app_jwt().map_err(|e| aicd_core::Error::Rejected {
            service: "github",
            message: format!("cannot authenticate as the GitHub App: {e}"),
        })?;
        let path = format!("/app/installations/{installation_id}/access_tokens");
        let reply = self.inner.http.send(http::Method::POST, &path, &jwt, Some(&scope.request_body())).await?;
        let target = Target::Installation(installation_id);
        if !reply.status.is_success() {
            return Err(status_error(&reply, &target));
        }
        let minted: MintedToken = reply.json(&target)?;
        tracing::debug!(
            installation_id,
            repository = scope.repository.map(GithubRepoId::get),
            purpose = ?scope.purpose,
            expires_at = %minted.expires_at,
            "minted a GitHub installation token"
        );
        Ok(InstallationToken { token: minted.token, expires_at: minted.expires_at })
    }

    pub(crate) fn http(&self) -> &Http {
        &self.inner.http
    }
}

impl std::fmt::Debug for InstallationTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallationTokens")
            .field("app_id", &self.inner.credentials.app_id)
            .field("api_url", &self.api_url())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cache_sweeps_out_scopes_without_a_fresh_token() {
        let key = aicd_testkit::rsa_key_pair().private_pem.clone();
        let tokens = InstallationTokens::new(AppCredentials::new(1, &key).unwrap(), "http://127.0.0.1:9").unwrap();
        let installation = InstallationId::from_u64(7).unwrap();
        let scope = |n: i64| TokenScope::repository(installation, GithubRepoId::new(n).unwrap(), TokenPurpose::Read);
        // A live token in one slot, a slot being minted into, and many stale ones.
        *tokens.slot(scope(1)).lock().await =
            Some(InstallationToken::new("ghs_live", Utc::now() + TimeDelta::hours(1)));
        let minting = tokens.slot(scope(2));
        let _held = minting.lock().await;
        for n in 3..=(SWEEP_AT as i64 + 10) {
            *tokens.slot(scope(n)).lock().await = Some(InstallationToken::new("ghs_old", Utc::now()));
        }
        assert!(tokens.cached_scopes() < SWEEP_AT, "{} scopes kept", tokens.cached_scopes());
        let live = tokens.slot(scope(1));
        assert_eq!(live.lock().await.as_ref().map(|t| t.secret().to_owned()).as_deref(), Some("ghs_live"));
        assert!(Arc::ptr_eq(&tokens.slot(scope(2)), &minting), "a slot in use is kept");
    }

    #[test]
    fn a_token_is_fresh_until_five_minutes_before_it_expires() {
        let now = Utc::now();
        let token = InstallationToken::new("ghs_secret", now + TimeDelta::minutes(6));
        assert!(token.is_fresh_at(now));
        assert!(!token.is_fresh_at(now + TimeDelta::minutes(1) + TimeDelta::seconds(1)));
        assert!(!format!("{token:?}").contains("ghs_secret"));
    }

    #[test]
    fn keys_that_are_not_rsa_private_keys_are_refused_without_quoting_them() {
        for bad in ["", "not a key", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n"] {
            let err = AppCredentials::new(1, bad).unwrap_err();
            assert!(matches!(err, Error::InvalidPrivateKey(_)), "{err}");
            assert!(!err.to_string().contains("AAAA"), "{err}");
        }
    }
}
