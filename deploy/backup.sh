#!/usr/bin/env bash
# deploy/backup.sh — backups of the switch's PostgreSQL cluster (deploy/pg.sh)
# with pgBackRest: full and incremental backups, WAL archiving, and
# point-in-time restore into a fresh cluster; pg_dump export and import for
# small sites.  Non-interactive (no stdin); see docs/backup.md.
#
#   deploy/backup.sh setup         pgBackRest configuration and stanza for the
#                                  cluster, WAL archiving on (restarts the
#                                  server once to turn archive_mode on)
#   deploy/backup.sh full          full backup
#   deploy/backup.sh incr          incremental backup (full if there is none)
#   deploy/backup.sh check         pgBackRest check: the archive takes WAL
#   deploy/backup.sh info [--json] the backups in the repository
#   deploy/backup.sh restore [--target 'YYYY-MM-DD HH:MM:SS+00'] --to DIR
#                            [--port P]
#                                  restore into the fresh cluster folder DIR,
#                                  on port P (default: the cluster's port + 1),
#                                  recovered up to the target time (default:
#                                  the end of the archive), promoted and
#                                  started, WAL archiving off
#   deploy/backup.sh dump FILE     pg_dump -Fc of the database into FILE
#   deploy/backup.sh load FILE     restore a dump into a freshly initialised
#                                  cluster (deploy/pg.sh init, no migrate)
#
# Environment:
#   SW_PG_DIR, SW_PG_USER, SW_PG_FALLBACK_BASE, SW_PG_BIN
#                 the cluster, as for deploy/pg.sh
#   SW_BACKUP_DIR the pgBackRest folder: configuration, repository, logs
#                 (default var/backup); as root owned by the server's user,
#                 placed like the cluster when that user cannot reach it
#   SW_BACKUP_RETENTION_FULL
#                 full backups kept (default 2); older ones and the WAL
#                 only they need are expired after each backup
#   SW_BACKUP_ARCHIVE_TIMEOUT
#                 archive_timeout in seconds (default 60): the most WAL time
#                 an idle-but-not-quiet server leaves unarchived
#   SW_RESTORE_TIMEOUT
#                 seconds restore waits for recovery to end (default 900)
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Nothing from the caller's environment may steer libpq or pgBackRest
# (PGBACKREST_* variables override the configuration file).
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE \
  PGSERVICE PGSERVICEFILE PGOPTIONS PGDATA PGSSLMODE PGREQUIRESSL
while IFS= read -r v; do unset "$v"; done < <(compgen -e | grep '^PGBACKREST_' || true)

PG_SH="$SW_ROOT/deploy/pg.sh"
BACKUP_DIR=${SW_BACKUP_DIR:-$SW_ROOT/var/backup}
BACKUP_DIR="$(readlink -m "$(dirname "$BACKUP_DIR")")/$(basename "$BACKUP_DIR")"
STANZA=switch
DB_NAME=switch

# The cluster, from deploy/pg.sh env (load_cluster).
PG_USER=""
PG_REAL=""
PG_DATA=""
PG_RUN=""
PG_LOG=""
PG_BIN=""
PG_PORT=""
PG_RUNNING=0
BK_REAL="" # BACKUP_DIR with symlinks resolved
PGBR=""    # the pgbackrest binary

# --- helpers ---------------------------------------------------------------

usage() {
  sed -n '2,38s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

# Reads deploy/pg.sh env of the cluster in SW_PG_DIR (or of DIR when given
# as $1) into the PG_* variables.
load_cluster() {
  local out key value
  if [[ -n "${1:-}" ]]; then
    out=$(SW_PG_DIR=$1 "$PG_SH" env) || sw_die "cannot read the cluster in $1"
  else
    out=$("$PG_SH" env) || sw_die "cannot read the cluster (deploy/pg.sh init first?)"
  fi
  while IFS='=' read -r key value; do
    case "$key" in
    user) PG_USER=$value ;;
    dir) PG_REAL=$value ;;
    data) PG_DATA=$value ;;
    run) PG_RUN=$value ;;
    log) PG_LOG=$value ;;
    bin) PG_BIN=$value ;;
    port) PG_PORT=$value ;;
    running) PG_RUNNING=$value ;;
    esac
  done <<<"$out"
  [[ -n "$PG_USER" && -n "$PG_DATA" && -n "$PG_RUN" && -n "$PG_BIN" && "$PG_PORT" =~ ^[0-9]+$ ]] ||
    sw_die "deploy/pg.sh env gave an incomplete answer: $out"
}

find_pgbackrest() {
  PGBR=$(command -v pgbackrest) ||
    sw_die "pgbackrest not found: run deploy/install-deps.sh (Debian package pgbackrest)"
}

