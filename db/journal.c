/*
 * journal.c — the journal writer thread (journal.h, docs/journal.md).
 *
 * One thread, one libpq connection.  Loops submit requests into a bounded
 * queue (a mutex and a condition variable); the thread takes everything
 * queued, up to max_batch events, and writes it as one transaction: per
 * business date one call of switch.journal_append (multi-row INSERT ...
 * SELECT FROM unnest(arrays) ON CONFLICT DO NOTHING, plus the chain head),
 * and one switch.saf_apply for the SAF changes, all sent in one libpq
 * pipeline with one Sync, so the whole batch costs one round trip and one
 * commit.  Completions go back to each request's port (its loop) through a
 * uv_async_t.
 *
 * Failures (docs/journal.md has the table):
 *  - connection lost (or the server restarting): the batch is in doubt.
 *    Reconnect with backoff, forget the cached chain heads, and send the
 *    same batch again: if the lost COMMIT had happened, journal_append
 *    finds the events (SW001), the writer looks up which are there, marks
 *    them durable and sends only the rest, with a new chain.
 *  - SW002 (chain head moved): reload heads and retry once; again means a
 *    second writer uses this node id: the batch fails with DB_E_CONFLICT.
 *  - a row refused (CHECK, closed date, no partition): the batch is split
 *    into its requests, each written on its own, so one bad request fails
 *    alone (DB_E_CLOSED or DB_E_REJECTED) and the others are written.
 *  - the HSM failing: retried with backoff, like the database.
 * A request whose deadline passes before its batch commits fails with
 * DB_E_TIMEOUT (its error text says when the outcome is unknown).
 */
#include "journal.h"

#include "chain.h"
#include "util.h"

#include "hsm.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#define CHAIN_CACHE 8
#define MAX_GROUPS 4 /* business dates in one batch */
#define NARRAYS 31
#define NPARAMS (4 + NARRAYS)

enum { LOG_ERR = 3, LOG_WARN = 4, LOG_INFO = 6 };

/* Outcome of one attempt at a batch. */
typedef enum {
  TRY_OK = 0,
  TRY_CONN,   /* connection lost: in doubt */
  TRY_DUP,    /* SW001: some events already journaled */
  TRY_HEAD,   /* SW002: chain head moved */
  TRY_DATA,   /* a row refused (23xxx, 22xxx) */
  TRY_CLOSED, /* a closed business date */
  TRY_HSM,    /* the HSM adapter failed */
  TRY_SQL     /* anything else: fails the batch */
} try_t;

typedef struct {
  char *p;
  size_t len, cap;
} sbuf_t;

/* One chain (business date) of this node: the head the database has
 * confirmed, and the working head, past batches sent but not confirmed
 * yet (the next batch is built on it while the previous one commits). */
typedef struct {
  char date[11];
  int64_t seq;
  uint8_t hmac[32];
  int64_t wseq;
  uint8_t whmac[32];
} chain_t;

/* A batch built and ready to send: its chains and what it moves them to. */
typedef struct {
  chain_t *groups[MAX_GROUPS];
  int ng;
  int saf;
  int64_t prev_seq[MAX_GROUPS], new_seq[MAX_GROUPS];
  uint8_t new_hmac[MAX_GROUPS][32];
  uint32_t ver[MAX_GROUPS];
  sbuf_t (*arr)[NARRAYS]; /* the arrays of each group */
  sbuf_t *safarr;
  int sent;    /* queries in the pipeline */
  uint64_t t0; /* when it was sent */
} plan_t;

struct db_journal_port_s {
  db_journal_t *j;
  uv_async_t async;
  pthread_mutex_t mu;
  db_journal_req_t *done_head, *done_tail;
  void (*on_space)(void *ctx);
  void *ctx;
  int want_space; /* under j->mu */
  _Atomic int space_ready;
  int closing;
  size_t inflight; /* loop thread only */
  db_journal_port_t *next;
};

struct db_journal_s {
  char *conninfo, *chain_label, *saf_owner;
  uint16_t node;
  uint32_t lease_ms, reconnect_max_ms;
  size_t capacity, max_batch;
  void (*log)(void *ctx, int level, const char *line);
  void *log_ctx;

  pthread_t thread;
  int started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  db_journal_req_t *head, *tail;
  size_t held; /* events queued or being written */
  int stopping;
  uint64_t grace_deadline;
  db_journal_stats_t st;
  db_journal_port_t *ports;

