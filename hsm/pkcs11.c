/*
 * pkcs11.c — the pkcs11 backend: keys live on a PKCS#11 token (any module,
 * loaded by path; tested with SoftHSM2 2.6.1) and every step that uses a
 * key runs on the token.  This process only formats and parses: padding,
 * PIN and PAN fields, decimalisation, the journal's output layout.
 *
 * Contract (hsm.h, backend.h):
 *   - open: dlopen(cfg->pkcs11_module), C_GetFunctionList, C_Initialize
 *     with CKF_OS_LOCKING_OK; the token is found by cfg->pkcs11_token among
 *     the slots with a token present; the user PIN is read from
 *     cfg->pkcs11_pin_file, which must be a regular file owned by the
 *     effective user and not accessible to group or others (the key
 *     store's rule, hsm__file_private: HSM_E_PERMISSIONS otherwise), and is
 *     wiped from memory after login.  The module must offer every
 *     mechanism the advertised capabilities need (HSM_E_UNSUPPORTED naming
 *     the first missing one otherwise), so a capability is never claimed
 *     that the token cannot deliver.
 *   - Capabilities: MAC_RETAIL, MAC_CMAC, CVV, DATA, KEY_COMPONENTS,
 *     KEY_GENERATE.  With cfg->pkcs11_insecure_pin also PIN_TRANSLATE,
 *     PIN_AES, DUKPT_AES and PIN_VERIFY (open adds those bits to h->caps
 *     and prints one warning line to stderr).  Without the flag PIN translation
 * and verification are refused at submit with HSM_E_UNSUPPORTED: PKCS#11 has no
 * PIN translate, so the only way is C_Decrypt of the PIN block into this
 *     process, re-formatting here, and C_Encrypt (PCI PIN forbids that).
 *     Never: DUKPT_TDES (the derivation XORs key halves with constants,
 *     which needs CKM_XOR_BASE_AND_DATA, absent from SoftHSM2) and
 *     KEY_TR31 (the key block MAC covers the clear key, so building or
 *     checking one needs the clear key in this process; the
 *     key_import_tr31 / key_export_tr31 entries are NULL and the generic
 *     layer answers HSM_E_UNSUPPORTED).  Legacy TDES-ECB key exchange
 *     (key_import_ecb / key_export_ecb) is NULL too: it needs C_UnwrapKey
 *     and C_WrapKey with CKM_DES3_ECB, which SoftHSM2 refuses
 *     (CKR_MECHANISM_INVALID), and decrypting the cryptogram with
 *     C_Decrypt would put the clear key in this process.
 *   - Semantics and key usage rules are the soft backend's (soft.c),
 *     including the error codes for wrong usages, algorithms and formats
 *     and the MAC changeover window (older versions verify while their
 *     not_after is set and not passed).
 *
 * Token objects.  Every version of a key is one CKO_SECRET_KEY token
 * object, CKA_PRIVATE, CKA_SENSITIVE, never CKA_EXTRACTABLE (nothing is
 * exported: no TR-31), CKA_LABEL = the key's label, and CKA_ID = the
 * key's metadata as text (vendor-neutral: any token stores CKA_ID):
 *   "swhsm1 role=key usage=ZPK alg=TDES version=3 length=16
 *    created=1732300000 not_after=0 kcv=08D7B4"
 * (one line; role=left for the companion object below).  CKA_ID is
 * rewritten only to set not_after at rotation.  Objects without the
 * "swhsm1 " prefix are not ours and are ignored.  CKA_KEY_TYPE is CKK_DES2
 * or CKK_DES3 (TDES), CKK_AES, or CKK_GENERIC_SECRET (HMAC).  The
 * PKCS#11 usage attributes are set from the usage (coarse guard rails;
 * the usage in CKA_ID is what this backend enforces).
 *
 * Check values are computed on the token as payment HSMs do: TDES
 * encrypts 8 zero bytes, AES takes the CMAC of 16 zero bytes (not
 * CKA_CHECK_VALUE, which is AES-ECB of zeros), HMAC keys HMAC-SHA-256 of
 * 16 zero bytes; the first 3 bytes, stored in CKA_ID.
 *
 * Single DES inside the token.  The retail MAC (ISO 9797-1 algorithm 3)
 * and the Visa CVV start with single DES under K, the left half of a
 * 2-key TDES key K|K'.  PKCS#11 cannot take half of a key object, so each
 * 2-key TAK, ZAK and CVK version has a companion object (role=left) whose
 * value is K|K: TDES with it is single DES with K.  Imported keys get it
 * from the clear key the generic layer already holds.  Generated keys are
 * derived on the token from a random session seed S (CKM_DES3_KEY_GEN)
 * with CKM_DES3_ECB_ENCRYPT_DATA: the key is E_S(d1)|E_S(d2) and the
 * companion E_S(d1)|E_S(d1), for random d1 != d2, then S is destroyed; no
 * clear key ever reaches this process.  The single-DES intermediate of the
 * CBC chain does pass through it, which a payment HSM would keep inside.
 *
 * HMAC keys: SoftHSM2 refuses CKM_SHA256_HMAC keys shorter than 32 bytes
 * (its mechanism info says so).  HMAC pads a key shorter than the hash
 * block (64) with zeros, so an imported key shorter than the module's
 * minimum is stored zero-padded to it: the same HMAC, bit for bit; its
 * real length is in CKA_ID.  Generating one shorter than the minimum is
 * refused (HSM_E_KEY_LENGTH); rotating one makes a key of the minimum.
 *
 * AES DUKPT (insecure PIN mode only): every X9.24-3 derivation step is
 * AES-ECB of derivation data under the parent key, i.e.
 * CKM_AES_ECB_ENCRYPT_DATA into a session object; the PIN working key is
 * derived the same way and destroyed after use.
 *
 * Threads and queue.  PKCS#11 calls block, so they never run on the loop:
 *
 *   loop thread                          worker threads (cfg->pkcs11_threads,
 *                                         default 2, each with its own R/W
 *                                         session)
 *   submit: copy args into a job,
 *     push on the queue (bounded:      -> pop a job, run it on the token,
 *     P11_QUEUE_MAX waiting jobs;          push it on the done list,
 *     full: HSM_E_UNAVAILABLE)              uv_async_send
 *   on_async: for each done job not   <-
 *     cancelled: copy its result into
 *     req, hsm__complete(req)
 *   cancel: mark the job cancelled
 *   close: stop and join the workers, free every job
 *
 * Invariants:
 *   (1) hsm__complete runs on the loop thread only (in on_async), at most
 *       once per job, and never for a job that cancel() has marked: the
 *       generic layer completed that request already (timeout or close),
 *       and the job's late result is dropped when it arrives;
 *   (2) a worker never touches an hsm_req_t: it reads and writes only its
 *       job, which the loop thread does not touch between the push on the
 *       queue and the pop from the done list (the mutex orders both
 *       hand-overs); `cancelled` is written and read under the mutex;
 *   (3) every job is on the loop thread's outstanding list from submit
 *       until on_async frees it (or close does), so cancel() and close
 *       always find it; the async handle is referenced on the loop exactly
 *       while that list is not empty;
 *   (4) a user callback may submit, or close the hsm, from inside
 *       on_async: close frees every job (the ones on_async was about to
 *       deliver included: they were cancelled first) and on_async stops
 *       at once; the state itself is freed in the async handle's close
 *       callback, after on_async has returned;
 *   (5) job memory that held data, PIN blocks or PANs is wiped before it
 *       is freed, and so is every buffer that held a clear PIN, PIN block
 *       or user PIN; nothing here logs a key, a PIN or a PIN file's
 *       contents.
 *
 * Key management (hsm.h: synchronous, for tools) runs on the caller's
 * thread on a separate admin session under its own mutex, and reads the
 * token directly.  Requests find their keys through a per-module cache of
 * each label's objects (tset_get): at most P11_CACHE_TTL_MS old, dropped
 * by any key management in this process, never refilled with what was
 * read before such a change.
 *
 * Modules are shared per process (one C_Initialize per module, counted;
 * C_Finalize when the last hsm_t using it closes).  The module stays
 * mapped until exit: some modules (SoftHSM2 among them) leave exit
 * handlers behind and cannot be unloaded safely.  Login state is per
 * module and token in PKCS#11, so two hsm_t on one token share it; no
 * C_Logout is issued (the last session's close ends the login).
 */
#include "backend.h"
#include "crypto.h"
#include "keystore.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* p11-kit's header leaves some of its lower-case compatibility macros
 * defined; aad_len would rename hsm_data_t's field.  None is used here. */
#undef aad_len
#undef aad_ptr
#undef counter_bits
#undef data_params
#undef hash_alg
#undef iv_bits
#undef iv_len
#undef iv_ptr
#undef public_data
#undef public_data_len
#undef s_len
#undef shared_data
#undef shared_data_len
#undef source_data
#undef source_data_len
#undef string_data
#undef string_data_len
#undef tag_bits

#define P11_DEFAULT_THREADS 2
#define P11_MAX_THREADS 32
#define P11_QUEUE_MAX 1024 /* jobs waiting for a worker */
#define P11_PIN_MAX 256
#define P11_ID_MAX 192
#define P11_LABEL_BUF (HSM__LABEL_MAX + 1)
#define P11_META_TAG "swhsm1 "
#define P11_CACHE_TTL_MS 1000 /* lookups by label are reused this long */
#define P11_CACHE_MAX 256     /* labels cached */

#define P11_CAPS                                                               \
  (HSM_CAP_MAC_RETAIL | HSM_CAP_MAC_CMAC | HSM_CAP_CVV | HSM_CAP_DATA |        \
   HSM_CAP_KEY_COMPONENTS | HSM_CAP_KEY_GENERATE)
#define P11_PIN_CAPS                                                           \
  (HSM_CAP_PIN_TRANSLATE | HSM_CAP_PIN_AES | HSM_CAP_DUKPT_AES |               \
   HSM_CAP_PIN_VERIFY)

static CK_BBOOL ck_true = CK_TRUE, ck_false = CK_FALSE;

static void *unconst(const void *p) {
  return (void *)(uintptr_t)p;
}

__attribute__((format(printf, 4, 5))) static int
fail(char *err, size_t errcap, int rc, const char *fmt, ...) {
  if (err && errcap) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errcap, fmt, ap);
    va_end(ap);
  }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Modules, shared per process                                              */

typedef struct cache_ent_s cache_ent_t;

typedef struct p11_module_s {
  struct p11_module_s *next;
  void *dl;
  CK_FUNCTION_LIST_PTR f;
  unsigned refs;
  int finalize; /* we initialised it: C_Finalize on the last release */
  /* Lookups by slot and label, shared by every hsm_t on the module
   * (object handles are valid across its sessions): see tset_get. */
  pthread_mutex_t cache_lock;
  cache_ent_t *cache;
  size_t ncache;
  uint64_t cache_gen; /* bumped by every drop for a change */
} p11_module_t;

static void cache_free_all(p11_module_t *m);

static pthread_mutex_t modules_lock = PTHREAD_MUTEX_INITIALIZER;
static p11_module_t *modules;

static int module_get(const char *path, p11_module_t **out, char *err,
                      size_t errcap) {
  pthread_mutex_lock(&modules_lock);
  void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!dl) {
    const char *why = dlerror();
    pthread_mutex_unlock(&modules_lock);
    return fail(err, errcap, HSM_E_UNAVAILABLE,
                "pkcs11: cannot load module \"%s\": %s", path,
                why ? why : "unknown error");
  }
  /* The same library under another path is the same module. */
  for (p11_module_t *m = modules; m; m = m->next)
    if (m->dl == dl) {
      m->refs++;
      pthread_mutex_unlock(&modules_lock);
      *out = m;
      return 0;
    }
  void *sym = dlsym(dl, "C_GetFunctionList");
  CK_C_GetFunctionList get = NULL;
  CK_FUNCTION_LIST_PTR f = NULL;
  if (sym)
    memcpy(&get, &sym, sizeof get);
  if (!get || get(&f) != CKR_OK || !f) {
    pthread_mutex_unlock(&modules_lock);
    return fail(err, errcap, HSM_E_UNAVAILABLE,
                "pkcs11: \"%s\" is not a PKCS#11 module (no usable "
                "C_GetFunctionList)",
                path);
  }
  CK_C_INITIALIZE_ARGS args;
  memset(&args, 0, sizeof args);
  args.flags = CKF_OS_LOCKING_OK;
  CK_RV rv = f->C_Initialize(&args);
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    pthread_mutex_unlock(&modules_lock);
    return fail(err, errcap, HSM_E_UNAVAILABLE,
                "pkcs11: C_Initialize of \"%s\" failed (CKR 0x%lx)", path,
                (unsigned long)rv);
  }
  p11_module_t *m = calloc(1, sizeof *m);
  if (!m || pthread_mutex_init(&m->cache_lock, NULL) != 0) {
    free(m);
    if (rv == CKR_OK)
      f->C_Finalize(NULL);
    pthread_mutex_unlock(&modules_lock);
    return HSM_E_NOMEM;
  }
  m->dl = dl;
  m->f = f;
  m->refs = 1;
  m->finalize = rv == CKR_OK;
  m->next = modules;
  modules = m;
  pthread_mutex_unlock(&modules_lock);
  *out = m;
  return 0;
}

