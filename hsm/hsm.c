/*
 * hsm.c — the generic layer of the HSM adapter: opening a backend by name,
 * argument checks common to every backend, the in-flight list and its
 * timeouts, completion, and the audit trail of key management.
 *
 * Invariants:
 *   (1) a request's callback runs exactly once if its submitting call
 *       returned 0, and never otherwise;
 *   (2) a request is on the in-flight list from just before the backend
 *       sees it until its completion, so a timeout or hsm_close always
 *       finds it;
 *   (3) no key material passes through the audit callback, only labels,
 *       usages and check values.
 */
#include "backend.h"
#include "crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HSM__DEFAULT_TIMEOUT_MS 2000
/* How often deadlines are checked while requests are in flight.  A
 * request may outlive its deadline by up to this much: coarse, but one
 * timer per hsm_t instead of one per request. */
#define HSM__TICK_MS 10

static const hsm__backend_t *const hsm__backends[] = {
    &hsm__soft_backend,
#ifdef HSM_WITH_PKCS11
    &hsm__pkcs11_backend,
#endif
#ifdef HSM_WITH_PAYSHIELD
    &hsm__payshield_backend,
#endif
};

uint64_t hsm__now_ms(const hsm_t *h) {
  return uv_now(h->loop);
}

void hsm__kcv_hex(const uint8_t kcv[3], char out[7]) {
  static const char digits[] = "0123456789ABCDEF";
  for (int i = 0; i < 3; i++) {
    out[2 * i] = digits[kcv[i] >> 4];
    out[2 * i + 1] = digits[kcv[i] & 15];
  }
  out[6] = '\0';
}

int hsm_open(hsm_t **out, struct uv_loop_s *loop, const hsm_config_t *cfg,
             char *errbuf, size_t errcap) {
  if (!out || !loop || !cfg || !cfg->backend) {
    if (errbuf && errcap)
      snprintf(errbuf, errcap, "no HSM backend configured");
    return HSM_E_INVAL;
  }
  const hsm__backend_t *be = NULL;
  for (size_t i = 0; i < sizeof hsm__backends / sizeof hsm__backends[0]; i++)
    if (strcmp(hsm__backends[i]->name, cfg->backend) == 0)
      be = hsm__backends[i];
  if (!be) {
    if (errbuf && errcap)
      snprintf(errbuf, errcap, "unknown HSM backend \"%s\"", cfg->backend);
    return HSM_E_INVAL;
  }
  hsm_t *h = calloc(1, sizeof *h);
  if (!h)
    return HSM_E_NOMEM;
  h->loop = loop;
  h->be = be;
  h->caps = be->caps;
  h->audit = cfg->audit;
  h->audit_ctx = cfg->audit_ctx;
  h->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : HSM__DEFAULT_TIMEOUT_MS;
  int rc = be->open(h, cfg, errbuf, errcap);
  if (rc) {
    free(h);
    return rc;
  }
  *out = h;
  return 0;
}

unsigned hsm_capabilities(const hsm_t *h) {
  return h ? h->caps : 0;
}

const char *hsm_backend_name(const hsm_t *h) {
  return h ? h->be->name : "none";
}

size_t hsm_in_flight(const hsm_t *h) {
  return h ? h->in_flight : 0;
}

/* ------------------------------------------------------------------------ */
/* In-flight list and timeouts                                               */

static void link_req(hsm_t *h, hsm_req_t *req) {
  req->queue_[0] = NULL;
  req->queue_[1] = h->head;
  if (h->head)
    h->head->queue_[0] = req;
  h->head = req;
  h->in_flight++;
}

static void unlink_req(hsm_t *h, hsm_req_t *req) {
  hsm_req_t *prev = req->queue_[0], *next = req->queue_[1];
  if (prev)
    prev->queue_[1] = next;
  else
    h->head = next;
  if (next)
    next->queue_[0] = prev;
  req->queue_[0] = req->queue_[1] = NULL;
  h->in_flight--;
}

