#!/usr/bin/env bash
# shellcheck disable=SC2317 # step functions are called through sw_step_run
# deploy/quickstart.sh — from a fresh Debian 12 machine (root, or a user with
# sudo) to a running system: installs what is missing, builds, and runs the
# main job.  Safe to run again; each step redoes only what it must.
#
# Steps, in order; the first that fails stops the script:
#   deps     deploy/install-deps.sh
#   build    build/ (gcc, RelWithDebInfo), every target
#   samples  decodes tests/data/samples/<dialect>-<what>.hex with
#            build/iso8583/iso8583 decode --dialect <dialect>, where
#            <dialect> is the longest name in 'iso8583 dialects' that the
#            file name starts with (dialect names may contain '-')
#   db       PostgreSQL 15 on 127.0.0.1 with its cluster under var/pg/
#            (deploy/pg.sh), left running for the switch, and the schema
#            (switchctl migrate)
#   hsm      a demo key ceremony with the soft HSM under var/hsm-demo/
#            (hsm-keytool: master key, key store, two custodians'
#            components per key, the key list with check values)
#   journal  a demo business day (yesterday, UTC) written through the
#            journal writer (HMAC-chained under var/hsm-demo), then what
#            the back office runs: switchctl verify, settle (clearing file
#            under var/clearing/), txn --rrn and recon
#
# Environment:
#   SW_SKIP_DEPS=1   do not run deploy/install-deps.sh
set -euo pipefail

# shellcheck source=deploy/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$SW_ROOT"

CLI="$SW_ROOT/build/iso8583/iso8583"
SAMPLES="$SW_ROOT/tests/data/samples"

# --- steps -----------------------------------------------------------------

step_deps() {
  bash "$SW_ROOT/deploy/install-deps.sh"
}

step_build() {
  sw_build_main
}

