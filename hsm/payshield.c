/*
 * payshield.c — the payshield backend: a client of the Thales payShield
 * host-command protocol over TCP, on the hsm's libuv loop.  The production
 * PIN path: PIN blocks, keys and PINs are only ever in clear inside the
 * HSM; this process holds keys as cryptograms under the HSM's LMK (the key
 * table) and PIN blocks as they arrive, enciphered.
 *
 * Framing.  Every message, both ways, is
 *     length (2 bytes, big-endian, of what follows) | header | body
 * The header is cfg->payshield_header_len characters (default 4) that the
 * HSM echoes unchanged.  A request body is the command code (2) and its
 * fields; a response body is the response code (the command code with its
 * second character advanced: CA -> CB, M6 -> M7), the error code (2
 * digits) and fields.  No message trailer (0x19 ...) is sent.
 *
 * Matching.  Each connection numbers its requests; the number, in
 * decimal, zero-padded to the header length, is the request's header (its
 * tag): at most 10^min(header length, 9) tags per connection.  Responses
 * are matched by tag, so any number of requests are pipelined on one
 * connection and may be answered in any order.  A tag is not reused while
 * a request, or what a cancelled request left behind, still waits for its
 * answer on that connection.
 *
 * Connection states and transitions (one per configured connection):
 *
 *   DOWN --backoff timer--> CONNECTING --connected--> UP
 *                               |                      |
 *                connect failed |   EOF, read or write | error, framing
 *                               v   violation, orphans | over the limit
 *                            CLOSING <-----------------+
 *                               |
 *                 handle closed +--> DOWN (timer armed with the backoff)
 *
 *   The backoff starts at 100 ms, doubles on every drop up to 5 s, and is
 *   back to 100 ms once a response was matched on the connection.
 *   hsm_close moves every connection to CLOSING; the state is freed when
 *   the last libuv handle has closed.
 *
 * Requests are written on the UP connection with the fewest requests in
 * flight (ties in turn), or queued on a CONNECTING one and written once it
 * connects; with neither, they complete at once with HSM_E_UNAVAILABLE.
 * When a connection leaves UP or CONNECTING, every request on it completes
 * with HSM_E_UNAVAILABLE.  Errors that do not need the HSM (unknown key,
 * wrong usage, unsupported format) complete the request inline, as in the
 * soft backend.
 *
 * Invariants:
 *   (1) a node (a request written or queued and not yet answered) is in
 *       exactly one connection's tag table and node list; it is also in
 *       the request table while its request is live, and not once it is
 *       an orphan;
 *   (2) after cancel(req) the node's req is NULL (an orphan): its answer,
 *       when it comes, is dropped and counted as late; a request completes
 *       at most once, and never after cancel;
 *   (3) cancel() completes nothing: hsm.c walks its in-flight list around
 *       that call, so a reset that would fail other requests waits for
 *       the next loop turn;
 *   (4) the state is freed only when its last libuv handle has closed, so
 *       the callbacks libuv still owes after hsm_close find it, and none
 *       of them touches the hsm_t;
 *   (5) no key, PIN block or PIN is logged or put in an error message;
 *       frame buffers are wiped once written or consumed.
 */
#include "backend.h"
#include "crypto.h"
#include "keystore.h"
#include "payshield_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PS_DEFAULT_PORT 1500
#define PS_DEFAULT_HEADER_LEN 4
#define PS_MAX_HEADER_LEN 16
#define PS_MAX_CONNECTIONS 64
#define PS_BUCKETS 1024
#define PS_BACKOFF_MIN_MS 100
#define PS_BACKOFF_MAX_MS 5000
/* Cancelled requests still owed an answer on one connection; past this the
 * HSM is not answering and the connection is reset. */
#define PS_MAX_ORPHANS 1024
/* Longest message MACed in one M6/M8 (mode 0, single block chain). */
#define PS_MAC_MAX 8192
#define PS_FRAME_MAX 65535
#define PS_TABLE_MAX_BYTES (1u << 20)
#define PS_TABLE_MAX_KEYS 10000
#define PS_LINE_MAX 255

/* Returned by the encoders for "no need to ask: the verification fails"
 * (a malformed PVV or CVV from the card, as the soft backend treats it). */
#define PS_VERDICT_FAILED 1

/* ------------------------------------------------------------------------ */
/* Key table                                                                 */

typedef struct ps_key_s {
  char label[HSM__LABEL_MAX + 1];
  hsm_usage_t usage;
  char crypt[50]; /* as sent: 16H, U/X + 32H or T/Y + 48H; NUL-terminated */
  size_t len;     /* clear key bytes: 8, 16 or 24 */
  char kcv[7];
  uint32_t version;  /* 1 when the line has no version column */
  int64_t not_after; /* Unix seconds; 0: none */
} ps_key_t;

struct hsm__ps_table_s {
  ps_key_t *keys; /* sorted by label, then version */
  size_t n;
  int64_t mtime;
  char lmk_check[17]; /* "!lmk-check" line: 16H, or "" */
};

static int is_uhex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static int all_uhex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!is_uhex(s[i]))
      return 0;
  return 1;
}

/* Exactly n digits and a NUL. */
static int digits_exactly(const char *s, size_t n) {
  return s && strnlen(s, n + 1) == n && hsm__all_digits(s, n);
}

/* The usages a payShield key table may hold (the LMK pairs the client
 * drives); DEK, HMAC and KBPK keys belong to the soft or pkcs11 backend. */
static int table_usage_ok(hsm_usage_t u) {
  switch (u) {
  case HSM_USAGE_ZMK:
  case HSM_USAGE_TMK:
  case HSM_USAGE_ZPK:
  case HSM_USAGE_TPK:
  case HSM_USAGE_BDK:
  case HSM_USAGE_PVK:
  case HSM_USAGE_CVK:
  case HSM_USAGE_TAK:
  case HSM_USAGE_ZAK:
    return 1;
  default:
    return 0;
  }
}

static int key_cmp(const void *a, const void *b) {
  return strcmp(((const ps_key_t *)a)->label, ((const ps_key_t *)b)->label);
}

/* Label, then version. */
static int key_vcmp(const void *a, const void *b) {
  const ps_key_t *x = a, *y = b;
  int c = strcmp(x->label, y->label);
  if (c)
    return c;
  return x->version < y->version ? -1 : x->version > y->version;
}

void hsm__ps_table_free(hsm__ps_table_t *t) {
  if (!t)
    return;
  if (t->keys)
    hsm__cleanse(t->keys, t->n * sizeof *t->keys);
  free(t->keys);
  free(t);
}

/* Splits one line into at most 7 fields (7 means "too many"). */
static size_t split_fields(char *line, char *f[7]) {
  size_t n = 0;
  char *p = line;
  while (*p) {
    while (*p == ' ' || *p == '\t')
      p++;
    if (!*p)
      break;
    if (n == 7)
      return 7;
    f[n++] = p;
    while (*p && *p != ' ' && *p != '\t')
      p++;
    if (*p)
      *p++ = '\0';
  }
  return n;
}

/* A decimal number of 1 to maxdigits digits, no leading zero (except
 * "0" itself), at most max. */
static int parse_dec(const char *s, size_t maxdigits, uint64_t max,
                     uint64_t *out) {
  size_t n = strlen(s);
  if (n == 0 || n > maxdigits || !hsm__all_digits(s, n) ||
      (n > 1 && s[0] == '0'))
    return -1;
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++)
    v = v * 10 + (uint64_t)(s[i] - '0');
  if (v > max)
    return -1;
  *out = v;
  return 0;
}

/* Checks one "label usage key kcv [version [not_after]]" line into k; the
 * reason in why. */
static int parse_key_line(char *line, ps_key_t *k, const char **why) {
  char *f[7];
  size_t n = split_fields(line, f);
  if (n < 4 || n > 6) {
    *why = "expected 4 to 6 fields: label usage key kcv [version "
           "[not_after]]";
    return -1;
  }
  uint64_t version = 1, not_after = 0;
  if (n >= 5 && parse_dec(f[4], 10, UINT32_MAX, &version) != 0) {
    *why = "version must be a decimal number from 1 to 4294967295";
    return -1;
  }
  if (version == 0) {
    *why = "version must be a decimal number from 1 to 4294967295";
    return -1;
  }
  if (n == 6 && parse_dec(f[5], 18, (uint64_t)INT64_MAX, &not_after) != 0) {
    *why = "not_after must be Unix seconds in decimal (0: none)";
    return -1;
  }
  if (!hsm__ks_label_ok(f[0])) {
    *why = "label must be 1 to 63 of A-Z a-z 0-9 . _ -";
    return -1;
  }
  hsm_usage_t u = hsm_usage_parse(f[1]);
  if (u == HSM_USAGE_NONE) {
    *why = "unknown key usage";
    return -1;
  }
  if (!table_usage_ok(u)) {
    *why = "usage not served by payshield (DEK, HMAC and KBPK keys belong to "
           "the soft or pkcs11 backend)";
    return -1;
  }
  const char *key = f[2];
  size_t klen = strlen(key), hexlen, bytes;
  if (key[0] == 'U' || key[0] == 'X') {
    hexlen = 32;
    bytes = 16;
  } else if (key[0] == 'T' || key[0] == 'Y') {
    hexlen = 48;
    bytes = 24;
  } else {
    hexlen = 16;
    bytes = 8;
  }
  size_t scheme = bytes == 8 ? 0 : 1;
  if (klen != scheme + hexlen || !all_uhex(key + scheme, hexlen)) {
    *why = "key must be 16H, U or X + 32H, or T or Y + 48H (upper-case hex)";
    return -1;
  }
  if (bytes == 8 && (u == HSM_USAGE_BDK || u == HSM_USAGE_CVK)) {
    *why = "a BDK or CVK cannot be single length";
    return -1;
  }
  if (strlen(f[3]) != 6 || !all_uhex(f[3], 6)) {
    *why = "check value must be 6 upper-case hex digits";
    return -1;
  }
  memset(k, 0, sizeof *k);
  memcpy(k->label, f[0], strlen(f[0]) + 1);
  k->usage = u;
  memcpy(k->crypt, key, klen + 1);
  k->len = bytes;
  memcpy(k->kcv, f[3], 7);
  k->version = (uint32_t)version;
  k->not_after = (int64_t)not_after;
  return 0;
}

