//! The forge conformance suite: every promise of the `Forge` port, checked against the in-memory
//! forge and the local git forge (on a repository with a working tree and on a bare one), then what
//! only one of them does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use aicd_agent_api::{Changeset, FileChange, RepoViewError, RepoViewLimits};
use aicd_core::forge::{
    CommentId, Forge, ForgeCall, ForgeFailure, LocalGitForge, MemoryForge, NewPullRequest, PullRequestState,
};
use aicd_core::jobs::PullRequestRef;
use aicd_core::repos::{RepoSource, Repository};
use aicd_core::{Error, OrgId, RepoId};
use chrono::Utc;

const FULL_NAME: &str = "octo/demo";

/// The files of the default branch every harness starts with.
fn seed() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        ("README.md".to_owned(), b"# Demo\n".to_vec()),
        ("src/lib.rs".to_owned(), b"pub fn one() -> u32 {\n    1\n}\n".to_vec()),
        ("docs/guide.md".to_owned(), b"Read me first.\n".to_vec()),
        ("assets/logo.bin".to_owned(), vec![0x89, 0xff, 0x00, 0xfe]),
    ])
}

fn repository(full_name: &str, source: RepoSource) -> Repository {
    Repository {
        id: RepoId::new(),
        org_id: OrgId::new(),
        full_name: full_name.to_owned(),
        source,
        default_branch: "main".to_owned(),
        settings: serde_json::json!({}),
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

enum Backend {
    Memory(MemoryForge),
    LocalGit {
        forge: LocalGitForge,
        /// The repository (a working tree, or a bare repository).
        path: PathBuf,
        _dir: tempfile::TempDir,
    },
}

/// A forge with the repository `octo/demo` seeded with [`seed`] on `main`, and ways to look at
/// what the forge did without going through it.
struct Harness {
    backend: Backend,
    repo: Repository,
}

fn memory_harness() -> Harness {
    let forge = MemoryForge::new();
    forge.add_repo(FULL_NAME, "main", seed());
    Harness {
        backend: Backend::Memory(forge),
        repo: repository(FULL_NAME, RepoSource::Github { installation_id: 1, repo_id: 2 }),
    }
}

fn local_harness(bare: bool) -> Harness {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let work = dir.path().join("work");
    git(dir.path(), &["init", "-q", "-b", "main", "work"]);
    for (path, content) in seed() {
        let file = work.join(&path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, content).unwrap();
    }
    git(&work, &["add", "-A"]);
    git(&work, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "Initial commit"]);
    let path = if bare {
        git(dir.path(), &["clone", "-q", "--bare", "work", "demo.git"]);
        dir.path().join("demo.git")
    } else {
        work
    };
    let repo = repository(FULL_NAME, RepoSource::Local { path: path.to_str().unwrap().to_owned() });
    Harness { backend: Backend::LocalGit { forge: LocalGitForge::new(), path, _dir: dir }, repo }
}

/// Runs git in `dir` without any user or system configuration and returns its output.
fn git(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = git_output(dir, args);
    assert!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn git_output(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(args)
        .output()
        .expect("git runs")
}

fn git_text(dir: &Path, args: &[&str]) -> String {
    String::from_utf8(git(dir, args)).unwrap().trim_end().to_owned()
}

impl Harness {
    fn forge(&self) -> &dyn Forge {
        match &self.backend {
            Backend::Memory(forge) => forge,
            Backend::LocalGit { forge, .. } => forge,
        }
    }

    /// The same forge, with views bounded by `limits`.
    fn limited(&self, limits: RepoViewLimits) -> Box<dyn Forge> {
        match &self.backend {
            Backend::Memory(forge) => Box::new(forge.clone().with_view_limits(limits)),
            Backend::LocalGit { forge, .. } => Box::new(forge.clone().with_view_limits(limits)),
        }
    }

    /// A repository this forge cannot reach.
    fn unknown_repo(&self) -> Repository {
        match &self.backend {
            Backend::Memory(_) => repository("octo/missing", RepoSource::Github { installation_id: 1, repo_id: 3 }),
            Backend::LocalGit { path, .. } => {
                let missing = path.parent().unwrap().join("missing");
                repository("octo/missing", RepoSource::Local { path: missing.to_str().unwrap().to_owned() })
            }
        }
    }

    fn local_path(&self) -> &Path {
        match &self.backend {
            Backend::LocalGit { path, .. } => path,
            Backend::Memory(_) => panic!("not a local git harness"),
        }
    }

    /// The files at the tip of `branch`, read without the forge.
    fn branch_files(&self, branch: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        let path = match &self.backend {
            Backend::Memory(forge) => return forge.branch_files(FULL_NAME, branch),
            Backend::LocalGit { path, .. } => path,
        };
        let refname = format!("refs/heads/{branch}");
        if !git_output(path, &["rev-parse", "--verify", "--quiet", &refname]).status.success() {
            return None;
        }
        let listing = git(path, &["ls-tree", "-r", "-z", "--full-tree", &refname]);
        let mut files = BTreeMap::new();
        for record in listing.split(|b| *b == 0).filter(|r| !r.is_empty()) {
            let record = std::str::from_utf8(record).unwrap();
            let (meta, name) = record.split_once('\t').unwrap();
            let oid = meta.split(' ').nth(2).unwrap();
            files.insert(name.to_owned(), git(path, &["cat-file", "blob", oid]));
        }
        Some(files)
    }

    /// How many commits `branch` has above `main`, counted without the forge.
    fn commits_on(&self, branch: &str) -> usize {
        match &self.backend {
            Backend::Memory(forge) => forge.commits_on(FULL_NAME, branch),
            Backend::LocalGit { path, .. } => {
                git_text(path, &["rev-list", "--count", &format!("main..refs/heads/{branch}")]).parse().unwrap()
            }
        }
    }

    async fn pull_requests(&self) -> Vec<PullRequestRef> {
        match &self.backend {
            Backend::Memory(forge) => forge.pull_requests(FULL_NAME),
            Backend::LocalGit { forge, .. } => {
                forge.pull_requests(&self.repo).await.unwrap().iter().map(|p| p.to_ref()).collect()
            }
        }
    }

    async fn comments(&self, issue: u64) -> Vec<String> {
        match &self.backend {
            Backend::Memory(forge) => forge.comments(FULL_NAME, issue),
            Backend::LocalGit { forge, .. } => forge.comments(&self.repo, issue).await.unwrap(),
        }
    }
}

fn pr(branch: &str) -> NewPullRequest {
    NewPullRequest {
        branch: branch.to_owned(),
        title: "Fix the greeting".to_owned(),
        body: "Resolves #7.".to_owned(),
        issue_number: Some(7),
    }
}

/// Asserts `result` is an error that `expected` accepts.
#[track_caller]
fn assert_error<T>(result: aicd_core::Result<T>, expected: impl Fn(&Error) -> bool, what: &str) {
    match result {
        Err(e) if expected(&e) => {}
        Err(e) => panic!("{what}: unexpected error {e:?}"),
        Ok(_) => panic!("{what}: unexpectedly succeeded"),
    }
}

fn invalid(e: &Error) -> bool {
    matches!(e, Error::InvalidInput(_))
}

fn rejected(e: &Error) -> bool {
    matches!(e, Error::Rejected { service: "forge", .. })
}

mod suite {
    use super::*;

    pub(crate) async fn repo_view_lists_and_reads_the_default_branch(h: &Harness) {
        let view = h.forge().repo_view(&h.repo).await.unwrap();
        assert_eq!(view.limits(), RepoViewLimits::default());
        let files = seed();
        assert_eq!(view.list_files().await.unwrap(), files.keys().cloned().collect::<Vec<_>>());
        for (path, content) in &files {
            assert_eq!(view.read_file(path).await.unwrap().as_ref(), Some(content), "{path}");
        }
        assert_eq!(view.read_file("missing.txt").await.unwrap(), None);
        assert_eq!(view.read_file("src").await.unwrap(), None, "a directory is not a file");
        assert_eq!(view.read_file("src/*.rs").await.unwrap(), None, "paths are not patterns");
    }

    pub(crate) async fn repo_view_enforces_its_limits_and_rejects_escaping_paths(h: &Harness) {
        let few = h.limited(RepoViewLimits { max_files: 2, max_file_bytes: 1024 });
        let view = few.repo_view(&h.repo).await.unwrap();
        assert_eq!(view.list_files().await, Err(RepoViewError::TooManyFiles { count: 4, limit: 2 }));
        assert_eq!(view.read_file("README.md").await.unwrap(), Some(b"# Demo\n".to_vec()));

        let small = h.limited(RepoViewLimits { max_files: 100, max_file_bytes: 5 });
        let view = small.repo_view(&h.repo).await.unwrap();
        assert_eq!(
            view.read_file("README.md").await,
            Err(RepoViewError::FileTooLarge { path: "README.md".to_owned(), size: 7, limit: 5 })
        );
        assert_eq!(view.read_file("assets/logo.bin").await.unwrap(), Some(vec![0x89, 0xff, 0x00, 0xfe]));
        for bad in ["../x", "/etc/passwd", "src/../../x", ""] {
            assert!(matches!(view.read_file(bad).await, Err(RepoViewError::InvalidPath { .. })), "{bad:?}");
        }
    }

    pub(crate) async fn create_branch_starts_at_the_default_head_and_is_idempotent(h: &Harness) {
        let forge = h.forge();
        let main = forge.create_branch(&h.repo, "main").await.unwrap();
        assert_eq!(main.name, "main");
        let branch = forge.create_branch(&h.repo, "aicd/issue-7").await.unwrap();
        assert_eq!(branch.name, "aicd/issue-7");
        assert_eq!(branch.head, main.head);
        assert_eq!(forge.create_branch(&h.repo, "aicd/issue-7").await.unwrap(), branch);
        assert_eq!(h.branch_files("aicd/issue-7"), Some(seed()));
        assert_eq!(h.commits_on("aicd/issue-7"), 0);
        for bad in ["", "bad..name", "-x", "a b", "x.lock", "a/.b", "HEAD", "@{-1}", "trailing/"] {
            assert_error(forge.create_branch(&h.repo, bad).await, invalid, bad);
        }
        assert_eq!(h.branch_files("bad..name"), None);
    }

    pub(crate) async fn commit_changes_writes_modifies_and_deletes_files(h: &Harness) {
        let forge = h.forge();
        let base = forge.create_branch(&h.repo, "aicd/issue-7").await.unwrap();
        let binary = vec![0xff, 0xfe, 0x00, 0x80, b'\n', 0xc3];
        let changes = Changeset::new(
            "Greet",
            vec![
                FileChange::write("README.md", "# Demo\n\nHello!\n"),
                FileChange::write("src/greet.rs", "pub fn greet() {}\n"),
                FileChange::delete("docs/guide.md"),
                FileChange::write("assets/data.bin", binary.clone()),
                FileChange::write("notes/crlf.txt", "a\r\nb\r\n"),
            ],
        );
        let head = forge.commit_changes(&h.repo, "aicd/issue-7", &changes, "Greet the reader").await.unwrap();
        assert_eq!(head.name, "aicd/issue-7");
        assert_ne!(head.head, base.head);

        let mut expected = seed();
        expected.insert("README.md".into(), b"# Demo\n\nHello!\n".to_vec());
        expected.insert("src/greet.rs".into(), b"pub fn greet() {}\n".to_vec());
        expected.remove("docs/guide.md");
        expected.insert("assets/data.bin".into(), binary);
        expected.insert("notes/crlf.txt".into(), b"a\r\nb\r\n".to_vec());
        assert_eq!(h.branch_files("aicd/issue-7"), Some(expected));
        assert_eq!(h.commits_on("aicd/issue-7"), 1);
        assert_eq!(h.branch_files("main"), Some(seed()), "the default branch is untouched");
        let view = forge.repo_view(&h.repo).await.unwrap();
        assert_eq!(view.read_file("README.md").await.unwrap(), Some(b"# Demo\n".to_vec()));
        assert_eq!(forge.create_branch(&h.repo, "aicd/issue-7").await.unwrap(), head, "the branch is reused");

        let later =
            Changeset::new("More", vec![FileChange::delete("src/greet.rs"), FileChange::write("src/a/b.rs", "b")]);
        let next = forge.commit_changes(&h.repo, "aicd/issue-7", &later, "More").await.unwrap();
        assert_ne!(next.head, head.head);
        assert_eq!(h.commits_on("aicd/issue-7"), 2);
        let files = h.branch_files("aicd/issue-7").unwrap();
        assert!(!files.contains_key("src/greet.rs"));
        assert_eq!(files["src/a/b.rs"], b"b");
    }

    pub(crate) async fn commit_changes_is_idempotent_on_retry(h: &Harness) {
        let forge = h.forge();
        forge.create_branch(&h.repo, "aicd/issue-7").await.unwrap();
        let first = Changeset::new(
            "First",
            vec![FileChange::write("README.md", "changed\n"), FileChange::delete("docs/guide.md")],
        );
        let head = forge.commit_changes(&h.repo, "aicd/issue-7", &first, "First").await.unwrap();
        let again = forge.commit_changes(&h.repo, "aicd/issue-7", &first, "First").await.unwrap();
        assert_eq!(again, head, "a retry returns the commit it made");
        assert_eq!(h.commits_on("aicd/issue-7"), 1);

        let second = Changeset::new("Second", vec![FileChange::write("README.md", "changed again\n")]);
        let next = forge.commit_changes(&h.repo, "aicd/issue-7", &second, "Second").await.unwrap();
        assert_ne!(next.head, head.head);
        assert_eq!(forge.commit_changes(&h.repo, "aicd/issue-7", &second, "Second").await.unwrap(), next);
        assert_eq!(h.commits_on("aicd/issue-7"), 2);
        assert_eq!(h.branch_files("aicd/issue-7").unwrap()["README.md"], b"changed again\n");
    }

    pub(crate) async fn invalid_changes_are_refused_and_nothing_is_committed(h: &Harness) {
        let forge = h.forge();
        forge.create_branch(&h.repo, "aicd/issue-7").await.unwrap();
        let commit = |changes: Vec<FileChange>| {
            let changeset = Changeset::new("x", changes);
            async move { forge.commit_changes(&h.repo, "aicd/issue-7", &changeset, "x").await }
        };
        assert_error(commit(vec![FileChange::delete("missing.txt")]).await, invalid, "deleting a missing file");
        assert_error(commit(vec![FileChange::delete("src")]).await, invalid, "deleting a directory");
        for bad in ["../x", "/abs", "src/../../x", ".git/config", "a/.GIT/x", "a//b", "./a", "a/", ""] {
            assert_error(commit(vec![FileChange::write(bad, "x")]).await, invalid, bad);
        }
        assert_error(commit(vec![FileChange::write("README.md/x", "x")]).await, invalid, "a file below a file");
        assert_error(commit(vec![FileChange::write("src", "x")]).await, invalid, "a file over a directory");
        assert_error(commit(vec![]).await, invalid, "an empty changeset");
        let one = Changeset::new("x", vec![FileChange::write("a.txt", "a")]);
        assert_error(forge.commit_changes(&h.repo, "aicd/issue-7", &one, " \n").await, invalid, "a blank message");
        assert_error(forge.commit_changes(&h.repo, "main", &one, "x").await, invalid, "the default branch");
        assert_error(forge.commit_changes(&h.repo, "bad..name", &one, "x").await, invalid, "a bad branch name");
        assert_error(
            forge.commit_changes(&h.repo, "nope", &one, "x").await,
            |e| matches!(e, Error::NotFound { kind: "branch" }),
            "a missing branch",
        );
        assert_eq!(h.commits_on("aicd/issue-7"), 0);
        assert_eq!(h.branch_files("aicd/issue-7"), Some(seed()));
        assert_eq!(h.branch_files("main"), Some(seed()));
    }

    pub(crate) async fn open_pull_request_is_idempotent(h: &Harness) {
        let forge = h.forge();
        forge.create_branch(&h.repo, "aicd/issue-7").await.unwrap();
        let change = Changeset::new("x", vec![FileChange::write("README.md", "new\n")]);
        forge.commit_changes(&h.repo, "aicd/issue-7", &change, "x").await.unwrap();
        let opened = forge.open_pull_request(&h.repo, &pr("aicd/issue-7")).await.unwrap();
        assert_eq!(opened.number, 1);
        assert_eq!(opened.branch, "aicd/issue-7");
        assert!(!opened.url.is_empty());
        assert_eq!(forge.open_pull_request(&h.repo, &pr("aicd/issue-7")).await.unwrap(), opened);
        assert_eq!(h.pull_requests().await, vec![opened.clone()]);

        forge.create_branch(&h.repo, "aicd/issue-8").await.unwrap();
        let other = forge.open_pull_request(&h.repo, &pr("aicd/issue-8")).await.unwrap();
        assert_eq!(other.number, 2);
        assert_eq!(h.pull_requests().await, vec![opened, other]);

        assert_error(
            forge.open_pull_request(&h.repo, &pr("nope")).await,
            |e| matches!(e, Error::NotFound { kind: "branch" }),
            "a missing branch",
        );
        assert_error(forge.open_pull_request(&h.repo, &pr("main")).await, invalid, "the default branch");
        let mut blank = pr("aicd/issue-7");
        blank.title = "  ".into();
        assert_error(forge.open_pull_request(&h.repo, &blank).await, invalid, "a blank title");
        assert_eq!(h.pull_requests().await.len(), 2);
    }

    pub(crate) async fn concurrent_opens_make_one_pull_request(h: &Harness) {
        let forge = h.forge();
        forge.create_branch(&h.repo, "aicd/issue-7").await.unwrap();
        let request = pr("aicd/issue-7");
        let (a, b) =
            tokio::join!(forge.open_pull_request(&h.repo, &request), forge.open_pull_request(&h.repo, &request));
        assert_eq!(a.unwrap(), b.unwrap());
        assert_eq!(h.pull_requests().await.len(), 1);
    }

    pub(crate) async fn comments_are_posted_then_updated_in_place(h: &Harness) {
        let forge = h.forge();
        let first = forge.post_comment(&h.repo, 7, "Working on it…").await.unwrap();
        let second = forge.post_comment(&h.repo, 7, "Second thoughts").await.unwrap();
        let elsewhere = forge.post_comment(&h.repo, 8, "Other issue").await.unwrap();
        assert_ne!(first, second);
        assert_ne!(first, elsewhere);
        forge.update_comment(&h.repo, 7, first, "Opened #1.").await.unwrap();
        forge.update_comment(&h.repo, 7, first, "Opened #1 (updated).").await.unwrap();
        assert_eq!(h.comments(7).await, ["Opened #1 (updated).", "Second thoughts"]);
        assert_eq!(h.comments(8).await, ["Other issue"]);
        assert!(h.comments(9).await.is_empty());

        let not_found = |e: &Error| matches!(e, Error::NotFound { kind: "comment" });
        assert_error(forge.update_comment(&h.repo, 7, CommentId(999), "x").await, not_found, "an unknown comment");
        assert_error(forge.update_comment(&h.repo, 9, first, "x").await, not_found, "the wrong issue");
        assert_error(forge.post_comment(&h.repo, 7, " ").await, invalid, "a blank comment");
        assert_error(forge.post_comment(&h.repo, 0, "x").await, invalid, "issue 0");
        assert_eq!(h.comments(7).await.len(), 2);
    }

    pub(crate) async fn an_unknown_repository_is_rejected(h: &Harness) {
        let forge = h.forge();
        let repo = h.unknown_repo();
        let change = Changeset::new("x", vec![FileChange::write("a", "a")]);
        assert_error(forge.repo_view(&repo).await, rejected, "repo_view");
        assert_error(forge.create_branch(&repo, "b").await, rejected, "create_branch");
        assert_error(forge.commit_changes(&repo, "b", &change, "x").await, rejected, "commit_changes");
        assert_error(forge.open_pull_request(&repo, &pr("b")).await, rejected, "open_pull_request");
        assert_error(forge.post_comment(&repo, 1, "x").await, rejected, "post_comment");
        assert_error(forge.update_comment(&repo, 1, CommentId(1), "x").await, rejected, "update_comment");

        let mut moved = h.repo.clone();
        moved.default_branch = "trunk".into();
        assert_error(forge.repo_view(&moved).await, rejected, "a missing default branch");
        assert_error(forge.create_branch(&moved, "b").await, rejected, "a missing default branch");
    }
}

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test]
            async fn $test() {
                crate::suite::$test(&crate::memory_harness()).await;
            })*
        }
        mod local_git {
            $(#[tokio::test]
            async fn $test() {
                crate::suite::$test(&crate::local_harness(false)).await;
            })*
        }
        mod local_git_bare {
            $(#[tokio::test]
            async fn $test() {
                crate::suite::$test(&crate::local_harness(true)).await;
            })*
        }
    };
}

