//! The forge conformance suite: every promise of the `Forge` port, for any forge behind a
//! [`ForgeHarness`]. `aicd-core`'s tests run it against `MemoryForge` and `LocalGitForge`,
//! `aicd-github`'s against `GitHubForge` on the fake GitHub (this file is included by path).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;

use aicd_agent_api::{Changeset, FileChange, RepoViewError, RepoViewLimits};
use aicd_core::Error;
use aicd_core::forge::{CommentId, Forge, NewPullRequest, rules};
use aicd_core::jobs::PullRequestRef;
use aicd_core::repos::Repository;

/// The files of the default branch every harness starts with.
pub fn seed() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        ("README.md".to_owned(), b"# Demo\n".to_vec()),
        ("src/lib.rs".to_owned(), b"pub fn one() -> u32 {\n    1\n}\n".to_vec()),
        ("docs/guide.md".to_owned(), b"Read me first.\n".to_vec()),
        ("assets/logo.bin".to_owned(), vec![0x89, 0xff, 0x00, 0xfe]),
    ])
}

/// A forge with a repository seeded with [`seed`] on `main`, and ways to look at what the forge
/// did without going through it.
pub trait ForgeHarness {
    /// The forge.
    fn forge(&self) -> &dyn Forge;
    /// The repository, as registered.
    fn repo(&self) -> &Repository;
    /// The same forge, with views bounded by `limits`.
    fn limited(&self, limits: RepoViewLimits) -> Box<dyn Forge>;
    /// A repository this forge cannot reach.
    fn unknown_repo(&self) -> Repository;
    /// The files at the tip of `branch`, read without the forge.
    fn branch_files(&self, branch: &str) -> Option<BTreeMap<String, Vec<u8>>>;
    /// How many commits `branch` has above `main`, counted without the forge.
    fn commits_on(&self, branch: &str) -> usize;
    /// The pull requests opened, read without the forge.
    fn pull_requests(&self) -> impl std::future::Future<Output = Vec<PullRequestRef>>;
    /// The comments on an issue, read without the forge.
    fn comments(&self, issue: u64) -> impl std::future::Future<Output = Vec<String>>;
    /// Whether the forge can tell a comment of another issue (GitHub names a comment by its id
    /// alone).
    fn knows_comment_issues(&self) -> bool {
        true
    }
}

pub fn pr(branch: &str) -> NewPullRequest {
    NewPullRequest {
        branch: branch.to_owned(),
        title: "Fix the greeting".to_owned(),
        body: "Resolves #7.".to_owned(),
        issue_number: Some(7),
    }
}

/// Asserts `result` is an error that `expected` accepts.
#[track_caller]
pub fn assert_error<T>(result: aicd_core::Result<T>, expected: impl Fn(&Error) -> bool, what: &str) {
    match result {
        Err(e) if expected(&e) => {}
        Err(e) => panic!("{what}: unexpected error {e:?}"),
        Ok(_) => panic!("{what}: unexpectedly succeeded"),
    }
}

pub fn invalid(e: &Error) -> bool {
    matches!(e, Error::InvalidInput(_))
}

pub fn rejected(e: &Error) -> bool {
    matches!(e, Error::Rejected { .. })
}

