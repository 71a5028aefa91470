//! `aicd-server run`, as a newcomer runs it: the real binary on a fresh git repository, with a
//! clean environment (no database, no Redis), from the issue to the branch, its diff and its cost.

use aicd_testkit::files::copy_tree;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The script of an issue that writes `docs/hello.md`.
const HELLO: &str = "Please add a greeting.\n\n```aicd:write docs/hello.md\nHello from AI-CD!\n```\n";

/// The server binary with none of the caller's AI-CD, database, Redis, tracing or log settings.
/// `AICD_DATA_DIR` points at `data`, so a store that went there instead of where it should would
/// show.
fn server(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aicd-server"));
    for (var, _) in std::env::vars() {
        if var.starts_with("AICD_")
            || var.starts_with("OTEL_")
            || ["DATABASE_URL", "REDIS_URL", "RUST_LOG"].contains(&var.as_str())
        {
            cmd.env_remove(var);
        }
    }
    cmd.env("AICD_DATA_DIR", data);
    cmd
}

fn git(dir: &Path, args: &[&str]) -> Output {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs")
}

fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args);
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A repository at `dir` with one commit on `main`.
fn repository(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    git_ok(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README.md"), "# Demo\n").unwrap();
    git_ok(dir, &["add", "README.md"]);
    git_ok(dir, &["commit", "-q", "-m", "Initial commit"]);
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// The value of the outcome line `label: value`.
fn field<'a>(stdout: &'a str, label: &str) -> Option<&'a str> {
    stdout.lines().find_map(|line| line.strip_prefix(label)).map(str::trim)
}

/// Whether `line` is a timeline line: `HH:MM:SS  <kind>  <message>`.
fn is_event(line: &str, kind: &str) -> bool {
    let clock = line
        .get(..8)
        .is_some_and(|t| t.char_indices().all(|(i, c)| if i == 2 || i == 5 { c == ':' } else { c.is_ascii_digit() }));
    clock && line[8..].starts_with(&format!("  {kind} "))
}

