/*
 * test_mac.c — ISO/IEC 9797-1 MAC algorithms 1 and 3 (hsm/mac.c): every
 * block of iso9797-1-mac.txt whose padding method the function implements
 * (1 or 2; the padding method 3 blocks are skipped, see below), the retail
 * MACs of the TDES DUKPT file under the MAC keys it states, the padding
 * rules at block boundaries, agreement with CBC built by hand, and refusal
 * of unknown algorithms, padding methods and key lengths.
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

static const uint8_t K1[8] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF};
static const uint8_t K12[16] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF,
                                0xFE, 0xDC, 0xBA, 0x98, 0x76, 0x54, 0x32, 0x10};

static void load(tv_file_t *f, const char *name) {
  CU_ASSERT_EQUAL_FATAL(tv_load(f, name), 0);
  CU_ASSERT_FATAL(f->nblocks > 0);
}

/* The message of a block.  data_hex is authoritative: the vector reader
 * trims trailing blanks, and the ISO 9797-1 Annex B message "Now is the
 * time for all " ends in one.  A block with only data_ascii takes the
 * data_hex of another block of the file with the same data_ascii, if any
 * (iso9797-alg1-pad1-all has the Annex B message without data_hex). */
static size_t block_message(const tv_file_t *f, const tv_block_t *b,
                            uint8_t *out, size_t cap) {
  size_t n = tv_hex(b, "data_hex", out, cap);
  if (n != (size_t)-1)
    return n;
  const char *ascii = tv_get(b, "data_ascii");
  if (!ascii)
    return (size_t)-1;
  for (size_t i = 0; i < f->nblocks; i++) {
    const char *other = tv_get(&f->blocks[i], "data_ascii");
    if (other && strcmp(other, ascii) == 0 &&
        (n = tv_hex(&f->blocks[i], "data_hex", out, cap)) != (size_t)-1)
      return n;
  }
  n = strlen(ascii);
  if (n > cap)
    return (size_t)-1;
  memcpy(out, ascii, n);
  return n;
}

/* Algorithm 3 blocks give K and K' separately; algorithm 1 blocks one key
 * (8 bytes: single DES; 16: 2-key TDES as the block cipher).  Padding
 * method 3 blocks are skipped: hsm__mac_iso9797 implements methods 1 and 2
 * only (crypto.h), and refuses 3 (checked here on each skipped block). */
static void test_iso9797_vectors(void) {
  tv_file_t f;
  size_t done = 0, skipped = 0;
  load(&f, "vectors/iso9797-1-mac.txt");
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    uint8_t key[24], msg[256], want[8], out[8];
    size_t klen, mlen = block_message(&f, b, msg, sizeof msg);
    const char *pad = tv_get(b, "padding_method");
    int alg = tv_get(b, "key_k") ? 3 : 1;
    TV_CHECK(b, pad != NULL && mlen != (size_t)-1);
    TV_CHECK(b, tv_hex(b, "expected_mac", want, 8) == 8);
    if (!pad || mlen == (size_t)-1)
      continue;
    if (alg == 3) {
      TV_CHECK(b, tv_hex(b, "key_k", key, 8) == 8);
      TV_CHECK(b, tv_hex(b, "key_k_prime", key + 8, 8) == 8);
      klen = 16;
    } else {
      klen = tv_hex(b, "key", key, sizeof key);
      TV_CHECK(b, klen == 8 || klen == 16);
    }
    if (strcmp(pad, "3") == 0) {
      TV_CHECK(b, hsm__mac_iso9797(alg, 3, key, klen, msg, mlen, out) ==
                      HSM_E_INVAL);
      skipped++;
      continue;
    }
    TV_CHECK(
        b, hsm__mac_iso9797(alg, pad[0] - '0', key, klen, msg, mlen, out) == 0);
    TV_CHECK(b, memcmp(out, want, 8) == 0);
    done++;
  }
  CU_ASSERT_EQUAL(f.nblocks, 14);
  CU_ASSERT_EQUAL(done, 10);
  CU_ASSERT_EQUAL(skipped, 4);
  tv_free(&f);
}

