/*
 * symmetric.c — block ciphers, CMAC, key check values and parity on
 * OpenSSL 3 EVP (default provider only).
 *
 * Single DES is not in OpenSSL 3's default provider; it is computed as
 * two-key TDES with K|K, which is the same function (EDE with equal keys
 * collapses to one DES encryption).  A hsm__cipher_t keeps one ECB context
 * per direction, keyed once, so a key used for thousands of PIN blocks a
 * second pays for its key schedule once.
 */
#include "crypto.h"
#include "hsm.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <string.h>

void hsm__cleanse(void *p, size_t n) {
  if (p && n)
    OPENSSL_cleanse(p, n);
}

int hsm__random(uint8_t *out, size_t n) {
  if (n > INT32_MAX)
    return HSM_E_INVAL;
  return RAND_bytes(out, (int)n) == 1 ? 0 : HSM_E_CRYPTO;
}

/* Errors: an unknown algorithm is HSM_E_INVAL (a caller bug); a known
 * algorithm with a length it does not have is HSM_E_KEY_LENGTH (bad key
 * material), everywhere in this file. */

/* The ECB cipher for a key, and the key bytes OpenSSL should see (single
 * DES widened to K|K). */
static const EVP_CIPHER *ecb_cipher(int alg, const uint8_t *key, size_t keylen,
                                    uint8_t *kbuf, size_t *klen) {
  if (alg == HSM__TDES) {
    if (keylen == 8) {
      memcpy(kbuf, key, 8);
      memcpy(kbuf + 8, key, 8);
      *klen = 16;
      return EVP_des_ede_ecb();
    }
    memcpy(kbuf, key, keylen);
    *klen = keylen;
    if (keylen == 16)
      return EVP_des_ede_ecb();
    if (keylen == 24)
      return EVP_des_ede3_ecb();
    return NULL;
  }
  if (alg == HSM__AES) {
    memcpy(kbuf, key, keylen);
    *klen = keylen;
    if (keylen == 16)
      return EVP_aes_128_ecb();
    if (keylen == 24)
      return EVP_aes_192_ecb();
    if (keylen == 32)
      return EVP_aes_256_ecb();
  }
  return NULL;
}

static const EVP_CIPHER *cbc_cipher(int alg, size_t klen) {
  if (alg == HSM__TDES)
    return klen == 24 ? EVP_des_ede3_cbc() : EVP_des_ede_cbc();
  if (klen == 16)
    return EVP_aes_128_cbc();
  return klen == 24 ? EVP_aes_192_cbc() : EVP_aes_256_cbc();
}

static int valid_key(int alg, size_t keylen) {
  if (alg == HSM__TDES)
    return keylen == 8 || keylen == 16 || keylen == 24;
  if (alg == HSM__AES)
    return keylen == 16 || keylen == 24 || keylen == 32;
  return 0;
}

void hsm__cipher_free(hsm__cipher_t *c) {
  if (!c)
    return;
  EVP_CIPHER_CTX_free(c->enc);
  EVP_CIPHER_CTX_free(c->dec);
  c->enc = c->dec = NULL;
  hsm__cleanse(c->key, sizeof c->key);
  c->keylen = 0;
}

int hsm__cipher_init(hsm__cipher_t *c, int alg, const uint8_t *key,
                     size_t keylen) {
  if (!c || !key)
    return HSM_E_INVAL;
  memset(c, 0, sizeof *c);
  if (alg != HSM__TDES && alg != HSM__AES)
    return HSM_E_INVAL;
  if (!valid_key(alg, keylen))
    return HSM_E_KEY_LENGTH;
  uint8_t kbuf[32];
  size_t klen;
  const EVP_CIPHER *cipher = ecb_cipher(alg, key, keylen, kbuf, &klen);
  c->alg = alg;
  c->block = alg == HSM__TDES ? 8 : 16;
  c->keylen = klen;
  memcpy(c->key, kbuf, klen);
  c->enc = EVP_CIPHER_CTX_new();
  c->dec = EVP_CIPHER_CTX_new();
  int ok = c->enc && c->dec &&
           EVP_EncryptInit_ex(c->enc, cipher, NULL, kbuf, NULL) == 1 &&
           EVP_DecryptInit_ex(c->dec, cipher, NULL, kbuf, NULL) == 1 &&
           EVP_CIPHER_CTX_set_padding(c->enc, 0) == 1 &&
           EVP_CIPHER_CTX_set_padding(c->dec, 0) == 1;
  hsm__cleanse(kbuf, sizeof kbuf);
  if (!ok) {
    hsm__cipher_free(c);
    return HSM_E_CRYPTO;
  }
  return 0;
}

int hsm__ecb(hsm__cipher_t *c, int encrypt, const uint8_t *in, uint8_t *out,
             size_t len) {
  if (!c || !c->enc || len % c->block || len > INT32_MAX)
    return HSM_E_INVAL;
  int n = 0;
  EVP_CIPHER_CTX *ctx = encrypt ? c->enc : c->dec;
  if (EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1 || (size_t)n != len)
    return HSM_E_CRYPTO;
  return 0;
}

