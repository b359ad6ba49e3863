/*
 * build.c — field values to wire bytes, written straight into the caller's
 * buffer.
 *
 * A builder holds references to values (text, bytes, or another message's
 * wire bytes); iso_build writes MTI, bitmaps and fields in order, checking
 * the space left before every write.  Each encoded body is then validated
 * by the same routine the parser uses (iso__check_body), so the builder
 * cannot emit a message the parser would refuse.
 *
 * Invariants:
 *   (1) nothing is written at or beyond out + cap;
 *   (2) the secondary and tertiary bitmaps are emitted exactly when a field
 *       they cover is set, so a built message parses back to the same view;
 *   (3) a value copied with iso_set_from between identical encodings is
 *       copied byte for byte, never decoded and re-encoded.
 */
#include "internal.h"

#include <string.h>

enum { KIND_TEXT = 1, KIND_BYTES, KIND_WIRE };

static int field_exists(const iso_dialect_t *d, int n) {
  if (d->fields[n].name && !(d->fields[n].flags & ISO_F_BITMAP))
    return 1;
  for (size_t i = 0; i < d->nvariants; i++)
    if (d->variants[i].field == n)
      return 1;
  return 0;
}

static int settable(const iso_builder_t *b, int n) {
  if (!b || n < 2 || n > ISO_MAX_FIELD)
    return ISO_E_INVAL;
  const iso_dialect_t *d = b->dialect;
  if ((n == 65 && d->max_bitmaps == 3) || n > 64 * d->max_bitmaps ||
      !field_exists(d, n))
    return ISO_E_UNDEFINED_FIELD;
  return 0;
}

void iso_builder_init(iso_builder_t *b, const iso_dialect_t *d,
                      const char mti[4]) {
  b->dialect = d;
  if (mti)
    memcpy(b->mti, mti, 4);
  else
    memset(b->mti, 0, 4);
  b->bitmap[0] = b->bitmap[1] = b->bitmap[2] = 0;
  b->scratch_used_ = 0;
}

static int set_value(iso_builder_t *b, int n, const void *p, size_t len,
                     int kind, size_t units) {
  int rc = settable(b, n);
  if (rc)
    return rc;
  if (!p && len)
    return ISO_E_INVAL;
  if (len > UINT32_MAX || units > UINT16_MAX)
    return ISO_E_TOO_LONG;
  b->v_[n].p = p;
  b->v_[n].len = (uint32_t)len;
  b->v_[n].units = (uint16_t)units;
  b->v_[n].kind = (uint8_t)kind;
  iso__set_bit(b->bitmap, n);
  return 0;
}

int iso_set_text(iso_builder_t *b, int n, const char *s, size_t len) {
  return set_value(b, n, s, len, KIND_TEXT, 0);
}

int iso_set_bytes(iso_builder_t *b, int n, const uint8_t *p, size_t len) {
  return set_value(b, n, p, len, KIND_BYTES, 0);
}

static char *scratch_take(iso_builder_t *b, size_t n) {
  if (sizeof b->scratch_ - b->scratch_used_ < n)
    return NULL;
  char *p = b->scratch_ + b->scratch_used_;
  b->scratch_used_ += n;
  return p;
}

