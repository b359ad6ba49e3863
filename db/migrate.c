/*
 * migrate.c — applies db/migrations/NNNN_name.sql files (see db.h for the
 * guarantees) and db_strerror.
 *
 * Order of work: list and hash every file; take the lock and make sure
 * switch.schema_migrations exists (its own transaction); check every
 * recorded row against the files (changed, missing, out of order) before
 * applying anything; then one transaction per new file: lock, re-check the
 * row (another node may have applied it while we waited), run the file,
 * record it, commit.  The lock is per transaction, never held across
 * files, so a node that dies mid-file releases it with its connection.
 */
#include "db.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const db__messages[] = {"success",
#define DB__XX(name, msg) msg,
                                           DB_ERRNO_MAP(DB__XX)
#undef DB__XX
};

static const char *const db__names[] = {"OK",
#define DB__XX(name, msg) #name,
                                        DB_ERRNO_MAP(DB__XX)
#undef DB__XX
};

#define DB__NCODES (sizeof db__names / sizeof db__names[0])

const char *db_strerror(int code) {
  size_t i = (size_t)(code <= 0 ? -(long)code : (long)DB__NCODES);
  return i < DB__NCODES ? db__messages[i] : "unknown error";
}

const char *db_err_name(int code) {
  size_t i = (size_t)(code <= 0 ? -(long)code : (long)DB__NCODES);
  return i < DB__NCODES ? db__names[i] : "UNKNOWN";
}

/* ------------------------------------------------------------------------ */

typedef struct {
  int version;
  char *name; /* file name, e.g. "0001_reference_data.sql" */
  char *sql;  /* contents, NUL-terminated */
  char sha256[65];
} mig_t;

typedef struct {
  mig_t *v;
  size_t n, cap;
} mig_list_t;

typedef struct {
  char *buf;
  size_t cap;
} errbuf_t;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
set_err(errbuf_t *e, const char *fmt, ...) {
  if (!e->buf || e->cap == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->buf, e->cap, fmt, ap);
  va_end(ap);
}

/* Appends the server's message for res (or the connection's) to e as
 * "ERROR:  primary\nDETAIL:  ...\nHINT:  ..." after prefix. */
static void set_pg_err(errbuf_t *e, PGconn *c, const PGresult *res,
                       const char *prefix) {
  const char *primary =
      res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  if (!primary) {
    const char *m = res ? PQresultErrorMessage(res) : "";
    if (!m || !*m)
      m = PQerrorMessage(c);
    set_err(e, "%s: %s", prefix, m && *m ? m : "unknown error");
    size_t l = e->buf ? strlen(e->buf) : 0;
    while (l > 0 && e->buf[l - 1] == '\n')
      e->buf[--l] = '\0';
    return;
  }
  const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY);
  const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
  const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
  const char *where = PQresultErrorField(res, PG_DIAG_CONTEXT);
  const char *pos = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
  set_err(e, "%s: %s:  %s (SQLSTATE %s)%s%s%s%s%s%s%s%s", prefix,
          sev ? sev : "ERROR", primary, state ? state : "?",
          detail ? "\nDETAIL:  " : "", detail ? detail : "",
          hint ? "\nHINT:  " : "", hint ? hint : "",
          where ? "\nCONTEXT:  " : "", where ? where : "",
          pos ? "\nPOSITION:  character " : "", pos ? pos : "");
}

static void mig_list_free(mig_list_t *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->v[i].name);
    free(l->v[i].sql);
  }
  free(l->v);
  l->v = NULL;
  l->n = l->cap = 0;
}

/* "NNNN_name.sql" with name [A-Za-z0-9_]+ → version, else -1.  Other files
 * (README, editor backups) are ignored by the caller; names that start
 * with four digits but are otherwise wrong are an error, so a typo never
 * silently skips a migration. */
