/*
 * payshield_sim.c — see payshield_sim.h.  A test tool, not an HSM: it
 * holds a fixed test LMK in memory and computes everything in the clear
 * with hsm/crypto.h.
 *
 * Request layouts read (after header and command code; nH = n hex digits,
 * nN = n decimal digits, K = key field: 16H, U/X + 32H or T/Y + 48H):
 *   B2  length 4H, data                       -> B3 00 data
 *   NC  -                                     -> ND 00 LMK-KCV 16H, "0007-E000"
 *   CA  K(TPK) K(ZPK) maxlen 2N block 16H src-fmt 2N dst-fmt 2N account 12N
 *   CC  K(ZPK) K(ZPK) ... as CA               -> CB/CD 00 pinlen 2N block fmt
 *   G0  K(BDK) K(ZPK) KSN-descriptor 3H (XYZ) KSN (X+Y+Z+5 H, F-padded on
 *       the left to 20) block 16H src-fmt 01 dst-fmt 2N account 12N
 *                                             -> G1 00 pinlen block fmt
 *   DA  K(TPK) K(PVK) maxlen 2N block fmt check-len 2N account 12N
 *   EA  K(ZPK) ...    decimalisation 16N validation 12A (one N: the last 5
 *       account digits) offset 12H (check-len digits, F-padded) -> 00 / 01
 *   DC  K(TPK) K(PVK) block fmt account 12N PVKI 1N PVV 4N
 *   EC  K(ZPK) ...                             -> DD/ED 00 / 01
 *   M6  mode 1N (0) input 1N (0 binary, 1 hex) MAC size 1N (0 8H, 1 16H)
 *       algorithm 1N (1, 3) padding 1N (0-2) key type 3H (003 TAK, 008 ZAK)
 *       K length 4H message                    -> M7 00 MAC
 *   M8  as M6, then the MAC (8H or 16H)        -> M9 00 / 01
 *   CY  K(CVK) CVV 3N PAN ; expiry 4N service 3N -> CZ 00 / 01
 *   A6  key type 3H (001 ZPK, 002 TPK, 003 TAK, 008 ZAK) K(ZMK) key under
 *       the ZMK (X + 32H or Y + 48H) LMK scheme 1A (U or T)
 *                                             -> A7 00 K(LMK) KCV 6H
 *   A8  key type 3H K(ZMK) K(LMK) ZMK scheme 1A (X or Y)
 *                                             -> A9 00 key under ZMK KCV 6H
 * Anything else is answered with error 68 (command disabled).  A field
 * that does not parse, or bytes left over, is error 15.
 */
#include "payshield_sim.h"

#include "crypto.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIM_FRAME_MAX 65535
#define SIM_LAST_MAX 8192

/* ------------------------------------------------------------------------ */
/* Test LMK                                                                  */

static uint8_t variant_of(hsm_usage_t u) {
  switch (u) {
  case HSM_USAGE_ZMK:
    return 0x04;
  case HSM_USAGE_ZPK:
    return 0x06;
  case HSM_USAGE_TMK:
    return 0x14;
  case HSM_USAGE_TPK:
    return 0x24;
  case HSM_USAGE_PVK:
    return 0x34;
  case HSM_USAGE_CVK:
    return 0x44;
  case HSM_USAGE_TAK:
    return 0x16;
  case HSM_USAGE_ZAK:
    return 0x26;
  case HSM_USAGE_BDK:
    return 0x28;
  default:
    return 0;
  }
}

static void lmk_variant(hsm_usage_t u, uint8_t lmk[16]) {
  (void)hsm__unhex(PS_SIM_LMK_HEX, 32, lmk, 1);
  lmk[0] ^= variant_of(u);
  lmk[8] ^= variant_of(u);
}

/* ECB, block by block, of len bytes under the usage's LMK variant. */
static int lmk_crypt(hsm_usage_t u, int encrypt, const uint8_t *in,
                     uint8_t *out, size_t len) {
  uint8_t lmk[16];
  lmk_variant(u, lmk);
  int rc = hsm__ecb_raw(HSM__TDES, lmk, 16, encrypt, in, out, len);
  hsm__cleanse(lmk, sizeof lmk);
  return rc;
}

