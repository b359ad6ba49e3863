/*
 * test_lookup.c — the transaction lookup and the terminal batch totals
 * (db/lookup.h) and switchctl txn / recon, on a throwaway PostgreSQL 15
 * cluster (pgtest.h).
 *
 * Journal rows are inserted directly with SQL as switch_writer from a
 * table of transactions (spec_t) that says what happened to each; every
 * expected value (amounts, batch totals) is computed here from that table,
 * never from the journal or the code under test.  The PAN hash of the
 * received rows is HMAC-SHA-256 computed with OpenSSL over a key this file
 * knows: the key is imported into a soft key store with hsm-keytool from
 * two clear components whose XOR it is, so switchctl txn --pan-stdin (which
 * hashes through the HSM adapter) must arrive at the same bytes on its own.
 */
#define _GNU_SOURCE /* strcasestr */
#include "lookup.h"
#include "pgtest.h"
#include "testutil.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#ifndef SW_SWITCHCTL
#error "SW_SWITCHCTL must name the switchctl binary"
#endif
#ifndef SW_KEYTOOL
#error "SW_KEYTOOL must name the hsm-keytool binary"
#endif

/* The PAN hash key: the XOR of these two components (32 bytes each). */
static const char *const COMP1 =
    "00112233445566778899AABBCCDDEEFF0123456789ABCDEFFEDCBA9876543210";
static const char *const COMP2 =
    "A5A5A5A55A5A5A5A0F0F0F0FF0F0F0F01234567812345678DEADBEEFCAFEF00D";
static uint8_t g_pan_key[32];

/* Business dates relative to today (UTC). */
static char D_TODAY[11], D_YDAY[11], D_3AGO[11], D_20AGO[11];

static PGconn *g_w; /* switch_writer */

/* ------------------------------------------------------------------------ */
/* Transactions as the test describes them                                   */

enum outcome {
  O_APPROVED,      /* response approved at `approved` */
  O_DECLINED,      /* response declined */
  O_TIMEOUT,       /* timeout, then the reversal acknowledged */
  O_LATE_APPROVAL, /* timeout, late approval, reversal acknowledged */
  O_STAND_IN,      /* approved by stand-in at `approved` */
  O_REJECTED       /* refused before forwarding */
};

typedef struct {
  const char *date;
  long long txn;
  const char *kind; /* purchase cash refund completion preauth inquiry */
  long long amount; /* requested; -1: none (inquiry) */
  const char *cur;
  const char *rrn;
  const char *tid;
  int batch;
  const char *tstan;
  const char *pan;
  enum outcome outcome;
  long long approved;   /* approved amount (partial approval: less) */
  long long reversed;   /* amount reversed; 0: no reversal */
  const char *rev_date; /* NULL: the reversal in date; else an adjustment */
} spec_t;

#define NODE 3
#define TXN(k) ((1LL << 48) * NODE + (k))

static const char *const PAN_A = "5413330089012345"; /* hidden: 008901 */
static const char *const PAN_B = "4000123498761111";

/* Batch 17 of terminal TRM00001: EUR (978), every kind of outcome. */
static spec_t batch17[] = {
    {D_YDAY, TXN(1), "purchase", 1250, "978", "632701000001", "TRM00001", 17,
     "000101", PAN_A, O_APPROVED, 1250, 0, NULL},
    {D_YDAY, TXN(2), "purchase", 5000, "978", "632701000002", "TRM00001", 17,
     "000102", PAN_B, O_APPROVED, 3000, 0, NULL}, /* partial approval */
    {D_YDAY, TXN(3), "cash", 10000, "978", "632701000003", "TRM00001", 17,
     "000103", PAN_B, O_APPROVED, 10000, 10000, NULL}, /* fully reversed */
    {D_YDAY, TXN(4), "purchase", 8000, "978", "632701000004", "TRM00001", 17,
     "000104", PAN_A, O_APPROVED, 8000, 2500, NULL}, /* partial reversal */
    {D_YDAY, TXN(5), "refund", 700, "978", "632701000005", "TRM00001", 17,
     "000105", PAN_B, O_APPROVED, 700, 0, NULL},
    {D_YDAY, TXN(6), "refund", 300, "978", "632701000006", "TRM00001", 17,
     "000106", PAN_B, O_APPROVED, 300, 300, NULL}, /* refund reversed */
    {D_YDAY, TXN(7), "purchase", 999, "978", "632701000007", "TRM00001", 17,
     "000107", PAN_B, O_DECLINED, 0, 0, NULL},
    {D_YDAY, TXN(8), "purchase", 4321, "978", "632701000008", "TRM00001", 17,
     "000108", PAN_B, O_TIMEOUT, 0, 0, NULL},
    {D_YDAY, TXN(9), "purchase", 1111, "978", "632701000009", "TRM00001", 17,
     "000109", PAN_B, O_LATE_APPROVAL, 1111, 0, NULL},
    {D_YDAY, TXN(10), "preauth", 20000, "978", "632701000010", "TRM00001", 17,
     "000110", PAN_B, O_APPROVED, 20000, 0, NULL},
    {D_YDAY, TXN(11), "inquiry", -1, "978", "632701000011", "TRM00001", 17,
     "000111", PAN_B, O_APPROVED, -1, 0, NULL},
    {D_YDAY, TXN(12), "completion", 15000, "978", "632701000012", "TRM00001",
     17, "000112", PAN_B, O_APPROVED, 15000, 0, NULL},
    {D_YDAY, TXN(13), "purchase", 2200, "978", "632701000013", "TRM00001", 17,
     "000113", PAN_B, O_STAND_IN, 2200, 0, NULL},
    {D_YDAY, TXN(14), "purchase", 450, "978", "632701000014", "TRM00001", 17,
     "000114", PAN_B, O_REJECTED, 0, 0, NULL},
    /* A late reversal written into today as an adjustment. */
    {D_YDAY, TXN(15), "purchase", 6000, "978", "632701000015", "TRM00001", 17,
     "000115", PAN_B, O_APPROVED, 6000, 6000, D_TODAY},
    /* Same terminal, next batch; and another terminal's batch 17. */
    {D_TODAY, TXN(16), "purchase", 777, "978", "632801000016", "TRM00001", 18,
     "000116", PAN_B, O_APPROVED, 777, 0, NULL},
    {D_YDAY, TXN(17), "purchase", 888, "978", "632701000017", "TRM00002", 17,
     "000117", PAN_B, O_APPROVED, 888, 0, NULL},
};