void hsm__complete(hsm_req_t *req, int status) {
  hsm_t *h = req->hsm_;
  unlink_req(h, req);
  req->status = status;
  if (h->in_flight == 0 && h->timer)
    uv_timer_stop(h->timer);
  req->cb_(req);
}

static void on_tick(uv_timer_t *t) {
  hsm_t *h = t->data;
  uint64_t now = hsm__now_ms(h);
  hsm_req_t *req = h->head;
  while (req) {
    hsm_req_t *next = req->queue_[1];
    if (req->deadline_ <= now) {
      if (h->be->cancel)
        h->be->cancel(h, req);
      hsm__complete(req, HSM_E_TIMEOUT);
    }
    req = next;
  }
}

static int arm_timer(hsm_t *h) {
  if (!h->timer) {
    h->timer = malloc(sizeof *h->timer);
    if (!h->timer)
      return HSM_E_NOMEM;
    uv_timer_init(h->loop, h->timer);
    h->timer->data = h;
  }
  if (!uv_is_active((uv_handle_t *)h->timer))
    uv_timer_start(h->timer, on_tick, HSM__TICK_MS, HSM__TICK_MS);
  return 0;
}

static int submit(hsm_t *h, hsm_req_t *req, hsm_op_t op, const void *args,
                  hsm_cb cb) {
  if (!h || !req || !cb || !args)
    return HSM_E_INVAL;
  if (h->closing)
    return HSM_E_UNAVAILABLE;
  req->op = op;
  req->status = 0;
  req->verify = HSM_VERIFY_OK;
  req->hsm_ = h;
  req->cb_ = cb;
  req->seq_ = ++h->seq;
  req->deadline_ =
      hsm__now_ms(h) + (req->timeout_ms ? req->timeout_ms : h->timeout_ms);
  memset(&req->result, 0, sizeof req->result);
  link_req(h, req);
  h->busy++;
  int rc = h->be->submit(h, req, args);
  h->busy--;
  if (rc)
    unlink_req(h, req);
  if (h->close_pending && !h->busy) {
    /* The callback closed the handle while it ran inline. */
    hsm_close(h);
    return rc;
  }
  if (rc)
    return rc;
  /* Still in flight after submit: a device round trip, which needs a
   * deadline.  (A completed request is off the list; do not touch it.) */
  if (h->in_flight && !h->closing) {
    int trc = arm_timer(h);
    if (trc)
      return 0; /* no timer: the backend's own timeout still applies */
  }
  return 0;
}

void hsm_close(hsm_t *h) {
  if (!h)
    return;
  if (h->busy) {
    /* Called from a callback inside a submitting call: finish there. */
    h->closing = 1;
    h->close_pending = 1;
    return;
  }
  /* A callback run by this close called it again: the close under way
   * finishes the job. */
  if (h->closing && !h->close_pending)
    return;
  h->closing = 1;
  h->close_pending = 0;
  while (h->head) {
    hsm_req_t *req = h->head;
    if (h->be->cancel)
      h->be->cancel(h, req);
    hsm__complete(req, HSM_E_UNAVAILABLE);
  }
  h->be->close(h);
  if (h->timer)
    uv_close((uv_handle_t *)h->timer, (uv_close_cb)free);
  free(h);
}

/* ------------------------------------------------------------------------ */
/* Operations                                                                */

static int pan_ok(const char *pan, size_t len) {
  if (!pan || len < 12 || len > 19)
    return 0;
  for (size_t i = 0; i < len; i++)
    if (pan[i] < '0' || pan[i] > '9')
      return 0;
  return 1;
}

int hsm_echo(hsm_t *h, hsm_req_t *req, hsm_cb cb) {
  static const char nothing = 0;
  return submit(h, req, HSM_OP_ECHO, &nothing, cb);
}

