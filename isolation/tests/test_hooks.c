/* libvgpu in a process, on the fake driver: run with LD_PRELOAD=libvgpu.so and the fake on the
 * library path (run_c_tests.sh sets the env of each scenario).
 *
 *   test_hooks resolve ROUTE    interception by identity on every route
 *   test_hooks memory ROUTE     every allocation path against a 1 GiB limit
 *   test_hooks oversub ROUTE    CUDA_OVERSUBSCRIBE past physical memory, within the limit
 *   test_hooks broken ROUTE     a refused region: CUDA calls fail cleanly */
#define _GNU_SOURCE
#include "../tools/drv.h"
#include "check.h"
#include "fake/fake_state.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB (1ULL << 20)
static struct drv D;
static CUcontext g_ctx;

static uint64_t fake_used(void) { return fake_view()->st->dev[fake_view()->vis[0]].used; }
static uint64_t calls(int which) { return atomic_load(&fake_view()->st->calls[which]); }

static const char *lib_of(const void *p, const char **sym)
{
    Dl_info info;
    if (!p || !dladdr(p, &info) || !info.dli_fname) return "?";
    if (sym) *sym = info.dli_sname ? info.dli_sname : "?";
    const char *slash = strrchr(info.dli_fname, '/');
    return slash ? slash + 1 : info.dli_fname;
}

static void expect(const char *base, int ver, int flags, const char *lib, const char *sym)
{
    void *p = NULL;
    CUdriverProcAddressQueryResult st = -1;
    CUresult r = D.GetProcAddress(base, &p, ver, (unsigned long long)flags, &st);
    const char *s = "?";
    const char *l = lib_of(p, &s);
    CHECK(r == CUDA_SUCCESS && st == CU_GET_PROC_ADDRESS_SUCCESS && !strcmp(l, lib) && !strcmp(s, sym),
          "%s@%d flags %d -> %s:%s (want %s:%s)", base, ver, flags, l, s, lib, sym);
}

void *tessera_next_probe(void); /* tests/next_probe.c, a NEEDED library after libvgpu */
static void *g_old_dlsym_result;
#if defined(__x86_64__)
void *old_dlsym(void *, const char *);
__asm__(".symver old_dlsym,dlsym@GLIBC_2.2.5");
#endif

