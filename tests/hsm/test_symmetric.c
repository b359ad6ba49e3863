/*
 * test_symmetric.c — block ciphers, CMAC, key check values, parity, random
 * and cleanse (hsm/symmetric.c): every block of cmac-sp800-38b.txt; every
 * key check value stated in the vector files (TR-31, DUKPT, PIN block and
 * translation files); the AES CMACs and the TDES / AES CBC encryptions of
 * the DUKPT files under the keys they state; the enciphered PIN blocks as
 * ECB known answers; FIPS 81 and textbook single-DES answers; and refusal
 * of bad key lengths, lengths that are not a block multiple, and misuse.
 */
#include "crypto.h"
#include "hsm.h"
#include "testutil.h"
#include "vectors.h"

#include <stdio.h>
#include <string.h>

#define TV_CHECK(b, cond)                                                      \
  do {                                                                         \
    int ok_ = (cond) ? 1 : 0;                                                  \
    CU_assertImplementation(ok_, __LINE__, #cond, __FILE__, "", CU_FALSE);     \
    if (!ok_)                                                                  \
      fprintf(stderr, "\n    in vector %s\n", tv_get((b), "name"));            \
  } while (0)

static void load(tv_file_t *f, const char *name) {
  CU_ASSERT_EQUAL_FATAL(tv_load(f, name), 0);
  CU_ASSERT_FATAL(f->nblocks > 0);
}

/* ------------------------------------------------------------------------ */
/* CMAC                                                                      */

static void test_cmac_sp800_38b_vectors(void) {
  tv_file_t f;
  load(&f, "vectors/cmac-sp800-38b.txt");
  size_t aes = 0, tdes = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    uint8_t key[32], msg[64], want[16], out[16];
    const char *alg = tv_get(b, "algorithm");
    const char *m = tv_get(b, "message");
    size_t klen = tv_hex(b, "key", key, sizeof key);
    size_t wlen = tv_hex(b, "expected_mac", want, sizeof want);
    size_t mlen = m && strcmp(m, "(empty)") == 0
                      ? 0
                      : tv_hex(b, "message", msg, sizeof msg);
    TV_CHECK(b, alg && klen != (size_t)-1 && wlen != (size_t)-1 &&
                    mlen != (size_t)-1);
    if (!alg || klen == (size_t)-1 || wlen == (size_t)-1 || mlen == (size_t)-1)
      continue;
    int a = strncmp(alg, "AES", 3) == 0 ? HSM__AES : HSM__TDES;
    size_t outlen = 0;
    TV_CHECK(b, wlen == (a == HSM__AES ? 16u : 8u));
    TV_CHECK(b, hsm__cmac(a, key, klen, msg, mlen, out, &outlen) == 0);
    TV_CHECK(b, outlen == wlen && memcmp(out, want, wlen) == 0);
    if (a == HSM__AES)
      aes++;
    else
      tdes++;
  }
  CU_ASSERT_EQUAL(aes, 12);
  CU_ASSERT_EQUAL(tdes, 8);
  tv_free(&f);
}

/* The AES DUKPT file's request / response CMACs under the MAC generation /
 * verification keys it states. */
static void test_cmac_aes_dukpt_file_macs_under_stated_keys(void) {
  static const struct {
    const char *key, *mac;
  } pairs[] = {{"expected_mac_generation_key", "expected_cmac_request"},
               {"expected_mac_verification_key", "expected_cmac_response"}};
  tv_file_t f;
  size_t done = 0;
  load(&f, "vectors/dukpt-aes-x9.24-3.txt");
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    const char *data = tv_get(b, "mac_data_ascii");
    for (size_t p = 0; p < 2; p++) {
      uint8_t key[16], want[16], out[16];
      size_t outlen = 0;
      if (tv_hex(b, pairs[p].mac, want, 16) != 16)
        continue;
      TV_CHECK(b, data && tv_hex(b, pairs[p].key, key, 16) == 16);
      if (!data)
        continue;
      TV_CHECK(b, hsm__cmac(HSM__AES, key, 16, (const uint8_t *)data,
                            strlen(data), out, &outlen) == 0);
      TV_CHECK(b, outlen == 16 && memcmp(out, want, 16) == 0);
      done++;
    }
  }
  CU_ASSERT_EQUAL(done, 16);
  tv_free(&f);
}

