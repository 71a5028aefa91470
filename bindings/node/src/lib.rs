//! The Node.js binding of AI-CD (`@aicd/sdk`): [`aicd_core::embed`] and a few pure functions of
//! the other crates, with JavaScript values around them.
//!
//! This crate is the native half only; `lib/sdk.cjs` is the JavaScript API people use. Values
//! cross the boundary as JSON text (the HTTP API's shapes), and every failure is a JavaScript
//! error whose message starts with `[aicd:<code>]` (see [`error`]), which the JavaScript layer
//! turns into an `AicdError`. No business rule lives here: the operations, their argument
//! checks and authorization are the core's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use aicd_agent_api::host::{HostAdapter, HostAgent, HostFailure, Step};
use aicd_agent_api::{Agent, RepoView, ScriptedAgent, TaskContext};
use aicd_core::embed::{Engine, Follow, OpenOptions, Session, WorkerOptions};
use aicd_core::orchestrator::{Orchestrator, WorkerHandle};
use napi::bindgen_prelude::{Buffer, Promise};
use napi::threadsafe_function::ThreadsafeFunction;
use napi::{Result, Status};
use napi_derive::napi;
use serde_json::{Value, json};

/// The one place a failure becomes a JavaScript error: `[aicd:<code>] <message>`, `code` being
/// one of [`aicd_core::Error::code`]'s (or `invalid_input` for a value the binding cannot read).
fn error(code: &str, message: impl std::fmt::Display) -> napi::Error {
    napi::Error::new(Status::GenericFailure, format!("[aicd:{code}] {message}"))
}

fn core_error(e: aicd_core::Error) -> napi::Error {
    error(e.code(), e)
}

fn invalid(message: impl std::fmt::Display) -> napi::Error {
    error("invalid_input", message)
}

fn parse_json(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| invalid(format!("{what} is not JSON: {e}")))
}

fn job_id(id: String) -> Result<aicd_core::JobId> {
    serde_json::from_value(Value::String(id)).map_err(|e| invalid(format!("not a job id: {e}")))
}

/// How `Client.open` opens the store (see `aicd_core::embed::OpenOptions`).
#[napi(object)]
#[derive(Default)]
pub struct NativeOpenOptions {
    /// Apply the PostgreSQL migrations first.
    pub migrate: Option<bool>,
    /// The PostgreSQL URL of the schema's owner, for migrating.
    pub owner_url: Option<String>,
    /// The directories local repositories may be registered under.
    pub local_roots: Option<Vec<String>>,
    /// Redis, for signals across processes.
    pub redis_url: Option<String>,
    /// Most PostgreSQL connections.
    pub max_connections: Option<u32>,
}

/// What `bootstrap` created: an organization and its first org_admin API key.
#[napi(object)]
pub struct NativeBootstrapped {
    /// The organization's id.
    pub org_id: String,
    /// Its first API key, shown this once.
    pub api_key: String,
}

/// An engine over one store.
#[napi]
pub struct NativeEngine {
    engine: Engine,
}

/// Opens the store at `url` (`postgres://…` or `sqlite:<path>`).
#[napi]
pub async fn open_engine(url: String, options: Option<NativeOpenOptions>) -> Result<NativeEngine> {
    let options = options.unwrap_or_default();
    let defaults = OpenOptions::default();
    let options = OpenOptions {
        migrate: options.migrate.unwrap_or(defaults.migrate),
        owner_url: options.owner_url,
        local_roots: options.local_roots.unwrap_or_default().into_iter().map(PathBuf::from).collect(),
        redis_url: options.redis_url,
        max_connections: options.max_connections.unwrap_or(defaults.max_connections),
    };
    let engine = Engine::open(&url, options).await.map_err(core_error)?;
    Ok(NativeEngine { engine })
}

#[napi]
impl NativeEngine {
    /// `postgres` or `sqlite`.
    #[napi(getter)]
    pub fn backend(&self) -> String {
        self.engine.backend().to_owned()
    }

    /// Creates an organization with a first org_admin API key.
    #[napi]
    pub async fn bootstrap(&self, name: String) -> Result<NativeBootstrapped> {
        let boot = self.engine.bootstrap(&name).await.map_err(core_error)?;
        Ok(NativeBootstrapped { org_id: boot.org_id.to_string(), api_key: boot.api_key })
    }

    /// Acts as the holder of `api_key`.
    #[napi]
    pub async fn session(&self, api_key: String) -> Result<NativeSession> {
        let session = self.engine.session(&api_key).await.map_err(core_error)?;
        Ok(NativeSession { session })
    }

    /// Closes the store's connections.
    #[napi]
    pub async fn close(&self) {
        self.engine.close().await;
    }
}

/// An API key's session.
#[napi]
pub struct NativeSession {
    session: Session,
}

