/*
 * test_tlv.c — BER-TLV (DE55) reader and writer: tag and length forms,
 * padding, truncation at every byte of a realistic DE55, nesting limits,
 * lookup and encoding round trips.
 */
#include "iso8583.h"
#include "testutil.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* An ARQC's worth of ICC data as a terminal sends it in DE55, ending with a
 * Mastercard kernel tag (DF8116) and a constructed FCI discretionary data
 * template (BF0C) holding two primitive objects. */
static const char de55_hex[] = "9F2608 1122334455667788"
                               "9F2701 80"
                               "9F1007 06010A03A0A000"
                               "9F3704 A1B2C3D4"
                               "9F3602 0012"
                               "9505 0000008000"
                               "9A03 250115"
                               "9C01 00"
                               "9F0206 000000010000"
                               "5F2A02 0978"
                               "8202 1980"
                               "9F1A02 0250"
                               "9F0306 000000000000"
                               "9F3303 E0F8C8"
                               "9F3403 1E0300"
                               "9F3501 22"
                               "8407 A0000000031010"
                               "DF811604 0102030B"
                               "BF0C0A 9F4D020B0A 5F2D02656E";

static const uint32_t de55_tags[] = {
    0x9F26, 0x9F27, 0x9F10, 0x9F37, 0x9F36, 0x95,     0x9A,
    0x9C,   0x9F02, 0x5F2A, 0x82,   0x9F1A, 0x9F03,   0x9F33,
    0x9F34, 0x9F35, 0x84,   0x9F4D, 0x5F2D, 0xDF8116, 0xBF0C};
#define DE55_TOP 19 /* top-level objects: every tag above but 9F4D, 5F2D */

static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = tu_unhex(hex, out, cap);
  CU_ASSERT_FATAL(n != (size_t)-1);
  return n;
}

static void clear_err(iso_err_t *err) {
  memset(err, 0x5A, sizeof *err);
}

/* Reads the one object in hex and checks it fills the buffer. */
static void read_one(const char *hex, iso_tlv_t *obj, uint8_t *buf,
                     size_t cap) {
  size_t n = unhex(hex, buf, cap);
  iso_tlv_iter_t it;
  iso_err_t err;
  iso_tlv_begin(&it, buf, n);
  CU_ASSERT_EQUAL_FATAL(iso_tlv_next(&it, obj, &err), 1);
  CU_ASSERT_EQUAL(obj->off, 0);
  CU_ASSERT_PTR_EQUAL(obj->value + obj->len, buf + n);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, obj, &err), 0);
}

/* The error the iterator reports for the single object in buf[0..n). */
static int first_error(const uint8_t *buf, size_t n, iso_err_t *err) {
  iso_tlv_iter_t it;
  iso_tlv_t obj;
  iso_tlv_begin(&it, buf, n);
  clear_err(err);
  return iso_tlv_next(&it, &obj, err);
}

static void test_tlv_reads_one_byte_tag_with_short_length(void) {
  uint8_t buf[8];
  iso_tlv_t t;
  read_one("82 02 1980", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.tag, 0x82);
  CU_ASSERT_EQUAL(t.tag_len, 1);
  CU_ASSERT_EQUAL(t.len_len, 1);
  CU_ASSERT_EQUAL(t.constructed, 0);
  CU_ASSERT_EQUAL(t.len, 2);
  CU_ASSERT_PTR_EQUAL(t.value, buf + 2);
}

static void test_tlv_reads_two_byte_tags_9f26_and_5f2a(void) {
  uint8_t buf[32];
  iso_tlv_t t;
  read_one("9F26 08 1122334455667788", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.tag, 0x9F26);
  CU_ASSERT_EQUAL(t.tag_len, 2);
  CU_ASSERT_EQUAL(t.len, 8);
  CU_ASSERT_EQUAL(t.value[0], 0x11);
  read_one("5F2A 02 0978", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.tag, 0x5F2A);
  CU_ASSERT_EQUAL(t.tag_len, 2);
  CU_ASSERT_EQUAL(t.value[1], 0x78);
}

static void test_tlv_reads_low_tag_number_in_long_form_9f02(void) {
  uint8_t buf[16];
  iso_tlv_t t;
  read_one("9F02 06 000000010000", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.tag, 0x9F02);
  CU_ASSERT_EQUAL(t.len, 6);
}

static void test_tlv_reads_three_byte_tag_df8116(void) {
  uint8_t buf[16];
  iso_tlv_t t;
  read_one("DF8116 04 0102030B", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.tag, 0xDF8116);
  CU_ASSERT_EQUAL(t.tag_len, 3);
  CU_ASSERT_EQUAL(t.len_len, 1);
  CU_ASSERT_EQUAL(t.len, 4);
  CU_ASSERT_PTR_EQUAL(t.value, buf + 4);
}