static void module_put(p11_module_t *m) {
  pthread_mutex_lock(&modules_lock);
  if (--m->refs == 0) {
    cache_free_all(m);
    pthread_mutex_destroy(&m->cache_lock);
    if (m->finalize)
      m->f->C_Finalize(NULL);
    for (p11_module_t **pp = &modules; *pp; pp = &(*pp)->next)
      if (*pp == m) {
        *pp = m->next;
        break;
      }
    free(m);
  }
  pthread_mutex_unlock(&modules_lock);
}

/* ------------------------------------------------------------------------ */
/* Sessions and errors                                                       */

typedef struct p11_s p11_t;

typedef struct sess_s {
  CK_FUNCTION_LIST_PTR f;
  CK_SESSION_HANDLE s;
  p11_t *p; /* for the lookup cache; NULL: no cache (admin session) */
  int open;
  int broken; /* the session or its login is gone: reopen before use */
  int stale;  /* an object handle was invalid: a cached lookup is stale */
} sess_t;

static int session_lost(CK_RV rv) {
  return rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED ||
         rv == CKR_USER_NOT_LOGGED_IN || rv == CKR_DEVICE_REMOVED ||
         rv == CKR_TOKEN_NOT_PRESENT || rv == CKR_DEVICE_ERROR ||
         rv == CKR_CRYPTOKI_NOT_INITIALIZED;
}

static int ck_map(CK_RV rv) {
  switch (rv) {
  case CKR_OK:
    return 0;
  case CKR_HOST_MEMORY:
  case CKR_DEVICE_MEMORY:
    return HSM_E_NOMEM;
  case CKR_KEY_FUNCTION_NOT_PERMITTED:
  case CKR_KEY_TYPE_INCONSISTENT:
    return HSM_E_KEY_USAGE;
  case CKR_KEY_HANDLE_INVALID:
  case CKR_OBJECT_HANDLE_INVALID:
    return HSM_E_KEY_NOT_FOUND; /* destroyed while in use */
  case CKR_KEY_SIZE_RANGE:
    return HSM_E_KEY_LENGTH;
  case CKR_ENCRYPTED_DATA_INVALID:
  case CKR_ENCRYPTED_DATA_LEN_RANGE:
  case CKR_DATA_INVALID:
  case CKR_DATA_LEN_RANGE:
    return HSM_E_BAD_DATA;
  case CKR_MECHANISM_INVALID:
  case CKR_FUNCTION_NOT_SUPPORTED:
    return HSM_E_UNSUPPORTED;
  default:
    return session_lost(rv) ? HSM_E_UNAVAILABLE : HSM_E_BACKEND;
  }
}

/* Maps rv, and notes a lost session so it is reopened before next use. */
static int ck(sess_t *c, CK_RV rv) {
  if (rv != CKR_OK && session_lost(rv))
    c->broken = 1;
  if (rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID)
    c->stale = 1;
  return ck_map(rv);
}

/* ------------------------------------------------------------------------ */
/* State                                                                     */

typedef struct job_s job_t;

typedef struct worker_s {
  p11_t *p;
  pthread_t thread;
  int started;
  sess_t sess;
} worker_t;

struct p11_s {
  uv_async_t async; /* freed with the state, in its close callback */
  p11_module_t *mod;
  CK_FUNCTION_LIST_PTR f;
  CK_SLOT_ID slot;
  char *pin_file;
  int insecure_pin;
  size_t hmac_min; /* shortest CKM_SHA256_HMAC key the module takes */

  pthread_mutex_t admin_lock; /* key management, on the admin session */
  sess_t admin;

  pthread_mutex_t lock; /* queue, done list, job->cancelled, stopping */
  pthread_cond_t cond;
  job_t *qhead, *qtail;
  size_t qlen;
  job_t *dhead, *dtail;
  int stopping;
  int locks_ready;

  worker_t *workers;
  size_t nworkers;

  /* loop thread only */
  job_t *outstanding;
  size_t noutstanding;
  int async_ready;
  int closed;
};

#define P11(h) ((p11_t *)(h)->state)

/* A request's arguments, copied at submit (the caller's are valid only
 * during the call), and its result. */
struct job_s {
  job_t *qnext;       /* queue or done list (under lock) */
  job_t *prev, *next; /* outstanding list (loop thread) */
  hsm_req_t *req;     /* loop thread; NULL once cancelled */
  int cancelled;      /* under lock */
  hsm_op_t op;
  int status;                 /* written by the worker */
  hsm_req_t res;              /* .result and .verify, written by the worker */
  char label[P11_LABEL_BUF];  /* key (MAC, CVV, data, PIN source) */
  char label2[P11_LABEL_BUF]; /* PIN translate destination, PVK */
  int label_bad;              /* a label too long to exist */
  /* PIN translate and verify */
  uint8_t ksn[12];
  size_t ksn_len;
  int src_format, dst_format;
  uint8_t block[16];
  size_t block_len;
  char pan[20];
  size_t pan_len;
  int method;
  char dectab[17], vdata[17];
  size_t dectab_len, vdata_len;
  char offset[13];
  size_t offset_len;
  int pvki;
  char pvv[5];
  uint32_t key_version; /* HMAC: 0 current, else that version */
  size_t pvv_len;
  /* MAC */
  int mac_alg, padding;
  uint8_t mac[16];
  size_t mac_len;
  /* CVV */
  char expiry[5], service[4], cvv[4];
  size_t expiry_len, service_len, cvv_len;
  /* MAC and data input, then AAD */
  size_t len, aad_len;
  uint8_t bytes[];
};

static void job_free(job_t *j) {
  hsm__cleanse(j, sizeof *j + j->len + j->aad_len);
  free(j);
}

/* ------------------------------------------------------------------------ */
/* Key metadata in CKA_ID                                                    */

enum { ROLE_KEY = 1, ROLE_LEFT = 2 };

typedef struct meta_s {
  int role;
  hsm_usage_t usage;
  hsm_alg_t alg;
  uint32_t version;
  size_t length;
  int64_t created;
  int64_t not_after;
  char kcv[7];
} meta_t;

static const char *alg_name(hsm_alg_t a) {
  return a == HSM_ALG_TDES ? "TDES" : a == HSM_ALG_AES ? "AES" : "HMAC";
}

static int meta_format(const meta_t *m, char *out, size_t cap) {
  int n =
      snprintf(out, cap,
               P11_META_TAG "role=%s usage=%s alg=%s version=%lu "
                            "length=%zu created=%lld not_after=%lld kcv=%s",
               m->role == ROLE_KEY ? "key" : "left", hsm_usage_name(m->usage),
               alg_name(m->alg), (unsigned long)m->version, m->length,
               (long long)m->created, (long long)m->not_after, m->kcv);
  return n > 0 && (size_t)n < cap ? n : -1;
}

static int parse_num(const char *s, long long lo, long long hi,
                     long long *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi)
    return -1;
  *out = v;
  return 0;
}

/* 0 and the metadata if id is ours and well formed, -1 otherwise. */
static int meta_parse(const uint8_t *id, size_t len, meta_t *m) {
  char buf[P11_ID_MAX + 1];
  size_t tag = sizeof P11_META_TAG - 1;
  if (len <= tag || len > P11_ID_MAX)
    return -1;
  memcpy(buf, id, len);
  buf[len] = '\0';
  if (memcmp(buf, P11_META_TAG, tag) != 0 || strlen(buf) != len)
    return -1;
  memset(m, 0, sizeof *m);
  char *save = NULL;
  for (char *t = strtok_r(buf + tag, " ", &save); t;
       t = strtok_r(NULL, " ", &save)) {
    char *v = strchr(t, '=');
    long long n;
    if (!v)
      return -1;
    *v++ = '\0';
    if (strcmp(t, "role") == 0) {
      m->role = strcmp(v, "key") == 0    ? ROLE_KEY
                : strcmp(v, "left") == 0 ? ROLE_LEFT
                                         : 0;
    } else if (strcmp(t, "usage") == 0) {
      m->usage = hsm_usage_parse(v);
    } else if (strcmp(t, "alg") == 0) {
      m->alg = strcmp(v, "TDES") == 0   ? HSM_ALG_TDES
               : strcmp(v, "AES") == 0  ? HSM_ALG_AES
               : strcmp(v, "HMAC") == 0 ? HSM_ALG_HMAC
                                        : 0;
    } else if (strcmp(t, "version") == 0) {
      if (parse_num(v, 1, UINT32_MAX, &n))
        return -1;
      m->version = (uint32_t)n;
    } else if (strcmp(t, "length") == 0) {
      if (parse_num(v, 1, 64, &n))
        return -1;
      m->length = (size_t)n;
    } else if (strcmp(t, "created") == 0) {
      if (parse_num(v, 0, INT64_MAX, &n))
        return -1;
      m->created = n;
    } else if (strcmp(t, "not_after") == 0) {
      if (parse_num(v, 0, INT64_MAX, &n))
        return -1;
      m->not_after = n;
    } else if (strcmp(t, "kcv") == 0) {
      if (strlen(v) != 6 && strlen(v) != 0)
        return -1;
      memcpy(m->kcv, v, strlen(v) + 1);
    }
    /* other names: written by a later version; ignored */
  }
  return m->role && m->usage != HSM_USAGE_NONE && m->alg && m->version &&
                 m->length
             ? 0
             : -1;
}

/* ------------------------------------------------------------------------ */
/* Finding keys                                                              */

typedef struct tkey_s {
  CK_OBJECT_HANDLE obj;
  meta_t m;
  char label[P11_LABEL_BUF];
} tkey_t;

typedef struct tset_s {
  tkey_t *v;
  size_t n, cap;
} tset_t;

static void tset_free(tset_t *t) {
  free(t->v);
  memset(t, 0, sizeof *t);
}

/* Every object of ours labelled label (NULL: every object of ours). */
static int tset_load(sess_t *c, const char *label, tset_t *t) {
  memset(t, 0, sizeof *t);
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_ATTRIBUTE tmpl[2] = {
      {CKA_CLASS, &cls, sizeof cls},
      {CKA_LABEL, unconst(label), label ? strlen(label) : 0}};
  CK_RV rv = c->f->C_FindObjectsInit(c->s, tmpl, label ? 2 : 1);
  if (rv != CKR_OK)
    return ck(c, rv);
  CK_OBJECT_HANDLE *hs = NULL;
  size_t nh = 0, caph = 0;
  int rc = 0;
  for (;;) {
    if (nh + 32 > caph) {
      size_t ncap = caph ? 2 * caph : 64;
      CK_OBJECT_HANDLE *nhs = realloc(hs, ncap * sizeof *nhs);
      if (!nhs) {
        rc = HSM_E_NOMEM;
        break;
      }
      hs = nhs;
      caph = ncap;
    }
    CK_ULONG got = 0;
    rv = c->f->C_FindObjects(c->s, hs + nh, 32, &got);
    if (rv != CKR_OK) {
      rc = ck(c, rv);
      break;
    }
    if (got == 0)
      break;
    nh += got;
  }
  rv = c->f->C_FindObjectsFinal(c->s);
  if (!rc && rv != CKR_OK)
    rc = ck(c, rv);
  if (!rc && nh) {
    t->v = calloc(nh, sizeof *t->v);
    if (!t->v)
      rc = HSM_E_NOMEM;
    else
      t->cap = nh;
  }
  for (size_t i = 0; i < nh && !rc; i++) {
    uint8_t id[P11_ID_MAX];
    tkey_t *k = &t->v[t->n];
    CK_ATTRIBUTE a[2] = {{CKA_ID, id, sizeof id},
                         {CKA_LABEL, k->label, sizeof k->label - 1}};
    rv = c->f->C_GetAttributeValue(c->s, hs[i], a, 2);
    if (rv != CKR_OK) {
      if (session_lost(rv))
        rc = ck(c, rv);
      continue; /* not ours (too long), or destroyed meanwhile */
    }
    if (meta_parse(id, a[0].ulValueLen, &k->m) != 0)
      continue;
    k->label[a[1].ulValueLen] = '\0';
    if (strlen(k->label) != a[1].ulValueLen)
      continue;
    k->obj = hs[i];
    t->n++;
  }
  free(hs);
  if (rc)
    tset_free(t);
  return rc;
}

/* The highest version (version 0) or the given one, of the role. */
static const tkey_t *tset_find(const tset_t *t, uint32_t version, int role) {
  const tkey_t *best = NULL;
  for (size_t i = 0; i < t->n; i++) {
    const tkey_t *k = &t->v[i];
    if (k->m.role != role)
      continue;
    if (version ? k->m.version == version
                : (!best || k->m.version > best->m.version))
      best = k;
  }
  return best;
}

/* Lookups by label, cached for the workers.  Finding objects is the
 * expensive part of a request on some modules (SoftHSM2 checks every
 * object of the token on every C_FindObjects), so a label's objects are
 * reused for P11_CACHE_TTL_MS.  The cache belongs to the module (object
 * handles are valid in all of its sessions), so key management through
 * any hsm_t of this process drops the label at once; a change made by
 * another process is seen within the TTL, and an object it destroyed
 * sooner (an invalid handle drops the label and the request runs once
 * more). */