/* Batch 5 of terminal TRM00003: EUR and JPY (exponent 0). */
static spec_t batch5[] = {
    {D_TODAY, TXN(30), "purchase", 1000, "978", "632801000030", "TRM00003", 5,
     "000301", PAN_B, O_APPROVED, 1000, 0, NULL},
    {D_TODAY, TXN(31), "purchase", 1500, "392", "632801000031", "TRM00003", 5,
     "000302", PAN_B, O_APPROVED, 1500, 0, NULL},
    {D_TODAY, TXN(32), "refund", 200, "392", "632801000032", "TRM00003", 5,
     "000303", PAN_B, O_APPROVED, 200, 0, NULL},
};

/* Lookup cases: the same RRN on two dates, an old transaction, a PAN. */
static spec_t others[] = {
    {D_3AGO, TXN(40), "purchase", 4200, "840", "LOOKUP000001", "TRM00009", 1,
     "004001", PAN_A, O_APPROVED, 4200, 0, NULL},
    {D_TODAY, TXN(41), "purchase", 100, "840", "LOOKUP000001", "TRM00009", 2,
     "004002", PAN_B, O_APPROVED, 100, 0, NULL},
    {D_20AGO, TXN(42), "cash", 5000, "414", "LOOKUP000042", "TRM00009", 1,
     "004242", PAN_A, O_APPROVED, 5000, 0, NULL},
};

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* Set-up steps run outside any CUnit test: a failure ends the program. */
#define REQUIRE(cond)                                                          \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: set-up failed: %s\n", __FILE__, __LINE__,        \
              #cond);                                                          \
      exit(2);                                                                 \
    }                                                                          \
  } while (0)

/* ------------------------------------------------------------------------ */
/* Writing journal rows                                                      */

/* chain_seq per (date, node): the next number to use. */
static struct {
  char date[11];
  long long next;
} chains[16];

static long long next_seq(const char *date) {
  size_t i = 0;
  for (; i < N(chains) && chains[i].date[0]; i++)
    if (strcmp(chains[i].date, date) == 0)
      return chains[i].next++;
  REQUIRE(i < N(chains));
  snprintf(chains[i].date, sizeof chains[i].date, "%s", date);
  chains[i].next = 2;
  return 1;
}

static void pan_hash(const char *pan, uint8_t out[32]) {
  unsigned len = 0;
  HMAC(EVP_sha256(), g_pan_key, 32, (const uint8_t *)pan, strlen(pan), out,
       &len);
  REQUIRE((len) == (32));
}

static void pan_mask(const char *pan, char *out) {
  size_t n = strlen(pan);
  for (size_t i = 0; i < n; i++)
    out[i] = i < 6 || i >= n - 4 ? pan[i] : '*';
  out[n] = '\0';
}

/* One event; NULL strings are NULL columns. */
typedef struct {
  const char *date, *orig_date;
  long long txn;
  int no;
  const char *event, *state;
  long long amount; /* -1: none */
  const spec_t *s;
  const char *rc, *auth;
  int received;
} ev_t;

static void put_event(const ev_t *e) {
  const spec_t *s = e->s;
  char node[8], txn[24], no[8], amount[24], batch[8], seq[24];
  char hash_hex[80] = "", masked[24] = "";
  snprintf(node, sizeof node, "%d", NODE);
  snprintf(txn, sizeof txn, "%lld", e->txn);
  snprintf(no, sizeof no, "%d", e->no);
  snprintf(amount, sizeof amount, "%lld", e->amount);
  snprintf(batch, sizeof batch, "%d", s->batch);
  snprintf(seq, sizeof seq, "%lld", next_seq(e->date));
  int has_amount = e->amount >= 0;
  const char *sign = strcmp(s->kind, "refund") == 0 ? "C" : "D";
  const char *pcode = strcmp(s->kind, "refund") == 0    ? "200000"
                      : strcmp(s->kind, "cash") == 0    ? "010000"
                      : strcmp(s->kind, "inquiry") == 0 ? "310000"
                                                        : "000000";
  const char *mti = strcmp(s->kind, "preauth") == 0      ? "0100"
                    : strcmp(s->kind, "completion") == 0 ? "0220"
                                                         : "0200";
  if (e->received) {
    uint8_t h[32];
    pan_hash(s->pan, h);
    strcpy(hash_hex, "\\x");
    tu_hex(h, 32, hash_hex + 2);
    pan_mask(s->pan, masked);
  }
  const char *p[] = {
      e->date, node, txn, no, e->event, e->state, mti,
      e->received ? pcode : NULL, has_amount ? amount : NULL,
      has_amount ? sign : NULL, has_amount ? s->cur : NULL,
      e->received ? "654321" : NULL, e->received ? s->tstan : NULL,
      e->received ? s->rrn : NULL, e->auth, e->rc, s->tid, "MERCHANT0000001",
      batch, e->received ? s->kind : NULL, e->orig_date,
      e->received ? masked : NULL, e->received ? hash_hex : NULL,
      e->received ? "1" : NULL,
      /* A stand-in for the encrypted PAN: never shown either. */
      e->received ? "\\xfeedfacefeedfacefeedfacefeedfacefeedface" : NULL,
      e->received ? "1" : NULL, seq};
  const char *sql =
      "INSERT INTO switch.journal_event (business_date, node_id, txn_id, "
      "event_no, event, state, mti, processing_code, amount_minor, sign, "
      "currency, stan, terminal_stan, rrn, auth_code, response_code, "
      "terminal_id, merchant_id, batch_no, txn_kind, orig_business_date, "
      "pan_masked, pan_hash, pan_hash_key_ver, pan_enc, pan_enc_key_ver, "
      "chain_seq, chain_hmac, chain_key_ver) VALUES ($1::date, $2::int, "
      "$3::bigint, $4::int, $5, $6, $7, $8, $9::bigint, $10, $11, $12, $13, "
      "$14, $15, $16, $17, $18, $19::int, $20, $21::date, $22, $23::bytea, "
      "$24::int, $25::bytea, $26::int, $27::bigint, "
      "sha256(convert_to(concat($1::text, '/', $3::text, '/', $4::text), "
      "'UTF8')), 1)";
  PGresult *r = PQexecParams(g_w, sql, 27, NULL, p, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_COMMAND_OK)
    fprintf(stderr, "insert %s #%d: %s", e->event, e->no,
            PQresultErrorMessage(r));
  REQUIRE((PQresultStatus(r)) == (PGRES_COMMAND_OK));
  PQclear(r);
}

