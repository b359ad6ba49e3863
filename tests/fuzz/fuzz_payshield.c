/*
 * fuzz_payshield.c — libFuzzer target: what a payShield (or anything
 * pretending to be one) sends back, and the key table file.  The first
 * byte picks the command whose response is decoded (or the key table
 * parser); the decoder must fail cleanly or fill a result that stays
 * inside its fields.
 */
#include "hsm.h"
#include "payshield_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const cmds[] = {"CA", "CC", "G0", "DA", "EA", "DC",
                                     "EC", "M6", "M8", "CY", "B2", "NC"};
  if (size < 1)
    return 0;
  unsigned pick = data[0] % 13;
  const char *msg = (const char *)data + 1;
  size_t len = size - 1;
  if (pick == 12) {
    hsm__ps_table_t *t = NULL;
    char err[256];
    if (hsm__ps_table_parse(msg, len, &t, err, sizeof err) == 0)
      hsm__ps_table_free(t);
    else if (t)
      abort();
    return 0;
  }
  hsm_req_t req;
  memset(&req, 0, sizeof req);
  uint32_t tag = 0;
  unsigned pin_len = 0;
  int rc =
      hsm__ps_decode(cmds[pick], (data[0] & 0x80) ? HSM_PIN_ISO3 : HSM_PIN_ISO0,
                     msg, len, 4, &tag, &req, &pin_len);
  if (rc == 0 && (req.result.pin.len > sizeof req.result.pin.block ||
                  req.result.mac.len > sizeof req.result.mac.mac))
    abort();
  return 0;
}