static int parse_name(const char *s, int *looks_like) {
  *looks_like = 0;
  for (int i = 0; i < 4; i++)
    if (!isdigit((unsigned char)s[i]))
      return -1;
  *looks_like = 1;
  if (s[4] != '_')
    return -1;
  size_t len = strlen(s);
  if (len < 4 + 1 + 1 + 4 || strcmp(s + len - 4, ".sql") != 0)
    return -1;
  for (size_t i = 5; i < len - 4; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '_')
      return -1;
  return (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 +
         (s[3] - '0');
}

static int read_file(const char *path, char **out, char sha[65], errbuf_t *e) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    set_err(e, "could not open migration file \"%s\": %s", path,
            strerror(errno));
    return DB_E_IO;
  }
  size_t cap = 8192, n = 0;
  char *buf = malloc(cap);
  if (!buf) {
    fclose(f);
    return DB_E_NOMEM;
  }
  for (;;) {
    if (n + 1 >= cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        fclose(f);
        return DB_E_NOMEM;
      }
      buf = nb;
      cap *= 2;
    }
    size_t got = fread(buf + n, 1, cap - n - 1, f);
    n += got;
    if (got == 0)
      break;
  }
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    set_err(e, "could not read migration file \"%s\"", path);
    return DB_E_IO;
  }
  buf[n] = '\0';
  if (memchr(buf, '\0', n)) {
    free(buf);
    set_err(e, "migration file \"%s\" contains a NUL byte", path);
    return DB_E_IO;
  }
  unsigned char md[32];
  unsigned int mdlen = 0;
  if (!EVP_Digest(buf, n, md, &mdlen, EVP_sha256(), NULL) || mdlen != 32) {
    free(buf);
    set_err(e, "could not compute the SHA-256 of \"%s\"", path);
    return DB_E_IO;
  }
  for (int i = 0; i < 32; i++)
    snprintf(sha + 2 * i, 3, "%02x", md[i]);
  *out = buf;
  return 0;
}

static int cmp_mig(const void *a, const void *b) {
  const mig_t *x = a, *y = b;
  return (x->version > y->version) - (x->version < y->version);
}

static int list_dir(const char *dir, mig_list_t *l, errbuf_t *e) {
  DIR *d = opendir(dir);
  if (!d) {
    set_err(e, "could not open the migrations folder \"%s\": %s", dir,
            strerror(errno));
    return DB_E_IO;
  }
  int rc = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    int looks;
    int v = parse_name(de->d_name, &looks);
    if (v < 0) {
      if (looks) {
        set_err(e,
                "bad migration file name \"%s\" in \"%s\"\nHINT:  name "
                "migrations NNNN_name.sql, name of letters, digits and _",
                de->d_name, dir);
        rc = DB_E_BAD_NAME;
        break;
      }
      continue;
    }
    if (l->n == l->cap) {
      size_t nc = l->cap ? l->cap * 2 : 16;
      mig_t *nv = realloc(l->v, nc * sizeof *nv);
      if (!nv) {
        rc = DB_E_NOMEM;
        break;
      }
      l->v = nv;
      l->cap = nc;
    }
    mig_t *m = &l->v[l->n];
    memset(m, 0, sizeof *m);
    m->version = v;
    m->name = strdup(de->d_name);
    if (!m->name) {
      rc = DB_E_NOMEM;
      break;
    }
    l->n++;
  }
  closedir(d);
  if (rc)
    return rc;
  if (l->n > 1)
    qsort(l->v, l->n, sizeof *l->v, cmp_mig);
  for (size_t i = 0; i + 1 < l->n; i++)
    if (l->v[i].version == l->v[i + 1].version) {
      set_err(e, "migrations \"%s\" and \"%s\" have the same number %04d",
              l->v[i].name, l->v[i + 1].name, l->v[i].version);
      return DB_E_DUP_VERSION;
    }
  for (size_t i = 0; i < l->n; i++) {
    size_t need = strlen(dir) + 1 + strlen(l->v[i].name) + 1;
    char *path = malloc(need);
    if (!path)
      return DB_E_NOMEM;
    snprintf(path, need, "%s/%s", dir, l->v[i].name);
    rc = read_file(path, &l->v[i].sql, l->v[i].sha256, e);
    free(path);
    if (rc)
      return rc;
  }
  return 0;
}

/* Runs one command; 0 when its status is want. */
static int run(PGconn *c, const char *sql, ExecStatusType want, errbuf_t *e,
               const char *what) {
  PGresult *r = PQexec(c, sql);
  if (PQresultStatus(r) != want) {
    set_pg_err(e, c, r, what);
    PQclear(r);
    return DB_E_SQL;
  }
  PQclear(r);
  return 0;
}

static void rollback(PGconn *c) {
  if (PQtransactionStatus(c) != PQTRANS_IDLE)
    PQclear(PQexec(c, "ROLLBACK"));
}

