/*
 * test_frame.c — the stream framer and header writer: each length type,
 * TPDU headers, lengths that count themselves, partial and batched input,
 * early rejection of bad lengths, sticky errors, buffer compaction, and
 * golden header bytes.
 */
#include "iso8583.h"
#include "testutil.h"

#include <stdint.h>
#include <string.h>

static iso_framing_t framing(iso_frame_len_t type, int self,
                             uint16_t header_len, uint32_t max_msg) {
  iso_framing_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.len_type = (uint8_t)type;
  cfg.len_includes_self = (uint8_t)self;
  cfg.header_len = header_len;
  cfg.max_msg = max_msg;
  return cfg;
}

static size_t unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = tu_unhex(hex, out, cap);
  CU_ASSERT_FATAL(n != (size_t)-1);
  return n;
}

/* Feeds all of data, which must fit. */
static void feed_all(iso_framer_t *f, const uint8_t *data, size_t len) {
  size_t used = 0;
  CU_ASSERT_EQUAL_FATAL(iso_framer_feed(f, data, len, &used), 0);
  CU_ASSERT_EQUAL_FATAL(used, len);
}

static void feed_hex(iso_framer_t *f, const char *hex) {
  uint8_t tmp[512];
  feed_all(f, tmp, unhex(hex, tmp, sizeof tmp));
}

/* Expects one whole frame with this message (and header, if any). */
static void expect_frame(iso_framer_t *f, const char *hdr_hex,
                         const char *msg_hex) {
  uint8_t hdr[16], msg[512];
  size_t hn = hdr_hex ? unhex(hdr_hex, hdr, sizeof hdr) : 0;
  size_t mn = unhex(msg_hex, msg, sizeof msg);
  iso_frame_t fr;
  iso_err_t err;
  CU_ASSERT_EQUAL_FATAL(iso_framer_next(f, &fr, &err), 1);
  CU_ASSERT_EQUAL(fr.header_len, hn);
  if (hn) {
    CU_ASSERT_PTR_NOT_NULL(fr.header);
    CU_ASSERT(fr.header && memcmp(fr.header, hdr, hn) == 0);
  } else {
    CU_ASSERT_PTR_NULL(fr.header);
  }
  CU_ASSERT_EQUAL_FATAL(fr.msg_len, mn);
  CU_ASSERT_EQUAL(memcmp(fr.msg, msg, mn), 0);
  CU_ASSERT(fr.msg >= f->buf && fr.msg + fr.msg_len <= f->buf + f->cap);
}

static void expect_none(iso_framer_t *f) {
  iso_frame_t fr;
  CU_ASSERT_EQUAL(iso_framer_next(f, &fr, NULL), 0);
}

/* Expects next() to fail with code at offset, then the framer to be dead. */
static iso_err_t expect_error(iso_framer_t *f, int code, size_t offset) {
  iso_frame_t fr;
  iso_err_t err;
  memset(&err, 0x5A, sizeof err);
  CU_ASSERT_EQUAL(iso_framer_next(f, &fr, &err), code);
  CU_ASSERT_EQUAL(err.code, code);
  CU_ASSERT_EQUAL(err.field, 0);
  CU_ASSERT_EQUAL(err.subfield, 0);
  CU_ASSERT_EQUAL(err.offset, offset);
  CU_ASSERT_EQUAL(f->error, code);
  return err;
}

static void test_frame_prefix_len_matches_each_length_type(void) {
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 100);
  CU_ASSERT_EQUAL(iso_frame_prefix_len(&cfg), 2);
  cfg.len_type = ISO_FRAME_BCD2;
  CU_ASSERT_EQUAL(iso_frame_prefix_len(&cfg), 2);
  cfg.len_type = ISO_FRAME_ASCII4;
  CU_ASSERT_EQUAL(iso_frame_prefix_len(&cfg), 4);
  cfg.len_type = ISO_FRAME_BIN4;
  CU_ASSERT_EQUAL(iso_frame_prefix_len(&cfg), 4);
  cfg.len_type = 9;
  CU_ASSERT_EQUAL(iso_frame_prefix_len(&cfg), 0);
  CU_ASSERT_EQUAL(iso_frame_prefix_len(NULL), 0);
}

static void test_framer_init_rejects_buffer_smaller_than_largest_frame(void) {
  uint8_t buf[107];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 5, 100);
  CU_ASSERT_EQUAL(iso_framer_init(&f, &cfg, buf, 106), ISO_E_INVAL);
  /* A framer whose init failed refuses work instead of misbehaving. */
  size_t used = 99;
  CU_ASSERT_EQUAL(iso_framer_feed(&f, buf, 1, &used), ISO_E_FRAME_FAILED);
  CU_ASSERT_EQUAL(used, 0);
  CU_ASSERT_EQUAL(iso_framer_init(&f, &cfg, buf, 107), 0);
  CU_ASSERT_EQUAL(f.error, 0);
  CU_ASSERT_EQUAL(f.head, 0);
  CU_ASSERT_EQUAL(f.tail, 0);
}