conformance!(
    repo_view_lists_and_reads_the_default_branch,
    repo_view_enforces_its_limits_and_rejects_escaping_paths,
    create_branch_starts_at_the_default_head_and_is_idempotent,
    commit_changes_writes_modifies_and_deletes_files,
    commit_changes_is_idempotent_on_retry,
    invalid_changes_are_refused_and_nothing_is_committed,
    open_pull_request_is_idempotent,
    concurrent_opens_make_one_pull_request,
    comments_are_posted_then_updated_in_place,
    an_unknown_repository_is_rejected,
);

mod local_git_only {
    use super::*;

    /// Publishes a change to `aicd/issue-7`, opens its pull request and comments.
    async fn publish(h: &Harness) -> PullRequestRef {
        let forge = h.forge();
        forge.create_branch(&h.repo, "aicd/issue-7").await.unwrap();
        let change = Changeset::new(
            "Greet",
            vec![FileChange::write("README.md", "# Demo\n\nHello from AI-CD\n"), FileChange::delete("docs/guide.md")],
        );
        forge.commit_changes(&h.repo, "aicd/issue-7", &change, "Greet the reader").await.unwrap();
        let comment = forge.post_comment(&h.repo, 7, "Working on it").await.unwrap();
        let opened = forge.open_pull_request(&h.repo, &pr("aicd/issue-7")).await.unwrap();
        forge.update_comment(&h.repo, 7, comment, "Opened a pull request").await.unwrap();
        opened
    }