static void test_cmac_refuses_bad_arguments(void) {
  uint8_t key[32] = {0}, out[16];
  size_t outlen = 0;
  static const size_t tdes_bad[] = {0, 7, 9, 15, 17, 23, 25, 32};
  static const size_t aes_bad[] = {0, 8, 15, 17, 23, 25, 31, 33};
  for (size_t i = 0; i < sizeof tdes_bad / sizeof tdes_bad[0]; i++)
    CU_ASSERT_EQUAL(
        hsm__cmac(HSM__TDES, key, tdes_bad[i], key, 8, out, &outlen),
        HSM_E_KEY_LENGTH);
  for (size_t i = 0; i < sizeof aes_bad / sizeof aes_bad[0]; i++)
    CU_ASSERT_EQUAL(hsm__cmac(HSM__AES, key, aes_bad[i], key, 8, out, &outlen),
                    HSM_E_KEY_LENGTH);
  CU_ASSERT_EQUAL(hsm__cmac(0, key, 16, key, 8, out, &outlen), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__cmac(HSM__AES, NULL, 16, key, 8, out, &outlen),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__cmac(HSM__AES, key, 16, NULL, 8, out, &outlen),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__cmac(HSM__AES, key, 16, key, 8, NULL, &outlen),
                  HSM_E_INVAL);
  /* The empty message may be passed as NULL; outlen may be omitted. */
  CU_ASSERT_EQUAL(hsm__cmac(HSM__AES, key, 16, NULL, 0, out, NULL), 0);
}

/* ------------------------------------------------------------------------ */
/* Key check values                                                          */

/* Every (key, check value) pair the vector files state.  A "*kcv*" field
 * this table does not know fails the test, so no check value is silently
 * left out. */
static const struct {
  const char *key, *kcv;
  int alg; /* 0: from kcv_method */
} kcv_fields[] = {
    {"expected_key", "expected_kcv", 0},
    {"bdk", "bdk_kcv", HSM__TDES},
    {"expected_ipek", "expected_ipek_kcv", HSM__TDES},
    {"bdk", "bdk_kcv_aes_cmac", HSM__AES},
    {"key", "key_kcv", HSM__TDES},
    {"key", "key_kcv_aes_cmac", HSM__AES},
    {"source_key", "source_key_kcv", HSM__TDES},
    {"destination_key", "destination_key_kcv", HSM__TDES},
};
#define NKCV (sizeof kcv_fields / sizeof kcv_fields[0])

static size_t check_kcvs(const char *file) {
  tv_file_t f;
  size_t done = 0;
  load(&f, file);
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    for (size_t j = 0; j < b->npairs; j++) {
      const char *name = b->key[j];
      if (!strstr(name, "kcv") || strcmp(name, "kcv_method") == 0)
        continue;
      size_t t = 0;
      while (t < NKCV && strcmp(kcv_fields[t].kcv, name) != 0)
        t++;
      TV_CHECK(b, t < NKCV);
      if (t == NKCV)
        continue;
      uint8_t key[32], want[8], out[8];
      size_t klen = tv_hex(b, kcv_fields[t].key, key, sizeof key);
      size_t n = tv_hex(b, name, want, sizeof want);
      int alg = kcv_fields[t].alg;
      if (!alg) {
        const char *method = tv_get(b, "kcv_method");
        TV_CHECK(b, method != NULL);
        alg = method && strncmp(method, "AES", 3) == 0 ? HSM__AES : HSM__TDES;
      }
      TV_CHECK(b, klen != (size_t)-1 && n >= 2 && n <= 8);
      if (klen == (size_t)-1 || n < 2 || n > 8)
        continue;
      TV_CHECK(b, hsm__kcv(alg, key, klen, out, n) == 0);
      TV_CHECK(b, memcmp(out, want, n) == 0);
      done++;
    }
  }
  tv_free(&f);
  return done;
}

