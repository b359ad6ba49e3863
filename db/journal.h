/*
 * journal.h — the journal writer: one thread with its own libpq connection
 * that makes events durable in group commits (docs/journal.md).
 *
 * Threads.  db_journal_open() starts the writer thread.  Each libuv loop
 * that submits events opens a port on its loop (db_journal_port_open); a
 * submission is queued in the writer's bounded queue and its completion
 * (durable or failed) comes back as a callback on that loop, through the
 * port's uv_async_t.  Nothing on a loop ever waits for PostgreSQL.
 *
 * Contract.  A request (one or more events, with the SAF changes they
 * cause) is reported durable (status 0) only after the COMMIT of the
 * transaction holding all of it returned.  Every event carries its
 * idempotency key (business_date, node_id, txn_id, event_no) and is
 * written ON CONFLICT DO NOTHING: an event already in the journal (a retry
 * after a lost COMMIT, a resubmission) is reported durable and not written
 * twice.  When PostgreSQL is down or restarts, the writer reconnects with
 * backoff and keeps its queue; a request fails only when its deadline
 * passes (DB_E_TIMEOUT), the database refuses one of its rows for good
 * (DB_E_REJECTED, DB_E_CLOSED: the other requests of the batch are still
 * written), or the journal is closed (DB_E_SHUTDOWN).  A full queue is
 * back-pressure: db_journal_submit returns DB_E_FULL and the caller stops
 * reading from its terminals until db_journal_port's on_space callback.
 *
 * Integrity.  The writer numbers the events of each (business date, node)
 * chain 1, 2, 3, ... and sets chain_hmac = HMAC-SHA-256 under the HMAC key
 * chain_key_label of the HSM adapter over the previous link and the
 * event's canonical form (db_event_canonical).  db_journal_verify checks
 * it.
 */
#ifndef DB_JOURNAL_H
#define DB_JOURNAL_H

#include "db.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct uv_loop_s;
struct hsm_s;

/* "Absent" markers for the optional numeric fields. */
#define DB_NONE (-1)
#define DB_NO_TIME INT64_MIN

/* What an event does to the SAF queue (switch.saf), in the same
 * transaction as the event (docs/transaction-model.md, docs/saf.md).  The
 * writer passes the original's business date (orig_business_date when
 * set), txn_id, saf_mti and link_id to switch.saf_apply:
 *  ARM      insert the original's reversal (saf_mti 0420) in state
 *           'armed', leased to this node (saf_lease_ms): the request may
 *           now be sent.
 *  DISARM   the outcome is committed: the armed reversal becomes
 *           'disarmed' (not owed; a live one is never dropped).
 *  RELEASE  timeout or undeliverable reply: the armed reversal becomes
 *           'live' (due now) for store-and-forward.
 *  REVERSE  a reversal owed that was not armed (a terminal 0400 after an
 *           approval): insert it 'live'; merged with one that exists.
 *  ADVICE   insert an advice (saf_mti 0120/0220) 'live'.
 *  ACK      the issuer acknowledged: saf_mti says which row (an advice MTI
 *           or its response acks the advice; empty or a reversal MTI the
 *           reversal).
 * The database refusing a SAF change fails the request (DB_E_REJECTED)
 * and nothing of it is written: events and SAF rows are one transaction.
 */
typedef enum {
  DB_SAF_NONE = 0,
  DB_SAF_ARM,
  DB_SAF_DISARM,
  DB_SAF_RELEASE,
  DB_SAF_REVERSE,
  DB_SAF_ADVICE,
  DB_SAF_ACK
} db_saf_op_t;

/* One journal event: plain data (no pointers), copied into the writer's
 * queue at submission.  Text fields are NUL-terminated; "" means NULL.
 * The PAN is never here in clear: only masked, hashed and encrypted. */
typedef struct db_event_s {
  char business_date[11]; /* YYYY-MM-DD */
  uint16_t node_id;
  int64_t txn_id;
  int32_t event_no;  /* 0 for received, then 1, 2, ... */
  char event[20];    /* received, armed, forwarded, response, ... */
  char state[17];    /* the transaction's state after this event */
  char txn_kind[11]; /* received only: purchase, cash, refund, ... */
  char mti[5];
  char processing_code[7];
  int64_t amount_minor; /* DB_NONE: no amount (and no sign, currency) */
  char sign;            /* 'D' or 'C' */
  char currency[4];     /* ISO 4217 numeric */
  char stan[7];         /* DE11 to the issuer */
  char terminal_stan[7];
  int64_t terminal_local_us; /* DE12/13 with the year, µs; DB_NO_TIME */
  int64_t transmission_us;   /* DE7 sent, µs since the epoch, UTC */
  char rrn[13];
  char auth_code[7];
  char response_code[3];
  char reason[41];
  char terminal_id[9];
  char merchant_id[16];
  int32_t batch_no; /* DB_NONE */
  char issuer_id[33];
  char link_id[33];
  char orig_business_date[11]; /* adjustment into a later date: "" if not */
  char pan_masked[20];
  uint8_t pan_hash[32];
  int32_t pan_hash_key_ver; /* 0: no hash */
  uint8_t pan_enc[128];
  uint16_t pan_enc_len; /* 0: none */
  int32_t pan_enc_key_ver;
  /* SAF change made in the same transaction */
  db_saf_op_t saf_op;
  char saf_mti[5];
  /* Set by the writer (read them in the completion callback). */
  int64_t chain_seq;
  uint8_t chain_hmac[32];
  uint32_t chain_key_ver;
} db_event_t;

