#!/usr/bin/env bash
# tests/fuzz/run.sh BUILD_DIR [SECONDS] — runs every libFuzzer target
# (fuzz_*) built in BUILD_DIR for a total of SECONDS (default 80), shared
# equally between the targets found.
#
# Each target fuzzes a scratch copy of tests/fuzz/corpus/<name without
# "fuzz_">/ (an empty one when that folder is missing), so the committed seed
# corpus is never changed; tests/fuzz/<name>.dict is passed when it exists.
# Crash, leak, timeout and OOM inputs are written to
# BUILD_DIR/fuzz-artifacts/<target>-<kind>-<sha1>, and each target's full log
# to BUILD_DIR/fuzz-logs/<target>.log.  Exits non-zero if any target fails.
#
# Reproduce a crash: run the target with the artifact as its only argument,
#   build-fuzz/tests/fuzz/fuzz_parse build-fuzz/fuzz-artifacts/fuzz_parse-crash-…
set -euo pipefail

usage() {
  echo "usage: $0 BUILD_DIR [SECONDS]" >&2
  exit 2
}
(($# >= 1 && $# <= 2)) || usage
build_dir=$1
total=${2:-80}
if ! [[ "$total" =~ ^[0-9]+$ ]] || ((total == 0)); then
  echo "error: SECONDS must be a positive integer, got '$total'" >&2
  exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ -d "$build_dir" ]] || {
  echo "error: build directory '$build_dir' does not exist" >&2
  exit 2
}
build_dir="$(cd "$build_dir" && pwd)"

mapfile -t targets < <(find "$build_dir" -path '*/CMakeFiles' -prune -o \
  -type f -name 'fuzz_*' -perm -u+x -print | sort)
if ((${#targets[@]} == 0)); then
  echo "error: no fuzz_* executables in $build_dir" \
    "(configure with clang and -DSW_FUZZ=ON, then build the fuzz_* targets)" >&2
  exit 1
fi

share=$((total / ${#targets[@]}))
((share >= 1)) || share=1
echo "fuzz: ${#targets[@]} target(s), ${share}s each (${total}s in all)"

artifacts="$build_dir/fuzz-artifacts"
logs="$build_dir/fuzz-logs"
mkdir -p "$artifacts" "$logs"
work=$(mktemp -d "${TMPDIR:-/tmp}/sw-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

stat_of() { sed -n "s/^stat::$1: *//p" "$2" | tail -n 1; }

results=()
failed=0
for exe in "${targets[@]}"; do
  name=$(basename "$exe")
  seeds="$here/corpus/${name#fuzz_}"
  corpus="$work/$name"
  mkdir -p "$corpus"
  nseeds=0
  if [[ -d "$seeds" ]]; then
    cp -R "$seeds/." "$corpus/"
    nseeds=$(find "$corpus" -type f | wc -l)
  fi
  args=(-max_total_time="$share" -print_final_stats=1 -timeout=25
    -artifact_prefix="$artifacts/$name-")
  if [[ -f "$here/$name.dict" ]]; then args+=(-dict="$here/$name.dict"); fi
  log="$logs/$name.log"

  echo "fuzz: $name: ${share}s from $nseeds seed(s)"
  touch "$work/stamp"
  start=$SECONDS
  rc=0
  "$exe" "${args[@]}" "$corpus" >"$log" 2>&1 || rc=$?
  elapsed=$((SECONDS - start))

  execs=$(stat_of number_of_executed_units "$log")
  rate=$(stat_of average_exec_per_sec "$log")
  units=$(find "$corpus" -type f | wc -l)
  line=$(printf '%-16s %-6s %4ss  execs=%-10s exec/s=%-7s corpus=%s' \
    "$name" "$([[ $rc == 0 ]] && echo ok || echo FAIL)" "$elapsed" \
    "${execs:-?}" "${rate:-?}" "$units")
  results+=("$line")
  if ((rc != 0)); then
    failed=1
    echo "fuzz: $name FAILED (exit $rc); last lines of $log:" >&2
    tail -n 60 "$log" >&2
    echo "fuzz: $name wrote:" >&2
    find "$artifacts" -name "$name-*" -newer "$work/stamp" >&2
    echo "fuzz: reproduce with: $exe FILE" >&2
  fi
done

echo "fuzz: results"
printf '  %s\n' "${results[@]}"
if ((failed)); then
  echo "fuzz: FAILED" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} target(s) passed"
