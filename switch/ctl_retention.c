/*
 * ctl_retention.c — switchctl retention: the retention purge of stored
 * PANs by destroying old versions of the PAN data key (db/retention.h,
 * docs/retention.md).
 *
 *   switchctl retention [--keep-days N [--pan-data-key LABEL]]
 *                       [--journal-keep-days M] [--today YYYY-MM-DD]
 *                       [--apply]
 *
 * --keep-days: prints, for each version of the PAN data key, its verdict
 * and the business dates its PANs span; with --apply destroys the versions
 * whose verdict is "destroy" (each destruction goes to the HSM adapter's
 * audit, printed here).  --journal-keep-days: lists the journal's days
 * older than M days and whether each may be dropped; with --apply drops
 * them (switch.drop_journal_partition).  Without --apply nothing changes.
 * Exit 0 done, 1 failed, 2 usage.
 */
#include "ctl.h"
#include "hsm.h"
#include "retention.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define MAX_VERSIONS 512

typedef struct {
  const char *label;
  uint32_t v[MAX_VERSIONS];
  size_t n;
  int overflow;
} versions_t;

static void collect(void *ctx, const hsm_key_info_t *k) {
  versions_t *vs = ctx;
  if (strcmp(k->label, vs->label) != 0)
    return;
  if (vs->n == MAX_VERSIONS) {
    vs->overflow = 1;
    return;
  }
  vs->v[vs->n++] = k->version;
}

static void audit(void *ctx, const hsm_audit_event_t *ev) {
  (void)ctx;
  printf("audit: %s \"%s\" version %u by %s: %s\n",
         ev->kind == HSM_AUDIT_DESTROYED ? "destroyed" : "key event",
         ev->label ? ev->label : "", ev->version, ev->who ? ev->who : "-",
         ev->status ? hsm_strerror(ev->status) : "ok");
}

static int usage_error(const char *what) {
  fprintf(stderr,
          "switchctl: retention: %s\n"
          "usage: switchctl retention [--keep-days N [--pan-data-key LABEL]] "
          "[--journal-keep-days M] [--today YYYY-MM-DD] [--apply]\n",
          what);
  return CTL_USAGE;
}

/* today (or the database's UTC date) minus days, as YYYY-MM-DD. */
static int cutoff_of(PGconn *c, const char *today, long days, char out[11]) {
  char dbuf[16];
  snprintf(dbuf, sizeof dbuf, "%ld", days);
  const char *p[2] = {today, dbuf};
  PGresult *r = PQexecParams(
      c,
      "SELECT (coalesce($1::date, (now() AT TIME ZONE 'UTC')::date) - "
      "$2::integer)::text",
      2, NULL, p, NULL, NULL, 0);
  int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
  if (ok)
    snprintf(out, 11, "%.10s", PQgetvalue(r, 0, 0));
  else
    fprintf(stderr, "switchctl: retention: %s", PQresultErrorMessage(r));
  PQclear(r);
  return ok ? 0 : -1;
}

#define MAX_DAYS 4000

/* The journal's old days: the plan, and with apply the drops. */
static int journal_days(PGconn *c, const char *today, long days, int apply) {
  char cutoff[11], err[512];
  if (cutoff_of(c, today, days, cutoff))
    return CTL_FAILED;
  static db_retention_day_t d[MAX_DAYS];
  size_t n = 0;
  if (db_retention_days(c, cutoff, d, MAX_DAYS, &n, err, sizeof err)) {
    fprintf(stderr, "switchctl: retention: %s\n", err);
    return CTL_FAILED;
  }
  printf("journal retention: days before %s (%ld days) may be dropped\n",
         cutoff, days);
  size_t to_drop = 0, dropped = 0;
  int code = CTL_OK;
  for (size_t i = 0; i < n; i++) {
    printf("  %s: %s\n", d[i].date, db_retention_day_text(d[i].verdict));
    to_drop += d[i].verdict == DB_DAY_DROP;
  }
  for (size_t i = 0; apply && i < n; i++) {
    if (d[i].verdict != DB_DAY_DROP)
      continue;
    if (db_retention_drop_day(c, d[i].date, err, sizeof err) == 0) {
      printf("dropped the journal of %s\n", d[i].date);
      dropped++;
    } else {
      fprintf(stderr, "switchctl: retention: %s: %s\n", d[i].date, err);
      code = CTL_FAILED;
    }
  }
  if (!apply)
    printf("%zu day(s) to drop; nothing changed (add --apply)\n", to_drop);
  else
    printf("%zu day(s) dropped\n", dropped);
  return code;
}

