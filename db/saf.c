/*
 * saf.c — the store-and-forward queue's worker and operator side (saf.h,
 * docs/saf.md).  Every call is one SQL statement run in autocommit (so one
 * short transaction), except db_saf_record_send and db_saf_retry, which
 * read before they write and say so where it matters.
 *
 * Leases, not locks: a claim locks its rows only for the statement that
 * sets owner and lease_until (FOR UPDATE SKIP LOCKED, so two claimers never
 * wait on each other nor take the same row); the calls that follow check
 * owner in their WHERE clause, so a node whose row was taken over gets
 * DB_E_CONFLICT instead of overwriting the new owner's state.
 *
 * Everything read back from the database is checked for NULL and length
 * before it is copied: a row that does not fit is DB_E_SQL with its name.
 */
#include "saf.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NO_TIME INT64_MIN

/* ---- messages and small checks ---- */

/* True when s is 1..max characters, each a letter/digit or in extra. */
static int shaped(const char *s, size_t max, int upper, const char *extra) {
  if (!s)
    return 0;
  size_t n = strlen(s);
  if (n == 0 || n > max)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    int ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
             (upper && ch >= 'A' && ch <= 'Z') || (ch && strchr(extra, ch));
    if (!ok)
      return 0;
  }
  return 1;
}

static int valid_owner(const char *s) {
  return shaped(s, 64, 1, "_.:-");
}
static int valid_link(const char *s) {
  return shaped(s, 32, 0, "_-");
}

static int all_digits(const char *s, size_t n) {
  if (!s || strlen(s) != n)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return 0;
  return 1;
}

static int valid_rc(const char *s) {
  if (!s || strlen(s) != 2)
    return 0;
  for (int i = 0; i < 2; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
      return 0;
  return 1;
}

/* ---- configuration ---- */

void db_saf_config_init(db_saf_config_t *cfg) {
  cfg->max_attempts = DB_SAF_MAX_ATTEMPTS;
  cfg->backoff_base_ms = DB_SAF_BACKOFF_BASE_MS;
  cfg->backoff_cap_ms = DB_SAF_BACKOFF_CAP_MS;
  cfg->lease_ms = DB_SAF_LEASE_MS;
}

/* cfg with the zeros replaced by defaults, checked against the limits. */
static int resolve_config(const db_saf_config_t *in, db_saf_config_t *out,
                          char *err, size_t cap) {
  db_saf_config_init(out);
  if (in) {
    if (in->max_attempts)
      out->max_attempts = in->max_attempts;
    if (in->backoff_base_ms)
      out->backoff_base_ms = in->backoff_base_ms;
    if (in->backoff_cap_ms)
      out->backoff_cap_ms = in->backoff_cap_ms;
    if (in->lease_ms)
      out->lease_ms = in->lease_ms;
  }
  if (out->max_attempts > DB_SAF_MAX_ATTEMPTS_LIMIT ||
      out->backoff_base_ms > DB_SAF_MS_LIMIT ||
      out->backoff_cap_ms > DB_SAF_MS_LIMIT ||
      out->lease_ms > DB_SAF_MS_LIMIT ||
      out->backoff_base_ms > out->backoff_cap_ms) {
    db__set_err(err, cap,
                "SAF configuration out of range: max_attempts %u (at most %u), "
                "backoff %u..%u ms, lease %u ms (each at most %u ms, base not "
                "above cap)",
                out->max_attempts, DB_SAF_MAX_ATTEMPTS_LIMIT,
                out->backoff_base_ms, out->backoff_cap_ms, out->lease_ms,
                DB_SAF_MS_LIMIT);
    return DB_E_INVAL;
  }
  return 0;
}

uint64_t db_saf_backoff_ms(const db_saf_config_t *cfg, uint32_t n) {
  db_saf_config_t k;
  if (resolve_config(cfg, &k, NULL, 0) != 0)
    db_saf_config_init(&k);
  uint64_t d = k.backoff_base_ms;
  for (uint32_t i = 1; i < n && d < k.backoff_cap_ms; i++)
    d *= 2;
  return d < k.backoff_cap_ms ? d : k.backoff_cap_ms;
}

/* ---- reading result values ---- */

/* Copies field (row, col) into dst (cap bytes); "" for NULL.  -1 when it
 * does not fit. */
static int get_text(PGresult *r, int row, int col, char *dst, size_t cap) {
  dst[0] = '\0';
  if (PQgetisnull(r, row, col))
    return 0;
  size_t n = (size_t)PQgetlength(r, row, col);
  if (n >= cap)
    return -1;
  memcpy(dst, PQgetvalue(r, row, col), n);
  dst[n] = '\0';
  return 0;
}

/* Parses field (row, col) as an int64; dflt for NULL.  -1 when it is not
 * an integer. */
static int get_i64(PGresult *r, int row, int col, int64_t dflt, int64_t *out) {
  if (PQgetisnull(r, row, col)) {
    *out = dflt;
    return 0;
  }
  const char *s = PQgetvalue(r, row, col);
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end)
    return -1;
  *out = (int64_t)v;
  return 0;
}

