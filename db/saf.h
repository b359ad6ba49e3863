/*
 * saf.h — the store-and-forward queue (switch.saf, docs/saf.md): the
 * reversals and advices the switch owes to issuers, worked by a SAF worker
 * thread on every node and inspected by switchctl.
 *
 * Rows come into the queue through the journal writer (journal.h,
 * db_saf_op_t), which calls switch.saf_apply in the transaction of the
 * events that cause them.  This header is the other side: synchronous
 * calls on a PGconn (the worker's own connection, or switchctl's) that
 * claim due rows, record what was sent, match acknowledgements, schedule
 * repeats and let operators see and retry dead rows.
 *
 * Guarantees:
 *  - Several nodes share the queue without sending a row twice at once: a
 *    row is claimed with a lease (owner, lease_until) set in one short
 *    statement (FOR UPDATE SKIP LOCKED); no row lock is held while the
 *    message is out.  A claim taken by a node that dies expires, and the
 *    next claim by any node takes the row over.
 *  - A send is recorded before the message leaves (db_saf_record_send),
 *    and only while the caller still holds the lease (else DB_E_CONFLICT,
 *    and the caller must not send).  So every message an issuer may have
 *    seen has a row in switch.saf_attempt with its matching key, and a
 *    row's first message goes out as 0420/0120/0220 and every later one as
 *    the repeat 0421/0121/0221.
 *  - An acknowledgement matches by the matching key (link, STAN, DE7) of
 *    any send of the row, the first or a repeat.
 *  - A row that reached the attempt limit is dead: no node sends it again
 *    until an operator retries it.
 * Times are microseconds since the Unix epoch (UTC).  Functions return 0
 * or a negative DB_E_* code, with a one-line message in err (may be NULL).
 */
#ifndef DB_SAF_H
#define DB_SAF_H

#include "db.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Worker settings.  Zero means the default in brackets. */
typedef struct db_saf_config_s {
  uint32_t max_attempts;    /* sends before a row is dead [10] */
  uint32_t backoff_base_ms; /* wait after the first failed send [1000] */
  uint32_t backoff_cap_ms;  /* longest wait between sends [300000] */
  uint32_t lease_ms;        /* a claim's lease [30000] */
} db_saf_config_t;

#define DB_SAF_MAX_ATTEMPTS 10
#define DB_SAF_BACKOFF_BASE_MS 1000
#define DB_SAF_BACKOFF_CAP_MS 300000
#define DB_SAF_LEASE_MS 30000
/* Upper bounds accepted for each setting (DB_E_INVAL above them). */
#define DB_SAF_MAX_ATTEMPTS_LIMIT 1000
#define DB_SAF_MS_LIMIT 86400000u /* one day */

/* Fills cfg with the defaults. */
void db_saf_config_init(db_saf_config_t *cfg);

/* The wait after the n-th counted send failed (n >= 1):
 * min(base * 2^(n-1), cap) with cfg's values (defaults for zeros).  The
 * database computes the same (db_saf_fail); this is for logs and tests. */
uint64_t db_saf_backoff_ms(const db_saf_config_t *cfg, uint32_t n);

/* A claimed row and what is needed to build its message, from the
 * original's 'received' event (and, for the issuer-side STAN and DE7 the
 * original was sent with, its latest 'forwarded' event).  Text fields are
 * NUL-terminated, "" when absent.  Never a clear PAN. */
typedef struct db_saf_item_s {
  int64_t saf_id;
  char kind[9];     /* reversal | advice */
  char mti[5];      /* to send now: 0420 / 0120 / 0220, or the repeat */
  int32_t attempt;  /* this send's number, 1 for the first */
  char link_id[33]; /* the row's link ("" when none was given) */
  /* the original */
  char business_date[11];
  uint16_t node_id;
  int64_t txn_id;
  int has_original; /* 0: no 'received' event (fields below empty) */
  char orig_mti[5];
  char processing_code[7];
  int64_t amount_minor; /* DB_NONE (-1): no amount */
  char sign;            /* 'D', 'C', or 0 */
  char currency[4];
  char terminal_stan[7];
  char rrn[13];
  char terminal_id[9];
  char merchant_id[16];
  char pan_masked[20];
  uint8_t pan_enc[128];
  uint16_t pan_enc_len;    /* 0: none */
  int32_t pan_enc_key_ver; /* 0: none */
  char stan[7];            /* DE11 the original was forwarded with */
  int64_t transmission_us; /* its DE7; INT64_MIN when not forwarded */
  char orig_link_id[33];   /* the link it was forwarded on */
  /* For the amounts of a reversal (DE4 and the DE95 replacement): */
  int64_t approved_minor; /* the approving event's amount (a partial
                             approval is less than amount_minor); DB_NONE
                             (-1) when nothing approved it (timed out) */
  int64_t reversed_minor; /* the sum of its reversal_requested amounts,
                             also in later dates; DB_NONE when none was
                             requested (reverse it all) */
} db_saf_item_t;

/* Claims up to cap due rows for owner (1 to 64 of A-Z a-z 0-9 _ . : -):
 * live rows whose next attempt is due and that no live lease holds, and
 * armed reversals whose lease expired (their node died before the
 * outcome: they become live).  Oldest due first; a row waits while an
 * older row of the same original is armed or live.  Each claimed row is
 * leased to owner for cfg->lease_ms.  A row found at the attempt limit (a
 * node died after its last send) is moved to dead, not returned.  *n gets
 * how many items were filled (0 when nothing is due). */
