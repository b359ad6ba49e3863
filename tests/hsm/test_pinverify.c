/*
 * test_pinverify.c — IBM 3624 PIN offset, Visa PVV and Visa CVV / CVV2 /
 * iCVV (hsm/pinverify.c): every block of ibm3624-pin-offset.txt,
 * visa-pvv.txt and visa-cvv.txt, with the intermediate values the vectors
 * state; verification outcomes (0 match, 1 mismatch, negative error), the
 * IBM check-length rule, and refusal of malformed inputs and keys.
 */
#include "crypto.h"
#include "hsm.h"
#include "testutil.h"
#include "vectors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TV_CHECK(b, cond)                                                      \
  do {                                                                         \
    int ok_ = (cond) ? 1 : 0;                                                  \
    CU_assertImplementation(ok_, __LINE__, #cond, __FILE__, "", CU_FALSE);     \
    if (!ok_)                                                                  \
      fprintf(stderr, "\n    in vector %s\n", tv_get((b), "name"));            \
  } while (0)

static const char *const TEST_VD = "1122334455667788";
static const char *const TEST_DECTAB = "1234567890123456";

static void load(tv_file_t *f, const char *name) {
  CU_ASSERT_EQUAL_FATAL(tv_load(f, name), 0);
  CU_ASSERT_FATAL(f->nblocks > 0);
}

static void key_from(hsm__cipher_t *c, const char *hex) {
  uint8_t k[24];
  size_t n = tu_unhex(hex, k, sizeof k);
  CU_ASSERT_FATAL(n == 8 || n == 16 || n == 24);
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(c, HSM__TDES, k, n), 0);
}

/* The PSEC test PVK, also the key of the first IBM vectors. */
static void test_pvk(hsm__cipher_t *c) {
  key_from(c, "0123456789ABCDEFFEDCBA9876543210");
}

/* ------------------------------------------------------------------------ */
/* IBM 3624                                                                  */

/* Every block: the enciphered validation data, the offset, verification of
 * the customer PIN (0), of the natural PIN with a zero offset (0), and of
 * the customer PIN with its last digit changed (1). */
static void test_ibm3624_vectors_offset_and_verify(void) {
  tv_file_t f;
  load(&f, "vectors/ibm3624-pin-offset.txt");
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    const char *vd = tv_get(b, "validation_data");
    const char *dectab = tv_get(b, "decimalisation_table");
    const char *pin = tv_get(b, "customer_pin");
    const char *want = tv_get(b, "expected_offset");
    const char *natural = tv_get(b, "natural_pin_prefix");
    TV_CHECK(b, vd && dectab && pin && want && natural && tv_get(b, "pvk"));
    if (!vd || !dectab || !pin || !want || !natural || !tv_get(b, "pvk"))
      continue;
    hsm__cipher_t pvk;
    key_from(&pvk, tv_get(b, "pvk"));
    uint8_t blk[8], enc[8], wenc[8];
    CU_ASSERT_FATAL(tu_unhex(vd, blk, 8) == 8);
    CU_ASSERT_EQUAL(hsm__ecb(&pvk, 1, blk, enc, 8), 0);
    TV_CHECK(b,
             tv_hex(b, "intermediate_encrypted_validation_data", wenc, 8) == 8);
    TV_CHECK(b, memcmp(enc, wenc, 8) == 0);

    size_t n = strlen(pin);
    char off[13];
    TV_CHECK(b, hsm__ibm3624_offset(&pvk, vd, dectab, pin, n, off) == 0);
    TV_CHECK(b, strcmp(off, want) == 0);
    TV_CHECK(b, hsm__ibm3624_verify(&pvk, vd, dectab, pin, n, want,
                                    strlen(want)) == 0);
    TV_CHECK(b, hsm__ibm3624_verify(&pvk, vd, dectab, natural, strlen(natural),
                                    "0000", 4) == 0);
    char wrong[13];
    memcpy(wrong, pin, n + 1);
    wrong[n - 1] = (char)('0' + (wrong[n - 1] - '0' + 1) % 10);
    TV_CHECK(b, hsm__ibm3624_verify(&pvk, vd, dectab, wrong, n, want,
                                    strlen(want)) == 1);
    hsm__cipher_free(&pvk);
  }
  CU_ASSERT_EQUAL(f.nblocks, 9);
  tv_free(&f);
}

/* A 12-digit PIN: the offset is 12 digits and verifies; every single-digit
 * change of the PIN fails verification. */
