#!/usr/bin/env bash
# test_backup.sh — deploy/backup.sh against real clusters: pgBackRest setup
# (idempotent), a full backup, point-in-time restore into a fresh cluster
# after "someone dropped the journal partition", incremental backup, info,
# and the pg_dump route.
#
#   test_backup.sh SOURCE_DIR SWITCHCTL HSM_KEYTOOL JOURNAL_GEN
#
# The scenario: a throwaway cluster (deploy/pg.sh) gets the migrations and a
# business day of journal events written by the real journal writer
# (tests/db/journal_gen.c, HMAC-chained under a key store made with
# hsm-keytool); setup, full backup; more events and the settlement of that
# day; the aggregates of
# the whole database are recorded at a restore point T; after T come more
# events and a superuser's DROP of the day's partition.  The restore to T
# into a new folder on a new port must give exactly the aggregates recorded
# at T: every event up to T, the partition back, nothing written after T;
# and switchctl verify accepts every chain there, and settling again gives
# the same clearing file and no rows.
# The expected values come from the source cluster itself (SQL at T), never
# from backup.sh.  As root the folders are unreachable for the server's user
# (mode 0700 under root), so the clusters and the repository take the
# fallback route, as in CI's clone under /root.  A trap stops and deletes
# every cluster.
#
# Exits 77 (skipped) when the PostgreSQL 15 server or pgbackrest is missing.
set -euo pipefail

SRC=$(readlink -f "${1:?usage: test_backup.sh SOURCE_DIR SWITCHCTL HSM_KEYTOOL JOURNAL_GEN}")
SWITCHCTL=$(readlink -f "${2:?switchctl binary}")
KEYTOOL=$(readlink -f "${3:?hsm-keytool binary}")
JOURNAL_GEN=$(readlink -f "${4:?journal_gen binary}")
PG_SH=$SRC/deploy/pg.sh
BACKUP_SH=$SRC/deploy/backup.sh
BIN=${SW_PG_BIN:-/usr/lib/postgresql/15/bin}
if [[ ! -x "$BIN/initdb" || ! -x "$BIN/psql" ]]; then
  echo "PostgreSQL 15 is not installed ($BIN): skipped (run deploy/install-deps.sh)"
  exit 77
fi
if ! command -v pgbackrest >/dev/null 2>&1; then
  echo "pgbackrest is not installed: skipped (run deploy/install-deps.sh)"
  exit 77
fi
[[ -x "$SWITCHCTL" && -x "$BACKUP_SH" ]] || {
  echo "not executable: $SWITCHCTL or $BACKUP_SH" >&2
  exit 2
}
PSQL=$BIN/psql

unset SW_PG_DIR SW_PG_PORT SW_PG_FALLBACK_BASE SW_BACKUP_DIR SW_DB_URL \
  PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE \
  PGSERVICE PGSERVICEFILE PGOPTIONS

TMP=$(mktemp -d)    # mode 0700: as root, the server's user cannot enter
SHARED=$(mktemp -d) # the fallback base, reachable by everyone
chmod 0755 "$SHARED"
mkdir -m 0755 "$SHARED/fallback"
export SW_PG_FALLBACK_BASE=$SHARED/fallback
CLUSTERS=() # every SW_PG_DIR made, stopped and deleted by the trap

cleanup() {
  local d pid
  for d in "${CLUSTERS[@]}"; do
    SW_PG_DIR=$d "$PG_SH" stop >/dev/null 2>&1 || true
    if [[ -f "$d/data/postmaster.pid" ]]; then
      pid=$(head -n 1 "$d/data/postmaster.pid")
      if [[ "$pid" =~ ^[0-9]+$ ]]; then kill -QUIT "$pid" 2>/dev/null || true; fi
    fi
    SW_PG_DIR=$d "$PG_SH" destroy --force >/dev/null 2>&1 || true
  done
  rm -rf "$TMP" "$SHARED"
}
trap cleanup EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() {
  echo "FAIL: $*" >&2
  failed=$((failed + 1))
}
same() {
  if [[ "$2" == "$3" ]]; then pass; else fail "$1: got '$2', wanted '$3'"; fi
}
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
  local desc=$1
  shift
  if "$@"; then pass; else fail "$desc"; fi
}
differ() {
  if [[ "$2" != "$3" ]]; then pass; else fail "$1: both are '$2'"; fi
}