static void test_tlv_reads_four_byte_tag(void) {
  uint8_t buf[16];
  iso_tlv_t t;
  read_one("DF818101 01 AA", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.tag, 0xDF818101u);
  CU_ASSERT_EQUAL(t.tag_len, 4);
  CU_ASSERT_EQUAL(t.len, 1);
}

static void test_tlv_rejects_five_byte_tag(void) {
  uint8_t buf[16];
  iso_err_t err;
  size_t n = unhex("00 DF81818101 01 AA", buf, sizeof buf);
  CU_ASSERT_EQUAL(first_error(buf, n, &err), ISO_E_TLV_TAG);
  CU_ASSERT_EQUAL(err.code, ISO_E_TLV_TAG);
  CU_ASSERT_EQUAL(err.field, 0);
  CU_ASSERT_EQUAL(err.subfield, 1);
  CU_ASSERT_EQUAL(err.offset, 1);
  CU_ASSERT_EQUAL(err.expected, 4);
  CU_ASSERT_EQUAL(err.available, 5);
}

static void test_tlv_rejects_0x80_as_first_subsequent_tag_byte(void) {
  uint8_t buf[8];
  iso_err_t err;
  size_t n = unhex("9F8001 01 AA", buf, sizeof buf);
  CU_ASSERT_EQUAL(first_error(buf, n, &err), ISO_E_TLV_TAG);
  CU_ASSERT_EQUAL(err.offset, 1);
  /* 0x80 further along is a continuation byte like any other. */
  iso_tlv_t t;
  read_one("DF818001 01 AA", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.tag, 0xDF818001u);
}

static void test_tlv_rejects_tag_cut_short(void) {
  uint8_t buf[8];
  iso_err_t err;
  size_t n = unhex("9F", buf, sizeof buf);
  CU_ASSERT_EQUAL(first_error(buf, n, &err), ISO_E_TLV_TAG);
  CU_ASSERT_EQUAL(err.offset, 0);
  CU_ASSERT_EQUAL(err.expected, 2);
  CU_ASSERT_EQUAL(err.available, 1);
  n = unhex("DF81", buf, sizeof buf);
  CU_ASSERT_EQUAL(first_error(buf, n, &err), ISO_E_TLV_TAG);
  CU_ASSERT_EQUAL(err.expected, 3);
  CU_ASSERT_EQUAL(err.available, 2);
}

static void test_tlv_reads_long_form_length_81(void) {
  /* 200 (0xC8) needs the long form: its top bit is set. */
  uint8_t obj[4 + 200];
  memcpy(obj, "\x9F\x10\x81\xC8", 4);
  memset(obj + 4, 0xAB, 200);
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, obj, sizeof obj);
  CU_ASSERT_EQUAL_FATAL(iso_tlv_next(&it, &t, NULL), 1);
  CU_ASSERT_EQUAL(t.tag, 0x9F10);
  CU_ASSERT_EQUAL(t.len_len, 2);
  CU_ASSERT_EQUAL(t.len, 200);
  CU_ASSERT_PTR_EQUAL(t.value, obj + 4);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, NULL), 0);
}

static void test_tlv_reads_long_form_length_82(void) {
  static uint8_t obj[1 + 3 + 300];
  obj[0] = 0x70;
  obj[1] = 0x82;
  obj[2] = 0x01;
  obj[3] = 0x2C;
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, obj, sizeof obj);
  CU_ASSERT_EQUAL_FATAL(iso_tlv_next(&it, &t, NULL), 1);
  CU_ASSERT_EQUAL(t.tag, 0x70);
  CU_ASSERT_EQUAL(t.constructed, 1);
  CU_ASSERT_EQUAL(t.len_len, 3);
  CU_ASSERT_EQUAL(t.len, 300);
  CU_ASSERT_PTR_EQUAL(t.value, obj + 4);
}

static void test_tlv_reads_long_form_length_83(void) {
  size_t n = 1 + 4 + 70000;
  uint8_t *obj = calloc(1, n);
  if (!obj) {
    CU_FAIL("out of memory");
    return;
  }
  obj[0] = 0xC1; /* private class, primitive */
  obj[1] = 0x83;
  obj[2] = 0x01;
  obj[3] = 0x11;
  obj[4] = 0x70;
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, obj, n);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, NULL), 1);
  CU_ASSERT_EQUAL(t.tag, 0xC1);
  CU_ASSERT_EQUAL(t.len_len, 4);
  CU_ASSERT_EQUAL(t.len, 70000);
  CU_ASSERT_PTR_EQUAL(t.value, obj + 5);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, NULL), 0);
  free(obj);
}

