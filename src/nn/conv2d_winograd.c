/*
 * Winograd F(2x2, 5x5) convolution (Lavin and Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2016) for 5x5 kernels with stride 1: each
 * 2x2 output tile costs 36 multiplies per input channel instead of 100, and
 * the multiplies become 36 independent matrix products (sgemm).
 *
 * One set of matrices (scripts/winograd_matrices.py derives them: points 0,
 * +-1, +-2 and infinity) serves all three passes:
 *   forward       out = A^T [ (G g G^T) . (B^T d B) ] A
 *   data grad     a forward pass of dout with the kernel rotated by 180
 *                 degrees and its channel axes swapped, padding K-1-pad
 *   weight grad   dW  = G^T [ sum over tiles (A dY A^T) . (B^T d B) ] G
 * (the last follows from the same trilinear identity as the forward pass).
 *
 * Threads take disjoint images and walk them in groups of about 200 tiles,
 * so a group's transformed tiles stay in cache and no thread waits for
 * another inside a pass. Weight-gradient partial sums are per thread and
 * reduced in thread order: bit-identical results for a given thread count.
 *
 * Transforms run on 8 tiles at once (the innermost loops are over the 8
 * lanes), compiled twice: for AVX2+FMA and for the baseline ISA, picked at
 * run time with ef_cpu_features().
 */
#include <string.h>


#include "conv2d_internal.h"
#include "fastmath_internal.h"
#include "nn_internal.h"
#include "sgemm_small.h"
#include "simd.h"

#define ALPHA 6
#define XI (ALPHA * ALPHA) /* 36 points of the transformed tile */
#define MAX_PW 1024       /* widest padded plane (stack buffers in the transforms) */
#define LANES 8

/* Tile geometry of one convolution pass. */
typedef struct wgeom {
    int N, C, OC;  /* images, input channels, output channels of this pass */
    int H, W;      /* input plane */
    int OH, OW;    /* output plane */
    int pad;
    int TH, TW, T; /* tiles per image: ceil(OH/2) x ceil(OW/2) */
    int PH, PW;    /* padded plane covering every tile's 6x6 window */
    int group;     /* images per group */
} wgeom;

static wgeom make_geom(int N, int C, int OC, int H, int W, int OH, int OW, int pad) {
    wgeom g = {.N = N, .C = C, .OC = OC, .H = H, .W = W, .OH = OH, .OW = OW, .pad = pad};
    g.TH = (OH + 1) / 2;
    g.TW = (OW + 1) / 2;
    g.T = g.TH * g.TW;
    g.PH = 2 * g.TH + 4;
    g.PW = 2 * g.TW + 4;
    /* about 128 tiles a group: its V and M (1.6 MB at 32 -> 64 channels)
     * stay near the 1 MB L2, and the workspace stays small */
    g.group = 128 / g.T;
    if (g.group < 1) g.group = 1;
    if (g.group > N) g.group = N;
    return g;
}

int ef__conv2d_winograd_ok(const ef_conv2d_desc *d) {
    /* C = 1 (a first layer) would make every product K = 1: im2col wins. */
    if (!(d->KH == 5 && d->KW == 5 && d->stride == 1 && d->pad >= 0 && d->pad <= 4 &&
          d->C >= 8 && d->OC >= 8 && ef_conv2d_out_h(d) >= 1 && ef_conv2d_out_w(d) >= 1))
        return 0;
    int ow = ef_conv2d_out_w(d);
    return 2 * ((ow + 1) / 2) + 4 <= MAX_PW && 2 * ((d->W + 1) / 2) + 4 <= MAX_PW;
}

/* Row stride of a group's V and M matrices: its tiles plus the slack the
 * small GEMMs read and write past the last column (up to 16 floats). */
#define SLACK 16
static size_t group_stride(const wgeom *g) { return (size_t)g->group * g->T + SLACK; }

/* Per-thread scratch: V (XI, C, group_stride), M (XI, OC, group_stride), the weight-gradient
 * partial (XI, OC, C) and the two halves of a split plane. */