static void test_framer_init_rejects_bad_configuration(void) {
  uint8_t buf[64];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN4, 0, 0, 16);
  CU_ASSERT_EQUAL(iso_framer_init(NULL, &cfg, buf, sizeof buf), ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_framer_init(&f, NULL, buf, sizeof buf), ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_framer_init(&f, &cfg, NULL, sizeof buf), ISO_E_INVAL);
  cfg.len_type = 4;
  CU_ASSERT_EQUAL(iso_framer_init(&f, &cfg, buf, sizeof buf), ISO_E_INVAL);
  cfg = framing(ISO_FRAME_BIN4, 0, 0, 0);
  CU_ASSERT_EQUAL(iso_framer_init(&f, &cfg, buf, sizeof buf), ISO_E_INVAL);
}

static void test_framer_reads_bin2_length(void) {
  uint8_t buf[2 + 300];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 300);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "0005 3032303030");
  expect_frame(&f, NULL, "3032303030");
  expect_none(&f);
  /* 0x0100 = 256: both bytes count. */
  uint8_t big[2 + 256];
  memset(big, 0x41, sizeof big);
  big[0] = 0x01;
  big[1] = 0x00;
  feed_all(&f, big, sizeof big);
  iso_frame_t fr;
  CU_ASSERT_EQUAL_FATAL(iso_framer_next(&f, &fr, NULL), 1);
  CU_ASSERT_EQUAL(fr.msg_len, 256);
  CU_ASSERT_PTR_EQUAL(fr.msg, buf + 2);
}

static void test_framer_reads_bcd2_length(void) {
  uint8_t buf[2 + 2000];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BCD2, 0, 0, 2000);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "0012 000102030405060708090A0B");
  expect_frame(&f, NULL, "000102030405060708090A0B");
  /* 0x1234 in BCD is 1234, not 4660. */
  uint8_t big[2 + 1234];
  memset(big, 0x42, sizeof big);
  big[0] = 0x12;
  big[1] = 0x34;
  feed_all(&f, big, sizeof big);
  iso_frame_t fr;
  CU_ASSERT_EQUAL_FATAL(iso_framer_next(&f, &fr, NULL), 1);
  CU_ASSERT_EQUAL(fr.msg_len, 1234);
}

static void test_framer_reads_ascii4_length(void) {
  uint8_t buf[4 + 64];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_ASCII4, 0, 0, 64);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "30303132 000102030405060708090A0B");
  expect_frame(&f, NULL, "000102030405060708090A0B");
  expect_none(&f);
}

static void test_framer_reads_bin4_length(void) {
  uint8_t buf[4 + 70000];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN4, 0, 0, 70000);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  static uint8_t big[4 + 70000];
  memset(big, 0x43, sizeof big);
  /* 70000 = 0x00011170 */
  memcpy(big, "\x00\x01\x11\x70", 4);
  feed_all(&f, big, sizeof big);
  iso_frame_t fr;
  CU_ASSERT_EQUAL_FATAL(iso_framer_next(&f, &fr, NULL), 1);
  CU_ASSERT_EQUAL(fr.msg_len, 70000);
  CU_ASSERT_PTR_EQUAL(fr.msg, buf + 4);
  expect_none(&f);
}

static void test_framer_splits_tpdu_header(void) {
  uint8_t buf[2 + 5 + 64];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 5, 64);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "000A 6000030000 0200AABBCC");
  expect_frame(&f, "6000030000", "0200AABBCC");
  expect_none(&f);
}

static void test_framer_length_includes_self(void) {
  uint8_t buf[4 + 5 + 64];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 1, 0, 64);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "0007 0102030405");
  expect_frame(&f, NULL, "0102030405");
  /* ASCII4 counting itself and a TPDU: 4 + 5 + 5 = 14. */
  cfg = framing(ISO_FRAME_ASCII4, 1, 5, 64);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "30303134 6000030000 0102030405");
  expect_frame(&f, "6000030000", "0102030405");
  expect_none(&f);
}

static const char three_frames_hex[] = "0003 616263"
                                       "0001 7A"
                                       "0006 303132333435";

