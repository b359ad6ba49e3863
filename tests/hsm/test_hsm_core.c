/*
 * test_hsm_core.c — the generic layer's life-cycle rules, on the soft
 * backend: a completion callback may close the handle, even when it runs
 * inline inside the submitting call, and a request submitted to a closing
 * handle is refused without a callback.  Run under ASan, a use after free
 * here fails the suite.
 */
#include "hsm.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

static uv_loop_t loop;
static char dir[64], ks[128], mk[128];
static int calls;

static hsm_t *open_soft(void) {
  hsm_config_t cfg = {.backend = "soft",
                      .keystore_path = ks,
                      .master_key_path = mk,
                      .create = 1};
  hsm_t *h = NULL;
  CU_ASSERT_EQUAL_FATAL(hsm_open(&h, &loop, &cfg, NULL, 0), 0);
  return h;
}

static void close_in_callback(hsm_req_t *req) {
  calls++;
  hsm_close(req->data);
}

static void test_inline_callback_may_close_the_handle(void) {
  hsm_t *h = open_soft();
  static hsm_req_t req;
  memset(&req, 0, sizeof req);
  req.data = h;
  calls = 0;
  /* The soft backend completes inline: the callback closes h while
   * hsm_echo is still on the stack. */
  CU_ASSERT_EQUAL(hsm_echo(h, &req, close_in_callback), 0);
  CU_ASSERT_EQUAL(calls, 1);
  uv_run(&loop, UV_RUN_NOWAIT);
}

static void count(hsm_req_t *req) {
  (void)req;
  calls++;
}

static void test_errors_never_call_back(void) {
  hsm_t *h = open_soft();
  static hsm_req_t req;
  memset(&req, 0, sizeof req);
  calls = 0;
  hsm_pin_translate_t bad = {.src = {.label = "x"}, .dst_label = "y"};
  CU_ASSERT_EQUAL(hsm_pin_translate(h, &req, &bad, count), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm_echo(NULL, &req, count), HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm_echo(h, &req, NULL), HSM_E_INVAL);
  CU_ASSERT_EQUAL(calls, 0);
  CU_ASSERT_EQUAL(hsm_in_flight(h), 0);
  hsm_close(h);
  uv_run(&loop, UV_RUN_NOWAIT);
}

int main(void) {
  static const tu_test_t tests[] = {
      {"inline_callback_may_close_the_handle",
       test_inline_callback_may_close_the_handle},
      {"errors_never_call_back", test_errors_never_call_back},
      {NULL, NULL}};
  snprintf(dir, sizeof dir, "/tmp/hsmcore.XXXXXX");
  if (!mkdtemp(dir))
    return 1;
  snprintf(ks, sizeof ks, "%s/keys.store", dir);
  snprintf(mk, sizeof mk, "%s/master.key", dir);
  FILE *f = fopen(mk, "w");
  if (!f)
    return 1;
  fputs("404142434445464748494A4B4C4D4E4F505152535455565758595A5B5C5D5E5F\n",
        f);
  fclose(f);
  chmod(mk, 0600);
  uv_loop_init(&loop);
  tu_init();
  tu_add_suite("hsm_core", tests);
  int rc = tu_run();
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  unlink(ks);
  unlink(mk);
  rmdir(dir);
  return rc;
}
