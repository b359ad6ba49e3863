/*
 * test_migrate.c — db_migrate and the schema of db/migrations on a
 * throwaway PostgreSQL 15 cluster (tests/db/pgtest.h: deploy/pg.sh in a
 * mkdtemp folder on a free port, always stopped and deleted, skipped with
 * 77 when the PostgreSQL 15 server binaries are missing).  The schema is
 * applied by the tests themselves, from a copy of db/migrations they edit.
 */
#include "db.h"
#include "pgtest.h"
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef SW_SOURCE_DIR
#error "SW_SOURCE_DIR must name the source tree"
#endif

static char g_migs[300]; /* a copy of db/migrations the tests may edit */
static int g_nfiles;     /* migration files in db/migrations */
#define g_tmp pgt_tmp
#define g_writer pgt_writer
#define g_reader pgt_reader
#define pg pgt_pg
#define sh pgt_sh

/* Copies db/migrations to g_migs (again: undoes a test's edits). */
static void copy_migrations(void) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "rm -rf '%s' && mkdir '%s' && cp '%s'/db/migrations/*.sql '%s'/",
           g_migs, g_migs, SW_SOURCE_DIR, g_migs);
  if (sh(cmd) != 0) {
    fprintf(stderr, "cannot copy the migrations\n");
    exit(2);
  }
}

static int count_files(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "ls '%s'/db/migrations/[0-9][0-9][0-9][0-9]_*.sql",
           SW_SOURCE_DIR);
  FILE *f = popen(cmd, "r");
  int n = 0;
  char line[512];
  while (f && fgets(line, sizeof line, f))
    n++;
  if (f)
    pclose(f);
  return n;
}

static void setup_cluster(void) {
  pgt_setup("migrate", 0);
  snprintf(g_migs, sizeof g_migs, "%s/migrations", pgt_tmp);
  g_nfiles = count_files();
  copy_migrations();
}

/* Drops schema switch and lets deploy/pg.sh init make it again, with its
 * privileges: the database as before the first migration. */
static void reset_schema(void) {
  CU_ASSERT_FATAL(pg("psql --admin -q -v ON_ERROR_STOP=1 -c "
                     "'DROP SCHEMA IF EXISTS switch CASCADE'") == 0);
  CU_ASSERT_FATAL(pg("init") == 0);
}

static PGconn *connect_as(const char *conninfo) {
  PGconn *c = PQconnectdb(conninfo);
  if (PQstatus(c) != CONNECTION_OK)
    fprintf(stderr, "connect: %s", PQerrorMessage(c));
  return c;
}

/* One statement; returns its status and copies SQLSTATE and message. */
static ExecStatusType q(PGconn *c, const char *sql, char *state, char *msg,
                        size_t msgcap) {
  PGresult *r = PQexec(c, sql);
  ExecStatusType st = PQresultStatus(r);
  if (state) {
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(state, 6, "%s", s ? s : "");
  }
  if (msg)
    snprintf(msg, msgcap, "%s", PQresultErrorMessage(r));
  PQclear(r);
  return st;
}

/* First column of the first row as a long (or -1). */
static long q_long(PGconn *c, const char *sql) {
  PGresult *r = PQexec(c, sql);
  long v = -1;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 &&
      !PQgetisnull(r, 0, 0))
    v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
  else
    fprintf(stderr, "query failed: %s: %s", sql, PQresultErrorMessage(r));
  PQclear(r);
  return v;
}

/* Number of rows an INSERT/UPDATE changed, or -1 on error. */
static long q_rows(PGconn *c, const char *sql, char *state) {
  PGresult *r = PQexec(c, sql);
  long n = -1;
  if (PQresultStatus(r) == PGRES_COMMAND_OK)
    n = strtol(PQcmdTuples(r), NULL, 10);
  if (state) {
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    snprintf(state, 6, "%s", s ? s : "");
  }
  PQclear(r);
  return n;
}

static int migrate_dir(const char *dir, int *applied, char *err, size_t cap) {
  PGconn *c = connect_as(g_writer);
  int rc = db_migrate(c, dir, applied, err, cap);
  PQfinish(c);
  return rc;
}

/* ------------------------------------------------------------------------ */

