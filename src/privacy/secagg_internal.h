/*
 * SecAgg+ secure aggregation (Bell, Bonawitz, Gascon, Lepoint, Raykova,
 * CCS 2020, on top of Bonawitz et al., CCS 2017) as two sans-I/O state
 * machines: one per client and one for the server. They exchange byte
 * payloads; the federated-learning layer (src/fl) carries them in its wire
 * envelopes and decides when a stage closes (everyone answered, or the
 * deadline passed). The server learns only the sum of the survivors'
 * vectors mod 2^bits.
 *
 * A round has n participants with indices 0..n-1 (the order the server
 * listed them in, which it shuffles, so positions are random). Each one's
 * neighbours are the k/2 before and after it on that ring (k >= n - 1: all
 * others), and its secrets are shared among its k neighbours and itself,
 * any t of these k + 1 holders recovering them.
 *
 * Stages and payloads (little-endian):
 *  1. client -> server ADVERTISE: c_pk[32] s_pk[32] (X25519 public keys:
 *     c for encrypting shares, s for agreeing pairwise masks).
 *     server -> client KEYS: m, then m x {index u32, c_pk, s_pk}: the
 *     neighbours that advertised (U1).
 *  2. client -> server SHARES: m, then m x {to u32, ct[EF_SA_CT_BYTES]}:
 *     for each neighbour in U1, a Shamir share of the client's self-mask
 *     seed b and one of its secret key s_sk, AEAD-encrypted for it.
 *     server -> client FORWARD: m, then m x {from u32, ct}: the shares
 *     addressed to it by neighbours that sent theirs (U2).
 *  3. client -> server MASKED: y = x + PRG(b) + sum over neighbours v in U2
 *     of +-PRG(s_uv) mod 2^bits (d words; `+` if u < v). The server adds
 *     the y it receives (U3) into one running sum.
 *  4. server -> client UNMASK: n_alive u32, n_dropped u32, then the indices:
 *     neighbours in U3 (their self-mask shares are wanted) and neighbours in
 *     U2 but not U3 (their key shares are wanted). An honest client refuses
 *     a request naming a peer in both lists, or asking for the other kind of
 *     share than it revealed before for that peer.
 *     client -> server SHARES_OUT: m, then m x {about u32, kind u8, share}.
 * The server then recovers each survivor's b and each dropped client's s_sk
 * from t shares, and removes the masks: the result is sum_{U3} x exactly.
 *
 * Randomness (keys, seeds, share polynomials, AEAD nonces) comes from an
 * ef__drbg: seeded from the OS (deployments) or from a seed (simulation).
 */
#ifndef EDGEFL_SECAGG_INTERNAL_H
#define EDGEFL_SECAGG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "edgefl/core.h"
#include "privacy_internal.h"

#define EF_SA_PK_BYTES 32
/* One encrypted share pair: nonce[24] + (from, to, share b, share s_sk) + tag[16]. */
#define EF_SA_PT_BYTES (8 + 2 * EF__SS_SHARE_BYTES)
#define EF_SA_CT_BYTES (24 + EF_SA_PT_BYTES + 16)
#define EF_SA_SHARE_B 0 /* kind: self-mask seed share */
#define EF_SA_SHARE_S 1 /* kind: mask secret key share */

/* What both sides agree on for a round. */
typedef struct ef_sa_params {
    uint32_t n;      /* participants, >= 2 */
    uint32_t k;      /* neighbours per participant: even and < n - 1, or >= n - 1 for all */
    uint32_t t;      /* shares needed to recover a secret: 1 <= t <= holders */
    int bits;        /* sums mod 2^bits, 1..32 */
    size_t d;        /* vector length in words */
    uint64_t round;  /* binds keys and ciphertexts to this round */
    int no_mask;     /* baseline: run every stage but add no masks, so the server
                      * sees each vector (same messages, same timing, same sum) */
} ef_sa_params;

/* Checks a parameter set; the message says what is wrong. */
ef_status ef_sa_params_check(const ef_sa_params *p);
/* Number of neighbours of each participant (min(k, n - 1)). */
uint32_t ef_sa_degree(const ef_sa_params *p);
/* Neighbours of `me` in increasing index order into out[0..degree). */
void ef_sa_neighbors(const ef_sa_params *p, uint32_t me, uint32_t *out);
/* Whether a and b are neighbours. */
int ef_sa_is_neighbor(const ef_sa_params *p, uint32_t a, uint32_t b);
/* The default neighbourhood size for n participants: the even number at or
 * above 2 * ceil(log2 n) (SecAgg+'s O(log n)), or n - 1 if that is larger. */
