/*
 * dukpt.c — Derived Unique Key Per Transaction, host side: from a base
 * derivation key (BDK) and a key serial number (KSN), the key a terminal
 * used for one transaction.
 *
 * TDES DUKPT (ANSI X9.24-1-2009, Annex A).  KSN: 10 bytes, the rightmost
 * 21 bits are the transaction counter.  The initial key (IPEK) is the BDK
 * encrypting the KSN's left 8 bytes with the counter cleared (left half),
 * and the BDK XOR C0C0C0C000000000C0C0C0C000000000 encrypting the same
 * (right half).  The transaction key follows from the IPEK by the
 * non-reversible key generation process, once for each set counter bit,
 * highest first.  Usage keys are variants of it (XOR of one byte in each
 * half with FF); the two data keys are further the variant key encrypting
 * itself (TDES-ECB, both halves), as the standard's data variant rule says
 * and the Annex A values show.
 *
 * AES DUKPT (ANSI X9.24-3-2017).  KSN: 12 bytes, an 8-byte initial key ID
 * (4-byte BDK ID, 4-byte derivation ID) and a 32-bit counter.  Every key is
 * AES-ECB of one or two 16-byte derivation data blocks under its parent:
 *   01 | block counter | key usage (2) | algorithm (2) | length in bits (2)
 *      | 8 bytes: the initial key ID (initial key) or derivation ID and
 *        counter (intermediate and working keys).
 * The initial key and intermediate keys have the BDK's length; working
 * keys are AES of outlen bytes, never longer than the BDK.  hsm.h's usages
 * map onto X9.24-3 key usages as:
 *   HSM__DUKPT_PIN           PIN encryption          (1000)
 *   HSM__DUKPT_MAC_REQUEST   MAC generation          (2000)
 *   HSM__DUKPT_MAC_RESPONSE  MAC verification        (2001)
 *   HSM__DUKPT_DATA_REQUEST  data encryption, encrypt (3000)
 *   HSM__DUKPT_DATA_RESPONSE data encryption, decrypt (3001)
 *   HSM__DUKPT_TRANSACTION   the intermediate derivation key for the
 *                            KSN's counter (BDK's length)
 * i.e. a terminal MACs and encrypts requests with the generation/encrypt
 * keys, and the host's responses are checked and decrypted with the
 * verification/decrypt keys.
 *
 * Both refuse (HSM_E_BAD_DATA) a counter of 0 and a counter with more set
 * bits than an originating device ever uses (10 for TDES, 16 for AES): no
 * terminal can have produced such a KSN.  Every intermediate key is wiped.
 */
#include "crypto.h"
#include "hsm.h"

#include <string.h>

/* ------------------------------------------------------------------------ */
/* TDES DUKPT, ANSI X9.24-1-2009                                            */

enum {
  TDES_KSN_LEN = 10,
  TDES_MAX_COUNTER_BITS = 10,
  TDES_TOP_COUNTER_BIT = 1 << 20 /* the counter is 21 bits */
};

/* The "C0C0 C0C0 0000 0000" mask of the IPEK and key generation steps. */
static const uint8_t tdes_c0_mask[16] = {0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0,
                                         0xC0, 0xC0, 0xC0, 0xC0, 0, 0, 0, 0};

static int bits_set(uint32_t v) {
  int n = 0;
  for (; v; v &= v - 1)
    n++;
  return n;
}

static void xor_bytes(uint8_t *dst, const uint8_t *a, const uint8_t *b,
                      size_t n) {
  for (size_t i = 0; i < n; i++)
    dst[i] = a[i] ^ b[i];
}

static uint32_t tdes_counter(const uint8_t ksn[TDES_KSN_LEN]) {
  return (uint32_t)(ksn[7] & 0x1F) << 16 | (uint32_t)ksn[8] << 8 | ksn[9];
}