/* Writes every event of s. */
static void put_txn(const spec_t *s) {
  ev_t e = {s->date,   NULL, s->txn, 0,    "received", "received",
            s->amount, s,    NULL,   NULL, 1};
  put_event(&e);
  e.received = 0;
  e.amount = -1;
#define NEXT(ev, st) (e.no++, e.event = (ev), e.state = (st), put_event(&e))
  if (s->outcome == O_REJECTED) {
    e.rc = "30";
    NEXT("rejected", "rejected");
    return;
  }
  if (s->outcome == O_STAND_IN) {
    e.rc = "00", e.auth = "SI0001", e.amount = s->approved;
    NEXT("stand_in", "stood_in");
  } else {
    NEXT("armed", "armed");
    NEXT("forwarded", "forwarded");
  }
  switch (s->outcome) {
  case O_APPROVED:
    e.rc = "00", e.auth = "A1B2C3", e.amount = s->approved;
    NEXT("response", "approved");
    break;
  case O_DECLINED:
    e.rc = "05";
    NEXT("response", "declined");
    return;
  case O_TIMEOUT:
  case O_LATE_APPROVAL:
    e.rc = "91";
    NEXT("timeout", "timed_out");
    if (s->outcome == O_LATE_APPROVAL) {
      e.rc = "00", e.auth = "LATE01", e.amount = s->approved;
      NEXT("late_response", "timed_out");
    }
    e.rc = NULL, e.auth = NULL, e.amount = -1;
    NEXT("reversal_acked", "reversed");
    return;
  default:
    break;
  }
  if (s->reversed > 0) {
    if (s->rev_date)
      e.orig_date = s->date, e.date = s->rev_date;
    e.rc = NULL, e.auth = NULL, e.amount = s->reversed;
    NEXT("reversal_requested", "reversal_pending");
    e.amount = -1;
    NEXT("reversal_acked", "reversed");
  }
#undef NEXT
}

/* ------------------------------------------------------------------------ */
/* Expected totals, from the specs                                           */

static int is_debit_kind(const char *k) {
  return !strcmp(k, "purchase") || !strcmp(k, "cash") ||
         !strcmp(k, "completion");
}

static int was_approved(const spec_t *s) {
  return s->outcome == O_APPROVED || s->outcome == O_STAND_IN;
}

static void expect_totals(const spec_t *v, size_t n, const char *tid, int batch,
                          const char *cur, db_recon_totals_t *t) {
  memset(t, 0, sizeof *t);
  snprintf(t->currency, sizeof t->currency, "%s", cur);
  for (size_t i = 0; i < n; i++) {
    const spec_t *s = &v[i];
    if (strcmp(s->tid, tid) || s->batch != batch || strcmp(s->cur, cur) ||
        !was_approved(s))
      continue;
    if (is_debit_kind(s->kind)) {
      t->debits_count++;
      t->debits_amount += s->approved;
      t->debits_reversal_count += s->reversed > 0;
      t->debits_reversal_amount += s->reversed;
    } else if (!strcmp(s->kind, "refund")) {
      t->credits_count++;
      t->credits_amount += s->approved;
      t->credits_reversal_count += s->reversed > 0;
      t->credits_reversal_amount += s->reversed;
    }
  }
  long long net = (t->debits_amount - t->debits_reversal_amount) -
                  (t->credits_amount - t->credits_reversal_amount);
  t->net_amount = net < 0 ? -net : net;
  t->net_sign = net > 0 ? 'D' : 'C';
}

static int same_totals(const db_recon_totals_t *a, const db_recon_totals_t *b) {
  return a->credits_count == b->credits_count &&
         a->credits_reversal_count == b->credits_reversal_count &&
         a->debits_count == b->debits_count &&
         a->debits_reversal_count == b->debits_reversal_count &&
         a->credits_amount == b->credits_amount &&
         a->credits_reversal_amount == b->credits_reversal_amount &&
         a->debits_amount == b->debits_amount &&
         a->debits_reversal_amount == b->debits_reversal_amount &&
         a->net_amount == b->net_amount && a->net_sign == b->net_sign;
}

static void totals_text(const db_recon_totals_t *t, char *buf, size_t cap) {
  snprintf(buf, cap,
           "currency=%s,de74=%lld,de75=%lld,de76=%lld,de77=%lld,de86=%lld,"
           "de87=%lld,de88=%lld,de89=%lld,de97=%c%lld",
           t->currency, (long long)t->credits_count,
           (long long)t->credits_reversal_count, (long long)t->debits_count,
           (long long)t->debits_reversal_count, (long long)t->credits_amount,
           (long long)t->credits_reversal_amount, (long long)t->debits_amount,
           (long long)t->debits_reversal_amount, t->net_sign,
           (long long)t->net_amount);
}

/* ------------------------------------------------------------------------ */
/* Running switchctl                                                         */

static char g_keystore[400], g_master[400], g_audit[400];

