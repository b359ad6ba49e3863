/*
 * lookup.h — reading the journal back: the customer-service transaction
 * lookup (db_lookup_*) and the totals of one terminal batch for the 0500
 * reconciliation (db_recon_*).  docs/lookup-and-recon.md says which
 * journal rows count where.
 *
 * Both only read (they work as switch_reader) and run their SQL with
 * parameters.  Both derive a transaction's outcome from its events with
 * one function (db_txn_outcome_*), so the amount the lookup shows as
 * settled and the amount the batch totals count are the same by
 * construction.
 *
 * Nothing here returns the PAN in any form but masked: the queries never
 * select pan_enc or pan_hash, and no struct has room for them.
 *
 * Conventions (db.h): 0 or a negative DB_E_* code; a one-line message in
 * the caller's buffer.  Inputs are checked before any query: DB_E_INVAL
 * with a message naming the bad argument.
 */
#ifndef DB_LOOKUP_H
#define DB_LOOKUP_H

#include "db.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Input shapes (what the journal's CHECK constraints accept)                */

/* 12 ASCII letters or digits (DE37). */
int db_lookup_check_rrn(const char *rrn);
/* 6 digits (DE11). */
int db_lookup_check_stan(const char *stan);
/* 1 to 8 of letters, digits and spaces, not all spaces (DE41). */
int db_lookup_check_terminal_id(const char *tid);
/* YYYY-MM-DD, a real calendar day in 2000..2999. */
int db_lookup_check_date(const char *date);
/* 3 digits (ISO 4217 numeric). */
int db_lookup_check_currency(const char *cur);
/* Each returns 0 when good, DB_E_INVAL when not (NULL is not good). */

/* ------------------------------------------------------------------------ */
/* Money                                                                     */

/* An amount in minor units with its sign and currency.  present is 0 when
 * there is no amount (an inquiry, a decline). */
typedef struct db_money_s {
  int present;
  int64_t minor; /* >= 0 */
  char sign;     /* 'D' or 'C' */
  char currency[4];
  char alpha[4]; /* "EUR"; "" if the currency is unknown */
  int exponent;  /* ISO 4217 minor-unit digits, 0..4 */
} db_money_t;

/* Writes minor as a decimal with exponent fraction digits ("1234", 2 ->
 * "12.34"; "5", 3 -> "0.005"), integer arithmetic only.  Returns the
 * length, or 0 when cap is too small or an argument is out of range
 * (minor < 0, exponent outside 0..4).  32 bytes are always enough. */
size_t db_money_decimal(int64_t minor, int exponent, char *out, size_t cap);

/* ------------------------------------------------------------------------ */
/* A transaction's outcome, from its events in order                         */

/* What a transaction settles at (docs/transaction-model.md, "What
 * settles"), built by feeding its events in journal order (original date
 * first, then adjustments into later dates, each by event_no). */
typedef struct db_txn_outcome_s {
  int settles_kind;  /* purchase, cash, completion (D) or refund (C) */
  char sign;         /* 'D' or 'C' for settling kinds, else 0 */
  int approved;      /* a 'response' approved or a 'stand_in' stood_in */
  int64_t requested; /* the received event's amount (0 if none) */
  int64_t approved_amount;
  int reversals;           /* reversal_requested events after approval */
  int64_t reversed_amount; /* their amounts, capped at approved_amount */
  char currency[4];        /* of the approval ("" when not approved) */
  char state[17];          /* the latest event's state */
} db_txn_outcome_t;

/* Starts an outcome for a transaction of kind txn_kind (the received
 * event's txn_kind; NULL or "" treated as "other"). */
void db_txn_outcome_init(db_txn_outcome_t *o, const char *txn_kind);
/* Feeds one event.  amount_minor < 0 means the event has no amount. */
void db_txn_outcome_add(db_txn_outcome_t *o, const char *event,
                        const char *state, int64_t amount_minor,
                        const char *currency);
