//! Running the `git` program on one repository: isolated from the user's and the system's git
//! configuration and from the caller's `GIT_*` environment, with bounded output and a time limit.
//! Only plumbing that leaves the working tree, the index and `HEAD` alone is used.
//!
//! Everything here blocks; callers run it on tokio's blocking pool.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError, mpsc};
use std::time::Duration;

use super::super::rules::{rejected, unavailable};
use crate::{Error, Result};

/// Most bytes of stderr kept for error messages (the rest is read and dropped).
const MAX_STDERR_BYTES: usize = 16 * 1024;
/// Most bytes of output of a command whose output is small (ids, names).
const SMALL_OUTPUT: usize = 64 * 1024;
/// Most bytes of a full recursive tree listing when committing.
const MAX_LISTING_BYTES: usize = 64 * 1024 * 1024;
/// Most bytes of a commit object read back.
const MAX_COMMIT_BYTES: usize = 8 * 1024 * 1024;

/// Where git runs, and for how long at most.
#[derive(Clone, Debug)]
pub(super) struct Git {
    dir: PathBuf,
    ceiling: Option<PathBuf>,
    timeout: Duration,
    /// The directories git may trust although another user owns them (`safe.directory`): this
    /// repository's, never a wildcard.
    safe: Vec<PathBuf>,
}

/// Where a repository's parts are ([`Git::layout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) bare: bool,
    pub(super) git_dir: PathBuf,
    pub(super) common_dir: PathBuf,
}

/// A tree entry: its mode (`100644`, `100755`, `120000`, `160000`) and object id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TreeEntry {
    pub(super) mode: String,
    pub(super) oid: String,
}

/// The parts of a commit object that matter here.
#[derive(Clone, Debug)]
pub(super) struct CommitInfo {
    pub(super) tree: String,
    pub(super) parents: Vec<String>,
    pub(super) message: Vec<u8>,
}

/// What came out of a finished command.
struct Finished<T> {
    value: T,
    status: ExitStatus,
    stderr: Vec<u8>,
    /// The output consumer stopped before the end of the output (and the process was killed).
    stopped: bool,
}

/// Options of one command.
#[derive(Default)]
pub(super) struct Opts<'a> {
    /// Bytes written to its standard input (closed when absent).
    pub(super) stdin: Option<&'a [u8]>,
    /// A scratch index file (`GIT_INDEX_FILE`).
    pub(super) index_file: Option<&'a Path>,
}

impl Git {
    /// Git working in `dir` (an absolute, canonical path), never looking for a repository above it.
    pub(super) fn new(dir: PathBuf, timeout: Duration) -> Self {
        let ceiling = dir.parent().map(Path::to_path_buf);
        let safe = vec![dir.clone(), dir.join(".git")];
        Self { dir, ceiling, timeout, safe }
    }

    /// Trusts `dir` too (the repository's git directory, once resolved).
    pub(super) fn trust(&mut self, dir: PathBuf) {
        if !self.safe.contains(&dir) {
            self.safe.push(dir);
        }
    }

