/*
 * bench_hsm.c — operations per second through the public HSM API, per
 * backend, on one thread and one loop.
 *
 * Operations: PIN translate TPK->ZPK (TDES, ISO 0), ZPK->ZPK (AES, ISO 4),
 * TDES DUKPT->ZPK, AES DUKPT->ZPK, retail MAC verify over a 200-byte
 * message, AES-CMAC verify, PAN encrypt (AES-256-GCM), PAN keyed hash.
 * Each runs RUNS batches of N requests; the median batch gives ops/s.
 * Two modes: "serial" submits one request and runs it to completion before
 * the next (latency-bound: one terminal's request at a time); "pipelined"
 * keeps DEPTH requests in flight, as a loop serving many terminals does
 * (what matters for a backend behind a network round trip).
 *
 * Run: cmake --build build --target bench   (RelWithDebInfo or Release)
 * Backend: $SW_HSM_BACKEND: soft (default, on a temporary key store),
 * payshield (against the payShield-protocol simulator in tests/sim, in
 * this process on the same loop, so the figure includes the simulator's
 * own work and is a floor for the client's cost, not an HSM's speed), or
 * pkcs11 (a SoftHSM2 token: eval "$(deploy/softhsm.sh --env DIR)"; set
 * SW_PKCS11_INSECURE_PIN=1 to include the PIN operations).
 */
#include "hsm.h"
#include "payshield_sim.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define RUNS 7
#define DEPTH 64

static uv_loop_t loop;
static hsm_t *h;
static int done;

