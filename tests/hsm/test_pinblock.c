/*
 * test_pinblock.c — ISO 9564-1 PIN blocks (hsm/pinblock.c): every block of
 * the format 0, 1, 3 and 4 vector files, the PIN blocks of the TDES DUKPT
 * file (under the derived PIN keys it states) and the PIN translation
 * cases; then the refusals: lengths, digits, PANs, format codes, fill, and
 * every single-nibble corruption of a PIN field, whose outcome is stated
 * exactly for each format.
 */
#include "crypto.h"
#include "hsm.h"
#include "testutil.h"
#include "vectors.h"

#include <stdio.h>
#include <string.h>

/* An assertion that names the vector block when it fails. */
#define TV_CHECK(b, cond)                                                      \
  do {                                                                         \
    int ok_ = (cond) ? 1 : 0;                                                  \
    CU_assertImplementation(ok_, __LINE__, #cond, __FILE__, "", CU_FALSE);     \
    if (!ok_)                                                                  \
      fprintf(stderr, "\n    in vector %s\n", tv_get((b), "name"));            \
  } while (0)

static const char *const TEST_PAN = "5555555551234567";
static const uint8_t TEST_AES_KEY[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55,
                                         0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB,
                                         0xCC, 0xDD, 0xEE, 0xFF};

static void load(tv_file_t *f, const char *name) {
  CU_ASSERT_EQUAL_FATAL(tv_load(f, name), 0);
  CU_ASSERT_FATAL(f->nblocks > 0);
}

/* "ABCD" -> {0x0A, 0x0B, 0x0C, 0x0D}: the fill argument of formats 1 and 3
 * is one byte per nibble. */
static size_t fill_from_nibbles(const char *hex, uint8_t *out, size_t cap) {
  size_t n = 0;
  for (; hex && *hex && n < cap; hex++) {
    char c = *hex;
    out[n++] = (uint8_t)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
  }
  return n;
}

static int nib_get(const uint8_t *b, size_t i) {
  return i % 2 ? b[i / 2] & 0x0F : b[i / 2] >> 4;
}

static void nib_xor(uint8_t *b, size_t i, int d) {
  b[i / 2] ^= (uint8_t)(i % 2 ? d : d << 4);
}

/* The ISO 9564-1 format 0/3 PAN field, written from the standard: four
 * zero nibbles, then the 12 PAN digits before the check digit. */
static void iso0_pan_field(const char *pan, uint8_t out[8]) {
  size_t n = strlen(pan);
  char hex[17] = "0000";
  memcpy(hex + 4, pan + n - 13, 12);
  hex[16] = '\0';
  CU_ASSERT_FATAL(tu_unhex(hex, out, 8) == 8);
}

static void tdes(const uint8_t *key, size_t keylen, int enc, const uint8_t *in,
                 uint8_t *out) {
  CU_ASSERT_EQUAL_FATAL(hsm__ecb_raw(HSM__TDES, key, keylen, enc, in, out, 8),
                        0);
}

/* The PAN of a block: "pan", or the Thales 12-digit account number with a
 * check digit appended (the format leaves the check digit out, so its value
 * does not matter). */
static const char *block_pan(const tv_block_t *b, char *buf, size_t cap) {
  const char *pan = tv_get(b, "pan");
  const char *acct = tv_get(b, "account_number_12");
  if (pan || !acct)
    return pan;
  snprintf(buf, cap, "%s0", acct);
  return buf;
}

/* ------------------------------------------------------------------------ */
/* Known answers                                                             */

/* Clear block, decode, and where a key is given the TDES-enciphered block,
 * for one vector of format 0, 1 or 3. */
static void check_clear_vector(int format, const tv_block_t *b) {
  char panbuf[32], got[13];
  size_t gotlen = 0;
  uint8_t want[8], out[8], fill[16], key[24], enc[8], dec[8];
  const char *pin = tv_get(b, "pin");
  const char *pan = block_pan(b, panbuf, sizeof panbuf);
  size_t panlen = pan ? strlen(pan) : 0;
  size_t nfill = fill_from_nibbles(tv_get(b, "fill"), fill, sizeof fill);
  TV_CHECK(b, pin != NULL);
  TV_CHECK(b, tv_hex(b, "expected_clear_pin_block", want, 8) == 8);
  if (!pin)
    return;
  if (format != 0)
    TV_CHECK(b, nfill == 14 - strlen(pin));
  TV_CHECK(b, hsm__pinblock_encode(format, pin, strlen(pin), pan, panlen,
                                   format ? fill : NULL, out) == 0);
  TV_CHECK(b, memcmp(out, want, 8) == 0);
  TV_CHECK(b,
           hsm__pinblock_decode(format, want, pan, panlen, got, &gotlen) == 0);
  TV_CHECK(b, gotlen == strlen(pin) && strcmp(got, pin) == 0);

  uint8_t pf[8];
  if (format == 0 && tv_hex(b, "pan_field", pf, 8) == 8) {
    /* The vector's PAN field turns the clear block back into the PIN
     * field the standard describes. */
    uint8_t field[8];
    char hex[17] = {0};
    snprintf(hex, sizeof hex, "0%X%sFFFFFFFFFFFF", (unsigned)strlen(pin), pin);
    hex[16] = '\0';
    CU_ASSERT_FATAL(tu_unhex(hex, field, 8) == 8);
    for (size_t i = 0; i < 8; i++)
      field[i] ^= pf[i];
    TV_CHECK(b, memcmp(field, want, 8) == 0);
  }

  size_t klen = tv_hex(b, "key", key, sizeof key);
  if (klen == (size_t)-1)
    return;
  TV_CHECK(b, tv_hex(b, "expected_encrypted_pin_block", enc, 8) == 8);
  tdes(key, klen, 1, out, dec);
  TV_CHECK(b, memcmp(dec, enc, 8) == 0);
  tdes(key, klen, 0, enc, dec);
  TV_CHECK(b,
           hsm__pinblock_decode(format, dec, pan, panlen, got, &gotlen) == 0);
  TV_CHECK(b, strcmp(got, pin) == 0);
}

static void test_iso0_vectors_encode_decode_and_encipher(void) {
  tv_file_t f;
  load(&f, "vectors/iso9564-pinblock-format0.txt");
  for (size_t i = 0; i < f.nblocks; i++)
    check_clear_vector(0, &f.blocks[i]);
  CU_ASSERT_EQUAL(f.nblocks, 9);
  tv_free(&f);
}

/* The format 1 vectors state the fill their source used, so encoding with
 * that fill must reproduce the block exactly. */
static void test_iso1_vectors_encode_decode_and_encipher(void) {
  tv_file_t f;
  load(&f, "vectors/iso9564-pinblock-format1.txt");
  for (size_t i = 0; i < f.nblocks; i++)
    check_clear_vector(1, &f.blocks[i]);
  CU_ASSERT_EQUAL(f.nblocks, 3);
  tv_free(&f);
}

/* Decode-only blocks (clear_pin_block, expected_pin, expected_fill) are
 * decoded, then re-encoded with their fill; the others as for format 0. */
static void test_iso3_vectors_encode_decode_and_encipher(void) {
  tv_file_t f;
  load(&f, "vectors/iso9564-pinblock-format3.txt");
  size_t decode_only = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    uint8_t blk[8], out[8], fill[16];
    char got[13];
    size_t gotlen = 0;
    if (tv_hex(b, "clear_pin_block", blk, 8) != 8) {
      check_clear_vector(3, b);
      continue;
    }
    decode_only++;
    const char *pan = tv_get(b, "pan");
    const char *pin = tv_get(b, "expected_pin");
    size_t nfill = fill_from_nibbles(tv_get(b, "expected_fill"), fill, 16);
    TV_CHECK(b, pan && pin);
    if (!pan || !pin)
      continue;
    TV_CHECK(b,
             hsm__pinblock_decode(3, blk, pan, strlen(pan), got, &gotlen) == 0);
    TV_CHECK(b, gotlen == strlen(pin) && strcmp(got, pin) == 0);
    TV_CHECK(b, nfill == 14 - strlen(pin));
    TV_CHECK(b, hsm__pinblock_encode(3, pin, strlen(pin), pan, strlen(pan),
                                     fill, out) == 0);
    TV_CHECK(b, memcmp(out, blk, 8) == 0);
  }
  CU_ASSERT_EQUAL(decode_only, 4);
  CU_ASSERT_EQUAL(f.nblocks, 5);
  tv_free(&f);
}

