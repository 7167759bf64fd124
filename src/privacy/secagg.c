/*
 * SecAgg+ client and server state machines (see secagg_internal.h for the
 * protocol and the payload layouts). Sans-I/O: payloads in, payloads out.
 *
 * Keys: every client makes two X25519 key pairs per round from its DRBG.
 * Two neighbours derive an AEAD key from their c keys and a mask seed from
 * their s keys: BLAKE2b-256 of the Diffie-Hellman output, both public keys
 * (lower participant index first), the round and a label, so a key never
 * serves two purposes or two rounds. A Diffie-Hellman result of all zeros
 * (a low-order public key) is refused.
 */
#include <string.h>

#include <sodium.h>

#include "core/core_internal.h"
#include "fl/fl_internal.h"
#include "secagg_internal.h"

#define PK EF_SA_PK_BYTES
#define STREAM_PAIR 0 /* PRG stream of a pairwise mask */
#define STREAM_SELF 1 /* PRG stream of a self mask */

/* ---- parameters and the neighbour graph --------------------------------------- */

uint32_t ef_sa_degree(const ef_sa_params *p) { return p->k < p->n - 1 ? p->k : p->n - 1; }

static uint32_t holders_of(const ef_sa_params *p) { return ef_sa_degree(p) + 1; }

ef_status ef_sa_params_check(const ef_sa_params *p) {
    if (p->n < 2) return ef__fail(EF_ERR_INVALID, "secure aggregation needs at least 2 participants, got %u", p->n);
    if (p->k < 2 && p->k < p->n - 1)
        return ef__fail(EF_ERR_INVALID, "secure aggregation needs at least 2 neighbours (or n - 1), got %u", p->k);
    if (p->k < p->n - 1 && p->k % 2 != 0)
        return ef__fail(EF_ERR_INVALID, "the neighbour count must be even (or >= n - 1 = %u), got %u", p->n - 1, p->k);
    uint32_t h = holders_of(p);
    if (p->t < 1 || p->t > h)
        return ef__fail(EF_ERR_INVALID, "the threshold must be 1..%u (neighbours + 1), got %u", h, p->t);
    if (p->bits < 1 || p->bits > 32)
        return ef__fail(EF_ERR_INVALID, "the modulus must be 2^1..2^32, got 2^%d", p->bits);
    if (p->d == 0) return ef__fail(EF_ERR_INVALID, "the vector to aggregate is empty");
    return EF_OK;
}

uint32_t ef_sa_default_k(uint32_t n) {
    uint32_t lg = 0;
    while (lg < 32 && (1ull << lg) < n) lg++;
    uint32_t k = 2 * lg;
    k += k % 2;
    return n >= 2 && k >= n - 1 ? n - 1 : k;
}

uint32_t ef_sa_default_t(uint32_t n, uint32_t k) {
    uint32_t h = (k < n - 1 ? k : n - 1) + 1;
    return h / 2 + 1;
}

int ef_sa_is_neighbor(const ef_sa_params *p, uint32_t a, uint32_t b) {
    if (a == b || a >= p->n || b >= p->n) return 0;
    uint32_t g = ef_sa_degree(p);
    if (g == p->n - 1) return 1;
    uint32_t dist = a > b ? a - b : b - a;
    if (p->n - dist < dist) dist = p->n - dist;
    return dist <= g / 2;
}

void ef_sa_neighbors(const ef_sa_params *p, uint32_t me, uint32_t *out) {
    uint32_t m = 0;
    for (uint32_t i = 0; i < p->n && m < ef_sa_degree(p); i++)
        if (ef_sa_is_neighbor(p, me, i)) out[m++] = i;
}

/* Position of neighbour w in v's sorted neighbour list; v itself is the last
 * holder slot (the degree). */
static uint32_t slot_of(const ef_sa_params *p, uint32_t v, uint32_t w) {
    uint32_t g = ef_sa_degree(p);
    if (w == v) return g;
    if (g == p->n - 1) return w < v ? w : w - 1;
    /* ring: count neighbours of v below w */
    uint32_t s = 0;
    for (uint32_t j = 1; j <= g / 2; j++) {
        uint32_t a = (v + j) % p->n, b = (v + p->n - j) % p->n;
        s += a < w;
        s += b < w;
    }
    return s;
}

/* ---- key derivation ---------------------------------------------------------- */

static void put_ad(uint8_t ad[16], uint64_t round, uint32_t from, uint32_t to) {
    ef__wr64(ad, round);
    ef__wr32(ad + 8, from);
    ef__wr32(ad + 12, to);
}

/* BLAKE2b-256(dh || pk of the lower index || pk of the higher || round || label). */
static ef_status derive(uint8_t out[32], const uint8_t sk[32], const uint8_t peer_pk[32],
                        const uint8_t my_pk[32], uint32_t me, uint32_t peer, uint64_t round,
                        const char *label) {
    uint8_t dh[32], r[8];
    if (crypto_scalarmult(dh, sk, peer_pk) != 0) {
        sodium_memzero(dh, sizeof dh);
        return ef__fail(EF_ERR_FORMAT, "participant %u sent an invalid (low-order) public key", peer);
    }
    ef__wr64(r, round);
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, dh, sizeof dh);
    crypto_generichash_update(&st, me < peer ? my_pk : peer_pk, PK);
    crypto_generichash_update(&st, me < peer ? peer_pk : my_pk, PK);
    crypto_generichash_update(&st, r, sizeof r);
    crypto_generichash_update(&st, (const uint8_t *)label, strlen(label));
    crypto_generichash_final(&st, out, 32);
    sodium_memzero(dh, sizeof dh);
    sodium_memzero(&st, sizeof st);
    return EF_OK;
}

