/*
 * test_saf.c — the store-and-forward queue (db/saf.h, 0004_saf.sql,
 * docs/saf.md) on a throwaway PostgreSQL 15 cluster (pgtest.h): the
 * saf_apply contract op by op and applied twice, leases shared by two
 * owners, a lease taken over after its owner dies, armed reversals
 * recovered, the backoff schedule, dead letters and operator retry,
 * acknowledgements matched across repeats, hostile inputs, and switchctl
 * saf as a subprocess.
 *
 * The journal's 'received' and 'forwarded' rows are inserted directly with
 * SQL (chain columns filled with placeholders: the chain is not under test
 * here).  Each test empties switch.saf first, so claims see only its rows.
 */
#include "pgtest.h"
#include "saf.h"
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SW_SWITCHCTL
#error "SW_SWITCHCTL must name the switchctl binary"
#endif

#define DATE "2026-11-23"
#define NODE 1

static PGconn *g_c;
static long long g_chain_seq;

/* ---- helpers ---- */

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

static char g_sql[1024];

/* pgt_ll / pgt_str on a query with one long long formatted in (macros, so
 * the format is checked). */
#define q(fmt, a)                                                              \
  (snprintf(g_sql, sizeof g_sql, fmt, (long long)(a)), pgt_ll(g_c, g_sql))
#define qstr(fmt, a, out, cap)                                                 \
  (snprintf(g_sql, sizeof g_sql, fmt, (long long)(a)),                         \
   pgt_str(g_c, g_sql, out, cap))

static void exec_ok(const char *sql) {
  char state[6], msg[512];
  ExecStatusType st = pgt_exec(g_c, sql, state, msg, sizeof msg);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    fprintf(stderr, "%s: %s", sql, msg);
  CU_ASSERT_FATAL(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
}

static void reset_queue(void) {
  exec_ok("DELETE FROM switch.saf");
}

/* Journals the original txn: a 'received' event and, when stan is not
 * NULL, a 'forwarded' one on link visa-1 at 2026-11-23 10:00:00 UTC. */
static void journal_original(long long txn, const char *stan) {
  char sql[2048];
  snprintf(sql, sizeof sql,
           "INSERT INTO switch.journal_event (business_date, node_id, "
           "txn_id, event_no, event, state, mti, processing_code, "
           "amount_minor, sign, currency, terminal_stan, rrn, terminal_id, "
           "merchant_id, pan_masked, pan_enc, pan_enc_key_ver, txn_kind, "
           "chain_seq, chain_hmac, chain_key_ver) VALUES ('" DATE
           "', %d, %lld, 0, 'received', 'received', '0200', '000000', "
           "%lld, 'D', '978', '000123', lpad('%lld', 12, '0'), 'TERM0001', "
           "'MERCHANT0000001', '411111******1111', "
           "decode(repeat('ab', 32), 'hex'), 3, 'purchase', %lld, "
           "sha256('x'), 1)",
           NODE, txn, 1000 + txn % 1000, txn, ++g_chain_seq);
  exec_ok(sql);
  if (!stan)
    return;
  snprintf(sql, sizeof sql,
           "INSERT INTO switch.journal_event (business_date, node_id, "
           "txn_id, event_no, event, state, mti, stan, transmission_at, "
           "link_id, chain_seq, chain_hmac, chain_key_ver) VALUES ('" DATE
           "', %d, %lld, 1, 'forwarded', 'forwarded', '0200', '%s', "
           "'2026-11-23 10:00:00+00', 'visa-1', %lld, sha256('x'), 1)",
           NODE, txn, stan, ++g_chain_seq);
  exec_ok(sql);
}

/* saf_apply with one operation.  Returns its result, or -1 with the
 * SQLSTATE in state (6 bytes) and the message in msg. */
static long long apply_as(const char *owner, const char *lease, long long txn,
                          const char *op, const char *mti, const char *link,
                          char *state, char *msg, size_t msgcap) {
  char t[24];
  snprintf(t, sizeof t, "%lld", txn);
  const char *p[] = {owner, lease, DATE, t, op, mti, link};
  PGresult *r = PQexecParams(
      g_c,
      "SELECT switch.saf_apply(1, $1, $2::integer, ARRAY[$3::date], "
      "ARRAY[$4::bigint], ARRAY[$5::text], ARRAY[$6::text], "
      "ARRAY[$7::text])",
      7, NULL, p, NULL, NULL, 0);
  long long v = -1;
  if (PQresultStatus(r) == PGRES_TUPLES_OK)
    v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  if (state) {
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(state, 6, "%s", s ? s : "");
  }
  if (msg)
    snprintf(msg, msgcap, "%s", PQresultErrorMessage(r));
  PQclear(r);
  return v;
}

static long long apply(long long txn, const char *op, const char *mti,
                       const char *link) {
  char state[6], msg[512];
  long long v =
      apply_as("node-1", "30000", txn, op, mti, link, state, msg, sizeof msg);
  if (v < 0)
    fprintf(stderr, "saf_apply %s %lld: %s", op, txn, msg);
  return v;
}

static void saf_state(long long txn, const char *kind, char *out, size_t cap) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT state FROM switch.saf WHERE txn_id = %lld AND kind = '%s'",
           txn, kind);
  pgt_str(g_c, sql, out, cap);
}

static long long saf_id_of(long long txn, const char *kind) {
  char sql[256];
  snprintf(sql, sizeof sql,
           "SELECT saf_id FROM switch.saf WHERE txn_id = %lld AND kind = '%s'",
           txn, kind);
  return pgt_ll(g_c, sql);
}

/* Makes every live row due now (the tests do not wait out backoffs). */
static void make_due(void) {
  exec_ok("UPDATE switch.saf SET next_attempt_at = now() - interval '1 ms' "
          "WHERE state = 'live'");
}

static db_saf_key_t key_at(const char *stan, int64_t us) {
  db_saf_key_t k = {"visa-1", stan, us};
  return k;
}

/* 2026-11-23 11:00:00 UTC plus s seconds, in µs. */
static int64_t t_us(int s) {
  return (1795431600LL + s) * 1000000LL;
}

/* ---- saf_apply ---- */

static void test_arm_is_idempotent(void) {
  reset_queue();
  CU_ASSERT_EQUAL(apply(101, "arm", "0420", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(101, "arm", "0420", "visa-1"), 0);
  char st[16];
  saf_state(101, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "armed");
  CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf WHERE txn_id = %lld "
                    "AND owner = 'node-1' AND lease_until > now() "
                    "AND lease_until <= now() + interval '30 s'",
                    101),
                  1);
  /* NULL MTI means 0420. */
  CU_ASSERT_EQUAL(apply(102, "arm", NULL, NULL), 1);
  char mti[8];
  qstr("SELECT mti FROM switch.saf WHERE txn_id = %lld", 102, mti, sizeof mti);
  CU_ASSERT_STRING_EQUAL(mti, "0420");
}

