/*
 * fuzz_roundtrip.c — libFuzzer target for the property parse -> build ->
 * parse: whatever a dialect accepts, copying every field into a builder and
 * building gives the same bytes again (hex bitmaps may differ in letter
 * case only), and the rebuilt message parses to the same field values.
 *
 * The first input byte picks the dialect; the rest is the message.
 */
#include "iso8583.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

/* 1 if byte i of the message lies in one of its bitmaps. */
static int in_bitmap(const iso_msg_t *m, size_t i) {
  size_t mti = m->dialect->mti_enc == ISO_ENC_BCD ? 2 : 4;
  size_t bml = m->dialect->bitmap_enc == ISO_ENC_BINARY ? 8 : 16;
  if (i >= mti && i < mti + bml)
    return 1;
  for (int n = 1; n <= 65; n += 64)
    if (iso_has(m, n) && (n == 1 || m->dialect->max_bitmaps == 3) &&
        i >= m->f[n].off && i < (size_t)m->f[n].off + m->f[n].blen)
      return 1;
  return 0;
}

static int same_case_folded(const iso_dialect_t *d, uint8_t a, uint8_t b) {
  if (d->bitmap_enc == ISO_ENC_EBCDIC) {
    a = iso_ebcdic_to_ascii(a);
    b = iso_ebcdic_to_ascii(b);
  }
  return tolower(a) == tolower(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  const iso_dialect_t *d = iso_dialect_at(data[0] % iso_dialect_count());
  const uint8_t *msg = data + 1;
  size_t len = size - 1;
  static iso_msg_t m, m2;
  static iso_builder_t b;
  static uint8_t out[70000];
  if (iso_parse(&m, d, msg, len, NULL) != 0)
    return 0;
  iso_builder_init(&b, d, m.mti);
  for (int n = 2; n <= ISO_MAX_FIELD; n++) {
    if (!iso_has(&m, n) || (n == 65 && d->max_bitmaps == 3))
      continue;
    if (iso_set_from(&b, n, &m) != 0)
      abort();
  }
  size_t ol = 0;
  iso_err_t err = {0};
  if (iso_build(&b, out, sizeof out, &ol, &err) != 0 || ol != len)
    abort();
  for (size_t i = 0; i < len; i++)
    if (out[i] != msg[i] &&
        !(in_bitmap(&m, i) && d->bitmap_enc != ISO_ENC_BINARY &&
          same_case_folded(d, out[i], msg[i])))
      abort();
  if (iso_parse(&m2, d, out, ol, NULL) != 0)
    abort();
  for (int w = 0; w < 3; w++)
    if (m.bitmap[w] != m2.bitmap[w])
      abort();
  return 0;
}