pub async fn repo_view_lists_and_reads_the_default_branch(h: &impl ForgeHarness) {
    let view = h.forge().repo_view(h.repo()).await.unwrap();
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

pub async fn repo_view_enforces_its_limits_and_rejects_escaping_paths(h: &impl ForgeHarness) {
    let few = h.limited(RepoViewLimits { max_files: 2, max_file_bytes: 1024 });
    let view = few.repo_view(h.repo()).await.unwrap();
    assert_eq!(view.list_files().await, Err(RepoViewError::TooManyFiles { count: 4, limit: 2 }));
    assert_eq!(view.read_file("README.md").await.unwrap(), Some(b"# Demo\n".to_vec()));

    let small = h.limited(RepoViewLimits { max_files: 100, max_file_bytes: 5 });
    let view = small.repo_view(h.repo()).await.unwrap();
    assert_eq!(
        view.read_file("README.md").await,
        Err(RepoViewError::FileTooLarge { path: "README.md".to_owned(), size: 7, limit: 5 })
    );
    assert_eq!(view.read_file("assets/logo.bin").await.unwrap(), Some(vec![0x89, 0xff, 0x00, 0xfe]));
    for bad in ["../x", "/etc/passwd", "src/../../x", ""] {
        assert!(matches!(view.read_file(bad).await, Err(RepoViewError::InvalidPath { .. })), "{bad:?}");
    }
}

pub async fn create_branch_starts_at_the_default_head_and_is_idempotent(h: &impl ForgeHarness) {
    let (forge, repo) = (h.forge(), h.repo());
    let main = forge.create_branch(repo, "main").await.unwrap();
    assert_eq!(main.name, "main");
    let branch = forge.create_branch(repo, "aicd/issue-7").await.unwrap();
    assert_eq!(branch.name, "aicd/issue-7");
    assert_eq!(branch.head, main.head);
    assert_eq!(forge.create_branch(repo, "aicd/issue-7").await.unwrap(), branch);
    assert_eq!(h.branch_files("aicd/issue-7"), Some(seed()));
    assert_eq!(h.commits_on("aicd/issue-7"), 0);
    for bad in ["", "bad..name", "-x", "a b", "x.lock", "a/.b", "HEAD", "@{-1}", "trailing/"] {
        assert_error(forge.create_branch(repo, bad).await, invalid, bad);
    }
    assert_eq!(h.branch_files("bad..name"), None);
}

pub async fn commit_changes_writes_modifies_and_deletes_files(h: &impl ForgeHarness) {
    let (forge, repo) = (h.forge(), h.repo());
    let base = forge.create_branch(repo, "aicd/issue-7").await.unwrap();
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
    let head = forge.commit_changes(repo, "aicd/issue-7", &changes, "Greet the reader").await.unwrap();
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
    let view = forge.repo_view(repo).await.unwrap();
    assert_eq!(view.read_file("README.md").await.unwrap(), Some(b"# Demo\n".to_vec()));
    assert_eq!(forge.create_branch(repo, "aicd/issue-7").await.unwrap(), head, "the branch is reused");

    let later = Changeset::new("More", vec![FileChange::delete("src/greet.rs"), FileChange::write("src/a/b.rs", "b")]);
    let next = forge.commit_changes(repo, "aicd/issue-7", &later, "More").await.unwrap();
    assert_ne!(next.head, head.head);
    assert_eq!(h.commits_on("aicd/issue-7"), 2);
    let files = h.branch_files("aicd/issue-7").unwrap();
    assert!(!files.contains_key("src/greet.rs"));
    assert_eq!(files["src/a/b.rs"], b"b");
}

pub async fn commit_changes_is_idempotent_on_retry(h: &impl ForgeHarness) {
    let (forge, repo) = (h.forge(), h.repo());
    forge.create_branch(repo, "aicd/issue-7").await.unwrap();
    let first =
        Changeset::new("First", vec![FileChange::write("README.md", "changed\n"), FileChange::delete("docs/guide.md")]);
    let head = forge.commit_changes(repo, "aicd/issue-7", &first, "First").await.unwrap();
    let again = forge.commit_changes(repo, "aicd/issue-7", &first, "First").await.unwrap();
    assert_eq!(again, head, "a retry returns the commit it made");
    assert_eq!(h.commits_on("aicd/issue-7"), 1);

    let second = Changeset::new("Second", vec![FileChange::write("README.md", "changed again\n")]);
    let next = forge.commit_changes(repo, "aicd/issue-7", &second, "Second").await.unwrap();
    assert_ne!(next.head, head.head);
    assert_eq!(forge.commit_changes(repo, "aicd/issue-7", &second, "Second").await.unwrap(), next);
    assert_eq!(h.commits_on("aicd/issue-7"), 2);
    assert_eq!(h.branch_files("aicd/issue-7").unwrap()["README.md"], b"changed again\n");
}

pub async fn invalid_changes_are_refused_and_nothing_is_committed(h: &impl ForgeHarness) {
    let (forge, repo) = (h.forge(), h.repo());
    forge.create_branch(repo, "aicd/issue-7").await.unwrap();
    let commit = |changes: Vec<FileChange>| {
        let changeset = Changeset::new("x", changes);
        async move { forge.commit_changes(repo, "aicd/issue-7", &changeset, "x").await }
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
    assert_error(forge.commit_changes(repo, "aicd/issue-7", &one, " \n").await, invalid, "a blank message");
    assert_error(forge.commit_changes(repo, "main", &one, "x").await, invalid, "the default branch");
    assert_error(forge.commit_changes(repo, "bad..name", &one, "x").await, invalid, "a bad branch name");
    assert_error(
        forge.commit_changes(repo, "nope", &one, "x").await,
        |e| matches!(e, Error::NotFound { kind: "branch" }),
        "a missing branch",
    );
    assert_eq!(h.commits_on("aicd/issue-7"), 0);
    assert_eq!(h.branch_files("aicd/issue-7"), Some(seed()));
    assert_eq!(h.branch_files("main"), Some(seed()));
}

pub async fn open_pull_request_is_idempotent(h: &impl ForgeHarness) {
    let (forge, repo) = (h.forge(), h.repo());
    forge.create_branch(repo, "aicd/issue-7").await.unwrap();
    let change = Changeset::new("x", vec![FileChange::write("README.md", "new\n")]);
    forge.commit_changes(repo, "aicd/issue-7", &change, "x").await.unwrap();
    let opened = forge.open_pull_request(repo, &pr("aicd/issue-7")).await.unwrap();
    assert!(opened.number >= 1);
    assert_eq!(opened.branch, "aicd/issue-7");
    assert!(!opened.url.is_empty());
    assert_eq!(forge.open_pull_request(repo, &pr("aicd/issue-7")).await.unwrap(), opened);
    assert_eq!(h.pull_requests().await, vec![opened.clone()]);

    forge.create_branch(repo, "aicd/issue-8").await.unwrap();
    let other = forge.open_pull_request(repo, &pr("aicd/issue-8")).await.unwrap();
    assert_eq!(other.number, opened.number + 1);
    assert_eq!(h.pull_requests().await, vec![opened, other]);

    assert_error(
        forge.open_pull_request(repo, &pr("nope")).await,
        |e| matches!(e, Error::NotFound { kind: "branch" }),
        "a missing branch",
    );
    assert_error(forge.open_pull_request(repo, &pr("main")).await, invalid, "the default branch");
    let mut blank = pr("aicd/issue-7");
    blank.title = "  ".into();
    assert_error(forge.open_pull_request(repo, &blank).await, invalid, "a blank title");
    assert_eq!(h.pull_requests().await.len(), 2);
}

pub async fn concurrent_opens_make_one_pull_request(h: &impl ForgeHarness) {
    let (forge, repo) = (h.forge(), h.repo());
    forge.create_branch(repo, "aicd/issue-7").await.unwrap();
    let request = pr("aicd/issue-7");
    let (a, b) = tokio::join!(forge.open_pull_request(repo, &request), forge.open_pull_request(repo, &request));
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(h.pull_requests().await.len(), 1);
}

pub async fn texts_are_held_to_githubs_limits(h: &impl ForgeHarness) {
    let (forge, repo) = (h.forge(), h.repo());
    forge.create_branch(repo, "aicd/issue-7").await.unwrap();
    let mut long = pr("aicd/issue-7");
    long.title = "t".repeat(rules::MAX_TITLE_CHARS + 1);
    assert_error(forge.open_pull_request(repo, &long).await, invalid, "a title over 256 characters");
    long.title = "é".repeat(rules::MAX_TITLE_CHARS);
    long.body = "b".repeat(rules::MAX_BODY_CHARS + 1);
    assert_error(forge.open_pull_request(repo, &long).await, invalid, "a body over 65,536 characters");
    assert_error(
        forge.post_comment(repo, 7, &"c".repeat(rules::MAX_BODY_CHARS + 1)).await,
        invalid,
        "a comment over 65,536 characters",
    );
    assert!(h.pull_requests().await.is_empty());
    // At the limits, accepted by every forge (GitHub's included).
    long.body = "b".repeat(rules::MAX_BODY_CHARS - 20);
    let opened = forge.open_pull_request(repo, &long).await.unwrap();
    assert_eq!(h.pull_requests().await, vec![opened]);
    forge.post_comment(repo, 7, &"c".repeat(rules::MAX_BODY_CHARS)).await.unwrap();
}

pub async fn delete_branch_removes_a_branch_and_is_idempotent(h: &impl ForgeHarness) {
    let (forge, repo) = (h.forge(), h.repo());
    forge.create_branch(repo, "aicd/issue-7").await.unwrap();
    let change = Changeset::new("x", vec![FileChange::write("README.md", "new\n")]);
    forge.commit_changes(repo, "aicd/issue-7", &change, "x").await.unwrap();
    forge.delete_branch(repo, "aicd/issue-7").await.unwrap();
    assert_eq!(h.branch_files("aicd/issue-7"), None);
    forge.delete_branch(repo, "aicd/issue-7").await.unwrap();
    forge.delete_branch(repo, "never-existed").await.unwrap();
    assert_error(forge.delete_branch(repo, "main").await, invalid, "the default branch");
    assert_error(forge.delete_branch(repo, "bad..name").await, invalid, "a bad branch name");
    assert_eq!(h.branch_files("main"), Some(seed()));
    // A new branch of the same name starts afresh.
    let again = forge.create_branch(repo, "aicd/issue-7").await.unwrap();
    assert_eq!(h.branch_files("aicd/issue-7"), Some(seed()));
    assert_eq!(again.head, forge.create_branch(repo, "main").await.unwrap().head);
}

pub async fn comments_are_posted_then_updated_in_place(h: &impl ForgeHarness) {
    let (forge, repo) = (h.forge(), h.repo());
    let first = forge.post_comment(repo, 7, "Working on it…").await.unwrap();
    let second = forge.post_comment(repo, 7, "Second thoughts").await.unwrap();
    let elsewhere = forge.post_comment(repo, 8, "Other issue").await.unwrap();
    assert_ne!(first, second);
    assert_ne!(first, elsewhere);
    forge.update_comment(repo, 7, first, "Opened #1.").await.unwrap();
    forge.update_comment(repo, 7, first, "Opened #1 (updated).").await.unwrap();
    assert_eq!(h.comments(7).await, ["Opened #1 (updated).", "Second thoughts"]);
    assert_eq!(h.comments(8).await, ["Other issue"]);
    assert!(h.comments(9).await.is_empty());

    let not_found = |e: &Error| matches!(e, Error::NotFound { kind: "comment" });
    assert_error(forge.update_comment(repo, 7, CommentId(999), "x").await, not_found, "an unknown comment");
    if h.knows_comment_issues() {
        assert_error(forge.update_comment(repo, 9, first, "x").await, not_found, "the wrong issue");
    }
    assert_error(forge.post_comment(repo, 7, " ").await, invalid, "a blank comment");
    assert_error(forge.post_comment(repo, 0, "x").await, invalid, "issue 0");
    assert_eq!(h.comments(7).await.len(), 2);
}

pub async fn an_unknown_repository_is_rejected(h: &impl ForgeHarness) {
    let forge = h.forge();
    let repo = h.unknown_repo();
    let change = Changeset::new("x", vec![FileChange::write("a", "a")]);
    assert_error(forge.repo_view(&repo).await, rejected, "repo_view");
    assert_error(forge.create_branch(&repo, "b").await, rejected, "create_branch");
    assert_error(forge.commit_changes(&repo, "b", &change, "x").await, rejected, "commit_changes");
    assert_error(forge.open_pull_request(&repo, &pr("b")).await, rejected, "open_pull_request");
    assert_error(forge.delete_branch(&repo, "b").await, rejected, "delete_branch");
    assert_error(forge.post_comment(&repo, 1, "x").await, rejected, "post_comment");
    assert_error(forge.update_comment(&repo, 1, CommentId(1), "x").await, rejected, "update_comment");

    let mut moved = h.repo().clone();
    moved.default_branch = "trunk".into();
    assert_error(forge.repo_view(&moved).await, rejected, "a missing default branch");
    assert_error(forge.create_branch(&moved, "b").await, rejected, "a missing default branch");
}

/// One `#[tokio::test]` per suite function, in a module `$name`, on the harness `$make()` makes.
#[macro_export]
macro_rules! forge_conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            $crate::forge_conformance!(@tests $make;
                repo_view_lists_and_reads_the_default_branch,
                repo_view_enforces_its_limits_and_rejects_escaping_paths,
                create_branch_starts_at_the_default_head_and_is_idempotent,
                commit_changes_writes_modifies_and_deletes_files,
                commit_changes_is_idempotent_on_retry,
                invalid_changes_are_refused_and_nothing_is_committed,
                open_pull_request_is_idempotent,
                concurrent_opens_make_one_pull_request,
                texts_are_held_to_githubs_limits,
                delete_branch_removes_a_branch_and_is_idempotent,
                comments_are_posted_then_updated_in_place,
                an_unknown_repository_is_rejected,
            );
        }
    };
    (@tests $make:expr; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                let harness = $make.await;
                $crate::suite::$test(&harness).await;
            }
        )*
    };
}
