/*
 * spec_json.c — loads dialects from JSON files (docs/dialect-files.md).
 *
 * A dialect file is untrusted input written by people, so the loader is
 * strict: every key must be known, every value must have the expected type
 * and range, and every error names the JSON path it is about.  A payment
 * spec with a typo ("lenght") must fail to load rather than silently fall
 * back to a default.
 *
 * Ownership: the loaded iso_dialect_t is the first member of a
 * spec_dialect_t that also records every string and array the loader
 * allocated.  Strings inherited from a built-in base are pointed to, not
 * copied (built-ins are static), so iso_spec_free releases exactly the
 * recorded allocations and nothing else.
 *
 * Order of work: base (copied whole), then name and description, then MTI,
 * bitmap and bitmap count, then fields (each applied on top of what it
 * replaces), then variants and mandatory rules (merged by key with the
 * base's), then the layout checks with JSON paths, then iso_dialect_check
 * as the final word.
 */
#include "iso8583_spec.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* iso_span_t.variant records the variant used as a uint8_t (1-based), so a
 * dialect can have at most 255 variants. */
#define SPEC_MAX_VARIANTS 255
#define SPEC_MAX_MANDATORY 1000
#define SPEC_MAX_NAME 63
#define SPEC_MAX_TEXT 200
/* Longest JSON path quoted in a message, and longest key echoed in it. */
#define SPEC_PATH 128
#define SPEC_KEY_ECHO 40

typedef struct spec_dialect_s {
  iso_dialect_t d; /* first: iso_spec_free converts the pointer back */
  char **strings;
  size_t nstrings;
  size_t capstrings;
  iso_variant_t *variants;
  iso_mandatory_t *mandatory;
} spec_dialect_t;

typedef struct spec_ctx_s {
  spec_dialect_t *sd;
  char *msg;
  size_t msgcap;
} spec_ctx_t;

typedef struct spec_name_s {
  const char *name;
  int value;
} spec_name_t;

static const spec_name_t spec_classes[] = {
    {"n", ISO_CLS_N},     {"a", ISO_CLS_A},    {"an", ISO_CLS_AN},
    {"ans", ISO_CLS_ANS}, {"ns", ISO_CLS_NS},  {"b", ISO_CLS_B},
    {"z", ISO_CLS_Z},     {"x+n", ISO_CLS_XN}, {NULL, 0}};

static const spec_name_t spec_prefixes[] = {{"fixed", ISO_LEN_FIXED},
                                            {"LL", ISO_LEN_LL},
                                            {"LLL", ISO_LEN_LLL},
                                            {"LLLL", ISO_LEN_LLLL},
                                            {NULL, 0}};

static const spec_name_t spec_body_encs[] = {
    {"ascii", ISO_ENC_ASCII}, {"ebcdic", ISO_ENC_EBCDIC},
    {"bcd", ISO_ENC_BCD},     {"binary", ISO_ENC_BINARY},
    {"hex", ISO_ENC_HEX},     {NULL, 0}};

static const spec_name_t spec_prefix_encs[] = {{"ascii", ISO_ENC_ASCII},
                                               {"ebcdic", ISO_ENC_EBCDIC},
                                               {"bcd", ISO_ENC_BCD},
                                               {"binary", ISO_ENC_BINARY},
                                               {NULL, 0}};

static const spec_name_t spec_mti_encs[] = {{"ascii", ISO_ENC_ASCII},
                                            {"ebcdic", ISO_ENC_EBCDIC},
                                            {"bcd", ISO_ENC_BCD},
                                            {NULL, 0}};

static const spec_name_t spec_bitmap_encs[] = {{"binary", ISO_ENC_BINARY},
                                               {"hex", ISO_ENC_HEX},
                                               {"ebcdic", ISO_ENC_EBCDIC},
                                               {NULL, 0}};

static const spec_name_t spec_pads[] = {{"left0", ISO_PAD_LEFT_0},
                                        {"rightF", ISO_PAD_RIGHT_F},
                                        {"leftF", ISO_PAD_LEFT_F},
                                        {"right0", ISO_PAD_RIGHT_0},
                                        {NULL, 0}};

static const char *const spec_top_keys[] = {
    "name",        "description", "base",     "mti",       "bitmap",
    "max_bitmaps", "fields",      "variants", "mandatory", NULL};
static const char *const spec_field_keys[] = {
    "name", "class",     "length", "prefix", "prefix_encoding", "encoding",
    "pad",  "sensitive", "pan",    "tlv",    "validate",        NULL};
static const char *const spec_variant_keys[] = {"mti", "proc", "field", "def",
                                                NULL};
static const char *const spec_mandatory_keys[] = {"mti", "fields", NULL};

/* ------------------------------------------------------------------------ */
/* Messages                                                                  */

__attribute__((format(printf, 4, 5))) static int
spec_fail(spec_ctx_t *c, int code, const char *path, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (c->msg && c->msgcap > 0) {
    size_t used = 0;
    if (path && *path) {
      int n = snprintf(c->msg, c->msgcap, "%s: ", path);
      used = n < 0 ? 0 : (size_t)n;
    }
    if (used < c->msgcap)
      vsnprintf(c->msg + used, c->msgcap - used, fmt, ap);
  }
  va_end(ap);
  return code;
}