static void test_kcv_of_every_stated_check_value(void) {
  CU_ASSERT_EQUAL(check_kcvs("vectors/tr31-keyblock.txt"), 11);
  CU_ASSERT_EQUAL(check_kcvs("vectors/dukpt-tdes-x9.24-1.txt"), 2);
  CU_ASSERT_EQUAL(check_kcvs("vectors/dukpt-aes-x9.24-3.txt"), 1);
  CU_ASSERT_EQUAL(check_kcvs("vectors/iso9564-pinblock-format0.txt"), 2);
  CU_ASSERT_EQUAL(check_kcvs("vectors/iso9564-pinblock-format4-aes.txt"), 1);
  CU_ASSERT_EQUAL(check_kcvs("vectors/pin-translation-composite.txt"), 2);
}

/* TDES: E(K, 0^8); AES: CMAC(K, 0^16) — not AES-ECB(K, 0), the PKCS#11
 * check value. */
static void test_kcv_definition_and_truncation(void) {
  static const uint8_t zero[16];
  uint8_t key[16], full[16], out[8];
  size_t outlen;
  CU_ASSERT_FATAL(tu_unhex("0123456789ABCDEFFEDCBA9876543210", key, 16) == 16);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, key, 16, 1, zero, full, 8), 0);
  CU_ASSERT_EQUAL(hsm__kcv(HSM__TDES, key, 16, out, 8), 0);
  CU_ASSERT(memcmp(out, full, 8) == 0);
  CU_ASSERT_EQUAL(hsm__cmac(HSM__AES, key, 16, zero, 16, full, &outlen), 0);
  CU_ASSERT_EQUAL(hsm__kcv(HSM__AES, key, 16, out, 8), 0);
  CU_ASSERT(memcmp(out, full, 8) == 0);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__AES, key, 16, 1, zero, full, 16), 0);
  CU_ASSERT(memcmp(out, full, 3) != 0);
  memset(out, 0xEE, sizeof out);
  CU_ASSERT_EQUAL(hsm__kcv(HSM__TDES, key, 16, out, 3), 0);
  CU_ASSERT_EQUAL(out[3], 0xEE);
  CU_ASSERT_EQUAL(hsm__kcv(HSM__TDES, key, 16, out, 9), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__kcv(HSM__TDES, key, 15, out, 3), HSM_E_KEY_LENGTH);
  CU_ASSERT_EQUAL(hsm__kcv(HSM__AES, key, 15, out, 3), HSM_E_KEY_LENGTH);
}

/* ------------------------------------------------------------------------ */
/* ECB and CBC known answers                                                 */

/* Single DES known answers: J. Orlin Grabbe, "The DES Algorithm
 * Illustrated" (K 133457799BBCDFF1), and FIPS PUB 81 Appendix B, tables B1
 * (ECB) and B2 (CBC, IV 1234567890ABCDEF) with K 0123456789ABCDEF over
 * "Now is the time for all ".  An 8-byte key must equal K|K and K|K|K. */
static void test_single_des_known_answers_and_equivalent_keys(void) {
  uint8_t k[24], p[24], c[24], want[24], iv[8];
  CU_ASSERT_FATAL(tu_unhex("133457799BBCDFF1", k, 8) == 8);
  CU_ASSERT_FATAL(tu_unhex("0123456789ABCDEF", p, 8) == 8);
  CU_ASSERT_FATAL(tu_unhex("85E813540F0AB405", want, 8) == 8);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, k, 8, 1, p, c, 8), 0);
  CU_ASSERT(memcmp(c, want, 8) == 0);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, k, 8, 0, want, c, 8), 0);
  CU_ASSERT(memcmp(c, p, 8) == 0);

  hsm__cipher_t d;
  CU_ASSERT_FATAL(tu_unhex("0123456789ABCDEF", k, 8) == 8);
  memcpy(p, "Now is the time for all ", 24);
  CU_ASSERT_FATAL(tu_unhex("3FA40E8A984D4815 6A271787AB8883F9 "
                           "893D51EC4B563B53",
                           want, 24) == 24);
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&d, HSM__TDES, k, 8), 0);
  CU_ASSERT_EQUAL(d.block, 8);
  CU_ASSERT_EQUAL(hsm__ecb(&d, 1, p, c, 24), 0);
  CU_ASSERT(memcmp(c, want, 24) == 0);
  CU_ASSERT_FATAL(tu_unhex("1234567890ABCDEF", iv, 8) == 8);
  CU_ASSERT_FATAL(tu_unhex("E5C7CDDE872BF27C 43E934008C389C0F "
                           "683788499A7C05F6",
                           want, 24) == 24);
  CU_ASSERT_EQUAL(hsm__cbc(&d, 1, iv, p, c, 24), 0);
  CU_ASSERT(memcmp(c, want, 24) == 0);
  CU_ASSERT_EQUAL(hsm__cbc(&d, 0, iv, want, c, 24), 0);
  CU_ASSERT(memcmp(c, p, 24) == 0);
  hsm__cipher_free(&d);

  memcpy(k + 8, k, 8);
  memcpy(k + 16, k, 8);
  CU_ASSERT_FATAL(tu_unhex("3FA40E8A984D4815", want, 8) == 8);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, k, 16, 1, p, c, 8), 0);
  CU_ASSERT(memcmp(c, want, 8) == 0);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, k, 24, 1, p, c, 8), 0);
  CU_ASSERT(memcmp(c, want, 8) == 0);
}

