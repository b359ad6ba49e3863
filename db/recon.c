/*
 * recon.c — the switch's totals of one terminal batch in the shape of the
 * ISO 8583 reconciliation fields (DE74-77, DE86-89, DE97), their
 * comparison with the totals a terminal sends in its 0500, and the parser
 * of those totals as an operator types them (lookup.h).
 *
 * The transactions of a batch are those whose received event carries the
 * terminal id and batch number, within a range of business dates (no
 * index serves terminal + batch: the range bounds the partitions scanned).
 * Every event of each, adjustments in later dates included, goes through
 * db_txn_outcome_* (lookup.c), the same reading the lookup shows, and
 * each counting transaction adds to the totals of its currency:
 *
 *   debit kinds (purchase, cash, completion) approved:  DE76 += 1,
 *       DE88 += approved amount; reversed: DE77 += 1, DE89 += reversed
 *   refund approved:  DE74 += 1, DE86 += approved amount; reversed:
 *       DE75 += 1, DE87 += reversed amount
 *   DE97 = (DE88 - DE89) - (DE86 - DE87) as a magnitude with sign D
 *       when positive (the cardholders were debited more than credited:
 *       the acquirer owes the merchant), C when negative or zero
 *
 * Every sum is checked against int64 overflow and the field's size.
 */
#include "lookup.h"
#include "util.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Tomorrow's date in UTC, whatever the session's TimeZone (as lookup.c). */
#define DB__TOMORROW "((now() AT TIME ZONE 'UTC')::date + 1)"

/* ------------------------------------------------------------------------ */
/* The fields                                                                */

static const struct {
  int de;
  const char *name;
  size_t off;
  int64_t max;
} fields[DB_RECON_FIELDS] = {
    {74, "credits number", offsetof(db_recon_totals_t, credits_count),
     DB_RECON_COUNT_MAX},
    {75, "credits reversal number",
     offsetof(db_recon_totals_t, credits_reversal_count), DB_RECON_COUNT_MAX},
    {76, "debits number", offsetof(db_recon_totals_t, debits_count),
     DB_RECON_COUNT_MAX},
    {77, "debits reversal number",
     offsetof(db_recon_totals_t, debits_reversal_count), DB_RECON_COUNT_MAX},
    {86, "credits amount", offsetof(db_recon_totals_t, credits_amount),
     DB_RECON_AMOUNT_MAX},
    {87, "credits reversal amount",
     offsetof(db_recon_totals_t, credits_reversal_amount), DB_RECON_AMOUNT_MAX},
    {88, "debits amount", offsetof(db_recon_totals_t, debits_amount),
     DB_RECON_AMOUNT_MAX},
    {89, "debits reversal amount",
     offsetof(db_recon_totals_t, debits_reversal_amount), DB_RECON_AMOUNT_MAX},
    {97, "net amount", offsetof(db_recon_totals_t, net_amount),
     DB_RECON_AMOUNT_MAX},
};

static int64_t *field(db_recon_totals_t *t, size_t i) {
  return (int64_t *)(void *)((char *)t + fields[i].off);
}

static int64_t field_value(const db_recon_totals_t *t, size_t i) {
  return *(const int64_t *)(const void *)((const char *)t + fields[i].off);
}

const char *db_recon_field_name(int de) {
  for (size_t i = 0; i < DB_RECON_FIELDS; i++)
    if (fields[i].de == de)
      return fields[i].name;
  return NULL;
}

void db_recon_totals_init(db_recon_totals_t *t, const char *currency) {
  memset(t, 0, sizeof *t);
  t->exponent = -1;
  t->net_sign = 'C';
  if (currency && db_lookup_check_currency(currency) == 0)
    memcpy(t->currency, currency, 4);
}

