/*
 * fuzz_parse.c — libFuzzer target: iso_parse on every built-in dialect.
 *
 * The first input byte picks the dialect; the rest is the message.  On
 * success every accessor and formatter runs on every present field, and
 * every span must lie inside the input; on failure the error must name an
 * offset inside the input and format without overflowing.  Any violation
 * aborts.
 */
#include "iso8583.h"

#include <stdlib.h>
#include <string.h>

static void check_fields(const iso_msg_t *m, size_t len) {
  static char text[20000];
  static uint8_t bytes[10000];
  for (int n = 1; n <= ISO_MAX_FIELD; n++) {
    if (!iso_has(m, n))
      continue;
    const iso_span_t *s = &m->f[n];
    if ((size_t)s->off + s->hlen + s->blen > len)
      abort();
    size_t tl;
    uint64_t u;
    int64_t a;
    if (n == 1 || (n == 65 && m->dialect->max_bitmaps == 3))
      continue;
    if (iso_get_text(m, n, text, sizeof text, &tl) == 0 && tl >= sizeof text)
      abort();
    (void)iso_get_bytes(m, n, bytes, sizeof bytes, &tl);
    (void)iso_get_u64(m, n, &u);
    (void)iso_get_amount(m, n, &a);
    if (iso_format_field(m, n, 0, text, sizeof text, &tl) == 0) {
      const iso_field_def_t *def = iso_msg_field_def(m, n);
      /* A masked non-PAN sensitive field shows nothing but '*'. */
      if ((def->flags & ISO_F_SENSITIVE) && !(def->flags & ISO_F_PAN))
        for (size_t i = 0; i < tl; i++)
          if (text[i] != '*')
            abort();
    }
  }
  (void)iso_check_mandatory(m, NULL);
  static char dump[4096];
  size_t dl = iso_dump(m, 0, dump, sizeof dump);
  if (dl >= sizeof dump || strlen(dump) != dl)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  const iso_dialect_t *d = iso_dialect_at(data[0] % iso_dialect_count());
  static iso_msg_t m;
  iso_err_t err = {0};
  int rc = iso_parse(&m, d, data + 1, size - 1, &err);
  if (rc == 0) {
    check_fields(&m, size - 1);
  } else {
    if (rc != err.code || err.offset > size - 1 || err.field < 0 ||
        err.field > ISO_MAX_FIELD)
      abort();
    char line[256];
    size_t n = iso_err_format(&err, d, line, sizeof line);
    if (n >= sizeof line || strlen(line) != n)
      abort();
  }
  return 0;
}
