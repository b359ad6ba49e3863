/*
 * ctl.h — what switchctl's subcommands share (switchctl.c): the global
 * options, the database connection and the exit codes.  Each subcommand
 * lives in its own ctl_*.c and parses its own options.
 */
#ifndef SW_CTL_H
#define SW_CTL_H

#include <libpq-fe.h>

enum { CTL_OK = 0, CTL_FAILED = 1, CTL_USAGE = 2, CTL_MISMATCH = 3 };

typedef struct ctl_s {
  const char *db;         /* libpq connection string (resolved) */
  const char *migrations; /* migrations folder */
  /* HSM adapter for subcommands that need keys (verify, txn --pan):
   * soft backend files; NULL when not given (--hsm-keystore,
   * --hsm-master-key, or SW_HSM_KEYSTORE / SW_HSM_MASTER_KEY). */
  const char *hsm_keystore;
  const char *hsm_master_key;
  const char *chain_key; /* HMAC key label of the journal chain */
  const char *pan_key;   /* HMAC key label of the PAN lookup hash */
  int json;              /* --json: one JSON object a line */
} ctl_t;

/* Connects to ctl->db; prints why (with a HINT) and returns NULL on
 * failure.  Sets TimeZone UTC and DateStyle ISO on the session. */
PGconn *ctl_connect(const ctl_t *ctl);

/* Validates a YYYY-MM-DD date (a real calendar day); 0 if good. */
int ctl_check_date(const char *s);

/* Subcommands: argv[0] is the subcommand's name. */
int ctl_migrate(const ctl_t *ctl, int argc, char **argv);
int ctl_verify(const ctl_t *ctl, int argc, char **argv);
int ctl_settle(const ctl_t *ctl, int argc, char **argv);
int ctl_recon(const ctl_t *ctl, int argc, char **argv);
int ctl_txn(const ctl_t *ctl, int argc, char **argv);
int ctl_saf(const ctl_t *ctl, int argc, char **argv);
int ctl_retention(const ctl_t *ctl, int argc, char **argv);

#endif
