/*
 * settle.h — end of day: closing a business date, settling it and writing
 * its clearing file (docs/settlement.md).
 *
 * db_settle() closes date D and settles it in ONE database transaction:
 * it locks D's row in switch.business_dates FOR UPDATE (two runs never
 * interleave), closes D's journal partition (constraint journal_closed),
 * refuses with DB_E_PENDING while any transaction of D is received, armed
 * or forwarded, computes what settles from the journal, writes the
 * clearing file and CSV report (temporary name, fsync, rename, fsync of
 * the folder), then inserts the totals and records the file's SHA-256 and
 * COMMITs.  Guarantees:
 *
 *  - Deterministic: the files depend only on the journal, the reference
 *    data and D (no time stamps, a fixed order), so every run writes the
 *    same bytes.
 *  - Idempotent: on a date already closed nothing is inserted; the files
 *    are rebuilt from the journal, compared with the recorded SHA-256
 *    (DB_E_MISMATCH if they differ) and rewritten if missing or changed
 *    on disk.
 *  - Crash-safe: a crash after the rename and before the COMMIT leaves the
 *    date open with no totals; the next run writes the same bytes again
 *    and records them.
 *
 * Money is int64 minor units with an explicit D/C sign, per currency with
 * its ISO 4217 exponent, never summed across currencies and never floating
 * point.
 */
#ifndef DB_SETTLE_H
#define DB_SETTLE_H

#include "db.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Steps reported to the fault hook (tests inject crashes there). */
typedef enum {
  DB_SETTLE_AT_FILES_WRITTEN = 1, /* temporary files written and fsynced */
  DB_SETTLE_AT_RENAMED,           /* renamed into place, not recorded */
  DB_SETTLE_AT_RECORDED           /* totals and SHA-256 sent, not committed */
} db_settle_step_t;

typedef struct db_settle_opts_s {
  const char *date;    /* YYYY-MM-DD */
  const char *out_dir; /* folder of the files; must exist */
  /* Called at each step (may be NULL). */
  void (*hook)(void *ctx, db_settle_step_t step);
  void *hook_ctx;
} db_settle_opts_t;

/* Totals of one currency over the whole date. */
typedef struct db_settle_currency_s {
  char currency[4]; /* ISO 4217 numeric */
  char alpha[4];
  int exponent;
  int64_t debit_count, debit_minor;
  int64_t credit_count, credit_minor;
  int64_t fee_minor;
  int64_t net_minor; /* debit - credit - fee: > 0 owed to merchants */
} db_settle_currency_t;

#define DB_SETTLE_MAX_CURRENCIES 64

typedef struct db_settle_result_s {
  int already_closed; /* the date was closed before: nothing inserted */
  int files_written;  /* this run (re)wrote the files */
  int64_t records;    /* records in the clearing file */
  int64_t transactions, adjustments, merchants;
  size_t ncurrencies;
  db_settle_currency_t currencies[DB_SETTLE_MAX_CURRENCIES];
  char clearing_path[4096];
  char report_path[4096];
  char sha256[65]; /* of the clearing file, lower-case hex */
} db_settle_result_t;

/* Closes and settles opts->date (above).  0 done (or already done);
 * DB_E_PENDING (the first pending transaction and the count in err),
 * DB_E_INTEGRITY (journal data that cannot settle, e.g. a reversal above
 * its approval, or a settling transaction without merchant or currency),
 * DB_E_NOT_FOUND (a merchant without reference row), DB_E_MISMATCH (a
 * closed date whose recomputation differs from what was recorded),
 * DB_E_IO, DB_E_SQL, DB_E_INVAL, DB_E_NOMEM.  res may be NULL. */
int db_settle(PGconn *c, const db_settle_opts_t *opts, db_settle_result_t *res,
              char *err, size_t errcap);

/* Checks that the settlement of closed date `date` still matches the
 * journal: recomputes it (with the fee plans recorded at settlement) and
 * compares every stored total, the record count and the recorded SHA-256
 * with the recomputed file's, and, when out_dir (may be NULL) holds the
 * clearing file, that file's SHA-256 too.  Writes nothing; needs only
 * SELECT (switch_reader is enough).  0 match; DB_E_MISMATCH with the
 * first difference named in err; DB_E_NOT_FOUND if the date is not
 * closed; other DB_E_* codes as db_settle. */
int db_settle_verify(PGconn *c, const char *date, const char *out_dir,
                     char *err, size_t errcap);

/* The default clearing folder, relative to the current directory. */
#define DB_SETTLE_DEFAULT_DIR "var/clearing"

/* What `switchctl verify --date D` runs: db_settle_verify with the
 * default folder (its file checked when present), except that a date not
 * settled yet passes (nothing to check).  report (may be NULL) gets one
 * line: what was checked, or that the date is not settled. */
int db_settle_check(PGconn *c, const char *date,
                    void (*report)(void *ctx, const char *line), void *ctx,
                    char *err, size_t errcap);

/* --- pieces, public for their tests ------------------------------------ */

/* The percentage fee on base (>= 0) at bps basis points (0..10000),
 * rounded half up: floor((base * bps + 5000) / 10000) without overflow.
 * Returns -1 on a negative base or bps out of range. */
int64_t db_settle_fee_pct(int64_t base, int32_t bps);

/* Writes v as a protobuf base-128 varint (at most 10 bytes); returns the
 * length. */
size_t db_varint_put(uint64_t v, uint8_t out[10]);

/* Reads a varint from p[0..n); returns its length (1..10), 0 if truncated,
 * -1 if longer than 10 bytes or above 2^64 - 1. */
int db_varint_get(const uint8_t *p, size_t n, uint64_t *v);

/* Renders minor units with exponent 0..4 as a decimal ("-12.345", "7"),
 * with integer arithmetic.  Returns the length, or -1 if cap is too small
 * (32 is enough) or the exponent is out of range. */
int db_format_minor(int64_t minor, int exponent, char *out, size_t cap);

/* date (YYYY-MM-DD) plus days calendar days into out (11 bytes); 0 or -1
 * on a bad date or days outside 0..3660. */
int db_date_add_days(const char *date, int days, char out[11]);

#ifdef __cplusplus
}
#endif

#endif
