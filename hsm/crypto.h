/*
 * crypto.h — the software cryptography under the HSM adapter: block
 * ciphers, key check values, PIN blocks, PIN and card verification values,
 * MACs, DUKPT and TR-31 key blocks.  Internal to libhsm (prefix hsm__):
 * the switch never calls these; backends do.
 *
 * Conventions:
 *   - functions return 0 or a negative HSM_E_* code (hsm.h);
 *   - keys are raw bytes; a TDES key is 8 (single DES, as K|K|K), 16
 *     (2-key) or 24 (3-key) bytes, an AES key 16, 24 or 32 bytes;
 *   - digits (PIN, PAN) are ASCII strings with an explicit length;
 *   - every buffer that held a clear key or PIN is wiped with
 *     hsm__cleanse before it goes out of scope.
 */
#ifndef HSM_CRYPTO_H
#define HSM_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

/* ------------------------------------------------------------------------ */
/* Block ciphers (symmetric.c)                                               */

/* Key algorithms as the crypto layer names them; equal to hsm_alg_t's
 * values so the two convert by cast. */
enum { HSM__TDES = 1, HSM__AES = 2, HSM__HMAC = 3 };

/* A key schedule kept ready for repeated use (one per key in a key store):
 * ECB contexts for both directions, initialised once. */
typedef struct hsm__cipher_s {
  EVP_CIPHER_CTX *enc;
  EVP_CIPHER_CTX *dec;
  int alg;      /* HSM__TDES or HSM__AES */
  size_t block; /* 8 or 16 */
  size_t keylen;
  uint8_t key[32]; /* kept for CBC and CMAC; wiped by hsm__cipher_free */
} hsm__cipher_t;

int hsm__cipher_init(hsm__cipher_t *c, int alg, const uint8_t *key,
                     size_t keylen);
void hsm__cipher_free(hsm__cipher_t *c);
/* ECB over len bytes (a multiple of the block size). */
int hsm__ecb(hsm__cipher_t *c, int encrypt, const uint8_t *in, uint8_t *out,
             size_t len);
/* CBC over len bytes (a multiple of the block size), no padding. */
int hsm__cbc(hsm__cipher_t *c, int encrypt, const uint8_t *iv,
             const uint8_t *in, uint8_t *out, size_t len);
/* One-shot ECB with a raw key, for key derivation steps. */
int hsm__ecb_raw(int alg, const uint8_t *key, size_t keylen, int encrypt,
                 const uint8_t *in, uint8_t *out, size_t len);
/* CMAC (NIST SP 800-38B) with TDES or AES; *outlen = block size. */
int hsm__cmac(int alg, const uint8_t *key, size_t keylen, const uint8_t *msg,
              size_t len, uint8_t *out, size_t *outlen);
/* Key check value as payment HSMs compute it: TDES encrypts 8 zero bytes,
 * AES takes the CMAC of 16 zero bytes; an HMAC key (no cipher) takes
 * HMAC-SHA-256 of 16 zero bytes.  The first n (<= 8) bytes. */
int hsm__kcv(int alg, const uint8_t *key, size_t keylen, uint8_t *out,
             size_t n);
/* Sets odd parity on every byte of a DES key. */
void hsm__des_set_parity(uint8_t *key, size_t len);
/* 1 if every byte has odd parity. */
int hsm__des_parity_ok(const uint8_t *key, size_t len);
void hsm__cleanse(void *p, size_t n);
/* Cryptographically strong random bytes. */
int hsm__random(uint8_t *out, size_t n);

/* ------------------------------------------------------------------------ */
/* Text (text.c): digits and hex, shared by the crypto layer and backends   */

/* 1 if all n characters are decimal digits.  Branch-free: PINs pass
 * through here, and how long a check takes must not depend on them. */
int hsm__all_digits(const char *s, size_t n);
/* Value of a hex digit, or -1.  upper_only refuses a-f: payShield and
 * TR-31 are upper-case protocols, and accepting more would let two
 * spellings of one message through. */
int hsm__hexval(int c, int upper_only);
/* n hex characters (n even) to n / 2 bytes; -1 on an odd n or a bad
 * character (out is then partly written: callers wipe it). */
int hsm__unhex(const char *s, size_t n, uint8_t *out, int upper_only);
/* n bytes to 2n upper-case hex characters (no NUL). */
void hsm__tohex(const uint8_t *p, size_t n, char *out);

/* ------------------------------------------------------------------------ */
/* PIN blocks (pinblock.c), ISO 9564-1                                       */

/* Formats 0, 1 and 3 are 8-byte clear blocks (to be enciphered with TDES);
 * format 4 is enciphered with AES by hsm__iso4_encipher. fill: random
 * nibbles/bytes the format needs (NULL: drawn from hsm__random); tests
 * pass the vectors' fill to reproduce known blocks. */
int hsm__pinblock_encode(int format, const char *pin, size_t pinlen,
                         const char *pan, size_t panlen, const uint8_t *fill,
                         uint8_t out[8]);
/* Recovers the PIN; refuses blocks whose control field, length, digits or
 * fill break the format's rules (HSM_E_BAD_PIN_BLOCK). pin must hold 13. */
int hsm__pinblock_decode(int format, const uint8_t block[8], const char *pan,
                         size_t panlen, char *pin, size_t *pinlen);