    #[tokio::test]
    async fn publishing_leaves_the_working_tree_index_and_head_alone() {
        let h = local_harness(false);
        let path = h.local_path().to_owned();
        std::fs::write(path.join("scratch.txt"), "uncommitted\n").unwrap();
        std::fs::write(path.join("README.md"), "# Demo (edited locally)\n").unwrap();
        let before = (
            git_text(&path, &["status", "--porcelain"]),
            git_text(&path, &["symbolic-ref", "HEAD"]),
            git_text(&path, &["rev-parse", "HEAD"]),
            std::fs::read(path.join(".git/index")).unwrap(),
        );

        publish(&h).await;

        let after = (
            git_text(&path, &["status", "--porcelain"]),
            git_text(&path, &["symbolic-ref", "HEAD"]),
            git_text(&path, &["rev-parse", "HEAD"]),
            std::fs::read(path.join(".git/index")).unwrap(),
        );
        assert_eq!(before, after);
        assert_eq!(std::fs::read_to_string(path.join("README.md")).unwrap(), "# Demo (edited locally)\n");
        assert!(path.join("docs/guide.md").exists());
        let leftovers: Vec<_> = std::fs::read_dir(path.join(".git"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("aicd-tmp-index"))
            .collect();
        assert!(leftovers.is_empty(), "scratch indexes are removed: {leftovers:?}");
        let author = git_text(&path, &["log", "-1", "--format=%an <%ae>", "refs/heads/aicd/issue-7"]);
        assert_eq!(author, "AI-CD <aicd@localhost>");
        assert_eq!(git_text(&path, &["log", "-1", "--format=%B", "refs/heads/aicd/issue-7"]), "Greet the reader");
    }

    #[tokio::test]
    async fn the_pull_request_is_recorded_and_its_diff_shows_the_change() {
        let h = local_harness(false);
        let Backend::LocalGit { forge, path, .. } = &h.backend else { unreachable!() };
        let opened = publish(&h).await;
        assert_eq!(opened.url, format!("file://{}#pull/1", path.display()));

        let pulls = forge.pull_requests(&h.repo).await.unwrap();
        assert_eq!(pulls.len(), 1);
        let pull = &pulls[0];
        assert_eq!((pull.number, pull.branch.as_str(), pull.base.as_str()), (1, "aicd/issue-7", "main"));
        assert_eq!(
            (pull.title.as_str(), pull.body.as_str(), pull.issue_number),
            ("Fix the greeting", "Resolves #7.", Some(7))
        );
        assert_eq!(pull.state, PullRequestState::Open);
        assert_eq!(pull.base_commit, git_text(path, &["rev-parse", "main"]));
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path.join(".git/aicd/pulls/1.json")).unwrap()).unwrap();
        assert_eq!(record["state"], "open");
        assert_eq!(record["branch"], "aicd/issue-7");
        assert_eq!(std::fs::read_to_string(path.join(".git/aicd/comments/7/1.md")).unwrap(), "Opened a pull request");

