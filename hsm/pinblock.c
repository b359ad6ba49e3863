/*
 * pinblock.c — ISO 9564-1 PIN blocks: formats 0, 1 and 3 as 8-byte clear
 * blocks (the caller enciphers them with TDES) and format 4 enciphered with
 * AES.
 *
 * Guarantees:
 *   - a PIN is 4 to 12 decimal digits (HSM_E_PIN_LENGTH otherwise);
 *   - a PAN is decimal digits only: 13 to 19 for formats 0 and 3 (12
 *     digits plus the check digit, which the format leaves out), 1 to 19
 *     for format 4 (HSM_E_BAD_PAN otherwise); format 1 ignores the PAN;
 *   - decoding refuses, with HSM_E_BAD_PIN_BLOCK, any block whose control
 *     nibble, PIN length, PIN digits or fill break the format, so a
 *     corrupted or mis-keyed block is never passed on as a valid-looking
 *     PIN.  What cannot be caught is a PIN digit replaced by another digit
 *     (no format carries redundancy over the digits), and, in format 1, a
 *     change of fill or of a length that still covers only digits;
 *   - the checks look at every nibble without an early exit, so the time a
 *     refusal takes does not say which nibble broke the format;
 *   - every buffer that held a clear PIN, PIN field or clear block is
 *     wiped before return, on error paths too; on error the outputs are
 *     zeroed (out block, or pin[0..13) and *pinlen).
 */
#include "crypto.h"
#include "hsm.h"

#include <string.h>

enum {
  PIN_MIN = 4,
  PIN_MAX = 12,
  PAN_MAX = 19,
  NIB8 = 16,  /* nibbles in an 8-byte block */
  NIB16 = 32, /* nibbles in a 16-byte block */
  ISO4_FILL_LEN = 8
};

static int check_pin(const char *pin, size_t pinlen) {
  if (!pin)
    return HSM_E_INVAL;
  if (pinlen < PIN_MIN || pinlen > PIN_MAX || !hsm__all_digits(pin, pinlen))
    return HSM_E_PIN_LENGTH;
  return 0;
}

static void pack(const uint8_t *nib, size_t nnib, uint8_t *out) {
  for (size_t i = 0; i < nnib / 2; i++)
    out[i] = (uint8_t)(nib[2 * i] << 4 | nib[2 * i + 1]);
}

static void unpack(const uint8_t *in, size_t nbytes, uint8_t *nib) {
  for (size_t i = 0; i < nbytes; i++) {
    nib[2 * i] = in[i] >> 4;
    nib[2 * i + 1] = in[i] & 0x0F;
  }
}

/* Formats 0 and 3: four zero nibbles, then the 12 right-most PAN digits
 * excluding the check digit.  ISO 9564-1 also describes left-padding a
 * shorter PAN with zeros; payShield and the switch's messages always carry
 * 12 digits plus the check digit, so a shorter PAN is refused rather than
 * silently padded. */
static int pan_field_iso0(const char *pan, size_t panlen, uint8_t out[8]) {
  if (!pan)
    return HSM_E_INVAL;
  if (panlen < 13 || panlen > PAN_MAX || !hsm__all_digits(pan, panlen))
    return HSM_E_BAD_PAN;
  uint8_t nib[NIB8] = {0};
  const char *d = pan + panlen - 13;
  for (size_t i = 0; i < 12; i++)
    nib[4 + i] = (uint8_t)(d[i] - '0');
  pack(nib, NIB8, out);
  return 0;
}

/* Format 4 (ISO 9564-1:2017): nibble 0 is the PAN length minus 12 (0 for a
 * PAN of 12 digits or fewer), then the PAN over at least 12 nibbles — a
 * shorter PAN right-justified and padded on the left with zeros — then
 * zeros to 128 bits. */
static int pan_field_iso4(const char *pan, size_t panlen, uint8_t out[16]) {
  if (!pan)
    return HSM_E_INVAL;
  if (panlen < 1 || panlen > PAN_MAX || !hsm__all_digits(pan, panlen))
    return HSM_E_BAD_PAN;
  uint8_t nib[NIB16] = {0};
  size_t start = 1;
  if (panlen > 12)
    nib[0] = (uint8_t)(panlen - 12);
  else
    start += 12 - panlen;
  for (size_t i = 0; i < panlen; i++)
    nib[start + i] = (uint8_t)(pan[i] - '0');
  pack(nib, NIB16, out);
  return 0;
}

