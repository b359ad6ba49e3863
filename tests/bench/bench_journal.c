/*
 * bench_journal.c — durable journal events per second and commit latency
 * (docs/performance.md).
 *
 * Makes a throwaway local cluster with deploy/pg.sh (the same settings as
 * the embedded default: fsync on, synchronous_commit on) and refuses to
 * run if either is off.  Then, in the same run:
 *
 *  - plain: one INSERT per transaction (autocommit), one connection, no
 *    chain: the baseline every journal is compared against;
 *  - writer/B: the journal writer (db/journal.h) with max_batch B = 1, 10,
 *    100 and 1000, fed by one loop that keeps 2*B requests (of one event
 *    each) in flight: group commit with the HMAC chain (soft HSM).  Every
 *    event is a full 'received' event (PAN hash and ciphertext, RRN: every
 *    index and CHECK works), the worst case;
 *  - mix/B: the events of a sale as the switch writes them: a request with
 *    'received' + 'armed', then 'forwarded', then 'response' (4 events, 3
 *    requests, one of them indexed by RRN and PAN hash).
 *
 * Each configuration runs RUNS times; printed: median events/s (min, max)
 * and the median over runs of the p50 and p99 of the commit latency: the
 * time from submission to the durable callback (the writer), or of the
 * INSERT+COMMIT round trip (plain).
 *
 *   bench_journal [runs]
 */
#include "hsm.h"
#include "journal.h"
#include "pgtest.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <uv.h>

static int RUNS = 5;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, int p) {
  qsort(v, n, sizeof *v, cmp_u64);
  size_t i = (n * (size_t)p + 99) / 100;
  return v[i ? i - 1 : 0];
}

typedef struct {
  double rate[16];
  uint64_t p50[16], p99[16]; /* submit to durable, ns */
  uint64_t c50[16], c99[16]; /* commit round trip per batch, us */
  int n;
} result_t;

static void print_result(const char *name, result_t *r) {
  qsort(r->rate, (size_t)r->n, sizeof r->rate[0], cmp_dbl);
  qsort(r->p50, (size_t)r->n, sizeof r->p50[0], cmp_u64);
  qsort(r->p99, (size_t)r->n, sizeof r->p99[0], cmp_u64);
  qsort(r->c50, (size_t)r->n, sizeof r->c50[0], cmp_u64);
  qsort(r->c99, (size_t)r->n, sizeof r->c99[0], cmp_u64);
  int m = r->n / 2;
  printf("%-14s %10.0f %9.0f %9.0f %8.2f %8.2f %9.2f %9.2f\n", name, r->rate[m],
         r->rate[0], r->rate[r->n - 1], (double)r->p50[m] / 1e6,
         (double)r->p99[m] / 1e6, (double)r->c50[m] / 1e3,
         (double)r->c99[m] / 1e3);
  fflush(stdout);
}

/* An event as wide as a real received event. */
static void make_event(db_event_t *ev, const char *date, int64_t txn) {
  db_event_init(ev);
  snprintf(ev->business_date, sizeof ev->business_date, "%s", date);
  ev->txn_id = txn;
  snprintf(ev->event, sizeof ev->event, "received");
  snprintf(ev->state, sizeof ev->state, "received");
  snprintf(ev->txn_kind, sizeof ev->txn_kind, "purchase");
  snprintf(ev->mti, sizeof ev->mti, "0200");
  snprintf(ev->processing_code, sizeof ev->processing_code, "000000");
  ev->amount_minor = 1000 + txn % 90000;
  ev->sign = 'D';
  snprintf(ev->currency, sizeof ev->currency, "978");
  snprintf(ev->terminal_stan, sizeof ev->terminal_stan, "%06u",
           (unsigned)(txn % 1000000) % 1000000u);
  snprintf(ev->stan, sizeof ev->stan, "%s", ev->terminal_stan);
  snprintf(ev->rrn, sizeof ev->rrn, "6327%08u",
           (unsigned)(txn % 100000000) % 100000000u);
  snprintf(ev->terminal_id, sizeof ev->terminal_id, "TERM%04u",
           (unsigned)(txn % 1000) % 10000u);
  snprintf(ev->merchant_id, sizeof ev->merchant_id, "MERCHANT%07u",
           (unsigned)(txn % 100) % 10000000u);
  ev->batch_no = 1;
  snprintf(ev->issuer_id, sizeof ev->issuer_id, "visa");
  snprintf(ev->pan_masked, sizeof ev->pan_masked, "411111******1111");
  memset(ev->pan_hash, 0xA5, sizeof ev->pan_hash);
  ev->pan_hash_key_ver = 1;
  memset(ev->pan_enc, 0x5A, 48);
  ev->pan_enc_len = 48;
  ev->pan_enc_key_ver = 1;
  ev->terminal_local_us = 1795435200000000LL;
}

