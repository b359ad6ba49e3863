/*
 * test_dukpt.c — TDES DUKPT (ANSI X9.24-1-2009) and AES DUKPT (ANSI
 * X9.24-3-2017) key derivation against every block of
 * vectors/dukpt-tdes-x9.24-1.txt and vectors/dukpt-aes-x9.24-3.txt: keys of
 * every usage, and the PIN blocks, MACs and data ciphertexts the vectors
 * give, reproduced with the derived keys; then the KSNs and key lengths the
 * standards refuse.
 *
 * The retail MAC (ISO 9797-1 algorithm 3) is computed here from single-DES
 * and CBC steps rather than through mac.c, so this suite tests the DUKPT
 * keys and nothing else.  No vector block is skipped.
 */
#include "crypto.h"
#include "hsm.h"
#include "testutil.h"
#include "vectors.h"

#include <stdio.h>
#include <string.h>

#define TDES_FILE "vectors/dukpt-tdes-x9.24-1.txt"
#define AES_FILE "vectors/dukpt-aes-x9.24-3.txt"

static const char *block_name(const tv_block_t *b) {
  const char *n = tv_get(b, "name");
  return n ? n : "(unnamed)";
}

static void load(tv_file_t *f, const char *name) {
  CU_ASSERT_EQUAL_FATAL(tv_load(f, name), 0);
  CU_ASSERT_FATAL(f->nblocks > 0);
}

/* Decodes a hex field that must be present. */
static size_t need_hex(const tv_block_t *b, const char *field, uint8_t *out,
                       size_t cap) {
  size_t n = tv_hex(b, field, out, cap);
  if (n == (size_t)-1)
    fprintf(stderr, "%s: field %s missing or not hex\n", block_name(b), field);
  CU_ASSERT_FATAL(n != (size_t)-1);
  return n;
}

/* Compares got with the hex field; names the vector and field (never the
 * values) when they differ. */
static void expect_field(const tv_block_t *b, const char *field,
                         const uint8_t *got, size_t n) {
  uint8_t want[64];
  size_t wn = need_hex(b, field, want, sizeof want);
  int same = wn == n && memcmp(want, got, n) == 0;
  if (!same)
    fprintf(stderr, "%s: %s differs\n", block_name(b), field);
  CU_ASSERT(same);
}

/* ISO 9564-1 format 0 clear block, built here so that the PIN block
 * vectors test the DUKPT PIN key only. */
static void iso0_block(const char *pin, const char *pan, uint8_t out[8]) {
  uint8_t pinf[8], panf[8] = {0};
  size_t pinlen = strlen(pin), panlen = strlen(pan);
  CU_ASSERT_FATAL(pinlen >= 4 && pinlen <= 12 && panlen >= 13);
  memset(pinf, 0xFF, sizeof pinf);
  pinf[0] = (uint8_t)pinlen;
  for (size_t i = 0; i < pinlen; i++) {
    uint8_t d = (uint8_t)(pin[i] - '0');
    size_t nib = 2 + i;
    pinf[nib / 2] = (uint8_t)(nib % 2 ? (pinf[nib / 2] & 0xF0) | d
                                      : (pinf[nib / 2] & 0x0F) | d << 4);
  }
  /* The 12 rightmost PAN digits excluding the check digit. */
  const char *p = pan + panlen - 13;
  for (size_t i = 0; i < 12; i++) {
    uint8_t d = (uint8_t)(p[i] - '0');
    size_t nib = 4 + i;
    panf[nib / 2] |= (uint8_t)(nib % 2 ? d : d << 4);
  }
  for (size_t i = 0; i < 8; i++)
    out[i] = pinf[i] ^ panf[i];
}

/* ISO 9797-1 MAC algorithm 3, padding method 1, from single-DES steps:
 * CBC with K over every block, then decrypt with K' and encrypt with K. */
static void retail_mac(const uint8_t key[16], const uint8_t *msg, size_t len,
                       uint8_t mac[8]) {
  uint8_t buf[64] = {0}, cbc[64], tmp[8];
  static const uint8_t iv[8];
  size_t padded = (len + 7) / 8 * 8;
  CU_ASSERT_FATAL(len > 0 && padded <= sizeof buf);
  memcpy(buf, msg, len);
  hsm__cipher_t k;
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&k, HSM__TDES, key, 8), 0);
  CU_ASSERT_EQUAL(hsm__cbc(&k, 1, iv, buf, cbc, padded), 0);
  hsm__cipher_free(&k);
  CU_ASSERT_EQUAL(
      hsm__ecb_raw(HSM__TDES, key + 8, 8, 0, cbc + padded - 8, tmp, 8), 0);
  CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, key, 8, 1, tmp, mac, 8), 0);
}

