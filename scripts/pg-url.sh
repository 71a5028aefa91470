# shellcheck shell=bash
# PostgreSQL URLs for scripts/backup and scripts/restore (sourced, not run): the password is taken
# out of the URL, to be handed to libpq through PGPASSWORD, and never printed.

# Splits `postgres[ql]://[user[:password]@]host[:port][/dbname][?params]` into
#   PG_URL_NO_PASSWORD  the URL without its password
#   PG_URL_PASSWORD     the password, percent-decoded (empty if none)
#   PG_URL_DBNAME       the database's name, percent-decoded (empty if none)
# and remembers the parts for pg_url_with_db and pg_url_shown. Fails, saying why, on anything else.
# shellcheck disable=SC2034 # the PG_URL_* variables are read by the scripts that source this
pg_url_parse() {
  local url=$1
  if [[ ! $url =~ ^(postgres|postgresql)://(([^:@/?]*)(:([^@/?]*))?@)?([^/?]*)(/([^?]*))?(\?.*)?$ ]]; then
    echo "not a postgres:// URL (the key=value form is not supported)" >&2
    return 1
  fi
  _pg_scheme=${BASH_REMATCH[1]}
  _pg_user=${BASH_REMATCH[3]}
  _pg_host=${BASH_REMATCH[6]}
  _pg_params=${BASH_REMATCH[9]}
  PG_URL_PASSWORD=$(pg_url_decode "${BASH_REMATCH[5]}")
  PG_URL_DBNAME=$(pg_url_decode "${BASH_REMATCH[8]}")
  PG_URL_NO_PASSWORD=$(pg_url_with_db "${BASH_REMATCH[8]}")
}

# The URL of database `$1` (already percent-encoded) on the same server, as the same user,
# without the password.
pg_url_with_db() {
  local userinfo=
  [[ -z $_pg_user ]] || userinfo="$_pg_user@"
  printf '%s://%s%s/%s%s\n' "$_pg_scheme" "$userinfo" "$_pg_host" "$1" "$_pg_params"
}

# The URL as it may be shown: without the password and the parameters.
pg_url_shown() {
  local userinfo=
  [[ -z $_pg_user ]] || userinfo="$_pg_user@"
  printf '%s://%s%s/%s\n' "$_pg_scheme" "$userinfo" "$_pg_host" "$PG_URL_DBNAME"
}

pg_url_decode() {
  local s=${1//\\/\\\\}
  printf '%b' "${s//%/\\x}"
}
