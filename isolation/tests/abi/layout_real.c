/* The toolkit's side of the layout comparison (see layout.h). */
#include "toolkit.h"
#include "layout.h"

const struct abi_value abi_real_cuda[] = { ABI_CUDA_LAYOUT(ABI_ENTRY)
#include "cuda_enumerators.h"
};
const size_t abi_real_cuda_n = sizeof abi_real_cuda / sizeof abi_real_cuda[0];
#if TESSERA_ABI_NVML
const struct abi_value abi_real_nvml[] = { ABI_NVML_LAYOUT(ABI_ENTRY)
#include "nvml_enumerators.h"
};
const size_t abi_real_nvml_n = sizeof abi_real_nvml / sizeof abi_real_nvml[0];
#endif
