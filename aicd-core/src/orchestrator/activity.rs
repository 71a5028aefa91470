//! The progress sink the orchestrator gives an agent for one call: its notes become `activity`
//! events on the job's timeline, and what it spends is summed so a step that fails is charged
//! for it.
//!
//! Notes are written in batches: a note waits up to [`BATCH_WINDOW`] for others, then they are
//! appended in one transaction, so a long call's timeline moves as it works. Notes still waiting
//! when the call ends are handed back to go out with the step's result, in its transaction: a
//! quick call costs no writes of its own.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aicd_agent_api::{ProgressSink, Usage};
use tokio::sync::{Notify, watch};

use crate::jobs::{EventKind, NewEvent};
use crate::signals::EventBus;
use crate::store::Store;
use crate::{JobId, OrgId};

/// Notes kept per call; past it, one last note says the rest is not shown.
const MAX_NOTES: usize = 300;
/// The longest note written, in characters.
const MAX_NOTE_CHARS: usize = 300;
/// How long the end of a call waits for a batch being written.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a note waits for others before they are written together.
const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// One agent call's sink.
pub(crate) struct CallActivity {
    actor: String,
    state: Mutex<State>,
    noted: Notify,
    closed: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    notes: usize,
    pending: Vec<String>,
    closed: bool,
    spent: Usage,
}

/// The writer of a call's notes, to wait for at the end of the call.
pub(crate) struct Writer(tokio::task::JoinHandle<()>);

impl CallActivity {
    /// A sink for a call of job `job` whose notes are appended as `actor` and published on `bus`.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        org: OrgId,
        job: JobId,
        actor: String,
    ) -> (Arc<Self>, Writer) {
        let (closed, _) = watch::channel(false);
        let sink = Arc::new(Self { actor, state: Mutex::default(), noted: Notify::new(), closed });
        let writer = tokio::spawn({
            let sink = sink.clone();
            async move {
                let mut closed = sink.closed.subscribe();
                loop {
                    tokio::select! {
                        _ = sink.noted.notified() => {}
                        _ = closed.wait_for(|c| *c) => return,
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(BATCH_WINDOW) => {}
                        _ = closed.wait_for(|c| *c) => return,
                    }
                    let batch = sink.take_pending();
                    if batch.is_empty() {
                        continue;
                    }
                    match store.append_events(org, job, batch).await {
                        Ok(events) => {
                            for event in &events {
                                bus.publish(event).await;
                            }
                        }
                        Err(error) => tracing::debug!(%job, %error, "activity notes could not be written"),
                    }
                }
            }
        });
        (sink, Writer(writer))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take_pending(&self) -> Vec<NewEvent> {
        let pending = std::mem::take(&mut self.lock().pending);
        pending.into_iter().map(|message| NewEvent::new(self.actor.clone(), EventKind::Activity, message)).collect()
    }

    /// Stops taking notes; returns what the call spent through the sink and the notes not yet
    /// written (for the caller to write with the step's result, after [`Writer::flush`]).
    pub(crate) fn finish(&self) -> (Usage, Vec<NewEvent>) {
        let spent = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.spent)
        };
        self.closed.send_replace(true);
        (spent, self.take_pending())
    }
}

impl Writer {
    /// Waits (a bounded time) for a batch being written to be written.
    pub(crate) async fn flush(self) {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, self.0).await;
    }
}

impl ProgressSink for CallActivity {
    fn note(&self, message: &str) {
        {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            state.notes += 1;
            let message = match state.notes {
                n if n < MAX_NOTES => shorten(message),
                MAX_NOTES => "further activity of this step is not shown".to_owned(),
                _ => return,
            };
            state.pending.push(message);
        }
        self.noted.notify_one();
    }

    fn spend(&self, usage: &Usage) {
        self.lock().spent.accumulate(usage);
    }
}

/// The first line of `message`, at most [`MAX_NOTE_CHARS`] characters.
fn shorten(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default().trim_end();
    if line.chars().count() <= MAX_NOTE_CHARS {
        return line.to_owned();
    }
    let mut short: String = line.chars().take(MAX_NOTE_CHARS - 1).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_are_one_bounded_line() {
        assert_eq!(shorten("read a.txt\nmore"), "read a.txt");
        let long = "x".repeat(400);
        assert_eq!(shorten(&long).chars().count(), MAX_NOTE_CHARS);
        assert!(shorten(&long).ends_with('…'));
    }
}