/* 1 when the transaction counts in settlement and batch totals: a
 * settling kind, approved, and not left timed out. */
int db_txn_outcome_counts(const db_txn_outcome_t *o);
/* The settled amount: approved minus reversed (0 when it does not count). */
int64_t db_txn_outcome_settled(const db_txn_outcome_t *o);

/* ------------------------------------------------------------------------ */
/* Lookup                                                                    */

/* One event of a transaction's timeline. */
typedef struct db_lookup_event_s {
  char business_date[11];
  int32_t event_no;
  char event[20];
  char state[17];
  char recorded_at[32]; /* 2026-11-23T07:04:19.123456Z (UTC) */
  char response_code[3];
  char reason[41];
  db_money_t amount;
} db_lookup_event_t;

/* Events kept per transaction; a longer timeline sets events_truncated. */
#define DB_LOOKUP_MAX_EVENTS 32

/* One transaction: its summary and its timeline. */
typedef struct db_lookup_txn_s {
  char business_date[11];
  uint16_t node_id;
  int64_t txn_id;
  char txn_kind[11];
  char mti[5];
  char processing_code[7];
  db_money_t requested; /* the received event's amount */
  db_money_t approved;  /* present when approved (partial: less) */
  db_money_t settled;   /* present when it counts: approved - reversed */
  db_money_t reversed;  /* present when something was reversed */
  char rrn[13];
  char terminal_id[9];
  char merchant_id[16];
  int32_t batch_no; /* -1: none */
  char terminal_stan[7];
  char stan[7];
  char auth_code[7];
  char response_code[3];
  char state[17]; /* the latest event's state */
  char pan_masked[20];
  size_t n_events;
  int events_truncated;
  db_lookup_event_t events[DB_LOOKUP_MAX_EVENTS];
} db_lookup_txn_t;

/* Transactions returned at most (newest business date first); more sets
 * truncated. */
#define DB_LOOKUP_MAX_TXNS 20

/* A result: the caller owns the struct, the library the array in it
 * (db_lookup_result_free). */
typedef struct db_lookup_result_s {
  size_t n;
  int truncated;
  db_lookup_txn_t *txns;
} db_lookup_result_t;

void db_lookup_result_free(db_lookup_result_t *r);

/* By RRN.  date (YYYY-MM-DD) restricts to one business date; NULL searches
 * every date the journal holds, newest first, through the RRN index. */
int db_lookup_by_rrn(PGconn *c, const char *rrn, const char *date,
                     db_lookup_result_t *out, char *err, size_t errcap);

/* By terminal id and the terminal's STAN (DE11 it sent), over business
 * dates date_from..date_to (inclusive).  NULL from: to - 7 days; NULL to:
 * tomorrow (UTC), so the default covers the last 7 business dates and one
 * already cut over.  No index serves this: it scans those partitions. */
int db_lookup_by_terminal_stan(PGconn *c, const char *terminal_id,
                               const char *stan, const char *date_from,
                               const char *date_to, db_lookup_result_t *out,
                               char *err, size_t errcap);

/* By the PAN's keyed hash (32 bytes, HMAC-SHA-256 under version key_ver of
 * the PAN hash key) on one business date, through the PAN-hash index. */
int db_lookup_by_pan_hash(PGconn *c, const uint8_t hash[32], int32_t key_ver,
                          const char *date, db_lookup_result_t *out, char *err,
                          size_t errcap);
/* All three: 0 with out->n >= 1; DB_E_NOT_FOUND when nothing matched;
 * DB_E_INVAL, DB_E_NOMEM, DB_E_SQL otherwise (out empty). */

/* ------------------------------------------------------------------------ */
/* Terminal batch reconciliation (0500 / 0510)                               */

