/*
 * keystore.c — the soft backend's key store (contract and file format in
 * keystore.h), on OpenSSL 3 EVP AES-256-GCM.
 *
 * Guarantees beyond the header:
 *   - The store file is hostile until its GCM tag verifies: its size is
 *     checked (44 bytes .. 16 MiB) and its header parsed before anything is
 *     decrypted; the plaintext is then read through a cursor that checks
 *     every remaining length.  After a good tag every record is checked
 *     again as if it were hostile (label characters and length, usage,
 *     algorithm, key length for the algorithm, version >= 1, records in
 *     strictly increasing (label, version) order — which also refuses
 *     duplicates —, count matching the data, no trailing bytes) and each
 *     key's check value is recomputed and compared: any fault is
 *     HSM_E_KEYSTORE, since only a writer bug can produce it.
 *   - Check values: TDES encrypts 8 zero bytes and AES takes the CMAC of 16
 *     zero bytes (hsm__kcv); an HMAC key, which has no cipher, takes the
 *     first 3 bytes of HMAC-SHA-256(key, 16 zero bytes).
 *   - TDES and AES keys have their key schedule (cipher) prepared on load
 *     and on add; HMAC keys have none (cipher_ready 0).
 *   - Every clear key leaves memory through hsm__cleanse: the decrypted
 *     plaintext, the serialised plaintext before encryption, a removed key,
 *     every key and the master key on close, the old array when it grows,
 *     and the master key file's bytes — on success and error paths alike.
 *   - Invariant: keys[0..n) are valid keys sorted by (label, version) with
 *     strcmp order on labels; keys[n..cap) are all zero bytes.
 *   - A failed hsm__ks_open leaves *ks zeroed; hsm__ks_close may be called
 *     on it, and twice.
 *   - Files are opened with O_NOFOLLOW and their owner and mode checked
 *     again on the open descriptor, so swapping a file for a symlink
 *     between the check and the open does not get past the check.
 *     hsm__file_private returns 0, HSM_E_PERMISSIONS, or HSM_E_INVAL when
 *     the file cannot be examined (missing: errno says why).
 *   - A missing store opened with create is written out (empty) at once,
 *     so a directory we cannot write to is found at start-up.
 *   - Save: a stale "<path>.tmp.<pid>" (a crashed process with our pid) is
 *     unlinked and the exclusive create retried once; the temporary file is
 *     chmod'ed to exactly 0600; on failure it is removed and the old store
 *     is untouched.  If only the final directory fsync fails, the new store
 *     is in place but HSM_E_KEYSTORE says it may not be durable.
 *   - hsm__ks_add refuses a key beyond what a 16 MiB file holds at the
 *     longest record, so whatever was added can be saved and read back.
 *   - Not enforced here (policy for the callers that import keys): DES
 *     parity, and which usages go with which algorithm.
 *
 * The store is not thread-safe: one store belongs to one loop.
 */
#include "keystore.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* File layout                                                               */

static const uint8_t ks_magic[8] = {'S', 'W', 'K', 'S', 'T', 'O', 'R', 'E'};

enum {
  KS_FORMAT = 1,
  KS_HDR_LEN = 12, /* magic, format version, reserved: the GCM AAD */
  KS_NONCE_LEN = 12,
  KS_TAG_LEN = 16,
  /* header, nonce, the count of an empty store, tag */
  KS_FILE_MIN = KS_HDR_LEN + KS_NONCE_LEN + 4 + KS_TAG_LEN,
  /* label length, label, usage, alg, version, key length, key, created,
   * not_after, kcv — with the shortest and the longest label and key */
  KS_REC_MIN = 1 + 1 + 1 + 1 + 4 + 1 + 8 + 8 + 8 + 3,
  KS_REC_MAX = 1 + HSM__LABEL_MAX + 1 + 1 + 4 + 1 + 64 + 8 + 8 + 3,
  /* raw, or 64 hex digits and a newline */
  MASTER_FILE_MAX = 65
};

/* A store file is read whole into memory; the bound keeps a hostile file
 * from making us allocate without limit, and is far above any real store
 * (over a hundred thousand keys). */
#define KS_FILE_MAX ((size_t)16 * 1024 * 1024)
/* As many keys as fit in a file we would accept: hsm__ks_add refuses more,
 * so a store that was added to can always be saved and read back. */