static int get_i32(PGresult *r, int row, int col, int32_t dflt, int32_t *out) {
  int64_t v;
  if (get_i64(r, row, col, dflt, &v) || v < INT32_MIN || v > INT32_MAX)
    return -1;
  *out = (int32_t)v;
  return 0;
}

static int get_node(PGresult *r, int row, int col, uint16_t *out) {
  int64_t v;
  if (get_i64(r, row, col, -1, &v) || v < 0 || v > 65535)
    return -1;
  *out = (uint16_t)v;
  return 0;
}

/* Decodes a bytea field (text format) into dst; *len 0 for NULL.  -1
 * when it does not decode or is longer than cap. */
static int get_bytea(PGresult *r, int row, int col, uint8_t *dst, size_t cap,
                     uint16_t *len) {
  *len = 0;
  if (PQgetisnull(r, row, col))
    return 0;
  size_t n = 0;
  unsigned char *raw =
      PQunescapeBytea((const unsigned char *)PQgetvalue(r, row, col), &n);
  if (!raw)
    return -1;
  int rc = -1;
  if (n <= cap && n <= UINT16_MAX) {
    memcpy(dst, raw, n);
    *len = (uint16_t)n;
    rc = 0;
  }
  PQfreemem(raw);
  return rc;
}

/* A value read back that is NULL where it may not be, too long or not a
 * number: the schema and this file disagree. */
static int bad_value(PGresult *r, int row, char *err, size_t cap) {
  db__set_err(err, cap,
              "SAF: unexpected value in row %d of %d of the database's answer",
              row + 1, PQntuples(r));
  return DB_E_SQL;
}

/* Runs sql with n text parameters; r is NULL-safe to PQclear. */
static PGresult *run(PGconn *c, const char *sql, int n,
                     const char *const *params) {
  return PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
}

#define US_OF(x) "(extract(epoch FROM " x ") * 1000000)::bigint"

/* ---- claim ---- */

/* The columns below are read by position in fill_item. */
static const char claim_sql[] =
    "WITH due AS ("
    " SELECT s.saf_id FROM switch.saf s"
    "  WHERE ((s.state = 'live' AND s.next_attempt_at <= now()"
    "          AND (s.lease_until IS NULL OR s.lease_until <= now()))"
    "      OR (s.state = 'armed' AND s.lease_until <= now()))"
    "    AND NOT EXISTS (SELECT 1 FROM switch.saf o"
    "                     WHERE o.txn_id = s.txn_id AND o.saf_id < s.saf_id"
    "                       AND o.state IN ('armed', 'live'))"
    "  ORDER BY s.next_attempt_at, s.saf_id"
    "  LIMIT $3"
    "  FOR UPDATE OF s SKIP LOCKED),"
    " claimed AS ("
    " UPDATE switch.saf s SET"
    "   state = CASE WHEN s.attempts - s.retried_attempts >= $4"
    "                THEN 'dead' ELSE 'live' END,"
    "   owner = CASE WHEN s.attempts - s.retried_attempts >= $4"
    "                THEN NULL ELSE $1 END,"
    "   lease_until = CASE WHEN s.attempts - s.retried_attempts >= $4"
    "     THEN NULL ELSE now() + $2::bigint * interval '1 millisecond' END,"
    "   dead_at = CASE WHEN s.attempts - s.retried_attempts >= $4"
    "                  THEN now() ELSE s.dead_at END,"
    "   next_attempt_at = CASE WHEN s.state = 'armed' THEN now()"
    "                          ELSE s.next_attempt_at END,"
    "   updated_at = now()"
    "  FROM due WHERE s.saf_id = due.saf_id"
    "  RETURNING s.*)"
    " SELECT c.saf_id, c.kind,"
    "  CASE WHEN c.attempts = 0 THEN c.mti"
    "       ELSE overlay(c.mti PLACING '1' FROM 4) END,"
    "  c.attempts + 1, c.link_id, c.business_date, c.node_id, c.txn_id,"
    "  c.state, r.event_no IS NOT NULL, r.mti, r.processing_code,"
    "  r.amount_minor, r.sign, r.currency, r.terminal_stan, r.rrn,"
    "  r.terminal_id, r.merchant_id, r.pan_masked, r.pan_enc,"
    "  r.pan_enc_key_ver, f.stan, " US_OF(
        "f.transmission_at") ", f.link_id, a.approved, a.reversed"
                             " FROM claimed c"
                             " LEFT JOIN LATERAL (SELECT * FROM "
                             "switch.journal_event e"
                             "   WHERE e.business_date = c.business_date AND "
                             "e.node_id = c.node_id"
                             "     AND e.txn_id = c.txn_id AND e.event = "
                             "'received'"
                             "   ORDER BY e.event_no LIMIT 1) r ON true"
                             " LEFT JOIN LATERAL (SELECT e.stan, "
                             "e.transmission_at, e.link_id"
                             "   FROM switch.journal_event e"
                             "   WHERE e.business_date = c.business_date AND "
                             "e.node_id = c.node_id"
                             "     AND e.txn_id = c.txn_id AND e.event = "
                             "'forwarded'"
                             "   ORDER BY e.event_no DESC LIMIT 1) f ON true"
                             " LEFT JOIN LATERAL (SELECT"
                             "  (SELECT e.amount_minor FROM "
                             "switch.journal_event e"
                             "    WHERE e.business_date = c.business_date"
                             "      AND e.node_id = c.node_id AND e.txn_id = "
                             "c.txn_id"
                             "      AND e.event IN ('response', 'stand_in')"
                             "      AND e.state IN ('approved', 'stood_in')"
                             "    ORDER BY e.event_no DESC LIMIT 1) AS "
                             "approved,"
                             "  (SELECT sum(e.amount_minor)::bigint"
                             "     FROM switch.journal_event e"
                             "    WHERE (e.business_date = c.business_date OR"
                             "           e.orig_business_date = "
                             "c.business_date)"
                             "      AND e.node_id = c.node_id AND e.txn_id = "
                             "c.txn_id"
                             "      AND e.event = 'reversal_requested') AS "
                             "reversed"
                             " ) a ON true"
                             " ORDER BY c.next_attempt_at, c.saf_id";

