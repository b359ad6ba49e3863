/*
 * pinverify.c — PIN and card verification values: the IBM 3624 natural PIN
 * and PIN offset, the Visa PIN verification value (PVV) and the Visa card
 * verification value (CVV, and with service code 000 / 999 CVV2 / iCVV).
 *
 * Guarantees:
 *   - PINs are 4 to 12 digits (HSM_E_PIN_LENGTH), PANs digits only
 *     (HSM_E_BAD_PAN), every other text input is checked for its digit set
 *     and length (HSM_E_BAD_DATA) before any key is used;
 *   - keys must be TDES (HSM_E_INVAL otherwise); the Visa values need a
 *     double-length key, A|B (HSM_E_KEY_LENGTH for a triple-length one);
 *   - the IBM 3624 verification compares in constant time and answers 0
 *     (match), 1 (mismatch) or a negative error;
 *   - buffers holding PIN digits, the natural PIN or data derived from them
 *     are wiped before return.
 */
#include "crypto.h"
#include "hsm.h"

#include <openssl/crypto.h>
#include <string.h>

enum { PIN_MIN = 4, PIN_MAX = 12, PAN_MIN = 12, PAN_MAX = 19 };

static int check_pin(const char *pin, size_t pinlen) {
  if (!pin)
    return HSM_E_INVAL;
  if (pinlen < PIN_MIN || pinlen > PIN_MAX || !hsm__all_digits(pin, pinlen))
    return HSM_E_PIN_LENGTH;
  return 0;
}

/* The Visa values take 11 PAN digits before the check digit (PVV) or the
 * whole PAN (CVV); both are meaningless for less than a card-length PAN. */
static int check_pan(const char *pan, size_t panlen) {
  if (!pan)
    return HSM_E_INVAL;
  if (panlen < PAN_MIN || panlen > PAN_MAX || !hsm__all_digits(pan, panlen))
    return HSM_E_BAD_PAN;
  return 0;
}

static int tdes_key(const hsm__cipher_t *k) {
  return k && k->enc && k->alg == HSM__TDES;
}

/* Visa decimalisation of an enciphered block: the decimal digits of its 16
 * hex digits left to right, then, if fewer than n were found, the digits
 * A-F minus 10, again left to right. */
static void visa_decimalise(const uint8_t blk[8], char *out, size_t n) {
  size_t got = 0;
  for (int pass = 0; pass < 2 && got < n; pass++)
    for (size_t i = 0; i < 16 && got < n; i++) {
      unsigned v = i % 2 ? blk[i / 2] & 0x0F : blk[i / 2] >> 4;
      if (pass == 0 && v <= 9)
        out[got++] = (char)('0' + v);
      else if (pass == 1 && v > 9)
        out[got++] = (char)('0' + v - 10);
    }
  out[n] = '\0';
}

/* The IBM 3624 intermediate PIN: the validation data enciphered under the
 * PVK, each of the 16 hex digits mapped through the decimalisation table. */
static int natural_pin(hsm__cipher_t *pvk, const char *validation_data,
                       const char *dectab, uint8_t nat[16]) {
  uint8_t blk[8];
  if (!tdes_key(pvk) || !validation_data || !dectab)
    return HSM_E_INVAL;
  /* Both strings are read for exactly 16 characters: a shorter string
   * stops at its NUL, which is neither a hex nor a decimal digit. */
  for (size_t i = 0; i < 16; i++)
    if (hsm__hexval(validation_data[i], 0) < 0 || dectab[i] < '0' ||
        dectab[i] > '9')
      return HSM_E_BAD_DATA;
  if (hsm__unhex(validation_data, 16, blk, 0) != 0)
    return HSM_E_BAD_DATA;
  int rc = hsm__ecb(pvk, 1, blk, blk, 8);
  if (rc == 0)
    for (size_t i = 0; i < 16; i++) {
      unsigned v = i % 2 ? blk[i / 2] & 0x0F : blk[i / 2] >> 4;
      nat[i] = (uint8_t)(dectab[v] - '0');
    }
  hsm__cleanse(blk, sizeof blk);
  return rc;
}

/* Writes pinlen offset digits and a NUL: digit by digit, (PIN - natural
 * PIN) mod 10. */
int hsm__ibm3624_offset(hsm__cipher_t *pvk, const char *validation_data,
                        const char *dectab, const char *pin, size_t pinlen,
                        char *offset) {
  uint8_t nat[16];
  int rc;
  if (!offset)
    return HSM_E_INVAL;
  offset[0] = '\0';
  if ((rc = check_pin(pin, pinlen)) != 0)
    return rc;
  if ((rc = natural_pin(pvk, validation_data, dectab, nat)) != 0)
    return rc;
  for (size_t i = 0; i < pinlen; i++)
    offset[i] = (char)('0' + (pin[i] - '0' + 10 - nat[i]) % 10);
  offset[pinlen] = '\0';
  hsm__cleanse(nat, sizeof nat);
  return 0;
}