OUT=$TMP/out
# bk DIR CMD... — backup.sh for the cluster DIR; output in $OUT.
bk() {
  local dir=$1
  shift
  SW_PG_DIR=$dir SW_BACKUP_DIR=$TMP/var/backup "$BACKUP_SH" "$@" >"$OUT" 2>&1 </dev/null
}
# run DESCRIPTION WANT_RC DIR CMD...
run() {
  local desc=$1 want=$2 rc=0
  shift 2
  bk "$@" || rc=$?
  if [[ "$rc" == "$want" ]]; then pass; else
    fail "$desc: backup.sh ${*:2} exited $rc, wanted $want: $(head -c 1500 "$OUT")"
  fi
}
out_has() { grep -q -- "$1" "$OUT"; }

listening() { ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q .; }
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    if ! listening "$p" && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

# new_cluster DIR PORT — init and start a cluster; prints its url.
new_cluster() {
  CLUSTERS+=("$1")
  SW_PG_DIR=$1 SW_PG_PORT=$2 "$PG_SH" init >"$TMP/init.log" 2>&1 ||
    {
      cat "$TMP/init.log" >&2
      return 1
    }
  SW_PG_DIR=$1 "$PG_SH" start >/dev/null
  SW_PG_DIR=$1 "$PG_SH" url
}

# sql URL SQL — one statement as the url's role; unaligned.
sql() {
  "$PSQL" -X -At -w -v ON_ERROR_STOP=1 "$1" -c "$2"
}
# admin DIR SQL — as the superuser of the cluster DIR.
admin() {
  SW_PG_DIR=$1 "$PG_SH" psql --admin -At -v ON_ERROR_STOP=1 -c "$2"
}

