/*
 * soft.c — the software backend: every operation computed in this process
 * with OpenSSL, keys held in the encrypted key store (keystore.h).
 *
 * For development and small sites.  Clear keys and PINs exist in this
 * process's memory while an operation runs (wiped right after), which a
 * PCI PIN assessment does not accept for production PIN traffic: that is
 * what the payshield backend is for.  Every request completes inline,
 * before the submitting call returns.
 *
 * Key usage rules enforced here (anything else is HSM_E_KEY_USAGE):
 *   PIN translate: source TPK or ZPK (fixed key) or BDK (with a KSN);
 *                  destination ZPK.
 *   PIN verify:    source as above; PVK for IBM 3624 and Visa PVV.
 *   MAC:           TAK or ZAK.        CVV: CVK.
 *   Data:          DEK (AES-256) for encrypt/decrypt, HMAC for hmac.
 *   TR-31:         KBPK, ZMK or TMK wrap and unwrap.
 */
#include "backend.h"
#include "crypto.h"
#include "keystore.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SOFT(h) ((hsm__keystore_t *)(h)->state)

static int soft_open(hsm_t *h, const hsm_config_t *cfg, char *err,
                     size_t errcap) {
  if (!cfg->keystore_path || !cfg->master_key_path) {
    if (err && errcap)
      snprintf(err, errcap,
               "soft HSM: keystore_path and master_key_path "
               "must both be set");
    return HSM_E_INVAL;
  }
  hsm__keystore_t *ks = calloc(1, sizeof *ks);
  if (!ks)
    return HSM_E_NOMEM;
  int rc =
      hsm__ks_open(ks, cfg->keystore_path, cfg->master_key_path, cfg->create);
  if (rc) {
    if (err && errcap)
      snprintf(err, errcap, "soft HSM: cannot open key store \"%s\": %s",
               cfg->keystore_path, hsm_strerror(rc));
    free(ks);
    return rc;
  }
  h->state = ks;
  return 0;
}

static void soft_close(hsm_t *h) {
  hsm__ks_close(SOFT(h));
  free(h->state);
  h->state = NULL;
}

/* ------------------------------------------------------------------------ */
/* Key lookup                                                                */

/* The current version of label, if its usage is one of the allowed. */
static int key_for(hsm_t *h, const char *label, const hsm_usage_t *allowed,
                   size_t nallowed, hsm__key_t **out) {
  hsm__key_t *k = hsm__ks_find(SOFT(h), label, 0);
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  for (size_t i = 0; i < nallowed; i++)
    if (k->usage == allowed[i]) {
      *out = k;
      return 0;
    }
  return HSM_E_KEY_USAGE;
}

/* ------------------------------------------------------------------------ */
/* PINs                                                                      */

/* The clear PIN of a block under one version of a fixed PIN key. */
static int pin_under(hsm__key_t *k, hsm_pin_format_t format,
                     const uint8_t *block, const char *pan, size_t pan_len,
                     char *pin, size_t *pin_len) {
  if (format == HSM_PIN_ISO4)
    return k->alg != HSM_ALG_AES ? HSM_E_PIN_FORMAT
                                 : hsm__iso4_decipher(&k->cipher, block, pan,
                                                      pan_len, pin, pin_len);
  if (k->alg != HSM_ALG_TDES)
    return HSM_E_PIN_FORMAT;
  uint8_t clear[8];
  int rc = hsm__ecb(&k->cipher, 0, block, clear, 8);
  if (!rc)
    rc = hsm__pinblock_decode((int)format, clear, pan, pan_len, pin, pin_len);
  hsm__cleanse(clear, sizeof clear);
  return rc;
}

/* Recovers the clear PIN from a block under src.  pin holds 13 bytes and
 * is wiped by the caller. */