enum {
  CL_SAF_ID,
  CL_KIND,
  CL_MTI,
  CL_ATTEMPT,
  CL_LINK,
  CL_DATE,
  CL_NODE,
  CL_TXN,
  CL_STATE,
  CL_HAS_ORIG,
  CL_ORIG_MTI,
  CL_PCODE,
  CL_AMOUNT,
  CL_SIGN,
  CL_CURRENCY,
  CL_TSTAN,
  CL_RRN,
  CL_TID,
  CL_MID,
  CL_PAN_MASKED,
  CL_PAN_ENC,
  CL_PAN_ENC_VER,
  CL_STAN,
  CL_TRANSMIT,
  CL_ORIG_LINK,
  CL_APPROVED,
  CL_REVERSED,
  CL_NCOLS
};

/* The original's fields of claim row `row` into it. */
static int fill_original(PGresult *r, int row, db_saf_item_t *it) {
  char sign[2];
  int64_t ver;
  if (get_text(r, row, CL_ORIG_MTI, it->orig_mti, sizeof it->orig_mti) ||
      get_text(r, row, CL_PCODE, it->processing_code,
               sizeof it->processing_code) ||
      get_i64(r, row, CL_AMOUNT, -1, &it->amount_minor) ||
      get_text(r, row, CL_SIGN, sign, sizeof sign) ||
      get_text(r, row, CL_CURRENCY, it->currency, sizeof it->currency) ||
      get_text(r, row, CL_TSTAN, it->terminal_stan, sizeof it->terminal_stan) ||
      get_text(r, row, CL_RRN, it->rrn, sizeof it->rrn) ||
      get_text(r, row, CL_TID, it->terminal_id, sizeof it->terminal_id) ||
      get_text(r, row, CL_MID, it->merchant_id, sizeof it->merchant_id) ||
      get_text(r, row, CL_PAN_MASKED, it->pan_masked, sizeof it->pan_masked) ||
      get_bytea(r, row, CL_PAN_ENC, it->pan_enc, sizeof it->pan_enc,
                &it->pan_enc_len) ||
      get_i64(r, row, CL_PAN_ENC_VER, 0, &ver) || ver < 0 || ver > INT32_MAX ||
      get_text(r, row, CL_STAN, it->stan, sizeof it->stan) ||
      get_i64(r, row, CL_TRANSMIT, NO_TIME, &it->transmission_us) ||
      get_text(r, row, CL_ORIG_LINK, it->orig_link_id,
               sizeof it->orig_link_id) ||
      get_i64(r, row, CL_APPROVED, -1, &it->approved_minor) ||
      get_i64(r, row, CL_REVERSED, -1, &it->reversed_minor))
    return -1;
  it->sign = sign[0];
  it->pan_enc_key_ver = (int32_t)ver;
  return 0;
}

/* Claim row `row` into it; 1 when the row was moved to dead (not an
 * item), 0 when filled, -1 on a bad value. */
