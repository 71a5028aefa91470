use aicd_core::Error;
use aicd_core::github::{GithubRepoId, InstallationId};
use aicd_core::jobs::{IssueRef, JobState, NewJob, Trigger};
use aicd_core::repos::{NewRepo, RepoSource};
use aicd_core::store::{JobStore, RepoStore, TenancyStore};
use aicd_core::tenancy::{Actor, ApiKeySecret, NewApiKey, NewOrg, NewUser, OrgPatch, Role};
use chrono::{Duration, Utc};
use serde_json::json;

use crate::support::Harness;

pub(crate) fn new_org(name: &str) -> NewOrg {
    NewOrg { name: name.into(), max_concurrent_jobs: None, settings: None }
}

pub(crate) async fn an_empty_database_takes_a_job_and_returns_it(h: &Harness) {
    let org = h.store.create_org(new_org("Acme"), None).await.unwrap();
    let repo = h
        .store
        .create_repo(
            org.id,
            NewRepo {
                full_name: "acme/widgets".into(),
                source: RepoSource::Github {
                    installation_id: InstallationId::new(42).unwrap(),
                    repo_id: GithubRepoId::new(4242).unwrap(),
                },
                default_branch: None,
                settings: None,
            },
        )
        .await
        .unwrap();
    let issue = IssueRef {
        number: Some(7),
        title: "Add a greeting".into(),
        body: "Please say hello.".into(),
        url: Some("https://github.com/acme/widgets/issues/7".into()),
        author: Some("octocat".into()),
    };
    let created = h
        .store
        .create_job(
            org.id,
            NewJob {
                repo_id: repo.id,
                issue: issue.clone(),
                trigger: Trigger::Label,
                max_tokens: None,
                max_cost_micros: None,
            },
            "github:octocat",
        )
        .await
        .unwrap();
    let read = h.store.get_job(org.id, created.id).await.unwrap();
    assert_eq!(read, created);
    assert_eq!(read.issue, issue);
    assert_eq!(read.state, JobState::Queued);
    assert_eq!(read.trigger, Trigger::Label);
    assert_eq!(read.created_by, "github:octocat");
}

pub(crate) async fn orgs_are_created_read_updated_and_deleted(h: &Harness) {
    let (org, _, admin) = h.org_with_admin("Acme").await;
    assert_eq!(org.name, "Acme");
    assert_eq!(org.max_concurrent_jobs, 4);
    assert_eq!(org.settings.to_json(), json!({}));
    assert_eq!(h.core.get_org(&admin, org.id).await.unwrap(), org);

    let patch = OrgPatch { name: Some("  Acme Inc  ".into()), max_concurrent_jobs: Some(9), settings: None };
    let updated = h.core.update_org(&admin, org.id, patch).await.unwrap();
    assert_eq!((updated.name.as_str(), updated.max_concurrent_jobs), ("Acme Inc", 9));
    assert_eq!(updated.settings.to_json(), json!({}), "absent settings are left as they are");
    assert!(updated.updated_at >= org.updated_at);
    assert_eq!(h.core.get_org(&admin, org.id).await.unwrap(), updated);

    h.core.delete_org(&admin, org.id).await.unwrap();
    assert!(matches!(h.core.get_org(&admin, org.id).await, Err(Error::NotFound { .. })));
    assert!(matches!(h.store.delete_org(org.id).await, Err(Error::NotFound { .. })));
}

/// Settings that are refused: not an object, over 64 KiB, or a malformed `triggers` member.
fn invalid_settings() -> Vec<serde_json::Value> {
    vec![
        json!([1, 2]),
        json!("aicd"),
        json!(null),
        json!({ "notes": "x".repeat(64 * 1024) }),
        json!({ "triggers": "aicd" }),
        json!({ "triggers": { "label": "" } }),
        json!({ "triggers": { "label": "x".repeat(51) } }),
        json!({ "triggers": { "assignment": "yes" } }),
        json!({ "triggers": { "labels": ["aicd"] } }),
    ]
}

pub(crate) async fn invalid_org_input_is_rejected(h: &Harness) {
    let mut bad_orgs = vec![
        NewOrg { name: "  ".into(), max_concurrent_jobs: None, settings: None },
        NewOrg { name: "x".repeat(101), max_concurrent_jobs: None, settings: None },
        NewOrg { name: "ok".into(), max_concurrent_jobs: Some(0), settings: None },
    ];
    bad_orgs.extend(invalid_settings().into_iter().map(|s| NewOrg {
        name: "ok".into(),
        max_concurrent_jobs: None,
        settings: Some(s),
    }));
    for bad in bad_orgs {
        let described = format!("{bad:?}");
        let result = h.store.create_org(bad, None).await;
        assert!(matches!(result, Err(Error::InvalidInput(_))), "{:.200} -> {result:?}", described);
    }
    let (org, _, admin) = h.org_with_admin("Acme").await;
    let patch = OrgPatch { max_concurrent_jobs: Some(100_000), ..Default::default() };
    assert!(matches!(h.core.update_org(&admin, org.id, patch).await, Err(Error::InvalidInput(_))));
    for settings in invalid_settings() {
        let patch = OrgPatch { settings: Some(settings), ..Default::default() };
        assert!(matches!(h.core.update_org(&admin, org.id, patch).await, Err(Error::InvalidInput(_))));
    }
    // Nothing was written.
    assert_eq!(h.core.get_org(&admin, org.id).await.unwrap(), org);
}

