#!/usr/bin/env bash
# shellcheck disable=SC2317 # step functions are called through sw_step_run
# deploy/test.sh — installs what is missing, builds the three trees and runs
# the whole test suite:
#
#   build/       gcc,   RelWithDebInfo           ctest
#   build-asan/  clang, Debug, -DSW_SANITIZE=ON  ctest under ASan + UBSan
#   build-fuzz/  clang, -DSW_FUZZ=ON             tests/fuzz/run.sh
#   clang-format --dry-run --Werror over every .c and .h file
#
# Every tree builds with -Werror, so gcc (build/) and clang (build-asan/) are
# both checked warning-free.  Steps after a failure still run where they can;
# the summary at the end lists each step, and the exit status is non-zero if
# any step failed.
#
# Environment (for quick local runs; CI sets none of them):
#   SW_SKIP_ASAN=1   skip build-asan/ and its ctest run
#   SW_SKIP_FUZZ=1   skip build-fuzz/ and the fuzzers
#   SW_SKIP_DEPS=1   do not run deploy/install-deps.sh
#   FUZZ_SECONDS=N   total fuzzing time shared by the targets (default 140)
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SW_ROOT"

FUZZ_SECONDS=${FUZZ_SECONDS:-140}
if ! [[ "$FUZZ_SECONDS" =~ ^[0-9]+$ ]] || ((FUZZ_SECONDS == 0)); then
  sw_die "FUZZ_SECONDS must be a positive number of seconds, got '$FUZZ_SECONDS'"
fi
FORMAT_DIRS=(iso8583 hsm routing db switch tests)
CTEST_TIMEOUT=300 # seconds, for tests that set no TIMEOUT of their own

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/sw-test.XXXXXX")
trap 'rm -rf "$LOGS"' EXIT

# --- steps -----------------------------------------------------------------

step_deps() {
  bash "$SW_ROOT/deploy/install-deps.sh"
}

step_build() {
  sw_build_main
}

step_build_asan() {
  sw_configure build-asan clang Debug \
    -DSW_SANITIZE=ON -DSW_FUZZ=OFF -DSW_WERROR=ON
  sw_build build-asan
}

# The fuzz tree builds only the fuzz_* targets (and the libraries they link):
# with SW_FUZZ=ON the codec is compiled with sanitizer flags that only the
# fuzz targets link with.
step_build_fuzz() {
  sw_configure build-fuzz clang RelWithDebInfo \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
    -DSW_SANITIZE=OFF -DSW_FUZZ=ON -DSW_WERROR=ON
  local targets
  mapfile -t targets < <(fuzz_targets)
  ((${#targets[@]} > 0)) || sw_die "no fuzz_* targets in build-fuzz/"
  sw_log "fuzz targets: ${targets[*]}"
  sw_build build-fuzz "${targets[@]}"
}

# Names of the fuzz_* targets CMake knows in build-fuzz/.
fuzz_targets() {
  cmake --build "$SW_ROOT/build-fuzz" --target help |
    sed -n -E 's/^(\.\.\. )?(fuzz_[A-Za-z0-9_]+)(: .*)?$/\2/p' | sort -u
}

# run_ctest DIR — runs the suite in DIR; its log is kept for the summary.
run_ctest() {
  local dir=$1
  ctest --test-dir "$SW_ROOT/$dir" --output-on-failure -j2 \
    --no-tests=error --timeout "$CTEST_TIMEOUT" 2>&1 | tee "$LOGS/ctest-$dir.log"
}

step_ctest() {
  run_ctest build
}

step_ctest_asan() {
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_ctest build-asan
}

step_fuzz() {
  bash "$SW_ROOT/tests/fuzz/run.sh" "$SW_ROOT/build-fuzz" "$FUZZ_SECONDS" 2>&1 |
    tee "$LOGS/fuzz.log"
}

step_format() {
  local dirs=() files=() bad=() f
  for f in "${FORMAT_DIRS[@]}"; do
    if [[ -d "$f" ]]; then dirs+=("$f"); fi
  done
  if ((${#dirs[@]} > 0)); then
    mapfile -d '' files < <(find "${dirs[@]}" -type f \
      \( -name '*.c' -o -name '*.h' \) -print0 | sort -z)
  fi
  sw_log "$(clang-format --version)"
  sw_log "checking ${#files[@]} files in ${dirs[*]}"
  for f in "${files[@]}"; do
    clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if ((${#bad[@]} > 0)); then
    echo "clang-format: ${#bad[@]} file(s) not formatted:" >&2
    printf '  %s\n' "${bad[@]}" >&2
    for f in "${bad[@]:0:3}"; do
      clang-format "$f" | diff -u "$f" - | head -n 30 >&2 || true
    done
    echo "fix with: clang-format -i ${bad[*]}" >&2
    return 1
  fi
  echo "clang-format: all ${#files[@]} files formatted"
}

# Closing "N% tests passed, ..." line of a ctest log, or its last line.
ctest_result() {
  local log="$LOGS/ctest-$1.log" line
  [[ -f "$log" ]] || return 0
  line=$(grep -E 'tests passed|No tests were found' "$log" | tail -n 1 || true)
  [[ -n "$line" ]] || line=$(tail -n 1 "$log")
  printf '  ctest %-13s %s\n' "$1/:" "$line"
}

# --- main ------------------------------------------------------------------

sw_log "test.sh in $SW_ROOT (CI=${CI:-false}, $(sw_jobs) cpus)"

if sw_truthy SW_SKIP_DEPS; then
  sw_step_skip deps "SW_SKIP_DEPS"
else
  sw_step_run deps step_deps
  if ! sw_step_ok deps; then
    echo
    sw_step_summary || true
    sw_die "could not install the dependencies; nothing else was run"
  fi
fi

sw_step_run build step_build
if sw_step_ok build; then
  sw_step_run ctest step_ctest
else
  sw_step_skip ctest "build failed"
fi

if sw_truthy SW_SKIP_ASAN; then
  sw_step_skip build-asan "SW_SKIP_ASAN"
  sw_step_skip ctest-asan "SW_SKIP_ASAN"
else
  sw_step_run build-asan step_build_asan
  if sw_step_ok build-asan; then
    sw_step_run ctest-asan step_ctest_asan
  else
    sw_step_skip ctest-asan "build-asan failed"
  fi
fi

if sw_truthy SW_SKIP_FUZZ; then
  sw_step_skip build-fuzz "SW_SKIP_FUZZ"
  sw_step_skip fuzz "SW_SKIP_FUZZ"
else
  sw_step_run build-fuzz step_build_fuzz
  if sw_step_ok build-fuzz; then
    sw_step_run "fuzz (${FUZZ_SECONDS}s)" step_fuzz
  else
    sw_step_skip "fuzz (${FUZZ_SECONDS}s)" "build-fuzz failed"
  fi
fi

sw_step_run clang-format step_format

printf '\n==== summary ====\n'
status=0
sw_step_summary || status=1
ctest_result build
ctest_result build-asan
if [[ -f "$LOGS/fuzz.log" ]]; then
  sed -n 's/^  \(fuzz_.*\)/  \1/p' "$LOGS/fuzz.log"
fi
if ((status == 0)); then
  echo "test.sh: all steps passed"
else
  echo "test.sh: FAILED"
fi
exit "$status"