static void scenario_resolve(void)
{
    const char *V = "libvgpu.so", *C = "libcuda.so.1";
    /* wrapped, each variant to its own wrapper */
    expect("cuMemAlloc", 3020, 0, V, "cuMemAlloc_v2");
    expect("cuMemGetInfo", 3020, 0, V, "cuMemGetInfo_v2");
    expect("cuDeviceTotalMem", 3020, 0, V, "cuDeviceTotalMem_v2");
    expect("cuLaunchKernel", 4000, 0, V, "cuLaunchKernel");
    expect("cuLaunchKernel", 7000, 2, V, "cuLaunchKernel_ptsz");
    expect("cuLaunchKernel", 4000, 2, V, "cuLaunchKernel"); /* no ptsz variant that old */
    expect("cuLaunchKernelEx", 11060, 2, V, "cuLaunchKernelEx_ptsz");
    expect("cuLaunchCooperativeKernel", 9000, 2, V, "cuLaunchCooperativeKernel_ptsz");
    expect("cuGraphLaunch", 10000, 0, V, "cuGraphLaunch");
    expect("cuGraphLaunch", 10000, 2, V, "cuGraphLaunch_ptsz");
    expect("cuMemAllocAsync", 11020, 2, V, "cuMemAllocAsync_ptsz");
    expect("cuMemAllocFromPoolAsync", 11020, 0, V, "cuMemAllocFromPoolAsync");
    expect("cuStreamSynchronize", 7000, 2, V, "cuStreamSynchronize_ptsz");
    expect("cuCtxSynchronize", 2000, 0, V, "cuCtxSynchronize");
    expect("cuCtxSynchronize", 13000, 0, V, "cuCtxSynchronize_v2");
    expect("cuGetProcAddress", 11030, 0, V, "cuGetProcAddress");
    expect("cuGetProcAddress", 12000, 0, V, "cuGetProcAddress_v2");
    /* not wrapped: the driver's own pointer, the driver's own ABI choice */
    expect("cuDeviceGet", 2000, 0, C, "cuDeviceGet");
    expect("cuMemAdvise", 8000, 0, C, "cuMemAdvise");
    expect("cuMemAdvise", 12020, 0, C, "cuMemAdvise_v2");
    expect("cuMemPrefetchAsync", 12020, 2, C, "cuMemPrefetchAsync_v2_ptsz");
    expect("cuCtxGetDevice", 13000, 0, C, "cuCtxGetDevice_v2");
    expect("cuMemcpy", 7000, 2, C, "cuMemcpy_ptds");
    void *p = (void *)1;
    CUdriverProcAddressQueryResult st = -1;
    CHECK(D.GetProcAddress("cuNoSuchThing", &p, 13000, 0, &st) == CUDA_SUCCESS && !p &&
          st == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND, "unknown symbol: status propagated");
    CHECK(D.GetProcAddress("cuMemAllocAsync", &p, 11000, 0, &st) == CUDA_SUCCESS && !p &&
          st == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT, "old version: status propagated");
    CHECK(D.GetProcAddress("", &p, 0, 0, &st) == CUDA_SUCCESS && !p, "empty-string probe");
    /* the wrapper calls exactly the variant the driver chose */
    CUmodule m;
    CUfunction f;
    D.ModuleLoadData(&m, drv_spin_ptx);
    D.ModuleGetFunction(&f, m, "spin");
    unsigned long long ns = 1000;
    void *params[] = { &ns };
    typedef CUresult (*launch_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                 CUstream, void **, void **);
    launch_t lk = NULL, lk_ptsz = NULL;
    D.GetProcAddress("cuLaunchKernel", (void **)&lk, 4000, 0, &st);
    D.GetProcAddress("cuLaunchKernel", (void **)&lk_ptsz, 7000, 2, &st);
    uint64_t a0 = calls(FAKE_CALL_cuLaunchKernel), b0 = calls(FAKE_CALL_cuLaunchKernel_ptsz);
    CHECK(lk && lk(f, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL) == CUDA_SUCCESS, "legacy launch");
    CHECK(lk_ptsz && lk_ptsz(f, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL) == CUDA_SUCCESS, "ptsz launch");
    CHECK(calls(FAKE_CALL_cuLaunchKernel) == a0 + 1 && calls(FAKE_CALL_cuLaunchKernel_ptsz) == b0 + 1,
          "each wrapper reached its own real variant");
    /* dlsym, any handle */
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    CHECK(!strcmp(lib_of(dlsym(h, "cuMemAlloc_v2"), NULL), V), "dlsym(handle, cuMemAlloc_v2) is ours");
    CHECK(!strcmp(lib_of(dlsym(RTLD_DEFAULT, "cuMemAlloc_v2"), NULL), V), "dlsym(RTLD_DEFAULT) is ours");
    CHECK(!strcmp(lib_of(dlsym(h, "cuDeviceGet"), NULL), C), "dlsym of an unwrapped name is the driver's");
    CHECK(!strcmp(lib_of(dlsym(h, "cuGetProcAddress_v2"), NULL), V), "dlsym(cuGetProcAddress_v2) is ours");
#if defined(__x86_64__)
    g_old_dlsym_result = old_dlsym(h, "cuMemFree_v2");
    CHECK(!strcmp(lib_of(g_old_dlsym_result, NULL), V), "dlsym@GLIBC_2.2.5 callers are intercepted too");
#endif
    CHECK(tessera_next_probe() == NULL, "dlsym(RTLD_NEXT) from a later library looks after that library");
    CHECK(!strcmp(lib_of(dlsym(RTLD_NEXT, "malloc"), NULL), "libc.so.6") ||
          !strncmp(lib_of(dlsym(RTLD_NEXT, "malloc"), NULL), "libasan", 7), "dlsym(RTLD_NEXT, malloc) from the program");
    void *nv = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    CHECK(nv && !strcmp(lib_of(dlsym(nv, "nvmlDeviceGetMemoryInfo_v2"), NULL), V), "NVML through dlsym is ours");
    CHECK(nv && !strcmp(lib_of(dlsym(nv, "nvmlDeviceGetCount_v2"), NULL), "libnvidia-ml.so.1"), "unwrapped NVML");
}

