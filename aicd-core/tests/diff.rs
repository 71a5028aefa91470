//! A job's changes as a git-style unified diff: [`aicd_core::diff::unified_diff`] over an
//! in-memory base, and [`aicd_core::Core::job_diff`] over the memory forge.

#[path = "support/mod.rs"]
mod support;

use aicd_agent_api::{Changeset, FileChange, MemoryRepoView, RepoViewLimits};
use aicd_core::diff::{DiffFile, DiffStatus, unified_diff};
use aicd_core::forge::{Forge, MemoryForge};
use aicd_core::github::{GithubRepoId, InstallationId};
use aicd_core::jobs::{Fence, IssueRef, JobState, JobUpdate, NewJob, Trigger};
use aicd_core::repos::{NewRepo, RepoSource};
use aicd_core::store::DispatchStore;
use aicd_core::tenancy::{Actor, Role};
use aicd_core::{Error, JobId};

fn file(path: &str, status: DiffStatus, additions: u32, deletions: u32, binary: bool) -> DiffFile {
    DiffFile { path: path.into(), status, additions, deletions, binary }
}

fn numbered(lines: std::ops::RangeInclusive<u32>) -> String {
    lines.map(|n| format!("line {n}\n")).collect()
}

#[tokio::test]
async fn an_added_file_is_diffed_against_dev_null() {
    let base = MemoryRepoView::new();
    let changes = Changeset::new("add", vec![FileChange::write("src/new.rs", "fn main() {}\n// done\n")]);
    let diff = unified_diff(&changes, &base).await.unwrap();
    assert_eq!(diff.files, [file("src/new.rs", DiffStatus::Added, 2, 0, false)]);
    assert_eq!(
        diff.patch,
        "diff --git a/src/new.rs b/src/new.rs\n\
         new file mode 100644\n\
         --- /dev/null\n\
         +++ b/src/new.rs\n\
         @@ -0,0 +1,2 @@\n\
         +fn main() {}\n\
         +// done\n"
    );
}

#[tokio::test]
async fn a_modified_file_gets_hunks_with_three_lines_of_context() {
    let base = MemoryRepoView::from_files([("notes.txt", numbered(1..=20))]);
    let new = numbered(1..=20).replace("line 5\n", "line five\n").replace("line 17\n", "");
    let diff = unified_diff(&Changeset::new("edit", vec![FileChange::write("notes.txt", new)]), &base).await.unwrap();
    assert_eq!(diff.files, [file("notes.txt", DiffStatus::Modified, 1, 2, false)]);
    assert_eq!(
        diff.patch,
        "diff --git a/notes.txt b/notes.txt\n\
         --- a/notes.txt\n\
         +++ b/notes.txt\n\
         @@ -2,7 +2,7 @@\n \
         line 2\n \
         line 3\n \
         line 4\n\
         -line 5\n\
         +line five\n \
         line 6\n \
         line 7\n \
         line 8\n\
         @@ -14,7 +14,6 @@\n \
         line 14\n \
         line 15\n \
         line 16\n\
         -line 17\n \
         line 18\n \
         line 19\n \
         line 20\n"
    );
}

#[tokio::test]
async fn a_deleted_file_is_diffed_against_dev_null() {
    let base = MemoryRepoView::from_files([("old.txt", "a\nb\n"), ("kept.txt", "k\n")]);
    let diff = unified_diff(&Changeset::new("rm", vec![FileChange::delete("old.txt")]), &base).await.unwrap();
    assert_eq!(diff.files, [file("old.txt", DiffStatus::Deleted, 0, 2, false)]);
    assert_eq!(
        diff.patch,
        "diff --git a/old.txt b/old.txt\n\
         deleted file mode 100644\n\
         --- a/old.txt\n\
         +++ /dev/null\n\
         @@ -1,2 +0,0 @@\n\
         -a\n\
         -b\n"
    );
}

#[tokio::test]
async fn binary_and_non_utf8_content_is_reported_not_diffed() {
    let base = MemoryRepoView::from_files([
        ("logo.png", vec![0x89, b'P', b'N', b'G', 0x00, 0x01]),
        ("latin1.txt", b"caf\xe9\n".to_vec()),
        ("becomes-binary.txt", b"text\n".to_vec()),
    ]);
    let changes = Changeset::new(
        "bin",
        vec![
            FileChange::write("logo.png", vec![0x89, b'P', b'N', b'G', 0x00, 0x02]),
            FileChange::write("latin1.txt", b"caf\xe9 au lait\n".to_vec()),
            FileChange::write("becomes-binary.txt", vec![b't', 0x00]),
            FileChange::write("new.bin", vec![0xff, 0xfe]),
            FileChange::delete("logo.png"),
        ],
    );
    let diff = unified_diff(&changes, &base).await.unwrap();
    assert_eq!(
        diff.files,
        [
            file("becomes-binary.txt", DiffStatus::Modified, 0, 0, true),
            file("latin1.txt", DiffStatus::Modified, 0, 0, true),
            // The last change to a path counts: the logo is deleted.
            file("logo.png", DiffStatus::Deleted, 0, 0, true),
            file("new.bin", DiffStatus::Added, 0, 0, true),
        ]
    );
    assert_eq!(
        diff.patch,
        "diff --git a/becomes-binary.txt b/becomes-binary.txt\n\
         Binary files a/becomes-binary.txt and b/becomes-binary.txt differ\n\
         diff --git a/latin1.txt b/latin1.txt\n\
         Binary files a/latin1.txt and b/latin1.txt differ\n\
         diff --git a/logo.png b/logo.png\n\
         deleted file mode 100644\n\
         Binary files a/logo.png and /dev/null differ\n\
         diff --git a/new.bin b/new.bin\n\
         new file mode 100644\n\
         Binary files /dev/null and b/new.bin differ\n"
    );
}

