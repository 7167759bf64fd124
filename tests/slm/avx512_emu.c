/*
 * The AVX-512 kernel set compiled against SIMDe (portable implementations of
 * the intrinsics) and checked bit for bit against the scalar set, so the
 * AVX-512 code is tested on CPUs that cannot run it (it needs AVX2: SIMDe
 * builds the 512-bit operations from native AVX2/FMA/F16C ones, which
 * round exactly like AVX-512's).
 * Built only when SIMDe's headers are installed (Debian: libsimde-dev).
 */
#include "kernel_check.h"

extern const ef__slm_kernels ef__slm_kernels_avx512_emu;

int main(void) {
    if (!ef__slm_isa_supported(EF_SLM_ISA_AVX2)) {
        printf("slm_avx512_emu: skipped: the emulation is built on AVX2, which this CPU lacks\n");
        return 77;
    }
    kc_check_set(&ef__slm_kernels_avx512_emu, 7);
    return tu_finish("slm_avx512_emu");
}