int hsm__cbc(hsm__cipher_t *c, int encrypt, const uint8_t *iv,
             const uint8_t *in, uint8_t *out, size_t len) {
  if (!c || !c->enc || len % c->block || len > INT32_MAX)
    return HSM_E_INVAL;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx)
    return HSM_E_NOMEM;
  int n = 0, rc = HSM_E_CRYPTO;
  if (EVP_CipherInit_ex(ctx, cbc_cipher(c->alg, c->keylen), NULL, c->key, iv,
                        encrypt ? 1 : 0) == 1 &&
      EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
      EVP_CipherUpdate(ctx, out, &n, in, (int)len) == 1 && (size_t)n == len)
    rc = 0;
  EVP_CIPHER_CTX_free(ctx);
  return rc;
}

int hsm__ecb_raw(int alg, const uint8_t *key, size_t keylen, int encrypt,
                 const uint8_t *in, uint8_t *out, size_t len) {
  hsm__cipher_t c;
  int rc = hsm__cipher_init(&c, alg, key, keylen);
  if (rc)
    return rc;
  rc = hsm__ecb(&c, encrypt, in, out, len);
  hsm__cipher_free(&c);
  return rc;
}

int hsm__cmac(int alg, const uint8_t *key, size_t keylen, const uint8_t *msg,
              size_t len, uint8_t *out, size_t *outlen) {
  if (!key || (!msg && len) || !out || (alg != HSM__TDES && alg != HSM__AES))
    return HSM_E_INVAL;
  if (!valid_key(alg, keylen))
    return HSM_E_KEY_LENGTH;
  uint8_t kbuf[32];
  size_t klen;
  if (!ecb_cipher(alg, key, keylen, kbuf, &klen))
    return HSM_E_KEY_LENGTH;
  const char *name = alg == HSM__TDES
                         ? (klen == 24 ? "DES-EDE3-CBC" : "DES-EDE-CBC")
                         : (klen == 16   ? "AES-128-CBC"
                            : klen == 24 ? "AES-192-CBC"
                                         : "AES-256-CBC");
  EVP_MAC *mac = EVP_MAC_fetch(NULL, "CMAC", NULL);
  EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(
                             OSSL_MAC_PARAM_CIPHER, (char *)(uintptr_t)name, 0),
                         OSSL_PARAM_construct_end()};
  size_t n = 0;
  int rc = HSM_E_CRYPTO;
  if (ctx && EVP_MAC_init(ctx, kbuf, klen, params) == 1 &&
      EVP_MAC_update(ctx, msg, len) == 1 &&
      EVP_MAC_final(ctx, out, &n, alg == HSM__TDES ? 8 : 16) == 1) {
    if (outlen)
      *outlen = n;
    rc = 0;
  }
  hsm__cleanse(kbuf, sizeof kbuf);
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  return rc;
}

static int hmac_kcv(const uint8_t *key, size_t keylen, uint8_t *out, size_t n) {
  static const uint8_t zeros[16];
  uint8_t full[32];
  size_t fl = 0;
  if (!key)
    return HSM_E_INVAL;
  if (keylen < 16 || keylen > 64)
    return HSM_E_KEY_LENGTH;
  EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                       (char *)(uintptr_t) "SHA256", 0),
      OSSL_PARAM_construct_end()};
  int rc = HSM_E_CRYPTO;
  if (ctx && EVP_MAC_init(ctx, key, keylen, params) == 1 &&
      EVP_MAC_update(ctx, zeros, sizeof zeros) == 1 &&
      EVP_MAC_final(ctx, full, &fl, sizeof full) == 1) {
    memcpy(out, full, n);
    rc = 0;
  }
  EVP_MAC_CTX_free(ctx);
  EVP_MAC_free(mac);
  return rc;
}

int hsm__kcv(int alg, const uint8_t *key, size_t keylen, uint8_t *out,
             size_t n) {
  uint8_t full[16];
  static const uint8_t zeros[16];
  size_t fl = 0;
  int rc;
  if (n > 8)
    return HSM_E_INVAL;
  if (alg == HSM__HMAC)
    return hmac_kcv(key, keylen, out, n);
  if (alg == HSM__AES)
    rc = hsm__cmac(HSM__AES, key, keylen, zeros, 16, full, &fl);
  else
    rc = hsm__ecb_raw(alg, key, keylen, 1, zeros, full, 8);
  if (rc == 0)
    memcpy(out, full, n);
  return rc;
}

void hsm__des_set_parity(uint8_t *key, size_t len) {
  for (size_t i = 0; i < len; i++) {
    uint8_t b = key[i] & 0xFE;
    key[i] = (uint8_t)(b | !(__builtin_popcount(b) & 1));
  }
}

int hsm__des_parity_ok(const uint8_t *key, size_t len) {
  for (size_t i = 0; i < len; i++)
    if (!(__builtin_popcount(key[i]) & 1))
      return 0;
  return 1;
}
