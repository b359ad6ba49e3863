/*
 * parse.c — wire bytes to a zero-copy view, and the accessors that decode a
 * field's value only when asked.
 *
 * iso_parse walks the message once, front to back, with a cursor that is
 * checked against the remaining length before every read.  For each present
 * field it records (offset, prefix length, body length, units, variant) in
 * the caller's iso_msg_t and validates the body against its definition.
 * It allocates nothing and never writes to the buffer.
 *
 * Invariants after a successful parse:
 *   (1) for every present field n, f[n].off + f[n].hlen + f[n].blen <= len,
 *       and the body satisfies its content class, length and padding rules;
 *   (2) the fields' byte ranges are contiguous and cover the buffer exactly
 *       after the MTI and primary bitmap (no trailing bytes);
 *   (3) a secondary or tertiary bitmap announced is present and not empty,
 *       so building the view again produces the same bytes.
 */
#include "internal.h"

#include <string.h>

/* ------------------------------------------------------------------------ */
/* MTI and bitmaps                                                           */

static int parse_mti(iso_msg_t *m, const iso_dialect_t *d, const uint8_t *b,
                     size_t len, size_t *pos, iso_err_t *err) {
  switch (d->mti_enc) {
  case ISO_ENC_BCD:
    if (len < 2)
      return iso__fail(err, ISO_E_TRUNCATED, 0, 0, 2, len);
    for (int i = 0; i < 2; i++) {
      uint8_t hi = b[i] >> 4, lo = b[i] & 15;
      if (hi > 9 || lo > 9)
        return iso__fail(err, ISO_E_BAD_MTI, 0, (size_t)i, 0, 0);
      m->mti[2 * i] = (char)('0' + hi);
      m->mti[2 * i + 1] = (char)('0' + lo);
    }
    *pos = 2;
    return 0;
  case ISO_ENC_ASCII:
  case ISO_ENC_EBCDIC:
    if (len < 4)
      return iso__fail(err, ISO_E_TRUNCATED, 0, 0, 4, len);
    for (int i = 0; i < 4; i++) {
      uint8_t c = d->mti_enc == ISO_ENC_EBCDIC ? iso__e2a[b[i]] : b[i];
      if (c < '0' || c > '9')
        return iso__fail(err, ISO_E_BAD_MTI, 0, (size_t)i, 0, 0);
      m->mti[i] = (char)c;
    }
    *pos = 4;
    return 0;
  default:
    return iso__fail(err, ISO_E_DIALECT, 0, 0, 0, 0);
  }
}

static size_t bitmap_bytes(const iso_dialect_t *d) {
  return d->bitmap_enc == ISO_ENC_BINARY ? 8 : 16;
}