/* Runs a shell command line; its stdout+stderr in out; exit status. */
static int run(const char *cmd, char *out, size_t cap) {
  char full[4096];
  snprintf(full, sizeof full, "%s 2>&1", cmd);
  FILE *f = popen(full, "r");
  REQUIRE((f) != NULL);
  size_t n = fread(out, 1, cap - 1, f);
  out[n] = '\0';
  int st = pclose(f);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* switchctl --db CONN [global] ARGS [< stdin_file] */
static int ctl(const char *conn, const char *global, const char *args,
               const char *stdin_file, char *out, size_t cap) {
  char cmd[3072];
  snprintf(cmd, sizeof cmd,
           "'%s' --db '%s' --hsm-keystore '%s' --hsm-master-key '%s' %s %s "
           "< %s",
           SW_SWITCHCTL, conn, g_keystore, g_master, global ? global : "", args,
           stdin_file ? stdin_file : "/dev/null");
  int rc = run(cmd, out, cap);
  if (getenv("SW_TEST_VERBOSE")) /* shows what switchctl printed */
    fprintf(stderr, "\n$ switchctl %s %s -> %d\n%s", global ? global : "", args,
            rc, out);
  return rc;
}

static void make_keystore(void) {
  snprintf(g_keystore, sizeof g_keystore, "%s/hsm/keys.store", pgt_tmp);
  snprintf(g_master, sizeof g_master, "%s/hsm/master.key", pgt_tmp);
  snprintf(g_audit, sizeof g_audit, "%s/hsm/audit.log", pgt_tmp);
  char comps[400], cmd[2048], out[4096];
  snprintf(comps, sizeof comps, "%s/components", pgt_tmp);
  FILE *f = fopen(comps, "w");
  REQUIRE((f) != NULL);
  fprintf(f, "%s\n%s\n", COMP1, COMP2);
  fclose(f);
  static const char *const steps[] = {
      "init-master-key", "init",
      "import-components journal.pan_hash HMAC HMAC 32 --components 2"};
  for (size_t i = 0; i < N(steps); i++) {
    snprintf(cmd, sizeof cmd,
             "'%s' --keystore '%s' --master-key '%s' --audit-log '%s' "
             "--who test %s < '%s'",
             SW_KEYTOOL, g_keystore, g_master, g_audit, steps[i], comps);
    int rc = run(cmd, out, sizeof out);
    if (rc != 0)
      fprintf(stderr, "%s: %s\n", steps[i], out);
    REQUIRE((rc) == (0));
  }
  remove(comps);
  uint8_t c1[32], c2[32];
  REQUIRE(tu_unhex(COMP1, c1, 32) == 32 && tu_unhex(COMP2, c2, 32) == 32);
  for (int i = 0; i < 32; i++)
    g_pan_key[i] = c1[i] ^ c2[i];
}

/* Asserts no clear PAN and none of its hidden digits are in text. */
static void assert_no_clear_pan(const char *text) {
  const char *pans[] = {PAN_A, PAN_B};
  for (size_t i = 0; i < N(pans); i++) {
    char hidden[16];
    size_t n = strlen(pans[i]);
    snprintf(hidden, sizeof hidden, "%.*s", (int)(n - 10), pans[i] + 6);
    CU_ASSERT_PTR_NULL(strstr(text, pans[i]));
    CU_ASSERT_PTR_NULL(strstr(text, hidden));
    uint8_t h[32];
    char hex[65];
    pan_hash(pans[i], h);
    tu_hex(h, 32, hex);
    CU_ASSERT_PTR_NULL(strcasestr(text, hex));
    CU_ASSERT_PTR_NULL(strcasestr(text, "feedface"));
  }
}

/* ------------------------------------------------------------------------ */
/* Set-up                                                                    */

static void date_of(const char *expr, char *out) {
  char sql[200];
  snprintf(sql, sizeof sql,
           "SELECT ((now() AT TIME ZONE 'UTC')::date %s)::text", expr);
  pgt_str(g_w, sql, out, 11);
  REQUIRE((strlen(out)) == (10));
  snprintf(sql, sizeof sql, "SELECT switch.ensure_journal_partition('%s')",
           out);
  REQUIRE((pgt_exec(g_w, sql, NULL, NULL, 0)) == (PGRES_TUPLES_OK));
}

static void setup(void) {
  pgt_setup("lookup", 1);
  g_w = pgt_connect(pgt_writer);
  REQUIRE((PQstatus(g_w)) == (CONNECTION_OK));
  date_of("+ 0", D_TODAY);
  date_of("- 1", D_YDAY);
  date_of("- 3", D_3AGO);
  date_of("- 20", D_20AGO);
  make_keystore();
  for (size_t i = 0; i < N(batch17); i++)
    put_txn(&batch17[i]);
  for (size_t i = 0; i < N(batch5); i++)
    put_txn(&batch5[i]);
  for (size_t i = 0; i < N(others); i++)
    put_txn(&others[i]);
}

static PGconn *reader(void) {
  PGconn *c = pgt_connect(pgt_reader);
  CU_ASSERT_EQUAL_FATAL(PQstatus(c), CONNECTION_OK);
  return c;
}

/* ------------------------------------------------------------------------ */
/* Lookup                                                                    */

static void test_lookup_by_rrn_gives_summary_and_timeline(void) {
  PGconn *c = reader();
  db_lookup_result_t res;
  char err[256];
  const spec_t *s = &batch17[3]; /* purchase 80.00, 25.00 reversed */
  CU_ASSERT_EQUAL_FATAL(
      db_lookup_by_rrn(c, s->rrn, NULL, &res, err, sizeof err), 0);
  CU_ASSERT_EQUAL_FATAL(res.n, 1);
  const db_lookup_txn_t *t = &res.txns[0];
  CU_ASSERT_STRING_EQUAL(t->business_date, s->date);
  CU_ASSERT_EQUAL(t->node_id, NODE);
  CU_ASSERT_EQUAL(t->txn_id, s->txn);
  CU_ASSERT_STRING_EQUAL(t->txn_kind, "purchase");
  CU_ASSERT_STRING_EQUAL(t->mti, "0200");
  CU_ASSERT_STRING_EQUAL(t->processing_code, "000000");
  CU_ASSERT_STRING_EQUAL(t->state, "reversed");
  CU_ASSERT_STRING_EQUAL(t->terminal_id, s->tid);
  CU_ASSERT_EQUAL(t->batch_no, s->batch);
  CU_ASSERT_STRING_EQUAL(t->terminal_stan, s->tstan);
  CU_ASSERT_STRING_EQUAL(t->auth_code, "A1B2C3");
  CU_ASSERT_STRING_EQUAL(t->response_code, "00");
  CU_ASSERT_STRING_EQUAL(t->pan_masked, "541333******2345");
  CU_ASSERT(t->requested.present && t->requested.minor == s->amount);
  CU_ASSERT_STRING_EQUAL(t->requested.alpha, "EUR");
  CU_ASSERT_EQUAL(t->requested.exponent, 2);
  CU_ASSERT(t->approved.present && t->approved.minor == s->approved);
  CU_ASSERT(t->reversed.present && t->reversed.minor == s->reversed);
  CU_ASSERT(t->settled.present &&
            t->settled.minor == s->approved - s->reversed &&
            t->settled.sign == 'D');
  /* received, armed, forwarded, response, reversal_requested, acked */
  CU_ASSERT_EQUAL(t->n_events, 6);
  CU_ASSERT_STRING_EQUAL(t->events[0].event, "received");
  CU_ASSERT_STRING_EQUAL(t->events[3].event, "response");
  CU_ASSERT_STRING_EQUAL(t->events[4].event, "reversal_requested");
  CU_ASSERT_EQUAL(t->events[4].amount.minor, s->reversed);
  CU_ASSERT_EQUAL(strlen(t->events[5].recorded_at), 27);
  db_lookup_result_free(&res);
  PQfinish(c);
}

static void test_lookup_by_rrn_without_date_is_newest_first(void) {
  PGconn *c = reader();
  db_lookup_result_t res;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(
      db_lookup_by_rrn(c, "LOOKUP000001", NULL, &res, err, sizeof err), 0);
  CU_ASSERT_EQUAL_FATAL(res.n, 2);
  CU_ASSERT_STRING_EQUAL(res.txns[0].business_date, D_TODAY);
  CU_ASSERT_STRING_EQUAL(res.txns[1].business_date, D_3AGO);
  CU_ASSERT_STRING_EQUAL(res.txns[0].requested.alpha, "USD");
  db_lookup_result_free(&res);
  CU_ASSERT_EQUAL_FATAL(
      db_lookup_by_rrn(c, "LOOKUP000001", D_3AGO, &res, err, sizeof err), 0);
  CU_ASSERT_EQUAL(res.n, 1);
  CU_ASSERT_EQUAL(res.txns[0].txn_id, others[0].txn);
  db_lookup_result_free(&res);
  PQfinish(c);
}

static void test_lookup_by_terminal_and_stan(void) {
  PGconn *c = reader();
  db_lookup_result_t res;
  char err[256];
  /* Default window: yesterday's transaction is found. */
  CU_ASSERT_EQUAL_FATAL(db_lookup_by_terminal_stan(c, "TRM00001", "000102",
                                                   NULL, NULL, &res, err,
                                                   sizeof err),
                        0);
  CU_ASSERT_EQUAL_FATAL(res.n, 1);
  CU_ASSERT_EQUAL(res.txns[0].txn_id, batch17[1].txn);
  CU_ASSERT_EQUAL(res.txns[0].approved.minor, 3000); /* partial approval */
  CU_ASSERT_EQUAL(res.txns[0].requested.minor, 5000);
  db_lookup_result_free(&res);
  /* 20 days ago: outside the default window, found with a range. */
  CU_ASSERT_EQUAL(db_lookup_by_terminal_stan(c, "TRM00009", "004242", NULL,
                                             NULL, &res, err, sizeof err),
                  DB_E_NOT_FOUND);
  CU_ASSERT_EQUAL_FATAL(db_lookup_by_terminal_stan(c, "TRM00009", "004242",
                                                   D_20AGO, D_TODAY, &res, err,
                                                   sizeof err),
                        0);
  CU_ASSERT_EQUAL(res.n, 1);
  CU_ASSERT_STRING_EQUAL(res.txns[0].requested.alpha, "KWD");
  CU_ASSERT_EQUAL(res.txns[0].requested.exponent, 3);
  db_lookup_result_free(&res);
  PQfinish(c);
}

static void test_lookup_by_pan_hash_and_date(void) {
  PGconn *c = reader();
  db_lookup_result_t res;
  char err[256];
  uint8_t h[32];
  pan_hash(PAN_A, h);
  CU_ASSERT_EQUAL_FATAL(
      db_lookup_by_pan_hash(c, h, 1, D_YDAY, &res, err, sizeof err), 0);
  /* PAN_A on yesterday: batch17[0] and batch17[3]. */
  CU_ASSERT_EQUAL_FATAL(res.n, 2);
  for (size_t i = 0; i < res.n; i++) {
    CU_ASSERT_STRING_EQUAL(res.txns[i].pan_masked, "541333******2345");
    CU_ASSERT(res.txns[i].txn_id == batch17[0].txn ||
              res.txns[i].txn_id == batch17[3].txn);
  }
  db_lookup_result_free(&res);
  /* The wrong key version finds nothing. */
  CU_ASSERT_EQUAL(db_lookup_by_pan_hash(c, h, 2, D_YDAY, &res, err, sizeof err),
                  DB_E_NOT_FOUND);
  PQfinish(c);
}

static void test_lookup_not_found_for_each_key(void) {
  PGconn *c = reader();
  db_lookup_result_t res;
  char err[256];
  uint8_t h[32];
  pan_hash("4999999999999999", h);
  CU_ASSERT_EQUAL(
      db_lookup_by_rrn(c, "NOSUCHRRN000", NULL, &res, err, sizeof err),
      DB_E_NOT_FOUND);
  CU_ASSERT_EQUAL(res.n, 0);
  CU_ASSERT_EQUAL(
      db_lookup_by_rrn(c, batch17[0].rrn, D_TODAY, &res, err, sizeof err),
      DB_E_NOT_FOUND);
  CU_ASSERT_EQUAL(db_lookup_by_terminal_stan(c, "TRM00001", "999999", NULL,
                                             NULL, &res, err, sizeof err),
                  DB_E_NOT_FOUND);
  CU_ASSERT_EQUAL(db_lookup_by_pan_hash(c, h, 1, D_YDAY, &res, err, sizeof err),
                  DB_E_NOT_FOUND);
  PQfinish(c);
}

static void test_lookup_refuses_hostile_inputs(void) {
  PGconn *c = reader();
  db_lookup_result_t res;
  char err[256];
  static const char *const bad_rrns[] = {"63270100000",
                                         "6327010000011",
                                         "63270100000'",
                                         "'; DROP TABLE",
                                         "6327 1000001",
                                         "63270100000%",
                                         "",
                                         "63270100000\n"};
  for (size_t i = 0; i < N(bad_rrns); i++)
    CU_ASSERT_EQUAL(
        db_lookup_by_rrn(c, bad_rrns[i], NULL, &res, err, sizeof err),
        DB_E_INVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "RRN"));
  CU_ASSERT_EQUAL(db_lookup_by_rrn(c, NULL, NULL, &res, err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(
      db_lookup_by_rrn(c, batch17[0].rrn, "2026-02-30", &res, err, sizeof err),
      DB_E_INVAL);
  CU_ASSERT_EQUAL(
      db_lookup_by_rrn(c, batch17[0].rrn, "today", &res, err, sizeof err),
      DB_E_INVAL);
  CU_ASSERT_EQUAL(db_lookup_by_terminal_stan(c, "T1';--", "000101", NULL, NULL,
                                             &res, err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(db_lookup_by_terminal_stan(c, "TRM000019", "000101", NULL,
                                             NULL, &res, err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(db_lookup_by_terminal_stan(c, "        ", "000101", NULL,
                                             NULL, &res, err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(db_lookup_by_terminal_stan(c, "TRM00001", "00010a", NULL,
                                             NULL, &res, err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(
      db_lookup_by_pan_hash(c, NULL, 1, D_YDAY, &res, err, sizeof err),
      DB_E_INVAL);
  CU_ASSERT_EQUAL(db_recon_batch(c, "TRM00001", 1000000, NULL, NULL, NULL,
                                 &(db_recon_batch_t){0}, err, sizeof err),
                  DB_E_INVAL);
  CU_ASSERT_EQUAL(db_recon_batch(c, "TRM00001", 17, NULL, NULL, "97'",
                                 &(db_recon_batch_t){0}, err, sizeof err),
                  DB_E_INVAL);
  /* Nothing happened to the journal. */
  CU_ASSERT(pgt_ll(c, "SELECT count(*) FROM switch.journal_event") > 50);
  PQfinish(c);
}

static void test_lookup_follows_adjustment_into_later_date(void) {
  PGconn *c = reader();
  db_lookup_result_t res;
  char err[256];
  const spec_t *s = &batch17[14];
  CU_ASSERT_EQUAL_FATAL(
      db_lookup_by_rrn(c, s->rrn, s->date, &res, err, sizeof err), 0);
  const db_lookup_txn_t *t = &res.txns[0];
  CU_ASSERT_EQUAL_FATAL(t->n_events, 6);
  CU_ASSERT_STRING_EQUAL(t->events[4].business_date, D_TODAY);
  CU_ASSERT_STRING_EQUAL(t->events[4].event, "reversal_requested");
  CU_ASSERT_STRING_EQUAL(t->state, "reversed");
  CU_ASSERT(t->settled.present && t->settled.minor == 0);
  db_lookup_result_free(&res);
  PQfinish(c);
}

static void test_money_decimal_uses_the_exponent(void) {
  char b[32];
  CU_ASSERT(db_money_decimal(1234, 2, b, sizeof b) == 5 && !strcmp(b, "12.34"));
  CU_ASSERT(db_money_decimal(5, 3, b, sizeof b) && !strcmp(b, "0.005"));
  CU_ASSERT(db_money_decimal(1500, 0, b, sizeof b) && !strcmp(b, "1500"));
  CU_ASSERT(db_money_decimal(0, 2, b, sizeof b) && !strcmp(b, "0.00"));
  CU_ASSERT(db_money_decimal(INT64_MAX, 4, b, sizeof b) &&
            !strcmp(b, "922337203685477.5807"));
  CU_ASSERT_EQUAL(db_money_decimal(-1, 2, b, sizeof b), 0);
  CU_ASSERT_EQUAL(db_money_decimal(1, 5, b, sizeof b), 0);
  CU_ASSERT_EQUAL(db_money_decimal(123456, 2, b, 4), 0);
}

/* ------------------------------------------------------------------------ */
/* Reconciliation                                                            */

static void test_recon_totals_match_the_batch(void) {
  PGconn *c = reader();
  db_recon_batch_t b;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(
      db_recon_batch(c, "TRM00001", 17, NULL, NULL, NULL, &b, err, sizeof err),
      0);
  db_recon_totals_t want;
  expect_totals(batch17, N(batch17), "TRM00001", 17, "978", &want);
  CU_ASSERT_EQUAL_FATAL(b.n, 1);
  CU_ASSERT_EQUAL(b.transactions, 15);
  CU_ASSERT_STRING_EQUAL(b.totals[0].currency, "978");
  CU_ASSERT_EQUAL(b.totals[0].exponent, 2);
  CU_ASSERT(same_totals(&b.totals[0], &want));
  /* The data make every field non-zero. */
  CU_ASSERT(want.credits_reversal_count > 0 && want.debits_reversal_count > 0);
  db_recon_diff_t d[DB_RECON_FIELDS];
  size_t nd = 99;
  CU_ASSERT_EQUAL(db_recon_compare(&b.totals[0], &want, d, &nd), 0);
  CU_ASSERT_EQUAL(nd, 0);
  PQfinish(c);
}

static void test_recon_mismatch_names_each_field(void) {
  PGconn *c = reader();
  db_recon_batch_t b;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(
      db_recon_batch(c, "TRM00001", 17, NULL, NULL, NULL, &b, err, sizeof err),
      0);
  db_recon_totals_t term;
  expect_totals(batch17, N(batch17), "TRM00001", 17, "978", &term);
  /* The terminal counted the declined purchase and missed the refund
   * reversal. */
  term.debits_count += 1;
  term.debits_amount += 999;
  term.credits_reversal_count -= 1;
  term.credits_reversal_amount -= 300;
  CU_ASSERT_EQUAL_FATAL(db_recon_set_net(&term), 0);
  db_recon_diff_t d[DB_RECON_FIELDS];
  size_t nd = 0;
  CU_ASSERT_EQUAL(db_recon_compare(&b.totals[0], &term, d, &nd), DB_E_MISMATCH);
  CU_ASSERT_EQUAL_FATAL(nd, 5);
  int want[] = {75, 76, 87, 88, 97};
  for (size_t i = 0; i < nd; i++) {
    CU_ASSERT_EQUAL(d[i].de, want[i]);
    CU_ASSERT_PTR_NOT_NULL(d[i].name);
  }
  CU_ASSERT_EQUAL(d[1].switch_value + 1, d[1].terminal_value);
  CU_ASSERT_EQUAL(d[3].terminal_value - d[3].switch_value, 999);
  /* Only the sign of DE97 differs. */
  db_recon_totals_t flip = b.totals[0];
  flip.net_sign = flip.net_sign == 'D' ? 'C' : 'D';
  CU_ASSERT_EQUAL(db_recon_compare(&b.totals[0], &flip, d, &nd), DB_E_MISMATCH);
  CU_ASSERT(nd == 1 && d[0].de == 97 && d[0].switch_sign != d[0].terminal_sign);
  PQfinish(c);
}

static void test_recon_multi_currency_batch(void) {
  PGconn *c = reader();
  db_recon_batch_t b;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(
      db_recon_batch(c, "TRM00003", 5, NULL, NULL, NULL, &b, err, sizeof err),
      0);
  CU_ASSERT_EQUAL_FATAL(b.n, 2);
  static const char *const curs[] = {"978", "392"};
  for (size_t k = 0; k < 2; k++) {
    db_recon_totals_t want;
    expect_totals(batch5, N(batch5), "TRM00003", 5, curs[k], &want);
    size_t i = strcmp(b.totals[0].currency, curs[k]) == 0 ? 0 : 1;
    CU_ASSERT_STRING_EQUAL(b.totals[i].currency, curs[k]);
    CU_ASSERT(same_totals(&b.totals[i], &want));
    CU_ASSERT_EQUAL(b.totals[i].exponent, k == 0 ? 2 : 0);
  }
  CU_ASSERT_EQUAL_FATAL(
      db_recon_batch(c, "TRM00003", 5, NULL, NULL, "392", &b, err, sizeof err),
      0);
  CU_ASSERT_EQUAL(b.n, 1);
  CU_ASSERT_STRING_EQUAL(b.totals[0].currency, "392");
  /* An unknown batch: nothing counted, not an error. */
  CU_ASSERT_EQUAL(
      db_recon_batch(c, "TRM00003", 6, NULL, NULL, NULL, &b, err, sizeof err),
      0);
  CU_ASSERT(b.n == 0 && b.transactions == 0);
  PQfinish(c);
}

static void test_recon_parse_totals(void) {
  db_recon_totals_t t;
  char err[256];
  CU_ASSERT_EQUAL(
      db_recon_parse_totals("de74=1,de75=0,de76=3,de77=1,de86=700,de87=0,"
                            "DE88=9000,de89=100,de97=D8200,currency=978",
                            &t, err, sizeof err),
      0);
  CU_ASSERT(t.credits_count == 1 && t.debits_count == 3 &&
            t.debits_amount == 9000 && t.net_amount == 8200 &&
            t.net_sign == 'D' && !strcmp(t.currency, "978"));
  static const char *const bad[] = {
      "de74=1", /* missing */
      "de74=1,de74=1,de76=3,de77=1,de86=7,de87=0,de88=9,de89=1,de97=D1",
      "de74=x,de75=0,de76=3,de77=1,de86=7,de87=0,de88=9,de89=1,de97=D1",
      "de74=1,de75=0,de76=3,de77=1,de86=7,de87=0,de88=9,de89=1,de97=1",
      "de74=1,de75=0,de76=3,de77=1,de86=7,de87=0,de88=9,de89=1,de97=X1",
      "de74=99999999999,de75=0,de76=3,de77=1,de86=7,de87=0,de88=9,de89=1,"
      "de97=D1",
      "de74=1,de75=0,de76=3,de77=1,de86=7,de87=0,de88=9,de89=1,de97=D1,"
      "de99=1",
      "de74=1,de75=0,de76=3,de77=1,de86=7,de87=0,de88=9,de89=1,de97=D1,"
      "currency=EUR",
      "de74=-1,de75=0,de76=3,de77=1,de86=7,de87=0,de88=9,de89=1,de97=D1",
      "de74=1;DROP TABLE x,de75=0,de76=3,de77=1,de86=7,de87=0,de88=9,de89=1,"
      "de97=D1",
      ""};
  for (size_t i = 0; i < N(bad); i++)
    CU_ASSERT_EQUAL(db_recon_parse_totals(bad[i], &t, err, sizeof err),
                    DB_E_INVAL);
}

/* ------------------------------------------------------------------------ */
/* switchctl                                                                 */

static char g_out[65536];

static void test_switchctl_txn_by_rrn_as_reader(void) {
  const spec_t *s = &batch17[3];
  char args[256];
  snprintf(args, sizeof args, "txn --rrn %s", s->rrn);
  CU_ASSERT_EQUAL(ctl(pgt_reader, NULL, args, NULL, g_out, sizeof g_out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "541333******2345"));
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "D 80.00 EUR")); /* approved */
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "D 25.00 EUR")); /* reversed */
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "D 55.00 EUR")); /* settled */
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "reversal_requested"));
  assert_no_clear_pan(g_out);
  CU_ASSERT_EQUAL(ctl(pgt_reader, "--json", args, NULL, g_out, sizeof g_out),
                  0);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "\"pan_masked\":\"541333******2345\""));
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "\"settled\":{\"minor\":5500,"));
  /* One transaction: one line. */
  size_t lines = 0;
  for (const char *p = g_out; *p; p++)
    lines += *p == '\n';
  CU_ASSERT_EQUAL(lines, 1);
  assert_no_clear_pan(g_out);
}

