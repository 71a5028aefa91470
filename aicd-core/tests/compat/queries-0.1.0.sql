-- The SQL statements AI-CD 0.1.0's store executes on PostgreSQL, one per entry (an entry
-- ends with ';' and entries are separated by a blank line), deduplicated and sorted.
-- Written by scripts/snapshot-queries 0.1.0 (see there how); do not edit. The compatibility
-- test (aicd-core/tests/compat.rs) prepares each one against the current migrations.

DELETE FROM github_install_states WHERE org_id = $1 AND expires_at < $2;

DELETE FROM github_installations WHERE org_id = $1 AND installation_id = $2 RETURNING installation_id, org_id, account_login, suspended, linked_by, created_at, updated_at;

DELETE FROM github_installations WHERE org_id = $1 AND installation_id = $2;

DELETE FROM jobs WHERE org_id = $1 AND id = $2;

DELETE FROM memberships WHERE org_id = $1 AND user_id = $2;

DELETE FROM orgs WHERE id = $1;

DELETE FROM repositories WHERE org_id = $1 AND id = $2;

INSERT INTO api_keys (id, org_id, name, role, prefix, key_hash, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id, org_id, name, role, prefix, key_hash, created_by, created_at, expires_at, last_used_at, revoked_at;

INSERT INTO github_commands (org_id, repo_id, issue_number, command, trigger, source_key, login, author_login, comment_id, issue, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'pending', $11, $11) ON CONFLICT DO NOTHING RETURNING id, org_id, repo_id, issue_number, command, trigger, source_key, login, author_login, issue, status, error, attempts, lease_owner, lease_expires_at, created_at, updated_at;

INSERT INTO github_install_states (nonce_hash, org_id, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5);

INSERT INTO github_installations (installation_id, org_id, account_login, suspended, linked_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (installation_id) DO NOTHING RETURNING installation_id, org_id, account_login, suspended, linked_by, created_at, updated_at;

INSERT INTO job_events (org_id, job_id, at, actor, kind, from_state, to_state, message, data) SELECT $1, $2, $3, e.v->>'actor', e.v->>'kind', e.v->>'from_state', e.v->>'to_state', e.v->>'message', e.v->'data' FROM jsonb_array_elements($4) WITH ORDINALITY AS e(v, n) ORDER BY e.n RETURNING id, job_id, org_id, at, actor, kind, from_state, to_state, message, data;

INSERT INTO job_events (org_id, job_id, at, actor, kind, from_state, to_state, message, data) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id, job_id, org_id, at, actor, kind, from_state, to_state, message, data;

INSERT INTO jobs (id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, budget_tokens, budget_cost_micros, run_after, created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10, $11, $12, $13, $14, $13, $13) RETURNING id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at;

INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) RETURNING org_id, user_id, role, created_at;

INSERT INTO orgs (id, name, max_concurrent_jobs, settings, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5) RETURNING id, name, max_concurrent_jobs, settings, created_at, updated_at;

INSERT INTO repositories (id, org_id, kind, full_name, github_installation_id, github_repo_id, local_path, default_branch, settings, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING id, org_id, kind, full_name, github_installation_id, github_repo_id, local_path, default_branch, settings, detached_at, created_at, updated_at;

INSERT INTO repositories (id, org_id, kind, full_name, github_installation_id, github_repo_id, local_path, default_branch, settings, created_at, updated_at) VALUES ($1, $2, 'github', $3, $4, $5, NULL, $6, $7, $8, $8) RETURNING id, org_id, kind, full_name, github_installation_id, github_repo_id, local_path, default_branch, settings, detached_at, created_at, updated_at;

INSERT INTO usage_records (id, org_id, job_id, repo_id, step, model, input_tokens, output_tokens, cost_micros, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (id) DO NOTHING RETURNING id, org_id, job_id, repo_id, step, model, input_tokens, output_tokens, cost_micros, at;

INSERT INTO users (id, subject, email, name, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (subject) DO UPDATE SET email = excluded.email, name = excluded.name RETURNING id, subject, email, name, created_at;

INSERT INTO webhook_deliveries (delivery_id, event, action, installation_id, body_sha256, status, received_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'processing', $6, $6) ON CONFLICT DO NOTHING RETURNING delivery_id;

SELECT CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT), COUNT(*) FROM usage_records WHERE org_id = $1 AND at >= $2 AND at < $3;

SELECT COUNT(*) FROM jobs WHERE state = 'queued';

SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'org_admin';

SELECT DISTINCT c.relname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r' AND a.attname = 'org_id' AND NOT a.attisdropped;

SELECT c.relrowsecurity, c.relforcerowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relname = $1 AND c.relkind = 'r';

SELECT created_by, expires_at FROM github_install_states WHERE org_id = $1 AND nonce_hash = $2 AND used_at IS NULL AND expires_at > $3;

SELECT day, CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), CAST(SUM(cost_micros) AS BIGINT), CAST(SUM(calls) AS BIGINT), CAST(SUM(pull_requests) AS BIGINT) FROM (SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, input_tokens, output_tokens, cost_micros, 1 AS calls, 0 AS pull_requests FROM usage_records WHERE org_id = $1 AND at >= $2 AND at < $3 UNION ALL SELECT to_char(opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), 0, 0, 0, 0, 1 FROM (SELECT repo_id, opened_at FROM (SELECT j.repo_id, (SELECT MIN(e.at) FROM job_events e WHERE e.org_id = j.org_id AND e.job_id = j.id AND e.kind = 'state_changed' AND e.to_state = 'pr_open') AS opened_at FROM jobs j WHERE j.org_id = $1 AND j.state IN ('pr_open', 'merged', 'closed')) AS o WHERE opened_at >= $2 AND opened_at < $3) AS p) AS u GROUP BY day ORDER BY day;

SELECT delivery_id FROM webhook_deliveries WHERE delivery_id = $1;

SELECT delivery_id, event, action, installation_id, status, error, attempts, received_at, updated_at FROM webhook_deliveries WHERE delivery_id = $1;

SELECT id FROM github_commands WHERE status = 'pending' AND (lease_owner IS NULL OR lease_expires_at < $1) ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED;

SELECT id FROM repositories WHERE org_id = $1 AND full_name = $2 AND ($3 IS NULL OR id <> $3);

SELECT id, job_id, org_id, at, actor, kind, from_state, to_state, message, data FROM job_events WHERE org_id = $1 AND job_id = $2 AND id > $3 ORDER BY id LIMIT $4;

SELECT id, name, max_concurrent_jobs, settings, created_at, updated_at FROM orgs WHERE id = $1;

SELECT id, org_id, job_id, repo_id, step, model, input_tokens, output_tokens, cost_micros, at FROM usage_records WHERE org_id = $1 AND at >= $2 AND at < $3 ORDER BY at, id;

SELECT id, org_id, job_id, repo_id, step, model, input_tokens, output_tokens, cost_micros, at FROM usage_records WHERE org_id = $1 AND id = $2;

SELECT id, org_id, kind, full_name, github_installation_id, github_repo_id, local_path, default_branch, settings, detached_at, created_at, updated_at FROM repositories WHERE org_id = $1 AND id = $2;

SELECT id, org_id, kind, full_name, github_installation_id, github_repo_id, local_path, default_branch, settings, detached_at, created_at, updated_at FROM repositories WHERE org_id = $1 AND kind = 'github' AND github_repo_id = $2 ORDER BY id LIMIT 1;

SELECT id, org_id, kind, full_name, github_installation_id, github_repo_id, local_path, default_branch, settings, detached_at, created_at, updated_at FROM repositories WHERE org_id = $1 ORDER BY full_name;

SELECT id, org_id, lease_owner FROM jobs WHERE lease_owner IS NOT NULL AND lease_expires_at < $1;

SELECT id, org_id, name, role, prefix, key_hash, created_by, created_at, expires_at, last_used_at, revoked_at FROM api_keys WHERE org_id = $1 ORDER BY created_at, id;

SELECT id, org_id, name, role, prefix, key_hash, created_by, created_at, expires_at, last_used_at, revoked_at FROM api_keys WHERE prefix = $1;

SELECT id, org_id, repo_id, issue_number, command, trigger, source_key, login, author_login, issue, status, error, attempts, lease_owner, lease_expires_at, created_at, updated_at FROM github_commands WHERE org_id = $1 AND id = $2;

SELECT id, org_id, repo_id, issue_number, command, trigger, source_key, login, author_login, issue, status, error, attempts, lease_owner, lease_expires_at, created_at, updated_at FROM github_commands WHERE org_id = $1 AND source_key = $2;

SELECT id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at FROM jobs WHERE org_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3;

SELECT id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at FROM jobs WHERE org_id = $1 AND id = $2;

SELECT id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at FROM jobs WHERE org_id = $1 AND repo_id = $2 AND issue_number = $3 AND state IN ('queued', 'planning', 'coding', 'reviewing', 'pr_open') ORDER BY id DESC LIMIT 1;

SELECT id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at FROM jobs WHERE org_id = $1 AND repo_id = $2 AND issue_number = $3 ORDER BY id DESC LIMIT 1;

SELECT id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at FROM jobs WHERE org_id = $1 AND repo_id = $2 AND state = 'pr_open' ORDER BY id;

SELECT id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at FROM jobs WHERE org_id = $1 AND repo_id = $2 AND state IN ('queued', 'planning', 'coding', 'reviewing') ORDER BY id;

SELECT id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at FROM jobs WHERE org_id = $1 AND repo_id = $4 AND id < $2 ORDER BY id DESC LIMIT $3;

SELECT id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at FROM jobs WHERE org_id = $1 AND state = $4 AND id < $2 ORDER BY id DESC LIMIT $3;

SELECT id, subject, email, name, created_at FROM users WHERE id = $1;

SELECT installation_id, org_id, account_login, suspended, linked_by, created_at, updated_at FROM github_installations WHERE installation_id = $1;

SELECT installation_id, org_id, account_login, suspended, linked_by, created_at, updated_at FROM github_installations WHERE org_id = $1 ORDER BY installation_id;

SELECT o FROM unnest(CAST(string_to_array($1, ',') AS uuid[])) AS o WHERE pg_try_advisory_xact_lock(1095320388, hashtext(CAST(o AS text)));

SELECT o.id, o.name, o.max_concurrent_jobs, o.settings, o.created_at, o.updated_at, m.role FROM memberships m JOIN orgs o ON o.id = m.org_id WHERE m.user_id = $1 ORDER BY m.created_at, o.id;

SELECT org_id, user_id, role, created_at FROM memberships WHERE org_id = $1 AND user_id = $2;

SELECT org_id, user_id, role, created_at FROM memberships WHERE org_id = $1 ORDER BY created_at, user_id;

SELECT r.kind, r.full_name, r.github_installation_id, r.github_repo_id, r.detached_at IS NOT NULL AS detached, i.installation_id IS NOT NULL AS linked, i.suspended FROM repositories r LEFT JOIN github_installations i ON i.installation_id = r.github_installation_id AND i.org_id = r.org_id WHERE r.org_id = $1 AND r.id = $2;

SELECT repo_id FROM jobs WHERE org_id = $1 AND id = $2;

SELECT repo_id, CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), CAST(SUM(cost_micros) AS BIGINT), CAST(SUM(calls) AS BIGINT), CAST(SUM(pull_requests) AS BIGINT) FROM (SELECT repo_id, input_tokens, output_tokens, cost_micros, 1 AS calls, 0 AS pull_requests FROM usage_records WHERE org_id = $1 AND at >= $2 AND at < $3 AND repo_id IS NOT NULL UNION ALL SELECT repo_id, 0, 0, 0, 0, 1 FROM (SELECT repo_id, opened_at FROM (SELECT j.repo_id, (SELECT MIN(e.at) FROM job_events e WHERE e.org_id = j.org_id AND e.job_id = j.id AND e.kind = 'state_changed' AND e.to_state = 'pr_open') AS opened_at FROM jobs j WHERE j.org_id = $1 AND j.state IN ('pr_open', 'merged', 'closed')) AS o WHERE opened_at >= $2 AND opened_at < $3) AS p) AS u GROUP BY repo_id ORDER BY repo_id;

SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user;

SELECT set_config($1, $2, true);

SELECT status FROM github_commands WHERE org_id = $1 AND id = $2;

SELECT status FROM webhook_deliveries WHERE body_sha256 = $1;

SELECT status FROM webhook_deliveries WHERE delivery_id = $1;

SELECT step, model, CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), CAST(SUM(cost_micros) AS BIGINT), CAST(COUNT(*) AS BIGINT), CAST(0 AS BIGINT) FROM usage_records WHERE org_id = $1 AND at >= $2 AND at < $3 GROUP BY step, model ORDER BY step, model;

SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() AND tableowner = current_user ORDER BY 1;

UPDATE api_keys SET last_used_at = $2 WHERE id = $1;

UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) WHERE org_id = $1 AND id = $2 RETURNING id, org_id, name, role, prefix, key_hash, created_by, created_at, expires_at, last_used_at, revoked_at;

UPDATE github_commands SET lease_owner = $2, lease_expires_at = $3, attempts = attempts + 1, updated_at = $4 WHERE id = $1 RETURNING id, org_id, repo_id, issue_number, command, trigger, source_key, login, author_login, issue, status, error, attempts, lease_owner, lease_expires_at, created_at, updated_at;

UPDATE github_commands SET status = $3, error = $4, lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 WHERE org_id = $1 AND id = $2 AND status = 'pending' RETURNING id, org_id, repo_id, issue_number, command, trigger, source_key, login, author_login, issue, status, error, attempts, lease_owner, lease_expires_at, created_at, updated_at;

UPDATE github_install_states SET used_at = $3 WHERE org_id = $1 AND nonce_hash = $2 AND created_by = $4 AND used_at IS NULL AND expires_at > $3 RETURNING created_by, expires_at;

UPDATE github_installations SET account_login = COALESCE($3, account_login), linked_by = $5, updated_at = $4 WHERE org_id = $1 AND installation_id = $2 RETURNING installation_id, org_id, account_login, suspended, linked_by, created_at, updated_at;

