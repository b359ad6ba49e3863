/*
 * hsm.h — the public contract of libhsm, the switch's HSM adapter.
 *
 * The switch never sees a clear PIN and never holds a clear key: every PIN
 * block, MAC, card verification value and stored-PAN encryption goes
 * through this interface, which a backend implements (soft: OpenSSL;
 * pkcs11: any PKCS#11 module; payshield: a Thales payShield over TCP).
 *
 * Conventions: functions return 0 or a negative HSM_E_* code.  Verification
 * operations answer through hsm_verify_t (ok / failed), never a bare
 * boolean, and a verification that could not be carried out is an error
 * code, not "failed".
 */
#ifndef HSM_H
#define HSM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

#define HSM_ERRNO_MAP(XX)                                                      \
  XX(INVAL, "invalid argument")                                                \
  XX(NOMEM, "out of memory")                                                   \
  XX(KEY_NOT_FOUND, "key not found")                                           \
  XX(KEY_USAGE, "key may not be used for this operation")                      \
  XX(KEY_LENGTH, "key length is not valid for its algorithm")                  \
  XX(KEY_PARITY, "key does not have odd parity")                               \
  XX(KEY_BLOCK, "key block is not valid or its MAC does not verify")           \
  XX(KCV_MISMATCH, "key check value does not match")                           \
  XX(BAD_PIN_BLOCK, "PIN block is not valid for its format")                   \
  XX(PIN_LENGTH, "PIN is not 4 to 12 digits")                                  \
  XX(PIN_FORMAT, "PIN block format not supported for this operation")          \
  XX(BAD_PAN, "account number is not valid")                                   \
  XX(BAD_DATA, "input data is not valid")                                      \
  XX(UNSUPPORTED, "operation not supported by this backend")                   \
  XX(UNAVAILABLE, "backend unavailable")                                       \
  XX(TIMEOUT, "request timed out")                                             \
  XX(BACKEND, "backend reported an error")                                     \
  XX(KEYSTORE, "key store cannot be read or is corrupt")                       \
  XX(MASTER_KEY, "master key is wrong or cannot be read")                      \
  XX(PERMISSIONS, "file permissions are too open")                             \
  XX(CRYPTO, "cryptographic library failure")                                  \
  XX(EXISTS, "a key with this label exists already")

enum hsm__errno_e {
  HSM__E_NONE = 0,
#define HSM__XX(name, msg) HSM__E_##name,
  HSM_ERRNO_MAP(HSM__XX)
#undef HSM__XX
};

typedef enum {
  HSM_OK = 0,
#define HSM__XX(name, msg) HSM_E_##name = -HSM__E_##name,
  HSM_ERRNO_MAP(HSM__XX)
#undef HSM__XX
} hsm_errno_t;

const char *hsm_strerror(int code);
const char *hsm_err_name(int code);

/* Outcome of a verification that could be carried out. */
typedef enum { HSM_VERIFY_OK = 0, HSM_VERIFY_FAILED = 1 } hsm_verify_t;

/* ------------------------------------------------------------------------ */
/* Keys                                                                      */

typedef enum { HSM_ALG_TDES = 1, HSM_ALG_AES = 2, HSM_ALG_HMAC = 3 } hsm_alg_t;

/* What a key may be used for; using it for anything else is refused. */
#define HSM_USAGE_MAP(XX)                                                      \
  XX(ZMK, "zone master key (wraps zone keys exchanged with a network)")        \
  XX(TMK, "terminal master key (wraps keys sent to a terminal)")               \
  XX(ZPK, "zone PIN key (PIN blocks between this switch and a network)")       \
  XX(TPK, "terminal PIN key (PIN blocks from a terminal)")                     \
  XX(BDK, "DUKPT base derivation key")                                         \
  XX(PVK, "PIN verification key (IBM 3624 or Visa PVV)")                       \
  XX(CVK, "card verification key (CVV, CVV2, iCVV)")                           \
  XX(TAK, "terminal authentication key (MAC with a terminal)")                 \
  XX(ZAK, "zone authentication key (MAC with a network)")                      \
  XX(DEK, "data encryption key (stored PANs)")                                 \
  XX(HMAC, "keyed-hash key (PAN lookup hash, journal chain)")                  \
  XX(KBPK, "key block protection key (TR-31 import and export)")