/* The enciphered PIN blocks of the PIN block files are TDES (and AES)
 * ECB known answers: every block with a key and a clear and enciphered
 * block, both directions, through a kept hsm__cipher_t. */
static size_t ecb_pinblock_answers(const char *file) {
  tv_file_t f;
  size_t done = 0;
  load(&f, file);
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    uint8_t key[32], clear[16], enc[16], out[16];
    size_t klen = tv_hex(b, "key", key, sizeof key);
    if (klen == (size_t)-1)
      continue;
    int alg = HSM__TDES;
    size_t n = tv_hex(b, "expected_clear_pin_block", clear, 8);
    size_t e = tv_hex(b, "expected_encrypted_pin_block", enc, 16);
    if (n == (size_t)-1) {
      /* Format 4: intermediate A = AES(K, plain PIN field). */
      n = tv_hex(b, "plain_pin_field", clear, 16);
      e = tv_hex(b, "intermediate_A", enc, 16);
      alg = HSM__AES;
      if (e == (size_t)-1)
        continue;
    }
    TV_CHECK(b, n == e && (n == 8 || n == 16));
    if (n != e || (n != 8 && n != 16))
      continue;
    hsm__cipher_t c;
    TV_CHECK(b, hsm__cipher_init(&c, alg, key, klen) == 0);
    TV_CHECK(b, hsm__ecb(&c, 1, clear, out, n) == 0);
    TV_CHECK(b, memcmp(out, enc, n) == 0);
    TV_CHECK(b, hsm__ecb(&c, 0, enc, out, n) == 0);
    TV_CHECK(b, memcmp(out, clear, n) == 0);
    hsm__cipher_free(&c);
    done++;
  }
  tv_free(&f);
  return done;
}

static void test_ecb_pin_block_encipherments(void) {
  CU_ASSERT_EQUAL(ecb_pinblock_answers("vectors/iso9564-pinblock-format0.txt"),
                  3);
  CU_ASSERT_EQUAL(ecb_pinblock_answers("vectors/iso9564-pinblock-format1.txt"),
                  1);
  CU_ASSERT_EQUAL(ecb_pinblock_answers("vectors/iso9564-pinblock-format3.txt"),
                  1);
  CU_ASSERT_EQUAL(
      ecb_pinblock_answers("vectors/iso9564-pinblock-format4-aes.txt"), 1);
}

/* The DUKPT files' data encryptions: the ASCII MAC data, zero-padded to the
 * block size, CBC with a zero IV under the stated data keys (TDES: request
 * and response keys; AES: encrypt key for the request, decrypt key for the
 * response), checked both ways. */
static size_t cbc_answers(const char *file, int alg, const char *const *pairs) {
  tv_file_t f;
  size_t done = 0;
  static const uint8_t iv[16];
  load(&f, file);
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    for (size_t p = 0; p < 4; p += 2) {
      uint8_t key[32], want[64], msg[64] = {0}, out[64];
      size_t n = tv_hex(b, pairs[p + 1], want, sizeof want);
      if (n == (size_t)-1)
        continue;
      const char *data = tv_get(b, "mac_data_ascii");
      size_t klen = tv_hex(b, pairs[p], key, sizeof key);
      TV_CHECK(b, data && klen != (size_t)-1 && strlen(data) <= n);
      if (!data || klen == (size_t)-1 || strlen(data) > n)
        continue;
      memcpy(msg, data, strlen(data));
      hsm__cipher_t c;
      TV_CHECK(b, hsm__cipher_init(&c, alg, key, klen) == 0);
      TV_CHECK(b, hsm__cbc(&c, 1, iv, msg, out, n) == 0);
      TV_CHECK(b, memcmp(out, want, n) == 0);
      TV_CHECK(b, hsm__cbc(&c, 0, iv, want, out, n) == 0);
      TV_CHECK(b, memcmp(out, msg, n) == 0);
      hsm__cipher_free(&c);
      done++;
    }
  }
  tv_free(&f);
  return done;
}