struct path_result { CUresult r; uint64_t handle; void *arr; size_t size; CUdeviceptr ptr; };
enum { P_ALLOC, P_PITCH, P_MANAGED, P_ASYNC, P_POOL, P_VMM, P_ARRAY, P_ARRAY3D, P_MIPMAP, P_N };
static const char *const path_names[P_N] = { "alloc", "pitch", "managed", "async", "pool", "vmm", "array", "array3d", "mipmap" };
static CUmemoryPool g_pool;

static struct path_result alloc_path(int path, size_t bytes)
{
    struct path_result x;
    memset(&x, 0, sizeof x);
    x.size = bytes;
    switch (path) {
    case P_ALLOC: x.r = D.MemAlloc(&x.ptr, bytes); break;
    case P_PITCH: { size_t pitch; x.r = D.MemAllocPitch(&x.ptr, &pitch, bytes / 1024, 1024, 4); break; }
    case P_MANAGED: x.r = D.MemAllocManaged(&x.ptr, bytes, CU_MEM_ATTACH_GLOBAL); break;
    case P_ASYNC: x.r = D.MemAllocAsync(&x.ptr, bytes, NULL); break;
    case P_POOL: x.r = D.MemAllocFromPoolAsync(&x.ptr, bytes, g_pool, NULL); break;
    case P_VMM: {
        CUmemAllocationProp prop;
        memset(&prop, 0, sizeof prop);
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        x.r = D.MemCreate((CUmemGenericAllocationHandle *)&x.handle, bytes, &prop, 0);
        break;
    }
    case P_ARRAY: { CUDA_ARRAY_DESCRIPTOR d = { 4096, bytes / (4096 * 4), CU_AD_FORMAT_FLOAT, 1 }; x.r = D.ArrayCreate((CUarray *)&x.arr, &d); break; }
    case P_ARRAY3D: case P_MIPMAP: {
        CUDA_ARRAY3D_DESCRIPTOR d = { 1024, 1024, bytes / (1024 * 1024 * 4), CU_AD_FORMAT_FLOAT, 1, 0 };
        x.r = path == P_ARRAY3D ? D.Array3DCreate((CUarray *)&x.arr, &d) : D.MipmappedArrayCreate((CUmipmappedArray *)&x.arr, &d, 1);
        break;
    }
    }
    return x;
}

static CUresult free_path(int path, struct path_result *x)
{
    switch (path) {
    case P_ASYNC: case P_POOL: {
        CUresult r = D.MemFreeAsync(x->ptr, NULL);
        if (path == P_POOL) D.MemPoolTrimTo(g_pool, 0);
        D.StreamSynchronize(NULL); /* pools release what they hold past their threshold */
        return r;
    }
    case P_VMM: return D.MemRelease(x->handle);
    case P_ARRAY: case P_ARRAY3D: return D.ArrayDestroy((CUarray)x->arr);
    case P_MIPMAP: return D.MipmappedArrayDestroy((CUmipmappedArray)x->arr);
    default: return D.MemFree(x->ptr);
    }
}

static void *vmm_on_bare_thread(void *arg)
{
    (void)arg;
    CUdevice d = 0;
    CHECK(D.CtxGetDevice(&d) == CUDA_ERROR_INVALID_CONTEXT, "the thread has no context");
    struct path_result x = alloc_path(P_VMM, 64 * MIB);
    CHECK(x.r == CUDA_SUCCESS, "cuMemCreate on a thread without a context: %d", x.r);
    if (!x.r) free_path(P_VMM, &x);
    return NULL;
}