int iso_set_u64(iso_builder_t *b, int n, uint64_t v) {
  int rc = settable(b, n);
  if (rc)
    return rc;
  const iso_field_def_t *def = &b->dialect->fields[n];
  if (def->cls != ISO_CLS_N)
    return ISO_E_WRONG_CLASS;
  char digits[20];
  size_t nd = 0;
  do {
    digits[nd++] = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  size_t width = def->len_type == ISO_LEN_FIXED ? def->max_len : nd;
  if (nd > width)
    return ISO_E_TOO_LONG;
  char *p = scratch_take(b, width);
  if (!p)
    return ISO_E_NOSPACE;
  memset(p, '0', width - nd);
  for (size_t i = 0; i < nd; i++)
    p[width - 1 - i] = digits[i];
  return set_value(b, n, p, width, KIND_TEXT, 0);
}

int iso_set_from(iso_builder_t *b, int n, const iso_msg_t *src) {
  int rc = settable(b, n);
  if (rc)
    return rc;
  const iso_field_def_t *sdef = iso_msg_field_def(src, n);
  if (!sdef)
    return ISO_E_ABSENT;
  const iso_dialect_t *d = b->dialect;
  const iso_span_t *s = &src->f[n];
  const uint8_t *body = src->buf + s->off + s->hlen;
  int has_variant = 0;
  for (size_t i = 0; i < d->nvariants; i++)
    has_variant |= d->variants[i].field == n;
  /* A field whose layout can change with the MTI is re-encoded as text:
   * the target's layout is known only when iso_build sees the MTI. */
  if (!has_variant && iso__same_encoding(sdef, &d->fields[n]))
    return set_value(b, n, body, s->blen, KIND_WIRE, s->units);
  size_t tl = iso__text_len(sdef, s->units);
  char *t = scratch_take(b, tl);
  if (!t)
    return ISO_E_NOSPACE;
  rc = iso__body_to_text(sdef, body, s->blen, s->units, t);
  if (rc)
    return rc;
  return set_value(b, n, t, tl, KIND_TEXT, 0);
}

void iso_unset(iso_builder_t *b, int n) {
  if (b && n >= 2 && n <= ISO_MAX_FIELD)
    iso__clear_bit(b->bitmap, n);
}

/* ------------------------------------------------------------------------ */
/* Encoders                                                                  */

typedef struct {
  uint8_t *out;
  size_t cap;
  size_t pos;
} wbuf_t;

static int room(const wbuf_t *w, size_t n, int field, iso_err_t *err) {
  if (w->cap - w->pos < n)
    return iso__fail(err, ISO_E_NOSPACE, field, w->pos, n, w->cap - w->pos);
  return 0;
}

static int write_mti(const iso_builder_t *b, wbuf_t *w, iso_err_t *err) {
  const iso_dialect_t *d = b->dialect;
  for (int i = 0; i < 4; i++)
    if (b->mti[i] < '0' || b->mti[i] > '9')
      return iso__fail(err, ISO_E_BAD_MTI, 0, (size_t)i, 0, 0);
  size_t n = d->mti_enc == ISO_ENC_BCD ? 2 : 4;
  int rc = room(w, n, 0, err);
  if (rc)
    return rc;
  uint8_t *o = w->out + w->pos;
  if (d->mti_enc == ISO_ENC_BCD) {
    o[0] = (uint8_t)((b->mti[0] - '0') << 4 | (b->mti[1] - '0'));
    o[1] = (uint8_t)((b->mti[2] - '0') << 4 | (b->mti[3] - '0'));
  } else {
    for (int i = 0; i < 4; i++)
      o[i] = d->mti_enc == ISO_ENC_EBCDIC ? iso__a2e[(uint8_t)b->mti[i]]
                                          : (uint8_t)b->mti[i];
  }
  w->pos += n;
  return 0;
}

static int write_bitmap(const iso_dialect_t *d, uint64_t v, wbuf_t *w,
                        int field, iso_err_t *err) {
  size_t n = d->bitmap_enc == ISO_ENC_BINARY ? 8 : 16;
  int rc = room(w, n, field, err);
  if (rc)
    return rc;
  uint8_t *o = w->out + w->pos;
  if (d->bitmap_enc == ISO_ENC_BINARY) {
    for (int i = 0; i < 8; i++)
      o[i] = (uint8_t)(v >> (56 - 8 * i));
  } else {
    for (int i = 0; i < 16; i++) {
      uint8_t c = (uint8_t)iso__hexdigits[(v >> (60 - 4 * i)) & 15];
      o[i] = d->bitmap_enc == ISO_ENC_EBCDIC ? iso__a2e[c] : c;
    }
  }
  w->pos += n;
  return 0;
}

static void write_prefix(const iso_field_def_t *def, size_t units, uint8_t *o,
                         size_t hlen) {
  switch (def->len_enc) {
  case ISO_ENC_ASCII:
  case ISO_ENC_EBCDIC:
    for (size_t i = hlen; i-- > 0;) {
      uint8_t c = (uint8_t)('0' + units % 10);
      o[i] = def->len_enc == ISO_ENC_EBCDIC ? iso__a2e[c] : c;
      units /= 10;
    }
    break;
  case ISO_ENC_BCD:
    for (size_t i = hlen; i-- > 0;) {
      o[i] = (uint8_t)((units / 10 % 10) << 4 | units % 10);
      units /= 100;
    }
    break;
  default: /* BINARY; iso_dialect_check admits nothing else */
    for (size_t i = hlen; i-- > 0;) {
      o[i] = (uint8_t)(units & 0xFF);
      units >>= 8;
    }
    break;
  }
}

/* Packs ndig characters of text into BCD with the definition's padding. */
static int pack_bcd(const iso_field_def_t *def, const char *t, size_t ndig,
                    uint8_t *o, int field, size_t off, iso_err_t *err) {
  size_t nb = (ndig + 1) / 2;
  int odd = (int)(ndig & 1);
  int left = def->pad == ISO_PAD_LEFT_0 || def->pad == ISO_PAD_LEFT_F;
  uint8_t padnib =
      (def->pad == ISO_PAD_LEFT_F || def->pad == ISO_PAD_RIGHT_F) ? 0xF : 0;
  size_t k = 0; /* nibble index */
  memset(o, 0, nb);
  if (odd && left)
    o[k++ >> 1] |= (uint8_t)(padnib << 4);
  for (size_t i = 0; i < ndig; i++, k++) {
    uint8_t c = (uint8_t)t[i], nib;
    if (c >= '0' && c <= '9')
      nib = (uint8_t)(c - '0');
    else if (def->cls == ISO_CLS_Z && (c == 'D' || c == '='))
      nib = 0xD;
    else
      return iso__fail(err, ISO_E_BAD_CHAR, field, off, 0, 0);
    o[k >> 1] |= (k & 1) ? nib : (uint8_t)(nib << 4);
  }
  if (odd && !left)
    o[k >> 1] |= padnib;
  return 0;
}

/* 4 bytes to 8 upper-case hex characters, word at a time: each byte's
 * nibbles are spread into two lanes, then 0-9 become '0'-'9' and 10-15
 * become 'A'-'F' (add 7 more where nibble + 6 carries into bit 4). */
static void hex4(const uint8_t *in, uint8_t *out) {
  const uint64_t ones = UINT64_C(0x0101010101010101);
  uint32_t x;
  memcpy(&x, in, 4);
  uint64_t v = x;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  v = (v | v << 16) & UINT64_C(0x0000FFFF0000FFFF);
  v = (v | v << 8) & UINT64_C(0x00FF00FF00FF00FF);
#else
  v = (uint64_t)in[0] | (uint64_t)in[1] << 16 | (uint64_t)in[2] << 32 |
      (uint64_t)in[3] << 48;
#endif
  uint64_t lanes = UINT64_C(0x000F000F000F000F);
  uint64_t n = ((v >> 4) & lanes) | ((v & lanes) << 8);
  uint64_t letters = ((n + 6 * ones) >> 4) & ones;
  uint64_t c = n + 0x30 * ones + letters * 7;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  memcpy(out, &c, 8);
#else
  for (int k = 0; k < 8; k++)
    out[k] = (uint8_t)(c >> (8 * k));
#endif
}

static void hex_expand(const uint8_t *in, size_t n, uint8_t *out) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    hex4(in + i, out + 2 * i);
  for (; i < n; i++) {
    out[2 * i] = (uint8_t)iso__hexdigits[in[i] >> 4];
    out[2 * i + 1] = (uint8_t)iso__hexdigits[in[i] & 15];
  }
}

