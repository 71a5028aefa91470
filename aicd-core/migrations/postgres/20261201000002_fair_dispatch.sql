-- Fair, index-driven claiming. Each org's runnable, unheld jobs in claim order; the claim also
-- walks this index to find the orgs that have runnable work (one probe per org), so neither
-- query depends on table statistics.
CREATE INDEX jobs_org_runnable_idx ON jobs (org_id, run_after, id)
    WHERE lease_owner IS NULL AND state IN ('queued', 'planning', 'coding', 'reviewing');
DROP INDEX jobs_runnable_idx;
-- Listing an org's jobs in one state, newest first, as an index range scan.
CREATE INDEX jobs_org_state_idx ON jobs (org_id, state, id DESC);
