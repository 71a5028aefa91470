//! `aicd._aicd`, the native module of the `aicd` Python package: glue over
//! [`aicd_core::embed`] (the engine, an API key's session, following a job, workers),
//! [`aicd_agent_api::host`] (an agent written in Python), the policy engine and GitHub webhook
//! verification. Values cross as JSON text in the shapes of the HTTP API and the agent contract;
//! the `aicd` package's Python layer turns them into dicts and gives the operations their names.
//! Every error from Rust becomes an exception of the `AicdError` hierarchy in [`error`].

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aicd_agent_api::host::{HostAdapter, HostAgent, HostFailure, Step};
use aicd_agent_api::{RepoViewError, TaskContext};
use aicd_core::embed::{self, OpenOptions, WorkerOptions};
use aicd_core::orchestrator::WorkerHandle;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;
use serde_json::Value;

create_exception!(_aicd, AicdError, PyException, "Every error AI-CD raises; `code` names its kind.");
create_exception!(_aicd, NotFound, AicdError, "No such resource, or another organization's.");
create_exception!(_aicd, PermissionDenied, AicdError, "The key's role does not allow the operation.");
create_exception!(_aicd, Unauthenticated, AicdError, "The API key is malformed, unknown, revoked or expired.");
create_exception!(_aicd, InvalidInput, AicdError, "An argument is invalid; the message says which and why.");
create_exception!(_aicd, Conflict, AicdError, "The operation conflicts with the current state.");
create_exception!(_aicd, PolicyViolation, AicdError, "The policy engine refused a changeset.");
create_exception!(_aicd, Unavailable, AicdError, "A dependency is unavailable; try again shortly.");
create_exception!(_aicd, PaymentRequired, AicdError, "The organization's quota or payment stops new work.");

/// The exception for a core error: the one place errors are mapped.
fn error(err: aicd_core::Error) -> PyErr {
    let message = err.to_string();
    match err.code() {
        "not_found" => NotFound::new_err(message),
        "forbidden" => PermissionDenied::new_err(message),
        "unauthenticated" => Unauthenticated::new_err(message),
        "invalid_input" => InvalidInput::new_err(message),
        "conflict" | "lease_lost" => Conflict::new_err(message),
        "unavailable" => Unavailable::new_err(message),
        "quota_exceeded" | "payment_required" => PaymentRequired::new_err(message),
        _ => AicdError::new_err(message),
    }
}

fn invalid(message: impl std::fmt::Display) -> PyErr {
    InvalidInput::new_err(message.to_string())
}

fn parse_json(what: &str, text: &str) -> PyResult<Value> {
    serde_json::from_str(text).map_err(|e| invalid(format!("{what} is not valid JSON: {e}")))
}

/// Threads about to enter the interpreter from Rust (to resolve an awaitable, or to call the
/// agent), and whether the interpreter is exiting. Entering Python while it finalizes kills the
/// thread mid-call and aborts the process, so at exit (an `atexit` hook, which runs before
/// finalization) [`quiesce`] stops new entries and waits for those under way.
static ENTERING: AtomicUsize = AtomicUsize::new(0);
static EXITING: AtomicBool = AtomicBool::new(false);

/// The Tokio runtime of this process, made on first use. A process forked from one that had a
/// runtime gets its own (the parent's threads do not exist in the child; its runtime is left
/// alone, never dropped), so `aicd` keeps working after `fork()` (multiprocessing, preforking
/// servers). Objects opened before the fork belong to the parent: open new ones in the child.
fn runtime() -> Arc<tokio::runtime::Runtime> {
    static RUNTIME: Mutex<Option<(u32, Arc<tokio::runtime::Runtime>)>> = Mutex::new(None);
    let pid = std::process::id();
    let mut current = RUNTIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((owner, runtime)) = current.as_ref()
        && *owner == pid
    {
        return runtime.clone();
    }
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("aicd")
            .enable_all()
            .build()
            .expect("a Tokio runtime can be started"),
    );
    if let Some(inherited) = current.replace((pid, runtime.clone())) {
        // The parent's runtime: its threads are gone here, and dropping it would wait for them.
        std::mem::forget(inherited);
    }
    runtime
}