typedef struct wbufs {
    float *V, *M, *P, *pe, *po;
} wbufs;

static size_t split_floats(const wgeom *g) { return (size_t)g->PH * (size_t)(g->PW / 2 + LANES); }

static size_t thread_floats(const wgeom *g) {
    size_t f = (size_t)XI * (size_t)(g->C + g->OC) * group_stride(g) +
               (size_t)XI * g->C * g->OC + 2 * split_floats(g) + LANES;
    return (f + 15) & ~(size_t)15;
}

static wbufs thread_bufs(float *base, const wgeom *g) {
    wbufs b;
    b.V = base;                                    // (XI, C, gs)
    b.M = b.V + (size_t)XI * g->C * group_stride(g); // (XI, OC, gs)
    b.P = b.M + (size_t)XI * g->OC * group_stride(g);
    b.pe = b.P + (size_t)XI * g->C * g->OC;
    b.po = b.pe + split_floats(g);
    return b;
}

static void geoms(const ef_conv2d_desc *d, wgeom *fwd, wgeom *bwd) {
    int OH = ef_conv2d_out_h(d), OW = ef_conv2d_out_w(d);
    *fwd = make_geom(d->N, d->C, d->OC, d->H, d->W, OH, OW, d->pad);
    /* data gradient: dout (OC channels, OH x OW) -> dinp (C channels, H x W) */
    *bwd = make_geom(d->N, d->OC, d->C, OH, OW, d->H, d->W, d->KH - 1 - d->pad);
}

size_t ef__conv2d_winograd_workspace(const ef_conv2d_desc *d, int n_threads) {
    wgeom f, b;
    geoms(d, &f, &b);
    size_t tf = thread_floats(&f), tb = thread_floats(&b);
    size_t per = tf > tb ? tf : tb;
    /* + transformed weights U (XI, OC, C), shared by all threads */
    return per * (size_t)n_threads + (size_t)XI * d->C * d->OC + 16;
}

/* ---- transforms (compiled per ISA through the always-inline bodies) ---- */

/* Row stride of a deinterleaved plane: half the padded width plus one vector of slack. */
static int half_stride(const wgeom *g) { return g->PW / 2 + LANES; }

/*
 * Zero-pads plane src (rows, cols) by `pad` to (PH, PW) and splits it into
 * even columns pe and odd columns po, (PH, half_stride) each. Tile tx's
 * window columns 2tx..2tx+5 are then pe/po[tx], [tx+1], [tx+2]: eight
 * neighbouring tiles load as contiguous vectors.
 */
INLINE void split_plane(float *restrict pe, float *restrict po, const float *restrict src,
                        int rows, int cols, int pad, const wgeom *g) {
    int hs = half_stride(g);
    float row[MAX_PW + 2 * LANES]; /* one padded row (ef__conv2d_winograd_ok caps PW) */
    int lo = pad < 0 ? 0 : pad;        /* first padded column holding data */
    int n = cols;
    if (lo + n > 2 * hs) n = 2 * hs - lo;
    memset(row, 0, sizeof(float) * (size_t)(2 * hs));
    for (int h = 0; h < g->PH; h++) {
        float *e = pe + (size_t)h * hs, *o = po + (size_t)h * hs;
        int sh = h - pad;
        if (sh < 0 || sh >= rows || n <= 0) {
            memset(e, 0, sizeof(float) * (size_t)hs);
            memset(o, 0, sizeof(float) * (size_t)hs);
            continue;
        }
        memcpy(row + lo, src + (size_t)sh * cols, sizeof(float) * (size_t)n);
        /* stride-2 reads: vectorized with permutes */
        for (int k = 0; k < hs; k++) {
            e[k] = row[2 * k];
            o[k] = row[2 * k + 1];
        }
    }
}

