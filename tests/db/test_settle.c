/*
 * test_settle.c — end-of-day settlement and clearing (db/settle.h,
 * docs/settlement.md) on a throwaway PostgreSQL 15 cluster (pgtest.h).
 *
 * A business day is generated as a list of transactions (every kind and
 * outcome, currencies with exponents 0, 2 and 3, partial approvals,
 * partial and full reversals, late reversals into a later date), written
 * to the journal as events with plain SQL, settled, and checked against an
 * independent computation done here in plain C over the generated list
 * (never the library's SQL): the stored totals, the clearing file (parsed
 * record by record) and the CSV report.  Also: idempotent re-runs, a crash
 * between the rename and the COMMIT (switchctl as a subprocess with
 * SW_SETTLE_FAULT), the pending refusal, the closed date refusing new
 * events, the verify check, and the small pieces (fee rounding, varint,
 * decimal rendering, value dates).
 */
#include "clearing.pb-c.h"
#include "pgtest.h"
#include "settle.h"
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SW_SWITCHCTL
#error "SW_SWITCHCTL must name the switchctl binary"
#endif

#define D0 "2026-03-09" /* settled first; late reversals go into D */
#define D "2026-03-10"  /* the generated business day */
#define D2 "2026-03-11" /* the next open date after D */
#define DP "2026-03-20" /* pending refusal */
#define DC "2026-03-25" /* crash between the steps */
#define DT "2026-03-27" /* two runs at once */
#define DX "2026-03-28" /* data that cannot settle */
#define DY "2026-03-29"

/* ------------------------------------------------------------------------
 * Reference data: merchants with their fee plans, terminals, issuers.
 */

typedef struct {
  const char *id;
  int bps;
  long long fixed;
  const char *fee_cur;
  int days;
} merchant_t;

static const merchant_t merchants[] = {
    {"MERCH0001", 150, 25, "840", 1},  {"MERCH0002", 275, 3, "392", 0},
    {"MERCH0003", 199, 150, "414", 2}, {"MERCH 004", 0, 0, "840", 30},
    {"GHOST0001", 0, 0, "840", 0}, /* not in switch.merchants */
};
#define NMER 4
#define TERM_PER_MER 2
static const char *const issuers[] = {"iss_a", "iss_b", "iss_c"};
static const struct {
  const char *code, *alpha;
  int exp;
} currencies[] = {{"392", "JPY", 0}, {"840", "USD", 2}, {"414", "KWD", 3}};

static void terminal_id(int m, int k, char out[9]) {
  snprintf(out, 9, "T%d%d", m, k);
}

/* ------------------------------------------------------------------------
 * The generated transactions and what settles, computed here.
 */

typedef struct {
  const char *date;
  int node;
  long long txn;
  const char *kind;    /* purchase cash refund completion preauth inquiry */
  const char *outcome; /* approved stand_in declined stand_in_declined
                          timeout late rejected pending */
  int cur;             /* index in currencies */
  long long req;       /* requested amount */
  long long approved;  /* approved amount (outcome approved, stand_in) */
  long long rev_same;  /* reversed in the same date (0: none) */
  int rev_acked;       /* the reversal was acknowledged */
  long long rev_late;  /* reversed later, into late_date (0: none) */
  const char *late_date;
  int m, t, iss;
} gtxn_t;

