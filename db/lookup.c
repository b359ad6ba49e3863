/*
 * lookup.c — the customer-service transaction lookup (lookup.h): find the
 * received events by RRN, by terminal and terminal STAN, or by PAN hash,
 * then read every event of those transactions, including adjustments
 * written into later business dates.  Also the input checks, the money
 * rendering and the outcome of a transaction that recon.c shares.
 *
 * Two queries per lookup, both with parameters: the received rows (at most
 * DB_LOOKUP_MAX_TXNS + 1, newest business date first, to tell "more"), and
 * the events of the ones kept, passed as arrays.  The select lists name
 * their columns: pan_enc and pan_hash are never read.
 */
#include "lookup.h"
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Input shapes                                                              */

static int is_digit(char ch) {
  return ch >= '0' && ch <= '9';
}

static int is_alnum(char ch) {
  return is_digit(ch) || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

static int all_digits(const char *s, size_t n) {
  if (!s || strlen(s) != n)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!is_digit(s[i]))
      return 0;
  return 1;
}

int db_lookup_check_rrn(const char *rrn) {
  if (!rrn || strlen(rrn) != 12)
    return DB_E_INVAL;
  for (size_t i = 0; i < 12; i++)
    if (!is_alnum(rrn[i]))
      return DB_E_INVAL;
  return 0;
}

int db_lookup_check_stan(const char *stan) {
  return all_digits(stan, 6) ? 0 : DB_E_INVAL;
}

int db_lookup_check_currency(const char *cur) {
  return all_digits(cur, 3) ? 0 : DB_E_INVAL;
}

int db_lookup_check_terminal_id(const char *tid) {
  size_t n = tid ? strlen(tid) : 0;
  int non_space = 0;
  if (n < 1 || n > 8)
    return DB_E_INVAL;
  for (size_t i = 0; i < n; i++) {
    if (!is_alnum(tid[i]) && tid[i] != ' ')
      return DB_E_INVAL;
    non_space |= tid[i] != ' ';
  }
  return non_space ? 0 : DB_E_INVAL;
}

static int num(const char *s, size_t n) {
  int v = 0;
  for (size_t i = 0; i < n; i++)
    v = v * 10 + (s[i] - '0');
  return v;
}

int db_lookup_check_date(const char *d) {
  static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (!d || strlen(d) != 10 || d[4] != '-' || d[7] != '-')
    return DB_E_INVAL;
  for (size_t i = 0; i < 10; i++)
    if (i != 4 && i != 7 && !is_digit(d[i]))
      return DB_E_INVAL;
  int y = num(d, 4), m = num(d + 5, 2), day = num(d + 8, 2);
  if (y < 2000 || y > 2999 || m < 1 || m > 12 || day < 1)
    return DB_E_INVAL;
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return day <= mdays[m - 1] + (m == 2 && leap) ? 0 : DB_E_INVAL;
}

/* ------------------------------------------------------------------------ */
/* Money                                                                     */

size_t db_money_decimal(int64_t minor, int exponent, char *out, size_t cap) {
  if (!out || minor < 0 || exponent < 0 || exponent > 4)
    return 0;
  int64_t scale = 1;
  for (int i = 0; i < exponent; i++)
    scale *= 10;
  int64_t whole = minor / scale, frac = minor % scale;
  int n = exponent == 0 ? snprintf(out, cap, "%lld", (long long)whole)
                        : snprintf(out, cap, "%lld.%0*lld", (long long)whole,
                                   exponent, (long long)frac);
  if (n < 0 || (size_t)n >= cap) {
    if (cap)
      out[0] = '\0';
    return 0;
  }
  return (size_t)n;
}

/* ------------------------------------------------------------------------ */
/* Outcome of a transaction                                                  */

void db_txn_outcome_init(db_txn_outcome_t *o, const char *kind) {
  memset(o, 0, sizeof *o);
  if (!kind)
    return;
  if (strcmp(kind, "purchase") == 0 || strcmp(kind, "cash") == 0 ||
      strcmp(kind, "completion") == 0) {
    o->settles_kind = 1;
    o->sign = 'D';
  } else if (strcmp(kind, "refund") == 0) {
    o->settles_kind = 1;
    o->sign = 'C';
  }
}