/* The six outputs of B^T applied to d0..d5. */
#define BT6(o0, o1, o2, o3, o4, o5, d0, d1, d2, d3, d4, d5)                                    \
    do {                                                                                     \
        o0 = 4.0f * (d0) - 5.0f * (d2) + (d4);                                               \
        o1 = (d3) + (d4) - 4.0f * ((d1) + (d2));                                             \
        o2 = (d4) - (d3) + 4.0f * ((d1) - (d2));                                             \
        o3 = (d4) - (d2) + 2.0f * ((d3) - (d1));                                             \
        o4 = (d4) - (d2) + 2.0f * ((d1) - (d3));                                             \
        o5 = 4.0f * (d1) - 5.0f * (d3) + (d5);                                               \
    } while (0)

/*
 * Input transform V = B^T d B of every tile of one split plane. V holds XI
 * rows of stride vstride; tile t goes to column col0 + t. Stores are whole
 * vectors: lanes past a tile row land on the next row's tiles (rewritten
 * next) or in the LANES columns of slack after the group.
 */
INLINE void input_transform_body(float *restrict V, size_t vstride, size_t col0,
                                 const float *restrict pe, const float *restrict po,
                                 const wgeom *g) {
    int hs = half_stride(g);
    for (int ty = 0; ty < g->TH; ty++)
        for (int tx0 = 0; tx0 < g->TW; tx0 += LANES) {
            v8 t[ALPHA][ALPHA];
            for (int r = 0; r < ALPHA; r++) {
                const float *e = pe + (size_t)(2 * ty + r) * hs + tx0;
                const float *o = po + (size_t)(2 * ty + r) * hs + tx0;
                v8 d0 = ld8(e), d1 = ld8(o), d2 = ld8(e + 1), d3 = ld8(o + 1), d4 = ld8(e + 2),
                   d5 = ld8(o + 2);
                BT6(t[r][0], t[r][1], t[r][2], t[r][3], t[r][4], t[r][5], d0, d1, d2, d3, d4,
                    d5);
            }
            float *dst = V + col0 + (size_t)ty * g->TW + (size_t)tx0;
            for (int j = 0; j < ALPHA; j++) {
                v8 o0, o1, o2, o3, o4, o5;
                BT6(o0, o1, o2, o3, o4, o5, t[0][j], t[1][j], t[2][j], t[3][j], t[4][j],
                    t[5][j]);
                st8(dst + (size_t)(0 * ALPHA + j) * vstride, o0);
                st8(dst + (size_t)(1 * ALPHA + j) * vstride, o1);
                st8(dst + (size_t)(2 * ALPHA + j) * vstride, o2);
                st8(dst + (size_t)(3 * ALPHA + j) * vstride, o3);
                st8(dst + (size_t)(4 * ALPHA + j) * vstride, o4);
                st8(dst + (size_t)(5 * ALPHA + j) * vstride, o5);
            }
        }
}

/*
 * Output transform out = A^T M A for the tiles of one output plane (OH, OW),
 * plus `bias`; accumulates into out when `acc` is set. A tile row's two
 * output rows are assembled in a small buffer with whole-vector stores, then
 * copied (or added) with the plane's exact width.
 */