/* A JSON key as it may appear in a message: printable, bounded. */
static void spec_key_echo(const char *key, char *out, size_t cap) {
  size_t i = 0;
  for (; key[i] && i + 1 < cap && i < SPEC_KEY_ECHO; i++) {
    unsigned char ch = (unsigned char)key[i];
    out[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
  }
  out[i] = '\0';
}

/* Paths longer than SPEC_PATH are cut: they are for people to read, and
 * only a hostile file nests that deep. */
static void spec_path_key(char *out, const char *path, const char *key) {
  char echo[SPEC_KEY_ECHO + 1];
  spec_key_echo(key, echo, sizeof echo);
  int n = snprintf(out, SPEC_PATH, "%s%s%s", path ? path : "",
                   path && *path ? "." : "", echo);
  if (n < 0)
    out[0] = '\0';
}

static void spec_path_index(char *out, const char *path, size_t i) {
  int n = snprintf(out, SPEC_PATH, "%s[%zu]", path, i);
  if (n < 0)
    out[0] = '\0';
}

/* Bit of field n (1..192) in its bitmap word, as in iso_mandatory_t. */
static uint64_t spec_bit(long n) {
  return UINT64_C(1) << (63u - ((unsigned long)(n - 1) & 63u));
}

/* ------------------------------------------------------------------------ */
/* Ownership                                                                 */

static int spec_strdup(spec_ctx_t *c, const char *path, const char *s,
                       const char **out) {
  spec_dialect_t *sd = c->sd;
  if (sd->nstrings == sd->capstrings) {
    size_t cap = sd->capstrings ? sd->capstrings * 2 : 16;
    char **p = realloc(sd->strings, cap * sizeof *p);
    if (!p)
      return spec_fail(c, ISO_E_NOMEM, path, "out of memory");
    sd->strings = p;
    sd->capstrings = cap;
  }
  size_t len = strlen(s);
  char *copy = malloc(len + 1);
  if (!copy)
    return spec_fail(c, ISO_E_NOMEM, path, "out of memory");
  memcpy(copy, s, len + 1);
  sd->strings[sd->nstrings++] = copy;
  *out = copy;
  return 0;
}

void iso_spec_free(iso_dialect_t *d) {
  if (!d)
    return;
  spec_dialect_t *sd = (spec_dialect_t *)d;
  for (size_t i = 0; i < sd->nstrings; i++)
    free(sd->strings[i]);
  free(sd->strings);
  free(sd->variants);
  free(sd->mandatory);
  free(sd);
}

/* ------------------------------------------------------------------------ */
/* Typed values                                                              */

static int spec_check_keys(spec_ctx_t *c, const char *path, json_t *obj,
                           const char *const *known) {
  const char *key;
  json_t *v;
  json_object_foreach(obj, key, v) {
    size_t i = 0;
    while (known[i] && strcmp(known[i], key) != 0)
      i++;
    if (!known[i]) {
      char p[SPEC_PATH];
      spec_path_key(p, path, key);
      return spec_fail(c, ISO_E_DIALECT, p, "unknown key");
    }
  }
  return 0;
}

static int spec_get_int(spec_ctx_t *c, const char *path, json_t *v, long lo,
                        long hi, long *out) {
  if (!json_is_integer(v))
    return spec_fail(c, ISO_E_DIALECT, path, "must be an integer %ld..%ld", lo,
                     hi);
  json_int_t x = json_integer_value(v);
  if (x < lo || x > hi)
    return spec_fail(c, ISO_E_DIALECT, path, "must be %ld..%ld", lo, hi);
  *out = (long)x;
  return 0;
}

static int spec_get_bool(spec_ctx_t *c, const char *path, json_t *v, int *out) {
  if (!json_is_boolean(v))
    return spec_fail(c, ISO_E_DIALECT, path, "must be true or false");
  *out = json_is_true(v);
  return 0;
}

static int spec_get_enum(spec_ctx_t *c, const char *path, json_t *v,
                         const spec_name_t *names, int *out) {
  if (json_is_string(v)) {
    const char *s = json_string_value(v);
    for (size_t i = 0; names[i].name; i++) {
      if (strcmp(names[i].name, s) == 0 && strlen(s) == json_string_length(v)) {
        *out = names[i].value;
        return 0;
      }
    }
  }
  char list[160];
  size_t used = 0;
  list[0] = '\0';
  for (size_t i = 0; names[i].name && used < sizeof list; i++) {
    int n = snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "",
                     names[i].name);
    if (n < 0)
      break;
    used += (size_t)n;
  }
  return spec_fail(c, ISO_E_DIALECT, path, "must be one of %s", list);
}

/* Printable ASCII text of 1..maxlen characters. */
static int spec_get_text(spec_ctx_t *c, const char *path, json_t *v,
                         size_t maxlen, const char **out) {
  if (!json_is_string(v))
    return spec_fail(c, ISO_E_DIALECT, path, "must be a string");
  const char *s = json_string_value(v);
  size_t len = json_string_length(v);
  if (len == 0 || len > maxlen)
    return spec_fail(c, ISO_E_DIALECT, path, "must be 1..%zu characters",
                     maxlen);
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch > 0x7e)
      return spec_fail(c, ISO_E_DIALECT, path,
                       "character %zu is not printable ASCII", i + 1);
  }
  return spec_strdup(c, path, s, out);
}

/* A pattern of digits and '.' of minlen..maxlen characters, copied into out
 * without a terminator. */
