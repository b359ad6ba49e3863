/*
 * internal.h — declarations shared between the codec's source files and not
 * part of the public contract.  Names carry the iso__ prefix.
 */
#ifndef ISO8583_INTERNAL_H
#define ISO8583_INTERNAL_H

#include "iso8583.h"

extern const uint8_t iso__e2a[256];
extern const uint8_t iso__a2e[256];
extern const uint8_t iso__cls_tab[256];

/* Maximum nesting the parser accepts inside DE55 constructed objects. */
#define ISO__TLV_MAX_DEPTH 8
/* Largest hex-encoded TLV body the parser decodes to validate (bytes). */
#define ISO__TLV_HEX_MAX 4096
/* Longest numeric text the integer accessors look at: 20 digits and a sign
 * fit; anything longer cannot be a 64-bit number. */
#define ISO__NUM_TEXT_MAX 24

/* Bit of field n (2..192) in a 3-word bitmap. */
#define ISO__WORD(n) (((unsigned)(n)-1u) >> 6)
#define ISO__BIT(n) (UINT64_C(1) << (63u - (((unsigned)(n)-1u) & 63u)))

static inline void iso__set_bit(uint64_t bm[3], int n) {
  bm[ISO__WORD(n)] |= ISO__BIT(n);
}
static inline void iso__clear_bit(uint64_t bm[3], int n) {
  bm[ISO__WORD(n)] &= ~ISO__BIT(n);
}

/* Fills *err (if not NULL) and returns code. */
static inline int iso__fail(iso_err_t *err, int code, int field, size_t offset,
                            size_t expected, size_t available) {
  if (err) {
    err->code = code;
    err->field = field;
    err->subfield = 0;
    err->offset = offset;
    err->expected = expected;
    err->available = available;
  }
  return code;
}

/* Bytes of length prefix for a definition (0 for fixed). */
static inline size_t iso__prefix_bytes(const iso_field_def_t *def) {
  if (def->len_type == ISO_LEN_FIXED)
    return 0;
  if (def->len_enc == ISO_ENC_BCD || def->len_enc == ISO_ENC_BINARY)
    return def->len_type == ISO_LEN_LL ? 1 : 2;
  return def->len_type;
}

/* iso_body_bytes, inlined on the hot path. */
static inline size_t iso__body_bytes(const iso_field_def_t *def, size_t units) {
  switch (def->body_enc) {
  case ISO_ENC_BCD:
    /* x+n keeps its sign as one character byte before the packed digits. */
    if (def->cls == ISO_CLS_XN)
      return units ? 1 + units / 2 : 0;
    return (units + 1) / 2;
  case ISO_ENC_HEX:
    return units * 2;
  default:
    return units;
  }
}

/* The definition of field n for a message with this MTI and processing code
 * (proc may be NULL when DE3 is absent or not yet known); *variant receives
 * 0 or the 1-based index of the variant used. */
const iso_field_def_t *iso__resolve(const iso_dialect_t *d, int n,
                                    const char mti[4], const char *proc,
                                    uint8_t *variant);

/* 1 if the pattern (with '.' wildcards) matches the first n chars of s. */
int iso__pattern_match(const char *pat, const char *s, size_t n);

/* The same for a 4-character MTI pattern, unrolled and branch-free: it runs
 * once per rule for every message parsed. */
static inline int iso__mti_match(const char pat[4], const char mti[4]) {
  return ((pat[0] == '.') | (pat[0] == mti[0])) &
         ((pat[1] == '.') | (pat[1] == mti[1])) &
         ((pat[2] == '.') | (pat[2] == mti[2])) &
         ((pat[3] == '.') | (pat[3] == mti[3]));
}

/* Two definitions put the same bytes on the wire for the same value. */
int iso__same_encoding(const iso_field_def_t *a, const iso_field_def_t *b);

/* Validates an encoded body against its definition (parse.c); the builder
 * runs it on what it wrote, so both directions share one set of rules. */
int iso__check_body(const iso_field_def_t *def, const uint8_t *p, size_t blen,
                    size_t units, int field, size_t off, iso_err_t *err);

/* Content-class check of a text body (ASCII or EBCDIC per def), and the
 * DE55 structure check; both report offsets as off + position. */
int iso__check_text(const iso_field_def_t *def, const uint8_t *p, size_t n,
                    int field, size_t off, iso_err_t *err);
int iso__check_tlv(const uint8_t *p, size_t n, int field, size_t off,
                   iso_err_t *err);

/* Decodes body bytes of a field to ASCII text (see iso_get_text); out must
 * hold at least iso__text_len(def, units) bytes. */
size_t iso__text_len(const iso_field_def_t *def, size_t units);
int iso__body_to_text(const iso_field_def_t *def, const uint8_t *body,
                      size_t blen, size_t units, char *out);

static inline int iso__hexval(uint8_t c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

extern const char iso__hexdigits[16];

/* The built-in dialects (dialects_builtin.c). */
extern const iso_dialect_t *const iso__builtin[];
extern const size_t iso__nbuiltin;

#endif