/* E(K, E(K, field) XOR panfield), computed here with hsm__ecb from a given
 * PAN field, independently of the library's PAN-field encoding. */
static void iso4_by_hand(hsm__cipher_t *aes, const uint8_t field[16],
                         const uint8_t panf[16], uint8_t out[16]) {
  uint8_t t[16];
  CU_ASSERT_EQUAL_FATAL(hsm__ecb(aes, 1, field, t, 16), 0);
  for (size_t i = 0; i < 16; i++)
    t[i] ^= panf[i];
  CU_ASSERT_EQUAL_FATAL(hsm__ecb(aes, 1, t, out, 16), 0);
}

/* Every block: the enciphered block (fill = random_fill, or the second half
 * of plain_pin_field when the vector states no separate fill), decipher,
 * intermediate A, and the plain PIN field and PAN field recovered from the
 * block by hand.  The PAN-field-only block is checked by enciphering a
 * fixed PIN under a test key with the library and by hand with the
 * vector's PAN field. */
static void test_iso4_vectors_encipher_decipher(void) {
  tv_file_t f;
  load(&f, "vectors/iso9564-pinblock-format4-aes.txt");
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    hsm__cipher_t aes;
    uint8_t key[32], want[16], out[16], plain[16], fill[8], panf[16];
    uint8_t tmp[16];
    char got[13];
    size_t gotlen = 0;
    const char *pin = tv_get(b, "pin"), *pan = tv_get(b, "pan");
    size_t klen = tv_hex(b, "key", key, sizeof key);
    int have_panf = tv_hex(b, "pan_field", panf, 16) == 16;
    if (!have_panf)
      have_panf = tv_hex(b, "expected_pan_field", panf, 16) == 16;
    TV_CHECK(b, pan != NULL);
    if (!pan)
      continue;
    if (klen == (size_t)-1) {
      static const uint8_t fixed[16] = {0x44, 0x12, 0x34, 0xAA, 0xAA, 0xAA,
                                        0xAA, 0xAA, 1,    2,    3,    4,
                                        5,    6,    7,    8};
      TV_CHECK(b, have_panf);
      CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, TEST_AES_KEY, 16),
                            0);
      TV_CHECK(b, hsm__iso4_encipher(&aes, "1234", 4, pan, strlen(pan),
                                     fixed + 8, out) == 0);
      iso4_by_hand(&aes, fixed, panf, want);
      TV_CHECK(b, memcmp(out, want, 16) == 0);
      hsm__cipher_free(&aes);
      continue;
    }
    TV_CHECK(b, pin != NULL);
    TV_CHECK(b, tv_hex(b, "expected_encrypted_pin_block", want, 16) == 16);
    TV_CHECK(b, tv_hex(b, "plain_pin_field", plain, 16) == 16);
    if (!pin)
      continue;
    if (tv_hex(b, "random_fill", fill, 8) != 8)
      memcpy(fill, plain + 8, 8);
    CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, key, klen), 0);
    TV_CHECK(b, hsm__iso4_encipher(&aes, pin, strlen(pin), pan, strlen(pan),
                                   fill, out) == 0);
    TV_CHECK(b, memcmp(out, want, 16) == 0);
    TV_CHECK(
        b, hsm__iso4_decipher(&aes, want, pan, strlen(pan), got, &gotlen) == 0);
    TV_CHECK(b, gotlen == strlen(pin) && strcmp(got, pin) == 0);
    if (tv_hex(b, "intermediate_A", tmp, 16) == 16) {
      uint8_t a[16];
      CU_ASSERT_EQUAL(hsm__ecb(&aes, 1, plain, a, 16), 0);
      TV_CHECK(b, memcmp(a, tmp, 16) == 0);
    }
    if (have_panf) {
      CU_ASSERT_EQUAL(hsm__ecb(&aes, 0, want, tmp, 16), 0);
      for (size_t j = 0; j < 16; j++)
        tmp[j] ^= panf[j];
      CU_ASSERT_EQUAL(hsm__ecb(&aes, 0, tmp, tmp, 16), 0);
      TV_CHECK(b, memcmp(tmp, plain, 16) == 0);
    }
    hsm__cipher_free(&aes);
  }
  CU_ASSERT_EQUAL(f.nblocks, 5);
  tv_free(&f);
}

/* The TDES DUKPT file gives, per KSN, the derived PIN key and the format 0
 * block enciphered under it: encode + encipher with that key must give it.
 * The IPEK block carries no PIN block and is skipped (key derivation is
 * dukpt.c's, tested there). */
