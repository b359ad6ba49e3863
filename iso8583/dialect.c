/*
 * dialect.c — what a dialect means: the registry of built-in dialects, the
 * sanity check every dialect passes before use, byte sizes of encoded
 * lengths and bodies, and the resolution of per-MTI / per-processing-code
 * field variants.
 *
 * Invariants a checked dialect guarantees to the parser and builder:
 *   (1) every defined field's largest body fits in 65535 bytes and its
 *       length prefix can express its maximum length;
 *   (2) packed BCD bodies appear only on n, z and x+n fields, and HEX or
 *       BINARY bodies only on b fields;
 *   (3) variant and mandatory patterns contain only digits and '.'.
 */
#include "internal.h"

#include <string.h>

size_t iso_dialect_count(void) {
  return iso__nbuiltin;
}

const iso_dialect_t *iso_dialect_at(size_t i) {
  return i < iso__nbuiltin ? iso__builtin[i] : NULL;
}

const iso_dialect_t *iso_dialect_find(const char *name) {
  if (!name)
    return NULL;
  for (size_t i = 0; i < iso__nbuiltin; i++)
    if (strcmp(iso__builtin[i]->name, name) == 0)
      return iso__builtin[i];
  return NULL;
}

size_t iso_body_bytes(const iso_field_def_t *def, size_t units) {
  return iso__body_bytes(def, units);
}

int iso__pattern_match(const char *pat, const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (pat[i] != '.' && pat[i] != s[i])
      return 0;
  return 1;
}

const iso_field_def_t *iso__resolve(const iso_dialect_t *d, int n,
                                    const char mti[4], const char *proc,
                                    uint8_t *variant) {
  *variant = 0;
  for (size_t i = 0; i < d->nvariants; i++) {
    const iso_variant_t *v = &d->variants[i];
    if (v->field != n || !iso__mti_match(v->mti, mti))
      continue;
    if (v->proc_len &&
        (!proc || n <= 3 || !iso__pattern_match(v->proc, proc, v->proc_len)))
      continue;
    *variant = (uint8_t)(i + 1 > 255 ? 255 : i + 1);
    return &v->def;
  }
  return &d->fields[n];
}

int iso__same_encoding(const iso_field_def_t *a, const iso_field_def_t *b) {
  if (a->max_len != b->max_len || a->len_type != b->len_type ||
      a->body_enc != b->body_enc || a->cls != b->cls || a->pad != b->pad)
    return 0;
  return a->len_type == ISO_LEN_FIXED || a->len_enc == b->len_enc;
}

static int iso__check_field(const iso_field_def_t *f, int n, iso_err_t *err) {
  if (!f->name)
    return 0;
  if (f->cls > ISO_CLS_XN || f->pad > ISO_PAD_RIGHT_0 || f->max_len == 0)
    return iso__fail(err, ISO_E_DIALECT, n, 0, 0, 0);
  switch (f->body_enc) {
  case ISO_ENC_ASCII:
  case ISO_ENC_EBCDIC:
    if (f->cls == ISO_CLS_B)
      return iso__fail(err, ISO_E_DIALECT, n, 0, 0, 0);
    break;
  case ISO_ENC_BCD:
    if (f->cls != ISO_CLS_N && f->cls != ISO_CLS_Z && f->cls != ISO_CLS_XN)
      return iso__fail(err, ISO_E_DIALECT, n, 0, 0, 0);
    break;
  case ISO_ENC_BINARY:
  case ISO_ENC_HEX:
    if (f->cls != ISO_CLS_B)
      return iso__fail(err, ISO_E_DIALECT, n, 0, 0, 0);
    break;
  default:
    return iso__fail(err, ISO_E_DIALECT, n, 0, 0, 0);
  }
  if (f->cls == ISO_CLS_XN && f->max_len < 2)
    return iso__fail(err, ISO_E_DIALECT, n, 0, 2, f->max_len);
  if ((f->flags & ISO_F_TLV) && f->cls != ISO_CLS_B)
    return iso__fail(err, ISO_E_DIALECT, n, 0, 0, 0);
  if (f->flags & ISO_F_BITMAP)
    return iso__fail(err, ISO_E_DIALECT, n, 0, 0, 0);
  size_t limit;
  switch (f->len_type) {
  case ISO_LEN_FIXED:
    limit = 9999;
    break;
  case ISO_LEN_LL:
    limit = f->len_enc == ISO_ENC_BINARY ? 255 : 99;
    break;
  case ISO_LEN_LLL:
    limit = 999;
    break;
  case ISO_LEN_LLLL:
    limit = 9999;
    break;
  default:
    return iso__fail(err, ISO_E_DIALECT, n, 0, 0, 0);
  }
  if (f->len_type != ISO_LEN_FIXED && f->len_enc > ISO_ENC_BINARY)
    return iso__fail(err, ISO_E_DIALECT, n, 0, 0, 0);
  if (f->max_len > limit || iso_body_bytes(f, f->max_len) > 65535)
    return iso__fail(err, ISO_E_DIALECT, n, 0, limit, f->max_len);
  return 0;
}