/* "!lmk-check 16H": the check value NC must return. */
static int parse_directive(char *line, hsm__ps_table_t *t, const char **why) {
  char *f[7];
  size_t n = split_fields(line, f);
  if (strcmp(f[0], "!lmk-check") != 0) {
    *why = "unknown directive (only !lmk-check)";
    return -1;
  }
  if (n != 2 || strlen(f[1]) != 16 || !all_uhex(f[1], 16)) {
    *why = "!lmk-check takes one value of 16 upper-case hex digits";
    return -1;
  }
  if (t->lmk_check[0]) {
    *why = "!lmk-check appears twice";
    return -1;
  }
  memcpy(t->lmk_check, f[1], 17);
  return 0;
}

int hsm__ps_table_parse(const char *text, size_t len, hsm__ps_table_t **out,
                        char *err, size_t errcap) {
  if (!text || !out)
    return HSM_E_INVAL;
  *out = NULL;
  hsm__ps_table_t *t = calloc(1, sizeof *t);
  if (!t)
    return HSM_E_NOMEM;
  size_t cap = 0, lineno = 0, pos = 0;
  char line[PS_LINE_MAX + 2];
  const char *why = NULL;
  int rc = 0;
  while (pos < len && !rc) {
    size_t end = pos;
    while (end < len && text[end] != '\n')
      end++;
    lineno++;
    size_t n = end - pos;
    if (n > PS_LINE_MAX) {
      why = "line longer than 255 characters";
      rc = HSM_E_KEYSTORE;
      break;
    }
    memcpy(line, text + pos, n);
    line[n] = '\0';
    pos = end < len ? end + 1 : end;
    for (size_t i = 0; i < n && !why; i++) {
      unsigned char c = (unsigned char)line[i];
      if ((c < 0x20 && c != '\t') || c >= 0x7F)
        why = "control or non-ASCII character";
    }
    if (why) {
      rc = HSM_E_KEYSTORE;
      break;
    }
    char *p = line;
    while (*p == ' ' || *p == '\t')
      p++;
    if (*p == '\0' || *p == '#')
      continue;
    if (*p == '!') {
      if (parse_directive(p, t, &why) != 0) {
        rc = HSM_E_KEYSTORE;
        break;
      }
      continue;
    }
    if (t->n == PS_TABLE_MAX_KEYS) {
      why = "more than 10000 keys";
      rc = HSM_E_KEYSTORE;
      break;
    }
    if (t->n == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      ps_key_t *nk = calloc(ncap, sizeof *nk);
      if (!nk) {
        rc = HSM_E_NOMEM;
        break;
      }
      if (t->keys) {
        memcpy(nk, t->keys, t->n * sizeof *nk);
        hsm__cleanse(t->keys, t->n * sizeof *nk);
      }
      free(t->keys);
      t->keys = nk;
      cap = ncap;
    }
    if (parse_key_line(p, &t->keys[t->n], &why) != 0) {
      rc = HSM_E_KEYSTORE;
      break;
    }
    t->n++;
  }
  hsm__cleanse(line, sizeof line);
  if (!rc && t->n > 1) {
    qsort(t->keys, t->n, sizeof *t->keys, key_vcmp);
    for (size_t i = 1; i < t->n && !rc; i++) {
      const ps_key_t *a = &t->keys[i - 1], *b = &t->keys[i];
      if (strcmp(a->label, b->label) != 0)
        continue;
      /* Sorting lost the line number; name the label instead (labels
       * are not secret). */
      if (a->version == b->version) {
        if (err && errcap)
          snprintf(err, errcap, "label \"%s\" version %lu appears twice",
                   b->label, (unsigned long)b->version);
      } else if (a->usage != b->usage) {
        if (err && errcap)
          snprintf(err, errcap, "label \"%s\": versions differ in usage",
                   b->label);
      } else {
        continue;
      }
      hsm__ps_table_free(t);
      return HSM_E_KEYSTORE;
    }
  }
  if (rc) {
    if (err && errcap && why)
      snprintf(err, errcap, "line %zu: %s", lineno, why);
    else if (err && errcap)
      snprintf(err, errcap, "%s", hsm_strerror(rc));
    hsm__ps_table_free(t);
    return rc;
  }
  *out = t;
  return 0;
}

/* Reads the whole key table file: a private regular file (checked on the
 * path and again on the open descriptor), at most PS_TABLE_MAX_BYTES.  On
 * success *out holds size + 1 bytes the caller wipes and frees. */
static int table_slurp(const char *path, char **out, size_t *outlen,
                       int64_t *mtime, char *err, size_t errcap) {
  *out = NULL;
  int rc = hsm__file_private(path);
  if (rc) {
    if (err && errcap)
      snprintf(err, errcap,
               rc == HSM_E_PERMISSIONS
                   ? "must be a regular file owned by this user, mode 0600 "
                     "or stricter"
                   : "cannot be examined");
    return rc == HSM_E_PERMISSIONS ? rc : HSM_E_KEYSTORE;
  }
  /* O_NONBLOCK: a path that became a FIFO since the check must not hang;
   * fstat refuses it below. */
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (err && errcap)
      snprintf(err, errcap, "cannot be opened");
    return errno == ELOOP ? HSM_E_PERMISSIONS : HSM_E_KEYSTORE;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
      (st.st_mode & 077) != 0) {
    close(fd);
    if (err && errcap)
      snprintf(err, errcap,
               "must be a regular file owned by this user, mode "
               "0600 or stricter");
    return HSM_E_PERMISSIONS;
  }
  if ((uintmax_t)st.st_size > PS_TABLE_MAX_BYTES) {
    close(fd);
    if (err && errcap)
      snprintf(err, errcap, "larger than 1 MiB");
    return HSM_E_KEYSTORE;
  }
  size_t size = (size_t)st.st_size;
  char *buf = malloc(size + 1);
  if (!buf) {
    close(fd);
    return HSM_E_NOMEM;
  }
  /* One byte more than the size: a file that grew while being read is
   * noticed rather than cut. */
  size_t got = 0;
  while (got < size + 1) {
    ssize_t r = read(fd, buf + got, size + 1 - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      if (r < 0)
        got = SIZE_MAX;
      break;
    }
    got += (size_t)r;
  }
  close(fd);
  if (got != size) {
    hsm__cleanse(buf, size + 1);
    free(buf);
    if (err && errcap)
      snprintf(err, errcap, "changed or failed while being read");
    return HSM_E_KEYSTORE;
  }
  *out = buf;
  *outlen = size;
  if (mtime)
    *mtime = (int64_t)st.st_mtime;
  return 0;
}

int hsm__ps_table_load(const char *path, hsm__ps_table_t **out, char *err,
                       size_t errcap) {
  char *buf;
  size_t size;
  int64_t mtime = 0;
  *out = NULL;
  int rc = table_slurp(path, &buf, &size, &mtime, err, errcap);
  if (rc)
    return rc;
  rc = hsm__ps_table_parse(buf, size, out, err, errcap);
  hsm__cleanse(buf, size + 1);
  free(buf);
  if (!rc)
    (*out)->mtime = mtime;
  return rc;
}

/* The current (highest) version of label. */
static const ps_key_t *table_find(const hsm__ps_table_t *t, const char *label) {
  if (!t || !label || t->n == 0)
    return NULL;
  ps_key_t probe = {0}; /* key_cmp reads only the label */
  size_t n = strnlen(label, sizeof probe.label);
  if (n == sizeof probe.label)
    return NULL;
  memcpy(probe.label, label, n + 1);
  const ps_key_t *k = bsearch(&probe, t->keys, t->n, sizeof *t->keys, key_cmp);
  while (k && k + 1 < t->keys + t->n && strcmp(k[1].label, label) == 0)
    k++;
  return k;
}

/* label's key, if its usage is one of the allowed. */
static int key_for(const hsm__ps_table_t *t, const char *label,
                   const hsm_usage_t *allowed, size_t nallowed,
                   const ps_key_t **out) {
  const ps_key_t *k = table_find(t, label);
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  for (size_t i = 0; i < nallowed; i++)
    if (k->usage == allowed[i]) {
      *out = k;
      return 0;
    }
  return HSM_E_KEY_USAGE;
}

/* ------------------------------------------------------------------------ */
/* Encoding requests                                                         */

/* Bounded writer: an overflow is remembered, never written. */
typedef struct ps_w_s {
  char *p;
  size_t cap, len;
  int over;
} ps_w_t;

static void w_put(ps_w_t *w, const char *s, size_t n) {
  if (w->over || n > w->cap - w->len) {
    w->over = 1;
    return;
  }
  memcpy(w->p + w->len, s, n);
  w->len += n;
}

static void w_str(ps_w_t *w, const char *s) {
  w_put(w, s, strlen(s));
}

static void w_hex(ps_w_t *w, const uint8_t *b, size_t n) {
  static const char digits[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    char two[2] = {digits[b[i] >> 4], digits[b[i] & 15]};
    w_put(w, two, 2);
  }
}

/* v in exactly width characters: decimal (or upper-case hex when base is
 * 16), zero-padded on the left. */
static void w_num(ps_w_t *w, unsigned long v, unsigned width, unsigned base) {
  static const char digits[] = "0123456789ABCDEF";
  char tmp[PS_MAX_HEADER_LEN];
  if (width > sizeof tmp) {
    w->over = 1;
    return;
  }
  for (unsigned i = width; i > 0; i--) {
    tmp[i - 1] = digits[v % base];
    v /= base;
  }
  w_put(w, tmp, width);
}

static const char *fmt_code(hsm_pin_format_t f) {
  switch (f) {
  case HSM_PIN_ISO0:
    return "01";
  case HSM_PIN_ISO1:
    return "05";
  case HSM_PIN_ISO3:
    return "47";
  default:
    return NULL; /* ISO 4 is AES: not on a TDES LMK */
  }
}

static int fmt_parse(const char *s, hsm_pin_format_t *f) {
  if (memcmp(s, "01", 2) == 0)
    *f = HSM_PIN_ISO0;
  else if (memcmp(s, "05", 2) == 0)
    *f = HSM_PIN_ISO1;
  else if (memcmp(s, "47", 2) == 0)
    *f = HSM_PIN_ISO3;
  else
    return -1;
  return 0;
}

/* The 12 right-most PAN digits excluding the check digit (hsm.c checked
 * that pan is 12 to 19 digits). */
static int account12(const char *pan, size_t len, char acct[13]) {
  if (len < 13)
    return HSM_E_BAD_PAN;
  memcpy(acct, pan + len - 13, 12);
  acct[12] = '\0';
  return 0;
}