/* ISO 9564-1 format 4: E(K, E(K, PIN field) XOR PAN field). */
int hsm__iso4_encipher(hsm__cipher_t *aes, const char *pin, size_t pinlen,
                       const char *pan, size_t panlen, const uint8_t *fill,
                       uint8_t out[16]);
int hsm__iso4_decipher(hsm__cipher_t *aes, const uint8_t in[16],
                       const char *pan, size_t panlen, char *pin,
                       size_t *pinlen);

/* ------------------------------------------------------------------------ */
/* PIN and card verification values (pinverify.c)                            */

/* IBM 3624 PIN offset.  validation data: 16 hex digits (the caller builds
 * it, e.g. from PAN digits and pad); dectab: 16 decimal digits. */
int hsm__ibm3624_offset(hsm__cipher_t *pvk, const char *validation_data,
                        const char *dectab, const char *pin, size_t pinlen,
                        char *offset /* pinlen + 1 */);
int hsm__ibm3624_verify(hsm__cipher_t *pvk, const char *validation_data,
                        const char *dectab, const char *pin, size_t pinlen,
                        const char *offset, size_t offlen);
/* Visa PVV: 4 digits from TSP = 11 rightmost PAN digits (excluding check
 * digit), PVKI, first 4 PIN digits.  pvk is a 2-key TDES key (PVK A|B). */
int hsm__visa_pvv(hsm__cipher_t *pvk, const char *pan, size_t panlen, int pvki,
                  const char *pin, size_t pinlen, char pvv[5]);
/* Visa CVV / CVV2 / iCVV (service code 000 / 999 for the latter two). */
int hsm__visa_cvv(hsm__cipher_t *cvk, const char *pan, size_t panlen,
                  const char expiry[4], const char service[3], char cvv[4]);

/* ------------------------------------------------------------------------ */
/* MACs (mac.c)                                                              */

/* ISO 9797-1 MAC algorithm 1 (CBC-MAC) or 3 (retail MAC) with padding
 * method 1 (zeros) or 2 (0x80 then zeros), DES-based; key 8, 16 or 24
 * bytes; out is 8 bytes. */
int hsm__mac_iso9797(int algorithm, int padding, const uint8_t *key,
                     size_t keylen, const uint8_t *msg, size_t len,
                     uint8_t out[8]);

/* ------------------------------------------------------------------------ */
/* DUKPT (dukpt.c)                                                           */

enum {
  HSM__DUKPT_PIN = 1,
  HSM__DUKPT_MAC_REQUEST,
  HSM__DUKPT_MAC_RESPONSE,
  HSM__DUKPT_DATA_REQUEST,
  HSM__DUKPT_DATA_RESPONSE,
  HSM__DUKPT_TRANSACTION /* the raw transaction key */
};

/* ANSI X9.24-1 TDES DUKPT: initial key from BDK and KSN (10 bytes). */
int hsm__dukpt_tdes_ipek(const uint8_t bdk[16], const uint8_t ksn[10],
                         uint8_t ipek[16]);
/* The key of the given usage for the KSN's transaction counter. */
int hsm__dukpt_tdes_key(const uint8_t bdk[16], const uint8_t ksn[10], int usage,
                        uint8_t out[16]);
/* ANSI X9.24-3 AES DUKPT: KSN is 12 bytes; bdk 16, 24 or 32 bytes; the
 * derived key is outlen bytes (16 for AES-128 working keys). */
int hsm__dukpt_aes_initial_key(const uint8_t *bdk, size_t bdklen,
                               const uint8_t ksn[12], uint8_t *out,
                               size_t outlen);
int hsm__dukpt_aes_key(const uint8_t *bdk, size_t bdklen, const uint8_t ksn[12],
                       int usage, uint8_t *out, size_t outlen);

/* ------------------------------------------------------------------------ */
/* TR-31 / ANSI X9.143 key blocks (tr31.c)                                   */

typedef struct hsm__tr31_s {
  char version;        /* 'A', 'B', 'C' or 'D' */
  char usage[3];       /* "P0", "K0", "M3", ... NUL-terminated */
  char algorithm;      /* 'T' TDES, 'A' AES, ... */
  char mode;           /* 'E', 'D', 'B', 'C', 'G', 'N', ... */
  char key_version[3]; /* "00" */
  char exportability;  /* 'E', 'N', 'S' */
  char header[256];    /* the whole header as on the wire, NUL-terminated */
  size_t header_len;
} hsm__tr31_t;

/* Unwraps a key block with the key block protection key; checks the MAC
 * before anything else (HSM_E_KEY_BLOCK on any failure, never a partial
 * key). key receives up to 32 bytes. */
int hsm__tr31_unwrap(const uint8_t *kbpk, size_t kbpklen, const char *block,
                     size_t len, hsm__tr31_t *hdr, uint8_t *key,
                     size_t *keylen);
/* Wraps key under kbpk with hdr's version, usage, algorithm, mode,
 * key version and exportability (optional blocks: none); NUL-terminated. */
int hsm__tr31_wrap(const uint8_t *kbpk, size_t kbpklen, const hsm__tr31_t *hdr,
                   const uint8_t *key, size_t keylen, char *out, size_t cap,
                   size_t *outlen);

#endif