#define MAXT 600
static gtxn_t g_txn[MAXT];
static int g_nt;
static long long g_counter = 1000;
static uint64_t g_rng = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void) {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

static const char *mti_of(const char *kind) {
  return strcmp(kind, "completion") == 0 ? "0220"
         : strcmp(kind, "preauth") == 0  ? "0100"
                                         : "0200";
}

static const char *pcode_of(const char *kind) {
  return strcmp(kind, "cash") == 0      ? "010000"
         : strcmp(kind, "refund") == 0  ? "200000"
         : strcmp(kind, "inquiry") == 0 ? "310000"
                                        : "000000";
}

static char sign_of(const gtxn_t *t) {
  return strcmp(t->kind, "refund") == 0 ? 'C' : 'D';
}

static int approved_outcome(const gtxn_t *t) {
  return strcmp(t->outcome, "approved") == 0 ||
         strcmp(t->outcome, "stand_in") == 0;
}

static int kind_settles(const char *k) {
  return strcmp(k, "purchase") == 0 || strcmp(k, "cash") == 0 ||
         strcmp(k, "refund") == 0 || strcmp(k, "completion") == 0;
}

/* The amount the original settles in its own date (0: nothing). */
static long long settles_amount(const gtxn_t *t) {
  if (!kind_settles(t->kind) || !approved_outcome(t))
    return 0;
  return t->approved - t->rev_same;
}

static gtxn_t *add_txn(const char *date, int node, const char *kind,
                       const char *outcome, int cur, long long req,
                       long long approved, int m) {
  CU_ASSERT_FATAL(g_nt < MAXT);
  gtxn_t *t = &g_txn[g_nt++];
  memset(t, 0, sizeof *t);
  t->date = date;
  t->node = node;
  t->txn = ((long long)node << 48) | g_counter++;
  t->kind = kind;
  t->outcome = outcome;
  t->cur = cur;
  t->req = strcmp(kind, "inquiry") == 0 ? 0 : req;
  t->approved =
      approved_outcome(t) && strcmp(kind, "inquiry") != 0 ? approved : 0;
  t->m = m;
  t->t = (int)(rnd() % TERM_PER_MER);
  t->iss = (int)(rnd() % 3);
  return t;
}

/* One settled item as this test computes it. */
typedef struct {
  const gtxn_t *t;
  int adjustment;
  char sign;
  long long amount;
} xitem_t;

static int expected_items(const char *date, xitem_t *out) {
  int n = 0;
  for (int i = 0; i < g_nt; i++) {
    const gtxn_t *t = &g_txn[i];
    if (strcmp(t->date, date) == 0 && settles_amount(t) > 0)
      out[n++] = (xitem_t){t, 0, sign_of(t), settles_amount(t)};
    if (t->rev_late && t->late_date && strcmp(t->late_date, date) == 0 &&
        settles_amount(t) > 0)
      out[n++] = (xitem_t){t, 1, sign_of(t) == 'D' ? 'C' : 'D', t->rev_late};
  }
  return n;
}

typedef struct {
  char level[9], key[16], cur[4];
  long long dc, dm, cc, cm, fee, base, ndeb;
} xtotal_t;

static xtotal_t *xfind(xtotal_t *v, int *n, const char *level, const char *key,
                       const char *cur) {
  for (int i = 0; i < *n; i++)
    if (!strcmp(v[i].level, level) && !strcmp(v[i].key, key) &&
        !strcmp(v[i].cur, cur))
      return &v[i];
  xtotal_t *x = &v[(*n)++];
  memset(x, 0, sizeof *x);
  snprintf(x->level, sizeof x->level, "%s", level);
  snprintf(x->key, sizeof x->key, "%s", key);
  snprintf(x->cur, sizeof x->cur, "%s", cur);
  return x;
}

/* The fee, written independently of the library: 128-bit product. */
static long long xfee(long long base, int bps) {
  __int128 p = (__int128)base * bps + 5000;
  return (long long)(p / 10000);
}

static int expected_totals(const xitem_t *it, int n, xtotal_t *v) {
  int nv = 0;
  for (int i = 0; i < n; i++) {
    char term[9];
    terminal_id(it[i].t->m, it[i].t->t, term);
    const char *keys[3] = {merchants[it[i].t->m].id, term,
                           issuers[it[i].t->iss]};
    static const char *const levels[3] = {"merchant", "terminal", "issuer"};
    for (int l = 0; l < 3; l++) {
      xtotal_t *x =
          xfind(v, &nv, levels[l], keys[l], currencies[it[i].t->cur].code);
      if (it[i].sign == 'D') {
        x->dc++;
        x->dm += it[i].amount;
        if (!it[i].adjustment) {
          x->base += it[i].amount;
          x->ndeb++;
        }
      } else {
        x->cc++;
        x->cm += it[i].amount;
      }
    }
  }
  for (int i = 0; i < nv; i++) {
    if (strcmp(v[i].level, "merchant") != 0)
      continue;
    for (int m = 0; m < NMER; m++)
      if (!strcmp(merchants[m].id, v[i].key))
        v[i].fee = xfee(v[i].base, merchants[m].bps) +
                   (!strcmp(v[i].cur, merchants[m].fee_cur)
                        ? merchants[m].fixed * v[i].ndeb
                        : 0);
  }
  return nv;
}

/* ------------------------------------------------------------------------
 * Writing the journal with plain SQL, as switch_writer.
 */

static PGconn *g_w; /* switch_writer */
static struct {
  char date[11];
  int node;
  long long seq;
} g_chain[32];
static int g_nchain;

static long long next_seq(const char *date, int node) {
  for (int i = 0; i < g_nchain; i++)
    if (!strcmp(g_chain[i].date, date) && g_chain[i].node == node)
      return ++g_chain[i].seq;
  CU_ASSERT_FATAL(g_nchain < 32);
  snprintf(g_chain[g_nchain].date, 11, "%s", date);
  g_chain[g_nchain].node = node;
  g_chain[g_nchain].seq = 1;
  return g_chain[g_nchain++].seq;
}

static const char ins_sql[] =
    "INSERT INTO switch.journal_event (business_date, node_id, txn_id,"
    " event_no, event, state, mti, processing_code, amount_minor, sign,"
    " currency, terminal_id, merchant_id, issuer_id, txn_kind, rrn, stan,"
    " pan_masked, pan_hash, pan_hash_key_ver, pan_enc, pan_enc_key_ver,"
    " orig_business_date, chain_seq, chain_hmac, chain_key_ver, batch_no)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,"
    " $15, $16, $17, $18,"
    " CASE WHEN $19::bool THEN sha256(convert_to('pan:' || $3::bigint::text,"
    " 'UTF8')) END, CASE WHEN $19::bool THEN 1 END,"
    " CASE WHEN $19::bool THEN sha256(convert_to('e1:' || $3::bigint::text,"
    " 'UTF8')) || sha256(convert_to('e2:' || $3::bigint::text, 'UTF8')) END,"
    " CASE WHEN $19::bool THEN 1 END, $20, $21,"
    " sha256(convert_to(format('%s/%s/%s/%s', $1::date, $2::int,"
    " $3::bigint, $4::int), 'UTF8')), 1, $22)";

/* Inserts one event of t into date; amount < 0: no money columns.
 * Returns the result status; SQLSTATE and constraint into state/cons. */
static ExecStatusType ev_try(const gtxn_t *t, const char *date, int no,
                             const char *event, const char *state,
                             long long amount, const char *orig, char *sqlstate,
                             char *cons) {
  char node[8], txn[24], eno[8], amt[24], sign[2], term[9], rrn[24], stan[24],
      seq[24];
  snprintf(node, sizeof node, "%d", t->node);
  snprintf(txn, sizeof txn, "%lld", t->txn);
  snprintf(eno, sizeof eno, "%d", no);
  snprintf(amt, sizeof amt, "%lld", amount);
  snprintf(sign, sizeof sign, "%c", sign_of(t));
  terminal_id(t->m, t->t, term);
  snprintf(rrn, sizeof rrn, "%012llu",
           (unsigned long long)t->txn % 1000000000000ULL);
  snprintf(stan, sizeof stan, "%06llu", (unsigned long long)t->txn % 1000000);
  snprintf(seq, sizeof seq, "%lld", next_seq(date, t->node));
  int rec = no == 0, money = amount >= 0;
  const char *p[22] = {date,
                       node,
                       txn,
                       eno,
                       event,
                       state,
                       mti_of(t->kind),
                       rec ? pcode_of(t->kind) : NULL,
                       money ? amt : NULL,
                       money ? sign : NULL,
                       money ? currencies[t->cur].code : NULL,
                       rec ? term : NULL,
                       rec ? merchants[t->m].id : NULL,
                       rec ? issuers[t->iss] : NULL,
                       rec ? t->kind : NULL,
                       rec ? rrn : NULL,
                       rec ? stan : NULL,
                       rec ? "411111******1111" : NULL,
                       rec ? "true" : "false",
                       orig,
                       seq,
                       rec ? "7" : NULL};
  PGresult *r = PQexecParams(g_w, ins_sql, 22, NULL, p, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  if (sqlstate) {
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(sqlstate, 6, "%s", s ? s : "");
  }
  if (cons) {
    const char *s = PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME);
    snprintf(cons, 64, "%s", s ? s : "");
  }
  if (st != PGRES_COMMAND_OK && !sqlstate)
    fprintf(stderr, "insert %s %s: %s", event, txn, PQresultErrorMessage(r));
  PQclear(r);
  return st;
}

static void ev(const gtxn_t *t, const char *date, int no, const char *event,
               const char *state, long long amount, const char *orig) {
  /* Not fatal: write_date must still end its transaction. */
  CU_ASSERT_EQUAL(ev_try(t, date, no, event, state, amount, orig, NULL, NULL),
                  PGRES_COMMAND_OK);
}

/* Writes every event of t in its own date, as the switch would. */
static void write_txn(const gtxn_t *t) {
  const char *d = t->date, *o = t->outcome;
  long long req = strcmp(t->kind, "inquiry") == 0 ? -1 : t->req;
  int n = 0;
  ev(t, d, n++, "received", "received", req, NULL);
  if (!strcmp(o, "rejected")) {
    ev(t, d, n++, "rejected", "rejected", -1, NULL);
    return;
  }
  if (!strcmp(o, "stand_in") || !strcmp(o, "stand_in_declined")) {
    int ok = !strcmp(o, "stand_in");
    ev(t, d, n++, "stand_in", ok ? "stood_in" : "declined",
       ok && req >= 0 ? t->approved : -1, NULL);
  } else {
    ev(t, d, n++, "armed", "armed", -1, NULL);
    ev(t, d, n++, "forwarded", "forwarded", -1, NULL);
    if (!strcmp(o, "pending"))
      return;
    if (!strcmp(o, "approved"))
      ev(t, d, n++, "response", "approved", req >= 0 ? t->approved : -1, NULL);
    else if (!strcmp(o, "declined"))
      ev(t, d, n++, "response", "declined", -1, NULL);
    else {
      ev(t, d, n++, "timeout", "timed_out", -1, NULL);
      if (!strcmp(o, "late")) {
        ev(t, d, n++, "late_response", "timed_out", req, NULL);
        ev(t, d, n++, "reversal_acked", "reversed", -1, NULL);
      }
      return;
    }
  }
  if (t->rev_same) {
    int declined = !approved_outcome(t);
    ev(t, d, n++, "reversal_requested",
       declined ? "reversed" : "reversal_pending", t->rev_same, NULL);
    if (t->rev_acked && !declined)
      ev(t, d, n++, "reversal_acked", "reversed", -1, NULL);
  }
}

/* The late reversal of t, written into late_date as an adjustment. */
static void write_late_reversal(const gtxn_t *t) {
  ev(t, t->late_date, 50, "reversal_requested", "reversal_pending", t->rev_late,
     t->date);
  ev(t, t->late_date, 51, "reversal_acked", "reversed", -1, t->date);
}

static void ensure_partition(const char *date) {
  char sql[128];
  snprintf(sql, sizeof sql, "SELECT switch.ensure_journal_partition('%s')",
           date);
  CU_ASSERT_EQUAL_FATAL(pgt_exec(g_w, sql, NULL, NULL, 0), PGRES_TUPLES_OK);
}

/* ------------------------------------------------------------------------
 * The generated day.
 */

static const char *const kinds[] = {"purchase",   "cash",    "refund",
                                    "completion", "preauth", "inquiry"};
static const char *const outcomes[] = {
    "approved", "approved", "approved", "approved",          "stand_in",
    "declined", "timeout",  "late",     "stand_in_declined", "rejected"};

static long long rnd_amount(void) {
  switch (rnd() % 4) {
  case 0:
    return 1 + (long long)(rnd() % 99); /* tiny: rounding at its edge */
  case 1:
    return 1 + (long long)(rnd() % 100000);
  case 2:
    return 1 + (long long)(rnd() % 100000000);
  default:
    return 9999 + 10000 * (long long)(rnd() % 1000); /* ends in 9999 */
  }
}

static void generate_day(const char *date, int count) {
  for (int i = 0; i < count; i++) {
    const char *kind = kinds[rnd() % 6];
    const char *out = outcomes[rnd() % 10];
    long long req = rnd_amount();
    long long appr = req;
    if (rnd() % 5 == 0 && req > 1)
      appr = 1 + (long long)(rnd() % (uint64_t)(req - 1)); /* partial */
    /* One draw per statement: argument order is unspecified. */
    int node = 1 + (int)(rnd() % 2);
    int cur = (int)(rnd() % 3);
    int m = (int)(rnd() % NMER);
    gtxn_t *t = add_txn(date, node, kind, out, cur, req, appr, m);
    /* Reversals: full, partial (pending or acknowledged), or one after a
     * decline (nothing to reverse). */
    uint64_t r = rnd() % 8;
    if (approved_outcome(t) && t->approved > 0 && r == 0)
      t->rev_same = t->approved;
    else if (approved_outcome(t) && t->approved > 1 && r == 1)
      t->rev_same = 1 + (long long)(rnd() % (uint64_t)(t->approved - 1));
    else if (!strcmp(out, "declined") && r == 2 && t->req > 0)
      t->rev_same = t->req;
    t->rev_acked = (int)(rnd() % 2);
  }
}

/* Fixed cases, so every kind and rule is present whatever the generator
 * draws. */
static void fixed_cases(const char *date) {
  for (int k = 0; k < 6; k++)
    for (int c = 0; c < 3; c++)
      add_txn(date, 1, kinds[k], "approved", c, 12345, 12345, k % NMER);
  gtxn_t *t = add_txn(date, 2, "purchase", "approved", 2, 50000, 30001, 2);
  (void)t; /* partial approval */
  t = add_txn(date, 2, "purchase", "approved", 1, 8000, 8000, 0);
  t->rev_same = 3000; /* partial reversal, pending */
  t = add_txn(date, 2, "cash", "approved", 0, 7000, 7000, 1);
  t->rev_same = 2500; /* partial reversal, acknowledged */
  t->rev_acked = 1;
  t = add_txn(date, 1, "purchase", "approved", 1, 4000, 4000, 3);
  t->rev_same = 4000; /* fully reversed */
  t->rev_acked = 1;
  add_txn(date, 1, "completion", "stand_in", 2, 999, 999, 2);
  add_txn(date, 1, "purchase", "timeout", 1, 5000, 5000, 0);
  add_txn(date, 1, "purchase", "late", 1, 5000, 5000, 0);
  add_txn(date, 1, "refund", "declined", 1, 5000, 5000, 0);
}

static void write_date(const char *date) {
  ensure_partition(date);
  CU_ASSERT_EQUAL_FATAL(pgt_exec(g_w, "BEGIN", NULL, NULL, 0),
                        PGRES_COMMAND_OK);
  for (int i = 0; i < g_nt; i++)
    if (!strcmp(g_txn[i].date, date))
      write_txn(&g_txn[i]);
  CU_ASSERT_EQUAL_FATAL(pgt_exec(g_w, "COMMIT", NULL, NULL, 0),
                        PGRES_COMMAND_OK);
}

/* ------------------------------------------------------------------------
 * Checking the stored totals, the clearing file and the report.
 */

static char g_out[400]; /* clearing folder */

static void check_totals(const char *date) {
  static xitem_t items[MAXT * 2];
  static xtotal_t tot[MAXT * 3];
  int n = expected_items(date, items);
  int nt = expected_totals(items, n, tot);
  PGconn *r = pgt_connect(pgt_reader); /* settlement is readable */
  const char *p[1] = {date};
  PGresult *res = PQexecParams(
      r,
      "SELECT level, key, currency, debit_count, debit_minor, credit_count,"
      " credit_minor, fee_minor, net_minor, net_sign, value_date::text"
      " FROM switch.settlement_totals WHERE business_date = $1",
      1, NULL, p, NULL, NULL, 0);
  CU_ASSERT_EQUAL_FATAL(PQresultStatus(res), PGRES_TUPLES_OK);
  CU_ASSERT_EQUAL(PQntuples(res), nt);
  int matched = 0;
  for (int i = 0; i < PQntuples(res); i++) {
    xtotal_t *x = NULL;
    for (int k = 0; k < nt; k++)
      if (!strcmp(tot[k].level, PQgetvalue(res, i, 0)) &&
          !strcmp(tot[k].key, PQgetvalue(res, i, 1)) &&
          !strcmp(tot[k].cur, PQgetvalue(res, i, 2)))
        x = &tot[k];
    CU_ASSERT_PTR_NOT_NULL(x);
    if (!x)
      continue;
    matched++;
    CU_ASSERT_EQUAL(atoll(PQgetvalue(res, i, 3)), x->dc);
    CU_ASSERT_EQUAL(atoll(PQgetvalue(res, i, 4)), x->dm);
    CU_ASSERT_EQUAL(atoll(PQgetvalue(res, i, 5)), x->cc);
    CU_ASSERT_EQUAL(atoll(PQgetvalue(res, i, 6)), x->cm);
    CU_ASSERT_EQUAL(atoll(PQgetvalue(res, i, 7)), x->fee);
    long long net = x->dm - x->cm - x->fee;
    CU_ASSERT_EQUAL(atoll(PQgetvalue(res, i, 8)), net < 0 ? -net : net);
    CU_ASSERT_STRING_EQUAL(PQgetvalue(res, i, 9), net < 0 ? "C" : "D");
    if (!strcmp(x->level, "merchant")) {
      /* The value date by PostgreSQL's date arithmetic. */
      for (int m = 0; m < NMER; m++)
        if (!strcmp(merchants[m].id, x->key)) {
          char sql[128], want[16];
          snprintf(sql, sizeof sql, "SELECT (date '%s' + %d)::text", date,
                   merchants[m].days);
          pgt_str(g_w, sql, want, sizeof want);
          CU_ASSERT_STRING_EQUAL(PQgetvalue(res, i, 10), want);
        }
    } else {
      CU_ASSERT(PQgetisnull(res, i, 10));
    }
  }
  CU_ASSERT_EQUAL(matched, nt);
  PQclear(res);
  PQfinish(r);
}

static unsigned char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  unsigned char *b = NULL;
  size_t cap = 0, n = 0, k;
  do {
    if (n == cap) {
      cap = cap ? cap * 2 : 65536;
      unsigned char *nb = realloc(b, cap);
      if (!nb) {
        free(b);
        fclose(f);
        return NULL;
      }
      b = nb;
    }
    k = fread(b + n, 1, cap - n, f);
    n += k;
  } while (k > 0);
  fclose(f);
  *len = n;
  return b;
}

