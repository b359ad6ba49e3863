/*
 * test_tr31.c — TR-31 / ANSI X9.143 key blocks: every block of
 * vectors/tr31-keyblock.txt unwraps to its key, header and check value;
 * every single-byte corruption, truncation, wrong length field, wrong KBPK
 * and unknown version is refused without leaving a key behind; wrap
 * round-trips through unwrap for every version and KBPK length and
 * reproduces the vectors' headers and lengths.
 *
 * Wrap draws its padding from hsm__random, so no vector can be reproduced
 * byte for byte; wrap is tested by unwrapping what it produced, by wrapping
 * the vectors' keys under the vectors' KBPKs, and by corrupting its
 * output.  No vector block is skipped.
 */
#include "crypto.h"
#include "hsm.h"
#include "testutil.h"
#include "vectors.h"

#include <stdio.h>
#include <string.h>

#define TR31_FILE "vectors/tr31-keyblock.txt"

enum { BLOCK_CAP = 512 };

static const char *block_name(const tv_block_t *b) {
  const char *n = tv_get(b, "name");
  return n ? n : "(unnamed)";
}

static void load(tv_file_t *f) {
  CU_ASSERT_EQUAL_FATAL(tv_load(f, TR31_FILE), 0);
  CU_ASSERT_FATAL(f->nblocks > 0);
}

/* One vector, decoded. */
typedef struct vec_s {
  const char *name;
  const char *block;
  const char *header;
  size_t len;
  uint8_t kbpk[32];
  size_t kbpklen;
  uint8_t key[32];
  size_t keylen;
} vec_t;

static void get_vec(const tv_block_t *b, vec_t *v) {
  v->name = block_name(b);
  v->block = tv_get(b, "key_block");
  v->header = tv_get(b, "header");
  CU_ASSERT_FATAL(v->block != NULL && v->header != NULL);
  v->len = strlen(v->block);
  CU_ASSERT_FATAL(v->len < BLOCK_CAP);
  v->kbpklen = tv_hex(b, "kbpk", v->kbpk, sizeof v->kbpk);
  v->keylen = tv_hex(b, "expected_key", v->key, sizeof v->key);
  CU_ASSERT_FATAL(v->kbpklen != (size_t)-1 && v->keylen != (size_t)-1);
}

static int all_bytes(const void *p, int value, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != value)
      return 0;
  return 1;
}

/* Unwraps and reports whether the block was refused the way the contract
 * says: HSM_E_KEY_BLOCK, no key length, the key buffer and header zeroed. */
static int refused(const uint8_t *kbpk, size_t kbpklen, const char *block,
                   size_t len) {
  hsm__tr31_t hdr;
  uint8_t key[32];
  size_t keylen = 99;
  memset(&hdr, 0x5A, sizeof hdr);
  memset(key, 0xA5, sizeof key);
  int rc = hsm__tr31_unwrap(kbpk, kbpklen, block, len, &hdr, key, &keylen);
  return rc == HSM_E_KEY_BLOCK && keylen == 0 && all_bytes(key, 0, 32) &&
         all_bytes(&hdr, 0, sizeof hdr);
}

/* 1 if the block unwraps: every refusal test first checks that the block
 * it spoils was good, or it would prove nothing. */
static int unwraps(const uint8_t *kbpk, size_t kbpklen, const char *block,
                   size_t len) {
  hsm__tr31_t hdr;
  uint8_t key[32];
  size_t keylen = 0;
  int rc = hsm__tr31_unwrap(kbpk, kbpklen, block, len, &hdr, key, &keylen);
  hsm__cleanse(key, sizeof key);
  return rc == 0 && keylen > 0;
}

/* Every position of block, replaced by every other byte value, is refused;
 * returns the number of corruptions that were not. */
static size_t corruptions_accepted(const char *what, const uint8_t *kbpk,
                                   size_t kbpklen, const char *block,
                                   size_t len) {
  char copy[BLOCK_CAP];
  size_t accepted = 0;
  CU_ASSERT_FATAL(unwraps(kbpk, kbpklen, block, len));
  memcpy(copy, block, len);
  for (size_t i = 0; i < len; i++) {
    for (int c = 0; c < 256; c++) {
      if ((char)c == block[i])
        continue;
      copy[i] = (char)c;
      if (!refused(kbpk, kbpklen, copy, len) && accepted++ < 5)
        fprintf(stderr, "%s: byte %zu set to 0x%02X was not refused\n", what, i,
                (unsigned)c);
    }
    copy[i] = block[i];
  }
  return accepted;
}

/* ------------------------------------------------------------------------ */
/* Unwrap against the vectors                                                */

static void test_every_vector_block_has_key_block_kbpk_and_key(void) {
  tv_file_t f;
  load(&f);
  for (size_t i = 0; i < f.nblocks; i++) {
    const tv_block_t *b = &f.blocks[i];
    int complete = tv_get(b, "key_block") && tv_get(b, "kbpk") &&
                   tv_get(b, "expected_key") && tv_get(b, "header") &&
                   tv_get(b, "source");
    if (!complete)
      fprintf(stderr, "%s: not a case this suite covers\n", block_name(b));
    CU_ASSERT(complete);
  }
  tv_free(&f);
}

static int kcv_alg(const tv_block_t *b) {
  const char *m = tv_get(b, "kcv_method");
  if (m && strncmp(m, "TDES-ECB", 8) == 0)
    return HSM__TDES;
  if (m && strncmp(m, "AES-CMAC", 8) == 0)
    return HSM__AES;
  fprintf(stderr, "%s: unknown kcv_method\n", block_name(b));
  return 0;
}

