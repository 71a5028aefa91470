//! `aicd-server policy scan` and the pre-commit hook built on it, in a temporary git repository:
//! a staged secret is refused (named by file and line, never printed), a clean change passes, and
//! the hook installed with `scripts/setup-hooks` makes `git commit` do the same.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aicd_testkit::files::git;

/// An AWS access key id, put together here so that this file holds no secret-shaped string.
fn access_key_id() -> String {
    ["AK", "IA", "QX7TRW2M", "9VBN4KLP"].concat()
}

/// A fresh repository with one commit, and git's identity set.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("aicd-scan-").tempdir().unwrap();
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["config", "user.name", "Test"]);
    git(dir.path(), &["config", "user.email", "test@example.com"]);
    std::fs::write(dir.path().join("README.md"), "# Demo\n").unwrap();
    git(dir.path(), &["add", "README.md"]);
    git(dir.path(), &["commit", "-q", "-m", "Initial commit"]);
    dir
}

/// The directory of the server binary first on `PATH`, as a developer's shell would have it.
fn path_with_binary() -> std::ffi::OsString {
    let bin = Path::new(env!("CARGO_BIN_EXE_aicd-server")).parent().unwrap().to_owned();
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&rest))).unwrap()
}

fn scan(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aicd-server"))
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["policy", "scan"])
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Writes `path` in `dir` and stages it.
fn stage(dir: &Path, path: &str, contents: &str) {
    let file = dir.join(path);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, contents).unwrap();
    git(dir, &["add", path]);
}

fn settings_with_key() -> String {
    format!("# Settings\nregion = 'eu-west-1'\nkey_id = '{}'\n", access_key_id())
}

#[test]
fn a_staged_secret_is_refused_by_file_and_line_without_being_printed() {
    let repo = repository();
    stage(repo.path(), "config/settings.py", &settings_with_key());
    let out = scan(repo.path(), &["--staged"]);
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("config/settings.py:3: secret: ")), "{printed}");
    assert!(stdout.contains("AWS access key id"), "{printed}");
    assert!(!printed.contains(&access_key_id()), "the secret itself is never printed: {printed}");
    assert!(!printed.contains(&access_key_id()[4..]), "nor most of it: {printed}");

    // The same file on disk, named: every line counts.
    let out = scan(repo.path(), &["config"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("config/settings.py:3: secret: "), "{}", text(&out));

    // With --staged, paths limit the scan.
    let out = scan(repo.path(), &["--staged", "docs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn a_clean_change_passes_and_only_added_lines_count() {
    let repo = repository();
    stage(repo.path(), "src/app.py", "def greet():\n    return 'hello'\n");
    let out = scan(repo.path(), &["--staged"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout.is_empty(), "{}", text(&out));

    // A secret already committed is not the next commit's doing: only the lines it adds count.
    stage(repo.path(), "config/settings.py", &settings_with_key());
    git(repo.path(), &["commit", "-q", "--no-verify", "-m", "Settings"]);
    stage(repo.path(), "config/settings.py", &format!("{}debug = False\n", settings_with_key()));
    let out = scan(repo.path(), &["--staged"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The staged .aicd.toml's secret_allow is honoured.
    stage(repo.path(), ".aicd.toml", "[policy]\nsecret_allow = [\"fixtures/**\"]\n");
    stage(repo.path(), "fixtures/keys.txt", &settings_with_key());
    let out = scan(repo.path(), &["--staged"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn bad_arguments_and_a_missing_repository_exit_2() {
    let repo = repository();
    let out = scan(repo.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "nothing to scan: {}", text(&out));
    let outside = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aicd-server"))
        .current_dir(outside.path())
        .env("GIT_CEILING_DIRECTORIES", outside.path().parent().unwrap())
        .args(["policy", "scan", "--staged"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "not a repository: {}", text(&out));
    assert!(text(&out).contains("git diff failed"), "{}", text(&out));
}

/// `git commit -m <message>` in `dir` with the binary on `PATH`.
fn commit(dir: &Path, message: &str) -> Output {
    Command::new("git")
        .current_dir(dir)
        .env("PATH", path_with_binary())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["commit", "-m", message])
        .output()
        .unwrap()
}

#[test]
fn the_installed_hook_refuses_a_commit_with_a_secret_and_lets_a_clean_one_through() {
    let repo = repository();
    let scripts: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts");
    std::fs::create_dir_all(repo.path().join("scripts/hooks")).unwrap();
    for script in ["setup-hooks", "hooks/pre-commit"] {
        std::fs::copy(scripts.join(script), repo.path().join("scripts").join(script)).unwrap();
    }
    let setup = Command::new(repo.path().join("scripts/setup-hooks")).output().unwrap();
    assert!(setup.status.success(), "{}", text(&setup));
    assert_eq!(git(repo.path(), &["config", "core.hooksPath"]).trim(), "scripts/hooks");
    let head = git(repo.path(), &["rev-parse", "HEAD"]);

    stage(repo.path(), "config/settings.py", &settings_with_key());
    let out = commit(repo.path(), "Add settings");
    let printed = text(&out);
    assert!(!out.status.success(), "the commit is refused: {printed}");
    assert!(printed.contains("config/settings.py:3: secret: "), "{printed}");
    assert!(!printed.contains(&access_key_id()), "{printed}");
    assert_eq!(git(repo.path(), &["rev-parse", "HEAD"]), head, "nothing was committed");

    git(repo.path(), &["rm", "-q", "--cached", "config/settings.py"]);
    stage(repo.path(), "src/app.py", "def greet():\n    return 'hello'\n");
    let out = commit(repo.path(), "Add the app");
    assert!(out.status.success(), "a clean commit goes through: {}", text(&out));
    assert_ne!(git(repo.path(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(repo.path(), &["show", "--name-only", "--format=", "HEAD"]).trim(), "src/app.py");
}
