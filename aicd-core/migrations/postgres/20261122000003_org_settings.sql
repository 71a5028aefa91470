-- AI-CD: organization settings (PostgreSQL).
--
-- An organization's settings are a JSON object, like a repository's: defaults its repositories
-- inherit key by key (for instance `triggers`). Existing organizations start with none.

ALTER TABLE orgs ADD COLUMN settings jsonb NOT NULL DEFAULT '{}';