static void test_iso0_dukpt_file_pin_blocks_under_derived_keys(void) {
  tv_file_t f;
  size_t used = 0;
  load(&f, "vectors/dukpt-tdes-x9.24-1.txt");
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    uint8_t key[16], want[8], clear[8], enc[8], tmp[8];
    char got[13];
    size_t gotlen = 0;
    const char *pin = tv_get(b, "pin"), *pan = tv_get(b, "pan");
    if (tv_hex(b, "expected_encrypted_pin_block", want, 8) != 8)
      continue;
    used++;
    TV_CHECK(b, pin && pan);
    TV_CHECK(b, tv_hex(b, "expected_pin_key", key, 16) == 16);
    if (!pin || !pan)
      continue;
    TV_CHECK(b, hsm__pinblock_encode(0, pin, strlen(pin), pan, strlen(pan),
                                     NULL, clear) == 0);
    if (tv_hex(b, "clear_pin_block_iso0", tmp, 8) == 8)
      TV_CHECK(b, memcmp(tmp, clear, 8) == 0);
    tdes(key, 16, 1, clear, enc);
    TV_CHECK(b, memcmp(enc, want, 8) == 0);
    tdes(key, 16, 0, want, tmp);
    TV_CHECK(b,
             hsm__pinblock_decode(0, tmp, pan, strlen(pan), got, &gotlen) == 0);
    TV_CHECK(b, strcmp(got, pin) == 0);
  }
  CU_ASSERT_EQUAL(used, f.nblocks - 1);
  tv_free(&f);
}

/* Translation: decipher the source block (TDES format 0, or AES format 4
 * when the block is 16 bytes), decode, re-encode (format 3 when a
 * destination fill is given, else format 0), encipher under the
 * destination key.  Source keys are given (source_key, or the derived
 * DUKPT PIN key), so no derivation happens here. */
static int translate(const tv_block_t *b, const uint8_t *src, size_t srclen,
                     uint8_t dst[8], char pin[13]) {
  uint8_t skey[32], dkey[24], clear[8], fill[16];
  size_t pinlen = 0;
  const char *pan = tv_get(b, "pan");
  size_t sk = tv_hex(b, "source_key", skey, sizeof skey);
  if (sk == (size_t)-1)
    sk = tv_hex(b, "derived_pin_key", skey, sizeof skey);
  size_t dk = tv_hex(b, "destination_key", dkey, sizeof dkey);
  if (!pan || sk == (size_t)-1 || dk == (size_t)-1)
    return -100;
  int rc;
  if (srclen == 16) {
    hsm__cipher_t aes;
    if (hsm__cipher_init(&aes, HSM__AES, skey, sk) != 0)
      return -101;
    rc = hsm__iso4_decipher(&aes, src, pan, strlen(pan), pin, &pinlen);
    hsm__cipher_free(&aes);
  } else {
    tdes(skey, sk, 0, src, clear);
    rc = hsm__pinblock_decode(0, clear, pan, strlen(pan), pin, &pinlen);
  }
  if (rc)
    return rc;
  size_t nfill = fill_from_nibbles(tv_get(b, "destination_fill"), fill, 16);
  int dfmt = nfill ? 3 : 0;
  rc = hsm__pinblock_encode(dfmt, pin, pinlen, pan, strlen(pan),
                            nfill ? fill : NULL, clear);
  if (rc)
    return rc;
  uint8_t want_clear[8];
  if (tv_hex(b, "expected_destination_clear_block", want_clear, 8) == 8 &&
      memcmp(want_clear, clear, 8) != 0)
    return -102;
  tdes(dkey, dk, 1, clear, dst);
  return 0;
}

static void test_translation_vectors_reencode_pin(void) {
  tv_file_t f;
  load(&f, "vectors/pin-translation-composite.txt");
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    uint8_t src[16], want[8], out[8];
    char pin[13];
    size_t srclen = tv_hex(b, "source_pin_block", src, sizeof src);
    TV_CHECK(b, srclen == 8 || srclen == 16);
    TV_CHECK(b, tv_hex(b, "expected_destination_pin_block", want, 8) == 8);
    TV_CHECK(b, translate(b, src, srclen, out, pin) == 0);
    TV_CHECK(b, memcmp(out, want, 8) == 0);
    const char *vpin = tv_get(b, "pin");
    if (vpin)
      TV_CHECK(b, strcmp(pin, vpin) == 0);
  }
  CU_ASSERT_EQUAL(f.nblocks, 4);
  tv_free(&f);
}

/* A corrupted source block must not come out as another valid block: every
 * single-bit corruption of each translation source is refused.  (A
 * flipped ciphertext bit scrambles the whole clear block; the chance that
 * scrambled data passes the format checks is below 2^-20 per block, and
 * with fixed vectors the outcome is fixed.) */
static void test_translation_refuses_every_single_bit_corruption(void) {
  tv_file_t f;
  load(&f, "vectors/pin-translation-composite.txt");
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    uint8_t src[16], out[8];
    char pin[13];
    size_t srclen = tv_hex(b, "source_pin_block", src, sizeof src);
    if (srclen != 8 && srclen != 16) {
      TV_CHECK(b, 0);
      continue;
    }
    for (size_t bit = 0; bit < srclen * 8; bit++) {
      src[bit / 8] ^= (uint8_t)(0x80 >> bit % 8);
      TV_CHECK(b, translate(b, src, srclen, out, pin) == HSM_E_BAD_PIN_BLOCK);
      src[bit / 8] ^= (uint8_t)(0x80 >> bit % 8);
    }
  }
  tv_free(&f);
}

/* ------------------------------------------------------------------------ */
/* Corruption: every nibble of the PIN field, every other value              */

/* Formats 0, 1 and 3.  Mutating nibble p of the clear block by XOR with d
 * changes the PIN field nibble from u to v = u ^ d.  Decode must:
 *   - accept, with that one digit changed, a PIN digit replaced by another
 *     decimal digit (no format has redundancy over the digits);
 *   - format 1: accept a changed fill nibble (any value, same PIN), and a
 *     changed length only if every nibble it now covers is a decimal digit
 *     (the PIN then being those digits);
 *   - format 3: accept a fill nibble changed to another value in A-F (same
 *     PIN);
 *   - refuse everything else: control nibble, every other length (in
 *     formats 0 and 3 a new length always covers a fill nibble or leaves a
 *     digit in the fill), a PIN digit made A-F, a format 0 fill nibble other
 *     than F, a format 3 fill nibble below A. */