/// Runs `f` attached to the interpreter, unless it is exiting (then `None`).
fn enter<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    ENTERING.fetch_add(1, Ordering::SeqCst);
    let result = if EXITING.load(Ordering::SeqCst) { None } else { Some(Python::attach(f)) };
    ENTERING.fetch_sub(1, Ordering::SeqCst);
    result
}

/// Called at interpreter exit: no thread enters Python from now on, and those entering finish
/// first (waiting at most a second).
#[pyfunction]
fn quiesce(py: Python<'_>) {
    EXITING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(1);
        while ENTERING.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// Sets an asyncio future's outcome unless it was cancelled meanwhile (run on its loop).
#[pyfunction]
fn resolve(future: &Bound<'_, PyAny>, ok: bool, value: Bound<'_, PyAny>) -> PyResult<()> {
    if future.call_method0("cancelled")?.extract::<bool>()? {
        return Ok(());
    }
    if ok {
        future.call_method1("set_result", (value,))?
    } else {
        future.call_method1("set_exception", (value,))?
    };
    Ok(())
}

/// An asyncio future of the running loop, resolved with `fut`'s outcome once it ends on the
/// Tokio runtime.
fn awaitable<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let future = event_loop.call_method0("create_future")?;
    let (target, event_loop) = (future.clone().unbind(), event_loop.unbind());
    runtime().spawn(async move {
        let outcome = fut.await;
        let _ = tokio::task::spawn_blocking(move || {
            enter(|py| {
                let (ok, value) = match outcome.and_then(|v| pyo3::IntoPyObjectExt::into_bound_py_any(v, py)) {
                    Ok(value) => (true, value),
                    Err(err) => (false, err.into_value(py).into_bound(py).into_any()),
                };
                let resolve = wrap_pyfunction!(resolve, py)?;
                // A closed loop (its program ended without waiting) just drops the outcome.
                let _ = event_loop.bind(py).call_method1("call_soon_threadsafe", (resolve, target, ok, value));
                PyResult::Ok(())
            })
        })
        .await;
    });
    Ok(future)
}

/// The engine over one store (`aicd_core::embed::Engine`).
#[pyclass(frozen, module = "aicd._aicd")]
struct Engine {
    inner: embed::Engine,
}

#[pymethods]
impl Engine {
    /// Opens the store at `url` (`postgres://…` or `sqlite:<path>`); resolves to an `Engine`.
    #[staticmethod]
    #[pyo3(signature = (url, migrate=false, owner_url=None, local_roots=Vec::new(), redis_url=None))]
    fn open(
        py: Python<'_>,
        url: String,
        migrate: bool,
        owner_url: Option<String>,
        local_roots: Vec<PathBuf>,
        redis_url: Option<String>,
    ) -> PyResult<Bound<'_, PyAny>> {
        let options = OpenOptions { migrate, owner_url, local_roots, redis_url, ..OpenOptions::default() };
        awaitable(py, async move {
            let inner = embed::Engine::open(&url, options).await.map_err(error)?;
            Ok(Engine { inner })
        })
    }

    /// `postgres` or `sqlite`.
    #[getter]
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    /// Creates an organization with a first org_admin key; resolves to `(org_id, api_key)`.
    fn bootstrap<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        awaitable(py, async move {
            let boot = inner.bootstrap(&name).await.map_err(error)?;
            Ok((boot.org_id.to_string(), boot.api_key))
        })
    }

    /// Acts as the holder of `api_key`; resolves to a `Session`.
    fn session<'py>(&self, py: Python<'py>, api_key: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        awaitable(py, async move {
            let inner = inner.session(&api_key).await.map_err(error)?;
            Ok(Session { inner })
        })
    }

    /// Closes the store's connections.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        awaitable(py, async move {
            inner.close().await;
            Ok(())
        })
    }
}

/// An API key's view of its organization (`aicd_core::embed::Session`).
#[pyclass(frozen, module = "aicd._aicd")]
struct Session {
    inner: embed::Session,
}

#[pymethods]
impl Session {
    /// The key's organization id.
    #[getter]
    fn org_id(&self) -> String {
        self.inner.org_id().to_string()
    }