typedef enum {
  HSM_USAGE_NONE = 0,
#define HSM__XX(name, desc) HSM_USAGE_##name,
  HSM_USAGE_MAP(HSM__XX)
#undef HSM__XX
      HSM_USAGE_COUNT
} hsm_usage_t;

const char *hsm_usage_name(hsm_usage_t u);  /* "ZPK" */
hsm_usage_t hsm_usage_parse(const char *s); /* HSM_USAGE_NONE if unknown */

/* ------------------------------------------------------------------------ */
/* Backends and capabilities                                                 */

/* What a backend can do; the switch refuses a configuration that needs a
 * capability its backend lacks, at start-up rather than per transaction. */
#define HSM_CAP_PIN_TRANSLATE 0x0001u  /* TPK/ZPK -> ZPK, formats 0 1 3 */
#define HSM_CAP_PIN_AES 0x0002u        /* format 4 under AES keys */
#define HSM_CAP_DUKPT_TDES 0x0004u     /* PIN translate from TDES DUKPT */
#define HSM_CAP_DUKPT_AES 0x0008u      /* PIN translate from AES DUKPT */
#define HSM_CAP_PIN_VERIFY 0x0010u     /* IBM 3624 offset, Visa PVV */
#define HSM_CAP_MAC_RETAIL 0x0020u     /* ISO 9797-1 algorithm 3 */
#define HSM_CAP_MAC_CMAC 0x0040u       /* AES-CMAC */
#define HSM_CAP_CVV 0x0080u            /* CVV / CVV2 / iCVV verify */
#define HSM_CAP_DATA 0x0100u           /* PAN encrypt/decrypt, HMAC */
#define HSM_CAP_KEY_TR31 0x0200u       /* TR-31 import and export */
#define HSM_CAP_KEY_COMPONENTS 0x0400u /* import of clear components */
#define HSM_CAP_KEY_GENERATE 0x0800u   /* generate and export working keys */

/* ------------------------------------------------------------------------ */
/* Requests                                                                  */

typedef struct hsm_s hsm_t; /* one backend instance, bound to one loop */
typedef struct hsm_req_s hsm_req_t;

/* Completion: req->status is 0 or a negative HSM_E_* code; for verify
 * operations req->verify says ok or failed when status is 0.  The callback
 * runs on the loop the hsm_t was opened on.  A backend that computes inline
 * (soft) may run it before the submitting call returns; the caller must
 * not touch req after its callback has run.  If a submitting call returns
 * an error, the callback never runs. */
typedef void (*hsm_cb)(hsm_req_t *req);

typedef enum {
  HSM_OP_ECHO = 1,
  HSM_OP_PIN_TRANSLATE,
  HSM_OP_PIN_VERIFY,
  HSM_OP_MAC_GENERATE,
  HSM_OP_MAC_VERIFY,
  HSM_OP_CVV_VERIFY,
  HSM_OP_DATA_ENCRYPT,
  HSM_OP_DATA_DECRYPT,
  HSM_OP_HMAC
} hsm_op_t;

/* PIN block formats (ISO 9564-1). */
typedef enum {
  HSM_PIN_ISO0 = 0,
  HSM_PIN_ISO1 = 1,
  HSM_PIN_ISO3 = 3,
  HSM_PIN_ISO4 = 4
} hsm_pin_format_t;

/* Where a PIN block comes from: a key named by label (TPK or ZPK), or a
 * DUKPT BDK named by label with the KSN the terminal sent (DE53). */
typedef struct hsm_pin_key_s {
  const char *label;
  const uint8_t *ksn; /* NULL for a fixed key; 10 (TDES) or 12 (AES) */
  size_t ksn_len;
} hsm_pin_key_t;

typedef struct hsm_pin_translate_s {
  hsm_pin_key_t src;
  const char *dst_label; /* ZPK */
  hsm_pin_format_t src_format;
  hsm_pin_format_t dst_format;
  const uint8_t *block; /* 8 bytes (TDES formats) or 16 (format 4) */
  size_t block_len;
  const char *pan; /* digits, as in DE2 */
  size_t pan_len;
} hsm_pin_translate_t;