static int all_zero(const uint8_t *b, size_t n) {
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) acc |= b[i];
    return acc == 0;
}

/* ---- client -------------------------------------------------------------------- */

struct ef_sa_client {
    ef_sa_params p;
    uint32_t me, g;
    int stage; /* next expected call: 1 advertise, 2 share, 3 mask, 4 unmask */
    ef__drbg rng;
    uint8_t c_sk[32], c_pk[32], s_sk[32], s_pk[32], b[32];
    uint32_t *nb;       /* (g) neighbours, sorted */
    uint8_t *peer_c_pk; /* (g, 32) */
    uint8_t *peer_s_pk; /* (g, 32) */
    uint8_t *in_u1;     /* (g) advertised */
    uint8_t *in_u2;     /* (g) shared with me */
    uint8_t *revealed;  /* (g + 1): 0 nothing, 1 + kind */
    ef__ss_share *sh_b, *sh_s; /* (g + 1): shares I hold; slot g: my own */
};

void ef_sa_client_free(ef_sa_client *c) {
    if (!c) return;
    uint32_t h = c->g + 1;
    if (c->sh_b) sodium_memzero(c->sh_b, h * sizeof *c->sh_b);
    if (c->sh_s) sodium_memzero(c->sh_s, h * sizeof *c->sh_s);
    ef_free(c->sh_b);
    ef_free(c->sh_s);
    ef_free(c->nb);
    ef_free(c->peer_c_pk);
    ef_free(c->peer_s_pk);
    ef_free(c->in_u1);
    ef_free(c->in_u2);
    ef_free(c->revealed);
    sodium_memzero(c, sizeof *c);
    ef_free(c);
}

ef_status ef_sa_client_new(ef_sa_client **out, const ef_sa_params *p, uint32_t me,
                           const uint8_t *key) {
    *out = NULL;
    ef_status st = ef_sa_params_check(p);
    if (st != EF_OK) return st;
    if (me >= p->n) return ef__fail(EF_ERR_INVALID, "participant %u of %u", me, p->n);
    if (sodium_init() < 0) return ef__fail(EF_ERR_INTERNAL, "libsodium failed to initialize");
    ef_sa_client *c = ef_calloc(1, sizeof *c);
    if (!c) return ef__fail(EF_ERR_NOMEM, "out of memory");
    c->p = *p;
    c->me = me;
    c->g = ef_sa_degree(p);
    uint32_t g = c->g, h = g + 1;
    c->nb = ef_malloc(g * sizeof *c->nb);
    c->peer_c_pk = ef_calloc(g, PK);
    c->peer_s_pk = ef_calloc(g, PK);
    c->in_u1 = ef_calloc(g, 1);
    c->in_u2 = ef_calloc(g, 1);
    c->revealed = ef_calloc(h, 1);
    c->sh_b = ef_calloc(h, sizeof *c->sh_b);
    c->sh_s = ef_calloc(h, sizeof *c->sh_s);
    if (!c->nb || !c->peer_c_pk || !c->peer_s_pk || !c->in_u1 || !c->in_u2 || !c->revealed ||
        !c->sh_b || !c->sh_s) {
        ef_sa_client_free(c);
        return ef__fail(EF_ERR_NOMEM, "out of memory");
    }
    ef_sa_neighbors(p, me, c->nb);
    if (key) {
        ef__drbg_seed(&c->rng, key, ((uint64_t)me << 32) ^ p->round);
    } else if ((st = ef__drbg_seed_random(&c->rng)) != EF_OK) {
        ef_sa_client_free(c);
        return st;
    }
    ef__drbg_bytes(&c->rng, c->c_sk, 32);
    ef__drbg_bytes(&c->rng, c->s_sk, 32);
    ef__drbg_bytes(&c->rng, c->b, 32);
    crypto_scalarmult_base(c->c_pk, c->c_sk);
    crypto_scalarmult_base(c->s_pk, c->s_sk);
    c->stage = 1;
    *out = c;
    return EF_OK;
}

static ef_status client_stage(const ef_sa_client *c, int want, const char *what) {
    if (c->stage != want)
        return ef__fail(EF_ERR_STATE, "secure aggregation: %s out of order (stage %d, expected %d)",
                        what, c->stage, want);
    return EF_OK;
}

ef_status ef_sa_client_advertise(ef_sa_client *c, uint8_t out[2 * PK]) {
    ef_status st = client_stage(c, 1, "advertising keys");
    if (st != EF_OK) return st;
    memcpy(out, c->c_pk, PK);
    memcpy(out + PK, c->s_pk, PK);
    c->stage = 2;
    return EF_OK;
}

/* Index of neighbour `who` in c->nb, or -1. */
static int nb_index(const ef_sa_client *c, uint32_t who) {
    if (!ef_sa_is_neighbor(&c->p, c->me, who)) return -1;
    return (int)slot_of(&c->p, c->me, who);
}

