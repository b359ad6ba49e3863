/*
 * ctl_migrate.c — switchctl migrate: applies the numbered SQL files not
 * yet applied (db.h) and prints one line per file, or "schema up to date".
 */
#include "ctl.h"
#include "db.h"

#include <stdio.h>
#include <string.h>

static void print_applied(void *ctx, int version, const char *name) {
  (void)ctx;
  printf("applied %04d %s\n", version, name);
  fflush(stdout);
}

int ctl_migrate(const ctl_t *ctl, int argc, char **argv) {
  (void)argv;
  if (argc > 1) {
    fprintf(stderr, "switchctl: migrate takes no arguments\n");
    return CTL_USAGE;
  }
  PGconn *c = ctl_connect(ctl);
  if (!c)
    return CTL_FAILED;
  char err[4096];
  int applied = 0;
  int rc = db_migrate_notify(c, ctl->migrations, print_applied, NULL, &applied,
                             err, sizeof err);
  if (rc) {
    fprintf(stderr, "switchctl: migrate: %s\n", err[0] ? err : db_strerror(rc));
    if (applied)
      fprintf(stderr,
              "switchctl: %d migration(s) were applied before the "
              "error and stay applied\n",
              applied);
    PQfinish(c);
    return CTL_FAILED;
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
  return CTL_OK;
}