        let diff = forge.pull_request_diff(&h.repo, 1).await.unwrap();
        assert!(diff.contains("diff --git a/README.md b/README.md"), "{diff}");
        assert!(diff.contains("+Hello from AI-CD"), "{diff}");
        assert!(diff.contains("-Read me first."), "{diff}");
        assert_error(
            forge.pull_request_diff(&h.repo, 2).await,
            |e| matches!(e, Error::NotFound { kind: "pull request" }),
            "an unknown pull request",
        );
    }

    #[tokio::test]
    async fn a_bare_repository_is_published_to() {
        let h = local_harness(true);
        let Backend::LocalGit { forge, path, .. } = &h.backend else { unreachable!() };
        assert_eq!(git_text(path, &["rev-parse", "--is-bare-repository"]), "true");
        publish(&h).await;
        assert_eq!(h.commits_on("aicd/issue-7"), 1);
        assert!(path.join("aicd/pulls/1.json").is_file());
        let diff = forge.pull_request_diff(&h.repo, 1).await.unwrap();
        assert!(diff.contains("+Hello from AI-CD"), "{diff}");
    }

    #[tokio::test]
    async fn the_executable_bit_of_a_changed_file_is_kept() {
        let h = local_harness(false);
        let path = h.local_path().to_owned();
        std::fs::write(path.join("run.sh"), "#!/bin/sh\n").unwrap();
        git(&path, &["add", "run.sh"]);
        git(&path, &["update-index", "--chmod=+x", "run.sh"]);
        git(&path, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "script"]);
        h.forge().create_branch(&h.repo, "b").await.unwrap();
        let change = Changeset::new(
            "x",
            vec![FileChange::write("run.sh", "#!/bin/sh\necho hi\n"), FileChange::write("new.sh", "x")],
        );
        h.forge().commit_changes(&h.repo, "b", &change, "x").await.unwrap();
        let listing = git_text(&path, &["ls-tree", "refs/heads/b", "run.sh", "new.sh"]);
        assert!(listing.contains("100755 blob") && listing.contains("100644 blob"), "{listing}");
    }

    #[tokio::test]
    async fn a_held_ref_lock_is_a_transient_failure() {
        let h = local_harness(false);
        let path = h.local_path().to_owned();
        h.forge().create_branch(&h.repo, "aicd/issue-7").await.unwrap();
        let lock = path.join(".git/refs/heads/aicd/issue-7.lock");
        std::fs::write(&lock, "").unwrap();
        let change = Changeset::new("x", vec![FileChange::write("README.md", "new\n")]);
        assert_error(
            h.forge().commit_changes(&h.repo, "aicd/issue-7", &change, "x").await,
            |e| matches!(e, Error::Unavailable { service: "forge", .. }),
            "a ref locked by another git process",
        );
        std::fs::remove_file(&lock).unwrap();
        h.forge().commit_changes(&h.repo, "aicd/issue-7", &change, "x").await.unwrap();
        assert_eq!(h.commits_on("aicd/issue-7"), 1);
    }

    #[tokio::test]
    async fn a_git_command_that_runs_too_long_is_stopped() {
        let h = local_harness(false);
        let impatient = LocalGitForge::new().with_timeout(std::time::Duration::from_nanos(1));
        assert_error(
            impatient.repo_view(&h.repo).await,
            |e| matches!(e, Error::Unavailable { service: "forge", .. }),
            "a timed-out git command",
        );
    }

    #[tokio::test]
    async fn a_github_repository_is_not_local() {
        let repo = repository(FULL_NAME, RepoSource::Github { installation_id: 1, repo_id: 2 });
        let result = LocalGitForge::new().repo_view(&repo).await;
        assert_error(result, |e| rejected(e) && e.to_string().contains("not a local repository"), "a GitHub source");
    }

    #[tokio::test]
    async fn a_directory_that_is_not_a_repository_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repository(FULL_NAME, RepoSource::Local { path: dir.path().to_str().unwrap().to_owned() });
        assert_error(LocalGitForge::new().repo_view(&repo).await, rejected, "a plain directory");
    }
}