int hsm__dukpt_tdes_ipek(const uint8_t bdk[16], const uint8_t ksn[10],
                         uint8_t ipek[16]) {
  if (!bdk || !ksn || !ipek)
    return HSM_E_INVAL;
  uint8_t reg[8], variant[16], key[16];
  memcpy(reg, ksn, 8);
  reg[7] &= 0xE0;
  xor_bytes(variant, bdk, tdes_c0_mask, 16);
  int rc = hsm__ecb_raw(HSM__TDES, bdk, 16, 1, reg, key, 8);
  if (rc == 0)
    rc = hsm__ecb_raw(HSM__TDES, variant, 16, 1, reg, key + 8, 8);
  if (rc == 0)
    memcpy(ipek, key, 16);
  hsm__cleanse(variant, sizeof variant);
  hsm__cleanse(key, sizeof key);
  return rc;
}

/* One half of the non-reversible key generation process:
 * out = DES(key left, reg XOR key right) XOR key right. */
static int nrkgp_half(const uint8_t key[16], const uint8_t reg[8],
                      uint8_t out[8]) {
  uint8_t msg[8];
  xor_bytes(msg, reg, key + 8, 8);
  int rc = hsm__ecb_raw(HSM__TDES, key, 8, 1, msg, out, 8);
  if (rc == 0)
    xor_bytes(out, out, key + 8, 8);
  hsm__cleanse(msg, sizeof msg);
  return rc;
}

/* X9.24-1 A.2 "Non-reversible Key Generation Process": the new right half
 * from the key, the new left half from the key XOR the C0 mask. */
static int nrkgp(uint8_t key[16], const uint8_t reg[8]) {
  uint8_t masked[16], next[16];
  xor_bytes(masked, key, tdes_c0_mask, 16);
  int rc = nrkgp_half(key, reg, next + 8);
  if (rc == 0)
    rc = nrkgp_half(masked, reg, next);
  if (rc == 0)
    memcpy(key, next, 16);
  hsm__cleanse(masked, sizeof masked);
  hsm__cleanse(next, sizeof next);
  return rc;
}

static int tdes_transaction_key(const uint8_t bdk[16], const uint8_t ksn[10],
                                uint8_t key[16]) {
  uint32_t counter = tdes_counter(ksn);
  if (counter == 0 || bits_set(counter) > TDES_MAX_COUNTER_BITS)
    return HSM_E_BAD_DATA;
  int rc = hsm__dukpt_tdes_ipek(bdk, ksn, key);
  if (rc)
    return rc;
  /* The register is the KSN's right 8 bytes; counter bits are added one by
   * one, highest first, so each step's key is the one the terminal held in
   * its future-key register for that counter prefix. */
  uint8_t reg[8];
  memcpy(reg, ksn + 2, 8);
  reg[5] &= 0xE0;
  reg[6] = reg[7] = 0;
  for (uint32_t bit = TDES_TOP_COUNTER_BIT; bit && rc == 0; bit >>= 1) {
    if (!(counter & bit))
      continue;
    reg[5] |= (uint8_t)(bit >> 16);
    reg[6] |= (uint8_t)(bit >> 8);
    reg[7] |= (uint8_t)bit;
    rc = nrkgp(key, reg);
  }
  if (rc)
    hsm__cleanse(key, 16);
  return rc;
}

/* The byte (in each half) that a usage's variant XORs with FF:
 * PIN 00..00FF, MAC request 00..FF00, MAC response 0000 0000 FF00 0000,
 * data request 0000 0000 00FF 0000, data response 0000 00FF 0000 0000. */
static int tdes_variant_byte(int usage) {
  switch (usage) {
  case HSM__DUKPT_PIN:
    return 7;
  case HSM__DUKPT_MAC_REQUEST:
    return 6;
  case HSM__DUKPT_MAC_RESPONSE:
    return 4;
  case HSM__DUKPT_DATA_REQUEST:
    return 5;
  case HSM__DUKPT_DATA_RESPONSE:
    return 3;
  default:
    return -1;
  }
}