struct cache_ent_s {
  cache_ent_t *next;
  CK_SLOT_ID slot;
  char label[P11_LABEL_BUF];
  uint64_t loaded_ms;
  tset_t t;
};

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int tset_dup(const tset_t *src, tset_t *dst) {
  memset(dst, 0, sizeof *dst);
  if (!src->n)
    return 0;
  dst->v = malloc(src->n * sizeof *dst->v);
  if (!dst->v)
    return HSM_E_NOMEM;
  memcpy(dst->v, src->v, src->n * sizeof *dst->v);
  dst->n = dst->cap = src->n;
  return 0;
}

static void cache_ent_free(cache_ent_t *e) {
  tset_free(&e->t);
  free(e);
}

static void cache_free_all(p11_module_t *m) {
  while (m->cache) {
    cache_ent_t *e = m->cache;
    m->cache = e->next;
    cache_ent_free(e);
  }
  m->ncache = 0;
}

/* Drops p's token's label (NULL: all of the token's labels).  Caller
 * holds the module's cache_lock.  A drop for a change (bump) makes
 * lookups already under way not cache what they read. */
static void cache_drop_locked(p11_t *p, const char *label, int bump) {
  p11_module_t *m = p->mod;
  m->cache_gen += (uint64_t)bump;
  for (cache_ent_t **pp = &m->cache; *pp;) {
    cache_ent_t *e = *pp;
    if (e->slot == p->slot && (!label || strcmp(e->label, label) == 0)) {
      *pp = e->next;
      cache_ent_free(e);
      m->ncache--;
    } else {
      pp = &e->next;
    }
  }
}

static void cache_drop(p11_t *p, const char *label) {
  pthread_mutex_lock(&p->mod->cache_lock);
  cache_drop_locked(p, label, 1);
  pthread_mutex_unlock(&p->mod->cache_lock);
}

/* label's objects: from the cache when fresh, else from the token. */
static int tset_get(sess_t *c, const char *label, tset_t *t) {
  p11_t *p = c->p;
  if (!p)
    return tset_load(c, label, t);
  p11_module_t *m = p->mod;
  uint64_t now = mono_ms(), gen;
  int rc;
  pthread_mutex_lock(&m->cache_lock);
  for (cache_ent_t *e = m->cache; e; e = e->next)
    if (e->slot == p->slot && strcmp(e->label, label) == 0 &&
        now - e->loaded_ms < P11_CACHE_TTL_MS) {
      rc = tset_dup(&e->t, t);
      pthread_mutex_unlock(&m->cache_lock);
      return rc;
    }
  gen = m->cache_gen;
  pthread_mutex_unlock(&m->cache_lock);
  if ((rc = tset_load(c, label, t)) != 0)
    return rc;
  cache_ent_t *ne = calloc(1, sizeof *ne);
  if (!ne || tset_dup(t, &ne->t) != 0) {
    free(ne);
    return 0; /* not cached; the lookup itself succeeded */
  }
  ne->slot = p->slot;
  snprintf(ne->label, sizeof ne->label, "%s", label);
  ne->loaded_ms = now;
  pthread_mutex_lock(&m->cache_lock);
  if (gen != m->cache_gen) {
    /* Key management changed something while this was read: what was
     * read may predate it, so it is used once and not kept. */
    pthread_mutex_unlock(&m->cache_lock);
    cache_ent_free(ne);
    return 0;
  }
  cache_drop_locked(p, label, 0); /* an expired entry */
  if (m->ncache >= P11_CACHE_MAX && m->cache) {
    cache_ent_t **oldest = &m->cache;
    for (cache_ent_t **pp = &m->cache; *pp; pp = &(*pp)->next)
      if ((*pp)->loaded_ms < (*oldest)->loaded_ms)
        oldest = pp;
    cache_ent_t *e = *oldest;
    *oldest = e->next;
    cache_ent_free(e);
    m->ncache--;
  }
  ne->next = m->cache;
  m->cache = ne;
  m->ncache++;
  pthread_mutex_unlock(&m->cache_lock);
  return 0;
}

static int usage_in(hsm_usage_t u, const hsm_usage_t *allowed, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (u == allowed[i])
      return 1;
  return 0;
}

/* Loads label and picks its current version if its usage is allowed. */
static int key_for(sess_t *c, const char *label, const hsm_usage_t *allowed,
                   size_t nallowed, tset_t *t, const tkey_t **out) {
  int rc = tset_get(c, label, t);
  if (rc)
    return rc;
  const tkey_t *k = tset_find(t, 0, ROLE_KEY);
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  if (!usage_in(k->m.usage, allowed, nallowed))
    return HSM_E_KEY_USAGE;
  *out = k;
  return 0;
}

static void info_from(const tkey_t *k, hsm_key_info_t *info) {
  memset(info, 0, sizeof *info);
  snprintf(info->label, sizeof info->label, "%s", k->label);
  info->usage = k->m.usage;
  info->alg = k->m.alg;
  info->length = k->m.length;
  info->version = k->m.version;
  memcpy(info->kcv, k->m.kcv, sizeof info->kcv);
  info->created = k->m.created;
  info->not_after = k->m.not_after;
}

/* ------------------------------------------------------------------------ */
/* Token cryptography                                                        */

static int tok_crypt(sess_t *c, int encrypt, CK_MECHANISM *m,
                     CK_OBJECT_HANDLE k, const uint8_t *in, size_t len,
                     uint8_t *out, size_t *outlen) {
  CK_RV rv = encrypt ? c->f->C_EncryptInit(c->s, m, k)
                     : c->f->C_DecryptInit(c->s, m, k);
  if (rv != CKR_OK)
    return ck(c, rv);
  CK_ULONG ol = *outlen;
  rv = encrypt ? c->f->C_Encrypt(c->s, unconst(in), len, out, &ol)
               : c->f->C_Decrypt(c->s, unconst(in), len, out, &ol);
  *outlen = ol;
  return ck(c, rv);
}

/* ECB over len bytes (a multiple of the block) with a TDES or AES key. */
static int tok_ecb(sess_t *c, hsm_alg_t alg, int encrypt, CK_OBJECT_HANDLE k,
                   const uint8_t *in, uint8_t *out, size_t len) {
  CK_MECHANISM m = {alg == HSM_ALG_AES ? CKM_AES_ECB : CKM_DES3_ECB, NULL, 0};
  size_t ol = len;
  int rc = tok_crypt(c, encrypt, &m, k, in, len, out, &ol);
  return rc ? rc : ol == len ? 0 : HSM_E_BACKEND;
}

static int tok_sign(sess_t *c, CK_MECHANISM_TYPE mech, CK_OBJECT_HANDLE k,
                    const uint8_t *in, size_t len, uint8_t *out,
                    size_t *outlen) {
  static const uint8_t nothing[1];
  CK_MECHANISM m = {mech, NULL, 0};
  CK_RV rv = c->f->C_SignInit(c->s, &m, k);
  if (rv != CKR_OK)
    return ck(c, rv);
  CK_ULONG ol = *outlen;
  rv = c->f->C_Sign(c->s, unconst(len ? in : nothing), len, out, &ol);
  *outlen = ol;
  return ck(c, rv);
}

static int tok_kcv(sess_t *c, hsm_alg_t alg, CK_OBJECT_HANDLE k, char kcv[7]) {
  static const uint8_t zero[16];
  uint8_t out[32];
  size_t n = sizeof out;
  int rc;
  if (alg == HSM_ALG_TDES)
    rc = tok_ecb(c, alg, 1, k, zero, out, 8);
  else
    rc = tok_sign(c, alg == HSM_ALG_AES ? CKM_AES_CMAC : CKM_SHA256_HMAC, k,
                  zero, 16, out, &n);
  if (!rc && alg != HSM_ALG_TDES && n < 3)
    rc = HSM_E_BACKEND;
  if (!rc)
    hsm__kcv_hex(out, kcv);
  return rc;
}

static void destroy_obj(sess_t *c, CK_OBJECT_HANDLE o) {
  if (o != CK_INVALID_HANDLE)
    ck(c, c->f->C_DestroyObject(c->s, o));
}

/* ------------------------------------------------------------------------ */
/* Host-side formatting                                                      */

static unsigned nibble(const uint8_t *b, size_t i) {
  return i % 2 ? b[i / 2] & 0x0Fu : b[i / 2] >> 4;
}

/* Visa decimalisation: decimal digits of the 16 hex digits left to right,
 * then A-F minus 10 if fewer than n were found. */
static void visa_decimalise(const uint8_t blk[8], char *out, size_t n) {
  size_t got = 0;
  for (int pass = 0; pass < 2 && got < n; pass++)
    for (size_t i = 0; i < 16 && got < n; i++) {
      unsigned v = nibble(blk, i);
      if (pass == 0 && v <= 9)
        out[got++] = (char)('0' + v);
      else if (pass == 1 && v > 9)
        out[got++] = (char)('0' + v - 10);
    }
  out[n] = '\0';
}

/* ISO 9564-1 format 4 PAN field (as pinblock.c's). */
static int pan_field4(const char *pan, size_t panlen, uint8_t out[16]) {
  if (panlen < 1 || panlen > 19 || !hsm__all_digits(pan, panlen))
    return HSM_E_BAD_PAN;
  uint8_t nib[32] = {0};
  size_t start = 1;
  if (panlen > 12)
    nib[0] = (uint8_t)(panlen - 12);
  else
    start += 12 - panlen;
  for (size_t i = 0; i < panlen; i++)
    nib[start + i] = (uint8_t)(pan[i] - '0');
  for (size_t i = 0; i < 16; i++)
    out[i] = (uint8_t)(nib[2 * i] << 4 | nib[2 * i + 1]);
  return 0;
}

/* First half of a format 4 PIN field: 4, length, digits, A fill. */
static void pin_field4(const char *pin, size_t pinlen, uint8_t out[8]) {
  uint8_t nib[16];
  nib[0] = 4;
  nib[1] = (uint8_t)pinlen;
  for (size_t i = 0; i < 14; i++)
    nib[2 + i] = i < pinlen ? (uint8_t)(pin[i] - '0') : 0x0A;
  for (size_t i = 0; i < 8; i++)
    out[i] = (uint8_t)(nib[2 * i] << 4 | nib[2 * i + 1]);
  hsm__cleanse(nib, sizeof nib);
}

/* Checks every nibble of a format 4 PIN field's first half without an
 * early exit, as pinblock.c does. */
static int parse_field4(const uint8_t f[8], char *pin, size_t *pinlen) {
  unsigned len = nibble(f, 1);
  unsigned bad = nibble(f, 0) != 4u;
  bad |= (len < 4) | (len > 12);
  for (unsigned i = 2; i < 16; i++) {
    unsigned v = nibble(f, i), in_pin = i < 2 + len;
    bad |= in_pin & (v > 9);
    bad |= (in_pin ^ 1u) & (v != 0x0A);
  }
  if (bad)
    return HSM_E_BAD_PIN_BLOCK;
  for (unsigned i = 0; i < len; i++)
    pin[i] = (char)('0' + nibble(f, 2 + i));
  pin[len] = '\0';
  *pinlen = len;
  return 0;
}

static int check_pin(const char *pin, size_t pinlen) {
  return pinlen >= 4 && pinlen <= 12 && hsm__all_digits(pin, pinlen)
             ? 0
             : HSM_E_PIN_LENGTH;
}

/* ------------------------------------------------------------------------ */
/* PINs (insecure mode only: the clear PIN passes through this process)     */

/* D(K, D(K, in) XOR PAN field), then the PIN field's checks. */
static int iso4_decipher(sess_t *c, CK_OBJECT_HANDLE k, const uint8_t in[16],
                         const char *pan, size_t panlen, char *pin,
                         size_t *pinlen) {
  uint8_t panf[16], field[16];
  int rc = pan_field4(pan, panlen, panf);
  if (!rc)
    rc = tok_ecb(c, HSM_ALG_AES, 0, k, in, field, 16);
  if (!rc) {
    for (size_t i = 0; i < 16; i++)
      field[i] ^= panf[i];
    rc = tok_ecb(c, HSM_ALG_AES, 0, k, field, field, 16);
  }
  if (!rc)
    rc = parse_field4(field, pin, pinlen);
  hsm__cleanse(field, sizeof field);
  return rc;
}

/* E(K, E(K, PIN field) XOR PAN field), random second half. */
static int iso4_encipher(sess_t *c, CK_OBJECT_HANDLE k, const char *pin,
                         size_t pinlen, const char *pan, size_t panlen,
                         uint8_t out[16]) {
  uint8_t panf[16], field[16];
  int rc = check_pin(pin, pinlen);
  if (!rc)
    rc = pan_field4(pan, panlen, panf);
  if (!rc) {
    pin_field4(pin, pinlen, field);
    rc = hsm__random(field + 8, 8);
  }
  if (!rc)
    rc = tok_ecb(c, HSM_ALG_AES, 1, k, field, field, 16);
  if (!rc) {
    for (size_t i = 0; i < 16; i++)
      field[i] ^= panf[i];
    rc = tok_ecb(c, HSM_ALG_AES, 1, k, field, out, 16);
  }
  hsm__cleanse(field, sizeof field);
  return rc;
}

/* One X9.24-3 derivation step on the token (see dukpt.c): AES-ECB of one
 * derivation data block per 128 bits of output under base, into a session
 * object usable for derivation (more steps) or decryption (the PIN key). */