static void test_arm_then_disarm_is_not_owed(void) {
  reset_queue();
  char st[16];
  CU_ASSERT_EQUAL(apply(111, "arm", "0420", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(111, "disarm", NULL, NULL), 1);
  CU_ASSERT_EQUAL(apply(111, "disarm", NULL, NULL), 0);
  saf_state(111, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "disarmed");
  CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf WHERE txn_id = %lld "
                    "AND owner IS NULL AND lease_until IS NULL",
                    111),
                  1);
  /* An arm applied again (a replayed batch) cannot bring it back. */
  CU_ASSERT_EQUAL(apply(111, "arm", "0420", "visa-1"), 0);
  saf_state(111, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "disarmed");
  /* Disarm of nothing is a no-op. */
  CU_ASSERT_EQUAL(apply(112, "disarm", NULL, NULL), 0);
  CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf WHERE txn_id = %lld", 112),
                  0);
  /* Nothing disarmed is ever claimed. */
  db_saf_item_t it[4];
  size_t n = 9;
  CU_ASSERT_EQUAL(db_saf_claim(g_c, NULL, "node-2", it, 4, &n, NULL, 0), 0);
  CU_ASSERT_EQUAL(n, 0);
}

static void test_arm_then_release_is_live_and_due(void) {
  reset_queue();
  char st[16];
  CU_ASSERT_EQUAL(apply(121, "arm", "0420", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(121, "release", "0420", NULL), 1);
  CU_ASSERT_EQUAL(apply(121, "release", "0420", NULL), 0);
  saf_state(121, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "live");
  CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf WHERE txn_id = %lld "
                    "AND owner IS NULL AND next_attempt_at <= now() "
                    "AND link_id = 'visa-1'",
                    121),
                  1);
  /* A live reversal is never dropped by a disarm. */
  CU_ASSERT_EQUAL(apply(121, "disarm", NULL, NULL), 0);
  saf_state(121, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "live");
  /* Release without an armed row inserts a live one. */
  CU_ASSERT_EQUAL(apply(122, "release", "0420", "visa-2"), 1);
  saf_state(122, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "live");
}

static void test_reverse_merges_with_release(void) {
  reset_queue();
  char st[16];
  CU_ASSERT_EQUAL(apply(131, "arm", "0420", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(131, "release", "0420", NULL), 1);
  /* A terminal 0400 after the timeout: one reversal, not two. */
  CU_ASSERT_EQUAL(apply(131, "reverse", "0420", NULL), 0);
  CU_ASSERT_EQUAL(apply(131, "reverse", "0420", NULL), 0);
  CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf WHERE txn_id = %lld", 131),
                  1);
  /* Reverse with nothing queued inserts a live reversal, once. */
  CU_ASSERT_EQUAL(apply(132, "reverse", "0420", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(132, "reverse", "0420", "visa-1"), 0);
  saf_state(132, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "live");
  /* After an approval disarmed it, a terminal 0400 makes it owed again. */
  CU_ASSERT_EQUAL(apply(133, "arm", "0420", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(133, "disarm", NULL, NULL), 1);
  CU_ASSERT_EQUAL(apply(133, "reverse", "0420", NULL), 1);
  saf_state(133, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "live");
  /* An acknowledged reversal stays acknowledged. */
  CU_ASSERT_EQUAL(apply(132, "ack", NULL, NULL), 1);
  CU_ASSERT_EQUAL(apply(132, "reverse", "0420", NULL), 0);
  saf_state(132, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "acked");
}

static void test_advice_and_ack_by_kind(void) {
  reset_queue();
  char st[16];
  CU_ASSERT_EQUAL(apply(141, "advice", "0220", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(141, "advice", "0220", "visa-1"), 0);
  saf_state(141, "advice", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "live");
  CU_ASSERT_EQUAL(apply(141, "reverse", "0420", "visa-1"), 1);
  /* An original's MTI is no acknowledgement. */
  char state[6];
  CU_ASSERT_EQUAL(
      apply_as("node-1", "30000", 141, "ack", "0200", NULL, state, NULL, 0),
      -1);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  /* An advice MTI, or its response's, acknowledges the advice, not the
   * reversal. */
  CU_ASSERT_EQUAL(apply(141, "ack", "0230", NULL), 1);
  CU_ASSERT_EQUAL(apply(141, "ack", "0221", NULL), 0);
  saf_state(141, "advice", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "acked");
  saf_state(141, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "live");
  /* NULL (or a reversal MTI) acknowledges the reversal. */
  CU_ASSERT_EQUAL(apply(141, "ack", NULL, NULL), 1);
  CU_ASSERT_EQUAL(apply(141, "ack", "0430", NULL), 0);
  saf_state(141, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "acked");
  CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf WHERE txn_id = %lld "
                    "AND acked_at IS NOT NULL AND owner IS NULL",
                    141),
                  2);
  /* An ack of nothing queued is a no-op. */
  CU_ASSERT_EQUAL(apply(142, "ack", NULL, NULL), 0);
}

static void test_saf_apply_refuses_hostile_input(void) {
  char state[6], msg[512];
  CU_ASSERT_EQUAL(apply_as("node-1", "30000", 151, "explode", NULL, NULL, state,
                           msg, sizeof msg),
                  -1);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "operation 1 is 'explode'"));
  CU_ASSERT_EQUAL(apply_as("node 1; drop", "30000", 151, "arm", NULL, NULL,
                           state, msg, sizeof msg),
                  -1);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "owner must be"));
  CU_ASSERT_EQUAL(
      apply_as(NULL, "30000", 151, "arm", NULL, NULL, state, msg, sizeof msg),
      -1);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  CU_ASSERT_EQUAL(
      apply_as("node-1", "0", 151, "arm", NULL, NULL, state, msg, sizeof msg),
      -1);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "lease"));
  CU_ASSERT_EQUAL(apply_as("node-1", "30000", 151, "advice", "0420", NULL,
                           state, msg, sizeof msg),
                  -1);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "not an advice"));
  CU_ASSERT_EQUAL(apply_as("node-1", "30000", 151, "reverse", "0200", NULL,
                           state, msg, sizeof msg),
                  -1);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  CU_ASSERT_EQUAL(apply_as("node-1", "30000", 151, "reverse", "0420", "Visa 1",
                           state, msg, sizeof msg),
                  -1);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "link"));
  CU_ASSERT_EQUAL(pgt_exec(g_c,
                           "SELECT switch.saf_apply(1, 'n', 1000, "
                           "ARRAY['" DATE "', '" DATE "']::date[], "
                           "ARRAY[1, 2]::bigint[], ARRAY['arm'], "
                           "ARRAY['0420', '0420'], ARRAY[NULL, NULL]::text[])",
                           state, msg, sizeof msg),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "do not line up"));
  CU_ASSERT_EQUAL(pgt_exec(g_c,
                           "SELECT switch.saf_apply(70000, 'n', 1000, "
                           "ARRAY['" DATE "']::date[], ARRAY[1]::bigint[], "
                           "ARRAY['arm'], ARRAY['0420'], ARRAY[NULL]::text[])",
                           state, msg, sizeof msg),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  CU_ASSERT_EQUAL(pgt_exec(g_c,
                           "SELECT switch.saf_apply(1, 'n', 1000, "
                           "'{}'::date[], '{}'::bigint[], '{}'::text[], "
                           "'{}'::text[], '{}'::text[])",
                           state, msg, sizeof msg),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  /* A bad element later in a batch: nothing of the batch is applied. */
  CU_ASSERT_EQUAL(pgt_exec(g_c,
                           "SELECT switch.saf_apply(1, 'n', 1000, "
                           "ARRAY['" DATE "', '" DATE "']::date[], "
                           "ARRAY[152, 153]::bigint[], ARRAY['reverse', "
                           "'bogus'], ARRAY['0420', '0420'], "
                           "ARRAY[NULL, NULL]::text[])",
                           state, msg, sizeof msg),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "SW010");
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "operation 2"));
  CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf WHERE txn_id = %lld", 152),
                  0);
  /* The same txn_id under another business date. */
  CU_ASSERT_EQUAL(apply(154, "reverse", "0420", NULL), 1);
  CU_ASSERT_EQUAL(pgt_exec(g_c,
                           "SELECT switch.saf_apply(1, 'n', 1000, "
                           "ARRAY['2026-11-24']::date[], ARRAY[154]::bigint[],"
                           " ARRAY['advice'], ARRAY['0220'], "
                           "ARRAY[NULL]::text[])",
                           state, msg, sizeof msg),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "SW011");
  /* The reader cannot apply. */
  PGconn *rd = pgt_connect(pgt_reader);
  CU_ASSERT_PTR_NOT_NULL_FATAL(rd);
  CU_ASSERT_EQUAL(pgt_exec(rd,
                           "SELECT switch.saf_apply(1, 'n', 1000, "
                           "ARRAY['" DATE "']::date[], ARRAY[155]::bigint[], "
                           "ARRAY['reverse'], ARRAY['0420'], "
                           "ARRAY[NULL]::text[])",
                           state, msg, sizeof msg),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "42501");
  CU_ASSERT_EQUAL(pgt_ll(rd, "SELECT count(*) FROM switch.saf_attempt"), 0);
  PQfinish(rd);
}