static int fill_item(PGresult *r, int row, db_saf_item_t *it) {
  char state[9];
  memset(it, 0, sizeof *it);
  it->amount_minor = -1;
  it->approved_minor = -1;
  it->reversed_minor = -1;
  it->transmission_us = NO_TIME;
  if (get_text(r, row, CL_STATE, state, sizeof state))
    return -1;
  if (strcmp(state, "dead") == 0)
    return 1;
  if (get_i64(r, row, CL_SAF_ID, -1, &it->saf_id) ||
      get_text(r, row, CL_KIND, it->kind, sizeof it->kind) ||
      get_text(r, row, CL_MTI, it->mti, sizeof it->mti) ||
      get_i32(r, row, CL_ATTEMPT, -1, &it->attempt) ||
      get_text(r, row, CL_LINK, it->link_id, sizeof it->link_id) ||
      get_text(r, row, CL_DATE, it->business_date, sizeof it->business_date) ||
      get_node(r, row, CL_NODE, &it->node_id) ||
      get_i64(r, row, CL_TXN, -1, &it->txn_id))
    return -1;
  it->has_original = strcmp(PQgetvalue(r, row, CL_HAS_ORIG), "t") == 0;
  if (!it->has_original)
    return 0;
  return fill_original(r, row, it);
}

int db_saf_claim(PGconn *c, const db_saf_config_t *cfg, const char *owner,
                 db_saf_item_t *items, size_t cap, size_t *n, char *err,
                 size_t errcap) {
  db_saf_config_t k;
  if (n)
    *n = 0;
  if (!c || !items || !n || cap == 0 || cap > 10000) {
    db__set_err(err, errcap,
                "SAF claim: no connection, no items or a capacity "
                "not in 1..10000");
    return DB_E_INVAL;
  }
  if (!valid_owner(owner)) {
    db__set_err(err, errcap,
                "SAF claim: owner must be 1 to 64 characters of "
                "A-Z a-z 0-9 _ . : -");
    return DB_E_INVAL;
  }
  int rc = resolve_config(cfg, &k, err, errcap);
  if (rc)
    return rc;
  char lease[16], limit[16], max[16];
  snprintf(lease, sizeof lease, "%u", k.lease_ms);
  snprintf(limit, sizeof limit, "%zu", cap);
  snprintf(max, sizeof max, "%u", k.max_attempts);
  const char *p[] = {owner, lease, limit, max};
  PGresult *r = run(c, claim_sql, 4, p);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    rc = db__sql_err(c, r, "SAF claim", err, errcap);
    PQclear(r);
    return rc;
  }
  if (PQnfields(r) != CL_NCOLS || (size_t)PQntuples(r) > cap) {
    PQclear(r);
    db__set_err(err, errcap, "SAF claim: unexpected result shape");
    return DB_E_SQL;
  }
  size_t got = 0;
  for (int i = 0; i < PQntuples(r); i++) {
    int f = fill_item(r, i, &items[got]);
    if (f < 0) {
      /* The rows stay leased to owner; they come back when it expires. */
      rc = bad_value(r, i, err, errcap);
      break;
    }
    if (f == 0)
      got++;
  }
  PQclear(r);
  *n = got;
  return rc;
}

/* ---- sends and their outcomes ---- */

static int check_key(const db_saf_key_t *key, char *err, size_t cap,
                     const char *what) {
  if (!key || !valid_link(key->link_id) || !all_digits(key->stan, 6) ||
      key->transmission_us == NO_TIME) {
    db__set_err(err, cap,
                "%s: the matching key needs a link (1 to 32 of a-z "
                "0-9 _ -), a 6-digit STAN and a transmission time",
                what);
    return DB_E_INVAL;
  }
  return 0;
}

/* DB_E_REJECTED when another SAF row than saf_id sent with key. */
static int key_used_elsewhere(PGconn *c, int64_t saf_id,
                              const db_saf_key_t *key, const char *us,
                              char *err, size_t cap) {
  char id[24];
  snprintf(id, sizeof id, "%lld", (long long)saf_id);
  const char *p[] = {key->link_id, key->stan, us, id};
  PGresult *r = run(c,
                    "SELECT saf_id FROM switch.saf_attempt"
                    " WHERE link_id = $1 AND stan = $2 AND transmission_at ="
                    "   timestamptz 'epoch' + $3::bigint * interval "
                    "'1 microsecond' AND saf_id <> $4 LIMIT 1",
                    4, p);
  int rc = 0;
  if (PQresultStatus(r) != PGRES_TUPLES_OK)
    rc = db__sql_err(c, r, "SAF record send", err, cap);
  else if (PQntuples(r) > 0) {
    db__set_err(err, cap,
                "SAF record send: link %s STAN %s at that DE7 was already sent "
                "for SAF row %s",
                key->link_id, key->stan, PQgetvalue(r, 0, 0));
    rc = DB_E_REJECTED;
  }
  PQclear(r);
  return rc;
}