static void test_cbc_dukpt_file_data_encryptions(void) {
  static const char *const tdes[] = {
      "expected_data_request_key",
      "expected_data_request_tdes_cbc_iv0_zero_pad",
      "expected_data_response_key",
      "expected_data_response_tdes_cbc_iv0_zero_pad"};
  static const char *const aes[] = {
      "expected_data_encrypt_key", "expected_data_request_aes_cbc_iv0_zero_pad",
      "expected_data_decrypt_key",
      "expected_data_response_aes_cbc_iv0_zero_pad"};
  CU_ASSERT_EQUAL(
      cbc_answers("vectors/dukpt-tdes-x9.24-1.txt", HSM__TDES, tdes), 10);
  CU_ASSERT_EQUAL(cbc_answers("vectors/dukpt-aes-x9.24-3.txt", HSM__AES, aes),
                  16);
}

/* CBC over one block is ECB of IV XOR block; ECB works in place. */
static void test_cbc_first_block_is_ecb_of_iv_xor_block(void) {
  uint8_t key[32], iv[16], p[32], c[32], e[16];
  for (size_t i = 0; i < 32; i++) {
    key[i] = (uint8_t)(i * 5 + 1);
    p[i] = (uint8_t)(i * 3 + 7);
  }
  for (size_t i = 0; i < 16; i++)
    iv[i] = (uint8_t)(0xA0 + i);
  static const struct {
    int alg;
    size_t klen;
  } ks[] = {{HSM__TDES, 16},
            {HSM__TDES, 24},
            {HSM__AES, 16},
            {HSM__AES, 24},
            {HSM__AES, 32}};
  for (size_t k = 0; k < sizeof ks / sizeof ks[0]; k++) {
    hsm__cipher_t ci;
    CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&ci, ks[k].alg, key, ks[k].klen), 0);
    size_t bs = ci.block;
    CU_ASSERT_EQUAL(bs, ks[k].alg == HSM__AES ? 16u : 8u);
    CU_ASSERT_EQUAL(hsm__cbc(&ci, 1, iv, p, c, 2 * bs), 0);
    for (size_t i = 0; i < bs; i++)
      e[i] = p[i] ^ iv[i];
    CU_ASSERT_EQUAL(hsm__ecb(&ci, 1, e, e, bs), 0);
    CU_ASSERT(memcmp(e, c, bs) == 0);
    CU_ASSERT_EQUAL(hsm__ecb(&ci, 0, e, e, bs), 0);
    for (size_t i = 0; i < bs; i++)
      e[i] ^= iv[i];
    CU_ASSERT(memcmp(e, p, bs) == 0);
    hsm__cipher_free(&ci);
  }
}

/* ------------------------------------------------------------------------ */
/* Refusals and lifecycle                                                    */

static void test_cipher_init_refuses_bad_key_lengths_and_algorithms(void) {
  uint8_t key[33] = {0};
  hsm__cipher_t c;
  for (size_t n = 0; n <= 33; n++) {
    int tdes_ok = n == 8 || n == 16 || n == 24;
    int aes_ok = n == 16 || n == 24 || n == 32;
    int rc = hsm__cipher_init(&c, HSM__TDES, key, n);
    CU_ASSERT_EQUAL(rc, tdes_ok ? 0 : HSM_E_KEY_LENGTH);
    hsm__cipher_free(&c);
    rc = hsm__cipher_init(&c, HSM__AES, key, n);
    CU_ASSERT_EQUAL(rc, aes_ok ? 0 : HSM_E_KEY_LENGTH);
    hsm__cipher_free(&c);
  }
  CU_ASSERT_EQUAL(hsm__cipher_init(&c, 0, key, 16), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__cipher_init(&c, HSM__HMAC, key, 16), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__cipher_init(&c, HSM__AES, NULL, 16), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__cipher_init(NULL, HSM__AES, key, 16), HSM_E_INVAL);
  /* A failed init leaves a cipher that every operation refuses. */
  uint8_t blk[16] = {0};
  CU_ASSERT_EQUAL(hsm__cipher_init(&c, HSM__AES, key, 15), HSM_E_KEY_LENGTH);
  CU_ASSERT_EQUAL(hsm__ecb(&c, 1, blk, blk, 16), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__cbc(&c, 1, blk, blk, blk, 16), HSM_E_INVAL);
  hsm__cipher_free(&c);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, key, 9, 1, blk, blk, 8),
                  HSM_E_KEY_LENGTH);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__AES, key, 20, 1, blk, blk, 16),
                  HSM_E_KEY_LENGTH);
}

