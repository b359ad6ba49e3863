/*
 * settle.c — closes a business date, settles it and writes its clearing
 * file and CSV report (settle.h, docs/settlement.md).
 *
 * Order of work in db_settle: BEGIN (READ COMMITTED); make and lock the
 * date's row in switch.business_dates.  A closed date: recompute with the
 * recorded fee plans, compare with the stored totals and SHA-256, repair
 * missing or altered files, insert nothing.  An open date: close the
 * journal partition FIRST (its ACCESS EXCLUSIVE lock waits for writers in
 * flight and holds new ones off), so every statement after it sees the
 * final content of the day and nothing can slip in between the read and
 * the close; load what settles; refuse while anything is pending; compute
 * totals; write the files (temporary name, fsync, rename, fsync of the
 * folder); insert the totals; record the SHA-256; COMMIT.  A crash before
 * the COMMIT leaves the date open without totals: the next run writes the
 * same bytes again (they depend only on the journal, the reference data
 * and the date) and records them.
 *
 * What settles (docs/transaction-model.md): a purchase, cash, refund or
 * completion whose latest state is approved, stood_in, reversal_pending or
 * reversed and that has an approving event (response -> approved, or
 * stand_in -> stood_in), at the approving event's amount minus what its
 * reversal_requested events of the same date reversed; nothing when that
 * is zero.  A reversal_requested event written into this date for an
 * original of a closed date (orig_business_date) settles here as an
 * adjustment of the opposite sign, for the amount reversed.
 */
#include "settle.h"
#include "util.h"

#include "clearing.pb-c.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Pieces: fee, varint, decimal rendering, dates.
 */

int64_t db_settle_fee_pct(int64_t base, int32_t bps) {
  if (base < 0 || bps < 0 || bps > 10000)
    return -1;
  /* base * bps / 10000 = q * bps + r * bps / 10000 with q, r the quotient
   * and remainder of base / 10000: q * bps <= base and r * bps < 10^8, so
   * nothing overflows, and q * bps is whole, so rounding the second term
   * half up rounds the whole half up. */
  int64_t q = base / 10000, r = base % 10000;
  return q * bps + (r * bps + 5000) / 10000;
}

size_t db_varint_put(uint64_t v, uint8_t out[10]) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}

int db_varint_get(const uint8_t *p, size_t n, uint64_t *v) {
  uint64_t x = 0;
  for (size_t i = 0; i < 10; i++) {
    if (i >= n)
      return 0;
    uint64_t b = p[i] & 0x7f;
    /* The tenth byte holds only bit 63. */
    if (i == 9 && (p[i] & 0xfe))
      return -1;
    x |= b << (7 * i);
    if (!(p[i] & 0x80)) {
      *v = x;
      return (int)i + 1;
    }
  }
  return -1;
}

int db_format_minor(int64_t minor, int exponent, char *out, size_t cap) {
  static const uint64_t pow10[] = {1, 10, 100, 1000, 10000};
  if (exponent < 0 || exponent > 4 || !out)
    return -1;
  int neg = minor < 0;
  uint64_t mag = neg ? (uint64_t)(-(minor + 1)) + 1 : (uint64_t)minor;
  uint64_t whole = mag / pow10[exponent], frac = mag % pow10[exponent];
  int n = exponent == 0
              ? snprintf(out, cap, "%s%" PRIu64, neg ? "-" : "", whole)
              : snprintf(out, cap, "%s%" PRIu64 ".%0*" PRIu64, neg ? "-" : "",
                         whole, exponent, frac);
  return n < 0 || (size_t)n >= cap ? -1 : n;
}

static int is_leap(int y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m) {
  static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return d[m - 1] + (m == 2 && is_leap(y));
}

/* y-m-d as YYYY-MM-DD (y in 1..9999, as checked by the callers). */
static void fmt_date(char out[11], int y, int m, int d) {
  const int v[3] = {y, m, d}, w[3] = {4, 2, 2};
  char *p = out;
  for (int i = 0; i < 3; i++) {
    if (i)
      *p++ = '-';
    for (int k = w[i] - 1, x = v[i]; k >= 0; k--, x /= 10)
      p[k] = (char)('0' + x % 10);
    p += w[i];
  }
  *p = '\0';
}

static int parse_date(const char *s, int *y, int *m, int *d) {
  if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
    return -1;
  for (int i = 0; i < 10; i++)
    if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
      return -1;
  *y = atoi(s);
  *m = atoi(s + 5);
  *d = atoi(s + 8);
  if (*y < 1 || *m < 1 || *m > 12 || *d < 1 || *d > month_days(*y, *m))
    return -1;
  return 0;
}

int db_date_add_days(const char *date, int days, char out[11]) {
  int y, m, d;
  if (parse_date(date, &y, &m, &d) != 0 || days < 0 || days > 3660)
    return -1;
  /* At most ten years of single steps: simple and obviously right. */
  for (int i = 0; i < days; i++) {
    if (++d > month_days(y, m)) {
      d = 1;
      if (++m > 12) {
        m = 1;
        y++;
      }
    }
  }
  if (y > 9999)
    return -1;
  fmt_date(out, y, m, d);
  return 0;
}

/* ------------------------------------------------------------------------
 * State of one run.
 */

typedef struct {
  int32_t bps;
  int64_t fixed;
  char currency[4];
  int days;
} plan_t;

/* One settled transaction or adjustment. */
typedef struct {
  char business_date[11]; /* the original's */
  uint32_t node_id;
  int64_t txn_id;
  int adjustment;
  char txn_kind[11], mti[5], pcode[7];
  char merchant[16], terminal[9], issuer[33];
  int32_t batch_no;
  char rrn[13], stan[7];
  char currency[4], alpha[4];
  int exponent;
  char sign[2]; /* of amount: "D" or "C" */
  int64_t amount, approved, reversed;
  char pan_masked[20];
  uint8_t pan_hash[32];
  size_t pan_hash_len;
  int32_t pan_hash_ver;
  uint8_t pan_enc[128];
  size_t pan_enc_len;
  int32_t pan_enc_ver;
  plan_t plan;
} item_t;

/* One row of switch.settlement_totals. */
typedef struct {
  char level[9]; /* issuer, merchant, terminal */
  char key[33];
  char currency[4], alpha[4];
  int exponent;
  int64_t dc, dm, cc, cm, fee, net; /* net signed: > 0 is 'D' */
  char value_date[11];              /* merchant rows only */
  plan_t plan;                      /* merchant rows only */
} total_t;

typedef struct {
  uint8_t *p;
  size_t n, cap;
} buf_t;

typedef struct {
  char date[11]; /* YYYY-MM-DD, checked */
  char *err;
  size_t errcap;
  item_t *items;
  size_t n, cap;
  total_t *totals;
  size_t nt;
  total_t *stored;
  size_t ns;
  db_settle_currency_t cur[DB_SETTLE_MAX_CURRENCIES];
  size_t ncur;
  int64_t pending, adjustments, merchants, records;
  char first_pending[120];
  buf_t pb, csv;
  char sha_pb[65], sha_csv[65];
} settle_t;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
set_err(settle_t *s, const char *fmt, ...) {
  if (!s->err || !s->errcap)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->err, s->errcap, fmt, ap);
  va_end(ap);
}

/* The server's message for r (or the connection's) in one line. */
static int sql_fail(settle_t *s, PGconn *c, const PGresult *r,
                    const char *what) {
  const char *m = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  if (!m)
    m = PQerrorMessage(c);
  size_t len = strcspn(m, "\n");
  set_err(s, "ERROR:  %s: %.*s (SQLSTATE %s)", what, (int)len, m,
          st ? st : "none");
  return DB_E_SQL;
}

static void settle_free(settle_t *s) {
  free(s->items);
  free(s->totals);
  free(s->stored);
  free(s->pb.p);
  free(s->csv.p);
}

/* ------------------------------------------------------------------------
 * Reading result rows; every value is checked (the journal is input).
 */