static int dukpt_step(sess_t *c, CK_OBJECT_HANDLE base, unsigned usage,
                      size_t outlen, const uint8_t data8[8], int last,
                      CK_OBJECT_HANDLE *out) {
  unsigned alg = outlen == 16 ? 2 : outlen == 24 ? 3 : 4;
  unsigned bits = (unsigned)outlen * 8;
  uint8_t dd[32];
  size_t nblocks = (outlen + 15) / 16;
  for (size_t i = 0; i < nblocks; i++) {
    uint8_t *d = dd + 16 * i;
    d[0] = 0x01;
    d[1] = (uint8_t)(i + 1);
    d[2] = (uint8_t)(usage >> 8);
    d[3] = (uint8_t)usage;
    d[4] = (uint8_t)(alg >> 8);
    d[5] = (uint8_t)alg;
    d[6] = (uint8_t)(bits >> 8);
    d[7] = (uint8_t)bits;
    memcpy(d + 8, data8, 8);
  }
  CK_KEY_DERIVATION_STRING_DATA sd = {dd, nblocks * 16};
  CK_MECHANISM m = {CKM_AES_ECB_ENCRYPT_DATA, &sd, sizeof sd};
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_AES;
  CK_ULONG vlen = outlen;
  CK_ATTRIBUTE a[] = {
      {CKA_CLASS, &cls, sizeof cls},
      {CKA_KEY_TYPE, &kt, sizeof kt},
      {CKA_VALUE_LEN, &vlen, sizeof vlen},
      {CKA_TOKEN, &ck_false, 1},
      {CKA_SENSITIVE, &ck_true, 1},
      {CKA_EXTRACTABLE, &ck_false, 1},
      {CKA_DERIVE, last ? &ck_false : &ck_true, 1},
      {CKA_DECRYPT, last ? &ck_true : &ck_false, 1},
      {CKA_ENCRYPT, &ck_false, 1},
  };
  *out = CK_INVALID_HANDLE;
  return ck(c,
            c->f->C_DeriveKey(c->s, &m, base, a, sizeof a / sizeof a[0], out));
}

/* The AES DUKPT PIN encryption key (AES-128) for ksn, as a session object
 * the caller destroys. */
static int dukpt_aes_pin_key(sess_t *c, const tkey_t *bdk,
                             const uint8_t ksn[12], CK_OBJECT_HANDLE *out) {
  uint32_t counter = (uint32_t)ksn[8] << 24 | (uint32_t)ksn[9] << 16 |
                     (uint32_t)ksn[10] << 8 | ksn[11];
  int nbits = 0;
  for (uint32_t v = counter; v; v &= v - 1)
    nbits++;
  if (counter == 0 || nbits > 16)
    return HSM_E_BAD_DATA;
  size_t len = bdk->m.length;
  if (len != 16 && len != 24 && len != 32)
    return HSM_E_KEY_LENGTH;
  CK_OBJECT_HANDLE k = CK_INVALID_HANDLE, next;
  int rc = dukpt_step(c, bdk->obj, 0x8001, len, ksn, 0, &k);
  uint8_t data8[8];
  memcpy(data8, ksn + 4, 4);
  uint32_t walked = 0;
  for (uint32_t bit = 0x80000000u; bit && !rc; bit >>= 1) {
    if (!(counter & bit))
      continue;
    walked |= bit;
    data8[4] = (uint8_t)(walked >> 24);
    data8[5] = (uint8_t)(walked >> 16);
    data8[6] = (uint8_t)(walked >> 8);
    data8[7] = (uint8_t)walked;
    rc = dukpt_step(c, k, 0x8000, len, data8, 0, &next);
    destroy_obj(c, k);
    k = rc ? CK_INVALID_HANDLE : next;
  }
  if (!rc)
    rc = dukpt_step(c, k, 0x1000, 16, ksn + 4, 1, out);
  destroy_obj(c, k);
  return rc;
}

/* The clear PIN of j's block under one version of a fixed PIN key. */
static int pin_under(sess_t *c, job_t *j, int format, const tkey_t *k,
                     char *pin, size_t *pinlen) {
  if (format == HSM_PIN_ISO4)
    return k->m.alg != HSM_ALG_AES ? HSM_E_PIN_FORMAT
                                   : iso4_decipher(c, k->obj, j->block, j->pan,
                                                   j->pan_len, pin, pinlen);
  if (k->m.alg != HSM_ALG_TDES)
    return HSM_E_PIN_FORMAT;
  uint8_t clear[8];
  int rc = tok_ecb(c, HSM_ALG_TDES, 0, k->obj, j->block, clear, 8);
  if (!rc)
    rc = hsm__pinblock_decode(format, clear, j->pan, j->pan_len, pin, pinlen);
  hsm__cleanse(clear, sizeof clear);
  return rc;
}

/* The clear PIN from the job's block.  pin holds 13 and is wiped by the
 * caller. */
static int pin_from_block(sess_t *c, job_t *j, int format, char *pin,
                          size_t *pinlen) {
  tset_t t;
  const tkey_t *k = NULL;
  int rc;
  if (j->ksn_len) {
    static const hsm_usage_t bdk[] = {HSM_USAGE_BDK};
    if ((rc = key_for(c, j->label, bdk, 1, &t, &k)) == 0) {
      if (j->ksn_len == 10) {
        /* TDES DUKPT cannot be derived on a PKCS#11 token without
         * CKM_XOR_BASE_AND_DATA: not offered (no HSM_CAP_DUKPT_TDES). */
        rc = k->m.alg != HSM_ALG_TDES || k->m.length != 16 ? HSM_E_KEY_USAGE
                                                           : HSM_E_UNSUPPORTED;
      } else if (k->m.alg != HSM_ALG_AES) {
        rc = HSM_E_KEY_USAGE;
      } else if (format != HSM_PIN_ISO4) {
        rc = HSM_E_PIN_FORMAT;
      } else {
        CK_OBJECT_HANDLE pk = CK_INVALID_HANDLE;
        rc = dukpt_aes_pin_key(c, k, j->ksn, &pk);
        if (!rc)
          rc = iso4_decipher(c, pk, j->block, j->pan, j->pan_len, pin, pinlen);
        destroy_obj(c, pk);
      }
    }
    tset_free(&t);
    return rc;
  }
  static const hsm_usage_t pinkeys[] = {HSM_USAGE_TPK, HSM_USAGE_ZPK};
  if ((rc = key_for(c, j->label, pinkeys, 2, &t, &k)) == 0) {
    const tkey_t *cur = k;
    rc = pin_under(c, j, format, k, pin, pinlen);
    /* During a zone key changeover the peer may still encipher under the
     * key it is replacing: a block that does not decode under the current
     * version is tried under older versions inside their window. */
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < t.n && rc == HSM_E_BAD_PIN_BLOCK; i++) {
      const tkey_t *o = &t.v[i];
      if (o->m.role != ROLE_KEY || o->m.version == cur->m.version ||
          o->m.not_after == 0 || o->m.not_after < now)
        continue;
      int orc = pin_under(c, j, format, o, pin, pinlen);
      if (orc != HSM_E_BAD_PIN_BLOCK && orc != HSM_E_PIN_FORMAT)
        rc = orc;
    }
  }
  tset_free(&t);
  return rc;
}

static int op_pin_translate(sess_t *c, job_t *j) {
  static const hsm_usage_t zpk[] = {HSM_USAGE_ZPK};
  tset_t t;
  const tkey_t *dst = NULL;
  int rc = key_for(c, j->label2, zpk, 1, &t, &dst);
  int df = j->dst_format;
  if (!rc && ((df == HSM_PIN_ISO4) != (dst->m.alg == HSM_ALG_AES) ||
              (df != HSM_PIN_ISO0 && df != HSM_PIN_ISO1 && df != HSM_PIN_ISO3 &&
               df != HSM_PIN_ISO4)))
    rc = HSM_E_PIN_FORMAT;
  char pin[13];
  size_t pin_len = 0;
  if (!rc)
    rc = pin_from_block(c, j, j->src_format, pin, &pin_len);
  if (!rc) {
    if (df == HSM_PIN_ISO4) {
      rc = iso4_encipher(c, dst->obj, pin, pin_len, j->pan, j->pan_len,
                         j->res.result.pin.block);
      j->res.result.pin.len = 16;
    } else {
      uint8_t clear[8];
      rc = hsm__pinblock_encode(df, pin, pin_len, j->pan, j->pan_len, NULL,
                                clear);
      if (!rc)
        rc = tok_ecb(c, HSM_ALG_TDES, 1, dst->obj, clear,
                     j->res.result.pin.block, 8);
      hsm__cleanse(clear, sizeof clear);
      j->res.result.pin.len = 8;
    }
    j->res.result.pin.format = (hsm_pin_format_t)df;
  }
  hsm__cleanse(pin, sizeof pin);
  tset_free(&t);
  return rc;
}

static int op_pin_verify(sess_t *c, job_t *j) {
  static const hsm_usage_t pvk[] = {HSM_USAGE_PVK};
  tset_t t;
  const tkey_t *k = NULL;
  int rc = key_for(c, j->label2, pvk, 1, &t, &k);
  if (!rc && k->m.alg != HSM_ALG_TDES)
    rc = HSM_E_KEY_USAGE;
  char pin[13];
  size_t pin_len = 0;
  uint8_t blk[8];
  char digits[17];
  if (!rc)
    rc = pin_from_block(c, j, j->src_format, pin, &pin_len);
  if (!rc && j->method == HSM_PIN_VERIFY_IBM3624) {
    /* IBM 3624: natural PIN = the validation data enciphered under the
     * PVK, decimalised through dectab; offset = PIN - natural PIN, digit
     * by digit mod 10, over the right-most offset_len digits. */
    size_t off = j->offset_len;
    if (off < 4 || off > pin_len || !hsm__all_digits(j->offset, off) ||
        j->vdata_len != 16 || j->dectab_len != 16 ||
        !hsm__all_digits(j->dectab, 16) ||
        hsm__unhex(j->vdata, 16, blk, 0) != 0)
      rc = HSM_E_BAD_DATA;
    if (!rc)
      rc = tok_ecb(c, HSM_ALG_TDES, 1, k->obj, blk, blk, 8);
    if (!rc) {
      size_t skip = pin_len - off;
      for (size_t i = 0; i < off; i++) {
        unsigned nat = (unsigned)(j->dectab[nibble(blk, skip + i)] - '0');
        digits[i] = (char)('0' + (nat + (unsigned)(j->offset[i] - '0')) % 10);
      }
      rc = CRYPTO_memcmp(digits, pin + skip, off) == 0 ? 0 : 1;
    }
  } else if (!rc) {
    /* Visa PVV: TSP = 11 PAN digits before the check digit, PVKI, first 4
     * PIN digits; PVV = decimalisation of TDES(PVK, TSP). */
    char tsp[16];
    if (k->m.length != 16)
      rc = HSM_E_KEY_LENGTH;
    if (!rc && j->pan_len < 12)
      rc = HSM_E_BAD_PAN;
    if (!rc) {
      memcpy(tsp, j->pan + j->pan_len - 12, 11);
      tsp[11] = (char)('0' + j->pvki);
      memcpy(tsp + 12, pin, 4);
      rc = hsm__unhex(tsp, 16, blk, 0) == 0 ? 0 : HSM_E_BAD_DATA;
    }
    if (!rc)
      rc = tok_ecb(c, HSM_ALG_TDES, 1, k->obj, blk, blk, 8);
    if (!rc) {
      visa_decimalise(blk, digits, 4);
      rc = j->pvv_len == 4 && CRYPTO_memcmp(digits, j->pvv, 4) == 0 ? 0 : 1;
    }
    hsm__cleanse(tsp, sizeof tsp);
  }
  hsm__cleanse(pin, sizeof pin);
  hsm__cleanse(blk, sizeof blk);
  hsm__cleanse(digits, sizeof digits);
  tset_free(&t);
  if (rc == 1) {
    j->res.verify = HSM_VERIFY_FAILED;
    rc = 0;
  }
  return rc;
}

/* ------------------------------------------------------------------------ */
/* MACs and CVV                                                              */

/* CBC with TDES key k over len bytes (a multiple of 8), iv in and out:
 * the last ciphertext block.  Chunked, so a long message needs no copy. */
static int tok_cbc_chain(sess_t *c, CK_OBJECT_HANDLE k, const uint8_t *in,
                         size_t len, uint8_t iv[8]) {
  CK_MECHANISM m = {CKM_DES3_CBC, iv, 8};
  uint8_t out[512];
  CK_RV rv = c->f->C_EncryptInit(c->s, &m, k);
  if (rv != CKR_OK)
    return ck(c, rv);
  for (size_t done = 0; done < len;) {
    size_t n = len - done < sizeof out ? len - done : sizeof out;
    CK_ULONG ol = sizeof out;
    rv = c->f->C_EncryptUpdate(c->s, unconst(in + done), n, out, &ol);
    if (rv != CKR_OK)
      return ck(c, rv);
    if (ol != n) {
      c->f->C_EncryptFinal(c->s, out, &ol);
      return HSM_E_BACKEND;
    }
    memcpy(iv, out + n - 8, 8);
    done += n;
  }
  CK_ULONG ol = sizeof out;
  rv = c->f->C_EncryptFinal(c->s, out, &ol);
  return ck(c, rv);
}