static void test_switchctl_txn_by_terminal_stan_and_not_found(void) {
  CU_ASSERT_EQUAL(ctl(pgt_writer, NULL, "txn --terminal TRM00001 --stan 000105",
                      NULL, g_out, sizeof g_out),
                  0);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "C 7.00 EUR"));
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "refund"));
  assert_no_clear_pan(g_out);
  char args[200];
  snprintf(args, sizeof args,
           "txn --terminal TRM00009 --stan 004242 --from %s "
           "--to %s",
           D_20AGO, D_20AGO);
  CU_ASSERT_EQUAL(ctl(pgt_reader, NULL, args, NULL, g_out, sizeof g_out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "D 5.000 KWD"));
  CU_ASSERT_EQUAL(ctl(pgt_reader, NULL, "txn --rrn NOSUCHRRN000", NULL, g_out,
                      sizeof g_out),
                  1);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "no transaction found"));
}

static void test_switchctl_refuses_bad_input_before_the_database(void) {
  /* A database that does not exist: a usage error must come first. */
  const char *nodb = "host=/nonexistent-socket-dir dbname=none";
  static const char *const bad[] = {
      "txn --rrn 12345",
      "txn --rrn \"63270100000'\"",
      "txn --rrn \"'; DROP TABLE switch.journal_event; --\"",
      "txn --terminal \"T1';--\" --stan 000101",
      "txn --terminal TRM00001 --stan 12345",
      "txn --terminal TRM00001",
      "txn --rrn 632701000001 --date 2026-13-01",
      "txn --pan-stdin",
      "txn --rrn 632701000001 --terminal TRM00001 --stan 000101",
      "recon --terminal TRM00001",
      "recon --terminal TRM00001 --batch 12x",
      "recon --terminal TRM00001 --batch 1234567",
      "recon --terminal TRM00001 --batch 17 --currency EUR",
      "recon --terminal TRM00001 --batch 17 --terminal-totals de74=1",
  };
  for (size_t i = 0; i < N(bad); i++) {
    int rc = ctl(nodb, NULL, bad[i], NULL, g_out, sizeof g_out);
    if (rc != 2)
      fprintf(stderr, "\n%s -> %d: %s", bad[i], rc, g_out);
    CU_ASSERT_EQUAL(rc, 2);
    CU_ASSERT_PTR_NULL(strstr(g_out, "could not connect"));
  }
  /* A PAN that is not 12 to 19 digits: refused before hashing. */
  char f[400];
  snprintf(f, sizeof f, "%s/badpan", pgt_tmp);
  FILE *fp = fopen(f, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
  fprintf(fp, "4111-1111-1111-1111\n");
  fclose(fp);
  char args[64];
  snprintf(args, sizeof args, "txn --pan-stdin --date %s", D_YDAY);
  CU_ASSERT_EQUAL(ctl(nodb, NULL, args, f, g_out, sizeof g_out), 2);
  CU_ASSERT_PTR_NULL(strstr(g_out, "4111"));
  remove(f);
  /* An endless line: read no further than a PAN could be. */
  CU_ASSERT_EQUAL(ctl(nodb, NULL, args, "/dev/zero", g_out, sizeof g_out), 2);
}

static void test_switchctl_txn_pan_stdin(void) {
  char f[400], args[128];
  snprintf(f, sizeof f, "%s/pan", pgt_tmp);
  FILE *fp = fopen(f, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(fp);
  fprintf(fp, "%s\n", PAN_A);
  fclose(fp);
  snprintf(args, sizeof args, "txn --pan-stdin --date %s", D_YDAY);
  int rc = ctl(pgt_reader, NULL, args, f, g_out, sizeof g_out);
  if (rc != 0)
    fprintf(stderr, "\n%s\n", g_out);
  CU_ASSERT_EQUAL(rc, 0);
  /* Both transactions of PAN_A that day, and nothing else. */
  for (size_t i = 0; i < N(batch17); i++) {
    char needle[64];
    snprintf(needle, sizeof needle, "RRN            %s", batch17[i].rrn);
    CU_ASSERT_EQUAL(strstr(g_out, needle) != NULL,
                    batch17[i].pan == PAN_A && batch17[i].date == D_YDAY);
  }
  assert_no_clear_pan(g_out);
  /* The same PAN on a date it was not used: not found. */
  snprintf(args, sizeof args, "txn --pan-stdin --date %s", D_TODAY);
  CU_ASSERT_EQUAL(ctl(pgt_reader, NULL, args, f, g_out, sizeof g_out), 1);
  assert_no_clear_pan(g_out);
  /* Without the key store: a clear failure, no lookup. */
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' --db '%s' %s < '%s'", SW_SWITCHCTL,
           pgt_reader, args, f);
  CU_ASSERT_EQUAL(run(cmd, g_out, sizeof g_out), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "key store"));
  /* After the hash key rotates, rows hashed under version 1 are still
   * found: the lookup hashes under every version that exists. */
  snprintf(cmd, sizeof cmd,
           "'%s' --keystore '%s' --master-key '%s' --audit-log '%s' "
           "--who test rotate journal.pan_hash",
           SW_KEYTOOL, g_keystore, g_master, g_audit);
  CU_ASSERT_EQUAL_FATAL(run(cmd, g_out, sizeof g_out), 0);
  snprintf(args, sizeof args, "txn --pan-stdin --date %s", D_YDAY);
  CU_ASSERT_EQUAL(ctl(pgt_reader, NULL, args, f, g_out, sizeof g_out), 0);
  for (size_t i = 0; i < N(batch17); i++) {
    char needle[64];
    snprintf(needle, sizeof needle, "RRN            %s", batch17[i].rrn);
    CU_ASSERT_EQUAL(strstr(g_out, needle) != NULL,
                    batch17[i].pan == PAN_A && batch17[i].date == D_YDAY);
  }
  remove(f);
}

