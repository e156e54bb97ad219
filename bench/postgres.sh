#!/usr/bin/env bash
# A throw-away PostgreSQL for benchmarks (as root, Debian's postgresql package installed).
#
#   eval "$(bash bench/postgres.sh up)"   # sets BENCH_PG_DIR and BENCH_PG_URL
#   .venv/bin/python bench/b4_load.py --env KUBETRAIN_DATABASE_URL="$BENCH_PG_URL"
#   bash bench/postgres.sh down "$BENCH_PG_DIR"
#
# Same settings as .ci/run's cluster (fsync off: a benchmark's data is thrown away), but durable commits
# stay on (synchronous_commit=on), so a commit costs what it would on a real master minus the disk flush.
set -euo pipefail
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
as_postgres() { (cd / && runuser -u postgres -- "$@"); }
case "${1:-}" in
  up)
    dir=$(mktemp -d /tmp/kubetrain-bench-pg.XXXXXX)
    chmod 755 "$dir"; chown postgres: "$dir"
    as_postgres "$PGBIN/initdb" -D "$dir/data" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --no-locale --encoding=UTF8 --no-sync >"$dir/initdb.log" 2>&1
    for port in $(seq 56432 56472); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
      if as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
          -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200" \
          start >/dev/null; then
        as_postgres "$PGBIN/psql" -h "$dir" -p "$port" -U postgres -d postgres -q -v ON_ERROR_STOP=1 \
          -c "CREATE ROLE kubetrain LOGIN PASSWORD 'kubetrain'" -c "CREATE DATABASE kubetrain OWNER kubetrain" >/dev/null
        echo "export BENCH_PG_DIR=$dir BENCH_PG_URL=postgresql+psycopg://kubetrain:kubetrain@127.0.0.1:$port/kubetrain"
        exit 0
      fi
    done
    echo "could not start PostgreSQL (see $dir/postgres.log)" >&2; exit 1 ;;
  down)
    dir=${2:?usage: postgres.sh down DIR}
    as_postgres "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$dir" ;;
  *) echo "usage: bash bench/postgres.sh up | down DIR" >&2; exit 2 ;;
esac