/* CBC, IV zero, data zero-padded to the block; returns the length. */
static size_t cbc_zero_pad(int alg, const uint8_t *key, size_t keylen,
                           const char *text, uint8_t *out, size_t cap) {
  uint8_t buf[64] = {0};
  static const uint8_t iv[16];
  size_t len = strlen(text), bs = alg == HSM__AES ? 16 : 8;
  size_t padded = (len + bs - 1) / bs * bs;
  CU_ASSERT_FATAL(padded <= sizeof buf && padded <= cap);
  memcpy(buf, text, len);
  hsm__cipher_t c;
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&c, alg, key, keylen), 0);
  CU_ASSERT_EQUAL(hsm__cbc(&c, 1, iv, buf, out, padded), 0);
  /* And back: the same key decrypts what it encrypted. */
  uint8_t back[64];
  CU_ASSERT_EQUAL(hsm__cbc(&c, 0, iv, out, back, padded), 0);
  CU_ASSERT(memcmp(back, buf, padded) == 0);
  hsm__cipher_free(&c);
  return padded;
}

static const char *text_field(const tv_block_t *b, const char *field) {
  const char *v = tv_get(b, field);
  if (!v)
    fprintf(stderr, "%s: field %s missing\n", block_name(b), field);
  CU_ASSERT_FATAL(v != NULL);
  return v;
}

/* ------------------------------------------------------------------------ */
/* TDES                                                                      */

static const struct {
  const char *field;
  int usage;
} tdes_usages[] = {
    {"expected_transaction_key", HSM__DUKPT_TRANSACTION},
    {"expected_pin_key", HSM__DUKPT_PIN},
    {"expected_mac_request_key", HSM__DUKPT_MAC_REQUEST},
    {"expected_mac_response_key", HSM__DUKPT_MAC_RESPONSE},
    {"expected_data_request_key", HSM__DUKPT_DATA_REQUEST},
    {"expected_data_response_key", HSM__DUKPT_DATA_RESPONSE},
};

/* Every block is either the IPEK block or a KSN block with keys; a block of
 * another kind would be silently untested, so it fails the test. */
static void test_tdes_every_vector_block_is_an_ipek_or_ksn_case(void) {
  tv_file_t f;
  load(&f, TDES_FILE);
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    int known = tv_get(b, "expected_ipek") || tv_get(b, "ksn");
    if (!known)
      fprintf(stderr, "%s: no case in this suite covers it\n", block_name(b));
    CU_ASSERT(known);
    CU_ASSERT(tv_get(b, "source") != NULL);
  }
  tv_free(&f);
}

static void test_tdes_ipek_and_check_values_match_vectors(void) {
  tv_file_t f;
  load(&f, TDES_FILE);
  size_t checked = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    if (!tv_get(b, "expected_ipek"))
      continue;
    uint8_t bdk[16], ksn[10], ipek[16], kcv[3];
    CU_ASSERT_EQUAL_FATAL(need_hex(b, "bdk", bdk, sizeof bdk), 16);
    CU_ASSERT_EQUAL_FATAL(need_hex(b, "initial_ksn", ksn, sizeof ksn), 10);
    CU_ASSERT_EQUAL(hsm__dukpt_tdes_ipek(bdk, ksn, ipek), 0);
    expect_field(b, "expected_ipek", ipek, 16);
    if (tv_get(b, "bdk_kcv")) {
      CU_ASSERT_EQUAL(hsm__kcv(HSM__TDES, bdk, 16, kcv, 3), 0);
      expect_field(b, "bdk_kcv", kcv, 3);
    }
    if (tv_get(b, "expected_ipek_kcv")) {
      CU_ASSERT_EQUAL(hsm__kcv(HSM__TDES, ipek, 16, kcv, 3), 0);
      expect_field(b, "expected_ipek_kcv", kcv, 3);
    }
    checked++;
  }
  CU_ASSERT(checked > 0);
  tv_free(&f);
}

static void test_tdes_keys_of_every_usage_match_vectors(void) {
  tv_file_t f;
  load(&f, TDES_FILE);
  size_t blocks = 0, keys = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    if (!tv_get(b, "ksn"))
      continue;
    uint8_t bdk[16], ksn[10], key[16];
    CU_ASSERT_EQUAL_FATAL(need_hex(b, "bdk", bdk, sizeof bdk), 16);
    CU_ASSERT_EQUAL_FATAL(need_hex(b, "ksn", ksn, sizeof ksn), 10);
    size_t here = 0;
    for (size_t u = 0; u < sizeof tdes_usages / sizeof tdes_usages[0]; u++) {
      if (!tv_get(b, tdes_usages[u].field))
        continue;
      CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(bdk, ksn, tdes_usages[u].usage, key),
                      0);
      expect_field(b, tdes_usages[u].field, key, 16);
      here++;
    }
    /* Every KSN block gives at least the transaction, PIN and MAC request
     * keys. */
    CU_ASSERT(here >= 3);
    keys += here;
    blocks++;
  }
  CU_ASSERT(blocks >= 13);
  CU_ASSERT(keys >= 5 * 6 + 8 * 3);
  tv_free(&f);
}