static int contains(const unsigned char *b, size_t len, const char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i + n <= len; i++)
    if (memcmp(b + i, s, n) == 0)
      return 1;
  return 0;
}

static void path_of(const char *date, const char *ext, char *out, size_t cap) {
  snprintf(out, cap, "%s/clearing-%s.%s", g_out, date, ext);
}

/* Parses the clearing file of date record by record and checks it
 * against the expected items. */
static void check_clearing_file(const char *date) {
  static xitem_t items[MAXT * 2];
  int n = expected_items(date, items);
  char path[512];
  path_of(date, "pb", path, sizeof path);
  size_t len = 0;
  unsigned char *b = slurp(path, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  /* No clear PAN (the test's card is 4111111111111111) anywhere. */
  CU_ASSERT(!contains(b, len, "4111111111111111"));
  size_t off = 0;
  int recs = 0, txns = 0, adjs = 0, mers = 0, saw_trailer = 0;
  const Sw__Clearing__Transaction *prev = NULL;
  Sw__Clearing__Record *prev_rec = NULL;
  while (off < len) {
    uint64_t l;
    int k = db_varint_get(b + off, len - off, &l);
    CU_ASSERT_FATAL(k > 0 && l <= len - off - (size_t)k);
    Sw__Clearing__Record *rec =
        sw__clearing__record__unpack(NULL, (size_t)l, b + off + (size_t)k);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rec);
    off += (size_t)k + (size_t)l;
    CU_ASSERT_FATAL(!saw_trailer);
    if (recs == 0) {
      CU_ASSERT_EQUAL(rec->body_case, SW__CLEARING__RECORD__BODY_HEADER);
      if (rec->body_case == SW__CLEARING__RECORD__BODY_HEADER)
        CU_ASSERT_STRING_EQUAL(rec->header->business_date, date);
    } else if (rec->body_case == SW__CLEARING__RECORD__BODY_TRANSACTION) {
      const Sw__Clearing__Transaction *t = rec->transaction;
      CU_ASSERT_EQUAL(mers, 0); /* transactions before summaries */
      int found = 0;
      for (int i = 0; i < n; i++)
        if (items[i].t->txn == t->txn_id &&
            items[i].adjustment == (int)t->adjustment) {
          found++;
          CU_ASSERT_EQUAL((long long)t->amount_minor, items[i].amount);
          CU_ASSERT_EQUAL(t->sign[0], items[i].sign);
          CU_ASSERT_STRING_EQUAL(t->currency, currencies[items[i].t->cur].code);
          CU_ASSERT_EQUAL((int)t->exponent, currencies[items[i].t->cur].exp);
          CU_ASSERT_STRING_EQUAL(t->business_date, items[i].t->date);
          CU_ASSERT_STRING_EQUAL(t->merchant_id, merchants[items[i].t->m].id);
        }
      CU_ASSERT_EQUAL(found, 1);
      CU_ASSERT_STRING_EQUAL(t->pan_masked, "411111******1111");
      CU_ASSERT_EQUAL(t->pan_hash.len, 32);
      CU_ASSERT_EQUAL(t->pan_enc.len, 64);
      CU_ASSERT_EQUAL(t->pan_enc_key_ver, 1);
      /* Deterministic order: merchant, terminal, date, node, txn. */
      if (prev) {
        int d = strcmp(prev->merchant_id, t->merchant_id);
        if (!d)
          d = strcmp(prev->terminal_id, t->terminal_id);
        if (!d)
          d = strcmp(prev->business_date, t->business_date);
        if (!d)
          d = (int)prev->node_id - (int)t->node_id;
        if (!d)
          d = prev->txn_id < t->txn_id ? -1 : 1;
        CU_ASSERT(d < 0);
      }
      prev = t;
      txns++;
      adjs += t->adjustment != 0;
    } else if (rec->body_case == SW__CLEARING__RECORD__BODY_MERCHANT) {
      mers++;
    } else {
      CU_ASSERT_EQUAL(rec->body_case, SW__CLEARING__RECORD__BODY_TRAILER);
      saw_trailer = 1;
      recs++;
      CU_ASSERT_EQUAL((int)rec->trailer->record_count, recs);
      CU_ASSERT_EQUAL((int)rec->trailer->transaction_count, n);
      CU_ASSERT_EQUAL((int)rec->trailer->merchant_count, mers);
      /* Per-currency totals: debits and credits, summed here. */
      for (size_t c = 0; c < rec->trailer->n_totals; c++) {
        const Sw__Clearing__Totals *u = rec->trailer->totals[c];
        long long dm = 0, cm = 0;
        for (int i = 0; i < n; i++)
          if (!strcmp(currencies[items[i].t->cur].code, u->currency))
            *(items[i].sign == 'D' ? &dm : &cm) += items[i].amount;
        CU_ASSERT_EQUAL((long long)u->debit_minor, dm);
        CU_ASSERT_EQUAL((long long)u->credit_minor, cm);
      }
      sw__clearing__record__free_unpacked(rec, NULL);
      continue;
    }
    recs++;
    /* Keep the previous record alive for the order check. */
    if (prev_rec)
      sw__clearing__record__free_unpacked(prev_rec, NULL);
    prev_rec = rec;
  }
  if (prev_rec)
    sw__clearing__record__free_unpacked(prev_rec, NULL);
  CU_ASSERT(saw_trailer);
  CU_ASSERT_EQUAL(txns, n);
  int nadj = 0;
  for (int i = 0; i < n; i++)
    nadj += items[i].adjustment;
  CU_ASSERT_EQUAL(adjs, nadj);
  free(b);
}

