/*
 * test_journal.c — the journal writer (db/journal.h) against a real
 * PostgreSQL cluster (pgtest.h) and the soft HSM adapter: durability,
 * idempotency, many submitters, the server restarted and the connection
 * cut mid-batch, back-pressure, deadlines, refused rows isolated, the HMAC
 * chain and db_journal_verify finding tampering.
 */
#include "hsm.h"
#include "journal.h"
#include "pgtest.h"
#include "testutil.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define CHAIN_KEY "journal.chain"
#define NODE 7

static char g_ks[400], g_mk[400];
static hsm_config_t g_hsm_cfg;
static uv_loop_t g_hloop; /* for verify and the expected-HMAC checks */
static hsm_t *g_hsm;

/* ------------------------------------------------------------------------ */
/* Fixtures                                                                  */

static void make_keys(void) {
  snprintf(g_ks, sizeof g_ks, "%s/keys.store", pgt_tmp);
  snprintf(g_mk, sizeof g_mk, "%s/master.key", pgt_tmp);
  FILE *f = fopen(g_mk, "w");
  if (!f)
    exit(2);
  fputs("404142434445464748494A4B4C4D4E4F505152535455565758595A5B5C5D5E5F\n",
        f);
  fclose(f);
  chmod(g_mk, 0600);
  g_hsm_cfg = (hsm_config_t){.backend = "soft",
                             .keystore_path = g_ks,
                             .master_key_path = g_mk,
                             .create = 1};
  uv_loop_init(&g_hloop);
  char err[256];
  if (hsm_open(&g_hsm, &g_hloop, &g_hsm_cfg, err, sizeof err)) {
    fprintf(stderr, "hsm: %s\n", err);
    exit(2);
  }
  hsm_key_info_t info;
  if (hsm_key_generate(g_hsm, CHAIN_KEY, HSM_USAGE_HMAC, HSM_ALG_HMAC, 32,
                       "test", &info)) {
    fprintf(stderr, "cannot make the chain key\n");
    exit(2);
  }
}

static void quiet_log(void *ctx, int level, const char *line) {
  (void)ctx;
  if (getenv("SW_TEST_VERBOSE"))
    fprintf(stderr, "journal[%d]: %s\n", level, line);
}

