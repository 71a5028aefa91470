//! Linking an installation of the App to an AI-CD organization, with proof that the person
//! linking controls it.
//!
//! An installation's id is a small public-ish number, and GitHub redirects to the App's setup URL
//! with it in the query, where anyone can change it. So an id alone proves nothing. Nor does a
//! redirect: whoever started an install link can send it to someone else, and GitHub sends *that*
//! person back with a code proving *their* control. So the flow binds the link to the person who
//! asked for it, twice over:
//!
//! 1. An org admin asks AI-CD for an install URL ([`InstallFlow::start`]). AI-CD records a pending
//!    link (single use, expiring) for the org and that admin, and puts its secret nonce in the
//!    URL's `state`, signed.
//! 2. The admin installs the App on GitHub. GitHub redirects the browser to the App's setup
//!    (callback) URL with `installation_id`, `setup_action`, `state` and, with *Request user
//!    authorization (OAuth) during installation*, a `code` (without it, [`InstallFlow::complete`]
//!    first sends the browser to authorize). The redirect itself carries no AI-CD credentials, so
//!    it links nothing: the web app's setup page hands the query to the API, **signed in as the
//!    same person** (a server without a web app only answers the redirect,
//!    [`InstallFlow::landing`], and never shows its code: the code proves the installer's control
//!    to whoever holds it).
//! 3. [`InstallFlow::complete`] checks the state's signature, its organization and expiry, and
//!    that the caller is who started it; trades `code` for a user access token through the App's
//!    OAuth client; and asks GitHub, as that user, whether they control the installation: `GET
//!    /user/installations` must list it, and for an organization account the user must be an
//!    admin of the organization (`GET /user/memberships/orgs/{org}`); for a personal account it
//!    must be theirs (`GET /user`). Only then is the pending link used up and the installation
//!    linked, in one step, and its repositories registered. The user token is used for this check
//!    only, revoked afterwards, and never stored.
//!
//! Everything fails closed: without a configured App and OAuth client, with GitHub unavailable or
//! rate limiting, with a state that is missing, forged, expired, used or someone else's, nothing
//! is linked; a failure before the link leaves the state usable for another try. An installation
//! linked to another organization gets the same answer as one that is not the user's
//! ([`Error::InstallationNotVerified`]).

mod state;

use std::time::Duration;

use aicd_core::github::{GithubRepoId, GithubRepoInfo, Installation, InstallationId};
use aicd_core::tenancy::Actor;
use aicd_core::{Core, OrgId};
use base64::Engine;
use chrono::Utc;
use http::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use self::state::{NONCE_BYTES, StateClaims, StateKey};
use crate::app::{InstallationTokens, TokenScope};
use crate::client::{Http, MEDIA_TYPE, Reply, Target, encode, sensitive, status_error};
use crate::{Error, Result};

/// How long an install URL may be used, by default.
pub const DEFAULT_STATE_TTL: Duration = Duration::from_secs(30 * 60);

/// The address of github.com's web pages (the install page, the OAuth endpoints).
pub const DEFAULT_WEB_URL: &str = "https://github.com";

/// The most pages of `GET /user/installations` read (100 installations each).
const MAX_INSTALLATION_PAGES: u32 = 10;

/// What the setup flow needs: the App's slug (its install page), its OAuth client, where GitHub's
/// web pages are, and where this server is reached.
#[derive(Clone)]
pub struct SetupSettings {
    /// The App's slug, as in `github.com/apps/<slug>`.
    pub app_slug: String,
    /// The App's OAuth client id (its settings page, "Client ID").
    pub client_id: String,
    /// The App's OAuth client secret. Never printed.
    pub client_secret: String,
    /// GitHub's web address: [`DEFAULT_WEB_URL`], or `https://<host>` for GitHub Enterprise
    /// Server.
    pub web_url: String,
    /// Where GitHub sends the browser back after authorizing (one of the App's callback URLs: the
    /// web app's page that completes the setup, or this server's `/github/setup`), used when
    /// GitHub's setup redirect carries no `code`. `None`: such redirects are refused, saying why.
    pub callback_url: Option<String>,
    /// How long an install URL may be used ([`DEFAULT_STATE_TTL`]).
    pub state_ttl: Duration,
}

impl std::fmt::Debug for SetupSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupSettings")
            .field("app_slug", &self.app_slug)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[REDACTED]")
            .field("web_url", &self.web_url)
            .field("callback_url", &self.callback_url)
            .field("state_ttl", &self.state_ttl)
            .finish()
    }
}