/* The CSV report: one line per item with its decimal amount, rendered
 * here with integer division. */
static void check_report(const char *date) {
  static xitem_t items[MAXT * 2];
  int n = expected_items(date, items);
  char path[512];
  path_of(date, "csv", path, sizeof path);
  size_t len = 0;
  unsigned char *b = slurp(path, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  unsigned char *z = realloc(b, len + 1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(z);
  z[len] = '\0';
  char *text = (char *)z;
  CU_ASSERT(strncmp(text, "record,business_date,", 21) == 0);
  for (int i = 0; i < n; i++) {
    static const long long p10[] = {1, 10, 100, 1000};
    int e = currencies[items[i].t->cur].exp;
    char want[200], dec[40];
    if (e == 0)
      snprintf(dec, sizeof dec, "%lld", items[i].amount);
    else
      snprintf(dec, sizeof dec, "%lld.%0*lld", items[i].amount / p10[e], e,
               items[i].amount % p10[e]);
    snprintf(want, sizeof want, ",%s,%s,%c,%lld,%s,",
             currencies[items[i].t->cur].code,
             currencies[items[i].t->cur].alpha, items[i].sign, items[i].amount,
             dec);
    char id[64];
    snprintf(id, sizeof id, "%s,%s,%s,%d,%lld,",
             items[i].adjustment ? "adjustment" : "transaction",
             items[i].t->date, date, items[i].t->node, items[i].t->txn);
    char *line = strstr(text, id);
    CU_ASSERT_PTR_NOT_NULL(line);
    if (line) {
      char *eol = strchr(line, '\n');
      CU_ASSERT_PTR_NOT_NULL_FATAL(eol);
      *eol = '\0';
      CU_ASSERT_PTR_NOT_NULL(strstr(line, want));
      *eol = '\n';
    }
  }
  free(z);
}

static int settle(const char *date, db_settle_result_t *res, char *err,
                  size_t cap) {
  PGconn *c = pgt_connect(pgt_writer);
  db_settle_opts_t o = {date, g_out, NULL, NULL};
  int rc = db_settle(c, &o, res, err, cap);
  PQfinish(c);
  if (rc)
    fprintf(stderr, "\nsettle %s: %s: %s\n", date, db_err_name(rc), err);
  return rc;
}

static long long count_totals(const char *date) {
  char sql[160];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM switch.settlement_totals WHERE "
           "business_date = '%s'",
           date);
  return pgt_ll(g_w, sql);
}

static int is_closed(const char *date) {
  char sql[200];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM switch.business_dates WHERE business_date "
           "= '%s' AND status = 'closed'",
           date);
  return pgt_ll(g_w, sql) == 1;
}

