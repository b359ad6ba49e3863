/*
 * ctl_txn.c — switchctl txn: the customer-service lookup (db/lookup.h).
 *
 *   switchctl txn --rrn R [--date D]
 *   switchctl txn --terminal T --stan S [--date D | --from D --to D]
 *   switchctl txn --pan-stdin --date D
 *
 * Every argument is checked before the database is touched.  The PAN is
 * read from standard input only (never argv, where ps and shell history
 * would show it), with echo off on a terminal; its HMAC-SHA-256 under the
 * PAN hash key (--pan-key) is computed by the soft HSM backend, and the
 * buffer is wiped as soon as the HMAC is taken.  Output shows the masked
 * PAN only: the library never reads pan_enc or pan_hash.
 *
 * Exit status: 0 found, 1 not found or failed, 2 usage.
 */
#include "ctl.h"
#include "hsm.h"
#include "lookup.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>
#include <uv.h>

typedef struct {
  const char *rrn, *terminal, *stan, *date, *from, *to;
  int pan_stdin;
} txn_args_t;

static int usage_error(const char *msg) {
  fprintf(stderr,
          "switchctl: txn: %s\n"
          "usage: switchctl txn --rrn R [--date D]\n"
          "       switchctl txn --terminal T --stan S [--date D | --from D "
          "--to D]\n"
          "       switchctl txn --pan-stdin --date D   (PAN on standard "
          "input)\n",
          msg);
  return CTL_USAGE;
}

static int parse_args(int argc, char **argv, txn_args_t *a) {
  static const char *const names[] = {"--rrn",  "--terminal", "--stan",
                                      "--date", "--from",     "--to"};
  const char **slots[] = {&a->rrn,  &a->terminal, &a->stan,
                          &a->date, &a->from,     &a->to};
  memset(a, 0, sizeof *a);
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--pan-stdin") == 0) {
      a->pan_stdin = 1;
      continue;
    }
    size_t k = 0;
    while (k < 6 && strcmp(argv[i], names[k]) != 0)
      k++;
    if (k == 6) {
      fprintf(stderr, "switchctl: txn: unknown argument \"%.40s\"\n", argv[i]);
      return usage_error("see the usage");
    }
    if (i + 1 >= argc)
      return usage_error("an option needs a value");
    if (*slots[k])
      return usage_error("an option is given twice");
    *slots[k] = argv[++i];
  }
  return 0;
}

/* Checks the combination and every value's shape. */
static int check_args(const txn_args_t *a) {
  int keys = !!a->rrn + !!(a->terminal || a->stan) + a->pan_stdin;
  if (keys != 1)
    return usage_error("give exactly one of --rrn, --terminal with --stan, "
                       "--pan-stdin");
  if (a->rrn && db_lookup_check_rrn(a->rrn) != 0)
    return usage_error("invalid --rrn: 12 letters or digits");
  if ((a->terminal || a->stan) && (!a->terminal || !a->stan))
    return usage_error("--terminal and --stan go together");
  if (a->terminal && db_lookup_check_terminal_id(a->terminal) != 0)
    return usage_error("invalid --terminal: 1 to 8 letters, digits or spaces");
  if (a->stan && db_lookup_check_stan(a->stan) != 0)
    return usage_error("invalid --stan: 6 digits");
  if ((a->from || a->to) && (!a->terminal || a->date))
    return usage_error("--from and --to go with --terminal, without --date");
  const char *dates[3] = {a->date, a->from, a->to};
  for (int i = 0; i < 3; i++)
    if (dates[i] && ctl_check_date(dates[i]) != 0)
      return usage_error("invalid date: expected YYYY-MM-DD");
  if (a->pan_stdin && !a->date)
    return usage_error("--pan-stdin needs --date");
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The PAN                                                                   */

/* Reads one line from standard input into pan (echo off on a terminal);
 * returns its length, or -1 when it is not 12 to 19 digits. */
static int read_pan(char *pan, size_t cap) {
  struct termios old, quiet;
  int tty = isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0;
  if (tty) {
    fprintf(stderr, "PAN: ");
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
  }
  /* One byte at a time: no stdio buffer keeps a copy. */
  size_t n = 0, total = 0;
  int bad = 0;
  char ch;
  /* A line longer than 256 bytes is not a PAN: stop reading it. */
  while (total++ < 256 && read(STDIN_FILENO, &ch, 1) == 1 && ch != '\n') {
    if (ch == '\r')
      continue;
    if (ch < '0' || ch > '9' || n + 1 >= cap)
      bad = 1;
    else
      pan[n++] = ch;
  }
  ch = 0;
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    fprintf(stderr, "\n");
  }
  pan[n] = '\0';
  return bad || total > 256 || n < 12 || n > 19 ? -1 : (int)n;
}

