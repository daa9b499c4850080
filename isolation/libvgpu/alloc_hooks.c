/* Memory: every allocation path reserves its bytes against the container's limit before the
 * driver sees it (one atomic check across processes, region.c), and refunds them on failure or
 * free. Past the limit the answer is CUDA_ERROR_OUT_OF_MEMORY and the driver is not called. */
#include "vgpu.h"

#include <string.h>

#define MIB2 (2ULL << 20)
#define ROUND_UP(x, a) (((x) + (a) - 1) / (a) * (a))
enum { K_PLAIN = 1, K_MANAGED, K_PITCH, K_OVERSUB };

#define RESOLVE(name) \
    do { if (!vgpu_real[H_##name]) vgpu_resolve_cuda(); \
         if (!vgpu_real[H_##name]) return CUDA_ERROR_NOT_SUPPORTED; } while (0)
/* allocation entry points: refuse cleanly when the region was refused */
#define ALLOC_PROLOGUE(name) \
    do { RESOLVE(name); if (vgpu_ensure_init()) return CUDA_ERROR_NOT_INITIALIZED; vgpu_post_cuinit(); } while (0)
#define FREE_PROLOGUE(name) do { RESOLVE(name); vgpu_ensure_init(); } while (0)

/* Reserve, retrying once after pools gave memory back. */
static int reserve(int dev, uint64_t bytes)
{
    if (vgpu_charge(dev, bytes) == 0) return 0;
    vgpu_pools_refresh();
    return vgpu_charge(dev, bytes);
}

VGPU_EXPORT CUresult cuInit(unsigned int flags)
{
    RESOLVE(cuInit);
    if (vgpu_ensure_init()) return CUDA_ERROR_NOT_INITIALIZED;
    CUresult r = REAL(cuInit)(flags);
    if (r == CUDA_SUCCESS) vgpu_post_cuinit();
    return r;
}

/* ---- plain, managed, pitch ---- */
VGPU_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *p, size_t size)
{
    ALLOC_PROLOGUE(cuMemAlloc_v2);
    int dev = vgpu_current_device();
    if (dev < 0 || !p || !size) return REAL(cuMemAlloc_v2)(p, size);
    if (reserve(dev, size)) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = REAL(cuMemAlloc_v2)(p, size);
    int kind = K_PLAIN;
    if (r == CUDA_ERROR_OUT_OF_MEMORY && vgpu.cfg.oversubscribe && vgpu_real[H_cuMemAllocManaged]) {
        /* physical memory is short but the share is not: fall back to managed memory */
        r = REAL(cuMemAllocManaged)(p, size, CU_MEM_ATTACH_GLOBAL);
        kind = K_OVERSUB;
        if (r == CUDA_SUCCESS) vgpu_log(LOG_INFO, "%zu bytes on device %d fell back to managed memory", size, dev);
    }
    if (r != CUDA_SUCCESS) {
        vgpu_uncharge(dev, size);
        return r;
    }
    vgpu_tab_put(TAB_PTR, *p, dev, kind, size);
    return r;
}

VGPU_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *p, size_t size, unsigned int flags)
{
    ALLOC_PROLOGUE(cuMemAllocManaged);
    int dev = vgpu_current_device();
    if (dev < 0 || !p || !size) return REAL(cuMemAllocManaged)(p, size, flags);
    if (reserve(dev, size)) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = REAL(cuMemAllocManaged)(p, size, flags);
    if (r != CUDA_SUCCESS) {
        vgpu_uncharge(dev, size);
        return r;
    }
    vgpu_tab_put(TAB_PTR, *p, dev, K_MANAGED, size);
    return r;
}

VGPU_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *p, size_t *pitch, size_t width, size_t height, unsigned int elem)
{
    ALLOC_PROLOGUE(cuMemAllocPitch_v2);
    int dev = vgpu_current_device();
    if (dev < 0 || !p || !pitch || !width || !height) return REAL(cuMemAllocPitch_v2)(p, pitch, width, height, elem);
    /* an upper bound first (rows padded to 512 bytes), then the real pitch the driver chose */
    uint64_t est = ROUND_UP((uint64_t)width, 512) * height;
    if (reserve(dev, est)) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = REAL(cuMemAllocPitch_v2)(p, pitch, width, height, elem);
    if (r != CUDA_SUCCESS) {
        vgpu_uncharge(dev, est);
        return r;
    }
    uint64_t real = (uint64_t)*pitch * height;
    if (real > est && reserve(dev, real - est)) {
        if (vgpu_real[H_cuMemFree_v2]) REAL(cuMemFree_v2)(*p);
        vgpu_uncharge(dev, est);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (real < est) vgpu_uncharge(dev, est - real);
    vgpu_tab_put(TAB_PTR, *p, dev, K_PITCH, real);
    return r;
}

VGPU_EXPORT CUresult cuMemFree_v2(CUdeviceptr p)
{
    FREE_PROLOGUE(cuMemFree_v2);
    struct vgpu_entry e;
    int had = p && vgpu_tab_take(TAB_PTR, p, &e);
    CUresult r = REAL(cuMemFree_v2)(p);
    if (had) {
        if (r == CUDA_SUCCESS) vgpu_uncharge(e.dev, e.bytes);
        else vgpu_tab_put(TAB_PTR, p, e.dev, e.kind, e.bytes);
    }
    return r;
}

/* ---- what the application is told ---- */
VGPU_EXPORT CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total_b)
{
    RESOLVE(cuMemGetInfo_v2);
    CUresult r = REAL(cuMemGetInfo_v2)(free_b, total_b);
    if (r != CUDA_SUCCESS || vgpu_ensure_init() || !free_b || !total_b || !vgpu.region) return r;
    int idx = vgpu_index(vgpu_current_device());
    if (idx < 0 && vgpu.cfg.from_file) *free_b = 0; /* not one of the container's devices: nothing to get */
    uint64_t lim = vgpu_limit_at(idx);
    if (!lim) return r;
    uint64_t used = vgpu_used_at(idx), phys_free = *free_b;
    uint64_t fr = lim > used ? lim - used : 0;
    if (!vgpu.cfg.oversubscribe && fr > phys_free) fr = phys_free;
    *total_b = (size_t)lim;
    *free_b = (size_t)fr;
    return r;
}

VGPU_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
    RESOLVE(cuDeviceTotalMem_v2);
    CUresult r = REAL(cuDeviceTotalMem_v2)(bytes, dev);
    if (r != CUDA_SUCCESS || vgpu_ensure_init() || !bytes) return r;
    uint64_t lim = vgpu_limit_at(vgpu_index(dev));
    if (lim) *bytes = (size_t)lim;
    return r;
}

/* ---- stream-ordered allocations: charged by pool reservation growth ---- */
typedef CUresult (*async_fn)(CUdeviceptr *, size_t, CUstream);
typedef CUresult (*pool_fn)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);