    fn command(&self, args: &[&str], index_file: Option<&Path>) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear();
        for keep in ["PATH", "HOME", "TMPDIR", "GIT_EXEC_PATH", "SYSTEMROOT"] {
            if let Some(value) = std::env::var_os(keep) {
                cmd.env(keep, value);
            }
        }
        cmd.envs([
            ("LC_ALL", "C"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_TERMINAL_PROMPT", "0"),
            ("GIT_LITERAL_PATHSPECS", "1"),
            ("GIT_NO_REPLACE_OBJECTS", "1"),
            ("GIT_AUTHOR_NAME", "AI-CD"),
            ("GIT_AUTHOR_EMAIL", "aicd@localhost"),
            ("GIT_COMMITTER_NAME", "AI-CD"),
            ("GIT_COMMITTER_EMAIL", "aicd@localhost"),
        ]);
        if let Some(ceiling) = &self.ceiling {
            cmd.env("GIT_CEILING_DIRECTORIES", ceiling);
        }
        if let Some(index) = index_file {
            cmd.env("GIT_INDEX_FILE", index);
        }
        cmd.arg("-C").arg(&self.dir);
        for dir in &self.safe {
            let mut setting = OsString::from("safe.directory=");
            setting.push(dir);
            cmd.arg("-c").arg(setting);
        }
        // No hook of the repository runs (reference-transaction runs on every ref update), and no
        // other program its configuration names either (signing programs run on commit).
        cmd.args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "commit.gpgSign=false",
            "-c",
            "gpg.program=false",
            "-c",
            "gpg.ssh.program=false",
            "-c",
            "gpg.x509.program=false",
            "-c",
            "gpg.ssh.defaultKeyCommand=false",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.splitIndex=false",
            "-c",
            "core.sshCommand=false",
            "-c",
            "protocol.allow=never",
        ]);
        cmd.args(args);
        cmd
    }

    /// Runs git with `args`, handing its standard output to `consume`, which returns the value and
    /// whether it stopped before the end (the process is then killed).
    fn exec<T>(
        &self,
        args: &[&str],
        opts: Opts<'_>,
        consume: impl FnOnce(&mut ChildStdout) -> io::Result<(T, bool)>,
    ) -> Result<Finished<T>> {
        let what = describe(args);
        let mut cmd = self.command(args, opts.index_file);
        cmd.stdin(if opts.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => {
                rejected("the `git` program was not found; install git to use local repositories")
            }
            _ => unavailable(format!("could not start {what}: {e}")),
        })?;
        let (Some(mut stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(unavailable(format!("could not talk to {what}")));
        };
        let stdin_pipe = child.stdin.take();
        let child = Mutex::new(child);
        let timed_out = AtomicBool::new(false);
        let kill = || {
            let _ = child.lock().unwrap_or_else(PoisonError::into_inner).kill();
        };
        std::thread::scope(|scope| {
            let (done, done_rx) = mpsc::channel::<()>();
            let (kill_ref, timed_out_ref, timeout) = (&kill, &timed_out, self.timeout);
            scope.spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(timeout) {
                    timed_out_ref.store(true, Ordering::SeqCst);
                    kill_ref();
                }
            });
            if let (Some(mut pipe), Some(input)) = (stdin_pipe, opts.stdin) {
                scope.spawn(move || {
                    // A command that exits early closes the pipe; its exit status tells what happened.
                    let _ = pipe.write_all(input);
                });
            }
            let stderr_reader = scope.spawn(move || read_stderr(stderr));
            let consumed = consume(&mut stdout);
            let stopped = consumed.as_ref().map_or(true, |(_, stopped)| *stopped);
            if stopped {
                kill();
            }
            drop(stdout);
            let stderr = stderr_reader.join().unwrap_or_default();
            let status = wait(&child);
            drop(done);
            let status = status.map_err(|e| unavailable(format!("could not wait for {what}: {e}")))?;
            if timed_out.load(Ordering::SeqCst) {
                return Err(unavailable(format!("{what} did not finish within {} seconds", self.timeout.as_secs())));
            }
            let (value, stopped) = consumed.map_err(|e| unavailable(format!("could not read from {what}: {e}")))?;
            Ok(Finished { value, status, stderr, stopped })
        })
    }

    /// Runs git and returns its standard output, which must be at most `limit` bytes; a failure is
    /// classified from git's standard error.
    pub(super) fn run_limited(&self, args: &[&str], opts: Opts<'_>, limit: usize) -> Result<Vec<u8>> {
        let finished = self.exec(args, opts, |out| read_limited(out, limit))?;
        if finished.stopped {
            return Err(rejected(format!("{} printed more than {limit} bytes", describe(args))));
        }
        check(args, &finished)?;
        Ok(finished.value)
    }

    /// Runs git and returns its (small) standard output as trimmed text.
    pub(super) fn run(&self, args: &[&str], opts: Opts<'_>) -> Result<String> {
        let out = self.run_limited(args, opts, SMALL_OUTPUT)?;
        let text =
            String::from_utf8(out).map_err(|_| rejected(format!("{} printed non-UTF-8 text", describe(args))))?;
        Ok(text.trim_end_matches(['\n', '\r']).to_owned())
    }

    /// Runs git and returns at most `limit` bytes of its standard output, and whether there was more
    /// (then the command was stopped there and its exit status is not checked).
    pub(super) fn run_truncated(&self, args: &[&str], limit: usize) -> Result<(Vec<u8>, bool)> {
        let finished = self.exec(args, Opts::default(), |out| read_limited(out, limit))?;
        if !finished.stopped {
            check(args, &finished)?;
        }
        Ok((finished.value, finished.stopped))
    }

    /// Streams git's standard output through `consume` (which must read it to the end).
    pub(super) fn stream<T>(
        &self,
        args: &[&str],
        consume: impl FnOnce(&mut dyn BufRead) -> io::Result<T>,
    ) -> Result<T> {
        let finished = self.exec(args, Opts::default(), |out| {
            let mut reader = BufReader::new(out);
            let value = consume(&mut reader)?;
            Ok((value, false))
        })?;
        check(args, &finished)?;
        Ok(finished.value)
    }

    /// Where the repository's parts are: whether it is bare, and the absolute paths of its git
    /// directory and common git directory (where refs and objects live; they differ in a linked
    /// worktree).
    pub(super) fn layout(&self) -> Result<Layout> {
        let args = ["rev-parse", "--path-format=absolute", "--is-bare-repository", "--git-dir", "--git-common-dir"];
        let out = self.run(&args, Opts::default())?;
        let mut lines = out.lines();
        let (Some(bare), Some(git_dir), Some(common_dir), None) =
            (lines.next(), lines.next(), lines.next(), lines.next())
        else {
            return Err(rejected("git rev-parse printed an unexpected answer"));
        };
        Ok(Layout { bare: bare == "true", git_dir: PathBuf::from(git_dir), common_dir: PathBuf::from(common_dir) })
    }

    /// The commit `refname` points to, or `None` if there is no such ref.
    pub(super) fn resolve_commit(&self, refname: &str) -> Result<Option<String>> {
        let spec = format!("{refname}^{{commit}}");
        let args = ["rev-parse", "--verify", "--quiet", spec.as_str()];
        let finished = self.exec(&args, Opts::default(), |out| read_limited(out, SMALL_OUTPUT))?;
        if finished.status.code() == Some(1) && finished.stderr.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        check(&args, &finished)?;
        let oid = String::from_utf8_lossy(&finished.value).trim().to_owned();
        if oid.is_empty() || !oid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(rejected(format!("git rev-parse printed an unexpected commit id for `{refname}`")));
        }
        Ok(Some(oid))
    }

    /// Checks `name` with `git check-ref-format --branch`.
    pub(super) fn check_branch_name(&self, name: &str) -> Result<()> {
        let invalid = || Error::invalid(format!("`{name}` is not a valid branch name"));
        let finished =
            self.exec(&["check-ref-format", "--branch", name], Opts::default(), |out| read_limited(out, SMALL_OUTPUT))?;
        if !finished.status.success() {
            return Err(invalid());
        }
        if String::from_utf8_lossy(&finished.value).trim_end() != name {
            return Err(invalid());
        }
        Ok(())
    }

    /// Reads a commit object.
    pub(super) fn read_commit(&self, oid: &str) -> Result<CommitInfo> {
        let raw = self.run_limited(&["cat-file", "commit", oid], Opts::default(), MAX_COMMIT_BYTES)?;
        let (headers, message) = match raw.windows(2).position(|w| w == b"\n\n") {
            Some(at) => (&raw[..at], raw[at + 2..].to_vec()),
            None => (&raw[..], Vec::new()),
        };
        let mut tree = None;
        let mut parents = Vec::new();
        for line in headers.split(|b| *b == b'\n') {
            if let Some(id) = line.strip_prefix(b"tree ") {
                tree = Some(String::from_utf8_lossy(id).into_owned());
            } else if let Some(id) = line.strip_prefix(b"parent ") {
                parents.push(String::from_utf8_lossy(id).into_owned());
            }
        }
        let tree = tree.ok_or_else(|| rejected(format!("commit {oid} has no tree")))?;
        Ok(CommitInfo { tree, parents, message })
    }

    /// Every file of a tree (recursively), by path.
    pub(super) fn list_tree(&self, tree: &str) -> Result<BTreeMap<Vec<u8>, TreeEntry>> {
        let out =
            self.run_limited(&["ls-tree", "-r", "-z", "--full-tree", tree], Opts::default(), MAX_LISTING_BYTES)?;
        let mut files = BTreeMap::new();
        for record in out.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let entry = parse_ls_tree(record).ok_or_else(|| rejected("git ls-tree printed an unexpected line"))?;
            files.insert(entry.path, TreeEntry { mode: entry.mode, oid: entry.oid });
        }
        Ok(files)
    }

    /// Stores `content` as a blob, byte for byte (no filters), and returns its id.
    pub(super) fn write_blob(&self, content: &[u8]) -> Result<String> {
        self.run(&["hash-object", "-w", "--no-filters", "--stdin"], Opts { stdin: Some(content), index_file: None })
    }

    /// Writes a tree holding exactly `files`, using a scratch index in `scratch_dir` (removed
    /// afterwards), and returns its id.
    pub(super) fn write_tree(&self, scratch_dir: &Path, files: &BTreeMap<Vec<u8>, TreeEntry>) -> Result<String> {
        let index = ScratchIndex(scratch_dir.join(format!("aicd-tmp-index-{}", uuid::Uuid::new_v4().simple())));
        let mut info = Vec::new();
        for (path, entry) in files {
            info.extend_from_slice(format!("{} {}\t", entry.mode, entry.oid).as_bytes());
            info.extend_from_slice(path);
            info.push(0);
        }
        let opts = Opts { stdin: Some(&info), index_file: Some(&index.0) };
        self.run(&["update-index", "-z", "--index-info"], opts)?;
        self.run(&["write-tree"], Opts { stdin: None, index_file: Some(&index.0) })
    }

    /// Makes a commit of `tree` on top of `parent` with `message` (kept verbatim).
    pub(super) fn commit_tree(&self, tree: &str, parent: &str, message: &str) -> Result<String> {
        let opts = Opts { stdin: Some(message.as_bytes()), index_file: None };
        self.run(&["commit-tree", "--no-gpg-sign", tree, "-p", parent, "-F", "-"], opts)
    }

    /// Moves `refname` to `new` if it is at `old` (the empty string: if it does not exist).
    pub(super) fn update_ref(&self, refname: &str, new: &str, old: &str) -> Result<()> {
        self.run(&["update-ref", "-m", "aicd", refname, new, old], Opts::default()).map(drop)
    }

    /// Deletes `refname` if it is at `old`.
    pub(super) fn delete_ref(&self, refname: &str, old: &str) -> Result<()> {
        self.run(&["update-ref", "-m", "aicd", "-d", refname, old], Opts::default()).map(drop)
    }
}