static void mutation_property(int format, const char *pin, const char *pan) {
  uint8_t blk[8], panf[8] = {0}, fill[14];
  size_t pinlen = strlen(pin), panlen = pan ? strlen(pan) : 0;
  for (size_t i = 0; i < sizeof fill; i++)
    fill[i] = (uint8_t)(format == 3 ? 0x0A + i % 6 : (i * 7 + 3) % 16);
  CU_ASSERT_EQUAL_FATAL(
      hsm__pinblock_encode(format, pin, pinlen, pan, panlen, fill, blk), 0);
  if (format != 1)
    iso0_pan_field(pan, panf);
  unsigned accepted = 0, refused = 0;
  for (size_t p = 0; p < 16; p++)
    for (int d = 1; d < 16; d++) {
      uint8_t m[8], field[8];
      char got[13], want[13];
      size_t gotlen = 99;
      memcpy(m, blk, 8);
      nib_xor(m, p, d);
      for (size_t i = 0; i < 8; i++)
        field[i] = m[i] ^ panf[i];
      int v = nib_get(field, p);
      int accept = 0;
      memcpy(want, pin, pinlen + 1);
      if (p >= 2 && p < 2 + pinlen) {
        accept = v <= 9;
        want[p - 2] = (char)('0' + v);
      } else if (p >= 2 + pinlen) {
        accept = format == 1 || (format == 3 && v >= 10);
      } else if (p == 1 && format == 1 && v >= 4 && v <= 12) {
        accept = 1;
        for (int i = 0; i < v; i++) {
          int n = nib_get(field, 2 + (size_t)i);
          accept &= n <= 9;
          want[i] = (char)('0' + n);
        }
        want[v] = '\0';
      }
      int rc = hsm__pinblock_decode(format, m, pan, panlen, got, &gotlen);
      if (accept) {
        accepted++;
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_STRING_EQUAL(got, want);
        CU_ASSERT_EQUAL(gotlen, strlen(want));
      } else {
        refused++;
        CU_ASSERT_EQUAL(rc, HSM_E_BAD_PIN_BLOCK);
        CU_ASSERT_EQUAL(gotlen, 0);
      }
    }
  CU_ASSERT_EQUAL(accepted + refused, 16 * 15);
  CU_ASSERT(refused > 0);
}

static void
test_iso0_every_nibble_mutation_refused_unless_digit_to_digit(void) {
  mutation_property(0, "1234", TEST_PAN);
  mutation_property(0, "90817", TEST_PAN);
  mutation_property(0, "123456789012", TEST_PAN);
}

static void test_iso1_every_nibble_mutation_follows_format1_property(void) {
  mutation_property(1, "1234", NULL);
  mutation_property(1, "5678901", NULL);
  mutation_property(1, "123456789012", NULL);
}

static void test_iso3_every_nibble_mutation_refused_unless_digit_or_fill(void) {
  mutation_property(3, "1234", TEST_PAN);
  mutation_property(3, "90817", TEST_PAN);
  mutation_property(3, "123456789012", "43219876543210987");
}

/* Format 4, on the plain PIN field (enciphered by hand with the vector's
 * PAN field): nibbles 0-15 as format 0 with fill A instead of F (so only a
 * digit-to-digit change is accepted); nibbles 16-31 are the random half,
 * which carries no rule: any change is accepted with the same PIN. */
static void
test_iso4_every_nibble_mutation_refused_unless_digit_or_random(void) {
  tv_file_t f;
  load(&f, "vectors/iso9564-pinblock-format4-aes.txt");
  const tv_block_t *b = NULL;
  for (size_t i = 0; i < f.nblocks; i++)
    if (strcmp(tv_get(&f.blocks[i], "name"), "iso4-aes128-ep2") == 0)
      b = &f.blocks[i];
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  uint8_t key[16], plain[16], panf[16];
  const char *pan = tv_get(b, "pan");
  CU_ASSERT_FATAL(tv_hex(b, "key", key, 16) == 16);
  CU_ASSERT_FATAL(tv_hex(b, "plain_pin_field", plain, 16) == 16);
  CU_ASSERT_FATAL(tv_hex(b, "pan_field", panf, 16) == 16);
  const char *pin = tv_get(b, "pin");
  CU_ASSERT_FATAL(pan && pin && strlen(pin) <= 12);
  if (!pan || !pin)
    return;
  size_t pinlen = strlen(pin);
  hsm__cipher_t aes;
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, key, 16), 0);
  unsigned accepted = 0;
  for (size_t p = 0; p < 32; p++)
    for (int d = 1; d < 16; d++) {
      uint8_t m[16], blk[16];
      char got[13], want[13];
      size_t gotlen = 99;
      memcpy(m, plain, 16);
      nib_xor(m, p, d);
      iso4_by_hand(&aes, m, panf, blk);
      int v = nib_get(m, p), accept = p >= 16;
      memcpy(want, pin, pinlen + 1);
      if (p >= 2 && p < 2 + pinlen) {
        accept = v <= 9;
        want[p - 2] = (char)('0' + v);
      }
      int rc = hsm__iso4_decipher(&aes, blk, pan, strlen(pan), got, &gotlen);
      if (accept) {
        accepted++;
        CU_ASSERT_EQUAL(rc, 0);
        CU_ASSERT_STRING_EQUAL(got, want);
      } else {
        CU_ASSERT_EQUAL(rc, HSM_E_BAD_PIN_BLOCK);
        CU_ASSERT_EQUAL(gotlen, 0);
      }
    }
  /* 16 random-half nibbles x 15, plus per PIN digit the values 0-9 other
   * than its own. */
  CU_ASSERT_EQUAL(accepted, 16 * 15 + pinlen * 9);
  hsm__cipher_free(&aes);
  tv_free(&f);
}

static void test_iso4_decipher_refuses_every_single_bit_flip(void) {
  hsm__cipher_t aes;
  uint8_t blk[16];
  char got[13];
  size_t gotlen;
  static const uint8_t fill[8] = {9, 8, 7, 6, 5, 4, 3, 2};
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, TEST_AES_KEY, 16), 0);
  CU_ASSERT_EQUAL_FATAL(hsm__iso4_encipher(&aes, "271828", 6, TEST_PAN,
                                           strlen(TEST_PAN), fill, blk),
                        0);
  for (size_t bit = 0; bit < 128; bit++) {
    blk[bit / 8] ^= (uint8_t)(0x80 >> bit % 8);
    CU_ASSERT_EQUAL(
        hsm__iso4_decipher(&aes, blk, TEST_PAN, strlen(TEST_PAN), got, &gotlen),
        HSM_E_BAD_PIN_BLOCK);
    blk[bit / 8] ^= (uint8_t)(0x80 >> bit % 8);
  }
  CU_ASSERT_EQUAL(
      hsm__iso4_decipher(&aes, blk, TEST_PAN, strlen(TEST_PAN), got, &gotlen),
      0);
  CU_ASSERT_STRING_EQUAL(got, "271828");
  hsm__cipher_free(&aes);
}

/* ------------------------------------------------------------------------ */
/* Named refusals                                                            */

static void test_iso0_decode_refuses_bad_control_nibble(void) {
  uint8_t blk[8];
  char got[13];
  size_t gotlen;
  CU_ASSERT_FATAL(tu_unhex("041261AAAAEDCBA9", blk, 8) == 8);
  CU_ASSERT_EQUAL(hsm__pinblock_decode(0, blk, TEST_PAN, 16, got, &gotlen), 0);
  /* The same block read as format 3 or 1 has the wrong control nibble. */
  CU_ASSERT_EQUAL(hsm__pinblock_decode(3, blk, TEST_PAN, 16, got, &gotlen),
                  HSM_E_BAD_PIN_BLOCK);
  CU_ASSERT_EQUAL(hsm__pinblock_decode(1, blk, NULL, 0, got, &gotlen),
                  HSM_E_BAD_PIN_BLOCK);
  blk[0] = 0x24;
  CU_ASSERT_EQUAL(hsm__pinblock_decode(0, blk, TEST_PAN, 16, got, &gotlen),
                  HSM_E_BAD_PIN_BLOCK);
}

