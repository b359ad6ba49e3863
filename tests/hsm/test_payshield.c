/*
 * test_payshield.c — the payshield backend: its wire encoding against
 * public payShield examples, its key table, its error mapping, and its
 * behaviour against the simulator (tests/sim): known answers, pipelining
 * with answers out of order, timeouts, dropped connections, reconnection
 * and hostile responses.
 */
#include "crypto.h"
#include "hsm.h"
#include "payshield_internal.h"
#include "payshield_sim.h"
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define TPK_HEX "0123456789ABCDEFFEDCBA9876543210"
#define ZPK_HEX "89E88CF7931444F334BD7547FC3F380C"

/* ------------------------------------------------------------------------ */
/* Codec: golden bytes from outside this project                             */

/* The public CC example (softwaregroup-bg/ut-codec-payshield
 * test/config/test.js, quoted in the reference):
 *   0011 CC UBB224A0D70899E7D216A4DDDA615C078 UEE424E608E9CF0071E239F9E15032C81
 *   12 14D3E09CD3B6456E 01 01 540028800010
 * header 0011, source and destination ZPK cryptograms, max PIN length 12,
 * PIN block, ISO 0 in and out, account 540028800010. */
static const char cc_example[] =
    "0011CCUBB224A0D70899E7D216A4DDDA615C078UEE424E608E9CF0071E239F9E15032C"
    "811214D3E09CD3B6456E0101540028800010";
static const char cc_table[] =
    "# the cryptograms of the public example; their check values are not\n"
    "# published, any will do for encoding\n"
    "src.zpk ZPK UBB224A0D70899E7D216A4DDDA615C078 000000\n"
    "dst.zpk\tZPK\tUEE424E608E9CF0071E239F9E15032C81\t000000";

static void test_cc_encoding_matches_public_example(void) {
  hsm__ps_table_t *t;
  char err[128], out[256];
  CU_ASSERT_EQUAL_FATAL(
      hsm__ps_table_parse(cc_table, strlen(cc_table), &t, err, sizeof err), 0);
  uint8_t block[8];
  tu_unhex("14D3E09CD3B6456E", block, 8);
  /* Any PAN whose 12 digits before the check digit are the account. */
  hsm_pin_translate_t a = {.src = {.label = "src.zpk"},
                           .dst_label = "dst.zpk",
                           .src_format = HSM_PIN_ISO0,
                           .dst_format = HSM_PIN_ISO0,
                           .block = block,
                           .block_len = 8,
                           .pan = "4445400288000109",
                           .pan_len = 16};
  size_t n = 0;
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 11, HSM_OP_PIN_TRANSLATE, &a, out, sizeof out, &n),
      0);
  CU_ASSERT_EQUAL(n, strlen(cc_example));
  CU_ASSERT_EQUAL(memcmp(out, cc_example, strlen(cc_example)), 0);
  /* A 13-digit PAN gives the same account field. */
  a.pan = "5400288000107";
  a.pan_len = 13;
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 11, HSM_OP_PIN_TRANSLATE, &a, out, sizeof out, &n),
      0);
  CU_ASSERT_EQUAL(n == strlen(cc_example) &&
                      memcmp(out, cc_example, strlen(cc_example)) == 0,
                  1);
  /* Too small an output buffer: refused, nothing claimed written. */
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 11, HSM_OP_PIN_TRANSLATE, &a, out, 40, &n),
      HSM_E_BAD_DATA);
  CU_ASSERT_EQUAL(n, 0);
  hsm__ps_table_free(t);
}

static void test_cd_decoding_of_public_response(void) {
  static const char resp[] = "0248CD00060E4A2BFA78E244FF01";
  hsm_req_t req;
  uint32_t tag = 0;
  unsigned pin_len = 0;
  memset(&req, 0, sizeof req);
  CU_ASSERT_EQUAL(hsm__ps_decode("CC", HSM_PIN_ISO0, resp, strlen(resp), 4,
                                 &tag, &req, &pin_len),
                  0);
  CU_ASSERT_EQUAL(tag, 248);
  CU_ASSERT_EQUAL(pin_len, 6);
  uint8_t want[8];
  tu_unhex("0E4A2BFA78E244FF", want, 8);
  CU_ASSERT_EQUAL(req.result.pin.len, 8);
  CU_ASSERT_EQUAL(memcmp(req.result.pin.block, want, 8), 0);
  CU_ASSERT_EQUAL(req.result.pin.format, HSM_PIN_ISO0);
  /* The same answer to a CA is not a CC answer, and vice versa. */
  CU_ASSERT_EQUAL(hsm__ps_decode("CA", HSM_PIN_ISO0, resp, strlen(resp), 4,
                                 &tag, &req, &pin_len),
                  HSM_E_BACKEND);
  /* Format 01 was not what was asked for. */
  CU_ASSERT_EQUAL(hsm__ps_decode("CC", HSM_PIN_ISO3, resp, strlen(resp), 4,
                                 &tag, &req, &pin_len),
                  HSM_E_BACKEND);
}

static void test_b2_echo_encoding_and_decoding(void) {
  char out[64];
  size_t n = 0;
  CU_ASSERT_EQUAL(
      hsm__ps_encode(NULL, 4, 9999, HSM_OP_ECHO, NULL, out, sizeof out, &n), 0);
  CU_ASSERT_EQUAL(n, 14);
  CU_ASSERT_EQUAL(memcmp(out, "9999B20004PING", 14), 0);
  hsm_req_t req;
  uint32_t tag;
  memset(&req, 0, sizeof req);
  CU_ASSERT_EQUAL(hsm__ps_decode("B2", HSM_PIN_ISO0, "9999B300PING", 12, 4,
                                 &tag, &req, NULL),
                  0);
  CU_ASSERT_EQUAL(tag, 9999);
  CU_ASSERT_EQUAL(hsm__ps_decode("B2", HSM_PIN_ISO0, "9999B300PONG", 12, 4,
                                 &tag, &req, NULL),
                  HSM_E_BACKEND);
  /* Other header lengths: tags are zero-padded decimal. */
  CU_ASSERT_EQUAL(
      hsm__ps_encode(NULL, 6, 42, HSM_OP_ECHO, NULL, out, sizeof out, &n), 0);
  CU_ASSERT_EQUAL(memcmp(out, "000042B20004PING", 16), 0);
  CU_ASSERT_EQUAL(
      hsm__ps_encode(NULL, 12, 7, HSM_OP_ECHO, NULL, out, sizeof out, &n), 0);
  CU_ASSERT_EQUAL(memcmp(out, "000000000007B2", 14), 0);
  CU_ASSERT_EQUAL(hsm__ps_decode("B2", HSM_PIN_ISO0, "000000000007B300PING", 20,
                                 12, &tag, &req, NULL),
                  0);
  CU_ASSERT_EQUAL(tag, 7);
}

/* The other commands, against their layouts in the reference (section 1)
 * written out by hand. */
static void test_command_layouts(void) {
  char tpk[50], zpk[50], bdk[50], pvk[50], tak[50], cvk[50], kcv[7];
  char text[1024], out[512], want[512];
  CU_ASSERT_EQUAL_FATAL(
      ps_sim_wrap_key(HSM_USAGE_TPK, TPK_HEX, tpk, sizeof tpk, kcv), 0);
  CU_ASSERT_STRING_EQUAL(kcv, "08D7B4");
  CU_ASSERT_EQUAL_FATAL(
      ps_sim_wrap_key(HSM_USAGE_ZPK, ZPK_HEX, zpk, sizeof zpk, kcv), 0);
  CU_ASSERT_STRING_EQUAL(kcv, "D1D812");
  ps_sim_wrap_key(HSM_USAGE_BDK, TPK_HEX, bdk, sizeof bdk, kcv);
  ps_sim_wrap_key(HSM_USAGE_PVK, TPK_HEX, pvk, sizeof pvk, kcv);
  ps_sim_wrap_key(HSM_USAGE_TAK, TPK_HEX, tak, sizeof tak, kcv);
  ps_sim_wrap_key(HSM_USAGE_CVK, TPK_HEX, cvk, sizeof cvk, kcv);
  snprintf(text, sizeof text,
           "t.tpk TPK %s 08D7B4\ni.zpk ZPK %s D1D812\nt.bdk BDK %s 08D7B4\n"
           "p.pvk PVK %s 08D7B4\nt.tak TAK %s 08D7B4\nc.cvk CVK %s 08D7B4\n",
           tpk, zpk, bdk, pvk, tak, cvk);
  hsm__ps_table_t *t;
  CU_ASSERT_EQUAL_FATAL(hsm__ps_table_parse(text, strlen(text), &t, NULL, 0),
                        0);
  uint8_t block[8], ksn[10];
  tu_unhex("2A3D408A1977DDE9", block, 8);
  tu_unhex("FFFF9876543210E00001", ksn, 10);
  size_t n;
  /* CA */
  hsm_pin_translate_t tr = {.src = {.label = "t.tpk"},
                            .dst_label = "i.zpk",
                            .src_format = HSM_PIN_ISO0,
                            .dst_format = HSM_PIN_ISO3,
                            .block = block,
                            .block_len = 8,
                            .pan = "4111111111111111",
                            .pan_len = 16};
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 1, HSM_OP_PIN_TRANSLATE, &tr, out, sizeof out, &n),
      0);
  snprintf(want, sizeof want, "0001CA%s%s122A3D408A1977DDE90147111111111111",
           tpk, zpk);
  CU_ASSERT_EQUAL(n, strlen(want));
  CU_ASSERT_EQUAL(memcmp(out, want, n), 0);
  /* G0 */
  tr.src.label = "t.bdk";
  tr.src.ksn = ksn;
  tr.src.ksn_len = 10;
  tr.dst_format = HSM_PIN_ISO1;
  tr.pan = "4012345678909";
  tr.pan_len = 13;
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 2, HSM_OP_PIN_TRANSLATE, &tr, out, sizeof out, &n),
      0);
  snprintf(want, sizeof want,
           "0002G0%s%sA05FFFF9876543210E000012A3D408A1977DDE90105401234567890",
           bdk, zpk);
  CU_ASSERT_EQUAL(n == strlen(want) && memcmp(out, want, n) == 0, 1);
  /* DA: validation data 1122334455667788 holds the account's last 5
   * digits (66778) at position 10, so it goes as 1122334455N8. */
  hsm_pin_verify_t pv = {.src = {.label = "t.tpk"},
                         .format = HSM_PIN_ISO0,
                         .block = block,
                         .block_len = 8,
                         .pan = "1122334455667788",
                         .pan_len = 16,
                         .pvk_label = "p.pvk",
                         .method = HSM_PIN_VERIFY_IBM3624,
                         .dectab = "1234567890123456",
                         .validation_data = "1122334455667788",
                         .offset = "1111",
                         .offset_len = 4};
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 3, HSM_OP_PIN_VERIFY, &pv, out, sizeof out, &n), 0);
  snprintf(want, sizeof want,
           "0003DA%s%s122A3D408A1977DDE90104233445566778"
           "12345678901234561122334455N81111FFFFFFFF",
           tpk, pvk);
  CU_ASSERT_EQUAL(n == strlen(want) && memcmp(out, want, n) == 0, 1);
  /* Validation data without the account digits cannot be sent. */
  pv.validation_data = "0000000000000000";
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 3, HSM_OP_PIN_VERIFY, &pv, out, sizeof out, &n),
      HSM_E_UNSUPPORTED);
  /* EC (ZPK source) with a PVV. */
  pv.src.label = "i.zpk";
  pv.method = HSM_PIN_VERIFY_VISA_PVV;
  pv.pvki = 1;
  pv.pvv = "6629";
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 4, HSM_OP_PIN_VERIFY, &pv, out, sizeof out, &n), 0);
  snprintf(want, sizeof want,
           "0004EC%s%s2A3D408A1977DDE901233445566778"
           "16629",
           zpk, pvk);
  CU_ASSERT_EQUAL(n == strlen(want) && memcmp(out, want, n) == 0, 1);
  /* M6 and M8: mode 0, binary input, MAC size, algorithm 3, padding, key
   * type 003, key, length in hex, message, (MAC). */
  const char *msg = "Now is the time for all ";
  uint8_t mac[8];
  tu_unhex("A1C72E74EA3FA9B6", mac, 8);
  hsm_mac_t m = {.key_label = "t.tak",
                 .alg = HSM_MAC_RETAIL,
                 .data = (const uint8_t *)msg,
                 .len = strlen(msg),
                 .mac = mac,
                 .mac_len = 4};
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 5, HSM_OP_MAC_GENERATE, &m, out, sizeof out, &n), 0);
  snprintf(want, sizeof want, "0005M600131003%s0018%s", tak, msg);
  CU_ASSERT_EQUAL(n == strlen(want) && memcmp(out, want, n) == 0, 1);
  m.padding = 2;
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 6, HSM_OP_MAC_VERIFY, &m, out, sizeof out, &n), 0);
  snprintf(want, sizeof want, "0006M800032003%s0018%sA1C72E74", tak, msg);
  CU_ASSERT_EQUAL(n == strlen(want) && memcmp(out, want, n) == 0, 1);
  /* CY */
  hsm_cvv_t cv = {.cvk_label = "c.cvk",
                  .pan = "4123456789012",
                  .pan_len = 13,
                  .expiry = "8701",
                  .service = "101",
                  .cvv = "370"};
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 7, HSM_OP_CVV_VERIFY, &cv, out, sizeof out, &n), 0);
  snprintf(want, sizeof want, "0007CY%s3704123456789012;8701101", cvk);
  CU_ASSERT_EQUAL(n == strlen(want) && memcmp(out, want, n) == 0, 1);
  hsm__ps_table_free(t);
}

