/*
 * util.h — inside libdb: the small helpers every module needs once.
 */
#ifndef DB_UTIL_H
#define DB_UTIL_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdint.h>

/* printf into err (cap bytes) when err is not NULL. */
__attribute__((format(printf, 3, 4))) void db__set_err(char *err, size_t cap,
                                                       const char *fmt, ...);

/* "WHAT: <the server's message, first line>" into err; returns
 * DB_E_UNAVAILABLE when the connection is gone, else DB_E_SQL. */
int db__sql_err(PGconn *c, const PGresult *r, const char *what, char *err,
                size_t cap);

/* Hex text (lower or upper case, even length) into at most cap bytes;
 * *len gets the count.  -1 on a bad digit, odd length or overflow. */
int db__unhex(const char *s, uint8_t *out, size_t cap, size_t *len);

#endif
