/*
 * The inference kernels' portable scalar set (always built, the reference
 * the SIMD sets are tested against bit for bit) and the run-time choice of
 * a set. The order of operations is the canonical one described in
 * slm_internal.h; fmaf keeps the fused multiply-adds of the SIMD sets.
 */
#include <math.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "slm_internal.h"

/* ---- activation conversion ----------------------------------------------- */

static void quant_q8_0_scalar(void *dst, const float *x, int64_t n) {
    ef__blk_q8_0 *y = dst;
    for (int64_t b = 0; b < n / EF_QK; b++, x += EF_QK) {
        float amax = 0.0f;
        for (int j = 0; j < EF_QK; j++) {
            float a = fabsf(x[j]);
            amax = a > amax ? a : amax;
        }
        float d = amax / 127.0f;
        float id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[b].d = ef__f32_to_f16(d);
        for (int j = 0; j < EF_QK; j++) y[b].qs[j] = (int8_t)(int)rintf(x[j] * id);
    }
}

static void to_f16_scalar(uint16_t *dst, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = ef__f32_to_f16(x[i]);
}

static void from_f16_scalar(float *dst, const uint16_t *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = ef__f16_to_f32(x[i]);
}

/* ---- dot products ----------------------------------------------------------- */

static float dot_f32_scalar(const float *a, const float *b, int64_t n) {
    float acc[8] = {0};
    int64_t n8 = n - n % 8, i = 0;
    for (; i < n8; i += 8)
        for (int l = 0; l < 8; l++) acc[l] = fmaf(a[i + l], b[i + l], acc[l]);
    float s = ef__hsum8(acc);
    for (; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

static float dot_f16_scalar(const uint16_t *a, const uint16_t *b, int64_t n) {
    float acc[8] = {0};
    int64_t n8 = n - n % 8, i = 0;
    for (; i < n8; i += 8)
        for (int l = 0; l < 8; l++)
            acc[l] = fmaf(ef__f16_to_f32(a[i + l]), ef__f16_to_f32(b[i + l]), acc[l]);
    float s = ef__hsum8(acc);
    for (; i < n; i++) s = fmaf(ef__f16_to_f32(a[i]), ef__f16_to_f32(b[i]), s);
    return s;
}

/* ggml_vec_dot_f16 / _f32 (AVX2 build): four 8-lane accumulators over the
 * first n - n%32 elements, reduced like GGML_F32x8_REDUCE, then the rest in
 * double. F16 selects half-precision inputs. */
static float ggml_dot(const void *x, const void *y, int n, int f16) {
    float acc[4][8] = {{0}};
    const int n32 = n - n % 32;
#define LD(p, i) (f16 ? ef__f16_to_f32(((const uint16_t *)(p))[i]) : ((const float *)(p))[i])
    for (int i = 0; i < n32; i += 32)
        for (int j = 0; j < 4; j++)
            for (int l = 0; l < 8; l++) acc[j][l] = fmaf(LD(x, i + 8 * j + l), LD(y, i + 8 * j + l), acc[j][l]);
    float a[8], t0[4];
    for (int l = 0; l < 8; l++) a[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    for (int l = 0; l < 4; l++) t0[l] = a[l] + a[l + 4];
    double sum = (double)((t0[0] + t0[1]) + (t0[2] + t0[3]));
    for (int i = n32; i < n; i++) sum += (double)(LD(x, i) * LD(y, i));
#undef LD
    return (float)sum;
}

static void fa_rows_scalar(ef__fa *st, void *acc, const void *q, const void *k, const void *v, size_t stride,
                           int np, int hd, float scale, int f16, float *scratch) {
    (void)scratch;
    for (int p = 0; p < np; p++) {
        const char *kp = (const char *)k + (size_t)p * stride, *vp = (const char *)v + (size_t)p * stride;
        float s = ggml_dot(kp, q, hd, f16) * scale, ms = 1.0f, vs = 1.0f;
        if (s > st->M) {
            ms = expf(st->M - s);
            st->M = s;
            for (int i = 0; i < hd; i++) {
                if (f16) ((uint16_t *)acc)[i] = ef__f32_to_f16(ef__f16_to_f32(((uint16_t *)acc)[i]) * ms);
                else ((float *)acc)[i] *= ms;
            }
        } else {
            vs = expf(s - st->M);
        }
        for (int i = 0; i < hd; i++) {
            if (f16) {
                uint16_t *a = (uint16_t *)acc + i;
                *a = ef__f32_to_f16(fmaf(ef__f16_to_f32(((const uint16_t *)vp)[i]), vs, ef__f16_to_f32(*a)));
            } else {
                float *a = (float *)acc + i;
                *a = fmaf(((const float *)vp)[i], vs, *a);
            }
        }
        st->S = fmaf(st->S, ms, vs);
    }
}

static void fa_finish_scalar(float *out, const ef__fa *st, const void *acc, int hd, int f16) {
    const float inv = st->S == 0.0f ? 0.0f : 1.0f / st->S;
    for (int i = 0; i < hd; i++)
        out[i] = (f16 ? ef__f16_to_f32(((const uint16_t *)acc)[i]) : ((const float *)acc)[i]) * inv;
}

static void rope_scalar(float *v, const float *cs, int n_heads, int hd) {
    for (int h = 0; h < n_heads; h++, v += hd)
        for (int i = 0; i < hd / 2; i++) {
            const float x0 = v[2 * i], x1 = v[2 * i + 1], c = cs[2 * i], s = cs[2 * i + 1];
            v[2 * i] = fmaf(x0, c, -(x1 * s));
            v[2 * i + 1] = fmaf(x0, s, x1 * c);
        }
}

static void swiglu_scalar(float *g, const float *u, int64_t n) {
    int64_t i = 0, n8 = n - n % 8;
    for (; i < n8; i++) {
        const float x = g[i];
        g[i] = x / (1.0f + ef__ggml_expf(0.0f - x)) * u[i];
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---- matrix products -------------------------------------------------------- */

static void gemm_f32_scalar(float *y, int64_t ldy, const void *w, size_t w_stride, const void *x,
                            size_t x_stride, int64_t n, int64_t r0, int64_t r1, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        const float *xb = (const float *)((const char *)x + (size_t)b * x_stride);
        for (int64_t r = r0; r < r1; r++)
            y[b * ldy + r] = dot_f32_scalar((const float *)((const char *)w + (size_t)r * w_stride), xb, n);
    }
}

static void gemm_f16_scalar(float *y, int64_t ldy, const void *w, size_t w_stride, const void *x,
                            size_t x_stride, int64_t n, int64_t r0, int64_t r1, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        const uint16_t *xb = (const uint16_t *)((const char *)x + (size_t)b * x_stride);
        for (int64_t r = r0; r < r1; r++)
            y[b * ldy + r] =
                dot_f16_scalar((const uint16_t *)((const char *)w + (size_t)r * w_stride), xb, n);
    }
}

static float dot_q8_0_scalar(const ef__blk_q8_0 *wr, const ef__blk_q8_0 *xr, int64_t nblk) {
    float acc[8] = {0};
    for (int64_t k = 0; k < nblk; k++) {
        float d = ef__f16_to_f32(wr[k].d) * ef__f16_to_f32(xr[k].d);
        for (int l = 0; l < 8; l++) {
            int s = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++) s += wr[k].qs[j] * xr[k].qs[j];
            acc[l] = fmaf(d, (float)s, acc[l]);
        }
    }
    return ef__hsum8(acc);
}

static float dot_q4_0_scalar(const ef__blk_q4_0 *wr, const ef__blk_q8_0 *xr, int64_t nblk) {
    float acc[8] = {0};
    for (int64_t k = 0; k < nblk; k++) {
        float d = ef__f16_to_f32(wr[k].d) * ef__f16_to_f32(xr[k].d);
        for (int l = 0; l < 8; l++) {
            int s = 0;
            for (int j = 4 * l; j < 4 * l + 4; j++) {
                int q = j < 16 ? (wr[k].qs[j] & 0x0f) : (wr[k].qs[j - 16] >> 4);
                s += (q - 8) * xr[k].qs[j];
            }
            acc[l] = fmaf(d, (float)s, acc[l]);
        }
    }
    return ef__hsum8(acc);
}

static void gemm_q8_0_scalar(float *y, int64_t ldy, const void *w, size_t w_stride, const void *x,
                             size_t x_stride, int64_t n, int64_t r0, int64_t r1, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        const ef__blk_q8_0 *xb = (const ef__blk_q8_0 *)((const char *)x + (size_t)b * x_stride);
        for (int64_t r = r0; r < r1; r++)
            y[b * ldy + r] = dot_q8_0_scalar(
                (const ef__blk_q8_0 *)((const char *)w + (size_t)r * w_stride), xb, n / EF_QK);
    }
}

static void gemm_q4_0_scalar(float *y, int64_t ldy, const void *w, size_t w_stride, const void *x,
                             size_t x_stride, int64_t n, int64_t r0, int64_t r1, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        const ef__blk_q8_0 *xb = (const ef__blk_q8_0 *)((const char *)x + (size_t)b * x_stride);
        for (int64_t r = r0; r < r1; r++)
            y[b * ldy + r] = dot_q4_0_scalar(
                (const ef__blk_q4_0 *)((const char *)w + (size_t)r * w_stride), xb, n / EF_QK);
    }
}

