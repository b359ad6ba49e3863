#!/usr/bin/env bash
# test_keytool.sh — end-to-end tests of hsm-keytool (docs/hsm-keytool.md).
#
# usage: test_keytool.sh <path-to-hsm-keytool>
#
# Proves: init-master-key writes 64 hex digits and a newline, mode 0600, and
# never overwrites; init creates a store once; dual-control import of the
# TDES key 0123456789ABCDEFFEDCBA9876543210 from 2 and from 3 components
# prints each component's check value and the combined 08D7B4, and a --kcv
# mismatch, a malformed, missing or repeated component store nothing;
# generate, list (text and JSON), rotate (with a changeover window) and
# destroy; export-tr31 then import-tr31 under AES and TDES KBPKs gives the
# same check value, and a wrong --kcv, wrong usage or altered block is
# refused; a store or master key open to group or others, a symlink, a
# foreign owner (as root), a missing file and a wrong master key exit 1
# with a hint; an audit log that cannot be opened stops the change; the
# audit log is 0600, one JSON object per line, has every event with its
# check value and operator, and neither it nor any output ever contains a
# component, the key or the master key; usage errors exit 2 and create
# nothing.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 <hsm-keytool-binary>" >&2
  exit 2
fi
BIN=$1

TMP=$(mktemp -d)
trap 'chmod -R u+rwX "$TMP" 2>/dev/null; rm -rf "$TMP"' EXIT
cd "$TMP"

KS=$TMP/var/hsm/keys.store
MK=$TMP/var/hsm/master.key
AL=$TMP/var/hsm/audit.log
ALL=$TMP/all-output # every stdout and stderr, searched for secrets at the end
: >"$ALL"

# The known key, its check value, and components that combine to it (each
# with odd parity, as custodians' components have; check values computed
# independently with `openssl enc -des-ede-ecb`).
KEY=0123456789ABCDEFFEDCBA9876543210
KEY_KCV=08D7B4
C2_1=3E7A5D0B94C2F16823AB5D7C8F9E0B1A C2_1_KCV=E9F8A6
C2_2=3E58196D1C683D86DC76E6E5F8CB380B C2_2_KCV=709646
C3_1=A4B5C7D6E9F80B1A2C3D4F5E61708392 C3_1_KCV=04C884
C3_2=5B6B79890E1F2C3D4A5B68798697A4B5 C3_2_KCV=254239
C3_3=FEFDFB386E4CEAC898BA9DBF91B31537 C3_3_KCV=F6D961
SECRETS=("$KEY" "$C2_1" "$C2_2" "$C3_1" "$C3_2" "$C3_3")

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

# run EXPECTED_RC INPUT_FILE ARGS...: runs the tool on the test store with
# stdin from INPUT_FILE, keeps stdout and stderr in $TMP/out and $TMP/err,
# and checks the exit status.
run() {
  local want=$1 input=$2
  shift 2
  local rc=0
  "$BIN" --keystore "$KS" --master-key "$MK" --audit-log "$AL" \
    --who tester "$@" <"$input" >"$TMP/out" 2>"$TMP/err" || rc=$?
  cat "$TMP/out" "$TMP/err" >>"$ALL"
  if [ "$rc" -ne "$want" ]; then
    fail "hsm-keytool $*: exit $rc, wanted $want: $(head -c 400 "$TMP/err")"
    return 1
  fi
  pass
}
# runs with the given lines on stdin
run_in() {
  local want=$1 lines=$2
  shift 2
  printf '%s' "$lines" >"$TMP/in"
  run "$want" "$TMP/in" "$@"
}
out_has() { grep -qF -- "$1" "$TMP/out" || { echo "  stdout: $(cat "$TMP/out")" >&2; return 1; }; }
err_has() { grep -qF -- "$1" "$TMP/err" || { echo "  stderr: $(cat "$TMP/err")" >&2; return 1; }; }
mode_of() { stat -c %a "$1"; }
listed() { "$BIN" --keystore "$KS" --master-key "$MK" list </dev/null 2>/dev/null; }
has_label() { listed | awk 'NR > 1 { print $1 }' | grep -qxF -- "$1"; }
versions_of() { listed | awk -v l="$1" '$1 == l' | wc -l; }
audit_has() { grep -F -- "$1" "$AL" | grep -qF -- "$2"; }
lacks_label() { ! has_label "$1"; }
listed_matches() { listed | grep -qE -- "$1"; }
out_matches() { grep -qE -- "$1" "$TMP/out"; }
differs() { ! cmp -s "$1" "$2"; }
lacks() { ! grep -qiF -- "$1" "$2"; } # STRING FILE, either case
every_line_matches() { ! grep -vqE -- "$1" "$2"; }
store_lacks_bytes() { ! od -An -tx1 -v "$KS" | tr -d ' \n' | grep -qiF -- "$1"; }