#define KS_KEYS_MAX ((KS_FILE_MAX - KS_FILE_MIN) / KS_REC_MAX)

/* ------------------------------------------------------------------------ */
/* Labels, algorithms, check values                                          */

int hsm__ks_label_ok(const char *label) {
  if (!label)
    return 0;
  size_t len = strnlen(label, HSM__LABEL_MAX + 1);
  if (len == 0 || len > HSM__LABEL_MAX)
    return 0;
  for (size_t i = 0; i < len; i++) {
    char c = label[i];
    int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
             (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok)
      return 0;
  }
  return 1;
}

static int usage_ok(int usage) {
  return usage > HSM_USAGE_NONE && usage < HSM_USAGE_COUNT;
}

static int alg_ok(int alg) {
  return alg == HSM_ALG_TDES || alg == HSM_ALG_AES || alg == HSM_ALG_HMAC;
}

static int len_ok(int alg, size_t len) {
  switch (alg) {
  case HSM_ALG_TDES:
    return len == 8 || len == 16 || len == 24;
  case HSM_ALG_AES:
    return len == 16 || len == 24 || len == 32;
  case HSM_ALG_HMAC:
    return len >= 16 && len <= 64;
  default:
    return 0;
  }
}

/* The symmetric.c cipher for a key algorithm, 0 for HMAC. */
static int cipher_alg(int alg) {
  return alg == HSM_ALG_TDES ? HSM__TDES : alg == HSM_ALG_AES ? HSM__AES : 0;
}

static int key_kcv(const hsm__key_t *k, uint8_t out[3]) {
  /* hsm_alg_t and the crypto layer's algorithm numbers are equal. */
  return hsm__kcv((int)k->alg, k->key, k->len, out, 3);
}

static void key_wipe(hsm__key_t *k) {
  if (k->cipher_ready)
    hsm__cipher_free(&k->cipher);
  hsm__cleanse(k, sizeof *k);
}