typedef enum { HSM_PIN_VERIFY_IBM3624 = 1, HSM_PIN_VERIFY_VISA_PVV } hsm_pvm_t;

typedef struct hsm_pin_verify_s {
  hsm_pin_key_t src; /* key the PIN block is under */
  hsm_pin_format_t format;
  const uint8_t *block;
  size_t block_len;
  const char *pan;
  size_t pan_len;
  const char *pvk_label;
  hsm_pvm_t method;
  /* IBM 3624 */
  const char *dectab;          /* 16 decimal digits */
  const char *validation_data; /* 16 hex digits */
  const char *offset;          /* as many digits as the PIN checks */
  size_t offset_len;
  /* Visa PVV */
  int pvki;        /* 0..9 */
  const char *pvv; /* 4 digits */
} hsm_pin_verify_t;

typedef enum { HSM_MAC_RETAIL = 1, HSM_MAC_AES_CMAC } hsm_mac_alg_t;

typedef struct hsm_mac_s {
  const char *key_label; /* TAK or ZAK */
  hsm_mac_alg_t alg;
  int padding; /* retail MAC: ISO 9797-1 method 1 (zeros, the default when
                  0) or 2 (0x80 then zeros); CMAC pads by itself */
  const uint8_t *data;
  size_t len;
  const uint8_t *mac; /* verify only */
  size_t mac_len;     /* verify: 4..16 bytes compared from the left */
} hsm_mac_t;

typedef struct hsm_cvv_s {
  const char *cvk_label;
  const char *pan;
  size_t pan_len;
  const char *expiry;  /* YYMM */
  const char *service; /* 3 digits; "000" for CVV2, "999" for iCVV */
  const char *cvv;     /* 3 digits */
} hsm_cvv_t;

/* Data protection for the journal.  Encrypt: AES-256-GCM under the newest
 * version of the key; the output carries the key version, nonce and tag:
 * version (4 bytes, big-endian) | nonce (12) | ciphertext | tag (16).
 * Decrypt reads the version from the input. aad binds the ciphertext to
 * its context (e.g. the journal row's idempotency key). */
#define HSM_DATA_OVERHEAD (4 + 12 + 16)
#define HSM_DATA_MAX 64

typedef struct hsm_data_s {
  const char *key_label; /* DEK (encrypt/decrypt) or HMAC key */
  const uint8_t *in;
  size_t len; /* encrypt: <= HSM_DATA_MAX; decrypt: <= + overhead */
  const uint8_t *aad;
  size_t aad_len;
  /* HMAC only: 0 for the current version of the key, else that version
   * (to check a value made before a rotation: a journal chain, a stored
   * PAN hash).  Encrypt always uses the current version; decrypt reads
   * the version from its input. */
  uint32_t key_version;
} hsm_data_t;

struct hsm_req_s {
  /* public */
  void *data;          /* for the caller */
  uint32_t timeout_ms; /* 0: the backend's default */
  /* read-only, valid in the callback */
  hsm_op_t op;
  int status;
  hsm_verify_t verify;
  union {
    struct {
      uint8_t block[16];
      size_t len;
      hsm_pin_format_t format;
    } pin;
    struct {
      uint8_t mac[16];
      size_t len;
    } mac;
    struct {
      uint8_t out[HSM_DATA_MAX + HSM_DATA_OVERHEAD];
      size_t len;
      uint32_t key_version;
    } data;
  } result;
  /* private */
  hsm_t *hsm_;
  hsm_cb cb_;
  void *queue_[2];
  uint64_t deadline_;
  uint32_t seq_;
};

int hsm_echo(hsm_t *h, hsm_req_t *req, hsm_cb cb);
int hsm_pin_translate(hsm_t *h, hsm_req_t *req, const hsm_pin_translate_t *args,
                      hsm_cb cb);
int hsm_pin_verify(hsm_t *h, hsm_req_t *req, const hsm_pin_verify_t *args,
                   hsm_cb cb);
int hsm_mac_generate(hsm_t *h, hsm_req_t *req, const hsm_mac_t *args,
                     hsm_cb cb);
