//! The dispatch and listing queries are index-driven whatever the statistics say: checked with
//! PostgreSQL's generic plans (the ones it caches for prepared statements) on tables filled after
//! their last `ANALYZE`, the worst case for a planner.

use aicd_testkit::TestPostgres;
use sqlx::{Connection, Executor, PgConnection};

use super::dispatch::{OLDEST_RUNNABLE_SQL, QUEUE_DEPTH_SQL, QUEUE_STATS_SQL, RUNNABLE_ORGS_SQL, claim_sql_postgres};

const ORG: &str = "0190d000-0000-7000-8000-000000000001";
const OTHER: &str = "0190d000-0000-7000-8000-000000000002";
const REPO: &str = "0190d000-0000-7000-8000-0000000000a1";

/// A database migrated (and analysed) while empty, then given 20,000 jobs in two orgs: most
/// finished, some queued.
async fn filled() -> (TestPostgres, String) {
    let db = TestPostgres::new().await;
    super::SqlStore::migrate_postgres(&db.owner_url()).await.unwrap();
    let app = db.app_url("aicd_app").await;
    let mut owner = PgConnection::connect(&db.owner_url()).await.unwrap();
    let fill = format!(
        "INSERT INTO orgs VALUES ('{ORG}', 'Acme', 10, now(), now()), ('{OTHER}', 'Other', 10, now(), now());
         INSERT INTO repositories (id, org_id, kind, full_name, github_installation_id, github_repo_id,
             default_branch, created_at, updated_at)
             VALUES ('{REPO}', '{ORG}', 'github', 'acme/widgets', 1, 1, 'main', now(), now());
         INSERT INTO jobs (id, org_id, repo_id, issue_title, issue_body, trigger, state, budget_tokens,
             budget_cost_micros, run_after, created_by, created_at, updated_at)
             SELECT gen_random_uuid(), '{ORG}', '{REPO}', 'x', 'x', 'api',
                 CASE WHEN n % 10 = 0 THEN 'queued' ELSE 'pr_open' END, 1, 1, now(), 't', now(), now()
             FROM generate_series(1, 20000) AS n;"
    );
    owner.execute(sqlx::AssertSqlSafe(fill)).await.unwrap();
    (db, app)
}

/// The generic plan of `sql` with `args` (SQL literals), as the application role sees it, run
/// (in a transaction rolled back) so each node says how often it ran.
async fn generic_plan(app_url: &str, scope: (&str, &str), sql: &str, args: &str) -> String {
    let mut conn = PgConnection::connect(app_url).await.unwrap();
    let setup = format!(
        "BEGIN; SELECT set_config('{}', '{}', true); SET LOCAL plan_cache_mode = force_generic_plan;",
        scope.0, scope.1
    );
    conn.execute(sqlx::AssertSqlSafe(setup)).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!("PREPARE q AS {sql}"))).await.unwrap();
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(match args {
        "" => "EXPLAIN (ANALYZE, COSTS OFF) EXECUTE q".to_owned(),
        args => format!("EXPLAIN (ANALYZE, COSTS OFF) EXECUTE q({args})"),
    }))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
}

fn assert_indexed(plan: &str, index: &str) {
    assert!(!plan.contains("Seq Scan on jobs"), "a sequential scan of jobs:\n{plan}");
    assert!(plan.contains(index), "{index} is not used:\n{plan}");
    // No scan of jobs runs once per row of another: the cost must not grow with the queue.
    for line in plan.lines().filter(|l| l.contains(" on jobs")) {
        assert!(line.contains("loops=1)"), "a scan of jobs repeated per row:\n{plan}");
    }
}

#[tokio::test]
async fn claiming_is_index_driven_on_tables_never_analysed_since_they_filled() {
    let (_db, app) = filled().await;
    let system = ("app.scope", "system");
    let orgs = generic_plan(&app, system, RUNNABLE_ORGS_SQL, "now(), 1000").await;
    assert_indexed(&orgs, "jobs_org_runnable_idx");
    let claim = generic_plan(&app, system, claim_sql_postgres(), &format!("'{ORG}', 8, 'w', now(), now()")).await;
    assert_indexed(&claim, "jobs_org_runnable_idx");
    let depth = generic_plan(&app, system, QUEUE_DEPTH_SQL, "").await;
    assert_indexed(&depth, "jobs_queued_idx");
}

#[tokio::test]
async fn the_queue_gauges_read_only_active_jobs() {
    let (_db, app) = filled().await;
    let system = ("app.scope", "system");
    let stats = generic_plan(&app, system, QUEUE_STATS_SQL, "now()").await;
    assert_indexed(&stats, "jobs_org_runnable_idx");
    assert_indexed(&stats, "jobs_leased_idx");
    // Either partial index holds only active jobs.
    let oldest = generic_plan(&app, system, OLDEST_RUNNABLE_SQL, "now()").await;
    let index = if oldest.contains("jobs_queued_idx") { "jobs_queued_idx" } else { "jobs_org_runnable_idx" };
    assert_indexed(&oldest, index);
}

#[tokio::test]
async fn listing_jobs_is_an_index_range_scan_for_every_filter() {
    let (_db, app) = filled().await;
    let org = ("app.org_id", ORG);
    let max = "'ffffffff-ffff-ffff-ffff-ffffffffffff'";
    let cases = [
        (super::jobs::LIST_JOBS_SQL, format!("'{ORG}', {max}, 51"), "jobs_org_id_id_key"),
        (super::jobs::LIST_JOBS_BY_STATE_SQL, format!("'{ORG}', {max}, 51, 'queued'"), "jobs_org_state_idx"),
        (super::jobs::LIST_JOBS_BY_REPO_SQL, format!("'{ORG}', {max}, 51, '{REPO}'"), "jobs_org_repo_idx"),
        (super::jobs::LIST_JOBS_BY_REPO_AND_STATE_SQL, format!("'{ORG}', {max}, 51, '{REPO}', 'queued'"), "jobs_org_"),
    ];
    for (sql, args, index) in cases {
        let plan = generic_plan(&app, org, sql, &args).await;
        assert_indexed(&plan, index);
    }
}