static void test_migrate_applies_every_file_from_zero(void) {
  reset_schema();
  char err[4096] = "";
  int applied = -1;
  int rc = migrate_dir(g_migs, &applied, err, sizeof err);
  if (rc)
    fprintf(stderr, "\n%s\n", err);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT(g_nfiles >= 2);
  CU_ASSERT_EQUAL(applied, g_nfiles);
  PGconn *c = connect_as(g_writer);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM switch.schema_migrations"),
                  g_nfiles);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM switch.schema_migrations "
                            "WHERE sha256 ~ '^[0-9a-f]{64}$'"),
                  g_nfiles);
  CU_ASSERT_EQUAL(
      q_long(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'switch' "
                "AND tablename IN ('currencies', 'merchants', 'terminals', "
                "'issuers', 'issuer_endpoints', 'bin_routes', 'saf', "
                "'leases')"),
      8);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM pg_partitioned_table p "
                            "WHERE p.partrelid = "
                            "'switch.journal_event'::regclass"),
                  1);
  PQfinish(c);
}

static void test_migrate_again_applies_nothing(void) {
  char err[4096] = "";
  int applied = -1;
  CU_ASSERT_EQUAL(migrate_dir(g_migs, &applied, err, sizeof err), 0);
  CU_ASSERT_EQUAL(applied, 0);
}

static void test_migrate_refuses_a_changed_applied_file(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "echo '-- edited' >>'%s/0001_reference_data.sql'",
           g_migs);
  CU_ASSERT_FATAL(sh(cmd) == 0);
  char err[4096] = "";
  int applied = -1;
  int rc = migrate_dir(g_migs, &applied, err, sizeof err);
  CU_ASSERT_EQUAL(rc, DB_E_CHANGED);
  CU_ASSERT_EQUAL(applied, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "0001_reference_data.sql"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "has changed"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "HINT"));
  copy_migrations();
  CU_ASSERT_EQUAL(migrate_dir(g_migs, &applied, err, sizeof err), 0);
}

static void test_migrate_refuses_bad_names_and_missing_files(void) {
  char cmd[600], err[4096] = "";
  int applied = -1;
  /* A file that looks numbered but is misnamed is an error, not skipped. */
  snprintf(cmd, sizeof cmd, "touch '%s/0003-oops.sql'", g_migs);
  CU_ASSERT_FATAL(sh(cmd) == 0);
  CU_ASSERT_EQUAL(migrate_dir(g_migs, &applied, err, sizeof err),
                  DB_E_BAD_NAME);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "0003-oops.sql"));
  copy_migrations();
  /* An applied migration whose file is gone: an older release. */
  snprintf(cmd, sizeof cmd, "rm '%s/0002_journal.sql'", g_migs);
  CU_ASSERT_FATAL(sh(cmd) == 0);
  CU_ASSERT_EQUAL(migrate_dir(g_migs, &applied, err, sizeof err), DB_E_MISSING);
  copy_migrations();
  /* A failing file rolls back whole and stops the run. */
  snprintf(cmd, sizeof cmd,
           "printf 'CREATE TABLE switch.t9 (x int);\\nSELECT 1/0;\\n' "
           ">'%s/0900_fails.sql'",
           g_migs);
  CU_ASSERT_FATAL(sh(cmd) == 0);
  CU_ASSERT_EQUAL(migrate_dir(g_migs, &applied, err, sizeof err), DB_E_SQL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "0900_fails.sql"));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "22012"));
  PGconn *c = connect_as(g_writer);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM pg_tables WHERE "
                            "schemaname = 'switch' AND tablename = 't9'"),
                  0);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM switch.schema_migrations"),
                  g_nfiles);
  PQfinish(c);
  copy_migrations();
  CU_ASSERT_EQUAL(
      migrate_dir("/nonexistent/migrations", &applied, err, sizeof err),
      DB_E_IO);
  CU_ASSERT_STRING_EQUAL(db_err_name(DB_E_CHANGED), "CHANGED");
  CU_ASSERT_STRING_EQUAL(db_strerror(0), "success");
}

typedef struct {
  int rc, applied;
  char err[2048];
} mig_run_t;

static void *migrate_thread(void *arg) {
  mig_run_t *m = arg;
  m->rc = migrate_dir(g_migs, &m->applied, m->err, sizeof m->err);
  return NULL;
}

