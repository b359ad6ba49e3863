/*
 * text.c — decimal and hexadecimal text helpers for the crypto layer and
 * the backends (see crypto.h).  One copy, so that the rules (upper case
 * only where a protocol says so, branch-free digit checks for PINs) are
 * the same everywhere.
 */
#include "crypto.h"

int hsm__all_digits(const char *s, size_t n) {
  unsigned bad = 0;
  for (size_t i = 0; i < n; i++)
    bad |= (unsigned)((unsigned char)s[i] - '0') > 9;
  return !bad;
}

int hsm__hexval(int c, int upper_only) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  if (!upper_only && c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

int hsm__unhex(const char *s, size_t n, uint8_t *out, int upper_only) {
  if (n % 2)
    return -1;
  for (size_t i = 0; i < n; i += 2) {
    int hi = hsm__hexval((unsigned char)s[i], upper_only);
    int lo = hsm__hexval((unsigned char)s[i + 1], upper_only);
    if (hi < 0 || lo < 0)
      return -1;
    out[i / 2] = (uint8_t)(hi << 4 | lo);
  }
  return 0;
}

void hsm__tohex(const uint8_t *p, size_t n, char *out) {
  static const char digits[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
}