static void test_tlv_reads_long_form_length_84(void) {
  uint8_t buf[16];
  iso_tlv_t t;
  read_one("9F26 84 00000003 AABBCC", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.len_len, 5);
  CU_ASSERT_EQUAL(t.len, 3);
  CU_ASSERT_PTR_EQUAL(t.value, buf + 7);
}

static void test_tlv_reports_84_length_beyond_buffer(void) {
  uint8_t buf[16];
  iso_err_t err;
  size_t n = unhex("9F26 84 01000000 AABBCC", buf, sizeof buf);
  CU_ASSERT_EQUAL(first_error(buf, n, &err), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.offset, 2);
  CU_ASSERT_EQUAL(err.expected, 0x01000000u);
  CU_ASSERT_EQUAL(err.available, 3);
}

static void test_tlv_accepts_non_minimal_long_form_length(void) {
  uint8_t buf[8];
  iso_tlv_t t;
  read_one("9F36 81 02 0012", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.len_len, 2);
  CU_ASSERT_EQUAL(t.len, 2);
}

static void test_tlv_rejects_indefinite_length(void) {
  uint8_t buf[16];
  iso_err_t err;
  size_t n = unhex("70 80 9F3602 0012 0000", buf, sizeof buf);
  CU_ASSERT_EQUAL(first_error(buf, n, &err), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.offset, 1);
  CU_ASSERT_EQUAL(err.subfield, 1);
}

static void test_tlv_rejects_length_of_more_than_four_bytes(void) {
  uint8_t buf[16];
  iso_err_t err;
  size_t n = unhex("9F26 85 0000000001 AA", buf, sizeof buf);
  CU_ASSERT_EQUAL(first_error(buf, n, &err), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.offset, 2);
  CU_ASSERT_EQUAL(err.expected, 4);
  CU_ASSERT_EQUAL(err.available, 5);
  n = unhex("82 FF", buf, sizeof buf);
  CU_ASSERT_EQUAL(first_error(buf, n, &err), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.offset, 1);
}

static void test_tlv_rejects_long_form_length_cut_short(void) {
  uint8_t buf[8];
  iso_err_t err;
  size_t n = unhex("9F10 82 01", buf, sizeof buf);
  CU_ASSERT_EQUAL(first_error(buf, n, &err), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.offset, 2);
  CU_ASSERT_EQUAL(err.expected, 3);
  CU_ASSERT_EQUAL(err.available, 2);
}

static void test_tlv_rejects_tag_without_length(void) {
  uint8_t buf[8];
  iso_err_t err;
  size_t n = unhex("9F27 01 80 9F36", buf, sizeof buf);
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, buf, n);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, &err), 1);
  clear_err(&err);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, &err), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.subfield, 2);
  CU_ASSERT_EQUAL(err.offset, 6);
  CU_ASSERT_EQUAL(err.expected, 1);
  CU_ASSERT_EQUAL(err.available, 0);
}

static void test_tlv_reports_value_running_past_end(void) {
  uint8_t buf[16];
  iso_err_t err;
  size_t n = unhex("9F27 01 80 9F26 08 11223344", buf, sizeof buf);
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, buf, n);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, &err), 1);
  clear_err(&err);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, &err), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.code, ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.field, 0);
  CU_ASSERT_EQUAL(err.subfield, 2);
  CU_ASSERT_EQUAL(err.offset, 6);
  CU_ASSERT_EQUAL(err.expected, 8);
  CU_ASSERT_EQUAL(err.available, 4);
}

static void test_tlv_iterator_repeats_error_without_advancing(void) {
  uint8_t buf[8];
  iso_err_t err;
  size_t n = unhex("9F26 08 1122", buf, sizeof buf);
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, buf, n);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, &err), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, &err), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(it.index, 0);
  CU_ASSERT_EQUAL(err.subfield, 1);
}

static void test_tlv_iterates_de55_in_order(void) {
  uint8_t buf[256];
  size_t n = unhex(de55_hex, buf, sizeof buf);
  static const uint32_t top[DE55_TOP] = {
      0x9F26, 0x9F27, 0x9F10, 0x9F37,   0x9F36, 0x95,   0x9A,
      0x9C,   0x9F02, 0x5F2A, 0x82,     0x9F1A, 0x9F03, 0x9F33,
      0x9F34, 0x9F35, 0x84,   0xDF8116, 0xBF0C};
  iso_tlv_iter_t it;
  iso_tlv_t t;
  size_t expect_off = 0;
  int i = 0;
  iso_tlv_begin(&it, buf, n);
  while (iso_tlv_next(&it, &t, NULL) == 1) {
    CU_ASSERT_FATAL(i < DE55_TOP);
    CU_ASSERT_EQUAL(t.tag, top[i]);
    CU_ASSERT_EQUAL(t.off, expect_off);
    CU_ASSERT_EQUAL(t.constructed, t.tag == 0xBF0C);
    expect_off = (size_t)(t.value - buf) + t.len;
    i++;
  }
  CU_ASSERT_EQUAL(i, DE55_TOP);
  CU_ASSERT_EQUAL(expect_off, n);
  CU_ASSERT_EQUAL(it.index, DE55_TOP);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 1, NULL), 0);
}

