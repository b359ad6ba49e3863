/*
 * ctl_settle.c — switchctl settle: closes a business date, settles it and
 * writes its clearing file and CSV report (db/settle.h,
 * docs/settlement.md).
 *
 *   switchctl settle --date YYYY-MM-DD [--out DIR] [--check]
 *
 * --out defaults to var/clearing under the current directory (made if
 * missing).  --check writes nothing: it recomputes the closed date from
 * the journal and compares (exit 3 on a difference).  Prints a summary per
 * currency and, last, one line "sha256 <hex>" for scripts.
 *
 * Fault injection for the tests: SW_SETTLE_FAULT=files_written,
 * after_rename or before_commit makes the process _exit(70) at that step,
 * as a crash would (no COMMIT, no clean-up).
 */
#include "ctl.h"
#include "settle.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CTL_SETTLE_FAULT_EXIT 70

static void fault_hook(void *ctx, db_settle_step_t at) {
  const char *want = ctx;
  static const char *const names[] = {"", "files_written", "after_rename",
                                      "before_commit"};
  if ((size_t)at < sizeof names / sizeof names[0] &&
      strcmp(want, names[at]) == 0) {
    fflush(NULL);
    _exit(CTL_SETTLE_FAULT_EXIT);
  }
}

/* Makes var/clearing under the current directory if missing. */
static int default_out_dir(void) {
  if (mkdir("var", 0755) != 0 && errno != EEXIST)
    return -1;
  if (mkdir("var/clearing", 0750) != 0 && errno != EEXIST)
    return -1;
  return 0;
}

/* Minor units as a decimal in the currency's exponent. */
static const char *amount(int64_t v, int exponent, char buf[32]) {
  if (db_format_minor(v, exponent, buf, 32) < 0)
    snprintf(buf, 32, "%" PRId64 " minor units", v);
  return buf;
}

static void print_summary(const char *date, const db_settle_result_t *r) {
  printf("%s %s: %" PRId64 " transaction%s (%" PRId64 " adjustment%s), %" PRId64
         " merchant total%s\n",
         r->already_closed ? "already settled" : "settled", date,
         r->transactions, r->transactions == 1 ? "" : "s", r->adjustments,
         r->adjustments == 1 ? "" : "s", r->merchants,
         r->merchants == 1 ? "" : "s");
  for (size_t i = 0; i < r->ncurrencies; i++) {
    const db_settle_currency_t *u = &r->currencies[i];
    char d[32], c[32], f[32], n[32];
    printf("%s %s: %" PRId64 " debits %s, %" PRId64
           " credits %s, fees %s, net %s\n",
           u->currency, u->alpha, u->debit_count,
           amount(u->debit_minor, u->exponent, d), u->credit_count,
           amount(u->credit_minor, u->exponent, c),
           amount(u->fee_minor, u->exponent, f),
           amount(u->net_minor, u->exponent, n));
  }
  printf("clearing %s (%" PRId64 " records)%s\n", r->clearing_path, r->records,
         r->files_written ? "" : " unchanged");
  printf("report %s\n", r->report_path);
  printf("sha256 %s\n", r->sha256);
}

static int usage(void) {
  fprintf(stderr,
          "usage: switchctl settle --date YYYY-MM-DD [--out DIR] [--check]\n");
  return CTL_USAGE;
}

int ctl_settle(const ctl_t *ctl, int argc, char **argv) {
  const char *date = NULL, *out = NULL;
  int check = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--check") == 0)
      check = 1;
    else if (strcmp(argv[i], "--date") == 0 && i + 1 < argc)
      date = argv[++i];
    else if (strcmp(argv[i], "--out") == 0 && i + 1 < argc)
      out = argv[++i];
    else {
      fprintf(stderr, "switchctl: settle: unexpected argument \"%s\"\n",
              argv[i]);
      return usage();
    }
  }
  if (!date || ctl_check_date(date) != 0) {
    fprintf(stderr, "switchctl: settle: --date YYYY-MM-DD is required (a "
                    "real calendar day)\n");
    return usage();
  }
  if (!out) {
    if (!check && default_out_dir() != 0) {
      fprintf(stderr, "switchctl: settle: cannot make var/clearing: %s\n",
              strerror(errno));
      return CTL_FAILED;
    }
    out = DB_SETTLE_DEFAULT_DIR;
  }
  PGconn *c = ctl_connect(ctl);
  if (!c)
    return CTL_FAILED;
  char err[2048];
  int rc;
  if (check) {
    rc = db_settle_verify(c, date, out, err, sizeof err);
    if (rc == 0)
      printf("settlement of %s matches the journal\n", date);
  } else {
    const char *env = getenv("SW_SETTLE_FAULT");
    char fault[32];
    snprintf(fault, sizeof fault, "%s", env ? env : "");
    db_settle_opts_t o = {date, out, fault[0] ? fault_hook : NULL, fault};
    db_settle_result_t *res = malloc(sizeof *res);
    rc = res ? db_settle(c, &o, res, err, sizeof err) : DB_E_NOMEM;
    if (rc == DB_E_NOMEM && !res)
      snprintf(err, sizeof err, "out of memory");
    if (rc == 0)
      print_summary(date, res);
    free(res);
  }
  PQfinish(c);
  if (rc == 0)
    return CTL_OK;
  fprintf(stderr, "switchctl: settle: %s: %s\n", db_err_name(rc), err);
  return rc == DB_E_MISMATCH ? CTL_MISMATCH : CTL_FAILED;
}