uint32_t ef_sa_default_k(uint32_t n);
/* The default threshold: a majority of the holders, floor(holders / 2) + 1. */
uint32_t ef_sa_default_t(uint32_t n, uint32_t k);

typedef struct ef_sa_client ef_sa_client;
typedef struct ef_sa_server ef_sa_server;

/* ---- client ---------------------------------------------------------------- */

/* New client `me` of a round; key material from `key` (32 bytes; NULL: the
 * operating system's randomness). Free with ef_sa_client_free. */
ef_status ef_sa_client_new(ef_sa_client **out, const ef_sa_params *p, uint32_t me,
                           const uint8_t *key);
/* Erases every secret and frees; NULL is a no-op. */
void ef_sa_client_free(ef_sa_client *c);
/* Stage 1: the ADVERTISE payload (2 * EF_SA_PK_BYTES bytes). */
ef_status ef_sa_client_advertise(ef_sa_client *c, uint8_t out[2 * EF_SA_PK_BYTES]);
/* Stage 2: from the server's KEYS payload, the SHARES payload (*out, *out_len;
 * ef_malloc'd, the caller frees it with ef_free). */
ef_status ef_sa_client_share(ef_sa_client *c, const uint8_t *keys, size_t len, uint8_t **out,
                             size_t *out_len);
/* Stage 3: takes the server's FORWARD payload and masks x (d words, values
 * already reduced mod 2^bits) into y (d words; may be x). */
ef_status ef_sa_client_mask(ef_sa_client *c, const uint8_t *fwd, size_t len, const uint32_t *x,
                            uint32_t *y);
/* Stage 4: answers an UNMASK payload with SHARES_OUT (*out, ef_free it).
 * Refuses (EF_ERR_STATE, nothing revealed) a request that names a peer as
 * both alive and dropped, names a peer that did not share with it, or asks
 * for the other kind of share than an earlier answer revealed. */
ef_status ef_sa_client_unmask(ef_sa_client *c, const uint8_t *req, size_t len, uint8_t **out,
                              size_t *out_len);

/* ---- server ---------------------------------------------------------------- */

/* New server side of a round. Free with ef_sa_server_free. */
ef_status ef_sa_server_new(ef_sa_server **out, const ef_sa_params *p);
void ef_sa_server_free(ef_sa_server *s);
/* Current stage: 1 collecting keys, 2 shares, 3 masked inputs, 4 unmask
 * answers, 5 done, 0 aborted. */
int ef_sa_server_stage(const ef_sa_server *s);
/* The reason of an abort ("" otherwise). */
const char *ef_sa_server_abort_reason(const ef_sa_server *s);
/* Stage 1 input from participant `from`. A second message or a wrong size
 * is refused (EF_ERR_FORMAT/EF_ERR_STATE) and changes nothing. */
ef_status ef_sa_server_on_advertise(ef_sa_server *s, uint32_t from, const uint8_t *msg,
                                    size_t len);
/* Stage 2 input. */
ef_status ef_sa_server_on_shares(ef_sa_server *s, uint32_t from, const uint8_t *msg, size_t len);
/* Stage 3 input: the masked vector y (d words). */
ef_status ef_sa_server_on_masked(ef_sa_server *s, uint32_t from, const uint32_t *y);
/* Stage 4 input. */
ef_status ef_sa_server_on_unmask(ef_sa_server *s, uint32_t from, const uint8_t *msg, size_t len);
/* Closes the current stage with the participants heard from so far: fewer
 * than t left aborts the round (EF_ERR_STATE, reason in
 * ef_sa_server_abort_reason). Closing stage 4 recovers the secrets and
 * removes the masks (the sum is then ready). */
ef_status ef_sa_server_close(ef_sa_server *s);
/* Whether participant i is still in (answered every closed stage). */
int ef_sa_server_alive(const ef_sa_server *s, uint32_t i);
/* The payload the server sends participant `to` for the stage just closed
 * (KEYS after stage 1, FORWARD after stage 2, UNMASK after stage 3);
 * *out ef_malloc'd. Only for participants still in. */
ef_status ef_sa_server_message_for(ef_sa_server *s, uint32_t to, uint8_t **out,
                                   size_t *out_len);
/* After stage 4: the unmasked sum (d words, mod 2^bits) and how many
 * vectors it adds up (|U3|), and whether participant i's vector is in it. */
ef_status ef_sa_server_result(const ef_sa_server *s, const uint32_t **sum, uint32_t *n_summed);
int ef_sa_server_included(const ef_sa_server *s, uint32_t i);

#endif /* EDGEFL_SECAGG_INTERNAL_H */
