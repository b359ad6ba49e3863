/*
 * db.h — the public contract of libdb, the switch's PostgreSQL layer.
 *
 * This first part applies the schema: numbered SQL files (NNNN_name.sql,
 * db/migrations/) read at run time, each applied once, in numeric order, in
 * its own transaction together with its row in switch.schema_migrations
 * (version, name, sha256, applied_at).  Guarantees:
 *
 *  - Idempotent: a file already recorded is skipped; a second run applies
 *    nothing.
 *  - Immutable: a recorded file whose SHA-256 differs from the recorded one
 *    is refused (DB_E_CHANGED) before anything is applied; so is a recorded
 *    version whose file is gone (DB_E_MISSING) and a new file numbered below
 *    the newest applied one (DB_E_ORDER).  Fix a schema with a new file.
 *  - Serialised: every migration transaction first takes the transaction
 *    advisory lock DB_MIGRATE_LOCK_KEY, so nodes starting at once apply
 *    each file exactly once (the others wait, then see it recorded).
 *  - All or nothing per file: a failing file leaves no trace and stops the
 *    run; files applied before it stay applied.
 *
 * Conventions: functions return 0 or a negative DB_E_* code; messages go to
 * a caller-supplied buffer, worded like PostgreSQL's (what, where, then
 * DETAIL/HINT lines).
 */
#ifndef DB_H
#define DB_H

#include <libpq-fe.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DB_ERRNO_MAP(XX)                                                       \
  XX(INVAL, "invalid argument")                                                \
  XX(NOMEM, "out of memory")                                                   \
  XX(IO, "cannot read the migrations folder or a migration file")              \
  XX(BAD_NAME, "a migration file name is not NNNN_name.sql")                   \
  XX(DUP_VERSION, "two migration files have the same number")                  \
  XX(CHANGED, "an applied migration file has changed")                         \
  XX(MISSING, "an applied migration has no file")                              \
  XX(ORDER, "a new migration is numbered below an applied one")                \
  XX(SQL, "the database reported an error")                                    \
  XX(CONNECT, "cannot connect to the database")                                \
  XX(CLOSED, "the business date is closed")                                    \
  XX(PENDING, "transactions of the date are still pending")                    \
  XX(NOT_FOUND, "no such row")                                                 \
  XX(CONFLICT, "another node or run holds it")                                 \
  XX(TIMEOUT, "timed out")                                                     \
  XX(FULL, "the queue is full")                                                \
  XX(SHUTDOWN, "shutting down")                                                \
  XX(HSM, "the HSM adapter failed")                                            \
  XX(INTEGRITY, "the journal's integrity check failed")                        \
  XX(REJECTED, "the database refused the row")                                 \
  XX(MISMATCH, "totals do not match")                                          \
  XX(UNAVAILABLE, "the database is unavailable")

enum db__errno_e {
  DB__E_NONE = 0,
#define DB__XX(name, msg) DB__E_##name,
  DB_ERRNO_MAP(DB__XX)
#undef DB__XX
};

typedef enum {
  DB_OK = 0,
#define DB__XX(name, msg) DB_E_##name = -DB__E_##name,
  DB_ERRNO_MAP(DB__XX)
#undef DB__XX
} db_errno_t;

const char *db_strerror(int code);
const char *db_err_name(int code);

/* The pg_advisory_xact_lock key every migration transaction takes
 * ("SWMIGR" in ASCII). */
#define DB_MIGRATE_LOCK_KEY 0x53574d494752LL

/* Highest migration number: four digits. */
#define DB_MIGRATION_MAX 9999

/* Called after each file is committed (version, file name). */
typedef void (*db_migrate_cb)(void *ctx, int version, const char *name);

/* Applies every NNNN_name.sql in dir not yet recorded, in numeric order.
 * *applied (may be NULL) receives how many files this call applied.  On
 * error, err (may be NULL) holds a message naming the file. */
int db_migrate(PGconn *c, const char *dir, int *applied, char *err,
               size_t errcap);

/* The same, calling cb (may be NULL) after each applied file. */
int db_migrate_notify(PGconn *c, const char *dir, db_migrate_cb cb, void *ctx,
                      int *applied, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif

#endif
