/*
 * vectors.h — reader for the known-answer vector files in tests/data/vectors:
 * blocks of "key: value" lines separated by blank lines, '#' comments.
 * Every block carries "name:" and "source:" lines naming where its values
 * come from.
 */
#ifndef SW_VECTORS_H
#define SW_VECTORS_H

#include <stddef.h>
#include <stdint.h>

#define TV_MAX_PAIRS 48

typedef struct tv_block_s {
  size_t npairs;
  char *key[TV_MAX_PAIRS];
  char *value[TV_MAX_PAIRS];
} tv_block_t;

typedef struct tv_file_s {
  size_t nblocks;
  tv_block_t *blocks;
  char *text; /* owns every key and value */
} tv_file_t;

/* Loads tests/data/vectors/<name>; returns 0, or -1 with a message on
 * stderr. */
int tv_load(tv_file_t *f, const char *name);
void tv_free(tv_file_t *f);
/* The value of key in block b, or NULL. */
const char *tv_get(const tv_block_t *b, const char *key);
/* Hex value of key decoded into out; returns bytes or (size_t)-1. */
size_t tv_hex(const tv_block_t *b, const char *key, uint8_t *out, size_t cap);

#endif