static void test_c_api_refuses_hostile_input(void) {
  db_saf_item_t it[2];
  size_t n;
  char err[256];
  CU_ASSERT_EQUAL(
      db_saf_claim(g_c, NULL, "bad owner", it, 2, &n, err, sizeof err),
      DB_E_INVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "owner"));
  CU_ASSERT_EQUAL(db_saf_claim(g_c, NULL, "", it, 2, &n, err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(db_saf_claim(g_c, NULL, "n", it, 0, &n, err, sizeof err),
                  DB_E_INVAL);
  db_saf_config_t bad = {0, 5000, 1000, 0}; /* base above cap */
  CU_ASSERT_EQUAL(db_saf_claim(g_c, &bad, "n", it, 2, &n, err, sizeof err),
                  DB_E_INVAL);
  db_saf_key_t k = key_at("12345", t_us(0));
  CU_ASSERT_EQUAL(
      db_saf_record_send(g_c, 1, "n", &k, NULL, NULL, err, sizeof err),
      DB_E_INVAL);
  k = key_at("123456", t_us(0));
  k.link_id = "VISA";
  CU_ASSERT_EQUAL(db_saf_ack(g_c, &k, NULL, NULL, err, sizeof err), DB_E_INVAL);
  k.link_id = "visa-1";
  CU_ASSERT_EQUAL(db_saf_ack(g_c, &k, "0'", NULL, err, sizeof err), DB_E_INVAL);
  CU_ASSERT_EQUAL(db_saf_renew(g_c, 1, "n", 0, err, sizeof err), DB_E_INVAL);
  CU_ASSERT_EQUAL(db_saf_retry(g_c, 0, err, sizeof err), DB_E_INVAL);
}

/* ---- claims and leases ---- */

typedef struct claimer_s {
  const char *owner;
  int64_t ids[400];
  size_t n;
  int rc;
} claimer_t;

static void *claim_all(void *arg) {
  claimer_t *cl = arg;
  PGconn *c = pgt_connect(pgt_writer);
  if (!c) {
    cl->rc = -1;
    return NULL;
  }
  db_saf_item_t it[7];
  for (;;) {
    size_t n = 0;
    cl->rc = db_saf_claim(c, NULL, cl->owner, it, 7, &n, NULL, 0);
    if (cl->rc || n == 0)
      break;
    for (size_t i = 0; i < n && cl->n < 400; i++)
      cl->ids[cl->n++] = it[i].saf_id;
  }
  PQfinish(c);
  return NULL;
}

static void test_two_owners_never_claim_the_same_row(void) {
  reset_queue();
  exec_ok("SELECT switch.saf_apply(1, 'n', 1000, array_agg(date '" DATE
          "'), array_agg(g::bigint), array_agg('reverse'::text), "
          "array_agg('0420'::text), array_agg(NULL::text)) "
          "FROM generate_series(1001, 1200) g");
  claimer_t a = {"node-a", {0}, 0, 0}, b = {"node-b", {0}, 0, 0};
  pthread_t ta, tb;
  CU_ASSERT_FATAL(pthread_create(&ta, NULL, claim_all, &a) == 0);
  CU_ASSERT_FATAL(pthread_create(&tb, NULL, claim_all, &b) == 0);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  CU_ASSERT_EQUAL(a.rc, 0);
  CU_ASSERT_EQUAL(b.rc, 0);
  CU_ASSERT_EQUAL(a.n + b.n, 200);
  int dup = 0;
  for (size_t i = 0; i < a.n; i++)
    for (size_t j = 0; j < b.n; j++)
      dup += a.ids[i] == b.ids[j];
  CU_ASSERT_EQUAL(dup, 0);
  CU_ASSERT_EQUAL(pgt_ll(g_c, "SELECT count(*) FROM switch.saf WHERE "
                              "owner = 'node-a'"),
                  (long long)a.n);
  CU_ASSERT_EQUAL(pgt_ll(g_c, "SELECT count(*) FROM switch.saf WHERE "
                              "owner = 'node-b'"),
                  (long long)b.n);
}

/* The test: "SAF leases taken over after an owner dies". */
static void test_lease_taken_over_after_owner_dies(void) {
  reset_queue();
  journal_original(161, "000777");
  CU_ASSERT_EQUAL(apply(161, "reverse", "0420", "visa-1"), 1);
  db_saf_config_t short_lease = {0, 0, 0, 1000};
  db_saf_item_t it[4];
  size_t n = 0;
  char err[256], mti[5];
  int32_t attempt = 0;
  CU_ASSERT_EQUAL(
      db_saf_claim(g_c, &short_lease, "node-a", it, 4, &n, err, sizeof err), 0);
  CU_ASSERT_EQUAL_FATAL(n, 1);
  CU_ASSERT_STRING_EQUAL(it[0].mti, "0420");
  CU_ASSERT_EQUAL(it[0].attempt, 1);
  int64_t id = it[0].saf_id;
  db_saf_key_t k1 = key_at("000901", t_us(1));
  CU_ASSERT_EQUAL(db_saf_record_send(g_c, id, "node-a", &k1, &attempt, mti, err,
                                     sizeof err),
                  0);
  CU_ASSERT_EQUAL(attempt, 1);
  CU_ASSERT_STRING_EQUAL(mti, "0420");
  /* No row lock is held while the message is out: another session locks
   * the row at once. */
  PGconn *other = pgt_connect(pgt_writer);
  CU_ASSERT_PTR_NOT_NULL_FATAL(other);
  char sql[160];
  snprintf(sql, sizeof sql,
           "SELECT saf_id FROM switch.saf WHERE saf_id = %lld FOR UPDATE "
           "NOWAIT",
           (long long)id);
  CU_ASSERT_EQUAL(pgt_ll(other, sql), id);
  /* node-a dies here (never renews, never reports).  node-b sees nothing
   * while the lease holds ... */
  PGconn *cb = pgt_connect(pgt_writer);
  CU_ASSERT_PTR_NOT_NULL_FATAL(cb);
  CU_ASSERT_EQUAL(db_saf_claim(cb, NULL, "node-b", it, 4, &n, err, sizeof err),
                  0);
  CU_ASSERT_EQUAL(n, 0);
  /* ... and takes the row over once it expired, as a repeat. */
  sleep_ms(1200);
  CU_ASSERT_EQUAL(db_saf_claim(cb, NULL, "node-b", it, 4, &n, err, sizeof err),
                  0);
  CU_ASSERT_EQUAL_FATAL(n, 1);
  CU_ASSERT_EQUAL(it[0].saf_id, id);
  CU_ASSERT_STRING_EQUAL(it[0].mti, "0421");
  CU_ASSERT_EQUAL(it[0].attempt, 2);
  CU_ASSERT_EQUAL(it[0].txn_id, 161);
  CU_ASSERT_STRING_EQUAL(it[0].stan, "000777");
  /* The dead owner, should it wake up, can no longer act on the row. */
  db_saf_key_t k2 = key_at("000902", t_us(2));
  CU_ASSERT_EQUAL(
      db_saf_record_send(g_c, id, "node-a", &k2, NULL, NULL, err, sizeof err),
      DB_E_CONFLICT);
  CU_ASSERT_EQUAL(
      db_saf_fail(g_c, NULL, id, "node-a", NULL, NULL, err, sizeof err),
      DB_E_CONFLICT);
  CU_ASSERT_EQUAL(db_saf_renew(g_c, id, "node-a", 1000, err, sizeof err),
                  DB_E_CONFLICT);
  CU_ASSERT_EQUAL(db_saf_release(g_c, id, "node-a", err, sizeof err),
                  DB_E_CONFLICT);
  CU_ASSERT_EQUAL(
      db_saf_record_send(cb, id, "node-b", &k2, &attempt, mti, err, sizeof err),
      0);
  CU_ASSERT_EQUAL(attempt, 2);
  CU_ASSERT_STRING_EQUAL(mti, "0421");
  CU_ASSERT_EQUAL(q("SELECT attempts FROM switch.saf WHERE saf_id = %lld", id),
                  2);
  char owners[64];
  qstr("SELECT string_agg(owner || ':' || mti, ',' ORDER BY attempt) FROM "
       "switch.saf_attempt WHERE saf_id = %lld",
       id, owners, sizeof owners);
  CU_ASSERT_STRING_EQUAL(owners, "node-a:0420,node-b:0421");
  /* node-b renews and releases its own lease. */
  CU_ASSERT_EQUAL(db_saf_renew(cb, id, "node-b", 60000, err, sizeof err), 0);
  CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf WHERE saf_id = %lld "
                    "AND lease_until > now() + interval '50 s'",
                    id),
                  1);
  CU_ASSERT_EQUAL(db_saf_release(cb, id, "node-b", err, sizeof err), 0);
  CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf WHERE saf_id = %lld "
                    "AND owner IS NULL AND state = 'live'",
                    id),
                  1);
  PQfinish(cb);
  PQfinish(other);
}