const ef__slm_kernels ef__slm_kernels_scalar = {
    "scalar",        quant_q8_0_scalar, to_f16_scalar,   from_f16_scalar,
    gemm_f32_scalar, gemm_f16_scalar,   gemm_q8_0_scalar, gemm_q4_0_scalar,
    fa_rows_scalar,  fa_finish_scalar,  rope_scalar,      swiglu_scalar,
};

/* ---- helpers over any set ------------------------------------------------ */

size_t ef__slm_row_bytes(ef_slm_type type, int64_t n) {
    if (n < 0) return 0;
    switch (type) {
    case EF_SLM_F32: return (size_t)n * 4;
    case EF_SLM_F16: return (size_t)n * 2;
    case EF_SLM_Q8_0: return n % EF_QK ? 0 : (size_t)(n / EF_QK) * sizeof(ef__blk_q8_0);
    case EF_SLM_Q4_0: return n % EF_QK ? 0 : (size_t)(n / EF_QK) * sizeof(ef__blk_q4_0);
    }
    return 0;
}

void ef__slm_convert(const ef__slm_kernels *k, ef_slm_type vt, void *dst, const float *x, int64_t n) {
    switch (vt) {
    case EF_SLM_F32: memcpy(dst, x, (size_t)n * sizeof(float)); break;
    case EF_SLM_F16: k->to_f16(dst, x, n); break;
    default: k->quant_q8_0(dst, x, n); break;
    }
}