static void copy_text(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "");
}

void db_txn_outcome_add(db_txn_outcome_t *o, const char *event,
                        const char *state, int64_t amount,
                        const char *currency) {
  if (!o || !event || !state)
    return;
  copy_text(o->state, sizeof o->state, state);
  if (strcmp(event, "received") == 0) {
    o->requested = amount >= 0 ? amount : 0;
    copy_text(o->currency, sizeof o->currency, currency);
  } else if (strcmp(event, "response") == 0 || strcmp(event, "stand_in") == 0) {
    /* Only an answer on time approves: a late_response leaves the
     * transaction timed out, its reversal owed. */
    o->approved =
        strcmp(state, "approved") == 0 || strcmp(state, "stood_in") == 0;
    o->approved_amount = !o->approved ? 0 : amount >= 0 ? amount : o->requested;
    o->reversals = 0;
    o->reversed_amount = 0;
    if (currency && *currency)
      copy_text(o->currency, sizeof o->currency, currency);
  } else if (strcmp(event, "reversal_requested") == 0 && o->approved) {
    /* No amount: the whole remainder.  More than remains (bad data) is
     * capped, so settled never goes below zero. */
    int64_t left = o->approved_amount - o->reversed_amount;
    int64_t a = amount >= 0 && amount < left ? amount : left;
    o->reversals++;
    o->reversed_amount += a;
  }
}

int db_txn_outcome_counts(const db_txn_outcome_t *o) {
  return o->settles_kind && o->approved;
}

int64_t db_txn_outcome_settled(const db_txn_outcome_t *o) {
  return db_txn_outcome_counts(o) ? o->approved_amount - o->reversed_amount : 0;
}

/* ------------------------------------------------------------------------ */
/* Result reading                                                            */

/* Text of column col, "" when NULL; copied with bounds. */
static void col_text(PGresult *r, int row, int col, char *dst, size_t cap) {
  copy_text(dst, cap, PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col));
}

/* An integer column: *v, 0; NULL or malformed: -1 (v unchanged). */
static int col_i64(PGresult *r, int row, int col, int64_t *v) {
  if (PQgetisnull(r, row, col))
    return -1;
  const char *s = PQgetvalue(r, row, col);
  char *end;
  long long x = strtoll(s, &end, 10);
  if (end == s || *end)
    return -1;
  *v = x;
  return 0;
}

/* Reads a money quadruple: amount, sign, currency, alpha, exponent at
 * col..col+4. */
static void col_money(PGresult *r, int row, int col, db_money_t *m) {
  memset(m, 0, sizeof *m);
  int64_t amount, exp;
  if (col_i64(r, row, col, &amount) != 0 || amount < 0)
    return;
  const char *sign = PQgetvalue(r, row, col + 1);
  m->present = 1;
  m->minor = amount;
  m->sign = sign[0] == 'C' ? 'C' : 'D';
  col_text(r, row, col + 2, m->currency, sizeof m->currency);
  col_text(r, row, col + 3, m->alpha, sizeof m->alpha);
  m->exponent = col_i64(r, row, col + 4, &exp) == 0 && exp >= 0 && exp <= 4
                    ? (int)exp
                    : 0;
}

/* The received rows' columns (never pan_enc or pan_hash). */
#define RECEIVED_SELECT                                                        \
  "SELECT r.business_date::text, r.node_id, r.txn_id, r.txn_kind, r.mti, "     \
  "r.processing_code, r.amount_minor, r.sign, r.currency, cur.alpha_code, "    \
  "cur.exponent, r.rrn, r.terminal_id, r.merchant_id, r.batch_no, "            \
  "r.terminal_stan, r.stan, r.pan_masked "                                     \
  "FROM switch.journal_event r "                                               \
  "LEFT JOIN switch.currencies cur ON cur.numeric_code = r.currency "          \
  "WHERE r.event = 'received' "
#define RECEIVED_ORDER                                                         \
  " ORDER BY r.business_date DESC, r.node_id, r.txn_id LIMIT 21"
