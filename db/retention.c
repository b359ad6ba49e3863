/*
 * retention.c — which versions of the PAN data key may be destroyed
 * (retention.h).  One read-only query over the journal and the SAF queue;
 * the verdicts are decided here, in the order KEEP_CURRENT, KEEP_SAF,
 * KEEP_UNSETTLED, KEEP_RECENT, DESTROY.
 */
#include "retention.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Per key version: rows, date span, rows on/after the cutoff, rows of dates
 * not closed, and SAF rows still owed whose original is under it. */
static const char SQL_USE[] =
    "WITH v AS ("
    "  SELECT pan_enc_key_ver AS ver, count(*) AS rows_,"
    "         min(business_date) AS first_, max(business_date) AS last_,"
    "         count(*) FILTER (WHERE business_date >= $1::date) AS recent,"
    "         count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM"
    "           switch.business_dates b WHERE b.business_date ="
    "           e.business_date AND b.status = 'closed')) AS unsettled"
    "    FROM switch.journal_event e WHERE pan_enc IS NOT NULL"
    "   GROUP BY pan_enc_key_ver),"
    " s AS ("
    "  SELECT e.pan_enc_key_ver AS ver, count(*) AS owed"
    "    FROM switch.saf q JOIN switch.journal_event e"
    "      ON e.business_date = q.business_date AND e.node_id = q.node_id"
    "     AND e.txn_id = q.txn_id AND e.event = 'received'"
    "   WHERE q.state IN ('armed', 'live', 'dead') AND e.pan_enc IS NOT NULL"
    "   GROUP BY e.pan_enc_key_ver)"
    " SELECT coalesce(v.ver, s.ver), coalesce(v.rows_, 0),"
    "        coalesce(v.first_::text, ''), coalesce(v.last_::text, ''),"
    "        coalesce(v.recent, 0), coalesce(v.unsettled, 0),"
    "        coalesce(s.owed, 0)"
    "   FROM v FULL JOIN s ON s.ver = v.ver";

const char *db_retention_verdict_text(db_ret_verdict_t v) {
  switch (v) {
  case DB_RET_DESTROY:
    return "destroy: every PAN under it is past retention";
  case DB_RET_KEEP_CURRENT:
    return "keep: the current version";
  case DB_RET_KEEP_RECENT:
    return "keep: PANs of dates within the retention period use it";
  case DB_RET_KEEP_UNSETTLED:
    return "keep: PANs of dates not yet settled use it";
  case DB_RET_KEEP_SAF:
    return "keep: a reversal or advice still owed needs its PAN";
  }
  return "?";
}

int db_retention_plan(PGconn *c, const uint32_t *versions, size_t n,
                      uint32_t current, const char *cutoff,
                      db_retention_item_t *items, char *err, size_t errcap) {
  if (err && errcap)
    err[0] = '\0';
  if (!c || (!versions && n) || (!items && n) || !cutoff ||
      strlen(cutoff) != 10) {
    if (err)
      snprintf(err, errcap, "retention: bad arguments");
    return DB_E_INVAL;
  }
  const char *p[1] = {cutoff};
  PGresult *r = PQexecParams(c, SQL_USE, 1, NULL, p, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    if (err)
      snprintf(err, errcap, "retention: %s", PQresultErrorMessage(r));
    PQclear(r);
    return DB_E_SQL;
  }
  for (size_t i = 0; i < n; i++) {
    db_retention_item_t *it = &items[i];
    memset(it, 0, sizeof *it);
    it->version = versions[i];
    int64_t recent = 0, unsettled = 0, owed = 0;
    for (int row = 0; row < PQntuples(r); row++) {
      if (PQgetisnull(r, row, 0) ||
          strtoul(PQgetvalue(r, row, 0), NULL, 10) != versions[i])
        continue;
      it->rows = strtoll(PQgetvalue(r, row, 1), NULL, 10);
      snprintf(it->first_date, sizeof it->first_date, "%.10s",
               PQgetvalue(r, row, 2));
      snprintf(it->last_date, sizeof it->last_date, "%.10s",
               PQgetvalue(r, row, 3));
      recent = strtoll(PQgetvalue(r, row, 4), NULL, 10);
      unsettled = strtoll(PQgetvalue(r, row, 5), NULL, 10);
      owed = strtoll(PQgetvalue(r, row, 6), NULL, 10);
    }
    it->verdict = versions[i] == current ? DB_RET_KEEP_CURRENT
                  : owed > 0             ? DB_RET_KEEP_SAF
                  : unsettled > 0        ? DB_RET_KEEP_UNSETTLED
                  : recent > 0           ? DB_RET_KEEP_RECENT
                                         : DB_RET_DESTROY;
  }
  PQclear(r);
  return 0;
}

