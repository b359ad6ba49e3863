/*
 * test_parse.c — iso_parse and the accessors against hand-built golden
 * messages (golden.h) and hand-damaged ones: every truncation point, bad
 * nibbles, bad lengths, bitmaps that lie, boundary lengths, variants and
 * mandatory fields.
 */
#include "golden.h"
#include "iso8583.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint8_t msg[4096];
static size_t msglen;
static iso_msg_t m;
static iso_err_t err;

static const iso_dialect_t *D(const char *name) {
  const iso_dialect_t *d = iso_dialect_find(name);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  return d;
}

/* Hex text to msg/msglen. */
static void load_hex(const char *hex) {
  msglen = tu_unhex(hex, msg, sizeof msg);
  CU_ASSERT_FATAL(msglen != (size_t)-1);
}

static void load_golden(const char *const *parts) {
  msglen = golden_bytes(parts, msg, sizeof msg);
  CU_ASSERT_FATAL(msglen > 0);
}

static int parse(const char *dialect) {
  memset(&err, 0, sizeof err);
  return iso_parse(&m, D(dialect), msg, msglen, &err);
}

static void assert_text(int n, const char *want) {
  char t[1024];
  size_t tl = 0;
  CU_ASSERT_EQUAL_FATAL(iso_get_text(&m, n, t, sizeof t, &tl), 0);
  CU_ASSERT_EQUAL(tl, strlen(want));
  CU_ASSERT_STRING_EQUAL(t, want);
}

/* The same purchase in every dialect decodes to the same values. */
static void check_purchase_values(void) {
  char t[64];
  uint8_t b[300], icc[GOLDEN_ICC_LEN];
  size_t n;
  int64_t amount;
  CU_ASSERT(iso_has(&m, 2) && iso_has(&m, 55) && !iso_has(&m, 5));
  assert_text(2, GOLDEN_PAN);
  assert_text(3, "000000");
  assert_text(11, "000123");
  assert_text(41, "TERM0001");
  assert_text(42, "MERCHANT0000001");
  CU_ASSERT_EQUAL(iso_get_amount(&m, 4, &amount), 0);
  CU_ASSERT_EQUAL(amount, 1000);
  CU_ASSERT_EQUAL(iso_get_bytes(&m, 55, b, sizeof b, &n), 0);
  CU_ASSERT_EQUAL(n, GOLDEN_ICC_LEN);
  CU_ASSERT_EQUAL(tu_unhex(GOLDEN_ICC, icc, sizeof icc), GOLDEN_ICC_LEN);
  CU_ASSERT_EQUAL(memcmp(b, icc, GOLDEN_ICC_LEN), 0);
  CU_ASSERT_EQUAL(iso_get_text(&m, 37, t, sizeof t, &n), 0);
  CU_ASSERT_EQUAL(n, 12);
}

static void test_parse_iso87a_golden_purchase(void) {
  load_golden(golden_iso87a_sale);
  CU_ASSERT_EQUAL_FATAL(parse("iso87a"), 0);
  CU_ASSERT_EQUAL(memcmp(m.mti, "0200", 4), 0);
  CU_ASSERT_EQUAL(m.bitmap[0], UINT64_C(0x723C448028E09200));
  check_purchase_values();
  assert_text(35, GOLDEN_TRACK2);
  assert_text(52, "0123456789ABCDEF");
  /* The view points into the buffer: DE2 starts after MTI and bitmap. */
  iso_view_t v;
  CU_ASSERT_EQUAL(iso_get_raw(&m, 2, &v), 0);
  CU_ASSERT_PTR_EQUAL(v.p, msg + 4 + 16);
  CU_ASSERT_EQUAL(v.len, 18);
  CU_ASSERT_EQUAL(iso_get_body(&m, 2, &v), 0);
  CU_ASSERT_PTR_EQUAL(v.p, msg + 22);
  CU_ASSERT_EQUAL(iso_check_mandatory(&m, &err), 0);
}

