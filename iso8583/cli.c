/*
 * cli.c — the iso8583 command: lists the built-in dialects, decodes wire
 * messages to JSON lines and encodes JSON back to wire bytes
 * (docs/cli.md).
 *
 * The property the command keeps: for every dialect, `decode --unmask`
 * followed by `encode` reproduces the input byte for byte (for every
 * message the codec accepts, except hex bitmaps written in lower case, which
 * the builder writes in upper case).  Where a value could not be
 * carried back exactly as a TLV list (a DE55 with padding bytes, long-form
 * lengths or lower-case hex) it is printed as a hex string instead.
 *
 * Safety rules:
 *   - input is untrusted: every length is checked before use, and the whole
 *     input is bounded (CLI_MAX_INPUT);
 *   - error lines name the message number, the field and the byte offset,
 *     and never contain field content (messages carry PANs and track data);
 *   - sensitive fields are masked in decoded output unless --unmask.
 *
 * Exit status: 0 success, 1 bad input (the first bad message stops the
 * run), 2 usage error.
 */
#include "iso8583_spec.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The whole input is read into memory: 64 MiB is far beyond any capture an
 * operator decodes by hand, and bounds memory on hostile input. */
#define CLI_MAX_INPUT (64u * 1024u * 1024u)
/* Offsets inside a parsed message are 32-bit and body lengths 16-bit; a
 * message of 64 KiB is larger than any network allows. */
#define CLI_MAX_MSG 65535u
/* Longest frame header (TPDU, vendor header) accepted by --header-len. */
#define CLI_MAX_HEADER 1024u
/* Largest field value in bytes (a b field of 9999); as text (hex) it takes
 * twice that. */
#define CLI_FIELD_BYTES 9999u
#define CLI_TEXT_CAP (2u * CLI_FIELD_BYTES + 16u)

enum { CLI_EXIT_OK = 0, CLI_EXIT_INPUT = 1, CLI_EXIT_USAGE = 2 };

typedef enum { CLI_DECODE, CLI_ENCODE } cli_cmd_t;

typedef struct cli_s {
  cli_cmd_t cmd;
  const char *dialect_arg;
  const char *file; /* NULL or "-": standard input */
  int unmask;
  int binary;
  int framed;
  iso_framing_t framing;
  const iso_dialect_t *d;
  iso_dialect_t *owned; /* the dialect when it came from a file */
  unsigned long msgno;  /* 1-based number of the message being handled */
} cli_t;

static const char cli_usage_text[] =
    "usage: iso8583 dialects\n"
    "       iso8583 decode --dialect D [--unmask] [--binary]\n"
    "                      [--framing bin2|bcd2|ascii4|bin4 [--header-len N]]"
    " [FILE]\n"
    "       iso8583 encode --dialect D [--binary]\n"
    "                      [--framing bin2|bcd2|ascii4|bin4 [--header-len N]]"
    " [FILE]\n"
    "\n"
    "D is a built-in dialect name (see 'iso8583 dialects') or a dialect\n"
    "file (docs/dialect-files.md).  Input is FILE or standard input:\n"
    "decode reads one hex message per line (or raw bytes with --binary),\n"
    "encode reads JSON objects as decode writes them.  With --framing the\n"
    "input and output are streams of length-prefixed frames, each with an\n"
    "optional fixed header of N bytes (TPDU: 5).\n";

