/*
 * errors.c — the codec's error names and messages, generated from the one
 * list in ISO_ERRNO_MAP, and the formatter that turns an iso_err_t into the
 * line an operator reads.  The formatter names the field and the offset and
 * never prints field content, so it is safe for logs.
 */
#include "internal.h"

#include <stdio.h>

const char iso__hexdigits[16] = "0123456789ABCDEF";

static const char *const iso__messages[] = {"success",
#define ISO__XX(name, msg) msg,
                                            ISO_ERRNO_MAP(ISO__XX)
#undef ISO__XX
};

static const char *const iso__names[] = {"OK",
#define ISO__XX(name, msg) #name,
                                         ISO_ERRNO_MAP(ISO__XX)
#undef ISO__XX
};

#define ISO__NCODES (sizeof iso__names / sizeof iso__names[0])

const char *iso_strerror(int code) {
  size_t i = (size_t)(code <= 0 ? -(long)code : (long)ISO__NCODES);
  return i < ISO__NCODES ? iso__messages[i] : "unknown error";
}

const char *iso_err_name(int code) {
  size_t i = (size_t)(code <= 0 ? -(long)code : (long)ISO__NCODES);
  return i < ISO__NCODES ? iso__names[i] : "UNKNOWN";
}

/* What "expected" means depends on the error: a bound for lengths, a need
 * for truncation. */
static const char *iso__expected_word(int code) {
  switch (code) {
  case ISO_E_TOO_LONG:
  case ISO_E_FRAME_TOO_LARGE:
    return "allowed";
  case ISO_E_WRONG_LENGTH:
    return "fixed length";
  default:
    return "needed";
  }
}

size_t iso_err_format(const iso_err_t *err, const struct iso_dialect_s *d,
                      char *out, size_t cap) {
  if (!out || cap == 0)
    return 0;
  if (!err) {
    out[0] = '\0';
    return 0;
  }
  char where[160];
  const char *fname = NULL;
  if (d && err->field >= 1 && err->field <= ISO_MAX_FIELD)
    fname = d->fields[err->field].name;
  if (err->field > 0 && err->subfield > 0)
    snprintf(where, sizeof where, "field %d%s%s%s object %d at offset %zu",
             err->field, fname ? " (" : "", fname ? fname : "",
             fname ? ")" : "", err->subfield, err->offset);
  else if (err->field > 0)
    snprintf(where, sizeof where, "field %d%s%s%s at offset %zu", err->field,
             fname ? " (" : "", fname ? fname : "", fname ? ")" : "",
             err->offset);
  else
    snprintf(where, sizeof where, "offset %zu", err->offset);

  int n;
  if (err->expected || err->available)
    n = snprintf(out, cap, "%s: %s (%s %zu, found %zu)", where,
                 iso_strerror(err->code), iso__expected_word(err->code),
                 err->expected, err->available);
  else
    n = snprintf(out, cap, "%s: %s", where, iso_strerror(err->code));
  if (n < 0) {
    out[0] = '\0';
    return 0;
  }
  return (size_t)n < cap ? (size_t)n : cap - 1;
}