static void test_armed_with_expired_lease_recovered_as_live(void) {
  reset_queue();
  journal_original(171, "000555");
  CU_ASSERT_EQUAL(
      apply_as("node-a", "600", 171, "arm", "0420", "visa-1", NULL, NULL, 0),
      1);
  db_saf_item_t it[2];
  size_t n = 0;
  char err[256];
  CU_ASSERT_EQUAL(db_saf_claim(g_c, NULL, "node-b", it, 2, &n, err, sizeof err),
                  0);
  CU_ASSERT_EQUAL(n, 0); /* node-a may still get its answer */
  sleep_ms(750);
  CU_ASSERT_EQUAL(db_saf_claim(g_c, NULL, "node-b", it, 2, &n, err, sizeof err),
                  0);
  CU_ASSERT_EQUAL_FATAL(n, 1);
  const db_saf_item_t *x = &it[0];
  CU_ASSERT_STRING_EQUAL(x->kind, "reversal");
  CU_ASSERT_STRING_EQUAL(x->mti, "0420");
  CU_ASSERT_EQUAL(x->attempt, 1);
  CU_ASSERT_STRING_EQUAL(x->link_id, "visa-1");
  CU_ASSERT_STRING_EQUAL(x->business_date, DATE);
  CU_ASSERT_EQUAL(x->node_id, NODE);
  CU_ASSERT_EQUAL(x->txn_id, 171);
  CU_ASSERT_EQUAL(x->has_original, 1);
  CU_ASSERT_STRING_EQUAL(x->orig_mti, "0200");
  CU_ASSERT_STRING_EQUAL(x->processing_code, "000000");
  CU_ASSERT_EQUAL(x->amount_minor, 1171);
  CU_ASSERT_EQUAL(x->sign, 'D');
  CU_ASSERT_STRING_EQUAL(x->currency, "978");
  CU_ASSERT_STRING_EQUAL(x->terminal_stan, "000123");
  CU_ASSERT_STRING_EQUAL(x->rrn, "000000000171");
  CU_ASSERT_STRING_EQUAL(x->terminal_id, "TERM0001");
  CU_ASSERT_STRING_EQUAL(x->merchant_id, "MERCHANT0000001");
  CU_ASSERT_STRING_EQUAL(x->pan_masked, "411111******1111");
  CU_ASSERT_EQUAL(x->pan_enc_len, 32);
  CU_ASSERT_EQUAL(x->pan_enc[0], 0xab);
  CU_ASSERT_EQUAL(x->pan_enc[31], 0xab);
  CU_ASSERT_EQUAL(x->pan_enc_key_ver, 3);
  CU_ASSERT_STRING_EQUAL(x->stan, "000555");
  /* 2026-11-23 10:00:00 UTC */
  CU_ASSERT_EQUAL(x->transmission_us, 1795428000LL * 1000000LL);
  CU_ASSERT_STRING_EQUAL(x->orig_link_id, "visa-1");
  char st[16];
  saf_state(171, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "live");
  /* A disarm that arrives now (node-a's late commit) leaves it owed. */
  CU_ASSERT_EQUAL(apply(171, "disarm", NULL, NULL), 0);
  saf_state(171, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "live");
  /* A row with no journaled original is still claimable, flagged. */
  CU_ASSERT_EQUAL(apply(172, "reverse", "0420", NULL), 1);
  CU_ASSERT_EQUAL(db_saf_claim(g_c, NULL, "node-b", it, 2, &n, err, sizeof err),
                  0);
  CU_ASSERT_EQUAL_FATAL(n, 1);
  CU_ASSERT_EQUAL(it[0].txn_id, 172);
  CU_ASSERT_EQUAL(it[0].has_original, 0);
  CU_ASSERT_EQUAL(it[0].amount_minor, -1);
  CU_ASSERT_STRING_EQUAL(it[0].link_id, "");
}

