//! The forge conformance suite (`support/forge_suite.rs`) against the in-memory forge and the
//! local git forge (on a repository with a working tree and on a bare one), then what only one of
//! them does.

#[path = "support/forge_suite.rs"]
mod suite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use aicd_agent_api::{Changeset, FileChange, RepoViewLimits};
use aicd_core::forge::{CommentId, Forge, ForgeCall, ForgeFailure, LocalGitForge, MemoryForge, PullRequestState};
use aicd_core::github::{GithubRepoId, InstallationId};
use aicd_core::jobs::PullRequestRef;
use aicd_core::repos::{RepoSource, Repository};
use aicd_core::{Error, OrgId, RepoId};
use chrono::Utc;
use suite::{ForgeHarness, assert_error, invalid, pr, seed};

const FULL_NAME: &str = "octo/demo";

fn repository(full_name: &str, source: RepoSource) -> Repository {
    Repository {
        id: RepoId::new(),
        org_id: OrgId::new(),
        full_name: full_name.to_owned(),
        source,
        default_branch: "main".to_owned(),
        settings: Default::default(),
        detached_at: None,
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
        repo: repository(
            FULL_NAME,
            RepoSource::Github {
                installation_id: InstallationId::new(1).unwrap(),
                repo_id: GithubRepoId::new(2).unwrap(),
            },
        ),
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

impl ForgeHarness for Harness {
    fn forge(&self) -> &dyn Forge {
        match &self.backend {
            Backend::Memory(forge) => forge,
            Backend::LocalGit { forge, .. } => forge,
        }
    }

    fn repo(&self) -> &Repository {
        &self.repo
    }

    fn limited(&self, limits: RepoViewLimits) -> Box<dyn Forge> {
        match &self.backend {
            Backend::Memory(forge) => Box::new(forge.clone().with_view_limits(limits)),
            Backend::LocalGit { forge, .. } => Box::new(forge.clone().with_view_limits(limits)),
        }
    }

    fn unknown_repo(&self) -> Repository {
        match &self.backend {
            Backend::Memory(_) => repository(
                "octo/missing",
                RepoSource::Github {
                    installation_id: InstallationId::new(1).unwrap(),
                    repo_id: GithubRepoId::new(3).unwrap(),
                },
            ),
            Backend::LocalGit { path, .. } => {
                let missing = path.parent().unwrap().join("missing");
                repository("octo/missing", RepoSource::Local { path: missing.to_str().unwrap().to_owned() })
            }
        }
    }

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

impl Harness {
    fn local_path(&self) -> &Path {
        match &self.backend {
            Backend::LocalGit { path, .. } => path,
            Backend::Memory(_) => panic!("not a local git harness"),
        }
    }
}

fn rejected(e: &Error) -> bool {
    matches!(e, Error::Rejected { service: "forge", .. })
}

forge_conformance!(memory, async { crate::memory_harness() });
forge_conformance!(local_git, async { crate::local_harness(false) });
forge_conformance!(local_git_bare, async { crate::local_harness(true) });

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
    async fn the_repositorys_hooks_never_run() {
        use std::os::unix::fs::PermissionsExt;
        for bare in [false, true] {
            let h = local_harness(bare);
            let marker = h.local_path().parent().unwrap().join("hook-ran");
            let hooks = if bare { h.local_path().join("hooks") } else { h.local_path().join(".git/hooks") };
            std::fs::create_dir_all(&hooks).unwrap();
            for hook in ["reference-transaction", "post-commit", "pre-commit", "post-index-change", "post-checkout"] {
                let script = hooks.join(hook);
                std::fs::write(&script, format!("#!/bin/sh\necho {hook} >> '{}'\n", marker.display())).unwrap();
                std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            // A hooks path in the repository's own configuration is ignored too.
            git(h.local_path(), &["config", "core.hooksPath", hooks.to_str().unwrap()]);
            publish(&h).await;
            h.forge().delete_branch(&h.repo, "aicd/issue-7").await.unwrap();
            assert!(!marker.exists(), "a hook ran: {:?}", std::fs::read_to_string(&marker));
            // The hook itself works when git runs it (the test would prove nothing otherwise).
            git(h.local_path(), &["update-ref", "refs/heads/probe", "main"]);
            assert!(marker.exists(), "git runs the hook outside the forge");
        }
    }

    #[tokio::test]
    async fn programs_named_by_the_repositorys_configuration_never_run() {
        use std::os::unix::fs::PermissionsExt;
        let h = local_harness(false);
        let marker = h.local_path().parent().unwrap().join("program-ran");
        let program = h.local_path().parent().unwrap().join("sign.sh");
        std::fs::write(&program, format!("#!/bin/sh\necho \"$@\" >> '{}'\nexit 1\n", marker.display())).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        let program = program.to_str().unwrap();
        for (key, value) in [
            ("commit.gpgSign", "true"),
            ("user.signingKey", "ABCDEF"),
            ("gpg.program", program),
            ("core.fsmonitor", program),
        ] {
            git(h.local_path(), &["config", key, value]);
        }
        publish(&h).await;
        assert!(!marker.exists(), "a program ran: {:?}", std::fs::read_to_string(&marker));
        // git does run it when committing on its own (the test would prove nothing otherwise).
        let probe = std::process::Command::new("git")
            .args(["-C", h.local_path().to_str().unwrap(), "commit", "--allow-empty", "-m", "probe"])
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .output()
            .unwrap();
        assert!(!probe.status.success(), "the signing program fails the probe commit");
        assert!(marker.exists(), "git runs the configured program outside the forge");
    }

    #[tokio::test]
    async fn only_the_repositorys_own_top_directory_opens_it() {
        let h = local_harness(false);
        publish(&h).await;
        let top = h.local_path().to_owned();
        std::fs::create_dir_all(top.join("src")).unwrap();
        git(&top, &["worktree", "add", "-q", "--detach", top.parent().unwrap().join("linked").to_str().unwrap()]);
        let forge = h.forge();
        // Another path to the same refs and objects: its `.git`, a directory inside, a linked
        // worktree, or another spelling of it (registered by an earlier version). Each would let a
        // second organization share the first one's repository.
        let spelled = std::path::PathBuf::from(format!("{}/", top.display()));
        let dotted = top.parent().unwrap().join(".").join(top.file_name().unwrap());
        for other in [top.join(".git"), top.join("src"), top.parent().unwrap().join("linked"), spelled, dotted] {
            let mut repo = h.repo.clone();
            repo.source = aicd_core::repos::RepoSource::Local { path: other.to_str().unwrap().to_owned() };
            for result in [forge.repo_view(&repo).await.map(drop), forge.create_branch(&repo, "x").await.map(drop)] {
                match result {
                    Err(Error::Rejected { service: "forge", message }) => {
                        assert!(message.contains("not an accessible repository"), "{}: {message}", other.display());
                    }
                    other_result => panic!("{}: expected a refusal, got {other_result:?}", other.display()),
                }
            }
        }
        assert!(forge.repo_view(&h.repo).await.is_ok(), "the top directory itself opens");
    }

    #[tokio::test]
    async fn repositories_outside_the_roots_are_not_accessible() {
        let h = local_harness(false);
        let elsewhere = tempfile::tempdir().unwrap();
        let forge = LocalGitForge::new().within(aicd_core::forge::LocalRoots::new([elsewhere.path().to_path_buf()]));
        for result in [forge.repo_view(&h.repo).await.map(drop), forge.create_branch(&h.repo, "b").await.map(drop)] {
            match result {
                Err(Error::Rejected { service: "forge", message }) => {
                    assert!(message.contains("not an accessible repository"), "{message}");
                    assert!(!message.contains("No such file") && !message.contains("outside"), "{message}");
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        // Under its root, the same repository is served.
        let root = h.local_path().parent().unwrap().to_path_buf();
        let forge = LocalGitForge::new().within(aicd_core::forge::LocalRoots::new([root]));
        assert!(forge.repo_view(&h.repo).await.is_ok());
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
        let repo = repository(
            FULL_NAME,
            RepoSource::Github {
                installation_id: InstallationId::new(1).unwrap(),
                repo_id: GithubRepoId::new(2).unwrap(),
            },
        );
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
        repository(
            FULL_NAME,
            RepoSource::Github {
                installation_id: InstallationId::new(1).unwrap(),
                repo_id: GithubRepoId::new(2).unwrap(),
            },
        )
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