mod memory_only {
    use super::*;

    fn memory(h: &Harness) -> &MemoryForge {
        match &h.backend {
            Backend::Memory(forge) => forge,
            Backend::LocalGit { .. } => unreachable!(),
        }
    }

    #[tokio::test]
    async fn injected_failures_fail_the_next_calls() {
        let h = memory_harness();
        let forge = memory(&h);
        forge.create_branch(&h.repo, "aicd/issue-7").await.unwrap();

        forge.fail_next(ForgeCall::OpenPullRequest, ForgeFailure::Transient, 2);
        for _ in 0..2 {
            assert_error(
                forge.open_pull_request(&h.repo, &pr("aicd/issue-7")).await,
                |e| matches!(e, Error::Unavailable { service: "forge", .. }),
                "an injected transient failure",
            );
        }
        assert!(forge.pull_requests(FULL_NAME).is_empty(), "a transient failure has no effect");
        let opened = forge.open_pull_request(&h.repo, &pr("aicd/issue-7")).await.unwrap();
        assert_eq!(forge.call_count(ForgeCall::OpenPullRequest), 3);

        forge.fail_next(ForgeCall::PostComment, ForgeFailure::Permanent, 1);
        assert_error(forge.post_comment(&h.repo, 7, "x").await, rejected, "an injected permanent failure");
        forge.post_comment(&h.repo, 7, "x").await.unwrap();
        assert_eq!(forge.comments(FULL_NAME, 7), ["x"]);

        // The commit is made but its answer is lost: the retry finds it and makes no other.
        forge.fail_next(ForgeCall::CommitChanges, ForgeFailure::LostResponse, 1);
        let change = Changeset::new("x", vec![FileChange::write("README.md", "new\n")]);
        assert_error(
            forge.commit_changes(&h.repo, "aicd/issue-7", &change, "x").await,
            |e| matches!(e, Error::Unavailable { .. }),
            "a lost response",
        );
        assert_eq!(forge.commits_on(FULL_NAME, "aicd/issue-7"), 1);
        let head = forge.commit_changes(&h.repo, "aicd/issue-7", &change, "x").await.unwrap();
        assert_eq!(forge.branch_head(FULL_NAME, "aicd/issue-7"), Some(head.head));
        assert_eq!(forge.commits_on(FULL_NAME, "aicd/issue-7"), 1);
        assert_eq!(forge.call_count(ForgeCall::CommitChanges), 2);
        assert_eq!(forge.call_count(ForgeCall::CreateBranch), 1);
        assert_eq!(forge.call_count(ForgeCall::UpdateComment), 0);
        assert_eq!(forge.pull_requests(FULL_NAME), [opened]);
    }