/* The TDES DUKPT file: request and response MACs (algorithm 3, padding 1)
 * under the derived MAC keys the file states (derivation is dukpt.c's). */
static void test_dukpt_file_retail_macs_under_stated_keys(void) {
  static const struct {
    const char *key, *mac;
  } pairs[] = {
      {"expected_mac_request_key", "expected_request_mac_iso9797_alg3_pad1"},
      {"expected_mac_response_key", "expected_response_mac_iso9797_alg3_pad1"}};
  tv_file_t f;
  size_t done = 0;
  load(&f, "vectors/dukpt-tdes-x9.24-1.txt");
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    const char *data = tv_get(b, "mac_data_ascii");
    for (size_t p = 0; p < 2; p++) {
      uint8_t key[16], want[8], out[8];
      if (tv_hex(b, pairs[p].mac, want, 8) != 8)
        continue;
      TV_CHECK(b, data != NULL);
      TV_CHECK(b, tv_hex(b, pairs[p].key, key, 16) == 16);
      if (!data)
        continue;
      TV_CHECK(b, hsm__mac_iso9797(3, 1, key, 16, (const uint8_t *)data,
                                   strlen(data), out) == 0);
      TV_CHECK(b, memcmp(out, want, 8) == 0);
      done++;
    }
  }
  CU_ASSERT_EQUAL(done, 10);
  tv_free(&f);
}

/* Padding method 1 adds nothing to a non-empty multiple of 8 and one zero
 * block to the empty message; method 2 always adds 0x80 then zeros, a
 * whole block when the message fills its last block. */
static void test_padding_rules_at_block_boundaries(void) {
  static const uint8_t zero[8];
  uint8_t msg[16] = "ABCDEFGH", ext[16], out[8], want[8];
  /* empty, method 1: MAC = E(0). */
  CU_ASSERT_EQUAL(hsm__mac_iso9797(1, 1, K1, 8, NULL, 0, out), 0);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, K1, 8, 1, zero, want, 8), 0);
  CU_ASSERT(memcmp(out, want, 8) == 0);
  /* one full block, method 1: MAC = E(block). */
  CU_ASSERT_EQUAL(hsm__mac_iso9797(1, 1, K1, 8, msg, 8, out), 0);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, K1, 8, 1, msg, want, 8), 0);
  CU_ASSERT(memcmp(out, want, 8) == 0);
  /* empty, method 2: MAC = E(80 00..00). */
  ext[0] = 0x80;
  memset(ext + 1, 0, 7);
  CU_ASSERT_EQUAL(hsm__mac_iso9797(1, 2, K1, 8, NULL, 0, out), 0);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, K1, 8, 1, ext, want, 8), 0);
  CU_ASSERT(memcmp(out, want, 8) == 0);
  /* one full block, method 2 = method 1 over block || 80 00..00. */
  memcpy(ext, msg, 8);
  ext[8] = 0x80;
  memset(ext + 9, 0, 7);
  for (int alg = 1; alg <= 3; alg += 2) {
    CU_ASSERT_EQUAL(hsm__mac_iso9797(alg, 2, K12, 16, msg, 8, out), 0);
    CU_ASSERT_EQUAL(hsm__mac_iso9797(alg, 1, K12, 16, ext, 16, want), 0);
    CU_ASSERT(memcmp(out, want, 8) == 0);
  }
  /* 7 bytes, method 2: the 0x80 takes the last byte of the block. */
  memcpy(ext, msg, 7);
  ext[7] = 0x80;
  CU_ASSERT_EQUAL(hsm__mac_iso9797(3, 2, K12, 16, msg, 7, out), 0);
  CU_ASSERT_EQUAL(hsm__mac_iso9797(3, 1, K12, 16, ext, 8, want), 0);
  CU_ASSERT(memcmp(out, want, 8) == 0);
}