static int pin_from_block(hsm_t *h, const hsm_pin_key_t *src,
                          hsm_pin_format_t format, const uint8_t *block,
                          const char *pan, size_t pan_len, char *pin,
                          size_t *pin_len) {
  int rc;
  uint8_t clear[16];
  if (src->ksn) {
    static const hsm_usage_t bdk[] = {HSM_USAGE_BDK};
    hsm__key_t *k;
    if ((rc = key_for(h, src->label, bdk, 1, &k)))
      return rc;
    uint8_t pk[16];
    if (src->ksn_len == 10) { /* TDES DUKPT */
      if (k->alg != HSM_ALG_TDES || k->len != 16)
        return HSM_E_KEY_USAGE;
      if (format == HSM_PIN_ISO4)
        return HSM_E_PIN_FORMAT;
      rc = hsm__dukpt_tdes_key(k->key, src->ksn, HSM__DUKPT_PIN, pk);
      if (!rc)
        rc = hsm__ecb_raw(HSM__TDES, pk, 16, 0, block, clear, 8);
      if (!rc)
        rc = hsm__pinblock_decode((int)format, clear, pan, pan_len, pin,
                                  pin_len);
    } else { /* AES DUKPT: format 4 */
      if (k->alg != HSM_ALG_AES)
        return HSM_E_KEY_USAGE;
      if (format != HSM_PIN_ISO4)
        return HSM_E_PIN_FORMAT;
      rc = hsm__dukpt_aes_key(k->key, k->len, src->ksn, HSM__DUKPT_PIN, pk, 16);
      hsm__cipher_t c;
      if (!rc && !(rc = hsm__cipher_init(&c, HSM__AES, pk, 16))) {
        rc = hsm__iso4_decipher(&c, block, pan, pan_len, pin, pin_len);
        hsm__cipher_free(&c);
      }
    }
    hsm__cleanse(pk, sizeof pk);
    hsm__cleanse(clear, sizeof clear);
    return rc;
  }
  static const hsm_usage_t pinkeys[] = {HSM_USAGE_TPK, HSM_USAGE_ZPK};
  hsm__key_t *k;
  if ((rc = key_for(h, src->label, pinkeys, 2, &k)))
    return rc;
  rc = pin_under(k, format, block, pan, pan_len, pin, pin_len);
  /* During a zone key changeover the peer may still encipher under the key
   * it is replacing: a block that does not decode under the current
   * version is tried under older versions inside their window. */
  hsm__keystore_t *ks = SOFT(h);
  int64_t now = (int64_t)time(NULL);
  for (size_t i = 0; i < ks->n && rc == HSM_E_BAD_PIN_BLOCK; i++) {
    hsm__key_t *o = &ks->keys[i];
    if (strcmp(o->label, k->label) != 0 || o->version == k->version ||
        o->not_after == 0 || o->not_after < now)
      continue;
    int orc = pin_under(o, format, block, pan, pan_len, pin, pin_len);
    if (orc != HSM_E_BAD_PIN_BLOCK && orc != HSM_E_PIN_FORMAT)
      rc = orc;
  }
  return rc;
}

static int pin_translate(hsm_t *h, hsm_req_t *req,
                         const hsm_pin_translate_t *a) {
  static const hsm_usage_t zpk[] = {HSM_USAGE_ZPK};
  hsm__key_t *dst;
  int rc = key_for(h, a->dst_label, zpk, 1, &dst);
  if (rc)
    return rc;
  if ((a->dst_format == HSM_PIN_ISO4) != (dst->alg == HSM_ALG_AES) ||
      (a->dst_format != HSM_PIN_ISO0 && a->dst_format != HSM_PIN_ISO1 &&
       a->dst_format != HSM_PIN_ISO3 && a->dst_format != HSM_PIN_ISO4))
    return HSM_E_PIN_FORMAT;
  char pin[13];
  size_t pin_len = 0;
  rc = pin_from_block(h, &a->src, a->src_format, a->block, a->pan, a->pan_len,
                      pin, &pin_len);
  if (!rc) {
    if (a->dst_format == HSM_PIN_ISO4) {
      rc = hsm__iso4_encipher(&dst->cipher, pin, pin_len, a->pan, a->pan_len,
                              NULL, req->result.pin.block);
      req->result.pin.len = 16;
    } else {
      uint8_t clear[8];
      rc = hsm__pinblock_encode((int)a->dst_format, pin, pin_len, a->pan,
                                a->pan_len, NULL, clear);
      if (!rc)
        rc = hsm__ecb(&dst->cipher, 1, clear, req->result.pin.block, 8);
      hsm__cleanse(clear, sizeof clear);
      req->result.pin.len = 8;
    }
    req->result.pin.format = a->dst_format;
  }
  hsm__cleanse(pin, sizeof pin);
  if (rc)
    memset(&req->result.pin, 0, sizeof req->result.pin);
  return rc;
}