static void test_ecb_cbc_refuse_length_not_a_block_multiple(void) {
  uint8_t key[16] = {1, 2, 3}, in[40] = {0}, out[40], iv[16] = {0};
  hsm__cipher_t t, a;
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&t, HSM__TDES, key, 16), 0);
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&a, HSM__AES, key, 16), 0);
  static const size_t bad_t[] = {1, 7, 9, 15, 17, 39};
  static const size_t bad_a[] = {1, 8, 15, 17, 24, 39};
  for (size_t i = 0; i < sizeof bad_t / sizeof bad_t[0]; i++) {
    CU_ASSERT_EQUAL(hsm__ecb(&t, 1, in, out, bad_t[i]), HSM_E_INVAL);
    CU_ASSERT_EQUAL(hsm__cbc(&t, 0, iv, in, out, bad_t[i]), HSM_E_INVAL);
    CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, key, 16, 1, in, out, bad_t[i]),
                    HSM_E_INVAL);
  }
  for (size_t i = 0; i < sizeof bad_a / sizeof bad_a[0]; i++) {
    CU_ASSERT_EQUAL(hsm__ecb(&a, 0, in, out, bad_a[i]), HSM_E_INVAL);
    CU_ASSERT_EQUAL(hsm__cbc(&a, 1, iv, in, out, bad_a[i]), HSM_E_INVAL);
  }
  CU_ASSERT_EQUAL(hsm__ecb(&t, 1, in, out, 40), 0);
  CU_ASSERT_EQUAL(hsm__ecb(&a, 1, in, out, 32), 0);
  CU_ASSERT_EQUAL(hsm__ecb(NULL, 1, in, out, 16), HSM_E_INVAL);
  hsm__cipher_free(&t);
  hsm__cipher_free(&a);
}

/* Free wipes the key copy and may be called twice; a freed cipher is
 * refused. */
static void test_cipher_free_wipes_key_and_is_idempotent(void) {
  uint8_t key[24], blk[8] = {0};
  memset(key, 0x5C, sizeof key);
  hsm__cipher_t c;
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&c, HSM__TDES, key, 24), 0);
  CU_ASSERT(memcmp(c.key, key, 24) == 0);
  hsm__cipher_free(&c);
  for (size_t i = 0; i < sizeof c.key; i++)
    CU_ASSERT_EQUAL(c.key[i], 0);
  CU_ASSERT_EQUAL(c.keylen, 0);
  CU_ASSERT_PTR_NULL(c.enc);
  CU_ASSERT_EQUAL(hsm__ecb(&c, 1, blk, blk, 8), HSM_E_INVAL);
  hsm__cipher_free(&c);
  hsm__cipher_free(NULL);
}

/* ------------------------------------------------------------------------ */
/* Parity, random, cleanse                                                   */