INLINE void output_transform_body(float *restrict out, const float *restrict M, size_t mstride,
                                  size_t col0, const wgeom *g, float bias, int acc) {
    float buf[2][MAX_PW + 4 * LANES]; /* two output rows (PW is capped) */
    for (int ty = 0; ty < g->TH; ty++) {
        for (int tx0 = 0; tx0 < g->TW; tx0 += LANES) {
            const float *src = M + col0 + (size_t)ty * g->TW + (size_t)tx0;
            v8 t[2][ALPHA];
            for (int j = 0; j < ALPHA; j++) {
                v8 m0 = ld8(src + (size_t)(0 * ALPHA + j) * mstride);
                v8 m1 = ld8(src + (size_t)(1 * ALPHA + j) * mstride);
                v8 m2 = ld8(src + (size_t)(2 * ALPHA + j) * mstride);
                v8 m3 = ld8(src + (size_t)(3 * ALPHA + j) * mstride);
                v8 m4 = ld8(src + (size_t)(4 * ALPHA + j) * mstride);
                v8 m5 = ld8(src + (size_t)(5 * ALPHA + j) * mstride);
                t[0][j] = m0 + m1 + m2 + m3 + m4;
                t[1][j] = m1 - m2 + 2.0f * (m3 - m4) + m5;
            }
            for (int r = 0; r < 2; r++) {
                v8 a = t[r][0] + t[r][1] + t[r][2] + t[r][3] + t[r][4] + bias;
                v8 b = t[r][1] - t[r][2] + 2.0f * (t[r][3] - t[r][4]) + t[r][5] + bias;
                /* interleave: columns 2x (a) and 2x+1 (b) */
                v8 lo = __builtin_shufflevector(a, b, 0, 8, 1, 9, 2, 10, 3, 11);
                v8 hi = __builtin_shufflevector(a, b, 4, 12, 5, 13, 6, 14, 7, 15);
                st8(buf[r] + 2 * tx0, lo);
                st8(buf[r] + 2 * tx0 + LANES, hi);
            }
        }
        for (int r = 0; r < 2 && 2 * ty + r < g->OH; r++) {
            float *dst = out + (size_t)(2 * ty + r) * g->OW;
            const float *sb = buf[r];
            if (acc)
                for (int x = 0; x < g->OW; x++) dst[x] += sb[x];
            else
                memcpy(dst, sb, sizeof(float) * (size_t)g->OW);
        }
    }
}

/*
 * Transform of output-gradient tiles Y = A dY A^T (2x2 -> 6x6) from a split
 * dY plane (ye/yo: even and odd columns, zero beyond the plane).
 */
INLINE void dout_transform_body(float *restrict Y, size_t ystride, size_t col0,
                                const float *restrict ye, const float *restrict yo,
                                const wgeom *g) {
    int hs = half_stride(g);
    for (int ty = 0; ty < g->TH; ty++)
        for (int tx0 = 0; tx0 < g->TW; tx0 += LANES) {
            v8 t[ALPHA][2];
            for (int c = 0; c < 2; c++) {
                const float *base = c == 0 ? ye : yo;
                v8 y0 = ld8(base + (size_t)(2 * ty) * hs + tx0);
                v8 y1 = ld8(base + (size_t)(2 * ty + 1) * hs + tx0);
                t[0][c] = y0;
                t[1][c] = y0 + y1;
                t[2][c] = y0 - y1;
                t[3][c] = y0 + 2.0f * y1;
                t[4][c] = y0 - 2.0f * y1;
                t[5][c] = y1;
            }
            float *dst = Y + col0 + (size_t)ty * g->TW + (size_t)tx0;
            for (int i = 0; i < ALPHA; i++) {
                v8 y0 = t[i][0], y1 = t[i][1];
                st8(dst + (size_t)(i * ALPHA + 0) * ystride, y0);
                st8(dst + (size_t)(i * ALPHA + 1) * ystride, y0 + y1);
                st8(dst + (size_t)(i * ALPHA + 2) * ystride, y0 - y1);
                st8(dst + (size_t)(i * ALPHA + 3) * ystride, y0 + 2.0f * y1);
                st8(dst + (size_t)(i * ALPHA + 4) * ystride, y0 - 2.0f * y1);
                st8(dst + (size_t)(i * ALPHA + 5) * ystride, y1);
            }
        }
}

/* ---- weight transforms (once per pass; scalar is plenty) --------------- */

static const float WG[ALPHA][5] = {
    {0.25f, 0.0f, 0.0f, 0.0f, 0.0f},
    {-1.0f / 6, -1.0f / 6, -1.0f / 6, -1.0f / 6, -1.0f / 6},
    {-1.0f / 6, 1.0f / 6, -1.0f / 6, 1.0f / 6, -1.0f / 6},
    {1.0f / 24, 1.0f / 12, 1.0f / 6, 1.0f / 3, 2.0f / 3},
    {1.0f / 24, -1.0f / 12, 1.0f / 6, -1.0f / 3, 2.0f / 3},
    {0.0f, 0.0f, 0.0f, 0.0f, 1.0f}};

