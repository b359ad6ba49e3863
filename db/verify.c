/*
 * verify.c — checks the journal's HMAC chains of one business date
 * (journal.h, docs/journal.md).
 *
 * For each node that wrote events that day, the rows are read in chain
 * order (single-row mode: a day of millions of rows is never held in
 * memory) and each link is recomputed through the HSM adapter.  What each
 * break means:
 *  - a sequence number missing: a row was deleted (or never committed, which
 *    the writer cannot do: rows and head are one transaction);
 *  - a sequence number twice, or an HMAC that does not match: a row was
 *    inserted or changed (the first row whose HMAC fails is the changed row
 *    or the one after an inserted/deleted row);
 *  - the last row is not the head recorded in journal_chain_head: rows were
 *    cut off the end (or the head was changed).
 */
#include "journal.h"

#include "chain.h"
#include "util.h"

#include "hsm.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const char SQL_ROWS[] =
    "SELECT business_date::text, node_id, txn_id, event_no, event, state, "
    "coalesce(txn_kind, ''), mti, coalesce(processing_code, ''), "
    "coalesce(amount_minor, -1), coalesce(sign, ''), coalesce(currency, ''), "
    "coalesce(stan, ''), coalesce(terminal_stan, ''), "
    "(extract(epoch FROM terminal_local_at) * 1000000)::bigint, "
    "(extract(epoch FROM transmission_at) * 1000000)::bigint, "
    "coalesce(rrn, ''), coalesce(auth_code, ''), coalesce(response_code, ''), "
    "coalesce(reason, ''), coalesce(terminal_id, ''), "
    "coalesce(merchant_id, ''), coalesce(batch_no, -1), "
    "coalesce(issuer_id, ''), coalesce(link_id, ''), "
    "coalesce(orig_business_date::text, ''), coalesce(pan_masked, ''), "
    "coalesce(encode(pan_hash, 'hex'), ''), coalesce(pan_hash_key_ver, 0), "
    "coalesce(encode(pan_enc, 'hex'), ''), coalesce(pan_enc_key_ver, 0), "
    "chain_seq, encode(chain_hmac, 'hex'), chain_key_ver "
    "FROM switch.journal_event WHERE business_date = $1 AND node_id = $2 "
    "ORDER BY chain_seq, txn_id, event_no";

typedef struct {
  void (*report)(void *ctx, const char *line);
  void *ctx;
  char *err;
  size_t errcap;
  int breaks;
} out_t;

static void say(out_t *o, int is_break, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void say(out_t *o, int is_break, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (is_break && o->breaks++ == 0 && o->err)
    snprintf(o->err, o->errcap, "%s", line);
  if (o->report)
    o->report(o->ctx, line);
}

static void copy(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src);
}
#define COPY(field, col) copy((field), sizeof(field), PQgetvalue(r, 0, (col)))

