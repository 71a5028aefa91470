//! Replaying recorded LLM interactions ([`aicd_agent_api::llm::cassette`]) with wiremock, and
//! recording new ones from a real provider.
//!
//! A [`Recording`] plays one cassette file:
//!
//! - by default it **replays**: a mock server answers each request with the next recorded
//!   response, if the request is the recorded one (method, path and the hash of its canonical
//!   body). Any other request is answered 400 with the difference from the nearest recorded
//!   request (so the agent fails with it) and [`Recording::finish`] panics showing it;
//! - with `AICD_LLM_RECORD=1` (and `AICD_LLM_BASE_URL`, `AICD_LLM_API_KEY`, `AICD_LLM_MODEL`
//!   naming a real provider) it **records**: requests go to the provider through a
//!   [`RecordingTransport`], and [`Recording::finish`] writes the cassette;
//! - with `AICD_CASSETTE_BLESS=1` it replays the recorded responses but takes the requests as
//!   they come, and [`Recording::finish`] writes them into the cassette: how cassettes written by
//!   hand (responses in the provider's documented shapes) get their request halves. Review the
//!   diff before committing a blessed cassette.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use aicd_agent_api::llm::cassette::{Cassette, RecordedRequest, RecordingTransport, body_hash, canonical};
use aicd_agent_api::llm::{HttpTransport, Transport};
use serde_json::Value;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// How a [`Recording`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answer from the cassette, checking each request.
    Replay,
    /// Answer from the cassette, taking requests as they come, and write them into it.
    Bless,
    /// Ask the real provider and write the cassette.
    Record,
}

/// One cassette in play.
pub struct Recording {
    path: PathBuf,
    mode: Mode,
    cassette: Cassette,
    server: Option<MockServer>,
    state: Arc<Mutex<ReplayState>>,
    recorder: Option<Arc<RecordingTransport>>,
    finished: bool,
}

#[derive(Default)]
struct ReplayState {
    cassette: Cassette,
    next: usize,
    mismatches: Vec<String>,
    bless: bool,
}

impl Recording {
    /// Plays the cassette at `path` (which must exist unless recording), in the mode the
    /// environment asks for.
    pub async fn start(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mode = if std::env::var("AICD_LLM_RECORD").is_ok_and(|v| v == "1") {
            Mode::Record
        } else if std::env::var("AICD_CASSETTE_BLESS").is_ok_and(|v| v == "1") {
            Mode::Bless
        } else {
            Mode::Replay
        };
        let cassette = match Cassette::load(&path) {
            Ok(cassette) => cassette,
            Err(_) if mode == Mode::Record => Cassette::default(),
            Err(e) => panic!("{e}"),
        };
        let state = Arc::new(Mutex::new(ReplayState {
            cassette: cassette.clone(),
            bless: mode == Mode::Bless,
            ..Default::default()
        }));
        let (server, recorder) = match mode {
            Mode::Record => {
                let http = HttpTransport::new(std::time::Duration::from_secs(10), std::time::Duration::from_secs(300))
                    .expect("an HTTP client");
                (None, Some(Arc::new(RecordingTransport::new(Arc::new(http)))))
            }
            Mode::Replay | Mode::Bless => {
                let server = MockServer::start().await;
                Mock::given(wiremock::matchers::any()).respond_with(Replayer(state.clone())).mount(&server).await;
                (Some(server), None)
            }
        };
        Self { path, mode, cassette, server, state, recorder, finished: false }
    }

    /// How it runs.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The base URL to configure the agent with: the mock server's (with `suffix`, e.g. `/v1`
    /// for OpenAI's protocol), or the real provider's when recording.
    pub fn base_url(&self, suffix: &str) -> String {
        match &self.server {
            Some(server) => format!("{}{suffix}", server.uri()),
            None => std::env::var("AICD_LLM_BASE_URL").expect("AICD_LLM_BASE_URL names the provider to record from"),
        }
    }

    /// The API key: the real one when recording, a placeholder otherwise.
    pub fn api_key(&self) -> String {
        match self.mode {
            Mode::Record => std::env::var("AICD_LLM_API_KEY").unwrap_or_default(),
            _ => "test-key-not-a-secret".into(),
        }
    }

    /// The model: the one recorded in the cassette (its first request's `model`), or
    /// `AICD_LLM_MODEL` when recording, or `fallback`.
    pub fn model(&self, fallback: &str) -> String {
        if self.mode == Mode::Record {
            return std::env::var("AICD_LLM_MODEL").unwrap_or_else(|_| fallback.to_owned());
        }
        self.cassette
            .interactions
            .iter()
            .find_map(|i| i.request.body.get("model").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| fallback.to_owned())
    }

    /// The transport to give the agent: a recorder when recording, plain HTTP otherwise.
    pub fn transport(&self) -> Arc<dyn Transport> {
        match &self.recorder {
            Some(recorder) => recorder.clone(),
            None => Arc::new(
                HttpTransport::new(std::time::Duration::from_secs(5), std::time::Duration::from_secs(30))
                    .expect("an HTTP client"),
            ),
        }
    }

