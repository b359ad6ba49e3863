/*
 * fuzz_tr31.c — libFuzzer target: TR-31 key blocks.  The first byte picks
 * a key block protection key (TDES 2-key or AES-256); the rest is the
 * block.  Unwrap must refuse or return a key of a valid length with a
 * zeroed remainder; a successful unwrap must wrap and unwrap again to the
 * same key.
 */
#include "crypto.h"
#include "hsm.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const uint8_t kbpk[32] = {
      0x89, 0xE8, 0x8C, 0xF7, 0x93, 0x14, 0x44, 0xF3, 0x34, 0xBD, 0x75,
      0x47, 0xFC, 0x3F, 0x38, 0x0C, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06,
      0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0x10};
  if (size < 1)
    return 0;
  size_t klen = (data[0] & 1) ? 32 : 16;
  hsm__tr31_t hdr;
  uint8_t key[32], again[32];
  size_t n = 0, n2 = 0;
  int rc = hsm__tr31_unwrap(kbpk, klen, (const char *)data + 1, size - 1, &hdr,
                            key, &n);
  if (rc != 0) {
    if (n != 0)
      abort();
    for (size_t i = 0; i < sizeof key; i++)
      if (key[i])
        abort();
    return 0;
  }
  if (n == 0 || n > 32)
    abort();
  char block[512];
  size_t bl = 0;
  if (hsm__tr31_wrap(kbpk, klen, &hdr, key, n, block, sizeof block, &bl) == 0) {
    if (hsm__tr31_unwrap(kbpk, klen, block, bl, &hdr, again, &n2) != 0 ||
        n2 != n || memcmp(key, again, n) != 0)
      abort();
  }
  return 0;
}