    #[tokio::test]
    async fn pull_requests_keep_what_they_were_opened_with() {
        let h = memory_harness();
        let forge = memory(&h);
        forge.create_branch(&h.repo, "aicd/issue-7").await.unwrap();
        let opened = forge.open_pull_request(&h.repo, &pr("aicd/issue-7")).await.unwrap();
        assert_eq!(opened.url, "memory://octo/demo/pull/1");
        let details = forge.pull_request_details(FULL_NAME);
        assert_eq!(details.len(), 1);
        let pull = &details[0];
        assert_eq!(
            (pull.title.as_str(), pull.body.as_str(), pull.base.as_str()),
            ("Fix the greeting", "Resolves #7.", "main")
        );
        assert_eq!(pull.issue_number, Some(7));
        assert_eq!(Some(pull.base_commit.clone()), forge.branch_head(FULL_NAME, "main"));
        assert_eq!(pull.to_ref(), opened);
        let clone = forge.clone();
        assert_eq!(clone.pull_requests(FULL_NAME), [opened], "clones share their repositories");
    }
}

/// The routing forge: each call goes to the forge of the repository's source, and a source
/// without one is refused with a readable, permanent error.
mod routing {
    use std::sync::Arc;

    use aicd_core::forge::{RoutingForge, rules};