static int has_closed_constraint(const char *date) {
  char sql[300], compact[9];
  snprintf(compact, sizeof compact, "%.4s%.2s%.2s", date, date + 5, date + 8);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM pg_constraint WHERE conname = "
           "'journal_closed' AND conrelid = "
           "'switch.journal_event_%s'::regclass",
           compact);
  return pgt_ll(g_w, sql) == 1;
}

/* ------------------------------------------------------------------------
 * Tests: the pieces.
 */

static void test_varint_encodes_decodes_and_rejects_malformed(void) {
  uint8_t b[10];
  CU_ASSERT_EQUAL(db_varint_put(0, b), 1);
  CU_ASSERT_EQUAL(b[0], 0);
  CU_ASSERT_EQUAL(db_varint_put(300, b), 2); /* 300 = 0b10_0101100 */
  CU_ASSERT(b[0] == 0xac && b[1] == 0x02);
  CU_ASSERT_EQUAL(db_varint_put(UINT64_MAX, b), 10);
  for (int i = 0; i < 9; i++)
    CU_ASSERT_EQUAL(b[i], 0xff);
  CU_ASSERT_EQUAL(b[9], 0x01);
  const uint64_t vals[] = {0,           1,          127,
                           128,         16383,      16384,
                           4294967295u, 1ULL << 35, (1ULL << 63) - 1,
                           1ULL << 63,  UINT64_MAX};
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    uint64_t v = 0;
    size_t n = db_varint_put(vals[i], b);
    size_t want = 1;
    for (uint64_t x = vals[i]; x >= 128; x >>= 7)
      want++;
    CU_ASSERT_EQUAL(n, want);
    CU_ASSERT_EQUAL(db_varint_get(b, n, &v), (int)n);
    CU_ASSERT_EQUAL(v, vals[i]);
    CU_ASSERT_EQUAL(db_varint_get(b, n - 1, &v), 0); /* truncated */
  }
  uint8_t over[11];
  memset(over, 0x80, sizeof over);
  uint64_t v;
  CU_ASSERT_EQUAL(db_varint_get(over, sizeof over, &v), -1);
  uint8_t big[10] = {0xff, 0xff, 0xff, 0xff, 0xff,
                     0xff, 0xff, 0xff, 0xff, 0x02}; /* 2^64 */
  CU_ASSERT_EQUAL(db_varint_get(big, 10, &v), -1);
}

static void test_fee_rounds_half_up_without_overflow(void) {
  /* Hand-worked cases: 0.5 rounds up, 0.4999 down. */
  CU_ASSERT_EQUAL(db_settle_fee_pct(0, 150), 0);
  CU_ASSERT_EQUAL(db_settle_fee_pct(1, 5000), 1);      /* 0.5 */
  CU_ASSERT_EQUAL(db_settle_fee_pct(1, 4999), 0);      /* 0.4999 */
  CU_ASSERT_EQUAL(db_settle_fee_pct(333, 150), 5);     /* 4.995 */
  CU_ASSERT_EQUAL(db_settle_fee_pct(10, 150), 0);      /* 0.15 */
  CU_ASSERT_EQUAL(db_settle_fee_pct(100, 150), 2);     /* 1.5 */
  CU_ASSERT_EQUAL(db_settle_fee_pct(99, 150), 1);      /* 1.485 */
  CU_ASSERT_EQUAL(db_settle_fee_pct(12345, 275), 339); /* 339.4875 */
  CU_ASSERT_EQUAL(db_settle_fee_pct(10000, 1), 1);
  CU_ASSERT_EQUAL(db_settle_fee_pct(INT64_MAX, 10000), INT64_MAX);
  CU_ASSERT_EQUAL(db_settle_fee_pct(INT64_MAX, 0), 0);
  CU_ASSERT_EQUAL(db_settle_fee_pct(-1, 10), -1);
  CU_ASSERT_EQUAL(db_settle_fee_pct(1, 10001), -1);
  CU_ASSERT_EQUAL(db_settle_fee_pct(1, -1), -1);
  /* Against 128-bit arithmetic over a sweep, large bases included. */
  for (int i = 0; i < 20000; i++) {
    int shift = (int)(rnd() % 63) + 1;
    long long base = (long long)(rnd() >> shift);
    int bps = (int)(rnd() % 10001);
    CU_ASSERT_EQUAL(db_settle_fee_pct(base, bps), xfee(base, bps));
  }
}

static void test_format_minor_uses_the_exponent(void) {
  char b[32];
  CU_ASSERT_EQUAL(db_format_minor(12345, 2, b, sizeof b), 6);
  CU_ASSERT_STRING_EQUAL(b, "123.45");
  db_format_minor(-5, 3, b, sizeof b);
  CU_ASSERT_STRING_EQUAL(b, "-0.005");
  db_format_minor(7, 0, b, sizeof b);
  CU_ASSERT_STRING_EQUAL(b, "7");
  db_format_minor(10, 4, b, sizeof b);
  CU_ASSERT_STRING_EQUAL(b, "0.0010");
  db_format_minor(INT64_MIN, 2, b, sizeof b);
  CU_ASSERT_STRING_EQUAL(b, "-92233720368547758.08");
  CU_ASSERT_EQUAL(db_format_minor(1, 5, b, sizeof b), -1);
  CU_ASSERT_EQUAL(db_format_minor(123456, 2, b, 4), -1);
}

static void test_value_date_adds_calendar_days(void) {
  char out[11];
  CU_ASSERT_EQUAL(db_date_add_days("2028-02-28", 1, out), 0);
  CU_ASSERT_STRING_EQUAL(out, "2028-02-29");
  db_date_add_days("2027-02-28", 1, out);
  CU_ASSERT_STRING_EQUAL(out, "2027-03-01");
  db_date_add_days("2026-12-31", 1, out);
  CU_ASSERT_STRING_EQUAL(out, "2027-01-01");
  db_date_add_days("2026-03-10", 30, out);
  CU_ASSERT_STRING_EQUAL(out, "2026-04-09");
  db_date_add_days("2026-03-10", 0, out);
  CU_ASSERT_STRING_EQUAL(out, "2026-03-10");
  CU_ASSERT_EQUAL(db_date_add_days("2026-02-29", 1, out), -1);
  CU_ASSERT_EQUAL(db_date_add_days("2026-3-10", 1, out), -1);
  CU_ASSERT_EQUAL(db_date_add_days("2026-03-10", -1, out), -1);
}

/* ------------------------------------------------------------------------
 * Tests: settling.
 */

static void test_settle_refuses_a_date_with_pending_transactions(void) {
  gtxn_t *ok = add_txn(DP, 1, "purchase", "approved", 1, 1000, 1000, 0);
  gtxn_t *pend = add_txn(DP, 1, "purchase", "pending", 1, 2000, 2000, 0);
  write_date(DP);
  char err[1024];
  db_settle_result_t *res = calloc(1, sizeof *res);
  CU_ASSERT_PTR_NOT_NULL_FATAL(res);
  PGconn *c = pgt_connect(pgt_writer);
  db_settle_opts_t o = {DP, g_out, NULL, NULL};
  CU_ASSERT_EQUAL(db_settle(c, &o, res, err, sizeof err), DB_E_PENDING);
  char want[64];
  snprintf(want, sizeof want, "txn_id %lld", pend->txn);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "forwarded"));
  CU_ASSERT_EQUAL(PQtransactionStatus(c), PQTRANS_IDLE);
  /* Nothing happened: open, no constraint, no totals, no file. */
  CU_ASSERT(!is_closed(DP));
  CU_ASSERT(!has_closed_constraint(DP));
  CU_ASSERT_EQUAL(count_totals(DP), 0);
  char path[512];
  path_of(DP, "pb", path, sizeof path);
  CU_ASSERT_NOT_EQUAL(access(path, F_OK), 0);
  /* The outcome arrives: now it settles, both transactions. */
  ev(pend, DP, 3, "response", "approved", 2000, NULL);
  pend->outcome = "approved";
  pend->approved = 2000;
  CU_ASSERT_EQUAL(db_settle(c, &o, res, err, sizeof err), 0);
  CU_ASSERT_EQUAL(res->transactions, 2);
  CU_ASSERT_EQUAL(res->ncurrencies, 1);
  CU_ASSERT_EQUAL(res->currencies[0].debit_minor, ok->approved + 2000);
  check_totals(DP);
  PQfinish(c);
  free(res);
}