#[test]
fn a_scripted_issue_becomes_a_branch_with_its_diff_and_cost() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("demo");
    repository(&repo);
    let head = git_ok(&repo, &["rev-parse", "HEAD"]);
    let data = work.path().join("data");
    // The temporary store goes under TMPDIR, and is removed at the end.
    let tmp = work.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();

    let out = server(&data)
        .env("TMPDIR", &tmp)
        .args(["run", "--repo"])
        .arg(&repo)
        .args(["--issue", "Add a greeting", "--body", HELLO])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");

    // The timeline, one plain line per event (stdout is not a terminal: no control characters).
    assert!(!stdout.chars().any(|c| c.is_control() && c != '\n'), "{stdout:?}");
    let events: Vec<&str> = stdout.lines().filter(|l| is_event(l, "state_changed")).collect();
    for step in ["queued -> planning", "planning -> coding", "coding -> reviewing", "reviewing -> pr_open"] {
        assert!(events.iter().any(|l| l.ends_with(step)), "no `{step}` in the timeline:\n{stdout}");
    }
    assert!(stdout.lines().any(|l| is_event(l, "created")), "{stdout}");

    // The outcome: state, branch, pull request, diff, cost.
    assert_eq!(field(&stdout, "state:"), Some("pr_open"), "{stdout}");
    let branch = field(&stdout, "branch:").expect("a branch line").to_owned();
    assert!(branch.starts_with("aicd/job-"), "{branch}");
    let pull = field(&stdout, "pull request:").expect("a pull request line");
    assert!(pull.starts_with("#1 file://"), "{pull}");
    let record = repo.join(".git/aicd/pulls/1.json");
    assert!(stdout.contains(&format!("recorded in {}", record.canonicalize().unwrap().display())), "{stdout}");
    let recorded: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!(recorded["branch"], branch.as_str());
    assert!(stdout.contains("+++ b/docs/hello.md\n"), "{stdout}");
    assert!(stdout.contains("\n+Hello from AI-CD!\n"), "{stdout}");
    let cost = field(&stdout, "cost:").expect("a cost line");
    assert!(cost.contains("tokens in") && cost.contains("tokens out") && cost.contains("$0.0000"), "{cost}");
    assert!(cost.ends_with("(3 agent calls)"), "planning, coding and reviewing: {cost}");

    // The branch is in the repository with the file; the checkout is untouched.
    git_ok(&repo, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")]);
    assert_eq!(git_ok(&repo, &["show", &format!("{branch}:docs/hello.md")]), "Hello from AI-CD!\n");
    assert_eq!(git_ok(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(git_ok(&repo, &["symbolic-ref", "--short", "HEAD"]).trim(), "main");
    assert_eq!(git_ok(&repo, &["status", "--porcelain"]), "", "the working tree and index are untouched");
    assert!(!repo.join("docs").exists());

    // Nothing is left behind: no store under AICD_DATA_DIR, the temporary one removed.
    assert!(!data.exists(), "run does not use AICD_DATA_DIR");
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "the temporary store is removed: {left:?}");
}

#[test]
fn without_a_script_the_job_fails_with_the_reason_and_a_kept_store_serves_the_next_run() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("demo");
    repository(&repo);
    let data = work.path().join("kept");

    let out = server(&work.path().join("unused"))
        .args(["run", "--repo"])
        .arg(&repo)
        .arg("--data-dir")
        .arg(&data)
        .args(["--issue", "Do something"])
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(field(&stdout, "state:"), Some("failed"), "{stdout}");
    let reason = field(&stdout, "reason:").expect("a reason line");
    assert!(reason.starts_with("nothing to do"), "{reason}");
    assert!(stdout.lines().any(|l| is_event(l, "state_changed") && l.contains("-> failed: nothing to do")));
    assert!(field(&stdout, "branch:").is_none(), "{stdout}");
    assert_eq!(field(&stdout, "cost:"), Some("0 tokens in, 0 tokens out, $0.0000 (0 agent calls)"));
    assert_eq!(git_ok(&repo, &["for-each-ref", "refs/heads/aicd"]), "", "no branch was made");

    // --data-dir keeps the store; the next run on the same store and repository (given as relative
    // paths this time) reuses its organization and repository.
    assert!(data.join("aicd.db").is_file());
    assert!(!work.path().join("unused").exists(), "run does not use AICD_DATA_DIR");
    assert_eq!(field(&stdout, "store:").map(Path::new), Some(data.join("aicd.db").as_path()));
    let out = server(&work.path().join("unused"))
        .current_dir(work.path())
        .args(["run", "--repo", "demo", "--data-dir", "kept", "--issue", "Add a greeting", "--body-file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(HELLO.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("\n+Hello from AI-CD!\n"), "{stdout}");
    let branch = field(&stdout, "branch:").expect("a branch line");
    git_ok(&repo, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")]);
}

#[test]
fn bad_arguments_exit_2_with_a_readable_message() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("demo");
    repository(&repo);
    let plain = work.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    let data = work.path().join("data");
    let body = work.path().join("body.md");
    std::fs::write(&body, HELLO).unwrap();
    let (repo, plain, body) = (repo.to_str().unwrap(), plain.to_str().unwrap(), body.to_str().unwrap());
    let sub = format!("{repo}/.git");
    let missing = format!("{repo}/missing.md");

    let cases: &[(&[&str], &str)] = &[
        (&["--repo", plain, "--issue", "x"], "is not a git repository"),
        (&["--repo", &sub, "--issue", "x"], "is a repository's .git directory"),
        (&["--repo", repo, "--issue", "x", "--body", "a", "--body-file", body], "cannot be used with"),
        (&["--issue", "x"], "--repo"),
        (&["--repo", repo, "--issue", "x", "--body-file", &missing], "--body-file"),
        (&["--repo", repo, "--issue", "   "], "title must not be blank"),
        (&["--repo", repo, "--issue", "x", "--base", "no-such-branch"], "`no-such-branch` has no commit"),
    ];
    for (args, message) in cases {
        let out = server(&data).arg("run").args(*args).output().unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: `{message}` not in:\n{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
    assert!(!data.exists(), "nothing was opened");
}

#[test]
fn ctrl_c_cancels_the_job_and_exits_non_zero() {
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("demo");
    repository(&repo);
    let mut child = server(&work.path().join("data"))
        // Each agent call takes a minute: the job is still planning when Ctrl-C comes.
        .env("AICD_SCRIPTED_AGENT_DELAY_MS", "60000")
        .args(["run", "--repo"])
        .arg(&repo)
        .args(["--issue", "Add a greeting", "--body", HELLO])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("queued -> planning") {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the run ended early:\n{seen}");
        seen.push_str(&line);
    }
    let started = Instant::now();
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        rest
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "Ctrl-C did not stop the run");
        std::thread::sleep(Duration::from_millis(50));
    };
    seen.push_str(&reader.join().unwrap());
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(started.elapsed() < Duration::from_secs(20), "it did not wait for the agent's minute");
    assert!(seen.lines().any(|l| is_event(l, "state_changed") && l.ends_with("-> cancelled")), "{seen}");
    assert_eq!(field(&seen, "state:"), Some("cancelled"), "{seen}");
    assert_eq!(git_ok(&repo, &["for-each-ref", "refs/heads/aicd"]), "", "no branch was made");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_agent_resolves_an_issue_in_one_command() {
    let cassette = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cassettes/openai/run_resolves_an_issue.json");
    let recording = aicd_testkit::cassette::Recording::start(cassette).await;
    let work = tempfile::tempdir().unwrap();
    let repo = work.path().join("calc");
    std::fs::create_dir_all(&repo).unwrap();
    copy_tree(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../aicd-core/tests/fixtures/calc")), &repo);
    git_ok(&repo, &["init", "-q", "-b", "main"]);
    git_ok(&repo, &["add", "-A"]);
    git_ok(&repo, &["commit", "-q", "-m", "calc"]);
    let data = work.path().join("data");
    let (base, model) = (recording.base_url("/v1"), recording.model("gpt-4.1-mini"));
    let command = {
        let repo = repo.clone();
        move || {
            server(&data)
                .env("TMPDIR", work.path())
                .env("AICD_AGENT", "llm")
                .env("AICD_LLM_PROVIDER", "openai")
                .env("AICD_LLM_BASE_URL", base)
                .env("AICD_LLM_API_KEY", "test-key-not-a-secret")
                .env("AICD_LLM_MODEL", model)
                .env("AICD_LLM_MAX_OUTPUT_TOKENS", "1024")
                .args(["run", "--repo"])
                .arg(&repo)
                .args(["--issue", "divide() multiplies instead of dividing"])
                .args(["--body", "`divide(6, 3)` returns 18; it should return 2. See calc/ops.py."])
                .output()
                .unwrap()
        }
    };
    let out = tokio::task::spawn_blocking(command).await.unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    recording.finish();
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    // The agent's work, live, then the outcome: the fix and its test, and what it cost.
    assert!(stdout.lines().any(|l| is_event(l, "activity") && l.ends_with("searched `def divide`")), "{stdout}");
    assert_eq!(field(&stdout, "state:"), Some("pr_open"), "{stdout}");
    assert!(stdout.contains("+    return a / b\n") && stdout.contains("+def test_divide_by_zero():\n"), "{stdout}");
    let cost = field(&stdout, "cost:").expect("a cost line");
    assert!(cost.ends_with("(5 agent calls)") && !cost.contains("$0.0000"), "{cost}");
}