    use super::*;

    const ALL_CALLS: [ForgeCall; 6] = [
        ForgeCall::RepoView,
        ForgeCall::CreateBranch,
        ForgeCall::CommitChanges,
        ForgeCall::OpenPullRequest,
        ForgeCall::PostComment,
        ForgeCall::UpdateComment,
    ];

    fn local_repo() -> Repository {
        repository(FULL_NAME, RepoSource::Local { path: "/srv/git/demo".to_owned() })
    }

    fn github_repo() -> Repository {
        repository(FULL_NAME, RepoSource::Github { installation_id: 1, repo_id: 2 })
    }

    /// Two memory forges holding the same repository with different files, so a view tells which
    /// one answered.
    fn forges() -> (MemoryForge, MemoryForge) {
        let local = MemoryForge::new();
        local.add_repo(FULL_NAME, "main", [("local.txt", "on the disk\n")]);
        let github = MemoryForge::new();
        github.add_repo(FULL_NAME, "main", [("github.txt", "on GitHub\n")]);
        (local, github)
    }

    fn calls(forge: &MemoryForge) -> Vec<u64> {
        ALL_CALLS.iter().map(|c| forge.call_count(*c)).collect()
    }

    /// Makes every call of the `Forge` port on `repo` through `forge`.
    async fn publish(forge: &dyn Forge, repo: &Repository) {
        forge.repo_view(repo).await.unwrap();
        forge.create_branch(repo, "aicd/issue-7").await.unwrap();
        let change = Changeset::new("greet", vec![FileChange::write("hello.txt", "Hello\n")]);
        forge.commit_changes(repo, "aicd/issue-7", &change, "Add a greeting").await.unwrap();
        forge.open_pull_request(repo, &pr("aicd/issue-7")).await.unwrap();
        let comment = forge.post_comment(repo, 7, "Working on it").await.unwrap();
        forge.update_comment(repo, 7, comment, "Done").await.unwrap();
    }