static void test_switchctl_recon(void) {
  db_recon_totals_t want;
  expect_totals(batch17, N(batch17), "TRM00001", 17, "978", &want);
  char tot[400], args[600];
  /* No terminal totals: the switch's totals, exit 0. */
  CU_ASSERT_EQUAL(ctl(pgt_reader, NULL, "recon --terminal TRM00001 --batch 17",
                      NULL, g_out, sizeof g_out),
                  0);
  char line[80];
  snprintf(line, sizeof line, "DE76 debits number            %lld",
           (long long)want.debits_count);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, line));
  CU_ASSERT_PTR_NULL(strstr(g_out, "match"));
  /* Match. */
  totals_text(&want, tot, sizeof tot);
  snprintf(args, sizeof args,
           "recon --terminal TRM00001 --batch 17 --terminal-totals '%s'", tot);
  CU_ASSERT_EQUAL(ctl(pgt_reader, NULL, args, NULL, g_out, sizeof g_out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "\nmatch\n"));
  /* Mismatch on DE88 and DE97: exit 3, both values shown. */
  db_recon_totals_t term = want;
  term.debits_amount += 1;
  CU_ASSERT_EQUAL_FATAL(db_recon_set_net(&term), 0);
  totals_text(&term, tot, sizeof tot);
  snprintf(args, sizeof args,
           "recon --terminal TRM00001 --batch 17 --terminal-totals '%s'", tot);
  CU_ASSERT_EQUAL(ctl(pgt_reader, NULL, args, NULL, g_out, sizeof g_out), 3);
  snprintf(line, sizeof line, "DE88 debits amount: switch %lld, terminal %lld",
           (long long)want.debits_amount, (long long)term.debits_amount);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, line));
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "DE97 net amount"));
  CU_ASSERT_EQUAL(ctl(pgt_reader, "--json", args, NULL, g_out, sizeof g_out),
                  3);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "\"result\":\"mismatch\""));
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "\"field\":\"DE88\""));
  /* Two currencies and terminal totals without one: cannot compare. */
  db_recon_totals_t jpy;
  expect_totals(batch5, N(batch5), "TRM00003", 5, "392", &jpy);
  totals_text(&jpy, tot, sizeof tot);
  char *nocur = strchr(tot, ',') + 1; /* drop "currency=392," */
  snprintf(args, sizeof args,
           "recon --terminal TRM00003 --batch 5 --terminal-totals '%s'", nocur);
  CU_ASSERT_EQUAL(ctl(pgt_reader, NULL, args, NULL, g_out, sizeof g_out), 1);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "carries the totals of one"));
  snprintf(args, sizeof args,
           "recon --terminal TRM00003 --batch 5 --currency 392 "
           "--terminal-totals '%s'",
           nocur);
  CU_ASSERT_EQUAL(ctl(pgt_reader, NULL, args, NULL, g_out, sizeof g_out), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(g_out, "\nmatch\n"));
}