static void test_des_parity_set_and_check(void) {
  for (int v = 0; v < 256; v++) {
    uint8_t b = (uint8_t)v, orig = b;
    hsm__des_set_parity(&b, 1);
    CU_ASSERT_EQUAL(b & 0xFE, orig & 0xFE);
    CU_ASSERT_EQUAL(__builtin_popcount(b) % 2, 1);
    CU_ASSERT_EQUAL(hsm__des_parity_ok(&b, 1), 1);
    CU_ASSERT_EQUAL(hsm__des_parity_ok(&orig, 1), __builtin_popcount(orig) % 2);
    uint8_t again = b;
    hsm__des_set_parity(&again, 1);
    CU_ASSERT_EQUAL(again, b);
  }
  uint8_t k[16];
  CU_ASSERT_FATAL(tu_unhex("0123456789ABCDEFFEDCBA9876543210", k, 16) == 16);
  CU_ASSERT_EQUAL(hsm__des_parity_ok(k, 16), 1);
  k[15] ^= 0x01;
  CU_ASSERT_EQUAL(hsm__des_parity_ok(k, 16), 0);
  CU_ASSERT_EQUAL(hsm__des_parity_ok(k, 15), 1);
  hsm__des_set_parity(k, 16);
  CU_ASSERT_EQUAL(hsm__des_parity_ok(k, 16), 1);
  CU_ASSERT_EQUAL(k[15], 0x10);
  /* The parity bit does not take part in DES: the KCV is unchanged. */
  uint8_t even[8], odd[8], kcv1[3], kcv2[3];
  CU_ASSERT_FATAL(tu_unhex("0022446688AACCEE", even, 8) == 8);
  memcpy(odd, even, 8);
  hsm__des_set_parity(odd, 8);
  CU_ASSERT(memcmp(odd, even, 8) != 0);
  CU_ASSERT_EQUAL(hsm__kcv(HSM__TDES, even, 8, kcv1, 3), 0);
  CU_ASSERT_EQUAL(hsm__kcv(HSM__TDES, odd, 8, kcv2, 3), 0);
  CU_ASSERT(memcmp(kcv1, kcv2, 3) == 0);
}

static void test_random_draws_differ(void) {
  uint8_t a[32] = {0}, b[32] = {0};
  CU_ASSERT_EQUAL(hsm__random(a, sizeof a), 0);
  CU_ASSERT_EQUAL(hsm__random(b, sizeof b), 0);
  CU_ASSERT(memcmp(a, b, sizeof a) != 0);
  CU_ASSERT_EQUAL(hsm__random(a, 0), 0);
}

static void test_cleanse_zeroes_and_tolerates_null(void) {
  uint8_t buf[40];
  memset(buf, 0xA5, sizeof buf);
  hsm__cleanse(buf + 4, 32);
  for (size_t i = 0; i < sizeof buf; i++)
    CU_ASSERT_EQUAL(buf[i], i < 4 || i >= 36 ? 0xA5 : 0);
  hsm__cleanse(NULL, 10);
  hsm__cleanse(buf, 0);
  CU_ASSERT_EQUAL(buf[0], 0xA5);
}

int main(void) {
  static const tu_test_t tests[] = {
      {"cmac_sp800_38b_vectors", test_cmac_sp800_38b_vectors},
      {"cmac_aes_dukpt_file_macs_under_stated_keys",
       test_cmac_aes_dukpt_file_macs_under_stated_keys},
      {"cmac_refuses_bad_arguments", test_cmac_refuses_bad_arguments},
      {"kcv_of_every_stated_check_value", test_kcv_of_every_stated_check_value},
      {"kcv_definition_and_truncation", test_kcv_definition_and_truncation},
      {"single_des_known_answers_and_equivalent_keys",
       test_single_des_known_answers_and_equivalent_keys},
      {"ecb_pin_block_encipherments", test_ecb_pin_block_encipherments},
      {"cbc_dukpt_file_data_encryptions", test_cbc_dukpt_file_data_encryptions},
      {"cbc_first_block_is_ecb_of_iv_xor_block",
       test_cbc_first_block_is_ecb_of_iv_xor_block},
      {"cipher_init_refuses_bad_key_lengths_and_algorithms",
       test_cipher_init_refuses_bad_key_lengths_and_algorithms},
      {"ecb_cbc_refuse_length_not_a_block_multiple",
       test_ecb_cbc_refuse_length_not_a_block_multiple},
      {"cipher_free_wipes_key_and_is_idempotent",
       test_cipher_free_wipes_key_and_is_idempotent},
      {"des_parity_set_and_check", test_des_parity_set_and_check},
      {"random_draws_differ", test_random_draws_differ},
      {"cleanse_zeroes_and_tolerates_null",
       test_cleanse_zeroes_and_tolerates_null},
      {NULL, NULL}};
  tu_init();
  tu_add_suite("hsm_symmetric", tests);
  return tu_run();
}
