#!/usr/bin/env bash
# deploy/softhsm.sh — a SoftHSM2 token for the pkcs11 HSM backend, for
# development and tests.  Idempotent and non-interactive (no stdin needed).
#
#   deploy/softhsm.sh [DIR] [LABEL]   set up DIR (default var/softhsm) and a
#                                     token LABEL (default switch-test), then
#                                     print the environment to export
#   deploy/softhsm.sh --env [DIR] [LABEL]
#                                     print only the export lines (for eval)
#
# What it does, each step skipped when already done:
#   - installs Debian's softhsm2 when softhsm2-util is missing (apt-get, via
#     sudo when not root);
#   - creates DIR (mode 0700) with its own softhsm2.conf and tokens/ folder,
#     so nothing outside DIR is touched (SOFTHSM2_CONF points at it);
#   - writes a random SO PIN and user PIN to DIR/so.pin and DIR/user.pin
#     (mode 0600, no trailing newline);
#   - initialises the token LABEL with those PINs.
# The user PIN file is what hsm_config_t.pkcs11_pin_file names.  DIR should
# be under the repository's var/ (ignored by git) or a temporary folder.
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

env_only=0
if [[ "${1:-}" == --env ]]; then
  env_only=1
  shift
fi
case "${1:-}" in
-h | --help)
  sed -n '2,19s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  exit 0
  ;;
-*) sw_die "unknown option '$1' (try --help)" ;;
esac

dir=${1:-$SW_ROOT/var/softhsm}
label=${2:-switch-test}
[[ -n "$label" && ${#label} -le 32 ]] || sw_die "token label must be 1 to 32 characters"

# Messages go to stderr in --env mode so stdout can be eval'ed.
say() {
  if ((env_only)); then sw_log "$@" >&2; else sw_log "$@"; fi
}

# 1. The package.
if ! command -v softhsm2-util >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 ||
    sw_die "softhsm2-util not found and apt-get is missing: install SoftHSM2 2.6 or later"
  as_root=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 ||
      sw_die "not root and sudo is not installed; as root run: apt-get install softhsm2"
    as_root=(sudo -n)
  fi
  say "softhsm: installing softhsm2"
  apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get
    -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
  {
    "${apt[@]}" update -q &&
      "${apt[@]}" install -y -q --no-install-recommends softhsm2
  } </dev/null >&2 || sw_die "apt-get install softhsm2 failed"
fi

# The module: Debian puts it in /usr/lib/softhsm; other layouts are searched.
module=""
for m in /usr/lib/softhsm/libsofthsm2.so \
  /usr/lib/"$(uname -m)"-linux-gnu/softhsm/libsofthsm2.so \
  /usr/lib64/pkcs11/libsofthsm2.so /usr/local/lib/softhsm/libsofthsm2.so; do
  if [[ -f "$m" ]]; then
    module=$m
    break
  fi
done
if [[ -z "$module" ]] && command -v dpkg-query >/dev/null 2>&1; then
  module=$(dpkg-query -L libsofthsm2 2>/dev/null | grep '/libsofthsm2\.so$' | head -n1 || true)
fi
[[ -n "$module" ]] || sw_die "libsofthsm2.so not found (is the softhsm2 package complete?)"

# 2. The folder and its configuration.
umask 077
mkdir -p "$dir/tokens"
dir=$(cd "$dir" && pwd)
chmod 0700 "$dir" "$dir/tokens"
conf=$dir/softhsm2.conf
if [[ ! -f "$conf" ]]; then
  cat >"$conf" <<EOF
# SoftHSM2 configuration written by deploy/softhsm.sh
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
  chmod 0600 "$conf"
fi
export SOFTHSM2_CONF=$conf

# 3. PIN files: 16 random digits each, readable by the owner only.
new_pins=0
new_pin() {
  local f=$1
  if [[ ! -s "$f" ]]; then
    new_pins=1
    local digits
    digits=$(head -c 4096 /dev/urandom | LC_ALL=C tr -dc '0-9')
    ((${#digits} >= 16)) || sw_die "cannot draw random digits"
    printf '%s' "${digits:0:16}" >"$f.tmp"
    mv "$f.tmp" "$f"
  fi
  chmod 0600 "$f"
}
new_pin "$dir/so.pin"
new_pin "$dir/user.pin"

# 4. The token.  softhsm2-util takes PINs only as arguments or from a
# terminal; the arguments are visible in the process list for the instant
# it runs, which is acceptable for a development token only.
has_token() {
  softhsm2-util --show-slots 2>/dev/null |
    grep -Eq "^[[:space:]]*Label:[[:space:]]+$(printf '%s' "$label" | sed 's/[][\.*^$/]/\\&/g')[[:space:]]*$"
}
if has_token; then
  ((!new_pins)) ||
    sw_die "token \"$label\" exists in $dir but its PIN files were missing; remove $dir to start over"
  say "softhsm: token \"$label\" exists in $dir"
else
  say "softhsm: initialising token \"$label\" in $dir"
  softhsm2-util --init-token --free --label "$label" \
    --so-pin "$(cat "$dir/so.pin")" --pin "$(cat "$dir/user.pin")" \
    </dev/null >/dev/null || sw_die "softhsm2-util --init-token failed"
  has_token || sw_die "token \"$label\" not visible after initialisation"
fi

if ((!env_only)); then
  sw_log "softhsm: ready; export these to use the token:"
fi
printf 'export SOFTHSM2_CONF=%q\n' "$conf"
printf 'export SW_PKCS11_MODULE=%q\n' "$module"
printf 'export SW_PKCS11_TOKEN=%q\n' "$label"
printf 'export SW_PKCS11_PIN_FILE=%q\n' "$dir/user.pin"
