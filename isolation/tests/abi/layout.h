/* Layouts and sizes that include/cuabi.h declares in its own words, compared with the toolkit's
 * (layout_ours.c and layout_real.c evaluate the same list; layout_check.c compares them). The
 * enumerators of cuabi.h are compared too: the Makefile lists them from the header itself. */
#ifndef TESSERA_ABI_LAYOUT_H
#define TESSERA_ABI_LAYOUT_H
#include <stddef.h>

#define ABI_CUDA_LAYOUT(X) \
    X(sizeof(CUresult)) X(sizeof(CUdevice)) X(sizeof(CUdeviceptr)) X(sizeof(cuuint64_t)) \
    X(sizeof(CUmemGenericAllocationHandle)) X(sizeof(CUuuid)) X(sizeof(CUdriverProcAddressQueryResult)) \
    X(sizeof(CUdevice_attribute)) X(sizeof(CUmemPool_attribute)) X(sizeof(CUgraphNodeType)) \
    X(sizeof(CUmem_advise)) X(sizeof(CUmemAllocationGranularity_flags)) \
    X(sizeof(CUmemLocation)) X(offsetof(CUmemLocation, id)) \
    X(sizeof(CUmemAllocationProp)) X(offsetof(CUmemAllocationProp, requestedHandleTypes)) \
    X(offsetof(CUmemAllocationProp, location)) X(offsetof(CUmemAllocationProp, win32HandleMetaData)) \
    X(offsetof(CUmemAllocationProp, allocFlags)) X(sizeof(((CUmemAllocationProp *)0)->allocFlags)) \
    X(sizeof(CUmemPoolProps)) X(offsetof(CUmemPoolProps, handleTypes)) X(offsetof(CUmemPoolProps, location)) \
    X(offsetof(CUmemPoolProps, win32SecurityAttributes)) X(offsetof(CUmemPoolProps, maxSize)) \
    X(offsetof(CUmemPoolProps, usage)) X(offsetof(CUmemPoolProps, reserved)) \
    X(sizeof(CUmemAccessDesc)) X(offsetof(CUmemAccessDesc, flags)) \
    X(sizeof(CUDA_ARRAY_DESCRIPTOR)) X(offsetof(CUDA_ARRAY_DESCRIPTOR, Height)) \
    X(offsetof(CUDA_ARRAY_DESCRIPTOR, Format)) X(offsetof(CUDA_ARRAY_DESCRIPTOR, NumChannels)) \
    X(sizeof(CUDA_ARRAY3D_DESCRIPTOR)) X(offsetof(CUDA_ARRAY3D_DESCRIPTOR, Depth)) \
    X(offsetof(CUDA_ARRAY3D_DESCRIPTOR, Format)) X(offsetof(CUDA_ARRAY3D_DESCRIPTOR, NumChannels)) \
    X(offsetof(CUDA_ARRAY3D_DESCRIPTOR, Flags)) \
    X(sizeof(CUDA_ARRAY_MEMORY_REQUIREMENTS)) X(offsetof(CUDA_ARRAY_MEMORY_REQUIREMENTS, alignment)) \
    X(offsetof(CUDA_ARRAY_MEMORY_REQUIREMENTS, reserved)) \
    X(sizeof(CUlaunchAttribute)) X(offsetof(CUlaunchAttribute, value)) \
    X(sizeof(CUlaunchConfig)) X(offsetof(CUlaunchConfig, blockDimX)) X(offsetof(CUlaunchConfig, sharedMemBytes)) \
    X(offsetof(CUlaunchConfig, hStream)) X(offsetof(CUlaunchConfig, attrs)) X(offsetof(CUlaunchConfig, numAttrs)) \
    X(sizeof(CUDA_KERNEL_NODE_PARAMS_v1)) X(offsetof(CUDA_KERNEL_NODE_PARAMS_v1, gridDimX)) \
    X(offsetof(CUDA_KERNEL_NODE_PARAMS_v1, sharedMemBytes)) X(offsetof(CUDA_KERNEL_NODE_PARAMS_v1, kernelParams)) \
    X(offsetof(CUDA_KERNEL_NODE_PARAMS_v1, extra)) X(sizeof(CUDA_KERNEL_NODE_PARAMS)) \
    X(sizeof(CUDA_KERNEL_NODE_PARAMS_v2)) X(offsetof(CUDA_KERNEL_NODE_PARAMS_v2, kernelParams)) \
    X(offsetof(CUDA_KERNEL_NODE_PARAMS_v2, extra)) X(offsetof(CUDA_KERNEL_NODE_PARAMS_v2, kern)) \
    X(offsetof(CUDA_KERNEL_NODE_PARAMS_v2, ctx))

#define ABI_NVML_LAYOUT(X) \
    X(sizeof(nvmlReturn_t)) X(sizeof(nvmlMemory_t)) X(offsetof(nvmlMemory_t, free)) X(offsetof(nvmlMemory_t, used)) \
    X(sizeof(nvmlMemory_v2_t)) X(offsetof(nvmlMemory_v2_t, total)) X(offsetof(nvmlMemory_v2_t, reserved)) \
    X(offsetof(nvmlMemory_v2_t, free)) X(offsetof(nvmlMemory_v2_t, used)) X(nvmlMemory_v2) \
    X(sizeof(nvmlProcessInfo_v1_t)) X(offsetof(nvmlProcessInfo_v1_t, usedGpuMemory)) \
    X(sizeof(nvmlProcessInfo_t)) X(offsetof(nvmlProcessInfo_t, usedGpuMemory)) \
    X(offsetof(nvmlProcessInfo_t, gpuInstanceId)) X(offsetof(nvmlProcessInfo_t, computeInstanceId)) \
    X(sizeof(nvmlUtilization_t)) X(offsetof(nvmlUtilization_t, memory)) \
    X(sizeof(nvmlProcessUtilizationSample_t)) X(offsetof(nvmlProcessUtilizationSample_t, timeStamp)) \
    X(offsetof(nvmlProcessUtilizationSample_t, smUtil)) X(offsetof(nvmlProcessUtilizationSample_t, decUtil)) \
    X(NVML_DEVICE_UUID_V2_BUFFER_SIZE)

struct abi_value { const char *expr; long long value; };
#define ABI_ENTRY(e) { #e, (long long)(e) },
#endif
