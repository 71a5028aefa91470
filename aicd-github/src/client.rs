//! A small GitHub REST client acting as one App installation, and the one place GitHub's answers
//! become [`aicd_core::Error`]s.
//!
//! Requests go through [octocrab]'s HTTP stack (its hyper client, rustls with `ring`, timeouts,
//! base URL and tracing) with its raw `execute` call, so every answer's status and headers (the
//! rate-limit ones in particular) are read here rather than folded into octocrab's error type.
//!
//! How GitHub's answers map:
//!
//! | answer | error |
//! |---|---|
//! | 403 or 429 with `retry-after: N` | [`Unavailable`](aicd_core::Error::Unavailable), `retry_after` N s |
//! | 403 or 429 with `x-ratelimit-remaining: 0` | `Unavailable`, `retry_after` until `x-ratelimit-reset` |
//! | other 429, 403 "secondary rate limit" | `Unavailable`, `retry_after` 60 s (GitHub's advice) |
//! | 5xx, 408, network failures, timeouts | `Unavailable` (transient) |
//! | 401 (after one retry with a new token), 404 on a repository | [`Rejected`](aicd_core::Error::Rejected): "the installation has no access to `owner/repo` (it may have been removed)" |
//! | 422, 409, other 403 and 4xx | `Rejected` with GitHub's message |
//!
//! The `service` of every error is `github`.

use std::time::Duration;

use chrono::Utc;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, USER_AGENT};
use http::{Method, StatusCode};
use octocrab::Octocrab;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::app::{InstallationTokens, TokenScope};
use crate::{Error, Result};

/// The REST API version every request asks for.
pub const API_VERSION: &str = "2022-11-28";

/// The media type every request accepts.
pub(crate) const MEDIA_TYPE: &str = "application/vnd.github+json";
/// How long to wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for an answer.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait after a secondary rate limit that gave no `retry-after`.
const SECONDARY_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// The service named in errors.
const SERVICE: &str = "github";

/// The HTTP transport shared by the token cache and every installation client.
///
/// octocrab's client runs a background task on the Tokio runtime it is built on, so it is built on
/// first use (in the runtime of that use) rather than in the constructor, which needs no runtime.
pub(crate) struct Http {
    uri: http::Uri,
    api_url: String,
    /// Names the App in every request, as GitHub asks.
    pub(crate) user_agent: HeaderValue,
    octocrab: tokio::sync::OnceCell<Octocrab>,
}

/// An answer from GitHub: its status, headers and body.
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

/// What a request was about, for the wording of errors.
pub(crate) enum Target<'a> {
    /// Minting a token for this installation.
    Installation(u64),
    /// The signed-in GitHub user's own endpoints (the setup flow's user-to-server check).
    User,
    /// A repository's endpoint.
    Repo(&'a RepoName),
}

