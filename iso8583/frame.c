/*
 * frame.c — cutting a byte stream into ISO 8583 messages, and writing the
 * length header (and TPDU) in front of one.
 *
 * A frame on the wire is  [length prefix][fixed header][message].  The
 * prefix is BIN2 (2 bytes big-endian), BCD2 (2 bytes packed BCD), ASCII4
 * (4 ASCII digits) or BIN4 (4 bytes big-endian).  Its value counts the
 * fixed header and the message, plus the prefix itself when
 * len_includes_self is set.  The fixed header (a TPDU is 5 bytes) has the
 * length header_len from the configuration.
 *
 * The framer works in caller memory: bytes are appended at tail, frames are
 * taken from head, and the unconsumed bytes [head, tail) are moved to the
 * start of the buffer only when the frame being received would not fit
 * otherwise.  Because init demands cap >= prefix + header_len + max_msg,
 * a frame that passes the length checks always fits once compacted.
 *
 * States of the unconsumed bytes [head, tail), and the calls that move
 * between them:
 *   EMPTY    nothing unconsumed          feed, commit -> PARTIAL or READY
 *   PARTIAL  frame at head incomplete    feed, commit -> PARTIAL or READY
 *                                        next, prefix in and bad -> FAILED
 *   READY    a whole frame at head       next -> EMPTY, PARTIAL or READY
 *   FAILED   f->error != 0               every call -> FAILED
 * iso_framer_next judges the length as soon as the prefix is complete, so
 * an oversized or malformed frame is refused before its body arrives.
 *
 * Errors: f->error keeps the first error's code and every later call
 * returns ISO_E_FRAME_FAILED; the stream cannot be resynchronised once a
 * length is wrong.  err->offset is an index into the buffer given to
 * iso_framer_init: the bad digit of a BCD2/ASCII4 prefix, else the first
 * byte of the frame's prefix (head does not move after an error, so the
 * bytes can still be inspected there).  err->field is 0.
 *
 * iso_framer_feed returns ISO_E_NOSPACE (not sticky) when len > 0 and not
 * one byte fits, which only happens while whole frames are left untaken.
 *
 * iso_frame_write_header refuses what no reader here would accept as a
 * frame (a zero-length message: ISO_E_FRAME_LENGTH) and lengths the prefix
 * cannot express (ISO_E_FRAME_TOO_LARGE); it does not apply max_msg, which
 * bounds what this side accepts, not what the peer does.
 */
#include "iso8583.h"

#include <string.h>

static size_t frame_prefix(unsigned len_type) {
  switch (len_type) {
  case ISO_FRAME_BIN2:
  case ISO_FRAME_BCD2:
    return 2;
  case ISO_FRAME_ASCII4:
  case ISO_FRAME_BIN4:
    return 4;
  default:
    return 0;
  }
}

/* Largest length value the prefix can carry. */
static uint64_t frame_prefix_max(unsigned len_type) {
  switch (len_type) {
  case ISO_FRAME_BIN2:
    return 0xFFFFu;
  case ISO_FRAME_BIN4:
    return 0xFFFFFFFFu;
  default:
    return 9999u;
  }
}

static int frame_fail(iso_err_t *err, int code, size_t off, size_t expected,
                      size_t available) {
  if (err) {
    err->code = code;
    err->field = 0;
    err->subfield = 0;
    err->offset = off;
    err->expected = expected;
    err->available = available;
  }
  return code;
}

/* Bytes that prefix, header and message occupy for a message of m bytes. */
static size_t frame_total(const iso_framing_t *cfg, uint64_t m) {
  return frame_prefix(cfg->len_type) + cfg->header_len + (size_t)m;
}

/* Decodes the complete prefix at head into the message length and checks
 * it against the configuration. */
