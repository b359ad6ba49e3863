/*
 * util.c — the helpers of util.h.
 */
#include "util.h"

#include "db.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void db__set_err(char *err, size_t cap, const char *fmt, ...) {
  if (!err || cap == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, cap, fmt, ap);
  va_end(ap);
}

int db__sql_err(PGconn *c, const PGresult *r, const char *what, char *err,
                size_t cap) {
  const char *m = r ? PQresultErrorMessage(r) : "";
  if ((!m || !*m) && c)
    m = PQerrorMessage(c);
  if (!m || !*m)
    m = "no message";
  size_t len = strcspn(m, "\n");
  db__set_err(err, cap, "%s: %.*s", what, (int)(len > 400 ? 400 : len), m);
  return c && PQstatus(c) == CONNECTION_BAD ? DB_E_UNAVAILABLE : DB_E_SQL;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

int db__unhex(const char *s, uint8_t *out, size_t cap, size_t *len) {
  size_t n = strlen(s);
  if (n % 2 || n / 2 > cap)
    return -1;
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return -1;
    out[i] = (uint8_t)(hi << 4 | lo);
  }
  *len = n / 2;
  return 0;
}