static void test_settle_generated_day_matches_independent_totals(void) {
  /* D0: a day whose originals are reversed late, into D. */
  fixed_cases(D0);
  generate_day(D0, 60);
  write_date(D0);
  char err[1024];
  db_settle_result_t *res = calloc(1, sizeof *res);
  CU_ASSERT_PTR_NOT_NULL_FATAL(res);
  CU_ASSERT_EQUAL_FATAL(settle(D0, res, err, sizeof err), 0);
  CU_ASSERT_EQUAL(res->already_closed, 0);
  check_totals(D0);
  /* D: the generated day, plus late reversals of D0's originals. */
  fixed_cases(D);
  generate_day(D, 240);
  write_date(D);
  int late = 0;
  for (int i = 0; i < g_nt; i++) {
    gtxn_t *t = &g_txn[i];
    if (strcmp(t->date, D0) != 0 || !approved_outcome(t) ||
        t->approved - t->rev_same <= 0 || (late > 0 && rnd() % 3))
      continue;
    long long left = t->approved - t->rev_same;
    t->rev_late = late % 2 ? left : 1 + (long long)(rnd() % (uint64_t)left);
    t->late_date = D;
    write_late_reversal(t);
    late++;
  }
  CU_ASSERT(late >= 3);
  CU_ASSERT_EQUAL_FATAL(settle(D, res, err, sizeof err), 0);
  static xitem_t items[MAXT * 2];
  int n = expected_items(D, items), nadj = 0;
  for (int i = 0; i < n; i++)
    nadj += items[i].adjustment;
  CU_ASSERT(nadj >= 3);
  CU_ASSERT_EQUAL(res->transactions, n);
  CU_ASSERT_EQUAL(res->adjustments, nadj);
  CU_ASSERT_EQUAL(res->ncurrencies, 3);
  /* Every kind settled, in all three exponents. */
  for (int k = 0; k < 4; k++) {
    int seen = 0;
    for (int i = 0; i < n; i++)
      seen |= !strcmp(items[i].t->kind, kinds[k]) << items[i].t->cur;
    CU_ASSERT_EQUAL(seen, 7);
  }
  check_totals(D);
  check_clearing_file(D);
  check_report(D);
  check_clearing_file(D0);
  CU_ASSERT(is_closed(D) && has_closed_constraint(D));
  /* The sha256 recorded is the file's. */
  char rec[65];
  pgt_str(g_w,
          "SELECT clearing_sha256 FROM switch.business_dates WHERE "
          "business_date = '" D "'",
          rec, sizeof rec);
  CU_ASSERT_STRING_EQUAL(rec, res->sha256);
  free(res);
}

static void test_settle_again_writes_same_bytes_and_no_rows(void) {
  char path[512], err[1024];
  path_of(D, "pb", path, sizeof path);
  size_t l1 = 0, l2 = 0;
  unsigned char *b1 = slurp(path, &l1);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b1);
  long long rows = count_totals(D);
  char closed_at[64], closed_at2[64];
  pgt_str(g_w,
          "SELECT closed_at::text FROM switch.business_dates WHERE "
          "business_date = '" D "'",
          closed_at, sizeof closed_at);
  db_settle_result_t *res = calloc(1, sizeof *res);
  CU_ASSERT_PTR_NOT_NULL_FATAL(res);
  CU_ASSERT_EQUAL(settle(D, res, err, sizeof err), 0);
  CU_ASSERT_EQUAL(res->already_closed, 1);
  CU_ASSERT_EQUAL(res->files_written, 0);
  CU_ASSERT_EQUAL(count_totals(D), rows);
  pgt_str(g_w,
          "SELECT closed_at::text FROM switch.business_dates WHERE "
          "business_date = '" D "'",
          closed_at2, sizeof closed_at2);
  CU_ASSERT_STRING_EQUAL(closed_at, closed_at2);
  /* A lost file is written again, byte for byte. */
  CU_ASSERT_EQUAL(unlink(path), 0);
  CU_ASSERT_EQUAL(settle(D, res, err, sizeof err), 0);
  CU_ASSERT_EQUAL(res->files_written, 1);
  unsigned char *b2 = slurp(path, &l2);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b2);
  CU_ASSERT(l1 == l2 && memcmp(b1, b2, l1) == 0);
  free(b2);
  /* So is one altered on disk (verify names it first). */
  FILE *f = fopen(path, "r+b");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fseek(f, 5, SEEK_SET);
  fputc(0x55 ^ b1[5], f);
  fclose(f);
  PGconn *c = pgt_connect(pgt_reader);
  CU_ASSERT_EQUAL(db_settle_verify(c, D, g_out, err, sizeof err),
                  DB_E_MISMATCH);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "on disk"));
  CU_ASSERT_EQUAL(settle(D, res, err, sizeof err), 0);
  CU_ASSERT_EQUAL(res->files_written, 1);
  b2 = slurp(path, &l2);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b2);
  CU_ASSERT(l1 == l2 && memcmp(b1, b2, l1) == 0);
  CU_ASSERT_EQUAL(db_settle_verify(c, D, g_out, err, sizeof err), 0);
  PQfinish(c);
  free(b1);
  free(b2);
  free(res);
}

static void test_closed_date_rejects_new_events(void) {
  gtxn_t *t = add_txn(D, 1, "purchase", "approved", 1, 100, 100, 0);
  char st[6], cons[64];
  CU_ASSERT_EQUAL(ev_try(t, D, 0, "received", "received", 100, NULL, st, cons),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(st, "23514");
  CU_ASSERT_STRING_EQUAL(cons, "journal_closed");
  g_nt--; /* it is not in the journal */
  /* The rows already there are untouched. */
  CU_ASSERT(pgt_ll(g_w, "SELECT count(*) FROM switch.journal_event WHERE "
                        "business_date = '" D "'") > 0);
  /* A late reversal of a D original goes into the next open date and
   * settles there as an adjustment. */
  char next[16];
  pgt_str(g_w, "SELECT switch.next_open_business_date('" D "')::text", next,
          sizeof next);
  CU_ASSERT_STRING_EQUAL(next, D2);
  ensure_partition(D2);
  gtxn_t *orig = NULL;
  for (int i = 0; i < g_nt && !orig; i++)
    if (!strcmp(g_txn[i].date, D) && settles_amount(&g_txn[i]) > 1 &&
        g_txn[i].cur == 2)
      orig = &g_txn[i];
  CU_ASSERT_PTR_NOT_NULL_FATAL(orig);
  orig->rev_late = settles_amount(orig) / 2;
  orig->late_date = D2;
  write_late_reversal(orig);
  gtxn_t *fresh = add_txn(D2, 2, "refund", "approved", 0, 777, 777, 1);
  write_txn(fresh);
  char err[1024];
  db_settle_result_t *res = calloc(1, sizeof *res);
  CU_ASSERT_PTR_NOT_NULL_FATAL(res);
  CU_ASSERT_EQUAL(settle(D2, res, err, sizeof err), 0);
  CU_ASSERT_EQUAL(res->adjustments, 1);
  CU_ASSERT_EQUAL(res->transactions, 2);
  check_totals(D2);
  check_clearing_file(D2);
  /* D's settlement still matches its journal. */
  PGconn *c = pgt_connect(pgt_reader);
  CU_ASSERT_EQUAL(db_settle_verify(c, D, NULL, err, sizeof err), 0);
  PQfinish(c);
  free(res);
}

/* Runs switchctl; its stdout to out_file; returns the exit status. */
static int switchctl(const char *env, const char *args, const char *out_file) {
  char cmd[3000];
  snprintf(cmd, sizeof cmd, "%s '%s' --db '%s' %s >'%s' 2>>'%s/ctl.err'", env,
           SW_SWITCHCTL, pgt_writer, args, out_file, pgt_tmp);
  return pgt_sh(cmd);
}

static void read_sha_line(const char *file, char sha[65]) {
  FILE *f = fopen(file, "r");
  char line[512];
  sha[0] = '\0';
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, "sha256 ", 7) == 0)
      snprintf(sha, 65, "%.64s", line + 7);
  if (f)
    fclose(f);
}