#define RECEIVED_NCOLS 18
_Static_assert(DB_LOOKUP_MAX_TXNS + 1 == 21, "RECEIVED_ORDER's LIMIT");

/* Tomorrow's date in UTC, whatever the session's TimeZone. */
#define DB__TOMORROW "((now() AT TIME ZONE 'UTC')::date + 1)"

static int read_received(PGresult *r, int row, db_lookup_txn_t *t) {
  int64_t node, txn, batch;
  if (col_i64(r, row, 1, &node) != 0 || node < 0 || node > 65535 ||
      col_i64(r, row, 2, &txn) != 0)
    return -1;
  memset(t, 0, sizeof *t);
  col_text(r, row, 0, t->business_date, sizeof t->business_date);
  t->node_id = (uint16_t)node;
  t->txn_id = txn;
  col_text(r, row, 3, t->txn_kind, sizeof t->txn_kind);
  col_text(r, row, 4, t->mti, sizeof t->mti);
  col_text(r, row, 5, t->processing_code, sizeof t->processing_code);
  col_money(r, row, 6, &t->requested);
  col_text(r, row, 11, t->rrn, sizeof t->rrn);
  col_text(r, row, 12, t->terminal_id, sizeof t->terminal_id);
  col_text(r, row, 13, t->merchant_id, sizeof t->merchant_id);
  t->batch_no =
      col_i64(r, row, 14, &batch) == 0 && batch >= 0 && batch <= 999999
          ? (int32_t)batch
          : -1;
  col_text(r, row, 15, t->terminal_stan, sizeof t->terminal_stan);
  col_text(r, row, 16, t->stan, sizeof t->stan);
  col_text(r, row, 17, t->pan_masked, sizeof t->pan_masked);
  return 0;
}

/* Fills out->txns from the received rows of r. */
static int take_received(PGresult *r, db_lookup_result_t *out, char *err,
                         size_t cap) {
  int rows = PQntuples(r);
  size_t found = rows > 0 ? (size_t)rows : 0;
  if (PQnfields(r) != RECEIVED_NCOLS) {
    db__set_err(err, cap, "lookup: unexpected result shape");
    return DB_E_SQL;
  }
  if (found == 0) {
    db__set_err(err, cap, "no transaction matches");
    return DB_E_NOT_FOUND;
  }
  out->truncated = found > DB_LOOKUP_MAX_TXNS;
  size_t keep = out->truncated ? DB_LOOKUP_MAX_TXNS : found;
  out->txns = calloc(keep, sizeof *out->txns);
  if (!out->txns) {
    db__set_err(err, cap, "lookup: out of memory");
    return DB_E_NOMEM;
  }
  for (size_t i = 0; i < keep; i++) {
    if (read_received(r, (int)i, &out->txns[out->n]) != 0) {
      db__set_err(err, cap, "lookup: malformed journal row %zu", i);
      return DB_E_SQL;
    }
    out->n++;
  }
  return 0;
}

/* The events of the transactions found, original date first, then any
 * adjustment written into a later date (orig_business_date set; the
 * partial index journal_event_adjustment serves that half). */
static const char *const EVENTS_SQL =
    "WITH k AS (SELECT * FROM unnest($1::date[], $2::int[], $3::bigint[]) "
    "           WITH ORDINALITY AS k(d, node, txn, ord)), "
    "e AS ("
    " SELECT k.ord, e.* FROM k JOIN switch.journal_event e"
    "   ON e.business_date = k.d AND e.node_id = k.node AND e.txn_id = k.txn"
    " UNION ALL"
    " SELECT k.ord, e.* FROM k JOIN switch.journal_event e"
    "   ON e.orig_business_date = k.d AND e.node_id = k.node"
    "  AND e.txn_id = k.txn AND e.business_date > k.d"
    "  WHERE e.orig_business_date IS NOT NULL) "
    "SELECT e.ord, e.business_date::text, e.event_no, e.event, e.state, "
    " to_char(e.recorded_at AT TIME ZONE 'UTC', "
    "         'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
    " e.response_code, e.reason, e.amount_minor, e.sign, e.currency, "
    " cur.alpha_code, cur.exponent, e.auth_code "
    "FROM e LEFT JOIN switch.currencies cur ON cur.numeric_code = e.currency "
    "ORDER BY e.ord, e.business_date, e.event_no";

