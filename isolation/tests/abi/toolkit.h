/* The toolkit's headers as the driver itself is built against them: __CUDA_API_VERSION_INTERNAL
 * declares every exported variant (legacy, _v2, _ptsz, _ptds) under its own name instead of mapping
 * the plain names onto the newest ones, and NVML_NO_UNVERSIONED_FUNC_DEFS does the same for NVML. */
#ifndef TESSERA_ABI_TOOLKIT_H
#define TESSERA_ABI_TOOLKIT_H
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <cudaTypedefs.h>
#if TESSERA_ABI_NVML
#define NVML_NO_UNVERSIONED_FUNC_DEFS 1
#include <nvml.h>
#endif
/* the check compares types, so one equal type is enough to report */
#define ABI_SAME(a, b, what) _Static_assert(__builtin_types_compatible_p(a, b), what)
#endif