/* What the response to a request must look like, kept with the request. */
typedef struct ps_expect_s {
  char cmd[3];
  hsm_pin_format_t dst_format; /* translations */
  int mac_local;               /* MAC verify done as M6 + comparison here */
  uint8_t mac[8];
  size_t mac_len;
} ps_expect_t;

static int encode_translate(const hsm__ps_table_t *t,
                            const hsm_pin_translate_t *a, ps_w_t *w,
                            ps_expect_t *x) {
  static const hsm_usage_t zpk[] = {HSM_USAGE_ZPK};
  static const hsm_usage_t bdk[] = {HSM_USAGE_BDK};
  static const hsm_usage_t pinkeys[] = {HSM_USAGE_TPK, HSM_USAGE_ZPK};
  const ps_key_t *dst, *src;
  char acct[13];
  int rc = key_for(t, a->dst_label, zpk, 1, &dst);
  if (rc)
    return rc;
  const char *dfmt = fmt_code(a->dst_format);
  if (!dfmt)
    return HSM_E_PIN_FORMAT;
  if (a->src.ksn) {
    if ((rc = key_for(t, a->src.label, bdk, 1, &src)))
      return rc;
    if (a->src.ksn_len != 10)
      return HSM_E_UNSUPPORTED; /* AES DUKPT */
    if (a->src_format != HSM_PIN_ISO0)
      return HSM_E_PIN_FORMAT;
    if ((rc = account12(a->pan, a->pan_len, acct)))
      return rc;
    /* KSN descriptor A05: 10 hex digits of key set id, no sub-key, 5 of
     * device id, then the counter: the whole 20-digit KSN. */
    memcpy(x->cmd, "G0", 3);
    w_str(w, "G0");
    w_str(w, src->crypt);
    w_str(w, dst->crypt);
    w_str(w, "A05");
    w_hex(w, a->src.ksn, 10);
    w_hex(w, a->block, 8);
    w_str(w, "01");
  } else {
    if ((rc = key_for(t, a->src.label, pinkeys, 2, &src)))
      return rc;
    const char *sfmt = fmt_code(a->src_format);
    if (!sfmt)
      return HSM_E_PIN_FORMAT;
    if ((rc = account12(a->pan, a->pan_len, acct)))
      return rc;
    memcpy(x->cmd, src->usage == HSM_USAGE_TPK ? "CA" : "CC", 3);
    w_str(w, x->cmd);
    w_str(w, src->crypt);
    w_str(w, dst->crypt);
    w_str(w, "12");
    w_hex(w, a->block, 8);
    w_str(w, sfmt);
  }
  w_str(w, dfmt);
  w_str(w, acct);
  x->dst_format = a->dst_format;
  return 0;
}

/* payShield takes 12 characters of PIN validation data in which one N
 * stands for the last 5 digits of the account field; the API gives the 16
 * hex digits the PVK enciphers.  Those are expressible when they contain
 * the 5 digits; otherwise the HSM cannot be asked. */
static int validation_data12(const char *vd, const char *acct, char out[13]) {
  if (!vd || strnlen(vd, 17) != 16)
    return HSM_E_BAD_DATA;
  char up[16];
  for (size_t i = 0; i < 16; i++) {
    char c = vd[i];
    if (c >= 'a' && c <= 'f')
      c = (char)(c - 'a' + 'A');
    if (!is_uhex(c))
      return HSM_E_BAD_DATA;
    up[i] = c;
  }
  for (size_t p = 0; p + 5 <= 16; p++)
    if (memcmp(up + p, acct + 7, 5) == 0) {
      memcpy(out, up, p);
      out[p] = 'N';
      memcpy(out + p + 1, up + p + 5, 16 - p - 5);
      out[12] = '\0';
      return 0;
    }
  return HSM_E_UNSUPPORTED;
}

static int encode_verify(const hsm__ps_table_t *t, const hsm_pin_verify_t *a,
                         ps_w_t *w, ps_expect_t *x) {
  static const hsm_usage_t pvk[] = {HSM_USAGE_PVK};
  static const hsm_usage_t bdk[] = {HSM_USAGE_BDK};
  static const hsm_usage_t pinkeys[] = {HSM_USAGE_TPK, HSM_USAGE_ZPK};
  const ps_key_t *kv, *src;
  char acct[13];
  int rc = key_for(t, a->pvk_label, pvk, 1, &kv);
  if (rc)
    return rc;
  if (a->src.ksn) {
    if ((rc = key_for(t, a->src.label, bdk, 1, &src)))
      return rc;
    return HSM_E_UNSUPPORTED; /* DUKPT PIN verification is not wired */
  }
  if ((rc = key_for(t, a->src.label, pinkeys, 2, &src)))
    return rc;
  const char *fmt = fmt_code(a->format);
  if (!fmt)
    return HSM_E_PIN_FORMAT;
  if ((rc = account12(a->pan, a->pan_len, acct)))
    return rc;
  int tpk = src->usage == HSM_USAGE_TPK;
  if (a->method == HSM_PIN_VERIFY_IBM3624) {
    char vd12[13];
    /* all_digits stops at a NUL: a short offset string is not read past. */
    if (!digits_exactly(a->dectab, 16) ||
        !hsm__all_digits(a->offset, a->offset_len))
      return HSM_E_BAD_DATA;
    if ((rc = validation_data12(a->validation_data, acct, vd12)))
      return rc;
    memcpy(x->cmd, tpk ? "DA" : "EA", 3);
    w_str(w, x->cmd);
    w_str(w, src->crypt);
    w_str(w, kv->crypt);
    w_str(w, "12");
    w_hex(w, a->block, 8);
    w_str(w, fmt);
    w_num(w, (unsigned long)a->offset_len, 2, 10);
    w_str(w, acct);
    w_put(w, a->dectab, 16);
    w_str(w, vd12);
    w_put(w, a->offset, a->offset_len);
    for (size_t i = a->offset_len; i < 12; i++)
      w_put(w, "F", 1);
    return 0;
  }
  if (!digits_exactly(a->pvv, 4))
    return PS_VERDICT_FAILED;
  memcpy(x->cmd, tpk ? "DC" : "EC", 3);
  w_str(w, x->cmd);
  w_str(w, src->crypt);
  w_str(w, kv->crypt);
  w_hex(w, a->block, 8);
  w_str(w, fmt);
  w_str(w, acct);
  w_num(w, (unsigned long)a->pvki, 1, 10);
  w_put(w, a->pvv, 4);
  return 0;
}

static int encode_mac(const hsm__ps_table_t *t, const hsm_mac_t *a, int verify,
                      ps_w_t *w, ps_expect_t *x) {
  static const hsm_usage_t macs[] = {HSM_USAGE_TAK, HSM_USAGE_ZAK};
  const ps_key_t *k;
  int rc = key_for(t, a->key_label, macs, 2, &k);
  if (rc)
    return rc;
  if (a->alg != HSM_MAC_RETAIL)
    return HSM_E_UNSUPPORTED; /* AES-CMAC: no AES keys on a TDES LMK */
  int padding = a->padding ? a->padding : 1;
  if (padding != 1 && padding != 2)
    return HSM_E_INVAL;
  if (a->len > PS_MAC_MAX)
    return HSM_E_BAD_DATA;
  /* M8 compares 4 or 8 bytes; other lengths are compared here, on the MAC
   * the HSM generates (a MAC is not secret; the key stays in the HSM). */
  int m8 = verify && (a->mac_len == 4 || a->mac_len == 8);
  memcpy(x->cmd, m8 ? "M8" : "M6", 3);
  w_str(w, x->cmd);
  /* Mode 0 (only block), input binary, MAC size (0: 8H, 1: 16H), ISO 9797-1
   * algorithm 3, padding method, key type 003 TAK / 008 ZAK. */
  w_str(w, "00");
  w_str(w, m8 && a->mac_len == 4 ? "0" : "1");
  w_str(w, "3");
  w_num(w, (unsigned long)padding, 1, 10);
  w_str(w, k->usage == HSM_USAGE_TAK ? "003" : "008");
  w_str(w, k->crypt);
  w_num(w, (unsigned long)a->len, 4, 16);
  if (a->len)
    w_put(w, (const char *)a->data, a->len);
  if (m8) {
    w_hex(w, a->mac, a->mac_len);
  } else if (verify) {
    x->mac_local = 1;
    memcpy(x->mac, a->mac, a->mac_len);
    x->mac_len = a->mac_len;
  }
  return 0;
}

static int encode_cvv(const hsm__ps_table_t *t, const hsm_cvv_t *a, ps_w_t *w,
                      ps_expect_t *x) {
  static const hsm_usage_t cvk[] = {HSM_USAGE_CVK};
  const ps_key_t *k;
  int rc = key_for(t, a->cvk_label, cvk, 1, &k);
  if (rc)
    return rc;
  if (!digits_exactly(a->expiry, 4) || !digits_exactly(a->service, 3))
    return HSM_E_BAD_DATA;
  if (!digits_exactly(a->cvv, 3))
    return PS_VERDICT_FAILED;
  memcpy(x->cmd, "CY", 3);
  w_str(w, "CY");
  w_str(w, k->crypt);
  w_put(w, a->cvv, 3);
  w_put(w, a->pan, a->pan_len);
  w_str(w, ";");
  w_put(w, a->expiry, 4);
  w_put(w, a->service, 3);
  return 0;
}

/* header | command | fields for op into out (no length prefix).  0, a
 * negative HSM_E_* the request completes with, or PS_VERDICT_FAILED. */
static int encode(const hsm__ps_table_t *t, unsigned header_len, uint32_t tag,
                  hsm_op_t op, const void *args, char *out, size_t cap,
                  size_t *outlen, ps_expect_t *x) {
  ps_w_t w = {.p = out, .cap = cap};
  int rc;
  memset(x, 0, sizeof *x);
  *outlen = 0;
  if (header_len == 0 || header_len > PS_MAX_HEADER_LEN)
    return HSM_E_INVAL;
  w_num(&w, tag, header_len, 10);
  switch (op) {
  case HSM_OP_ECHO:
    memcpy(x->cmd, "B2", 3);
    w_str(&w, "B20004PING");
    rc = 0;
    break;
  case HSM_OP_PIN_TRANSLATE:
    rc = encode_translate(t, args, &w, x);
    break;
  case HSM_OP_PIN_VERIFY:
    rc = encode_verify(t, args, &w, x);
    break;
  case HSM_OP_MAC_GENERATE:
    rc = encode_mac(t, args, 0, &w, x);
    break;
  case HSM_OP_MAC_VERIFY:
    rc = encode_mac(t, args, 1, &w, x);
    break;
  case HSM_OP_CVV_VERIFY:
    rc = encode_cvv(t, args, &w, x);
    break;
  default:
    rc = HSM_E_UNSUPPORTED;
  }
  if (rc == 0 && w.over)
    rc = HSM_E_BAD_DATA;
  if (rc == 0)
    *outlen = w.len;
  else
    hsm__cleanse(out, w.len);
  return rc;
}

