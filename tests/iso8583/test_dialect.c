/*
 * test_dialect.c — the built-in dialects exist and pass iso_dialect_check,
 * and the check refuses the impossible layouts it promises to refuse.
 */
#include "iso8583.h"
#include "testutil.h"

#include <string.h>

static void test_builtin_dialects_are_listed_and_valid(void) {
  static const char *const want[] = {"iso87a", "iso87a-bbitmap", "iso87b",
                                     "iso87e", "iso93a",         "iso93b"};
  CU_ASSERT_EQUAL(iso_dialect_count(), 6);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    const iso_dialect_t *d = iso_dialect_find(want[i]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    CU_ASSERT_PTR_EQUAL(iso_dialect_at(i), d);
    iso_err_t err = {0};
    CU_ASSERT_EQUAL(iso_dialect_check(d, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(d->description);
    /* Sensitive fields are marked in every built-in. */
    CU_ASSERT(d->fields[2].flags & ISO_F_PAN);
    CU_ASSERT(d->fields[35].flags & ISO_F_SENSITIVE);
    CU_ASSERT(d->fields[45].flags & ISO_F_SENSITIVE);
    CU_ASSERT(d->fields[52].flags & ISO_F_SENSITIVE);
    CU_ASSERT(d->fields[55].flags & ISO_F_SENSITIVE);
    CU_ASSERT(d->fields[55].flags & ISO_F_TLV);
  }
  CU_ASSERT_PTR_NULL(iso_dialect_find("iso87x"));
  CU_ASSERT_PTR_NULL(iso_dialect_find(NULL));
  CU_ASSERT_PTR_NULL(iso_dialect_at(6));
}

static void test_builtin_dialects_follow_the_standard_tables(void) {
  const iso_dialect_t *a = iso_dialect_find("iso87a");
  const iso_dialect_t *b = iso_dialect_find("iso87b");
  const iso_dialect_t *n = iso_dialect_find("iso93a");
  /* 1987: DE12 n6, DE39 an2; 1993: DE12 n12, DE39 n3. */
  CU_ASSERT_EQUAL(a->fields[12].max_len, 6);
  CU_ASSERT_EQUAL(n->fields[12].max_len, 12);
  CU_ASSERT_EQUAL(a->fields[39].cls, ISO_CLS_AN);
  CU_ASSERT_EQUAL(n->fields[39].cls, ISO_CLS_N);
  CU_ASSERT_EQUAL(n->fields[39].max_len, 3);
  /* Binary POS: packed numerics, BCD prefixes, raw PIN block. */
  CU_ASSERT_EQUAL(b->fields[4].body_enc, ISO_ENC_BCD);
  CU_ASSERT_EQUAL(b->fields[2].len_enc, ISO_ENC_BCD);
  CU_ASSERT_EQUAL(b->fields[52].body_enc, ISO_ENC_BINARY);
  CU_ASSERT_EQUAL(a->fields[52].body_enc, ISO_ENC_HEX);
  CU_ASSERT_EQUAL(b->fields[35].pad, ISO_PAD_RIGHT_F);
  CU_ASSERT_EQUAL(b->fields[22].pad, ISO_PAD_LEFT_0);
}

static void test_body_bytes_per_encoding(void) {
  const iso_dialect_t *b = iso_dialect_find("iso87b");
  const iso_dialect_t *a = iso_dialect_find("iso87a");
  CU_ASSERT_EQUAL(iso_body_bytes(&b->fields[22], 3), 2);
  CU_ASSERT_EQUAL(iso_body_bytes(&b->fields[2], 16), 8);
  CU_ASSERT_EQUAL(iso_body_bytes(&b->fields[2], 19), 10);
  CU_ASSERT_EQUAL(iso_body_bytes(&b->fields[28], 9), 5); /* sign + 4 */
  CU_ASSERT_EQUAL(iso_body_bytes(&a->fields[52], 8), 16);
  CU_ASSERT_EQUAL(iso_body_bytes(&a->fields[2], 19), 19);
}

static int check_with(void (*mutate)(iso_dialect_t *), int *field) {
  static iso_dialect_t d;
  memcpy(&d, iso_dialect_find("iso87b"), sizeof d);
  d.name = "mutated";
  mutate(&d);
  iso_err_t err = {0};
  int rc = iso_dialect_check(&d, &err);
  *field = err.field;
  return rc;
}

static void bcd_on_text(iso_dialect_t *d) {
  d->fields[41].body_enc = ISO_ENC_BCD;
}
static void ll_too_long(iso_dialect_t *d) {
  d->fields[44].max_len = 100;
}
static void tlv_on_text(iso_dialect_t *d) {
  d->fields[48].flags |= ISO_F_TLV;
}
static void hex_on_digits(iso_dialect_t *d) {
  d->fields[4].body_enc = ISO_ENC_HEX;
}
static void ascii_on_binary(iso_dialect_t *d) {
  d->fields[52].body_enc = ISO_ENC_ASCII;
}
static void zero_length(iso_dialect_t *d) {
  d->fields[11].max_len = 0;
}
static void bad_bitmaps(iso_dialect_t *d) {
  d->max_bitmaps = 4;
}
static void bad_mti(iso_dialect_t *d) {
  d->mti_enc = ISO_ENC_HEX;
}
static void bad_variant(iso_dialect_t *d) {
  static const iso_variant_t v[] = {
      {"01x.", "", 0, 54, {"x", 5, ISO_LEN_FIXED, 0, 0, ISO_CLS_AN, 0, 0}}};
  d->variants = v;
  d->nvariants = 1;
}
static void variant_on_bitmap(iso_dialect_t *d) {
  static const iso_variant_t v[] = {
      {"01..", "", 0, 65, {"x", 5, ISO_LEN_FIXED, 0, 0, ISO_CLS_AN, 0, 0}}};
  d->variants = v;
  d->nvariants = 1;
}

static void test_dialect_check_refuses_impossible_layouts(void) {
  int f;
  CU_ASSERT_EQUAL(check_with(bcd_on_text, &f), ISO_E_DIALECT);
  CU_ASSERT_EQUAL(f, 41);
  CU_ASSERT_EQUAL(check_with(ll_too_long, &f), ISO_E_DIALECT);
  CU_ASSERT_EQUAL(f, 44);
  CU_ASSERT_EQUAL(check_with(tlv_on_text, &f), ISO_E_DIALECT);
  CU_ASSERT_EQUAL(f, 48);
  CU_ASSERT_EQUAL(check_with(hex_on_digits, &f), ISO_E_DIALECT);
  CU_ASSERT_EQUAL(f, 4);
  CU_ASSERT_EQUAL(check_with(ascii_on_binary, &f), ISO_E_DIALECT);
  CU_ASSERT_EQUAL(f, 52);
  CU_ASSERT_EQUAL(check_with(zero_length, &f), ISO_E_DIALECT);
  CU_ASSERT_EQUAL(f, 11);
  CU_ASSERT_EQUAL(check_with(bad_bitmaps, &f), ISO_E_DIALECT);
  CU_ASSERT_EQUAL(check_with(bad_mti, &f), ISO_E_DIALECT);
  CU_ASSERT_EQUAL(check_with(bad_variant, &f), ISO_E_DIALECT);
  CU_ASSERT_EQUAL(f, 54);
  CU_ASSERT_EQUAL(check_with(variant_on_bitmap, &f), ISO_E_DIALECT);
  CU_ASSERT_EQUAL(iso_dialect_check(NULL, NULL), ISO_E_INVAL);
}

static void test_error_names_and_messages_cover_every_code(void) {
  for (int c = 0; c >= ISO_E_NOMEM; c--) {
    CU_ASSERT_PTR_NOT_NULL(iso_strerror(c));
    CU_ASSERT_STRING_NOT_EQUAL(iso_err_name(c), "UNKNOWN");
  }
  CU_ASSERT_STRING_EQUAL(iso_err_name(ISO_E_TOO_LONG), "TOO_LONG");
  CU_ASSERT_STRING_EQUAL(iso_strerror(1), "unknown error");
  CU_ASSERT_STRING_EQUAL(iso_strerror(ISO_E_NOMEM - 1), "unknown error");
}

int main(void) {
  static const tu_test_t tests[] = {
      {"builtin_dialects_are_listed_and_valid",
       test_builtin_dialects_are_listed_and_valid},
      {"builtin_dialects_follow_the_standard_tables",
       test_builtin_dialects_follow_the_standard_tables},
      {"body_bytes_per_encoding", test_body_bytes_per_encoding},
      {"dialect_check_refuses_impossible_layouts",
       test_dialect_check_refuses_impossible_layouts},
      {"error_names_and_messages_cover_every_code",
       test_error_names_and_messages_cover_every_code},
      {NULL, NULL}};
  tu_init();
  tu_add_suite("iso8583_dialect", tests);
  return tu_run();
}