static int spec_get_pattern(spec_ctx_t *c, const char *path, json_t *v,
                            size_t minlen, size_t maxlen, char *out,
                            size_t *outlen) {
  const char *s = json_is_string(v) ? json_string_value(v) : NULL;
  size_t len = s ? json_string_length(v) : 0;
  int ok = s && len >= minlen && len <= maxlen;
  for (size_t i = 0; ok && i < len; i++)
    ok = s[i] == '.' || (s[i] >= '0' && s[i] <= '9');
  if (!ok) {
    if (minlen == maxlen)
      return spec_fail(c, ISO_E_DIALECT, path,
                       "must be %zu characters, each a digit or '.'", minlen);
    return spec_fail(c, ISO_E_DIALECT, path,
                     "must be %zu..%zu characters, each a digit or '.'", minlen,
                     maxlen);
  }
  memcpy(out, s, len);
  *outlen = len;
  return 0;
}

/* "2".."192" exactly: no sign, no leading zero, no spaces. */
static int spec_field_number(const char *key) {
  int n = 0;
  if (key[0] < '1' || key[0] > '9')
    return -1;
  for (size_t i = 0; key[i]; i++) {
    if (key[i] < '0' || key[i] > '9' || i >= 3)
      return -1;
    n = n * 10 + (key[i] - '0');
  }
  return n <= ISO_MAX_FIELD ? n : -1;
}

/* ------------------------------------------------------------------------ */
/* Field layouts                                                             */

static const char *spec_enum_name(const spec_name_t *names, int value) {
  for (size_t i = 0; names[i].name; i++)
    if (names[i].value == value)
      return names[i].name;
  return "?";
}

/* The checks of iso_dialect_check on one layout, with the JSON path and a
 * reason a dialect author can act on. */
static int spec_check_def(spec_ctx_t *c, const char *path,
                          const iso_field_def_t *f) {
  const char *cls = spec_enum_name(spec_classes, f->cls);
  const char *enc = spec_enum_name(spec_body_encs, f->body_enc);
  switch (f->body_enc) {
  case ISO_ENC_ASCII:
  case ISO_ENC_EBCDIC:
    if (f->cls == ISO_CLS_B)
      return spec_fail(c, ISO_E_DIALECT, path,
                       "class \"b\" needs encoding \"binary\" or \"hex\", "
                       "not \"%s\"",
                       enc);
    break;
  case ISO_ENC_BCD:
    if (f->cls != ISO_CLS_N && f->cls != ISO_CLS_Z && f->cls != ISO_CLS_XN)
      return spec_fail(c, ISO_E_DIALECT, path,
                       "encoding \"bcd\" carries only classes \"n\", \"z\" "
                       "and \"x+n\", not \"%s\"",
                       cls);
    break;
  default: /* BINARY, HEX */
    if (f->cls != ISO_CLS_B)
      return spec_fail(c, ISO_E_DIALECT, path,
                       "encoding \"%s\" carries only class \"b\", not \"%s\"",
                       enc, cls);
    break;
  }
  if (f->cls == ISO_CLS_XN && f->max_len < 2)
    return spec_fail(c, ISO_E_DIALECT, path,
                     "class \"x+n\" needs a length of at least 2 (sign and "
                     "one digit)");
  if ((f->flags & ISO_F_TLV) && f->cls != ISO_CLS_B)
    return spec_fail(c, ISO_E_DIALECT, path,
                     "\"tlv\" needs class \"b\", not \"%s\"", cls);
  long limit = 9999;
  if (f->len_type == ISO_LEN_LL)
    limit = f->len_enc == ISO_ENC_BINARY ? 255 : 99;
  else if (f->len_type == ISO_LEN_LLL)
    limit = 999;
  if (f->max_len > limit)
    return spec_fail(c, ISO_E_DIALECT, path,
                     "length %u does not fit a %s prefix in %s (at most %ld)",
                     f->max_len, spec_enum_name(spec_prefixes, f->len_type),
                     spec_enum_name(spec_prefix_encs, f->len_enc), limit);
  return 0;
}

/* Default prefix encoding for a new field: the body's own character set,
 * and packed BCD lengths before binary bodies (the POS convention). */
static uint8_t spec_default_prefix_enc(uint8_t body_enc) {
  switch (body_enc) {
  case ISO_ENC_EBCDIC:
    return ISO_ENC_EBCDIC;
  case ISO_ENC_BCD:
  case ISO_ENC_BINARY:
    return ISO_ENC_BCD;
  default:
    return ISO_ENC_ASCII;
  }
}

static int spec_set_flag(spec_ctx_t *c, const char *path, json_t *obj,
                         const char *key, uint8_t bit, int invert,
                         iso_field_def_t *def) {
  json_t *v = json_object_get(obj, key);
  if (!v)
    return 0;
  char p[SPEC_PATH];
  spec_path_key(p, path, key);
  int on = 0;
  int rc = spec_get_bool(c, p, v, &on);
  if (rc)
    return rc;
  if (invert)
    on = !on;
  def->flags = (uint8_t)(on ? (def->flags | bit) : (def->flags & ~bit));
  return 0;
}

/* Applies a field object on top of *def (def->name NULL: a new field, for
 * which name, class and length are required). */