__attribute__((format(printf, 1, 2))) static void cli_say(const char *fmt,
                                                          ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("iso8583: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

__attribute__((format(printf, 1, 2))) static int cli_usage(const char *fmt,
                                                           ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("iso8583: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  fputs(cli_usage_text, stderr);
  return CLI_EXIT_USAGE;
}

/* A codec error as one line: message number, then field and offset. */
static int cli_codec_error(const cli_t *c, const iso_err_t *err) {
  char text[256];
  iso_err_format(err, c->d, text, sizeof text);
  cli_say("message %lu: %s", c->msgno, text);
  return CLI_EXIT_INPUT;
}

/* ------------------------------------------------------------------------ */
/* Input                                                                     */

static int cli_read_all(const cli_t *c, uint8_t **out, size_t *outlen) {
  FILE *f = stdin;
  if (c->file && strcmp(c->file, "-") != 0) {
    f = fopen(c->file, "rb");
    if (!f) {
      cli_say("%s: cannot open: %s", c->file, strerror(errno));
      return CLI_EXIT_INPUT;
    }
  }
  size_t cap = 64 * 1024, len = 0;
  uint8_t *buf = malloc(cap);
  int rc = CLI_EXIT_OK;
  if (!buf) {
    cli_say("out of memory");
    rc = CLI_EXIT_INPUT;
  }
  while (rc == CLI_EXIT_OK) {
    if (len == cap) {
      if (cap >= CLI_MAX_INPUT) {
        cli_say("input is larger than %u bytes", CLI_MAX_INPUT);
        rc = CLI_EXIT_INPUT;
        break;
      }
      uint8_t *grown = realloc(buf, cap * 2);
      if (!grown) {
        cli_say("out of memory");
        rc = CLI_EXIT_INPUT;
        break;
      }
      buf = grown;
      cap *= 2;
    }
    size_t n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0) {
      if (ferror(f)) {
        cli_say("cannot read input: %s", strerror(errno));
        rc = CLI_EXIT_INPUT;
      }
      break;
    }
  }
  if (f != stdin)
    fclose(f);
  if (rc != CLI_EXIT_OK) {
    free(buf);
    return rc;
  }
  *out = buf;
  *outlen = len;
  return CLI_EXIT_OK;
}

static int cli_hexval(int ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  return -1;
}

static int cli_is_space(int ch) {
  return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f';
}

/* Decodes the hex text of one input line (whitespace ignored) in place:
 * bytes never outgrow the text they come from.  Reports the column of the
 * first bad character, never the character itself. */
static int cli_unhex_line(const cli_t *c, unsigned long line, uint8_t *p,
                          size_t len, size_t *outlen) {
  size_t n = 0;
  int hi = -1;
  for (size_t i = 0; i < len; i++) {
    if (cli_is_space(p[i]))
      continue;
    int v = cli_hexval(p[i]);
    if (v < 0) {
      cli_say("message %lu: input line %lu, column %zu: not a hexadecimal "
              "digit",
              c->msgno, line, i + 1);
      return CLI_EXIT_INPUT;
    }
    if (hi < 0) {
      hi = v;
    } else {
      p[n++] = (uint8_t)(hi << 4 | v);
      hi = -1;
    }
  }
  if (hi >= 0) {
    cli_say("message %lu: input line %lu: odd number of hexadecimal digits",
            c->msgno, line);
    return CLI_EXIT_INPUT;
  }
  *outlen = n;
  return CLI_EXIT_OK;
}

static int cli_line_is_blank(const uint8_t *p, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (!cli_is_space(p[i]))
      return 0;
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Text and hex for JSON                                                     */

static void cli_hex(const uint8_t *p, size_t n, char *out) {
  static const char digits[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = '\0';
}

/* Field text is bytes; JSON strings are UTF-8.  Each byte becomes the code
 * point of the same value (Latin-1), which is the identity for ASCII and
 * lets a field validated only loosely (ISO_F_NO_VALIDATE) round-trip. */
static json_t *cli_json_text(const char *s, size_t len) {
  size_t extra = 0;
  for (size_t i = 0; i < len; i++)
    extra += (unsigned char)s[i] >= 0x80;
  if (!extra)
    return json_stringn(s, len);
  char *u = malloc(len + extra);
  if (!u)
    return NULL;
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x80) {
      u[n++] = (char)ch;
    } else {
      u[n++] = (char)(0xC0 | ch >> 6);
      u[n++] = (char)(0x80 | (ch & 0x3F));
    }
  }
  json_t *j = json_stringn(u, n);
  free(u);
  return j;
}

/* The inverse of cli_json_text, in place (never longer).  -1 if the text
 * holds a character above U+00FF, which no field byte can carry. */
static int cli_text_bytes(char *s, size_t len, size_t *outlen) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x80) {
      s[n++] = (char)ch;
    } else if ((ch == 0xC2 || ch == 0xC3) && i + 1 < len) {
      s[n++] = (char)(((ch & 0x03) << 6) | ((unsigned char)s[i + 1] & 0x3F));
      i++;
    } else {
      return -1;
    }
  }
  *outlen = n;
  return 0;
}

/* Hex text to bytes; -1 on a bad digit, an odd count or overflow. */
static long cli_unhex(const char *s, size_t len, uint8_t *out, size_t cap) {
  if (len % 2 || len / 2 > cap)
    return -1;
  for (size_t i = 0; i < len; i += 2) {
    int hi = cli_hexval((unsigned char)s[i]);
    int lo = cli_hexval((unsigned char)s[i + 1]);
    if (hi < 0 || lo < 0)
      return -1;
    out[i / 2] = (uint8_t)(hi << 4 | lo);
  }
  return (long)(len / 2);
}

/* ------------------------------------------------------------------------ */
/* Decoding                                                                  */

/* DE55 as a list of top-level objects, or NULL when the list would not
 * re-encode to the same bytes (padding, long-form lengths) or the data does
 * not walk as TLV: the caller then prints hex. */