#[napi]
impl NativeSession {
    /// The key's organization.
    #[napi(getter)]
    pub fn org_id(&self) -> String {
        self.session.org_id().to_string()
    }

    /// Runs operation `op` with `args` (JSON text) and returns its result as JSON text.
    #[napi]
    pub async fn call(&self, op: String, args: String) -> Result<String> {
        let args = parse_json("the arguments", &args)?;
        let result = self.session.call(&op, args).await.map_err(core_error)?;
        Ok(result.to_string())
    }

    /// Follows job `job_id`'s timeline.
    #[napi]
    pub fn follow(&self, job_id_text: String) -> Result<NativeFollow> {
        let follow = self.session.follow(job_id(job_id_text)?);
        Ok(NativeFollow { follow: Arc::new(tokio::sync::Mutex::new(follow)) })
    }
}

/// A job's timeline as it happens.
#[napi]
pub struct NativeFollow {
    follow: Arc<tokio::sync::Mutex<Follow>>,
}

#[napi]
impl NativeFollow {
    /// The next event as JSON text, or `null` once the job reached PR_OPEN or an end.
    #[napi]
    pub async fn next(&self) -> Result<Option<String>> {
        let mut follow = self.follow.lock().await;
        let event = follow.next().await.map_err(core_error)?;
        event.map(|e| serde_json::to_string(&e).map_err(|e| error("internal", e))).transpose()
    }
}

/// Whether `signature_header` (`X-Hub-Signature-256`) signs `body` with `secret`. A missing or
/// malformed header is `false`; an empty secret is an error.
#[napi]
pub fn verify_webhook(secret: String, body: Buffer, signature_header: Option<String>) -> Result<bool> {
    use aicd_github::webhooks::WebhookSecret;
    let secret = WebhookSecret::new(secret).map_err(invalid)?;
    Ok(secret.verify(&body, signature_header.as_deref()).is_ok())
}

/// Reads a webhook delivery's body as the event `event_name` names; JSON text of the event.
#[napi]
pub fn parse_webhook(event_name: String, body: Buffer) -> Result<String> {
    let event = aicd_github::webhooks::parse_event(&event_name, &body).map_err(invalid)?;
    serde_json::to_string(&event).map_err(|e| error("internal", e))
}

/// The policy violations of a changeset (JSON text) under a policy configuration (JSON text of
/// the `[policy]` table, or none for the defaults); JSON text of the list.
#[napi]
pub fn check_policy(changeset: String, config: Option<String>) -> Result<String> {
    let changeset: aicd_agent_api::Changeset = serde_json::from_value(parse_json("the changeset", &changeset)?)
        .map_err(|e| invalid(format!("not a changeset: {e}")))?;
    let config: aicd_core::policy::PolicyConfig = match config {
        Some(text) => serde_json::from_value(parse_json("the policy configuration", &text)?)
            .map_err(|e| invalid(format!("not a policy configuration: {e}")))?,
        None => aicd_core::policy::PolicyConfig::default(),
    };
    let violations = aicd_core::policy::check_changeset(&changeset, &config).map_err(invalid)?;
    serde_json::to_string(&violations).map_err(|e| error("internal", e))
}

/// The repository views of agent calls in progress, by the number the JavaScript agent is given
/// (`ctx.repo` reads through it).
static VIEWS: LazyLock<Mutex<HashMap<u32, Arc<dyn RepoView>>>> = LazyLock::new(Mutex::default);
static NEXT_VIEW: AtomicU32 = AtomicU32::new(1);

/// A view registered for the time of one agent call.
struct ViewLease(u32);

impl ViewLease {
    fn new(view: Arc<dyn RepoView>) -> Self {
        let id = NEXT_VIEW.fetch_add(1, Ordering::Relaxed);
        VIEWS.lock().unwrap_or_else(|p| p.into_inner()).insert(id, view);
        Self(id)
    }
}

impl Drop for ViewLease {
    fn drop(&mut self) {
        VIEWS.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.0);
    }
}

fn view(id: u32) -> Result<Arc<dyn RepoView>> {
    let views = VIEWS.lock().unwrap_or_else(|p| p.into_inner());
    views.get(&id).cloned().ok_or_else(|| invalid("the repository view belongs to an agent call that has ended"))
}

/// The files of the repository view `view_id`, those under `prefix` only when given.
#[napi]
pub async fn repo_list_files(view_id: u32, prefix: Option<String>) -> Result<Vec<String>> {
    let mut files = view(view_id)?.list_files().await.map_err(invalid)?;
    if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
        files.retain(|f| f.starts_with(&prefix));
    }
    Ok(files)
}

/// The text of `path` in the repository view `view_id`, or `null` when there is no such file.
#[napi]
pub async fn repo_read_file(view_id: u32, path: String) -> Result<Option<String>> {
    match view(view_id)?.read_file(&path).await.map_err(invalid)? {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| invalid(format!("{path} is not UTF-8 text"))),
    }
}