/* Method 1 cannot tell trailing zero bytes from padding; method 2 can. */
static void test_padding1_ignores_trailing_zeros_padding2_does_not(void) {
  static const uint8_t a[4] = {'a', 'b', 'c', 0};
  uint8_t m1[8], m2[8];
  CU_ASSERT_EQUAL(hsm__mac_iso9797(3, 1, K12, 16, a, 3, m1), 0);
  CU_ASSERT_EQUAL(hsm__mac_iso9797(3, 1, K12, 16, a, 4, m2), 0);
  CU_ASSERT(memcmp(m1, m2, 8) == 0);
  CU_ASSERT_EQUAL(hsm__mac_iso9797(3, 2, K12, 16, a, 3, m1), 0);
  CU_ASSERT_EQUAL(hsm__mac_iso9797(3, 2, K12, 16, a, 4, m2), 0);
  CU_ASSERT(memcmp(m1, m2, 8) != 0);
}

/* Algorithm 1 is the last block of CBC with a zero IV, for single DES,
 * 2-key and 3-key TDES, over a long message (many blocks). */
static void test_alg1_equals_last_cbc_block(void) {
  static const uint8_t iv[8];
  uint8_t key[24], msg[1000], ct[1000], out[8];
  for (size_t i = 0; i < sizeof key; i++)
    key[i] = (uint8_t)(0x11 * (i + 1));
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)(i * 37 + 11);
  static const size_t klens[] = {8, 16, 24};
  for (size_t k = 0; k < 3; k++) {
    hsm__cipher_t c;
    CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&c, HSM__TDES, key, klens[k]), 0);
    CU_ASSERT_EQUAL(hsm__cbc(&c, 1, iv, msg, ct, sizeof msg), 0);
    CU_ASSERT_EQUAL(hsm__mac_iso9797(1, 1, key, klens[k], msg, sizeof msg, out),
                    0);
    CU_ASSERT(memcmp(out, ct + sizeof msg - 8, 8) == 0);
    hsm__cipher_free(&c);
  }
}

/* Algorithm 3 by its definition: single-DES CBC with K over all blocks,
 * then D(K') and E(K) on the result; and with K' = K it collapses to
 * algorithm 1 with single DES. */
static void test_alg3_matches_definition_and_collapses_when_keys_equal(void) {
  static const uint8_t iv[8];
  uint8_t msg[40], ct[40], h[8], out[8], kk[16];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)(255 - i * 3);
  hsm__cipher_t k;
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&k, HSM__TDES, K12, 8), 0);
  CU_ASSERT_EQUAL(hsm__cbc(&k, 1, iv, msg, ct, sizeof msg), 0);
  hsm__cipher_free(&k);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, K12 + 8, 8, 0, ct + 32, h, 8), 0);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, K12, 8, 1, h, h, 8), 0);
  CU_ASSERT_EQUAL(hsm__mac_iso9797(3, 1, K12, 16, msg, sizeof msg, out), 0);
  CU_ASSERT(memcmp(out, h, 8) == 0);

  memcpy(kk, K1, 8);
  memcpy(kk + 8, K1, 8);
  uint8_t a1[8];
  CU_ASSERT_EQUAL(hsm__mac_iso9797(3, 2, kk, 16, msg, 13, out), 0);
  CU_ASSERT_EQUAL(hsm__mac_iso9797(1, 2, K1, 8, msg, 13, a1), 0);
  CU_ASSERT(memcmp(out, a1, 8) == 0);
}

/* Any change to the message changes the MAC (one bit, every position of a
 * 3-block message). */