/* The reconciliation totals of ISO 8583 (1987), for one currency. */
typedef struct db_recon_totals_s {
  char currency[4];                /* ISO 4217 numeric; "" when not said */
  int exponent;                    /* -1 when unknown */
  int64_t credits_count;           /* DE74 */
  int64_t credits_reversal_count;  /* DE75 */
  int64_t debits_count;            /* DE76 */
  int64_t debits_reversal_count;   /* DE77 */
  int64_t credits_amount;          /* DE86 */
  int64_t credits_reversal_amount; /* DE87 */
  int64_t debits_amount;           /* DE88 */
  int64_t debits_reversal_amount;  /* DE89 */
  int64_t net_amount;              /* DE97 magnitude */
  char net_sign;                   /* DE97 sign: 'D' or 'C' */
} db_recon_totals_t;

/* Largest values the fields carry: DE74-77 are n 10, DE86-89 and DE97 n 16. */
#define DB_RECON_COUNT_MAX 9999999999LL
#define DB_RECON_AMOUNT_MAX 9999999999999999LL

/* Zero totals in currency (may be NULL). */
void db_recon_totals_init(db_recon_totals_t *t, const char *currency);

/* Sets DE97 from the other fields: (DE88 - DE89) - (DE86 - DE87), 'D' when
 * the debits win, 'C' when the credits do, 'C' for zero.  DB_E_INVAL when
 * a field is negative or beyond its size. */
int db_recon_set_net(db_recon_totals_t *t);

/* Currencies of one batch returned at most (one is normal). */
#define DB_RECON_MAX_CURRENCIES 8

typedef struct db_recon_batch_s {
  char terminal_id[9];
  int32_t batch_no;
  char date_from[11], date_to[11]; /* the business dates searched */
  size_t transactions; /* transactions of the batch found (any outcome) */
  size_t counted;      /* of which count in the totals */
  size_t n;            /* currencies with something counted */
  int more_currencies; /* more than DB_RECON_MAX_CURRENCIES */
  db_recon_totals_t totals[DB_RECON_MAX_CURRENCIES]; /* by currency code */
} db_recon_batch_t;

/* Computes the switch's totals of terminal terminal_id, batch batch_no
 * (0..999999), from the transactions whose received event carries both
 * and whose business date is in date_from..date_to (defaults as for
 * db_lookup_by_terminal_stan).  Events of those transactions written into
 * later dates as adjustments count too.  currency (may be NULL) keeps only
 * that currency.  0 also for a batch with nothing in it (out->n == 0). */
int db_recon_batch(PGconn *c, const char *terminal_id, int32_t batch_no,
                   const char *date_from, const char *date_to,
                   const char *currency, db_recon_batch_t *out, char *err,
                   size_t errcap);

/* One field that differs. */
typedef struct db_recon_diff_s {
  int de;           /* 74..77, 86..89, 97 */
  const char *name; /* "credits number", ... */
  int64_t switch_value, terminal_value;
  char switch_sign, terminal_sign; /* DE97 only, else 0 */
} db_recon_diff_t;

#define DB_RECON_FIELDS 9

/* Compares the switch's totals with the terminal's, field by field (DE97
 * by magnitude and, unless both are zero, sign).  The currencies must be
 * equal when both are said.  *ndiff gets the differing fields (diffs may
 * hold up to DB_RECON_FIELDS).  0: match; DB_E_MISMATCH: not. */
int db_recon_compare(const db_recon_totals_t *sw, const db_recon_totals_t *term,
                     db_recon_diff_t diffs[DB_RECON_FIELDS], size_t *ndiff);

/* Parses a terminal's totals written as "de74=N,de75=N,de76=N,de77=N,
 * de86=N,de87=N,de88=N,de89=N,de97=S N" (S: C or D directly before the
 * digits, "de97=D1234"), every field once, in any order, optionally
 * "currency=NNN".  Fields are decimal digits within their ISO sizes.  On
 * DB_E_INVAL, err names the bad part. */
int db_recon_parse_totals(const char *text, db_recon_totals_t *out, char *err,
                          size_t errcap);

/* "credits number" for 74, ... ; NULL for a field not in the set. */
const char *db_recon_field_name(int de);

#ifdef __cplusplus
}
#endif

#endif