# --------------------------------------------------------------------------
# usage errors: exit 2, nothing created

run 2 /dev/null || true
run 2 /dev/null frobnicate || true
run 2 /dev/null --bogus list || true
run 2 /dev/null list extra || true
run 2 /dev/null list --yes || true
run 2 /dev/null generate 'bad label' ZPK TDES 16 || true
run 2 /dev/null generate "$(printf 'a%.0s' {1..64})" ZPK TDES 16 || true
run 2 /dev/null generate k.a zpk TDES 16 || true
run 2 /dev/null generate k.a XYZ TDES 16 || true
run 2 /dev/null generate k.a ZPK DES 16 || true
run 2 /dev/null generate k.a ZPK TDES 8 || true
run 2 /dev/null generate k.a ZPK TDES 016 || true
run 2 /dev/null generate k.a ZPK AES 20 || true
run 2 /dev/null generate k.a ZPK HMAC 65 || true
run 2 /dev/null generate k.a ZPK TDES || true
run 2 /dev/null import-components k.a ZPK TDES 16 --components 4 || true
run 2 /dev/null import-components k.a ZPK TDES 16 --kcv 08D7B || true
run 2 /dev/null import-components k.a ZPK TDES 16 --kcv 08D7BG || true
run 2 /dev/null import-components k.a ZPK TDES 16 --kcv || true
run 2 /dev/null import-tr31 k.a ZPK 'kek label' || true
run 2 /dev/null import-tr31 k.a ZPK kek --changeover-until 2030-02-30 || true
run 2 /dev/null import-tr31 k.a ZPK kek --changeover-until 2001-01-01T00:00:00Z || true
run 2 /dev/null rotate k.a --changeover-until tomorrow || true
run 2 /dev/null rotate k.a --yes || true
run 2 /dev/null destroy k.a || true
check "destroy without --yes off a terminal asks for --yes" err_has "--yes"
run 2 /dev/null kcv DES || true
run 2 /dev/null --who '' list || true
run 2 /dev/null --who "$(printf 'a\tb')" list || true
run 2 /dev/null --keystore || true
check "usage errors create no file" test ! -e "$TMP/var"
run 0 /dev/null --help || true
check "--help lists the commands" out_has "import-components"

# --------------------------------------------------------------------------
# master key and store

run 1 /dev/null list || true
check "a missing master key says how to create one" err_has "hint: create one with: hsm-keytool --master-key $MK init-master-key"
run 0 /dev/null init-master-key || true
check "master key file is mode 600" test "$(mode_of "$MK")" = 600
check "master key directory is mode 700" test "$(mode_of "$TMP/var/hsm")" = 700
check "master key is 64 hex digits and a newline" \
  grep -qxE '[0-9A-F]{64}' "$MK"
check "master key file is 65 bytes" test "$(wc -c <"$MK")" -eq 65
MASTER_HEX=$(cat "$MK")
SECRETS+=("$MASTER_HEX")
run 1 /dev/null init-master-key || true
check "init-master-key refuses to overwrite" err_has "exists"
check "the master key is unchanged" test "$(cat "$MK")" = "$MASTER_HEX"

run 1 /dev/null list || true
check "a missing store says how to create one" err_has "hint: create an empty one with: hsm-keytool --keystore $KS init"
run 0 /dev/null init || true
check "store file is mode 600" test "$(mode_of "$KS")" = 600
run 1 /dev/null init || true
check "init refuses an existing store" err_has "exists already"
run 0 /dev/null list || true
check "an empty store lists only the header" test "$(wc -l <"$TMP/out")" -eq 1

