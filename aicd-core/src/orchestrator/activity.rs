//! The progress sink the orchestrator gives an agent for one call: its notes become `activity`
//! events on the job's timeline (written in the background, in order), and what it spends is
//! summed so a step that fails is charged for it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aicd_agent_api::{ProgressSink, Usage};
use tokio::sync::mpsc;

use crate::jobs::{EventKind, NewEvent};
use crate::signals::EventBus;
use crate::store::Store;
use crate::{JobId, OrgId};

/// Notes kept per call; past it, one last note says the rest is not shown.
const MAX_NOTES: usize = 300;
/// The longest note written, in characters.
const MAX_NOTE_CHARS: usize = 300;
/// How long the end of a call waits for its notes to be written.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// One agent call's sink. Dropping the orchestrator's handle ends the writer once the queue is
/// written.
pub(crate) struct CallActivity {
    sender: Mutex<Option<mpsc::UnboundedSender<String>>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    notes: usize,
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
        let (sender, mut receiver) = mpsc::unbounded_channel::<String>();
        let writer = tokio::spawn(async move {
            while let Some(message) = receiver.recv().await {
                match store.append_event(org, job, NewEvent::new(actor.clone(), EventKind::Activity, message)).await {
                    Ok(event) => bus.publish(&event).await,
                    Err(error) => tracing::debug!(%job, %error, "an activity note could not be written"),
                }
            }
        });
        let sink = Arc::new(Self { sender: Mutex::new(Some(sender)), state: Mutex::default() });
        (sink, Writer(writer))
    }

    /// Stops taking notes and returns what the call spent through the sink.
    pub(crate) fn finish(&self) -> Usage {
        self.sender.lock().unwrap_or_else(PoisonError::into_inner).take();
        std::mem::take(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner).spent)
    }
}

impl Writer {
    /// Waits (a bounded time) for the notes already taken to be written.
    pub(crate) async fn flush(self) {
        let _ = tokio::time::timeout(FLUSH_TIMEOUT, self.0).await;
    }
}

impl ProgressSink for CallActivity {
    fn note(&self, message: &str) {
        let message = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.notes += 1;
            match state.notes {
                n if n < MAX_NOTES => shorten(message),
                MAX_NOTES => "further activity of this step is not shown".to_owned(),
                _ => return,
            }
        };
        if let Some(sender) = self.sender.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
            let _ = sender.send(message);
        }
    }

    fn spend(&self, usage: &Usage) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).spent.accumulate(usage);
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