int main(void) {
  tu_init();
  setup();
  static const tu_test_t lookup_tests[] = {
      {"lookup_by_rrn_gives_summary_and_timeline",
       test_lookup_by_rrn_gives_summary_and_timeline},
      {"lookup_by_rrn_without_date_is_newest_first",
       test_lookup_by_rrn_without_date_is_newest_first},
      {"lookup_by_terminal_and_stan", test_lookup_by_terminal_and_stan},
      {"lookup_by_pan_hash_and_date", test_lookup_by_pan_hash_and_date},
      {"lookup_not_found_for_each_key", test_lookup_not_found_for_each_key},
      {"lookup_refuses_hostile_inputs", test_lookup_refuses_hostile_inputs},
      {"lookup_follows_adjustment_into_later_date",
       test_lookup_follows_adjustment_into_later_date},
      {"money_decimal_uses_the_exponent", test_money_decimal_uses_the_exponent},
      {NULL, NULL}};
  static const tu_test_t recon_tests[] = {
      {"recon_totals_match_the_batch", test_recon_totals_match_the_batch},
      {"recon_mismatch_names_each_field", test_recon_mismatch_names_each_field},
      {"recon_multi_currency_batch", test_recon_multi_currency_batch},
      {"recon_parse_totals", test_recon_parse_totals},
      {NULL, NULL}};
  static const tu_test_t ctl_tests[] = {
      {"switchctl_txn_by_rrn_as_reader", test_switchctl_txn_by_rrn_as_reader},
      {"switchctl_txn_by_terminal_stan_and_not_found",
       test_switchctl_txn_by_terminal_stan_and_not_found},
      {"switchctl_refuses_bad_input_before_the_database",
       test_switchctl_refuses_bad_input_before_the_database},
      {"switchctl_txn_pan_stdin", test_switchctl_txn_pan_stdin},
      {"switchctl_recon", test_switchctl_recon},
      {NULL, NULL}};
  tu_add_suite("lookup", lookup_tests);
  tu_add_suite("recon", recon_tests);
  tu_add_suite("switchctl", ctl_tests);
  int rc = tu_run();
  PQfinish(g_w);
  return rc;
}
