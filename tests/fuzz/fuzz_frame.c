/*
 * fuzz_frame.c — libFuzzer target for the stream framer.
 *
 * Input: byte 0 picks the framing (bits 0-1 length type, bit 2 length
 * counts itself, bits 3-4 header length, bits 5-7 largest message); byte 1
 * the slack beyond the smallest buffer iso_framer_init accepts.  The rest
 * is a sequence of chunks, each a control byte (bits 0-5 size, bit 6 feed
 * or space/commit, bit 7 take frames now or later) and that many stream
 * bytes.  The target aborts when an invariant breaks:
 *   - every frame's header and message lie inside the framer's buffer, and
 *     prefix, header and message are, byte for byte, the next bytes of the
 *     stream, with a prefix iso_frame_write_header writes identically;
 *   - a message is 1..max_msg bytes;
 *   - space handed out lies inside the buffer and ends at its end;
 *   - once every whole frame is taken there is always room for more input;
 *   - an error is FRAME_LENGTH or FRAME_TOO_LARGE, points into the length
 *     prefix at head, and every later call returns ISO_E_FRAME_FAILED.
 */
#include "iso8583.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Names the broken invariant's line before crashing, so a finding can be
 * read without a debugger. */
static void check_failed(int line) {
  fprintf(stderr, "%s:%d: invariant violated\n", __FILE__, line);
  abort();
}
#define check(ok) ((ok) ? (void)0 : check_failed(__LINE__))

typedef struct run_s {
  iso_framer_t f;
  uint8_t *stream; /* everything the framer accepted, in order */
  size_t accepted;
  size_t taken; /* stream bytes handed out as frames */
  int failed;
} run_t;

static void check_frame(run_t *r, const iso_frame_t *fr) {
  const iso_framing_t *cfg = &r->f.cfg;
  size_t pre = iso_frame_prefix_len(cfg);
  const uint8_t *lo = r->f.buf, *hi = r->f.buf + r->f.cap;

  check(fr->msg_len >= 1 && fr->msg_len <= cfg->max_msg);
  check(fr->header_len == cfg->header_len);
  check(fr->header == (cfg->header_len ? fr->msg - cfg->header_len : NULL));
  check(fr->msg >= lo + pre + cfg->header_len);
  check(fr->msg_len <= (size_t)(hi - fr->msg));

  const uint8_t *start = fr->msg - cfg->header_len - pre;
  size_t total = pre + cfg->header_len + fr->msg_len;
  check(total <= r->accepted - r->taken);
  check(memcmp(start, r->stream + r->taken, total) == 0);

  uint8_t head[4 + 5]; /* longest prefix and header the target picks */
  size_t hn = 0;
  check(iso_frame_write_header(cfg, fr->msg_len, fr->header, head, sizeof head,
                               &hn) == 0);
  check(hn == pre + cfg->header_len);
  check(memcmp(head, start, hn) == 0);
  r->taken += total;
}

static void check_dead(run_t *r) {
  iso_frame_t fr;
  iso_err_t err;
  uint8_t *p;
  size_t n;
  check(iso_framer_next(&r->f, &fr, &err) == ISO_E_FRAME_FAILED);
  check(err.code == ISO_E_FRAME_FAILED);
  check(iso_framer_feed(&r->f, r->stream, 1, &n) == ISO_E_FRAME_FAILED);
  check(iso_framer_space(&r->f, &p, &n) == ISO_E_FRAME_FAILED);
  check(iso_framer_commit(&r->f, 0) == ISO_E_FRAME_FAILED);
}

/* Takes every whole frame; returns 0, or <0 once the stream is dead. */
static int drain(run_t *r) {
  iso_frame_t fr;
  iso_err_t err;
  int rc;
  while ((rc = iso_framer_next(&r->f, &fr, &err)) == 1)
    check_frame(r, &fr);
  if (rc < 0) {
    size_t pre = iso_frame_prefix_len(&r->f.cfg);
    check(rc == ISO_E_FRAME_LENGTH || rc == ISO_E_FRAME_TOO_LARGE);
    check(err.code == rc && r->f.error == rc);
    check(err.offset >= r->f.head && err.offset < r->f.head + pre);
    check(r->f.tail - r->f.head >= pre);
    r->failed = 1;
    check_dead(r);
  }
  return rc;
}

/* Hands chunk to the framer by copy or in place; returns bytes taken. */
static size_t put(run_t *r, const uint8_t *chunk, size_t n, int in_place) {
  size_t used = 0;
  if (in_place) {
    uint8_t *p;
    size_t avail;
    if (iso_framer_space(&r->f, &p, &avail) < 0)
      return 0;
    check(p >= r->f.buf && avail >= 1 && p + avail == r->f.buf + r->f.cap);
    used = n < avail ? n : avail;
    memcpy(p, chunk, used);
    check(iso_framer_commit(&r->f, used) == 0);
  } else if (iso_framer_feed(&r->f, chunk, n, &used) < 0) {
    check(used == 0);
    return 0;
  }
  check(used <= n);
  memcpy(r->stream + r->accepted, chunk, used);
  r->accepted += used;
  return used;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint16_t headers[4] = {0, 5, 1, 2};
  static const uint32_t maxes[8] = {1, 7, 32, 255, 1000, 9999, 65535, 70000};
  static const size_t slacks[4] = {0, 1, 7, 64};
  if (size < 2)
    return 0;

  iso_framing_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.len_type = (uint8_t)(data[0] & 3u);
  cfg.len_includes_self = (uint8_t)((data[0] >> 2) & 1u);
  cfg.header_len = headers[(data[0] >> 3) & 3u];
  cfg.max_msg = maxes[data[0] >> 5];
  size_t least = iso_frame_prefix_len(&cfg) + cfg.header_len + cfg.max_msg;
  size_t cap = least + slacks[data[1] & 3u];

  run_t r;
  memset(&r, 0, sizeof r);
  uint8_t *buf = malloc(cap);
  uint8_t *stream = malloc(size);
  if (!buf || !stream) {
    free(buf);
    free(stream);
    return 0;
  }
  r.stream = stream;
  check(iso_framer_init(&r.f, &cfg, buf, least - 1) == ISO_E_INVAL);
  check(iso_framer_init(&r.f, &cfg, buf, cap) == 0);

  size_t pos = 2;
  while (pos < size && !r.failed) {
    uint8_t ctl = data[pos++];
    size_t n = ctl & 0x3Fu;
    if (n > size - pos)
      n = size - pos;
    const uint8_t *chunk = data + pos;
    pos += n;
    while (n > 0 && !r.failed) {
      size_t used = put(&r, chunk, n, ctl & 0x40u);
      if (used == 0) {
        if (drain(&r) < 0)
          break;
        /* With every whole frame taken, input always fits. */
        used = put(&r, chunk, n, ctl & 0x40u);
        check(used > 0);
      }
      chunk += used;
      n -= used;
      if ((ctl & 0x80u) && drain(&r) < 0)
        break;
    }
  }
  if (!r.failed && drain(&r) == 0) {
    check(r.f.tail - r.f.head == r.accepted - r.taken);
    check(memcmp(r.f.buf + r.f.head, r.stream + r.taken,
                 r.accepted - r.taken) == 0);
  }
  free(buf);
  free(stream);
  return 0;
}
