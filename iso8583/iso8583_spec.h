/*
 * iso8583_spec.h — dialects described in JSON files (libiso8583spec).
 *
 * A dialect file describes a wire format as data, either completely or as a
 * set of overrides on a built-in dialect ("base").  The format is documented
 * in docs/dialect-files.md.  Loading turns a file into a heap iso_dialect_t
 * that the codec uses like a built-in one.
 *
 * Guarantees:
 *   (1) A dialect file is untrusted input: wrong types, unknown keys, huge
 *       numbers, deep nesting and missing keys are reported as errors, never
 *       as crashes or silently ignored settings.
 *   (2) Every error message names the JSON path of the offending value, e.g.
 *       "fields.35.length: must be 1..9999".
 *   (3) A loaded dialect has passed iso_dialect_check().
 *   (4) The loader owns every string and array it allocates for the dialect;
 *       iso_spec_free releases all of them at once.
 *
 * Conventions as in iso8583.h: 0 on success or a negative ISO_E_* code.
 * Messages are NUL-terminated when msgcap > 0 and never longer than msgcap-1.
 */
#ifndef ISO8583_SPEC_H
#define ISO8583_SPEC_H

#include "iso8583.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest dialect file the loader reads. */
#define ISO_SPEC_MAX_FILE (1024u * 1024u)

/* Loads a dialect from a JSON file.  On success *out is a dialect to release
 * with iso_spec_free.  On failure *out is NULL, msg says what and where (the
 * file name, then the JSON path or line and column) and the return is
 * ISO_E_NOT_FOUND (no such file), ISO_E_DIALECT (invalid content),
 * ISO_E_NOMEM, or ISO_E_INVAL (unreadable file, bad arguments). */
int iso_spec_load_file(const char *path, iso_dialect_t **out, char *msg,
                       size_t msgcap);

/* Same, from len bytes of JSON text in memory (need not be NUL-terminated).
 * Messages start with the JSON path or the line and column. */
int iso_spec_load_string(const char *json, size_t len, iso_dialect_t **out,
                         char *msg, size_t msgcap);

/* Releases a dialect from iso_spec_load_file or iso_spec_load_string (never
 * a built-in one).  NULL is allowed. */
void iso_spec_free(iso_dialect_t *d);

/* A built-in dialect by name (iso_dialect_find), else a dialect file by
 * path.  Returns the dialect or NULL with msg filled.  *owned is set to the
 * loaded dialect when a file was read (release it with iso_spec_free once
 * the returned pointer is no longer used) and to NULL otherwise. */
const iso_dialect_t *iso_spec_resolve(const char *name_or_path,
                                      iso_dialect_t **owned, char *msg,
                                      size_t msgcap);

#ifdef __cplusplus
}
#endif
#endif /* ISO8583_SPEC_H */
