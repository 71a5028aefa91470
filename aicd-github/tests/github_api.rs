//! The App's authentication, the REST client and the GitHub forge against a mock GitHub
//! (wiremock): the JWT and the token exchange, the token cache, tree and blob reads, the publish
//! sequence and its retry, and how GitHub's errors map.

use std::time::Duration;

use aicd_agent_api::{Changeset, FileChange, RepoViewError, RepoViewLimits};
use aicd_core::forge::{CommentId, Forge, NewPullRequest};
use aicd_core::repos::{RepoSource, Repository};
use aicd_github::{AppCredentials, InstallationTokens, RepoPermission};
use base64::Engine;
use chrono::{TimeDelta, Utc};
use serde_json::{Value, json};
use sha2::Digest;
use wiremock::matchers::{body_partial_json, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

mod api_support;

use api_support::*;

#[tokio::test]
async fn the_app_jwt_is_exchanged_for_an_installation_token() {
    let (server, tokens) = github().await;
    mount_token(&server, INSTALLATION, TimeDelta::hours(1)).await;

    let token = tokens.token(scope(INSTALLATION)).await.unwrap();
    assert_eq!(token.secret(), TOKEN);
    assert!(!format!("{token:?}").contains(TOKEN));

    let requests = server.received_requests().await.unwrap();
    let [mint] = requests.as_slice() else { panic!("{requests:?}") };
    assert_eq!(mint.method.as_str(), "POST");
    assert_eq!(mint.url.path(), format!("/app/installations/{INSTALLATION}/access_tokens"));
    assert_eq!(mint.headers["accept"], "application/vnd.github+json");
    assert_eq!(mint.headers["x-github-api-version"], "2022-11-28");
    let auth = mint.headers["authorization"].to_str().unwrap();
    let jwt = auth.strip_prefix("Bearer ").unwrap();

    // RS256, verifiable with the App's public key, with the claims GitHub requires.
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(key_pair().1.as_bytes()).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[APP_ID.to_string()]);
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation).unwrap().claims;
    let now = Utc::now().timestamp();
    let iat = claims["iat"].as_i64().unwrap();
    let exp = claims["exp"].as_i64().unwrap();
    assert!((now - 65..=now - 55).contains(&iat), "iat {iat}, now {now}");
    assert!(exp <= now + 600, "exp {exp}, now {now}");
    assert!(exp > now + 480, "exp {exp}, now {now}");
    assert_eq!(claims["iss"], APP_ID.to_string());

    // A JWT made with another key does not verify.
    let (other_private, _) = {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        let k = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        (k.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap().to_string(), ())
    };
    let forged = AppCredentials::new(APP_ID, &other_private).unwrap().app_jwt().unwrap();
    assert!(jsonwebtoken::decode::<Value>(&forged, &key, &validation).is_err());
}

#[tokio::test]
async fn credentials_and_tokens_never_print_their_secrets() {
    let (server, tokens) = github().await;
    mount_token(&server, INSTALLATION, TimeDelta::hours(1)).await;
    let token = tokens.token(scope(INSTALLATION)).await.unwrap();
    let pem = &key_pair().0;
    let key_body = pem.lines().nth(1).unwrap();
    for printed in [
        format!("{:?}", credentials()),
        format!("{tokens:?}"),
        format!("{token:?}"),
        format!("{:?}", tokens.client(scope(INSTALLATION))),
        format!("{:?}", setup(&tokens).await.forge),
    ] {
        assert!(!printed.contains(TOKEN), "{printed}");
        assert!(!printed.contains(key_body), "{printed}");
    }
    assert!(format!("{:?}", credentials()).contains(&APP_ID.to_string()));
}

#[tokio::test]
async fn tokens_are_cached_shared_by_concurrent_callers_and_reminted_near_expiry() {
    let (server, tokens) = github().await;
    mount_token(&server, INSTALLATION, TimeDelta::hours(1)).await;

    // Two calls, one mint.
    tokens.token(scope(INSTALLATION)).await.unwrap();
    tokens.token(scope(INSTALLATION)).await.unwrap();
    assert_eq!(mints(&server).await, 1);

    // Concurrent callers of a new installation share one mint.
    mount_token(&server, 43, TimeDelta::hours(1)).await;
    let calls = (0..8).map(|_| {
        let tokens = tokens.clone();
        tokio::spawn(async move { tokens.token(scope(43)).await.unwrap() })
    });
    for call in calls.collect::<Vec<_>>() {
        assert_eq!(call.await.unwrap().secret(), TOKEN);
    }
    assert_eq!(mints(&server).await, 2);

    // A token with less than five minutes left is replaced at once.
    mount_token(&server, 44, TimeDelta::minutes(4)).await;
    tokens.token(scope(44)).await.unwrap();
    tokens.token(scope(44)).await.unwrap();
    assert_eq!(mints(&server).await, 4);

    // Other installations are untouched.
    tokens.token(scope(INSTALLATION)).await.unwrap();
    assert_eq!(mints(&server).await, 4);
}