/* n uniformly random nibbles in [lo, 15].  For lo = 10 a byte is kept only
 * below 252 (42 * 6) so that b % 6 carries no bias. */
static int random_nibbles(uint8_t *nib, size_t n, unsigned lo) {
  uint8_t r[32];
  size_t got = 0;
  unsigned span = 16 - lo;
  unsigned limit = 256 - 256 % span;
  int rc = 0;
  while (got < n) {
    rc = hsm__random(r, sizeof r);
    if (rc)
      break;
    for (size_t i = 0; i < sizeof r && got < n; i++)
      if (r[i] < limit)
        nib[got++] = (uint8_t)(lo + r[i] % span);
  }
  hsm__cleanse(r, sizeof r);
  return rc;
}

/* The fill nibbles of format 1 (lo = 0) or 3 (lo = 10): one nibble per
 * fill byte, taken verbatim, or random ones if fill is NULL. */
static int fill_nibbles(const uint8_t *fill, size_t n, unsigned lo,
                        uint8_t *nib) {
  if (!fill)
    return random_nibbles(nib, n, lo);
  for (size_t i = 0; i < n; i++) {
    if (fill[i] < lo || fill[i] > 0x0F)
      return HSM_E_INVAL;
    nib[i] = fill[i];
  }
  return 0;
}

/* Format-specific refusal of one PIN-field nibble in the fill area. */
static unsigned fill_bad(int format, unsigned v) {
  switch (format) {
  case 0:
    return v != 0x0F;
  case 3:
    return v < 0x0A;
  case 4:
    return v != 0x0A;
  default: /* format 1: any value */
    return 0;
  }
}

/* Checks nibbles 0..15 of a PIN field and extracts the PIN.  Every nibble
 * is examined whatever the outcome; pin receives the digits only when the
 * whole field is valid. */
static int parse_pin_field(int format, const uint8_t nib[NIB8], char *pin,
                           size_t *pinlen) {
  unsigned len = nib[1];
  unsigned bad = nib[0] != (unsigned)format;
  bad |= (len < PIN_MIN) | (len > PIN_MAX);
  for (unsigned i = 2; i < NIB8; i++) {
    unsigned in_pin = i < 2 + len;
    bad |= in_pin & (nib[i] > 9);
    bad |= (in_pin ^ 1u) & fill_bad(format, nib[i]);
  }
  if (bad)
    return HSM_E_BAD_PIN_BLOCK;
  for (unsigned i = 0; i < len; i++)
    pin[i] = (char)('0' + nib[2 + i]);
  pin[len] = '\0';
  *pinlen = len;
  return 0;
}

/* nibbles 0..15 of the PIN field of format 0, 1, 3 or 4 (format 4 fill up
 * to nibble 15 is the constant A). */
static int build_pin_field(int format, const char *pin, size_t pinlen,
                           const uint8_t *fill, uint8_t nib[NIB8]) {
  nib[0] = (uint8_t)format;
  nib[1] = (uint8_t)pinlen;
  for (size_t i = 0; i < pinlen; i++)
    nib[2 + i] = (uint8_t)(pin[i] - '0');
  size_t nfill = NIB8 - 2 - pinlen;
  uint8_t *f = nib + 2 + pinlen;
  switch (format) {
  case 0:
    memset(f, 0x0F, nfill);
    return 0;
  case 1:
    return fill_nibbles(fill, nfill, 0, f);
  case 3:
    return fill_nibbles(fill, nfill, 10, f);
  default:
    memset(f, 0x0A, nfill);
    return 0;
  }
}

static void xor_bytes(uint8_t *dst, const uint8_t *src, size_t n) {
  for (size_t i = 0; i < n; i++)
    dst[i] ^= src[i];
}

/* fill: format 0 does not read it (may be NULL).  Formats 1 and 3 read
 * exactly 14 - pinlen bytes, one per fill nibble, in block order; each byte
 * is the nibble's value: 0x00-0x0F for format 1, 0x0A-0x0F for format 3
 * (anything else is HSM_E_INVAL).  NULL draws the nibbles from hsm__random
 * (uniform over 0-F, resp. A-F).  pan is ignored by format 1. */