static void test_crash_between_rename_and_commit_is_recovered(void) {
  fixed_cases(DC);
  generate_day(DC, 40);
  write_date(DC);
  char args[600], out[512], path[512];
  snprintf(args, sizeof args, "settle --date " DC " --out '%s'", g_out);
  snprintf(out, sizeof out, "%s/ctl.out", pgt_tmp);
  path_of(DC, "pb", path, sizeof path);
  static const char *const faults[] = {"files_written", "after_rename",
                                       "before_commit"};
  unsigned char *crashed = NULL;
  size_t lc = 0;
  for (int i = 0; i < 3; i++) {
    char env[64];
    snprintf(env, sizeof env, "SW_SETTLE_FAULT=%s", faults[i]);
    CU_ASSERT_EQUAL(switchctl(env, args, out), 70);
    /* The date stayed open, without totals or constraint. */
    CU_ASSERT(!is_closed(DC));
    CU_ASSERT(!has_closed_constraint(DC));
    CU_ASSERT_EQUAL(count_totals(DC), 0);
    if (i == 1) {
      free(crashed);
      crashed = slurp(path, &lc); /* renamed into place, not recorded */
      CU_ASSERT_PTR_NOT_NULL(crashed);
    }
  }
  CU_ASSERT_EQUAL(switchctl("", args, out), 0);
  char sha[65], rec[65];
  read_sha_line(out, sha);
  size_t ol = 0;
  unsigned char *summary = slurp(out, &ol);
  CU_ASSERT_PTR_NOT_NULL_FATAL(summary);
  CU_ASSERT(contains(summary, ol, "settled " DC ": "));
  CU_ASSERT(contains(summary, ol, "\n392 JPY: "));
  CU_ASSERT(contains(summary, ol, "\n840 USD: "));
  CU_ASSERT(contains(summary, ol, "\n414 KWD: "));
  if (getenv("SW_TEST_SHOW"))
    fwrite(summary, 1, ol, stderr);
  free(summary);
  pgt_str(g_w,
          "SELECT clearing_sha256 FROM switch.business_dates WHERE "
          "business_date = '" DC "'",
          rec, sizeof rec);
  CU_ASSERT_EQUAL(strlen(sha), 64);
  CU_ASSERT_STRING_EQUAL(sha, rec);
  CU_ASSERT(is_closed(DC) && has_closed_constraint(DC));
  size_t l = 0;
  unsigned char *b = slurp(path, &l);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  CU_ASSERT(crashed && l == lc && memcmp(b, crashed, l) == 0);
  check_totals(DC);
  check_clearing_file(DC);
  /* The temporary files are gone. */
  char tmp[512];
  snprintf(tmp, sizeof tmp, "%s/.clearing-" DC ".pb.tmp", g_out);
  CU_ASSERT_NOT_EQUAL(access(tmp, F_OK), 0);
  /* A second run: same sha, exit 0, no rows added. */
  long long rows = count_totals(DC);
  CU_ASSERT_EQUAL(switchctl("", args, out), 0);
  char sha2[65];
  read_sha_line(out, sha2);
  CU_ASSERT_STRING_EQUAL(sha2, sha);
  CU_ASSERT_EQUAL(count_totals(DC), rows);
  free(b);
  free(crashed);
}

static void test_verify_names_the_first_difference(void) {
  char err[1024], args[600], out[512];
  PGconn *c = pgt_connect(pgt_reader);
  CU_ASSERT_EQUAL(db_settle_verify(c, D, g_out, err, sizeof err), 0);
  CU_ASSERT_EQUAL(db_settle_verify(c, "2026-01-01", NULL, err, sizeof err),
                  DB_E_NOT_FOUND);
  CU_ASSERT_EQUAL(db_settle_verify(c, "2026-13-01", NULL, err, sizeof err),
                  DB_E_INVAL);
  snprintf(args, sizeof args, "settle --date " D " --check --out '%s'", g_out);
  snprintf(out, sizeof out, "%s/check.out", pgt_tmp);
  CU_ASSERT_EQUAL(switchctl("", args, out), 0);
  /* A stored total altered behind the settlement's back. */
  CU_ASSERT_EQUAL(pgt_exec(g_w,
                           "UPDATE switch.settlement_totals SET debit_minor = "
                           "debit_minor + 1 WHERE business_date = '" D
                           "' AND level = "
                           "'terminal' AND key = 'T01' AND currency = '840'",
                           NULL, NULL, 0),
                  PGRES_COMMAND_OK);
  CU_ASSERT_EQUAL(db_settle_verify(c, D, NULL, err, sizeof err), DB_E_MISMATCH);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "terminal \"T01\" currency 840"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "debit_minor"));
  CU_ASSERT_EQUAL(switchctl("", args, out), 3);
  CU_ASSERT_EQUAL(pgt_exec(g_w,
                           "UPDATE switch.settlement_totals SET debit_minor = "
                           "debit_minor - 1 WHERE business_date = '" D
                           "' AND level = "
                           "'terminal' AND key = 'T01' AND currency = '840'",
                           NULL, NULL, 0),
                  PGRES_COMMAND_OK);
  /* A recorded SHA-256 that is not the file's. */
  char sha[65];
  pgt_str(g_w,
          "SELECT clearing_sha256 FROM switch.business_dates WHERE "
          "business_date = '" D "'",
          sha, sizeof sha);
  CU_ASSERT_EQUAL(pgt_exec(g_w,
                           "UPDATE switch.business_dates SET clearing_sha256 "
                           "= repeat('0', 64) WHERE business_date = '" D "'",
                           NULL, NULL, 0),
                  PGRES_COMMAND_OK);
  CU_ASSERT_EQUAL(db_settle_verify(c, D, NULL, err, sizeof err), DB_E_MISMATCH);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "recorded sha256 0000"));
  /* settle on that date refuses too, and leaves the files alone. */
  db_settle_result_t *res = calloc(1, sizeof *res);
  CU_ASSERT_PTR_NOT_NULL_FATAL(res);
  CU_ASSERT_EQUAL(settle(D, res, err, sizeof err), DB_E_MISMATCH);
  const char *p[1] = {sha};
  PGresult *r =
      PQexecParams(g_w,
                   "UPDATE switch.business_dates SET "
                   "clearing_sha256 = $1 WHERE business_date = '" D "'",
                   1, NULL, p, NULL, NULL, 0);
  CU_ASSERT_EQUAL(PQresultStatus(r), PGRES_COMMAND_OK);
  PQclear(r);
  CU_ASSERT_EQUAL(db_settle_verify(c, D, g_out, err, sizeof err), 0);
  /* A fee plan changed since the settlement is not a difference: the
   * recomputation uses the plan recorded with the totals. */
  CU_ASSERT_EQUAL(pgt_exec(g_w,
                           "UPDATE switch.merchants SET fee_bps = 9000, "
                           "fee_fixed_minor = 1 WHERE merchant_id = "
                           "'MERCH0001'",
                           NULL, NULL, 0),
                  PGRES_COMMAND_OK);
  CU_ASSERT_EQUAL(db_settle_verify(c, D, g_out, err, sizeof err), 0);
  CU_ASSERT_EQUAL(settle(D, res, err, sizeof err), 0);
  CU_ASSERT_EQUAL(pgt_exec(g_w,
                           "UPDATE switch.merchants SET fee_bps = 150, "
                           "fee_fixed_minor = 25 WHERE merchant_id = "
                           "'MERCH0001'",
                           NULL, NULL, 0),
                  PGRES_COMMAND_OK);
  free(res);
  PQfinish(c);
}

