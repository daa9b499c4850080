/* cuda-workload: a small CUDA driver-API workload for demos, tests and the GPU check.
 *
 * It resolves the driver the way the CUDA runtime does (see drv.h), allocates in steps through one
 * allocation path and prints what each step returns, prints cuMemGetInfo/cuDeviceTotalMem, and can
 * launch a spin kernel for a while. It runs against the fake driver and against a real GPU alike. */
#define _GNU_SOURCE
#include "drv.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024ULL * 1024ULL)

static struct drv D;
static int g_json;
static int g_dev;

struct held { int api; CUdeviceptr ptr; size_t size; CUmemGenericAllocationHandle h; void *arr; };
static struct held *g_held;
static size_t g_nheld;
static CUmemoryPool g_pool;

enum { API_ALLOC, API_PITCH, API_MANAGED, API_ASYNC, API_POOL, API_VMM, API_ARRAY, API_ARRAY3D, API_MIPMAP };
static const char *const api_names[] = { "alloc", "pitch", "managed", "async", "pool", "vmm", "array", "array3d", "mipmap" };
static const char *const api_calls[] = { "cuMemAlloc", "cuMemAllocPitch", "cuMemAllocManaged", "cuMemAllocAsync",
                                          "cuMemAllocFromPoolAsync", "cuMemCreate", "cuArrayCreate",
                                          "cuArray3DCreate", "cuMipmappedArrayCreate" };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: cuda-workload [options]\n"
            "  --route cudart|dlsym|dlmopen  how to reach the driver (default cudart: cuGetProcAddress_v2;\n"
            "                            dlmopen: a private copy of libcuda.so.1 that no preload hooks)\n"
            "  --device N                CUDA ordinal (default 0)\n"
            "  --api NAME                allocation path: alloc pitch managed async pool vmm array array3d mipmap\n"
            "  --total-mib N             allocate up to N MiB in steps (default 0: none)\n"
            "  --step-mib N              size of one step (default 1024)\n"
            "  --free                    free everything at the end and print cuMemGetInfo again\n"
            "  --hold-seconds S          keep the memory for S seconds before exiting\n"
            "  --launch-seconds S        launch the spin kernel for S seconds\n"
            "  --kernel-us U             time per wave of blocks in microseconds (default 1000)\n"
            "  --grid G --block B        launch shape (default 132 x 256)\n"
            "  --launch kernel|ex|coop|graph|graph-params   launch entry point (default kernel)\n"
            "  --per-thread-stream       resolve the per-thread-default-stream (_ptsz) variants\n"
            "  --json                    one JSON object per line\n");
}

static void meminfo(const char *when)
{
    size_t fr = 0, tot = 0, dtm = 0;
    CUresult r1 = D.MemGetInfo(&fr, &tot);
    CUresult r2 = D.DeviceTotalMem(&dtm, g_dev);
    if (g_json)
        printf("{\"event\":\"meminfo\",\"when\":\"%s\",\"result\":\"%s\",\"free\":%zu,\"total\":%zu,"
               "\"device_total_mem\":%zu,\"device_total_mem_result\":\"%s\"}\n",
               when, drv_error_name(r1), fr, tot, dtm, drv_error_name(r2));
    else
        printf("cuMemGetInfo (%s): %s free=%llu MiB total=%llu MiB; cuDeviceTotalMem=%llu MiB\n", when,
               drv_error_name(r1), (unsigned long long)(fr / MIB), (unsigned long long)(tot / MIB),
               (unsigned long long)(dtm / MIB));
    fflush(stdout);
}

static CUresult alloc_one(int api, size_t bytes, struct held *h)
{
    memset(h, 0, sizeof *h);
    h->api = api;
    h->size = bytes;
    switch (api) {
    case API_ALLOC: return D.MemAlloc(&h->ptr, bytes);
    case API_MANAGED: return D.MemAllocManaged(&h->ptr, bytes, CU_MEM_ATTACH_GLOBAL);
    case API_PITCH: {
        size_t pitch = 0;
        return D.MemAllocPitch(&h->ptr, &pitch, bytes / 1024, 1024, 4);
    }
    case API_ASYNC: return D.MemAllocAsync(&h->ptr, bytes, NULL);
    case API_POOL: return D.MemAllocFromPoolAsync(&h->ptr, bytes, g_pool, NULL);
    case API_VMM: {
        CUmemAllocationProp prop;
        memset(&prop, 0, sizeof prop);
        prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
        prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        prop.location.id = g_dev;
        size_t gran = 0;
        CUresult r = D.MemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_MINIMUM);
        if (r) return r;
        bytes = (bytes + gran - 1) / gran * gran;
        h->size = bytes;
        if ((r = D.MemCreate(&h->h, bytes, &prop, 0))) return r;
        if ((r = D.MemAddressReserve(&h->ptr, bytes, 0, 0, 0)) || (r = D.MemMap(h->ptr, bytes, 0, h->h, 0))) {
            D.MemRelease(h->h);
            return r;
        }
        return CUDA_SUCCESS;
    }
    case API_ARRAY: {
        CUDA_ARRAY_DESCRIPTOR ad = { 4096, bytes / (4096 * 4), CU_AD_FORMAT_FLOAT, 1 };
        return D.ArrayCreate((CUarray *)&h->arr, &ad);
    }
    case API_ARRAY3D: case API_MIPMAP: {
        CUDA_ARRAY3D_DESCRIPTOR ad = { 1024, 1024, bytes / (1024 * 1024 * 4), CU_AD_FORMAT_FLOAT, 1, 0 };
        if (api == API_ARRAY3D) return D.Array3DCreate((CUarray *)&h->arr, &ad);
        return D.MipmappedArrayCreate((CUmipmappedArray *)&h->arr, &ad, 1);
    }
    }
    return CUDA_ERROR_INVALID_VALUE;
}