/* Prepares the key schedule of a TDES or AES key; nothing for HMAC. */
static int key_prepare(hsm__key_t *k) {
  int c = cipher_alg(k->alg);
  k->cipher_ready = 0;
  if (!c)
    return 0;
  int rc = hsm__cipher_init(&k->cipher, c, k->key, k->len);
  if (rc)
    return rc;
  k->cipher_ready = 1;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* The sorted array                                                          */

static int key_cmp(const char *label, uint32_t version, const hsm__key_t *k) {
  int c = strcmp(label, k->label);
  if (c)
    return c;
  return version < k->version ? -1 : version > k->version;
}

/* Index of the first key not less than (label, version). */
static size_t lower_bound(const hsm__keystore_t *ks, const char *label,
                          uint32_t version) {
  size_t lo = 0, hi = ks->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (key_cmp(label, version, &ks->keys[mid]) > 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Index one past the highest version of label (versions run 1..UINT32_MAX,
 * so everything of this label is below (label, UINT32_MAX) or equal). */
static size_t label_end(const hsm__keystore_t *ks, const char *label) {
  size_t i = lower_bound(ks, label, UINT32_MAX);
  if (i < ks->n && strcmp(ks->keys[i].label, label) == 0)
    i++;
  return i;
}

hsm__key_t *hsm__ks_find(hsm__keystore_t *ks, const char *label,
                         uint32_t version) {
  if (!ks || !hsm__ks_label_ok(label))
    return NULL;
  if (version == 0) {
    size_t end = label_end(ks, label);
    if (end > 0 && strcmp(ks->keys[end - 1].label, label) == 0)
      return &ks->keys[end - 1];
    return NULL;
  }
  size_t i = lower_bound(ks, label, version);
  if (i < ks->n && key_cmp(label, version, &ks->keys[i]) == 0)
    return &ks->keys[i];
  return NULL;
}

hsm__key_t *hsm__ks_find_kcv(hsm__keystore_t *ks, const char *label,
                             const uint8_t kcv[3], int64_t now) {
  if (!ks || !kcv || !hsm__ks_label_ok(label))
    return NULL;
  size_t end = label_end(ks, label);
  /* Newest first, so a KCV shared by two versions (a key re-imported under
   * a new version) resolves to the newer one. */
  for (size_t i = end; i > 0; i--) {
    hsm__key_t *k = &ks->keys[i - 1];
    if (strcmp(k->label, label) != 0)
      break;
    int current = i == end;
    int usable = current || k->not_after == 0 || now <= k->not_after;
    if (usable && memcmp(k->kcv, kcv, 3) == 0)
      return k;
  }
  return NULL;
}

/* Makes room for one more key.  Not realloc: realloc may move the block and
 * free the old one without wiping it, leaving clear keys in freed heap.
 * Moving a hsm__key_t by memcpy is safe: its cipher holds pointers to EVP
 * contexts, which stay where they are. */
static int grow(hsm__keystore_t *ks) {
  if (ks->n < ks->cap)
    return 0;
  size_t cap = ks->cap ? ks->cap * 2 : 8;
  if (cap > KS_KEYS_MAX)
    cap = KS_KEYS_MAX;
  if (cap <= ks->n)
    return HSM_E_KEYSTORE;
  hsm__key_t *keys = calloc(cap, sizeof *keys);
  if (!keys)
    return HSM_E_NOMEM;
  if (ks->n)
    memcpy(keys, ks->keys, ks->n * sizeof *keys);
  hsm__cleanse(ks->keys, ks->cap * sizeof *ks->keys);
  free(ks->keys);
  ks->keys = keys;
  ks->cap = cap;
  return 0;
}

int hsm__ks_add(hsm__keystore_t *ks, hsm__key_t *k) {
  if (!ks || !k || !hsm__ks_label_ok(k->label) || !usage_ok((int)k->usage) ||
      !alg_ok((int)k->alg))
    return HSM_E_INVAL;
  if (!len_ok((int)k->alg, k->len))
    return HSM_E_KEY_LENGTH;

  /* The stored copy is built field by field so that neither stray bytes
   * beyond len nor the caller's (uninitialised) cipher come along; the
   * caller's struct learns version, created and kcv only on success. */
  hsm__key_t nk;
  memset(&nk, 0, sizeof nk);
  memcpy(nk.label, k->label, strlen(k->label));
  nk.usage = k->usage;
  nk.alg = k->alg;
  nk.version = k->version;
  nk.len = k->len;
  memcpy(nk.key, k->key, k->len);
  nk.created = k->created ? k->created : (int64_t)time(NULL);
  nk.not_after = k->not_after;
  int rc = 0;
  if (nk.version == 0) {
    hsm__key_t *cur = hsm__ks_find(ks, nk.label, 0);
    if (cur && cur->version == UINT32_MAX)
      rc = HSM_E_INVAL;
    nk.version = cur ? cur->version + 1 : 1;
  } else if (hsm__ks_find(ks, nk.label, nk.version)) {
    rc = HSM_E_EXISTS;
  }
  if (rc == 0)
    rc = key_kcv(&nk, nk.kcv);
  if (rc == 0)
    rc = key_prepare(&nk);
  if (rc == 0)
    rc = grow(ks);
  if (rc) {
    key_wipe(&nk);
    return rc;
  }
  size_t i = lower_bound(ks, nk.label, nk.version);
  memmove(&ks->keys[i + 1], &ks->keys[i], (ks->n - i) * sizeof *ks->keys);
  ks->keys[i] = nk;
  ks->n++;
  k->version = nk.version;
  k->created = nk.created;
  memcpy(k->kcv, nk.kcv, 3);
  /* The stack copy's cipher pointers now belong to the array: wipe the
   * bytes only, do not free the contexts. */
  hsm__cleanse(&nk, sizeof nk);
  return 0;
}

int hsm__ks_remove(hsm__keystore_t *ks, const char *label, uint32_t version) {
  if (!ks || !hsm__ks_label_ok(label))
    return HSM_E_INVAL;
  size_t from, to;
  if (version == 0) {
    from = lower_bound(ks, label, 0);
    to = label_end(ks, label);
  } else {
    from = lower_bound(ks, label, version);
    to = from < ks->n && key_cmp(label, version, &ks->keys[from]) == 0
             ? from + 1
             : from;
  }
  if (from == to)
    return HSM_E_KEY_NOT_FOUND;
  for (size_t i = from; i < to; i++)
    key_wipe(&ks->keys[i]);
  size_t gone = to - from;
  memmove(&ks->keys[from], &ks->keys[to], (ks->n - to) * sizeof *ks->keys);
  /* The tail slots still hold copies of the keys that moved down. */
  hsm__cleanse(&ks->keys[ks->n - gone], gone * sizeof *ks->keys);
  ks->n -= gone;
  return 0;
}

void hsm__ks_close(hsm__keystore_t *ks) {
  if (!ks)
    return;
  for (size_t i = 0; i < ks->n; i++)
    if (ks->keys[i].cipher_ready)
      hsm__cipher_free(&ks->keys[i].cipher);
  /* All of cap, not n: a load that failed half-way through a record left
   * key bytes in the slot it was filling. */
  if (ks->keys)
    hsm__cleanse(ks->keys, ks->cap * sizeof *ks->keys);
  free(ks->keys);
  free(ks->path);
  hsm__cleanse(ks->master, sizeof ks->master);
  memset(ks, 0, sizeof *ks);
}

/* ------------------------------------------------------------------------ */
/* Files                                                                     */

/* Regular, owned by the effective user, nothing for group or others. */
static int stat_private(const struct stat *st) {
  if (!S_ISREG(st->st_mode) || st->st_uid != geteuid() ||
      (st->st_mode & 077) != 0)
    return HSM_E_PERMISSIONS;
  return 0;
}

/* 0, HSM_E_PERMISSIONS, or HSM_E_INVAL when the file cannot be examined at
 * all (errno says why, e.g. ENOENT); callers turn that into their own code
 * (HSM_E_MASTER_KEY, HSM_E_KEYSTORE). */
int hsm__file_private(const char *path) {
  struct stat st;
  if (!path)
    return HSM_E_INVAL;
  if (lstat(path, &st) != 0)
    return HSM_E_INVAL;
  return stat_private(&st);
}

/* Reads a whole private file of min..max bytes into a new buffer (which the
 * caller wipes and frees).  fail: the code for a file that cannot be read or
 * has the wrong size. */
static int read_private(const char *path, size_t min, size_t max, int fail,
                        uint8_t **out, size_t *outlen) {
  *out = NULL;
  *outlen = 0;
  int rc = hsm__file_private(path);
  if (rc)
    return rc == HSM_E_PERMISSIONS ? rc : fail;
  /* O_NONBLOCK: should the path have become a FIFO since the check, open
   * must not hang; fstat then refuses it. */
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0)
    return errno == ELOOP ? HSM_E_PERMISSIONS : fail;
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return fail;
  }
  if ((rc = stat_private(&st)) != 0) {
    close(fd);
    return rc;
  }
  if (st.st_size < (off_t)min || (uintmax_t)st.st_size > (uintmax_t)max) {
    close(fd);
    return fail;
  }
  size_t size = (size_t)st.st_size;
  /* One byte more than fstat said, to notice a file that grew meanwhile. */
  uint8_t *buf = malloc(size + 1);
  if (!buf) {
    close(fd);
    return HSM_E_NOMEM;
  }
  size_t got = 0;
  while (got < size + 1) {
    ssize_t r = read(fd, buf + got, size + 1 - got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      if (r < 0)
        got = SIZE_MAX;
      break;
    }
    got += (size_t)r;
  }
  close(fd);
  if (got != size) {
    hsm__cleanse(buf, size + 1);
    free(buf);
    return fail;
  }
  *out = buf;
  *outlen = size;
  return 0;
}

/* 32 raw bytes, or 64 hex digits and an optional "\n" (sizes 32, 64 and
 * 65 cannot be confused). */
static int read_master(const char *path, uint8_t master[32]) {
  uint8_t *buf;
  size_t len;
  int rc =
      read_private(path, 32, MASTER_FILE_MAX, HSM_E_MASTER_KEY, &buf, &len);
  if (rc)
    return rc;
  rc = HSM_E_MASTER_KEY;
  if (len == 32) {
    memcpy(master, buf, 32);
    rc = 0;
  } else if (len == 64 || (len == 65 && buf[64] == '\n')) {
    rc = 0;
    for (size_t i = 0; i < 32 && rc == 0; i++) {
      int hi = hsm__hexval(buf[2 * i], 0), lo = hsm__hexval(buf[2 * i + 1], 0);
      if (hi < 0 || lo < 0)
        rc = HSM_E_MASTER_KEY;
      else
        master[i] = (uint8_t)(hi << 4 | lo);
    }
  }
  if (rc)
    hsm__cleanse(master, 32);
  hsm__cleanse(buf, len + 1);
  free(buf);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Serialisation                                                             */

/* A reader over the decrypted records: every get checks what is left. */
typedef struct cursor_s {
  const uint8_t *p;
  size_t left;
} cursor_t;

static int get_bytes(cursor_t *c, void *out, size_t n) {
  if (c->left < n)
    return -1;
  memcpy(out, c->p, n);
  c->p += n;
  c->left -= n;
  return 0;
}

static int get_u8(cursor_t *c, uint8_t *v) {
  return get_bytes(c, v, 1);
}

static int get_u32(cursor_t *c, uint32_t *v) {
  uint8_t b[4];
  if (get_bytes(c, b, 4))
    return -1;
  *v = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
  return 0;
}

static int get_i64(cursor_t *c, int64_t *v) {
  uint8_t b[8];
  uint64_t u = 0;
  if (get_bytes(c, b, 8))
    return -1;
  for (int i = 0; i < 8; i++)
    u = u << 8 | b[i];
  /* Two's complement without relying on an implementation-defined cast. */
  *v = u <= INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
  return 0;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
  return p + 4;
}

static uint8_t *put_i64(uint8_t *p, int64_t v) {
  uint64_t u = (uint64_t)v;
  for (int i = 7; i >= 0; i--) {
    p[i] = (uint8_t)u;
    u >>= 8;
  }
  return p + 8;
}

/* Reads one record into k (zeroed first) and checks it; the check value is
 * recomputed and must equal the stored one. */
static int parse_key(cursor_t *c, hsm__key_t *k) {
  uint8_t llen, usage, alg, klen;
  uint32_t version;
  memset(k, 0, sizeof *k);
  /* strlen == llen: a NUL inside the label would otherwise shorten it to a
   * well-formed prefix. */
  if (get_u8(c, &llen) || llen == 0 || llen > HSM__LABEL_MAX ||
      get_bytes(c, k->label, llen) || strlen(k->label) != llen ||
      !hsm__ks_label_ok(k->label))
    return HSM_E_KEYSTORE;
  if (get_u8(c, &usage) || get_u8(c, &alg) || get_u32(c, &version) ||
      get_u8(c, &klen))
    return HSM_E_KEYSTORE;
  if (!usage_ok(usage) || !alg_ok(alg) || version == 0 || !len_ok(alg, klen))
    return HSM_E_KEYSTORE;
  k->usage = (hsm_usage_t)usage;
  k->alg = (hsm_alg_t)alg;
  k->version = version;
  k->len = klen;
  uint8_t kcv[3];
  if (get_bytes(c, k->key, klen) || get_i64(c, &k->created) ||
      get_i64(c, &k->not_after) || get_bytes(c, k->kcv, 3))
    return HSM_E_KEYSTORE;
  int rc = key_kcv(k, kcv);
  if (rc)
    return rc;
  if (CRYPTO_memcmp(kcv, k->kcv, 3) != 0)
    return HSM_E_KEYSTORE;
  return 0;
}

static int parse_store(hsm__keystore_t *ks, const uint8_t *pt, size_t len) {
  cursor_t c = {pt, len};
  uint32_t count;
  if (get_u32(&c, &count))
    return HSM_E_KEYSTORE;
  /* Bound count by what the data could hold before allocating for it. */
  if (count > c.left / KS_REC_MIN)
    return HSM_E_KEYSTORE;
  if (count) {
    ks->keys = calloc(count, sizeof *ks->keys);
    if (!ks->keys)
      return HSM_E_NOMEM;
    ks->cap = count;
  }
  for (uint32_t i = 0; i < count; i++) {
    hsm__key_t *k = &ks->keys[ks->n];
    int rc = parse_key(&c, k);
    if (rc)
      return rc;
    /* Strictly increasing: the array must come out sorted, and an equal
     * neighbour is a duplicate (label, version). */
    if (ks->n && key_cmp(k->label, k->version, &ks->keys[ks->n - 1]) <= 0)
      return HSM_E_KEYSTORE;
    if ((rc = key_prepare(k)) != 0)
      return rc;
    ks->n++;
  }
  return c.left == 0 ? 0 : HSM_E_KEYSTORE;
}

static size_t plaintext_len(const hsm__keystore_t *ks) {
  size_t len = 4;
  for (size_t i = 0; i < ks->n; i++)
    len += 1 + strlen(ks->keys[i].label) + 1 + 1 + 4 + 1 + ks->keys[i].len + 8 +
           8 + 3;
  return len;
}

static void serialise(const hsm__keystore_t *ks, uint8_t *p) {
  p = put_u32(p, (uint32_t)ks->n);
  for (size_t i = 0; i < ks->n; i++) {
    const hsm__key_t *k = &ks->keys[i];
    size_t llen = strlen(k->label);
    *p++ = (uint8_t)llen;
    memcpy(p, k->label, llen);
    p += llen;
    *p++ = (uint8_t)k->usage;
    *p++ = (uint8_t)k->alg;
    p = put_u32(p, k->version);
    *p++ = (uint8_t)k->len;
    memcpy(p, k->key, k->len);
    p += k->len;
    p = put_i64(p, k->created);
    p = put_i64(p, k->not_after);
    memcpy(p, k->kcv, 3);
    p += 3;
  }
}

static void make_header(uint8_t hdr[KS_HDR_LEN]) {
  memcpy(hdr, ks_magic, 8);
  hdr[8] = 0;
  hdr[9] = KS_FORMAT;
  hdr[10] = 0;
  hdr[11] = 0;
}

/* Encrypts pt into file (KS_HDR_LEN + KS_NONCE_LEN + len + KS_TAG_LEN). */
static int seal(const uint8_t master[32], const uint8_t *pt, size_t len,
                uint8_t *file) {
  uint8_t *nonce = file + KS_HDR_LEN, *ct = nonce + KS_NONCE_LEN;
  make_header(file);
  int rc = hsm__random(nonce, KS_NONCE_LEN);
  if (rc)
    return rc;
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx)
    return HSM_E_NOMEM;
  int n = 0, fin = 0;
  rc = HSM_E_CRYPTO;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, KS_NONCE_LEN, NULL) ==
          1 &&
      EVP_EncryptInit_ex(ctx, NULL, NULL, master, nonce) == 1 &&
      EVP_EncryptUpdate(ctx, NULL, &n, file, KS_HDR_LEN) == 1 &&
      EVP_EncryptUpdate(ctx, ct, &n, pt, (int)len) == 1 && (size_t)n == len &&
      EVP_EncryptFinal_ex(ctx, ct + n, &fin) == 1 && fin == 0 &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, KS_TAG_LEN, ct + len) == 1)
    rc = 0;
  EVP_CIPHER_CTX_free(ctx);
  return rc;
}