ef_status ef_sa_client_share(ef_sa_client *c, const uint8_t *keys, size_t len, uint8_t **out,
                             size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    ef_status st = client_stage(c, 2, "sharing keys");
    if (st != EF_OK) return st;
    const size_t ent = 4 + 2 * PK;
    if (len < 4) return ef__fail(EF_ERR_FORMAT, "secure aggregation: truncated key list");
    uint32_t m = ef__rd32(keys);
    if (m > c->g || len != 4 + (size_t)m * ent)
        return ef__fail(EF_ERR_FORMAT, "secure aggregation: key list of %zu bytes for %u keys", len, m);
    /* validate everything before keeping anything */
    uint8_t *seen = ef_calloc(c->g ? c->g : 1, 1);
    if (!seen) return ef__fail(EF_ERR_NOMEM, "out of memory");
    for (uint32_t i = 0; i < m && st == EF_OK; i++) {
        const uint8_t *e = keys + 4 + (size_t)i * ent;
        uint32_t who = ef__rd32(e);
        int j = nb_index(c, who);
        if (j < 0) st = ef__fail(EF_ERR_FORMAT, "secure aggregation: keys of %u, not a neighbour of %u", who, c->me);
        else if (seen[j]) st = ef__fail(EF_ERR_FORMAT, "secure aggregation: keys of %u listed twice", who);
        else if (all_zero(e + 4, PK) || all_zero(e + 4 + PK, PK))
            st = ef__fail(EF_ERR_FORMAT, "secure aggregation: empty public key from %u", who);
        else seen[j] = 1;
    }
    ef_free(seen);
    if (st != EF_OK) return st;
    uint32_t holders = m + 1; /* the neighbours that advertised, and me */
    if (holders < c->p.t)
        return ef__fail(EF_ERR_STATE, "secure aggregation: %u holders for my secrets, %u needed",
                        holders, c->p.t);

    uint32_t *xs = ef_malloc(holders * sizeof *xs);
    ef__ss_share *sb = ef_malloc(holders * sizeof *sb), *ss = ef_malloc(holders * sizeof *ss);
    size_t olen = 4 + (size_t)m * (4 + EF_SA_CT_BYTES);
    uint8_t *o = ef_malloc(olen);
    uint8_t key[32], pt[EF_SA_PT_BYTES], ad[16];
    if (!xs || !sb || !ss || !o) {
        st = ef__fail(EF_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < m; i++) {
        const uint8_t *e = keys + 4 + (size_t)i * ent;
        uint32_t who = ef__rd32(e);
        int j = nb_index(c, who);
        memcpy(c->peer_c_pk + (size_t)j * PK, e + 4, PK);
        memcpy(c->peer_s_pk + (size_t)j * PK, e + 4 + PK, PK);
        c->in_u1[j] = 1;
        xs[i] = who + 1;
    }
    xs[m] = c->me + 1;
    if ((st = ef__shamir_split(c->b, (int)c->p.t, (int)holders, xs, &c->rng, sb)) != EF_OK ||
        (st = ef__shamir_split(c->s_sk, (int)c->p.t, (int)holders, xs, &c->rng, ss)) != EF_OK)
        goto done;
    c->sh_b[c->g] = sb[m];
    c->sh_s[c->g] = ss[m];
    ef__wr32(o, m);
    for (uint32_t i = 0; i < m; i++) {
        uint32_t who = xs[i] - 1;
        int j = nb_index(c, who);
        if ((st = derive(key, c->c_sk, c->peer_c_pk + (size_t)j * PK, c->c_pk, c->me, who,
                         c->p.round, "edgefl-secagg-enc")) != EF_OK)
            goto done;
        ef__wr32(pt, c->me);
        ef__wr32(pt + 4, who);
        ef__ss_share_pack(pt + 8, &sb[i]);
        ef__ss_share_pack(pt + 8 + EF__SS_SHARE_BYTES, &ss[i]);
        uint8_t *e = o + 4 + (size_t)i * (4 + EF_SA_CT_BYTES);
        ef__wr32(e, who);
        uint8_t *nonce = e + 4;
        ef__drbg_bytes(&c->rng, nonce, 24);
        put_ad(ad, c->p.round, c->me, who);
        unsigned long long clen = 0;
        crypto_aead_xchacha20poly1305_ietf_encrypt(nonce + 24, &clen, pt, sizeof pt, ad, sizeof ad,
                                                   NULL, nonce, key);
    }
    c->stage = 3;
    *out = o;
    *out_len = olen;
    o = NULL;
done:
    sodium_memzero(key, sizeof key);
    sodium_memzero(pt, sizeof pt);
    if (sb) sodium_memzero(sb, holders * sizeof *sb);
    if (ss) sodium_memzero(ss, holders * sizeof *ss);
    ef_free(xs);
    ef_free(sb);
    ef_free(ss);
    ef_free(o);
    return st;
}

ef_status ef_sa_client_mask(ef_sa_client *c, const uint8_t *fwd, size_t len, const uint32_t *x,
                            uint32_t *y) {
    ef_status st = client_stage(c, 3, "masking");
    if (st != EF_OK) return st;
    const size_t ent = 4 + EF_SA_CT_BYTES;
    if (len < 4) return ef__fail(EF_ERR_FORMAT, "secure aggregation: truncated share list");
    uint32_t m = ef__rd32(fwd);
    if (m > c->g || len != 4 + (size_t)m * ent)
        return ef__fail(EF_ERR_FORMAT, "secure aggregation: share list of %zu bytes for %u shares", len, m);
    uint32_t g = c->g;
    /* decrypt into temporaries; keep them only if every one is valid */
    ef__ss_share *tb = ef_calloc(g ? g : 1, sizeof *tb), *ts = ef_calloc(g ? g : 1, sizeof *ts);
    uint8_t *got = ef_calloc(g ? g : 1, 1);
    uint8_t key[32], pt[EF_SA_PT_BYTES], ad[16];
    if (!tb || !ts || !got) {
        st = ef__fail(EF_ERR_NOMEM, "out of memory");
        goto done;
    }
    for (uint32_t i = 0; i < m; i++) {
        const uint8_t *e = fwd + 4 + (size_t)i * ent;
        uint32_t from = ef__rd32(e);
        int j = nb_index(c, from);
        if (j < 0 || !c->in_u1[j]) {
            st = ef__fail(EF_ERR_FORMAT, "secure aggregation: shares from %u, who is not a neighbour with keys", from);
            goto done;
        }
        if (got[j]) {
            st = ef__fail(EF_ERR_FORMAT, "secure aggregation: two share sets from %u", from);
            goto done;
        }
        if ((st = derive(key, c->c_sk, c->peer_c_pk + (size_t)j * PK, c->c_pk, c->me, from,
                         c->p.round, "edgefl-secagg-enc")) != EF_OK)
            goto done;
        put_ad(ad, c->p.round, from, c->me);
        unsigned long long plen = 0;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &plen, NULL, e + 4 + 24,
                                                       EF_SA_CT_BYTES - 24, ad, sizeof ad,
                                                       e + 4, key) != 0 ||
            plen != sizeof pt || ef__rd32(pt) != from || ef__rd32(pt + 4) != c->me) {
            st = ef__fail(EF_ERR_FORMAT, "secure aggregation: the shares from %u do not decrypt", from);
            goto done;
        }
        if ((st = ef__ss_share_unpack(&tb[j], pt + 8)) != EF_OK ||
            (st = ef__ss_share_unpack(&ts[j], pt + 8 + EF__SS_SHARE_BYTES)) != EF_OK)
            goto done;
        if (tb[j].x != c->me + 1 || ts[j].x != c->me + 1) {
            st = ef__fail(EF_ERR_FORMAT, "secure aggregation: the shares from %u are not for %u", from, c->me);
            goto done;
        }
        got[j] = 1;
    }
    for (uint32_t j = 0; j < g; j++)
        if (got[j]) {
            c->sh_b[j] = tb[j];
            c->sh_s[j] = ts[j];
            c->in_u2[j] = 1;
        }
    uint32_t mm = ef__mod_mask(c->p.bits);
    if (y != x) memcpy(y, x, c->p.d * sizeof *y);
    for (size_t i = 0; i < c->p.d; i++) y[i] &= mm;
    if (!c->p.no_mask) ef__mask_apply(y, c->p.d, c->b, STREAM_SELF, +1, mm);
    for (uint32_t j = 0; j < g && !c->p.no_mask; j++) {
        if (!c->in_u2[j]) continue;
        uint32_t v = c->nb[j];
        if ((st = derive(key, c->s_sk, c->peer_s_pk + (size_t)j * PK, c->s_pk, c->me, v,
                         c->p.round, "edgefl-secagg-mask")) != EF_OK)
            goto done;
        ef__mask_apply(y, c->p.d, key, STREAM_PAIR, c->me < v ? +1 : -1, mm);
    }
    c->stage = 4;