# as_pg CMD... — CMD as the server's user, from /, HOME in the backup folder.
as_pg() {
  local home=${BK_REAL:-/}
  if ((EUID == 0)); then
    (cd / && runuser -u "$PG_USER" -- env HOME="$home" "$@")
  else
    (cd / && env HOME="$home" "$@")
  fi
}

# pgbr ARGS... — pgbackrest with this folder's configuration and stanza.
pgbr() {
  as_pg "$PGBR" --config-path="$BK_REAL/conf" --stanza="$STANZA" "$@"
}

# admin_sql DB SQL — one statement as the superuser over the socket of the
# cluster in PG_*; unaligned, tuples only.
admin_sql() {
  as_pg "$PG_BIN/psql" -X -At -w -v ON_ERROR_STOP=1 -h "$PG_RUN" -p "$PG_PORT" \
    -U "$PG_USER" -d "$1" -c "$2"
}

# Paths go into archive_command, a single-quoted setting run by a shell:
# only characters that need no quoting there.
check_path_chars() {
  [[ "$1" =~ ^[A-Za-z0-9/._+-]+$ ]] ||
    sw_die "$2 '$1' holds characters that cannot go into archive_command: use a path of letters, digits and / . _ + -"
}

# Replaces FILE with the content of TMP when they differ (mode 0600, owned
# by the server's user); returns 0 when it changed.
install_file() {
  local tmp=$1 file=$2
  if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 1
  fi
  chmod 0600 "$tmp"
  if ((EUID == 0)); then chown "$PG_USER": "$tmp"; fi
  mv -f "$tmp" "$file"
  return 0
}

# The backup folder must already be set up (for every command but setup).
require_setup() {
  [[ -e "$BACKUP_DIR" ]] ||
    sw_die "no backup folder $BACKUP_DIR: run deploy/backup.sh setup (or set SW_BACKUP_DIR)"
  BK_REAL=$(readlink -f "$BACKUP_DIR")
  [[ -f "$BK_REAL/conf/pgbackrest.conf" ]] ||
    sw_die "$BACKUP_DIR holds no pgBackRest configuration: run deploy/backup.sh setup"
}

require_running() {
  ((PG_RUNNING)) || sw_die "the cluster in ${SW_PG_DIR:-var/pg} is not running: deploy/pg.sh start"
}

positive_int() {
  [[ "$1" =~ ^[0-9]{1,6}$ ]] && (($1 > 0))
}

# --- setup -----------------------------------------------------------------

write_pgbackrest_conf() {
  local retention=$1 tmp
  tmp=$(mktemp "$BK_REAL/.pgbackrest.conf.XXXXXX")
  cat >"$tmp" <<EOF
# Written by deploy/backup.sh setup; rewritten on every setup, edit the
# script or its environment (docs/backup.md).
[global]
repo1-path=$BK_REAL/repo
repo1-retention-full=$retention
log-path=$BK_REAL/log
lock-path=$BK_REAL/lock
spool-path=$BK_REAL/spool
log-level-console=warn
log-level-file=info
compress-type=zst
start-fast=y
process-max=2

[$STANZA]
pg1-path=$PG_DATA
pg1-port=$PG_PORT
pg1-socket-path=$PG_RUN
pg1-user=$PG_USER
EOF
  if install_file "$tmp" "$BK_REAL/conf/pgbackrest.conf"; then
    sw_log "backup: wrote $BACKUP_DIR/conf/pgbackrest.conf"
  fi
}

# archive.conf, included last by the cluster's switch.conf; returns 0 when
# it changed.
write_archive_conf() {
  local timeout=$1 tmp
  tmp=$(mktemp "$PG_REAL/.archive.conf.XXXXXX")
  cat >"$tmp" <<EOF
# Written by deploy/backup.sh setup: WAL archiving into $BK_REAL.
archive_mode = on
archive_command = '$PGBR --config-path=$BK_REAL/conf --stanza=$STANZA archive-push %p'
archive_timeout = $timeout
EOF
  install_file "$tmp" "$PG_DATA/archive.conf"
}

# Makes the server read archive.conf: a restart when archive_mode is off
# (it only changes at server start), else a reload.
apply_archive_conf() {
  local mode
  mode=$(admin_sql postgres "SHOW archive_mode") || sw_die "cannot query the server"
  if [[ "$mode" != on ]]; then
    sw_log "backup: restarting the server to turn archive_mode on"
    "$PG_SH" stop >/dev/null
    "$PG_SH" start >/dev/null
  else
    admin_sql postgres "SELECT pg_reload_conf()" >/dev/null || sw_die "reload failed"
  fi
}