static void test_framer_waits_for_whole_frame_fed_byte_at_a_time(void) {
  uint8_t buf[2 + 8];
  uint8_t in[32];
  size_t n = unhex(three_frames_hex, in, sizeof in);
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 8);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  /* Frames complete after the last byte of each: offsets 4, 7, 15. */
  static const char *const msgs[] = {"616263", "7A", "303132333435"};
  static const size_t ends[] = {5, 8, 16};
  int got = 0;
  for (size_t i = 0; i < n; i++) {
    feed_all(&f, in + i, 1);
    if (got < 3 && i + 1 == ends[got]) {
      expect_frame(&f, NULL, msgs[got]);
      got++;
    }
    expect_none(&f);
  }
  CU_ASSERT_EQUAL(got, 3);
  CU_ASSERT_EQUAL(f.head, f.tail);
}

static void test_framer_returns_several_frames_from_one_feed(void) {
  uint8_t buf[64];
  uint8_t in[32];
  size_t n = unhex(three_frames_hex, in, sizeof in);
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 8);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_all(&f, in, n);
  expect_frame(&f, NULL, "616263");
  expect_frame(&f, NULL, "7A");
  expect_frame(&f, NULL, "303132333435");
  expect_none(&f);
}

static void test_framer_rejects_oversize_before_body_arrives(void) {
  uint8_t buf[2 + 5 + 100];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 5, 100);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "00");
  expect_none(&f);
  /* 0x6A = 106 = 5 bytes of TPDU + 101 of message; nothing else sent. */
  feed_hex(&f, "6A");
  iso_err_t err = expect_error(&f, ISO_E_FRAME_TOO_LARGE, 0);
  CU_ASSERT_EQUAL(err.expected, 100);
  CU_ASSERT_EQUAL(err.available, 101);
}

static void test_framer_rejects_bin4_length_far_beyond_max(void) {
  uint8_t buf[4 + 4096];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN4, 0, 0, 4096);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "FFFFFFFF");
  iso_err_t err = expect_error(&f, ISO_E_FRAME_TOO_LARGE, 0);
  CU_ASSERT_EQUAL(err.available, 0xFFFFFFFFu);
}

static void test_framer_accepts_message_of_exactly_max(void) {
  uint8_t buf[2 + 5 + 100];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 5, 100);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  uint8_t in[sizeof buf];
  memset(in, 0x44, sizeof in);
  in[0] = 0x00;
  in[1] = 105;
  feed_all(&f, in, sizeof in);
  iso_frame_t fr;
  CU_ASSERT_EQUAL_FATAL(iso_framer_next(&f, &fr, NULL), 1);
  CU_ASSERT_EQUAL(fr.header_len, 5);
  CU_ASSERT_EQUAL(fr.msg_len, 100);
  CU_ASSERT_PTR_EQUAL(fr.msg + fr.msg_len, buf + sizeof buf);
}

static void test_framer_rejects_zero_length_message(void) {
  uint8_t buf[2 + 5 + 16];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 16);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "0000");
  iso_err_t err = expect_error(&f, ISO_E_FRAME_LENGTH, 0);
  CU_ASSERT_EQUAL(err.expected, 1);
  CU_ASSERT_EQUAL(err.available, 0);
  /* With a TPDU, a length of exactly the TPDU leaves no message. */
  cfg = framing(ISO_FRAME_BIN2, 0, 5, 16);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "0005 6000030000");
  err = expect_error(&f, ISO_E_FRAME_LENGTH, 0);
  CU_ASSERT_EQUAL(err.expected, 6);
  CU_ASSERT_EQUAL(err.available, 5);
}

static void test_framer_rejects_length_shorter_than_header(void) {
  uint8_t buf[4 + 5 + 16];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_ASCII4, 0, 5, 16);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "30303033");
  iso_err_t err = expect_error(&f, ISO_E_FRAME_LENGTH, 0);
  CU_ASSERT_EQUAL(err.expected, 6);
  CU_ASSERT_EQUAL(err.available, 3);
}

static void test_framer_rejects_self_length_shorter_than_prefix(void) {
  uint8_t buf[2 + 16];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 1, 0, 16);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "0001");
  iso_err_t err = expect_error(&f, ISO_E_FRAME_LENGTH, 0);
  CU_ASSERT_EQUAL(err.expected, 3);
  CU_ASSERT_EQUAL(err.available, 1);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "0002");
  expect_error(&f, ISO_E_FRAME_LENGTH, 0);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "0003 99");
  expect_frame(&f, NULL, "99");
}

static void test_framer_rejects_bcd_length_with_bad_nibble(void) {
  static const char *const bad[] = {"0A12", "001A", "F010", "00F0"};
  static const size_t at[] = {0, 1, 0, 1};
  uint8_t buf[2 + 99];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BCD2, 0, 0, 99);
  for (size_t i = 0; i < 4; i++) {
    CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
    feed_hex(&f, bad[i]);
    expect_error(&f, ISO_E_FRAME_LENGTH, at[i]);
  }
  /* After a good frame the offset still points at the bad byte in buf. */
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "0002 0200  001B");
  expect_frame(&f, NULL, "0200");
  expect_error(&f, ISO_E_FRAME_LENGTH, 5);
  CU_ASSERT_EQUAL(buf[5], 0x1B);
}