static int pin_verify(hsm_t *h, hsm_req_t *req, const hsm_pin_verify_t *a) {
  static const hsm_usage_t pvk[] = {HSM_USAGE_PVK};
  hsm__key_t *k;
  int rc = key_for(h, a->pvk_label, pvk, 1, &k);
  if (rc)
    return rc;
  if (k->alg != HSM_ALG_TDES)
    return HSM_E_KEY_USAGE;
  char pin[13];
  size_t pin_len = 0;
  rc = pin_from_block(h, &a->src, a->format, a->block, a->pan, a->pan_len, pin,
                      &pin_len);
  if (!rc && a->method == HSM_PIN_VERIFY_IBM3624) {
    rc = hsm__ibm3624_verify(&k->cipher, a->validation_data, a->dectab, pin,
                             pin_len, a->offset, a->offset_len);
  } else if (!rc) {
    char pvv[5];
    rc = hsm__visa_pvv(&k->cipher, a->pan, a->pan_len, a->pvki, pin, pin_len,
                       pvv);
    if (!rc)
      rc = CRYPTO_memcmp(pvv, a->pvv, 4) == 0 ? 0 : 1;
    hsm__cleanse(pvv, sizeof pvv);
  }
  hsm__cleanse(pin, sizeof pin);
  /* 1 is "computed, and it does not match": a verify failure, not an
   * error (see hsm__ibm3624_verify). */
  if (rc == 1) {
    req->verify = HSM_VERIFY_FAILED;
    rc = 0;
  }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* MACs and CVV                                                              */

/* MAC under one version of the key (0: the current one). */
static int mac_compute(hsm_t *h, const hsm_mac_t *a, uint8_t *mac, size_t *len,
                       uint32_t version) {
  static const hsm_usage_t macs[] = {HSM_USAGE_TAK, HSM_USAGE_ZAK};
  hsm__key_t *k;
  int rc = key_for(h, a->key_label, macs, 2, &k);
  if (rc)
    return rc;
  if (version && !(k = hsm__ks_find(SOFT(h), a->key_label, version)))
    return HSM_E_KEY_NOT_FOUND;
  if (a->alg == HSM_MAC_RETAIL) {
    if (k->alg != HSM_ALG_TDES)
      return HSM_E_KEY_USAGE;
    *len = 8;
    return hsm__mac_iso9797(3, a->padding ? a->padding : 1, k->key, k->len,
                            a->data, a->len, mac);
  }
  if (k->alg != HSM_ALG_AES)
    return HSM_E_KEY_USAGE;
  return hsm__cmac(HSM__AES, k->key, k->len, a->data, a->len, mac, len);
}

/* Verifies under the current version, then under older versions still
 * inside their changeover window (zone key change: the peer may still
 * MAC with the key it is replacing). */
static int mac_verify_versions(hsm_t *h, const hsm_mac_t *a,
                               hsm_verify_t *verdict) {
  hsm__keystore_t *ks = SOFT(h);
  int64_t now = (int64_t)time(NULL);
  uint8_t mac[16];
  size_t len = 0;
  int rc = mac_compute(h, a, mac, &len, 0);
  if (rc)
    return rc;
  *verdict = (a->mac_len <= len && CRYPTO_memcmp(mac, a->mac, a->mac_len) == 0)
                 ? HSM_VERIFY_OK
                 : HSM_VERIFY_FAILED;
  for (size_t i = 0; i < ks->n && *verdict != HSM_VERIFY_OK; i++) {
    hsm__key_t *k = &ks->keys[i];
    if (strcmp(k->label, a->key_label) != 0 || k->not_after == 0 ||
        k->not_after < now)
      continue;
    if (mac_compute(h, a, mac, &len, k->version) == 0 && a->mac_len <= len &&
        CRYPTO_memcmp(mac, a->mac, a->mac_len) == 0)
      *verdict = HSM_VERIFY_OK;
  }
  return 0;
}

static int mac_op(hsm_t *h, hsm_req_t *req, const hsm_mac_t *a, int verify) {
  if (verify)
    return mac_verify_versions(h, a, &req->verify);
  uint8_t mac[16];
  size_t len = 0;
  int rc = mac_compute(h, a, mac, &len, 0);
  if (rc)
    return rc;
  {
    memcpy(req->result.mac.mac, mac, len);
    req->result.mac.len = len;
  }
  return 0;
}

static int cvv_verify(hsm_t *h, hsm_req_t *req, const hsm_cvv_t *a) {
  static const hsm_usage_t cvk[] = {HSM_USAGE_CVK};
  hsm__key_t *k;
  int rc = key_for(h, a->cvk_label, cvk, 1, &k);
  if (rc)
    return rc;
  if (k->alg != HSM_ALG_TDES || k->len != 16)
    return HSM_E_KEY_USAGE;
  char cvv[4];
  rc =
      hsm__visa_cvv(&k->cipher, a->pan, a->pan_len, a->expiry, a->service, cvv);
  if (!rc)
    req->verify = (strlen(a->cvv) == 3 && CRYPTO_memcmp(cvv, a->cvv, 3) == 0)
                      ? HSM_VERIFY_OK
                      : HSM_VERIFY_FAILED;
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Data protection                                                           */

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static int gcm(int encrypt, const uint8_t *key, const uint8_t nonce[12],
               const uint8_t *aad, size_t aad_len, const uint8_t *in,
               size_t len, uint8_t *out, uint8_t tag[16]) {
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx)
    return HSM_E_NOMEM;
  int n = 0, ok = EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce,
                                    encrypt) == 1;
  if (ok && aad_len)
    ok = EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1;
  if (ok)
    ok = EVP_CipherUpdate(ctx, out, &n, in, (int)len) == 1;
  if (ok && !encrypt)
    ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, tag) == 1;
  if (ok)
    ok = EVP_CipherFinal_ex(ctx, out + n, &n) == 1;
  if (ok && encrypt)
    ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1;
  EVP_CIPHER_CTX_free(ctx);
  /* On decrypt, a failed final means the tag did not verify: the data or
   * its context was altered, or another key was used. */
  return ok ? 0 : (encrypt ? HSM_E_CRYPTO : HSM_E_BAD_DATA);
}