static int spec_load_field(spec_ctx_t *c, const char *path, json_t *obj,
                           iso_field_def_t *def) {
  if (!json_is_object(obj))
    return spec_fail(c, ISO_E_DIALECT, path, "must be an object or null");
  int rc = spec_check_keys(c, path, obj, spec_field_keys);
  if (rc)
    return rc;
  int fresh = def->name == NULL;
  if (fresh) {
    static const char *const required[] = {"name", "class", "length", NULL};
    for (size_t i = 0; required[i]; i++) {
      if (!json_object_get(obj, required[i])) {
        char p[SPEC_PATH];
        spec_path_key(p, path, required[i]);
        return spec_fail(c, ISO_E_DIALECT, p,
                         "missing (required for a field not inherited from "
                         "the base)");
      }
    }
    memset(def, 0, sizeof *def);
    def->len_type = ISO_LEN_FIXED;
    def->body_enc = ISO_ENC_ASCII;
  }

  char p[SPEC_PATH];
  json_t *v;
  int x = 0;
  if ((v = json_object_get(obj, "name"))) {
    spec_path_key(p, path, "name");
    if ((rc = spec_get_text(c, p, v, SPEC_MAX_TEXT, &def->name)))
      return rc;
  }
  if ((v = json_object_get(obj, "class"))) {
    spec_path_key(p, path, "class");
    if ((rc = spec_get_enum(c, p, v, spec_classes, &x)))
      return rc;
    def->cls = (uint8_t)x;
  }
  if ((v = json_object_get(obj, "length"))) {
    long len = 0;
    spec_path_key(p, path, "length");
    if ((rc = spec_get_int(c, p, v, 1, 9999, &len)))
      return rc;
    def->max_len = (uint16_t)len;
  }
  if ((v = json_object_get(obj, "prefix"))) {
    spec_path_key(p, path, "prefix");
    if ((rc = spec_get_enum(c, p, v, spec_prefixes, &x)))
      return rc;
    def->len_type = (uint8_t)x;
  }
  if ((v = json_object_get(obj, "encoding"))) {
    spec_path_key(p, path, "encoding");
    if ((rc = spec_get_enum(c, p, v, spec_body_encs, &x)))
      return rc;
    def->body_enc = (uint8_t)x;
  }
  if ((v = json_object_get(obj, "prefix_encoding"))) {
    spec_path_key(p, path, "prefix_encoding");
    if ((rc = spec_get_enum(c, p, v, spec_prefix_encs, &x)))
      return rc;
    def->len_enc = (uint8_t)x;
  } else if (fresh) {
    def->len_enc = spec_default_prefix_enc(def->body_enc);
  }
  if ((v = json_object_get(obj, "pad"))) {
    spec_path_key(p, path, "pad");
    if ((rc = spec_get_enum(c, p, v, spec_pads, &x)))
      return rc;
    def->pad = (uint8_t)x;
  } else if (fresh) {
    /* As the built-ins: numbers right-justified, digit strings of variable
     * length and track data left-justified. */
    def->pad = (def->cls == ISO_CLS_Z ||
                (def->cls == ISO_CLS_N && def->len_type != ISO_LEN_FIXED))
                   ? ISO_PAD_RIGHT_F
                   : ISO_PAD_LEFT_0;
  }
  if ((rc =
           spec_set_flag(c, path, obj, "sensitive", ISO_F_SENSITIVE, 0, def)) ||
      (rc = spec_set_flag(c, path, obj, "pan", ISO_F_PAN, 0, def)) ||
      (rc = spec_set_flag(c, path, obj, "tlv", ISO_F_TLV, 0, def)) ||
      (rc = spec_set_flag(c, path, obj, "validate", ISO_F_NO_VALIDATE, 1, def)))
    return rc;
  /* The codec masks a PAN only as a sensitive field: "pan" implies
   * "sensitive", and saying otherwise is a contradiction. */
  if (def->flags & ISO_F_PAN) {
    json_t *sens = json_object_get(obj, "sensitive");
    if (sens && json_is_false(sens)) {
      spec_path_key(p, path, "sensitive");
      return spec_fail(c, ISO_E_DIALECT, p,
                       "a PAN is always sensitive (\"pan\": true)");
    }
    def->flags |= ISO_F_SENSITIVE;
  }
  return spec_check_def(c, path, def);
}

static int spec_load_fields(spec_ctx_t *c, json_t *fields) {
  iso_dialect_t *d = &c->sd->d;
  if (!json_is_object(fields))
    return spec_fail(c, ISO_E_DIALECT, "fields",
                     "must be an object keyed by field number");
  int last = d->max_bitmaps * 64;
  const char *key;
  json_t *v;
  json_object_foreach(fields, key, v) {
    char p[SPEC_PATH];
    spec_path_key(p, "fields", key);
    int n = spec_field_number(key);
    if (n < 2)
      return spec_fail(c, ISO_E_DIALECT, p,
                       n == 1 ? "field 1 is the secondary bitmap, set by "
                                "\"max_bitmaps\""
                              : "key must be a field number 2..192");
    if (n == 65 && d->max_bitmaps == 3)
      return spec_fail(c, ISO_E_DIALECT, p,
                       "with 3 bitmaps field 65 is the tertiary bitmap");
    if (n > last)
      return spec_fail(c, ISO_E_DIALECT, p,
                       "field %d cannot be carried with %d bitmap%s "
                       "(\"max_bitmaps\")",
                       n, d->max_bitmaps, d->max_bitmaps == 1 ? "" : "s");
    if (json_is_null(v)) {
      memset(&d->fields[n], 0, sizeof d->fields[n]);
      continue;
    }
    int rc = spec_load_field(c, p, v, &d->fields[n]);
    if (rc)
      return rc;
  }
  return 0;
}