int hsm__ps_encode(const hsm__ps_table_t *t, unsigned header_len, uint32_t tag,
                   hsm_op_t op, const void *args, char *out, size_t cap,
                   size_t *outlen) {
  ps_expect_t x;
  if (!out || !outlen || (!args && op != HSM_OP_ECHO))
    return HSM_E_INVAL;
  int rc = encode(t, header_len, tag, op, args, out, cap, outlen, &x);
  hsm__cleanse(&x, sizeof x);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Decoding responses                                                        */

/* The one table of payShield error codes; 01 on a verification command
 * and 02 (warning: PVK not single length) on DA/EA are handled first. */
static const struct {
  char code[3];
  int status;
} ps_errors[] = {
    {"00", 0},
    {"10", HSM_E_KEY_PARITY},    /* source key parity */
    {"11", HSM_E_KEY_PARITY},    /* destination key parity */
    {"15", HSM_E_BAD_DATA},      /* invalid input data */
    {"20", HSM_E_BAD_PIN_BLOCK}, /* PIN block does not contain valid values */
    {"23", HSM_E_PIN_FORMAT},    /* invalid PIN block format code */
    {"24", HSM_E_PIN_LENGTH},    /* PIN fewer than 4 or more than 12 digits */
    {"68", HSM_E_UNSUPPORTED},   /* command disabled */
};

static int is_verify_cmd(const char *cmd) {
  static const char *const v[] = {"DA", "EA", "DC", "EC", "M8", "CY"};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
    if (memcmp(cmd, v[i], 2) == 0)
      return 1;
  return 0;
}

int hsm__ps_status(const char *cmd, const char *code, hsm_verify_t *verify) {
  *verify = HSM_VERIFY_OK;
  if (!cmd || !code || !hsm__all_digits(code, 2))
    return HSM_E_BACKEND;
  if (memcmp(code, "01", 2) == 0 && is_verify_cmd(cmd)) {
    *verify = HSM_VERIFY_FAILED;
    return 0;
  }
  if (memcmp(code, "02", 2) == 0 &&
      (memcmp(cmd, "DA", 2) == 0 || memcmp(cmd, "EA", 2) == 0))
    return 0;
  for (size_t i = 0; i < sizeof ps_errors / sizeof ps_errors[0]; i++)
    if (memcmp(code, ps_errors[i].code, 2) == 0)
      return ps_errors[i].status;
  return HSM_E_BACKEND;
}

/* The body of a response (response code onwards) to a request described
 * by x: the request's status, with req->result and req->verify filled. */
static int decode_body(const ps_expect_t *x, const char *b, size_t n,
                       hsm_req_t *req, unsigned *pin_len) {
  hsm_verify_t verdict;
  if (n < 4 || b[0] != x->cmd[0] || b[1] != x->cmd[1] + 1)
    return HSM_E_BACKEND;
  int status = hsm__ps_status(x->cmd, b + 2, &verdict);
  if (status)
    return status;
  req->verify = verdict;
  const char *f = b + 4;
  size_t fl = n - 4;
  char c0 = x->cmd[0], c1 = x->cmd[1];
  if (verdict == HSM_VERIFY_FAILED)
    return fl == 0 ? 0 : HSM_E_BACKEND;
  if (c0 == 'B' && c1 == '2')
    return fl == 4 && memcmp(f, "PING", 4) == 0 ? 0 : HSM_E_BACKEND;
  if ((c0 == 'C' && (c1 == 'A' || c1 == 'C')) || (c0 == 'G' && c1 == '0')) {
    hsm_pin_format_t fmt;
    uint8_t block[8];
    if (fl != 20 || !hsm__all_digits(f, 2) || hsm__unhex(f + 2, 16, block, 1) ||
        fmt_parse(f + 18, &fmt) || fmt != x->dst_format)
      return HSM_E_BACKEND;
    unsigned len = (unsigned)(f[0] - '0') * 10 + (unsigned)(f[1] - '0');
    if (len < 4 || len > 12)
      return HSM_E_BACKEND;
    memcpy(req->result.pin.block, block, 8);
    req->result.pin.len = 8;
    req->result.pin.format = fmt;
    if (pin_len)
      *pin_len = len;
    hsm__cleanse(block, sizeof block);
    return 0;
  }
  if (c0 == 'M' && c1 == '6') {
    uint8_t mac[8];
    if (fl != 16 || hsm__unhex(f, 16, mac, 1))
      return HSM_E_BACKEND;
    if (x->mac_local) {
      req->verify = CRYPTO_memcmp(mac, x->mac, x->mac_len) == 0
                        ? HSM_VERIFY_OK
                        : HSM_VERIFY_FAILED;
    } else {
      memcpy(req->result.mac.mac, mac, 8);
      req->result.mac.len = 8;
    }
    return 0;
  }
  /* DA EA DC EC M8 CY: the error code is the answer. */
  return fl == 0 ? 0 : HSM_E_BACKEND;
}

/* The tag in a header of header_len digits; UINT32_MAX (matches nothing)
 * for a well-formed header no request of ours could carry.  -1 if the
 * header is not digits at all. */
static int parse_tag(const char *p, unsigned header_len, uint32_t *tag) {
  if (!hsm__all_digits(p, header_len))
    return -1;
  uint32_t v = 0;
  unsigned lead = header_len > 9 ? header_len - 9 : 0;
  for (unsigned i = 0; i < lead; i++)
    if (p[i] != '0') {
      *tag = UINT32_MAX;
      return 0;
    }
  for (unsigned i = lead; i < header_len; i++)
    v = v * 10 + (uint32_t)(p[i] - '0');
  *tag = v;
  return 0;
}

int hsm__ps_decode(const char *cmd, hsm_pin_format_t dst_format,
                   const char *msg, size_t len, unsigned header_len,
                   uint32_t *tag, hsm_req_t *req, unsigned *pin_len) {
  ps_expect_t x;
  if (!cmd || strlen(cmd) != 2 || !msg || !tag || !req || header_len == 0 ||
      header_len > PS_MAX_HEADER_LEN)
    return HSM_E_INVAL;
  if (len < header_len || parse_tag(msg, header_len, tag))
    return HSM_E_BACKEND;
  memset(&x, 0, sizeof x);
  memcpy(x.cmd, cmd, 3);
  x.dst_format = dst_format;
  req->verify = HSM_VERIFY_OK;
  return decode_body(&x, msg + header_len, len - header_len, req, pin_len);
}

/* ------------------------------------------------------------------------ */
/* Connections                                                               */

enum { PS_DOWN, PS_CONNECTING, PS_UP, PS_CLOSING };

typedef struct ps_conn_s ps_conn_t;
typedef struct ps_s ps_t;

/* A synchronous command (key management, on the caller's stack): the
 * fields after the error code land in resp. */
typedef struct ps_sync_s {
  char cmd[3];
  char *resp;
  size_t cap, len;
  int status;
  int done;
  int timer_closed;
  struct ps_node_s *node; /* while written or queued */
  struct ps_s *ps;
  uv_timer_t timer;
} ps_sync_t;

typedef struct ps_node_s {
  hsm_req_t *req;  /* NULL once cancelled */
  ps_sync_t *sync; /* a synchronous command instead of a request */
  int probe;       /* the NC a connection sends first */
  ps_conn_t *conn;
  uint32_t tag;
  ps_expect_t expect;
  struct ps_node_s *tnext;       /* the connection's tag bucket */
  struct ps_node_s *rnext;       /* the request table's bucket */
  struct ps_node_s *prev, *next; /* the connection's node list */
} ps_node_t;

typedef struct ps_buf_s {
  char *p;
  size_t len, cap;
} ps_buf_t;

struct ps_conn_s {
  ps_t *ps;
  int state;
  uv_tcp_t tcp;
  int tcp_open;
  uv_connect_t connect;
  uv_timer_t timer; /* backoff in DOWN; deferred reset in UP */
  uv_write_t write;
  int writing;
  ps_buf_t out;  /* frames not yet handed to libuv */
  ps_buf_t wbuf; /* the frames of the write in progress */
  char *in;      /* PS_FRAME_MAX + 2 bytes */
  size_t inlen;
  uint32_t next_tag;
  size_t live, orphans;
  unsigned backoff_ms;
  ps_node_t *tags[PS_BUCKETS];
  ps_node_t *head;
};

struct ps_s {
  uv_loop_t *loop;
  hsm__ps_table_t *table;
  struct sockaddr_storage addr;
  unsigned header_len;
  uint32_t tag_mod;
  size_t nconn;
  ps_conn_t *conns;
  ps_node_t *reqs[PS_BUCKETS];
  char *scratch; /* one encoded frame */
  unsigned handles;
  int closing;
  size_t rr;
  char *table_path;
  /* NC: the last LMK check value and firmware seen; lmk_bad while the HSM
   * answered with another LMK than the key table's !lmk-check. */
  char lmk_kcv[17];
  char firmware[10];
  int lmk_bad;
  /* counters */
  uint64_t sent, answered, late, unmatched, malformed, reconnects, drops;
  uint64_t lmk_checked, lmk_mismatch;
};

#define PS(h) ((ps_t *)(h)->state)

static size_t req_bucket(const hsm_req_t *req) {
  return (size_t)(((uintptr_t)req >> 4) % PS_BUCKETS);
}

static ps_node_t *node_by_tag(ps_conn_t *c, uint32_t tag) {
  ps_node_t *n = c->tags[tag % PS_BUCKETS];
  while (n && n->tag != tag)
    n = n->tnext;
  return n;
}

static ps_node_t *node_by_req(ps_t *ps, const hsm_req_t *req) {
  ps_node_t *n = ps->reqs[req_bucket(req)];
  while (n && n->req != req)
    n = n->rnext;
  return n;
}

static void unlink_req(ps_t *ps, ps_node_t *node) {
  ps_node_t **pp = &ps->reqs[req_bucket(node->req)];
  while (*pp && *pp != node)
    pp = &(*pp)->rnext;
  if (*pp)
    *pp = node->rnext;
  node->rnext = NULL;
}

/* Takes node off its connection (tag bucket and list). */
static void unlink_conn(ps_node_t *node) {
  ps_conn_t *c = node->conn;
  ps_node_t **pp = &c->tags[node->tag % PS_BUCKETS];
  while (*pp && *pp != node)
    pp = &(*pp)->tnext;
  if (*pp)
    *pp = node->tnext;
  if (node->prev)
    node->prev->next = node->next;
  else
    c->head = node->next;
  if (node->next)
    node->next->prev = node->prev;
  node->prev = node->next = node->tnext = NULL;
}

static void node_free(ps_node_t *node) {
  hsm__cleanse(node, sizeof *node);
  free(node);
}

static void buf_wipe_free(ps_buf_t *b) {
  if (b->p) {
    hsm__cleanse(b->p, b->cap);
    free(b->p);
  }
  memset(b, 0, sizeof *b);
}

static int buf_reserve(ps_buf_t *b, size_t more) {
  if (more <= b->cap - b->len)
    return 0;
  size_t ncap = b->cap ? b->cap : 4096;
  while (ncap - b->len < more) {
    if (ncap > SIZE_MAX / 2)
      return HSM_E_NOMEM;
    ncap *= 2;
  }
  /* Not realloc: the old block held PIN blocks and key cryptograms and
   * is wiped before it goes back to the allocator. */
  char *np = malloc(ncap);
  if (!np)
    return HSM_E_NOMEM;
  if (b->len)
    memcpy(np, b->p, b->len);
  if (b->p) {
    hsm__cleanse(b->p, b->cap);
    free(b->p);
  }
  b->p = np;
  b->cap = ncap;
  return 0;
}

static void ps_maybe_free(ps_t *ps) {
  if (!ps->closing || ps->handles)
    return;
  for (size_t i = 0; i < ps->nconn; i++) {
    ps_conn_t *c = &ps->conns[i];
    buf_wipe_free(&c->out);
    buf_wipe_free(&c->wbuf);
    if (c->in) {
      hsm__cleanse(c->in, PS_FRAME_MAX + 2);
      free(c->in);
    }
  }
  free(ps->conns);
  if (ps->scratch) {
    hsm__cleanse(ps->scratch, PS_FRAME_MAX + 2);
    free(ps->scratch);
  }
  hsm__ps_table_free(ps->table);
  free(ps->table_path);
  free(ps);
}

static void on_handle_closed(uv_handle_t *hd) {
  ps_conn_t *c = hd->data;
  ps_t *ps = c->ps;
  ps->handles--;
  if (hd == (uv_handle_t *)&c->tcp)
    c->tcp_open = 0;
  ps_maybe_free(ps);
}

static void conn_connect(ps_conn_t *c);
static void conn_drop(ps_conn_t *c);

static void on_timer(uv_timer_t *t) {
  ps_conn_t *c = t->data;
  if (c->ps->closing)
    return;
  if (c->state == PS_DOWN) {
    c->ps->reconnects++;
    conn_connect(c);
  } else if (c->state == PS_UP || c->state == PS_CONNECTING) {
    conn_drop(c); /* deferred reset: too many unanswered cancellations */
  }
}

static void on_tcp_closed(uv_handle_t *hd) {
  ps_conn_t *c = hd->data;
  ps_t *ps = c->ps;
  ps->handles--;
  c->tcp_open = 0;
  if (ps->closing) {
    ps_maybe_free(ps);
    return;
  }
  c->state = PS_DOWN;
  uv_timer_start(&c->timer, on_timer, c->backoff_ms, 0);
  c->backoff_ms = c->backoff_ms * 2 > PS_BACKOFF_MAX_MS ? PS_BACKOFF_MAX_MS
                                                        : c->backoff_ms * 2;
}

/* Leaves UP or CONNECTING: closes the socket and fails every request on
 * the connection.  A completion callback may submit, or close the hsm: the
 * nodes are detached first, and a node cancelled meanwhile (hsm_close) is
 * only freed. */
static void conn_drop(ps_conn_t *c) {
  ps_t *ps = c->ps;
  if (c->state != PS_UP && c->state != PS_CONNECTING)
    return;
  c->state = PS_CLOSING;
  ps->drops++;
  uv_timer_stop(&c->timer);
  uv_read_stop((uv_stream_t *)&c->tcp);
  uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
  hsm__cleanse(c->in, c->inlen);
  c->inlen = 0;
  if (c->out.p)
    hsm__cleanse(c->out.p, c->out.len);
  c->out.len = 0;
  ps_node_t *list = c->head;
  c->head = NULL;
  memset(c->tags, 0, sizeof c->tags);
  c->live = c->orphans = 0;
  while (list) {
    ps_node_t *node = list;
    list = node->next;
    hsm_req_t *req = node->req;
    if (req)
      unlink_req(ps, node);
    if (node->sync) {
      node->sync->status = HSM_E_UNAVAILABLE;
      node->sync->node = NULL;
      node->sync->done = 1;
    }
    node_free(node);
    if (req && !ps->closing)
      hsm__complete(req, HSM_E_UNAVAILABLE);
  }
}

static void conn_flush(ps_conn_t *c);

static void on_write(uv_write_t *wr, int status) {
  ps_conn_t *c = wr->data;
  c->writing = 0;
  if (c->wbuf.p)
    hsm__cleanse(c->wbuf.p, c->wbuf.len);
  c->wbuf.len = 0;
  if (c->ps->closing)
    return;
  if (status < 0)
    conn_drop(c);
  else
    conn_flush(c); /* what accumulated during this write */
}

/* Hands the queued frames to libuv, unless a write is in progress (its
 * callback sends what accumulated meanwhile: one write per batch). */
static void conn_flush(ps_conn_t *c) {
  if (c->state != PS_UP || c->writing || c->out.len == 0)
    return;
  ps_buf_t tmp = c->wbuf;
  c->wbuf = c->out;
  c->out = tmp;
  uv_buf_t b = uv_buf_init(c->wbuf.p, (unsigned)c->wbuf.len);
  c->writing = 1;
  c->write.data = c;
  if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_write) < 0) {
    c->writing = 0;
    conn_drop(c);
  }
}