static void test_ibm3624_long_pin_every_digit_change_fails(void) {
  hsm__cipher_t pvk;
  test_pvk(&pvk);
  char pin[] = "907118273645", off[13];
  CU_ASSERT_EQUAL(hsm__ibm3624_offset(&pvk, TEST_VD, TEST_DECTAB, pin, 12, off),
                  0);
  CU_ASSERT_EQUAL(strlen(off), 12);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&pvk, TEST_VD, TEST_DECTAB, pin, 12, off, 12), 0);
  for (size_t i = 0; i < 12; i++)
    for (int d = 1; d < 10; d++) {
      char keep = pin[i];
      pin[i] = (char)('0' + (keep - '0' + d) % 10);
      CU_ASSERT_EQUAL(
          hsm__ibm3624_verify(&pvk, TEST_VD, TEST_DECTAB, pin, 12, off, 12), 1);
      pin[i] = keep;
    }
  hsm__cipher_free(&pvk);
}

/* IBM's check length m < n: the offset is the right-most m digits and only
 * the right-most m PIN digits are compared, so a change in the first n - m
 * digits still verifies and one in the last m does not. */
static void test_ibm3624_check_length_compares_rightmost_digits(void) {
  hsm__cipher_t pvk;
  test_pvk(&pvk);
  char pin[] = "246813", off[7];
  CU_ASSERT_EQUAL_FATAL(
      hsm__ibm3624_offset(&pvk, TEST_VD, TEST_DECTAB, pin, 6, off), 0);
  const char *off4 = off + 2;
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&pvk, TEST_VD, TEST_DECTAB, pin, 6, off4, 4), 0);
  pin[0] = pin[0] == '9' ? '0' : (char)(pin[0] + 1);
  pin[1] = pin[1] == '9' ? '0' : (char)(pin[1] + 1);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&pvk, TEST_VD, TEST_DECTAB, pin, 6, off4, 4), 0);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&pvk, TEST_VD, TEST_DECTAB, pin, 6, off, 6), 1);
  pin[5] = pin[5] == '9' ? '0' : (char)(pin[5] + 1);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&pvk, TEST_VD, TEST_DECTAB, pin, 6, off4, 4), 1);
  hsm__cipher_free(&pvk);
}

static void test_ibm3624_refuses_malformed_inputs(void) {
  hsm__cipher_t pvk;
  test_pvk(&pvk);
  char off[13];
  /* validation data: 16 hex digits, read as such (lower case is hex). */
  CU_ASSERT_EQUAL(hsm__ibm3624_offset(&pvk, "112233445566778G", TEST_DECTAB,
                                      "1234", 4, off),
                  HSM_E_BAD_DATA);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_offset(&pvk, "11223344556677", TEST_DECTAB, "1234", 4, off),
      HSM_E_BAD_DATA);
  CU_ASSERT_EQUAL(hsm__ibm3624_offset(&pvk, "11223344556677ff", TEST_DECTAB,
                                      "1234", 4, off),
                  0);
  /* decimalisation table: 16 decimal digits. */
  CU_ASSERT_EQUAL(
      hsm__ibm3624_offset(&pvk, TEST_VD, "123456789012345A", "1234", 4, off),
      HSM_E_BAD_DATA);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_offset(&pvk, TEST_VD, "123456789012", "1234", 4, off),
      HSM_E_BAD_DATA);
  /* PIN: 4 to 12 digits. */
  CU_ASSERT_EQUAL(
      hsm__ibm3624_offset(&pvk, TEST_VD, TEST_DECTAB, "123", 3, off),
      HSM_E_PIN_LENGTH);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_offset(&pvk, TEST_VD, TEST_DECTAB, "1234567890123", 13, off),
      HSM_E_PIN_LENGTH);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_offset(&pvk, TEST_VD, TEST_DECTAB, "12a4", 4, off),
      HSM_E_PIN_LENGTH);
  CU_ASSERT_STRING_EQUAL(off, "");
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&pvk, TEST_VD, TEST_DECTAB, "12 4", 4, "0000", 4),
      HSM_E_PIN_LENGTH);
  /* offset: decimal digits, check length 4..PIN length. */
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&pvk, TEST_VD, TEST_DECTAB, "1234", 4, "12F4", 4),
      HSM_E_BAD_DATA);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&pvk, TEST_VD, TEST_DECTAB, "1234", 4, "123", 3),
      HSM_E_BAD_DATA);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&pvk, TEST_VD, TEST_DECTAB, "1234", 4, "12345", 5),
      HSM_E_BAD_DATA);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&pvk, TEST_VD, TEST_DECTAB, "1234", 4, NULL, 4),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&pvk, NULL, TEST_DECTAB, "1234", 4, "0000", 4),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_offset(&pvk, TEST_VD, TEST_DECTAB, "1234", 4, NULL),
      HSM_E_INVAL);
  hsm__cipher_free(&pvk);
}