pub(crate) async fn org_settings_are_stored_and_replaced(h: &Harness) {
    let settings = json!({ "triggers": { "label": "AI please ünïcödé ✓", "assignment": false } });
    let user = h.user("settings-admin").await;
    let org = h
        .core
        .create_org(user, NewOrg { name: "Acme".into(), max_concurrent_jobs: None, settings: Some(settings.clone()) })
        .await
        .unwrap();
    assert_eq!(org.settings.to_json(), settings);
    assert_eq!(org.settings.triggers.label, Some(Some("AI please ünïcödé ✓".into())));
    let admin = Actor::user(user, org.id, Role::OrgAdmin);
    assert_eq!(h.core.get_org(&admin, org.id).await.unwrap(), org);
    assert_eq!(h.store.get_org(org.id).await.unwrap().settings.to_json(), settings);
    let listed = h.core.list_orgs(user).await.unwrap();
    assert_eq!(listed.iter().map(|(o, _)| o.settings.to_json()).collect::<Vec<_>>(), vec![settings.clone()]);

    // A patch replaces the settings as a whole and leaves the other fields alone.
    let replaced =
        json!({ "triggers": { "label": null, "commands": false }, "policy": { "protected_paths": ["deploy/**"] } });
    let patch = OrgPatch { settings: Some(replaced.clone()), ..Default::default() };
    let updated = h.core.update_org(&admin, org.id, patch).await.unwrap();
    assert_eq!(updated.settings.to_json(), replaced);
    assert_eq!((updated.name.as_str(), updated.max_concurrent_jobs), ("Acme", 4));
    assert_eq!(h.core.get_org(&admin, org.id).await.unwrap(), updated);

    // Changing something else keeps them.
    let patch = OrgPatch { name: Some("Acme 2".into()), ..Default::default() };
    assert_eq!(h.core.update_org(&admin, org.id, patch).await.unwrap().settings.to_json(), replaced);

    // Unknown keys, wrong types and oversized objects are refused and nothing is written.
    let before = h.core.get_org(&admin, org.id).await.unwrap();
    for bad in [
        json!({ "notes": "x" }),
        json!({ "policy": { "max_files": "twelve" } }),
        json!({ "policy": { "max_file": 12 } }),
        json!({ "policy": { "protected_paths": ["deploy/[z-"] } }),
        json!({ "triggers": { "label": 1 } }),
        json!({ "triggers": { "label": "x".repeat(60 * 1024) } }),
        json!(["not", "an", "object"]),
    ] {
        let patch = OrgPatch { settings: Some(bad), ..Default::default() };
        assert!(matches!(h.core.update_org(&admin, org.id, patch).await, Err(Error::InvalidInput(_))));
    }
    assert_eq!(h.core.get_org(&admin, org.id).await.unwrap(), before);

    // `{}` clears them.
    let patch = OrgPatch { settings: Some(json!({})), ..Default::default() };
    assert_eq!(h.core.update_org(&admin, org.id, patch).await.unwrap().settings.to_json(), json!({}));
    assert_eq!(h.core.get_org(&admin, org.id).await.unwrap().settings.to_json(), json!({}));

    // Only an org_admin may change them.
    let viewer = Actor::user(h.user("viewer").await, org.id, Role::Viewer);
    let patch = OrgPatch { settings: Some(settings), ..Default::default() };
    assert!(matches!(h.core.update_org(&viewer, org.id, patch).await, Err(Error::Forbidden { .. })));
}

pub(crate) async fn users_are_upserted_by_subject(h: &Harness) {
    let first = h
        .core
        .sign_in(NewUser { subject: "idp|alice".into(), email: Some("a@example.com".into()), name: None })
        .await
        .unwrap();
    let again = h
        .core
        .sign_in(NewUser {
            subject: "idp|alice".into(),
            email: Some("alice@example.com".into()),
            name: Some("Alice".into()),
        })
        .await
        .unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(again.email.as_deref(), Some("alice@example.com"));
    assert_eq!(h.store.get_user(first.id).await.unwrap(), again);
    let blank = NewUser { subject: " ".into(), email: None, name: None };
    assert!(matches!(h.core.sign_in(blank).await, Err(Error::InvalidInput(_))));
}

