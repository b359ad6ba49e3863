/*
 * chain.h — inside libdb: the one computation of a journal chain link,
 * shared by the writer (journal.c) and verify (verify.c) so the two can
 * never disagree.
 */
#ifndef DB_CHAIN_H
#define DB_CHAIN_H

#include "journal.h"

#include <stdint.h>

struct hsm_s;
struct uv_loop_s;

/* out = HMAC-SHA-256(K, prev | SHA-256(db_event_canonical(ev))) under
 * version (0: the current one) of HMAC key label, computed by the HSM
 * adapter h opened on loop, which this call runs until the answer comes.
 * *used receives the version the HSM used.  0 or an HSM_E_* code. */
int db__chain_link(struct hsm_s *h, struct uv_loop_s *loop, const char *label,
                   uint32_t version, const uint8_t prev[32],
                   const db_event_t *ev, uint8_t out[32], uint32_t *used);

#endif