/* Every prefix of the DE55 either ends on an object boundary (valid) or
 * cuts an object, which must be reported exactly: the cut object's index,
 * the offset of its tag or length field, and the bytes it lacks. */
static void test_tlv_reports_every_truncation_point_of_de55(void) {
  uint8_t buf[256];
  size_t n = unhex(de55_hex, buf, sizeof buf);
  CU_ASSERT_FATAL(n >= 100);
  iso_tlv_t objs[DE55_TOP];
  iso_tlv_iter_t it;
  int count = 0;
  iso_tlv_begin(&it, buf, n);
  while (count < DE55_TOP && iso_tlv_next(&it, &objs[count], NULL) == 1)
    count++;
  CU_ASSERT_EQUAL_FATAL(count, DE55_TOP);

  for (size_t k = 0; k < n; k++) {
    iso_err_t err;
    clear_err(&err);
    int rc = iso_tlv_validate(buf, k, 4, &err);
    int i = 0;
    while (i + 1 < count && objs[i + 1].off <= k)
      i++;
    const iso_tlv_t *o = &objs[i];
    size_t lpos = o->off + o->tag_len;
    size_t vpos = lpos + o->len_len;
    if (k == o->off) {
      CU_ASSERT_EQUAL(rc, 0);
      continue;
    }
    CU_ASSERT_EQUAL(err.subfield, i + 1);
    CU_ASSERT_EQUAL(err.field, 0);
    if (k < lpos) {
      CU_ASSERT_EQUAL(rc, ISO_E_TLV_TAG);
      CU_ASSERT_EQUAL(err.offset, o->off);
      CU_ASSERT_EQUAL(err.available, k - o->off);
    } else if (k < vpos) {
      CU_ASSERT_EQUAL(rc, ISO_E_TLV_LENGTH);
      CU_ASSERT_EQUAL(err.offset, lpos);
      CU_ASSERT_EQUAL(err.available, k - lpos);
    } else {
      CU_ASSERT_EQUAL(rc, ISO_E_TLV_LENGTH);
      CU_ASSERT_EQUAL(err.offset, lpos);
      CU_ASSERT_EQUAL(err.expected, o->len);
      CU_ASSERT_EQUAL(err.available, k - vpos);
    }
    CU_ASSERT_EQUAL(err.code, rc);
  }
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 4, NULL), 0);
}

static void test_tlv_skips_zero_padding_between_objects(void) {
  uint8_t buf[32];
  size_t n = unhex("00 00 9F3602 0012 00 8202 1980 0000", buf, sizeof buf);
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, buf, n);
  CU_ASSERT_EQUAL_FATAL(iso_tlv_next(&it, &t, NULL), 1);
  CU_ASSERT_EQUAL(t.tag, 0x9F36);
  CU_ASSERT_EQUAL(t.off, 2);
  CU_ASSERT_EQUAL_FATAL(iso_tlv_next(&it, &t, NULL), 1);
  CU_ASSERT_EQUAL(t.tag, 0x82);
  CU_ASSERT_EQUAL(t.off, 8);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, NULL), 0);
  CU_ASSERT_EQUAL(it.index, 2);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 0, NULL), 0);
}

static void test_tlv_buffer_of_padding_holds_no_object(void) {
  uint8_t buf[4] = {0, 0, 0, 0};
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, buf, sizeof buf);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, NULL), 0);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, sizeof buf, 0, NULL), 0);
  CU_ASSERT_EQUAL(iso_tlv_find(buf, sizeof buf, 0x9F26, &t), 0);
}

static void test_tlv_empty_buffer_holds_no_object(void) {
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, NULL, 0);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, NULL), 0);
  CU_ASSERT_EQUAL(iso_tlv_validate(NULL, 0, 3, NULL), 0);
  CU_ASSERT_EQUAL(iso_tlv_find(NULL, 0, 0x9F26, &t), 0);
}

static void test_tlv_marks_constructed_from_bit_six_of_first_byte(void) {
  uint8_t buf[16];
  iso_tlv_t t;
  read_one("BF0C 00", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.constructed, 1);
  read_one("70 00", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.constructed, 1);
  read_one("9F4D 02 0B0A", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.constructed, 0);
  read_one("5F2D 00", &t, buf, sizeof buf);
  CU_ASSERT_EQUAL(t.constructed, 0);
}