/* ------------------------------------------------------------------------ */
/* Plain: one INSERT per transaction                                         */

static int64_t g_txn = 1;

static void run_plain(PGconn *c, int n, result_t *res) {
  uint64_t *lat = malloc((size_t)n * sizeof *lat);
  char sql[1024];
  uint64_t t0 = now_ns();
  for (int i = 0; i < n; i++) {
    int64_t txn = g_txn++;
    snprintf(sql, sizeof sql,
             "INSERT INTO switch.journal_event (business_date, node_id, "
             "txn_id, event_no, event, state, txn_kind, mti, "
             "processing_code, amount_minor, sign, currency, stan, "
             "terminal_stan, rrn, terminal_id, merchant_id, batch_no, "
             "issuer_id, pan_masked, pan_hash, pan_hash_key_ver, pan_enc, "
             "pan_enc_key_ver, chain_seq, chain_hmac, chain_key_ver) VALUES "
             "('2026-12-01', 1, %" PRId64 ", 0, 'received', 'received', "
             "'purchase', '0200', '000000', %" PRId64 ", 'D', '978', "
             "'000001', '000001', '6327%08d', 'TERM0001', "
             "'MERCHANT0000001', 1, 'visa', '411111******1111', "
             "sha256('x'), 1, decode(repeat('5a', 48), 'hex'), 1, "
             "%" PRId64 ", sha256('y'), 1) ON CONFLICT DO NOTHING",
             txn, 1000 + txn % 90000, (int)(txn % 100000000), txn);
    uint64_t a = now_ns();
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      fprintf(stderr, "plain insert: %s", PQresultErrorMessage(r));
      exit(1);
    }
    PQclear(r);
    lat[i] = now_ns() - a;
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  res->rate[res->n] = n / secs;
  res->p50[res->n] = pct(lat, (size_t)n, 50);
  res->p99[res->n] = pct(lat, (size_t)n, 99);
  res->c50[res->n] = res->p50[res->n] / 1000; /* each INSERT is a commit */
  res->c99[res->n] = res->p99[res->n] / 1000;
  res->n++;
  free(lat);
}

/* ------------------------------------------------------------------------ */
/* The writer                                                                */

typedef struct {
  int mix;
  uv_loop_t loop;
  db_journal_port_t *port;
  db_journal_req_t *reqs;
  uint64_t *submitted_at, *lat;
  int total, next, done, inflight, window;
  long events;
  const char *date;
} feed_t;

static void feed_more(feed_t *f);

static void on_durable(db_journal_req_t *r) {
  feed_t *f = r->data;
  size_t i = (size_t)(r - f->reqs);
  if (r->status) {
    fprintf(stderr, "journal: %s\n", r->error);
    exit(1);
  }
  f->lat[f->done] = now_ns() - f->submitted_at[i];
  f->done++;
  f->events += r->n;
  f->inflight--;
  feed_more(f);
}