typedef struct {
  int rc;
  db_settle_result_t res;
  char err[512];
} run_t;

static void *settle_thread(void *arg) {
  run_t *r = arg;
  r->rc = settle(DT, &r->res, r->err, sizeof r->err);
  return NULL;
}

static void test_two_runs_at_once_settle_once(void) {
  fixed_cases(DT);
  generate_day(DT, 30);
  write_date(DT);
  run_t *runs = calloc(2, sizeof *runs);
  CU_ASSERT_PTR_NOT_NULL_FATAL(runs);
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    CU_ASSERT_FATAL(pthread_create(&th[i], NULL, settle_thread, &runs[i]) == 0);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  CU_ASSERT_EQUAL(runs[0].rc, 0);
  CU_ASSERT_EQUAL(runs[1].rc, 0);
  /* One closed the date, the other waited on the row, then found it
   * closed: the same bytes, and the totals written once. */
  CU_ASSERT_EQUAL(runs[0].res.already_closed + runs[1].res.already_closed, 1);
  CU_ASSERT_STRING_EQUAL(runs[0].res.sha256, runs[1].res.sha256);
  check_totals(DT);
  check_clearing_file(DT);
  free(runs);
}

/* A reversal above its approval, and a merchant without reference row:
 * refused with the transaction named; the date stays open. */
static void test_settle_refuses_data_that_cannot_settle(void) {
  ensure_partition(DX);
  gtxn_t *t = add_txn(DX, 1, "purchase", "approved", 1, 500, 500, 0);
  t->rev_same = 600;
  write_txn(t);
  char err[1024], want[64];
  CU_ASSERT_EQUAL(settle(DX, NULL, err, sizeof err), DB_E_INTEGRITY);
  snprintf(want, sizeof want, "txn_id %lld", t->txn);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "exceed"));
  CU_ASSERT(!is_closed(DX) && !has_closed_constraint(DX));
  ensure_partition(DY);
  gtxn_t *g = add_txn(DY, 1, "cash", "approved", 0, 900, 900, NMER);
  write_txn(g);
  CU_ASSERT_EQUAL(settle(DY, NULL, err, sizeof err), DB_E_NOT_FOUND);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "\"GHOST0001\""));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "switch.merchants"));
  CU_ASSERT(!is_closed(DY) && !has_closed_constraint(DY));
}

static void test_settle_rejects_bad_arguments(void) {
  char err[512];
  PGconn *c = pgt_connect(pgt_writer);
  db_settle_opts_t o = {"2026-02-30", g_out, NULL, NULL};
  CU_ASSERT_EQUAL(db_settle(c, &o, NULL, err, sizeof err), DB_E_INVAL);
  o.date = "2026-03-30";
  o.out_dir = "/nonexistent/clearing";
  CU_ASSERT_EQUAL(db_settle(c, &o, NULL, err, sizeof err), DB_E_IO);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/clearing"));
  CU_ASSERT(!is_closed("2026-03-30"));
  /* A date without events (nor partition) closes with an empty file. */
  db_settle_result_t *res = calloc(1, sizeof *res);
  CU_ASSERT_PTR_NOT_NULL_FATAL(res);
  o.date = "2026-04-01";
  o.out_dir = g_out;
  CU_ASSERT_EQUAL(db_settle(c, &o, res, err, sizeof err), 0);
  CU_ASSERT_EQUAL(res->transactions, 0);
  CU_ASSERT_EQUAL(res->records, 2); /* header and trailer */
  CU_ASSERT_EQUAL(res->ncurrencies, 0);
  CU_ASSERT(is_closed("2026-04-01") && has_closed_constraint("2026-04-01"));
  free(res);
  PQfinish(c);
  char out[512];
  snprintf(out, sizeof out, "%s/usage.out", pgt_tmp);
  CU_ASSERT_EQUAL(switchctl("", "settle", out), 2);
  CU_ASSERT_EQUAL(switchctl("", "settle --date 2026-02-30", out), 2);
}

/* ------------------------------------------------------------------------ */

static int seed_reference_data(void) {
  char sql[512];
  for (int m = 0; m < NMER; m++) {
    snprintf(sql, sizeof sql,
             "INSERT INTO switch.merchants (merchant_id, name, mcc, fee_bps, "
             "fee_fixed_minor, fee_currency, settlement_days) VALUES ('%s', "
             "'Merchant %d', '5411', %d, %lld, '%s', %d)",
             merchants[m].id, m, merchants[m].bps, merchants[m].fixed,
             merchants[m].fee_cur, merchants[m].days);
    if (pgt_exec(g_w, sql, NULL, NULL, 0) != PGRES_COMMAND_OK)
      return -1;
    for (int k = 0; k < TERM_PER_MER; k++) {
      char tid[9];
      terminal_id(m, k, tid);
      snprintf(sql, sizeof sql,
               "INSERT INTO switch.terminals (terminal_id, merchant_id) "
               "VALUES ('%s', '%s')",
               tid, merchants[m].id);
      if (pgt_exec(g_w, sql, NULL, NULL, 0) != PGRES_COMMAND_OK)
        return -1;
    }
  }
  for (int i = 0; i < 3; i++) {
    snprintf(sql, sizeof sql,
             "INSERT INTO switch.issuers (issuer_id, name, dialect) VALUES "
             "('%s', 'Issuer %d', 'iso87a')",
             issuers[i], i);
    if (pgt_exec(g_w, sql, NULL, NULL, 0) != PGRES_COMMAND_OK)
      return -1;
  }
  return 0;
}

int main(void) {
  static const tu_test_t pieces[] = {
      {"varint encodes, decodes, rejects malformed",
       test_varint_encodes_decodes_and_rejects_malformed},
      {"fee rounds half up without overflow",
       test_fee_rounds_half_up_without_overflow},
      {"format_minor uses the exponent", test_format_minor_uses_the_exponent},
      {"value date adds calendar days", test_value_date_adds_calendar_days},
      {NULL, NULL}};
  static const tu_test_t db[] = {
      {"refuses a date with pending transactions",
       test_settle_refuses_a_date_with_pending_transactions},
      {"generated day matches independent totals",
       test_settle_generated_day_matches_independent_totals},
      {"again: same bytes, no rows",
       test_settle_again_writes_same_bytes_and_no_rows},
      {"closed date rejects new events", test_closed_date_rejects_new_events},
      {"crash between rename and commit is recovered",
       test_crash_between_rename_and_commit_is_recovered},
      {"verify names the first difference",
       test_verify_names_the_first_difference},
      {"two runs at once settle once", test_two_runs_at_once_settle_once},
      {"refuses data that cannot settle",
       test_settle_refuses_data_that_cannot_settle},
      {"rejects bad arguments", test_settle_rejects_bad_arguments},
      {NULL, NULL}};
  pgt_setup("settle", 1);
  g_w = pgt_connect(pgt_writer);
  snprintf(g_out, sizeof g_out, "%s/clearing", pgt_tmp);
  if (PQstatus(g_w) != CONNECTION_OK || mkdir(g_out, 0755) != 0 ||
      seed_reference_data() != 0) {
    fprintf(stderr, "cannot prepare the test database\n");
    return 2;
  }
  tu_init();
  tu_add_suite("settle pieces", pieces);
  tu_add_suite("settle", db);
  int rc = tu_run();
  PQfinish(g_w);
  pgt_teardown();
  return rc;
}