static const char *val(const PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static int get_i64(const PGresult *r, int row, int col, int64_t *out) {
  const char *v = val(r, row, col);
  if (!v || !*v)
    return -1;
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || *end)
    return -1;
  *out = (int64_t)x;
  return 0;
}

/* Copies a text column; NULL becomes "".  -1 if it does not fit. */
static int get_text(const PGresult *r, int row, int col, char *dst,
                    size_t cap) {
  const char *v = val(r, row, col);
  size_t n = v ? strlen(v) : 0;
  if (n >= cap)
    return -1;
  memcpy(dst, v ? v : "", n);
  dst[n] = '\0';
  return 0;
}

/* Decodes a hex column (encode(x, 'hex')); NULL gives length 0. */
static int get_hex(const PGresult *r, int row, int col, uint8_t *dst,
                   size_t cap, size_t *len) {
  const char *v = val(r, row, col);
  *len = 0;
  return v ? db__unhex(v, dst, cap, len) : 0;
}

static int is_true(const PGresult *r, int row, int col) {
  const char *v = val(r, row, col);
  return v && v[0] == 't';
}

/* ------------------------------------------------------------------------
 * Loading what settles.
 */

/* The received event's columns (alias r), its currency (c) and merchant
 * (m); both queries below return them from column REC on. */
#define REC_COLS                                                               \
  "r.event_no IS NOT NULL, r.txn_kind, r.mti, r.processing_code, "             \
  "r.amount_minor, r.sign, r.currency, c.alpha_code, c.exponent, "             \
  "r.merchant_id, r.terminal_id, r.issuer_id, r.batch_no, r.rrn, r.stan, "     \
  "r.pan_masked, encode(r.pan_hash, 'hex'), r.pan_hash_key_ver, "              \
  "encode(r.pan_enc, 'hex'), r.pan_enc_key_ver, m.merchant_id IS NOT NULL, "   \
  "m.fee_bps, m.fee_fixed_minor, m.fee_currency, m.settlement_days"
#define REC_JOINS                                                              \
  " LEFT JOIN switch.currencies c ON c.numeric_code = r.currency"              \
  " LEFT JOIN switch.merchants m ON m.merchant_id = r.merchant_id"
#define REC 5
#define NREC 25

/* The approving event's amount and what this date's reversals took, of
 * the events of e (the rows of one transaction). */
#define APPROVED_AGG                                                           \
  "(array_agg(e.amount_minor ORDER BY e.event_no DESC) FILTER (WHERE "         \
  "(e.event = 'response' AND e.state = 'approved') OR "                        \
  "(e.event = 'stand_in' AND e.state = 'stood_in')))[1]"
#define REVERSED_AGG                                                           \
  "coalesce(sum(e.amount_minor) FILTER (WHERE "                                \
  "e.event = 'reversal_requested'), 0)::bigint"

/* Every transaction of the date that is pending or may settle. */
static const char q_originals[] =
    "WITH t AS ("
    " SELECT e.node_id, e.txn_id,"
    "  (array_agg(e.state ORDER BY e.event_no DESC))[1] AS state, " APPROVED_AGG
    " AS approved, " REVERSED_AGG " AS reversed"
    " FROM switch.journal_event e"
    " WHERE e.business_date = $1 AND e.orig_business_date IS NULL"
    " GROUP BY e.node_id, e.txn_id)"
    " SELECT t.node_id, t.txn_id, t.state, t.approved, t.reversed, " REC_COLS
    " FROM t LEFT JOIN switch.journal_event r ON r.business_date = $1"
    " AND r.node_id = t.node_id AND r.txn_id = t.txn_id AND r.event_no = 0"
    " AND r.event = 'received'" REC_JOINS
    " WHERE t.state IN ('received', 'armed', 'forwarded')"
    " OR (t.approved IS NOT NULL AND t.state IN ('approved', 'stood_in',"
    " 'reversal_pending', 'reversed'))"
    " ORDER BY t.node_id, t.txn_id";

/* Late reversals written into the date for originals of earlier dates,
 * with the original's approval and same-date reversals. */
static const char q_adjustments[] =
    "SELECT a.node_id, a.txn_id, a.orig_business_date::text, o.approved,"
    " o.reversed, " REC_COLS ", a.amount_minor, a.currency"
    " FROM switch.journal_event a"
    " LEFT JOIN switch.journal_event r ON r.business_date ="
    " a.orig_business_date AND r.node_id = a.node_id AND r.txn_id = a.txn_id"
    " AND r.event_no = 0 AND r.event = 'received'" REC_JOINS
    " LEFT JOIN LATERAL (SELECT " APPROVED_AGG " AS approved, " REVERSED_AGG
    " AS reversed FROM switch.journal_event e"
    " WHERE e.business_date = a.orig_business_date AND e.node_id = a.node_id"
    " AND e.txn_id = a.txn_id AND e.orig_business_date IS NULL) o ON true"
    " WHERE a.business_date = $1 AND a.orig_business_date IS NOT NULL"
    " AND a.event = 'reversal_requested'"
    " ORDER BY a.node_id, a.txn_id, a.event_no";

static int settles_kind(const char *k) {
  return strcmp(k, "purchase") == 0 || strcmp(k, "cash") == 0 ||
         strcmp(k, "refund") == 0 || strcmp(k, "completion") == 0;
}

static int is_pending(const char *state) {
  return strcmp(state, "received") == 0 || strcmp(state, "armed") == 0 ||
         strcmp(state, "forwarded") == 0;
}

static item_t *new_item(settle_t *s) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 256;
    item_t *p = realloc(s->items, cap * sizeof *p);
    if (!p)
      return NULL;
    s->items = p;
    s->cap = cap;
  }
  item_t *it = &s->items[s->n];
  memset(it, 0, sizeof *it);
  return it;
}

/* Fills it from the received columns at b; what names the transaction. */
static int fill_received(settle_t *s, const PGresult *r, int row, int b,
                         item_t *it, const char *what) {
  int64_t exp, bps, fixed, days, v;
  if (get_text(r, row, b + 1, it->txn_kind, sizeof it->txn_kind) ||
      get_text(r, row, b + 2, it->mti, sizeof it->mti) ||
      get_text(r, row, b + 3, it->pcode, sizeof it->pcode) ||
      get_text(r, row, b + 5, it->sign, sizeof it->sign) ||
      get_text(r, row, b + 6, it->currency, sizeof it->currency) ||
      get_text(r, row, b + 7, it->alpha, sizeof it->alpha) ||
      get_text(r, row, b + 9, it->merchant, sizeof it->merchant) ||
      get_text(r, row, b + 10, it->terminal, sizeof it->terminal) ||
      get_text(r, row, b + 11, it->issuer, sizeof it->issuer) ||
      get_text(r, row, b + 13, it->rrn, sizeof it->rrn) ||
      get_text(r, row, b + 14, it->stan, sizeof it->stan) ||
      get_text(r, row, b + 15, it->pan_masked, sizeof it->pan_masked) ||
      get_hex(r, row, b + 16, it->pan_hash, sizeof it->pan_hash,
              &it->pan_hash_len) ||
      get_hex(r, row, b + 18, it->pan_enc, sizeof it->pan_enc,
              &it->pan_enc_len)) {
    set_err(s, "%s: a column of its received event is malformed", what);
    return DB_E_INTEGRITY;
  }
  if (!it->merchant[0] || !it->terminal[0] || !it->currency[0] ||
      (it->sign[0] != 'D' && it->sign[0] != 'C') ||
      get_i64(r, row, b + 8, &exp) || exp < 0 || exp > 4) {
    set_err(s,
            "%s: its received event lacks a merchant, terminal, currency "
            "or sign, so it cannot settle",
            what);
    return DB_E_INTEGRITY;
  }
  it->exponent = (int)exp;
  it->batch_no = get_i64(r, row, b + 12, &v) == 0 ? (int32_t)v : -1;
  it->pan_hash_ver = get_i64(r, row, b + 17, &v) == 0 ? (int32_t)v : 0;
  it->pan_enc_ver = get_i64(r, row, b + 19, &v) == 0 ? (int32_t)v : 0;
  if (!is_true(r, row, b + 20)) {
    set_err(s,
            "merchant \"%s\" of %s has no row in switch.merchants\n"
            "HINT:  restore the merchant's reference row (a retired merchant "
            "keeps its row with status closed), then settle again",
            it->merchant, what);
    return DB_E_NOT_FOUND;
  }
  if (get_i64(r, row, b + 21, &bps) || get_i64(r, row, b + 22, &fixed) ||
      get_i64(r, row, b + 24, &days) ||
      get_text(r, row, b + 23, it->plan.currency, sizeof it->plan.currency) ||
      bps < 0 || bps > 10000 || fixed < 0 || days < 0 || days > 30) {
    set_err(s, "merchant \"%s\": its fee plan is malformed", it->merchant);
    return DB_E_INTEGRITY;
  }
  it->plan.bps = (int32_t)bps;
  it->plan.fixed = fixed;
  it->plan.days = (int)days;
  return 0;
}