static void test_tdes_pin_blocks_encrypted_with_pin_key_match_vectors(void) {
  tv_file_t f;
  load(&f, TDES_FILE);
  size_t checked = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    if (!tv_get(b, "expected_encrypted_pin_block"))
      continue;
    uint8_t bdk[16], ksn[10], key[16], clear[8], enc[8], back[8];
    need_hex(b, "bdk", bdk, sizeof bdk);
    CU_ASSERT_EQUAL_FATAL(need_hex(b, "ksn", ksn, sizeof ksn), 10);
    iso0_block(text_field(b, "pin"), text_field(b, "pan"), clear);
    if (tv_get(b, "clear_pin_block_iso0"))
      expect_field(b, "clear_pin_block_iso0", clear, 8);
    CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(bdk, ksn, HSM__DUKPT_PIN, key), 0);
    CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, key, 16, 1, clear, enc, 8), 0);
    expect_field(b, "expected_encrypted_pin_block", enc, 8);
    CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, key, 16, 0, enc, back, 8), 0);
    CU_ASSERT(memcmp(back, clear, 8) == 0);
    checked++;
  }
  CU_ASSERT(checked >= 13);
  tv_free(&f);
}

static void test_tdes_retail_macs_with_mac_keys_match_vectors(void) {
  tv_file_t f;
  load(&f, TDES_FILE);
  size_t checked = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    if (!tv_get(b, "expected_request_mac_iso9797_alg3_pad1"))
      continue;
    uint8_t bdk[16], ksn[10], key[16], mac[8];
    need_hex(b, "bdk", bdk, sizeof bdk);
    CU_ASSERT_EQUAL_FATAL(need_hex(b, "ksn", ksn, sizeof ksn), 10);
    const char *data = text_field(b, "mac_data_ascii");
    CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(bdk, ksn, HSM__DUKPT_MAC_REQUEST, key),
                    0);
    retail_mac(key, (const uint8_t *)data, strlen(data), mac);
    expect_field(b, "expected_request_mac_iso9797_alg3_pad1", mac, 8);
    CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(bdk, ksn, HSM__DUKPT_MAC_RESPONSE, key),
                    0);
    retail_mac(key, (const uint8_t *)data, strlen(data), mac);
    expect_field(b, "expected_response_mac_iso9797_alg3_pad1", mac, 8);
    checked++;
  }
  CU_ASSERT(checked >= 5);
  tv_free(&f);
}

static void test_tdes_data_ciphertexts_with_data_keys_match_vectors(void) {
  tv_file_t f;
  load(&f, TDES_FILE);
  size_t checked = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    if (!tv_get(b, "expected_data_request_tdes_cbc_iv0_zero_pad"))
      continue;
    uint8_t bdk[16], ksn[10], key[16], ct[64];
    need_hex(b, "bdk", bdk, sizeof bdk);
    CU_ASSERT_EQUAL_FATAL(need_hex(b, "ksn", ksn, sizeof ksn), 10);
    /* The vectors encipher the MAC data text. */
    const char *data = text_field(b, "mac_data_ascii");
    CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(bdk, ksn, HSM__DUKPT_DATA_REQUEST, key),
                    0);
    size_t n = cbc_zero_pad(HSM__TDES, key, 16, data, ct, sizeof ct);
    expect_field(b, "expected_data_request_tdes_cbc_iv0_zero_pad", ct, n);
    CU_ASSERT_EQUAL(
        hsm__dukpt_tdes_key(bdk, ksn, HSM__DUKPT_DATA_RESPONSE, key), 0);
    n = cbc_zero_pad(HSM__TDES, key, 16, data, ct, sizeof ct);
    expect_field(b, "expected_data_response_tdes_cbc_iv0_zero_pad", ct, n);
    checked++;
  }
  CU_ASSERT(checked >= 5);
  tv_free(&f);
}

static const uint8_t tdes_bdk[16] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xAB,
                                     0xCD, 0xEF, 0xFE, 0xDC, 0xBA, 0x98,
                                     0x76, 0x54, 0x32, 0x10};

static void tdes_ksn(uint32_t counter, uint8_t ksn[10]) {
  static const uint8_t prefix[8] = {0xFF, 0xFF, 0x98, 0x76,
                                    0x54, 0x32, 0x10, 0xE0};
  memcpy(ksn, prefix, 8);
  ksn[7] |= (uint8_t)(counter >> 16 & 0x1F);
  ksn[8] = (uint8_t)(counter >> 8);
  ksn[9] = (uint8_t)counter;
}

static void test_tdes_ipek_ignores_the_counter_bits(void) {
  uint8_t ksn[10], a[16], b[16];
  tdes_ksn(0, ksn);
  CU_ASSERT_EQUAL(hsm__dukpt_tdes_ipek(tdes_bdk, ksn, a), 0);
  tdes_ksn(0x1FFFFF, ksn);
  CU_ASSERT_EQUAL(hsm__dukpt_tdes_ipek(tdes_bdk, ksn, b), 0);
  CU_ASSERT(memcmp(a, b, 16) == 0);
}