impl Http {
    pub(crate) fn new(api_url: &str) -> Result<Self> {
        let api_url = api_url.trim_end_matches('/');
        let uri: http::Uri =
            api_url.parse().map_err(|e| Error::InvalidApiUrl(format!("`{api_url}` is not a URL ({e})")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() || uri.query().is_some() {
            return Err(Error::InvalidApiUrl(format!("`{api_url}` is not an absolute http(s) URL without a query")));
        }
        let user_agent = HeaderValue::from_static(concat!("aicd/", env!("CARGO_PKG_VERSION")));
        Ok(Self { uri, api_url: api_url.to_owned(), user_agent, octocrab: tokio::sync::OnceCell::new() })
    }

    async fn octocrab(&self) -> aicd_core::Result<&Octocrab> {
        self.octocrab
            .get_or_try_init(|| async {
                Octocrab::builder()
                    .base_uri(self.uri.clone())
                    .and_then(|b| {
                        b.set_connect_timeout(Some(CONNECT_TIMEOUT)).set_read_timeout(Some(READ_TIMEOUT)).build()
                    })
                    .map_err(|e| rejected(format!("cannot build the GitHub HTTP client: {e}")))
            })
            .await
    }

    pub(crate) fn api_url(&self) -> &str {
        &self.api_url
    }

    /// Sends one request authenticated with `bearer` (`path` is relative to the API address and
    /// may carry a query). Network failures are [`aicd_core::Error::Unavailable`]; any answer,
    /// whatever its status, is returned.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: &str,
        body: Option<&serde_json::Value>,
    ) -> aicd_core::Result<Reply> {
        let auth = sensitive(&format!("Bearer {bearer}"))?;
        self.send_as(method, path, Some(auth), MEDIA_TYPE, body).await
    }

    /// Sends one request with the `authorization` given (none, a bearer token, basic
    /// credentials), asking for `accept`.
    pub(crate) async fn send_as(
        &self,
        method: Method,
        path: &str,
        authorization: Option<HeaderValue>,
        accept: &'static str,
        body: Option<&serde_json::Value>,
    ) -> aicd_core::Result<Reply> {
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header(ACCEPT, accept)
            .header(USER_AGENT, self.user_agent.clone())
            .header("x-github-api-version", API_VERSION);
        if let Some(auth) = authorization {
            builder = builder.header(AUTHORIZATION, auth);
        }
        let request = match body {
            Some(body) => builder.header(CONTENT_TYPE, "application/json").body(body.to_string()),
            None => builder.body(String::new()),
        }
        .map_err(|e| aicd_core::Error::InvalidInput(format!("cannot build a GitHub request for `{path}`: {e}")))?;
        let octocrab = self.octocrab().await?;
        let response =
            octocrab.execute(request).await.map_err(|e| unavailable(format!("{method} {path} failed: {e}"), None))?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = octocrab
            .body_to_string(response)
            .await
            .map_err(|e| unavailable(format!("reading the answer to {method} {path} failed: {e}"), None))?;
        tracing::debug!(%method, path, status = status.as_u16(), "GitHub request");
        Ok(Reply { status, headers, body })
    }
}

/// A header value that never shows in `Debug` output (an `Authorization`).
pub(crate) fn sensitive(value: &str) -> aicd_core::Result<HeaderValue> {
    let mut header =
        HeaderValue::from_str(value).map_err(|_| rejected("a credential cannot be sent in a header".to_owned()))?;
    header.set_sensitive(true);
    Ok(header)
}

impl Reply {
    /// The body as `T`; a body that does not fit is [`aicd_core::Error::Unavailable`] (a proxy's
    /// page, a truncated answer).
    pub(crate) fn json<T: DeserializeOwned>(&self, target: &Target<'_>) -> aicd_core::Result<T> {
        serde_json::from_str(&self.body).map_err(|e| {
            unavailable(format!("GitHub's answer about {} could not be read: {e}", target.describe()), None)
        })
    }

    /// GitHub's error message, with the details of its `errors` list.
    pub(crate) fn message(&self) -> String {
        #[derive(Deserialize)]
        struct Body {
            message: Option<String>,
            #[serde(default)]
            errors: Vec<serde_json::Value>,
        }
        let Ok(parsed) = serde_json::from_str::<Body>(&self.body) else {
            let status = self.status;
            return format!("HTTP {status}");
        };
        let mut message = parsed.message.unwrap_or_else(|| format!("HTTP {}", self.status));
        let details: Vec<String> = parsed
            .errors
            .iter()
            .filter_map(|e| match e {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_owned)
                    .or_else(|| o.get("code").and_then(|c| c.as_str()).map(str::to_owned)),
                _ => None,
            })
            .collect();
        if !details.is_empty() {
            message = format!("{message} ({})", details.join("; "));
        }
        message
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
    }

