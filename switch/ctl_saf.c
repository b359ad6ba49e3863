/*
 * ctl_saf.c — switchctl saf: the store-and-forward queue for operators
 * (db/saf.h, docs/saf.md).
 *
 *   switchctl saf list [--state armed|live|acked|dead|disarmed] [--limit N]
 *   switchctl saf retry SAF_ID
 *   switchctl saf stats
 *
 * list prints a table (or, with --json, one JSON object a line), oldest
 * due first; retry puts a dead row back to live, due now; stats prints the
 * counts per state and the age of the oldest due and dead rows.  Exit
 * status: 0 done, 1 failed (database, no such row, row not dead), 2 usage.
 */
#include "ctl.h"
#include "saf.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SAF_LIST_DEFAULT 100

static void saf_usage(FILE *f) {
  fprintf(f, "usage: switchctl saf list [--state armed|live|acked|dead|"
             "disarmed] [--limit N]\n"
             "       switchctl saf retry SAF_ID\n"
             "       switchctl saf stats\n"
             "       switchctl saf purge --older-than-days N\n");
}

/* Parses a decimal in [lo, hi]; 0 if good. */
static int parse_long(const char *s, long lo, long hi, long *out) {
  if (!s || !*s || strlen(s) > 19)
    return -1;
  for (const char *p = s; *p; p++)
    if (*p < '0' || *p > '9')
      return -1;
  errno = 0;
  char *end;
  long long v = strtoll(s, &end, 10);
  if (errno || *end || v < lo || v > hi)
    return -1;
  *out = (long)v;
  return 0;
}

/* µs since the epoch as YYYY-MM-DDTHH:MM:SSZ; "-" for none. */
static const char *fmt_time(int64_t us, char *buf, size_t cap) {
  if (us == INT64_MIN) {
    snprintf(buf, cap, "-");
    return buf;
  }
  time_t t = (time_t)(us / 1000000);
  struct tm tm;
  if (!gmtime_r(&t, &tm) || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
    snprintf(buf, cap, "?");
  return buf;
}

/* Prints s as a JSON string (the queue's text columns are shape-checked,
 * but escape anyway). */
static void json_str(const char *s) {
  putchar('"');
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\')
      printf("\\%c", ch);
    else if (ch < 0x20)
      printf("\\u%04x", ch);
    else
      putchar(ch);
  }
  putchar('"');
}

static void json_time(const char *name, int64_t us) {
  printf(",\"%s\":", name);
  if (us == INT64_MIN) {
    printf("null");
  } else {
    char buf[32];
    json_str(fmt_time(us, buf, sizeof buf));
  }
}

static int print_row_json(const db_saf_row_t *w) {
  printf("{\"saf_id\":%" PRId64 ",\"business_date\":", w->saf_id);
  json_str(w->business_date);
  printf(",\"node_id\":%u,\"txn_id\":%" PRId64 ",\"kind\":", w->node_id,
         w->txn_id);
  json_str(w->kind);
  printf(",\"mti\":");
  json_str(w->mti);
  printf(",\"link_id\":");
  json_str(w->link_id);
  printf(",\"state\":");
  json_str(w->state);
  printf(",\"attempts\":%" PRId32 ",\"retries\":%" PRId32, w->attempts,
         w->retries);
  json_time("next_attempt_at", w->next_attempt_us);
  printf(",\"owner\":");
  json_str(w->owner);
  json_time("lease_until", w->lease_until_us);
  printf(",\"last_response_code\":");
  json_str(w->last_response_code);
  json_time("created_at", w->created_us);
  json_time("updated_at", w->updated_us);
  printf("}\n");
  return 0;
}

static int print_row(void *ctx, const db_saf_row_t *w) {
  const int *json = ctx;
  if (*json)
    return print_row_json(w);
  char next[32], lease[32];
  printf("%-8" PRId64 " %-10s %-5u %-16" PRId64 " %-8s %-4s %-8s %-8s %3" PRId32
         " %-20s %-16s %-20s %s\n",
         w->saf_id, w->business_date, w->node_id, w->txn_id, w->kind, w->mti,
         w->link_id[0] ? w->link_id : "-", w->state, w->attempts,
         fmt_time(w->next_attempt_us, next, sizeof next),
         w->owner[0] ? w->owner : "-",
         fmt_time(w->lease_until_us, lease, sizeof lease),
         w->last_response_code[0] ? w->last_response_code : "-");
  return 0;
}

static int saf_list(const ctl_t *ctl, PGconn *c, const char *state,
                    long limit) {
  if (!ctl->json)
    printf("%-8s %-10s %-5s %-16s %-8s %-4s %-8s %-8s %3s %-20s %-16s %-20s "
           "%s\n",
           "SAF_ID", "DATE", "NODE", "TXN_ID", "KIND", "MTI", "LINK", "STATE",
           "TRY", "NEXT_ATTEMPT", "OWNER", "LEASE_UNTIL", "RC");
  char err[512];
  int json = ctl->json;
  int rc = db_saf_list(c, state, limit, print_row, &json, err, sizeof err);
  if (rc) {
    fprintf(stderr, "switchctl: saf list: %s\n", err);
    return CTL_FAILED;
  }
  return CTL_OK;
}

