/*
 * errors.c — libhsm's error names and messages and key-usage names,
 * generated from the lists in hsm.h.
 */
#include "hsm.h"

#include <string.h>

static const char *const hsm__messages[] = {"success",
#define HSM__XX(name, msg) msg,
                                            HSM_ERRNO_MAP(HSM__XX)
#undef HSM__XX
};

static const char *const hsm__names[] = {"OK",
#define HSM__XX(name, msg) #name,
                                         HSM_ERRNO_MAP(HSM__XX)
#undef HSM__XX
};

#define HSM__NCODES (sizeof hsm__names / sizeof hsm__names[0])

const char *hsm_strerror(int code) {
  size_t i = (size_t)(code <= 0 ? -(long)code : (long)HSM__NCODES);
  return i < HSM__NCODES ? hsm__messages[i] : "unknown error";
}

const char *hsm_err_name(int code) {
  size_t i = (size_t)(code <= 0 ? -(long)code : (long)HSM__NCODES);
  return i < HSM__NCODES ? hsm__names[i] : "UNKNOWN";
}

static const char *const hsm__usages[] = {"NONE",
#define HSM__XX(name, desc) #name,
                                          HSM_USAGE_MAP(HSM__XX)
#undef HSM__XX
};

const char *hsm_usage_name(hsm_usage_t u) {
  return (unsigned)u < HSM_USAGE_COUNT ? hsm__usages[u] : "NONE";
}

hsm_usage_t hsm_usage_parse(const char *s) {
  if (!s)
    return HSM_USAGE_NONE;
  for (int u = 1; u < HSM_USAGE_COUNT; u++)
    if (strcmp(hsm__usages[u], s) == 0)
      return (hsm_usage_t)u;
  return HSM_USAGE_NONE;
}