/* One row of SQL_ROWS into ev; -1 if a value does not fit. */
static int row_to_event(PGresult *r, db_event_t *ev) {
  db_event_init(ev);
  for (int k = 0; k < PQnfields(r); k++)
    if (strlen(PQgetvalue(r, 0, k)) > 300)
      return -1;
  COPY(ev->business_date, 0);
  ev->node_id = (uint16_t)strtoul(PQgetvalue(r, 0, 1), NULL, 10);
  ev->txn_id = strtoll(PQgetvalue(r, 0, 2), NULL, 10);
  ev->event_no = (int32_t)strtol(PQgetvalue(r, 0, 3), NULL, 10);
  COPY(ev->event, 4);
  COPY(ev->state, 5);
  COPY(ev->txn_kind, 6);
  COPY(ev->mti, 7);
  COPY(ev->processing_code, 8);
  ev->amount_minor = strtoll(PQgetvalue(r, 0, 9), NULL, 10);
  ev->sign = PQgetvalue(r, 0, 10)[0];
  COPY(ev->currency, 11);
  COPY(ev->stan, 12);
  COPY(ev->terminal_stan, 13);
  if (!PQgetisnull(r, 0, 14))
    ev->terminal_local_us = strtoll(PQgetvalue(r, 0, 14), NULL, 10);
  if (!PQgetisnull(r, 0, 15))
    ev->transmission_us = strtoll(PQgetvalue(r, 0, 15), NULL, 10);
  COPY(ev->rrn, 16);
  COPY(ev->auth_code, 17);
  COPY(ev->response_code, 18);
  COPY(ev->reason, 19);
  COPY(ev->terminal_id, 20);
  COPY(ev->merchant_id, 21);
  ev->batch_no = (int32_t)strtol(PQgetvalue(r, 0, 22), NULL, 10);
  COPY(ev->issuer_id, 23);
  COPY(ev->link_id, 24);
  COPY(ev->orig_business_date, 25);
  COPY(ev->pan_masked, 26);
  size_t n = 0;
  if (db__unhex(PQgetvalue(r, 0, 27), ev->pan_hash, sizeof ev->pan_hash, &n))
    return -1;
  ev->pan_hash_key_ver = (int32_t)strtol(PQgetvalue(r, 0, 28), NULL, 10);
  if (db__unhex(PQgetvalue(r, 0, 29), ev->pan_enc, sizeof ev->pan_enc, &n))
    return -1;
  ev->pan_enc_len = (uint16_t)n;
  ev->pan_enc_key_ver = (int32_t)strtol(PQgetvalue(r, 0, 30), NULL, 10);
  ev->chain_seq = strtoll(PQgetvalue(r, 0, 31), NULL, 10);
  if (db__unhex(PQgetvalue(r, 0, 32), ev->chain_hmac, 32, &n) || n != 32)
    return -1;
  ev->chain_key_ver = (uint32_t)strtoul(PQgetvalue(r, 0, 33), NULL, 10);
  return 0;
}

/* The link of ev under the version of the chain key it names. */
static int link_of(hsm_t *h, uv_loop_t *loop, const char *label,
                   const uint8_t prev[32], const db_event_t *ev,
                   uint8_t out[32], uint32_t *version) {
  return db__chain_link(h, loop, label, ev->chain_key_ver, prev, ev, out,
                        version);
}

static int head_of(PGconn *c, const char *date, const char *node, int64_t *seq,
                   uint8_t hmac[32]) {
  const char *v[2] = {date, node};
  PGresult *r = PQexecParams(
      c,
      "SELECT chain_seq, encode(chain_hmac, 'hex') FROM "
      "switch.journal_chain_head WHERE business_date = $1 AND node_id = $2",
      2, NULL, v, NULL, NULL, 0);
  int rc = -1;
  size_t n = 0;
  if (PQresultStatus(r) == PGRES_TUPLES_OK) {
    rc = 0;
    *seq = 0;
    if (PQntuples(r) == 1) {
      *seq = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
      if (db__unhex(PQgetvalue(r, 0, 1), hmac, 32, &n) || n != 32)
        rc = -1;
    }
  }
  PQclear(r);
  return rc;
}

