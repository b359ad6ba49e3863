/*
 * payshield_internal.h — the payShield backend's parsing and encoding
 * functions, exposed for its unit tests and fuzz targets.  Internal to
 * libhsm.
 */
#ifndef HSM_PAYSHIELD_INTERNAL_H
#define HSM_PAYSHIELD_INTERNAL_H

#include "hsm.h"

typedef struct hsm__ps_table_s hsm__ps_table_t;

/* Key table text ("label usage scheme+key kcv [version [not_after]]"
 * lines, an optional "!lmk-check 16H") to a table. */
int hsm__ps_table_parse(const char *text, size_t len, hsm__ps_table_t **out,
                        char *err, size_t errcap);
int hsm__ps_table_load(const char *path, hsm__ps_table_t **out, char *err,
                       size_t errcap);
void hsm__ps_table_free(hsm__ps_table_t *t);
/* One request as host-command bytes (without the 2-byte length). */
int hsm__ps_encode(const hsm__ps_table_t *t, unsigned header_len, uint32_t tag,
                   hsm_op_t op, const void *args, char *out, size_t cap,
                   size_t *outlen);
/* One response (without the 2-byte length) into req's result. */
int hsm__ps_decode(const char *cmd, hsm_pin_format_t dst_format,
                   const char *msg, size_t len, unsigned header_len,
                   uint32_t *tag, hsm_req_t *req, unsigned *pin_len);
/* A payShield error code to a status and verdict (one table). */
int hsm__ps_status(const char *cmd, const char *code, hsm_verify_t *verify);
/* Internal counters ("late", "orphans", "lmk_checked", "lmk_mismatch",
 * ...). */
uint64_t hsm__ps_counter(const hsm_t *h, const char *name);
/* The LMK check value (16H) and firmware number (9A) of the last NC answer
 * (every connection sends NC first); HSM_E_UNAVAILABLE before any. */
int hsm__ps_lmk(const hsm_t *h, char kcv[17], char firmware[10]);

#endif