static void test_unwrap_gives_every_vector_key_header_and_kcv(void) {
  tv_file_t f;
  load(&f);
  size_t with_options = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    vec_t v;
    get_vec(&f.blocks[i], &v);
    hsm__tr31_t hdr;
    uint8_t key[32], kcv[3], want_kcv[3];
    size_t keylen = 0;
    int rc =
        hsm__tr31_unwrap(v.kbpk, v.kbpklen, v.block, v.len, &hdr, key, &keylen);
    if (rc != 0)
      fprintf(stderr, "%s: unwrap refused the block (%s)\n", v.name,
              hsm_err_name(rc));
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(keylen, v.keylen);
    CU_ASSERT(memcmp(key, v.key, v.keylen) == 0);
    CU_ASSERT_STRING_EQUAL(hdr.header, v.header);
    CU_ASSERT_EQUAL(hdr.header_len, strlen(v.header));
    CU_ASSERT_EQUAL(hdr.version, v.header[0]);
    CU_ASSERT_NSTRING_EQUAL(hdr.usage, v.header + 5, 2);
    CU_ASSERT_EQUAL(hdr.usage[2], '\0');
    CU_ASSERT_EQUAL(hdr.algorithm, v.header[7]);
    CU_ASSERT_EQUAL(hdr.mode, v.header[8]);
    CU_ASSERT_NSTRING_EQUAL(hdr.key_version, v.header + 9, 2);
    CU_ASSERT_EQUAL(hdr.key_version[2], '\0');
    CU_ASSERT_EQUAL(hdr.exportability, v.header[11]);
    int alg = kcv_alg(&f.blocks[i]);
    CU_ASSERT_FATAL(alg != 0);
    CU_ASSERT_EQUAL(hsm__kcv(alg, key, keylen, kcv, 3), 0);
    CU_ASSERT_EQUAL(
        tv_hex(&f.blocks[i], "expected_kcv", want_kcv, sizeof want_kcv), 3);
    CU_ASSERT(memcmp(kcv, want_kcv, 3) == 0);
    if (hdr.header_len > 16)
      with_options++;
  }
  /* The KS optional block cases (versions B and C) are among them. */
  CU_ASSERT(with_options >= 2);
  tv_free(&f);
}

static void test_unwrap_refuses_every_single_byte_corruption(void) {
  tv_file_t f;
  load(&f);
  size_t accepted = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    vec_t v;
    get_vec(&f.blocks[i], &v);
    accepted += corruptions_accepted(v.name, v.kbpk, v.kbpklen, v.block, v.len);
  }
  CU_ASSERT_EQUAL(accepted, 0);
  tv_free(&f);
}

static void test_unwrap_refuses_every_truncation(void) {
  tv_file_t f;
  load(&f);
  size_t accepted = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    vec_t v;
    get_vec(&f.blocks[i], &v);
    CU_ASSERT_FATAL(unwraps(v.kbpk, v.kbpklen, v.block, v.len));
    for (size_t n = 0; n < v.len; n++) {
      /* From the end (the length field no longer matches) ... */
      if (!refused(v.kbpk, v.kbpklen, v.block, n))
        accepted++;
      /* ... and from the front. */
      if (!refused(v.kbpk, v.kbpklen, v.block + v.len - n, n))
        accepted++;
    }
  }
  CU_ASSERT_EQUAL(accepted, 0);
  tv_free(&f);
}

static void set_length_field(char *block, size_t value) {
  block[1] = (char)('0' + value / 1000 % 10);
  block[2] = (char)('0' + value / 100 % 10);
  block[3] = (char)('0' + value / 10 % 10);
  block[4] = (char)('0' + value % 10);
}

static void test_unwrap_refuses_length_field_that_disagrees(void) {
  tv_file_t f;
  load(&f);
  static const int deltas[] = {-32, -16, -8, -2, -1, 1, 2, 8, 16, 32};
  for (size_t i = 0; i < f.nblocks; i++) {
    vec_t v;
    get_vec(&f.blocks[i], &v);
    CU_ASSERT_FATAL(unwraps(v.kbpk, v.kbpklen, v.block, v.len));
    char copy[BLOCK_CAP];
    memcpy(copy, v.block, v.len);
    /* The field says another length than the data has. */
    for (size_t d = 0; d < sizeof deltas / sizeof deltas[0]; d++) {
      set_length_field(copy, (size_t)((int)v.len + deltas[d]));
      CU_ASSERT(refused(v.kbpk, v.kbpklen, copy, v.len));
    }
    set_length_field(copy, 0);
    CU_ASSERT(refused(v.kbpk, v.kbpklen, copy, v.len));
    set_length_field(copy, 9999);
    CU_ASSERT(refused(v.kbpk, v.kbpklen, copy, v.len));
    /* The field agrees with data that was shortened or lengthened by whole
     * cipher blocks of hex: the MAC no longer verifies. */
    for (size_t extra = 16; extra <= 64; extra += 16) {
      memcpy(copy, v.block, v.len);
      memset(copy + v.len, '0', extra);
      set_length_field(copy, v.len + extra);
      CU_ASSERT(refused(v.kbpk, v.kbpklen, copy, v.len + extra));
      memcpy(copy, v.block, v.len);
      set_length_field(copy, v.len - extra);
      CU_ASSERT(refused(v.kbpk, v.kbpklen, copy, v.len - extra));
    }
    /* Not digits. */
    memcpy(copy, v.block, v.len);
    copy[2] = ' ';
    CU_ASSERT(refused(v.kbpk, v.kbpklen, copy, v.len));
  }
  tv_free(&f);
}

static void test_unwrap_refuses_wrong_kbpk(void) {
  tv_file_t f;
  load(&f);
  size_t accepted = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    vec_t v;
    get_vec(&f.blocks[i], &v);
    CU_ASSERT_FATAL(unwraps(v.kbpk, v.kbpklen, v.block, v.len));
    /* One bit changed in each byte in turn.  Bit 0 of a DES key byte is a
     * parity bit that DES ignores, so TDES KBPKs differing only there are
     * the same key; bit 1 is always part of the key. */
    for (size_t k = 0; k < v.kbpklen; k++) {
      uint8_t wrong[32];
      memcpy(wrong, v.kbpk, v.kbpklen);
      wrong[k] ^= 0x02;
      if (!refused(wrong, v.kbpklen, v.block, v.len))
        accepted++;
    }
    /* A KBPK of another length: the 16-byte prefix of a longer key, or a
     * key extended to 32 bytes. */
    uint8_t longer[32] = {0};
    memcpy(longer, v.kbpk, v.kbpklen);
    if (v.kbpklen > 16 && !refused(v.kbpk, 16, v.block, v.len))
      accepted++;
    if (v.kbpklen < 32 && !refused(longer, 32, v.block, v.len))
      accepted++;
    if (!refused(v.kbpk, 8, v.block, v.len))
      accepted++;
    if (!refused(v.kbpk, 0, v.block, v.len))
      accepted++;
  }
  CU_ASSERT_EQUAL(accepted, 0);
  tv_free(&f);
}