static void test_ibm3624_refuses_non_tdes_key(void) {
  hsm__cipher_t aes;
  static const uint8_t k[16] = {1};
  char off[13];
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, k, 16), 0);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_offset(&aes, TEST_VD, TEST_DECTAB, "1234", 4, off),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(&aes, TEST_VD, TEST_DECTAB, "1234", 4, "0000", 4),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(
      hsm__ibm3624_verify(NULL, TEST_VD, TEST_DECTAB, "1234", 4, "0000", 4),
      HSM_E_INVAL);
  hsm__cipher_free(&aes);
}

/* ------------------------------------------------------------------------ */
/* Visa PVV                                                                  */

/* Every block: the TSP enciphered under the PVK (intermediate) and the
 * PVV. */
static void test_visa_pvv_vectors(void) {
  tv_file_t f;
  load(&f, "vectors/visa-pvv.txt");
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    const char *pan = tv_get(b, "pan"), *pin = tv_get(b, "pin");
    const char *pvki = tv_get(b, "pvki"), *want = tv_get(b, "expected_pvv");
    TV_CHECK(b, pan && pin && pvki && want && tv_get(b, "pvk"));
    if (!pan || !pin || !pvki || !want || !tv_get(b, "pvk"))
      continue;
    hsm__cipher_t pvk;
    key_from(&pvk, tv_get(b, "pvk"));
    uint8_t tsp[8], enc[8], wenc[8];
    TV_CHECK(b, tv_hex(b, "tsp", tsp, 8) == 8);
    TV_CHECK(b, tv_hex(b, "encrypted_tsp", wenc, 8) == 8);
    CU_ASSERT_EQUAL(hsm__ecb(&pvk, 1, tsp, enc, 8), 0);
    TV_CHECK(b, memcmp(enc, wenc, 8) == 0);
    char pvv[5];
    TV_CHECK(b, hsm__visa_pvv(&pvk, pan, strlen(pan), atoi(pvki), pin,
                              strlen(pin), pvv) == 0);
    TV_CHECK(b, strcmp(pvv, want) == 0);
    hsm__cipher_free(&pvk);
  }
  CU_ASSERT_EQUAL(f.nblocks, 5);
  tv_free(&f);
}

/* Only the first four PIN digits enter the TSP; the PVKI and the PAN
 * digits before the check digit do. */
static void test_visa_pvv_depends_on_first_four_pin_digits_pvki_and_pan(void) {
  hsm__cipher_t pvk;
  test_pvk(&pvk);
  char a[5], b[5];
  const char *pan = "4321000000001234";
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, pan, 16, 1, "1234", 4, a), 0);
  CU_ASSERT_STRING_EQUAL(a, "6629");
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, pan, 16, 1, "123499", 6, b), 0);
  CU_ASSERT_STRING_EQUAL(a, b);
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, "4321000000001235", 16, 1, "1234", 4, b),
                  0);
  CU_ASSERT_STRING_EQUAL(a, b);
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, pan, 16, 2, "1234", 4, b), 0);
  CU_ASSERT_STRING_NOT_EQUAL(a, b);
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, "4321000000001244", 16, 1, "1234", 4, b),
                  0);
  CU_ASSERT_STRING_NOT_EQUAL(a, b);
  hsm__cipher_free(&pvk);
}