void ef__slm_dequant_row(ef_slm_type type, const void *w, size_t row_bytes, int64_t row,
                         int64_t n, float *out) {
    const char *p = (const char *)w + (size_t)row * row_bytes;
    switch (type) {
    case EF_SLM_F32: memcpy(out, p, (size_t)n * sizeof(float)); break;
    case EF_SLM_F16: from_f16_scalar(out, (const uint16_t *)p, n); break;
    case EF_SLM_Q8_0: {
        const ef__blk_q8_0 *b = (const ef__blk_q8_0 *)p;
        for (int64_t k = 0; k < n / EF_QK; k++) {
            float d = ef__f16_to_f32(b[k].d);
            for (int j = 0; j < EF_QK; j++) out[k * EF_QK + j] = (float)b[k].qs[j] * d;
        }
        break;
    }
    case EF_SLM_Q4_0: {
        const ef__blk_q4_0 *b = (const ef__blk_q4_0 *)p;
        for (int64_t k = 0; k < n / EF_QK; k++) {
            float d = ef__f16_to_f32(b[k].d);
            for (int j = 0; j < EF_QK / 2; j++) {
                out[k * EF_QK + j] = (float)((b[k].qs[j] & 0x0f) - 8) * d;
                out[k * EF_QK + j + 16] = (float)((b[k].qs[j] >> 4) - 8) * d;
            }
        }
        break;
    }
    }
}