#[tokio::test]
async fn changes_that_change_nothing_are_left_out() {
    let base = MemoryRepoView::from_files([("same.txt", "same\n")]);
    let changes = Changeset::new(
        "noop",
        vec![
            FileChange::write("same.txt", "same\n"),
            FileChange::delete("never-existed.txt"),
            FileChange::write("temp.txt", "x\n"),
            FileChange::delete("temp.txt"),
        ],
    );
    let diff = unified_diff(&changes, &base).await.unwrap();
    assert!(diff.files.is_empty(), "{:?}", diff.files);
    assert_eq!(diff.patch, "");
}

#[tokio::test]
async fn a_missing_final_newline_and_an_empty_file_read_as_git_shows_them() {
    let base = MemoryRepoView::from_files([("a.txt", "one\ntwo")]);
    let changes =
        Changeset::new("nl", vec![FileChange::write("a.txt", "one\ntwo\n"), FileChange::write("empty.txt", "")]);
    let diff = unified_diff(&changes, &base).await.unwrap();
    assert_eq!(
        diff.files,
        [file("a.txt", DiffStatus::Modified, 1, 1, false), file("empty.txt", DiffStatus::Added, 0, 0, false)]
    );
    assert_eq!(
        diff.patch,
        "diff --git a/a.txt b/a.txt\n\
         --- a/a.txt\n\
         +++ b/a.txt\n\
         @@ -1,2 +1,2 @@\n \
         one\n\
         -two\n\
         \\ No newline at end of file\n\
         +two\n\
         diff --git a/empty.txt b/empty.txt\n\
         new file mode 100644\n"
    );
}

#[tokio::test]
async fn a_base_that_refuses_a_path_fails_the_diff() {
    let base = MemoryRepoView::from_files([("big.txt", "x".repeat(100))])
        .with_limits(RepoViewLimits { max_files: 10, max_file_bytes: 10 });
    let result = unified_diff(&Changeset::new("s", vec![FileChange::write("big.txt", "y\n")]), &base).await;
    assert!(matches!(result, Err(Error::Rejected { .. })), "{result:?}");
    let result = unified_diff(&Changeset::new("s", vec![FileChange::write("../escape", "y\n")]), &base).await;
    assert!(matches!(result, Err(Error::Rejected { .. })), "{result:?}");
}