static int data_encrypt(hsm_t *h, hsm_req_t *req, const hsm_data_t *a) {
  static const hsm_usage_t dek[] = {HSM_USAGE_DEK};
  hsm__key_t *k;
  int rc = key_for(h, a->key_label, dek, 1, &k);
  if (rc)
    return rc;
  if (k->alg != HSM_ALG_AES || k->len != 32)
    return HSM_E_KEY_USAGE;
  uint8_t *o = req->result.data.out;
  put_be32(o, k->version);
  if ((rc = hsm__random(o + 4, 12)))
    return rc;
  rc = gcm(1, k->key, o + 4, a->aad, a->aad_len, a->in, a->len, o + 16,
           o + 16 + a->len);
  if (rc)
    return rc;
  req->result.data.len = HSM_DATA_OVERHEAD + a->len;
  req->result.data.key_version = k->version;
  return 0;
}

static int data_decrypt(hsm_t *h, hsm_req_t *req, const hsm_data_t *a) {
  const uint8_t *in = a->in;
  uint32_t version = (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 |
                     (uint32_t)in[2] << 8 | in[3];
  /* Any stored version decrypts: rows written under an old key stay
   * readable until that version is destroyed (retention purge). */
  hsm__key_t *k = version ? hsm__ks_find(SOFT(h), a->key_label, version) : NULL;
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  if (k->usage != HSM_USAGE_DEK || k->alg != HSM_ALG_AES || k->len != 32)
    return HSM_E_KEY_USAGE;
  size_t n = a->len - HSM_DATA_OVERHEAD;
  uint8_t tag[16];
  memcpy(tag, in + 16 + n, 16);
  int rc = gcm(0, k->key, in + 4, a->aad, a->aad_len, in + 16, n,
               req->result.data.out, tag);
  if (rc) {
    hsm__cleanse(req->result.data.out, sizeof req->result.data.out);
    return rc;
  }
  req->result.data.len = n;
  req->result.data.key_version = version;
  return 0;
}

static int hmac(hsm_t *h, hsm_req_t *req, const hsm_data_t *a) {
  static const hsm_usage_t hk[] = {HSM_USAGE_HMAC};
  hsm__key_t *k;
  int rc = key_for(h, a->key_label, hk, 1, &k);
  if (rc)
    return rc;
  if (a->key_version && a->key_version != k->version) {
    k = hsm__ks_find(SOFT(h), a->key_label, a->key_version);
    if (!k)
      return HSM_E_KEY_NOT_FOUND;
  }
  EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                       (char *)(uintptr_t) "SHA256", 0),
      OSSL_PARAM_construct_end()};
  size_t n = 0;
  rc = HSM_E_CRYPTO;
  if (ctx && EVP_MAC_init(ctx, k->key, k->len, params) == 1 &&
      EVP_MAC_update(ctx, a->in, a->len) == 1 &&
      EVP_MAC_final(ctx, req->result.data.out, &n,
                    sizeof req->result.data.out) == 1) {
    req->result.data.len = n;
    req->result.data.key_version = k->version;
    rc = 0;
  }
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  return rc;
}