static void name_txn(char *out, size_t cap, const PGresult *r, int row,
                     const char *date) {
  snprintf(out, cap, "transaction node %s txn_id %s of %s",
           val(r, row, 0) ? val(r, row, 0) : "?",
           val(r, row, 1) ? val(r, row, 1) : "?", date);
}

/* The key columns every row has: node_id, txn_id. */
static int get_key(const PGresult *r, int row, item_t *it) {
  int64_t node;
  if (get_i64(r, row, 0, &node) || node < 0 || node > 65535 ||
      get_i64(r, row, 1, &it->txn_id))
    return -1;
  it->node_id = (uint32_t)node;
  return 0;
}

static int add_original(settle_t *s, const PGresult *r, int row) {
  char what[100];
  name_txn(what, sizeof what, r, row, s->date);
  const char *state = val(r, row, 2);
  if (!state) {
    set_err(s, "%s has no state", what);
    return DB_E_INTEGRITY;
  }
  if (is_pending(state)) {
    if (s->pending++ == 0)
      snprintf(s->first_pending, sizeof s->first_pending, "%s (state %s)", what,
               state);
    return 0;
  }
  if (!is_true(r, row, REC)) {
    set_err(s, "%s has no received event (event_no 0)", what);
    return DB_E_INTEGRITY;
  }
  const char *kind = val(r, row, REC + 1);
  if (!kind || !settles_kind(kind))
    return 0;
  item_t *it = new_item(s);
  if (!it)
    return DB_E_NOMEM;
  int rc = fill_received(s, r, row, REC, it, what);
  if (rc)
    return rc;
  if (get_key(r, row, it) || get_i64(r, row, 3, &it->approved) ||
      get_i64(r, row, 4, &it->reversed) || it->approved < 0 ||
      it->reversed < 0 || it->reversed > it->approved) {
    set_err(s,
            "%s: its reversals (%s) exceed its approved amount (%s), or "
            "an amount is malformed",
            what, val(r, row, 4) ? val(r, row, 4) : "NULL",
            val(r, row, 3) ? val(r, row, 3) : "NULL");
    return DB_E_INTEGRITY;
  }
  it->amount = it->approved - it->reversed;
  if (it->amount == 0)
    return 0; /* fully reversed: nothing settles */
  memcpy(it->business_date, s->date, 11);
  s->n++;
  return 0;
}

static int add_adjustment(settle_t *s, const PGresult *r, int row) {
  char what[160];
  snprintf(what, sizeof what,
           "late reversal node %s txn_id %s (original of %s)",
           val(r, row, 0) ? val(r, row, 0) : "?",
           val(r, row, 1) ? val(r, row, 1) : "?",
           val(r, row, 2) ? val(r, row, 2) : "?");
  if (!is_true(r, row, REC)) {
    set_err(s, "%s: the original has no received event in its date", what);
    return DB_E_INTEGRITY;
  }
  const char *kind = val(r, row, REC + 1);
  /* An original that settled nothing leaves nothing to adjust. */
  if (!kind || !settles_kind(kind) || !val(r, row, 3))
    return 0;
  item_t *it = new_item(s);
  if (!it)
    return DB_E_NOMEM;
  int rc = fill_received(s, r, row, REC, it, what);
  if (rc)
    return rc;
  int64_t done;
  char cur[4];
  if (get_key(r, row, it) || get_i64(r, row, 3, &it->approved) ||
      get_i64(r, row, 4, &done) || get_i64(r, row, REC + NREC, &it->amount) ||
      get_text(r, row, REC + NREC + 1, cur, sizeof cur) ||
      get_text(r, row, 2, it->business_date, sizeof it->business_date) ||
      it->amount < 0 || done < 0 || it->amount > it->approved - done ||
      strcmp(cur, it->currency) != 0) {
    set_err(s,
            "%s: the amount reversed is missing, in another currency, or "
            "above what the original settled",
            what);
    return DB_E_INTEGRITY;
  }
  if (it->amount == 0)
    return 0;
  it->adjustment = 1;
  it->reversed = it->amount;
  it->sign[0] = it->sign[0] == 'D' ? 'C' : 'D';
  s->adjustments++;
  s->n++;
  return 0;
}

static int run_query(settle_t *s, PGconn *c, const char *sql,
                     int (*add)(settle_t *, const PGresult *, int),
                     const char *what) {
  const char *params[1] = {s->date};
  PGresult *r = PQexecParams(c, sql, 1, NULL, params, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    int rc = sql_fail(s, c, r, what);
    PQclear(r);
    return rc;
  }
  int rc = 0;
  for (int i = 0, n = PQntuples(r); i < n && rc == 0; i++)
    rc = add(s, r, i);
  PQclear(r);
  return rc;
}

static int cmp_items(const void *a, const void *b) {
  const item_t *x = a, *y = b;
  int d = strcmp(x->merchant, y->merchant);
  if (!d)
    d = strcmp(x->terminal, y->terminal);
  if (!d)
    d = strcmp(x->business_date, y->business_date);
  if (!d)
    d = (x->node_id > y->node_id) - (x->node_id < y->node_id);
  if (!d)
    d = (x->txn_id > y->txn_id) - (x->txn_id < y->txn_id);
  if (!d)
    d = x->adjustment - y->adjustment;
  return d;
}

static int load_items(settle_t *s, PGconn *c) {
  int rc = run_query(s, c, q_originals, add_original, "reading the journal");
  if (!rc)
    rc = run_query(s, c, q_adjustments, add_adjustment,
                   "reading late reversals");
  if (!rc && s->n > 1)
    qsort(s->items, s->n, sizeof *s->items, cmp_items);
  return rc;
}

/* ------------------------------------------------------------------------
 * Totals per merchant, terminal and issuer and currency.
 */

static int add64(int64_t *acc, int64_t v) {
  return __builtin_add_overflow(*acc, v, acc) ? -1 : 0;
}

static const char *key_of(const item_t *it, const char *level) {
  return level[0] == 'm'   ? it->merchant
         : level[0] == 't' ? it->terminal
                           : it->issuer;
}

typedef struct {
  const char *key;
  const item_t *it;
} keyed_t;

static int cmp_keyed(const void *a, const void *b) {
  const keyed_t *x = a, *y = b;
  int d = strcmp(x->key, y->key);
  return d ? d : strcmp(x->it->currency, y->it->currency);
}

/* The fee of one merchant and currency (docs/settlement.md): the
 * percentage on the day's settled debit transactions (adjustments and
 * credits neither charged nor refunded), plus the fixed amount per settled
 * debit transaction when the currency is the fee currency. */
static int merchant_fee(const total_t *t, int64_t base, int64_t ndebits,
                        int64_t *fee) {
  *fee = db_settle_fee_pct(base, t->plan.bps);
  if (*fee < 0)
    return -1;
  if (strcmp(t->currency, t->plan.currency) != 0)
    return 0;
  int64_t fixed;
  if (__builtin_mul_overflow(t->plan.fixed, ndebits, &fixed))
    return -1;
  return add64(fee, fixed);
}

