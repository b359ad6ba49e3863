/*
 * test_build.c — iso_build against the hand-built goldens: building from
 * values gives the golden bytes, a parsed message rebuilds byte for byte,
 * a message moves between dialects field by field, and the builder never
 * writes past its buffer.
 */
#include "golden.h"
#include "iso8583.h"
#include "testutil.h"

#include <stdio.h>
#include <string.h>

static const iso_dialect_t *D(const char *name) {
  const iso_dialect_t *d = iso_dialect_find(name);
  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  return d;
}

#define SET(b, n, s) CU_ASSERT_EQUAL_FATAL(iso_set_text(b, n, s, strlen(s)), 0)

/* The purchase in golden.h, set field by field in no particular order. */
static void set_purchase(iso_builder_t *b, int ninety_three) {
  static uint8_t icc[GOLDEN_ICC_LEN];
  static const uint8_t pin[8] = {0x01, 0x23, 0x45, 0x67,
                                 0x89, 0xAB, 0xCD, 0xEF};
  CU_ASSERT_EQUAL_FATAL(tu_unhex(GOLDEN_ICC, icc, sizeof icc), GOLDEN_ICC_LEN);
  CU_ASSERT_EQUAL_FATAL(iso_set_bytes(b, 55, icc, sizeof icc), 0);
  SET(b, 42, "MERCHANT0000001");
  SET(b, 2, GOLDEN_PAN);
  CU_ASSERT_EQUAL_FATAL(iso_set_u64(b, 4, 1000), 0);
  SET(b, 3, "000000");
  SET(b, 7, "1123103000");
  CU_ASSERT_EQUAL_FATAL(iso_set_u64(b, 11, 123), 0);
  SET(b, 37, "533112000123");
  SET(b, 41, "TERM0001");
  if (ninety_three) {
    SET(b, 12, "251123103000");
    SET(b, 22, "51010151134C");
    SET(b, 24, "200");
    SET(b, 49, "978");
    return;
  }
  CU_ASSERT_EQUAL_FATAL(iso_set_bytes(b, 52, pin, sizeof pin), 0);
  SET(b, 12, "103000");
  SET(b, 13, "1123");
  SET(b, 14, "2712");
  SET(b, 18, "5411");
  SET(b, 22, "051");
  SET(b, 25, "00");
  SET(b, 35, GOLDEN_TRACK2);
  SET(b, 43, "ACME STORE 42          LONDON        GB ");
  SET(b, 49, "826");
}

