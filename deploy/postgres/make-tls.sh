#!/usr/bin/env bash
# Writes a self-signed certificate for PostgreSQL into deploy/postgres/tls/ (once; it is kept
# out of git), owned by the container's postgres user (uid 999) as PostgreSQL requires. The
# server and workers connect with sslmode=require: encrypted on the compose network; use a
# certificate from your CA and sslmode=verify-full when PostgreSQL runs elsewhere.
set -euo pipefail
dir="$(cd "$(dirname "$0")" && pwd)/tls"
if [ -f "$dir/server.key" ] && [ "${1:-}" != "--force" ]; then
  echo "PostgreSQL TLS certificate already in $dir (--force replaces it)"
  exit 0
fi
mkdir -p "$dir"
openssl req -new -x509 -nodes -days 3650 -newkey rsa:3072 -subj "/CN=postgres" \
  -addext "subjectAltName=DNS:postgres" \
  -keyout "$dir/server.key" -out "$dir/server.crt" 2>/dev/null
chmod 0600 "$dir/server.key"
chmod 0644 "$dir/server.crt"
if [ "$(id -u)" -eq 0 ]; then
  chown 999:999 "$dir/server.key" "$dir/server.crt"
else
  echo "run as root (sudo) or chown 999:999 $dir/server.key yourself: PostgreSQL must own its key" >&2
fi
echo "wrote $dir/server.crt and server.key"