UPDATE github_installations SET suspended = $3, updated_at = $4 WHERE org_id = $1 AND installation_id = $2 RETURNING installation_id, org_id, account_login, suspended, linked_by, created_at, updated_at;

UPDATE github_installations SET updated_at = $3 WHERE org_id = $1 AND installation_id = $2;

UPDATE jobs SET cancel_requested = $3, updated_at = $4 WHERE org_id = $1 AND id = $2;

UPDATE jobs SET lease_expires_at = $5 WHERE org_id = $1 AND id = $2 AND epoch = $3 AND lease_owner = $4 AND lease_expires_at > $6 RETURNING cancel_requested;

UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL, updated_at = $2 WHERE id = $1 AND lease_owner = $3 AND lease_expires_at < $2;

UPDATE jobs SET spent_tokens = spent_tokens + $3, spent_cost_micros = spent_cost_micros + $4 WHERE org_id = $1 AND id = $2;

UPDATE jobs SET state = $3, attempts = COALESCE($4, attempts), review_round = COALESCE($5, review_round), run_after = COALESCE($6, run_after), plan = COALESCE($7, plan), changeset = CASE WHEN $8 THEN $9 ELSE changeset END, review = CASE WHEN $10 THEN $11 ELSE review END, feedback = CASE WHEN $12 THEN $13 ELSE feedback END, pull_request = COALESCE($14, pull_request), progress_comment_id = COALESCE($15, progress_comment_id), failure_reason = COALESCE($16, failure_reason), lease_owner = CASE WHEN $17 THEN NULL ELSE lease_owner END, lease_expires_at = CASE WHEN $17 THEN NULL ELSE lease_expires_at END, finished_at = CASE WHEN $18 THEN COALESCE(finished_at, $19) ELSE finished_at END, spent_tokens = spent_tokens + $23, spent_cost_micros = spent_cost_micros + $24, updated_at = $19 WHERE org_id = $1 AND id = $2 AND epoch = $20 AND state = $21 AND lease_owner = $22 AND lease_expires_at > $19 RETURNING id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at;