static int iso__check_pattern(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != '.' && (p[i] < '0' || p[i] > '9'))
      return 0;
  return 1;
}

int iso_dialect_check(const iso_dialect_t *d, iso_err_t *err) {
  if (!d || !d->name)
    return iso__fail(err, ISO_E_INVAL, 0, 0, 0, 0);
  if (d->mti_enc != ISO_ENC_ASCII && d->mti_enc != ISO_ENC_EBCDIC &&
      d->mti_enc != ISO_ENC_BCD)
    return iso__fail(err, ISO_E_DIALECT, 0, 0, 0, 0);
  if (d->bitmap_enc != ISO_ENC_BINARY && d->bitmap_enc != ISO_ENC_HEX &&
      d->bitmap_enc != ISO_ENC_EBCDIC)
    return iso__fail(err, ISO_E_DIALECT, 0, 0, 0, 0);
  if (d->max_bitmaps < 1 || d->max_bitmaps > 3)
    return iso__fail(err, ISO_E_DIALECT, 0, 0, 3, d->max_bitmaps);
  int last = d->max_bitmaps * 64;
  for (int n = 2; n <= ISO_MAX_FIELD; n++) {
    if (n == 65 && d->max_bitmaps == 3)
      continue; /* the tertiary bitmap's slot */
    if (n > last && d->fields[n].name)
      return iso__fail(err, ISO_E_DIALECT, n, 0, (size_t)last, (size_t)n);
    int rc = iso__check_field(&d->fields[n], n, err);
    if (rc)
      return rc;
  }
  for (size_t i = 0; i < d->nvariants; i++) {
    const iso_variant_t *v = &d->variants[i];
    if (v->field < 2 || v->field > last ||
        (v->field == 65 && d->max_bitmaps == 3) || !v->def.name ||
        v->proc_len > 6 || !iso__check_pattern(v->mti, 4) ||
        !iso__check_pattern(v->proc, v->proc_len))
      return iso__fail(err, ISO_E_DIALECT, v->field, 0, 0, 0);
    int rc = iso__check_field(&v->def, v->field, err);
    if (rc)
      return rc;
  }
  for (size_t i = 0; i < d->nmandatory; i++) {
    const iso_mandatory_t *m = &d->mandatory[i];
    if (!iso__check_pattern(m->mti, 4))
      return iso__fail(err, ISO_E_DIALECT, 0, 0, 0, 0);
    for (int n = 2; n <= ISO_MAX_FIELD; n++)
      if ((m->fields[ISO__WORD(n)] & ISO__BIT(n)) && !d->fields[n].name)
        return iso__fail(err, ISO_E_DIALECT, n, 0, 0, 0);
  }
  return 0;
}