#[tokio::test]
async fn a_refused_mint_says_why() {
    let (server, tokens) = github().await;
    mock(&server, "POST", "/app/installations/9/access_tokens", json_response(404, json!({"message": "Not Found"})))
        .await;
    let err = tokens.token(scope(9)).await.unwrap_err();
    assert!(
        matches!(&err, aicd_core::Error::Rejected { service: "github", message } if message.contains("installation 9")),
        "{err}"
    );

    mock(&server, "POST", "/app/installations/10/access_tokens", json_response(502, json!({"message": "Bad gateway"})))
        .await;
    let err = tokens.token(scope(10)).await.unwrap_err();
    assert!(matches!(err, aicd_core::Error::Unavailable { service: "github", .. }), "{err}");
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// base64 wrapped at 60 columns, as GitHub sends blobs.
fn wrapped_b64(bytes: &[u8]) -> String {
    let plain = b64(bytes);
    plain.as_bytes().chunks(60).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("\n") + "\n"
}

fn tree_item(path: &str, kind: &str, sha: &str, size: Option<u64>) -> Value {
    let mode = match kind {
        "tree" => "040000",
        "commit" => "160000",
        _ => "100644",
    };
    let mut item = json!({ "path": path, "mode": mode, "type": kind, "sha": sha, "url": format!("https://api.github.com/x/{sha}") });
    if let Some(size) = size {
        item["size"] = json!(size);
    }
    item
}

#[tokio::test]
async fn repo_view_lists_the_tree_and_reads_blobs_lazily_within_its_limits() {
    let (server, tokens) = github().await;
    mount_token(&server, INSTALLATION, TimeDelta::hours(1)).await;
    let binary = vec![0xff, 0x00, 0xfe, b'a', b'\n'];
    let readme = "# Hello\n".repeat(20);
    Mock::given(method("GET"))
        .and(path(format!("{REPO}/git/trees/main")))
        .and(query_param("recursive", "1"))
        .respond_with(json_response(
            200,
            json!({
                "sha": "root", "url": "https://api.github.com/x", "truncated": false,
                "tree": [
                    tree_item("README.md", "blob", "readme-sha", Some(readme.len() as u64)),
                    tree_item("assets", "tree", "assets-tree", None),
                    tree_item("assets/logo.bin", "blob", "bin-sha", Some(binary.len() as u64)),
                    tree_item("big.dat", "blob", "big-sha", Some(5_000_000)),
                    tree_item("vendor/lib", "commit", "submodule-commit", None),
                ]
            }),
        ))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{REPO}/git/blobs/bin-sha")))
        .respond_with(json_response(
            200,
            json!({"sha": "bin-sha", "node_id": "x", "size": binary.len(), "url": "u", "content": wrapped_b64(&binary), "encoding": "base64"}),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{REPO}/git/blobs/readme-sha")))
        .respond_with(json_response(
            200,
            json!({"sha": "readme-sha", "size": readme.len(), "content": wrapped_b64(readme.as_bytes()), "encoding": "base64"}),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let Setup { forge, repo, _db, .. } = setup(&tokens).await;
    let view = forge.repo_view(&repo).await.unwrap();
    assert_eq!(view.list_files().await.unwrap(), ["README.md", "assets/logo.bin", "big.dat"]);
    assert_eq!(view.read_file("assets/logo.bin").await.unwrap(), Some(binary));
    assert_eq!(view.read_file("README.md").await.unwrap(), Some(readme.into_bytes()));
    assert_eq!(view.read_file("nope.txt").await.unwrap(), None);
    assert_eq!(view.read_file("assets").await.unwrap(), None, "a directory is not a file");
    assert!(matches!(
        view.read_file("big.dat").await,
        Err(RepoViewError::FileTooLarge { size: 5_000_000, limit: 1_048_576, .. })
    ));
    assert!(matches!(view.read_file("../etc/passwd").await, Err(RepoViewError::InvalidPath { .. })));

    // Every request carried the installation token.
    for request in server.received_requests().await.unwrap().iter().filter(|r| r.url.path().starts_with("/repos/")) {
        assert_eq!(request.headers["authorization"], format!("Bearer {TOKEN}"));
        assert_eq!(request.headers["x-github-api-version"], "2022-11-28");
    }

    // Bounded in file count.
    let small = forge.with_view_limits(RepoViewLimits { max_files: 2, max_file_bytes: 1024 });
    let view = small.repo_view(&repo).await.unwrap();
    assert_eq!(view.list_files().await, Err(RepoViewError::TooManyFiles { count: 3, limit: 2 }));
}

#[tokio::test]
async fn a_truncated_tree_is_listed_as_far_as_it_goes_and_files_are_found_by_walking() {
    let (server, tokens) = github().await;
    mount_token(&server, INSTALLATION, TimeDelta::hours(1)).await;
    Mock::given(method("GET"))
        .and(path(format!("{REPO}/git/trees/main")))
        .and(query_param("recursive", "1"))
        .respond_with(json_response(
            200,
            json!({"sha": "root", "truncated": true, "tree": [tree_item("a.txt", "blob", "a-sha", Some(1))]}),
        ))
        .mount(&server)
        .await;
    mock(&server, "GET", &format!("{REPO}/git/trees/root"), json_response(200, json!({"sha": "root", "truncated": false, "tree": [tree_item("a.txt", "blob", "a-sha", Some(1)), tree_item("dir", "tree", "dir-sha", None)]}))).await;
    mock(
        &server,
        "GET",
        &format!("{REPO}/git/trees/dir-sha"),
        json_response(
            200,
            json!({"sha": "dir-sha", "truncated": false, "tree": [tree_item("b.txt", "blob", "b-sha", Some(2))]}),
        ),
    )
    .await;
    mock(
        &server,
        "GET",
        &format!("{REPO}/git/blobs/b-sha"),
        json_response(200, json!({"content": b64(b"b\n"), "encoding": "base64"})),
    )
    .await;

    let Setup { forge, repo, _db, .. } = setup(&tokens).await;
    let view = forge.repo_view(&repo).await.unwrap();
    assert_eq!(view.list_files().await.unwrap(), ["a.txt"]);
    assert_eq!(view.read_file("dir/b.txt").await.unwrap(), Some(b"b\n".to_vec()));
    assert_eq!(view.read_file("dir/c.txt").await.unwrap(), None);
}

#[tokio::test]
async fn a_view_stops_reading_once_its_installation_is_unlinked() {
    let (server, tokens) = github().await;
    mount_token(&server, INSTALLATION, TimeDelta::hours(1)).await;
    let tree = json!({"sha": "root", "truncated": false, "tree": [tree_item("a.txt", "blob", "a-sha", Some(1))]});
    Mock::given(method("GET"))
        .and(path(format!("{REPO}/git/trees/main")))
        .respond_with(json_response(200, tree))
        .mount(&server)
        .await;
    let blob = json!({"sha": "a-sha", "size": 1, "content": wrapped_b64(b"a"), "encoding": "base64"});
    mock(&server, "GET", &format!("{REPO}/git/blobs/a-sha"), json_response(200, blob)).await;
    let Setup { forge, repo, core, _db } = setup(&tokens).await;
    let forge = forge.with_access_recheck(Duration::ZERO);
    let view = forge.repo_view(&repo).await.unwrap();
    assert_eq!(view.read_file("a.txt").await.unwrap(), Some(b"a".to_vec()));

    // The installation is unlinked while the view is open (a job step in progress).
    let installation = aicd_core::github::InstallationId::from_u64(INSTALLATION).unwrap();
    core.github_intake().remove_installation(installation).await.unwrap();
    let blob_reads = || async {
        let requests = server.received_requests().await.unwrap();
        requests.iter().filter(|r| r.url.path().contains("/git/blobs/")).count()
    };
    let before = blob_reads().await;
    assert!(matches!(view.read_file("a.txt").await, Err(RepoViewError::Inaccessible(_))));
    assert_eq!(blob_reads().await, before, "GitHub is not asked again");

    // Reached again, but through another installation: this view's token is not that access.
    let other = aicd_core::github::InstallationId::from_u64(43).unwrap();
    let intake = core.github_intake();
    intake.link_installation(repo.org_id, other, None, "operator").await.unwrap();
    let info = aicd_core::github::GithubRepoInfo {
        repo_id: aicd_core::github::GithubRepoId::new(7).unwrap(),
        full_name: "octo/hello".into(),
        default_branch: None,
    };
    intake.sync_github_repos(repo.org_id, other, &[info], &[]).await.unwrap();
    match view.read_file("a.txt").await {
        Err(RepoViewError::Inaccessible(message)) => assert!(message.contains("another installation"), "{message}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(blob_reads().await, before);
}

/// Answers `POST .../git/blobs` with a sha derived from the content, as GitHub does.
struct BlobSha;

impl Respond for BlobSha {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = request.body_json().unwrap();
        let digest = sha2::Sha256::digest(body["content"].as_str().unwrap().as_bytes());
        json_response(201, json!({ "sha": hex::encode(digest)[..40].to_owned(), "url": "u" }))
    }
}

fn blob_sha(content: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b64(content).as_bytes()))[..40].to_owned()
}

fn changeset() -> Changeset {
    Changeset::new(
        "Add a greeting",
        vec![
            FileChange::write("hello.txt", "Hello, world!\n"),
            FileChange::write("assets/logo.bin", vec![0xff, 0x00, 0xfe]),
            FileChange::write("run.sh", "#!/bin/sh\necho hi\n"),
            FileChange::delete("old.txt"),
        ],
    )
}

const MESSAGE: &str = "Add a greeting (#7)\n\nAdd a greeting\n\nAI-CD job 0190";

fn base_tree() -> Value {
    json!({
        "sha": "tree0", "truncated": false,
        "tree": [
            tree_item("README.md", "blob", "readme-sha", Some(8)),
            tree_item("old.txt", "blob", "old-sha", Some(3)),
            { "path": "run.sh", "mode": "100755", "type": "blob", "sha": "run-sha", "size": 10 },
        ]
    })
}

fn new_pull_request() -> NewPullRequest {
    NewPullRequest {
        branch: BRANCH.into(),
        title: "Add a greeting (#7)".into(),
        body: "## Plan\n\nWrite hello.txt\n".into(),
        issue_number: Some(7),
    }
}

/// A GitHub on which `main` is at `base0` (tree `tree0`).
async fn mount_base(server: &MockServer) {
    mount_token(server, INSTALLATION, TimeDelta::hours(1)).await;
    mock(
        server,
        "GET",
        &format!("{REPO}/git/ref/heads/main"),
        json_response(200, json!({"ref": "refs/heads/main", "object": {"sha": "base0", "type": "commit"}})),
    )
    .await;
    mock(
        server,
        "GET",
        &format!("{REPO}/git/commits/base0"),
        json_response(
            200,
            json!({"sha": "base0", "tree": {"sha": "tree0"}, "message": "Initial commit\n", "parents": []}),
        ),
    )
    .await;
    Mock::given(method("GET"))
        .and(path(format!("{REPO}/git/trees/tree0")))
        .and(query_param("recursive", "1"))
        .respond_with(json_response(200, base_tree()))
        .mount(server)
        .await;
    Mock::given(method("POST")).and(path(format!("{REPO}/git/blobs"))).respond_with(BlobSha).mount(server).await;
}

#[tokio::test]
async fn publishing_creates_branch_blobs_tree_commit_ref_and_pull_request_in_order() {
    let (server, tokens) = github().await;
    mount_base(&server).await;
    mock(
        &server,
        "POST",
        &format!("{REPO}/git/refs"),
        json_response(201, json!({"ref": format!("refs/heads/{BRANCH}"), "object": {"sha": "base0"}})),
    )
    .await;
    mock(
        &server,
        "GET",
        &format!("{REPO}/git/ref/heads/{BRANCH}"),
        json_response(200, json!({"ref": format!("refs/heads/{BRANCH}"), "object": {"sha": "base0"}})),
    )
    .await;
    mock(&server, "POST", &format!("{REPO}/git/trees"), json_response(201, json!({"sha": "tree1"}))).await;
    mock(
        &server,
        "POST",
        &format!("{REPO}/git/commits"),
        json_response(201, json!({"sha": "commit1", "tree": {"sha": "tree1"}})),
    )
    .await;
    mock(
        &server,
        "PATCH",
        &format!("{REPO}/git/refs/heads/{BRANCH}"),
        json_response(200, json!({"object": {"sha": "commit1"}})),
    )
    .await;
    Mock::given(method("GET"))
        .and(path(format!("{REPO}/pulls")))
        .and(query_param("head", format!("octo:{BRANCH}")))
        .and(query_param("state", "open"))
        .respond_with(json_response(200, json!([])))
        .mount(&server)
        .await;
    mock(&server, "POST", &format!("{REPO}/pulls"), json_response(201, json!({"number": 12, "html_url": "https://github.com/octo/hello/pull/12", "state": "open", "head": {"ref": BRANCH, "sha": "commit1"}}))).await;

    let Setup { forge, repo, _db, .. } = setup(&tokens).await;
    let branch = forge.create_branch(&repo, BRANCH).await.unwrap();
    assert_eq!((branch.name.as_str(), branch.head.as_str()), (BRANCH, "base0"));
    let head = forge.commit_changes(&repo, BRANCH, &changeset(), MESSAGE).await.unwrap();
    assert_eq!(head.head, "commit1");
    let pr = forge.open_pull_request(&repo, &new_pull_request()).await.unwrap();
    assert_eq!((pr.number, pr.url.as_str(), pr.branch.as_str()), (12, "https://github.com/octo/hello/pull/12", BRANCH));

    let calls = api_calls(&server).await;
    let steps: Vec<String> = calls.iter().map(|(m, p, _)| format!("{m} {p}")).collect();
    let expected = [
        format!("GET {REPO}/git/ref/heads/main"),
        format!("POST {REPO}/git/refs"),
        format!("GET {REPO}/git/ref/heads/{BRANCH}"),
        format!("GET {REPO}/git/commits/base0"),
        format!("GET {REPO}/git/trees/tree0?recursive=1"),
        format!("POST {REPO}/git/blobs"),
        format!("POST {REPO}/git/blobs"),
        format!("POST {REPO}/git/blobs"),
        format!("POST {REPO}/git/trees"),
        format!("POST {REPO}/git/commits"),
        format!("PATCH {REPO}/git/refs/heads/{BRANCH}"),
        format!("GET {REPO}/pulls?head=octo%3A{}&state=open&per_page=100", BRANCH.replace('/', "%2F")),
        format!("POST {REPO}/pulls"),
    ];
    assert_eq!(steps, expected);
    let body = |i: usize| &calls[i].2;

    assert_eq!(body(1), &json!({"ref": format!("refs/heads/{BRANCH}"), "sha": "base0"}));
    // Blobs in base64, so non-UTF-8 content survives.
    assert_eq!(body(5), &json!({"content": b64(b"Hello, world!\n"), "encoding": "base64"}));
    assert_eq!(body(6), &json!({"content": b64(&[0xff, 0x00, 0xfe]), "encoding": "base64"}));
    // The tree: on the head's tree, new files as regular files, the executable kept, a delete as
    // sha null.
    let tree = body(8);
    assert_eq!(tree["base_tree"], "tree0");
    let mut entries = tree["tree"].as_array().unwrap().clone();
    entries.sort_by_key(|e| e["path"].as_str().unwrap().to_owned());
    assert_eq!(
        entries,
        vec![
            json!({"path": "assets/logo.bin", "mode": "100644", "type": "blob", "sha": blob_sha(&[0xff, 0x00, 0xfe])}),
            json!({"path": "hello.txt", "mode": "100644", "type": "blob", "sha": blob_sha(b"Hello, world!\n")}),
            json!({"path": "old.txt", "mode": "100644", "type": "blob", "sha": null}),
            json!({"path": "run.sh", "mode": "100755", "type": "blob", "sha": blob_sha(b"#!/bin/sh\necho hi\n")}),
        ]
    );
    assert_eq!(body(9), &json!({"message": format!("{MESSAGE}\n"), "tree": "tree1", "parents": ["base0"]}));
    assert_eq!(body(10), &json!({"sha": "commit1", "force": false}));
    let pr = body(12);
    assert_eq!((pr["head"].as_str(), pr["base"].as_str()), (Some(BRANCH), Some("main")));
    assert_eq!(pr["title"], "Add a greeting (#7)");
    assert!(pr["body"].as_str().unwrap().contains("Closes #7"), "{pr}");
    assert!(pr["body"].as_str().unwrap().starts_with("## Plan"), "{pr}");
}

#[tokio::test]
async fn a_retried_publish_makes_no_second_commit_or_pull_request() {
    let (server, tokens) = github().await;
    mount_base(&server).await;
    // The first attempt got as far as the pull request: the branch exists at its commit.
    mock(&server, "POST", &format!("{REPO}/git/refs"), json_response(422, json!({"message": "Reference already exists", "documentation_url": "https://docs.github.com/rest/git/refs#create-a-reference"}))).await;
    mock(
        &server,
        "GET",
        &format!("{REPO}/git/ref/heads/{BRANCH}"),
        json_response(200, json!({"ref": format!("refs/heads/{BRANCH}"), "object": {"sha": "commit1"}})),
    )
    .await;
    mock(&server, "GET", &format!("{REPO}/git/commits/commit1"), json_response(200, json!({"sha": "commit1", "tree": {"sha": "tree1"}, "message": format!("{MESSAGE}\n"), "parents": [{"sha": "base0"}]}))).await;
    Mock::given(method("POST"))
        .and(path(format!("{REPO}/git/trees")))
        .and(body_partial_json(json!({"base_tree": "tree0"})))
        .respond_with(json_response(201, json!({"sha": "tree1"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{REPO}/pulls")))
        .and(query_param("head", format!("octo:{BRANCH}")))
        .respond_with(json_response(200, json!([{"number": 12, "html_url": "https://github.com/octo/hello/pull/12", "state": "open", "head": {"ref": BRANCH}}])))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{REPO}/git/commits")))
        .respond_with(json_response(201, json!({"sha": "commit2"})))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!("{REPO}/git/refs/heads/{BRANCH}")))
        .respond_with(json_response(200, json!({})))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{REPO}/pulls")))
        .respond_with(json_response(201, json!({})))
        .expect(0)
        .mount(&server)
        .await;

    let Setup { forge, repo, _db, .. } = setup(&tokens).await;
    let branch = forge.create_branch(&repo, BRANCH).await.unwrap();
    assert_eq!(branch.head, "commit1", "the existing branch is reused as it is");
    let head = forge.commit_changes(&repo, BRANCH, &changeset(), MESSAGE).await.unwrap();
    assert_eq!(head.head, "commit1", "the commit already made is returned");
    let pr = forge.open_pull_request(&repo, &new_pull_request()).await.unwrap();
    assert_eq!(pr.number, 12);
    server.verify().await;
}

#[tokio::test]
async fn a_changeset_already_on_the_branch_makes_no_empty_commit() {
    let (server, tokens) = github().await;
    mount_token(&server, INSTALLATION, TimeDelta::hours(1)).await;
    // `old.txt` already holds exactly what the changeset writes.
    let mut tree = base_tree();
    tree["tree"][1]["sha"] = json!(blob_sha(b"old"));
    mock(
        &server,
        "GET",
        &format!("{REPO}/git/ref/heads/{BRANCH}"),
        json_response(200, json!({"object": {"sha": "base0"}})),
    )
    .await;
    mock(
        &server,
        "GET",
        &format!("{REPO}/git/commits/base0"),
        json_response(
            200,
            json!({"sha": "base0", "tree": {"sha": "tree0"}, "message": "Initial commit\n", "parents": []}),
        ),
    )
    .await;
    mock(&server, "GET", &format!("{REPO}/git/trees/tree0"), json_response(200, tree)).await;
    Mock::given(method("POST")).and(path(format!("{REPO}/git/blobs"))).respond_with(BlobSha).mount(&server).await;
    Mock::given(method("POST"))
        .and(path(format!("{REPO}/git/trees")))
        .respond_with(json_response(201, json!({"sha": "x"})))
        .expect(0)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{REPO}/git/commits")))
        .respond_with(json_response(201, json!({"sha": "x"})))
        .expect(0)
        .mount(&server)
        .await;

    let unchanged = Changeset::new("noop", vec![FileChange::write("old.txt", "old")]);
    let Setup { forge, repo, _db, .. } = setup(&tokens).await;
    let head = forge.commit_changes(&repo, BRANCH, &unchanged, "Same content").await.unwrap();
    assert_eq!(head.head, "base0");
    server.verify().await;
}

#[tokio::test]
async fn the_forge_refuses_what_the_other_forges_refuse_before_calling_github() {
    let (server, tokens) = github().await;
    mount_base(&server).await;
    mock(
        &server,
        "GET",
        &format!("{REPO}/git/ref/heads/{BRANCH}"),
        json_response(200, json!({"object": {"sha": "base0"}})),
    )
    .await;
    let Setup { forge, repo, _db, .. } = setup(&tokens).await;
    let invalid = |r: aicd_core::Result<_>| matches!(r, Err(aicd_core::Error::InvalidInput(_)));
    assert!(invalid(forge.create_branch(&repo, "bad name").await.map(|_| ())));
    assert!(invalid(forge.commit_changes(&repo, "main", &changeset(), MESSAGE).await.map(|_| ())));
    assert!(invalid(forge.commit_changes(&repo, BRANCH, &Changeset::default(), MESSAGE).await.map(|_| ())));
    assert!(invalid(forge.commit_changes(&repo, BRANCH, &changeset(), " \n").await.map(|_| ())));
    let missing = Changeset::new("x", vec![FileChange::delete("not-there.txt")]);
    assert!(invalid(forge.commit_changes(&repo, BRANCH, &missing, MESSAGE).await.map(|_| ())));
    assert!(invalid(forge.post_comment(&repo, 7, "  ").await.map(|_| ())));
    let local = Repository { source: RepoSource::Local { path: "/tmp/x".into() }, ..repo.clone() };
    assert!(matches!(forge.repo_view(&local).await.map(|_| ()), Err(aicd_core::Error::Rejected { .. })));
    // Nothing was written.
    let writes = api_calls(&server).await.into_iter().filter(|(m, _, _)| m != "GET").count();
    assert_eq!(writes, 0);
}

#[tokio::test]
async fn comments_are_posted_and_edited_and_permissions_read() {
    let (server, tokens) = github().await;
    mount_token(&server, INSTALLATION, TimeDelta::hours(1)).await;
    mock(
        &server,
        "POST",
        &format!("{REPO}/issues/7/comments"),
        json_response(201, json!({"id": 555, "body": "hi", "html_url": "x"})),
    )
    .await;
    mock(&server, "PATCH", &format!("{REPO}/issues/comments/555"), json_response(200, json!({"id": 555}))).await;
    mock(&server, "PATCH", &format!("{REPO}/issues/comments/556"), json_response(404, json!({"message": "Not Found"})))
        .await;
    mock(&server, "GET", REPO, json_response(200, json!({"id": 7, "full_name": "octo/hello"}))).await;
    mock(
        &server,
        "GET",
        &format!("{REPO}/collaborators/mona/permission"),
        json_response(200, json!({"permission": "write", "role_name": "maintain", "user": {"login": "mona"}})),
    )
    .await;
    mock(
        &server,
        "GET",
        &format!("{REPO}/collaborators/guest/permission"),
        json_response(200, json!({"permission": "read", "role_name": "custom-reader", "user": {"login": "guest"}})),
    )
    .await;

    let Setup { forge, repo, _db, .. } = setup(&tokens).await;
    let id = forge.post_comment(&repo, 7, "**AI-CD** · queued").await.unwrap();
    assert_eq!(id, CommentId(555));
    forge.update_comment(&repo, 7, id, "**AI-CD** · planning").await.unwrap();
    let calls = api_calls(&server).await;
    assert_eq!(calls[0].2, json!({"body": "**AI-CD** · queued"}));
    assert_eq!(calls[1].2, json!({"body": "**AI-CD** · planning"}));
    let gone = forge.update_comment(&repo, 7, CommentId(556), "x").await;
    assert!(matches!(gone, Err(aicd_core::Error::NotFound { kind: "comment" })), "{gone:?}");

    let client = tokens.client(scope(INSTALLATION));
    let maintain = client.permission("octo", "hello", "mona").await.unwrap();
    assert_eq!(maintain, RepoPermission::Maintain);
    assert!(maintain.has_write());
    let reader = client.permission("octo", "hello", "guest").await.unwrap();
    assert_eq!(reader, RepoPermission::Read);
    assert!(!reader.has_write());
}

async fn comment_error(server: &MockServer, setup: &Setup, response: ResponseTemplate) -> aicd_core::Error {
    server.reset().await;
    mount_token(server, INSTALLATION, TimeDelta::hours(1)).await;
    mock(server, "POST", &format!("{REPO}/issues/7/comments"), response).await;
    setup.forge.post_comment(&setup.repo, 7, "hello").await.unwrap_err()
}

#[tokio::test]
async fn githubs_errors_map_to_transient_and_permanent_ones() {
    let (server, tokens) = github().await;
    let forge = setup(&tokens).await;

    // Primary rate limit: wait until the reset.
    let reset = Utc::now().timestamp() + 90;
    let limited = json_response(403, json!({"message": "API rate limit exceeded for installation ID 42."}))
        .insert_header("x-ratelimit-limit", "5000")
        .insert_header("x-ratelimit-remaining", "0")
        .insert_header("x-ratelimit-used", "5000")
        .insert_header("x-ratelimit-reset", reset.to_string().as_str());
    match comment_error(&server, &forge, limited).await {
        aicd_core::Error::Unavailable { service: "github", retry_after: Some(wait), .. } => {
            assert!((85..=90).contains(&wait.as_secs()), "{wait:?}")
        }
        other => panic!("{other:?}"),
    }

    // Secondary rate limit with retry-after.
    let slow_down = json_response(429, json!({"message": "You have exceeded a secondary rate limit."}))
        .insert_header("retry-after", "7");
    let err = comment_error(&server, &forge, slow_down).await;
    assert!(
        matches!(err, aicd_core::Error::Unavailable { retry_after: Some(w), .. } if w == Duration::from_secs(7)),
        "{err:?}"
    );

    // Server errors are transient.
    let err = comment_error(&server, &forge, json_response(500, json!({"message": "Server Error"}))).await;
    assert!(matches!(err, aicd_core::Error::Unavailable { service: "github", retry_after: None, .. }), "{err:?}");
    let err =
        comment_error(&server, &forge, ResponseTemplate::new(502).set_body_string("<html>bad gateway</html>")).await;
    assert!(matches!(err, aicd_core::Error::Unavailable { .. }), "{err:?}");

    // Lost access is permanent and says so.
    let err = comment_error(&server, &forge, json_response(404, json!({"message": "Not Found"}))).await;
    match &err {
        aicd_core::Error::Rejected { service: "github", message } => {
            assert!(message.contains("no access to octo/hello") && message.contains("removed"), "{message}")
        }
        other => panic!("{other:?}"),
    }

    // Validation failures carry GitHub's message.
    let invalid = json_response(
        422,
        json!({"message": "Validation Failed", "errors": [{"resource": "IssueComment", "code": "custom", "message": "Body is too long"}]}),
    );
    match comment_error(&server, &forge, invalid).await {
        aicd_core::Error::Rejected { message, .. } => assert!(message.contains("Body is too long"), "{message}"),
        other => panic!("{other:?}"),
    }

    // A network failure is transient.
    // A network failure is transient (nothing listens on a port just released).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tokens = InstallationTokens::new(credentials(), &format!("http://127.0.0.1:{port}")).unwrap();
    let err = tokens.token(scope(INSTALLATION)).await.unwrap_err();
    assert!(matches!(err, aicd_core::Error::Unavailable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_repository_the_installation_lost_is_rejected_for_every_operation() {
    let (server, tokens) = github().await;
    mount_token(&server, INSTALLATION, TimeDelta::hours(1)).await;
    // Nothing else is mounted: GitHub answers 404 for the repository and everything in it.
    let Setup { forge, repo, _db, .. } = setup(&tokens).await;
    let lost = |r: aicd_core::Result<()>| match r {
        Err(aicd_core::Error::Rejected { message, .. }) => message.contains("no access to octo/hello"),
        _ => false,
    };
    assert!(lost(forge.repo_view(&repo).await.map(|_| ())));
    assert!(lost(forge.create_branch(&repo, BRANCH).await.map(|_| ())));
    assert!(lost(forge.commit_changes(&repo, BRANCH, &changeset(), MESSAGE).await.map(|_| ())));
    assert!(lost(forge.open_pull_request(&repo, &new_pull_request()).await.map(|_| ())));
    assert!(lost(forge.update_comment(&repo, 7, CommentId(1), "x").await));

    // With the repository reachable, a missing default branch is told apart.
    mock(&server, "GET", REPO, json_response(200, json!({"id": 7}))).await;
    match forge.repo_view(&repo).await.map(|_| ()) {
        Err(aicd_core::Error::Rejected { message, .. }) => {
            assert!(message.contains("default branch `main`"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    let missing = forge.commit_changes(&repo, BRANCH, &changeset(), MESSAGE).await.map(|_| ());
    assert!(matches!(missing, Err(aicd_core::Error::NotFound { kind: "branch" })), "{missing:?}");
}

#[tokio::test]
async fn a_refused_token_is_replaced_once() {
    let (server, tokens) = github().await;
    mount_token(&server, INSTALLATION, TimeDelta::hours(1)).await;
    Mock::given(method("GET"))
        .and(path(format!("{REPO}/collaborators/mona/permission")))
        .respond_with(json_response(401, json!({"message": "Bad credentials"})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    mock(
        &server,
        "GET",
        &format!("{REPO}/collaborators/mona/permission"),
        json_response(200, json!({"permission": "admin", "role_name": "admin"})),
    )
    .await;
    let permission = tokens.client(scope(INSTALLATION)).permission("octo", "hello", "mona").await.unwrap();
    assert_eq!(permission, RepoPermission::Admin);
    assert_eq!(mints(&server).await, 2);
}
