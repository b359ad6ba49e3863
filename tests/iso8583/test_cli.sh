#!/usr/bin/env bash
# test_cli.sh — end-to-end tests of the iso8583 command (docs/cli.md).
#
# usage: test_cli.sh <path-to-iso8583-binary> <tests/data dir>
#
# Proves: the dialect listing; decoding every hand-built sample in
# tests/data/samples with sensitive fields masked by default and clear with
# --unmask; `decode --unmask | encode` reproducing every sample byte for
# byte, as hex and as raw bytes, alone and framed; dialect files; errors that
# exit 1 naming message, field and offset without echoing the PAN; usage
# errors exiting 2; and no crash on truncated or corrupted input.
set -euo pipefail

if [ $# -ne 2 ]; then
  echo "usage: $0 <iso8583-binary> <tests/data dir>" >&2
  exit 2
fi
BIN=$1
DATA=$2
SAMPLES=$DATA/samples
DIALECTS=$DATA/dialects
command -v jq >/dev/null || { echo "test_cli.sh needs jq" >&2; exit 2; }

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

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

# run EXPECTED_RC STDIN_FILE ARGS...: runs the binary, keeps stdout and
# stderr in $TMP/out and $TMP/err, and checks the exit status.
run() {
  local want=$1 input=$2
  shift 2
  local rc=0
  "$BIN" "$@" <"$input" >"$TMP/out" 2>"$TMP/err" || rc=$?
  if [ "$rc" -ne "$want" ]; then
    fail "iso8583 $* < $(basename "$input"): exit $rc, wanted $want: $(head -c 300 "$TMP/err")"
    return 1
  fi
  pass
}

err_has() { grep -qF -- "$1" "$TMP/err" || { echo "  stderr: $(cat "$TMP/err")" >&2; return 1; }; }
err_lacks() { ! grep -qF -- "$1" "$TMP/err"; }
err_one_line() { [ "$(wc -l <"$TMP/err")" -eq 1 ]; }
jqo() { jq -r "$1" "$TMP/out"; }

dialect_of() { # iso87a-bbitmap-purchase-response.hex -> iso87a-bbitmap
  local b
  b=$(basename "$1" .hex)
  b=${b%-purchase-response}
  b=${b%-purchase}
  echo "${b%-echo}"
}
hex_of() { tr -d ' \n' <"$1"; }
unhex() { xxd -r -p; }

# --------------------------------------------------------------------------
# dialects

"$BIN" dialects >"$TMP/dialects"
for d in iso87a iso87a-bbitmap iso87b iso87e iso93a iso93b; do
  check "dialects lists $d" grep -qE "^$d +ISO 8583" "$TMP/dialects"
done
check "dialects prints one line per dialect" test "$(wc -l <"$TMP/dialects")" -eq 6

# --------------------------------------------------------------------------
# every sample: decode, mask, round trip

nsamples=0
for f in "$SAMPLES"/*.hex; do
  nsamples=$((nsamples + 1))
  d=$(dialect_of "$f")
  name=$(basename "$f")
  run 0 "$f" decode --dialect "$d" || continue
  check "$name decodes to one line" test "$(wc -l <"$TMP/out")" -eq 1
  check "$name has no bitmap fields listed" test "$(jqo '.fields | has("1") or has("65")')" = false
  check "$name fields are in numeric order" \
    test "$(jqo '[.fields | keys_unsorted[] | tonumber] | . == sort')" = true
  masked=$(cat "$TMP/out")

  run 0 "$f" decode --dialect "$d" --unmask || continue
  cp "$TMP/out" "$TMP/clear.json"
  check "$name --unmask: first bitmap matches the MTI's message" \
    test "$(jqo '.bitmap | length')" -ge 16

  case "$name" in
  iso87*-purchase.hex | iso93*-purchase.hex)
    case "$d" in
    iso87*) pan=4761739001010010 mpan='476173******0010' mti=0200 ;;
    *) pan=5413330089020011 mpan='541333******0011' mti=1200 ;;
    esac
    check "$name MTI" test "$(jqo .mti)" = $mti
    check "$name clear PAN" test "$(jqo '.fields["2"]')" = $pan
    check "$name amount" test "$(jqo '.fields["4"]')" = 000000012500
    check "$name STAN" test "$(jqo '.fields["11"]')" = 000123
    check "$name terminal" test "$(jqo '.fields["41"]')" = TERM0001
    check "$name merchant" test "$(jqo '.fields["42"]')" = MERCHANT0000001
    check "$name currency" test "$(jqo '.fields["49"]')" = 840
    check "$name clear track 2" test "$(jqo '.fields["35"] | test("^'$pan'[=D]2512201")')" = true
    check "$name clear PIN block" test "$(jqo '.fields["52"]')" = 3C6A9E11B2D4F807
    check "$name DE55 is a TLV list" test "$(jqo '.fields["55"] | length')" = 14
    check "$name DE55 first tag" test "$(jqo '.fields["55"][0].tag')" = 9F26
    check "$name DE55 AC" test "$(jqo '.fields["55"][0].value')" = 8E19ED4BCA5C670A
    check "$name DE55 AID" test "$(jqo '.fields["55"][13] | .tag + "=" + .value')" = 84=A0000000031010
    echo "$masked" >"$TMP/out"
    check "$name masked PAN" test "$(jqo '.fields["2"]')" = "$mpan"
    check "$name masked track 2" test "$(jqo '.fields["35"] | test("^[*]{33}$")')" = true
    check "$name masked PIN block" test "$(jqo '.fields["52"]')" = '****************'
    check "$name masked DE55 keeps tags" test "$(jqo '.fields["55"][0].tag')" = 9F26
    check "$name masked DE55 hides values" test "$(jqo '.fields["55"][0].value')" = '****************'
    check "$name masked output has no PAN" sh -c "! grep -q $pan '$TMP/out'"
    check "$name masked output keeps the amount" test "$(jqo '.fields["4"]')" = 000000012500
    ;;
  *-purchase-response.hex)
    check "$name response MTI" test "$(jqo .mti | cut -c3-4)" = 10
    check "$name approval code" test "$(jqo '.fields["38"]')" = A1B2C3
    check "$name response code" test "$(jqo '.fields["39"] | test("^0+$")')" = true
    check "$name issuer data tag 91" test "$(jqo '.fields["55"][0].tag')" = 91
    ;;
  *-echo.hex)
    case "$d" in
    iso87*)
      check "$name MTI" test "$(jqo .mti)" = 0800
      check "$name network code" test "$(jqo '.fields["70"]')" = 301
      check "$name carries a secondary bitmap" test "$(jqo '.bitmap | length')" = 32
      ;;
    *)
      check "$name MTI" test "$(jqo .mti)" = 1804
      check "$name function code" test "$(jqo '.fields["24"]')" = 831
      ;;
    esac
    ;;
  esac

  # The property: decode --unmask | encode gives back the input.
  if "$BIN" encode --dialect "$d" <"$TMP/clear.json" >"$TMP/re.hex" 2>"$TMP/err"; then
    check "$name round trip (hex)" test "$(hex_of "$TMP/re.hex")" = "$(hex_of "$f")"
  else
    fail "$name encode: $(cat "$TMP/err")"
  fi
  hex_of "$f" | unhex >"$TMP/msg.bin"
  if "$BIN" decode --dialect "$d" --unmask --binary "$TMP/msg.bin" >"$TMP/bin.json" 2>"$TMP/err" &&
    "$BIN" encode --dialect "$d" --binary <"$TMP/bin.json" >"$TMP/re.bin" 2>>"$TMP/err"; then
    check "$name --binary decode equals hex decode" cmp -s "$TMP/bin.json" "$TMP/clear.json"
    check "$name round trip (binary)" cmp -s "$TMP/re.bin" "$TMP/msg.bin"
  else
    fail "$name binary round trip: $(cat "$TMP/err")"
  fi
done
check "18 samples or more" test "$nsamples" -ge 18

# Several messages, one per line, blank lines and spaces ignored.
{
  cat "$SAMPLES/iso87a-purchase.hex"
  echo
  sed 's/\(........\)/\1 /g' "$SAMPLES/iso87a-purchase-response.hex"
  printf '  \n'
  cat "$SAMPLES/iso87a-echo.hex"
} >"$TMP/multi.hex"
if run 0 "$TMP/multi.hex" decode --dialect iso87a --unmask; then
  check "three messages, three lines" test "$(wc -l <"$TMP/out")" -eq 3
  check "message order kept" test "$(jq -r .mti "$TMP/out" | tr -d '\n')" = 020002100800
  cp "$TMP/out" "$TMP/multi.json"
  # encode accepts a stream of objects, not only one per line
  jq . "$TMP/multi.json" >"$TMP/pretty.json"
  run 0 "$TMP/pretty.json" encode --dialect iso87a &&
    check "pretty-printed stream encodes" test "$(hex_of "$TMP/out")" = \
      "$(cat "$SAMPLES"/iso87a-purchase.hex "$SAMPLES"/iso87a-purchase-response.hex "$SAMPLES"/iso87a-echo.hex | tr -d '\n')"
fi

# --------------------------------------------------------------------------
# framing

frame_bin2() { # HEADERHEX MSGHEX -> frame hex with a 2-byte binary length
  local body=$1$2
  printf '%04X%s' $((${#body} / 2)) "$body"
}
frame_ascii4() {
  local body=$1$2
  printf '%s%s' "$(printf '%04d' $((${#body} / 2)) | xxd -p)" "$body"
}
frame_bcd2() {
  local body=$1$2
  printf '%04d%s' $((${#body} / 2)) "$body"
}
TPDU=6000010000
p87=$(hex_of "$SAMPLES/iso87b-purchase.hex")
e87=$(hex_of "$SAMPLES/iso87b-echo.hex")
for kind in bin2 ascii4 bcd2; do
  stream=$(frame_$kind $TPDU "$p87")$(frame_$kind $TPDU "$e87")
  echo "$stream" >"$TMP/frames.hex"
  if run 0 "$TMP/frames.hex" decode --dialect iso87b --unmask --framing $kind --header-len 5; then
    check "$kind: two frames, two lines" test "$(wc -l <"$TMP/out")" -eq 2
    check "$kind: header shown" test "$(jq -r .header "$TMP/out" | sort -u)" = $TPDU
    check "$kind: messages decoded" test "$(jq -r .mti "$TMP/out" | tr -d '\n')" = 02000800
    cp "$TMP/out" "$TMP/frames.json"
    run 0 "$TMP/frames.json" encode --dialect iso87b --framing $kind --header-len 5 &&
      check "$kind: frames re-encoded byte for byte" test "$(hex_of "$TMP/out")" = "$stream"
    echo "$stream" | unhex >"$TMP/frames.bin"
    run 0 "$TMP/frames.bin" decode --dialect iso87b --unmask --binary --framing $kind --header-len 5 &&
      check "$kind: binary stream decodes the same" cmp -s "$TMP/out" "$TMP/frames.json"
    run 0 "$TMP/frames.json" encode --dialect iso87b --binary --framing $kind --header-len 5 &&
      check "$kind: binary frames re-encoded" cmp -s "$TMP/out" "$TMP/frames.bin"
  fi
done
# No header: frames without TPDU, header key absent.
{
  frame_bin2 "" "$(hex_of "$SAMPLES/iso87a-bbitmap-echo.hex")"
  echo
} >"$TMP/nohdr.hex"
run 0 "$TMP/nohdr.hex" decode --dialect iso87a-bbitmap --framing bin2 &&
  check "framing without header: no header key" test "$(jqo 'has("header")')" = false
# A stream that ends inside a frame.
stream=$(frame_bin2 $TPDU "$p87")
echo "${stream:0:100}" >"$TMP/cut.hex"
run 1 "$TMP/cut.hex" decode --dialect iso87b --framing bin2 --header-len 5 &&
  check "cut frame: message 1 named" err_has "message 1: input ends inside a frame"
# A length that is not a number.
echo "4142$TPDU$p87" >"$TMP/badlen.hex"
run 1 "$TMP/badlen.hex" decode --dialect iso87b --framing ascii4 --header-len 5 &&
  check "bad ascii4 length: frame length error" err_has "frame length header is not valid"

# --------------------------------------------------------------------------
# dialect files

run 0 "$SAMPLES/iso87a-purchase.hex" decode --dialect "$DIALECTS/acme-acquirer.json" &&
  check "dialect file decodes an iso87a purchase" test "$(jqo '.fields["2"]')" = '476173******0010'
cat >"$TMP/mini.json" <<'EOF'
{"mti":"0200","fields":{"2":"5413330089020011","3":"000000","4":"000000001000","11":"000042","22":"051","24":"001","25":"00","35":"5413330089020011D2512201123456789","41":"TERM0001","42":"MERCHANT0000001","55":[{"tag":"9F26","value":"0102030405060708"},{"tag":"9F27","value":"80"}]}}
EOF
if run 0 "$TMP/mini.json" encode --dialect "$DIALECTS/mini-pos.json" --framing bin2 --header-len 5; then
  cp "$TMP/out" "$TMP/mini.hex"
  run 0 "$TMP/mini.hex" decode --dialect "$DIALECTS/mini-pos.json" --framing bin2 --header-len 5 --unmask &&
    check "mini-pos file dialect round trip" test "$(jq -c .fields "$TMP/out")" = "$(jq -c .fields "$TMP/mini.json")"
fi
echo '{"name": "t", "base": "iso87a", "fields": {"35": {"lenght": 3}}}' >"$TMP/typo.json"
run 2 "$SAMPLES/iso87a-echo.hex" decode --dialect "$TMP/typo.json" &&
  check "bad dialect file: path named" err_has "fields.35.lenght: unknown key"

# DE55 that would not re-encode identically (padding) stays hex.
echo '{"mti":"0100","fields":{"3":"000000","55":"9F02060000000001000000"}}' >"$TMP/pad.json"
if run 0 "$TMP/pad.json" encode --dialect iso87a; then
  cp "$TMP/out" "$TMP/pad.hex"
  run 0 "$TMP/pad.hex" decode --dialect iso87a --unmask &&
    check "padded DE55 shown as hex" test "$(jqo '.fields["55"]')" = 9F02060000000001000000
  run 0 "$TMP/pad.hex" decode --dialect iso87a &&
    check "padded DE55 masked as hex" test "$(jqo '.fields["55"]')" = '**********************'
fi

# DE55 in lower-case hex (iso87a carries b fields as hex text, DE55's body
# from offset 227): kept as a string so that the round trip still holds.
txt=$(hex_of "$SAMPLES/iso87a-purchase.hex" | unhex)
low=$(printf '%s%s' "${txt:0:227}" "$(printf '%s' "${txt:227}" | tr 'A-F' 'a-f')" | xxd -p | tr -d '\n')
echo "$low" >"$TMP/low.hex"
if run 0 "$TMP/low.hex" decode --dialect iso87a --unmask; then
  check "lower-case DE55 shown as a string" test "$(jqo '.fields["55"] | type')" = string
  cp "$TMP/out" "$TMP/low.json"
  run 0 "$TMP/low.json" encode --dialect iso87a &&
    check "lower-case DE55 round trip" test "$(hex_of "$TMP/out")" = "${low^^}"
fi

# --------------------------------------------------------------------------
# bad input: exit 1, one line naming message, field and offset, no PAN

p=$(hex_of "$SAMPLES/iso87a-purchase.hex")
{
  cat "$SAMPLES/iso87a-echo.hex"
  echo "0200ZZ"
} >"$TMP/badhex.hex"
run 1 "$TMP/badhex.hex" decode --dialect iso87a && {
  check "bad hex: message 2 named" err_has "message 2: input line 2, column 5: not a hexadecimal digit"
  check "bad hex: one line" err_one_line
  check "bad hex: first message still decoded" test "$(wc -l <"$TMP/out")" -eq 1
}
echo "020" >"$TMP/odd.hex"
run 1 "$TMP/odd.hex" decode --dialect iso87a &&
  check "odd hex digits" err_has "odd number of hexadecimal digits"

# Truncated inside DE35 (body at offset 97 in iso87a-purchase).
echo "${p:0:220}" >"$TMP/trunc.hex"
run 1 "$TMP/trunc.hex" decode --dialect iso87a && {
  check "truncated: field and offset named" err_has "message 1: field 35 (track 2 data) at offset 97: message ends before the field is complete"
  check "truncated: no PAN in the error" err_lacks 4761739001010010
  check "truncated: no PAN prefix in the error" err_lacks 476173
  check "truncated: one line" err_one_line
}
# DE35 length prefix 38 where 37 is the most (prefix at offset 95).
echo "${p:0:190}3338${p:194}" >"$TMP/long.hex"
run 1 "$TMP/long.hex" decode --dialect iso87a && {
  check "too long: field and offset named" err_has "field 35 (track 2 data) at offset 95: field is longer than its maximum (allowed 37, found 38)"
  check "too long: no PAN in the error" err_lacks 4761739001010010
}
# A letter inside the PAN (DE2 body starts at offset 22; byte 25 is hit).
echo "${p:0:50}41${p:52}" >"$TMP/badpan.hex"
run 1 "$TMP/badpan.hex" decode --dialect iso87a && {
  check "bad PAN digit: field 2 named" err_has "field 2 (primary account number) at offset 25"
  check "bad PAN digit: no PAN in the error" err_lacks 476173
}
# The same in the binary dialect: truncated DE2.
b=$(hex_of "$SAMPLES/iso87b-purchase.hex")
echo "${b:0:30}" >"$TMP/btrunc.hex"
run 1 "$TMP/btrunc.hex" decode --dialect iso87b &&
  check "iso87b truncated PAN: field 2 named" err_has "field 2 (primary account number) at offset 11"
# Trailing bytes after the last field.
echo "${p}00" >"$TMP/trail.hex"
run 1 "$TMP/trail.hex" decode --dialect iso87a &&
  check "trailing byte reported with offset" err_has "offset 429: bytes are left after the last field"

# encode: a field too long, masked input, bad JSON, unknown keys.
echo '{"mti":"0200","fields":{"2":"47617390010100104761"}}' >"$TMP/elong.json"
run 1 "$TMP/elong.json" encode --dialect iso87a && {
  check "encode too long: field 2 named" err_has "message 1: field 2 (primary account number)"
  check "encode too long: no PAN in the error" err_lacks 4761739001
}
run 0 "$SAMPLES/iso87a-purchase.hex" decode --dialect iso87a
cp "$TMP/out" "$TMP/masked.json"
run 1 "$TMP/masked.json" encode --dialect iso87a &&
  check "masked DE55 refused" err_has "fields.55[0].value: must be an even number of hexadecimal digits"
jq -c 'del(.fields["55"])' "$TMP/masked.json" >"$TMP/masked2.json"
run 1 "$TMP/masked2.json" encode --dialect iso87a && {
  check "masked PAN refused: field 2" err_has "field 2 (primary account number)"
  check "masked PAN refused: no PAN digits" err_lacks 476173
}
printf '{"mti":"0800","fields":{"11":"000001"}}\n{"mti": "0800", "fields": {"11": 4761739001010010 x}}\n' >"$TMP/badjson.json"
run 1 "$TMP/badjson.json" encode --dialect iso87a && {
  check "bad JSON: message 2, line 2" err_has "message 2: input line 2, column"
  check "bad JSON: no content quoted" err_lacks 4761739001010010
}
echo '{"mti":"0800","fields":{"11":"000001","7":12}}' >"$TMP/num.json"
run 1 "$TMP/num.json" encode --dialect iso87a &&
  check "number instead of string" err_has "fields.7: must be a string"
echo '{"mti":"0800","feilds":{}}' >"$TMP/typo.json"
run 1 "$TMP/typo.json" encode --dialect iso87a &&
  check "unknown key refused" err_has "unknown key"
echo '{"mti":"080","fields":{}}' >"$TMP/mti.json"
run 1 "$TMP/mti.json" encode --dialect iso87a &&
  check "short MTI refused" err_has "mti: must be a string of four digits"
echo '{"mti":"0800","fields":{"1":"00"}}' >"$TMP/f1.json"
run 1 "$TMP/f1.json" encode --dialect iso87a &&
  check "bitmap field refused" err_has "fields.1: is a bitmap"
echo '{"mti":"0200","fields":{"55":[{"tag":"9F","value":"00"}]}}' >"$TMP/tag.json"
run 1 "$TMP/tag.json" encode --dialect iso87a &&
  check "malformed TLV tag refused" err_has "fields.55[0].tag: not a well-formed BER-TLV tag"

# --------------------------------------------------------------------------
# usage errors: exit 2

: >"$TMP/empty"
run 2 "$TMP/empty" && check "no command: usage" err_has "usage:"
run 2 "$TMP/empty" frobnicate && check "unknown command" err_has "unknown command"
run 2 "$TMP/empty" decode && check "decode needs --dialect" err_has "needs --dialect"
run 2 "$TMP/empty" decode --dialect iso87a --framing bin3 && check "bad framing" err_has "--framing must be"
run 2 "$TMP/empty" decode --dialect iso87a --header-len 5 && check "header-len needs framing" err_has "--header-len needs --framing"
run 2 "$TMP/empty" decode --dialect iso87a --framing bin2 --header-len x && check "bad header-len" err_has "--header-len must be"
run 2 "$TMP/empty" decode --dialect iso87a --verbose && check "unknown option" err_has "unknown option"
run 2 "$TMP/empty" encode --dialect iso87a --unmask && check "--unmask is for decode" err_has "unknown option"
run 2 "$TMP/empty" decode --dialect iso99 && check "unknown dialect" err_has '"iso99" is neither a built-in dialect'
run 2 "$TMP/empty" decode --dialect iso87a a b && check "two input files" err_has "only one input file"
run 0 "$TMP/empty" --help && check "--help to stdout" grep -q "usage:" "$TMP/out"
run 0 "$TMP/empty" decode --dialect iso87a && check "empty input: no output" test ! -s "$TMP/out"

# --------------------------------------------------------------------------
# hostile input: every cut and corrupted bytes exit 0 or 1, never crash

for d in iso87a iso87b iso87e iso93b; do
  hex=$(hex_of "$SAMPLES/$d-purchase.hex")
  n=$((${#hex} / 2))
  bad=0
  for ((cut = 0; cut < n; cut += 3)); do
    rc=0
    echo "${hex:0:$((2 * cut))}" | unhex | "$BIN" decode --dialect $d --binary >/dev/null 2>&1 || rc=$?
    [ $rc -eq 1 ] || { bad=1; echo "  $d cut at $cut: exit $rc" >&2; }
  done
  check "$d: every cut exits 1" test $bad -eq 0
  RANDOM=42
  bad=0
  for ((i = 0; i < 60; i++)); do
    pos=$((RANDOM % n))
    byte=$(printf '%02X' $((RANDOM % 256)))
    rc=0
    echo "${hex:0:$((2 * pos))}$byte${hex:$((2 * pos + 2))}" |
      "$BIN" decode --dialect $d >/dev/null 2>"$TMP/err" || rc=$?
    [ $rc -le 1 ] || { bad=1; echo "  $d byte $pos=$byte: exit $rc" >&2; }
  done
  check "$d: corrupted bytes exit 0 or 1" test $bad -eq 0
done
{
  printf '{"mti": "0800", "fields": {"11": '
  head -c 100000 /dev/zero | tr '\0' '['
} >"$TMP/deep.json"
rc=0
"$BIN" encode --dialect iso87a <"$TMP/deep.json" >/dev/null 2>&1 || rc=$?
check "deeply nested JSON exits 1" test $rc -eq 1

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