  /* writer thread only */
  PGconn *conn;
  int have_saf;
  uv_loop_t loop;
  int loop_ok;
  hsm_t *hsm;
  chain_t chains[CHAIN_CACHE];
  char parts[CHAIN_CACHE][11];
  unsigned nparts, next_part;
  sbuf_t arr[MAX_GROUPS][NARRAYS];
  sbuf_t saf[5];
  db_journal_req_t **batch, **batch2;
  size_t batch_cap;
  char errmsg[256];
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void jlog(db_journal_t *j, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void jlog(db_journal_t *j, int level, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  line[strcspn(line, "\n")] = '\0';
  if (j->log)
    j->log(j->log_ctx, level, line);
  else
    fprintf(stderr, "journal: %s\n", line);
}

static char *dupstr(const char *s) {
  if (!s)
    return NULL;
  size_t n = strlen(s) + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

/* Growable buffer: grows geometrically and is reused batch after batch, so
 * steady state allocates nothing. */
static int sb_reserve(sbuf_t *b, size_t more) {
  if (b->len + more + 1 <= b->cap)
    return 0;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < b->len + more + 1)
    cap *= 2;
  char *p = realloc(b->p, cap);
  if (!p)
    return -1;
  b->p = p;
  b->cap = cap;
  return 0;
}

static int sb_put(sbuf_t *b, const char *s, size_t n) {
  if (sb_reserve(b, n))
    return -1;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
  return 0;
}

/* Array literals ("{a,b,NULL}"). */
static int arr_sep(sbuf_t *b) {
  if (b->len == 0)
    return sb_put(b, "{", 1);
  return sb_put(b, ",", 1);
}

static int arr_null(sbuf_t *b) {
  return arr_sep(b) || sb_put(b, "NULL", 4);
}

/* A text element, quoted; "" is NULL.  Quotes and backslashes escaped. */
static int arr_text(sbuf_t *b, const char *s, size_t cap) {
  size_t n = strnlen(s, cap);
  if (n == 0)
    return arr_null(b);
  if (arr_sep(b) || sb_reserve(b, 2 * n + 2))
    return -1;
  b->p[b->len++] = '"';
  for (size_t i = 0; i < n; i++) {
    if (s[i] == '"' || s[i] == '\\')
      b->p[b->len++] = '\\';
    b->p[b->len++] = s[i];
  }
  b->p[b->len++] = '"';
  b->p[b->len] = '\0';
  return 0;
}
#define ARR_TEXT(b, field) arr_text((b), (field), sizeof(field))

static int arr_i64(sbuf_t *b, int64_t v, int absent) {
  if (absent)
    return arr_null(b);
  char t[24];
  int n = snprintf(t, sizeof t, "%" PRId64, v);
  return arr_sep(b) || sb_put(b, t, (size_t)n);
}

static int arr_bytes(sbuf_t *b, const uint8_t *p, size_t n, int absent) {
  static const char hx[] = "0123456789abcdef";
  if (absent)
    return arr_null(b);
  if (arr_sep(b) || sb_reserve(b, 2 * n + 6))
    return -1;
  memcpy(b->p + b->len, "\"\\\\x", 4);
  b->len += 4;
  for (size_t i = 0; i < n; i++) {
    b->p[b->len++] = hx[p[i] >> 4];
    b->p[b->len++] = hx[p[i] & 15];
  }
  b->p[b->len++] = '"';
  b->p[b->len] = '\0';
  return 0;
}

static int arr_close(sbuf_t *b) {
  if (b->len == 0)
    return sb_put(b, "{}", 2);
  return sb_put(b, "}", 1);
}

/* ------------------------------------------------------------------------ */
/* Validation at submission                                                  */

/* The first n characters are digits (a NUL stops it). */
static int digits(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return 0;
  return 1;
}

static int date_ok(const char *s) {
  return strnlen(s, 11) == 10 && digits(s, 4) && s[4] == '-' &&
         digits(s + 5, 2) && s[7] == '-' && digits(s + 8, 2);
}

#define TERMINATED(f) (memchr((f), '\0', sizeof(f)) != NULL)

static int event_ok(const db_event_t *e) {
  if (!TERMINATED(e->business_date) || !TERMINATED(e->event) ||
      !TERMINATED(e->state) || !TERMINATED(e->txn_kind) ||
      !TERMINATED(e->mti) || !TERMINATED(e->processing_code) ||
      !TERMINATED(e->currency) || !TERMINATED(e->stan) ||
      !TERMINATED(e->terminal_stan) || !TERMINATED(e->rrn) ||
      !TERMINATED(e->auth_code) || !TERMINATED(e->response_code) ||
      !TERMINATED(e->reason) || !TERMINATED(e->terminal_id) ||
      !TERMINATED(e->merchant_id) || !TERMINATED(e->issuer_id) ||
      !TERMINATED(e->link_id) || !TERMINATED(e->orig_business_date) ||
      !TERMINATED(e->pan_masked) || !TERMINATED(e->saf_mti))
    return 0;
  if (!date_ok(e->business_date) || e->txn_id <= 0 || e->event_no < 0 ||
      !e->event[0] || !e->state[0] || strnlen(e->mti, 5) != 4 ||
      !digits(e->mti, 4))
    return 0;
  if (e->orig_business_date[0] && !date_ok(e->orig_business_date))
    return 0;
  if (e->amount_minor >= 0 && e->sign != 'D' && e->sign != 'C')
    return 0;
  if (e->pan_enc_len > sizeof e->pan_enc)
    return 0;
  if (e->saf_op < DB_SAF_NONE || e->saf_op > DB_SAF_ACK)
    return 0;
  return 1;
}

/* ------------------------------------------------------------------------ */
/* Completions                                                               */

static void port_async_cb(uv_async_t *a);

static void complete(db_journal_t *j, db_journal_req_t *r, int status,
                     const char *why) {
  r->status = status;
  if (status && why)
    snprintf(r->error, sizeof r->error, "%s", why);
  else if (status)
    snprintf(r->error, sizeof r->error, "%s", db_strerror(status));
  db_journal_port_t *p = r->port_;
  pthread_mutex_lock(&j->mu);
  j->held -= r->n;
  if (status)
    j->st.failed += r->n;
  else
    j->st.durable += r->n;
  j->st.queue_depth = j->held;
  /* Tell ports that were refused for lack of room once half is free. */
  if (j->held <= j->capacity / 2)
    for (db_journal_port_t *q = j->ports; q; q = q->next)
      if (q->want_space) {
        q->want_space = 0;
        atomic_store_explicit(&q->space_ready, 1, memory_order_release);
        uv_async_send(&q->async);
      }
  pthread_mutex_unlock(&j->mu);
  r->next_ = NULL;
  pthread_mutex_lock(&p->mu);
  if (p->done_tail)
    p->done_tail->next_ = r;
  else
    p->done_head = r;
  p->done_tail = r;
  pthread_mutex_unlock(&p->mu);
  uv_async_send(&p->async);
}

static void port_free_cb(uv_handle_t *h) {
  db_journal_port_t *p = h->data;
  pthread_mutex_destroy(&p->mu);
  free(p);
}

static void port_unlink(db_journal_port_t *p) {
  db_journal_t *j = p->j;
  if (!j) /* the journal was closed: it let go of its ports */
    return;
  pthread_mutex_lock(&j->mu);
  for (db_journal_port_t **q = &j->ports; *q; q = &(*q)->next)
    if (*q == p) {
      *q = p->next;
      break;
    }
  pthread_mutex_unlock(&j->mu);
}

static void port_async_cb(uv_async_t *a) {
  db_journal_port_t *p = a->data;
  pthread_mutex_lock(&p->mu);
  db_journal_req_t *r = p->done_head;
  p->done_head = p->done_tail = NULL;
  pthread_mutex_unlock(&p->mu);
  while (r) {
    db_journal_req_t *next = r->next_;
    r->next_ = NULL;
    r->done_ = 1;
    p->inflight--;
    r->cb_(r);
    r = next;
  }
  if (atomic_exchange_explicit(&p->space_ready, 0, memory_order_acquire) &&
      p->on_space && !p->closing)
    p->on_space(p->ctx);
  if (p->closing && p->inflight == 0 && !uv_is_closing((uv_handle_t *)a)) {
    port_unlink(p);
    uv_close((uv_handle_t *)a, port_free_cb);
  }
}

int db_journal_port_open(db_journal_t *j, uv_loop_t *loop,
                         void (*on_space)(void *ctx), void *ctx,
                         db_journal_port_t **out) {
  if (!j || !loop || !out)
    return DB_E_INVAL;
  db_journal_port_t *p = calloc(1, sizeof *p);
  if (!p)
    return DB_E_NOMEM;
  p->j = j;
  p->on_space = on_space;
  p->ctx = ctx;
  if (pthread_mutex_init(&p->mu, NULL) != 0) {
    free(p);
    return DB_E_NOMEM;
  }
  if (uv_async_init(loop, &p->async, port_async_cb) != 0) {
    pthread_mutex_destroy(&p->mu);
    free(p);
    return DB_E_NOMEM;
  }
  p->async.data = p;
  pthread_mutex_lock(&j->mu);
  p->next = j->ports;
  j->ports = p;
  pthread_mutex_unlock(&j->mu);
  *out = p;
  return 0;
}

void db_journal_port_close(db_journal_port_t *p) {
  if (!p || p->closing)
    return;
  p->closing = 1;
  if (p->inflight == 0) {
    port_unlink(p);
    uv_close((uv_handle_t *)&p->async, port_free_cb);
  }
}

/* ------------------------------------------------------------------------ */
/* Submission                                                                */

int db_journal_submit(db_journal_port_t *p, db_journal_req_t *req,
                      db_journal_cb cb) {
  if (!p || !req || !cb || p->closing || req->n == 0 ||
      req->n > DB_JOURNAL_REQ_MAX)
    return DB_E_INVAL;
  db_journal_t *j = p->j;
  if (!j)
    return DB_E_SHUTDOWN;
  for (size_t i = 0; i < req->n; i++) {
    if (!event_ok(&req->events[i]))
      return DB_E_INVAL;
    req->events[i].node_id = j->node;
  }
  req->cb_ = cb;
  req->port_ = p;
  req->next_ = NULL;
  req->done_ = 0;
  req->status = 0;
  req->error[0] = '\0';
  req->deadline_ = req->timeout_ms ? now_ms() + req->timeout_ms : 0;
  pthread_mutex_lock(&j->mu);
  if (j->stopping) {
    pthread_mutex_unlock(&j->mu);
    return DB_E_SHUTDOWN;
  }
  if (j->held + req->n > j->capacity) {
    p->want_space = 1;
    pthread_mutex_unlock(&j->mu);
    return DB_E_FULL;
  }
  if (j->tail)
    j->tail->next_ = req;
  else
    j->head = req;
  j->tail = req;
  j->held += req->n;
  j->st.submitted += req->n;
  j->st.queue_depth = j->held;
  pthread_cond_signal(&j->cv);
  pthread_mutex_unlock(&j->mu);
  p->inflight++;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The connection                                                            */

static const char SQL_APPEND[] =
    "SELECT switch.journal_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
    "$11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, "
    "$25, $26, $27, $28, $29, $30, $31, $32, $33, $34, $35)";
static const char SQL_SAF[] =
    "SELECT switch.saf_apply($1, $2, $3, $4, $5, $6, $7, $8)";

static int exec_ok(db_journal_t *j, const char *sql) {
  PGresult *r = PQexec(j->conn, sql);
  ExecStatusType st = PQresultStatus(r);
  int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
  if (!ok)
    snprintf(j->errmsg, sizeof j->errmsg, "%s", PQresultErrorMessage(r));
  PQclear(r);
  return ok;
}

static int prepare(db_journal_t *j, const char *name, const char *sql) {
  PGresult *r = PQprepare(j->conn, name, sql, 0, NULL);
  int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
  if (!ok)
    snprintf(j->errmsg, sizeof j->errmsg, "%s", PQresultErrorMessage(r));
  PQclear(r);
  return ok;
}

static void forget_cache(db_journal_t *j) {
  memset(j->chains, 0, sizeof j->chains);
  j->nparts = 0;
  j->next_part = 0;
}

/* Connects and prepares; 0 or DB_E_CONNECT / DB_E_SQL with j->errmsg. */
static int connect_db(db_journal_t *j) {
  if (j->conn)
    PQfinish(j->conn);
  j->conn = PQconnectdb(j->conninfo);
  forget_cache(j);
  if (PQstatus(j->conn) != CONNECTION_OK) {
    snprintf(j->errmsg, sizeof j->errmsg, "%s", PQerrorMessage(j->conn));
    return DB_E_CONNECT;
  }
  if (!exec_ok(j, "SET TimeZone = 'UTC'; SET DateStyle = 'ISO'; "
                  "SET synchronous_commit = on") ||
      !prepare(j, "ja", SQL_APPEND))
    return DB_E_SQL;
  PGresult *r = PQexec(j->conn, "SELECT to_regprocedure('switch.saf_apply("
                                "integer,text,integer,date[],bigint[],text[],"
                                "text[],text[])') IS NOT NULL");
  j->have_saf = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
                PQgetvalue(r, 0, 0)[0] == 't';
  PQclear(r);
  if (j->have_saf && !prepare(j, "sa", SQL_SAF))
    return DB_E_SQL;
  return 0;
}

static int conn_bad(db_journal_t *j) {
  return !j->conn || PQstatus(j->conn) != CONNECTION_OK;
}

/* ------------------------------------------------------------------------ */
/* Partitions and chain heads                                                */

static int ensure_partition(db_journal_t *j, const char *date) {
  for (unsigned i = 0; i < j->nparts; i++)
    if (strcmp(j->parts[i], date) == 0)
      return 0;
  const char *v[1] = {date};
  PGresult *r =
      PQexecParams(j->conn, "SELECT switch.ensure_journal_partition($1)", 1,
                   NULL, v, NULL, NULL, 0);
  int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
  if (!ok)
    snprintf(j->errmsg, sizeof j->errmsg, "%s", PQresultErrorMessage(r));
  PQclear(r);
  if (!ok)
    return -1;
  unsigned slot = j->nparts < CHAIN_CACHE ? j->nparts++ : j->next_part++;
  j->next_part %= CHAIN_CACHE;
  memcpy(j->parts[slot % CHAIN_CACHE], date, 11);
  return 0;
}

/* The chain of date, loaded from journal_chain_head when not cached. */
static chain_t *chain_for(db_journal_t *j, const char *date) {
  chain_t *free_slot = NULL;
  for (unsigned i = 0; i < CHAIN_CACHE; i++) {
    if (j->chains[i].date[0] && strcmp(j->chains[i].date, date) == 0)
      return &j->chains[i];
    if (!j->chains[i].date[0] && !free_slot)
      free_slot = &j->chains[i];
  }
  chain_t *c = free_slot;
  if (!c) { /* evict the oldest date */
    c = &j->chains[0];
    for (unsigned i = 1; i < CHAIN_CACHE; i++)
      if (strcmp(j->chains[i].date, c->date) < 0)
        c = &j->chains[i];
  }
  char node[8];
  snprintf(node, sizeof node, "%u", j->node);
  const char *v[2] = {date, node};
  PGresult *r = PQexecParams(
      j->conn,
      "SELECT chain_seq, encode(chain_hmac, 'hex') FROM "
      "switch.journal_chain_head WHERE business_date = $1 AND node_id = $2",
      2, NULL, v, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    snprintf(j->errmsg, sizeof j->errmsg, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return NULL;
  }
  memset(c, 0, sizeof *c);
  if (PQntuples(r) == 1) {
    size_t got = 0;
    if (db__unhex(PQgetvalue(r, 0, 1), c->hmac, 32, &got) || got != 32) {
      snprintf(j->errmsg, sizeof j->errmsg, "bad chain head for %s", date);
      PQclear(r);
      return NULL;
    }
    c->seq = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
  }
  PQclear(r);
  memcpy(c->date, date, 11);
  c->wseq = c->seq;
  memcpy(c->whmac, c->hmac, 32);
  return c;
}

/* ------------------------------------------------------------------------ */
/* The HMAC chain through the HSM adapter                                    */

/* link = HMAC(K, prev | SHA-256(canonical(ev))), under the current key. */
static int chain_link(db_journal_t *j, const uint8_t prev[32],
                      const db_event_t *ev, uint8_t out[32],
                      uint32_t *version) {
  return db__chain_link(j->hsm, &j->loop, j->chain_label, 0, prev, ev, out,
                        version);
}

/* ------------------------------------------------------------------------ */
/* One attempt                                                               */

/* chain_seq < 0 marks an event found already journaled: durable, skipped. */
#define SKIPPED(e) ((e)->chain_seq < 0)

static int put_event(sbuf_t *a, const db_event_t *e) {
  int money = e->amount_minor >= 0;
  int hash = e->pan_hash_key_ver > 0;
  int enc = e->pan_enc_len > 0;
  char sign[2] = {money ? e->sign : 0, 0};
  return arr_i64(&a[0], e->txn_id, 0) || arr_i64(&a[1], e->event_no, 0) ||
         ARR_TEXT(&a[2], e->event) || ARR_TEXT(&a[3], e->state) ||
         ARR_TEXT(&a[4], e->mti) || ARR_TEXT(&a[5], e->processing_code) ||
         arr_i64(&a[6], e->amount_minor, !money) || ARR_TEXT(&a[7], sign) ||
         (money ? ARR_TEXT(&a[8], e->currency) : arr_null(&a[8])) ||
         ARR_TEXT(&a[9], e->stan) || ARR_TEXT(&a[10], e->terminal_stan) ||
         arr_i64(&a[11], e->terminal_local_us,
                 e->terminal_local_us == DB_NO_TIME) ||
         arr_i64(&a[12], e->transmission_us,
                 e->transmission_us == DB_NO_TIME) ||
         ARR_TEXT(&a[13], e->rrn) || ARR_TEXT(&a[14], e->auth_code) ||
         ARR_TEXT(&a[15], e->response_code) || ARR_TEXT(&a[16], e->reason) ||
         ARR_TEXT(&a[17], e->terminal_id) || ARR_TEXT(&a[18], e->merchant_id) ||
         arr_i64(&a[19], e->batch_no, e->batch_no < 0) ||
         ARR_TEXT(&a[20], e->issuer_id) || ARR_TEXT(&a[21], e->link_id) ||
         ARR_TEXT(&a[22], e->txn_kind) ||
         ARR_TEXT(&a[23], e->orig_business_date) ||
         ARR_TEXT(&a[24], e->pan_masked) ||
         arr_bytes(&a[25], e->pan_hash, 32, !hash) ||
         arr_i64(&a[26], e->pan_hash_key_ver, !hash) ||
         arr_bytes(&a[27], e->pan_enc, e->pan_enc_len, !enc) ||
         arr_i64(&a[28], e->pan_enc_key_ver, !enc) ||
         arr_i64(&a[29], e->chain_seq, 0) ||
         arr_bytes(&a[30], e->chain_hmac, 32, 0);
}

static const char *const saf_ops[] = {
    [DB_SAF_ARM] = "arm",         [DB_SAF_DISARM] = "disarm",
    [DB_SAF_RELEASE] = "release", [DB_SAF_REVERSE] = "reverse",
    [DB_SAF_ADVICE] = "advice",   [DB_SAF_ACK] = "ack"};

static int put_saf(sbuf_t *s, const db_event_t *e) {
  const char *date =
      e->orig_business_date[0] ? e->orig_business_date : e->business_date;
  return arr_text(&s[0], date, 11) || arr_i64(&s[1], e->txn_id, 0) ||
         arr_text(&s[2], saf_ops[e->saf_op], 8) ||
         ARR_TEXT(&s[3], e->saf_mti) || ARR_TEXT(&s[4], e->link_id);
}

/* Classifies a failed result. */
static try_t classify(db_journal_t *j, PGresult *r) {
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  const char *cons = r ? PQresultErrorField(r, PG_DIAG_CONSTRAINT_NAME) : NULL;
  snprintf(j->errmsg, sizeof j->errmsg, "%s",
           r ? PQresultErrorMessage(r) : PQerrorMessage(j->conn));
  if (conn_bad(j) || !state || strncmp(state, "08", 2) == 0 ||
      strncmp(state, "57P", 3) == 0)
    return TRY_CONN;
  if (strcmp(state, "SW001") == 0)
    return TRY_DUP;
  if (strcmp(state, "SW002") == 0)
    return TRY_HEAD;
  if (cons && strcmp(cons, "journal_closed") == 0)
    return TRY_CLOSED;
  if (strncmp(state, "23", 2) == 0 || strncmp(state, "22", 2) == 0 ||
      strcmp(state, "SW003") == 0 || strcmp(state, "SW010") == 0)
    return TRY_DATA;
  return TRY_SQL;
}

/* Builds the arrays of group g of plan p: the events of chain c, numbered
 * from the chain's working head, each with its HMAC link. */
static try_t build_group(db_journal_t *j, db_journal_req_t **reqs, size_t n,
                         plan_t *p, int g) {
  chain_t *c = p->groups[g];
  for (int attempt = 0; attempt < 3; attempt++) {
    sbuf_t *a = j->arr[g];
    for (int k = 0; k < NARRAYS; k++)
      a[k].len = 0;
    int64_t seq = c->wseq;
    uint8_t prev[32];
    memcpy(prev, c->whmac, 32);
    uint32_t ver = 0;
    int changed = 0;
    for (size_t i = 0; i < n && !changed; i++)
      for (size_t e = 0; e < reqs[i]->n; e++) {
        db_event_t *ev = &reqs[i]->events[e];
        if (SKIPPED(ev) || strcmp(ev->business_date, c->date) != 0)
          continue;
        ev->chain_seq = ++seq;
        uint32_t v = 0;
        int rc = chain_link(j, prev, ev, ev->chain_hmac, &v);
        if (rc) {
          snprintf(j->errmsg, sizeof j->errmsg,
                   "HMAC of the journal chain under \"%s\": %s", j->chain_label,
                   hsm_strerror(rc));
          return TRY_HSM;
        }
        if (ver && v != ver) { /* the key rotated mid-batch: start again */
          changed = 1;
          break;
        }
        ver = v;
        ev->chain_key_ver = v;
        memcpy(prev, ev->chain_hmac, 32);
        if (put_event(a, ev)) {
          snprintf(j->errmsg, sizeof j->errmsg, "out of memory");
          return TRY_SQL;
        }
      }
    if (changed)
      continue;
    for (int k = 0; k < NARRAYS; k++)
      if (arr_close(&a[k])) {
        snprintf(j->errmsg, sizeof j->errmsg, "out of memory");
        return TRY_SQL;
      }
    p->prev_seq[g] = c->wseq;
    p->new_seq[g] = seq;
    memcpy(p->new_hmac[g], prev, 32);
    p->ver[g] = ver;
    return TRY_OK;
  }
  snprintf(j->errmsg, sizeof j->errmsg,
           "the chain key kept changing version during one batch");
  return TRY_HSM;
}

/* Reads one query's results in the pipeline; keeps the first failure. */
static try_t read_one(db_journal_t *j, try_t sofar) {
  PGresult *r = PQgetResult(j->conn);
  if (!r)
    return sofar == TRY_OK ? TRY_CONN : sofar;
  ExecStatusType st = PQresultStatus(r);
  try_t t = TRY_OK;
  if (st == PGRES_FATAL_ERROR)
    t = classify(j, r);
  else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK &&
           st != PGRES_PIPELINE_ABORTED)
    t = classify(j, r);
  PQclear(r);
  /* Each query's results end with NULL. */
  while ((r = PQgetResult(j->conn)) != NULL) {
    PQclear(r);
    if (conn_bad(j))
      return TRY_CONN;
  }
  return sofar != TRY_OK ? sofar : t;
}

/* A cached chain, without asking the database; NULL if not cached. */
static chain_t *chain_cached(db_journal_t *j, const char *date) {
  for (unsigned i = 0; i < CHAIN_CACHE; i++)
    if (j->chains[i].date[0] && strcmp(j->chains[i].date, date) == 0)
      return &j->chains[i];
  return NULL;
}

static int partition_cached(db_journal_t *j, const char *date) {
  for (unsigned i = 0; i < j->nparts; i++)
    if (strcmp(j->parts[i], date) == 0)
      return 1;
  return 0;
}

/* Working heads back to the confirmed ones: after a failure, nothing built
 * on an unconfirmed batch may be sent. */
static void rollback_working(db_journal_t *j) {
  for (unsigned i = 0; i < CHAIN_CACHE; i++) {
    j->chains[i].wseq = j->chains[i].seq;
    memcpy(j->chains[i].whmac, j->chains[i].hmac, 32);
  }
}

/* Finds the chains of the batch.  may_query: partitions and chain heads
 * not cached are fetched (nothing may be in flight then); otherwise an
 * uncached date answers TRY_LATER. */
#define TRY_LATER ((try_t)100)
static try_t plan_batch(db_journal_t *j, db_journal_req_t **reqs, size_t n,
                        plan_t *p, int may_query) {
  memset(p, 0, sizeof *p);
  for (size_t i = 0; i < n; i++)
    for (size_t e = 0; e < reqs[i]->n; e++) {
      db_event_t *ev = &reqs[i]->events[e];
      if (SKIPPED(ev))
        continue;
      p->saf |= ev->saf_op != DB_SAF_NONE;
      int g = 0;
      while (g < p->ng && strcmp(p->groups[g]->date, ev->business_date) != 0)
        g++;
      if (g < p->ng)
        continue;
      if (p->ng == MAX_GROUPS) {
        snprintf(j->errmsg, sizeof j->errmsg, "too many dates in one batch");
        return TRY_SQL;
      }
      if (!may_query) {
        if (!partition_cached(j, ev->business_date) ||
            !(p->groups[p->ng] = chain_cached(j, ev->business_date)))
          return TRY_LATER;
      } else if (ensure_partition(j, ev->business_date) != 0 ||
                 !(p->groups[p->ng] = chain_for(j, ev->business_date))) {
        return conn_bad(j) ? TRY_CONN : TRY_SQL;
      }
      p->ng++;
    }
  if (p->saf && !j->have_saf) {
    snprintf(j->errmsg, sizeof j->errmsg,
             "the database has no switch.saf_apply: run switchctl migrate");
    return TRY_SQL;
  }
  return TRY_OK;
}

/* Numbers, chains and encodes the planned batch into the arrays. */
static try_t build_batch(db_journal_t *j, db_journal_req_t **reqs, size_t n,
                         plan_t *p) {
  uint64_t tp = now_us();
  for (int g = 0; g < p->ng; g++) {
    try_t t = build_group(j, reqs, n, p, g);
    if (t != TRY_OK)
      return t;
  }
  if (p->saf) {
    for (int k = 0; k < 5; k++)
      j->saf[k].len = 0;
    for (size_t i = 0; i < n; i++)
      for (size_t e = 0; e < reqs[i]->n; e++) {
        db_event_t *ev = &reqs[i]->events[e];
        if (!SKIPPED(ev) && ev->saf_op != DB_SAF_NONE && put_saf(j->saf, ev))
          return TRY_SQL;
      }
    for (int k = 0; k < 5; k++)
      if (arr_close(&j->saf[k]))
        return TRY_SQL;
  }
  pthread_mutex_lock(&j->mu);
  j->st.prepare_us_sum += now_us() - tp;
  pthread_mutex_unlock(&j->mu);
  return TRY_OK;
}

/* Sends the built batch as one pipeline closed by one Sync (one implicit
 * transaction).  libpq copies the parameters at once, so the arrays may be
 * reused for the next batch as soon as this returns.  The chains' working
 * heads move past it. */
static try_t send_batch(db_journal_t *j, plan_t *p) {
  p->t0 = now_us();
  if (PQenterPipelineMode(j->conn) != 1)
    return TRY_CONN;
  char node[8], prev[24], ver[16], lease[16];
  snprintf(node, sizeof node, "%u", j->node);
  snprintf(lease, sizeof lease, "%u", j->lease_ms);
  int ok = 1;
  p->sent = 0;
  for (int g = 0; g < p->ng && ok; g++) {
    snprintf(prev, sizeof prev, "%" PRId64, p->prev_seq[g]);
    snprintf(ver, sizeof ver, "%u", p->ver[g]);
    const char *v[NPARAMS] = {p->groups[g]->date, node, prev, ver};
    for (int k = 0; k < NARRAYS; k++)
      v[4 + k] = j->arr[g][k].p;
    ok = PQsendQueryPrepared(j->conn, "ja", NPARAMS, v, NULL, NULL, 0) == 1;
    p->sent += ok;
  }
  if (ok && p->saf) {
    const char *v[8] = {node,        j->saf_owner, lease,       j->saf[0].p,
                        j->saf[1].p, j->saf[2].p,  j->saf[3].p, j->saf[4].p};
    ok = PQsendQueryPrepared(j->conn, "sa", 8, v, NULL, NULL, 0) == 1;
    p->sent += ok;
  }
  if (!ok || PQpipelineSync(j->conn) != 1) {
    snprintf(j->errmsg, sizeof j->errmsg, "%s", PQerrorMessage(j->conn));
    return TRY_CONN;
  }
  for (int g = 0; g < p->ng; g++) {
    p->groups[g]->wseq = p->new_seq[g];
    memcpy(p->groups[g]->whmac, p->new_hmac[g], 32);
  }
  return TRY_OK;
}

/* Reads the sent batch's results: TRY_OK once its COMMIT returned (the
 * chains' confirmed heads move), else why not (working heads roll back). */
static try_t finish_batch(db_journal_t *j, plan_t *p) {
  try_t out = TRY_OK;
  for (int q = 0; q < p->sent && out != TRY_CONN; q++)
    out = read_one(j, out);
  if (out != TRY_CONN) {
    PGresult *r = PQgetResult(j->conn);
    int synced = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
    PQclear(r);
    if (!synced || PQexitPipelineMode(j->conn) != 1)
      out = TRY_CONN;
  }
  if (out != TRY_OK) {
    rollback_working(j);
    return out;
  }
  uint64_t dt = now_us() - p->t0;
  for (int g = 0; g < p->ng; g++) {
    p->groups[g]->seq = p->new_seq[g];
    memcpy(p->groups[g]->hmac, p->new_hmac[g], 32);
  }
  int b = 0;
  while (b < DB_JOURNAL_BUCKETS - 1 && dt >= db_journal_bucket_us(b))
    b++;
  pthread_mutex_lock(&j->mu);
  j->st.batches++;
  j->st.commit_us_last = dt;
  j->st.commit_us_sum += dt;
  j->st.commit_hist[b]++;
  pthread_mutex_unlock(&j->mu);
  return TRY_OK;
}

/* One attempt at the batch, nothing else in flight: one transaction, one
 * round trip. */
static try_t try_batch(db_journal_t *j, db_journal_req_t **reqs, size_t n) {
  if (conn_bad(j))
    return TRY_CONN;
  rollback_working(j);
  plan_t p;
  try_t t = plan_batch(j, reqs, n, &p, 1);
  if (t == TRY_OK && p.ng == 0)
    return TRY_OK; /* every event was already journaled */
  if (t == TRY_OK)
    t = build_batch(j, reqs, n, &p);
  if (t == TRY_OK)
    t = send_batch(j, &p);
  if (t == TRY_OK)
    t = finish_batch(j, &p);
  if (t != TRY_OK)
    rollback_working(j);
  return t;
}

/* After SW001: marks the batch's events that are already journaled. */
static int mark_existing(db_journal_t *j, db_journal_req_t **reqs, size_t n) {
  sbuf_t *a = j->arr[0];
  for (int k = 0; k < 3; k++)
    a[k].len = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t e = 0; e < reqs[i]->n; e++) {
      db_event_t *ev = &reqs[i]->events[e];
      if (!SKIPPED(ev) &&
          (arr_text(&a[0], ev->business_date, 11) ||
           arr_i64(&a[1], ev->txn_id, 0) || arr_i64(&a[2], ev->event_no, 0)))
        return -1;
    }
  for (int k = 0; k < 3; k++)
    if (arr_close(&a[k]))
      return -1;
  char node[8];
  snprintf(node, sizeof node, "%u", j->node);
  const char *v[4] = {node, a[0].p, a[1].p, a[2].p};
  PGresult *r = PQexecParams(
      j->conn,
      "SELECT business_date::text, txn_id, event_no FROM switch.journal_event "
      "WHERE node_id = $1 AND (business_date, txn_id, event_no) IN "
      "(SELECT * FROM unnest($2::date[], $3::bigint[], $4::integer[]))",
      4, NULL, v, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    snprintf(j->errmsg, sizeof j->errmsg, "%s", PQresultErrorMessage(r));
    PQclear(r);
    return -1;
  }
  for (int row = 0; row < PQntuples(r); row++) {
    const char *d = PQgetvalue(r, row, 0);
    long long txn = strtoll(PQgetvalue(r, row, 1), NULL, 10);
    long ev_no = strtol(PQgetvalue(r, row, 2), NULL, 10);
    for (size_t i = 0; i < n; i++)
      for (size_t e = 0; e < reqs[i]->n; e++) {
        db_event_t *ev = &reqs[i]->events[e];
        if (ev->txn_id == txn && ev->event_no == ev_no &&
            strcmp(ev->business_date, d) == 0)
          ev->chain_seq = -1;
      }
  }
  PQclear(r);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The writer thread                                                         */

/* Sleeps up to ms, or until close is called. */
static void nap(db_journal_t *j, uint32_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&j->mu);
  if (!j->stopping)
    pthread_cond_timedwait(&j->cv, &j->mu, &ts);
  pthread_mutex_unlock(&j->mu);
}

static void set_connected(db_journal_t *j, int up) {
  pthread_mutex_lock(&j->mu);
  j->st.connected = up;
  if (up)
    j->st.reconnects++;
  pthread_mutex_unlock(&j->mu);
}

static void fail_all(db_journal_t *j, db_journal_req_t **reqs, size_t n,
                     int status, const char *why) {
  for (size_t i = 0; i < n; i++)
    complete(j, reqs[i], status, why);
}

static void write_batch(db_journal_t *j, db_journal_req_t **reqs, size_t n);

static void write_isolated(db_journal_t *j, db_journal_req_t **reqs, size_t n) {
  for (size_t i = 0; i < n; i++)
    write_batch(j, &reqs[i], 1);
}

/* Writes reqs[0..n) until each is durable or has failed. */
static void write_batch(db_journal_t *j, db_journal_req_t **reqs, size_t n) {
  uint32_t backoff = 50;
  int head_retries = 0, in_doubt = 0, closed_checked = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t e = 0; e < reqs[i]->n; e++)
      reqs[i]->events[e].chain_seq = 0;
  for (;;) {
    uint64_t t = now_ms();
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
      if (reqs[i]->deadline_ && t >= reqs[i]->deadline_)
        complete(j, reqs[i], DB_E_TIMEOUT,
                 in_doubt ? "timed out while the database was unreachable; "
                            "the outcome of the last attempt is unknown "
                            "(resubmitting is safe: events are idempotent)"
                          : "timed out before the journal could write it");
      else
        reqs[kept++] = reqs[i];
    }
    n = kept;
    if (n == 0)
      return;
    pthread_mutex_lock(&j->mu);
    int past_grace = j->stopping && t >= j->grace_deadline;
    pthread_mutex_unlock(&j->mu);
    if (past_grace) {
      fail_all(j, reqs, n, DB_E_SHUTDOWN,
               in_doubt ? "journal closed; the outcome of the last attempt "
                          "is unknown"
                        : "journal closed before this was written");
      return;
    }
    if (conn_bad(j)) {
      int rc = connect_db(j);
      if (rc) {
        set_connected(j, 0);
        jlog(j, LOG_WARN, "cannot reach the database (retry in %u ms): %s",
             backoff, j->errmsg);
        nap(j, backoff);
        backoff = backoff * 2 > j->reconnect_max_ms ? j->reconnect_max_ms
                                                    : backoff * 2;
        continue;
      }
      set_connected(j, 1);
      jlog(j, LOG_INFO, "connected to the database%s",
           in_doubt ? "; resending the batch in doubt" : "");
    }
    try_t r = try_batch(j, reqs, n);
    switch (r) {
    case TRY_OK:
      fail_all(j, reqs, n, 0, NULL);
      return;
    case TRY_CONN:
      in_doubt = 1;
      jlog(j, LOG_WARN, "connection lost during a batch of %zu: %s", n,
           j->errmsg);
      PQfinish(j->conn);
      j->conn = NULL;
      set_connected(j, 0);
      pthread_mutex_lock(&j->mu);
      j->st.retries++;
      pthread_mutex_unlock(&j->mu);
      continue;
    case TRY_DUP:
      if (mark_existing(j, reqs, n) != 0) {
        if (!conn_bad(j)) {
          fail_all(j, reqs, n, DB_E_SQL, j->errmsg);
          return;
        }
      }
      continue;
    case TRY_HEAD:
      forget_cache(j);
      if (++head_retries > 2) {
        char why[160];
        snprintf(why, sizeof why,
                 "the chain of node %u moved under this writer: another "
                 "writer uses the same node id",
                 j->node);
        jlog(j, LOG_ERR, "%s", why);
        fail_all(j, reqs, n, DB_E_CONFLICT, why);
        return;
      }
      continue;
    case TRY_CLOSED:
      /* A closed date refuses even events it already holds (the CHECK
       * comes before ON CONFLICT): those are durable, say so, and try
       * the rest once more. */
      if (!closed_checked) {
        closed_checked = 1;
        if (mark_existing(j, reqs, n) == 0)
          continue;
      }
      /* fall through */
    case TRY_DATA:
      forget_cache(j);
      if (n > 1) {
        write_isolated(j, reqs, n);
        return;
      }
      jlog(j, LOG_WARN, "event refused: %s", j->errmsg);
      complete(j, reqs[0], r == TRY_CLOSED ? DB_E_CLOSED : DB_E_REJECTED,
               j->errmsg);
      return;
    case TRY_HSM:
      jlog(j, LOG_WARN, "%s (retry in %u ms)", j->errmsg, backoff);
      nap(j, backoff);
      backoff =
          backoff * 2 > j->reconnect_max_ms ? j->reconnect_max_ms : backoff * 2;
      continue;
    case TRY_SQL:
      jlog(j, LOG_ERR, "batch of %zu failed: %s", n, j->errmsg);
      fail_all(j, reqs, n, DB_E_SQL, j->errmsg);
      return;
    }
  }
}