    /// Runs operation `op` with `args` (JSON text); resolves to the result as JSON text.
    fn call<'py>(&self, py: Python<'py>, op: String, args: &str) -> PyResult<Bound<'py, PyAny>> {
        let args = parse_json("the arguments", args)?;
        let inner = self.inner.clone();
        awaitable(py, async move {
            let result = inner.call(&op, args).await.map_err(error)?;
            Ok(result.to_string())
        })
    }

    /// Follows job `job_id`'s timeline.
    fn follow(&self, job_id: &str) -> PyResult<Follow> {
        let job = job_id.parse().map_err(|_| invalid(format!("`{job_id}` is not a job id")))?;
        Ok(Follow { inner: Arc::new(tokio::sync::Mutex::new(self.inner.follow(job))) })
    }
}

/// A job's timeline as it happens.
#[pyclass(frozen, module = "aicd._aicd")]
struct Follow {
    inner: Arc<tokio::sync::Mutex<embed::Follow>>,
}

#[pymethods]
impl Follow {
    /// Resolves to the next event as JSON text, or `None` once the job reached PR_OPEN or an end.
    fn next<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        awaitable(py, async move {
            let event = inner.lock().await.next().await.map_err(error)?;
            Ok(event.map(|e| serde_json::to_string(&e).unwrap_or_default()))
        })
    }
}

/// The read-only view of the repository an agent's step works on.
#[pyclass(frozen, module = "aicd._aicd")]
struct RepoView {
    inner: Arc<dyn aicd_agent_api::RepoView>,
}

fn view_error(err: RepoViewError) -> PyErr {
    match err {
        RepoViewError::InvalidPath { .. } | RepoViewError::FileTooLarge { .. } | RepoViewError::TooManyFiles { .. } => {
            invalid(err)
        }
        other => Unavailable::new_err(other.to_string()),
    }
}

#[pymethods]
impl RepoView {
    /// Resolves to the repository's file paths (under `prefix`, if given), sorted.
    #[pyo3(signature = (prefix=None))]
    fn list_files<'py>(&self, py: Python<'py>, prefix: Option<String>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        awaitable(py, async move {
            let mut files = inner.list_files().await.map_err(view_error)?;
            if let Some(prefix) = prefix {
                files.retain(|f| f.starts_with(&prefix));
            }
            Ok(files)
        })
    }

    /// Resolves to the file's bytes, or `None` if there is no such file.
    fn read_bytes<'py>(&self, py: Python<'py>, path: String) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner.clone();
        awaitable(py, async move {
            let bytes = inner.read_file(&path).await.map_err(view_error)?;
            Ok(bytes)
        })
    }
}

/// An agent object in Python, reached through the package's bridge (`aicd._bridge.Bridge`),
/// whose `call(method, args_json, view)` coroutine resolves to `{"ok": answer}` or
/// `{"failure": "raised" | "permanent" | "budget", "message": …}` as JSON text.
struct PyAgent {
    bridge: Py<PyAny>,
    locals: TaskLocals,
    name: String,
}

#[async_trait::async_trait]
impl HostAgent for PyAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, step: Step, ctx: &TaskContext, args: Vec<Value>) -> Result<Value, HostFailure> {
        let args = Value::Array(args).to_string();
        let view = RepoView { inner: ctx.repo_view().clone() };
        let exiting = || HostFailure::Raised("the Python interpreter is exiting".to_owned());
        let called = enter(|py| {
            let coroutine = self.bridge.bind(py).call_method1("call", (step.method(), args, view))?;
            pyo3_async_runtimes::into_future_with_locals(&self.locals, coroutine)
        });
        let lost = |e: PyErr| HostFailure::Raised(format!("the agent bridge failed: {e}"));
        let answer = called.ok_or_else(exiting)?.map_err(lost)?.await.map_err(lost)?;
        let text: String = enter(|py| answer.extract(py)).ok_or_else(exiting)?.map_err(lost)?;
        let mut envelope: Value = serde_json::from_str(&text)
            .map_err(|e| HostFailure::Permanent(format!("the agent's answer is not JSON: {e}")))?;
        if let Some(ok) = envelope.get_mut("ok") {
            return Ok(ok.take());
        }
        let message = envelope["message"].as_str().unwrap_or_default().to_owned();
        Err(match envelope["failure"].as_str() {
            Some("permanent") => HostFailure::Permanent(message),
            Some("budget") => HostFailure::BudgetExhausted(message),
            _ => HostFailure::Raised(message),
        })
    }
}

