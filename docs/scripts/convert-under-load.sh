#!/usr/bin/env bash
# Converts a log of N events (default 1,000,000) to a partitioned one while four pgbench
# clients append, and prints the conversion's report, the appends' throughput, failures and
# slowest latencies, then the same appends without a conversion for comparison.
# See docs/benchmarks.md, "Partitioned logs". Needs psql, pgbench and a release build of the
# `crossfold` command (CROSSFOLD, default target/release/crossfold).
set -euo pipefail
N=${1:-1000000}
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/postgres}"
export DATABASE_URL
CROSSFOLD=${CROSSFOLD:-target/release/crossfold}
SCHEMA=crossfold_conversion
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
psql "$DATABASE_URL" -q -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" 2>/dev/null
"$CROSSFOLD" --schema "$SCHEMA" migrate >/dev/null
psql "$DATABASE_URL" -q -c "SET search_path = $SCHEMA" \
  -c "INSERT INTO streams (stream_id, version) SELECT 'account-' || g, 10 FROM generate_series(1, $N / 10) g" \
  -c "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, payload_json, metadata)
      SELECT gen_random_uuid(), 'account-' || (g / 10 + 1), g % 10 + 1, 'Deposited', 1,
             jsonb_build_object('amount', g),
             jsonb_build_object('recorded_at', 1796690000000000 + g, 'correlation_id', gen_random_uuid(), 'actor', 'bench')
      FROM generate_series(0, $N - 1) g" \
  -c "VACUUM ANALYZE events" -c "CHECKPOINT"
cat > "$work/append.pgb" <<PGB
\set n random(1, 1000000000)
SELECT * FROM $SCHEMA.append_one('live-' || :client_id || '-' || :n, -1, ARRAY[gen_random_uuid()], ARRAY['Opened'], ARRAY[1], ARRAY['{"a":1}'::jsonb], ARRAY[NULL::bytea], ARRAY['{"recorded_at": 1796690000000000}'::jsonb]);
PGB
appends() { # label
  (cd "$work" && rm -f pgbench_log.* && pgbench "$DATABASE_URL" -n -c 4 -j 2 -T 25 -f append.pgb -l > "$work/$1.out" 2>&1)
  echo "$1:"; grep -E "tps|latency average|failed|aborted" "$work/$1.out" || true
  echo "  slowest appends (us): $(cat "$work"/pgbench_log.* | awk '{print $3}' | sort -n | tail -3 | tr '\n' ' ')"
}
appends during &
sleep 5
"$CROSSFOLD" --schema "$SCHEMA" --json partitions convert --size 10000000
wait
appends without
psql "$DATABASE_URL" -Atc "SELECT 'default partition events: ' || count(*) FROM $SCHEMA.events_default" \
  -c "SELECT 'event_ids bytes per event: ' || pg_total_relation_size('$SCHEMA.event_ids') / (SELECT count(*) FROM $SCHEMA.event_ids)"
psql "$DATABASE_URL" -q -c "SET client_min_messages = warning" -c "DROP SCHEMA $SCHEMA CASCADE"