cmd_setup() {
  local retention=${SW_BACKUP_RETENTION_FULL:-2}
  local timeout=${SW_BACKUP_ARCHIVE_TIMEOUT:-60}
  positive_int "$retention" || sw_die "SW_BACKUP_RETENTION_FULL must be a positive number, got '$retention'"
  positive_int "$timeout" || sw_die "SW_BACKUP_ARCHIVE_TIMEOUT must be a positive number of seconds, got '$timeout'"
  find_pgbackrest
  load_cluster
  check_path_chars "$PGBR" "the pgbackrest path"
  BK_REAL=$("$PG_SH" server-dir "$BACKUP_DIR") || sw_die "cannot make $BACKUP_DIR"
  check_path_chars "$BK_REAL" SW_BACKUP_DIR
  local d
  for d in conf repo log lock spool; do
    as_pg mkdir -p -m 0700 "$BK_REAL/$d" || sw_die "cannot make $BK_REAL/$d as $PG_USER"
  done
  write_pgbackrest_conf "$retention"

  if write_archive_conf "$timeout"; then
    sw_log "backup: wrote $PG_DATA/archive.conf (archive_mode = on)"
  fi
  # stanza-create and check need the server; it is left as it was found.
  local started=0
  if ((PG_RUNNING)); then
    apply_archive_conf
  else
    "$PG_SH" start >/dev/null
    started=1
  fi
  load_cluster
  local err
  err=$(pgbr stanza-create 2>&1 >/dev/null) ||
    sw_die "pgbackrest stanza-create failed (log: $BK_REAL/log): $err"
  pgbr check || sw_die "pgbackrest check failed: WAL archiving does not work (server log: $PG_LOG/postgresql.log)"
  if ((started)); then "$PG_SH" stop >/dev/null; fi
  sw_log "backup: stanza '$STANZA' ready in $BACKUP_DIR; WAL archiving on (archive_timeout ${timeout}s)"
  sw_log "backup: next: deploy/backup.sh full"
}

# --- backups and information -----------------------------------------------

# Prints the label of the newest backup, or nothing.
newest_label() {
  pgbr info --output=json 2>/dev/null |
    grep -o '"label":"[0-9A-Z_-]*"' | tail -n 1 | cut -d'"' -f4 || true
}

cmd_backup() {
  local type=$1
  find_pgbackrest
  require_setup
  load_cluster
  require_running
  pgbr --type="$type" backup || sw_die "pgbackrest $type backup failed (log: $BK_REAL/log)"
  sw_log "backup: $type backup $(newest_label) done"
}

cmd_info() {
  find_pgbackrest
  require_setup
  load_cluster
  case "${1:-}" in
  --json) pgbr info --output=json ;;
  "") pgbr info ;;
  *) sw_die "usage: deploy/backup.sh info [--json]" ;;
  esac
}

cmd_check() {
  find_pgbackrest
  require_setup
  load_cluster
  require_running
  pgbr check || sw_die "pgbackrest check failed (server log: $PG_LOG/postgresql.log)"
  sw_log "backup: check passed: the repository and WAL archiving work"
}

# --- restore ---------------------------------------------------------------

# A time with seconds (fractions allowed) and an explicit UTC offset, so
# that no time zone setting can move it.
valid_target() {
  [[ "$1" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}\ [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([+-][0-9]{2}(:?[0-9]{2})?)$ ]]
}

# Pushes the source's current WAL segment to the archive, so that a restore
# can reach up to now.  Without a running source, the WAL it had not yet
# archived is lost: the restore recovers what the archive holds.
archive_current_wal() {
  if ((PG_RUNNING)); then
    pgbr check >/dev/null 2>&1 ||
      sw_warn "pgbackrest check failed on the source: its newest WAL may not be archived"
  else
    sw_warn "the source cluster is not running: recovering only what the archive holds"
  fi
}

# The server log from byte $1 on, at most its last 15 lines.
log_since() {
  tail -c +"$(($1 + 1))" "$PG_LOG/postgresql.log" 2>/dev/null | tail -n 15
}

recovery_failed() {
  local log hint=""
  log=$(log_since "$1")
  if grep -q "recovery ended before configured recovery target was reached" <<<"$log"; then
    hint="
hint: the archived WAL ends before the target time: choose an earlier --target, or leave it out to recover all archived WAL"
  fi
  sw_die "recovery failed; last lines of $PG_LOG/postgresql.log:
$log$hint"
}