/* Fields 1 and 65 follow max_bitmaps; fields beyond the last bitmap's reach
 * (inherited from a base with more bitmaps) cannot be carried and go. */
static void spec_set_bitmap_slots(iso_dialect_t *d) {
  static const iso_field_def_t secondary = {.name = "secondary bitmap",
                                            .max_len = 8,
                                            .cls = ISO_CLS_B,
                                            .body_enc = ISO_ENC_BINARY,
                                            .flags = ISO_F_BITMAP};
  static const iso_field_def_t tertiary = {.name = "tertiary bitmap",
                                           .max_len = 8,
                                           .cls = ISO_CLS_B,
                                           .body_enc = ISO_ENC_BINARY,
                                           .flags = ISO_F_BITMAP};
  if (d->max_bitmaps >= 2)
    d->fields[1] = secondary;
  else
    memset(&d->fields[1], 0, sizeof d->fields[1]);
  if (d->max_bitmaps == 3)
    d->fields[65] = tertiary;
  else if (d->fields[65].flags & ISO_F_BITMAP)
    memset(&d->fields[65], 0, sizeof d->fields[65]);
  for (int n = d->max_bitmaps * 64 + 1; n <= ISO_MAX_FIELD; n++)
    memset(&d->fields[n], 0, sizeof d->fields[n]);
}

/* ------------------------------------------------------------------------ */
/* Variants and mandatory rules                                              */

static int spec_same_variant(const iso_variant_t *a, const iso_variant_t *b) {
  return a->field == b->field && memcmp(a->mti, b->mti, 4) == 0 &&
         a->proc_len == b->proc_len &&
         memcmp(a->proc, b->proc, a->proc_len) == 0;
}

/* touched[i] marks slots already set or removed by this file, so that an
 * entry repeating an earlier one's key is reported instead of winning. */
static int spec_load_variant(spec_ctx_t *c, const char *path, json_t *obj,
                             size_t base_count, uint8_t *touched) {
  spec_dialect_t *sd = c->sd;
  iso_dialect_t *d = &sd->d;
  if (!json_is_object(obj))
    return spec_fail(c, ISO_E_DIALECT, path, "must be an object");
  int rc = spec_check_keys(c, path, obj, spec_variant_keys);
  if (rc)
    return rc;
  static const char *const required[] = {"mti", "field", "def", NULL};
  char p[SPEC_PATH];
  for (size_t i = 0; required[i]; i++) {
    if (!json_object_get(obj, required[i])) {
      spec_path_key(p, path, required[i]);
      return spec_fail(c, ISO_E_DIALECT, p, "missing");
    }
  }

  iso_variant_t v;
  memset(&v, 0, sizeof v);
  size_t len = 0;
  spec_path_key(p, path, "mti");
  if ((rc = spec_get_pattern(c, p, json_object_get(obj, "mti"), 4, 4, v.mti,
                             &len)))
    return rc;
  long field = 0;
  spec_path_key(p, path, "field");
  if ((rc = spec_get_int(c, p, json_object_get(obj, "field"), 2, ISO_MAX_FIELD,
                         &field)))
    return rc;
  if ((field == 65 && d->max_bitmaps == 3) || field > d->max_bitmaps * 64)
    return spec_fail(c, ISO_E_DIALECT, p,
                     "field %ld is not a data field with %d bitmap%s", field,
                     d->max_bitmaps, d->max_bitmaps == 1 ? "" : "s");
  v.field = (uint8_t)field;
  json_t *proc = json_object_get(obj, "proc");
  if (proc) {
    spec_path_key(p, path, "proc");
    if ((rc = spec_get_pattern(c, p, proc, 1, 6, v.proc, &len)))
      return rc;
    if (field <= 3)
      return spec_fail(c, ISO_E_DIALECT, p,
                       "a processing-code pattern applies only to fields "
                       "above 3");
    v.proc_len = (uint8_t)len;
  }

  /* An entry with the key of an inherited variant replaces it in place
   * (first match wins, so its position matters); "def": null removes it. */
  size_t slot = d->nvariants;
  for (size_t i = 0; i < d->nvariants; i++) {
    if (!spec_same_variant(&sd->variants[i], &v))
      continue;
    if (touched[i])
      return spec_fail(c, ISO_E_DIALECT, path,
                       "repeats the mti, proc and field of an earlier entry");
    slot = i;
  }
  json_t *def = json_object_get(obj, "def");
  spec_path_key(p, path, "def");
  if (json_is_null(def)) {
    if (slot == d->nvariants || slot >= base_count)
      return spec_fail(c, ISO_E_DIALECT, p,
                       "null removes an inherited variant, and the base has "
                       "none with this mti, proc and field");
    /* Kept in place so that a later entry with the same key is still seen
     * as a repeat; the caller drops slots marked 2. */
    touched[slot] = 2;
    return 0;
  }
  /* The variant's layout starts from the dialect's own field definition. */
  v.def = d->fields[v.field];
  if ((rc = spec_load_field(c, p, def, &v.def)))
    return rc;
  if (slot == d->nvariants) {
    if (d->nvariants >= SPEC_MAX_VARIANTS)
      return spec_fail(c, ISO_E_DIALECT, path,
                       "a dialect has at most %d variants", SPEC_MAX_VARIANTS);
    d->nvariants++;
  }
  sd->variants[slot] = v;
  touched[slot] = 1;
  return 0;
}