static void test_decode_refuses_pin_length_nibble_outside_4_to_12(void) {
  /* Format 1 blocks of all-digit content, so only the length is wrong. */
  static const char *const bad[] = {"1012345678901234", "1312345678901234",
                                    "1D12345678901234", "1F12345678901234"};
  char got[13];
  size_t gotlen;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint8_t blk[8];
    CU_ASSERT_FATAL(tu_unhex(bad[i], blk, 8) == 8);
    CU_ASSERT_EQUAL(hsm__pinblock_decode(1, blk, NULL, 0, got, &gotlen),
                    HSM_E_BAD_PIN_BLOCK);
  }
  uint8_t ok[8];
  CU_ASSERT_FATAL(tu_unhex("1C12345678901234", ok, 8) == 8);
  CU_ASSERT_EQUAL(hsm__pinblock_decode(1, ok, NULL, 0, got, &gotlen), 0);
  CU_ASSERT_STRING_EQUAL(got, "123456789012");
}

static void test_iso0_decode_refuses_non_digit_pin_nibble(void) {
  uint8_t panf[8], blk[8];
  char got[13];
  size_t gotlen;
  iso0_pan_field(TEST_PAN, panf);
  CU_ASSERT_FATAL(tu_unhex("04123AFFFFFFFFFF", blk, 8) == 8);
  for (size_t i = 0; i < 8; i++)
    blk[i] ^= panf[i];
  CU_ASSERT_EQUAL(hsm__pinblock_decode(0, blk, TEST_PAN, 16, got, &gotlen),
                  HSM_E_BAD_PIN_BLOCK);
}

static void test_iso0_decode_refuses_fill_other_than_f(void) {
  uint8_t panf[8], blk[8];
  char got[13];
  size_t gotlen;
  iso0_pan_field(TEST_PAN, panf);
  CU_ASSERT_FATAL(tu_unhex("041234FFFFFFFFFE", blk, 8) == 8);
  for (size_t i = 0; i < 8; i++)
    blk[i] ^= panf[i];
  CU_ASSERT_EQUAL(hsm__pinblock_decode(0, blk, TEST_PAN, 16, got, &gotlen),
                  HSM_E_BAD_PIN_BLOCK);
}

static void test_iso3_decode_refuses_fill_nibble_below_a(void) {
  uint8_t panf[8], blk[8];
  char got[13];
  size_t gotlen;
  iso0_pan_field(TEST_PAN, panf);
  CU_ASSERT_FATAL(tu_unhex("341234ABCDEF9BCD", blk, 8) == 8);
  for (size_t i = 0; i < 8; i++)
    blk[i] ^= panf[i];
  CU_ASSERT_EQUAL(hsm__pinblock_decode(3, blk, TEST_PAN, 16, got, &gotlen),
                  HSM_E_BAD_PIN_BLOCK);
  blk[6] ^= 0x90 ^ 0xA0; /* the 9 at nibble 12 becomes A */
  CU_ASSERT_EQUAL(hsm__pinblock_decode(3, blk, TEST_PAN, 16, got, &gotlen), 0);
  CU_ASSERT_STRING_EQUAL(got, "1234");
}

static void test_iso4_decipher_refuses_fill_other_than_a(void) {
  hsm__cipher_t aes;
  uint8_t field[16], panf[16], blk[16];
  char got[13];
  size_t gotlen;
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, TEST_AES_KEY, 16), 0);
  /* PAN field of 1234567890123456789 from the vector file's rule. */
  CU_ASSERT_FATAL(tu_unhex("71234567890123456789000000000000", panf, 16) == 16);
  CU_ASSERT_FATAL(tu_unhex("441234AAAAAAAAAF0011223344556677", field, 16) ==
                  16);
  iso4_by_hand(&aes, field, panf, blk);
  CU_ASSERT_EQUAL(
      hsm__iso4_decipher(&aes, blk, "1234567890123456789", 19, got, &gotlen),
      HSM_E_BAD_PIN_BLOCK);
  field[7] = 0xAA;
  iso4_by_hand(&aes, field, panf, blk);
  CU_ASSERT_EQUAL(
      hsm__iso4_decipher(&aes, blk, "1234567890123456789", 19, got, &gotlen),
      0);
  CU_ASSERT_STRING_EQUAL(got, "1234");
  hsm__cipher_free(&aes);
}

/* The last PAN digit before the check digit lies under nibble 15, always
 * fill.  Format 0 refuses a block decoded under that other PAN whatever
 * the PIN (F XOR d is never F).  Format 3 refuses it only when the
 * difference takes the fill nibble below A: with fill A and a difference of
 * 3 it becomes 9; with fill C it would become F and pass (format 3's
 * random fill makes a wrong PAN detectable only with probability). */
static void test_decode_under_other_pan_refused(void) {
  static const char *const pins[] = {"1234", "123456789012"};
  static const uint8_t fill_a[10] = {0xA, 0xA, 0xA, 0xA, 0xA,
                                     0xA, 0xA, 0xA, 0xA, 0xA};
  for (int fmt = 0; fmt <= 3; fmt += 3)
    for (size_t i = 0; i < 2; i++) {
      uint8_t blk[8];
      char got[13];
      size_t gotlen;
      CU_ASSERT_EQUAL_FATAL(hsm__pinblock_encode(fmt, pins[i], strlen(pins[i]),
                                                 TEST_PAN, 16, fill_a, blk),
                            0);
      /* ...56|7 -> ...55|7: nibble 15 changes by 6 ^ 5 = 3. */
      CU_ASSERT_EQUAL(
          hsm__pinblock_decode(fmt, blk, "5555555551234557", 16, got, &gotlen),
          HSM_E_BAD_PIN_BLOCK);
      /* The check digit is not part of the block. */
      CU_ASSERT_EQUAL(
          hsm__pinblock_decode(fmt, blk, "5555555551234560", 16, got, &gotlen),
          0);
      CU_ASSERT_STRING_EQUAL(got, pins[i]);
    }
  uint8_t blk[8];
  char got[13];
  size_t gotlen;
  static const uint8_t fill_c[10] = {0xC, 0xC, 0xC, 0xC, 0xC,
                                     0xC, 0xC, 0xC, 0xC, 0xC};
  CU_ASSERT_EQUAL_FATAL(
      hsm__pinblock_encode(3, "1234", 4, TEST_PAN, 16, fill_c, blk), 0);
  CU_ASSERT_EQUAL(
      hsm__pinblock_decode(3, blk, "5555555551234557", 16, got, &gotlen), 0);
}