static db_journal_t *open_journal(size_t capacity, size_t max_batch) {
  db_journal_config_t cfg = {.conninfo = pgt_writer,
                             .node_id = NODE,
                             .queue_capacity = capacity,
                             .max_batch = max_batch,
                             .reconnect_max_ms = 200,
                             .hsm_config = &g_hsm_cfg,
                             .chain_key_label = CHAIN_KEY,
                             .log = quiet_log};
  db_journal_t *j = NULL;
  char err[512];
  int rc = db_journal_open(&j, &cfg, err, sizeof err);
  if (rc)
    fprintf(stderr, "db_journal_open: %s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return j;
}

static _Atomic int64_t g_next_txn = 1000;

/* A received event of a purchase. */
static void make_event(db_event_t *ev, const char *date, int64_t txn,
                       int event_no) {
  db_event_init(ev);
  snprintf(ev->business_date, sizeof ev->business_date, "%s", date);
  ev->txn_id = txn;
  ev->event_no = event_no;
  snprintf(ev->event, sizeof ev->event, "%s",
           event_no == 0 ? "received" : "forwarded");
  snprintf(ev->state, sizeof ev->state, "%s",
           event_no == 0 ? "received" : "forwarded");
  if (event_no == 0)
    snprintf(ev->txn_kind, sizeof ev->txn_kind, "purchase");
  snprintf(ev->mti, sizeof ev->mti, "0200");
  snprintf(ev->processing_code, sizeof ev->processing_code, "000000");
  ev->amount_minor = 100 + txn % 5000;
  ev->sign = 'D';
  snprintf(ev->currency, sizeof ev->currency, "840");
  snprintf(ev->terminal_stan, sizeof ev->terminal_stan, "%06u",
           (unsigned)(txn % 1000000) % 1000000u);
  snprintf(ev->terminal_id, sizeof ev->terminal_id, "TERM0001");
  snprintf(ev->merchant_id, sizeof ev->merchant_id, "MERCHANT0000001");
  ev->batch_no = 1;
  snprintf(ev->pan_masked, sizeof ev->pan_masked, "411111******1111");
  ev->terminal_local_us = 1795435200000000LL + txn;
}

/* A submitter: one loop, one port, a count of completions by status. */
typedef struct {
  uv_loop_t loop;
  db_journal_port_t *port;
  db_journal_t *j;
  int outstanding;
  int durable, failed, full;
  int last_status;
  int space_calls;
} sub_t;

static void on_done(db_journal_req_t *r) {
  sub_t *s = r->data;
  s->outstanding--;
  s->last_status = r->status;
  if (r->status == 0)
    s->durable++;
  else
    s->failed++;
}

static void on_space(void *ctx) {
  ((sub_t *)ctx)->space_calls++;
}

static void sub_open(sub_t *s, db_journal_t *j) {
  memset(s, 0, sizeof *s);
  uv_loop_init(&s->loop);
  s->j = j;
  CU_ASSERT_EQUAL_FATAL(
      db_journal_port_open(j, &s->loop, on_space, s, &s->port), 0);
}

static void sub_drain(sub_t *s) {
  while (s->outstanding > 0)
    uv_run(&s->loop, UV_RUN_ONCE);
}

static void sub_close(sub_t *s) {
  db_journal_port_close(s->port);
  uv_run(&s->loop, UV_RUN_DEFAULT);
  uv_loop_close(&s->loop);
}

/* Submits req; on back-pressure, runs the loop until room and retries. */
static int sub_submit(sub_t *s, db_journal_req_t *r) {
  r->data = s;
  for (;;) {
    int rc = db_journal_submit(s->port, r, on_done);
    if (rc == 0) {
      s->outstanding++;
      return 0;
    }
    if (rc != DB_E_FULL)
      return rc;
    s->full++;
    uv_run(&s->loop, UV_RUN_ONCE);
  }
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static long long count_sql(const char *sql) {
  PGconn *c = pgt_connect(pgt_writer);
  long long n = pgt_ll(c, sql);
  PQfinish(c);
  return n;
}

static int admin(const char *sql) {
  char args[2048];
  snprintf(args, sizeof args, "psql --admin -q -v ON_ERROR_STOP=1 -c \"%s\"",
           sql);
  return pgt_pg(args);
}

typedef struct {
  int lines, breaks;
  char first[512];
} rep_t;

static void on_report(void *ctx, const char *line) {
  rep_t *r = ctx;
  r->lines++;
  if (getenv("SW_TEST_VERBOSE"))
    fprintf(stderr, "verify: %s\n", line);
}

static int verify_date(const char *date, char *err, size_t cap) {
  PGconn *c = pgt_connect(pgt_reader);
  rep_t rep = {0};
  int rc = db_journal_verify(c, g_hsm, &g_hloop, CHAIN_KEY, date, on_report,
                             &rep, err, cap);
  PQfinish(c);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

/* The canonical form is stable: a change to it breaks every stored chain,
 * so its bytes are pinned here. */
static void test_canonical_form_is_pinned(void) {
  db_event_t ev;
  db_event_init(&ev);
  snprintf(ev.business_date, sizeof ev.business_date, "2026-11-23");
  ev.node_id = 3;
  ev.txn_id = 42;
  snprintf(ev.event, sizeof ev.event, "received");
  snprintf(ev.state, sizeof ev.state, "received");
  snprintf(ev.mti, sizeof ev.mti, "0200");
  ev.amount_minor = 1250;
  ev.sign = 'D';
  snprintf(ev.currency, sizeof ev.currency, "978");
  ev.chain_seq = 9;
  uint8_t out[2048];
  size_t n = db_event_canonical(&ev, out, sizeof out);
  /* "SWJ1", then (len, bytes) per field; 0xFFFF = absent. */
  static const char expect_hex[] =
      "53574a31"                 /* SWJ1 */
      "000a323032362d31312d3233" /* business_date */
      "000133"                   /* node_id 3 */
      "00023432"                 /* txn_id 42 */
      "000130"                   /* event_no 0 */
      "00087265636569766564"     /* event received */
      "00087265636569766564"     /* state received */
      "ffff"                     /* txn_kind absent */
      "000430323030"             /* mti 0200 */
      "ffff"                     /* processing code absent */
      "000431323530"             /* amount 1250 */
      "000144"                   /* sign D */
      "0003393738"               /* currency 978 */
      "ffffffffffffffff"         /* stan, terminal stan, local, DE7 */
      "ffffffffffffffff"         /* rrn, auth code, response, reason */
      "ffffffffffffffffffffffff" /* terminal merchant batch issuer link orig */
      "ffff"                     /* masked PAN */
      "ffffffffffffffff"         /* PAN hash + version, PAN enc + version */
      "000139";                  /* chain_seq 9 */
  char hex[4200];
  tu_hex(out, n, hex);
  CU_ASSERT_EQUAL(strcasecmp(hex, expect_hex), 0);
  /* Too small a buffer: 0, never a partial form. */
  CU_ASSERT_EQUAL(db_event_canonical(&ev, out, 20), 0);
}

static uint8_t g_mac[32];
static int g_mac_done;

static void mac_into(hsm_req_t *req) {
  if (req->status == 0 && req->result.data.len == 32)
    memcpy(g_mac, req->result.data.out, 32);
  g_mac_done = 1;
}

/* The commit-latency histogram's buckets and percentiles. */
static void test_commit_histogram(void) {
  CU_ASSERT_EQUAL(db_journal_bucket_us(3), 2);     /* 2^1 */
  CU_ASSERT_EQUAL(db_journal_bucket_us(39), 1024); /* 2^10 */
  CU_ASSERT_EQUAL(db_journal_bucket_us(40), 1219); /* ceil(1024 * 1.19) */
  for (int i = 1; i < DB_JOURNAL_BUCKETS; i++)
    CU_ASSERT(db_journal_bucket_us(i) >= db_journal_bucket_us(i - 1));
  CU_ASSERT_EQUAL(db_journal_bucket_us(DB_JOURNAL_BUCKETS), UINT64_MAX);
  db_journal_stats_t st;
  memset(&st, 0, sizeof st);
  CU_ASSERT_EQUAL(db_journal_commit_percentile_us(&st, 50), 0);
  st.commit_hist[39] = 98; /* 98 round trips under 1,024 us */
  st.commit_hist[47] = 2;  /* 2 under 4,096 us */
  CU_ASSERT_EQUAL(db_journal_commit_percentile_us(&st, 50), 1024);
  CU_ASSERT_EQUAL(db_journal_commit_percentile_us(&st, 98), 1024);
  CU_ASSERT_EQUAL(db_journal_commit_percentile_us(&st, 99), 4096);
  CU_ASSERT_EQUAL(db_journal_commit_percentile_us(&st, 100), 0);
}

static void test_one_event_is_durable_with_its_chain(void) {
  db_journal_t *j = open_journal(0, 0);
  sub_t s;
  sub_open(&s, j);
  db_journal_req_t r;
  memset(&r, 0, sizeof r);
  r.n = 1;
  make_event(&r.events[0], "2026-11-23", 1, 0);
  CU_ASSERT_EQUAL(sub_submit(&s, &r), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL(s.durable, 1);
  CU_ASSERT_EQUAL(r.status, 0);
  CU_ASSERT_EQUAL(r.events[0].chain_seq, 1);
  CU_ASSERT_EQUAL(r.events[0].node_id, NODE);
  /* The HMAC, computed here from the spec: HMAC(K, zeros | SHA-256(form)),
   * asked of the HSM adapter directly. */
  uint8_t form[2048], in[64] = {0};
  size_t n = db_event_canonical(&r.events[0], form, sizeof form);
  unsigned dl = 0;
  CU_ASSERT_FATAL(n > 0);
  EVP_Digest(form, n, in + 32, &dl, EVP_sha256(), NULL);
  hsm_data_t a = {.key_label = CHAIN_KEY, .in = in, .len = 64};
  hsm_req_t hr;
  memset(&hr, 0, sizeof hr);
  CU_ASSERT_EQUAL(hsm_hmac(g_hsm, &hr, &a, mac_into), 0);
  while (!g_mac_done)
    uv_run(&g_hloop, UV_RUN_ONCE);
  CU_ASSERT_EQUAL(memcmp(g_mac, r.events[0].chain_hmac, 32), 0);
  PGconn *c = pgt_connect(pgt_reader);
  char hx[80];
  pgt_str(c,
          "SELECT encode(chain_hmac, 'hex') FROM switch.journal_event "
          "WHERE txn_id = 1",
          hx, sizeof hx);
  char want[80];
  tu_hex(r.events[0].chain_hmac, 32, want);
  CU_ASSERT_EQUAL(strcasecmp(hx, want), 0);
  CU_ASSERT_EQUAL(pgt_ll(c,
                         "SELECT chain_seq FROM switch.journal_chain_head "
                         "WHERE business_date = '2026-11-23' AND node_id = 7"),
                  1);
  PQfinish(c);
  sub_close(&s);
  db_journal_close(j, 1000);
  char err[512];
  CU_ASSERT_EQUAL(verify_date("2026-11-23", err, sizeof err), 0);
}

/* Resubmitting what is already journaled: durable, written once. */
static void test_resubmission_is_idempotent(void) {
  db_journal_t *j = open_journal(0, 0);
  sub_t s;
  sub_open(&s, j);
  int64_t txn = atomic_fetch_add(&g_next_txn, 1);
  db_journal_req_t r1, r2;
  memset(&r1, 0, sizeof r1);
  r1.n = 2;
  make_event(&r1.events[0], "2026-11-23", txn, 0);
  make_event(&r1.events[1], "2026-11-23", txn, 1);
  r2 = r1;
  CU_ASSERT_EQUAL(sub_submit(&s, &r1), 0);
  sub_drain(&s);
  /* Same two events again plus a new one. */
  r2.n = 3;
  make_event(&r2.events[2], "2026-11-23", txn, 2);
  CU_ASSERT_EQUAL(sub_submit(&s, &r2), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL(s.durable, 2);
  CU_ASSERT_EQUAL(s.failed, 0);
  char sql[200];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM switch.journal_event WHERE txn_id = %" PRId64,
           txn);
  CU_ASSERT_EQUAL(count_sql(sql), 3);
  sub_close(&s);
  db_journal_close(j, 1000);
  char err[512];
  CU_ASSERT_EQUAL(verify_date("2026-11-23", err, sizeof err), 0);
}

/* Many submitters on their own loops and threads. */
#define THREADS 4
#define PER_THREAD 3000

typedef struct {
  db_journal_t *j;
  const char *date;
  int durable, failed;
} worker_t;

static void *submitter(void *arg) {
  worker_t *w = arg;
  sub_t s;
  memset(&s, 0, sizeof s);
  uv_loop_init(&s.loop);
  if (db_journal_port_open(w->j, &s.loop, on_space, &s, &s.port) != 0)
    return NULL;
  db_journal_req_t *reqs = calloc(PER_THREAD, sizeof *reqs);
  for (int i = 0; i < PER_THREAD; i++) {
    int64_t txn = atomic_fetch_add(&g_next_txn, 1);
    reqs[i].n = 1 + (size_t)(i % 3);
    for (size_t e = 0; e < reqs[i].n; e++)
      make_event(&reqs[i].events[e], w->date, txn, (int)e);
    if (sub_submit(&s, &reqs[i]) != 0)
      break;
    if (i % 64 == 0)
      uv_run(&s.loop, UV_RUN_NOWAIT);
  }
  sub_drain(&s);
  w->durable = s.durable;
  w->failed = s.failed;
  sub_close(&s);
  free(reqs);
  return NULL;
}

static void run_workers(db_journal_t *j, const char *date, worker_t *w,
                        void (*during)(void)) {
  pthread_t t[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker_t){.j = j, .date = date};
    pthread_create(&t[i], NULL, submitter, &w[i]);
  }
  if (during)
    during();
  for (int i = 0; i < THREADS; i++)
    pthread_join(t[i], NULL);
}

/* Expected rows for the requests the workers made: 1, 2, 3 events. */
static long long expected_events(void) {
  long long n = 0;
  for (int i = 0; i < PER_THREAD; i++)
    n += 1 + i % 3;
  return n * THREADS;
}

static void check_day(const char *date, long long events) {
  char sql[300];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM switch.journal_event WHERE business_date = "
           "'%s'",
           date);
  CU_ASSERT_EQUAL(count_sql(sql), events);
  snprintf(sql, sizeof sql,
           "SELECT count(DISTINCT chain_seq) FROM switch.journal_event WHERE "
           "business_date = '%s'",
           date);
  CU_ASSERT_EQUAL(count_sql(sql), events);
  char err[512] = "";
  int rc = verify_date(date, err, sizeof err);
  if (rc)
    fprintf(stderr, "verify %s: %s\n", date, err);
  CU_ASSERT_EQUAL(rc, 0);
}

static void test_many_submitters(void) {
  db_journal_t *j = open_journal(4096, 500);
  worker_t w[THREADS];
  run_workers(j, "2026-11-24", w, NULL);
  int durable = 0, failed = 0;
  for (int i = 0; i < THREADS; i++) {
    durable += w[i].durable;
    failed += w[i].failed;
  }
  CU_ASSERT_EQUAL(durable, THREADS * PER_THREAD);
  CU_ASSERT_EQUAL(failed, 0);
  db_journal_stats_t st;
  db_journal_stats(j, &st);
  CU_ASSERT(st.batches < (uint64_t)(THREADS * PER_THREAD)); /* grouped */
  CU_ASSERT(st.overlapped > 0); /* built while the previous one committed */
  CU_ASSERT_EQUAL(st.durable, (uint64_t)expected_events());
  db_journal_close(j, 1000);
  check_day("2026-11-24", expected_events());
}

static void restart_server(void) {
  sleep_ms(150);
  CU_ASSERT_EQUAL(pgt_pg("stop"), 0);
  sleep_ms(300);
  CU_ASSERT_EQUAL(pgt_pg("start"), 0);
}

/* Four loops submit while `during` disturbs the server; then every
 * request is durable, every event once, the chain intact.  Returns the
 * writer's statistics. */
static db_journal_stats_t run_disturbed(const char *date, size_t max_batch,
                                        void (*during)(void)) {
  db_journal_t *j = open_journal(4096, max_batch);
  worker_t w[THREADS];
  run_workers(j, date, w, during);
  int durable = 0;
  for (int i = 0; i < THREADS; i++)
    durable += w[i].durable;
  CU_ASSERT_EQUAL(durable, THREADS * PER_THREAD);
  db_journal_stats_t st;
  db_journal_stats(j, &st);
  db_journal_close(j, 1000);
  check_day(date, expected_events());
  return st;
}

/* The server stops and starts while four loops submit (no deadline). */
static void test_server_restart_mid_stream(void) {
  db_journal_stats_t st = run_disturbed("2026-11-25", 200, restart_server);
  CU_ASSERT(st.reconnects >= 1);
}

static atomic_int g_cutting;

static void *cutter(void *arg) {
  (void)arg;
  PGconn *c = pgt_connect(pgt_writer);
  while (atomic_load(&g_cutting)) {
    /* Terminates the writer's backend (same role: allowed). */
    PGresult *r = PQexec(c, "SELECT pg_terminate_backend(pid) FROM "
                            "pg_stat_activity WHERE usename = "
                            "'switch_writer' AND pid <> pg_backend_pid() "
                            "AND datname = 'switch'");
    PQclear(r);
    sleep_ms(40);
  }
  PQfinish(c);
  return NULL;
}

static void cut_during(void) {
  pthread_t t;
  atomic_store(&g_cutting, 1);
  pthread_create(&t, NULL, cutter, NULL);
  sleep_ms(600);
  atomic_store(&g_cutting, 0);
  pthread_join(t, NULL);
}

/* The writer's connection is killed again and again mid-batch. */
static void test_connection_cut_mid_batch(void) {
  db_journal_stats_t st = run_disturbed("2026-11-26", 300, cut_during);
  CU_ASSERT(st.retries >= 1);
}

/* Server down: the queue fills (back-pressure), deadlines fail requests
 * with DB_E_TIMEOUT, and when the server is back the queue drains and the
 * submitter is told there is room. */
static void test_backpressure_and_deadlines(void) {
  db_journal_t *j = open_journal(64, 16);
  sub_t s;
  sub_open(&s, j);
  CU_ASSERT_EQUAL_FATAL(pgt_pg("stop"), 0);
  static db_journal_req_t reqs[100];
  memset(reqs, 0, sizeof reqs);
  /* One request with a short deadline. */
  reqs[0].n = 1;
  reqs[0].timeout_ms = 300;
  make_event(&reqs[0].events[0], "2026-11-27", atomic_fetch_add(&g_next_txn, 1),
             0);
  CU_ASSERT_EQUAL(sub_submit(&s, &reqs[0]), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL(s.failed, 1);
  CU_ASSERT_EQUAL(reqs[0].status, DB_E_TIMEOUT);
  /* Fill the queue: 64 events, then DB_E_FULL. */
  int queued = 0, rc = 0;
  for (int i = 1; i < 100; i++) {
    reqs[i].n = 1;
    reqs[i].data = &s;
    make_event(&reqs[i].events[0], "2026-11-27",
               atomic_fetch_add(&g_next_txn, 1), 0);
    rc = db_journal_submit(s.port, &reqs[i], on_done);
    if (rc)
      break;
    s.outstanding++;
    queued++;
  }
  CU_ASSERT_EQUAL(rc, DB_E_FULL);
  CU_ASSERT_EQUAL(queued, 64);
  CU_ASSERT_EQUAL_FATAL(pgt_pg("start"), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL(s.durable, 64);
  uv_run(&s.loop, UV_RUN_NOWAIT);
  CU_ASSERT(s.space_calls >= 1);
  sub_close(&s);
  db_journal_close(j, 1000);
  CU_ASSERT_EQUAL(count_sql("SELECT count(*) FROM switch.journal_event "
                            "WHERE business_date = '2026-11-27'"),
                  64);
}

/* A refused row fails its own request only; the rest of the batch is
 * written.  A closed date answers DB_E_CLOSED. */
static void test_refused_rows_are_isolated(void) {
  CU_ASSERT_EQUAL(admin("SELECT switch.ensure_journal_partition('2026-11-20')"),
                  0);
  CU_ASSERT_EQUAL(admin("ALTER TABLE switch.journal_event_20261120 ADD "
                        "CONSTRAINT journal_closed CHECK (false) NOT VALID"),
                  0);
  db_journal_t *j = open_journal(0, 0);
  sub_t s;
  sub_open(&s, j);
  static db_journal_req_t r[6];
  memset(r, 0, sizeof r);
  for (int i = 0; i < 6; i++) {
    r[i].n = 1;
    make_event(&r[i].events[0], "2026-11-28", atomic_fetch_add(&g_next_txn, 1),
               0);
  }
  snprintf(r[2].events[0].currency, 4, "999"); /* not in switch.currencies */
  snprintf(r[4].events[0].business_date, 11, "2026-11-20"); /* closed */
  for (int i = 0; i < 6; i++)
    CU_ASSERT_EQUAL(sub_submit(&s, &r[i]), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL(r[2].status, DB_E_REJECTED);
  CU_ASSERT_PTR_NOT_NULL(strstr(r[2].error, "foreign key"));
  CU_ASSERT_EQUAL(r[4].status, DB_E_CLOSED);
  CU_ASSERT_EQUAL(s.durable, 4);
  sub_close(&s);
  db_journal_close(j, 1000);
  CU_ASSERT_EQUAL(count_sql("SELECT count(*) FROM switch.journal_event WHERE "
                            "business_date = '2026-11-28'"),
                  4);
  char err[512];
  CU_ASSERT_EQUAL(verify_date("2026-11-28", err, sizeof err), 0);
}

/* A date closed after its events were journaled: resubmitting them is
 * still answered durable (idempotency), a new event is DB_E_CLOSED. */
static void test_resubmission_into_a_closed_date(void) {
  db_journal_t *j = open_journal(0, 0);
  sub_t s;
  sub_open(&s, j);
  db_journal_req_t r, again, fresh;
  memset(&r, 0, sizeof r);
  r.n = 2;
  int64_t txn = atomic_fetch_add(&g_next_txn, 1);
  make_event(&r.events[0], "2026-11-21", txn, 0);
  make_event(&r.events[1], "2026-11-21", txn, 1);
  CU_ASSERT_EQUAL(sub_submit(&s, &r), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL_FATAL(r.status, 0);
  CU_ASSERT_EQUAL(admin("ALTER TABLE switch.journal_event_20261121 ADD "
                        "CONSTRAINT journal_closed CHECK (false) NOT VALID"),
                  0);
  again = r;
  CU_ASSERT_EQUAL(sub_submit(&s, &again), 0);
  memset(&fresh, 0, sizeof fresh);
  fresh.n = 1;
  make_event(&fresh.events[0], "2026-11-21", txn, 2);
  CU_ASSERT_EQUAL(sub_submit(&s, &fresh), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL(again.status, 0);
  CU_ASSERT_EQUAL(fresh.status, DB_E_CLOSED);
  sub_close(&s);
  db_journal_close(j, 1000);
  CU_ASSERT_EQUAL(count_sql("SELECT count(*) FROM switch.journal_event WHERE "
                            "business_date = '2026-11-21'"),
                  2);
}

/* Bad submissions are refused at once (the callback never runs). */
static void test_bad_submissions_refused(void) {
  db_journal_t *j = open_journal(0, 0);
  sub_t s;
  sub_open(&s, j);
  db_journal_req_t r;
  memset(&r, 0, sizeof r);
  r.n = 0;
  CU_ASSERT_EQUAL(db_journal_submit(s.port, &r, on_done), DB_E_INVAL);
  r.n = DB_JOURNAL_REQ_MAX + 1;
  CU_ASSERT_EQUAL(db_journal_submit(s.port, &r, on_done), DB_E_INVAL);
  r.n = 1;
  make_event(&r.events[0], "2026-13-xx", 5, 0);
  CU_ASSERT_EQUAL(db_journal_submit(s.port, &r, on_done), DB_E_INVAL);
  make_event(&r.events[0], "2026-11-23", 5, 0);
  memset(r.events[0].rrn, 'A', sizeof r.events[0].rrn); /* no NUL */
  CU_ASSERT_EQUAL(db_journal_submit(s.port, &r, on_done), DB_E_INVAL);
  make_event(&r.events[0], "2026-11-23", 5, 0);
  r.events[0].sign = 'X';
  CU_ASSERT_EQUAL(db_journal_submit(s.port, &r, on_done), DB_E_INVAL);
  sub_close(&s);
  db_journal_close(j, 1000);
  /* A missing chain key, a wrong password: open fails and says why. */
  db_journal_config_t cfg = {.conninfo = pgt_writer,
                             .hsm_config = &g_hsm_cfg,
                             .chain_key_label = "no.such.key",
                             .log = quiet_log};
  db_journal_t *j2 = NULL;
  char err[512];
  CU_ASSERT_EQUAL(db_journal_open(&j2, &cfg, err, sizeof err), DB_E_HSM);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "no.such.key"));
  cfg.chain_key_label = CHAIN_KEY;
  char bad[1100];
  snprintf(bad, sizeof bad, "%s password=wrong", pgt_writer);
  cfg.conninfo = "host=127.0.0.1 port=1 dbname=x connect_timeout=2";
  CU_ASSERT_EQUAL(db_journal_open(&j2, &cfg, err, sizeof err), DB_E_CONNECT);
  (void)bad;
}

/* Runs switchctl with the test's database (as reader or writer) and key
 * store, then ARGS; returns its exit status, output in out. */
static int switchctl(const char *conninfo, const char *args, char *out,
                     size_t cap) {
  char cmd[2600];
  snprintf(cmd, sizeof cmd,
           "'%s' --db '%s' --hsm-keystore '%s' --hsm-master-key '%s' %s 2>&1",
           SW_SWITCHCTL, conninfo, g_ks, g_mk, args);
  FILE *p = popen(cmd, "r");
  if (!p)
    return -1;
  size_t n = fread(out, 1, cap - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  if (getenv("SW_TEST_VERBOSE"))
    fprintf(stderr, "%s", out);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* switchctl verify as the operator runs it. */
static int switchctl_verify(const char *date, char *out, size_t cap) {
  char args[100];
  snprintf(args, sizeof args, "--chain-key " CHAIN_KEY " verify --date %s",
           date);
  return switchctl(pgt_reader, args, out, cap);
}

/* Tampering as a superuser (triggers bypassed) is found and located. */
static void test_verify_finds_tampering(void) {
  char err[512] = "", out[4096];
  /* 2026-11-24 was written by test_many_submitters and verifies. */
  CU_ASSERT_EQUAL_FATAL(verify_date("2026-11-24", err, sizeof err), 0);
  CU_ASSERT_EQUAL(switchctl_verify("2026-11-24", out, sizeof out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "chain intact"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "verify 2026-11-24: ok"));
  CU_ASSERT_EQUAL(switchctl_verify("2026-02-30", out, sizeof out), 2);
  /* A changed amount. */
  CU_ASSERT_EQUAL(admin("SET session_replication_role = replica; UPDATE "
                        "switch.journal_event SET amount_minor = amount_minor "
                        "+ 1 WHERE business_date = '2026-11-24' AND "
                        "chain_seq = 500"),
                  0);
  CU_ASSERT_EQUAL(verify_date("2026-11-24", err, sizeof err), DB_E_INTEGRITY);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "seq 500"));
  CU_ASSERT_EQUAL(switchctl_verify("2026-11-24", out, sizeof out), 3);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "seq 500"));
  CU_ASSERT_EQUAL(admin("SET session_replication_role = replica; UPDATE "
                        "switch.journal_event SET amount_minor = amount_minor "
                        "- 1 WHERE business_date = '2026-11-24' AND "
                        "chain_seq = 500"),
                  0);
  CU_ASSERT_EQUAL(verify_date("2026-11-24", err, sizeof err), 0);
  /* A deleted row. */
  CU_ASSERT_EQUAL(admin("SET session_replication_role = replica; DELETE FROM "
                        "switch.journal_event WHERE business_date = "
                        "'2026-11-24' AND chain_seq = 777"),
                  0);
  CU_ASSERT_EQUAL(verify_date("2026-11-24", err, sizeof err), DB_E_INTEGRITY);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "seq 778"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "missing"));
  /* On another day: the last row cut off the end. */
  long long last = count_sql("SELECT max(chain_seq) FROM switch.journal_event "
                             "WHERE business_date = '2026-11-26'");
  char sql[300];
  snprintf(sql, sizeof sql,
           "SET session_replication_role = replica; DELETE FROM "
           "switch.journal_event WHERE business_date = '2026-11-26' AND "
           "chain_seq = %lld",
           last);
  CU_ASSERT_EQUAL(admin(sql), 0);
  CU_ASSERT_EQUAL(verify_date("2026-11-26", err, sizeof err), DB_E_INTEGRITY);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "removed from the end"));
  /* An inserted row: a forged event numbered 6 carrying row 5's HMAC. */
  CU_ASSERT_EQUAL(
      admin("SET session_replication_role = replica; INSERT INTO "
            "switch.journal_event (business_date, node_id, "
            "txn_id, event_no, event, state, mti, chain_seq, chain_hmac, "
            "chain_key_ver) SELECT business_date, node_id, txn_id + 900000000, "
            "event_no, event, state, mti, 6, chain_hmac, chain_key_ver FROM "
            "switch.journal_event WHERE business_date = '2026-11-25' AND "
            "chain_seq = 5"),
      0);
  CU_ASSERT_EQUAL(verify_date("2026-11-25", err, sizeof err), DB_E_INTEGRITY);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "seq 6"));
}