static void test_unwrap_refuses_unknown_version(void) {
  tv_file_t f;
  load(&f);
  static const char others[] = "EFKSZabcd0139 ";
  for (size_t i = 0; i < f.nblocks; i++) {
    vec_t v;
    get_vec(&f.blocks[i], &v);
    CU_ASSERT_FATAL(unwraps(v.kbpk, v.kbpklen, v.block, v.len));
    char copy[BLOCK_CAP];
    memcpy(copy, v.block, v.len);
    for (const char *o = others; *o; o++) {
      copy[0] = *o;
      CU_ASSERT(refused(v.kbpk, v.kbpklen, copy, v.len));
    }
  }
  tv_free(&f);
}

static void test_unwrap_refuses_lower_case_hex(void) {
  tv_file_t f;
  load(&f);
  size_t checked = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    vec_t v;
    get_vec(&f.blocks[i], &v);
    CU_ASSERT_FATAL(unwraps(v.kbpk, v.kbpklen, v.block, v.len));
    char copy[BLOCK_CAP];
    memcpy(copy, v.block, v.len);
    size_t changed = 0;
    for (size_t k = strlen(v.header); k < v.len; k++)
      if (copy[k] >= 'A' && copy[k] <= 'F') {
        copy[k] = (char)(copy[k] - 'A' + 'a');
        changed++;
      }
    if (changed) {
      CU_ASSERT(refused(v.kbpk, v.kbpklen, copy, v.len));
      checked++;
    }
  }
  CU_ASSERT(checked > 0);
  tv_free(&f);
}

static void test_unwrap_refuses_null_arguments(void) {
  static const uint8_t kbpk[16];
  hsm__tr31_t hdr;
  uint8_t key[32];
  size_t keylen;
  const char *b = "A0072P0TE00E0000F5161ED902807AF26F1D62263644BD24192FDB319"
                  "3C730301CEE8701";
  size_t n = strlen(b);
  CU_ASSERT_EQUAL(hsm__tr31_unwrap(NULL, 16, b, n, &hdr, key, &keylen),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__tr31_unwrap(kbpk, 16, NULL, n, &hdr, key, &keylen),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__tr31_unwrap(kbpk, 16, b, n, NULL, key, &keylen),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__tr31_unwrap(kbpk, 16, b, n, &hdr, NULL, &keylen),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__tr31_unwrap(kbpk, 16, b, n, &hdr, key, NULL),
                  HSM_E_INVAL);
}

/* Blocks from another implementation, beyond the vector file: 3-key TDES
 * KBPKs for A, B and C, single-length and padded TDES keys, an empty
 * padding block (PB04), and blocks whose key length field is 0 or longer
 * than the key data.  From github.com/knovichikhin/psec tests/test_tr31.py
 * (test_kb_known_values, test_kb_unwrap_exceptions).  The vector file
 * would be their proper home. */
static const struct {
  const char *kbpk, *key, *block;
} psec_known[] = {
    {"AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB", "EEEEEEEEEEEEEEEE",
     "A0088M3TC00E000062C2C14D8785A01A9E8283525CA96F490D0CC6346FC7C2AC1E6FF354"
     "468910379AA5BBA6"},
    {"AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB", "EEEEEEEEEEEEEEEE",
     "B0096M3TC00E0000B6CD513680EF255FC0DC590726FD0129A7CF6602E7F271631AB4EE73"
     "50642F11181AF4CC12F12FD9"},
    {"AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB", "EEEEEEEEEEEEEEEE",
     "C0088M3TC00E0000A53CF172FE6562E7FDD5E6482E8925DA46F7FFE4D1BAD49EB33A9EDB"
     "B96A8A8D39F13A31"},
    {"AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB", "CCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD",
     "A0088M3TC00E0000BE8AE894906D0B8F6FF555573A3907DC37FF13B12CE1CB8A97A97C84"
     "14AE1A8FF9183122"},
    {"AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB", "CCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD",
     "B0096M3TC00E0000D578DACC2286C7D10F20DEA88799CA8A2F44E0CC21226A2158D5DC8F"
     "D5C78E621327DA956C678808"},
    {"AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBB", "CCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD",
     "C0088M3TC00E00009BC6306FC31891BF87B3148463627B1D68C603D9FAB9074E4A0D2E78"
     "D40B29905A826F5C"},
    {"AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCC",
     "CCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD",
     "A0088M3TC00E000022BD7EC46BBE2A6A73389D1BA6DB63120B386F912839F4679C052339"
     "9E4D8D0F1D9A356E"},
    {"AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCC",
     "CCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD",
     "B0096M3TC00E0000C7C6FE86A5DE769C20DCA238C52341378B484D544A9764D43963C3B2"
     "824AE56C2D07A565DD3AB342"},
    {"AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCC",
     "CCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD",
     "C0088M3TC00E000091FA4978279FD9C218BDCBE9CC62F11A182F828406B67AC61B557374"
     "8FCF348FD59FA93A"},
    {"89E88CF7931444F334BD7547FC3F380C", "F039121BEC83D26B169BDCD5B22AAF8F",
     "A0088P0TE00E00007DD4DD9566DC0E2F956DCAC0FDE9153159539373E9D82D3CD4AFD305"
     "A7EF1BA67FE03712"},
    {"89E88CF7931444F334BD7547FC3F380C", "F039121BEC83D26B169BDCD5B22AAF8F",
     "B0120P0TE12E0100KS1800604B120F9292800000E6E28F097CB0350B2EB2DF520947F779"
     "FA34D9759CEE7E0DEEACF8353DB778D47FA4EC20DA3A9754"},
    {"B8ED59E0A279A295E9F5ED7944FD06B9", "F039121BEC83D26B169BDCD5B22AAF8F",
     "A0112P0TE12E0200KS1400604B120F929280PB047A1BB737854CD7AF58A8A1E4506A9422"
     "77EDA76EBA6BA228AF62ADDA3AD8799E8B2C8CD7"},
};