static void feed_more(feed_t *f) {
  while (f->inflight < f->window && f->next < f->total) {
    db_journal_req_t *r = &f->reqs[f->next];
    memset(r, 0, offsetof(db_journal_req_t, events));
    r->n = 1;
    r->data = f;
    if (!f->mix) {
      make_event(&r->events[0], f->date, g_txn++);
    } else {
      /* step 0: received + armed; 1: forwarded; 2: response */
      int step = f->next % 3;
      int64_t txn = g_txn + f->next / 3;
      if (step == 0) {
        make_event(&r->events[0], f->date, txn);
        r->n = 2;
      }
      static const char *const ev[] = {"armed", "forwarded", "response"};
      static const char *const st[] = {"armed", "forwarded", "approved"};
      db_event_t *e = &r->events[r->n - 1];
      db_event_init(e);
      snprintf(e->business_date, sizeof e->business_date, "%s", f->date);
      e->txn_id = txn;
      e->event_no = step + 1;
      snprintf(e->event, sizeof e->event, "%s", ev[step]);
      snprintf(e->state, sizeof e->state, "%s", st[step]);
      snprintf(e->mti, sizeof e->mti, "%s", step == 2 ? "0210" : "0200");
      if (step == 2) {
        e->amount_minor = 1000;
        e->sign = 'D';
        snprintf(e->currency, sizeof e->currency, "978");
        snprintf(e->response_code, sizeof e->response_code, "00");
        snprintf(e->auth_code, sizeof e->auth_code, "A1B2C3");
      }
      if (step >= 1) {
        snprintf(e->stan, sizeof e->stan, "%06u",
                 (unsigned)(txn % 1000000) % 1000000u);
        snprintf(e->link_id, sizeof e->link_id, "visa-1");
      }
    }
    f->submitted_at[f->next] = now_ns();
    int rc = db_journal_submit(f->port, r, on_durable);
    if (rc == DB_E_FULL)
      return; /* on_durable will call again */
    if (rc) {
      fprintf(stderr, "submit: %s\n", db_strerror(rc));
      exit(1);
    }
    f->next++;
    f->inflight++;
  }
}