/* Two writers with the same node id: the second one's batch is refused
 * with DB_E_CONFLICT instead of forking the chain. */
static void test_second_writer_same_node_conflicts(void) {
  db_journal_t *a = open_journal(0, 0), *b = open_journal(0, 0);
  sub_t sa, sb;
  sub_open(&sa, a);
  sub_open(&sb, b);
  db_journal_req_t r1, r2, r3;
  memset(&r1, 0, sizeof r1);
  memset(&r2, 0, sizeof r2);
  memset(&r3, 0, sizeof r3);
  r1.n = r2.n = r3.n = 1;
  make_event(&r1.events[0], "2026-11-29", atomic_fetch_add(&g_next_txn, 1), 0);
  make_event(&r2.events[0], "2026-11-29", atomic_fetch_add(&g_next_txn, 1), 0);
  make_event(&r3.events[0], "2026-11-29", atomic_fetch_add(&g_next_txn, 1), 0);
  CU_ASSERT_EQUAL(sub_submit(&sa, &r1), 0);
  sub_drain(&sa);
  CU_ASSERT_EQUAL(sub_submit(&sb, &r2), 0); /* b: head loaded now: at 1 */
  sub_drain(&sb);
  CU_ASSERT_EQUAL(r2.status, 0);
  CU_ASSERT_EQUAL(sub_submit(&sa, &r3), 0); /* a still thinks 1 */
  sub_drain(&sa);
  CU_ASSERT_EQUAL(r3.status, 0); /* a reloads the head once and goes on */
  CU_ASSERT_EQUAL(r3.events[0].chain_seq, 3);
  sub_close(&sa);
  sub_close(&sb);
  db_journal_close(a, 1000);
  db_journal_close(b, 1000);
  char err[512];
  CU_ASSERT_EQUAL(verify_date("2026-11-29", err, sizeof err), 0);
}