static void test_framer_rejects_ascii_length_with_non_digit(void) {
  static const char *const bad[] = {"30303120", "2B303132", "30306131",
                                    "3030313A"};
  static const size_t at[] = {3, 0, 2, 3};
  uint8_t buf[4 + 99];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_ASCII4, 0, 0, 99);
  for (size_t i = 0; i < 4; i++) {
    CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
    feed_hex(&f, bad[i]);
    expect_error(&f, ISO_E_FRAME_LENGTH, at[i]);
  }
}

static void test_framer_errors_are_sticky(void) {
  uint8_t buf[2 + 16];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 16);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "0011");
  expect_error(&f, ISO_E_FRAME_TOO_LARGE, 0);

  iso_frame_t fr;
  iso_err_t err;
  memset(&err, 0, sizeof err);
  CU_ASSERT_EQUAL(iso_framer_next(&f, &fr, &err), ISO_E_FRAME_FAILED);
  CU_ASSERT_EQUAL(err.code, ISO_E_FRAME_FAILED);
  CU_ASSERT_EQUAL(iso_framer_next(&f, &fr, NULL), ISO_E_FRAME_FAILED);
  size_t used = 99;
  uint8_t good[3] = {0x00, 0x01, 0x41};
  CU_ASSERT_EQUAL(iso_framer_feed(&f, good, 3, &used), ISO_E_FRAME_FAILED);
  CU_ASSERT_EQUAL(used, 0);
  uint8_t *p = buf;
  size_t avail = 99;
  CU_ASSERT_EQUAL(iso_framer_space(&f, &p, &avail), ISO_E_FRAME_FAILED);
  CU_ASSERT_PTR_NULL(p);
  CU_ASSERT_EQUAL(avail, 0);
  CU_ASSERT_EQUAL(iso_framer_commit(&f, 1), ISO_E_FRAME_FAILED);
  /* The first error is kept for the operator. */
  CU_ASSERT_EQUAL(f.error, ISO_E_FRAME_TOO_LARGE);
}

/* Writes hex at the framer's space and commits it. */
static void read_hex(iso_framer_t *f, const char *hex) {
  uint8_t *p;
  size_t avail;
  CU_ASSERT_EQUAL_FATAL(iso_framer_space(f, &p, &avail), 0);
  size_t n = unhex(hex, p, avail);
  CU_ASSERT_EQUAL_FATAL(iso_framer_commit(f, n), 0);
}

static void test_framer_space_does_not_move_bytes_while_frame_fits(void) {
  uint8_t buf[40];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 20);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  read_hex(&f, "0005 4142434445  0005 61");
  expect_frame(&f, NULL, "4142434445");
  uint8_t *p;
  size_t avail;
  CU_ASSERT_EQUAL_FATAL(iso_framer_space(&f, &p, &avail), 0);
  /* The second frame (7 bytes at offset 7) ends well before cap. */
  CU_ASSERT_PTR_EQUAL(p, buf + 10);
  CU_ASSERT_EQUAL(avail, 30);
  CU_ASSERT_EQUAL(f.head, 7);
  CU_ASSERT_EQUAL(buf[0], 0x00);
  CU_ASSERT_EQUAL(buf[2], 0x41);
  read_hex(&f, "62636465");
  expect_frame(&f, NULL, "6162636465");
  CU_ASSERT_EQUAL(f.head, 0);
  CU_ASSERT_EQUAL(f.tail, 0);
}

static void test_framer_space_compacts_when_frame_would_not_fit(void) {
  uint8_t buf[2 + 20];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 20);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  /* 17-byte frame, then 3 bytes of a 12-byte one: 17 + 12 > 22. */
  read_hex(&f, "000F 000102030405060708090A0B0C0D0E  000A 61");
  expect_frame(&f, NULL, "000102030405060708090A0B0C0D0E");
  uint8_t *p;
  size_t avail;
  CU_ASSERT_EQUAL_FATAL(iso_framer_space(&f, &p, &avail), 0);
  CU_ASSERT_PTR_EQUAL(p, buf + 3);
  CU_ASSERT_EQUAL(avail, 19);
  CU_ASSERT_EQUAL(memcmp(buf, "\x00\x0A\x61", 3), 0);
  read_hex(&f, "62636465666768696A");
  iso_frame_t fr;
  CU_ASSERT_EQUAL_FATAL(iso_framer_next(&f, &fr, NULL), 1);
  CU_ASSERT_PTR_EQUAL(fr.msg, buf + 2);
  CU_ASSERT_EQUAL(memcmp(fr.msg, "abcdefghij", 10), 0);
}

