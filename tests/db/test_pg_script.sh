#!/usr/bin/env bash
# test_pg_script.sh — end-to-end test of deploy/pg.sh (docs/postgresql.md).
#
# usage: test_pg_script.sh [path-to-pg.sh]
#
# Uses throwaway clusters in a temporary folder on free ports and proves:
# init twice (the second changes nothing: same passwords); the secret files,
# password file and connection string have the right modes and owner and no
# output ever shows a password; start twice; switch_writer connects over TCP
# to 127.0.0.1 with the password file (through the URI, and through
# PGPASSFILE), a wrong password is refused; fsync, synchronous_commit,
# full_page_writes and data checksums are on; the server listens on
# 127.0.0.1 only (its settings and ss) and runs as an unprivileged user;
# switch_writer owns schema "switch" and can create tables there but not in
# public; switch_reader can read the writer's new tables (default
# privileges) but cannot write or create anything; a second cluster on a
# port in use fails and names it; stop twice, start again and the data is
# still there; destroy refuses a folder outside var/ without --force, then
# removes everything.  As root this runs twice: once where the server's
# user cannot reach the cluster folder (a mode-0700 parent, like a clone
# under /root: the cluster goes to the fallback folder behind a symlink),
# once where it can.  Leaves nothing running (trap).
#
# Exits 77 (skipped) when the PostgreSQL 15 server binaries are missing.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PG_SH=${1:-$HERE/../../deploy/pg.sh}
PG_SH=$(readlink -f "$PG_SH")
[[ -x "$PG_SH" ]] || {
  echo "not executable: $PG_SH" >&2
  exit 2
}
BIN=${SW_PG_BIN:-/usr/lib/postgresql/15/bin}
if [[ ! -x "$BIN/initdb" || ! -x "$BIN/psql" ]]; then
  echo "PostgreSQL 15 is not installed ($BIN): skipped (run deploy/install-deps.sh)"
  exit 77
fi
PSQL=$BIN/psql

# Nothing from the caller's environment may steer the clusters or psql.
unset SW_PG_DIR SW_PG_PORT SW_PG_FALLBACK_BASE PGHOST PGHOSTADDR PGPORT \
  PGUSER PGDATABASE PGPASSWORD PGPASSFILE PGSERVICE PGSERVICEFILE PGOPTIONS

TMP=$(mktemp -d)         # mode 0700: as root, the server's user cannot enter
SHARED=$(mktemp -d)      # made 0755 below: reachable by everyone
chmod 0755 "$SHARED"
mkdir -m 0755 "$SHARED/fallback"
CLUSTERS=() # every SW_PG_DIR made, stopped by the trap