/* Format 4 binds the whole PAN, check digit and length included: a wrong
 * PAN deciphers to noise, refused (fixed fill, so the outcome is fixed). */
static void test_iso4_decipher_under_other_pan_refused(void) {
  hsm__cipher_t aes;
  uint8_t blk[16];
  char got[13];
  size_t gotlen;
  static const uint8_t fill[8] = {0x31, 0x41, 0x59, 0x26,
                                  0x53, 0x58, 0x97, 0x93};
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, TEST_AES_KEY, 16), 0);
  CU_ASSERT_EQUAL_FATAL(
      hsm__iso4_encipher(&aes, "1234", 4, TEST_PAN, 16, fill, blk), 0);
  CU_ASSERT_EQUAL(
      hsm__iso4_decipher(&aes, blk, "5555555551234568", 16, got, &gotlen),
      HSM_E_BAD_PIN_BLOCK);
  CU_ASSERT_EQUAL(
      hsm__iso4_decipher(&aes, blk, "555555555123456", 15, got, &gotlen),
      HSM_E_BAD_PIN_BLOCK);
  CU_ASSERT_EQUAL(hsm__iso4_decipher(&aes, blk, TEST_PAN, 16, got, &gotlen), 0);
  CU_ASSERT_STRING_EQUAL(got, "1234");
  hsm__cipher_free(&aes);
}

static void test_encode_refuses_pin_length_outside_4_to_12(void) {
  static const char digits[] = "1234567890123";
  hsm__cipher_t aes;
  uint8_t out[16];
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, TEST_AES_KEY, 16), 0);
  static const int formats[] = {0, 1, 3};
  for (size_t f = 0; f < 3; f++)
    for (size_t len = 0; len <= 13; len++) {
      int want = len >= 4 && len <= 12 ? 0 : HSM_E_PIN_LENGTH;
      CU_ASSERT_EQUAL(hsm__pinblock_encode(formats[f], digits, len, TEST_PAN,
                                           16, NULL, out),
                      want);
    }
  for (size_t len = 0; len <= 13; len++) {
    int want = len >= 4 && len <= 12 ? 0 : HSM_E_PIN_LENGTH;
    CU_ASSERT_EQUAL(
        hsm__iso4_encipher(&aes, digits, len, TEST_PAN, 16, NULL, out), want);
  }
  hsm__cipher_free(&aes);
}

static void test_encode_refuses_non_digit_pin(void) {
  static const char *const bad[] = {"12A4", "12 4", "-123", "123:", "1/34"};
  hsm__cipher_t aes;
  uint8_t out[16];
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, TEST_AES_KEY, 16), 0);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    for (int fmt = 0; fmt <= 3; fmt++) {
      if (fmt == 2)
        continue;
      CU_ASSERT_EQUAL(
          hsm__pinblock_encode(fmt, bad[i], 4, TEST_PAN, 16, NULL, out),
          HSM_E_PIN_LENGTH);
    }
    CU_ASSERT_EQUAL(
        hsm__iso4_encipher(&aes, bad[i], 4, TEST_PAN, 16, NULL, out),
        HSM_E_PIN_LENGTH);
  }
  /* An embedded NUL is not a digit either. */
  CU_ASSERT_EQUAL(
      hsm__pinblock_encode(0, "12\0004", 4, TEST_PAN, 16, NULL, out),
      HSM_E_PIN_LENGTH);
  hsm__cipher_free(&aes);
}

static void test_encode_decode_refuse_non_digit_pan(void) {
  static const char *const bad[] = {"555555555123456A", "5555 55551234567",
                                    "555555555123456=", "555555555123456\xb5"};
  hsm__cipher_t aes;
  uint8_t out[16], blk[8];
  char got[13];
  size_t gotlen;
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, TEST_AES_KEY, 16), 0);
  CU_ASSERT_FATAL(tu_unhex("041261AAAAEDCBA9", blk, 8) == 8);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_EQUAL(hsm__pinblock_encode(0, "1234", 4, bad[i], 16, NULL, out),
                    HSM_E_BAD_PAN);
    CU_ASSERT_EQUAL(hsm__pinblock_encode(3, "1234", 4, bad[i], 16, NULL, out),
                    HSM_E_BAD_PAN);
    CU_ASSERT_EQUAL(hsm__pinblock_decode(0, blk, bad[i], 16, got, &gotlen),
                    HSM_E_BAD_PAN);
    CU_ASSERT_EQUAL(hsm__iso4_encipher(&aes, "1234", 4, bad[i], 16, NULL, out),
                    HSM_E_BAD_PAN);
    CU_ASSERT_EQUAL(hsm__iso4_decipher(&aes, out, bad[i], 16, got, &gotlen),
                    HSM_E_BAD_PAN);
  }
  hsm__cipher_free(&aes);
}

/* Formats 0 and 3 need 12 digits before the check digit (13 to 19 in
 * all); a shorter PAN is refused, not padded. */
static void test_iso0_iso3_refuse_pan_outside_13_to_19_digits(void) {
  static const char pan[] = "12345678901234567890";
  uint8_t out[8], blk[8];
  char got[13];
  size_t gotlen;
  CU_ASSERT_FATAL(tu_unhex("041261AAAAEDCBA9", blk, 8) == 8);
  for (size_t len = 0; len <= 20; len++) {
    int want = len >= 13 && len <= 19 ? 0 : HSM_E_BAD_PAN;
    CU_ASSERT_EQUAL(hsm__pinblock_encode(0, "1234", 4, pan, len, NULL, out),
                    want);
    CU_ASSERT_EQUAL(hsm__pinblock_encode(3, "1234", 4, pan, len, NULL, out),
                    want);
    int rc = hsm__pinblock_decode(0, blk, pan, len, got, &gotlen);
    CU_ASSERT(want == 0 ? rc != HSM_E_BAD_PAN : rc == HSM_E_BAD_PAN);
  }
  CU_ASSERT_EQUAL(hsm__pinblock_encode(0, "1234", 4, NULL, 16, NULL, out),
                  HSM_E_INVAL);
}

/* Format 4 takes 1 to 19 digits: PANs shorter than 12 are right-justified
 * in 12 nibbles, longer ones shift the length nibble (vector file rule). */
