/*
 * bench_codec.c — parse and build of a typical 0200 purchase (19 data
 * elements, 104-byte DE55; the golden message of tests/iso8583/golden.h)
 * in each built-in dialect that carries it.
 *
 * For each dialect and operation it runs RUNS timed batches of ITER
 * messages and prints the median ns/message (and the fastest and slowest
 * batch), plus heap allocations per message counted by interposing malloc.
 * Operations:
 *   walk     bitmap walk recording field offsets only (no validation): the
 *            floor a zero-copy parser can approach
 *   parse    iso_parse with full validation + iso_check_mandatory
 *   build    iso_builder_init + 19 setters + iso_build
 *   rebuild  iso_set_from for every field of a parsed message + iso_build
 *            (the response path: raw field bytes copied)
 *
 * Run: cmake --build build --target bench   (Release or RelWithDebInfo)
 *
 * Single-operation mode, for instruction counts that do not depend on load:
 *   valgrind --tool=callgrind build/tests/bench/bench_codec parse iso87b 100000
 * runs one operation on one dialect COUNT times, untimed.
 */
#define _GNU_SOURCE
#include "iso8583.h"
#include "iso8583/golden.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RUNS 11
#define ITER 200000

/* Allocation counter: every malloc-family call in this process. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static volatile unsigned long allocs;
void *malloc(size_t n) {
  allocs++;
  return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
  allocs++;
  return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
  allocs++;
  return __libc_realloc(p, n);
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef struct {
  const iso_dialect_t *d;
  const char *mti;
  uint8_t msg[1024];
  size_t len;
  iso_msg_t m;
  iso_builder_t b;
  uint8_t out[1024];
  uint8_t icc[GOLDEN_ICC_LEN];
  volatile size_t sink;
} ctx_t;

/* The walk: what a parser must do at least, recording offsets only. */
static size_t bare_walk(const iso_dialect_t *d, const uint8_t *p, size_t len,
                        iso_span_t *spans) {
  size_t pos = d->mti_enc == ISO_ENC_BCD ? 2 : 4;
  size_t bml = d->bitmap_enc == ISO_ENC_BINARY ? 8 : 16;
  uint64_t bm = 0;
  for (size_t i = 0; i < bml && pos + i < len; i++)
    bm = bml == 8 ? bm << 8 | p[pos + i]
                  : bm << 4 | (uint64_t)(p[pos + i] <= '9' ? p[pos + i] - '0'
                                                           : p[pos + i] - 55);
  pos += bml;
  while (bm) {
    int k = __builtin_clzll(bm);
    bm &= ~(UINT64_C(1) << (63 - k));
    const iso_field_def_t *f = &d->fields[k + 1];
    size_t units = f->max_len, h = 0;
    if (f->len_type) {
      h = f->len_enc == ISO_ENC_BCD ? (f->len_type == 2 ? 1 : 2) : f->len_type;
      units = 0;
      for (size_t i = 0; i < h; i++)
        units = f->len_enc == ISO_ENC_BCD
                    ? units * 100 + (p[pos + i] >> 4) * 10 + (p[pos + i] & 15)
                    : units * 10 + (size_t)(p[pos + i] & 15);
    }
    spans[k + 1].off = (uint32_t)pos;
    spans[k + 1].units = (uint16_t)units;
    pos += h + iso_body_bytes(f, units);
  }
  return pos;
}

static void op_walk(ctx_t *c) {
  c->sink += bare_walk(c->d, c->msg, c->len, c->m.f);
}

static void op_parse(ctx_t *c) {
  if (iso_parse(&c->m, c->d, c->msg, c->len, NULL) ||
      iso_check_mandatory(&c->m, NULL))
    abort();
  c->sink += c->m.f[55].off;
}

#define S(n, s) iso_set_text(&c->b, n, s, sizeof s - 1)
static void op_build(ctx_t *c) {
  static const uint8_t pin[8] = {1, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF};
  iso_builder_init(&c->b, c->d, c->mti);
  int rc = S(2, GOLDEN_PAN) | S(3, "000000") | S(4, "000000001000") |
           S(7, "1123103000") | S(11, "000123") | S(37, "533112000123") |
           S(41, "TERM0001") | S(42, "MERCHANT0000001") |
           iso_set_bytes(&c->b, 55, c->icc, sizeof c->icc);
  if (c->mti[0] == '1') {
    rc |= S(12, "251123103000") | S(22, "51010151134C") | S(24, "200") |
          S(49, "978");
  } else {
    rc |= S(12, "103000") | S(13, "1123") | S(14, "2712") | S(18, "5411") |
          S(22, "051") | S(25, "00") | S(35, GOLDEN_TRACK2) |
          S(43, "ACME STORE 42          LONDON        GB ") | S(49, "826") |
          iso_set_bytes(&c->b, 52, pin, sizeof pin);
  }
  size_t n;
  if (rc || iso_build(&c->b, c->out, sizeof c->out, &n, NULL) || n != c->len)
    abort();
  c->sink += n;
}