int db_saf_record_send(PGconn *c, int64_t saf_id, const char *owner,
                       const db_saf_key_t *key, int32_t *attempt, char *mti,
                       char *err, size_t errcap) {
  if (!c || !valid_owner(owner)) {
    db__set_err(err, errcap, "SAF record send: no connection or a bad owner");
    return DB_E_INVAL;
  }
  int rc = check_key(key, err, errcap, "SAF record send");
  if (rc)
    return rc;
  char id[24], us[24];
  snprintf(id, sizeof id, "%lld", (long long)saf_id);
  snprintf(us, sizeof us, "%lld", (long long)key->transmission_us);
  /* Checked before, not in, the write: two rows racing for one key would
   * need two nodes with the same STAN lease on a link, which the lease
   * table rules out. */
  rc = key_used_elsewhere(c, saf_id, key, us, err, errcap);
  if (rc)
    return rc;
  const char *p[] = {id, owner, key->link_id, key->stan, us};
  PGresult *r = run(
      c,
      "WITH s AS ("
      " UPDATE switch.saf SET attempts = attempts + 1, updated_at = now()"
      "  WHERE saf_id = $1 AND owner = $2 AND state = 'live'"
      "    AND lease_until > now()"
      "  RETURNING saf_id, attempts,"
      "   CASE WHEN attempts = 1 THEN mti::text"
      "        ELSE overlay(mti PLACING '1' FROM 4) END AS send_mti)"
      " INSERT INTO switch.saf_attempt (saf_id, attempt, mti, owner, link_id,"
      "   stan, transmission_at)"
      " SELECT saf_id, attempts, send_mti, $2, $3, $4,"
      "   timestamptz 'epoch' + $5::bigint * interval '1 microsecond' FROM s"
      " RETURNING attempt, mti",
      5, p);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    rc = db__sql_err(c, r, "SAF record send", err, errcap);
    PQclear(r);
    return rc;
  }
  if (PQntuples(r) != 1) {
    PQclear(r);
    db__set_err(err, errcap,
                "SAF record send: row %lld is not live under a lease of %s "
                "(taken over, expired or finished): do not send",
                (long long)saf_id, owner);
    return DB_E_CONFLICT;
  }
  int32_t a = 0;
  char m[5];
  if (get_i32(r, 0, 0, -1, &a) || get_text(r, 0, 1, m, sizeof m))
    rc = bad_value(r, 0, err, errcap);
  PQclear(r);
  if (rc)
    return rc;
  if (attempt)
    *attempt = a;
  if (mti)
    memcpy(mti, m, sizeof m);
  return 0;
}

static const char ack_sql[] =
    "WITH a AS ("
    " SELECT saf_id, attempt FROM switch.saf_attempt"
    "  WHERE link_id = $1 AND stan = $2 AND transmission_at ="
    "    timestamptz 'epoch' + $3::bigint * interval '1 microsecond'"
    "  ORDER BY attempt DESC LIMIT 1),"
    " ta AS (UPDATE switch.saf_attempt t SET outcome = 'acked',"
    "   response_code = $4, answered_at = now()"
    "  FROM a WHERE t.saf_id = a.saf_id AND t.attempt = a.attempt),"
    " u AS (UPDATE switch.saf s SET state = 'acked', owner = NULL,"
    "   lease_until = NULL, acked_at = now(), updated_at = now(),"
    "   last_response_code = coalesce($4, s.last_response_code)"
    "  FROM a WHERE s.saf_id = a.saf_id AND s.state <> 'acked')"
    " SELECT s.saf_id, s.txn_id, s.business_date, s.node_id, s.kind,"
    "  a.attempt, s.state = 'acked'"
    " FROM switch.saf s JOIN a USING (saf_id)";

static int fill_acked(PGresult *r, db_saf_acked_t *out) {
  if (get_i64(r, 0, 0, -1, &out->saf_id) ||
      get_i64(r, 0, 1, -1, &out->txn_id) ||
      get_text(r, 0, 2, out->business_date, sizeof out->business_date) ||
      get_node(r, 0, 3, &out->node_id) ||
      get_text(r, 0, 4, out->kind, sizeof out->kind) ||
      get_i32(r, 0, 5, -1, &out->attempt))
    return -1;
  /* The final SELECT sees the row as it was before this statement. */
  out->already_acked = strcmp(PQgetvalue(r, 0, 6), "t") == 0;
  return 0;
}

int db_saf_ack(PGconn *c, const db_saf_key_t *key, const char *response_code,
               db_saf_acked_t *out, char *err, size_t errcap) {
  if (!c) {
    db__set_err(err, errcap, "SAF ack: no connection");
    return DB_E_INVAL;
  }
  int rc = check_key(key, err, errcap, "SAF ack");
  if (rc)
    return rc;
  if (response_code && !valid_rc(response_code)) {
    db__set_err(err, errcap, "SAF ack: response code must be 2 of 0-9 A-Z");
    return DB_E_INVAL;
  }
  char us[24];
  snprintf(us, sizeof us, "%lld", (long long)key->transmission_us);
  const char *p[] = {key->link_id, key->stan, us, response_code};
  PGresult *r = run(c, ack_sql, 4, p);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    rc = db__sql_err(c, r, "SAF ack", err, errcap);
    PQclear(r);
    return rc;
  }
  if (PQntuples(r) != 1 || PQnfields(r) != 7) {
    PQclear(r);
    db__set_err(err, errcap,
                "SAF ack: no send on link %s with STAN %s at that "
                "transmission time",
                key->link_id, key->stan);
    return DB_E_NOT_FOUND;
  }
  db_saf_acked_t tmp;
  memset(&tmp, 0, sizeof tmp);
  if (fill_acked(r, &tmp))
    rc = bad_value(r, 0, err, errcap);
  PQclear(r);
  if (!rc && out)
    *out = tmp;
  return rc;
}