static void test_claim_order_oldest_first_and_per_original(void) {
  reset_queue();
  /* The advice of 181 is older than its reversal: the reversal waits. */
  CU_ASSERT_EQUAL(apply(181, "advice", "0220", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(182, "reverse", "0420", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(181, "reverse", "0420", "visa-1"), 1);
  exec_ok("UPDATE switch.saf SET next_attempt_at = now() - interval '1 h' "
          "WHERE txn_id = 182");
  db_saf_item_t it[8];
  size_t n = 0;
  CU_ASSERT_EQUAL(db_saf_claim(g_c, NULL, "node-a", it, 8, &n, NULL, 0), 0);
  CU_ASSERT_EQUAL_FATAL(n, 2);
  CU_ASSERT_EQUAL(it[0].txn_id, 182);
  CU_ASSERT_EQUAL(it[1].txn_id, 181);
  CU_ASSERT_STRING_EQUAL(it[1].kind, "advice");
  CU_ASSERT_STRING_EQUAL(it[1].mti, "0220");
  db_saf_key_t k = key_at("000181", t_us(181));
  CU_ASSERT_EQUAL(
      db_saf_record_send(g_c, it[1].saf_id, "node-a", &k, NULL, NULL, NULL, 0),
      0);
  CU_ASSERT_EQUAL(db_saf_ack(g_c, &k, "00", NULL, NULL, 0), 0);
  CU_ASSERT_EQUAL(db_saf_claim(g_c, NULL, "node-a", it, 8, &n, NULL, 0), 0);
  CU_ASSERT_EQUAL_FATAL(n, 1);
  CU_ASSERT_EQUAL(it[0].txn_id, 181);
  CU_ASSERT_STRING_EQUAL(it[0].kind, "reversal");
}

/* ---- backoff, dead letters, acknowledgements ---- */

/* Makes txn's live rows due now, claims the one due row as node-a,
 * records a send with stan/us and fails it; returns the db_saf_fail
 * status, *dead its verdict. */
static int send_and_fail(const db_saf_config_t *cfg, long long txn,
                         const char *stan, int64_t us, int *dead) {
  db_saf_item_t it[2];
  size_t n = 0;
  snprintf(g_sql, sizeof g_sql,
           "UPDATE switch.saf SET next_attempt_at = now() - interval '1 ms' "
           "WHERE state = 'live' AND txn_id = %lld",
           txn);
  exec_ok(g_sql);
  if (db_saf_claim(g_c, cfg, "node-a", it, 2, &n, NULL, 0) || n != 1)
    return -100;
  db_saf_key_t k = key_at(stan, us);
  char err[256];
  int rc = db_saf_record_send(g_c, it[0].saf_id, "node-a", &k, NULL, NULL, err,
                              sizeof err);
  if (rc) {
    fprintf(stderr, "%s\n", err);
    return rc;
  }
  return db_saf_fail(g_c, cfg, it[0].saf_id, "node-a", NULL, dead, err,
                     sizeof err);
}

static void test_backoff_schedule(void) {
  reset_queue();
  CU_ASSERT_EQUAL(apply(191, "reverse", "0420", "visa-1"), 1);
  db_saf_config_t cfg = {6, 1000, 5000, 0};
  /* min(1000 * 2^(k-1), 5000) for k = 1..5, written out. */
  static const long long want[] = {1000, 2000, 4000, 5000, 5000};
  for (int k = 1; k <= 5; k++) {
    char stan[7];
    snprintf(stan, sizeof stan, "%06d", 190 + k);
    int dead = -1;
    CU_ASSERT_EQUAL(send_and_fail(&cfg, 191, stan, t_us(k), &dead), 0);
    CU_ASSERT_EQUAL(dead, 0);
    CU_ASSERT_EQUAL(q("SELECT (extract(epoch FROM next_attempt_at - "
                      "updated_at) * 1000)::bigint FROM switch.saf "
                      "WHERE txn_id = %lld",
                      191),
                    want[k - 1]);
    CU_ASSERT_EQUAL(db_saf_backoff_ms(&cfg, (uint32_t)k),
                    (uint64_t)want[k - 1]);
    CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf WHERE txn_id = %lld "
                      "AND owner IS NULL AND state = 'live'",
                      191),
                    1);
  }
  /* Not due yet: nobody claims it before its time. */
  db_saf_item_t it[2];
  size_t n = 0;
  CU_ASSERT_EQUAL(db_saf_claim(g_c, &cfg, "node-a", it, 2, &n, NULL, 0), 0);
  CU_ASSERT_EQUAL(n, 0);
  /* Defaults: 1 s doubling to 300 s. */
  CU_ASSERT_EQUAL(db_saf_backoff_ms(NULL, 1), 1000);
  CU_ASSERT_EQUAL(db_saf_backoff_ms(NULL, 9), 256000);
  CU_ASSERT_EQUAL(db_saf_backoff_ms(NULL, 10), 300000);
  CU_ASSERT_EQUAL(db_saf_backoff_ms(NULL, 4000000000u), 300000);
  /* The sixth failed send makes it dead. */
  int dead = -1;
  CU_ASSERT_EQUAL(send_and_fail(&cfg, 191, "000196", t_us(6), &dead), 0);
  CU_ASSERT_EQUAL(dead, 1);
  char st[16];
  saf_state(191, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "dead");
  CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf_attempt a JOIN "
                    "switch.saf s USING (saf_id) WHERE s.txn_id = %lld AND "
                    "a.outcome = 'no_answer'",
                    191),
                  6);
}

static int collect(void *ctx, const db_saf_row_t *row) {
  int64_t *ids = ctx;
  if (ids[0] < 15)
    ids[++ids[0]] = row->saf_id;
  return 0;
}

