/* Every driver and NVML entry point libvgpu wraps (each variant its own wrapper, calling exactly
 * that real variant), and the unwrapped ones it calls itself. */
#ifndef VGPU_HOOKS_H
#define VGPU_HOOKS_H

#define VGPU_CUDA_HOOKS(X) \
    X(cuInit) X(cuGetProcAddress) X(cuGetProcAddress_v2) \
    X(cuMemAlloc_v2) X(cuMemFree_v2) X(cuMemAllocManaged) X(cuMemAllocPitch_v2) \
    X(cuMemGetInfo_v2) X(cuDeviceTotalMem_v2) \
    X(cuMemAllocAsync) X(cuMemAllocAsync_ptsz) X(cuMemAllocFromPoolAsync) X(cuMemAllocFromPoolAsync_ptsz) \
    X(cuMemPoolCreate) X(cuMemPoolDestroy) X(cuMemPoolTrimTo) \
    X(cuStreamSynchronize) X(cuStreamSynchronize_ptsz) X(cuCtxSynchronize) X(cuCtxSynchronize_v2) \
    X(cuMemCreate) X(cuMemRelease) \
    X(cuArrayCreate_v2) X(cuArray3DCreate_v2) X(cuArrayDestroy) X(cuMipmappedArrayCreate) X(cuMipmappedArrayDestroy) \
    X(cuLaunchKernel) X(cuLaunchKernel_ptsz) X(cuLaunchKernelEx) X(cuLaunchKernelEx_ptsz) \
    X(cuLaunchCooperativeKernel) X(cuLaunchCooperativeKernel_ptsz) \
    X(cuGraphInstantiateWithFlags) X(cuGraphInstantiateWithParams) X(cuGraphInstantiateWithParams_ptsz) \
    X(cuGraphExecDestroy) X(cuGraphLaunch) X(cuGraphLaunch_ptsz)

#define VGPU_NVML_HOOKS(X) \
    X(nvmlDeviceGetMemoryInfo) X(nvmlDeviceGetMemoryInfo_v2) \
    X(nvmlDeviceGetComputeRunningProcesses) X(nvmlDeviceGetComputeRunningProcesses_v2) \
    X(nvmlDeviceGetComputeRunningProcesses_v3)

#define VGPU_HOOKS(X) VGPU_CUDA_HOOKS(X) VGPU_NVML_HOOKS(X)

/* Unwrapped entry points libvgpu calls (CUDA first, then NVML: see resolve.c). */
#define VGPU_CUDA_USES(X) \
    X(cuCtxGetDevice) X(cuDeviceGetCount) X(cuDeviceGetAttribute) X(cuDeviceGetUuid_v2) \
    X(cuDeviceGetMemPool) X(cuDeviceGetDefaultMemPool) X(cuMemPoolGetAttribute) X(cuMemFreeAsync) \
    X(cuArrayGetMemoryRequirements) X(cuMipmappedArrayGetMemoryRequirements) \
    X(cuGraphGetNodes) X(cuGraphNodeGetType) X(cuGraphKernelNodeGetParams_v2)
#define VGPU_NVML_USES(X) \
    X(nvmlInit_v2) X(nvmlDeviceGetCount_v2) X(nvmlDeviceGetHandleByIndex_v2) X(nvmlDeviceGetUUID) \
    X(nvmlDeviceGetIndex) X(nvmlDeviceGetProcessUtilization) X(nvmlDeviceGetUtilizationRates)

#define VGPU_HOOK_ENUM(n) H_##n,
enum { VGPU_HOOKS(VGPU_HOOK_ENUM) H_COUNT };
#define VGPU_USE_ENUM(n) U_##n,
enum { VGPU_CUDA_USES(VGPU_USE_ENUM) U_CUDA_COUNT_MARK, VGPU_NVML_USES(VGPU_USE_ENUM) U_COUNT };
enum { H_CUDA_COUNT = H_nvmlDeviceGetMemoryInfo };

#endif