/* Takes whole requests into out, up to max_batch events and MAX_GROUPS
 * dates.  Under j->mu. */
static size_t take_batch(db_journal_t *j, db_journal_req_t **out) {
  size_t n = 0, events = 0;
  char dates[MAX_GROUPS][11];
  int nd = 0;
  while (j->head && n < j->batch_cap) {
    db_journal_req_t *r = j->head;
    if (n > 0 && events + r->n > j->max_batch)
      break;
    int nd2 = nd;
    char d2[MAX_GROUPS][11];
    memcpy(d2, dates, sizeof dates);
    int fits = 1;
    for (size_t e = 0; e < r->n && fits; e++) {
      int k = 0;
      while (k < nd2 && strcmp(d2[k], r->events[e].business_date) != 0)
        k++;
      if (k == nd2) {
        if (nd2 == MAX_GROUPS)
          fits = 0;
        else
          memcpy(d2[nd2++], r->events[e].business_date, 11);
      }
    }
    if (!fits && n > 0)
      break;
    memcpy(dates, d2, sizeof dates);
    nd = nd2;
    j->head = r->next_;
    if (!j->head)
      j->tail = NULL;
    r->next_ = NULL;
    out[n++] = r;
    events += r->n;
  }
  return n;
}

/* Whether a batch may take the fast path: connected, nothing past its
 * deadline, not shutting down.  Anything else goes to write_batch. */