static const char fail_sql[] =
    "WITH s AS ("
    " SELECT saf_id, attempts, attempts - retried_attempts AS n"
    "  FROM switch.saf WHERE saf_id = $1 AND owner = $2 AND state = 'live'"
    "  FOR UPDATE),"
    " ta AS (UPDATE switch.saf_attempt t SET"
    "   outcome = CASE WHEN $3::text IS NULL THEN 'no_answer'"
    "                  ELSE 'refused' END,"
    "   response_code = $3, answered_at = now()"
    "  FROM s WHERE t.saf_id = s.saf_id AND t.attempt = s.attempts"
    "   AND t.outcome IS NULL)"
    " UPDATE switch.saf x SET"
    "  state = CASE WHEN s.n >= $4 THEN 'dead' ELSE 'live' END,"
    "  dead_at = CASE WHEN s.n >= $4 THEN now() ELSE x.dead_at END,"
    "  owner = NULL, lease_until = NULL,"
    "  last_response_code = coalesce($3, x.last_response_code),"
    /* min(base * 2^(n-1), cap) in numeric, so no power overflows; 62
     * doublings already exceed any cap allowed. */
    "  next_attempt_at = CASE WHEN s.n >= $4 THEN x.next_attempt_at"
    "   ELSE now() + interval '1 millisecond' * least($5::numeric"
    "        * 2::numeric ^ least(greatest(s.n - 1, 0), 62),"
    "        $6::numeric)::bigint END,"
    "  updated_at = now()"
    " FROM s WHERE x.saf_id = s.saf_id"
    " RETURNING x.state";

int db_saf_fail(PGconn *c, const db_saf_config_t *cfg, int64_t saf_id,
                const char *owner, const char *response_code, int *dead,
                char *err, size_t errcap) {
  db_saf_config_t k;
  if (!c || !valid_owner(owner)) {
    db__set_err(err, errcap, "SAF fail: no connection or a bad owner");
    return DB_E_INVAL;
  }
  if (response_code && !valid_rc(response_code)) {
    db__set_err(err, errcap, "SAF fail: response code must be 2 of 0-9 A-Z");
    return DB_E_INVAL;
  }
  int rc = resolve_config(cfg, &k, err, errcap);
  if (rc)
    return rc;
  char id[24], max[16], base[16], capms[16];
  snprintf(id, sizeof id, "%lld", (long long)saf_id);
  snprintf(max, sizeof max, "%u", k.max_attempts);
  snprintf(base, sizeof base, "%u", k.backoff_base_ms);
  snprintf(capms, sizeof capms, "%u", k.backoff_cap_ms);
  const char *p[] = {id, owner, response_code, max, base, capms};
  PGresult *r = run(c, fail_sql, 6, p);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    rc = db__sql_err(c, r, "SAF fail", err, errcap);
    PQclear(r);
    return rc;
  }
  if (PQntuples(r) != 1) {
    PQclear(r);
    db__set_err(err, errcap, "SAF fail: row %lld is not live under %s's lease",
                (long long)saf_id, owner);
    return DB_E_CONFLICT;
  }
  if (dead)
    *dead = strcmp(PQgetvalue(r, 0, 0), "dead") == 0;
  PQclear(r);
  return 0;
}

/* Runs a one-row UPDATE on saf_id for owner; DB_E_CONFLICT when it
 * matched nothing. */
static int owner_update(PGconn *c, const char *sql, const char *what,
                        int64_t saf_id, const char *owner, const char *arg,
                        char *err, size_t errcap) {
  if (!c || !valid_owner(owner)) {
    db__set_err(err, errcap, "%s: no connection or a bad owner", what);
    return DB_E_INVAL;
  }
  char id[24];
  snprintf(id, sizeof id, "%lld", (long long)saf_id);
  const char *p[] = {id, owner, arg};
  PGresult *r = run(c, sql, arg ? 3 : 2, p);
  int rc = 0;
  if (PQresultStatus(r) != PGRES_COMMAND_OK)
    rc = db__sql_err(c, r, what, err, errcap);
  else if (strcmp(PQcmdTuples(r), "1") != 0) {
    db__set_err(err, errcap, "%s: row %lld is not live under %s's lease", what,
                (long long)saf_id, owner);
    rc = DB_E_CONFLICT;
  }
  PQclear(r);
  return rc;
}