int ps_sim_wrap_key(hsm_usage_t usage, const char *clear_hex, char *out,
                    size_t cap, char kcv[7]) {
  uint8_t key[24], enc[24], k3[3];
  size_t hl = clear_hex ? strlen(clear_hex) : 0;
  if (!variant_of(usage) || !out || !kcv || cap < 50 ||
      (hl != 16 && hl != 32 && hl != 48))
    return HSM_E_INVAL;
  char up[48];
  for (size_t i = 0; i < hl; i++)
    up[i] = (clear_hex[i] >= 'a' && clear_hex[i] <= 'f')
                ? (char)(clear_hex[i] - 'a' + 'A')
                : clear_hex[i];
  size_t n = hl / 2;
  if (hsm__unhex(up, hl, key, 1))
    return HSM_E_INVAL;
  hsm__des_set_parity(key, n);
  int rc = hsm__kcv(HSM__TDES, key, n, k3, 3);
  if (!rc)
    rc = lmk_crypt(usage, 1, key, enc, n);
  if (!rc) {
    size_t o = 0;
    if (n == 16)
      out[o++] = 'U';
    else if (n == 24)
      out[o++] = 'T';
    hsm__tohex(enc, n, out + o);
    out[o + 2 * n] = '\0';
    hsm__tohex(k3, 3, kcv);
    kcv[6] = '\0';
  }
  hsm__cleanse(key, sizeof key);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Request parsing                                                           */

typedef struct cur_s {
  const char *p;
  size_t n, off;
  int bad;
} cur_t;

static const char *take(cur_t *c, size_t k) {
  if (c->bad || k > c->n - c->off) {
    c->bad = 1;
    return NULL;
  }
  const char *r = c->p + c->off;
  c->off += k;
  return r;
}

static int is_digits(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return 0;
  return 1;
}

/* n decimal digits as a number; marks the cursor bad otherwise. */
static unsigned take_num(cur_t *c, size_t n) {
  const char *s = take(c, n);
  unsigned v = 0;
  if (!s || !is_digits(s, n)) {
    c->bad = 1;
    return 0;
  }
  for (size_t i = 0; i < n; i++)
    v = v * 10 + (unsigned)(s[i] - '0');
  return v;
}

static const char *take_digits(cur_t *c, size_t n) {
  const char *s = take(c, n);
  if (s && !is_digits(s, n))
    c->bad = 1;
  return c->bad ? NULL : s;
}

static void take_hex(cur_t *c, size_t n, uint8_t *out) {
  const char *s = take(c, n);
  if (s && hsm__unhex(s, n, out, 1))
    c->bad = 1;
}

/* A key field, still enciphered: its length and cryptogram. */
typedef struct kf_s {
  size_t len;
  uint8_t enc[24];
} kf_t;

static void take_key(cur_t *c, kf_t *k) {
  const char *s = take(c, 1);
  if (!s)
    return;
  if (*s == 'U' || *s == 'X')
    k->len = 16;
  else if (*s == 'T' || *s == 'Y')
    k->len = 24;
  else {
    c->off--; /* no scheme letter: a single-length key */
    k->len = 8;
  }
  take_hex(c, 2 * k->len, k->enc);
}

/* The clear key, or 1 on a parity error (wrong LMK variant, damage). */
static int open_key(hsm_usage_t u, const kf_t *k, uint8_t *key) {
  if (lmk_crypt(u, 0, k->enc, key, k->len) != 0 ||
      !hsm__des_parity_ok(key, k->len)) {
    hsm__cleanse(key, 24);
    return 1;
  }
  return 0;
}

static int fmt_of(const char *code, int *fmt) {
  if (memcmp(code, "01", 2) == 0)
    *fmt = 0;
  else if (memcmp(code, "05", 2) == 0)
    *fmt = 1;
  else if (memcmp(code, "47", 2) == 0)
    *fmt = 3;
  else
    return -1;
  return 0;
}

/* The error code for a failed PIN block decode or encode. */
static const char *pin_error(int rc) {
  switch (rc) {
  case HSM_E_BAD_PIN_BLOCK:
    return "20";
  case HSM_E_PIN_LENGTH:
    return "24";
  case HSM_E_PIN_FORMAT:
    return "23";
  default:
    return "15";
  }
}

/* Recovers the PIN of an enciphered block.  A 13-digit stand-in PAN (the
 * account and a dummy check digit) gives the PIN block's PAN field. */
static const char *pin_out(const uint8_t *key, size_t klen,
                           const uint8_t block[8], int fmt, const char *acct,
                           char pin[13], size_t *pinlen) {
  uint8_t clear[8];
  char pan[13];
  memcpy(pan, acct, 12);
  pan[12] = '0';
  int rc = hsm__ecb_raw(HSM__TDES, key, klen, 0, block, clear, 8);
  if (!rc)
    rc = hsm__pinblock_decode(fmt, clear, pan, 13, pin, pinlen);
  hsm__cleanse(clear, sizeof clear);
  return rc ? pin_error(rc) : NULL;
}

static const char *pin_in(const uint8_t *key, size_t klen, const char *pin,
                          size_t pinlen, int fmt, const char *acct,
                          uint8_t block[8]) {
  uint8_t clear[8];
  char pan[13];
  memcpy(pan, acct, 12);
  pan[12] = '0';
  int rc = hsm__pinblock_encode(fmt, pin, pinlen, pan, 13, NULL, clear);
  if (!rc)
    rc = hsm__ecb_raw(HSM__TDES, key, klen, 1, clear, block, 8);
  hsm__cleanse(clear, sizeof clear);
  return rc ? pin_error(rc) : NULL;
}

/* ------------------------------------------------------------------------ */
/* Answers                                                                   */

typedef struct ans_s {
  char *p;
  size_t cap, len;
  int over;
} ans_t;

static void put(ans_t *a, const char *s, size_t n) {
  if (a->over || n > a->cap - a->len) {
    a->over = 1;
    return;
  }
  memcpy(a->p + a->len, s, n);
  a->len += n;
}

static void puts_(ans_t *a, const char *s) {
  put(a, s, strlen(s));
}

static void put_hex(ans_t *a, const uint8_t *b, size_t n) {
  char tmp[64];
  while (n) {
    size_t k = n > 32 ? 32 : n;
    hsm__tohex(b, k, tmp);
    put(a, tmp, 2 * k);
    b += k;
    n -= k;
  }
}

/* CA, CC. */
static const char *cmd_translate(cur_t *c, int tpk, ans_t *a) {
  kf_t k1, k2;
  uint8_t src[24], dst[24], block[8];
  take_key(c, &k1);
  take_key(c, &k2);
  unsigned maxlen = take_num(c, 2);
  take_hex(c, 16, block);
  const char *sf = take_digits(c, 2), *df = take_digits(c, 2);
  const char *acct = take_digits(c, 12);
  if (c->bad || c->off != c->n)
    return "15";
  if (open_key(tpk ? HSM_USAGE_TPK : HSM_USAGE_ZPK, &k1, src))
    return "10";
  if (open_key(HSM_USAGE_ZPK, &k2, dst))
    return "11";
  int sfmt, dfmt;
  if (fmt_of(sf, &sfmt) || fmt_of(df, &dfmt))
    return "23";
  char pin[13];
  size_t pinlen = 0;
  const char *e = pin_out(src, k1.len, block, sfmt, acct, pin, &pinlen);
  if (!e && pinlen > maxlen)
    e = "24";
  if (!e)
    e = pin_in(dst, k2.len, pin, pinlen, dfmt, acct, block);
  hsm__cleanse(pin, sizeof pin);
  hsm__cleanse(src, sizeof src);
  hsm__cleanse(dst, sizeof dst);
  if (e)
    return e;
  char two[3];
  snprintf(two, sizeof two, "%02u", (unsigned)pinlen);
  puts_(a, "00");
  puts_(a, two);
  put_hex(a, block, 8);
  put(a, df, 2);
  return NULL;
}

/* G0: TDES DUKPT to ZPK. */
static const char *cmd_dukpt(cur_t *c, ans_t *a) {
  kf_t kb, kz;
  uint8_t bdk[24], zpk[24], block[8], ksn[10], pk[16];
  take_key(c, &kb);
  take_key(c, &kz);
  const char *desc = take(c, 3);
  int x = desc ? hsm__hexval(desc[0], 1) : -1,
      y = desc ? hsm__hexval(desc[1], 1) : -1;
  int z = desc ? hsm__hexval(desc[2], 1) : -1;
  if (x < 0 || y < 0 || z < 0 || x + y + z + 5 > 20)
    return "15";
  char kh[20];
  size_t kl = (size_t)(x + y + z + 5);
  const char *ks = take(c, kl);
  if (!ks)
    return "15";
  memset(kh, 'F', sizeof kh);
  memcpy(kh + 20 - kl, ks, kl);
  if (hsm__unhex(kh, 20, ksn, 1))
    return "15";
  take_hex(c, 16, block);
  const char *sf = take_digits(c, 2), *df = take_digits(c, 2);
  const char *acct = take_digits(c, 12);
  if (c->bad || c->off != c->n)
    return "15";
  if (open_key(HSM_USAGE_BDK, &kb, bdk))
    return "10";
  if (open_key(HSM_USAGE_ZPK, &kz, zpk))
    return "11";
  if (kb.len != 16)
    return "27";
  int dfmt, sfmt;
  if (fmt_of(sf, &sfmt) || sfmt != 0 || fmt_of(df, &dfmt))
    return "23";
  char pin[13];
  size_t pinlen = 0;
  const char *e = NULL;
  if (hsm__dukpt_tdes_key(bdk, ksn, HSM__DUKPT_PIN, pk) != 0)
    e = "15";
  if (!e)
    e = pin_out(pk, 16, block, 0, acct, pin, &pinlen);
  if (!e)
    e = pin_in(zpk, kz.len, pin, pinlen, dfmt, acct, block);
  hsm__cleanse(pin, sizeof pin);
  hsm__cleanse(pk, sizeof pk);
  hsm__cleanse(bdk, sizeof bdk);
  hsm__cleanse(zpk, sizeof zpk);
  if (e)
    return e;
  char two[3];
  snprintf(two, sizeof two, "%02u", (unsigned)pinlen);
  puts_(a, "00");
  puts_(a, two);
  put_hex(a, block, 8);
  put(a, df, 2);
  return NULL;
}

/* DA, EA: IBM 3624 offset. */
static const char *cmd_ibm(cur_t *c, int tpk, ans_t *a) {
  kf_t k1, kp;
  uint8_t key[24], pvk[24], block[8];
  take_key(c, &k1);
  take_key(c, &kp);
  unsigned maxlen = take_num(c, 2);
  take_hex(c, 16, block);
  const char *f = take_digits(c, 2);
  unsigned check = take_num(c, 2);
  const char *acct = take_digits(c, 12);
  const char *dectab = take_digits(c, 16);
  const char *vd = take(c, 12);
  const char *off = take(c, 12);
  if (c->bad || c->off != c->n || check < 4 || check > 12)
    return "15";
  /* Validation data: hex and exactly one N, which becomes the last 5
   * account digits: 16 hex digits. */
  char vd16[17];
  size_t o = 0, ns = 0;
  for (size_t i = 0; i < 12; i++) {
    if (vd[i] == 'N') {
      memcpy(vd16 + o, acct + 7, 5);
      o += 5;
      ns++;
    } else if (hsm__hexval(vd[i], 1) >= 0 && o < 16) {
      vd16[o++] = vd[i];
    } else {
      return "15";
    }
  }
  if (ns != 1 || o != 16)
    return "15";
  vd16[16] = '\0';
  if (!is_digits(off, check))
    return "15";
  for (size_t i = check; i < 12; i++)
    if (off[i] != 'F')
      return "15";
  if (open_key(tpk ? HSM_USAGE_TPK : HSM_USAGE_ZPK, &k1, key))
    return "10";
  if (open_key(HSM_USAGE_PVK, &kp, pvk))
    return "11";
  int fmt;
  if (fmt_of(f, &fmt))
    return "23";
  char pin[13];
  size_t pinlen = 0;
  const char *e = pin_out(key, k1.len, block, fmt, acct, pin, &pinlen);
  if (!e && pinlen > maxlen)
    e = "24";
  if (!e) {
    hsm__cipher_t cp;
    int rc = hsm__cipher_init(&cp, HSM__TDES, pvk, kp.len);
    if (!rc) {
      rc = hsm__ibm3624_verify(&cp, vd16, dectab, pin, pinlen, off, check);
      hsm__cipher_free(&cp);
    }
    e = rc == 0 ? NULL : rc == 1 ? "01" : "15";
  }
  hsm__cleanse(pin, sizeof pin);
  hsm__cleanse(key, sizeof key);
  hsm__cleanse(pvk, sizeof pvk);
  if (e)
    return e;
  puts_(a, "00");
  return NULL;
}

/* DC, EC: Visa PVV. */
static const char *cmd_pvv(cur_t *c, int tpk, ans_t *a) {
  kf_t k1, kp;
  uint8_t key[24], pvk[24], block[8];
  take_key(c, &k1);
  take_key(c, &kp);
  take_hex(c, 16, block);
  const char *f = take_digits(c, 2);
  const char *acct = take_digits(c, 12);
  unsigned pvki = take_num(c, 1);
  const char *pvv = take_digits(c, 4);
  if (c->bad || c->off != c->n)
    return "15";
  if (open_key(tpk ? HSM_USAGE_TPK : HSM_USAGE_ZPK, &k1, key))
    return "10";
  if (open_key(HSM_USAGE_PVK, &kp, pvk))
    return "11";
  if (kp.len != 16)
    return "27";
  int fmt;
  if (fmt_of(f, &fmt))
    return "23";
  char pin[13], want[5], pan[13];
  size_t pinlen = 0;
  const char *e = pin_out(key, k1.len, block, fmt, acct, pin, &pinlen);
  if (!e) {
    hsm__cipher_t cp;
    memcpy(pan, acct, 12);
    pan[12] = '0';
    int rc = hsm__cipher_init(&cp, HSM__TDES, pvk, 16);
    if (!rc) {
      rc = hsm__visa_pvv(&cp, pan, 13, (int)pvki, pin, pinlen, want);
      hsm__cipher_free(&cp);
    }
    e = rc ? "15" : memcmp(want, pvv, 4) == 0 ? NULL : "01";
  }
  hsm__cleanse(pin, sizeof pin);
  hsm__cleanse(want, sizeof want);
  hsm__cleanse(key, sizeof key);
  hsm__cleanse(pvk, sizeof pvk);
  if (e)
    return e;
  puts_(a, "00");
  return NULL;
}

/* M6, M8. */
static const char *cmd_mac(cur_t *c, int verify, ans_t *a) {
  const char *mode = take(c, 1), *input = take(c, 1);
  const char *size = take(c, 1), *alg = take(c, 1), *pad = take(c, 1);
  const char *type = take(c, 3);
  if (c->bad)
    return "15";
  if (*mode != '0')
    return "02";
  if (*input != '0' && *input != '1' && *input != '2')
    return "03";
  if ((*size != '0' && *size != '1') || (*alg != '1' && *alg != '3'))
    return "04";
  if (*pad != '0' && *pad != '1' && *pad != '2')
    return "09";
  hsm_usage_t u = memcmp(type, "003", 3) == 0   ? HSM_USAGE_TAK
                  : memcmp(type, "008", 3) == 0 ? HSM_USAGE_ZAK
                                                : HSM_USAGE_NONE;
  if (u == HSM_USAGE_NONE)
    return "05";
  kf_t km;
  take_key(c, &km);
  const char *lh = take(c, 4);
  uint8_t l2[2];
  if (!lh || hsm__unhex(lh, 4, l2, 1))
    return "15";
  size_t mlen = (size_t)l2[0] << 8 | l2[1];
  const char *msg = take(c, mlen);
  size_t macbytes = *size == '1' ? 8 : 4;
  uint8_t given[8];
  if (verify)
    take_hex(c, 2 * macbytes, given);
  if (c->bad || c->off != c->n)
    return "15";
  uint8_t *data = malloc(mlen ? mlen : 1);
  if (!data)
    return "15";
  size_t dlen = mlen;
  if (*input == '1') {
    dlen = mlen / 2;
    if (hsm__unhex(msg, mlen, data, 1)) {
      free(data);
      return "15";
    }
  } else if (mlen) {
    memcpy(data, msg, mlen);
  }
  int padding = *pad - '0';
  if (padding == 0 && (dlen == 0 || dlen % 8)) {
    free(data);
    return "15";
  }
  uint8_t key[24], mac[8];
  if (open_key(u, &km, key)) {
    free(data);
    return "10";
  }
  int rc = hsm__mac_iso9797(*alg - '0', padding ? padding : 1, key, km.len,
                            data, dlen, mac);
  hsm__cleanse(key, sizeof key);
  free(data);
  if (rc)
    return rc == HSM_E_KEY_LENGTH ? "27" : "15";
  if (verify)
    return memcmp(mac, given, macbytes) == 0 ? (puts_(a, "00"), NULL) : "01";
  puts_(a, "00");
  put_hex(a, mac, macbytes);
  return NULL;
}

/* Key type codes of A6 and A8 (variant LMK).  002 covers TMK, TPK and
 * PVK on a real HSM (one LMK pair); the test LMK keeps them apart, so it
 * reads 002 as TPK. */
static hsm_usage_t usage_of_type(const char *t) {
  if (memcmp(t, "001", 3) == 0)
    return HSM_USAGE_ZPK;
  if (memcmp(t, "002", 3) == 0)
    return HSM_USAGE_TPK;
  if (memcmp(t, "003", 3) == 0)
    return HSM_USAGE_TAK;
  if (memcmp(t, "008", 3) == 0)
    return HSM_USAGE_ZAK;
  return HSM_USAGE_NONE;
}

/* A6 (import under a ZMK, to the LMK) and A8 (export from the LMK under a
 * ZMK).  Keys under the ZMK are TDES-ECB under the clear ZMK (X/Y, ANSI
 * X9.17; U/T are read the same). */
static const char *cmd_key_exchange(cur_t *c, int import, ans_t *a) {
  const char *type = take(c, 3);
  kf_t kz, kk;
  memset(&kk, 0, sizeof kk);
  take_key(c, &kz);
  take_key(c, &kk);
  const char *sch = take(c, 1);
  if (c->bad || c->off != c->n)
    return "15";
  hsm_usage_t u = usage_of_type(type);
  if (u == HSM_USAGE_NONE)
    return "04";
  char want = import ? (kk.len == 24 ? 'T' : 'U') : (kk.len == 24 ? 'Y' : 'X');
  if (kk.len == 8 || *sch != want)
    return "26";
  uint8_t zmk[24], key[24], enc[24], k3[3];
  if (open_key(HSM_USAGE_ZMK, &kz, zmk))
    return "10";
  const char *e = NULL;
  if (import) {
    if (hsm__ecb_raw(HSM__TDES, zmk, kz.len, 0, kk.enc, key, kk.len) != 0)
      e = "15";
    else if (!hsm__des_parity_ok(key, kk.len))
      e = "01";
    else if (lmk_crypt(u, 1, key, enc, kk.len) != 0)
      e = "15";
  } else {
    if (open_key(u, &kk, key))
      e = "11";
    else if (hsm__ecb_raw(HSM__TDES, zmk, kz.len, 1, key, enc, kk.len) != 0)
      e = "15";
  }
  if (!e && hsm__kcv(HSM__TDES, key, kk.len, k3, 3) != 0)
    e = "15";
  hsm__cleanse(zmk, sizeof zmk);
  hsm__cleanse(key, sizeof key);
  if (!e) {
    puts_(a, "00");
    put(a, sch, 1);
    put_hex(a, enc, kk.len);
    put_hex(a, k3, 3);
  }
  hsm__cleanse(enc, sizeof enc);
  return e;
}

/* CY: Visa CVV. */
static const char *cmd_cvv(cur_t *c, ans_t *a) {
  kf_t kc;
  take_key(c, &kc);
  const char *cvv = take_digits(c, 3);
  if (c->bad)
    return "15";
  const char *pan = c->p + c->off;
  size_t panlen = 0;
  while (c->off + panlen < c->n && pan[panlen] != ';')
    panlen++;
  if (panlen < 12 || panlen > 19 || !is_digits(pan, panlen))
    return "15";
  c->off += panlen;
  const char *semi = take(c, 1);
  const char *exp = take_digits(c, 4), *svc = take_digits(c, 3);
  if (c->bad || *semi != ';' || c->off != c->n)
    return "15";
  uint8_t key[24];
  if (open_key(HSM_USAGE_CVK, &kc, key))
    return "10";
  if (kc.len != 16) {
    hsm__cleanse(key, sizeof key);
    return "27";
  }
  hsm__cipher_t cc;
  char want[4];
  int rc = hsm__cipher_init(&cc, HSM__TDES, key, 16);
  if (!rc) {
    rc = hsm__visa_cvv(&cc, pan, panlen, exp, svc, want);
    hsm__cipher_free(&cc);
  }
  hsm__cleanse(key, sizeof key);
  if (rc)
    return "15";
  if (memcmp(want, cvv, 3) != 0)
    return "01";
  puts_(a, "00");
  return NULL;
}

int ps_sim_answer(unsigned header_len, const char *msg, size_t len, char *out,
                  size_t cap, size_t *outlen) {
  if (len < (size_t)header_len + 2 || cap < (size_t)header_len + 4)
    return -1;
  const char *cmd = msg + header_len;
  ans_t a = {.p = out, .cap = cap};
  ans_t body = {.p = out + header_len + 2, .cap = cap - header_len - 2};
  char code[2] = {cmd[0], (char)(cmd[1] + 1)};
  put(&a, msg, header_len);
  put(&a, code, 2);
  cur_t c = {.p = cmd + 2, .n = len - header_len - 2};
  const char *e;
  if (memcmp(cmd, "B2", 2) == 0) {
    const char *lh = take(&c, 4);
    uint8_t l2[2];
    if (!lh || hsm__unhex(lh, 4, l2, 1)) {
      e = "15";
    } else {
      size_t n = (size_t)l2[0] << 8 | l2[1];
      const char *d = take(&c, n);
      e = !d || c.off != c.n ? "15" : NULL;
      if (!e) {
        puts_(&body, "00");
        put(&body, d, n);
      }
    }
  } else if (memcmp(cmd, "NC", 2) == 0) {
    uint8_t lmk[16], kcv[8];
    (void)hsm__unhex(PS_SIM_LMK_HEX, 32, lmk, 1);
    e = c.n ? "15" : hsm__kcv(HSM__TDES, lmk, 16, kcv, 8) ? "13" : NULL;
    hsm__cleanse(lmk, sizeof lmk);
    if (!e) {
      puts_(&body, "00");
      put_hex(&body, kcv, 8);
      puts_(&body, "0007-E000");
    }
  } else if (memcmp(cmd, "CA", 2) == 0 || memcmp(cmd, "CC", 2) == 0) {
    e = cmd_translate(&c, cmd[1] == 'A', &body);
  } else if (memcmp(cmd, "G0", 2) == 0) {
    e = cmd_dukpt(&c, &body);
  } else if (memcmp(cmd, "DA", 2) == 0 || memcmp(cmd, "EA", 2) == 0) {
    e = cmd_ibm(&c, cmd[0] == 'D', &body);
  } else if (memcmp(cmd, "DC", 2) == 0 || memcmp(cmd, "EC", 2) == 0) {
    e = cmd_pvv(&c, cmd[0] == 'D', &body);
  } else if (memcmp(cmd, "M6", 2) == 0 || memcmp(cmd, "M8", 2) == 0) {
    e = cmd_mac(&c, cmd[1] == '8', &body);
  } else if (memcmp(cmd, "CY", 2) == 0) {
    e = cmd_cvv(&c, &body);
  } else if (memcmp(cmd, "A6", 2) == 0 || memcmp(cmd, "A8", 2) == 0) {
    e = cmd_key_exchange(&c, cmd[1] == '6', &body);
  } else {
    e = "68";
  }
  if (e || body.over) {
    hsm__cleanse(body.p, body.len);
    put(&a, e ? e : "15", 2);
  } else {
    a.len += body.len; /* the body was written in place, after the code */
  }
  *outlen = a.len;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Server                                                                    */

typedef struct sim_conn_s sim_conn_t;

typedef struct sim_resp_s {
  uv_timer_t timer;
  ps_sim_t *s; /* not via c: close callbacks run newest first, so the
                  connection may be gone when the timer's runs */
  sim_conn_t *c;
  int close_after;
  size_t len;
  struct sim_resp_s *prev, *next;
  char data[];
} sim_resp_t;

struct sim_conn_s {
  ps_sim_t *s;
  uv_tcp_t tcp;
  int closing;
  char in[SIM_FRAME_MAX + 2];
  size_t inlen;
  sim_resp_t *delayed;
  sim_resp_t *batch; /* reverse mode: this read's answers, newest first */
  struct sim_conn_s *prev, *next;
};

typedef struct sim_delay_s {
  char cmd[3];
  unsigned ms;
} sim_delay_t;

struct ps_sim_s {
  uv_loop_t *loop;
  uv_tcp_t server;
  uint16_t port;
  unsigned header_len;
  int stopping;
  unsigned handles;
  sim_conn_t *conns;
  sim_delay_t delays[16];
  size_t ndelays;
  unsigned delay_all, jitter;
  int reverse;
  char drop_on[3];
  char force_cmd[3];
  char force_code[3];
  unsigned force_count;
  ps_sim_hostile_t hostile;
  uint32_t rng;
  ps_sim_stats_t stats;
  char last[SIM_LAST_MAX];
  size_t last_len;
  char scratch[SIM_FRAME_MAX + 2];
};

static void sim_maybe_free(ps_sim_t *s) {
  if (s->stopping && s->handles == 0)
    free(s);
}

static uint32_t sim_rand(ps_sim_t *s) {
  uint32_t x = s->rng;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  s->rng = x;
  return x;
}

static void on_resp_timer_closed(uv_handle_t *h) {
  sim_resp_t *r = h->data;
  ps_sim_t *s = r->s;
  free(r);
  s->handles--;
  sim_maybe_free(s);
}

static void on_conn_closed(uv_handle_t *h) {
  sim_conn_t *c = h->data;
  ps_sim_t *s = c->s;
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  free(c);
  s->handles--;
  sim_maybe_free(s);
}

static void conn_close(sim_conn_t *c) {
  if (c->closing)
    return;
  c->closing = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  for (sim_resp_t *r = c->delayed; r; r = r->next) {
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, on_resp_timer_closed);
  }
  c->delayed = NULL;
  while (c->batch) {
    sim_resp_t *r = c->batch;
    c->batch = r->next;
    free(r);
  }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

typedef struct sim_write_s {
  uv_write_t w;
  uv_shutdown_t sh;
  sim_conn_t *c;
  char data[];
} sim_write_t;

static void on_shutdown(uv_shutdown_t *sh, int status) {
  sim_write_t *w = sh->data;
  sim_conn_t *c = w->c;
  (void)status;
  free(w);
  conn_close(c);
}

static void on_written(uv_write_t *wr, int status) {
  sim_write_t *w = wr->data;
  (void)status;
  if (!w->sh.data)
    free(w);
}

/* Sends raw bytes (length prefix included); close_after: then shut down
 * and close the connection. */
static void send_raw(sim_conn_t *c, const char *data, size_t len,
                     int close_after) {
  if (c->closing)
    return;
  sim_write_t *w = calloc(1, sizeof *w + len);
  if (!w) {
    conn_close(c);
    return;
  }
  w->c = c;
  w->w.data = w;
  memcpy(w->data, data, len);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
  if (close_after)
    w->sh.data = w; /* freed by on_shutdown, which runs after the write */
  if (uv_write(&w->w, (uv_stream_t *)&c->tcp, &b, 1, on_written) < 0) {
    free(w);
    conn_close(c);
    return;
  }
  c->s->stats.responses++;
  if (close_after &&
      uv_shutdown(&w->sh, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
    w->sh.data = NULL; /* on_written frees it */
    conn_close(c);
  }
}

static void send_resp(sim_resp_t *r) {
  send_raw(r->c, r->data, r->len, r->close_after);
}

static void on_resp_timer(uv_timer_t *t) {
  sim_resp_t *r = t->data;
  sim_conn_t *c = r->c;
  if (r->prev)
    r->prev->next = r->next;
  else
    c->delayed = r->next;
  if (r->next)
    r->next->prev = r->prev;
  send_resp(r);
  uv_close((uv_handle_t *)&r->timer, on_resp_timer_closed);
}

static unsigned delay_for(ps_sim_t *s, const char *cmd) {
  unsigned ms = s->delay_all;
  for (size_t i = 0; i < s->ndelays; i++)
    if (memcmp(s->delays[i].cmd, cmd, 2) == 0)
      ms = s->delays[i].ms;
  if (s->jitter)
    ms += sim_rand(s) % (s->jitter + 1);
  return ms;
}

/* Turns the answer in out (header onwards, len bytes) into the configured
 * hostile frame; returns the frame length, prefix included, in buf. */
static size_t hostile_frame(ps_sim_t *s, const char *ans, size_t len, char *buf,
                            int *close_after) {
  size_t hl = s->header_len, n = len;
  char *p = buf + 2;
  memcpy(p, ans, len);
  switch (s->hostile) {
  case PS_SIM_HOSTILE_SHORT:
    n = hl > 1 ? hl - 1 : 0;
    if (n == 0) {
      p[0] = 'x';
      n = 1; /* header length 1: a one-byte non-digit frame */
    }
    break;
  case PS_SIM_HOSTILE_WRONG_HEADER:
    p[hl - 1] = (char)(p[hl - 1] == '9' ? '0' : p[hl - 1] + 1);
    break;
  case PS_SIM_HOSTILE_GARBAGE:
    n = 24;
    for (size_t i = 0; i < n; i++)
      p[i] = (char)(sim_rand(s) & 0xFF);
    p[0] = 'Z';
    break;
  case PS_SIM_HOSTILE_WRONG_CODE:
    p[hl] = 'Z';
    p[hl + 1] = 'Z';
    break;
  case PS_SIM_HOSTILE_BAD_FIELDS:
    n = hl + 2;
    memcpy(p + n, "00XYZ", 5);
    n += 5;
    break;
  case PS_SIM_HOSTILE_ZERO_LENGTH:
    n = 0;
    break;
  case PS_SIM_HOSTILE_TRUNCATED:
    buf[0] = (char)((n + 10) >> 8);
    buf[1] = (char)((n + 10) & 0xFF);
    *close_after = 1;
    return n + 2;
  default:
    break;
  }
  buf[0] = (char)(n >> 8);
  buf[1] = (char)(n & 0xFF);
  return n + 2;
}

/* One request frame (header onwards): 0, or -1 when the connection was
 * closed. */
static int sim_frame(sim_conn_t *c, const char *msg, size_t len) {
  ps_sim_t *s = c->s;
  s->stats.requests++;
  s->last_len = len;
  memcpy(s->last, msg, len < SIM_LAST_MAX ? len : SIM_LAST_MAX);
  const char *cmd = len >= s->header_len + 2 ? msg + s->header_len : "??";
  if (s->drop_on[0] && memcmp(cmd, s->drop_on, 2) == 0) {
    s->drop_on[0] = '\0';
    s->stats.dropped++;
    conn_close(c);
    return -1;
  }
  char *ans = s->scratch;
  size_t alen = 0;
  if (ps_sim_answer(s->header_len, msg, len, ans, SIM_FRAME_MAX, &alen)) {
    s->stats.malformed++;
    s->stats.dropped++;
    conn_close(c);
    return -1;
  }
  if (alen >= s->header_len + 4 &&
      memcmp(ans + s->header_len + 2, "15", 2) == 0)
    s->stats.malformed++;
  if (s->force_count &&
      (!s->force_cmd[0] || memcmp(cmd, s->force_cmd, 2) == 0)) {
    s->force_count--;
    memcpy(ans + s->header_len + 2, s->force_code, 2);
    alen = s->header_len + 4;
  }
  int close_after = 0;
  /* Room for the hostile frames, which may be longer than the answer. */
  sim_resp_t *r = calloc(1, sizeof *r + alen + 2 + 64);
  if (!r) {
    conn_close(c);
    return -1;
  }
  r->s = s;
  r->c = c;
  r->len = hostile_frame(s, ans, alen, r->data, &close_after);
  r->close_after = close_after;
  s->hostile = PS_SIM_HOSTILE_NONE;
  unsigned ms = delay_for(s, cmd);
  if (ms) {
    uv_timer_init(s->loop, &r->timer);
    r->timer.data = r;
    s->handles++;
    r->next = c->delayed;
    if (c->delayed)
      c->delayed->prev = r;
    c->delayed = r;
    uv_timer_start(&r->timer, on_resp_timer, ms, 0);
  } else if (s->reverse) {
    r->next = c->batch;
    c->batch = r;
  } else {
    send_resp(r);
    free(r);
  }
  return c->closing ? -1 : 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  sim_conn_t *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->in + c->inlen, (unsigned)(sizeof c->in - c->inlen));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  sim_conn_t *c = st->data;
  (void)buf;
  if (c->closing)
    return;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->inlen += (size_t)nread;
  size_t off = 0;
  while (c->inlen - off >= 2) {
    const unsigned char *u = (const unsigned char *)c->in + off;
    size_t n = (size_t)u[0] << 8 | u[1];
    if (c->inlen - off - 2 < n)
      break;
    if (sim_frame(c, c->in + off + 2, n) != 0)
      return;
    off += 2 + n;
  }
  memmove(c->in, c->in + off, c->inlen - off);
  c->inlen -= off;
  /* Reverse mode: the batch is newest first, so sending it in list order
   * answers this read's requests last to first. */
  while (c->batch && !c->closing) {
    sim_resp_t *r = c->batch;
    c->batch = r->next;
    send_resp(r);
    free(r);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  ps_sim_t *s = server->data;
  if (status < 0 || s->stopping)
    return;
  sim_conn_t *c = calloc(1, sizeof *c);
  if (!c)
    return;
  c->s = s;
  uv_tcp_init(s->loop, &c->tcp);
  c->tcp.data = c;
  s->handles++;
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0 ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
    conn_close(c);
    return;
  }
  s->stats.connections++;
}

static void on_server_closed(uv_handle_t *h) {
  ps_sim_t *s = h->data;
  s->handles--;
  sim_maybe_free(s);
}

int ps_sim_start(ps_sim_t **out, uv_loop_t *loop, uint16_t port,
                 unsigned header_len) {
  if (!out || !loop || header_len == 0 || header_len > 16)
    return HSM_E_INVAL;
  ps_sim_t *s = calloc(1, sizeof *s);
  if (!s)
    return HSM_E_NOMEM;
  s->loop = loop;
  s->header_len = header_len;
  s->rng = 0x2545F491u;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", port, &addr);
  uv_tcp_init(loop, &s->server);
  s->server.data = s;
  s->handles = 1;
  int rc = uv_tcp_bind(&s->server, (const struct sockaddr *)&addr, 0);
  if (!rc)
    rc = uv_listen((uv_stream_t *)&s->server, 128, on_connection);
  if (rc) {
    s->stopping = 1;
    uv_close((uv_handle_t *)&s->server, on_server_closed);
    return HSM_E_UNAVAILABLE;
  }
  struct sockaddr_storage ss;
  int sl = sizeof ss;
  uv_tcp_getsockname(&s->server, (struct sockaddr *)&ss, &sl);
  s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  *out = s;
  return 0;
}

uint16_t ps_sim_port(const ps_sim_t *s) {
  return s->port;
}

void ps_sim_kill_connections(ps_sim_t *s) {
  for (sim_conn_t *c = s->conns; c; c = c->next)
    if (!c->closing) {
      s->stats.dropped++;
      conn_close(c);
    }
}

void ps_sim_stop(ps_sim_t *s) {
  if (!s || s->stopping)
    return;
  s->stopping = 1;
  uv_close((uv_handle_t *)&s->server, on_server_closed);
  for (sim_conn_t *c = s->conns; c; c = c->next)
    conn_close(c);
}

void ps_sim_set_delay(ps_sim_t *s, const char *cmd, unsigned ms) {
  if (!cmd) {
    s->delay_all = ms;
    s->ndelays = 0;
    return;
  }
  for (size_t i = 0; i < s->ndelays; i++)
    if (memcmp(s->delays[i].cmd, cmd, 2) == 0) {
      s->delays[i].ms = ms;
      return;
    }
  if (s->ndelays < sizeof s->delays / sizeof s->delays[0]) {
    memcpy(s->delays[s->ndelays].cmd, cmd, 2);
    s->delays[s->ndelays].cmd[2] = '\0';
    s->delays[s->ndelays++].ms = ms;
  }
}

void ps_sim_set_jitter(ps_sim_t *s, unsigned max_ms) {
  s->jitter = max_ms;
}

void ps_sim_set_reverse(ps_sim_t *s, int on) {
  s->reverse = on;
}

void ps_sim_drop_on(ps_sim_t *s, const char *cmd) {
  snprintf(s->drop_on, sizeof s->drop_on, "%.2s", cmd ? cmd : "");
}

void ps_sim_force_error(ps_sim_t *s, const char *cmd, const char *code,
                        unsigned count) {
  snprintf(s->force_cmd, sizeof s->force_cmd, "%.2s", cmd ? cmd : "");
  snprintf(s->force_code, sizeof s->force_code, "%.2s", code ? code : "00");
  s->force_count = count;
}

void ps_sim_set_hostile(ps_sim_t *s, ps_sim_hostile_t mode) {
  s->hostile = mode;
}

void ps_sim_stats(const ps_sim_t *s, ps_sim_stats_t *out) {
  *out = s->stats;
}

size_t ps_sim_open_connections(const ps_sim_t *s) {
  size_t n = 0;
  for (const sim_conn_t *c = s->conns; c; c = c->next)
    n += !c->closing;
  return n;
}

size_t ps_sim_last_request(const ps_sim_t *s, char *out, size_t cap) {
  size_t n = s->last_len < SIM_LAST_MAX ? s->last_len : SIM_LAST_MAX;
  memcpy(out, s->last, n < cap ? n : cap);
  return s->last_len;
}

/* ------------------------------------------------------------------------ */
/* Standalone                                                                */

#ifdef PAYSHIELD_SIM_MAIN
#include <signal.h>

static ps_sim_t *sim;
static uv_signal_t sigint, sigterm;

static void on_signal(uv_signal_t *sig, int signum) {
  (void)sig;
  (void)signum;
  ps_sim_stop(sim);
  uv_close((uv_handle_t *)&sigint, NULL);
  uv_close((uv_handle_t *)&sigterm, NULL);
}

static int usage(void) {
  fprintf(stderr, "usage: payshield_sim [PORT [HEADER_LEN]]\n"
                  "       payshield_sim wrap USAGE CLEAR_KEY_HEX\n"
                  "A payShield protocol simulator with a TEST LMK, for "
                  "tests only.\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "wrap") == 0) {
    char out[50], kcv[7];
    if (argc != 4)
      return usage();
    if (ps_sim_wrap_key(hsm_usage_parse(argv[2]), argv[3], out, sizeof out,
                        kcv)) {
      fprintf(stderr, "payshield_sim: cannot wrap: usage must be one of ZMK "
                      "TMK ZPK TPK BDK PVK CVK TAK ZAK, key 16/32/48 hex\n");
      return 1;
    }
    printf("%s %s\n", out, kcv);
    return 0;
  }
  if (argc > 3)
    return usage();
  long port = argc > 1 ? strtol(argv[1], NULL, 10) : 1500;
  long hl = argc > 2 ? strtol(argv[2], NULL, 10) : 4;
  if (port < 0 || port > 65535 || hl < 1 || hl > 16)
    return usage();
  uv_loop_t *loop = uv_default_loop();
  if (ps_sim_start(&sim, loop, (uint16_t)port, (unsigned)hl)) {
    fprintf(stderr, "payshield_sim: cannot listen on 127.0.0.1:%ld\n", port);
    uv_run(loop, UV_RUN_DEFAULT);
    return 1;
  }
  printf("payshield_sim: listening on 127.0.0.1:%u, header length %ld "
         "(TEST LMK)\n",
         ps_sim_port(sim), hl);
  fflush(stdout);
  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  return 0;
}
#endif
