/*
 * tlv.c — BER-TLV reader and writer for DE55 (EMV ICC data).
 *
 * Reads the subset of BER (ISO/IEC 8825-1, X.690) that EMV Book 3 Annex B
 * allows, in place: objects are reported as views into the caller's buffer,
 * nothing is allocated or copied.
 *
 * Accepted encoding:
 *   tag     1 to 4 bytes.  When the low five bits of the first byte are all
 *           ones, further bytes follow for as long as bit 8 of the previous
 *           one is set.  The first subsequent byte may not be 0x80: its
 *           7-bit group would be a leading zero, which X.690 8.1.2.4.2 (c)
 *           and ISO/IEC 7816-4 both forbid.  Low tag numbers in the long form
 *           (9F02, 9F1A, ...) are accepted because EMV uses them.
 *   length  short form 0x00..0x7F, or 0x81..0x84 followed by 1 to 4 bytes.
 *           The indefinite form 0x80 and 0x85..0xFF are rejected.  A long
 *           form that could have been shorter (81 05) is accepted (BER);
 *           iso_tlv_encode always writes the shortest form.
 *   padding 0x00 bytes before, between and after objects are skipped.
 *
 * Guarantees:
 *   (1) No byte outside [buf, buf + len) is read; every reported value lies
 *       within the object's enclosing value (or the buffer at top level).
 *   (2) The set of tags the reader accepts is exactly the set the writer
 *       accepts, so every object read can be written back.
 *   (3) On error err (when not NULL) holds: code; field 0 (the caller knows
 *       which data element it is and sets it); subfield = 1-based index of
 *       the top-level object at fault; offset into the buffer given (for a
 *       nested error, still relative to the outermost buffer) of the first
 *       byte of the faulty part: the tag's first byte for ISO_E_TLV_TAG
 *       (the 0x80 byte itself for a non-minimal tag), the length field's
 *       first byte for ISO_E_TLV_LENGTH (also when the value runs past its
 *       end: the length is what is wrong), the object's first byte for
 *       ISO_E_TLV_DEPTH.  expected/available are the bytes needed and the
 *       bytes present (for ISO_E_TLV_DEPTH: the depth allowed and the depth
 *       found), or 0 where no size applies.
 *   (4) A truncated tag is ISO_E_TLV_TAG; a truncated length field or value
 *       is ISO_E_TLV_LENGTH.
 *
 * Depth: top-level objects are at depth 0, the children of a constructed
 * object at depth d are at depth d + 1.  iso_tlv_validate accepts objects
 * down to depth max_depth, so max_depth 0 checks the top level only (a
 * constructed object may then hold nothing but padding).  The walk keeps the
 * ends of the enclosing values on a fixed stack instead of recursing, so a
 * hostile input cannot exhaust the C stack; max_depth is therefore capped at
 * TLV_DEPTH_CAP, 30 (EMV templates nest a few levels: 6F > A5 > BF0C > 61).
 */
#include "iso8583.h"

#include <string.h>

#define TLV_DEPTH_CAP 30

static int tlv_fail(iso_err_t *err, int code, int index, size_t off,
                    size_t expected, size_t available) {
  if (err) {
    err->code = code;
    err->field = 0;
    err->subfield = index;
    err->offset = off;
    err->expected = expected;
    err->available = available;
  }
  return code;
}

/* Reads the tag at buf[pos] (not padding), bounded by end. */
static int tlv_read_tag(const uint8_t *buf, size_t pos, size_t end,
                        iso_tlv_t *out, iso_err_t *err, int index) {
  size_t n = 1;
  uint32_t tag = buf[pos];

  if ((buf[pos] & 0x1Fu) == 0x1Fu) {
    for (;;) {
      if (pos + n >= end)
        return tlv_fail(err, ISO_E_TLV_TAG, index, pos, n + 1, end - pos);
      if (n == 4)
        return tlv_fail(err, ISO_E_TLV_TAG, index, pos, 4, 5);
      uint8_t b = buf[pos + n];
      if (n == 1 && b == 0x80u)
        return tlv_fail(err, ISO_E_TLV_TAG, index, pos + 1, 0, 0);
      tag = tag << 8 | b;
      n++;
      if (!(b & 0x80u))
        break;
    }
  }
  out->tag = tag;
  out->tag_len = (uint8_t)n;
  out->constructed = (uint8_t)((buf[pos] & 0x20u) ? 1 : 0);
  out->off = pos;
  return 0;
}