done:
    sodium_memzero(key, sizeof key);
    sodium_memzero(pt, sizeof pt);
    if (tb) sodium_memzero(tb, (g ? g : 1) * sizeof *tb);
    if (ts) sodium_memzero(ts, (g ? g : 1) * sizeof *ts);
    ef_free(tb);
    ef_free(ts);
    ef_free(got);
    return st;
}

ef_status ef_sa_client_unmask(ef_sa_client *c, const uint8_t *req, size_t len, uint8_t **out,
                              size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    /* a repeated request (the first answer was lost) is allowed after stage 4 */
    if (c->stage != 4 && c->stage != 5) return client_stage(c, 4, "unmasking");
    if (len < 8) return ef__fail(EF_ERR_FORMAT, "secure aggregation: truncated unmask request");
    uint32_t na = ef__rd32(req), nd = ef__rd32(req + 4);
    if (na > c->g + 1 || nd > c->g || len != 8 + 4 * ((size_t)na + nd))
        return ef__fail(EF_ERR_FORMAT, "secure aggregation: unmask request of %zu bytes for %u + %u peers", len, na, nd);
    uint32_t h = c->g + 1;
    uint8_t *want = ef_calloc(h, 1); /* 1 + kind per holder slot */
    if (!want) return ef__fail(EF_ERR_NOMEM, "out of memory");
    ef_status st = EF_OK;
    for (uint32_t i = 0; i < na + nd && st == EF_OK; i++) {
        uint32_t who = ef__rd32(req + 8 + 4 * (size_t)i);
        int kind = i < na ? EF_SA_SHARE_B : EF_SA_SHARE_S;
        int j = who == c->me ? (int)c->g : nb_index(c, who);
        if (j < 0 || (j < (int)c->g && !c->in_u2[j]))
            st = ef__fail(EF_ERR_STATE, "secure aggregation: refusing to unmask: %u did not share with %u", who, c->me);
        else if (who == c->me && kind == EF_SA_SHARE_S)
            st = ef__fail(EF_ERR_STATE, "secure aggregation: refusing to unmask: asked for my own key while I am alive");
        else if (want[j])
            st = ef__fail(EF_ERR_STATE, "secure aggregation: refusing to unmask: %u named twice (both shares of one peer)", who);
        else if (c->revealed[j] && c->revealed[j] != 1 + kind)
            st = ef__fail(EF_ERR_STATE, "secure aggregation: refusing to unmask: the other share of %u was already revealed", who);
        else want[j] = (uint8_t)(1 + kind);
    }
    if (st != EF_OK) {
        ef_free(want);
        return st;
    }
    const size_t ent = 4 + 1 + EF__SS_SHARE_BYTES;
    size_t olen = 4 + (size_t)(na + nd) * ent;
    uint8_t *o = ef_malloc(olen);
    if (!o) {
        ef_free(want);
        return ef__fail(EF_ERR_NOMEM, "out of memory");
    }
    ef__wr32(o, na + nd);
    size_t off = 4;
    for (uint32_t j = 0; j < h; j++) {
        if (!want[j]) continue;
        int kind = want[j] - 1;
        ef__wr32(o + off, j == c->g ? c->me : c->nb[j]);
        o[off + 4] = (uint8_t)kind;
        ef__ss_share_pack(o + off + 5, kind == EF_SA_SHARE_B ? &c->sh_b[j] : &c->sh_s[j]);
        c->revealed[j] = want[j];
        off += ent;
    }
    ef_free(want);
    c->stage = 5;
    *out = o;
    *out_len = olen;
    return EF_OK;
}