static CUresult alloc_stream_ordered(async_fn fa, pool_fn fp, CUdeviceptr *p, size_t size, CUmemoryPool pool,
                                     CUstream s)
{
    int dev = pool ? vgpu_pool_device(pool) : vgpu_current_device();
    CUmemoryPool pl = pool;
    if (dev >= 0 && !pl && CALL(cuDeviceGetMemPool, &pl, dev) != CUDA_SUCCESS) pl = NULL;
    if (dev < 0 || !pl || !p || !size) return fa ? fa(p, size, s) : fp(p, size, pool, s);
    /* what the pool may have to grow by: the part not covered by its free reserved memory */
    uint64_t reserved = vgpu_pool_reserved(pl), in_use = vgpu_pool_used(pl);
    uint64_t spare = reserved > in_use ? reserved - in_use : 0;
    uint64_t need = size > spare ? ROUND_UP((uint64_t)size - spare, MIB2) : 0;
    if (need && reserve(dev, need)) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = fa ? fa(p, size, s) : fp(p, size, pool, s);
    uint64_t over = vgpu_pool_settle(pl, dev, need);
    if (over && r == CUDA_SUCCESS) {
        /* the pool grew past the share (larger chunks than foreseen): give it back */
        CALL(cuMemFreeAsync, *p, s);
        if (vgpu_real[H_cuMemPoolTrimTo]) REAL(cuMemPoolTrimTo)(pl, 0);
        vgpu_pools_refresh();
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    return r;
}

VGPU_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *p, size_t size, CUstream s)
{
    ALLOC_PROLOGUE(cuMemAllocAsync);
    return alloc_stream_ordered(REAL(cuMemAllocAsync), NULL, p, size, NULL, s);
}