cleanup() {
  local d pid
  for d in "${CLUSTERS[@]}"; do
    SW_PG_DIR=$d "$PG_SH" stop >/dev/null 2>&1 || true
    # A server that would not stop: end it by its own pid, nothing else.
    if [[ -f "$d/data/postmaster.pid" ]]; then
      pid=$(head -n 1 "$d/data/postmaster.pid")
      if [[ "$pid" =~ ^[0-9]+$ ]]; then kill -QUIT "$pid" 2>/dev/null || true; fi
    fi
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
# check DESCRIPTION COMMAND...: passes when the command succeeds.
check() {
  local desc=$1
  shift
  if "$@"; then pass; else fail "$desc"; fi
}
# same DESCRIPTION GOT WANT
same() {
  if [[ "$2" == "$3" ]]; then pass; else fail "$1: got '$2', wanted '$3'"; fi
}

ALL=$TMP/all-output # every stdout and stderr of pg.sh, searched for secrets
: >"$ALL"
OUT=$TMP/out

# pg CMD... — runs pg.sh with the current cluster's environment; its output
# is in $OUT (and appended to $ALL); returns its exit status.
pg() {
  local rc=0
  SW_PG_DIR=$DIR SW_PG_PORT=$PORT SW_PG_FALLBACK_BASE=$SHARED/fallback \
    "$PG_SH" "$@" >"$OUT" 2>&1 </dev/null || rc=$?
  cat "$OUT" >>"$ALL"
  return "$rc"
}
# run DESCRIPTION WANT_RC CMD... — pg.sh CMD must exit WANT_RC.
run() {
  local desc=$1 want=$2 rc=0
  shift 2
  pg "$@" || rc=$?
  if [[ "$rc" == "$want" ]]; then pass; else
    fail "$desc: pg.sh $* exited $rc, wanted $want: $(head -c 600 "$OUT")"
  fi
}
out_has() { grep -q -- "$1" "$OUT"; }

listening() { ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q .; }

# A port nobody listens on, probed from a random start.
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

# sql ROLE SQL... — statements (each its own transaction) as ROLE over TCP
# with the password file; unaligned output.
sql() {
  local role=$1 args=() q
  shift
  for q in "$@"; do args+=(-c "$q"); done
  PGPASSFILE=$DIR/pgpass PGCONNECT_TIMEOUT=10 "$PSQL" -X -At -w -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$PORT" -U "$role" -d switch "${args[@]}" 2>"$TMP/sql.err"
}
sql_ok() { sql "$@" >/dev/null; }
# sql_fails DESCRIPTION ERROR ROLE SQL... — must fail with ERROR.
sql_fails() {
  local desc=$1 want=$2
  shift 2
  if sql "$@" >/dev/null; then
    fail "$desc: succeeded"
  elif grep -q -- "$want" "$TMP/sql.err"; then
    pass
  else
    fail "$desc: wanted '$want', got: $(cat "$TMP/sql.err")"
  fi
}

mode_of() { stat -c %a "$1"; }

# scenario NAME DIR LAYOUT — the whole check list on a cluster at DIR;
# LAYOUT (as root) is "fallback" (DIR must become a symlink into the
# fallback folder) or "inplace".
scenario() {
  local name=$1 layout=$3
  DIR=$2
  PORT=$(free_port)
  CLUSTERS+=("$DIR")
  echo "--- $name: SW_PG_DIR=$DIR port $PORT"

  run "$name: init" 0 init
  local sums
  sums=$(cat "$DIR"/secrets/*.pass | sha256sum)
  run "$name: init again" 0 init
  check "$name: init again keeps the passwords" \
    test "$sums" == "$(cat "$DIR"/secrets/*.pass | sha256sum)"
  check "$name: init again asks for no restart" not_out_has "configuration changed"
  PORT='' run "$name: init again without SW_PG_PORT" 0 init
  check "$name: ... keeps the port" grep -qx "port = $PORT" "$(readlink -f "$DIR")/data/switch.conf"
  run "$name: status after init: stopped" 3 status
  if ((EUID == 0)) && [[ "$layout" == fallback ]]; then
    local real
    real=$(readlink -f "$DIR")
    check "$name: SW_PG_DIR is a symlink" test -L "$DIR"
    same "$name: into the fallback folder" "$(dirname "$real")" "$SHARED/fallback"
    same "$name: the fallback cluster belongs to swpg" "$(stat -c %U "$real")" swpg
    same "$name: the fallback cluster is mode 0700" "$(mode_of "$real")" 700
    same "$name: its origin file names SW_PG_DIR" "$(cat "$real/origin")" "$DIR"
    same "$name: the unreachable parent was not opened up" "$(mode_of "$TMP")" 700
  elif ((EUID == 0)); then
    check "$name: SW_PG_DIR is a folder in place" test -d "$DIR" -a ! -L "$DIR"
    same "$name: it belongs to swpg" "$(stat -c %U "$DIR")" swpg
  fi
  check "$name: status names the port" out_has "port $PORT"

  local f
  for f in "$DIR/secrets/switch_writer.pass" "$DIR/secrets/switch_reader.pass" "$DIR/pgpass"; do
    same "$name: mode of ${f#"$DIR"/}" "$(mode_of "$f")" 600
    same "$name: owner of ${f#"$DIR"/}" "$(stat -c %u "$f")" "$(id -u)"
  done
  same "$name: mode of secrets/" "$(mode_of "$DIR/secrets")" 700
  same "$name: mode of data/" "$(mode_of "$DIR/data")" 700
  check "$name: secrets are long" test "$(wc -c <"$DIR/secrets/switch_writer.pass")" -ge 32
  check "$name: the two passwords differ" \
    test "$(<"$DIR/secrets/switch_writer.pass")" != "$(<"$DIR/secrets/switch_reader.pass")"

  run "$name: start" 0 start
  check "$name: start says started" out_has "started on 127.0.0.1:$PORT"
  run "$name: start again" 0 start
  check "$name: start again says already running" out_has "already running"
  run "$name: status: running" 0 status
  check "$name: status says running and the port" out_has "running on 127.0.0.1:$PORT"

  run "$name: url" 0 url
  local url
  url=$(cat "$OUT")
  check "$name: url is for switch_writer on 127.0.0.1:$PORT" \
    grep -q "^postgresql://switch_writer@127.0.0.1:$PORT/switch?passfile=" "$OUT"
  check "$name: url holds no password" not_out_has "$(<"$DIR/secrets/switch_writer.pass")"

  # The connection string alone is enough (its passfile= names the file).
  same "$name: SELECT 1 through the url" \
    "$("$PSQL" -X -At "$url" -c 'SELECT 1' 2>&1)" 1
  same "$name: SELECT 1 over TCP with PGPASSFILE" "$(sql switch_writer 'SELECT 1')" 1
  same "$name: connected as switch_writer" "$(sql switch_writer 'SELECT current_user')" switch_writer
  same "$name: over TCP" "$(sql switch_writer 'SELECT inet_server_addr()')" 127.0.0.1
  if PGPASSWORD=wrong "$PSQL" -X -At -w -h 127.0.0.1 -p "$PORT" -U switch_writer \
    -d "dbname=switch passfile=/dev/null" -c 'SELECT 1' >/dev/null 2>"$TMP/err"; then
    fail "$name: a wrong password was accepted"
  else
    check "$name: a wrong password is refused" grep -q "password authentication failed" "$TMP/err"
  fi
  if "$PSQL" -X -At -w -h 127.0.0.1 -p "$PORT" -U postgres -d "dbname=switch passfile=/dev/null" \
    -c 'SELECT 1' >/dev/null 2>&1; then
    fail "$name: a login without password over TCP was accepted"
  else
    pass
  fi

  local s
  for s in fsync synchronous_commit full_page_writes data_checksums; do
    same "$name: $s" "$(sql switch_writer "SHOW $s")" on
  done
  same "$name: wal_level" "$(sql switch_writer 'SHOW wal_level')" replica
  same "$name: listen_addresses" "$(sql switch_writer 'SHOW listen_addresses')" 127.0.0.1
  same "$name: port" "$(sql switch_writer 'SHOW port')" "$PORT"
  same "$name: encoding" "$(sql switch_writer 'SHOW server_encoding')" UTF8
  local addrs
  addrs=$(ss -Hltn "( sport = :$PORT )" | awk '{ print $4 }' | sort -u | tr '\n' ' ')
  same "$name: ss: listens on 127.0.0.1 only" "$addrs" "127.0.0.1:$PORT "

  local pid user
  pid=$(head -n 1 "$DIR/data/postmaster.pid")
  user=$(ps -o user= -p "$pid" | tr -d ' ')
  check "$name: the server does not run as root" test "$(ps -o uid= -p "$pid" | tr -d ' ')" != 0
  if ((EUID == 0)); then same "$name: the server runs as swpg" "$user" swpg; fi
  check "$name: the socket is in the cluster's run/" test -S "$DIR/run/.s.PGSQL.$PORT"
  same "$name: and only there" "$(find /tmp /var/run/postgresql -maxdepth 1 -name ".s.PGSQL.$PORT" 2>/dev/null)" ""

  # Privileges.
  same "$name: schema switch belongs to switch_writer" \
    "$(sql switch_writer "SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'switch'")" switch_writer
  check "$name: writer creates a table in switch" \
    sql_ok switch_writer 'CREATE TABLE journal (id bigint PRIMARY KEY, what text)'
  check "$name: writer inserts" sql_ok switch_writer "INSERT INTO journal VALUES (1, 'kept')"
  same "$name: unqualified names go to schema switch" \
    "$(sql switch_writer "SELECT to_regclass('switch.journal') IS NOT NULL")" t
  sql_fails "$name: writer cannot create in public" "permission denied" \
    switch_writer 'CREATE TABLE public.w (x int)' 
  same "$name: reader reads the writer's new table" \
    "$(sql switch_reader 'SELECT what FROM journal WHERE id = 1')" kept
  same "$name: reader is read-only by default" \
    "$(sql switch_reader 'SHOW default_transaction_read_only')" on
  local rw='SET default_transaction_read_only = off'
  sql_fails "$name: reader cannot insert" "read-only transaction" \
    switch_reader "INSERT INTO journal VALUES (2, 'no')"
  sql_fails "$name: reader cannot insert, even read-write" "permission denied" \
    switch_reader "$rw" "INSERT INTO journal VALUES (2, 'no')"
  sql_fails "$name: reader cannot create in public" "permission denied" \
    switch_reader "$rw" 'CREATE TABLE public.r (x int)'
  sql_fails "$name: reader cannot create in switch" "permission denied" \
    switch_reader "$rw" 'CREATE TABLE switch.r (x int)'
  same "$name: roles are not superusers" \
    "$(sql switch_writer "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'switch_%' AND (rolsuper OR rolcreaterole OR rolcreatedb)")" 0

  # The psql command.
  run "$name: pg.sh psql" 0 psql -At -c 'SELECT current_user'
  same "$name: pg.sh psql is switch_writer" "$(cat "$OUT")" switch_writer
  run "$name: pg.sh psql --admin" 0 psql --admin -At -c 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user'
  same "$name: pg.sh psql --admin is a superuser" "$(cat "$OUT")" t
  run "$name: pg.sh password writer" 0 password writer
  same "$name: password writer prints the secret" "$(cat "$OUT")" "$(<"$DIR/secrets/switch_writer.pass")"
  # This one output shows a password: keep it out of $ALL.
  sed -i "/$(<"$DIR/secrets/switch_writer.pass")/d" "$ALL"

  # Stop, persistence, destroy.
  run "$name: stop" 0 stop
  check "$name: stop says stopped" out_has "^stopped"
  run "$name: stop again" 0 stop
  check "$name: stop again says not running" out_has "not running"
  run "$name: status: stopped" 3 status
  check "$name: nothing listens on $PORT after stop" not_listening "$PORT"
  run "$name: start after stop" 0 start
  same "$name: the data survived the restart" \
    "$(sql switch_reader 'SELECT what FROM journal WHERE id = 1')" kept

  local real
  real=$(readlink -f "$DIR")
  run "$name: destroy outside var/ without --force is refused" 1 destroy
  check "$name: ... and says why" out_has "refusing"
  check "$name: ... and deletes nothing" test -f "$real/data/PG_VERSION"
  run "$name: destroy --force" 0 destroy --force
  check "$name: the cluster folder is gone" test ! -e "$DIR" -a ! -L "$DIR"
  check "$name: its real folder is gone" test ! -e "$real"
  check "$name: nothing listens on $PORT after destroy" not_listening "$PORT"
  run "$name: status after destroy" 4 status
  run "$name: destroy again" 0 destroy --force
}

not_out_has() { ! grep -q -- "$1" "$OUT"; }
not_listening() { ! listening "$1"; }

# 1. A folder the server's user cannot reach (TMP is 0700 and, as root,
#    belongs to root): the CI case of a clone under /root.
scenario unreachable "$TMP/repo/var/pg" fallback

# 2. As root, also a folder it can reach, used in place.
if ((EUID == 0)); then
  mkdir -p "$SHARED/repo/var"
  chmod 0755 "$SHARED/repo" "$SHARED/repo/var"
  scenario reachable "$SHARED/repo/var/pg" inplace
fi

# 3. A port in use: a second cluster on the port of a running one.
DIR=$TMP/repo2/var/pg
PORT=$(free_port)
CLUSTERS+=("$DIR")
run "port in use: init the first" 0 init
run "port in use: start the first" 0 start
FIRST_PORT=$PORT
DIR=$TMP/repo3/var/pg
CLUSTERS+=("$DIR")
run "port in use: init on a busy port fails" 1 init
check "port in use: the error names the port" out_has "port $FIRST_PORT on 127.0.0.1 is in use"
check "port in use: ... and the hint" out_has "SW_PG_PORT"
run "port in use: destroy the second" 0 destroy --force
DIR=$TMP/repo2/var/pg
run "port in use: destroy the first" 0 destroy --force
check "no server left on $FIRST_PORT" not_listening "$FIRST_PORT"
check "the fallback folder is empty again" test -z "$(ls -A "$SHARED/fallback")"

# Usage errors.
run "unknown command" 1 frobnicate
run "no command" 2

# No password in any output (the one 'password' output was removed above).
if grep -qE '[0-9a-f]{48}' "$ALL"; then
  fail "a 48-hex-digit secret appeared in pg.sh output"
else
  pass
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