UPDATE jobs SET state = $3, finished_at = $4, updated_at = $4 WHERE org_id = $1 AND id = $2 AND state = 'pr_open';

UPDATE jobs SET state = 'cancelled', epoch = epoch + 1, finished_at = $3, updated_at = $3 WHERE org_id = $1 AND id = $2;

UPDATE jobs SET updated_at = updated_at WHERE org_id = $1 AND id = $2;

UPDATE memberships SET role = $3 WHERE org_id = $1 AND user_id = $2 RETURNING org_id, user_id, role, created_at;

UPDATE orgs SET name = COALESCE($2, name), max_concurrent_jobs = COALESCE($3, max_concurrent_jobs), settings = COALESCE($4, settings), updated_at = $5 WHERE id = $1 RETURNING id, name, max_concurrent_jobs, settings, created_at, updated_at;

UPDATE orgs SET updated_at = updated_at WHERE id = $1;

UPDATE repositories SET default_branch = COALESCE($3, default_branch), settings = COALESCE($4, settings), updated_at = $5 WHERE org_id = $1 AND id = $2 RETURNING id, org_id, kind, full_name, github_installation_id, github_repo_id, local_path, default_branch, settings, detached_at, created_at, updated_at;

UPDATE repositories SET detached_at = $3, updated_at = $3 WHERE org_id = $1 AND kind = 'github' AND github_installation_id = $2 AND detached_at IS NULL RETURNING id, org_id, kind, full_name, github_installation_id, github_repo_id, local_path, default_branch, settings, detached_at, created_at, updated_at;

