/*
 * test_leases.c — number ranges from switch.leases (db/leases.h) on a real
 * cluster: disjoint under concurrent leasing, abandoned ranges skipped,
 * the STAN wrap and its 24-hour rule, exhaustion, bad arguments; the RRN
 * and txn_id formats.
 */
#include "leases.h"
#include "pgtest.h"
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_rrn_format(void) {
  char out[13];
  CU_ASSERT_EQUAL(db_rrn_format("2026-11-23", 7, 42, out), 0);
  CU_ASSERT_STRING_EQUAL(out, "632707000042"); /* 2026: 6, day 327 */
  CU_ASSERT_EQUAL(db_rrn_format("2024-12-31", 99, 999999, out), 0);
  CU_ASSERT_STRING_EQUAL(out, "436699999999"); /* leap year: day 366 */
  CU_ASSERT_EQUAL(db_rrn_format("2025-01-01", 0, 1, out), 0);
  CU_ASSERT_STRING_EQUAL(out, "500100000001");
  CU_ASSERT_EQUAL(db_rrn_format("2025-03-01", 1, 1, out), 0);
  CU_ASSERT_STRING_EQUAL(out, "506001000001"); /* not leap: day 60 */
  CU_ASSERT_EQUAL(db_rrn_format("2026-11-23", 100, 1, out), -1);
  CU_ASSERT_EQUAL(db_rrn_format("2026-11-23", 1, 0, out), -1);
  CU_ASSERT_EQUAL(db_rrn_format("2026-11-23", 1, 1000000, out), -1);
  CU_ASSERT_EQUAL(db_rrn_format("2026-02-29", 1, 1, out), -1);
  CU_ASSERT_EQUAL(db_rrn_format("2026-13-01", 1, 1, out), -1);
  CU_ASSERT_EQUAL(db_rrn_format("2026-11-23x", 1, 1, out), -1);
  CU_ASSERT_EQUAL(db_rrn_format(NULL, 1, 1, out), -1);
}

static void test_txn_id(void) {
  CU_ASSERT_EQUAL(db_txn_id(1, 1), 281474976710657LL);
  CU_ASSERT_EQUAL(db_txn_id(0, 5), 5);
  CU_ASSERT_EQUAL(db_txn_id(65535, 0xFFFFFFFFFFFFLL), INT64_C(-1));
  CU_ASSERT(db_txn_id(2, 1) != db_txn_id(1, 1));
}

#define THREADS 4
#define LEASES 50

typedef struct {
  int64_t low[LEASES], high[LEASES];
  int failed;
} leaser_t;

static void *leaser(void *arg) {
  leaser_t *l = arg;
  PGconn *c = pgt_connect(pgt_writer);
  char err[256];
  for (int i = 0; i < LEASES; i++)
    if (db_lease_range(c, DB_LEASE_STAN, 3, "visa-1", 100, &l->low[i],
                       &l->high[i], err, sizeof err) != 0) {
      fprintf(stderr, "%s\n", err);
      l->failed++;
    }
  PQfinish(c);
  return NULL;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* Four threads on four connections lease 200 ranges: none overlaps, and
 * together they are exactly 1..20,000. */
static void test_concurrent_ranges_are_disjoint(void) {
  static leaser_t l[THREADS];
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++)
    pthread_create(&t[i], NULL, leaser, &l[i]);
  for (int i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
  static int64_t lows[THREADS * LEASES];
  int n = 0;
  for (int i = 0; i < THREADS; i++) {
    CU_ASSERT_EQUAL(l[i].failed, 0);
    for (int k = 0; k < LEASES; k++) {
      CU_ASSERT_EQUAL(l[i].high[k] - l[i].low[k], 99);
      lows[n++] = l[i].low[k];
    }
  }
  qsort(lows, (size_t)n, sizeof lows[0], cmp_i64);
  for (int k = 0; k < n; k++)
    CU_ASSERT_EQUAL(lows[k], 1 + 100 * (int64_t)k);
}

/* A node that restarts leases anew: the rest of its old range is skipped,
 * never handed out again; other nodes and scopes have their own. */
static void test_restart_skips_the_abandoned_range(void) {
  PGconn *c = pgt_connect(pgt_writer);
  int64_t lo, hi;
  char err[256];
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_TXN_ID, 9, NULL, 1000, &lo, &hi,
                                 err, sizeof err),
                  0);
  CU_ASSERT_EQUAL(lo, 1);
  CU_ASSERT_EQUAL(hi, 1000);
  PQfinish(c);
  c = pgt_connect(pgt_writer); /* "restarted": used 1..10 only */
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_TXN_ID, 9, "", 1000, &lo, &hi, err,
                                 sizeof err),
                  0);
  CU_ASSERT_EQUAL(lo, 1001);
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_TXN_ID, 10, NULL, 5, &lo, &hi, err,
                                 sizeof err),
                  0);
  CU_ASSERT_EQUAL(lo, 1); /* another node */
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_RRN, 9, "2026-11-23", 10, &lo, &hi,
                                 err, sizeof err),
                  0);
  CU_ASSERT_EQUAL(lo, 1);
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_RRN, 9, "2026-11-24", 10, &lo, &hi,
                                 err, sizeof err),
                  0);
  CU_ASSERT_EQUAL(lo, 1); /* a new business date starts again */
  PQfinish(c);
}