const char *db_retention_day_text(db_day_verdict_t v) {
  switch (v) {
  case DB_DAY_DROP:
    return "drop: settled, nothing owed";
  case DB_DAY_KEEP_UNSETTLED:
    return "keep: not settled";
  case DB_DAY_KEEP_SAF:
    return "keep: a reversal or advice is still owed";
  }
  return "?";
}

int db_retention_days(PGconn *c, const char *cutoff, db_retention_day_t *days,
                      size_t cap, size_t *n, char *err, size_t errcap) {
  if (n)
    *n = 0;
  if (err && errcap)
    err[0] = '\0';
  if (!c || !cutoff || !days || !n) {
    if (err)
      snprintf(err, errcap, "retention: bad arguments");
    return DB_E_INVAL;
  }
  const char *p[1] = {cutoff};
  PGresult *r = PQexecParams(
      c,
      "SELECT p.business_date::text,"
      "  EXISTS (SELECT 1 FROM switch.business_dates b WHERE"
      "          b.business_date = p.business_date AND b.status = 'closed'),"
      "  EXISTS (SELECT 1 FROM switch.saf s WHERE s.business_date ="
      "          p.business_date AND s.state IN ('armed', 'live', 'dead'))"
      "  FROM switch.journal_partitions p"
      " WHERE p.business_date < $1::date ORDER BY 1",
      1, NULL, p, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    if (err)
      snprintf(err, errcap, "retention: %s", PQresultErrorMessage(r));
    PQclear(r);
    return DB_E_SQL;
  }
  size_t k = 0;
  for (int i = 0; i < PQntuples(r) && k < cap; i++, k++) {
    snprintf(days[k].date, sizeof days[k].date, "%.10s", PQgetvalue(r, i, 0));
    int closed = PQgetvalue(r, i, 1)[0] == 't';
    int owed = PQgetvalue(r, i, 2)[0] == 't';
    days[k].verdict = owed      ? DB_DAY_KEEP_SAF
                      : !closed ? DB_DAY_KEEP_UNSETTLED
                                : DB_DAY_DROP;
  }
  PQclear(r);
  *n = k;
  return 0;
}

int db_retention_drop_day(PGconn *c, const char *date, char *err,
                          size_t errcap) {
  if (err && errcap)
    err[0] = '\0';
  if (!c || !date || strlen(date) != 10)
    return DB_E_INVAL;
  const char *p[1] = {date};
  PGresult *r =
      PQexecParams(c, "SELECT switch.drop_journal_partition($1::date)", 1, NULL,
                   p, NULL, NULL, 0);
  int rc = 0;
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    rc = st && strcmp(st, "SW030") == 0 ? DB_E_CONFLICT : DB_E_SQL;
    if (err) {
      snprintf(err, errcap, "%s", PQresultErrorMessage(r));
      err[strcspn(err, "\n")] = '\0';
    }
  } else if (PQgetvalue(r, 0, 0)[0] != 't') {
    rc = DB_E_NOT_FOUND;
    if (err)
      snprintf(err, errcap, "no journal partition for %s", date);
  }
  PQclear(r);
  return rc;
}