static void test_unwrap_gives_keys_of_third_party_blocks(void) {
  for (size_t i = 0; i < sizeof psec_known / sizeof psec_known[0]; i++) {
    uint8_t kbpk[24], want[32], key[32];
    size_t kbpklen = tu_unhex(psec_known[i].kbpk, kbpk, sizeof kbpk);
    size_t wantlen = tu_unhex(psec_known[i].key, want, sizeof want);
    size_t keylen = 0, len = strlen(psec_known[i].block);
    hsm__tr31_t hdr;
    int rc = hsm__tr31_unwrap(kbpk, kbpklen, psec_known[i].block, len, &hdr,
                              key, &keylen);
    if (rc != 0)
      fprintf(stderr, "third-party block %zu refused\n", i);
    CU_ASSERT_EQUAL(rc, 0);
    CU_ASSERT_EQUAL(keylen, wantlen);
    CU_ASSERT(memcmp(key, want, wantlen) == 0);
    CU_ASSERT(corruptions_accepted("third-party block", kbpk, kbpklen,
                                   psec_known[i].block, len) == 0);
  }
}

/* The same source's refusals, under KBPK 45..45: no key data, key length 0
 * bits, key length 128 bits over 64 bits of key data, MAC mismatch. */
static void test_unwrap_refuses_third_party_malformed_blocks(void) {
  static const char *const bad[] = {
      "A0024M3TC00E00009AA5BBA6",
      "C0024M3TC00E00009AA5BBA6",
      "B0032M3TC00E0000FFFFFFFF9AA5BBA6",
      "A0056M3TC00E0000ABE3EB7813FD4031BCBAEC1FCAB750BB920E4863",
      "B0064M3TC00E000013F1B06566ECAE897A6DF8C7AA651FCEF9480447EEEC9933",
      "C0056M3TC00E0000629D73329F5F42D868B2EB1E4C52D1E191BC1D3C",
      "A0056M3TC00E0000EF14FD71CFCDCE0630AD5C1CDE0041DCF95CF1D0",
      "B0064M3TC00E00000398DC96A5DDB0EF61E26F8935173BD478DF9484050A672A",
      "C0056M3TC00E000001235EC22408B6CE866746FF992B8707FD7A26D2",
      "A0056M3TC00E0000BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB9AA5BBA6",
      "B0064M3TC00E0000BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBFFFFFFFF9AA5BBA6",
      "A0024M3TC00E0100TT04BBA6",
  };
  uint8_t kbpk[16];
  memset(kbpk, 0x45, sizeof kbpk);
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CU_ASSERT(refused(kbpk, 16, bad[i], strlen(bad[i])));
}

/* ------------------------------------------------------------------------ */
/* Wrap                                                                      */

static void header_from(const char *text, hsm__tr31_t *h) {
  memset(h, 0, sizeof *h);
  h->version = text[0];
  memcpy(h->usage, text + 5, 2);
  h->algorithm = text[7];
  h->mode = text[8];
  memcpy(h->key_version, text + 9, 2);
  h->exportability = text[11];
}

/* Wraps, unwraps and checks the key and header came back. */
static void round_trip(const uint8_t *kbpk, size_t kbpklen,
                       const hsm__tr31_t *h, const uint8_t *key, size_t keylen,
                       char *out, size_t *outlen) {
  int rc =
      hsm__tr31_wrap(kbpk, kbpklen, h, key, keylen, out, BLOCK_CAP, outlen);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_EQUAL(strlen(out), *outlen);
  hsm__tr31_t back;
  uint8_t got[32];
  size_t gotlen = 0;
  CU_ASSERT_EQUAL_FATAL(
      hsm__tr31_unwrap(kbpk, kbpklen, out, *outlen, &back, got, &gotlen), 0);
  CU_ASSERT_EQUAL(gotlen, keylen);
  CU_ASSERT(memcmp(got, key, keylen) == 0);
  CU_ASSERT_EQUAL(back.version, h->version);
  CU_ASSERT_STRING_EQUAL(back.usage, h->usage);
  CU_ASSERT_EQUAL(back.algorithm, h->algorithm);
  CU_ASSERT_EQUAL(back.mode, h->mode);
  CU_ASSERT_STRING_EQUAL(back.key_version, h->key_version);
  CU_ASSERT_EQUAL(back.exportability, h->exportability);
  CU_ASSERT_EQUAL(back.header_len, 16);
  CU_ASSERT(memcmp(back.header, out, 16) == 0);
}

static void test_wrap_then_unwrap_round_trips_every_version(void) {
  static const struct {
    const char *header;
    size_t kbpklens[3];
    size_t keylens[3];
  } cases[] = {
      {"A0000P0TE00E0000", {16, 24, 0}, {16, 24, 0}},
      {"B0000K0TB00N0000", {16, 24, 0}, {16, 24, 0}},
      {"C0000M3TC01S0000", {16, 24, 0}, {16, 24, 0}},
      {"D0000B0TX00N0000", {16, 24, 32}, {16, 24, 0}},
      {"D0000P0AE00E0000", {16, 24, 32}, {16, 24, 32}},
      {"D0000M6HG02N0000", {32, 0, 0}, {32, 20, 1}},
      {"B0000D0DD00E0000", {24, 0, 0}, {8, 0, 0}},
  };
  size_t trips = 0;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    hsm__tr31_t h;
    header_from(cases[c].header, &h);
    for (size_t k = 0; k < 3 && cases[c].kbpklens[k]; k++) {
      for (size_t j = 0; j < 3 && cases[c].keylens[j]; j++) {
        uint8_t kbpk[32], key[32];
        char out[BLOCK_CAP];
        size_t outlen = 0;
        CU_ASSERT_EQUAL_FATAL(hsm__random(kbpk, sizeof kbpk), 0);
        CU_ASSERT_EQUAL_FATAL(hsm__random(key, sizeof key), 0);
        round_trip(kbpk, cases[c].kbpklens[k], &h, key, cases[c].keylens[j],
                   out, &outlen);
        trips++;
      }
    }
  }
  CU_ASSERT_EQUAL(trips, 4 + 4 + 4 + 6 + 9 + 3 + 1);
}

