#!/usr/bin/env bash
# deploy/pg.sh — the switch's own PostgreSQL server: a private cluster under
# var/pg/ (ignored by git), listening on 127.0.0.1 only.  Idempotent and
# non-interactive (no stdin needed).  See docs/postgresql.md.
#
#   deploy/pg.sh init              create the cluster, roles, database (once)
#   deploy/pg.sh start             start it if it is not running; wait for it
#   deploy/pg.sh stop              fast shutdown if it is running
#   deploy/pg.sh status            "running on 127.0.0.1:PORT" or "stopped"
#                                  (exit 0 running, 3 stopped, 4 no cluster)
#   deploy/pg.sh url               print the switch's connection string
#   deploy/pg.sh psql [--admin] [psql args...]
#                                  psql as switch_writer over TCP, or as the
#                                  superuser over the local socket (--admin)
#   deploy/pg.sh password writer|reader
#                                  print that role's password
#   deploy/pg.sh destroy [--force] stop, then delete the cluster; --force is
#                                  needed when SW_PG_DIR is outside var/
#   deploy/pg.sh env               for other scripts (deploy/backup.sh): the
#                                  cluster's user, folders, binaries and port
#                                  as KEY=VALUE lines
#   deploy/pg.sh server-dir DIR    for other scripts: make DIR a folder the
#                                  server's user owns (mode 0700; as root a
#                                  link into the fallback folder when that
#                                  user cannot reach DIR); print its real path
#
# Environment:
#   SW_PG_DIR     the cluster folder (default var/pg)
#   SW_PG_PORT    TCP port on 127.0.0.1, read by init (default: the port of
#                 an earlier init, else 54329)
#   SW_PG_USER    as root: the system user the server runs as (default swpg,
#                 created when missing); otherwise the server runs as you
#   SW_PG_FALLBACK_BASE
#                 as root, when SW_PG_USER cannot reach SW_PG_DIR (a repo
#                 under /root): where the cluster goes instead, SW_PG_DIR
#                 becoming a symlink to it (default /var/lib/sw-pg)
#   SW_PG_BIN     PostgreSQL server binaries (default /usr/lib/postgresql/15/bin)
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Connection settings of the caller's environment must not leak into ours.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE \
  PGSERVICE PGSERVICEFILE PGOPTIONS PGDATA PGSSLMODE PGREQUIRESSL

PG_DIR=${SW_PG_DIR:-$SW_ROOT/var/pg}
# Absolute, with its parent canonical; a symlink at the end is kept.
PG_DIR="$(readlink -m "$(dirname "$PG_DIR")")/$(basename "$PG_DIR")"
PG_PORT=${SW_PG_PORT:-}
FALLBACK_BASE=${SW_PG_FALLBACK_BASE:-/var/lib/sw-pg}
PG_VERSION_WANTED=15
DB_NAME=switch
WRITER=switch_writer
READER=switch_reader
MARKER=.sw-pg-cluster # written by init; destroy deletes only folders with it

if ((EUID == 0)); then
  PG_USER=${SW_PG_USER:-swpg}
else
  PG_USER=$(id -un)
  if [[ -n "${SW_PG_USER:-}" && "$SW_PG_USER" != "$PG_USER" ]]; then
    sw_warn "SW_PG_USER=$SW_PG_USER applies only as root; the server runs as $PG_USER"
  fi
fi

# Set by resolve_dirs.
REAL=""    # PG_DIR with symlinks resolved: what the server is told
DATA=""    # the PGDATA folder
RUN_DIR="" # the unix socket folder
LOG_DIR=""
PG_BIN=""

# --- helpers ---------------------------------------------------------------