/* Appends a text array element list "{a,b}" (values are digits or dates:
 * nothing to quote). */
static int append(char *buf, size_t cap, size_t *len, const char *s) {
  int n = snprintf(buf + *len, cap - *len, "%s", s);
  if (n < 0 || (size_t)n >= cap - *len)
    return -1;
  *len += (size_t)n;
  return 0;
}

/* Builds the three arrays of (date, node, txn) for EVENTS_SQL.  Only the
 * library's own values (dates read back from the server, integers) go in,
 * and they are passed as parameters, never into the SQL text. */
static int key_arrays(const db_lookup_result_t *res, char *d, char *n, char *t,
                      size_t cap) {
  size_t ld = 0, ln = 0, lt = 0;
  if (append(d, cap, &ld, "{") || append(n, cap, &ln, "{") ||
      append(t, cap, &lt, "{"))
    return -1;
  for (size_t i = 0; i < res->n; i++) {
    char num_buf[32];
    const db_lookup_txn_t *x = &res->txns[i];
    const char *sep = i ? "," : "";
    if (db_lookup_check_date(x->business_date) != 0 ||
        append(d, cap, &ld, sep) || append(d, cap, &ld, x->business_date))
      return -1;
    snprintf(num_buf, sizeof num_buf, "%s%u", sep, (unsigned)x->node_id);
    if (append(n, cap, &ln, num_buf))
      return -1;
    snprintf(num_buf, sizeof num_buf, "%s%lld", sep, (long long)x->txn_id);
    if (append(t, cap, &lt, num_buf))
      return -1;
  }
  return append(d, cap, &ld, "}") || append(n, cap, &ln, "}") ||
                 append(t, cap, &lt, "}")
             ? -1
             : 0;
}

static void read_event(PGresult *r, int row, db_lookup_event_t *ev, char *auth,
                       size_t auth_cap) {
  int64_t no = -1;
  memset(ev, 0, sizeof *ev);
  col_text(r, row, 1, ev->business_date, sizeof ev->business_date);
  ev->event_no = col_i64(r, row, 2, &no) == 0 && no >= 0 && no <= INT32_MAX
                     ? (int32_t)no
                     : -1;
  col_text(r, row, 3, ev->event, sizeof ev->event);
  col_text(r, row, 4, ev->state, sizeof ev->state);
  col_text(r, row, 5, ev->recorded_at, sizeof ev->recorded_at);
  col_text(r, row, 6, ev->response_code, sizeof ev->response_code);
  col_text(r, row, 7, ev->reason, sizeof ev->reason);
  col_money(r, row, 8, &ev->amount);
  if (!PQgetisnull(r, row, 13))
    col_text(r, row, 13, auth, auth_cap);
}

/* Sets a money value from o's amounts, in the currency of ref. */
static void money_from(db_money_t *m, int present, int64_t minor, char sign,
                       const db_money_t *ref) {
  memset(m, 0, sizeof *m);
  if (!present)
    return;
  *m = *ref;
  m->present = 1;
  m->minor = minor;
  m->sign = sign ? sign : ref->sign;
}

/* Summary fields derived from the timeline: state, response and auth
 * codes (the latest ones), approved, reversed and settled amounts. */
static void summarise(db_lookup_txn_t *t, const db_txn_outcome_t *o) {
  const db_money_t *ref = &t->requested;
  for (size_t i = 0; i < t->n_events; i++)
    if (t->events[i].amount.present &&
        strcmp(t->events[i].event, "received") != 0)
      ref = &t->events[i].amount;
  if (o->state[0])
    copy_text(t->state, sizeof t->state, o->state);
  money_from(&t->approved, o->approved, o->approved_amount, o->sign, ref);
  money_from(&t->reversed, o->approved && o->reversals > 0, o->reversed_amount,
             o->sign, ref);
  money_from(&t->settled, db_txn_outcome_counts(o), db_txn_outcome_settled(o),
             o->sign, ref);
}