static void test_tdes_refuses_counter_zero(void) {
  uint8_t ksn[10], key[16];
  tdes_ksn(0, ksn);
  for (int u = HSM__DUKPT_PIN; u <= HSM__DUKPT_TRANSACTION; u++)
    CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(tdes_bdk, ksn, u, key), HSM_E_BAD_DATA);
}

static void test_tdes_refuses_counter_with_more_than_ten_bits_set(void) {
  uint8_t ksn[10], key[16];
  static const uint32_t refused[] = {0x0007FF, 0x1FF800 | 0x000400 | 0x1,
                                     0x1FFFFF, 0x155555};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    tdes_ksn(refused[i], ksn);
    CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(tdes_bdk, ksn, HSM__DUKPT_PIN, key),
                    HSM_E_BAD_DATA);
  }
  /* Exactly ten bits, at the top and at the bottom of the counter. */
  tdes_ksn(0x1FF800, ksn);
  CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(tdes_bdk, ksn, HSM__DUKPT_PIN, key), 0);
  tdes_ksn(0x0003FF, ksn);
  CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(tdes_bdk, ksn, HSM__DUKPT_PIN, key), 0);
}

static void test_tdes_refuses_unknown_usage_and_null_arguments(void) {
  uint8_t ksn[10], key[16];
  tdes_ksn(1, ksn);
  CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(tdes_bdk, ksn, 0, key), HSM_E_INVAL);
  CU_ASSERT_EQUAL(
      hsm__dukpt_tdes_key(tdes_bdk, ksn, HSM__DUKPT_TRANSACTION + 1, key),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(NULL, ksn, HSM__DUKPT_PIN, key),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(tdes_bdk, NULL, HSM__DUKPT_PIN, key),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(tdes_bdk, ksn, HSM__DUKPT_PIN, NULL),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__dukpt_tdes_ipek(NULL, ksn, key), HSM_E_INVAL);
}

/* A different KSN prefix (device) gives different keys for one counter. */
static void test_tdes_keys_depend_on_the_device_part_of_the_ksn(void) {
  uint8_t ksn[10], a[16], b[16];
  tdes_ksn(1, ksn);
  CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(tdes_bdk, ksn, HSM__DUKPT_PIN, a), 0);
  ksn[6] ^= 0x01;
  CU_ASSERT_EQUAL(hsm__dukpt_tdes_key(tdes_bdk, ksn, HSM__DUKPT_PIN, b), 0);
  CU_ASSERT(memcmp(a, b, 16) != 0);
}

/* ------------------------------------------------------------------------ */
/* AES                                                                       */

static const struct {
  const char *field;
  int usage;
} aes_usages[] = {
    {"expected_transaction_key", HSM__DUKPT_TRANSACTION},
    {"expected_pin_key", HSM__DUKPT_PIN},
    {"expected_mac_generation_key", HSM__DUKPT_MAC_REQUEST},
    {"expected_mac_verification_key", HSM__DUKPT_MAC_RESPONSE},
    {"expected_data_encrypt_key", HSM__DUKPT_DATA_REQUEST},
    {"expected_data_decrypt_key", HSM__DUKPT_DATA_RESPONSE},
};

static void test_aes_every_vector_block_is_an_initial_key_or_ksn_case(void) {
  tv_file_t f;
  load(&f, AES_FILE);
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    int known = tv_get(b, "expected_initial_key") || tv_get(b, "ksn");
    if (!known)
      fprintf(stderr, "%s: no case in this suite covers it\n", block_name(b));
    CU_ASSERT(known);
    CU_ASSERT(tv_get(b, "source") != NULL);
  }
  tv_free(&f);
}