static void test_visa_pvv_refuses_malformed_inputs(void) {
  hsm__cipher_t pvk, pvk3, aes;
  test_pvk(&pvk);
  key_from(&pvk3, "0123456789ABCDEFFEDCBA98765432100123456789ABCDEF");
  static const uint8_t k[16] = {1};
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, k, 16), 0);
  char pvv[5] = "XXXX";
  const char *pan = "4321000000001234";
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, "43210000001", 11, 1, "1234", 4, pvv),
                  HSM_E_BAD_PAN);
  CU_ASSERT_STRING_EQUAL(pvv, "");
  CU_ASSERT_EQUAL(
      hsm__visa_pvv(&pvk, "43210000000012341234", 20, 1, "1234", 4, pvv),
      HSM_E_BAD_PAN);
  CU_ASSERT_EQUAL(
      hsm__visa_pvv(&pvk, "432100000000123X", 16, 1, "1234", 4, pvv),
      HSM_E_BAD_PAN);
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, pan, 16, -1, "1234", 4, pvv),
                  HSM_E_BAD_DATA);
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, pan, 16, 10, "1234", 4, pvv),
                  HSM_E_BAD_DATA);
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, pan, 16, 1, "123", 3, pvv),
                  HSM_E_PIN_LENGTH);
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, pan, 16, 1, "1234567890123", 13, pvv),
                  HSM_E_PIN_LENGTH);
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, pan, 16, 1, "12#4", 4, pvv),
                  HSM_E_PIN_LENGTH);
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk3, pan, 16, 1, "1234", 4, pvv),
                  HSM_E_KEY_LENGTH);
  CU_ASSERT_EQUAL(hsm__visa_pvv(&aes, pan, 16, 1, "1234", 4, pvv), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__visa_pvv(&pvk, pan, 16, 1, "1234", 4, NULL),
                  HSM_E_INVAL);
  hsm__cipher_free(&pvk);
  hsm__cipher_free(&pvk3);
  hsm__cipher_free(&aes);
}

/* ------------------------------------------------------------------------ */
/* Visa CVV                                                                  */

static void cvk_from(hsm__cipher_t *c, const tv_block_t *b) {
  char hex[33];
  const char *ka = tv_get(b, "cvk_a"), *kb = tv_get(b, "cvk_b");
  CU_ASSERT_FATAL(ka && kb && strlen(ka) == 16 && strlen(kb) == 16);
  snprintf(hex, sizeof hex, "%s%s", ka, kb);
  key_from(c, hex);
}

/* Every block: CVV from expiry_yymm and service_code where the block has
 * them (with the stated intermediates: DES(A, block1) and the final
 * block), and the CVV2 (service 000) / iCVV (service 999) values of the
 * regression block. */
static void test_visa_cvv_vectors(void) {
  tv_file_t f;
  size_t cvv = 0, cvv2 = 0, icvv = 0;
  load(&f, "vectors/visa-cvv.txt");
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    const char *pan = tv_get(b, "pan");
    hsm__cipher_t cvk;
    char out[4];
    TV_CHECK(b, pan != NULL);
    if (!pan)
      continue;
    cvk_from(&cvk, b);
    const char *want = tv_get(b, "expected_cvv");
    if (want) {
      const char *exp = tv_get(b, "expiry_yymm");
      const char *svc = tv_get(b, "service_code");
      TV_CHECK(b, exp && svc && strlen(exp) == 4 && strlen(svc) == 3);
      if (!exp || !svc) {
        hsm__cipher_free(&cvk);
        continue;
      }
      TV_CHECK(b, hsm__visa_cvv(&cvk, pan, strlen(pan), exp, svc, out) == 0);
      TV_CHECK(b, strcmp(out, want) == 0);
      cvv++;
    }
    uint8_t b1[8];
    if (tv_hex(b, "block1", b1, 8) == 8) {
      uint8_t b2[8], w1[8], wf[8], a[8], t[8];
      TV_CHECK(b, tv_hex(b, "block2", b2, 8) == 8);
      TV_CHECK(b, tv_hex(b, "des_cvka_block1", w1, 8) == 8);
      TV_CHECK(b, tv_hex(b, "final_block", wf, 8) == 8);
      CU_ASSERT_FATAL(tu_unhex(tv_get(b, "cvk_a"), a, 8) == 8);
      CU_ASSERT_EQUAL(hsm__ecb_raw(HSM__TDES, a, 8, 1, b1, t, 8), 0);
      TV_CHECK(b, memcmp(t, w1, 8) == 0);
      for (size_t j = 0; j < 8; j++)
        t[j] ^= b2[j];
      CU_ASSERT_EQUAL(hsm__ecb(&cvk, 1, t, t, 8), 0);
      TV_CHECK(b, memcmp(t, wf, 8) == 0);
    }
    if ((want = tv_get(b, "cvv2_service_code_000_expiry_8701")) != NULL) {
      TV_CHECK(b,
               hsm__visa_cvv(&cvk, pan, strlen(pan), "8701", "000", out) == 0);
      TV_CHECK(b, strcmp(out, want) == 0);
      cvv2++;
    }
    if ((want = tv_get(b, "icvv_service_code_999_expiry_8701")) != NULL) {
      TV_CHECK(b,
               hsm__visa_cvv(&cvk, pan, strlen(pan), "8701", "999", out) == 0);
      TV_CHECK(b, strcmp(out, want) == 0);
      icvv++;
    }
    hsm__cipher_free(&cvk);
  }
  CU_ASSERT_EQUAL(f.nblocks, 11);
  CU_ASSERT_EQUAL(cvv, 10);
  CU_ASSERT_EQUAL(cvv2, 1);
  CU_ASSERT_EQUAL(icvv, 1);
  tv_free(&f);
}

