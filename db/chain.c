/*
 * chain.c — what the journal's HMAC chain covers (journal.h,
 * docs/journal.md): the canonical byte string of an event.
 *
 * Layout: the tag "SWJ1", then every field below in this order, each as a
 * 2-byte big-endian length followed by that many bytes; an absent field is
 * the length 0xFFFF with no bytes.  Text fields are their characters;
 * numbers are decimal text; byte fields (pan_hash, pan_enc) are raw bytes.
 * chain_seq is covered (so a row moved to another position fails);
 * chain_hmac is not (it is the output), nor chain_key_ver (it names the
 * key: a wrong version gives a wrong HMAC), nor recorded_at (the server's
 * clock, informational).
 */
#include "chain.h"

#include "hsm.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#define ABSENT 0xFFFFu

void db_event_init(db_event_t *ev) {
  memset(ev, 0, sizeof *ev);
  ev->amount_minor = DB_NONE;
  ev->batch_no = DB_NONE;
  ev->terminal_local_us = DB_NO_TIME;
  ev->transmission_us = DB_NO_TIME;
}

typedef struct {
  uint8_t *p;
  size_t len, cap;
  int overflow;
} out_t;

static void put(out_t *o, const void *b, size_t n, int absent) {
  size_t need = 2 + (absent ? 0 : n);
  if (o->overflow || n >= ABSENT || o->len + need > o->cap) {
    o->overflow = 1;
    return;
  }
  unsigned v = absent ? ABSENT : (unsigned)n;
  o->p[o->len++] = (uint8_t)(v >> 8);
  o->p[o->len++] = (uint8_t)v;
  if (!absent && n) {
    memcpy(o->p + o->len, b, n);
    o->len += n;
  }
}

/* Bounded strlen: fields are fixed arrays that may lack a NUL when a
 * caller filled them wrongly; never read past the array. */
static void put_text(out_t *o, const char *s, size_t cap) {
  size_t n = strnlen(s, cap);
  put(o, s, n, n == 0);
}
#define TEXT(o, field) put_text((o), (field), sizeof(field))

static void put_i64(out_t *o, int64_t v, int absent) {
  char b[24];
  int n = snprintf(b, sizeof b, "%" PRId64, v);
  put(o, b, (size_t)n, absent);
}

size_t db_event_canonical(const db_event_t *ev, uint8_t *out, size_t cap) {
  out_t o = {out, 0, cap, 0};
  if (cap < 4)
    return 0;
  memcpy(out, "SWJ1", 4);
  o.len = 4;
  TEXT(&o, ev->business_date);
  put_i64(&o, ev->node_id, 0);
  put_i64(&o, ev->txn_id, 0);
  put_i64(&o, ev->event_no, 0);
  TEXT(&o, ev->event);
  TEXT(&o, ev->state);
  TEXT(&o, ev->txn_kind);
  TEXT(&o, ev->mti);
  TEXT(&o, ev->processing_code);
  int no_money = ev->amount_minor < 0;
  put_i64(&o, ev->amount_minor, no_money);
  put(&o, &ev->sign, 1, no_money || ev->sign == 0);
  TEXT(&o, ev->currency);
  TEXT(&o, ev->stan);
  TEXT(&o, ev->terminal_stan);
  put_i64(&o, ev->terminal_local_us, ev->terminal_local_us == DB_NO_TIME);
  put_i64(&o, ev->transmission_us, ev->transmission_us == DB_NO_TIME);
  TEXT(&o, ev->rrn);
  TEXT(&o, ev->auth_code);
  TEXT(&o, ev->response_code);
  TEXT(&o, ev->reason);
  TEXT(&o, ev->terminal_id);
  TEXT(&o, ev->merchant_id);
  put_i64(&o, ev->batch_no, ev->batch_no < 0);
  TEXT(&o, ev->issuer_id);
  TEXT(&o, ev->link_id);
  TEXT(&o, ev->orig_business_date);
  TEXT(&o, ev->pan_masked);
  int no_hash = ev->pan_hash_key_ver <= 0;
  put(&o, ev->pan_hash, sizeof ev->pan_hash, no_hash);
  put_i64(&o, ev->pan_hash_key_ver, no_hash);
  int no_enc = ev->pan_enc_len == 0 || ev->pan_enc_len > sizeof ev->pan_enc;
  put(&o, ev->pan_enc, no_enc ? 0 : ev->pan_enc_len, no_enc);
  put_i64(&o, ev->pan_enc_key_ver, no_enc);
  put_i64(&o, ev->chain_seq, 0);
  return o.overflow ? 0 : o.len;
}

typedef struct {
  int done, status;
  uint8_t mac[32];
  uint32_t version;
} link_wait_t;

static void link_done(hsm_req_t *req) {
  link_wait_t *w = req->data;
  w->status = req->status;
  if (req->status == 0 && req->result.data.len == 32) {
    memcpy(w->mac, req->result.data.out, 32);
    w->version = req->result.data.key_version;
  } else if (req->status == 0) {
    w->status = HSM_E_CRYPTO;
  }
  w->done = 1;
}

int db__chain_link(hsm_t *h, uv_loop_t *loop, const char *label,
                   uint32_t version, const uint8_t prev[32],
                   const db_event_t *ev, uint8_t out[32], uint32_t *used) {
  uint8_t canon[2048], in[64];
  size_t n = db_event_canonical(ev, canon, sizeof canon);
  unsigned dl = 0;
  if (n == 0 || EVP_Digest(canon, n, in + 32, &dl, EVP_sha256(), NULL) != 1)
    return HSM_E_CRYPTO;
  memcpy(in, prev, 32);
  hsm_data_t a = {
      .key_label = label, .in = in, .len = sizeof in, .key_version = version};
  link_wait_t w = {0};
  hsm_req_t req;
  memset(&req, 0, sizeof req);
  req.data = &w;
  int rc = hsm_hmac(h, &req, &a, link_done);
  if (rc)
    return rc;
  while (!w.done)
    uv_run(loop, UV_RUN_ONCE);
  if (w.status)
    return w.status;
  memcpy(out, w.mac, 32);
  *used = w.version;
  return 0;
}
