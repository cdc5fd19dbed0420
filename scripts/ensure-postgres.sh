#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 with a database `test` that the
# user postgres (password postgres) can use; start the local cluster when it is down.
set -euo pipefail
ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! ready; then
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  [ -n "$version" ] || { echo "no PostgreSQL cluster found" >&2; exit 1; }
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 30); do ready && break; sleep 1; done
fi
ready || { echo "PostgreSQL did not start" >&2; exit 1; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then su postgres -c "$1"; else eval "$1"; fi; }
as_pg "psql -h 127.0.0.1 -U postgres -tAc \"SELECT 1\" >/dev/null 2>&1" || \
  as_pg "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\""
as_pg "psql -h 127.0.0.1 -U postgres -lqt 2>/dev/null | cut -d'|' -f1 | grep -qw test" 2>/dev/null || \
  PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE test" 2>/dev/null || true