/* The frame at head ends exactly at cap: no move.  One byte more: move. */
static void test_framer_space_compacts_only_past_exact_fit(void) {
  uint8_t buf[2 + 7 + 1];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 7);
  uint8_t *p;
  size_t avail;
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  read_hex(&f, "0001 41  0005 414243");
  expect_frame(&f, NULL, "41");
  CU_ASSERT_EQUAL_FATAL(iso_framer_space(&f, &p, &avail), 0);
  CU_ASSERT_PTR_EQUAL(p, buf + 8);
  CU_ASSERT_EQUAL(avail, 2);

  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf - 1), 0);
  read_hex(&f, "0001 41  0005 414243");
  expect_frame(&f, NULL, "41");
  CU_ASSERT_EQUAL_FATAL(iso_framer_space(&f, &p, &avail), 0);
  CU_ASSERT_PTR_EQUAL(p, buf + 5);
  CU_ASSERT_EQUAL(avail, 4);
  read_hex(&f, "4445");
  expect_frame(&f, NULL, "4142434445");
}

static void test_framer_space_compacts_partial_prefix(void) {
  uint8_t buf[4 + 10];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_ASCII4, 0, 0, 10);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  /* A 9-byte frame and 2 digits of the next length: its size is not known
   * yet, so the largest frame must be assumed and there is no room for it
   * after offset 9. */
  read_hex(&f, "30303035 6162636465  3030");
  expect_frame(&f, NULL, "6162636465");
  uint8_t *p;
  size_t avail;
  CU_ASSERT_EQUAL_FATAL(iso_framer_space(&f, &p, &avail), 0);
  CU_ASSERT_PTR_EQUAL(p, buf + 2);
  CU_ASSERT_EQUAL(avail, 12);
  read_hex(&f, "3130 30313233343536373839");
  expect_frame(&f, NULL, "30313233343536373839");
}

static void test_framer_space_reports_nospace_until_frames_are_taken(void) {
  uint8_t buf[2 + 20];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 20);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  read_hex(&f, "0009 414141414141414141  0009 424242424242424242");
  uint8_t *p;
  size_t avail;
  CU_ASSERT_EQUAL(iso_framer_space(&f, &p, &avail), ISO_E_NOSPACE);
  CU_ASSERT_EQUAL(f.error, 0);
  expect_frame(&f, NULL, "414141414141414141");
  CU_ASSERT_EQUAL(iso_framer_space(&f, &p, &avail), ISO_E_NOSPACE);
  expect_frame(&f, NULL, "424242424242424242");
  CU_ASSERT_EQUAL(iso_framer_space(&f, &p, &avail), 0);
  CU_ASSERT_PTR_EQUAL(p, buf);
  CU_ASSERT_EQUAL(avail, sizeof buf);
}

static void test_framer_commit_rejects_more_than_space(void) {
  uint8_t buf[2 + 8];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 8);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  CU_ASSERT_EQUAL(iso_framer_commit(&f, sizeof buf + 1), ISO_E_INVAL);
  CU_ASSERT_EQUAL(f.tail, 0);
  CU_ASSERT_EQUAL(f.error, 0);
  CU_ASSERT_EQUAL(iso_framer_commit(&f, 0), 0);
}

static void test_framer_feed_takes_only_what_fits(void) {
  uint8_t buf[2 + 8];
  uint8_t in[32];
  size_t n = unhex(three_frames_hex, in, sizeof in);
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 8);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  size_t used = 0;
  CU_ASSERT_EQUAL(iso_framer_feed(&f, in, n, &used), 0);
  CU_ASSERT_EQUAL(used, sizeof buf);
  expect_frame(&f, NULL, "616263");
  expect_frame(&f, NULL, "7A");
  expect_none(&f);
  /* Two bytes of the third frame are in; feeding moves them to the start
   * so that the rest fits. */
  size_t more = 0;
  CU_ASSERT_EQUAL(iso_framer_feed(&f, in + used, n - used, &more), 0);
  CU_ASSERT_EQUAL(used + more, n);
  expect_frame(&f, NULL, "303132333435");
}