/* Reads the length field at buf[pos] and checks that the value fits before
 * end. */
static int tlv_read_length(const uint8_t *buf, size_t pos, size_t end,
                           iso_tlv_t *out, iso_err_t *err, int index) {
  if (pos >= end)
    return tlv_fail(err, ISO_E_TLV_LENGTH, index, pos, 1, 0);

  uint8_t first = buf[pos];
  size_t n = 1;
  uint32_t vlen = first;

  if (first & 0x80u) {
    size_t more = first & 0x7Fu;
    /* 0x80 is BER's indefinite form, which EMV forbids; more than four
     * length bytes cannot describe data a message could carry. */
    if (more == 0 || more > 4)
      return tlv_fail(err, ISO_E_TLV_LENGTH, index, pos, more ? 4 : 0, more);
    if (end - pos < 1 + more)
      return tlv_fail(err, ISO_E_TLV_LENGTH, index, pos, 1 + more, end - pos);
    vlen = 0;
    for (size_t i = 1; i <= more; i++)
      vlen = vlen << 8 | buf[pos + i];
    n = 1 + more;
  }

  size_t vpos = pos + n;
  if ((size_t)vlen > end - vpos)
    return tlv_fail(err, ISO_E_TLV_LENGTH, index, pos, vlen, end - vpos);
  out->len_len = (uint8_t)n;
  out->value = buf + vpos;
  out->len = vlen;
  return 0;
}

/* One object starting at buf[pos], which the caller has checked is below
 * end and not padding. */
static int tlv_read(const uint8_t *buf, size_t pos, size_t end, iso_tlv_t *out,
                    iso_err_t *err, int index) {
  int rc = tlv_read_tag(buf, pos, end, out, err, index);
  if (rc < 0)
    return rc;
  return tlv_read_length(buf, pos + out->tag_len, end, out, err, index);
}

void iso_tlv_begin(iso_tlv_iter_t *it, const uint8_t *buf, size_t len) {
  if (!it)
    return;
  it->buf = buf;
  it->len = len;
  it->pos = 0;
  it->index = 0;
}

int iso_tlv_next(iso_tlv_iter_t *it, iso_tlv_t *out, iso_err_t *err) {
  if (!it || !out || (!it->buf && it->len) || it->pos > it->len)
    return tlv_fail(err, ISO_E_INVAL, 0, 0, 0, 0);

  while (it->pos < it->len && it->buf[it->pos] == 0x00u)
    it->pos++;
  if (it->pos == it->len)
    return 0;

  iso_tlv_t obj;
  /* pos stays on the faulty object, so asking again repeats the error
   * instead of resynchronising on garbage. */
  int rc = tlv_read(it->buf, it->pos, it->len, &obj, err, it->index + 1);
  if (rc < 0)
    return rc;
  it->index++;
  it->pos = (size_t)(obj.value - it->buf) + obj.len;
  *out = obj;
  return 1;
}