/* ISO 9797-1 algorithm 3 with padding method 1 or 2 (mac.c's rules): the
 * blocks but the last through single DES with K (the K|K companion), the
 * last through K|K' with the chain value as IV. */
static int retail_mac(sess_t *c, CK_OBJECT_HANDLE kk, CK_OBJECT_HANDLE key,
                      int padding, const uint8_t *msg, size_t len,
                      uint8_t mac[8]) {
  size_t full = len - len % 8, rest = len % 8;
  uint8_t tail[8] = {0}, state[8] = {0};
  size_t taillen;
  if (rest)
    memcpy(tail, msg + full, rest);
  if (padding == 1) {
    taillen = rest || len == 0 ? 8 : 0;
  } else {
    tail[rest] = 0x80;
    taillen = 8;
  }
  size_t nblocks = full / 8 + taillen / 8;
  const uint8_t *last = taillen ? tail : msg + full - 8;
  int rc = 0;
  if (nblocks > 1)
    rc = tok_cbc_chain(c, kk, msg, (nblocks - 1) * 8, state);
  if (!rc)
    rc = tok_cbc_chain(c, key, last, 8, state);
  if (!rc)
    memcpy(mac, state, 8);
  hsm__cleanse(tail, sizeof tail);
  hsm__cleanse(state, sizeof state);
  return rc;
}

/* The MAC under version (0: current) of the job's key. */
static int mac_compute(sess_t *c, const tset_t *t, const job_t *j,
                       uint32_t version, uint8_t mac[16], size_t *len) {
  const tkey_t *k = tset_find(t, version, ROLE_KEY);
  if (!k)
    return HSM_E_KEY_NOT_FOUND;
  if (j->mac_alg == HSM_MAC_RETAIL) {
    if (k->m.alg != HSM_ALG_TDES)
      return HSM_E_KEY_USAGE;
    if (k->m.length != 16)
      return HSM_E_KEY_LENGTH;
    int padding = j->padding ? j->padding : 1;
    if (padding != 1 && padding != 2)
      return HSM_E_INVAL;
    const tkey_t *kk = tset_find(t, k->m.version, ROLE_LEFT);
    if (!kk)
      return HSM_E_UNSUPPORTED; /* not made by this backend */
    *len = 8;
    return retail_mac(c, kk->obj, k->obj, padding, j->bytes, j->len, mac);
  }
  if (k->m.alg != HSM_ALG_AES)
    return HSM_E_KEY_USAGE;
  *len = 16;
  int rc = tok_sign(c, CKM_AES_CMAC, k->obj, j->bytes, j->len, mac, len);
  return rc ? rc : *len == 16 ? 0 : HSM_E_BACKEND;
}

static int op_mac(sess_t *c, job_t *j, int verify) {
  static const hsm_usage_t macs[] = {HSM_USAGE_TAK, HSM_USAGE_ZAK};
  tset_t t;
  const tkey_t *cur = NULL;
  uint8_t mac[16];
  size_t len = 0;
  int rc = key_for(c, j->label, macs, 2, &t, &cur);
  if (!rc)
    rc = mac_compute(c, &t, j, 0, mac, &len);
  if (!rc && !verify) {
    memcpy(j->res.result.mac.mac, mac, len);
    j->res.result.mac.len = len;
  } else if (!rc) {
    int ok = j->mac_len <= len && CRYPTO_memcmp(mac, j->mac, j->mac_len) == 0;
    /* Older versions inside their changeover window (zone key change). */
    int64_t now = (int64_t)time(NULL);
    for (size_t i = 0; i < t.n && !ok; i++) {
      const tkey_t *k = &t.v[i];
      if (k->m.role != ROLE_KEY || k->m.version == cur->m.version ||
          k->m.not_after == 0 || k->m.not_after < now)
        continue;
      if (mac_compute(c, &t, j, k->m.version, mac, &len) == 0 &&
          j->mac_len <= len && CRYPTO_memcmp(mac, j->mac, j->mac_len) == 0)
        ok = 1;
    }
    j->res.verify = ok ? HSM_VERIFY_OK : HSM_VERIFY_FAILED;
  }
  tset_free(&t);
  return rc;
}

/* Visa CVV: TDES(A|B, DES(A, B1) XOR B2), decimalised, 3 digits. */
static int op_cvv(sess_t *c, job_t *j) {
  static const hsm_usage_t cvk[] = {HSM_USAGE_CVK};
  tset_t t;
  const tkey_t *k = NULL, *kk = NULL;
  int rc = key_for(c, j->label, cvk, 1, &t, &k);
  if (!rc && (k->m.alg != HSM_ALG_TDES || k->m.length != 16))
    rc = HSM_E_KEY_USAGE;
  if (!rc && !(kk = tset_find(&t, k->m.version, ROLE_LEFT)))
    rc = HSM_E_UNSUPPORTED;
  if (!rc &&
      (j->expiry_len != 4 || j->service_len != 3 ||
       !hsm__all_digits(j->expiry, 4) || !hsm__all_digits(j->service, 3)))
    rc = HSM_E_BAD_DATA;
  char data[32], cvv[4];
  uint8_t blk[16];
  if (!rc) {
    memset(data, '0', sizeof data);
    memcpy(data, j->pan, j->pan_len);
    memcpy(data + j->pan_len, j->expiry, 4);
    memcpy(data + j->pan_len + 4, j->service, 3);
    rc = hsm__unhex(data, 32, blk, 0) == 0 ? 0 : HSM_E_BAD_DATA;
  }
  if (!rc)
    rc = tok_ecb(c, HSM_ALG_TDES, 1, kk->obj, blk, blk, 8);
  if (!rc) {
    for (size_t i = 0; i < 8; i++)
      blk[i] ^= blk[8 + i];
    rc = tok_ecb(c, HSM_ALG_TDES, 1, k->obj, blk, blk, 8);
  }
  if (!rc) {
    visa_decimalise(blk, cvv, 3);
    j->res.verify = j->cvv_len == 3 && CRYPTO_memcmp(cvv, j->cvv, 3) == 0
                        ? HSM_VERIFY_OK
                        : HSM_VERIFY_FAILED;
  }
  tset_free(&t);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Data protection                                                           */

static void gcm_params(CK_GCM_PARAMS *gp, uint8_t *nonce, uint8_t *aad,
                       size_t aad_len) {
  memset(gp, 0, sizeof *gp);
  gp->pIv = nonce;
  gp->ulIvLen = 12;
  gp->ulIvBits = 96;
  gp->pAAD = aad_len ? aad : NULL;
  gp->ulAADLen = aad_len;
  gp->ulTagBits = 128;
}

static int op_data_encrypt(sess_t *c, job_t *j) {
  static const hsm_usage_t dek[] = {HSM_USAGE_DEK};
  tset_t t;
  const tkey_t *k = NULL;
  int rc = key_for(c, j->label, dek, 1, &t, &k);
  if (!rc && (k->m.alg != HSM_ALG_AES || k->m.length != 32))
    rc = HSM_E_KEY_USAGE;
  uint8_t *o = j->res.result.data.out;
  if (!rc) {
    uint32_t v = k->m.version;
    o[0] = (uint8_t)(v >> 24);
    o[1] = (uint8_t)(v >> 16);
    o[2] = (uint8_t)(v >> 8);
    o[3] = (uint8_t)v;
    rc = ck(c, c->f->C_GenerateRandom(c->s, o + 4, 12));
  }
  if (!rc) {
    CK_GCM_PARAMS gp;
    gcm_params(&gp, o + 4, j->bytes + j->len, j->aad_len);
    CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof gp};
    size_t ol = sizeof j->res.result.data.out - 16;
    rc = tok_crypt(c, 1, &m, k->obj, j->bytes, j->len, o + 16, &ol);
    if (!rc && ol != j->len + 16)
      rc = HSM_E_BACKEND;
  }
  if (!rc) {
    j->res.result.data.len = HSM_DATA_OVERHEAD + j->len;
    j->res.result.data.key_version = k->m.version;
  }
  tset_free(&t);
  return rc;
}

static int op_data_decrypt(sess_t *c, job_t *j) {
  const uint8_t *in = j->bytes;
  uint32_t version = (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 |
                     (uint32_t)in[2] << 8 | in[3];
  tset_t t;
  int rc = tset_get(c, j->label, &t);
  if (rc)
    return rc;
  /* Any stored version decrypts (rows written before a rotation). */
  const tkey_t *k = version ? tset_find(&t, version, ROLE_KEY) : NULL;
  if (!k)
    rc = HSM_E_KEY_NOT_FOUND;
  else if (k->m.usage != HSM_USAGE_DEK || k->m.alg != HSM_ALG_AES ||
           k->m.length != 32)
    rc = HSM_E_KEY_USAGE;
  size_t n = j->len - HSM_DATA_OVERHEAD;
  if (!rc) {
    uint8_t nonce[12];
    memcpy(nonce, in + 4, 12);
    CK_GCM_PARAMS gp;
    gcm_params(&gp, nonce, j->bytes + j->len, j->aad_len);
    CK_MECHANISM m = {CKM_AES_GCM, &gp, sizeof gp};
    size_t ol = sizeof j->res.result.data.out;
    CK_RV rv = c->f->C_DecryptInit(c->s, &m, k->obj);
    if (rv == CKR_OK) {
      CK_ULONG l = ol;
      rv = c->f->C_Decrypt(c->s, j->bytes + 16, n + 16, j->res.result.data.out,
                           &l);
      ol = l;
    }
    /* A tag that does not verify: the data or its context was altered, or
     * another key was used.  SoftHSM2 says so with CKR_GENERAL_ERROR. */
    if (rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_GENERAL_ERROR ||
        rv == CKR_ENCRYPTED_DATA_LEN_RANGE || rv == CKR_FUNCTION_FAILED)
      rc = HSM_E_BAD_DATA;
    else
      rc = ck(c, rv);
    if (!rc && ol != n)
      rc = HSM_E_BACKEND;
  }
  if (rc) {
    hsm__cleanse(j->res.result.data.out, sizeof j->res.result.data.out);
  } else {
    j->res.result.data.len = n;
    j->res.result.data.key_version = version;
  }
  tset_free(&t);
  return rc;
}

static int op_hmac(sess_t *c, job_t *j) {
  static const hsm_usage_t hk[] = {HSM_USAGE_HMAC};
  tset_t t;
  const tkey_t *k = NULL;
  int rc = key_for(c, j->label, hk, 1, &t, &k);
  if (!rc && j->key_version && j->key_version != k->m.version) {
    k = tset_find(&t, j->key_version, ROLE_KEY);
    if (!k)
      rc = HSM_E_KEY_NOT_FOUND;
  }
  if (!rc && k->m.alg != HSM_ALG_HMAC)
    rc = HSM_E_KEY_USAGE;
  size_t n = sizeof j->res.result.data.out;
  if (!rc)
    rc = tok_sign(c, CKM_SHA256_HMAC, k->obj, j->bytes, j->len,
                  j->res.result.data.out, &n);
  if (!rc && n != 32)
    rc = HSM_E_BACKEND;
  if (!rc) {
    j->res.result.data.len = n;
    j->res.result.data.key_version = k->m.version;
  }
  tset_free(&t);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Sessions                                                                  */

/* Reads the user PIN: a private file (hsm__file_private), trailing newline
 * ignored.  buf holds P11_PIN_MAX and is wiped by the caller. */
static int read_pin(const char *path, char *buf, size_t *len, char *err,
                    size_t errcap) {
  int rc = hsm__file_private(path);
  if (rc == HSM_E_PERMISSIONS)
    return fail(err, errcap, rc,
                "pkcs11: PIN file \"%s\" must be a regular file owned by "
                "this user with no group or other access (chmod 600)",
                path);
  if (rc)
    return fail(err, errcap, rc, "pkcs11: cannot read PIN file \"%s\": %s",
                path, strerror(errno));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail(err, errcap, HSM_E_INVAL,
                "pkcs11: cannot open PIN file \"%s\": %s", path,
                strerror(errno));
  size_t n = 0;
  ssize_t r;
  while (n < P11_PIN_MAX && ((r = read(fd, buf + n, P11_PIN_MAX - n)) > 0 ||
                             (r < 0 && errno == EINTR)))
    if (r > 0)
      n += (size_t)r;
  close(fd);
  while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
    n--;
  if (n == 0 || n >= P11_PIN_MAX)
    return fail(err, errcap, HSM_E_INVAL,
                "pkcs11: PIN file \"%s\" is empty or too long", path);
  *len = n;
  return 0;
}

static int session_open(p11_t *p, sess_t *c, const char *pin, size_t pinlen,
                        char *err, size_t errcap) {
  c->f = p->f;
  CK_RV rv = p->f->C_OpenSession(p->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
                                 NULL, NULL, &c->s);
  if (rv != CKR_OK)
    return fail(err, errcap, ck_map(rv),
                "pkcs11: C_OpenSession failed (CKR 0x%lx)", (unsigned long)rv);
  rv = p->f->C_Login(c->s, CKU_USER, (CK_UTF8CHAR_PTR)unconst(pin), pinlen);
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
    p->f->C_CloseSession(c->s);
    if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED ||
        rv == CKR_PIN_EXPIRED || rv == CKR_PIN_LEN_RANGE)
      return fail(err, errcap, HSM_E_BACKEND,
                  "pkcs11: the token refused the user PIN (CKR 0x%lx)",
                  (unsigned long)rv);
    return fail(err, errcap, ck_map(rv), "pkcs11: C_Login failed (CKR 0x%lx)",
                (unsigned long)rv);
  }
  c->open = 1;
  c->broken = 0;
  return 0;
}