static int spec_load_variants(spec_ctx_t *c, json_t *arr) {
  spec_dialect_t *sd = c->sd;
  iso_dialect_t *d = &sd->d;
  if (!json_is_array(arr))
    return spec_fail(c, ISO_E_DIALECT, "variants", "must be an array");
  size_t n = json_array_size(arr);
  if (n > SPEC_MAX_VARIANTS)
    return spec_fail(c, ISO_E_DIALECT, "variants",
                     "a dialect has at most %d variants", SPEC_MAX_VARIANTS);
  size_t base_count = d->nvariants;
  iso_variant_t *grown =
      realloc(sd->variants, (base_count + n + 1) * sizeof *grown);
  if (!grown)
    return spec_fail(c, ISO_E_NOMEM, "variants", "out of memory");
  sd->variants = grown;
  d->variants = grown;
  uint8_t *touched = calloc(base_count + n + 1, 1);
  if (!touched)
    return spec_fail(c, ISO_E_NOMEM, "variants", "out of memory");
  for (size_t i = 0; i < n; i++) {
    char p[SPEC_PATH];
    spec_path_index(p, "variants", i);
    int rc =
        spec_load_variant(c, p, json_array_get(arr, i), base_count, touched);
    if (rc) {
      free(touched);
      return rc;
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < d->nvariants; i++)
    if (touched[i] != 2)
      sd->variants[kept++] = sd->variants[i];
  free(touched);
  d->nvariants = kept;
  return 0;
}

static int spec_load_rule(spec_ctx_t *c, const char *path, json_t *obj,
                          size_t base_count, uint8_t *touched) {
  spec_dialect_t *sd = c->sd;
  iso_dialect_t *d = &sd->d;
  if (!json_is_object(obj))
    return spec_fail(c, ISO_E_DIALECT, path, "must be an object");
  int rc = spec_check_keys(c, path, obj, spec_mandatory_keys);
  if (rc)
    return rc;
  char p[SPEC_PATH];
  iso_mandatory_t m;
  memset(&m, 0, sizeof m);
  size_t len = 0;
  spec_path_key(p, path, "mti");
  if ((rc = spec_get_pattern(c, p, json_object_get(obj, "mti"), 4, 4, m.mti,
                             &len)))
    return rc;
  json_t *fields = json_object_get(obj, "fields");
  spec_path_key(p, path, "fields");
  if (!fields)
    return spec_fail(c, ISO_E_DIALECT, p, "missing");

  size_t slot = d->nmandatory;
  for (size_t i = 0; i < d->nmandatory; i++) {
    if (memcmp(sd->mandatory[i].mti, m.mti, 4) != 0)
      continue;
    if (touched[i])
      return spec_fail(c, ISO_E_DIALECT, path,
                       "repeats the mti of an earlier entry");
    slot = i;
  }
  if (json_is_null(fields)) {
    if (slot == d->nmandatory || slot >= base_count)
      return spec_fail(c, ISO_E_DIALECT, p,
                       "null removes an inherited rule, and the base has "
                       "none for this mti");
    /* The pattern stays for repeat detection; no field bit means removed. */
    memset(sd->mandatory[slot].fields, 0, sizeof sd->mandatory[slot].fields);
    touched[slot] = 2;
    return 0;
  }
  if (!json_is_array(fields))
    return spec_fail(c, ISO_E_DIALECT, p,
                     "must be an array of field numbers or null");
  for (size_t i = 0; i < json_array_size(fields); i++) {
    char q[SPEC_PATH];
    long n = 0;
    spec_path_index(q, p, i);
    if ((rc = spec_get_int(c, q, json_array_get(fields, i), 2, ISO_MAX_FIELD,
                           &n)))
      return rc;
    if (!d->fields[n].name || (d->fields[n].flags & ISO_F_BITMAP))
      return spec_fail(c, ISO_E_DIALECT, q,
                       "field %ld is not a data field of this dialect", n);
    m.fields[(n - 1) / 64] |= spec_bit(n);
  }
  if (slot == d->nmandatory) {
    if (d->nmandatory >= SPEC_MAX_MANDATORY)
      return spec_fail(c, ISO_E_DIALECT, path,
                       "a dialect has at most %d mandatory rules",
                       SPEC_MAX_MANDATORY);
    d->nmandatory++;
  }
  sd->mandatory[slot] = m;
  touched[slot] = 1;
  return 0;
}

static int spec_load_mandatory(spec_ctx_t *c, json_t *arr) {
  spec_dialect_t *sd = c->sd;
  iso_dialect_t *d = &sd->d;
  if (!json_is_array(arr))
    return spec_fail(c, ISO_E_DIALECT, "mandatory", "must be an array");
  size_t n = json_array_size(arr);
  if (n > SPEC_MAX_MANDATORY)
    return spec_fail(c, ISO_E_DIALECT, "mandatory",
                     "a dialect has at most %d mandatory rules",
                     SPEC_MAX_MANDATORY);
  size_t base_count = d->nmandatory;
  iso_mandatory_t *grown =
      realloc(sd->mandatory, (base_count + n + 1) * sizeof *grown);
  if (!grown)
    return spec_fail(c, ISO_E_NOMEM, "mandatory", "out of memory");
  sd->mandatory = grown;
  d->mandatory = grown;
  uint8_t *touched = calloc(base_count + n + 1, 1);
  if (!touched)
    return spec_fail(c, ISO_E_NOMEM, "mandatory", "out of memory");
  for (size_t i = 0; i < n; i++) {
    char p[SPEC_PATH];
    spec_path_index(p, "mandatory", i);
    int rc = spec_load_rule(c, p, json_array_get(arr, i), base_count, touched);
    if (rc) {
      free(touched);
      return rc;
    }
  }
  size_t kept = 0;
  for (size_t i = 0; i < d->nmandatory; i++)
    if (touched[i] != 2)
      sd->mandatory[kept++] = sd->mandatory[i];
  free(touched);
  d->nmandatory = kept;
  return 0;
}

/* Rules inherited from the base must still name defined fields. */
static int spec_check_rules(spec_ctx_t *c) {
  const iso_dialect_t *d = &c->sd->d;
  for (size_t i = 0; i < d->nmandatory; i++) {
    for (int n = 2; n <= ISO_MAX_FIELD; n++) {
      uint64_t bit = spec_bit(n);
      if ((d->mandatory[i].fields[(n - 1) / 64] & bit) &&
          (!d->fields[n].name || (d->fields[n].flags & ISO_F_BITMAP)))
        return spec_fail(c, ISO_E_DIALECT, "mandatory",
                         "the rule for mti %.4s requires field %d, which "
                         "this dialect does not define (list the rule with "
                         "the fields it should require, or null to drop it)",
                         d->mandatory[i].mti, n);
    }
  }
  for (size_t i = 0; i < d->nvariants; i++) {
    int n = d->variants[i].field;
    if (n > d->max_bitmaps * 64 || (n == 65 && d->max_bitmaps == 3))
      return spec_fail(c, ISO_E_DIALECT, "variants",
                       "an inherited variant for field %d cannot be carried "
                       "with %d bitmaps",
                       n, d->max_bitmaps);
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The document                                                              */

static int spec_copy_base(spec_ctx_t *c, json_t *v) {
  spec_dialect_t *sd = c->sd;
  if (!json_is_string(v))
    return spec_fail(c, ISO_E_DIALECT, "base",
                     "must be the name of a built-in dialect");
  const iso_dialect_t *base = iso_dialect_find(json_string_value(v));
  if (!base || strlen(json_string_value(v)) != json_string_length(v)) {
    char echo[SPEC_KEY_ECHO + 1];
    spec_key_echo(json_string_value(v), echo, sizeof echo);
    return spec_fail(c, ISO_E_DIALECT, "base",
                     "no built-in dialect is named \"%s\"", echo);
  }
  sd->d = *base;
  sd->d.variants = NULL;
  sd->d.mandatory = NULL;
  /* One spare slot each so that realloc never sees a zero size. */
  sd->variants = malloc((base->nvariants + 1) * sizeof *sd->variants);
  sd->mandatory = malloc((base->nmandatory + 1) * sizeof *sd->mandatory);
  if (!sd->variants || !sd->mandatory)
    return spec_fail(c, ISO_E_NOMEM, "base", "out of memory");
  if (base->nvariants)
    memcpy(sd->variants, base->variants,
           base->nvariants * sizeof *sd->variants);
  if (base->nmandatory)
    memcpy(sd->mandatory, base->mandatory,
           base->nmandatory * sizeof *sd->mandatory);
  sd->d.variants = sd->variants;
  sd->d.mandatory = sd->mandatory;
  return 0;
}

static int spec_load_name(spec_ctx_t *c, json_t *root) {
  iso_dialect_t *d = &c->sd->d;
  json_t *v = json_object_get(root, "name");
  if (!v)
    return spec_fail(c, ISO_E_DIALECT, "name", "missing");
  int rc = spec_get_text(c, "name", v, SPEC_MAX_NAME, &d->name);
  if (rc)
    return rc;
  for (const char *s = d->name; *s; s++) {
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
      return spec_fail(c, ISO_E_DIALECT, "name",
                       "may contain only letters, digits, '-', '_' and '.'");
  }
  v = json_object_get(root, "description");
  if (v)
    return spec_get_text(c, "description", v, SPEC_MAX_TEXT, &d->description);
  if (!json_object_get(root, "base"))
    d->description = "";
  return 0;
}

static int spec_load_wire(spec_ctx_t *c, json_t *root, int has_base) {
  iso_dialect_t *d = &c->sd->d;
  static const char *const keys[] = {"mti", "bitmap", "max_bitmaps", "fields",
                                     NULL};
  if (!has_base) {
    for (size_t i = 0; keys[i]; i++)
      if (!json_object_get(root, keys[i]))
        return spec_fail(c, ISO_E_DIALECT, keys[i],
                         "missing (required when there is no \"base\")");
  }
  json_t *v;
  int x = 0, rc;
  if ((v = json_object_get(root, "mti"))) {
    if ((rc = spec_get_enum(c, "mti", v, spec_mti_encs, &x)))
      return rc;
    d->mti_enc = (uint8_t)x;
  }
  if ((v = json_object_get(root, "bitmap"))) {
    if ((rc = spec_get_enum(c, "bitmap", v, spec_bitmap_encs, &x)))
      return rc;
    d->bitmap_enc = (uint8_t)x;
  }
  if ((v = json_object_get(root, "max_bitmaps"))) {
    long n = 0;
    if ((rc = spec_get_int(c, "max_bitmaps", v, 1, 3, &n)))
      return rc;
    d->max_bitmaps = (uint8_t)n;
  }
  spec_set_bitmap_slots(d);
  return 0;
}

static int spec_load_root(spec_ctx_t *c, json_t *root) {
  if (!json_is_object(root))
    return spec_fail(c, ISO_E_DIALECT, "(document)", "must be a JSON object");
  int rc = spec_check_keys(c, "", root, spec_top_keys);
  if (rc)
    return rc;
  json_t *base = json_object_get(root, "base");
  json_t *v;
  if ((base && (rc = spec_copy_base(c, base))) ||
      (rc = spec_load_name(c, root)) ||
      (rc = spec_load_wire(c, root, base != NULL)))
    return rc;
  if ((v = json_object_get(root, "fields")) && (rc = spec_load_fields(c, v)))
    return rc;
  if ((v = json_object_get(root, "variants")) &&
      (rc = spec_load_variants(c, v)))
    return rc;
  if ((v = json_object_get(root, "mandatory")) &&
      (rc = spec_load_mandatory(c, v)))
    return rc;
  if ((rc = spec_check_rules(c)))
    return rc;

  iso_err_t err;
  memset(&err, 0, sizeof err);
  rc = iso_dialect_check(&c->sd->d, &err);
  if (rc) {
    char text[200];
    iso_err_format(&err, &c->sd->d, text, sizeof text);
    if (err.field > 0) {
      char p[SPEC_PATH];
      snprintf(p, sizeof p, "fields.%d", err.field);
      return spec_fail(c, ISO_E_DIALECT, p, "rejected by the codec: %s", text);
    }
    return spec_fail(c, ISO_E_DIALECT, NULL, "rejected by the codec: %s", text);
  }
  return 0;
}

int iso_spec_load_string(const char *json, size_t len, iso_dialect_t **out,
                         char *msg, size_t msgcap) {
  if (msg && msgcap)
    msg[0] = '\0';
  if (out)
    *out = NULL;
  spec_ctx_t c = {NULL, msg, msgcap};
  if (!json || !out)
    return spec_fail(&c, ISO_E_INVAL, NULL, "invalid argument");

  json_error_t jerr;
  json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    /* jansson quotes the input after " near "; a wrong file given as a
     * dialect may be a message capture, so the quote is dropped. */
    char *near = strstr(jerr.text, " near ");
    if (near)
      *near = '\0';
    return spec_fail(&c, ISO_E_DIALECT, NULL, "line %d, column %d: %s",
                     jerr.line, jerr.column, jerr.text);
  }

  c.sd = calloc(1, sizeof *c.sd);
  if (!c.sd) {
    json_decref(root);
    return spec_fail(&c, ISO_E_NOMEM, NULL, "out of memory");
  }
  int rc = spec_load_root(&c, root);
  json_decref(root);
  if (rc) {
    iso_spec_free(&c.sd->d);
    return rc;
  }
  *out = &c.sd->d;
  return 0;
}

int iso_spec_load_file(const char *path, iso_dialect_t **out, char *msg,
                       size_t msgcap) {
  if (msg && msgcap)
    msg[0] = '\0';
  if (out)
    *out = NULL;
  spec_ctx_t c = {NULL, msg, msgcap};
  if (!path || !out)
    return spec_fail(&c, ISO_E_INVAL, NULL, "invalid argument");

  FILE *f = fopen(path, "rb");
  if (!f) {
    int e = errno;
    return spec_fail(&c, e == ENOENT ? ISO_E_NOT_FOUND : ISO_E_INVAL, path,
                     "cannot open: %s", strerror(e));
  }
  char *buf = malloc(ISO_SPEC_MAX_FILE + 1);
  if (!buf) {
    fclose(f);
    return spec_fail(&c, ISO_E_NOMEM, path, "out of memory");
  }
  size_t len = fread(buf, 1, ISO_SPEC_MAX_FILE + 1, f);
  int rerr = ferror(f);
  fclose(f);
  int rc;
  if (rerr) {
    rc = spec_fail(&c, ISO_E_INVAL, path, "read error");
  } else if (len > ISO_SPEC_MAX_FILE) {
    rc = spec_fail(&c, ISO_E_DIALECT, path,
                   "file is larger than %u bytes, the most a dialect file "
                   "may be",
                   ISO_SPEC_MAX_FILE);
  } else {
    char inner[512];
    rc = iso_spec_load_string(buf, len, out, inner, sizeof inner);
    if (rc)
      spec_fail(&c, rc, path, "%s", inner);
  }
  free(buf);
  return rc;
}

const iso_dialect_t *iso_spec_resolve(const char *name_or_path,
                                      iso_dialect_t **owned, char *msg,
                                      size_t msgcap) {
  if (msg && msgcap)
    msg[0] = '\0';
  if (owned)
    *owned = NULL;
  spec_ctx_t c = {NULL, msg, msgcap};
  if (!name_or_path || !owned) {
    spec_fail(&c, ISO_E_INVAL, NULL, "invalid argument");
    return NULL;
  }
  const iso_dialect_t *d = iso_dialect_find(name_or_path);
  if (d)
    return d;
  int rc = iso_spec_load_file(name_or_path, owned, msg, msgcap);
  if (rc == ISO_E_NOT_FOUND && !strchr(name_or_path, '/') &&
      !strstr(name_or_path, ".json")) {
    char echo[SPEC_KEY_ECHO + 1];
    spec_key_echo(name_or_path, echo, sizeof echo);
    spec_fail(&c, rc, NULL,
              "\"%s\" is neither a built-in dialect (see \"iso8583 "
              "dialects\") nor a dialect file",
              echo);
  }
  return rc ? NULL : *owned;
}