static int frame_msg_len(const iso_framer_t *f, uint64_t *msg_len,
                         iso_err_t *err) {
  const uint8_t *p = f->buf + f->head;
  size_t pre = frame_prefix(f->cfg.len_type);
  uint64_t v = 0;

  switch (f->cfg.len_type) {
  case ISO_FRAME_BCD2:
    for (size_t i = 0; i < 2; i++) {
      unsigned hi = p[i] >> 4, lo = p[i] & 0x0Fu;
      if (hi > 9 || lo > 9)
        return frame_fail(err, ISO_E_FRAME_LENGTH, f->head + i, 0, 0);
      v = v * 100 + hi * 10 + lo;
    }
    break;
  case ISO_FRAME_ASCII4:
    for (size_t i = 0; i < 4; i++) {
      if (p[i] < '0' || p[i] > '9')
        return frame_fail(err, ISO_E_FRAME_LENGTH, f->head + i, 0, 0);
      v = v * 10 + (uint64_t)(p[i] - '0');
    }
    break;
  default: /* BIN2, BIN4: big-endian */
    for (size_t i = 0; i < pre; i++)
      v = v << 8 | p[i];
    break;
  }

  uint64_t self = f->cfg.len_includes_self ? pre : 0;
  /* A frame must carry at least one message byte: a zero-length message
   * is never valid ISO 8583 and is how a desynchronised stream often
   * looks. */
  uint64_t min = self + f->cfg.header_len + 1;
  if (v < min)
    return frame_fail(err, ISO_E_FRAME_LENGTH, f->head, (size_t)min, (size_t)v);
  uint64_t m = v - self - f->cfg.header_len;
  if (m > f->cfg.max_msg)
    return frame_fail(err, ISO_E_FRAME_TOO_LARGE, f->head, f->cfg.max_msg,
                      (size_t)m);
  *msg_len = m;
  return 0;
}

/* Bytes the frame at head will occupy: its declared size when the prefix is
 * in and valid, else the largest frame allowed. */
static size_t frame_need(const iso_framer_t *f) {
  uint64_t m = f->cfg.max_msg;

  if (f->tail - f->head >= frame_prefix(f->cfg.len_type))
    (void)frame_msg_len(f, &m, NULL);
  return frame_total(&f->cfg, m);
}

static void frame_compact(iso_framer_t *f) {
  size_t n = f->tail - f->head;

  if (n)
    memmove(f->buf, f->buf + f->head, n);
  f->head = 0;
  f->tail = n;
}

size_t iso_frame_prefix_len(const iso_framing_t *cfg) {
  return cfg ? frame_prefix(cfg->len_type) : 0;
}

int iso_framer_init(iso_framer_t *f, const iso_framing_t *cfg, uint8_t *buf,
                    size_t cap) {
  if (!f)
    return ISO_E_INVAL;
  /* A framer whose init failed must not be usable by accident. */
  memset(f, 0, sizeof *f);
  f->error = ISO_E_INVAL;
  if (!cfg || !buf)
    return ISO_E_INVAL;
  size_t pre = frame_prefix(cfg->len_type);
  if (!pre || cfg->max_msg == 0)
    return ISO_E_INVAL;
  if ((uint64_t)cap < (uint64_t)pre + cfg->header_len + cfg->max_msg)
    return ISO_E_INVAL;
  f->cfg = *cfg;
  f->buf = buf;
  f->cap = cap;
  f->error = 0;
  return 0;
}

int iso_framer_space(iso_framer_t *f, uint8_t **p, size_t *avail) {
  if (p)
    *p = NULL;
  if (avail)
    *avail = 0;
  if (!f || !p || !avail)
    return ISO_E_INVAL;
  if (f->error)
    return ISO_E_FRAME_FAILED;

  if (f->head == f->tail)
    f->head = f->tail = 0;
  else if (f->head > 0 && f->cap - f->head < frame_need(f))
    frame_compact(f);
  /* Only whole frames left unconsumed can fill the buffer. */
  if (f->tail == f->cap)
    return ISO_E_NOSPACE;
  *p = f->buf + f->tail;
  *avail = f->cap - f->tail;
  return 0;
}

int iso_framer_commit(iso_framer_t *f, size_t n) {
  if (!f)
    return ISO_E_INVAL;
  if (f->error)
    return ISO_E_FRAME_FAILED;
  if (n > f->cap - f->tail)
    return ISO_E_INVAL;
  f->tail += n;
  return 0;
}