/* ------------------------------------------------------------------------ */
/* Codec: error codes and hostile responses                                  */

static void test_error_code_table(void) {
  static const struct {
    const char *cmd, *code;
    int status;
    hsm_verify_t verify;
  } cases[] = {
      {"CA", "00", 0, HSM_VERIFY_OK},
      {"CC", "10", HSM_E_KEY_PARITY, HSM_VERIFY_OK},
      {"CC", "11", HSM_E_KEY_PARITY, HSM_VERIFY_OK},
      {"G0", "15", HSM_E_BAD_DATA, HSM_VERIFY_OK},
      {"CA", "20", HSM_E_BAD_PIN_BLOCK, HSM_VERIFY_OK},
      {"CA", "23", HSM_E_PIN_FORMAT, HSM_VERIFY_OK},
      {"CA", "24", HSM_E_PIN_LENGTH, HSM_VERIFY_OK},
      {"M6", "68", HSM_E_UNSUPPORTED, HSM_VERIFY_OK},
      {"CA", "01", HSM_E_BACKEND, HSM_VERIFY_OK}, /* 01 on a translation */
      {"M6", "01", HSM_E_BACKEND, HSM_VERIFY_OK},
      {"DA", "01", 0, HSM_VERIFY_FAILED},
      {"EA", "01", 0, HSM_VERIFY_FAILED},
      {"DC", "01", 0, HSM_VERIFY_FAILED},
      {"EC", "01", 0, HSM_VERIFY_FAILED},
      {"M8", "01", 0, HSM_VERIFY_FAILED},
      {"CY", "01", 0, HSM_VERIFY_FAILED},
      {"DA", "02", 0, HSM_VERIFY_OK}, /* warning: PVK not single length */
      {"DC", "02", HSM_E_BACKEND, HSM_VERIFY_OK},
      {"CC", "12", HSM_E_BACKEND, HSM_VERIFY_OK},
      {"CC", "27", HSM_E_BACKEND, HSM_VERIFY_OK},
      {"CC", "99", HSM_E_BACKEND, HSM_VERIFY_OK},
      {"CC", "A1", HSM_E_BACKEND, HSM_VERIFY_OK},
      {"CC", "ZZ", HSM_E_BACKEND, HSM_VERIFY_OK},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    hsm_verify_t v = HSM_VERIFY_FAILED;
    int st = hsm__ps_status(cases[i].cmd, cases[i].code, &v);
    CU_ASSERT_EQUAL(st, cases[i].status);
    CU_ASSERT_EQUAL(v, cases[i].verify);
    if (st != cases[i].status)
      printf("\n    %s error %s: %s ", cases[i].cmd, cases[i].code,
             hsm_err_name(st));
  }
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 17;
  rng_state ^= rng_state << 5;
  return rng_state;
}

/* Every truncation, every single-byte change and random bytes: decoding
 * never reads outside the message, and only the intact answer passes. */
static void test_decode_survives_hostile_responses(void) {
  static const char good[] = "0248CD00060E4A2BFA78E244FF01";
  size_t gl = strlen(good);
  char msg[64];
  hsm_req_t req;
  uint32_t tag;
  unsigned pl;
  for (size_t n = 0; n < gl; n++) {
    char *cut = malloc(n ? n : 1); /* exact size: ASan sees any overread */
    memcpy(cut, good, n);
    memset(&req, 0, sizeof req);
    CU_ASSERT_EQUAL(
        hsm__ps_decode("CC", HSM_PIN_ISO0, cut, n, 4, &tag, &req, &pl),
        HSM_E_BACKEND);
    free(cut);
  }
  for (size_t i = 4; i < gl; i++)
    for (int c = 0; c < 256; c += 7) {
      memcpy(msg, good, gl);
      if ((unsigned char)msg[i] == c)
        continue;
      msg[i] = (char)c;
      memset(&req, 0, sizeof req);
      int st = hsm__ps_decode("CC", HSM_PIN_ISO0, msg, gl, 4, &tag, &req, &pl);
      /* A changed error code may map to a known error; anything else in
       * the body is malformed.  Hex case changes are still refused. */
      CU_ASSERT(st != 0 || (i >= 10 && i < 26 && c >= 'A' && c <= 'F') ||
                (i >= 10 && i < 26 && c >= '0' && c <= '9') ||
                (i >= 8 && i < 10 && c >= '4' && c <= '9'));
    }
  for (int it = 0; it < 20000; it++) {
    size_t n = rnd() % sizeof msg;
    for (size_t i = 0; i < n; i++)
      msg[i] = (char)(i < 4 ? '0' + rnd() % 10 : rnd() & 0xFF);
    char *m = malloc(n ? n : 1);
    memcpy(m, msg, n);
    static const char *const cmds[] = {"CC", "CA", "G0", "DA", "EC",
                                       "M6", "M8", "CY", "B2"};
    memset(&req, 0, sizeof req);
    (void)hsm__ps_decode(cmds[it % 9], HSM_PIN_ISO0, m, n, 4, &tag, &req, &pl);
    free(m);
  }
}

/* The simulator's own parser on hostile requests. */
static void test_sim_parser_survives_hostile_requests(void) {
  char tpk[50], zpk[50], kcv[7], good[256], out[512];
  ps_sim_wrap_key(HSM_USAGE_TPK, TPK_HEX, tpk, sizeof tpk, kcv);
  ps_sim_wrap_key(HSM_USAGE_ZPK, ZPK_HEX, zpk, sizeof zpk, kcv);
  snprintf(good, sizeof good, "0001CA%s%s122A3D408A1977DDE90101111111111111",
           tpk, zpk);
  size_t gl = strlen(good), n;
  CU_ASSERT_EQUAL(ps_sim_answer(4, good, gl, out, sizeof out, &n), 0);
  CU_ASSERT_EQUAL(n, 28);
  CU_ASSERT_EQUAL(memcmp(out, "0001CB0004", 10), 0);
  CU_ASSERT_EQUAL(memcmp(out + 10, "3100E7D6AB527AA101", 18), 0);
  for (size_t cut = 0; cut < gl; cut++) {
    char *m = malloc(cut ? cut : 1);
    memcpy(m, good, cut);
    int rc = ps_sim_answer(4, m, cut, out, sizeof out, &n);
    CU_ASSERT(rc == -1 || (n >= 8 && memcmp(out + 6, "00", 2) != 0));
    free(m);
  }
  static const char *const cmds[] = {"CA", "CC", "G0", "DA", "EA", "DC", "EC",
                                     "M6", "M8", "CY", "B2", "NC", "ZZ"};
  for (int it = 0; it < 20000; it++) {
    char m[96];
    size_t len = 6 + rnd() % 90;
    memcpy(m, "0001", 4);
    memcpy(m + 4, cmds[it % 13], 2);
    for (size_t i = 6; i < len; i++)
      m[i] = (char)(rnd() % 3 ? "0123456789ABCDEFUTN;"[rnd() % 20]
                              : (int)(rnd() & 0xFF));
    char *exact = malloc(len);
    memcpy(exact, m, len);
    int rc = ps_sim_answer(4, exact, len, out, sizeof out, &n);
    CU_ASSERT(rc == 0 && n >= 8 && n <= sizeof out);
    free(exact);
  }
}

/* ------------------------------------------------------------------------ */
/* Key table                                                                 */

static void test_key_table_is_parsed_strictly(void) {
  static const char u32[] = "U0123456789ABCDEF0123456789ABCDEF";
  static const char *const bad[] = {
      "a ZPK U0123456789ABCDEF0123456789ABCDE D1D812",    /* 31 hex */
      "a ZPK U0123456789abcdef0123456789ABCDEF D1D812",   /* lower case */
      "a ZPK U0123456789ABCDEF0123456789ABCDEG D1D812",   /* not hex */
      "a ZPK Q0123456789ABCDEF0123456789ABCDEF D1D812",   /* scheme */
      "a ZPK T0123456789ABCDEF0123456789ABCDEF D1D812",   /* T needs 48 */
      "a ZPK U0123456789ABCDEF0123456789ABCDEF D1D81",    /* kcv 5 */
      "a ZPK U0123456789ABCDEF0123456789ABCDEF D1D8122",  /* kcv 7 */
      "a ZPK U0123456789ABCDEF0123456789ABCDEF d1d812",   /* kcv case */
      "a XYZ U0123456789ABCDEF0123456789ABCDEF D1D812",   /* usage */
      "a zpk U0123456789ABCDEF0123456789ABCDEF D1D812",   /* usage case */
      "a DEK U0123456789ABCDEF0123456789ABCDEF D1D812",   /* not here */
      "a HMAC U0123456789ABCDEF0123456789ABCDEF D1D812",  /* not here */
      "a ZPK U0123456789ABCDEF0123456789ABCDEF",          /* 3 fields */
      "a ZPK U0123456789ABCDEF0123456789ABCDEF D1D812 x", /* 5 fields */
      "a/b ZPK U0123456789ABCDEF0123456789ABCDEF D1D812", /* label */
      "a BDK 0123456789ABCDEF D1D812",                    /* single BDK */
      "a CVK 0123456789ABCDEF D1D812",                    /* single CVK */
      "a ZPK U0123456789ABCDEF0123456789ABCDEF D1D812\r", /* CR */
      "a ZPK U0123456789ABCDEF0123456789ABCDEF D1D812\xc3\xa9",
  };
  char err[256], text[512];
  hsm__ps_table_t *t = NULL;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    snprintf(text, sizeof text, "# comment\n\nok.key ZPK %s D1D812\n%s\n", u32,
             bad[i]);
    err[0] = '\0';
    int rc = hsm__ps_table_parse(text, strlen(text), &t, err, sizeof err);
    CU_ASSERT_EQUAL(rc, HSM_E_KEYSTORE);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 4"));
    /* Error messages never carry key material. */
    CU_ASSERT_PTR_NULL(strstr(err, "0123456789"));
    if (rc != HSM_E_KEYSTORE)
      printf("\n    accepted bad line %zu ", i);
  }
  /* A NUL inside a line, a 256-character line, a 64-character label. */
  snprintf(text, sizeof text, "a ZPK %s D1D812\n", u32);
  text[3] = '\0';
  CU_ASSERT_EQUAL(hsm__ps_table_parse(text, 48, &t, err, sizeof err),
                  HSM_E_KEYSTORE);
  memset(text, '#', 256);
  text[256] = '\n';
  CU_ASSERT_EQUAL(hsm__ps_table_parse(text, 257, &t, err, sizeof err),
                  HSM_E_KEYSTORE);
  CU_ASSERT_EQUAL(hsm__ps_table_parse(text + 1, 256, &t, err, sizeof err), 0);
  hsm__ps_table_free(t);
  memset(text, 'a', 64);
  snprintf(text + 64, sizeof text - 64, " ZPK %s D1D812", u32);
  CU_ASSERT_EQUAL(hsm__ps_table_parse(text, strlen(text), &t, err, sizeof err),
                  HSM_E_KEYSTORE);
  /* A label twice. */
  snprintf(text, sizeof text,
           "a ZPK %s D1D812\nb TPK %s D1D812\na ZPK %s "
           "D1D812\n",
           u32, u32, u32);
  CU_ASSERT_EQUAL(hsm__ps_table_parse(text, strlen(text), &t, err, sizeof err),
                  HSM_E_KEYSTORE);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "\"a\""));
  /* Good: tabs, single, double and triple length, X and Y schemes, no
   * final newline, an empty table. */
  snprintf(text, sizeof text,
           "\tz.zak\tZAK\t0123456789ABCDEF\tD5D44F\n"
           "y.zmk ZMK Y0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF "
           "ABCDEF\nx.tpk TPK X0123456789ABCDEF0123456789ABCDEF 000000");
  CU_ASSERT_EQUAL(hsm__ps_table_parse(text, strlen(text), &t, err, sizeof err),
                  0);
  hsm__ps_table_free(t);
  CU_ASSERT_EQUAL(hsm__ps_table_parse("", 0, &t, err, sizeof err), 0);
  hsm__ps_table_free(t);
  CU_ASSERT_EQUAL(hsm__ps_table_parse("# none\n\n", 8, &t, err, sizeof err), 0);
  hsm__ps_table_free(t);
}

