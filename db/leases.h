/*
 * leases.h — unique numbers across threads, restarts and nodes
 * (docs/transaction-model.md, "STAN and RRN"): ranges leased from
 * switch.leases with switch.lease_range (migration 0007), and the RRN and
 * txn_id formats built on them.
 */
#ifndef DB_LEASES_H
#define DB_LEASES_H

#include "db.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  DB_LEASE_STAN = 1, /* scope: the link id; 1..999,999, wraps (24 h rule) */
  DB_LEASE_RRN,      /* scope: the business date YYYY-MM-DD; node <= 99 */
  DB_LEASE_TXN_ID    /* scope: none (NULL or ""); 48-bit counter */
} db_lease_kind_t;

/* The next n (1..100000) numbers [*low, *high] of (kind, node, scope).
 * DB_E_CONFLICT: none can be given (used up, or a STAN wrap within 24
 * hours of the last); DB_E_INVAL: bad arguments (a scope of the wrong
 * shape is refused by the table). */
int db_lease_range(PGconn *c, db_lease_kind_t kind, uint16_t node,
                   const char *scope, uint32_t n, int64_t *low, int64_t *high,
                   char *err, size_t errcap);

/* The txn_id of a node's counter value: node in the top 16 bits. */
int64_t db_txn_id(uint16_t node, int64_t counter);

/* DE37 for a business date (YYYY-MM-DD), node (0..99) and sequence
 * (1..999,999): YDDD (last digit of the year, day of the year) + NN +
 * SSSSSS, 12 digits and a NUL in out.  -1 on bad input. */
int db_rrn_format(const char *business_date, uint16_t node, int64_t seq,
                  char out[13]);

#ifdef __cplusplus
}
#endif

#endif