    #[tokio::test]
    async fn each_call_goes_to_the_forge_of_the_repositorys_source() {
        let (local, github) = forges();
        let forge = RoutingForge::new().local(Arc::new(local.clone())).github(Arc::new(github.clone()));
        assert!(forge.serves_local() && forge.serves_github());

        let view = forge.repo_view(&local_repo()).await.unwrap();
        assert_eq!(view.list_files().await.unwrap(), ["local.txt"]);
        let view = forge.repo_view(&github_repo()).await.unwrap();
        assert_eq!(view.list_files().await.unwrap(), ["github.txt"]);
        assert_eq!((local.call_count(ForgeCall::RepoView), github.call_count(ForgeCall::RepoView)), (1, 1));

        publish(&forge, &github_repo()).await;
        assert_eq!(calls(&github), [2, 1, 1, 1, 1, 1]);
        assert_eq!(calls(&local), [1, 0, 0, 0, 0, 0], "nothing went to the other forge");
        assert_eq!(github.commits_on(FULL_NAME, "aicd/issue-7"), 1);
        assert_eq!(github.comments(FULL_NAME, 7), ["Done"]);
        assert_eq!(github.pull_requests(FULL_NAME).len(), 1);

        publish(&forge, &local_repo()).await;
        assert_eq!(calls(&local), [2, 1, 1, 1, 1, 1]);
        assert_eq!(calls(&github), [2, 1, 1, 1, 1, 1]);
        assert_eq!(local.branch_files(FULL_NAME, "aicd/issue-7").unwrap()["hello.txt"], b"Hello\n");
    }

    #[tokio::test]
    async fn the_routed_forges_errors_pass_through_unchanged() {
        let (local, github) = forges();
        let forge = RoutingForge::new().local(Arc::new(local)).github(Arc::new(github.clone()));
        github.fail_next(ForgeCall::CreateBranch, ForgeFailure::Transient, 1);
        assert_error(
            forge.create_branch(&github_repo(), "aicd/issue-7").await,
            |e| matches!(e, Error::Unavailable { .. }),
            "a transient failure",
        );
        assert_error(forge.create_branch(&github_repo(), "bad..name").await, invalid, "an invalid branch");
    }

    #[tokio::test]
    async fn a_source_without_a_forge_is_refused_for_good_with_a_readable_message() {
        let (local, github) = forges();

        let forge = RoutingForge::new().local(Arc::new(local.clone()));
        assert!(forge.serves_local() && !forge.serves_github());
        let err = forge.repo_view(&github_repo()).await.err().expect("a GitHub repository is refused");
        assert!(
            matches!(&err, Error::Rejected { service: "github", message } if message == "this deployment has no GitHub App configured"),
            "{err:?}"
        );
        publish(&forge, &local_repo()).await;

        let forge = RoutingForge::new().github(Arc::new(github.clone()));
        let repo = local_repo();
        let refusals = [
            forge.repo_view(&repo).await.map(|_| ()),
            forge.create_branch(&repo, "aicd/issue-8").await.map(|_| ()),
            forge.commit_changes(&repo, "aicd/issue-8", &Changeset::new("x", vec![]), "x").await.map(|_| ()),
            forge.open_pull_request(&repo, &pr("aicd/issue-8")).await.map(|_| ()),
            forge.post_comment(&repo, 8, "x").await.map(|_| ()),
            forge.update_comment(&repo, 8, CommentId(1), "x").await,
        ];
        for refusal in refusals {
            assert_error(
                refusal,
                |e| matches!(e, Error::Rejected { service: "forge", message } if message.contains("on its own disk")),
                "a local repository",
            );
        }
        assert_eq!(calls(&github), [0; 6]);
        assert_eq!(calls(&local), [1, 1, 1, 1, 1, 1], "only the first forge's own calls");

        let message = "this deployment has no GitHub App configured (APP_ID, PRIVATE_KEY)";
        let forge = RoutingForge::new().github(Arc::new(github)).refuse_github(message).refuse_local("no disks here");
        assert!(!forge.serves_local() && !forge.serves_github());
        let err = forge.post_comment(&github_repo(), 7, "hi").await.unwrap_err();
        assert_eq!(err.to_string(), Error::Rejected { service: "github", message: message.into() }.to_string());
        assert!(
            matches!(forge.route(&local_repo()), Err(Error::Rejected { service: "forge", message }) if message == "no disks here")
        );
        let debug = format!("{forge:?}");
        assert!(debug.contains("no disks here"), "{debug}");

        let forge = RoutingForge::default();
        assert!(!forge.serves_local() && !forge.serves_github());
    }

    #[tokio::test]
    async fn the_shared_input_rules_are_those_the_forges_apply() {
        let (local, _) = forges();
        let repo = local_repo();
        for name in ["bad..name", "-x", "a b", "x.lock", ""] {
            let direct = rules::check_branch_name(name).unwrap_err().to_string();
            let through = local.create_branch(&repo, name).await.unwrap_err().to_string();
            assert_eq!(direct, through, "{name}");
        }
        assert_eq!(rules::normalize_message("Fix it\n\n").unwrap(), "Fix it\n");
        assert!(rules::check_commit_target(&repo, "main").is_err());
        assert!(rules::check_comment(0, "x").is_err() && rules::check_issue(0).is_err());
        assert!(rules::check_pull_request(&repo, &pr("main")).is_err());
        assert!(rules::check_changes(&[FileChange::write(".git/config", "x")]).is_err());
        let mut files = BTreeMap::from([(b"a".to_vec(), 1)]);
        let changes = [FileChange::write("b", "x"), FileChange::delete("a")];
        rules::apply_changes(&mut files, &changes, |index, content, _| index * 10 + content.len()).unwrap();
        assert_eq!(files, BTreeMap::from([(b"b".to_vec(), 1)]));
    }
}