int ctl_retention(const ctl_t *ctl, int argc, char **argv) {
  const char *label = "journal.pan", *today = NULL, *keep = NULL, *jkeep = NULL;
  int apply = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--apply") == 0)
      apply = 1;
    else if (i + 1 < argc && strcmp(a, "--keep-days") == 0)
      keep = argv[++i];
    else if (i + 1 < argc && strcmp(a, "--journal-keep-days") == 0)
      jkeep = argv[++i];
    else if (i + 1 < argc && strcmp(a, "--pan-data-key") == 0)
      label = argv[++i];
    else if (i + 1 < argc && strcmp(a, "--today") == 0)
      today = argv[++i];
    else
      return usage_error("unexpected argument");
  }
  char *end = NULL;
  long days = keep ? strtol(keep, &end, 10) : -1;
  if (keep && (!end || *end || days < 1 || days > 36600))
    return usage_error("--keep-days is a number of days from 1 to 36600");
  long jdays = jkeep ? strtol(jkeep, &end, 10) : -1;
  if (jkeep && (!end || *end || jdays < 1 || jdays > 36600))
    return usage_error("--journal-keep-days is a number of days from 1 to "
                       "36600");
  if (!keep && !jkeep)
    return usage_error("say --keep-days (PANs), --journal-keep-days (whole "
                       "days), or both");
  if (today && ctl_check_date(today) != 0)
    return usage_error("--today is a calendar date YYYY-MM-DD");
  if (!keep) {
    PGconn *c = ctl_connect(ctl);
    if (!c)
      return CTL_FAILED;
    int rc = journal_days(c, today, jdays, apply);
    PQfinish(c);
    return rc;
  }
  if (!ctl->hsm_keystore || !ctl->hsm_master_key)
    return usage_error("needs the PAN data key's store: --hsm-keystore and "
                       "--hsm-master-key (or SW_HSM_KEYSTORE, "
                       "SW_HSM_MASTER_KEY) before the command");
  PGconn *c = ctl_connect(ctl);
  if (!c)
    return CTL_FAILED;
  /* The cutoff, in the database's calendar arithmetic. */
  char cutoff[11];
  if (cutoff_of(c, today, days, cutoff)) {
    PQfinish(c);
    return CTL_FAILED;
  }

  uv_loop_t loop;
  uv_loop_init(&loop);
  hsm_config_t cfg = {.backend = "soft",
                      .keystore_path = ctl->hsm_keystore,
                      .master_key_path = ctl->hsm_master_key,
                      .audit = audit};
  hsm_t *h = NULL;
  char err[512] = "";
  int code = CTL_OK;
  static versions_t vs;
  memset(&vs, 0, sizeof vs);
  vs.label = label;
  hsm_key_info_t cur;
  if (hsm_open(&h, &loop, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "switchctl: retention: HSM adapter: %s\n", err);
    code = CTL_FAILED;
  } else if (hsm_key_info(h, label, &cur) != 0 || cur.usage != HSM_USAGE_DEK) {
    fprintf(stderr,
            "switchctl: retention: \"%s\" is not a data key (DEK) in the "
            "key store\n",
            label);
    code = CTL_FAILED;
  } else if (hsm_key_list(h, collect, &vs) != 0 || vs.overflow) {
    fprintf(stderr,
            "switchctl: retention: cannot list the versions of \"%s\"\n",
            label);
    code = CTL_FAILED;
  }
  static db_retention_item_t items[MAX_VERSIONS];
  if (code == CTL_OK && db_retention_plan(c, vs.v, vs.n, cur.version, cutoff,
                                          items, err, sizeof err) != 0) {
    fprintf(stderr, "switchctl: retention: %s\n", err);
    code = CTL_FAILED;
  }
  if (code == CTL_OK) {
    printf("retention of \"%s\": PANs of business dates before %s (%ld "
           "days) may go\n",
           label, cutoff, days);
    size_t to_destroy = 0;
    for (size_t i = 0; i < vs.n; i++) {
      const db_retention_item_t *it = &items[i];
      printf("  version %u: %lld row(s)%s%s%s%s: %s\n", it->version,
             (long long)it->rows, it->rows ? ", " : "", it->first_date,
             it->rows ? " to " : "", it->last_date,
             db_retention_verdict_text(it->verdict));
      to_destroy += it->verdict == DB_RET_DESTROY;
    }
    for (size_t i = 0; apply && i < vs.n; i++) {
      if (items[i].verdict != DB_RET_DESTROY)
        continue;
      int rc = hsm_key_destroy_version(h, label, items[i].version,
                                       "switchctl retention");
      if (rc) {
        fprintf(stderr, "switchctl: retention: destroying version %u: %s\n",
                items[i].version, hsm_strerror(rc));
        code = CTL_FAILED;
      }
    }
    if (!apply)
      printf("%zu version(s) to destroy; nothing changed (add --apply)\n",
             to_destroy);
    else if (code == CTL_OK)
      printf("%zu version(s) destroyed\n", to_destroy);
  }
  if (h)
    hsm_close(h);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  if (code == CTL_OK && jkeep)
    code = journal_days(c, today, jdays, apply);
  PQfinish(c);
  return code;
}