/* Each vector's key wrapped under its KBPK with its header fields: the
 * result unwraps; where the vector has no optional blocks and the least
 * padding, the header is the vector's to the character and the length its
 * length (padding and MAC differ: the padding is random). */
static void test_wrap_of_vector_keys_matches_vector_headers(void) {
  tv_file_t f;
  load(&f);
  size_t same_header = 0;
  for (size_t i = 0; i < f.nblocks; i++) {
    vec_t v;
    get_vec(&f.blocks[i], &v);
    hsm__tr31_t h;
    header_from(v.header, &h);
    char out[BLOCK_CAP];
    size_t outlen = 0;
    round_trip(v.kbpk, v.kbpklen, &h, v.key, v.keylen, out, &outlen);
    CU_ASSERT(memcmp(out + 5, v.header + 5, 7) == 0);
    CU_ASSERT(memcmp(out + 12, "0000", 4) == 0);
    if (strlen(v.header) == 16 && outlen == v.len) {
      CU_ASSERT(memcmp(out, v.block, 16) == 0);
      same_header++;
    }
  }
  /* All but the two with a KS block and X9.143 8.1, which pads a 128-bit
   * key to the AES-256 length. */
  CU_ASSERT(same_header >= 8);
  tv_free(&f);
}

static void test_wrap_pads_with_fresh_random_bytes(void) {
  static const char *const headers[] = {"A0000P0TE00E0000", "B0000P0TE00E0000",
                                        "C0000P0TE00E0000", "D0000P0AE00E0000"};
  for (size_t i = 0; i < 4; i++) {
    uint8_t kbpk[32], key[16];
    CU_ASSERT_EQUAL_FATAL(hsm__random(kbpk, sizeof kbpk), 0);
    CU_ASSERT_EQUAL_FATAL(hsm__random(key, sizeof key), 0);
    hsm__tr31_t h;
    header_from(headers[i], &h);
    char a[BLOCK_CAP], b[BLOCK_CAP];
    size_t alen = 0, blen = 0;
    round_trip(kbpk, 16, &h, key, 16, a, &alen);
    round_trip(kbpk, 16, &h, key, 16, b, &blen);
    CU_ASSERT_EQUAL(alen, blen);
    /* The headers agree; the encrypted data and MAC do not. */
    CU_ASSERT(memcmp(a, b, 16) == 0);
    CU_ASSERT(memcmp(a + 16, b + 16, alen - 16) != 0);
    CU_ASSERT(memcmp(a + alen - 8, b + blen - 8, 8) != 0);
  }
}

static void test_wrapped_blocks_refuse_every_single_byte_corruption(void) {
  static const char *const headers[] = {"A0000P0TE00E0000", "B0000K0TB00N0000",
                                        "C0000M3TC01S0000", "D0000P0AE00E0000"};
  static const size_t kbpklens[] = {24, 16, 16, 32};
  size_t accepted = 0;
  for (size_t i = 0; i < 4; i++) {
    uint8_t kbpk[32], key[16];
    CU_ASSERT_EQUAL_FATAL(hsm__random(kbpk, sizeof kbpk), 0);
    CU_ASSERT_EQUAL_FATAL(hsm__random(key, sizeof key), 0);
    hsm__tr31_t h;
    header_from(headers[i], &h);
    char out[BLOCK_CAP];
    size_t outlen = 0;
    round_trip(kbpk, kbpklens[i], &h, key, 16, out, &outlen);
    accepted +=
        corruptions_accepted(headers[i], kbpk, kbpklens[i], out, outlen);
  }
  CU_ASSERT_EQUAL(accepted, 0);
}