static CUresult free_one(struct held *h)
{
    switch (h->api) {
    case API_ASYNC: case API_POOL: return D.MemFreeAsync(h->ptr, NULL);
    case API_VMM: {
        D.MemUnmap(h->ptr, h->size);
        D.MemAddressFree(h->ptr, h->size);
        return D.MemRelease(h->h);
    }
    case API_ARRAY: case API_ARRAY3D: return D.ArrayDestroy((CUarray)h->arr);
    case API_MIPMAP: return D.MipmappedArrayDestroy((CUmipmappedArray)h->arr);
    default: return D.MemFree(h->ptr);
    }
}

static int run_launches(double seconds, unsigned long long kernel_us, unsigned grid, unsigned block, const char *how)
{
    CUmodule mod;
    CUfunction fn;
    CUresult r = D.ModuleLoadData(&mod, drv_spin_ptx);
    if (!r) r = D.ModuleGetFunction(&fn, mod, "spin");
    if (r) {
        fprintf(stderr, "cuda-workload: cannot load the spin kernel: %s\n", drv_error_name(r));
        return 1;
    }
    unsigned long long ns = kernel_us * 1000ULL;
    void *params[] = { &ns };
    CUgraphExec exec = NULL;
    CUgraph g = NULL;
    int graph = !strcmp(how, "graph") || !strcmp(how, "graph-params");
    if (graph) {
        CUDA_KERNEL_NODE_PARAMS_v2 p;
        memset(&p, 0, sizeof p);
        p.func = fn;
        p.gridDimX = grid; p.gridDimY = p.gridDimZ = 1;
        p.blockDimX = block; p.blockDimY = p.blockDimZ = 1;
        p.kernelParams = params;
        CUgraphNode node;
        /* CUDA_GRAPH_INSTANTIATE_PARAMS: flags, upload stream, error node out, result out */
        struct { unsigned long long flags; CUstream upload; CUgraphNode err; int result; } ip = { 0, NULL, NULL, 0 };
        if ((r = D.GraphCreate(&g, 0)) || (r = D.GraphAddKernelNode(&node, g, NULL, 0, &p)) ||
            (r = strcmp(how, "graph") ? D.GraphInstantiateWithParams(&exec, g, &ip)
                                      : D.GraphInstantiateWithFlags(&exec, g, 0))) {
            fprintf(stderr, "cuda-workload: cannot build the graph: %s\n", drv_error_name(r));
            return 1;
        }
    }
    CUlaunchConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDimX = grid; cfg.gridDimY = cfg.gridDimZ = 1;
    cfg.blockDimX = block; cfg.blockDimY = cfg.blockDimZ = 1;
    double t0 = now_s(), end = t0 + seconds;
    unsigned long long n = 0;
    while (now_s() < end) {
        if (!strcmp(how, "ex")) r = D.LaunchKernelEx(&cfg, fn, params, NULL);
        else if (!strcmp(how, "coop")) r = D.LaunchCooperativeKernel(fn, grid, 1, 1, block, 1, 1, 0, NULL, params);
        else if (graph) r = D.GraphLaunch(exec, NULL);
        else r = D.LaunchKernel(fn, grid, 1, 1, block, 1, 1, 0, NULL, params, NULL);
        if (r) {
            fprintf(stderr, "cuda-workload: launch failed: %s\n", drv_error_name(r));
            return 1;
        }
        n++;
    }
    D.CtxSynchronize();
    double el = now_s() - t0;
    if (exec) { D.GraphExecDestroy(exec); D.GraphDestroy(g); }
    if (g_json)
        printf("{\"event\":\"launches\",\"how\":\"%s\",\"count\":%llu,\"seconds\":%.3f}\n", how, n, el);
    else
        printf("launched %llu kernels (%s, grid %u, %llu us per wave) in %.2f s\n", n, how, grid, kernel_us, el);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    const char *route = "cudart", *api_s = "alloc", *how = "kernel";
    unsigned long long total_mib = 0, step_mib = 1024, kernel_us = 1000;
    double hold = 0, launch_s = 0;
    unsigned grid = 132, block = 256;
    int do_free = 0, ptds = 0;
    static const struct option opts[] = {
        { "route", 1, 0, 'r' }, { "device", 1, 0, 'd' }, { "api", 1, 0, 'a' }, { "total-mib", 1, 0, 't' },
        { "step-mib", 1, 0, 's' }, { "free", 0, 0, 'f' }, { "hold-seconds", 1, 0, 'H' },
        { "launch-seconds", 1, 0, 'L' }, { "kernel-us", 1, 0, 'k' }, { "grid", 1, 0, 'g' }, { "block", 1, 0, 'b' },
        { "launch", 1, 0, 'l' }, { "per-thread-stream", 0, 0, 'p' }, { "json", 0, 0, 'j' }, { "help", 0, 0, 'h' },
        { 0, 0, 0, 0 } };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'r': route = optarg; break;
        case 'd': g_dev = atoi(optarg); break;
        case 'a': api_s = optarg; break;
        case 't': total_mib = strtoull(optarg, NULL, 10); break;
        case 's': step_mib = strtoull(optarg, NULL, 10); break;
        case 'f': do_free = 1; break;
        case 'H': hold = atof(optarg); break;
        case 'L': launch_s = atof(optarg); break;
        case 'k': kernel_us = strtoull(optarg, NULL, 10); break;
        case 'g': grid = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'b': block = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'l': how = optarg; break;
        case 'p': ptds = 1; break;
        case 'j': g_json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int api = -1;
    for (int i = 0; i < (int)(sizeof api_names / sizeof api_names[0]); i++)
        if (!strcmp(api_s, api_names[i])) api = i;
    int rt = drv_route_parse(route);
    if (api < 0 || rt < 0 || rt == DRV_ROUTE_DIRECT || !step_mib || !grid || !block) {
        usage(stderr);
        return 2;
    }
    if (drv_open(&D, (enum drv_route)rt, ptds) != 0) return 2;
    CUresult r = D.Init(0);
    CUdevice dev;
    CUcontext ctx;
    if (!r) r = D.DeviceGet(&dev, g_dev);
    if (!r) r = D.PrimaryCtxRetain(&ctx, dev);
    if (!r) r = D.CtxSetCurrent(ctx);
    if (r) {
        fprintf(stderr, "cuda-workload: CUDA initialisation failed: %s\n", drv_error_name(r));
        return 2;
    }
    char name[128] = "";
    D.DeviceGetName(name, sizeof name, dev);
    if (g_json) printf("{\"event\":\"device\",\"ordinal\":%d,\"name\":\"%s\"}\n", g_dev, name);
    else printf("device %d: %s\n", g_dev, name);
    meminfo("start");
    if (api == API_POOL && total_mib) {
        CUmemPoolProps pp;
        memset(&pp, 0, sizeof pp);
        pp.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
        pp.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
        pp.location.id = g_dev;
        if ((r = D.MemPoolCreate(&g_pool, &pp))) {
            fprintf(stderr, "cuda-workload: cuMemPoolCreate failed: %s\n", drv_error_name(r));
            return 2;
        }
    }
    unsigned long long held_mib = 0;
    int step = 0;
    while (held_mib < total_mib) {
        unsigned long long want = total_mib - held_mib < step_mib ? total_mib - held_mib : step_mib;
        struct held h;
        r = alloc_one(api, (size_t)(want * MIB), &h);
        step++;
        if (!r) {
            g_held = realloc(g_held, (g_nheld + 1) * sizeof *g_held);
            if (!g_held) return 2;
            g_held[g_nheld++] = h;
            held_mib += want;
        }
        if (g_json)
            printf("{\"event\":\"alloc\",\"step\":%d,\"api\":\"%s\",\"mib\":%llu,\"result\":\"%s\",\"held_mib\":%llu}\n",
                   step, api_calls[api], want, drv_error_name(r), held_mib);
        else
            printf("alloc step %d: %llu MiB via %s -> %s (held %llu MiB)\n", step, want, api_calls[api],
                   drv_error_name(r), held_mib);
        fflush(stdout);
        if (r) break;
    }
    if (total_mib) meminfo("after allocation");
    int rc = 0;
    if (launch_s > 0) rc = run_launches(launch_s, kernel_us, grid, block, how);
    if (hold > 0) {
        struct timespec ts = { (time_t)hold, (long)((hold - (double)(time_t)hold) * 1e9) };
        nanosleep(&ts, NULL);
    }
    if (do_free) {
        for (size_t i = g_nheld; i-- > 0;) {
            CUresult fr = free_one(&g_held[i]);
            if (fr) {
                fprintf(stderr, "cuda-workload: free failed: %s\n", drv_error_name(fr));
                rc = 1;
            }
        }
        g_nheld = 0;
        if (g_pool) D.MemPoolTrimTo(g_pool, 0);
        D.CtxSynchronize();
        meminfo("after free");
    }
    free(g_held);
    return rc;
}