usage() {
  sed -n '2,37s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

valid_port() {
  [[ "$1" =~ ^[0-9]+$ ]] && (($1 >= 1024 && $1 <= 65535))
}

# as_pg CMD... — runs CMD as the server's user, from / (PostgreSQL's tools
# fail in a working folder they cannot read) and with HOME in the cluster.
as_pg() {
  if ((EUID == 0)); then
    (cd / && runuser -u "$PG_USER" -- env HOME="$REAL" "$@")
  else
    (cd / && "$@")
  fi
}

# Finds the server binaries: those of the cluster's version once it exists.
find_bin() {
  local ver=$PG_VERSION_WANTED
  if [[ -n "$DATA" && -f "$DATA/PG_VERSION" ]]; then ver=$(<"$DATA/PG_VERSION"); fi
  PG_BIN=${SW_PG_BIN:-/usr/lib/postgresql/$ver/bin}
  local t
  for t in initdb pg_ctl postgres pg_isready psql; do
    [[ -x "$PG_BIN/$t" ]] ||
      sw_die "PostgreSQL $ver server not found ($PG_BIN/$t is missing): run deploy/install-deps.sh (Debian package postgresql-$ver)"
  done
}

# Sets REAL, DATA, RUN_DIR and LOG_DIR for an existing cluster folder.
resolve_dirs() {
  REAL=$(readlink -f "$PG_DIR")
  DATA=$REAL/data
  RUN_DIR=$REAL/run
  LOG_DIR=$REAL/log
}

require_init() {
  [[ -e "$PG_DIR" ]] || sw_die "no cluster in $PG_DIR: run deploy/pg.sh init"
  resolve_dirs
  [[ -f "$DATA/PG_VERSION" && -f "$REAL/$MARKER" ]] ||
    sw_die "$PG_DIR holds no initialised cluster: run deploy/pg.sh init"
  if ((EUID != 0)) && [[ "$(stat -c %U "$DATA")" != "$PG_USER" ]]; then
    sw_die "$DATA belongs to $(stat -c %U "$DATA") (made as root?): run this as root (sudo), or remove it with 'sudo deploy/pg.sh destroy'"
  fi
  find_bin
}

# The port in switch.conf, or nothing.
conf_port_or_empty() {
  if [[ -f "$DATA/switch.conf" ]]; then
    sed -n "s/^port = \([0-9]*\)$/\1/p" "$DATA/switch.conf" | tail -n 1
  fi
}

# The port the cluster is configured with.
conf_port() {
  local p
  p=$(conf_port_or_empty)
  [[ -n "$p" ]] || sw_die "cannot read the port from $DATA/switch.conf: run deploy/pg.sh init"
  printf '%s\n' "$p"
}

# The port the running server listens on (line 4 of postmaster.pid).
live_port() {
  sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true
}

is_running() {
  as_pg "$PG_BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

# Who listens on 127.0.0.1:PORT (or on all addresses), if anyone.
port_user() {
  local port=$1 out
  if command -v ss >/dev/null 2>&1; then
    out=$(ss -Hltnp "( sport = :$port )" 2>/dev/null || true)
    [[ -n "$out" ]] || return 1
    local who
    who=$(sed -n 's/.*users:((\("[^"]*",pid=[0-9]*\).*/\1/p' <<<"$out" | head -n 1)
    printf '%s\n' "${who:-another program}"
    return 0
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "another program"
    return 0
  fi
  return 1
}

# Random password: 48 hex digits from the kernel's generator.
gen_secret() {
  od -An -N24 -tx1 /dev/urandom | tr -d ' \n'
}

# Percent-encodes a string for a URI query value.
uri_encode() {
  local s=$1 out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case "$c" in
    [A-Za-z0-9/._~-]) out+=$c ;;
    *) out+=$(printf '%%%02X' "'$c") ;;
    esac
  done
  printf '%s' "$out"
}

# --- init ------------------------------------------------------------------