static void test_wrap_refuses_bad_arguments(void) {
  uint8_t kbpk[32] = {1, 2, 3}, key[32] = {4, 5, 6};
  char out[BLOCK_CAP];
  size_t outlen = 0;
  hsm__tr31_t h;

  /* Unknown version, malformed fields. */
  header_from("E0000P0TE00E0000", &h);
  CU_ASSERT_EQUAL(
      hsm__tr31_wrap(kbpk, 16, &h, key, 16, out, sizeof out, &outlen),
      HSM_E_INVAL);
  header_from("B0000P0TE00E0000", &h);
  h.usage[1] = '\0';
  CU_ASSERT_EQUAL(
      hsm__tr31_wrap(kbpk, 16, &h, key, 16, out, sizeof out, &outlen),
      HSM_E_INVAL);
  header_from("B0000P0TE00E0000", &h);
  h.mode = '#';
  CU_ASSERT_EQUAL(
      hsm__tr31_wrap(kbpk, 16, &h, key, 16, out, sizeof out, &outlen),
      HSM_E_INVAL);
  header_from("B0000P0TE00E0000", &h);
  h.key_version[2] = 'X';
  CU_ASSERT_EQUAL(
      hsm__tr31_wrap(kbpk, 16, &h, key, 16, out, sizeof out, &outlen),
      HSM_E_INVAL);

  /* KBPK lengths the version cannot use. */
  static const struct {
    const char *header;
    size_t kbpklen;
  } bad_kbpk[] = {{"A0000P0TE00E0000", 8},  {"A0000P0TE00E0000", 32},
                  {"B0000P0TE00E0000", 32}, {"C0000P0TE00E0000", 0},
                  {"D0000P0TE00E0000", 8},  {"D0000P0TE00E0000", 20}};
  for (size_t i = 0; i < sizeof bad_kbpk / sizeof bad_kbpk[0]; i++) {
    header_from(bad_kbpk[i].header, &h);
    CU_ASSERT_EQUAL(hsm__tr31_wrap(kbpk, bad_kbpk[i].kbpklen, &h, key, 16, out,
                                   sizeof out, &outlen),
                    HSM_E_KEY_LENGTH);
  }

  /* Key lengths the algorithm does not have. */
  static const struct {
    char algorithm;
    size_t keylen;
  } bad_key[] = {{'T', 0},  {'T', 15}, {'T', 32}, {'A', 8},
                 {'A', 20}, {'D', 16}, {'H', 0},  {'H', 33}};
  for (size_t i = 0; i < sizeof bad_key / sizeof bad_key[0]; i++) {
    header_from("D0000P0TE00E0000", &h);
    h.algorithm = bad_key[i].algorithm;
    CU_ASSERT_EQUAL(hsm__tr31_wrap(kbpk, 32, &h, key, bad_key[i].keylen, out,
                                   sizeof out, &outlen),
                    HSM_E_KEY_LENGTH);
  }

  /* Output capacity: the block and its NUL, exactly. */
  header_from("B0000P0TE00E0000", &h);
  CU_ASSERT_EQUAL(hsm__tr31_wrap(kbpk, 16, &h, key, 16, out, 80, &outlen),
                  HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__tr31_wrap(kbpk, 16, &h, key, 16, out, 81, &outlen), 0);
  CU_ASSERT_EQUAL(outlen, 80);

  CU_ASSERT_EQUAL(
      hsm__tr31_wrap(NULL, 16, &h, key, 16, out, sizeof out, &outlen),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(
      hsm__tr31_wrap(kbpk, 16, NULL, key, 16, out, sizeof out, &outlen),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(
      hsm__tr31_wrap(kbpk, 16, &h, NULL, 16, out, sizeof out, &outlen),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(
      hsm__tr31_wrap(kbpk, 16, &h, key, 16, NULL, sizeof out, &outlen),
      HSM_E_INVAL);
  CU_ASSERT_EQUAL(hsm__tr31_wrap(kbpk, 16, &h, key, 16, out, sizeof out, NULL),
                  HSM_E_INVAL);
}

/* ------------------------------------------------------------------------ */
/* Blocks whose MAC verifies but whose content breaks a rule                  */

/* The checks after the MAC (key length field, padding) and the header
 * rules the MAC would catch anyway (length field, alignment, optional
 * blocks) can only be reached by a sender holding the KBPK.  forge() is
 * that sender: it builds a version A block (TDES, variant binding) or a
 * version D block (AES-256 KBPK, CMAC derivation) from any header text and
 * key data, with a MAC that verifies.  "????" in the length field is
 * replaced by the real length. */
static const uint8_t forge_kbpk[32] = {
    0x01, 0x02, 0x04, 0x07, 0x08, 0x0B, 0x0D, 0x0E, 0x10, 0x13, 0x15,
    0x16, 0x19, 0x1A, 0x1C, 0x1F, 0x20, 0x23, 0x25, 0x26, 0x29, 0x2A,
    0x2C, 0x2F, 0x31, 0x32, 0x34, 0x37, 0x38, 0x3B, 0x3D, 0x3E};

static void forge_hex(const uint8_t *p, size_t n, char *out) {
  char buf[2 * BLOCK_CAP + 1];
  tu_hex(p, n, buf);
  memcpy(out, buf, 2 * n);
}

static size_t forge(char version, const char *header, const uint8_t *payload,
                    size_t plen, char *out) {
  size_t hlen = strlen(header);
  int aes = version == 'D';
  size_t maclen = aes ? 16 : 4, kbpklen = aes ? 32 : 16;
  size_t total = hlen + 2 * plen + 2 * maclen;
  CU_ASSERT_FATAL(total < BLOCK_CAP && hlen + plen <= 256);
  memcpy(out, header, hlen);
  out[0] = version;
  if (memcmp(out + 1, "????", 4) == 0) {
    /* total < BLOCK_CAP (checked above) fits four digits; the buffer is
     * sized for any size_t so the compiler can see nothing truncates. */
    char digits[24];
    snprintf(digits, sizeof digits, "%04zu", total);
    memcpy(out + 1, digits, 4);
  }
  uint8_t kbek[32] = {0}, kbak[32] = {0}, enc[128], mac[16], msg[384];
  static const uint8_t zero_iv[16];
  memcpy(msg, out, hlen);
  hsm__cipher_t c;
  if (!aes) {
    for (size_t i = 0; i < kbpklen; i++) {
      kbek[i] = forge_kbpk[i] ^ 0x45;
      kbak[i] = forge_kbpk[i] ^ 0x4D;
    }
    CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&c, HSM__TDES, kbek, 16), 0);
    CU_ASSERT_EQUAL(hsm__cbc(&c, 1, (const uint8_t *)out, payload, enc, plen),
                    0);
    hsm__cipher_free(&c);
    uint8_t chain[384];
    memcpy(msg + hlen, enc, plen);
    CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&c, HSM__TDES, kbak, 16), 0);
    CU_ASSERT_EQUAL(hsm__cbc(&c, 1, zero_iv, msg, chain, hlen + plen), 0);
    hsm__cipher_free(&c);
    memcpy(mac, chain + hlen + plen - 8, 4);
  } else {
    /* Derivation input: counter, usage (0 encryption, 1 MAC), 00, AES-256
     * (0004), 256 bits (0100); two CMACs per key. */
    for (uint8_t usage = 0; usage < 2; usage++)
      for (uint8_t i = 0; i < 2; i++) {
        const uint8_t in[8] = {(uint8_t)(i + 1), 0, usage, 0, 0, 4, 1, 0};
        size_t n = 0;
        CU_ASSERT_EQUAL(hsm__cmac(HSM__AES, forge_kbpk, 32, in, 8,
                                  (usage ? kbak : kbek) + 16 * i, &n),
                        0);
      }
    size_t n = 0;
    memcpy(msg + hlen, payload, plen);
    CU_ASSERT_EQUAL(hsm__cmac(HSM__AES, kbak, 32, msg, hlen + plen, mac, &n),
                    0);
    CU_ASSERT_EQUAL_FATAL(hsm__cipher_init(&c, HSM__AES, kbek, 32), 0);
    CU_ASSERT_EQUAL(hsm__cbc(&c, 1, mac, payload, enc, plen), 0);
    hsm__cipher_free(&c);
  }
  forge_hex(enc, plen, out + hlen);
  forge_hex(mac, maclen, out + hlen + 2 * plen);
  out[total] = '\0';
  return total;
}