/// Workers running the Rust orchestrator with an agent written in Python.
#[pyclass(frozen, module = "aicd._aicd")]
struct Worker {
    engine: embed::Engine,
    /// The agent's bridge; `None` runs the built-in scripted agent (for comparisons).
    bridge: Option<Py<PyAny>>,
    name: String,
    options: WorkerOptions,
    running: Mutex<Option<WorkerHandle>>,
}

impl Worker {
    /// The orchestrator, calling the agent on the event loop running now.
    fn orchestrator(&self, py: Python<'_>) -> PyResult<aicd_core::orchestrator::Orchestrator> {
        let agent: Arc<dyn aicd_agent_api::Agent> = match &self.bridge {
            Some(bridge) => {
                let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
                Arc::new(HostAdapter(PyAgent { bridge: bridge.clone_ref(py), locals, name: self.name.clone() }))
            }
            None => Arc::new(aicd_agent_api::ScriptedAgent::default()),
        };
        Ok(self.engine.orchestrator(agent, self.options.clone()))
    }
}

#[pymethods]
impl Worker {
    #[new]
    #[pyo3(signature = (engine, bridge, name, concurrency=4, poll_interval_ms=2000, lease_ms=30000, max_attempts=5, retry_delay_ms=2000))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        engine: &Engine,
        bridge: Option<Py<PyAny>>,
        name: String,
        concurrency: usize,
        poll_interval_ms: u64,
        lease_ms: u64,
        max_attempts: u32,
        retry_delay_ms: u64,
    ) -> PyResult<Self> {
        if concurrency == 0 || lease_ms < 300 || max_attempts == 0 {
            return Err(invalid("concurrency and max_attempts must be at least 1, lease_ms at least 300"));
        }
        let options = WorkerOptions {
            concurrency,
            lease: Duration::from_millis(lease_ms),
            poll_interval: Duration::from_millis(poll_interval_ms.max(10)),
            max_attempts,
            retry_delay: Duration::from_millis(retry_delay_ms),
        };
        Ok(Self { engine: engine.inner.clone(), bridge, name, options, running: Mutex::new(None) })
    }

    /// Resolves once no job is left to run (see `Orchestrator::run_until_idle`).
    fn run_until_idle<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let orchestrator = self.orchestrator(py)?;
        awaitable(py, async move { orchestrator.run_until_idle().await.map_err(error) })
    }

    /// Starts claiming and running jobs in the background, until `stop`.
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        let orchestrator = self.orchestrator(py)?;
        let mut running = self.running.lock().map_err(|_| AicdError::new_err("the worker's state is poisoned"))?;
        if running.is_some() {
            return Err(Conflict::new_err("the worker is already running"));
        }
        let runtime = runtime();
        let _entered = runtime.enter();
        *running = Some(orchestrator.spawn_worker());
        Ok(())
    }

    /// Stops claiming; running jobs stop at their next checkpoint and release their leases.
    /// Resolves when they have, or after `grace_ms` (their leases then lapse).
    #[pyo3(signature = (grace_ms=30000))]
    fn stop<'py>(&self, py: Python<'py>, grace_ms: u64) -> PyResult<Bound<'py, PyAny>> {
        let handle = self.running.lock().map_err(|_| AicdError::new_err("the worker's state is poisoned"))?.take();
        awaitable(py, async move {
            if let Some(handle) = handle {
                handle.shutdown(Duration::from_millis(grace_ms)).await;
            }
            Ok(())
        })
    }
}