# Starts the restored server for recovery (a temporary configuration: the
# socket only) and waits until it has left recovery; dies with its log
# when it stops or the time is up.  pg_ctl -w returns once the server
# accepts connections, read-only (hot standby) or not.
recover() {
  local port=$1 limit=$2 i state from
  from=$(stat -c %s "$PG_LOG/postgresql.log" 2>/dev/null || echo 0)
  as_pg "$PG_BIN/pg_ctl" start -D "$PG_DATA" -w -t "$limit" -l "$PG_LOG/postgresql.log" \
    -o "-c port=$port -c listen_addresses='' -c unix_socket_directories='$PG_RUN'" >/dev/null ||
    recovery_failed "$from"
  PG_PORT=$port
  for ((i = 0; i < limit; i++)); do
    if ! as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; then
      recovery_failed "$from"
    fi
    state=$(admin_sql postgres "SELECT pg_is_in_recovery()" 2>/dev/null || true)
    if [[ "$state" == f ]]; then return 0; fi
    sleep 1
  done
  as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null 2>&1 || true
  sw_die "recovery did not end within ${limit}s, the server was stopped (see $PG_LOG/postgresql.log; a larger SW_RESTORE_TIMEOUT?)"
}

# A restore that fails leaves no half-made cluster behind: the folder is
# new (restore refuses an existing one), so nothing else is lost.
UNFINISHED=""
remove_unfinished() {
  local rc=$?
  if ((rc != 0)) && [[ -n "$UNFINISHED" ]]; then
    if [[ -n "$PG_DATA" && -f "$PG_DATA/postmaster.pid" ]]; then
      as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w -t 60 >/dev/null 2>&1 || true
    fi
    if SW_PG_DIR=$UNFINISHED "$PG_SH" destroy --force >/dev/null 2>&1; then
      sw_warn "removed the unfinished cluster $UNFINISHED"
    else
      sw_warn "could not remove the unfinished cluster $UNFINISHED: SW_PG_DIR=$UNFINISHED deploy/pg.sh destroy --force"
    fi
  fi
  exit "$rc"
}