static int saf_stats(const ctl_t *ctl, PGconn *c) {
  db_saf_stats_t s;
  char err[512];
  int rc = db_saf_stats(c, &s, err, sizeof err);
  if (rc) {
    fprintf(stderr, "switchctl: saf stats: %s\n", err);
    return CTL_FAILED;
  }
  int64_t due_age = s.oldest_due_us == INT64_MIN
                        ? -1
                        : (s.now_us - s.oldest_due_us) / 1000000;
  int64_t dead_age = s.oldest_dead_us == INT64_MIN
                         ? -1
                         : (s.now_us - s.oldest_dead_us) / 1000000;
  if (ctl->json) {
    printf("{\"armed\":%" PRId64 ",\"live\":%" PRId64 ",\"acked\":%" PRId64
           ",\"dead\":%" PRId64 ",\"disarmed\":%" PRId64 ",\"due\":%" PRId64
           ",\"oldest_due_age_s\":%" PRId64 ",\"oldest_dead_age_s\":%" PRId64
           "}\n",
           s.armed, s.live, s.acked, s.dead, s.disarmed, s.due, due_age,
           dead_age);
    return CTL_OK;
  }
  printf("armed     %" PRId64 "\nlive      %" PRId64 "\nacked     %" PRId64
         "\ndead      %" PRId64 "\ndisarmed  %" PRId64 "\ndue now   %" PRId64
         "\n",
         s.armed, s.live, s.acked, s.dead, s.disarmed, s.due);
  if (due_age >= 0)
    printf("oldest due row waiting %" PRId64 " s\n", due_age);
  if (dead_age >= 0)
    printf("oldest dead row dead for %" PRId64 " s\n", dead_age);
  return CTL_OK;
}

static int saf_retry(PGconn *c, long id) {
  char err[512];
  int rc = db_saf_retry(c, id, err, sizeof err);
  if (rc) {
    fprintf(stderr, "switchctl: saf retry: %s\n", err);
    return CTL_FAILED;
  }
  printf("SAF row %ld is live again, due now\n", id);
  return CTL_OK;
}

static int saf_purge(PGconn *c, long days) {
  char err[512];
  int64_t n = 0;
  int rc = db_saf_purge(c, (int)days, &n, err, sizeof err);
  if (rc) {
    fprintf(stderr, "switchctl: saf purge: %s\n", err);
    return CTL_FAILED;
  }
  printf("purged %lld finished SAF row(s) (acked or disarmed) last changed "
         "more than %ld day(s) ago\n",
         (long long)n, days);
  return CTL_OK;
}

/* Options of saf list; CTL_OK or CTL_USAGE. */
static int parse_list(int argc, char **argv, const char **state, long *limit) {
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if ((strcmp(a, "--state") == 0 || strcmp(a, "--limit") == 0) &&
        i + 1 >= argc) {
      fprintf(stderr, "switchctl: saf list: %s needs a value\n", a);
      return CTL_USAGE;
    }
    if (strcmp(a, "--state") == 0) {
      *state = argv[++i];
      if (strcmp(*state, "armed") && strcmp(*state, "live") &&
          strcmp(*state, "acked") && strcmp(*state, "dead") &&
          strcmp(*state, "disarmed")) {
        fprintf(stderr, "switchctl: saf list: unknown state \"%s\"\n", *state);
        return CTL_USAGE;
      }
    } else if (strcmp(a, "--limit") == 0) {
      if (parse_long(argv[++i], 1, 100000, limit)) {
        fprintf(stderr, "switchctl: saf list: --limit must be 1..100000\n");
        return CTL_USAGE;
      }
    } else {
      fprintf(stderr, "switchctl: saf list: unknown argument \"%s\"\n", a);
      return CTL_USAGE;
    }
  }
  return CTL_OK;
}

int ctl_saf(const ctl_t *ctl, int argc, char **argv) {
  if (argc < 2) {
    saf_usage(stderr);
    return CTL_USAGE;
  }
  const char *sub = argv[1];
  const char *state = NULL;
  long limit = SAF_LIST_DEFAULT, id = 0;
  if (strcmp(sub, "list") == 0) {
    if (parse_list(argc, argv, &state, &limit) != CTL_OK) {
      saf_usage(stderr);
      return CTL_USAGE;
    }
  } else if (strcmp(sub, "retry") == 0) {
    if (argc != 3 || parse_long(argv[2], 1, LONG_MAX, &id)) {
      fprintf(stderr, "switchctl: saf retry takes one SAF id (a positive "
                      "number)\n");
      return CTL_USAGE;
    }
  } else if (strcmp(sub, "purge") == 0) {
    if (argc != 4 || strcmp(argv[2], "--older-than-days") != 0 ||
        parse_long(argv[3], 1, 36600, &id)) {
      fprintf(stderr, "switchctl: saf purge --older-than-days N (1 to "
                      "36600)\n");
      return CTL_USAGE;
    }
  } else if (strcmp(sub, "stats") == 0) {
    if (argc != 2) {
      fprintf(stderr, "switchctl: saf stats takes no arguments\n");
      return CTL_USAGE;
    }
  } else {
    fprintf(stderr, "switchctl: saf: unknown subcommand \"%s\"\n", sub);
    saf_usage(stderr);
    return CTL_USAGE;
  }
  PGconn *c = ctl_connect(ctl);
  if (!c)
    return CTL_FAILED;
  int rc;
  if (strcmp(sub, "list") == 0)
    rc = saf_list(ctl, c, state, limit);
  else if (strcmp(sub, "retry") == 0)
    rc = saf_retry(c, id);
  else if (strcmp(sub, "purge") == 0)
    rc = saf_purge(c, id);
  else
    rc = saf_stats(ctl, c);
  PQfinish(c);
  return rc;
}