typedef struct {
  int done, status;
  uint8_t mac[32];
  uint32_t key_version;
} hmac_ctx_t;

/* The PAN's hash under every version of the hash key that still exists:
 * rows keep the hash made under the version current when they were
 * written, so a card is found across key rotations. */
#define PAN_KEY_VERSIONS 32
typedef struct {
  const char *label;
  uint32_t versions[PAN_KEY_VERSIONS];
  size_t nversions;
  hmac_ctx_t h[PAN_KEY_VERSIONS];
} pan_hashes_t;

static void collect_version(void *ctx, const hsm_key_info_t *k) {
  pan_hashes_t *ph = ctx;
  if (strcmp(k->label, ph->label) == 0 && ph->nversions < PAN_KEY_VERSIONS)
    ph->versions[ph->nversions++] = k->version;
}

static void on_hmac(hsm_req_t *req) {
  hmac_ctx_t *x = req->data;
  x->done = 1;
  x->status = req->status;
  if (req->status == 0 && req->result.data.len == 32) {
    memcpy(x->mac, req->result.data.out, 32);
    x->key_version = req->result.data.key_version;
  } else if (req->status == 0) {
    x->status = HSM_E_BACKEND;
  }
  OPENSSL_cleanse(req->result.data.out, sizeof req->result.data.out);
}

/* HMAC-SHA-256 of pan[0..n) under every version of ctl->pan_key with the
 * soft backend. */
