//! The terminal side of `run`: a job's events as one line each (`HH:MM:SS  <kind>  <message>`),
//! and on a terminal a spinner line under them showing the job's state, redrawn in place.

use std::io::Write;
use std::time::Instant;

use aicd_core::jobs::{JobEvent, JobState};

/// The spinner's frames.
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
/// Moves to the start of the line and clears it.
const CLEAR_LINE: &str = "\r\x1b[2K";
/// The width event kinds are padded to, so messages line up (longer kinds just push them right).
const KIND_WIDTH: usize = 16;

/// Writes a job's timeline to `out`. With `live` (a terminal), a spinner line follows the events,
/// redrawn in place; without it, only whole lines are written and nothing but text and newlines.
/// Write errors (a closed pipe) are ignored: the job goes on either way.
pub(crate) struct Timeline<W: Write> {
    out: W,
    live: bool,
    state: Option<JobState>,
    frame: usize,
    started: Instant,
    /// Whether the spinner line is on the screen.
    drawn: bool,
}

impl<W: Write> Timeline<W> {
    /// A timeline on `out`; `live` draws the spinner.
    pub(crate) fn new(out: W, live: bool) -> Self {
        Self { out, live, state: None, frame: 0, started: Instant::now(), drawn: false }
    }

    /// Whether the spinner is drawn.
    pub(crate) fn live(&self) -> bool {
        self.live
    }

    /// Prints `event` as one line, and follows the state it moves to.
    pub(crate) fn event(&mut self, event: &JobEvent) {
        if let Some(to) = event.to_state {
            self.state = Some(to);
        }
        let at = event.at.with_timezone(&chrono::Local).format("%H:%M:%S");
        let line = format!("{at}  {:<KIND_WIDTH$}  {}", event.kind.as_str(), one_line(&event.message));
        self.line(line.trim_end());
    }

    /// Prints a line of text (the header, a note) above the spinner.
    pub(crate) fn line(&mut self, text: &str) {
        self.erase();
        let _ = writeln!(self.out, "{text}");
        self.draw();
    }

    /// Shows `state` on the spinner line (when no event said so yet, or the job moved without one).
    pub(crate) fn set_state(&mut self, state: JobState) {
        if self.state != Some(state) {
            self.state = Some(state);
            self.draw();
        }
    }

    /// Advances the spinner by one frame.
    pub(crate) fn spin(&mut self) {
        self.frame = (self.frame + 1) % FRAMES.len();
        self.draw();
    }

    /// Removes the spinner line for good (before the outcome is printed) and returns the writer.
    pub(crate) fn finish(mut self) -> W {
        self.erase();
        self.live = false;
        let _ = self.out.flush();
        self.out
    }

    /// Draws the spinner line, once the job's state is known.
    fn draw(&mut self) {
        if let (true, Some(state)) = (self.live, self.state) {
            let secs = self.started.elapsed().as_secs();
            let _ = write!(self.out, "{CLEAR_LINE}{} {state} · {secs}s", FRAMES[self.frame]);
            self.drawn = true;
        }
        let _ = self.out.flush();
    }

    /// Removes the spinner line, if it is drawn.
    fn erase(&mut self) {
        if self.drawn {
            let _ = write!(self.out, "{CLEAR_LINE}");
            self.drawn = false;
        }
    }
}

/// `text` on one line: line breaks and runs of white space become one space, and any other
/// control character (a terminal escape, say) becomes `�`.
pub(crate) fn one_line(text: &str) -> String {
    printable(&text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `text` with every control character but newlines and tabs replaced by `�`, so what an issue or
/// a file says cannot drive the terminal.
pub(crate) fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '\u{FFFD}' } else { c }).collect()
}

/// A cost in micro-units of currency as US dollars to the hundredth of a cent: `$0.0123`.
pub(crate) fn dollars(micros: u64) -> String {
    let ten_thousandths = micros.saturating_add(50) / 100;
    format!("${}.{:04}", ten_thousandths / 10_000, ten_thousandths % 10_000)
}

#[cfg(test)]
mod tests {
    use aicd_core::jobs::EventKind;
    use aicd_core::{JobId, OrgId};

    use super::*;

    fn event(kind: EventKind, message: &str, to: Option<JobState>) -> JobEvent {
        JobEvent {
            id: 1,
            job_id: JobId::new(),
            org_id: OrgId::new(),
            at: chrono::Utc::now(),
            actor: "worker:w".into(),
            kind,
            from_state: None,
            to_state: to,
            message: message.into(),
            data: serde_json::json!({}),
        }
    }

    fn is_clock(s: &str) -> bool {
        s.len() == 8 && s.char_indices().all(|(i, c)| if i == 2 || i == 5 { c == ':' } else { c.is_ascii_digit() })
    }

    #[test]
    fn without_a_terminal_each_event_is_one_plain_line() {
        let mut timeline = Timeline::new(Vec::new(), false);
        timeline.event(&event(EventKind::StateChanged, "queued -> planning", Some(JobState::Planning)));
        timeline.spin();
        timeline.set_state(JobState::Coding);
        timeline.event(&event(EventKind::StepFailed, "bad\n\nnews\x1b[31m here", None));
        let out = String::from_utf8(timeline.finish()).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out:?}");
        assert!(is_clock(&lines[0][..8]), "{out:?}");
        assert_eq!(&lines[0][8..], "  state_changed     queued -> planning");
        assert_eq!(&lines[1][8..], "  step_failed       bad news\u{FFFD}[31m here");
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
    }

    #[test]
    fn on_a_terminal_the_spinner_is_redrawn_under_the_events() {
        let mut timeline = Timeline::new(Vec::new(), true);
        timeline.line("Job 1");
        timeline.spin();
        timeline.set_state(JobState::Queued);
        timeline.spin();
        let planning = event(EventKind::StateChanged, "queued -> planning", Some(JobState::Planning));
        timeline.event(&planning);
        let out = String::from_utf8(timeline.finish()).unwrap();
        let at = planning.at.with_timezone(&chrono::Local).format("%H:%M:%S");
        // The spinner is redrawn in place; each event line starts on a cleared line and the spinner
        // follows it; at the end the spinner is erased.
        let c = CLEAR_LINE;
        assert_eq!(
            out,
            format!(
                "Job 1\n{c}⠙ queued · 0s{c}⠹ queued · 0s{c}{at}  state_changed     queued -> planning\n{c}⠹ planning · 0s{c}"
            )
        );
    }

    #[test]
    fn costs_are_dollars_to_the_hundredth_of_a_cent() {
        assert_eq!(dollars(0), "$0.0000");
        assert_eq!(dollars(12_300), "$0.0123");
        assert_eq!(dollars(49), "$0.0000");
        assert_eq!(dollars(50), "$0.0001");
        assert_eq!(dollars(20_000_000), "$20.0000");
        assert_eq!(dollars(u64::MAX), format!("${}.{:04}", u64::MAX / 100 / 10_000, (u64::MAX / 100) % 10_000));
    }

    #[test]
    fn text_from_issues_cannot_drive_the_terminal() {
        assert_eq!(printable("a\tb\nc\x1b[2Jd\r"), "a\tb\nc\u{FFFD}[2Jd\u{FFFD}");
        assert_eq!(one_line("  nothing to do:\n\n  add a block \r\n"), "nothing to do: add a block");
    }
}