static json_t *cli_tlv_list(const uint8_t *p, size_t len, int masked) {
  uint8_t *again = malloc(len + 1);
  char *hex = malloc(2 * len + 1);
  json_t *list = json_array();
  size_t pos = 0;
  int ok = again && hex && list;
  iso_tlv_iter_t it;
  iso_tlv_t t;
  iso_err_t err;
  int r = 0;
  iso_tlv_begin(&it, p, len);
  while (ok && (r = iso_tlv_next(&it, &t, &err)) == 1) {
    size_t w = 0;
    ok = iso_tlv_encode(t.tag, t.value, t.len, again + pos, len - pos, &w) ==
             0 &&
         memcmp(again + pos, p + pos, w) == 0;
    if (!ok)
      break;
    pos += w;
    char tag[9];
    snprintf(tag, sizeof tag, "%0*" PRIX32, 2 * t.tag_len, t.tag);
    if (masked) {
      memset(hex, '*', 2 * t.len);
      hex[2 * t.len] = '\0';
    } else {
      cli_hex(t.value, t.len, hex);
    }
    json_t *o = json_pack("{s:s, s:s}", "tag", tag, "value", hex);
    ok = o && json_array_append_new(list, o) == 0;
  }
  ok = ok && r == 0 && pos == len;
  free(again);
  free(hex);
  if (!ok) {
    json_decref(list);
    return NULL;
  }
  return list;
}

/* A list re-encodes as upper-case hex; a HEX body written in lower case
 * keeps its exact text only as a plain string. */
static int cli_hex_is_canonical(const iso_msg_t *m, int n,
                                const iso_field_def_t *def) {
  iso_view_t body;
  if (def->body_enc != ISO_ENC_HEX)
    return 1;
  if (iso_get_body(m, n, &body) != 0)
    return 0;
  for (size_t i = 0; i < body.len; i++)
    if (body.p[i] >= 'a' && body.p[i] <= 'f')
      return 0;
  return 1;
}

static int cli_field_value(cli_t *c, const iso_msg_t *m, int n, char *text,
                           uint8_t *bytes, json_t **out) {
  const iso_field_def_t *def = iso_msg_field_def(m, n);
  int masked =
      !c->unmask && def && (def->flags & (ISO_F_SENSITIVE | ISO_F_PAN));
  size_t len = 0;
  int rc;
  *out = NULL;
  if (def && (def->flags & ISO_F_TLV) && def->cls == ISO_CLS_B &&
      cli_hex_is_canonical(m, n, def)) {
    rc = iso_get_bytes(m, n, bytes, CLI_FIELD_BYTES, &len);
    if (rc == 0 && (*out = cli_tlv_list(bytes, len, masked)) != NULL)
      return 0;
  }
  if (masked)
    rc = iso_format_field(m, n, 0, text, CLI_TEXT_CAP, &len);
  else
    rc = iso_get_text(m, n, text, CLI_TEXT_CAP, &len);
  if (rc)
    return rc;
  /* iso_format_field masks only ISO_F_SENSITIVE fields; a dialect built in
   * C may flag a PAN without it, and a PAN is never printed in clear. */
  if (masked && !(def->flags & ISO_F_SENSITIVE)) {
    char *copy = malloc(len + 1);
    if (!copy)
      return ISO_E_NOMEM;
    memcpy(copy, text, len);
    len = iso_mask_pan(copy, len, text, CLI_TEXT_CAP);
    free(copy);
  }
  *out = cli_json_text(text, len);
  return *out ? 0 : ISO_E_NOMEM;
}

static int cli_print_json(json_t *o) {
  char *line = json_dumps(o, JSON_COMPACT);
  if (!line) {
    cli_say("out of memory");
    return CLI_EXIT_INPUT;
  }
  fputs(line, stdout);
  fputc('\n', stdout);
  free(line);
  return CLI_EXIT_OK;
}

