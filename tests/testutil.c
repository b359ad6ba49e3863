/*
 * testutil.c — see testutil.h.
 */
#include "testutil.h"

#include <CUnit/Basic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

size_t tu_unhex(const char *hex, uint8_t *out, size_t cap) {
  size_t n = 0;
  int hi = -1;
  for (; *hex; hex++) {
    if (*hex == ' ' || *hex == '\n' || *hex == '\t')
      continue;
    int v = hexval((unsigned char)*hex);
    if (v < 0)
      return (size_t)-1;
    if (hi < 0) {
      hi = v;
    } else {
      if (n >= cap)
        return (size_t)-1;
      out[n++] = (uint8_t)(hi << 4 | v);
      hi = -1;
    }
  }
  return hi < 0 ? n : (size_t)-1;
}

void tu_hex(const uint8_t *p, size_t n, char *out) {
  static const char digits[] = "0123456789ABCDEF";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = '\0';
}

const char *tu_data_path(const char *name) {
  static char path[4096];
  const char *dir = getenv("SW_TEST_DATA");
  snprintf(path, sizeof path, "%s/%s", dir ? dir : "tests/data", name);
  return path;
}

void tu_init(void) {
  if (CU_initialize_registry() != CUE_SUCCESS) {
    fprintf(stderr, "cannot initialise CUnit registry\n");
    exit(2);
  }
}

void tu_add_suite(const char *name, const tu_test_t *tests) {
  CU_pSuite s = CU_add_suite(name, NULL, NULL);
  if (!s) {
    fprintf(stderr, "cannot add suite %s\n", name);
    exit(2);
  }
  for (; tests->name; tests++) {
    if (!CU_add_test(s, tests->name, tests->fn)) {
      fprintf(stderr, "cannot add test %s\n", tests->name);
      exit(2);
    }
  }
}

int tu_run(void) {
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  unsigned failed =
      CU_get_number_of_failures() + CU_get_number_of_tests_failed();
  unsigned ran = CU_get_number_of_tests_run();
  CU_cleanup_registry();
  if (ran == 0) {
    fprintf(stderr, "no test ran\n");
    return 1;
  }
  return failed ? 1 : 0;
}