static void test_parse_iso87b_golden_purchase(void) {
  load_golden(golden_iso87b_sale);
  CU_ASSERT_EQUAL_FATAL(parse("iso87b"), 0);
  CU_ASSERT_EQUAL(memcmp(m.mti, "0200", 4), 0);
  check_purchase_values();
  assert_text(22, "051");
  assert_text(35, GOLDEN_TRACK2);
  iso_view_t v;
  CU_ASSERT_EQUAL(iso_get_raw(&m, 2, &v), 0);
  CU_ASSERT_EQUAL(v.len, 9); /* 1 BCD length byte + 8 packed bytes */
}

static void test_parse_iso87e_golden_purchase(void) {
  load_golden(golden_iso87e_sale);
  CU_ASSERT_EQUAL_FATAL(parse("iso87e"), 0);
  CU_ASSERT_EQUAL(memcmp(m.mti, "0200", 4), 0);
  check_purchase_values();
  assert_text(43, "ACME STORE 42          LONDON        GB ");
}

static void test_parse_iso93a_golden_purchase(void) {
  load_golden(golden_iso93a_sale);
  CU_ASSERT_EQUAL_FATAL(parse("iso93a"), 0);
  CU_ASSERT_EQUAL(memcmp(m.mti, "1200", 4), 0);
  check_purchase_values();
  assert_text(22, "51010151134C");
  assert_text(24, "200");
  CU_ASSERT_EQUAL(iso_check_mandatory(&m, &err), 0);
}

/* Every proper prefix of a valid message is refused, with an offset inside
 * the prefix, and never read past (ASan watches the heap copy). */
