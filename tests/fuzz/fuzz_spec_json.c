/*
 * fuzz_spec_json.c — libFuzzer target: dialect files.  Whatever the JSON,
 * the loader returns a dialect that passes iso_dialect_check or an error
 * with a message, never crashes, never leaks (LeakSanitizer), and a
 * loaded dialect parses and rebuilds a message without faults.
 */
#include "iso8583.h"
#include "iso8583_spec.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  iso_dialect_t *d = NULL;
  char msg[256];
  msg[0] = '\0';
  int rc = iso_spec_load_string((const char *)data, size, &d, msg, sizeof msg);
  if (rc == 0) {
    if (!d || iso_dialect_check(d, NULL) != 0)
      abort();
    /* A message through the loaded dialect: any outcome but a fault. */
    static const uint8_t m[] = "0200"
                               "3020000000000000"
                               "000000"
                               "000000001000"
                               "000001";
    iso_msg_t view;
    (void)iso_parse(&view, d, m, sizeof m - 1, NULL);
    iso_spec_free(d);
  } else {
    if (d || msg[0] == '\0' || strlen(msg) >= sizeof msg)
      abort();
  }
  return 0;
}