/// Where to send the person installing the App ([`InstallFlow::start`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InstallLink {
    /// The App's install page on GitHub, with the signed `state`.
    pub install_url: String,
    /// Until when it may be used.
    pub expires_at: chrono::DateTime<Utc>,
}

/// The query of GitHub's redirect to the setup (callback) URL, as received (and as the web app
/// hands it to the API). Every field is optional here; [`InstallFlow::complete`] says what is
/// missing.
#[derive(Clone, Default, Deserialize, serde::Serialize)]
pub struct SetupCallback {
    /// The installation GitHub says was installed (untrusted: anyone can write it).
    pub installation_id: Option<String>,
    /// `install`, `update` or `request`.
    pub setup_action: Option<String>,
    /// The state from [`InstallFlow::start`].
    pub state: Option<String>,
    /// The OAuth authorization code (with user authorization during installation).
    pub code: Option<String>,
}

impl std::fmt::Debug for SetupCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetupCallback")
            .field("installation_id", &self.installation_id)
            .field("setup_action", &self.setup_action)
            .field("state", &self.state.as_ref().map(|_| "[REDACTED]"))
            .field("code", &self.code.as_ref().map(|_| "[REDACTED]"))
            .finish()
    }
}

/// What GitHub's redirect asks of the browser ([`InstallFlow::landing`]): nothing is linked yet.
#[derive(Clone, Debug, PartialEq)]
pub enum Landing {
    /// GitHub sent no authorization code: send the browser here to authorize the App first.
    Authorize {
        /// GitHub's authorization page.
        url: String,
    },
    /// Hand the redirect's query to [`InstallFlow::complete`], signed in as whoever started the
    /// install link, to link the installation to `org`.
    Complete {
        /// The organization the state names.
        org: OrgId,
        /// The installation GitHub says was made (not yet verified).
        installation_id: InstallationId,
    },
}

/// What completing the setup did.
#[derive(Clone, Debug, PartialEq)]
pub enum SetupOutcome {
    /// GitHub sent no authorization code: send the browser here to authorize the App, after which
    /// GitHub comes back to the setup URL with one (the state is not used up meanwhile).
    Authorize {
        /// GitHub's authorization page.
        url: String,
    },
    /// The installation is linked to the organization.
    Linked(LinkedInstallation),
}

/// A linked installation, and what became of its repositories.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LinkedInstallation {
    /// The installation as linked.
    #[serde(flatten)]
    pub installation: Installation,
    /// How many of its repositories were registered (`None` when they could not be listed; they
    /// then follow the installation's later events).
    pub repositories_synced: Option<usize>,
    /// Why the repositories could not be listed, if they could not.
    pub sync_error: Option<String>,
}

/// An installation as the signed-in user sees it (`GET /user/installations`).
#[derive(Deserialize)]
struct UserInstallation {
    id: u64,
    account: Option<Account>,
}

#[derive(Deserialize)]
struct Account {
    login: String,
    id: u64,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct UserInstallations {
    #[serde(default)]
    installations: Vec<UserInstallation>,
}

#[derive(Deserialize)]
struct Membership {
    state: Option<String>,
    role: Option<String>,
}

#[derive(Deserialize)]
struct User {
    login: String,
    id: u64,
}

#[derive(Deserialize)]
struct OAuthReply {
    access_token: Option<String>,
    error: Option<String>,
}

/// A user access token, used for the check and dropped. `Debug` never shows it.
struct UserToken(String);

impl std::fmt::Debug for UserToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserToken([REDACTED])")
    }
}

/// The App's setup flow over `core`. Cheap to clone.
#[derive(Clone)]
pub struct InstallFlow {
    core: Core,
    tokens: InstallationTokens,
    web: std::sync::Arc<Http>,
    settings: SetupSettings,
    key: StateKey,
}