static void test_framer_feed_reports_nospace_until_frames_are_taken(void) {
  uint8_t buf[2 + 8];
  uint8_t in[32];
  size_t n = unhex(three_frames_hex, in, sizeof in);
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 8);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  size_t used = 0;
  CU_ASSERT_EQUAL(iso_framer_feed(&f, in, 5 + 3, &used), 0);
  CU_ASSERT_EQUAL(used, 8);
  size_t more = 99;
  CU_ASSERT_EQUAL(iso_framer_feed(&f, in + 8, n - 8, &more), 0);
  CU_ASSERT_EQUAL(more, 2);
  CU_ASSERT_EQUAL(iso_framer_feed(&f, in + 10, n - 10, &more), ISO_E_NOSPACE);
  CU_ASSERT_EQUAL(more, 0);
  CU_ASSERT_EQUAL(f.error, 0);
  CU_ASSERT_EQUAL(iso_framer_feed(&f, in, 0, &more), 0);
  CU_ASSERT_EQUAL(more, 0);
}

static void test_framer_view_survives_until_next_feed(void) {
  uint8_t buf[2 + 8];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 8);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "0003 616263");
  iso_frame_t fr;
  CU_ASSERT_EQUAL_FATAL(iso_framer_next(&f, &fr, NULL), 1);
  /* The buffer is empty again, yet the bytes have not been touched. */
  CU_ASSERT_EQUAL(f.head, 0);
  CU_ASSERT_EQUAL(f.tail, 0);
  expect_none(&f);
  CU_ASSERT_EQUAL(memcmp(fr.msg, "abc", 3), 0);
}

static void test_framer_rejects_null_arguments(void) {
  uint8_t buf[2 + 8];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_BIN2, 0, 0, 8);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  iso_frame_t fr;
  iso_err_t err;
  uint8_t *p;
  size_t avail, used;
  CU_ASSERT_EQUAL(iso_framer_next(NULL, &fr, &err), ISO_E_INVAL);
  CU_ASSERT_EQUAL(err.code, ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_framer_next(&f, NULL, NULL), ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_framer_space(NULL, &p, &avail), ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_framer_space(&f, NULL, &avail), ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_framer_space(&f, &p, NULL), ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_framer_commit(NULL, 1), ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_framer_feed(NULL, buf, 1, &used), ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_framer_feed(&f, NULL, 1, &used), ISO_E_INVAL);
  /* None of these broke the framer. */
  CU_ASSERT_EQUAL(f.error, 0);
  feed_hex(&f, "0001 41");
  expect_frame(&f, NULL, "41");
}

static void test_framer_next_accepts_null_err(void) {
  uint8_t buf[4 + 8];
  iso_framer_t f;
  iso_framing_t cfg = framing(ISO_FRAME_ASCII4, 0, 0, 8);
  CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
  feed_hex(&f, "30303F30"); /* '?' is not a digit */
  iso_frame_t fr;
  CU_ASSERT_EQUAL(iso_framer_next(&f, &fr, NULL), ISO_E_FRAME_LENGTH);
  CU_ASSERT_EQUAL(iso_framer_next(&f, &fr, NULL), ISO_E_FRAME_FAILED);
}

static void check_header(iso_framing_t cfg, size_t msg_len, const char *hdr,
                         const char *want_hex) {
  uint8_t want[16], tpdu[8], out[16];
  size_t wn = unhex(want_hex, want, sizeof want);
  size_t outlen = 0;
  if (hdr)
    unhex(hdr, tpdu, sizeof tpdu);
  memset(out, 0xEE, sizeof out);
  CU_ASSERT_EQUAL_FATAL(iso_frame_write_header(&cfg, msg_len, hdr ? tpdu : NULL,
                                               out, sizeof out, &outlen),
                        0);
  CU_ASSERT_EQUAL(outlen, wn);
  CU_ASSERT_EQUAL(memcmp(out, want, wn), 0);
  CU_ASSERT_EQUAL(out[wn], 0xEE);
}

static void test_frame_write_header_golden_bytes(void) {
  check_header(framing(ISO_FRAME_BIN2, 0, 0, 9999), 300, NULL, "012C");
  check_header(framing(ISO_FRAME_BCD2, 0, 0, 9999), 1234, NULL, "1234");
  check_header(framing(ISO_FRAME_BCD2, 0, 0, 9999), 7, NULL, "0007");
  check_header(framing(ISO_FRAME_ASCII4, 0, 0, 9999), 56, NULL, "30303536");
  check_header(framing(ISO_FRAME_BIN4, 0, 0, 99999), 70000, NULL, "00011170");
  check_header(framing(ISO_FRAME_BIN2, 0, 5, 9999), 100, "6000030000",
               "0069 6000030000");
  check_header(framing(ISO_FRAME_ASCII4, 1, 0, 9999), 100, NULL, "30313034");
  check_header(framing(ISO_FRAME_BCD2, 1, 5, 9999), 10, "6000030000",
               "0017 6000030000");
  check_header(framing(ISO_FRAME_BIN4, 1, 0, 9999), 1, NULL, "00000005");
}

static void test_frame_write_header_zero_fills_missing_tpdu(void) {
  check_header(framing(ISO_FRAME_BIN2, 0, 5, 9999), 1, NULL, "0006 0000000000");
}