/* u (6, 6) = G k G^T for a 5x5 kernel k (row stride 5); `rot` flips k by 180 degrees. */
static void filter_transform(float u[ALPHA][ALPHA], const float *k, int rot) {
    float kk[5][5], t[ALPHA][5];
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 5; c++) kk[r][c] = rot ? k[(4 - r) * 5 + (4 - c)] : k[r * 5 + c];
    for (int j = 0; j < ALPHA; j++)
        for (int c = 0; c < 5; c++) {
            float s = 0.0f;
            for (int r = 0; r < 5; r++) s += WG[j][r] * kk[r][c];
            t[j][c] = s;
        }
    for (int j = 0; j < ALPHA; j++)
        for (int i = 0; i < ALPHA; i++) {
            float s = 0.0f;
            for (int c = 0; c < 5; c++) s += t[j][c] * WG[i][c];
            u[j][i] = s;
        }
}

/* dk (5, 5) += G^T w G for a transformed gradient w (6, 6). */
static void filter_grad_transform(float *dk, const float w[ALPHA][ALPHA]) {
    float t[5][ALPHA];
    for (int r = 0; r < 5; r++)
        for (int i = 0; i < ALPHA; i++) {
            float s = 0.0f;
            for (int j = 0; j < ALPHA; j++) s += WG[j][r] * w[j][i];
            t[r][i] = s;
        }
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 5; c++) {
            float s = 0.0f;
            for (int i = 0; i < ALPHA; i++) s += t[r][i] * WG[i][c];
            dk[r * 5 + c] += s;
        }
}


/*
 * Weight transform of 8 filters at once: u (XI, 8 lanes) = G k G^T for the
 * 5x5 kernels at k[l * kstride_lane + ...]; stores lane l of point xi at
 * U[xi * ustride + l].
 */
INLINE void filters8_body(float *restrict U, size_t ustride, const float *const *restrict kp,
                          int rot) {
    v8 kk[5][5];
    for (int r = 0; r < 5; r++)
        for (int c = 0; c < 5; c++) {
            float lane[8];
            for (int l = 0; l < 8; l++)
                lane[l] = rot ? kp[l][(4 - r) * 5 + (4 - c)] : kp[l][r * 5 + c];
            kk[r][c] = ld8(lane);
        }
    v8 t[ALPHA][5];
    for (int j = 0; j < ALPHA; j++)
        for (int c = 0; c < 5; c++) {
            v8 acc = zero8();
            for (int r = 0; r < 5; r++) acc += WG[j][r] * kk[r][c];
            t[j][c] = acc;
        }
    for (int j = 0; j < ALPHA; j++)
        for (int i = 0; i < ALPHA; i++) {
            v8 acc = zero8();
            for (int c = 0; c < 5; c++) acc += WG[i][c] * t[j][c];
            st8(U + (size_t)(j * ALPHA + i) * ustride, acc);
        }
}

typedef void (*input_fn)(float *, size_t, size_t, const float *, const float *,
                         const wgeom *);
typedef void (*output_fn)(float *, const float *, size_t, size_t, const wgeom *, float, int);
typedef void (*split_fn)(float *, float *, const float *, int, int, int, const wgeom *);
typedef void (*filters8_fn)(float *, size_t, const float *const *, int);