int db_saf_claim(PGconn *c, const db_saf_config_t *cfg, const char *owner,
                 db_saf_item_t *items, size_t cap, size_t *n, char *err,
                 size_t errcap);

/* The issuer matching key of one send. */
typedef struct db_saf_key_s {
  const char *link_id;     /* a-z 0-9 _ -, 1 to 32 */
  const char *stan;        /* 6 digits, DE11 */
  int64_t transmission_us; /* DE7 */
} db_saf_key_t;

/* Records that owner is about to send row saf_id with key.  Refused with
 * DB_E_CONFLICT when owner no longer holds a live lease on the row (do
 * not send), DB_E_REJECTED when another send already has that matching
 * key.  *attempt and mti (5 bytes; either may be NULL) get the send's
 * number and the MTI it must carry. */
int db_saf_record_send(PGconn *c, int64_t saf_id, const char *owner,
                       const db_saf_key_t *key, int32_t *attempt, char *mti,
                       char *err, size_t errcap);

/* An acknowledged row. */
typedef struct db_saf_acked_s {
  int64_t saf_id;
  int64_t txn_id;
  char business_date[11];
  uint16_t node_id;
  char kind[9];
  int32_t attempt;   /* the send the acknowledgement answered */
  int already_acked; /* the row was acked before this call */
} db_saf_acked_t;

/* Matches an issuer's answer (0430, 0130, 0230) by the matching key of
 * any send, records response_code (2 characters, may be NULL) on that
 * send and marks the row acked (whoever holds it, in any state: an
 * acknowledgement after the row went dead still counts).  Safe to call
 * twice.  DB_E_NOT_FOUND when no send has the key.  out may be NULL. */
int db_saf_ack(PGconn *c, const db_saf_key_t *key, const char *response_code,
               db_saf_acked_t *out, char *err, size_t errcap);

/* The latest send of saf_id failed: no answer in time (response_code
 * NULL) or an answer not taken as an acknowledgement.  Requires owner's
 * lease.  Records the outcome on the send, releases the lease and
 * schedules the next send after db_saf_backoff_ms(cfg, n) where n counts
 * the sends since the last operator retry; at cfg->max_attempts sends the
 * row is dead instead.  *dead (may be NULL) tells which. */
int db_saf_fail(PGconn *c, const db_saf_config_t *cfg, int64_t saf_id,
                const char *owner, const char *response_code, int *dead,
                char *err, size_t errcap);

/* Extends owner's lease on a live row to now + lease_ms (1 ms to one
 * day).  DB_E_CONFLICT when owner no longer holds it. */
int db_saf_renew(PGconn *c, int64_t saf_id, const char *owner,
                 uint32_t lease_ms, char *err, size_t errcap);

/* Gives up owner's lease on a live row without a send outcome (shutting
 * down): due at its scheduled time, for any node.  DB_E_CONFLICT when
 * owner does not hold it. */
int db_saf_release(PGconn *c, int64_t saf_id, const char *owner, char *err,
                   size_t errcap);

/* Operator: a dead row goes back to live, due now.  Its sends and their
 * keys are kept (the next one is a repeat); the attempt limit counts
 * again from this retry.  DB_E_NOT_FOUND: no such row; DB_E_CONFLICT: the
 * row is not dead. */
int db_saf_retry(PGconn *c, int64_t saf_id, char *err, size_t errcap);

/* Housekeeping: deletes rows that are finished (acked, disarmed) and were
 * last changed more than days ago (1 to 36600), with their sends; the
 * journal keeps the record.  A day at least, so that a batch replayed
 * after a lost COMMIT (seconds later) still finds its disarmed row and
 * cannot re-arm a reversal.  *purged (may be NULL) gets the count. */
int db_saf_purge(PGconn *c, int days, int64_t *purged, char *err,
                 size_t errcap);

/* A row as listed (times as microseconds; INT64_MIN when NULL). */
typedef struct db_saf_row_s {
  int64_t saf_id;
  char business_date[11];
  uint16_t node_id;
  int64_t txn_id;
  char kind[9];
  char mti[5];
  char link_id[33];
  char state[9];
  int32_t attempts;
  int32_t retries;
  int64_t next_attempt_us;
  char owner[65];
  int64_t lease_until_us;
  char last_response_code[3];
  int64_t created_us;
  int64_t updated_us;
} db_saf_row_t;

/* Calls cb for each row in state (NULL: every state; else armed, live,
 * acked, dead or disarmed), oldest due first, at most limit rows (1 to
 * 100000).  cb returning non-zero stops the walk. */
int db_saf_list(PGconn *c, const char *state, long limit,
                int (*cb)(void *ctx, const db_saf_row_t *row), void *ctx,
                char *err, size_t errcap);

/* Counts per state and the backlog's age. */
typedef struct db_saf_stats_s {
  int64_t armed, live, acked, dead, disarmed;
  int64_t due;            /* live rows due now */
  int64_t oldest_due_us;  /* next_attempt_at of the oldest due live row;
                             INT64_MIN when none is due */
  int64_t oldest_dead_us; /* when the oldest dead row died; INT64_MIN */
  int64_t now_us;         /* the database's now() */
} db_saf_stats_t;

int db_saf_stats(PGconn *c, db_saf_stats_t *out, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif

#endif