/* ---- server -------------------------------------------------------------------- */

enum { HEARD_KEYS = 1, HEARD_SHARES = 2, HEARD_MASKED = 4, HEARD_UNMASK = 8 };

struct ef_sa_server {
    ef_sa_params p;
    uint32_t g;
    int stage;
    char reason[200];
    uint8_t *c_pk, *s_pk; /* (n, 32) */
    uint8_t *heard;       /* (n) HEARD_* bits */
    uint8_t *in;          /* (n) still in after the closed stages */
    uint8_t *ct;          /* (n, g, CT): ciphertexts by recipient and sender slot */
    uint8_t *ct_have;     /* (n, g) */
    uint32_t *sum;        /* (d) running sum of masked vectors */
    ef__ss_share *sh;     /* (n, g + 1): revealed shares by owner and holder slot */
    uint8_t *sh_have;     /* (n, g + 1) */
    uint8_t *in_u2, *in_u3; /* (n) */
    uint32_t n_summed;
};

void ef_sa_server_free(ef_sa_server *s) {
    if (!s) return;
    if (s->sh) sodium_memzero(s->sh, (size_t)s->p.n * (s->g + 1) * sizeof *s->sh);
    ef_free(s->c_pk);
    ef_free(s->s_pk);
    ef_free(s->heard);
    ef_free(s->in);
    ef_free(s->ct);
    ef_free(s->ct_have);
    ef_free(s->sum);
    ef_free(s->sh);
    ef_free(s->sh_have);
    ef_free(s->in_u2);
    ef_free(s->in_u3);
    ef_free(s);
}

ef_status ef_sa_server_new(ef_sa_server **out, const ef_sa_params *p) {
    *out = NULL;
    ef_status st = ef_sa_params_check(p);
    if (st != EF_OK) return st;
    if (sodium_init() < 0) return ef__fail(EF_ERR_INTERNAL, "libsodium failed to initialize");
    ef_sa_server *s = ef_calloc(1, sizeof *s);
    if (!s) return ef__fail(EF_ERR_NOMEM, "out of memory");
    s->p = *p;
    s->g = ef_sa_degree(p);
    size_t n = p->n, g = s->g, nct;
    if (!ef__mul_size(n * g, EF_SA_CT_BYTES, &nct)) {
        ef_sa_server_free(s);
        return ef__fail(EF_ERR_RANGE, "secure aggregation: %zu x %zu ciphertexts overflow", n, g);
    }
    s->c_pk = ef_calloc(n, PK);
    s->s_pk = ef_calloc(n, PK);
    s->heard = ef_calloc(n, 1);
    s->in = ef_calloc(n, 1);
    s->ct = ef_malloc(nct ? nct : 1);
    s->ct_have = ef_calloc(n * g > 0 ? n * g : 1, 1);
    s->sum = ef_calloc(p->d, sizeof *s->sum);
    s->sh = ef_calloc(n * (g + 1), sizeof *s->sh);
    s->sh_have = ef_calloc(n * (g + 1), 1);
    s->in_u2 = ef_calloc(n, 1);
    s->in_u3 = ef_calloc(n, 1);
    if (!s->c_pk || !s->s_pk || !s->heard || !s->in || !s->ct || !s->ct_have || !s->sum ||
        !s->sh || !s->sh_have || !s->in_u2 || !s->in_u3) {
        ef_sa_server_free(s);
        return ef__fail(EF_ERR_NOMEM, "out of memory for secure aggregation of %zu participants", n);
    }
    memset(s->in, 1, n);
    s->stage = 1;
    *out = s;
    return EF_OK;
}