/// The JavaScript function a [`JsAgent`] calls: it takes a request (JSON text:
/// `{method, view, args}`) and resolves to `{"ok": answer}` or `{"error": {kind, message}}`.
type Dispatch = ThreadsafeFunction<String, Promise<String>, String, Status, false, true>;

/// An agent object of JavaScript, called through the layer's dispatch function.
struct JsAgent {
    name: String,
    dispatch: Dispatch,
}

#[async_trait::async_trait]
impl HostAgent for JsAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, step: Step, ctx: &TaskContext, args: Vec<Value>) -> std::result::Result<Value, HostFailure> {
        let lease = ViewLease::new(ctx.repo_view().clone());
        let request = json!({"method": step.method(), "view": lease.0, "args": args}).to_string();
        let raised =
            |e: napi::Error| HostFailure::Raised(format!("the agent's {}() failed: {}", step.method(), e.reason));
        let reply = self.dispatch.call_async_catch(request).await.map_err(raised)?.await.map_err(raised)?;
        drop(lease);
        let mut reply: Value = serde_json::from_str(&reply).map_err(|e| HostFailure::Raised(e.to_string()))?;
        if let Some(error) = reply.get("error") {
            let message = error["message"].as_str().unwrap_or_default().to_owned();
            return Err(match error["kind"].as_str() {
                Some("permanent") => HostFailure::Permanent(message),
                Some("budget_exhausted") => HostFailure::BudgetExhausted(message),
                _ => HostFailure::Raised(message),
            });
        }
        Ok(reply.get_mut("ok").map(Value::take).unwrap_or(Value::Null))
    }
}

/// How a worker behaves (see `aicd_core::embed::WorkerOptions`).
#[napi(object)]
#[derive(Default)]
pub struct NativeWorkerOptions {
    /// Jobs run at once.
    pub concurrency: Option<u32>,
    /// How long a claim lasts without a heartbeat, in milliseconds.
    pub lease_ms: Option<u32>,
    /// How long an idle worker waits before looking for work, in milliseconds.
    pub poll_interval_ms: Option<u32>,
    /// Attempts per step before the job fails.
    pub max_attempts: Option<u32>,
    /// The first retry's delay bound, in milliseconds.
    pub retry_delay_ms: Option<u32>,
}

/// Workers running one agent on an engine's store.
#[napi]
pub struct NativeWorker {
    orchestrator: Orchestrator,
    handle: Arc<Mutex<Option<WorkerHandle>>>,
}

#[napi]
impl NativeWorker {
    /// Workers running the JavaScript agent behind `dispatch`, named `name`; without `dispatch`,
    /// the built-in scripted agent (for comparisons).
    #[napi(constructor)]
    pub fn new(
        engine: &NativeEngine,
        name: String,
        #[napi(ts_arg_type = "((request: string) => Promise<string>) | undefined | null")] dispatch: Option<Dispatch>,
        options: Option<NativeWorkerOptions>,
    ) -> Self {
        let agent: Arc<dyn Agent> = match dispatch {
            Some(dispatch) => Arc::new(HostAdapter(JsAgent { name, dispatch })),
            None => Arc::new(ScriptedAgent::default()),
        };
        let options = options.unwrap_or_default();
        let defaults = WorkerOptions::default();
        let ms = |v: Option<u32>, default: Duration| v.map_or(default, |ms| Duration::from_millis(ms.into()));
        let options = WorkerOptions {
            concurrency: options.concurrency.map_or(defaults.concurrency, |c| c as usize),
            lease: ms(options.lease_ms, defaults.lease),
            poll_interval: ms(options.poll_interval_ms, defaults.poll_interval),
            max_attempts: options.max_attempts.unwrap_or(defaults.max_attempts),
            retry_delay: ms(options.retry_delay_ms, defaults.retry_delay),
        };
        Self { orchestrator: engine.engine.orchestrator(agent, options), handle: Arc::default() }
    }

    /// Runs until no job is active in the store.
    #[napi]
    pub async fn run_until_idle(&self) -> Result<()> {
        self.orchestrator.run_until_idle().await.map_err(core_error)
    }

    /// Starts a worker in the background (until [`NativeWorker::shutdown`]).
    #[napi]
    pub async fn start(&self) -> Result<()> {
        let mut handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        if handle.is_some() {
            return Err(error("conflict", "the worker is already running"));
        }
        *handle = Some(self.orchestrator.spawn_worker());
        Ok(())
    }

    /// Stops the started worker: it claims nothing more, its running jobs stop at their next
    /// checkpoint and release their leases, waiting up to `grace_ms` for them.
    #[napi]
    pub async fn shutdown(&self, grace_ms: u32) {
        let handle = self.handle.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = handle {
            handle.shutdown(Duration::from_millis(grace_ms.into())).await;
        }
    }
}