impl std::fmt::Debug for InstallFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallFlow").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl InstallFlow {
    /// The flow linking installations of `tokens`' App into `core`'s store. Fails with
    /// [`Error::SetupNotConfigured`] when a setting is empty, and [`Error::InvalidApiUrl`] when
    /// the web URL is not an absolute http(s) URL.
    pub fn new(core: Core, tokens: InstallationTokens, settings: SetupSettings) -> Result<Self> {
        if settings.app_slug.trim().is_empty() {
            return Err(Error::SetupNotConfigured("the App's slug is not set"));
        }
        if settings.client_id.trim().is_empty() || settings.client_secret.is_empty() {
            return Err(Error::SetupNotConfigured("the App's OAuth client id and secret are not set"));
        }
        let mut web = Http::new(&settings.web_url)?;
        web.user_agent = tokens.http().user_agent.clone();
        let key = StateKey::derive(&settings.client_secret)?;
        Ok(Self { core, tokens, web: std::sync::Arc::new(web), settings, key })
    }

    /// Starts linking an installation to `org` (needs [`aicd_core::tenancy::Permission::IntegrationManage`]):
    /// records a single-use pending link for `actor`, and returns the App's install page with its
    /// signed state, valid for the configured time.
    pub async fn start(&self, actor: &Actor, org: OrgId) -> Result<InstallLink> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce)
            .map_err(|_| Error::SetupNotConfigured("this machine has no source of random numbers"))?;
        let ttl = chrono::Duration::from_std(self.settings.state_ttl).unwrap_or(chrono::Duration::minutes(30));
        // Whole seconds: the state carries its expiry in seconds.
        let expires_at = chrono::DateTime::from_timestamp((Utc::now() + ttl).timestamp(), 0).unwrap_or_else(Utc::now);
        self.core.start_github_install(actor, org, Sha256::digest(nonce).to_vec(), expires_at).await?;
        let state = self.key.sign(&StateClaims { org, nonce: nonce.to_vec(), expires_at });
        let web = self.web.api_url();
        // github.com's App pages are /apps/<slug>; GitHub Enterprise Server's /github-apps/<slug>.
        let apps = if web == DEFAULT_WEB_URL { "apps" } else { "github-apps" };
        let slug = encode(self.settings.app_slug.trim(), false);
        let install_url = format!("{web}/{apps}/{slug}/installations/new?state={}", encode(&state, false));
        Ok(InstallLink { install_url, expires_at })
    }

    /// What to do with GitHub's redirect to the setup URL, which carries no AI-CD credentials:
    /// authorize first (no `code`), or complete it signed in. Checks the state's signature and
    /// expiry only (the database is not read, nothing is used up or linked). A page answering the
    /// redirect must not show the code: it would let whoever the installer forwards it to complete
    /// the link as themselves.
    ///
    /// Errors: [`Error::InvalidSetupState`] and [`Error::InvalidSetupRequest`].
    pub fn landing(&self, callback: &SetupCallback) -> Result<Landing> {
        let (claims, state, installation) = self.read_callback(callback)?;
        match callback.code.as_deref().filter(|c| !c.is_empty()) {
            None => self.authorize(installation, state),
            Some(_) => Ok(Landing::Complete { org: claims.org, installation_id: installation }),
        }
    }

    /// Completes the setup for `actor` in `org`: links the installation once the state is shown
    /// to be `actor`'s own for `org` and the GitHub user's control of the installation is proven
    /// (see the [module documentation](self)), then registers its repositories. Without a `code`,
    /// returns where to authorize first ([`SetupOutcome::Authorize`]).
    ///
    /// Errors, none of which links anything: [`Error::InvalidSetupState`] (also for a state of
    /// another organization or person), [`Error::InvalidSetupRequest`],
    /// [`Error::InstallationNotVerified`], [`Error::Core`] with [`aicd_core::Error::Forbidden`]
    /// when `actor` may not manage integrations, and with [`aicd_core::Error::Unavailable`] when
    /// GitHub cannot be asked (a network failure, a 5xx, a rate limit); the state then stays
    /// usable.
    pub async fn complete(&self, actor: &Actor, org: OrgId, callback: SetupCallback) -> Result<SetupOutcome> {
        self.core.check_permission(actor, org, aicd_core::tenancy::Permission::IntegrationManage)?;
        let (claims, state, installation) = self.read_callback(&callback)?;
        if claims.org != org {
            return Err(Error::InvalidSetupState("the state was issued for another organization"));
        }
        let nonce_hash = Sha256::digest(&claims.nonce).to_vec();
        self.core.check_github_install(actor, org, &nonce_hash).await.map_err(state_error)?;
        let Some(code) = callback.code.as_deref().filter(|c| !c.is_empty()) else {
            return match self.authorize(installation, state)? {
                Landing::Authorize { url } => Ok(SetupOutcome::Authorize { url }),
                Landing::Complete { .. } => {
                    Err(Error::InvalidSetupRequest("the redirect carries no authorization code"))
                }
            };
        };
        let token = self.exchange_code(code).await?;
        let verified = self.verify_control(&token, installation).await;
        self.revoke(token).await;
        let login = verified?;
        let linked_by = format!("github:{}", login.user);
        let linked =
            self.core.complete_github_install(actor, org, &nonce_hash, installation, Some(login.account), &linked_by);
        let installation = match linked.await {
            Ok(installation) => installation,
            Err(aicd_core::Error::Conflict(_)) => {
                tracing::warn!(%org, %installation, "a verified installation is linked to another organization");
                return Err(Error::InstallationNotVerified);
            }
            Err(error) => return Err(state_error(error)),
        };
        tracing::info!(
            %org,
            installation = %installation.installation_id,
            by = %actor.principal.label(),
            %linked_by,
            "GitHub App installation linked"
        );
        let (repositories_synced, sync_error) = match self.sync_repositories(org, installation.installation_id).await {
            Ok(count) => (Some(count), None),
            Err(error) => {
                tracing::warn!(%error, "could not list a newly linked installation's repositories");
                let why = "GitHub did not list the installation's repositories yet; they are registered as its events \
                           arrive, or when the installation is linked again";
                (None, Some(why.to_owned()))
            }
        };
        Ok(SetupOutcome::Linked(LinkedInstallation { installation, repositories_synced, sync_error }))
    }

    /// The verified state, as given, and the installation id of a redirect.
    fn read_callback<'c>(&self, callback: &'c SetupCallback) -> Result<(StateClaims, &'c str, InstallationId)> {
        let state = callback.state.as_deref().filter(|s| !s.is_empty());
        let state = state.ok_or(Error::InvalidSetupState("the redirect carries no state"))?;
        let claims = self.key.verify(state, Utc::now())?;
        if callback.setup_action.as_deref() == Some("request") {
            return Err(Error::InvalidSetupRequest(
                "the installation was requested, not made: an owner of the account must approve it first",
            ));
        }
        let installation = callback
            .installation_id
            .as_deref()
            .and_then(|id| id.trim().parse::<InstallationId>().ok())
            .ok_or(Error::InvalidSetupRequest("the redirect carries no valid installation_id"))?;
        Ok((claims, state, installation))
    }

    /// Registers the repositories an installation reaches, listed through the App; how many.
    pub async fn sync_repositories(&self, org: OrgId, installation: InstallationId) -> aicd_core::Result<usize> {
        sync_installation_repositories(&self.core, &self.tokens, org, installation).await
    }

    /// The authorization page to send the browser to when the setup redirect carries no code.
    fn authorize(&self, installation: InstallationId, state: &str) -> Result<Landing> {
        let Some(callback) = &self.settings.callback_url else {
            return Err(Error::InvalidSetupRequest(
                "the redirect carries no authorization code: enable \"Request user authorization (OAuth) during \
                 installation\" in the App's settings, or set the App's callback URL (AICD_GITHUB_CALLBACK_URL or \
                 AICD_PUBLIC_URL)",
            ));
        };
        let separator = if callback.contains('?') { '&' } else { '?' };
        let back = format!("{callback}{separator}installation_id={installation}");
        let url = format!(
            "{}/login/oauth/authorize?client_id={}&state={}&redirect_uri={}",
            self.web.api_url(),
            encode(&self.settings.client_id, false),
            encode(state, false),
            encode(&back, false),
        );
        Ok(Landing::Authorize { url })
    }

    /// Trades an authorization code for a user access token (`POST /login/oauth/access_token`).
    async fn exchange_code(&self, code: &str) -> Result<UserToken> {
        let body = serde_json::json!({
            "client_id": self.settings.client_id,
            "client_secret": self.settings.client_secret,
            "code": code,
        });
        let reply =
            self.web.send_as(Method::POST, "/login/oauth/access_token", None, "application/json", Some(&body)).await?;
        if !reply.status.is_success() {
            return Err(self.user_error(&reply));
        }
        let answer: OAuthReply = reply.json(&Target::User)?;
        match (answer.access_token, answer.error) {
            (Some(token), None) if !token.is_empty() => Ok(UserToken(token)),
            (_, error) => {
                tracing::info!(error = error.as_deref().unwrap_or("none"), "GitHub refused the authorization code");
                Err(Error::InstallationNotVerified)
            }
        }
    }

    /// Whether the token's user controls `installation`: it is among their installations, and they
    /// are an admin of its organization (or it is their own account). The account's and user's
    /// logins when they do.
    async fn verify_control(&self, token: &UserToken, installation: InstallationId) -> Result<VerifiedLogin> {
        let mut found = None;
        for page in 1..=MAX_INSTALLATION_PAGES {
            let reply = self.as_user(token, &format!("/user/installations?per_page=100&page={page}")).await?;
            let listed: UserInstallations = reply.json(&Target::User)?;
            let count = listed.installations.len();
            found = listed.installations.into_iter().find(|i| i.id == installation.as_u64());
            if found.is_some() || count < 100 {
                break;
            }
        }
        let Some(account) = found.and_then(|i| i.account) else {
            tracing::info!(%installation, "the installation is not among the user's installations");
            return Err(Error::InstallationNotVerified);
        };
        let user: User = self.as_user(token, "/user").await?.json(&Target::User)?;
        let allowed = match account.kind.as_deref() {
            Some("Organization") => {
                let path = format!("/user/memberships/orgs/{}", encode(&account.login, false));
                match self.as_user_optional(token, &path).await? {
                    Some(reply) => {
                        let membership: Membership = reply.json(&Target::User)?;
                        membership.state.as_deref() == Some("active") && membership.role.as_deref() == Some("admin")
                    }
                    None => false,
                }
            }
            // A personal account: only its owner. Anything else (an enterprise) is not linked here.
            Some("User") => account.id == user.id,
            _ => false,
        };
        if !allowed {
            tracing::info!(%installation, user = %user.login, "the user does not administer the installation's account");
            return Err(Error::InstallationNotVerified);
        }
        Ok(VerifiedLogin { account: account.login, user: user.login })
    }

    /// A user endpoint that must answer 200.
    async fn as_user(&self, token: &UserToken, path: &str) -> Result<Reply> {
        self.as_user_optional(token, path).await?.ok_or(Error::InstallationNotVerified)
    }

    /// A user endpoint; `None` for 403 and 404 (not theirs to see), an error for the rest.
    async fn as_user_optional(&self, token: &UserToken, path: &str) -> Result<Option<Reply>> {
        let reply = self.tokens.http().send(Method::GET, path, &token.0, None).await?;
        match reply.status {
            status if status.is_success() => Ok(Some(reply)),
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND if status_error(&reply, &Target::User).is_permanent() => {
                Ok(None)
            }
            _ => Err(self.user_error(&reply)),
        }
    }

    /// GitHub's refusal of a user call: unavailable (retry later) or not verified.
    fn user_error(&self, reply: &Reply) -> Error {
        match status_error(reply, &Target::User) {
            error @ aicd_core::Error::Unavailable { .. } => Error::Core(error),
            _ => Error::InstallationNotVerified,
        }
    }

    /// Revokes the user token (`DELETE /applications/{client_id}/token`), best effort: it is not
    /// kept anyway, and expires on its own.
    async fn revoke(&self, token: UserToken) {
        let credentials = format!("{}:{}", self.settings.client_id, self.settings.client_secret);
        let basic = base64::engine::general_purpose::STANDARD.encode(credentials);
        let Ok(authorization) = sensitive(&format!("Basic {basic}")) else { return };
        let path = format!("/applications/{}/token", encode(&self.settings.client_id, false));
        let body = serde_json::json!({ "access_token": token.0 });
        let sent = self.tokens.http().send_as(Method::DELETE, &path, Some(authorization), MEDIA_TYPE, Some(&body));
        match sent.await {
            Ok(reply) if reply.status.is_success() => {}
            Ok(reply) => tracing::debug!(status = reply.status.as_u16(), "revoking the user token was refused"),
            Err(error) => tracing::debug!(%error, "revoking the user token failed"),
        }
    }
}

