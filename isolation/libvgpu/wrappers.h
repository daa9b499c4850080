/* Prototypes of the exported wrappers: the driver's and NVML's own ABI. */
#ifndef VGPU_WRAPPERS_H
#define VGPU_WRAPPERS_H
#include "../include/cuabi.h"
#define W __attribute__((visibility("default")))

W CUresult cuInit(unsigned int flags);
W CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags);
W CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                               CUdriverProcAddressQueryResult *status);
W CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t size);
W CUresult cuMemFree_v2(CUdeviceptr p);
W CUresult cuMemAllocManaged(CUdeviceptr *p, size_t size, unsigned int flags);
W CUresult cuMemAllocPitch_v2(CUdeviceptr *p, size_t *pitch, size_t width, size_t height, unsigned int elem);
W CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total_b);
W CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev);
W CUresult cuMemAllocAsync(CUdeviceptr *p, size_t size, CUstream s);
W CUresult cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t size, CUstream s);
W CUresult cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t size, CUmemoryPool pool, CUstream s);
W CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *p, size_t size, CUmemoryPool pool, CUstream s);
W CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props);
W CUresult cuMemPoolDestroy(CUmemoryPool pool);
W CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t keep);
W CUresult cuStreamSynchronize(CUstream s);
W CUresult cuStreamSynchronize_ptsz(CUstream s);
W CUresult cuCtxSynchronize(void);
W CUresult cuCtxSynchronize_v2(CUcontext c);
W CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *prop,
                       unsigned long long flags);
W CUresult cuMemRelease(CUmemGenericAllocationHandle h);
W CUresult cuArrayCreate_v2(CUarray *a, const CUDA_ARRAY_DESCRIPTOR *d);
W CUresult cuArray3DCreate_v2(CUarray *a, const CUDA_ARRAY3D_DESCRIPTOR *d);
W CUresult cuArrayDestroy(CUarray a);
W CUresult cuMipmappedArrayCreate(CUmipmappedArray *a, const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned int levels);
W CUresult cuMipmappedArrayDestroy(CUmipmappedArray a);
W CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                          unsigned shmem, CUstream s, void **params, void **extra);
W CUresult cuLaunchKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                               unsigned bz, unsigned shmem, CUstream s, void **params, void **extra);
W CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra);
W CUresult cuLaunchKernelEx_ptsz(const CUlaunchConfig *c, CUfunction f, void **params, void **extra);
W CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                     unsigned bz, unsigned shmem, CUstream s, void **params);
W CUresult cuLaunchCooperativeKernel_ptsz(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                                          unsigned by, unsigned bz, unsigned shmem, CUstream s, void **params);
W CUresult cuGraphInstantiateWithFlags(CUgraphExec *e, CUgraph g, unsigned long long flags);
W CUresult cuGraphInstantiateWithParams(CUgraphExec *e, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *params);
W CUresult cuGraphInstantiateWithParams_ptsz(CUgraphExec *e, CUgraph g, CUDA_GRAPH_INSTANTIATE_PARAMS *params);
W CUresult cuGraphExecDestroy(CUgraphExec e);
W CUresult cuGraphLaunch(CUgraphExec e, CUstream s);
W CUresult cuGraphLaunch_ptsz(CUgraphExec e, CUstream s);
W nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m);
W nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m);
W nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_v1_t *p);
W nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_t *p);
W nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *n, nvmlProcessInfo_t *p);

/* the unwrapped entry points libvgpu calls */
typedef CUresult (*cuCtxGetDevice_t)(CUdevice *);
typedef CUresult (*cuDeviceGetCount_t)(int *);
typedef CUresult (*cuDeviceGetAttribute_t)(int *, CUdevice_attribute, CUdevice);
typedef CUresult (*cuDeviceGetUuid_v2_t)(CUuuid *, CUdevice);
typedef CUresult (*cuDeviceGetMemPool_t)(CUmemoryPool *, CUdevice);
typedef CUresult (*cuDeviceGetDefaultMemPool_t)(CUmemoryPool *, CUdevice);
typedef CUresult (*cuMemPoolGetAttribute_t)(CUmemoryPool, CUmemPool_attribute, void *);
typedef CUresult (*cuMemFreeAsync_t)(CUdeviceptr, CUstream);
typedef CUresult (*cuArrayGetMemoryRequirements_t)(CUDA_ARRAY_MEMORY_REQUIREMENTS *, CUarray, CUdevice);
typedef CUresult (*cuMipmappedArrayGetMemoryRequirements_t)(CUDA_ARRAY_MEMORY_REQUIREMENTS *, CUmipmappedArray, CUdevice);
typedef CUresult (*cuGraphGetNodes_t)(CUgraph, CUgraphNode *, size_t *);
typedef CUresult (*cuGraphNodeGetType_t)(CUgraphNode, CUgraphNodeType *);
typedef CUresult (*cuGraphKernelNodeGetParams_v2_t)(CUgraphNode, CUDA_KERNEL_NODE_PARAMS_v2 *);
typedef nvmlReturn_t (*nvmlInit_v2_t)(void);
typedef nvmlReturn_t (*nvmlDeviceGetCount_v2_t)(unsigned int *);
typedef nvmlReturn_t (*nvmlDeviceGetHandleByIndex_v2_t)(unsigned int, nvmlDevice_t *);
typedef nvmlReturn_t (*nvmlDeviceGetUUID_t)(nvmlDevice_t, char *, unsigned int);
typedef nvmlReturn_t (*nvmlDeviceGetIndex_t)(nvmlDevice_t, unsigned int *);
typedef nvmlReturn_t (*nvmlDeviceGetProcessUtilization_t)(nvmlDevice_t, nvmlProcessUtilizationSample_t *,
                                                          unsigned int *, unsigned long long);
typedef nvmlReturn_t (*nvmlDeviceGetUtilizationRates_t)(nvmlDevice_t, nvmlUtilization_t *);
#define CALL(name, ...) (USE(name, name##_t) ? USE(name, name##_t)(__VA_ARGS__) : CUDA_ERROR_NOT_SUPPORTED)
#define NCALL(name, ...) (USE(name, name##_t) ? USE(name, name##_t)(__VA_ARGS__) : NVML_ERROR_FUNCTION_NOT_FOUND)

#undef W
#endif