/* Decrypts a file whose size and header have been checked into pt
 * (len - KS_FILE_MIN + 4 bytes).  Until the tag verifies nothing in pt may
 * be trusted; on failure the caller wipes it regardless. */
static int unseal(const uint8_t master[32], const uint8_t *file, size_t len,
                  uint8_t *pt) {
  const uint8_t *nonce = file + KS_HDR_LEN, *ct = nonce + KS_NONCE_LEN;
  size_t ctlen = len - KS_HDR_LEN - KS_NONCE_LEN - KS_TAG_LEN;
  uint8_t tag[KS_TAG_LEN]; /* a writable copy: the ctrl takes void * */
  memcpy(tag, ct + ctlen, KS_TAG_LEN);
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx)
    return HSM_E_NOMEM;
  int n = 0, fin = 0, rc = HSM_E_CRYPTO;
  if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, KS_NONCE_LEN, NULL) ==
          1 &&
      EVP_DecryptInit_ex(ctx, NULL, NULL, master, nonce) == 1 &&
      EVP_DecryptUpdate(ctx, NULL, &n, file, KS_HDR_LEN) == 1 &&
      EVP_DecryptUpdate(ctx, pt, &n, ct, (int)ctlen) == 1 &&
      (size_t)n == ctlen &&
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, KS_TAG_LEN, tag) == 1)
    rc = EVP_DecryptFinal_ex(ctx, pt + n, &fin) == 1 ? 0 : HSM_E_MASTER_KEY;
  EVP_CIPHER_CTX_free(ctx);
  return rc;
}

