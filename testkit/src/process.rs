//! The workspace's binaries as child processes of a test: found next to the test's executable,
//! started with a clean environment, their output in a log file, killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The path of the workspace binary `name`, next to the running test's executable: a test runs
/// as `target/<profile>/deps/<test>-<hash>`, and Cargo puts binaries in `target/<profile>/`.
///
/// Panics, saying how to build it, when it does not exist. `cargo test --workspace` builds every
/// binary; `cargo test -p <package>` builds only that package's.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let dir = exe.parent().and_then(Path::parent).expect("the test runs from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} does not exist. This test runs the real binaries: build them first with\n\n    \
         cargo build -p aicd-server -p aicd-worker\n\n(`cargo test --workspace` builds them too).",
        path.display()
    );
    path
}

/// A port nothing listens on right now (it may be taken before it is used; tests bind quickly).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("an address").port()
}

/// `binary` with a clean environment: `PATH` and `env` only.
pub fn command(binary: &Path, env: &[(String, String)]) -> Command {
    let mut command = Command::new(binary);
    command.env_clear().stdin(Stdio::null());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}

/// Runs `binary args` with [`command`]'s environment to completion; panics with its output if it
/// fails.
pub fn run(binary: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let out = command(binary, env).args(args).output().unwrap_or_else(|e| panic!("{} runs: {e}", binary.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\n{}{}",
        binary.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A running process whose stdout and stderr go to a log file; killed (SIGKILL) when dropped.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Mutex<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `binary` with [`command`]'s environment, appending its output to `log`.
    pub fn spawn(name: &str, binary: &Path, env: &[(String, String)], log: &Path) -> Self {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("a log file");
        let child = command(binary, env)
            .stdout(file.try_clone().expect("a second handle on the log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        Self { name: name.to_owned(), child: Mutex::new(child), log: log.to_owned() }
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The name it was started under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything in its log so far, under a heading.
    pub fn log(&self) -> String {
        format!("--- {} log ---\n{}", self.name, std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Its exit status if it has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.child().try_wait().expect("the child can be waited for")
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child().id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Sends SIGKILL and reaps it: a crash, with no chance to finish or record anything. Returns
    /// its exit status (that of the earlier exit if it had already exited).
    pub fn kill(&self) -> ExitStatus {
        let mut child = self.child();
        // An error only means it has exited already; `wait` then returns that status.
        let _ = child.kill();
        child.wait().expect("the child can be waited for")
    }

    /// Waits for it to exit, at most `within`; `None` if it is still running.
    pub async fn wait(&self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