int db_saf_renew(PGconn *c, int64_t saf_id, const char *owner,
                 uint32_t lease_ms, char *err, size_t errcap) {
  if (lease_ms == 0 || lease_ms > DB_SAF_MS_LIMIT) {
    db__set_err(err, errcap, "SAF renew: lease of %u ms is not in 1..%u",
                lease_ms, DB_SAF_MS_LIMIT);
    return DB_E_INVAL;
  }
  char ms[16];
  snprintf(ms, sizeof ms, "%u", lease_ms);
  return owner_update(c,
                      "UPDATE switch.saf SET lease_until = now() + "
                      "$3::bigint * interval '1 millisecond', updated_at = "
                      "now() WHERE saf_id = $1 AND owner = $2 AND state = "
                      "'live'",
                      "SAF renew", saf_id, owner, ms, err, errcap);
}

int db_saf_release(PGconn *c, int64_t saf_id, const char *owner, char *err,
                   size_t errcap) {
  return owner_update(c,
                      "UPDATE switch.saf SET owner = NULL, lease_until = "
                      "NULL, updated_at = now() WHERE saf_id = $1 AND owner "
                      "= $2 AND state = 'live'",
                      "SAF release", saf_id, owner, NULL, err, errcap);
}

/* ---- operators ---- */

int db_saf_retry(PGconn *c, int64_t saf_id, char *err, size_t errcap) {
  if (!c || saf_id <= 0) {
    db__set_err(err, errcap, "SAF retry: no connection or a bad SAF id");
    return DB_E_INVAL;
  }
  char id[24];
  snprintf(id, sizeof id, "%lld", (long long)saf_id);
  const char *p[] = {id};
  PGresult *r = run(c,
                    "WITH u AS (UPDATE switch.saf SET state = 'live',"
                    "  next_attempt_at = now(), retried_attempts = attempts,"
                    "  retries = retries + 1, dead_at = NULL,"
                    "  updated_at = now()"
                    " WHERE saf_id = $1 AND state = 'dead' RETURNING saf_id)"
                    " SELECT s.state, u.saf_id IS NOT NULL FROM switch.saf s"
                    " LEFT JOIN u USING (saf_id) WHERE s.saf_id = $1",
                    1, p);
  int rc = 0;
  if (PQresultStatus(r) != PGRES_TUPLES_OK)
    rc = db__sql_err(c, r, "SAF retry", err, errcap);
  else if (PQntuples(r) != 1) {
    db__set_err(err, errcap, "SAF retry: no SAF row %lld", (long long)saf_id);
    rc = DB_E_NOT_FOUND;
  } else if (strcmp(PQgetvalue(r, 0, 1), "t") != 0) {
    db__set_err(err, errcap,
                "SAF retry: row %lld is %.8s, not dead; only dead rows are "
                "retried",
                (long long)saf_id, PQgetvalue(r, 0, 0));
    rc = DB_E_CONFLICT;
  }
  PQclear(r);
  return rc;
}

int db_saf_purge(PGconn *c, int days, int64_t *purged, char *err,
                 size_t errcap) {
  if (purged)
    *purged = 0;
  if (!c || days < 1 || days > 36600) {
    db__set_err(err, errcap, "SAF purge: no connection, or days not 1..36600");
    return DB_E_INVAL;
  }
  char d[16];
  snprintf(d, sizeof d, "%d", days);
  const char *p[] = {d};
  PGresult *r = run(c,
                    "DELETE FROM switch.saf WHERE state IN ('acked', "
                    "'disarmed') AND updated_at < now() - make_interval("
                    "days => $1::integer)",
                    1, p);
  int rc = 0;
  if (PQresultStatus(r) != PGRES_COMMAND_OK)
    rc = db__sql_err(c, r, "SAF purge", err, errcap);
  else if (purged)
    *purged = strtoll(PQcmdTuples(r), NULL, 10);
  PQclear(r);
  return rc;
}

static int fill_row(PGresult *r, int i, db_saf_row_t *w) {
  memset(w, 0, sizeof *w);
  return get_i64(r, i, 0, -1, &w->saf_id) ||
                 get_text(r, i, 1, w->business_date, sizeof w->business_date) ||
                 get_node(r, i, 2, &w->node_id) ||
                 get_i64(r, i, 3, -1, &w->txn_id) ||
                 get_text(r, i, 4, w->kind, sizeof w->kind) ||
                 get_text(r, i, 5, w->mti, sizeof w->mti) ||
                 get_text(r, i, 6, w->link_id, sizeof w->link_id) ||
                 get_text(r, i, 7, w->state, sizeof w->state) ||
                 get_i32(r, i, 8, -1, &w->attempts) ||
                 get_i32(r, i, 9, -1, &w->retries) ||
                 get_i64(r, i, 10, NO_TIME, &w->next_attempt_us) ||
                 get_text(r, i, 11, w->owner, sizeof w->owner) ||
                 get_i64(r, i, 12, NO_TIME, &w->lease_until_us) ||
                 get_text(r, i, 13, w->last_response_code,
                          sizeof w->last_response_code) ||
                 get_i64(r, i, 14, NO_TIME, &w->created_us) ||
                 get_i64(r, i, 15, NO_TIME, &w->updated_us)
             ? -1
             : 0;
}

