/*
 * leases.c — number ranges from switch.leases (leases.h).
 */
#include "leases.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int db_lease_range(PGconn *c, db_lease_kind_t kind, uint16_t node,
                   const char *scope, uint32_t n, int64_t *low, int64_t *high,
                   char *err, size_t errcap) {
  static const char *const kinds[] = {[DB_LEASE_STAN] = "stan",
                                      [DB_LEASE_RRN] = "rrn",
                                      [DB_LEASE_TXN_ID] = "txn_id"};
  if (err && errcap)
    err[0] = '\0';
  if (!c || !low || !high || kind < DB_LEASE_STAN || kind > DB_LEASE_TXN_ID ||
      n < 1 || n > 100000 || (kind != DB_LEASE_TXN_ID && (!scope || !*scope))) {
    if (err)
      snprintf(err, errcap, "lease: bad arguments");
    return DB_E_INVAL;
  }
  char nb[8], cnt[12];
  snprintf(nb, sizeof nb, "%u", node);
  snprintf(cnt, sizeof cnt, "%u", n);
  const char *p[4] = {kinds[kind], nb, kind == DB_LEASE_TXN_ID ? "" : scope,
                      cnt};
  PGresult *r = PQexecParams(
      c, "SELECT low, high FROM switch.lease_range($1, $2, $3, $4)", 4, NULL, p,
      NULL, NULL, 0);
  int rc = 0;
  if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 ||
      PQgetisnull(r, 0, 0) || PQgetisnull(r, 0, 1)) {
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    rc = st && strcmp(st, "SW020") == 0 ? DB_E_CONFLICT
         : st && (strcmp(st, "SW021") == 0 || strncmp(st, "23", 2) == 0)
             ? DB_E_INVAL
             : DB_E_SQL;
    if (err) {
      snprintf(err, errcap, "lease %s for node %u: %s", kinds[kind], node,
               PQresultErrorMessage(r));
      err[strcspn(err, "\n")] = '\0';
    }
  } else {
    *low = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    *high = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
  }
  PQclear(r);
  return rc;
}

int64_t db_txn_id(uint16_t node, int64_t counter) {
  return (int64_t)(((uint64_t)node << 48) |
                   ((uint64_t)counter & 0xFFFFFFFFFFFFull));
}

static int is_leap(int y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int db_rrn_format(const char *d, uint16_t node, int64_t seq, char out[13]) {
  static const int before[] = {0,   31,  59,  90,  120, 151,
                               181, 212, 243, 273, 304, 334};
  int y, m, day;
  char tail;
  if (!d || strlen(d) != 10 || node > 99 || seq < 1 || seq > 999999 ||
      sscanf(d, "%4d-%2d-%2d%c", &y, &m, &day, &tail) != 3 || m < 1 || m > 12 ||
      day < 1 || y < 1)
    return -1;
  static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (day > mdays[m - 1] + (m == 2 && is_leap(y)))
    return -1;
  int doy = before[m - 1] + day + (m > 2 && is_leap(y));
  char tmp[40];
  int len = snprintf(tmp, sizeof tmp, "%u%03u%02u%06u", (unsigned)(y % 10),
                     (unsigned)doy, (unsigned)node, (unsigned)seq);
  if (len != 12)
    return -1;
  memcpy(out, tmp, 13);
  return 0;
}