static int cli_decode_one(cli_t *c, const uint8_t *msg, size_t len,
                          const uint8_t *hdr, size_t hlen) {
  iso_msg_t m;
  iso_err_t err;
  memset(&err, 0, sizeof err);
  if (len > CLI_MAX_MSG) {
    cli_say("message %lu: %zu bytes, more than the %u a message may have",
            c->msgno, len, CLI_MAX_MSG);
    return CLI_EXIT_INPUT;
  }
  int rc = iso_parse(&m, c->d, msg, len, &err);
  if (rc)
    return cli_codec_error(c, &err);

  char *text = malloc(CLI_TEXT_CAP);
  uint8_t *bytes = malloc(CLI_FIELD_BYTES);
  json_t *o = json_object();
  json_t *fields = json_object();
  int ok = text && bytes && o && fields;

  char mti[5], bitmap[3 * 16 + 1];
  memcpy(mti, m.mti, 4);
  mti[4] = '\0';
  size_t nb = 1 + (size_t)iso_has(&m, 1);
  if (nb == 2 && c->d->max_bitmaps == 3 && iso_has(&m, 65))
    nb = 3;
  for (size_t i = 0; i < nb; i++)
    snprintf(bitmap + 16 * i, 17, "%016" PRIX64, m.bitmap[i]);
  if (ok)
    ok = json_object_set_new(o, "mti", json_string(mti)) == 0 &&
         json_object_set_new(o, "bitmap", json_string(bitmap)) == 0;

  for (int n = 2; ok && n <= ISO_MAX_FIELD; n++) {
    if (!iso_has(&m, n))
      continue;
    const iso_field_def_t *def = iso_msg_field_def(&m, n);
    if (def && (def->flags & ISO_F_BITMAP))
      continue;
    json_t *v;
    rc = cli_field_value(c, &m, n, text, bytes, &v);
    if (rc) {
      /* A field the parser accepted always has a text form; report what
       * failed rather than print a partial object. */
      memset(&err, 0, sizeof err);
      err.code = rc;
      err.field = n;
      err.offset = m.f[n].off;
      json_decref(o);
      json_decref(fields);
      free(text);
      free(bytes);
      return cli_codec_error(c, &err);
    }
    char key[4];
    snprintf(key, sizeof key, "%d", n);
    ok = json_object_set_new(fields, key, v) == 0;
  }
  if (ok) {
    ok = json_object_set(o, "fields", fields) == 0;
    if (ok && hlen) {
      char hh[2 * CLI_MAX_HEADER + 1];
      cli_hex(hdr, hlen, hh);
      ok = json_object_set_new(o, "header", json_string(hh)) == 0;
    }
  }
  rc = ok ? cli_print_json(o) : CLI_EXIT_INPUT;
  if (!ok)
    cli_say("out of memory");
  json_decref(o);
  json_decref(fields);
  free(text);
  free(bytes);
  return rc;
}

static int cli_decode_lines(cli_t *c, uint8_t *in, size_t len) {
  unsigned long line = 0;
  size_t pos = 0;
  while (pos < len) {
    uint8_t *p = in + pos;
    uint8_t *nl = memchr(p, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - p) : len - pos;
    pos += n + (nl != NULL);
    line++;
    if (cli_line_is_blank(p, n))
      continue;
    c->msgno++;
    size_t blen = 0;
    int rc = cli_unhex_line(c, line, p, n, &blen);
    if (rc == CLI_EXIT_OK)
      rc = cli_decode_one(c, p, blen, NULL, 0);
    if (rc)
      return rc;
  }
  return CLI_EXIT_OK;
}

/* Hex input with --framing: the lines together are one byte stream. */
static int cli_unhex_stream(cli_t *c, uint8_t *in, size_t len, size_t *outlen) {
  unsigned long line = 0;
  size_t pos = 0, out = 0;
  while (pos < len) {
    uint8_t *p = in + pos;
    uint8_t *nl = memchr(p, '\n', len - pos);
    size_t n = nl ? (size_t)(nl - p) : len - pos;
    pos += n + (nl != NULL);
    line++;
    size_t blen = 0;
    c->msgno = 0;
    int rc = cli_unhex_line(c, line, p, n, &blen);
    if (rc)
      return rc;
    memmove(in + out, p, blen);
    out += blen;
  }
  *outlen = out;
  return CLI_EXIT_OK;
}

