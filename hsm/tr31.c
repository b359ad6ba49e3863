/*
 * tr31.c — TR-31 / ANSI X9.143 key blocks, versions A, B, C and D: unwrap
 * a key received under a key block protection key (KBPK), wrap one for
 * export.
 *
 * A block is text: a header (16 characters, then optional blocks), the
 * encrypted key data in upper-case hex, and the MAC in upper-case hex.
 *   header: version (1), block length (4 digits, whole block), key usage
 *   (2), algorithm (1), mode of use (1), key version number (2),
 *   exportability (1), number of optional blocks (2 digits), key context
 *   and reserved (2; "00" in TR-31:2018, X9.143 allows '1' or '2' first);
 *   optional block: ID (2), length (2 hex digits; "00" then 2 hex digits
 *   giving the length of a longer hex length field), data (printable).
 *   key data: key length in bits (2 bytes), key, padding to the block size.
 * Versions:
 *   A, C  TDES; encryption key = KBPK XOR 45.., MAC key = KBPK XOR 4D..;
 *         TDES-CBC with the first 8 header bytes as IV; MAC = leftmost 4
 *         bytes of TDES CBC-MAC over the header text and the encrypted key
 *         data (binary, as the TR-31:2018 A.7.2.1 block shows).
 *   B     TDES; keys derived with TDES-CMAC (counter, usage 0000/0001,
 *         algorithm, length); MAC = 8-byte CMAC over header and clear key
 *         data; TDES-CBC with the MAC as IV.
 *   D     as B with AES: AES-CMAC derivation, 16-byte MAC, AES-CBC.
 *
 * Unwrap guarantees: the length, header and hex are checked first, then
 * the MAC (constant-time compare); nothing in the key data is interpreted
 * until it verifies.  For A and C the MAC covers the ciphertext, so it is
 * checked before decrypting.  For B and D the MAC is over the clear key
 * data (that is the binding method), so the data is decrypted into a
 * private buffer that is examined only after the MAC verifies and wiped
 * either way.  Any failure is HSM_E_KEY_BLOCK (HSM_E_INVAL for NULL
 * arguments), with *keylen 0, the 32-byte key output zeroed and *hdr
 * zeroed: the caller never gets a partial key or header.
 *
 * Wrap writes no optional blocks and pads with random bytes (hsm__random)
 * to the next block boundary, so two wraps of one key differ.
 */
#include "crypto.h"
#include "hsm.h"

#include <openssl/crypto.h>
#include <string.h>

enum {
  HDR_FIXED = 16,
  HDR_MAX = 255, /* hsm__tr31_t.header holds 255 characters and a NUL */
  KEY_MAX = 32,  /* the largest key the callers' buffers take */
  /* Key data limit: the key length field, a 256-bit key and X9.143's
   * length-hiding padding fit in 48 bytes; anything far beyond that is not
   * a key this switch can use. */
  PAYLOAD_MAX = 128,
  MAC_MAX = 16,
  BLOCK_LEN_MAX = 9999 /* four decimal digits */
};

typedef struct version_s {
  char id;
  int alg;        /* HSM__TDES or HSM__AES: KBPK and cipher */
  size_t block;   /* cipher block size */
  size_t mac_len; /* bytes of MAC in the block */
  int variant;    /* 1: A and C key variant binding; 0: CMAC derivation */
} version_t;

static const version_t versions[] = {
    {'A', HSM__TDES, 8, 4, 1},
    {'B', HSM__TDES, 8, 8, 0},
    {'C', HSM__TDES, 8, 4, 1},
    {'D', HSM__AES, 16, 16, 0},
};

static const version_t *find_version(char id) {
  for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++)
    if (versions[i].id == id)
      return &versions[i];
  return NULL;
}

static int kbpk_len_ok(const version_t *v, size_t len) {
  if (v->alg == HSM__TDES)
    return len == 16 || len == 24;
  return len == 16 || len == 24 || len == 32;
}

/* Key lengths the header's algorithm allows; other algorithms (HMAC, ...)
 * any whole number of bytes up to KEY_MAX. */