static void test_dead_listed_and_retried_by_operator(void) {
  reset_queue();
  CU_ASSERT_EQUAL(apply(201, "reverse", "0420", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(202, "advice", "0120", "visa-1"), 1);
  exec_ok("UPDATE switch.saf SET next_attempt_at = now() + interval '1 h' "
          "WHERE txn_id = 202");
  int64_t id = saf_id_of(201, "reversal");
  db_saf_config_t cfg = {2, 10, 20, 0};
  int dead = -1;
  CU_ASSERT_EQUAL(send_and_fail(&cfg, 201, "000201", t_us(201), &dead), 0);
  CU_ASSERT_EQUAL(dead, 0);
  CU_ASSERT_EQUAL(send_and_fail(&cfg, 201, "000202", t_us(202), &dead), 0);
  CU_ASSERT_EQUAL(dead, 1);
  /* Dead rows are never claimed. */
  db_saf_item_t it[2];
  size_t n = 0;
  make_due();
  CU_ASSERT_EQUAL(db_saf_claim(g_c, &cfg, "node-a", it, 2, &n, NULL, 0), 0);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(it[0].txn_id, 202); /* only the advice */
  CU_ASSERT_EQUAL(db_saf_release(g_c, it[0].saf_id, "node-a", NULL, 0), 0);
  exec_ok("UPDATE switch.saf SET next_attempt_at = now() + interval '1 h' "
          "WHERE txn_id = 202");
  /* Listed and counted. */
  int64_t ids[16] = {0};
  char err[256];
  CU_ASSERT_EQUAL(db_saf_list(g_c, "dead", 10, collect, ids, err, sizeof err),
                  0);
  CU_ASSERT_EQUAL(ids[0], 1);
  CU_ASSERT_EQUAL(ids[1], id);
  memset(ids, 0, sizeof ids);
  CU_ASSERT_EQUAL(db_saf_list(g_c, NULL, 10, collect, ids, err, sizeof err), 0);
  CU_ASSERT_EQUAL(ids[0], 2);
  CU_ASSERT_EQUAL(db_saf_list(g_c, "zombie", 10, collect, ids, err, sizeof err),
                  DB_E_INVAL);
  db_saf_stats_t s;
  CU_ASSERT_EQUAL(db_saf_stats(g_c, &s, err, sizeof err), 0);
  CU_ASSERT_EQUAL(s.dead, 1);
  CU_ASSERT_EQUAL(s.live, 1);
  CU_ASSERT_EQUAL(s.due, 0);
  CU_ASSERT(s.oldest_dead_us != INT64_MIN && s.oldest_dead_us <= s.now_us);
  /* The operator retries it: live, due now, its history kept. */
  CU_ASSERT_EQUAL(db_saf_retry(g_c, id, err, sizeof err), 0);
  CU_ASSERT_EQUAL(db_saf_retry(g_c, id, err, sizeof err), DB_E_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "not dead"));
  CU_ASSERT_EQUAL(db_saf_retry(g_c, 999999999, err, sizeof err),
                  DB_E_NOT_FOUND);
  CU_ASSERT_EQUAL(q("SELECT count(*) FROM switch.saf WHERE saf_id = %lld AND "
                    "state = 'live' AND next_attempt_at <= now() AND "
                    "attempts = 2 AND retries = 1 AND dead_at IS NULL",
                    id),
                  1);
  CU_ASSERT_EQUAL(db_saf_stats(g_c, &s, err, sizeof err), 0);
  CU_ASSERT_EQUAL(s.due, 1);
  CU_ASSERT(s.oldest_due_us != INT64_MIN);
  CU_ASSERT_EQUAL(db_saf_claim(g_c, &cfg, "node-a", it, 2, &n, NULL, 0), 0);
  CU_ASSERT_EQUAL_FATAL(n, 1);
  CU_ASSERT_STRING_EQUAL(it[0].mti, "0421");
  CU_ASSERT_EQUAL(it[0].attempt, 3);
  CU_ASSERT_EQUAL(db_saf_release(g_c, id, "node-a", NULL, 0), 0);
  /* The limit counts again from the retry: two more sends. */
  CU_ASSERT_EQUAL(send_and_fail(&cfg, 201, "000203", t_us(203), &dead), 0);
  CU_ASSERT_EQUAL(dead, 0);
  CU_ASSERT_EQUAL(send_and_fail(&cfg, 201, "000204", t_us(204), &dead), 0);
  CU_ASSERT_EQUAL(dead, 1);
}

static void test_dead_when_owner_died_after_last_send(void) {
  reset_queue();
  CU_ASSERT_EQUAL(apply(211, "reverse", "0420", "visa-1"), 1);
  db_saf_config_t cfg = {1, 10, 20, 200};
  db_saf_item_t it[2];
  size_t n = 0;
  CU_ASSERT_EQUAL(db_saf_claim(g_c, &cfg, "node-a", it, 2, &n, NULL, 0), 0);
  CU_ASSERT_EQUAL_FATAL(n, 1);
  db_saf_key_t k = key_at("000211", t_us(211));
  CU_ASSERT_EQUAL(
      db_saf_record_send(g_c, it[0].saf_id, "node-a", &k, NULL, NULL, NULL, 0),
      0);
  sleep_ms(300); /* node-a died before the outcome */
  CU_ASSERT_EQUAL(db_saf_claim(g_c, &cfg, "node-b", it, 2, &n, NULL, 0), 0);
  CU_ASSERT_EQUAL(n, 0);
  char st[16];
  saf_state(211, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "dead");
}