static void test_frame_write_header_rejects_lengths_prefix_cannot_carry(void) {
  uint8_t out[16];
  size_t w = 99;
  iso_framing_t cfg = framing(ISO_FRAME_BCD2, 0, 0, 9999);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 9999, NULL, out, 16, &w), 0);
  CU_ASSERT_EQUAL(memcmp(out, "\x99\x99", 2), 0);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 10000, NULL, out, 16, &w),
                  ISO_E_FRAME_TOO_LARGE);
  cfg = framing(ISO_FRAME_ASCII4, 0, 5, 9999);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 9994, NULL, out, 16, &w), 0);
  CU_ASSERT_EQUAL(memcmp(out, "9999", 4), 0);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 9995, NULL, out, 16, &w),
                  ISO_E_FRAME_TOO_LARGE);
  cfg = framing(ISO_FRAME_BIN2, 0, 0, 9999);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 65535, NULL, out, 16, &w), 0);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 65536, NULL, out, 16, &w),
                  ISO_E_FRAME_TOO_LARGE);
  cfg = framing(ISO_FRAME_BIN2, 1, 0, 9999);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 65533, NULL, out, 16, &w), 0);
  CU_ASSERT_EQUAL(memcmp(out, "\xFF\xFF", 2), 0);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 65534, NULL, out, 16, &w),
                  ISO_E_FRAME_TOO_LARGE);
  cfg = framing(ISO_FRAME_BIN4, 0, 0, 9999);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, SIZE_MAX, NULL, out, 16, &w),
                  ISO_E_FRAME_TOO_LARGE);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 0, NULL, out, 16, &w),
                  ISO_E_FRAME_LENGTH);
  cfg.len_type = 7;
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 1, NULL, out, 16, &w),
                  ISO_E_INVAL);
  CU_ASSERT_EQUAL(iso_frame_write_header(NULL, 1, NULL, out, 16, &w),
                  ISO_E_INVAL);
}

static void test_frame_write_header_reports_nospace(void) {
  uint8_t out[16];
  size_t w = 99;
  iso_framing_t cfg = framing(ISO_FRAME_ASCII4, 0, 5, 9999);
  memset(out, 0xEE, sizeof out);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 10, NULL, out, 8, &w),
                  ISO_E_NOSPACE);
  CU_ASSERT_EQUAL(w, 99);
  CU_ASSERT_EQUAL(out[0], 0xEE);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 10, NULL, NULL, 0, &w),
                  ISO_E_NOSPACE);
  CU_ASSERT_EQUAL(iso_frame_write_header(&cfg, 10, NULL, out, 9, &w), 0);
  CU_ASSERT_EQUAL(w, 9);
}

/* What the writer frames, the reader takes back, for every configuration
 * shape. */
static void test_frame_write_then_read_round_trips(void) {
  static const uint8_t tpdu[5] = {0x60, 0x00, 0x03, 0x00, 0x00};
  uint8_t msg[300];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)(i * 7);
  for (int type = ISO_FRAME_BIN2; type <= ISO_FRAME_BIN4; type++) {
    for (int self = 0; self <= 1; self++) {
      for (uint16_t hl = 0; hl <= 5; hl += 5) {
        iso_framing_t cfg = framing((iso_frame_len_t)type, self, hl, 300);
        uint8_t wire[4 + 5 + 300];
        size_t w = 0;
        CU_ASSERT_EQUAL_FATAL(iso_frame_write_header(&cfg, sizeof msg,
                                                     hl ? tpdu : NULL, wire,
                                                     sizeof wire, &w),
                              0);
        CU_ASSERT_EQUAL(w, iso_frame_prefix_len(&cfg) + hl);
        memcpy(wire + w, msg, sizeof msg);
        uint8_t buf[4 + 5 + 300];
        iso_framer_t f;
        CU_ASSERT_EQUAL_FATAL(iso_framer_init(&f, &cfg, buf, sizeof buf), 0);
        feed_all(&f, wire, w + sizeof msg);
        iso_frame_t fr;
        CU_ASSERT_EQUAL_FATAL(iso_framer_next(&f, &fr, NULL), 1);
        CU_ASSERT_EQUAL(fr.header_len, hl);
        if (hl)
          CU_ASSERT_EQUAL(memcmp(fr.header, tpdu, 5), 0);
        CU_ASSERT_EQUAL(fr.msg_len, sizeof msg);
        CU_ASSERT_EQUAL(memcmp(fr.msg, msg, sizeof msg), 0);
      }
    }
  }
}