static int pan_hmac(const ctl_t *ctl, const char *pan, size_t n,
                    pan_hashes_t *ph) {
  if (!ctl->hsm_keystore || !ctl->hsm_master_key) {
    fprintf(stderr, "switchctl: txn: --pan-stdin needs the HSM key store\n"
                    "HINT:  give --hsm-keystore and --hsm-master-key (or "
                    "SW_HSM_KEYSTORE and SW_HSM_MASTER_KEY)\n");
    return -1;
  }
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    return -1;
  hsm_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.backend = "soft";
  cfg.keystore_path = ctl->hsm_keystore;
  cfg.master_key_path = ctl->hsm_master_key;
  hsm_t *h = NULL;
  char err[256] = "";
  int rc = hsm_open(&h, &loop, &cfg, err, sizeof err);
  if (rc == 0) {
    ph->label = ctl->pan_key;
    rc = hsm_key_list(h, collect_version, ph);
    if (rc == 0 && ph->nversions == 0)
      rc = HSM_E_KEY_NOT_FOUND;
    for (size_t i = 0; rc == 0 && i < ph->nversions; i++) {
      hmac_ctx_t *x = &ph->h[i];
      hsm_req_t req;
      memset(&req, 0, sizeof req);
      req.data = x;
      hsm_data_t args = {.key_label = ctl->pan_key,
                         .in = (const uint8_t *)pan,
                         .len = n,
                         .key_version = ph->versions[i]};
      rc = hsm_hmac(h, &req, &args, on_hmac);
      while (rc == 0 && !x->done && uv_run(&loop, UV_RUN_ONCE) != 0) {
      }
      rc = rc ? rc : !x->done ? HSM_E_BACKEND : x->status;
    }
    snprintf(err, sizeof err, "%s", hsm_strerror(rc));
    hsm_close(h);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (rc != 0)
    fprintf(stderr, "switchctl: txn: cannot hash the PAN with key \"%s\": %s\n",
            ctl->pan_key, err[0] ? err : hsm_strerror(rc));
  return rc ? -1 : 0;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */

/* "D 12.34 EUR" or "-". */
static const char *money_text(const db_money_t *m, char *buf, size_t cap) {
  char dec[32];
  if (!m->present || !db_money_decimal(m->minor, m->exponent, dec, sizeof dec))
    return "-";
  snprintf(buf, cap, "%c %s %s", m->sign, dec,
           m->alpha[0] ? m->alpha : m->currency);
  return buf;
}

static void print_human(const db_lookup_txn_t *t) {
  char b1[64], b2[64];
  printf("transaction %s node %u txn %lld\n", t->business_date,
         (unsigned)t->node_id, (long long)t->txn_id);
  printf("  kind           %s (MTI %s, processing code %s)\n",
         t->txn_kind[0] ? t->txn_kind : "-", t->mti,
         t->processing_code[0] ? t->processing_code : "-");
  printf("  state          %s\n", t->state);
  printf("  requested      %s\n", money_text(&t->requested, b1, sizeof b1));
  printf("  approved       %s\n", money_text(&t->approved, b1, sizeof b1));
  printf("  reversed       %s\n", money_text(&t->reversed, b1, sizeof b1));
  printf("  settled        %s\n", money_text(&t->settled, b1, sizeof b1));
  printf("  RRN            %s\n", t->rrn[0] ? t->rrn : "-");
  snprintf(b2, sizeof b2, "%d", (int)t->batch_no);
  printf("  terminal       %s  merchant %s  batch %s\n",
         t->terminal_id[0] ? t->terminal_id : "-",
         t->merchant_id[0] ? t->merchant_id : "-", t->batch_no < 0 ? "-" : b2);
  printf("  STAN           terminal %s  issuer %s\n",
         t->terminal_stan[0] ? t->terminal_stan : "-",
         t->stan[0] ? t->stan : "-");
  printf("  auth code      %s  response code %s\n",
         t->auth_code[0] ? t->auth_code : "-",
         t->response_code[0] ? t->response_code : "-");
  printf("  PAN            %s\n", t->pan_masked[0] ? t->pan_masked : "-");
  printf("  events%s\n", t->events_truncated ? " (first ones only)" : "");
  for (size_t i = 0; i < t->n_events; i++) {
    const db_lookup_event_t *e = &t->events[i];
    printf("    %s #%-3d %-18s %-16s %s  %s  %s\n", e->business_date,
           (int)e->event_no, e->event, e->state, e->recorded_at,
           e->response_code[0] ? e->response_code : "--",
           money_text(&e->amount, b1, sizeof b1));
  }
}

/* A JSON string: quotes, backslashes and control characters escaped. */
static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20 || ch >= 0x7f)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

static void json_kv(const char *key, const char *v, int comma) {
  printf("%s\"%s\":", comma ? "," : "", key);
  if (v && *v)
    json_str(v);
  else
    printf("null");
}

static void json_money(const char *key, const db_money_t *m) {
  char dec[32];
  printf(",\"%s\":", key);
  if (!m->present ||
      !db_money_decimal(m->minor, m->exponent, dec, sizeof dec)) {
    printf("null");
    return;
  }
  printf("{\"minor\":%lld,\"sign\":\"%c\",\"currency\":", (long long)m->minor,
         m->sign);
  json_str(m->currency);
  json_kv("alpha", m->alpha, 1);
  printf(",\"amount\":\"%s\"}", dec);
}

static void print_json(const db_lookup_txn_t *t) {
  printf("{\"business_date\":\"%s\",\"node_id\":%u,\"txn_id\":%lld",
         t->business_date, (unsigned)t->node_id, (long long)t->txn_id);
  json_kv("kind", t->txn_kind, 1);
  json_kv("mti", t->mti, 1);
  json_kv("processing_code", t->processing_code, 1);
  json_kv("state", t->state, 1);
  json_money("requested", &t->requested);
  json_money("approved", &t->approved);
  json_money("reversed", &t->reversed);
  json_money("settled", &t->settled);
  json_kv("rrn", t->rrn, 1);
  json_kv("terminal_id", t->terminal_id, 1);
  json_kv("merchant_id", t->merchant_id, 1);
  if (t->batch_no >= 0)
    printf(",\"batch_no\":%d", (int)t->batch_no);
  else
    printf(",\"batch_no\":null");
  json_kv("terminal_stan", t->terminal_stan, 1);
  json_kv("stan", t->stan, 1);
  json_kv("auth_code", t->auth_code, 1);
  json_kv("response_code", t->response_code, 1);
  json_kv("pan_masked", t->pan_masked, 1);
  printf(",\"events_truncated\":%s,\"events\":[",
         t->events_truncated ? "true" : "false");
  for (size_t i = 0; i < t->n_events; i++) {
    const db_lookup_event_t *e = &t->events[i];
    printf("%s{\"business_date\":\"%s\",\"event_no\":%d", i ? "," : "",
           e->business_date, (int)e->event_no);
    json_kv("event", e->event, 1);
    json_kv("state", e->state, 1);
    json_kv("recorded_at", e->recorded_at, 1);
    json_kv("response_code", e->response_code, 1);
    json_kv("reason", e->reason, 1);
    json_money("amount", &e->amount);
    putchar('}');
  }
  printf("]}\n");
}

/* ------------------------------------------------------------------------ */

static int lookup(PGconn *c, const txn_args_t *a, const hmac_ctx_t *h,
                  db_lookup_result_t *res, char *err, size_t cap) {
  if (a->rrn)
    return db_lookup_by_rrn(c, a->rrn, a->date, res, err, cap);
  if (a->terminal)
    return db_lookup_by_terminal_stan(c, a->terminal, a->stan,
                                      a->date ? a->date : a->from,
                                      a->date ? a->date : a->to, res, err, cap);
  return db_lookup_by_pan_hash(c, h->mac, (int32_t)h->key_version, a->date, res,
                               err, cap);
}

/* What was looked for, for the "not found" message (no PAN, ever). */
static void describe(const txn_args_t *a, char *buf, size_t cap) {
  if (a->rrn)
    snprintf(buf, cap, "RRN %s %s%s", a->rrn, a->date ? "on " : "",
             a->date ? a->date : "on any business date");
  else if (a->terminal && a->date)
    snprintf(buf, cap, "terminal \"%s\" STAN %s on %s", a->terminal, a->stan,
             a->date);
  else if (a->terminal)
    snprintf(buf, cap, "terminal \"%s\" STAN %s from %s to %s", a->terminal,
             a->stan, a->from ? a->from : "the end date - 7 days",
             a->to ? a->to : "tomorrow");
  else
    snprintf(buf, cap, "this PAN on %s", a->date);
}

static void print_result(const ctl_t *ctl, const db_lookup_result_t *res) {
  for (size_t i = 0; i < res->n; i++) {
    if (ctl->json)
      print_json(&res->txns[i]);
    else
      print_human(&res->txns[i]);
  }
  if (res->truncated)
    fprintf(stderr,
            "switchctl: txn: more than %d transactions match; the newest "
            "are shown\nHINT:  narrow the search with --date\n",
            DB_LOOKUP_MAX_TXNS);
}

int ctl_txn(const ctl_t *ctl, int argc, char **argv) {
  txn_args_t a;
  int rc = parse_args(argc, argv, &a);
  if (rc || (rc = check_args(&a)) != 0)
    return rc;
  static pan_hashes_t ph;
  memset(&ph, 0, sizeof ph);
  if (a.pan_stdin) {
    char pan[64];
    int n = read_pan(pan, sizeof pan);
    int ok = n > 0 && pan_hmac(ctl, pan, (size_t)n, &ph) == 0;
    OPENSSL_cleanse(pan, sizeof pan);
    if (n <= 0) {
      fprintf(stderr, "switchctl: txn: the PAN on standard input must be 12 "
                      "to 19 digits on one line\n");
      return CTL_USAGE;
    }
    if (!ok)
      return CTL_FAILED;
  }
  PGconn *c = ctl_connect(ctl);
  if (!c) {
    OPENSSL_cleanse(&ph, sizeof ph);
    return CTL_FAILED;
  }
  /* One lookup, or one per version of the PAN hash key (newest first). */
  size_t tries = a.pan_stdin ? ph.nversions : 1, found = 0;
  char err[512] = "";
  rc = 0;
  for (size_t t = tries; t-- > 0 && (rc == 0 || rc == DB_E_NOT_FOUND);) {
    db_lookup_result_t res;
    rc = lookup(c, &a, &ph.h[t], &res, err, sizeof err);
    if (rc == 0) {
      print_result(ctl, &res);
      found += res.n;
      db_lookup_result_free(&res);
    }
  }
  OPENSSL_cleanse(&ph, sizeof ph);
  PQfinish(c);
  if (rc && rc != DB_E_NOT_FOUND) {
    fprintf(stderr, "switchctl: txn: %s\n", err[0] ? err : db_strerror(rc));
    return CTL_FAILED;
  }
  if (found == 0) {
    char what[160];
    describe(&a, what, sizeof what);
    fprintf(stderr, "switchctl: txn: no transaction found for %s\n", what);
    return CTL_FAILED;
  }

  return CTL_OK;
}