static void session_close(sess_t *c) {
  if (c->open)
    c->f->C_CloseSession(c->s);
  c->open = 0;
}

/* Reopens a lost session (the PIN file is read again, then wiped). */
static int session_recover(p11_t *p, sess_t *c) {
  char pin[P11_PIN_MAX];
  size_t len = 0;
  session_close(c);
  int rc = read_pin(p->pin_file, pin, &len, NULL, 0);
  if (!rc)
    rc = session_open(p, c, pin, len, NULL, 0);
  hsm__cleanse(pin, sizeof pin);
  return rc ? HSM_E_UNAVAILABLE : 0;
}

static int op_echo(sess_t *c) {
  CK_SESSION_INFO si;
  CK_RV rv = c->f->C_GetSessionInfo(c->s, &si);
  if (rv != CKR_OK)
    return ck(c, rv);
  if (si.state != CKS_RW_USER_FUNCTIONS) {
    c->broken = 1;
    return HSM_E_UNAVAILABLE;
  }
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Workers and the loop side                                                 */

static int run_op(sess_t *c, job_t *j) {
  switch (j->op) {
  case HSM_OP_ECHO:
    return op_echo(c);
  case HSM_OP_PIN_TRANSLATE:
    return op_pin_translate(c, j);
  case HSM_OP_PIN_VERIFY:
    return op_pin_verify(c, j);
  case HSM_OP_MAC_GENERATE:
    return op_mac(c, j, 0);
  case HSM_OP_MAC_VERIFY:
    return op_mac(c, j, 1);
  case HSM_OP_CVV_VERIFY:
    return op_cvv(c, j);
  case HSM_OP_DATA_ENCRYPT:
    return op_data_encrypt(c, j);
  case HSM_OP_DATA_DECRYPT:
    return op_data_decrypt(c, j);
  case HSM_OP_HMAC:
    return op_hmac(c, j);
  default:
    return HSM_E_UNSUPPORTED;
  }
}

static void run_job(worker_t *w, job_t *j) {
  sess_t *c = &w->sess;
  int rc = 0;
  if (!c->open || c->broken)
    rc = session_recover(w->p, c);
  if (!rc && j->label_bad)
    rc = HSM_E_KEY_NOT_FOUND;
  if (!rc) {
    c->stale = 0;
    rc = run_op(c, j);
    /* A cached object was destroyed (by another process): look again. */
    if (c->stale) {
      cache_drop(w->p, j->label);
      cache_drop(w->p, j->label2);
      c->stale = 0;
      memset(&j->res.result, 0, sizeof j->res.result);
      j->res.verify = HSM_VERIFY_OK;
      rc = run_op(c, j);
    }
  }
  if (rc)
    memset(&j->res.result, 0, sizeof j->res.result);
  j->status = rc;
}

static void *worker_main(void *arg) {
  worker_t *w = arg;
  p11_t *p = w->p;
  for (;;) {
    pthread_mutex_lock(&p->lock);
    while (!p->qhead && !p->stopping)
      pthread_cond_wait(&p->cond, &p->lock);
    if (p->stopping) {
      pthread_mutex_unlock(&p->lock);
      break;
    }
    job_t *j = p->qhead;
    p->qhead = j->qnext;
    if (!p->qhead)
      p->qtail = NULL;
    p->qlen--;
    int skip = j->cancelled;
    pthread_mutex_unlock(&p->lock);
    if (!skip)
      run_job(w, j);
    pthread_mutex_lock(&p->lock);
    j->qnext = NULL;
    if (p->dtail)
      p->dtail->qnext = j;
    else
      p->dhead = j;
    p->dtail = j;
    pthread_mutex_unlock(&p->lock);
    uv_async_send(&p->async);
  }
  return NULL;
}

static void outstanding_add(p11_t *p, job_t *j) {
  j->prev = NULL;
  j->next = p->outstanding;
  if (p->outstanding)
    p->outstanding->prev = j;
  p->outstanding = j;
  if (p->noutstanding++ == 0)
    uv_ref((uv_handle_t *)&p->async);
}

static void outstanding_remove(p11_t *p, job_t *j) {
  if (j->prev)
    j->prev->next = j->next;
  else
    p->outstanding = j->next;
  if (j->next)
    j->next->prev = j->prev;
  if (--p->noutstanding == 0)
    uv_unref((uv_handle_t *)&p->async);
}

static void on_async(uv_async_t *a) {
  p11_t *p = a->data;
  pthread_mutex_lock(&p->lock);
  job_t *list = p->dhead;
  p->dhead = p->dtail = NULL;
  pthread_mutex_unlock(&p->lock);
  /* A callback may close the hsm: close frees every job, this list's
   * included (see invariant 4), so stop at once when it did. */
  while (list && !p->closed) {
    job_t *j = list;
    list = j->qnext;
    hsm_req_t *req = j->cancelled ? NULL : j->req;
    int status = j->status;
    if (req) {
      req->verify = j->res.verify;
      memcpy(&req->result, &j->res.result, sizeof req->result);
    }
    outstanding_remove(p, j);
    job_free(j);
    if (req)
      hsm__complete(req, status);
  }
}

/* Copies at most cap - 1 characters; returns strnlen(src, cap) (== cap:
 * too long). */
static size_t copy_str(char *dst, size_t cap, const char *src) {
  size_t n = src ? strnlen(src, cap) : 0;
  size_t m = n < cap ? n : cap - 1;
  if (m)
    memcpy(dst, src, m);
  dst[m] = '\0';
  return n;
}

static void copy_label(job_t *j, char *dst, const char *src) {
  if (copy_str(dst, P11_LABEL_BUF, src) >= P11_LABEL_BUF)
    j->label_bad = 1;
}

static int job_new(hsm_req_t *req, const void *args, job_t **out) {
  size_t extra = 0;
  const hsm_mac_t *mac = NULL;
  const hsm_data_t *data = NULL;
  if (req->op == HSM_OP_MAC_GENERATE || req->op == HSM_OP_MAC_VERIFY) {
    mac = args;
    extra = mac->len;
  } else if (req->op == HSM_OP_DATA_ENCRYPT || req->op == HSM_OP_DATA_DECRYPT ||
             req->op == HSM_OP_HMAC) {
    data = args;
    extra = data->len + data->aad_len;
  }
  job_t *j = calloc(1, sizeof *j + extra);
  if (!j)
    return HSM_E_NOMEM;
  j->req = req;
  j->op = req->op;
  j->res.verify = HSM_VERIFY_OK;
  switch (req->op) {
  case HSM_OP_PIN_TRANSLATE:
  case HSM_OP_PIN_VERIFY: {
    const hsm_pin_key_t *src;
    const uint8_t *block;
    const char *pan;
    size_t pan_len;
    if (req->op == HSM_OP_PIN_TRANSLATE) {
      const hsm_pin_translate_t *a = args;
      src = &a->src;
      copy_label(j, j->label2, a->dst_label);
      j->src_format = (int)a->src_format;
      j->dst_format = (int)a->dst_format;
      block = a->block;
      j->block_len = a->block_len;
      pan = a->pan;
      pan_len = a->pan_len;
    } else {
      const hsm_pin_verify_t *a = args;
      src = &a->src;
      copy_label(j, j->label2, a->pvk_label);
      j->src_format = (int)a->format;
      block = a->block;
      j->block_len = a->block_len;
      pan = a->pan;
      pan_len = a->pan_len;
      j->method = (int)a->method;
      if (a->method == HSM_PIN_VERIFY_IBM3624) {
        j->dectab_len = copy_str(j->dectab, sizeof j->dectab, a->dectab);
        j->vdata_len = copy_str(j->vdata, sizeof j->vdata, a->validation_data);
        j->offset_len = a->offset_len;
        memcpy(j->offset, a->offset, a->offset_len);
      } else {
        j->pvki = a->pvki;
        j->pvv_len = copy_str(j->pvv, sizeof j->pvv, a->pvv);
      }
    }
    copy_label(j, j->label, src->label);
    if (src->ksn) {
      j->ksn_len = src->ksn_len;
      memcpy(j->ksn, src->ksn, src->ksn_len);
    }
    memcpy(j->block, block, j->block_len);
    j->pan_len = pan_len;
    memcpy(j->pan, pan, pan_len);
    break;
  }
  case HSM_OP_MAC_GENERATE:
  case HSM_OP_MAC_VERIFY:
    copy_label(j, j->label, mac->key_label);
    j->mac_alg = (int)mac->alg;
    j->padding = mac->padding;
    j->len = mac->len;
    if (mac->len)
      memcpy(j->bytes, mac->data, mac->len);
    if (req->op == HSM_OP_MAC_VERIFY) {
      j->mac_len = mac->mac_len;
      memcpy(j->mac, mac->mac, mac->mac_len);
    }
    break;
  case HSM_OP_CVV_VERIFY: {
    const hsm_cvv_t *a = args;
    copy_label(j, j->label, a->cvk_label);
    j->pan_len = a->pan_len;
    memcpy(j->pan, a->pan, a->pan_len);
    j->expiry_len = copy_str(j->expiry, sizeof j->expiry, a->expiry);
    j->service_len = copy_str(j->service, sizeof j->service, a->service);
    j->cvv_len = copy_str(j->cvv, sizeof j->cvv, a->cvv);
    break;
  }
  case HSM_OP_DATA_ENCRYPT:
  case HSM_OP_DATA_DECRYPT:
  case HSM_OP_HMAC:
    copy_label(j, j->label, data->key_label);
    j->key_version = req->op == HSM_OP_HMAC ? data->key_version : 0;
    j->len = data->len;
    j->aad_len = data->aad_len;
    if (data->len)
      memcpy(j->bytes, data->in, data->len);
    if (data->aad_len)
      memcpy(j->bytes + data->len, data->aad, data->aad_len);
    break;
  default:
    break;
  }
  *out = j;
  return 0;
}

static int p11_submit(hsm_t *h, hsm_req_t *req, const void *args) {
  p11_t *p = P11(h);
  switch (req->op) {
  case HSM_OP_PIN_TRANSLATE:
  case HSM_OP_PIN_VERIFY:
    if (!p->insecure_pin)
      return HSM_E_UNSUPPORTED;
    break;
  case HSM_OP_ECHO:
  case HSM_OP_MAC_GENERATE:
  case HSM_OP_MAC_VERIFY:
  case HSM_OP_CVV_VERIFY:
  case HSM_OP_DATA_ENCRYPT:
  case HSM_OP_DATA_DECRYPT:
  case HSM_OP_HMAC:
    break;
  default:
    return HSM_E_UNSUPPORTED;
  }
  job_t *j;
  int rc = job_new(req, args, &j);
  if (rc)
    return rc;
  pthread_mutex_lock(&p->lock);
  if (p->stopping || p->qlen >= P11_QUEUE_MAX) {
    pthread_mutex_unlock(&p->lock);
    job_free(j);
    return HSM_E_UNAVAILABLE;
  }
  if (p->qtail)
    p->qtail->qnext = j;
  else
    p->qhead = j;
  p->qtail = j;
  p->qlen++;
  pthread_cond_signal(&p->cond);
  pthread_mutex_unlock(&p->lock);
  outstanding_add(p, j);
  return 0;
}

static void p11_cancel(hsm_t *h, hsm_req_t *req) {
  p11_t *p = P11(h);
  for (job_t *j = p->outstanding; j; j = j->next)
    if (j->req == req) {
      pthread_mutex_lock(&p->lock);
      j->cancelled = 1;
      pthread_mutex_unlock(&p->lock);
      j->req = NULL;
      return;
    }
}

/* ------------------------------------------------------------------------ */
/* Open and close                                                            */

static void on_async_closed(uv_handle_t *handle) {
  free(handle->data);
}

/* Frees what open may have set up; p itself unless the async handle is
 * initialised (then its close callback does). */
static void teardown(p11_t *p) {
  if (p->locks_ready) {
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
  }
  for (size_t i = 0; i < p->nworkers; i++)
    if (p->workers[i].started)
      pthread_join(p->workers[i].thread, NULL);
  for (size_t i = 0; i < p->nworkers; i++)
    session_close(&p->workers[i].sess);
  free(p->workers);
  p->workers = NULL;
  p->nworkers = 0;
  while (p->outstanding) {
    job_t *j = p->outstanding;
    p->outstanding = j->next;
    job_free(j);
  }
  p->noutstanding = 0;
  p->qhead = p->qtail = p->dhead = p->dtail = NULL;
  session_close(&p->admin);
  if (p->mod)
    module_put(p->mod);
  p->mod = NULL;
  free(p->pin_file);
  p->pin_file = NULL;
  if (p->locks_ready) {
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->admin_lock);
  }
  p->closed = 1;
  if (p->async_ready)
    uv_close((uv_handle_t *)&p->async, on_async_closed);
  else
    free(p);
}