static int fast_ok(db_journal_t *j, db_journal_req_t **reqs, size_t n) {
  if (conn_bad(j))
    return 0;
  uint64_t t = now_ms();
  for (size_t i = 0; i < n; i++) {
    if (reqs[i]->deadline_ && t >= reqs[i]->deadline_)
      return 0;
    for (size_t e = 0; e < reqs[i]->n; e++)
      reqs[i]->events[e].chain_seq = 0;
  }
  pthread_mutex_lock(&j->mu);
  int stopping = j->stopping;
  pthread_mutex_unlock(&j->mu);
  return !stopping;
}

/* The writer: while one batch commits on the server, the next one is taken
 * and built (chain and arrays) on the other core, then sent as soon as the
 * first is confirmed.  Any failure drops to write_batch, one batch at a
 * time, with everything built on the unconfirmed batch thrown away. */
static void *writer_main(void *arg) {
  db_journal_t *j = arg;
  db_journal_req_t **cur = j->batch, **next = j->batch2;
  size_t ncur = 0, nnext = 0;
  plan_t pc, pn;
  int cur_built = 0;
  for (;;) {
    if (ncur == 0) {
      pthread_mutex_lock(&j->mu);
      while (!j->head && !j->stopping)
        pthread_cond_wait(&j->cv, &j->mu);
      if (!j->head) {
        pthread_mutex_unlock(&j->mu);
        break;
      }
      ncur = take_batch(j, cur);
      pthread_mutex_unlock(&j->mu);
      cur_built = 0;
    }
    try_t t = TRY_LATER;
    if (cur_built) {
      pc = pn;
      t = TRY_OK;
      pthread_mutex_lock(&j->mu);
      j->st.overlapped++;
      pthread_mutex_unlock(&j->mu);
    } else if (fast_ok(j, cur, ncur)) {
      rollback_working(j);
      t = plan_batch(j, cur, ncur, &pc, 1);
      if (t == TRY_OK && pc.ng > 0)
        t = build_batch(j, cur, ncur, &pc);
      else if (t == TRY_OK)
        t = TRY_LATER;
    }
    if (t == TRY_OK)
      t = send_batch(j, &pc);
    if (t != TRY_OK) {
      rollback_working(j);
      write_batch(j, cur, ncur);
      ncur = 0;
      continue;
    }
    /* cur is on the server: take and build the next batch meanwhile. */
    nnext = 0;
    int next_built = 0;
    pthread_mutex_lock(&j->mu);
    if (j->head && !j->stopping)
      nnext = take_batch(j, next);
    pthread_mutex_unlock(&j->mu);
    if (nnext && fast_ok(j, next, nnext) &&
        plan_batch(j, next, nnext, &pn, 0) == TRY_OK && pn.ng > 0 &&
        build_batch(j, next, nnext, &pn) == TRY_OK)
      next_built = 1;
    t = finish_batch(j, &pc);
    if (t == TRY_OK) {
      fail_all(j, cur, ncur, 0, NULL);
    } else {
      next_built = 0; /* built on a head that was not confirmed */
      rollback_working(j);
      write_batch(j, cur, ncur);
    }
    db_journal_req_t **swap = cur;
    cur = next;
    next = swap;
    ncur = nnext;
    cur_built = next_built;
  }
  return NULL;
}