VGPU_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t size, CUstream s)
{
    ALLOC_PROLOGUE(cuMemAllocAsync_ptsz);
    return alloc_stream_ordered(REAL(cuMemAllocAsync_ptsz), NULL, p, size, NULL, s);
}

VGPU_EXPORT CUresult cuMemAllocFromPoolAsync(CUdeviceptr *p, size_t size, CUmemoryPool pool, CUstream s)
{
    ALLOC_PROLOGUE(cuMemAllocFromPoolAsync);
    return alloc_stream_ordered(NULL, REAL(cuMemAllocFromPoolAsync), p, size, pool, s);
}

VGPU_EXPORT CUresult cuMemAllocFromPoolAsync_ptsz(CUdeviceptr *p, size_t size, CUmemoryPool pool, CUstream s)
{
    ALLOC_PROLOGUE(cuMemAllocFromPoolAsync_ptsz);
    return alloc_stream_ordered(NULL, REAL(cuMemAllocFromPoolAsync_ptsz), p, size, pool, s);
}

VGPU_EXPORT CUresult cuMemPoolCreate(CUmemoryPool *pool, const CUmemPoolProps *props)
{
    ALLOC_PROLOGUE(cuMemPoolCreate);
    CUresult r = REAL(cuMemPoolCreate)(pool, props);
    if (r == CUDA_SUCCESS && pool && props && props->location.type == CU_MEM_LOCATION_TYPE_DEVICE)
        vgpu_pool_track(*pool, props->location.id);
    return r;
}

VGPU_EXPORT CUresult cuMemPoolDestroy(CUmemoryPool pool)
{
    FREE_PROLOGUE(cuMemPoolDestroy);
    CUresult r = REAL(cuMemPoolDestroy)(pool);
    if (r == CUDA_SUCCESS) vgpu_pool_forget(pool);
    return r;
}

VGPU_EXPORT CUresult cuMemPoolTrimTo(CUmemoryPool pool, size_t keep)
{
    FREE_PROLOGUE(cuMemPoolTrimTo);
    CUresult r = REAL(cuMemPoolTrimTo)(pool, keep);
    vgpu_pools_refresh();
    return r;
}

/* Pools release memory beyond their threshold at synchronisation: follow them. */
VGPU_EXPORT CUresult cuStreamSynchronize(CUstream s)
{
    FREE_PROLOGUE(cuStreamSynchronize);
    CUresult r = REAL(cuStreamSynchronize)(s);
    vgpu_pools_refresh();
    return r;
}

VGPU_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream s)
{
    FREE_PROLOGUE(cuStreamSynchronize_ptsz);
    CUresult r = REAL(cuStreamSynchronize_ptsz)(s);
    vgpu_pools_refresh();
    return r;
}

VGPU_EXPORT CUresult cuCtxSynchronize(void)
{
    FREE_PROLOGUE(cuCtxSynchronize);
    CUresult r = REAL(cuCtxSynchronize)();
    vgpu_pools_refresh();
    return r;
}