static void scenario_memory(void)
{
    const uint64_t LIMIT = 1024 * MIB;
    size_t fr = 0, tot = 0, dtm = 0;
    CHECK(D.MemGetInfo(&fr, &tot) == CUDA_SUCCESS && tot == LIMIT && fr == LIMIT, "cuMemGetInfo: %zu/%zu", fr, tot);
    CHECK(D.DeviceTotalMem(&dtm, 0) == CUDA_SUCCESS && dtm == LIMIT, "cuDeviceTotalMem: %zu", dtm);
    CUmemPoolProps pp;
    memset(&pp, 0, sizeof pp);
    pp.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    pp.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    CHECK(D.MemPoolCreate(&g_pool, &pp) == CUDA_SUCCESS, "pool created");
    for (int path = 0; path < P_N; path++) {
        const char *n = path_names[path];
        uint64_t base = fake_used();
        struct path_result a = alloc_path(path, 512 * MIB);
        CHECK(a.r == CUDA_SUCCESS, "%s: 512 MiB under a 1 GiB limit: %d", n, a.r);
        uint64_t granted = fake_used();
        D.MemGetInfo(&fr, &tot);
        CHECK(tot == LIMIT && fr <= LIMIT - 512 * MIB, "%s: cuMemGetInfo free %zu after 512 MiB", n, fr);
        uint64_t c0 = calls(FAKE_CALL_cuMemAlloc_v2) + calls(FAKE_CALL_cuMemCreate) + calls(FAKE_CALL_cuArrayCreate_v2);
        struct path_result b = alloc_path(path, 600 * MIB);
        uint64_t c1 = calls(FAKE_CALL_cuMemAlloc_v2) + calls(FAKE_CALL_cuMemCreate) + calls(FAKE_CALL_cuArrayCreate_v2);
        CHECK(b.r == CUDA_ERROR_OUT_OF_MEMORY, "%s: +600 MiB over the limit: %d", n, b.r);
        CHECK(fake_used() == granted, "%s: the driver granted nothing more (%llu vs %llu)", n,
              (unsigned long long)fake_used(), (unsigned long long)granted);
        CHECK(c1 == c0, "%s: the driver was not even asked", n);
        if (path != P_MANAGED) CHECK(granted >= base + 512 * MIB, "%s: the fake holds the memory", n);
        CHECK(free_path(path, &a) == CUDA_SUCCESS, "%s: free", n);
        D.MemGetInfo(&fr, &tot);
        CHECK(fr == LIMIT, "%s: freeing returns the budget (free %zu)", n, fr);
        struct path_result c = alloc_path(path, 600 * MIB);
        CHECK(c.r == CUDA_SUCCESS, "%s: 600 MiB fits after the free: %d", n, c.r);
        if (!c.r) free_path(path, &c);
        CHECK(fake_used() == base, "%s: nothing left on the device", n);
    }
    /* pools keep freed memory reserved until trimmed or synchronised: the charge follows them */
    CUdeviceptr p;
    uint64_t t = 0;
    uint64_t rt = 0;
    CHECK(D.MemAllocAsync(&p, 10 * MIB, NULL) == CUDA_SUCCESS, "async 10 MiB");
    D.MemFreeAsync(p, NULL);
    D.MemGetInfo(&fr, &tot);
    CHECK(fr == LIMIT - 10 * MIB, "freed async memory still held by the pool is charged (free %zu)", fr);
    CHECK(D.MemAllocAsync(&p, 8 * MIB, NULL) == CUDA_SUCCESS, "reuse from the pool");
    D.MemGetInfo(&fr, &tot);
    CHECK(fr == LIMIT - 10 * MIB, "served from reserved memory: no new charge (free %zu)", fr);
    D.MemFreeAsync(p, NULL);
    D.StreamSynchronize(NULL);
    D.MemGetInfo(&fr, &tot);
    CHECK(fr == LIMIT, "released at synchronisation: charge gone (free %zu)", fr);
    (void)t; (void)rt;
    /* pitch: the real pitch is charged */
    size_t pitch = 0;
    CHECK(D.MemAllocPitch(&p, &pitch, 1000, 1024, 4) == CUDA_SUCCESS && pitch == 1024, "pitch 1024 for 1000 bytes");
    D.MemGetInfo(&fr, &tot);
    CHECK(LIMIT - fr == 1024 * 1024, "charged pitch x height: %llu", (unsigned long long)(LIMIT - fr));
    D.MemFree(p);
    /* VMM from a thread without a context: charged to the device in the properties, no crash */
    pthread_t th;
    pthread_create(&th, NULL, vmm_on_bare_thread, NULL);
    pthread_join(th, NULL);
    D.MemGetInfo(&fr, &tot);
    CHECK(fr == LIMIT, "thread's VMM memory returned (free %zu)", fr);
    /* unknown frees go to the driver, which answers */
    CHECK(D.MemFree(0xdead0000) == CUDA_ERROR_INVALID_VALUE, "unknown pointer: the driver's own error");
    D.MemPoolDestroy(g_pool);
}

