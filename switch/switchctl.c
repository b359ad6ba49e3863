/*
 * switchctl.c — the operator's command line.
 *
 *   switchctl [GLOBAL OPTIONS] COMMAND [ARGS]
 *
 * Global options come before the command; each command parses its own
 * (ctl_*.c).  The connection string is --db, else $SW_DB_URL, else the
 * first line of the local cluster's var/pg/url (deploy/pg.sh url).  Exit
 * status: 0 done, 1 failed, 2 usage, 3 a check found a mismatch.
 */
#include "ctl.h"
#include "db.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SW_MIGRATIONS_DIR
#define SW_MIGRATIONS_DIR "db/migrations"
#endif
#ifndef SW_DB_URL_FILE
#define SW_DB_URL_FILE "var/pg/url"
#endif

static const struct {
  const char *name;
  int (*run)(const ctl_t *, int, char **);
  const char *help;
} commands[] = {
    {"migrate", ctl_migrate, "apply the database migrations not yet applied"},
    {"verify", ctl_verify,
     "--date D: check the journal's HMAC chains and settled totals"},
    {"settle", ctl_settle, "--date D: close a business date and settle it"},
    {"recon", ctl_recon, "--terminal T --batch B: terminal batch totals"},
    {"txn", ctl_txn, "--rrn R | --terminal T --stan S | --pan-stdin --date D"},
    {"saf", ctl_saf,
     "list | retry ID | stats | purge: the store-and-forward queue"},
    {"retention", ctl_retention,
     "--keep-days N [--apply]: destroy PAN key versions past retention"},
};

static void usage(FILE *f) {
  fprintf(f, "usage: switchctl [--db CONNSTR] [--migrations DIR] "
             "[--hsm-keystore F --hsm-master-key F] [--json] COMMAND ...\n\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
  fprintf(f,
          "\n  --db CONNSTR       libpq connection string (default: "
          "$SW_DB_URL,\n"
          "                     else the contents of %s)\n"
          "  --migrations DIR   migration files (default: %s)\n"
          "  --hsm-keystore F   soft HSM key store (default: "
          "$SW_HSM_KEYSTORE)\n"
          "  --hsm-master-key F its master key file (default: "
          "$SW_HSM_MASTER_KEY)\n"
          "  --chain-key L      HMAC key of the journal chain "
          "(default: journal.chain)\n"
          "  --pan-key L        HMAC key of the PAN hash (default: "
          "journal.pan_hash)\n"
          "  --json             one JSON object a line\n",
          SW_DB_URL_FILE, SW_MIGRATIONS_DIR);
}

/* Reads the first line of path into buf; 0 on success. */
static int read_url_file(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  char *ok = fgets(buf, (int)cap, f);
  fclose(f);
  if (!ok)
    return -1;
  buf[strcspn(buf, "\r\n")] = '\0';
  return buf[0] ? 0 : -1;
}

PGconn *ctl_connect(const ctl_t *ctl) {
  PGconn *c = PQconnectdb(ctl->db);
  if (PQstatus(c) != CONNECTION_OK) {
    const char *m = PQerrorMessage(c);
    fprintf(stderr,
            "switchctl: could not connect to the database: %s%s"
            "HINT:  start the local server with deploy/pg.sh start, or give "
            "the connection string with --db or SW_DB_URL\n",
            m, (*m && m[strlen(m) - 1] == '\n') ? "" : "\n");
    PQfinish(c);
    return NULL;
  }
  PGresult *r = PQexec(c, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'");
  PQclear(r);
  return c;
}

int ctl_check_date(const char *s) {
  int y, m, d;
  char tail;
  if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-' ||
      sscanf(s, "%4d-%2d-%2d%c", &y, &m, &d, &tail) != 3)
    return -1;
  for (int i = 0; i < 10; i++)
    if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
      return -1;
  static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (y < 2000 || y > 2999 || m < 1 || m > 12 || d < 1)
    return -1;
  int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return d <= mdays[m - 1] + (m == 2 && leap) ? 0 : -1;
}

int main(int argc, char **argv) {
  ctl_t ctl = {0};
  ctl.chain_key = "journal.chain";
  ctl.pan_key = "journal.pan_hash";
  int i = 1;
  for (; i < argc && argv[i][0] == '-'; i++) {
    const char *a = argv[i];
    static const char *const valued[] = {"--db",
                                         "--migrations",
                                         "--hsm-keystore",
                                         "--hsm-master-key",
                                         "--chain-key",
                                         "--pan-key",
                                         NULL};
    const char **slot[] = {&ctl.db,           &ctl.migrations,
                           &ctl.hsm_keystore, &ctl.hsm_master_key,
                           &ctl.chain_key,    &ctl.pan_key};
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return CTL_OK;
    }
    if (strcmp(a, "--json") == 0) {
      ctl.json = 1;
      continue;
    }
    int k = 0;
    for (; valued[k]; k++) {
      size_t n = strlen(valued[k]);
      if (strcmp(a, valued[k]) == 0) {
        if (i + 1 >= argc) {
          fprintf(stderr, "switchctl: %s needs a value\n", a);
          return CTL_USAGE;
        }
        *slot[k] = argv[++i];
        break;
      }
      if (strncmp(a, valued[k], n) == 0 && a[n] == '=') {
        *slot[k] = a + n + 1;
        break;
      }
    }
    if (!valued[k]) {
      fprintf(stderr, "switchctl: unknown option \"%s\"\n", a);
      usage(stderr);
      return CTL_USAGE;
    }
  }
  if (i >= argc) {
    usage(stderr);
    return CTL_USAGE;
  }
  size_t c = 0, nc = sizeof commands / sizeof commands[0];
  while (c < nc && strcmp(commands[c].name, argv[i]) != 0)
    c++;
  if (c == nc) {
    fprintf(stderr, "switchctl: unknown command \"%s\"\n", argv[i]);
    usage(stderr);
    return CTL_USAGE;
  }
  if (!ctl.migrations)
    ctl.migrations = SW_MIGRATIONS_DIR;
  if (!ctl.hsm_keystore)
    ctl.hsm_keystore = getenv("SW_HSM_KEYSTORE");
  if (!ctl.hsm_master_key)
    ctl.hsm_master_key = getenv("SW_HSM_MASTER_KEY");
  char urlbuf[2048];
  if (!ctl.db || !*ctl.db) {
    const char *env = getenv("SW_DB_URL");
    if (env && *env) {
      ctl.db = env;
    } else if (read_url_file(SW_DB_URL_FILE, urlbuf, sizeof urlbuf) == 0) {
      ctl.db = urlbuf;
    } else {
      fprintf(stderr,
              "switchctl: no database given and %s cannot be read: %s\n"
              "HINT:  run deploy/pg.sh init, or give --db CONNSTR or "
              "SW_DB_URL\n",
              SW_DB_URL_FILE, errno ? strerror(errno) : "empty file");
      return CTL_FAILED;
    }
  }
  return commands[c].run(&ctl, argc - i, argv + i);
}