int hsm_pin_translate(hsm_t *h, hsm_req_t *req, const hsm_pin_translate_t *a,
                      hsm_cb cb) {
  if (!a || !a->src.label || !a->dst_label || !a->block)
    return HSM_E_INVAL;
  if (!pan_ok(a->pan, a->pan_len))
    return HSM_E_BAD_PAN;
  size_t want = a->src_format == HSM_PIN_ISO4 ? 16 : 8;
  if (a->block_len != want)
    return HSM_E_BAD_PIN_BLOCK;
  if (a->src.ksn && a->src.ksn_len != 10 && a->src.ksn_len != 12)
    return HSM_E_BAD_DATA;
  return submit(h, req, HSM_OP_PIN_TRANSLATE, a, cb);
}

int hsm_pin_verify(hsm_t *h, hsm_req_t *req, const hsm_pin_verify_t *a,
                   hsm_cb cb) {
  if (!a || !a->src.label || !a->pvk_label || !a->block)
    return HSM_E_INVAL;
  if (!pan_ok(a->pan, a->pan_len))
    return HSM_E_BAD_PAN;
  if (a->block_len != (a->format == HSM_PIN_ISO4 ? 16u : 8u))
    return HSM_E_BAD_PIN_BLOCK;
  if (a->method == HSM_PIN_VERIFY_IBM3624) {
    if (!a->dectab || !a->validation_data || !a->offset || a->offset_len < 4 ||
        a->offset_len > 12)
      return HSM_E_BAD_DATA;
  } else if (a->method == HSM_PIN_VERIFY_VISA_PVV) {
    if (!a->pvv || a->pvki < 0 || a->pvki > 9)
      return HSM_E_BAD_DATA;
  } else {
    return HSM_E_INVAL;
  }
  return submit(h, req, HSM_OP_PIN_VERIFY, a, cb);
}

static int mac_args_ok(const hsm_mac_t *a, int verify) {
  if (!a || !a->key_label || (!a->data && a->len))
    return 0;
  if (a->alg != HSM_MAC_RETAIL && a->alg != HSM_MAC_AES_CMAC)
    return 0;
  size_t full = a->alg == HSM_MAC_RETAIL ? 8 : 16;
  return !verify || (a->mac && a->mac_len >= 4 && a->mac_len <= full);
}

int hsm_mac_generate(hsm_t *h, hsm_req_t *req, const hsm_mac_t *a, hsm_cb cb) {
  if (!mac_args_ok(a, 0))
    return HSM_E_INVAL;
  return submit(h, req, HSM_OP_MAC_GENERATE, a, cb);
}

int hsm_mac_verify(hsm_t *h, hsm_req_t *req, const hsm_mac_t *a, hsm_cb cb) {
  if (!mac_args_ok(a, 1))
    return HSM_E_INVAL;
  return submit(h, req, HSM_OP_MAC_VERIFY, a, cb);
}

int hsm_cvv_verify(hsm_t *h, hsm_req_t *req, const hsm_cvv_t *a, hsm_cb cb) {
  if (!a || !a->cvk_label || !a->expiry || !a->service || !a->cvv)
    return HSM_E_INVAL;
  if (!pan_ok(a->pan, a->pan_len))
    return HSM_E_BAD_PAN;
  return submit(h, req, HSM_OP_CVV_VERIFY, a, cb);
}

int hsm_data_encrypt(hsm_t *h, hsm_req_t *req, const hsm_data_t *a, hsm_cb cb) {
  if (!a || !a->key_label || !a->in || a->len == 0 || a->len > HSM_DATA_MAX ||
      (!a->aad && a->aad_len))
    return HSM_E_INVAL;
  return submit(h, req, HSM_OP_DATA_ENCRYPT, a, cb);
}

