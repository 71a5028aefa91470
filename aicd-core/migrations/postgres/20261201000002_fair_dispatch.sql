-- Fair, index-driven claiming. Each org's runnable, unheld jobs in claim order; the claim also
-- walks this index to find the orgs that have runnable work (one probe per org), so neither
-- query depends on table statistics.
CREATE INDEX jobs_org_runnable_idx ON jobs (org_id, run_after, id)
    WHERE lease_owner IS NULL AND state IN ('queued', 'planning', 'coding', 'reviewing');
DROP INDEX jobs_runnable_idx;
-- Listing an org's jobs in one state, newest first, as an index range scan.
CREATE INDEX jobs_org_state_idx ON jobs (org_id, state, id DESC);
-- Every index on jobs is written again by most updates of a job (a transition changes indexed
-- columns): keep none twice. The unique (org_id, id) index already lists an org's jobs newest
-- first when read backwards.
DROP INDEX jobs_org_newest_idx;
-- The backlog gauge (`/metrics`) counts queued jobs only, not the whole table.
CREATE INDEX jobs_queued_idx ON jobs (run_after) WHERE state = 'queued';
