/*
 * backend.h — what a backend implements, and what the generic layer
 * (hsm.c) gives it.  Internal to libhsm.
 *
 * A backend is a vtable plus private state.  The generic layer validates
 * arguments that do not depend on the backend, keeps the list of requests
 * in flight, enforces timeouts, and reports key events to the audit
 * callback; the backend does the cryptography or talks to the device.
 *
 * Request life cycle (one hsm_t, one loop):
 *
 *   submitted --submit() ok--> in flight --hsm__complete()--> done (cb ran)
 *       |                          |
 *       +--submit() < 0: never in  +--deadline passed: cancel(), then
 *          flight, no callback        done with HSM_E_TIMEOUT
 *
 * A backend may call hsm__complete from inside submit (inline
 * completion).  It must not both complete a request and return an error,
 * and must never complete a request after cancel() was called for it.
 */
#ifndef HSM_BACKEND_H
#define HSM_BACKEND_H

#include "hsm.h"

#include <uv.h>

typedef struct hsm__backend_s {
  const char *name;
  unsigned caps;
  int (*open)(hsm_t *h, const hsm_config_t *cfg, char *err, size_t errcap);
  void (*close)(hsm_t *h);
  /* args: the op's argument struct, valid only during the call. */
  int (*submit)(hsm_t *h, hsm_req_t *req, const void *args);
  /* Forget req: it timed out or the hsm is closing. May be NULL for
   * backends that always complete inline. */
  void (*cancel)(hsm_t *h, hsm_req_t *req);

  int (*key_list)(hsm_t *h, hsm_key_list_cb cb, void *ctx);
  int (*key_info)(hsm_t *h, const char *label, hsm_key_info_t *out);
  int (*key_generate)(hsm_t *h, const char *label, hsm_usage_t usage,
                      hsm_alg_t alg, size_t length, hsm_key_info_t *out);
  /* key: the combined clear key (the generic layer XORed components). */
  int (*key_import_clear)(hsm_t *h, const char *label, hsm_usage_t usage,
                          hsm_alg_t alg, const uint8_t *key, size_t length,
                          hsm_key_info_t *out);
  int (*key_import_tr31)(hsm_t *h, const char *label, hsm_usage_t usage,
                         const char *kek_label, const char *block,
                         const char *expected_kcv, int64_t not_after_old,
                         hsm_key_info_t *out);
  int (*key_export_tr31)(hsm_t *h, const char *label, const char *kek_label,
                         char *out, size_t cap, hsm_key_info_t *info);
  int (*key_import_ecb)(hsm_t *h, const char *label, hsm_usage_t usage,
                        const char *kek_label, const uint8_t *cryptogram,
                        size_t len, const char *expected_kcv,
                        int64_t not_after_old, hsm_key_info_t *out);
  int (*key_export_ecb)(hsm_t *h, const char *label, const char *kek_label,
                        uint8_t *cryptogram, size_t cap, size_t *len,
                        hsm_key_info_t *info);
  int (*key_rotate)(hsm_t *h, const char *label, int64_t not_after_old,
                    hsm_key_info_t *out);
  /* version 0: every version; else that one (never the current one). */
  int (*key_destroy)(hsm_t *h, const char *label, uint32_t version,
                     hsm_key_info_t *info);
} hsm__backend_t;

struct hsm_s {
  uv_loop_t *loop;
  const hsm__backend_t *be;
  /* What this instance can do: be->caps, adjusted by be->open when a
   * capability depends on configuration (pkcs11's insecure PIN mode). */
  unsigned caps;
  void *state; /* the backend's */
  hsm_audit_cb audit;
  void *audit_ctx;
  uint32_t timeout_ms;
  size_t in_flight;
  hsm_req_t *head;   /* in-flight list; queue_[0] prev, queue_[1] next */
  uv_timer_t *timer; /* allocated on first deadline; NULL for soft */
  int closing;
  /* Submitting calls on the stack, and a close asked for during one: a
   * callback that runs inline may call hsm_close, and the handle must
   * outlive the submitting call that ran it. */
  int busy;
  int close_pending;
  uint32_t seq;
};

/* Backends.  pkcs11 and payshield are compiled in when their sources are
 * (CMake defines HSM_WITH_PKCS11 / HSM_WITH_PAYSHIELD). */
extern const hsm__backend_t hsm__soft_backend;
extern const hsm__backend_t hsm__pkcs11_backend;
extern const hsm__backend_t hsm__payshield_backend;

/* Completes req: unlinks it and runs its callback. */
void hsm__complete(hsm_req_t *req, int status);
/* Reports a key event to the audit callback, if any. */
void hsm__audit(hsm_t *h, hsm_audit_kind_t kind, const char *who,
                const hsm_key_info_t *info, int status, const char *detail);
/* "A1B2C3" from 3 check-value bytes. */
void hsm__kcv_hex(const uint8_t kcv[3], char out[7]);
/* Milliseconds on the loop's clock. */
uint64_t hsm__now_ms(const hsm_t *h);

#endif