static void test_aes_initial_keys_match_vectors(void) {
  tv_file_t f;
  load(&f, AES_FILE);
  size_t checked = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    if (!tv_get(b, "expected_initial_key"))
      continue;
    uint8_t bdk[32], ksn[12] = {0}, ik[32], want[32];
    size_t bdklen = need_hex(b, "bdk", bdk, sizeof bdk);
    size_t iklen = need_hex(b, "expected_initial_key", want, sizeof want);
    CU_ASSERT_EQUAL_FATAL(need_hex(b, "initial_key_id", ksn, 8), 8);
    CU_ASSERT_EQUAL(hsm__dukpt_aes_initial_key(bdk, bdklen, ksn, ik, iklen), 0);
    expect_field(b, "expected_initial_key", ik, iklen);
    /* The derivation data the vector quotes, enciphered under the BDK,
     * gives the key: the vector's account of the derivation holds. */
    static const char *const dd_fields[] = {
        "derivation_data", "derivation_data_block1", "derivation_data_block2"};
    for (size_t d = 0; d < 3; d++) {
      uint8_t dd[16], blk[16];
      if (!tv_get(b, dd_fields[d]))
        continue;
      CU_ASSERT_EQUAL_FATAL(need_hex(b, dd_fields[d], dd, sizeof dd), 16);
      size_t at = d == 2 ? 16 : 0;
      CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__AES, bdk, bdklen, 1, dd, blk, 16), 0);
      CU_ASSERT(memcmp(blk, want + at, iklen - at < 16 ? iklen - at : 16) == 0);
    }
    if (tv_get(b, "bdk_kcv_aes_cmac")) {
      uint8_t kcv[3];
      CU_ASSERT_EQUAL(hsm__kcv(HSM__AES, bdk, bdklen, kcv, 3), 0);
      expect_field(b, "bdk_kcv_aes_cmac", kcv, 3);
    }
    /* The counter plays no part in the initial key. */
    ksn[11] = 0x2A;
    CU_ASSERT_EQUAL(hsm__dukpt_aes_initial_key(bdk, bdklen, ksn, ik, iklen), 0);
    CU_ASSERT(memcmp(ik, want, iklen) == 0);
    checked++;
  }
  CU_ASSERT(checked >= 2);
  tv_free(&f);
}

static void test_aes_keys_of_every_usage_match_vectors(void) {
  tv_file_t f;
  load(&f, AES_FILE);
  size_t blocks = 0, keys = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    if (!tv_get(b, "ksn"))
      continue;
    uint8_t bdk[32], ksn[12], key[32];
    size_t bdklen = need_hex(b, "bdk", bdk, sizeof bdk);
    CU_ASSERT_EQUAL_FATAL(need_hex(b, "ksn", ksn, sizeof ksn), 12);
    size_t here = 0;
    for (size_t u = 0; u < sizeof aes_usages / sizeof aes_usages[0]; u++) {
      if (!tv_get(b, aes_usages[u].field))
        continue;
      int usage = aes_usages[u].usage;
      size_t outlen = usage == HSM__DUKPT_TRANSACTION ? bdklen : 16;
      CU_ASSERT_EQUAL(hsm__dukpt_aes_key(bdk, bdklen, ksn, usage, key, outlen),
                      0);
      expect_field(b, aes_usages[u].field, key, outlen);
      here++;
    }
    CU_ASSERT(here >= 2);
    /* The PIN key is AES-ECB of the quoted derivation data under the
     * transaction key. */
    if (tv_get(b, "pin_key_derivation_data")) {
      uint8_t dd[16], pin[16], txn[32];
      CU_ASSERT_EQUAL_FATAL(
          need_hex(b, "pin_key_derivation_data", dd, sizeof dd), 16);
      CU_ASSERT_EQUAL(hsm__dukpt_aes_key(bdk, bdklen, ksn,
                                         HSM__DUKPT_TRANSACTION, txn, bdklen),
                      0);
      CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__AES, txn, bdklen, 1, dd, pin, 16), 0);
      expect_field(b, "expected_pin_key", pin, 16);
    }
    keys += here;
    blocks++;
  }
  CU_ASSERT(blocks >= 10);
  CU_ASSERT(keys >= 8 * 6 + 2 * 2);
  tv_free(&f);
}

static void test_aes_cmacs_with_mac_keys_match_vectors(void) {
  tv_file_t f;
  load(&f, AES_FILE);
  size_t checked = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    if (!tv_get(b, "expected_cmac_request"))
      continue;
    uint8_t bdk[32], ksn[12], key[16], mac[16];
    size_t bdklen = need_hex(b, "bdk", bdk, sizeof bdk), maclen = 0;
    CU_ASSERT_EQUAL_FATAL(need_hex(b, "ksn", ksn, sizeof ksn), 12);
    const char *data = text_field(b, "mac_data_ascii");
    CU_ASSERT_EQUAL(
        hsm__dukpt_aes_key(bdk, bdklen, ksn, HSM__DUKPT_MAC_REQUEST, key, 16),
        0);
    CU_ASSERT_EQUAL(hsm__cmac(HSM__AES, key, 16, (const uint8_t *)data,
                              strlen(data), mac, &maclen),
                    0);
    expect_field(b, "expected_cmac_request", mac, maclen);
    CU_ASSERT_EQUAL(
        hsm__dukpt_aes_key(bdk, bdklen, ksn, HSM__DUKPT_MAC_RESPONSE, key, 16),
        0);
    CU_ASSERT_EQUAL(hsm__cmac(HSM__AES, key, 16, (const uint8_t *)data,
                              strlen(data), mac, &maclen),
                    0);
    expect_field(b, "expected_cmac_response", mac, maclen);
    checked++;
  }
  CU_ASSERT(checked >= 8);
  tv_free(&f);
}