# The aggregates the restore must reproduce, from SQL alone: the journal's
# counts and signed sums per business date and currency (minor units, D
# negative), events per kind, the chain heads, the journal partitions, and
# the row count of every table of schema switch.
AGG_SQL=$(
  cat <<'EOF'
SELECT concat_ws(E'\n',
  (SELECT string_agg(format('%s %s n=%s sum=%s', business_date, currency, n, s), E'\n' ORDER BY business_date, currency)
     FROM (SELECT business_date, currency, count(*) AS n,
                  sum(CASE sign WHEN 'C' THEN amount_minor ELSE -amount_minor END) AS s
             FROM switch.journal_event WHERE amount_minor IS NOT NULL
            GROUP BY 1, 2) a),
  (SELECT string_agg(format('%s %s=%s', business_date, event, n), E'\n' ORDER BY business_date, event)
     FROM (SELECT business_date, event, count(*) AS n FROM switch.journal_event GROUP BY 1, 2) e),
  (SELECT string_agg(format('head %s node %s seq %s %s', business_date, node_id, chain_seq, encode(chain_hmac, 'hex')), E'\n' ORDER BY business_date, node_id)
     FROM switch.journal_chain_head),
  (SELECT 'partitions ' || string_agg(c.relname, ',' ORDER BY c.relname)
     FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = 'switch.journal_event'::regclass),
  (SELECT string_agg(format('rows %s=%s', table_name,
            (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', table_schema, table_name), false, true, '')))[1]::text),
            E'\n' ORDER BY table_name)
     FROM information_schema.tables
    WHERE table_schema = 'switch' AND table_type = 'BASE TABLE'))
EOF
)
aggregates() { sql "$1" "$AGG_SQL"; }

D1=2024-03-14
D2=2024-03-15
# events URL DATE FIRST_TXN NTXN — NTXN transactions of node 1 on DATE
# through the journal writer: each a received and a response event, in EUR,
# USD and JPY, one in five a refund, one in seven declined (journal_gen.c).
events() {
  "$JOURNAL_GEN" "$1" "$KS" "$MK" "$2" "$3" "$4" 1 >"$TMP/gen.txt" 2>&1 ||
    {
      fail "journal_gen $2 $3 $4: $(cat "$TMP/gen.txt")"
      exit 1
    }
}

# The merchants, terminals and issuer journal_gen's transactions name.
reference_rows() {
  sql "$1" "
    INSERT INTO switch.merchants (merchant_id, name, mcc, fee_bps, fee_fixed_minor, fee_currency, settlement_days)
      VALUES ('M00000000000001', 'Shop one', '5411', 150, 10, '978', 1),
             ('M00000000000002', 'Shop two', '5812', 95, 0, '840', 2);
    INSERT INTO switch.terminals (terminal_id, merchant_id)
      VALUES ('T0000001', 'M00000000000001'), ('T0000002', 'M00000000000002');
    INSERT INTO switch.issuers (issuer_id, name, dialect) VALUES ('visa', 'Visa', 'iso87a')" >/dev/null
}

# The chain key: a soft key store made as an operator would.
KS=$TMP/hsm/keys.store
MK=$TMP/hsm/master.key
mkdir -m 0700 "$TMP/hsm"
{
  "$KEYTOOL" --keystore "$KS" --master-key "$MK" init-master-key &&
    "$KEYTOOL" --keystore "$KS" --master-key "$MK" init &&
    "$KEYTOOL" --keystore "$KS" --master-key "$MK" --audit-log "$TMP/hsm/audit.log" generate journal.chain HMAC HMAC 32
} >"$TMP/keytool.txt" 2>&1 || {
  echo "hsm-keytool: $(cat "$TMP/keytool.txt")" >&2
  exit 2
}

# verify URL DATE — switchctl verify exits 0 and says the chain is intact.
verify() {
  if "$SWITCHCTL" --db "$1" --hsm-keystore "$KS" --hsm-master-key "$MK" verify --date "$2" >"$OUT" 2>&1 &&
    out_has "chain intact" && out_has "verify $2: ok"; then
    pass
  else
    fail "verify $2: $(cat "$OUT")"
  fi
}

# --- the source cluster, setup ---------------------------------------------

# A copy of the migrations: the same files for every migrate of this run.
cp -r "$SRC/db/migrations" "$TMP/migrations"
SRC_DIR=$TMP/var/pg
SRC_PORT=$(free_port)
echo "--- source: SW_PG_DIR=$SRC_DIR port $SRC_PORT"
URL=$(new_cluster "$SRC_DIR" "$SRC_PORT")
"$SWITCHCTL" --db "$URL" --migrations "$TMP/migrations" migrate >"$OUT" 2>&1 ||
  {
    fail "migrate: $(cat "$OUT")"
    exit 1
  }
reference_rows "$URL"

run "setup before init is refused" 1 "$TMP/nothing/pg" setup
run "full before setup is refused" 1 "$SRC_DIR" full
check "full before setup: no hint: $(cat "$OUT")" out_has "run deploy/backup.sh setup"

events "$URL" "$D1" 1 60
run "setup" 0 "$SRC_DIR" setup
check "setup: no restart for archive_mode" out_has "restarting the server"
same "archive_mode after setup" "$(admin "$SRC_DIR" 'SHOW archive_mode')" on
same "archive_command goes through pgbackrest" \
  "$(admin "$SRC_DIR" 'SHOW archive_command' | grep -c 'pgbackrest .*--stanza=switch archive-push %p')" 1
BK_REAL=$(readlink -f "$TMP/var/backup")
CONF=$BK_REAL/conf/pgbackrest.conf
same "pgbackrest.conf is owner-only" "$(stat -c %a "$CONF")" 600
same "archive.conf is owner-only" "$(stat -c %a "$(readlink -f "$SRC_DIR")/data/archive.conf")" 600
same "the repository folder is owner-only" "$(stat -c %a "$BK_REAL")" 700
if ((EUID == 0)); then
  same "the repository belongs to the server's user" "$(stat -c %U "$BK_REAL/repo")" swpg
  same "as root, the unreachable backup folder went to the fallback" \
    "$(dirname "$BK_REAL")" "$SHARED/fallback"
fi
pid_before=$(head -n 1 "$SRC_DIR/data/postmaster.pid")
run "setup again" 0 "$SRC_DIR" setup
same "setup again does not restart the server" "$(head -n 1 "$SRC_DIR/data/postmaster.pid")" "$pid_before"
same "setup again keeps the configuration" "$(stat -c %a "$CONF")" 600

# --- full backup, more events, settlement, restore point T ------------------

run "full backup" 0 "$SRC_DIR" full
check "full: no label: $(cat "$OUT")" out_has "full backup [0-9]*-[0-9]*F done"
events "$URL" "$D1" 61 40
events "$URL" "$D2" 1 10 # the next day has begun (seq 1..20)

mkdir "$TMP/settle-src" "$TMP/settle-rst"
"$SWITCHCTL" --db "$URL" settle --date "$D1" --out "$TMP/settle-src" >"$TMP/settle-src.txt" 2>&1 ||
  fail "settle on the source: $(cat "$TMP/settle-src.txt")"
SETTLE_SRC=$(grep -m1 '^sha256 ' "$TMP/settle-src.txt" || true)
check "settle prints a sha256 line: '$SETTLE_SRC'" grep -qE '^sha256 [0-9a-f]{64}$' <<<"$SETTLE_SRC"
verify "$URL" "$D1"
verify "$URL" "$D2"

AT_T=$(aggregates "$URL")
sleep 1.2
T=$(sql "$URL" "SELECT to_char(date_trunc('second', clock_timestamp()) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'")
sleep 1.2
echo "--- restore point T = $T"
# Independent of the database: the day's counts from the generator.
same "at T: 200 events on $D1" "$(sql "$URL" "SELECT count(*) FROM switch.journal_event WHERE business_date = '$D1'")" 200
same "at T: 20 events on $D2" "$(sql "$URL" "SELECT count(*) FROM switch.journal_event WHERE business_date = '$D2'")" 20

# --- the damage after T ----------------------------------------------------

events "$URL" "$D2" 11 15 # seq 21..50, after T
admin "$SRC_DIR" "DROP TABLE switch.journal_event_${D1//-/}" >/dev/null
same "damage: the $D1 partition is gone" \
  "$(sql "$URL" "SELECT to_regclass('switch.journal_event_${D1//-/}') IS NULL")" t
AFTER=$(aggregates "$URL")
differ "damage changed the aggregates" "$AFTER" "$AT_T"

# --- restore to T ----------------------------------------------------------

RST_DIR=$TMP/restored/var/pg
RST_PORT=$(free_port)
CLUSTERS+=("$RST_DIR")
run "restore without --to is refused" 1 "$SRC_DIR" restore --target "$T"
run "restore with a target without offset is refused" 1 "$SRC_DIR" restore --target "${T%+00}" --to "$RST_DIR" --port "$RST_PORT"
check "bad target: no reason: $(cat "$OUT")" out_has "explicit UTC offset"
mkdir -p "$TMP/busy" && touch "$TMP/busy/x"
run "restore into a non-empty folder is refused" 1 "$SRC_DIR" restore --target "$T" --to "$TMP/busy" --port "$RST_PORT"
run "restore on the source's port is refused" 1 "$SRC_DIR" restore --target "$T" --to "$RST_DIR" --port "$SRC_PORT"
same "refusals made no cluster" "$(test -e "$RST_DIR" && echo yes || echo no)" no

start=$SECONDS
run "restore to T" 0 "$SRC_DIR" restore --target "$T" --to "$RST_DIR" --port "$RST_PORT"
echo "--- restore took $((SECONDS - start))s"
check "restore: no ready line: $(cat "$OUT")" out_has "restored cluster running on 127.0.0.1:$RST_PORT"
RURL=$(SW_PG_DIR=$RST_DIR "$PG_SH" url)
same "the restored url is on the new port" "$(grep -c "@127.0.0.1:$RST_PORT/" <<<"$RURL")" 1
same "the restored cluster answers as switch_writer" "$(sql "$RURL" 'SELECT current_user')" switch_writer
same "the restored cluster is a primary" "$(sql "$RURL" 'SELECT pg_is_in_recovery()')" f
same "the restored cluster does not archive" "$(admin "$RST_DIR" 'SHOW archive_mode')" off
same "the restored cluster listens on 127.0.0.1" "$(sql "$RURL" 'SHOW listen_addresses')" 127.0.0.1
same "no recovery target is left in its configuration" "$(admin "$RST_DIR" 'SHOW recovery_target_time')" ""
RESTORED=$(aggregates "$RURL")
same "restored aggregates are those at T" "$RESTORED" "$AT_T"
same "the $D1 partition is back" \
  "$(sql "$RURL" "SELECT to_regclass('switch.journal_event_${D1//-/}') IS NOT NULL")" t
same "no event written after T" \
  "$(sql "$RURL" "SELECT count(*) FROM switch.journal_event WHERE business_date = '$D2' AND chain_seq > 20")" 0
same "migrations are all there" \
  "$(sql "$RURL" 'SELECT count(*) FROM switch.schema_migrations')" \
  "$(sql "$URL" 'SELECT count(*) FROM switch.schema_migrations')"
if "$SWITCHCTL" --db "$RURL" --migrations "$TMP/migrations" migrate >"$OUT" 2>&1; then
  pass
else
  fail "migrate on the restored cluster: $(cat "$OUT")"
fi
check "the restored schema is not up to date: $(cat "$OUT")" out_has "up to date"
same "the source is untouched by the restore" "$(aggregates "$URL")" "$AFTER"
run "restore into the same folder again is refused" 1 "$SRC_DIR" restore --target "$T" --to "$RST_DIR" --port "$(free_port)"

# Targets the backups cannot reach fail and leave no half-made cluster.
BAD_DIR=$TMP/bad/var/pg
CLUSTERS+=("$BAD_DIR")
run "restore to before the first backup fails" 1 "$SRC_DIR" restore --target "2001-01-01 00:00:00+00" --to "$BAD_DIR" --port "$(free_port)"
check "... naming the missing backup: $(cat "$OUT")" out_has "unable to find backup set"
check "... and removes the unfinished cluster" test ! -e "$BAD_DIR"
LATER=$(sql "$URL" "SELECT to_char((now() + interval '1 hour') AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || '+00'")
run "restore to after the end of the archive fails" 1 "$SRC_DIR" restore --target "$LATER" --to "$BAD_DIR" --port "$(free_port)"
check "... with the server's reason: $(cat "$OUT")" out_has "recovery ended before configured recovery target was reached"
check "... and a hint" out_has "hint: the archived WAL ends before the target time"
check "... and removes the unfinished cluster" test ! -e "$BAD_DIR"

# The restored journal verifies (every chain and the settled totals of D1),
# and settlement is deterministic: re-running it on the restored cluster,
# whose D1 was settled before T, prints the same digest and adds no rows.
verify "$RURL" "$D1"
verify "$RURL" "$D2"
ROWS_BEFORE=$(aggregates "$RURL")
"$SWITCHCTL" --db "$RURL" settle --date "$D1" --out "$TMP/settle-rst" >"$TMP/settle-rst.txt" 2>&1 ||
  fail "settle on the restored cluster: $(cat "$TMP/settle-rst.txt")"
same "settle digest after restore" "$(grep -m1 '^sha256 ' "$TMP/settle-rst.txt" || true)" "$SETTLE_SRC"
same "settle on the restored cluster added no rows" "$(aggregates "$RURL")" "$ROWS_BEFORE"

# --- incremental backup and info ---------------------------------------------

run "incremental backup" 0 "$SRC_DIR" incr
check "incr: no label: $(cat "$OUT")" out_has "incr backup [0-9]*-[0-9]*F_[0-9]*-[0-9]*I done"
run "info" 0 "$SRC_DIR" info
check "info: stanza not ok: $(cat "$OUT")" out_has "status: ok"
same "info lists one full backup" "$(grep -c 'full backup:' "$OUT")" 1
same "info lists one incremental backup" "$(grep -c 'incr backup:' "$OUT")" 1
run "info --json" 0 "$SRC_DIR" info --json
check "info --json: $(head -c 300 "$OUT")" out_has '"name":"switch"'
run "check" 0 "$SRC_DIR" check

# --- pg_dump route: the restored cluster into a third one -----------------

DUMP=$TMP/switch.dump
run "dump" 0 "$RST_DIR" dump "$DUMP"
same "the dump is owner-only" "$(stat -c %a "$DUMP")" 600
run "dump over an existing file is refused" 1 "$RST_DIR" dump "$DUMP"
LD_DIR=$TMP/loaded/var/pg
LURL=$(new_cluster "$LD_DIR" "$(free_port)")
run "load into a fresh cluster" 0 "$LD_DIR" load "$DUMP"
same "loaded aggregates are those at T" "$(aggregates "$LURL")" "$AT_T"
same "the reader reads the loaded journal" \
  "$(sql "${LURL/switch_writer@/switch_reader@}" 'SELECT count(*) FROM switch.journal_event')" \
  "$(sql "$RURL" 'SELECT count(*) FROM switch.journal_event')"
if "$SWITCHCTL" --db "$LURL" --migrations "$TMP/migrations" migrate >"$OUT" 2>&1; then
  pass
else
  fail "migrate on the loaded cluster: $(cat "$OUT")"
fi
check "the loaded schema is not up to date: $(cat "$OUT")" out_has "up to date"
run "load into a cluster that holds tables is refused" 1 "$LD_DIR" load "$DUMP"
check "load refusal: no reason: $(cat "$OUT")" out_has "freshly initialised"
run "load of a missing file is refused" 1 "$LD_DIR" load "$TMP/none.dump"

run "unknown command" 1 "$SRC_DIR" frobnicate
run "no command" 2 "$SRC_DIR"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