UPDATE repositories SET detached_at = $3, updated_at = $3 WHERE org_id = $1 AND kind = 'github' AND github_installation_id = $2 AND github_repo_id = $4 AND detached_at IS NULL RETURNING id, org_id, kind, full_name, github_installation_id, github_repo_id, local_path, default_branch, settings, detached_at, created_at, updated_at;

UPDATE repositories SET full_name = $3, github_installation_id = $4, detached_at = NULL, updated_at = $5 WHERE org_id = $1 AND id = $2 RETURNING id, org_id, kind, full_name, github_installation_id, github_repo_id, local_path, default_branch, settings, detached_at, created_at, updated_at;

UPDATE webhook_deliveries SET status = $2, error = $3, updated_at = $4 WHERE delivery_id = $1;

UPDATE webhook_deliveries SET status = 'processing', error = NULL, attempts = attempts + 1, updated_at = $2 WHERE delivery_id = $1 AND (status = 'failed' OR (status = 'processing' AND updated_at < $3));

WITH RECURSIVE r(org_id) AS (SELECT (SELECT j.org_id FROM jobs j WHERE j.lease_owner IS NULL AND j.state IN ('queued', 'planning', 'coding', 'reviewing') AND j.run_after <= $1 ORDER BY j.org_id LIMIT 1) UNION ALL SELECT (SELECT j.org_id FROM jobs j WHERE j.lease_owner IS NULL AND j.state IN ('queued', 'planning', 'coding', 'reviewing') AND j.run_after <= $1 AND j.org_id > r.org_id ORDER BY j.org_id LIMIT 1) FROM r WHERE r.org_id IS NOT NULL) SELECT w.org_id, (SELECT COUNT(*) FROM jobs h WHERE h.org_id = w.org_id AND h.lease_owner IS NOT NULL) AS held, o.max_concurrent_jobs, (SELECT j.run_after FROM jobs j WHERE j.org_id = w.org_id AND j.lease_owner IS NULL AND j.state IN ('queued', 'planning', 'coding', 'reviewing') AND j.run_after <= $1 ORDER BY j.run_after, j.id LIMIT 1) AS oldest FROM (SELECT org_id FROM r WHERE org_id IS NOT NULL LIMIT $2) w JOIN orgs o ON o.id = w.org_id ORDER BY held, oldest, w.org_id;

WITH picked AS MATERIALIZED (SELECT j.id AS picked_id FROM jobs j WHERE j.org_id = $1 AND j.lease_owner IS NULL AND j.state IN ('queued', 'planning', 'coding', 'reviewing') AND j.run_after <= $5 ORDER BY j.run_after, j.id LIMIT GREATEST(0, LEAST($2, (SELECT max_concurrent_jobs FROM orgs WHERE id = $1) - (SELECT COUNT(*) FROM jobs h WHERE h.org_id = $1 AND h.lease_owner IS NOT NULL)))) UPDATE jobs SET lease_owner = $3, lease_expires_at = $4, epoch = epoch + 1, updated_at = $5 FROM picked WHERE id = picked.picked_id AND lease_owner IS NULL AND state IN ('queued', 'planning', 'coding', 'reviewing') RETURNING id, org_id, repo_id, issue_number, issue_title, issue_body, issue_url, issue_author, trigger, state, attempts, review_round, budget_tokens, budget_cost_micros, spent_tokens, spent_cost_micros, lease_owner, lease_expires_at, epoch, run_after, cancel_requested, plan, changeset, review, feedback, pull_request, progress_comment_id, failure_reason, created_by, created_at, updated_at, finished_at;