static void on_done(hsm_req_t *req) {
  if (req->status)
    fprintf(stderr, "request failed: %s\n", hsm_strerror(req->status));
  done++;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef int (*submit_fn)(hsm_req_t *req, const void *args);

static void on_pipe_done(hsm_req_t *req);
static hsm_cb cb_now = on_done; /* on_done, or on_pipe_done when pipelined */

static int sub_translate(hsm_req_t *r, const void *a) {
  return hsm_pin_translate(h, r, a, cb_now);
}
static int sub_mac_verify(hsm_req_t *r, const void *a) {
  return hsm_mac_verify(h, r, a, cb_now);
}
static int sub_encrypt(hsm_req_t *r, const void *a) {
  return hsm_data_encrypt(h, r, a, cb_now);
}
static int sub_hmac(hsm_req_t *r, const void *a) {
  return hsm_hmac(h, r, a, cb_now);
}

/* Pipelined mode: each completion submits the next request from the
 * completed one's slot until n have been submitted. */
static submit_fn pipe_fn;
static const void *pipe_args;
static int pipe_left;

static void on_pipe_done(hsm_req_t *req) {
  if (req->status)
    fprintf(stderr, "request failed: %s\n", hsm_strerror(req->status));
  done++;
  if (pipe_left > 0) {
    pipe_left--;
    memset(req, 0, sizeof *req);
    if (pipe_fn(req, pipe_args))
      exit(1);
  }
}

static void run1(const char *name, submit_fn fn, const void *args, int n,
                 int pipelined) {
  static hsm_req_t req, reqs[DEPTH];
  double rate[RUNS];
  for (int r = 0; r < RUNS; r++) {
    done = 0;
    double t0 = now_s();
    if (pipelined) {
      pipe_fn = fn;
      pipe_args = args;
      pipe_left = n - DEPTH;
      for (int i = 0; i < DEPTH; i++) {
        memset(&reqs[i], 0, sizeof reqs[i]);
        if (fn(&reqs[i], args))
          exit(1);
      }
      while (done < n)
        uv_run(&loop, UV_RUN_ONCE);
    } else {
      for (int i = 0; i < n; i++) {
        memset(&req, 0, sizeof req);
        int target = done + 1;
        if (fn(&req, args)) {
          fprintf(stderr, "%s: submit failed\n", name);
          exit(1);
        }
        while (done < target)
          uv_run(&loop, UV_RUN_ONCE);
      }
    }
    rate[r] = n / (now_s() - t0);
  }
  qsort(rate, RUNS, sizeof rate[0], cmp);
  printf("%-28s %-9s %12.0f %12.0f %12.0f\n", name,
         pipelined ? "pipelined" : "serial", rate[RUNS / 2], rate[0],
         rate[RUNS - 1]);
}

/* Serial always; pipelined too for backends that complete asynchronously
 * (for the soft backend, which completes inline, both are the same). */
static int async_backend;
static void run(const char *name, submit_fn fn, const void *args, int n) {
  cb_now = on_done;
  run1(name, fn, args, n, 0);
  if (async_backend) {
    cb_now = on_pipe_done;
    run1(name, fn, args, n, 1);
    cb_now = on_done;
  }
}

static ps_sim_t *sim;
static char table[160];
static hsm_config_t cfg;

/* payshield: keys go into the key table as cryptograms under the
 * simulator's test LMK; the backend reads the table when opened. */
static void provision(const char *label, hsm_usage_t u, hsm_alg_t alg,
                      const char *hex) {
  char crypt[64], kcv[7];
  if (alg != HSM_ALG_TDES || ps_sim_wrap_key(u, hex, crypt, sizeof crypt, kcv))
    return;
  FILE *f = fopen(table, "a");
  if (!f)
    exit(1);
  fprintf(f, "%s %s %s %s\n", label, hsm_usage_name(u), crypt, kcv);
  fclose(f);
}

static void import(const char *label, hsm_usage_t u, hsm_alg_t alg,
                   const char *hex) {
  if (sim) {
    provision(label, u, alg, hex);
    return;
  }
  uint8_t key[32], c1[32];
  size_t n = tu_unhex(hex, key, sizeof key);
  memset(c1, 0x5A, sizeof c1);
  for (size_t i = 0; i < n; i++)
    key[i] ^= c1[i];
  const uint8_t *comps[] = {c1, key};
  hsm_key_info_t info;
  if (hsm_key_import_components(h, label, u, alg, comps, 2, n, NULL, "bench",
                                &info)) {
    fprintf(stderr, "cannot import %s\n", label);
    exit(1);
  }
}

int main(void) {
  char dir[] = "/tmp/hsmbench.XXXXXX", ks[128], mk[128];
  if (!mkdtemp(dir))
    return 1;
  snprintf(ks, sizeof ks, "%s/keys.store", dir);
  snprintf(mk, sizeof mk, "%s/master.key", dir);
  FILE *f = fopen(mk, "w");
  if (!f)
    return 1;
  fputs("202122232425262728292A2B2C2D2E2F303132333435363738393A3B3C3D3E3F\n",
        f);
  fclose(f);
  chmod(mk, 0600);
  uv_loop_init(&loop);
  const char *be = getenv("SW_HSM_BACKEND");
  cfg = (hsm_config_t){.backend = be ? be : "soft",
                       .keystore_path = ks,
                       .master_key_path = mk,
                       .create = 1};
  if (strcmp(cfg.backend, "payshield") == 0) {
    snprintf(table, sizeof table, "%s/payshield.keys", dir);
    if (ps_sim_start(&sim, &loop, 0, 4))
      return 1;
    cfg.payshield_host = "127.0.0.1";
    cfg.payshield_port = ps_sim_port(sim);
    cfg.payshield_key_table = table;
    cfg.payshield_connections = 2;
    async_backend = 1;
    FILE *t = fopen(table, "w");
    if (!t)
      return 1;
    fclose(t);
    chmod(table, 0600);
  } else {
    if (strcmp(cfg.backend, "pkcs11") == 0) {
      /* A token from deploy/softhsm.sh --env; the PIN operations need the
       * insecure switch (tests and benchmarks only). */
      const char *insecure = getenv("SW_PKCS11_INSECURE_PIN");
      cfg.pkcs11_module = getenv("SW_PKCS11_MODULE");
      cfg.pkcs11_token = getenv("SW_PKCS11_TOKEN");
      cfg.pkcs11_pin_file = getenv("SW_PKCS11_PIN_FILE");
      cfg.pkcs11_insecure_pin = insecure && strcmp(insecure, "1") == 0;
      async_backend = 1;
    }
    char err[256];
    if (hsm_open(&h, &loop, &cfg, err, sizeof err)) {
      fprintf(stderr, "hsm_open: %s\n", err);
      return 1;
    }
  }
  import("tpk", HSM_USAGE_TPK, HSM_ALG_TDES,
         "0123456789ABCDEFFEDCBA9876543210");
  import("zpk", HSM_USAGE_ZPK, HSM_ALG_TDES,
         "89E88CF7931444F334BD7547FC3F380C");
  import("zpk.aes", HSM_USAGE_ZPK, HSM_ALG_AES,
         "2B7E151628AED2A6ABF7158809CF4F3C");
  import("bdk", HSM_USAGE_BDK, HSM_ALG_TDES,
         "0123456789ABCDEFFEDCBA9876543210");
  import("bdk.aes", HSM_USAGE_BDK, HSM_ALG_AES,
         "FEDCBA9876543210F1F1F1F1F1F1F1F1");
  import("tak", HSM_USAGE_TAK, HSM_ALG_TDES,
         "0123456789ABCDEFFEDCBA9876543210");
  import("zak.aes", HSM_USAGE_ZAK, HSM_ALG_AES,
         "2B7E151628AED2A6ABF7158809CF4F3C");
  if (sim) {
    char err[256];
    if (hsm_open(&h, &loop, &cfg, err, sizeof err)) {
      fprintf(stderr, "hsm_open: %s\n", err);
      return 1;
    }
  }
  hsm_key_info_t info;
  if ((hsm_capabilities(h) & HSM_CAP_DATA) &&
      (hsm_key_generate(h, "dek", HSM_USAGE_DEK, HSM_ALG_AES, 32, "bench",
                        &info) ||
       hsm_key_generate(h, "hmac", HSM_USAGE_HMAC, HSM_ALG_HMAC, 32, "bench",
                        &info)))
    return 1;

  printf("HSM backend %s: ops/s, median of %d runs (min, max)\n",
         hsm_backend_name(h), RUNS);
  printf("%-28s %-9s %12s %12s %12s\n", "operation", "mode", "median", "min",
         "max");

  uint8_t blk[8], blk4[16], ksn[10], ksn_aes[12], mac[8], cmac[16];
  uint8_t msg[200];
  memset(msg, 'M', sizeof msg);
  tu_unhex("2A3D408A1977DDE9", blk, 8);
  unsigned caps = hsm_capabilities(h);
  if (caps & HSM_CAP_PIN_TRANSLATE) {
    hsm_pin_translate_t a = {.src = {.label = "tpk"},
                             .dst_label = "zpk",
                             .src_format = HSM_PIN_ISO0,
                             .dst_format = HSM_PIN_ISO0,
                             .block = blk,
                             .block_len = 8,
                             .pan = "4111111111111111",
                             .pan_len = 16};
    run("PIN translate TDES ISO0", sub_translate, &a, 100000);
    /* The ISO 4 block to start from: the backend's own output. */
    static hsm_req_t r;
    hsm_pin_translate_t to4 = a;
    to4.dst_label = "zpk.aes";
    to4.dst_format = HSM_PIN_ISO4;
    done = 0;
    if ((caps & HSM_CAP_PIN_AES) &&
        hsm_pin_translate(h, &r, &to4, on_done) == 0) {
      while (!done)
        uv_run(&loop, UV_RUN_ONCE);
      memcpy(blk4, r.result.pin.block, 16);
      hsm_pin_translate_t aes = {.src = {.label = "zpk.aes"},
                                 .dst_label = "zpk.aes",
                                 .src_format = HSM_PIN_ISO4,
                                 .dst_format = HSM_PIN_ISO4,
                                 .block = blk4,
                                 .block_len = 16,
                                 .pan = "4111111111111111",
                                 .pan_len = 16};
      run("PIN translate AES ISO4", sub_translate, &aes, 100000);
    }
  }
  if (caps & HSM_CAP_DUKPT_TDES) {
    tu_unhex("FFFF9876543210E00001", ksn, 10);
    tu_unhex("1B9C1845EB993A7A", blk, 8);
    hsm_pin_translate_t a = {.src = {.label = "bdk", .ksn = ksn, .ksn_len = 10},
                             .dst_label = "zpk",
                             .src_format = HSM_PIN_ISO0,
                             .dst_format = HSM_PIN_ISO0,
                             .block = blk,
                             .block_len = 8,
                             .pan = "4012345678909",
                             .pan_len = 13};
    run("PIN translate TDES DUKPT", sub_translate, &a, 20000);
  }
  if (caps & HSM_CAP_DUKPT_AES) {
    tu_unhex("123456789012345600000001", ksn_aes, 12);
    tu_unhex("A912150391AB65A67E52883D81CE2D15", blk4, 16);
    hsm_pin_translate_t a = {
        .src = {.label = "bdk.aes", .ksn = ksn_aes, .ksn_len = 12},
        .dst_label = "zpk",
        .src_format = HSM_PIN_ISO4,
        .dst_format = HSM_PIN_ISO0,
        .block = blk4,
        .block_len = 16,
        .pan = "4111111111111111",
        .pan_len = 16};
    run("PIN translate AES DUKPT", sub_translate, &a, 20000);
  }
  if (caps & HSM_CAP_MAC_RETAIL) {
    hsm_mac_t g = {.key_label = "tak",
                   .alg = HSM_MAC_RETAIL,
                   .data = msg,
                   .len = sizeof msg};
    static hsm_req_t r;
    done = 0;
    if (hsm_mac_generate(h, &r, &g, on_done) == 0) {
      while (!done)
        uv_run(&loop, UV_RUN_ONCE);
      memcpy(mac, r.result.mac.mac, 8);
      g.mac = mac;
      g.mac_len = 8;
      run("MAC verify retail 200B", sub_mac_verify, &g, 50000);
    }
  }
  if (caps & HSM_CAP_MAC_CMAC) {
    hsm_mac_t g = {.key_label = "zak.aes",
                   .alg = HSM_MAC_AES_CMAC,
                   .data = msg,
                   .len = sizeof msg};
    static hsm_req_t r;
    done = 0;
    if (hsm_mac_generate(h, &r, &g, on_done) == 0) {
      while (!done)
        uv_run(&loop, UV_RUN_ONCE);
      memcpy(cmac, r.result.mac.mac, 16);
      g.mac = cmac;
      g.mac_len = 8;
      run("MAC verify AES-CMAC 200B", sub_mac_verify, &g, 50000);
    }
  }
  if (caps & HSM_CAP_DATA) {
    hsm_data_t d = {.key_label = "dek",
                    .in = (const uint8_t *)"4761739001010010",
                    .len = 16,
                    .aad = (const uint8_t *)"2026-11-23/000123",
                    .aad_len = 17};
    run("PAN encrypt AES-256-GCM", sub_encrypt, &d, 50000);
    d.key_label = "hmac";
    run("PAN hash HMAC-SHA-256", sub_hmac, &d, 50000);
  }
  hsm_close(h);
  if (sim) {
    ps_sim_stop(sim);
    unlink(table);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  unlink(ks);
  unlink(mk);
  rmdir(dir);
  return 0;
}