static void test_iso4_pan_field_for_1_to_19_digits(void) {
  static const char pan[] = "12345678901234567890";
  hsm__cipher_t aes;
  uint8_t out[16], want[16];
  static const uint8_t field[16] = {
      0x44, 0x12, 0x34, 0xAA, 0xAA, 0xAA, 0xAA, 0xAA, 0, 0, 0, 0, 0, 0, 0, 0};
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, TEST_AES_KEY, 16), 0);
  for (size_t len = 0; len <= 20; len++) {
    int rc = hsm__iso4_encipher(&aes, "1234", 4, pan, len, field + 8, out);
    if (len == 0 || len > 19) {
      CU_ASSERT_EQUAL(rc, HSM_E_BAD_PAN);
      continue;
    }
    CU_ASSERT_EQUAL(rc, 0);
    char hex[33];
    size_t pos = 0;
    hex[pos++] = (char)('0' + (len > 12 ? len - 12 : 0));
    for (size_t i = len; i < 12; i++)
      hex[pos++] = '0';
    memcpy(hex + pos, pan, len);
    pos += len;
    while (pos < 32)
      hex[pos++] = '0';
    hex[32] = '\0';
    uint8_t panf[16];
    CU_ASSERT_FATAL(tu_unhex(hex, panf, 16) == 16);
    iso4_by_hand(&aes, field, panf, want);
    CU_ASSERT(memcmp(out, want, 16) == 0);
  }
  hsm__cipher_free(&aes);
}

static void test_encode_decode_refuse_unsupported_format_codes(void) {
  static const int bad[] = {-1, 2, 4, 5, 47, 48};
  uint8_t out[8] = {0}, blk[8] = {0};
  char got[13];
  size_t gotlen;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_EQUAL(
        hsm__pinblock_encode(bad[i], "1234", 4, TEST_PAN, 16, NULL, out),
        HSM_E_PIN_FORMAT);
    CU_ASSERT_EQUAL(
        hsm__pinblock_decode(bad[i], blk, TEST_PAN, 16, got, &gotlen),
        HSM_E_PIN_FORMAT);
  }
}

static void test_iso4_refuses_non_aes_cipher(void) {
  hsm__cipher_t tdes_key;
  uint8_t out[16] = {0};
  char got[13];
  size_t gotlen;
  static const uint8_t k[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&tdes_key, HSM__TDES, k, 16), 0);
  CU_ASSERT_EQUAL(
      hsm__iso4_encipher(&tdes_key, "1234", 4, TEST_PAN, 16, NULL, out),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(
      hsm__iso4_decipher(&tdes_key, out, TEST_PAN, 16, got, &gotlen),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__iso4_encipher(NULL, "1234", 4, TEST_PAN, 16, NULL, out),
                  HSM_E_INVAL);
  hsm__cipher_free(&tdes_key);
}

/* Caller fill: formats 1 and 3 take one byte per fill nibble, the value
 * itself; out-of-range bytes are refused. */
static void test_fill_bytes_outside_the_format_range_refused(void) {
  uint8_t fill[10] = {0xA, 0xB, 0xC, 0xD, 0xE, 0xF, 0xA, 0xB, 0xC, 0xD};
  uint8_t out[8];
  CU_ASSERT_EQUAL(hsm__pinblock_encode(3, "1234", 4, TEST_PAN, 16, fill, out),
                  0);
  fill[9] = 0x09;
  CU_ASSERT_EQUAL(hsm__pinblock_encode(3, "1234", 4, TEST_PAN, 16, fill, out),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__pinblock_encode(1, "1234", 4, NULL, 0, fill, out), 0);
  fill[9] = 0x10;
  CU_ASSERT_EQUAL(hsm__pinblock_encode(1, "1234", 4, NULL, 0, fill, out),
                  HSM_E_INVAL);
  fill[9] = 0xAF;
  CU_ASSERT_EQUAL(hsm__pinblock_encode(3, "1234", 4, TEST_PAN, 16, fill, out),
                  HSM_E_INVAL);
}

/* Format 0 has no random part: fill is not read; format 1 has no PAN:
 * pan is not read. */
static void test_iso0_ignores_fill_and_iso1_ignores_pan(void) {
  static const uint8_t junk[14] = {0xFF, 0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC,
                                   0xDE, 0xF0, 1,    2,    3,    4,    5};
  uint8_t a[8], b[8];
  CU_ASSERT_EQUAL(hsm__pinblock_encode(0, "1234", 4, TEST_PAN, 16, NULL, a), 0);
  CU_ASSERT_EQUAL(hsm__pinblock_encode(0, "1234", 4, TEST_PAN, 16, junk, b), 0);
  CU_ASSERT(memcmp(a, b, 8) == 0);
  uint8_t fill[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  CU_ASSERT_EQUAL(hsm__pinblock_encode(1, "1234", 4, NULL, 0, fill, a), 0);
  CU_ASSERT_EQUAL(hsm__pinblock_encode(1, "1234", 4, "12", 2, fill, b), 0);
  CU_ASSERT(memcmp(a, b, 8) == 0);
}

/* With fill NULL the nibbles come from hsm__random: always in range (0-F
 * for format 1, A-F for format 3), every value turns up, and the blocks
 * decode to the PIN. */
static void test_random_fill_is_in_range_and_varies(void) {
  unsigned seen1 = 0, seen3 = 0;
  for (int round = 0; round < 200; round++) {
    uint8_t blk[8], panf[8];
    char got[13];
    size_t gotlen;
    CU_ASSERT_EQUAL_FATAL(
        hsm__pinblock_encode(1, "1234", 4, NULL, 0, NULL, blk), 0);
    CU_ASSERT_EQUAL(hsm__pinblock_decode(1, blk, NULL, 0, got, &gotlen), 0);
    CU_ASSERT_STRING_EQUAL(got, "1234");
    for (size_t i = 6; i < 16; i++)
      seen1 |= 1u << nib_get(blk, i);
    CU_ASSERT_EQUAL_FATAL(
        hsm__pinblock_encode(3, "1234", 4, TEST_PAN, 16, NULL, blk), 0);
    CU_ASSERT_EQUAL(hsm__pinblock_decode(3, blk, TEST_PAN, 16, got, &gotlen),
                    0);
    CU_ASSERT_STRING_EQUAL(got, "1234");
    iso0_pan_field(TEST_PAN, panf);
    for (size_t i = 0; i < 8; i++)
      blk[i] ^= panf[i];
    for (size_t i = 6; i < 16; i++) {
      CU_ASSERT(nib_get(blk, i) >= 0xA);
      seen3 |= 1u << nib_get(blk, i);
    }
  }
  CU_ASSERT_EQUAL(seen1, 0xFFFFu);
  CU_ASSERT_EQUAL(seen3, 0xFC00u);

  hsm__cipher_t aes;
  uint8_t b1[16], b2[16];
  char got[13];
  size_t gotlen;
  CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&aes, HSM__AES, TEST_AES_KEY, 16), 0);
  CU_ASSERT_EQUAL(hsm__iso4_encipher(&aes, "1234", 4, TEST_PAN, 16, NULL, b1),
                  0);
  CU_ASSERT_EQUAL(hsm__iso4_encipher(&aes, "1234", 4, TEST_PAN, 16, NULL, b2),
                  0);
  CU_ASSERT(memcmp(b1, b2, 16) != 0);
  CU_ASSERT_EQUAL(hsm__iso4_decipher(&aes, b2, TEST_PAN, 16, got, &gotlen), 0);
  CU_ASSERT_STRING_EQUAL(got, "1234");
  hsm__cipher_free(&aes);
}