/* Reads one 64-bit bitmap at *pos; field is 0 (primary), 1 or 65. */
static int parse_bitmap(const iso_dialect_t *d, const uint8_t *b, size_t len,
                        size_t *pos, int field, uint64_t *out, iso_err_t *err) {
  size_t need = bitmap_bytes(d);
  if (len - *pos < need)
    return iso__fail(err, ISO_E_TRUNCATED, field, *pos, need, len - *pos);
  const uint8_t *p = b + *pos;
  uint64_t v = 0;
  if (d->bitmap_enc == ISO_ENC_BINARY) {
    for (int i = 0; i < 8; i++)
      v = v << 8 | p[i];
  } else {
    for (int i = 0; i < 16; i++) {
      uint8_t c = d->bitmap_enc == ISO_ENC_EBCDIC ? iso__e2a[p[i]] : p[i];
      int h = iso__hexval(c);
      if (h < 0)
        return iso__fail(err, ISO_E_BAD_BITMAP, field, *pos + (size_t)i, 0, 0);
      v = v << 4 | (uint64_t)h;
    }
  }
  *out = v;
  *pos += need;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Length prefixes                                                           */

static int read_prefix(const iso_field_def_t *def, const uint8_t *p,
                       size_t hlen, size_t *units) {
  size_t v = 0;
  switch (def->len_enc) {
  case ISO_ENC_ASCII:
  case ISO_ENC_EBCDIC:
    for (size_t i = 0; i < hlen; i++) {
      uint8_t c = def->len_enc == ISO_ENC_EBCDIC ? iso__e2a[p[i]] : p[i];
      if (c < '0' || c > '9')
        return ISO_E_BAD_LENGTH;
      v = v * 10 + (size_t)(c - '0');
    }
    break;
  case ISO_ENC_BCD:
    for (size_t i = 0; i < hlen; i++) {
      uint8_t hi = p[i] >> 4, lo = p[i] & 15;
      if (hi > 9 || lo > 9)
        return ISO_E_BAD_LENGTH;
      v = v * 100 + hi * 10u + lo;
    }
    break;
  case ISO_ENC_BINARY:
    for (size_t i = 0; i < hlen; i++)
      v = v << 8 | p[i];
    break;
  default:
    return ISO_E_DIALECT;
  }
  *units = v;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Body validation                                                           */

/* Word-at-a-time checks for the two classes that make up most of a
 * message's bytes.  Each reads 8 bytes with memcpy (no alignment needed) and
 * answers "all admitted?" exactly; a failing field is then scanned byte by
 * byte to find the culprit, so only bad input pays for the slow path. */
#define ISO__ONES UINT64_C(0x0101010101010101)
#define ISO__HIGHS UINT64_C(0x8080808080808080)

static inline uint64_t load64(const uint8_t *p) {
  uint64_t w;
  memcpy(&w, p, 8);
  return w;
}

/* Every byte '0'..'9': high nibble 3, and adding 6 keeps it 3. */
static inline int word_is_digits(uint64_t w) {
  const uint64_t hi = UINT64_C(0xF0F0F0F0F0F0F0F0);
  const uint64_t thirty = 0x30 * ISO__ONES;
  return (w & hi) == thirty && ((w + 6 * ISO__ONES) & hi) == thirty;
}

/* Every byte in 0x20..0x7E: no high bit, none below 0x20, none 0x7F. */
static inline int word_is_printable(uint64_t w) {
  uint64_t below = (w - 0x20 * ISO__ONES) & ~w;
  uint64_t x = w ^ (0x7F * ISO__ONES);
  uint64_t del = (x - ISO__ONES) & ~x;
  return ((below | del | w) & ISO__HIGHS) == 0;
}

/* 1 if every byte of p[0..n) is admitted by the class (ASCII). */
static int text_ok(const uint8_t *p, size_t n, int cls) {
  size_t i = 0;
  if (cls == ISO_CLS_N || cls == ISO_CLS_XN) {
    for (; i + 8 <= n; i += 8)
      if (!word_is_digits(load64(p + i)))
        return 0;
  } else if (cls == ISO_CLS_ANS) {
    for (; i + 8 <= n; i += 8)
      if (!word_is_printable(load64(p + i)))
        return 0;
  }
  uint8_t mask = (uint8_t)(1u << cls), acc = 0xFF;
  for (; i < n; i++)
    acc &= iso__cls_tab[p[i]];
  return (acc & mask) != 0;
}

/* Index of the first byte (after translation) not admitted by class, or n
 * if all are. */
static size_t first_bad_char(const uint8_t *p, size_t n, int cls, int ebcdic) {
  uint8_t mask = (uint8_t)(1u << cls);
  if (!ebcdic) {
    if (text_ok(p, n, cls))
      return n;
  } else {
    uint8_t acc = 0xFF;
    for (size_t i = 0; i < n; i++)
      acc &= iso__cls_tab[iso__e2a[p[i]]];
    if (acc & mask)
      return n;
  }
  for (size_t i = 0; i < n; i++) {
    uint8_t c = ebcdic ? iso__e2a[p[i]] : p[i];
    if (!(iso__cls_tab[c] & mask))
      return i;
  }
  return n;
}

int iso__check_text(const iso_field_def_t *def, const uint8_t *p, size_t n,
                    int field, size_t off, iso_err_t *err) {
  int ebcdic = def->body_enc == ISO_ENC_EBCDIC;
  size_t start = 0;
  if (def->cls == ISO_CLS_XN) {
    uint8_t s = n ? (ebcdic ? iso__e2a[p[0]] : p[0]) : 0;
    if (s != 'C' && s != 'D')
      return iso__fail(err, ISO_E_BAD_SIGN, field, off, 0, 0);
    start = 1;
  }
  if (def->cls == ISO_CLS_B)
    return 0;
  size_t bad = first_bad_char(p + start, n - start, def->cls, ebcdic);
  if (bad < n - start)
    return iso__fail(err, ISO_E_BAD_CHAR, field, off + start + bad, 0, 0);
  return 0;
}

/* Packed BCD: digits (and 0xD separators for track data), one pad nibble
 * when the digit count is odd.  The common case, an n field, checks whole
 * bytes without branches: a nibble is above 9 exactly when adding 6 carries
 * into bit 4. */
static int check_bcd(const iso_field_def_t *def, const uint8_t *p, size_t blen,
                     size_t ndigits, int field, size_t off, iso_err_t *err) {
  if (blen == 0)
    return 0;
  int odd = (int)(ndigits & 1);
  int left = def->pad == ISO_PAD_LEFT_0 || def->pad == ISO_PAD_LEFT_F;
  uint8_t want =
      (def->pad == ISO_PAD_LEFT_F || def->pad == ISO_PAD_RIGHT_F) ? 0xF : 0x0;
  /* The pad nibble is checked, then replaced by a 0 digit for the scan. */
  uint8_t first = p[0], last = p[blen - 1];
  if (odd) {
    uint8_t nib = left ? first >> 4 : last & 15;
    if (nib != want)
      return iso__fail(err, ISO_E_BAD_PAD, field, off + (left ? 0 : blen - 1),
                       0, 0);
    if (left)
      first &= 0x0F;
    else
      last &= 0xF0;
  }
  if (blen == 1)
    first = last = (uint8_t)(first & last);
  if (def->cls != ISO_CLS_Z) {
    unsigned bad = ((first & 15u) + 6u) | ((first >> 4) + 6u) |
                   ((last & 15u) + 6u) | ((last >> 4) + 6u);
    for (size_t i = 1; i + 1 < blen; i++)
      bad |= ((p[i] & 15u) + 6u) | ((p[i] >> 4) + 6u);
    if (!(bad & 0x10))
      return 0;
  }
  /* Track data (0xD separators allowed), or an error to locate. */
  for (size_t i = 0; i < blen; i++) {
    uint8_t b = i == 0 ? first : (i == blen - 1 ? last : p[i]);
    for (int h = 0; h < 2; h++) {
      uint8_t nib = h ? (b & 15) : (b >> 4);
      if (nib > 9 && !(def->cls == ISO_CLS_Z && nib == 0xD))
        return iso__fail(err, ISO_E_BAD_BCD, field, off + i, 0, 0);
    }
  }
  return 0;
}

/* 1 if all 8 bytes are hex digits [0-9A-Fa-f].  For bytes below 0x80,
 * adding (0x80 - lo) sets the high bit exactly when the byte is >= lo, and
 * adding (0x7F - hi) exactly when it is > hi; no carry crosses a byte. */
static inline int word_is_hex(uint64_t w) {
  uint64_t l = w | (0x20 * ISO__ONES); /* fold letters to lower case */
  uint64_t digit =
      (w + (0x80 - 0x30) * ISO__ONES) & ~(w + (0x7F - 0x39) * ISO__ONES);
  uint64_t alpha =
      (l + (0x80 - 0x61) * ISO__ONES) & ~(l + (0x7F - 0x66) * ISO__ONES);
  return !(w & ISO__HIGHS) && ((digit | alpha) & ISO__HIGHS) == ISO__HIGHS;
}

/* 8 validated hex characters to 4 bytes.  A character's value is its low
 * nibble, plus 9 for letters (bit 0x40 set). */
static inline void word_unhex(uint64_t w, uint8_t out[4]) {
  uint64_t n = (w & (0x0F * ISO__ONES)) + ((w >> 6) & ISO__ONES) * 9;
  /* Little-endian load: character 2k is the low byte of lane k. */
  uint64_t v = ((n & UINT64_C(0x00FF00FF00FF00FF)) << 4) |
               ((n >> 8) & UINT64_C(0x00FF00FF00FF00FF));
  v = (v | (v >> 8)) & UINT64_C(0x0000FFFF0000FFFF);
  uint32_t x = (uint32_t)(v | (v >> 16));
  memcpy(out, &x, 4);
}

static const uint8_t iso__hexok[256] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['A'] = 1, ['B'] = 1,
    ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['a'] = 1, ['b'] = 1,
    ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1};

/* Validates hex text of even length n2 and, if out is not NULL, decodes it.
 * Returns the index of the first bad character, or n2 if all are hex. */
static size_t unhex_checked(const uint8_t *t, size_t n2, uint8_t *out) {
  size_t i = 0;
  for (; i + 8 <= n2; i += 8) {
    uint64_t w = load64(t + i);
    if (!word_is_hex(w))
      break;
    if (out) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
      word_unhex(w, out + i / 2);
#else
      for (size_t k = 0; k < 8; k += 2)
        out[(i + k) / 2] = (uint8_t)((unsigned)iso__hexval(t[i + k]) << 4 |
                                     (unsigned)iso__hexval(t[i + k + 1]));
#endif
    }
  }
  for (; i < n2; i++) {
    if (!iso__hexok[t[i]])
      return i;
    if (out && (i & 1))
      out[i / 2] = (uint8_t)((unsigned)iso__hexval(t[i - 1]) << 4 |
                             (unsigned)iso__hexval(t[i]));
  }
  return n2;
}