    /// How long GitHub asked us to wait, if this answer is a rate limit.
    fn rate_limit_wait(&self) -> Option<Duration> {
        if !matches!(self.status, StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS) {
            return None;
        }
        if let Some(seconds) = self.header("retry-after").and_then(|v| v.parse::<u64>().ok()) {
            return Some(Duration::from_secs(seconds));
        }
        if self.header("x-ratelimit-remaining") == Some("0") {
            let reset = self.header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok());
            let wait = reset.map_or(SECONDARY_RATE_LIMIT_WAIT.as_secs(), |reset| {
                u64::try_from(reset - Utc::now().timestamp()).unwrap_or(0).max(1)
            });
            return Some(Duration::from_secs(wait));
        }
        let secondary = self.message().to_ascii_lowercase().contains("rate limit");
        (self.status == StatusCode::TOO_MANY_REQUESTS || secondary).then_some(SECONDARY_RATE_LIMIT_WAIT)
    }
}

impl Target<'_> {
    fn describe(&self) -> String {
        match self {
            Target::Installation(id) => format!("installation {id}"),
            Target::User => "the signed-in GitHub user".to_owned(),
            Target::Repo(repo) => format!("`{repo}`"),
        }
    }
}

/// The error for an answer that is not a success.
pub(crate) fn status_error(reply: &Reply, target: &Target<'_>) -> aicd_core::Error {
    let status = reply.status;
    if let Some(wait) = reply.rate_limit_wait() {
        return unavailable(
            format!("rate limited by GitHub ({status}: {}); retry in {} s", reply.message(), wait.as_secs()),
            Some(wait),
        );
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        let wait = reply.header("retry-after").and_then(|v| v.parse::<u64>().ok()).map(Duration::from_secs);
        return unavailable(format!("GitHub answered {status} about {}: {}", target.describe(), reply.message()), wait);
    }
    match (status, target) {
        (StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND, Target::Repo(repo)) => lost_access(repo),
        (StatusCode::NOT_FOUND, Target::Installation(id)) => {
            rejected(format!("the GitHub App installation {id} does not exist (the App may have been uninstalled)"))
        }
        (StatusCode::UNAUTHORIZED, Target::Installation(_)) => rejected(format!(
            "GitHub refused the App's credentials ({}); check the App id, its private key and this machine's clock",
            reply.message()
        )),
        (StatusCode::FORBIDDEN, Target::Installation(id)) => {
            rejected(format!("GitHub refused a token for installation {id} (it may be suspended): {}", reply.message()))
        }
        (StatusCode::FORBIDDEN, Target::Repo(repo)) => rejected(format!(
            "GitHub denied the App on `{repo}`: {} (the App may lack a permission it needs)",
            reply.message()
        )),
        _ => rejected(format!("GitHub refused the request on {} ({status}): {}", target.describe(), reply.message())),
    }
}

/// The permanent error for a repository the installation cannot reach.
pub(crate) fn lost_access(repo: &RepoName) -> aicd_core::Error {
    rejected(format!("the installation has no access to {repo} (it may have been removed)"))
}

pub(crate) fn unavailable(message: String, retry_after: Option<Duration>) -> aicd_core::Error {
    aicd_core::Error::Unavailable { service: SERVICE, message, retry_after }
}

pub(crate) fn rejected(message: String) -> aicd_core::Error {
    aicd_core::Error::Rejected { service: SERVICE, message }
}

/// A repository's `owner/name`, checked to be safe in a URL path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RepoName {
    pub(crate) owner: String,
    pub(crate) name: String,
}