static void run_writer(const hsm_config_t *hc, size_t batch, int n, int mix,
                       result_t *res) {
  db_journal_config_t cfg = {.conninfo = pgt_writer,
                             .node_id = 2,
                             .queue_capacity = 65536,
                             .max_batch = batch,
                             .hsm_config = hc,
                             .chain_key_label = "journal.chain"};
  db_journal_t *j;
  char err[512];
  if (db_journal_open(&j, &cfg, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
  feed_t f;
  memset(&f, 0, sizeof f);
  uv_loop_init(&f.loop);
  db_journal_port_open(j, &f.loop, NULL, NULL, &f.port);
  f.reqs = malloc((size_t)n * sizeof *f.reqs);
  f.submitted_at = malloc((size_t)n * sizeof *f.submitted_at);
  f.lat = malloc((size_t)n * sizeof *f.lat);
  f.total = n;
  f.mix = mix;
  f.window = batch < 32 ? 64 : (int)(2 * batch);
  f.date = "2026-12-02";
  uint64_t t0 = now_ns();
  feed_more(&f);
  while (f.done < f.total)
    uv_run(&f.loop, UV_RUN_ONCE);
  double secs = (double)(now_ns() - t0) / 1e9;
  if (mix)
    g_txn += n / 3 + 1;
  res->rate[res->n] = (double)f.events / secs;
  res->p50[res->n] = pct(f.lat, (size_t)n, 50);
  res->p99[res->n] = pct(f.lat, (size_t)n, 99);
  db_journal_stats_t st;
  db_journal_stats(j, &st);
  res->c50[res->n] = db_journal_commit_percentile_us(&st, 50);
  res->c99[res->n] = db_journal_commit_percentile_us(&st, 99);
  res->n++;
  if (getenv("SW_BENCH_VERBOSE"))
    printf("  batch %zu: %" PRIu64 " batches, %.1f events each; prepare "
           "%.1f us/event, round trip %.1f us/event\n",
           batch, st.batches, (double)st.durable / (double)st.batches,
           (double)st.prepare_us_sum / (double)st.durable,
           (double)st.commit_us_sum / (double)st.durable);
  db_journal_close(j, 1000);
  db_journal_port_close(f.port);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  uv_loop_close(&f.loop);
  free(f.reqs);
  free(f.submitted_at);
  free(f.lat);
}

static int setting_on(PGconn *c, const char *name) {
  char sql[100], v[32];
  snprintf(sql, sizeof sql, "SHOW %s", name);
  pgt_str(c, sql, v, sizeof v);
  printf("  %s = %s\n", name, v);
  return strcmp(v, "on") == 0;
}

int main(int argc, char **argv) {
  if (argc > 1)
    RUNS = atoi(argv[1]) > 0 && atoi(argv[1]) <= 15 ? atoi(argv[1]) : 5;
  pgt_setup("bench-journal", 1);
  atexit(pgt_teardown);
  PGconn *c = pgt_connect(pgt_writer);
  if (PQstatus(c) != CONNECTION_OK)
    return 1;
  printf("journal bench: local PostgreSQL cluster (deploy/pg.sh), one "
         "connection\n");
  if (!setting_on(c, "fsync") || !setting_on(c, "synchronous_commit")) {
    fprintf(stderr, "refusing to run: fsync and synchronous_commit must be "
                    "on for a durable-commit figure\n");
    return 1;
  }
  pgt_exec(c,
           "SELECT switch.ensure_journal_partition('2026-12-01'), "
           "switch.ensure_journal_partition('2026-12-02')",
           NULL, NULL, 0);

  char ks[400], mk[400];
  snprintf(ks, sizeof ks, "%s/keys.store", pgt_tmp);
  snprintf(mk, sizeof mk, "%s/master.key", pgt_tmp);
  FILE *fk = fopen(mk, "w");
  if (!fk)
    return 1;
  fputs("606162636465666768696A6B6C6D6E6F707172737475767778797A7B7C7D7E7F\n",
        fk);
  fclose(fk);
  chmod(mk, 0600);
  hsm_config_t hc = {.backend = "soft",
                     .keystore_path = ks,
                     .master_key_path = mk,
                     .create = 1};
  uv_loop_t kl;
  uv_loop_init(&kl);
  hsm_t *h;
  char err[256];
  hsm_key_info_t info;
  if (hsm_open(&h, &kl, &hc, err, sizeof err) ||
      hsm_key_generate(h, "journal.chain", HSM_USAGE_HMAC, HSM_ALG_HMAC, 32,
                       "bench", &info)) {
    fprintf(stderr, "hsm: %s\n", err);
    return 1;
  }
  hsm_close(h);
  uv_run(&kl, UV_RUN_DEFAULT);
  uv_loop_close(&kl);

  printf("median of %d runs; wait = submit to durable, commit = one "
         "batch's round trip (ms)\n",
         RUNS);
  printf("%-14s %10s %9s %9s %8s %8s %9s %9s\n", "mode", "events/s", "min",
         "max", "wait p50", "p99", "commit p50", "p99");
  result_t r;
  memset(&r, 0, sizeof r);
  for (int i = 0; i < RUNS; i++)
    run_plain(c, 3000, &r);
  print_result("plain insert", &r);
  static const struct {
    size_t batch;
    int n;
  } cfgs[] = {{1, 3000}, {10, 20000}, {100, 100000}, {1000, 200000}};
  for (int mix = 0; mix < 2; mix++)
    for (size_t k = 0; k < sizeof cfgs / sizeof cfgs[0]; k++) {
      memset(&r, 0, sizeof r);
      for (int i = 0; i < RUNS; i++)
        run_writer(&hc, cfgs[k].batch, cfgs[k].n, mix, &r);
      char name[32];
      snprintf(name, sizeof name, "%s/%zu", mix ? "mix" : "writer",
               cfgs[k].batch);
      print_result(name, &r);
    }
  PQfinish(c);
  return 0;
}