#if EF_HAVE_AVX2_PATH
#define EF_AVX2 EF_TARGET_AVX2
EF_AVX2 static void input_avx2(float *V, size_t vs, size_t c0, const float *pe, const float *po,
                               const wgeom *g) {
    input_transform_body(V, vs, c0, pe, po, g);
}
EF_AVX2 static void dout_avx2(float *Y, size_t ys, size_t c0, const float *ye, const float *yo,
                              const wgeom *g) {
    dout_transform_body(Y, ys, c0, ye, yo, g);
}
EF_AVX2 static void output_avx2(float *o, const float *M, size_t ms, size_t c0, const wgeom *g,
                                float b, int acc) {
    output_transform_body(o, M, ms, c0, g, b, acc);
}
EF_AVX2 static void filters8_avx2(float *U, size_t us, const float *const *kp, int rot) {
    filters8_body(U, us, kp, rot);
}
EF_AVX2 static void split_avx2(float *pe, float *po, const float *src, int rows, int cols,
                               int pad, const wgeom *g) {
    split_plane(pe, po, src, rows, cols, pad, g);
}
#endif
static void input_base(float *V, size_t vs, size_t c0, const float *pe, const float *po,
                       const wgeom *g) {
    input_transform_body(V, vs, c0, pe, po, g);
}
static void dout_base(float *Y, size_t ys, size_t c0, const float *ye, const float *yo,
                      const wgeom *g) {
    dout_transform_body(Y, ys, c0, ye, yo, g);
}
static void output_base(float *o, const float *M, size_t ms, size_t c0, const wgeom *g, float b,
                        int acc) {
    output_transform_body(o, M, ms, c0, g, b, acc);
}
static void filters8_base(float *U, size_t us, const float *const *kp, int rot) {
    filters8_body(U, us, kp, rot);
}
static void split_base(float *pe, float *po, const float *src, int rows, int cols, int pad,
                       const wgeom *g) {
    split_plane(pe, po, src, rows, cols, pad, g);
}

typedef struct isa {
    input_fn input;
    input_fn dout;
    output_fn output;
    split_fn split;
    filters8_fn filters8;
} isa;

static isa pick_isa(void) {
#if EF_HAVE_AVX2_PATH
    if (ef_cpu_features() & EF_CPU_AVX2)
        return (isa){input_avx2, dout_avx2, output_avx2, split_avx2, filters8_avx2};
#endif
    return (isa){input_base, dout_base, output_base, split_base, filters8_base};
}

/* ---- passes --------------------------------------------------------------- */

typedef struct wctx {
    const ef_conv2d_desc *d;
    wgeom g;
    isa fn;
    float *U;          /* (XI, rows, cols) transformed weights */
    float *work;       /* per-thread scratch base */
    size_t tfloats;    /* per-thread scratch floats */
    const float *inp;  /* (N, C, H, W) of this pass */
    float *out;        /* (N, OC, OH, OW) of this pass */
    const float *bias;
    const float *weight;
    const float *dout;
    float *dweight, *dbias;
    int acc;           /* accumulate into out */
    int rot;           /* weight transform: data-gradient layout */
    int nt;            /* threads that wrote weight-gradient partials */
} wctx;

/* U[xi][o][i] for the pass: forward (o = OC, i = C) or data grad (o = C, i = OC). */
static void weights_range(void *c, int64_t b, int64_t e, int thread) {
    EF_UNUSED(thread);
    wctx *x = c;
    const ef_conv2d_desc *d = x->d;
    int rows = x->rot ? d->C : d->OC, cols = x->rot ? d->OC : d->C;
    size_t plane = (size_t)rows * cols;
    int64_t p = b;
    for (; p < e; p++) {
        if (p + 8 <= e) {
            /* eight filters per vector: their transforms land side by side in U */
            const float *kp[8];
            for (int l = 0; l < 8; l++) {
                int o = (int)((p + l) / cols), i = (int)((p + l) % cols);
                kp[l] = x->rot ? x->weight + ((size_t)i * d->C + o) * 25
                               : x->weight + ((size_t)o * d->C + i) * 25;
            }
            x->fn.filters8(x->U + p, plane, kp, x->rot);
            p += 7;
            continue;
        }
        int o = (int)(p / cols), i = (int)(p % cols);
        /* forward: kernel (oc=o, c=i); data grad: kernel (oc=i, c=o) rotated */
        const float *k = x->rot ? x->weight + ((size_t)i * d->C + o) * 25
                                : x->weight + ((size_t)o * d->C + i) * 25;
        float u[ALPHA][ALPHA];
        filter_transform(u, k, x->rot);
        for (int xi = 0; xi < XI; xi++) x->U[(size_t)xi * plane + p] = u[xi / ALPHA][xi % ALPHA];
    }
}