static void test_aes_data_ciphertexts_with_data_keys_match_vectors(void) {
  tv_file_t f;
  load(&f, AES_FILE);
  size_t checked = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    if (!tv_get(b, "expected_data_request_aes_cbc_iv0_zero_pad"))
      continue;
    uint8_t bdk[32], ksn[12], key[16], ct[64];
    size_t bdklen = need_hex(b, "bdk", bdk, sizeof bdk);
    CU_ASSERT_EQUAL_FATAL(need_hex(b, "ksn", ksn, sizeof ksn), 12);
    const char *data = text_field(b, "mac_data_ascii");
    CU_ASSERT_EQUAL(
        hsm__dukpt_aes_key(bdk, bdklen, ksn, HSM__DUKPT_DATA_REQUEST, key, 16),
        0);
    size_t n = cbc_zero_pad(HSM__AES, key, 16, data, ct, sizeof ct);
    expect_field(b, "expected_data_request_aes_cbc_iv0_zero_pad", ct, n);
    CU_ASSERT_EQUAL(
        hsm__dukpt_aes_key(bdk, bdklen, ksn, HSM__DUKPT_DATA_RESPONSE, key, 16),
        0);
    n = cbc_zero_pad(HSM__AES, key, 16, data, ct, sizeof ct);
    expect_field(b, "expected_data_response_aes_cbc_iv0_zero_pad", ct, n);
    checked++;
  }
  CU_ASSERT(checked >= 8);
  tv_free(&f);
}

/* The X9.24-3 test BDK: AES-256; its first 16 and 24 bytes are the AES-128
 * and AES-192 test BDKs. */
static const uint8_t aes_bdk256[32] = {
    0xFE, 0xDC, 0xBA, 0x98, 0x76, 0x54, 0x32, 0x10, 0xF1, 0xF1, 0xF1,
    0xF1, 0xF1, 0xF1, 0xF1, 0xF1, 0xFE, 0xDC, 0xBA, 0x98, 0x76, 0x54,
    0x32, 0x10, 0xF1, 0xF1, 0xF1, 0xF1, 0xF1, 0xF1, 0xF1, 0xF1};

static void aes_ksn(uint32_t counter, uint8_t ksn[12]) {
  static const uint8_t ikid[8] = {0x12, 0x34, 0x56, 0x78,
                                  0x90, 0x12, 0x34, 0x56};
  memcpy(ksn, ikid, 8);
  ksn[8] = (uint8_t)(counter >> 24);
  ksn[9] = (uint8_t)(counter >> 16);
  ksn[10] = (uint8_t)(counter >> 8);
  ksn[11] = (uint8_t)counter;
}

static void expect_hex(const uint8_t *got, size_t n, const char *hex) {
  uint8_t want[32];
  CU_ASSERT_FATAL(tu_unhex(hex, want, sizeof want) == n);
  CU_ASSERT(memcmp(got, want, n) == 0);
}

/* The vector file has the AES-256 BDK's initial key only; these values,
 * from the ASC X9 supplement to X9.24-3-2017 (AES-256 BDK, KSN
 * 123456789012345600000001), cover the AES-256 derivation key and AES-128
 * and AES-256 working keys under it.  Quoted by github.com/openemv/dukpt
 * test/dukpt_aes256_test.c (derivation key) and by a public Rust
 * X9.24-3 implementation's tests (working keys). */
static void test_aes_working_keys_from_aes256_bdk_match_supplement(void) {
  uint8_t ksn[12], key[32];
  aes_ksn(1, ksn);
  CU_ASSERT_EQUAL(
      hsm__dukpt_aes_key(aes_bdk256, 32, ksn, HSM__DUKPT_TRANSACTION, key, 32),
      0);
  expect_hex(key, 32,
             "54AC2B32B145EA4A554CB8BC44B17467"
             "063A799856B1CCC2A138D36E8DBF78B3");
  CU_ASSERT_EQUAL(
      hsm__dukpt_aes_key(aes_bdk256, 32, ksn, HSM__DUKPT_PIN, key, 16), 0);
  expect_hex(key, 16, "09C9C432966811D6B2C3336BAC1B1202");
  CU_ASSERT_EQUAL(
      hsm__dukpt_aes_key(aes_bdk256, 32, ksn, HSM__DUKPT_MAC_REQUEST, key, 16),
      0);
  expect_hex(key, 16, "F04A1FABD4176E15490CEC82E217A96D");
  CU_ASSERT_EQUAL(
      hsm__dukpt_aes_key(aes_bdk256, 32, ksn, HSM__DUKPT_DATA_REQUEST, key, 16),
      0);
  expect_hex(key, 16, "616D59AE91F8CC7016F89FDA29605FA4");
  CU_ASSERT_EQUAL(
      hsm__dukpt_aes_key(aes_bdk256, 32, ksn, HSM__DUKPT_PIN, key, 32), 0);
  expect_hex(key, 32,
             "8C1AB7BEE973829E30242E0BBBDD4946"
             "D540C98FC1B5BDCF94790001A23FD502");
}

