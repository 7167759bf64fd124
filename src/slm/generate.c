/*
 * Generation loop, perplexity scoring and incremental UTF-8 for streaming
 * output, on top of ef_slm_eval and the sampler.
 */
#include <math.h>

#include "model.h"

ef_status ef_slm_generate(ef_slm_ctx *c, ef_slm_sampler *s, const int32_t *prompt, int n_prompt, int n_gen,
                          int stop_at_eos, ef_slm_token_fn on_token, void *user, ef_slm_gen_stats *stats) {
    ef_slm_gen_stats st = {0};
    if (stats) *stats = st;
    if (n_prompt < 1 || !prompt) return ef__fail(EF_ERR_INVALID, "generate: the prompt has no tokens");
    if (n_gen < 0) return ef__fail(EF_ERR_INVALID, "generate: negative token count %d", n_gen);
    const ef_slm_model *m = ef__slm_ctx_model(c);
    float *logits = ef_malloc(sizeof(float) * (size_t)m->cfg.vocab);
    if (!logits) return EF_ERR_NOMEM;
    double t0 = ef_now();
    ef_status rc = ef_slm_eval(c, prompt, n_prompt, logits, 0);
    if (rc != EF_OK) goto done;
    double t1 = ef_now(), tfirst = t1;
    st.n_prompt = n_prompt;
    st.prompt_seconds = t1 - t0;
    for (int i = 0; i < n_gen; i++) {
        int32_t tok = ef_slm_sample(s, logits);
        if (i == 0) tfirst = ef_now();
        st.n_gen++;
        st.gen_seconds = ef_now() - tfirst;
        int stop = on_token ? on_token(user, tok) : 0;
        if (stop_at_eos && tok == m->cfg.eos_id) {
            st.stopped_eos = 1;
            break;
        }
        if (stop || i == n_gen - 1) break;
        if (ef_slm_ctx_pos(c) >= ef_slm_ctx_size(c)) {
            st.stopped_ctx = 1;
            break;
        }
        if ((rc = ef_slm_eval(c, &tok, 1, logits, 0)) != EF_OK) goto done;
    }
done:
    ef_free(logits);
    if (stats) *stats = st;
    return rc;
}

ef_status ef_slm_score(ef_slm_ctx *c, const int32_t *tokens, int64_t n, int window, double *nll,
                       int64_t *n_scored) {
    *nll = 0.0;
    *n_scored = 0;
    const ef_slm_model *m = ef__slm_ctx_model(c);
    const int V = m->cfg.vocab;
    if (window == 0) window = ef_slm_ctx_size(c);
    if (window < 2 || window > ef_slm_ctx_size(c))
        return ef__fail(EF_ERR_INVALID, "score: window %d outside 2..%d (the context size)", window,
                        ef_slm_ctx_size(c));
    if (n < 2 || !tokens) return ef__fail(EF_ERR_INVALID, "score: need at least 2 tokens, got %lld", (long long)n);
    for (int64_t i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= V)
            return ef__fail(EF_ERR_INVALID, "score: token %d at index %lld is outside the vocabulary of %d",
                            (int)tokens[i], (long long)i, V);
    const int chunk = ef__slm_ctx_batch(c);
    float *lg = ef_malloc(sizeof(float) * (size_t)chunk * (size_t)V);
    if (!lg) return EF_ERR_NOMEM;
    double sum = 0.0;
    int64_t cnt = 0;
    ef_status rc = EF_OK;
    for (int64_t start = 0; start < n - 1;) {
        int64_t len = n - start < window ? n - start : window;
        ef_slm_ctx_rewind(c, 0);
        for (int64_t i = 0; i < len; i += chunk) {
            int T = (int)(len - i < chunk ? len - i : chunk);
            if ((rc = ef_slm_eval(c, tokens + start + i, T, lg, 1)) != EF_OK) goto done;
            for (int t = 0; t < T; t++) {
                int64_t pos = i + t; /* within the window */
                if (pos + 1 >= len) break;
                const float *row = lg + (size_t)t * V;
                float mx = row[0];
                for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
                double se = 0.0;
                for (int j = 0; j < V; j++) se += exp((double)row[j] - mx);
                sum += log(se) + mx - (double)row[tokens[start + pos + 1]];
                cnt++;
            }
        }
        start += len - 1;
    }
done:
    ef_free(lg);
    ef_slm_ctx_rewind(c, 0);
    if (rc == EF_OK) {
        *nll = sum;
        *n_scored = cnt;
    }
    return rc;
}

/* ---- UTF-8 ------------------------------------------------------------------ */

/* Length of the sequence a lead byte starts, or 0 for a byte that cannot lead. */
static int lead_len(unsigned char b) {
    if (b < 0x80) return 1;
    if (b >= 0xc2 && b <= 0xdf) return 2;
    if (b >= 0xe0 && b <= 0xef) return 3;
    if (b >= 0xf0 && b <= 0xf4) return 4;
    return 0;
}

/* Whether byte i (>= 1) of a sequence led by `lead` may be `b`: no overlong
 * forms, surrogates or code points above U+10FFFF. */
static int cont_ok(unsigned char lead, int i, unsigned char b) {
    if (i == 1) {
        if (lead == 0xe0) return b >= 0xa0 && b <= 0xbf;
        if (lead == 0xed) return b >= 0x80 && b <= 0x9f;
        if (lead == 0xf0) return b >= 0x90 && b <= 0xbf;
        if (lead == 0xf4) return b >= 0x80 && b <= 0x8f;
    }
    return b >= 0x80 && b <= 0xbf;
}

static size_t put_fffd(char *out) {
    out[0] = (char)0xef;
    out[1] = (char)0xbf;
    out[2] = (char)0xbd;
    return 3;
}

size_t ef_slm_utf8_feed(ef_slm_utf8 *u, const void *bytes, size_t n, int flush, char *out) {
    const unsigned char *in = bytes;
    size_t o = 0;
    for (size_t k = 0; k < n; k++) {
        u->pend[u->n_pend++] = in[k];
        /* settle what the pending bytes allow */
        while (u->n_pend > 0) {
            int need = lead_len(u->pend[0]);
            int bad = need == 0;
            for (int i = 1; !bad && i < u->n_pend; i++) bad = !cont_ok(u->pend[0], i, u->pend[i]);
            if (bad) {
                /* the lead byte is no character: replace it, retry the rest */
                o += put_fffd(out + o);
                memmove(u->pend, u->pend + 1, (size_t)--u->n_pend);
                continue;
            }
            if (u->n_pend < need) break;
            memcpy(out + o, u->pend, (size_t)need);
            o += (size_t)need;
            u->n_pend -= need;
            memmove(u->pend, u->pend + need, (size_t)u->n_pend);
        }
    }
    if (flush && u->n_pend > 0) {
        o += put_fffd(out + o);
        u->n_pend = 0;
    }
    return o;
}