impl RepoName {
    pub(crate) fn new(owner: &str, name: &str) -> aicd_core::Result<Self> {
        let ok = |part: &str| {
            !part.is_empty()
                && part.len() <= 100
                && part != "."
                && part != ".."
                && part.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if ok(owner) && ok(name) {
            Ok(Self { owner: owner.to_owned(), name: name.to_owned() })
        } else {
            Err(aicd_core::Error::InvalidInput(format!("`{owner}/{name}` is not a GitHub repository name")))
        }
    }

    pub(crate) fn parse(full_name: &str) -> aicd_core::Result<Self> {
        match full_name.split_once('/') {
            Some((owner, name)) => Self::new(owner, name),
            None => Err(aicd_core::Error::InvalidInput(format!(
                "`{full_name}` is not a GitHub repository name (`owner/name`)"
            ))),
        }
    }

    /// `/repos/{owner}/{name}`.
    pub(crate) fn path(&self) -> String {
        format!("/repos/{}/{}", self.owner, self.name)
    }
}

impl std::fmt::Display for RepoName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// Percent-encodes `value` for a URL path (keeping `/` when `keep_slash`) or a query value.
pub(crate) fn encode(value: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || (keep_slash && byte == b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A collaborator's permission on a repository, from the most to the least.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RepoPermission {
    /// No access.
    None,
    /// Read (and comment on) the repository.
    Read,
    /// Read, and manage issues and pull requests without write access.
    Triage,
    /// Push to the repository.
    Write,
    /// Write, and manage the repository without destructive settings.
    Maintain,
    /// Full control.
    Admin,
}

impl RepoPermission {
    /// Whether the permission includes pushing to the repository (write, maintain or admin):
    /// what AI-CD requires of a person who triggers a run by a command or a label.
    pub fn has_write(self) -> bool {
        self >= RepoPermission::Write
    }

    /// GitHub's name for it: `admin`, `maintain`, `write`, `triage`, `read` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            RepoPermission::None => "none",
            RepoPermission::Read => "read",
            RepoPermission::Triage => "triage",
            RepoPermission::Write => "write",
            RepoPermission::Maintain => "maintain",
            RepoPermission::Admin => "admin",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "admin" => RepoPermission::Admin,
            "maintain" => RepoPermission::Maintain,
            "write" => RepoPermission::Write,
            "triage" => RepoPermission::Triage,
            "read" => RepoPermission::Read,
            "none" => RepoPermission::None,
            _ => return None,
        })
    }
}

/// A REST client acting as one GitHub App installation, with tokens from an
/// [`InstallationTokens`] cache.
///
/// Every method fails with [`aicd_core::Error::Unavailable`] for what may pass (network failures,
/// 5xx, rate limits, with GitHub's `retry_after`) and [`aicd_core::Error::Rejected`] for what won't
/// (lost access, validation failures), as the [module documentation](self) tabulates. A 401 is
/// retried once with a newly minted token before it counts as lost access.
#[derive(Clone, Debug)]
pub struct InstallationClient {
    tokens: InstallationTokens,
    scope: TokenScope,
}

#[derive(Deserialize)]
struct PermissionBody {
    permission: Option<String>,
    role_name: Option<String>,
}

#[derive(Deserialize)]
struct CommentBody {
    id: u64,
}

/// A page of `GET /installation/repositories`, read tolerantly.
#[derive(Deserialize)]
struct RepositoriesPage {
    total_count: Option<u64>,
    #[serde(default)]
    repositories: Vec<serde_json::Value>,
}

/// A repository an installation reaches, as `GET /installation/repositories` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallationRepository {
    /// GitHub's numeric id (stable across renames).
    pub id: u64,
    /// `owner/name`.
    pub full_name: String,
    /// Its default branch, when GitHub said.
    pub default_branch: Option<String>,
}

/// Most repositories read from one installation (100 pages of 100).
const MAX_REPOSITORY_PAGES: u32 = 100;

impl InstallationClient {
    /// A client acting within `scope` (the same as [`InstallationTokens::client`]).
    pub fn new(tokens: InstallationTokens, scope: TokenScope) -> Self {
        Self { tokens, scope }
    }

    /// What its tokens may reach.
    pub fn scope(&self) -> TokenScope {
        self.scope
    }