/* SAF changes commit with the events that cause them: an armed reversal
 * arrives with the 'armed' event, the response disarms it, a timeout
 * releases it to store-and-forward. */
static void test_saf_changes_commit_with_their_events(void) {
  db_journal_t *j = open_journal(0, 0);
  sub_t s;
  sub_open(&s, j);
  int64_t t1 = atomic_fetch_add(&g_next_txn, 1);
  int64_t t2 = atomic_fetch_add(&g_next_txn, 1);
  db_journal_req_t r[4];
  memset(r, 0, sizeof r);
  /* Both originals received and armed (one request each). */
  for (int k = 0; k < 2; k++) {
    int64_t txn = k ? t2 : t1;
    r[k].n = 2;
    make_event(&r[k].events[0], "2026-11-30", txn, 0);
    make_event(&r[k].events[1], "2026-11-30", txn, 1);
    snprintf(r[k].events[1].event, sizeof r[k].events[1].event, "armed");
    snprintf(r[k].events[1].state, sizeof r[k].events[1].state, "armed");
    snprintf(r[k].events[1].link_id, sizeof r[k].events[1].link_id, "visa-1");
    r[k].events[1].saf_op = DB_SAF_ARM;
    snprintf(r[k].events[1].saf_mti, 5, "0420");
    CU_ASSERT_EQUAL(sub_submit(&s, &r[k]), 0);
  }
  sub_drain(&s);
  char sql[300];
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM switch.saf WHERE state = 'armed' AND "
           "txn_id IN (%" PRId64 ", %" PRId64 ") AND owner = 'node-7'",
           t1, t2);
  CU_ASSERT_EQUAL(count_sql(sql), 2);
  /* t1: the approval disarms; t2: the timeout releases. */
  r[2].n = 1;
  make_event(&r[2].events[0], "2026-11-30", t1, 2);
  snprintf(r[2].events[0].event, sizeof r[2].events[0].event, "response");
  snprintf(r[2].events[0].state, sizeof r[2].events[0].state, "approved");
  r[2].events[0].saf_op = DB_SAF_DISARM;
  r[3].n = 1;
  make_event(&r[3].events[0], "2026-11-30", t2, 2);
  snprintf(r[3].events[0].event, sizeof r[3].events[0].event, "timeout");
  snprintf(r[3].events[0].state, sizeof r[3].events[0].state, "timed_out");
  snprintf(r[3].events[0].link_id, sizeof r[3].events[0].link_id, "visa-1");
  r[3].events[0].saf_op = DB_SAF_RELEASE;
  snprintf(r[3].events[0].saf_mti, 5, "0420");
  CU_ASSERT_EQUAL(sub_submit(&s, &r[2]), 0);
  CU_ASSERT_EQUAL(sub_submit(&s, &r[3]), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL(s.durable, 4);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM switch.saf WHERE txn_id = %" PRId64
           " AND state = 'disarmed'",
           t1);
  CU_ASSERT_EQUAL(count_sql(sql), 1);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM switch.saf WHERE txn_id = %" PRId64
           " AND state = 'live' AND owner IS NULL",
           t2);
  CU_ASSERT_EQUAL(count_sql(sql), 1);
  /* A SAF change the database refuses fails its request, and its event
   * is not journaled either: one transaction. */
  db_journal_req_t bad;
  memset(&bad, 0, sizeof bad);
  bad.n = 1;
  make_event(&bad.events[0], "2026-11-30", atomic_fetch_add(&g_next_txn, 1), 1);
  bad.events[0].saf_op = DB_SAF_ARM;
  snprintf(bad.events[0].saf_mti, 5, "0800"); /* not a reversal MTI */
  CU_ASSERT_EQUAL(sub_submit(&s, &bad), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL(bad.status, DB_E_REJECTED);
  snprintf(sql, sizeof sql,
           "SELECT count(*) FROM switch.journal_event WHERE txn_id = %" PRId64,
           bad.events[0].txn_id);
  CU_ASSERT_EQUAL(count_sql(sql), 0);
  sub_close(&s);
  db_journal_close(j, 1000);
  char err[512];
  CU_ASSERT_EQUAL(verify_date("2026-11-30", err, sizeof err), 0);
}