static void test_aes_refuses_counter_zero(void) {
  uint8_t ksn[12], key[32];
  aes_ksn(0, ksn);
  for (int u = HSM__DUKPT_PIN; u <= HSM__DUKPT_TRANSACTION; u++)
    CU_ASSERT_EQUAL(hsm__dukpt_aes_key(aes_bdk256, 16, ksn, u, key, 16),
                    HSM_E_BAD_DATA);
}

static void test_aes_refuses_counter_with_more_than_sixteen_bits_set(void) {
  uint8_t ksn[12], key[16];
  /* 0x1FFFF is in the X9 supplement's list and is the first counter a
   * device skips (17 bits). */
  static const uint32_t refused[] = {0x0001FFFF, 0xFFFF8000, 0xFFFFFFFF,
                                     0xAAAAAAAB};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    aes_ksn(refused[i], ksn);
    CU_ASSERT_EQUAL(
        hsm__dukpt_aes_key(aes_bdk256, 16, ksn, HSM__DUKPT_PIN, key, 16),
        HSM_E_BAD_DATA);
  }
  /* Exactly sixteen bits: the last counter a device uses, and the lowest. */
  aes_ksn(0xFFFF0000, ksn);
  CU_ASSERT_EQUAL(
      hsm__dukpt_aes_key(aes_bdk256, 16, ksn, HSM__DUKPT_PIN, key, 16), 0);
  aes_ksn(0x0000FFFF, ksn);
  CU_ASSERT_EQUAL(
      hsm__dukpt_aes_key(aes_bdk256, 16, ksn, HSM__DUKPT_PIN, key, 16), 0);
}

static void test_aes_refuses_key_lengths_the_standard_does_not_allow(void) {
  uint8_t ksn[12], key[32];
  aes_ksn(1, ksn);
  static const size_t bad[] = {0, 8, 15, 17, 20, 31, 33, 64};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_EQUAL(
        hsm__dukpt_aes_key(aes_bdk256, bad[i], ksn, HSM__DUKPT_PIN, key, 16),
        HSM_E_KEY_LENGTH);
    CU_ASSERT_EQUAL(
        hsm__dukpt_aes_initial_key(aes_bdk256, bad[i], ksn, key, 16),
        HSM_E_KEY_LENGTH);
    if (bad[i] <= 32) {
      CU_ASSERT_EQUAL(
          hsm__dukpt_aes_key(aes_bdk256, 32, ksn, HSM__DUKPT_PIN, key, bad[i]),
          HSM_E_KEY_LENGTH);
      CU_ASSERT_EQUAL(
          hsm__dukpt_aes_initial_key(aes_bdk256, 32, ksn, key, bad[i]),
          HSM_E_KEY_LENGTH);
    }
  }
  /* A working or initial key stronger than the BDK. */
  CU_ASSERT_EQUAL(
      hsm__dukpt_aes_key(aes_bdk256, 16, ksn, HSM__DUKPT_PIN, key, 32),
      HSM_E_KEY_LENGTH);
  CU_ASSERT_EQUAL(hsm__dukpt_aes_initial_key(aes_bdk256, 16, ksn, key, 24),
                  HSM_E_KEY_LENGTH);
  /* The transaction key has the BDK's length, no other. */
  CU_ASSERT_EQUAL(
      hsm__dukpt_aes_key(aes_bdk256, 32, ksn, HSM__DUKPT_TRANSACTION, key, 16),
      HSM_E_KEY_LENGTH);
}