static char tdir[64];

static void write_file(const char *path, const char *text, mode_t mode) {
  FILE *f = fopen(path, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fputs(text, f);
  fclose(f);
  chmod(path, mode);
}

static void test_key_table_file_must_be_private(void) {
  char path[128], link[128], err[256];
  hsm__ps_table_t *t = NULL;
  snprintf(tdir, sizeof tdir, "/tmp/pstab.XXXXXX");
  CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tdir));
  snprintf(path, sizeof path, "%s/keys.tab", tdir);
  snprintf(link, sizeof link, "%s/link.tab", tdir);
  write_file(path, "a ZPK U0123456789ABCDEF0123456789ABCDEF D1D812\n", 0600);
  CU_ASSERT_EQUAL(hsm__ps_table_load(path, &t, err, sizeof err), 0);
  hsm__ps_table_free(t);
  chmod(path, 0640);
  CU_ASSERT_EQUAL(hsm__ps_table_load(path, &t, err, sizeof err),
                  HSM_E_PERMISSIONS);
  chmod(path, 0604);
  CU_ASSERT_EQUAL(hsm__ps_table_load(path, &t, err, sizeof err),
                  HSM_E_PERMISSIONS);
  chmod(path, 0400);
  CU_ASSERT_EQUAL(hsm__ps_table_load(path, &t, err, sizeof err), 0);
  hsm__ps_table_free(t);
  CU_ASSERT_EQUAL(symlink(path, link), 0);
  CU_ASSERT_EQUAL(hsm__ps_table_load(link, &t, err, sizeof err),
                  HSM_E_PERMISSIONS);
  CU_ASSERT_EQUAL(hsm__ps_table_load(tdir, &t, err, sizeof err),
                  HSM_E_PERMISSIONS);
  unlink(link);
  unlink(path);
  CU_ASSERT_EQUAL(hsm__ps_table_load(path, &t, err, sizeof err),
                  HSM_E_KEYSTORE);
  /* Through hsm_open: the path and the line are named, not the key. */
  write_file(path, "a ZPK U0123456789ABCDEF0123456789ABCDEF D1D812\nb ZPK 12\n",
             0600);
  uv_loop_t lp;
  uv_loop_init(&lp);
  hsm_t *hh = NULL;
  hsm_config_t cfg = {.backend = "payshield",
                      .payshield_host = "127.0.0.1",
                      .payshield_key_table = path};
  CU_ASSERT_EQUAL(hsm_open(&hh, &lp, &cfg, err, sizeof err), HSM_E_KEYSTORE);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, path));
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "line 2"));
  CU_ASSERT_PTR_NULL(strstr(err, "0123456789ABCDEF"));
  cfg.payshield_host = "hsm.example.com";
  CU_ASSERT_EQUAL(hsm_open(&hh, &lp, &cfg, err, sizeof err), HSM_E_INVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(err, "numeric"));
  cfg.payshield_host = NULL;
  CU_ASSERT_EQUAL(hsm_open(&hh, &lp, &cfg, err, sizeof err), HSM_E_INVAL);
  cfg.payshield_host = "::1";
  cfg.payshield_header_len = 17;
  CU_ASSERT_EQUAL(hsm_open(&hh, &lp, &cfg, err, sizeof err), HSM_E_INVAL);
  cfg.payshield_header_len = 0;
  cfg.payshield_connections = 65;
  CU_ASSERT_EQUAL(hsm_open(&hh, &lp, &cfg, err, sizeof err), HSM_E_INVAL);
  CU_ASSERT_EQUAL(uv_run(&lp, UV_RUN_NOWAIT), 0);
  CU_ASSERT_EQUAL(uv_loop_close(&lp), 0);
  unlink(path);
  rmdir(tdir);
}

/* ------------------------------------------------------------------------ */
/* End to end against the simulator                                         */

static uv_loop_t loop;
static uv_timer_t guard;
static int guard_fired;
static ps_sim_t *sim;
static uint16_t sim_port;
static hsm_t *h;
static char dir[64], table_path[128];

static void on_guard(uv_timer_t *t) {
  (void)t;
  guard_fired = 1;
}

/* Runs the loop until cond holds or ms pass. */
#define WAIT_UNTIL(cond, ms)                                                   \
  do {                                                                         \
    guard_fired = 0;                                                           \
    uv_timer_start(&guard, on_guard, (ms), 0);                                 \
    while (!(cond) && !guard_fired)                                            \
      uv_run(&loop, UV_RUN_ONCE);                                              \
    uv_timer_stop(&guard);                                                     \
  } while (0)

static void run_ms(unsigned ms) {
  WAIT_UNTIL(0, ms);
}

typedef struct {
  hsm_req_t req;
  int done;
} op_t;

static void on_done(hsm_req_t *req) {
  ((op_t *)req->data)->done++;
}

/* Submits with a timeout of ms (0: the default) and runs the loop until
 * the callback ran (or 5 s passed); the status is the submit error or the
 * request's. */
#define RUN_T(op, ms, call)                                                    \
  do {                                                                         \
    memset(&(op), 0, sizeof(op));                                              \
    (op).req.timeout_ms = (ms);                                                \
    (op).req.data = &(op);                                                     \
    int rc_ = (call);                                                          \
    if (rc_ == 0) {                                                            \
      WAIT_UNTIL((op).done, 5000);                                             \
      CU_ASSERT_EQUAL((op).done, 1);                                           \
    } else {                                                                   \
      (op).req.status = rc_;                                                   \
    }                                                                          \
  } while (0)
#define RUN(op, call) RUN_T(op, 0, call)

static uint64_t ctr(const char *name) {
  return hsm__ps_counter(h, name);
}

static void add_key(FILE *f, const char *label, hsm_usage_t u,
                    const char *hex) {
  char crypt[50], kcv[7];
  if (ps_sim_wrap_key(u, hex, crypt, sizeof crypt, kcv) == 0)
    fprintf(f, "%s %s %s %s\n", label, hsm_usage_name(u), crypt, kcv);
}

static int open_hsm(hsm_t **out, unsigned connections, unsigned header_len,
                    uint16_t port) {
  hsm_config_t cfg = {.backend = "payshield",
                      .payshield_host = "127.0.0.1",
                      .payshield_port = port,
                      .payshield_header_len = header_len,
                      .payshield_connections = connections,
                      .payshield_key_table = table_path};
  char err[256];
  int rc = hsm_open(out, &loop, &cfg, err, sizeof err);
  if (rc)
    fprintf(stderr, "hsm_open: %s\n", err);
  return rc;
}

static int e2e_init(void) {
  snprintf(dir, sizeof dir, "/tmp/pse2e.XXXXXX");
  if (!mkdtemp(dir) || uv_loop_init(&loop))
    return -1;
  uv_timer_init(&loop, &guard);
  if (ps_sim_start(&sim, &loop, 0, 4))
    return -1;
  sim_port = ps_sim_port(sim);
  snprintf(table_path, sizeof table_path, "%s/payshield.keys", dir);
  FILE *f = fopen(table_path, "w");
  if (!f)
    return -1;
  fprintf(f, "# test keys under the simulator's TEST LMK\n");
  add_key(f, "t.tpk", HSM_USAGE_TPK, TPK_HEX);
  add_key(f, "i.zpk", HSM_USAGE_ZPK, ZPK_HEX);
  add_key(f, "o.zpk", HSM_USAGE_ZPK, TPK_HEX);
  add_key(f, "t.bdk", HSM_USAGE_BDK, TPK_HEX);
  add_key(f, "t.pvk", HSM_USAGE_PVK, TPK_HEX);
  add_key(f, "t.tak", HSM_USAGE_TAK, TPK_HEX);
  add_key(f, "z.zak", HSM_USAGE_ZAK, TPK_HEX);
  add_key(f, "t.cvk", HSM_USAGE_CVK, TPK_HEX);
  /* A ZPK entry whose cryptogram is really a TPK's: the simulator sees a
   * parity error, as a real HSM would with the wrong LMK variant. */
  char crypt[50], kcv[7];
  ps_sim_wrap_key(HSM_USAGE_TPK, ZPK_HEX, crypt, sizeof crypt, kcv);
  fprintf(f, "wrong.zpk ZPK %s %s\n", crypt, kcv);
  fclose(f);
  chmod(table_path, 0600);
  if (open_hsm(&h, 2, 4, sim_port))
    return -1;
  WAIT_UNTIL(ctr("up") == 2, 3000);
  return ctr("up") == 2 ? 0 : -1;
}

static int e2e_clean(void) {
  hsm_close(h);
  ps_sim_stop(sim);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop);
  unlink(table_path);
  rmdir(dir);
  return rc ? -1 : 0;
}

/* What a terminal or network sends: an ISO 0 block for pin and pan
 * enciphered under a clear key (computed here, not by the backend). */
static void iso0_under(const char *keyhex, const char *pin, const char *pan,
                       uint8_t out[8]) {
  uint8_t key[16], clear[8];
  tu_unhex(keyhex, key, 16);
  CU_ASSERT_EQUAL_FATAL(
      hsm__pinblock_encode(0, pin, strlen(pin), pan, strlen(pan), NULL, clear),
      0);
  CU_ASSERT_EQUAL_FATAL(hsm__ecb_raw(HSM__TDES, key, 16, 1, clear, out, 8), 0);
}