int hsm__pinblock_encode(int format, const char *pin, size_t pinlen,
                         const char *pan, size_t panlen, const uint8_t *fill,
                         uint8_t out[8]) {
  uint8_t nib[NIB8] = {0};
  uint8_t panf[8] = {0};
  int rc;
  if (!out)
    return HSM_E_INVAL;
  memset(out, 0, 8);
  if (format != 0 && format != 1 && format != 3)
    return HSM_E_PIN_FORMAT;
  if ((rc = check_pin(pin, pinlen)) != 0)
    return rc;
  if (format != 1 && (rc = pan_field_iso0(pan, panlen, panf)) != 0)
    return rc;
  rc = build_pin_field(format, pin, pinlen, fill, nib);
  if (rc == 0) {
    pack(nib, NIB8, out);
    xor_bytes(out, panf, 8);
  }
  hsm__cleanse(nib, sizeof nib);
  return rc;
}

int hsm__pinblock_decode(int format, const uint8_t block[8], const char *pan,
                         size_t panlen, char *pin, size_t *pinlen) {
  uint8_t clear[8];
  uint8_t nib[NIB8];
  uint8_t panf[8] = {0};
  int rc;
  if (!pin || !pinlen)
    return HSM_E_INVAL;
  memset(pin, 0, PIN_MAX + 1);
  *pinlen = 0;
  if (!block)
    return HSM_E_INVAL;
  if (format != 0 && format != 1 && format != 3)
    return HSM_E_PIN_FORMAT;
  if (format != 1 && (rc = pan_field_iso0(pan, panlen, panf)) != 0)
    return rc;
  memcpy(clear, block, 8);
  xor_bytes(clear, panf, 8);
  unpack(clear, 8, nib);
  rc = parse_pin_field(format, nib, pin, pinlen);
  hsm__cleanse(clear, sizeof clear);
  hsm__cleanse(nib, sizeof nib);
  return rc;
}

/* fill: exactly 8 bytes, copied verbatim as the random half of the PIN
 * field (bytes 8..15, any values); NULL draws them from hsm__random.  The
 * fill nibbles between the PIN and byte 8 are the constant A. */
int hsm__iso4_encipher(hsm__cipher_t *aes, const char *pin, size_t pinlen,
                       const char *pan, size_t panlen, const uint8_t *fill,
                       uint8_t out[16]) {
  uint8_t nib[NIB8] = {0};
  uint8_t field[16];
  uint8_t panf[16];
  int rc;
  if (!out)
    return HSM_E_INVAL;
  memset(out, 0, 16);
  if (!aes || aes->alg != HSM__AES)
    return HSM_E_INVAL;
  if ((rc = check_pin(pin, pinlen)) != 0)
    return rc;
  if ((rc = pan_field_iso4(pan, panlen, panf)) != 0)
    return rc;
  (void)build_pin_field(4, pin, pinlen, NULL, nib); /* cannot fail */
  pack(nib, NIB8, field);
  if (fill)
    memcpy(field + 8, fill, ISO4_FILL_LEN);
  else
    rc = hsm__random(field + 8, ISO4_FILL_LEN);
  /* E(K, E(K, PIN field) XOR PAN field): the PAN is bound to the PIN
   * through the cipher, not by a plain XOR as in format 0. */
  if (rc == 0)
    rc = hsm__ecb(aes, 1, field, field, 16);
  if (rc == 0) {
    xor_bytes(field, panf, 16);
    rc = hsm__ecb(aes, 1, field, out, 16);
  }
  if (rc)
    memset(out, 0, 16);
  hsm__cleanse(nib, sizeof nib);
  hsm__cleanse(field, sizeof field);
  return rc;
}

int hsm__iso4_decipher(hsm__cipher_t *aes, const uint8_t in[16],
                       const char *pan, size_t panlen, char *pin,
                       size_t *pinlen) {
  uint8_t field[16];
  uint8_t panf[16];
  int rc;
  if (!pin || !pinlen)
    return HSM_E_INVAL;
  memset(pin, 0, PIN_MAX + 1);
  *pinlen = 0;
  if (!in || !aes || aes->alg != HSM__AES)
    return HSM_E_INVAL;
  if ((rc = pan_field_iso4(pan, panlen, panf)) != 0)
    return rc;
  rc = hsm__ecb(aes, 0, in, field, 16);
  if (rc == 0) {
    xor_bytes(field, panf, 16);
    rc = hsm__ecb(aes, 0, field, field, 16);
  }
  if (rc == 0) {
    /* Bytes 8..15 are random by definition: only the first half can be
     * checked. */
    uint8_t nib[NIB8];
    unpack(field, 8, nib);
    rc = parse_pin_field(4, nib, pin, pinlen);
    hsm__cleanse(nib, sizeof nib);
  }
  hsm__cleanse(field, sizeof field);
  return rc;
}
