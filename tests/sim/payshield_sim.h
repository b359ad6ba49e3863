/*
 * payshield_sim.h — a payShield host-protocol simulator for tests: a libuv
 * TCP server on 127.0.0.1 that answers B2 NC CA CC G0 DA EA DC EC M6 M8 CY
 * A6 A8 with the crypto of hsm/crypto.h under a fixed TEST LMK.
 *
 * Test LMK scheme (self-consistent, NOT Thales's: real LMK variants are
 * documented only to Thales customers).  The test LMK is the 2-key TDES
 * key PS_SIM_LMK_HEX.  A key of usage u is stored "under the LMK" as
 * TDES-ECB, block by block, of the key under the LMK variant for u: the
 * LMK with bytes 0 and 8 XORed with the usage's variant byte:
 *
 *   ZMK 04  ZPK 06  TMK 14  TPK 24  PVK 34  CVK 44  TAK 16  ZAK 26  BDK 28
 *
 * (the high digit echoes the Thales LMK pair, the low one keeps usages
 * apart).  A cryptogram is written as the HSM expects it: 16H for a
 * single-length key, U + 32H for double length, T + 48H for triple (X and
 * Y are read as U and T).  A key used as another usage decrypts to garbage
 * and fails the odd-parity check: error 10 or 11, as on a real HSM.
 *
 * Everything runs on the loop given to ps_sim_start, the caller's: a test
 * that runs the loop runs the simulator.
 */
#ifndef PAYSHIELD_SIM_H
#define PAYSHIELD_SIM_H

#include "hsm.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define PS_SIM_LMK_HEX "C1D0F8FB4958670DBA40AB1F3752EF0D"

typedef struct ps_sim_s ps_sim_t;

/* Malformed responses for the client's robustness tests; each applies to
 * the next response only. */
typedef enum {
  PS_SIM_HOSTILE_NONE = 0,
  PS_SIM_HOSTILE_SHORT,        /* a frame shorter than the header */
  PS_SIM_HOSTILE_WRONG_HEADER, /* the right body under another header */
  PS_SIM_HOSTILE_GARBAGE,      /* bytes with a non-digit header */
  PS_SIM_HOSTILE_WRONG_CODE,   /* the response code of another command */
  PS_SIM_HOSTILE_BAD_FIELDS,   /* error 00, then fields that do not parse */
  PS_SIM_HOSTILE_ZERO_LENGTH,  /* a frame of length 0 */
  PS_SIM_HOSTILE_TRUNCATED     /* a length larger than what follows, close */
} ps_sim_hostile_t;

typedef struct ps_sim_stats_s {
  uint64_t connections; /* accepted */
  uint64_t requests;    /* frames received */
  uint64_t responses;   /* frames sent */
  uint64_t malformed;   /* requests that could not be parsed (error 15) */
  uint64_t dropped;     /* connections closed on purpose */
} ps_sim_stats_t;

/* Listens on 127.0.0.1:port (0: any free port, see ps_sim_port) with
 * message headers of header_len characters. */
int ps_sim_start(ps_sim_t **out, uv_loop_t *loop, uint16_t port,
                 unsigned header_len);
uint16_t ps_sim_port(const ps_sim_t *s);
/* Closes the listener and every connection; the memory goes once the loop
 * has run the close callbacks. */
void ps_sim_stop(ps_sim_t *s);

/* Delays the answer to cmd ("CC"; NULL: every command) by ms. */
void ps_sim_set_delay(ps_sim_t *s, const char *cmd, unsigned ms);
/* Adds a random 0..max_ms to every answer: answers come out of order. */
void ps_sim_set_jitter(ps_sim_t *s, unsigned max_ms);
/* Answers the requests of one read in reverse order. */
void ps_sim_set_reverse(ps_sim_t *s, int on);
/* Closes the connection, unanswered, when cmd next arrives. */
void ps_sim_drop_on(ps_sim_t *s, const char *cmd);
/* Closes every client connection now. */
void ps_sim_kill_connections(ps_sim_t *s);
/* Answers the next count requests of cmd (NULL: any) with error code
 * code ("15") and no fields. */
void ps_sim_force_error(ps_sim_t *s, const char *cmd, const char *code,
                        unsigned count);
void ps_sim_set_hostile(ps_sim_t *s, ps_sim_hostile_t mode);

void ps_sim_stats(const ps_sim_t *s, ps_sim_stats_t *out);
size_t ps_sim_open_connections(const ps_sim_t *s);
/* The last request received (header onwards, without the length prefix);
 * returns its length, copying at most cap bytes. */
size_t ps_sim_last_request(const ps_sim_t *s, char *out, size_t cap);

/* The answer to one request (header onwards), header onwards, into out:
 * 0, or -1 when the request is too short to answer (the simulator then
 * closes the connection).  No knobs apply. */
int ps_sim_answer(unsigned header_len, const char *msg, size_t len, char *out,
                  size_t cap, size_t *outlen);

/* The cryptogram of a clear key (hex, 16 32 or 48 digits) under the test
 * LMK variant for usage, NUL-terminated into out (>= 50), and its check
 * value.  Odd parity is set first, as a key ceremony would: DES ignores
 * the parity bits, so the check value is the clear key's. */
int ps_sim_wrap_key(hsm_usage_t usage, const char *clear_hex, char *out,
                    size_t cap, char kcv[7]);

#endif