static const char
    list_sql
        [] =
            "SELECT saf_id, business_date, node_id, txn_id, kind, mti, link_id,"
            " state, attempts, retries, " US_OF(
                "next_attempt_at") ", owner,"
                                   " " US_OF(
                                       "lease_until") ", last_response_code,"
                                                      " " US_OF("created_at") ", " US_OF(
                                                          "updated_at") " FROM "
                                                                        "switch"
                                                                        ".saf"
                                                                        " WHERE"
                                                                        " $1::"
                                                                        "text "
                                                                        "IS "
                                                                        "NULL "
                                                                        "OR "
                                                                        "state "
                                                                        "= $1"
                                                                        " ORDER"
                                                                        " BY "
                                                                        "next_"
                                                                        "attemp"
                                                                        "t_at, "
                                                                        "saf_"
                                                                        "id "
                                                                        "LIMIT "
                                                                        "$2";

static int valid_state(const char *s) {
  static const char *const states[] = {"armed", "live",     "acked",
                                       "dead",  "disarmed", NULL};
  for (int i = 0; states[i]; i++)
    if (strcmp(s, states[i]) == 0)
      return 1;
  return 0;
}

int db_saf_list(PGconn *c, const char *state, long limit,
                int (*cb)(void *ctx, const db_saf_row_t *row), void *ctx,
                char *err, size_t errcap) {
  if (!c || !cb || limit < 1 || limit > 100000) {
    db__set_err(err, errcap,
                "SAF list: no connection, no callback or a limit "
                "not in 1..100000");
    return DB_E_INVAL;
  }
  if (state && !valid_state(state)) {
    db__set_err(err, errcap,
                "SAF list: state must be armed, live, acked, dead "
                "or disarmed");
    return DB_E_INVAL;
  }
  char lim[24];
  snprintf(lim, sizeof lim, "%ld", limit);
  const char *p[] = {state, lim};
  PGresult *r = run(c, list_sql, 2, p);
  int rc = 0;
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQnfields(r) != 16) {
    rc = db__sql_err(c, r, "SAF list", err, errcap);
    PQclear(r);
    return rc;
  }
  for (int i = 0; i < PQntuples(r); i++) {
    db_saf_row_t w;
    if (fill_row(r, i, &w)) {
      rc = bad_value(r, i, err, errcap);
      break;
    }
    if (cb(ctx, &w))
      break;
  }
  PQclear(r);
  return rc;
}

int db_saf_stats(PGconn *c, db_saf_stats_t *out, char *err, size_t errcap) {
  if (!c || !out) {
    db__set_err(err, errcap, "SAF stats: no connection or no output");
    return DB_E_INVAL;
  }
  PGresult *r = PQexec(
      c, "SELECT count(*) FILTER (WHERE state = 'armed'),"
         " count(*) FILTER (WHERE state = 'live'),"
         " count(*) FILTER (WHERE state = 'acked'),"
         " count(*) FILTER (WHERE state = 'dead'),"
         " count(*) FILTER (WHERE state = 'disarmed'),"
         " count(*) FILTER (WHERE state = 'live' AND next_attempt_at <= "
         "now()),"
         " " US_OF(
             "min(next_attempt_at) FILTER (WHERE state = 'live'"
             " AND next_attempt_at <= now())") ","
                                               " " US_OF(
                                                   "min(dead_at) FILTER "
                                                   "(WHERE state = "
                                                   "'dead')") ","
                                                              " " US_OF(
                                                                  "now("
                                                                  ")") " FROM "
                                                                       "switch."
                                                                       "saf");
  int rc = 0;
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
      PQnfields(r) != 9) {
    rc = db__sql_err(c, r, "SAF stats", err, errcap);
    PQclear(r);
    return rc;
  }
  db_saf_stats_t s;
  if (get_i64(r, 0, 0, 0, &s.armed) || get_i64(r, 0, 1, 0, &s.live) ||
      get_i64(r, 0, 2, 0, &s.acked) || get_i64(r, 0, 3, 0, &s.dead) ||
      get_i64(r, 0, 4, 0, &s.disarmed) || get_i64(r, 0, 5, 0, &s.due) ||
      get_i64(r, 0, 6, NO_TIME, &s.oldest_due_us) ||
      get_i64(r, 0, 7, NO_TIME, &s.oldest_dead_us) ||
      get_i64(r, 0, 8, NO_TIME, &s.now_us))
    rc = bad_value(r, 0, err, errcap);
  else
    *out = s;
  PQclear(r);
  return rc;
}