static void test_tlv_rejects_null_arguments(void) {
  uint8_t buf[4] = {0x82, 0x00};
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_err_t err;
  clear_err(&err);
  CU_ASSERT_EQUAL(iso_tlv_next(NULL, &t, &err), ISO_E_INVAL);
  CU_ASSERT_EQUAL(err.code, ISO_E_INVAL);
  iso_tlv_begin(&it, buf, 2);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, NULL, NULL), ISO_E_INVAL);
  iso_tlv_begin(&it, NULL, 2);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, NULL), ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_tlv_validate(NULL, 2, 3, NULL), ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_tlv_find(buf, 2, 0x82, NULL), ISO_E_INVAL);
}

static void test_tlv_functions_accept_null_err(void) {
  uint8_t buf[8];
  size_t n = unhex("9F26 08 11", buf, sizeof buf);
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, buf, n);
  CU_ASSERT_EQUAL(iso_tlv_next(&it, &t, NULL), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 2, NULL), ISO_E_TLV_LENGTH);
}

static void test_tlv_validate_reports_nested_error_at_outer_offset(void) {
  uint8_t buf[32];
  iso_err_t err;
  /* The second child of BF0C claims 3 bytes but BF0C's value ends after
   * 2, although the buffer itself has bytes to spare. */
  size_t n = unhex("9F2701 80  BF0C 0A 9F4D020B0A 5F2D03656E  9F3602 0012", buf,
                   sizeof buf);
  clear_err(&err);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 2, &err), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.subfield, 2);
  CU_ASSERT_EQUAL(err.offset, 14);
  CU_ASSERT_EQUAL(err.expected, 3);
  CU_ASSERT_EQUAL(err.available, 2);
  /* The iterator does not descend, so it sees three good objects. */
  iso_tlv_iter_t it;
  iso_tlv_t t;
  int count = 0;
  iso_tlv_begin(&it, buf, n);
  while (iso_tlv_next(&it, &t, NULL) == 1)
    count++;
  CU_ASSERT_EQUAL(count, 3);
}

static void test_tlv_validate_reports_bad_tag_inside_template(void) {
  uint8_t buf[16];
  iso_err_t err;
  size_t n = unhex("70 06 9F 80 01 01 AA 00", buf, sizeof buf);
  clear_err(&err);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 2, &err), ISO_E_TLV_TAG);
  CU_ASSERT_EQUAL(err.offset, 3);
  CU_ASSERT_EQUAL(err.subfield, 1);
}

/* levels 70 templates (short-form lengths, so levels <= 61) around one
 * primitive 9F36 object. */
static size_t nest(int levels, uint8_t *out, size_t cap) {
  size_t n = 5;
  CU_ASSERT_FATAL(cap >= 5 + 2 * (size_t)levels);
  size_t start = 2 * (size_t)levels;
  memcpy(out + start, "\x9F\x36\x02\x00\x12", 5);
  for (int i = 0; i < levels; i++) {
    start -= 2;
    out[start] = 0x70;
    out[start + 1] = (uint8_t)n;
    n += 2;
  }
  return n;
}

static void test_tlv_validate_enforces_depth_limit(void) {
  uint8_t buf[64];
  iso_err_t err;
  size_t n = nest(3, buf, sizeof buf); /* 9F36 at depth 3 */
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 3, &err), 0);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 4, &err), 0);
  clear_err(&err);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 2, &err), ISO_E_TLV_DEPTH);
  CU_ASSERT_EQUAL(err.code, ISO_E_TLV_DEPTH);
  CU_ASSERT_EQUAL(err.subfield, 1);
  CU_ASSERT_EQUAL(err.offset, 6);
  CU_ASSERT_EQUAL(err.expected, 2);
  CU_ASSERT_EQUAL(err.available, 3);
  clear_err(&err);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 0, &err), ISO_E_TLV_DEPTH);
  CU_ASSERT_EQUAL(err.offset, 2);
}

static void test_tlv_validate_depth_zero_allows_empty_templates(void) {
  uint8_t buf[16];
  size_t n = unhex("70 00 BF0C 02 0000 9F36 02 0012", buf, sizeof buf);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 0, NULL), 0);
}

static void test_tlv_validate_caps_depth_on_hostile_nesting(void) {
  /* 60 levels: more than any max_depth is allowed to reach, so even an
   * "unlimited" caller gets a depth error, not a deep walk. */
  uint8_t buf[256];
  size_t n = nest(60, buf, sizeof buf);
  iso_err_t err;
  clear_err(&err);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, INT_MAX, &err), ISO_E_TLV_DEPTH);
  CU_ASSERT(err.expected < 60);
  CU_ASSERT_EQUAL(err.available, err.expected + 1);
}

static void test_tlv_validate_rejects_negative_depth(void) {
  uint8_t buf[2] = {0x82, 0x00};
  iso_err_t err;
  clear_err(&err);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, 2, -1, &err), ISO_E_INVAL);
  CU_ASSERT_EQUAL(err.code, ISO_E_INVAL);
}