# permissions
chmod 644 "$KS"
run 1 /dev/null list || true
check "a store open to others: message" err_has "cannot open key store \"$KS\": file permissions are too open"
check "a store open to others: hint" err_has "hint: chmod 600 $KS"
chmod 600 "$KS"
chmod 640 "$MK"
run 1 /dev/null list || true
check "a master key open to the group: message" err_has "file permissions are too open"
check "a master key open to the group: hint" err_has "hint: chmod 600 $MK"
run 1 /dev/null generate k.perm ZAK TDES 16 || true
chmod 600 "$MK"
check "nothing generated while the master key was open" lacks_label k.perm
ln -s "$KS" "$TMP/link.store"
rc=0
"$BIN" --keystore "$TMP/link.store" --master-key "$MK" list </dev/null \
  >"$TMP/out" 2>"$TMP/err" || rc=$?
check "a symlinked store is refused" test "$rc" -eq 1
check "a symlinked store: message" err_has "symbolic link"
if [ "$(id -u)" -eq 0 ]; then
  cp -p "$KS" "$TMP/foreign.store"
  chown 65534 "$TMP/foreign.store"
  rc=0
  "$BIN" --keystore "$TMP/foreign.store" --master-key "$MK" list </dev/null \
    >"$TMP/out" 2>"$TMP/err" || rc=$?
  check "a store owned by another user is refused" test "$rc" -eq 1
  check "a foreign store: message names the owner" err_has "owned by uid 65534"
fi
# wrong master key
rc=0
"$BIN" --master-key "$TMP/other.key" init-master-key </dev/null >/dev/null 2>&1 || rc=$?
check "a second master key is created" test "$rc" -eq 0
SECRETS+=("$(cat "$TMP/other.key")")
rc=0
"$BIN" --keystore "$KS" --master-key "$TMP/other.key" list </dev/null \
  >"$TMP/out" 2>"$TMP/err" || rc=$?
cat "$TMP/out" "$TMP/err" >>"$ALL"
check "a wrong master key is refused" test "$rc" -eq 1
check "a wrong master key: message" err_has "master key is wrong or cannot be read"
check "a wrong master key: hint" err_has "hint:"

# --------------------------------------------------------------------------
# kcv: a custodian checks a component against the paper

run_in 0 "$C2_1"$'\n' kcv TDES || true
check "kcv of component 1" test "$(cat "$TMP/out")" = "$C2_1_KCV"
run_in 0 "${KEY,,}" kcv TDES || true
check "kcv of the key, lower case, no newline" test "$(cat "$TMP/out")" = "$KEY_KCV"
run_in 1 "${KEY:0:31}"$'\n' kcv TDES || true
run_in 1 "${KEY:0:30}ZZ"$'\n' kcv TDES || true
run_in 1 "${KEY:0:16}"$'\n' kcv TDES || true
run_in 1 " $KEY"$'\n' kcv TDES || true
run 1 /dev/null kcv TDES || true
if openssl version >/dev/null 2>&1; then
  AESKEY=000102030405060708090A0B0C0D0E0F
  SECRETS+=("$AESKEY")
  want=$(openssl mac -cipher AES-128-CBC -macopt hexkey:$AESKEY \
    -in <(head -c 16 /dev/zero) CMAC 2>/dev/null | cut -c1-6 || true)
  if [ -n "$want" ]; then
    run_in 0 "$AESKEY"$'\n' kcv AES || true
    check "AES kcv is the CMAC of zeros (as openssl computes it)" \
      test "$(cat "$TMP/out")" = "$want"
  fi
fi

# --------------------------------------------------------------------------
# dual-control import of components

run_in 0 "$C2_1"$'\n'"$C2_2"$'\n' import-components zpk.two ZPK TDES 16 || true
check "2 components: component 1 check value" out_has "component 1 of 2: check value $C2_1_KCV"
check "2 components: component 2 check value" out_has "component 2 of 2: check value $C2_2_KCV"
check "2 components: combined check value" out_has "combined key: check value $KEY_KCV"
check "2 components: stored" listed_matches "^zpk\.two +ZPK +TDES +16 +1 +$KEY_KCV "

run_in 0 "$C3_1"$'\n'"$C3_2"$'\n'"$C3_3"$'\n' \
  import-components zpk.three ZPK TDES 16 --components 3 --kcv "${KEY_KCV,,}" || true