static void on_alloc(uv_handle_t *hd, size_t suggested, uv_buf_t *buf) {
  ps_conn_t *c = hd->data;
  (void)suggested;
  *buf = uv_buf_init(c->in + c->inlen, (unsigned)(PS_FRAME_MAX + 2 - c->inlen));
}

/* The answer to a connection's NC (body onwards): records the LMK check
 * value and firmware; -1 (drop the connection) when the key table names
 * another LMK than the HSM answers with, or the answer cannot show it. */
static int probe_answer(ps_t *ps, const char *b, size_t n) {
  ps->lmk_checked++;
  int ok = n == 4 + 16 + 9 && memcmp(b, "ND00", 4) == 0 && all_uhex(b + 4, 16);
  for (size_t i = 20; ok && i < n; i++)
    ok = b[i] > 0x20 && b[i] < 0x7F;
  if (ok) {
    memcpy(ps->lmk_kcv, b + 4, 16);
    ps->lmk_kcv[16] = '\0';
    memcpy(ps->firmware, b + 20, 9);
    ps->firmware[9] = '\0';
  }
  if (!ps->table->lmk_check[0] ||
      (ok && memcmp(ps->lmk_kcv, ps->table->lmk_check, 16) == 0)) {
    ps->lmk_bad = 0;
    return 0;
  }
  ps->lmk_bad = 1;
  ps->lmk_mismatch++;
  return -1;
}

/* The fields after a synchronous command's error code into sy->resp. */
static int sync_decode(ps_sync_t *sy, const char *b, size_t n) {
  hsm_verify_t v;
  if (n < 4 || b[0] != sy->cmd[0] || b[1] != sy->cmd[1] + 1)
    return HSM_E_BACKEND;
  /* A6 01: the imported key's parity is wrong (advice only on the HSM,
   * which would store it); refused here. */
  if (memcmp(sy->cmd, "A6", 2) == 0 && memcmp(b + 2, "01", 2) == 0)
    return HSM_E_KEY_PARITY;
  int status = hsm__ps_status(sy->cmd, b + 2, &v);
  if (status)
    return status;
  if (n - 4 > sy->cap)
    return HSM_E_BACKEND;
  memcpy(sy->resp, b + 4, n - 4);
  sy->len = n - 4;
  return 0;
}

/* One frame (header onwards).  0, or -1 for a framing violation. */
static int handle_frame(ps_conn_t *c, const char *p, size_t n) {
  ps_t *ps = c->ps;
  uint32_t tag;
  if (n < ps->header_len || parse_tag(p, ps->header_len, &tag)) {
    ps->malformed++;
    return -1;
  }
  ps_node_t *node = node_by_tag(c, tag);
  if (!node) {
    ps->unmatched++;
    return 0;
  }
  unlink_conn(node);
  if (node->probe) {
    c->live--;
    node_free(node);
    return probe_answer(ps, p + ps->header_len, n - ps->header_len);
  }
  if (node->sync) {
    ps_sync_t *sy = node->sync;
    c->live--;
    sy->status = sync_decode(sy, p + ps->header_len, n - ps->header_len);
    if (sy->status == HSM_E_BACKEND)
      ps->malformed++;
    sy->node = NULL;
    sy->done = 1;
    node_free(node);
    ps->answered++;
    c->backoff_ms = PS_BACKOFF_MIN_MS;
    return 0;
  }
  if (!node->req) {
    ps->late++;
    c->orphans--;
    node_free(node);
    return 0;
  }
  hsm_req_t *req = node->req;
  unlink_req(ps, node);
  c->live--;
  int status = decode_body(&node->expect, p + ps->header_len,
                           n - ps->header_len, req, NULL);
  if (status == HSM_E_BACKEND)
    ps->malformed++;
  if (status)
    memset(&req->result, 0, sizeof req->result);
  node_free(node);
  ps->answered++;
  c->backoff_ms = PS_BACKOFF_MIN_MS;
  hsm__complete(req, status);
  return 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ps_conn_t *c = s->data;
  ps_t *ps = c->ps;
  (void)buf;
  if (ps->closing || c->state != PS_UP)
    return;
  if (nread < 0) {
    conn_drop(c);
    return;
  }
  c->inlen += (size_t)nread;
  size_t off = 0;
  while (c->inlen - off >= 2) {
    const unsigned char *u = (const unsigned char *)c->in + off;
    size_t n = (size_t)u[0] << 8 | u[1];
    if (n == 0) {
      ps->malformed++;
      conn_drop(c);
      return;
    }
    if (c->inlen - off - 2 < n)
      break;
    if (handle_frame(c, c->in + off + 2, n) != 0) {
      conn_drop(c);
      return;
    }
    off += 2 + n;
    /* A callback may have closed the hsm, or this connection. */
    if (ps->closing || c->state != PS_UP)
      return;
  }
  if (off) {
    memmove(c->in, c->in + off, c->inlen - off);
    hsm__cleanse(c->in + c->inlen - off, off);
    c->inlen -= off;
  }
}