static void test_ack_matches_first_send_and_repeat(void) {
  reset_queue();
  CU_ASSERT_EQUAL(apply(221, "reverse", "0420", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(222, "advice", "0220", "visa-1"), 1);
  int64_t id1 = saf_id_of(221, "reversal"), id2 = saf_id_of(222, "advice");
  db_saf_config_t cfg = {5, 10, 20, 0};
  /* Two sends each; the fails leave both live. */
  db_saf_item_t it[4];
  size_t n = 0;
  int dead;
  for (int round = 0; round < 2; round++) {
    make_due();
    CU_ASSERT_EQUAL(db_saf_claim(g_c, &cfg, "node-a", it, 4, &n, NULL, 0), 0);
    CU_ASSERT_EQUAL_FATAL(n, 2);
    for (size_t i = 0; i < n; i++) {
      char stan[7];
      snprintf(stan, sizeof stan, "%06lld",
               (long long)(it[i].txn_id * 10 + round));
      db_saf_key_t k = key_at(stan, t_us(round));
      char mti[5];
      CU_ASSERT_EQUAL(db_saf_record_send(g_c, it[i].saf_id, "node-a", &k, NULL,
                                         mti, NULL, 0),
                      0);
      CU_ASSERT_STRING_EQUAL(mti, round == 0            ? it[i].mti
                                  : it[i].txn_id == 221 ? "0421"
                                                        : "0221");
      if (round == 0)
        CU_ASSERT_EQUAL(db_saf_fail(g_c, &cfg, it[i].saf_id, "node-a", NULL,
                                    &dead, NULL, 0),
                        0);
    }
  }
  /* The reversal: answered through its first send after the repeat. */
  db_saf_acked_t ack;
  char err[256];
  db_saf_key_t k1 = key_at("002210", t_us(0));
  CU_ASSERT_EQUAL(db_saf_ack(g_c, &k1, "00", &ack, err, sizeof err), 0);
  CU_ASSERT_EQUAL(ack.saf_id, id1);
  CU_ASSERT_EQUAL(ack.txn_id, 221);
  CU_ASSERT_EQUAL(ack.attempt, 1);
  CU_ASSERT_EQUAL(ack.already_acked, 0);
  CU_ASSERT_STRING_EQUAL(ack.kind, "reversal");
  CU_ASSERT_STRING_EQUAL(ack.business_date, DATE);
  /* The repeat's answer comes later: matched, already acked. */
  db_saf_key_t k1b = key_at("002211", t_us(1));
  CU_ASSERT_EQUAL(db_saf_ack(g_c, &k1b, "00", &ack, err, sizeof err), 0);
  CU_ASSERT_EQUAL(ack.saf_id, id1);
  CU_ASSERT_EQUAL(ack.attempt, 2);
  CU_ASSERT_EQUAL(ack.already_acked, 1);
  /* The advice: answered through its repeat. */
  db_saf_key_t k2 = key_at("002221", t_us(1));
  CU_ASSERT_EQUAL(db_saf_ack(g_c, &k2, "00", &ack, err, sizeof err), 0);
  CU_ASSERT_EQUAL(ack.saf_id, id2);
  CU_ASSERT_EQUAL(ack.attempt, 2);
  CU_ASSERT_EQUAL(ack.already_acked, 0);
  CU_ASSERT_EQUAL(pgt_ll(g_c, "SELECT count(*) FROM switch.saf WHERE state "
                              "= 'acked' AND owner IS NULL AND "
                              "last_response_code = '00'"),
                  2);
  /* Unknown key: same STAN, another DE7. */
  db_saf_key_t kx = key_at("002210", t_us(99));
  CU_ASSERT_EQUAL(db_saf_ack(g_c, &kx, NULL, NULL, err, sizeof err),
                  DB_E_NOT_FOUND);
}

static void test_record_send_needs_the_lease(void) {
  reset_queue();
  CU_ASSERT_EQUAL(apply(231, "reverse", "0420", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(232, "reverse", "0420", "visa-1"), 1);
  int64_t id = saf_id_of(231, "reversal");
  db_saf_key_t k = key_at("000231", t_us(231));
  char err[256];
  /* Never claimed. */
  CU_ASSERT_EQUAL(
      db_saf_record_send(g_c, id, "node-a", &k, NULL, NULL, err, sizeof err),
      DB_E_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "do not send"));
  db_saf_item_t it[4];
  size_t n = 0;
  CU_ASSERT_EQUAL(db_saf_claim(g_c, NULL, "node-a", it, 4, &n, NULL, 0), 0);
  CU_ASSERT_EQUAL(n, 2);
  /* Another owner's name. */
  CU_ASSERT_EQUAL(
      db_saf_record_send(g_c, id, "node-b", &k, NULL, NULL, err, sizeof err),
      DB_E_CONFLICT);
  CU_ASSERT_EQUAL(
      db_saf_record_send(g_c, id, "node-a", &k, NULL, NULL, err, sizeof err),
      0);
  /* The same key for another row is refused. */
  int64_t id2 = saf_id_of(232, "reversal");
  CU_ASSERT_EQUAL(
      db_saf_record_send(g_c, id2, "node-a", &k, NULL, NULL, err, sizeof err),
      DB_E_REJECTED);
  /* After release: no lease, no send. */
  CU_ASSERT_EQUAL(db_saf_release(g_c, id, "node-a", err, sizeof err), 0);
  db_saf_key_t k2 = key_at("000232", t_us(232));
  CU_ASSERT_EQUAL(
      db_saf_record_send(g_c, id, "node-a", &k2, NULL, NULL, err, sizeof err),
      DB_E_CONFLICT);
  /* An acked row takes no more sends. */
  CU_ASSERT_EQUAL(db_saf_ack(g_c, &k, NULL, NULL, err, sizeof err), 0);
  CU_ASSERT_EQUAL(db_saf_claim(g_c, NULL, "node-a", it, 4, &n, NULL, 0), 0);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_EQUAL(q("SELECT attempts FROM switch.saf WHERE saf_id = %lld", id),
                  1);
}

/* ---- switchctl saf ---- */

/* Runs switchctl --db DB ARGS; its stdout and stderr into out, returns
 * the exit status. */
static int switchctl_as(const char *db, const char *args, char *out,
                        size_t cap) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' --db '%s' %s 2>&1", SW_SWITCHCTL, db, args);
  FILE *f = popen(cmd, "r");
  if (!f)
    return -1;
  size_t n = fread(out, 1, cap - 1, f);
  out[n] = '\0';
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int switchctl(const char *args, char *out, size_t cap) {
  return switchctl_as(pgt_writer, args, out, cap);
}

/* One more event of txn (journal), with an amount. */
static void journal_event(long long txn, int no, const char *event,
                          const char *state, long long amount, const char *date,
                          const char *orig_date) {
  char sql[1024];
  if (strcmp(date, DATE) != 0) {
    snprintf(sql, sizeof sql, "SELECT switch.ensure_journal_partition('%s')",
             date);
    exec_ok(sql);
  }
  snprintf(sql, sizeof sql,
           "INSERT INTO switch.journal_event (business_date, node_id, "
           "txn_id, event_no, event, state, mti, amount_minor, sign, "
           "currency, orig_business_date, chain_seq, chain_hmac, "
           "chain_key_ver) VALUES ('%s', %d, %lld, %d, '%s', '%s', '0210', "
           "%lld, 'D', '978', %s, %lld, sha256('x'), 1)",
           date, NODE, txn, no, event, state, amount,
           orig_date ? "'" DATE "'" : "NULL", ++g_chain_seq);
  exec_ok(sql);
}

/* A claimed reversal carries what the message needs for its amounts: the
 * approved amount (a partial approval) and what was asked to be reversed,
 * a later date's late reversal included. */
static void test_claim_carries_approved_and_reversed_amounts(void) {
  reset_queue();
  journal_original(321, "000321"); /* requested 1321 */
  journal_event(321, 2, "response", "approved", 1000, DATE, NULL);
  journal_event(321, 3, "reversal_requested", "reversal_pending", 400, DATE,
                NULL);
  journal_event(321, 4, "reversal_requested", "reversal_pending", 100,
                "2026-11-24", DATE); /* late, into the next date */
  CU_ASSERT_EQUAL(apply(321, "reverse", "0420", "visa-1"), 1);
  journal_original(322, "000322"); /* timed out: nothing approved it */
  journal_event(322, 2, "timeout", "timed_out", 1322, DATE, NULL);
  CU_ASSERT_EQUAL(apply(322, "release", "0420", "visa-1"), 1);
  db_saf_item_t it[4];
  size_t n = 0;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(
      db_saf_claim(g_c, NULL, "node-1", it, 4, &n, err, sizeof err), 0);
  CU_ASSERT_EQUAL_FATAL(n, 2);
  for (size_t i = 0; i < n; i++) {
    CU_ASSERT(it[i].has_original);
    if (it[i].txn_id == 321) {
      CU_ASSERT_EQUAL(it[i].amount_minor, 1321);
      CU_ASSERT_EQUAL(it[i].approved_minor, 1000);
      CU_ASSERT_EQUAL(it[i].reversed_minor, 500);
    } else {
      CU_ASSERT_EQUAL(it[i].txn_id, 322);
      CU_ASSERT_EQUAL(it[i].amount_minor, 1322);
      CU_ASSERT_EQUAL(it[i].approved_minor, -1);
      CU_ASSERT_EQUAL(it[i].reversed_minor, -1);
    }
  }
}

/* Housekeeping: finished rows older than the horizon go, with their
 * sends; rows still owed never do, however old. */
static void test_purge_removes_only_old_finished_rows(void) {
  reset_queue();
  CU_ASSERT_EQUAL(apply(301, "reverse", "0420", "visa-1"), 1); /* acked */
  CU_ASSERT_EQUAL(apply(301, "ack", "0420", NULL), 1);
  CU_ASSERT_EQUAL(apply(302, "arm", "0420", "visa-1"), 1); /* disarmed */
  CU_ASSERT_EQUAL(apply(302, "disarm", NULL, NULL), 1);
  CU_ASSERT_EQUAL(apply(303, "reverse", "0420", "visa-1"), 1); /* live */
  CU_ASSERT_EQUAL(apply(304, "reverse", "0420", "visa-1"), 1); /* recent */
  CU_ASSERT_EQUAL(apply(304, "ack", "0420", NULL), 1);
  long long id301 = saf_id_of(301, "reversal");
  char sql[400];
  snprintf(sql, sizeof sql,
           "INSERT INTO switch.saf_attempt (saf_id, attempt, mti, owner, "
           "link_id, stan, transmission_at) VALUES (%lld, 1, '0420', "
           "'node-1', 'visa-1', '000301', now())",
           id301);
  exec_ok(sql);
  exec_ok("UPDATE switch.saf SET updated_at = now() - interval '3 days' "
          "WHERE txn_id IN (301, 302, 303)");
  int64_t n = -1;
  char err[256];
  CU_ASSERT_EQUAL(db_saf_purge(g_c, 0, &n, err, sizeof err), DB_E_INVAL);
  CU_ASSERT_EQUAL(db_saf_purge(g_c, 2, &n, err, sizeof err), 0);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_EQUAL(pgt_ll(g_c, "SELECT count(*) FROM switch.saf"), 2);
  CU_ASSERT_EQUAL(pgt_ll(g_c, "SELECT count(*) FROM switch.saf WHERE "
                              "txn_id IN (303, 304)"),
                  2);
  CU_ASSERT_EQUAL(pgt_ll(g_c, "SELECT count(*) FROM switch.saf_attempt"), 0);
  /* Again: nothing left to purge; and through switchctl. */
  char out[1024];
  CU_ASSERT_EQUAL(switchctl("saf purge --older-than-days 2", out, sizeof out),
                  0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "purged 0 finished"));
  CU_ASSERT_EQUAL(switchctl("saf purge --older-than-days 0", out, sizeof out),
                  2);
  CU_ASSERT_EQUAL(switchctl("saf purge", out, sizeof out), 2);
}

