/*
 * pgtest.c — the throwaway cluster of pgtest.h.
 */
#include "pgtest.h"

#include "db.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SW_SOURCE_DIR
#error "SW_SOURCE_DIR must name the source tree"
#endif

char pgt_tmp[256];
char pgt_pgdir[300];
char pgt_writer[1024];
char pgt_reader[1024];
int pgt_port;

static int g_guard_fd = -1;
static pid_t g_guard_pid = -1;

int pgt_sh(const char *cmd) {
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int pgt_pg(const char *args) {
  char cmd[1400];
  snprintf(cmd, sizeof cmd,
           "'%s/deploy/pg.sh' %s >>'%s/pg.log' 2>&1 </dev/null", SW_SOURCE_DIR,
           args, pgt_tmp);
  return pgt_sh(cmd);
}

static int free_port(void) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t l = sizeof a;
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(s, (struct sockaddr *)&a, &l) != 0) {
    if (s >= 0)
      close(s);
    return -1;
  }
  close(s);
  return ntohs(a.sin_port);
}

static void start_guardian(void) {
  int p[2];
  if (pipe(p) != 0) {
    perror("pipe");
    exit(2);
  }
  /* Close-on-exec: a server started by pg.sh must not inherit the write
   * end, or the guardian would wait for the server it is meant to stop. */
  fcntl(p[0], F_SETFD, FD_CLOEXEC);
  fcntl(p[1], F_SETFD, FD_CLOEXEC);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(2);
  }
  if (pid == 0) {
    close(p[1]);
    char b;
    while (read(p[0], &b, 1) > 0) {
    }
    pgt_pg("stop");
    pgt_pg("destroy --force");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", pgt_tmp);
    _exit(pgt_sh(cmd) == 0 ? 0 : 1);
  }
  close(p[0]);
  g_guard_fd = p[1];
  g_guard_pid = pid;
}

void pgt_teardown(void) {
  if (g_guard_fd >= 0) {
    close(g_guard_fd);
    g_guard_fd = -1;
    int st;
    waitpid(g_guard_pid, &st, 0);
  }
}

static int have_server(void) {
  return access("/usr/lib/postgresql/15/bin/initdb", X_OK) == 0 &&
         access("/usr/lib/postgresql/15/bin/pg_ctl", X_OK) == 0;
}

void pgt_setup(const char *name, int migrate) {
  if (!have_server()) {
    fprintf(stderr, "PostgreSQL 15 server binaries missing: skipped\n");
    exit(77);
  }
  snprintf(pgt_tmp, sizeof pgt_tmp, "/tmp/sw-test-%s-XXXXXX", name);
  if (!mkdtemp(pgt_tmp)) {
    perror("mkdtemp");
    exit(2);
  }
  /* As root the server runs as swpg, which must reach SW_PG_DIR. */
  chmod(pgt_tmp, 0755);
  snprintf(pgt_pgdir, sizeof pgt_pgdir, "%s/pg", pgt_tmp);
  pgt_port = free_port();
  if (pgt_port <= 0) {
    fprintf(stderr, "no free port\n");
    exit(2);
  }
  char pbuf[16];
  snprintf(pbuf, sizeof pbuf, "%d", pgt_port);
  static const char *const clear[] = {
      "PGHOST",     "PGHOSTADDR",          "PGPORT",     "PGUSER",
      "PGDATABASE", "PGPASSWORD",          "PGPASSFILE", "PGSERVICE",
      "PGOPTIONS",  "SW_PG_FALLBACK_BASE", "SW_DB_URL",  NULL};
  for (int i = 0; clear[i]; i++)
    unsetenv(clear[i]);
  setenv("SW_PG_DIR", pgt_pgdir, 1);
  setenv("SW_PG_PORT", pbuf, 1);
  start_guardian();
  if (pgt_pg("init") != 0 || pgt_pg("start") != 0) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cat '%s/pg.log' >&2", pgt_tmp);
    pgt_sh(cmd);
    fprintf(stderr, "could not make the test cluster\n");
    exit(2);
  }
  snprintf(pgt_writer, sizeof pgt_writer,
           "host=127.0.0.1 port=%d dbname=switch user=switch_writer "
           "passfile=%s/pgpass connect_timeout=10",
           pgt_port, pgt_pgdir);
  snprintf(pgt_reader, sizeof pgt_reader,
           "host=127.0.0.1 port=%d dbname=switch user=switch_reader "
           "passfile=%s/pgpass connect_timeout=10",
           pgt_port, pgt_pgdir);
  if (migrate) {
    PGconn *c = pgt_connect(pgt_writer);
    char err[1024];
    int rc = PQstatus(c) == CONNECTION_OK
                 ? db_migrate(c, SW_SOURCE_DIR "/db/migrations", NULL, err,
                              sizeof err)
                 : DB_E_CONNECT;
    PQfinish(c);
    if (rc != 0) {
      fprintf(stderr, "migrate: %s\n",
              rc == DB_E_CONNECT ? "no connection" : err);
      exit(2);
    }
  }
}

PGconn *pgt_connect(const char *conninfo) {
  PGconn *c = PQconnectdb(conninfo);
  if (PQstatus(c) != CONNECTION_OK)
    fprintf(stderr, "connect: %s", PQerrorMessage(c));
  return c;
}

ExecStatusType pgt_exec(PGconn *c, const char *sql, char *state, char *msg,
                        size_t msgcap) {
  PGresult *r = PQexec(c, sql);
  ExecStatusType st = PQresultStatus(r);
  if (state) {
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(state, 6, "%s", s ? s : "");
  }
  if (msg && msgcap)
    snprintf(msg, msgcap, "%s", PQresultErrorMessage(r));
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && !state && !msg)
    fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
  return st;
}

long long pgt_ll(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  long long v = -1;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 &&
      !PQgetisnull(r, 0, 0))
    v = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  else
    fprintf(stderr, "query failed: %s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
  return v;
}

void pgt_str(PGconn *c, const char *sql, char *out, size_t cap) {
  PGresult *r = PQexec(c, sql);
  if (cap)
    out[0] = '\0';
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 &&
      !PQgetisnull(r, 0, 0))
    snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
  else
    fprintf(stderr, "query failed: %s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
}