/// The patch is one `git apply` accepts, and applying it to the base gives the changed files.
#[tokio::test]
async fn git_applies_the_patch() {
    let base_files = [
        ("README.md", numbered(1..=30)),
        ("src/lib.rs", "pub fn a() {}\n".to_owned()),
        ("docs/old.md", "gone\n".to_owned()),
        ("with space.txt", "before\n".to_owned()),
        ("no-newline.txt", "end".to_owned()),
    ];
    let base = MemoryRepoView::from_files(base_files.clone());
    let readme = numbered(1..=30).replace("line 2\n", "line two\n").replace("line 29\n", "line 29\nline 29.5\n");
    let changes = Changeset::new(
        "all kinds",
        vec![
            FileChange::write("README.md", readme.clone()),
            FileChange::write("src/lib.rs", "pub fn a() {}\npub fn b() {}\n"),
            FileChange::write("src/new/mod.rs", "// new\n"),
            FileChange::delete("docs/old.md"),
            FileChange::write("with space.txt", "after\n"),
            FileChange::write("no-newline.txt", "end\nmore"),
        ],
    );
    let diff = unified_diff(&changes, &base).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    for (path, content) in &base_files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    std::fs::write(dir.path().join("change.patch"), &diff.patch).unwrap();
    let output = std::process::Command::new("git")
        .args(["apply", "--verbose", "change.patch"])
        .current_dir(dir.path())
        .output()
        .expect("git runs");
    assert!(output.status.success(), "{}\n{}", String::from_utf8_lossy(&output.stderr), diff.patch);
    let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).ok();
    assert_eq!(read("README.md").as_deref(), Some(readme.as_str()));
    assert_eq!(read("src/lib.rs").as_deref(), Some("pub fn a() {}\npub fn b() {}\n"));
    assert_eq!(read("src/new/mod.rs").as_deref(), Some("// new\n"));
    assert_eq!(read("docs/old.md"), None);
    assert_eq!(read("with space.txt").as_deref(), Some("after\n"));
    assert_eq!(read("no-newline.txt").as_deref(), Some("end\nmore"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_diff_compares_its_changeset_with_the_default_branch_on_sqlite() {
    a_job_diff_compares_its_changeset_with_the_default_branch(&support::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_diff_compares_its_changeset_with_the_default_branch_on_postgres() {
    a_job_diff_compares_its_changeset_with_the_default_branch(&support::postgres().await).await;
}

async fn a_job_diff_compares_its_changeset_with_the_default_branch(h: &support::Harness) {
    let (org, _, admin) = h.org_with_admin("Acme").await;
    h.core.github_intake().link_installation(org.id, InstallationId::new(1).unwrap(), None, "operator").await.unwrap();
    let repo = NewRepo {
        full_name: "acme/app".into(),
        source: RepoSource::Github {
            installation_id: InstallationId::new(1).unwrap(),
            repo_id: GithubRepoId::new(2).unwrap(),
        },
        default_branch: Some("trunk".into()),
        settings: None,
    };
    let repo = h.core.create_repo(&admin, org.id, repo).await.unwrap();
    let forge = MemoryForge::new();
    forge.add_repo("acme/app", "trunk", [("src/lib.rs", "pub fn a() {}\n"), ("old.txt", "old\n")]);

    let issue = IssueRef { number: Some(7), title: "Add b".into(), body: String::new(), url: None, author: None };
    let new = NewJob { repo_id: repo.id, issue, trigger: Trigger::Api, max_tokens: None, max_cost_micros: None };
    let job = h.core.create_job(&admin, org.id, new).await.unwrap();

    // Before the coder has written anything, there is nothing to show.
    let early = h.core.job_diff(&admin, org.id, job.id, &forge).await;
    let expected = format!("job {} has no changeset yet (it is queued)", job.id);
    assert!(matches!(&early, Err(Error::Conflict(m)) if *m == expected), "{early:?}");

    // The worker writes the changeset with its move to REVIEWING.
    let changeset = Changeset::new(
        "Add b",
        vec![FileChange::write("src/lib.rs", "pub fn a() {}\npub fn b() {}\n"), FileChange::delete("old.txt")],
    );
    let mut current = h.store.claim_next("w1", chrono::Duration::seconds(60)).await.unwrap().unwrap();
    for state in [JobState::Planning, JobState::Coding, JobState::Reviewing] {
        let fence = Fence { worker: "w1".into(), epoch: current.epoch, state: current.state };
        let changeset = (state == JobState::Reviewing).then(|| Some(serde_json::to_value(&changeset).unwrap()));
        let update = JobUpdate { state: Some(state), changeset, ..Default::default() };
        current = h.store.update_job(org.id, job.id, &fence, update).await.unwrap().0;
    }

    let viewer = Actor::user(h.user("viewer").await, org.id, Role::Viewer);
    let diff = h.core.job_diff(&viewer, org.id, job.id, &forge).await.unwrap();
    assert_eq!((diff.job_id, diff.base_branch.as_str()), (job.id, "trunk"));
    assert_eq!(
        diff.files,
        [file("old.txt", DiffStatus::Deleted, 0, 1, false), file("src/lib.rs", DiffStatus::Modified, 1, 0, false)]
    );
    let base = forge.repo_view(&repo).await.unwrap();
    let direct = unified_diff(&changeset, base.as_ref()).await.unwrap();
    assert_eq!(diff.patch, direct.patch);
    assert!(diff.patch.contains("+pub fn b() {}\n"), "{}", diff.patch);
    let json = serde_json::to_value(&diff).unwrap();
    assert_eq!(json["files"][0]["status"], "deleted");
    assert_eq!(json["job_id"], job.id.to_string());

    // Another org's actor cannot see it; an unknown job is not found.
    let (other, _, other_admin) = h.org_with_admin("Other").await;
    let theirs = h.core.job_diff(&other_admin, org.id, job.id, &forge).await;
    assert!(matches!(theirs, Err(Error::NotFound { .. })), "{theirs:?}");
    let unknown = h.core.job_diff(&other_admin, other.id, job.id, &forge).await;
    assert!(matches!(unknown, Err(Error::NotFound { kind: "job" })), "{unknown:?}");
    let missing = h.core.job_diff(&admin, org.id, JobId::new(), &forge).await;
    assert!(matches!(missing, Err(Error::NotFound { kind: "job" })), "{missing:?}");

    // A forge that lost the repository refuses.
    let lost = h.core.job_diff(&admin, org.id, job.id, &MemoryForge::new()).await;
    assert!(matches!(lost, Err(Error::Rejected { .. })), "{lost:?}");
}
