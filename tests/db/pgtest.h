/*
 * pgtest.h — a throwaway PostgreSQL 15 cluster for the database tests.
 *
 * pgt_setup() makes a cluster with deploy/pg.sh in a mkdtemp folder on a
 * free loopback port, applies db/migrations as switch_writer and fills
 * pgt_writer / pgt_reader (libpq connection strings).  The cluster is
 * always stopped and deleted: a guardian child process waits on a pipe
 * whose write end only this process holds, so however the test ends
 * (return, exit, failed assertion, crash, signal) the guardian sees EOF and
 * runs deploy/pg.sh stop and destroy.  pgt_setup() exits 77 (skipped) when
 * the PostgreSQL 15 server binaries are missing, 2 when the cluster cannot
 * be made.  Register such tests with RESOURCE_LOCK postgresql_cluster.
 */
#ifndef PGTEST_H
#define PGTEST_H

#include <libpq-fe.h>
#include <stddef.h>

extern char pgt_tmp[256];     /* the mkdtemp folder (for scratch files too) */
extern char pgt_pgdir[300];   /* SW_PG_DIR of the cluster */
extern char pgt_writer[1024]; /* conninfo as switch_writer */
extern char pgt_reader[1024]; /* conninfo as switch_reader */
extern int pgt_port;

/* name: a short word for the folder name.  migrate: apply db/migrations. */
void pgt_setup(const char *name, int migrate);
/* Stops and deletes the cluster now (also done at exit). */
void pgt_teardown(void);
/* Runs deploy/pg.sh ARGS for this cluster, output to pgt_tmp/pg.log;
 * returns its exit status. */
int pgt_pg(const char *args);
/* system(cmd) -> exit status, or -1. */
int pgt_sh(const char *cmd);

PGconn *pgt_connect(const char *conninfo); /* prints why on failure */
/* Runs sql; returns its status; copies SQLSTATE (6 bytes) and the message
 * when state / msg are not NULL. */
ExecStatusType pgt_exec(PGconn *c, const char *sql, char *state, char *msg,
                        size_t msgcap);
/* First column of the first row as a long long; -1 (and a message on
 * stderr) on error or NULL. */
long long pgt_ll(PGconn *c, const char *sql);
/* First column of the first row copied to out (empty on error/NULL). */
void pgt_str(PGconn *c, const char *sql, char *out, size_t cap);

#endif