int ef_sa_server_stage(const ef_sa_server *s) { return s->stage; }
const char *ef_sa_server_abort_reason(const ef_sa_server *s) { return s->reason; }
int ef_sa_server_alive(const ef_sa_server *s, uint32_t i) { return i < s->p.n && s->in[i]; }
int ef_sa_server_included(const ef_sa_server *s, uint32_t i) {
    return i < s->p.n && s->in_u3[i] && s->stage == 5;
}

static ef_status server_accepts(const ef_sa_server *s, int stage, uint32_t from, int bit,
                                const char *what) {
    if (s->stage != stage)
        return ef__fail(EF_ERR_STATE, "secure aggregation: %s from %u in stage %d", what, from, s->stage);
    if (from >= s->p.n) return ef__fail(EF_ERR_FORMAT, "secure aggregation: %s from unknown participant %u", what, from);
    if (!s->in[from]) return ef__fail(EF_ERR_STATE, "secure aggregation: %s from %u, who dropped out", what, from);
    if (s->heard[from] & bit) return ef__fail(EF_ERR_STATE, "secure aggregation: second %s from %u", what, from);
    return EF_OK;
}

ef_status ef_sa_server_on_advertise(ef_sa_server *s, uint32_t from, const uint8_t *msg,
                                    size_t len) {
    ef_status st = server_accepts(s, 1, from, HEARD_KEYS, "keys");
    if (st != EF_OK) return st;
    if (len != 2 * PK) return ef__fail(EF_ERR_FORMAT, "secure aggregation: keys of %zu bytes from %u", len, from);
    if (all_zero(msg, PK) || all_zero(msg + PK, PK))
        return ef__fail(EF_ERR_FORMAT, "secure aggregation: empty public key from %u", from);
    memcpy(s->c_pk + (size_t)from * PK, msg, PK);
    memcpy(s->s_pk + (size_t)from * PK, msg + PK, PK);
    s->heard[from] |= HEARD_KEYS;
    return EF_OK;
}

ef_status ef_sa_server_on_shares(ef_sa_server *s, uint32_t from, const uint8_t *msg, size_t len) {
    ef_status st = server_accepts(s, 2, from, HEARD_SHARES, "shares");
    if (st != EF_OK) return st;
    const size_t ent = 4 + EF_SA_CT_BYTES;
    if (len < 4) return ef__fail(EF_ERR_FORMAT, "secure aggregation: truncated shares from %u", from);
    uint32_t m = ef__rd32(msg);
    if (m > s->g || len != 4 + (size_t)m * ent)
        return ef__fail(EF_ERR_FORMAT, "secure aggregation: shares of %zu bytes for %u peers from %u", len, m, from);
    /* exactly one ciphertext for every neighbour still in */
    uint32_t want = 0;
    for (uint32_t v = 0; v < s->p.n; v++) want += s->in[v] && ef_sa_is_neighbor(&s->p, from, v);
    if (m != want)
        return ef__fail(EF_ERR_FORMAT, "secure aggregation: %u shares from %u, %u neighbours are in", m, from, want);
    for (uint32_t i = 0; i < m; i++) {
        uint32_t to = ef__rd32(msg + 4 + (size_t)i * ent);
        if (!ef_sa_is_neighbor(&s->p, from, to) || !s->in[to])
            return ef__fail(EF_ERR_FORMAT, "secure aggregation: a share from %u for %u, not a neighbour still in", from, to);
        for (uint32_t k2 = 0; k2 < i; k2++)
            if (ef__rd32(msg + 4 + (size_t)k2 * ent) == to)
                return ef__fail(EF_ERR_FORMAT, "secure aggregation: two shares from %u for %u", from, to);
    }
    for (uint32_t i = 0; i < m; i++) {
        const uint8_t *e = msg + 4 + (size_t)i * ent;
        uint32_t to = ef__rd32(e);
        size_t slot = (size_t)to * s->g + slot_of(&s->p, to, from);
        memcpy(s->ct + slot * EF_SA_CT_BYTES, e + 4, EF_SA_CT_BYTES);
        s->ct_have[slot] = 1;
    }
    s->heard[from] |= HEARD_SHARES;
    return EF_OK;
}

ef_status ef_sa_server_on_masked(ef_sa_server *s, uint32_t from, const uint32_t *y) {
    ef_status st = server_accepts(s, 3, from, HEARD_MASKED, "masked input");
    if (st != EF_OK) return st;
    uint32_t mm = ef__mod_mask(s->p.bits);
    for (size_t i = 0; i < s->p.d; i++) s->sum[i] = (s->sum[i] + y[i]) & mm;
    s->heard[from] |= HEARD_MASKED;
    return EF_OK;
}