int hsm_mac_verify(hsm_t *h, hsm_req_t *req, const hsm_mac_t *args, hsm_cb cb);
int hsm_cvv_verify(hsm_t *h, hsm_req_t *req, const hsm_cvv_t *args, hsm_cb cb);
int hsm_data_encrypt(hsm_t *h, hsm_req_t *req, const hsm_data_t *args,
                     hsm_cb cb);
int hsm_data_decrypt(hsm_t *h, hsm_req_t *req, const hsm_data_t *args,
                     hsm_cb cb);
/* HMAC-SHA-256 of args->in under an HMAC key: 32 bytes in result.data. */
int hsm_hmac(hsm_t *h, hsm_req_t *req, const hsm_data_t *args, hsm_cb cb);

/* ------------------------------------------------------------------------ */
/* Opening a backend                                                         */

typedef enum {
  HSM_AUDIT_CREATED = 1, /* generated */
  HSM_AUDIT_IMPORTED,    /* from components, TR-31 or a zone key change */
  HSM_AUDIT_EXPORTED,    /* as a TR-31 key block */
  HSM_AUDIT_ROTATED,     /* a new version of an existing label */
  HSM_AUDIT_DESTROYED,
  HSM_AUDIT_CHECK_FAILED, /* a check value did not match: nothing stored */
  HSM_AUDIT_COMPONENT     /* one clear component entered (dual control) */
} hsm_audit_kind_t;

/* A key event.  Never carries key material: the check value identifies
 * the key. */
typedef struct hsm_audit_event_s {
  hsm_audit_kind_t kind;
  const char *who; /* operator or process, as the caller said */
  const char *label;
  hsm_usage_t usage;
  hsm_alg_t alg;
  uint32_t version;
  char kcv[7];        /* 6 hex digits */
  int64_t when;       /* Unix seconds */
  int status;         /* 0, or the HSM_E_* code of a failed operation */
  const char *detail; /* "under ZMK issuer.acme.zmk", ... ; may be NULL */
} hsm_audit_event_t;

typedef void (*hsm_audit_cb)(void *ctx, const hsm_audit_event_t *ev);

typedef struct hsm_config_s {
  const char *backend; /* "soft", "pkcs11" or "payshield" */
  uint32_t timeout_ms; /* default per-request timeout; 0: 2000 */
  hsm_audit_cb audit;  /* may be NULL */
  void *audit_ctx;
  /* soft */
  const char *keystore_path;
  const char *master_key_path;
  int create; /* create an empty key store if none exists */
  /* pkcs11 */
  const char *pkcs11_module;   /* path of the PKCS#11 library */
  const char *pkcs11_token;    /* token label */
  const char *pkcs11_pin_file; /* user PIN, in a file only the owner reads */
  unsigned pkcs11_threads;     /* worker threads for blocking calls; 0: 2 */
  /* Allow PIN translation and verification through PKCS#11, which puts
   * the clear PIN block in this process's memory: development only, and
   * said so at start-up. */
  int pkcs11_insecure_pin;
  /* payshield */
  const char *payshield_host;      /* numeric address */
  uint16_t payshield_port;         /* 0: 1500 */
  unsigned payshield_header_len;   /* message header length; 0: 4 */
  unsigned payshield_connections;  /* 0: 1 */
  const char *payshield_key_table; /* label -> usage, key under LMK, KCV */
} hsm_config_t;

/* Opens a backend for use on one libuv loop (every callback runs there).
 * On failure, errbuf (if not NULL) says why in one line. */
struct uv_loop_s;
int hsm_open(hsm_t **out, struct uv_loop_s *loop, const hsm_config_t *cfg,
             char *errbuf, size_t errcap);
/* Completes every request still in flight with HSM_E_UNAVAILABLE (their
 * callbacks run before this returns), then frees everything.  May be called
 * from a completion callback, including one that runs inline inside a
 * submitting call (the handle is then freed when that call returns). */
void hsm_close(hsm_t *h);
unsigned hsm_capabilities(const hsm_t *h); /* HSM_CAP_* */
const char *hsm_backend_name(const hsm_t *h);
/* Requests submitted and not yet completed. */
size_t hsm_in_flight(const hsm_t *h);

/* ------------------------------------------------------------------------ */
/* Key management (synchronous: for tools and administration, never on a   */
/* loop that carries traffic)                                                */