/* Key data: the length field in bits, a key of keylen bytes (0x11, ...),
 * padding to plen. */
static void key_data(unsigned bits, size_t keylen, size_t plen, uint8_t *out) {
  memset(out, 0xEE, plen);
  out[0] = (uint8_t)(bits >> 8);
  out[1] = (uint8_t)bits;
  for (size_t i = 0; i < keylen && 2 + i < plen; i++)
    out[2 + i] = (uint8_t)(0x11 * (i % 15 + 1));
}

static size_t forge_kbpklen(char version) {
  return version == 'D' ? 32 : 16;
}

/* Forges and unwraps; returns the unwrap's result (0 or an error). */
static int forged_unwrap(char version, const char *header, unsigned bits,
                         size_t keylen, size_t plen, hsm__tr31_t *hdr) {
  uint8_t payload[128], key[32];
  char block[BLOCK_CAP];
  size_t got = 0;
  key_data(bits, keylen, plen, payload);
  size_t len = forge(version, header, payload, plen, block);
  hsm__tr31_t local;
  int rc = hsm__tr31_unwrap(forge_kbpk, forge_kbpklen(version), block, len,
                            hdr ? hdr : &local, key, &got);
  if (rc == 0) {
    CU_ASSERT_EQUAL(got, keylen);
    CU_ASSERT(memcmp(key, payload + 2, keylen) == 0);
  } else {
    CU_ASSERT(refused(forge_kbpk, forge_kbpklen(version), block, len));
  }
  return rc;
}

static const char forge_versions[] = "AD";

static size_t block_size(char version) {
  return version == 'D' ? 16 : 8;
}

static void test_forged_well_formed_blocks_unwrap(void) {
  for (const char *v = forge_versions; *v; v++) {
    size_t bs = block_size(*v);
    size_t plen = (2 + 16 + bs - 1) / bs * bs;
    hsm__tr31_t hdr;
    CU_ASSERT_EQUAL(forged_unwrap(*v, "?????P0TE00E0000", 128, 16, plen, &hdr),
                    0);
    CU_ASSERT_EQUAL(hdr.version, *v);
    CU_ASSERT_EQUAL(hdr.header_len, 16);
    /* X9.143 key context 1 (storage only) and 2 (exchange only). */
    CU_ASSERT_EQUAL(forged_unwrap(*v, "?????P0TE00E0010", 128, 16, plen, NULL),
                    0);
    CU_ASSERT_EQUAL(forged_unwrap(*v, "?????P0TE00E0020", 128, 16, plen, NULL),
                    0);
  }
}

static void test_forged_block_with_wrong_length_field_is_refused(void) {
  for (const char *v = forge_versions; *v; v++) {
    size_t bs = block_size(*v);
    size_t plen = (2 + 16 + bs - 1) / bs * bs;
    size_t good = 16 + 2 * plen + (*v == 'D' ? 32 : 8);
    static const int deltas[] = {-16, -1, 1, 16};
    for (size_t d = 0; d < 4; d++) {
      char header[32];
      snprintf(header, sizeof header, "?%04dP0TE00E0000",
               (int)good + deltas[d]);
      CU_ASSERT_EQUAL(forged_unwrap(*v, header, 128, 16, plen, NULL),
                      HSM_E_KEY_BLOCK);
    }
  }
}

static void test_forged_block_with_bad_key_length_field_is_refused(void) {
  for (const char *v = forge_versions; *v; v++) {
    size_t bs = block_size(*v);
    size_t plen = (2 + 16 + bs - 1) / bs * bs;
    /* Zero, not whole bytes, not a TDES length, longer than the data. */
    static const unsigned bad_bits[] = {0,   1,   127, 129,   56,
                                        120, 136, 192, 0xFFFF};
    for (size_t i = 0; i < sizeof bad_bits / sizeof bad_bits[0]; i++) {
      if (bad_bits[i] == 192 && plen >= 26)
        continue; /* fits in D's 32 bytes: a valid 3-key TDES length */
      CU_ASSERT_EQUAL(
          forged_unwrap(*v, "?????P0TE00E0000", bad_bits[i], 16, plen, NULL),
          HSM_E_KEY_BLOCK);
    }
    /* An AES length in a TDES key's block, a DES length for AES. */
    CU_ASSERT_EQUAL(forged_unwrap(*v, "?????P0TE00E0000", 256, 32,
                                  (2 + 32 + bs - 1) / bs * bs, NULL),
                    HSM_E_KEY_BLOCK);
    CU_ASSERT_EQUAL(forged_unwrap(*v, "?????P0AE00E0000", 64, 8, plen, NULL),
                    HSM_E_KEY_BLOCK);
  }
}

static void test_forged_block_padded_beyond_longest_key_is_refused(void) {
  for (const char *v = forge_versions; *v; v++) {
    size_t bs = block_size(*v);
    /* A 2-key TDES key padded to the 3-key length hides its length and is
     * accepted; one block more is refused. */
    size_t tdes_max = (2 + 24 + bs - 1) / bs * bs;
    CU_ASSERT_EQUAL(
        forged_unwrap(*v, "?????P0TE00E0000", 128, 16, tdes_max, NULL), 0);
    CU_ASSERT_EQUAL(
        forged_unwrap(*v, "?????P0TE00E0000", 128, 16, tdes_max + bs, NULL),
        HSM_E_KEY_BLOCK);
    size_t aes_max = (2 + 32 + bs - 1) / bs * bs;
    CU_ASSERT_EQUAL(
        forged_unwrap(*v, "?????P0AE00E0000", 128, 16, aes_max, NULL), 0);
    CU_ASSERT_EQUAL(
        forged_unwrap(*v, "?????P0AE00E0000", 128, 16, aes_max + bs, NULL),
        HSM_E_KEY_BLOCK);
  }
}