pub(crate) async fn members_are_added_changed_and_removed(h: &Harness) {
    let (org, admin_id, admin) = h.org_with_admin("Acme").await;
    let bob = h.user("bob").await;
    let added = h.core.add_member(&admin, org.id, bob, Role::Viewer).await.unwrap();
    assert_eq!(added.role, Role::Viewer);
    assert!(matches!(h.core.add_member(&admin, org.id, bob, Role::Developer).await, Err(Error::Conflict(_))));
    let ghost = aicd_core::UserId::new();
    assert!(matches!(h.core.add_member(&admin, org.id, ghost, Role::Viewer).await, Err(Error::NotFound { .. })));

    let members = h.core.list_members(&admin, org.id).await.unwrap();
    assert_eq!(
        members.iter().map(|m| (m.user_id, m.role)).collect::<Vec<_>>(),
        vec![(admin_id, Role::OrgAdmin), (bob, Role::Viewer)]
    );

    let changed = h.core.set_member_role(&admin, org.id, bob, Role::Developer).await.unwrap();
    assert_eq!(changed.role, Role::Developer);
    assert_eq!(h.core.user_actor(bob, org.id).await.unwrap(), Actor::user(bob, org.id, Role::Developer));

    h.core.remove_member(&admin, org.id, bob).await.unwrap();
    assert!(matches!(h.core.user_actor(bob, org.id).await, Err(Error::NotFound { .. })));
    assert!(matches!(h.core.remove_member(&admin, org.id, bob).await, Err(Error::NotFound { .. })));
}

pub(crate) async fn the_last_org_admin_cannot_be_demoted_or_removed(h: &Harness) {
    let (org, admin_id, admin) = h.org_with_admin("Acme").await;
    assert!(matches!(h.core.set_member_role(&admin, org.id, admin_id, Role::Viewer).await, Err(Error::Conflict(_))));
    assert!(matches!(h.core.remove_member(&admin, org.id, admin_id).await, Err(Error::Conflict(_))));

    let carol = h.user("carol").await;
    h.core.add_member(&admin, org.id, carol, Role::OrgAdmin).await.unwrap();
    h.core.set_member_role(&admin, org.id, admin_id, Role::Developer).await.unwrap();
    let carol_actor = h.core.user_actor(carol, org.id).await.unwrap();
    assert!(matches!(h.core.remove_member(&carol_actor, org.id, carol).await, Err(Error::Conflict(_))));
}

pub(crate) async fn a_user_lists_only_the_orgs_it_belongs_to(h: &Harness) {
    let (a, alice, admin_a) = h.org_with_admin("A").await;
    let (b, _, _) = h.org_with_admin("B").await;
    let (c, _, admin_c) = h.org_with_admin("C").await;
    h.core.add_member(&admin_c, c.id, alice, Role::Viewer).await.unwrap();
    let orgs = h.core.list_orgs(alice).await.unwrap();
    let seen: Vec<_> = orgs.iter().map(|(o, r)| (o.id, *r)).collect();
    assert_eq!(seen, vec![(a.id, Role::OrgAdmin), (c.id, Role::Viewer)]);
    assert!(!seen.iter().any(|(id, _)| *id == b.id));
    let _ = admin_a;
}

pub(crate) async fn an_api_key_is_shown_once_and_authenticates(h: &Harness) {
    let (org, admin_id, admin) = h.org_with_admin("Acme").await;
    let new = NewApiKey { name: "ci".into(), role: Role::Developer, expires_at: None };
    let (key, secret) = h.core.create_api_key(&admin, org.id, new).await.unwrap();
    assert!(secret.expose().starts_with("aicd_"));
    assert!(secret.expose().starts_with(&key.prefix));
    assert_eq!(key.created_by, Some(admin_id));
    assert_eq!(key.last_used_at, None);

    let actor = h.core.authenticate_api_key(&ApiKeySecret::new(secret.expose())).await.unwrap();
    assert_eq!(actor, Actor::api_key(key.id, org.id, Role::Developer));

    // The last use is recorded in the background, off the request's path.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let listed = loop {
        let listed = h.core.list_api_keys(&admin, org.id).await.unwrap();
        if listed[0].last_used_at.is_some() || std::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(listed.len(), 1);
    let first_use = listed[0].last_used_at.expect("last use is recorded");
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains(secret.expose()), "listings never carry the secret");

    // Within a minute, further uses write nothing: a busy key is not a hot row.
    for _ in 0..20 {
        h.core.authenticate_api_key(&ApiKeySecret::new(secret.expose())).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let listed = h.core.list_api_keys(&admin, org.id).await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(first_use), "recorded at most once a minute");
}

