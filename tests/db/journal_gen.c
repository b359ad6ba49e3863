/*
 * journal_gen.c — writes a business day of transactions through the real
 * journal writer (db/journal.h), chained under the soft HSM key store
 * given, for tests that need a journal `switchctl verify` accepts (the
 * backup test) and for trying settlement by hand.
 *
 *   journal_gen CONNINFO KEYSTORE MASTER_KEY DATE FIRST_TXN COUNT [NODE]
 *
 * Transaction t (FIRST_TXN <= t < FIRST_TXN + COUNT) is received and then
 * answered: a purchase, or every fifth a refund (credit); every seventh is
 * declined.  Merchant M00000000000001 or ...2 (terminal T0000001 / 2),
 * issuer "visa", currency EUR, USD or JPY by t % 3, amount from t.  The
 * chain key is "journal.chain".  Exits 0 when every event is durable.
 */
#include "hsm.h"
#include "journal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct {
  int outstanding, failed;
} gen_t;

static void on_done(db_journal_req_t *r) {
  gen_t *g = r->data;
  g->outstanding--;
  if (r->status) {
    g->failed++;
    fprintf(stderr, "journal_gen: txn %" PRId64 ": %s\n", r->events[0].txn_id,
            r->error);
  }
}

static void fill(db_event_t *ev, const char *date, int64_t t, int no) {
  static const char *const cur[] = {"978", "840", "392"};
  int refund = t % 5 == 0, declined = t % 7 == 0;
  db_event_init(ev);
  snprintf(ev->business_date, sizeof ev->business_date, "%s", date);
  ev->txn_id = t;
  ev->event_no = no;
  snprintf(ev->event, sizeof ev->event, "%s", no ? "response" : "received");
  snprintf(ev->state, sizeof ev->state, "%s",
           !no        ? "received"
           : declined ? "declined"
                      : "approved");
  if (!no)
    snprintf(ev->txn_kind, sizeof ev->txn_kind, "%s",
             refund ? "refund" : "purchase");
  snprintf(ev->mti, sizeof ev->mti, "%s", no ? "0210" : "0200");
  snprintf(ev->processing_code, sizeof ev->processing_code, "%s",
           refund ? "200000" : "000000");
  ev->amount_minor = (t * 7919) % 100000 + 1;
  ev->sign = refund ? 'C' : 'D';
  snprintf(ev->currency, sizeof ev->currency, "%s", cur[t % 3]);
  if (no)
    snprintf(ev->response_code, sizeof ev->response_code, "%s",
             declined ? "05" : "00");
  snprintf(ev->terminal_stan, sizeof ev->terminal_stan, "%06u",
           (unsigned)(t % 1000000) % 1000000u);
  snprintf(ev->rrn, sizeof ev->rrn, "4%03u%08u", (unsigned)(t % 1000) % 1000u,
           (unsigned)(t % 100000000) % 100000000u);
  snprintf(ev->terminal_id, sizeof ev->terminal_id, "T000000%d",
           (int)(t % 2) + 1);
  snprintf(ev->merchant_id, sizeof ev->merchant_id, "M0000000000000%d",
           (int)(t % 2) + 1);
  ev->batch_no = 1;
  snprintf(ev->issuer_id, sizeof ev->issuer_id, "visa");
  snprintf(ev->pan_masked, sizeof ev->pan_masked, "476173******0010");
}

int main(int argc, char **argv) {
  if (argc < 7 || argc > 8) {
    fprintf(stderr, "usage: journal_gen CONNINFO KEYSTORE MASTER_KEY DATE "
                    "FIRST_TXN COUNT [NODE]\n");
    return 2;
  }
  int64_t first = strtoll(argv[5], NULL, 10);
  long count = strtol(argv[6], NULL, 10);
  long node = argc == 8 ? strtol(argv[7], NULL, 10) : 1;
  if (first <= 0 || count <= 0 || count > 1000000 || node < 0 || node > 65535) {
    fprintf(stderr, "journal_gen: bad FIRST_TXN, COUNT or NODE\n");
    return 2;
  }
  hsm_config_t hc = {
      .backend = "soft", .keystore_path = argv[2], .master_key_path = argv[3]};
  db_journal_config_t cfg = {.conninfo = argv[1],
                             .node_id = (uint16_t)node,
                             .hsm_config = &hc,
                             .chain_key_label = "journal.chain"};
  db_journal_t *j;
  char err[512];
  if (db_journal_open(&j, &cfg, err, sizeof err)) {
    fprintf(stderr, "journal_gen: %s\n", err);
    return 1;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  db_journal_port_t *port;
  db_journal_port_open(j, &loop, NULL, NULL, &port);
  db_journal_req_t *reqs = calloc((size_t)count, sizeof *reqs);
  gen_t g = {0, 0};
  for (long i = 0; reqs && i < count; i++) {
    db_journal_req_t *r = &reqs[i];
    r->n = 2;
    r->data = &g;
    fill(&r->events[0], argv[4], first + i, 0);
    fill(&r->events[1], argv[4], first + i, 1);
    int rc;
    while ((rc = db_journal_submit(port, r, on_done)) == DB_E_FULL)
      uv_run(&loop, UV_RUN_ONCE);
    if (rc) {
      fprintf(stderr, "journal_gen: submit: %s\n", db_strerror(rc));
      g.failed++;
      break;
    }
    g.outstanding++;
  }
  while (g.outstanding > 0)
    uv_run(&loop, UV_RUN_ONCE);
  db_journal_close(j, 2000);
  db_journal_port_close(port);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  free(reqs);
  if (!reqs || g.failed) {
    fprintf(stderr, "journal_gen: %d request(s) failed\n", g.failed);
    return 1;
  }
  printf("journal_gen: %ld transactions on %s durable\n", count, argv[4]);
  return 0;
}