/* Returns 0 when the PIN verifies, 1 when it does not (the public API maps
 * 1 to HSM_VERIFY_FAILED), a negative HSM_E_* when verification could not
 * be carried out.  offlen is the PIN check length (4..pinlen): as in IBM's
 * algorithm, the offset is aligned with the right-most offlen digits of the
 * natural PIN, and only the right-most offlen digits of the PIN are
 * compared. */
int hsm__ibm3624_verify(hsm__cipher_t *pvk, const char *validation_data,
                        const char *dectab, const char *pin, size_t pinlen,
                        const char *offset, size_t offlen) {
  uint8_t nat[16];
  char want[PIN_MAX];
  int rc;
  if ((rc = check_pin(pin, pinlen)) != 0)
    return rc;
  if (!offset)
    return HSM_E_INVAL;
  if (offlen < PIN_MIN || offlen > pinlen || !hsm__all_digits(offset, offlen))
    return HSM_E_BAD_DATA;
  if ((rc = natural_pin(pvk, validation_data, dectab, nat)) != 0)
    return rc;
  size_t skip = pinlen - offlen;
  for (size_t i = 0; i < offlen; i++)
    want[i] = (char)('0' + (nat[skip + i] + offset[i] - '0') % 10);
  rc = CRYPTO_memcmp(want, pin + skip, offlen) == 0 ? 0 : 1;
  hsm__cleanse(nat, sizeof nat);
  hsm__cleanse(want, sizeof want);
  return rc;
}

/* TSP = 11 right-most PAN digits excluding the check digit, the PVKI, the
 * first 4 PIN digits; PVV = Visa decimalisation of TDES(PVK, TSP). */
int hsm__visa_pvv(hsm__cipher_t *pvk, const char *pan, size_t panlen, int pvki,
                  const char *pin, size_t pinlen, char pvv[5]) {
  char tsp[16];
  uint8_t blk[8];
  int rc;
  if (!pvv)
    return HSM_E_INVAL;
  pvv[0] = '\0';
  if (!tdes_key(pvk))
    return HSM_E_INVAL;
  if (pvk->keylen != 16)
    return HSM_E_KEY_LENGTH;
  if ((rc = check_pan(pan, panlen)) != 0)
    return rc;
  if (pvki < 0 || pvki > 9)
    return HSM_E_BAD_DATA;
  if ((rc = check_pin(pin, pinlen)) != 0)
    return rc;
  memcpy(tsp, pan + panlen - 12, 11);
  tsp[11] = (char)('0' + pvki);
  memcpy(tsp + 12, pin, 4);
  rc = hsm__unhex(tsp, 16, blk, 0) == 0 ? 0 : HSM_E_BAD_DATA;
  if (rc == 0)
    rc = hsm__ecb(pvk, 1, blk, blk, 8);
  if (rc == 0)
    visa_decimalise(blk, pvv, 4);
  hsm__cleanse(tsp, sizeof tsp);
  hsm__cleanse(blk, sizeof blk);
  return rc;
}

/* Data = PAN | expiry | service code, right-padded with zeros to 32
 * digits, split into blocks B1 and B2; result = TDES(A|B, DES(A, B1) XOR
 * B2), which is an ISO 9797-1 algorithm 3 MAC of B1|B2; the CVV is the
 * Visa decimalisation of the result, 3 digits.  expiry is passed through
 * as given (YYMM in Visa's test data). */
int hsm__visa_cvv(hsm__cipher_t *cvk, const char *pan, size_t panlen,
                  const char expiry[4], const char service[3], char cvv[4]) {
  char data[32];
  uint8_t blk[16];
  int rc;
  if (!cvv)
    return HSM_E_INVAL;
  cvv[0] = '\0';
  if (!tdes_key(cvk) || !expiry || !service)
    return HSM_E_INVAL;
  if (cvk->keylen != 16)
    return HSM_E_KEY_LENGTH;
  if ((rc = check_pan(pan, panlen)) != 0)
    return rc;
  if (!hsm__all_digits(expiry, 4) || !hsm__all_digits(service, 3))
    return HSM_E_BAD_DATA;
  memset(data, '0', sizeof data);
  memcpy(data, pan, panlen);
  memcpy(data + panlen, expiry, 4);
  memcpy(data + panlen + 4, service, 3);
  rc = hsm__unhex(data, 32, blk, 0) == 0 ? 0 : HSM_E_BAD_DATA;
  /* The first step is single DES with key A: the left half of the stored
   * key, widened to A|A by hsm__ecb_raw. */
  if (rc == 0)
    rc = hsm__ecb_raw(HSM__TDES, cvk->key, 8, 1, blk, blk, 8);
  if (rc == 0) {
    for (size_t i = 0; i < 8; i++)
      blk[i] ^= blk[8 + i];
    rc = hsm__ecb(cvk, 1, blk, blk, 8);
  }
  if (rc == 0)
    visa_decimalise(blk, cvv, 3);
  hsm__cleanse(data, sizeof data);
  hsm__cleanse(blk, sizeof blk);
  return rc;
}