static int begin_locked(PGconn *c, errbuf_t *e) {
  char lock[80];
  snprintf(lock, sizeof lock, "SELECT pg_advisory_xact_lock(%lld)",
           (long long)DB_MIGRATE_LOCK_KEY);
  int rc = run(c, "BEGIN", PGRES_COMMAND_OK, e, "could not begin a migration");
  if (!rc)
    rc = run(c, lock, PGRES_TUPLES_OK, e, "could not take the migration lock");
  return rc;
}

static const char *const bootstrap_sql =
    "CREATE TABLE IF NOT EXISTS switch.schema_migrations ("
    " version integer PRIMARY KEY CHECK (version BETWEEN 1 AND 9999),"
    " name text NOT NULL,"
    " sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),"
    " applied_at timestamptz NOT NULL DEFAULT now())";

static int bootstrap(PGconn *c, errbuf_t *e) {
  int rc = begin_locked(c, e);
  /* No "already exists, skipping" notice on every run. */
  if (!rc)
    rc = run(c, "SET LOCAL client_min_messages = warning", PGRES_COMMAND_OK, e,
             "could not set client_min_messages");
  if (!rc)
    rc = run(c, bootstrap_sql, PGRES_COMMAND_OK, e,
             "could not create switch.schema_migrations");
  if (!rc)
    rc = run(c, "COMMIT", PGRES_COMMAND_OK, e, "could not commit");
  if (rc) {
    rollback(c);
    if (e->buf && strstr(e->buf, "3F000"))
      snprintf(e->buf + strlen(e->buf), e->cap - strlen(e->buf),
               "\nHINT:  schema \"switch\" is made by deploy/pg.sh init; "
               "connect to database \"switch\" as switch_writer");
  }
  return rc;
}

static const mig_t *find(const mig_list_t *l, int version) {
  for (size_t i = 0; i < l->n; i++)
    if (l->v[i].version == version)
      return &l->v[i];
  return NULL;
}

/* Every recorded row against the files; *max_applied gets the newest. */
static int check_recorded(PGconn *c, const mig_list_t *l, const char *dir,
                          int *max_applied, errbuf_t *e) {
  PGresult *r = PQexec(c, "SELECT version, name, sha256 FROM "
                          "switch.schema_migrations ORDER BY version");
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    set_pg_err(e, c, r, "could not read switch.schema_migrations");
    PQclear(r);
    return DB_E_SQL;
  }
  int rc = 0;
  *max_applied = 0;
  for (int i = 0; i < PQntuples(r) && !rc; i++) {
    int v = atoi(PQgetvalue(r, i, 0));
    const char *name = PQgetvalue(r, i, 1);
    const char *sha = PQgetvalue(r, i, 2);
    const mig_t *m = find(l, v);
    if (v > *max_applied)
      *max_applied = v;
    if (!m) {
      set_err(e,
              "migration %04d (\"%s\") is recorded as applied but has no file "
              "in \"%s\"\nHINT:  the database is newer than these migrations; "
              "run the switchctl that applied it, or restore the file",
              v, name, dir);
      rc = DB_E_MISSING;
    } else if (strcmp(m->sha256, sha) != 0) {
      set_err(e,
              "migration file \"%s/%s\" has changed since it was applied\n"
              "DETAIL:  recorded SHA-256 %s, file SHA-256 %s\n"
              "HINT:  applied migrations are immutable: restore the file "
              "and put the change in a new numbered migration",
              dir, m->name, sha, m->sha256);
      rc = DB_E_CHANGED;
    }
  }
  PQclear(r);
  return rc;
}

