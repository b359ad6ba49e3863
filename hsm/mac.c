/*
 * mac.c — ISO/IEC 9797-1 MACs over DES: algorithm 1 (CBC-MAC, the block
 * cipher being single DES, 2-key or 3-key TDES by key length) and algorithm
 * 3 (the retail MAC of ANSI X9.19: single-DES CBC with K over every block,
 * then the last result deciphered with K' and enciphered again with K),
 * with padding method 1 or 2.  CMAC (algorithm 5) is hsm__cmac in
 * symmetric.c.
 *
 * Guarantees: the MAC is always the full 8-byte block (truncation is the
 * caller's business); the message is read once, block by block, without a
 * padded copy; an unknown algorithm or padding method is HSM_E_INVAL, a
 * key of the wrong length for the algorithm HSM_E_KEY_LENGTH.
 */
#include "crypto.h"
#include "hsm.h"

#include <string.h>

enum { BLK = 8 };

/* The final, padded block (none when method 1 meets a non-empty multiple
 * of 8); returns its length, 0 or 8.  Method 1 adds as few zero
 * bytes as needed for a positive multiple of 8 (so the empty message is
 * one zero block, and a message already a multiple of 8 gets nothing);
 * method 2 always appends 0x80, then zeros. */
static size_t pad_tail(int padding, const uint8_t *msg, size_t len,
                       uint8_t tail[BLK]) {
  size_t full = len - len % BLK, rest = len % BLK;
  memset(tail, 0, BLK);
  if (rest)
    memcpy(tail, msg + full, rest);
  if (padding == 1)
    return rest || len == 0 ? BLK : 0;
  tail[rest] = 0x80;
  return BLK;
}

/* CBC step: state = E(state XOR block). */
static int chain(hsm__cipher_t *c, uint8_t state[BLK], const uint8_t *blk) {
  for (size_t i = 0; i < BLK; i++)
    state[i] ^= blk[i];
  return hsm__ecb(c, 1, state, state, BLK);
}

/* Algorithm 1 runs every block through `all`.  Algorithm 3 runs all but the
 * last block through single DES with K (`all`) and the last through `last`,
 * 2-key TDES with K|K': E_K(D_K'(E_K(x))) is exactly the output
 * transformation applied to the final CBC step. */
static int cbc_mac(hsm__cipher_t *all, hsm__cipher_t *last, int padding,
                   const uint8_t *msg, size_t len, uint8_t out[BLK]) {
  uint8_t tail[BLK];
  uint8_t state[BLK] = {0};
  size_t full = len - len % BLK;
  size_t taillen = pad_tail(padding, msg, len, tail);
  size_t nblocks = full / BLK + taillen / BLK;
  int rc = 0;
  for (size_t b = 0; b < nblocks && rc == 0; b++) {
    const uint8_t *p = b * BLK < full ? msg + b * BLK : tail;
    rc = chain(b + 1 == nblocks ? last : all, state, p);
  }
  if (rc == 0)
    memcpy(out, state, BLK);
  hsm__cleanse(tail, sizeof tail);
  hsm__cleanse(state, sizeof state);
  return rc;
}

int hsm__mac_iso9797(int algorithm, int padding, const uint8_t *key,
                     size_t keylen, const uint8_t *msg, size_t len,
                     uint8_t out[8]) {
  hsm__cipher_t k, kk;
  int rc;
  if (!key || !out || (!msg && len))
    return HSM_E_INVAL;
  if ((algorithm != 1 && algorithm != 3) || (padding != 1 && padding != 2))
    return HSM_E_INVAL;
  if (algorithm == 1) {
    if ((rc = hsm__cipher_init(&k, HSM__TDES, key, keylen)) != 0)
      return rc;
    rc = cbc_mac(&k, &k, padding, msg, len, out);
    hsm__cipher_free(&k);
    return rc;
  }
  /* Algorithm 3 is defined for two keys, K and K'. */
  if (keylen != 16)
    return HSM_E_KEY_LENGTH;
  if ((rc = hsm__cipher_init(&k, HSM__TDES, key, 8)) != 0)
    return rc;
  if ((rc = hsm__cipher_init(&kk, HSM__TDES, key, 16)) != 0) {
    hsm__cipher_free(&k);
    return rc;
  }
  rc = cbc_mac(&k, &kk, padding, msg, len, out);
  hsm__cipher_free(&k);
  hsm__cipher_free(&kk);
  return rc;
}
