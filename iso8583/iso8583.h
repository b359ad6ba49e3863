/*
 * iso8583.h — the public contract of libiso8583, the switch's message codec.
 *
 * The codec turns ISO 8583 wire bytes into a *view* and a set of field values
 * back into wire bytes, for any wire format described by an iso_dialect_t.
 *
 * Guarantees (every function below keeps them, whatever the input):
 *   (1) Nothing reads or writes outside the buffers it is given.
 *   (2) Parsing allocates nothing and copies nothing: an iso_msg_t records, for
 *       each present field, where its bytes are in the caller's buffer.  The
 *       buffer must stay alive and unchanged for as long as the view is used.
 *   (3) Errors are values: a negative ISO_E_* code, and where an iso_err_t is
 *       passed, the field, subfield, byte offset and expected/available sizes.
 *       Error text never contains field content.
 *   (4) Fields a dialect marks sensitive (PAN, track data, PIN block, CVV,
 *       ICC data) are masked by every formatting function unless the caller
 *       passes ISO_FMT_UNMASK.
 *
 * Conventions: functions return 0 on success or a negative ISO_E_* code;
 * iterators return 1 (item), 0 (end) or a negative code.  Field numbers run
 * from 1 (secondary bitmap) to 192; field 65 is the tertiary bitmap in
 * dialects that allow three bitmaps.
 */
#ifndef ISO8583_H
#define ISO8583_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ISO_MAX_FIELD 192

struct iso_dialect_s;

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

#define ISO_ERRNO_MAP(XX)                                                      \
  XX(INVAL, "invalid argument")                                                \
  XX(NOSPACE, "output buffer too small")                                       \
  XX(TRUNCATED, "message ends before the field is complete")                   \
  XX(BAD_MTI, "message type indicator is not four digits")                     \
  XX(BAD_BITMAP, "bitmap is not valid")                                        \
  XX(UNDEFINED_FIELD, "field is not defined in the dialect")                   \
  XX(BAD_LENGTH, "length prefix is not a valid number")                        \
  XX(TOO_LONG, "field is longer than its maximum")                             \
  XX(WRONG_LENGTH, "field does not have its fixed length")                     \
  XX(BAD_CHAR, "character not allowed by the field's content class")           \
  XX(BAD_BCD, "invalid packed BCD nibble")                                     \
  XX(BAD_PAD, "padding nibble is not the one the dialect declares")            \
  XX(BAD_SIGN, "amount sign is not C or D")                                    \
  XX(BAD_HEX, "hexadecimal text is not valid")                                 \
  XX(TRAILING, "bytes are left after the last field")                          \
  XX(MISSING, "mandatory field is absent")                                     \
  XX(ABSENT, "field is not present")                                           \
  XX(WRONG_CLASS, "operation does not apply to the field's content class")     \
  XX(OVERFLOW, "number does not fit in 64 bits")                               \
  XX(TLV_TAG, "TLV tag is malformed")                                          \
  XX(TLV_LENGTH, "TLV length is malformed or runs past the data")              \
  XX(TLV_DEPTH, "TLV objects are nested too deeply")                           \
  XX(FRAME_LENGTH, "frame length header is not valid")                         \
  XX(FRAME_TOO_LARGE, "frame is larger than the configured maximum")           \
  XX(FRAME_FAILED, "framer stopped after an earlier error")                    \
  XX(DIALECT, "dialect definition is not valid")                               \
  XX(NOT_FOUND, "no such dialect")                                             \
  XX(NOMEM, "out of memory")

enum iso__errno_e {
  ISO__E_NONE = 0,
#define ISO__XX(name, msg) ISO__E_##name,
  ISO_ERRNO_MAP(ISO__XX)
#undef ISO__XX
};

/* Public codes are the negated positions in ISO_ERRNO_MAP. */
typedef enum {
  ISO_OK = 0,
#define ISO__XX(name, msg) ISO_E_##name = -ISO__E_##name,
  ISO_ERRNO_MAP(ISO__XX)
#undef ISO__XX
} iso_errno_t;

/* Where and why a codec call failed.  field/subfield are 0 when not known;
 * offset is a byte offset into the buffer the call was given. */
typedef struct iso_err_s {
  int code;         /* ISO_E_* */
  int field;        /* data element number, 0 for MTI/framing/none */
  int subfield;     /* for DE55: index of the TLV object, else 0 */
  size_t offset;    /* byte offset where the problem was found */
  size_t expected;  /* bytes or units needed or allowed (0 if n/a) */
  size_t available; /* bytes or units present (0 if n/a) */
} iso_err_t;

