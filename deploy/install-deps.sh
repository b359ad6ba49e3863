#!/usr/bin/env bash
# deploy/install-deps.sh — installs the Debian 12 packages the switch needs to
# build and test.  Idempotent and non-interactive: packages already installed
# are left alone, and apt-get update runs only when something is missing.
# Runs as root, or as a user with sudo.
#
#   deploy/install-deps.sh          install what is missing
#   deploy/install-deps.sh --check  list what is missing; exit 1 if anything is
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PACKAGES=(
  build-essential    # gcc, make, libc headers
  cmake
  pkg-config
  ninja-build        # optional for the build, used when present
  clang              # clang 14: fuzzers, and the warning check of the asan tree
  libclang-rt-14-dev # clang's libFuzzer, ASan, UBSan and LSan runtimes
  llvm               # llvm-symbolizer: file:line in sanitizer reports
  clang-format       # style check in deploy/test.sh
  libuv1-dev
  libssl-dev
  libpq-dev
  libprotobuf-c-dev
  protobuf-c-compiler
  libcunit1-dev
  libjansson-dev
  jq                 # JSON checks in shell tests
  xxd                # hex to bytes in shell tests
  openssl            # independent check values in the key tool's tests
  libp11-kit-dev     # the OASIS PKCS#11 header (pkcs11 HSM backend)
  softhsm2           # a real PKCS#11 token for the pkcs11 backend's tests
  postgresql-15      # the switch's local database server (deploy/pg.sh)
  pgbackrest         # backups and WAL archiving of that server (deploy/backup.sh)
  iproute2           # ss: port checks in deploy/pg.sh and its test
)

check_only=0
case "${1:-}" in
--check) check_only=1 ;;
"") ;;
-h | --help)
  sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
  exit 0
  ;;
*) sw_die "unknown argument '$1' (try --help)" ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  sw_die "dpkg/apt-get not found: this script supports Debian 12 only; install the equivalents of: ${PACKAGES[*]}"
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != installed ]]; then missing+=("$pkg"); fi
done

if ((${#missing[@]} == 0)); then
  sw_log "install-deps: all ${#PACKAGES[@]} packages are installed"
  exit 0
fi

if ((check_only)); then
  printf 'missing: %s\n' "${missing[*]}"
  exit 1
fi

sw_log "install-deps: installing ${missing[*]}"

as_root=()
if ((EUID != 0)); then
  command -v sudo >/dev/null 2>&1 ||
    sw_die "not root and sudo is not installed; as root run: apt-get install ${missing[*]}"
  as_root=(sudo)
fi

# Debian's postgresql packages create and start a system cluster (15/main
# on port 5432) when first installed.  The switch runs its own cluster
# under var/ (deploy/pg.sh), so that one would only be a stray server:
# tell postgresql-common not to create it.
for pkg in "${missing[@]}"; do
  if [[ "$pkg" == postgresql-15 ]]; then
    conf=/etc/postgresql-common/createcluster.d/00-iso8583-switch.conf
    "${as_root[@]}" mkdir -p "$(dirname "$conf")"
    printf '%s\n' "# written by deploy/install-deps.sh: the switch runs its own cluster" \
      "create_main_cluster = false" | "${as_root[@]}" tee "$conf" >/dev/null
  fi
done

apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get
  -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
"${apt[@]}" update -q ||
  sw_die "apt-get update failed (network or sources.list?)"
"${apt[@]}" install -y -q --no-install-recommends "${missing[@]}" ||
  sw_die "apt-get install failed for: ${missing[*]}"

sw_log "install-deps: installed ${missing[*]}"