int hsm__dukpt_tdes_key(const uint8_t bdk[16], const uint8_t ksn[10], int usage,
                        uint8_t out[16]) {
  if (!bdk || !ksn || !out)
    return HSM_E_INVAL;
  int vbyte = tdes_variant_byte(usage);
  if (vbyte < 0 && usage != HSM__DUKPT_TRANSACTION)
    return HSM_E_INVAL;
  uint8_t key[16];
  int rc = tdes_transaction_key(bdk, ksn, key);
  if (rc == 0 && vbyte >= 0) {
    key[vbyte] ^= 0xFF;
    key[vbyte + 8] ^= 0xFF;
    if (usage == HSM__DUKPT_DATA_REQUEST || usage == HSM__DUKPT_DATA_RESPONSE) {
      /* Data keys: the variant is not used directly but encrypts itself,
       * so a data key disclosed by a terminal's data path does not give
       * the PIN or MAC variants of the same transaction key. */
      uint8_t enc[16];
      rc = hsm__ecb_raw(HSM__TDES, key, 16, 1, key, enc, 16);
      memcpy(key, enc, 16);
      hsm__cleanse(enc, sizeof enc);
    }
  }
  if (rc == 0)
    memcpy(out, key, 16);
  hsm__cleanse(key, sizeof key);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* AES DUKPT, ANSI X9.24-3-2017                                             */

enum { AES_KSN_LEN = 12, AES_MAX_COUNTER_BITS = 16, AES_BLOCK = 16 };

/* X9.24-3-2017 key usage indicators (derivation data bytes 2-3). */
enum {
  KU_PIN_ENCRYPTION = 0x1000,
  KU_MAC_GENERATION = 0x2000,
  KU_MAC_VERIFICATION = 0x2001,
  KU_DATA_ENCRYPT = 0x3000,
  KU_DATA_DECRYPT = 0x3001,
  KU_KEY_DERIVATION = 0x8000,
  KU_KEY_DERIVATION_INITIAL_KEY = 0x8001
};

static int aes_len_ok(size_t len) {
  return len == 16 || len == 24 || len == 32;
}

/* Derives an AES key of outlen bytes from key: AES-ECB of one derivation
 * data block per 128 bits of output (block counter 1, 2), leftmost outlen
 * bytes.  data8 is the block's last 8 bytes. */
static int aes_derive(const uint8_t *key, size_t keylen, unsigned usage,
                      size_t outlen, const uint8_t data8[8], uint8_t *out) {
  /* Algorithm indicator: 0002 AES-128, 0003 AES-192, 0004 AES-256. */
  unsigned alg = outlen == 16 ? 2 : outlen == 24 ? 3 : 4;
  unsigned bits = (unsigned)outlen * 8;
  uint8_t dd[2 * AES_BLOCK], derived[2 * AES_BLOCK];
  size_t nblocks = (outlen + AES_BLOCK - 1) / AES_BLOCK;
  for (size_t i = 0; i < nblocks; i++) {
    uint8_t *d = dd + i * AES_BLOCK;
    d[0] = 0x01; /* version */
    d[1] = (uint8_t)(i + 1);
    d[2] = (uint8_t)(usage >> 8);
    d[3] = (uint8_t)usage;
    d[4] = (uint8_t)(alg >> 8);
    d[5] = (uint8_t)alg;
    d[6] = (uint8_t)(bits >> 8);
    d[7] = (uint8_t)bits;
    memcpy(d + 8, data8, 8);
  }
  int rc =
      hsm__ecb_raw(HSM__AES, key, keylen, 1, dd, derived, nblocks * AES_BLOCK);
  if (rc == 0)
    memcpy(out, derived, outlen);
  hsm__cleanse(derived, sizeof derived);
  return rc;
}

int hsm__dukpt_aes_initial_key(const uint8_t *bdk, size_t bdklen,
                               const uint8_t ksn[12], uint8_t *out,
                               size_t outlen) {
  if (!bdk || !ksn || !out)
    return HSM_E_INVAL;
  /* A derived key may not be stronger than the key deriving it. */
  if (!aes_len_ok(bdklen) || !aes_len_ok(outlen) || outlen > bdklen)
    return HSM_E_KEY_LENGTH;
  return aes_derive(bdk, bdklen, KU_KEY_DERIVATION_INITIAL_KEY, outlen, ksn,
                    out);
}

/* The intermediate derivation key for the KSN's counter, bdklen bytes. */
static int aes_transaction_key(const uint8_t *bdk, size_t bdklen,
                               const uint8_t ksn[12], uint8_t *key) {
  uint32_t counter = (uint32_t)ksn[8] << 24 | (uint32_t)ksn[9] << 16 |
                     (uint32_t)ksn[10] << 8 | ksn[11];
  if (counter == 0 || bits_set(counter) > AES_MAX_COUNTER_BITS)
    return HSM_E_BAD_DATA;
  int rc =
      aes_derive(bdk, bdklen, KU_KEY_DERIVATION_INITIAL_KEY, bdklen, ksn, key);
  /* Bytes 8-15 of each step's derivation data: derivation ID (KSN bytes
   * 4-7), then the counter with the bits walked so far. */
  uint8_t data8[8];
  memcpy(data8, ksn + 4, 4);
  uint32_t walked = 0;
  for (uint32_t bit = 0x80000000u; bit && rc == 0; bit >>= 1) {
    if (!(counter & bit))
      continue;
    walked |= bit;
    data8[4] = (uint8_t)(walked >> 24);
    data8[5] = (uint8_t)(walked >> 16);
    data8[6] = (uint8_t)(walked >> 8);
    data8[7] = (uint8_t)walked;
    uint8_t next[32];
    rc = aes_derive(key, bdklen, KU_KEY_DERIVATION, bdklen, data8, next);
    if (rc == 0)
      memcpy(key, next, bdklen);
    hsm__cleanse(next, sizeof next);
  }
  if (rc)
    hsm__cleanse(key, bdklen);
  return rc;
}

static int aes_usage_code(int usage) {
  switch (usage) {
  case HSM__DUKPT_PIN:
    return KU_PIN_ENCRYPTION;
  case HSM__DUKPT_MAC_REQUEST:
    return KU_MAC_GENERATION;
  case HSM__DUKPT_MAC_RESPONSE:
    return KU_MAC_VERIFICATION;
  case HSM__DUKPT_DATA_REQUEST:
    return KU_DATA_ENCRYPT;
  case HSM__DUKPT_DATA_RESPONSE:
    return KU_DATA_DECRYPT;
  default:
    return -1;
  }
}

int hsm__dukpt_aes_key(const uint8_t *bdk, size_t bdklen, const uint8_t ksn[12],
                       int usage, uint8_t *out, size_t outlen) {
  if (!bdk || !ksn || !out)
    return HSM_E_INVAL;
  int code = aes_usage_code(usage);
  if (code < 0 && usage != HSM__DUKPT_TRANSACTION)
    return HSM_E_INVAL;
  if (!aes_len_ok(bdklen) || !aes_len_ok(outlen) || outlen > bdklen)
    return HSM_E_KEY_LENGTH;
  /* The transaction key is the intermediate key itself: its length is the
   * BDK's, not a working key length the caller may choose. */
  if (usage == HSM__DUKPT_TRANSACTION && outlen != bdklen)
    return HSM_E_KEY_LENGTH;
  uint8_t key[32], working[32];
  int rc = aes_transaction_key(bdk, bdklen, ksn, key);
  if (rc == 0 && usage == HSM__DUKPT_TRANSACTION)
    memcpy(out, key, outlen);
  else if (rc == 0) {
    rc = aes_derive(key, bdklen, (unsigned)code, outlen, ksn + 4, working);
    if (rc == 0)
      memcpy(out, working, outlen);
  }
  hsm__cleanse(key, sizeof key);
  hsm__cleanse(working, sizeof working);
  return rc;
}