static void test_echo_and_capabilities(void) {
  op_t op;
  RUN(op, hsm_echo(h, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(hsm_in_flight(h), 0);
  unsigned caps = hsm_capabilities(h);
  CU_ASSERT_STRING_EQUAL(hsm_backend_name(h), "payshield");
  CU_ASSERT_EQUAL(caps, HSM_CAP_PIN_TRANSLATE | HSM_CAP_DUKPT_TDES |
                            HSM_CAP_PIN_VERIFY | HSM_CAP_MAC_RETAIL |
                            HSM_CAP_CVV);
  CU_ASSERT_FALSE(caps & (HSM_CAP_DATA | HSM_CAP_DUKPT_AES | HSM_CAP_PIN_AES |
                          HSM_CAP_MAC_CMAC | HSM_CAP_KEY_TR31 |
                          HSM_CAP_KEY_GENERATE | HSM_CAP_KEY_COMPONENTS));
}

static void test_translate_tpk_to_zpk_known_vector(void) {
  uint8_t in[8], want[8];
  tu_unhex("2A3D408A1977DDE9", in, 8);
  tu_unhex("3100E7D6AB527AA1", want, 8);
  hsm_pin_translate_t a = {.src = {.label = "t.tpk"},
                           .dst_label = "i.zpk",
                           .src_format = HSM_PIN_ISO0,
                           .dst_format = HSM_PIN_ISO0,
                           .block = in,
                           .block_len = 8,
                           .pan = "4111111111111111",
                           .pan_len = 16};
  op_t op;
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.result.pin.len, 8);
  CU_ASSERT_EQUAL(op.req.result.pin.format, HSM_PIN_ISO0);
  CU_ASSERT_EQUAL(memcmp(op.req.result.pin.block, want, 8), 0);
  /* What went on the wire is what the encoder makes, under a 4-digit
   * decimal header. */
  char got[512], enc[512], text[1024];
  size_t gl = ps_sim_last_request(sim, got, sizeof got), el = 0;
  FILE *f = fopen(table_path, "r");
  size_t tl = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  hsm__ps_table_t *t;
  CU_ASSERT_EQUAL_FATAL(hsm__ps_table_parse(text, tl, &t, NULL, 0), 0);
  CU_ASSERT_EQUAL(
      hsm__ps_encode(t, 4, 0, HSM_OP_PIN_TRANSLATE, &a, enc, sizeof enc, &el),
      0);
  hsm__ps_table_free(t);
  CU_ASSERT_EQUAL(gl, el);
  CU_ASSERT(gl > 6 && memcmp(got + 4, "CA", 2) == 0);
  CU_ASSERT_EQUAL(memcmp(got + 4, enc + 4, el - 4), 0);
  for (int i = 0; i < 4; i++)
    CU_ASSERT(got[i] >= '0' && got[i] <= '9');
}

static void test_translate_zpk_to_zpk_iso3_and_back(void) {
  uint8_t in[8], want[8], iso3[8];
  tu_unhex("2A3D408A1977DDE9", in, 8);
  tu_unhex("3100E7D6AB527AA1", want, 8);
  hsm_pin_translate_t a = {.src = {.label = "t.tpk"},
                           .dst_label = "i.zpk",
                           .src_format = HSM_PIN_ISO0,
                           .dst_format = HSM_PIN_ISO3,
                           .block = in,
                           .block_len = 8,
                           .pan = "4111111111111111",
                           .pan_len = 16};
  op_t op;
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL_FATAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.result.pin.format, HSM_PIN_ISO3);
  memcpy(iso3, op.req.result.pin.block, 8);
  /* ZPK to ZPK (CC), ISO 3 to ISO 1 to ISO 0 through another ZPK. */
  hsm_pin_translate_t b = a;
  b.src.label = "i.zpk";
  b.dst_label = "o.zpk";
  b.src_format = HSM_PIN_ISO3;
  b.dst_format = HSM_PIN_ISO1;
  b.block = iso3;
  RUN(op, hsm_pin_translate(h, &op.req, &b, on_done));
  CU_ASSERT_EQUAL_FATAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.result.pin.format, HSM_PIN_ISO1);
  uint8_t iso1[8];
  memcpy(iso1, op.req.result.pin.block, 8);
  b.src.label = "o.zpk";
  b.dst_label = "i.zpk";
  b.src_format = HSM_PIN_ISO1;
  b.dst_format = HSM_PIN_ISO0;
  b.block = iso1;
  RUN(op, hsm_pin_translate(h, &op.req, &b, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(memcmp(op.req.result.pin.block, want, 8), 0);
  char last[8];
  ps_sim_last_request(sim, last, sizeof last);
  CU_ASSERT_EQUAL(memcmp(last + 4, "CC", 2), 0);
}

static void test_translate_dukpt_known_vector(void) {
  uint8_t in[8], ksn[10], want[8];
  tu_unhex("1B9C1845EB993A7A", in, 8);
  tu_unhex("FFFF9876543210E00001", ksn, 10);
  tu_unhex("8856DB66D89E9EFF", want, 8);
  hsm_pin_translate_t a = {.src = {.label = "t.bdk", .ksn = ksn, .ksn_len = 10},
                           .dst_label = "i.zpk",
                           .src_format = HSM_PIN_ISO0,
                           .dst_format = HSM_PIN_ISO0,
                           .block = in,
                           .block_len = 8,
                           .pan = "4012345678909",
                           .pan_len = 13};
  op_t op;
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(memcmp(op.req.result.pin.block, want, 8), 0);
  char last[8];
  ps_sim_last_request(sim, last, sizeof last);
  CU_ASSERT_EQUAL(memcmp(last + 4, "G0", 2), 0);
  /* AES DUKPT (12-byte KSN) is not offered; ISO 4 neither. */
  uint8_t ksn12[12] = {0};
  a.src.ksn = ksn12;
  a.src.ksn_len = 12;
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_UNSUPPORTED);
  a.src.ksn = ksn;
  a.src.ksn_len = 10;
  a.dst_format = HSM_PIN_ISO4;
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_PIN_FORMAT);
}

static void test_pin_verify_ibm3624_ok_and_failed(void) {
  /* psec vectors: PVK 0123..3210, table 1234567890123456, validation data
   * = PAN 1122334455667788; PIN 5635 has offset 1111. */
  uint8_t tblock[8], zblock[8];
  iso0_under(TPK_HEX, "5635", "1122334455667788", tblock);
  iso0_under(ZPK_HEX, "5635", "1122334455667788", zblock);
  hsm_pin_verify_t a = {.src = {.label = "t.tpk"},
                        .format = HSM_PIN_ISO0,
                        .block = tblock,
                        .block_len = 8,
                        .pan = "1122334455667788",
                        .pan_len = 16,
                        .pvk_label = "t.pvk",
                        .method = HSM_PIN_VERIFY_IBM3624,
                        .dectab = "1234567890123456",
                        .validation_data = "1122334455667788",
                        .offset = "1111",
                        .offset_len = 4};
  op_t op;
  RUN(op, hsm_pin_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_OK);
  a.offset = "1112";
  RUN(op, hsm_pin_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_FAILED);
  /* Interchange (EA): the block under a ZPK. */
  a.src.label = "i.zpk";
  a.block = zblock;
  a.offset = "1111";
  RUN(op, hsm_pin_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_OK);
  char last[8];
  ps_sim_last_request(sim, last, sizeof last);
  CU_ASSERT_EQUAL(memcmp(last + 4, "EA", 2), 0);
  a.offset = "0000";
  RUN(op, hsm_pin_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_FAILED);
  /* A wrong decimalisation table is refused before the HSM sees it. */
  a.dectab = "12345678901234X6";
  RUN(op, hsm_pin_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_BAD_DATA);
}

static void test_pin_verify_visa_pvv_ok_and_failed(void) {
  /* psec: PVK 0123..3210, PVKI 1, PIN 1234, PAN 4321000000001234: 6629. */
  uint8_t tblock[8], zblock[8];
  iso0_under(TPK_HEX, "1234", "4321000000001234", tblock);
  iso0_under(ZPK_HEX, "1234", "4321000000001234", zblock);
  hsm_pin_verify_t a = {.src = {.label = "t.tpk"},
                        .format = HSM_PIN_ISO0,
                        .block = tblock,
                        .block_len = 8,
                        .pan = "4321000000001234",
                        .pan_len = 16,
                        .pvk_label = "t.pvk",
                        .method = HSM_PIN_VERIFY_VISA_PVV,
                        .pvki = 1,
                        .pvv = "6629"};
  op_t op;
  RUN(op, hsm_pin_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_OK);
  a.pvv = "6630";
  RUN(op, hsm_pin_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_FAILED);
  a.src.label = "i.zpk";
  a.block = zblock;
  a.pvv = "6629";
  RUN(op, hsm_pin_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_OK);
  a.pvki = 2;
  RUN(op, hsm_pin_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_FAILED);
  /* A malformed PVV from the card is a failed verification, decided
   * without the HSM. */
  uint64_t sent = ctr("sent");
  a.pvv = "66a9";
  RUN(op, hsm_pin_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_FAILED);
  CU_ASSERT_EQUAL(ctr("sent"), sent);
  /* DUKPT-sourced verification is not wired. */
  uint8_t ksn[10] = {0};
  a.src.label = "t.bdk";
  a.src.ksn = ksn;
  a.src.ksn_len = 10;
  RUN(op, hsm_pin_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_UNSUPPORTED);
}

static void test_mac_generate_and_verify(void) {
  /* ISO 9797-1 Annex B: algorithm 3, padding 1: A1C72E74EA3FA9B6. */
  const char *msg = "Now is the time for all ";
  uint8_t want[8];
  tu_unhex("A1C72E74EA3FA9B6", want, 8);
  hsm_mac_t a = {.key_label = "t.tak",
                 .alg = HSM_MAC_RETAIL,
                 .padding = 1,
                 .data = (const uint8_t *)msg,
                 .len = strlen(msg)};
  op_t op;
  RUN(op, hsm_mac_generate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL_FATAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.result.mac.len, 8);
  CU_ASSERT_EQUAL(memcmp(op.req.result.mac.mac, want, 8), 0);
  /* M8 with 8 and 4 bytes; 6 bytes are compared by the client on an M6. */
  a.mac = want;
  size_t lens[] = {8, 4, 6};
  const char *cmds[] = {"M8", "M8", "M6"};
  for (int i = 0; i < 3; i++) {
    a.mac_len = lens[i];
    RUN(op, hsm_mac_verify(h, &op.req, &a, on_done));
    CU_ASSERT_EQUAL(op.req.status, 0);
    CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_OK);
    char last[8];
    ps_sim_last_request(sim, last, sizeof last);
    CU_ASSERT_EQUAL(memcmp(last + 4, cmds[i], 2), 0);
    uint8_t bad[8];
    memcpy(bad, want, 8);
    bad[lens[i] - 1] ^= 1;
    a.mac = bad;
    RUN(op, hsm_mac_verify(h, &op.req, &a, on_done));
    CU_ASSERT_EQUAL(op.req.status, 0);
    CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_FAILED);
    a.mac = want;
  }
  /* The same key as a ZAK, padding 2, and the empty message. */
  a.key_label = "z.zak";
  a.padding = 2;
  RUN(op, hsm_mac_generate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  uint8_t ref[8];
  hsm__mac_iso9797(3, 2,
                   (const uint8_t *)"\x01\x23\x45\x67\x89\xAB\xCD\xEF"
                                    "\xFE\xDC\xBA\x98\x76\x54\x32\x10",
                   16, (const uint8_t *)msg, strlen(msg), ref);
  CU_ASSERT_EQUAL(memcmp(op.req.result.mac.mac, ref, 8), 0);
  a.len = 0;
  a.data = NULL;
  RUN(op, hsm_mac_generate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  /* A PIN key is not a MAC key; CMAC is not offered; too long a message. */
  a.key_label = "i.zpk";
  RUN(op, hsm_mac_generate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_KEY_USAGE);
  a.key_label = "t.tak";
  a.alg = HSM_MAC_AES_CMAC;
  RUN(op, hsm_mac_generate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_UNSUPPORTED);
  static uint8_t big[8193];
  a.alg = HSM_MAC_RETAIL;
  a.data = big;
  a.len = sizeof big;
  RUN(op, hsm_mac_generate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_BAD_DATA);
  a.len = sizeof big - 1;
  RUN(op, hsm_mac_generate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
}

static void test_cvv_verify(void) {
  /* Visa test data: CVK 0123456789ABCDEF/FEDCBA9876543210,
   * 4123456789012, 8701, 101: 370. */
  hsm_cvv_t a = {.cvk_label = "t.cvk",
                 .pan = "4123456789012",
                 .pan_len = 13,
                 .expiry = "8701",
                 .service = "101",
                 .cvv = "370"};
  op_t op;
  RUN(op, hsm_cvv_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_OK);
  a.cvv = "371";
  RUN(op, hsm_cvv_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_FAILED);
  a.cvv = "37";
  RUN(op, hsm_cvv_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_FAILED);
  a.cvv = "370";
  a.expiry = "87;1";
  RUN(op, hsm_cvv_verify(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_BAD_DATA);
}

static void test_key_errors_complete_without_the_hsm(void) {
  uint8_t in[8];
  tu_unhex("2A3D408A1977DDE9", in, 8);
  hsm_pin_translate_t a = {.src = {.label = "t.tpk"},
                           .dst_label = "t.tpk",
                           .src_format = HSM_PIN_ISO0,
                           .dst_format = HSM_PIN_ISO0,
                           .block = in,
                           .block_len = 8,
                           .pan = "4111111111111111",
                           .pan_len = 16};
  uint64_t sent = ctr("sent");
  op_t op;
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_KEY_USAGE);
  a.dst_label = "no.such.key";
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_KEY_NOT_FOUND);
  a.dst_label = "i.zpk";
  a.src.label = "t.bdk"; /* a BDK without a KSN */
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_KEY_USAGE);
  a.src.label = "t.tpk";
  a.pan = "411111111111"; /* 12 digits: no account field */
  a.pan_len = 12;
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_BAD_PAN);
  CU_ASSERT_EQUAL(ctr("sent"), sent);
  /* Data protection belongs to soft or pkcs11: refused at the call. */
  hsm_data_t d = {.key_label = "t.tpk", .in = in, .len = 8};
  memset(&op, 0, sizeof op);
  CU_ASSERT_EQUAL(hsm_data_encrypt(h, &op.req, &d, on_done), HSM_E_UNSUPPORTED);
  CU_ASSERT_EQUAL(hsm_hmac(h, &op.req, &d, on_done), HSM_E_UNSUPPORTED);
  CU_ASSERT_EQUAL(op.done, 0);
  /* The HSM itself refuses a key under the wrong LMK variant. */
  a.pan = "4111111111111111";
  a.pan_len = 16;
  a.dst_label = "wrong.zpk";
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_KEY_PARITY);
  /* ...and a damaged PIN block. */
  uint8_t bad[8];
  memcpy(bad, in, 8);
  bad[0] ^= 0x80;
  a.dst_label = "i.zpk";
  a.block = bad;
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_BAD_PIN_BLOCK);
  CU_ASSERT_EQUAL(hsm_in_flight(h), 0);
}

