#!/usr/bin/env bash
# What the schema costs a write, counted rather than timed: the instructions the server
# executes per call of the statements the store sends for W1 and W5, and the WAL bytes each
# call writes (records only: full-page images, which the first change of a page after each
# checkpoint adds, are turned off), for the schemas schema.sh builds. Counted by valgrind (callgrind) in a
# single-user PostgreSQL on a throwaway cluster, so the figures do not depend on what else the
# machine is doing. They leave out waiting (WAL flushes, locks, other sessions): what a run of
# run.sh measures.
#
# Usage: instructions.sh   (needs initdb, pg_ctl and postgres of PostgreSQL 15 — PGBIN,
#                           default /usr/lib/postgresql/15/bin — and valgrind; as root, the
#                           cluster runs as the user postgres)
#   VARIANTS  as for run.sh (default "m1 m5 all")
#   SCRIPTS   (default "w1-cached w5"), the statements of these pgbench scripts with their
#             variables filled in (the account of call i is account-(7919 i mod 10000 + 1);
#             w1's version check is "any", as single-user mode has no \gset)
#   MIGRATIONS  the migrations directory (default this checkout's)
#   N         calls of the shorter run (default 200; W5 takes N/10): each figure is the
#             difference between a run of 2N calls and one of N, divided by N, so what runs
#             once (start-up, the first call's planning) cancels out.
# The session gives way to turns (crossfold.give_way = on), as every connection of the store
# does: the checks of migration 10 are counted.
# Prints per variant and script: instructions per call, WAL bytes per call.
set -euo pipefail
cd "$(dirname "$0")"
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
MIGRATIONS=${MIGRATIONS:-../../../migrations}
VARIANTS=${VARIANTS:-"m1 m5 all"}
SCRIPTS=${SCRIPTS:-"w1-cached w5"}
N=${N:-200}
. ./schema.sh

DIR=$(mktemp -d)
as_owner() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[[ $(id -u) == 0 ]] && chown postgres "$DIR"
PORT=$(( 20000 + RANDOM % 20000 ))
cleanup() {
  as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT
as_owner "$PGBIN/initdb" -D "$DIR/data" -U postgres -A trust --no-sync >/dev/null
cat >>"$DIR/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$DIR'
fsync = off
full_page_writes = off
CONF
URL="postgresql:///postgres?host=$DIR&port=$PORT&user=postgres"
start() { as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start >/dev/null; }
stop() { as_owner "$PGBIN/pg_ctl" -D "$DIR/data" -w stop >/dev/null; }

# The statements of script $1 as prepared statements, then $2 executions of them, one
# statement a line (single-user mode ends a statement at the end of its line): the store's
# statements are prepared once per connection too.
calls() {
  local script=$1 count=$2 i k statements
  statements=$(grep -v -e '^--' -e '^\\' "$script.sql" | sed -e 's/ \\gset$//' \
    -e 's/:a\b/$1/g' -e 's/:n\b/$2/g' -e 's/:client_id\b/$3/g' -e 's/:version\b/$4/g')
  k=0
  while IFS= read -r statement; do
    k=$((k + 1))
    echo "PREPARE call$k(int, bigint, int, bigint) AS ${statement%;};"
  done <<<"$statements"
  for ((i = 1; i <= count; i++)); do
    for ((j = 1; j <= k; j++)); do
      echo "EXECUTE call$j($(( (7919 * i) % 10000 + 1 )), $i, 0, -1);"
    done
  done
}

# Builds variant $1 afresh in schema cf, then runs $3 calls of script $2 in a single-user
# server under callgrind. Prints "INSTRUCTIONS WAL_BYTES".
measure() {
  local variant=$1 script=$2 count=$3 out
  start
  psql -X -q -v ON_ERROR_STOP=1 "$URL" -c "DROP SCHEMA IF EXISTS cf CASCADE" -c "CREATE SCHEMA cf" \
    >/dev/null 2>&1
  build_sql cf "$variant" | PGOPTIONS="-c client_min_messages=warning" \
    psql -X -q -v ON_ERROR_STOP=1 "$URL" >/dev/null
  psql -X -q "$URL" -c "VACUUM ANALYZE cf.streams" -c "VACUUM ANALYZE cf.events" -c CHECKPOINT \
    >/dev/null
  stop
  {
    echo "SELECT pg_current_wal_insert_lsn()::text AS lsn_before;"
    calls "$script" "$count"
    echo "SELECT pg_current_wal_insert_lsn()::text AS lsn_after;"
  } >"$DIR/calls.sql"
  out=$(as_owner valgrind --tool=callgrind --callgrind-out-file="$DIR/cg.out" \
          "$PGBIN/postgres" --single -D "$DIR/data" -c search_path=cf \
          -c crossfold.give_way=on postgres \
          <"$DIR/calls.sql" 2>&1)
  echo "$out" | gawk -F'"' '
    /lsn_before =/ { split($2, a, "/"); before = strtonum("0x" a[1]) * 4294967296 + strtonum("0x" a[2]) }
    /lsn_after =/ { split($2, a, "/"); after = strtonum("0x" a[1]) * 4294967296 + strtonum("0x" a[2]) }
    /I *refs:/ { gsub(/,/, "", $0); split($0, f, "refs:"); ir = f[2] + 0 }
    END { printf "%d %d\n", ir, after - before }'
}

echo "variant script instructions_per_call wal_bytes_per_call"
for variant in $VARIANTS; do
  for script in $SCRIPTS; do
    n=$N
    [[ $script == w5 ]] && n=$(( N / 10 ))
    read -r ir1 wal1 < <(measure "$variant" "$script" "$n")
    read -r ir2 wal2 < <(measure "$variant" "$script" $(( 2 * n )))
    echo "$variant $script $(( (ir2 - ir1) / n )) $(( (wal2 - wal1) / n ))"
  done
done