# Makes PG_DIR as root: owned by PG_USER, or, when PG_USER cannot reach its
# parent folder, a symlink to FALLBACK_BASE/<hash of PG_DIR>.
make_dir_root() {
  local parent
  parent=$(dirname "$PG_DIR")
  mkdir -p "$parent"
  if [[ -L "$PG_DIR" ]]; then
    local target
    target=$(readlink "$PG_DIR")
    [[ "$target" == "$FALLBACK_BASE"/* ]] ||
      sw_die "$PG_DIR is a symlink to $target, not into $FALLBACK_BASE: remove it or set SW_PG_DIR"
    if [[ ! -d "$target" ]]; then
      sw_log "pg: $PG_DIR points to the missing $target; making it again"
      make_fallback_target "$target"
    fi
    return 0
  fi
  if runuser -u "$PG_USER" -- test -x "$parent"; then
    if [[ ! -d "$PG_DIR" ]]; then mkdir -m 0700 "$PG_DIR"; fi
    chown "$PG_USER": "$PG_DIR"
    chmod 0700 "$PG_DIR"
    return 0
  fi
  # PG_USER cannot traverse to the folder (e.g. the repo is under /root, mode
  # 0700).  Opening /root to others would expose far more than the cluster,
  # so the cluster lives under FALLBACK_BASE instead, reached by a symlink.
  [[ ! -e "$PG_DIR" ]] ||
    sw_die "$PG_DIR exists, but $PG_USER cannot reach $parent: remove $PG_DIR (deploy/pg.sh destroy) and run init again"
  local hash
  hash=$(printf '%s' "$PG_DIR" | sha256sum | cut -c1-16)
  sw_log "pg: $PG_USER cannot reach $parent; the cluster goes to $FALLBACK_BASE/$hash, linked from $PG_DIR"
  make_fallback_target "$FALLBACK_BASE/$hash"
  ln -s "$FALLBACK_BASE/$hash" "$PG_DIR"
}

make_fallback_target() {
  local target=$1
  if [[ ! -d "$FALLBACK_BASE" ]]; then
    mkdir -p "$FALLBACK_BASE"
    chmod 0755 "$FALLBACK_BASE"
  fi
  local owner mode
  owner=$(stat -c %u "$FALLBACK_BASE")
  mode=$(stat -c %a "$FALLBACK_BASE")
  [[ "$owner" == 0 && ! -L "$FALLBACK_BASE" ]] ||
    sw_die "$FALLBACK_BASE must be a folder owned by root"
  if ((8#$mode & 8#022)); then
    sw_die "$FALLBACK_BASE is writable by group or others (mode $mode): chmod go-w it"
  fi
  runuser -u "$PG_USER" -- test -x "$FALLBACK_BASE" ||
    sw_die "$PG_USER cannot reach $FALLBACK_BASE either: set SW_PG_FALLBACK_BASE to a folder it can reach"
  if [[ ! -d "$target" ]]; then mkdir -m 0700 "$target"; fi
  chown "$PG_USER": "$target"
  chmod 0700 "$target"
  printf '%s\n' "$PG_DIR" >"$target/origin" # for whoever finds it there
}

ensure_user() {
  if id -u "$PG_USER" >/dev/null 2>&1; then
    [[ "$(id -u "$PG_USER")" != 0 ]] ||
      sw_die "SW_PG_USER=$PG_USER is root; PostgreSQL refuses to run as root"
    return 0
  fi
  command -v useradd >/dev/null 2>&1 || sw_die "useradd not found (package passwd)"
  sw_log "pg: creating the system user $PG_USER"
  useradd --system --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin --user-group "$PG_USER" ||
    sw_die "could not create the system user $PG_USER"
}

write_conf() {
  local port=$1 conf="$DATA/switch.conf" tmp
  tmp=$(mktemp "$REAL/.switch.conf.XXXXXX")
  cat >"$tmp" <<EOF
# Written by deploy/pg.sh init; rewritten on every init, edit the script.
# Included from postgresql.conf.  See docs/postgresql.md.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$RUN_DIR'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'

# Durability: the switch's journal relies on a commit being on disk when
# COMMIT returns.  Never turn these off.
fsync = on
synchronous_commit = on
full_page_writes = on
wal_level = replica
# A journal writes WAL all day: fewer checkpoints (so fewer full-page
# images after each) and compressed page images; none of this weakens a
# commit.  Crash recovery replays at most max_wal_size of WAL.
max_wal_size = '4GB'
checkpoint_timeout = '15min'
wal_compression = on
shared_buffers = '256MB'
# WAL archiving is off unless deploy/backup.sh setup turned it on: it
# writes archive.conf, included last so that its settings win.
archive_mode = off

# Logs go to log/postgresql.log (pg_ctl -l).
logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'

include_if_exists = 'archive.conf'
EOF
  if [[ -f "$conf" ]] && cmp -s "$tmp" "$conf"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$conf"
    CONF_CHANGED=1
  fi
  if ! grep -qx "include = 'switch.conf'" "$DATA/postgresql.conf"; then
    printf "\ninclude = 'switch.conf'\n" >>"$DATA/postgresql.conf"
    CONF_CHANGED=1
  fi
  # Only the server's own user over the socket, and password logins over
  # loopback TCP; nothing else.
  tmp=$(mktemp "$REAL/.pg_hba.conf.XXXXXX")
  cat >"$tmp" <<EOF
# Written by deploy/pg.sh init.  TYPE DATABASE USER ADDRESS METHOD
local   all          $PG_USER                    peer
local   replication  $PG_USER                    peer
local   all          all                         scram-sha-256
host    all          all       127.0.0.1/32      scram-sha-256
EOF
  if cmp -s "$tmp" "$DATA/pg_hba.conf"; then
    rm -f "$tmp"
  else
    mv -f "$tmp" "$DATA/pg_hba.conf"
    CONF_CHANGED=1
  fi
  # deploy/backup.sh setup fills archive.conf; an empty one keeps the
  # server from logging a missing include at every start.
  if [[ ! -f "$DATA/archive.conf" ]]; then
    printf '# WAL archiving: written by deploy/backup.sh setup (docs/backup.md).\n' >"$DATA/archive.conf"
  fi
  if ((EUID == 0)); then
    chown "$PG_USER": "$conf" "$DATA/pg_hba.conf" "$DATA/postgresql.conf" "$DATA/archive.conf"
  fi
  chmod 0600 "$conf" "$DATA/pg_hba.conf" "$DATA/archive.conf"
}

# Secret files, the password file and the connection string: owned by the
# invoking user, never printed.
write_client_files() {
  local port=$1 role f
  mkdir -p "$REAL/secrets"
  chown "$(id -u):$(id -g)" "$REAL/secrets"
  chmod 0700 "$REAL/secrets"
  for role in "$WRITER" "$READER"; do
    f="$REAL/secrets/$role.pass"
    if [[ ! -s "$f" ]]; then
      (
        umask 077
        gen_secret >"$f.tmp"
      )
      mv -f "$f.tmp" "$f"
    fi
    chmod 0600 "$f"
  done
  local tmp
  tmp=$(
    umask 077
    mktemp "$REAL/.pgpass.XXXXXX"
  )
  {
    printf '127.0.0.1:%s:*:%s:%s\n' "$port" "$WRITER" "$(<"$REAL/secrets/$WRITER.pass")"
    printf '127.0.0.1:%s:*:%s:%s\n' "$port" "$READER" "$(<"$REAL/secrets/$READER.pass")"
  } >"$tmp"
  chmod 0600 "$tmp"
  mv -f "$tmp" "$REAL/pgpass"
  printf 'postgresql://%s@127.0.0.1:%s/%s?passfile=%s&connect_timeout=10\n' \
    "$WRITER" "$port" "$DB_NAME" "$(uri_encode "$PG_DIR/pgpass")" >"$REAL/url.tmp"
  chmod 0644 "$REAL/url.tmp"
  mv -f "$REAL/url.tmp" "$REAL/url"
}

# Roles, database, schema and privileges; safe to run again.  Passwords go
# through psql's stdin, never its arguments, and this session logs nothing.
provision() {
  local port=$1 wpw rpw
  wpw=$(<"$REAL/secrets/$WRITER.pass")
  rpw=$(<"$REAL/secrets/$READER.pass")
  [[ "$wpw" =~ ^[0-9a-f]+$ && "$rpw" =~ ^[0-9a-f]+$ ]] ||
    sw_die "$REAL/secrets/*.pass must hold hex digits only (delete them and run init to make new ones)"
  {
    cat <<'EOF'
\set ON_ERROR_STOP on
SET client_min_messages = warning;
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET log_min_duration_statement = -1;
SELECT format('CREATE ROLE %I LOGIN', r)
  FROM unnest(ARRAY['switch_writer', 'switch_reader']) AS r
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) \gexec
EOF
    printf "ALTER ROLE %s WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD '%s';\n" \
      "$WRITER" "$wpw" "$READER" "$rpw"
    cat <<'EOF'
SELECT 'CREATE DATABASE switch TEMPLATE template0 ENCODING ''UTF8'' LOCALE ''C'''
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'switch') \gexec
REVOKE ALL ON DATABASE switch FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE switch TO switch_writer;
GRANT CONNECT ON DATABASE switch TO switch_reader;
ALTER ROLE switch_reader SET default_transaction_read_only = on;
ALTER ROLE switch_writer IN DATABASE switch SET search_path = switch;
ALTER ROLE switch_reader IN DATABASE switch SET search_path = switch;
\connect switch
SET client_min_messages = warning;
SET log_statement = 'none';
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS switch AUTHORIZATION switch_writer;
ALTER SCHEMA switch OWNER TO switch_writer;
REVOKE ALL ON SCHEMA switch FROM PUBLIC;
GRANT USAGE ON SCHEMA switch TO switch_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA switch TO switch_reader;
GRANT SELECT ON ALL SEQUENCES IN SCHEMA switch TO switch_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE switch_writer IN SCHEMA switch
  GRANT SELECT ON TABLES TO switch_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE switch_writer IN SCHEMA switch
  GRANT SELECT ON SEQUENCES TO switch_reader;
EOF
  } | as_pg "$PG_BIN/psql" -X -q -h "$RUN_DIR" -p "$port" -U "$PG_USER" -d postgres >/dev/null ||
    sw_die "setting up roles and database failed (server log: $LOG_DIR/postgresql.log)"
}

cmd_init() {
  if [[ -n "$PG_PORT" ]]; then
    valid_port "$PG_PORT" || sw_die "SW_PG_PORT must be a port from 1024 to 65535, got '$PG_PORT'"
  fi
  find_bin
  if ((EUID == 0)); then
    command -v runuser >/dev/null 2>&1 || sw_die "runuser not found (package util-linux)"
    ensure_user
    make_dir_root
  else
    mkdir -p "$PG_DIR"
    chmod 0700 "$PG_DIR"
  fi
  resolve_dirs
  [[ -O "$REAL" || ($EUID -eq 0 && "$(stat -c %U "$REAL")" == "$PG_USER") ]] ||
    sw_die "$REAL belongs to $(stat -c %U "$REAL"): run as that user or as root, or set SW_PG_DIR"
  touch "$REAL/$MARKER"
  local d
  for d in "$DATA" "$RUN_DIR" "$LOG_DIR"; do
    if [[ ! -d "$d" ]]; then mkdir -m 0700 "$d"; fi
    if ((EUID == 0)); then chown "$PG_USER": "$d"; fi
  done
  find_bin # again: the cluster's own version when it exists
  if [[ -f "$DATA/PG_VERSION" ]]; then
    sw_log "pg: cluster exists in $DATA (PostgreSQL $(<"$DATA/PG_VERSION"))"
  else
    [[ -z "$(ls -A "$DATA")" ]] ||
      sw_die "$DATA is not empty but holds no cluster (a failed init?): deploy/pg.sh destroy, then init"
    sw_log "pg: initdb $DATA (superuser $PG_USER)"
    as_pg "$PG_BIN/initdb" -D "$DATA" --username="$PG_USER" \
      --encoding=UTF8 --locale=C --auth-local=peer --auth-host=scram-sha-256 \
      --data-checksums --no-instructions >"$LOG_DIR/initdb.log" 2>&1 ||
      sw_die "initdb failed; see $LOG_DIR/initdb.log"
    if ((EUID == 0)); then chown "$PG_USER": "$LOG_DIR/initdb.log"; fi
  fi
  # The port: SW_PG_PORT, else the one of an earlier init, else 54329.
  if [[ -z "$PG_PORT" ]]; then
    PG_PORT=$(conf_port_or_empty)
    PG_PORT=${PG_PORT:-54329}
  fi
  CONF_CHANGED=0
  write_conf "$PG_PORT"
  write_client_files "$PG_PORT"

  local was_running=0 port=$PG_PORT
  if is_running; then
    was_running=1
    port=$(live_port)
    if ((CONF_CHANGED)); then
      sw_warn "configuration changed; it applies after: deploy/pg.sh stop && deploy/pg.sh start"
    fi
  else
    do_start >/dev/null
  fi
  provision "$port"
  if ((!was_running)); then do_stop >/dev/null; fi
  sw_log "pg: ready in $PG_DIR (port $PG_PORT; roles $WRITER, $READER; database $DB_NAME)"
  sw_log "pg: connection string in $PG_DIR/url, passwords in $PG_DIR/secrets/"
}

# --- start / stop / status -------------------------------------------------

do_start() {
  local port
  port=$(conf_port)
  if is_running; then
    echo "already running on 127.0.0.1:$(live_port)"
    return 0
  fi
  local who
  if who=$(port_user "$port"); then
    sw_die "port $port on 127.0.0.1 is in use by $who: free it, or choose another with SW_PG_PORT=N deploy/pg.sh init"
  fi
  as_pg "$PG_BIN/pg_ctl" start -D "$DATA" -w -t 60 -l "$LOG_DIR/postgresql.log" >/dev/null ||
    sw_die "the server did not start; last lines of $LOG_DIR/postgresql.log:
$(tail -n 15 "$LOG_DIR/postgresql.log" 2>/dev/null)"
  local i
  for ((i = 0; i < 60; i++)); do
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1; then
      echo "started on 127.0.0.1:$port"
      return 0
    fi
    sleep 1
  done
  sw_die "the server started but does not accept connections on 127.0.0.1:$port (see $LOG_DIR/postgresql.log)"
}

do_stop() {
  if ! is_running; then
    echo "not running"
    return 0
  fi
  as_pg "$PG_BIN/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >/dev/null ||
    sw_die "the server did not stop within 60 s (see $LOG_DIR/postgresql.log)"
  echo "stopped"
}

cmd_status() {
  if [[ ! -e "$PG_DIR" ]]; then
    echo "no cluster in $PG_DIR (deploy/pg.sh init)"
    return 4
  fi
  require_init
  if is_running; then
    local pid
    pid=$(head -n 1 "$DATA/postmaster.pid")
    echo "running on 127.0.0.1:$(live_port) (pid $pid, user $PG_USER, data $DATA)"
    return 0
  fi
  echo "stopped (port $(conf_port), data $DATA)"
  return 3
}

# --- destroy ---------------------------------------------------------------

cmd_destroy() {
  local force=0
  if [[ "${1:-}" == --force ]]; then force=1; fi
  if [[ ! -e "$PG_DIR" && ! -L "$PG_DIR" ]]; then
    echo "nothing to destroy: $PG_DIR does not exist"
    return 0
  fi
  local var_dir
  var_dir=$(readlink -f "$SW_ROOT/var")
  if [[ "$PG_DIR" != "$var_dir"/* && "$PG_DIR" != "$SW_ROOT/var/"* ]] && ((!force)); then
    sw_die "$PG_DIR is not under $SW_ROOT/var/: refusing to delete it without --force"
  fi
  resolve_dirs
  [[ -f "$REAL/$MARKER" ]] ||
    sw_die "$REAL has no $MARKER file, so deploy/pg.sh did not make it: delete it yourself"
  case "$REAL" in
  / | /root | /home | /var | /var/lib | /var/tmp | /tmp | "$SW_ROOT" | "$var_dir" | "$FALLBACK_BASE" | "${HOME:-/}")
    sw_die "refusing to delete $REAL"
    ;;
  esac
  if [[ -f "$DATA/PG_VERSION" ]]; then
    find_bin
    do_stop
  fi
  if [[ -L "$PG_DIR" ]]; then
    [[ "$REAL" == "$FALLBACK_BASE"/* ]] ||
      sw_die "$PG_DIR links to $REAL, outside $FALLBACK_BASE: refusing to delete it"
    rm -rf -- "$REAL"
    rm -f -- "$PG_DIR"
  else
    rm -rf -- "$PG_DIR"
  fi
  echo "destroyed $PG_DIR"
}

# --- hooks for other scripts ----------------------------------------------

# KEY=VALUE lines, one per line, no quoting: values are paths this script
# made (no newlines), a user name, a port and 0/1.
cmd_env() {
  require_init
  local port running=0
  if is_running; then
    running=1
    port=$(live_port)
  else
    port=$(conf_port)
  fi
  printf 'user=%s\ndir=%s\ndata=%s\nrun=%s\nlog=%s\nbin=%s\nport=%s\nrunning=%s\n' \
    "$PG_USER" "$REAL" "$DATA" "$RUN_DIR" "$LOG_DIR" "$PG_BIN" "$port" "$running"
}

# Makes a folder the server's user owns, by the rules of the cluster
# folder (make_dir_root), and prints its real path.
cmd_server_dir() {
  [[ -n "${1:-}" ]] || sw_die "usage: deploy/pg.sh server-dir DIR"
  PG_DIR="$(readlink -m "$(dirname "$1")")/$(basename "$1")"
  if ((EUID == 0)); then
    command -v runuser >/dev/null 2>&1 || sw_die "runuser not found (package util-linux)"
    ensure_user
    make_dir_root >&2
  else
    mkdir -p "$PG_DIR"
    [[ -O "$PG_DIR" ]] || sw_die "$PG_DIR belongs to $(stat -c %U "$PG_DIR"), not to you"
    chmod 0700 "$PG_DIR"
  fi
  readlink -f "$PG_DIR"
}

# --- main ------------------------------------------------------------------

cmd=${1:-}
if (($# > 0)); then shift; fi
case "$cmd" in
init)
  cmd_init
  ;;
start)
  require_init
  do_start
  ;;
stop)
  if [[ ! -e "$PG_DIR" ]]; then
    echo "not running (no cluster in $PG_DIR)"
    exit 0
  fi
  require_init
  do_stop
  ;;
status)
  rc=0
  cmd_status || rc=$?
  exit "$rc"
  ;;
url)
  require_init
  [[ -f "$REAL/url" ]] || sw_die "$REAL/url is missing: run deploy/pg.sh init"
  cat "$REAL/url"
  ;;
password)
  require_init
  case "${1:-}" in
  writer) role=$WRITER ;;
  reader) role=$READER ;;
  *) sw_die "usage: deploy/pg.sh password writer|reader" ;;
  esac
  cat "$REAL/secrets/$role.pass"
  echo
  ;;
psql)
  require_init
  port=$(live_port)
  [[ -n "$port" ]] || sw_die "the server is not running: deploy/pg.sh start"
  if [[ "${1:-}" == --admin ]]; then
    shift
    as_pg "$PG_BIN/psql" -X -h "$RUN_DIR" -p "$port" -U "$PG_USER" -d "$DB_NAME" "$@"
  else
    exec "$PG_BIN/psql" -X "$(cat "$REAL/url")" "$@"
  fi
  ;;
destroy)
  cmd_destroy "$@"
  ;;
env)
  cmd_env
  ;;
server-dir)
  cmd_server_dir "$@"
  ;;
-h | --help | help)
  usage
  ;;
"")
  usage >&2
  exit 2
  ;;
*)
  sw_die "unknown command '$cmd' (try --help)"
  ;;
esac