/* The chain key rotates mid-day: the chain goes on under the new version
 * and verify checks each row under the version it names. */
static void test_chain_key_rotation(void) {
  db_journal_t *j = open_journal(0, 0);
  sub_t s;
  sub_open(&s, j);
  db_journal_req_t r[2];
  memset(r, 0, sizeof r);
  r[0].n = r[1].n = 1;
  make_event(&r[0].events[0], "2026-12-03", atomic_fetch_add(&g_next_txn, 1),
             0);
  make_event(&r[1].events[0], "2026-12-03", atomic_fetch_add(&g_next_txn, 1),
             0);
  CU_ASSERT_EQUAL(sub_submit(&s, &r[0]), 0);
  sub_drain(&s);
  sub_close(&s);
  db_journal_close(j, 1000);
  /* Rotate in the key store the writer reads, then write again. */
  hsm_key_info_t v2;
  CU_ASSERT_EQUAL_FATAL(hsm_key_rotate(g_hsm, CHAIN_KEY, 0, "test", &v2), 0);
  j = open_journal(0, 0);
  sub_open(&s, j);
  CU_ASSERT_EQUAL(sub_submit(&s, &r[1]), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL(r[1].status, 0);
  CU_ASSERT_EQUAL(r[1].events[0].chain_key_ver, v2.version);
  CU_ASSERT_EQUAL(r[0].events[0].chain_key_ver + 1, v2.version);
  sub_close(&s);
  db_journal_close(j, 1000);
  char err[512] = "";
  CU_ASSERT_EQUAL(verify_date("2026-12-03", err, sizeof err), 0);
  /* Days written before the rotation still verify. */
  CU_ASSERT_EQUAL(verify_date("2026-11-28", err, sizeof err), 0);
}

/* Encrypts pan under the PAN data key into ev (the journal's form). */
static int encrypt_pan(db_event_t *ev, const char *pan) {
  hsm_data_t a = {
      .key_label = "journal.pan", .in = (const uint8_t *)pan, .len = 16};
  hsm_req_t req;
  memset(&req, 0, sizeof req);
  g_mac_done = 0;
  static hsm_req_t done;
  (void)done;
  int rc = hsm_data_encrypt(g_hsm, &req, &a, mac_into);
  if (rc)
    return rc;
  while (!g_mac_done)
    uv_run(&g_hloop, UV_RUN_ONCE);
  if (req.status)
    return req.status;
  memcpy(ev->pan_enc, req.result.data.out, req.result.data.len);
  ev->pan_enc_len = (uint16_t)req.result.data.len;
  ev->pan_enc_key_ver = (int32_t)req.result.data.key_version;
  return 0;
}

static int run_retention(const char *args, char *out, size_t cap) {
  char all[300];
  snprintf(all, sizeof all, "retention %s", args);
  return switchctl(pgt_writer, all, out, cap);
}

static void close_date(const char *date) {
  char sql[600];
  snprintf(sql, sizeof sql,
           "INSERT INTO switch.business_dates (business_date, status, "
           "closed_at, clearing_file, clearing_sha256, record_count, "
           "report_sha256) VALUES ('%s', 'closed', now(), "
           "'clearing-%s.pb', repeat('a', 64), 2, repeat('b', 64))",
           date, date);
  PGconn *c = pgt_connect(pgt_writer);
  CU_ASSERT_EQUAL(pgt_exec(c, sql, NULL, NULL, 0), PGRES_COMMAND_OK);
  PQfinish(c);
}

/* Retention purge: the PAN data key's old version is destroyed only when
 * every PAN under it is past retention, settled, and owed to no issuer;
 * then those PANs are gone and newer ones are not. */
static void test_retention_purge_of_pan_key(void) {
  hsm_key_info_t v1, v2;
  CU_ASSERT_EQUAL_FATAL(hsm_key_generate(g_hsm, "journal.pan", HSM_USAGE_DEK,
                                         HSM_ALG_AES, 32, "test", &v1),
                        0);
  db_journal_t *j = open_journal(0, 0);
  sub_t s;
  sub_open(&s, j);
  int64_t ta = atomic_fetch_add(&g_next_txn, 1);
  int64_t tb = atomic_fetch_add(&g_next_txn, 1);
  int64_t tc = atomic_fetch_add(&g_next_txn, 1);
  db_journal_req_t r[3];
  memset(r, 0, sizeof r);
  r[0].n = r[1].n = 1;
  make_event(&r[0].events[0], "2026-10-01", ta, 0);
  make_event(&r[1].events[0], "2026-10-02", tb, 0);
  CU_ASSERT_EQUAL_FATAL(encrypt_pan(&r[0].events[0], "4761739001010010"), 0);
  CU_ASSERT_EQUAL_FATAL(encrypt_pan(&r[1].events[0], "4761739001010010"), 0);
  /* B owes its issuer a reversal. */
  r[1].n = 2;
  make_event(&r[1].events[1], "2026-10-02", tb, 1);
  snprintf(r[1].events[1].event, sizeof r[1].events[1].event, "timeout");
  snprintf(r[1].events[1].state, sizeof r[1].events[1].state, "timed_out");
  r[1].events[1].saf_op = DB_SAF_RELEASE;
  snprintf(r[1].events[1].saf_mti, 5, "0420");
  CU_ASSERT_EQUAL(sub_submit(&s, &r[0]), 0);
  CU_ASSERT_EQUAL(sub_submit(&s, &r[1]), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL_FATAL(hsm_key_rotate(g_hsm, "journal.pan", 0, "test", &v2),
                        0);
  r[2].n = 1;
  make_event(&r[2].events[0], "2026-11-15", tc, 0);
  CU_ASSERT_EQUAL_FATAL(encrypt_pan(&r[2].events[0], "5555555555554444"), 0);
  CU_ASSERT_EQUAL(r[2].events[0].pan_enc_key_ver, (int32_t)v2.version);
  CU_ASSERT_EQUAL(sub_submit(&s, &r[2]), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL(s.durable, 3);
  sub_close(&s);
  db_journal_close(j, 1000);

  char out[4096];
  /* Dates open: kept. */
  CU_ASSERT_EQUAL(
      run_retention("--keep-days 30 --today 2026-11-20", out, sizeof out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "before 2026-10-21"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "version 1: 2 row(s), 2026-10-01 to "
                                     "2026-10-02: keep: a reversal"));
  /* The issuer acknowledges B's reversal: the dates are still open. */
  char sql[400];
  snprintf(sql, sizeof sql,
           "SELECT switch.saf_apply(7, 'node-7', 30000, "
           "ARRAY['2026-10-02']::date[], ARRAY[%" PRId64 "]::bigint[], "
           "ARRAY['ack'], ARRAY['0420'], ARRAY[NULL]::text[])",
           tb);
  CU_ASSERT_EQUAL(count_sql(sql), 1);
  CU_ASSERT_EQUAL(
      run_retention("--keep-days 30 --today 2026-11-20", out, sizeof out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "keep: PANs of dates not yet settled"));
  close_date("2026-10-01");
  close_date("2026-10-02");
  /* Within a 60-day retention: kept. */
  CU_ASSERT_EQUAL(
      run_retention("--keep-days 60 --today 2026-11-20", out, sizeof out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "version 1: 2 row(s), 2026-10-01 to "
                                     "2026-10-02: keep: PANs of dates within"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "version 2: 1 row(s), 2026-11-15 to "
                                     "2026-11-15: keep: the current version"));
  /* 30 days: version 1 may go; without --apply nothing changes. */
  CU_ASSERT_EQUAL(
      run_retention("--keep-days 30 --today 2026-11-20", out, sizeof out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "version 1: 2 row(s), 2026-10-01 to "
                                     "2026-10-02: destroy"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "nothing changed"));
  CU_ASSERT_EQUAL(run_retention("--keep-days 30 --today 2026-11-20 --apply",
                                out, sizeof out),
                  0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "audit: destroyed \"journal.pan\" "
                                     "version 1"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "1 version(s) destroyed"));
  CU_ASSERT_EQUAL(run_retention("--keep-days 0", out, sizeof out), 2);
  /* A fresh adapter on the store: the old PANs are gone, the new one is
   * there, and the journal's chain still verifies. */
  uv_loop_t loop;
  uv_loop_init(&loop);
  hsm_t *h2 = NULL;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(hsm_open(&h2, &loop, &g_hsm_cfg, err, sizeof err), 0);
  for (int k = 0; k < 3; k += 2) {
    db_event_t *ev = &r[k].events[0];
    hsm_data_t d = {
        .key_label = "journal.pan", .in = ev->pan_enc, .len = ev->pan_enc_len};
    hsm_req_t req;
    memset(&req, 0, sizeof req);
    g_mac_done = 0;
    CU_ASSERT_EQUAL(hsm_data_decrypt(h2, &req, &d, mac_into), 0);
    while (!g_mac_done)
      uv_run(&loop, UV_RUN_ONCE);
    if (k == 0) {
      CU_ASSERT_EQUAL(req.status, HSM_E_KEY_NOT_FOUND);
    } else {
      CU_ASSERT_EQUAL(req.status, 0);
      CU_ASSERT_EQUAL(memcmp(req.result.data.out, "5555555555554444", 16), 0);
    }
  }
  hsm_close(h2);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  CU_ASSERT_EQUAL(verify_date("2026-10-01", err, sizeof err), 0);
}

/* Whole days: a settled day that owes nothing is dropped (partition and
 * chain heads), its settlement rows stay; an unsettled day and a day that
 * still owes a reversal are kept. */
static void test_journal_retention_drops_settled_days(void) {
  db_journal_t *j = open_journal(0, 0);
  sub_t s;
  sub_open(&s, j);
  db_journal_req_t r[2];
  memset(r, 0, sizeof r);
  int64_t t5 = atomic_fetch_add(&g_next_txn, 1);
  r[0].n = 2;
  make_event(&r[0].events[0], "2026-10-05", t5, 0);
  make_event(&r[0].events[1], "2026-10-05", t5, 1);
  snprintf(r[0].events[1].event, sizeof r[0].events[1].event, "timeout");
  snprintf(r[0].events[1].state, sizeof r[0].events[1].state, "timed_out");
  r[0].events[1].saf_op = DB_SAF_RELEASE; /* a reversal still owed */
  snprintf(r[0].events[1].saf_mti, 5, "0420");
  r[1].n = 1;
  make_event(&r[1].events[0], "2026-10-06", atomic_fetch_add(&g_next_txn, 1),
             0);
  CU_ASSERT_EQUAL(sub_submit(&s, &r[0]), 0);
  CU_ASSERT_EQUAL(sub_submit(&s, &r[1]), 0);
  sub_drain(&s);
  CU_ASSERT_EQUAL(s.durable, 2);
  sub_close(&s);
  db_journal_close(j, 1000);
  close_date("2026-10-05"); /* settled, but a reversal is owed */
  /* 2026-10-06 stays open; 2026-10-01 and -02 were settled above. */
  char out[4096];
  CU_ASSERT_EQUAL(run_retention("--journal-keep-days 30 --today 2026-11-20",
                                out, sizeof out),
                  0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "2026-10-01: drop"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "2026-10-02: drop"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "2026-10-05: keep: a reversal"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "2026-10-06: keep: not settled"));
  CU_ASSERT_PTR_NULL(strstr(out, "2026-11-")); /* inside the period */
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "2 day(s) to drop; nothing changed"));
  CU_ASSERT_EQUAL(count_sql("SELECT count(*) FROM switch.journal_event WHERE "
                            "business_date = '2026-10-01'"),
                  1);
  CU_ASSERT_EQUAL(
      run_retention("--journal-keep-days 30 --today 2026-11-20 --apply", out,
                    sizeof out),
      0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "dropped the journal of 2026-10-01"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "2 day(s) dropped"));
  CU_ASSERT_EQUAL(count_sql("SELECT count(*) FROM switch.journal_partitions "
                            "WHERE business_date IN ('2026-10-01', "
                            "'2026-10-02')"),
                  0);
  CU_ASSERT_EQUAL(count_sql("SELECT count(*) FROM switch.journal_partitions "
                            "WHERE business_date IN ('2026-10-05', "
                            "'2026-10-06')"),
                  2);
  CU_ASSERT_EQUAL(count_sql("SELECT count(*) FROM switch.journal_chain_head "
                            "WHERE business_date = '2026-10-01'"),
                  0);
  CU_ASSERT_EQUAL(count_sql("SELECT count(*) FROM switch.business_dates "
                            "WHERE business_date = '2026-10-01'"),
                  1);
  char err[512];
  CU_ASSERT_EQUAL(verify_date("2026-10-01", err, sizeof err), 0);
  CU_ASSERT_EQUAL(verify_date("2026-10-05", err, sizeof err), 0);
  /* The function refuses a day that may not go, whoever calls it. */
  PGconn *c = pgt_connect(pgt_writer);
  char state[6], msg[512];
  CU_ASSERT_EQUAL(pgt_exec(c,
                           "SELECT switch.drop_journal_partition('2026-10-06')",
                           state, msg, sizeof msg),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "SW030");
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "not settled"));
  PQfinish(c);
  CU_ASSERT_EQUAL(run_retention("", out, sizeof out), 2);
}

