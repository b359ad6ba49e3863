/*
 * keystore.h — the soft backend's key store: named, versioned keys with
 * their usage and check value, kept in one file encrypted under a master
 * key.  Internal to libhsm.
 *
 * File format (all integers big-endian):
 *   magic "SWKSTORE" (8) | format version u16 (= 1) | reserved u16 (0) |
 *   nonce (12) | ciphertext | GCM tag (16)
 * The ciphertext is AES-256-GCM under the master key, with the 12-byte
 * header (magic, version, reserved) as additional authenticated data, of:
 *   count u32, then per key:
 *     label length u8, label bytes (1..63, [A-Za-z0-9._-]),
 *     usage u8 (hsm_usage_t), alg u8 (hsm_alg_t), version u32,
 *     key length u8 (8/16/24 TDES, 16/24/32 AES, 16..64 HMAC), key bytes,
 *     created i64 (Unix seconds), not_after i64 (0: no end),
 *     kcv 3 bytes
 * A wrong master key, a flipped bit or a truncated file fails the GCM tag
 * check: HSM_E_MASTER_KEY when the tag fails (cannot tell a wrong key from
 * tampering, so says both), HSM_E_KEYSTORE for structural faults after a
 * good tag (which means a writer bug) and for bad headers.
 *
 * The master key file holds 32 bytes, raw or as 64 hex digits with an
 * optional trailing newline.  Both files must be regular files owned by the
 * effective user and not readable or writable by group or others
 * (HSM_E_PERMISSIONS otherwise); the master key is never taken from the
 * environment or the command line.
 *
 * Saving writes a temporary file in the same directory (mode 0600), fsyncs
 * it, renames it over the old one and fsyncs the directory, so a crash
 * leaves either the old or the new store, never a mixture.
 *
 * A label may hold several versions of a key (rotation, zone key
 * changeover).  The current version is the highest; older versions stay
 * usable until not_after (when set) so traffic under the old key completes.
 */
#ifndef HSM_KEYSTORE_H
#define HSM_KEYSTORE_H

#include "crypto.h"
#include "hsm.h"

#include <stdint.h>

#define HSM__LABEL_MAX 63

typedef struct hsm__key_s {
  char label[HSM__LABEL_MAX + 1];
  hsm_usage_t usage;
  hsm_alg_t alg;
  uint32_t version;
  size_t len;
  uint8_t key[64];
  uint8_t kcv[3];
  int64_t created;
  int64_t not_after;
  /* runtime only: key schedule for TDES/AES keys, prepared on load */
  hsm__cipher_t cipher;
  int cipher_ready;
} hsm__key_t;

typedef struct hsm__keystore_s {
  hsm__key_t *keys; /* sorted by label, then version */
  size_t n, cap;
  char *path;
  uint8_t master[32];
} hsm__keystore_t;

/* Opens the store at path with the master key in master_path.  A missing
 * store file is created empty when create is set (HSM_E_KEYSTORE
 * otherwise). */
int hsm__ks_open(hsm__keystore_t *ks, const char *path, const char *master_path,
                 int create);
/* Writes the store back (atomically, as above). */
int hsm__ks_save(hsm__keystore_t *ks);
/* Wipes every key and the master key from memory and frees the store. */
void hsm__ks_close(hsm__keystore_t *ks);
/* The version of label (0: the current one, i.e. the highest), or NULL. */
hsm__key_t *hsm__ks_find(hsm__keystore_t *ks, const char *label,
                         uint32_t version);
/* A usable version for now (the current one, or an older one whose
 * not_after has not passed) with this KCV; NULL if none. */
hsm__key_t *hsm__ks_find_kcv(hsm__keystore_t *ks, const char *label,
                             const uint8_t kcv[3], int64_t now);
/* Adds a key (label, usage, alg, len, key set by the caller; version 0
 * means "next version of this label"; created, kcv filled in here).
 * Refuses bad labels, lengths and an existing (label, version). */
int hsm__ks_add(hsm__keystore_t *ks, hsm__key_t *k);
/* Removes every version of label (or one version), wiping the bytes. */
int hsm__ks_remove(hsm__keystore_t *ks, const char *label, uint32_t version);
/* 1 if the label is well formed. */
int hsm__ks_label_ok(const char *label);
/* Checks a file's owner and mode as described above. */
int hsm__file_private(const char *path);

#endif