static void test_visa_cvv_refuses_malformed_inputs(void) {
  hsm__cipher_t cvk, cvk3, aes;
  key_from(&cvk, "0123456789ABCDEFFEDCBA9876543210");
  key_from(&cvk3, "0123456789ABCDEFFEDCBA98765432100123456789ABCDEF");
  static const uint8_t k[16] = {1};
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, k, 16), 0);
  char out[4] = "XXX";
  const char *pan = "4123456789012345";
  CU_ASSERT_EQUAL(hsm__visa_cvv(&cvk, pan, 16, "87A1", "101", out),
                  HSM_E_BAD_DATA);
  CU_ASSERT_STRING_EQUAL(out, "");
  CU_ASSERT_EQUAL(hsm__visa_cvv(&cvk, pan, 16, "8701", "1 1", out),
                  HSM_E_BAD_DATA);
  CU_ASSERT_EQUAL(hsm__visa_cvv(&cvk, "41234567890", 11, "8701", "101", out),
                  HSM_E_BAD_PAN);
  CU_ASSERT_EQUAL(
      hsm__visa_cvv(&cvk, "41234567890123456789", 20, "8701", "101", out),
      HSM_E_BAD_PAN);
  CU_ASSERT_EQUAL(
      hsm__visa_cvv(&cvk, "412345678901234=", 16, "8701", "101", out),
      HSM_E_BAD_PAN);
  CU_ASSERT_EQUAL(hsm__visa_cvv(&cvk3, pan, 16, "8701", "101", out),
                  HSM_E_KEY_LENGTH);
  CU_ASSERT_EQUAL(hsm__visa_cvv(&aes, pan, 16, "8701", "101", out),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__visa_cvv(&cvk, pan, 16, NULL, "101", out), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__visa_cvv(&cvk, pan, 16, "8701", "101", NULL),
                  HSM_E_INVAL);
  /* 19 digits fill the 32-digit data with room to spare. */
  CU_ASSERT_EQUAL(
      hsm__visa_cvv(&cvk, "4123456789012345678", 19, "8701", "101", out), 0);
  CU_ASSERT_EQUAL(strlen(out), 3);
  hsm__cipher_free(&cvk);
  hsm__cipher_free(&cvk3);
  hsm__cipher_free(&aes);
}

int main(void) {
  static const tu_test_t tests[] = {
      {"ibm3624_vectors_offset_and_verify",
       test_ibm3624_vectors_offset_and_verify},
      {"ibm3624_long_pin_every_digit_change_fails",
       test_ibm3624_long_pin_every_digit_change_fails},
      {"ibm3624_check_length_compares_rightmost_digits",
       test_ibm3624_check_length_compares_rightmost_digits},
      {"ibm3624_refuses_malformed_inputs",
       test_ibm3624_refuses_malformed_inputs},
      {"ibm3624_refuses_non_tdes_key", test_ibm3624_refuses_non_tdes_key},
      {"visa_pvv_vectors", test_visa_pvv_vectors},
      {"visa_pvv_depends_on_first_four_pin_digits_pvki_and_pan",
       test_visa_pvv_depends_on_first_four_pin_digits_pvki_and_pan},
      {"visa_pvv_refuses_malformed_inputs",
       test_visa_pvv_refuses_malformed_inputs},
      {"visa_cvv_vectors", test_visa_cvv_vectors},
      {"visa_cvv_refuses_malformed_inputs",
       test_visa_cvv_refuses_malformed_inputs},
      {NULL, NULL}};
  tu_init();
  tu_add_suite("hsm_pinverify", tests);
  return tu_run();
}
