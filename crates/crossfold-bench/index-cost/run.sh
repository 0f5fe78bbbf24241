#!/usr/bin/env bash
# What the log read indexes (migration 0003) cost an append: pgbench calls the store's append
# function with each index alone, all three, and none, on an emptied log each time.
# Usage: run.sh [DATABASE_URL]   (default $DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres)
# T=seconds per run (default 8), ROUNDS (default 3). Prints: round, indexes, script, tps.
# b1.sql appends 1 event per call, b100.sql 100. Works in schema cf_index_cost, dropped at the end.
set -euo pipefail
cd "$(dirname "$0")"
URL=${1:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
MIGRATIONS=../../../migrations
q() { psql -q -v ON_ERROR_STOP=1 "$URL" "$@" >/dev/null; }
trap 'psql -q "$URL" -c "DROP SCHEMA IF EXISTS cf_index_cost CASCADE" >/dev/null 2>&1' EXIT
q -c "DROP SCHEMA IF EXISTS cf_index_cost CASCADE" -c "CREATE SCHEMA cf_index_cost"
for f in "$MIGRATIONS"/000*.sql; do
  (echo "SET search_path TO cf_index_cost;"; sed 's/ CONCURRENTLY//' "$f") | q 2>/dev/null
done
q -c "INSERT INTO cf_index_cost.streams SELECT 'account-' || g, 0 FROM generate_series(1, 10000) g"
DROP="DROP INDEX IF EXISTS cf_index_cost.events_stream_log_idx; DROP INDEX IF EXISTS cf_index_cost.events_category_log_idx; DROP INDEX IF EXISTS cf_index_cost.events_type_log_idx;"
STREAM="CREATE INDEX events_stream_log_idx ON cf_index_cost.events (stream_id, transaction_id, sequence);"
CATEGORY="CREATE INDEX events_category_log_idx ON cf_index_cost.events (split_part(stream_id, '-', 1), transaction_id, sequence);"
TYPE="CREATE INDEX events_type_log_idx ON cf_index_cost.events (event_type, transaction_id, sequence);"
for round in $(seq 1 "${ROUNDS:-3}"); do
  for indexes in none stream category type all; do
    q -c "ALTER TABLE cf_index_cost.events DISABLE TRIGGER events_no_truncate" \
      -c "TRUNCATE cf_index_cost.events" \
      -c "ALTER TABLE cf_index_cost.events ENABLE ALWAYS TRIGGER events_no_truncate" \
      -c "UPDATE cf_index_cost.streams SET version = 0" \
      -c "VACUUM ANALYZE cf_index_cost.streams" -c "CHECKPOINT"
    case $indexes in
      none) sql="$DROP";; stream) sql="$DROP $STREAM";; category) sql="$DROP $CATEGORY";;
      type) sql="$DROP $TYPE";; all) sql="$DROP $STREAM $CATEGORY $TYPE";;
    esac
    q -c "$sql" 2>/dev/null
    for script in b100 b1; do
      tps=$(pgbench -n -M prepared -c 16 -j 2 -T "${T:-8}" -f "$script.sql" "$URL" 2>&1 | awk '/^tps/{print $3}')
      echo "$round $indexes $script $tps"
    done
  done
done