/* ------------------------------------------------------------------------ */
/* Open and close                                                            */

static void destroy(db_journal_t *j) {
  if (j->conn)
    PQfinish(j->conn);
  if (j->hsm)
    hsm_close(j->hsm);
  if (j->loop_ok) {
    uv_run(&j->loop, UV_RUN_DEFAULT);
    uv_loop_close(&j->loop);
  }
  for (int g = 0; g < MAX_GROUPS; g++)
    for (int k = 0; k < NARRAYS; k++)
      free(j->arr[g][k].p);
  for (int k = 0; k < 5; k++)
    free(j->saf[k].p);
  free(j->batch);
  free(j->batch2);
  free(j->conninfo);
  free(j->chain_label);
  free(j->saf_owner);
  pthread_cond_destroy(&j->cv);
  pthread_mutex_destroy(&j->mu);
  free(j);
}

int db_journal_open(db_journal_t **out, const db_journal_config_t *cfg,
                    char *err, size_t errcap) {
  char scratch[8];
  if (!err || errcap == 0) {
    err = scratch;
    errcap = sizeof scratch;
  }
  err[0] = '\0';
  if (!out || !cfg || !cfg->conninfo || !cfg->hsm_config ||
      !cfg->chain_key_label || !cfg->chain_key_label[0]) {
    snprintf(err, errcap,
             "journal: conninfo, hsm_config and "
             "chain_key_label are required");
    return DB_E_INVAL;
  }
  db_journal_t *j = calloc(1, sizeof *j);
  if (!j)
    return DB_E_NOMEM;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, &ca);
  pthread_condattr_destroy(&ca);
  char owner[32];
  snprintf(owner, sizeof owner, "node-%u", cfg->node_id);
  j->conninfo = dupstr(cfg->conninfo);
  j->chain_label = dupstr(cfg->chain_key_label);
  j->saf_owner = dupstr(cfg->saf_owner ? cfg->saf_owner : owner);
  j->node = cfg->node_id;
  j->lease_ms = cfg->saf_lease_ms ? cfg->saf_lease_ms : 30000;
  j->capacity = cfg->queue_capacity ? cfg->queue_capacity : 65536;
  j->max_batch = cfg->max_batch ? cfg->max_batch : 500;
  j->reconnect_max_ms = cfg->reconnect_max_ms ? cfg->reconnect_max_ms : 5000;
  j->log = cfg->log;
  j->log_ctx = cfg->log_ctx;
  j->batch_cap = j->max_batch;
  j->batch = calloc(j->batch_cap, sizeof *j->batch);
  j->batch2 = calloc(j->batch_cap, sizeof *j->batch2);
  j->st.queue_capacity = j->capacity;
  if (!j->conninfo || !j->chain_label || !j->saf_owner || !j->batch ||
      !j->batch2 || j->capacity < DB_JOURNAL_REQ_MAX) {
    snprintf(err, errcap, "journal: out of memory or queue too small");
    destroy(j);
    return DB_E_NOMEM;
  }
  if (uv_loop_init(&j->loop) != 0) {
    destroy(j);
    return DB_E_NOMEM;
  }
  j->loop_ok = 1;
  char herr[256] = "";
  int rc = hsm_open(&j->hsm, &j->loop, (const hsm_config_t *)cfg->hsm_config,
                    herr, sizeof herr);
  if (rc) {
    j->hsm = NULL;
    snprintf(err, errcap, "journal: HSM adapter: %s", herr);
    destroy(j);
    return DB_E_HSM;
  }
  hsm_key_info_t info;
  rc = hsm_key_info(j->hsm, j->chain_label, &info);
  if (rc || info.usage != HSM_USAGE_HMAC) {
    snprintf(err, errcap, "journal: chain key \"%s\": %s", j->chain_label,
             rc ? hsm_strerror(rc) : "not an HMAC key");
    destroy(j);
    return DB_E_HSM;
  }
  rc = connect_db(j);
  if (rc) {
    snprintf(err, errcap, "journal: %s", j->errmsg);
    err[strcspn(err, "\n")] = '\0';
    destroy(j);
    return rc;
  }
  j->st.connected = 1;
  if (pthread_create(&j->thread, NULL, writer_main, j) != 0) {
    snprintf(err, errcap, "journal: cannot start the writer thread");
    destroy(j);
    return DB_E_NOMEM;
  }
  j->started = 1;
  *out = j;
  return 0;
}