/* Verifies the chain of one node; 0, DB_E_INTEGRITY, or an error. */
static int verify_node(PGconn *c, hsm_t *h, uv_loop_t *loop, const char *label,
                       const char *date, const char *node, out_t *o) {
  int64_t head_seq = 0;
  uint8_t head_hmac[32] = {0};
  if (head_of(c, date, node, &head_seq, head_hmac)) {
    say(o, 0, "cannot read the chain head: %s", PQerrorMessage(c));
    return DB_E_SQL;
  }
  const char *v[2] = {date, node};
  if (!PQsendQueryParams(c, SQL_ROWS, 2, NULL, v, NULL, NULL, 0) ||
      !PQsetSingleRowMode(c)) {
    say(o, 0, "cannot read the journal: %s", PQerrorMessage(c));
    return DB_E_SQL;
  }
  uint8_t prev[32] = {0};
  int64_t seq = 0, rows = 0;
  int rc = 0, broken = 0;
  PGresult *r;
  while ((r = PQgetResult(c)) != NULL) {
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK) { /* the end */
      PQclear(r);
      continue;
    }
    if (st != PGRES_SINGLE_TUPLE) {
      say(o, 0, "cannot read the journal: %s", PQresultErrorMessage(r));
      rc = DB_E_SQL;
      PQclear(r);
      continue;
    }
    rows++;
    if (broken || rc) { /* drain the rest after the first break */
      PQclear(r);
      continue;
    }
    db_event_t ev;
    if (row_to_event(r, &ev)) {
      say(o, 1, "%s node %s: row %" PRId64 " cannot be read back", date, node,
          rows);
      broken = 1;
      PQclear(r);
      continue;
    }
    PQclear(r);
    if (ev.chain_seq != seq + 1) {
      say(o, 1,
          "%s node %s: chain breaks at seq %" PRId64 " (txn %" PRId64
          " event %d): expected seq %" PRId64 ": %s",
          date, node, ev.chain_seq, ev.txn_id, ev.event_no, seq + 1,
          ev.chain_seq <= seq ? "a row was inserted or duplicated"
                              : "a row is missing (deleted)");
      broken = 1;
      continue;
    }
    uint8_t mac[32];
    uint32_t ver = 0;
    int hr = link_of(h, loop, label, prev, &ev, mac, &ver);
    if (hr == HSM_E_KEY_NOT_FOUND) {
      say(o, 1,
          "%s node %s: chain breaks at seq %" PRId64 " (txn %" PRId64
          " event %d): version %u of the chain key does not exist",
          date, node, ev.chain_seq, ev.txn_id, ev.event_no, ev.chain_key_ver);
      broken = 1;
      continue;
    }
    if (hr) {
      say(o, 0, "%s node %s: HMAC of seq %" PRId64 ": %s", date, node,
          ev.chain_seq, hsm_strerror(hr));
      rc = DB_E_HSM;
      continue;
    }
    if (ver != ev.chain_key_ver || CRYPTO_memcmp(mac, ev.chain_hmac, 32)) {
      say(o, 1,
          "%s node %s: chain breaks at seq %" PRId64 " (txn %" PRId64
          " event %d): %s",
          date, node, ev.chain_seq, ev.txn_id, ev.event_no,
          ver != ev.chain_key_ver
              ? "written under another version of the chain key"
              : "the HMAC does not match: this row, or the row before it, "
                "was changed, inserted or deleted");
      broken = 1;
      continue;
    }
    memcpy(prev, ev.chain_hmac, 32);
    seq = ev.chain_seq;
  }
  if (rc)
    return rc;
  if (broken)
    return DB_E_INTEGRITY;
  if (seq != head_seq || (seq && CRYPTO_memcmp(prev, head_hmac, 32))) {
    say(o, 1,
        "%s node %s: the chain ends at seq %" PRId64
        " but its head says %" PRId64 ": %s",
        date, node, seq, head_seq,
        seq < head_seq ? "rows were removed from the end"
                       : "the head does not match the last row");
    return DB_E_INTEGRITY;
  }
  say(o, 0, "%s node %s: %" PRId64 " events, chain intact", date, node, seq);
  return 0;
}

int db_journal_verify(PGconn *c, hsm_t *hsm, uv_loop_t *loop,
                      const char *chain_key_label, const char *date,
                      void (*report)(void *ctx, const char *line),
                      void *report_ctx, char *err, size_t errcap) {
  out_t o = {report, report_ctx, err, errcap, 0};
  if (err && errcap)
    err[0] = '\0';
  if (!c || !hsm || !loop || !chain_key_label || !date)
    return DB_E_INVAL;
  const char *v[1] = {date};
  PGresult *r = PQexecParams(
      c,
      "SELECT node_id FROM switch.journal_event WHERE business_date = $1 "
      "UNION SELECT node_id FROM switch.journal_chain_head "
      "WHERE business_date = $1 ORDER BY 1",
      1, NULL, v, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    if (err)
      snprintf(err, errcap, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return DB_E_SQL;
  }
  int n = PQntuples(r), worst = 0;
  if (n == 0)
    say(&o, 0, "%s: no journal events", date);
  for (int i = 0; i < n; i++) {
    char node[8];
    snprintf(node, sizeof node, "%s", PQgetvalue(r, i, 0));
    int rc = verify_node(c, hsm, loop, chain_key_label, date, node, &o);
    if (rc && (!worst || rc == DB_E_INTEGRITY))
      worst = rc;
  }
  PQclear(r);
  return worst;
}