static int soft_submit(hsm_t *h, hsm_req_t *req, const void *args) {
  int rc;
  switch (req->op) {
  case HSM_OP_ECHO:
    rc = 0;
    break;
  case HSM_OP_PIN_TRANSLATE:
    rc = pin_translate(h, req, args);
    break;
  case HSM_OP_PIN_VERIFY:
    rc = pin_verify(h, req, args);
    break;
  case HSM_OP_MAC_GENERATE:
    rc = mac_op(h, req, args, 0);
    break;
  case HSM_OP_MAC_VERIFY:
    rc = mac_op(h, req, args, 1);
    break;
  case HSM_OP_CVV_VERIFY:
    rc = cvv_verify(h, req, args);
    break;
  case HSM_OP_DATA_ENCRYPT:
    rc = data_encrypt(h, req, args);
    break;
  case HSM_OP_DATA_DECRYPT:
    rc = data_decrypt(h, req, args);
    break;
  case HSM_OP_HMAC:
    rc = hmac(h, req, args);
    break;
  default:
    return HSM_E_UNSUPPORTED;
  }
  /* Errors the caller could not have seen coming (wrong key, bad block)
   * are results of the operation, not of the call: they complete the
   * request, so the caller handles every outcome in one place. */
  hsm__complete(req, rc);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Key management                                                            */

static void info_from(const hsm__key_t *k, hsm_key_info_t *info) {
  memset(info, 0, sizeof *info);
  snprintf(info->label, sizeof info->label, "%s", k->label);
  info->usage = k->usage;
  info->alg = k->alg;
  info->length = k->len;
  info->version = k->version;
  hsm__kcv_hex(k->kcv, info->kcv);
  info->created = k->created;
  info->not_after = k->not_after;
}

static int soft_key_list(hsm_t *h, hsm_key_list_cb cb, void *ctx) {
  hsm__keystore_t *ks = SOFT(h);
  for (size_t i = 0; i < ks->n; i++) {
    hsm_key_info_t info;
    info_from(&ks->keys[i], &info);
    cb(ctx, &info);
  }
  return 0;
}

static int soft_key_info(hsm_t *h, const char *label, hsm_key_info_t *out) {
  hsm__key_t *k = hsm__ks_find(SOFT(h), label, 0);
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  info_from(k, out);
  return 0;
}

static int alg_length_ok(hsm_alg_t alg, size_t len) {
  switch (alg) {
  case HSM_ALG_TDES:
    return len == 16 || len == 24;
  case HSM_ALG_AES:
    return len == 16 || len == 24 || len == 32;
  case HSM_ALG_HMAC:
    return len >= 16 && len <= 64;
  default:
    return 0;
  }
}

/* Stores a new version of label and saves the store; the previous current
 * version (if any) gets not_after_old when that is > 0. */
static int store_key(hsm_t *h, const char *label, hsm_usage_t usage,
                     hsm_alg_t alg, const uint8_t *key, size_t len,
                     int64_t not_after_old, hsm_key_info_t *out) {
  hsm__keystore_t *ks = SOFT(h);
  hsm__key_t *old = hsm__ks_find(ks, label, 0);
  if (old && (old->usage != usage || old->alg != alg))
    return HSM_E_EXISTS;
  uint32_t old_version = old ? old->version : 0;
  hsm__key_t k;
  memset(&k, 0, sizeof k);
  snprintf(k.label, sizeof k.label, "%s", label);
  k.usage = usage;
  k.alg = alg;
  k.len = len;
  memcpy(k.key, key, len);
  int rc = hsm__ks_add(ks, &k);
  hsm__cleanse(k.key, sizeof k.key);
  if (rc)
    return rc;
  if (old_version && not_after_old > 0) {
    hsm__key_t *prev = hsm__ks_find(ks, label, old_version);
    if (prev)
      prev->not_after = not_after_old;
  }
  rc = hsm__ks_save(ks);
  hsm__key_t *stored = hsm__ks_find(ks, label, 0);
  if (rc || !stored) {
    /* Keep memory and file in step: what was not saved is not kept. */
    if (stored)
      hsm__ks_remove(ks, label, stored->version);
    return rc ? rc : HSM_E_KEYSTORE;
  }
  info_from(stored, out);
  return 0;
}

static int soft_key_generate(hsm_t *h, const char *label, hsm_usage_t usage,
                             hsm_alg_t alg, size_t length,
                             hsm_key_info_t *out) {
  if (!alg_length_ok(alg, length))
    return HSM_E_KEY_LENGTH;
  uint8_t key[64];
  int rc = hsm__random(key, length);
  if (!rc && alg == HSM_ALG_TDES)
    hsm__des_set_parity(key, length);
  if (!rc)
    rc = store_key(h, label, usage, alg, key, length, 0, out);
  hsm__cleanse(key, sizeof key);
  return rc;
}

static int soft_key_import_clear(hsm_t *h, const char *label, hsm_usage_t usage,
                                 hsm_alg_t alg, const uint8_t *key,
                                 size_t length, hsm_key_info_t *out) {
  if (!alg_length_ok(alg, length))
    return HSM_E_KEY_LENGTH;
  return store_key(h, label, usage, alg, key, length, 0, out);
}

/* TR-31 key usage codes (X9.143 Table 6) for each usage, first preferred
 * on export. */
static const char *const tr31_usage[HSM_USAGE_COUNT][3] = {
    [HSM_USAGE_ZMK] = {"K0", NULL, NULL},
    [HSM_USAGE_TMK] = {"K0", NULL, NULL},
    [HSM_USAGE_KBPK] = {"K1", "K0", NULL},
    [HSM_USAGE_ZPK] = {"P0", NULL, NULL},
    [HSM_USAGE_TPK] = {"P0", NULL, NULL},
    [HSM_USAGE_BDK] = {"B0", NULL, NULL},
    [HSM_USAGE_PVK] = {"V2", "V1", "V0"},
    [HSM_USAGE_CVK] = {"C0", NULL, NULL},
    [HSM_USAGE_TAK] = {"M3", "M6", "M1"},
    [HSM_USAGE_ZAK] = {"M3", "M6", "M1"},
    [HSM_USAGE_DEK] = {"D0", NULL, NULL},
    [HSM_USAGE_HMAC] = {"M7", NULL, NULL},
};

static int tr31_usage_ok(hsm_usage_t u, const char *code) {
  for (int i = 0; i < 3 && tr31_usage[u][i]; i++)
    if (strcmp(tr31_usage[u][i], code) == 0)
      return 1;
  return 0;
}

static int alg_from_tr31(char c, hsm_alg_t *alg) {
  if (c == 'T')
    *alg = HSM_ALG_TDES;
  else if (c == 'A')
    *alg = HSM_ALG_AES;
  else if (c == 'H')
    *alg = HSM_ALG_HMAC;
  else
    return HSM_E_KEY_BLOCK;
  return 0;
}

static int kek_for(hsm_t *h, const char *label, hsm__key_t **out) {
  static const hsm_usage_t keks[] = {HSM_USAGE_KBPK, HSM_USAGE_ZMK,
                                     HSM_USAGE_TMK};
  return key_for(h, label, keks, 3, out);
}

static int soft_key_import_tr31(hsm_t *h, const char *label, hsm_usage_t usage,
                                const char *kek_label, const char *block,
                                const char *expected_kcv, int64_t not_after_old,
                                hsm_key_info_t *out) {
  hsm__key_t *kek;
  int rc = kek_for(h, kek_label, &kek);
  if (rc)
    return rc;
  hsm__tr31_t hdr;
  uint8_t key[32];
  size_t len = 0;
  hsm_alg_t alg = 0;
  rc = hsm__tr31_unwrap(kek->key, kek->len, block, strlen(block), &hdr, key,
                        &len);
  if (!rc && !tr31_usage_ok(usage, hdr.usage))
    rc = HSM_E_KEY_USAGE;
  if (!rc)
    rc = alg_from_tr31(hdr.algorithm, &alg);
  if (!rc && !alg_length_ok(alg, len))
    rc = HSM_E_KEY_LENGTH;
  if (!rc && expected_kcv) {
    uint8_t kcv[3];
    char hex[7];
    memset(out, 0, sizeof *out);
    rc = hsm__kcv(alg == HSM_ALG_AES ? HSM__AES : HSM__TDES, key, len, kcv, 3);
    hsm__kcv_hex(kcv, hex);
    if (!rc && strncmp(hex, expected_kcv, 6) != 0) {
      snprintf(out->label, sizeof out->label, "%s", label);
      out->usage = usage;
      out->alg = alg;
      memcpy(out->kcv, hex, sizeof hex);
      rc = HSM_E_KCV_MISMATCH;
    }
  }
  if (!rc)
    rc = store_key(h, label, usage, alg, key, len, not_after_old, out);
  hsm__cleanse(key, sizeof key);
  return rc;
}

static int soft_key_export_tr31(hsm_t *h, const char *label,
                                const char *kek_label, char *out, size_t cap,
                                hsm_key_info_t *info) {
  hsm__key_t *kek, *k = hsm__ks_find(SOFT(h), label, 0);
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  int rc = kek_for(h, kek_label, &kek);
  if (rc)
    return rc;
  hsm__tr31_t hdr;
  memset(&hdr, 0, sizeof hdr);
  /* AES key block protection keys use version D; TDES ones version B (the
   * CMAC-derived binding that replaced A). */
  hdr.version = kek->alg == HSM_ALG_AES ? 'D' : 'B';
  snprintf(hdr.usage, sizeof hdr.usage, "%s", tr31_usage[k->usage][0]);
  hdr.algorithm = k->alg == HSM_ALG_AES    ? 'A'
                  : k->alg == HSM_ALG_TDES ? 'T'
                                           : 'H';
  hdr.mode = k->usage == HSM_USAGE_BDK ? 'X'
             : (k->usage == HSM_USAGE_TAK || k->usage == HSM_USAGE_ZAK ||
                k->usage == HSM_USAGE_PVK || k->usage == HSM_USAGE_CVK ||
                k->usage == HSM_USAGE_HMAC)
                 ? 'C'
                 : 'B';
  memcpy(hdr.key_version, "00", 3);
  hdr.exportability = 'E';
  size_t n = 0;
  rc = hsm__tr31_wrap(kek->key, kek->len, &hdr, k->key, k->len, out, cap, &n);
  if (!rc)
    info_from(k, info);
  return rc;
}

/* Legacy exchange: TDES-ECB under a TDES ZMK or TMK.  Only TDES keys
 * travel this way (AES keys go in TR-31 blocks). */
static int soft_key_import_ecb(hsm_t *h, const char *label, hsm_usage_t usage,
                               const char *kek_label, const uint8_t *cryptogram,
                               size_t len, const char *expected_kcv,
                               int64_t not_after_old, hsm_key_info_t *out) {
  hsm__key_t *kek;
  int rc = kek_for(h, kek_label, &kek);
  if (rc)
    return rc;
  if (kek->alg != HSM_ALG_TDES)
    return HSM_E_KEY_USAGE;
  uint8_t key[24], kcv[3];
  char hex[7];
  rc = hsm__ecb(&kek->cipher, 0, cryptogram, key, len);
  if (!rc)
    rc = hsm__kcv(HSM__TDES, key, len, kcv, 3);
  if (!rc) {
    hsm__kcv_hex(kcv, hex);
    if (strncmp(hex, expected_kcv, 6) != 0) {
      memset(out, 0, sizeof *out);
      snprintf(out->label, sizeof out->label, "%s", label);
      out->usage = usage;
      out->alg = HSM_ALG_TDES;
      memcpy(out->kcv, hex, sizeof hex);
      rc = HSM_E_KCV_MISMATCH;
    }
  }
  if (!rc) {
    hsm__des_set_parity(key, len);
    rc = store_key(h, label, usage, HSM_ALG_TDES, key, len, not_after_old, out);
  }
  hsm__cleanse(key, sizeof key);
  return rc;
}

static int soft_key_export_ecb(hsm_t *h, const char *label,
                               const char *kek_label, uint8_t *cryptogram,
                               size_t cap, size_t *len, hsm_key_info_t *info) {
  hsm__key_t *kek, *k = hsm__ks_find(SOFT(h), label, 0);
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  int rc = kek_for(h, kek_label, &kek);
  if (rc)
    return rc;
  if (kek->alg != HSM_ALG_TDES || k->alg != HSM_ALG_TDES || k->len < 16)
    return HSM_E_KEY_USAGE;
  if (cap < k->len)
    return HSM_E_INVAL;
  rc = hsm__ecb(&kek->cipher, 1, k->key, cryptogram, k->len);
  if (!rc) {
    *len = k->len;
    info_from(k, info);
  }
  return rc;
}

static int soft_key_rotate(hsm_t *h, const char *label, int64_t not_after_old,
                           hsm_key_info_t *out) {
  hsm__key_t *k = hsm__ks_find(SOFT(h), label, 0);
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  uint8_t key[64];
  size_t len = k->len;
  hsm_alg_t alg = k->alg;
  hsm_usage_t usage = k->usage;
  int rc = hsm__random(key, len);
  if (!rc && alg == HSM_ALG_TDES)
    hsm__des_set_parity(key, len);
  if (!rc)
    rc = store_key(h, label, usage, alg, key, len, not_after_old, out);
  hsm__cleanse(key, sizeof key);
  return rc;
}

static int soft_key_destroy(hsm_t *h, const char *label, uint32_t version,
                            hsm_key_info_t *info) {
  hsm__key_t *k = hsm__ks_find(SOFT(h), label, 0);
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  if (version && version == k->version)
    return HSM_E_INVAL; /* the current version: rotate first */
  if (version && !(k = hsm__ks_find(SOFT(h), label, version)))
    return HSM_E_KEY_NOT_FOUND;
  info_from(k, info);
  int rc = hsm__ks_remove(SOFT(h), label, version);
  return rc ? rc : hsm__ks_save(SOFT(h));
}

const hsm__backend_t hsm__soft_backend = {
    .name = "soft",
    .caps = HSM_CAP_PIN_TRANSLATE | HSM_CAP_PIN_AES | HSM_CAP_DUKPT_TDES |
            HSM_CAP_DUKPT_AES | HSM_CAP_PIN_VERIFY | HSM_CAP_MAC_RETAIL |
            HSM_CAP_MAC_CMAC | HSM_CAP_CVV | HSM_CAP_DATA | HSM_CAP_KEY_TR31 |
            HSM_CAP_KEY_COMPONENTS | HSM_CAP_KEY_GENERATE,
    .open = soft_open,
    .close = soft_close,
    .submit = soft_submit,
    .cancel = NULL,
    .key_list = soft_key_list,
    .key_info = soft_key_info,
    .key_generate = soft_key_generate,
    .key_import_clear = soft_key_import_clear,
    .key_import_tr31 = soft_key_import_tr31,
    .key_export_tr31 = soft_key_export_tr31,
    .key_import_ecb = soft_key_import_ecb,
    .key_export_ecb = soft_key_export_ecb,
    .key_rotate = soft_key_rotate,
    .key_destroy = soft_key_destroy,
};