static int take_events(PGresult *r, db_lookup_result_t *res, char *err,
                       size_t cap) {
  int rows = PQntuples(r);
  if (res->n == 0)
    return 0;
  if (PQnfields(r) != 14) {
    db__set_err(err, cap, "lookup: unexpected result shape");
    return DB_E_SQL;
  }
  db_txn_outcome_t *o = calloc(res->n, sizeof *o);
  if (!o) {
    db__set_err(err, cap, "lookup: out of memory");
    return DB_E_NOMEM;
  }
  for (size_t i = 0; i < res->n; i++)
    db_txn_outcome_init(&o[i], res->txns[i].txn_kind);
  for (int row = 0; row < rows; row++) {
    int64_t ord;
    if (col_i64(r, row, 0, &ord) != 0 || ord < 1 || (size_t)ord > res->n)
      continue;
    db_lookup_txn_t *t = &res->txns[ord - 1];
    db_lookup_event_t ev;
    read_event(r, row, &ev, t->auth_code, sizeof t->auth_code);
    db_txn_outcome_add(&o[ord - 1], ev.event, ev.state,
                       ev.amount.present ? ev.amount.minor : -1,
                       ev.amount.currency);
    copy_text(t->state, sizeof t->state, ev.state);
    if (ev.response_code[0])
      copy_text(t->response_code, sizeof t->response_code, ev.response_code);
    if (t->n_events < DB_LOOKUP_MAX_EVENTS)
      t->events[t->n_events++] = ev;
    else
      t->events_truncated = 1;
  }
  for (size_t i = 0; i < res->n; i++)
    summarise(&res->txns[i], &o[i]);
  free(o);
  return 0;
}