check "3 components: component 1 check value" out_has "component 1 of 3: check value $C3_1_KCV"
check "3 components: component 2 check value" out_has "component 2 of 3: check value $C3_2_KCV"
check "3 components: component 3 check value" out_has "component 3 of 3: check value $C3_3_KCV"
check "3 components: combined check value" out_has "combined key: check value $KEY_KCV"
check "3 components: stored with the key's check value" listed_matches "^zpk\.three +ZPK +TDES +16 +1 +$KEY_KCV "

run_in 1 "$C2_1"$'\n'"$C2_2"$'\n' import-components zpk.bad ZPK TDES 16 --kcv 123456 || true
check "--kcv mismatch: message" err_has "is $KEY_KCV, not the expected 123456"
check "--kcv mismatch: nothing stored" lacks_label zpk.bad
check "--kcv mismatch: audited" audit_has '"event":"check_failed"' '"status":"KCV_MISMATCH"'

run_in 1 "$C2_1"$'\n'"${C2_2:0:30}"$'\n' import-components zpk.short ZPK TDES 16 || true
check "a short component: message gives its length" err_has "component 2 of 2 for \"zpk.short\" is not valid"
check "a short component: nothing stored" lacks_label zpk.short
run_in 1 "$C2_1"$'\n'"${C2_2:0:31}X"$'\n' import-components zpk.hex ZPK TDES 16 || true
check "a non-hex component: nothing stored" lacks_label zpk.hex
run_in 1 "$C2_1"$'\n'"$C2_2"$'\n' import-components zpk.len ZPK TDES 24 || true
check "components shorter than the key: nothing stored" lacks_label zpk.len
run_in 1 "$C2_1"$'\n' import-components zpk.one ZPK TDES 16 || true
check "a missing component: message" err_has "standard input ended"
check "a missing component: nothing stored" lacks_label zpk.one
run_in 1 "$C2_1"$'\n'"$C2_1"$'\n' import-components zpk.same ZPK TDES 16 || true
check "a repeated component is refused" err_has "is the same as component 1"
check "a repeated component: nothing stored" lacks_label zpk.same
run_in 1 "$C2_1"$'\n'"$C2_2"$'\n' import-components zpk.two ZAK TDES 16 || true
check "another usage under an existing label is refused" err_has "exists"

# --------------------------------------------------------------------------
# generate, list, rotate

run 0 /dev/null generate issuer.acme.zak ZAK TDES 16 || true
check "generate prints version 1 and a check value" \
  out_matches '^generated "issuer\.acme\.zak" version 1: ZAK TDES 16 bytes, check value [0-9A-F]{6}$'
ZAK_V1=$(awk '{ print $NF }' "$TMP/out")
run 1 /dev/null generate issuer.acme.zak ZAK TDES 16 || true
check "generate on an existing label points to rotate" err_has "hint: make a new version with: hsm-keytool rotate issuer.acme.zak"
run 0 /dev/null generate kbpk.aes KBPK AES 32 || true
run 0 /dev/null generate kbpk.tdes KBPK TDES 24 || true
run 0 /dev/null generate journal.dek DEK AES 32 || true
run 0 /dev/null generate journal.hmac HMAC HMAC 32 || true
check "a usable key gets no warning" lacks "warning" "$TMP/err"
run 0 /dev/null generate journal.dek128 DEK AES 16 || true
check "a DEK the backend cannot use gets a warning" err_has "warning: a DEK key must be AES 32"
run 0 /dev/null list || true
check "list shows the ZAK with its check value" \
  out_matches "^issuer\.acme\.zak +ZAK +TDES +16 +1 +$ZAK_V1 +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z +-\$"
check "list shows the HMAC key" out_matches '^journal\.hmac +HMAC +HMAC +32 +1 '
run 0 /dev/null list --json || true
check "list --json: one object per key version" test "$(wc -l <"$TMP/out")" -eq "$(listed | tail -n +2 | wc -l)"
check "list --json: fields" \
  grep -qF '{"label":"zpk.two","usage":"ZPK","alg":"TDES","length":16,"version":1,"kcv":"08D7B4","created":"' "$TMP/out"
if command -v jq >/dev/null; then
  check "list --json is JSON" jq -e . "$TMP/out" >/dev/null
fi

