/*
 * retention.h — the retention purge of stored PANs (docs/retention.md).
 *
 * Journal rows are append-only, so an encrypted PAN is never erased from
 * its row: it is made unrecoverable by destroying the version of the data
 * key it was encrypted under (crypto-shredding).  The data key is rotated
 * on a schedule (hsm-keytool rotate, e.g. monthly), so each version covers
 * a span of business dates; once every date a version covers is older than
 * the retention period, settled, and owes nothing to store-and-forward,
 * the version is destroyed.
 *
 * db_retention_plan says, for each version of the key that still exists,
 * whether it may go and why not; the caller (switchctl retention) destroys
 * the ones that may through the HSM adapter.
 */
#ifndef DB_RETENTION_H
#define DB_RETENTION_H

#include "db.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  DB_RET_DESTROY = 0,    /* every row under it is older than the cutoff */
  DB_RET_KEEP_CURRENT,   /* the current version: new PANs go under it */
  DB_RET_KEEP_RECENT,    /* rows on or after the cutoff use it */
  DB_RET_KEEP_UNSETTLED, /* rows of a date not yet closed use it */
  DB_RET_KEEP_SAF        /* a reversal or advice still owed needs the PAN */
} db_ret_verdict_t;

typedef struct db_retention_item_s {
  uint32_t version;
  db_ret_verdict_t verdict;
  int64_t rows;        /* journal rows encrypted under it */
  char first_date[11]; /* business dates those rows span ("" if none) */
  char last_date[11];
} db_retention_item_t;

/* versions[0..n): the versions of the data key that exist; current: the
 * current one.  cutoff: YYYY-MM-DD, the first business date whose PANs
 * must stay recoverable.  items (n of them) receive the verdicts, in the
 * order given.  0 or a DB_E_* code with a message in err. */
int db_retention_plan(PGconn *c, const uint32_t *versions, size_t n,
                      uint32_t current, const char *cutoff,
                      db_retention_item_t *items, char *err, size_t errcap);

const char *db_retention_verdict_text(db_ret_verdict_t v);

/* Whole days of the journal (migration 0008): each partition dated before
 * cutoff, and whether it may be dropped. */
typedef enum {
  DB_DAY_DROP = 0,       /* settled and owes nothing */
  DB_DAY_KEEP_UNSETTLED, /* not closed by switchctl settle */
  DB_DAY_KEEP_SAF        /* a reversal or advice is still owed */
} db_day_verdict_t;

typedef struct db_retention_day_s {
  char date[11];
  db_day_verdict_t verdict;
} db_retention_day_t;

/* Fills days[0..cap) with the partitions dated before cutoff, oldest
 * first; *n gets how many (at most cap). */
int db_retention_days(PGconn *c, const char *cutoff, db_retention_day_t *days,
                      size_t cap, size_t *n, char *err, size_t errcap);

/* Detaches and drops the day's partition (switch.drop_journal_partition):
 * DB_E_CONFLICT (with the reason) when it may not go. */
int db_retention_drop_day(PGconn *c, const char *date, char *err,
                          size_t errcap);

const char *db_retention_day_text(db_day_verdict_t v);

#ifdef __cplusplus
}
#endif

#endif