/* Outputs carry nothing on failure: the PIN buffer is zeroed (all 13
 * bytes), the length is 0, an encode output block is zeroed. */
static void test_refusal_leaves_zeroed_outputs(void) {
  char got[13];
  size_t gotlen = 7;
  uint8_t blk[8];
  memset(got, 'X', sizeof got);
  CU_ASSERT_FATAL(tu_unhex("0412FFFFFFFFFFFF", blk, 8) == 8);
  CU_ASSERT_EQUAL(hsm__pinblock_decode(0, blk, TEST_PAN, 16, got, &gotlen),
                  HSM_E_BAD_PIN_BLOCK);
  CU_ASSERT_EQUAL(gotlen, 0);
  for (size_t i = 0; i < sizeof got; i++)
    CU_ASSERT_EQUAL(got[i], 0);
  memset(blk, 0x5A, sizeof blk);
  CU_ASSERT_EQUAL(hsm__pinblock_encode(0, "123", 3, TEST_PAN, 16, NULL, blk),
                  HSM_E_PIN_LENGTH);
  for (size_t i = 0; i < sizeof blk; i++)
    CU_ASSERT_EQUAL(blk[i], 0);
  uint8_t fill[10] = {0x10};
  memset(blk, 0x5A, sizeof blk);
  CU_ASSERT_EQUAL(hsm__pinblock_encode(1, "1234", 4, NULL, 0, fill, blk),
                  HSM_E_INVAL);
  for (size_t i = 0; i < sizeof blk; i++)
    CU_ASSERT_EQUAL(blk[i], 0);
}

static void test_null_arguments_refused(void) {
  uint8_t blk[8] = {0};
  char got[13];
  size_t gotlen;
  CU_ASSERT_EQUAL(hsm__pinblock_encode(0, NULL, 4, TEST_PAN, 16, NULL, blk),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__pinblock_encode(0, "1234", 4, TEST_PAN, 16, NULL, NULL),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__pinblock_decode(0, NULL, TEST_PAN, 16, got, &gotlen),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__pinblock_decode(0, blk, TEST_PAN, 16, NULL, &gotlen),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__pinblock_decode(0, blk, TEST_PAN, 16, got, NULL),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__pinblock_decode(0, blk, NULL, 16, got, &gotlen),
                  HSM_E_INVAL);
}

int main(void) {
  static const tu_test_t tests[] = {
      {"iso0_vectors_encode_decode_and_encipher",
       test_iso0_vectors_encode_decode_and_encipher},
      {"iso1_vectors_encode_decode_and_encipher",
       test_iso1_vectors_encode_decode_and_encipher},
      {"iso3_vectors_encode_decode_and_encipher",
       test_iso3_vectors_encode_decode_and_encipher},
      {"iso4_vectors_encipher_decipher", test_iso4_vectors_encipher_decipher},
      {"iso0_dukpt_file_pin_blocks_under_derived_keys",
       test_iso0_dukpt_file_pin_blocks_under_derived_keys},
      {"translation_vectors_reencode_pin",
       test_translation_vectors_reencode_pin},
      {"translation_refuses_every_single_bit_corruption",
       test_translation_refuses_every_single_bit_corruption},
      {"iso0_every_nibble_mutation_refused_unless_digit_to_digit",
       test_iso0_every_nibble_mutation_refused_unless_digit_to_digit},
      {"iso1_every_nibble_mutation_follows_format1_property",
       test_iso1_every_nibble_mutation_follows_format1_property},
      {"iso3_every_nibble_mutation_refused_unless_digit_or_fill",
       test_iso3_every_nibble_mutation_refused_unless_digit_or_fill},
      {"iso4_every_nibble_mutation_refused_unless_digit_or_random",
       test_iso4_every_nibble_mutation_refused_unless_digit_or_random},
      {"iso4_decipher_refuses_every_single_bit_flip",
       test_iso4_decipher_refuses_every_single_bit_flip},
      {"iso0_decode_refuses_bad_control_nibble",
       test_iso0_decode_refuses_bad_control_nibble},
      {"decode_refuses_pin_length_nibble_outside_4_to_12",
       test_decode_refuses_pin_length_nibble_outside_4_to_12},
      {"iso0_decode_refuses_non_digit_pin_nibble",
       test_iso0_decode_refuses_non_digit_pin_nibble},
      {"iso0_decode_refuses_fill_other_than_f",
       test_iso0_decode_refuses_fill_other_than_f},
      {"iso3_decode_refuses_fill_nibble_below_a",
       test_iso3_decode_refuses_fill_nibble_below_a},
      {"iso4_decipher_refuses_fill_other_than_a",
       test_iso4_decipher_refuses_fill_other_than_a},
      {"decode_under_other_pan_refused", test_decode_under_other_pan_refused},
      {"iso4_decipher_under_other_pan_refused",
       test_iso4_decipher_under_other_pan_refused},
      {"encode_refuses_pin_length_outside_4_to_12",
       test_encode_refuses_pin_length_outside_4_to_12},
      {"encode_refuses_non_digit_pin", test_encode_refuses_non_digit_pin},
      {"encode_decode_refuse_non_digit_pan",
       test_encode_decode_refuse_non_digit_pan},
      {"iso0_iso3_refuse_pan_outside_13_to_19_digits",
       test_iso0_iso3_refuse_pan_outside_13_to_19_digits},
      {"iso4_pan_field_for_1_to_19_digits",
       test_iso4_pan_field_for_1_to_19_digits},
      {"encode_decode_refuse_unsupported_format_codes",
       test_encode_decode_refuse_unsupported_format_codes},
      {"iso4_refuses_non_aes_cipher", test_iso4_refuses_non_aes_cipher},
      {"fill_bytes_outside_the_format_range_refused",
       test_fill_bytes_outside_the_format_range_refused},
      {"iso0_ignores_fill_and_iso1_ignores_pan",
       test_iso0_ignores_fill_and_iso1_ignores_pan},
      {"random_fill_is_in_range_and_varies",
       test_random_fill_is_in_range_and_varies},
      {"refusal_leaves_zeroed_outputs", test_refusal_leaves_zeroed_outputs},
      {"null_arguments_refused", test_null_arguments_refused},
      {NULL, NULL}};
  tu_init();
  tu_add_suite("hsm_pinblock", tests);
  return tu_run();
}