static int unhex(const char *t, size_t n, uint8_t *o, int field, size_t off,
                 iso_err_t *err) {
  for (size_t i = 0; i < n; i++) {
    int hi = iso__hexval((uint8_t)t[2 * i]);
    int lo = iso__hexval((uint8_t)t[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return iso__fail(err, ISO_E_BAD_HEX, field, off, 0, 0);
    o[i] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

static int encode_body(const iso_field_def_t *def, int kind, const void *p,
                       size_t len, size_t units, uint8_t *o, int field,
                       size_t off, iso_err_t *err) {
  const char *t = p;
  const uint8_t *bytes = p;
  switch (def->body_enc) {
  case ISO_ENC_ASCII:
    memcpy(o, p, len);
    return 0;
  case ISO_ENC_EBCDIC:
    for (size_t i = 0; i < len; i++)
      o[i] = iso__a2e[(uint8_t)t[i]];
    return 0;
  case ISO_ENC_BCD:
    if (def->cls == ISO_CLS_XN) {
      o[0] = (uint8_t)t[0]; /* sign, checked by iso__check_body */
      return pack_bcd(def, t + 1, units - 1, o + 1, field, off, err);
    }
    return pack_bcd(def, t, units, o, field, off, err);
  case ISO_ENC_HEX:
    if (kind == KIND_TEXT) {
      memcpy(o, p, len);
    } else {
      hex_expand(bytes, len, o);
    }
    return 0;
  case ISO_ENC_BINARY:
    if (kind == KIND_TEXT)
      return unhex(t, units, o, field, off, err);
    memcpy(o, p, len);
    return 0;
  default:
    return iso__fail(err, ISO_E_DIALECT, field, off, 0, 0);
  }
}

/* What encoding did not already guarantee.  pack_bcd refuses non-digits
 * and writes the right pad; hex written from bytes is hex by construction;
 * only text classes, signs, hex given as text and DE55 structure are left
 * to check.  Offsets are those of the written body. */
static int check_encoded(const iso_field_def_t *def, int kind, const void *p,
                         size_t len, const uint8_t *body, size_t blen,
                         size_t units, int field, size_t off, iso_err_t *err) {
  switch (def->body_enc) {
  case ISO_ENC_ASCII:
  case ISO_ENC_EBCDIC:
    return iso__check_text(def, body, blen, field, off, err);
  case ISO_ENC_BCD:
    if (def->cls == ISO_CLS_XN && body[0] != 'C' && body[0] != 'D')
      return iso__fail(err, ISO_E_BAD_SIGN, field, off, 0, 0);
    return 0;
  case ISO_ENC_HEX:
    if (kind == KIND_TEXT)
      return iso__check_body(def, body, blen, units, field, off, err);
    if (def->flags & ISO_F_TLV) {
      int rc = iso__check_tlv(p, len, field, 0, err);
      if (rc < 0 && err)
        err->offset = off + 2 * err->offset;
      return rc;
    }
    return 0;
  case ISO_ENC_BINARY:
    return (def->flags & ISO_F_TLV)
               ? iso__check_tlv(body, blen, field, off, err)
               : 0;
  default:
    return iso__fail(err, ISO_E_DIALECT, field, off, 0, 0);
  }
}

static int write_field(const iso_builder_t *b, int n,
                       const iso_field_def_t *def, wbuf_t *w, iso_err_t *err) {
  int kind = b->v_[n].kind;
  const void *p = b->v_[n].p;
  size_t len = b->v_[n].len, units;
  if (!def->name || (def->flags & ISO_F_BITMAP))
    return iso__fail(err, ISO_E_UNDEFINED_FIELD, n, w->pos, 0, 0);
  if (kind == KIND_WIRE) {
    units = b->v_[n].units;
  } else if (def->cls == ISO_CLS_B) {
    if (kind == KIND_TEXT && (len & 1))
      return iso__fail(err, ISO_E_BAD_HEX, n, w->pos, len + 1, len);
    units = kind == KIND_TEXT ? len / 2 : len;
  } else {
    if (kind == KIND_BYTES)
      return iso__fail(err, ISO_E_WRONG_CLASS, n, w->pos, 0, 0);
    units = len;
  }
  if (def->len_type == ISO_LEN_FIXED && units != def->max_len)
    return iso__fail(err, ISO_E_WRONG_LENGTH, n, w->pos, def->max_len, units);
  if (units > def->max_len)
    return iso__fail(err, ISO_E_TOO_LONG, n, w->pos, def->max_len, units);
  if (def->cls == ISO_CLS_XN && units < 2)
    return iso__fail(err, ISO_E_BAD_LENGTH, n, w->pos, 2, units);
  size_t hlen = iso__prefix_bytes(def);
  size_t blen = iso__body_bytes(def, units);
  int rc = room(w, hlen + blen, n, err);
  if (rc)
    return rc;
  uint8_t *o = w->out + w->pos;
  write_prefix(def, units, o, hlen);
  size_t boff = w->pos + hlen;
  if (kind == KIND_WIRE) {
    memcpy(o + hlen, p, blen);
  } else {
    rc = encode_body(def, kind, p, len, units, o + hlen, n, boff, err);
    if (!rc)
      rc =
          check_encoded(def, kind, p, len, o + hlen, blen, units, n, boff, err);
    if (rc)
      return rc;
  }
  w->pos = boff + blen;
  return 0;
}

/* Processing code of the message being built, for DE3-keyed variants. */
static int builder_proc(const iso_builder_t *b, char proc[6]) {
  if (!(b->bitmap[0] & ISO__BIT(3)))
    return 0;
  const iso_field_def_t *def = &b->dialect->fields[3];
  if (b->v_[3].kind == KIND_TEXT && b->v_[3].len == 6) {
    memcpy(proc, b->v_[3].p, 6);
    return 1;
  }
  if (b->v_[3].kind == KIND_WIRE && b->v_[3].units == 6 &&
      iso__text_len(def, 6) == 6)
    return iso__body_to_text(def, b->v_[3].p, b->v_[3].len, 6, proc) == 0;
  return 0;
}

int iso_build(const iso_builder_t *b, uint8_t *out, size_t cap, size_t *outlen,
              iso_err_t *err) {
  if (!b || !b->dialect || (!out && cap))
    return iso__fail(err, ISO_E_INVAL, 0, 0, 0, 0);
  const iso_dialect_t *d = b->dialect;
  wbuf_t w = {out, cap, 0};
  uint64_t bm[3] = {b->bitmap[0], b->bitmap[1], b->bitmap[2]};
  bm[0] &= ~ISO__BIT(1);
  if (d->max_bitmaps == 3)
    bm[1] &= ~ISO__BIT(65);
  if (bm[2]) {
    if (d->max_bitmaps < 3)
      return iso__fail(err, ISO_E_BAD_BITMAP, 65, 0, 0, 0);
    bm[1] |= ISO__BIT(65);
  }
  if (bm[1]) {
    if (d->max_bitmaps < 2)
      return iso__fail(err, ISO_E_BAD_BITMAP, 1, 0, 0, 0);
    bm[0] |= ISO__BIT(1);
  }
  int rc = write_mti(b, &w, err);
  if (!rc)
    rc = write_bitmap(d, bm[0], &w, 0, err);
  if (!rc && (bm[0] & ISO__BIT(1)))
    rc = write_bitmap(d, bm[1], &w, 1, err);
  if (rc)
    return rc;
  char proc[6];
  int have_proc = d->nvariants ? builder_proc(b, proc) : 0;
  for (int wd = 0; wd < 3; wd++) {
    uint64_t bits = bm[wd];
    if (wd == 0)
      bits &= ~ISO__BIT(1);
    while (bits) {
      int k = __builtin_clzll(bits);
      bits &= ~(UINT64_C(1) << (63 - k));
      int n = wd * 64 + k + 1;
      if (n == 65 && d->max_bitmaps == 3) {
        rc = write_bitmap(d, bm[2], &w, 65, err);
      } else {
        const iso_field_def_t *def = &d->fields[n];
        uint8_t variant;
        if (d->nvariants)
          def = iso__resolve(d, n, b->mti, have_proc ? proc : NULL, &variant);
        rc = write_field(b, n, def, &w, err);
      }
      if (rc)
        return rc;
    }
  }
  if (outlen)
    *outlen = w.pos;
  return 0;
}
