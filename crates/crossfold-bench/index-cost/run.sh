#!/usr/bin/env bash
# What the schema costs a write: pgbench sends the statements the store sends for W1 and W5 to
# schemas built from this checkout's migrations, each taken apart one change at a time, in
# alternating rounds, so that every figure has its reference measured minutes away from it.
#
# Usage: run.sh [DATABASE_URL]   (default $DATABASE_URL, else postgres://postgres@127.0.0.1:5432/postgres)
#
#   VARIANTS  schemas to compare, space-separated (default: see below), each as schema.sh
#             describes: BASE[:MOD,...], for example m1 (the schema of commit b3d91c2, before
#             the log epochs and the read indexes), m5:-category,-type, all.
#   SCRIPTS   pgbench scripts (default "w1 w1-cached w5"): w1.sql reads an account with the
#             store's read_one statement and appends one event at its version; w1-cached.sql
#             only appends (what the store sends while the executor's cache holds the
#             account); w5.sql appends 100 events to a new stream.
#   T         seconds per run (default 8)     ROUNDS  rounds (default 3)
#   CLIENTS   pgbench clients (default 16, as the load harness's default in-flight count)
#   REF       the variant ratios are taken against (default: the first)
#   PREFIX    schema names: PREFIX_0, PREFIX_1, ... (default cf_ic)
#
# Every run starts from a schema built afresh — 10,000 accounts of one event each — and a
# checkpoint. Round r starts at the r-th variant, so no variant always runs first. Prints one
# line per run (round, variant, script, calls/s, server CPU µs per call), then per variant and
# script the median calls/s, the median of its per-round ratio to REF's run in the same round,
# and the median server CPU per call with its ratio to REF's. W5's calls/s times 100 is
# events/s. The schemas are dropped at the end.
#
# The server CPU per call is what the bench's PostgreSQL processes spent (user and system
# time from /proc, so the server must run on this machine), sampled each second from 2 s into
# the run until its end, divided by the calls made meanwhile. On a machine shared with other work it
# moves far less than the rates do (those share the CPU with whatever else runs), so it is the
# better figure there; it leaves out waiting (WAL flushes, locks) and the client's work.
set -euo pipefail
cd "$(dirname "$0")"
URL=${1:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
MIGRATIONS=../../../migrations
VARIANTS=${VARIANTS:-"m1 m5 m5:-stream,-category,-type m5:-category,-type m5:-stream,-type m5:-stream,-category m5:invoker m5:nosp m5:nocheck m5:invoker,nosp,nocheck"}
SCRIPTS=${SCRIPTS:-"w1 w1-cached w5"}
CLIENTS=${CLIENTS:-16}
read -r -a variants <<<"$VARIANTS"
REF=${REF:-${variants[0]}}
PREFIX=${PREFIX:-cf_ic}
OUT=$(mktemp)
q() { PGOPTIONS="-c client_min_messages=warning" psql -X -q -v ON_ERROR_STOP=1 "$URL" "$@" >/dev/null; }
cleanup() {
  for i in "${!variants[@]}"; do
    psql -X -q "$URL" -c "DROP SCHEMA IF EXISTS ${PREFIX}_$i CASCADE" >/dev/null 2>&1 || true
  done
  rm -f "$OUT" "$OUT.pgbench" "$OUT.samples"
}
trap cleanup EXIT

. ./schema.sh

for i in "${!variants[@]}"; do
  # Fails early on a variant that does not build.
  q -c "DROP SCHEMA IF EXISTS ${PREFIX}_$i CASCADE" -c "CREATE SCHEMA ${PREFIX}_$i"
  build_sql "${PREFIX}_$i" "${variants[$i]}" | q 2>&1 | grep -v -e NOTICE -e '^$' >&2 || true
done

# "CALLS PID:TICKS ...": how many calls the bench made so far (the scripts take one value of
# the schema's sequence per call), and the CPU time each of its server processes (application
# name $1) used so far, in clock ticks.
sample() {
  local pids pid rest calls line
  # A server out of connections answers nothing: such a sample is left out.
  pids=$(psql -X -At "$URL" -c "SELECT pid FROM pg_stat_activity WHERE application_name = '$1'" \
           2>/dev/null) || return 0
  calls=$(psql -X -At "$URL" -c "SELECT last_value FROM $1.bench_ids" 2>/dev/null) || return 0
  line=$calls
  for pid in $pids; do
    # User and system time: fields 14 and 15 of /proc/PID/stat, counted after the ")" that
    # ends the command name.
    rest=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
    line="$line $pid:$(echo "$rest" | awk '{print $12 + $13}')"
  done
  echo "$line"
}

T=${T:-8}
n=${#variants[@]}
for round in $(seq 1 "${ROUNDS:-3}"); do
  for k in $(seq 0 $((n - 1))); do
    i=$(( (k + round - 1) % n ))
    s=${PREFIX}_$i
    for script in $SCRIPTS; do
      q -c "DROP SCHEMA IF EXISTS $s CASCADE" -c "CREATE SCHEMA $s"
      build_sql "$s" "${variants[$i]}" | q 2>/dev/null
      q -c "VACUUM ANALYZE $s.streams" -c "VACUUM ANALYZE $s.events" -c "CHECKPOINT"
      # A run some of whose clients failed prints no rate.
      PGAPPNAME=$s PGOPTIONS="-c search_path=$s" pgbench -n -M prepared -c "$CLIENTS" -j 2 \
        -D per=$((10000 / CLIENTS)) -T "$T" -f "$script.sql" "$URL" >"$OUT.pgbench" 2>&1 &
      bench=$!
      : >"$OUT.samples"
      start=$SECONDS
      while kill -0 "$bench" 2>/dev/null; do
        sleep 1
        (( SECONDS - start >= 2 )) && sample "$s" >>"$OUT.samples"
      done
      wait "$bench" || true
      # A run some of whose clients failed prints no rate.
      tps=$(awk '/^tps/{t = $3} /aborted/{bad = 1} END {if (!bad) print t}' "$OUT.pgbench")
      # Between the first and the last sample that saw every client's server process, over
      # the processes both saw.
      cpu=$(awk -v clients="$CLIENTS" '
        NF == clients + 1 && $1 ~ /^[0-9]+$/ {
          if (!seen) { seen = 1; c0 = $1; for (k = 2; k <= NF; k++) { split($k, p, ":"); t0[p[1]] = p[2] } }
          c1 = $1; delete t1; for (k = 2; k <= NF; k++) { split($k, p, ":"); t1[p[1]] = p[2] }
        }
        END {
          if (c1 <= c0) exit
          for (pid in t1) if (pid in t0) { if (t1[pid] < t0[pid]) exit; ticks += t1[pid] - t0[pid] }
          printf "%.0f", ticks * 10000 / (c1 - c0)
        }' "$OUT.samples")
      line="$round ${variants[$i]} $script ${tps:-failed} ${cpu:-?}"
      echo "$line"
      echo "$line" >>"$OUT"
    done
  done
done

echo
echo "variant script median_calls_per_s median_ratio_to_$REF (per-round ratios) median_server_cpu_us_per_call ratio_to_$REF"
for script in $SCRIPTS; do
  for v in "${variants[@]}"; do
    awk -v v="$v" -v s="$script" -v ref="$REF" '
      $3 == s && $2 == v { t[$1] = $4; if ($5 != "?") c[$1] = $5 }
      $3 == s && $2 == ref { r[$1] = $4; if ($5 != "?") rc[$1] = $5 }
      function median(a, n,   i, j, x) {
        for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      END {
        n = 0; m = 0; list = ""
        for (k = 1; k <= 1000; k++) {
          if (!(k in t)) continue
          n++; x[n] = t[k]
          if (k in r && r[k] > 0) { m++; y[m] = t[k] / r[k]; list = list sprintf(" %.2f", t[k] / r[k]) }
        }
        if (n == 0) exit
        p = 0; q = 0
        for (k = 1; k <= 1000; k++) {
          if (k in c) { p++; u[p] = c[k] }
          if (k in rc) { q++; w[q] = rc[k] }
        }
        cu = p ? median(u, p) : 0; cr = q ? median(w, q) : 0
        printf "%s %s %.0f %.2f (%s ) %.0f %.2f\n", v, s, median(x, n), m ? median(y, m) : 0, list, cu, cr ? cu / cr : 0
      }' "$OUT"
  done
done