int iso__check_tlv(const uint8_t *p, size_t n, int field, size_t off,
                   iso_err_t *err) {
  int rc = iso_tlv_validate(p, n, ISO__TLV_MAX_DEPTH, err);
  if (rc < 0 && err) {
    err->field = field;
    err->offset += off;
  }
  return rc < 0 ? rc : 0;
}

int iso__check_body(const iso_field_def_t *def, const uint8_t *p, size_t blen,
                    size_t units, int field, size_t off, iso_err_t *err) {
  int rc = 0;
  switch (def->body_enc) {
  case ISO_ENC_ASCII:
  case ISO_ENC_EBCDIC:
    if (!(def->flags & ISO_F_NO_VALIDATE))
      rc = iso__check_text(def, p, blen, field, off, err);
    break;
  case ISO_ENC_BCD:
    if (def->cls == ISO_CLS_XN) {
      if (blen == 0 || (p[0] != 'C' && p[0] != 'D'))
        return iso__fail(err, ISO_E_BAD_SIGN, field, off, 0, 0);
      rc = check_bcd(def, p + 1, blen - 1, units - 1, field, off + 1, err);
    } else {
      rc = check_bcd(def, p, blen, units, field, off, err);
    }
    break;
  case ISO_ENC_HEX: {
    uint8_t tmp[ISO__TLV_HEX_MAX];
    int tlv = (def->flags & ISO_F_TLV) != 0;
    if (tlv && blen / 2 > sizeof tmp)
      return iso__fail(err, ISO_E_TOO_LONG, field, off, sizeof tmp, blen / 2);
    size_t bad = unhex_checked(p, blen, tlv ? tmp : NULL);
    if (bad < blen)
      return iso__fail(err, ISO_E_BAD_HEX, field, off + bad, 0, 0);
    if (tlv) {
      rc = iso__check_tlv(tmp, blen / 2, field, 0, err);
      /* Offsets inside the decoded copy are in bytes; on the wire each
       * byte is two characters. */
      if (rc < 0 && err)
        err->offset = off + 2 * err->offset;
    }
    break;
  }
  case ISO_ENC_BINARY:
    if (def->flags & ISO_F_TLV)
      rc = iso__check_tlv(p, blen, field, off, err);
    break;
  default:
    return iso__fail(err, ISO_E_DIALECT, field, off, 0, 0);
  }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Fields                                                                    */

static int parse_field(iso_msg_t *m, int n, const iso_field_def_t *def,
                       uint8_t variant, size_t *pos, iso_err_t *err) {
  const uint8_t *b = m->buf;
  size_t len = m->len, start = *pos;
  if (!def->name || (def->flags & ISO_F_BITMAP))
    return iso__fail(err, ISO_E_UNDEFINED_FIELD, n, start, 0, 0);
  size_t hlen = iso__prefix_bytes(def), units = def->max_len;
  if (hlen) {
    if (len - start < hlen)
      return iso__fail(err, ISO_E_TRUNCATED, n, start, hlen, len - start);
    int rc = read_prefix(def, b + start, hlen, &units);
    if (rc)
      return iso__fail(err, rc, n, start, 0, 0);
    if (units > def->max_len)
      return iso__fail(err, ISO_E_TOO_LONG, n, start, def->max_len, units);
    if (def->cls == ISO_CLS_XN && units == 1)
      return iso__fail(err, ISO_E_BAD_LENGTH, n, start, 2, units);
  }
  size_t blen = iso__body_bytes(def, units);
  size_t boff = start + hlen;
  if (len - boff < blen)
    return iso__fail(err, ISO_E_TRUNCATED, n, boff, blen, len - boff);
  int rc = iso__check_body(def, b + boff, blen, units, n, boff, err);
  if (rc)
    return rc;
  iso_span_t *s = &m->f[n];
  s->off = (uint32_t)start;
  s->hlen = (uint8_t)hlen;
  s->blen = (uint16_t)blen;
  s->units = (uint16_t)units;
  s->variant = variant;
  *pos = boff + blen;
  return 0;
}

static void set_bitmap_span(iso_msg_t *m, int n, size_t start, size_t blen) {
  iso_span_t *s = &m->f[n];
  s->off = (uint32_t)start;
  s->hlen = 0;
  s->blen = (uint16_t)blen;
  s->units = 8;
  s->variant = 0;
}

/* Processing code (DE3) as text, for variants that depend on it. */
static int proc_text(const iso_msg_t *m, char proc[6]) {
  if (!iso_has(m, 3))
    return 0;
  char tmp[16];
  size_t n;
  if (iso_get_text(m, 3, tmp, sizeof tmp, &n) || n != 6)
    return 0;
  memcpy(proc, tmp, 6);
  return 1;
}

int iso_parse(iso_msg_t *m, const iso_dialect_t *d, const uint8_t *buf,
              size_t len, iso_err_t *err) {
  if (!m || !d || (!buf && len))
    return iso__fail(err, ISO_E_INVAL, 0, 0, 0, 0);
  /* Offsets are stored in 32 bits; a frame never comes near that. */
  if (len > UINT32_MAX)
    return iso__fail(err, ISO_E_INVAL, 0, 0, UINT32_MAX, len);
  m->buf = buf;
  m->len = len;
  m->dialect = d;
  m->bitmap[0] = m->bitmap[1] = m->bitmap[2] = 0;
  size_t pos = 0;
  int rc = parse_mti(m, d, buf, len, &pos, err);
  if (rc)
    return rc;
  rc = parse_bitmap(d, buf, len, &pos, 0, &m->bitmap[0], err);
  if (rc)
    return rc;
  if (m->bitmap[0] & ISO__BIT(1)) {
    size_t start = pos;
    if (d->max_bitmaps < 2)
      return iso__fail(err, ISO_E_BAD_BITMAP, 1, start, 0, 0);
    rc = parse_bitmap(d, buf, len, &pos, 1, &m->bitmap[1], err);
    if (rc)
      return rc;
    if (m->bitmap[1] == 0)
      return iso__fail(err, ISO_E_BAD_BITMAP, 1, start, 0, 0);
    set_bitmap_span(m, 1, start, pos - start);
  }

  char proc[6];
  int have_proc = 0;
  for (int w = 0; w < 3; w++) {
    uint64_t bits = m->bitmap[w];
    if (w == 0)
      bits &= ~ISO__BIT(1);
    while (bits) {
      int k = __builtin_clzll(bits);
      bits &= ~(UINT64_C(1) << (63 - k));
      int n = w * 64 + k + 1;
      if (n == 65 && d->max_bitmaps == 3) {
        size_t start = pos;
        rc = parse_bitmap(d, buf, len, &pos, 65, &m->bitmap[2], err);
        if (rc)
          return rc;
        if (m->bitmap[2] == 0)
          return iso__fail(err, ISO_E_BAD_BITMAP, 65, start, 0, 0);
        set_bitmap_span(m, 65, start, pos - start);
        continue;
      }
      const iso_field_def_t *def = &d->fields[n];
      uint8_t variant = 0;
      if (d->nvariants)
        def = iso__resolve(d, n, m->mti, have_proc ? proc : NULL, &variant);
      rc = parse_field(m, n, def, variant, &pos, err);
      if (rc)
        return rc;
      if (n == 3 && d->nvariants)
        have_proc = proc_text(m, proc);
    }
  }
  if (pos != len)
    return iso__fail(err, ISO_E_TRAILING, 0, pos, 0, len - pos);
  return 0;
}

int iso_check_mandatory(const iso_msg_t *m, iso_err_t *err) {
  const iso_dialect_t *d = m->dialect;
  for (size_t i = 0; i < d->nmandatory; i++) {
    const iso_mandatory_t *r = &d->mandatory[i];
    if (!iso__mti_match(r->mti, m->mti))
      continue;
    for (int w = 0; w < 3; w++) {
      uint64_t missing = r->fields[w] & ~m->bitmap[w];
      if (missing)
        return iso__fail(err, ISO_E_MISSING,
                         w * 64 + __builtin_clzll(missing) + 1, 0, 0, 0);
    }
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                 */

const iso_field_def_t *iso_msg_field_def(const iso_msg_t *m, int n) {
  if (!m || !iso_has(m, n))
    return NULL;
  uint8_t v = m->f[n].variant;
  return v ? &m->dialect->variants[v - 1].def : &m->dialect->fields[n];
}

int iso_get_raw(const iso_msg_t *m, int n, iso_view_t *out) {
  if (!m || !out)
    return ISO_E_INVAL;
  if (!iso_has(m, n))
    return ISO_E_ABSENT;
  out->p = m->buf + m->f[n].off;
  out->len = (size_t)m->f[n].hlen + m->f[n].blen;
  return 0;
}

int iso_get_body(const iso_msg_t *m, int n, iso_view_t *out) {
  if (!m || !out)
    return ISO_E_INVAL;
  if (!iso_has(m, n))
    return ISO_E_ABSENT;
  out->p = m->buf + m->f[n].off + m->f[n].hlen;
  out->len = m->f[n].blen;
  return 0;
}

size_t iso__text_len(const iso_field_def_t *def, size_t units) {
  if (def->body_enc == ISO_ENC_BINARY || def->body_enc == ISO_ENC_HEX)
    return units * 2;
  return units;
}

int iso__body_to_text(const iso_field_def_t *def, const uint8_t *body,
                      size_t blen, size_t units, char *out) {
  switch (def->body_enc) {
  case ISO_ENC_ASCII:
  case ISO_ENC_HEX:
    memcpy(out, body, blen);
    return 0;
  case ISO_ENC_EBCDIC:
    for (size_t i = 0; i < blen; i++)
      out[i] = (char)iso__e2a[body[i]];
    return 0;
  case ISO_ENC_BINARY:
    for (size_t i = 0; i < blen; i++) {
      out[2 * i] = iso__hexdigits[body[i] >> 4];
      out[2 * i + 1] = iso__hexdigits[body[i] & 15];
    }
    return 0;
  case ISO_ENC_BCD: {
    size_t ndig = units;
    if (def->cls == ISO_CLS_XN) {
      *out++ = (char)body[0];
      body++;
      blen--;
      ndig = units - 1;
    }
    size_t skip = ((ndig & 1) &&
                   (def->pad == ISO_PAD_LEFT_0 || def->pad == ISO_PAD_LEFT_F))
                      ? 1
                      : 0;
    for (size_t i = 0; i < ndig; i++) {
      size_t k = i + skip;
      uint8_t nib = (k & 1) ? (body[k >> 1] & 15) : (body[k >> 1] >> 4);
      out[i] = nib == 0xD ? 'D' : (char)('0' + nib);
    }
    return 0;
  }
  default:
    return ISO_E_DIALECT;
  }
}

int iso_get_text(const iso_msg_t *m, int n, char *out, size_t cap,
                 size_t *outlen) {
  if (!m || !out)
    return ISO_E_INVAL;
  const iso_field_def_t *def = iso_msg_field_def(m, n);
  if (!def)
    return ISO_E_ABSENT;
  const iso_span_t *s = &m->f[n];
  size_t tl = iso__text_len(def, s->units);
  if (cap < tl)
    return ISO_E_NOSPACE;
  int rc =
      iso__body_to_text(def, m->buf + s->off + s->hlen, s->blen, s->units, out);
  if (rc)
    return rc;
  if (cap > tl)
    out[tl] = '\0';
  if (outlen)
    *outlen = tl;
  return 0;
}

int iso_get_bytes(const iso_msg_t *m, int n, uint8_t *out, size_t cap,
                  size_t *outlen) {
  if (!m || !out)
    return ISO_E_INVAL;
  const iso_field_def_t *def = iso_msg_field_def(m, n);
  if (!def)
    return ISO_E_ABSENT;
  if (def->cls != ISO_CLS_B)
    return ISO_E_WRONG_CLASS;
  const iso_span_t *s = &m->f[n];
  const uint8_t *body = m->buf + s->off + s->hlen;
  if (cap < s->units)
    return ISO_E_NOSPACE;
  if (def->body_enc == ISO_ENC_HEX) {
    for (size_t i = 0; i < s->units; i++)
      /* Validated by iso_parse; unsigned keeps even a broken invariant
       * defined behaviour. */
      out[i] = (uint8_t)((unsigned)iso__hexval(body[2 * i]) << 4 |
                         (unsigned)iso__hexval(body[2 * i + 1]));
  } else {
    memcpy(out, body, s->units);
  }
  if (outlen)
    *outlen = s->units;
  return 0;
}

/* Digits of a numeric field, without copying the whole text. */
static int digits_to_u64(const char *t, size_t n, uint64_t *v) {
  uint64_t x = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned dgt = (unsigned)(t[i] - '0');
    if (dgt > 9)
      return ISO_E_WRONG_CLASS;
    if (x > (UINT64_MAX - dgt) / 10)
      return ISO_E_OVERFLOW;
    x = x * 10 + dgt;
  }
  *v = x;
  return 0;
}

int iso_get_u64(const iso_msg_t *m, int n, uint64_t *v) {
  if (!m || !v)
    return ISO_E_INVAL;
  const iso_field_def_t *def = iso_msg_field_def(m, n);
  if (!def)
    return ISO_E_ABSENT;
  if (def->cls != ISO_CLS_N)
    return ISO_E_WRONG_CLASS;
  char t[ISO__NUM_TEXT_MAX];
  size_t tl;
  int rc = iso_get_text(m, n, t, sizeof t, &tl);
  if (rc == ISO_E_NOSPACE)
    return ISO_E_OVERFLOW;
  if (rc)
    return rc;
  return digits_to_u64(t, tl, v);
}

int iso_get_amount(const iso_msg_t *m, int n, int64_t *v) {
  if (!m || !v)
    return ISO_E_INVAL;
  const iso_field_def_t *def = iso_msg_field_def(m, n);
  if (!def)
    return ISO_E_ABSENT;
  if (def->cls != ISO_CLS_N && def->cls != ISO_CLS_XN)
    return ISO_E_WRONG_CLASS;
  char t[ISO__NUM_TEXT_MAX];
  size_t tl;
  int rc = iso_get_text(m, n, t, sizeof t, &tl);
  if (rc == ISO_E_NOSPACE)
    return ISO_E_OVERFLOW;
  if (rc)
    return rc;
  int neg = 0;
  const char *p = t;
  if (def->cls == ISO_CLS_XN) {
    neg = t[0] == 'D';
    p++;
    tl--;
  }
  uint64_t u;
  rc = digits_to_u64(p, tl, &u);
  if (rc)
    return rc;
  if (u > (uint64_t)INT64_MAX)
    return ISO_E_OVERFLOW;
  *v = neg ? -(int64_t)u : (int64_t)u;
  return 0;
}