run 0 /dev/null rotate issuer.acme.zak || true
check "rotate makes version 2" out_has "rotated \"issuer.acme.zak\" version 2"
check "rotate says the old version stays" out_has "version 1 (check value $ZAK_V1) stays usable until it is destroyed"
run 0 /dev/null rotate issuer.acme.zak --changeover-until 2099-01-02T03:04:05Z || true
check "rotate with a changeover makes version 3" out_has "rotated \"issuer.acme.zak\" version 3"
check "rotate with a changeover: the old version's end" out_has "stays usable until 2099-01-02T03:04:05Z"
check "list shows the changeover on version 2" \
  listed_matches '^issuer\.acme\.zak +ZAK +TDES +16 +2 .* 2099-01-02T03:04:05Z$'
check "three versions listed" test "$(versions_of issuer.acme.zak)" -eq 3
run 1 /dev/null rotate no.such.key || true
check "rotate of a missing key: hint" err_has "hint: see the labels in the store with: hsm-keytool list"

# --------------------------------------------------------------------------
# TR-31 export and import

for kbpk in kbpk.aes kbpk.tdes; do
  run 0 /dev/null export-tr31 zpk.two "$kbpk" || true
  check "export under $kbpk: one line on stdout" test "$(wc -l <"$TMP/out")" -eq 1
  check "export under $kbpk: the check value on stderr" err_has "check value $KEY_KCV"
  cp "$TMP/out" "$TMP/block.$kbpk"
  run 0 "$TMP/block.$kbpk" import-tr31 "zpk.copy.$kbpk" ZPK "$kbpk" || true
  check "import under $kbpk: same check value" out_has "imported \"zpk.copy.$kbpk\" version 1: ZPK TDES 16 bytes, check value $KEY_KCV"
done
check "AES KBPK gives a version D block" grep -q '^D' "$TMP/block.kbpk.aes"
check "TDES KBPK gives a version B block" grep -q '^B' "$TMP/block.kbpk.tdes"

run 0 "$TMP/block.kbpk.aes" import-tr31 zpk.checked ZPK kbpk.aes --kcv "$KEY_KCV" || true
run 1 "$TMP/block.kbpk.aes" import-tr31 zpk.wrongkcv ZPK kbpk.aes --kcv 000000 || true
check "TR-31 --kcv mismatch: message" err_has "is $KEY_KCV, not the expected 000000"
check "TR-31 --kcv mismatch: nothing stored" lacks_label zpk.wrongkcv
run 1 "$TMP/block.kbpk.aes" import-tr31 zak.wrong ZAK kbpk.aes || true
check "TR-31 usage disagreeing: refused" err_has "may not be used for this operation"
check "TR-31 usage disagreeing: nothing stored" lacks_label zak.wrong
# change one character of the ciphertext
b=$(cat "$TMP/block.kbpk.aes")
if [ "${b:40:1}" = 0 ]; then c=1; else c=0; fi
printf '%s\n' "${b:0:40}$c${b:41}" >"$TMP/block.bad"
check "the altered block differs" differs "$TMP/block.kbpk.aes" "$TMP/block.bad"
run 1 "$TMP/block.bad" import-tr31 zpk.tampered ZPK kbpk.aes || true
check "an altered block: refused with the KEK's check value" err_has "hint: check that the block was copied whole"
check "an altered block: nothing stored" lacks_label zpk.tampered
run 1 "$TMP/block.kbpk.aes" import-tr31 zpk.badkek ZPK zpk.two || true
check "a ZPK is no key-encrypting key" err_has "may not be used"
run 1 /dev/null import-tr31 zpk.empty ZPK kbpk.aes || true
check "no block on stdin" err_has "no key block on standard input"
printf 'D0112P0TE00E0000 with space\n' >"$TMP/block.space"
run 1 "$TMP/block.space" import-tr31 zpk.space ZPK kbpk.aes || true
# zone key change: a new version with a changeover window for the old one
run 0 /dev/null export-tr31 zpk.three kbpk.aes --json || true
check "export --json carries the check value" grep -qF "\"kcv\":\"$KEY_KCV\"" "$TMP/out"
run 0 /dev/null generate zpk.new ZPK TDES 16 || true
run 0 /dev/null export-tr31 zpk.new kbpk.aes || true
cp "$TMP/out" "$TMP/block.new"
run 0 "$TMP/block.new" import-tr31 zpk.copy.kbpk.aes ZPK kbpk.aes --changeover-until 2098-06-30 || true
check "zone key change: version 2" out_has "imported \"zpk.copy.kbpk.aes\" version 2"
check "zone key change: old version until the changeover" out_has "version 1 (check value $KEY_KCV) stays usable until 2098-06-30T00:00:00Z"

