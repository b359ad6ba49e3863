#!/usr/bin/env bash
# Runs bench_hsm against a fresh SoftHSM2 token (made by deploy/softhsm.sh
# in a temporary directory, removed afterwards), PIN operations included
# (the insecure PIN switch: benchmarks and tests only).
# Usage: tests/bench/bench_hsm_pkcs11.sh PATH/TO/bench_hsm
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bench=${1:?usage: bench_hsm_pkcs11.sh PATH/TO/bench_hsm}
if ! command -v softhsm2-util >/dev/null 2>&1; then
  echo "softhsm2 is not installed: pkcs11 benchmark skipped"
  exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
eval "$("$here/../../deploy/softhsm.sh" --env "$dir")"
SW_HSM_BACKEND=pkcs11 SW_PKCS11_INSECURE_PIN=1 "$bench"