/// A store answer about the pending link, as the flow reports it: an unusable state says so
/// without telling why.
fn state_error(error: aicd_core::Error) -> Error {
    match error {
        aicd_core::Error::NotFound { .. } => {
            Error::InvalidSetupState("the state was already used, has expired, or was started by someone else")
        }
        error => Error::Core(error),
    }
}

/// The logins a successful check found.
struct VerifiedLogin {
    /// The installation's account.
    account: String,
    /// The user who proved control.
    user: String,
}

/// Registers the repositories `installation` reaches in `org`, listed through the App
/// (`GET /installation/repositories` with a metadata-only token); how many were registered.
pub async fn sync_installation_repositories(
    core: &Core,
    tokens: &InstallationTokens,
    org: OrgId,
    installation: InstallationId,
) -> aicd_core::Result<usize> {
    let listed = tokens.client(TokenScope::listing(installation)).repositories().await?;
    let repos: Vec<GithubRepoInfo> = listed
        .into_iter()
        .filter_map(|r| {
            Some(GithubRepoInfo {
                repo_id: GithubRepoId::from_u64(r.id).ok()?,
                full_name: r.full_name,
                default_branch: r.default_branch,
            })
        })
        .collect();
    let sync = core.github_intake().sync_github_repos(org, installation, &repos, &[]).await?;
    Ok(sync.upserted.len())
}

/// Whether an error is worth trying again later.
trait Permanence {
    fn is_permanent(&self) -> bool;
}

impl Permanence for aicd_core::Error {
    fn is_permanent(&self) -> bool {
        !matches!(self, aicd_core::Error::Unavailable { .. })
    }
}