static void test_switchctl_saf_list_retry_stats(void) {
  reset_queue();
  CU_ASSERT_EQUAL(apply(241, "reverse", "0420", "visa-1"), 1);
  CU_ASSERT_EQUAL(apply(242, "arm", "0420", "visa-1"), 1);
  db_saf_config_t cfg = {1, 10, 20, 0};
  exec_ok("UPDATE switch.saf SET next_attempt_at = now() + interval '1 h' "
          "WHERE txn_id = 242");
  int dead = -1;
  CU_ASSERT_EQUAL(send_and_fail(&cfg, 241, "000241", t_us(241), &dead), 0);
  CU_ASSERT_EQUAL(dead, 1);
  long long id = saf_id_of(241, "reversal");
  char out[8192], want[128];
  CU_ASSERT_EQUAL(switchctl("saf list", out, sizeof out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "SAF_ID"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "dead"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "armed"));
  CU_ASSERT_EQUAL(switchctl("--json saf list --state dead", out, sizeof out),
                  0);
  snprintf(want, sizeof want, "{\"saf_id\":%lld,", id);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, want));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"state\":\"dead\""));
  CU_ASSERT_PTR_NULL(strstr(out, "armed"));
  CU_ASSERT_EQUAL(switchctl("--json saf stats", out, sizeof out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"armed\":1,\"live\":0"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"dead\":1"));
  CU_ASSERT_EQUAL(switchctl("saf stats", out, sizeof out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "dead      1"));
  char args[64];
  snprintf(args, sizeof args, "saf retry %lld", id);
  CU_ASSERT_EQUAL(switchctl(args, out, sizeof out), 0);
  char st[16];
  saf_state(241, "reversal", st, sizeof st);
  CU_ASSERT_STRING_EQUAL(st, "live");
  CU_ASSERT_EQUAL(switchctl(args, out, sizeof out), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "not dead"));
  CU_ASSERT_EQUAL(switchctl("saf retry 99999999", out, sizeof out), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "no SAF row"));
  /* The reader sees the queue but cannot change it. */
  CU_ASSERT_EQUAL(switchctl_as(pgt_reader, "--json saf stats", out, sizeof out),
                  0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"live\":1"));
  CU_ASSERT_EQUAL(
      switchctl_as(pgt_reader, "saf list --state live", out, sizeof out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, " live "));
  exec_ok("UPDATE switch.saf SET state = 'dead', dead_at = now(), owner = "
          "NULL, lease_until = NULL WHERE txn_id = 241");
  CU_ASSERT_EQUAL(switchctl_as(pgt_reader, args, out, sizeof out), 1);
  CU_ASSERT(strstr(out, "permission denied") || strstr(out, "read-only"));
  /* Usage errors. */
  CU_ASSERT_EQUAL(switchctl("saf", out, sizeof out), 2);
  CU_ASSERT_EQUAL(switchctl("saf retry", out, sizeof out), 2);
  CU_ASSERT_EQUAL(switchctl("saf retry 12x", out, sizeof out), 2);
  CU_ASSERT_EQUAL(switchctl("saf retry -5", out, sizeof out), 2);
  CU_ASSERT_EQUAL(switchctl("saf list --state bogus", out, sizeof out), 2);
  CU_ASSERT_EQUAL(switchctl("saf list --limit 0", out, sizeof out), 2);
  CU_ASSERT_EQUAL(switchctl("saf list --limit", out, sizeof out), 2);
  CU_ASSERT_EQUAL(switchctl("saf stats now", out, sizeof out), 2);
  CU_ASSERT_EQUAL(switchctl("saf frobnicate", out, sizeof out), 2);
}

int main(void) {
  pgt_setup("saf", 1);
  g_c = pgt_connect(pgt_writer);
  if (!g_c)
    return 2;
  if (pgt_exec(g_c, "SELECT switch.ensure_journal_partition('" DATE "')", NULL,
               NULL, 0) != PGRES_TUPLES_OK)
    return 2;
  tu_init();
  static const tu_test_t apply_tests[] = {
      {"arm_is_idempotent", test_arm_is_idempotent},
      {"arm_then_disarm_is_not_owed", test_arm_then_disarm_is_not_owed},
      {"arm_then_release_is_live_and_due",
       test_arm_then_release_is_live_and_due},
      {"reverse_merges_with_release", test_reverse_merges_with_release},
      {"advice_and_ack_by_kind", test_advice_and_ack_by_kind},
      {"saf_apply_refuses_hostile_input", test_saf_apply_refuses_hostile_input},
      {NULL, NULL}};
  static const tu_test_t worker_tests[] = {
      {"c_api_refuses_hostile_input", test_c_api_refuses_hostile_input},
      {"two_owners_never_claim_the_same_row",
       test_two_owners_never_claim_the_same_row},
      {"lease_taken_over_after_owner_dies",
       test_lease_taken_over_after_owner_dies},
      {"armed_with_expired_lease_recovered_as_live",
       test_armed_with_expired_lease_recovered_as_live},
      {"claim_order_oldest_first_and_per_original",
       test_claim_order_oldest_first_and_per_original},
      {"backoff_schedule", test_backoff_schedule},
      {"dead_listed_and_retried_by_operator",
       test_dead_listed_and_retried_by_operator},
      {"dead_when_owner_died_after_last_send",
       test_dead_when_owner_died_after_last_send},
      {"ack_matches_first_send_and_repeat",
       test_ack_matches_first_send_and_repeat},
      {"record_send_needs_the_lease", test_record_send_needs_the_lease},
      {"switchctl_saf_list_retry_stats", test_switchctl_saf_list_retry_stats},
      {"purge_removes_only_old_finished_rows",
       test_purge_removes_only_old_finished_rows},
      {"claim_carries_approved_and_reversed_amounts",
       test_claim_carries_approved_and_reversed_amounts},
      {NULL, NULL}};
  tu_add_suite("saf_apply", apply_tests);
  tu_add_suite("saf_worker", worker_tests);
  int rc = tu_run();
  PQfinish(g_c);
  return rc;
}