int hsm_data_decrypt(hsm_t *h, hsm_req_t *req, const hsm_data_t *a, hsm_cb cb) {
  if (!a || !a->key_label || !a->in || a->len <= HSM_DATA_OVERHEAD ||
      a->len > HSM_DATA_MAX + HSM_DATA_OVERHEAD || (!a->aad && a->aad_len))
    return HSM_E_INVAL;
  return submit(h, req, HSM_OP_DATA_DECRYPT, a, cb);
}

int hsm_hmac(hsm_t *h, hsm_req_t *req, const hsm_data_t *a, hsm_cb cb) {
  if (!a || !a->key_label || (!a->in && a->len))
    return HSM_E_INVAL;
  return submit(h, req, HSM_OP_HMAC, a, cb);
}

/* ------------------------------------------------------------------------ */
/* Key management                                                            */

void hsm__audit(hsm_t *h, hsm_audit_kind_t kind, const char *who,
                const hsm_key_info_t *info, int status, const char *detail) {
  if (!h->audit)
    return;
  hsm_audit_event_t ev;
  memset(&ev, 0, sizeof ev);
  ev.kind = kind;
  ev.who = who ? who : "unknown";
  ev.label = info ? info->label : "";
  if (info) {
    ev.usage = info->usage;
    ev.alg = info->alg;
    ev.version = info->version;
    memcpy(ev.kcv, info->kcv, sizeof ev.kcv);
  }
  ev.when = (int64_t)time(NULL);
  ev.status = status;
  ev.detail = detail;
  h->audit(h->audit_ctx, &ev);
}

/* An info block naming a key that is not stored (for failed events). */
static void info_of(hsm_key_info_t *info, const char *label, hsm_usage_t u,
                    hsm_alg_t alg) {
  memset(info, 0, sizeof *info);
  snprintf(info->label, sizeof info->label, "%s", label ? label : "");
  info->usage = u;
  info->alg = alg;
}

static int usage_ok(hsm_usage_t u) {
  return u > HSM_USAGE_NONE && u < HSM_USAGE_COUNT;
}

int hsm_key_list(hsm_t *h, hsm_key_list_cb cb, void *ctx) {
  if (!h || !cb)
    return HSM_E_INVAL;
  return h->be->key_list ? h->be->key_list(h, cb, ctx) : HSM_E_UNSUPPORTED;
}

int hsm_key_info(hsm_t *h, const char *label, hsm_key_info_t *out) {
  if (!h || !label || !out)
    return HSM_E_INVAL;
  return h->be->key_info ? h->be->key_info(h, label, out) : HSM_E_UNSUPPORTED;
}

int hsm_key_generate(hsm_t *h, const char *label, hsm_usage_t usage,
                     hsm_alg_t alg, size_t length, const char *who,
                     hsm_key_info_t *out) {
  if (!h || !label || !usage_ok(usage))
    return HSM_E_INVAL;
  if (!h->be->key_generate)
    return HSM_E_UNSUPPORTED;
  hsm_key_info_t info;
  int rc = h->be->key_generate(h, label, usage, alg, length, &info);
  if (rc)
    info_of(&info, label, usage, alg);
  hsm__audit(h, HSM_AUDIT_CREATED, who, &info, rc, NULL);
  if (!rc && out)
    *out = info;
  return rc;
}

int hsm_component_kcv(hsm_alg_t alg, const uint8_t *component, size_t len,
                      char kcv[7]) {
  uint8_t k[3];
  if (!component || !kcv ||
      (alg != HSM_ALG_TDES && alg != HSM_ALG_AES && alg != HSM_ALG_HMAC))
    return HSM_E_INVAL;
  int rc = hsm__kcv((int)alg, component, len, k, 3);
  if (!rc)
    hsm__kcv_hex(k, kcv);
  return rc;
}

