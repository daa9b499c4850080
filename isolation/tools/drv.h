/* Driver entry points as an application reaches them, for the tools and tests.
 *
 * Three routes, the three ways a CUDA application reaches libcuda:
 *   DRV_ROUTE_CUDART  dlopen("libcuda.so.1") + dlsym("cuGetProcAddress_v2"), the empty-string probe,
 *                     the cuGetProcAddress@12000 self-lookup, then every entry point by base name,
 *                     ABI version and flags (the CUDA 12/13 runtime's sequence);
 *   DRV_ROUTE_DLSYM   dlopen + dlsym of the versioned export names (ctypes, older loaders);
 *   DRV_ROUTE_DIRECT  symbols bound at link time (-lcuda); see drv_direct.c;
 *   DRV_ROUTE_DLMOPEN dlmopen(LM_ID_NEWLM, "libcuda.so.1") + dlsym of the versioned export names: a
 *                     second copy of the driver in a link-map namespace of its own, where no preload
 *                     (libvgpu) applies. A workload that escapes the in-process hook this way is what
 *                     the driver's node-side watchdog exists for (tests of the watchdog use it). */
#ifndef TESSERA_DRV_H
#define TESSERA_DRV_H

#include "../include/cuabi.h"

typedef CUresult (*gpa_v2_t)(const char *, void **, int, unsigned long long, CUdriverProcAddressQueryResult *);