static void scenario_oversub(void)
{
    /* 8 GiB physical, 12 GiB share, CUDA_OVERSUBSCRIBE=true */
    CUdeviceptr p[16];
    int n = 0;
    CUresult r = CUDA_SUCCESS;
    while (n < 16 && (r = D.MemAlloc(&p[n], 1024 * MIB)) == CUDA_SUCCESS) n++;
    CHECK(n == 12 && r == CUDA_ERROR_OUT_OF_MEMORY, "12 GiB granted past 8 GiB physical, then the limit (%d, %d)", n, r);
    CHECK(fake_used() <= 8192 * MIB, "physical memory never exceeded");
    for (int i = 0; i < n; i++) CHECK(D.MemFree(p[i]) == CUDA_SUCCESS, "free %d", i);
    size_t fr = 0, tot = 0;
    D.MemGetInfo(&fr, &tot);
    CHECK(tot == 12288 * MIB && fr == 12288 * MIB, "cuMemGetInfo reports the share: %zu/%zu", fr, tot);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_hooks resolve|memory|oversub|broken cudart|dlsym|direct\n");
        return 2;
    }
    int route = drv_route_parse(argv[2]);
    if (route < 0 || drv_open(&D, (enum drv_route)route, 0) != 0) return 2;
    if (route != DRV_ROUTE_CUDART) { /* resolve needs the resolver itself */
        void *h = dlopen("libcuda.so.1", RTLD_NOW);
        D.GetProcAddress = (gpa_v2_t)dlsym(h, "cuGetProcAddress_v2");
    }
    CUresult r = D.Init(0);
    if (!strcmp(argv[1], "broken")) {
        CUdeviceptr p;
        CHECK(r == CUDA_ERROR_NOT_INITIALIZED, "cuInit refuses cleanly: %d", r);
        CHECK(D.MemAlloc(&p, MIB) == CUDA_ERROR_NOT_INITIALIZED, "allocations refuse cleanly");
        return report("test_hooks broken");
    }
    CUdevice dev;
    CHECK(r == CUDA_SUCCESS && D.DeviceGet(&dev, 0) == CUDA_SUCCESS && D.PrimaryCtxRetain(&g_ctx, dev) == CUDA_SUCCESS &&
          D.CtxSetCurrent(g_ctx) == CUDA_SUCCESS, "CUDA up");
    if (!strcmp(argv[1], "resolve")) scenario_resolve();
    else if (!strcmp(argv[1], "memory")) scenario_memory();
    else if (!strcmp(argv[1], "oversub")) scenario_oversub();
    char name[64];
    snprintf(name, sizeof name, "test_hooks %s %s", argv[1], argv[2]);
    return report(name);
}