/* One forward-shaped pass (forward, or data gradient) over a thread's images. */
static void conv_pass(void *c, int t, int nt) {
    wctx *x = c;
    const wgeom *g = &x->g;
    int64_t b, e;
    ef_split_range(g->N, t, nt, &b, &e);
    wbufs w = thread_bufs(x->work + x->tfloats * (size_t)t, g);
    size_t gs = group_stride(g);
    for (int64_t n0 = b; n0 < e; n0 += g->group) {
        int gn = (int)(e - n0 < g->group ? e - n0 : g->group);
        size_t gt = (size_t)gn * g->T;
        for (int n = 0; n < gn; n++)
            for (int ci = 0; ci < g->C; ci++) {
                x->fn.split(w.pe, w.po, x->inp + ((size_t)(n0 + n) * g->C + ci) * g->H * g->W,
                            g->H, g->W, g->pad, g);
                // V (XI, C, gs): this plane's tiles go to row ci, columns n*T..
                x->fn.input(w.V + (size_t)ci * gs, (size_t)g->C * gs, (size_t)n * g->T, w.pe,
                            w.po, g);
            }
        for (int xi = 0; xi < XI; xi++)
            // M[xi] (OC, gt) = U[xi] (OC, C) @ V[xi] (C, gt)
            ef__sgemm_nn_small(g->OC, (int)gt, g->C, x->U + (size_t)xi * g->OC * g->C, g->C,
                               w.V + (size_t)xi * g->C * gs, (int)gs,
                               w.M + (size_t)xi * g->OC * gs, (int)gs);
        for (int n = 0; n < gn; n++)
            for (int oc = 0; oc < g->OC; oc++)
                x->fn.output(x->out + ((size_t)(n0 + n) * g->OC + oc) * g->OH * g->OW,
                             w.M + (size_t)oc * gs, (size_t)g->OC * gs, (size_t)n * g->T, g,
                             x->bias ? x->bias[oc] : 0.0f, x->acc);
    }
}

void ef__conv2d_winograd_forward(float *out, const float *inp, const float *weight,
                                 const float *bias, const ef_conv2d_desc *d, float *work,
                                 ef_pool *pool) {
    ef__blas_init();
    wgeom gf, gb;
    geoms(d, &gf, &gb);
    size_t tf = thread_floats(&gf), tb = thread_floats(&gb);
    wctx x = {.d = d, .g = gf, .fn = pick_isa(), .U = work, .tfloats = tf > tb ? tf : tb,
              .inp = inp, .out = out, .bias = bias, .weight = weight};
    x.work = work + (((size_t)XI * d->C * d->OC + 15) & ~(size_t)15);
    ef_pool_for(pool, (int64_t)d->OC * d->C, weights_range, &x);
    ef_pool_run(pool, conv_pass, &x);
}