ef__gemm_fn ef__slm_gemm_for(const ef__slm_kernels *k, ef_slm_type type) {
    switch (type) {
    case EF_SLM_F32: return k->gemm_f32;
    case EF_SLM_F16: return k->gemm_f16;
    case EF_SLM_Q8_0: return k->gemm_q8_0;
    case EF_SLM_Q4_0: return k->gemm_q4_0;
    }
    return NULL;
}

/* ---- run-time choice ---------------------------------------------------- */

#if defined(__x86_64__)
/* CPUID bits the core's feature mask does not cover: F16C for the AVX2 set,
 * AVX-512 BW and VL for the AVX-512 one. */
static int cpuid_has(unsigned leaf, int reg, unsigned bit) {
    unsigned r[4] = {0, 0, 0, 0};
    if (leaf == 7) {
        if (!__get_cpuid_count(7, 0, &r[0], &r[1], &r[2], &r[3])) return 0;
    } else if (!__get_cpuid(leaf, &r[0], &r[1], &r[2], &r[3])) {
        return 0;
    }
    return (r[reg] >> bit) & 1u;
}
#endif

int ef__slm_isa_supported(ef_slm_isa isa) {
    if (isa == EF_SLM_ISA_SCALAR || isa == EF_SLM_ISA_AUTO) return 1;
#if defined(__x86_64__)
    unsigned f = ef_cpu_features();
    int avx2 = (f & EF_CPU_AVX2) && cpuid_has(1, 2, 29); /* ecx bit 29: F16C */
    if (isa == EF_SLM_ISA_AVX2) return avx2;
    if (isa == EF_SLM_ISA_AVX512) /* ebx bit 30: AVX512BW, 31: AVX512VL */
        return avx2 && (f & EF_CPU_AVX512) && cpuid_has(7, 1, 30) && cpuid_has(7, 1, 31);
#endif
    return 0;
}

const ef__slm_kernels *ef__slm_kernels_for(ef_slm_isa isa) {
    if (isa == EF_SLM_ISA_AUTO) {
        if (ef__slm_isa_supported(EF_SLM_ISA_AVX512)) isa = EF_SLM_ISA_AVX512;
        else if (ef__slm_isa_supported(EF_SLM_ISA_AVX2)) isa = EF_SLM_ISA_AVX2;
        else isa = EF_SLM_ISA_SCALAR;
    }
    if (!ef__slm_isa_supported(isa)) return NULL;
    switch (isa) {
#if defined(__x86_64__)
    case EF_SLM_ISA_AVX2: return &ef__slm_kernels_avx2;
    case EF_SLM_ISA_AVX512: return &ef__slm_kernels_avx512;
#endif
    case EF_SLM_ISA_SCALAR: return &ef__slm_kernels_scalar;
    default: return NULL;
    }
}

const char *ef_slm_isa_name(ef_slm_isa isa) {
    const ef__slm_kernels *k = ef__slm_kernels_for(isa);
    return k ? k->name : NULL;
}

const char *ef_slm_type_name(ef_slm_type t) {
    switch (t) {
    case EF_SLM_F32: return "f32";
    case EF_SLM_F16: return "f16";
    case EF_SLM_Q8_0: return "q8_0";
    case EF_SLM_Q4_0: return "q4_0";
    }
    return "?";
}