/* Sums items g[0..n) (one key and currency) into t. */
static int sum_group(settle_t *s, const char *level, const keyed_t *g, size_t n,
                     total_t *t) {
  memset(t, 0, sizeof *t);
  const item_t *f = g[0].it;
  snprintf(t->level, sizeof t->level, "%s", level);
  snprintf(t->key, sizeof t->key, "%s", g[0].key);
  memcpy(t->currency, f->currency, 4);
  memcpy(t->alpha, f->alpha, 4);
  t->exponent = f->exponent;
  int64_t base = 0, ndebits = 0;
  for (size_t i = 0; i < n; i++) {
    const item_t *it = g[i].it;
    int bad = it->sign[0] == 'D' ? add64(&t->dm, it->amount)
                                 : add64(&t->cm, it->amount);
    if (it->sign[0] == 'D')
      t->dc++;
    else
      t->cc++;
    if (it->sign[0] == 'D' && !it->adjustment) {
      bad |= add64(&base, it->amount);
      ndebits++;
    }
    if (bad)
      goto overflow;
  }
  if (level[0] == 'm') {
    t->plan = f->plan;
    if (merchant_fee(t, base, ndebits, &t->fee) ||
        db_date_add_days(s->date, t->plan.days, t->value_date))
      goto overflow;
  }
  if (__builtin_sub_overflow(t->dm, t->cm, &t->net) ||
      __builtin_sub_overflow(t->net, t->fee, &t->net))
    goto overflow;
  return 0;
overflow:
  set_err(s, "%s \"%s\" currency %s: the totals overflow 64 bits", level,
          t->key, t->currency);
  return DB_E_INTEGRITY;
}

static int build_level(settle_t *s, const char *level) {
  if (s->n == 0)
    return 0;
  keyed_t *k = malloc(s->n * sizeof *k);
  if (!k)
    return DB_E_NOMEM;
  for (size_t i = 0; i < s->n; i++) {
    k[i].it = &s->items[i];
    k[i].key = key_of(&s->items[i], level);
  }
  qsort(k, s->n, sizeof *k, cmp_keyed);
  int rc = 0;
  for (size_t i = 0, j; i < s->n && !rc; i = j) {
    for (j = i + 1; j < s->n && cmp_keyed(&k[i], &k[j]) == 0; j++) {
    }
    rc = sum_group(s, level, k + i, j - i, &s->totals[s->nt]);
    if (!rc)
      s->nt++;
  }
  free(k);
  return rc;
}

static int cmp_totals(const void *a, const void *b) {
  const total_t *x = a, *y = b;
  int d = strcmp(x->level, y->level);
  if (!d)
    d = strcmp(x->key, y->key);
  return d ? d : strcmp(x->currency, y->currency);
}

static int cmp_currency(const void *a, const void *b) {
  return strcmp(((const db_settle_currency_t *)a)->currency,
                ((const db_settle_currency_t *)b)->currency);
}

/* The date's totals per currency, from the merchant rows (every item has
 * a merchant, so they cover everything, fees included). */
static int sum_currencies(settle_t *s) {
  for (size_t i = 0; i < s->nt; i++) {
    const total_t *t = &s->totals[i];
    if (t->level[0] != 'm')
      continue;
    s->merchants++;
    size_t k = 0;
    while (k < s->ncur && strcmp(s->cur[k].currency, t->currency) != 0)
      k++;
    if (k == s->ncur) {
      if (k == DB_SETTLE_MAX_CURRENCIES) {
        set_err(s, "more than %d currencies in one date",
                DB_SETTLE_MAX_CURRENCIES);
        return DB_E_INTEGRITY;
      }
      memset(&s->cur[k], 0, sizeof s->cur[k]);
      memcpy(s->cur[k].currency, t->currency, 4);
      memcpy(s->cur[k].alpha, t->alpha, 4);
      s->cur[k].exponent = t->exponent;
      s->ncur++;
    }
    db_settle_currency_t *u = &s->cur[k];
    if (add64(&u->debit_count, t->dc) || add64(&u->debit_minor, t->dm) ||
        add64(&u->credit_count, t->cc) || add64(&u->credit_minor, t->cm) ||
        add64(&u->fee_minor, t->fee) || add64(&u->net_minor, t->net)) {
      set_err(s, "currency %s: the date's totals overflow 64 bits",
              t->currency);
      return DB_E_INTEGRITY;
    }
  }
  if (s->ncur > 1)
    qsort(s->cur, s->ncur, sizeof s->cur[0], cmp_currency);
  return 0;
}

static int build_totals(settle_t *s) {
  s->totals = calloc(s->n * 3 + 1, sizeof *s->totals);
  if (!s->totals)
    return DB_E_NOMEM;
  int rc = build_level(s, "merchant");
  if (!rc)
    rc = build_level(s, "terminal");
  if (!rc)
    rc = build_level(s, "issuer");
  if (!rc && s->nt > 1)
    qsort(s->totals, s->nt, sizeof *s->totals, cmp_totals);
  return rc ? rc : sum_currencies(s);
}

/* ------------------------------------------------------------------------
 * The clearing file and the CSV report, built in memory.
 */

static int buf_reserve(buf_t *b, size_t more) {
  if (b->cap - b->n >= more)
    return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->n < more) {
    if (cap > SIZE_MAX / 2)
      return -1;
    cap *= 2;
  }
  uint8_t *p = realloc(b->p, cap);
  if (!p)
    return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

static int buf_put(buf_t *b, const void *p, size_t n) {
  if (buf_reserve(b, n))
    return -1;
  memcpy(b->p + b->n, p, n);
  b->n += n;
  return 0;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int
buf_printf(buf_t *b, const char *fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof line)
    return -1;
  return buf_put(b, line, (size_t)n);
}

/* One record: its varint length, then the packed Record. */
static int put_record(buf_t *b, const Sw__Clearing__Record *rec) {
  size_t len = sw__clearing__record__get_packed_size(rec);
  uint8_t pre[10];
  size_t np = db_varint_put(len, pre);
  if (buf_put(b, pre, np) || buf_reserve(b, len))
    return -1;
  b->n += sw__clearing__record__pack(rec, b->p + b->n);
  return 0;
}

static void fill_totals_msg(Sw__Clearing__Totals *m, char *currency,
                            int exponent, int64_t dc, int64_t dm, int64_t cc,
                            int64_t cm, int64_t fee, int64_t net) {
  sw__clearing__totals__init(m);
  m->currency = currency;
  m->exponent = (uint32_t)exponent;
  m->debit_count = (uint64_t)dc;
  m->debit_minor = (uint64_t)dm;
  m->credit_count = (uint64_t)cc;
  m->credit_minor = (uint64_t)cm;
  m->fee_minor = (uint64_t)fee;
  m->net_minor = net >= 0 ? (uint64_t)net : (uint64_t)(-(net + 1)) + 1;
  m->net_sign = net >= 0 ? "D" : "C";
}

static int put_transaction(settle_t *s, item_t *it) {
  Sw__Clearing__Transaction t;
  sw__clearing__transaction__init(&t);
  t.business_date = it->business_date;
  t.node_id = it->node_id;
  t.txn_id = it->txn_id;
  t.adjustment = it->adjustment;
  t.settled_in_date = s->date;
  t.txn_kind = it->txn_kind;
  t.mti = it->mti;
  t.processing_code = it->pcode;
  t.merchant_id = it->merchant;
  t.terminal_id = it->terminal;
  t.issuer_id = it->issuer;
  t.batch_no = it->batch_no;
  t.rrn = it->rrn;
  t.stan = it->stan;
  t.currency = it->currency;
  t.exponent = (uint32_t)it->exponent;
  t.sign = it->sign;
  t.amount_minor = (uint64_t)it->amount;
  t.approved_minor = (uint64_t)it->approved;
  t.reversed_minor = (uint64_t)it->reversed;
  t.pan_masked = it->pan_masked;
  t.pan_hash.data = it->pan_hash;
  t.pan_hash.len = it->pan_hash_len;
  t.pan_hash_key_ver = (uint32_t)it->pan_hash_ver;
  t.pan_enc.data = it->pan_enc;
  t.pan_enc.len = it->pan_enc_len;
  t.pan_enc_key_ver = (uint32_t)it->pan_enc_ver;
  Sw__Clearing__Record rec = SW__CLEARING__RECORD__INIT;
  rec.body_case = SW__CLEARING__RECORD__BODY_TRANSACTION;
  rec.transaction = &t;
  return put_record(&s->pb, &rec);
}