/* One file in one transaction; *did is 1 when this call applied it. */
static int apply_one(PGconn *c, const mig_t *m, const char *dir, int *did,
                     errbuf_t *e) {
  *did = 0;
  int rc = begin_locked(c, e);
  if (rc)
    return rc;
  char vbuf[16];
  snprintf(vbuf, sizeof vbuf, "%d", m->version);
  const char *p1[1] = {vbuf};
  PGresult *r = PQexecParams(c,
                             "SELECT sha256 FROM switch.schema_migrations "
                             "WHERE version = $1::integer",
                             1, NULL, p1, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    set_pg_err(e, c, r, "could not read switch.schema_migrations");
    PQclear(r);
    rollback(c);
    return DB_E_SQL;
  }
  if (PQntuples(r) == 1) { /* another migrator applied it while we waited */
    int same = strcmp(PQgetvalue(r, 0, 0), m->sha256) == 0;
    PQclear(r);
    rollback(c);
    if (!same) {
      set_err(e,
              "migration file \"%s/%s\" differs from the one another "
              "migrator just applied\nHINT:  run every node from the same "
              "release",
              dir, m->name);
      return DB_E_CHANGED;
    }
    return 0;
  }
  PQclear(r);
  char prefix[600];
  snprintf(prefix, sizeof prefix, "migration \"%s/%s\" failed", dir, m->name);
  /* A simple-query string may hold many statements; they all run inside
   * the transaction opened above. */
  r = PQexec(c, m->sql);
  ExecStatusType st = PQresultStatus(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK &&
      st != PGRES_EMPTY_QUERY) {
    set_pg_err(e, c, r, prefix);
    PQclear(r);
    rollback(c);
    return DB_E_SQL;
  }
  PQclear(r);
  if (PQtransactionStatus(c) != PQTRANS_INTRANS) {
    set_err(e,
            "%s: the file ended the migration's transaction\nHINT:  "
            "migration files must not contain BEGIN, COMMIT or ROLLBACK",
            prefix);
    rollback(c);
    return DB_E_SQL;
  }
  const char *p3[3] = {vbuf, m->name, m->sha256};
  r = PQexecParams(c,
                   "INSERT INTO switch.schema_migrations (version, name, "
                   "sha256) VALUES ($1::integer, $2, $3)",
                   3, NULL, p3, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) {
    set_pg_err(e, c, r, prefix);
    PQclear(r);
    rollback(c);
    return DB_E_SQL;
  }
  PQclear(r);
  rc = run(c, "COMMIT", PGRES_COMMAND_OK, e, prefix);
  if (rc) {
    rollback(c);
    return rc;
  }
  *did = 1;
  return 0;
}

int db_migrate_notify(PGconn *c, const char *dir, db_migrate_cb cb, void *ctx,
                      int *applied, char *err, size_t errcap) {
  errbuf_t e = {err, errcap};
  if (applied)
    *applied = 0;
  if (err && errcap)
    err[0] = '\0';
  if (!c || !dir) {
    set_err(&e, "db_migrate: no connection or no folder");
    return DB_E_INVAL;
  }
  if (PQstatus(c) != CONNECTION_OK) {
    set_pg_err(&e, c, NULL, "not connected");
    return DB_E_CONNECT;
  }
  if (PQtransactionStatus(c) != PQTRANS_IDLE) {
    set_err(&e, "db_migrate: the connection is inside a transaction");
    return DB_E_INVAL;
  }
  mig_list_t l = {0};
  int rc = list_dir(dir, &l, &e);
  if (rc == DB_E_NOMEM)
    set_err(&e, "out of memory reading migrations");
  int max_applied = 0;
  if (!rc)
    rc = bootstrap(c, &e);
  if (!rc)
    rc = check_recorded(c, &l, dir, &max_applied, &e);
  for (size_t i = 0; !rc && i < l.n; i++) {
    const mig_t *m = &l.v[i];
    int did = 0;
    if (m->version <= max_applied) {
      /* Recorded (checked above), or a new file slipped in below. */
      PGresult *r = NULL;
      char vbuf[16];
      snprintf(vbuf, sizeof vbuf, "%d", m->version);
      const char *p1[1] = {vbuf};
      r = PQexecParams(c,
                       "SELECT 1 FROM switch.schema_migrations WHERE "
                       "version = $1::integer",
                       1, NULL, p1, NULL, NULL, 0);
      int known = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
      PQclear(r);
      if (known)
        continue;
      set_err(&e,
              "migration \"%s/%s\" is new but numbered below applied "
              "migration %04d\nHINT:  renumber it above %04d",
              dir, m->name, max_applied, max_applied);
      rc = DB_E_ORDER;
      break;
    }
    rc = apply_one(c, m, dir, &did, &e);
    if (!rc && did) {
      if (applied)
        (*applied)++;
      if (cb)
        cb(ctx, m->version, m->name);
    }
  }
  mig_list_free(&l);
  return rc;
}

int db_migrate(PGconn *c, const char *dir, int *applied, char *err,
               size_t errcap) {
  return db_migrate_notify(c, dir, NULL, NULL, applied, err, errcap);
}