static int alloc_tag(ps_t *ps, ps_conn_t *c, uint32_t *tag);

/* Puts an NC in front of what waits on a connection that just came up:
 * the first answer on it says which LMK the HSM holds. */
static void conn_probe(ps_conn_t *c) {
  ps_t *ps = c->ps;
  uint32_t tag;
  size_t len = ps->header_len + 2;
  if (alloc_tag(ps, c, &tag) != 0)
    return;
  ps_node_t *node = calloc(1, sizeof *node);
  if (!node || buf_reserve(&c->out, len + 2) != 0) {
    free(node);
    return;
  }
  memmove(c->out.p + len + 2, c->out.p, c->out.len);
  char *f = c->out.p;
  f[0] = (char)(len >> 8);
  f[1] = (char)(len & 0xFF);
  ps_w_t hw = {.p = f + 2, .cap = ps->header_len};
  w_num(&hw, tag, ps->header_len, 10);
  memcpy(f + 2 + ps->header_len, "NC", 2);
  c->out.len += len + 2;
  node->probe = 1;
  node->conn = c;
  node->tag = tag;
  memcpy(node->expect.cmd, "NC", 3);
  node->tnext = c->tags[tag % PS_BUCKETS];
  c->tags[tag % PS_BUCKETS] = node;
  node->next = c->head;
  if (c->head)
    c->head->prev = node;
  c->head = node;
  c->live++;
}

static void on_connect(uv_connect_t *cr, int status) {
  ps_conn_t *c = cr->data;
  if (c->ps->closing || c->state != PS_CONNECTING)
    return;
  if (status < 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
    conn_drop(c);
    return;
  }
  c->state = PS_UP;
  conn_probe(c);
  conn_flush(c);
}

static void conn_connect(ps_conn_t *c) {
  ps_t *ps = c->ps;
  if (uv_tcp_init(ps->loop, &c->tcp) < 0) {
    uv_timer_start(&c->timer, on_timer, c->backoff_ms, 0);
    return;
  }
  ps->handles++;
  c->tcp_open = 1;
  c->tcp.data = c;
  c->connect.data = c;
  c->inlen = 0;
  c->state = PS_CONNECTING;
  uv_tcp_nodelay(&c->tcp, 1);
  if (uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&ps->addr,
                     on_connect) < 0)
    conn_drop(c);
}

/* ------------------------------------------------------------------------ */
/* Backend                                                                   */

static int ps_open(hsm_t *h, const hsm_config_t *cfg, char *err,
                   size_t errcap) {
  unsigned hl = cfg->payshield_header_len ? cfg->payshield_header_len
                                          : PS_DEFAULT_HEADER_LEN;
  unsigned nconn = cfg->payshield_connections ? cfg->payshield_connections : 1;
  uint16_t port = cfg->payshield_port ? cfg->payshield_port : PS_DEFAULT_PORT;
  if (!cfg->payshield_host || !cfg->payshield_key_table) {
    if (err && errcap)
      snprintf(err, errcap,
               "payshield: payshield_host and "
               "payshield_key_table must both be set");
    return HSM_E_INVAL;
  }
  if (hl > PS_MAX_HEADER_LEN || nconn > PS_MAX_CONNECTIONS) {
    if (err && errcap)
      snprintf(err, errcap,
               "payshield: header length must be 1 to %d and connections 1 "
               "to %d",
               PS_MAX_HEADER_LEN, PS_MAX_CONNECTIONS);
    return HSM_E_INVAL;
  }
  ps_t *ps = calloc(1, sizeof *ps);
  if (!ps)
    return HSM_E_NOMEM;
  struct sockaddr_in *a4 = (struct sockaddr_in *)&ps->addr;
  struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ps->addr;
  if (uv_ip4_addr(cfg->payshield_host, port, a4) != 0 &&
      uv_ip6_addr(cfg->payshield_host, port, a6) != 0) {
    if (err && errcap)
      snprintf(err, errcap, "payshield: \"%s\" is not a numeric address",
               cfg->payshield_host);
    free(ps);
    return HSM_E_INVAL;
  }
  char why[160] = "";
  int rc =
      hsm__ps_table_load(cfg->payshield_key_table, &ps->table, why, sizeof why);
  if (rc) {
    if (err && errcap)
      snprintf(err, errcap, "payshield: key table \"%s\": %s",
               cfg->payshield_key_table, why);
    free(ps);
    return rc;
  }
  ps->table_path = strdup(cfg->payshield_key_table);
  if (!ps->table_path) {
    hsm__ps_table_free(ps->table);
    free(ps);
    return HSM_E_NOMEM;
  }
  ps->loop = h->loop;
  ps->header_len = hl;
  ps->tag_mod = 1;
  for (unsigned i = 0; i < hl && i < 9; i++)
    ps->tag_mod *= 10;
  ps->nconn = nconn;
  ps->conns = calloc(nconn, sizeof *ps->conns);
  ps->scratch = malloc(PS_FRAME_MAX + 2);
  int nomem = !ps->conns || !ps->scratch;
  for (size_t i = 0; !nomem && i < nconn; i++)
    nomem = !(ps->conns[i].in = malloc(PS_FRAME_MAX + 2));
  if (nomem) {
    for (size_t i = 0; ps->conns && i < nconn; i++)
      free(ps->conns[i].in);
    free(ps->conns);
    free(ps->scratch);
    hsm__ps_table_free(ps->table);
    free(ps->table_path);
    free(ps);
    return HSM_E_NOMEM;
  }
  h->state = ps;
  for (size_t i = 0; i < nconn; i++) {
    ps_conn_t *c = &ps->conns[i];
    c->ps = ps;
    c->state = PS_DOWN;
    c->backoff_ms = PS_BACKOFF_MIN_MS;
    c->next_tag = 1;
    uv_timer_init(ps->loop, &c->timer);
    c->timer.data = c;
    ps->handles++;
  }
  /* Connect in the background: requests submitted before a connection is
   * up wait on it; an HSM that is down fails them, not hsm_open. */
  for (size_t i = 0; i < nconn; i++)
    conn_connect(&ps->conns[i]);
  return 0;
}

static void ps_close(hsm_t *h) {
  ps_t *ps = PS(h);
  h->state = NULL;
  ps->closing = 1;
  for (size_t i = 0; i < ps->nconn; i++) {
    ps_conn_t *c = &ps->conns[i];
    ps_node_t *node = c->head;
    while (node) {
      ps_node_t *next = node->next;
      if (node->sync) {
        node->sync->status = HSM_E_UNAVAILABLE;
        node->sync->node = NULL;
        node->sync->done = 1;
      }
      node_free(node); /* hsm_close cancelled every live request */
      node = next;
    }
    c->head = NULL;
    memset(c->tags, 0, sizeof c->tags);
    c->state = PS_CLOSING;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (c->tcp_open && !uv_is_closing((uv_handle_t *)&c->tcp)) {
      uv_read_stop((uv_stream_t *)&c->tcp);
      uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
    }
  }
  memset(ps->reqs, 0, sizeof ps->reqs);
}

/* The connection a new request goes on: UP with the fewest in flight
 * (ties in turn), else CONNECTING; NULL if every connection is down. */
static ps_conn_t *pick_conn(ps_t *ps) {
  ps_conn_t *best = NULL;
  int best_up = 0;
  for (size_t k = 0; k < ps->nconn; k++) {
    ps_conn_t *c = &ps->conns[(ps->rr + k) % ps->nconn];
    int up = c->state == PS_UP;
    if (!up && c->state != PS_CONNECTING)
      continue;
    if (!best || (up && !best_up) || (up == best_up && c->live < best->live)) {
      best = c;
      best_up = up;
    }
  }
  ps->rr++;
  return best;
}

/* A free tag on c; -1 if every tag is taken. */
static int alloc_tag(ps_t *ps, ps_conn_t *c, uint32_t *tag) {
  size_t tries = c->live + c->orphans + 1;
  for (size_t i = 0; i < tries && i < ps->tag_mod; i++) {
    uint32_t t = c->next_tag % ps->tag_mod;
    c->next_tag = (t + 1) % ps->tag_mod;
    if (!node_by_tag(c, t)) {
      *tag = t;
      return 0;
    }
  }
  return -1;
}

static int ps_submit(hsm_t *h, hsm_req_t *req, const void *args) {
  ps_t *ps = PS(h);
  ps_expect_t x;
  size_t len = 0;
  if (req->op == HSM_OP_DATA_ENCRYPT || req->op == HSM_OP_DATA_DECRYPT ||
      req->op == HSM_OP_HMAC)
    return HSM_E_UNSUPPORTED; /* pair with soft or pkcs11 for data */
  if (ps->lmk_bad) {
    /* The HSM holds another LMK than the key table was made under. */
    hsm__complete(req, HSM_E_BACKEND);
    return 0;
  }
  /* Encode first with tag 0: key and argument errors are reported whether
   * or not the HSM is reachable. */
  char *frame = ps->scratch + 2;
  int rc = encode(ps->table, ps->header_len, 0, req->op, args, frame,
                  PS_FRAME_MAX, &len, &x);
  if (rc == PS_VERDICT_FAILED) {
    req->verify = HSM_VERIFY_FAILED;
    hsm__complete(req, 0);
    return 0;
  }
  if (rc) {
    hsm__complete(req, rc);
    return 0;
  }
  ps_conn_t *c = pick_conn(ps);
  uint32_t tag = 0;
  if (!c || alloc_tag(ps, c, &tag) != 0) {
    hsm__cleanse(frame, len);
    hsm__cleanse(&x, sizeof x);
    hsm__complete(req, HSM_E_UNAVAILABLE);
    return 0;
  }
  ps_w_t hw = {.p = frame, .cap = ps->header_len};
  w_num(&hw, tag, ps->header_len, 10);
  ps->scratch[0] = (char)(len >> 8);
  ps->scratch[1] = (char)(len & 0xFF);
  ps_node_t *node = calloc(1, sizeof *node);
  if (!node || buf_reserve(&c->out, len + 2) != 0) {
    free(node);
    hsm__cleanse(ps->scratch, len + 2);
    hsm__cleanse(&x, sizeof x);
    return HSM_E_NOMEM;
  }
  memcpy(c->out.p + c->out.len, ps->scratch, len + 2);
  c->out.len += len + 2;
  hsm__cleanse(ps->scratch, len + 2);
  node->req = req;
  node->conn = c;
  node->tag = tag;
  node->expect = x;
  hsm__cleanse(&x, sizeof x);
  node->tnext = c->tags[tag % PS_BUCKETS];
  c->tags[tag % PS_BUCKETS] = node;
  node->next = c->head;
  if (c->head)
    c->head->prev = node;
  c->head = node;
  node->rnext = ps->reqs[req_bucket(req)];
  ps->reqs[req_bucket(req)] = node;
  c->live++;
  ps->sent++;
  conn_flush(c); /* on a write error this completes req: allowed inline */
  return 0;
}

