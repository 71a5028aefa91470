//! The forge conformance suite (`aicd-core/tests/support/forge_suite.rs`, the same one the
//! built-in forges pass) against `GitHubForge` on the fake GitHub, which keeps state and enforces
//! GitHub's documented rules (its limits on titles and bodies among them).

#[path = "../../aicd-core/tests/support/forge_suite.rs"]
mod suite;

use std::collections::BTreeMap;
use std::sync::Arc;

use aicd_agent_api::RepoViewLimits;
use aicd_core::forge::Forge;
use aicd_core::github::{GithubRepoId, GithubRepoInfo, InstallationId};
use aicd_core::jobs::PullRequestRef;
use aicd_core::repos::{NewRepo, RepoSource, Repository};
use aicd_core::store::{RepoStore, SqlStore};
use aicd_core::tenancy::NewOrg;
use aicd_core::{Core, CoreOptions};
use aicd_github::{AppCredentials, GitHubForge, InstallationTokens};
use aicd_testkit::TestSqlite;
use aicd_testkit::github::{APP_ID, FULL_NAME, FakeGitHub, INSTALLATION, REPO_ID};
use suite::{ForgeHarness, seed};

/// `GitHubForge` over the fake, with `acme/widgets` registered (and its installation linked) in a
/// SQLite store, and `main` holding the suite's seed.
struct GitHub {
    forge: GitHubForge,
    fake: FakeGitHub,
    repo: Repository,
    /// A repository of the same organization whose installation is not linked.
    unlinked: Repository,
    _db: TestSqlite,
}

async fn github() -> GitHub {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let keys = aicd_testkit::rsa_key_pair();
    let fake = FakeGitHub::start(&keys.public_pem).await;
    fake.reset_main(seed());
    let db = TestSqlite::new();
    let store = Arc::new(SqlStore::sqlite(db.path()).await.unwrap());
    let core = Core::new(store.clone(), CoreOptions::default());
    let (org, _, _) =
        core.bootstrap_org(NewOrg { name: "Acme".into(), max_concurrent_jobs: None, settings: None }).await.unwrap();
    let installation = InstallationId::from_u64(INSTALLATION).unwrap();
    let intake = core.github_intake();
    intake.link_installation(org.id, installation, Some("acme".into()), "operator").await.unwrap();
    let info = GithubRepoInfo {
        repo_id: GithubRepoId::from_u64(REPO_ID).unwrap(),
        full_name: FULL_NAME.into(),
        default_branch: None,
    };
    let repo = intake.sync_github_repos(org.id, installation, &[info], &[]).await.unwrap().upserted.remove(0);
    let unlinked = NewRepo {
        full_name: "acme/elsewhere".into(),
        source: RepoSource::Github {
            installation_id: InstallationId::new(77).unwrap(),
            repo_id: GithubRepoId::new(78).unwrap(),
        },
        default_branch: None,
        settings: None,
    };
    let unlinked = store.create_repo(org.id, unlinked).await.unwrap();
    let tokens = InstallationTokens::new(AppCredentials::new(APP_ID, &keys.private_pem).unwrap(), &fake.uri()).unwrap();
    GitHub { forge: GitHubForge::new(tokens, store), fake, repo, unlinked, _db: db }
}

impl ForgeHarness for GitHub {
    fn forge(&self) -> &dyn Forge {
        &self.forge
    }

    fn repo(&self) -> &Repository {
        &self.repo
    }

    fn limited(&self, limits: RepoViewLimits) -> Box<dyn Forge> {
        Box::new(self.forge.clone().with_view_limits(limits))
    }

    fn unknown_repo(&self) -> Repository {
        self.unlinked.clone()
    }

    fn branch_files(&self, branch: &str) -> Option<BTreeMap<String, Vec<u8>>> {
        self.fake.branch_files(branch)
    }

    fn commits_on(&self, branch: &str) -> usize {
        self.fake.commits_ahead_of_main(branch).expect("the branch exists")
    }

    async fn pull_requests(&self) -> Vec<PullRequestRef> {
        let pulls = self.fake.pulls();
        pulls.iter().map(|p| PullRequestRef { number: p.number, url: p.html_url(), branch: p.head.clone() }).collect()
    }

    async fn comments(&self, issue: u64) -> Vec<String> {
        self.fake.comments_on(issue).iter().map(|c| c.body().to_owned()).collect()
    }

    fn knows_comment_issues(&self) -> bool {
        false
    }
}

forge_conformance!(github_forge, crate::github());