static void test_tlv_validate_walks_siblings_after_nested_template(void) {
  uint8_t buf[32];
  iso_err_t err;
  /* 70 { 71 { 9F36 } } then a bad top-level 3rd object. */
  size_t n =
      unhex("70 07 71 05 9F3602 0012  8202 1980  9F26 08 11", buf, sizeof buf);
  clear_err(&err);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, n, 2, &err), ISO_E_TLV_LENGTH);
  CU_ASSERT_EQUAL(err.subfield, 3);
  CU_ASSERT_EQUAL(err.offset, 15);
  CU_ASSERT_EQUAL(iso_tlv_validate(buf, 13, 2, &err), 0);
}

static void test_tlv_find_returns_first_top_level_match(void) {
  uint8_t buf[32];
  size_t n = unhex("9F3602 0012  9F3602 0034", buf, sizeof buf);
  iso_tlv_t t;
  CU_ASSERT_EQUAL(iso_tlv_find(buf, n, 0x9F36, &t), 1);
  CU_ASSERT_EQUAL(t.off, 0);
  CU_ASSERT_EQUAL(t.value[1], 0x12);
}

static void test_tlv_find_locates_each_de55_tag(void) {
  uint8_t buf[256];
  size_t n = unhex(de55_hex, buf, sizeof buf);
  for (size_t i = 0; i < sizeof de55_tags / sizeof de55_tags[0]; i++) {
    iso_tlv_t t;
    int rc = iso_tlv_find(buf, n, de55_tags[i], &t);
    if (de55_tags[i] == 0x9F4D || de55_tags[i] == 0x5F2D) {
      /* Children of BF0C: not at the top level. */
      CU_ASSERT_EQUAL(rc, 0);
    } else {
      CU_ASSERT_EQUAL(rc, 1);
      CU_ASSERT_EQUAL(t.tag, de55_tags[i]);
    }
  }
  iso_tlv_t bf0c, child;
  CU_ASSERT_EQUAL_FATAL(iso_tlv_find(buf, n, 0xBF0C, &bf0c), 1);
  CU_ASSERT_EQUAL(iso_tlv_find(bf0c.value, bf0c.len, 0x5F2D, &child), 1);
  CU_ASSERT_EQUAL(child.len, 2);
  CU_ASSERT_EQUAL(memcmp(child.value, "en", 2), 0);
}

static void test_tlv_find_reports_malformed_data_before_match(void) {
  uint8_t buf[16];
  size_t n = unhex("9F26 85 00  9F3602 0012", buf, sizeof buf);
  iso_tlv_t t;
  CU_ASSERT_EQUAL(iso_tlv_find(buf, n, 0x9F36, &t), ISO_E_TLV_LENGTH);
}

static void check_encode(uint32_t tag, size_t len, const char *head_hex) {
  static uint8_t value[70000];
  static uint8_t out[70016];
  uint8_t head[16];
  size_t hn = unhex(head_hex, head, sizeof head);
  size_t outlen = 0;
  memset(value, 0xC3, len);
  CU_ASSERT_EQUAL_FATAL(
      iso_tlv_encode(tag, value, len, out, sizeof out, &outlen), 0);
  CU_ASSERT_EQUAL(outlen, hn + len);
  CU_ASSERT_EQUAL(memcmp(out, head, hn), 0);
  CU_ASSERT_EQUAL(memcmp(out + hn, value, len), 0);
  /* And it reads back as written. */
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, out, outlen);
  CU_ASSERT_EQUAL_FATAL(iso_tlv_next(&it, &t, NULL), 1);
  CU_ASSERT_EQUAL(t.tag, tag);
  CU_ASSERT_EQUAL(t.len, len);
  CU_ASSERT_EQUAL(t.tag_len + t.len_len, hn);
}

static void test_tlv_encode_writes_minimal_length_forms(void) {
  check_encode(0x9F36, 0, "9F36 00");
  check_encode(0x9F36, 127, "9F36 7F");
  check_encode(0x9F36, 128, "9F36 81 80");
  check_encode(0x9F36, 255, "9F36 81 FF");
  check_encode(0x9F36, 256, "9F36 82 0100");
  check_encode(0x9F36, 65535, "9F36 82 FFFF");
  check_encode(0x9F36, 65536, "9F36 83 010000");
  check_encode(0x82, 2, "82 02");
  check_encode(0xDF8116, 22, "DF8116 16");
  check_encode(0xDF818101u, 1, "DF818101 01");
  check_encode(0xBF0C, 10, "BF0C 0A");
}