    /// How many recorded interactions were played.
    pub fn played(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).next
    }

    /// Ends the recording: checks that every request matched and every interaction was played
    /// (replay), or writes the cassette (record, bless). Panics with the differences otherwise.
    pub fn finish(mut self) {
        self.finished = true;
        match self.mode {
            Mode::Record => {
                let recorder = self.recorder.clone().expect("a recorder");
                let source = format!(
                    "recorded from {} ({})",
                    std::env::var("AICD_LLM_BASE_URL").unwrap_or_default(),
                    std::env::var("AICD_LLM_MODEL").unwrap_or_default()
                );
                let scenario = if self.cassette.scenario.is_empty() {
                    self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
                } else {
                    self.cassette.scenario.clone()
                };
                recorder.cassette(scenario, source).save(&self.path).expect("the cassette is written");
            }
            Mode::Bless => {
                let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                let mut cassette = state.cassette.clone();
                cassette.interactions.truncate(state.next);
                cassette.save(&self.path).expect("the cassette is written");
            }
            Mode::Replay => {
                let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
                assert!(state.mismatches.is_empty(), "{}:\n{}", self.path.display(), state.mismatches.join("\n\n"));
                assert_eq!(
                    state.next,
                    state.cassette.interactions.len(),
                    "{}: only {} of {} recorded interactions were played",
                    self.path.display(),
                    state.next,
                    state.cassette.interactions.len()
                );
            }
        }
    }
}

impl Drop for Recording {
    /// A recording dropped without [`Recording::finish`] (a test that forgot it) still reports
    /// requests that did not match, unless the test is failing already.
    fn drop(&mut self) {
        if self.finished || std::thread::panicking() || self.mode != Mode::Replay {
            return;
        }
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        assert!(state.mismatches.is_empty(), "{}:\n{}", self.path.display(), state.mismatches.join("\n\n"));
    }
}

/// The headers a provider's request must carry: the API key's and, for Anthropic, its version.
fn missing_headers(request: &Request) -> Option<String> {
    let has = |name: &str| request.headers.get(name).is_some();
    let path = request.url.path();
    let missing: Vec<&str> = if path.ends_with("/messages") {
        ["x-api-key", "anthropic-version"].into_iter().filter(|h| !has(h)).collect()
    } else if path.ends_with("/chat/completions") {
        ["authorization"].into_iter().filter(|h| !has(h)).collect()
    } else {
        Vec::new()
    };
    (!missing.is_empty()).then(|| format!("the request has no {} header", missing.join(" or ")))
}

/// Answers requests from the cassette, in order.
struct Replayer(Arc<Mutex<ReplayState>>);

impl Respond for Replayer {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let path = match request.url.query() {
            Some(q) => format!("{}?{q}", request.url.path()),
            None => request.url.path().to_owned(),
        };
        let actual = RecordedRequest { method: request.method.to_string(), path, body_sha256: body_hash(&body), body };
        let index = state.next;
        let Some(recorded) = state.cassette.interactions.get(index).cloned() else {
            let message = format!("request {} is past the end of the cassette:\n{}", index + 1, describe(&actual));
            state.mismatches.push(message.clone());
            return mismatch(&message);
        };
        if let Some(missing) = missing_headers(request) {
            let message = format!("request {}: {missing}", index + 1);
            state.mismatches.push(message.clone());
            return mismatch(&message);
        }
        // The recorded body is what counts: its stored hash could be stale after an edit.
        let matches = recorded.request.method == actual.method
            && recorded.request.path == actual.path
            && body_hash(&recorded.request.body) == actual.body_sha256;
        if !matches && !state.bless {
            let message = format!(
                "request {} differs from the recorded one:\n{}",
                index + 1,
                difference(&recorded.request, &actual)
            );
            state.mismatches.push(message.clone());
            return mismatch(&message);
        }
        if state.bless {
            state.cassette.interactions[index].request = actual;
        }
        state.next += 1;
        let response = &recorded.response;
        let mut template =
            ResponseTemplate::new(response.status).set_body_raw(response.body_text(), "application/json");
        for (name, value) in &response.headers {
            if name != "content-type" {
                template = template.insert_header(name.as_str(), value.as_str());
            }
        }
        template
    }
}

fn mismatch(message: &str) -> ResponseTemplate {
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": "cassette_mismatch", "message": message.lines().next().unwrap_or("cassette mismatch") }
    });
    ResponseTemplate::new(400).set_body_json(body)
}

fn describe(request: &RecordedRequest) -> String {
    format!("{} {} {}", request.method, request.path, shorten(&canonical(&request.body), 400))
}

/// Where `actual` first differs from `recorded`.
fn difference(recorded: &RecordedRequest, actual: &RecordedRequest) -> String {
    if recorded.method != actual.method || recorded.path != actual.path {
        return format!("recorded {} {}, got {} {}", recorded.method, recorded.path, actual.method, actual.path);
    }
    let mut out = Vec::new();
    diff_values("body", &recorded.body, &actual.body, &mut out);
    if out.is_empty() {
        out.push(format!("the body hash differs (recorded {}, got {})", recorded.body_sha256, actual.body_sha256));
    }
    out.truncate(12);
    out.join("\n")
}

fn diff_values(at: &str, recorded: &Value, actual: &Value, out: &mut Vec<String>) {
    match (recorded, actual) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => diff_values(&format!("{at}.{key}"), x, y, out),
                    (Some(_), None) => out.push(format!("{at}.{key}: recorded, now missing")),
                    (None, Some(y)) => out.push(format!("{at}.{key}: new: {}", shorten(&canonical(y), 200))),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_values(&format!("{at}[{i}]"), x, y, out);
            }
            if a.len() != b.len() {
                out.push(format!("{at}: recorded {} items, got {}", a.len(), b.len()));
            }
        }
        (x, y) if x != y => out.push(format!(
            "{at}:\n  recorded: {}\n  got:      {}",
            shorten(&canonical(x), 300),
            shorten(&canonical(y), 300)
        )),
        _ => {}
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

/// The directory of a crate's cassettes: `<crate>/tests/cassettes`.
pub fn cassettes_dir(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("tests").join("cassettes")
}