# --------------------------------------------------------------------------
# destroy

run 2 /dev/null destroy-version issuer.acme.zak 1 || true
check "destroy-version without --yes off a terminal asks for --yes" err_has "--yes"
run 2 /dev/null destroy-version issuer.acme.zak x1 --yes || true
check "destroy-version refuses a bad version" err_has "VERSION is a positive number"
run 1 /dev/null destroy-version issuer.acme.zak 3 --yes || true
check "destroy-version refuses the current version" err_has "rotate it first"
run 0 /dev/null destroy-version issuer.acme.zak 1 --yes || true
check "destroy-version reports it" out_has "destroyed \"issuer.acme.zak\" version 1"
run 1 /dev/null destroy-version issuer.acme.zak 1 --yes || true
check "destroy-version of a version already gone fails" err_has "not found"
run 0 /dev/null destroy issuer.acme.zak --yes || true
check "destroy reports every version" out_has "destroyed \"issuer.acme.zak\": 2 version(s)"
check "destroyed key is gone" lacks_label issuer.acme.zak
run 1 /dev/null destroy issuer.acme.zak --yes || true
check "destroy of a missing key fails" err_has "key not found"

# --------------------------------------------------------------------------
# the audit log

rc=0
"$BIN" --keystore "$KS" --master-key "$MK" --audit-log "$TMP/var" \
  generate k.noaudit ZAK TDES 16 </dev/null >"$TMP/out" 2>"$TMP/err" || rc=$?
check "an audit log that cannot be opened stops the change" test "$rc" -eq 1
check "... and says so" err_has "cannot open audit log"
check "... and nothing was generated" lacks_label k.noaudit

check "audit log is mode 600" test "$(mode_of "$AL")" = 600
if command -v jq >/dev/null; then
  check "every audit line is a JSON object" jq -e 'type == "object"' "$AL" >/dev/null
fi
check "audit lines carry time, operator and event" \
  every_line_matches '^\{"when":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z","who":"tester","uid":[0-9]+,"event":"[a-z_]+","label":' "$AL"
for ev in created imported exported rotated destroyed check_failed component; do
  check "audit log has a $ev event" grep -qF "\"event\":\"$ev\"" "$AL"
done
check "audit: components with their check values" audit_has '"event":"component"' "\"kcv\":\"$C3_2_KCV\""
check "audit: import from components" audit_has '"detail":"from components"' "\"label\":\"zpk.two\",\"usage\":\"ZPK\",\"alg\":\"TDES\",\"version\":1,\"kcv\":\"$KEY_KCV\",\"status\":\"ok\""
check "audit: generated ZAK with its check value" audit_has '"event":"created"' "\"kcv\":\"$ZAK_V1\""
check "audit: TR-31 import names the KEK" audit_has '"event":"imported"' '"detail":"TR-31 under kbpk.tdes"'
check "audit: export names the KEK" audit_has '"event":"exported"' '"detail":"TR-31 under kbpk.aes"'
check "audit: rotation" audit_has '"event":"rotated"' '"label":"issuer.acme.zak","usage":"ZAK","alg":"TDES","version":3'
check "audit: destruction" audit_has '"event":"destroyed"' '"label":"issuer.acme.zak"'
check "audit: TR-31 check failure" audit_has '"event":"check_failed"' '"label":"zpk.wrongkcv"'
check "audit: repeated component" audit_has '"event":"check_failed"' '"label":"zpk.same"'
check "audit: failed import is recorded as failed" audit_has '"label":"zpk.tampered"' '"status":"KEY_BLOCK"'

# No component, key or master key anywhere: audit log, stdout, stderr.
for s in "${SECRETS[@]}"; do
  check "audit log never holds secret ${s:0:4}..." lacks "$s" "$AL"
  check "output never holds secret ${s:0:4}..." lacks "$s" "$ALL"
  half=${s:0:16}
  check "audit log never holds half of secret ${s:0:4}..." lacks "$half" "$AL"
  check "output never holds half of secret ${s:0:4}..." lacks "$half" "$ALL"
done
check "the store file holds no clear key bytes" \
  store_lacks_bytes "$KEY"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