static int cli_decode_frames(cli_t *c, const uint8_t *in, size_t len) {
  size_t cap = iso_frame_prefix_len(&c->framing) + c->framing.header_len +
               c->framing.max_msg;
  uint8_t *buf = malloc(cap);
  if (!buf) {
    cli_say("out of memory");
    return CLI_EXIT_INPUT;
  }
  iso_framer_t f;
  iso_err_t err;
  memset(&err, 0, sizeof err);
  int rc = iso_framer_init(&f, &c->framing, buf, cap);
  if (rc) {
    free(buf);
    cli_say("cannot set up framing: %s", iso_strerror(rc));
    return CLI_EXIT_USAGE;
  }
  size_t pos = 0;
  rc = CLI_EXIT_OK;
  while (rc == CLI_EXIT_OK) {
    size_t used = 0;
    if (pos < len) {
      int r = iso_framer_feed(&f, in + pos, len - pos, &used);
      if (r < 0) {
        c->msgno++;
        rc = cli_codec_error(c, &(iso_err_t){.code = r, .offset = pos});
        break;
      }
      pos += used;
    }
    int got = 0;
    iso_frame_t fr;
    int r = 0;
    while (rc == CLI_EXIT_OK && (r = iso_framer_next(&f, &fr, &err)) == 1) {
      got = 1;
      c->msgno++;
      rc = cli_decode_one(c, fr.msg, fr.msg_len, fr.header, fr.header_len);
    }
    if (rc)
      break;
    if (r < 0) {
      /* The framer's offsets index its own buffer; bytes [head, tail) of
       * it are the input bytes just before pos. */
      if (err.offset >= f.head && err.offset <= f.tail)
        err.offset = pos - (f.tail - f.head) + (err.offset - f.head);
      c->msgno++;
      rc = cli_codec_error(c, &err);
      break;
    }
    if (pos >= len) {
      if (f.tail > f.head) {
        c->msgno++;
        size_t have = f.tail - f.head;
        cli_say("message %lu: input ends inside a frame (%zu byte%s of it "
                "present)",
                c->msgno, have, have == 1 ? "" : "s");
        rc = CLI_EXIT_INPUT;
      }
      break;
    }
    if (!got && used == 0) {
      /* The framer took nothing and gave nothing: a frame larger than its
       * buffer, which iso_framer_next should have reported. */
      c->msgno++;
      cli_say("message %lu: frame does not fit in %zu bytes", c->msgno, cap);
      rc = CLI_EXIT_INPUT;
    }
  }
  free(buf);
  return rc;
}