/* An event with every optional field absent. */
void db_event_init(db_event_t *ev);

/* The canonical byte string the chain HMAC covers (docs/journal.md): every
 * column but the chain's own, in a fixed order, each as a length-prefixed
 * text.  Returns its length, or 0 if cap is too small (2048 is enough). */
size_t db_event_canonical(const db_event_t *ev, uint8_t *out, size_t cap);

typedef struct db_journal_config_s {
  const char *conninfo; /* libpq connection string, as switch_writer */
  uint16_t node_id;
  const char *saf_owner;     /* this node's SAF owner name; NULL: node-N */
  uint32_t saf_lease_ms;     /* armed reversals' lease; 0: 30000 */
  size_t queue_capacity;     /* events; 0: 65536 */
  size_t max_batch;          /* events per transaction; 0: 500 */
  uint32_t reconnect_max_ms; /* backoff cap; 0: 5000 */
  /* The HSM adapter configuration the writer opens on its own loop, and
   * the label of the HMAC key of the chain. */
  const void *hsm_config; /* const hsm_config_t * */
  const char *chain_key_label;
  /* Log lines (one line, no PAN, no key) from the writer thread; NULL:
   * stderr. */
  void (*log)(void *ctx, int level, const char *line);
  void *log_ctx;
} db_journal_config_t;

typedef struct db_journal_s db_journal_t;
typedef struct db_journal_port_s db_journal_port_t;
typedef struct db_journal_req_s db_journal_req_t;

typedef void (*db_journal_cb)(db_journal_req_t *req);

/* A submission: n events (n <= 16) made durable together.  The events are
 * copied at submission; the req itself must stay valid until its callback,
 * which runs on the port's loop.  status: 0 durable, or a DB_E_* code. */
#define DB_JOURNAL_REQ_MAX 16
struct db_journal_req_s {
  void *data;
  uint32_t timeout_ms; /* 0: no deadline (the writer retries for ever) */
  int status;
  char error[160]; /* on failure, why in one line */
  /* results, valid in the callback */
  size_t n;
  db_event_t events[DB_JOURNAL_REQ_MAX];
  /* private */
  db_journal_cb cb_;
  db_journal_port_t *port_;
  void *next_;
  uint64_t deadline_;
  int done_;
};

/* Commit round trips by duration: bucket i counts those that took less
 * than db_journal_bucket_us(i) and at least db_journal_bucket_us(i - 1)
 * (quarter-octave buckets from 1 us; the last one is open-ended). */
#define DB_JOURNAL_BUCKETS 96
uint64_t db_journal_bucket_us(int i);

/* Statistics, read with db_journal_stats (any thread). */
typedef struct db_journal_stats_s {
  uint64_t submitted, durable, failed, batches, retries, reconnects;
  uint64_t queue_depth, queue_capacity;
  uint64_t commit_us_last; /* the last batch's round trip (send to Sync) */
  uint64_t prepare_us_sum; /* time spent building batches (chain, arrays) */
  uint64_t commit_us_sum;  /* time spent in round trips, committed or not */
  uint64_t overlapped;     /* batches built while the previous committed */
  int connected;
  uint64_t commit_hist[DB_JOURNAL_BUCKETS];
} db_journal_stats_t;

/* The p-th percentile (0 < p < 100) of the commit round trips so far, from
 * the histogram: the upper bound of the bucket it falls in (at most 19%
 * above the true value); 0 when there were none. */
uint64_t db_journal_commit_percentile_us(const db_journal_stats_t *st,
                                         double p);

int db_journal_open(db_journal_t **out, const db_journal_config_t *cfg,
                    char *err, size_t errcap);
/* Stops accepting, writes what is queued (up to grace_ms), fails the rest
 * with DB_E_SHUTDOWN, joins the thread.  Ports must be closed first. */
void db_journal_close(db_journal_t *j, uint32_t grace_ms);
void db_journal_stats(db_journal_t *j, db_journal_stats_t *out);

/* A port: where completions for one loop arrive.  on_space (may be NULL)
 * runs on the loop when a submission refused with DB_E_FULL may be
 * retried. */
int db_journal_port_open(db_journal_t *j, struct uv_loop_s *loop,
                         void (*on_space)(void *ctx), void *ctx,
                         db_journal_port_t **out);
/* Closes the port's handle; requests still in flight complete first (the
 * port is freed after the last one). */
void db_journal_port_close(db_journal_port_t *p);

/* Queues req (req->n events filled by the caller).  0: queued, the
 * callback will run; DB_E_FULL / DB_E_SHUTDOWN / DB_E_INVAL: not queued,
 * the callback will not run. */
int db_journal_submit(db_journal_port_t *p, db_journal_req_t *req,
                      db_journal_cb cb);

/* Verifies every chain of business date date (YYYY-MM-DD) on connection c
 * with HMAC key chain_key_label of hsm (an hsm_t opened on loop, which
 * this call runs until each HMAC is done).  Checks: seq contiguous from 1,
 * every HMAC, the last link equal to journal_chain_head.  report (may be
 * NULL) gets one line per chain and one per break.  0: every chain holds;
 * DB_E_INTEGRITY: a break (the first one named in err). */
int db_journal_verify(PGconn *c, struct hsm_s *hsm, struct uv_loop_s *loop,
                      const char *chain_key_label, const char *date,
                      void (*report)(void *ctx, const char *line),
                      void *report_ctx, char *err, size_t errcap);

#ifdef __cplusplus
}
#endif

#endif