int db_recon_set_net(db_recon_totals_t *t) {
  for (size_t i = 0; i + 1 < DB_RECON_FIELDS; i++)
    if (field_value(t, i) < 0 || field_value(t, i) > fields[i].max)
      return DB_E_INVAL;
  /* Each term is at most 10^16 - 1, so none of this overflows int64. */
  int64_t net = (t->debits_amount - t->debits_reversal_amount) -
                (t->credits_amount - t->credits_reversal_amount);
  int64_t mag = net < 0 ? -net : net;
  if (mag > DB_RECON_AMOUNT_MAX)
    return DB_E_INVAL;
  t->net_amount = mag;
  t->net_sign = net > 0 ? 'D' : 'C';
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Accumulating                                                              */

/* Adds v to field i of t within the field's size. */
static int add_field(db_recon_totals_t *t, size_t i, int64_t v) {
  int64_t *f = field(t, i);
  if (v < 0 || *f > fields[i].max - v)
    return DB_E_INVAL;
  *f += v;
  return 0;
}

/* The totals of currency in b, made when first seen; NULL when full. */
static db_recon_totals_t *bucket(db_recon_batch_t *b, const char *currency) {
  for (size_t i = 0; i < b->n; i++)
    if (strcmp(b->totals[i].currency, currency) == 0)
      return &b->totals[i];
  if (b->n == DB_RECON_MAX_CURRENCIES) {
    b->more_currencies = 1;
    return NULL;
  }
  db_recon_totals_init(&b->totals[b->n], currency);
  return &b->totals[b->n++];
}

/* Field indexes in fields[]. */
enum { F74, F75, F76, F77, F86, F87, F88, F89 };

static int count_txn(db_recon_batch_t *b, const db_txn_outcome_t *o,
                     int exponent, const char *only, char *err, size_t cap) {
  b->transactions++;
  if (!db_txn_outcome_counts(o) || (only && strcmp(o->currency, only) != 0))
    return 0;
  if (db_lookup_check_currency(o->currency) != 0) {
    db__set_err(err, cap, "a counted transaction has no currency");
    return DB_E_SQL;
  }
  db_recon_totals_t *t = bucket(b, o->currency);
  if (!t)
    return 0;
  t->exponent = exponent;
  int credit = o->sign == 'C';
  int reversed = o->reversals > 0;
  int rc = add_field(t, credit ? F74 : F76, 1) ||
                   add_field(t, credit ? F86 : F88, o->approved_amount) ||
                   add_field(t, credit ? F75 : F77, reversed) ||
                   add_field(t, credit ? F87 : F89,
                             reversed ? o->reversed_amount : 0)
               ? DB_E_INVAL
               : 0;
  if (rc) {
    db__set_err(err, cap,
                "batch totals in %s exceed the size of the 0500 fields",
                o->currency);
    return rc;
  }
  b->counted++;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Querying                                                                  */

/* The range of business dates searched, as the server computes it. */
static int date_range(PGconn *c, const char *from, const char *to,
                      db_recon_batch_t *out, char *err, size_t cap) {
  const char *sql = "SELECT coalesce($1::date, coalesce($2::date, " DB__TOMORROW
                    ") - 7)::text, coalesce($2::date, " DB__TOMORROW ")::text";
  const char *params[2] = {from, to};
  PGresult *r = PQexecParams(c, sql, 2, NULL, params, NULL, NULL, 0);
  int rc = 0;
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
    rc = db__sql_err(c, r, "computing the date range failed", err, cap);
  else {
    snprintf(out->date_from, sizeof out->date_from, "%s", PQgetvalue(r, 0, 0));
    snprintf(out->date_to, sizeof out->date_to, "%s", PQgetvalue(r, 0, 1));
    if (db_lookup_check_date(out->date_from) != 0 ||
        db_lookup_check_date(out->date_to) != 0) {
      db__set_err(err, cap, "the server gave a date out of range");
      rc = DB_E_SQL;
    }
  }
  PQclear(r);
  return rc;
}

/* Every event of the batch's transactions, grouped by transaction, in
 * journal order (adjustments in later dates after the original date's). */
static const char *const BATCH_SQL =
    "WITH t AS ("
    " SELECT r.business_date AS d, r.node_id AS node, r.txn_id AS txn,"
    "        r.txn_kind AS kind"
    "   FROM switch.journal_event r"
    "  WHERE r.event = 'received' AND r.terminal_id = $1"
    "    AND r.batch_no = $2::int"
    "    AND r.business_date BETWEEN $3::date AND $4::date), "
    "e AS ("
    " SELECT t.*, e.business_date, e.event_no, e.event, e.state,"
    "        e.amount_minor, e.currency"
    "   FROM t JOIN switch.journal_event e"
    "     ON e.business_date = t.d AND e.node_id = t.node AND e.txn_id = t.txn"
    " UNION ALL"
    " SELECT t.*, e.business_date, e.event_no, e.event, e.state,"
    "        e.amount_minor, e.currency"
    "   FROM t JOIN switch.journal_event e"
    "     ON e.orig_business_date = t.d AND e.node_id = t.node"
    "    AND e.txn_id = t.txn AND e.business_date > t.d"
    "  WHERE e.orig_business_date IS NOT NULL) "
    "SELECT e.d::text, e.node, e.txn, e.kind, e.event, e.state,"
    "       e.amount_minor, e.currency, cur.exponent "
    "FROM e LEFT JOIN switch.currencies cur ON cur.numeric_code = e.currency "
    "ORDER BY e.d, e.node, e.txn, e.business_date, e.event_no";

static const char *val(PGresult *r, int row, int col) {
  return PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col);
}

static int64_t amount_of(PGresult *r, int row, int col) {
  if (PQgetisnull(r, row, col))
    return -1;
  char *end;
  const char *s = PQgetvalue(r, row, col);
  long long v = strtoll(s, &end, 10);
  return end != s && !*end && v >= 0 ? v : -1;
}

static int same_txn(PGresult *r, int a, int b) {
  for (int col = 0; col < 3; col++)
    if (strcmp(val(r, a, col), val(r, b, col)) != 0)
      return 0;
  return 1;
}

/* Walks the rows transaction by transaction. */
static int take_batch(PGresult *r, db_recon_batch_t *out, const char *only,
                      char *err, size_t cap) {
  int rows = PQntuples(r);
  if (PQnfields(r) != 9) {
    db__set_err(err, cap, "recon: unexpected result shape");
    return DB_E_SQL;
  }
  db_txn_outcome_t o;
  int exponent = -1;
  for (int row = 0; row < rows; row++) {
    if (row == 0 || !same_txn(r, row, row - 1)) {
      if (row > 0) {
        int rc = count_txn(out, &o, exponent, only, err, cap);
        if (rc)
          return rc;
      }
      db_txn_outcome_init(&o, val(r, row, 3));
      exponent = -1;
    }
    db_txn_outcome_add(&o, val(r, row, 4), val(r, row, 5), amount_of(r, row, 6),
                       val(r, row, 7));
    if (!PQgetisnull(r, row, 8) && strcmp(val(r, row, 7), o.currency) == 0)
      exponent = atoi(val(r, row, 8));
  }
  return rows > 0 ? count_txn(out, &o, exponent, only, err, cap) : 0;
}

static int check_batch_args(const char *tid, int32_t batch, const char *from,
                            const char *to, const char *currency, char *err,
                            size_t cap) {
  if (db_lookup_check_terminal_id(tid) != 0) {
    db__set_err(err, cap,
                "invalid terminal id: 1 to 8 letters, digits or spaces");
    return DB_E_INVAL;
  }
  if (batch < 0 || batch > 999999) {
    db__set_err(err, cap, "invalid batch number: 0 to 999999");
    return DB_E_INVAL;
  }
  if ((from && db_lookup_check_date(from) != 0) ||
      (to && db_lookup_check_date(to) != 0)) {
    db__set_err(err, cap, "invalid date: expected YYYY-MM-DD");
    return DB_E_INVAL;
  }
  if (currency && db_lookup_check_currency(currency) != 0) {
    db__set_err(err, cap, "invalid currency: 3 digits (ISO 4217 numeric)");
    return DB_E_INVAL;
  }
  return 0;
}

int db_recon_batch(PGconn *c, const char *tid, int32_t batch, const char *from,
                   const char *to, const char *currency, db_recon_batch_t *out,
                   char *err, size_t cap) {
  if (err && cap)
    err[0] = '\0';
  if (!out) {
    db__set_err(err, cap, "recon: no result given");
    return DB_E_INVAL;
  }
  memset(out, 0, sizeof *out);
  int rc = check_batch_args(tid, batch, from, to, currency, err, cap);
  if (rc)
    return rc;
  if (!c || PQstatus(c) != CONNECTION_OK) {
    db__set_err(err, cap, "recon: no connection to the database");
    return DB_E_CONNECT;
  }
  snprintf(out->terminal_id, sizeof out->terminal_id, "%s", tid);
  out->batch_no = batch;
  rc = date_range(c, from, to, out, err, cap);
  if (rc)
    return rc;
  char bbuf[16];
  snprintf(bbuf, sizeof bbuf, "%d", (int)batch);
  const char *params[4] = {tid, bbuf, out->date_from, out->date_to};
  PGresult *r = PQexecParams(c, BATCH_SQL, 4, NULL, params, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK)
    rc = db__sql_err(c, r, "reading the batch failed", err, cap);
  else
    rc = take_batch(r, out, currency, err, cap);
  PQclear(r);
  for (size_t i = 0; rc == 0 && i < out->n; i++)
    if (db_recon_set_net(&out->totals[i]) != 0) {
      db__set_err(err, cap, "batch net amount exceeds DE97");
      rc = DB_E_INVAL;
    }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Comparing                                                                 */

int db_recon_compare(const db_recon_totals_t *sw, const db_recon_totals_t *term,
                     db_recon_diff_t diffs[DB_RECON_FIELDS], size_t *ndiff) {
  size_t n = 0;
  if (!sw || !term)
    return DB_E_INVAL;
  for (size_t i = 0; i < DB_RECON_FIELDS; i++) {
    int64_t a = field_value(sw, i), b = field_value(term, i);
    int differ = a != b;
    if (fields[i].de == 97 && a != 0 && b != 0)
      differ |= sw->net_sign != term->net_sign;
    if (!differ)
      continue;
    if (diffs) {
      diffs[n].de = fields[i].de;
      diffs[n].name = fields[i].name;
      diffs[n].switch_value = a;
      diffs[n].terminal_value = b;
      diffs[n].switch_sign = fields[i].de == 97 ? sw->net_sign : 0;
      diffs[n].terminal_sign = fields[i].de == 97 ? term->net_sign : 0;
    }
    n++;
  }
  if (ndiff)
    *ndiff = n;
  if (sw->currency[0] && term->currency[0] &&
      strcmp(sw->currency, term->currency) != 0)
    return DB_E_MISMATCH;
  return n ? DB_E_MISMATCH : 0;
}

/* ------------------------------------------------------------------------ */
/* Parsing the terminal's totals                                             */

/* Decimal digits only, at most 16, value <= max. */
static int parse_digits(const char *s, size_t n, int64_t max, int64_t *out) {
  if (n == 0 || n > 16)
    return -1;
  int64_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  if (v > max)
    return -1;
  *out = v;
  return 0;
}

/* Index in fields[] of "deNN" (either case), or -1. */
static int field_index(const char *key, size_t n) {
  if (n != 4 || (key[0] != 'd' && key[0] != 'D') ||
      (key[1] != 'e' && key[1] != 'E') || key[2] < '0' || key[2] > '9' ||
      key[3] < '0' || key[3] > '9')
    return -1;
  int de = (key[2] - '0') * 10 + (key[3] - '0');
  for (size_t i = 0; i < DB_RECON_FIELDS; i++)
    if (fields[i].de == de)
      return (int)i;
  return -1;
}

static int parse_pair(const char *p, size_t n, db_recon_totals_t *out,
                      unsigned *seen, char *err, size_t cap) {
  const char *eq = memchr(p, '=', n);
  if (!eq) {
    db__set_err(err, cap, "terminal totals: \"%.*s\" is not name=value",
                (int)(n > 24 ? 24 : n), p);
    return DB_E_INVAL;
  }
  size_t kl = (size_t)(eq - p), vl = n - kl - 1;
  const char *v = eq + 1;
  if (kl == 8 && strncmp(p, "currency", 8) == 0) {
    char cur[4] = "";
    if (vl == 3)
      memcpy(cur, v, 3);
    if (db_lookup_check_currency(cur) != 0) {
      db__set_err(err, cap, "terminal totals: currency must be 3 digits");
      return DB_E_INVAL;
    }
    memcpy(out->currency, cur, 4);
    return 0;
  }
  int i = field_index(p, kl);
  if (i < 0) {
    db__set_err(
        err, cap,
        "terminal totals: unknown field \"%.*s\" (de74..de77, de86..de89, "
        "de97, currency)",
        (int)(kl > 12 ? 12 : kl), p);
    return DB_E_INVAL;
  }
  if (*seen & (1u << i)) {
    db__set_err(err, cap, "terminal totals: de%d given twice", fields[i].de);
    return DB_E_INVAL;
  }
  if (fields[i].de == 97) {
    if (vl < 2 || (v[0] != 'C' && v[0] != 'D')) {
      db__set_err(err, cap, "terminal totals: de97 must be C or D then digits");
      return DB_E_INVAL;
    }
    out->net_sign = v[0];
    v++;
    vl--;
  }
  if (parse_digits(v, vl, fields[i].max, field(out, (size_t)i)) != 0) {
    db__set_err(err, cap, "terminal totals: de%d must be 1 to %d digits",
                fields[i].de, fields[i].max == DB_RECON_COUNT_MAX ? 10 : 16);
    return DB_E_INVAL;
  }
  *seen |= 1u << i;
  return 0;
}

int db_recon_parse_totals(const char *text, db_recon_totals_t *out, char *err,
                          size_t cap) {
  if (err && cap)
    err[0] = '\0';
  if (!out)
    return DB_E_INVAL;
  db_recon_totals_init(out, NULL);
  if (!text || strlen(text) > 512) {
    db__set_err(err, cap, "terminal totals: missing or longer than 512 bytes");
    return DB_E_INVAL;
  }
  unsigned seen = 0;
  const char *p = text;
  for (;;) {
    size_t n = strcspn(p, ",");
    int rc = parse_pair(p, n, out, &seen, err, cap);
    if (rc)
      return rc;
    if (!p[n])
      break;
    p += n + 1;
  }
  for (size_t i = 0; i < DB_RECON_FIELDS; i++)
    if (!(seen & (1u << i))) {
      db__set_err(err, cap, "terminal totals: de%d is missing", fields[i].de);
      return DB_E_INVAL;
    }
  return 0;
}