static void test_forged_optional_blocks_are_parsed_and_checked(void) {
  hsm__tr31_t hdr;
  /* Version A (8-byte blocks): a padding block bringing the header to 24
   * characters, and one in the extended length form bringing it to 32. */
  CU_ASSERT_EQUAL(
      forged_unwrap('A', "?????P0TE00E0100PB08AAAA", 128, 16, 24, &hdr), 0);
  CU_ASSERT_EQUAL(hdr.header_len, 24);
  CU_ASSERT_STRING_EQUAL(hdr.header + 16, "PB08AAAA");
  CU_ASSERT_EQUAL(
      forged_unwrap('A', "?????P0TE00E0100PB000210AAAAAAAA", 128, 16, 24, &hdr),
      0);
  CU_ASSERT_EQUAL(hdr.header_len, 32);
  /* Two optional blocks, version D (16-byte blocks).  (Misaligned headers
   * are forged as version D below: a CBC-MAC cannot be taken over them.) */
  CU_ASSERT_EQUAL(
      forged_unwrap('D', "?????P0TE00E0200KS0A123456PB06AA", 128, 16, 32, &hdr),
      0);
  CU_ASSERT_EQUAL(hdr.header_len, 32);

  static const struct {
    char version;
    const char *header;
  } bad[] = {
      {'D', "?????P0TE00E0100PB06AA"},           /* not a whole block */
      {'D', "?????P0TE00E0100PB08AAAA"},         /* not a whole AES block */
      {'A', "?????P0TE00E0200PB08AAAA"},         /* count says two */
      {'A', "?????P0TE00E0100PB04AAAA"},         /* length short of its data */
      {'D', "?????P0TE00E0100PB03AAAAA"},        /* length below the minimum */
      {'A', "?????P0TE00E0100PB08AA\001A"},      /* data not printable */
      {'A', "?????P0TE00E0100P#08AAAA"},         /* ID not alphanumeric */
      {'A', "?????P0TE00E0100PB0GAAAA"},         /* length not hex */
      {'D', "?????P0TE00E0200PB020EAAAAAAAAAA"}, /* length 2, into the next */
      {'A', "?????P0TE00E0100PB000010AAAAAAAA"}, /* length of length 0 */
      {'D', "?????P0TE00E0200PB00050001AAAAAAAAAAAAAAAAPB06AA"}, /* of 5 */
      {'A', "?????P0TE00E0100PB0005AAAAAAAAAA"}, /* length of length 5 */
      {'A', "?????P0TE00E0030"},                 /* key context 3 */
      {'A', "?????P0TE00E0001"},                 /* reserved not 0 */
      {'A', "?????P#TE00E0000"},                 /* usage not alphanumeric */
      {'A', "?????P0T 00E0000"},                 /* mode not alphanumeric */
      {'A', "?????P0TE00E0A00"},                 /* count not digits */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = forged_unwrap(bad[i].version, bad[i].header, 128, 16,
                           bad[i].version == 'D' ? 32 : 24, NULL);
    if (rc != HSM_E_KEY_BLOCK)
      fprintf(stderr, "forged header %zu was not refused\n", i);
    CU_ASSERT_EQUAL(rc, HSM_E_KEY_BLOCK);
  }
}

static void test_forged_block_without_key_data_is_refused(void) {
  for (const char *v = forge_versions; *v; v++)
    CU_ASSERT_EQUAL(forged_unwrap(*v, "?????P0TE00E0000", 0, 0, 0, NULL),
                    HSM_E_KEY_BLOCK);
}

static const tu_test_t unwrap_tests[] = {
    {"every_vector_block_has_key_block_kbpk_and_key",
     test_every_vector_block_has_key_block_kbpk_and_key},
    {"gives_every_vector_key_header_and_kcv",
     test_unwrap_gives_every_vector_key_header_and_kcv},
    {"refuses_every_single_byte_corruption",
     test_unwrap_refuses_every_single_byte_corruption},
    {"refuses_every_truncation", test_unwrap_refuses_every_truncation},
    {"refuses_length_field_that_disagrees",
     test_unwrap_refuses_length_field_that_disagrees},
    {"refuses_wrong_kbpk", test_unwrap_refuses_wrong_kbpk},
    {"refuses_unknown_version", test_unwrap_refuses_unknown_version},
    {"refuses_lower_case_hex", test_unwrap_refuses_lower_case_hex},
    {"refuses_null_arguments", test_unwrap_refuses_null_arguments},
    {"gives_keys_of_third_party_blocks",
     test_unwrap_gives_keys_of_third_party_blocks},
    {"refuses_third_party_malformed_blocks",
     test_unwrap_refuses_third_party_malformed_blocks},
    {NULL, NULL}};

static const tu_test_t forged_tests[] = {
    {"well_formed_blocks_unwrap", test_forged_well_formed_blocks_unwrap},
    {"block_with_wrong_length_field_is_refused",
     test_forged_block_with_wrong_length_field_is_refused},
    {"block_with_bad_key_length_field_is_refused",
     test_forged_block_with_bad_key_length_field_is_refused},
    {"block_padded_beyond_longest_key_is_refused",
     test_forged_block_padded_beyond_longest_key_is_refused},
    {"optional_blocks_are_parsed_and_checked",
     test_forged_optional_blocks_are_parsed_and_checked},
    {"block_without_key_data_is_refused",
     test_forged_block_without_key_data_is_refused},
    {NULL, NULL}};

static const tu_test_t wrap_tests[] = {
    {"then_unwrap_round_trips_every_version",
     test_wrap_then_unwrap_round_trips_every_version},
    {"of_vector_keys_matches_vector_headers",
     test_wrap_of_vector_keys_matches_vector_headers},
    {"pads_with_fresh_random_bytes", test_wrap_pads_with_fresh_random_bytes},
    {"output_refuses_every_single_byte_corruption",
     test_wrapped_blocks_refuse_every_single_byte_corruption},
    {"refuses_bad_arguments", test_wrap_refuses_bad_arguments},
    {NULL, NULL}};

int main(void) {
  tu_init();
  tu_add_suite("tr31_unwrap", unwrap_tests);
  tu_add_suite("tr31_unwrap_authenticated_but_malformed", forged_tests);
  tu_add_suite("tr31_wrap", wrap_tests);
  return tu_run();
}
