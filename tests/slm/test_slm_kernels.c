/*
 * Tests of the inference kernels (src/slm/kernels*.c):
 *   - fp16 conversion known answers (rounding ties to even, subnormals,
 *     overflow to infinity) and the half -> float -> half round trip;
 *   - ggml's expf approximation (used by SwiGLU, as llama.cpp's) against exp;
 *   - every kernel set this CPU runs (AVX2, AVX-512) against the scalar set
 *     bit for bit, and the scalar set against a double-precision reference
 *     (tolerance in kernel_check.h), on random data of many shapes;
 *   - the run-time choice: EF_SLM_ISA_SCALAR always resolves, ef_cpu_limit(0)
 *     (what EDGEFL_CPU=scalar sets) leaves only the scalar set.
 * The AVX-512 set is also tested on CPUs without AVX-512 by avx512_emu.c.
 */
#include "kernel_check.h"

static void check_fp16(void) {
    CHECK(ef__f32_to_f16(1.0f) == 0x3c00);
    CHECK(ef__f32_to_f16(-2.0f) == 0xc000);
    CHECK(ef__f32_to_f16(65504.0f) == 0x7bff);
    CHECK(ef__f32_to_f16(65519.0f) == 0x7bff);
    CHECK(ef__f32_to_f16(65520.0f) == 0x7c00); /* tie, rounds to even: infinity */
    CHECK(ef__f32_to_f16(1e10f) == 0x7c00);
    CHECK(ef__f32_to_f16(-INFINITY) == 0xfc00);
    CHECK((ef__f32_to_f16(NAN) & 0x7fff) > 0x7c00);
    CHECK(ef__f32_to_f16(ldexpf(1.0f, -24)) == 0x0001);
    CHECK(ef__f32_to_f16(ldexpf(1.0f, -25)) == 0x0000);            /* tie to even (0) */
    CHECK(ef__f32_to_f16(ldexpf(1.5f, -25)) == 0x0001);
    CHECK(ef__f32_to_f16(ldexpf(3.0f, -25)) == 0x0002);            /* 1.5 ulp: tie to even (2) */
    CHECK(ef__f32_to_f16(ldexpf(1.0f, -14)) == 0x0400);            /* smallest normal */
    CHECK(ef__f32_to_f16(ldexpf(1023.5f, -24)) == 0x0400);         /* rounds up into the normals */
    CHECK(ef__f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00);     /* tie, even */
    CHECK(ef__f32_to_f16(1.0f + 3 * ldexpf(1.0f, -11)) == 0x3c02); /* tie, even (up) */
    CHECK(ef__f32_to_f16(1.0f + ldexpf(1.0f, -11) + ldexpf(1.0f, -20)) == 0x3c01);
    CHECK(ef__f32_to_f16(-0.0f) == 0x8000);
    CHECK(ef__f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(ef__f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    CHECK(ef__f16_to_f32(0x7bff) == 65504.0f);
    CHECK(isinf(ef__f16_to_f32(0x7c00)) && isnan(ef__f16_to_f32(0x7e01)));
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = ef__f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            bad += (ef__f32_to_f16(f) & 0x7e00) != 0x7e00;
            continue;
        }
        bad += ef__f32_to_f16(f) != h;
    }
    CHECK_MSG(bad == 0, "%d halves do not round-trip", bad);
}

/* ggml's expf approximation against exp(): at most a few ulp over the whole
 * range, exact limits (0 below about -104, infinity above about 89). */
static void check_expf(void) {
    double worst = 0;
    for (int i = -2000000; i <= 2000000; i++) {
        float x = (float)i * 4.4e-5f;
        double r = exp((double)x), g = ef__ggml_expf(x);
        worst = fmax(worst, fabs(g - r) / r);
    }
    printf("test_slm_kernels: ggml expf relative error at most %.3g on [-88, 88]\n", worst);
    CHECK(worst < 4e-7);
    CHECK(ef__ggml_expf(-200.0f) == 0.0f && isinf(ef__ggml_expf(200.0f)) && ef__ggml_expf(0.0f) == 1.0f);
    CHECK(fabs(ef__ggml_expf(-100.0f) - exp(-100.0)) <= 3e-45); /* subnormal: within two of the smallest steps */
    CHECK(isnan(ef__ggml_expf(NAN)));
}

int main(void) {
    check_fp16();
    check_expf();
    CHECK(ef_slm_isa_name(EF_SLM_ISA_SCALAR) != NULL);
    CHECK(strcmp(ef_slm_isa_name(EF_SLM_ISA_SCALAR), "scalar") == 0);
    CHECK(ef_slm_isa_name(EF_SLM_ISA_AUTO) != NULL);
    kc_check_set(&ef__slm_kernels_scalar, 1);
    const ef_slm_isa isas[2] = {EF_SLM_ISA_AVX2, EF_SLM_ISA_AVX512};
    for (int i = 0; i < 2; i++) {
        const ef__slm_kernels *k = ef__slm_kernels_for(isas[i]);
        if (!k) {
            printf("test_slm_kernels: %s kernels not supported on this CPU: not run here\n",
                   isas[i] == EF_SLM_ISA_AVX2 ? "AVX2" : "AVX-512");
            continue;
        }
        printf("test_slm_kernels: checking the %s set against the scalar set\n", k->name);
        kc_check_set(k, 100 + (uint64_t)i);
    }
    ef_cpu_limit(0);
    CHECK(ef__slm_kernels_for(EF_SLM_ISA_AVX2) == NULL);
    CHECK(ef__slm_kernels_for(EF_SLM_ISA_AUTO) == &ef__slm_kernels_scalar);
    CHECK(strcmp(ef_slm_isa_name(EF_SLM_ISA_AUTO), "scalar") == 0);
    return tu_finish("test_slm_kernels");
}