static int listed;
static void count_key(void *ctx, const hsm_key_info_t *info) {
  (void)ctx;
  listed++;
  CU_ASSERT_EQUAL(info->alg, HSM_ALG_TDES);
  CU_ASSERT_EQUAL(info->version, 1);
  CU_ASSERT_EQUAL(strlen(info->kcv), 6);
}

static void test_key_list_and_info_from_table(void) {
  hsm_key_info_t info;
  CU_ASSERT_EQUAL(hsm_key_info(h, "i.zpk", &info), 0);
  CU_ASSERT_STRING_EQUAL(info.label, "i.zpk");
  CU_ASSERT_STRING_EQUAL(info.kcv, "D1D812");
  CU_ASSERT_EQUAL(info.usage, HSM_USAGE_ZPK);
  CU_ASSERT_EQUAL(info.length, 16);
  CU_ASSERT_EQUAL(hsm_key_info(h, "t.tpk", &info), 0);
  CU_ASSERT_STRING_EQUAL(info.kcv, "08D7B4");
  CU_ASSERT_EQUAL(hsm_key_info(h, "nope", &info), HSM_E_KEY_NOT_FOUND);
  listed = 0;
  CU_ASSERT_EQUAL(hsm_key_list(h, count_key, NULL), 0);
  CU_ASSERT_EQUAL(listed, 9);
  CU_ASSERT_EQUAL(
      hsm_key_generate(h, "k", HSM_USAGE_ZPK, HSM_ALG_TDES, 16, "test", &info),
      HSM_E_UNSUPPORTED);
  CU_ASSERT_EQUAL(hsm_key_destroy(h, "i.zpk", "test"), HSM_E_UNSUPPORTED);
  char block[128];
  CU_ASSERT_EQUAL(
      hsm_key_export_tr31(h, "i.zpk", "x", block, sizeof block, "test"),
      HSM_E_UNSUPPORTED);
}

/* ------------------------------------------------------------------------ */
/* Key exchange (A6, A8) and the LMK check (NC)                              */

#define ZMK_HEX "4CA2161637D0133E5E151AEA45DA2A12"

static char kx_path[160];

/* A key table of its own, so the shared one stays as the other tests
 * expect it; extra: more lines (may be NULL). */
static hsm_t *kx_open(const char *extra) {
  snprintf(kx_path, sizeof kx_path, "%s/kx.keys", dir);
  FILE *f = fopen(kx_path, "w");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  fprintf(f, "# key exchange\n");
  add_key(f, "z.zmk", HSM_USAGE_ZMK, ZMK_HEX);
  add_key(f, "t.tmk", HSM_USAGE_TMK, ZMK_HEX);
  add_key(f, "a.zpk", HSM_USAGE_ZPK, ZPK_HEX);
  add_key(f, "a.tak", HSM_USAGE_TAK, TPK_HEX);
  add_key(f, "a.pvk", HSM_USAGE_PVK, TPK_HEX);
  if (extra)
    fputs(extra, f);
  fclose(f);
  chmod(kx_path, 0600);
  hsm_config_t cfg = {.backend = "payshield",
                      .payshield_host = "127.0.0.1",
                      .payshield_port = sim_port,
                      .payshield_key_table = kx_path};
  hsm_t *k = NULL;
  char err[256];
  CU_ASSERT_EQUAL_FATAL(hsm_open(&k, &loop, &cfg, err, sizeof err), 0);
  WAIT_UNTIL(hsm__ps_counter(k, "lmk_checked") >= 1, 3000);
  return k;
}

static void kx_close(hsm_t *k) {
  hsm_close(k);
  unlink(kx_path);
}

/* The whole key table file, NUL-terminated. */
static size_t slurp(const char *path, char *out, size_t cap) {
  FILE *f = fopen(path, "rb");
  if (!f)
    return 0;
  size_t n = fread(out, 1, cap - 1, f);
  fclose(f);
  out[n] = '\0';
  return n;
}

/* No temporary file ("kx.keys.XXXXXX") is left in the directory. */
static int temp_files_left(void) {
  int n = 0;
  uv_fs_t req;
  uv_dirent_t ent;
  if (uv_fs_scandir(NULL, &req, dir, 0, NULL) < 0)
    return -1;
  while (uv_fs_scandir_next(&req, &ent) != UV_EOF)
    n += strncmp(ent.name, "kx.keys.", 8) == 0;
  uv_fs_req_cleanup(&req);
  return n;
}

/* The key under the clear ZMK, as a network would send it. */
static void under_zmk(const char *keyhex, uint8_t out[16]) {
  uint8_t zmk[16], key[16];
  tu_unhex(ZMK_HEX, zmk, 16);
  tu_unhex(keyhex, key, 16);
  hsm__des_set_parity(key, 16);
  CU_ASSERT_EQUAL_FATAL(hsm__ecb_raw(HSM__TDES, zmk, 16, 1, key, out, 16), 0);
}

static void kcv_of(const char *keyhex, char kcv[7]) {
  uint8_t key[16];
  tu_unhex(keyhex, key, 16);
  hsm__des_set_parity(key, 16);
  CU_ASSERT_EQUAL(hsm_component_kcv(HSM_ALG_TDES, key, 16, kcv), 0);
}

/* Golden requests, after the 4-character header, from the reference's
 * field layouts (section 1 of hsm-and-payshield.md):
 *   NC: the command code alone ("NC→ND ... request fields: —");
 *   A8: "A8" | key type 3H (001: ZPK) | ZMK (LMK 04-05: U + 32H) | key
 *       under the LMK (U + 32H) | key scheme under the ZMK 1A (X);
 *   A6: "A6" | key type 3H | ZMK | key under the ZMK (X + 32H) | key
 *       scheme under the LMK 1A (U). */
static void test_key_exchange_golden_requests(void) {
  char zmk[50], zpk[50], kcv[7], req[256], want[256];
  ps_sim_wrap_key(HSM_USAGE_ZMK, ZMK_HEX, zmk, sizeof zmk, kcv);
  ps_sim_wrap_key(HSM_USAGE_ZPK, ZPK_HEX, zpk, sizeof zpk, kcv);
  hsm_t *k = kx_open(NULL);
  /* The first request on a new connection is its NC, tag 0001. */
  size_t n = ps_sim_last_request(sim, req, sizeof req);
  CU_ASSERT_EQUAL(n, 6);
  CU_ASSERT_EQUAL(memcmp(req, "0001NC", 6), 0);
  uint8_t cg[24];
  size_t cl = 0;
  hsm_key_info_t info;
  CU_ASSERT_EQUAL_FATAL(hsm_key_export_ecb(k, "a.zpk", "z.zmk", cg, sizeof cg,
                                           &cl, "test", &info),
                        0);
  snprintf(want, sizeof want, "A8001%s%sX", zmk, zpk);
  n = ps_sim_last_request(sim, req, sizeof req);
  CU_ASSERT_EQUAL(n, 4 + strlen(want));
  CU_ASSERT_EQUAL(memcmp(req + 4, want, strlen(want)), 0);
  CU_ASSERT_EQUAL(hsm_key_import_ecb(k, "b.zpk", HSM_USAGE_ZPK, "z.zmk", cg, cl,
                                     info.kcv, 0, "test", &info),
                  0);
  char hex[33];
  static const char digits[] = "0123456789ABCDEF";
  for (size_t i = 0; i < 16; i++) {
    hex[2 * i] = digits[cg[i] >> 4];
    hex[2 * i + 1] = digits[cg[i] & 15];
  }
  hex[32] = '\0';
  snprintf(want, sizeof want, "A6001%sX%sU", zmk, hex);
  n = ps_sim_last_request(sim, req, sizeof req);
  CU_ASSERT_EQUAL(n, 4 + strlen(want));
  CU_ASSERT_EQUAL(memcmp(req + 4, want, strlen(want)), 0);
  kx_close(k);
}

/* A zone key exported under the ZMK (A8) and imported under it as a new
 * label (A6) is the same key; the key table file gets the line, stays
 * 0600, and no temporary file is left. */