static void test_concurrent_migrators_apply_each_file_once(void) {
  reset_schema();
  mig_run_t runs[4];
  pthread_t th[4];
  memset(runs, 0, sizeof runs);
  for (int i = 0; i < 4; i++)
    CU_ASSERT_FATAL(pthread_create(&th[i], NULL, migrate_thread, &runs[i]) ==
                    0);
  int total = 0;
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    if (runs[i].rc)
      fprintf(stderr, "\nmigrator %d: %s\n", i, runs[i].err);
    CU_ASSERT_EQUAL(runs[i].rc, 0);
    total += runs[i].applied;
  }
  CU_ASSERT_EQUAL(total, g_nfiles);
  PGconn *c = connect_as(g_writer);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM switch.schema_migrations"),
                  g_nfiles);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM switch.currencies "
                            "WHERE alpha_code = 'USD'"),
                  1);
  PQfinish(c);
}

static void test_partition_creation_is_idempotent(void) {
  PGconn *c = connect_as(g_writer);
  CU_ASSERT_EQUAL(q_long(c, "SELECT switch.ensure_journal_partition("
                            "'2026-11-23')::int"),
                  1);
  CU_ASSERT_EQUAL(q_long(c, "SELECT switch.ensure_journal_partition("
                            "'2026-11-23')::int"),
                  0);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM pg_inherits WHERE "
                            "inhparent = 'switch.journal_event'::regclass"),
                  1);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM pg_class WHERE relname = "
                            "'journal_event_20261123' AND relnamespace = "
                            "'switch'::regnamespace"),
                  1);
  PQfinish(c);
}

/* An event row for business date D with event number N and amount/sign. */
static void event_sql(char *out, size_t cap, const char *date, int event_no,
                      const char *amount, const char *sign,
                      const char *suffix) {
  snprintf(out, cap,
           "INSERT INTO switch.journal_event (business_date, node_id, "
           "txn_id, event_no, event, state, mti, processing_code, "
           "amount_minor, sign, currency, stan, rrn, terminal_id, "
           "merchant_id, pan_masked, pan_hash, pan_hash_key_ver, chain_seq, "
           "chain_hmac, chain_key_ver) VALUES "
           "('%s', 1, 281474976710657, %d, 'received', 'received', '0200', "
           "'000000', %s, %s, '840', '000123', '632701000001', 'TERM0001', "
           "'MERCHANT000001', '411111******1111', "
           "sha256('4111111111111111'), 1, %d, sha256('x'), 1) %s",
           date, event_no, amount, sign, event_no + 1, suffix);
}

static void test_insert_into_a_day_without_partition_fails(void) {
  PGconn *c = connect_as(g_writer);
  char sql[1024], state[6], msg[512];
  event_sql(sql, sizeof sql, "2001-01-01", 0, "1000", "'D'", "");
  CU_ASSERT_EQUAL(q(c, sql, state, msg, sizeof msg), PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "23514");
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "no partition"));
  PQfinish(c);
}

static void test_idempotency_key_drops_duplicates(void) {
  PGconn *c = connect_as(g_writer);
  char sql[1024];
  event_sql(sql, sizeof sql, "2026-11-23", 0, "1000", "'D'",
            "ON CONFLICT DO NOTHING");
  CU_ASSERT_EQUAL(q_rows(c, sql, NULL), 1);
  CU_ASSERT_EQUAL(q_rows(c, sql, NULL), 0);
  /* Without ON CONFLICT the key refuses it outright. */
  char state[6];
  event_sql(sql, sizeof sql, "2026-11-23", 0, "1000", "'D'", "");
  CU_ASSERT_EQUAL(q_rows(c, sql, state), -1);
  CU_ASSERT_STRING_EQUAL(state, "23505");
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM switch.journal_event"), 1);
  PQfinish(c);
}

