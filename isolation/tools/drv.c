/* Entry-point resolution the way applications do it: see drv.h. */
#define _GNU_SOURCE
#include "drv.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

const char drv_spin_ptx[] =
    ".version 7.0\n"
    ".target sm_70\n"
    ".address_size 64\n"
    ".visible .entry spin(.param .u64 ns)\n"
    "{\n"
    "  .reg .pred p;\n"
    "  .reg .b64 t0, t1, d, n;\n"
    "  ld.param.u64 n, [ns];\n"
    "  mov.u64 t0, %globaltimer;\n"
    "LOOP:\n"
    "  mov.u64 t1, %globaltimer;\n"
    "  sub.u64 d, t1, t0;\n"
    "  setp.lt.u64 p, d, n;\n"
    "  @p bra LOOP;\n"
    "  ret;\n"
    "}\n";

int drv_route_parse(const char *s)
{
    if (!strcmp(s, "cudart")) return DRV_ROUTE_CUDART;
    if (!strcmp(s, "dlsym")) return DRV_ROUTE_DLSYM;
    if (!strcmp(s, "direct")) return DRV_ROUTE_DIRECT;
    if (!strcmp(s, "dlmopen")) return DRV_ROUTE_DLMOPEN;
    return -1;
}

const char *drv_error_name(CUresult r)
{
    switch (r) {
    case CUDA_SUCCESS: return "CUDA_SUCCESS";
    case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
    case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case CUDA_ERROR_NO_DEVICE: return "CUDA_ERROR_NO_DEVICE";
    case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
    case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
    case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
    case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
    default: return "CUDA_ERROR_UNKNOWN";
    }
}

int drv_direct_fill(struct drv *d); /* drv_direct.c, only in programs linked with -lcuda */
__attribute__((weak)) int drv_direct_fill(struct drv *d)
{
    (void)d;
    fprintf(stderr, "drv: this program is not linked against libcuda (no direct route)\n");
    return -1;
}

int drv_open(struct drv *d, enum drv_route route, int per_thread)
{
    memset(d, 0, sizeof *d);
    if (route == DRV_ROUTE_DIRECT) return drv_direct_fill(d);
    if (route == DRV_ROUTE_DLMOPEN)
        d->handle = dlmopen(LM_ID_NEWLM, "libcuda.so.1", RTLD_NOW | RTLD_LOCAL); /* GLOBAL is refused here */
    else
        d->handle = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    if (!d->handle) {
        fprintf(stderr, "drv: cannot load libcuda.so.1: %s\n", dlerror());
        return -1;
    }
    int missing = 0;
    if (route == DRV_ROUTE_DLSYM || route == DRV_ROUTE_DLMOPEN) {
#define DRV_DLSYM(f, base, ver, exp, ptds, type) \
        if (!(*(void **)&d->f = dlsym(d->handle, exp))) { fprintf(stderr, "drv: dlsym(%s) failed\n", exp); missing++; }
        DRV_FUNCS(DRV_DLSYM)
#undef DRV_DLSYM
        return missing ? -1 : 0;
    }
    /* The runtime's sequence: one dlsym, a probe, a self-lookup, then everything by base name. */
    gpa_v2_t gpa = (gpa_v2_t)dlsym(d->handle, "cuGetProcAddress_v2");
    if (!gpa) {
        fprintf(stderr, "drv: dlsym(cuGetProcAddress_v2) failed\n");
        return -1;
    }
    void *fn = NULL;
    CUdriverProcAddressQueryResult st;
    gpa("", &fn, 0, 0, &st);
    if (gpa("cuGetProcAddress", &fn, 12000, 0, &st) != CUDA_SUCCESS || !fn) {
        fprintf(stderr, "drv: cuGetProcAddress@12000 self-lookup failed\n");
        return -1;
    }
    d->GetProcAddress = (gpa_v2_t)fn;
#define DRV_GPA(f, base, ver, exp, ptds, type) \
    { unsigned long long fl = per_thread && ptds ? CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM : 0; \
      int v = per_thread && ptds && ver < 7000 ? 7000 : ver; \
      if (d->GetProcAddress(base, (void **)&d->f, v, fl, &st) != CUDA_SUCCESS || !d->f) { \
          fprintf(stderr, "drv: cuGetProcAddress(%s@%d) failed (status %d)\n", base, v, (int)st); missing++; } }
    DRV_FUNCS(DRV_GPA)
#undef DRV_GPA
    return missing ? -1 : 0;
}