ef_status ef_sa_server_on_unmask(ef_sa_server *s, uint32_t from, const uint8_t *msg, size_t len) {
    ef_status st = server_accepts(s, 4, from, HEARD_UNMASK, "unmask answer");
    if (st != EF_OK) return st;
    const size_t ent = 4 + 1 + EF__SS_SHARE_BYTES;
    if (len < 4) return ef__fail(EF_ERR_FORMAT, "secure aggregation: truncated unmask answer from %u", from);
    uint32_t m = ef__rd32(msg);
    if (m > s->g + 1 || len != 4 + (size_t)m * ent)
        return ef__fail(EF_ERR_FORMAT, "secure aggregation: unmask answer of %zu bytes for %u shares from %u", len, m, from);
    ef__ss_share tmp;
    for (uint32_t i = 0; i < m; i++) {
        const uint8_t *e = msg + 4 + (size_t)i * ent;
        uint32_t about = ef__rd32(e);
        int kind = e[4];
        if (about >= s->p.n || (about != from && !ef_sa_is_neighbor(&s->p, from, about)))
            return ef__fail(EF_ERR_FORMAT, "secure aggregation: %u sent a share of %u, not its neighbour", from, about);
        if (kind == EF_SA_SHARE_B ? !s->in_u3[about] : kind != EF_SA_SHARE_S || !s->in_u2[about] || s->in_u3[about])
            return ef__fail(EF_ERR_FORMAT, "secure aggregation: %u sent an unrequested share of %u", from, about);
        if ((st = ef__ss_share_unpack(&tmp, e + 5)) != EF_OK) return st;
        if (tmp.x != from + 1)
            return ef__fail(EF_ERR_FORMAT, "secure aggregation: %u sent a share held by someone else", from);
        for (uint32_t k2 = 0; k2 < i; k2++)
            if (ef__rd32(msg + 4 + (size_t)k2 * ent) == about)
                return ef__fail(EF_ERR_FORMAT, "secure aggregation: %u sent two shares of %u", from, about);
    }
    for (uint32_t i = 0; i < m; i++) {
        const uint8_t *e = msg + 4 + (size_t)i * ent;
        uint32_t about = ef__rd32(e);
        size_t slot = (size_t)about * (s->g + 1) + slot_of(&s->p, about, from);
        ef__ss_share_unpack(&s->sh[slot], e + 5);
        s->sh_have[slot] = 1;
    }
    sodium_memzero(&tmp, sizeof tmp);
    s->heard[from] |= HEARD_UNMASK;
    return EF_OK;
}

static ef_status server_abort(ef_sa_server *s, const char *fmt, uint32_t a, uint32_t b, uint32_t c) {
    snprintf(s->reason, sizeof s->reason, fmt, a, b, c);
    s->stage = 0;
    return ef__fail(EF_ERR_STATE, "secure aggregation aborted: %s", s->reason);
}

/* Recovers participant v's secret (self-mask seed or key, whichever its
 * holders revealed) from t of the revealed shares. */
static ef_status recover(ef_sa_server *s, uint32_t v, uint8_t secret[32]) {
    uint32_t h = s->g + 1, m = 0;
    ef__ss_share *pick = ef_malloc(h * sizeof *pick);
    if (!pick) return ef__fail(EF_ERR_NOMEM, "out of memory");
    for (uint32_t j = 0; j < h && m < s->p.t; j++) {
        size_t slot = (size_t)v * h + j;
        if (s->sh_have[slot]) pick[m++] = s->sh[slot];
    }
    ef_status st;
    if (m < s->p.t)
        st = server_abort(s, "participant %u: %u of the %u shares needed were revealed", v, m, s->p.t);
    else
        st = ef__shamir_combine(pick, (int)m, (int)s->p.t, secret);
    sodium_memzero(pick, h * sizeof *pick);
    ef_free(pick);
    return st;
}

static ef_status unmask_sum(ef_sa_server *s) {
    uint32_t mm = ef__mod_mask(s->p.bits);
    uint8_t secret[32], seed[32], pk[32];
    ef_status st = EF_OK;
    for (uint32_t v = 0; v < s->p.n && st == EF_OK; v++) {
        if (s->in_u3[v]) {
            if ((st = recover(s, v, secret)) != EF_OK) break;
            if (!s->p.no_mask) ef__mask_apply(s->sum, s->p.d, secret, STREAM_SELF, -1, mm);
        } else if (s->in_u2[v]) {
            if ((st = recover(s, v, secret)) != EF_OK) break;
            crypto_scalarmult_base(pk, secret);
            if (sodium_memcmp(pk, s->s_pk + (size_t)v * PK, PK) != 0) {
                st = server_abort(s, "participant %u: the key recovered from %u shares (threshold %u) does not match its public key", v, s->p.t, s->p.t);
                break;
            }
            /* every survivor u next to v masked with v: take its term out */
            for (uint32_t u = 0; u < s->p.n && st == EF_OK && !s->p.no_mask; u++) {
                if (!s->in_u3[u] || !ef_sa_is_neighbor(&s->p, u, v)) continue;
                st = derive(seed, secret, s->s_pk + (size_t)u * PK, s->s_pk + (size_t)v * PK, v, u,
                            s->p.round, "edgefl-secagg-mask");
                if (st == EF_OK) ef__mask_apply(s->sum, s->p.d, seed, STREAM_PAIR, u < v ? -1 : +1, mm);
            }
        }
    }
    sodium_memzero(secret, sizeof secret);
    sodium_memzero(seed, sizeof seed);
    return st;
}