VGPU_EXPORT CUresult cuCtxSynchronize_v2(CUcontext c)
{
    FREE_PROLOGUE(cuCtxSynchronize_v2);
    CUresult r = REAL(cuCtxSynchronize_v2)(c);
    vgpu_pools_refresh();
    return r;
}

/* ---- virtual memory management: physical memory is created by cuMemCreate ---- */
VGPU_EXPORT CUresult cuMemCreate(CUmemGenericAllocationHandle *h, size_t size, const CUmemAllocationProp *prop,
                                 unsigned long long flags)
{
    ALLOC_PROLOGUE(cuMemCreate);
    /* the device comes from the properties, never from the calling thread's context */
    if (!h || !prop || !size || prop->location.type != CU_MEM_LOCATION_TYPE_DEVICE)
        return REAL(cuMemCreate)(h, size, prop, flags);
    int dev = prop->location.id;
    if (reserve(dev, size)) return CUDA_ERROR_OUT_OF_MEMORY;
    CUresult r = REAL(cuMemCreate)(h, size, prop, flags);
    if (r != CUDA_SUCCESS) {
        vgpu_uncharge(dev, size);
        return r;
    }
    vgpu_tab_put(TAB_HANDLE, *h, dev, 0, size);
    return r;
}

VGPU_EXPORT CUresult cuMemRelease(CUmemGenericAllocationHandle h)
{
    FREE_PROLOGUE(cuMemRelease);
    struct vgpu_entry e;
    int had = vgpu_tab_take(TAB_HANDLE, h, &e);
    CUresult r = REAL(cuMemRelease)(h);
    if (had) {
        if (r == CUDA_SUCCESS) vgpu_uncharge(e.dev, e.bytes);
        else vgpu_tab_put(TAB_HANDLE, h, e.dev, e.kind, e.bytes);
    }
    return r;
}

/* ---- arrays: an estimate before, the driver's memory requirement after ---- */
static uint64_t elem_bytes(int fmt)
{
    switch (fmt) {
    case CU_AD_FORMAT_UNSIGNED_INT8: case CU_AD_FORMAT_SIGNED_INT8: return 1;
    case CU_AD_FORMAT_UNSIGNED_INT16: case CU_AD_FORMAT_SIGNED_INT16: case CU_AD_FORMAT_HALF: return 2;
    case CU_AD_FORMAT_UNSIGNED_INT32: case CU_AD_FORMAT_SIGNED_INT32: case CU_AD_FORMAT_FLOAT: return 4;
    default: return 16; /* packed/compressed formats: assume the widest until the driver says */
    }
}

static uint64_t array_estimate(size_t w, size_t h, size_t d, int fmt, unsigned ch, unsigned levels)
{
    uint64_t total = 0;
    for (unsigned l = 0; l < (levels ? levels : 1); l++) {
        total += (uint64_t)(w ? w : 1) * (h ? h : 1) * (d ? d : 1) * elem_bytes(fmt) * (ch ? ch : 1);
        w = w > 1 ? w / 2 : 1;
        h = h > 1 ? h / 2 : h;
        d = d > 1 ? d / 2 : d;
    }
    return total;
}

/* Adjust an array's charge to the driver's figure; -1 if the real size does not fit. */
static int array_settle(int dev, uint64_t est, void *arr, int mipmapped, uint64_t *charged)
{
    CUDA_ARRAY_MEMORY_REQUIREMENTS req;
    memset(&req, 0, sizeof req);
    CUresult q = mipmapped ? CALL(cuMipmappedArrayGetMemoryRequirements, &req, arr, dev)
                           : CALL(cuArrayGetMemoryRequirements, &req, arr, dev);
    *charged = est;
    if (q != CUDA_SUCCESS || !req.size) return 0;
    if (req.size > est) {
        if (reserve(dev, req.size - est)) return -1;
    } else {
        vgpu_uncharge(dev, est - req.size);
    }
    *charged = req.size;
    return 0;
}

