/*
 * fuzz_tlv.c — libFuzzer target for the BER-TLV (DE55) reader and writer.
 *
 * The input is taken as DE55 bytes.  Every top-level object is iterated and
 * written back; the target aborts when an invariant breaks:
 *   - each object lies inside the input, after the previous one, with only
 *     0x00 padding between them, and its tag, constructed bit and length
 *     forms agree with the bytes it was read from;
 *   - writing an object back succeeds, uses the shortest length form, and
 *     reproduces the input bytes exactly when the input used that form too
 *     (otherwise it reads back as the same tag and value);
 *   - an iterator error names the next object, an offset inside the input
 *     and a TLV code, and iso_tlv_validate fails on the same input;
 *   - validation that succeeds at depth 0 succeeds at any greater depth, and
 *     success at any depth implies the iterator reached the end;
 *   - iso_tlv_find finds the first object where the iterator did.
 */
#include "iso8583.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Names the broken invariant's line before crashing, so a finding can be
 * read without a debugger. */
static void check_failed(int line) {
  fprintf(stderr, "%s:%d: invariant violated\n", __FILE__, line);
  abort();
}
#define check(ok) ((ok) ? (void)0 : check_failed(__LINE__))

static size_t min_len_len(size_t len) {
  return len < 0x80u ? 1 : len <= 0xFFu ? 2 : len <= 0xFFFFu ? 3 : 4;
}

static void check_object(const uint8_t *data, size_t size, const iso_tlv_t *t,
                         size_t prev_end, uint8_t *out, size_t cap) {
  check(t->off >= prev_end && t->off < size);
  for (size_t k = prev_end; k < t->off; k++)
    check(data[k] == 0x00);
  check(t->tag_len >= 1 && t->tag_len <= 4);
  check(t->len_len >= 1 && t->len_len <= 5);
  check(t->value == data + t->off + t->tag_len + t->len_len);
  check(t->len <= size - (size_t)(t->value - data));
  uint32_t tag = 0;
  for (size_t k = 0; k < t->tag_len; k++)
    tag = tag << 8 | data[t->off + k];
  check(tag == t->tag);
  check(t->constructed == ((data[t->off] & 0x20u) ? 1 : 0));

  size_t w = 0;
  check(iso_tlv_encode(t->tag, t->value, t->len, out, cap, &w) == 0);
  size_t ll = min_len_len(t->len);
  check(w == t->tag_len + ll + t->len);
  if (t->len_len == ll) {
    check(memcmp(out, data + t->off, w) == 0);
  } else {
    iso_tlv_iter_t it;
    iso_tlv_t back;
    iso_tlv_begin(&it, out, w);
    check(iso_tlv_next(&it, &back, NULL) == 1);
    check(back.tag == t->tag && back.len == t->len);
    check(back.len_len == ll);
    check(memcmp(back.value, t->value, t->len) == 0);
    check(iso_tlv_next(&it, &back, NULL) == 0);
  }
  check(iso_tlv_encode(t->tag, t->value, t->len, out, w - 1, &w) ==
        ISO_E_NOSPACE);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  size_t cap = size + 8;
  uint8_t *out = malloc(cap);
  if (!out)
    return 0;

  iso_tlv_iter_t it;
  iso_tlv_t t, first = {0};
  iso_err_t err;
  size_t prev_end = 0;
  int count = 0, rc;
  iso_tlv_begin(&it, data, size);
  while ((rc = iso_tlv_next(&it, &t, &err)) == 1) {
    check_object(data, size, &t, prev_end, out, cap);
    if (count == 0)
      first = t;
    count++;
    check(it.index == count);
    prev_end = (size_t)(t.value - data) + t.len;
  }

  iso_err_t e0, e8;
  int v0 = iso_tlv_validate(data, size, 0, &e0);
  int v8 = iso_tlv_validate(data, size, 8, &e8);
  if (rc == 0) {
    for (size_t k = prev_end; k < size; k++)
      check(data[k] == 0x00);
  } else {
    check(rc == ISO_E_TLV_TAG || rc == ISO_E_TLV_LENGTH);
    check(err.code == rc && err.field == 0);
    check(err.subfield == count + 1);
    check(err.offset >= prev_end && err.offset <= size);
    check(v0 < 0 && v8 < 0);
  }
  if (v0 == 0)
    check(v8 == 0);
  if (v8 == 0)
    check(rc == 0);
  if (v8 < 0) {
    check(v8 == ISO_E_TLV_TAG || v8 == ISO_E_TLV_LENGTH ||
          v8 == ISO_E_TLV_DEPTH);
    check(e8.code == v8 && e8.offset <= size);
    check(e8.subfield >= 1 && e8.subfield <= count + 1);
  }
  if (v0 < 0)
    check(e0.subfield >= 1 && e0.offset <= size);

  if (count > 0) {
    iso_tlv_t found;
    check(iso_tlv_find(data, size, first.tag, &found) == 1);
    check(found.off == first.off && found.value == first.value);
  }
  free(out);
  return 0;
}