static void build_matches_golden(const char *dialect, const char *mti,
                                 const char *const *gold, int ninety_three) {
  static iso_builder_t b;
  uint8_t want[1024], out[1024];
  size_t wl = golden_bytes(gold, want, sizeof want), ol = 0;
  iso_err_t err = {0};
  iso_builder_init(&b, D(dialect), mti);
  set_purchase(&b, ninety_three);
  int rc = iso_build(&b, out, sizeof out, &ol, &err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_EQUAL(ol, wl);
  CU_ASSERT_EQUAL(memcmp(out, want, wl), 0);
}

static void test_build_from_values_gives_golden_bytes(void) {
  build_matches_golden("iso87a", "0200", golden_iso87a_sale, 0);
  build_matches_golden("iso87b", "0200", golden_iso87b_sale, 0);
  build_matches_golden("iso87e", "0200", golden_iso87e_sale, 0);
  build_matches_golden("iso93a", "1200", golden_iso93a_sale, 1);
}

/* Parse, copy every field with iso_set_from, build: identical bytes. */
static void rebuild(const char *dialect, const char *const *gold) {
  static iso_builder_t b;
  static iso_msg_t m;
  uint8_t in[1024], out[1024];
  size_t il = golden_bytes(gold, in, sizeof in), ol = 0;
  CU_ASSERT_EQUAL_FATAL(iso_parse(&m, D(dialect), in, il, NULL), 0);
  iso_builder_init(&b, D(dialect), m.mti);
  for (int n = 2; n <= ISO_MAX_FIELD; n++)
    if (iso_has(&m, n) && n != 65)
      CU_ASSERT_EQUAL(iso_set_from(&b, n, &m), 0);
  CU_ASSERT_EQUAL_FATAL(iso_build(&b, out, sizeof out, &ol, NULL), 0);
  CU_ASSERT_EQUAL(ol, il);
  CU_ASSERT_EQUAL(memcmp(in, out, il), 0);
}

static void test_build_round_trips_parsed_message(void) {
  rebuild("iso87a", golden_iso87a_sale);
  rebuild("iso87b", golden_iso87b_sale);
  rebuild("iso87e", golden_iso87e_sale);
  rebuild("iso93a", golden_iso93a_sale);
}

/* The same purchase moved from one dialect to another field by field is
 * the other dialect's golden. */
static void transcode(const char *from, const char *const *gfrom,
                      const char *to, const char *const *gto) {
  static iso_builder_t b;
  static iso_msg_t m;
  uint8_t in[1024], want[1024], out[1024];
  size_t il = golden_bytes(gfrom, in, sizeof in);
  size_t wl = golden_bytes(gto, want, sizeof want), ol = 0;
  CU_ASSERT_EQUAL_FATAL(iso_parse(&m, D(from), in, il, NULL), 0);
  iso_builder_init(&b, D(to), m.mti);
  for (int n = 2; n <= 128; n++)
    if (iso_has(&m, n))
      CU_ASSERT_EQUAL(iso_set_from(&b, n, &m), 0);
  iso_err_t err = {0};
  CU_ASSERT_EQUAL_FATAL(iso_build(&b, out, sizeof out, &ol, &err), 0);
  CU_ASSERT_EQUAL(ol, wl);
  CU_ASSERT_EQUAL(memcmp(out, want, wl), 0);
}

static void test_build_transcodes_between_dialects(void) {
  transcode("iso87a", golden_iso87a_sale, "iso87b", golden_iso87b_sale);
  transcode("iso87b", golden_iso87b_sale, "iso87e", golden_iso87e_sale);
  transcode("iso87e", golden_iso87e_sale, "iso87a", golden_iso87a_sale);
}

/* Every buffer shorter than the message is refused, and nothing is
 * written past it (a canary byte after the cap stays intact). */
static void test_build_never_writes_past_its_buffer(void) {
  static iso_builder_t b;
  uint8_t out[1024];
  size_t full = 0, ol;
  iso_builder_init(&b, D("iso87b"), "0200");
  set_purchase(&b, 0);
  CU_ASSERT_EQUAL_FATAL(iso_build(&b, out, sizeof out, &full, NULL), 0);
  for (size_t cap = 0; cap < full; cap++) {
    memset(out, 0xA5, sizeof out);
    iso_err_t err = {0};
    CU_ASSERT_EQUAL(iso_build(&b, out, cap, &ol, &err), ISO_E_NOSPACE);
    CU_ASSERT_EQUAL(out[cap], 0xA5);
  }
}

static void test_build_response_from_request(void) {
  static iso_builder_t b;
  static iso_msg_t req, rsp;
  uint8_t in[1024], out[1024];
  size_t il = golden_bytes(golden_iso87a_sale, in, sizeof in), ol;
  CU_ASSERT_EQUAL_FATAL(iso_parse(&req, D("iso87a"), in, il, NULL), 0);
  iso_builder_init(&b, D("iso87a"), "0210");
  static const int echo[] = {2, 3, 4, 7, 11, 12, 13, 37, 41, 42, 49};
  for (size_t i = 0; i < sizeof echo / sizeof echo[0]; i++)
    CU_ASSERT_EQUAL(iso_set_from(&b, echo[i], &req), 0);
  SET(&b, 38, "A1B2C3");
  SET(&b, 39, "00");
  CU_ASSERT_EQUAL_FATAL(iso_build(&b, out, sizeof out, &ol, NULL), 0);
  CU_ASSERT_EQUAL_FATAL(iso_parse(&rsp, D("iso87a"), out, ol, NULL), 0);
  CU_ASSERT_EQUAL(memcmp(rsp.mti, "0210", 4), 0);
  CU_ASSERT(!iso_has(&rsp, 35) && !iso_has(&rsp, 52) && !iso_has(&rsp, 55));
  iso_view_t a, c;
  CU_ASSERT_EQUAL(iso_get_raw(&req, 2, &a), 0);
  CU_ASSERT_EQUAL(iso_get_raw(&rsp, 2, &c), 0);
  CU_ASSERT_EQUAL(a.len, c.len);
  CU_ASSERT_EQUAL(memcmp(a.p, c.p, a.len), 0);
  CU_ASSERT_EQUAL(iso_check_mandatory(&rsp, NULL), 0);
}

static int build_one(const char *dialect, const char *mti, int n,
                     const char *text, iso_err_t *err) {
  static iso_builder_t b;
  uint8_t out[2048];
  size_t ol;
  iso_builder_init(&b, D(dialect), mti);
  int rc = iso_set_text(&b, n, text, strlen(text));
  if (rc)
    return rc;
  memset(err, 0, sizeof *err);
  return iso_build(&b, out, sizeof out, &ol, err);
}

static void test_build_rejects_bad_values_naming_the_field(void) {
  iso_err_t err;
  CU_ASSERT_EQUAL(build_one("iso87a", "0200", 3, "12345", &err),
                  ISO_E_WRONG_LENGTH);
  CU_ASSERT_EQUAL(err.field, 3);
  CU_ASSERT_EQUAL(err.expected, 6);
  CU_ASSERT_EQUAL(err.available, 5);
  CU_ASSERT_EQUAL(build_one("iso87a", "0200", 2, "47617390010100101234", &err),
                  ISO_E_TOO_LONG);
  CU_ASSERT_EQUAL(err.field, 2);
  CU_ASSERT_EQUAL(build_one("iso87b", "0200", 3, "00A000", &err),
                  ISO_E_BAD_CHAR);
  CU_ASSERT_EQUAL(err.field, 3);
  CU_ASSERT_EQUAL(build_one("iso87a", "0200", 3, "00A000", &err),
                  ISO_E_BAD_CHAR);
  CU_ASSERT_EQUAL(build_one("iso87e", "0200", 41, "TERM\t001", &err),
                  ISO_E_BAD_CHAR);
  CU_ASSERT_EQUAL(build_one("iso87b", "0200", 52, "0123456789ABCDE", &err),
                  ISO_E_BAD_HEX);
  CU_ASSERT_EQUAL(build_one("iso87b", "0200", 52, "0123456789ABCDEG", &err),
                  ISO_E_BAD_HEX);
  CU_ASSERT_EQUAL(build_one("iso87a", "0200", 28, "X00000100", &err),
                  ISO_E_BAD_SIGN);
  CU_ASSERT_EQUAL(build_one("iso87a", "02X0", 3, "000000", &err),
                  ISO_E_BAD_MTI);
  CU_ASSERT_EQUAL(build_one("iso87b", "0200", 55, "9F2608112233", &err),
                  ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.field, 55);
  CU_ASSERT_EQUAL(build_one("iso87a", "0200", 0, "x", &err), ISO_E_INVAL);
  CU_ASSERT_EQUAL(build_one("iso87a", "0200", 65, "x", &err),
                  ISO_E_UNDEFINED_FIELD);
  CU_ASSERT_EQUAL(build_one("iso87a", "0200", 193, "x", &err), ISO_E_INVAL);
}

static void test_build_secondary_and_tertiary_bitmaps_follow_fields(void) {
  static iso_builder_t b;
  static iso_msg_t m;
  uint8_t out[256];
  size_t ol;
  iso_builder_init(&b, D("iso87b"), "0200");
  SET(&b, 3, "000000");
  SET(&b, 11, "000001");
  SET(&b, 130, "ABC");
  CU_ASSERT_EQUAL_FATAL(iso_build(&b, out, sizeof out, &ol, NULL), 0);
  uint8_t want[64];
  size_t wl = tu_unhex("0200"
                       "A020000000000000"
                       "8000000000000000"
                       "000000"
                       "000001"
                       "4000000000000000"
                       "0003"
                       "414243",
                       want, sizeof want);
  CU_ASSERT_EQUAL(ol, wl);
  CU_ASSERT_EQUAL(memcmp(out, want, wl), 0);
  /* Without the high field, neither extra bitmap is written. */
  iso_unset(&b, 130);
  CU_ASSERT_EQUAL_FATAL(iso_build(&b, out, sizeof out, &ol, NULL), 0);
  CU_ASSERT_EQUAL(ol, 2 + 8 + 3 + 3);
  CU_ASSERT_EQUAL(iso_parse(&m, D("iso87b"), out, ol, NULL), 0);
  CU_ASSERT(!iso_has(&m, 1));
}

static void test_build_packs_track2_separator_and_pads(void) {
  static iso_builder_t b;
  uint8_t out[64];
  size_t ol;
  iso_builder_init(&b, D("iso87b"), "0100");
  SET(&b, 35, "4761739001010010=2712201100000123");
  SET(&b, 22, "051");
  CU_ASSERT_EQUAL_FATAL(iso_build(&b, out, sizeof out, &ol, NULL), 0);
  uint8_t want[64];
  size_t wl = tu_unhex("0100"
                       "0000040020000000"
                       "0051"
                       "33"
                       "4761739001010010D2712201100000123F",
                       want, sizeof want);
  CU_ASSERT_EQUAL(ol, wl);
  CU_ASSERT_EQUAL(memcmp(out, want, wl), 0);
}

static void test_build_set_u64_pads_and_refuses_overflow(void) {
  static iso_builder_t b;
  iso_builder_init(&b, D("iso87a"), "0200");
  CU_ASSERT_EQUAL(iso_set_u64(&b, 11, 1234567), ISO_E_TOO_LONG);
  CU_ASSERT_EQUAL(iso_set_u64(&b, 41, 1), ISO_E_WRONG_CLASS);
  CU_ASSERT_EQUAL(iso_set_u64(&b, 11, 0), 0);
  uint8_t out[64];
  size_t ol;
  CU_ASSERT_EQUAL_FATAL(iso_build(&b, out, sizeof out, &ol, NULL), 0);
  CU_ASSERT_EQUAL(ol, 4 + 16 + 6);
  CU_ASSERT_EQUAL(memcmp(out + 20, "000000", 6), 0);
}

static void test_build_one_bitmap_dialect_refuses_high_fields(void) {
  static iso_dialect_t d;
  static iso_builder_t b;
  memcpy(&d, D("iso87b"), sizeof d);
  d.name = "one-bitmap";
  d.max_bitmaps = 1;
  for (int n = 65; n <= ISO_MAX_FIELD; n++)
    d.fields[n].name = NULL;
  /* Its 0800 rule names DE70, which no longer exists: the check says so. */
  iso_err_t err = {0};
  CU_ASSERT_EQUAL(iso_dialect_check(&d, &err), ISO_E_DIALECT);
  CU_ASSERT_EQUAL(err.field, 70);
  d.mandatory = NULL;
  d.nmandatory = 0;
  CU_ASSERT_EQUAL_FATAL(iso_dialect_check(&d, NULL), 0);
  iso_builder_init(&b, &d, "0800");
  CU_ASSERT_EQUAL(iso_set_text(&b, 70, "301", 3), ISO_E_UNDEFINED_FIELD);
}

/* Binary length prefixes: one byte for LL, two bytes big-endian for LLL. */
static void test_build_and_parse_binary_length_prefixes(void) {
  static iso_dialect_t d;
  static iso_builder_t b;
  static iso_msg_t m;
  memcpy(&d, D("iso87b"), sizeof d);
  d.name = "binary-prefixes";
  d.fields[44].len_enc = ISO_ENC_BINARY;
  d.fields[48].len_enc = ISO_ENC_BINARY;
  CU_ASSERT_EQUAL_FATAL(iso_dialect_check(&d, NULL), 0);
  char big[300];
  memset(big, 'x', sizeof big);
  iso_builder_init(&b, &d, "0110");
  SET(&b, 44, "OK");
  CU_ASSERT_EQUAL(iso_set_text(&b, 48, big, 300), 0);
  uint8_t out[512];
  size_t ol;
  CU_ASSERT_EQUAL_FATAL(iso_build(&b, out, sizeof out, &ol, NULL), 0);
  /* MTI (2) + bitmap (8), DE44: 0x02 "OK", DE48: 0x01 0x2C then 300 x. */
  CU_ASSERT_EQUAL(ol, 2 + 8 + 1 + 2 + 2 + 300);
  CU_ASSERT_EQUAL(out[10], 0x02);
  CU_ASSERT_EQUAL(out[13], 0x01);
  CU_ASSERT_EQUAL(out[14], 0x2C);
  CU_ASSERT_EQUAL_FATAL(iso_parse(&m, &d, out, ol, NULL), 0);
  CU_ASSERT_EQUAL(m.f[48].units, 300);
  CU_ASSERT_EQUAL(m.f[44].hlen, 1);
  CU_ASSERT_EQUAL(m.f[48].hlen, 2);
  /* A binary length above the maximum (999) is refused. */
  out[13] = 0x03;
  out[14] = 0xE8;
  iso_err_t err = {0};
  CU_ASSERT_EQUAL(iso_parse(&m, &d, out, ol, &err), ISO_E_TOO_LONG);
  CU_ASSERT_EQUAL(err.field, 48);
  CU_ASSERT_EQUAL(err.available, 1000);
}

int main(void) {
  static const tu_test_t tests[] = {
      {"build_from_values_gives_golden_bytes",
       test_build_from_values_gives_golden_bytes},
      {"build_round_trips_parsed_message",
       test_build_round_trips_parsed_message},
      {"build_transcodes_between_dialects",
       test_build_transcodes_between_dialects},
      {"build_never_writes_past_its_buffer",
       test_build_never_writes_past_its_buffer},
      {"build_response_from_request", test_build_response_from_request},
      {"build_rejects_bad_values_naming_the_field",
       test_build_rejects_bad_values_naming_the_field},
      {"build_secondary_and_tertiary_bitmaps_follow_fields",
       test_build_secondary_and_tertiary_bitmaps_follow_fields},
      {"build_packs_track2_separator_and_pads",
       test_build_packs_track2_separator_and_pads},
      {"build_set_u64_pads_and_refuses_overflow",
       test_build_set_u64_pads_and_refuses_overflow},
      {"build_and_parse_binary_length_prefixes",
       test_build_and_parse_binary_length_prefixes},
      {"build_one_bitmap_dialect_refuses_high_fields",
       test_build_one_bitmap_dialect_refuses_high_fields},
      {NULL, NULL}};
  tu_init();
  tu_add_suite("iso8583_build", tests);
  return tu_run();
}