int iso_tlv_validate(const uint8_t *buf, size_t len, int max_depth,
                     iso_err_t *err) {
  /* end[d]: one past the value that holds the objects at depth d. */
  size_t end[TLV_DEPTH_CAP + 2];
  int depth = 0;
  int index = 0;
  size_t pos = 0;

  if ((!buf && len) || max_depth < 0)
    return tlv_fail(err, ISO_E_INVAL, 0, 0, 0, 0);
  if (max_depth > TLV_DEPTH_CAP)
    max_depth = TLV_DEPTH_CAP;

  end[0] = len;
  for (;;) {
    while (depth > 0 && pos == end[depth])
      depth--;
    if (pos == len)
      return 0;
    if (buf[pos] == 0x00u) {
      pos++;
      continue;
    }
    if (depth == 0)
      index++;
    if (depth > max_depth)
      return tlv_fail(err, ISO_E_TLV_DEPTH, index, pos, (size_t)max_depth,
                      (size_t)depth);

    /* Fast path for what nearly every DE55 object is: a one- or two-byte
     * tag and a short-form length, with the value inside its parent.  Any
     * other shape, and every error, goes through tlv_read, which knows
     * the rules and the error details. */
    size_t lim = end[depth];
    uint8_t t0 = buf[pos];
    size_t p = pos + 1;
    if ((t0 & 0x1Fu) == 0x1Fu) {
      if (p < lim && buf[p] != 0x80u && !(buf[p] & 0x80u))
        p++;
      else
        p = 0;
    }
    if (p && p < lim && buf[p] < 0x80u && buf[p] <= lim - p - 1) {
      size_t vlen = buf[p];
      pos = p + 1;
      if ((t0 & 0x20u) && vlen > 0)
        end[++depth] = pos + vlen;
      else
        pos += vlen;
      continue;
    }

    iso_tlv_t obj;
    int rc = tlv_read(buf, pos, lim, &obj, err, index);
    if (rc < 0)
      return rc;
    pos = (size_t)(obj.value - buf);
    if (obj.constructed && obj.len > 0)
      end[++depth] = pos + obj.len;
    else
      pos += obj.len;
  }
}

int iso_tlv_find(const uint8_t *buf, size_t len, uint32_t tag, iso_tlv_t *out) {
  iso_tlv_iter_t it;
  iso_tlv_t obj;
  int rc;

  if (!out)
    return ISO_E_INVAL;
  iso_tlv_begin(&it, buf, len);
  while ((rc = iso_tlv_next(&it, &obj, NULL)) == 1) {
    if (obj.tag == tag) {
      *out = obj;
      return 1;
    }
  }
  return rc;
}

/* Bytes of tag, or 0 if the reader would not accept it as one tag. */
static size_t tlv_tag_bytes(uint32_t tag, uint8_t b[4]) {
  size_t n = tag > 0xFFFFFFu ? 4 : tag > 0xFFFFu ? 3 : tag > 0xFFu ? 2 : 1;

  for (size_t i = 0; i < n; i++)
    b[i] = (uint8_t)(tag >> (8 * (n - 1 - i)));
  /* 0x00 would read back as padding. */
  if (b[0] == 0x00u)
    return 0;
  if (n == 1)
    return (b[0] & 0x1Fu) == 0x1Fu ? 0 : 1;
  if ((b[0] & 0x1Fu) != 0x1Fu || b[1] == 0x80u)
    return 0;
  for (size_t i = 1; i + 1 < n; i++)
    if (!(b[i] & 0x80u))
      return 0;
  return (b[n - 1] & 0x80u) ? 0 : n;
}

int iso_tlv_encode(uint32_t tag, const uint8_t *value, size_t len, uint8_t *out,
                   size_t cap, size_t *outlen) {
  uint8_t tb[4] = {0};
  size_t tn = tlv_tag_bytes(tag, tb);

  if (!tn)
    return ISO_E_TLV_TAG;
  if (!value && len)
    return ISO_E_INVAL;
  if ((uint64_t)len > 0xFFFFFFFFu)
    return ISO_E_TLV_LENGTH;

  size_t ln = len < 0x80u        ? 1
              : len <= 0xFFu     ? 2
              : len <= 0xFFFFu   ? 3
              : len <= 0xFFFFFFu ? 4
                                 : 5;
  if (!out || cap < tn + ln || cap - tn - ln < len)
    return ISO_E_NOSPACE;

  /* The value may already sit in out (built in place and then wrapped), so
   * it is moved before the header is written over its old position. */
  if (len)
    memmove(out + tn + ln, value, len);
  memcpy(out, tb, tn);
  if (ln == 1) {
    out[tn] = (uint8_t)len;
  } else {
    out[tn] = (uint8_t)(0x80u | (ln - 1));
    for (size_t i = 1; i < ln; i++)
      out[tn + i] = (uint8_t)(len >> (8 * (ln - 1 - i)));
  }
  if (outlen)
    *outlen = tn + ln + len;
  return 0;
}
