/*
 * vectors.c — see vectors.h.
 */
#include "vectors.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path) {
  FILE *fp = fopen(path, "rb");
  if (!fp)
    return NULL;
  if (fseek(fp, 0, SEEK_END) != 0) {
    fclose(fp);
    return NULL;
  }
  long n = ftell(fp);
  if (n < 0 || fseek(fp, 0, SEEK_SET) != 0) {
    fclose(fp);
    return NULL;
  }
  char *buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, fp) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  if (buf)
    buf[n] = '\0';
  fclose(fp);
  return buf;
}

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen(s);
  while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
    s[--n] = '\0';
  return s;
}

int tv_load(tv_file_t *f, const char *name) {
  memset(f, 0, sizeof *f);
  const char *path = tu_data_path(name);
  f->text = slurp(path);
  if (!f->text) {
    fprintf(stderr, "cannot read vector file %s\n", path);
    return -1;
  }
  size_t cap = 0;
  tv_block_t *cur = NULL;
  /* Blank lines end a block, so lines are split by hand (strtok would
   * swallow them). */
  for (char *line = f->text, *next; line; line = next) {
    next = strchr(line, '\n');
    if (next)
      *next++ = '\0';
    char *t = trim(line);
    if (*t == '#')
      continue;
    if (*t == '\0') {
      cur = NULL;
      continue;
    }
    char *colon = strchr(t, ':');
    if (!colon)
      continue;
    *colon = '\0';
    if (strcmp(trim(t), "name") == 0 || !cur) {
      if (f->nblocks == cap) {
        cap = cap ? cap * 2 : 16;
        tv_block_t *nb = realloc(f->blocks, cap * sizeof *nb);
        if (!nb) {
          tv_free(f);
          return -1;
        }
        f->blocks = nb;
      }
      cur = &f->blocks[f->nblocks++];
      cur->npairs = 0;
    }
    if (cur->npairs < TV_MAX_PAIRS) {
      cur->key[cur->npairs] = trim(t);
      cur->value[cur->npairs] = trim(colon + 1);
      cur->npairs++;
    }
  }
  return 0;
}

void tv_free(tv_file_t *f) {
  free(f->blocks);
  free(f->text);
  memset(f, 0, sizeof *f);
}

const char *tv_get(const tv_block_t *b, const char *key) {
  for (size_t i = 0; i < b->npairs; i++)
    if (strcmp(b->key[i], key) == 0)
      return b->value[i];
  return NULL;
}

size_t tv_hex(const tv_block_t *b, const char *key, uint8_t *out, size_t cap) {
  const char *v = tv_get(b, key);
  return v ? tu_unhex(v, out, cap) : (size_t)-1;
}
