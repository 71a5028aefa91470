-- AI-CD: organization settings (SQLite). Same column as the PostgreSQL migration of the same
-- name: a JSON object stored as text, `{}` for existing organizations.

ALTER TABLE orgs ADD COLUMN settings TEXT NOT NULL DEFAULT '{}';