static void test_writer_cannot_update_or_delete_journal_rows(void) {
  PGconn *c = connect_as(g_writer);
  char state[6], msg[512];
  CU_ASSERT_EQUAL(q(c, "UPDATE switch.journal_event SET amount_minor = 1",
                    state, msg, sizeof msg),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "42501");
  CU_ASSERT_EQUAL(
      q(c, "DELETE FROM switch.journal_event", state, msg, sizeof msg),
      PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "42501");
  /* Straight at the partition, too. */
  CU_ASSERT_EQUAL(
      q(c, "DELETE FROM switch.journal_event_20261123", state, msg, sizeof msg),
      PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "42501");
  CU_ASSERT_EQUAL(
      q(c, "TRUNCATE switch.journal_event_20261123", state, msg, sizeof msg),
      PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "42501");
  /* The owner can grant itself the privileges back; the trigger still
   * refuses. */
  CU_ASSERT_EQUAL(q(c,
                    "GRANT UPDATE, DELETE, TRUNCATE ON "
                    "switch.journal_event, switch.journal_event_20261123 TO "
                    "switch_writer",
                    NULL, NULL, 0),
                  PGRES_COMMAND_OK);
  CU_ASSERT_EQUAL(q(c, "UPDATE switch.journal_event SET amount_minor = 1",
                    state, msg, sizeof msg),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "append-only"));
  CU_ASSERT_EQUAL(
      q(c, "DELETE FROM switch.journal_event_20261123", state, msg, sizeof msg),
      PGRES_FATAL_ERROR);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "append-only"));
  CU_ASSERT_EQUAL(
      q(c, "TRUNCATE switch.journal_event_20261123", state, msg, sizeof msg),
      PGRES_FATAL_ERROR);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "append-only"));
  CU_ASSERT_EQUAL(q(c, "TRUNCATE switch.journal_event", state, msg, sizeof msg),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_PTR_NOT_NULL(strstr(msg, "append-only"));
  q(c,
    "REVOKE UPDATE, DELETE, TRUNCATE ON switch.journal_event, "
    "switch.journal_event_20261123 FROM switch_writer",
    NULL, NULL, 0);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM switch.journal_event "
                            "WHERE amount_minor = 1000"),
                  1);
  PQfinish(c);
}

static void test_reader_selects_but_cannot_insert(void) {
  PGconn *c = connect_as(g_reader);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM switch.journal_event"), 1);
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM switch.schema_migrations"),
                  g_nfiles);
  static const char *const tables[] = {
      "currencies", "merchants",        "terminals",
      "issuers",    "issuer_endpoints", "bin_routes",
      "saf",        "leases",           "journal_event_20261123",
      NULL};
  for (int i = 0; tables[i]; i++) {
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM switch.%s", tables[i]);
    CU_ASSERT(q_long(c, sql) >= 0);
  }
  char sql[1024], state[6];
  event_sql(sql, sizeof sql, "2026-11-23", 5, "1000", "'D'", "");
  CU_ASSERT_EQUAL(q_rows(c, sql, state), -1);
  CU_ASSERT_STRING_EQUAL(state, "25006"); /* read-only transaction */
  CU_ASSERT_EQUAL(
      q(c, "SET default_transaction_read_only = off", NULL, NULL, 0),
      PGRES_COMMAND_OK);
  CU_ASSERT_EQUAL(q_rows(c, sql, state), -1);
  CU_ASSERT_STRING_EQUAL(state, "42501"); /* permission denied */
  CU_ASSERT_EQUAL(q_rows(c,
                         "INSERT INTO switch.currencies VALUES ('999', 'XXX', "
                         "0, 'no')",
                         state),
                  -1);
  CU_ASSERT_STRING_EQUAL(state, "42501");
  CU_ASSERT_EQUAL(q(c, "SELECT switch.ensure_journal_partition('2026-11-24')",
                    state, NULL, 0),
                  PGRES_FATAL_ERROR);
  CU_ASSERT_STRING_EQUAL(state, "42501");
  PQfinish(c);
}

static void test_currency_exponents_are_seeded(void) {
  PGconn *c = connect_as(g_reader);
  static const struct {
    const char *num, *alpha;
    int exp;
  } want[] = {{"840", "USD", 2}, {"978", "EUR", 2}, {"826", "GBP", 2},
              {"392", "JPY", 0}, {"414", "KWD", 3}, {"048", "BHD", 3},
              {"756", "CHF", 2}, {"410", "KRW", 0}, {"990", "CLF", 4}};
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT exponent FROM switch.currencies WHERE numeric_code = "
             "'%s' AND alpha_code = '%s'",
             want[i].num, want[i].alpha);
    CU_ASSERT_EQUAL(q_long(c, sql), want[i].exp);
  }
  CU_ASSERT(q_long(c, "SELECT count(*) FROM switch.currencies") >= 20);
  PQfinish(c);
}