/// Resolves to the seconds `calls` calls of `bridge`'s `plan` take from Rust, one after the other,
/// through the same path the orchestrator uses (for measuring the boundary's cost).
#[pyfunction]
fn time_agent_calls(py: Python<'_>, bridge: Py<PyAny>, calls: u32) -> PyResult<Bound<'_, PyAny>> {
    let locals = pyo3_async_runtimes::tokio::get_current_locals(py)?;
    let agent = HostAdapter(PyAgent { bridge, locals, name: "timed".into() });
    awaitable(py, async move {
        let ctx = TaskContext::new(
            "timing",
            aicd_agent_api::Issue::new("time the boundary", ""),
            aicd_agent_api::RepoRef::new("bench/repo", "main"),
            aicd_agent_api::Budget::new(1_000_000, 1_000_000),
            Arc::new(aicd_agent_api::MemoryRepoView::new()),
        );
        let started = std::time::Instant::now();
        for _ in 0..calls {
            aicd_agent_api::Agent::plan(&agent, &ctx).await.map_err(|e| AicdError::new_err(e.to_string()))?;
        }
        Ok(started.elapsed().as_secs_f64())
    })
}

/// Whether `signature_header` (`X-Hub-Signature-256`) signs `body` with `secret`.
/// `InvalidInput` for an empty secret.
#[pyfunction]
#[pyo3(signature = (secret, body, signature_header))]
fn verify_webhook(secret: &[u8], body: &[u8], signature_header: Option<&str>) -> PyResult<bool> {
    let secret = aicd_github::webhooks::WebhookSecret::new(secret.to_vec()).map_err(invalid)?;
    Ok(secret.verify(body, signature_header).is_ok())
}

/// The webhook delivery `body` of event `event_name` (`X-GitHub-Event`), as JSON text.
#[pyfunction]
fn parse_webhook(event_name: &str, body: &[u8]) -> PyResult<String> {
    let event = aicd_github::webhooks::parse_event(event_name, body).map_err(invalid)?;
    serde_json::to_string(&event).map_err(invalid)
}

/// The policy engine's violations of `changeset` (JSON text, the agent contract's shape) under
/// `config` (JSON text of the `[policy]` settings, or `None`), as JSON text.
#[pyfunction]
#[pyo3(signature = (changeset, config=None))]
fn check_policy(changeset: &str, config: Option<&str>) -> PyResult<String> {
    let changeset: aicd_agent_api::Changeset = serde_json::from_value(parse_json("the changeset", changeset)?)
        .map_err(|e| invalid(format!("changeset: {e}")))?;
    let config: aicd_core::policy::PolicyConfig = match config {
        Some(text) => {
            serde_json::from_value(parse_json("the policy", text)?).map_err(|e| invalid(format!("policy: {e}")))?
        }
        None => Default::default(),
    };
    let violations = aicd_core::policy::check_changeset(&changeset, &config).map_err(invalid)?;
    serde_json::to_string(&violations).map_err(invalid)
}

#[pymodule]
fn _aicd(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<Engine>()?;
    m.add_class::<Session>()?;
    m.add_class::<Follow>()?;
    m.add_class::<RepoView>()?;
    m.add_class::<Worker>()?;
    m.add_function(wrap_pyfunction!(verify_webhook, m)?)?;
    m.add_function(wrap_pyfunction!(parse_webhook, m)?)?;
    m.add_function(wrap_pyfunction!(check_policy, m)?)?;
    m.add_function(wrap_pyfunction!(time_agent_calls, m)?)?;
    py.import("atexit")?.call_method1("register", (wrap_pyfunction!(quiesce, m)?,))?;
    let errors = [
        ("AicdError", py.get_type::<AicdError>(), "internal"),
        ("NotFound", py.get_type::<NotFound>(), "not_found"),
        ("PermissionDenied", py.get_type::<PermissionDenied>(), "forbidden"),
        ("Unauthenticated", py.get_type::<Unauthenticated>(), "unauthenticated"),
        ("InvalidInput", py.get_type::<InvalidInput>(), "invalid_input"),
        ("Conflict", py.get_type::<Conflict>(), "conflict"),
        ("PolicyViolation", py.get_type::<PolicyViolation>(), "policy_violation"),
        ("Unavailable", py.get_type::<Unavailable>(), "unavailable"),
        ("PaymentRequired", py.get_type::<PaymentRequired>(), "payment_required"),
    ];
    for (name, class, code) in errors {
        class.setattr("code", code)?;
        m.add(name, class)?;
    }
    Ok(())
}
