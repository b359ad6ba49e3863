/*
 * testutil.h — helpers shared by the CUnit suites: hex conversion, test data
 * paths, and a main() that runs registered suites and exits non-zero on any
 * failure (so ctest sees it).
 */
#ifndef SW_TESTUTIL_H
#define SW_TESTUTIL_H

#include <CUnit/CUnit.h>
#include <stddef.h>
#include <stdint.h>

/* Decodes hex text (spaces ignored) into out; returns bytes written or
 * (size_t)-1 on bad hex or overflow. */
size_t tu_unhex(const char *hex, uint8_t *out, size_t cap);
/* Writes upper-case hex of p[0..n) into out (cap >= 2n+1). */
void tu_hex(const uint8_t *p, size_t n, char *out);
/* Full path of a file under tests/data (from $SW_TEST_DATA), in a static
 * buffer. */
const char *tu_data_path(const char *name);

typedef struct tu_test_s {
  const char *name;
  CU_TestFunc fn;
} tu_test_t;

/* Registers one suite from a NULL-terminated table. */
void tu_add_suite(const char *name, const tu_test_t *tests);
/* Runs all registered suites; returns the process exit code. */
int tu_run(void);
/* Initialises the registry (call first in main). */
void tu_init(void);

#endif