/* Checks size and header, authenticates and decrypts, parses. */
static int load(hsm__keystore_t *ks) {
  uint8_t *file;
  size_t len;
  int rc = read_private(ks->path, KS_FILE_MIN, KS_FILE_MAX, HSM_E_KEYSTORE,
                        &file, &len);
  if (rc)
    return rc;
  uint8_t hdr[KS_HDR_LEN];
  make_header(hdr);
  if (memcmp(file, hdr, KS_HDR_LEN) != 0) {
    free(file);
    return HSM_E_KEYSTORE;
  }
  size_t ptlen = len - KS_HDR_LEN - KS_NONCE_LEN - KS_TAG_LEN;
  uint8_t *pt = malloc(ptlen);
  if (!pt) {
    free(file);
    return HSM_E_NOMEM;
  }
  rc = unseal(ks->master, file, len, pt);
  if (rc == 0)
    rc = parse_store(ks, pt, ptlen);
  hsm__cleanse(pt, ptlen);
  free(pt);
  free(file); /* ciphertext: nothing secret in it */
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Atomic save                                                               */

static int write_all(int fd, const uint8_t *p, size_t len) {
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

/* fsync of the directory holding path, so the rename itself is durable. */
static int sync_dir(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  if (!slash)
    dir = strdup(".");
  else if (slash == path)
    dir = strdup("/");
  else
    dir = strndup(path, (size_t)(slash - path));
  if (!dir)
    return -1;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0)
    return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* Creates the temporary file.  A file left by a crashed process that had
 * our pid (likely in a container, where the switch is often pid 1) would
 * make O_EXCL fail for ever, so one stale file is unlinked and the create
 * retried once; unlink removes a symlink itself, not its target. */
static int create_temp(const char *tmp) {
  for (int attempt = 0; attempt < 2; attempt++) {
    int fd =
        open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd >= 0)
      return fd;
    if (errno != EEXIST || attempt > 0 || unlink(tmp) != 0)
      break;
  }
  return -1;
}

static int write_file(const char *path, const uint8_t *data, size_t len) {
  size_t cap = strlen(path) + 32; /* ".tmp." and a pid */
  char *tmp = malloc(cap);
  if (!tmp)
    return HSM_E_NOMEM;
  snprintf(tmp, cap, "%s.tmp.%ld", path, (long)getpid());
  int fd = create_temp(tmp);
  if (fd < 0) {
    free(tmp);
    return HSM_E_KEYSTORE;
  }
  /* fchmod: the umask could only have narrowed 0600, but a umask of 0277
   * would leave a store its owner cannot write next time. */
  int ok =
      fchmod(fd, 0600) == 0 && write_all(fd, data, len) == 0 && fsync(fd) == 0;
  if (close(fd) != 0)
    ok = 0;
  if (ok && rename(tmp, path) != 0)
    ok = 0;
  if (!ok) {
    unlink(tmp);
    free(tmp);
    return HSM_E_KEYSTORE;
  }
  free(tmp);
  /* The new store is in place but may not survive a crash: report it, the
   * caller must not assume the change is durable. */
  return sync_dir(path) == 0 ? 0 : HSM_E_KEYSTORE;
}

int hsm__ks_save(hsm__keystore_t *ks) {
  if (!ks || !ks->path)
    return HSM_E_INVAL;
  size_t ptlen = plaintext_len(ks);
  size_t flen = KS_HDR_LEN + KS_NONCE_LEN + ptlen + KS_TAG_LEN;
  if (flen > KS_FILE_MAX)
    return HSM_E_KEYSTORE;
  uint8_t *pt = malloc(ptlen);
  uint8_t *file = malloc(flen);
  int rc = HSM_E_NOMEM;
  if (pt && file) {
    serialise(ks, pt);
    rc = seal(ks->master, pt, ptlen, file);
  }
  if (pt)
    hsm__cleanse(pt, ptlen);
  free(pt);
  if (rc == 0)
    rc = write_file(ks->path, file, flen);
  free(file);
  return rc;
}

int hsm__ks_open(hsm__keystore_t *ks, const char *path, const char *master_path,
                 int create) {
  if (!ks)
    return HSM_E_INVAL;
  memset(ks, 0, sizeof *ks);
  if (!path || !master_path || !*path)
    return HSM_E_INVAL;
  int rc = read_master(master_path, ks->master);
  if (rc) {
    hsm__ks_close(ks);
    return rc;
  }
  ks->path = strdup(path);
  if (!ks->path) {
    hsm__ks_close(ks);
    return HSM_E_NOMEM;
  }
  struct stat st;
  if (lstat(path, &st) != 0) {
    rc = errno == ENOENT && create ? hsm__ks_save(ks) : HSM_E_KEYSTORE;
  } else {
    rc = load(ks);
  }
  if (rc)
    hsm__ks_close(ks);
  return rc;
}