static int find_slot(p11_t *p, const char *label, char *err, size_t errcap) {
  CK_ULONG n = 0;
  CK_RV rv = p->f->C_GetSlotList(CK_TRUE, NULL, &n);
  CK_SLOT_ID *slots = NULL;
  if (rv == CKR_OK && n) {
    slots = calloc(n, sizeof *slots);
    if (!slots)
      return HSM_E_NOMEM;
    rv = p->f->C_GetSlotList(CK_TRUE, slots, &n);
  }
  if (rv != CKR_OK) {
    free(slots);
    return fail(err, errcap, HSM_E_UNAVAILABLE,
                "pkcs11: C_GetSlotList failed (CKR 0x%lx)", (unsigned long)rv);
  }
  size_t want = strlen(label);
  int found = 0;
  for (CK_ULONG i = 0; i < n && !found; i++) {
    CK_TOKEN_INFO ti;
    if (p->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
      continue;
    /* The label is 32 bytes padded with blanks. */
    size_t len = sizeof ti.label;
    while (len && ti.label[len - 1] == ' ')
      len--;
    if (len == want && memcmp(ti.label, label, len) == 0) {
      if (!(ti.flags & CKF_TOKEN_INITIALIZED) ||
          !(ti.flags & CKF_USER_PIN_INITIALIZED)) {
        free(slots);
        return fail(err, errcap, HSM_E_UNAVAILABLE,
                    "pkcs11: token \"%s\" has no user PIN set", label);
      }
      p->slot = slots[i];
      found = 1;
    }
  }
  free(slots);
  if (!found)
    return fail(err, errcap, HSM_E_UNAVAILABLE,
                "pkcs11: no token labelled \"%s\" (of %lu present)", label,
                (unsigned long)n);
  return 0;
}

typedef struct mech_need_s {
  CK_MECHANISM_TYPE mech;
  const char *name;
  int pin_only;
} mech_need_t;

static const mech_need_t mech_needs[] = {
    {CKM_DES3_ECB, "CKM_DES3_ECB", 0},
    {CKM_DES3_CBC, "CKM_DES3_CBC", 0},
    {CKM_DES2_KEY_GEN, "CKM_DES2_KEY_GEN", 0},
    {CKM_DES3_KEY_GEN, "CKM_DES3_KEY_GEN", 0},
    {CKM_DES3_ECB_ENCRYPT_DATA, "CKM_DES3_ECB_ENCRYPT_DATA", 0},
    {CKM_AES_ECB, "CKM_AES_ECB", 0},
    {CKM_AES_CMAC, "CKM_AES_CMAC", 0},
    {CKM_AES_GCM, "CKM_AES_GCM", 0},
    {CKM_AES_KEY_GEN, "CKM_AES_KEY_GEN", 0},
    {CKM_SHA256_HMAC, "CKM_SHA256_HMAC", 0},
    {CKM_GENERIC_SECRET_KEY_GEN, "CKM_GENERIC_SECRET_KEY_GEN", 0},
    {CKM_AES_ECB_ENCRYPT_DATA, "CKM_AES_ECB_ENCRYPT_DATA", 1},
};

static int check_mechanisms(p11_t *p, char *err, size_t errcap) {
  CK_ULONG n = 0;
  CK_RV rv = p->f->C_GetMechanismList(p->slot, NULL, &n);
  CK_MECHANISM_TYPE *m = NULL;
  if (rv == CKR_OK) {
    m = calloc(n ? n : 1, sizeof *m);
    if (!m)
      return HSM_E_NOMEM;
    rv = p->f->C_GetMechanismList(p->slot, m, &n);
  }
  if (rv != CKR_OK) {
    free(m);
    return fail(err, errcap, HSM_E_UNAVAILABLE,
                "pkcs11: C_GetMechanismList failed (CKR 0x%lx)",
                (unsigned long)rv);
  }
  for (size_t i = 0; i < sizeof mech_needs / sizeof mech_needs[0]; i++) {
    if (mech_needs[i].pin_only && !p->insecure_pin)
      continue;
    int have = 0;
    for (CK_ULONG k = 0; k < n && !have; k++)
      have = m[k] == mech_needs[i].mech;
    if (!have) {
      free(m);
      return fail(err, errcap, HSM_E_UNSUPPORTED,
                  "pkcs11: the token lacks %s, which this backend's "
                  "capabilities need",
                  mech_needs[i].name);
    }
  }
  free(m);
  /* The shortest HMAC key: bytes in SoftHSM2 (32); a module that says
   * more than the 64-byte hash block means bits. */
  CK_MECHANISM_INFO mi;
  p->hmac_min = 1;
  if (p->f->C_GetMechanismInfo(p->slot, CKM_SHA256_HMAC, &mi) == CKR_OK &&
      mi.ulMinKeySize > 1) {
    CK_ULONG min = mi.ulMinKeySize;
    if (min > 64)
      min = (min + 7) / 8;
    p->hmac_min = min > 64 ? 64 : (size_t)min;
  }
  return 0;
}

static int p11_open(hsm_t *h, const hsm_config_t *cfg, char *err,
                    size_t errcap) {
  if (!cfg->pkcs11_module || !*cfg->pkcs11_module || !cfg->pkcs11_token ||
      !*cfg->pkcs11_token || !cfg->pkcs11_pin_file || !*cfg->pkcs11_pin_file)
    return fail(err, errcap, HSM_E_INVAL,
                "pkcs11: pkcs11_module, pkcs11_token and pkcs11_pin_file "
                "must all be set");
  unsigned nthreads =
      cfg->pkcs11_threads ? cfg->pkcs11_threads : P11_DEFAULT_THREADS;
  if (nthreads > P11_MAX_THREADS)
    return fail(err, errcap, HSM_E_INVAL,
                "pkcs11: pkcs11_threads is at most %d", P11_MAX_THREADS);
  p11_t *p = calloc(1, sizeof *p);
  if (!p)
    return HSM_E_NOMEM;
  p->insecure_pin = cfg->pkcs11_insecure_pin != 0;
  char pin[P11_PIN_MAX];
  size_t pinlen = 0;
  int rc = read_pin(cfg->pkcs11_pin_file, pin, &pinlen, err, errcap);
  if (!rc && !(p->pin_file = strdup(cfg->pkcs11_pin_file)))
    rc = HSM_E_NOMEM;
  if (!rc)
    rc = module_get(cfg->pkcs11_module, &p->mod, err, errcap);
  if (!rc) {
    p->f = p->mod->f;
    p->admin.f = p->f;
    rc = find_slot(p, cfg->pkcs11_token, err, errcap);
  }
  if (!rc)
    rc = check_mechanisms(p, err, errcap);
  if (!rc)
    rc = session_open(p, &p->admin, pin, pinlen, err, errcap);
  if (!rc && (pthread_mutex_init(&p->lock, NULL) ||
              pthread_cond_init(&p->cond, NULL) ||
              pthread_mutex_init(&p->admin_lock, NULL)))
    rc = HSM_E_NOMEM;
  else if (!rc)
    p->locks_ready = 1;
  if (!rc && !(p->workers = calloc(nthreads, sizeof *p->workers)))
    rc = HSM_E_NOMEM;
  if (!rc)
    p->nworkers = nthreads;
  for (size_t i = 0; !rc && i < nthreads; i++) {
    p->workers[i].p = p;
    p->workers[i].sess.f = p->f;
    p->workers[i].sess.p = p;
    rc = session_open(p, &p->workers[i].sess, pin, pinlen, err, errcap);
  }
  hsm__cleanse(pin, sizeof pin);
  if (!rc) {
    if (uv_async_init(h->loop, &p->async, on_async) != 0) {
      rc = fail(err, errcap, HSM_E_NOMEM, "pkcs11: uv_async_init failed");
    } else {
      p->async.data = p;
      p->async_ready = 1;
      uv_unref((uv_handle_t *)&p->async);
    }
  }
  if (!rc) {
    /* Workers take no signals: those are the loop's. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (size_t i = 0; !rc && i < nthreads; i++) {
      if (pthread_create(&p->workers[i].thread, NULL, worker_main,
                         &p->workers[i]) != 0)
        rc = fail(err, errcap, HSM_E_NOMEM,
                  "pkcs11: cannot start worker thread");
      else
        p->workers[i].started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
  }
  if (rc) {
    teardown(p);
    return rc;
  }
  h->state = p;
  if (p->insecure_pin) {
    h->caps |= P11_PIN_CAPS;
    fprintf(stderr,
            "hsm: pkcs11: WARNING: pkcs11_insecure_pin is set: PIN blocks are "
            "decrypted into this process's memory for translation and "
            "verification; development and tests only, never production "
            "PIN traffic\n");
  }
  return 0;
}

static void p11_close(hsm_t *h) {
  p11_t *p = P11(h);
  h->state = NULL;
  if (p)
    teardown(p);
}

/* ------------------------------------------------------------------------ */
/* Key management                                                            */

static int admin_begin(p11_t *p) {
  pthread_mutex_lock(&p->admin_lock);
  if (!p->admin.open || p->admin.broken) {
    int rc = session_recover(p, &p->admin);
    if (rc) {
      pthread_mutex_unlock(&p->admin_lock);
      return rc;
    }
  }
  return 0;
}

static void admin_end(p11_t *p) {
  pthread_mutex_unlock(&p->admin_lock);
}

static int alg_length_ok(hsm_alg_t alg, size_t len) {
  switch (alg) {
  case HSM_ALG_TDES:
    return len == 16 || len == 24;
  case HSM_ALG_AES:
    return len == 16 || len == 24 || len == 32;
  case HSM_ALG_HMAC:
    return len >= 16 && len <= 64;
  default:
    return 0;
  }
}

/* The 2-key TDES MAC and CVV keys that need a K|K companion. */
static int needs_left(hsm_usage_t u, hsm_alg_t alg, size_t len) {
  return alg == HSM_ALG_TDES && len == 16 &&
         (u == HSM_USAGE_TAK || u == HSM_USAGE_ZAK || u == HSM_USAGE_CVK);
}

enum { F_ENCRYPT, F_DECRYPT, F_SIGN, F_VERIFY, F_DERIVE, F_COUNT };

/* PKCS#11 usage attributes for a key: what this backend's operations and
 * the check value need, nothing else (no wrap/unwrap: nothing is
 * exported). */
static void key_flags(const meta_t *m, int fl[F_COUNT]) {
  memset(fl, 0, F_COUNT * sizeof fl[0]);
  if (m->role == ROLE_LEFT) {
    fl[F_ENCRYPT] = 1;
    return;
  }
  hsm_usage_t u = m->usage;
  int pin = u == HSM_USAGE_TPK || u == HSM_USAGE_ZPK;
  switch (m->alg) {
  case HSM_ALG_TDES:
    fl[F_ENCRYPT] = 1; /* check value, and every TDES operation */
    fl[F_DECRYPT] = pin;
    break;
  case HSM_ALG_AES:
    fl[F_SIGN] = 1; /* check value (CMAC) */
    fl[F_ENCRYPT] = fl[F_DECRYPT] = pin || u == HSM_USAGE_DEK;
    fl[F_VERIFY] = u == HSM_USAGE_TAK || u == HSM_USAGE_ZAK;
    fl[F_DERIVE] = u == HSM_USAGE_BDK;
    break;
  default:
    fl[F_SIGN] = fl[F_VERIFY] = 1;
  }
}

/* Creates one token object: from value (import), by mech (generate), or
 * by mech from base (derive). */
static int make_object(sess_t *c, const char *label, const meta_t *m,
                       const uint8_t *value, size_t vlen, CK_MECHANISM *mech,
                       CK_OBJECT_HANDLE base, CK_OBJECT_HANDLE *out) {
  char id[P11_ID_MAX];
  int idlen = meta_format(m, id, sizeof id);
  if (idlen < 0)
    return HSM_E_INVAL;
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = m->alg == HSM_ALG_AES    ? CKK_AES
                   : m->alg == HSM_ALG_HMAC ? CKK_GENERIC_SECRET
                   : m->length == 24        ? CKK_DES3
                                            : CKK_DES2;
  CK_ULONG vl = m->length;
  int fl[F_COUNT];
  key_flags(m, fl);
  CK_ATTRIBUTE a[20] = {
      {CKA_CLASS, &cls, sizeof cls},
      {CKA_KEY_TYPE, &kt, sizeof kt},
      {CKA_TOKEN, &ck_true, 1},
      {CKA_PRIVATE, &ck_true, 1},
      {CKA_SENSITIVE, &ck_true, 1},
      {CKA_EXTRACTABLE, &ck_false, 1},
      {CKA_LABEL, unconst(label), strlen(label)},
      {CKA_ID, id, (CK_ULONG)idlen},
      {CKA_ENCRYPT, fl[F_ENCRYPT] ? &ck_true : &ck_false, 1},
      {CKA_DECRYPT, fl[F_DECRYPT] ? &ck_true : &ck_false, 1},
      {CKA_SIGN, fl[F_SIGN] ? &ck_true : &ck_false, 1},
      {CKA_VERIFY, fl[F_VERIFY] ? &ck_true : &ck_false, 1},
      {CKA_DERIVE, fl[F_DERIVE] ? &ck_true : &ck_false, 1},
      {CKA_WRAP, &ck_false, 1},
      {CKA_UNWRAP, &ck_false, 1},
  };
  CK_ULONG n = 15;
  *out = CK_INVALID_HANDLE;
  CK_RV rv;
  if (value) {
    a[n].type = CKA_VALUE;
    a[n].pValue = unconst(value);
    a[n++].ulValueLen = vlen;
    rv = c->f->C_CreateObject(c->s, a, n, out);
  } else {
    if (m->alg != HSM_ALG_TDES) {
      a[n].type = CKA_VALUE_LEN;
      a[n].pValue = &vl;
      a[n++].ulValueLen = sizeof vl;
    }
    rv = base != CK_INVALID_HANDLE
             ? c->f->C_DeriveKey(c->s, mech, base, a, n, out)
             : c->f->C_GenerateKey(c->s, mech, a, n, out);
  }
  return ck(c, rv);
}

static int set_meta(sess_t *c, CK_OBJECT_HANDLE o, const meta_t *m) {
  char id[P11_ID_MAX];
  int idlen = meta_format(m, id, sizeof id);
  if (idlen < 0)
    return HSM_E_INVAL;
  CK_ATTRIBUTE a = {CKA_ID, id, (CK_ULONG)idlen};
  return ck(c, c->f->C_SetAttributeValue(c->s, o, &a, 1));
}

/* A 2-key TDES key and its K|K companion derived on the token from a
 * random session seed: E_S(d1)|E_S(d2) and E_S(d1)|E_S(d1). */
static int make_seeded_pair(sess_t *c, const char *label, const meta_t *m,
                            const meta_t *lm, CK_OBJECT_HANDLE *key,
                            CK_OBJECT_HANDLE *left) {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_DES3;
  CK_ATTRIBUTE sa[] = {
      {CKA_CLASS, &cls, sizeof cls},   {CKA_KEY_TYPE, &kt, sizeof kt},
      {CKA_TOKEN, &ck_false, 1},       {CKA_SENSITIVE, &ck_true, 1},
      {CKA_EXTRACTABLE, &ck_false, 1}, {CKA_DERIVE, &ck_true, 1},
      {CKA_ENCRYPT, &ck_false, 1},     {CKA_DECRYPT, &ck_false, 1},
  };
  CK_MECHANISM gen = {CKM_DES3_KEY_GEN, NULL, 0};
  CK_OBJECT_HANDLE seed = CK_INVALID_HANDLE;
  uint8_t d[24];
  *key = *left = CK_INVALID_HANDLE;
  int rc = ck(
      c, c->f->C_GenerateKey(c->s, &gen, sa, sizeof sa / sizeof sa[0], &seed));
  do {
    if (!rc)
      rc = ck(c, c->f->C_GenerateRandom(c->s, d, 16));
  } while (!rc && memcmp(d, d + 8, 8) == 0);
  if (!rc) {
    memcpy(d + 16, d, 8); /* d1 d2 d1: key data d1|d2, companion d1|d1 */
    CK_KEY_DERIVATION_STRING_DATA sd = {d, 16};
    CK_MECHANISM dm = {CKM_DES3_ECB_ENCRYPT_DATA, &sd, sizeof sd};
    rc = make_object(c, label, m, NULL, 0, &dm, seed, key);
    if (!rc) {
      memcpy(d + 8, d, 8);
      rc = make_object(c, label, lm, NULL, 0, &dm, seed, left);
    }
  }
  destroy_obj(c, seed);
  hsm__cleanse(d, sizeof d);
  if (rc) {
    destroy_obj(c, *key);
    destroy_obj(c, *left);
    *key = *left = CK_INVALID_HANDLE;
  }
  return rc;
}

/* Stores a new version of label: from clear (import; NULL: generated on
 * the token).  Caller holds the admin session. */
static int store_new(p11_t *p, const char *label, hsm_usage_t usage,
                     hsm_alg_t alg, size_t length, const uint8_t *clear,
                     hsm_key_info_t *out, CK_OBJECT_HANDLE made[2]) {
  sess_t *c = &p->admin;
  made[0] = made[1] = CK_INVALID_HANDLE;
  if (!hsm__ks_label_ok(label))
    return HSM_E_INVAL;
  if (usage <= HSM_USAGE_NONE || usage >= HSM_USAGE_COUNT)
    return HSM_E_INVAL;
  if (!alg_length_ok(alg, length))
    return HSM_E_KEY_LENGTH;
  /* A short HMAC key is stored zero-padded to the module's minimum (the
   * same HMAC); past the 64-byte hash block padding would change it. */
  size_t stored = length;
  if (alg == HSM_ALG_HMAC && length < p->hmac_min) {
    if (!clear || p->hmac_min > 64)
      return HSM_E_KEY_LENGTH;
    stored = p->hmac_min;
  }
  tset_t t;
  int rc = tset_load(c, label, &t);
  if (rc)
    return rc;
  const tkey_t *old = tset_find(&t, 0, ROLE_KEY);
  if (old && (old->m.usage != usage || old->m.alg != alg)) {
    tset_free(&t);
    return HSM_E_EXISTS;
  }
  uint32_t version = 0;
  for (size_t i = 0; i < t.n; i++)
    if (t.v[i].m.version > version)
      version = t.v[i].m.version;
  tset_free(&t);
  if (version == UINT32_MAX)
    return HSM_E_KEYSTORE;
  meta_t m = {.role = ROLE_KEY,
              .usage = usage,
              .alg = alg,
              .version = version + 1,
              .length = length,
              .created = (int64_t)time(NULL)};
  meta_t lm = m;
  lm.role = ROLE_LEFT;
  int left = needs_left(usage, alg, length);
  if (clear) {
    uint8_t buf[64] = {0};
    memcpy(buf, clear, length);
    rc = make_object(c, label, &m, buf, stored, NULL, CK_INVALID_HANDLE,
                     &made[0]);
    if (!rc && left) {
      memcpy(buf + 8, buf, 8); /* K|K */
      rc = make_object(c, label, &lm, buf, 16, NULL, CK_INVALID_HANDLE,
                       &made[1]);
    }
    hsm__cleanse(buf, sizeof buf);
  } else if (left) {
    rc = make_seeded_pair(c, label, &m, &lm, &made[0], &made[1]);
  } else {
    CK_MECHANISM gen = {alg == HSM_ALG_AES    ? CKM_AES_KEY_GEN
                        : alg == HSM_ALG_HMAC ? CKM_GENERIC_SECRET_KEY_GEN
                        : length == 24        ? CKM_DES3_KEY_GEN
                                              : CKM_DES2_KEY_GEN,
                        NULL, 0};
    rc = make_object(c, label, &m, NULL, 0, &gen, CK_INVALID_HANDLE, &made[0]);
  }
  if (!rc)
    rc = tok_kcv(c, alg, made[0], m.kcv);
  if (!rc)
    rc = set_meta(c, made[0], &m);
  if (rc) {
    destroy_obj(c, made[0]);
    destroy_obj(c, made[1]);
    made[0] = made[1] = CK_INVALID_HANDLE;
    return rc;
  }
  tkey_t k = {.obj = made[0], .m = m};
  snprintf(k.label, sizeof k.label, "%s", label);
  info_from(&k, out);
  return 0;
}

static int p11_key_generate(hsm_t *h, const char *label, hsm_usage_t usage,
                            hsm_alg_t alg, size_t length, hsm_key_info_t *out) {
  p11_t *p = P11(h);
  CK_OBJECT_HANDLE made[2];
  int rc = admin_begin(p);
  if (rc)
    return rc;
  rc = store_new(p, label, usage, alg, length, NULL, out, made);
  cache_drop(p, label);
  admin_end(p);
  return rc;
}

static int p11_key_import_clear(hsm_t *h, const char *label, hsm_usage_t usage,
                                hsm_alg_t alg, const uint8_t *key,
                                size_t length, hsm_key_info_t *out) {
  p11_t *p = P11(h);
  CK_OBJECT_HANDLE made[2];
  if (!alg_length_ok(alg, length))
    return HSM_E_KEY_LENGTH;
  int rc = admin_begin(p);
  if (rc)
    return rc;
  rc = store_new(p, label, usage, alg, length, key, out, made);
  cache_drop(p, label);
  admin_end(p);
  return rc;
}

static int p11_key_rotate(hsm_t *h, const char *label, int64_t not_after_old,
                          hsm_key_info_t *out) {
  p11_t *p = P11(h);
  sess_t *c = &p->admin;
  int rc = admin_begin(p);
  if (rc)
    return rc;
  tset_t t;
  const tkey_t *cur = NULL;
  rc = tset_load(c, label, &t);
  if (!rc && !(cur = tset_find(&t, 0, ROLE_KEY)))
    rc = HSM_E_KEY_NOT_FOUND;
  CK_OBJECT_HANDLE made[2];
  if (!rc) {
    size_t len = cur->m.length;
    if (cur->m.alg == HSM_ALG_HMAC && len < p->hmac_min && p->hmac_min <= 64)
      len = p->hmac_min; /* generated HMAC keys: at least the minimum */
    rc = store_new(p, label, cur->m.usage, cur->m.alg, len, NULL, out, made);
  }
  if (!rc && not_after_old > 0) {
    meta_t m = cur->m;
    m.not_after = not_after_old;
    rc = set_meta(c, cur->obj, &m);
    if (rc) {
      destroy_obj(c, made[0]);
      destroy_obj(c, made[1]);
    }
  }
  tset_free(&t);
  cache_drop(p, label);
  admin_end(p);
  return rc;
}

static int p11_key_destroy(hsm_t *h, const char *label, uint32_t version,
                           hsm_key_info_t *info) {
  p11_t *p = P11(h);
  sess_t *c = &p->admin;
  int rc = admin_begin(p);
  if (rc)
    return rc;
  tset_t t;
  const tkey_t *cur = NULL;
  rc = tset_load(c, label, &t);
  if (!rc && !(cur = tset_find(&t, 0, ROLE_KEY)))
    rc = HSM_E_KEY_NOT_FOUND;
  if (!rc && version && version == cur->m.version)
    rc = HSM_E_INVAL; /* the current version: rotate first */
  if (!rc && version && !(cur = tset_find(&t, version, ROLE_KEY)))
    rc = HSM_E_KEY_NOT_FOUND;
  if (!rc) {
    info_from(cur, info);
    for (size_t i = 0; i < t.n; i++) {
      if (version && t.v[i].m.version != version)
        continue; /* the key and its companion objects of that version */
      int r = ck(c, c->f->C_DestroyObject(c->s, t.v[i].obj));
      if (r && !rc)
        rc = r;
    }
  }
  tset_free(&t);
  cache_drop(p, label);
  admin_end(p);
  return rc;
}

static int p11_key_info(hsm_t *h, const char *label, hsm_key_info_t *out) {
  p11_t *p = P11(h);
  int rc = admin_begin(p);
  if (rc)
    return rc;
  tset_t t;
  const tkey_t *cur = NULL;
  rc = tset_load(&p->admin, label, &t);
  if (!rc && !(cur = tset_find(&t, 0, ROLE_KEY)))
    rc = HSM_E_KEY_NOT_FOUND;
  if (!rc)
    info_from(cur, out);
  tset_free(&t);
  admin_end(p);
  return rc;
}

static int cmp_info(const void *a, const void *b) {
  const hsm_key_info_t *x = a, *y = b;
  int c = strcmp(x->label, y->label);
  if (c)
    return c;
  return x->version < y->version ? -1 : x->version > y->version;
}

static int p11_key_list(hsm_t *h, hsm_key_list_cb cb, void *ctx) {
  p11_t *p = P11(h);
  int rc = admin_begin(p);
  if (rc)
    return rc;
  tset_t t;
  rc = tset_load(&p->admin, NULL, &t);
  admin_end(p);
  if (rc)
    return rc;
  hsm_key_info_t *infos = calloc(t.n ? t.n : 1, sizeof *infos);
  size_t n = 0;
  if (!infos) {
    tset_free(&t);
    return HSM_E_NOMEM;
  }
  for (size_t i = 0; i < t.n; i++)
    if (t.v[i].m.role == ROLE_KEY)
      info_from(&t.v[i], &infos[n++]);
  tset_free(&t);
  qsort(infos, n, sizeof *infos, cmp_info);
  /* Called without the admin lock: the callback may use the API. */
  for (size_t i = 0; i < n; i++)
    cb(ctx, &infos[i]);
  free(infos);
  return 0;
}

const hsm__backend_t hsm__pkcs11_backend = {
    .name = "pkcs11",
    .caps = P11_CAPS,
    .open = p11_open,
    .close = p11_close,
    .submit = p11_submit,
    .cancel = p11_cancel,
    .key_list = p11_key_list,
    .key_info = p11_key_info,
    .key_generate = p11_key_generate,
    .key_import_clear = p11_key_import_clear,
    .key_import_tr31 = NULL, /* no HSM_CAP_KEY_TR31: see the top comment */
    .key_export_tr31 = NULL,
    .key_import_ecb = NULL, /* no C_UnwrapKey / C_WrapKey with TDES-ECB */
    .key_export_ecb = NULL,
    .key_rotate = p11_key_rotate,
    .key_destroy = p11_key_destroy,
};
