//! SIGTERM and SIGINT (Ctrl-C), as a stream of signal names: the first starts the graceful
//! shutdown, a second cuts it short.

/// The process's termination signals, installed once; each [`Signals::next`] waits for one.
#[cfg(unix)]
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    /// Starts listening for SIGTERM and SIGINT (replacing their default, which kills the process).
    /// Must be called inside a Tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Waits for the next signal and returns its name (`SIGTERM` or `SIGINT`).
    pub async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The process's termination signal (Ctrl-C), installed once; each [`Signals::next`] waits for one.
#[cfg(not(unix))]
#[derive(Debug)]
pub struct Signals;

#[cfg(not(unix))]
impl Signals {
    /// Starts listening for Ctrl-C.
    pub fn install() -> std::io::Result<Self> {
        Ok(Self)
    }

    /// Waits for the next Ctrl-C and returns `Ctrl-C`.
    pub async fn next(&mut self) -> &'static str {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        "Ctrl-C"
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::Signals;

    /// Sends `signal` to this very process.
    fn raise(signal: &str) {
        let pid = std::process::id().to_string();
        let status = std::process::Command::new("kill").args([signal, &pid]).status().expect("kill runs");
        assert!(status.success());
    }

    #[tokio::test]
    async fn each_signal_is_named_and_a_second_one_is_seen_too() {
        let mut signals = Signals::install().unwrap();
        raise("-TERM");
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), signals.next()).await;
        assert_eq!(first.ok(), Some("SIGTERM"));
        raise("-INT");
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), signals.next()).await;
        assert_eq!(second.ok(), Some("SIGINT"));
    }
}