int iso_framer_feed(iso_framer_t *f, const uint8_t *data, size_t len,
                    size_t *consumed) {
  if (consumed)
    *consumed = 0;
  if (!f || (!data && len))
    return ISO_E_INVAL;
  if (f->error)
    return ISO_E_FRAME_FAILED;
  if (len == 0)
    return 0;

  /* The bytes are copied anyway, so moving the (at most one frame of)
   * unconsumed bytes to make room for more of them is worth it here,
   * unlike in iso_framer_space where the caller reads in place. */
  if (f->head == f->tail)
    f->head = f->tail = 0;
  else if (f->head > 0 && f->cap - f->tail < len)
    frame_compact(f);
  size_t room = f->cap - f->tail;
  if (room == 0)
    return ISO_E_NOSPACE;
  size_t n = len < room ? len : room;
  memcpy(f->buf + f->tail, data, n);
  f->tail += n;
  if (consumed)
    *consumed = n;
  return 0;
}

int iso_framer_next(iso_framer_t *f, iso_frame_t *out, iso_err_t *err) {
  if (!f || !out)
    return frame_fail(err, ISO_E_INVAL, 0, 0, 0);
  if (f->error)
    return frame_fail(err, ISO_E_FRAME_FAILED, f->head, 0, 0);

  size_t pre = frame_prefix(f->cfg.len_type);
  size_t have = f->tail - f->head;
  if (have < pre)
    return 0;
  uint64_t m;
  int rc = frame_msg_len(f, &m, err);
  if (rc < 0) {
    f->error = rc;
    return rc;
  }
  size_t total = frame_total(&f->cfg, m);
  if (have < total)
    return 0;

  const uint8_t *h = f->buf + f->head + pre;
  out->header = f->cfg.header_len ? h : NULL;
  out->header_len = f->cfg.header_len;
  out->msg = h + f->cfg.header_len;
  out->msg_len = (size_t)m;
  f->head += total;
  /* Rewinding the indices moves no bytes, so the view stays valid; the
   * next read then lands at the start of the buffer. */
  if (f->head == f->tail)
    f->head = f->tail = 0;
  return 1;
}

int iso_frame_write_header(const iso_framing_t *cfg, size_t msg_len,
                           const uint8_t *hdr, uint8_t *out, size_t cap,
                           size_t *outlen) {
  if (!cfg)
    return ISO_E_INVAL;
  size_t pre = frame_prefix(cfg->len_type);
  if (!pre)
    return ISO_E_INVAL;
  if (msg_len == 0)
    return ISO_E_FRAME_LENGTH;
  uint64_t max = frame_prefix_max(cfg->len_type);
  uint64_t extra = (cfg->len_includes_self ? pre : 0) + cfg->header_len;
  /* Compared this way round so that a huge msg_len cannot wrap. */
  if ((uint64_t)msg_len > max || (uint64_t)msg_len > max - extra)
    return ISO_E_FRAME_TOO_LARGE;
  size_t hlen = pre + cfg->header_len;
  if (!out || cap < hlen)
    return ISO_E_NOSPACE;

  uint64_t v = (uint64_t)msg_len + extra;
  switch (cfg->len_type) {
  case ISO_FRAME_BCD2:
    out[0] = (uint8_t)((v / 1000) << 4 | (v / 100) % 10);
    out[1] = (uint8_t)((v / 10) % 10 << 4 | v % 10);
    break;
  case ISO_FRAME_ASCII4:
    for (size_t i = 0; i < 4; i++, v /= 10)
      out[3 - i] = (uint8_t)('0' + v % 10);
    break;
  default: /* BIN2, BIN4: big-endian */
    for (size_t i = 0; i < pre; i++, v >>= 8)
      out[pre - 1 - i] = (uint8_t)v;
    break;
  }
  if (hdr)
    memcpy(out + pre, hdr, cfg->header_len);
  else
    memset(out + pre, 0, cfg->header_len);
  if (outlen)
    *outlen = hlen;
  return 0;
}

void iso_tpdu_swap(uint8_t tpdu[5]) {
  if (!tpdu)
    return;
  uint8_t d0 = tpdu[1], d1 = tpdu[2];
  tpdu[1] = tpdu[3];
  tpdu[2] = tpdu[4];
  tpdu[3] = d0;
  tpdu[4] = d1;
}