static int cli_decode(cli_t *c) {
  uint8_t *in = NULL;
  size_t len = 0;
  int rc = cli_read_all(c, &in, &len);
  if (rc)
    return rc;
  if (c->framed) {
    if (!c->binary)
      rc = cli_unhex_stream(c, in, len, &len);
    if (rc == CLI_EXIT_OK)
      rc = cli_decode_frames(c, in, len);
  } else if (c->binary) {
    c->msgno = 1;
    rc = cli_decode_one(c, in, len, NULL, 0);
  } else {
    rc = cli_decode_lines(c, in, len);
  }
  free(in);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */

/* Storage that must outlive iso_build: values are referenced, not copied. */
typedef struct cli_values_s {
  void *owned[ISO_MAX_FIELD + 1];
} cli_values_t;

static void cli_values_free(cli_values_t *v) {
  for (int n = 0; n <= ISO_MAX_FIELD; n++) {
    free(v->owned[n]);
    v->owned[n] = NULL;
  }
}

static int cli_bad(const cli_t *c, const char *path, const char *what) {
  cli_say("message %lu: %s: %s", c->msgno, path, what);
  return CLI_EXIT_INPUT;
}

/* A hex string of at most cap bytes; what says what is expected. */
static int cli_hex_string(const cli_t *c, const char *path, json_t *v,
                          uint8_t *out, size_t cap, size_t *outlen,
                          const char *what) {
  long n = json_is_string(v) ? cli_unhex(json_string_value(v),
                                         json_string_length(v), out, cap)
                             : -1;
  if (n < 0)
    return cli_bad(c, path, what);
  *outlen = (size_t)n;
  return CLI_EXIT_OK;
}

/* A DE55 list [{"tag":"9F26","value":"..."}, ...] encoded with minimal
 * lengths into a buffer that lives in vals until the message is built. */
static int cli_tlv_encode(const cli_t *c, int n, json_t *list,
                          cli_values_t *vals, uint8_t **out, size_t *outlen) {
  uint8_t *buf = malloc(CLI_FIELD_BYTES);
  uint8_t *value = malloc(CLI_FIELD_BYTES);
  if (!buf || !value) {
    free(buf);
    free(value);
    cli_say("out of memory");
    return CLI_EXIT_INPUT;
  }
  vals->owned[n] = buf;
  size_t pos = 0;
  int rc = CLI_EXIT_OK;
  for (size_t i = 0; rc == CLI_EXIT_OK && i < json_array_size(list); i++) {
    json_t *o = json_array_get(list, i);
    char path[64];
    snprintf(path, sizeof path, "fields.%d[%zu]", n, i);
    json_t *tag = json_is_object(o) ? json_object_get(o, "tag") : NULL;
    json_t *val = json_is_object(o) ? json_object_get(o, "value") : NULL;
    if (!tag || !val || json_object_size(o) != 2) {
      rc = cli_bad(c, path,
                   "must be an object with exactly \"tag\" and \"value\"");
      break;
    }
    uint8_t tb[4] = {0, 0, 0, 0};
    size_t tlen = 0, vlen = 0;
    char sub[80];
    snprintf(sub, sizeof sub, "%s.tag", path);
    rc = cli_hex_string(c, sub, tag, tb, sizeof tb, &tlen,
                        "must be 1 to 4 bytes as hexadecimal digits");
    if (rc)
      break;
    if (tlen == 0) {
      rc = cli_bad(c, sub, "must be 1 to 4 bytes as hexadecimal digits");
      break;
    }
    uint32_t t = 0;
    for (size_t k = 0; k < tlen; k++)
      t = t << 8 | tb[k];
    snprintf(sub, sizeof sub, "%s.value", path);
    rc = cli_hex_string(c, sub, val, value, CLI_FIELD_BYTES, &vlen,
                        "must be an even number of hexadecimal digits (at "
                        "most 9999 bytes)");
    if (rc)
      break;
    size_t w = 0;
    int r =
        iso_tlv_encode(t, value, vlen, buf + pos, CLI_FIELD_BYTES - pos, &w);
    if (r == ISO_E_TLV_TAG) {
      snprintf(sub, sizeof sub, "%s.tag", path);
      rc = cli_bad(c, sub, "not a well-formed BER-TLV tag");
    } else if (r) {
      rc = cli_bad(c, path, "the objects together are larger than the field");
    }
    pos += r ? 0 : w;
  }
  free(value);
  if (rc == CLI_EXIT_OK) {
    *out = buf;
    *outlen = pos;
  }
  return rc;
}

static int cli_set_field(const cli_t *c, iso_builder_t *b, const char *key,
                         json_t *v, cli_values_t *vals) {
  char path[64];
  char echo[16];
  size_t i = 0;
  for (; i < 8 && key[i]; i++)
    echo[i] = (key[i] >= 0x20 && key[i] < 0x7f) ? key[i] : '?';
  echo[i] = '\0';
  snprintf(path, sizeof path, "fields.%s", echo);

  /* "2".."192" exactly: no sign, no leading zero. */
  int n = -1;
  if (key[0] >= '1' && key[0] <= '9' && strlen(key) <= 3) {
    n = 0;
    for (i = 0; key[i] && n >= 0; i++)
      n = (key[i] >= '0' && key[i] <= '9') ? n * 10 + (key[i] - '0') : -1;
  }
  if (n < 1 || n > ISO_MAX_FIELD)
    return cli_bad(c, path, "key must be a field number 2..192");
  const iso_field_def_t *def = &c->d->fields[n];
  if (def->flags & ISO_F_BITMAP)
    return cli_bad(c, path, "is a bitmap, which encode computes");
  if (!def->name)
    return cli_bad(c, path, "field is not defined in the dialect");

  int rc;
  if (json_is_array(v)) {
    if (def->cls != ISO_CLS_B)
      return cli_bad(c, path, "a TLV list needs a binary (class b) field");
    uint8_t *p;
    size_t len = 0;
    if ((rc = cli_tlv_encode(c, n, v, vals, &p, &len)))
      return rc;
    rc = iso_set_bytes(b, n, p, len);
  } else if (json_is_string(v)) {
    /* json_string_value stays valid while the document lives, which is
     * until after iso_build; only text needing conversion is copied. */
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    size_t k = 0;
    while (k < len && (unsigned char)s[k] < 0x80)
      k++;
    if (k < len) {
      char *copy = malloc(len + 1);
      if (!copy) {
        cli_say("out of memory");
        return CLI_EXIT_INPUT;
      }
      memcpy(copy, s, len);
      vals->owned[n] = copy;
      if (cli_text_bytes(copy, len, &len) < 0)
        return cli_bad(c, path,
                       "has a character above U+00FF, which no field byte "
                       "can carry");
      s = copy;
    }
    rc = iso_set_text(b, n, s, len);
  } else {
    return cli_bad(c, path, "must be a string (or a TLV list for DE55)");
  }
  if (rc) {
    iso_err_t err = {.code = rc, .field = n};
    return cli_codec_error(c, &err);
  }
  return CLI_EXIT_OK;
}

static int cli_encode_one(cli_t *c, json_t *o, uint8_t *out, size_t cap,
                          size_t *outlen) {
  if (!json_is_object(o))
    return cli_bad(c, "(message)", "must be a JSON object");
  const char *key;
  json_t *v;
  json_object_foreach(o, key, v) {
    if (strcmp(key, "mti") && strcmp(key, "bitmap") && strcmp(key, "fields") &&
        strcmp(key, "header"))
      return cli_bad(c, "(message)",
                     "unknown key (expected \"mti\", \"bitmap\", \"fields\""
                     " and, with --framing, \"header\")");
  }
  json_t *mti = json_object_get(o, "mti");
  const char *ms = json_is_string(mti) ? json_string_value(mti) : "";
  int ok = json_is_string(mti) && json_string_length(mti) == 4;
  for (int i = 0; ok && i < 4; i++)
    ok = ms[i] >= '0' && ms[i] <= '9';
  if (!ok)
    return cli_bad(c, "mti", "must be a string of four digits");

  uint8_t hdr[CLI_MAX_HEADER];
  size_t hlen = 0;
  json_t *h = json_object_get(o, "header");
  if (h && !c->framed)
    return cli_bad(c, "header", "is only meaningful with --framing");
  if (h) {
    int rc = cli_hex_string(c, "header", h, hdr, sizeof hdr, &hlen,
                            "must be a string of hexadecimal digits");
    if (rc)
      return rc;
    if (hlen != c->framing.header_len) {
      cli_say("message %lu: header: %zu bytes, but --header-len is %u",
              c->msgno, hlen, (unsigned)c->framing.header_len);
      return CLI_EXIT_INPUT;
    }
  }

  iso_builder_t *b = malloc(sizeof *b);
  cli_values_t *vals = calloc(1, sizeof *vals);
  if (!b || !vals) {
    free(b);
    free(vals);
    cli_say("out of memory");
    return CLI_EXIT_INPUT;
  }
  iso_builder_init(b, c->d, ms);
  int rc = CLI_EXIT_OK;
  json_t *fields = json_object_get(o, "fields");
  if (fields && !json_is_object(fields))
    rc = cli_bad(c, "fields", "must be an object keyed by field number");
  if (fields && rc == CLI_EXIT_OK) {
    json_object_foreach(fields, key, v) {
      rc = cli_set_field(c, b, key, v, vals);
      if (rc)
        break;
    }
  }
  if (rc == CLI_EXIT_OK) {
    size_t pre = c->framed
                     ? iso_frame_prefix_len(&c->framing) + c->framing.header_len
                     : 0;
    size_t mlen = 0;
    iso_err_t err;
    memset(&err, 0, sizeof err);
    int r = iso_build(b, out + pre, cap - pre, &mlen, &err);
    if (r) {
      rc = cli_codec_error(c, &err);
    } else if (c->framed) {
      size_t w = 0;
      r = iso_frame_write_header(&c->framing, mlen, h ? hdr : NULL, out, pre,
                                 &w);
      if (r || w != pre) {
        cli_say("message %lu: cannot frame a message of %zu bytes: %s",
                c->msgno, mlen, iso_strerror(r ? r : ISO_E_INVAL));
        rc = CLI_EXIT_INPUT;
      }
      *outlen = pre + mlen;
    } else {
      *outlen = mlen;
    }
  }
  cli_values_free(vals);
  free(vals);
  free(b);
  return rc;
}

/* Where a JSON error is in the whole input, for the message. */
static void cli_json_where(const uint8_t *in, size_t pos,
                           const json_error_t *je, unsigned long *line,
                           unsigned long *col) {
  unsigned long l = 1;
  size_t line_start = 0;
  for (size_t i = 0; i < pos; i++) {
    if (in[i] == '\n') {
      l++;
      line_start = i + 1;
    }
  }
  *line = l + (unsigned long)(je->line > 0 ? je->line - 1 : 0);
  *col = (unsigned long)(je->column > 0 ? je->column : 0);
  if (je->line <= 1)
    *col += (unsigned long)(pos - line_start);
}

static int cli_encode(cli_t *c) {
  uint8_t *in = NULL;
  size_t len = 0;
  int rc = cli_read_all(c, &in, &len);
  if (rc)
    return rc;
  size_t cap = CLI_MAX_MSG + 4 + CLI_MAX_HEADER;
  uint8_t *out = malloc(cap);
  char *hex = malloc(2 * cap + 1);
  if (!out || !hex) {
    cli_say("out of memory");
    rc = CLI_EXIT_INPUT;
  }
  size_t pos = 0;
  while (rc == CLI_EXIT_OK) {
    while (pos < len && (in[pos] == ' ' || in[pos] == '\t' || in[pos] == '\r' ||
                         in[pos] == '\n'))
      pos++;
    if (pos >= len)
      break;
    c->msgno++;
    json_error_t je;
    json_t *o = json_loadb(
        (const char *)in + pos, len - pos,
        JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!o) {
      unsigned long line, col;
      cli_json_where(in, pos, &je, &line, &col);
      /* jansson quotes the offending input after " near "; drop it. */
      char *near = strstr(je.text, " near ");
      if (near)
        *near = '\0';
      cli_say("message %lu: input line %lu, column %lu: not valid JSON (%s)",
              c->msgno, line, col, je.text);
      rc = CLI_EXIT_INPUT;
      break;
    }
    pos += (size_t)je.position;
    size_t mlen = 0;
    rc = cli_encode_one(c, o, out, cap, &mlen);
    json_decref(o);
    if (rc)
      break;
    if (c->binary) {
      fwrite(out, 1, mlen, stdout);
    } else {
      cli_hex(out, mlen, hex);
      fputs(hex, stdout);
      fputc('\n', stdout);
    }
  }
  free(hex);
  free(out);
  free(in);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Command line                                                              */

static int cli_dialects(void) {
  for (size_t i = 0; i < iso_dialect_count(); i++) {
    const iso_dialect_t *d = iso_dialect_at(i);
    printf("%-16s %s\n", d->name, d->description ? d->description : "");
  }
  return CLI_EXIT_OK;
}

static int cli_parse_framing(const char *s, iso_framing_t *f) {
  static const struct {
    const char *name;
    iso_frame_len_t type;
  } types[] = {{"bin2", ISO_FRAME_BIN2},
               {"bcd2", ISO_FRAME_BCD2},
               {"ascii4", ISO_FRAME_ASCII4},
               {"bin4", ISO_FRAME_BIN4}};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    if (strcmp(s, types[i].name) == 0) {
      f->len_type = (uint8_t)types[i].type;
      return 0;
    }
  }
  return -1;
}

/* An option's value: "--opt value" or "--opt=value". */
static const char *cli_opt_value(int argc, char **argv, int *i,
                                 const char *name) {
  size_t n = strlen(name);
  if (!argv[*i] || strncmp(argv[*i], name, n) != 0)
    return NULL;
  if (argv[*i][n] == '=')
    return argv[*i] + n + 1;
  if (argv[*i][n] != '\0')
    return NULL;
  if (*i + 1 >= argc)
    return "";
  return argv[++*i];
}

static int cli_parse_args(cli_t *c, int argc, char **argv) {
  int header_len = -1;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    const char *v;
    if ((v = cli_opt_value(argc, argv, &i, "--dialect"))) {
      if (!*v)
        return cli_usage("--dialect needs a dialect name or file");
      c->dialect_arg = v;
    } else if ((v = cli_opt_value(argc, argv, &i, "--framing"))) {
      if (cli_parse_framing(v, &c->framing) < 0)
        return cli_usage("--framing must be bin2, bcd2, ascii4 or bin4");
      c->framed = 1;
    } else if ((v = cli_opt_value(argc, argv, &i, "--header-len"))) {
      char *end;
      errno = 0;
      long n = strtol(v, &end, 10);
      if (!*v || *end || errno || n < 0 || n > (long)CLI_MAX_HEADER)
        return cli_usage("--header-len must be a number 0..%u", CLI_MAX_HEADER);
      header_len = (int)n;
    } else if (strcmp(a, "--unmask") == 0 && c->cmd == CLI_DECODE) {
      c->unmask = 1;
    } else if (strcmp(a, "--binary") == 0) {
      c->binary = 1;
    } else if (a[0] == '-' && a[1] != '\0') {
      return cli_usage("unknown option for %s: %.40s", argv[1], a);
    } else if (!c->file) {
      c->file = a;
    } else {
      return cli_usage("only one input file may be given");
    }
  }
  if (!c->dialect_arg)
    return cli_usage("%s needs --dialect", argv[1]);
  if (header_len >= 0 && !c->framed)
    return cli_usage("--header-len needs --framing");
  c->framing.header_len = (uint16_t)(header_len > 0 ? header_len : 0);
  c->framing.max_msg = CLI_MAX_MSG;
  return CLI_EXIT_OK;
}

