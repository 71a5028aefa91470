#!/usr/bin/env bash
# Runs once, when the PostgreSQL container initialises an empty data directory (the image runs
# /docker-entrypoint-initdb.d/* as the superuser). It creates:
#   aicd_owner    LOGIN, owns the database `aicd` and its schema: runs `aicd-server migrate`;
#   aicd_app      NOLOGIN, owns nothing, cannot bypass row-level security: the migrations grant
#                 it row access (they create it too when it is missing);
#   aicd_runtime  LOGIN, a member of aicd_app and nothing else: what the server and workers use;
#   aicd_backup   LOGIN, reads every row (pg_read_all_data, BYPASSRLS: the tables force row-level
#                 security even on their owner) and writes nothing: what scripts/backup uses.
# The passwords come from the container's environment (AICD_DB_OWNER_PASSWORD,
# AICD_DB_APP_PASSWORD, AICD_DB_BACKUP_PASSWORD).
set -euo pipefail

: "${AICD_DB_OWNER_PASSWORD:?AICD_DB_OWNER_PASSWORD must be set}"
: "${AICD_DB_APP_PASSWORD:?AICD_DB_APP_PASSWORD must be set}"
: "${AICD_DB_BACKUP_PASSWORD:?AICD_DB_BACKUP_PASSWORD must be set}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
  -v owner_password="$AICD_DB_OWNER_PASSWORD" -v app_password="$AICD_DB_APP_PASSWORD" \
  -v backup_password="$AICD_DB_BACKUP_PASSWORD" <<'SQL'
CREATE ROLE aicd_owner LOGIN PASSWORD :'owner_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE ROLE aicd_app NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
CREATE ROLE aicd_runtime LOGIN PASSWORD :'app_password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS INHERIT
    IN ROLE aicd_app;
CREATE ROLE aicd_backup LOGIN PASSWORD :'backup_password' NOSUPERUSER NOCREATEDB NOCREATEROLE BYPASSRLS
    IN ROLE pg_read_all_data;
CREATE DATABASE aicd OWNER aicd_owner;
REVOKE ALL ON DATABASE aicd FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE aicd TO aicd_app;
GRANT CONNECT ON DATABASE aicd TO aicd_backup;
SQL

# PostgreSQL 15 gives the schema `public` to the database's owner; nobody else may create in it.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname aicd <<'SQL'
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