# Decodes every sample; fails if any does not decode.
step_samples() {
  [[ -x "$CLI" ]] || sw_die "$CLI was not built"
  local files=() f name dialect out failed=0
  if [[ -d "$SAMPLES" ]]; then
    mapfile -t files < <(find "$SAMPLES" -maxdepth 1 -type f -name '*.hex' | sort)
  fi
  if ((${#files[@]} == 0)); then
    echo "note: no sample messages yet (tests/data/samples/<dialect>-<what>.hex);"
    echo "      nothing to decode.  Try: $CLI --help"
    return 0
  fi
  # Dialect names may contain '-' (iso87a-bbitmap), so the dialect of
  # <dialect>-<what>.hex is the longest built-in name that the file name
  # starts with, followed by '-'; failing that, the part before the first '-'.
  local known=() d
  mapfile -t known < <("$CLI" dialects | awk '{ print $1 }')
  for f in "${files[@]}"; do
    name=$(basename "$f" .hex)
    dialect=${name%%-*}
    for d in "${known[@]}"; do
      if [[ "$name" == "$d"-* && ${#d} -gt ${#dialect} ]]; then dialect=$d; fi
    done
    printf '\n--- %s (dialect %s)\n' "${f#"$SW_ROOT"/}" "$dialect"
    if out=$("$CLI" decode --dialect "$dialect" <"$f"); then
      if command -v jq >/dev/null 2>&1 && jq empty <<<"$out" 2>/dev/null; then
        jq . <<<"$out"
      else
        printf '%s\n' "$out"
      fi
    else
      printf '%s\n' "$out"
      echo "error: $name did not decode" >&2
      failed=$((failed + 1))
    fi
  done
  echo
  echo "samples: $((${#files[@]} - failed)) decoded, $failed failed"
  ((failed == 0))
}

# A demo key ceremony with the soft HSM: a master key and key store under
# var/hsm-demo/ (made once, kept between runs), two custodians' components
# for a terminal PIN key and a zone PIN key (the public test keys of
# tests/data/vectors, never for production), and the key list with check
# values.  Prints no key material.
step_hsm() {
  local kt="$SW_ROOT/build/hsm/hsm-keytool" d="$SW_ROOT/var/hsm-demo"
  [[ -x "$kt" ]] || sw_die "$kt was not built"
  local args=(--keystore "$d/keys.store" --master-key "$d/master.key"
    --audit-log "$d/audit.log" --who quickstart)
  mkdir -p "$d" && chmod 700 "$d"
  if [[ ! -f "$d/keys.store" ]]; then
    "$kt" "${args[@]}" init-master-key
    "$kt" "${args[@]}" init
    # TPK 0123456789ABCDEFFEDCBA9876543210 (check value 08D7B4) and ZPK
    # 89E88CF7931444F334BD7547FC3F380C (D1D812), each as two odd-parity
    # components; the combined key is parity-adjusted, which leaves its
    # check value unchanged.
    printf '%s\n%s\n' 0101010101010101FEFEFEFEFEFEFEFE \
      0123456789ABCDEF0123456789ABCDEF |
      "$kt" "${args[@]}" import-components demo.terminal.tpk TPK TDES 16 \
        --kcv 08D7B4
    printf '%s\n%s\n' 0101010101010101FEFEFEFEFEFEFEFE \
      89E98CF7921545F2CB438AB902C1C7F2 |
      "$kt" "${args[@]}" import-components demo.issuer.zpk ZPK TDES 16 \
        --kcv D1D812
  fi
  "$kt" "${args[@]}" list
}

# PostgreSQL on 127.0.0.1 with its cluster under var/pg/ (deploy/pg.sh,
# docs/postgresql.md); as root the server runs as the system user swpg.
# It is left running for the switch; deploy/pg.sh stop stops it.
step_db() {
  bash "$SW_ROOT/deploy/pg.sh" init
  bash "$SW_ROOT/deploy/pg.sh" start
  bash "$SW_ROOT/deploy/pg.sh" status
  # The schema: numbered migrations, applied once (db/migrations).
  "$SW_ROOT/build/switch/switchctl" migrate
}

# A demo day through the real journal writer (tests/db/journal_gen.c: 40
# sales and refunds in EUR, USD and JPY, some declined, two merchants),
# then the back office's commands on it.  Safe to run again: the events are
# idempotent and settling a closed date gives the same file.
step_journal() {
  local kt="$SW_ROOT/build/hsm/hsm-keytool" d="$SW_ROOT/var/hsm-demo"
  local ctl="$SW_ROOT/build/switch/switchctl" gen="$SW_ROOT/build/tests/journal_gen"
  [[ -x "$gen" && -x "$ctl" ]] || sw_die "journal_gen or switchctl was not built"
  local args=(--keystore "$d/keys.store" --master-key "$d/master.key"
    --audit-log "$d/audit.log" --who quickstart)
  "$kt" "${args[@]}" list | grep -q '^journal\.chain ' ||
    "$kt" "${args[@]}" generate journal.chain HMAC HMAC 32
  bash "$SW_ROOT/deploy/pg.sh" psql -q -v ON_ERROR_STOP=1 -c "
    INSERT INTO switch.merchants (merchant_id, name, mcc, fee_bps, fee_fixed_minor, fee_currency, settlement_days)
      VALUES ('M00000000000001', 'Demo grocery', '5411', 150, 10, '978', 1),
             ('M00000000000002', 'Demo cafe', '5812', 95, 0, '840', 2)
      ON CONFLICT DO NOTHING;
    INSERT INTO switch.terminals (terminal_id, merchant_id)
      VALUES ('T0000001', 'M00000000000001'), ('T0000002', 'M00000000000002')
      ON CONFLICT DO NOTHING;
    INSERT INTO switch.issuers (issuer_id, name, dialect)
      VALUES ('visa', 'Demo issuer', 'iso87a') ON CONFLICT DO NOTHING"
  local day url
  day=$(date -u -d yesterday +%F)
  url=$(bash "$SW_ROOT/deploy/pg.sh" url)
  "$gen" "$url" "$d/keys.store" "$d/master.key" "$day" 1 40 1
  local hsm=(--hsm-keystore "$d/keys.store" --hsm-master-key "$d/master.key")
  "$ctl" "${hsm[@]}" verify --date "$day" --chain-only
  mkdir -p "$SW_ROOT/var/clearing"
  "$ctl" settle --date "$day" --out "$SW_ROOT/var/clearing"
  "$ctl" "${hsm[@]}" verify --date "$day"
  "$ctl" txn --rrn 400100000001
  "$ctl" recon --terminal T0000001 --batch 1 --currency 978
}

# Later step (not yet written):
#   switch  start the switch on loopback against that database, with the
#           issuer simulator and sample terminal traffic.

# --- main ------------------------------------------------------------------

STEPS=(deps build samples hsm db journal)

sw_log "quickstart in $SW_ROOT"
for step in "${STEPS[@]}"; do
  if [[ "$step" == deps ]] && sw_truthy SW_SKIP_DEPS; then
    sw_step_skip deps SW_SKIP_DEPS
    continue
  fi
  sw_step_run "$step" "step_$step"
  if ! sw_step_ok "$step"; then
    printf '\n==== summary ====\n'
    sw_step_summary || true
    sw_die "quickstart stopped at step '$step'"
  fi
done

printf '\n==== summary ====\n'
sw_step_summary
echo "quickstart: done.  Run the test suite with deploy/test.sh"