int main(int argc, char **argv) {
  if (argc < 2)
    return cli_usage("a command is needed");
  const char *cmd = argv[1];
  if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 ||
      strcmp(cmd, "help") == 0) {
    fputs(cli_usage_text, stdout);
    return CLI_EXIT_OK;
  }
  if (strcmp(cmd, "dialects") == 0) {
    if (argc > 2)
      return cli_usage("dialects takes no arguments");
    return cli_dialects();
  }

  cli_t c;
  memset(&c, 0, sizeof c);
  if (strcmp(cmd, "decode") == 0)
    c.cmd = CLI_DECODE;
  else if (strcmp(cmd, "encode") == 0)
    c.cmd = CLI_ENCODE;
  else
    return cli_usage("unknown command: %.40s", cmd);
  int rc = cli_parse_args(&c, argc, argv);
  if (rc)
    return rc;

  char msg[512];
  c.d = iso_spec_resolve(c.dialect_arg, &c.owned, msg, sizeof msg);
  if (!c.d) {
    cli_say("%s", msg);
    return CLI_EXIT_USAGE;
  }
  rc = c.cmd == CLI_DECODE ? cli_decode(&c) : cli_encode(&c);
  if (fflush(stdout) != 0 || ferror(stdout)) {
    cli_say("cannot write output: %s", strerror(errno));
    rc = CLI_EXIT_INPUT;
  }
  iso_spec_free(c.owned);
  return rc;
}