static void test_aes_refuses_unknown_usage_and_null_arguments(void) {
  uint8_t ksn[12], key[16];
  aes_ksn(1, ksn);
  CU_ASSERT_EQUAL(hsm__dukpt_aes_key(aes_bdk256, 16, ksn, 0, key, 16),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__dukpt_aes_key(aes_bdk256, 16, ksn,
                                     HSM__DUKPT_TRANSACTION + 1, key, 16),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__dukpt_aes_key(NULL, 16, ksn, HSM__DUKPT_PIN, key, 16),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(
      hsm__dukpt_aes_key(aes_bdk256, 16, NULL, HSM__DUKPT_PIN, key, 16),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(
      hsm__dukpt_aes_key(aes_bdk256, 16, ksn, HSM__DUKPT_PIN, NULL, 16),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__dukpt_aes_initial_key(aes_bdk256, 16, ksn, NULL, 16),
                  HSM_E_INVAL);
}

/* AES-192 BDK FEDCBA9876543210F1F1F1F1F1F1F1F1FEDCBA9876543210, counters 1
 * and 3: AES-128 and AES-192 working keys as a public Rust X9.24-3
 * implementation's tests give them ("generated using the ASC X9 X9.24-3
 * reference algorithm"; the vector file has no AES-192 case).  That table
 * also lists counter 0x1FFFF, which has 17 bits set and is refused here. */
static void test_aes192_bdk_working_keys_match_reference_algorithm(void) {
  static const struct {
    uint32_t counter;
    const char *pin128, *mac128, *data128, *pin192;
  } cases[] = {
      {1, "3C318CDBF08322279557201E98DBB3F3",
       "3E7009C74E8166BC9059D3D92D36B487", "04C5C3926A8B9B2B833F33D4C6E581EE",
       "C5043EDC7F2C001097974D40FF82A050B64A1AB27879F3DB"},
      {3, "6DE9A0A37D6927280B7E223C4BE7580F",
       "D2D13AF44E71EB6E8539FFDA3C37A5D6", "FDCB88BEA1EFE48EAEE83A48513FF515",
       "64AE12F5E0FB2001B22520CED9C5CF1A8AA45AAA3F264882"},
  };
  uint8_t ksn[12], key[24];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    aes_ksn(cases[i].counter, ksn);
    CU_ASSERT_EQUAL(
        hsm__dukpt_aes_key(aes_bdk256, 24, ksn, HSM__DUKPT_PIN, key, 16), 0);
    expect_hex(key, 16, cases[i].pin128);
    CU_ASSERT_EQUAL(hsm__dukpt_aes_key(aes_bdk256, 24, ksn,
                                       HSM__DUKPT_MAC_REQUEST, key, 16),
                    0);
    expect_hex(key, 16, cases[i].mac128);
    CU_ASSERT_EQUAL(hsm__dukpt_aes_key(aes_bdk256, 24, ksn,
                                       HSM__DUKPT_DATA_REQUEST, key, 16),
                    0);
    expect_hex(key, 16, cases[i].data128);
    CU_ASSERT_EQUAL(
        hsm__dukpt_aes_key(aes_bdk256, 24, ksn, HSM__DUKPT_PIN, key, 24), 0);
    expect_hex(key, 24, cases[i].pin192);
  }
}

static const tu_test_t tdes_tests[] = {
    {"every_vector_block_is_an_ipek_or_ksn_case",
     test_tdes_every_vector_block_is_an_ipek_or_ksn_case},
    {"ipek_and_check_values_match_vectors",
     test_tdes_ipek_and_check_values_match_vectors},
    {"keys_of_every_usage_match_vectors",
     test_tdes_keys_of_every_usage_match_vectors},
    {"pin_blocks_encrypted_with_pin_key_match_vectors",
     test_tdes_pin_blocks_encrypted_with_pin_key_match_vectors},
    {"retail_macs_with_mac_keys_match_vectors",
     test_tdes_retail_macs_with_mac_keys_match_vectors},
    {"data_ciphertexts_with_data_keys_match_vectors",
     test_tdes_data_ciphertexts_with_data_keys_match_vectors},
    {"ipek_ignores_the_counter_bits", test_tdes_ipek_ignores_the_counter_bits},
    {"refuses_counter_zero", test_tdes_refuses_counter_zero},
    {"refuses_counter_with_more_than_ten_bits_set",
     test_tdes_refuses_counter_with_more_than_ten_bits_set},
    {"refuses_unknown_usage_and_null_arguments",
     test_tdes_refuses_unknown_usage_and_null_arguments},
    {"keys_depend_on_the_device_part_of_the_ksn",
     test_tdes_keys_depend_on_the_device_part_of_the_ksn},
    {NULL, NULL}};

static const tu_test_t aes_tests[] = {
    {"every_vector_block_is_an_initial_key_or_ksn_case",
     test_aes_every_vector_block_is_an_initial_key_or_ksn_case},
    {"initial_keys_match_vectors", test_aes_initial_keys_match_vectors},
    {"keys_of_every_usage_match_vectors",
     test_aes_keys_of_every_usage_match_vectors},
    {"cmacs_with_mac_keys_match_vectors",
     test_aes_cmacs_with_mac_keys_match_vectors},
    {"data_ciphertexts_with_data_keys_match_vectors",
     test_aes_data_ciphertexts_with_data_keys_match_vectors},
    {"working_keys_from_aes256_bdk_match_supplement",
     test_aes_working_keys_from_aes256_bdk_match_supplement},
    {"refuses_counter_zero", test_aes_refuses_counter_zero},
    {"refuses_counter_with_more_than_sixteen_bits_set",
     test_aes_refuses_counter_with_more_than_sixteen_bits_set},
    {"refuses_key_lengths_the_standard_does_not_allow",
     test_aes_refuses_key_lengths_the_standard_does_not_allow},
    {"refuses_unknown_usage_and_null_arguments",
     test_aes_refuses_unknown_usage_and_null_arguments},
    {"aes192_bdk_working_keys_match_reference_algorithm",
     test_aes192_bdk_working_keys_match_reference_algorithm},
    {NULL, NULL}};

int main(void) {
  tu_init();
  tu_add_suite("dukpt_tdes", tdes_tests);
  tu_add_suite("dukpt_aes", aes_tests);
  return tu_run();
}