static int put_merchant(settle_t *s, total_t *t) {
  Sw__Clearing__Totals tot;
  fill_totals_msg(&tot, t->currency, t->exponent, t->dc, t->dm, t->cc, t->cm,
                  t->fee, t->net);
  Sw__Clearing__MerchantSummary m;
  sw__clearing__merchant_summary__init(&m);
  m.merchant_id = t->key;
  m.totals = &tot;
  m.value_date = t->value_date;
  m.fee_bps = (uint32_t)t->plan.bps;
  m.fee_fixed_minor = (uint64_t)t->plan.fixed;
  m.fee_currency = t->plan.currency;
  Sw__Clearing__Record rec = SW__CLEARING__RECORD__INIT;
  rec.body_case = SW__CLEARING__RECORD__BODY_MERCHANT;
  rec.merchant = &m;
  return put_record(&s->pb, &rec);
}

static int put_header_trailer(settle_t *s, int trailer) {
  Sw__Clearing__Record rec = SW__CLEARING__RECORD__INIT;
  if (!trailer) {
    Sw__Clearing__Header h;
    sw__clearing__header__init(&h);
    h.format_version = 1;
    h.business_date = s->date;
    rec.body_case = SW__CLEARING__RECORD__BODY_HEADER;
    rec.header = &h;
    return put_record(&s->pb, &rec);
  }
  Sw__Clearing__Totals tots[DB_SETTLE_MAX_CURRENCIES];
  Sw__Clearing__Totals *ptr[DB_SETTLE_MAX_CURRENCIES];
  for (size_t i = 0; i < s->ncur; i++) {
    db_settle_currency_t *u = &s->cur[i];
    fill_totals_msg(&tots[i], u->currency, u->exponent, u->debit_count,
                    u->debit_minor, u->credit_count, u->credit_minor,
                    u->fee_minor, u->net_minor);
    ptr[i] = &tots[i];
  }
  Sw__Clearing__Trailer tr;
  sw__clearing__trailer__init(&tr);
  tr.record_count = (uint64_t)s->records;
  tr.transaction_count = (uint64_t)s->n;
  tr.adjustment_count = (uint64_t)s->adjustments;
  tr.merchant_count = (uint64_t)s->merchants;
  tr.n_totals = s->ncur;
  tr.totals = ptr;
  rec.body_case = SW__CLEARING__RECORD__BODY_TRAILER;
  rec.trailer = &tr;
  return put_record(&s->pb, &rec);
}

/* A CSV field: quoted when it holds a comma, quote or line break. */
static int csv_text(buf_t *b, const char *v) {
  if (!strpbrk(v, ",\"\r\n"))
    return buf_put(b, v, strlen(v));
  int bad = buf_put(b, "\"", 1);
  for (const char *p = v; *p && !bad; p++)
    bad = *p == '"' ? buf_put(b, "\"\"", 2) : buf_put(b, p, 1);
  return bad || buf_put(b, "\"", 1);
}

static const char csv_head[] =
    "record,business_date,settled_in_date,node_id,txn_id,txn_kind,mti,"
    "merchant_id,terminal_id,issuer_id,rrn,pan_masked,currency,alpha,"
    "sign,amount_minor,amount,debit_count,debit_minor,credit_count,"
    "credit_minor,fee_minor,net_sign,net_minor,net,value_date\n";

static int csv_transaction(settle_t *s, const item_t *it) {
  char amount[32];
  if (db_format_minor(it->amount, it->exponent, amount, sizeof amount) < 0)
    return -1;
  buf_t *b = &s->csv;
  int bad = buf_printf(b, "%s,%s,%s,%u,%" PRId64 ",%s,%s,",
                       it->adjustment ? "adjustment" : "transaction",
                       it->business_date, s->date, it->node_id, it->txn_id,
                       it->txn_kind, it->mti);
  bad |= csv_text(b, it->merchant) || buf_put(b, ",", 1);
  bad |= csv_text(b, it->terminal) || buf_put(b, ",", 1);
  bad |= csv_text(b, it->issuer) || buf_put(b, ",", 1);
  bad |= buf_printf(b, "%s,%s,%s,%s,%s,%" PRId64 ",%s,,,,,,,,,\n", it->rrn,
                    it->pan_masked, it->currency, it->alpha, it->sign,
                    it->amount, amount);
  return bad ? -1 : 0;
}

/* A totals line: record merchant (key, value date) or total. */
static int csv_totals(settle_t *s, const char *record, const char *key,
                      const char *currency, const char *alpha, int exponent,
                      int64_t dc, int64_t dm, int64_t cc, int64_t cm,
                      int64_t fee, int64_t net, const char *value_date) {
  char nd[32];
  uint64_t mag = net >= 0 ? (uint64_t)net : (uint64_t)(-(net + 1)) + 1;
  if (db_format_minor(net, exponent, nd, sizeof nd) < 0)
    return -1;
  buf_t *b = &s->csv;
  int bad = buf_printf(b, "%s,,%s,,,,,", record, s->date);
  bad |= csv_text(b, key);
  bad |= buf_printf(b,
                    ",,,,,%s,%s,,,,%" PRId64 ",%" PRId64 ",%" PRId64 ",%" PRId64
                    ",%" PRId64 ",%s,%" PRIu64 ",%s,%s\n",
                    currency, alpha, dc, dm, cc, cm, fee, net >= 0 ? "D" : "C",
                    mag, nd[0] == '-' ? nd + 1 : nd, value_date);
  return bad ? -1 : 0;
}

static void sha256_hex(const uint8_t *p, size_t n, char out[65]) {
  unsigned char md[32];
  unsigned int len = 0;
  EVP_Digest(p, n, md, &len, EVP_sha256(), NULL);
  for (unsigned i = 0; i < 32; i++)
    snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static int build_files(settle_t *s) {
  s->records = 2 + (int64_t)s->n + s->merchants;
  int bad = put_header_trailer(s, 0) ||
            buf_put(&s->csv, csv_head, sizeof csv_head - 1);
  for (size_t i = 0; i < s->n && !bad; i++)
    bad = put_transaction(s, &s->items[i]) || csv_transaction(s, &s->items[i]);
  for (size_t i = 0; i < s->nt && !bad; i++) {
    total_t *t = &s->totals[i];
    if (t->level[0] == 'm')
      bad =
          put_merchant(s, t) ||
          csv_totals(s, "merchant", t->key, t->currency, t->alpha, t->exponent,
                     t->dc, t->dm, t->cc, t->cm, t->fee, t->net, t->value_date);
  }
  for (size_t i = 0; i < s->ncur && !bad; i++) {
    const db_settle_currency_t *u = &s->cur[i];
    bad = csv_totals(s, "total", "", u->currency, u->alpha, u->exponent,
                     u->debit_count, u->debit_minor, u->credit_count,
                     u->credit_minor, u->fee_minor, u->net_minor, "");
  }
  if (bad || put_header_trailer(s, 1)) {
    set_err(s, "out of memory building the clearing file of %s", s->date);
    return DB_E_NOMEM;
  }
  sha256_hex(s->pb.p, s->pb.n, s->sha_pb);
  sha256_hex(s->csv.p, s->csv.n, s->sha_csv);
  return 0;
}

/* ------------------------------------------------------------------------
 * Files on disk.
 */

static int file_path(settle_t *s, char *out, size_t cap, const char *dir,
                     const char *prefix, const char *ext) {
  int n = snprintf(out, cap, "%s/%sclearing-%s.%s", dir, prefix, s->date, ext);
  if (n < 0 || (size_t)n >= cap) {
    set_err(s, "the clearing folder name is too long");
    return DB_E_INVAL;
  }
  return 0;
}

static int io_fail(settle_t *s, const char *what, const char *path) {
  set_err(s, "could not %s \"%s\": %s", what, path, strerror(errno));
  return DB_E_IO;
}

/* Writes b to path and fsyncs it. */
static int write_synced(settle_t *s, const char *path, const buf_t *b) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return io_fail(s, "create", path);
  size_t off = 0;
  while (off < b->n) {
    ssize_t w = write(fd, b->p + off, b->n - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      int rc = io_fail(s, "write", path);
      close(fd);
      return rc;
    }
    off += (size_t)w;
  }
  if (fsync(fd) != 0) {
    int rc = io_fail(s, "fsync", path);
    close(fd);
    return rc;
  }
  return close(fd) == 0 ? 0 : io_fail(s, "close", path);
}