int main(void) {
  pgt_setup("journal", 1);
  atexit(pgt_teardown);
  make_keys();
  tu_init();
  static const tu_test_t t[] = {
      {"canonical_form_is_pinned", test_canonical_form_is_pinned},
      {"commit_histogram", test_commit_histogram},
      {"one_event_is_durable_with_its_chain",
       test_one_event_is_durable_with_its_chain},
      {"resubmission_is_idempotent", test_resubmission_is_idempotent},
      {"many_submitters", test_many_submitters},
      {"server_restart_mid_stream", test_server_restart_mid_stream},
      {"connection_cut_mid_batch", test_connection_cut_mid_batch},
      {"backpressure_and_deadlines", test_backpressure_and_deadlines},
      {"refused_rows_are_isolated", test_refused_rows_are_isolated},
      {"bad_submissions_refused", test_bad_submissions_refused},
      {"resubmission_into_a_closed_date", test_resubmission_into_a_closed_date},
      {"verify_finds_tampering", test_verify_finds_tampering},
      {"second_writer_same_node_conflicts",
       test_second_writer_same_node_conflicts},
      {"saf_changes_commit_with_their_events",
       test_saf_changes_commit_with_their_events},
      {"chain_key_rotation", test_chain_key_rotation},
      {"retention_purge_of_pan_key", test_retention_purge_of_pan_key},
      {"journal_retention_drops_settled_days",
       test_journal_retention_drops_settled_days},
      {NULL, NULL}};
  tu_add_suite("journal", t);
  int rc = tu_run();
  hsm_close(g_hsm);
  uv_run(&g_hloop, UV_RUN_DEFAULT);
  uv_loop_close(&g_hloop);
  return rc;
}