static void test_tpdu_swap_exchanges_destination_and_source(void) {
  uint8_t tpdu[5] = {0x60, 0x11, 0x22, 0x33, 0x44};
  iso_tpdu_swap(tpdu);
  CU_ASSERT_EQUAL(memcmp(tpdu, "\x60\x33\x44\x11\x22", 5), 0);
  iso_tpdu_swap(tpdu);
  CU_ASSERT_EQUAL(memcmp(tpdu, "\x60\x11\x22\x33\x44", 5), 0);
}

int main(void) {
  static const tu_test_t tests[] = {
      {"test_frame_prefix_len_matches_each_length_type",
       test_frame_prefix_len_matches_each_length_type},
      {"test_framer_init_rejects_buffer_smaller_than_largest_frame",
       test_framer_init_rejects_buffer_smaller_than_largest_frame},
      {"test_framer_init_rejects_bad_configuration",
       test_framer_init_rejects_bad_configuration},
      {"test_framer_reads_bin2_length", test_framer_reads_bin2_length},
      {"test_framer_reads_bcd2_length", test_framer_reads_bcd2_length},
      {"test_framer_reads_ascii4_length", test_framer_reads_ascii4_length},
      {"test_framer_reads_bin4_length", test_framer_reads_bin4_length},
      {"test_framer_splits_tpdu_header", test_framer_splits_tpdu_header},
      {"test_framer_length_includes_self", test_framer_length_includes_self},
      {"test_framer_waits_for_whole_frame_fed_byte_at_a_time",
       test_framer_waits_for_whole_frame_fed_byte_at_a_time},
      {"test_framer_returns_several_frames_from_one_feed",
       test_framer_returns_several_frames_from_one_feed},
      {"test_framer_rejects_oversize_before_body_arrives",
       test_framer_rejects_oversize_before_body_arrives},
      {"test_framer_rejects_bin4_length_far_beyond_max",
       test_framer_rejects_bin4_length_far_beyond_max},
      {"test_framer_accepts_message_of_exactly_max",
       test_framer_accepts_message_of_exactly_max},
      {"test_framer_rejects_zero_length_message",
       test_framer_rejects_zero_length_message},
      {"test_framer_rejects_length_shorter_than_header",
       test_framer_rejects_length_shorter_than_header},
      {"test_framer_rejects_self_length_shorter_than_prefix",
       test_framer_rejects_self_length_shorter_than_prefix},
      {"test_framer_rejects_bcd_length_with_bad_nibble",
       test_framer_rejects_bcd_length_with_bad_nibble},
      {"test_framer_rejects_ascii_length_with_non_digit",
       test_framer_rejects_ascii_length_with_non_digit},
      {"test_framer_errors_are_sticky", test_framer_errors_are_sticky},
      {"test_framer_space_does_not_move_bytes_while_frame_fits",
       test_framer_space_does_not_move_bytes_while_frame_fits},
      {"test_framer_space_compacts_when_frame_would_not_fit",
       test_framer_space_compacts_when_frame_would_not_fit},
      {"test_framer_space_compacts_only_past_exact_fit",
       test_framer_space_compacts_only_past_exact_fit},
      {"test_framer_space_compacts_partial_prefix",
       test_framer_space_compacts_partial_prefix},
      {"test_framer_space_reports_nospace_until_frames_are_taken",
       test_framer_space_reports_nospace_until_frames_are_taken},
      {"test_framer_commit_rejects_more_than_space",
       test_framer_commit_rejects_more_than_space},
      {"test_framer_feed_takes_only_what_fits",
       test_framer_feed_takes_only_what_fits},
      {"test_framer_feed_reports_nospace_until_frames_are_taken",
       test_framer_feed_reports_nospace_until_frames_are_taken},
      {"test_framer_view_survives_until_next_feed",
       test_framer_view_survives_until_next_feed},
      {"test_framer_rejects_null_arguments",
       test_framer_rejects_null_arguments},
      {"test_framer_next_accepts_null_err", test_framer_next_accepts_null_err},
      {"test_frame_write_header_golden_bytes",
       test_frame_write_header_golden_bytes},
      {"test_frame_write_header_zero_fills_missing_tpdu",
       test_frame_write_header_zero_fills_missing_tpdu},
      {"test_frame_write_header_rejects_lengths_prefix_cannot_carry",
       test_frame_write_header_rejects_lengths_prefix_cannot_carry},
      {"test_frame_write_header_reports_nospace",
       test_frame_write_header_reports_nospace},
      {"test_frame_write_then_read_round_trips",
       test_frame_write_then_read_round_trips},
      {"test_tpdu_swap_exchanges_destination_and_source",
       test_tpdu_swap_exchanges_destination_and_source},
      {NULL, NULL}};

  tu_init();
  tu_add_suite("iso8583_frame", tests);
  return tu_run();
}