void db_journal_close(db_journal_t *j, uint32_t grace_ms) {
  if (!j)
    return;
  pthread_mutex_lock(&j->mu);
  j->stopping = 1;
  j->grace_deadline = now_ms() + grace_ms;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
  if (j->started)
    pthread_join(j->thread, NULL);
  /* Ports outlive the journal until they deliver what is pending. */
  pthread_mutex_lock(&j->mu);
  for (db_journal_port_t *p = j->ports; p; p = p->next)
    p->j = NULL;
  j->ports = NULL;
  pthread_mutex_unlock(&j->mu);
  destroy(j);
}

/* 2^((i + 1) / 4) us, rounded up: 2, 2, 2, 2, 3, 3, 4, 4, 5, ... */
uint64_t db_journal_bucket_us(int i) {
  static const uint64_t quarter[3] = {1190, 1415, 1682}; /* 2^(r/4) x1000 */
  if (i < 0)
    return 0;
  if (i >= DB_JOURNAL_BUCKETS)
    return UINT64_MAX;
  uint64_t v = (uint64_t)1 << ((i + 1) / 4);
  int r = (i + 1) % 4;
  return r ? (v * quarter[r - 1] + 999) / 1000 : v;
}

uint64_t db_journal_commit_percentile_us(const db_journal_stats_t *st,
                                         double p) {
  uint64_t total = 0;
  for (int i = 0; i < DB_JOURNAL_BUCKETS; i++)
    total += st->commit_hist[i];
  if (total == 0 || p <= 0 || p >= 100)
    return 0;
  uint64_t want = (uint64_t)((double)total * p / 100.0 + 0.999999);
  uint64_t seen = 0;
  for (int i = 0; i < DB_JOURNAL_BUCKETS; i++) {
    seen += st->commit_hist[i];
    if (seen >= want)
      return db_journal_bucket_us(i);
  }
  return db_journal_bucket_us(DB_JOURNAL_BUCKETS - 1);
}

void db_journal_stats(db_journal_t *j, db_journal_stats_t *out) {
  pthread_mutex_lock(&j->mu);
  *out = j->st;
  pthread_mutex_unlock(&j->mu);
}