static void test_checks_reject_bad_rows(void) {
  PGconn *c = connect_as(g_writer);
  char sql[1024], state[6];
  event_sql(sql, sizeof sql, "2026-11-23", 7, "-1", "'D'", "");
  CU_ASSERT_EQUAL(q_rows(c, sql, state), -1);
  CU_ASSERT_STRING_EQUAL(state, "23514");
  event_sql(sql, sizeof sql, "2026-11-23", 7, "1000", "'X'", "");
  CU_ASSERT_EQUAL(q_rows(c, sql, state), -1);
  CU_ASSERT_STRING_EQUAL(state, "23514");
  event_sql(sql, sizeof sql, "2026-11-23", 7, "1000", "NULL", "");
  CU_ASSERT_EQUAL(q_rows(c, sql, state), -1); /* amount without sign */
  CU_ASSERT_STRING_EQUAL(state, "23514");
  /* A clear PAN does not fit the masked column. */
  CU_ASSERT_EQUAL(
      q_rows(c,
             "INSERT INTO switch.journal_event (business_date, node_id, "
             "txn_id, event_no, event, state, mti, pan_masked, chain_seq, "
             "chain_hmac, chain_key_ver) VALUES "
             "('2026-11-23', 1, 9, 0, 'received', 'received', '0200', "
             "'4111111111111111', 1, sha256('x'), 1)",
             state),
      -1);
  CU_ASSERT_STRING_EQUAL(state, "23514");
  /* A currency that is not ISO 4217 in the table. */
  CU_ASSERT_EQUAL(
      q_rows(c,
             "INSERT INTO switch.journal_event (business_date, node_id, "
             "txn_id, event_no, event, state, mti, amount_minor, sign, "
             "currency, chain_seq, chain_hmac, chain_key_ver) VALUES "
             "('2026-11-23', 1, 9, 0, 'received', 'received', '0200', 5, "
             "'C', '999', 1, sha256('x'), 1)",
             state),
      -1);
  CU_ASSERT_STRING_EQUAL(state, "23503");
  /* No column for a PIN block, track data or CVV. */
  CU_ASSERT_EQUAL(q_long(c, "SELECT count(*) FROM information_schema.columns "
                            "WHERE table_schema = 'switch' AND column_name "
                            "~* '(pin|track|cvv|cvc|cav)'"),
                  0);
  /* BIN ranges: equal-length digit prefixes. */
  CU_ASSERT_EQUAL(q(c,
                    "INSERT INTO switch.issuers (issuer_id, name, dialect) "
                    "VALUES ('visa', 'Visa', 'base1')",
                    NULL, NULL, 0),
                  PGRES_COMMAND_OK);
  CU_ASSERT_EQUAL(q_rows(c,
                         "INSERT INTO switch.bin_routes (prefix_low, "
                         "prefix_high, issuer_id) VALUES ('4000', '49999', "
                         "'visa')",
                         state),
                  -1);
  CU_ASSERT_STRING_EQUAL(state, "23514");
  CU_ASSERT_EQUAL(q_rows(c,
                         "INSERT INTO switch.bin_routes (prefix_low, "
                         "prefix_high, issuer_id) VALUES ('4000', '4999', "
                         "'visa')",
                         state),
                  1);
  PQfinish(c);
}

int main(void) {
  setup_cluster();
  atexit(pgt_teardown);
  tu_init();
  static const tu_test_t migrate[] = {
      {"migrate_applies_every_file_from_zero",
       test_migrate_applies_every_file_from_zero},
      {"migrate_again_applies_nothing", test_migrate_again_applies_nothing},
      {"migrate_refuses_a_changed_applied_file",
       test_migrate_refuses_a_changed_applied_file},
      {"migrate_refuses_bad_names_and_missing_files",
       test_migrate_refuses_bad_names_and_missing_files},
      {"concurrent_migrators_apply_each_file_once",
       test_concurrent_migrators_apply_each_file_once},
      {NULL, NULL}};
  static const tu_test_t schema[] = {
      {"partition_creation_is_idempotent",
       test_partition_creation_is_idempotent},
      {"insert_into_a_day_without_partition_fails",
       test_insert_into_a_day_without_partition_fails},
      {"idempotency_key_drops_duplicates",
       test_idempotency_key_drops_duplicates},
      {"writer_cannot_update_or_delete_journal_rows",
       test_writer_cannot_update_or_delete_journal_rows},
      {"reader_selects_but_cannot_insert",
       test_reader_selects_but_cannot_insert},
      {"currency_exponents_are_seeded", test_currency_exponents_are_seeded},
      {"checks_reject_bad_rows", test_checks_reject_bad_rows},
      {NULL, NULL}};
  tu_add_suite("migrate", migrate);
  tu_add_suite("schema", schema);
  return tu_run();
}