/* "field is longer than its maximum" — static text, never NULL. */
const char *iso_strerror(int code);
/* "TOO_LONG" — static text, never NULL. */
const char *iso_err_name(int code);
/* One line for logs and operators, e.g.
 *   field 35 (track 2 data) at offset 42: field is longer than its maximum
 *   (allowed 37, found 41)
 * Never contains field content.  Always NUL-terminates when cap > 0; returns
 * the length written. */
size_t iso_err_format(const iso_err_t *err, const struct iso_dialect_s *d,
                      char *out, size_t cap);

/* ------------------------------------------------------------------------ */
/* Dialects: wire formats as data                                            */

/* Encodings.  For a length prefix: ASCII, EBCDIC, BCD or BINARY.  For a
 * body: ASCII, EBCDIC, BCD (packed digits), BINARY (raw bytes) or HEX (raw
 * bytes written as two ASCII hex digits each).  For a bitmap: BINARY, HEX
 * (ASCII hex) or EBCDIC (EBCDIC hex).  For the MTI: ASCII, EBCDIC or BCD. */
typedef enum {
  ISO_ENC_ASCII = 0,
  ISO_ENC_EBCDIC,
  ISO_ENC_BCD,
  ISO_ENC_BINARY,
  ISO_ENC_HEX
} iso_enc_t;

/* Length type: fixed, or a variable length with 2, 3 or 4 decimal digits of
 * prefix.  A BINARY prefix is 1 byte for LL and 2 bytes (big-endian) for LLL
 * and LLLL; a BCD prefix is 1 byte for LL and 2 bytes for LLL and LLLL. */
typedef enum {
  ISO_LEN_FIXED = 0,
  ISO_LEN_LL = 2,
  ISO_LEN_LLL = 3,
  ISO_LEN_LLLL = 4
} iso_len_t;

/* Content classes from ISO 8583 (and the length unit they count in). */
typedef enum {
  ISO_CLS_N = 0, /* digits 0-9                               (digits)   */
  ISO_CLS_A,     /* letters A-Z a-z and space                (chars)    */
  ISO_CLS_AN,    /* letters, digits and space                (chars)    */
  ISO_CLS_ANS,   /* printable ASCII 0x20-0x7E                (chars)    */
  ISO_CLS_NS,    /* digits and special characters            (chars)    */
  ISO_CLS_B,     /* binary                                   (bytes)    */
  ISO_CLS_Z,     /* track 2/3 data: digits, '=' or 'D', '?'  (chars)    */
  ISO_CLS_XN     /* 'C' or 'D' then digits (signed amount)   (1+digits) */
} iso_cls_t;

/* Padding of an odd number of digits in packed BCD. */
typedef enum {
  ISO_PAD_LEFT_0 = 0, /* right-justified number, high nibble 0 */
  ISO_PAD_RIGHT_F,    /* left-justified, low nibble F (PAN, track 2) */
  ISO_PAD_LEFT_F,
  ISO_PAD_RIGHT_0
} iso_pad_t;

/* Field flags. */
#define ISO_F_SENSITIVE 0x01u   /* mask in every formatted output */
#define ISO_F_PAN 0x02u         /* mask as a PAN: first 6 and last 4 shown */
#define ISO_F_TLV 0x04u         /* body is BER-TLV (DE55): validated on parse */
#define ISO_F_BITMAP 0x08u      /* field 1 or 65: a bitmap, not data */
#define ISO_F_NO_VALIDATE 0x10u /* content class not checked (legacy hosts) */

typedef struct iso_field_def_s {
  const char *name; /* "primary account number"; NULL if undefined */
  uint16_t max_len; /* fixed length, or maximum for variable; units per cls */
  uint8_t len_type; /* iso_len_t */
  uint8_t len_enc;  /* iso_enc_t of the length prefix */
  uint8_t body_enc; /* iso_enc_t of the body */
  uint8_t cls;      /* iso_cls_t */
  uint8_t pad;      /* iso_pad_t, for odd BCD digit counts */
  uint8_t flags;    /* ISO_F_* */
} iso_field_def_t;

/* A different layout for one field when the MTI (and optionally the
 * processing code, DE3) matches.  '.' in a pattern matches any character.
 * A processing-code pattern applies to fields numbered above 3 only. */
typedef struct iso_variant_s {
  char mti[4];         /* e.g. "01.." */
  char proc[6];        /* e.g. "30...." ; proc_len 0 means any */
  uint8_t proc_len;    /* how many leading characters of proc to compare */
  uint8_t field;       /* 2..192 */
  iso_field_def_t def; /* the layout to use */
} iso_variant_t;