/* STANs wrap at 999,999 back to 1, but not twice within 24 hours. */
static void test_stan_wrap_and_the_24_hour_rule(void) {
  PGconn *c = pgt_connect(pgt_writer);
  int64_t lo, hi;
  char err[256];
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_STAN, 4, "mc-1", 1000, &lo, &hi,
                                 err, sizeof err),
                  0);
  pgt_exec(c,
           "UPDATE switch.leases SET next_value = 999501 WHERE kind = 'stan' "
           "AND node_id = 4 AND scope = 'mc-1'",
           NULL, NULL, 0);
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_STAN, 4, "mc-1", 499, &lo, &hi,
                                 err, sizeof err),
                  0);
  CU_ASSERT_EQUAL(lo, 999501);
  CU_ASSERT_EQUAL(hi, 999999);
  /* Does not fit: wraps to 1 (the first wrap). */
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_STAN, 4, "mc-1", 1000, &lo, &hi,
                                 err, sizeof err),
                  0);
  CU_ASSERT_EQUAL(lo, 1);
  CU_ASSERT_EQUAL(hi, 1000);
  /* Used up again within the day: refused. */
  pgt_exec(c,
           "UPDATE switch.leases SET next_value = 999999 WHERE kind = 'stan' "
           "AND node_id = 4 AND scope = 'mc-1'",
           NULL, NULL, 0);
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_STAN, 4, "mc-1", 10, &lo, &hi, err,
                                 sizeof err),
                  DB_E_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "within 24 hours"));
  /* A day after the last wrap: allowed. */
  pgt_exec(c,
           "UPDATE switch.leases SET wrapped_at = now() - interval '25 hours' "
           "WHERE kind = 'stan' AND node_id = 4 AND scope = 'mc-1'",
           NULL, NULL, 0);
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_STAN, 4, "mc-1", 10, &lo, &hi, err,
                                 sizeof err),
                  0);
  CU_ASSERT_EQUAL(lo, 1);
  PQfinish(c);
}

/* RRN sequences never wrap; bad arguments are refused. */
static void test_exhaustion_and_bad_arguments(void) {
  PGconn *c = pgt_connect(pgt_writer);
  int64_t lo, hi;
  char err[256];
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_RRN, 5, "2026-11-23", 100000, &lo,
                                 &hi, err, sizeof err),
                  0);
  pgt_exec(c,
           "UPDATE switch.leases SET next_value = 999990 WHERE kind = 'rrn' "
           "AND node_id = 5",
           NULL, NULL, 0);
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_RRN, 5, "2026-11-23", 10, &lo, &hi,
                                 err, sizeof err),
                  0);
  CU_ASSERT_EQUAL(hi, 999999);
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_RRN, 5, "2026-11-23", 1, &lo, &hi,
                                 err, sizeof err),
                  DB_E_CONFLICT);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "used up"));
  /* RRN node ids have two digits; a scope of the wrong shape; n. */
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_RRN, 100, "2026-11-23", 1, &lo,
                                 &hi, err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_RRN, 5, "tomorrow", 1, &lo, &hi,
                                 err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_STAN, 5, "Bad Link!", 1, &lo, &hi,
                                 err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_STAN, 5, "visa-1", 0, &lo, &hi,
                                 err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(db_lease_range(c, DB_LEASE_STAN, 5, "visa-1", 100001, &lo,
                                 &hi, err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(
      db_lease_range(c, DB_LEASE_STAN, 5, NULL, 1, &lo, &hi, err, sizeof err),
      DB_E_INVAL);
  /* The reader cannot lease. */
  PGconn *rd = pgt_connect(pgt_reader);
  CU_ASSERT_NOT_EQUAL(db_lease_range(rd, DB_LEASE_STAN, 5, "visa-1", 1, &lo,
                                     &hi, err, sizeof err),
                      0);
  PQfinish(rd);
  PQfinish(c);
}

int main(void) {
  pgt_setup("leases", 1);
  atexit(pgt_teardown);
  tu_init();
  static const tu_test_t t[] = {
      {"rrn_format", test_rrn_format},
      {"txn_id", test_txn_id},
      {"concurrent_ranges_are_disjoint", test_concurrent_ranges_are_disjoint},
      {"restart_skips_the_abandoned_range",
       test_restart_skips_the_abandoned_range},
      {"stan_wrap_and_the_24_hour_rule", test_stan_wrap_and_the_24_hour_rule},
      {"exhaustion_and_bad_arguments", test_exhaustion_and_bad_arguments},
      {NULL, NULL}};
  tu_add_suite("leases", t);
  return tu_run();
}