static void test_export_then_import_same_kcv(void) {
  hsm_t *k = kx_open(NULL);
  hsm_key_info_t zpk, out, back;
  CU_ASSERT_EQUAL(hsm_key_info(k, "a.zpk", &zpk), 0);
  uint8_t cg[24];
  size_t cl = 0;
  CU_ASSERT_EQUAL_FATAL(
      hsm_key_export_ecb(k, "a.zpk", "z.zmk", cg, sizeof cg, &cl, "test", &out),
      0);
  CU_ASSERT_EQUAL(cl, 16);
  CU_ASSERT_STRING_EQUAL(out.kcv, zpk.kcv);
  /* What the network holds: the same cryptogram as computed in clear. */
  uint8_t want[16];
  under_zmk(ZPK_HEX, want);
  CU_ASSERT_EQUAL(memcmp(cg, want, 16), 0);
  CU_ASSERT_EQUAL_FATAL(hsm_key_import_ecb(k, "n.zpk", HSM_USAGE_ZPK, "z.zmk",
                                           cg, cl, zpk.kcv, 0, "test", &back),
                        0);
  CU_ASSERT_STRING_EQUAL(back.kcv, zpk.kcv);
  CU_ASSERT_EQUAL(back.version, 1);
  CU_ASSERT_EQUAL(hsm_key_info(k, "n.zpk", &back), 0);
  CU_ASSERT_STRING_EQUAL(back.kcv, zpk.kcv);
  struct stat st;
  CU_ASSERT_EQUAL(stat(kx_path, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
  CU_ASSERT_EQUAL(temp_files_left(), 0);
  char text[4096];
  slurp(kx_path, text, sizeof text);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "# key exchange\n")); /* kept */
  CU_ASSERT_PTR_NOT_NULL(strstr(text, "\nn.zpk ZPK U"));
  /* The new key works: a PIN block to it, from the original, and back. */
  uint8_t in[8];
  iso0_under(ZPK_HEX, "1234", "4111111111111111", in);
  hsm_pin_translate_t a = {.src = {.label = "a.zpk"},
                           .dst_label = "n.zpk",
                           .src_format = HSM_PIN_ISO0,
                           .dst_format = HSM_PIN_ISO0,
                           .block = in,
                           .block_len = 8,
                           .pan = "4111111111111111",
                           .pan_len = 16};
  op_t op;
  RUN(op, hsm_pin_translate(k, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(memcmp(op.req.result.pin.block, in, 8), 0);
  /* Reopened: the file parses to the same table. */
  hsm_close(k);
  hsm_config_t cfg = {.backend = "payshield",
                      .payshield_host = "127.0.0.1",
                      .payshield_port = sim_port,
                      .payshield_key_table = kx_path};
  CU_ASSERT_EQUAL_FATAL(hsm_open(&k, &loop, &cfg, NULL, 0), 0);
  CU_ASSERT_EQUAL(hsm_key_info(k, "n.zpk", &back), 0);
  CU_ASSERT_STRING_EQUAL(back.kcv, zpk.kcv);
  kx_close(k);
}

/* A wrong check value stores nothing: the file is unchanged byte for
 * byte.  Refusals that need no HSM, too. */
static void test_import_kcv_mismatch_stores_nothing(void) {
  hsm_t *k = kx_open(NULL);
  char before[4096], after[4096], kcv[7];
  size_t nb = slurp(kx_path, before, sizeof before);
  uint8_t cg[16];
  under_zmk(TPK_HEX, cg);
  hsm_key_info_t out;
  CU_ASSERT_EQUAL(hsm_key_import_ecb(k, "m.zpk", HSM_USAGE_ZPK, "z.zmk", cg, 16,
                                     "000000", 0, "test", &out),
                  HSM_E_KCV_MISMATCH);
  kcv_of(TPK_HEX, kcv);
  CU_ASSERT_EQUAL(hsm_key_info(k, "m.zpk", &out), HSM_E_KEY_NOT_FOUND);
  size_t na = slurp(kx_path, after, sizeof after);
  CU_ASSERT_EQUAL(na, nb);
  CU_ASSERT_EQUAL(memcmp(before, after, nb), 0);
  /* Wrong key-encrypting keys; usages that do not travel this way; a
   * label taken by another usage. */
  CU_ASSERT_EQUAL(hsm_key_import_ecb(k, "m.zpk", HSM_USAGE_ZPK, "a.zpk", cg, 16,
                                     kcv, 0, "test", &out),
                  HSM_E_KEY_USAGE);
  CU_ASSERT_EQUAL(hsm_key_import_ecb(k, "m.zpk", HSM_USAGE_ZPK, "t.tmk", cg, 16,
                                     kcv, 0, "test", &out),
                  HSM_E_UNSUPPORTED);
  CU_ASSERT_EQUAL(hsm_key_import_ecb(k, "m.zpk", HSM_USAGE_ZPK, "nope", cg, 16,
                                     kcv, 0, "test", &out),
                  HSM_E_KEY_NOT_FOUND);
  CU_ASSERT_EQUAL(hsm_key_import_ecb(k, "m.pvk", HSM_USAGE_PVK, "z.zmk", cg, 16,
                                     kcv, 0, "test", &out),
                  HSM_E_UNSUPPORTED);
  CU_ASSERT_EQUAL(hsm_key_import_ecb(k, "a.tak", HSM_USAGE_ZPK, "z.zmk", cg, 16,
                                     kcv, 0, "test", &out),
                  HSM_E_EXISTS);
  CU_ASSERT_EQUAL(hsm_key_import_ecb(k, "bad label", HSM_USAGE_ZPK, "z.zmk", cg,
                                     16, kcv, 0, "test", &out),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm_key_import_ecb(k, "m.zpk", HSM_USAGE_ZPK, "z.zmk", cg, 16,
                                     "XYZ123", 0, "test", &out),
                  HSM_E_INVAL);
  uint8_t buf[24];
  size_t bl = 0;
  CU_ASSERT_EQUAL(hsm_key_export_ecb(k, "a.pvk", "z.zmk", buf, sizeof buf, &bl,
                                     "test", &out),
                  HSM_E_UNSUPPORTED);
  CU_ASSERT_EQUAL(hsm_key_export_ecb(k, "a.tak", "t.tmk", buf, sizeof buf, &bl,
                                     "test", &out),
                  HSM_E_UNSUPPORTED);
  CU_ASSERT_EQUAL(
      hsm_key_export_ecb(k, "a.tak", "z.zmk", buf, 8, &bl, "test", &out),
      HSM_E_INVAL);
  /* The HSM refuses (ZMK parity): an error, nothing stored. */
  ps_sim_force_error(sim, "A6", "10", 1);
  CU_ASSERT_EQUAL(hsm_key_import_ecb(k, "m.zpk", HSM_USAGE_ZPK, "z.zmk", cg, 16,
                                     kcv, 0, "test", &out),
                  HSM_E_KEY_PARITY);
  /* A cryptogram that is not a key under this ZMK (parity): refused. */
  uint8_t junk[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
  CU_ASSERT_EQUAL(hsm_key_import_ecb(k, "m.zpk", HSM_USAGE_ZPK, "z.zmk", junk,
                                     16, kcv, 0, "test", &out),
                  HSM_E_KEY_PARITY);
  na = slurp(kx_path, after, sizeof after);
  CU_ASSERT_EQUAL(na, nb);
  CU_ASSERT_EQUAL(memcmp(before, after, nb), 0);
  CU_ASSERT_EQUAL(temp_files_left(), 0);
  kx_close(k);
}

static int nversions;
static void count_versions(void *ctx, const hsm_key_info_t *info) {
  hsm_key_info_t *v = ctx;
  if (strcmp(info->label, "a.tak") == 0 && nversions < 2)
    v[nversions++] = *info;
}

/* A zone key change: the new TAK becomes version 2, the old one is kept
 * with its not-after time (MAC verification uses the current version). */
static void test_import_new_version_keeps_old(void) {
  hsm_t *k = kx_open(NULL);
  const char *newhex = "0F1E2D3C4B5A69788796A5B4C3D2E1F0";
  char kcv[7];
  kcv_of(newhex, kcv);
  uint8_t cg[16];
  under_zmk(newhex, cg);
  hsm_key_info_t out, v[2];
  CU_ASSERT_EQUAL_FATAL(hsm_key_import_ecb(k, "a.tak", HSM_USAGE_TAK, "z.zmk",
                                           cg, 16, kcv, 2000000000, "test",
                                           &out),
                        0);
  CU_ASSERT_EQUAL(out.version, 2);
  CU_ASSERT_STRING_EQUAL(out.kcv, kcv);
  nversions = 0;
  CU_ASSERT_EQUAL(hsm_key_list(k, count_versions, v), 0);
  CU_ASSERT_EQUAL_FATAL(nversions, 2);
  CU_ASSERT_EQUAL(v[0].version, 1);
  CU_ASSERT_EQUAL(v[0].not_after, 2000000000);
  CU_ASSERT_EQUAL(v[1].version, 2);
  CU_ASSERT_EQUAL(v[1].not_after, 0);
  /* MACs are made with the current version. */
  uint8_t data[16] = "0123456789ABCDEF", key[16], mac[8];
  tu_unhex(newhex, key, 16);
  hsm__des_set_parity(key, 16);
  CU_ASSERT_EQUAL(hsm__mac_iso9797(3, 1, key, 16, data, 16, mac), 0);
  hsm_mac_t m = {
      .key_label = "a.tak", .alg = HSM_MAC_RETAIL, .data = data, .len = 16};
  op_t op;
  RUN(op, hsm_mac_generate(k, &op.req, &m, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(memcmp(op.req.result.mac.mac, mac, 8), 0);
  /* Exported again: the new key. */
  uint8_t back[24];
  size_t bl = 0;
  CU_ASSERT_EQUAL(hsm_key_export_ecb(k, "a.tak", "z.zmk", back, sizeof back,
                                     &bl, "test", &out),
                  0);
  CU_ASSERT_EQUAL(memcmp(back, cg, 16), 0);
  char text[4096];
  slurp(kx_path, text, sizeof text);
  CU_ASSERT_PTR_NOT_NULL(strstr(text, " 1 2000000000\n"));
  CU_ASSERT_PTR_NOT_NULL(strstr(text, " 2 0\n"));
  struct stat st;
  CU_ASSERT_EQUAL(stat(kx_path, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
  CU_ASSERT_EQUAL(temp_files_left(), 0);
  kx_close(k);
}

/* NC: every connection learns the LMK check value and firmware; a key
 * table that names another LMK stops every request. */
static void test_lmk_check(void) {
  uint8_t lmk[16], kv[8];
  char want[17], line[64], kcv[17], fw[10];
  tu_unhex(PS_SIM_LMK_HEX, lmk, 16);
  CU_ASSERT_EQUAL(hsm__kcv(HSM__TDES, lmk, 16, kv, 8), 0);
  static const char digits[] = "0123456789ABCDEF";
  for (size_t i = 0; i < 8; i++) {
    want[2 * i] = digits[kv[i] >> 4];
    want[2 * i + 1] = digits[kv[i] & 15];
  }
  want[16] = '\0';
  snprintf(line, sizeof line, "!lmk-check %s\n", want);
  hsm_t *k = kx_open(line);
  CU_ASSERT_EQUAL(hsm__ps_lmk(k, kcv, fw), 0);
  CU_ASSERT_STRING_EQUAL(kcv, want);
  CU_ASSERT_STRING_EQUAL(fw, "0007-E000");
  CU_ASSERT_EQUAL(hsm__ps_counter(k, "lmk_mismatch"), 0);
  op_t op;
  RUN(op, hsm_echo(k, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  kx_close(k);
  k = kx_open("!lmk-check 0123456789ABCDEF\n");
  CU_ASSERT(hsm__ps_counter(k, "lmk_mismatch") >= 1);
  RUN(op, hsm_echo(k, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_BACKEND);
  uint8_t cg[24];
  size_t cl = 0;
  hsm_key_info_t out;
  CU_ASSERT_EQUAL(
      hsm_key_export_ecb(k, "a.zpk", "z.zmk", cg, sizeof cg, &cl, "test", &out),
      HSM_E_BACKEND);
  kx_close(k);
}

/* (c) Hundreds in flight, answered out of order, each matched to its own
 * request: every request carries a different PIN. */
enum { NPIPE = 600 };
static hsm_req_t pipe_reqs[NPIPE];
static uint8_t pipe_want[NPIPE][8];
static int pipe_order[NPIPE], pipe_done, pipe_ok;

static void on_pipe(hsm_req_t *req) {
  size_t i = (size_t)(req - pipe_reqs);
  pipe_order[pipe_done++] = (int)i;
  if (req->status == 0 && memcmp(req->result.pin.block, pipe_want[i], 8) == 0)
    pipe_ok++;
}

static void test_pipelining_out_of_order(void) {
  static uint8_t in[NPIPE][8];
  const char *pan = "4111111111111111";
  for (int i = 0; i < NPIPE; i++) {
    char pin[8];
    snprintf(pin, sizeof pin, "%04d", (i * 7919) % 10000);
    iso0_under(TPK_HEX, pin, pan, in[i]);
    iso0_under(ZPK_HEX, pin, pan, pipe_want[i]);
  }
  ps_sim_set_reverse(sim, 1);
  ps_sim_set_jitter(sim, 30);
  ps_sim_stats_t before, after;
  ps_sim_stats(sim, &before);
  pipe_done = pipe_ok = 0;
  for (int i = 0; i < NPIPE; i++) {
    hsm_pin_translate_t a = {.src = {.label = "t.tpk"},
                             .dst_label = "i.zpk",
                             .src_format = HSM_PIN_ISO0,
                             .dst_format = HSM_PIN_ISO0,
                             .block = in[i],
                             .block_len = 8,
                             .pan = pan,
                             .pan_len = 16};
    memset(&pipe_reqs[i], 0, sizeof pipe_reqs[i]);
    CU_ASSERT_EQUAL(hsm_pin_translate(h, &pipe_reqs[i], &a, on_pipe), 0);
  }
  CU_ASSERT_EQUAL(hsm_in_flight(h), NPIPE);
  WAIT_UNTIL(pipe_done == NPIPE, 10000);
  ps_sim_set_reverse(sim, 0);
  ps_sim_set_jitter(sim, 0);
  ps_sim_stats(sim, &after);
  CU_ASSERT_EQUAL(pipe_done, NPIPE);
  CU_ASSERT_EQUAL(pipe_ok, NPIPE);
  CU_ASSERT_EQUAL(after.requests - before.requests, NPIPE);
  CU_ASSERT_EQUAL(hsm_in_flight(h), 0);
  int inversions = 0;
  for (int i = 1; i < pipe_done; i++)
    inversions += pipe_order[i] < pipe_order[i - 1];
  CU_ASSERT(inversions > NPIPE / 10); /* really out of order */
}

static int tags_done;
static void on_tags(hsm_req_t *req) {
  (void)req;
  tags_done++;
}

/* Header length 2: 100 tags per connection; more in flight at once than
 * that on the one connection fail at once. */
static void test_tag_space_exhausted(void) {
  ps_sim_t *s2;
  hsm_t *h2;
  CU_ASSERT_EQUAL_FATAL(ps_sim_start(&s2, &loop, 0, 2), 0);
  CU_ASSERT_EQUAL_FATAL(open_hsm(&h2, 1, 2, ps_sim_port(s2)), 0);
  /* Up, and its NC answered: every tag is free. */
  WAIT_UNTIL(hsm__ps_counter(h2, "lmk_checked") == 1, 3000);
  ps_sim_set_delay(s2, NULL, 50);
  static hsm_req_t reqs[150];
  tags_done = 0;
  int unavailable = 0, ok = 0;
  for (int i = 0; i < 150; i++) {
    memset(&reqs[i], 0, sizeof reqs[i]);
    CU_ASSERT_EQUAL(hsm_echo(h2, &reqs[i], on_tags), 0);
  }
  WAIT_UNTIL(tags_done == 150, 5000);
  for (int i = 0; i < 150; i++) {
    unavailable += reqs[i].status == HSM_E_UNAVAILABLE;
    ok += reqs[i].status == 0;
  }
  CU_ASSERT_EQUAL(tags_done, 150);
  CU_ASSERT_EQUAL(unavailable, 50);
  CU_ASSERT_EQUAL(ok, 100);
  op_t op;
  RUN(op, hsm_echo(h2, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  hsm_close(h2);
  ps_sim_stop(s2);
}

/* (d) The HSM answers after the request's deadline: HSM_E_TIMEOUT, one
 * callback, and the late answer is dropped and counted. */
static void test_timeout_then_late_answer_dropped(void) {
  uint8_t in[8]; /* the known block under i.zpk */
  tu_unhex("3100E7D6AB527AA1", in, 8);
  hsm_pin_translate_t a = {.src = {.label = "i.zpk"},
                           .dst_label = "i.zpk",
                           .src_format = HSM_PIN_ISO0,
                           .dst_format = HSM_PIN_ISO0,
                           .block = in,
                           .block_len = 8,
                           .pan = "4111111111111111",
                           .pan_len = 16};
  ps_sim_set_delay(sim, "CC", 300);
  uint64_t late = ctr("late");
  op_t op;
  uint64_t t0 = uv_now(&loop);
  RUN_T(op, 50, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_TIMEOUT);
  CU_ASSERT(uv_now(&loop) - t0 < 250);
  CU_ASSERT_EQUAL(hsm_in_flight(h), 0);
  WAIT_UNTIL(ctr("late") == late + 1, 2000);
  CU_ASSERT_EQUAL(ctr("late"), late + 1);
  CU_ASSERT_EQUAL(op.done, 1); /* no second callback */
  ps_sim_set_delay(sim, "CC", 0);
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
}

/* An HSM that stops answering: past 1024 cancelled requests waiting on one
 * connection, it is reset (after hsm.c's timeout pass, not inside it), and
 * every request still completes exactly once. */
static void test_too_many_unanswered_resets_connection(void) {
  ps_sim_t *s2;
  hsm_t *h2;
  enum { N = 1100 };
  static hsm_req_t reqs[N];
  CU_ASSERT_EQUAL_FATAL(ps_sim_start(&s2, &loop, 0, 4), 0);
  CU_ASSERT_EQUAL_FATAL(open_hsm(&h2, 1, 4, ps_sim_port(s2)), 0);
  WAIT_UNTIL(hsm__ps_counter(h2, "up") == 1, 3000);
  ps_sim_set_delay(s2, NULL, 5000);
  tags_done = 0;
  for (int i = 0; i < N; i++) {
    memset(&reqs[i], 0, sizeof reqs[i]);
    reqs[i].timeout_ms = 30;
    CU_ASSERT_EQUAL(hsm_echo(h2, &reqs[i], on_tags), 0);
  }
  WAIT_UNTIL(tags_done == N, 3000);
  CU_ASSERT_EQUAL(tags_done, N);
  int timeouts = 0;
  for (int i = 0; i < N; i++)
    timeouts += reqs[i].status == HSM_E_TIMEOUT;
  CU_ASSERT_EQUAL(timeouts, N);
  WAIT_UNTIL(hsm__ps_counter(h2, "drops") == 1, 2000);
  CU_ASSERT_EQUAL(hsm__ps_counter(h2, "drops"), 1);
  ps_sim_set_delay(s2, NULL, 0);
  WAIT_UNTIL(hsm__ps_counter(h2, "up") == 1, 3000);
  op_t op;
  RUN(op, hsm_echo(h2, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(tags_done, N);
  hsm_close(h2);
  ps_sim_stop(s2);
}

/* (e) The connection drops with a request on it: HSM_E_UNAVAILABLE at once
 * (not a timeout), then the client reconnects and requests succeed. */
static void test_drop_mid_request_then_reconnect(void) {
  uint8_t in[8];
  tu_unhex("2A3D408A1977DDE9", in, 8);
  hsm_pin_translate_t a = {.src = {.label = "t.tpk"},
                           .dst_label = "i.zpk",
                           .src_format = HSM_PIN_ISO0,
                           .dst_format = HSM_PIN_ISO0,
                           .block = in,
                           .block_len = 8,
                           .pan = "4111111111111111",
                           .pan_len = 16};
  uint64_t reconnects = ctr("reconnects");
  ps_sim_stats_t before, after;
  ps_sim_stats(sim, &before);
  ps_sim_drop_on(sim, "CA");
  op_t op;
  uint64_t t0 = uv_now(&loop);
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_UNAVAILABLE);
  CU_ASSERT(uv_now(&loop) - t0 < 1000);
  /* The other connection still serves meanwhile. */
  RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  WAIT_UNTIL(ctr("up") == 2, 3000);
  CU_ASSERT_EQUAL(ctr("up"), 2);
  CU_ASSERT(ctr("reconnects") > reconnects);
  ps_sim_stats(sim, &after);
  CU_ASSERT(after.connections > before.connections);
  for (int i = 0; i < 4; i++) {
    RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
    CU_ASSERT_EQUAL(op.req.status, 0);
  }
  /* Every connection killed at once, requests in flight on both. */
  ps_sim_set_delay(sim, NULL, 200);
  op_t ops[4];
  for (int i = 0; i < 4; i++) {
    memset(&ops[i], 0, sizeof ops[i]);
    ops[i].req.data = &ops[i];
    CU_ASSERT_EQUAL(hsm_echo(h, &ops[i].req, on_done), 0);
  }
  run_ms(20);
  ps_sim_kill_connections(sim);
  WAIT_UNTIL(ops[0].done && ops[1].done && ops[2].done && ops[3].done, 2000);
  for (int i = 0; i < 4; i++) {
    CU_ASSERT_EQUAL(ops[i].done, 1);
    CU_ASSERT_EQUAL(ops[i].req.status, HSM_E_UNAVAILABLE);
  }
  ps_sim_set_delay(sim, NULL, 0);
  /* While every connection waits for its backoff, requests fail at once. */
  RUN(op, hsm_echo(h, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_UNAVAILABLE);
  WAIT_UNTIL(ctr("up") == 2, 3000);
  RUN(op, hsm_echo(h, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
}

/* The HSM goes away entirely and comes back on the same port. */
static void test_hsm_down_then_back(void) {
  ps_sim_stop(sim);
  sim = NULL;
  WAIT_UNTIL(ctr("up") == 0, 2000);
  op_t op;
  RUN(op, hsm_echo(h, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_UNAVAILABLE);
  run_ms(300); /* a few refused reconnections: the backoff grows */
  RUN(op, hsm_echo(h, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_UNAVAILABLE);
  CU_ASSERT_EQUAL_FATAL(ps_sim_start(&sim, &loop, sim_port, 4), 0);
  WAIT_UNTIL(ctr("up") == 2, 5000);
  CU_ASSERT_EQUAL(ctr("up"), 2);
  RUN(op, hsm_echo(h, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
}

/* (f) Error codes from the HSM, through the whole path. */
static void test_error_mapping_end_to_end(void) {
  static const struct {
    const char *code;
    int status;
  } tr[] = {{"10", HSM_E_KEY_PARITY},  {"11", HSM_E_KEY_PARITY},
            {"15", HSM_E_BAD_DATA},    {"20", HSM_E_BAD_PIN_BLOCK},
            {"23", HSM_E_PIN_FORMAT},  {"24", HSM_E_PIN_LENGTH},
            {"68", HSM_E_UNSUPPORTED}, {"01", HSM_E_BACKEND},
            {"12", HSM_E_BACKEND},     {"99", HSM_E_BACKEND}};
  uint8_t in[8]; /* the known block under i.zpk */
  tu_unhex("3100E7D6AB527AA1", in, 8);
  hsm_pin_translate_t a = {.src = {.label = "i.zpk"},
                           .dst_label = "i.zpk",
                           .src_format = HSM_PIN_ISO0,
                           .dst_format = HSM_PIN_ISO0,
                           .block = in,
                           .block_len = 8,
                           .pan = "4111111111111111",
                           .pan_len = 16};
  op_t op;
  for (size_t i = 0; i < sizeof tr / sizeof tr[0]; i++) {
    ps_sim_force_error(sim, "CC", tr[i].code, 1);
    RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
    CU_ASSERT_EQUAL(op.req.status, tr[i].status);
    CU_ASSERT_EQUAL(op.req.result.pin.len, 0); /* no partial result */
  }
  /* 01 on verification commands is a verdict, not an error. */
  uint8_t tblock[8];
  iso0_under(TPK_HEX, "1234", "4321000000001234", tblock);
  hsm_pin_verify_t v = {.src = {.label = "t.tpk"},
                        .format = HSM_PIN_ISO0,
                        .block = tblock,
                        .block_len = 8,
                        .pan = "4321000000001234",
                        .pan_len = 16,
                        .pvk_label = "t.pvk",
                        .method = HSM_PIN_VERIFY_VISA_PVV,
                        .pvki = 1,
                        .pvv = "6629"};
  ps_sim_force_error(sim, "DC", "01", 1);
  RUN(op, hsm_pin_verify(h, &op.req, &v, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_FAILED);
  ps_sim_force_error(sim, "DC", "10", 1);
  RUN(op, hsm_pin_verify(h, &op.req, &v, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_KEY_PARITY);
  hsm_mac_t m = {.key_label = "t.tak",
                 .alg = HSM_MAC_RETAIL,
                 .data = (const uint8_t *)"x",
                 .len = 1,
                 .mac = tblock,
                 .mac_len = 8};
  ps_sim_force_error(sim, "M8", "01", 1);
  RUN(op, hsm_mac_verify(h, &op.req, &m, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_FAILED);
  ps_sim_force_error(sim, "M6", "68", 1);
  RUN(op, hsm_mac_generate(h, &op.req, &m, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_UNSUPPORTED);
  CU_ASSERT_EQUAL(op.req.result.mac.len, 0);
  /* 02 on DA: a warning, the PIN verified. */
  uint8_t iblock[8];
  iso0_under(TPK_HEX, "5635", "1122334455667788", iblock);
  hsm_pin_verify_t ibm = {.src = {.label = "t.tpk"},
                          .format = HSM_PIN_ISO0,
                          .block = iblock,
                          .block_len = 8,
                          .pan = "1122334455667788",
                          .pan_len = 16,
                          .pvk_label = "t.pvk",
                          .method = HSM_PIN_VERIFY_IBM3624,
                          .dectab = "1234567890123456",
                          .validation_data = "1122334455667788",
                          .offset = "1111",
                          .offset_len = 4};
  ps_sim_force_error(sim, "DA", "02", 1);
  RUN(op, hsm_pin_verify(h, &op.req, &ibm, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  CU_ASSERT_EQUAL(op.req.verify, HSM_VERIFY_OK);
}

/* (g) Malformed answers fail the request cleanly, once, and the backend
 * carries on. */
static void test_hostile_responses(void) {
  static const struct {
    ps_sim_hostile_t mode;
    int status;
    int resets;
  } cases[] = {
      {PS_SIM_HOSTILE_SHORT, HSM_E_UNAVAILABLE, 1},
      {PS_SIM_HOSTILE_GARBAGE, HSM_E_UNAVAILABLE, 1},
      {PS_SIM_HOSTILE_ZERO_LENGTH, HSM_E_UNAVAILABLE, 1},
      {PS_SIM_HOSTILE_TRUNCATED, HSM_E_UNAVAILABLE, 1},
      {PS_SIM_HOSTILE_WRONG_CODE, HSM_E_BACKEND, 0},
      {PS_SIM_HOSTILE_BAD_FIELDS, HSM_E_BACKEND, 0},
      {PS_SIM_HOSTILE_WRONG_HEADER, HSM_E_TIMEOUT, 0},
  };
  uint8_t in[8];
  tu_unhex("2A3D408A1977DDE9", in, 8);
  hsm_pin_translate_t a = {.src = {.label = "t.tpk"},
                           .dst_label = "i.zpk",
                           .src_format = HSM_PIN_ISO0,
                           .dst_format = HSM_PIN_ISO0,
                           .block = in,
                           .block_len = 8,
                           .pan = "4111111111111111",
                           .pan_len = 16};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint64_t drops = ctr("drops"), unmatched = ctr("unmatched");
    ps_sim_set_hostile(sim, cases[i].mode);
    op_t op;
    RUN_T(op, 200, hsm_pin_translate(h, &op.req, &a, on_done));
    CU_ASSERT_EQUAL(op.req.status, cases[i].status);
    CU_ASSERT_EQUAL(op.req.result.pin.len, 0);
    if (op.req.status != cases[i].status)
      printf("\n    hostile mode %d: %s ", (int)cases[i].mode,
             hsm_err_name(op.req.status));
    run_ms(20);
    CU_ASSERT_EQUAL(op.done, 1);
    CU_ASSERT_EQUAL(ctr("drops") - drops, (uint64_t)cases[i].resets);
    if (cases[i].mode == PS_SIM_HOSTILE_WRONG_HEADER)
      CU_ASSERT_EQUAL(ctr("unmatched"), unmatched + 1);
    WAIT_UNTIL(ctr("up") == 2, 3000);
    RUN(op, hsm_pin_translate(h, &op.req, &a, on_done));
    CU_ASSERT_EQUAL(op.req.status, 0);
  }
  CU_ASSERT_EQUAL(hsm_in_flight(h), 0);
}

/* Raw malformed frames at the simulator over TCP: answered 15 or 68, and a
 * frame too short for a header closes the connection. */
static void test_sim_survives_malformed_frames(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  CU_ASSERT_FATAL(fd >= 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons(sim_port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CU_ASSERT_EQUAL_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  static const char *const frames[] = {
      "0001CA", "0002CCUZZ",  "0003G0", "0004M6999", "0005CY;;;;",
      "0006QQ", "0007B2FFFF", "0008DA", "0009NCX",
  };
  char buf[512];
  size_t n = 0;
  for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
    size_t l = strlen(frames[i]);
    buf[n++] = (char)(l >> 8);
    buf[n++] = (char)l;
    memcpy(buf + n, frames[i], l);
    n += l;
  }
  memcpy(buf + n,
         "\0\x02"
         "01",
         4); /* shorter than a header: closed */
  n += 4;
  CU_ASSERT_EQUAL((size_t)send(fd, buf, n, 0), n);
  ps_sim_stats_t st;
  ps_sim_stats(sim, &st);
  uint64_t want = st.requests + 10;
  WAIT_UNTIL((ps_sim_stats(sim, &st), st.requests >= want), 2000);
  run_ms(50);
  char in[1024];
  size_t got = 0;
  for (;;) {
    ssize_t r = recv(fd, in + got, sizeof in - got, MSG_DONTWAIT);
    if (r <= 0)
      break;
    got += (size_t)r;
  }
  size_t off = 0, answers = 0;
  while (off + 2 <= got) {
    size_t l = (size_t)(unsigned char)in[off] << 8 | (unsigned char)in[off + 1];
    CU_ASSERT_FATAL(off + 2 + l <= got && l == 8);
    CU_ASSERT(memcmp(in + off + 8, "15", 2) == 0 ||
              memcmp(in + off + 8, "68", 2) == 0);
    off += 2 + l;
    answers++;
  }
  CU_ASSERT_EQUAL(answers, 9);
  CU_ASSERT_EQUAL(recv(fd, in, sizeof in, MSG_DONTWAIT), 0); /* closed */
  close(fd);
  op_t op;
  RUN(op, hsm_echo(h, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
}

/* A request before any connection is up waits for it; a request when the
 * HSM cannot be reached fails; hsm_close completes what is in flight. */
static void test_open_queue_and_close(void) {
  hsm_t *h2;
  op_t op;
  CU_ASSERT_EQUAL_FATAL(open_hsm(&h2, 3, 4, sim_port), 0);
  RUN(op, hsm_echo(h2, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, 0);
  ps_sim_set_delay(sim, NULL, 300);
  op_t ops[20];
  for (int i = 0; i < 20; i++) {
    memset(&ops[i], 0, sizeof ops[i]);
    ops[i].req.data = &ops[i];
    CU_ASSERT_EQUAL(hsm_echo(h2, &ops[i].req, on_done), 0);
  }
  run_ms(10);
  hsm_close(h2);
  for (int i = 0; i < 20; i++) {
    CU_ASSERT_EQUAL(ops[i].done, 1);
    CU_ASSERT_EQUAL(ops[i].req.status, HSM_E_UNAVAILABLE);
  }
  run_ms(400); /* the answers arrive at closed connections */
  ps_sim_set_delay(sim, NULL, 0);
  for (int i = 0; i < 20; i++)
    CU_ASSERT_EQUAL(ops[i].done, 1);
  /* Nothing listening: the first connection attempt fails the request. */
  ps_sim_t *s2;
  CU_ASSERT_EQUAL_FATAL(ps_sim_start(&s2, &loop, 0, 4), 0);
  uint16_t dead = ps_sim_port(s2);
  ps_sim_stop(s2);
  run_ms(10);
  CU_ASSERT_EQUAL_FATAL(open_hsm(&h2, 1, 4, dead), 0);
  RUN(op, hsm_echo(h2, &op.req, on_done));
  CU_ASSERT_EQUAL(op.req.status, HSM_E_UNAVAILABLE);
  hsm_close(h2);
}

int main(void) {
  static const tu_test_t codec[] = {
      {"cc_encoding_matches_public_example",
       test_cc_encoding_matches_public_example},
      {"cd_decoding_of_public_response", test_cd_decoding_of_public_response},
      {"b2_echo_encoding_and_decoding", test_b2_echo_encoding_and_decoding},
      {"command_layouts", test_command_layouts},
      {"error_code_table", test_error_code_table},
      {"decode_survives_hostile_responses",
       test_decode_survives_hostile_responses},
      {"sim_parser_survives_hostile_requests",
       test_sim_parser_survives_hostile_requests},
      {"key_table_is_parsed_strictly", test_key_table_is_parsed_strictly},
      {"key_table_file_must_be_private", test_key_table_file_must_be_private},
      {NULL, NULL}};
  static const tu_test_t e2e[] = {
      {"echo_and_capabilities", test_echo_and_capabilities},
      {"translate_tpk_to_zpk_known_vector",
       test_translate_tpk_to_zpk_known_vector},
      {"translate_zpk_to_zpk_iso3_and_back",
       test_translate_zpk_to_zpk_iso3_and_back},
      {"translate_dukpt_known_vector", test_translate_dukpt_known_vector},
      {"pin_verify_ibm3624_ok_and_failed",
       test_pin_verify_ibm3624_ok_and_failed},
      {"pin_verify_visa_pvv_ok_and_failed",
       test_pin_verify_visa_pvv_ok_and_failed},
      {"mac_generate_and_verify", test_mac_generate_and_verify},
      {"cvv_verify", test_cvv_verify},
      {"key_errors_complete_without_the_hsm",
       test_key_errors_complete_without_the_hsm},
      {"key_list_and_info_from_table", test_key_list_and_info_from_table},
      {"key_exchange_golden_requests", test_key_exchange_golden_requests},
      {"export_then_import_same_kcv", test_export_then_import_same_kcv},
      {"import_kcv_mismatch_stores_nothing",
       test_import_kcv_mismatch_stores_nothing},
      {"import_new_version_keeps_old", test_import_new_version_keeps_old},
      {"lmk_check", test_lmk_check},
      {"pipelining_out_of_order", test_pipelining_out_of_order},
      {"tag_space_exhausted", test_tag_space_exhausted},
      {"timeout_then_late_answer_dropped",
       test_timeout_then_late_answer_dropped},
      {"too_many_unanswered_resets_connection",
       test_too_many_unanswered_resets_connection},
      {"drop_mid_request_then_reconnect", test_drop_mid_request_then_reconnect},
      {"error_mapping_end_to_end", test_error_mapping_end_to_end},
      {"hostile_responses", test_hostile_responses},
      {"sim_survives_malformed_frames", test_sim_survives_malformed_frames},
      {"open_queue_and_close", test_open_queue_and_close},
      {"hsm_down_then_back", test_hsm_down_then_back},
      {NULL, NULL}};
  tu_init();
  tu_add_suite("payshield_codec", codec);
  CU_pSuite s = CU_add_suite("payshield_simulator", e2e_init, e2e_clean);
  for (const tu_test_t *t = e2e; t->name; t++)
    CU_add_test(s, t->name, t->fn);
  return tu_run();
}
