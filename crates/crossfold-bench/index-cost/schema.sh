# The schemas the cost scripts compare (sourced by run.sh and instructions.sh).
#
# build_sql SCHEMA VARIANT prints the SQL that builds VARIANT in the (existing, empty) schema
# SCHEMA and fills it with 10,000 accounts of one event each. A VARIANT is BASE[:MOD,...]:
#   BASE  mN   the migrations 0001 to N of this checkout (m1 is the schema of commit b3d91c2,
#              before the log epochs and the read indexes), or
#         all  every migration of this checkout.
#   MOD   -stream -category -type   drop that log read index (of migration 0003)
#         +stream +category +type   create it (from migration 7 on as create_read_index does)
#         invoker    the append functions SECURITY INVOKER instead of DEFINER
#         nosp       the append functions without their `SET search_path`
#         nocheck    the append functions without the once-per-session log-order check and
#                    the synchronous_commit check
#         noupdated  the streams row update without `updated_at = now()`
#         ff100      the streams table at fillfactor 100 (no room for HOT updates)
#         nodedup    the events table's non-unique indexes with deduplicate_items off (their
#                    keys end in the log position, so no two entries are ever equal)
#         seqcache   the events sequence handing out 64 values at a time to each session
#         nochecks   the tables' CHECK constraints on events and streams dropped (PostgreSQL
#                    reads each one's expression and compiles it again for every statement
#                    that writes the table; migration 9 drops them)
#         onecheck   one CHECK constraint on events for the three rules (with nochecks)
# MIGRATIONS must name the migrations directory.

# $1 schema, $2 index: as migration 3 made it, or with $3 "nodedup" as create_read_index does.
index_sql() {
  local with=""
  [[ ${3:-} == nodedup ]] && with=" WITH (deduplicate_items = off)"
  case $2 in
    stream) echo "CREATE INDEX events_stream_log_idx ON $1.events (stream_id, transaction_id, sequence)$with;";;
    category) echo "CREATE INDEX events_category_log_idx ON $1.events (split_part(stream_id, '-', 1), transaction_id, sequence)$with;";;
    type) echo "CREATE INDEX events_type_log_idx ON $1.events (event_type, transaction_id, sequence)$with;";;
    *) echo "unknown index $2" >&2; exit 2;;
  esac
}

# Rewrites the bodies of the append functions: $1 schema, $2 regexp, $3 replacement.
rewrite_sql() {
  cat <<SQL
DO \$do\$
DECLARE f oid; def text;
BEGIN
  FOR f IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = '$1'::regnamespace
                                        AND p.proname IN ('append', 'append_one') LOOP
    def := regexp_replace(pg_get_functiondef(f), \$re\$$2\$re\$, \$re\$$3\$re\$, 'g');
    EXECUTE def;
  END LOOP;
END
\$do\$;
SQL
}

# The SQL that turns a fresh schema into variant $2: $1 schema.
build_sql() {
  local s=$1 spec=$2 base mods last mod f n list
  base=${spec%%:*}
  mods=""
  [[ $spec == *:* ]] && mods=${spec#*:}
  case $base in
    all) last=9999;;
    m[0-9]*) last=${base#m};;
    *) echo "unknown base $base" >&2; exit 2;;
  esac
  echo "SET search_path TO $s;"
  for f in "$MIGRATIONS"/[0-9][0-9][0-9][0-9]_*.sql; do
    n=$(basename "$f"); n=$((10#${n%%_*}))
    (( n <= last )) || continue
    sed 's/ CONCURRENTLY//' "$f"
    echo ";"
  done
  echo "RESET search_path;"
  IFS=, read -r -a list <<<"$mods"
  for mod in "${list[@]}"; do
    case $mod in
      -stream|-category|-type) echo "DROP INDEX $s.events_${mod#-}_log_idx;";;
      +stream|+category|+type)
        # On a base with migration 7, as create_read_index builds it.
        if (( last >= 7 )); then index_sql "$s" "${mod#+}" nodedup; else index_sql "$s" "${mod#+}"; fi;;
      invoker|nosp)
        local change="SECURITY INVOKER"
        [[ $mod == nosp ]] && change="RESET search_path"
        echo "DO \$\$ DECLARE f regprocedure; BEGIN
                FOR f IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = '$s'::regnamespace
                                                    AND p.proname IN ('append', 'append_one') LOOP
                  EXECUTE format('ALTER FUNCTION %s $change', f);
                END LOOP; END \$\$;";;
      nocheck)
        rewrite_sql "$s" "IF current_setting\('crossfold[^;]*;[^;]*;[^;]*;" ""
        rewrite_sql "$s" "IF current_setting\('synchronous_commit'\)[^;]*;[^;]*;" "";;
      noupdated) rewrite_sql "$s" ", updated_at = now\(\)" "";;
      ff100) echo "ALTER TABLE $s.streams SET (fillfactor = 100);";;
      nodedup)
        echo "DO \$\$ DECLARE i regclass; BEGIN
                FOR i IN SELECT x.indexrelid FROM pg_index x
                         WHERE x.indrelid = '$s.events'::regclass AND NOT x.indisunique LOOP
                  EXECUTE format('ALTER INDEX %s SET (deduplicate_items = off)', i);
                END LOOP; END \$\$;";;
      seqcache) echo "ALTER TABLE $s.events ALTER COLUMN sequence SET CACHE 64;";;
      nochecks)
        echo "DO \$\$ DECLARE c record; BEGIN
                FOR c IN SELECT conrelid::regclass AS t, conname FROM pg_constraint
                         WHERE contype = 'c' AND conrelid IN ('$s.events'::regclass, '$s.streams'::regclass) LOOP
                  EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.t, c.conname);
                END LOOP; END \$\$;";;
      onecheck)
        echo "ALTER TABLE $s.events ADD CONSTRAINT events_checked CHECK (stream_version > 0
                AND schema_version BETWEEN 0 AND 65535
                AND (payload_json IS NULL) <> (payload_bytes IS NULL));";;
      *) echo "unknown modification $mod" >&2; exit 2;;
    esac
  done
  # The scripts' ids and call counts come from an unlogged sequence: a logged one gives the
  # calling transaction an id whenever it writes WAL (every 32 values), and an append must be
  # its transaction's first write (migration 6), so one call in 32 would be refused.
  cat <<SQL
CREATE UNLOGGED SEQUENCE $s.bench_ids;
INSERT INTO $s.streams (stream_id, version) SELECT 'account-' || g, 1 FROM generate_series(1, 10000) g;
INSERT INTO $s.events (event_id, stream_id, stream_version, event_type, schema_version, payload_json, metadata)
  SELECT md5('account-' || g)::uuid, 'account-' || g, 1, 'AccountOpened', 1, '{"owner": "x"}', '{"recorded_at": "2026-12-07T12:00:00.000000Z"}'
  FROM generate_series(1, 10000) g;
SQL
}