/// A scratch index file, removed (with its lock file) when dropped.
struct ScratchIndex(PathBuf);

impl Drop for ScratchIndex {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let mut lock = self.0.clone().into_os_string();
        lock.push(".lock");
        let _ = std::fs::remove_file(lock);
    }
}

/// One `git ls-tree -z` record, with or without `-l`.
pub(super) struct LsTreeEntry {
    pub(super) mode: String,
    pub(super) kind: String,
    pub(super) oid: String,
    /// The size with `-l` (blobs only).
    pub(super) size: Option<u64>,
    pub(super) path: Vec<u8>,
}

/// Parses `<mode> SP <type> SP <object> [SP+ <size>] TAB <path>`.
pub(super) fn parse_ls_tree(record: &[u8]) -> Option<LsTreeEntry> {
    let tab = record.iter().position(|b| *b == b'\t')?;
    let meta = std::str::from_utf8(&record[..tab]).ok()?;
    let mut fields = meta.split_ascii_whitespace();
    let (mode, kind, oid) = (fields.next()?, fields.next()?, fields.next()?);
    let size = fields.next().and_then(|s| s.parse().ok());
    Some(LsTreeEntry {
        mode: mode.to_owned(),
        kind: kind.to_owned(),
        oid: oid.to_owned(),
        size,
        path: record[tab + 1..].to_vec(),
    })
}