static void op_rebuild(ctx_t *c) {
  iso_builder_init(&c->b, c->d, c->m.mti);
  for (int w = 0; w < 2; w++) {
    uint64_t bits = c->m.bitmap[w];
    while (bits) {
      int k = __builtin_clzll(bits);
      bits &= ~(UINT64_C(1) << (63 - k));
      int n = w * 64 + k + 1;
      if (n != 1 && n != 65 && iso_set_from(&c->b, n, &c->m))
        abort();
    }
  }
  size_t n;
  if (iso_build(&c->b, c->out, sizeof c->out, &n, NULL) || n != c->len)
    abort();
  c->sink += n;
}

static void run(ctx_t *c, const char *name, void (*op)(ctx_t *)) {
  double t[RUNS];
  for (int i = 0; i < 1000; i++)
    op(c); /* warm caches and branch predictors */
  unsigned long a0 = allocs;
  for (int r = 0; r < RUNS; r++) {
    double t0 = now_ns();
    for (int i = 0; i < ITER; i++)
      op(c);
    t[r] = (now_ns() - t0) / ITER;
  }
  double per = (double)(allocs - a0) / ((double)RUNS * ITER);
  qsort(t, RUNS, sizeof t[0], cmp_double);
  printf("%-15s %-8s %8.1f %8.1f %8.1f %10.2f\n", c->d->name, name, t[RUNS / 2],
         t[0], t[RUNS - 1], per);
}

static int single(ctx_t *c, const char *op, const char *dialect,
                  const char *count, const char *const *gold, const char *mti) {
  void (*fn)(ctx_t *) = strcmp(op, "walk") == 0      ? op_walk
                        : strcmp(op, "parse") == 0   ? op_parse
                        : strcmp(op, "build") == 0   ? op_build
                        : strcmp(op, "rebuild") == 0 ? op_rebuild
                                                     : NULL;
  long n = strtol(count, NULL, 10);
  c->d = iso_dialect_find(dialect);
  c->mti = mti;
  c->len = golden_bytes(gold, c->msg, sizeof c->msg);
  if (!fn || n <= 0 || !c->d || iso_parse(&c->m, c->d, c->msg, c->len, NULL))
    return 2;
  for (long i = 0; i < n; i++)
    fn(c);
  printf("%s %s: %ld operations\n", op, dialect, n);
  return 0;
}

int main(int argc, char **argv) {
  static ctx_t c;
  struct {
    const char *dialect, *mti;
    const char *const *gold;
  } cases[] = {{"iso87a", "0200", golden_iso87a_sale},
               {"iso87b", "0200", golden_iso87b_sale},
               {"iso87e", "0200", golden_iso87e_sale},
               {"iso93a", "1200", golden_iso93a_sale}};
  if (tu_unhex(GOLDEN_ICC, c.icc, sizeof c.icc) != GOLDEN_ICC_LEN)
    return 1;
  if (argc == 4) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
      if (strcmp(argv[2], cases[i].dialect) == 0)
        return single(&c, argv[1], argv[2], argv[3], cases[i].gold,
                      cases[i].mti);
    fprintf(stderr, "usage: bench_codec [walk|parse|build|rebuild "
                    "iso87a|iso87b|iso87e|iso93a COUNT]\n");
    return 2;
  }
  printf("ISO 8583 codec: 0200 purchase, 19 fields, 104-byte DE55; "
         "%d runs x %d messages\n",
         RUNS, ITER);
  printf("%-15s %-8s %8s %8s %8s %10s\n", "dialect", "op", "median", "min",
         "max", "allocs/msg");
  printf("%-15s %-8s %8s %8s %8s %10s\n", "", "", "ns/msg", "ns/msg", "ns/msg",
         "");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    c.d = iso_dialect_find(cases[i].dialect);
    c.mti = cases[i].mti;
    c.len = golden_bytes(cases[i].gold, c.msg, sizeof c.msg);
    if (!c.d || !c.len || iso_parse(&c.m, c.d, c.msg, c.len, NULL))
      return 1;
    run(&c, "walk", op_walk);
    run(&c, "parse", op_parse);
    run(&c, "build", op_build);
    run(&c, "rebuild", op_rebuild);
  }
  return 0;
}
