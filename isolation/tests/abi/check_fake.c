/* The fake driver's signatures against the toolkit (built by `make abi-check`, never linked).
 *
 * fake_protos.h holds the prototypes of every cu* and nvml* function the fakes define, as the
 * compiler saw the definitions (gcc -aux-info); fake_names.h lists their names. Each name must be
 * one the toolkit declares (so the fake exports nothing the real driver lacks), each prototype must
 * agree with the toolkit's declaration (a conflict is an error), and every entry point libvgpu wraps
 * must have its PFN_ type, as in check_hooks.c. */
#include "toolkit.h"
#include "pfn_map.h"
#include "../../libvgpu/hooks.h"

#define FAKE_ENTRY(n) _Static_assert(sizeof(&n) != 0, #n);
#include "fake_names.h"

#include "fake_protos.h"

#define HOOK(n) ABI_SAME(__typeof__(&n), PFN_OF_##n, "the fake driver defines " #n " with a signature other than the toolkit's PFN_OF_" #n);
VGPU_CUDA_HOOKS(HOOK)