static size_t key_len_max(char algorithm) {
  switch (algorithm) {
  case 'D':
    return 8;
  case 'T':
    return 24;
  default:
    return KEY_MAX;
  }
}

static int key_len_ok(char algorithm, size_t len) {
  switch (algorithm) {
  case 'D':
    return len == 8;
  case 'T':
    /* 8: single DES carried as TDES (K|K|K), as crypto.h allows and as
     * other implementations wrap it. */
    return len == 8 || len == 16 || len == 24;
  case 'A':
    return len == 16 || len == 24 || len == 32;
  default:
    return len > 0 && len <= KEY_MAX;
  }
}

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

static int is_alnum(char c) {
  return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Upper-case hex only: the MAC of A and C covers the text, and for B and D
 * a lower-case digit would be a second spelling of one block. */

/* Value of n hex digits, or -1. */
static long hex_number(const char *s, size_t n) {
  long v = 0;
  for (size_t i = 0; i < n; i++) {
    int d = hsm__hexval(s[i], 1);
    if (d < 0)
      return -1;
    v = v * 16 + d;
  }
  return v;
}

/* ------------------------------------------------------------------------ */
/* Header                                                                    */

/* Parses the header at the start of block[0..len): fixed fields, then the
 * optional blocks; fills h (with the header text) and returns 0, or -1. */
static int parse_header(const char *block, size_t len, const version_t *v,
                        hsm__tr31_t *h) {
  if (len < HDR_FIXED)
    return -1;
  for (size_t i = 1; i < 5; i++)
    if (!is_digit(block[i]))
      return -1;
  size_t total = (size_t)(block[1] - '0') * 1000 +
                 (size_t)(block[2] - '0') * 100 +
                 (size_t)(block[3] - '0') * 10 + (size_t)(block[4] - '0');
  if (total != len)
    return -1;
  for (size_t i = 5; i < 12; i++)
    if (!is_alnum(block[i]))
      return -1;
  if (!is_digit(block[12]) || !is_digit(block[13]))
    return -1;
  /* Key context (X9.143: 0 storage or exchange, 1 storage, 2 exchange),
   * then a reserved '0'. */
  if (block[14] < '0' || block[14] > '2' || block[15] != '0')
    return -1;
  size_t nopt = (size_t)(block[12] - '0') * 10 + (size_t)(block[13] - '0');
  size_t pos = HDR_FIXED;
  for (size_t k = 0; k < nopt; k++) {
    if (len - pos < 4 || !is_alnum(block[pos]) || !is_alnum(block[pos + 1]))
      return -1;
    long blen = hex_number(block + pos + 2, 2);
    size_t overhead = 4;
    if (blen == 0) {
      /* Extended length: 2 hex digits give the length of the length, at
       * most 4: a block of 9999 characters needs no more. */
      if (len - pos < 6)
        return -1;
      long lol = hex_number(block + pos + 4, 2);
      if (lol <= 0 || lol > 4 || len - pos - 6 < (size_t)lol)
        return -1;
      blen = hex_number(block + pos + 6, (size_t)lol);
      overhead = 6 + (size_t)lol;
    }
    if (blen < (long)overhead || (size_t)blen > len - pos)
      return -1;
    for (size_t i = pos + overhead; i < pos + (size_t)blen; i++)
      if (block[i] < 0x20 || block[i] > 0x7E)
        return -1;
    pos += (size_t)blen;
    if (pos > HDR_MAX)
      return -1;
  }
  /* Optional blocks end with a padding block that brings the header to a
   * whole number of cipher blocks; the 16 fixed characters already are. */
  if (pos % v->block)
    return -1;
  memset(h, 0, sizeof *h);
  h->version = block[0];
  memcpy(h->usage, block + 5, 2);
  h->algorithm = block[7];
  h->mode = block[8];
  memcpy(h->key_version, block + 9, 2);
  h->exportability = block[11];
  memcpy(h->header, block, pos);
  h->header_len = pos;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Keys and MACs                                                             */

/* The encryption and MAC keys (kbpklen bytes each) from the KBPK. */
static int derive_keys(const version_t *v, const uint8_t *kbpk, size_t kbpklen,
                       uint8_t kbek[32], uint8_t kbak[32]) {
  if (v->variant) {
    for (size_t i = 0; i < kbpklen; i++) {
      kbek[i] = kbpk[i] ^ 0x45;
      kbak[i] = kbpk[i] ^ 0x4D;
    }
    return 0;
  }
  /* Derivation input (8 bytes): counter, key usage (0000 encryption, 0001
   * MAC), separator 00, algorithm (0000 2TDEA, 0001 3TDEA, 0002 AES-128,
   * 0003 AES-192, 0004 AES-256), length in bits; one CMAC per block of
   * output, concatenated and cut to the KBPK's length. */
  unsigned alg =
      v->alg == HSM__TDES ? (kbpklen == 16 ? 0 : 1) : (unsigned)(kbpklen / 8);
  unsigned bits = (unsigned)kbpklen * 8;
  uint8_t *dst[2] = {kbek, kbak};
  uint8_t buf[48] = {0};
  int rc = 0;
  size_t calls = (kbpklen + v->block - 1) / v->block;
  for (unsigned usage = 0; usage < 2 && rc == 0; usage++) {
    for (size_t i = 0; i < calls && rc == 0; i++) {
      const uint8_t in[8] = {(uint8_t)(i + 1),     0,
                             (uint8_t)usage,       0,
                             (uint8_t)(alg >> 8),  (uint8_t)alg,
                             (uint8_t)(bits >> 8), (uint8_t)bits};
      size_t n = 0;
      rc = hsm__cmac(v->alg, kbpk, kbpklen, in, sizeof in, buf + i * v->block,
                     &n);
    }
    if (rc == 0)
      memcpy(dst[usage], buf, kbpklen);
  }
  hsm__cleanse(buf, sizeof buf);
  return rc;
}

/* The MAC over msg[0..len): CBC-MAC (A, C) or CMAC (B, D), full length. */
static int compute_mac(const version_t *v, const uint8_t *kbak, size_t kbpklen,
                       const uint8_t *msg, size_t len, uint8_t mac[MAC_MAX]) {
  if (!v->variant) {
    size_t n = 0;
    return hsm__cmac(v->alg, kbak, kbpklen, msg, len, mac, &n);
  }
  /* ISO 9797-1 MAC algorithm 1 without padding: the header and the key
   * data are whole numbers of 8-byte blocks. */
  static const uint8_t iv[8];
  uint8_t chain[8];
  hsm__cipher_t c;
  int rc = hsm__cipher_init(&c, HSM__TDES, kbak, kbpklen);
  if (rc)
    return rc;
  memcpy(chain, iv, 8);
  for (size_t off = 0; off < len && rc == 0; off += 8) {
    for (size_t i = 0; i < 8; i++)
      chain[i] ^= msg[off + i];
    rc = hsm__ecb(&c, 1, chain, chain, 8);
  }
  if (rc == 0)
    memcpy(mac, chain, 8);
  hsm__cipher_free(&c);
  hsm__cleanse(chain, sizeof chain);
  return rc;
}

static int cbc(const version_t *v, const uint8_t *kbek, size_t kbpklen,
               int encrypt, const uint8_t *iv, const uint8_t *in, uint8_t *out,
               size_t len) {
  hsm__cipher_t c;
  int rc = hsm__cipher_init(&c, v->alg, kbek, kbpklen);
  if (rc)
    return rc;
  rc = hsm__cbc(&c, encrypt, iv, in, out, len);
  hsm__cipher_free(&c);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Unwrap                                                                    */

/* The work of unwrap; returns 0 or -1 and leaves cleaning to the caller. */
static int unwrap(const uint8_t *kbpk, size_t kbpklen, const char *block,
                  size_t len, hsm__tr31_t *h, uint8_t payload[PAYLOAD_MAX],
                  size_t *keylen, uint8_t kbek[32], uint8_t kbak[32]) {
  if (len < 1 || len > BLOCK_LEN_MAX)
    return -1;
  const version_t *v = find_version(block[0]);
  if (!v || !kbpk_len_ok(v, kbpklen) || parse_header(block, len, v, h))
    return -1;
  size_t mac_hex = 2 * v->mac_len;
  if (len - h->header_len < mac_hex)
    return -1;
  size_t enc_hex = len - h->header_len - mac_hex;
  if (enc_hex == 0 || enc_hex % (2 * v->block) || enc_hex / 2 > PAYLOAD_MAX)
    return -1;
  size_t plen = enc_hex / 2;
  uint8_t enc[PAYLOAD_MAX], mac[MAC_MAX], want[MAC_MAX];
  if (hsm__unhex(block + h->header_len, 2 * plen, enc, 1) ||
      hsm__unhex(block + h->header_len + enc_hex, 2 * v->mac_len, mac, 1))
    return -1;
  if (derive_keys(v, kbpk, kbpklen, kbek, kbak))
    return -1;
  /* The MAC input: the header text, then the encrypted (A, C) or clear
   * (B, D) key data. */
  uint8_t msg[HDR_MAX + PAYLOAD_MAX];
  memcpy(msg, block, h->header_len);
  int ok;
  if (v->variant) {
    memcpy(msg + h->header_len, enc, plen);
    ok = compute_mac(v, kbak, kbpklen, msg, h->header_len + plen, want) == 0 &&
         CRYPTO_memcmp(want, mac, v->mac_len) == 0;
    ok = ok && cbc(v, kbek, kbpklen, 0, (const uint8_t *)block, enc, payload,
                   plen) == 0;
  } else {
    ok = cbc(v, kbek, kbpklen, 0, mac, enc, payload, plen) == 0;
    if (ok) {
      memcpy(msg + h->header_len, payload, plen);
      ok =
          compute_mac(v, kbak, kbpklen, msg, h->header_len + plen, want) == 0 &&
          CRYPTO_memcmp(want, mac, v->mac_len) == 0;
    }
  }
  hsm__cleanse(msg, sizeof msg);
  if (!ok)
    return -1;
  /* Authenticated from here on.  Key length in bits, a whole number of
   * bytes valid for the algorithm; the padding may be longer than one
   * block (X9.143 pads to the algorithm's longest key to hide the length)
   * but no longer than that. */
  size_t bits = (size_t)payload[0] << 8 | payload[1];
  size_t klen = bits / 8;
  size_t max_plen =
      (2 + key_len_max(h->algorithm) + v->block - 1) / v->block * v->block;
  if (bits % 8 || !key_len_ok(h->algorithm, klen) || 2 + klen > plen ||
      plen > max_plen)
    return -1;
  *keylen = klen;
  return 0;
}

int hsm__tr31_unwrap(const uint8_t *kbpk, size_t kbpklen, const char *block,
                     size_t len, hsm__tr31_t *hdr, uint8_t *key,
                     size_t *keylen) {
  if (!kbpk || !block || !hdr || !key || !keylen)
    return HSM_E_INVAL;
  hsm__tr31_t h;
  uint8_t payload[PAYLOAD_MAX], kbek[32], kbak[32];
  size_t klen = 0;
  int rc = unwrap(kbpk, kbpklen, block, len, &h, payload, &klen, kbek, kbak);
  if (rc == 0) {
    *hdr = h;
    memcpy(key, payload + 2, klen);
    *keylen = klen;
  } else {
    memset(hdr, 0, sizeof *hdr);
    hsm__cleanse(key, KEY_MAX);
    *keylen = 0;
  }
  hsm__cleanse(payload, sizeof payload);
  hsm__cleanse(kbek, sizeof kbek);
  hsm__cleanse(kbak, sizeof kbak);
  return rc == 0 ? 0 : HSM_E_KEY_BLOCK;
}

/* ------------------------------------------------------------------------ */
/* Wrap                                                                      */

static int header_fields_ok(const hsm__tr31_t *h) {
  return is_alnum(h->usage[0]) && is_alnum(h->usage[1]) &&
         h->usage[2] == '\0' && is_alnum(h->algorithm) && is_alnum(h->mode) &&
         is_alnum(h->key_version[0]) && is_alnum(h->key_version[1]) &&
         h->key_version[2] == '\0' && is_alnum(h->exportability);
}

int hsm__tr31_wrap(const uint8_t *kbpk, size_t kbpklen, const hsm__tr31_t *hdr,
                   const uint8_t *key, size_t keylen, char *out, size_t cap,
                   size_t *outlen) {
  if (!kbpk || !hdr || !key || !out || !outlen)
    return HSM_E_INVAL;
  const version_t *v = find_version(hdr->version);
  if (!v || !header_fields_ok(hdr))
    return HSM_E_INVAL;
  if (!kbpk_len_ok(v, kbpklen) || !key_len_ok(hdr->algorithm, keylen))
    return HSM_E_KEY_LENGTH;
  size_t plen = (2 + keylen + v->block - 1) / v->block * v->block;
  size_t total = HDR_FIXED + 2 * plen + 2 * v->mac_len;
  if (cap < total + 1)
    return HSM_E_INVAL;

  char *p = out;
  *p++ = hdr->version;
  p[0] = (char)('0' + total / 1000);
  p[1] = (char)('0' + total / 100 % 10);
  p[2] = (char)('0' + total / 10 % 10);
  p[3] = (char)('0' + total % 10);
  p += 4;
  memcpy(p, hdr->usage, 2);
  p += 2;
  *p++ = hdr->algorithm;
  *p++ = hdr->mode;
  memcpy(p, hdr->key_version, 2);
  p += 2;
  *p++ = hdr->exportability;
  memcpy(p, "0000", 4); /* no optional blocks; key context 0, reserved */

  uint8_t payload[PAYLOAD_MAX], enc[PAYLOAD_MAX], mac[MAC_MAX];
  uint8_t kbek[32], kbak[32], msg[HDR_FIXED + PAYLOAD_MAX];
  payload[0] = (uint8_t)(keylen * 8 >> 8);
  payload[1] = (uint8_t)(keylen * 8);
  memcpy(payload + 2, key, keylen);
  int rc = hsm__random(payload + 2 + keylen, plen - 2 - keylen);
  if (rc == 0)
    rc = derive_keys(v, kbpk, kbpklen, kbek, kbak);
  memcpy(msg, out, HDR_FIXED);
  if (rc == 0 && v->variant) {
    /* A, C: encrypt (IV: the header's first 8 bytes), then MAC the header
     * and the encrypted key data. */
    rc = cbc(v, kbek, kbpklen, 1, (const uint8_t *)out, payload, enc, plen);
    if (rc == 0) {
      hsm__tohex(enc, plen, out + HDR_FIXED);
      memcpy(msg + HDR_FIXED, enc, plen);
      rc = compute_mac(v, kbak, kbpklen, msg, HDR_FIXED + plen, mac);
    }
  } else if (rc == 0) {
    /* B, D: MAC the header and clear key data, then encrypt with the MAC
     * as IV. */
    memcpy(msg + HDR_FIXED, payload, plen);
    rc = compute_mac(v, kbak, kbpklen, msg, HDR_FIXED + plen, mac);
    if (rc == 0)
      rc = cbc(v, kbek, kbpklen, 1, mac, payload, enc, plen);
    if (rc == 0)
      hsm__tohex(enc, plen, out + HDR_FIXED);
  }
  if (rc == 0) {
    hsm__tohex(mac, v->mac_len, out + HDR_FIXED + 2 * plen);
    out[total] = '\0';
    *outlen = total;
  } else {
    out[0] = '\0';
    *outlen = 0;
  }
  hsm__cleanse(payload, sizeof payload);
  hsm__cleanse(msg, sizeof msg);
  hsm__cleanse(kbek, sizeof kbek);
  hsm__cleanse(kbak, sizeof kbak);
  return rc;
}