/* X(field, base name, version, versioned export, has a per-thread-stream variant, (arguments)) */
#define DRV_FUNCS(X) \
    X(Init, "cuInit", 2000, "cuInit", 0, (unsigned)) \
    X(DriverGetVersion, "cuDriverGetVersion", 2020, "cuDriverGetVersion", 0, (int *)) \
    X(DeviceGet, "cuDeviceGet", 2000, "cuDeviceGet", 0, (CUdevice *, int)) \
    X(DeviceGetCount, "cuDeviceGetCount", 2000, "cuDeviceGetCount", 0, (int *)) \
    X(DeviceGetName, "cuDeviceGetName", 2000, "cuDeviceGetName", 0, (char *, int, CUdevice)) \
    X(DeviceGetAttribute, "cuDeviceGetAttribute", 2000, "cuDeviceGetAttribute", 0, (int *, int, CUdevice)) \
    X(DeviceTotalMem, "cuDeviceTotalMem", 3020, "cuDeviceTotalMem_v2", 0, (size_t *, CUdevice)) \
    X(PrimaryCtxRetain, "cuDevicePrimaryCtxRetain", 7000, "cuDevicePrimaryCtxRetain", 0, (CUcontext *, CUdevice)) \
    X(PrimaryCtxRelease, "cuDevicePrimaryCtxRelease", 11000, "cuDevicePrimaryCtxRelease_v2", 0, (CUdevice)) \
    X(CtxSetCurrent, "cuCtxSetCurrent", 4000, "cuCtxSetCurrent", 0, (CUcontext)) \
    X(CtxGetDevice, "cuCtxGetDevice", 2000, "cuCtxGetDevice", 0, (CUdevice *)) \
    X(CtxSynchronize, "cuCtxSynchronize", 2000, "cuCtxSynchronize", 0, (void)) \
    X(MemAlloc, "cuMemAlloc", 3020, "cuMemAlloc_v2", 0, (CUdeviceptr *, size_t)) \
    X(MemFree, "cuMemFree", 3020, "cuMemFree_v2", 0, (CUdeviceptr)) \
    X(MemGetInfo, "cuMemGetInfo", 3020, "cuMemGetInfo_v2", 0, (size_t *, size_t *)) \
    X(MemAllocManaged, "cuMemAllocManaged", 6000, "cuMemAllocManaged", 0, (CUdeviceptr *, size_t, unsigned)) \
    X(MemAllocPitch, "cuMemAllocPitch", 3020, "cuMemAllocPitch_v2", 0, (CUdeviceptr *, size_t *, size_t, size_t, unsigned)) \
    X(MemAllocAsync, "cuMemAllocAsync", 11020, "cuMemAllocAsync", 1, (CUdeviceptr *, size_t, CUstream)) \
    X(MemFreeAsync, "cuMemFreeAsync", 11020, "cuMemFreeAsync", 1, (CUdeviceptr, CUstream)) \
    X(MemAllocFromPoolAsync, "cuMemAllocFromPoolAsync", 11020, "cuMemAllocFromPoolAsync", 1, (CUdeviceptr *, size_t, CUmemoryPool, CUstream)) \
    X(DeviceGetMemPool, "cuDeviceGetMemPool", 11020, "cuDeviceGetMemPool", 0, (CUmemoryPool *, CUdevice)) \
    X(MemPoolCreate, "cuMemPoolCreate", 11020, "cuMemPoolCreate", 0, (CUmemoryPool *, const CUmemPoolProps *)) \
    X(MemPoolDestroy, "cuMemPoolDestroy", 11020, "cuMemPoolDestroy", 0, (CUmemoryPool)) \
    X(MemPoolGetAttribute, "cuMemPoolGetAttribute", 11020, "cuMemPoolGetAttribute", 0, (CUmemoryPool, int, void *)) \
    X(MemPoolTrimTo, "cuMemPoolTrimTo", 11020, "cuMemPoolTrimTo", 0, (CUmemoryPool, size_t)) \
    X(MemGetAllocationGranularity, "cuMemGetAllocationGranularity", 10020, "cuMemGetAllocationGranularity", 0, (size_t *, const CUmemAllocationProp *, int)) \
    X(MemCreate, "cuMemCreate", 10020, "cuMemCreate", 0, (CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *, unsigned long long)) \
    X(MemRelease, "cuMemRelease", 10020, "cuMemRelease", 0, (CUmemGenericAllocationHandle)) \
    X(MemAddressReserve, "cuMemAddressReserve", 10020, "cuMemAddressReserve", 0, (CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long)) \
    X(MemAddressFree, "cuMemAddressFree", 10020, "cuMemAddressFree", 0, (CUdeviceptr, size_t)) \
    X(MemMap, "cuMemMap", 10020, "cuMemMap", 0, (CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long)) \
    X(MemUnmap, "cuMemUnmap", 10020, "cuMemUnmap", 0, (CUdeviceptr, size_t)) \
    X(ArrayCreate, "cuArrayCreate", 3020, "cuArrayCreate_v2", 0, (CUarray *, const CUDA_ARRAY_DESCRIPTOR *)) \
    X(Array3DCreate, "cuArray3DCreate", 3020, "cuArray3DCreate_v2", 0, (CUarray *, const CUDA_ARRAY3D_DESCRIPTOR *)) \
    X(ArrayDestroy, "cuArrayDestroy", 2000, "cuArrayDestroy", 0, (CUarray)) \
    X(MipmappedArrayCreate, "cuMipmappedArrayCreate", 5000, "cuMipmappedArrayCreate", 0, (CUmipmappedArray *, const CUDA_ARRAY3D_DESCRIPTOR *, unsigned)) \
    X(MipmappedArrayDestroy, "cuMipmappedArrayDestroy", 5000, "cuMipmappedArrayDestroy", 0, (CUmipmappedArray)) \
    X(MemHostAlloc, "cuMemHostAlloc", 2020, "cuMemHostAlloc", 0, (void **, size_t, unsigned)) \
    X(MemFreeHost, "cuMemFreeHost", 2000, "cuMemFreeHost", 0, (void *)) \
    X(ModuleLoadData, "cuModuleLoadData", 2000, "cuModuleLoadData", 0, (CUmodule *, const void *)) \
    X(ModuleGetFunction, "cuModuleGetFunction", 2000, "cuModuleGetFunction", 0, (CUfunction *, CUmodule, const char *)) \
    X(StreamSynchronize, "cuStreamSynchronize", 2000, "cuStreamSynchronize", 1, (CUstream)) \
    X(LaunchKernel, "cuLaunchKernel", 4000, "cuLaunchKernel", 1, (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void **, void **)) \
    X(LaunchKernelEx, "cuLaunchKernelEx", 11060, "cuLaunchKernelEx", 1, (const CUlaunchConfig *, CUfunction, void **, void **)) \
    X(LaunchCooperativeKernel, "cuLaunchCooperativeKernel", 9000, "cuLaunchCooperativeKernel", 1, (CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void **)) \
    X(GraphCreate, "cuGraphCreate", 10000, "cuGraphCreate", 0, (CUgraph *, unsigned)) \
    X(GraphAddKernelNode, "cuGraphAddKernelNode", 12000, "cuGraphAddKernelNode_v2", 0, (CUgraphNode *, CUgraph, const CUgraphNode *, size_t, const CUDA_KERNEL_NODE_PARAMS_v2 *)) \
    X(GraphInstantiateWithFlags, "cuGraphInstantiateWithFlags", 11040, "cuGraphInstantiateWithFlags", 0, (CUgraphExec *, CUgraph, unsigned long long)) \
    X(GraphInstantiateWithParams, "cuGraphInstantiateWithParams", 12000, "cuGraphInstantiateWithParams", 1, (CUgraphExec *, CUgraph, void *)) \
    X(GraphLaunch, "cuGraphLaunch", 10000, "cuGraphLaunch", 1, (CUgraphExec, CUstream)) \
    X(GraphExecDestroy, "cuGraphExecDestroy", 10000, "cuGraphExecDestroy", 0, (CUgraphExec)) \
    X(GraphDestroy, "cuGraphDestroy", 10000, "cuGraphDestroy", 0, (CUgraph))

enum drv_route { DRV_ROUTE_CUDART, DRV_ROUTE_DLSYM, DRV_ROUTE_DIRECT, DRV_ROUTE_DLMOPEN };

struct drv {
#define DRV_FIELD(f, base, ver, exp, ptds, args) CUresult (*f) args;
    DRV_FUNCS(DRV_FIELD)
#undef DRV_FIELD
    gpa_v2_t GetProcAddress; /* the resolver the CUDART route got back from its self-lookup */
    void *handle;
};

/* Fill *d by the route; per_thread asks for the per-thread-default-stream variants (CUDART route).
 * Returns 0, or -1 with a message on stderr naming what could not be resolved. */
int drv_open(struct drv *d, enum drv_route route, int per_thread);
/* Parse "cudart" | "dlsym" | "direct" | "dlmopen"; -1 if unknown. */
int drv_route_parse(const char *s);
const char *drv_error_name(CUresult r);
/* The PTX of the "spin" kernel: spins for its u64 parameter in nanoseconds (%globaltimer). */
extern const char drv_spin_ptx[];

#endif