pub(crate) async fn only_the_hash_of_an_api_key_is_stored(h: &Harness) {
    let (org, _, admin) = h.org_with_admin("Acme").await;
    let new = NewApiKey { name: "ci".into(), role: Role::Viewer, expires_at: None };
    let (key, secret) = h.core.create_api_key(&admin, org.id, new).await.unwrap();
    let prefix = key.prefix.strip_prefix("aicd_").unwrap();
    let stored = h.store.find_api_keys_by_prefix(prefix).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].hash.len(), 32);
    assert_ne!(stored[0].hash, secret.expose().as_bytes());
    use sha2::Digest;
    assert_eq!(stored[0].hash, sha2::Sha256::digest(secret.expose().as_bytes()).to_vec());
}

pub(crate) async fn a_revoked_api_key_no_longer_authenticates(h: &Harness) {
    let (org, _, admin) = h.org_with_admin("Acme").await;
    let new = NewApiKey { name: "ci".into(), role: Role::Viewer, expires_at: None };
    let (key, secret) = h.core.create_api_key(&admin, org.id, new).await.unwrap();
    let presented = ApiKeySecret::new(secret.expose());
    h.core.authenticate_api_key(&presented).await.unwrap();
    let revoked = h.core.revoke_api_key(&admin, org.id, key.id).await.unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(matches!(h.core.authenticate_api_key(&presented).await, Err(Error::Unauthenticated(_))));
    // Revoking again is harmless and keeps the first revocation time.
    let again = h.core.revoke_api_key(&admin, org.id, key.id).await.unwrap();
    assert_eq!(again.revoked_at, revoked.revoked_at);
}

pub(crate) async fn an_expired_api_key_does_not_authenticate(h: &Harness) {
    let (org, _, admin) = h.org_with_admin("Acme").await;
    let past =
        NewApiKey { name: "old".into(), role: Role::Viewer, expires_at: Some(Utc::now() - Duration::minutes(1)) };
    assert!(matches!(h.core.create_api_key(&admin, org.id, past).await, Err(Error::InvalidInput(_))));

    let soon = NewApiKey {
        name: "soon".into(),
        role: Role::Viewer,
        expires_at: Some(Utc::now() + Duration::milliseconds(300)),
    };
    let (_, secret) = h.core.create_api_key(&admin, org.id, soon).await.unwrap();
    let presented = ApiKeySecret::new(secret.expose());
    h.core.authenticate_api_key(&presented).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(matches!(h.core.authenticate_api_key(&presented).await, Err(Error::Unauthenticated(_))));
}

pub(crate) async fn malformed_and_unknown_api_keys_do_not_authenticate(h: &Harness) {
    let (org, _, admin) = h.org_with_admin("Acme").await;
    let new = NewApiKey { name: "ci".into(), role: Role::Viewer, expires_at: None };
    let (_, secret) = h.core.create_api_key(&admin, org.id, new).await.unwrap();
    let other = aicd_core::tenancy::GeneratedKey::generate().unwrap();
    for bad in ["", "Bearer", "aicd_", "aicd_123", &secret.expose()[..secret.expose().len() - 1], other.secret.expose()]
    {
        let result = h.core.authenticate_api_key(&ApiKeySecret::new(bad)).await;
        assert!(matches!(result, Err(Error::Unauthenticated(_))), "{bad:?} -> {result:?}");
    }
}

pub(crate) async fn an_api_key_cannot_carry_a_role_above_its_creator(h: &Harness) {
    let (org, _, _) = h.org_with_admin("Acme").await;
    let dev = Actor::user(h.user("dev").await, org.id, Role::Developer);
    let new = NewApiKey { name: "ci".into(), role: Role::OrgAdmin, expires_at: None };
    // A developer may not manage keys at all; an admin may not exceed its own role either.
    assert!(matches!(h.core.create_api_key(&dev, org.id, new).await, Err(Error::Forbidden { .. })));
}

pub(crate) async fn bootstrap_creates_an_org_with_an_admin_key(h: &Harness) {
    let (org, key, secret) = h.core.bootstrap_org(new_org("Self-hosted")).await.unwrap();
    assert_eq!(key.role, Role::OrgAdmin);
    let actor = h.core.authenticate_api_key(&ApiKeySecret::new(secret.expose())).await.unwrap();
    assert_eq!(actor.org_id, org.id);
    assert_eq!(h.core.get_org(&actor, org.id).await.unwrap().name, "Self-hosted");
    assert!(h.core.list_members(&actor, org.id).await.unwrap().is_empty());
    // The admin key can start jobs too.
    let repo = h
        .core
        .create_repo(
            &actor,
            org.id,
            NewRepo {
                full_name: "me/repo".into(),
                source: RepoSource::Local { path: h.local_path("repo") },
                default_branch: Some("trunk".into()),
                settings: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(repo.default_branch, "trunk");
}