cmd_restore() {
  local target="" to="" port=""
  while (($# > 0)); do
    case "$1" in
    --target)
      target=${2:-}
      shift 2 || sw_die "--target needs a time"
      ;;
    --to)
      to=${2:-}
      shift 2 || sw_die "--to needs a folder"
      ;;
    --port)
      port=${2:-}
      shift 2 || sw_die "--port needs a number"
      ;;
    *) sw_die "restore: unknown argument '$1' (try --help)" ;;
    esac
  done
  [[ -n "$to" ]] || sw_die "restore needs --to DIR, a folder for the new cluster"
  if [[ -n "$target" ]]; then
    valid_target "$target" ||
      sw_die "--target '$target' must look like 'YYYY-MM-DD HH:MM:SS+00' (seconds, optional fraction, explicit UTC offset)"
  fi
  find_pgbackrest
  require_setup
  load_cluster
  local src_real=$PG_REAL timeout=${SW_RESTORE_TIMEOUT:-900}
  positive_int "$timeout" || sw_die "SW_RESTORE_TIMEOUT must be a positive number of seconds, got '$timeout'"
  port=${port:-$((PG_PORT + 1))}
  if [[ ! "$port" =~ ^[0-9]{4,5}$ ]] || ((10#$port < 1024 || 10#$port > 65535)); then
    sw_die "--port must be a port from 1024 to 65535, got '$port'"
  fi
  ((port != PG_PORT)) || sw_die "--port $port is the source cluster's port: choose another"
  to="$(readlink -m "$(dirname "$to")")/$(basename "$to")"
  if [[ -e "$to" || -L "$to" ]]; then
    [[ -d "$to" && -z "$(ls -A "$to")" ]] ||
      sw_die "$to exists: restore goes into a fresh folder (choose another, or remove it with SW_PG_DIR=$to deploy/pg.sh destroy --force)"
  fi
  [[ "$(readlink -m "$to")" != "$src_real" ]] || sw_die "$to is the source cluster"
  archive_current_wal

  # A fresh cluster by deploy/pg.sh (folders, owner, secrets, url), whose
  # data folder is then replaced by the backup.
  sw_log "backup: making the cluster $to (port $port)"
  UNFINISHED=$to
  trap remove_unfinished EXIT
  SW_PG_DIR=$to SW_PG_PORT=$port "$PG_SH" init >/dev/null ||
    sw_die "deploy/pg.sh init of $to failed"
  load_cluster "$to"
  ((!PG_RUNNING)) || sw_die "the new cluster in $to is running"
  check_path_chars "$PG_RUN" "the restored cluster's folder"
  as_pg find "$PG_DATA" -mindepth 1 -delete || sw_die "cannot empty $PG_DATA"

  local args=(--pg1-path="$PG_DATA")
  if [[ -n "$target" ]]; then
    args+=(--type=time --target="$target" --target-action=promote)
    sw_log "backup: restoring up to $target"
  else
    sw_log "backup: restoring up to the end of the archive"
  fi
  pgbr restore "${args[@]}" || sw_die "pgbackrest restore failed (log: $BK_REAL/log)"
  # The restored configuration is the source's: no archiving into the
  # source's stanza from a copy (setup turns it on for a cluster adopted as
  # the new primary).
  printf '# Written by deploy/backup.sh restore: run deploy/backup.sh setup to archive this cluster.\narchive_mode = off\n' \
    >"$PG_REAL/.archive.conf.new"
  install_file "$PG_REAL/.archive.conf.new" "$PG_DATA/archive.conf" || true

  # Recovery runs on a temporary server reachable only over the socket (the
  # restored switch.conf still names the source's port and socket folder).
  sw_log "backup: recovering (WAL from the archive)"
  recover "$port" "$timeout"
  admin_sql postgres "ALTER SYSTEM RESET restore_command" >/dev/null
  admin_sql postgres "ALTER SYSTEM RESET recovery_target_time" >/dev/null
  admin_sql postgres "ALTER SYSTEM RESET recovery_target_action" >/dev/null
  as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null ||
    sw_die "the restored server did not stop (see $PG_LOG/postgresql.log)"

  # Its own configuration, port and passwords (init keeps the data), then
  # started for good.
  SW_PG_DIR=$to SW_PG_PORT=$port "$PG_SH" init >/dev/null ||
    sw_die "deploy/pg.sh init of the restored $to failed"
  SW_PG_DIR=$to "$PG_SH" start >/dev/null || sw_die "the restored cluster did not start"
  UNFINISHED=""
  sw_log "backup: restored cluster running on 127.0.0.1:$port in $to"
  sw_log "backup: connection string: SW_PG_DIR=$to deploy/pg.sh url; verify it (docs/backup.md)"
}

# --- pg_dump route ---------------------------------------------------------

cmd_dump() {
  local file=${1:-}
  [[ -n "$file" ]] || sw_die "usage: deploy/backup.sh dump FILE"
  [[ ! -e "$file" ]] || sw_die "$file exists: choose another name or remove it"
  load_cluster
  require_running
  local tmp="$file.partial"
  # The dump holds the journal (masked and encrypted PANs): owner-only.
  (
    umask 077
    as_pg "$PG_BIN/pg_dump" -w -Fc -h "$PG_RUN" -p "$PG_PORT" -U "$PG_USER" \
      -d "$DB_NAME" >"$tmp"
  ) || {
    rm -f "$tmp"
    sw_die "pg_dump failed"
  }
  mv -f "$tmp" "$file"
  sw_log "backup: dumped database $DB_NAME to $file ($(stat -c %s "$file") bytes)"
}

cmd_load() {
  local file=${1:-}
  [[ -n "$file" ]] || sw_die "usage: deploy/backup.sh load FILE"
  [[ -f "$file" && -r "$file" ]] || sw_die "cannot read $file"
  load_cluster
  require_running
  local n
  n=$(admin_sql "$DB_NAME" "SELECT count(*) FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = 'switch'") ||
    sw_die "cannot query database $DB_NAME"
  ((n == 0)) ||
    sw_die "database $DB_NAME already holds $n relations in schema switch: load goes into a freshly initialised cluster (deploy/pg.sh init, without migrate)"
  # From stdin, so that the server's user needs no access to FILE; one
  # transaction, so that a failed load leaves the empty database.
  as_pg "$PG_BIN/pg_restore" -w -h "$PG_RUN" -p "$PG_PORT" -U "$PG_USER" \
    -d "$DB_NAME" --clean --if-exists --single-transaction --exit-on-error <"$file" ||
    sw_die "pg_restore of $file failed; nothing was loaded"
  sw_log "backup: loaded $file into database $DB_NAME"
}

# --- main ------------------------------------------------------------------

cmd=${1:-}
if (($# > 0)); then shift; fi
case "$cmd" in
setup) cmd_setup ;;
full) cmd_backup full ;;
incr) cmd_backup incr ;;
check) cmd_check ;;
info) cmd_info "$@" ;;
restore) cmd_restore "$@" ;;
dump) cmd_dump "$@" ;;
load) cmd_load "$@" ;;
-h | --help | help) usage ;;
"")
  usage >&2
  exit 2
  ;;
*) sw_die "unknown command '$cmd' (try --help)" ;;
esac