static void test_tlv_encode_round_trips_de55(void) {
  uint8_t buf[256], out[256] = {0};
  size_t n = unhex(de55_hex, buf, sizeof buf);
  size_t used = 0;
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_tlv_begin(&it, buf, n);
  while (iso_tlv_next(&it, &t, NULL) == 1) {
    size_t w = 0;
    CU_ASSERT_EQUAL_FATAL(iso_tlv_encode(t.tag, t.value, t.len, out + used,
                                         sizeof out - used, &w),
                          0);
    CU_ASSERT_EQUAL(w, t.tag_len + t.len_len + t.len);
    used += w;
  }
  CU_ASSERT_EQUAL(used, n);
  CU_ASSERT_EQUAL(memcmp(out, buf, n), 0);
}

static void test_tlv_encode_shortens_non_minimal_length(void) {
  uint8_t buf[8], out[8];
  size_t n = unhex("9F36 81 02 0012", buf, sizeof buf);
  iso_tlv_t t;
  size_t w = 0;
  CU_ASSERT_EQUAL_FATAL(iso_tlv_find(buf, n, 0x9F36, &t), 1);
  CU_ASSERT_EQUAL(iso_tlv_encode(t.tag, t.value, t.len, out, sizeof out, &w),
                  0);
  CU_ASSERT_EQUAL(w, 5);
  CU_ASSERT_EQUAL(memcmp(out, "\x9F\x36\x02\x00\x12", 5), 0);
}

static void test_tlv_encode_rejects_malformed_tags(void) {
  static const uint32_t bad[] = {
      0x00,       /* reads as padding */
      0x1F,       /* says more bytes follow, has none */
      0x9F,       /* likewise */
      0x5A01,     /* first byte does not announce a second */
      0x9F81,     /* last byte says another follows */
      0x9F8001,   /* leading zero group */
      0xDF0101,   /* second byte ends the tag, third is extra */
      0xDF818181, /* would need a fifth byte */
  };
  uint8_t out[16];
  size_t w = 99;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_EQUAL(iso_tlv_encode(bad[i], NULL, 0, out, sizeof out, &w),
                    ISO_E_TLV_TAG);
  }
  CU_ASSERT_EQUAL(w, 99);
}

static void test_tlv_encode_reports_nospace(void) {
  uint8_t value[4] = {1, 2, 3, 4};
  uint8_t out[8];
  size_t w = 99;
  memset(out, 0xEE, sizeof out);
  CU_ASSERT_EQUAL(iso_tlv_encode(0x9F37, value, 4, out, 6, &w), ISO_E_NOSPACE);
  CU_ASSERT_EQUAL(w, 99);
  CU_ASSERT_EQUAL(out[0], 0xEE);
  CU_ASSERT_EQUAL(iso_tlv_encode(0x9F37, value, 4, out, 2, &w), ISO_E_NOSPACE);
  CU_ASSERT_EQUAL(iso_tlv_encode(0x9F37, value, 4, NULL, 0, &w), ISO_E_NOSPACE);
  CU_ASSERT_EQUAL(iso_tlv_encode(0x9F37, value, 4, out, 7, &w), 0);
  CU_ASSERT_EQUAL(w, 7);
}

static void test_tlv_encode_accepts_empty_value_without_pointer(void) {
  uint8_t out[4];
  size_t w = 0;
  CU_ASSERT_EQUAL(iso_tlv_encode(0x9F10, NULL, 0, out, sizeof out, &w), 0);
  CU_ASSERT_EQUAL(w, 3);
  CU_ASSERT_EQUAL(out[2], 0x00);
  CU_ASSERT_EQUAL(iso_tlv_encode(0x9F10, NULL, 1, out, sizeof out, &w),
                  ISO_E_INVAL);
}

static void test_tlv_encode_wraps_value_already_in_output(void) {
  uint8_t out[16];
  size_t w = 0;
  memcpy(out, "\x9F\x36\x02\x00\x12", 5);
  /* Wrap the object just built into a 70 template, in place. */
  CU_ASSERT_EQUAL(iso_tlv_encode(0x70, out, 5, out, sizeof out, &w), 0);
  CU_ASSERT_EQUAL(w, 7);
  CU_ASSERT_EQUAL(memcmp(out, "\x70\x05\x9F\x36\x02\x00\x12", 7), 0);
}