static CUresult array_create(int kind, void **out, const void *desc, unsigned levels)
{
    int dev = vgpu_current_device();
    uint64_t est = 0;
    if (kind == 2) {
        const CUDA_ARRAY_DESCRIPTOR *d = desc;
        if (d) est = array_estimate(d->Width, d->Height, 0, d->Format, d->NumChannels, 1);
    } else if (desc) {
        const CUDA_ARRAY3D_DESCRIPTOR *d = desc;
        est = array_estimate(d->Width, d->Height, d->Depth, d->Format, d->NumChannels, kind == 4 ? levels : 1);
    }
    CUresult r;
#define CREATE() (kind == 2 ? REAL(cuArrayCreate_v2)((CUarray *)out, desc) \
                  : kind == 3 ? REAL(cuArray3DCreate_v2)((CUarray *)out, desc) \
                  : REAL(cuMipmappedArrayCreate)((CUmipmappedArray *)out, desc, levels))
    if (dev < 0 || !out || !desc) return CREATE();
    if (reserve(dev, est)) return CUDA_ERROR_OUT_OF_MEMORY;
    r = CREATE();
#undef CREATE
    if (r != CUDA_SUCCESS) {
        vgpu_uncharge(dev, est);
        return r;
    }
    uint64_t charged;
    if (array_settle(dev, est, *out, kind == 4, &charged) != 0) {
        if (kind == 4) REAL(cuMipmappedArrayDestroy)((CUmipmappedArray)*out);
        else REAL(cuArrayDestroy)((CUarray)*out);
        vgpu_uncharge(dev, est);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    vgpu_tab_put(TAB_ARRAY, (uint64_t)(uintptr_t)*out, dev, kind, charged);
    return r;
}

VGPU_EXPORT CUresult cuArrayCreate_v2(CUarray *a, const CUDA_ARRAY_DESCRIPTOR *d)
{
    ALLOC_PROLOGUE(cuArrayCreate_v2);
    RESOLVE(cuArrayDestroy);
    return array_create(2, (void **)a, d, 1);
}

VGPU_EXPORT CUresult cuArray3DCreate_v2(CUarray *a, const CUDA_ARRAY3D_DESCRIPTOR *d)
{
    ALLOC_PROLOGUE(cuArray3DCreate_v2);
    RESOLVE(cuArrayDestroy);
    return array_create(3, (void **)a, d, 1);
}

VGPU_EXPORT CUresult cuMipmappedArrayCreate(CUmipmappedArray *a, const CUDA_ARRAY3D_DESCRIPTOR *d, unsigned int levels)
{
    ALLOC_PROLOGUE(cuMipmappedArrayCreate);
    RESOLVE(cuMipmappedArrayDestroy);
    return array_create(4, (void **)a, d, levels);
}

static CUresult array_destroy(void *a, int mipmapped)
{
    struct vgpu_entry e;
    int had = vgpu_tab_take(TAB_ARRAY, (uint64_t)(uintptr_t)a, &e);
    CUresult r = mipmapped ? REAL(cuMipmappedArrayDestroy)((CUmipmappedArray)a) : REAL(cuArrayDestroy)((CUarray)a);
    if (had) {
        if (r == CUDA_SUCCESS) vgpu_uncharge(e.dev, e.bytes);
        else vgpu_tab_put(TAB_ARRAY, e.key, e.dev, e.kind, e.bytes);
    }
    return r;
}

VGPU_EXPORT CUresult cuArrayDestroy(CUarray a)
{
    FREE_PROLOGUE(cuArrayDestroy);
    return array_destroy(a, 0);
}

VGPU_EXPORT CUresult cuMipmappedArrayDestroy(CUmipmappedArray a)
{
    FREE_PROLOGUE(cuMipmappedArrayDestroy);
    return array_destroy(a, 1);
}