static void ps_cancel(hsm_t *h, hsm_req_t *req) {
  ps_t *ps = PS(h);
  ps_node_t *node = node_by_req(ps, req);
  if (!node)
    return;
  unlink_req(ps, node);
  node->req = NULL;
  ps_conn_t *c = node->conn;
  c->live--;
  c->orphans++;
  /* Not conn_drop here: it would complete other requests while hsm.c walks
   * its list (invariant 3).  The timer resets the connection next turn. */
  if (c->orphans > PS_MAX_ORPHANS && !ps->closing && c->state == PS_UP)
    uv_timer_start(&c->timer, on_timer, 0, 0);
}

/* ------------------------------------------------------------------------ */
/* Key management: the key table, read-only                                  */

static void info_from(const ps_t *ps, const ps_key_t *k, hsm_key_info_t *info) {
  memset(info, 0, sizeof *info);
  memcpy(info->label, k->label, sizeof info->label);
  info->usage = k->usage;
  info->alg = HSM_ALG_TDES;
  info->length = k->len;
  info->version = k->version;
  memcpy(info->kcv, k->kcv, sizeof info->kcv);
  info->created = ps->table->mtime;
  info->not_after = k->not_after;
}

static int ps_key_list(hsm_t *h, hsm_key_list_cb cb, void *ctx) {
  ps_t *ps = PS(h);
  for (size_t i = 0; i < ps->table->n; i++) {
    hsm_key_info_t info;
    info_from(ps, &ps->table->keys[i], &info);
    cb(ctx, &info);
  }
  return 0;
}