/* Fields that must be present for messages whose MTI matches. */
typedef struct iso_mandatory_s {
  char mti[4];        /* pattern, '.' matches any character */
  uint64_t fields[3]; /* bit for field n: word (n-1)/64, bit 63-(n-1)%64 */
} iso_mandatory_t;

typedef struct iso_dialect_s {
  const char *name;        /* "iso87a" */
  const char *description; /* one line */
  uint8_t mti_enc;         /* ASCII, EBCDIC or BCD */
  uint8_t bitmap_enc;      /* BINARY, HEX or EBCDIC */
  uint8_t max_bitmaps;     /* 1, 2 or 3 */
  uint8_t reserved_;
  iso_field_def_t fields[ISO_MAX_FIELD + 1]; /* index = field number */
  const iso_variant_t *variants;
  size_t nvariants;
  const iso_mandatory_t *mandatory;
  size_t nmandatory;
} iso_dialect_t;

/* Built-in dialects (see docs/dialects.md). */
size_t iso_dialect_count(void);
const iso_dialect_t *iso_dialect_at(size_t i);
const iso_dialect_t *iso_dialect_find(const char *name); /* NULL if none */

/* Checks a dialect for impossible layouts (a BCD body on an alphanumeric
 * field, an LL field longer than 99, ...).  Loaders call it; built-ins pass
 * it (tested). */
int iso_dialect_check(const iso_dialect_t *d, iso_err_t *err);

/* Bytes a body of `units` length occupies in this field's encoding. */
size_t iso_body_bytes(const iso_field_def_t *def, size_t units);

/* ------------------------------------------------------------------------ */
/* Parsing: a zero-copy view                                                 */

typedef struct iso_span_s {
  uint32_t off;    /* offset of the field's first byte (its length prefix) */
  uint16_t blen;   /* bytes of body, after the prefix */
  uint16_t units;  /* length in the field's units (digits, chars, bytes) */
  uint8_t hlen;    /* bytes of length prefix (0 for fixed) */
  uint8_t variant; /* 0: dialect's layout; k: variants[k-1] */
} iso_span_t;

typedef struct iso_msg_s {
  /* read-only */
  const uint8_t *buf;
  size_t len;
  const iso_dialect_t *dialect;
  char mti[4];        /* always ASCII digits after a successful parse */
  uint64_t bitmap[3]; /* present fields; field 1/65 bits as on the wire */
  iso_span_t f[ISO_MAX_FIELD + 1]; /* valid only where the bit is set */
} iso_msg_t;

static inline int iso_has(const iso_msg_t *m, int n) {
  if (n < 1 || n > ISO_MAX_FIELD)
    return 0;
  return (int)((m->bitmap[(n - 1) >> 6] >> (63 - ((n - 1) & 63))) & 1u);
}

/* Parses one whole message (no framing header) and validates every field
 * against its definition: lengths, content class, BCD nibbles and padding,
 * DE55 TLV structure.  Bytes after the last field are an error.  On failure
 * *m is unspecified and err (if not NULL) says where. */
int iso_parse(iso_msg_t *m, const iso_dialect_t *d, const uint8_t *buf,
              size_t len, iso_err_t *err);

/* Checks the mandatory fields the dialect declares for m's MTI. */
int iso_check_mandatory(const iso_msg_t *m, iso_err_t *err);

/* The definition that applied to field n of m (variants resolved); NULL if
 * the field is not present. */
const iso_field_def_t *iso_msg_field_def(const iso_msg_t *m, int n);

/* A view into a buffer. */
typedef struct iso_view_s {
  const uint8_t *p;
  size_t len;
} iso_view_t;

/* Wire bytes of field n: prefix and body (raw), or body only. */
int iso_get_raw(const iso_msg_t *m, int n, iso_view_t *out);
int iso_get_body(const iso_msg_t *m, int n, iso_view_t *out);

/* Field n as ASCII text: digits for n, track data for z ('D' or '=' as on
 * the wire), "C123"/"D123" for x+n, characters for a/an/ans/ns (EBCDIC is
 * translated), and upper-case hex for b.  Unmasked: the caller decides where
 * the text may go.  NUL-terminated when there is room; *outlen excludes the
 * NUL.  ISO_E_NOSPACE if cap is too small. */
int iso_get_text(const iso_msg_t *m, int n, char *out, size_t cap,
                 size_t *outlen);