static int load_events(PGconn *c, db_lookup_result_t *res, char *err,
                       size_t cap) {
  /* Each element at most 20 characters and a comma. */
  size_t acap = 8 + res->n * 24;
  char *d = malloc(acap), *n = malloc(acap), *t = malloc(acap);
  int rc = 0;
  if (!d || !n || !t) {
    db__set_err(err, cap, "lookup: out of memory");
    rc = DB_E_NOMEM;
  } else if (key_arrays(res, d, n, t, acap) != 0) {
    db__set_err(err, cap, "lookup: malformed transaction key");
    rc = DB_E_SQL;
  } else {
    const char *params[3] = {d, n, t};
    PGresult *r = PQexecParams(c, EVENTS_SQL, 3, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
      rc = db__sql_err(c, r, "reading the events failed", err, cap);
    else
      rc = take_events(r, res, err, cap);
    PQclear(r);
  }
  free(d);
  free(n);
  free(t);
  return rc;
}

void db_lookup_result_free(db_lookup_result_t *r) {
  if (!r)
    return;
  free(r->txns);
  memset(r, 0, sizeof *r);
}

/* Runs the received-rows query (sql with nparams text or binary
 * parameters), then reads the events. */
static int run_lookup(PGconn *c, const char *sql, int nparams,
                      const char *const *values, const int *lengths,
                      const int *formats, db_lookup_result_t *out, char *err,
                      size_t cap) {
  PGresult *r =
      PQexecParams(c, sql, nparams, NULL, values, lengths, formats, 0);
  int rc =
      PQresultStatus(r) == PGRES_TUPLES_OK
          ? take_received(r, out, err, cap)
          : db__sql_err(c, r, "looking up the transaction failed", err, cap);
  PQclear(r);
  if (rc == 0)
    rc = load_events(c, out, err, cap);
  if (rc != 0)
    db_lookup_result_free(out);
  return rc;
}

static int start(PGconn *c, db_lookup_result_t *out, char *err, size_t cap) {
  if (err && cap)
    err[0] = '\0';
  if (!out) {
    db__set_err(err, cap, "lookup: no result given");
    return DB_E_INVAL;
  }
  memset(out, 0, sizeof *out);
  if (!c || PQstatus(c) != CONNECTION_OK) {
    db__set_err(err, cap, "lookup: no connection to the database");
    return DB_E_CONNECT;
  }
  return 0;
}

int db_lookup_by_rrn(PGconn *c, const char *rrn, const char *date,
                     db_lookup_result_t *out, char *err, size_t cap) {
  int rc = start(c, out, err, cap);
  if (rc)
    return rc;
  if (db_lookup_check_rrn(rrn) != 0) {
    db__set_err(err, cap, "invalid RRN: it must be 12 letters or digits");
    return DB_E_INVAL;
  }
  if (date && db_lookup_check_date(date) != 0) {
    db__set_err(err, cap, "invalid date: expected YYYY-MM-DD");
    return DB_E_INVAL;
  }
  /* rrn IS NOT NULL repeats the index's predicate so the planner can use
   * journal_event_rrn on every partition (newest first, LIMIT). */
  const char *sql = RECEIVED_SELECT
      "AND r.rrn IS NOT NULL AND r.rrn = $1 "
      "AND ($2::date IS NULL OR r.business_date = $2::date)" RECEIVED_ORDER;
  const char *params[2] = {rrn, date};
  return run_lookup(c, sql, 2, params, NULL, NULL, out, err, cap);
}

int db_lookup_by_terminal_stan(PGconn *c, const char *tid, const char *stan,
                               const char *from, const char *to,
                               db_lookup_result_t *out, char *err, size_t cap) {
  int rc = start(c, out, err, cap);
  if (rc)
    return rc;
  if (db_lookup_check_terminal_id(tid) != 0) {
    db__set_err(err, cap,
                "invalid terminal id: 1 to 8 letters, digits or spaces");
    return DB_E_INVAL;
  }
  if (db_lookup_check_stan(stan) != 0) {
    db__set_err(err, cap, "invalid STAN: it must be 6 digits");
    return DB_E_INVAL;
  }
  if ((from && db_lookup_check_date(from) != 0) ||
      (to && db_lookup_check_date(to) != 0)) {
    db__set_err(err, cap, "invalid date: expected YYYY-MM-DD");
    return DB_E_INVAL;
  }
  /* The bounds are computed once (a CTE) so partition pruning sees
   * constants at execution time. */
  const char *sql =
      "WITH b AS (SELECT coalesce($4::date, " DB__TOMORROW ") AS hi, "
      "coalesce($3::date, coalesce($4::date, " DB__TOMORROW
      ") - 7) AS lo) " RECEIVED_SELECT
      "AND r.terminal_id = $1 AND r.terminal_stan = $2 "
      "AND r.business_date BETWEEN (SELECT lo FROM b) AND (SELECT hi FROM "
      "b)" RECEIVED_ORDER;
  const char *params[4] = {tid, stan, from, to};
  return run_lookup(c, sql, 4, params, NULL, NULL, out, err, cap);
}

int db_lookup_by_pan_hash(PGconn *c, const uint8_t hash[32], int32_t key_ver,
                          const char *date, db_lookup_result_t *out, char *err,
                          size_t cap) {
  int rc = start(c, out, err, cap);
  if (rc)
    return rc;
  if (!hash || key_ver <= 0) {
    db__set_err(err, cap, "invalid PAN hash: 32 bytes and a key version > 0");
    return DB_E_INVAL;
  }
  if (db_lookup_check_date(date) != 0) {
    db__set_err(err, cap, "invalid date: expected YYYY-MM-DD");
    return DB_E_INVAL;
  }
  char ver[16];
  snprintf(ver, sizeof ver, "%d", (int)key_ver);
  const char *sql =
      RECEIVED_SELECT "AND r.pan_hash IS NOT NULL AND r.pan_hash = $1 "
                      "AND r.pan_hash_key_ver = $2::int "
                      "AND r.business_date = $3::date" RECEIVED_ORDER;
  const char *params[3] = {(const char *)hash, ver, date};
  const int lengths[3] = {32, 0, 0};
  const int formats[3] = {1, 0, 0};
  return run_lookup(c, sql, 3, params, lengths, formats, out, err, cap);
}