/* Weight-gradient pass: per-thread partial sums of A dY A^T . B^T d B. */
static void wgrad_pass(void *c, int t, int nt) {
    wctx *x = c;
    const wgeom *g = &x->g; /* forward geometry */
    if (t == 0) x->nt = nt;
    int64_t b, e;
    ef_split_range(g->N, t, nt, &b, &e);
    wbufs w = thread_bufs(x->work + x->tfloats * (size_t)t, g);
    size_t gs = group_stride(g);
    memset(w.P, 0, sizeof(float) * (size_t)XI * g->C * g->OC);
    for (int64_t n0 = b; n0 < e; n0 += g->group) {
        int gn = (int)(e - n0 < g->group ? e - n0 : g->group);
        size_t gt = (size_t)gn * g->T;
        for (int n = 0; n < gn; n++) {
            for (int ci = 0; ci < g->C; ci++) {
                x->fn.split(w.pe, w.po, x->inp + ((size_t)(n0 + n) * g->C + ci) * g->H * g->W,
                            g->H, g->W, g->pad, g);
                x->fn.input(w.V + (size_t)ci * gs, (size_t)g->C * gs, (size_t)n * g->T, w.pe,
                            w.po, g);
            }
            for (int oc = 0; oc < g->OC; oc++) {
                /* dY plane, zero past its edge so partial tiles contribute nothing */
                x->fn.split(w.pe, w.po, x->dout + ((size_t)(n0 + n) * g->OC + oc) * g->OH * g->OW,
                            g->OH, g->OW, 0, g);
                // Y = w.M (XI, OC, gs)
                x->fn.dout(w.M + (size_t)oc * gs, (size_t)g->OC * gs, (size_t)n * g->T, w.pe,
                           w.po, g);
            }
        }
        /* the dot products run in whole vectors: zero each row past the last tile */
        size_t pad = ((gt + 7) & ~(size_t)7) - gt;
        if (pad) {
            for (size_t r = 0; r < (size_t)XI * g->C; r++) memset(w.V + r * gs + gt, 0, pad * sizeof(float));
            for (size_t r = 0; r < (size_t)XI * g->OC; r++) memset(w.M + r * gs + gt, 0, pad * sizeof(float));
        }
        for (int xi = 0; xi < XI; xi++)
            // P[xi] (OC, C) += Y[xi] (OC, gt) @ V[xi]^T (gt, C)
            ef__sgemm_nt_small(g->OC, g->C, (int)gt, w.M + (size_t)xi * g->OC * gs, (int)gs,
                               w.V + (size_t)xi * g->C * gs, (int)gs,
                               w.P + (size_t)xi * g->OC * g->C, g->C);
    }
}

static void wgrad_reduce(void *c, int64_t b, int64_t e, int thread) {
    EF_UNUSED(thread);
    wctx *x = c;
    const wgeom *g = &x->g;
    size_t poff = (size_t)(thread_bufs(x->work, g).P - x->work);
    size_t plane = (size_t)g->OC * g->C;
    for (int64_t p = b; p < e; p++) {
        float w[ALPHA][ALPHA];
        for (int xi = 0; xi < XI; xi++) {
            float s = 0.0f;
            for (int tt = 0; tt < x->nt; tt++)
                s += x->work[x->tfloats * (size_t)tt + poff + (size_t)xi * plane + (size_t)p];
            w[xi / ALPHA][xi % ALPHA] = s;
        }
        filter_grad_transform(x->dweight + (size_t)p * 25, w);
    }
}

static void bias_grad(void *c, int64_t b, int64_t e, int thread) {
    EF_UNUSED(thread);
    wctx *x = c;
    const ef_conv2d_desc *d = x->d;
    size_t ohw = (size_t)x->g.OH * x->g.OW;
    for (int64_t oc = b; oc < e; oc++) {
        float s = 0.0f;
        for (int n = 0; n < d->N; n++)
            s += ef__sum(x->dout + ((size_t)n * d->OC + (size_t)oc) * ohw, (int)ohw);
        x->dbias[oc] += s;
    }
}

void ef__conv2d_winograd_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *weight,
                                  const ef_conv2d_desc *d, float *work, ef_pool *pool) {
    ef__blas_init();
    wgeom gf, gb;
    geoms(d, &gf, &gb);
    size_t tf = thread_floats(&gf), tb = thread_floats(&gb);
    size_t ushift = ((size_t)XI * d->C * d->OC + 15) & ~(size_t)15;
    wctx x = {.d = d, .g = gf, .fn = pick_isa(), .U = work, .work = work + ushift,
              .tfloats = tf > tb ? tf : tb, .inp = inp, .dout = dout, .dweight = dweight,
              .dbias = dbias, .weight = weight};
    if (dweight) {
        ef_pool_run(pool, wgrad_pass, &x);
        ef_pool_for(pool, (int64_t)d->OC * d->C, wgrad_reduce, &x);
    }
    if (dbias) ef_pool_for(pool, d->OC, bias_grad, &x);
    if (dinp) {
        wctx y = x;
        y.g = gb;
        y.inp = dout;
        y.out = dinp;
        y.bias = NULL;
        y.acc = 1;
        y.rot = 1;
        ef_pool_for(pool, (int64_t)d->OC * d->C, weights_range, &y);
        ef_pool_run(pool, conv_pass, &y);
    }
}