int main(void) {
  static const tu_test_t tests[] = {
      {"test_tlv_reads_one_byte_tag_with_short_length",
       test_tlv_reads_one_byte_tag_with_short_length},
      {"test_tlv_reads_two_byte_tags_9f26_and_5f2a",
       test_tlv_reads_two_byte_tags_9f26_and_5f2a},
      {"test_tlv_reads_low_tag_number_in_long_form_9f02",
       test_tlv_reads_low_tag_number_in_long_form_9f02},
      {"test_tlv_reads_three_byte_tag_df8116",
       test_tlv_reads_three_byte_tag_df8116},
      {"test_tlv_reads_four_byte_tag", test_tlv_reads_four_byte_tag},
      {"test_tlv_rejects_five_byte_tag", test_tlv_rejects_five_byte_tag},
      {"test_tlv_rejects_0x80_as_first_subsequent_tag_byte",
       test_tlv_rejects_0x80_as_first_subsequent_tag_byte},
      {"test_tlv_rejects_tag_cut_short", test_tlv_rejects_tag_cut_short},
      {"test_tlv_reads_long_form_length_81",
       test_tlv_reads_long_form_length_81},
      {"test_tlv_reads_long_form_length_82",
       test_tlv_reads_long_form_length_82},
      {"test_tlv_reads_long_form_length_83",
       test_tlv_reads_long_form_length_83},
      {"test_tlv_reads_long_form_length_84",
       test_tlv_reads_long_form_length_84},
      {"test_tlv_reports_84_length_beyond_buffer",
       test_tlv_reports_84_length_beyond_buffer},
      {"test_tlv_accepts_non_minimal_long_form_length",
       test_tlv_accepts_non_minimal_long_form_length},
      {"test_tlv_rejects_indefinite_length",
       test_tlv_rejects_indefinite_length},
      {"test_tlv_rejects_length_of_more_than_four_bytes",
       test_tlv_rejects_length_of_more_than_four_bytes},
      {"test_tlv_rejects_long_form_length_cut_short",
       test_tlv_rejects_long_form_length_cut_short},
      {"test_tlv_rejects_tag_without_length",
       test_tlv_rejects_tag_without_length},
      {"test_tlv_reports_value_running_past_end",
       test_tlv_reports_value_running_past_end},
      {"test_tlv_iterator_repeats_error_without_advancing",
       test_tlv_iterator_repeats_error_without_advancing},
      {"test_tlv_iterates_de55_in_order", test_tlv_iterates_de55_in_order},
      {"test_tlv_reports_every_truncation_point_of_de55",
       test_tlv_reports_every_truncation_point_of_de55},
      {"test_tlv_skips_zero_padding_between_objects",
       test_tlv_skips_zero_padding_between_objects},
      {"test_tlv_buffer_of_padding_holds_no_object",
       test_tlv_buffer_of_padding_holds_no_object},
      {"test_tlv_empty_buffer_holds_no_object",
       test_tlv_empty_buffer_holds_no_object},
      {"test_tlv_marks_constructed_from_bit_six_of_first_byte",
       test_tlv_marks_constructed_from_bit_six_of_first_byte},
      {"test_tlv_rejects_null_arguments", test_tlv_rejects_null_arguments},
      {"test_tlv_functions_accept_null_err",
       test_tlv_functions_accept_null_err},
      {"test_tlv_validate_reports_nested_error_at_outer_offset",
       test_tlv_validate_reports_nested_error_at_outer_offset},
      {"test_tlv_validate_reports_bad_tag_inside_template",
       test_tlv_validate_reports_bad_tag_inside_template},
      {"test_tlv_validate_enforces_depth_limit",
       test_tlv_validate_enforces_depth_limit},
      {"test_tlv_validate_depth_zero_allows_empty_templates",
       test_tlv_validate_depth_zero_allows_empty_templates},
      {"test_tlv_validate_caps_depth_on_hostile_nesting",
       test_tlv_validate_caps_depth_on_hostile_nesting},
      {"test_tlv_validate_rejects_negative_depth",
       test_tlv_validate_rejects_negative_depth},
      {"test_tlv_validate_walks_siblings_after_nested_template",
       test_tlv_validate_walks_siblings_after_nested_template},
      {"test_tlv_find_returns_first_top_level_match",
       test_tlv_find_returns_first_top_level_match},
      {"test_tlv_find_locates_each_de55_tag",
       test_tlv_find_locates_each_de55_tag},
      {"test_tlv_find_reports_malformed_data_before_match",
       test_tlv_find_reports_malformed_data_before_match},
      {"test_tlv_encode_writes_minimal_length_forms",
       test_tlv_encode_writes_minimal_length_forms},
      {"test_tlv_encode_round_trips_de55", test_tlv_encode_round_trips_de55},
      {"test_tlv_encode_shortens_non_minimal_length",
       test_tlv_encode_shortens_non_minimal_length},
      {"test_tlv_encode_rejects_malformed_tags",
       test_tlv_encode_rejects_malformed_tags},
      {"test_tlv_encode_reports_nospace", test_tlv_encode_reports_nospace},
      {"test_tlv_encode_accepts_empty_value_without_pointer",
       test_tlv_encode_accepts_empty_value_without_pointer},
      {"test_tlv_encode_wraps_value_already_in_output",
       test_tlv_encode_wraps_value_already_in_output},
      {NULL, NULL}};

  tu_init();
  tu_add_suite("iso8583_tlv", tests);
  return tu_run();
}