static int fsync_dir(settle_t *s, const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return io_fail(s, "open the folder", dir);
  int rc = fsync(fd) == 0 ? 0 : io_fail(s, "fsync the folder", dir);
  close(fd);
  return rc;
}

/* The SHA-256 of the file at path: 0, 1 when it does not exist, or an
 * error. */
static int file_sha256(settle_t *s, const char *path, char out[65]) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return errno == ENOENT ? 1 : io_fail(s, "open", path);
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx) {
    fclose(f);
    return DB_E_NOMEM;
  }
  EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
  unsigned char chunk[65536];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    EVP_DigestUpdate(ctx, chunk, n);
  int err = ferror(f);
  fclose(f);
  unsigned char md[32];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  if (err)
    return io_fail(s, "read", path);
  for (unsigned i = 0; i < 32; i++)
    snprintf(out + 2 * i, 3, "%02x", md[i]);
  return 0;
}

typedef struct {
  const db_settle_opts_t *o;
  char pb[4096], csv[4096], pb_tmp[4096], csv_tmp[4096];
} paths_t;

static int make_paths(settle_t *s, paths_t *p, const db_settle_opts_t *o) {
  p->o = o;
  struct stat st;
  if (stat(o->out_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    set_err(s, "the clearing folder \"%s\" does not exist", o->out_dir);
    return DB_E_IO;
  }
  int rc = file_path(s, p->pb, sizeof p->pb, o->out_dir, "", "pb");
  if (!rc)
    rc = file_path(s, p->csv, sizeof p->csv, o->out_dir, "", "csv");
  if (!rc)
    rc = file_path(s, p->pb_tmp, sizeof p->pb_tmp, o->out_dir, ".", "pb.tmp");
  if (!rc)
    rc =
        file_path(s, p->csv_tmp, sizeof p->csv_tmp, o->out_dir, ".", "csv.tmp");
  return rc;
}

static void step(const paths_t *p, db_settle_step_t at) {
  if (p->o->hook)
    p->o->hook(p->o->hook_ctx, at);
}

/* Both files under temporary names, fsynced, renamed, folder fsynced. */
static int write_files(settle_t *s, const paths_t *p) {
  int rc = write_synced(s, p->pb_tmp, &s->pb);
  if (!rc)
    rc = write_synced(s, p->csv_tmp, &s->csv);
  if (rc)
    return rc;
  step(p, DB_SETTLE_AT_FILES_WRITTEN);
  if (rename(p->pb_tmp, p->pb) != 0)
    return io_fail(s, "rename into place", p->pb);
  if (rename(p->csv_tmp, p->csv) != 0)
    return io_fail(s, "rename into place", p->csv);
  rc = fsync_dir(s, p->o->out_dir);
  if (!rc)
    step(p, DB_SETTLE_AT_RENAMED);
  return rc;
}

/* ------------------------------------------------------------------------
 * Stored totals and the comparison with the journal.
 */

static int parse_stored(settle_t *s, const PGresult *r, int i, total_t *t) {
  int64_t exp, bps, days, v;
  char sign[2];
  memset(t, 0, sizeof *t);
  if (get_text(r, i, 0, t->level, sizeof t->level) ||
      get_text(r, i, 1, t->key, sizeof t->key) ||
      get_text(r, i, 2, t->currency, sizeof t->currency) ||
      get_text(r, i, 3, t->alpha, sizeof t->alpha) || get_i64(r, i, 4, &exp) ||
      get_i64(r, i, 5, &t->dc) || get_i64(r, i, 6, &t->dm) ||
      get_i64(r, i, 7, &t->cc) || get_i64(r, i, 8, &t->cm) ||
      get_i64(r, i, 9, &t->fee) || get_i64(r, i, 10, &v) ||
      get_text(r, i, 11, sign, sizeof sign) ||
      get_text(r, i, 12, t->value_date, sizeof t->value_date) ||
      get_text(r, i, 15, t->plan.currency, sizeof t->plan.currency)) {
    set_err(s, "a stored settlement total of %s is malformed", s->date);
    return DB_E_INTEGRITY;
  }
  t->exponent = (int)exp;
  t->net = sign[0] == 'C' ? -v : v;
  if (get_i64(r, i, 13, &bps) == 0 && get_i64(r, i, 14, &t->plan.fixed) == 0 &&
      get_i64(r, i, 16, &days) == 0) {
    t->plan.bps = (int32_t)bps;
    t->plan.days = (int)days;
  }
  return 0;
}

static int load_stored(settle_t *s, PGconn *c) {
  const char *params[1] = {s->date};
  PGresult *r = PQexecParams(
      c,
      "SELECT t.level, t.key, t.currency, c.alpha_code, c.exponent,"
      " t.debit_count, t.debit_minor, t.credit_count, t.credit_minor,"
      " t.fee_minor, t.net_minor, t.net_sign, t.value_date::text, t.fee_bps,"
      " t.fee_fixed_minor, t.fee_currency, t.settlement_days"
      " FROM switch.settlement_totals t JOIN switch.currencies c"
      " ON c.numeric_code = t.currency WHERE t.business_date = $1",
      1, NULL, params, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    int rc = sql_fail(s, c, r, "reading the settlement totals");
    PQclear(r);
    return rc;
  }
  int n = PQntuples(r), rc = 0;
  s->stored = calloc((size_t)n + 1, sizeof *s->stored);
  if (!s->stored)
    rc = DB_E_NOMEM;
  for (int i = 0; i < n && !rc; i++)
    rc = parse_stored(s, r, i, &s->stored[s->ns++]);
  PQclear(r);
  if (!rc && s->ns > 1)
    qsort(s->stored, s->ns, sizeof *s->stored, cmp_totals);
  return rc;
}

/* Recomputation of a closed date uses the fee plans recorded with its
 * merchant totals, so a plan changed since is not a difference. */
static void use_stored_plans(settle_t *s) {
  for (size_t i = 0; i < s->n; i++) {
    total_t probe;
    memset(&probe, 0, sizeof probe);
    snprintf(probe.level, sizeof probe.level, "merchant");
    snprintf(probe.key, sizeof probe.key, "%s", s->items[i].merchant);
    /* Any currency of that merchant: the first with key >= probe. */
    size_t lo = 0, hi = s->ns;
    while (lo < hi) {
      size_t mid = lo + (hi - lo) / 2;
      if (cmp_totals(&s->stored[mid], &probe) < 0)
        lo = mid + 1;
      else
        hi = mid;
    }
    if (lo < s->ns && strcmp(s->stored[lo].level, "merchant") == 0 &&
        strcmp(s->stored[lo].key, probe.key) == 0)
      s->items[i].plan = s->stored[lo].plan;
  }
}

static int diff_field(settle_t *s, const total_t *t, const char *field,
                      int64_t stored, int64_t journal) {
  if (stored == journal)
    return 0;
  set_err(s,
          "settlement of %s: %s \"%s\" currency %s: %s is %" PRId64
          " in the stored totals but %" PRId64 " recomputed from the journal",
          s->date, t->level, t->key, t->currency, field, stored, journal);
  return DB_E_MISMATCH;
}

static int diff_total(settle_t *s, const total_t *st, const total_t *j) {
  int rc = diff_field(s, j, "debit_count", st->dc, j->dc);
  if (!rc)
    rc = diff_field(s, j, "debit_minor", st->dm, j->dm);
  if (!rc)
    rc = diff_field(s, j, "credit_count", st->cc, j->cc);
  if (!rc)
    rc = diff_field(s, j, "credit_minor", st->cm, j->cm);
  if (!rc)
    rc = diff_field(s, j, "fee_minor", st->fee, j->fee);
  if (!rc)
    rc = diff_field(s, j, "net (signed)", st->net, j->net);
  if (!rc && strcmp(st->value_date, j->value_date) != 0) {
    set_err(s,
            "settlement of %s: %s \"%s\" currency %s: value date %s "
            "stored, %s recomputed",
            s->date, j->level, j->key, j->currency, st->value_date,
            j->value_date);
    rc = DB_E_MISMATCH;
  }
  return rc;
}

static int compare_totals(settle_t *s) {
  size_t i = 0, k = 0;
  while (i < s->ns || k < s->nt) {
    int d = i == s->ns   ? 1
            : k == s->nt ? -1
                         : cmp_totals(&s->stored[i], &s->totals[k]);
    if (d != 0) {
      const total_t *t = d < 0 ? &s->stored[i] : &s->totals[k];
      set_err(s, "settlement of %s: %s \"%s\" currency %s is %s", s->date,
              t->level, t->key, t->currency,
              d < 0 ? "in the stored totals but not in the journal"
                    : "in the journal but not in the stored totals");
      return DB_E_MISMATCH;
    }
    int rc = diff_total(s, &s->stored[i++], &s->totals[k++]);
    if (rc)
      return rc;
  }
  return 0;
}

/* ------------------------------------------------------------------------
 * The business date's row.
 */

typedef struct {
  int closed;
  char sha_pb[65], sha_csv[65];
  int64_t records;
} date_row_t;

static int read_date_row(settle_t *s, PGconn *c, int lock, date_row_t *d) {
  const char *params[1] = {s->date};
  PGresult *r = PQexecParams(
      c,
      lock ? "SELECT status, clearing_sha256, report_sha256, record_count"
             " FROM switch.business_dates WHERE business_date = $1 FOR UPDATE"
           : "SELECT status, clearing_sha256, report_sha256, record_count"
             " FROM switch.business_dates WHERE business_date = $1",
      1, NULL, params, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    int rc = sql_fail(s, c, r, "reading the business date");
    PQclear(r);
    return rc;
  }
  memset(d, 0, sizeof *d);
  int rc = 0;
  if (PQntuples(r) == 1) {
    d->closed = strcmp(PQgetvalue(r, 0, 0), "closed") == 0;
    if (d->closed && (get_text(r, 0, 1, d->sha_pb, sizeof d->sha_pb) ||
                      get_text(r, 0, 2, d->sha_csv, sizeof d->sha_csv) ||
                      get_i64(r, 0, 3, &d->records))) {
      set_err(s, "the business date row of %s is malformed", s->date);
      rc = DB_E_INTEGRITY;
    }
  }
  PQclear(r);
  return rc;
}

static int exec_params(settle_t *s, PGconn *c, const char *sql, int n,
                       const char *const *params, const char *what) {
  PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  int rc = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK
               ? 0
               : sql_fail(s, c, r, what);
  PQclear(r);
  return rc;
}

static int exec_plain(settle_t *s, PGconn *c, const char *sql) {
  return exec_params(s, c, sql, 0, NULL, sql);
}

static int insert_total(settle_t *s, PGconn *c, const total_t *t) {
  char dc[24], dm[24], cc[24], cm[24], fee[24], net[24], bps[16], fixed[24],
      days[8];
  uint64_t mag = t->net >= 0 ? (uint64_t)t->net : (uint64_t)(-(t->net + 1)) + 1;
  snprintf(dc, sizeof dc, "%" PRId64, t->dc);
  snprintf(dm, sizeof dm, "%" PRId64, t->dm);
  snprintf(cc, sizeof cc, "%" PRId64, t->cc);
  snprintf(cm, sizeof cm, "%" PRId64, t->cm);
  snprintf(fee, sizeof fee, "%" PRId64, t->fee);
  snprintf(net, sizeof net, "%" PRIu64, mag);
  snprintf(bps, sizeof bps, "%d", (int)t->plan.bps);
  snprintf(fixed, sizeof fixed, "%" PRId64, t->plan.fixed);
  snprintf(days, sizeof days, "%d", t->plan.days);
  int m = t->level[0] == 'm';
  const char *p[16] = {s->date,
                       t->level,
                       t->key,
                       t->currency,
                       dc,
                       dm,
                       cc,
                       cm,
                       fee,
                       net,
                       t->net >= 0 ? "D" : "C",
                       m ? t->value_date : NULL,
                       m ? bps : NULL,
                       m ? fixed : NULL,
                       m ? t->plan.currency : NULL,
                       m ? days : NULL};
  return exec_params(
      s, c,
      "INSERT INTO switch.settlement_totals (business_date, level, key,"
      " currency, debit_count, debit_minor, credit_count, credit_minor,"
      " fee_minor, net_minor, net_sign, value_date, fee_bps, fee_fixed_minor,"
      " fee_currency, settlement_days) VALUES ($1, $2, $3, $4, $5, $6, $7,"
      " $8, $9, $10, $11, $12, $13, $14, $15, $16)",
      16, p, "storing the settlement totals");
}

static int record_closed(settle_t *s, PGconn *c) {
  char recs[24], name[40];
  snprintf(recs, sizeof recs, "%" PRId64, s->records);
  snprintf(name, sizeof name, "clearing-%s.pb", s->date);
  const char *p[5] = {s->date, name, s->sha_pb, recs, s->sha_csv};
  return exec_params(s, c,
                     "UPDATE switch.business_dates SET status = 'closed',"
                     " closed_at = now(), clearing_file = $2,"
                     " clearing_sha256 = $3, record_count = $4,"
                     " report_sha256 = $5 WHERE business_date = $1",
                     5, p, "recording the closed date");
}

/* ------------------------------------------------------------------------
 * The two paths of db_settle, and db_settle_verify.
 */

static int settle_open_date(settle_t *s, PGconn *c, const paths_t *p) {
  const char *params[1] = {s->date};
  int rc = exec_params(s, c, "SELECT switch.close_journal_partition($1)", 1,
                       params, "closing the journal partition");
  if (!rc)
    rc = load_items(s, c);
  if (!rc && s->pending) {
    set_err(s,
            "business date %s has %" PRId64 " pending transaction%s; the "
            "first: %s\n"
            "HINT:  wait for their outcome (responses, timeouts or SAF "
            "recovery), then settle again",
            s->date, s->pending, s->pending == 1 ? "" : "s", s->first_pending);
    rc = DB_E_PENDING;
  }
  if (!rc)
    rc = build_totals(s);
  if (!rc)
    rc = build_files(s);
  if (!rc)
    rc = write_files(s, p);
  if (!rc)
    rc = exec_params(s, c,
                     "DELETE FROM switch.settlement_totals"
                     " WHERE business_date = $1",
                     1, params, "clearing stale totals");
  for (size_t i = 0; i < s->nt && !rc; i++)
    rc = insert_total(s, c, &s->totals[i]);
  if (!rc)
    rc = record_closed(s, c);
  if (!rc)
    step(p, DB_SETTLE_AT_RECORDED);
  return rc;
}

/* Recomputes a closed date and compares it with what was recorded. */
static int recompute_closed(settle_t *s, PGconn *c, const date_row_t *d) {
  int rc = load_stored(s, c);
  if (!rc)
    rc = load_items(s, c);
  if (!rc && s->pending) {
    set_err(s, "closed business date %s has a pending transaction: %s", s->date,
            s->first_pending);
    rc = DB_E_MISMATCH;
  }
  if (rc)
    return rc;
  use_stored_plans(s);
  rc = build_totals(s);
  if (!rc)
    rc = compare_totals(s);
  if (!rc)
    rc = build_files(s);
  if (rc)
    return rc;
  if (s->records != d->records || strcmp(s->sha_pb, d->sha_pb) != 0 ||
      strcmp(s->sha_csv, d->sha_csv) != 0) {
    set_err(s,
            "clearing file of %s: recorded sha256 %s (%" PRId64
            " records), recomputed from the journal %s (%" PRId64 " records)",
            s->date, d->sha_pb, d->records, s->sha_pb, s->records);
    return DB_E_MISMATCH;
  }
  return 0;
}

/* A closed date: nothing inserted; the files rewritten where missing or
 * not what was recorded (the same bytes, so the recorded SHA holds). */
static int settle_closed_date(settle_t *s, PGconn *c, const paths_t *p,
                              const date_row_t *d, db_settle_result_t *res) {
  int rc = recompute_closed(s, c, d);
  if (rc)
    return rc;
  char pb[65], csv[65];
  int a = file_sha256(s, p->pb, pb), b = file_sha256(s, p->csv, csv);
  if (a < 0 || b < 0)
    return a < 0 ? a : b;
  if (a == 1 || b == 1 || strcmp(pb, d->sha_pb) != 0 ||
      strcmp(csv, d->sha_csv) != 0) {
    rc = write_files(s, p);
    if (res && !rc)
      res->files_written = 1;
  }
  return rc;
}

static void fill_result(const settle_t *s, const paths_t *p,
                        db_settle_result_t *res) {
  res->records = s->records;
  res->transactions = (int64_t)s->n;
  res->adjustments = s->adjustments;
  res->merchants = s->merchants;
  res->ncurrencies = s->ncur;
  memcpy(res->currencies, s->cur, s->ncur * sizeof s->cur[0]);
  snprintf(res->clearing_path, sizeof res->clearing_path, "%s", p->pb);
  snprintf(res->report_path, sizeof res->report_path, "%s", p->csv);
  memcpy(res->sha256, s->sha_pb, sizeof res->sha256);
}

static int lock_date(settle_t *s, PGconn *c, date_row_t *d) {
  const char *params[1] = {s->date};
  int rc = exec_plain(s, c, "BEGIN ISOLATION LEVEL READ COMMITTED");
  if (!rc)
    rc = exec_params(s, c,
                     "INSERT INTO switch.business_dates (business_date)"
                     " VALUES ($1) ON CONFLICT DO NOTHING",
                     1, params, "registering the business date");
  return rc ? rc : read_date_row(s, c, 1, d);
}

static int check_args(settle_t *s, PGconn *c, const char *date) {
  int y, m, d;
  if (!c || !date || parse_date(date, &y, &m, &d) != 0 || y > 9999) {
    set_err(s, "invalid business date \"%.20s\": expected YYYY-MM-DD",
            date ? date : "(null)");
    return DB_E_INVAL;
  }
  fmt_date(s->date, y, m, d);
  if (PQtransactionStatus(c) != PQTRANS_IDLE &&
      PQtransactionStatus(c) != PQTRANS_INTRANS) {
    set_err(s, "the database connection is not usable");
    return DB_E_CONNECT;
  }
  return 0;
}

int db_settle(PGconn *c, const db_settle_opts_t *o, db_settle_result_t *res,
              char *err, size_t errcap) {
  settle_t s;
  memset(&s, 0, sizeof s);
  s.err = err;
  s.errcap = errcap;
  if (err && errcap)
    err[0] = '\0';
  if (res)
    memset(res, 0, sizeof *res);
  if (!o || !o->out_dir) {
    set_err(&s, "settle: no options or no clearing folder");
    return DB_E_INVAL;
  }
  int rc = check_args(&s, c, o->date);
  if (!rc && PQtransactionStatus(c) != PQTRANS_IDLE) {
    set_err(&s, "settle runs its own transaction: the connection is in one");
    rc = DB_E_INVAL;
  }
  paths_t p;
  date_row_t d;
  memset(&p, 0, sizeof p);
  memset(&d, 0, sizeof d);
  if (!rc)
    rc = make_paths(&s, &p, o);
  if (!rc)
    rc = lock_date(&s, c, &d);
  if (!rc) {
    if (res)
      res->already_closed = d.closed;
    rc = d.closed ? settle_closed_date(&s, c, &p, &d, res)
                  : settle_open_date(&s, c, &p);
  }
  if (!rc)
    rc = exec_plain(&s, c, "COMMIT");
  else if (PQtransactionStatus(c) != PQTRANS_IDLE)
    PQclear(PQexec(c, "ROLLBACK"));
  if (!rc && res) {
    fill_result(&s, &p, res);
    res->files_written |= !d.closed;
  }
  settle_free(&s);
  return rc;
}

typedef void (*report_fn)(void *ctx, const char *line);

/* What db_settle_verify and db_settle_check share; not_settled_ok: a date
 * not closed is reported and passes. */
static int verify_date(PGconn *c, const char *date, const char *out_dir,
                       int not_settled_ok, report_fn report, void *ctx,
                       char *err, size_t errcap) {
  settle_t s;
  memset(&s, 0, sizeof s);
  s.err = err;
  s.errcap = errcap;
  if (err && errcap)
    err[0] = '\0';
  int rc = check_args(&s, c, date);
  if (rc)
    return rc;
  /* One snapshot for every read, unless the caller holds a transaction. */
  int own = PQtransactionStatus(c) == PQTRANS_IDLE;
  if (own)
    rc = exec_plain(&s, c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  date_row_t d;
  memset(&d, 0, sizeof d);
  if (!rc)
    rc = read_date_row(&s, c, 0, &d);
  char line[512];
  int on_disk = 0;
  if (!rc && !d.closed) {
    if (not_settled_ok) {
      snprintf(line, sizeof line,
               "settlement %s: not settled, nothing to check", s.date);
      if (report)
        report(ctx, line);
      goto done;
    }
    set_err(&s, "business date %s is not settled (not closed)", s.date);
    rc = DB_E_NOT_FOUND;
  }
  if (!rc)
    rc = recompute_closed(&s, c, &d);
  if (!rc && out_dir) {
    char path[4096], sha[65];
    rc = file_path(&s, path, sizeof path, out_dir, "", "pb");
    int f = rc ? 0 : file_sha256(&s, path, sha);
    if (f < 0)
      rc = f;
    else if (!rc && f == 0 && strcmp(sha, d.sha_pb) != 0) {
      set_err(&s, "clearing file \"%s\": sha256 %s on disk, %s recorded", path,
              sha, d.sha_pb);
      rc = DB_E_MISMATCH;
    }
    on_disk = !rc && f == 0;
  }
  if (!rc && report) {
    snprintf(line, sizeof line,
             "settlement %s: %zu totals and %" PRId64
             " records match the journal; sha256 %s%s",
             s.date, s.nt, s.records, s.sha_pb,
             on_disk ? " (file on disk too)" : "");
    report(ctx, line);
  }
done:
  if (own && PQtransactionStatus(c) != PQTRANS_IDLE)
    PQclear(PQexec(c, "ROLLBACK"));
  settle_free(&s);
  return rc;
}

int db_settle_verify(PGconn *c, const char *date, const char *out_dir,
                     char *err, size_t errcap) {
  return verify_date(c, date, out_dir, 0, NULL, NULL, err, errcap);
}

int db_settle_check(PGconn *c, const char *date,
                    void (*report)(void *ctx, const char *line), void *ctx,
                    char *err, size_t errcap) {
  return verify_date(c, date, DB_SETTLE_DEFAULT_DIR, 1, report, ctx, err,
                     errcap);
}
