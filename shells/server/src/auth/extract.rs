//! The [`Auth`] and [`OrgScope`] extractors.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aicd_core::tenancy::{Actor, ApiKeySecret, KEY_PREFIX, NewUser, User};
use aicd_core::{Core, OrgId};
use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::header;
use axum::http::request::Parts;

use super::jwt::{JwtError, JwtVerifier};
use crate::error::ApiError;
use crate::middleware::rate_limited;
use crate::ratelimit::Decision;
use crate::state::AppState;

/// Who is calling, once their token has been checked.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// A person signed in through the identity provider (a JWT).
    User(User),
    /// A program with an API key, which belongs to exactly one organization.
    ApiKey(Actor),
}

impl Caller {
    /// The rate-limit bucket of this caller.
    fn rate_key(&self) -> String {
        match self {
            Caller::User(user) => format!("user:{}", user.id),
            Caller::ApiKey(actor) => format!("key:{}", actor.principal.label()),
        }
    }

    /// This caller acting in `org`; another organization's id answers 404 like a missing one.
    pub(crate) async fn actor_in(&self, core: &Core, org: OrgId) -> Result<Actor, ApiError> {
        match self {
            Caller::ApiKey(actor) if actor.org_id == org => Ok(actor.clone()),
            Caller::ApiKey(_) => Err(ApiError::not_found("organization")),
            Caller::User(user) => Ok(core.user_actor(user.id, org).await?),
        }
    }
}

/// How long a verified JWT subject's user record is reused before it is read (and its profile
/// refreshed) again.
const USER_CACHE_TTL: Duration = Duration::from_secs(300);
const USER_CACHE_MAX: usize = 10_000;

/// Turns bearer tokens into callers.
pub(crate) struct Authenticator {
    jwt: Option<JwtVerifier>,
    users: Mutex<HashMap<String, (User, Instant)>>,
}

impl Authenticator {
    /// API keys always; JWTs only when an identity provider is configured.
    pub(crate) fn new(jwt: Option<JwtVerifier>) -> Self {
        Self { jwt, users: Mutex::new(HashMap::new()) }
    }

    /// Checks `token`: an API key (`aicd_...`) or a JWT from the identity provider. A JWT subject
    /// seen for the first time becomes a user.
    pub(crate) async fn authenticate(&self, core: &Core, token: &str) -> Result<Caller, ApiError> {
        if token.starts_with(KEY_PREFIX) {
            let actor = core.authenticate_api_key(&ApiKeySecret::new(token)).await?;
            return Ok(Caller::ApiKey(actor));
        }
        let Some(jwt) = &self.jwt else {
            return Err(ApiError::unauthenticated(
                "invalid token: this server accepts API keys only (no identity provider is configured)",
            ));
        };
        let claims = jwt.verify(token).await.map_err(|e| match e {
            JwtError::Invalid(reason) => ApiError::unauthenticated(format!("invalid token: {reason}")),
            JwtError::KeysUnavailable(cause) => {
                tracing::warn!(%cause, "the identity provider's keys are unavailable");
                ApiError::unavailable("the identity provider's keys cannot be fetched; try again shortly")
            }
        })?;
        if let Some(user) = self.cached_user(&claims.subject) {
            return Ok(Caller::User(user));
        }
        let user =
            core.sign_in(NewUser { subject: claims.subject.clone(), email: claims.email, name: claims.name }).await?;
        self.cache_user(claims.subject, user.clone());
        Ok(Caller::User(user))
    }

    fn cached_user(&self, subject: &str) -> Option<User> {
        let users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        users.get(subject).filter(|(_, at)| at.elapsed() < USER_CACHE_TTL).map(|(user, _)| user.clone())
    }

    fn cache_user(&self, subject: String, user: User) {
        let mut users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if users.len() >= USER_CACHE_MAX {
            users.retain(|_, (_, at)| at.elapsed() < USER_CACHE_TTL);
            if users.len() >= USER_CACHE_MAX {
                users.clear();
            }
        }
        users.insert(subject, (user, Instant::now()));
    }
}

/// An authenticated caller (401 without valid credentials; 429 over the caller's rate limit).
pub(crate) struct Auth(pub(crate) Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(Auth(caller.clone()));
        }
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthenticated("missing credentials: send `Authorization: Bearer <token>`"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|token| !token.is_empty() && token.len() <= 8192)
            .ok_or_else(|| ApiError::unauthenticated("malformed Authorization header: use `Bearer <token>`"))?;
        let caller = state.auth().authenticate(state.core(), token).await?;
        let limit = state.settings().rate_limit_per_minute;
        if let Decision::Limited { retry_after } = state.limiter().check(&caller.rate_key(), limit).await {
            state.metrics().rate_limited(match caller {
                Caller::User(_) => "user",
                Caller::ApiKey(_) => "api_key",
            });
            return Err(rate_limited(retry_after));
        }
        parts.extensions.insert(caller.clone());
        Ok(Auth(caller))
    }
}

/// An authenticated caller acting in the organization named by the `{org_id}` path segment.
/// Organizations the caller cannot see answer 404; past the organization's rate limit
/// (`AICD_ORG_RATE_LIMIT_PER_MINUTE`, all its callers together), 429.
pub(crate) struct OrgScope {
    pub(crate) actor: Actor,
    pub(crate) org: OrgId,
}

impl FromRequestParts<AppState> for OrgScope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Auth(caller) = Auth::from_request_parts(parts, state).await?;
        let params =
            RawPathParams::from_request_parts(parts, state).await.map_err(|_| ApiError::not_found("organization"))?;
        let org = params
            .iter()
            .find(|(name, _)| *name == "org_id")
            .and_then(|(_, value)| value.parse::<uuid::Uuid>().ok())
            .map(OrgId::from)
            .ok_or_else(|| ApiError::not_found("organization"))?;
        let actor = caller.actor_in(state.core(), org).await?;
        // One bucket per organization beside each caller's: many keys of one tenant together
        // cannot take more than its share. Counted only for callers that may act in it.
        let limit = state.settings().org_rate_limit_per_minute;
        if let Decision::Limited { retry_after } = state.limiter().check(&format!("org:{org}"), limit).await {
            state.metrics().rate_limited("org");
            return Err(rate_limited(retry_after));
        }
        Ok(OrgScope { actor, org })
    }
}
