/*
 * ctl_verify.c — switchctl verify --date D: checks every HMAC chain of the
 * journal for business date D (db_journal_verify), then that the date's
 * settlement (if it was settled) still matches the journal
 * (db_settle_check).  Prints one line per chain and per break; exit 0 when
 * everything holds, 3 when something does not (the first break is named),
 * 1 when it could not check.
 *
 * The chain key is read through the soft HSM adapter from --hsm-keystore /
 * --hsm-master-key (or SW_HSM_KEYSTORE / SW_HSM_MASTER_KEY).
 */
#include "ctl.h"
#include "hsm.h"
#include "journal.h"
#include "settle.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

static void print_line(void *ctx, const char *line) {
  const int *json = ctx;
  if (*json) {
    fputs("{\"check\":\"", stdout);
    for (const char *p = line; *p; p++) {
      if (*p == '"' || *p == '\\')
        putchar('\\');
      if ((unsigned char)*p >= 0x20)
        putchar(*p);
    }
    fputs("\"}\n", stdout);
  } else {
    printf("%s\n", line);
  }
}

int ctl_verify(const ctl_t *ctl, int argc, char **argv) {
  const char *date = NULL;
  int skip_settlement = 0;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--date") == 0 && i + 1 < argc)
      date = argv[++i];
    else if (strncmp(argv[i], "--date=", 7) == 0)
      date = argv[i] + 7;
    else if (strcmp(argv[i], "--chain-only") == 0)
      skip_settlement = 1;
    else {
      fprintf(stderr,
              "switchctl: verify: unexpected \"%s\"\n"
              "usage: switchctl verify --date YYYY-MM-DD "
              "[--chain-only]\n",
              argv[i]);
      return CTL_USAGE;
    }
  }
  if (!date || ctl_check_date(date) != 0) {
    fprintf(stderr, "switchctl: verify: --date YYYY-MM-DD is required (a "
                    "real calendar date)\n");
    return CTL_USAGE;
  }
  if (!ctl->hsm_keystore || !ctl->hsm_master_key) {
    fprintf(stderr, "switchctl: verify needs the key store of the journal's "
                    "chain key\nHINT:  give --hsm-keystore FILE and "
                    "--hsm-master-key FILE (or SW_HSM_KEYSTORE and "
                    "SW_HSM_MASTER_KEY)\n");
    return CTL_USAGE;
  }
  uv_loop_t loop;
  uv_loop_init(&loop);
  hsm_config_t cfg = {.backend = "soft",
                      .keystore_path = ctl->hsm_keystore,
                      .master_key_path = ctl->hsm_master_key};
  hsm_t *h = NULL;
  char err[1024] = "";
  if (hsm_open(&h, &loop, &cfg, err, sizeof err) != 0) {
    fprintf(stderr, "switchctl: verify: HSM adapter: %s\n", err);
    uv_loop_close(&loop);
    return CTL_FAILED;
  }
  int exit_code = CTL_OK;
  int json = ctl->json;
  PGconn *c = ctl_connect(ctl);
  if (!c) {
    exit_code = CTL_FAILED;
  } else {
    int rc = db_journal_verify(c, h, &loop, ctl->chain_key, date, print_line,
                               &json, err, sizeof err);
    if (rc == DB_E_INTEGRITY) {
      fprintf(stderr, "switchctl: verify: journal chain broken: %s\n", err);
      exit_code = CTL_MISMATCH;
    } else if (rc) {
      fprintf(stderr, "switchctl: verify: cannot check the chain: %s\n",
              err[0] ? err : db_strerror(rc));
      exit_code = CTL_FAILED;
    }
    if (!skip_settlement && exit_code != CTL_FAILED) {
      rc = db_settle_check(c, date, print_line, &json, err, sizeof err);
      if (rc == DB_E_MISMATCH) {
        fprintf(stderr,
                "switchctl: verify: settlement differs from the "
                "journal: %s\n",
                err);
        exit_code = CTL_MISMATCH;
      } else if (rc) {
        fprintf(stderr, "switchctl: verify: cannot check the settlement: %s\n",
                err[0] ? err : db_strerror(rc));
        exit_code = CTL_FAILED;
      }
    }
    if (exit_code == CTL_OK)
      printf("verify %s: ok\n", date);
    PQfinish(c);
  }
  hsm_close(h);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return exit_code;
}
