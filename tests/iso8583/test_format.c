/*
 * test_format.c — masking: nothing the codec formats for people shows a
 * sensitive field in clear unless asked, and error text never carries field
 * content.
 */
#include "golden.h"
#include "iso8583.h"
#include "testutil.h"

#include <string.h>

static iso_msg_t m;
static uint8_t buf[1024];

static void parse_golden(void) {
  size_t n = golden_bytes(golden_iso87a_sale, buf, sizeof buf);
  CU_ASSERT_EQUAL_FATAL(iso_parse(&m, iso_dialect_find("iso87a"), buf, n, NULL),
                        0);
}

static void test_mask_pan_keeps_first_six_and_last_four(void) {
  char out[32];
  CU_ASSERT_EQUAL(iso_mask_pan("4761739001010010", 16, out, sizeof out), 16);
  CU_ASSERT_STRING_EQUAL(out, "476173******0010");
  iso_mask_pan("4761739001010010123", 19, out, sizeof out);
  CU_ASSERT_STRING_EQUAL(out, "476173*********0123");
  iso_mask_pan("123456789", 9, out, sizeof out);
  CU_ASSERT_STRING_EQUAL(out, "*****6789");
  iso_mask_pan("12345678", 8, out, sizeof out);
  CU_ASSERT_STRING_EQUAL(out, "********");
  iso_mask_pan("4761739001010010", 16, out, 5);
  CU_ASSERT_EQUAL(strlen(out), 4);
}

static void test_format_field_masks_sensitive_fields(void) {
  parse_golden();
  char out[512];
  size_t n;
  CU_ASSERT_EQUAL(iso_format_field(&m, 2, 0, out, sizeof out, &n), 0);
  CU_ASSERT_STRING_EQUAL(out, "476173******0010");
  CU_ASSERT_EQUAL(iso_format_field(&m, 35, 0, out, sizeof out, &n), 0);
  CU_ASSERT_EQUAL(n, strlen(GOLDEN_TRACK2));
  CU_ASSERT_EQUAL(strspn(out, "*"), n);
  CU_ASSERT_EQUAL(iso_format_field(&m, 52, 0, out, sizeof out, &n), 0);
  CU_ASSERT_EQUAL(strspn(out, "*"), 16);
  CU_ASSERT_EQUAL(iso_format_field(&m, 55, 0, out, sizeof out, &n), 0);
  CU_ASSERT_EQUAL(strspn(out, "*"), 2 * GOLDEN_ICC_LEN);
  CU_ASSERT_EQUAL(iso_format_field(&m, 41, 0, out, sizeof out, &n), 0);
  CU_ASSERT_STRING_EQUAL(out, "TERM0001");
  CU_ASSERT_EQUAL(iso_format_field(&m, 2, ISO_FMT_UNMASK, out, sizeof out, &n),
                  0);
  CU_ASSERT_STRING_EQUAL(out, GOLDEN_PAN);
}

static void test_pan_flag_alone_still_masks(void) {
  static iso_dialect_t d;
  memcpy(&d, iso_dialect_find("iso87a"), sizeof d);
  d.name = "pan-only";
  d.fields[2].flags = ISO_F_PAN; /* no ISO_F_SENSITIVE */
  size_t n = golden_bytes(golden_iso87a_sale, buf, sizeof buf);
  CU_ASSERT_EQUAL_FATAL(iso_parse(&m, &d, buf, n, NULL), 0);
  char out[64];
  CU_ASSERT_EQUAL(iso_format_field(&m, 2, 0, out, sizeof out, NULL), 0);
  CU_ASSERT_STRING_EQUAL(out, "476173******0010");
}

static void test_dump_masks_unless_asked(void) {
  parse_golden();
  char out[8192];
  iso_dump(&m, 0, out, sizeof out);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "MTI 0200"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "476173******0010"));
  CU_ASSERT_PTR_NULL(strstr(out, GOLDEN_PAN));
  CU_ASSERT_PTR_NULL(strstr(out, "0123456789ABCDEF"));
  CU_ASSERT_PTR_NULL(strstr(out, "9F2608"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "TERM0001"));
  iso_dump(&m, ISO_FMT_UNMASK, out, sizeof out);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, GOLDEN_PAN));
  /* Truncation is safe and terminated. */
  size_t n = iso_dump(&m, 0, out, 40);
  CU_ASSERT(n < 40);
  CU_ASSERT_EQUAL(strlen(out), n);
}

static void test_error_text_names_field_and_offset_not_content(void) {
  const iso_dialect_t *d = iso_dialect_find("iso87a");
  uint8_t bad[64];
  /* DE2 claims 20 digits: the PAN digits must not appear in the error. */
  size_t n = tu_unhex("30323030"
                      "34303030303030303030303030303030"
                      "3230"
                      "3437363137333930303130313030313030303030",
                      bad, sizeof bad);
  iso_err_t err = {0};
  CU_ASSERT_EQUAL(iso_parse(&m, d, bad, n, &err), ISO_E_TOO_LONG);
  char line[256];
  iso_err_format(&err, d, line, sizeof line);
  CU_ASSERT_STRING_EQUAL(line, "field 2 (primary account number) at offset 20: "
                               "field is longer than its maximum (allowed 19, "
                               "found 20)");
  CU_ASSERT_PTR_NULL(strstr(line, "4761"));
  iso_err_t none = {ISO_E_TRAILING, 0, 0, 7, 0, 0};
  iso_err_format(&none, NULL, line, sizeof line);
  CU_ASSERT_STRING_EQUAL(line, "offset 7: bytes are left after the last field");
  iso_err_t sub = {ISO_E_TLV_TAG, 55, 3, 99, 0, 0};
  iso_err_format(&sub, d, line, 30);
  CU_ASSERT_EQUAL(strlen(line), 29);
}

int main(void) {
  static const tu_test_t tests[] = {
      {"mask_pan_keeps_first_six_and_last_four",
       test_mask_pan_keeps_first_six_and_last_four},
      {"format_field_masks_sensitive_fields",
       test_format_field_masks_sensitive_fields},
      {"pan_flag_alone_still_masks", test_pan_flag_alone_still_masks},
      {"dump_masks_unless_asked", test_dump_masks_unless_asked},
      {"error_text_names_field_and_offset_not_content",
       test_error_text_names_field_and_offset_not_content},
      {NULL, NULL}};
  tu_init();
  tu_add_suite("iso8583_format", tests);
  return tu_run();
}