/* Field n (class b) as bytes: copied, hex-decoded where the body is HEX. */
int iso_get_bytes(const iso_msg_t *m, int n, uint8_t *out, size_t cap,
                  size_t *outlen);
/* Numeric field (class n) as an unsigned integer. */
int iso_get_u64(const iso_msg_t *m, int n, uint64_t *v);
/* Amount in minor units: class n (non-negative) or x+n (C positive, D
 * negative). */
int iso_get_amount(const iso_msg_t *m, int n, int64_t *v);

/* ------------------------------------------------------------------------ */
/* Safe formatting (masking)                                                 */

#define ISO_FMT_UNMASK 0x01u /* show sensitive fields in clear */

/* Field n as text for people (logs, CLI), masked per its flags unless
 * ISO_FMT_UNMASK: a PAN as 6 first digits, '*', 4 last digits (fewer shown if
 * short); any other sensitive field as '*' of the same length. */
int iso_format_field(const iso_msg_t *m, int n, unsigned flags, char *out,
                     size_t cap, size_t *outlen);
/* Masks a PAN (digits) into out (cap >= len + 1): 123456******1234. */
size_t iso_mask_pan(const char *pan, size_t len, char *out, size_t cap);
/* One line per field, "MTI 0200\n  2 [primary account number]
 * 411111******1111\n", masked unless ISO_FMT_UNMASK.  Returns bytes written
 * (truncated to cap-1, always NUL-terminated when cap > 0). */
size_t iso_dump(const iso_msg_t *m, unsigned flags, char *out, size_t cap);

/* ------------------------------------------------------------------------ */
/* Building                                                                  */

/* Values are referenced, not copied: each must stay alive until iso_build
 * returns.  Setters check only the field number and that the field exists;
 * content is checked against the applicable definition by iso_build (which
 * depends on the MTI and DE3 and so is known only then). */
typedef struct iso_builder_s {
  /* read-only */
  const iso_dialect_t *dialect;
  char mti[4];
  uint64_t bitmap[3]; /* data fields set (bits 1 and 65 computed by build) */
  /* private */
  struct {
    const uint8_t *p;
    uint32_t len;
    uint16_t units; /* for wire values */
    uint8_t kind;   /* text, bytes or wire */
    uint8_t pad_;
  } v_[ISO_MAX_FIELD + 1];
  size_t scratch_used_;
  char scratch_[4096]; /* digits from iso_set_u64, text from iso_set_from */
} iso_builder_t;

void iso_builder_init(iso_builder_t *b, const iso_dialect_t *d,
                      const char mti[4]);
/* Text as iso_get_text gives it (for b: hex text). */
int iso_set_text(iso_builder_t *b, int n, const char *s, size_t len);
/* Raw bytes for a class-b field. */
int iso_set_bytes(iso_builder_t *b, int n, const uint8_t *p, size_t len);
/* A number, zero-padded on the left to the field's fixed length. */
int iso_set_u64(iso_builder_t *b, int n, uint64_t v);
/* Copies field n of src into b.  Where src's definition of n encodes
 * exactly like b's, the wire bytes are referenced as they are (zero copy);
 * otherwise the value is carried as text and re-encoded by iso_build. */
int iso_set_from(iso_builder_t *b, int n, const iso_msg_t *src);
void iso_unset(iso_builder_t *b, int n);

/* Writes the message: MTI, bitmaps, fields in order.  Never writes past
 * out+cap (ISO_E_NOSPACE).  On success *outlen is the message length. */
int iso_build(const iso_builder_t *b, uint8_t *out, size_t cap, size_t *outlen,
              iso_err_t *err);

/* ------------------------------------------------------------------------ */
/* BER-TLV (DE55, EMV ICC data)                                              */

typedef struct iso_tlv_s {
  uint32_t tag;         /* tag bytes big-endian: 0x9F26, 0xDF8116 */
  uint8_t tag_len;      /* 1..4 */
  uint8_t len_len;      /* 1..5 bytes of length field */
  uint8_t constructed;  /* bit 6 of the first tag byte */
  const uint8_t *value; /* into the iterated buffer */
  size_t len;           /* value length */
  size_t off;           /* offset of the tag's first byte in the buffer */
} iso_tlv_t;

typedef struct iso_tlv_iter_s {
  const uint8_t *buf;
  size_t len;
  size_t pos;
  int index;
} iso_tlv_iter_t;

void iso_tlv_begin(iso_tlv_iter_t *it, const uint8_t *buf, size_t len);
/* 1: *out is the next object at this level; 0: end; <0: error (err->offset
 * and err->subfield = index of the object).  0x00 bytes between objects are
 * padding (EMV Book 3, Annex B) and are skipped. */