int hsm_key_import_components(hsm_t *h, const char *label, hsm_usage_t usage,
                              hsm_alg_t alg, const uint8_t *const *components,
                              size_t ncomponents, size_t length,
                              const char *expected_kcv, const char *who,
                              hsm_key_info_t *out) {
  if (!h || !label || !components || !usage_ok(usage) || length == 0 ||
      length > 64 || ncomponents < 2 || ncomponents > 3)
    return HSM_E_INVAL;
  if (!h->be->key_import_clear)
    return HSM_E_UNSUPPORTED;
  hsm_key_info_t info;
  info_of(&info, label, usage, alg);
  uint8_t key[64] = {0};
  for (size_t c = 0; c < ncomponents; c++) {
    if (!components[c]) {
      hsm__cleanse(key, sizeof key);
      return HSM_E_INVAL;
    }
    int rc = hsm_component_kcv(alg, components[c], length, info.kcv);
    hsm__audit(h, HSM_AUDIT_COMPONENT, who, &info, rc, NULL);
    if (rc) {
      hsm__cleanse(key, sizeof key);
      return rc;
    }
    for (size_t i = 0; i < length; i++)
      key[i] ^= components[c][i];
  }
  /* DES keys carry odd parity; XOR of odd-parity components has even
   * parity when there are two of them, so parity is set on the result. */
  if (alg == HSM_ALG_TDES)
    hsm__des_set_parity(key, length);
  char kcv[7];
  int rc = hsm_component_kcv(alg, key, length, kcv);
  if (!rc && expected_kcv && strncmp(kcv, expected_kcv, 6) != 0) {
    memcpy(info.kcv, kcv, sizeof kcv);
    rc = HSM_E_KCV_MISMATCH;
    hsm__audit(h, HSM_AUDIT_CHECK_FAILED, who, &info, rc,
               "combined key check value differs from the expected one");
  }
  if (!rc) {
    rc = h->be->key_import_clear(h, label, usage, alg, key, length, &info);
    if (rc)
      info_of(&info, label, usage, alg);
    hsm__audit(h, HSM_AUDIT_IMPORTED, who, &info, rc, "from components");
  }
  hsm__cleanse(key, sizeof key);
  if (!rc && out)
    *out = info;
  return rc;
}

int hsm_key_import_tr31(hsm_t *h, const char *label, hsm_usage_t usage,
                        const char *kek_label, const char *block,
                        const char *expected_kcv, int64_t not_after_old,
                        const char *who, hsm_key_info_t *out) {
  if (!h || !label || !kek_label || !block || !usage_ok(usage))
    return HSM_E_INVAL;
  if (!h->be->key_import_tr31)
    return HSM_E_UNSUPPORTED;
  hsm_key_info_t info;
  int rc = h->be->key_import_tr31(h, label, usage, kek_label, block,
                                  expected_kcv, not_after_old, &info);
  if (rc == HSM_E_KCV_MISMATCH) {
    hsm__audit(h, HSM_AUDIT_CHECK_FAILED, who, &info, rc,
               "imported key check value differs from the expected one");
    return rc;
  }
  if (rc)
    info_of(&info, label, usage, 0);
  char detail[96];
  snprintf(detail, sizeof detail, "TR-31 under %s", kek_label);
  hsm__audit(h, HSM_AUDIT_IMPORTED, who, &info, rc, detail);
  if (!rc && out)
    *out = info;
  return rc;
}

int hsm_key_export_tr31(hsm_t *h, const char *label, const char *kek_label,
                        char *out, size_t cap, const char *who) {
  if (!h || !label || !kek_label || !out || cap == 0)
    return HSM_E_INVAL;
  if (!h->be->key_export_tr31)
    return HSM_E_UNSUPPORTED;
  hsm_key_info_t info;
  int rc = h->be->key_export_tr31(h, label, kek_label, out, cap, &info);
  if (rc)
    info_of(&info, label, 0, 0);
  char detail[96];
  snprintf(detail, sizeof detail, "TR-31 under %s", kek_label);
  hsm__audit(h, HSM_AUDIT_EXPORTED, who, &info, rc, detail);
  return rc;
}