/// `git <subcommand>`, for messages.
fn describe(args: &[&str]) -> String {
    format!("git {}", args.first().copied().unwrap_or_default())
}

fn read_limited(out: &mut impl Read, limit: usize) -> io::Result<(Vec<u8>, bool)> {
    let mut buf = Vec::new();
    out.take(limit as u64 + 1).read_to_end(&mut buf)?;
    let over = buf.len() > limit;
    buf.truncate(limit);
    Ok((buf, over))
}

fn read_stderr(mut stderr: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let _ = (&mut stderr).take(MAX_STDERR_BYTES as u64).read_to_end(&mut kept);
    let _ = io::copy(&mut stderr, &mut io::sink());
    kept
}

fn wait(child: &Mutex<std::process::Child>) -> io::Result<ExitStatus> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.lock().unwrap_or_else(PoisonError::into_inner).try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Turns a failed command into an error: [`Error::Unavailable`] when it looks like it may pass (a
/// lock held by another git process, a ref that moved underneath), else [`Error::Rejected`] with
/// the first lines of git's message.
fn check<T>(args: &[&str], finished: &Finished<T>) -> Result<()> {
    if finished.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&finished.stderr);
    let mut lines: Vec<&str> = stderr.lines().map(str::trim).filter(|l| !l.is_empty()).take(3).collect();
    if lines.is_empty() {
        lines.push("no message");
    }
    let mut text = lines.join("; ");
    if text.len() > 600 {
        let cut = (0..=600).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        text.truncate(cut);
        text.push('…');
    }
    let message = format!("{} failed ({}): {text}", describe(args), finished.status);
    let transient = stderr.contains(".lock': File exists")
        || stderr.contains("index.lock")
        || (stderr.contains("cannot lock ref") && !stderr.contains("exists; cannot create"))
        || stderr.contains("but expected");
    Err(if transient { unavailable(message) } else { rejected(message) })
}