int iso_tlv_next(iso_tlv_iter_t *it, iso_tlv_t *out, iso_err_t *err);
/* Walks every object, descending into constructed ones up to max_depth. */
int iso_tlv_validate(const uint8_t *buf, size_t len, int max_depth,
                     iso_err_t *err);
/* First top-level object with this tag: 1 found, 0 not found, <0 error. */
int iso_tlv_find(const uint8_t *buf, size_t len, uint32_t tag, iso_tlv_t *out);
/* Writes tag, minimal-form length and value.  ISO_E_NOSPACE if it does not
 * fit; ISO_E_TLV_TAG if tag is not a well-formed tag. */
int iso_tlv_encode(uint32_t tag, const uint8_t *value, size_t len, uint8_t *out,
                   size_t cap, size_t *outlen);

/* ------------------------------------------------------------------------ */
/* Framing: length headers and TPDU, apart from messages                     */

typedef enum {
  ISO_FRAME_BIN2 = 0, /* 2 bytes big-endian */
  ISO_FRAME_BCD2,     /* 2 bytes packed BCD, 0..9999 */
  ISO_FRAME_ASCII4,   /* 4 ASCII digits */
  ISO_FRAME_BIN4      /* 4 bytes big-endian */
} iso_frame_len_t;

typedef struct iso_framing_s {
  uint8_t len_type;          /* iso_frame_len_t */
  uint8_t len_includes_self; /* the length counts its own bytes */
  uint16_t header_len;       /* fixed bytes after the length (TPDU: 5) */
  uint32_t max_msg;          /* largest message (after the header) */
} iso_framing_t;

typedef struct iso_frame_s {
  const uint8_t *header; /* header_len bytes (TPDU) or NULL */
  size_t header_len;
  const uint8_t *msg;
  size_t msg_len;
} iso_frame_t;

/* Incremental framer over caller memory.  Bytes go in as they arrive, whole
 * frames come out as views into that memory; views stay valid until the next
 * iso_framer_space or iso_framer_feed call. */
typedef struct iso_framer_s {
  iso_framing_t cfg;
  uint8_t *buf;
  size_t cap;
  size_t head; /* first unconsumed byte */
  size_t tail; /* one past the last byte received */
  int error;   /* sticky: once an error is reported the stream is dead */
} iso_framer_t;

/* cap must hold the largest frame: length + header_len + max_msg bytes. */
int iso_framer_init(iso_framer_t *f, const iso_framing_t *cfg, uint8_t *buf,
                    size_t cap);
/* Where the next bytes can be written (for a socket read): compacts the
 * buffer when needed.  ISO_E_NOSPACE if nothing fits (cannot happen when cap
 * respects iso_framer_init's rule and frames are consumed). */
int iso_framer_space(iso_framer_t *f, uint8_t **p, size_t *avail);
/* Records that n bytes were written at the pointer iso_framer_space gave. */
int iso_framer_commit(iso_framer_t *f, size_t n);
/* Copies in as much of data as fits; *consumed says how much. */
int iso_framer_feed(iso_framer_t *f, const uint8_t *data, size_t len,
                    size_t *consumed);
/* 1: *out is the next whole frame; 0: more bytes needed; <0: the stream is
 * malformed (length not a number, too large, shorter than its header), and
 * every later call returns ISO_E_FRAME_FAILED. */
int iso_framer_next(iso_framer_t *f, iso_frame_t *out, iso_err_t *err);
/* Bytes of length header for this framing. */
size_t iso_frame_prefix_len(const iso_framing_t *cfg);
/* Writes the length header and the fixed header (hdr may be NULL: zeros)
 * for a message of msg_len bytes; the message goes right after. */
int iso_frame_write_header(const iso_framing_t *cfg, size_t msg_len,
                           const uint8_t *hdr, uint8_t *out, size_t cap,
                           size_t *outlen);
/* A TPDU answered: destination and source addresses swapped. */
void iso_tpdu_swap(uint8_t tpdu[5]);

/* ------------------------------------------------------------------------ */
/* Character sets                                                            */

/* EBCDIC code page 037 <-> ASCII; characters with no ASCII counterpart map
 * to 0x00 (and are rejected by every content class). */
uint8_t iso_ebcdic_to_ascii(uint8_t c);
uint8_t iso_ascii_to_ebcdic(uint8_t c);

#ifdef __cplusplus
}
#endif
#endif /* ISO8583_H */