typedef struct hsm_key_info_s {
  char label[64];
  hsm_usage_t usage;
  hsm_alg_t alg;
  size_t length; /* bytes */
  uint32_t version;
  char kcv[7];
  int64_t created;
  int64_t not_after; /* 0: none */
} hsm_key_info_t;

typedef void (*hsm_key_list_cb)(void *ctx, const hsm_key_info_t *info);

/* Every version of every key, sorted by label then version. */
int hsm_key_list(hsm_t *h, hsm_key_list_cb cb, void *ctx);
/* The current version of label. */
int hsm_key_info(hsm_t *h, const char *label, hsm_key_info_t *out);
/* Generates a random key (a new version if the label exists). */
int hsm_key_generate(hsm_t *h, const char *label, hsm_usage_t usage,
                     hsm_alg_t alg, size_t length, const char *who,
                     hsm_key_info_t *out);
/* Check value of one clear component, to show the custodian who enters
 * it (the component itself is never stored). */
int hsm_component_kcv(hsm_alg_t alg, const uint8_t *component, size_t len,
                      char kcv[7]);
/* Combines 2 or 3 clear components (XOR), each entered by a different
 * custodian, into a key; expected_kcv (may be NULL) is the combined key's
 * check value from the key's paper record and must match. */
int hsm_key_import_components(hsm_t *h, const char *label, hsm_usage_t usage,
                              hsm_alg_t alg, const uint8_t *const *components,
                              size_t ncomponents, size_t length,
                              const char *expected_kcv, const char *who,
                              hsm_key_info_t *out);
/* Imports a TR-31 key block wrapped under the KBPK (or ZMK/TMK) named
 * kek_label; the block's usage must agree with usage.  expected_kcv may be
 * NULL.  not_after_old: when > 0, the previous current version of the
 * label stays usable until that time (zone key changeover). */
int hsm_key_import_tr31(hsm_t *h, const char *label, hsm_usage_t usage,
                        const char *kek_label, const char *block,
                        const char *expected_kcv, int64_t not_after_old,
                        const char *who, hsm_key_info_t *out);
/* Exports the current version of label as a TR-31 key block under
 * kek_label (NUL-terminated in out). */
int hsm_key_export_tr31(hsm_t *h, const char *label, const char *kek_label,
                        char *out, size_t cap, const char *who);
/* Legacy key exchange, still what many networks' 0800 key changes and many
 * terminals' key downloads carry: a TDES key encrypted with TDES-ECB under
 * a ZMK or TMK (ANSI X9.17 style), with its check value.  Weaker than
 * TR-31 (nothing binds the key to its usage), so the expected check value
 * is mandatory on import.  Import: cryptogram is 16 or 24 bytes. */
int hsm_key_import_ecb(hsm_t *h, const char *label, hsm_usage_t usage,
                       const char *kek_label, const uint8_t *cryptogram,
                       size_t len, const char *expected_kcv,
                       int64_t not_after_old, const char *who,
                       hsm_key_info_t *out);
/* Export of the current version of label (a TDES key) under kek_label,
 * e.g. a freshly generated TPK or TAK for a terminal's sign-on key
 * download; *len receives the cryptogram length, out->kcv its check. */
int hsm_key_export_ecb(hsm_t *h, const char *label, const char *kek_label,
                       uint8_t *cryptogram, size_t cap, size_t *len,
                       const char *who, hsm_key_info_t *out);
/* A new version of label (same usage and algorithm); the previous one
 * stays usable until not_after_old (0: for as long as it exists). */
int hsm_key_rotate(hsm_t *h, const char *label, int64_t not_after_old,
                   const char *who, hsm_key_info_t *out);
/* Destroys every version of label. */
int hsm_key_destroy(hsm_t *h, const char *label, const char *who);
/* Destroys one old version of label: whatever it protected (a PAN
 * encrypted under a data key's old version) can no longer be recovered,
 * which is how the journal's retention purge works on append-only rows.
 * The current version cannot be destroyed this way (HSM_E_INVAL): rotate
 * first. */
int hsm_key_destroy_version(hsm_t *h, const char *label, uint32_t version,
                            const char *who);

#ifdef __cplusplus
}
#endif
#endif /* HSM_H */
