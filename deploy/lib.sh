# shellcheck shell=bash
# deploy/lib.sh — shell functions shared by the deploy scripts and .ci/run.
# Source it from bash; it sets SW_ROOT (the repository root) and changes
# nothing else until a function is called.

SW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SW_ROOT

sw_log() { printf '==> %s\n' "$*"; }
sw_warn() { printf 'warning: %s\n' "$*" >&2; }
sw_die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

sw_jobs() { nproc 2>/dev/null || echo 2; }

# True when the environment variable named $1 is set to 1/yes/true/on.
sw_truthy() {
  case "${!1:-}" in
  1 | [yY] | [yY][eE][sS] | [tT][rR][uU][eE] | [oO][nN]) return 0 ;;
  *) return 1 ;;
  esac
}

# sw_configure DIR COMPILER BUILD_TYPE [cmake -D args...]
# Configures DIR (relative to the repo root) with the given C compiler.
# Ninja is used when installed, Makefiles otherwise; an existing tree keeps
# the generator it was made with.  A tree configured with another compiler,
# or for another source folder, is deleted and configured again (CMake cannot
# switch either in place).
sw_configure() {
  local dir=$1 cc=$2 type=$3
  shift 3
  local cc_path cached
  cc_path=$(command -v "$cc") || sw_die "C compiler '$cc' not found (run deploy/install-deps.sh)"
  local cache="$SW_ROOT/$dir/CMakeCache.txt"
  if [[ -f "$cache" ]]; then
    cached=$(sed -n 's/^CMAKE_HOME_DIRECTORY:[A-Z]*=//p' "$cache")
    if [[ -n "$cached" && "$(readlink -f "$cached")" != "$(readlink -f "$SW_ROOT")" ]]; then
      sw_log "$dir/ belongs to the source tree $cached; reconfiguring from scratch"
      rm -rf "${SW_ROOT:?}/$dir"
    fi
  fi
  if [[ -f "$cache" ]]; then
    cached=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$cache")
    if [[ -n "$cached" && "$(readlink -f "$cached")" != "$(readlink -f "$cc_path")" ]]; then
      sw_log "$dir/ was configured with $cached; reconfiguring from scratch with $cc_path"
      rm -rf "${SW_ROOT:?}/$dir"
    fi
  fi
  local gen=()
  if [[ ! -f "$SW_ROOT/$dir/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
    gen=(-G Ninja)
  fi
  cmake -S "$SW_ROOT" -B "$SW_ROOT/$dir" "${gen[@]}" \
    -DCMAKE_C_COMPILER="$cc_path" -DCMAKE_BUILD_TYPE="$type" "$@"
}

# sw_build DIR [target...] — builds DIR in parallel (all targets by default).
sw_build() {
  local dir=$1
  shift
  local targets=()
  if (($# > 0)); then targets=(--target "$@"); fi
  cmake --build "$SW_ROOT/$dir" --parallel "$(sw_jobs)" "${targets[@]}"
}

# The main tree, shared by quickstart.sh and test.sh: gcc, RelWithDebInfo.
sw_build_main() {
  sw_configure build gcc RelWithDebInfo \
    -DSW_SANITIZE=OFF -DSW_FUZZ=OFF -DSW_WERROR=ON
  sw_build build
}

# sw_step_run NAME FUNCTION [args...]
# Runs one step in a subshell with errexit in force and records its status
# and duration for sw_step_summary.  Always returns 0, so call it as a plain
# command (not after if, && or ||: bash would then ignore errexit inside the
# step) and ask sw_step_ok afterwards.
SW_STEP_NAMES=()
SW_STEP_STATUS=()
SW_STEP_TIME=()
sw_step_run() {
  local name=$1
  shift
  local start=$SECONDS rc
  printf '\n==== %s ====\n' "$name"
  set +e
  (
    set -euo pipefail
    "$@"
  )
  rc=$?
  set -e
  SW_STEP_NAMES+=("$name")
  SW_STEP_TIME+=("$((SECONDS - start))s")
  if ((rc == 0)); then
    SW_STEP_STATUS+=(ok)
  else
    SW_STEP_STATUS+=("FAILED (exit $rc)")
    printf '==== %s FAILED (exit %d) ====\n' "$name" "$rc" >&2
  fi
  return 0
}

# Records a step that was not run.
sw_step_skip() {
  SW_STEP_NAMES+=("$1")
  SW_STEP_STATUS+=("skipped: $2")
  SW_STEP_TIME+=(-)
  printf '\n==== %s: skipped (%s) ====\n' "$1" "$2"
}

# Prints the step table; returns 1 when any step failed.
sw_step_summary() {
  local i failed=0
  for i in "${!SW_STEP_NAMES[@]}"; do
    printf '  %-22s %-6s %s\n' "${SW_STEP_NAMES[$i]}" "${SW_STEP_TIME[$i]}" \
      "${SW_STEP_STATUS[$i]}"
    if [[ "${SW_STEP_STATUS[$i]}" == FAILED* ]]; then failed=1; fi
  done
  return "$failed"
}

# True when the step named $1 has run and passed.
sw_step_ok() {
  local i
  for i in "${!SW_STEP_NAMES[@]}"; do
    if [[ "${SW_STEP_NAMES[$i]}" == "$1" && "${SW_STEP_STATUS[$i]}" == ok ]]; then
      return 0
    fi
  done
  return 1
}