    /// `login`'s permission on `owner/repo` (`GET /repos/{owner}/{repo}/collaborators/{login}/permission`).
    /// GitHub's fine-grained `role_name` is used when it is one of the five built-in roles; a
    /// custom role counts as its base `permission`.
    pub async fn permission(&self, owner: &str, repo: &str, login: &str) -> aicd_core::Result<RepoPermission> {
        let repo = RepoName::new(owner, repo)?;
        if login.is_empty() {
            return Err(aicd_core::Error::InvalidInput("the login must not be empty".to_owned()));
        }
        let path = format!("{}/collaborators/{}/permission", repo.path(), encode(login, false));
        let body: PermissionBody = self.call(Method::GET, &repo, &path, None).await?;
        let permission =
            [body.role_name, body.permission].into_iter().flatten().find_map(|n| RepoPermission::from_name(&n));
        Ok(permission.unwrap_or(RepoPermission::None))
    }

    /// Every repository the installation reaches (`GET /installation/repositories`, 100 per page,
    /// at most 10 000). A missing or uninstalled installation is [`aicd_core::Error::Rejected`].
    pub async fn repositories(&self) -> aicd_core::Result<Vec<InstallationRepository>> {
        let target = Target::Installation(self.scope.installation.as_u64());
        let mut repositories = Vec::new();
        for page in 1..=MAX_REPOSITORY_PAGES {
            let path = format!("/installation/repositories?per_page=100&page={page}");
            let reply = self.send(Method::GET, &path, None).await?;
            if !reply.status.is_success() {
                return Err(status_error(&reply, &target));
            }
            let body: RepositoriesPage = reply.json(&target)?;
            let listed = body.repositories.len();
            repositories.extend(body.repositories.iter().filter_map(|r| {
                Some(InstallationRepository {
                    id: r.get("id")?.as_u64()?,
                    full_name: r.get("full_name")?.as_str()?.to_owned(),
                    default_branch: r.get("default_branch").and_then(|b| b.as_str()).map(str::to_owned),
                })
            }));
            let total = body.total_count.and_then(|t| usize::try_from(t).ok()).unwrap_or(usize::MAX);
            if listed < 100 || repositories.len() >= total {
                break;
            }
        }
        Ok(repositories)
    }

    /// Posts `body` as a comment on issue (or pull request) `issue_number` of `owner/repo` and
    /// returns the comment's id.
    pub async fn create_issue_comment(
        &self,
        owner: &str,
        repo: &str,
        issue_number: u64,
        body: &str,
    ) -> aicd_core::Result<u64> {
        let repo = RepoName::new(owner, repo)?;
        let path = format!("{}/issues/{issue_number}/comments", repo.path());
        let created: CommentBody =
            self.call(Method::POST, &repo, &path, Some(&serde_json::json!({ "body": body }))).await?;
        Ok(created.id)
    }

