/* The toolkit's PFN_ type (cudaTypedefs.h) of every CUDA entry point libvgpu wraps or calls, by the
 * exported symbol's name. The name carries the version in which that ABI appeared: cuMemAlloc_v2 is
 * PFN_cuMemAlloc_v3020. A hook added to hooks.h without a line here fails the check (undeclared
 * PFN_OF_...), so the table cannot fall behind. */
#ifndef TESSERA_ABI_PFN_MAP_H
#define TESSERA_ABI_PFN_MAP_H

/* wrapped (VGPU_CUDA_HOOKS) */
#define PFN_OF_cuInit                              PFN_cuInit_v2000
#define PFN_OF_cuGetProcAddress                    PFN_cuGetProcAddress_v11030
#define PFN_OF_cuGetProcAddress_v2                 PFN_cuGetProcAddress_v12000
#define PFN_OF_cuMemAlloc_v2                       PFN_cuMemAlloc_v3020
#define PFN_OF_cuMemFree_v2                        PFN_cuMemFree_v3020
#define PFN_OF_cuMemAllocManaged                   PFN_cuMemAllocManaged_v6000
#define PFN_OF_cuMemAllocPitch_v2                  PFN_cuMemAllocPitch_v3020
#define PFN_OF_cuMemGetInfo_v2                     PFN_cuMemGetInfo_v3020
#define PFN_OF_cuDeviceTotalMem_v2                 PFN_cuDeviceTotalMem_v3020
#define PFN_OF_cuMemAllocAsync                     PFN_cuMemAllocAsync_v11020
#define PFN_OF_cuMemAllocAsync_ptsz                PFN_cuMemAllocAsync_v11020_ptsz
#define PFN_OF_cuMemAllocFromPoolAsync             PFN_cuMemAllocFromPoolAsync_v11020
#define PFN_OF_cuMemAllocFromPoolAsync_ptsz        PFN_cuMemAllocFromPoolAsync_v11020_ptsz
#define PFN_OF_cuMemPoolCreate                     PFN_cuMemPoolCreate_v11020
#define PFN_OF_cuMemPoolDestroy                    PFN_cuMemPoolDestroy_v11020
#define PFN_OF_cuMemPoolTrimTo                     PFN_cuMemPoolTrimTo_v11020
#define PFN_OF_cuStreamSynchronize                 PFN_cuStreamSynchronize_v2000
#define PFN_OF_cuStreamSynchronize_ptsz            PFN_cuStreamSynchronize_v7000_ptsz
#define PFN_OF_cuCtxSynchronize                    PFN_cuCtxSynchronize_v2000
#define PFN_OF_cuCtxSynchronize_v2                 PFN_cuCtxSynchronize_v13000
#define PFN_OF_cuMemCreate                         PFN_cuMemCreate_v10020
#define PFN_OF_cuMemRelease                        PFN_cuMemRelease_v10020
#define PFN_OF_cuArrayCreate_v2                    PFN_cuArrayCreate_v3020
#define PFN_OF_cuArray3DCreate_v2                  PFN_cuArray3DCreate_v3020
#define PFN_OF_cuArrayDestroy                      PFN_cuArrayDestroy_v2000
#define PFN_OF_cuMipmappedArrayCreate              PFN_cuMipmappedArrayCreate_v5000
#define PFN_OF_cuMipmappedArrayDestroy             PFN_cuMipmappedArrayDestroy_v5000
#define PFN_OF_cuLaunchKernel                      PFN_cuLaunchKernel_v4000
#define PFN_OF_cuLaunchKernel_ptsz                 PFN_cuLaunchKernel_v7000_ptsz
#define PFN_OF_cuLaunchKernelEx                    PFN_cuLaunchKernelEx_v11060
#define PFN_OF_cuLaunchKernelEx_ptsz               PFN_cuLaunchKernelEx_v11060_ptsz
#define PFN_OF_cuLaunchCooperativeKernel           PFN_cuLaunchCooperativeKernel_v9000
#define PFN_OF_cuLaunchCooperativeKernel_ptsz      PFN_cuLaunchCooperativeKernel_v9000_ptsz
#define PFN_OF_cuGraphInstantiateWithFlags         PFN_cuGraphInstantiateWithFlags_v11040
#define PFN_OF_cuGraphInstantiateWithParams        PFN_cuGraphInstantiateWithParams_v12000
#define PFN_OF_cuGraphInstantiateWithParams_ptsz   PFN_cuGraphInstantiateWithParams_v12000_ptsz
#define PFN_OF_cuGraphExecDestroy                  PFN_cuGraphExecDestroy_v10000
#define PFN_OF_cuGraphLaunch                       PFN_cuGraphLaunch_v10000
#define PFN_OF_cuGraphLaunch_ptsz                  PFN_cuGraphLaunch_v10000_ptsz

/* called, not wrapped (VGPU_CUDA_USES) */
#define PFN_OF_cuCtxGetDevice                      PFN_cuCtxGetDevice_v2000
#define PFN_OF_cuDeviceGetCount                    PFN_cuDeviceGetCount_v2000
#define PFN_OF_cuDeviceGetAttribute                PFN_cuDeviceGetAttribute_v2000
#define PFN_OF_cuDeviceGetUuid_v2                  PFN_cuDeviceGetUuid_v11040
#define PFN_OF_cuDeviceGetMemPool                  PFN_cuDeviceGetMemPool_v11020
#define PFN_OF_cuDeviceGetDefaultMemPool           PFN_cuDeviceGetDefaultMemPool_v11020
#define PFN_OF_cuMemPoolGetAttribute               PFN_cuMemPoolGetAttribute_v11020
#define PFN_OF_cuMemFreeAsync                      PFN_cuMemFreeAsync_v11020
#define PFN_OF_cuArrayGetMemoryRequirements        PFN_cuArrayGetMemoryRequirements_v11060
#define PFN_OF_cuMipmappedArrayGetMemoryRequirements PFN_cuMipmappedArrayGetMemoryRequirements_v11060
#define PFN_OF_cuGraphGetNodes                     PFN_cuGraphGetNodes_v10000
#define PFN_OF_cuGraphNodeGetType                  PFN_cuGraphNodeGetType_v10000
#define PFN_OF_cuGraphKernelNodeGetParams_v2       PFN_cuGraphKernelNodeGetParams_v12000

#endif