ef_status ef_sa_server_close(ef_sa_server *s) {
    static const int bit[5] = {0, HEARD_KEYS, HEARD_SHARES, HEARD_MASKED, HEARD_UNMASK};
    if (s->stage < 1 || s->stage > 4)
        return ef__fail(EF_ERR_STATE, "secure aggregation: no stage to close (stage %d)", s->stage);
    int stg = s->stage;
    uint32_t alive = 0;
    for (uint32_t i = 0; i < s->p.n; i++)
        if (s->in[i] && !(s->heard[i] & bit[stg])) s->in[i] = 0;
    if (stg == 1) {
        /* a client whose neighbours that advertised and itself are fewer
         * than t could never have its secrets recovered: it is left out,
         * which can shrink its neighbours' holders in turn */
        for (int changed = 1; changed;) {
            changed = 0;
            for (uint32_t i = 0; i < s->p.n; i++) {
                if (!s->in[i]) continue;
                uint32_t h = 1;
                for (uint32_t v = 0; v < s->p.n; v++) h += s->in[v] && ef_sa_is_neighbor(&s->p, i, v);
                if (h < s->p.t) s->in[i] = 0, changed = 1;
            }
        }
    }
    for (uint32_t i = 0; i < s->p.n; i++) alive += s->in[i];
    static const char *names[5] = {"", "advertised keys", "shared keys", "sent masked inputs",
                                   "answered the unmask request"};
    if (alive < s->p.t) {
        char fmt[120];
        snprintf(fmt, sizeof fmt, "%%u of %%u participants %s, the threshold is %%u", names[stg]);
        return server_abort(s, fmt, alive, s->p.n, s->p.t);
    }
    if (stg == 2)
        for (uint32_t i = 0; i < s->p.n; i++) s->in_u2[i] = s->in[i];
    if (stg == 3) {
        s->n_summed = 0;
        for (uint32_t i = 0; i < s->p.n; i++) {
            s->in_u3[i] = s->in[i];
            s->n_summed += s->in[i];
        }
    }
    s->stage = stg + 1;
    if (stg == 4) {
        ef_status st = unmask_sum(s);
        if (st != EF_OK) return st;
    }
    return EF_OK;
}

ef_status ef_sa_server_message_for(ef_sa_server *s, uint32_t to, uint8_t **out,
                                   size_t *out_len) {
    *out = NULL;
    *out_len = 0;
    if (to >= s->p.n || !s->in[to])
        return ef__fail(EF_ERR_STATE, "secure aggregation: no message for %u, who is not in", to);
    uint32_t *nb = ef_malloc((s->g ? s->g : 1) * sizeof *nb);
    if (!nb) return ef__fail(EF_ERR_NOMEM, "out of memory");
    ef_sa_neighbors(&s->p, to, nb);
    uint8_t *o = NULL;
    size_t len = 0;
    uint32_t m = 0;
    ef_status st = EF_OK;
    if (s->stage == 2) { /* KEYS */
        o = ef_malloc(4 + (size_t)s->g * (4 + 2 * PK));
        if (!o) goto oom;
        len = 4;
        for (uint32_t j = 0; j < s->g; j++) {
            uint32_t v = nb[j];
            if (!s->in[v]) continue;
            ef__wr32(o + len, v);
            memcpy(o + len + 4, s->c_pk + (size_t)v * PK, PK);
            memcpy(o + len + 4 + PK, s->s_pk + (size_t)v * PK, PK);
            len += 4 + 2 * PK;
            m++;
        }
    } else if (s->stage == 3) { /* FORWARD */
        o = ef_malloc(4 + (size_t)s->g * (4 + EF_SA_CT_BYTES));
        if (!o) goto oom;
        len = 4;
        for (uint32_t j = 0; j < s->g; j++) {
            uint32_t v = nb[j];
            size_t slot = (size_t)to * s->g + j;
            if (!s->in[v] || !s->ct_have[slot]) continue;
            ef__wr32(o + len, v);
            memcpy(o + len + 4, s->ct + slot * EF_SA_CT_BYTES, EF_SA_CT_BYTES);
            len += 4 + EF_SA_CT_BYTES;
            m++;
        }
    } else if (s->stage == 4) { /* UNMASK: alive neighbours and me, then dropped */
        o = ef_malloc(8 + 4 * ((size_t)s->g + 1));
        if (!o) goto oom;
        uint32_t na = 0, nd = 0;
        len = 8;
        ef__wr32(o + len, to), len += 4, na++;
        for (uint32_t j = 0; j < s->g; j++)
            if (s->in_u3[nb[j]]) ef__wr32(o + len, nb[j]), len += 4, na++;
        for (uint32_t j = 0; j < s->g; j++)
            if (s->in_u2[nb[j]] && !s->in_u3[nb[j]]) ef__wr32(o + len, nb[j]), len += 4, nd++;
        ef__wr32(o, na);
        ef__wr32(o + 4, nd);
    } else {
        st = ef__fail(EF_ERR_STATE, "secure aggregation: no message to send in stage %d", s->stage);
    }
    if (o && s->stage != 4) ef__wr32(o, m);
    ef_free(nb);
    if (st != EF_OK) {
        ef_free(o);
        return st;
    }
    *out = o;
    *out_len = len;
    return EF_OK;
oom:
    ef_free(nb);
    return ef__fail(EF_ERR_NOMEM, "out of memory");
}

ef_status ef_sa_server_result(const ef_sa_server *s, const uint32_t **sum, uint32_t *n_summed) {
    if (s->stage != 5)
        return ef__fail(EF_ERR_STATE, "secure aggregation: no result (stage %d%s%s)", s->stage,
                        s->stage == 0 ? ": " : "", s->reason);
    *sum = s->sum;
    *n_summed = s->n_summed;
    return EF_OK;
}