static void test_every_single_bit_change_changes_mac(void) {
  uint8_t msg[20], ref[8], out[8];
  for (size_t i = 0; i < sizeof msg; i++)
    msg[i] = (uint8_t)i;
  CU_ASSERT_EQUAL_FATAL(hsm__mac_iso9797(3, 2, K12, 16, msg, 20, ref), 0);
  for (size_t bit = 0; bit < 160; bit++) {
    msg[bit / 8] ^= (uint8_t)(1u << bit % 8);
    CU_ASSERT_EQUAL(hsm__mac_iso9797(3, 2, K12, 16, msg, 20, out), 0);
    CU_ASSERT(memcmp(out, ref, 8) != 0);
    msg[bit / 8] ^= (uint8_t)(1u << bit % 8);
  }
}

static void test_refuses_unknown_algorithm_or_padding(void) {
  uint8_t out[8];
  static const uint8_t m[3] = {1, 2, 3};
  static const int algs[] = {-1, 0, 2, 4, 5};
  static const int pads[] = {-1, 0, 3, 4};
  for (size_t i = 0; i < sizeof algs / sizeof algs[0]; i++)
    CU_ASSERT_EQUAL(hsm__mac_iso9797(algs[i], 1, K12, 16, m, 3, out),
                    HSM_E_INVAL);
  for (size_t i = 0; i < sizeof pads / sizeof pads[0]; i++) {
    CU_ASSERT_EQUAL(hsm__mac_iso9797(1, pads[i], K12, 16, m, 3, out),
                    HSM_E_INVAL);
    CU_ASSERT_EQUAL(hsm__mac_iso9797(3, pads[i], K12, 16, m, 3, out),
                    HSM_E_INVAL);
  }
}

/* Algorithm 1: 8, 16 or 24 bytes.  Algorithm 3: exactly K|K', 16. */
static void test_refuses_wrong_key_lengths(void) {
  uint8_t key[33] = {0}, out[8];
  static const uint8_t m[3] = {1, 2, 3};
  for (size_t n = 0; n <= 33; n++) {
    int want1 = n == 8 || n == 16 || n == 24 ? 0 : HSM_E_KEY_LENGTH;
    int want3 = n == 16 ? 0 : HSM_E_KEY_LENGTH;
    CU_ASSERT_EQUAL(hsm__mac_iso9797(1, 1, key, n, m, 3, out), want1);
    CU_ASSERT_EQUAL(hsm__mac_iso9797(3, 1, key, n, m, 3, out), want3);
  }
}

static void test_refuses_null_arguments(void) {
  uint8_t out[8];
  static const uint8_t m[3] = {1, 2, 3};
  CU_ASSERT_EQUAL(hsm__mac_iso9797(1, 1, NULL, 16, m, 3, out), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__mac_iso9797(1, 1, K12, 16, NULL, 3, out), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__mac_iso9797(1, 1, K12, 16, m, 3, NULL), HSM_E_INVAL);
}

int main(void) {
  static const tu_test_t tests[] = {
      {"iso9797_vectors", test_iso9797_vectors},
      {"dukpt_file_retail_macs_under_stated_keys",
       test_dukpt_file_retail_macs_under_stated_keys},
      {"padding_rules_at_block_boundaries",
       test_padding_rules_at_block_boundaries},
      {"padding1_ignores_trailing_zeros_padding2_does_not",
       test_padding1_ignores_trailing_zeros_padding2_does_not},
      {"alg1_equals_last_cbc_block", test_alg1_equals_last_cbc_block},
      {"alg3_matches_definition_and_collapses_when_keys_equal",
       test_alg3_matches_definition_and_collapses_when_keys_equal},
      {"every_single_bit_change_changes_mac",
       test_every_single_bit_change_changes_mac},
      {"refuses_unknown_algorithm_or_padding",
       test_refuses_unknown_algorithm_or_padding},
      {"refuses_wrong_key_lengths", test_refuses_wrong_key_lengths},
      {"refuses_null_arguments", test_refuses_null_arguments},
      {NULL, NULL}};
  tu_init();
  tu_add_suite("hsm_mac", tests);
  return tu_run();
}