static void truncations(const char *dialect, const char *const *parts) {
  load_golden(parts);
  for (size_t cut = 0; cut < msglen; cut++) {
    uint8_t *copy = malloc(cut ? cut : 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
    memcpy(copy, msg, cut);
    memset(&err, 0, sizeof err);
    int rc = iso_parse(&m, D(dialect), copy, cut, &err);
    CU_ASSERT(rc < 0);
    CU_ASSERT(err.offset <= cut);
    if (rc >= 0)
      printf("\n%s: prefix of %zu bytes accepted\n", dialect, cut);
    free(copy);
  }
}

static void test_parse_rejects_every_truncation_point(void) {
  truncations("iso87a", golden_iso87a_sale);
  truncations("iso87b", golden_iso87b_sale);
  truncations("iso87e", golden_iso87e_sale);
  truncations("iso93a", golden_iso93a_sale);
}

static void test_parse_rejects_trailing_bytes(void) {
  load_golden(golden_iso87a_sale);
  msg[msglen++] = '0';
  CU_ASSERT_EQUAL(parse("iso87a"), ISO_E_TRAILING);
  CU_ASSERT_EQUAL(err.offset, msglen - 1);
}

static void test_parse_rejects_bit1_without_secondary_bitmap(void) {
  /* 0800, primary bitmap says a secondary follows, message ends. */
  load_hex("30383030"
           "38323230303030303030303030303030");
  CU_ASSERT_EQUAL(parse("iso87a"), ISO_E_TRUNCATED);
  CU_ASSERT_EQUAL(err.field, 1);
  CU_ASSERT_EQUAL(err.offset, 20);
  CU_ASSERT_EQUAL(err.expected, 16);
  CU_ASSERT_EQUAL(err.available, 0);
}

static void test_parse_rejects_empty_secondary_bitmap(void) {
  /* 0800, bit 1 set, secondary bitmap all zero. */
  load_hex("0800"
           "8000000000000000"
           "0000000000000000");
  CU_ASSERT_EQUAL(parse("iso87b"), ISO_E_BAD_BITMAP);
  CU_ASSERT_EQUAL(err.field, 1);
}

static void test_parse_network_echo_with_secondary_bitmap(void) {
  /* 0800 with DE7, DE11 and DE70 (secondary bitmap bit 70). */
  load_hex("30383030"
           "38323230303030303030303030303030"
           "30343030303030303030303030303030"
           "31313233313033303030"
           "303030313233"
           "333031");
  CU_ASSERT_EQUAL_FATAL(parse("iso87a"), 0);
  uint64_t v;
  CU_ASSERT_EQUAL(iso_get_u64(&m, 70, &v), 0);
  CU_ASSERT_EQUAL(v, 301);
  CU_ASSERT(iso_has(&m, 1));
  CU_ASSERT_EQUAL(iso_check_mandatory(&m, &err), 0);
}

static void test_parse_tertiary_bitmap_carries_fields_129_to_192(void) {
  /* iso87b: DE3, DE11, DE65 (tertiary bitmap), DE130 (LLL ans "ABC"). */
  load_hex("0200"
           "A020000000000000"
           "8000000000000000"
           "000000"
           "000001"
           "4000000000000000"
           "0003"
           "414243");
  CU_ASSERT_EQUAL_FATAL(parse("iso87b"), 0);
  CU_ASSERT(iso_has(&m, 65));
  CU_ASSERT(iso_has(&m, 130));
  assert_text(130, "ABC");
}

static void test_parse_rejects_bad_bcd_nibble(void) {
  load_golden(golden_iso87b_sale);
  /* DE3 starts after MTI (2), bitmap (8) and DE2 (9): offset 19. */
  msg[20] = 0x0A;
  CU_ASSERT_EQUAL(parse("iso87b"), ISO_E_BAD_BCD);
  CU_ASSERT_EQUAL(err.field, 3);
  CU_ASSERT_EQUAL(err.offset, 20);
}

static void test_parse_rejects_bcd_length_prefix_with_bad_nibble(void) {
  load_golden(golden_iso87b_sale);
  msg[10] = 0x1A; /* DE2's length byte */
  CU_ASSERT_EQUAL(parse("iso87b"), ISO_E_BAD_LENGTH);
  CU_ASSERT_EQUAL(err.field, 2);
  CU_ASSERT_EQUAL(err.offset, 10);
}

static void test_parse_rejects_wrong_pad_nibble(void) {
  load_golden(golden_iso87b_sale);
  /* DE22 "051" is packed 0x00 0x51; a leading F is the wrong pad. */
  size_t de22 = 2 + 8 + 9 + 3 + 6 + 5 + 3 + 3 + 2 + 2 + 2;
  CU_ASSERT_EQUAL(msg[de22], 0x00);
  msg[de22] = 0xF0;
  CU_ASSERT_EQUAL(parse("iso87b"), ISO_E_BAD_PAD);
  CU_ASSERT_EQUAL(err.field, 22);
  CU_ASSERT_EQUAL(err.offset, de22);
}

static void test_parse_odd_track2_packed_with_trailing_f(void) {
  /* iso87b 0100 with DE35 of 33 characters: 17 bytes, last nibble F. */
  load_hex("0100"
           "0000000020000000"
           "33"
           "4761739001010010D2712201100000123F");
  CU_ASSERT_EQUAL_FATAL(parse("iso87b"), 0);
  assert_text(35, "4761739001010010D2712201100000123");
  msg[msglen - 1] = 0x30; /* pad nibble 0 instead of F */
  CU_ASSERT_EQUAL(parse("iso87b"), ISO_E_BAD_PAD);
  CU_ASSERT_EQUAL(err.field, 35);
}

static void test_parse_rejects_llvar_longer_than_max(void) {
  /* iso87a DE2 with length 20 (max 19). */
  load_hex("30323030"
           "34303030303030303030303030303030"
           "3230"
           "3437363137333930303130313030313030303030");
  CU_ASSERT_EQUAL(parse("iso87a"), ISO_E_TOO_LONG);
  CU_ASSERT_EQUAL(err.field, 2);
  CU_ASSERT_EQUAL(err.offset, 20);
  CU_ASSERT_EQUAL(err.expected, 19);
  CU_ASSERT_EQUAL(err.available, 20);
}

/* iso87a DE44 (ans..25, LL): lengths 0, 25 accepted; 26 refused. */
static void test_parse_llvar_boundary_lengths(void) {
  char hex[512];
  const char *head = "30313130"
                     "30303030303030303030313030303030";
  for (int len = 0; len <= 26; len += (len == 0 ? 25 : 1)) {
    int k = snprintf(hex, sizeof hex, "%s%02X%02X", head, '0' + len / 10,
                     '0' + len % 10);
    for (int i = 0; i < len; i++)
      k += snprintf(hex + k, sizeof hex - (size_t)k, "41");
    load_hex(hex);
    int rc = parse("iso87a");
    if (len <= 25) {
      CU_ASSERT_EQUAL(rc, 0);
      CU_ASSERT_EQUAL(m.f[44].units, len);
    } else {
      CU_ASSERT_EQUAL(rc, ISO_E_TOO_LONG);
      CU_ASSERT_EQUAL(err.field, 44);
    }
  }
}

static void test_parse_rejects_non_digit_ascii_length(void) {
  load_hex("30323030"
           "40000000000000000000000000000000"); /* bad hex */
  CU_ASSERT_EQUAL(parse("iso87a"), ISO_E_BAD_BITMAP);
  load_hex("30323030"
           "34303030303030303030303030303030"
           "3141");
  CU_ASSERT_EQUAL(parse("iso87a"), ISO_E_BAD_LENGTH);
  CU_ASSERT_EQUAL(err.field, 2);
}

static void test_parse_rejects_letter_in_numeric_field(void) {
  load_golden(golden_iso87a_sale);
  msg[4 + 16 + 18 + 2] = 'A'; /* third digit of DE3 */
  CU_ASSERT_EQUAL(parse("iso87a"), ISO_E_BAD_CHAR);
  CU_ASSERT_EQUAL(err.field, 3);
  CU_ASSERT_EQUAL(err.offset, 40);
}

static void test_parse_rejects_control_character_in_ans(void) {
  load_golden(golden_iso87a_sale);
  size_t off = msglen - 1;
  /* Find DE41 "TERM0001" and put a NUL in it. */
  for (size_t i = 0; i + 8 <= msglen; i++)
    if (memcmp(msg + i, "TERM0001", 8) == 0)
      off = i + 4;
  msg[off] = 0x00;
  CU_ASSERT_EQUAL(parse("iso87a"), ISO_E_BAD_CHAR);
  CU_ASSERT_EQUAL(err.field, 41);
  CU_ASSERT_EQUAL(err.offset, off);
}

static void test_parse_signed_amount_x_n(void) {
  /* iso87a: DE3, DE4, DE11, DE28 (x+n 8), DE41. */
  const char *base = "30323030"
                     "33303230303031303030383030303030"
                     "303030303030"
                     "303030303030303031303030"
                     "303030313233";
  char hex[512];
  int64_t v;
  snprintf(hex, sizeof hex, "%s%s%s", base, "433030303030313530",
           "5445524D30303031");
  load_hex(hex);
  CU_ASSERT_EQUAL_FATAL(parse("iso87a"), 0);
  CU_ASSERT_EQUAL(iso_get_amount(&m, 28, &v), 0);
  CU_ASSERT_EQUAL(v, 150);
  snprintf(hex, sizeof hex, "%s%s%s", base, "443030303030313530",
           "5445524D30303031");
  load_hex(hex);
  CU_ASSERT_EQUAL_FATAL(parse("iso87a"), 0);
  CU_ASSERT_EQUAL(iso_get_amount(&m, 28, &v), 0);
  CU_ASSERT_EQUAL(v, -150);
  snprintf(hex, sizeof hex, "%s%s%s", base, "583030303030313530",
           "5445524D30303031");
  load_hex(hex);
  CU_ASSERT_EQUAL(parse("iso87a"), ISO_E_BAD_SIGN);
  CU_ASSERT_EQUAL(err.field, 28);
}

static void test_parse_rejects_bad_mti(void) {
  load_hex("3032413000");
  CU_ASSERT_EQUAL(parse("iso87a"), ISO_E_BAD_MTI);
  load_hex("02A0");
  CU_ASSERT_EQUAL(parse("iso87b"), ISO_E_BAD_MTI);
  load_hex("");
  CU_ASSERT_EQUAL(parse("iso87b"), ISO_E_TRUNCATED);
}

static void test_parse_rejects_invalid_de55(void) {
  load_golden(golden_iso87b_sale);
  /* The last TLV object DF8116 02 ABCD: claim 3 bytes of value. */
  CU_ASSERT_EQUAL(msg[msglen - 3], 0x02);
  msg[msglen - 3] = 0x03;
  CU_ASSERT_EQUAL(parse("iso87b"), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.field, 55);
  CU_ASSERT(err.offset >= msglen - 106 && err.offset < msglen);
}

static void test_parse_reports_missing_mandatory_field(void) {
  /* iso87b 0200 with DE3 and DE11 only: DE41 is mandatory. */
  load_hex("0200"
           "2020000000000000"
           "000000"
           "000001");
  CU_ASSERT_EQUAL_FATAL(parse("iso87b"), 0);
  CU_ASSERT_EQUAL(iso_check_mandatory(&m, &err), ISO_E_MISSING);
  CU_ASSERT_EQUAL(err.field, 41);
}

static void test_parse_field_variant_by_mti_and_processing_code(void) {
  static iso_dialect_t d;
  static const iso_variant_t variants[] = {
      /* In 01xx balance inquiries (proc 31....), DE54 is fixed an 12. */
      {"01..",
       "31",
       2,
       54,
       {"additional amounts (balance)", 12, ISO_LEN_FIXED, 0, ISO_ENC_ASCII,
        ISO_CLS_AN, 0, 0}},
  };
  memcpy(&d, D("iso87a"), sizeof d);
  d.name = "iso87a-variant";
  d.variants = variants;
  d.nvariants = 1;
  CU_ASSERT_EQUAL_FATAL(iso_dialect_check(&d, &err), 0);
  /* 0100, DE3 310000, DE54 fixed "001826C00000" (12 chars, no prefix). */
  load_hex("30313030"
           "32303030303030303030303030343030"
           "333130303030"
           "303031383236433030303030");
  CU_ASSERT_EQUAL_FATAL(iso_parse(&m, &d, msg, msglen, &err), 0);
  CU_ASSERT_EQUAL(m.f[54].variant, 1);
  CU_ASSERT_EQUAL(iso_msg_field_def(&m, 54)->len_type, ISO_LEN_FIXED);
  assert_text(54, "001826C00000");
  /* The same bytes as a purchase (proc 00) use the LLL layout: "001" is
   * then a length of 1 and the message has trailing bytes. */
  msg[20] = '0';
  msg[21] = '0';
  CU_ASSERT_EQUAL(iso_parse(&m, &d, msg, msglen, &err), ISO_E_TRAILING);
}

static void test_parse_undefined_field_is_refused(void) {
  static iso_dialect_t d;
  memcpy(&d, D("iso87b"), sizeof d);
  d.name = "iso87b-no-de48";
  d.fields[48].name = NULL;
  load_hex("0200"
           "0000000000010000"
           "0003414243");
  CU_ASSERT_EQUAL(iso_parse(&m, &d, msg, msglen, &err), ISO_E_UNDEFINED_FIELD);
  CU_ASSERT_EQUAL(err.field, 48);
  CU_ASSERT_EQUAL(err.offset, 10);
}

static void test_parse_ebcdic_bitmap_dialect(void) {
  static iso_dialect_t d;
  memcpy(&d, D("iso87e"), sizeof d);
  d.name = "iso87e-hexbitmap";
  d.bitmap_enc = ISO_ENC_EBCDIC;
  /* 0800, bitmap "0220000000000000" in EBCDIC, DE7, DE11. */
  load_hex("F0F8F0F0"
           "F0F2F2F0F0F0F0F0F0F0F0F0F0F0F0F0"
           "F1F1F2F3F1F0F3F0F0F0"
           "F0F0F0F1F2F3");
  CU_ASSERT_EQUAL_FATAL(iso_parse(&m, &d, msg, msglen, &err), 0);
  assert_text(7, "1123103000");
  assert_text(11, "000123");
}

static void test_get_accessors_report_absent_class_and_space(void) {
  load_golden(golden_iso87a_sale);
  CU_ASSERT_EQUAL_FATAL(parse("iso87a"), 0);
  char t[8];
  uint8_t b[4];
  uint64_t u;
  int64_t a;
  iso_view_t v;
  CU_ASSERT_EQUAL(iso_get_text(&m, 5, t, sizeof t, NULL), ISO_E_ABSENT);
  CU_ASSERT_EQUAL(iso_get_raw(&m, 5, &v), ISO_E_ABSENT);
  CU_ASSERT_EQUAL(iso_get_text(&m, 2, t, sizeof t, NULL), ISO_E_NOSPACE);
  CU_ASSERT_EQUAL(iso_get_bytes(&m, 2, b, sizeof b, NULL), ISO_E_WRONG_CLASS);
  CU_ASSERT_EQUAL(iso_get_bytes(&m, 52, b, sizeof b, NULL), ISO_E_NOSPACE);
  CU_ASSERT_EQUAL(iso_get_u64(&m, 41, &u), ISO_E_WRONG_CLASS);
  CU_ASSERT_EQUAL(iso_get_amount(&m, 43, &a), ISO_E_WRONG_CLASS);
  CU_ASSERT_EQUAL(iso_get_u64(&m, 2, &u), 0);
  CU_ASSERT_EQUAL(u, UINT64_C(4761739001010010));
  CU_ASSERT_EQUAL(iso_has(&m, 0), 0);
  CU_ASSERT_EQUAL(iso_has(&m, 193), 0);
}

static void test_get_u64_reports_overflow(void) {
  /* iso87b 0400 with DE90 (n 42): too many digits for 64 bits. */
  load_hex("0400"
           "8000000000000000"
           "0000004000000000"
           "123456789012345678901234567890123456789012");
  CU_ASSERT_EQUAL_FATAL(parse("iso87b"), 0);
  uint64_t v;
  CU_ASSERT_EQUAL(iso_get_u64(&m, 90, &v), ISO_E_OVERFLOW);
}

/* Deterministic mutation storm: whatever the bytes, parse returns a code
 * from the list, an offset inside the buffer, and stays inside it. */
static void test_parse_survives_random_mutations(void) {
  const char *names[] = {"iso87a", "iso87b", "iso87e", "iso93a"};
  const char *const *golds[] = {golden_iso87a_sale, golden_iso87b_sale,
                                golden_iso87e_sale, golden_iso93a_sale};
  uint32_t seed = 12345;
  int ok = 0, failed = 0;
  for (int g = 0; g < 4; g++) {
    uint8_t base[4096];
    size_t blen = golden_bytes(golds[g], base, sizeof base);
    for (int iter = 0; iter < 5000; iter++) {
      uint8_t *copy = malloc(blen);
      CU_ASSERT_PTR_NOT_NULL_FATAL(copy);
      memcpy(copy, base, blen);
      int flips = 1 + iter % 4;
      for (int f = 0; f < flips; f++) {
        seed = seed * 1103515245u + 12345u;
        copy[(seed >> 8) % blen] ^= (uint8_t)(1u << ((seed >> 4) & 7));
      }
      iso_msg_t mm;
      iso_err_t e = {0};
      int rc = iso_parse(&mm, D(names[g]), copy, blen, &e);
      if (rc == 0) {
        ok++;
      } else {
        failed++;
        CU_ASSERT(rc < 0 && rc >= ISO_E_NOMEM);
        CU_ASSERT(e.offset <= blen);
        CU_ASSERT(e.field >= 0 && e.field <= ISO_MAX_FIELD);
      }
      free(copy);
    }
  }
  CU_ASSERT(ok > 0 && failed > 0);
}

int main(void) {
  static const tu_test_t tests[] = {
      {"parse_iso87a_golden_purchase", test_parse_iso87a_golden_purchase},
      {"parse_iso87b_golden_purchase", test_parse_iso87b_golden_purchase},
      {"parse_iso87e_golden_purchase", test_parse_iso87e_golden_purchase},
      {"parse_iso93a_golden_purchase", test_parse_iso93a_golden_purchase},
      {"parse_rejects_every_truncation_point",
       test_parse_rejects_every_truncation_point},
      {"parse_rejects_trailing_bytes", test_parse_rejects_trailing_bytes},
      {"parse_rejects_bit1_without_secondary_bitmap",
       test_parse_rejects_bit1_without_secondary_bitmap},
      {"parse_rejects_empty_secondary_bitmap",
       test_parse_rejects_empty_secondary_bitmap},
      {"parse_network_echo_with_secondary_bitmap",
       test_parse_network_echo_with_secondary_bitmap},
      {"parse_tertiary_bitmap_carries_fields_129_to_192",
       test_parse_tertiary_bitmap_carries_fields_129_to_192},
      {"parse_rejects_bad_bcd_nibble", test_parse_rejects_bad_bcd_nibble},
      {"parse_rejects_bcd_length_prefix_with_bad_nibble",
       test_parse_rejects_bcd_length_prefix_with_bad_nibble},
      {"parse_rejects_wrong_pad_nibble", test_parse_rejects_wrong_pad_nibble},
      {"parse_odd_track2_packed_with_trailing_f",
       test_parse_odd_track2_packed_with_trailing_f},
      {"parse_rejects_llvar_longer_than_max",
       test_parse_rejects_llvar_longer_than_max},
      {"parse_llvar_boundary_lengths", test_parse_llvar_boundary_lengths},
      {"parse_rejects_non_digit_ascii_length",
       test_parse_rejects_non_digit_ascii_length},
      {"parse_rejects_letter_in_numeric_field",
       test_parse_rejects_letter_in_numeric_field},
      {"parse_rejects_control_character_in_ans",
       test_parse_rejects_control_character_in_ans},
      {"parse_signed_amount_x_n", test_parse_signed_amount_x_n},
      {"parse_rejects_bad_mti", test_parse_rejects_bad_mti},
      {"parse_rejects_invalid_de55", test_parse_rejects_invalid_de55},
      {"parse_reports_missing_mandatory_field",
       test_parse_reports_missing_mandatory_field},
      {"parse_field_variant_by_mti_and_processing_code",
       test_parse_field_variant_by_mti_and_processing_code},
      {"parse_undefined_field_is_refused",
       test_parse_undefined_field_is_refused},
      {"parse_ebcdic_bitmap_dialect", test_parse_ebcdic_bitmap_dialect},
      {"get_accessors_report_absent_class_and_space",
       test_get_accessors_report_absent_class_and_space},
      {"get_u64_reports_overflow", test_get_u64_reports_overflow},
      {"parse_survives_random_mutations", test_parse_survives_random_mutations},
      {NULL, NULL}};
  tu_init();
  tu_add_suite("iso8583_parse", tests);
  return tu_run();
}