int hsm_key_import_ecb(hsm_t *h, const char *label, hsm_usage_t usage,
                       const char *kek_label, const uint8_t *cryptogram,
                       size_t len, const char *expected_kcv,
                       int64_t not_after_old, const char *who,
                       hsm_key_info_t *out) {
  if (!h || !label || !kek_label || !cryptogram || !expected_kcv ||
      !usage_ok(usage) || (len != 16 && len != 24))
    return HSM_E_INVAL;
  if (!h->be->key_import_ecb)
    return HSM_E_UNSUPPORTED;
  hsm_key_info_t info;
  int rc = h->be->key_import_ecb(h, label, usage, kek_label, cryptogram, len,
                                 expected_kcv, not_after_old, &info);
  if (rc == HSM_E_KCV_MISMATCH) {
    hsm__audit(h, HSM_AUDIT_CHECK_FAILED, who, &info, rc,
               "imported key check value differs from the expected one");
    return rc;
  }
  if (rc)
    info_of(&info, label, usage, HSM_ALG_TDES);
  char detail[96];
  snprintf(detail, sizeof detail, "TDES-ECB under %s", kek_label);
  hsm__audit(h, HSM_AUDIT_IMPORTED, who, &info, rc, detail);
  if (!rc && out)
    *out = info;
  return rc;
}

int hsm_key_export_ecb(hsm_t *h, const char *label, const char *kek_label,
                       uint8_t *cryptogram, size_t cap, size_t *len,
                       const char *who, hsm_key_info_t *out) {
  if (!h || !label || !kek_label || !cryptogram || !len)
    return HSM_E_INVAL;
  if (!h->be->key_export_ecb)
    return HSM_E_UNSUPPORTED;
  hsm_key_info_t info;
  int rc =
      h->be->key_export_ecb(h, label, kek_label, cryptogram, cap, len, &info);
  if (rc)
    info_of(&info, label, 0, 0);
  char detail[96];
  snprintf(detail, sizeof detail, "TDES-ECB under %s", kek_label);
  hsm__audit(h, HSM_AUDIT_EXPORTED, who, &info, rc, detail);
  if (!rc && out)
    *out = info;
  return rc;
}

int hsm_key_rotate(hsm_t *h, const char *label, int64_t not_after_old,
                   const char *who, hsm_key_info_t *out) {
  if (!h || !label)
    return HSM_E_INVAL;
  if (!h->be->key_rotate)
    return HSM_E_UNSUPPORTED;
  hsm_key_info_t info;
  int rc = h->be->key_rotate(h, label, not_after_old, &info);
  if (rc)
    info_of(&info, label, 0, 0);
  hsm__audit(h, HSM_AUDIT_ROTATED, who, &info, rc, NULL);
  if (!rc && out)
    *out = info;
  return rc;
}

int hsm_key_destroy(hsm_t *h, const char *label, const char *who) {
  if (!h || !label)
    return HSM_E_INVAL;
  if (!h->be->key_destroy)
    return HSM_E_UNSUPPORTED;
  hsm_key_info_t info;
  int rc = h->be->key_destroy(h, label, 0, &info);
  if (rc)
    info_of(&info, label, 0, 0);
  hsm__audit(h, HSM_AUDIT_DESTROYED, who, &info, rc, NULL);
  return rc;
}

int hsm_key_destroy_version(hsm_t *h, const char *label, uint32_t version,
                            const char *who) {
  if (!h || !label || version == 0)
    return HSM_E_INVAL;
  if (!h->be->key_destroy)
    return HSM_E_UNSUPPORTED;
  hsm_key_info_t info;
  int rc = h->be->key_destroy(h, label, version, &info);
  if (rc) {
    info_of(&info, label, 0, 0);
    info.version = version;
  }
  hsm__audit(h, HSM_AUDIT_DESTROYED, who, &info, rc, "one old version");
  return rc;
}
