/* cuabi.h's side of the layout comparison (see layout.h). */
#include "../../include/cuabi.h"
#include "layout.h"

const struct abi_value abi_ours_cuda[] = { ABI_CUDA_LAYOUT(ABI_ENTRY)
#include "cuda_enumerators.h"
};
const size_t abi_ours_cuda_n = sizeof abi_ours_cuda / sizeof abi_ours_cuda[0];
#if TESSERA_ABI_NVML
const struct abi_value abi_ours_nvml[] = { ABI_NVML_LAYOUT(ABI_ENTRY)
#include "nvml_enumerators.h"
};
const size_t abi_ours_nvml_n = sizeof abi_ours_nvml / sizeof abi_ours_nvml[0];
#endif
