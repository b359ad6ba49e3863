/*
 * switchctl.c — the operator's command line.
 *
 *   switchctl [--db CONNSTR] [--migrations DIR] migrate
 *
 * migrate applies the numbered SQL files of DIR not yet applied (db.h) and
 * prints one line per file, or "schema up to date".  The connection string
 * is --db, else $SW_DB_URL, else the first line of the local cluster's
 * var/pg/url (deploy/pg.sh url).  Exit status: 0 done, 1 failed, 2 usage.
 */
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

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

static void usage(FILE *f) {
  fprintf(f,
          "usage: switchctl [--db CONNSTR] [--migrations DIR] migrate\n"
          "\n"
          "  migrate            apply the database migrations not yet applied\n"
          "  --db CONNSTR       libpq connection string (default: $SW_DB_URL,\n"
          "                     else the contents of %s)\n"
          "  --migrations DIR   migration files (default: %s)\n",
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

static void print_applied(void *ctx, int version, const char *name) {
  (void)ctx;
  printf("applied %04d %s\n", version, name);
  fflush(stdout);
}

static int cmd_migrate(const char *conninfo, const char *dir) {
  PGconn *c = PQconnectdb(conninfo);
  if (PQstatus(c) != CONNECTION_OK) {
    const char *m = PQerrorMessage(c);
    fprintf(stderr,
            "switchctl: could not connect to the database: %s%s"
            "HINT:  start the local server with deploy/pg.sh start, or give "
            "the connection string with --db or SW_DB_URL\n",
            m, (*m && m[strlen(m) - 1] == '\n') ? "" : "\n");
    PQfinish(c);
    return EXIT_FAILED;
  }
  char err[4096];
  int applied = 0;
  int rc =
      db_migrate_notify(c, dir, print_applied, NULL, &applied, err, sizeof err);
  if (rc) {
    fprintf(stderr, "switchctl: migrate: %s\n", err[0] ? err : db_strerror(rc));
    if (applied)
      fprintf(stderr,
              "switchctl: %d migration(s) were applied before the "
              "error and stay applied\n",
              applied);
    PQfinish(c);
    return EXIT_FAILED;
  }
  PGresult *r = PQexec(
      c, "SELECT coalesce(max(version), 0) FROM switch.schema_migrations");
  const char *ver =
      PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "?";
  if (applied == 0)
    printf("schema up to date (version %s)\n", ver);
  else
    printf("schema now at version %s (%d migration%s applied)\n", ver, applied,
           applied == 1 ? "" : "s");
  PQclear(r);
  PQfinish(c);
  return EXIT_OK;
}

int main(int argc, char **argv) {
  const char *db = NULL, *dir = NULL, *cmd = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      usage(stdout);
      return EXIT_OK;
    } else if (strcmp(a, "--db") == 0 || strcmp(a, "--migrations") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "switchctl: %s needs a value\n", a);
        usage(stderr);
        return EXIT_USAGE;
      }
      if (a[2] == 'd')
        db = argv[++i];
      else
        dir = argv[++i];
    } else if (strncmp(a, "--db=", 5) == 0) {
      db = a + 5;
    } else if (strncmp(a, "--migrations=", 13) == 0) {
      dir = a + 13;
    } else if (a[0] == '-') {
      fprintf(stderr, "switchctl: unknown option \"%s\"\n", a);
      usage(stderr);
      return EXIT_USAGE;
    } else if (!cmd) {
      cmd = a;
    } else {
      fprintf(stderr, "switchctl: unexpected argument \"%s\"\n", a);
      usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (!cmd) {
    usage(stderr);
    return EXIT_USAGE;
  }
  if (strcmp(cmd, "migrate") != 0) {
    fprintf(stderr, "switchctl: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
  }
  if (!dir)
    dir = SW_MIGRATIONS_DIR;
  char urlbuf[2048];
  if (!db || !*db) {
    const char *env = getenv("SW_DB_URL");
    if (env && *env) {
      db = env;
    } else if (read_url_file(SW_DB_URL_FILE, urlbuf, sizeof urlbuf) == 0) {
      db = urlbuf;
    } else {
      fprintf(stderr,
              "switchctl: no database given and %s cannot be read: %s\n"
              "HINT:  run deploy/pg.sh init, or give --db CONNSTR or "
              "SW_DB_URL\n",
              SW_DB_URL_FILE, errno ? strerror(errno) : "empty file");
      return EXIT_FAILED;
    }
  }
  return cmd_migrate(db, dir);
}
