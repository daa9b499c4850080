/* libvgpu's signatures against the toolkit (built by `make abi-check`, never linked).
 *
 * The wrappers' prototypes (libvgpu/wrappers.h) are compiled against the toolkit's own types, with the
 * CUDA half of include/cuabi.h left out (and the NVML half too when nvml.h is at hand). Three checks:
 *   - the compiler refuses a prototype that conflicts with the toolkit's declaration of that symbol;
 *   - every wrapped entry point's type equals its PFN_ type from cudaTypedefs.h (pfn_map.h);
 *   - every entry point libvgpu calls through a pointer type of its own (<name>_t) has that PFN_ type
 *     (CUDA) or the type of nvml.h's declaration (NVML). */
#include "toolkit.h"

#define TESSERA_CUABI_NO_CUDA 1
#if TESSERA_ABI_NVML
#define TESSERA_CUABI_NO_NVML 1
#endif
#include "../../libvgpu/hooks.h"

#if TESSERA_ABI_NVML
/* every NVML entry point we wrap is one nvml.h declares, so that a prototype of ours that differs is
 * a conflict (an undeclared name fails here) */
#define NVML_DECLARED(n) _Static_assert(sizeof(&n) != 0, #n);
VGPU_NVML_HOOKS(NVML_DECLARED)
#endif

#include "../../libvgpu/wrappers.h"
#include "pfn_map.h"

#define HOOK(n) ABI_SAME(__typeof__(&n), PFN_OF_##n, "libvgpu wraps " #n " with a signature other than the toolkit's PFN_OF_" #n);
VGPU_CUDA_HOOKS(HOOK)

#define CUDA_USE(n) ABI_SAME(n##_t, PFN_OF_##n, "libvgpu calls " #n " through " #n "_t, which is not the toolkit's PFN type");
VGPU_CUDA_USES(CUDA_USE)

#if TESSERA_ABI_NVML
#define NVML_USE(n) ABI_SAME(n##_t, __typeof__(&n), "libvgpu calls " #n " through " #n "_t, which is not nvml.h's type");
VGPU_NVML_USES(NVML_USE)
#endif