static int ps_key_info(hsm_t *h, const char *label, hsm_key_info_t *out) {
  ps_t *ps = PS(h);
  const ps_key_t *k = table_find(ps->table, label);
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  info_from(ps, k, out);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Key exchange: A6 and A8, synchronously                                    */

static void on_sync_timeout(uv_timer_t *t) {
  ps_sync_t *sy = t->data;
  if (sy->done)
    return;
  ps_node_t *node = sy->node;
  if (node) {
    /* An orphan now: its answer, if it comes, is dropped as late. */
    node->sync = NULL;
    node->conn->live--;
    node->conn->orphans++;
  }
  sy->node = NULL;
  sy->status = HSM_E_TIMEOUT;
  sy->done = 1;
}

static void on_sync_timer_closed(uv_handle_t *hd) {
  ps_sync_t *sy = hd->data;
  ps_t *ps = sy->ps;
  sy->timer_closed = 1;
  ps->handles--;
  ps_maybe_free(ps);
}

/* Sends body (command code onwards) and runs the hsm's loop until the
 * answer, a drop or the timeout: the fields after the error code into
 * resp.  Key management is synchronous (hsm.h): never called from a
 * callback on that loop. */
static int ps_command(hsm_t *h, const char *cmd, const char *body, size_t blen,
                      char *resp, size_t cap, size_t *rlen) {
  ps_t *ps = PS(h);
  *rlen = 0;
  if (ps->lmk_bad)
    return HSM_E_BACKEND;
  size_t len = ps->header_len + blen;
  if (len > PS_FRAME_MAX)
    return HSM_E_INVAL;
  ps_conn_t *c = pick_conn(ps);
  uint32_t tag = 0;
  if (!c || alloc_tag(ps, c, &tag) != 0)
    return HSM_E_UNAVAILABLE;
  ps_node_t *node = calloc(1, sizeof *node);
  if (!node || buf_reserve(&c->out, len + 2) != 0) {
    free(node);
    return HSM_E_NOMEM;
  }
  char *f = c->out.p + c->out.len;
  f[0] = (char)(len >> 8);
  f[1] = (char)(len & 0xFF);
  ps_w_t hw = {.p = f + 2, .cap = ps->header_len};
  w_num(&hw, tag, ps->header_len, 10);
  memcpy(f + 2 + ps->header_len, body, blen);
  c->out.len += len + 2;
  ps_sync_t sy;
  memset(&sy, 0, sizeof sy);
  memcpy(sy.cmd, cmd, 2);
  sy.resp = resp;
  sy.cap = cap;
  sy.ps = ps;
  sy.node = node;
  node->sync = &sy;
  node->conn = c;
  node->tag = tag;
  memcpy(node->expect.cmd, cmd, 2);
  node->tnext = c->tags[tag % PS_BUCKETS];
  c->tags[tag % PS_BUCKETS] = node;
  node->next = c->head;
  if (c->head)
    c->head->prev = node;
  c->head = node;
  c->live++;
  ps->sent++;
  uv_loop_t *loop = ps->loop;
  uv_timer_init(loop, &sy.timer);
  sy.timer.data = &sy;
  ps->handles++;
  uv_timer_start(&sy.timer, on_sync_timeout, h->timeout_ms, 0);
  conn_flush(c); /* a write error drops the connection: sy.done */
  while (!sy.done)
    uv_run(loop, UV_RUN_ONCE);
  uv_timer_stop(&sy.timer);
  uv_close((uv_handle_t *)&sy.timer, on_sync_timer_closed);
  while (!sy.timer_closed)
    uv_run(loop, UV_RUN_ONCE);
  *rlen = sy.len;
  return sy.status;
}

/* payShield key type codes (variant LMK) for the usages that travel under
 * a ZMK; 003 and 008 are in the reference's M6 row, 001 and 002 come from
 * the key type table of the Host Command Reference (see
 * docs/hsm-payshield.md). */
static const char *key_type_code(hsm_usage_t u) {
  switch (u) {
  case HSM_USAGE_ZPK:
    return "001";
  case HSM_USAGE_TPK:
    return "002";
  case HSM_USAGE_TAK:
    return "003";
  case HSM_USAGE_ZAK:
    return "008";
  default:
    return NULL;
  }
}

/* The key-encrypting key: a ZMK.  A TMK cannot be named in A6/A8's ZMK
 * field (on the HSM it is under another LMK pair). */
static int kek_for(const hsm__ps_table_t *t, const char *label,
                   const ps_key_t **out) {
  const ps_key_t *k = table_find(t, label);
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  if (k->usage == HSM_USAGE_TMK)
    return HSM_E_UNSUPPORTED;
  if (k->usage != HSM_USAGE_ZMK)
    return HSM_E_KEY_USAGE;
  *out = k;
  return 0;
}

/* The key table file as it is now (private, at most 1 MiB). */
static int table_read(const char *path, char **out, size_t *outlen) {
  return table_slurp(path, out, outlen, NULL, NULL, 0);
}

/* Writes len bytes to path through a temporary file in the same
 * directory (mode 0600, fsync, rename, fsync of the directory). */
static int write_atomic(const char *path, const char *text, size_t len) {
  size_t pl = strlen(path);
  char *tmp = malloc(pl + 8);
  if (!tmp)
    return HSM_E_NOMEM;
  memcpy(tmp, path, pl);
  memcpy(tmp + pl, ".XXXXXX", 8);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    free(tmp);
    return HSM_E_KEYSTORE;
  }
  int rc = fchmod(fd, 0600) == 0 ? 0 : HSM_E_KEYSTORE;
  size_t off = 0;
  while (!rc && off < len) {
    ssize_t w = write(fd, text + off, len - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      rc = HSM_E_KEYSTORE;
    else
      off += (size_t)w;
  }
  if (!rc && fsync(fd) != 0)
    rc = HSM_E_KEYSTORE;
  if (close(fd) != 0 && !rc)
    rc = HSM_E_KEYSTORE;
  if (!rc && rename(tmp, path) != 0)
    rc = HSM_E_KEYSTORE;
  if (rc) {
    unlink(tmp);
    free(tmp);
    return rc;
  }
  free(tmp);
  /* The rename itself is durable once the directory is. */
  char *dir = strdup(path);
  if (!dir)
    return HSM_E_NOMEM;
  char *slash = strrchr(dir, '/');
  if (slash == dir)
    dir[1] = '\0';
  else if (slash)
    *slash = '\0';
  else
    memcpy(dir, ".", 2);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (dfd < 0)
    return HSM_E_KEYSTORE;
  rc = fsync(dfd) == 0 ? 0 : HSM_E_KEYSTORE;
  close(dfd);
  return rc;
}

/* One key-table line for k, newline included. */
static int key_line(const ps_key_t *k, char *out, size_t cap) {
  int n = snprintf(out, cap, "%s %s %s %s %lu %lld\n", k->label,
                   hsm_usage_name(k->usage), k->crypt, k->kcv,
                   (unsigned long)k->version, (long long)k->not_after);
  return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* Adds nk as the new current version of its label to the key table file
 * and then to memory; the previous current version (old_version, 0: none)
 * gets not_after_old when that is > 0.  The file is read again, its lines
 * kept as they are (comments too) but the previous version's, and the
 * result parsed before it replaces the file: the table in memory is what
 * the file holds. */
static int table_commit(ps_t *ps, const ps_key_t *nk, uint32_t old_version,
                        int64_t not_after_old) {
  char *text = NULL, line[PS_LINE_MAX + 2], add[PS_LINE_MAX + 2];
  size_t len = 0;
  int rc = table_read(ps->table_path, &text, &len);
  if (rc)
    return rc;
  int addn = key_line(nk, add, sizeof add);
  size_t cap = len + 2 + (size_t)(addn > 0 ? addn : 0) + PS_LINE_MAX + 2;
  char *out = addn > 0 ? malloc(cap) : NULL;
  if (!out) {
    hsm__cleanse(text, len + 1);
    free(text);
    return addn > 0 ? HSM_E_NOMEM : HSM_E_KEYSTORE;
  }
  size_t o = 0, pos = 0;
  int replaced = 0;
  while (pos < len) {
    size_t end = pos;
    while (end < len && text[end] != '\n')
      end++;
    size_t n = end - pos;
    int done = 0;
    if (old_version && not_after_old > 0 && n <= PS_LINE_MAX) {
      ps_key_t k;
      const char *why;
      memcpy(line, text + pos, n);
      line[n] = '\0';
      char *p = line;
      while (*p == ' ' || *p == '\t')
        p++;
      if (*p && *p != '#' && *p != '!' && parse_key_line(p, &k, &why) == 0 &&
          strcmp(k.label, nk->label) == 0 && k.version == old_version) {
        k.not_after = not_after_old;
        int kn = key_line(&k, out + o, cap - o);
        if (kn > 0) {
          o += (size_t)kn;
          done = replaced = 1;
        }
      }
      hsm__cleanse(&k, sizeof k);
    }
    if (!done) {
      memcpy(out + o, text + pos, n);
      o += n;
      out[o++] = '\n';
    }
    pos = end < len ? end + 1 : end;
  }
  hsm__cleanse(line, sizeof line);
  hsm__cleanse(text, len + 1);
  free(text);
  memcpy(out + o, add, (size_t)addn);
  o += (size_t)addn;
  hsm__cleanse(add, sizeof add);
  hsm__ps_table_t *nt = NULL;
  rc = (old_version && not_after_old > 0 && !replaced) ? HSM_E_KEYSTORE : 0;
  if (!rc)
    rc = hsm__ps_table_parse(out, o, &nt, NULL, 0) ? HSM_E_KEYSTORE : 0;
  if (!rc)
    rc = write_atomic(ps->table_path, out, o);
  hsm__cleanse(out, cap);
  free(out);
  if (rc) {
    hsm__ps_table_free(nt);
    return rc;
  }
  nt->mtime = (int64_t)time(NULL);
  hsm__ps_table_free(ps->table);
  ps->table = nt;
  return 0;
}

static void info_base(hsm_key_info_t *info, const char *label,
                      hsm_usage_t usage) {
  memset(info, 0, sizeof *info);
  snprintf(info->label, sizeof info->label, "%s", label);
  info->usage = usage;
  info->alg = HSM_ALG_TDES;
}

/* A6: the key under the ZMK becomes a key under the LMK, stored as the new
 * current version of label once its check value is the expected one. */
static int ps_key_import_ecb(hsm_t *h, const char *label, hsm_usage_t usage,
                             const char *kek_label, const uint8_t *cryptogram,
                             size_t len, const char *expected_kcv,
                             int64_t not_after_old, hsm_key_info_t *out) {
  ps_t *ps = PS(h);
  const ps_key_t *kek, *old;
  info_base(out, label, usage);
  if (!hsm__ks_label_ok(label) || (len != 16 && len != 24) ||
      strnlen(expected_kcv, 7) != 6 || not_after_old < 0)
    return HSM_E_INVAL;
  char want[7];
  for (size_t i = 0; i < 6; i++) {
    char ch = expected_kcv[i];
    want[i] = ch >= 'a' && ch <= 'f' ? (char)(ch - 'a' + 'A') : ch;
  }
  want[6] = '\0';
  if (!all_uhex(want, 6))
    return HSM_E_INVAL;
  const char *type = key_type_code(usage);
  if (!type)
    return HSM_E_UNSUPPORTED;
  int rc = kek_for(ps->table, kek_label, &kek);
  if (rc)
    return rc;
  old = table_find(ps->table, label);
  if (old && old->usage != usage)
    return HSM_E_EXISTS;
  if (old && old->version == UINT32_MAX)
    return HSM_E_KEYSTORE;
  uint32_t old_version = old ? old->version : 0;
  /* A6 key type, ZMK, key under the ZMK (X/Y: ANSI X9.17, plain ECB),
   * key scheme under the LMK (U/T: variant). */
  char body[2 + 3 + 49 + 1 + 48 + 1], resp[64];
  ps_w_t w = {.p = body, .cap = sizeof body};
  w_str(&w, "A6");
  w_str(&w, type);
  w_str(&w, kek->crypt);
  w_str(&w, len == 24 ? "Y" : "X");
  w_hex(&w, cryptogram, len);
  w_str(&w, len == 24 ? "T" : "U");
  size_t rl = 0;
  rc = w.over ? HSM_E_INVAL
              : ps_command(h, "A6", body, w.len, resp, sizeof resp, &rl);
  hsm__cleanse(body, sizeof body);
  if (rc) {
    hsm__cleanse(resp, sizeof resp);
    return rc;
  }
  /* A7: key under the LMK (U + 32H or T + 48H), check value 6H. */
  size_t klen = 1 + 2 * len;
  if (rl != klen + 6 || resp[0] != (len == 24 ? 'T' : 'U') ||
      !all_uhex(resp + 1, 2 * len) || !all_uhex(resp + klen, 6)) {
    hsm__cleanse(resp, sizeof resp);
    ps->malformed++;
    return HSM_E_BACKEND;
  }
  memcpy(out->kcv, resp + klen, 6);
  out->kcv[6] = '\0';
  if (memcmp(out->kcv, want, 6) != 0) {
    hsm__cleanse(resp, sizeof resp);
    return HSM_E_KCV_MISMATCH;
  }
  ps_key_t nk;
  memset(&nk, 0, sizeof nk);
  memcpy(nk.label, label, strlen(label) + 1);
  nk.usage = usage;
  memcpy(nk.crypt, resp, klen);
  nk.len = len;
  memcpy(nk.kcv, out->kcv, 7);
  nk.version = old_version + 1;
  hsm__cleanse(resp, sizeof resp);
  rc = table_commit(ps, &nk, old_version, not_after_old);
  hsm__cleanse(&nk, sizeof nk);
  if (rc)
    return rc;
  const ps_key_t *k = table_find(ps->table, label);
  if (!k)
    return HSM_E_KEYSTORE;
  info_from(ps, k, out);
  return 0;
}

/* A8: the current version of label under the ZMK, and its check value
 * (which must be the key table's). */
static int ps_key_export_ecb(hsm_t *h, const char *label, const char *kek_label,
                             uint8_t *cryptogram, size_t cap, size_t *len,
                             hsm_key_info_t *info) {
  ps_t *ps = PS(h);
  const ps_key_t *kek, *k = table_find(ps->table, label);
  *len = 0;
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  info_from(ps, k, info);
  const char *type = key_type_code(k->usage);
  if (!type)
    return HSM_E_UNSUPPORTED;
  int rc = kek_for(ps->table, kek_label, &kek);
  if (rc)
    return rc;
  if (k->len == 8)
    return HSM_E_KEY_LENGTH; /* single DES does not travel */
  if (cap < k->len)
    return HSM_E_INVAL;
  /* A8 key type, ZMK, key under the LMK, key scheme under the ZMK. */
  char body[2 + 3 + 49 + 49 + 1], resp[64];
  ps_w_t w = {.p = body, .cap = sizeof body};
  w_str(&w, "A8");
  w_str(&w, type);
  w_str(&w, kek->crypt);
  w_str(&w, k->crypt);
  w_str(&w, k->len == 24 ? "Y" : "X");
  size_t rl = 0, n = k->len;
  char kcv[7];
  memcpy(kcv, k->kcv, 7);
  rc = w.over ? HSM_E_INVAL
              : ps_command(h, "A8", body, w.len, resp, sizeof resp, &rl);
  hsm__cleanse(body, sizeof body);
  if (!rc) {
    /* A9: key under the ZMK (X + 32H or Y + 48H), check value 6H. */
    if (rl != 1 + 2 * n + 6 || resp[0] != (n == 24 ? 'Y' : 'X') ||
        !all_uhex(resp + 1 + 2 * n, 6) ||
        hsm__unhex(resp + 1, 2 * n, cryptogram, 1)) {
      ps->malformed++;
      rc = HSM_E_BACKEND;
    } else if (memcmp(resp + 1 + 2 * n, kcv, 6) != 0) {
      rc = HSM_E_KCV_MISMATCH; /* the table's check value is wrong */
    } else {
      *len = n;
    }
  }
  if (rc)
    hsm__cleanse(cryptogram, cap);
  hsm__cleanse(resp, sizeof resp);
  return rc;
}

int hsm__ps_lmk(const hsm_t *h, char kcv[17], char firmware[10]) {
  if (!h || h->be != &hsm__payshield_backend || !h->state || !kcv || !firmware)
    return HSM_E_INVAL;
  const ps_t *ps = h->state;
  memcpy(kcv, ps->lmk_kcv, 17);
  memcpy(firmware, ps->firmware, 10);
  return kcv[0] ? 0 : HSM_E_UNAVAILABLE;
}

uint64_t hsm__ps_counter(const hsm_t *h, const char *name) {
  if (!h || h->be != &hsm__payshield_backend || !h->state || !name)
    return 0;
  const ps_t *ps = h->state;
  if (strcmp(name, "sent") == 0)
    return ps->sent;
  if (strcmp(name, "answered") == 0)
    return ps->answered;
  if (strcmp(name, "late") == 0)
    return ps->late;
  if (strcmp(name, "unmatched") == 0)
    return ps->unmatched;
  if (strcmp(name, "malformed") == 0)
    return ps->malformed;
  if (strcmp(name, "reconnects") == 0)
    return ps->reconnects;
  if (strcmp(name, "drops") == 0)
    return ps->drops;
  if (strcmp(name, "lmk_checked") == 0)
    return ps->lmk_checked;
  if (strcmp(name, "lmk_mismatch") == 0)
    return ps->lmk_mismatch;
  if (strcmp(name, "up") == 0) {
    uint64_t up = 0;
    for (size_t i = 0; i < ps->nconn; i++)
      up += ps->conns[i].state == PS_UP;
    return up;
  }
  return 0;
}

const hsm__backend_t hsm__payshield_backend = {
    .name = "payshield",
    .caps = HSM_CAP_PIN_TRANSLATE | HSM_CAP_DUKPT_TDES | HSM_CAP_PIN_VERIFY |
            HSM_CAP_MAC_RETAIL | HSM_CAP_CVV,
    .open = ps_open,
    .close = ps_close,
    .submit = ps_submit,
    .cancel = ps_cancel,
    .key_list = ps_key_list,
    .key_info = ps_key_info,
    .key_generate = NULL,
    .key_import_clear = NULL,
    .key_import_tr31 = NULL,
    .key_export_tr31 = NULL,
    .key_import_ecb = ps_key_import_ecb,
    .key_export_ecb = ps_key_export_ecb,
    .key_rotate = NULL,
    .key_destroy = NULL,
};
