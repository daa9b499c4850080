/* Compares cuabi.h's layouts and constants with the toolkit's (layout_ours.c, layout_real.c); prints
 * each difference and exits 1 if there is one. */
#include <stdio.h>
#include "layout.h"

extern const struct abi_value abi_ours_cuda[], abi_real_cuda[];
extern const size_t abi_ours_cuda_n, abi_real_cuda_n;
#if TESSERA_ABI_NVML
extern const struct abi_value abi_ours_nvml[], abi_real_nvml[];
extern const size_t abi_ours_nvml_n, abi_real_nvml_n;
#endif

static int compare(const char *what, const struct abi_value *ours, const struct abi_value *real, size_t n)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (ours[i].value != real[i].value) {
            fprintf(stderr, "abi-check: include/cuabi.h: %s is %lld, the toolkit's %s is %lld\n", ours[i].expr,
                    ours[i].value, what, real[i].value);
            bad = 1;
        }
    }
    printf("abi-check: %zu %s layouts and constants of include/cuabi.h %s the toolkit's\n", n, what,
           bad ? "compared, some differ from" : "equal");
    return bad;
}

int main(void)
{
    /* both sides are built from one list, so the counts can only differ if the build is broken */
    if (abi_ours_cuda_n != abi_real_cuda_n) return fprintf(stderr, "abi-check: the two sides differ in length\n"), 1;
    int bad = compare("CUDA", abi_ours_cuda, abi_real_cuda, abi_ours_cuda_n);
#if TESSERA_ABI_NVML
    if (abi_ours_nvml_n != abi_real_nvml_n) return fprintf(stderr, "abi-check: the two sides differ in length\n"), 1;
    bad |= compare("NVML", abi_ours_nvml, abi_real_nvml, abi_ours_nvml_n);
#endif
    return bad;
}