    /// Replaces the text of comment `comment_id` on `owner/repo`. A comment that no longer exists
    /// (on a repository the installation still reaches) is [`aicd_core::Error::NotFound`]
    /// (`comment`).
    pub async fn update_issue_comment(
        &self,
        owner: &str,
        repo: &str,
        comment_id: u64,
        body: &str,
    ) -> aicd_core::Result<()> {
        let repo = RepoName::new(owner, repo)?;
        let path = format!("{}/issues/comments/{comment_id}", repo.path());
        let reply = self.send(Method::PATCH, &path, Some(&serde_json::json!({ "body": body }))).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Err(self.explain_not_found(&repo, aicd_core::Error::NotFound { kind: "comment" }).await);
        }
        if !reply.status.is_success() {
            return Err(status_error(&reply, &Target::Repo(&repo)));
        }
        Ok(())
    }

    /// Sends a request as the installation; a 401 is retried once with a new token.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> aicd_core::Result<Reply> {
        let token = self.tokens.token(self.scope).await?;
        let http = self.tokens.http();
        let reply = http.send(method.clone(), path, token.secret(), body).await?;
        if reply.status != StatusCode::UNAUTHORIZED {
            return Ok(reply);
        }
        tracing::debug!(
            installation_id = self.scope.installation.get(),
            "GitHub refused the installation token; minting another"
        );
        self.tokens.forget(self.scope, &token).await;
        let token = self.tokens.token(self.scope).await?;
        http.send(method, path, token.secret(), body).await
    }

    /// Sends a request about `repo` and reads a successful answer as `T`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        repo: &RepoName,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> aicd_core::Result<T> {
        let reply = self.send(method, path, body).await?;
        let target = Target::Repo(repo);
        if !reply.status.is_success() {
            return Err(status_error(&reply, &target));
        }
        reply.json(&target)
    }

    /// After a 404 inside `repo`: `inside` if the repository itself is still reachable (the
    /// missing thing is what was asked for), else the lost-access error.
    pub(crate) async fn explain_not_found(&self, repo: &RepoName, inside: aicd_core::Error) -> aicd_core::Error {
        match self.send(Method::GET, &repo.path(), None).await {
            Ok(reply) if reply.status.is_success() => inside,
            Ok(reply) => status_error(&reply, &Target::Repo(repo)),
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&'static str, &str)], body: &str) -> Reply {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        Reply { status: StatusCode::from_u16(status).unwrap(), headers: map, body: body.to_owned() }
    }

    #[test]
    fn permissions_are_ordered_and_write_means_write_or_more() {
        assert!(RepoPermission::Admin.has_write());
        assert!(RepoPermission::Maintain.has_write());
        assert!(RepoPermission::Write.has_write());
        assert!(!RepoPermission::Triage.has_write());
        assert!(!RepoPermission::Read.has_write());
        assert!(!RepoPermission::None.has_write());
        for p in [RepoPermission::Admin, RepoPermission::Triage, RepoPermission::None] {
            assert_eq!(RepoPermission::from_name(p.as_str()), Some(p));
        }
    }

    #[test]
    fn rate_limits_are_transient_with_the_wait_github_asked_for() {
        let repo = RepoName::new("o", "r").unwrap();
        let target = Target::Repo(&repo);
        let reset = (Utc::now().timestamp() + 120).to_string();
        let primary = reply(403, &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset)], "{}");
        match status_error(&primary, &target) {
            aicd_core::Error::Unavailable { retry_after: Some(wait), .. } => {
                assert!((118..=120).contains(&wait.as_secs()), "{wait:?}")
            }
            other => panic!("{other:?}"),
        }
        let secondary = reply(403, &[], r#"{"message":"You have exceeded a secondary rate limit."}"#);
        assert!(matches!(
            status_error(&secondary, &target),
            aicd_core::Error::Unavailable { retry_after: Some(w), .. } if w == SECONDARY_RATE_LIMIT_WAIT
        ));
        let forbidden = reply(403, &[], r#"{"message":"Resource not accessible by integration"}"#);
        assert!(matches!(status_error(&forbidden, &target), aicd_core::Error::Rejected { .. }));
    }

    #[test]
    fn githubs_messages_carry_their_details() {
        let r = reply(
            422,
            &[],
            r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"No commits between main and x"}]}"#,
        );
        assert_eq!(r.message(), "Validation Failed (No commits between main and x)");
        assert_eq!(reply(502, &[], "<html>").message(), "HTTP 502 Bad Gateway");
    }

    #[test]
    fn names_and_segments_are_safe_in_paths() {
        assert!(RepoName::parse("octo/hello-world.rs").is_ok());
        for bad in ["octo", "octo/", "/x", "o/../x", "o/a b", "o/a?b", "../x"] {
            assert!(RepoName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(encode("aicd/issue-1#x y", true), "aicd/issue-1%23x%20y");
        assert_eq!(encode("a/b", false), "a%2Fb");
    }

    #[test]
    fn api_urls_must_be_absolute_http() {
        assert!(Http::new("https://api.github.com/").is_ok());
        assert_eq!(Http::new("https://ghe.example.com/api/v3/").unwrap().api_url(), "https://ghe.example.com/api/v3");
        for bad in ["api.github.com", "ftp://x", "/api", "https://x/?q=1"] {
            assert!(matches!(Http::new(bad), Err(Error::InvalidApiUrl(_))), "{bad}");
        }
    }
}
